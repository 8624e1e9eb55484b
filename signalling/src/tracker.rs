//! The tracker's choice of peers for one member of a swarm: pure, seeded, and
//! tested directly.
//!
//! A peer is *useful* to a member by the milliseconds of the member's lookahead
//! window (`[playhead, playhead + lookahead)`) it holds and the member lacks:
//! what the member can fetch from it. Only that direction counts. A member that
//! could serve another is found by that other when it asks, as its source;
//! counting both directions handed viewers on demand peers behind them, which
//! could give them nothing, and their next blocks came from the origin (in the
//! simulator, 1,000 viewers on demand: 63x the minimum against 14x).
//! Candidates are ranked by usefulness, coarsened into buckets so that near-equal
//! peers tie, and ties are broken by a random key drawn from the caller's seeded
//! RNG: two joiners at the same playhead get different, equally good peers, so no
//! single well-stocked peer is handed to everyone. A few slots of every answer go
//! to random other members whatever their usefulness, which keeps the swarm's
//! graph connected and gives peers that hold nothing yet someone to serve them.

use rand::RngCore;
use telly_proto::signal::{HaveSummary, MAX_HAVE_SPANS, PeerId, Span};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Most peers in one answer.
    pub peers_per_answer: usize,
    /// Of those, how many are random picks rather than the most useful.
    pub explore_slots: usize,
    /// How far ahead of its playhead a peer's needs count.
    pub lookahead_ms: u64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            peers_per_answer: 8,
            // Half: sources chosen by usefulness alone pile onto the viewers
            // just ahead while those further along sit idle (in the simulator,
            // 1,000 viewers on demand: 24x the minimum with a quarter random,
            // 13x with half).
            explore_slots: 4,
            // About 30 two-second blocks: what a streaming peer fetches next.
            lookahead_ms: 60_000,
        }
    }
}

/// Usefulness is split into this many levels per lookahead window; peers on the
/// same level count as equally good.
const LEVELS_PER_WINDOW: u64 = 4;

/// The part of its lookahead window a peer wants, if it is playing.
fn want_window(peer: &HaveSummary, lookahead_ms: u64) -> Option<Span> {
    peer.playhead_ms.map(|start_ms| Span {
        start_ms,
        end_ms: start_ms.saturating_add(lookahead_ms),
    })
}

/// How useful `holder` is to `needer`: milliseconds of `needer`'s window that
/// `holder` holds and `needer` does not.
pub fn usefulness(holder: &HaveSummary, needer: &HaveSummary, lookahead_ms: u64) -> u64 {
    let Some(window) = want_window(needer, lookahead_ms) else {
        return 0;
    };
    holder
        .spans
        .iter()
        .take(MAX_HAVE_SPANS)
        .map(|held| {
            let part = Span {
                start_ms: held.start_ms.max(window.start_ms),
                end_ms: held.end_ms.min(window.end_ms),
            };
            // Summaries are validated disjoint, so this never goes below zero.
            part.len_ms().saturating_sub(needer.held_within(&part))
        })
        .sum()
}

/// How far ahead of `member` the `holder` plays, in lookahead windows: a source
/// just ahead shares the member's next blocks for longest (one far ahead
/// reaches the end and leaves first). Not playing, or behind: last.
fn lead(holder: &HaveSummary, member: &HaveSummary, lookahead_ms: u64) -> u64 {
    match (holder.playhead_ms, member.playhead_ms) {
        (Some(theirs), Some(ours)) if theirs >= ours => (theirs - ours) / lookahead_ms.max(1),
        _ => u64::MAX,
    }
}

fn level(usefulness_ms: u64, lookahead_ms: u64) -> u64 {
    (usefulness_ms.saturating_mul(LEVELS_PER_WINDOW)).div_ceil(lookahead_ms.max(1))
}

/// Picks at most `config.peers_per_answer` of `candidates` for `member`: the most
/// useful first, then `explore_slots` random others. `candidates` must not hold
/// the member itself, and must come in a stable order (the caller's map order),
/// so that a given seed always gives the same answer.
pub fn choose<'a>(
    rng: &mut impl RngCore,
    member: &HaveSummary,
    candidates: impl IntoIterator<Item = (&'a PeerId, &'a HaveSummary)>,
    config: &TrackerConfig,
) -> Vec<&'a PeerId> {
    let mut ranked: Vec<(u64, u64, u64, &PeerId)> = candidates
        .into_iter()
        .map(|(id, have)| {
            let useful = usefulness(have, member, config.lookahead_ms);
            (
                level(useful, config.lookahead_ms),
                lead(have, member, config.lookahead_ms),
                rng.next_u64(),
                id,
            )
        })
        .collect();
    // Most useful level first; within a level the nearest lead, then the
    // random key.
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));

    let useful_slots = config.peers_per_answer.saturating_sub(config.explore_slots);
    let useful_taken = ranked
        .iter()
        .take(useful_slots)
        .take_while(|(level, _, _, _)| *level > 0)
        .count();
    let mut chosen: Vec<&PeerId> = ranked[..useful_taken].iter().map(|r| r.3).collect();
    let mut rest = ranked.split_off(useful_taken);
    // Explore picks ignore usefulness: order the rest by their random key alone.
    rest.sort_unstable_by_key(|r| r.2);
    let room = config.peers_per_answer.saturating_sub(chosen.len());
    chosen.extend(rest.into_iter().take(room).map(|r| r.3));
    chosen
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn peer(n: u32) -> PeerId {
        PeerId::parse(&format!("{n:016x}")).unwrap()
    }

    fn holding(playhead_ms: Option<u64>, spans: &[(u64, u64)]) -> HaveSummary {
        HaveSummary {
            playhead_ms,
            spans: spans
                .iter()
                .map(|&(start_ms, end_ms)| Span { start_ms, end_ms })
                .collect(),
        }
    }

    #[test]
    fn usefulness_counts_what_the_holder_has_of_the_needers_next_minute() {
        let lookahead = 60_000;
        let fresh = holding(Some(600_000), &[]);
        let ahead = holding(Some(650_000), &[(590_000, 700_000)]);
        let far_behind = holding(Some(10_000), &[(0, 100_000)]);
        assert_eq!(usefulness(&ahead, &fresh, lookahead), 60_000);
        // Far behind holds nothing near the fresh peer's playhead.
        assert_eq!(usefulness(&far_behind, &fresh, lookahead), 0);
        // A peer behind that could be served is not a source: it finds us
        // when it asks.
        let just_behind = holding(Some(580_000), &[(500_000, 590_000)]);
        assert_eq!(usefulness(&just_behind, &ahead, lookahead), 0);
        assert_eq!(usefulness(&ahead, &just_behind, lookahead), 50_000);
        // What the needer already holds does not count.
        let half_done = holding(Some(600_000), &[(600_000, 630_000)]);
        assert_eq!(usefulness(&ahead, &half_done, lookahead), 30_000);
        // A seeder that is not playing is useful only as a source.
        let seeder = holding(None, &[(0, 7_200_000)]);
        assert_eq!(usefulness(&seeder, &fresh, lookahead), 60_000);
        assert_eq!(usefulness(&fresh, &seeder, lookahead), 0);
        assert_eq!(usefulness(&seeder, &seeder, lookahead), 0);
    }

    #[test]
    fn the_most_useful_peers_come_first_then_explorers() {
        let config = TrackerConfig {
            peers_per_answer: 4,
            explore_slots: 1,
            lookahead_ms: 60_000,
        };
        let mut members = BTreeMap::new();
        // Peers 0..3 hold the joiner's window; 10..29 hold the wrong part.
        for n in 0..3 {
            members.insert(peer(n), holding(Some(700_000), &[(590_000, 700_000)]));
        }
        for n in 10..30 {
            members.insert(peer(n), holding(Some(5_000), &[(0, 20_000)]));
        }
        let joiner = holding(Some(600_000), &[]);
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let chosen = choose(&mut rng, &joiner, &members, &config);
            assert_eq!(chosen.len(), 4);
            let mut best: Vec<_> = chosen[..3].iter().map(|p| (*p).clone()).collect();
            best.sort();
            assert_eq!(best, vec![peer(0), peer(1), peer(2)], "seed {seed}");
            assert!(chosen[3] >= &peer(10));
        }
    }

    #[test]
    fn among_equally_useful_sources_those_just_ahead_come_first() {
        let config = TrackerConfig {
            peers_per_answer: 2,
            explore_slots: 0,
            lookahead_ms: 60_000,
        };
        // All three hold the joiner's next minute; the one far ahead will
        // reach the end and leave long before the two just ahead.
        let members: BTreeMap<_, _> = [
            (peer(1), holding(Some(900_000), &[(0, 900_000)])),
            (peer(2), holding(Some(130_000), &[(0, 170_000)])),
            (peer(3), holding(Some(140_000), &[(0, 180_000)])),
        ]
        .into_iter()
        .collect();
        let joiner = holding(Some(100_000), &[(0, 100_000)]);
        for seed in 0..10 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut chosen = choose(&mut rng, &joiner, &members, &config);
            chosen.sort();
            assert_eq!(chosen, vec![&peer(2), &peer(3)], "seed {seed}");
        }
    }

    #[test]
    fn equally_good_peers_are_spread_over_joiners() {
        let config = TrackerConfig::default();
        let members: BTreeMap<_, _> = (0..50)
            .map(|n| (peer(n), holding(None, &[(0, 3_600_000)])))
            .collect();
        let joiner = holding(Some(0), &[]);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut handed: HashMap<PeerId, usize> = HashMap::new();
        let mut answers = Vec::new();
        for _ in 0..100 {
            let chosen = choose(&mut rng, &joiner, &members, &config);
            assert_eq!(chosen.len(), config.peers_per_answer);
            let mut unique = chosen.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), chosen.len(), "no peer twice in one answer");
            for p in &chosen {
                *handed.entry((*p).clone()).or_default() += 1;
            }
            answers.push(chosen);
        }
        // 800 picks over 50 peers: 16 each on average.
        assert_eq!(handed.len(), 50, "every peer handed out");
        let busiest = handed.values().max().copied().unwrap_or(0);
        assert!(busiest <= 32, "busiest peer handed out {busiest} times");
        answers.sort();
        answers.dedup();
        assert!(answers.len() > 95, "answers differ between joiners");
    }

    #[test]
    fn the_same_seed_gives_the_same_answer() {
        let config = TrackerConfig::default();
        let members: BTreeMap<_, _> = (0..20)
            .map(|n| (peer(n), holding(Some(u64::from(n) * 1000), &[(0, 30_000)])))
            .collect();
        let joiner = holding(Some(2_000), &[]);
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            choose(&mut rng, &joiner, &members, &config)
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn small_swarms_and_extreme_numbers() {
        let config = TrackerConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let none: BTreeMap<PeerId, HaveSummary> = BTreeMap::new();
        assert!(choose(&mut rng, &HaveSummary::default(), &none, &config).is_empty());
        let huge = holding(Some(u64::MAX - 1), &[(u64::MAX - 10, u64::MAX)]);
        let members: BTreeMap<_, _> = [(peer(1), huge.clone())].into_iter().collect();
        assert_eq!(choose(&mut rng, &huge, &members, &config), vec![&peer(1)]);
        let zero = TrackerConfig {
            peers_per_answer: 0,
            explore_slots: 5,
            lookahead_ms: 0,
        };
        assert!(choose(&mut rng, &huge, &members, &zero).is_empty());
    }
}
