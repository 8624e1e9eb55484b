//! The browser host: everything that touches browser APIs, and nothing that
//! knows about the UI framework. The UI reads snapshots and calls in.

pub mod api;
pub mod busy;
pub mod crypto;
pub mod events;
pub mod marks;
pub mod player;
pub mod rtc;
pub mod source;
pub mod store;
pub mod swarm;
