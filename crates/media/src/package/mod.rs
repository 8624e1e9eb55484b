//! Packaging a title: probe, transcode to clear fragmented MP4 (ffmpeg), protect
//! each fragment with CENC, seal init segments and fragments as blocks, grab a poster.
//!
//! Invariants of what [`package`] returns (those of `telly_proto::manifest`):
//! - each track has one block per fragment, in order, contiguous in time
//!   (a block's duration runs to the next fragment's decode time);
//! - each block and init segment is sealed with a fresh random nonce under
//!   `keys.block_key`, and its `size`, `sha256` and `piece_root` describe the
//!   sealed bytes that were handed to the sink;
//! - no CENC IV repeats under `keys.content_key` within one call (one IV
//!   sequence, started at random, serves all tracks).

mod boxes;
mod cenc;
pub mod ffmpeg;
mod fragment;
mod init;
mod pipeline;

use std::path::{Path, PathBuf};

use telly_proto::hash::Sha256Hash;

pub use boxes::Mp4Error;
pub use cenc::{CLEAR_KEY_SYSTEM_ID, PsshEntry};
pub use pipeline::package;

/// File names inside `work_dir`. After a successful [`package`] call the clear
/// transcode is left there (for inspection and independent checks); the caller
/// removes `work_dir`.
pub const CLEAR_VIDEO_FILE: &str = "clear-video.mp4";
pub const CLEAR_AUDIO_FILE: &str = "clear-audio.mp4";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageOptions {
    /// Tallest output picture; smaller inputs keep their height.
    pub max_height: u32,
    /// Target fragment (and so block) duration.
    pub fragment_ms: u64,
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

impl Default for PackageOptions {
    fn default() -> Self {
        Self {
            max_height: 720,
            fragment_ms: 2000,
            ffmpeg: "ffmpeg".into(),
            ffprobe: "ffprobe".into(),
        }
    }
}

/// Where sealed blocks go. The provider stores them content-addressed.
pub trait BlockSink {
    fn put(&mut self, sha256: &Sha256Hash, sealed: &[u8]) -> std::io::Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Probe,
    Transcode,
    Encrypt,
    Seal,
    Poster,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub stage: Stage,
    /// 0.0..=1.0 within the stage.
    pub fraction: f32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagedTitle {
    pub duration_ms: u64,
    /// Init segment and blocks filled in, with sealed sizes and hashes.
    pub tracks: Vec<telly_proto::manifest::Track>,
    pub poster_jpeg: Vec<u8>,
    /// Wall time spent in ffmpeg's transcode.
    pub transcode_ms: u64,
    /// Wall time in CENC, sealing and hashing (sink included).
    pub package_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is empty (0 bytes)", path.display())]
    Empty { path: PathBuf },
    #[error("{} is not a video ffmpeg can use: {detail}", path.display())]
    NotMedia { path: PathBuf, detail: String },
    #[error("{} has no video stream (audio only, or data)", path.display())]
    NoVideoStream { path: PathBuf },
    #[error("{} was not found: install ffmpeg (it provides ffmpeg and ffprobe)", program.display())]
    ToolMissing { program: PathBuf },
    #[error("ffmpeg's {task} failed ({status}):\n{stderr_tail}")]
    ToolFailed {
        task: &'static str,
        status: String,
        stderr_tail: String,
    },
    #[error("ffmpeg's output cannot be packaged: {0}")]
    Mp4(#[from] Mp4Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("storing a sealed block: {0}")]
    Sink(std::io::Error),
}

/// The protection systems whose `pssh` boxes go into every init segment. Clear Key
/// is what browsers decrypt with today; a Widevine or PlayReady entry (system id
/// and the licence server's data) is one more element here.
pub fn protection_systems(key_id: telly_proto::licence::KeyId) -> Vec<PsshEntry> {
    vec![PsshEntry::clear_key(key_id)]
}

/// Paths of the clear transcode inside `work_dir`.
pub fn clear_outputs(work_dir: &Path, with_audio: bool) -> ffmpeg::ClearOutputs {
    ffmpeg::ClearOutputs {
        video: work_dir.join(CLEAR_VIDEO_FILE),
        audio: with_audio.then(|| work_dir.join(CLEAR_AUDIO_FILE)),
    }
}
