//! One title's swarm in this tab: the telly-swarm engine, its links, and the
//! hand-over of verified blocks to the player.
//!
//! The engine decides everything (which chunk from whom, when the origin, whom
//! to serve); this file performs its actions: frames onto links, HTTP ranges
//! from the origin, IndexedDB reads and writes, and blocks to the player.
//!
//! Invariants:
//! - a block reaches the player (`waiters`, `ready`) only after the engine's
//!   `Deliver`, i.e. after every chunk checked against the signed Merkle root;
//! - `ready` holds at most [`MAX_READY_BLOCKS`] blocks nobody has asked for.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use futures::channel::{mpsc, oneshot};
use js_sys::Uint8Array;
use telly_proto::Sha256Hash;
use telly_proto::api::GrantResponse;
use telly_proto::signal::{HaveSummary, PeerId as SignalPeer};
use telly_proto::wire::{self, CHUNK_SIZE, GoodbyeReason, Message};
use telly_swarm::{
    Action, BlockId, Engine, Fetched, Millis, PeerMessage, PlayState, Signed, Stats,
};
use web_sys::HtmlVideoElement;

use super::faults::Faults;
use super::hub::{HubEvent, Shared};
use super::links::{Flow, Links};
use super::snapshot::{HISTORY_SAMPLES, RateSample, SnapshotFn, SwarmSnapshot};
use super::source::SwarmSource;
use crate::host::player::{mse, plan};
use crate::host::source::SourceError;
use crate::host::store::BlockStore;
use crate::host::{crypto, marks};

/// Verified blocks kept for the player before it asks; more are dropped (they
/// stay in IndexedDB and in the engine).
const MAX_READY_BLOCKS: usize = 48;

pub type Reply = oneshot::Sender<Result<Uint8Array, SourceError>>;

/// The longest pause before fetching again a block whose last origin copy
/// failed or was refused: a corrupt block at the origin must not be fetched in
/// a tight loop by every viewer.
const MAX_ORIGIN_RETRY_MS: u32 = 30_000;

/// Totals last reported to the provider, to send deltas.
#[derive(Default, Clone, Copy)]
pub struct Reported {
    pub from_peers: u64,
    pub from_origin: u64,
    pub uploaded: u64,
}

pub struct TitleSwarm {
    pub title_id: String,
    pub swarm_id: Sha256Hash,
    pub engine: Engine<Signed>,
    pub links: Links,
    pub joined: bool,
    pub refused: Option<String>,
    /// Our signalling grant, kept to re-join after a reconnect; renewed
    /// before it expires.
    pub grant: Option<GrantResponse>,
    /// A grant request is out: its answer joins, so nothing else asks.
    pub grant_pending: bool,
    pub by_sha: HashMap<Sha256Hash, BlockId>,
    pub waiters: HashMap<BlockId, Vec<Reply>>,
    pub ready: HashMap<BlockId, Uint8Array>,
    ready_order: VecDeque<BlockId>,
    pub video: Option<HtmlVideoElement>,
    played: bool,
    /// Origin fetches of a block that failed, to bypass caches on the next.
    origin_failures: HashMap<BlockId, u32>,
    last_stats: Stats,
    last_sample_at: f64,
    pub history: VecDeque<RateSample>,
    pub reported: Reported,
    pub on_snapshot: Option<SnapshotFn>,
    /// Deliveries recorded as page milestones so far (the first few only).
    delivered_marks: u8,
}

impl TitleSwarm {
    pub fn new(title_id: String, swarm_id: Sha256Hash, engine: Engine<Signed>) -> Self {
        let by_sha = engine
            .layout()
            .by_time()
            .iter()
            .map(|id| (engine.layout().info(*id).entry.sha256, *id))
            .collect();
        Self {
            title_id,
            swarm_id,
            engine,
            links: Links::default(),
            joined: false,
            refused: None,
            grant: None,
            grant_pending: false,
            by_sha,
            waiters: HashMap::new(),
            ready: HashMap::new(),
            ready_order: VecDeque::new(),
            video: None,
            played: false,
            origin_failures: HashMap::new(),
            last_stats: Stats::default(),
            last_sample_at: 0.0,
            history: VecDeque::new(),
            reported: Reported::default(),
            on_snapshot: None,
            delivered_marks: 0,
        }
    }

    /// Where the watched video is, as the engine wants to know it. Waiting for
    /// a block while not playing is starting (no frame yet) or a stall.
    /// Returns whether the viewer jumped (a seek).
    pub fn update_playhead(&mut self, now: Millis) -> bool {
        let Some(video) = &self.video else {
            return false;
        };
        let position_ms = (video.current_time().max(0.0) * 1000.0) as u64;
        // A player holding for its resume goal plays at rate 0: it waits.
        let playing = !video.paused() && video.ready_state() >= 3 && video.playback_rate() > 0.0;
        if playing && position_ms > 0 {
            self.played = true;
        }
        let waiting = !video.paused() || !self.waiters.is_empty();
        let state = if playing {
            PlayState::Playing
        } else if !waiting {
            PlayState::Paused
        } else if self.played {
            PlayState::Stalled
        } else {
            PlayState::Starting
        };
        let jumped = self.engine.handle_playhead(position_ms, state, now);
        let ahead_s = plan::ahead_of(&mse::ranges(&video.buffered()), video.current_time());
        self.engine
            .handle_player_buffered((ahead_s * 1000.0) as u64, now);
        // The engine fetches nothing behind the playhead: a block the player
        // still waits for there (asked for before a seek) would never come, so
        // say so at once and let the player move on.
        let layout = self.engine.layout();
        let behind: Vec<BlockId> = self
            .waiters
            .keys()
            .copied()
            .filter(|block| layout.is_behind(*block, position_ms))
            .collect();
        for block in behind {
            let sha = layout.info(block).entry.sha256;
            for reply in self.waiters.remove(&block).unwrap_or_default() {
                let _ = reply.send(Err(SwarmSource::error(
                    sha,
                    "behind the playhead: the swarm no longer fetches it",
                )));
            }
        }
        jumped
    }

    /// The player wants a block: at once if verified and here, else when the
    /// engine delivers it.
    pub fn want(&mut self, shared: &Rc<Shared>, sha: &Sha256Hash, reply: Reply, now: Millis) {
        let Some(&block) = self.by_sha.get(sha) else {
            let _ = reply.send(Err(SwarmSource::error(*sha, "not a block of this title")));
            return;
        };
        if let Some(bytes) = self.ready.remove(&block) {
            self.ready_order.retain(|b| *b != block);
            let _ = reply.send(Ok(bytes));
            return;
        }
        if self.engine.has_block(block) {
            // Delivered before and handed over since; the player asks again
            // (a seek back, storage unavailable): from memory if still there.
            if let Some(chunks) = self.engine.resident_chunks(block) {
                let _ = reply.send(Ok(concat(chunks)));
                return;
            }
            // Out of memory but kept: read it back. A player slow to ask (its
            // first blocks while the page is starved) must not be refused the
            // very blocks it needs first, which are the oldest in memory.
            // IndexedDB orders this read after the block's own write.
            let store = shared.store.clone();
            let sha = *sha;
            wasm_bindgen_futures::spawn_local(async move {
                let answer = read_kept(store.as_ref(), &sha).await.map_err(|why| {
                    SwarmSource::error(
                        sha,
                        format!("delivered before and no longer in memory; {why}"),
                    )
                });
                let _ = reply.send(answer);
            });
            return;
        }
        self.waiters.entry(block).or_default().push(reply);
        self.update_playhead(now);
    }

    /// Performs every action the engine has, then returns.
    pub fn drain(
        &mut self,
        shared: &Rc<Shared>,
        hub: &mpsc::UnboundedSender<HubEvent>,
        now: Millis,
    ) {
        while let Some(action) = self.engine.poll_action(now) {
            match action {
                Action::Send { peer, msg } => self.send(peer, msg, &shared.faults, now),
                Action::FetchFromOrigin {
                    block,
                    first,
                    count,
                } => self.fetch_from_origin(shared, hub, block, first, count),
                Action::Load { block } => self.load(shared, hub, block),
                Action::Store { block, chunks } => self.store(shared, block, &chunks),
                Action::Deliver { block } => self.deliver(block),
                Action::Disconnect { peer, why } => self.disconnect(peer, why, now),
            }
        }
    }

    fn send(
        &mut self,
        peer: telly_swarm::PeerId,
        msg: PeerMessage<Signed>,
        faults: &Faults,
        now: Millis,
    ) {
        let mut message = msg.to_wire();
        if let Message::Request { .. } = &message {
            marks::mark("first peer request");
        }
        match &mut message {
            Message::Chunk { data, .. } if faults.corrupt_uploads => {
                // Test peer only (`?fault=corrupt-uploads`): every chunk it serves is bad.
                let middle = data.len() / 2;
                if let Some(byte) = data.get_mut(middle) {
                    *byte ^= 0xff;
                }
            }
            _ => {}
        }
        match wire::encode(&message) {
            Ok(frame) => {
                if let Flow::Stuck = self.links.send(peer, frame) {
                    tracing::warn!(?peer, "a peer stopped reading; dropping it");
                    self.engine.handle_peer_disconnected(peer, now);
                    self.close_engine_peer(peer);
                }
            }
            Err(error) => tracing::warn!(%error, "the engine made a frame the wire refuses"),
        }
    }

    fn disconnect(&mut self, peer: telly_swarm::PeerId, why: GoodbyeReason, _now: Millis) {
        tracing::info!(?peer, ?why, "disconnecting a peer");
        self.close_engine_peer(peer);
    }

    /// Closes and forgets the link of an engine peer (the engine already forgot it).
    pub fn close_engine_peer(&mut self, peer: telly_swarm::PeerId) {
        if let Some(signal_peer) = self.links.by_engine.get(&peer).cloned()
            && let Some(link) = self.links.remove(&signal_peer)
        {
            link.link.close();
        }
    }

    /// Drops the link to a signalling peer, telling the engine if it knew it.
    pub fn drop_link(&mut self, peer: &SignalPeer, now: Millis) {
        if let Some(link) = self.links.remove(peer) {
            if link.open {
                self.engine.handle_peer_disconnected(link.engine_id, now);
            }
            link.link.close();
        }
    }

    fn fetch_from_origin(
        &mut self,
        shared: &Rc<Shared>,
        hub: &mpsc::UnboundedSender<HubEvent>,
        block: BlockId,
        first: u16,
        count: u16,
    ) {
        marks::mark("first origin fetch");
        let entry = self.engine.layout().info(block).entry.clone();
        let start = u64::from(first) * CHUNK_SIZE as u64;
        let end = (u64::from(first) + u64::from(count)) * CHUNK_SIZE as u64;
        let end = end.min(entry.size);
        let failures = self.origin_failures.get(&block).copied().unwrap_or(0);
        let reload = failures > 0;
        let pause_ms = if failures == 0 {
            0
        } else {
            (500u32 << failures.min(6)).min(MAX_ORIGIN_RETRY_MS)
        };
        let api = shared.api.clone();
        let hub = hub.clone();
        let swarm = self.swarm_id;
        wasm_bindgen_futures::spawn_local(async move {
            if pause_ms > 0 {
                gloo_timers::future::TimeoutFuture::new(pause_ms).await;
            }
            let result = if start == 0 && end == entry.size {
                api.block(&entry.sha256, entry.size, reload).await
            } else {
                api.block_range(&entry.sha256, start, end, reload).await
            };
            let result = match result {
                Ok(bytes) => Ok(crypto::with_leaves(&bytes).await),
                Err(error) => Err(error.to_string()),
            };
            let _ = hub.unbounded_send(HubEvent::Origin {
                swarm,
                block,
                first,
                result,
            });
        });
    }

    pub fn on_origin(
        &mut self,
        block: BlockId,
        first: u16,
        result: Result<Fetched, String>,
        now: Millis,
    ) {
        match result {
            Ok(bytes) => {
                let before = self.engine.stats(now).bytes_from_origin;
                self.engine.handle_origin_data(block, first, bytes, now);
                if self.engine.stats(now).bytes_from_origin == before
                    && !self.engine.has_block(block)
                {
                    // Refused (a bad copy): the next fetch must not come from a
                    // cache, and the player hears of it as of a copy it refused.
                    *self.origin_failures.entry(block).or_default() += 1;
                    let sha = self.engine.layout().info(block).entry.sha256;
                    for reply in self.waiters.remove(&block).unwrap_or_default() {
                        let mut error = SwarmSource::error(
                            sha,
                            "the origin's copy does not match the signed manifest",
                        );
                        error.refused_copies = 1;
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(?block, %error, "origin fetch failed");
                *self.origin_failures.entry(block).or_default() += 1;
                self.engine.handle_origin_failed(block, first, now);
            }
        }
    }

    fn load(&mut self, shared: &Rc<Shared>, hub: &mpsc::UnboundedSender<HubEvent>, block: BlockId) {
        let sha = self.engine.layout().info(block).entry.sha256;
        let store = shared.store.clone();
        let hub = hub.clone();
        let swarm = self.swarm_id;
        wasm_bindgen_futures::spawn_local(async move {
            let bytes = match read_kept(store.as_ref(), &sha).await {
                Ok(bytes) => Some(crypto::with_leaves(&bytes).await),
                Err(_) => None,
            };
            let _ = hub.unbounded_send(HubEvent::Loaded {
                swarm,
                block,
                bytes,
            });
        });
    }

    fn store(&mut self, shared: &Rc<Shared>, block: BlockId, chunks: &[std::sync::Arc<[u8]>]) {
        let bytes = concat(chunks);
        if let Some(store) = shared.store.clone() {
            let sha = self.engine.layout().info(block).entry.sha256;
            let sealed = bytes.clone();
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(error) = store.put(&sha, &sealed).await {
                    tracing::warn!(%error, "a verified block could not be kept");
                }
            });
        }
        self.ready.insert(block, bytes);
        self.ready_order.push_back(block);
    }

    fn deliver(&mut self, block: BlockId) {
        if self.delivered_marks < 4 {
            self.delivered_marks += 1;
            marks::mark(&format!("verified block {}", block.0));
        }
        if let Some(waiters) = self.waiters.remove(&block)
            && let Some(bytes) = self.ready.remove(&block)
        {
            for reply in waiters {
                let _ = reply.send(Ok(bytes.clone()));
            }
        }
        while self.ready_order.len() > MAX_READY_BLOCKS {
            if let Some(old) = self.ready_order.pop_front() {
                self.ready.remove(&old);
            }
        }
        self.ready_order.retain(|b| self.ready.contains_key(b));
    }

    /// What this tab holds, in title time, for the tracker.
    pub fn have_summary(&self) -> HaveSummary {
        let playhead_ms = self
            .video
            .as_ref()
            .map(|v| (v.current_time().max(0.0) * 1000.0) as u64);
        self.engine.have_summary(playhead_ms)
    }

    /// Takes a one-second sample and publishes the snapshot.
    pub fn sample(&mut self, shared: &Shared, now: Millis) -> SwarmSnapshot {
        let stats = self.engine.stats(now);
        let at_ms = now.0 as f64;
        let elapsed_s = ((at_ms - self.last_sample_at) / 1000.0).max(1e-3);
        let rate = |new: u64, old: u64| new.saturating_sub(old) as f64 / elapsed_s;
        let sample = RateSample {
            at_ms,
            from_peers_bps: rate(stats.bytes_from_peers, self.last_stats.bytes_from_peers),
            from_origin_bps: rate(stats.bytes_from_origin, self.last_stats.bytes_from_origin),
            uploaded_bps: rate(stats.bytes_uploaded, self.last_stats.bytes_uploaded),
        };
        if self.last_sample_at > 0.0 {
            self.history.push_back(sample);
            while self.history.len() > HISTORY_SAMPLES {
                self.history.pop_front();
            }
        }
        self.last_sample_at = at_ms;
        self.last_stats = stats.clone();
        self.snapshot(shared, &stats, &sample, now)
    }

    fn snapshot(
        &self,
        shared: &Shared,
        stats: &Stats,
        rates: &RateSample,
        now: Millis,
    ) -> SwarmSnapshot {
        let received = stats.bytes_from_peers + stats.bytes_from_origin;
        SwarmSnapshot {
            peer_id: shared.peer_id.to_string(),
            joined: self.joined,
            refused: self.refused.clone(),
            signalling_connected: shared.signalling_open.get(),
            peers: self.links.open_count(),
            connecting: self.links.connecting_count(),
            peers_banned: stats.peers_banned,
            peers_refused: stats.peers_refused,
            bytes_from_peers: stats.bytes_from_peers,
            bytes_from_origin: stats.bytes_from_origin,
            bytes_uploaded: stats.bytes_uploaded,
            bytes_wasted: stats.bytes_duplicate + stats.bytes_discarded,
            peer_share: if received == 0 {
                0.0
            } else {
                stats.bytes_from_peers as f64 / received as f64
            },
            download_bps: rates.from_peers_bps + rates.from_origin_bps,
            upload_bps: rates.uploaded_bps,
            upload_cap_bps: shared.upload_cap.get(),
            titles_shared: shared.titles_shared.get(),
            history: self.history.iter().copied().collect(),
            waiting_for: self
                .waiters
                .keys()
                .map(|block| {
                    let info = self.engine.layout().info(*block);
                    format!(
                        "track {} at {} ms: {}",
                        info.track,
                        info.entry.start_ms,
                        self.engine.describe_block(*block, now)
                    )
                })
                .collect(),
        }
    }
}

fn concat(chunks: &[std::sync::Arc<[u8]>]) -> Uint8Array {
    let size: usize = chunks.iter().map(|c| c.len()).sum();
    let bytes = Uint8Array::new_with_length(size as u32);
    let mut at = 0u32;
    for chunk in chunks {
        bytes.set(&Uint8Array::from(&chunk[..]), at);
        at += chunk.len() as u32;
    }
    bytes
}

/// A block this tab kept in IndexedDB, read back; why not, in words.
async fn read_kept(store: Option<&BlockStore>, sha: &Sha256Hash) -> Result<Uint8Array, String> {
    let Some(store) = store else {
        return Err("this tab keeps no blocks (no storage)".into());
    };
    match store.get(sha).await {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err("not kept in storage".into()),
        Err(e) => Err(e.to_string()),
    }
}
