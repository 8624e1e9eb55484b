//! What peers say: handshakes, have-maps, hashes, chunks, rejects and
//! timeouts of what we asked; and how a peer leaves or is dropped.
//! Each handler keeps the invariants in STATE.md.

use std::cmp::Reverse;

use telly_proto::Sha256Hash;
use telly_proto::wire::{Bitfield, BlockId, GoodbyeReason, WIRE_VERSION};

use crate::download::{Accepted, Source};
use crate::engine::{Action, Engine};
use crate::message::PeerMessage;
use crate::peer::{PeerId, Phase};
use crate::time::Millis;
use crate::trust::Trust;

/// A request is given up when its peer has sent nothing for this many minimum
/// request time-outs (an uploader turns requests away a step before).
pub(crate) const SILENT_TIMEOUTS: u64 = 3;

/// When a request asked with `timeout` (ms) is first checked, counted from
/// when it left. Checks fall every `step` from `timeout` on and none fires
/// before the peer has been silent `SILENT_TIMEOUTS` steps since the request
/// left, so the first that could fire is the first made: the same time-outs
/// at the same times, without a wake-up for each request answered later than
/// one step (4 % of an on-demand simulation's events). That is where a check
/// at `timeout`, the peer quiet since the request left, would move it.
pub(crate) fn first_silence_check(timeout: u64, step: u64) -> u64 {
    next_silence_check(timeout, 0, step).unwrap_or(timeout)
}

/// After a check at `now` of a request whose peer has been quiet since
/// `quiet_since`: the next check, or `None` when the request has timed out.
/// Arrivals only postpone a time-out, so the checks before the first that
/// could fire are skipped (re-checks of busy peers' requests were 28 % of a
/// simulation's events).
fn next_silence_check(now: u64, quiet_since: u64, step: u64) -> Option<u64> {
    let fires_at = quiet_since + SILENT_TIMEOUTS * step;
    (now < fires_at).then(|| now + (fires_at - now).div_ceil(step).max(1) * step)
}

/// What a request's check found.
pub(crate) enum RequestCheck {
    /// The request was answered, cancelled or its check moved already.
    Gone,
    /// Its peer was heard from lately: the check moved to this step.
    Moved(Millis),
    /// Its peer has been silent long enough: the request times out.
    Due,
}

impl<T: Trust> Engine<T> {
    pub(crate) fn on_handshake(
        &mut self,
        peer: PeerId,
        version: u8,
        swarm_id: Sha256Hash,
        grant: T::Grant,
        now: Millis,
    ) {
        if self.peers.get(&peer).map(|p| p.phase) != Some(Phase::Handshaking) {
            return self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
        }
        if version != WIRE_VERSION {
            self.stats.peers_refused += 1;
            return self.drop_peer(peer, GoodbyeReason::VersionMismatch);
        }
        if swarm_id != self.swarm_id {
            self.stats.peers_refused += 1;
            return self.drop_peer(peer, GoodbyeReason::WrongSwarm);
        }
        let name = match self.trust.admit(&grant, self.unix_now(now)) {
            Ok(name) => name,
            Err(error) => {
                tracing::debug!(?peer, %error, "peer refused");
                self.stats.peers_refused += 1;
                return self.drop_peer(peer, GoodbyeReason::BadGrant);
            }
        };
        if self.banned.contains(&name) {
            return self.drop_peer(peer, GoodbyeReason::BadData);
        }
        let mut announce = self.have.clone();
        for (block, p) in &self.partial {
            if p.announced {
                announce.set(block.0 as usize, true);
            }
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.phase = Phase::Ready;
            p.name = Some(name);
        }
        if self.config.peer_to_peer {
            self.send(peer, PeerMessage::HaveMap(announce));
        }
        self.dirty_plan = true;
    }

    pub(crate) fn on_have_map(&mut self, peer: PeerId, bits: Bitfield) {
        if bits.len() != self.layout.len() {
            return self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
        }
        for block in bits.iter_ones() {
            self.on_have(peer, BlockId(block as u32));
        }
    }

    /// Returns whether the have was new (counted in `avail` just now).
    pub(crate) fn on_have(&mut self, peer: PeerId, block: BlockId) -> bool {
        if block.0 as usize >= self.layout.len() {
            self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
            return false;
        }
        let starts_at = self.layout.deadline_time(block);
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        if p.have.get(block.0 as usize) {
            return false;
        }
        p.have.set(block.0 as usize, true);
        p.furthest_ms = p.furthest_ms.max(starts_at);
        self.avail[block.0 as usize] += 1;
        if !self.has_block(block) {
            self.dirty_plan = true;
        }
        true
    }

    pub(crate) fn on_hashes(&mut self, peer: PeerId, block: BlockId, hashes: T::Hashes) {
        let Some(info) = self.layout.get(block) else {
            return self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
        };
        let entry = &info.entry;
        let Some(partial) = self.partial.get(&block) else {
            return;
        };
        if partial.hashes.is_some() {
            return;
        }
        if self.trust.check_hashes(entry, &hashes) {
            if let Some(partial) = self.partial.get_mut(&block) {
                partial.hashes = Some(hashes);
            }
        } else {
            self.drop_peer(peer, GoodbyeReason::BadData);
        }
    }

    pub(crate) fn on_chunk(
        &mut self,
        peer: PeerId,
        block: BlockId,
        index: u16,
        data: T::Chunk,
        now: Millis,
    ) {
        let Some(info) = self.layout.get(block) else {
            return self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
        };
        if index >= info.chunks {
            return self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
        }
        let entry = info.entry.clone();
        let len = T::chunk_len(&data) as u64;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let late = match p.find_inflight(block, index) {
            Some(at) => {
                let f = p.take_inflight(at);
                p.observe_arrival(f.sent_at, f.len, now);
                false
            }
            None => {
                if !p.was_cancelled(block, index) {
                    return self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
                }
                p.bytes_down += len;
                true
            }
        };
        self.dirty_plan = true;
        if self.has_block(block) {
            self.stats.bytes_duplicate += len;
            return;
        }
        let hashes = self.partial.get(&block).and_then(|p| p.hashes.clone());
        let Some(hashes) = hashes else {
            if late {
                // We forgot the block (a seek) after cancelling: harmless.
                self.stats.bytes_duplicate += len;
                return;
            }
            // We asked for the hashes and got data first: the sender skipped a step.
            return self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
        };
        if !self
            .trust
            .check_chunk(&entry, &hashes, usize::from(index), &data)
        {
            return self.drop_peer(peer, GoodbyeReason::BadData);
        }
        self.stats.bytes_from_peers += len;
        self.accept_chunk(
            block,
            usize::from(index),
            data,
            Source::Peer(peer),
            len,
            now,
        );
    }

    /// Keeps a verified chunk and follows up: cancels duplicates, announces,
    /// completes the block.
    pub(crate) fn accept_chunk(
        &mut self,
        block: BlockId,
        index: usize,
        data: T::Chunk,
        from: Source,
        len: u64,
        now: Millis,
    ) {
        let Some(partial) = self.partial.get_mut(&block) else {
            return;
        };
        let first_announce = !partial.announced;
        if self.config.relay_partial {
            partial.announced = true;
        }
        let accepted = partial.accept(index, data, from);
        let also_asked = match &accepted {
            Accepted::Duplicate => {
                self.stats.bytes_duplicate += len;
                return;
            }
            Accepted::Kept { also_asked } | Accepted::Completed { also_asked, .. } => {
                also_asked.clone()
            }
        };
        for other in also_asked {
            self.cancel_request(other, block, index as u16);
        }
        self.dirty_upload = true;
        if let Accepted::Completed { chunks, .. } = accepted {
            let partial = self.partial.remove(&block).expect("present above");
            self.have.set(block.0 as usize, true);
            let hashes = partial.hashes.expect("verified chunks imply hashes");
            self.make_resident(block, hashes, chunks.clone(), now);
            self.actions.push_back(Action::Store { block, chunks });
            self.actions.push_back(Action::Deliver { block });
            self.stats.blocks_delivered += 1;
            if first_announce {
                self.broadcast_have(block);
            }
        } else if first_announce && self.config.relay_partial {
            self.broadcast_have(block);
        }
    }

    pub(crate) fn broadcast_have(&mut self, block: BlockId) {
        if self.config.peer_to_peer {
            self.tell_peers_lacking(block, None, || PeerMessage::Have(block));
        }
    }

    /// Sends `msg()` to every ready peer whose have-map lacks `block`, `except`
    /// aside: what it says about the block is news only to them.
    pub(crate) fn tell_peers_lacking(
        &mut self,
        block: BlockId,
        except: Option<PeerId>,
        msg: impl Fn() -> PeerMessage<T>,
    ) {
        let targets: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                p.phase == Phase::Ready && Some(**id) != except && !p.have.get(block.0 as usize)
            })
            .map(|(id, _)| *id)
            .collect();
        for peer in targets {
            self.send(peer, msg());
        }
    }

    pub(crate) fn make_resident(
        &mut self,
        block: BlockId,
        hashes: T::Hashes,
        chunks: Vec<T::Chunk>,
        now: Millis,
    ) {
        self.resident.insert(block, (hashes, chunks, now));
        // The title's opening blocks go last: every newcomer asks for them
        // first and waits on them for its first frame, so a holder serves them
        // from memory rather than from its store.
        while self.resident.len() > self.config.resident_blocks.max(1) {
            let layout = &self.layout;
            let oldest = self
                .resident
                .iter()
                .min_by_key(|(b, (_, _, used))| (layout.info(**b).opens_title, *used, **b))
                .map(|(b, _)| *b)
                .expect("not empty");
            self.resident.remove(&oldest);
        }
    }

    /// Withdraws our request for one chunk from `peer` and tells it so.
    pub(crate) fn cancel_request(&mut self, peer: PeerId, block: BlockId, chunk: u16) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(at) = p.find_inflight(block, chunk) {
            p.take_inflight(at);
            p.remember_cancelled(block, chunk);
            if let Some(partial) = self.partial.get_mut(&block) {
                partial.release_request(usize::from(chunk), peer);
            }
            self.send(
                peer,
                PeerMessage::Cancel {
                    block,
                    first: chunk,
                    count: 1,
                },
            );
        }
    }

    pub(crate) fn expire_request(
        &mut self,
        peer: PeerId,
        block: BlockId,
        chunk: u16,
        at: Millis,
        now: Millis,
    ) {
        match self.check_request(peer, block, chunk, at, now) {
            RequestCheck::Gone => {}
            RequestCheck::Moved(next) => self.expiries.push(Reverse((next, peer, block, chunk))),
            RequestCheck::Due => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.penalize(self.config.initial_peer_rate as f64 / 4000.0);
                }
                self.stats.requests_timed_out += 1;
                self.cancel_request(peer, block, chunk);
                self.dirty_plan = true;
            }
        }
    }

    /// The check due `at` of a request, looked at `now` (when it comes, or
    /// sooner: arrivals only postpone a time-out, so a check that cannot fire
    /// on what is known now cannot fire then either). A check still to come
    /// is moved to its next step on the request; the caller queues it.
    pub(crate) fn check_request(
        &mut self,
        peer: PeerId,
        block: BlockId,
        chunk: u16,
        at: Millis,
        now: Millis,
    ) -> RequestCheck {
        let Some(p) = self.peers.get_mut(&peer) else {
            return RequestCheck::Gone;
        };
        let Some(i) = p
            .find_inflight(block, chunk)
            .filter(|&i| p.inflight[i].expires == at)
        else {
            return RequestCheck::Gone;
        };
        // A peer that keeps delivering is busy, not dead: its queue just runs long,
        // and the planner already asks a second peer or the origin when a deadline
        // is at risk. Only a peer silent for three timeouts loses its requests.
        let step = self.config.min_request_timeout_ms;
        let quiet_since = p
            .last_arrival
            .max(p.inflight[i].sent_at)
            .max(p.inflight[i].on_wire.unwrap_or(Millis::ZERO));
        match next_silence_check(now.0, quiet_since.0, step) {
            Some(next) => {
                p.inflight[i].expires = Millis(next);
                RequestCheck::Moved(Millis(next))
            }
            None => RequestCheck::Due,
        }
    }

    /// The peer began sending a chunk we asked it for.
    pub(crate) fn on_sending(&mut self, peer: PeerId, block: BlockId, index: u16, now: Millis) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        match p.find_inflight(block, index) {
            Some(at) => p.inflight[at].on_wire = Some(now),
            None => {
                if !p.was_cancelled(block, index) {
                    self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
                }
            }
        }
    }

    pub(crate) fn on_reject(
        &mut self,
        peer: PeerId,
        block: BlockId,
        first: u16,
        count: u16,
        now: Millis,
    ) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        // Not waited out: the next planning pass after it runs out asks
        // again, and the block's own wake when it turns urgent comes in any
        // case. A wake when the refusal runs out cost the half-hour
        // on-demand stand-ins 10 and 12 %; refusals of 1.5 s or 0.25 s
        // instead of 0.5, 6 and 10 % (DESIGN.md, "A player's resume goal").
        p.remember_refusal(block, now + 500);
        for chunk in first..first.saturating_add(count) {
            if let Some(at) = p.find_inflight(block, chunk) {
                p.take_inflight(at);
                if let Some(partial) = self.partial.get_mut(&block) {
                    partial.release_request(usize::from(chunk), peer);
                }
            }
        }
        self.dirty_plan = true;
    }

    /// Sends a goodbye, asks the host to close, forgets the peer; a peer that sent
    /// bad data or broke the protocol is banned by name and its unverified
    /// contributions are discarded.
    pub(crate) fn drop_peer(&mut self, peer: PeerId, why: GoodbyeReason) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        if matches!(
            why,
            GoodbyeReason::BadData | GoodbyeReason::ProtocolViolation
        ) {
            if let Some(name) = self.peers.get(&peer).and_then(|p| p.name.clone()) {
                self.banned.insert(name);
            }
            let mut dropped = 0;
            for partial in self.partial.values_mut() {
                dropped += partial.discard_from(peer);
            }
            self.stats.bytes_discarded += dropped as u64 * telly_proto::wire::CHUNK_SIZE as u64;
        }
        self.send(peer, PeerMessage::Goodbye(why));
        self.actions.push_back(Action::Disconnect { peer, why });
        self.remove_peer(peer);
    }

    pub(crate) fn remove_peer(&mut self, peer: PeerId) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        for block in p.have.iter_ones() {
            self.avail[block] -= 1;
        }
        // Release every chunk that names the peer (its in-flight list may already
        // have lost the entry that led to this removal).
        for partial in self.partial.values_mut() {
            for index in 0..partial.chunks.len() {
                partial.release_request(index, peer);
            }
        }
        if p.unchoked {
            self.promote_refused();
        }
        self.stats.peers_connected = self.peers.len();
        self.dirty_plan = true;
        self.dirty_upload = true;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// When a request times out, checked from `first` on, for a peer whose
    /// chunks arrive at `arrivals` (ms after the request left, ascending).
    fn times_out_at(first: u64, arrivals: &[u64], step: u64) -> u64 {
        let mut check = first;
        loop {
            let quiet_since = arrivals
                .iter()
                .copied()
                .filter(|&a| a <= check)
                .max()
                .unwrap_or(0);
            match next_silence_check(check, quiet_since, step) {
                Some(next) => check = next,
                None => return check,
            }
        }
    }

    proptest! {
        /// Starting at the first check that could fire gives the time-out of
        /// checking at every step from the request's own timeout on.
        #[test]
        fn skipping_the_checks_that_cannot_fire_changes_no_time_out(
            step in 1u64..3_000,
            timeout_steps in 1u64..6,
            // Timeouts on a step are where a check too many would show.
            extra in prop_oneof![Just(0u64), 0u64..1_000],
            mut arrivals in proptest::collection::vec(0u64..20_000, 0..6),
        ) {
            arrivals.sort_unstable();
            let timeout = timeout_steps * step + extra;
            let every_step = {
                let mut check = timeout;
                loop {
                    let quiet_since =
                        arrivals.iter().copied().filter(|&a| a <= check).max().unwrap_or(0);
                    if check - quiet_since >= SILENT_TIMEOUTS * step {
                        break check;
                    }
                    check += step;
                }
            };
            prop_assert_eq!(times_out_at(first_silence_check(timeout, step), &arrivals, step), every_step);
            prop_assert_eq!(times_out_at(timeout, &arrivals, step), every_step);
        }
    }

    #[test]
    fn a_request_is_first_checked_when_its_peer_could_have_been_silent_long_enough() {
        assert_eq!(first_silence_check(1_500, 1_500), 4_500);
        assert_eq!(first_silence_check(2_000, 1_500), 5_000);
        assert_eq!(first_silence_check(7_000, 1_500), 7_000);
        assert_eq!(first_silence_check(700, 0), 700);
    }
}
