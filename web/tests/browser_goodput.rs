//! Goodput of the swarm path over a real WebRTC data channel, against the raw
//! throughput of the same kind of channel with a bare sender.
//!
//! Both ends live in this one page: two `PeerLink`s connected over loopback
//! candidates, a seeding `Engine<Signed>` on one and a downloading one on the
//! other, every frame through `wire::encode` → the data channel →
//! `wire::decode`, every chunk checked against a real signed manifest's Merkle
//! roots. The driver below stands in for web/src/host/swarm (which needs
//! signalling and a provider): it performs the engines' actions the same way,
//! with an outbox per link over the channel's flow control.
//!
//! The benchmark (`bench_goodput`) is off unless the `bench` feature is on; the
//! small test beside it keeps the driver honest in the ordinary browser suite.
//! Chromium's flags for loopback WebRTC come from web/webdriver.json.

#![cfg(target_arch = "wasm32")]

mod common;

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use common::random_bytes;
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use futures::future::{Either, select};
use gloo_timers::future::TimeoutFuture;
use telly_proto::manifest::{
    BlockEntry, MANIFEST_VERSION, Manifest, SignedManifest, Track, TrackKind,
};
use telly_proto::wire::{self, Message};
use telly_proto::{Grant, KeyId, ProviderPublicKey, Sha256Hash, SignedGrant, merkle};
use telly_swarm::{
    Action, BlockId, Config, Engine, Fetched, Layout, Millis, PeerId, PeerMessage, PlayState,
    Signed,
};
use telly_web::host::rtc::{
    HIGH_WATER_BYTES, LinkEvent, PeerLink, RtcOptions, is_loopback_candidate,
    unlock_loopback_candidates,
};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const PATIENCE_MS: u32 = 10_000;
/// Rates are measured after this much of a run, raw and swarm alike: the
/// channel's and the pipeline's ramp-up are left out of both.
const WARM_UP_MS: f64 = 500.0;
/// Far above what one data channel carries: pacing must not be what limits.
const UNCAPPED: u64 = 1_000_000_000;
/// A failed origin fetch is reported this long after it was asked (as HTTP would).
const ORIGIN_FAILS_AFTER_MS: u64 = 50;

fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .expect("window.performance")
        .now()
}

/// The engines' clock: the page's monotonic milliseconds, as the hub's `clock`.
fn clock() -> Millis {
    Millis(now_ms().max(0.0) as u64)
}

// ------------------------------------------------------------------- links

type Linked = (
    Rc<PeerLink>,
    UnboundedReceiver<LinkEvent>,
    Rc<PeerLink>,
    UnboundedReceiver<LinkEvent>,
);

/// Two fresh links connected over loopback candidates through an in-page
/// "signalling" (as in browser_rtc.rs).
async fn linked() -> Linked {
    unlock_loopback_candidates()
        .await
        .expect("media permission (fake UI) for loopback candidates");
    let options = RtcOptions {
        ice_servers: vec![],
        loopback_only: true,
    };
    let (a, mut a_events) = PeerLink::new(&options).unwrap();
    let (b, mut b_events) = PeerLink::new(&options).unwrap();
    let (a, b) = (Rc::new(a), Rc::new(b));
    let offer = a.create_offer().await.unwrap();
    let answer = b.accept_offer(&offer).await.unwrap();
    a.accept_answer(&answer).await.unwrap();
    let (mut a_open, mut b_open) = (false, false);
    while !(a_open && b_open) {
        let timeout = TimeoutFuture::new(PATIENCE_MS);
        let either = select(select(a_events.next(), b_events.next()), timeout).await;
        let (event, from_a) = match either {
            Either::Left((Either::Left((e, _)), _)) => (e, true),
            Either::Left((Either::Right((e, _)), _)) => (e, false),
            Either::Right(_) => panic!("the channel did not open"),
        };
        let (to, opened) = if from_a {
            (&b, &mut a_open)
        } else {
            (&a, &mut b_open)
        };
        match event.expect("events ended before the channel opened") {
            LinkEvent::LocalCandidate(candidate) => {
                if let Some(c) = &candidate {
                    assert!(is_loopback_candidate(&c.candidate), "{}", c.candidate);
                }
                to.add_candidate(candidate.as_ref()).await.unwrap();
            }
            LinkEvent::Open => *opened = true,
            other => panic!("unexpected {other:?} before the channel opened"),
        }
    }
    (a, a_events, b, b_events)
}

// ------------------------------------------------------------------- title

/// A one-track title of random bytes with a real signed manifest.
struct Title {
    key: SigningKey,
    swarm_id: Sha256Hash,
    layout: Arc<Layout>,
    duration_ms: u64,
    /// Sealed bytes of each block, by block id (the init segment first).
    bytes: Vec<Vec<u8>>,
}

impl Title {
    fn new(blocks: usize, size: usize) -> Self {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).expect("browser randomness");
        let key = SigningKey::from_bytes(&seed);
        let entry = |bytes: &[u8], start_ms: u64, duration_ms: u64| BlockEntry {
            start_ms,
            duration_ms,
            size: bytes.len() as u64,
            sha256: Sha256Hash::of(bytes),
            piece_root: merkle::root(bytes),
        };
        let init = random_bytes(1200);
        let media: Vec<Vec<u8>> = (0..blocks).map(|_| random_bytes(size)).collect();
        let duration_ms = 2000 * blocks as u64;
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            title_id: "goodput".into(),
            title: "Goodput".into(),
            duration_ms,
            key_id: KeyId([1; 16]),
            tracks: vec![Track {
                kind: TrackKind::Video,
                codec: "avc1.64001F".into(),
                mime: "video/mp4".into(),
                bandwidth: 2_000_000,
                width: None,
                height: None,
                init: entry(&init, 0, 0),
                blocks: media
                    .iter()
                    .enumerate()
                    .map(|(i, b)| entry(b, 2000 * i as u64, 2000))
                    .collect(),
            }],
            published_at: 0,
        };
        manifest.validate().unwrap();
        let swarm_id = SignedManifest::sign(&manifest, &key).swarm_id();
        let layout = Arc::new(Layout::new(&manifest).unwrap());
        let mut bytes = vec![init];
        bytes.extend(media);
        assert_eq!(bytes.len(), layout.len());
        Self {
            key,
            swarm_id,
            layout,
            duration_ms,
            bytes,
        }
    }

    fn trust(&self) -> Signed {
        Signed {
            provider_key: ProviderPublicKey(self.key.verifying_key()),
            swarm_id: self.swarm_id,
        }
    }

    /// An engine with uncapped uploads whose horizon covers the whole title;
    /// its grant (signed by the provider's key) names `name`.
    fn engine(&self, name: &str, seed: u64, download: bool) -> Engine<Signed> {
        let unix_ms_at_zero = (js_sys::Date::now() - now_ms()).max(0.0) as u64;
        let config = Config {
            seed,
            unix_ms_at_zero,
            upload_cap: UNCAPPED,
            per_peer_upload_cap: UNCAPPED,
            upload_burst_ms: telly_web::host::swarm::UPLOAD_BURST_MS,
            horizon_ms: self.duration_ms + 10_000,
            // A seeder reused for a second viewer serves from memory.
            resident_blocks: self.layout.len(),
            download,
            ..Config::default()
        };
        let grant = SignedGrant::sign(
            &Grant {
                viewer: name.into(),
                peer_id: name.into(),
                title_id: "goodput".into(),
                swarm_id: self.swarm_id,
                expires_at: js_sys::Date::now() as u64 / 1000 + 3600,
            },
            &self.key,
        );
        Engine::new(
            config,
            Arc::clone(&self.layout),
            self.trust(),
            grant,
            self.swarm_id,
        )
    }

    /// A seeding engine that holds every block in its store (not in memory).
    fn seeder(&self) -> Engine<Signed> {
        let mut engine = self.engine("seeder", 1, false);
        for i in 0..self.bytes.len() {
            engine.handle_held_block(BlockId(i as u32));
        }
        engine
    }

    fn total_bytes(&self) -> u64 {
        self.layout.total_bytes()
    }
}

// ------------------------------------------------------------------ driver

/// One end: an engine, its link to the other end, and an outbox over the
/// channel's flow control (web/src/host/swarm/links.rs does the same).
struct End<'t> {
    title: &'t Title,
    engine: Engine<Signed>,
    link: Rc<PeerLink>,
    events: UnboundedReceiver<LinkEvent>,
    /// The engine's name for the other end.
    other: PeerId,
    /// Blocks read back from the "store" and hashed by WebCrypto, as
    /// web/src/host/swarm/title.rs's `load` does.
    loaded_tx: UnboundedSender<(BlockId, Fetched)>,
    loaded: UnboundedReceiver<(BlockId, Fetched)>,
    outbox: VecDeque<Vec<u8>>,
    outbox_bytes: usize,
    /// What the engine stored, by block.
    stored: Vec<Option<Vec<Arc<[u8]>>>>,
    delivered: usize,
    loads: usize,
    /// Origin fetches asked, and failures still to report `(at, block)`.
    origin_asked: usize,
    origin_failing: Vec<(Millis, BlockId, u16)>,
    problems: Vec<String>,
    frame_bytes_out: u64,
    chunks_requested: u64,
    requests_sent: u64,
    chunks_in: u64,
    first_request: Option<f64>,
    last_deliver: Option<f64>,
    /// Milliseconds spent in each part of the path.
    spent: Spent,
}

/// Milliseconds of the page's thread (or, in a run's report, per MB moved).
#[derive(Debug, Default, Clone, Copy)]
struct Spent {
    /// `to_wire` and `wire::encode`.
    encode: f64,
    /// `wire::decode` and `from_wire`.
    decode: f64,
    /// The engine taking inputs: messages (chunk checks included), timers.
    input: f64,
    /// `poll_action`: where the engine plans requests and serves chunks.
    poll: f64,
    /// Answering `Load`: a copy from the "store", starting WebCrypto's hashes of
    /// its pieces, then `handle_loaded` with them (which checks them against the
    /// signed root).
    load: f64,
    /// `PeerLink::send` and the channel's flow control.
    send: f64,
}

#[cfg_attr(not(feature = "bench"), allow(dead_code))]
impl Spent {
    fn engine(&self) -> f64 {
        self.input + self.poll + self.load
    }

    fn scaled(&self, by: f64) -> Self {
        Self {
            encode: self.encode * by,
            decode: self.decode * by,
            input: self.input * by,
            poll: self.poll * by,
            load: self.load * by,
            send: self.send * by,
        }
    }

    fn plus(&self, o: &Self) -> Self {
        Self {
            encode: self.encode + o.encode,
            decode: self.decode + o.decode,
            input: self.input + o.input,
            poll: self.poll + o.poll,
            load: self.load + o.load,
            send: self.send + o.send,
        }
    }
}

impl<'t> End<'t> {
    fn new(
        title: &'t Title,
        engine: Engine<Signed>,
        (link, events): (Rc<PeerLink>, UnboundedReceiver<LinkEvent>),
        other: PeerId,
    ) -> Self {
        let blocks = engine.layout().len();
        let (loaded_tx, loaded) = mpsc::unbounded();
        Self {
            title,
            engine,
            link,
            events,
            other,
            loaded_tx,
            loaded,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            stored: vec![None; blocks],
            delivered: 0,
            loads: 0,
            origin_asked: 0,
            origin_failing: Vec::new(),
            problems: Vec::new(),
            frame_bytes_out: 0,
            chunks_requested: 0,
            requests_sent: 0,
            chunks_in: 0,
            first_request: None,
            last_deliver: None,
            spent: Spent::default(),
        }
    }

    fn on_event(&mut self, event: LinkEvent, now: Millis) {
        match event {
            LinkEvent::Message(bytes) => {
                let t = now_ms();
                let message = wire::decode(&bytes).expect("engines send frames that decode");
                if matches!(message, Message::Chunk { .. }) {
                    self.chunks_in += 1;
                }
                let msg = PeerMessage::<Signed>::from_wire(message);
                let t1 = now_ms();
                self.spent.decode += t1 - t;
                self.engine.handle_message(self.other, msg, now);
                self.spent.input += now_ms() - t1;
            }
            LinkEvent::Writable => self.flush(),
            LinkEvent::Closed(why) => self.problems.push(format!("link closed: {why}")),
            LinkEvent::LocalCandidate(_) | LinkEvent::Open => {}
        }
    }

    /// Takes every link event already waiting, then fires due timers and late
    /// origin failures.
    fn on_time(&mut self, now: Millis) {
        while let Ok(event) = self.events.try_recv() {
            self.on_event(event, now);
        }
        while let Ok((block, fetched)) = self.loaded.try_recv() {
            self.on_loaded(block, fetched, now);
        }
        let t = now_ms();
        if self.engine.poll_timeout().is_some_and(|at| at <= now) {
            self.engine.handle_timeout(now);
        }
        let due: Vec<(BlockId, u16)> = self
            .origin_failing
            .iter()
            .filter(|(at, ..)| *at <= now)
            .map(|&(_, block, first)| (block, first))
            .collect();
        self.origin_failing.retain(|(at, ..)| *at > now);
        for (block, first) in due {
            self.engine.handle_origin_failed(block, first, now);
        }
        self.spent.input += now_ms() - t;
    }

    fn on_loaded(&mut self, block: BlockId, fetched: Fetched, now: Millis) {
        let t = now_ms();
        assert!(fetched.leaves.is_some(), "WebCrypto hashed the block");
        self.engine.handle_loaded(block, fetched, now);
        self.spent.load += now_ms() - t;
    }

    /// When this end wants to be woken.
    fn wake(&mut self) -> Option<Millis> {
        let failing = self.origin_failing.iter().map(|(at, ..)| *at);
        self.engine.poll_timeout().into_iter().chain(failing).min()
    }

    /// Performs every action the engine has (web/src/host/swarm/title.rs's `drain`).
    fn drain(&mut self, now: Millis) {
        loop {
            let t = now_ms();
            let action = self.engine.poll_action(now);
            self.spent.poll += now_ms() - t;
            let Some(action) = action else {
                break;
            };
            match action {
                Action::Send { peer, msg } => {
                    assert_eq!(peer, self.other, "the engine named a peer it never met");
                    let t = now_ms();
                    let message = msg.to_wire();
                    if let Message::Request { count, .. } = &message {
                        self.first_request.get_or_insert(t);
                        self.requests_sent += 1;
                        self.chunks_requested += u64::from(*count);
                    }
                    let frame = wire::encode(&message).expect("engine messages fit the wire");
                    self.spent.encode += now_ms() - t;
                    self.frame_bytes_out += frame.len() as u64;
                    self.outbox_bytes += frame.len();
                    self.outbox.push_back(frame);
                    self.flush();
                }
                Action::FetchFromOrigin { block, first, .. } => {
                    // No origin here: it fails, as an unreachable one would.
                    self.origin_asked += 1;
                    self.origin_failing
                        .push((now + ORIGIN_FAILS_AFTER_MS, block, first));
                }
                Action::Load { block } => {
                    // The store hands back a copy, as IndexedDB would, and
                    // WebCrypto hashes its pieces while the page goes on.
                    let t = now_ms();
                    let bytes = js_sys::Uint8Array::from(&self.title.bytes[block.0 as usize][..]);
                    let done = self.loaded_tx.clone();
                    wasm_bindgen_futures::spawn_local(async move {
                        let fetched = telly_web::host::crypto::with_leaves(&bytes).await;
                        let _ = done.unbounded_send((block, fetched));
                    });
                    self.loads += 1;
                    self.spent.load += now_ms() - t;
                }
                Action::Store { block, chunks } => self.stored[block.0 as usize] = Some(chunks),
                Action::Deliver { block: _ } => {
                    self.delivered += 1;
                    self.last_deliver = Some(now_ms());
                }
                Action::Disconnect { peer, why } => {
                    self.problems
                        .push(format!("{peer:?} disconnected: {why:?}"));
                }
            }
        }
    }

    /// Sends queued frames while the channel is below its high-water mark.
    fn flush(&mut self) {
        let t = now_ms();
        while self.link.buffered_amount() < HIGH_WATER_BYTES {
            let Some(frame) = self.outbox.pop_front() else {
                break;
            };
            self.outbox_bytes -= frame.len();
            if let Err(e) = self.link.send(&frame) {
                self.problems.push(format!("send failed: {e}"));
                self.outbox.clear();
                self.outbox_bytes = 0;
                break;
            }
        }
        self.spent.send += now_ms() - t;
    }

    /// Bytes waiting to leave: our outbox and the channel's own queue.
    fn queued_bytes(&self) -> u64 {
        self.outbox_bytes as u64 + u64::from(self.link.buffered_amount())
    }
}

/// What one swarm run measured.
#[derive(Debug)]
#[cfg_attr(not(feature = "bench"), allow(dead_code))]
struct SwarmRun {
    /// Verified bytes from the peer over first request → last block, MB/s.
    goodput_mb_s: f64,
    /// The same from [`WARM_UP_MS`] after the first request on: the steady
    /// rate, measured as the raw sender's is.
    steady_mb_s: f64,
    bytes_from_peers: u64,
    seconds: f64,
    origin_fetches: usize,
    /// Blocks the seeder read back from its store (each verified again).
    seeder_loads: usize,
    bytes_uploaded: u64,
    bytes_duplicate: u64,
    frame_bytes: u64,
    requests: u64,
    chunks_requested: u64,
    /// Chunks asked and not yet arrived at the viewer, time-averaged and at most.
    mean_outstanding_chunks: f64,
    max_outstanding_chunks: u64,
    /// The seeder's queued bytes (outbox + channel), time-averaged.
    mean_seeder_queue_kib: f64,
    /// Share of the run in which the seeder had nothing queued.
    seeder_idle_share: f64,
    /// Share of the run in which the page's thread was busy (not awaiting).
    busy_share: f64,
    /// Milliseconds per MB moved, at the seeder and at the viewer.
    seeder_per_mb: Spent,
    viewer_per_mb: Spent,
    /// The viewer's estimate of the seeder's rate at the end, MB/s.
    peer_rate_mb_s: f64,
}

/// Moves the whole title from `seeder` (whose engine names the viewer
/// `viewer_id`) to a fresh downloading engine over a fresh link pair, checks
/// every byte arrived intact, and gives the seeder back.
async fn swarm_run(
    title: &Title,
    seeder: Engine<Signed>,
    viewer_id: PeerId,
) -> (SwarmRun, Engine<Signed>) {
    let (a, a_events, b, b_events) = linked().await;
    let mut seeder = End::new(title, seeder, (a, a_events), viewer_id);
    let mut viewer = End::new(
        title,
        title.engine("viewer", viewer_id.0, true),
        (b, b_events),
        PeerId(1),
    );
    let now = clock();
    // The player asks to play at 0 and waits for its first frame.
    viewer.engine.handle_playhead(0, PlayState::Starting, now);
    seeder.engine.handle_peer_connected(seeder.other, now);
    viewer.engine.handle_peer_connected(viewer.other, now);
    let blocks = title.layout.len();
    let mut playing = false;

    let started = now_ms();
    let mut last_sample = started;
    let (mut outstanding_area, mut queue_area, mut idle_ms, mut waited) = (0.0, 0.0, 0.0, 0.0);
    let mut max_outstanding = 0u64;
    // (page time, verified bytes from peers) once the warm-up is over.
    let mut steady_from: Option<(f64, u64)> = None;
    loop {
        let now = clock();
        seeder.on_time(now);
        viewer.on_time(now);
        // One engine's actions reach the other only through the links, so
        // draining each once per turn is enough.
        seeder.drain(now);
        viewer.drain(now);
        if !playing && viewer.engine.has_block(BlockId(0)) && viewer.engine.has_block(BlockId(1)) {
            // The init segment and the first block are in: the first frame is
            // up, and the player plays from 0 at 1x from now on.
            viewer.engine.handle_playhead(0, PlayState::Playing, now);
            viewer.drain(now);
            playing = true;
        }
        // Time-weighted samples of the pipeline, from the first request on.
        let t = now_ms();
        if let Some(first) = viewer.first_request {
            if steady_from.is_none() && t >= first + WARM_UP_MS {
                steady_from = Some((t, viewer.engine.stats(clock()).bytes_from_peers));
            }
            let dt = t - last_sample;
            let outstanding = viewer.chunks_requested.saturating_sub(viewer.chunks_in);
            max_outstanding = max_outstanding.max(outstanding);
            outstanding_area += dt * outstanding as f64;
            let queued = seeder.queued_bytes();
            queue_area += dt * queued as f64;
            if queued == 0 {
                idle_ms += dt;
            }
        }
        last_sample = t;
        if viewer.delivered == blocks {
            break;
        }
        let problems: Vec<&String> = seeder.problems.iter().chain(&viewer.problems).collect();
        assert!(problems.is_empty(), "the swarm path broke: {problems:?}");
        assert!(
            t - started < 120_000.0,
            "the title did not arrive in 2 minutes: {} of {blocks} blocks",
            viewer.delivered
        );
        let wake = [seeder.wake(), viewer.wake()].into_iter().flatten().min();
        let wait = wake.map_or(250, |at| at.0.saturating_sub(clock().0).clamp(1, 250));
        let before = now_ms();
        let timeout = TimeoutFuture::new(wait as u32);
        let links = select(seeder.events.next(), viewer.events.next());
        let event = match select(select(links, seeder.loaded.next()), timeout).await {
            Either::Left((Either::Left((Either::Left((e, _)), _)), _)) => Some((true, Ok(e))),
            Either::Left((Either::Left((Either::Right((e, _)), _)), _)) => Some((false, Ok(e))),
            Either::Left((Either::Right((loaded, _)), _)) => Some((true, Err(loaded))),
            Either::Right(_) => None,
        };
        waited += now_ms() - before;
        let now = clock();
        match event {
            Some((_, Err(loaded))) => {
                let (block, fetched) = loaded.expect("the seeder keeps its sender");
                seeder.on_loaded(block, fetched, now);
            }
            Some((to_seeder, Ok(event))) => {
                let event = event.expect("a link's events ended");
                if to_seeder {
                    seeder.on_event(event, now);
                } else {
                    viewer.on_event(event, now);
                }
            }
            None => {}
        }
    }
    let end = now_ms();
    let now = clock();
    let stats = viewer.engine.stats(now);
    let first = viewer
        .first_request
        .expect("the viewer asked for something");
    let last = viewer.last_deliver.expect("blocks were delivered");
    // Every stored block is the one the seeder holds, byte for byte.
    for (i, chunks) in viewer.stored.iter().enumerate() {
        let chunks = chunks.as_ref().expect("every block was stored");
        let got: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert!(got == title.bytes[i], "block {i} arrived changed");
    }
    assert_eq!(
        stats.bytes_from_peers + stats.bytes_from_origin,
        title.total_bytes()
    );
    let measured = (end - first).max(1.0);
    let mb = stats.bytes_from_peers as f64 / 1e6;
    let per_mb = 1.0 / mb.max(1e-9);
    let goodput_mb_s = mb / ((last - first) / 1000.0);
    let run = SwarmRun {
        goodput_mb_s,
        // A title that crosses within the warm-up has no steady part.
        steady_mb_s: steady_from.map_or(goodput_mb_s, |(at, bytes)| {
            (stats.bytes_from_peers - bytes) as f64 / 1e6 / ((last - at).max(1.0) / 1000.0)
        }),
        bytes_from_peers: stats.bytes_from_peers,
        seconds: (last - first) / 1000.0,
        origin_fetches: viewer.origin_asked,
        seeder_loads: seeder.loads,
        bytes_uploaded: seeder.engine.stats(now).bytes_uploaded,
        bytes_duplicate: stats.bytes_duplicate,
        frame_bytes: seeder.frame_bytes_out,
        requests: viewer.requests_sent,
        chunks_requested: viewer.chunks_requested,
        mean_outstanding_chunks: outstanding_area / measured,
        max_outstanding_chunks: max_outstanding,
        mean_seeder_queue_kib: queue_area / measured / 1024.0,
        seeder_idle_share: idle_ms / measured,
        busy_share: 1.0 - waited / (end - started),
        seeder_per_mb: seeder.spent.scaled(per_mb),
        viewer_per_mb: viewer.spent.scaled(per_mb),
        peer_rate_mb_s: stats
            .peer_rates
            .values()
            .next()
            .map_or(0.0, |r| *r as f64 / 1e6),
    };
    let mut seeder_engine = seeder.engine;
    seeder_engine.handle_peer_disconnected(viewer_id, now);
    while seeder_engine.poll_action(now).is_some() {}
    (run, seeder_engine)
}

/// A small title crosses the swarm path intact, from the peer alone.
#[wasm_bindgen_test]
async fn a_small_title_crosses_the_swarm_path_from_the_peer() {
    let title = Title::new(3, 256 * 1024);
    let (run, _) = swarm_run(&title, title.seeder(), PeerId(2)).await;
    assert_eq!(run.origin_fetches, 0, "{run:?}");
    assert_eq!(run.bytes_from_peers, title.total_bytes(), "{run:?}");
    assert!(run.bytes_uploaded >= title.total_bytes(), "{run:?}");
    assert_eq!(run.seeder_loads, title.layout.len(), "{run:?}");
}

// --------------------------------------------------------------- benchmark

#[cfg(feature = "bench")]
#[path = "goodput/bench.rs"]
mod bench;
