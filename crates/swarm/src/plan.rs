//! Download planning: which chunk to ask of which peer, and when the origin.
//!
//! Rules (each has a scenario test in tests/rules.rs, or tests/origin_link.rs
//! for the origin's margin and its link):
//! - Blocks are needed from the playhead to `horizon_ms` past it, plus every init
//!   segment; a block's deadline is when the player reaches it. Until its first
//!   frame, and while its player is behind what it holds
//!   (`Engine::handle_player_buffered`), a viewer looks only `urgent_window_ms`
//!   ahead (tests/starting.rs).
//! - Urgent blocks (deadline within `urgent_window_ms`) go in deadline order; each
//!   chunk goes to the peer expected to deliver it soonest (its measured rate and
//!   queue), if that is before the origin's last chance: the deadline less the
//!   margin and the origin's own estimate. A peer trusted until later would leave
//!   the origin too little time when it falls behind. A chunk already asked
//!   of a peer that now looks too slow moves to one that makes it (cancelled at
//!   the first); in the title's last urgent window, and for the block a starting
//!   or stalled player waits for, it is asked of both (end-game). A block with
//!   chunks asked of peers is looked at again when it turns urgent.
//! - The margin is what the origin, the last resort, needs beyond its estimate:
//!   four times its recent estimate error, within `min_margin_ms ..= margin_ms`.
//! - An origin fetch early by choice (the spread's lead) waits while a block
//!   due before it may need the origin (a fetch falling due, or a chunk still
//!   with a peer at its last chance) before the answers already coming and its
//!   own are in: answers share the viewer's link.
//! - Chunks no peer can deliver in time are fetched from the origin, but only once
//!   the deadline is so near that the origin itself just makes it; a block that no
//!   connected peer holds is fetched a seeded random amount earlier
//!   (`origin_spread_ms`), so that among viewers at the same point one fetches it
//!   first and relays it to the others.
//! - Other blocks in the horizon are prefetched rarest first, each chunk from the
//!   holder with the most free pipeline.
//! - A peer's pipeline holds its bandwidth-delay product (at least two chunks);
//!   urgent requests only by their estimate and `URGENT_PIPELINE_BYTES`, and a
//!   peer's urgent bytes outstanding by what it has delivered so far plus a
//!   chunk (`FRESH_PEER_URGENT_BYTES`): a newcomer's first blocks go to all the
//!   peers that answer, not all to the first.

use std::sync::Arc;

use telly_proto::wire::{BlockId, CHUNK_SIZE, MAX_REQUEST_CHUNKS, chunk_len};

use crate::download::{ChunkState, OriginFetch};
use crate::engine::{Action, Engine, PeersExpected, PlayState};
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

/// Viewers paused by hand keep fetching, but without hurry.
const PAUSED_SLACK_MS: u64 = 10_000;

/// How long a starting viewer waits for its peers' have-maps before it takes a
/// block none of them announced from the origin.
const STARTUP_LOOKAROUND_MS: u64 = 300;

/// Shape of the origin-fetch lead distribution: duplicates stay few for
/// audiences at one point up to about e^λ viewers, and the lead's scale is
/// the spread window over λ (4.6 s at 12). The chance that a viewer d
/// seconds behind another fires first falls as e^(−d/scale): at λ 10 one
/// 5 s behind did so one time in five. λ 12 against 10, same seeds:
/// premiere −5.7, −4.6, −0.9, −3.0 %; churn +5.3, −7.2, +2.9 %; on demand
/// (1,000 and 2,000) −0.5, +8.2 %. 8 and 15 did worse at the premiere
/// (+11 %; −2 and +4 % with on demand +8 %), 20 far worse (+92 %).
const SPREAD_LAMBDA: f64 = 12.0;

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
        let base = match self.play {
            PlayState::Playing => now,
            PlayState::Starting => self.waiting_since + self.config.startup_budget_ms,
            PlayState::Stalled => self.waiting_since + self.config.stall_budget_ms,
            PlayState::Paused => now + PAUSED_SLACK_MS,
        };
        base + ahead
    }

    /// Seeded, per-block lead of origin fetches for blocks nobody near holds: how
    /// much earlier than needed this viewer fetches such a block, within
    /// `room`, the time it has had the block in view.
    ///
    /// The lead is drawn so that few viewers fire early and most late (a
    /// truncated exponential, as in SRM's NACK suppression): among N viewers at
    /// the same point the earliest fires alone, and the number that fire before
    /// its relay reaches them stays near one whatever N is. A uniform lead made
    /// it grow with N (the density of fetchers at the front of the window).
    ///
    /// A block that was already in the horizon when the viewer started (or
    /// jumped) has less than the spread window before it is due. Cutting the
    /// lead at that room made every viewer whose draw exceeded it fire at once
    /// (a quarter of them for a block 6 s ahead); scaling the window down to the
    /// room squeezed the others' firing times closer together than a relay
    /// takes to reach them (premiere +5 to +21 %). So the draw is taken within
    /// the room, with the density keeping its shape and scale.
    fn spread(&self, block: BlockId, room: u64) -> u64 {
        let mut x = self.config.seed ^ u64::from(block.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        let uniform = (x >> 11) as f64 / (1u64 << 53) as f64;
        let window = self.config.origin_spread_ms as f64;
        let growth = SPREAD_LAMBDA.exp_m1();
        // Share of the draws that fall before the room opens: left out.
        let opens = (window - room as f64).max(0.0);
        let before = (SPREAD_LAMBDA * opens / window).exp_m1() / growth;
        let uniform = before + uniform * (1.0 - before);
        // Firing time from the window's start, with density rising as e^(λt/T).
        let fire = window / SPREAD_LAMBDA * (1.0 + uniform * growth).ln();
        (window - fire).max(0.0) as u64
    }

    /// The safety margin before a deadline: what keeps an origin fetch, the
    /// last resort, from arriving late. So it is sized by how far the origin's
    /// answers have lately strayed from their estimate, four times over (as
    /// TCP's retransmission timer reads its round-trip variance), between
    /// `min_margin_ms` and `margin_ms`, and `margin_ms` until the origin has
    /// answered once. Every millisecond of it is one a peer does not get.
    /// A starting viewer's whole budget is about one margin, so it keeps a
    /// quarter: the first blocks can then come from peers that are ready
    /// rather than from the origin by rule.
    pub(crate) fn margin(&self) -> u64 {
        let margin = self.origin_error.map_or(self.config.margin_ms, |error| {
            ((4.0 * error) as u64).clamp(
                self.config.min_margin_ms.min(self.config.margin_ms),
                self.config.margin_ms,
            )
        });
        if self.play == PlayState::Starting {
            margin / 4
        } else {
            margin
        }
    }

    fn chunk_bytes(&self, block: BlockId, index: usize) -> u64 {
        chunk_len(self.layout.info(block).entry.size, index) as u64
    }

    pub(crate) fn origin_eta_ms(&self, bytes: u64) -> u64 {
        (self.origin_rtt + bytes as f64 / self.origin_rate.max(1e-3)) as u64
    }

    /// The last moment `bytes` due at `deadline` can still be asked of the
    /// origin with its margin: a peer asked for them must be expected by then,
    /// or a peer that falls behind leaves the origin too little time.
    pub(crate) fn give_up_at(&self, deadline: Millis, bytes: u64) -> Millis {
        deadline - (self.margin() + self.origin_eta_ms(bytes))
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
        let horizon = if self.play == PlayState::Starting || self.player_behind {
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
                    let due = self.origin_due(block, deadline, self.unassigned_bytes(block));
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
                // Chunks asked of peers are looked at again once the block is
                // urgent: a peer that went quiet must not hold it past its
                // deadline while no other input wakes us.
                if partial.missing > partial.unassigned {
                    let urgent_at = deadline - self.config.urgent_window_ms;
                    self.plan_wake = self.plan_wake.min(urgent_at);
                }
            }
        }
        scratch.prefetch.sort_unstable();
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

    fn plan_urgent(
        &mut self,
        block: BlockId,
        deadline: Millis,
        scratch: &mut PlanScratch,
        now: Millis,
    ) {
        scratch.at_risk.clear();
        let chunk_count = self.partial[&block].chunks.len();
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
                        self.assign(peer, block, index, deadline, &mut scratch.batch, now)
                    }
                    None => scratch.at_risk.push(index),
                },
                Some((first, second)) => {
                    let soonest = [Some(first), second]
                        .into_iter()
                        .flatten()
                        .filter_map(|id| self.peers.get(&id))
                        .map(|p| p.eta_before(now, 0, deadline))
                        .min();
                    if let Some(eta) = soonest.filter(|&eta| eta <= limit) {
                        // Waiting makes the estimate slip at least as fast as
                        // the clock: look again before it can cross the limit.
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

    /// Whether a block due at `deadline` is the one a starting or stalled player
    /// waits for (its first frame, or the end of a stall).
    fn waits_for(&self, deadline: Millis) -> bool {
        let budget = match self.play {
            PlayState::Starting => self.config.startup_budget_ms,
            PlayState::Stalled => self.config.stall_budget_ms,
            PlayState::Playing | PlayState::Paused => return false,
        };
        deadline <= self.waiting_since + budget
    }

    /// When a request for `bytes` due at `deadline` tells the uploader we
    /// stop waiting: our give-up, so that an uploader that cannot send by
    /// then rejects rather than spend its upload on a copy we would throw away.
    ///
    /// A starting viewer plans the blocks after its first as if its first
    /// frame came at the end of the startup budget, the latest it may; but it
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
        if self.play != PlayState::Starting || self.waits_for(deadline) {
            return self.give_up_at(deadline, bytes);
        }
        let first_frame_latest = self.waiting_since + self.config.startup_budget_ms;
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

    /// When `bytes` of `block`, due at `deadline`, are to be fetched from the
    /// origin if no peer has taken them by then.
    fn origin_due(&self, block: BlockId, deadline: Millis, bytes: u64) -> Millis {
        if bytes == 0 {
            return Millis::NEVER;
        }
        let nobody_has = self.avail[block.0 as usize] == 0;
        // Only a playing viewer spreads: one that is starting or paused has just
        // joined or is in no hurry, and its peers' have-maps may still be on the way.
        let give_up = self.give_up_at(deadline, bytes);
        let spread = if nobody_has && self.config.peer_to_peer && self.play == PlayState::Playing {
            self.spread(block, give_up.since(self.watching_since))
        } else {
            0
        };
        let mut due = give_up - spread;
        // A newcomer whose peers hold none of its first blocks has nobody to
        // wait for once their have-maps had time to arrive, and one the
        // tracker found alone has nobody at all: it starts at once. A tracker's
        // answer and the links to the peers it offers may take a while (a tab
        // starved of CPU: half a second), so while peers are coming the
        // look-around starts at the first have-map, and before it only the
        // give-up sends to the origin.
        if nobody_has && self.play == PlayState::Starting && self.waits_for(deadline) {
            let look_until = match (self.expected, self.first_have_map_at) {
                (PeersExpected::Nobody, _) => Some(self.waiting_since),
                (PeersExpected::Coming, None) => None,
                (PeersExpected::Coming, Some(first)) => {
                    Some(self.waiting_since.max(first) + STARTUP_LOOKAROUND_MS)
                }
                (PeersExpected::Unknown, _) => Some(self.waiting_since + STARTUP_LOOKAROUND_MS),
            };
            if let Some(until) = look_until {
                due = due.min(until);
            }
        }
        due
    }

    /// Fetches `at_risk` chunks from the origin if it is time, else sets the wake-up.
    fn consider_origin(&mut self, block: BlockId, deadline: Millis, at_risk: &[u16], now: Millis) {
        let bytes: u64 = at_risk
            .iter()
            .map(|&i| self.chunk_bytes(block, usize::from(i)))
            .sum();
        let due = self.origin_due(block, deadline, bytes);
        let nobody_has = self.avail[block.0 as usize] == 0;
        if now < due {
            self.plan_wake = self.plan_wake.min(due);
            self.origin_due_first = self.origin_due_first.min(due);
            return;
        }
        // A fetch early by choice (the spread's lead) waits while a block due
        // before it may need the origin (a fetch falling due, or a chunk with
        // a peer reaching its last chance) before the answers already coming
        // and its own are in: they share the viewer's link one after another,
        // and the early one would make the other late. This pass looks at
        // blocks in deadline order, so `origin_due_first` holds exactly those.
        if self.play == PlayState::Playing
            && now < self.give_up_at(deadline, bytes)
            && self.origin_due_first
                < now + self.origin_eta_ms(bytes + self.origin_inflight.bytes())
        {
            self.plan_wake = self.plan_wake.min(self.origin_due_first);
            return;
        }
        let partial = self
            .partial
            .get_mut(&block)
            .expect("planned blocks have a partial");
        let (first, last) = if partial.hashes.is_none() {
            (0, partial.chunks.len() as u16 - 1)
        } else {
            // The first run of at-risk chunks with nothing verified or already
            // coming from the origin inside; the rest is planned again later.
            let first = at_risk[0];
            let mut last = first;
            for &i in &at_risk[1..] {
                let clear = (last + 1..i).all(|j| {
                    !matches!(
                        partial.chunks[usize::from(j)],
                        ChunkState::Got { .. } | ChunkState::Origin
                    )
                });
                if !clear {
                    break;
                }
                last = i;
            }
            (first, last)
        };
        let mut asked = Vec::new();
        for i in first..=last {
            partial.mark_origin(usize::from(i));
            if let ChunkState::Requested { first: a, second } = partial.chunks[usize::from(i)] {
                asked.extend([Some(a), second].into_iter().flatten().map(|p| (p, i)));
            }
        }
        // The origin now brings these: asking peers too would only duplicate.
        for (peer, chunk) in asked {
            self.cancel_request(peer, block, chunk);
        }
        let partial = self.partial.get_mut(&block).expect("still there");
        for i in first..=last {
            partial.mark_origin(usize::from(i));
        }
        let fetched: u64 = (first..=last)
            .map(|i| self.chunk_bytes(block, usize::from(i)))
            .sum();
        self.origin_inflight.insert(
            block,
            first,
            OriginFetch {
                asked: now,
                expected_ms: self.origin_eta_ms(fetched),
                bytes: fetched,
                count: last - first + 1,
            },
        );
        self.stats.origin_fetches += 1;
        if nobody_has {
            self.stats.origin_fetches_unheld += 1;
        }
        if matches!(self.play, PlayState::Starting | PlayState::Stalled) {
            self.stats.origin_fetches_waiting += 1;
        }
        self.actions.push_back(Action::FetchFromOrigin {
            block,
            first,
            count: last - first + 1,
        });
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
        scratch
            .chunks
            .retain(|&i| !chosen.iter().any(|&(_, b, c, _)| b == block && c == i));
        for &index in &scratch.chunks {
            let len = self.chunk_bytes(block, usize::from(index));
            let roomiest = scratch
                .roomy
                .iter()
                .zip(&scratch.askable)
                .enumerate()
                .filter_map(|(at, (r, &askable))| {
                    let room = pipeline_for(r.bdp, chunk) as i64 - (r.inflight + len) as i64;
                    (room >= 0 && askable).then_some((room, at))
                })
                // `roomy` is in id order: ties go to the highest id, as ever.
                .max();
            match roomiest {
                Some((_, at)) => {
                    let r = &mut scratch.roomy[at];
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
        });
        p.inflight_bytes += len;
        self.expiries
            .push(std::cmp::Reverse((expires, peer, block, index)));
        batch.0.push((peer, block, index, deadline, want_hashes));
    }

    /// Sends the batch's requests, consecutive chunks of a block to a peer as one.
    fn flush(&mut self, batch: &mut Batch, now: Millis) {
        batch.0.sort_unstable_by_key(|(p, b, i, _, _)| (*p, *b, *i));
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
