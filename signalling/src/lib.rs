//! telly-signalling: the signalling server and tracker of a Telly network.
//!
//! Tabs and nodes open one WebSocket, join the swarms they hold grants for, learn
//! which peers to dial, and exchange WebRTC offers, answers and ICE candidates
//! through it. The messages are `telly_proto::signal`; the design, limits and
//! the tracker's peer choice are in this crate's README.md.
//!
//! - [`rooms`]: membership and routing, a pure state machine;
//! - [`tracker`]: which peers a member is offered, pure and seeded;
//! - [`limits`]: per-socket size, rate, strike and heartbeat rules;
//! - [`hub`]: the rooms behind a lock, with one outbox per socket;
//! - [`connection`]: one socket's task, generic over `Sink`/`Stream`.
//!
//! `telly serve` nests [`router`] at `/signal`; the `telly-signalling` binary
//! serves [`app`], which does the same on its own.

pub mod connection;
pub mod hub;
pub mod limits;
pub mod rooms;
pub mod tracker;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::get;
use futures::StreamExt;
use tower_http::trace::TraceLayer;

pub use connection::{Ending, serve_socket};
pub use hub::{Hub, HubStats, SignalConfig};
pub use limits::SocketLimits;
pub use rooms::{Rooms, RoomsConfig};
pub use tracker::TrackerConfig;

/// The path both `telly serve` and the standalone binary serve signalling at.
pub const SIGNAL_PATH: &str = "/signal";

/// The WebSocket endpoint as a router of its own, to nest at [`SIGNAL_PATH`]
/// inside another server's router, whatever that router's state.
pub fn router<S>(hub: Arc<Hub>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/", get(upgrade)).with_state(hub)
}

/// The standalone server: signalling at [`SIGNAL_PATH`], nothing else.
pub fn app(hub: Arc<Hub>) -> Router {
    Router::new()
        .nest(SIGNAL_PATH, router(hub))
        .layer(TraceLayer::new_for_http())
}

async fn upgrade(State(hub): State<Arc<Hub>>, upgrade: WebSocketUpgrade) -> Response {
    let limits = hub.config().limits;
    upgrade
        // Frames past the transport limit are refused while being read, before
        // they are buffered whole; the socket then closes.
        .max_message_size(limits.max_transport_bytes)
        .max_frame_size(limits.max_transport_bytes)
        .on_upgrade(move |socket| async move {
            let (sink, stream) = socket.split();
            serve_socket(hub, sink, stream).await;
        })
}
