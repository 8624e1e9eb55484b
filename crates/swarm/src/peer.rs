//! One connected peer: what it has, what we asked of it, how fast it delivers,
//! and what it asked of us.

use std::collections::VecDeque;

use telly_proto::wire::{Bitfield, BlockId};

use crate::time::Millis;

/// The host's name for a connection (a data channel, a socket, a simulated link).
/// The host picks it and keeps it unique while the connection lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// We sent our handshake and wait for theirs.
    Handshaking,
    /// Grant checked; requests and data may flow.
    Ready,
}

/// A chunk we asked this peer for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inflight {
    pub block: BlockId,
    pub chunk: u16,
    pub sent_at: Millis,
    pub expires: Millis,
    pub deadline: Millis,
    pub len: u32,
    /// When the peer told us it began sending it (`PeerMessage::Sending`).
    pub on_wire: Option<Millis>,
}

/// A chunk this peer asked us for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Queued {
    pub block: BlockId,
    pub chunk: u16,
    pub deadline: Millis,
    pub want_hashes: bool,
    /// When the request reached us.
    pub received: Millis,
}

/// Chunks cancelled on this peer that may still arrive and are not a violation.
const CANCELLED_MEMORY: usize = 128;

/// Added to a chunk's expected arrival after its `Sending` notice.
const ON_WIRE_GRACE_MS: u64 = 100;

/// How long after its last chunk to us a peer still counts as serving us at
/// its measured rate (`Peer::eta_of_asked`).
const SERVING_MS: u64 = 3_000;

#[derive(Debug)]
pub(crate) struct Peer {
    pub phase: Phase,
    /// The grant's peer id, once admitted.
    pub name: Option<String>,
    pub have: Bitfield,
    // --- download side: what we ask of them ---
    /// They told us they have no slot for us (we pause until `backoff_until`).
    pub choked_us: bool,
    /// No new requests before this (after a choke).
    pub backoff_until: Millis,
    pub inflight: Vec<Inflight>,
    pub inflight_bytes: u64,
    /// Estimated bytes per millisecond they deliver to us.
    pub rate: f64,
    /// Estimated round trip, ms.
    pub rtt: f64,
    pub last_arrival: Millis,
    /// The block this peer last announced by a `Have`, and when. A relay
    /// announces a block at its first chunk, so one announced lately is
    /// probably still arriving there (`Peer::eta_of_asked`).
    pub last_have: Option<(BlockId, Millis)>,
    /// Where in the title (ms) the furthest-along block this peer announced
    /// starts: how far ahead of a block we want it is (plan.rs,
    /// `PREFETCH_LEAD_STEP_MS`).
    pub furthest_ms: u64,
    pub cancelled: VecDeque<(BlockId, u16)>,
    /// Blocks this peer recently refused us, and until when we leave them be.
    pub refusals: VecDeque<(BlockId, Millis)>,
    pub bytes_down: u64,
    // --- upload side: what they ask of us ---
    pub queue: Vec<Queued>,
    /// They hold one of our upload slots.
    pub unchoked: bool,
    /// We refused them a slot; the deadline they needed (for unchoking the neediest).
    pub refused: Option<Millis>,
    pub last_request: Millis,
    /// When we last sent them a chunk.
    pub last_sent: Millis,
    /// Bytes sent to them, decaying (fairness between downloaders).
    pub recent_up: f64,
    pub recent_up_at: Millis,
    /// Per-peer upload cap bucket, bytes (may go negative: pacing debt).
    pub up_tokens: f64,
    pub up_tokens_at: Millis,
    pub bytes_up: u64,
}

impl Peer {
    pub fn new(blocks: usize, initial_rate: f64, initial_rtt: f64, now: Millis) -> Self {
        Self {
            phase: Phase::Handshaking,
            name: None,
            have: Bitfield::new(blocks),
            choked_us: false,
            backoff_until: Millis::ZERO,
            inflight: Vec::new(),
            inflight_bytes: 0,
            rate: initial_rate,
            rtt: initial_rtt,
            last_arrival: Millis::ZERO,
            last_have: None,
            furthest_ms: 0,
            cancelled: VecDeque::new(),
            refusals: VecDeque::new(),
            bytes_down: 0,
            queue: Vec::new(),
            unchoked: false,
            refused: None,
            last_request: now,
            last_sent: now,
            recent_up: 0.0,
            recent_up_at: now,
            up_tokens: 0.0,
            up_tokens_at: now,
            bytes_up: 0,
        }
    }

    /// When `bytes` more, asked now, would arrive.
    #[inline]
    pub fn eta(&self, now: Millis, bytes: u64) -> Millis {
        self.eta_of(now, self.inflight_bytes + bytes)
    }

    /// When what we asked of them for deadlines up to `deadline` will be in,
    /// counting only that (the uploader serves earliest first).
    ///
    /// A peer that delivered to us within `SERVING_MS` keeps its measured rate:
    /// its silence since is its turn going to other requesters' earlier
    /// deadlines, not a slower link. Judged by the rate decayed with the wait
    /// (`current_rate`), a busy uploader's next chunk for us looked seconds away
    /// just as it left: in the half-hour on-demand stand-in a front viewer's
    /// requests moved 1.5 times per chunk, and 35 % of the chunks peers sent it
    /// came after it had cancelled them.
    ///
    /// Not so for a `relaying` peer (`Peer::relaying`): its silence is more
    /// likely a chunk it has not received itself, and it is judged by the wait.
    #[inline]
    pub fn eta_of_asked(&self, now: Millis, deadline: Millis, relaying: bool) -> Millis {
        let serving =
            !relaying && self.bytes_down > 0 && now.since(self.last_arrival) <= SERVING_MS;
        let rate = if serving {
            self.rate
        } else {
            self.current_rate(now)
        };
        self.eta_at(now, self.ahead_of(deadline), rate)
    }

    /// When a chunk this peer said it began sending (`PeerMessage::Sending`)
    /// should be in: its length at their measured rate after the notice, and
    /// `ON_WIRE_GRACE_MS` for the rate's error. None if it said nothing.
    #[inline]
    pub fn eta_on_wire(&self, block: BlockId, chunk: u16) -> Option<Millis> {
        let f = &self.inflight[self.find_inflight(block, chunk)?];
        let transfer = f64::from(f.len) / self.rate.max(1e-3);
        f.on_wire.map(|at| at + transfer as u64 + ON_WIRE_GRACE_MS)
    }

    /// Whether this peer announced `block` less than `within` ms ago, so that
    /// it is probably still receiving it.
    #[inline]
    pub fn relaying(&self, block: BlockId, now: Millis, within: u64) -> bool {
        self.last_have
            .is_some_and(|(b, at)| b == block && now.since(at) < within)
    }

    /// When `queued` bytes, the last of them asked now, would all be in.
    #[inline]
    pub fn eta_of(&self, now: Millis, queued: u64) -> Millis {
        self.eta_at(now, queued, self.current_rate(now))
    }

    #[inline]
    fn eta_at(&self, now: Millis, queued: u64, rate: f64) -> Millis {
        let transfer = queued as f64 / rate.max(1e-3);
        now + (self.rtt + transfer) as u64
    }

    /// Bytes asked of them for deadlines no later than `deadline`.
    #[inline]
    pub fn ahead_of(&self, deadline: Millis) -> u64 {
        self.inflight
            .iter()
            .filter(|f| f.deadline <= deadline)
            .map(|f| u64::from(f.len))
            .sum()
    }

    /// The rate estimate, capped by how long we have been waiting without a byte:
    /// a peer silent for a while is slower than its last measurement says.
    #[inline]
    pub fn current_rate(&self, now: Millis) -> f64 {
        let Some(oldest) = self.inflight.iter().map(|f| f.sent_at).min() else {
            return self.rate;
        };
        let waiting_since = oldest.max(self.last_arrival);
        let waited = now.since(waiting_since) as f64 - self.rtt;
        if waited > 0.0 {
            let first_len = f64::from(self.inflight[0].len);
            self.rate.min(first_len / waited)
        } else {
            self.rate
        }
    }

    /// The bandwidth-delay product plus the uploader's scheduling room.
    #[inline]
    pub fn bdp_bytes(&self) -> u64 {
        (self.rate * (self.rtt + 250.0)) as u64
    }

    #[inline]
    pub fn find_inflight(&self, block: BlockId, chunk: u16) -> Option<usize> {
        self.inflight
            .iter()
            .position(|f| f.block == block && f.chunk == chunk)
    }

    pub fn take_inflight(&mut self, at: usize) -> Inflight {
        let f = self.inflight.swap_remove(at);
        self.inflight_bytes -= u64::from(f.len);
        f
    }

    pub fn remember_cancelled(&mut self, block: BlockId, chunk: u16) {
        if self.cancelled.len() == CANCELLED_MEMORY {
            self.cancelled.pop_front();
        }
        self.cancelled.push_back((block, chunk));
    }

    /// True when we cancelled this chunk lately: it may still arrive, or be
    /// announced, without breaking the protocol.
    #[inline]
    pub fn was_cancelled(&self, block: BlockId, chunk: u16) -> bool {
        self.cancelled.contains(&(block, chunk))
    }

    /// Remembers that the peer refused `block` (it lacks those chunks for now).
    pub fn remember_refusal(&mut self, block: BlockId, until: Millis) {
        if self.refusals.len() == 16 {
            self.refusals.pop_front();
        }
        self.refusals.push_back((block, until));
    }

    /// True when we may ask this peer for `block` now.
    #[inline]
    pub fn may_ask(&self, block: BlockId, now: Millis) -> bool {
        self.have.get(block.0 as usize)
            && !self
                .refusals
                .iter()
                .any(|&(b, until)| b == block && until > now)
    }

    /// Learns from a chunk of `len` bytes that arrived at `now`, asked at `sent_at`.
    pub fn observe_arrival(&mut self, sent_at: Millis, len: u32, now: Millis) {
        let pipelined = self.last_arrival > sent_at;
        let started = if pipelined {
            self.last_arrival
        } else {
            sent_at
        };
        let interval = now.since(started).max(1) as f64;
        let transfer = if pipelined {
            interval
        } else {
            // The first chunk after an idle pipeline also paid the round trip.
            let sample_rtt = (interval - f64::from(len) / self.rate.max(1e-3)).max(1.0);
            self.rtt = 0.8 * self.rtt + 0.2 * sample_rtt;
            (interval - self.rtt).max(1.0)
        };
        let sample = f64::from(len) / transfer;
        self.rate = 0.75 * self.rate + 0.25 * sample;
        self.last_arrival = now;
        self.bytes_down += u64::from(len);
    }

    /// A request timed out: they are slower than we thought.
    pub fn penalize(&mut self, floor: f64) {
        // Halve, but not below a floor: a peer rated near zero would never be
        // asked again and so never measured again.
        self.rate = (self.rate * 0.5).max(floor);
    }

    /// Decays the fairness counter to `now` (time constant 2 s).
    pub fn decay_recent_up(&mut self, now: Millis) {
        self.recent_up = self.recent_up_by(now);
        self.recent_up_at = now;
    }

    /// Bytes sent to them lately, as of `now`.
    pub fn recent_up_by(&self, now: Millis) -> f64 {
        let dt = now.since(self.recent_up_at) as f64;
        self.recent_up * (-dt / 2000.0).exp()
    }
}

/// Bytes worth keeping in flight to a peer whose [`Peer::bdp_bytes`] is `bdp`:
/// that, at least two chunks and at most 32.
#[inline]
pub fn pipeline_for(bdp: u64, chunk: u64) -> u64 {
    bdp.clamp(2 * chunk, 32 * chunk)
}

/// The engine's peers, in id order: a sorted vector rather than a tree, since
/// a planning or serving pass walks every peer (a few dozen at most) and a
/// walk over one block of memory is what such passes are made of; joins and
/// departures, which shift it, are rare.
#[derive(Debug, Default)]
pub(crate) struct PeerTable(Vec<(PeerId, Peer)>);

impl PeerTable {
    fn find(&self, id: &PeerId) -> Result<usize, usize> {
        self.0.binary_search_by_key(id, |(k, _)| *k)
    }

    pub fn get(&self, id: &PeerId) -> Option<&Peer> {
        self.find(id).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, id: &PeerId) -> Option<&mut Peer> {
        self.find(id).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, id: &PeerId) -> bool {
        self.find(id).is_ok()
    }

    /// Adds or replaces the peer with this id, returning the one replaced.
    pub fn insert(&mut self, id: PeerId, peer: Peer) -> Option<Peer> {
        match self.find(&id) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, peer)),
            Err(i) => {
                self.0.insert(i, (id, peer));
                None
            }
        }
    }

    pub fn remove(&mut self, id: &PeerId) -> Option<Peer> {
        self.find(id).ok().map(|i| self.0.remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &Peer)> {
        self.0.iter().map(|(id, p)| (id, p))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&PeerId, &mut Peer)> {
        self.0.iter_mut().map(|(id, p)| (&*id, p))
    }

    pub fn values(&self) -> impl Iterator<Item = &Peer> {
        self.0.iter().map(|(_, p)| p)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.0.iter_mut().map(|(_, p)| p)
    }
}

impl std::ops::Index<&PeerId> for PeerTable {
    type Output = Peer;

    fn index(&self, id: &PeerId) -> &Peer {
        self.get(id).expect("a known peer")
    }
}

impl<'a> IntoIterator for &'a PeerTable {
    type Item = (&'a PeerId, &'a Peer);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (PeerId, Peer)>,
        fn(&'a (PeerId, Peer)) -> (&'a PeerId, &'a Peer),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(id, p)| (id, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(rate: f64) -> Peer {
        Peer::new(4, rate, 50.0, Millis::ZERO)
    }

    #[test]
    fn the_peer_table_keeps_id_order_through_joins_and_departures() {
        let mut table = PeerTable::default();
        for id in [7, 3, 11, 5] {
            assert!(table.insert(PeerId(id), peer(id as f64)).is_none());
        }
        let ids: Vec<u64> = table.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, [3, 5, 7, 11]);
        // Each id finds its own peer.
        for id in [3, 5, 7, 11] {
            assert_eq!(table[&PeerId(id)].rate, id as f64);
        }
        let replaced = table.insert(PeerId(5), peer(50.0));
        assert_eq!(replaced.map(|p| p.rate), Some(5.0));
        assert_eq!(table.remove(&PeerId(7)).map(|p| p.rate), Some(7.0));
        assert!(table.remove(&PeerId(7)).is_none());
        assert!(!table.contains_key(&PeerId(7)) && table.get(&PeerId(4)).is_none());
        let left: Vec<(u64, f64)> = table.iter().map(|(id, p)| (id.0, p.rate)).collect();
        assert_eq!(left, [(3, 3.0), (5, 50.0), (11, 11.0)]);
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn a_chunk_on_the_wire_is_due_its_length_at_the_peers_rate_after_the_notice() {
        let mut p = peer(64.0);
        p.inflight.push(Inflight {
            block: BlockId(3),
            chunk: 2,
            sent_at: Millis::ZERO,
            expires: Millis(1_500),
            deadline: Millis(9_000),
            len: 64_000,
            on_wire: None,
        });
        assert_eq!(p.eta_on_wire(BlockId(3), 2), None);
        p.inflight[0].on_wire = Some(Millis(2_000));
        assert_eq!(
            p.eta_on_wire(BlockId(3), 2),
            Some(Millis(2_000 + 1_000 + ON_WIRE_GRACE_MS))
        );
        assert_eq!(p.eta_on_wire(BlockId(3), 1), None);
    }

    #[test]
    fn a_peer_that_delivered_lately_keeps_its_rate_and_a_silent_one_slows() {
        const LEN: u32 = 65_536;
        let mut p = peer(100.0);
        for (chunk, deadline) in [(0, 5_000), (1, 6_000)] {
            p.inflight.push(Inflight {
                block: BlockId(0),
                chunk,
                sent_at: Millis::ZERO,
                expires: Millis(1_500),
                deadline: Millis(deadline),
                len: LEN,
                on_wire: None,
            });
            p.inflight_bytes += u64::from(LEN);
        }
        let first = p.take_inflight(0);
        p.observe_arrival(first.sent_at, first.len, Millis(700));
        let rate = p.rate;
        let due = Millis(6_000);
        let at_its_rate = |now: u64| now + (p.rtt + f64::from(LEN) / rate) as u64;
        // Within `SERVING_MS` of its last chunk the wait is its other
        // requesters' turn: the estimate holds, however long we have waited.
        let now = Millis(700 + SERVING_MS);
        assert_eq!(p.eta_of_asked(now, due, false), Millis(at_its_rate(now.0)));
        // Silent for longer, it is judged by the wait.
        let now = Millis(700 + SERVING_MS + 1_000);
        let decayed = p.eta_of_asked(now, due, false);
        assert!(decayed.0 > at_its_rate(now.0) + 1_000, "{decayed:?}");
        assert_eq!(decayed, p.eta_of(now, u64::from(LEN)));
        // Only what is asked for deadlines up to the one at hand counts.
        assert_eq!(
            p.eta_of_asked(now, Millis(5_500), false),
            Millis(now.0 + p.rtt as u64)
        );
    }

    #[test]
    fn a_relay_is_judged_by_the_wait_while_its_block_is_arriving() {
        const LEN: u32 = 65_536;
        let mut p = peer(100.0);
        for chunk in 0..2 {
            p.inflight.push(Inflight {
                block: BlockId(2),
                chunk,
                sent_at: Millis::ZERO,
                expires: Millis(1_500),
                deadline: Millis(6_000),
                len: LEN,
                on_wire: None,
            });
            p.inflight_bytes += u64::from(LEN);
        }
        p.last_have = Some((BlockId(2), Millis(100)));
        let first = p.take_inflight(0);
        p.observe_arrival(first.sent_at, first.len, Millis(700));
        let (now, due) = (Millis(2_000), Millis(6_000));
        // It delivered 1.3 s ago, so a busy uploader would keep its rate; a
        // relay's next chunk may not have reached it yet.
        assert!(p.relaying(BlockId(2), now, 2_000));
        assert_eq!(
            p.eta_of_asked(now, due, true),
            p.eta_of(now, u64::from(LEN))
        );
        assert!(p.eta_of_asked(now, due, true) > p.eta_of_asked(now, due, false));
        // Only the block it announced last, and only for the window.
        assert!(!p.relaying(BlockId(1), now, 2_000));
        assert!(!p.relaying(BlockId(2), Millis(2_100), 2_000));
    }
}
