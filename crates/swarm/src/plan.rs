//! Download planning: which chunk to ask of which peer (when the origin:
//! `origin.rs`).
//!
//! Rules (each has a scenario test in tests/rules.rs, tests/moves.rs or
//! tests/jumps.rs):
//! - Blocks are needed from the playhead to `horizon_ms` past it, plus every init
//!   segment; a block's deadline is when the player reaches it. Until its first
//!   frame, and while its player is behind what it holds
//!   (`Engine::handle_player_buffered`), a viewer looks only `urgent_window_ms`
//!   ahead (tests/starting.rs). A viewer that jumped waits as a starting one
//!   does, with `seek_budget_ms` (`Engine::beginning`, tests/jumps.rs). While
//!   the player waits, blocks starting within `resume_goal_ms` of its
//!   playhead are due with the one under it: it plays only once they are in.
//! - Urgent blocks (deadline within `urgent_window_ms`) go in deadline order; each
//!   chunk goes to the peer expected to deliver it soonest (its measured rate and
//!   queue), if that is before the origin's last chance: the deadline less the
//!   margin and the origin's own estimate. A peer trusted until later would leave
//!   the origin too little time when it falls behind. A chunk already asked
//!   of a peer that now looks too slow moves to one that makes it (cancelled at
//!   the first; a peer that delivered to us lately is judged by its measured
//!   rate, not by our wait, unless it announced the block moments ago and is
//!   probably still receiving it: `Peer::eta_of_asked`); in the title's last urgent
//!   window, and for the block a starting or stalled player waits for, it is
//!   asked of both (end-game). A block with chunks asked of peers is looked at
//!   again when it turns urgent.
//! - A chunk its peer said it began sending (`PeerMessage::Sending`) is waited
//!   for while it can still arrive by its deadline (`Peer::eta_on_wire`), and
//!   never moved to another peer: it arrives whole, so the wait looked like
//!   silence, and moving it wasted the upload already spent on it (in the
//!   scarce-upload scenario 7 GB, against an origin excess of 14 GB).
//! - Other blocks in the horizon are prefetched rarest first, each chunk from the
//!   holder least far ahead of the block (`PREFETCH_LEAD_STEP_MS`), then the one
//!   with the most free pipeline; a block's chunks from a point of the viewer's
//!   own, so that viewers fetching it together get different pieces to trade
//!   (`first_chunk`).
//! - A peer's pipeline holds its bandwidth-delay product (at least two chunks);
//!   urgent requests only by their estimate and `URGENT_PIPELINE_BYTES`, and a
//!   peer's urgent bytes outstanding by what it has delivered so far plus a
//!   chunk (`FRESH_PEER_URGENT_BYTES`): a newcomer's first blocks go to all the
//!   peers that answer, not all to the first.
//! - Prefetch asks only while what its peers (each at most its measured rate)
//!   and the origin are expected to deliver in the next second fits what the
//!   viewer's own link takes in a second (`LINK_BACKLOG_MS`): the link is one
//!   queue, and a flood of prefetch delays the next block and the origin's
//!   last-chance answer behind it.
//! - Chunks no peer can deliver in time go to the origin (`origin.rs`).

use std::cmp::Reverse;
use std::sync::Arc;

use telly_proto::wire::{BlockId, CHUNK_SIZE, MAX_REQUEST_CHUNKS, chunk_len};

use crate::download::ChunkState;
use crate::engine::{Engine, PlayState};
use crate::message::PeerMessage;
use crate::peer::{Inflight, Peer, PeerId, Phase, pipeline_for};
use crate::receive::first_silence_check;
use crate::time::Millis;
use crate::trust::Trust;

/// How often urgent blocks with outstanding chunks are looked at again.
const URGENT_RECHECK_MS: u64 = 250;

/// The soonest a chunk whose peer is close to its limit is looked at again.
const MIN_RECHECK_MS: u64 = 20;

/// The most an urgent request may find already asked of a peer. In bytes,
/// not in chunks of the block asked for: counted in an init segment's one
/// 2 KB chunk, it kept every peer with two chunks on the way from being
/// asked for it, and a newcomer took it from the origin.
const URGENT_PIPELINE_BYTES: u64 = 64 * CHUNK_SIZE as u64;

/// Urgent bytes a peer may have outstanding, for deadlines up to the one at
/// hand, beyond what it has delivered to us so far: a slow start, as TCP's
/// window. Taken on trust at the initial rate, the first peer whose have-map
/// reached a newcomer was asked for its first four blocks at once, and the
/// rest, answering milliseconds later, for none of them; those blocks came
/// from that one busy uplink or the origin. On demand a fifth of the origin's
/// bytes were newcomers' first blocks, each held by all ten of their peers.
const FRESH_PEER_URGENT_BYTES: u64 = CHUNK_SIZE as u64;

/// How long after a peer's `Have` of a block, in the block's playing times,
/// its silence on that block counts as the block still arriving there (a
/// relay announces at its first chunk): it is judged by the wait, not by the
/// rate it delivers other blocks at (`Peer::eta_of_asked`). Its sources may
/// take longer than the block plays: with a window of one playing time, the
/// last chunk asked of the scripted relay in tests/moves.rs stayed there
/// until the window closed. On the premiere's stand-ins, four seeds, 2.776x
/// -> 2.603x at one, 2.610x at two; on demand, three seeds, +1.8 % at one,
/// +0.1 % at two.
const RELAY_WINDOW_BLOCKS: u64 = 2;

/// Prefetch asks, among the holders of a block with room, the one least far
/// ahead of it, in steps of this much of the title (the furthest block each
/// announced, against the block's start), and only then the roomiest. A peer
/// far ahead holds blocks that the viewers just behind it can get from few
/// others, while one level with us is wanted by fewer: on demand each minute's
/// arrivals took a third of their need from the minute before (on the
/// half-hour stand-in, 300 to 600 s), and the front, short of upload, took
/// its own next blocks from the origin at their last chance. On the half-hour
/// stand-ins with seeks, three seeds, 4.658x -> 3.879x, 5.875x -> 4.745x,
/// 5.135x -> 4.759x; without seeks +11.7 and -11.9 %; the premiere -2.6,
/// -0.6, +6.2 %; churn +2.1 %; 12-15 % fewer events (DESIGN.md, "Where
/// prefetch draws from"). Steps of 10 s did less (4.063x and 4.731x with
/// seeks, premiere 2.540x), 40 s (4.020x on seed 2) and 60 s (5.195x on
/// seed 5, one viewer rebuffering).
const PREFETCH_LEAD_STEP_MS: u64 = 20_000;

/// Keeps `first_chunk`'s draw apart from the origin spread's (`origin.rs`),
/// which takes the same seed and block.
const FIRST_CHUNK_SALT: u64 = 0x6A09_E667_F3BC_C908;

/// Prefetch keeps what its peers are expected to deliver within this time,
/// each at its measured rate, under what the viewer's own link takes in that
/// time (the origin's measured rate): the link is one queue for every peer
/// and for the origin. Opening the horizon at its first frame, a viewer asked
/// up to 24 peers for two or more chunks each at once, and at 6-12 Mbit/s
/// the next block's last chunk, and the origin's answer at its last chance,
/// waited 0.4 to 3 s behind them: every stall of the 10,000-viewer run, and
/// 40 on the half-hour stand-in with slow links (DESIGN.md, "The viewer's
/// own link"). Counting whole pipelines instead, which mostly wait in the
/// uploaders' queues, starved prefetch (116x the minimum at 300 ms).
const LINK_BACKLOG_MS: f64 = 1_000.0;

/// Viewers paused by hand keep fetching, but without hurry.
const PAUSED_SLACK_MS: u64 = 10_000;

/// The peers a chunk was asked of (the second in end-game).
type Askers = (PeerId, Option<PeerId>);

/// Requests decided during one planning pass, sent grouped by peer and block.
#[derive(Default)]
pub(crate) struct Batch(Vec<(PeerId, BlockId, u16, Millis, bool)>);

/// Lists one planning pass fills, kept between passes to spare allocations.
#[derive(Default)]
pub(crate) struct PlanScratch {
    /// Whether any peer can be asked (see `eligible`).
    any_eligible: bool,
    /// Eligible peers whose pipeline may still take a chunk, in id order, with
    /// their pipeline figures at hand. Room only shrinks while prefetching, so a
    /// peer left out never had any.
    roomy: Vec<Roomy>,
    prefetch: Vec<(u16, Millis, BlockId)>,
    /// Prefetch choices `(peer, block, chunk, deadline)`, assigned in order.
    assigned: Vec<(PeerId, BlockId, u16, Millis)>,
    batch: Batch,
    chunks: Vec<u16>,
    at_risk: Vec<u16>,
    /// For the block being prefetched, beside `roomy`: whether each peer
    /// holds it, may be asked for it and has room for its shortest chunk.
    /// What may be asked does not change while choosing, so it is read once
    /// per block, not once per chunk and peer (a tenth of a large run's time).
    askable: Vec<bool>,
    /// Bytes prefetch may still ask for in this pass (`LINK_BACKLOG_MS`).
    link_room: u64,
}

struct Roomy {
    id: PeerId,
    bdp: u64,
    /// Mirrors the peer's `inflight_bytes` while prefetching.
    inflight: u64,
}

impl Roomy {
    /// No chunk is bigger than CHUNK_SIZE, so no pipeline is longer than this.
    fn may_take_a_chunk(&self) -> bool {
        pipeline_for(self.bdp, CHUNK_SIZE as u64) >= self.inflight
    }
}

impl PlanScratch {
    fn clear(&mut self) {
        self.any_eligible = false;
        self.roomy.clear();
        self.prefetch.clear();
        self.assigned.clear();
        self.batch.0.clear();
        self.chunks.clear();
        self.at_risk.clear();
        self.askable.clear();
    }
}

impl<T: Trust> Engine<T> {
    pub(crate) fn deadline(&self, block: BlockId, position_ms: u64, now: Millis) -> Millis {
        let ahead = self.layout.deadline_time(block).saturating_sub(position_ms);
        match (self.play, self.wait_budget_ms()) {
            (PlayState::Paused, _) => now + PAUSED_SLACK_MS + ahead,
            // The player plays on only once its goal is in.
            (_, Some(budget)) if ahead < self.config.resume_goal_ms => self.waiting_since + budget,
            (_, Some(budget)) => self.waiting_since + budget + ahead,
            (_, None) => now + ahead,
        }
    }

    pub(crate) fn chunk_bytes(&self, block: BlockId, index: usize) -> u64 {
        chunk_len(self.layout.info(block).entry.size, index) as u64
    }

    pub(crate) fn plan(&mut self, now: Millis) {
        self.plan_wake = Millis::NEVER;
        self.origin_due_first = Millis::NEVER;
        if !self.config.download {
            return;
        }
        let pos = self.position(now);
        // Planning runs after nearly every input: its lists live on between runs.
        let mut scratch = std::mem::take(&mut self.plan_scratch);
        scratch.clear();
        if self.config.peer_to_peer {
            for p in self.peers.values() {
                if p.phase != Phase::Ready {
                    continue;
                }
                if p.backoff_until > now {
                    self.plan_wake = self.plan_wake.min(p.backoff_until);
                    continue;
                }
                scratch.any_eligible = true;
            }
        }
        let layout = Arc::clone(&self.layout);
        // A starting viewer, or one whose player is behind, fetches what its
        // next seconds need and no more: prefetched blocks arriving meanwhile
        // share its link and, in a browser, its main thread with those
        // seconds (8 tabs on 2 cores: a late joiner's first frame took 4-9 s
        // while megabytes of prefetch came in, and once it played, the
        // prefetch that followed held each of its next appends up for 2-4 s).
        let horizon = if self.beginning() || self.player_behind {
            self.config.urgent_window_ms.min(self.config.horizon_ms)
        } else {
            self.config.horizon_ms
        };
        let range = layout.window(pos, horizon);
        // The playhead brings blocks into view with no input to say so: a
        // host that reports only the network (no playhead ticks) and whose
        // peers announced everything at the handshake would otherwise leave
        // the next block unasked until it was late.
        if self.play == PlayState::Playing
            && let Some(&next) = layout.by_time().get(range.end)
        {
            let comes_in = layout
                .deadline_time(next)
                .saturating_sub(pos.saturating_add(horizon));
            self.plan_wake = self.plan_wake.min(now + comes_in.max(1));
        }
        let blocks = layout
            .inits()
            .chain(layout.by_time()[range].iter().copied());
        for block in blocks {
            if self.has_block(block) || layout.is_behind(block, pos) {
                continue;
            }
            let deadline = self.deadline(block, pos, now);
            self.ensure_partial(block);
            let urgent = deadline <= now + self.config.urgent_window_ms;
            let avail = self.avail[block.0 as usize];
            if urgent {
                self.plan_urgent(block, deadline, &mut scratch, now);
            } else if avail == 0 || !scratch.any_eligible {
                // Most passes find the fetch not yet due: that is known from
                // the counts alone, without listing the chunks.
                if !self.fetching_from_origin(block) {
                    let due = self.origin_due(block, deadline, self.unassigned_bytes(block), now);
                    if now < due {
                        self.plan_wake = self.plan_wake.min(due);
                    } else {
                        self.missing_chunks(block, &mut scratch.chunks);
                        self.consider_origin(block, deadline, &scratch.chunks, now);
                    }
                }
            } else {
                let partial = &self.partial[&block];
                if partial.unassigned > 0 {
                    scratch.prefetch.push((avail, deadline, block));
                }
                // The block is looked at again once it is urgent: a peer that
                // went quiet must not hold its chunks past the deadline, nor
                // may chunks no peer took (every holder refused them) wait
                // for an input that never comes (in the title's last minute
                // no block comes into view to wake us).
                if partial.missing > 0 {
                    let urgent_at = deadline - self.config.urgent_window_ms;
                    self.plan_wake = self.plan_wake.min(urgent_at);
                }
            }
        }
        scratch.prefetch.sort_unstable();
        scratch.link_room = self.link_room();
        // Prefetch choices read the peers' have-maps and refusals, which asking
        // does not change: they are all made first, beside the peers themselves
        // (no lookup per block and peer), and the chunks assigned after, in the
        // same order.
        let mut holders = Vec::new();
        for (id, p) in self.eligible(now) {
            let roomy = Roomy {
                id: *id,
                bdp: p.bdp_bytes(),
                inflight: p.inflight_bytes,
            };
            if roomy.may_take_a_chunk() {
                scratch.roomy.push(roomy);
                holders.push(p);
            }
        }
        for i in 0..scratch.prefetch.len() {
            let (_, deadline, block) = scratch.prefetch[i];
            if !self.plan_prefetch(block, deadline, &mut scratch, &mut holders, now) {
                break;
            }
        }
        drop(holders);
        let assigned = std::mem::take(&mut scratch.assigned);
        for &(peer, block, index, deadline) in &assigned {
            self.assign(peer, block, index, deadline, &mut scratch.batch, now);
        }
        scratch.assigned = assigned;
        self.flush(&mut scratch.batch, now);
        self.plan_scratch = scratch;
    }

    /// Bytes prefetch may add before what is expected in the next
    /// `LINK_BACKLOG_MS` (from each peer, at most its measured rate for that
    /// long; from the origin, all it was asked) fills what the viewer's link
    /// takes in that time.
    fn link_room(&self) -> u64 {
        let expected: u64 = self
            .peers
            .values()
            .map(|p| p.inflight_bytes.min((p.rate * LINK_BACKLOG_MS) as u64))
            .sum::<u64>()
            + self.origin_inflight.bytes();
        ((self.origin_rate * LINK_BACKLOG_MS) as u64).saturating_sub(expected)
    }

    /// Peers that may be asked now: handshake done, not backing off.
    fn eligible(&self, now: Millis) -> impl Iterator<Item = (&PeerId, &Peer)> {
        self.peers.iter().filter(move |(_, p)| {
            self.config.peer_to_peer && p.phase == Phase::Ready && p.backoff_until <= now
        })
    }

    fn missing_chunks(&self, block: BlockId, into: &mut Vec<u16>) {
        into.clear();
        into.extend(
            self.partial[&block]
                .chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| matches!(c, ChunkState::Missing))
                .map(|(i, _)| i as u16),
        );
    }

    /// The chunk of `block` this viewer asks for first: a point drawn from the
    /// engine's seed and the block, the rest following in order round the
    /// block. Viewers prefetching a block from its few holders at once (a
    /// premiere's front, each new block) would otherwise all ask for its first
    /// chunk first, get the same piece, and have nothing to pass each other;
    /// BitTorrent starts on a random piece for the same reason.
    fn first_chunk(&self, block: BlockId) -> u16 {
        let chunks = u64::from(self.layout.info(block).chunks.max(1));
        (self.seeded_draw(block, FIRST_CHUNK_SALT) % chunks) as u16
    }

    /// `index`'s place in the order this viewer asks for `block`'s chunks.
    fn chunk_rank(&self, block: BlockId, index: u16) -> u16 {
        let chunks = self.layout.info(block).chunks.max(1);
        (index + chunks - self.first_chunk(block)) % chunks
    }

    fn plan_urgent(
        &mut self,
        block: BlockId,
        deadline: Millis,
        scratch: &mut PlanScratch,
        now: Millis,
    ) {
        scratch.at_risk.clear();
        let chunk_count = self.partial[&block].chunks.len();
        let relay_window = RELAY_WINDOW_BLOCKS * self.layout.info(block).entry.duration_ms;
        // Each pass changes only its own chunk's state.
        for index in 0..chunk_count as u16 {
            let asked: Option<Askers> = match &self.partial[&block].chunks[usize::from(index)] {
                ChunkState::Missing => None,
                ChunkState::Requested { first, second } => Some((*first, *second)),
                _ => continue,
            };
            let len = self.chunk_bytes(block, usize::from(index));
            let limit = self.give_up_at(deadline, len);
            match asked {
                None => match self.best_peer(block, len, (deadline, limit), None, now) {
                    Some(peer) => {
                        // As for a chunk already asked (below): an early
                        // fetch must not be queued ahead of it.
                        self.origin_due_first = self.origin_due_first.min(limit);
                        self.assign(peer, block, index, deadline, &mut scratch.batch, now)
                    }
                    None => scratch.at_risk.push(index),
                },
                Some((first, second)) => {
                    // A chunk its peer has begun sending arrives whole when
                    // its last byte does; until then only the notice shows.
                    let on_wire = [Some(first), second]
                        .into_iter()
                        .flatten()
                        .filter_map(|id| self.peers.get(&id))
                        .filter_map(|p| p.eta_on_wire(block, index))
                        .min();
                    if let Some(eta) = on_wire {
                        if now <= eta && eta <= deadline {
                            self.plan_wake = self.plan_wake.min(eta.max(now + MIN_RECHECK_MS));
                            continue;
                        }
                        // Another peer would start it from nothing: only the
                        // origin, at its last chance, may take it.
                        scratch.at_risk.push(index);
                        continue;
                    }
                    let soonest = [Some(first), second]
                        .into_iter()
                        .flatten()
                        .filter_map(|id| self.peers.get(&id))
                        .map(|p| {
                            let relaying = p.relaying(block, now, relay_window);
                            p.eta_of_asked(now, deadline, relaying)
                        })
                        .min();
                    if let Some(eta) = soonest.filter(|&eta| eta <= limit) {
                        // Waiting makes the estimate slip at least as fast as
                        // the clock: look again before it can cross the limit.
                        // It jumps when the peer stops counting as serving us
                        // (`Peer::eta_of_asked`); the look every
                        // `URGENT_RECHECK_MS` below catches that.
                        let slack = limit.since(eta).max(MIN_RECHECK_MS);
                        self.plan_wake = self.plan_wake.min(now + slack);
                        // If the peer is late after all it goes to the origin
                        // then: an early fetch must not be queued ahead of it.
                        self.origin_due_first = self.origin_due_first.min(limit);
                        continue;
                    }
                    // Too slow where it was asked: moved to a peer that makes
                    // it (in the end-game asked of both), else the origin when
                    // it is due.
                    let helper = if second.is_none() {
                        self.best_peer(block, len, (deadline, limit), Some(first), now)
                    } else {
                        None
                    };
                    match helper {
                        Some(peer) => {
                            if !self.in_end_game(block) && !self.waits_for(deadline) {
                                self.cancel_request(first, block, index);
                            }
                            self.origin_due_first = self.origin_due_first.min(limit);
                            self.assign(peer, block, index, deadline, &mut scratch.batch, now)
                        }
                        None => scratch.at_risk.push(index),
                    }
                }
            }
        }
        // Estimates of peers change as time passes without data, and refusals
        // run out: look again soon while any chunk of an urgent block waits on
        // a peer or might find one. Chunks coming from the origin only wait
        // for its answer: looking every 250 ms at those woke a viewer without
        // peers (the origin-only baseline) eight times per block.
        let any_eligible = scratch.any_eligible;
        if self.partial[&block].chunks.iter().any(|c| match c {
            ChunkState::Requested { .. } => true,
            ChunkState::Missing => any_eligible,
            _ => false,
        }) {
            self.plan_wake = self.plan_wake.min(now + URGENT_RECHECK_MS);
        }
        self.consider_origin(block, deadline, &scratch.at_risk, now);
    }

    /// The title's last urgent window: a chunk too slow in coming is asked of a
    /// second peer while the first keeps it, since nothing after it needs the
    /// upload a duplicate costs; so is the block a starting or stalled player
    /// waits for (`waits_for`: moving those put the median first frame of a
    /// premiere at 1.56 s against 1.17 s). Anywhere else the request moves: a
    /// late estimate is usually a busy uploader, not a lost one, and asking two
    /// at once sent as many duplicate bytes as the origin sent in all (on
    /// demand, 1,000 viewers).
    fn in_end_game(&self, block: BlockId) -> bool {
        self.layout
            .duration_ms()
            .saturating_sub(self.layout.deadline_time(block))
            <= self.config.urgent_window_ms
    }

    /// Whether the player waits for its first frame at a new point: it is
    /// starting, or stalled because the viewer jumped. Both wait with a
    /// budget of their own, not a stall's, and fetch only what that frame
    /// and the seconds after it need.
    pub(crate) fn beginning(&self) -> bool {
        self.play == PlayState::Starting || self.play == PlayState::Stalled && self.jumped
    }

    /// How long after it began waiting the player's block is due, while
    /// starting or stalled.
    pub(crate) fn wait_budget_ms(&self) -> Option<u64> {
        match self.play {
            PlayState::Starting => Some(self.config.startup_budget_ms),
            PlayState::Stalled if self.jumped => Some(self.config.seek_budget_ms),
            PlayState::Stalled => Some(self.config.stall_budget_ms),
            PlayState::Playing | PlayState::Paused => None,
        }
    }

    /// Whether a block due at `deadline` is the one a starting or stalled player
    /// waits for (its first frame, or the end of a stall).
    pub(crate) fn waits_for(&self, deadline: Millis) -> bool {
        self.wait_budget_ms()
            .is_some_and(|budget| deadline <= self.waiting_since + budget)
    }

    /// When a request for `bytes` due at `deadline` tells the uploader we
    /// stop waiting: our give-up, so that an uploader that cannot send by
    /// then rejects rather than spend its upload on a copy we would throw away.
    ///
    /// A starting viewer (or one that jumped: `beginning`) plans the blocks
    /// after its first as if its first frame came at the end of its budget,
    /// the latest it may; but it
    /// comes as soon as the first block is in, and those blocks are then due
    /// that much sooner. Told the lenient deadline, uploaders put a
    /// newcomer's second and third blocks behind other work, and when its
    /// first frame came the newcomer found them late and took them from the
    /// origin. So they are told the soonest the deadline can be, as if the
    /// frame were now, and that itself: it is already earlier than the
    /// viewer's give-up once the frame comes. Less the origin's margin and
    /// answer time too, uploaders turned a newcomer's second block away while
    /// it could still come (on demand, a second block took 6.5 % of the
    /// origin's chunks).
    fn told_give_up(&self, deadline: Millis, bytes: u64, now: Millis) -> Millis {
        let Some(budget) = self.wait_budget_ms().filter(|_| self.beginning()) else {
            return self.give_up_at(deadline, bytes);
        };
        if self.waits_for(deadline) {
            return self.give_up_at(deadline, bytes);
        }
        let first_frame_latest = self.waiting_since + budget;
        deadline - first_frame_latest.since(now)
    }

    /// Bytes of the chunks of `block` that nobody is fetching.
    fn unassigned_bytes(&self, block: BlockId) -> u64 {
        let partial = &self.partial[&block];
        let last = partial.chunks.len() - 1;
        let mut bytes = u64::from(partial.unassigned) * CHUNK_SIZE as u64;
        if partial.last_missing {
            bytes -= CHUNK_SIZE as u64 - self.chunk_bytes(block, last);
        }
        bytes
    }

    /// Returns false when no peer has room left (planning can stop).
    fn plan_prefetch<'p>(
        &'p self,
        block: BlockId,
        deadline: Millis,
        scratch: &mut PlanScratch,
        holders: &mut Vec<&'p Peer>,
        now: Millis,
    ) -> bool {
        let chunk = self.chunk_bytes(block, 0);
        // The last chunk is the shortest: a peer without room for it has none.
        let last = usize::from(self.layout.info(block).chunks).saturating_sub(1);
        let shortest = self.chunk_bytes(block, last);
        let mut any_room = false;
        scratch.askable.clear();
        for (r, p) in scratch.roomy.iter().zip(holders.iter()) {
            let pipeline = pipeline_for(r.bdp, chunk);
            any_room |= r.inflight + chunk <= pipeline;
            let askable = r.inflight + shortest <= pipeline && p.may_ask(block, now);
            scratch.askable.push(askable);
        }
        let holder_with_room = scratch.askable.contains(&true);
        if !any_room {
            return false;
        }
        if !holder_with_room {
            return true;
        }
        self.missing_chunks(block, &mut scratch.chunks);
        // A block listed twice (an init segment that is also in the window)
        // must not be given the chunks already chosen for it.
        let chosen = &scratch.assigned;
        let starts_at = self.layout.deadline_time(block);
        scratch
            .chunks
            .retain(|&i| !chosen.iter().any(|&(_, b, c, _)| b == block && c == i));
        let first = self.first_chunk(block);
        let pos = scratch.chunks.partition_point(|&i| i < first);
        scratch.chunks.rotate_left(pos);
        for &index in &scratch.chunks {
            let len = self.chunk_bytes(block, usize::from(index));
            if scratch.link_room < len {
                return false;
            }
            let roomiest = scratch
                .roomy
                .iter()
                .zip(&scratch.askable)
                .enumerate()
                .filter_map(|(at, (r, &askable))| {
                    let room = pipeline_for(r.bdp, chunk) as i64 - (r.inflight + len) as i64;
                    let lead = holders[at].furthest_ms.saturating_sub(starts_at);
                    let nearness = Reverse(lead / PREFETCH_LEAD_STEP_MS);
                    (room >= 0 && askable).then_some(((nearness, room), at))
                })
                // `roomy` is in id order: ties go to the highest id, as ever.
                .max();
            match roomiest {
                Some((_, at)) => {
                    let r = &mut scratch.roomy[at];
                    scratch.link_room -= len;
                    scratch.assigned.push((r.id, block, index, deadline));
                    r.inflight += len;
                    if !r.may_take_a_chunk() {
                        scratch.roomy.remove(at);
                        scratch.askable.remove(at);
                        holders.remove(at);
                    }
                }
                None => break,
            }
        }
        true
    }

    /// The peer expected to deliver `len` more bytes of `block` soonest, if that
    /// is no later than `limit`. Urgent requests overtake prefetch at the uploader
    /// (earliest deadline first), so the ETA counts only what is queued there for
    /// deadlines up to this one, and no pipeline limit applies.
    fn best_peer(
        &self,
        block: BlockId,
        len: u64,
        (deadline, limit): (Millis, Millis),
        exclude: Option<PeerId>,
        now: Millis,
    ) -> Option<PeerId> {
        self.eligible(now)
            .filter(|(id, _)| Some(**id) != exclude)
            .filter_map(|(id, p)| {
                if p.inflight_bytes + len > URGENT_PIPELINE_BYTES || !p.may_ask(block, now) {
                    return None;
                }
                let queued = p.ahead_of(deadline) + len;
                if queued > FRESH_PEER_URGENT_BYTES + p.bytes_down {
                    return None;
                }
                let eta = p.eta_of(now, queued);
                (eta <= limit).then_some((eta, *id))
            })
            .min()
            .map(|(_, id)| id)
    }

    fn assign(
        &mut self,
        peer: PeerId,
        block: BlockId,
        index: u16,
        deadline: Millis,
        batch: &mut Batch,
        now: Millis,
    ) {
        let len = self.chunk_bytes(block, usize::from(index));
        let partial = self
            .partial
            .get_mut(&block)
            .expect("planned blocks have a partial");
        partial.mark_requested(usize::from(index), peer);
        let want_hashes = partial.hashes.is_none();
        let p = self.peers.get_mut(&peer).expect("eligible peers exist");
        let expected = p.eta(now, len).since(now);
        let step = self.config.min_request_timeout_ms;
        let timeout = (2 * expected + p.rtt as u64).max(step);
        let expires = now + first_silence_check(timeout, step);
        p.inflight.push(Inflight {
            block,
            chunk: index,
            sent_at: now,
            expires,
            deadline,
            len: len as u32,
            on_wire: None,
        });
        p.inflight_bytes += len;
        self.expiries
            .push(std::cmp::Reverse((expires, peer, block, index)));
        batch.0.push((peer, block, index, deadline, want_hashes));
    }

    /// Sends the batch's requests, consecutive chunks of a block to a peer as one.
    fn flush(&mut self, batch: &mut Batch, now: Millis) {
        // In each block's own order (`first_chunk`): an uploader serves one
        // requester's chunks due together in the order asked.
        batch
            .0
            .sort_unstable_by_key(|&(p, b, i, _, _)| (p, b, self.chunk_rank(b, i)));
        let mut i = 0;
        while i < batch.0.len() {
            let (peer, block, first, deadline, want_hashes) = batch.0[i];
            let mut count = 1u16;
            while i + (count as usize) < batch.0.len() && count < MAX_REQUEST_CHUNKS {
                let (p, b, c, _, _) = batch.0[i + count as usize];
                if p != peer || b != block || c != first + count {
                    break;
                }
                count += 1;
            }
            let chunk = self.chunk_bytes(block, usize::from(first));
            let give_up = self.told_give_up(deadline, chunk, now);
            let deadline_ms = give_up.since(now).min(u64::from(u32::MAX)) as u32;
            self.send(
                peer,
                PeerMessage::Request {
                    block,
                    first,
                    count,
                    deadline_ms,
                    want_hashes,
                },
            );
            i += count as usize;
        }
    }
}
