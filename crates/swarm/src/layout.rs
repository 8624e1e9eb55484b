//! The title's blocks as the engine sees them: flat ids, times, sizes, chunk counts.
//! Built once from a manifest and shared (the simulator shares one among thousands
//! of engines).

use telly_proto::Manifest;
use telly_proto::manifest::BlockEntry;
use telly_proto::wire::{self, BlockId};

/// A block still counts as needed this long after the manifest says it ends:
/// media frames straddle block bounds (an audio frame, a video fragment), so a
/// player stopped at 20.01 s after a seek may still need the block the manifest
/// ends at 20.00 s.
const BOUNDARY_SLACK_MS: u64 = 500;

#[derive(Clone, Debug)]
pub struct BlockInfo {
    pub entry: BlockEntry,
    pub track: u16,
    /// An init segment: needed before any media block of its track.
    pub is_init: bool,
    /// An init segment or its track's first media block: what every viewer
    /// starting the title asks for first.
    pub opens_title: bool,
    pub chunks: u16,
}

#[derive(Clone, Debug)]
pub struct Layout {
    blocks: Vec<BlockInfo>,
    /// Block ids ordered by (start time, init first, track): the order of deadlines.
    by_time: Vec<BlockId>,
    /// `start_ms` of each entry of `by_time` (init segments count as time 0).
    times: Vec<u64>,
    duration_ms: u64,
    tracks: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("the manifest has {0} blocks, more than the wire protocol can name")]
    TooManyBlocks(usize),
}

impl Layout {
    pub fn new(manifest: &Manifest) -> Result<Self, LayoutError> {
        let mut blocks = Vec::new();
        let mut previous_track = usize::MAX;
        for (track, entry) in wire::block_order(manifest) {
            let is_init = track != previous_track;
            previous_track = track;
            let follows_init = blocks.last().is_some_and(|b: &BlockInfo| b.is_init);
            blocks.push(BlockInfo {
                entry: entry.clone(),
                track: track as u16,
                is_init,
                opens_title: is_init || follows_init,
                chunks: wire::chunk_count(entry.size) as u16,
            });
        }
        if blocks.len() > wire::MAX_BLOCKS {
            return Err(LayoutError::TooManyBlocks(blocks.len()));
        }
        let time_of = |b: &BlockInfo| if b.is_init { 0 } else { b.entry.start_ms };
        let mut by_time: Vec<BlockId> = (0..blocks.len() as u32).map(BlockId).collect();
        by_time.sort_by_key(|id| {
            let b = &blocks[id.0 as usize];
            (time_of(b), !b.is_init, b.track)
        });
        let times = by_time
            .iter()
            .map(|id| time_of(&blocks[id.0 as usize]))
            .collect();
        let duration_ms = blocks
            .iter()
            .map(|b| b.entry.start_ms + b.entry.duration_ms)
            .max()
            .unwrap_or(0);
        let tracks = blocks
            .iter()
            .map(|b| usize::from(b.track) + 1)
            .max()
            .unwrap_or(0);
        Ok(Self {
            blocks,
            by_time,
            times,
            duration_ms,
            tracks,
        })
    }

    /// Tracks with blocks (their numbers run from zero).
    pub fn track_count(&self) -> usize {
        self.tracks
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn get(&self, id: BlockId) -> Option<&BlockInfo> {
        self.blocks.get(id.0 as usize)
    }

    /// Panics on an id that was not checked against [`Layout::len`].
    pub fn info(&self, id: BlockId) -> &BlockInfo {
        &self.blocks[id.0 as usize]
    }

    pub fn duration_ms(&self) -> u64 {
        self.duration_ms
    }

    pub fn total_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.entry.size).sum()
    }

    /// Every track's init segment.
    pub fn inits(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.by_time
            .iter()
            .copied()
            .take_while(|id| self.info(*id).is_init)
    }

    pub fn by_time(&self) -> &[BlockId] {
        &self.by_time
    }

    /// Positions in [`Layout::by_time`] of the blocks still needed at `position_ms`
    /// and starting before `position_ms + horizon_ms`: media blocks not yet played
    /// and every init segment.
    pub fn window(&self, position_ms: u64, horizon_ms: u64) -> std::ops::Range<usize> {
        let end_time = position_ms.saturating_add(horizon_ms);
        // The block playing at `position_ms` is the last one starting at or
        // before it, give or take the frames that straddle block bounds.
        let played_to = position_ms.saturating_sub(BOUNDARY_SLACK_MS);
        let first_after = self.times.partition_point(|&t| t <= played_to);
        let mut start = first_after.saturating_sub(1);
        // Blocks of other tracks that start at the same time are needed too.
        while start > 0 && self.times[start - 1] == self.times[start] {
            start -= 1;
        }
        let end = self.times.partition_point(|&t| t < end_time).max(start + 1);
        start..end.min(self.by_time.len())
    }

    /// The start time used for deadlines: init segments are needed at time 0 of
    /// their track's playback, i.e. at once.
    pub fn deadline_time(&self, id: BlockId) -> u64 {
        let b = self.info(id);
        if b.is_init { 0 } else { b.entry.start_ms }
    }

    /// True when `id` has been played past at `position_ms` (init segments never
    /// are), by more than the frames that straddle block bounds.
    pub fn is_behind(&self, id: BlockId, position_ms: u64) -> bool {
        let b = self.info(id);
        !b.is_init && b.entry.start_ms + b.entry.duration_ms + BOUNDARY_SLACK_MS <= position_ms
    }
}
