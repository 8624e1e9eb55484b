//! Chunk bookkeeping of the blocks being received. [`Partial`] is the only code
//! that changes a chunk's state, and it keeps its two counters in step (see
//! STATE.md): `missing` counts chunks not yet `Got`, `unassigned` chunks `Missing`.

use std::collections::BTreeMap;

use telly_proto::wire::BlockId;

use crate::peer::PeerId;
use crate::time::Millis;
use crate::trust::Trust;

/// Where a verified chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Peer(PeerId),
    Origin,
}

/// The state of one chunk of a block being received. Exactly one holds.
#[derive(Clone, Debug)]
pub(crate) enum ChunkState<C> {
    /// Nobody is fetching it.
    Missing,
    /// Asked of one peer, or of two in end-game (the second is the duplicate).
    Requested {
        first: PeerId,
        second: Option<PeerId>,
    },
    /// Part of an origin fetch in progress.
    Origin,
    /// Verified and kept.
    Got { data: C, from: Source },
}

/// One origin fetch in flight: chunks `first .. first + count` of a block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OriginFetch {
    pub asked: Millis,
    /// How long the fetch was expected to take when asked (ms).
    pub expected_ms: u64,
    pub bytes: u64,
    pub count: u16,
}

/// The origin fetches in flight, by block and first chunk, with their bytes
/// summed: planning asks for that sum once per block it looks at, and a
/// prefetching viewer may have a whole horizon of fetches out.
#[derive(Debug, Default)]
pub(crate) struct OriginFetches {
    by_start: BTreeMap<(BlockId, u16), OriginFetch>,
    bytes: u64,
}

impl OriginFetches {
    pub fn insert(&mut self, block: BlockId, first: u16, fetch: OriginFetch) {
        self.bytes += fetch.bytes;
        if let Some(old) = self.by_start.insert((block, first), fetch) {
            self.bytes -= old.bytes;
        }
    }

    pub fn remove(&mut self, block: BlockId, first: u16) -> Option<OriginFetch> {
        let fetch = self.by_start.remove(&(block, first))?;
        self.bytes -= fetch.bytes;
        Some(fetch)
    }

    /// Bytes asked of the origin and not yet in.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn iter(&self) -> impl Iterator<Item = (BlockId, u16, &OriginFetch)> {
        self.by_start
            .iter()
            .map(|(&(block, first), f)| (block, first, f))
    }

    /// The fetches of `block` starting at chunks `..=last`, by first chunk.
    pub fn of_block_through(
        &self,
        block: BlockId,
        last: u16,
    ) -> impl DoubleEndedIterator<Item = (u16, &OriginFetch)> {
        self.by_start
            .range((block, 0)..=(block, last))
            .map(|(&(_, first), fetch)| (first, fetch))
    }
}

#[derive(Debug)]
pub(crate) struct Partial<T: Trust> {
    /// Checked against the manifest's root; chunks are checked against these.
    pub hashes: Option<T::Hashes>,
    pub chunks: Vec<ChunkState<T::Chunk>>,
    pub missing: u16,
    pub unassigned: u16,
    /// Whether the last chunk (the short one) is `Missing`: a planning pass
    /// sums the unassigned bytes of every block nobody holds, and reading this
    /// beside the counters spares it a load from the chunk list.
    pub last_missing: bool,
    /// We told our peers we are receiving it (and will relay it).
    pub announced: bool,
}

/// What accepting a chunk did.
pub(crate) enum Accepted<C> {
    /// Kept; the block still misses chunks. Holds the other peers that were asked
    /// for the same chunk: the caller must cancel it with them.
    Kept { also_asked: Vec<PeerId> },
    /// Kept, and the block is complete: the caller stores and delivers it.
    Completed {
        also_asked: Vec<PeerId>,
        chunks: Vec<C>,
    },
    /// We had it already (end-game or a late arrival): nothing to do.
    Duplicate,
}

impl<T: Trust> Partial<T> {
    pub fn new(chunks: u16) -> Self {
        Self {
            hashes: None,
            chunks: (0..chunks).map(|_| ChunkState::Missing).collect(),
            missing: chunks,
            unassigned: chunks,
            last_missing: chunks > 0,
            announced: false,
        }
    }

    pub fn chunk_data(&self, index: usize) -> Option<&T::Chunk> {
        match self.chunks.get(index) {
            Some(ChunkState::Got { data, .. }) => Some(data),
            _ => None,
        }
    }

    /// Missing → Requested, or Requested by one → Requested by two (end-game).
    pub fn mark_requested(&mut self, index: usize, peer: PeerId) {
        match &mut self.chunks[index] {
            state @ ChunkState::Missing => {
                *state = ChunkState::Requested {
                    first: peer,
                    second: None,
                };
                self.unassigned -= 1;
            }
            ChunkState::Requested { first, second } if *first != peer && second.is_none() => {
                *second = Some(peer);
            }
            other => debug_assert!(false, "requesting chunk in state {other:?}"),
        }
        self.note_last();
    }

    fn note_last(&mut self) {
        self.last_missing = matches!(self.chunks.last(), Some(ChunkState::Missing));
    }

    /// The request to `peer` ended without data (timeout, reject, cancel, peer gone).
    pub fn release_request(&mut self, index: usize, peer: PeerId) {
        if let Some(state @ ChunkState::Requested { .. }) = self.chunks.get_mut(index) {
            let ChunkState::Requested { first, second } = *state else {
                unreachable!()
            };
            *state = match (first == peer, second) {
                (true, Some(other)) => ChunkState::Requested {
                    first: other,
                    second: None,
                },
                (false, Some(s)) if s == peer => ChunkState::Requested {
                    first,
                    second: None,
                },
                (true, None) => {
                    self.unassigned += 1;
                    ChunkState::Missing
                }
                _ => ChunkState::Requested { first, second },
            };
        }
        self.note_last();
    }

    /// Missing → Origin for a fetch. Requested chunks in the range stay with their
    /// peers too: whichever answers first wins.
    pub fn mark_origin(&mut self, index: usize) {
        if let state @ ChunkState::Missing = &mut self.chunks[index] {
            *state = ChunkState::Origin;
            self.unassigned -= 1;
        }
        self.note_last();
    }

    /// An origin fetch of `range` ended without bringing these chunks (failed,
    /// refused or short): they are missing again. Other fetches' chunks stay.
    pub fn release_origin(&mut self, range: std::ops::Range<u16>) {
        let range = usize::from(range.start)..usize::from(range.end).min(self.chunks.len());
        for state in &mut self.chunks[range] {
            if matches!(state, ChunkState::Origin) {
                *state = ChunkState::Missing;
                self.unassigned += 1;
            }
        }
        self.note_last();
    }

    /// Keeps a verified chunk.
    pub fn accept(&mut self, index: usize, data: T::Chunk, from: Source) -> Accepted<T::Chunk> {
        let also_asked = match &self.chunks[index] {
            ChunkState::Got { .. } => return Accepted::Duplicate,
            ChunkState::Missing => {
                self.unassigned -= 1;
                Vec::new()
            }
            ChunkState::Origin => Vec::new(),
            ChunkState::Requested { first, second } => [Some(*first), *second]
                .into_iter()
                .flatten()
                .filter(|p| Source::Peer(*p) != from)
                .collect(),
        };
        self.chunks[index] = ChunkState::Got { data, from };
        self.note_last();
        self.missing -= 1;
        if self.missing > 0 {
            return Accepted::Kept { also_asked };
        }
        let chunks = self
            .chunks
            .iter()
            .map(|c| match c {
                ChunkState::Got { data, .. } => data.clone(),
                _ => unreachable!("a complete block has every chunk"),
            })
            .collect();
        Accepted::Completed { also_asked, chunks }
    }

    /// Drops every chunk `peer` supplied (it has been caught sending bad data).
    pub fn discard_from(&mut self, peer: PeerId) -> usize {
        let mut dropped = 0;
        for state in &mut self.chunks {
            if matches!(state, ChunkState::Got { from: Source::Peer(p), .. } if *p == peer) {
                *state = ChunkState::Missing;
                self.missing += 1;
                self.unassigned += 1;
                dropped += 1;
            }
        }
        self.note_last();
        dropped
    }

    /// Recounts both counters (used by the invariant check).
    pub fn recount(&self) -> (u16, u16) {
        let missing = self
            .chunks
            .iter()
            .filter(|c| !matches!(c, ChunkState::Got { .. }))
            .count() as u16;
        let unassigned = self
            .chunks
            .iter()
            .filter(|c| matches!(c, ChunkState::Missing))
            .count() as u16;
        (missing, unassigned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(bytes: u64, count: u16) -> OriginFetch {
        OriginFetch {
            asked: Millis::ZERO,
            expected_ms: 0,
            bytes,
            count,
        }
    }

    #[test]
    fn origin_fetches_keep_their_byte_sum_through_inserts_replacements_and_removals() {
        let mut fetches = OriginFetches::default();
        fetches.insert(BlockId(3), 0, fetch(100, 2));
        fetches.insert(BlockId(3), 4, fetch(50, 1));
        fetches.insert(BlockId(9), 0, fetch(7, 1));
        assert_eq!(fetches.bytes(), 157);
        // A second fetch at the same start replaces the first one's bytes.
        fetches.insert(BlockId(3), 4, fetch(60, 1));
        assert_eq!(fetches.bytes(), 167);
        assert_eq!(fetches.remove(BlockId(3), 0).map(|f| f.bytes), Some(100));
        assert!(fetches.remove(BlockId(3), 0).is_none());
        assert_eq!(fetches.bytes(), 67);
        let firsts: Vec<u16> = fetches
            .of_block_through(BlockId(3), 4)
            .map(|(f, _)| f)
            .collect();
        assert_eq!(firsts, [4]);
        assert_eq!(fetches.of_block_through(BlockId(3), 3).count(), 0);
        assert_eq!(
            fetches.iter().map(|(_, _, f)| f.bytes).sum::<u64>(),
            fetches.bytes()
        );
    }
}
