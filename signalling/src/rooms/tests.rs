use ed25519_dalek::SigningKey;
use telly_proto::Grant;
use telly_proto::signal::{HaveSummary, Span};

use super::*;

const NOW: u64 = 1_800_000_000;

fn provider() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn swarm(name: &str) -> Sha256Hash {
    Sha256Hash::of(name.as_bytes())
}

fn peer(n: u32) -> PeerId {
    PeerId::parse(&format!("{n:016x}")).unwrap()
}

fn grant_by(
    key: &SigningKey,
    peer_id: &PeerId,
    swarm_id: Sha256Hash,
    expires_at: u64,
) -> SignedGrant {
    SignedGrant::sign(
        &Grant {
            viewer: "ada".into(),
            peer_id: peer_id.to_string(),
            title_id: "title".into(),
            swarm_id,
            expires_at,
        },
        key,
    )
}

fn join_message(
    peer_id: &PeerId,
    swarm_id: Sha256Hash,
    grant: Option<SignedGrant>,
) -> ClientMessage {
    ClientMessage::Join {
        version: SIGNAL_VERSION,
        swarm_id,
        peer_id: peer_id.clone(),
        grant,
        have: HaveSummary::default(),
    }
}

struct Harness {
    rooms: Rooms,
}

impl Harness {
    fn new() -> Self {
        Self {
            rooms: Rooms::new(
                ProviderPublicKey(provider().verifying_key()),
                RoomsConfig::default(),
                42,
            ),
        }
    }

    fn send(&mut self, conn: u64, message: ClientMessage) -> Routed {
        let routed = self.rooms.handle(ConnId(conn), message, NOW);
        self.rooms.check_invariants().unwrap();
        routed
    }

    /// Joins `conn` as peer `n` with a valid grant; returns the peers offered.
    fn join(&mut self, conn: u64, n: u32, swarm_id: Sha256Hash) -> Vec<PeerId> {
        let grant = grant_by(&provider(), &peer(n), swarm_id, NOW + 600);
        let routed = self.send(conn, join_message(&peer(n), swarm_id, Some(grant)));
        assert!(!routed.strike);
        match &routed.deliveries.last().unwrap().message {
            ServerMessage::Joined { swarm_id: s, peers } if *s == swarm_id => {
                peers.iter().map(|p| p.peer_id.clone()).collect()
            }
            other => panic!("not joined: {other:?}"),
        }
    }

    fn disconnect(&mut self, conn: u64) -> Vec<Envelope> {
        let out = self.rooms.disconnect(ConnId(conn));
        self.rooms.check_invariants().unwrap();
        out
    }
}

fn refusal(routed: &Routed) -> RefusalReason {
    match &routed.deliveries[..] {
        [
            Envelope {
                message: ServerMessage::Refused { reason, .. },
                ..
            },
        ] => *reason,
        other => panic!("expected one refusal, got {other:?}"),
    }
}

fn error_code(routed: &Routed) -> ErrorCode {
    match &routed.deliveries[..] {
        [
            Envelope {
                message: ServerMessage::Error { code, .. },
                ..
            },
        ] => *code,
        other => panic!("expected one error, got {other:?}"),
    }
}

fn offer(swarm_id: Sha256Hash, to: &PeerId) -> ClientMessage {
    ClientMessage::Offer {
        swarm_id,
        to: to.clone(),
        sdp: "v=0".into(),
        stranded: false,
    }
}

#[test]
fn a_valid_grant_joins_and_later_joiners_are_offered_earlier_ones() {
    let mut h = Harness::new();
    let s = swarm("a");
    assert!(h.join(1, 1, s).is_empty());
    assert_eq!(h.join(2, 2, s), vec![peer(1)]);
    assert_eq!(h.rooms.members(&s), vec![peer(1), peer(2)]);
    let pong = h.send(1, ClientMessage::Ping { nonce: 9 });
    assert_eq!(
        pong.deliveries,
        vec![Envelope {
            to: ConnId(1),
            message: ServerMessage::Pong { nonce: 9 }
        }]
    );
}

#[test]
fn joins_are_refused_with_a_reason() {
    let mut h = Harness::new();
    let s = swarm("a");
    let me = peer(1);
    let forger = SigningKey::from_bytes(&[8; 32]);
    let mut tampered = grant_by(&provider(), &me, s, NOW + 600);
    tampered.body = tampered.body.replace("ada", "eve");
    let mut garbage_signature = grant_by(&provider(), &me, s, NOW + 600);
    garbage_signature.signature.0 = "zz".into();
    let not_a_grant = SignedGrant {
        body: "{\"hello\":1}".into(),
        signature: telly_proto::SignatureHex::sign(&provider(), b"{\"hello\":1}"),
    };
    let cases: Vec<(ClientMessage, RefusalReason, bool)> = vec![
        (join_message(&me, s, None), RefusalReason::NoGrant, false),
        (
            join_message(&me, s, Some(grant_by(&forger, &me, s, NOW + 600))),
            RefusalReason::BadSignature,
            true,
        ),
        (
            join_message(&me, s, Some(tampered)),
            RefusalReason::BadSignature,
            true,
        ),
        (
            join_message(&me, s, Some(garbage_signature)),
            RefusalReason::BadSignature,
            true,
        ),
        (
            join_message(&me, s, Some(not_a_grant)),
            RefusalReason::BadGrant,
            true,
        ),
        (
            join_message(&me, s, Some(grant_by(&provider(), &me, s, NOW))),
            RefusalReason::Expired,
            false,
        ),
        (
            join_message(
                &me,
                s,
                Some(grant_by(&provider(), &me, swarm("b"), NOW + 600)),
            ),
            RefusalReason::WrongSwarm,
            true,
        ),
        (
            join_message(&me, s, Some(grant_by(&provider(), &peer(2), s, NOW + 600))),
            RefusalReason::WrongPeer,
            true,
        ),
        (
            ClientMessage::Join {
                version: SIGNAL_VERSION + 1,
                swarm_id: s,
                peer_id: me.clone(),
                grant: Some(grant_by(&provider(), &me, s, NOW + 600)),
                have: HaveSummary::default(),
            },
            RefusalReason::VersionMismatch,
            false,
        ),
        (
            ClientMessage::Join {
                version: SIGNAL_VERSION,
                swarm_id: s,
                peer_id: me.clone(),
                grant: Some(grant_by(&provider(), &me, s, NOW + 600)),
                have: HaveSummary {
                    playhead_ms: None,
                    spans: vec![Span {
                        start_ms: 5,
                        end_ms: 5,
                    }],
                },
            },
            RefusalReason::BadSummary,
            true,
        ),
    ];
    for (message, reason, strike) in cases {
        let routed = h.send(1, message);
        assert_eq!(refusal(&routed), reason);
        assert_eq!(routed.strike, strike, "{reason:?}");
        assert_eq!(routed.deliveries[0].to, ConnId(1));
    }
    assert!(h.rooms.members(&s).is_empty());
    assert_eq!(h.rooms.swarm_count(), 0);
}

#[test]
fn a_socket_keeps_one_peer_id_and_a_bounded_number_of_swarms() {
    let mut h = Harness::new();
    h.join(1, 1, swarm("a"));
    let other = peer(2);
    let grant = grant_by(&provider(), &other, swarm("b"), NOW + 600);
    let routed = h.send(1, join_message(&other, swarm("b"), Some(grant)));
    assert_eq!(refusal(&routed), RefusalReason::PeerIdChanged);
    assert!(routed.strike);

    let max = h.rooms.config().max_swarms_per_socket;
    for n in 1..max {
        h.join(1, 1, swarm(&n.to_string()));
    }
    let last = swarm("one too many");
    let grant = grant_by(&provider(), &peer(1), last, NOW + 600);
    let routed = h.send(1, join_message(&peer(1), last, Some(grant)));
    assert_eq!(refusal(&routed), RefusalReason::TooManySwarms);
    // Renewing a membership is not a new swarm.
    h.join(1, 1, swarm("a"));
}

#[test]
fn offers_answers_and_candidates_reach_the_named_peer_with_the_sender_named() {
    let mut h = Harness::new();
    let s = swarm("a");
    h.join(1, 1, s);
    h.join(2, 2, s);
    let routed = h.send(1, offer(s, &peer(2)));
    assert_eq!(
        routed.deliveries,
        vec![Envelope {
            to: ConnId(2),
            message: ServerMessage::Offer {
                swarm_id: s,
                from: peer(1),
                sdp: "v=0".into(),
                stranded: false,
            }
        }]
    );
    let candidate = IceCandidate {
        candidate: "candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
    };
    let routed = h.send(
        2,
        ClientMessage::Candidate {
            swarm_id: s,
            to: peer(1),
            candidate: candidate.clone(),
        },
    );
    assert_eq!(
        routed.deliveries,
        vec![Envelope {
            to: ConnId(1),
            message: ServerMessage::Candidate {
                swarm_id: s,
                from: peer(2),
                candidate
            }
        }]
    );
    // To oneself: nobody to relay to.
    assert_eq!(
        error_code(&h.send(1, offer(s, &peer(1)))),
        ErrorCode::UnknownPeer
    );
}

#[test]
fn nothing_crosses_from_one_swarm_to_another() {
    let mut h = Harness::new();
    let (a, b) = (swarm("a"), swarm("b"));
    for n in 0..10 {
        h.join(u64::from(n), n, a);
    }
    for n in 10..20 {
        let offered = h.join(u64::from(n), n, b);
        assert!(offered.iter().all(|p| *p >= peer(10)), "{offered:?}");
    }
    // Peer 0 (swarm a) signals peer 15 (swarm b) naming either swarm.
    let routed = h.send(0, offer(a, &peer(15)));
    assert_eq!(error_code(&routed), ErrorCode::UnknownPeer);
    assert_eq!(routed.deliveries[0].to, ConnId(0));
    let routed = h.send(0, offer(b, &peer(15)));
    assert_eq!(error_code(&routed), ErrorCode::NotJoined);
    // The same answer as for a peer that exists nowhere.
    let unknown_anywhere = h.send(0, offer(a, &peer(999)));
    assert_eq!(error_code(&unknown_anywhere), ErrorCode::UnknownPeer);
    // Asking for peers of swarm b from swarm a's socket.
    let routed = h.send(
        0,
        ClientMessage::FindPeers {
            swarm_id: b,
            exclude: vec![],
        },
    );
    assert_eq!(error_code(&routed), ErrorCode::NotJoined);
    // Leaves in swarm b reach only swarm b's sockets.
    for n in 10..20u32 {
        for envelope in h.disconnect(u64::from(n)) {
            assert!(envelope.to.0 >= 10, "{envelope:?}");
            match envelope.message {
                ServerMessage::PeerLeft { swarm_id, .. } => assert_eq!(swarm_id, b),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(h.rooms.members(&a).len(), 10);
}

#[test]
fn a_leave_is_announced_to_the_peers_that_know_the_leaver() {
    let mut h = Harness::new();
    let s = swarm("a");
    h.join(2, 2, s);
    h.join(3, 3, s);
    h.join(4, 4, s);
    assert_eq!(h.join(1, 1, s).len(), 3);
    // Peer 2 learns of peer 1 through its offer, peer 3 by asking for peers;
    // peer 4 never hears of it.
    h.send(1, offer(s, &peer(2)));
    let routed = h.send(
        3,
        ClientMessage::FindPeers {
            swarm_id: s,
            exclude: vec![peer(2), peer(4)],
        },
    );
    let ServerMessage::Peers { peers, .. } = &routed.deliveries[0].message else {
        panic!("{routed:?}");
    };
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].peer_id, peer(1));

    let out = h.send(1, ClientMessage::Leave { swarm_id: s });
    let mut told: Vec<u64> = out.deliveries.iter().map(|e| e.to.0).collect();
    told.sort();
    assert_eq!(told, vec![2, 3]);
    assert!(out.deliveries.iter().all(|e| e.message
        == ServerMessage::PeerLeft {
            swarm_id: s,
            peer_id: peer(1)
        }));
    // Leaving twice is an error, not a second announcement.
    assert_eq!(
        error_code(&h.send(1, ClientMessage::Leave { swarm_id: s })),
        ErrorCode::NotJoined
    );
    // A closed socket leaves every swarm it was in.
    let mut told: Vec<u64> = h.disconnect(2).iter().map(|e| e.to.0).collect();
    told.sort();
    assert_eq!(told, vec![3, 4]);
}

#[test]
fn an_expired_grant_ends_the_membership() {
    let mut h = Harness::new();
    let s = swarm("a");
    let short = grant_by(&provider(), &peer(1), s, NOW + 10);
    h.send(1, join_message(&peer(1), s, Some(short)));
    assert_eq!(h.join(2, 2, s), vec![peer(1)]);

    // Later, peer 2 signals peer 1, whose grant has run out.
    let later = NOW + 10;
    let routed = h.rooms.handle(ConnId(2), offer(s, &peer(1)), later);
    h.rooms.check_invariants().unwrap();
    assert!(routed.deliveries.contains(&error(
        ConnId(2),
        ErrorCode::UnknownPeer,
        format!("no peer {} in that swarm", peer(1))
    )));
    assert!(routed.deliveries.contains(&Envelope {
        to: ConnId(1),
        message: ServerMessage::Removed {
            swarm_id: s,
            reason: RemovalReason::GrantExpired
        }
    }));
    assert!(routed.deliveries.contains(&Envelope {
        to: ConnId(2),
        message: ServerMessage::PeerLeft {
            swarm_id: s,
            peer_id: peer(1)
        }
    }));
    assert_eq!(h.rooms.members(&s), vec![peer(2)]);

    // The socket's own sweep does the same without anyone signalling.
    let short = grant_by(&provider(), &peer(3), s, NOW + 20);
    h.send(3, join_message(&peer(3), s, Some(short)));
    assert!(h.rooms.expire(ConnId(3), NOW + 19).is_empty());
    let out = h.rooms.expire(ConnId(3), NOW + 20);
    h.rooms.check_invariants().unwrap();
    assert_eq!(
        out,
        vec![Envelope {
            to: ConnId(3),
            message: ServerMessage::Removed {
                swarm_id: s,
                reason: RemovalReason::GrantExpired
            }
        }]
    );
}

#[test]
fn expired_members_are_not_offered() {
    let mut h = Harness::new();
    let s = swarm("a");
    let short = grant_by(&provider(), &peer(1), s, NOW + 10);
    h.send(1, join_message(&peer(1), s, Some(short)));
    let grant = grant_by(&provider(), &peer(2), s, NOW + 600);
    let routed = h
        .rooms
        .handle(ConnId(2), join_message(&peer(2), s, Some(grant)), NOW + 11);
    assert_eq!(
        routed.deliveries,
        vec![Envelope {
            to: ConnId(2),
            message: ServerMessage::Joined {
                swarm_id: s,
                peers: vec![]
            }
        }]
    );
}

#[test]
fn a_reconnecting_peer_replaces_its_old_socket_without_a_leave() {
    let mut h = Harness::new();
    let s = swarm("a");
    h.join(1, 1, s);
    h.join(2, 2, s);
    let grant = grant_by(&provider(), &peer(1), s, NOW + 600);
    let routed = h.send(9, join_message(&peer(1), s, Some(grant)));
    assert_eq!(
        routed.deliveries[0],
        Envelope {
            to: ConnId(1),
            message: ServerMessage::Removed {
                swarm_id: s,
                reason: RemovalReason::Replaced
            }
        }
    );
    assert!(matches!(
        routed.deliveries[1].message,
        ServerMessage::Joined { .. }
    ));
    // Signals for peer 1 now go to the new socket; the old one leaving is silent.
    assert_eq!(h.send(2, offer(s, &peer(1))).deliveries[0].to, ConnId(9));
    assert!(h.disconnect(1).is_empty());
    assert_eq!(h.rooms.members(&s), vec![peer(1), peer(2)]);
}

#[test]
fn malformed_fields_are_errors_that_count() {
    let mut h = Harness::new();
    let s = swarm("a");
    h.join(1, 1, s);
    h.join(2, 2, s);
    let huge = ClientMessage::Answer {
        swarm_id: s,
        to: peer(2),
        sdp: "a".repeat(MAX_SDP_BYTES + 1),
    };
    let routed = h.send(1, huge);
    assert_eq!(error_code(&routed), ErrorCode::Malformed);
    assert!(routed.strike);
    let long_candidate = ClientMessage::Candidate {
        swarm_id: s,
        to: peer(2),
        candidate: IceCandidate {
            candidate: "c".repeat(MAX_CANDIDATE_BYTES + 1),
            sdp_mid: None,
            sdp_m_line_index: None,
        },
    };
    assert!(h.send(1, long_candidate).strike);
    let unsorted = ClientMessage::Have {
        swarm_id: s,
        have: HaveSummary {
            playhead_ms: Some(0),
            spans: vec![
                Span {
                    start_ms: 10,
                    end_ms: 20,
                },
                Span {
                    start_ms: 0,
                    end_ms: 5,
                },
            ],
        },
    };
    assert!(h.send(1, unsorted).strike);
    let too_many = ClientMessage::FindPeers {
        swarm_id: s,
        exclude: (0..=MAX_EXCLUDED_PEERS as u32).map(peer).collect(),
    };
    assert!(h.send(1, too_many).strike);
    // Not being in a swarm is a mistake, not an attack.
    let routed = h.send(3, offer(s, &peer(1)));
    assert_eq!(error_code(&routed), ErrorCode::NotJoined);
    assert!(!routed.strike);
}

#[test]
fn have_summaries_steer_later_answers() {
    let mut h = Harness::new();
    let s = swarm("a");
    for n in 1..=20 {
        h.join(u64::from(n), n, s);
    }
    // Peer 7 reports holding minutes 10–12; a joiner at minute 10 gets it first.
    let have = HaveSummary {
        playhead_ms: Some(700_000),
        spans: vec![Span {
            start_ms: 600_000,
            end_ms: 720_000,
        }],
    };
    assert!(
        h.send(
            7,
            ClientMessage::Have {
                swarm_id: s,
                have: have.clone()
            }
        )
        .deliveries
        .is_empty()
    );
    let grant = grant_by(&provider(), &peer(30), s, NOW + 600);
    let routed = h.send(
        30,
        ClientMessage::Join {
            version: SIGNAL_VERSION,
            swarm_id: s,
            peer_id: peer(30),
            grant: Some(grant),
            have: HaveSummary {
                playhead_ms: Some(600_000),
                spans: vec![],
            },
        },
    );
    let ServerMessage::Joined { peers, .. } = &routed.deliveries[0].message else {
        panic!("{routed:?}");
    };
    assert_eq!(peers.len(), 8);
    assert_eq!(peers[0].peer_id, peer(7));
    assert_eq!(peers[0].have, have);
}
