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
//!
//! # Shards and windows
//!
//! The viewers are split into shards, each with its own event queue, run side
//! by side on threads (a conservative parallel simulation). Nothing one viewer
//! does reaches another sooner than `lookahead` (twice the least access
//! latency, the shortest a message or a closed link takes), so the shards run a
//! window of that length at a time without hearing from each other; what a
//! viewer sends another goes to its shard's outbox, handed over between
//! windows and queued as the next begins. What touches many viewers at once (arrivals, departures, seeks and
//! the tracker) is a global event, run alone between windows at its own time;
//! a window ends at the next one. The run does not depend on how many shards
//! there are: events of one viewer at one moment keep an order fixed by the
//! windows alone (inboxes are queued sorted by time and sender), and events
//! of different viewers in one window touch nothing in common
//! (`tests/scenarios.rs` checks it, record for record).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ScopedJoinHandle;

use telly_proto::manifest::{BlockEntry, MANIFEST_VERSION, Manifest, Track, TrackKind};
use telly_proto::{KeyId, Sha256Hash};
use telly_swarm::{BlockId, Config, Engine, Layout, Millis, PeerMessage, PlayState};

use crate::baseline::Baseline;
use crate::model::{Modelled, ModelledGrant};
use crate::node::SimNode;
use crate::scenario::{Arrival, Scenario};

mod crew;
mod player;
mod queue;
mod shard;
mod tracker;

use crew::Crew;
use queue::Queue;
use shard::Shard;

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
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
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

/// An event of one viewer, in its shard's queue.
enum Ev {
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

    fn viewer(&self) -> u32 {
        match *self {
            Ev::Msg { to, .. } | Ev::Origin { to, .. } | Ev::Closed { to, .. } => to,
            Ev::Timer { viewer, .. } | Ev::Boundary { viewer, .. } => viewer,
        }
    }
}

/// An event that touches more than one viewer or the tracker: run between
/// windows, alone.
enum Global {
    Arrive(u32),
    Leave(u32),
    Seek(u32),
    /// A Telly viewer's periodic word with the tracker (see `world::tracker`).
    Announce(u32),
    /// A viewer whose peers left asks the tracker for more.
    FindPeers(u32),
    Sample,
}

/// A manifest's size per block: an entry is three numbers and two hashes in
/// hex, about 200 bytes of JSON.
const MANIFEST_BYTES_PER_BLOCK: u64 = 200;

/// What every shard reads and none changes while a window runs.
struct Shared {
    scenario: Scenario,
    strategy: Strategy,
    layout: Arc<Layout>,
    /// Each viewer's access latency, ms.
    latency: Vec<f64>,
    /// Whether each viewer is watching (set only between windows, which the
    /// shards' threads are told of with release and acquire).
    present: Vec<AtomicBool>,
    /// Viewers per shard (the last may hold fewer).
    shard_len: usize,
    /// The least time anything one viewer does takes to reach another.
    lookahead: u64,
    check_every: u64,
    /// Media a waiting player wants ahead of its playhead before it plays:
    /// what the engine is told to expect (`Config::resume_goal_ms`).
    resume_goal_ms: u64,
    trace: Trace,
}

impl Shared {
    fn is_present(&self, viewer: u32) -> bool {
        self.present[viewer as usize].load(Ordering::Relaxed)
    }

    fn set_present(&self, viewer: u32, present: bool) {
        self.present[viewer as usize].store(present, Ordering::Relaxed);
    }

    fn shard_of(&self, viewer: u32) -> usize {
        viewer as usize / self.shard_len
    }

    /// When something `from` sends at `at` (ms, fractional) reaches `to`.
    fn reach(&self, from: u32, to: u32, at: f64, now: u64) -> u64 {
        let latency = self.latency[from as usize] + self.latency[to as usize];
        ((at + latency).ceil() as u64).max(now + self.lookahead)
    }

    fn block_ms(&self) -> u64 {
        self.scenario.block_s * 1000
    }

    fn title_ms(&self) -> u64 {
        self.scenario.blocks() * self.block_ms()
    }
}

/// One run of one strategy over one scenario.
pub struct World {
    shared: Arc<Shared>,
    shards: Vec<Shard>,
    global: Queue<Global>,
    /// Viewers present, in no order (the tracker samples it).
    present: Vec<u32>,
    arrivals: Vec<u32>,
    now: u64,
    rng: Rng,
    /// (time s, cumulative origin bytes, viewers present), every 10 s.
    pub samples: Vec<(f64, u64, usize)>,
    /// Engine counters summed over viewers as they leave.
    pub engine_totals: telly_swarm::Stats,
    global_events: u64,
}

/// Diagnostics to stderr, chosen once from the environment (reading it per event
/// would dominate a 10,000-viewer run): `TELLY_SIM_TRACE_VIEWER=N[,M...]` (these
/// viewers' messages and actions), `TELLY_SIM_TRACE_ORIGIN`, `TELLY_SIM_TRACE_STALLS`,
/// `TELLY_SIM_TRACE_UPLINK` (every chunk a viewer sends, with when its last
/// byte leaves: who serves whom, and how busy each uplink is).
#[derive(Default)]
struct Trace {
    viewers: Vec<u32>,
    origin: bool,
    stalls: bool,
    uplink: bool,
}

impl Trace {
    fn viewer(&self, id: u32) -> bool {
        self.viewers.contains(&id)
    }

    fn from_env() -> Self {
        Self {
            viewers: std::env::var("TELLY_SIM_TRACE_VIEWER")
                .map(|list| {
                    list.split(',')
                        .filter_map(|v| v.trim().parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
            origin: std::env::var_os("TELLY_SIM_TRACE_ORIGIN").is_some(),
            stalls: std::env::var_os("TELLY_SIM_TRACE_STALLS").is_some(),
            uplink: std::env::var_os("TELLY_SIM_TRACE_UPLINK").is_some(),
        }
    }
}

impl World {
    /// A world of `shards` shards (at least one); the run is the same for any
    /// count, and for any number of threads `run` spreads them over.
    pub fn new(scenario: &Scenario, strategy: Strategy, shards: usize) -> Self {
        let layout = layout_for(scenario);
        let mut rng = Rng::new(scenario.seed);
        let bitrate_bytes = scenario.bitrate_kbps as f64 * 125.0;
        let title_ms = scenario.blocks() * scenario.block_s * 1000;
        let mut viewers = Vec::with_capacity(scenario.viewers);
        let mut global = Queue::default();
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
            global.push(arrive, Global::Arrive(id));
        }
        global.push(0, Global::Sample);
        let latency: Vec<f64> = viewers.iter().map(|v| v.latency).collect();
        let shard_len = viewers.len().div_ceil(shards.max(1)).max(1);
        let count = viewers.len().div_ceil(shard_len).max(1);
        let mut shards = Vec::new();
        let mut rest = viewers.into_iter();
        let mut base = 0;
        loop {
            let viewers: Vec<Viewer> = rest.by_ref().take(shard_len).collect();
            if viewers.is_empty() && !shards.is_empty() {
                break;
            }
            let len = viewers.len() as u32;
            shards.push(Shard::new(base, viewers, count));
            base += len;
        }
        Self {
            shared: Arc::new(Shared {
                scenario: scenario.clone(),
                strategy,
                layout,
                present: latency.iter().map(|_| AtomicBool::new(false)).collect(),
                latency,
                shard_len,
                lookahead: (2.0 * scenario.latency_ms.min).floor().max(1.0) as u64,
                check_every: 0,
                resume_goal_ms: Config::default().resume_goal_ms,
                trace: Trace::from_env(),
            }),
            shards,
            global,
            present: Vec::new(),
            arrivals: Vec::new(),
            now: 0,
            rng,
            samples: Vec::new(),
            engine_totals: telly_swarm::Stats::default(),
            global_events: 0,
        }
    }

    pub fn layout(&self) -> &Arc<Layout> {
        &self.shared.layout
    }

    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// Check every engine's invariants every N events of a shard (0: never).
    pub fn set_check_every(&mut self, events: u64) {
        Arc::get_mut(&mut self.shared)
            .expect("set before the run")
            .check_every = events;
    }

    pub fn events(&self) -> u64 {
        self.global_events + self.shards.iter().map(|s| s.events).sum::<u64>()
    }

    pub fn origin_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.origin_bytes).sum()
    }

    /// When the last viewer will be gone, at the latest (for progress bars).
    pub fn horizon_ms(&self) -> u64 {
        let last = self
            .shards
            .iter()
            .flat_map(|s| &s.viewers)
            .map(|v| v.record.arrived_ms)
            .max()
            .unwrap_or(0);
        last + self.shared.title_ms() + self.shared.scenario.linger_s * 1000
    }

    /// The shard viewer `id` lives in.
    fn shard_mut(&mut self, id: u32) -> &mut Shard {
        &mut self.shards[self.shared.shard_of(id)]
    }

    fn viewer(&self, id: u32) -> &Viewer {
        self.shards[self.shared.shard_of(id)].viewer(id)
    }

    fn viewer_mut(&mut self, id: u32) -> &mut Viewer {
        self.shard_mut(id).viewer_mut(id)
    }

    /// Lets viewer `id` act on what it was just told (between windows).
    fn drain(&mut self, id: u32) {
        let shard = self.shared.shard_of(id);
        self.shards[shard].drain(&self.shared, id);
    }

    /// Runs until no event is left on `threads` threads (this one and
    /// helpers); `progress` gets the virtual time now and then.
    pub fn run(&mut self, threads: usize, mut progress: impl FnMut(u64)) {
        let crew = Crew::new(self.shards.len(), threads);
        std::thread::scope(|scope| {
            let helpers: Vec<_> = crew
                .helpers()
                .map(|me| {
                    let shared = Arc::clone(&self.shared);
                    let crew = &crew;
                    scope.spawn(move || crew.serve(me, &shared))
                })
                .collect();
            // Stops the helpers however this thread leaves, a panic included:
            // the scope waits for them.
            let _stop = crew.stop_on_drop();
            self.run_windows(&crew, &helpers, &mut progress);
        });
        let now = self.now;
        for id in 0..self.shared.present.len() as u32 {
            if self.shared.is_present(id) {
                self.leave(id, now);
            }
        }
    }

    /// Windows one after another: the global events at its start, then every
    /// shard's events up to its end, then what they sent each other.
    fn run_windows(
        &mut self,
        crew: &Crew,
        helpers: &[ScopedJoinHandle<'_, ()>],
        progress: &mut dyn FnMut(u64),
    ) {
        let mut reported = 0;
        let mut window = 0;
        loop {
            let local = self.shards.iter().filter_map(|s| s.next_at).min();
            let mailed = self.shards.iter().map(|s| s.outbox_first).min();
            let Some(start) = local
                .into_iter()
                .chain(mailed.filter(|&at| at < u64::MAX))
                .chain(self.global.next_at())
                .min()
            else {
                break;
            };
            self.now = start;
            while let Some((at, ev)) = self.global.pop_before(start + 1) {
                self.now = at;
                for shard in &mut self.shards {
                    shard.now = at;
                }
                self.global_events += 1;
                self.handle_global(ev);
            }
            self.hand_over_mail();
            let end =
                (start + self.shared.lookahead).min(self.global.next_at().unwrap_or(u64::MAX));
            window += 1;
            if helpers.is_empty() {
                for shard in &mut self.shards {
                    shard.run_window(&self.shared, end);
                }
            } else {
                crew.run(&mut self.shards, &self.shared, window, end, helpers);
            }
            self.queue_raised();
            let events = self.events();
            if events / 65_536 != reported {
                reported = events / 65_536;
                progress(end);
            }
        }
    }

    /// Hands each outbox to the inbox of the shard it is for (the vectors
    /// change places, their events stay put).
    fn hand_over_mail(&mut self) {
        let count = self.shards.len();
        for from in 0..count {
            self.shards[from].outbox_first = u64::MAX;
            for to in 0..count {
                let mail = std::mem::take(&mut self.shards[from].outbox[to]);
                let inbox = &mut self.shards[to].inbox[from];
                debug_assert!(inbox.is_empty(), "an inbox is queued every window");
                let spare = std::mem::replace(inbox, mail);
                self.shards[from].outbox[to] = spare;
            }
        }
    }

    /// Puts the global events the shards raised in the global queue, in
    /// (time, viewer) order whatever the shards.
    fn queue_raised(&mut self) {
        let mut raised = Vec::new();
        for shard in &mut self.shards {
            raised.append(&mut shard.raised);
        }
        raised.sort_by_key(|(at, from, _)| (*at, *from));
        for (at, _, ev) in raised {
            self.global.push(at, ev);
        }
    }

    pub fn records(&self) -> Vec<ViewerRecord> {
        self.shards
            .iter()
            .flat_map(|s| &s.viewers)
            .map(|v| v.record.clone())
            .collect()
    }

    fn handle_global(&mut self, ev: Global) {
        let now = self.now;
        match ev {
            Global::Arrive(id) => self.arrive(id),
            Global::Leave(id) => {
                if self.shared.is_present(id) {
                    self.leave(id, now);
                }
            }
            Global::Seek(id) => self.seek(id),
            Global::Announce(id) => self.announce(id),
            Global::FindPeers(id) => {
                if self.viewer(id).peers.len() < self.shared.scenario.peers / 2 {
                    self.find_peers(id);
                }
            }
            Global::Sample => {
                let origin = self.origin_bytes();
                self.samples
                    .push((now as f64 / 1000.0, origin, self.present.len()));
                let more =
                    !self.global.is_empty() || self.shards.iter().any(|s| !s.queue.is_empty());
                if more {
                    self.global.push(now + 10_000, Global::Sample);
                }
            }
        }
    }

    fn arrive(&mut self, id: u32) {
        let node = self.new_node(id);
        let now = self.now;
        self.shared.set_present(id, true);
        let v = self.viewer_mut(id);
        v.node = Some(node);
        v.position_at = now;
        let (leave_at, seek_at) = (v.leave_at, v.seek_at);
        if let Some(at) = leave_at {
            self.global.push(at, Global::Leave(id));
        }
        if let Some((at, _)) = seek_at {
            self.global.push(at, Global::Seek(id));
        }
        if self.shared.strategy != Strategy::OriginOnly {
            self.find_peers(id);
        }
        if matches!(self.shared.strategy, Strategy::Telly { .. }) {
            self.global
                .push(now + tracker::ANNOUNCE_MS, Global::Announce(id));
        }
        self.present.push(id);
        self.arrivals.push(id);
        self.viewer_mut(id)
            .node
            .as_mut()
            .expect("just arrived")
            .playhead(0, PlayState::Starting, Millis(now));
        self.drain(id);
    }

    fn new_node(&mut self, id: u32) -> Box<dyn SimNode> {
        let shared = &self.shared;
        let v = self.viewer(id);
        let upload = (v.up * 1000.0) as u64;
        let scenario = &shared.scenario;
        match shared.strategy {
            Strategy::P2pmlLike => Box::new(Baseline::new(
                shared.layout.clone(),
                upload,
                scenario.seed ^ u64::from(id) << 20,
            )),
            Strategy::Telly { .. } | Strategy::OriginOnly => {
                let knobs = &scenario.engine;
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
                    seed: scenario.seed.wrapping_mul(1_000_003) ^ u64::from(id),
                    upload_cap: upload,
                    per_peer_upload_cap: upload.div_ceil(2).max(1),
                    origin_rtt_ms: scenario.origin_latency_ms * 2,
                    origin_rate: (v.down * 1000.0) as u64,
                    peer_to_peer: shared.strategy != Strategy::OriginOnly,
                    relay_partial: shared.strategy == Strategy::Telly { relay: true },
                    ..Config::default()
                };
                let grant = ModelledGrant {
                    viewer: id,
                    valid: true,
                };
                let mut engine = Engine::new(
                    config,
                    shared.layout.clone(),
                    Modelled,
                    grant,
                    Sha256Hash::of(scenario.name.as_bytes()),
                );
                // The page fetched the manifest from the origin before joining
                // (outside the modelled time, as its licence is), and the tab
                // hands the engine that fetch's timing.
                let manifest_bytes = MANIFEST_BYTES_PER_BLOCK * shared.layout.len() as u64;
                let took = 2.0 * scenario.origin_latency_ms as f64
                    + v.latency
                    + manifest_bytes as f64 / v.down.max(1e-3);
                engine.handle_origin_sample(manifest_bytes, took.ceil() as u64);
                Box::new(engine)
            }
        }
    }
}
