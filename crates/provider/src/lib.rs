//! telly-provider: everything the content provider runs, one module per concern.
//!
//! - [`data_dir`]: the data directory's layout and the provider's signing key;
//! - [`db`]: the SQLite database and its schema migrations;
//! - [`blocks`]: sealed blocks, content-addressed on disk;
//! - [`catalogue`]: titles, manifests, keys, and which blocks belong to which title;
//! - [`accounts`]: viewers, password hashes and sessions;
//! - [`publish`]: packaging a video file into a title (`telly publish`);
//! - [`journal`]: what a publish run wrote, so a killed run can be undone;
//! - [`metrics`]: what the origin sent, per title and block;
//! - [`http`]: `telly serve`, the API of docs/API.md.
//!
//! The `telly` binary (src/main.rs) is a thin command line over these.

pub mod accounts;
pub mod blocks;
pub mod catalogue;
pub mod data_dir;
pub mod db;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod publish;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
