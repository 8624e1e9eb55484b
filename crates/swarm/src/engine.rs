//! The engine: inputs (`handle_*`), outputs (`poll_action`, `poll_timeout`).
//! Planning (which chunk from whom, when the origin) is in `plan.rs`, serving
//! (whom to upload to) in `upload.rs`, what peers say in `receive.rs`; this file
//! holds the state and the host's inputs.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use telly_proto::Sha256Hash;
use telly_proto::wire::{Bitfield, BlockId, GoodbyeReason, WIRE_VERSION};

use crate::coming::ComingNews;
use crate::config::{Config, Stats};
use crate::download::{OriginFetch, OriginFetches, Partial, Source};
use crate::layout::Layout;
use crate::message::PeerMessage;
use crate::peer::{Peer, PeerId, PeerTable, Phase};
use crate::plan::PlanScratch;
use crate::receive::RequestCheck;
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

/// Whether a starting viewer has peers' have-maps to wait for before it
/// takes a block none of its peers announced from the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeersExpected {
    /// No tracker said (a host without one), or it offered none while peers
    /// are connected: a short look-around from the start.
    Unknown,
    /// The host asked a tracker (`handle_joining`) and it has not answered,
    /// or it offered some (`handle_joined`): until one of their have-maps
    /// comes, the viewer knows nothing of what they hold.
    Coming,
    /// The tracker offered none and nobody is connected: no have-map can
    /// come, so the viewer starts from the origin at once.
    Nobody,
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
    pub(crate) peers: PeerTable,
    /// Grant names of peers caught cheating: never admitted again.
    pub(crate) banned: BTreeSet<String>,
    pub(crate) have: Bitfield,
    /// For each block, how many ready peers announced it.
    pub(crate) avail: Vec<u16>,
    pub(crate) partial: FxHashMap<BlockId, Partial<T>>,
    /// Bytes of recently held blocks and when each was last used.
    pub(crate) resident: FxHashMap<BlockId, Resident<T>>,
    pub(crate) loading: BTreeSet<BlockId>,
    /// Origin fetches in flight, by block and first chunk. A block may have
    /// several, over disjoint runs of chunks: a chunk falling due while another
    /// run of its block is still coming must not wait for that run.
    pub(crate) origin_inflight: OriginFetches,
    pub(crate) play: PlayState,
    /// The host's player holds much less of what the engine holds ahead in
    /// its buffer (see [`Engine::handle_player_buffered`]).
    pub(crate) player_behind: bool,
    pub(crate) position_ms: u64,
    pub(crate) position_at: Millis,
    pub(crate) waiting_since: Millis,
    /// The player waits because the viewer jumped (see `Engine::beginning`).
    pub(crate) jumped: bool,
    /// When the viewer last started, began or resumed playing, or jumped:
    /// blocks already in its horizon then have only the time since to spread
    /// their origin fetches over. Only a playing viewer spreads, so a lead
    /// falling in its start-up fired the moment it began playing (at a
    /// premiere, one newcomer in fifty took a block 14 s ahead from the
    /// origin then, if its peers held none of it).
    pub(crate) watching_since: Millis,
    /// What the host's tracker said of peers: how long a starting viewer
    /// looks around for have-maps before the origin.
    pub(crate) expected: PeersExpected,
    /// When the first have-map came.
    pub(crate) first_have_map_at: Option<Millis>,
    pub(crate) expiries: BinaryHeap<Reverse<(Millis, PeerId, BlockId, u16)>>,
    pub(crate) plan_wake: Millis,
    /// During a planning pass: the soonest origin fetch not yet due among the
    /// blocks it has looked at (see `consider_origin`).
    pub(crate) origin_due_first: Millis,
    pub(crate) upload_wake: Millis,
    pub(crate) slot_wake: Millis,
    pub(crate) dirty_plan: bool,
    pub(crate) dirty_upload: bool,
    pub(crate) total_tokens: f64,
    pub(crate) total_tokens_at: Millis,
    /// Measured origin rate (bytes/ms) and round trip (ms).
    pub(crate) origin_rate: f64,
    pub(crate) origin_rtt: f64,
    /// Mean absolute error of the origin's answer times against their
    /// estimate (ms); none until its first answer.
    pub(crate) origin_error: Option<f64>,
    pub(crate) actions: VecDeque<Action<T>>,
    pub(crate) stats: Stats,
    pub(crate) reason: TimeoutReason,
    pub(crate) plan_scratch: PlanScratch,
    /// Blocks heard to be on their way to our neighbourhood (coming.rs).
    pub(crate) coming: ComingNews,
}

/// How much less than the engine holds ahead a player may have buffered
/// before it counts as behind: a block on its way into the buffer.
const PLAYER_SLACK_MS: u64 = 2_000;

/// The shortest origin transfer (answer time less the round trip) that
/// updates the origin's rate estimate.
const MIN_ORIGIN_TRANSFER_MS: f64 = 20.0;

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
            origin_error: None,
            config,
            have: Bitfield::new(blocks),
            avail: vec![0; blocks],
            layout,
            trust,
            grant,
            swarm_id,
            peers: PeerTable::default(),
            banned: BTreeSet::new(),
            partial: FxHashMap::default(),
            resident: FxHashMap::default(),
            loading: BTreeSet::new(),
            expected: PeersExpected::Unknown,
            first_have_map_at: None,
            origin_inflight: OriginFetches::default(),
            play: PlayState::Paused,
            player_behind: false,
            position_ms: 0,
            position_at: Millis::ZERO,
            waiting_since: Millis::ZERO,
            jumped: false,
            watching_since: Millis::ZERO,
            expiries: BinaryHeap::new(),
            plan_wake: Millis::NEVER,
            origin_due_first: Millis::NEVER,
            upload_wake: Millis::NEVER,
            slot_wake: Millis::NEVER,
            dirty_plan: true,
            dirty_upload: false,
            total_tokens: 0.0,
            total_tokens_at: Millis::ZERO,
            actions: VecDeque::new(),
            stats: Stats::default(),
            reason: TimeoutReason::None,
            plan_scratch: PlanScratch::default(),
            coming: ComingNews::default(),
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

    /// The host asked a tracker for peers. Until it answers, a starting
    /// viewer does not take a block from the origin for want of a have-map
    /// announcing it, only when the block's give-up comes.
    pub fn handle_joining(&mut self, _now: Millis) {
        self.expected = PeersExpected::Coming;
        self.dirty_plan = true;
    }

    /// The tracker answered our join offering `peers` to dial (a host that
    /// lost the tracker before it answered says 0). With none, a starting
    /// viewer takes what it needs from the origin at once instead of waiting
    /// for have-maps that cannot come (the first viewer of a title).
    pub fn handle_joined(&mut self, peers: usize, _now: Millis) {
        self.expected = match (peers, self.peers.is_empty()) {
            (0, true) => PeersExpected::Nobody,
            (0, false) => PeersExpected::Unknown,
            _ => PeersExpected::Coming,
        };
        self.dirty_plan = true;
    }

    /// The player's position and state; a jump in position is a seek, which
    /// re-plans at once and cancels what is no longer needed. Returns whether
    /// it was one: the host then asks the tracker for peers at once, since
    /// those it has hold what is near where the viewer was.
    pub fn handle_playhead(&mut self, position_ms: u64, state: PlayState, now: Millis) -> bool {
        let expected = self.position(now);
        let seek = position_ms.abs_diff(expected) > 3_000;
        // A jump while waiting starts the wait afresh, at the new point.
        if (seek || state != self.play) && matches!(state, PlayState::Starting | PlayState::Stalled)
        {
            self.waiting_since = now;
        }
        if seek {
            self.jumped = state == PlayState::Stalled;
        } else if state != PlayState::Stalled {
            self.jumped = false;
        }
        if seek || (state != self.play && matches!(state, PlayState::Starting | PlayState::Playing))
        {
            self.watching_since = now;
        }
        self.play = state;
        self.position_ms = position_ms;
        self.position_at = now;
        if seek {
            self.drop_outside_window(now);
        }
        self.dirty_plan = true;
        seek
    }

    /// How much media the host's player has in its buffer ahead of the
    /// playhead. A host whose player can lag what the engine hands it (a
    /// browser tab, whose one thread both takes peers' data and feeds the
    /// media buffers) reports it; the engine then fetches only its urgent
    /// window while the player holds less than that window, and less than
    /// the engine holds ahead, by more than [`PLAYER_SLACK_MS`]: prefetch
    /// arriving then is what keeps the player from catching up. A host that
    /// never reports it (the simulator, whose player takes a block the moment
    /// it is delivered) is never held back.
    pub fn handle_player_buffered(&mut self, ahead_ms: u64, now: Millis) {
        let urgent_window = self.config.urgent_window_ms.min(self.config.horizon_ms);
        let held = self.held_ahead_ms(self.position(now));
        let behind = ahead_ms + PLAYER_SLACK_MS < held.min(urgent_window);
        if behind != self.player_behind {
            self.player_behind = behind;
            self.dirty_plan = true;
        }
    }

    pub fn handle_peer_connected(&mut self, peer: PeerId, now: Millis) {
        // A host reusing a live connection's name ends that connection first.
        self.remove_peer(peer);
        let rate = self.config.initial_peer_rate as f64 / 1000.0;
        let rtt = self.config.initial_peer_rtt_ms as f64;
        if self.expected == PeersExpected::Nobody {
            self.expected = PeersExpected::Unknown;
        }
        let mut fresh = Peer::new(self.layout.len(), rate, rtt, now);
        // A newcomer may take its first block in one burst (see `upload_burst_ms`).
        fresh.up_tokens = self.config.burst_bytes(self.config.per_peer_upload_cap);
        self.peers.insert(peer, fresh);
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
            PeerMessage::HaveMap(bits) => {
                self.first_have_map_at.get_or_insert(now);
                self.on_have_map(peer, bits)
            }
            PeerMessage::Have(block) => {
                if self.on_have(peer, block) {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.last_have = Some((block, now));
                    }
                    self.on_first_have(peer, block, now);
                }
            }
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
            PeerMessage::Coming { block, hops } => self.on_coming(peer, block, hops, now),
            PeerMessage::Sending { block, index } => self.on_sending(peer, block, index, now),
        }
    }

    /// The host fetched `bytes` from the origin in `took_ms` outside the
    /// engine (the manifest, before joining): a first sample of how closely
    /// the origin keeps to its estimate, as TCP takes its first round-trip
    /// sample from the handshake. Without one the margin kept for the origin
    /// stays at `margin_ms`, its ceiling, until the origin answers a fetch of
    /// ours, and a viewer whose blocks all come from peers never asks one:
    /// at a premiere each newcomer's second block had 0.9 s of its 2 s for
    /// peers, and went to the origin for a chunk a peer was still sending.
    pub fn handle_origin_sample(&mut self, bytes: u64, took_ms: u64) {
        self.observe_origin(bytes, took_ms, self.origin_eta_ms(bytes));
    }

    fn observe_origin(&mut self, bytes: u64, took_ms: u64, expected_ms: u64) {
        let took = took_ms as f64;
        let error = (took - expected_ms as f64).abs();
        self.origin_error = Some(self.origin_error.map_or(error, |e| 0.75 * e + 0.25 * error));
        // An answer hardly longer than the round trip (an init segment) says
        // nothing of the rate: divided by a millisecond or two it read as
        // megabytes per millisecond and made the next estimates far too short.
        let transfer = took - self.origin_rtt;
        if transfer >= MIN_ORIGIN_TRANSFER_MS {
            self.origin_rate = 0.7 * self.origin_rate + 0.3 * (bytes as f64 / transfer);
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
        let Some(fetch) = self.origin_inflight.remove(block, first) else {
            // Not a fetch we asked for (or one already settled): nothing to trust.
            return;
        };
        self.observe_origin(fetch.bytes, now.since(fetch.asked), fetch.expected_ms);
        let range = first..first + fetch.count;
        if self.has_block(block) {
            self.partial_release_origin(block, range);
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
            }
        }
        // Chunks of the range that did not come (a short or refused answer).
        self.partial_release_origin(block, range);
        self.dirty_plan = true;
    }

    /// The origin fetch of `block` from chunk `first` failed; its chunks are
    /// planned again.
    pub fn handle_origin_failed(&mut self, block: BlockId, first: u16, _now: Millis) {
        if let Some(fetch) = self.origin_inflight.remove(block, first) {
            self.partial_release_origin(block, first..first + fetch.count);
            self.dirty_plan = true;
        }
    }

    /// The origin fetches of `block` in flight, by first chunk.
    fn origin_fetches(&self, block: BlockId) -> impl Iterator<Item = (u16, &OriginFetch)> {
        self.origin_inflight.of_block_through(block, u16::MAX)
    }

    /// Whether any origin fetch of `block` is in flight.
    pub(crate) fn fetching_from_origin(&self, block: BlockId) -> bool {
        self.origin_fetches(block).next().is_some()
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
                self.stats.planning_passes += 1;
                self.plan(now);
            }
            if self.dirty_upload || self.upload_wake <= now {
                self.dirty_upload = false;
                self.stats.serving_passes += 1;
                self.serve(now);
            }
        }
        self.actions.pop_front()
    }

    /// When to call [`Engine::handle_timeout`] next.
    pub fn poll_timeout(&mut self) -> Option<Millis> {
        // Hosts ask after every input. A request check no sooner than another
        // wake-up cannot be the answer (ties go to the others), so its
        // liveness, a scan of the peer's requests, is looked at only when it
        // could be.
        let others = self.plan_wake.min(self.upload_wake).min(self.slot_wake);
        while let Some(Reverse((at, peer, block, chunk))) = self.expiries.peek().copied() {
            if at >= others {
                break;
            }
            // Looked at now rather than when it comes, a check that cannot
            // fire moves on without waking the host for nothing.
            match self.check_request(peer, block, chunk, at, at) {
                RequestCheck::Due => break,
                RequestCheck::Moved(next) => {
                    self.expiries.pop();
                    self.expiries.push(Reverse((next, peer, block, chunk)));
                }
                RequestCheck::Gone => {
                    self.expiries.pop();
                }
            }
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
            "{block:?} have={} avail={} heard_coming={} deadline_in={deadline}ms origin_inflight={:?} pos={pos} play={:?} chunks={chunks:?} wake_in={}",
            self.has_block(block),
            self.avail.get(block.0 as usize).copied().unwrap_or(0),
            self.heard_coming(block, now),
            self.origin_fetches(block)
                .map(|(first, f)| (first, f.count, now.since(f.asked)))
                .collect::<Vec<_>>(),
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
        stats.buffer_ahead_ms = self.held_ahead_ms(self.position(now));
        stats
    }

    /// How far ahead of `pos` the first track's blocks are held without a gap.
    fn held_ahead_ms(&self, pos: u64) -> u64 {
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
        end.saturating_sub(pos)
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

    /// A number drawn from the engine's seed for `block` and `salt`
    /// (splitmix64's finaliser): the same for the same three, unrelated
    /// between blocks, salts and viewers.
    pub(crate) fn seeded_draw(&self, block: BlockId, salt: u64) -> u64 {
        let mut x =
            self.config.seed ^ salt ^ u64::from(block.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
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

    fn partial_release_origin(&mut self, block: BlockId, chunks: std::ops::Range<u16>) {
        if let Some(p) = self.partial.get_mut(&block) {
            p.release_origin(chunks);
        }
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
                p.missing < p.chunks.len() as u16 || self.fetching_from_origin(block)
            });
            if !keep {
                self.partial.remove(&block);
            }
        }
    }
}
