//! One small deterministic scenario per engine rule, with real content: every
//! message crosses the wire encoder, every chunk is checked against the signed
//! Merkle roots, and invariants are checked after every step.

mod common;

use common::{Net, net, request_or_cancel, title};
use telly_proto::wire::{BlockId, GoodbyeReason, chunk_len};
use telly_swarm::{Config, Millis, PlayState};

/// A peer holding the whole title, and a viewer linked to it starting to play.
fn seed_and_starting_viewer() -> (Net, usize, usize) {
    let mut net = net();
    let seed = net.add(Net::config(1));
    net.seed_all(seed);
    let viewer = net.add(Net::config(2));
    net.connect(seed, viewer);
    net.run_for(100);
    net.play(viewer, 0, PlayState::Starting);
    (net, seed, viewer)
}

#[test]
fn a_lone_viewer_takes_everything_from_the_origin_just_in_time() {
    let mut net = net();
    let viewer = net.add(Net::config(1));
    net.play(viewer, 0, PlayState::Starting);
    net.run_for(200);
    net.play(viewer, 0, PlayState::Playing);
    net.run_for(20_000);
    assert_eq!(net.delivered(viewer), net.all_blocks());
    assert_eq!(net.origin_bytes, net.title.layout.total_bytes());
    // No block was fetched long before it was needed: a lone viewer spreads its
    // fetches over at most `origin_spread_ms` plus the margin ahead of the playhead.
    for &(at, block, _, _) in &net.nodes[viewer].origin_log {
        let start = net.title.layout.deadline_time(block);
        assert!(
            start <= at.0 + 200 + Config::default().origin_spread_ms + 2_000,
            "{block:?} fetched at {at:?}"
        );
    }
}

#[test]
fn a_viewer_alone_starts_from_the_origin_at_once() {
    let mut net = net();
    let viewer = net.add(Net::config(1));
    net.play(viewer, 0, PlayState::Starting);
    net.run_for(2_000);
    // Nobody announced its first blocks: it waits for have-maps (0.3 s), not
    // for the whole startup budget (1.8 s).
    let first_frame = net.nodes[viewer]
        .delivered
        .iter()
        .find(|d| d.1 == BlockId(1))
        .map(|d| d.0);
    assert!(first_frame.is_some_and(|at| at.0 < 600), "{first_frame:?}");
}

#[test]
fn a_viewer_the_tracker_found_alone_does_not_look_around() {
    let mut net = net();
    let viewer = net.add(Net::config(1));
    let now = net.now;
    net.nodes[viewer].engine.handle_joined(0, now);
    net.play(viewer, 0, PlayState::Starting);
    net.run_for(1);
    // No have-map can come: its first blocks are asked of the origin at once,
    // not after the 0.3 s a viewer with peers on the way gives their have-maps.
    let first = net.nodes[viewer].origin_log.first().map(|o| o.0);
    assert_eq!(first, Some(now), "{:?}", net.nodes[viewer].origin_log);
    // A viewer offered peers does look around.
    let mut net = self::net();
    let viewer = net.add(Net::config(1));
    net.nodes[viewer].engine.handle_joined(2, Millis(0));
    net.play(viewer, 0, PlayState::Starting);
    net.run_for(250);
    assert!(net.nodes[viewer].origin_log.is_empty());
}

#[test]
fn a_viewer_waits_for_the_have_maps_of_peers_on_their_way_however_slow_their_links() {
    // The tracker answers late and the link takes 0.7 s: the peer holds the
    // title, and the viewer takes nothing from the origin.
    let mut net = net();
    let seed = net.add(Net::config(1));
    net.seed_all(seed);
    let viewer = net.add(Net::config(2));
    net.nodes[viewer].engine.handle_joining(Millis(0));
    net.play(viewer, 0, PlayState::Starting);
    net.run_for(400);
    let now = net.now;
    net.nodes[viewer].engine.handle_joined(1, now);
    net.run_for(300);
    assert!(net.nodes[viewer].origin_log.is_empty());
    net.connect(seed, viewer);
    net.run_for(1_000);
    assert!(net.delivered(viewer).contains(&BlockId(1)));
    assert_eq!(net.origin_bytes, 0);

    // The peer holds none of the first blocks: the viewer looks around for
    // 0.3 s from its have-map, then takes them from the origin.
    let mut net = self::net();
    let empty = net.add(Net::config(1));
    let viewer = net.add(Net::config(2));
    net.nodes[viewer].engine.handle_joined(1, Millis(0));
    net.play(viewer, 0, PlayState::Starting);
    net.run_for(700);
    assert!(net.nodes[viewer].origin_log.is_empty());
    let linked = net.now;
    net.connect(empty, viewer);
    net.run_for(1_000);
    let first = net.nodes[viewer].origin_log.first().map(|o| o.0);
    assert!(
        first.is_some_and(|at| at >= linked + 300 && at <= linked + 400),
        "linked at {linked:?}, first origin fetch {first:?}"
    );
}

#[test]
fn a_viewer_takes_even_its_first_block_from_a_ready_peer() {
    let (mut net, seed, viewer) = seed_and_starting_viewer();
    net.run_for(1_000);
    let first_media = BlockId(1);
    assert!(net.delivered(viewer).contains(&first_media));
    net.play(viewer, 0, PlayState::Playing);
    net.run_for(20_000);
    assert_eq!(net.delivered(viewer), net.all_blocks());
    assert_eq!(
        net.origin_bytes, 0,
        "no origin bytes while a peer can deliver"
    );
    let stats = net.nodes[viewer].engine.stats(net.now);
    assert_eq!(stats.bytes_from_peers, net.title.layout.total_bytes());
    assert!(stats.peer_rates[&telly_swarm::PeerId(seed as u64)] > 0);
}

#[test]
fn a_newcomer_asks_for_its_init_segment_a_peer_it_keeps_busy_with_prefetching() {
    // A title long enough that prefetching keeps the viewer's pipeline to
    // the peer full for seconds.
    let mut net = Net::new(title(40, 150_000));
    let peer = net.add_capped(1_000_000, Net::config(1));
    let media: Vec<BlockId> = (1..41).map(BlockId).collect();
    net.seed_blocks(peer, &media);
    let viewer = net.add(Net::config(2));
    net.connect(peer, viewer);
    net.run_for(100);
    net.play(viewer, 0, PlayState::Starting);
    net.run_for(10);
    // The init segment, one small chunk, reaches the peer once the viewer
    // has asked it for its first blocks.
    net.seed_blocks(peer, &[BlockId(0)]);
    net.run_for(2_000);
    assert!(net.delivered(viewer).contains(&BlockId(0)));
    assert!(
        net.nodes[viewer]
            .origin_log
            .iter()
            .all(|o| o.1 != BlockId(0)),
        "{:?}",
        net.nodes[viewer].origin_log
    );
}

#[test]
fn prefetch_asks_the_holder_least_far_ahead_of_the_block() {
    // Two peers hold the viewer's next twenty seconds; one of them holds the
    // rest of the title too. Left to room alone (a tie between fresh peers
    // goes to the higher id, `far`), prefetch would ask `far` for both.
    let mut net = Net::new(title(40, 150_000));
    let near = net.add(Net::config(1));
    let soon: Vec<BlockId> = (0..=10).map(BlockId).collect();
    net.seed_blocks(near, &soon);
    let far = net.add(Net::config(2));
    net.seed_all(far);
    let viewer = net.add(Net::config(3));
    net.connect(near, viewer);
    net.connect(far, viewer);
    net.run_for(100);
    net.start_then_play(viewer, 0, 1_000);
    net.run_for(3_000);
    let asked = |of: usize, blocks: std::ops::RangeInclusive<u32>| -> usize {
        net.nodes[viewer]
            .sent
            .iter()
            .filter(|(_, to, _)| *to == of)
            .filter_map(|(_, _, msg)| request_or_cancel(msg))
            .filter(|&(kind, block, _, _)| kind == "Request" && blocks.contains(&block))
            .map(|(_, _, _, count)| usize::from(count))
            .sum()
    };
    // Blocks 5 to 10 start 8 to 18 s in, beyond the urgent window: prefetched.
    assert_eq!(asked(far, 5..=10), 0);
    assert_eq!(asked(near, 5..=10), 6 * 3);
    // What only `far` holds is still asked of it.
    assert!(asked(far, 11..=40) > 0);
}

#[test]
fn hosts_that_hash_with_their_own_sha256_swarm_alike() {
    // The browser hands the engine the Merkle leaves of what it reads back from
    // its store or fetches whole (WebCrypto); the seed's loads and the second
    // viewer's origin fetches take that path, and every block still arrives.
    let mut net = net();
    let seed = net.add(Net::config(1));
    net.nodes[seed].host_leaves = true;
    net.seed_blocks(seed, &[BlockId(0), BlockId(1), BlockId(2), BlockId(3)]);
    let viewer = net.add(Net::config(2));
    net.nodes[viewer].host_leaves = true;
    net.connect(seed, viewer);
    net.start_then_play(viewer, 0, 1_000);
    net.run_for(25_000);
    assert_eq!(net.delivered(viewer), net.all_blocks());
    let stats = net.nodes[viewer].engine.stats(net.now);
    assert!(
        stats.bytes_from_peers > 0,
        "the seed's loaded blocks served"
    );
    assert!(stats.bytes_from_origin > 0, "the rest fetched whole");
    assert_eq!(
        stats.bytes_from_peers + stats.bytes_from_origin,
        net.title.layout.total_bytes()
    );
}

#[test]
fn a_starting_viewer_tells_uploaders_how_soon_its_next_blocks_may_be_due() {
    // While it starts, a viewer plans as if its first frame came at the end of
    // the startup budget (1.8 s), the latest it may; it comes as soon as the
    // first block is in. Its requests for the blocks after the first tell the
    // uploader the soonest they can be due (as if the frame were now), or the
    // uploader puts them behind other work and they come late once it plays.
    // That, and not that less the origin's margin and answer time: an
    // uploader turns a chunk away once it cannot send it by the time told,
    // and it turned a newcomer's second block away while it could still come.
    let mut net = net();
    let seed = net.add(Net::config(1));
    net.seed_all(seed);
    let viewer = net.add_viewer(Net::config(2), 0, PlayState::Starting, seed);
    net.run_for(50);
    let told = |block: u32| -> Vec<u64> {
        net.trace
            .iter()
            .filter(|line| line.contains(&format!("{viewer}->")))
            .filter_map(|line| {
                line.split_once(&format!("request {block}/"))?
                    .1
                    .split_once(" by ")
            })
            .map(|(_, ms)| ms.parse().expect("a deadline in ms"))
            .collect()
    };
    let (first, second, third) = (told(1), told(2), told(3));
    assert!(!first.is_empty() && !second.is_empty() && !third.is_empty());
    // The first block keeps the budget; the next ones are due 2 and 4 s after it.
    assert!(
        first.iter().all(|&ms| (1_000..1_800).contains(&ms)),
        "{first:?}"
    );
    assert!(second.iter().all(|&ms| ms == 2_000), "{second:?}");
    assert!(third.iter().all(|&ms| ms == 4_000), "{third:?}");
}

#[test]
fn viewers_starting_together_spread_the_origin_fetches_of_blocks_already_in_view() {
    // Eight viewers start the title at the same moment, linked to each other,
    // and nobody holds anything: past the first blocks, one of them should take
    // each block from the origin and the others get it from it. The blocks
    // counted (ids 4 to 12, after the init segment) are due 6 to 22 s after
    // the start, inside the 55 s spread window: with the lead cut at the time
    // left, a longer draw fired at once (a quarter of the viewers for the
    // block due at 6 s), and three viewers fetched the first of them.
    let mut net = Net::new(title(16, 60_000));
    let viewers: Vec<usize> = (0..8).map(|seed| net.add(Net::config(seed))).collect();
    net.connect_all(&viewers);
    net.run_for(100);
    for &v in &viewers {
        net.play(v, 0, PlayState::Starting);
    }
    net.run_for(1_500);
    for &v in &viewers {
        net.play(v, 0, PlayState::Playing);
    }
    net.run_for(34_000);
    let mut fetchers = vec![0usize; 13];
    for &v in &viewers {
        assert_eq!(net.delivered(v), net.all_blocks());
        let mut blocks: Vec<BlockId> = net.nodes[v].origin_log.iter().map(|f| f.1).collect();
        blocks.dedup();
        for block in blocks {
            if let Some(count) = fetchers.get_mut(block.0 as usize).filter(|_| block.0 >= 4) {
                *count += 1;
            }
        }
    }
    let duplicates: usize = fetchers.iter().map(|&n| n.saturating_sub(1)).sum();
    assert!(
        duplicates <= 1,
        "viewers fetching each block from the origin: {fetchers:?}"
    );
}

#[test]
fn a_viewer_beginning_to_play_does_not_fetch_at_once_what_its_start_up_would_have_spread() {
    // Only a playing viewer spreads its early origin fetches, so a lead that
    // fell in its start-up fired the moment it began playing: at a premiere,
    // of the newcomers whose peers did not yet hold a block 14 s ahead, one
    // in fifty took it from the origin then (19 of them for one block).
    // Leads are drawn within the time from when the viewer begins to play.
    let mut fired = Vec::new();
    for seed in 0..24 {
        let mut net = Net::new(title(40, 60_000));
        let peer = net.add(Net::config(100 + seed));
        net.seed_blocks(peer, &[BlockId(0), BlockId(1), BlockId(2)]);
        let viewer = net.add(Net::config(seed));
        net.connect(peer, viewer);
        let began = net.start_then_play(viewer, 0, 1_500);
        fired.extend(
            net.nodes[viewer]
                .origin_log
                .iter()
                .filter(|f| f.0 == began)
                .map(|f| (seed, f.1.0)),
        );
    }
    assert!(
        fired.is_empty(),
        "(seed, block) fetched the moment playing began: {fired:?}"
    );
}

#[test]
fn a_peer_sending_bad_data_is_banned_and_nothing_it_sent_is_delivered() {
    let mut net = net();
    let cheat = net.add(Net::config(1));
    net.seed_all(cheat);
    net.nodes[cheat].corrupt = true;
    let viewer = net.add(Net::config(2));
    net.connect(cheat, viewer);
    net.start_then_play(viewer, 0, 500);
    net.run_for(20_000);
    // Delivery asserts each block's SHA-256 (see common::Net::perform).
    assert_eq!(net.delivered(viewer), net.all_blocks());
    assert!(
        net.nodes[viewer]
            .disconnects
            .contains(&(cheat, GoodbyeReason::BadData))
    );
    let stats = net.nodes[viewer].engine.stats(net.now);
    assert_eq!(stats.peers_banned, 1);
    assert_eq!(stats.bytes_from_peers, 0);
    // Never asked again: a reconnection is refused at the handshake.
    let before = net.nodes[viewer].disconnects.len();
    net.connect(cheat, viewer);
    net.run_for(200);
    assert_eq!(net.nodes[viewer].disconnects.len(), before + 1);
    assert_eq!(net.nodes[viewer].engine.stats(net.now).peers_connected, 0);
}

#[test]
fn grants_that_are_expired_or_for_another_swarm_are_refused() {
    let mut net = net();
    let viewer = net.add(Net::config(1));
    let expired = net.title.grant("old", 1_000, net.title.swarm_id);
    let a = net.add_with_grant(Net::config(2), expired);
    let other = net.title.grant(
        "elsewhere",
        2_000_000_000,
        telly_proto::Sha256Hash::of(b"x"),
    );
    let b = net.add_with_grant(Net::config(3), other);
    net.connect(viewer, a);
    net.connect(viewer, b);
    net.run_for(200);
    let reasons: Vec<_> = net.nodes[viewer].disconnects.clone();
    assert!(
        reasons.contains(&(a, GoodbyeReason::BadGrant)),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(b, GoodbyeReason::BadGrant)),
        "{reasons:?}"
    );
    assert_eq!(net.nodes[viewer].engine.stats(net.now).peers_refused, 2);
}

#[test]
fn a_sharing_only_engine_serves_what_it_holds_and_fetches_nothing() {
    let mut net = net();
    let sharer = net.add(Net::config(1));
    let held = net.title.bytes[1].clone();
    net.nodes[sharer].store.insert(BlockId(1), held);
    net.nodes[sharer].engine.handle_held_block(BlockId(1));
    net.nodes[sharer].engine.set_downloading(false);
    let viewer = net.add(Net::config(2));
    net.connect(sharer, viewer);
    net.play(sharer, 0, PlayState::Starting);
    net.play(viewer, 0, PlayState::Starting);
    net.run_for(200);
    net.play(viewer, 0, PlayState::Playing);
    net.run_for(20_000);
    assert_eq!(net.delivered(sharer), Vec::<BlockId>::new());
    assert_eq!(
        net.nodes[sharer].origin_log.len(),
        0,
        "a sharer fetches nothing"
    );
    assert_eq!(net.delivered(viewer), net.all_blocks());
    let served = net.nodes[sharer].engine.stats(net.now).bytes_uploaded;
    assert_eq!(served, net.title.layout.info(BlockId(1)).entry.size);
    // Watching turns fetching back on.
    net.nodes[sharer].engine.set_downloading(true);
    net.play(sharer, 0, PlayState::Playing);
    net.run_for(20_000);
    assert_eq!(net.delivered(sharer).len(), net.all_blocks().len() - 1);
}

#[test]
fn unrequested_data_or_news_of_it_is_a_protocol_violation() {
    use telly_swarm::{PeerId, PeerMessage};
    let data: std::sync::Arc<[u8]> = net().title.bytes[1][..65_536].into();
    let unrequested = [
        PeerMessage::Chunk {
            block: BlockId(1),
            index: 0,
            data,
        },
        PeerMessage::Sending {
            block: BlockId(1),
            index: 0,
        },
    ];
    for msg in unrequested {
        let mut net = net();
        let viewer = net.add(Net::config(1));
        let other = net.add(Net::config(2));
        net.connect(viewer, other);
        net.run_for(100);
        let now = net.now;
        net.nodes[viewer]
            .engine
            .handle_message(PeerId(other as u64), msg, now);
        net.pump(viewer);
        assert!(
            net.nodes[viewer]
                .disconnects
                .contains(&(other, GoodbyeReason::ProtocolViolation))
        );
    }
}

#[test]
fn a_relay_passes_on_chunks_before_its_block_is_complete() {
    let mut net = net();
    let seed = net.add(Net::config(1));
    net.seed_all(seed);
    net.nodes[seed].up_rate = 30.0; // 150 KB block in ~5 s
    let relay = net.add(Net::config(2));
    let tail = net.add(Net::config(3));
    net.connect(seed, relay);
    net.connect(relay, tail);
    net.run_for(100);
    net.play(relay, 0, PlayState::Paused);
    net.play(tail, 0, PlayState::Paused);
    net.run_for(30_000);
    // Some chunk of a block reached the tail from the relay before the relay had
    // the whole block.
    let relay_done: std::collections::HashMap<BlockId, Millis> = net.nodes[relay]
        .delivered
        .iter()
        .map(|d| (d.1, d.0))
        .collect();
    let early = net.nodes[relay].sent.iter().any(|(at, to, what)| {
        *to == tail
            && what.starts_with("Chunk")
            && relay_done.iter().any(|(b, done)| {
                what.starts_with(&format!("Chunk {{ block: BlockId({}),", b.0)) && at < done
            })
    });
    assert!(early, "no chunk was relayed before its block completed");
    assert_eq!(net.origin_bytes, 0);
}

#[test]
fn viewers_fetching_a_block_together_ask_its_holder_for_different_chunks() {
    // One holder with a slow uplink and four viewers prefetching together. In
    // index order every viewer would ask for a block's first chunk first, the
    // holder's first sends of the block would all be that chunk, and the
    // viewers would hold the same piece, with nothing to pass each other.
    let mut net = Net::new(title(12, 500_000));
    let seed = net.add(Net::config(1));
    net.seed_all(seed);
    net.nodes[seed].up_rate = 200.0; // a chunk every 0.33 s
    let viewers: Vec<usize> = (2..6).map(|s| net.add(Net::config(s))).collect();
    for &v in &viewers {
        net.connect(seed, v);
    }
    net.connect_all(&viewers);
    net.run_for(100);
    for &v in &viewers {
        net.play(v, 0, PlayState::Paused);
    }
    net.run_for(20_000);
    let chunk_of = |what: &str| -> Option<(u32, u16)> {
        let rest = what.strip_prefix("Chunk { block: BlockId(")?;
        let (block, rest) = rest.split_once("), index: ")?;
        let index: String = rest.chars().take_while(char::is_ascii_digit).collect();
        Some((block.parse().ok()?, index.parse().ok()?))
    };
    // The holder's first send of each block to each viewer.
    let mut firsts: std::collections::BTreeMap<u32, Vec<(usize, u16)>> = Default::default();
    for (_, to, what) in &net.nodes[seed].sent {
        if let Some((block, index)) = chunk_of(what) {
            let sends = firsts.entry(block).or_default();
            if !sends.iter().any(|&(v, _)| v == *to) {
                sends.push((*to, index));
            }
        }
    }
    let shared = firsts.values().filter(|sends| sends.len() > 1).count();
    let diverse = firsts
        .values()
        .filter(|sends| sends.iter().any(|&(_, i)| i != sends[0].1))
        .count();
    assert!(shared >= 4, "{firsts:?}");
    assert!(2 * diverse >= shared, "{diverse} of {shared}: {firsts:?}");
    // And they passed each other what they got.
    let traded = viewers.iter().any(|&v| {
        net.nodes[v]
            .sent
            .iter()
            .any(|(_, to, what)| viewers.contains(to) && what.starts_with("Chunk"))
    });
    assert!(traded);
    assert_eq!(net.origin_bytes, 0);
}

#[test]
fn prefetch_asks_no_more_than_the_viewers_own_link_takes_in_a_second() {
    // Twelve peers hold the whole title; the viewer's link takes 300 KB/s,
    // and its origin rate says so.
    let mut net = Net::new(title(40, 150_000));
    let viewer = net.add(Config {
        origin_rate: 300_000,
        ..Net::config(99)
    });
    net.nodes[viewer].down_rate = 300.0;
    for seed in 1..=12 {
        let peer = net.add(Net::config(seed));
        net.seed_all(peer);
        net.connect(peer, viewer);
    }
    net.start_then_play(viewer, 0, 1_500);
    net.run_for(20_000);
    // Prefetch asked for in its first 30 ms, before any answer could be
    // back (a 40 ms round trip); from block 6, since blocks 1-4 are the
    // urgent window's 8 s and block 5 enters it within 2 s.
    let chunk_bytes = |index: u16| chunk_len(150_000, usize::from(index));
    let prefetch: Vec<(Millis, usize)> = net.nodes[viewer]
        .sent
        .iter()
        .filter_map(|(at, _, msg)| Some((*at, request_or_cancel(msg)?)))
        .filter(|&(_, (kind, block, _, _))| kind == "Request" && block >= 6)
        .map(|(at, (_, _, first, count))| (at, (first..first + count).map(chunk_bytes).sum()))
        .collect();
    let opened = prefetch.first().expect("nothing prefetched").0;
    let at_once: usize = prefetch
        .iter()
        .filter(|(at, _)| at.0 < opened.0 + 30)
        .map(|(_, bytes)| bytes)
        .sum();
    assert!(
        at_once <= 300_000,
        "{at_once} bytes asked at once of a 300 KB/s link"
    );
    // The bound paces prefetch, it does not starve it.
    let delivered = net.delivered(viewer);
    for block in (6..=20).map(BlockId) {
        assert!(delivered.contains(&block), "{block:?} not delivered");
    }
    assert!(
        net.nodes[viewer].origin_log.iter().all(|o| o.1.0 < 6),
        "{:?}",
        net.nodes[viewer].origin_log
    );
}

#[test]
fn pipelines_grow_with_a_fast_peer() {
    let mut net = Net::new(title(30, 600_000));
    let seed = net.add(Config {
        upload_cap: 50_000_000,
        per_peer_upload_cap: 50_000_000,
        ..Net::config(1)
    });
    net.seed_all(seed);
    net.nodes[seed].up_rate = 20_000.0; // 20 MB/s
    net.latency_ms = 100;
    let viewer = net.add(Net::config(2));
    net.connect(seed, viewer);
    net.run_for(300);
    net.play(viewer, 0, PlayState::Playing);
    net.run_for(3_000);
    // With 200 ms round trips and 20 MB/s, a two-chunk window would cap the rate
    // at 640 KB/s; the bandwidth-delay product lets it run much faster.
    let got = net.nodes[viewer].engine.stats(net.now).bytes_from_peers;
    assert!(got > 4_000_000, "only {got} bytes in 3 s");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = || {
        let mut net = net();
        let a = net.add(Net::config(1));
        net.seed_all(a);
        let b = net.add(Net::config(2));
        let c = net.add(Net::config(3));
        net.connect(a, b);
        net.connect(b, c);
        net.connect(a, c);
        net.run_for(100);
        net.play(b, 0, PlayState::Playing);
        net.play(c, 0, PlayState::Playing);
        net.run_for(10_000);
        net.trace
    };
    assert_eq!(run(), run());
}

#[test]
fn a_chunk_falling_due_does_not_wait_for_another_origin_fetch_of_its_block() {
    // Blocks of eight chunks; the origin answers in 2.5 s, as a loaded one did.
    // One peer never answers, the other leaves with chunks in flight: chunks
    // of one block fall due one after another, each with nobody to ask.
    let mut net = Net::new(title(9, 500_000));
    net.origin_delay_ms = 2_500;
    let (_, leaver, viewer) = net.add_viewer_of_mute_and_answering_seeds(300.0);
    net.start_then_play(viewer, 0, 400);
    let playing_from = net.now;
    net.run_for(4_000);
    net.disconnect(leaver, viewer);
    net.run_for(30_000);
    // Once the playhead passes a block the engine stops fetching it, so a
    // chunk that waited for its block's earlier origin fetch left a hole for
    // good (block 4 here, before origin fetches were per run of chunks).
    assert_eq!(net.delivered(viewer), net.all_blocks(), "{:?}", net.trace);
    let log = &net.nodes[viewer].origin_log;
    let overlapping = log.iter().enumerate().any(|(i, &(at, block, ..))| {
        log[i + 1..]
            .iter()
            .any(|&(later, b, ..)| b == block && later < at + net.origin_delay_ms)
    });
    assert!(
        overlapping,
        "no block had two origin fetches at once: {log:?}"
    );
    for &(at, block) in &net.nodes[viewer].delivered {
        let due = playing_from + net.title.layout.deadline_time(block);
        assert!(
            at <= due + net.origin_delay_ms,
            "{block:?} delivered at {at:?}, due {due:?}"
        );
    }
}

#[test]
fn a_block_coming_into_view_is_asked_for_with_no_other_input() {
    // A 40-block title; the viewer looks 10 s ahead, its peer holds everything
    // and says so once, at the handshake. Once the window is full nothing
    // else arrives, yet each block must be asked for as the playhead brings
    // it into view, from the peer, and in time.
    let mut net = Net::new(title(40, 150_000));
    let seed = net.add(Net::config(1));
    net.seed_all(seed);
    let viewer = net.add(Config {
        horizon_ms: 10_000,
        urgent_window_ms: 4_000,
        origin_spread_ms: 6_000,
        ..Net::config(2)
    });
    net.connect(seed, viewer);
    let started = net.start_then_play(viewer, 0, 1_000);
    net.run_for(80_000);
    assert_eq!(net.delivered(viewer), net.all_blocks());
    assert_eq!(net.late_deliveries(viewer, started), vec![]);
    assert!(
        net.nodes[viewer].origin_log.is_empty(),
        "{:?}",
        net.nodes[viewer].origin_log
    );
}
