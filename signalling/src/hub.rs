//! The hub: [`Rooms`] behind a lock, plus one outbox per open socket.
//!
//! Socket tasks hand the hub decoded messages; the hub routes them with [`Rooms`]
//! and pushes each resulting message into its recipient's bounded outbox, which the
//! recipient's own task drains onto its WebSocket. The lock is held only while
//! routing and queueing (never across an await), and a full outbox drops the
//! message rather than waiting, so one stalled socket cannot hold up the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use telly_proto::signal::{ClientMessage, ErrorCode, PeerId, ServerMessage};
use telly_proto::{ProviderPublicKey, Sha256Hash};
use tokio::sync::mpsc;

use crate::limits::SocketLimits;
use crate::rooms::{ConnId, Envelope, Rooms, RoomsConfig};

/// Everything a signalling server is configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalConfig {
    pub limits: SocketLimits,
    pub rooms: RoomsConfig,
    /// Most sockets open at once; more are refused with 503.
    pub max_sockets: usize,
    /// Seeds the tracker's tie-breaking; fixed in tests, random in production.
    pub seed: u64,
}

impl SignalConfig {
    /// The defaults, with a random seed.
    pub fn with_random_seed() -> Self {
        Self {
            limits: SocketLimits::default(),
            rooms: RoomsConfig::default(),
            max_sockets: 20_000,
            seed: rand::random(),
        }
    }
}

/// Seconds since the Unix epoch, as grants count time.
pub type UnixClock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct HubState {
    rooms: Rooms,
    outboxes: HashMap<ConnId, mpsc::Sender<ServerMessage>>,
}

/// Counts for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubStats {
    pub sockets: usize,
    pub swarms: usize,
}

pub struct Hub {
    config: SignalConfig,
    clock: UnixClock,
    next_conn: AtomicU64,
    state: Mutex<HubState>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(provider_key: ProviderPublicKey, config: SignalConfig) -> Arc<Self> {
        Self::with_clock(provider_key, config, Arc::new(system_unix_now))
    }

    /// A hub that reads Unix time from `clock` (tests move it to expire grants).
    pub fn with_clock(
        provider_key: ProviderPublicKey,
        config: SignalConfig,
        clock: UnixClock,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(HubState {
                rooms: Rooms::new(provider_key, config.rooms, config.seed),
                outboxes: HashMap::new(),
            }),
            config,
            clock,
            next_conn: AtomicU64::new(1),
        })
    }

    pub fn config(&self) -> &SignalConfig {
        &self.config
    }

    pub fn stats(&self) -> HubStats {
        let state = self.lock();
        HubStats {
            sockets: state.outboxes.len(),
            swarms: state.rooms.swarm_count(),
        }
    }

    /// The peers in a swarm, in id order.
    pub fn members(&self, swarm_id: &Sha256Hash) -> Vec<PeerId> {
        self.lock().rooms.members(swarm_id)
    }

    /// A poisoned lock is taken anyway: routing state stays consistent between
    /// calls (every `Rooms` method finishes its updates before returning), and a
    /// signalling server that stops routing after one bad task helps nobody.
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new socket and the receiving end of its outbox, or `None` when the server
    /// is full.
    pub(crate) fn register(&self) -> Option<(ConnId, mpsc::Receiver<ServerMessage>)> {
        let mut state = self.lock();
        if state.outboxes.len() >= self.config.max_sockets {
            return None;
        }
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let (sender, receiver) = mpsc::channel(self.config.limits.outbox_capacity.max(1));
        state.outboxes.insert(conn, sender);
        Some((conn, receiver))
    }

    /// Routes one message; true when it counts as a strike against the sender.
    pub(crate) fn handle(&self, conn: ConnId, message: ClientMessage) -> bool {
        let now = (self.clock)();
        let mut state = self.lock();
        let routed = state.rooms.handle(conn, message, now);
        state.deliver(conn, routed.deliveries);
        routed.strike
    }

    /// Ends the socket's memberships whose grants have expired.
    pub(crate) fn expire(&self, conn: ConnId) {
        let now = (self.clock)();
        let mut state = self.lock();
        let out = state.rooms.expire(conn, now);
        state.deliver(conn, out);
    }

    /// True when the socket is in at least one swarm.
    pub(crate) fn has_joined(&self, conn: ConnId) -> bool {
        self.lock().rooms.swarms_of(conn) > 0
    }

    /// Forgets a closed socket; its swarms hear that it left.
    pub(crate) fn unregister(&self, conn: ConnId) {
        let mut state = self.lock();
        state.outboxes.remove(&conn);
        let out = state.rooms.disconnect(conn);
        state.deliver(conn, out);
    }
}

impl HubState {
    fn deliver(&mut self, from: ConnId, deliveries: Vec<Envelope>) {
        let mut unreachable = Vec::new();
        for Envelope { to, message } in deliveries {
            let Some(outbox) = self.outboxes.get(&to) else {
                continue;
            };
            match outbox.try_send(message) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(dropped)) => {
                    tracing::debug!(socket = to.0, "outbox full; message dropped");
                    if to != from && is_relay(&dropped) {
                        unreachable.push(to);
                    }
                }
                // The socket is closing; its task unregisters it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        if !unreachable.is_empty()
            && let Some(outbox) = self.outboxes.get(&from)
        {
            let _ = outbox.try_send(ServerMessage::Error {
                code: ErrorCode::PeerUnreachable,
                detail: "that peer is not reading its signalling socket; message dropped".into(),
            });
        }
    }
}

fn is_relay(message: &ServerMessage) -> bool {
    matches!(
        message,
        ServerMessage::Offer { .. }
            | ServerMessage::Answer { .. }
            | ServerMessage::Candidate { .. }
    )
}
