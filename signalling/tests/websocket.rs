//! The signalling server over real WebSockets on 127.0.0.1: well-behaved tabs,
//! refused joins, relaying only inside a swarm, and hostile clients.

mod common;

use common::*;
use futures::SinkExt;
use telly_proto::signal::{
    ClientMessage, ErrorCode, IceCandidate, RefusalReason, RemovalReason, ServerMessage,
};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_valid_join_is_welcomed_and_the_second_member_is_offered_the_first() {
    let server = start(test_config()).await;
    let film = swarm("film");
    let (_first, offered) = joined(server.addr, 1, film).await;
    assert!(offered.is_empty(), "an empty swarm offers nobody");
    let (_second, offered) = joined(server.addr, 2, film).await;
    assert_eq!(offered, vec![peer(1)]);
    assert_eq!(server.hub.members(&film).len(), 2);
}

async fn refusal_of(join: ClientMessage) -> RefusalReason {
    let server = start(test_config()).await;
    let mut ws = connect_welcomed(server.addr).await;
    send(&mut ws, &join).await;
    match recv(&mut ws).await {
        ServerMessage::Refused { reason, detail, .. } => {
            assert!(!detail.is_empty(), "a refusal says why");
            reason
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn joins_without_a_valid_grant_are_refused_with_a_reason() {
    let film = swarm("film");
    let me = peer(1);
    let key = provider();
    let later = unix_now() + 600;

    assert_eq!(
        refusal_of(join_with(&me, film, None)).await,
        RefusalReason::NoGrant
    );
    let expired = grant(&key, &me, film, unix_now() - 5);
    assert_eq!(
        refusal_of(join_with(&me, film, Some(expired))).await,
        RefusalReason::Expired
    );
    let other_title = grant(&key, &me, swarm("another film"), later);
    assert_eq!(
        refusal_of(join_with(&me, film, Some(other_title))).await,
        RefusalReason::WrongSwarm
    );
    let someone_else = grant(&key, &peer(9), film, later);
    assert_eq!(
        refusal_of(join_with(&me, film, Some(someone_else))).await,
        RefusalReason::WrongPeer
    );
    let forger = ed25519_dalek::SigningKey::from_bytes(&[99; 32]);
    let forged = grant(&forger, &me, film, later);
    assert_eq!(
        refusal_of(join_with(&me, film, Some(forged))).await,
        RefusalReason::BadSignature
    );
}

#[tokio::test]
async fn a_refused_socket_cannot_signal_into_the_swarm() {
    let server = start(test_config()).await;
    let film = swarm("film");
    let (mut member, _) = joined(server.addr, 1, film).await;
    let mut outsider = connect_welcomed(server.addr).await;
    send(&mut outsider, &join_with(&peer(2), film, None)).await;
    assert!(matches!(
        recv(&mut outsider).await,
        ServerMessage::Refused { .. }
    ));
    send(&mut outsider, &offer(film, 1)).await;
    expect_error(&mut outsider, ErrorCode::NotJoined).await;
    nothing_pending(&mut member).await;
}

#[tokio::test]
async fn offers_answers_and_candidates_are_relayed_between_members() {
    let server = start(test_config()).await;
    let film = swarm("film");
    let (mut first, _) = joined(server.addr, 1, film).await;
    let (mut second, _) = joined(server.addr, 2, film).await;

    send(
        &mut second,
        &ClientMessage::Offer {
            swarm_id: film,
            to: peer(1),
            sdp: "v=0 offer".into(),
            stranded: true,
        },
    )
    .await;
    assert_eq!(
        recv(&mut first).await,
        ServerMessage::Offer {
            swarm_id: film,
            from: peer(2),
            sdp: "v=0 offer".into(),
            stranded: true,
        }
    );
    send(
        &mut first,
        &ClientMessage::Answer {
            swarm_id: film,
            to: peer(2),
            sdp: "v=0 answer".into(),
        },
    )
    .await;
    assert_eq!(
        recv(&mut second).await,
        ServerMessage::Answer {
            swarm_id: film,
            from: peer(1),
            sdp: "v=0 answer".into()
        }
    );
    let candidate = IceCandidate {
        candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
    };
    send(
        &mut first,
        &ClientMessage::Candidate {
            swarm_id: film,
            to: peer(2),
            candidate: candidate.clone(),
        },
    )
    .await;
    assert_eq!(
        recv(&mut second).await,
        ServerMessage::Candidate {
            swarm_id: film,
            from: peer(1),
            candidate
        }
    );
}

#[tokio::test]
async fn one_swarm_never_learns_of_or_reaches_another() {
    let server = start(test_config()).await;
    let film = swarm("film");
    let series = swarm("series");
    let (mut in_film, _) = joined(server.addr, 1, film).await;
    let (mut in_series, offered) = joined(server.addr, 2, series).await;
    assert!(offered.is_empty(), "offered a member of another swarm");

    // Naming the other swarm: not a member of it.
    send(&mut in_series, &offer(film, 1)).await;
    expect_error(&mut in_series, ErrorCode::NotJoined).await;
    // Naming its own swarm but a peer of the other: no such peer here.
    send(&mut in_series, &offer(series, 1)).await;
    expect_error(&mut in_series, ErrorCode::UnknownPeer).await;
    send(
        &mut in_series,
        &ClientMessage::FindPeers {
            swarm_id: series,
            exclude: vec![],
        },
    )
    .await;
    match recv(&mut in_series).await {
        ServerMessage::Peers { peers, .. } => assert!(peers.is_empty(), "{peers:?}"),
        other => panic!("expected peers, got {other:?}"),
    }
    nothing_pending(&mut in_film).await;
}

#[tokio::test]
async fn members_hear_when_a_peer_they_know_leaves_or_drops() {
    let server = start(test_config()).await;
    let film = swarm("film");
    let (first, _) = joined(server.addr, 1, film).await;
    let (mut second, offered) = joined(server.addr, 2, film).await;
    assert_eq!(offered, vec![peer(1)]);

    // The first socket vanishes without a goodbye.
    drop(first);
    assert_eq!(
        recv(&mut second).await,
        ServerMessage::PeerLeft {
            swarm_id: film,
            peer_id: peer(1)
        }
    );
    // A third joins and leaves politely; the second signalled with it first.
    let (mut third, _) = joined(server.addr, 3, film).await;
    send(&mut third, &offer(film, 2)).await;
    assert!(matches!(
        recv(&mut second).await,
        ServerMessage::Offer { .. }
    ));
    send(&mut third, &ClientMessage::Leave { swarm_id: film }).await;
    assert_eq!(
        recv(&mut second).await,
        ServerMessage::PeerLeft {
            swarm_id: film,
            peer_id: peer(3)
        }
    );
    assert_eq!(server.hub.members(&film), vec![peer(2)]);
    nothing_pending(&mut second).await;
}

#[tokio::test]
async fn a_reconnecting_tab_replaces_its_old_socket() {
    let server = start(test_config()).await;
    let film = swarm("film");
    let (mut old, _) = joined(server.addr, 1, film).await;
    let (_new, _) = joined(server.addr, 1, film).await;
    assert_eq!(
        recv(&mut old).await,
        ServerMessage::Removed {
            swarm_id: film,
            reason: RemovalReason::Replaced
        }
    );
    assert_eq!(server.hub.members(&film), vec![peer(1)]);
}

#[tokio::test]
async fn malformed_messages_get_errors_and_repeated_ones_a_disconnect() {
    let server = start(test_config()).await;
    let mut ws = connect_welcomed(server.addr).await;
    ws.send(Message::text("{\"type\":\"shout\"}"))
        .await
        .unwrap();
    expect_error(&mut ws, ErrorCode::Malformed).await;
    // The socket is still usable after one mistake.
    nothing_pending(&mut ws).await;
    for junk in ["not json", "[1,2,3]", "{\"type\":\"offer\"}", "\u{0}\u{1}"] {
        if ws.send(Message::text(junk)).await.is_err() {
            break;
        }
    }
    let _ = ws.send(Message::binary(vec![0xff; 64])).await;
    assert_eq!(closed(&mut ws).await, Some(1008), "policy violation close");
}

#[tokio::test]
async fn oversized_messages_are_refused_and_huge_frames_close_the_socket() {
    let server = start(test_config()).await;
    let film = swarm("film");
    let (mut ws, _) = joined(server.addr, 1, film).await;
    let limits = server.hub.config().limits;

    let too_large = ClientMessage::Offer {
        swarm_id: film,
        to: peer(2),
        sdp: "a".repeat(limits.max_message_bytes + 1),
        stranded: false,
    };
    send(&mut ws, &too_large).await;
    expect_error(&mut ws, ErrorCode::TooLarge).await;
    nothing_pending(&mut ws).await;

    let huge = "x".repeat(limits.max_transport_bytes + 1);
    let _ = ws.send(Message::text(huge)).await;
    assert!(closed(&mut ws).await.is_none_or(|code| code != 1000));
    // The server is still up for everyone else.
    let (_other, offered) = joined(server.addr, 2, film).await;
    assert!(offered.is_empty(), "the dropped socket left the swarm");
}

#[tokio::test]
async fn a_flood_is_rate_limited_then_disconnected() {
    let server = start(test_config()).await;
    let mut ws = connect_welcomed(server.addr).await;
    let limits = server.hub.config().limits;
    // One message at a time, each answer read before the next is sent: faster
    // than the sustained rate, so the burst runs out, then every message is a
    // strike. (Flooding without reading would make the server close with unread
    // bytes, and the reset could swallow its last frames before we read them.)
    let mut rate_limited = 0;
    let mut answered = 0;
    for nonce in 0..u64::from(limits.burst) * 2 {
        if ws
            .send(Message::text(
                serde_json::to_string(&ClientMessage::Ping { nonce }).unwrap(),
            ))
            .await
            .is_err()
        {
            break;
        }
        match tokio::time::timeout(PATIENCE, futures::StreamExt::next(&mut ws)).await {
            Err(_) => panic!("no answer to message {nonce}"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Ok(Message::Text(text)))) => {
                match serde_json::from_str(text.as_str()).unwrap() {
                    ServerMessage::Pong { .. } => answered += 1,
                    ServerMessage::Error {
                        code: ErrorCode::RateLimited,
                        ..
                    } => rate_limited += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    }
    assert!(
        answered >= limits.burst as usize - 1,
        "the burst was not honoured: {answered} answers"
    );
    assert!(rate_limited >= 1, "no rate-limit error before the close");
    assert!(
        rate_limited <= limits.max_strikes as usize,
        "{rate_limited} rate-limit errors and still open"
    );
    assert!(closed(&mut ws).await.is_none_or(|code| code == 1008));
}

#[tokio::test]
async fn silent_and_never_joining_sockets_are_dropped() {
    let server = start(fast_heartbeat_config()).await;
    let film = swarm("film");
    // `silent` never reads, so it never answers the server's pings.
    let (_silent, _) = joined(server.addr, 1, film).await;
    let (mut member, offered) = joined(server.addr, 2, film).await;
    assert_eq!(offered, vec![peer(1)], "so the member hears when it goes");
    assert_eq!(
        recv(&mut member).await,
        ServerMessage::PeerLeft {
            swarm_id: film,
            peer_id: peer(1)
        }
    );
    assert_eq!(server.hub.members(&film), vec![peer(2)]);

    let mut lurker = connect_welcomed(server.addr).await;
    // Answering pings is not enough: a socket must join something.
    assert_eq!(closed(&mut lurker).await, Some(1008));
}

#[tokio::test]
async fn peer_ids_are_checked_before_anything_else() {
    let server = start(test_config()).await;
    let mut ws = connect_welcomed(server.addr).await;
    let film = swarm("film");
    let bad_id = format!(
        "{{\"type\":\"join\",\"version\":1,\"swarm_id\":\"{film}\",\"peer_id\":\"NOT-HEX\"}}"
    );
    ws.send(Message::text(bad_id)).await.unwrap();
    expect_error(&mut ws, ErrorCode::Malformed).await;
    assert!(server.hub.members(&film).is_empty());
}
