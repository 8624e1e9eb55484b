//! News of a block on its way: one origin copy of each new block, not one per
//! corner of the swarm.
//!
//! Rules (each has a scenario test in tests/origin_link.rs):
//! - A viewer that asks the origin for a block none of its peers announced,
//!   and had heard no news of, tells its peers `Coming`. A peer that had not
//!   heard of it within `COMING_MEMORY_MS` passes it on while hops are left
//!   and the block is within two horizons ahead of its own playhead; so the
//!   news reaches the fetcher's peers, theirs and theirs (24, 576, then
//!   everyone in a swarm of a thousand) within a few latencies.
//! - A viewer that heard the news does not fetch that block early by the
//!   spread's lead (origin.rs): it waits for a peer to announce it, as the
//!   copy spreads, and still takes it from the origin at its last chance if
//!   none does. Without it, at the premiere, a fresh block stayed with its
//!   fetcher alone for the first 3 s in the median (its uplink busy with
//!   blocks due sooner), a viewer saw only its own 24 peers of a thousand,
//!   and further fetchers fired 0.1 to 4 s after the first: 1.6 origin copies
//!   of each block after the first minute.
//! - A peer's `Have` of a block none of our other peers held, that we lack
//!   and had not heard of, is news too: the copy has reached our corner of the
//!   swarm, and we pass it on with one hop. News fades in 30 s, and a copy
//!   can take longer than that to spread while uplinks serve blocks due
//!   sooner (at the premiere's start, 20 s and more with a handful of
//!   holders); as the copy spreads, its own haves keep the news alive where
//!   it goes, and only there.

use rustc_hash::FxHashMap;
use telly_proto::wire::{BlockId, GoodbyeReason, MAX_COMING_HOPS};

use crate::engine::Engine;
use crate::message::PeerMessage;
use crate::peer::PeerId;
use crate::time::Millis;
use crate::trust::Trust;

/// How long news of a block holds back this viewer's early fetch of it: long
/// enough for the copy to reach one of its peers (at the premiere a fresh
/// block had about 30 holders 10 s after its fetch and 500 after 20 s); if
/// none holds it by then, that copy has most likely gone with its holder.
pub(crate) const COMING_MEMORY_MS: u64 = 30_000;

/// Entries kept before old news is swept out.
const SWEEP_AT: usize = 64;

/// Blocks this viewer heard are on their way, and when it heard.
#[derive(Default)]
pub(crate) struct ComingNews {
    heard: FxHashMap<BlockId, Millis>,
}

impl ComingNews {
    pub(crate) fn heard(&self, block: BlockId, now: Millis) -> bool {
        self.heard
            .get(&block)
            .is_some_and(|&at| now.since(at) < COMING_MEMORY_MS)
    }

    fn note(&mut self, block: BlockId, now: Millis) {
        if self.heard.len() >= SWEEP_AT {
            self.heard.retain(|_, at| now.since(*at) < COMING_MEMORY_MS);
        }
        self.heard.insert(block, now);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heard.len()
    }
}

impl<T: Trust> Engine<T> {
    /// Whether a block none of our peers announced is known to be on its way
    /// to our neighbourhood.
    pub(crate) fn heard_coming(&self, block: BlockId, now: Millis) -> bool {
        self.coming.heard(block, now)
    }

    /// We are asking the origin for `block`, which none of our peers
    /// announced: if that is news, our peers hear it first.
    pub(crate) fn announce_coming(&mut self, block: BlockId, now: Millis) {
        self.take_news(block, Some(MAX_COMING_HOPS), None, now);
    }

    pub(crate) fn on_coming(&mut self, from: PeerId, block: BlockId, hops: u8, now: Millis) {
        if block.0 as usize >= self.layout.len() {
            return self.drop_peer(from, GoodbyeReason::ProtocolViolation);
        }
        self.take_news(block, hops.checked_sub(1), Some(from), now);
    }

    /// `from`'s `Have` of `block` has just been counted: if none of our other
    /// peers held it, the copy has reached our neighbourhood, news for the
    /// peers around us too.
    pub(crate) fn on_first_have(&mut self, from: PeerId, block: BlockId, now: Millis) {
        if self.avail[block.0 as usize] == 1 {
            self.take_news(block, Some(1), Some(from), now);
        }
    }

    /// Notes news of `block` if it is news to us (we lack the block, had not
    /// heard of it within the memory, and it is in range), and then passes
    /// it on with `pass_on` hops to our peers that lack it, `from` aside.
    fn take_news(
        &mut self,
        block: BlockId,
        pass_on: Option<u8>,
        from: Option<PeerId>,
        now: Millis,
    ) {
        if self.has_block(block) || self.coming.heard(block, now) || !self.in_news_range(block, now)
        {
            return;
        }
        self.coming.note(block, now);
        if let Some(hops) = pass_on {
            self.tell_peers_lacking(block, from, || PeerMessage::Coming { block, hops });
        }
    }

    /// News worth hearing and passing on: a block this viewer (and so, most
    /// likely, the peers the tracker matched it with) will want within two
    /// horizons. A viewer far from it gains nothing and spares its peers.
    fn in_news_range(&self, block: BlockId, now: Millis) -> bool {
        let pos = self.position(now);
        !self.layout.is_behind(block, pos)
            && self.layout.deadline_time(block) <= pos + 2 * self.config.horizon_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news_is_forgotten_after_its_memory_and_swept_when_many() {
        let mut news = ComingNews::default();
        news.note(BlockId(3), Millis(1_000));
        assert!(news.heard(BlockId(3), Millis(1_000 + COMING_MEMORY_MS - 1)));
        assert!(!news.heard(BlockId(3), Millis(1_000 + COMING_MEMORY_MS)));
        assert!(!news.heard(BlockId(4), Millis(1_000)));
        for b in 0..SWEEP_AT as u32 {
            news.note(BlockId(100 + b), Millis(2_000));
        }
        // The next note sweeps out what is older than the memory.
        news.note(BlockId(7), Millis(2_000 + COMING_MEMORY_MS));
        assert_eq!(news.len(), 1);
    }
}
