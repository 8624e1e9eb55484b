//! The tracker: which peers a viewer is given when it joins or runs short.
//!
//! Telly's viewers get what Telly's signalling server gives a tab: the same
//! [`telly_signalling::tracker::choose`], ranking candidates by how much of the
//! viewer's next minute of title they hold (from the engine's own have-summary,
//! as a tab announces it), with the tracker's share of each answer random. It looks at a
//! random sample of the viewers present, not all of them: reading every
//! viewer's holdings at each join would cost a 10,000-viewer run more than its
//! viewers do, and a tracker at scale samples too. A viewer with every place
//! taken takes one more only from a stranded viewer (nobody ahead of it,
//! `Engine::stranded`), by letting an idle peer go (`Engine::make_room`), as
//! a full tab does when a stranded tab's offer comes. The baselines keep the
//! simple tracker they were measured with: half the peers among recent arrivals
//! (near the joiner's playhead), half from everyone present.

use telly_proto::signal::{HaveSummary, PeerId as SignalPeer};
use telly_signalling::tracker::{self, TrackerConfig};
use telly_swarm::{Millis, PeerId, PeerLimits, PlayState};

use super::{Global, Strategy, World};

/// Viewers the tracker looks at per answer.
const SAMPLE: usize = 128;

/// How often a Telly viewer asks for more peers while it has fewer sources than
/// the scenario's count of peers, as a tab does at each have-announcement.
pub(super) const ANNOUNCE_MS: u64 = 5_000;

impl World {
    /// Gives `id` peers up to the scenario's count; never full viewers or duplicates.
    pub(super) fn find_peers(&mut self, id: u32) {
        match self.shared.strategy {
            Strategy::Telly { .. } => self.find_useful_peers(id),
            Strategy::OriginOnly | Strategy::P2pmlLike => self.find_nearby_peers(id),
        }
    }

    pub(super) fn announce(&mut self, id: u32) {
        if !self.shared.is_present(id) {
            return;
        }
        self.find_peers(id);
        self.global
            .push(self.now + ANNOUNCE_MS, Global::Announce(id));
    }

    /// Asks for as many sources as the viewer lacks, within its peer limit.
    fn find_useful_peers(&mut self, id: u32) {
        let limits = PeerLimits {
            target: self.shared.scenario.peers,
            max: self.shared.scenario.max_peers,
        };
        let now = Millis(self.now);
        let v = self.viewer_mut(id);
        let links = v.peers.len();
        let Some(node) = v.node.as_mut() else {
            return;
        };
        let room = node.peers_to_find(links, limits, now);
        let stranded = node.stranded(now);
        // Followers it let go leave now, as a tab closes their channels.
        self.drain(id);
        if room == 0 {
            return;
        }
        let mut sample: Vec<u32> = if self.present.len() <= SAMPLE {
            self.present.clone()
        } else {
            (0..SAMPLE)
                .map(|_| self.present[self.rng.below(self.present.len())])
                .collect()
        };
        sample.sort_unstable();
        sample.dedup();
        sample.retain(|&other| {
            self.may_link(id, other)
                && (self.has_place(other) && self.takes_a_follower(other)
                    || stranded && self.may_make_room(other))
        });
        let tab = TrackerConfig::default();
        let me = self.have_summary(id);
        let mut candidates: Vec<(SignalPeer, HaveSummary)> = Vec::with_capacity(sample.len());
        for &other in &sample {
            let summary = self.have_summary(other);
            // A full viewer lets a peer go only for one it is a source to.
            let full = !(self.has_place(other) && self.takes_a_follower(other));
            if full && tracker::usefulness(&summary, &me, tab.lookahead_ms) == 0 {
                continue;
            }
            candidates.push((signal_peer(other), summary));
        }

        let config = TrackerConfig {
            peers_per_answer: room,
            explore_slots: room * tab.explore_slots / tab.peers_per_answer.max(1),
            ..tab
        };
        let chosen: Vec<u32> = tracker::choose(
            &mut self.rng,
            &me,
            candidates.iter().map(|(p, s)| (p, s)),
            &config,
        )
        .into_iter()
        .filter_map(|p| u32::from_str_radix(p.as_str(), 16).ok())
        .collect();
        for other in chosen {
            if self.makes_room_for(other) {
                self.link(id, other);
            }
        }
    }

    /// Whether a viewer with every place taken could let an idle peer go for
    /// one more, as a full tab does when an offer comes (`Engine::make_room`).
    fn may_make_room(&self, other: u32) -> bool {
        let o = self.viewer(other);
        o.node
            .as_ref()
            .is_some_and(|node| node.has_idle_peer(Millis(self.now)))
    }

    /// Lets `other` take one more peer: at once while it has a place,
    /// else by letting an idle peer go. False when it has none to let go.
    fn makes_room_for(&mut self, other: u32) -> bool {
        if self.has_place(other) && self.takes_a_follower(other) {
            return true;
        }
        let now = Millis(self.now);
        let made = self
            .viewer_mut(other)
            .node
            .as_mut()
            .is_some_and(|node| node.make_room(now));
        // The goodbye goes out and the link closes as a tab closes it.
        self.drain(other);
        made
    }

    fn find_nearby_peers(&mut self, id: u32) {
        let want = self.shared.scenario.peers;
        let mut tries = 0;
        while self.viewer(id).peers.len() < want && tries < want * 6 {
            tries += 1;
            let recent = tries % 2 == 0;
            let pool: &[u32] = if recent {
                let n = self.arrivals.len();
                &self.arrivals[n.saturating_sub(4 * want)..]
            } else {
                &self.present
            };
            if pool.is_empty() {
                break;
            }
            let other = pool[self.rng.below(pool.len())];
            if self.may_link(id, other) && self.has_place(other) {
                self.link(id, other);
            }
        }
    }

    fn may_link(&self, id: u32, other: u32) -> bool {
        let o = self.viewer(other);
        other != id
            && o.node.is_some()
            && !self.viewer(id).peers.contains(&other)
            // Not while a goodbye between them is still on its way.
            && !o.peers.contains(&id)
    }

    fn has_place(&self, other: u32) -> bool {
        self.viewer(other).peers.len() < self.shared.scenario.max_peers
    }

    /// Whether `other` accepts one more link it did not ask for. As a tab
    /// does, a viewer keeps `peers` places for peers it asks for itself (its
    /// sources): filled with followers, it could take no source when its own,
    /// further along, leave.
    fn takes_a_follower(&self, other: u32) -> bool {
        let limit = self
            .shared
            .scenario
            .max_peers
            .saturating_sub(self.shared.scenario.peers);
        self.viewer(other).followers() < limit
    }

    fn link(&mut self, id: u32, other: u32) {
        self.viewer_mut(id).peers.push(other);
        self.viewer_mut(id).dialled.push(other);
        self.viewer_mut(other).peers.push(id);
        let now = Millis(self.now);
        for (a, b) in [(id, other), (other, id)] {
            if let Some(node) = self.viewer_mut(a).node.as_mut() {
                node.connected(PeerId(u64::from(b)), now);
            }
        }
        self.drain(other);
    }

    /// What the viewer's tab last announced: its holdings as of the last
    /// announcement period (a tab announces every `ANNOUNCE_MS`; reading them
    /// afresh at every join cost a 10,000-viewer run more than all else),
    /// and its playhead now.
    fn have_summary(&mut self, id: u32) -> HaveSummary {
        let now = self.now;
        let v = self.viewer_mut(id);
        let playhead = if v.state == PlayState::Playing {
            v.position + (now - v.position_at)
        } else {
            v.position
        };
        let Some(node) = v.node.as_ref() else {
            return HaveSummary::default();
        };
        let (at, mut summary) = match v.summary.take() {
            Some((at, summary)) if now < at + ANNOUNCE_MS => (at, summary),
            _ => (now, node.have_summary(None)),
        };
        summary.playhead_ms = Some(playhead);
        v.summary = Some((at, summary.clone()));
        summary
    }
}

fn signal_peer(id: u32) -> SignalPeer {
    SignalPeer::parse(&format!("{id:016x}")).expect("sixteen hex digits make a peer id")
}
