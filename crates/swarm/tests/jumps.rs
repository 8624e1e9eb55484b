//! Jumps (seeks): what a viewer that jumped asks for, how long it waits,
//! and what its player waits for before it plays on. Small deterministic
//! scenarios on the same test network as tests/rules.rs.

mod common;

use common::{Net, net, title};
use telly_proto::wire::BlockId;
use telly_swarm::{Config, PlayState};

#[test]
fn a_player_just_past_a_block_bound_still_gets_the_block_before_it() {
    // Frames straddle the manifest's bounds: after a seek to 10.01 s the player
    // may still wait for the block the manifest ends at 10.00 s (block 5).
    let mut net = net();
    let viewer = net.add(Net::config(1));
    net.play(viewer, 10_010, PlayState::Stalled);
    net.run_for(5_000);
    let delivered = net.delivered(viewer);
    assert!(delivered.contains(&BlockId(5)), "{delivered:?}");
    assert!(!delivered.contains(&BlockId(4)), "{delivered:?}");
}

#[test]
fn a_seek_replans_at_once_and_cancels_what_is_behind() {
    let mut net = Net::new(title(40, 150_000));
    let seed = net.add(Net::config(1));
    net.seed_all(seed);
    net.nodes[seed].up_rate = 40.0;
    let viewer = net.add(Config {
        horizon_ms: 10_000,
        ..Net::config(2)
    });
    net.connect(seed, viewer);
    net.run_for(100);
    net.play(viewer, 0, PlayState::Playing);
    net.run_for(1_000);
    let seek_to = 60_000;
    let sent_before = net.nodes[viewer].sent.len();
    net.play(viewer, seek_to, PlayState::Stalled);
    let jumped_at = net.now;
    let after: Vec<String> = net.nodes[viewer].sent[sent_before..]
        .iter()
        .map(|s| s.2.clone())
        .collect();
    assert!(after.iter().any(|s| s.starts_with("Cancel")), "{after:?}");
    // The block at the new playhead, or the one ending there (frames
    // straddle block bounds), is asked of the seed at once.
    assert!(
        after.iter().any(|s| {
            s.starts_with("Request { block: BlockId(30)")
                || s.starts_with("Request { block: BlockId(31)")
        }),
        "{after:?}"
    );
    // The seed sends a block in 3.75 s, far past the seek's budget: the
    // block at the new playhead comes from the origin, within that budget.
    net.run_for(3_000);
    let budget = Config::default().seek_budget_ms;
    let origin = net.nodes[viewer]
        .origin_log
        .iter()
        .find(|o| o.1 == BlockId(31))
        .expect("the origin was asked for the block at the new playhead");
    assert!(origin.0 < jumped_at + budget, "{origin:?}");
    let delivered = net.nodes[viewer]
        .delivered
        .iter()
        .find(|d| d.1 == BlockId(31))
        .expect("the block at the new playhead came");
    assert!(delivered.0 <= jumped_at + budget, "{delivered:?}");
}

#[test]
fn a_jump_just_before_a_block_bound_fetches_the_next_block_with_the_first() {
    // The player resumes only with `resume_goal_ms` of media ahead: after a
    // jump to 0.2 s before block 31 ends, it waits for block 32 too, so the
    // engine asks for both at once. With no goal, block 32 is fetched only
    // when its own deadline nears, after the player has waited for it.
    let fetched_at = |resume_goal_ms: u64| {
        let mut net = Net::new(title(40, 150_000));
        let viewer = net.add(Config {
            resume_goal_ms,
            ..Net::config(1)
        });
        net.run_for(100);
        net.play(viewer, 0, PlayState::Playing);
        net.run_for(4_000);
        net.play(viewer, 61_800, PlayState::Stalled);
        net.run_for(2_000);
        let first = |block: BlockId| {
            net.nodes[viewer]
                .origin_log
                .iter()
                .find(|o| o.1 == block)
                .map(|o| o.0)
                .expect("fetched from the origin")
        };
        (first(BlockId(31)), first(BlockId(32)))
    };
    let (under, next) = fetched_at(Config::default().resume_goal_ms);
    assert_eq!(under, next);
    let (under, next) = fetched_at(0);
    assert!(next > under, "{under:?} {next:?}");
}

#[test]
fn a_jump_leaves_peers_the_time_a_start_has_and_a_stall_does_not() {
    // A viewer's peer sends a block in about a third of a second. After a jump, the
    // block at the new playhead is due a second later, as a start's first
    // block is: the peer makes it and the origin is not asked. A player that
    // stalls in play waits 0.3 s, which only the origin makes.
    let mut net = Net::new(title(40, 150_000));
    let jumper = net.add(Net::config(1));
    let staller = net.add(Net::config(2));
    for (viewer, seed_config) in [(jumper, 3), (staller, 4)] {
        let seed = net.add(Net::config(seed_config));
        net.seed_all(seed);
        net.nodes[seed].up_rate = 500.0;
        net.connect(seed, viewer);
    }
    net.run_for(100);
    net.play(jumper, 0, PlayState::Playing);
    net.play(staller, 0, PlayState::Playing);
    net.run_for(4_000);
    net.play(jumper, 61_000, PlayState::Stalled);
    net.play(staller, 41_000, PlayState::Playing);
    net.play(staller, 41_000, PlayState::Stalled);
    let waited_from = net.now;
    net.run_for(2_000);
    let jumped_to = BlockId(31);
    let stalled_at = BlockId(21);
    let from_origin = |node: usize, block: BlockId| {
        net.nodes[node]
            .origin_log
            .iter()
            .filter(|o| o.1 == block)
            .count()
    };
    assert_eq!(from_origin(jumper, jumped_to), 0);
    assert!(from_origin(staller, stalled_at) > 0);
    for (node, block) in [(jumper, jumped_to), (staller, stalled_at)] {
        let came = net.nodes[node]
            .delivered
            .iter()
            .find(|d| d.1 == block)
            .expect("the waited-for block came");
        assert!(came.0 < waited_from + 1_000, "{came:?}");
    }
}
