//! Telly's swarm engine: a sans-IO state machine that decides which chunk to ask
//! of which peer, when to fall back to the origin, and whom to upload to.
//!
//! The engine does no IO, reads no clock and has no randomness of its own: the
//! host feeds it events stamped with its own monotonic [`Millis`] and performs the
//! [`Action`]s it drains (see [`Engine`] for the contract). The same engine runs in
//! the browser (WebRTC data channels, fetch, IndexedDB), in the native node and in
//! the simulator (telly-sim). What it trusts is checked through [`Trust`]; real
//! hosts use [`Signed`] (Ed25519 grants, Merkle leaves, SHA-256).
//!
//! Invariants and transitions are written down in STATE.md beside this file and
//! checked by [`Engine::check_invariants`].

mod coming;
mod config;
mod control;
mod download;
mod engine;
mod invariants;
mod layout;
mod message;
mod origin;
mod peer;
mod plan;
mod receive;
mod summary;
mod time;
mod trust;
mod upload;

pub use config::{Config, Stats};
pub use engine::{Action, Engine, PlayState, TimeoutReason};
pub use layout::{BlockInfo, Layout, LayoutError};
pub use message::PeerMessage;
pub use peer::PeerId;
pub use summary::PeerLimits;
pub use telly_proto::wire::{BlockId, GoodbyeReason};
pub use time::Millis;
pub use trust::{AdmitError, Fetched, OriginError, Signed, Trust};
