//! Serving peers: upload slots, pacing under the caps, neediest deadline first.
//!
//! Rules (each has a scenario test in tests/uploads.rs):
//! - At most `upload_slots` peers are served at once. A request from a peer without
//!   a slot takes a free one, or is rejected with a `Choke`; when a slot frees (its
//!   holder idle for `slot_idle_ms`, or gone) the refused peer that needed data
//!   soonest gets an `Unchoke`. A refused request whose deadline is at least
//!   `PREEMPT_GAP_MS` sooner than every slot holder's next need takes the slot of
//!   the holder that needs data last, whose queue is rejected (it asks elsewhere).
//! - Chunks leave paced by two token buckets: the viewer's total upload cap and a
//!   per-peer cap, so one greedy peer never takes the whole uplink. Each bucket
//!   holds `upload_burst_ms` of its rate (at least a chunk), and a new peer's
//!   starts full: a quiet uplink serves a newcomer's first block at once.
//! - Among served peers the next chunk is the one with the earliest deadline, each
//!   peer's deadlines pushed back by the time its recent share took at a fair rate:
//!   a peer that claims everything is urgent still waits its turn, and pushed
//!   back by `ALTERNATIVE_DELAY_MS` per neighbour that also holds the block (up
//!   to ten): who can get a block nowhere else goes first.
//! - A request's deadline is when the requester gives up on us (and goes to the
//!   origin): a chunk that can no longer arrive by then is rejected, not sent,
//!   so no upload is spent on copies that would be thrown away.
//! - A request kept waiting for two request time-outs, while its requester got
//!   nothing from us, is turned away (`Reject`) when a neighbour of ours also
//!   holds the block: the requester would give up on us a step later anyway,
//!   and would mark us slow when it did. A block nobody else holds waits.
//! - A relay serves chunks of a block it is still receiving as they arrive.

use telly_proto::wire::{BlockId, CHUNK_SIZE, GoodbyeReason};

use crate::download::ChunkState;
use crate::engine::{Action, Engine};
use crate::message::PeerMessage;
use crate::peer::{PeerId, Queued};
use crate::receive::SILENT_TIMEOUTS;
use crate::time::Millis;
use crate::trust::Trust;

/// Queue entries looked at per peer when choosing the next chunk.
const LOOKAHEAD: usize = 8;

/// A slot holder whose next need is this much later than a refused peer's
/// gives its slot up to it.
const PREEMPT_GAP_MS: u64 = 4_000;

/// Allowance for the link (latency, a chunk ahead in the uplink) when judging
/// whether a chunk sent now still arrives before its requester gives up.
const SEND_SLACK_MS: f64 = 300.0;

/// Rank delay per neighbour that also holds the requested block, counting at
/// most `ALTERNATIVES_COUNTED` of them; none within the grace of the deadline.
/// The grace covers a requester's next block or two: with 0.8 s, every
/// uploader put a newcomer's next blocks behind prefetching, each counting on
/// the others, and 29 % of a premiere's origin bytes were newcomers' blocks
/// 2 to 4, held by (in the median) all ten of their peers. Against 4 s, no
/// delay at all spread the newest blocks too slowly (premiere +13 %, +17 %)
/// and an 8 s grace cost churn 21 % and 3 %.
///
/// 3 s a holder (up to 30 s) rather than 1 s (up to 10 s): a prefetch window is
/// a minute long, so at 1 s a request for a block ten others hold, due in 26 s,
/// still went before one for a block only we hold, due in 55 s. On demand the
/// first viewers' newest blocks, held by one of them, waited behind the old
/// blocks it served to viewers far behind, until those blocks were due and came
/// from the origin. Premiere −6.5 to −11.6 % over four seeds, on demand −1.5 to
/// −10 %, churn −16 to +4.7 % (mean −5.5 %), scarce upload unchanged; 2 s and
/// 6 s did less on demand.
const ALTERNATIVE_DELAY_MS: u64 = 3_000;
const ALTERNATIVES_COUNTED: u16 = 10;
const ALTERNATIVES_GRACE_MS: u64 = 4_000;

enum Readiness<C> {
    Ready(C),
    /// A relay waiting for the chunk to arrive, or a block being loaded.
    Wait,
    /// Held but not in memory: load it.
    Load,
    /// We do not have it and will not: reject.
    Gone,
}

/// How much later than its deadline a queued chunk ranks: a request for a
/// block that many of our neighbours hold can likely be served by one of them,
/// while one for a block few hold (the newest, at the front of a premiere) has
/// nowhere else to go. Requests soon given up are not delayed (a newcomer's
/// first blocks, a viewer about to stall).
fn alternatives_delay(avail: &[u16], q: &Queued, now: Millis) -> f64 {
    if q.deadline.since(now) < ALTERNATIVES_GRACE_MS {
        return 0.0;
    }
    let holders = avail[q.block.0 as usize].min(ALTERNATIVES_COUNTED);
    (u64::from(holders) * ALTERNATIVE_DELAY_MS) as f64
}

impl<T: Trust> Engine<T> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_request(
        &mut self,
        peer: PeerId,
        block: BlockId,
        first: u16,
        count: u16,
        deadline_ms: u32,
        want_hashes: bool,
        now: Millis,
    ) {
        let Some(info) = self.layout.get(block) else {
            return self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
        };
        if count == 0 || u32::from(first) + u32::from(count) > u32::from(info.chunks) {
            return self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
        }
        let holds = self.has_block(block) || self.partial.get(&block).is_some_and(|p| p.announced);
        let deadline = now + u64::from(deadline_ms);
        let Some(unchoked) = self.peers.get(&peer).map(|p| p.unchoked) else {
            return;
        };
        if !self.config.peer_to_peer || !holds {
            return self.send(
                peer,
                PeerMessage::Reject {
                    block,
                    first,
                    count,
                },
            );
        }
        let mut slots_used = self.peers.values().filter(|p| p.unchoked).count();
        if !unchoked
            && slots_used >= self.config.upload_slots
            && self.preempt_slot_for(peer, deadline)
        {
            slots_used -= 1;
        }
        let p = self.peers.get_mut(&peer).expect("checked above");
        if !p.unchoked {
            if slots_used >= self.config.upload_slots {
                p.refused = Some(p.refused.map_or(deadline, |d| d.min(deadline)));
                self.send(
                    peer,
                    PeerMessage::Reject {
                        block,
                        first,
                        count,
                    },
                );
                return self.send(peer, PeerMessage::Choke);
            }
            p.unchoked = true;
            p.refused = None;
        }
        if p.queue.len() + usize::from(count) > self.config.max_queue_per_peer {
            return self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
        }
        p.last_request = now;
        for chunk in first..first + count {
            if p.queue.iter().any(|q| q.block == block && q.chunk == chunk) {
                continue;
            }
            let at = p.queue.partition_point(|q| q.deadline <= deadline);
            p.queue.insert(
                at,
                Queued {
                    block,
                    chunk,
                    deadline,
                    want_hashes,
                    received: now,
                },
            );
        }
        self.dirty_upload = true;
    }

    pub(crate) fn on_cancel(&mut self, peer: PeerId, block: BlockId, first: u16, count: u16) {
        if let Some(p) = self.peers.get_mut(&peer) {
            let end = first.saturating_add(count);
            p.queue
                .retain(|q| q.block != block || q.chunk < first || q.chunk >= end);
        }
    }

    /// Frees a slot for `peer`, which needs data by `deadline`, if a slot holder
    /// needs nothing for a good while longer: a prefetching peer must not keep a
    /// newcomer's first blocks (or a viewer about to stall) waiting. The holder's
    /// queued requests are rejected so that it asks elsewhere at once, and it
    /// waits among the refused for the next free slot.
    /// Returns whether a slot was freed.
    fn preempt_slot_for(&mut self, peer: PeerId, deadline: Millis) -> bool {
        let victim = self
            .peers
            .iter()
            .filter(|(id, p)| **id != peer && p.unchoked)
            .map(|(id, p)| (p.queue.first().map_or(Millis::NEVER, |q| q.deadline), *id))
            .max();
        let Some((their_deadline, victim)) = victim else {
            return false;
        };
        if their_deadline <= deadline + PREEMPT_GAP_MS {
            return false;
        }
        let p = self.peers.get_mut(&victim).expect("just found");
        p.unchoked = false;
        let queued = std::mem::take(&mut p.queue);
        if their_deadline != Millis::NEVER {
            p.refused = Some(their_deadline);
        }
        for q in queued {
            self.send(
                victim,
                PeerMessage::Reject {
                    block: q.block,
                    first: q.chunk,
                    count: 1,
                },
            );
        }
        self.send(victim, PeerMessage::Choke);
        true
    }

    /// Gives a freed slot to the refused peer that needed data soonest.
    pub(crate) fn promote_refused(&mut self) {
        let used = self.peers.values().filter(|p| p.unchoked).count();
        if used >= self.config.upload_slots {
            return;
        }
        let neediest = self
            .peers
            .iter()
            .filter_map(|(id, p)| p.refused.map(|d| (d, *id)))
            .min();
        if let Some((_, id)) = neediest {
            let p = self.peers.get_mut(&id).expect("just found");
            p.refused = None;
            p.unchoked = true;
            self.send(id, PeerMessage::Unchoke);
        }
    }

    /// Rejects every queued request for a block we turned out not to hold.
    pub(crate) fn reject_queued_for(&mut self, block: BlockId) {
        let mut rejects = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            p.queue.retain(|q| {
                let keep = q.block != block;
                if !keep {
                    rejects.push((*id, q.chunk));
                }
                keep
            });
        }
        for (peer, chunk) in rejects {
            self.send(
                peer,
                PeerMessage::Reject {
                    block,
                    first: chunk,
                    count: 1,
                },
            );
        }
    }

    fn release_idle_slots(&mut self, now: Millis) {
        self.slot_wake = Millis::NEVER;
        let idle = self.config.slot_idle_ms;
        let mut freed = 0;
        let mut anyone_refused = false;
        for p in self.peers.values_mut() {
            anyone_refused |= p.refused.is_some();
            if !p.unchoked || !p.queue.is_empty() {
                continue;
            }
            let free_at = p.last_request + idle;
            if free_at <= now {
                p.unchoked = false;
                freed += 1;
            } else if p.refused.is_none() {
                self.slot_wake = self.slot_wake.min(free_at);
            }
        }
        // Only worth waking for idle slots when someone waits for one.
        if !anyone_refused {
            self.slot_wake = Millis::NEVER;
        }
        for _ in 0..freed {
            self.promote_refused();
        }
    }

    fn readiness(&self, block: BlockId, chunk: u16) -> Readiness<T::Chunk> {
        if self.has_block(block) {
            return match self.resident.get(&block) {
                Some((_, chunks, _)) => Readiness::Ready(chunks[usize::from(chunk)].clone()),
                None if self.loading.contains(&block) => Readiness::Wait,
                None => Readiness::Load,
            };
        }
        match self.partial.get(&block) {
            Some(p) if p.announced => match p.chunk_data(usize::from(chunk)) {
                Some(data) => Readiness::Ready(data.clone()),
                None => Readiness::Wait,
            },
            _ => Readiness::Gone,
        }
    }

    /// Sends chunks while the caps allow, neediest first.
    pub(crate) fn serve(&mut self, now: Millis) {
        self.upload_wake = Millis::NEVER;
        self.release_idle_slots(now);
        if !self.config.peer_to_peer {
            return;
        }
        let cap = self.config.upload_cap as f64 / 1000.0;
        let per_peer_cap = self.config.per_peer_upload_cap as f64 / 1000.0;
        if cap <= 0.0 {
            return;
        }
        let chunk = CHUNK_SIZE as f64;
        let burst = self.config.burst_bytes(self.config.upload_cap).max(chunk);
        let per_peer_burst = self
            .config
            .burst_bytes(self.config.per_peer_upload_cap)
            .max(chunk);
        let send_ms = chunk / cap.min(per_peer_cap).max(1e-6);
        // A step before the requester would give up on our silence, so that it
        // asks elsewhere at once and without marking us slow.
        let turn_away_after = (SILENT_TIMEOUTS - 1) * self.config.min_request_timeout_ms;
        self.total_tokens =
            (self.total_tokens + now.since(self.total_tokens_at) as f64 * cap).min(burst);
        self.total_tokens_at = now;
        loop {
            if self.total_tokens < 0.0 {
                let wait = (-self.total_tokens / cap).ceil() as u64;
                self.upload_wake = self.upload_wake.min(now + wait.max(1));
                return;
            }
            let active = self
                .peers
                .values()
                .filter(|p| !p.queue.is_empty())
                .count()
                .max(1);
            let fair_rate = cap / active as f64;
            let mut best: Option<(f64, PeerId, BlockId, u16)> = None;
            let mut gone = Vec::new();
            let mut loads = Vec::new();
            for (id, p) in self.peers.iter_mut() {
                if !p.unchoked || p.queue.is_empty() {
                    continue;
                }
                p.up_tokens = (p.up_tokens + now.since(p.up_tokens_at) as f64 * per_peer_cap)
                    .min(per_peer_burst);
                p.up_tokens_at = now;
                if p.up_tokens < 0.0 {
                    let wait = (-p.up_tokens / per_peer_cap.max(1e-6)).ceil() as u64;
                    self.upload_wake = self.upload_wake.min(now + wait.max(1));
                    continue;
                }
                if now.since(p.last_sent) >= turn_away_after {
                    p.queue.retain(|q| {
                        // Only what the rank delay holds back: a block another
                        // neighbour holds, not due within the grace.
                        let held_back = alternatives_delay(&self.avail, q, now) > 0.0;
                        let turn_away = held_back && now.since(q.received) >= turn_away_after;
                        if turn_away {
                            gone.push((*id, q.block, q.chunk));
                        }
                        !turn_away
                    });
                }
                p.decay_recent_up(now);
                let penalty = p.recent_up / fair_rate;
                for q in p.queue.iter().take(LOOKAHEAD) {
                    // Too late to reach them before they give up on us: a
                    // copy sent now would be thrown away.
                    if now.0 as f64 + send_ms + SEND_SLACK_MS > q.deadline.0 as f64 {
                        gone.push((*id, q.block, q.chunk));
                        continue;
                    }
                    let ready = match self.layout.get(q.block) {
                        Some(_) if self.have.get(q.block.0 as usize) => {
                            match self.resident.get(&q.block) {
                                Some(_) => true,
                                None => {
                                    if !self.loading.contains(&q.block) {
                                        loads.push(q.block);
                                    }
                                    false
                                }
                            }
                        }
                        _ => match self
                            .partial
                            .get(&q.block)
                            .map(|part| (part.announced, part.chunks.get(usize::from(q.chunk))))
                        {
                            Some((true, Some(ChunkState::Got { .. }))) => true,
                            // Being fetched: a relay serves it when it arrives.
                            Some((
                                true,
                                Some(ChunkState::Requested { .. } | ChunkState::Origin),
                            )) => false,
                            // Nobody is fetching it here: waiting could deadlock
                            // two relays asking each other, so refuse at once.
                            _ => {
                                gone.push((*id, q.block, q.chunk));
                                false
                            }
                        },
                    };
                    if ready {
                        let key =
                            q.deadline.0 as f64 + penalty + alternatives_delay(&self.avail, q, now);
                        if best.is_none_or(|(k, _, _, _)| key < k) {
                            best = Some((key, *id, q.block, q.chunk));
                        }
                        break;
                    }
                }
            }
            loads.sort_unstable();
            loads.dedup();
            for block in loads {
                self.loading.insert(block);
                self.actions.push_back(Action::Load { block });
            }
            for (peer, block, chunk) in gone {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.queue.retain(|q| q.block != block || q.chunk != chunk);
                }
                self.send(
                    peer,
                    PeerMessage::Reject {
                        block,
                        first: chunk,
                        count: 1,
                    },
                );
            }
            let Some((_, peer, block, chunk)) = best else {
                return;
            };
            self.send_chunk(peer, block, chunk, now);
        }
    }

    fn send_chunk(&mut self, peer: PeerId, block: BlockId, chunk: u16, now: Millis) {
        let p = self.peers.get_mut(&peer).expect("chosen among peers");
        let Some(index) = p
            .queue
            .iter()
            .position(|q| q.block == block && q.chunk == chunk)
        else {
            return;
        };
        let q = p.queue.remove(index);
        let Readiness::Ready(data) = self.readiness(q.block, q.chunk) else {
            return;
        };
        if q.want_hashes {
            let hashes = if let Some((h, _, _)) = self.resident.get(&q.block) {
                Some(h.clone())
            } else {
                self.partial.get(&q.block).and_then(|p| p.hashes.clone())
            };
            if let Some(hashes) = hashes {
                self.send(
                    peer,
                    PeerMessage::Hashes {
                        block: q.block,
                        hashes,
                    },
                );
            }
            let p = self.peers.get_mut(&peer).expect("present");
            for other in p.queue.iter_mut().filter(|o| o.block == q.block) {
                other.want_hashes = false;
            }
        }
        if let Some((_, _, used)) = self.resident.get_mut(&q.block) {
            *used = now;
        }
        let len = T::chunk_len(&data) as f64;
        let p = self.peers.get_mut(&peer).expect("present");
        p.last_sent = now;
        p.up_tokens -= len;
        p.recent_up += len;
        p.bytes_up += len as u64;
        self.total_tokens -= len;
        self.stats.bytes_uploaded += len as u64;
        self.send(
            peer,
            PeerMessage::Sending {
                block: q.block,
                index: q.chunk,
            },
        );
        self.send(
            peer,
            PeerMessage::Chunk {
                block: q.block,
                index: q.chunk,
                data,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(block: u32, deadline: Millis) -> Queued {
        Queued {
            block: BlockId(block),
            chunk: 0,
            deadline,
            want_hashes: false,
            received: Millis::ZERO,
        }
    }

    #[test]
    fn only_a_request_with_time_to_spare_waits_for_the_blocks_other_holders() {
        let now = Millis(10_000);
        // Block 0 is held by five neighbours, block 1 by twelve, block 2 by none.
        let avail = [5, 12, 0];
        let later = now + 2 * ALTERNATIVES_GRACE_MS;
        assert_eq!(alternatives_delay(&avail, &queued(0, later), now), 15_000.0);
        assert_eq!(alternatives_delay(&avail, &queued(1, later), now), 30_000.0);
        assert_eq!(alternatives_delay(&avail, &queued(2, later), now), 0.0);
        // A newcomer's next blocks, due within a few seconds, rank by their
        // deadline alone however many others hold them.
        for soon in [now + 900, now + 3_000, now + ALTERNATIVES_GRACE_MS - 1] {
            assert_eq!(alternatives_delay(&avail, &queued(1, soon), now), 0.0);
        }
    }
}
