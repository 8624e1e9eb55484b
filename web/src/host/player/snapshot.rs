//! What the player shows the outside world: a snapshot the UI renders and the
//! same data as JSON on `window.__telly` for end-to-end tests.
//!
//! `window.__telly` is `{ "player": PlayerSnapshot, "current_time": f64,
//! "paused": bool, "ready_state": u16 }`, replaced on every tick (4 Hz) and at
//! every phase change. Field names are part of the e2e tests' contract.

use std::collections::BTreeSet;

use serde::Serialize;
use wasm_bindgen::JsValue;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Fetching the licence and manifest, setting up keys and buffers.
    #[default]
    Starting,
    /// The block pipeline runs; the element plays or waits for the viewer.
    Running,
    /// A fatal error: `message` says what.
    Failed,
    /// The player was torn down.
    Stopped,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrackStats {
    pub kind: String,
    pub mime: String,
    /// Blocks the track has in the manifest.
    pub blocks: usize,
    /// Successful appends since the player started (re-appends included).
    pub appended: u32,
    /// Blocks currently in the SourceBuffer.
    pub buffered_blocks: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PlayerStats {
    /// The manifest's signature checked out against the provider's key.
    pub manifest_verified: bool,
    /// "pending", "ready" or "failed": the Clear Key exchange.
    pub keys: String,
    pub tracks: Vec<TrackStats>,
    /// Copies of blocks whose SHA-256 (or size) did not match the manifest.
    pub verify_failures: u32,
    /// Hex hashes of blocks that had a rejected copy.
    pub rejected_blocks: BTreeSet<String>,
    /// Stored copies found unusable and deleted.
    pub corrupt_in_store: u32,
    /// Blocks (init segments included) opened from IndexedDB.
    pub from_store: u32,
    /// Blocks (init segments included) fetched from a source (the origin today).
    pub from_origin: u32,
    /// Sealed bytes received from sources.
    pub origin_bytes: u64,
    /// Blocks of this title held in IndexedDB.
    pub stored_blocks: usize,
    /// Buffered ranges removed to keep the buffers bounded.
    pub evictions: u32,
    /// Appends refused with QuotaExceededError (each followed by an eviction).
    pub quota_errors: u32,
    /// Times the playhead stood still with media under it and decoding was
    /// restarted there (see `plan::reseek_in_place`).
    pub reseeks: u32,
    /// Hex hashes of every block appended to a SourceBuffer.
    pub appended_blocks: BTreeSet<String>,
    /// The last error, fatal or not.
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PlayerSnapshot {
    pub phase: Phase,
    /// The title's name, from the verified manifest.
    pub title: String,
    /// Why the player failed (phase `Failed`).
    pub message: Option<String>,
    /// A non-fatal problem worth showing (a block being refetched, storage full).
    pub warning: Option<String>,
    pub duration_s: f64,
    /// What the element has buffered, seconds.
    pub buffered: Vec<(f64, f64)>,
    /// Where every track's blocks are in IndexedDB, seconds.
    pub stored: Vec<(f64, f64)>,
    pub stats: PlayerStats,
}

#[derive(Serialize)]
struct DebugSurface<'a> {
    player: &'a PlayerSnapshot,
    current_time: f64,
    paused: bool,
    ready_state: u16,
}

/// Publishes `snapshot` as `window.__telly`.
pub fn publish_debug(snapshot: &PlayerSnapshot, video: Option<&web_sys::HtmlVideoElement>) {
    let surface = DebugSurface {
        player: snapshot,
        current_time: video.map(|v| v.current_time()).unwrap_or(0.0),
        paused: video.map(|v| v.paused()).unwrap_or(true),
        ready_state: video.map(|v| v.ready_state()).unwrap_or(0),
    };
    let Ok(json) = serde_json::to_string(&surface) else {
        return;
    };
    let (Some(window), Ok(value)) = (web_sys::window(), js_sys::JSON::parse(&json)) else {
        return;
    };
    let _ = js_sys::Reflect::set(&window, &JsValue::from_str("__telly"), &value);
}
