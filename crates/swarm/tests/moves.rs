//! Where a request goes when its peer is slow, silent or gone: re-requests,
//! time-outs, moves to a faster peer, the end-game, and a relay's silence on
//! a block it is still receiving. One small deterministic scenario per rule,
//! on the same test network as tests/rules.rs.

mod common;

use std::sync::Arc;

use common::{Net, net, request_or_cancel, title};
use telly_proto::wire::{Bitfield, BlockId, CHUNK_SIZE, chunk_len};
use telly_proto::{Sha256Hash, merkle};
use telly_swarm::{Millis, PeerId, PeerMessage, Signed, TimeoutReason};

#[test]
fn a_peer_leaving_mid_transfer_costs_only_a_re_request() {
    let mut net = net();
    let a = net.add(Net::config(1));
    let b = net.add(Net::config(2));
    net.seed_all(a);
    net.seed_all(b);
    net.nodes[a].up_rate = 150.0;
    net.nodes[b].up_rate = 150.0;
    let viewer = net.add(Net::config(3));
    net.connect(a, viewer);
    net.connect(b, viewer);
    net.start_then_play(viewer, 0, 700);
    net.run_for(1_500);
    net.disconnect(a, viewer);
    net.run_for(20_000);
    assert_eq!(net.delivered(viewer), net.all_blocks());
    // The rest came from the remaining peer; the origin sent at most two blocks.
    assert!(
        net.origin_bytes <= 310_000,
        "origin sent {}",
        net.origin_bytes
    );
}

#[test]
fn requests_that_time_out_are_asked_elsewhere() {
    let mut net = net();
    let (mute, _, viewer) = net.add_viewer_of_mute_and_answering_seeds(4_000.0);
    net.start_then_play(viewer, 0, 500);
    net.run_for(25_000);
    assert_eq!(net.delivered(viewer), net.all_blocks());
    // What was asked of the mute peer was withdrawn (timeout or end-game) and
    // came from elsewhere, mostly from the good peer.
    let withdrawn = net.nodes[viewer]
        .sent
        .iter()
        .any(|s| s.1 == mute && s.2.starts_with("Cancel"));
    assert!(withdrawn);
    assert!(net.origin_bytes < net.title.layout.total_bytes() / 2);
}

#[test]
fn a_peer_that_keeps_delivering_does_not_wake_the_viewer_to_check_its_requests() {
    // Links of 1.5 s make the pipeline to the seed long: each request waits
    // several seconds in it, past its first check, while chunks keep coming.
    let mut net = Net::new(title(30, 150_000));
    net.latency_ms = 1_500;
    let seed = net.add_capped_seed(100_000, Net::config(1));
    let viewer = net.add(Net::config(2));
    net.connect(seed, viewer);
    net.start_then_play(viewer, 0, 500);
    net.run_for(70_000);
    assert_eq!(net.delivered(viewer), net.all_blocks());
    let stats = net.nodes[viewer].engine.stats(net.now);
    let from_seed = stats.bytes_from_peers;
    assert!(from_seed > 1_000_000, "the seed sent {from_seed} bytes");
    // Nothing timed out, so no wake-up for a request check had anything to do.
    assert_eq!(stats.requests_timed_out, 0);
    let checks = net.nodes[viewer]
        .wakes
        .iter()
        .filter(|&&why| why == TimeoutReason::Request)
        .count();
    assert_eq!(checks, 0);
}

#[test]
fn a_chunk_too_slow_in_coming_moves_to_another_peer_instead_of_being_asked_twice() {
    // Thirty blocks: the title's last urgent window (the end-game) is far from
    // the first ones.
    let (net, viewer, mute) = mute_and_good_peer(0, 500);
    assert!(net.delivered(viewer).contains(&BlockId(10)));
    let (moved, asked_twice) = moved_and_asked_twice(&net, viewer, mute);
    assert!(moved > 0);
    assert_eq!(asked_twice, 0);
}

#[test]
fn in_the_titles_last_seconds_a_slow_chunk_is_asked_of_two_peers() {
    // End-game: the viewer starts 6 s before the end of the 60 s title.
    let (net, viewer, mute) = mute_and_good_peer(54_000, 500);
    assert!(net.delivered(viewer).contains(&BlockId(30)));
    let (_, asked_twice) = moved_and_asked_twice(&net, viewer, mute);
    assert!(asked_twice > 0);
}

#[test]
fn a_block_asked_of_a_peer_that_went_quiet_moves_once_it_is_urgent() {
    // The mute peer's requests outlive their time-outs by far (it was asked
    // while its rate estimate was low), and once the good peer has sent
    // everything else nothing wakes the viewer: the block falling urgent must.
    let (net, viewer, _) = mute_and_good_peer(0, 500);
    let started = Millis(600);
    for block in 2..=10u32 {
        let at = net.nodes[viewer]
            .delivered
            .iter()
            .find(|d| d.1 == BlockId(block))
            .map(|d| d.0);
        let due = started + 2_000 * u64::from(block - 1);
        assert!(
            at.is_some_and(|at| at <= due),
            "block {block} due at {due:?}, delivered at {at:?}"
        );
    }
}

/// A viewer starting at `position_ms` of a 30-block title for `starting_ms`,
/// then playing, between a peer that never answers a request and one that does.
fn mute_and_good_peer(position_ms: u64, starting_ms: u64) -> (Net, usize, usize) {
    let mut net = Net::new(title(30, 150_000));
    let mute = net.add_capped_seed(400_000, Net::config(1));
    net.nodes[mute].mute = true;
    let good = net.add_capped_seed(400_000, Net::config(2));
    let viewer = net.add(Net::config(3));
    net.connect(mute, viewer);
    net.connect(good, viewer);
    net.start_then_play(viewer, position_ms, starting_ms);
    net.run_for(15_000);
    (net, viewer, mute)
}

/// From the viewer's own words: chunks asked of another peer after being
/// cancelled at the mute one, and chunks asked of another while still asked of
/// the mute one.
fn moved_and_asked_twice(net: &Net, viewer: usize, mute: usize) -> (usize, usize) {
    let mut at_mute = std::collections::HashSet::new();
    let (mut moved, mut asked_twice) = (0, 0);
    for (_, to, what) in &net.nodes[viewer].sent {
        let Some((kind, block, first, count)) = request_or_cancel(what) else {
            continue;
        };
        for chunk in first..first + count {
            match (kind, *to == mute) {
                ("Request", true) => {
                    at_mute.insert((block, chunk));
                }
                ("Cancel", true) => moved += usize::from(at_mute.remove(&(block, chunk))),
                ("Request", false) if at_mute.contains(&(block, chunk)) => asked_twice += 1,
                _ => {}
            }
        }
    }
    (moved, asked_twice)
}

#[test]
fn a_chunk_waited_for_at_a_relay_moves_though_the_relay_delivered_lately() {
    // The viewer's one peer at first is scripted: it holds every block but one
    // and answers at once. Then it announces that block, as a relay does at
    // its first chunk, sends that chunk and no other; a seed joins. The
    // chunk just sent says nothing of when the rest will reach the relay:
    // they move to the seed before the relay's silence would have counted
    // for a busy uploader's (`SERVING_MS`, 3 s).
    const WAITING: BlockId = BlockId(6);
    let mut net = Net::new(title(30, 150_000));
    let viewer = net.add(Net::config(1));
    let relay = PeerId(77);
    net.connect_scripted(viewer, relay, "relay");
    announce_holding(&mut net, viewer, relay, |block| block != WAITING.0 as usize);
    let started = net.start_then_play(viewer, 0, 500);
    let announced = started + net.title.layout.deadline_time(WAITING) - 5_000;
    let mut seed = None;
    let mut answered = 0;
    while net.now < started + 20_000 {
        if seed.is_none() && net.now >= announced {
            let now = net.now;
            let have = PeerMessage::Have(WAITING);
            net.nodes[viewer].engine.handle_message(relay, have, now);
            net.pump(viewer);
            let joined = net.add_capped_seed(300_000, Net::config(2));
            net.connect(joined, viewer);
            seed = Some(joined);
        }
        answered = answer_as_relay(&mut net, viewer, relay, answered, WAITING);
        net.run_for(10);
    }
    let seed = seed.expect("the relay announced the block");
    let moved: Vec<Millis> = net.nodes[viewer]
        .sent_outside
        .iter()
        .filter(|(_, _, what)| {
            request_or_cancel(what).is_some_and(|r| r.0 == "Cancel" && r.1 == WAITING.0)
        })
        .map(|&(at, ..)| at)
        .collect();
    assert_eq!(moved.len(), 2, "the chunks after the first move");
    assert!(
        moved.iter().all(|&at| at < announced + 3_000),
        "moved at {moved:?}, announced at {announced:?}"
    );
    let chunk_of_waiting = format!("Chunk {{ block: {WAITING:?},");
    let from_seed = net.nodes[seed]
        .sent
        .iter()
        .filter(|(_, to, what)| *to == viewer && what.starts_with(&chunk_of_waiting))
        .count();
    assert_eq!(from_seed, 2);
    assert!(net.nodes[viewer].origin_log.iter().all(|o| o.1 != WAITING));
    assert!(net.late_deliveries(viewer, started).is_empty());
}

/// Answers at once the requests `viewer` sent to the scripted `relay` since
/// the `answered`-th message it sent outside the net, every chunk but those
/// of `arriving` after its first; returns how many it has answered.
fn answer_as_relay(
    net: &mut Net,
    viewer: usize,
    relay: PeerId,
    answered: usize,
    arriving: BlockId,
) -> usize {
    let (sent, asked) = requests_since(net, viewer, answered);
    let now = net.now;
    for (block, first, count) in asked {
        let hashes = hashes_of(net, block);
        net.nodes[viewer].engine.handle_message(relay, hashes, now);
        for index in (first..first + count).filter(|&i| block != arriving.0 || i == 0) {
            let chunk = chunk_of(net, block, index);
            net.nodes[viewer].engine.handle_message(relay, chunk, now);
        }
        net.pump(viewer);
    }
    sent
}

/// Hands `viewer` the have-map of the scripted `peer`, which holds the
/// blocks for which `holds` is true.
fn announce_holding(net: &mut Net, viewer: usize, peer: PeerId, holds: impl Fn(usize) -> bool) {
    let mut bits = Bitfield::new(net.title.layout.len());
    for block in 0..net.title.layout.len() {
        bits.set(block, holds(block));
    }
    let now = net.now;
    net.nodes[viewer]
        .engine
        .handle_message(peer, PeerMessage::HaveMap(bits), now);
    net.pump(viewer);
}

/// The leaf layer of `block`, as its holder sends it before a first chunk.
fn hashes_of(net: &Net, block: u32) -> PeerMessage<Signed> {
    let hashes: Arc<[Sha256Hash]> = merkle::leaves(&net.title.bytes[block as usize]).into();
    PeerMessage::Hashes {
        block: BlockId(block),
        hashes,
    }
}

/// Chunk `index` of `block`, as its holder sends it.
fn chunk_of(net: &Net, block: u32, index: u16) -> PeerMessage<Signed> {
    let bytes = &net.title.bytes[block as usize];
    let at = usize::from(index) * CHUNK_SIZE;
    let data: Arc<[u8]> = bytes[at..at + chunk_len(bytes.len() as u64, usize::from(index))].into();
    PeerMessage::Chunk {
        block: BlockId(block),
        index,
        data,
    }
}

#[test]
fn a_chunk_its_peer_is_sending_is_waited_for() {
    // The viewer's one peer is scripted: it holds the title and stays silent
    // on the first chunk the viewer asks of it, until the viewer gives that
    // chunk up to the origin (found by a first run). Then the same again, but
    // 50 ms before that moment the peer says it began sending the chunk
    // (`Sending`), and the chunk arrives 50 ms after it. Told, the viewer
    // waits for it; not told, it asks the origin for a chunk on its way.
    let silent = scripted_sender(None);
    let gave_up = silent
        .gave_up
        .expect("the silent peer's chunk went to the origin");
    let told = scripted_sender(Some((gave_up - 50, gave_up + 50)));
    assert_eq!(told.gave_up, None, "{told:?}");
    assert_eq!(told.duplicate, 0, "{told:?}");
}

#[derive(Debug)]
struct Sent {
    /// When the chunk went to the origin, if it did.
    gave_up: Option<Millis>,
    duplicate: u64,
}

/// Runs a starting viewer whose one peer, scripted, sends the first chunk
/// asked of it at `told.1` after a `Sending` notice at `told.0`; without
/// `told`, it sends that chunk 50 ms after the viewer asks the origin for it.
fn scripted_sender(told: Option<(Millis, Millis)>) -> Sent {
    let mut net = Net::new(title(10, 150_000));
    let viewer = net.add(Net::config(1));
    let sender = PeerId(77);
    net.connect_scripted(viewer, sender, "sender");
    announce_holding(&mut net, viewer, sender, |_| true);
    net.run_for(100);
    net.play(viewer, 0, telly_swarm::PlayState::Starting);
    let mut asked: Option<(u32, u16)> = None;
    let mut gave_up = None;
    let mut send_at = told.map(|t| t.1);
    while net.now < Millis(6_000) {
        let now = net.now;
        if asked.is_none() {
            asked = net.nodes[viewer]
                .sent_outside
                .iter()
                .filter_map(|(_, _, what)| request_or_cancel(what))
                .find(|r| r.0 == "Request" && r.1 > 0)
                .map(|r| (r.1, r.2));
        }
        if let Some((block, index)) = asked {
            if gave_up.is_none()
                && net.nodes[viewer]
                    .origin_log
                    .iter()
                    .any(|&(_, b, first, count)| {
                        b.0 == block && (first..first + count).contains(&index)
                    })
            {
                gave_up = Some(now);
                send_at = send_at.or(Some(now + 50));
            }
            // An uploader sends a block's leaves before its first chunk.
            let notice = told.is_some_and(|(notice_at, _)| now == notice_at);
            if notice || (told.is_none() && send_at == Some(now)) {
                let hashes = hashes_of(&net, block);
                net.nodes[viewer].engine.handle_message(sender, hashes, now);
            }
            if notice {
                let notice = PeerMessage::Sending {
                    block: BlockId(block),
                    index,
                };
                net.nodes[viewer].engine.handle_message(sender, notice, now);
            }
            if send_at == Some(now) {
                let chunk = chunk_of(&net, block, index);
                net.nodes[viewer].engine.handle_message(sender, chunk, now);
            }
            net.pump(viewer);
        }
        net.run_for(10);
    }
    Sent {
        gave_up,
        duplicate: net.nodes[viewer].engine.stats(net.now).bytes_duplicate,
    }
}

#[test]
fn a_block_its_only_holder_refused_is_fetched_before_the_player_needs_it() {
    // A relay announces a block at its first chunk and refuses the chunks it
    // lacks. In the title's last minute no block comes into view to wake the
    // engine, and once the seed has sent the rest no input does: the
    // refused block must still be looked at again, or it waits until the
    // player stalls on it.
    let mut net = Net::new(title(40, 150_000));
    let seed = net.add(Net::config(1));
    let refused = BlockId(38);
    net.seed_blocks(
        seed,
        &net.all_blocks()
            .into_iter()
            .filter(|&b| b != refused)
            .collect::<Vec<_>>(),
    );
    let viewer = net.add(Net::config(2));
    let relay = PeerId(1_000);
    net.connect(seed, viewer);
    net.connect_scripted(viewer, relay, "relay");
    announce_holding(&mut net, viewer, relay, |block| block == refused.0 as usize);
    let from_ms = 30_000;
    let started = net.start_then_play(viewer, from_ms, 3_000);
    let mut answered = 0;
    while net.now < started + 50_000 {
        answered = refuse_all(&mut net, viewer, relay, answered);
        net.run_for(10);
    }
    let layout = &net.title.layout;
    let due = started + (layout.deadline_time(refused) - from_ms);
    let came = net.nodes[viewer]
        .delivered
        .iter()
        .find(|d| d.1 == refused)
        .map(|d| d.0);
    assert!(came.is_some_and(|at| at <= due), "{came:?}, due at {due:?}");
}
/// Refuses every request `viewer` sent `peer` since the `answered`-th
/// message; returns how many messages it has now looked at.
fn refuse_all(net: &mut Net, viewer: usize, peer: PeerId, answered: usize) -> usize {
    let (sent, asked) = requests_since(net, viewer, answered);
    let now = net.now;
    for (block, first, count) in asked {
        let reject = PeerMessage::Reject {
            block: BlockId(block),
            first,
            count,
        };
        net.nodes[viewer].engine.handle_message(peer, reject, now);
        net.pump(viewer);
    }
    sent
}

/// The requests `viewer` sent outside the net since its `answered`-th
/// message, as `(block, first, count)`, and how many messages it has sent.
fn requests_since(net: &Net, viewer: usize, answered: usize) -> (usize, Vec<(u32, u16, u16)>) {
    let sent = &net.nodes[viewer].sent_outside;
    let asked = sent[answered..]
        .iter()
        .filter_map(|(_, _, what)| request_or_cancel(what))
        .filter(|(kind, ..)| *kind == "Request")
        .map(|(_, block, first, count)| (block, first, count))
        .collect();
    (sent.len(), asked)
}
