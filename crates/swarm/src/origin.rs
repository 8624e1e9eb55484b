//! When the origin, the last resort, is asked, and for what.
//!
//! Rules (each has a scenario test in tests/origin_link.rs, tests/rules.rs or
//! tests/jumps.rs):
//! - The margin is what the origin, the last resort, needs beyond its estimate:
//!   four times its recent estimate error, within `min_margin_ms ..= margin_ms`.
//! - An origin fetch early by choice (the spread's lead) waits while a block
//!   due before it may need the origin (a fetch falling due, or a chunk still
//!   with a peer at its last chance) before the answers already coming and its
//!   own are in: answers share the viewer's link.
//! - Chunks no peer can deliver in time are fetched from the origin, but only once
//!   the deadline is so near that the origin itself just makes it; a block that no
//!   connected peer holds, and that no news says is coming (coming.rs), is
//!   fetched a seeded random amount earlier (`origin_spread_ms`), so that among
//!   viewers at the same point one fetches it first and relays it to the
//!   others; the lead is flatter for a block that came into view while
//!   playing than for one already in view when the viewer began or jumped.
//! - What is fetched of a block goes out in one pass, a range for each run of
//!   missing chunks between those verified or already coming.

use telly_proto::wire::BlockId;

use crate::download::{ChunkState, OriginFetch};
use crate::engine::{Action, Engine, PeersExpected, PlayState};
use crate::time::Millis;
use crate::trust::Trust;

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
/// This shape is kept for a block already in view when the viewer began to
/// play or jumped: a premiere's crowd starts together, and the block comes
/// into everyone's view at once.
const SPREAD_LAMBDA: f64 = 12.0;

/// λ for a block that came into view while the viewer played: viewers come
/// upon it one after another, the one furthest along first, and news of a
/// fetch (coming.rs) reaches the others within a few latencies, so the lead
/// need not be as steep, and a flatter one fetches the first copy earlier,
/// leaving the swarm longer to spread it. Landed with the news a peer's
/// first have carries (coming.rs), the two together against 12 for both
/// and the fetcher's news alone: on demand −9 %, churn −11 %, the premiere
/// −2 % (figures in DESIGN.md, Picking). Without the haves' news λ 6 cost
/// the premiere 6 %; 9 did about half as much on demand.
const SPREAD_LAMBDA_IN_PLAY: f64 = 6.0;

impl<T: Trust> Engine<T> {
    /// Seeded, per-block lead of origin fetches for blocks nobody near holds: how
    /// much earlier than needed this viewer fetches such a block, within
    /// `room`, the time it has had the block in view while playing (only a
    /// playing viewer spreads; see `Engine::watching_since`).
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
        let x = self.seeded_draw(block, 0);
        let uniform = (x >> 11) as f64 / (1u64 << 53) as f64;
        let window = self.config.origin_spread_ms as f64;
        let lambda = if room >= self.config.origin_spread_ms {
            SPREAD_LAMBDA_IN_PLAY
        } else {
            SPREAD_LAMBDA
        };
        let growth = lambda.exp_m1();
        // Share of the draws that fall before the room opens: left out.
        let opens = (window - room as f64).max(0.0);
        let before = (lambda * opens / window).exp_m1() / growth;
        let uniform = before + uniform * (1.0 - before);
        // Firing time from the window's start, with density rising as e^(λt/T).
        let fire = window / lambda * (1.0 + uniform * growth).ln();
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
        if self.beginning() { margin / 4 } else { margin }
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

    /// When `bytes` of `block`, due at `deadline`, are to be fetched from the
    /// origin if no peer has taken them by then.
    pub(crate) fn origin_due(
        &self,
        block: BlockId,
        deadline: Millis,
        bytes: u64,
        now: Millis,
    ) -> Millis {
        if bytes == 0 {
            return Millis::NEVER;
        }
        let nobody_has = self.avail[block.0 as usize] == 0;
        // Only a playing viewer spreads: one that is starting or paused has just
        // joined or is in no hurry, and its peers' have-maps may still be on the way.
        // Nor one that heard the block is coming (coming.rs): a copy is already
        // on its way through the swarm.
        let give_up = self.give_up_at(deadline, bytes);
        let spread = if nobody_has
            && self.config.peer_to_peer
            && self.play == PlayState::Playing
            && !self.heard_coming(block, now)
        {
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
        if nobody_has && self.beginning() && self.waits_for(deadline) {
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
    pub(crate) fn consider_origin(
        &mut self,
        block: BlockId,
        deadline: Millis,
        at_risk: &[u16],
        now: Millis,
    ) {
        let bytes: u64 = at_risk
            .iter()
            .map(|&i| self.chunk_bytes(block, usize::from(i)))
            .sum();
        let due = self.origin_due(block, deadline, bytes, now);
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
        let partial = &self.partial[&block];
        let runs = if partial.hashes.is_none() {
            vec![(0, partial.chunks.len() as u16 - 1)]
        } else {
            origin_runs(&partial.chunks, at_risk)
        };
        for (first, last) in runs {
            self.fetch_from_origin(block, first, last, nobody_has, now);
        }
    }

    /// Asks the origin for chunks `first..=last` of `block`, cancelling what
    /// peers were asked of them.
    fn fetch_from_origin(
        &mut self,
        block: BlockId,
        first: u16,
        last: u16,
        nobody_has: bool,
        now: Millis,
    ) {
        let partial = self
            .partial
            .get_mut(&block)
            .expect("planned blocks have a partial");
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
            if self.config.peer_to_peer {
                self.announce_coming(block, now);
            }
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
}

/// The ranges an origin fetch of a block's `at_risk` chunks (ascending) asks
/// for: each run of them with nothing verified or already coming from the
/// origin inside, all at once. Fetching only the first run and leaving the
/// rest to the next pass put the rest behind the fetches that pass made for
/// later blocks: at scarce upload, a viewer whose only holder left after
/// sending chunk 1 fetched chunk 0, then two whole later blocks, then chunks
/// 2-7, which came 195 ms after the deadline.
fn origin_runs<C>(chunks: &[ChunkState<C>], at_risk: &[u16]) -> Vec<(u16, u16)> {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &i in at_risk {
        if let Some((_, last)) = runs.last_mut() {
            let clear = (*last + 1..i).all(|j| {
                !matches!(
                    chunks[usize::from(j)],
                    ChunkState::Got { .. } | ChunkState::Origin
                )
            });
            if clear {
                *last = i;
                continue;
            }
        }
        runs.push((i, i));
    }
    runs
}
