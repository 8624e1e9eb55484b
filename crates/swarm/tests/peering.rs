//! Rules about whom a viewer stays linked to, as small deterministic scenarios.

mod common;

use common::{Net, net};
use telly_proto::wire::{BlockId, GoodbyeReason};
use telly_swarm::{Config, PeerLimits, PlayState};

#[test]
fn a_viewer_short_of_sources_lets_followers_go_idle_ones_first_and_never_a_source() {
    let mut net = net();
    let viewer = net.add(Net::config(1));
    let source = net.add(Net::config(2));
    // A tab sharing what it holds and fetching nothing: it asks us nothing.
    let idle = net.add(Config {
        download: false,
        ..Net::config(3)
    });
    let served = net.add(Net::config(4));
    lacks_what_a_mute_source_holds(&mut net, viewer, source);
    for other in [idle, served] {
        net.connect(viewer, other);
    }
    net.run_for(100);
    net.play(viewer, 0, PlayState::Playing);
    net.play(served, 0, PlayState::Starting);
    net.run_for(500);
    let now = net.now;
    assert_eq!(net.nodes[viewer].engine.sources(now), Some(1));

    let engine = &mut net.nodes[viewer].engine;
    assert_eq!(engine.shed_followers(1, now), 1);
    net.pump(viewer);
    assert_eq!(
        net.nodes[viewer].disconnects,
        vec![(idle, GoodbyeReason::TooManyPeers)],
        "the follower it serves nothing goes first"
    );

    let engine = &mut net.nodes[viewer].engine;
    assert_eq!(engine.shed_followers(5, now), 1, "the source stays");
    net.pump(viewer);
    assert_eq!(
        net.nodes[viewer].disconnects,
        vec![
            (idle, GoodbyeReason::TooManyPeers),
            (served, GoodbyeReason::TooManyPeers)
        ]
    );
    assert_eq!(net.nodes[viewer].engine.sources(now), Some(1));
    net.run_for(2_000);
    // The follower let go saw a goodbye, not a fault: it may come back later.
    net.nodes[viewer].engine.check_invariants();
    assert!(net.nodes[served].disconnects.is_empty());
}

#[test]
fn a_full_viewer_makes_room_for_one_more_by_letting_an_idle_peer_go_never_one_it_serves_or_needs() {
    let mut net = net();
    let viewer = net.add(Net::config(1));
    let source = net.add(Net::config(2));
    let idle = net.add(Config {
        download: false,
        ..Net::config(3)
    });
    let served = net.add(Net::config(4));
    lacks_what_a_mute_source_holds(&mut net, viewer, source);
    for other in [idle, served] {
        net.connect(viewer, other);
    }
    net.run_for(100);
    net.play(viewer, 0, PlayState::Playing);
    net.run_for(1_000);
    // A new link is not idle: its peer may not have asked yet.
    let now = net.now;
    assert!(!net.nodes[viewer].engine.has_idle_peer(now));
    assert!(!net.nodes[viewer].engine.make_room(now));
    net.run_until(telly_swarm::Millis(5_000));
    // It asks for the blocks the viewer relays from the origin as it plays.
    net.play(served, 0, PlayState::Playing);
    net.run_until(telly_swarm::Millis(10_500));
    let now = net.now;
    let engine = &mut net.nodes[viewer].engine;
    assert!(engine.has_idle_peer(now));
    assert!(engine.make_room(now));
    net.pump(viewer);
    assert_eq!(
        net.nodes[viewer].disconnects,
        vec![(idle, GoodbyeReason::TooManyPeers)]
    );
    // Left: a peer that asked of it lately, and its source.
    let engine = &mut net.nodes[viewer].engine;
    assert!(!engine.has_idle_peer(now));
    assert!(!engine.make_room(now));
    net.pump(viewer);
    assert_eq!(net.nodes[viewer].disconnects.len(), 1);

    // Without its source nobody it has holds what it lacks: it is stranded,
    // and says so when it dials.
    assert!(!net.nodes[viewer].engine.stranded(now));
    net.disconnect(viewer, source);
    let now = net.now;
    assert!(net.nodes[viewer].engine.stranded(now));
}

#[test]
fn a_full_viewer_short_of_sources_makes_room_and_asks_for_them_one_that_lacks_nothing_sheds_none() {
    let limits = PeerLimits { target: 2, max: 3 };
    let mut net = net();
    let short = net.add(Net::config(1));
    let full = net.add(Net::config(2));
    let source = net.add(Net::config(3));
    lacks_what_a_mute_source_holds(&mut net, short, source);
    net.seed_all(full);
    net.connect(full, source);
    // Each viewer has followers of its own, which fetch from it alone.
    for (viewer, seed) in [(short, 4), (full, 6)] {
        for follower in [seed, seed + 1] {
            let follower = net.add(Net::config(follower));
            net.connect(viewer, follower);
        }
    }
    net.run_for(100);
    net.play(short, 0, PlayState::Playing);
    net.play(full, 0, PlayState::Playing);
    net.run_for(500);
    let now = net.now;

    // One source of the two it wants, every place taken: one follower goes,
    // and the place it leaves is for a source.
    assert_eq!(net.nodes[short].engine.peers_to_find(3, limits, now), 1);
    net.pump(short);
    assert_eq!(net.nodes[short].disconnects.len(), 1);

    // Holding the whole title, the peers it has are its sources for later
    // and followers it serves: nobody is let go, nobody more is looked for.
    assert_eq!(net.nodes[full].engine.sources(now), Some(0));
    assert_eq!(net.nodes[full].engine.peers_to_find(3, limits, now), 0);
    net.pump(full);
    assert!(net.nodes[full].disconnects.is_empty());
    // Below its target it still asks, to be found by those who need it.
    assert_eq!(
        net.nodes[full]
            .engine
            .peers_to_find(1, PeerLimits { target: 2, max: 3 }, now),
        1
    );
}

#[test]
fn a_viewer_whose_peers_lack_its_next_blocks_asks_for_more_peers_while_its_list_has_room() {
    let limits = PeerLimits { target: 2, max: 6 };
    let mut net = net();
    let viewer = net.add(Net::config(1));
    let first: Vec<BlockId> = (0..5).map(BlockId).collect();
    net.seed_blocks(viewer, &first);
    // Two peers a few seconds ahead hold the next blocks, not those after.
    for seed in [2, 3] {
        add_mute_holder(&mut net, viewer, seed, 7);
    }
    net.run_for(100);
    net.play(viewer, 0, PlayState::Paused);
    net.run_for(100);
    let now = net.now;
    assert_eq!(net.nodes[viewer].engine.sources(now), Some(2));
    assert_eq!(
        net.nodes[viewer].engine.peers_to_find(2, limits, now),
        2,
        "sources enough, but none for the blocks after theirs"
    );
    // With every place taken it asks for none, and lets no follower go.
    assert_eq!(net.nodes[viewer].engine.peers_to_find(6, limits, now), 0);
    net.pump(viewer);
    assert!(net.nodes[viewer].disconnects.is_empty());

    let far = net.add(Net::config(4));
    net.seed_all(far);
    net.nodes[far].mute = true;
    net.connect(viewer, far);
    net.run_for(100);
    let now = net.now;
    assert_eq!(net.nodes[viewer].engine.sources(now), Some(3));
    assert_eq!(
        net.nodes[viewer].engine.peers_to_find(3, limits, now),
        0,
        "every block ahead has a holder"
    );
}

#[test]
fn a_host_reusing_a_live_peers_name_starts_that_peer_afresh() {
    let mut net = net();
    let viewer = net.add(Net::config(1));
    let seed = net.add(Net::config(2));
    net.seed_all(seed);
    net.connect(viewer, seed);
    net.run_for(100);
    // The host connects the same name again before the first link's end
    // reached the engine: one peer, counted once, its have-map still to come.
    let now = net.now;
    net.nodes[viewer]
        .engine
        .handle_peer_connected(telly_swarm::PeerId(seed as u64), now);
    net.nodes[viewer].engine.check_invariants();
    assert_eq!(net.nodes[viewer].engine.stats(now).peers_connected, 1);
    assert_eq!(net.nodes[viewer].engine.sources(now), Some(0));
}

/// The viewer holds the title's first seconds; the source all of it but never
/// answers, so the viewer keeps lacking what the source holds.
/// Connects `viewer` to a new peer that holds the title's first `blocks`
/// blocks and never sends them.
fn add_mute_holder(net: &mut Net, viewer: usize, config_seed: u64, blocks: u32) -> usize {
    let holder = net.add(Net::config(config_seed));
    let held: Vec<BlockId> = (0..blocks).map(BlockId).collect();
    net.seed_blocks(holder, &held);
    net.nodes[holder].mute = true;
    net.connect(viewer, holder);
    holder
}

fn lacks_what_a_mute_source_holds(net: &mut Net, viewer: usize, source: usize) {
    let first: Vec<BlockId> = (0..5).map(BlockId).collect();
    net.seed_blocks(viewer, &first);
    net.seed_all(source);
    net.nodes[source].mute = true;
    net.connect(viewer, source);
}

#[test]
fn a_viewer_that_jumped_past_its_peers_is_stranded_while_it_waits_not_only_once_it_plays() {
    let mut net = Net::new(common::title(40, 150_000));
    let viewer = net.add(Net::config(1));
    // The peer holds the init and the title's first 20 s: a source while the
    // viewer is there.
    add_mute_holder(&mut net, viewer, 2, 11);
    net.run_for(100);
    net.play(viewer, 0, PlayState::Playing);
    net.run_for(500);
    let now = net.now;
    assert_eq!(net.nodes[viewer].engine.sources(now), Some(1));
    assert!(!net.nodes[viewer].engine.stranded(now));

    // It jumps a minute ahead: its one peer holds nothing it lacks there, and
    // it asks the tracker at once, as a stranded viewer, before it plays.
    net.play(viewer, 60_000, PlayState::Stalled);
    let now = net.now;
    assert_eq!(net.nodes[viewer].engine.sources(now), Some(0));
    assert!(net.nodes[viewer].engine.stranded(now));

    // Paused by hand, it is in no hurry.
    net.play(viewer, 60_000, PlayState::Paused);
    assert!(!net.nodes[viewer].engine.stranded(net.now));
}
