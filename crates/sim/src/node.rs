//! What the world drives: the Telly engine, or the baseline, behind one interface.

use telly_swarm::{Action, BlockId, Engine, Millis, PeerId, PeerLimits, PeerMessage, PlayState};

use telly_proto::signal::HaveSummary;

use crate::model::Modelled;

/// One simulated viewer's swarm logic, driven like the engine's contract says:
/// inputs, then drain `poll_action`, then `poll_timeout`.
pub trait SimNode: Send {
    fn connected(&mut self, peer: PeerId, now: Millis);
    fn disconnected(&mut self, peer: PeerId, now: Millis);
    fn message(&mut self, peer: PeerId, msg: PeerMessage<Modelled>, now: Millis);
    fn origin(&mut self, block: BlockId, first: u16, bytes: u64, now: Millis);
    fn loaded(&mut self, block: BlockId, bytes: u64, now: Millis);
    fn playhead(&mut self, position_ms: u64, state: PlayState, now: Millis);
    fn timeout(&mut self, now: Millis);
    fn poll_action(&mut self, now: Millis) -> Option<Action<Modelled>>;
    fn poll_timeout(&mut self) -> Option<Millis>;
    fn check_invariants(&self);
    /// The engine's counters, where the node is a Telly engine.
    fn stats(&self, now: Millis) -> Option<telly_swarm::Stats>;
    fn describe_block(&self, _block: BlockId, _now: Millis) -> String {
        String::new()
    }
    /// What a tab running this node would announce to the tracker.
    fn have_summary(&self, _playhead_ms: Option<u64>) -> HaveSummary {
        HaveSummary::default()
    }
    /// Connected peers this node can fetch from (see `Engine::sources`).
    fn sources(&self, _now: Millis) -> Option<usize> {
        None
    }
    /// How many peers to ask the tracker for (see `Engine::peers_to_find`).
    fn peers_to_find(&mut self, links: usize, limits: PeerLimits, _now: Millis) -> usize {
        limits.target.saturating_sub(links)
    }
    /// Whether a full node could let a peer go for a new one (see
    /// `Engine::has_idle_peer`).
    fn has_idle_peer(&self, _now: Millis) -> bool {
        false
    }
    /// Whether it would tell those it dials it is stranded (see
    /// `Engine::stranded`).
    fn stranded(&self, _now: Millis) -> bool {
        false
    }
    /// Lets an idle peer go for a new one (see `Engine::make_room`).
    fn make_room(&mut self, _now: Millis) -> bool {
        false
    }
}

impl SimNode for Engine<Modelled> {
    fn connected(&mut self, peer: PeerId, now: Millis) {
        self.handle_peer_connected(peer, now);
    }
    fn disconnected(&mut self, peer: PeerId, now: Millis) {
        self.handle_peer_disconnected(peer, now);
    }
    fn message(&mut self, peer: PeerId, msg: PeerMessage<Modelled>, now: Millis) {
        self.handle_message(peer, msg, now);
    }
    fn origin(&mut self, block: BlockId, first: u16, bytes: u64, now: Millis) {
        self.handle_origin_data(block, first, bytes, now);
    }
    fn loaded(&mut self, block: BlockId, bytes: u64, now: Millis) {
        self.handle_loaded(block, bytes, now);
    }
    fn playhead(&mut self, position_ms: u64, state: PlayState, now: Millis) {
        self.handle_playhead(position_ms, state, now);
    }
    fn timeout(&mut self, now: Millis) {
        self.handle_timeout(now);
    }
    fn poll_action(&mut self, now: Millis) -> Option<Action<Modelled>> {
        Engine::poll_action(self, now)
    }
    fn poll_timeout(&mut self) -> Option<Millis> {
        Engine::poll_timeout(self)
    }
    fn check_invariants(&self) {
        Engine::check_invariants(self);
    }
    fn stats(&self, now: Millis) -> Option<telly_swarm::Stats> {
        Some(Engine::stats(self, now))
    }
    fn describe_block(&self, block: BlockId, now: Millis) -> String {
        Engine::describe_block(self, block, now)
    }
    fn have_summary(&self, playhead_ms: Option<u64>) -> HaveSummary {
        Engine::have_summary(self, playhead_ms)
    }
    fn sources(&self, now: Millis) -> Option<usize> {
        Engine::sources(self, now)
    }
    fn peers_to_find(&mut self, links: usize, limits: PeerLimits, now: Millis) -> usize {
        Engine::peers_to_find(self, links, limits, now)
    }
    fn has_idle_peer(&self, now: Millis) -> bool {
        Engine::has_idle_peer(self, now)
    }
    fn stranded(&self, now: Millis) -> bool {
        Engine::stranded(self, now)
    }
    fn make_room(&mut self, now: Millis) -> bool {
        Engine::make_room(self, now)
    }
}
