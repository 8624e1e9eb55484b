//! The upload rules (slots, caps, fairness, whom to serve first), one small
//! deterministic scenario each, like `rules.rs`.

mod common;

use common::{Net, net, title};
use telly_proto::wire::BlockId;
use telly_swarm::{Config, PlayState};

#[test]
fn upload_slots_are_bounded_and_freed_slots_go_to_the_refused() {
    let mut net = net();
    let seed = net.add(Config {
        upload_slots: 1,
        // Shorter than a choked viewer's pause before it asks again
        // (`CHOKE_PAUSE_MS`), which would otherwise take the idle slot itself.
        slot_idle_ms: 200,
        ..Net::config(1)
    });
    net.seed_all(seed);
    let first = net.add(Net::config(2));
    let second = net.add(Net::config(3));
    net.connect(seed, first);
    net.run_for(100);
    net.play(first, 0, PlayState::Playing);
    net.run_for(50);
    net.connect(seed, second);
    net.run_for(100);
    net.play(second, 0, PlayState::Playing);
    net.run_for(300);
    let sent: Vec<_> = net.nodes[seed]
        .sent
        .iter()
        .filter(|s| s.1 == second)
        .map(|s| s.2.clone())
        .collect();
    assert!(sent.iter().any(|s| s == "Choke"), "{sent:?}");
    net.run_for(30_000);
    // The slot changes hands as the two ask (a holder with nothing due soon
    // yields it to a request due sooner); a slot freed, its holder idle, goes
    // to the one refused.
    let log = &net.nodes[seed].sent;
    let unchoked: Vec<_> = log.iter().filter(|s| s.2 == "Unchoke").collect();
    assert!(!unchoked.is_empty(), "{log:?}");
    for (at, to, _) in unchoked {
        let refused = log
            .iter()
            .any(|s| s.1 == *to && s.2 == "Choke" && s.0 < *at);
        assert!(refused, "unchoked {to} at {at:?} unrefused: {log:?}");
    }
    assert_eq!(net.delivered(first), net.all_blocks());
    assert_eq!(net.delivered(second), net.all_blocks());
}

#[test]
fn a_newcomer_in_a_hurry_takes_the_slot_of_a_peer_that_is_not() {
    let mut net = net();
    let seed = net.add_capped_seed(
        200_000,
        Config {
            upload_slots: 1,
            slot_idle_ms: 60_000,
            ..Net::config(1)
        },
    );
    // A paused viewer prefetches without hurry and holds the only slot.
    let idle = net.add_viewer(Net::config(2), 0, PlayState::Paused, seed);
    net.run_for(400);
    let newcomer = net.add_viewer(Net::config(3), 0, PlayState::Starting, seed);
    net.run_for(1_000);
    let to = |node: usize| -> Vec<String> {
        net.nodes[seed]
            .sent
            .iter()
            .filter(|s| s.1 == node)
            .map(|s| s.2.clone())
            .collect()
    };
    assert!(to(idle).iter().any(|s| s == "Choke"), "{:?}", to(idle));
    // Served at once. (Asking only for its first seconds, the newcomer may
    // find its queue empty and the slot gone again; its next urgent request
    // takes it back the same way.)
    let first_chunk = to(newcomer).iter().position(|s| s.starts_with("Chunk"));
    let first_choke = to(newcomer).iter().position(|s| s == "Choke");
    assert!(
        first_chunk.is_some_and(|chunk| first_choke.is_none_or(|choke| chunk < choke)),
        "{:?}",
        to(newcomer)
    );
    // Its first frame is up; it plays on.
    net.play(newcomer, 0, PlayState::Playing);
    net.run_for(60_000);
    assert_eq!(net.delivered(idle), net.all_blocks());
    assert_eq!(net.delivered(newcomer), net.all_blocks());
}

#[test]
fn an_uploader_rejects_a_chunk_that_cannot_arrive_before_the_requester_gives_up() {
    let mut net = net();
    // 64 KiB takes this seed 1.6 s to send: more than a newcomer waits.
    let seed = net.add_capped_seed(40_000, Net::config(1));
    let viewer = net.add(Net::config(2));
    net.play(viewer, 0, PlayState::Starting);
    net.connect(seed, viewer);
    net.run_for(2_000);
    net.play(viewer, 0, PlayState::Playing);
    net.run_for(28_000);
    let to_viewer: Vec<&String> = net.nodes[seed]
        .sent
        .iter()
        .filter(|s| s.1 == viewer)
        .map(|s| &s.2)
        .collect();
    assert!(
        to_viewer
            .iter()
            .any(|s| s.starts_with("Reject { block: BlockId(1),")),
        "{to_viewer:?}"
    );
    assert!(
        !to_viewer
            .iter()
            .any(|s| s.starts_with("Chunk { block: BlockId(1),")),
        "{to_viewer:?}"
    );
    // Nothing the seed spent its upload on was thrown away.
    assert_eq!(net.nodes[viewer].engine.stats(net.now).bytes_duplicate, 0);
    assert_eq!(net.delivered(viewer), net.all_blocks());
}

#[test]
fn an_uploader_serves_first_the_block_its_requester_can_get_nowhere_else() {
    let mut net = net();
    let seed = net.add_capped_seed(100_000, Net::config(1));
    // Five neighbours of the seed hold the first blocks and only share.
    let early: Vec<BlockId> = (0..=4).map(BlockId).collect();
    for i in 0..5 {
        let holder = net.add(Config {
            download: false,
            ..Net::config(10 + i)
        });
        net.seed_blocks(holder, &early);
        net.connect(seed, holder);
    }
    // One viewer starts at the beginning, another at block 7 (12 s), both
    // paused: each asks the seed alone, with deadlines close together.
    let from_start = net.add(Net::config(2));
    let from_middle = net.add(Net::config(3));
    net.play(from_start, 0, PlayState::Paused);
    net.play(from_middle, 12_000, PlayState::Paused);
    net.connect(seed, from_start);
    net.connect(seed, from_middle);
    net.run_for(20_000);
    let sent = &net.nodes[seed].sent;
    let finished = |to: usize, block: u32| {
        sent.iter()
            .rposition(|s| {
                s.1 == to
                    && s.2
                        .starts_with(&format!("Chunk {{ block: BlockId({block}),"))
            })
            .expect("the seed served the block")
    };
    assert!(
        finished(from_middle, 7) < finished(from_start, 1),
        "block 7 (held by nobody else) did not overtake block 1 (held by five)"
    );
    net.run_for(60_000);
    assert_eq!(net.delivered(from_start), net.all_blocks());
}

#[test]
fn uploads_respect_the_cap_and_a_greedy_peer_cannot_starve_another() {
    let mut net = Net::new(title(30, 150_000));
    let seed = net.add(Config {
        upload_cap: 200_000,
        per_peer_upload_cap: 150_000,
        ..Net::config(1)
    });
    net.seed_all(seed);
    let greedy = net.add(Config {
        horizon_ms: 120_000,
        urgent_window_ms: 120_000,
        ..Net::config(2)
    });
    let modest = net.add(Net::config(3));
    net.connect(seed, greedy);
    net.connect(seed, modest);
    net.run_for(100);
    net.play(greedy, 0, PlayState::Playing);
    net.play(modest, 0, PlayState::Playing);
    let start = net.now;
    net.run_for(10_000);
    let uploaded = net.nodes[seed].engine.stats(net.now).bytes_uploaded;
    let seconds = net.now.since(start) as f64 / 1000.0;
    // Beyond the cap: the bucket's burst of one chunk at the start, and the
    // chunk a bucket with any tokens left sends at the end (pacing debt).
    assert!(
        uploaded as f64 <= 200_000.0 * seconds + 2.0 * 65_536.0,
        "{uploaded} in {seconds} s"
    );
    let modest_got = net.nodes[modest].engine.stats(net.now).bytes_from_peers;
    assert!(
        modest_got as f64 >= 0.3 * uploaded as f64,
        "modest got {modest_got} of {uploaded}"
    );
}

#[test]
fn a_quiet_uplink_sends_a_newcomers_first_block_in_one_burst_and_keeps_its_average() {
    // 300 KB blocks, a 400 KB/s cap on a 20 MB/s link.
    let run = |burst_ms: u64| {
        let mut net = Net::new(title(30, 300_000));
        let seed = net.add(Config {
            upload_cap: 400_000,
            per_peer_upload_cap: 400_000,
            upload_burst_ms: burst_ms,
            ..Net::config(1)
        });
        net.seed_all(seed);
        net.nodes[seed].up_rate = 20_000.0;
        net.run_for(5_000);
        let viewer = net.add(Config {
            horizon_ms: 120_000,
            ..Net::config(2)
        });
        net.connect(seed, viewer);
        net.run_for(50);
        let start = net.now;
        net.play(viewer, 0, PlayState::Starting);
        let first_media = net.title.layout.by_time()[1];
        net.run_for(10_000);
        let first_at = net.nodes[viewer]
            .delivered
            .iter()
            .find(|(_, b)| *b == first_media)
            .map(|(at, _)| at.since(start))
            .expect("the first block arrived");
        let uploaded = net.nodes[seed].engine.stats(net.now).bytes_uploaded;
        let seconds = net.now.since(start) as f64 / 1000.0;
        (first_at, uploaded as f64 / seconds, net.origin_bytes)
    };
    let (paced_ms, _, _) = run(0);
    let (burst_ms, rate, origin) = run(1_000);
    assert!(
        paced_ms >= 700,
        "paced: 300 KB at 400 KB/s took {paced_ms} ms"
    );
    assert!(burst_ms < 200, "with a burst: {burst_ms} ms");
    assert_eq!(origin, 0);
    // Over ten seconds the burst is a small part: one second of cap on top.
    assert!(rate <= 400_000.0 * 1.1 + 400_000.0 / 10.0, "{rate} B/s");
}

#[test]
fn an_uploader_turns_away_a_request_it_keeps_waiting_when_another_holder_has_the_block() {
    let mut net = Net::new(title(30, 150_000));
    // The seed sends a block in 1.5 s, and a viewer playing from block 7
    // needs the blocks only the seed holds.
    let seed = net.add_capped_seed(100_000, Net::config(1));
    let early: Vec<BlockId> = (0..=4).map(BlockId).collect();
    let holders: Vec<usize> = (0..10)
        .map(|i| {
            let holder = net.add(Config {
                download: false,
                ..Net::config(10 + i)
            });
            net.seed_blocks(holder, &early);
            net.connect(seed, holder);
            holder
        })
        .collect();
    let from_middle = net.add_viewer(Net::config(2), 14_000, PlayState::Playing, seed);
    net.run_for(500);
    // A paused viewer asks the seed for the first blocks, which ten of the
    // seed's neighbours also hold; it meets one of them only after asking.
    let from_start = net.add_viewer(Net::config(3), 0, PlayState::Paused, seed);
    net.run_for(500);
    net.connect(holders[0], from_start);
    net.run_for(8_000);
    // The seed spends its upload on the middle viewer's blocks, which only it
    // holds, and turns the first blocks' requests away once they have waited
    // long: the viewer asks the holder for them rather than time out on us.
    let rejected: Vec<u32> = net.nodes[seed]
        .sent
        .iter()
        .filter(|s| s.1 == from_start && s.2.starts_with("Reject"))
        .map(|s| {
            let id = s.2.split("BlockId(").nth(1).expect("a block");
            id[..id.find(')').expect("closed")]
                .parse()
                .expect("a number")
        })
        .collect();
    assert!(!rejected.is_empty(), "nothing turned away");
    assert!(
        rejected.iter().all(|&b| b <= 4),
        "turned away a block nobody else holds: {rejected:?}"
    );
    let delivered = net.delivered(from_start);
    assert!(early.iter().all(|b| delivered.contains(b)), "{delivered:?}");
    net.play(from_start, 0, PlayState::Playing);
    net.run_for(90_000);
    assert_eq!(net.delivered(from_start), net.all_blocks());
    let middle_got = net.delivered(from_middle);
    assert!(
        (7..30).all(|b| middle_got.contains(&BlockId(b))),
        "{middle_got:?}"
    );
}

#[test]
fn a_holder_keeps_the_titles_opening_blocks_in_memory_for_newcomers() {
    let mut net = net();
    let viewer = net.add(Config {
        resident_blocks: 3,
        ..Net::config(1)
    });
    net.play(viewer, 0, PlayState::Starting);
    net.run_for(200);
    net.play(viewer, 0, PlayState::Playing);
    net.run_for(20_000);
    assert_eq!(net.delivered(viewer), net.all_blocks());
    let engine = &net.nodes[viewer].engine;
    // Ten blocks went through a cache of three: the init segment and the
    // first media block stayed (each newcomer's first requests), and the
    // newest block took the one place left.
    let resident: Vec<BlockId> = net
        .all_blocks()
        .into_iter()
        .filter(|b| engine.resident_chunks(*b).is_some())
        .collect();
    assert_eq!(resident, vec![BlockId(0), BlockId(1), BlockId(9)]);
}
