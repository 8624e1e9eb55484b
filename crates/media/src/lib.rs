//! telly-media: Telly's content pipeline.
//!
//! - [`seal`] (native and wasm32, no IO): sealing and opening blocks with AES-256-GCM.
//! - [`package`] (native only): ffmpeg transcode to fragmented MP4, Common
//!   Encryption (`cenc`) per fragment, sealing into blocks, and a poster frame.
//!
//! The interface agreed with telly-provider is in this crate's `INTERFACE.md`.

pub mod seal;

#[cfg(not(target_arch = "wasm32"))]
pub mod package;
