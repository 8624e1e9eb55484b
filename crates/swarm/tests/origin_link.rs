//! Origin fetches over the viewer's one link: answers come one after another,
//! so what is fetched early must not make what is due sooner late.

mod common;

use common::{Net, title};
use telly_proto::wire::BlockId;
use telly_swarm::{Config, Millis};

#[test]
fn an_early_origin_fetch_waits_for_a_block_due_before_it() {
    // Viewers whose one peer holds nothing take every block from the origin,
    // each at its seeded spread lead, over a link that carries a block in
    // 0.75 s, one answer after another. A block fetched early by choice must
    // not go out just ahead of one due before it and make that one late.
    let mut late = Vec::new();
    for seed in 0..12 {
        let mut net = Net::new(title(40, 150_000));
        net.origin_link_rate = 200.0;
        let empty = net.add(Net::config(100 + seed));
        // It knows its link: the estimate is right from the first fetch.
        let viewer = net.add(Config {
            origin_rate: 200_000,
            ..Net::config(seed)
        });
        net.connect(empty, viewer);
        let started = net.start_then_play(viewer, 0, 3_000);
        net.run_for(85_000);
        assert_eq!(net.delivered(viewer), net.all_blocks());
        let found = net.late_deliveries(viewer, started);
        late.extend(found.into_iter().map(|(block, ms)| (seed, block, ms)));
    }
    assert!(late.is_empty(), "late (seed, block, ms): {late:?}");
}

#[test]
fn a_peer_that_falls_behind_leaves_the_origin_time_to_make_the_deadline() {
    // The viewer's one peer sends a third faster than the title plays, then
    // its uplink all but stops. What it was asked for must reach the origin
    // while an origin answer, which takes 0.65 s a chunk here, still arrives
    // on time: a peer is trusted only until then. Trusted until the deadline
    // less the margin, it made block 8 late by 99 ms.
    let late = late_with_a_slowing_peer(SlowingPeer {
        blocks: 20,
        held: 21,
        up_rate: 100.0,
        slowed_rate: 2.0,
        slows_at: (5_000..15_000).step_by(700),
        run_ms: 45_000,
    });
    assert!(late.is_empty(), "late (slowed at, block, ms): {late:?}");
}

#[test]
fn an_early_origin_fetch_waits_while_a_chunk_with_a_slowing_peer_nears_its_last_chance() {
    // The viewer's one peer holds the first dozen blocks and falls from a
    // little faster than the title plays to half its rate; the blocks after
    // those nobody holds, and they are fetched early, at their spread leads,
    // over a link that carries a block in 1.5 s. A chunk the peer is still
    // sending goes to the origin at its last chance, and must not find a
    // block fetched early just ahead of it on the link: without the wait,
    // blocks 9 to 11 came up to 0.6 s late.
    let late = late_with_a_slowing_peer(SlowingPeer {
        blocks: 40,
        held: 13,
        up_rate: 70.0,
        slowed_rate: 40.0,
        slows_at: (4_000..10_000).step_by(1_000),
        run_ms: 85_000,
    });
    assert!(late.is_empty(), "late (slowed at, block, ms): {late:?}");
}

/// A viewer whose one peer holds the first `held` blocks (the init segment
/// is block 0) of a title of `blocks` media blocks of 150 KB, sending at `up_rate` bytes/ms until `slows_at`, then `slowed_rate`;
/// the origin link and the viewer's estimate of it carry 100 bytes/ms.
struct SlowingPeer<I> {
    blocks: usize,
    held: u32,
    up_rate: f64,
    slowed_rate: f64,
    slows_at: I,
    run_ms: u64,
}

/// `(slowed at, block, ms late)` over every `slows_at`; each run must still
/// deliver every block.
fn late_with_a_slowing_peer(
    case: SlowingPeer<impl Iterator<Item = u64>>,
) -> Vec<(u64, BlockId, u64)> {
    let mut late = Vec::new();
    for slows_at in case.slows_at {
        let mut net = Net::new(title(case.blocks, 150_000));
        net.origin_link_rate = 100.0;
        let seed = net.add(Net::config(1));
        let held: Vec<BlockId> = (0..case.held).map(BlockId).collect();
        net.seed_blocks(seed, &held);
        net.nodes[seed].up_rate = case.up_rate;
        let viewer = net.add(Config {
            origin_rate: 100_000,
            ..Net::config(2)
        });
        net.connect(seed, viewer);
        let started = net.start_then_play(viewer, 0, 3_000);
        net.run_until(Millis(slows_at));
        net.nodes[seed].up_rate = case.slowed_rate;
        net.run_for(case.run_ms);
        assert_eq!(net.delivered(viewer), net.all_blocks());
        let found = net.late_deliveries(viewer, started);
        late.extend(found.into_iter().map(|(block, ms)| (slows_at, block, ms)));
    }
    late
}
