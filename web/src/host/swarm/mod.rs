//! The tab as a peer: every title it watches or holds joins that title's swarm
//! (telly-signalling for finding peers, WebRTC data channels for blocks), driven
//! by the telly-swarm engine. [`SwarmHub`] is the handle the app keeps; the hub
//! loop (`hub.rs`) owns all state.
//!
//! A viewer without a grant, or whose signalling socket is down, still plays:
//! the engine then takes every block from the origin.

mod faults;
mod hub;
mod links;
mod signal;
pub mod snapshot;
mod source;
mod title;

use std::cell::Cell;
use std::rc::Rc;

use futures::channel::mpsc;
use telly_proto::signal::PeerId as SignalPeer;
use telly_proto::{Manifest, Sha256Hash, SignedManifest};
use web_sys::HtmlVideoElement;

pub use self::faults::Faults;
pub use self::hub::UPLOAD_BURST_MS;
use self::hub::{Hub, HubEvent, Shared, unlock_rtc};
pub use self::snapshot::{RateSample, SnapshotFn, SwarmSnapshot};
pub use self::source::SwarmSource;
use crate::host::api::Api;
use crate::host::rtc::RtcOptions;
use crate::host::store::{BlockStore, DEFAULT_DB_NAME};

/// How long the origin took to answer a request of ours the engine did not
/// make (the manifest's): its first sample of the origin's answer times.
#[derive(Clone, Copy, Debug)]
pub struct OriginTiming {
    pub bytes: u64,
    pub took_ms: u64,
}

/// What a watched title has that a shared one does not.
pub(crate) struct Viewing {
    pub video: HtmlVideoElement,
    pub on_snapshot: SnapshotFn,
    pub manifest_fetch: OriginTiming,
}

/// The upload cap when the viewer has set none: 2 × a 4 Mbit/s title.
pub const DEFAULT_UPLOAD_CAP: u64 = 1_000_000;
/// Where the viewer's upload cap and the titles this tab holds are remembered.
const UPLOAD_CAP_KEY: &str = "telly.upload_cap";
const HELD_TITLES_KEY: &str = "telly.held_titles";

/// The app's handle on the tab's swarm hub; cheap to clone.
#[derive(Clone)]
pub struct SwarmHub {
    events: mpsc::UnboundedSender<HubEvent>,
    upload_cap: Rc<Cell<u64>>,
}

impl std::fmt::Debug for SwarmHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmHub").finish_non_exhaustive()
    }
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

fn random_peer_id() -> SignalPeer {
    let mut bytes = [0u8; 16];
    let filled = web_sys::window()
        .and_then(|w| w.crypto().ok())
        .is_some_and(|c| c.get_random_values_with_u8_array(&mut bytes).is_ok());
    if !filled {
        for byte in &mut bytes {
            *byte = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    SignalPeer::parse(&hex::encode(bytes)).expect("32 lowercase hex digits")
}

thread_local! {
    static THIS_TAB: std::cell::OnceCell<SwarmHub> = const { std::cell::OnceCell::new() };
}

impl SwarmHub {
    /// The tab's one hub on the page's own origin, started on first use.
    pub fn for_this_tab() -> Self {
        THIS_TAB.with(|hub| hub.get_or_init(|| Self::start(Api::same_origin())).clone())
    }

    /// Starts the hub; it fetches the provider's config, opens the block store,
    /// and starts sharing the titles this tab holds blocks of. Events sent
    /// before it is ready wait in its queue.
    pub fn start(api: Api) -> Self {
        let (events, inbox) = mpsc::unbounded();
        let cap = local_storage()
            .and_then(|s| s.get_item(UPLOAD_CAP_KEY).ok().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_UPLOAD_CAP);
        let upload_cap = Rc::new(Cell::new(cap));
        let loop_events = events.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let (config, store) = futures::join!(api.config(), BlockStore::open(DEFAULT_DB_NAME));
            let config = match config {
                Ok(config) => config,
                Err(e) => return tracing::warn!(%e, "no provider config; the swarm is off"),
            };
            let store = store.ok();
            let query = web_sys::window()
                .and_then(|w| w.location().search().ok())
                .unwrap_or_default();
            let faults = if config.test_faults {
                Faults::parse(&query)
            } else {
                Faults::default()
            };
            if faults.any() {
                tracing::warn!(?faults, "test faults on: this tab misbehaves on purpose");
            }
            let rtc = RtcOptions {
                ice_servers: config.network.ice_servers.clone(),
                loopback_only: config.network.loopback_ice,
            };
            let shared = Rc::new(Shared {
                api: api.clone(),
                store,
                peer_id: random_peer_id(),
                rtc_ready: unlock_rtc(&rtc),
                rtc,
                faults,
                signalling_open: Cell::new(false),
                upload_cap: Cell::new(cap),
                titles_shared: Cell::new(0),
                provider_key: config.provider_key,
            });
            let scan = (api.clone(), Rc::clone(&shared), loop_events.clone());
            wasm_bindgen_futures::spawn_local(async move {
                share_held_titles(&scan.0, &scan.1, &scan.2).await;
            });
            Hub::new(shared, &config, loop_events).run(inbox).await;
        });
        Self { events, upload_cap }
    }

    /// Watches a verified title: the returned source answers the player, and
    /// `on_snapshot` hears the swarm's state every second. Dropping the source
    /// stops fetching; the title stays shared while the tab is open.
    pub fn watch(
        &self,
        signed: &SignedManifest,
        manifest: Rc<Manifest>,
        held: Vec<Sha256Hash>,
        video: HtmlVideoElement,
        on_snapshot: SnapshotFn,
        manifest_fetch: OriginTiming,
    ) -> SwarmSource {
        remember_held_title(&manifest.title_id);
        let swarm = signed.swarm_id();
        let _ = self.events.unbounded_send(HubEvent::Add {
            signed: signed.clone(),
            manifest,
            held,
            viewing: Some(Viewing {
                video,
                on_snapshot,
                manifest_fetch,
            }),
        });
        SwarmSource {
            swarm,
            hub: self.events.clone(),
        }
    }

    pub fn upload_cap(&self) -> u64 {
        self.upload_cap.get()
    }

    /// The viewer's upload cap for the whole tab, bytes per second; remembered.
    pub fn set_upload_cap(&self, bytes_per_second: u64) {
        self.upload_cap.set(bytes_per_second);
        if let Some(storage) = local_storage() {
            let _ = storage.set_item(UPLOAD_CAP_KEY, &bytes_per_second.to_string());
        }
        let _ = self
            .events
            .unbounded_send(HubEvent::SetUploadCap(bytes_per_second));
    }
}

fn held_titles() -> Vec<String> {
    local_storage()
        .and_then(|s| s.get_item(HELD_TITLES_KEY).ok().flatten())
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default()
}

fn remember_held_title(id: &str) {
    let mut titles = held_titles();
    if titles.iter().any(|t| t == id) {
        return;
    }
    titles.push(id.to_owned());
    if let (Some(storage), Ok(json)) = (local_storage(), serde_json::to_string(&titles)) {
        let _ = storage.set_item(HELD_TITLES_KEY, &json);
    }
}

/// The title's signed manifest; a provider that can't be reached is asked again
/// with a doubling pause (2 s to 32 s), since sharing is decided only here.
async fn manifest_with_retries(api: &Api, id: &str) -> Option<SignedManifest> {
    let mut pause_ms = 2_000;
    loop {
        match api.manifest(id).await {
            Ok(signed) => return Some(signed),
            Err(crate::host::api::ApiError::Network(why)) if pause_ms <= 32_000 => {
                tracing::debug!(%why, id, "manifest not reached; trying again");
                gloo_timers::future::TimeoutFuture::new(pause_ms).await;
                pause_ms *= 2;
            }
            Err(e) => {
                tracing::info!(%e, id, "not sharing a title whose manifest can't be had");
                return None;
            }
        }
    }
}

/// Joins the swarm of every title this tab has kept blocks of, to share them.
/// Titles that no longer verify, or of which nothing is held, are skipped.
async fn share_held_titles(api: &Api, shared: &Shared, events: &mpsc::UnboundedSender<HubEvent>) {
    let Some(store) = &shared.store else {
        return;
    };
    let titles = held_titles();
    if titles.is_empty() {
        return;
    }
    let Ok(stored) = store.list().await else {
        return;
    };
    let stored: std::collections::HashSet<Sha256Hash> = stored.into_iter().collect();
    for id in titles {
        let Some(signed) = manifest_with_retries(api, &id).await else {
            continue;
        };
        let Ok(manifest) = signed.verify(&shared.provider_key) else {
            continue;
        };
        let held: Vec<Sha256Hash> = manifest
            .tracks
            .iter()
            .flat_map(|t| std::iter::once(&t.init).chain(&t.blocks))
            .map(|b| b.sha256)
            .filter(|sha| stored.contains(sha))
            .collect();
        if held.is_empty() {
            continue;
        }
        let _ = events.unbounded_send(HubEvent::Add {
            signed,
            manifest: Rc::new(manifest),
            held,
            viewing: None,
        });
    }
}
