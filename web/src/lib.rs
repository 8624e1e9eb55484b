//! Telly's web app: a Leptos CSR viewer.
//!
//! `host` holds the browser-facing machinery (HTTP API client, WebCrypto,
//! IndexedDB store, MSE/EME player); `ui` the pages and components, which read
//! the host's snapshots through signals.

pub mod host;
pub mod ui;

pub use ui::App;
