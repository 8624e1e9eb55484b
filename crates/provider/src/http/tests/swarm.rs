//! Grants and the signalling endpoint `telly serve` mounts at `/signal`.

use futures::{SinkExt, StreamExt};
use telly_proto::api::GrantResponse;
use telly_proto::signal::{
    ClientMessage, HaveSummary, PeerId, RefusalReason, SIGNAL_VERSION, ServerMessage,
};
use tokio_tungstenite::tungstenite::Message;

use super::*;
use crate::http::api::GRANT_TTL_S;
use crate::unix_now;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON message, skipping the server's pings.
async fn next_message(ws: &mut Ws) -> ServerMessage {
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("an answer in time")
            .expect("the socket is open")
            .expect("the socket works");
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

fn peer_id(n: u8) -> PeerId {
    PeerId::parse(&format!("{n:02x}").repeat(16)).unwrap()
}

async fn grant_for(f: &Fixture, cookie: &str, title: &str, peer: &PeerId) -> Response {
    f.send(request(
        Method::POST,
        &format!("/api/titles/{title}/grant"),
        Some(cookie),
        json_body(&serde_json::json!({ "peer_id": peer })),
    ))
    .await
}

#[tokio::test]
async fn a_grant_names_the_viewer_the_peer_and_the_titles_swarm() {
    let f = fixture();
    let cookie = f.sign_in().await;
    let me = peer_id(7);
    let response = grant_for(&f, &cookie, "older", &me).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: GrantResponse = json(response).await;
    let manifest: SignedManifest =
        json(f.get("/api/titles/older/manifest", Some(&cookie)).await).await;
    let swarm_id = telly_proto::Sha256Hash::of(manifest.body.as_bytes());
    assert_eq!(answer.swarm_id, swarm_id);
    let grant = answer
        .grant
        .verify(&f.state.public_key(), &swarm_id, unix_now())
        .expect("the grant verifies with the provider's key");
    assert_eq!(grant.viewer, "ada");
    assert_eq!(grant.peer_id, me.to_string());
    assert_eq!(grant.title_id, "older");
    assert_eq!(grant.expires_at, answer.expires_at);
    let ttl = answer.expires_at - unix_now();
    assert!(ttl <= GRANT_TTL_S && ttl + 60 >= GRANT_TTL_S, "{ttl}");
    // Useless for another title's swarm.
    let other: SignedManifest =
        json(f.get("/api/titles/newer/manifest", Some(&cookie)).await).await;
    let other_swarm = telly_proto::Sha256Hash::of(other.body.as_bytes());
    assert_eq!(
        answer
            .grant
            .verify(&f.state.public_key(), &other_swarm, unix_now()),
        Err(telly_proto::GrantError::WrongSwarm)
    );
}

#[tokio::test]
async fn grants_need_a_known_title_and_a_well_formed_peer_id() {
    let f = fixture();
    let cookie = f.sign_in().await;
    let unknown = grant_for(&f, &cookie, "no-such-title", &peer_id(1)).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    for body in [
        serde_json::json!({ "peer_id": "NOT HEX" }),
        serde_json::json!({ "peer_id": "ab" }),
        serde_json::json!({}),
        serde_json::json!({ "peer_id": "ab".repeat(16), "viewer": "someone else" }),
    ] {
        let response = f
            .send(request(
                Method::POST,
                "/api/titles/older/grant",
                Some(&cookie),
                json_body(&body),
            ))
            .await;
        assert!(
            response.status().is_client_error(),
            "{body} got {}",
            response.status()
        );
        let error: ApiError = json(response).await;
        assert!(!error.error.is_empty());
    }
}

/// Over a real socket: a grant from the API admits a tab to the title's swarm
/// at `/signal`, and not to another title's.
#[tokio::test]
async fn the_served_signalling_endpoint_admits_only_with_the_titles_grant() {
    let f = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(
        listener,
        Arc::clone(&f.state),
        std::future::pending(),
    ));
    let cookie = f.sign_in().await;
    let me = peer_id(3);
    let older: GrantResponse = json(grant_for(&f, &cookie, "older", &me).await).await;
    let newer: GrantResponse = json(grant_for(&f, &cookie, "newer", &me).await).await;

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/signal"))
        .await
        .unwrap();
    assert!(matches!(
        next_message(&mut ws).await,
        ServerMessage::Welcome { .. }
    ));
    let join = |swarm_id, grant| ClientMessage::Join {
        version: SIGNAL_VERSION,
        swarm_id,
        peer_id: me.clone(),
        grant: Some(grant),
        have: HaveSummary::default(),
    };
    for (message, admitted) in [
        // The older title's grant presented for the newer title's swarm.
        (join(newer.swarm_id, older.grant.clone()), false),
        (join(older.swarm_id, older.grant.clone()), true),
    ] {
        ws.send(Message::text(serde_json::to_string(&message).unwrap()))
            .await
            .unwrap();
        let answer = next_message(&mut ws).await;
        match (answer, admitted) {
            (ServerMessage::Joined { swarm_id, .. }, true) => assert_eq!(swarm_id, older.swarm_id),
            (
                ServerMessage::Refused {
                    reason: RefusalReason::WrongSwarm,
                    ..
                },
                false,
            ) => {}
            (other, _) => panic!("unexpected {other:?} (admitted: {admitted})"),
        }
    }
    assert_eq!(f.state.hub().members(&older.swarm_id), vec![me]);
    server.abort();
}
