//! The player: licence and signed manifest in, verified blocks through
//! IndexedDB, WebCrypto and MSE out, EME Clear Key decrypting in the CDM.
//!
//! It runs as one task outside any UI framework (the host loop). Everything it
//! learns goes out as [`PlayerSnapshot`]s through a callback and onto
//! `window.__telly`; commands come in as events on one channel, so the swarm
//! driver can later feed the same loop.

pub mod eme;
mod engine;
pub mod fetch;
pub mod mse;
pub mod plan;
mod snapshot;

use std::rc::Rc;

use futures::channel::mpsc;
use futures::future::join_all;
use telly_proto::signing::SignatureError;
use telly_proto::{Manifest, ManifestError, Sha256Hash};
use web_sys::HtmlVideoElement;

use self::engine::{Engine, Event, Reporter};
use self::fetch::Pipeline;
pub use self::snapshot::{Phase, PlayerSnapshot, PlayerStats, TrackStats};
use crate::host::api::{Api, ApiError};
use crate::host::crypto::BlockKey;
use crate::host::marks;
use crate::host::source::{BlockSource, OriginSource};
use crate::host::store::{BlockStore, DEFAULT_DB_NAME, StoreError};
use crate::host::swarm::{OriginTiming, SwarmHub, SwarmSnapshot};

/// Why a title cannot be played. The texts are what the viewer reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayerError {
    #[error("Sign in to watch this title.")]
    SignedOut,
    #[error("This title does not exist.")]
    NotFound,
    #[error("No licence for this title: {0}")]
    Licence(String),
    #[error(
        "This title's manifest is not signed by the provider, so it was refused and nothing was played."
    )]
    ManifestNotSigned,
    #[error("This title's manifest was refused: {0}")]
    ManifestInvalid(String),
    #[error("The provider could not be reached: {0}")]
    Provider(String),
    #[error("This browser cannot play this title: {0}")]
    Unsupported(String),
    #[error("The title's keys could not be set up: {0}")]
    Keys(String),
    #[error("Playback failed: {0}")]
    Media(String),
}

impl PlayerError {
    fn from_api(error: ApiError) -> Self {
        match error {
            ApiError::Unauthorized => Self::SignedOut,
            ApiError::NotFound(_) => Self::NotFound,
            other => Self::Provider(other.to_string()),
        }
    }

    pub fn from_manifest(error: ManifestError) -> Self {
        match error {
            ManifestError::Signature(SignatureError::Invalid | SignatureError::Malformed) => {
                Self::ManifestNotSigned
            }
            other => Self::ManifestInvalid(other.to_string()),
        }
    }
}

pub struct PlayerOptions {
    pub title_id: String,
    pub api: Api,
    /// IndexedDB database for sealed blocks.
    pub store_name: String,
    /// Where blocks come from; the origin when `None` (and no swarm).
    pub source: Option<Rc<dyn BlockSource>>,
    /// The tab's swarm: when set (and no `source`), blocks come through it.
    pub swarm: Option<SwarmWatch>,
}

/// What the player needs to watch through the swarm.
pub struct SwarmWatch {
    pub hub: SwarmHub,
    pub on_snapshot: Rc<dyn Fn(&SwarmSnapshot)>,
}

impl PlayerOptions {
    pub fn new(title_id: impl Into<String>) -> Self {
        Self {
            title_id: title_id.into(),
            api: Api::same_origin(),
            store_name: DEFAULT_DB_NAME.into(),
            source: None,
            swarm: None,
        }
    }
}

/// A running player. Dropping it stops the host loop and detaches the media.
pub struct Player {
    events: mpsc::UnboundedSender<Event>,
}

impl std::fmt::Debug for Player {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Player").finish_non_exhaustive()
    }
}

impl Player {
    /// Starts playing `options.title_id` into `video`; `on_snapshot` hears
    /// every state change (from the host loop, never re-entrantly).
    pub fn start(
        video: HtmlVideoElement,
        options: PlayerOptions,
        on_snapshot: impl Fn(&PlayerSnapshot) + 'static,
    ) -> Self {
        let (events, inbox) = mpsc::unbounded();
        let loop_events = events.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let mut reporter = Reporter::new(video.clone(), Box::new(on_snapshot));
            reporter.publish();
            match setup(&video, options, loop_events, &mut reporter).await {
                Ok(engine) => engine.run(inbox, reporter).await,
                Err(error) => {
                    tracing::warn!(%error, "player could not start");
                    reporter.fail(error.to_string());
                }
            }
        });
        Self { events }
    }

    pub fn stop(&self) {
        let _ = self.events.unbounded_send(Event::Stop);
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The tab's block store and what it holds; a store that can't be listed is
/// still used for writing.
async fn open_store(name: &str) -> Result<(BlockStore, StoreListing), StoreError> {
    let store = BlockStore::open(name).await?;
    let stored = store.list().await;
    Ok((store, stored))
}

type StoreListing = Result<Vec<Sha256Hash>, StoreError>;

/// Licence, manifest, keys, buffers and init segments: everything before the
/// first media block. Any failure here is fatal and shown.
async fn setup(
    video: &HtmlVideoElement,
    options: PlayerOptions,
    events: mpsc::UnboundedSender<Event>,
    reporter: &mut Reporter,
) -> Result<Engine, PlayerError> {
    marks::mark("player setup");
    let api = options.api.clone();
    let id = options.title_id.clone();
    // The store is opened and listed while the provider answers: a viewer
    // joining a swarm waits for both before it can say what it holds.
    // The manifest's fetch is timed: the swarm engine's first sample of how
    // the origin keeps to its estimates, before it asks the origin anything.
    let timed_manifest = async {
        let asked = marks::page_ms();
        let signed = api.manifest(&id).await;
        (signed, marks::page_ms() - asked)
    };
    let (config, (signed, manifest_ms), licence, opened) = futures::join!(
        api.config(),
        timed_manifest,
        api.licence(&id),
        open_store(&options.store_name)
    );
    let config = config.map_err(PlayerError::from_api)?;
    let signed = signed.map_err(PlayerError::from_api)?;
    let manifest_fetch = OriginTiming {
        bytes: signed.body.len() as u64,
        took_ms: manifest_ms.max(0.0) as u64,
    };
    let licence = licence.map_err(|e| match e {
        ApiError::Forbidden(why) => PlayerError::Licence(why),
        other => PlayerError::from_api(other),
    })?;

    // Nothing from the manifest is used before its signature checks out.
    let manifest: Manifest = signed
        .verify(&config.provider_key)
        .map_err(PlayerError::from_manifest)?;
    if manifest.title_id != id {
        return Err(PlayerError::ManifestInvalid(format!(
            "it describes title {:?}, not {id:?}",
            manifest.title_id
        )));
    }
    if licence.key_id != manifest.key_id {
        return Err(PlayerError::Licence(
            "the licence is for another key than the manifest's".into(),
        ));
    }
    reporter.manifest_verified(&manifest);
    marks::mark("manifest verified");

    for track in &manifest.tracks {
        if !mse::is_supported(&track.mime) {
            return Err(PlayerError::Unsupported(track.mime.clone()));
        }
    }

    // Playing without IndexedDB (private windows, blocked storage) still works;
    // only storage is lost, and the viewer is told.
    let (store, stored) = match opened {
        Err(e) => {
            reporter.warn(format!("Blocks will not be kept on this device: {e}"));
            (None, Vec::new())
        }
        Ok((store, Err(e))) => {
            reporter.warn(format!("Stored blocks could not be listed: {e}"));
            (Some(store), Vec::new())
        }
        Ok((store, Ok(stored))) => (Some(store), stored),
    };
    let manifest = Rc::new(manifest);
    // Joined before the keys are set up, so that the swarm's links come up
    // while the browser's CDM and media source do.
    let source: Rc<dyn BlockSource> = match (options.source, options.swarm) {
        (Some(source), _) => source,
        (None, Some(watch)) => Rc::new(watch.hub.watch(
            &signed,
            Rc::clone(&manifest),
            stored.clone(),
            video.clone(),
            watch.on_snapshot,
            manifest_fetch,
        )),
        (None, None) => Rc::new(OriginSource::new(api.clone())),
    };
    let key = BlockKey::import(&licence.block_key)
        .await
        .map_err(|e| PlayerError::Keys(e.to_string()))?;
    let pipeline = Rc::new(Pipeline { store, source, key });

    let key_events = events.clone();
    let licence_api = api.clone();
    let licence_id = id.clone();
    let keys = eme::start(
        video,
        &manifest.tracks,
        &manifest.key_id,
        Rc::new(move |message| {
            let api = licence_api.clone();
            let id = licence_id.clone();
            Box::pin(async move {
                api.clear_key(&id, &message)
                    .await
                    .map_err(|e| e.to_string())
            })
        }),
        Rc::new(move |event| {
            let _ = key_events.unbounded_send(Event::Key(event));
        }),
    )
    .await
    .map_err(PlayerError::Keys)?;
    marks::mark("keys set up");

    let media = mse::Attached::new(video)
        .await
        .map_err(|e| PlayerError::Media(e.to_string()))?;
    media
        .source
        .set_duration(manifest.duration_ms as f64 / 1000.0);
    marks::mark("media source open");
    let mut buffers = Vec::new();
    for track in &manifest.tracks {
        buffers.push(media.add_buffer(&track.mime).map_err(|e| match e {
            mse::MseError::Codec(codec) => PlayerError::Unsupported(codec),
            other => PlayerError::Media(other.to_string()),
        })?);
    }

    // Init segments first: a SourceBuffer takes no media before its init segment.
    let inits = join_all(
        manifest
            .tracks
            .iter()
            .map(|t| pipeline.get_hinted(&t.init, stored.contains(&t.init.sha256))),
    )
    .await;
    for ((outcome, buffer), track) in inits.into_iter().zip(&buffers).zip(&manifest.tracks) {
        reporter.count(&outcome, &track.init.sha256);
        let init = outcome.media.map_err(PlayerError::Media)?;
        mse::append(buffer, &init)
            .await
            .map_err(|e| PlayerError::Media(format!("the {:?} init segment: {e}", track.kind)))?;
    }

    marks::mark("init segments appended");
    Ok(Engine::new(
        video.clone(),
        media,
        manifest,
        pipeline,
        buffers,
        stored.into_iter().collect(),
        keys,
        events,
    ))
}
