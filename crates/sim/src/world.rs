//! The discrete-event world: viewers, links, the origin, a tracker and players.
//!
//! # Link model
//!
//! A queueing model at message granularity: each viewer's uplink and downlink is a
//! first-come-first-served server of its capacity. A chunk (64 KiB) leaves when the
//! sender's uplink has serialized it, travels the sum of the two ends' access
//! latencies, and is taken in by the receiver's downlink after what it is already
//! receiving, so all flows through one viewer's link share its capacity and
//! congestion is real. Small control messages (under 1 KiB) only pay the latency.
//! The origin is a CDN without a capacity limit: its bytes pay a latency and the
//! viewer's downlink. Engines pace their own uploads to the viewer's upload
//! capacity (their upload cap), as a browser's data channel flow control does.

use std::sync::Arc;

use telly_proto::manifest::{BlockEntry, MANIFEST_VERSION, Manifest, Track, TrackKind};
use telly_proto::{KeyId, Sha256Hash};
use telly_swarm::{
    Action, BlockId, Config, Engine, Layout, Millis, PeerId, PeerMessage, PlayState,
};

use crate::baseline::Baseline;
use crate::model::{Modelled, ModelledGrant, hashes_wire_len};
use crate::node::SimNode;
use crate::scenario::{Arrival, Scenario};

mod player;
mod queue;
mod tracker;

use queue::Queue;

/// Which logic the viewers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Telly { relay: bool },
    OriginOnly,
    P2pmlLike,
}

impl Strategy {
    pub fn label(&self) -> &'static str {
        match self {
            Strategy::Telly { relay: true } => "telly",
            Strategy::Telly { relay: false } => "telly-store-and-forward",
            Strategy::OriginOnly => "origin-only",
            Strategy::P2pmlLike => "p2p-media-loader-like",
        }
    }

    pub fn from_label(label: &str) -> Option<Self> {
        [
            Strategy::Telly { relay: true },
            Strategy::Telly { relay: false },
            Strategy::OriginOnly,
            Strategy::P2pmlLike,
        ]
        .into_iter()
        .find(|s| s.label() == label)
    }
}

/// A tiny seeded generator (xorshift64*), the world's only randomness.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn between(&mut self, min: f64, max: f64) -> f64 {
        min + (max - min) * self.unit()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// So that the tracker's own code (which takes any RNG) draws from the world's.
impl rand_core::RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        (Rng::next_u64(self) >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        Rng::next_u64(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// A synthetic one-track title with the scenario's block size and count.
pub fn layout_for(scenario: &Scenario) -> Arc<Layout> {
    let block_ms = scenario.block_s * 1000;
    let entry = |start_ms, duration_ms, size| BlockEntry {
        start_ms,
        duration_ms,
        size,
        sha256: Sha256Hash::of(&start_ms.to_le_bytes()),
        piece_root: Sha256Hash::of(&size.to_le_bytes()),
    };
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        title_id: scenario.name.clone(),
        title: scenario.name.clone(),
        duration_ms: scenario.blocks() * block_ms,
        key_id: KeyId([0; 16]),
        tracks: vec![Track {
            kind: TrackKind::Video,
            codec: "avc1.64001F".into(),
            mime: "video/mp4".into(),
            bandwidth: scenario.bitrate_kbps * 1000,
            width: None,
            height: None,
            init: entry(0, 0, 2_000),
            blocks: (0..scenario.blocks())
                .map(|i| entry(i * block_ms, block_ms, scenario.block_bytes()))
                .collect(),
        }],
        published_at: 0,
    };
    Arc::new(Layout::new(&manifest).expect("a simulated title fits the wire"))
}

/// What one viewer did, for the report.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ViewerRecord {
    pub arrived_ms: u64,
    pub left_ms: u64,
    pub ttff_ms: Option<u64>,
    pub stalls: u32,
    pub stall_ms: u64,
    /// From the viewer's jump to playing again (a wait, not a rebuffer).
    pub seek_wait_ms: Option<u64>,
    pub played_ms: u64,
    pub from_origin: u64,
    pub from_peers: u64,
    pub uploaded: u64,
    /// Upload capacity in bytes per second.
    pub upload_capacity: u64,
    pub demand_bytes: u64,
}

struct Viewer {
    node: Option<Box<dyn SimNode>>,
    up: f64,
    down: f64,
    latency: f64,
    up_free: f64,
    down_free: f64,
    peers: Vec<u32>,
    /// Those of `peers` this viewer asked for itself (the rest asked for it).
    dialled: Vec<u32>,
    delivered: Vec<bool>,
    state: PlayState,
    /// Position at `position_at` (while playing it advances in real time).
    position: u64,
    position_at: u64,
    /// The player waits after a seek; that wait is not a rebuffer.
    seeking: bool,
    /// The have-summary last read by the tracker, and when (see `world::tracker`).
    summary: Option<(u64, telly_proto::signal::HaveSummary)>,
    stall_since: Option<u64>,
    player_gen: u32,
    timer_at: u64,
    leave_at: Option<u64>,
    seek_at: Option<(u64, u64)>,
    record: ViewerRecord,
}

impl Viewer {
    fn forget(&mut self, peer: u32) {
        self.peers.retain(|p| *p != peer);
        self.dialled.retain(|p| *p != peer);
    }

    /// Peers that asked for this viewer.
    fn followers(&self) -> usize {
        self.peers.len() - self.dialled.len()
    }
}

enum Ev {
    Arrive(u32),
    /// A message, first when it reaches the receiver's downlink, which takes
    /// its `downlink` bytes in after what it holds (0: a control message,
    /// which only pays the latency), then when it is in.
    Msg {
        to: u32,
        from: u32,
        msg: PeerMessage<Modelled>,
        downlink: u32,
    },
    /// Origin bytes, first at the downlink, then (`through`) when they are in.
    Origin {
        to: u32,
        block: BlockId,
        first: u16,
        bytes: u64,
        through: bool,
    },
    Closed {
        to: u32,
        from: u32,
    },
    Timer {
        viewer: u32,
        at: u64,
    },
    Boundary {
        viewer: u32,
        generation: u32,
    },
    Leave(u32),
    Seek(u32),
    /// A Telly viewer's periodic word with the tracker (see `world::tracker`).
    Announce(u32),
    Sample,
}

impl Ev {
    /// For bytes still at their receiver's downlink: the receiver and how
    /// many it takes in, and the event is marked through.
    fn pass_downlink(&mut self) -> Option<(u32, f64)> {
        match self {
            Ev::Msg { to, downlink, .. } if *downlink > 0 => {
                let bytes = f64::from(std::mem::take(downlink));
                Some((*to, bytes))
            }
            Ev::Origin {
                to, bytes, through, ..
            } if !*through => {
                *through = true;
                Some((*to, *bytes as f64))
            }
            _ => None,
        }
    }
}

/// A manifest's size per block: an entry is three numbers and two hashes in
/// hex, about 200 bytes of JSON.
const MANIFEST_BYTES_PER_BLOCK: u64 = 200;

/// One run of one strategy over one scenario.
pub struct World {
    scenario: Scenario,
    strategy: Strategy,
    layout: Arc<Layout>,
    viewers: Vec<Viewer>,
    present: Vec<u32>,
    arrivals: Vec<u32>,
    queue: Queue,
    now: u64,
    rng: Rng,
    pub origin_bytes: u64,
    /// (time s, cumulative origin bytes, viewers present), every 10 s.
    pub samples: Vec<(f64, u64, usize)>,
    pub events: u64,
    pub check_every: u64,
    /// Engine counters summed over viewers as they leave.
    pub engine_totals: telly_swarm::Stats,
    trace: Trace,
}

/// Diagnostics to stderr, chosen once from the environment (reading it per event
/// would dominate a 10,000-viewer run): `TELLY_SIM_TRACE_VIEWER=N` (one viewer's
/// messages and actions), `TELLY_SIM_TRACE_ORIGIN`, `TELLY_SIM_TRACE_STALLS`.
#[derive(Default)]
struct Trace {
    viewer: Option<u32>,
    origin: bool,
    stalls: bool,
}

impl Trace {
    fn from_env() -> Self {
        Self {
            viewer: std::env::var("TELLY_SIM_TRACE_VIEWER")
                .ok()
                .and_then(|v| v.parse().ok()),
            origin: std::env::var_os("TELLY_SIM_TRACE_ORIGIN").is_some(),
            stalls: std::env::var_os("TELLY_SIM_TRACE_STALLS").is_some(),
        }
    }
}

impl World {
    pub fn new(scenario: &Scenario, strategy: Strategy) -> Self {
        let layout = layout_for(scenario);
        let mut rng = Rng::new(scenario.seed);
        let bitrate_bytes = scenario.bitrate_kbps as f64 * 125.0;
        let title_ms = scenario.blocks() * scenario.block_s * 1000;
        let mut viewers = Vec::with_capacity(scenario.viewers);
        let mut queue = Queue::default();
        for id in 0..scenario.viewers as u32 {
            let arrive = match scenario.arrival {
                Arrival::Flash { window_s } => (rng.unit() * window_s as f64 * 1000.0) as u64,
                Arrival::Staggered { over_s } => (rng.unit() * over_s as f64 * 1000.0) as u64,
            };
            let up = rng.between(scenario.upload_x_bitrate.min, scenario.upload_x_bitrate.max)
                * bitrate_bytes;
            let down =
                rng.between(scenario.download_mbps.min, scenario.download_mbps.max) * 125_000.0;
            let latency = rng.between(scenario.latency_ms.min, scenario.latency_ms.max);
            let leave_at = (rng.unit() < scenario.churn)
                .then(|| arrive + (rng.between(0.1, 0.9) * title_ms as f64) as u64);
            let seek_at = (rng.unit() < scenario.seek).then(|| {
                let at = arrive + (rng.between(0.05, 0.5) * title_ms as f64) as u64;
                let to = (rng.between(0.5, 0.95) * title_ms as f64) as u64;
                (at, to)
            });
            viewers.push(Viewer {
                node: None,
                up: up / 1000.0,
                down: down / 1000.0,
                latency,
                up_free: 0.0,
                down_free: 0.0,
                peers: Vec::new(),
                dialled: Vec::new(),
                delivered: vec![false; layout.len()],
                state: PlayState::Starting,
                position: 0,
                position_at: arrive,
                seeking: false,
                summary: None,
                stall_since: None,
                player_gen: 0,
                timer_at: u64::MAX,
                leave_at,
                seek_at,
                record: ViewerRecord {
                    arrived_ms: arrive,
                    upload_capacity: up as u64,
                    ..ViewerRecord::default()
                },
            });
            queue.push(arrive, Ev::Arrive(id));
        }
        queue.push(0, Ev::Sample);
        Self {
            scenario: scenario.clone(),
            strategy,
            layout,
            viewers,
            present: Vec::new(),
            arrivals: Vec::new(),
            queue,
            now: 0,
            rng,
            origin_bytes: 0,
            samples: Vec::new(),
            events: 0,
            check_every: 0,
            engine_totals: telly_swarm::Stats::default(),
            trace: Trace::from_env(),
        }
    }

    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// When the last viewer will be gone, at the latest (for progress bars).
    pub fn horizon_ms(&self) -> u64 {
        let title_ms = self.scenario.blocks() * self.scenario.block_s * 1000;
        let last = self
            .viewers
            .iter()
            .map(|v| v.record.arrived_ms)
            .max()
            .unwrap_or(0);
        last + title_ms + self.scenario.linger_s * 1000
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.queue.push(at, ev);
    }

    fn new_node(&mut self, id: u32) -> Box<dyn SimNode> {
        let v = &self.viewers[id as usize];
        let upload = (v.up * 1000.0) as u64;
        match self.strategy {
            Strategy::P2pmlLike => Box::new(Baseline::new(
                self.layout.clone(),
                upload,
                self.scenario.seed ^ u64::from(id) << 20,
            )),
            Strategy::Telly { .. } | Strategy::OriginOnly => {
                let knobs = &self.scenario.engine;
                let defaults = Config::default();
                let config = Config {
                    urgent_window_ms: knobs.urgent_window_ms.unwrap_or(defaults.urgent_window_ms),
                    horizon_ms: knobs.horizon_ms.unwrap_or(defaults.horizon_ms),
                    margin_ms: knobs.margin_ms.unwrap_or(defaults.margin_ms),
                    min_margin_ms: knobs.min_margin_ms.unwrap_or(defaults.min_margin_ms),
                    startup_budget_ms: knobs
                        .startup_budget_ms
                        .unwrap_or(defaults.startup_budget_ms),
                    origin_spread_ms: knobs.origin_spread_ms.unwrap_or(defaults.origin_spread_ms),
                    upload_slots: knobs.upload_slots.unwrap_or(defaults.upload_slots),
                    min_request_timeout_ms: knobs
                        .min_request_timeout_ms
                        .unwrap_or(defaults.min_request_timeout_ms),
                    seed: self.scenario.seed.wrapping_mul(1_000_003) ^ u64::from(id),
                    upload_cap: upload,
                    per_peer_upload_cap: upload.div_ceil(2).max(1),
                    origin_rtt_ms: self.scenario.origin_latency_ms * 2,
                    origin_rate: (v.down * 1000.0) as u64,
                    peer_to_peer: self.strategy != Strategy::OriginOnly,
                    relay_partial: self.strategy == Strategy::Telly { relay: true },
                    ..Config::default()
                };
                let grant = ModelledGrant {
                    viewer: id,
                    valid: true,
                };
                let mut engine = Engine::new(
                    config,
                    self.layout.clone(),
                    Modelled,
                    grant,
                    Sha256Hash::of(self.scenario.name.as_bytes()),
                );
                // The page fetched the manifest from the origin before joining
                // (outside the modelled time, as its licence is), and the tab
                // hands the engine that fetch's timing.
                let manifest_bytes = MANIFEST_BYTES_PER_BLOCK * self.layout.len() as u64;
                let took = 2.0 * self.scenario.origin_latency_ms as f64
                    + v.latency
                    + manifest_bytes as f64 / v.down.max(1e-3);
                engine.handle_origin_sample(manifest_bytes, took.ceil() as u64);
                Box::new(engine)
            }
        }
    }

    /// Runs until no event is left; `progress` gets the virtual time now and then.
    pub fn run(&mut self, mut progress: impl FnMut(u64)) {
        while let Some((at, ev)) = self.queue.pop() {
            self.now = at;
            self.events += 1;
            if self.events.is_multiple_of(65_536) {
                progress(self.now);
            }
            self.handle(ev);
        }
        let now = self.now;
        for id in 0..self.viewers.len() as u32 {
            if self.viewers[id as usize].node.is_some() {
                self.leave(id, now);
            }
        }
    }

    pub fn records(&self) -> Vec<ViewerRecord> {
        self.viewers.iter().map(|v| v.record.clone()).collect()
    }

    fn handle(&mut self, mut ev: Ev) {
        if let Some((to, bytes)) = ev.pass_downlink() {
            let at = self.take_in(to, bytes);
            return self.push(at, ev);
        }
        let now = self.now;
        let t = Millis(now);
        match ev {
            Ev::Arrive(id) => self.arrive(id),
            Ev::Msg { to, from, msg, .. } => {
                if self.trace.viewer == Some(to) {
                    eprintln!(
                        "{now} v{to} gets from {from}: {}",
                        format!("{msg:?}").chars().take(150).collect::<String>()
                    );
                }
                if let Some(node) = self.viewers[to as usize].node.as_mut() {
                    node.message(PeerId(u64::from(from)), msg, t);
                    self.drain(to);
                }
            }
            Ev::Origin {
                to,
                block,
                first,
                bytes,
                ..
            } => {
                if self.trace.viewer == Some(to) {
                    eprintln!("{now} v{to} gets from the origin: {block:?} {first}.. {bytes} B");
                }
                if let Some(node) = self.viewers[to as usize].node.as_mut() {
                    node.origin(block, first, bytes, t);
                    self.drain(to);
                }
            }
            Ev::Closed { to, from } => {
                let v = &mut self.viewers[to as usize];
                if let Some(node) = v.node.as_mut() {
                    node.disconnected(PeerId(u64::from(from)), t);
                    v.forget(from);
                    self.drain(to);
                    if self.viewers[to as usize].peers.len() < self.scenario.peers / 2 {
                        self.find_peers(to);
                    }
                }
            }
            Ev::Timer { viewer, at } => {
                let v = &mut self.viewers[viewer as usize];
                if v.timer_at != at {
                    return;
                }
                v.timer_at = u64::MAX;
                if let Some(node) = v.node.as_mut() {
                    node.timeout(t);
                    self.drain(viewer);
                }
            }
            Ev::Boundary { viewer, generation } => self.boundary(viewer, generation),
            Ev::Leave(id) => {
                if self.viewers[id as usize].node.is_some() {
                    self.leave(id, now);
                }
            }
            Ev::Seek(id) => self.seek(id),
            Ev::Announce(id) => self.announce(id),
            Ev::Sample => {
                self.samples
                    .push((now as f64 / 1000.0, self.origin_bytes, self.present.len()));
                if !self.queue.is_empty() {
                    self.push(now + 10_000, Ev::Sample);
                }
            }
        }
    }

    fn arrive(&mut self, id: u32) {
        let node = self.new_node(id);
        let now = self.now;
        let v = &mut self.viewers[id as usize];
        v.node = Some(node);
        v.position_at = now;
        if let Some(at) = v.leave_at {
            self.push(at, Ev::Leave(id));
        }
        if let Some((at, _)) = self.viewers[id as usize].seek_at {
            self.push(at, Ev::Seek(id));
        }
        if self.strategy != Strategy::OriginOnly {
            self.find_peers(id);
        }
        if matches!(self.strategy, Strategy::Telly { .. }) {
            self.push(now + tracker::ANNOUNCE_MS, Ev::Announce(id));
        }
        self.present.push(id);
        self.arrivals.push(id);
        let v = &mut self.viewers[id as usize];
        v.node
            .as_mut()
            .expect("just arrived")
            .playhead(0, PlayState::Starting, Millis(now));
        self.drain(id);
    }

    /// When bytes reaching viewer `to`'s downlink now are in, after what it
    /// is already taking in.
    fn take_in(&mut self, to: u32, bytes: f64) -> u64 {
        let r = &mut self.viewers[to as usize];
        let arrive = r.down_free.max(self.now as f64) + bytes / r.down;
        r.down_free = arrive;
        arrive.ceil() as u64
    }

    fn drain(&mut self, id: u32) {
        let now = self.now;
        // A timer that fell due while this input was handled runs now, as a
        // tab's zero-delay timer would, not a millisecond late. Once: a timer
        // still due after it ran waits for the next millisecond.
        let mut ran_due_timer = false;
        let next_timeout = loop {
            loop {
                let Some(node) = self.viewers[id as usize].node.as_mut() else {
                    return;
                };
                let Some(action) = node.poll_action(Millis(now)) else {
                    break;
                };
                self.perform(id, action);
            }
            let Some(node) = self.viewers[id as usize].node.as_mut() else {
                return;
            };
            match node.poll_timeout() {
                Some(at) if at.0 <= now && !ran_due_timer => {
                    ran_due_timer = true;
                    node.timeout(Millis(now));
                }
                // Nothing runs between here and arming the timer.
                next => break next,
            }
        };
        let v = &mut self.viewers[id as usize];
        let Some(node) = v.node.as_mut() else {
            return;
        };
        if self.check_every > 0 && self.events.is_multiple_of(self.check_every) {
            node.check_invariants();
        }
        if let Some(at) = next_timeout {
            let at = at.0.max(now + 1);
            if at != v.timer_at {
                v.timer_at = at;
                self.push(at, Ev::Timer { viewer: id, at });
            }
        }
    }

    fn perform(&mut self, id: u32, action: Action<Modelled>) {
        let now = self.now;
        if self.trace.viewer == Some(id) {
            eprintln!(
                "{now} v{id} does {}",
                format!("{action:?}").chars().take(150).collect::<String>()
            );
        }
        match action {
            Action::Send { peer, msg } => {
                let to = peer.0 as u32;
                if self.viewers[to as usize].node.is_none() {
                    return;
                }
                let size = msg.wire_len(hashes_wire_len) as f64;
                if let PeerMessage::Chunk { data, .. } = &msg {
                    self.viewers[id as usize].record.uploaded += u64::from(data.len);
                    self.viewers[to as usize].record.from_peers += u64::from(data.len);
                }
                let latency = self.viewers[id as usize].latency + self.viewers[to as usize].latency;
                let (depart, downlink) = if size >= 1024.0 {
                    let s = &mut self.viewers[id as usize];
                    let depart = s.up_free.max(now as f64) + size / s.up.max(1e-3);
                    s.up_free = depart;
                    (depart, size as u32)
                } else {
                    (now as f64, 0)
                };
                self.push(
                    (depart + latency).ceil() as u64,
                    Ev::Msg {
                        to,
                        from: id,
                        msg,
                        downlink,
                    },
                );
            }
            Action::FetchFromOrigin {
                block,
                first,
                count,
            } => {
                if self.trace.origin
                    && let Some(node) = self.viewers[id as usize].node.as_ref()
                {
                    eprintln!(
                        "{now} viewer {id} origin {first}+{count}: {} peers={} sources={:?}",
                        node.describe_block(block, Millis(now)),
                        self.viewers[id as usize].peers.len(),
                        node.sources(Millis(now))
                    );
                }
                let size = self.layout.info(block).entry.size;
                let bytes: u64 = (first..first + count)
                    .map(|i| telly_proto::wire::chunk_len(size, usize::from(i)) as u64)
                    .sum();
                self.origin_bytes += bytes;
                let origin_latency = self.scenario.origin_latency_ms as f64;
                let v = &mut self.viewers[id as usize];
                v.record.from_origin += bytes;
                let reach = now as f64 + 2.0 * origin_latency + v.latency;
                let origin = Ev::Origin {
                    to: id,
                    block,
                    first,
                    bytes,
                    through: false,
                };
                self.push(reach.ceil() as u64, origin);
            }
            Action::Load { block } => {
                let size = self.layout.info(block).entry.size;
                if let Some(node) = self.viewers[id as usize].node.as_mut() {
                    node.loaded(block, size, Millis(now));
                }
            }
            Action::Store { .. } => {}
            Action::Deliver { block } => self.delivered(id, block),
            Action::Disconnect { peer, .. } => {
                let to = peer.0 as u32;
                self.viewers[id as usize].forget(to);
                let at = now + self.viewers[id as usize].latency as u64 + 1;
                self.push(at, Ev::Closed { to, from: id });
            }
        }
    }
}
