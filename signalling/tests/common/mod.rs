//! A real server on 127.0.0.1:0 and tokio-tungstenite clients for it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::{SinkExt, StreamExt};
use telly_proto::signal::{
    ClientMessage, ErrorCode, HaveSummary, PeerId, SIGNAL_VERSION, ServerMessage,
};
use telly_proto::{Grant, ProviderPublicKey, Sha256Hash, SignedGrant};
use telly_signalling::{Hub, SignalConfig, SocketLimits};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub fn provider() -> SigningKey {
    SigningKey::from_bytes(&[11; 32])
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn peer(n: u32) -> PeerId {
    PeerId::parse(&format!("{n:016x}")).unwrap()
}

pub fn swarm(title: &str) -> Sha256Hash {
    Sha256Hash::of(format!("manifest of {title}").as_bytes())
}

pub fn grant(
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

pub fn join_with(
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

pub fn valid_join(n: u32, swarm_id: Sha256Hash) -> ClientMessage {
    let me = peer(n);
    let grant = grant(&provider(), &me, swarm_id, unix_now() + 600);
    join_with(&me, swarm_id, Some(grant))
}

pub struct Server {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn test_config() -> SignalConfig {
    SignalConfig {
        seed: 5,
        ..SignalConfig::with_random_seed()
    }
}

/// Short heartbeats, for tests of silent clients.
pub fn fast_heartbeat_config() -> SignalConfig {
    SignalConfig {
        limits: SocketLimits {
            heartbeat_interval: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(400),
            join_timeout: Duration::from_millis(600),
            ..SocketLimits::default()
        },
        ..test_config()
    }
}

pub async fn start(config: SignalConfig) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = Hub::new(ProviderPublicKey(provider().verifying_key()), config);
    let app = telly_signalling::app(Arc::clone(&hub));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, hub, task }
}

pub async fn connect(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/signal"))
        .await
        .unwrap();
    ws
}

/// Connects and reads the welcome.
pub async fn connect_welcomed(addr: SocketAddr) -> Ws {
    let mut ws = connect(addr).await;
    assert!(matches!(recv(&mut ws).await, ServerMessage::Welcome { .. }));
    ws
}

/// Connects, joins as peer `n` and returns the peers offered.
pub async fn joined(addr: SocketAddr, n: u32, swarm_id: Sha256Hash) -> (Ws, Vec<PeerId>) {
    let mut ws = connect_welcomed(addr).await;
    send(&mut ws, &valid_join(n, swarm_id)).await;
    match recv(&mut ws).await {
        ServerMessage::Joined { peers, .. } => {
            let peers = peers.into_iter().map(|p| p.peer_id).collect();
            (ws, peers)
        }
        other => panic!("not joined: {other:?}"),
    }
}

pub async fn send(ws: &mut Ws, message: &ClientMessage) {
    let text = serde_json::to_string(message).unwrap();
    ws.send(Message::text(text)).await.unwrap();
}

/// The next JSON message (reading also answers the server's pings).
pub async fn recv(ws: &mut Ws) -> ServerMessage {
    // One deadline for the whole wait: the server's pings must not extend it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("nothing from the server in time")
            .expect("socket closed")
            .expect("socket failed");
        match frame {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads until the server ends the socket; the close code, if it sent one.
pub async fn closed(ws: &mut Ws) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the server did not close the socket"),
            Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Proves nothing else is queued for `ws`: a ping's pong comes next.
pub async fn nothing_pending(ws: &mut Ws) {
    send(ws, &ClientMessage::Ping { nonce: 4242 }).await;
    assert_eq!(recv(ws).await, ServerMessage::Pong { nonce: 4242 });
}

/// An offer to peer `n` with a placeholder SDP.
pub fn offer(swarm_id: Sha256Hash, n: u32) -> ClientMessage {
    ClientMessage::Offer {
        swarm_id,
        to: peer(n),
        sdp: "v=0".into(),
        stranded: false,
    }
}

/// The next message must be an error with this code.
pub async fn expect_error(ws: &mut Ws, code: ErrorCode) {
    match recv(ws).await {
        ServerMessage::Error { code: got, .. } if got == code => {}
        other => panic!("expected a {code:?} error, got {other:?}"),
    }
}
