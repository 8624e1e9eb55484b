//! Any sequence of well-formed but hostile messages leaves the engine consistent:
//! no panic, invariants hold, and nothing unverified is delivered.

mod common;

use std::sync::Arc;

use common::{Net, title};
use proptest::prelude::*;
use telly_proto::Sha256Hash;
use telly_proto::wire::{Bitfield, BlockId, GoodbyeReason};
use telly_swarm::{PeerId, PeerMessage, PlayState, Signed};

fn message(
    kind: u8,
    block: u32,
    a: u16,
    b: u16,
    bytes: u16,
    title_len: usize,
) -> PeerMessage<Signed> {
    let block = BlockId(block);
    match kind % 13 {
        0 => PeerMessage::Have(block),
        1 => {
            let mut bits = Bitfield::new(if a.is_multiple_of(3) {
                title_len + 1
            } else {
                title_len
            });
            bits.set(usize::from(b) % title_len.max(1), true);
            PeerMessage::HaveMap(bits)
        }
        2 => PeerMessage::Hashes {
            block,
            hashes: Arc::from(vec![Sha256Hash::of(&a.to_le_bytes()); usize::from(b % 12)]),
        },
        3 => PeerMessage::Request {
            block,
            first: a % 6,
            count: b % 5,
            deadline_ms: 100,
            want_hashes: a.is_multiple_of(2),
        },
        4 => PeerMessage::Cancel {
            block,
            first: a,
            count: b,
        },
        5 => PeerMessage::Reject {
            block,
            first: a % 4,
            count: b % 4,
        },
        6 => PeerMessage::Chunk {
            block,
            index: a % 4,
            data: Arc::from(vec![a as u8; usize::from(bytes)]),
        },
        7 => PeerMessage::Choke,
        8 => PeerMessage::Unchoke,
        9 => PeerMessage::Goodbye(GoodbyeReason::Leaving),
        10 => PeerMessage::Coming {
            block,
            hops: (a % 3) as u8,
        },
        11 => PeerMessage::Sending {
            block,
            index: a % 6,
        },
        _ => PeerMessage::Handshake {
            version: a as u8,
            swarm_id: Sha256Hash::of(b"x"),
            grant: telly_proto::SignedGrant {
                body: "{}".into(),
                signature: telly_proto::SignatureHex(String::new()),
            },
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn hostile_messages_never_break_the_engine(
        script in prop::collection::vec((any::<u8>(), 0u32..14, any::<u16>(), any::<u16>(), 1u16..2000, 0u64..400), 1..60)
    ) {
        let mut net = Net::new(title(6, 150_000));
        let viewer = net.add(Net::config(1));
        let honest = net.add(Net::config(2));
        net.seed_all(honest);
        net.connect(viewer, honest);
        net.run_for(100);
        net.play(viewer, 0, PlayState::Playing);
        let hostile = PeerId(77);
        net.connect_scripted(viewer, hostile, "mallory");
        let len = net.title.layout.len();
        for (kind, block, a, b, bytes, wait) in script {
            let now = net.now;
            net.nodes[viewer].engine.handle_message(hostile, message(kind, block, a, b, bytes, len), now);
            // Messages to the hostile peer go nowhere; deliveries are checked
            // against the manifest's SHA-256 by the harness.
            while let Some(action) = net.nodes[viewer].engine.poll_action(now) {
                net.perform(viewer, action);
            }
            net.nodes[viewer].engine.check_invariants();
            net.run_for(wait);
        }
    }
}
