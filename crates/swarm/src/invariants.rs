//! `check_invariants`: the rules of STATE.md, checked. Tests and the simulator's
//! debug builds call it after every step.

use crate::download::ChunkState;
use crate::engine::Engine;
use crate::peer::Phase;
use crate::trust::Trust;

impl<T: Trust> Engine<T> {
    /// Panics with a description when the engine's state breaks a documented
    /// invariant. Does nothing in release builds.
    pub fn check_invariants(&self) {
        if cfg!(debug_assertions)
            && let Err(broken) = self.invariant_violation()
        {
            panic!("engine invariant broken: {broken}");
        }
    }

    fn invariant_violation(&self) -> Result<(), String> {
        // 1. A held block has no partial state.
        for block in self.partial.keys() {
            if self.has_block(*block) {
                return Err(format!("{block:?} is held and partial"));
            }
        }
        // 2. Partial counters match the chunk states; verified chunks imply hashes.
        for (block, p) in &self.partial {
            if p.recount() != (p.missing, p.unassigned) {
                return Err(format!(
                    "{block:?} counters {:?} vs {:?}",
                    (p.missing, p.unassigned),
                    p.recount()
                ));
            }
            if p.last_missing != matches!(p.chunks.last(), Some(ChunkState::Missing)) {
                return Err(format!("{block:?} last chunk flag {}", p.last_missing));
            }
            if p.missing < p.chunks.len() as u16 && p.hashes.is_none() {
                return Err(format!("{block:?} has chunks but no hashes"));
            }
        }
        // 3. Every Requested chunk is in flight at each peer named, and back.
        for (block, p) in &self.partial {
            for (i, c) in p.chunks.iter().enumerate() {
                if let ChunkState::Requested { first, second } = c {
                    for peer in std::iter::once(first).chain(second.iter()) {
                        let inflight = self
                            .peers
                            .get(peer)
                            .is_some_and(|q| q.find_inflight(*block, i as u16).is_some());
                        if !inflight {
                            return Err(format!(
                                "{block:?}/{i} requested of {peer:?} but not in flight"
                            ));
                        }
                    }
                }
            }
        }
        for (id, peer) in &self.peers {
            let mut bytes = 0u64;
            for f in &peer.inflight {
                bytes += u64::from(f.len);
                let named = self.partial.get(&f.block).is_some_and(|p| {
                    matches!(&p.chunks[usize::from(f.chunk)],
                        ChunkState::Requested { first, second } if first == id || *second == Some(*id))
                });
                if !named {
                    return Err(format!(
                        "{id:?} has {:?}/{} in flight, unknown to the block",
                        f.block, f.chunk
                    ));
                }
            }
            if bytes != peer.inflight_bytes {
                return Err(format!(
                    "{id:?} in-flight bytes {} vs {bytes}",
                    peer.inflight_bytes
                ));
            }
            // 4. Nothing flows before the handshake.
            if peer.phase != Phase::Ready && (!peer.inflight.is_empty() || !peer.queue.is_empty()) {
                return Err(format!("{id:?} exchanges data before its handshake"));
            }
            // 5. Banned names are never connected.
            if peer.name.as_ref().is_some_and(|n| self.banned.contains(n)) {
                return Err(format!("{id:?} is banned but connected"));
            }
        }
        // 6. Availability counts match the peers' have-maps.
        for (block, &count) in self.avail.iter().enumerate() {
            let actual = self.peers.values().filter(|p| p.have.get(block)).count();
            if actual != usize::from(count) {
                return Err(format!("block {block} availability {count} vs {actual}"));
            }
        }
        // 7. Upload slots are bounded.
        let slots = self.peers.values().filter(|p| p.unchoked).count();
        if slots > self.config.upload_slots {
            return Err(format!(
                "{slots} slots in use, limit {}",
                self.config.upload_slots
            ));
        }
        if self.resident.len() > self.config.resident_blocks.max(1) {
            return Err("resident cache over its limit".into());
        }
        // 8. A block's origin fetches cover disjoint runs, and a chunk is
        // `Origin` only inside one of them.
        let mut previous: Option<(crate::BlockId, u16)> = None;
        for (block, first, fetch) in self.origin_inflight.iter() {
            if let Some((b, end)) = previous
                && b == block
                && first < end
            {
                return Err(format!("{block:?} origin fetches overlap at chunk {first}"));
            }
            previous = Some((block, first + fetch.count));
        }
        // 9. The origin's bytes in flight are the sum of its fetches.
        let sum: u64 = self.origin_inflight.iter().map(|(_, _, f)| f.bytes).sum();
        if sum != self.origin_inflight.bytes() {
            return Err(format!(
                "origin fetches sum to {sum} bytes, counted {}",
                self.origin_inflight.bytes()
            ));
        }
        for (&block, p) in &self.partial {
            for (i, c) in p.chunks.iter().enumerate() {
                let covered = self
                    .origin_inflight
                    .of_block_through(block, i as u16)
                    .next_back()
                    .is_some_and(|(first, f)| i < usize::from(first + f.count));
                if matches!(c, ChunkState::Origin) && !covered {
                    return Err(format!("{block:?}/{i} is Origin outside any origin fetch"));
                }
            }
        }
        Ok(())
    }
}
