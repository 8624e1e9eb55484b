//! The tab's swarm hub: one task that owns the signalling socket and every
//! title's swarm (the one being watched and those only shared), and feeds them
//! events in time order: signalling messages, link events, origin and store
//! results, the player's wants, and the engines' timers.
//!
//! Invariants:
//! - one signalling socket at a time, opened as soon as there is a title to
//!   join; after it closes the hub reconnects with a doubling back-off (1 s
//!   to 30 s) and re-joins every title, with the grant it holds while that is
//!   not about to expire;
//! - at most one grant request per title is out (`grant_pending`); its answer
//!   joins if the socket is open, and the socket's opening joins otherwise;
//! - after any event the touched engines are drained (`TitleSwarm::drain`),
//!   and the loop sleeps until the earliest engine timeout or the next tick;
//! - a peer's link is accepted into an engine only if the grant in its
//!   handshake names the peer id signalling knows it by.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::{Either, select};
use gloo_timers::future::TimeoutFuture;
use telly_proto::api::{ClientConfig, GrantResponse, SwarmReport};
use telly_proto::signal::{ClientMessage, PeerId as SignalPeer};
use telly_proto::{Manifest, Sha256Hash, SignedManifest};
use telly_swarm::{BlockId, Config, Engine, Fetched, Layout, Millis, PeerLimits, Signed};

mod peering;

use super::faults::Faults;
use super::signal::{SignalEvent, SignalSocket, same_origin_url};
use super::source::SwarmSource;
use super::title::{Reply, TitleSwarm};
use super::{OriginTiming, Viewing};
use crate::host::api::Api;
use crate::host::busy;
use crate::host::marks;
use crate::host::rtc::{LinkEvent, RtcOptions, unlock_loopback_candidates};
use crate::host::store::BlockStore;

const TICK_MS: f64 = 250.0;
const SAMPLE_MS: f64 = 1_000.0;
/// How often the tracker hears what we hold, and we ask for more peers.
const ANNOUNCE_MS: f64 = 5_000.0;
/// How often the provider hears what moved.
const REPORT_MS: f64 = 10_000.0;
const PING_MS: f64 = 15_000.0;
/// No frame from signalling for this long: the socket is taken as dead.
const SIGNAL_SILENCE_MS: f64 = 40_000.0;
const MAX_BACKOFF_MS: f64 = 30_000.0;
/// Links per title this tab aims for (dialled or accepted), and sources among
/// them (peers holding blocks it will need).
const TARGET_PEERS: usize = 8;
/// Links per title, at most. Of these, a tab accepts up to
/// `MAX_LINKS - TARGET_PEERS` that others dialled (followers), keeping the
/// rest for sources it dials itself: filled with followers, it could take no
/// source when its own, further along, leave.
const MAX_LINKS: usize = 24;
/// Renew a grant this long before it expires.
const GRANT_RENEW_S: u64 = 120;
/// A quiet tab may send one second of its upload cap at once: a newcomer's
/// first block then comes at the link's speed, not the cap's.
pub const UPLOAD_BURST_MS: u64 = 1_000;

/// What the whole tab shares: set once, read by every title.
pub struct Shared {
    pub api: Api,
    pub store: Option<BlockStore>,
    pub peer_id: SignalPeer,
    pub rtc: RtcOptions,
    pub faults: Faults,
    pub signalling_open: Cell<bool>,
    pub upload_cap: Cell<u64>,
    pub titles_shared: Cell<usize>,
    pub provider_key: telly_proto::ProviderPublicKey,
    /// Done when this page may gather the ICE candidates its links need
    /// (`unlock_loopback_candidates`); an SDP step that gathers waits for it,
    /// the rest of the hub does not.
    pub rtc_ready: RtcReady,
}

pub type RtcReady = futures::future::Shared<futures::future::LocalBoxFuture<'static, ()>>;

/// Starts unlocking loopback candidates (when the provider's ICE config wants
/// them) and returns its completion, which any number of tasks may await.
pub fn unlock_rtc(rtc: &RtcOptions) -> RtcReady {
    use futures::FutureExt;
    let loopback_only = rtc.loopback_only;
    let ready = async move {
        if loopback_only && let Err(e) = unlock_loopback_candidates().await {
            tracing::warn!(%e, "loopback candidates stay locked; peers may not connect");
        }
        marks::mark("rtc ready");
    }
    .boxed_local()
    .shared();
    wasm_bindgen_futures::spawn_local(ready.clone());
    ready
}

pub enum HubEvent {
    Signal {
        generation: u64,
        event: SignalEvent,
    },
    Link {
        swarm: Sha256Hash,
        peer: SignalPeer,
        engine_id: telly_swarm::PeerId,
        event: LinkEvent,
    },
    /// An SDP step finished: `Ok(Some(sdp))` is ours to send (offer or answer).
    Sdp {
        swarm: Sha256Hash,
        peer: SignalPeer,
        engine_id: telly_swarm::PeerId,
        offer: bool,
        result: Result<Option<String>, String>,
    },
    Origin {
        swarm: Sha256Hash,
        block: BlockId,
        first: u16,
        result: Result<Fetched, String>,
    },
    Loaded {
        swarm: Sha256Hash,
        block: BlockId,
        bytes: Option<Fetched>,
    },
    /// Our grant for signalling, and the one presented to peers (the same
    /// unless a test fault says otherwise).
    Granted {
        swarm: Sha256Hash,
        result: Result<(GrantResponse, telly_proto::SignedGrant), String>,
    },
    /// Start sharing (and, with a video, watching) a verified title.
    Add {
        signed: SignedManifest,
        manifest: Rc<Manifest>,
        held: Vec<Sha256Hash>,
        /// Set when a player watches it (not when a held title is shared).
        viewing: Option<Viewing>,
    },
    /// The player left the title: keep sharing it, stop fetching.
    Unwatch {
        swarm: Sha256Hash,
    },
    Want {
        swarm: Sha256Hash,
        sha: Sha256Hash,
        reply: Reply,
    },
    SetUploadCap(u64),
}

pub struct Hub {
    shared: Rc<Shared>,
    events: mpsc::UnboundedSender<HubEvent>,
    titles: HashMap<Sha256Hash, TitleSwarm>,
    socket: Option<SignalSocket>,
    generation: u64,
    signal_url: Option<String>,
    reconnect_at: f64,
    backoff_ms: f64,
    last_signal_frame: f64,
    next_tick: f64,
    next_sample: f64,
    next_announce: f64,
    next_report: f64,
    next_ping: f64,
    ping_nonce: u64,
    /// Unix ms at `performance.now() == 0`.
    unix_ms_at_zero: u64,
}

/// Whether a grant is within [`GRANT_RENEW_S`] of its expiry (or past it).
fn renewal_due(grant: &GrantResponse) -> bool {
    js_sys::Date::now() as u64 / 1000 + GRANT_RENEW_S >= grant.expires_at
}

pub fn clock() -> Millis {
    Millis(marks::page_ms().max(0.0) as u64)
}

impl Hub {
    pub fn new(
        shared: Rc<Shared>,
        config: &ClientConfig,
        events: mpsc::UnboundedSender<HubEvent>,
    ) -> Self {
        let now = clock().0;
        Self {
            signal_url: same_origin_url(&config.network.signal_path),
            shared,
            events,
            titles: HashMap::new(),
            socket: None,
            generation: 0,
            reconnect_at: 0.0,
            backoff_ms: 1_000.0,
            last_signal_frame: 0.0,
            next_tick: 0.0,
            next_sample: 0.0,
            next_announce: 0.0,
            next_report: REPORT_MS,
            next_ping: PING_MS,
            ping_nonce: 0,
            unix_ms_at_zero: (js_sys::Date::now() as u64).saturating_sub(now),
        }
    }

    /// The hub's loop; ends when every sender is gone.
    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<HubEvent>) {
        loop {
            let now = clock();
            let wait = self.next_wake(now).saturating_sub(now.0).clamp(2, 1_000);
            let event = match select(inbox.next(), TimeoutFuture::new(wait as u32)).await {
                Either::Left((Some(event), _)) => Some(event),
                Either::Left((None, _)) => break,
                Either::Right(_) => None,
            };
            let now = clock();
            busy::timed("swarm", || {
                if let Some(event) = event {
                    self.handle(event, now);
                }
                self.on_time(now);
                self.drain_all(now);
            });
        }
        for (_, title) in self.titles.drain() {
            drop(title);
        }
    }

    fn next_wake(&mut self, now: Millis) -> u64 {
        let mut at = self.next_tick as u64;
        for title in self.titles.values_mut() {
            if let Some(t) = title.engine.poll_timeout() {
                at = at.min(t.0);
            }
        }
        at.max(now.0)
    }

    fn drain_all(&mut self, now: Millis) {
        for title in self.titles.values_mut() {
            title.drain(&self.shared, &self.events, now);
        }
    }

    fn on_time(&mut self, now: Millis) {
        for title in self.titles.values_mut() {
            if title.engine.poll_timeout().is_some_and(|t| t <= now) {
                title.engine.handle_timeout(now);
            }
        }
        let ms = now.0 as f64;
        if ms < self.next_tick {
            return;
        }
        self.next_tick = ms + TICK_MS;
        let mut jumped = false;
        for title in self.titles.values_mut() {
            jumped |= title.update_playhead(now);
        }
        // The peers a tab has hold what is near where it was: after a seek
        // it asks for ones near where it is now, not at the next round.
        if jumped {
            self.announce(now);
        }
        self.keep_signalling(ms);
        if ms >= self.next_sample {
            self.next_sample = ms + SAMPLE_MS;
            self.sample(now);
        }
        if ms >= self.next_announce {
            self.next_announce = ms + ANNOUNCE_MS;
            self.announce(now);
            self.renew_grants();
        }
        if ms >= self.next_report {
            self.next_report = ms + REPORT_MS;
            self.report(now);
        }
    }

    fn sample(&mut self, now: Millis) {
        self.shared.titles_shared.set(self.titles.len());
        let mut all = Vec::new();
        for title in self.titles.values_mut() {
            let snapshot = title.sample(&self.shared, now);
            if let Some(callback) = &title.on_snapshot {
                callback(&snapshot);
                publish_debug("__telly_swarm", &snapshot);
            }
            all.push(serde_json::json!({ "title_id": title.title_id, "swarm": snapshot }));
        }
        publish_debug("__telly_shared", &all);
    }

    // ----------------------------------------------------------------- titles

    fn add(
        &mut self,
        signed: SignedManifest,
        manifest: Rc<Manifest>,
        held: Vec<Sha256Hash>,
        viewing: Option<Viewing>,
        now: Millis,
    ) {
        let swarm = signed.swarm_id();
        if !self.titles.contains_key(&swarm) {
            let layout = match Layout::new(&manifest) {
                Ok(layout) => std::sync::Arc::new(layout),
                Err(e) => return tracing::warn!(%e, "a title the swarm cannot carry"),
            };
            let trust = Signed {
                provider_key: self.shared.provider_key,
                swarm_id: swarm,
            };
            let config = Config {
                seed: js_sys::Math::random().to_bits(),
                unix_ms_at_zero: self.unix_ms_at_zero,
                upload_cap: self.shared.upload_cap.get(),
                per_peer_upload_cap: self.shared.upload_cap.get(),
                upload_burst_ms: UPLOAD_BURST_MS,
                download: viewing.is_some(),
                ..Config::default()
            };
            // The grant arrives later; until then no link is made, so the
            // placeholder is never presented.
            let placeholder = telly_proto::SignedGrant {
                body: String::new(),
                signature: telly_proto::signing::SignatureHex(String::new()),
            };
            let mut engine = Engine::new(config, layout, trust, placeholder, swarm);
            if self.signal_url.is_some() {
                engine.handle_joining(now);
            }
            let title = TitleSwarm::new(manifest.title_id.clone(), swarm, engine);
            self.titles.insert(swarm, title);
            self.request_grant(swarm);
            self.spread_upload_cap();
            // Not at the next tick: a starting viewer's peers wait on the socket.
            self.keep_signalling(now.0 as f64);
        }
        let Some(title) = self.titles.get_mut(&swarm) else {
            return;
        };
        for sha in held {
            if let Some(&block) = title.by_sha.get(&sha) {
                title.engine.handle_held_block(block);
            }
        }
        if let Some(viewing) = viewing {
            let OriginTiming { bytes, took_ms } = viewing.manifest_fetch;
            title.engine.handle_origin_sample(bytes, took_ms);
            title.video = Some(viewing.video);
            title.on_snapshot = Some(viewing.on_snapshot);
            title.engine.set_downloading(true);
            title.update_playhead(now);
        }
    }

    /// Joins `swarm` with the grant in hand, or asks for one (whose answer
    /// joins). Used when the socket opens, so a grant fetched while it was
    /// connecting is not fetched again.
    fn join_or_ask(&mut self, swarm: Sha256Hash) {
        let Some(title) = self.titles.get(&swarm) else {
            return;
        };
        if title.grant_pending {
            return;
        }
        match &title.grant {
            Some(grant) if !renewal_due(grant) => self.join(title, grant),
            _ => self.request_grant(swarm),
        }
    }

    /// Asks the provider for a grant for `swarm`, unless one is already on
    /// its way (its answer joins as this one's would).
    fn request_grant(&mut self, swarm: Sha256Hash) {
        let Some(title) = self.titles.get_mut(&swarm) else {
            return;
        };
        if title.grant_pending {
            return;
        }
        title.grant_pending = true;
        let faults = &self.shared.faults;
        let own = title.title_id.clone();
        let for_signalling = faults.grant_of.clone().unwrap_or_else(|| own.clone());
        let for_peers = faults
            .peer_grant_of
            .clone()
            .unwrap_or_else(|| for_signalling.clone());
        let forge = faults.forged_grant;
        let api = self.shared.api.clone();
        let peer_id = self.shared.peer_id.clone();
        let hub = self.events.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let result = async {
                let grant = api.grant(&for_signalling, &peer_id).await?;
                let mut presented = if for_peers == for_signalling {
                    grant.grant.clone()
                } else {
                    api.grant(&for_peers, &peer_id).await?.grant
                };
                if forge {
                    // Test peer only: the body no longer matches its signature.
                    presented.body.push(' ');
                }
                Ok::<_, crate::host::api::ApiError>((grant, presented))
            }
            .await
            .map_err(|e| e.to_string());
            let _ = hub.unbounded_send(HubEvent::Granted { swarm, result });
        });
    }

    fn on_granted(
        &mut self,
        swarm: Sha256Hash,
        result: Result<(GrantResponse, telly_proto::SignedGrant), String>,
    ) {
        let Some(title) = self.titles.get_mut(&swarm) else {
            return;
        };
        title.grant_pending = false;
        let (grant, presented) = match result {
            Ok(grants) => grants,
            Err(why) => {
                tracing::warn!(%why, "no grant for a title; not sharing it");
                title.refused = Some(format!("no grant: {why}"));
                title.engine.handle_joined(0, clock());
                return;
            }
        };
        marks::mark("grant");
        title.engine.set_grant(presented);
        title.grant = Some(grant);
        // Without a socket yet, its opening joins with this grant.
        let title = &self.titles[&swarm];
        if let Some(grant) = &title.grant {
            self.join(title, grant);
        }
    }

    fn renew_grants(&mut self) {
        let due: Vec<Sha256Hash> = self
            .titles
            .values()
            .filter(|t| t.grant.as_ref().is_some_and(renewal_due))
            .map(|t| t.swarm_id)
            .collect();
        for swarm in due {
            self.request_grant(swarm);
        }
    }

    /// The viewer's cap is for the whole tab: split among the titles shared.
    fn spread_upload_cap(&mut self) {
        let share = self.shared.upload_cap.get() / self.titles.len().max(1) as u64;
        for title in self.titles.values_mut() {
            title.engine.set_upload_cap(share);
        }
    }

    fn announce(&mut self, now: Millis) {
        let mut messages = Vec::new();
        for title in self.titles.values_mut() {
            if !title.joined {
                continue;
            }
            messages.push(ClientMessage::Have {
                swarm_id: title.swarm_id,
                have: title.have_summary(),
            });
            // A tab far into a title is everyone's source while its own
            // sources, further along, finish and leave: the engine counts
            // those, and with every place taken lets followers go.
            let limits = PeerLimits {
                target: TARGET_PEERS,
                max: MAX_LINKS,
            };
            let links = title.links.by_peer.len();
            let short = title.engine.peers_to_find(links, limits, now) > 0;
            if short && !title.engine.layout().is_empty() {
                let exclude = title.links.by_peer.keys().take(64).cloned().collect();
                messages.push(ClientMessage::FindPeers {
                    swarm_id: title.swarm_id,
                    exclude,
                });
            }
        }
        for message in messages {
            self.signal(&message);
        }
    }

    fn report(&mut self, now: Millis) {
        for title in self.titles.values_mut() {
            let stats = title.engine.stats(now);
            let report = SwarmReport {
                bytes_from_peers: stats.bytes_from_peers - title.reported.from_peers,
                bytes_from_origin: stats.bytes_from_origin - title.reported.from_origin,
                bytes_uploaded: stats.bytes_uploaded - title.reported.uploaded,
            };
            if report.bytes_from_peers + report.bytes_from_origin + report.bytes_uploaded == 0 {
                continue;
            }
            title.reported.from_peers = stats.bytes_from_peers;
            title.reported.from_origin = stats.bytes_from_origin;
            title.reported.uploaded = stats.bytes_uploaded;
            let api = self.shared.api.clone();
            let id = title.title_id.clone();
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(e) = api.report(&id, &report).await {
                    tracing::debug!(%e, "a swarm report was not taken");
                }
            });
        }
    }

    fn handle(&mut self, event: HubEvent, now: Millis) {
        match event {
            HubEvent::Signal { generation, event } => {
                if generation == self.generation {
                    self.on_signal(event, now);
                }
            }
            HubEvent::Link {
                swarm,
                peer,
                engine_id,
                event,
            } => self.on_link(swarm, peer, engine_id, event, now),
            HubEvent::Sdp {
                swarm,
                peer,
                engine_id,
                offer,
                result,
            } => self.on_sdp(swarm, peer, engine_id, offer, result, now),
            HubEvent::Origin {
                swarm,
                block,
                first,
                result,
            } => {
                if let Some(title) = self.titles.get_mut(&swarm) {
                    title.on_origin(block, first, result, now);
                }
            }
            HubEvent::Loaded {
                swarm,
                block,
                bytes,
            } => {
                if let Some(title) = self.titles.get_mut(&swarm) {
                    match bytes {
                        Some(bytes) => title.engine.handle_loaded(block, bytes, now),
                        None => title.engine.handle_load_failed(block, now),
                    }
                }
            }
            HubEvent::Granted { swarm, result } => self.on_granted(swarm, result),
            HubEvent::Add {
                signed,
                manifest,
                held,
                viewing,
            } => self.add(signed, manifest, held, viewing, now),
            HubEvent::Unwatch { swarm } => {
                if let Some(title) = self.titles.get_mut(&swarm) {
                    title.video = None;
                    title.on_snapshot = None;
                    title.engine.set_downloading(false);
                    let layout = std::sync::Arc::clone(title.engine.layout());
                    for (block, waiters) in title.waiters.drain() {
                        let sha = layout.info(block).entry.sha256;
                        for reply in waiters {
                            let _ = reply.send(Err(SwarmSource::error(sha, "the player left")));
                        }
                    }
                }
            }
            HubEvent::Want { swarm, sha, reply } => match self.titles.get_mut(&swarm) {
                Some(title) => title.want(&self.shared, &sha, reply, now),
                None => {
                    let _ = reply.send(Err(SwarmSource::error(
                        sha,
                        "this title is not in the swarm",
                    )));
                }
            },
            HubEvent::SetUploadCap(cap) => {
                self.shared.upload_cap.set(cap);
                self.spread_upload_cap();
            }
        }
    }
}

/// Publishes the watched title's swarm as `window.__telly_swarm`, and every
/// shared title's as `window.__telly_shared` (for end-to-end tests).
fn publish_debug(name: &str, value: &impl serde::Serialize) {
    let Ok(json) = serde_json::to_string(value) else {
        return;
    };
    let (Some(window), Ok(value)) = (web_sys::window(), js_sys::JSON::parse(&json)) else {
        return;
    };
    let _ = js_sys::Reflect::set(&window, &name.into(), &value);
}
