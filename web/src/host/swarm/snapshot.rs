//! What the swarm driver shows the outside world: the live stats panel renders
//! it, and it is published as `window.__telly.swarm` for end-to-end tests (field
//! names are part of that contract).

use std::rc::Rc;

use serde::Serialize;

/// Who hears a title's snapshot every second.
pub type SnapshotFn = Rc<dyn Fn(&SwarmSnapshot)>;

/// How many one-second samples the live plot keeps (the last five minutes).
pub const HISTORY_SAMPLES: usize = 300;

/// One second of traffic for the title being watched, bytes per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct RateSample {
    /// Milliseconds since the page loaded (`performance.now()`), at the sample's end.
    pub at_ms: f64,
    pub from_peers_bps: f64,
    pub from_origin_bps: f64,
    pub uploaded_bps: f64,
}

/// The swarm of one title, as this tab sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SwarmSnapshot {
    /// This tab's peer id (hex), the one its grants name.
    pub peer_id: String,
    /// Signalling accepted our join and the swarm runs.
    pub joined: bool,
    /// Why signalling (or the grant endpoint) refused us, if it did.
    pub refused: Option<String>,
    /// The signalling socket is open.
    pub signalling_connected: bool,
    /// Peers whose handshake checked out (data flows).
    pub peers: usize,
    /// Links being set up (offer/answer, ICE, handshake).
    pub connecting: usize,
    /// Peers dropped for bad data or a bad grant, never asked again.
    pub peers_banned: usize,
    /// Peers whose handshake grant was refused (missing, expired, another title).
    pub peers_refused: u64,
    /// Sealed bytes this title received from peers and from the origin.
    pub bytes_from_peers: u64,
    pub bytes_from_origin: u64,
    /// Sealed bytes this tab sent to peers, for this title.
    pub bytes_uploaded: u64,
    /// Bytes received twice (end-game) or discarded from cheaters.
    pub bytes_wasted: u64,
    /// Share of received bytes that came from peers, 0–1.
    pub peer_share: f64,
    /// Current rates over the last second, bytes per second.
    pub download_bps: f64,
    pub upload_bps: f64,
    /// The upload cap this tab applies, all titles together, bytes per second.
    pub upload_cap_bps: u64,
    /// Titles this tab shares (held blocks and a grant), this one included.
    pub titles_shared: usize,
    /// The last [`HISTORY_SAMPLES`] seconds, oldest first.
    pub history: Vec<RateSample>,
    /// The blocks the player waits for, each as the engine sees it (one
    /// line of `Engine::describe_block`): to tell why a start or a stall lasts.
    pub waiting_for: Vec<String>,
}
