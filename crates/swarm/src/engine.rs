//! The engine: inputs (`handle_*`), outputs (`poll_action`, `poll_timeout`).
//! Planning (which chunk from whom, when the origin) is in `plan.rs`, serving
//! (whom to upload to) in `upload.rs`; this file holds the state and the inputs.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use telly_proto::Sha256Hash;
use telly_proto::wire::{Bitfield, BlockId, GoodbyeReason, WIRE_VERSION};

use crate::config::{Config, Stats};
use crate::download::{Accepted, Partial, Source};
use crate::layout::Layout;
use crate::message::PeerMessage;
use crate::peer::{Peer, PeerId, Phase};
use crate::time::Millis;
use crate::trust::Trust;

/// How long a choked downloader leaves the peer alone before asking again.
const CHOKE_PAUSE_MS: u64 = 1_000;

/// A held block kept in memory for serving: its hashes, chunks, and last use.
pub(crate) type Resident<T> = (<T as Trust>::Hashes, Vec<<T as Trust>::Chunk>, Millis);

/// What the player is doing, as the host reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlayState {
    /// Asked to play, no frame shown yet.
    Starting,
    Playing,
    /// Ran out of media while playing.
    Stalled,
    /// Paused by the viewer.
    Paused,
}

/// What the engine asks its host to do.
#[derive(Debug)]
pub enum Action<T: Trust> {
    /// Send this message to this peer.
    Send { peer: PeerId, msg: PeerMessage<T> },
    /// Fetch chunks `first .. first + count` of this block from the origin (HTTP,
    /// a byte range), then call [`Engine::handle_origin_data`] or
    /// [`Engine::handle_origin_failed`].
    FetchFromOrigin {
        block: BlockId,
        first: u16,
        count: u16,
    },
    /// Read this held block back from the host's store, then call
    /// [`Engine::handle_loaded`] (or [`Engine::handle_load_failed`]).
    Load { block: BlockId },
    /// Keep this verified block (its chunks in order).
    Store {
        block: BlockId,
        chunks: Vec<T::Chunk>,
    },
    /// This block is verified and ready for the player.
    Deliver { block: BlockId },
    /// Close this connection (a goodbye has been queued just before).
    Disconnect { peer: PeerId, why: GoodbyeReason },
}

/// Why the engine asked to be woken (for debugging hosts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutReason {
    None,
    /// A block's origin fetch becomes due, or planning should run again.
    Plan,
    /// The upload pacer has tokens again.
    Upload,
    /// A served peer's slot may be idle.
    Slot,
    /// A request to a peer may have timed out.
    Request,
}

/// The sans-IO swarm engine for one title.
///
/// # Contract
///
/// Inputs arrive in time order (`now` never goes back; equal times may interleave).
/// After any input, the host drains [`Engine::poll_action`] until it returns `None`,
/// performs each action, then asks [`Engine::poll_timeout`] when to call
/// [`Engine::handle_timeout`]. Early, late or repeated timeouts are harmless. The
/// engine reads no clock, does no IO and draws randomness only from `Config::seed`.
pub struct Engine<T: Trust> {
    pub(crate) config: Config,
    pub(crate) layout: Arc<Layout>,
    pub(crate) trust: T,
    pub(crate) grant: T::Grant,
    pub(crate) swarm_id: Sha256Hash,
    pub(crate) peers: BTreeMap<PeerId, Peer>,
    /// Grant names of peers caught cheating: never admitted again.
    pub(crate) banned: BTreeSet<String>,
    pub(crate) have: Bitfield,
    /// For each block, how many ready peers announced it.
    pub(crate) avail: Vec<u16>,
    pub(crate) partial: HashMap<BlockId, Partial<T>>,
    /// Bytes of recently held blocks and when each was last used.
    pub(crate) resident: HashMap<BlockId, Resident<T>>,
    pub(crate) loading: BTreeSet<BlockId>,
    /// Origin fetches in flight: when asked and how many bytes.
    pub(crate) origin_inflight: BTreeMap<BlockId, (Millis, u64)>,
    pub(crate) play: PlayState,
    pub(crate) position_ms: u64,
    pub(crate) position_at: Millis,
    pub(crate) waiting_since: Millis,
    pub(crate) expiries: BinaryHeap<Reverse<(Millis, PeerId, BlockId, u16)>>,
    pub(crate) plan_wake: Millis,
    pub(crate) upload_wake: Millis,
    pub(crate) slot_wake: Millis,
    pub(crate) dirty_plan: bool,
    pub(crate) dirty_upload: bool,
    pub(crate) total_tokens: f64,
    pub(crate) total_tokens_at: Millis,
    /// Measured origin rate (bytes/ms) and round trip (ms).
    pub(crate) origin_rate: f64,
    pub(crate) origin_rtt: f64,
    pub(crate) actions: VecDeque<Action<T>>,
    pub(crate) stats: Stats,
    pub(crate) reason: TimeoutReason,
}

impl<T: Trust> Engine<T> {
    /// A new engine for the title laid out in `layout`. `grant` is what this
    /// viewer presents to peers; `swarm_id` is the signed manifest's hash.
    pub fn new(
        config: Config,
        layout: Arc<Layout>,
        trust: T,
        grant: T::Grant,
        swarm_id: Sha256Hash,
    ) -> Self {
        let blocks = layout.len();
        Self {
            origin_rate: config.origin_rate as f64 / 1000.0,
            origin_rtt: config.origin_rtt_ms as f64,
            config,
            have: Bitfield::new(blocks),
            avail: vec![0; blocks],
            layout,
            trust,
            grant,
            swarm_id,
            peers: BTreeMap::new(),
            banned: BTreeSet::new(),
            partial: HashMap::new(),
            resident: HashMap::new(),
            loading: BTreeSet::new(),
            origin_inflight: BTreeMap::new(),
            play: PlayState::Paused,
            position_ms: 0,
            position_at: Millis::ZERO,
            waiting_since: Millis::ZERO,
            expiries: BinaryHeap::new(),
            plan_wake: Millis::NEVER,
            upload_wake: Millis::NEVER,
            slot_wake: Millis::NEVER,
            dirty_plan: true,
            dirty_upload: false,
            total_tokens: 0.0,
            total_tokens_at: Millis::ZERO,
            actions: VecDeque::new(),
            stats: Stats::default(),
            reason: TimeoutReason::None,
        }
    }

    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    pub fn has_block(&self, block: BlockId) -> bool {
        self.have.get(block.0 as usize)
    }

    /// Marks a block the host already holds in its store (e.g. after a restart),
    /// so that the engine serves it and does not fetch it.
    pub fn handle_held_block(&mut self, block: BlockId) {
        if (block.0 as usize) < self.layout.len() && !self.has_block(block) {
            self.have.set(block.0 as usize, true);
            self.partial.remove(&block);
            self.broadcast_have(block);
            self.dirty_plan = true;
        }
    }

    /// The player's position and state; a jump in position is a seek, which
    /// re-plans at once and cancels what is no longer needed.
    pub fn handle_playhead(&mut self, position_ms: u64, state: PlayState, now: Millis) {
        let expected = self.position(now);
        let seek = position_ms.abs_diff(expected) > 3_000;
        if state != self.play && matches!(state, PlayState::Starting | PlayState::Stalled) {
            self.waiting_since = now;
        }
        self.play = state;
        self.position_ms = position_ms;
        self.position_at = now;
        if seek {
            self.drop_outside_window(now);
        }
        self.dirty_plan = true;
    }

    pub fn handle_peer_connected(&mut self, peer: PeerId, now: Millis) {
        let rate = self.config.initial_peer_rate as f64 / 1000.0;
        let rtt = self.config.initial_peer_rtt_ms as f64;
        self.peers
            .insert(peer, Peer::new(self.layout.len(), rate, rtt, now));
        self.send(
            peer,
            PeerMessage::Handshake {
                version: WIRE_VERSION,
                swarm_id: self.swarm_id,
                grant: self.grant.clone(),
            },
        );
        self.stats.peers_connected = self.peers.len();
    }

    /// The connection closed (or the host gave up on it).
    pub fn handle_peer_disconnected(&mut self, peer: PeerId, _now: Millis) {
        self.remove_peer(peer);
    }

    /// A message from a peer. A message that breaks the protocol or carries bad
    /// data disconnects and bans the peer.
    pub fn handle_message(&mut self, peer: PeerId, msg: PeerMessage<T>, now: Millis) {
        let Some(state) = self.peers.get(&peer) else {
            return;
        };
        let ready = state.phase == Phase::Ready;
        match msg {
            PeerMessage::Handshake {
                version,
                swarm_id,
                grant,
            } => self.on_handshake(peer, version, swarm_id, grant, now),
            PeerMessage::Goodbye(_) => self.remove_peer(peer),
            _ if !ready => self.drop_peer(peer, GoodbyeReason::ProtocolViolation),
            PeerMessage::HaveMap(bits) => self.on_have_map(peer, bits),
            PeerMessage::Have(block) => self.on_have(peer, block),
            PeerMessage::Hashes { block, hashes } => self.on_hashes(peer, block, hashes),
            PeerMessage::Request {
                block,
                first,
                count,
                deadline_ms,
                want_hashes,
            } => self.on_request(peer, block, first, count, deadline_ms, want_hashes, now),
            PeerMessage::Cancel {
                block,
                first,
                count,
            } => self.on_cancel(peer, block, first, count),
            PeerMessage::Reject {
                block,
                first,
                count,
            } => self.on_reject(peer, block, first, count, now),
            PeerMessage::Chunk { block, index, data } => {
                self.on_chunk(peer, block, index, data, now)
            }
            PeerMessage::Choke => {
                // No slot for us there now: leave it be for a while (an Unchoke
                // ends the pause early), then try again.
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.choked_us = true;
                    p.backoff_until = now + CHOKE_PAUSE_MS;
                    self.plan_wake = self.plan_wake.min(now + CHOKE_PAUSE_MS);
                }
            }
            PeerMessage::Unchoke => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.choked_us = false;
                    p.backoff_until = Millis::ZERO;
                    self.dirty_plan = true;
                }
            }
        }
    }

    /// Bytes from the origin for chunks `first..` of `block`.
    pub fn handle_origin_data(
        &mut self,
        block: BlockId,
        first: u16,
        data: T::Fetched,
        now: Millis,
    ) {
        let Some(info) = self.layout.get(block) else {
            return;
        };
        let entry = info.entry.clone();
        if let Some((asked, bytes)) = self.origin_inflight.remove(&block) {
            let took = now.since(asked) as f64;
            let transfer = (took - self.origin_rtt).max(1.0);
            self.origin_rate = 0.7 * self.origin_rate + 0.3 * (bytes as f64 / transfer);
        }
        if self.has_block(block) {
            self.partial_release_origin(block);
            return;
        }
        let known = self.partial.get(&block).and_then(|p| p.hashes.clone());
        match self
            .trust
            .open_fetched(&entry, usize::from(first), data, known.as_ref())
        {
            Ok((hashes, chunks)) => {
                let partial = self.ensure_partial(block);
                if partial.hashes.is_none() {
                    partial.hashes = Some(hashes);
                }
                for (i, data) in chunks.into_iter().enumerate() {
                    let len = T::chunk_len(&data) as u64;
                    self.stats.bytes_from_origin += len;
                    self.accept_chunk(
                        block,
                        usize::from(first) + i,
                        data,
                        Source::Origin,
                        len,
                        now,
                    );
                    if self.has_block(block) {
                        break;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(?block, %error, "origin data refused");
                self.partial_release_origin(block);
            }
        }
        self.partial_release_origin(block);
        self.dirty_plan = true;
    }

    /// The origin fetch failed; its chunks are planned again.
    pub fn handle_origin_failed(&mut self, block: BlockId, _now: Millis) {
        self.origin_inflight.remove(&block);
        self.partial_release_origin(block);
        self.dirty_plan = true;
    }

    /// The host read a held block back from its store (answering [`Action::Load`]).
    pub fn handle_loaded(&mut self, block: BlockId, data: T::Fetched, now: Millis) {
        self.loading.remove(&block);
        let Some(info) = self.layout.get(block) else {
            return;
        };
        let entry = info.entry.clone();
        match self.trust.open_fetched(&entry, 0, data, None) {
            Ok((hashes, chunks)) if chunks.len() == usize::from(info.chunks) => {
                self.make_resident(block, hashes, chunks, now);
                self.dirty_upload = true;
            }
            _ => self.handle_load_failed(block, now),
        }
    }

    /// The host could not read a block it held: it is treated as not held.
    pub fn handle_load_failed(&mut self, block: BlockId, _now: Millis) {
        self.loading.remove(&block);
        if (block.0 as usize) < self.layout.len() {
            self.have.set(block.0 as usize, false);
            self.reject_queued_for(block);
            self.dirty_plan = true;
        }
    }

    /// Runs whatever timers have expired.
    pub fn handle_timeout(&mut self, now: Millis) {
        while let Some(Reverse((at, peer, block, chunk))) = self.expiries.peek().copied() {
            if at > now {
                break;
            }
            self.expiries.pop();
            self.expire_request(peer, block, chunk, at, now);
        }
        if now >= self.plan_wake {
            self.dirty_plan = true;
        }
        if now >= self.upload_wake || now >= self.slot_wake {
            self.dirty_upload = true;
        }
    }

    /// The next action for the host, or `None` when there is nothing to do.
    pub fn poll_action(&mut self, now: Millis) -> Option<Action<T>> {
        if self.actions.is_empty() {
            if self.dirty_plan {
                self.dirty_plan = false;
                self.plan(now);
            }
            if self.dirty_upload || self.upload_wake <= now {
                self.dirty_upload = false;
                self.serve(now);
            }
        }
        self.actions.pop_front()
    }

    /// When to call [`Engine::handle_timeout`] next.
    pub fn poll_timeout(&mut self) -> Option<Millis> {
        while let Some(Reverse((at, peer, block, chunk))) = self.expiries.peek().copied() {
            let live = self
                .peers
                .get(&peer)
                .and_then(|p| {
                    p.find_inflight(block, chunk)
                        .map(|i| p.inflight[i].expires == at)
                })
                .unwrap_or(false);
            if live {
                break;
            }
            self.expiries.pop();
        }
        let request = self.expiries.peek().map_or(Millis::NEVER, |r| r.0.0);
        let candidates = [
            (self.plan_wake, TimeoutReason::Plan),
            (self.upload_wake, TimeoutReason::Upload),
            (self.slot_wake, TimeoutReason::Slot),
            (request, TimeoutReason::Request),
        ];
        let (at, reason) = candidates
            .into_iter()
            .min_by_key(|(at, _)| *at)
            .expect("four candidates");
        if at == Millis::NEVER {
            self.reason = TimeoutReason::None;
            return None;
        }
        self.reason = reason;
        Some(at)
    }

    /// A one-line description of a block's state, for debugging hosts.
    pub fn describe_block(&self, block: BlockId, now: Millis) -> String {
        let pos = self.position(now);
        let deadline = if (block.0 as usize) < self.layout.len() {
            self.deadline(block, pos, now).0 as i64 - now.0 as i64
        } else {
            0
        };
        let chunks = self.partial.get(&block).map(|p| {
            p.chunks
                .iter()
                .map(|c| match c {
                    crate::download::ChunkState::Missing => "M".to_string(),
                    crate::download::ChunkState::Origin => "O".to_string(),
                    crate::download::ChunkState::Got { .. } => "G".to_string(),
                    crate::download::ChunkState::Requested { first, .. } => {
                        let p = &self.peers[first];
                        format!(
                            "R{}({:.0}B/ms,{}ms)",
                            first.0,
                            p.current_rate(now),
                            p.eta(now, 0).0 as i64 - now.0 as i64
                        )
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        });
        format!(
            "{block:?} have={} avail={} deadline_in={deadline}ms origin_inflight={:?} pos={pos} play={:?} chunks={chunks:?} wake_in={}",
            self.has_block(block),
            self.avail.get(block.0 as usize).copied().unwrap_or(0),
            self.origin_inflight.get(&block),
            self.play,
            self.plan_wake.0 as i64 - now.0 as i64,
        )
    }

    pub fn last_timeout_reason(&self) -> TimeoutReason {
        self.reason
    }

    /// A snapshot of the counters and estimates.
    pub fn stats(&self, now: Millis) -> Stats {
        let mut stats = self.stats.clone();
        stats.peers_connected = self.peers.len();
        stats.peers_banned = self.banned.len();
        stats.peer_rates = self
            .peers
            .iter()
            .map(|(id, p)| (*id, (p.rate * 1000.0) as u64))
            .collect();
        let pos = self.position(now);
        let mut end = pos;
        for id in &self.layout.by_time()[self.layout.window(pos, u64::MAX / 4)] {
            let info = self.layout.info(*id);
            if info.is_init || info.track != 0 {
                continue;
            }
            if !self.has_block(*id) {
                break;
            }
            end = info.entry.start_ms + info.entry.duration_ms;
        }
        stats.buffer_ahead_ms = end.saturating_sub(pos);
        stats
    }

    // ---------------------------------------------------------------- internals

    pub(crate) fn position(&self, now: Millis) -> u64 {
        match self.play {
            PlayState::Playing => self.position_ms + now.since(self.position_at),
            _ => self.position_ms,
        }
    }

    pub(crate) fn unix_now(&self, now: Millis) -> u64 {
        (self.config.unix_ms_at_zero + now.0) / 1000
    }

    pub(crate) fn send(&mut self, peer: PeerId, msg: PeerMessage<T>) {
        self.actions.push_back(Action::Send { peer, msg });
    }

    pub(crate) fn ensure_partial(&mut self, block: BlockId) -> &mut Partial<T> {
        let chunks = self.layout.info(block).chunks;
        self.partial
            .entry(block)
            .or_insert_with(|| Partial::new(chunks))
    }

    fn partial_release_origin(&mut self, block: BlockId) {
        if let Some(p) = self.partial.get_mut(&block) {
            p.release_origin();
        }
    }

    fn on_handshake(
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

    fn on_have_map(&mut self, peer: PeerId, bits: Bitfield) {
        if bits.len() != self.layout.len() {
            return self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
        }
        for block in bits.iter_ones() {
            self.on_have(peer, BlockId(block as u32));
        }
    }

    fn on_have(&mut self, peer: PeerId, block: BlockId) {
        if block.0 as usize >= self.layout.len() {
            return self.drop_peer(peer, GoodbyeReason::ProtocolViolation);
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if !p.have.get(block.0 as usize) {
            p.have.set(block.0 as usize, true);
            self.avail[block.0 as usize] += 1;
            if !self.has_block(block) {
                self.dirty_plan = true;
            }
        }
    }

    fn on_hashes(&mut self, peer: PeerId, block: BlockId, hashes: T::Hashes) {
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

    fn on_chunk(&mut self, peer: PeerId, block: BlockId, index: u16, data: T::Chunk, now: Millis) {
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
                if !p.cancelled.iter().any(|&(b, c)| b == block && c == index) {
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
    fn accept_chunk(
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
        if !self.config.peer_to_peer {
            return;
        }
        let targets: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.phase == Phase::Ready && !p.have.get(block.0 as usize))
            .map(|(id, _)| *id)
            .collect();
        for peer in targets {
            self.send(peer, PeerMessage::Have(block));
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
        while self.resident.len() > self.config.resident_blocks.max(1) {
            let oldest = self
                .resident
                .iter()
                .min_by_key(|(b, (_, _, used))| (*used, **b))
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

    fn expire_request(
        &mut self,
        peer: PeerId,
        block: BlockId,
        chunk: u16,
        at: Millis,
        now: Millis,
    ) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(i) = p.find_inflight(block, chunk) else {
            return;
        };
        if p.inflight[i].expires != at {
            return;
        }
        // A peer that keeps delivering is busy, not dead: its queue just runs long,
        // and the planner already asks a second peer or the origin when a deadline
        // is at risk. Only a peer silent for three timeouts loses its requests.
        let sent = p.inflight[i].sent_at;
        let silent_for = now.since(p.last_arrival.max(sent));
        if silent_for < 3 * self.config.min_request_timeout_ms {
            let expires = now + self.config.min_request_timeout_ms;
            p.inflight[i].expires = expires;
            self.expiries.push(Reverse((expires, peer, block, chunk)));
            return;
        }
        p.penalize(self.config.initial_peer_rate as f64 / 4000.0);
        self.stats.requests_timed_out += 1;
        self.cancel_request(peer, block, chunk);
        self.dirty_plan = true;
    }

    fn on_reject(&mut self, peer: PeerId, block: BlockId, first: u16, count: u16, now: Millis) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.remember_refusal(block, now + 500);
        self.plan_wake = self.plan_wake.min(now + 500);
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

    fn remove_peer(&mut self, peer: PeerId) {
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

    /// Forgets planned work outside the window after a seek.
    fn drop_outside_window(&mut self, now: Millis) {
        let pos = self.position(now);
        let window: BTreeSet<BlockId> = self.layout.by_time()
            [self.layout.window(pos, self.config.horizon_ms)]
        .iter()
        .copied()
        .chain(self.layout.inits())
        .collect();
        let outside: Vec<BlockId> = self
            .partial
            .keys()
            .filter(|b| !window.contains(b))
            .copied()
            .collect();
        for block in outside {
            let asked: Vec<(PeerId, u16)> = self
                .peers
                .iter()
                .flat_map(|(id, p)| {
                    p.inflight
                        .iter()
                        .filter(|f| f.block == block)
                        .map(|f| (*id, f.chunk))
                        .collect::<Vec<_>>()
                })
                .collect();
            for (peer, chunk) in asked {
                self.cancel_request(peer, block, chunk);
            }
            let keep = self.partial.get(&block).is_some_and(|p| {
                p.missing < p.chunks.len() as u16 || self.origin_inflight.contains_key(&block)
            });
            if !keep {
                self.partial.remove(&block);
            }
        }
    }
}
