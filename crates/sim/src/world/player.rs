//! The simulated player: what a viewer's media element does with delivered
//! blocks (start, play across block bounds, stall, seek) and leaving.

use telly_swarm::{BlockId, Millis, PlayState};

use super::shard::Shard;
use super::{Ev, Global, Shared, World};

impl Shared {
    /// The flat id of the media block playing at `position` (the init is id 0).
    fn block_at(&self, position: u64) -> usize {
        1 + (position / self.block_ms()) as usize
    }
}

impl Shard {
    pub(super) fn delivered(&mut self, sh: &Shared, id: u32, block: BlockId) {
        let block_bytes = sh.layout.info(block).entry.size;
        let v = self.viewer_mut(id);
        if !v.delivered[block.0 as usize] {
            v.delivered[block.0 as usize] = true;
            v.record.demand_bytes += block_bytes;
        }
        if matches!(v.state, PlayState::Starting | PlayState::Stalled) {
            self.try_play(sh, id);
        }
    }

    /// Starts or resumes playback when the init and the media of the next
    /// `resume_goal_ms` are there, as the tab's player does (Shaka's
    /// `rebufferingGoal`): resuming on the first frame after a jump that
    /// landed just before a block's end stalled again as soon as that block
    /// ran out.
    pub(super) fn try_play(&mut self, sh: &Shared, id: u32) {
        let now = self.now;
        let position = self.viewer(id).position;
        let goal_end = (position + sh.resume_goal_ms).min(sh.title_ms());
        let needed = sh.block_at(position)..=sh.block_at(goal_end.max(position + 1) - 1);
        let v = self.viewer_mut(id);
        if !(v.delivered[0]
            && needed
                .into_iter()
                .all(|b| v.delivered.get(b).copied().unwrap_or(true)))
        {
            return;
        }
        if v.record.ttff_ms.is_none() {
            v.record.ttff_ms = Some(now - v.record.arrived_ms);
        }
        if let Some(since) = v.stall_since.take() {
            if v.seeking {
                v.record.seek_wait_ms = Some(now - since);
            } else {
                v.record.stall_ms += now - since;
            }
        }
        v.seeking = false;
        v.state = PlayState::Playing;
        v.position_at = now;
        v.player_gen += 1;
        let generation = v.player_gen;
        let position = v.position;
        if let Some(node) = v.node.as_mut() {
            node.playhead(position, PlayState::Playing, Millis(now));
        }
        let to_boundary = sh.block_ms() - position % sh.block_ms();
        self.queue.push(
            now + to_boundary,
            Ev::Boundary {
                viewer: id,
                generation,
            },
        );
        self.drain(sh, id);
    }

    pub(super) fn boundary(&mut self, sh: &Shared, id: u32, generation: u32) {
        let now = self.now;
        let block_ms = sh.block_ms();
        let v = self.viewer_mut(id);
        if v.player_gen != generation || v.state != PlayState::Playing || v.node.is_none() {
            return;
        }
        let position = v.position + (now - v.position_at);
        v.record.played_ms += now - v.position_at;
        v.position = position;
        v.position_at = now;
        if position >= sh.title_ms() {
            v.state = PlayState::Paused;
            self.raise(now + sh.scenario.linger_s * 1000, id, Global::Leave(id));
            return;
        }
        let needed = 1 + (position / block_ms) as usize;
        if v.delivered[needed] {
            self.queue.push(
                now + block_ms,
                Ev::Boundary {
                    viewer: id,
                    generation,
                },
            );
        } else {
            v.state = PlayState::Stalled;
            v.stall_since = Some(now);
            v.record.stalls += 1;
            if sh.trace.stalls
                && let Some(node) = v.node.as_ref()
            {
                // The downlink's own queue: what reaches the viewer now
                // waits this long behind what it is already taking in.
                eprintln!(
                    "{now} viewer {id} stalls: {} downlink_backlog={:.0}ms",
                    node.describe_block(BlockId(needed as u32), Millis(now)),
                    (v.down_free - now as f64).max(0.0)
                );
            }
            if let Some(node) = v.node.as_mut() {
                node.playhead(position, PlayState::Stalled, Millis(now));
            }
            self.drain(sh, id);
        }
    }
}

impl World {
    pub(super) fn seek(&mut self, id: u32) {
        let now = self.now;
        let v = self.viewer_mut(id);
        let Some((_, to)) = v.seek_at else {
            return;
        };
        if v.node.is_none() || v.state != PlayState::Playing {
            return;
        }
        v.record.played_ms += now - v.position_at;
        v.position = to;
        v.position_at = now;
        v.player_gen += 1;
        v.state = PlayState::Stalled;
        v.seeking = true;
        v.stall_since = Some(now);
        if let Some(node) = v.node.as_mut() {
            node.playhead(to, PlayState::Stalled, Millis(now));
        }
        self.drain(id);
        // As a tab does: its peers are near where it was, not where it is.
        self.find_peers(id);
        let shard = self.shared.shard_of(id);
        self.shards[shard].try_play(&self.shared, id);
    }

    pub(super) fn leave(&mut self, id: u32, now: u64) {
        let v = self.viewer_mut(id);
        if v.state == PlayState::Playing {
            v.record.played_ms += now - v.position_at;
        }
        if let Some(since) = v.stall_since.take()
            && !v.seeking
        {
            v.record.stall_ms += now - since;
        }
        if let Some(stats) = v.node.as_ref().and_then(|n| n.stats(Millis(now))) {
            let t = &mut self.engine_totals;
            t.origin_fetches += stats.origin_fetches;
            t.origin_fetches_unheld += stats.origin_fetches_unheld;
            t.origin_fetches_waiting += stats.origin_fetches_waiting;
            t.requests_timed_out += stats.requests_timed_out;
            t.bytes_duplicate += stats.bytes_duplicate;
            t.bytes_from_origin += stats.bytes_from_origin;
            t.planning_passes += stats.planning_passes;
            t.serving_passes += stats.serving_passes;
        }
        self.shared.set_present(id, false);
        let v = self.viewer_mut(id);
        v.node = None;
        v.record.left_ms = now;
        let peers = std::mem::take(&mut v.peers);
        v.dialled.clear();
        for peer in peers {
            self.viewer_mut(peer).forget(id);
            let at = self.shared.reach(id, peer, now as f64, now);
            self.shard_mut(peer)
                .queue
                .push(at, Ev::Closed { to: peer, from: id });
        }
        if let Some(i) = self.present.iter().position(|p| *p == id) {
            self.present.swap_remove(i);
        }
    }
}
