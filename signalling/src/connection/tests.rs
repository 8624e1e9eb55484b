//! The socket loop driven over futures channels, in paused time, so heartbeats and
//! timeouts are tested in virtual seconds.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::channel::mpsc;
use telly_proto::signal::{HaveSummary, PeerId, RefusalReason};
use telly_proto::{Grant, ProviderPublicKey, Sha256Hash, SignedGrant};
use tokio::task::JoinHandle;

use super::*;
use crate::hub::SignalConfig;
use crate::rooms::RoomsConfig;

const NOW: u64 = 1_800_000_000;

fn config() -> SignalConfig {
    SignalConfig {
        limits: SocketLimits {
            heartbeat_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            join_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(1),
            ..SocketLimits::default()
        },
        rooms: RoomsConfig::default(),
        max_sockets: 3,
        seed: 1,
    }
}

fn provider() -> SigningKey {
    SigningKey::from_bytes(&[3; 32])
}

fn hub() -> Arc<Hub> {
    Hub::with_clock(
        ProviderPublicKey(provider().verifying_key()),
        config(),
        Arc::new(|| NOW),
    )
}

fn peer(n: u8) -> PeerId {
    PeerId::parse(&format!("{n:02x}").repeat(8)).unwrap()
}

fn swarm() -> Sha256Hash {
    Sha256Hash::of(b"the manifest")
}

fn join(n: u8) -> ClientMessage {
    let grant = SignedGrant::sign(
        &Grant {
            viewer: "ada".into(),
            peer_id: peer(n).to_string(),
            title_id: "t".into(),
            swarm_id: swarm(),
            expires_at: NOW + 600,
        },
        &provider(),
    );
    ClientMessage::Join {
        version: SIGNAL_VERSION,
        swarm_id: swarm(),
        peer_id: peer(n),
        grant: Some(grant),
        have: HaveSummary::default(),
    }
}

struct Client {
    to_server: mpsc::Sender<Result<Message, String>>,
    from_server: mpsc::Receiver<Message>,
    task: JoinHandle<Ending>,
}

impl Client {
    fn connect(hub: &Arc<Hub>, buffer: usize) -> Self {
        let (to_server, server_in) = mpsc::channel(64);
        let (server_out, from_server) = mpsc::channel(buffer);
        let task = tokio::spawn(serve_socket(Arc::clone(hub), server_out, server_in));
        Self {
            to_server,
            from_server,
            task,
        }
    }

    async fn send(&mut self, message: &ClientMessage) {
        let text = serde_json::to_string(message).unwrap();
        self.send_raw(Message::text(text)).await;
    }

    async fn send_raw(&mut self, frame: Message) {
        self.to_server.send(Ok(frame)).await.unwrap();
    }

    /// The next JSON message, answering pings on the way like a browser would.
    async fn recv(&mut self) -> ServerMessage {
        loop {
            match self.from_server.next().await.expect("socket closed") {
                Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Message::Ping(_) => self.send_raw(Message::Pong(Default::default())).await,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Reads frames until the server closes; returns the close code if it sent one.
    async fn close_code(&mut self) -> Option<u16> {
        while let Some(frame) = self.from_server.next().await {
            if let Message::Close(close) = frame {
                return close.map(|c| c.code);
            }
        }
        None
    }
}

#[tokio::test(start_paused = true)]
async fn welcome_join_relay_and_a_closed_socket_is_announced() {
    let hub = hub();
    let mut a = Client::connect(&hub, 16);
    let mut b = Client::connect(&hub, 16);
    for client in [&mut a, &mut b] {
        let ServerMessage::Welcome { version, limits } = client.recv().await else {
            panic!("no welcome");
        };
        assert_eq!(version, SIGNAL_VERSION);
        assert_eq!(limits.heartbeat_ms, 1000);
        assert_eq!(limits.max_message_bytes, 16 * 1024);
    }
    a.send(&join(1)).await;
    assert!(matches!(a.recv().await, ServerMessage::Joined { .. }));
    b.send(&join(2)).await;
    let ServerMessage::Joined { peers, .. } = b.recv().await else {
        panic!("not joined");
    };
    assert_eq!(peers[0].peer_id, peer(1));
    b.send(&ClientMessage::Offer {
        swarm_id: swarm(),
        to: peer(1),
        sdp: "v=0 offer".into(),
        stranded: false,
    })
    .await;
    assert_eq!(
        a.recv().await,
        ServerMessage::Offer {
            swarm_id: swarm(),
            from: peer(2),
            sdp: "v=0 offer".into(),
            stranded: false,
        }
    );
    drop(a.to_server);
    assert_eq!(a.task.await.unwrap(), Ending::ClientClosed);
    assert_eq!(
        b.recv().await,
        ServerMessage::PeerLeft {
            swarm_id: swarm(),
            peer_id: peer(1)
        }
    );
    assert_eq!(hub.members(&swarm()), vec![peer(2)]);
    assert_eq!(hub.stats().sockets, 1);
}

#[tokio::test(start_paused = true)]
async fn a_silent_socket_is_dropped_after_the_idle_timeout() {
    let hub = hub();
    let mut silent = Client::connect(&hub, 16);
    silent.recv().await;
    silent.send(&join(1)).await;
    silent.recv().await;
    let mut alive = Client::connect(&hub, 16);
    alive.recv().await;
    alive.send(&join(2)).await;
    alive.recv().await;
    alive
        .send(&ClientMessage::Offer {
            swarm_id: swarm(),
            to: peer(1),
            sdp: "v=0".into(),
            stranded: false,
        })
        .await;
    let started = Instant::now();
    // `alive` answers every ping while waiting; `silent` never reads again.
    assert_eq!(
        alive.recv().await,
        ServerMessage::PeerLeft {
            swarm_id: swarm(),
            peer_id: peer(1)
        }
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited <= Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(silent.task.await.unwrap(), Ending::Idle);
    assert_eq!(hub.members(&swarm()), vec![peer(2)]);
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_never_joins_is_closed() {
    let hub = hub();
    let mut idle = Client::connect(&hub, 16);
    idle.recv().await;
    // It answers pings and even asks for a refused join, but never gets in.
    let mut no_grant = join(1);
    if let ClientMessage::Join { grant, .. } = &mut no_grant {
        *grant = None;
    }
    idle.send(&no_grant).await;
    let ServerMessage::Refused { reason, .. } = idle.recv().await else {
        panic!("not refused");
    };
    assert_eq!(reason, RefusalReason::NoGrant);
    let started = Instant::now();
    loop {
        match idle.from_server.next().await {
            Some(Message::Ping(_)) => idle.send_raw(Message::Pong(Default::default())).await,
            Some(Message::Close(Some(close))) => {
                assert_eq!(close.code, close_code::POLICY);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(idle.task.await.unwrap(), Ending::NeverJoined);
}

#[tokio::test(start_paused = true)]
async fn repeated_garbage_closes_the_socket_with_a_policy_code() {
    let hub = hub();
    let mut client = Client::connect(&hub, 64);
    client.recv().await;
    for n in 0..config().limits.max_strikes {
        let frame = if n % 2 == 0 {
            Message::text("{\"type\":")
        } else {
            Message::binary(vec![1, 2, 3])
        };
        client.send_raw(frame).await;
    }
    for _ in 1..config().limits.max_strikes {
        let ServerMessage::Error { code, .. } = client.recv().await else {
            panic!("no error frame");
        };
        assert_eq!(code, ErrorCode::Malformed);
    }
    // The last strike is answered too, then the socket closes.
    assert!(matches!(client.recv().await, ServerMessage::Error { .. }));
    assert_eq!(client.close_code().await, Some(close_code::POLICY));
    assert_eq!(client.task.await.unwrap(), Ending::Abuse);
    assert_eq!(hub.stats().sockets, 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_read_is_dropped_when_writes_stall() {
    let hub = hub();
    // Room for one frame: the welcome fills it and nothing is ever read.
    let mut stuck = Client::connect(&hub, 0);
    stuck.send(&join(1)).await;
    stuck.send(&ClientMessage::Ping { nonce: 1 }).await;
    assert_eq!(stuck.task.await.unwrap(), Ending::WriteFailed);
    assert_eq!(
        hub.stats(),
        crate::HubStats {
            sockets: 0,
            swarms: 0
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_server_refuses_more_sockets() {
    let hub = hub();
    let mut open: Vec<Client> = (0..3).map(|_| Client::connect(&hub, 16)).collect();
    for client in &mut open {
        client.recv().await;
    }
    let mut extra = Client::connect(&hub, 16);
    assert_eq!(extra.close_code().await, Some(close_code::AGAIN));
    assert_eq!(extra.task.await.unwrap(), Ending::Full);
    assert_eq!(hub.stats().sockets, 3);
}
