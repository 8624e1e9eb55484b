//! The engine's knobs, and the stats snapshot it reports.

use std::collections::BTreeMap;

use crate::peer::PeerId;

/// Tunables. Rates are bytes per second, times milliseconds.
#[derive(Clone, Debug)]
pub struct Config {
    /// Seeds every random choice the engine makes.
    pub seed: u64,
    /// Blocks whose deadline is nearer than this are fetched by deadline; each
    /// chunk goes to the source that delivers it soonest.
    pub urgent_window_ms: u64,
    /// How far past the playhead the engine prefetches (rarest first).
    pub horizon_ms: u64,
    /// Safety margin kept between a chunk's expected arrival and its deadline:
    /// four times the origin's recent estimate error, between `min_margin_ms`
    /// and `margin_ms` (which holds until the origin has answered once).
    pub margin_ms: u64,
    pub min_margin_ms: u64,
    /// Before the first frame, the first block's deadline is this far from the
    /// moment playback was asked for (time to first frame budget). Long enough
    /// for busy peers to serve a newcomer's first block: at 1.2 s a third of a
    /// premiere's newcomers took theirs from the origin.
    pub startup_budget_ms: u64,
    /// While stalled, the missing block's deadline is this far from the stall.
    pub stall_budget_ms: u64,
    /// After a jump (a seek), the block at the new playhead is due this far
    /// from the jump, and the engine waits as a starting viewer does
    /// (`Engine::beginning`). A viewer who jumps expects a moment's wait; a
    /// stall's 300 ms left the jumper's new peers no time, and in the
    /// 10,000-viewer run jumpers' first blocks were the largest share of the
    /// origin's bytes that some viewer present held. With jumpers stranded
    /// while they wait (`Engine::stranded`), on demand 4.185 → 3.767× and
    /// 4.604 → 4.422× (half-hour stand-ins), 5.051 → 5.010× (10,000), churn
    /// 1.846 → 1.781×, for a seek wait at p95 of 1.2 s instead of 0.75.
    pub seek_budget_ms: u64,
    /// How much media ahead of its playhead the host's player wants before it
    /// starts or resumes (Shaka's `rebufferingGoal`). While the player waits,
    /// every block starting within this of the playhead is due with the one
    /// under it: a jump that lands just before a block's end needs the next
    /// block as soon as the first.
    pub resume_goal_ms: u64,
    /// A block no connected peer holds is fetched from the origin a random
    /// amount earlier than its deadline requires, up to this (few viewers draw
    /// a long lead, most a short one): viewers at the same point then rarely
    /// fetch the same block, and the first one relays it, early enough for the
    /// swarm to spread it before the others need it. Keep it below `horizon_ms`.
    pub origin_spread_ms: u64,
    /// Starting guesses, refined by measurement.
    pub origin_rtt_ms: u64,
    pub origin_rate: u64,
    pub initial_peer_rate: u64,
    pub initial_peer_rtt_ms: u64,
    /// The viewer's upload cap, all peers together, and the cap for any one peer.
    pub upload_cap: u64,
    pub per_peer_upload_cap: u64,
    /// How much an idle uplink may send at once, in milliseconds of either
    /// cap (never less than one chunk): a peer that has been quiet serves a
    /// newcomer's first block at the link's speed, while the average stays
    /// under the cap. Where the host's link is itself the cap (the simulator),
    /// a burst would only queue chunks in the link ahead of needier ones.
    pub upload_burst_ms: u64,
    /// Peers served at once. Fewer, each served faster, finish and relay
    /// blocks sooner: 8 against 12 took a premiere's origin bytes 17–22 %
    /// lower over four seeds (6 did better still, but with half again as
    /// many messages, refusals and re-requests).
    pub upload_slots: usize,
    /// A served peer that asks nothing for this long gives its slot back.
    pub slot_idle_ms: u64,
    /// Chunks a peer may have queued with us; more is a protocol violation.
    pub max_queue_per_peer: usize,
    /// Lower bound of a request's timeout.
    pub min_request_timeout_ms: u64,
    /// Blocks whose bytes the engine keeps for serving; older ones are loaded
    /// back from the host's store on demand.
    pub resident_blocks: usize,
    /// Unix time in ms at `Millis(0)`: grants expire in unix time.
    pub unix_ms_at_zero: u64,
    /// When false the engine neither asks peers nor serves them (origin only).
    pub peer_to_peer: bool,
    /// Announce and serve a block from its first verified chunk (cut-through
    /// relaying); when false, only whole blocks are announced (store-and-forward).
    pub relay_partial: bool,
    /// When false the engine fetches nothing and only serves what it holds: a
    /// tab sharing a title it is not watching.
    pub download: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: 0,
            urgent_window_ms: 8_000,
            horizon_ms: 60_000,
            margin_ms: 1_000,
            min_margin_ms: 400,
            startup_budget_ms: 1_800,
            stall_budget_ms: 300,
            seek_budget_ms: 1_000,
            resume_goal_ms: 1_000,
            origin_spread_ms: 55_000,
            origin_rtt_ms: 80,
            origin_rate: 4_000_000,
            initial_peer_rate: 500_000,
            initial_peer_rtt_ms: 100,
            upload_cap: 1_000_000,
            per_peer_upload_cap: 400_000,
            upload_burst_ms: 0,
            upload_slots: 8,
            slot_idle_ms: 3_000,
            max_queue_per_peer: 96,
            min_request_timeout_ms: 1_500,
            resident_blocks: 24,
            unix_ms_at_zero: 0,
            peer_to_peer: true,
            relay_partial: true,
            download: true,
        }
    }
}

impl Config {
    /// Bytes an upload token bucket filling at `bytes_per_second` holds
    /// (`upload_burst_ms` of it; callers keep at least one chunk).
    pub(crate) fn burst_bytes(&self, bytes_per_second: u64) -> f64 {
        bytes_per_second as f64 / 1000.0 * self.upload_burst_ms as f64
    }
}

/// A snapshot of what the engine has done, for stats panels and reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub bytes_from_peers: u64,
    pub bytes_from_origin: u64,
    pub bytes_uploaded: u64,
    /// Verified bytes that arrived after another copy (end-game, late arrivals).
    pub bytes_duplicate: u64,
    /// Bytes discarded from peers caught sending bad data.
    pub bytes_discarded: u64,
    pub blocks_delivered: u64,
    pub origin_fetches: u64,
    /// Origin fetches of blocks that no connected peer announced.
    pub origin_fetches_unheld: u64,
    /// Origin fetches while starting or stalled.
    pub origin_fetches_waiting: u64,
    pub requests_timed_out: u64,
    /// Planning and serving passes run (the engine's main costs per input).
    pub planning_passes: u64,
    pub serving_passes: u64,
    pub peers_connected: usize,
    pub peers_banned: usize,
    /// Handshakes refused: another swarm, another wire version, a grant that
    /// does not check out (missing, expired, another title, forged).
    pub peers_refused: u64,
    /// Milliseconds of media held contiguously from the playhead.
    pub buffer_ahead_ms: u64,
    /// Estimated download rate from each peer, bytes per second.
    pub peer_rates: BTreeMap<PeerId, u64>,
}
