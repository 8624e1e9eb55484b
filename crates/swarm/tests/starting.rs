//! How a newcomer spreads its first blocks over peers it has not heard from yet.

mod common;

use common::{Net, request_or_cancel, title};
use telly_proto::wire::{BlockId, CHUNK_SIZE, chunk_len};
use telly_swarm::PlayState;

/// Bytes of `blocks` the viewer asked of `peer` (from its own words), up to `until`.
fn asked_of(net: &Net, viewer: usize, peer: usize, blocks: &[u32], until: u64) -> u64 {
    net.nodes[viewer]
        .sent
        .iter()
        .filter(|(at, to, _)| *to == peer && at.0 <= until)
        .filter_map(|(_, _, what)| request_or_cancel(what))
        .filter(|(kind, block, _, _)| *kind == "Request" && blocks.contains(block))
        .map(|(_, block, first, count)| {
            let size = net.title.layout.info(BlockId(block)).entry.size;
            (first..first + count)
                .map(|i| chunk_len(size, usize::from(i)) as u64)
                .sum::<u64>()
        })
        .sum()
}

/// A viewer that has been starting for 3 s with one seed of 1 MB/s (30
/// blocks of 2 s, 150 KB): the network, the seed, the viewer.
fn three_seconds_of_starting_beside_a_seed() -> (Net, usize, usize) {
    let mut net = Net::new(title(30, 150_000));
    let peer = net.add_capped_seed(1_000_000, Net::config(1));
    let viewer = net.add(Net::config(2));
    net.connect(peer, viewer);
    net.run_for(100);
    net.play(viewer, 0, PlayState::Starting);
    net.run_for(3_000);
    (net, peer, viewer)
}

#[test]
fn a_newcomer_asks_a_peer_it_has_not_heard_from_for_one_chunk_of_urgent_bytes() {
    // Blocks of three chunks; four peers hold them all, one answers first.
    let mut net = Net::new(title(30, 150_000));
    let first = net.add_capped_seed(400_000, Net::config(1));
    let others: Vec<usize> = (2..5)
        .map(|seed| net.add_capped_seed(400_000, Net::config(seed)))
        .collect();
    let viewer = net.add(Net::config(9));
    net.connect(first, viewer);
    net.play(viewer, 0, PlayState::Starting);
    // Its have-map is in (two link latencies), nothing it sends could be.
    net.run_for(45);
    let urgent = [1, 2, 3, 4];
    let before_any_answer = net.now.0;
    assert!(
        asked_of(&net, viewer, first, &urgent, before_any_answer) <= CHUNK_SIZE as u64,
        "{:?}",
        net.nodes[viewer].sent
    );
    for &peer in &others {
        net.connect(peer, viewer);
    }
    net.run_for(1_800);
    // Taken on trust, the first to answer would have had all four urgent
    // blocks; the newcomer's first block came from several peers instead,
    // none of it from the origin.
    assert!(net.delivered(viewer).contains(&BlockId(1)));
    let askers = (0..net.nodes.len())
        .filter(|&peer| asked_of(&net, viewer, peer, &[1], net.now.0) > 0)
        .count();
    assert!(askers >= 2, "block 1 asked of {askers} peers");
    assert!(
        net.nodes[viewer].origin_log.is_empty(),
        "{:?}",
        net.nodes[viewer].origin_log
    );
}

#[test]
fn a_newcomer_with_one_peer_still_takes_every_urgent_block_from_it() {
    // Asked for little until it has delivered, a lone peer must still carry
    // a newcomer's start without the origin.
    let mut net = Net::new(title(30, 150_000));
    let peer = net.add_capped_seed(1_000_000, Net::config(1));
    let viewer = net.add(Net::config(2));
    net.connect(peer, viewer);
    net.start_then_play(viewer, 0, 1_800);
    net.run_for(10_000);
    let urgent = [1, 2, 3, 4, 5, 6];
    let bytes: u64 = urgent
        .iter()
        .map(|&b| net.title.layout.info(BlockId(b)).entry.size)
        .sum();
    assert_eq!(asked_of(&net, viewer, peer, &urgent, net.now.0), bytes);
    assert_eq!(net.origin_bytes, 0, "{:?}", net.nodes[viewer].origin_log);
}

#[test]
fn a_newcomer_asks_for_nothing_past_its_first_seconds_until_its_first_frame() {
    // Prefetch arriving during the start shares the newcomer's link (and a
    // tab's main thread) with the blocks its first frame waits for.
    let (mut net, peer, viewer) = three_seconds_of_starting_beside_a_seed();
    let first_seconds = [1, 2, 3, 4];
    let past_the_urgent_window: Vec<u32> = (6..=30).collect();
    assert!(
        first_seconds
            .iter()
            .all(|&b| net.delivered(viewer).contains(&BlockId(b)))
    );
    assert_eq!(
        asked_of(&net, viewer, peer, &past_the_urgent_window, net.now.0),
        0,
        "{:?}",
        net.nodes[viewer].sent
    );
    // Playing, it fills its horizon.
    net.play(viewer, 0, PlayState::Playing);
    net.run_for(2_000);
    assert!(asked_of(&net, viewer, peer, &past_the_urgent_window, net.now.0) > 0);
    assert!(net.nodes[viewer].origin_log.is_empty());
}

#[test]
fn a_viewer_whose_player_is_behind_asks_for_nothing_past_its_urgent_window_until_it_catches_up() {
    // A tab's one thread both takes peers' data and feeds its media buffers:
    // prefetch arriving while its player has not yet buffered what it was
    // handed is what keeps the player from catching up.
    let (mut net, peer, viewer) = three_seconds_of_starting_beside_a_seed();
    let held_before_playing = net.delivered(viewer).len();
    assert!(held_before_playing >= 4, "{:?}", net.delivered(viewer));
    // The first frame, with one block of the four it holds in its buffer.
    net.play(viewer, 0, PlayState::Playing);
    let now = net.now;
    net.nodes[viewer].engine.handle_player_buffered(2_000, now);
    net.run_for(2_000);
    let past_the_urgent_window: Vec<u32> = (8..=30).collect();
    assert_eq!(
        asked_of(&net, viewer, peer, &past_the_urgent_window, net.now.0),
        0,
        "{:?}",
        net.nodes[viewer].sent
    );
    // It still takes what its next seconds need.
    assert!(net.delivered(viewer).len() > held_before_playing);
    // Caught up, it fills its horizon.
    let now = net.now;
    net.nodes[viewer].engine.handle_player_buffered(8_000, now);
    net.run_for(2_000);
    assert!(asked_of(&net, viewer, peer, &past_the_urgent_window, net.now.0) > 0);
    assert!(net.nodes[viewer].origin_log.is_empty());
}
