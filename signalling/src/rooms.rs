//! Rooms: who is in which swarm on which socket, and where each message goes.
//!
//! [`Rooms`] is the whole routing logic as a plain state machine: the caller feeds
//! it one socket's decoded message with the current Unix time and gets back the
//! messages to deliver, each addressed to a socket. It does no IO, reads no clock
//! and draws randomness only from the seeded RNG it was built with, so tests drive
//! it directly and a given seed and input always give the same output.
//!
//! # Invariants (checked by [`Rooms::check_invariants`])
//!
//! 1. Every member of a swarm is on a known socket, that socket is bound to the
//!    member's peer id, and lists the swarm.
//! 2. Every swarm a socket lists has the socket's peer id as a member on that socket.
//! 3. No swarm is empty.
//! 4. A member's `knows` holds only other members of the same swarm.
//!
//! # Isolation
//!
//! Peer lists, relays and leave notices only ever name members of the swarm the
//! message concerns, and go only to members of that swarm; an unknown target and a
//! target in another swarm get the same answer, so nothing outside a socket's own
//! swarms can be learned from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use telly_proto::signal::{
    ClientMessage, ErrorCode, HaveSummary, IceCandidate, MAX_CANDIDATE_BYTES, MAX_EXCLUDED_PEERS,
    MAX_SDP_BYTES, PeerId, PeerInfo, RefusalReason, RemovalReason, SIGNAL_VERSION, ServerMessage,
};
use telly_proto::{GrantError, ProviderPublicKey, Sha256Hash, SignedGrant};

use crate::tracker::{self, TrackerConfig};

/// A socket, as the caller numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// One message for one socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub to: ConnId,
    pub message: ServerMessage,
}

/// What handling one message produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routed {
    /// To deliver in order; answers to the sender are addressed to it.
    pub deliveries: Vec<Envelope>,
    /// The message showed hostility or a broken client (a forged grant, a grant
    /// for another peer, a malformed field); the caller counts it against the socket.
    pub strike: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomsConfig {
    pub tracker: TrackerConfig,
    /// Most swarms one socket may be in at once.
    pub max_swarms_per_socket: usize,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            tracker: TrackerConfig::default(),
            max_swarms_per_socket: 16,
        }
    }
}

struct Member {
    conn: ConnId,
    have: HaveSummary,
    /// The grant's expiry, Unix seconds: the membership ends then.
    expires_at: u64,
    /// Peers this member was told about or exchanged signals with; they are the
    /// ones it hears leave.
    knows: BTreeSet<PeerId>,
}

#[derive(Default)]
struct Swarm {
    /// Ordered, so that the tracker sees candidates in a stable order.
    members: BTreeMap<PeerId, Member>,
}

#[derive(Default)]
struct Socket {
    /// Bound by the first successful join; every later grant must name it.
    peer_id: Option<PeerId>,
    swarms: BTreeSet<Sha256Hash>,
}

pub struct Rooms {
    provider_key: ProviderPublicKey,
    config: RoomsConfig,
    rng: ChaCha8Rng,
    swarms: HashMap<Sha256Hash, Swarm>,
    sockets: HashMap<ConnId, Socket>,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms")
            .field("swarms", &self.swarms.len())
            .field("sockets", &self.sockets.len())
            .finish_non_exhaustive()
    }
}

fn error(to: ConnId, code: ErrorCode, detail: impl Into<String>) -> Envelope {
    Envelope {
        to,
        message: ServerMessage::Error {
            code,
            detail: detail.into(),
        },
    }
}

fn answer(envelope: Envelope, strike: bool) -> Routed {
    Routed {
        deliveries: vec![envelope],
        strike,
    }
}

/// Relayed payloads, checked against their limits before they travel.
enum Signal {
    /// An offer, and whether its dialler is stranded.
    Offer(String, bool),
    Answer(String),
    Candidate(IceCandidate),
}

impl Signal {
    fn check(&self) -> Result<(), String> {
        match self {
            Signal::Offer(sdp, _) | Signal::Answer(sdp) if sdp.len() > MAX_SDP_BYTES => {
                Err(format!("SDP longer than {MAX_SDP_BYTES} bytes"))
            }
            Signal::Candidate(c)
                if c.candidate.len() > MAX_CANDIDATE_BYTES
                    || c.sdp_mid
                        .as_ref()
                        .is_some_and(|m| m.len() > MAX_CANDIDATE_BYTES) =>
            {
                Err(format!(
                    "ICE candidate longer than {MAX_CANDIDATE_BYTES} bytes"
                ))
            }
            _ => Ok(()),
        }
    }

    fn into_message(self, swarm_id: Sha256Hash, from: PeerId) -> ServerMessage {
        match self {
            Signal::Offer(sdp, stranded) => ServerMessage::Offer {
                swarm_id,
                from,
                sdp,
                stranded,
            },
            Signal::Answer(sdp) => ServerMessage::Answer {
                swarm_id,
                from,
                sdp,
            },
            Signal::Candidate(candidate) => ServerMessage::Candidate {
                swarm_id,
                from,
                candidate,
            },
        }
    }
}

fn refusal_for(error: &GrantError) -> RefusalReason {
    match error {
        GrantError::Signature(_) => RefusalReason::BadSignature,
        GrantError::TooLarge | GrantError::Parse(_) => RefusalReason::BadGrant,
        GrantError::Expired { .. } => RefusalReason::Expired,
        GrantError::WrongSwarm => RefusalReason::WrongSwarm,
        GrantError::WrongPeer { .. } => RefusalReason::WrongPeer,
    }
}

/// Refusals that a correct client can earn (an old grant after a sleep, an old
/// version) are not held against it; the others are.
fn refusal_is_strike(reason: RefusalReason) -> bool {
    !matches!(
        reason,
        RefusalReason::NoGrant
            | RefusalReason::Expired
            | RefusalReason::VersionMismatch
            | RefusalReason::TooManySwarms
    )
}

struct JoinRequest {
    version: u32,
    swarm_id: Sha256Hash,
    peer_id: PeerId,
    grant: Option<SignedGrant>,
    have: HaveSummary,
}

impl Rooms {
    pub fn new(provider_key: ProviderPublicKey, config: RoomsConfig, seed: u64) -> Self {
        Self {
            provider_key,
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            swarms: HashMap::new(),
            sockets: HashMap::new(),
        }
    }

    pub fn config(&self) -> &RoomsConfig {
        &self.config
    }

    /// Handles one message from socket `from` at Unix time `now_unix`. Memberships
    /// of the sender whose grants have expired end first.
    pub fn handle(&mut self, from: ConnId, message: ClientMessage, now_unix: u64) -> Routed {
        let expired = self.expire(from, now_unix);
        let mut routed = match message {
            ClientMessage::Join {
                version,
                swarm_id,
                peer_id,
                grant,
                have,
            } => self.join(
                from,
                JoinRequest {
                    version,
                    swarm_id,
                    peer_id,
                    grant,
                    have,
                },
                now_unix,
            ),
            ClientMessage::Leave { swarm_id } => self.leave(from, swarm_id),
            ClientMessage::Have { swarm_id, have } => self.update_have(from, swarm_id, have),
            ClientMessage::FindPeers { swarm_id, exclude } => {
                self.find_peers(from, swarm_id, exclude, now_unix)
            }
            ClientMessage::Offer {
                swarm_id,
                to,
                sdp,
                stranded,
            } => self.relay(from, swarm_id, to, Signal::Offer(sdp, stranded), now_unix),
            ClientMessage::Answer { swarm_id, to, sdp } => {
                self.relay(from, swarm_id, to, Signal::Answer(sdp), now_unix)
            }
            ClientMessage::Candidate {
                swarm_id,
                to,
                candidate,
            } => self.relay(from, swarm_id, to, Signal::Candidate(candidate), now_unix),
            ClientMessage::Ping { nonce } => answer(
                Envelope {
                    to: from,
                    message: ServerMessage::Pong { nonce },
                },
                false,
            ),
        };
        if !expired.is_empty() {
            routed.deliveries.splice(0..0, expired);
        }
        routed
    }

    /// Ends every membership of a closed socket and announces it.
    pub fn disconnect(&mut self, conn: ConnId) -> Vec<Envelope> {
        let mut out = Vec::new();
        let Some(socket) = self.sockets.remove(&conn) else {
            return out;
        };
        if let Some(peer_id) = socket.peer_id {
            for swarm_id in socket.swarms {
                self.remove_member(swarm_id, &peer_id, &mut out);
            }
        }
        out
    }

    /// Ends the memberships of socket `conn` whose grants expired by `now_unix`:
    /// the socket is told, and so are the peers that know it.
    pub fn expire(&mut self, conn: ConnId, now_unix: u64) -> Vec<Envelope> {
        let mut out = Vec::new();
        let Some(socket) = self.sockets.get(&conn) else {
            return out;
        };
        let Some(peer_id) = socket.peer_id.clone() else {
            return out;
        };
        let expired: Vec<Sha256Hash> = socket
            .swarms
            .iter()
            .filter(|swarm_id| {
                self.swarms
                    .get(swarm_id)
                    .and_then(|swarm| swarm.members.get(&peer_id))
                    .is_some_and(|member| member.expires_at <= now_unix)
            })
            .copied()
            .collect();
        for swarm_id in expired {
            self.remove_with_notice(swarm_id, &peer_id, RemovalReason::GrantExpired, &mut out);
        }
        out
    }

    /// The peers in a swarm, in id order.
    pub fn members(&self, swarm_id: &Sha256Hash) -> Vec<PeerId> {
        self.swarms
            .get(swarm_id)
            .map(|swarm| swarm.members.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn swarm_count(&self) -> usize {
        self.swarms.len()
    }

    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    /// How many swarms a socket is in.
    pub fn swarms_of(&self, conn: ConnId) -> usize {
        self.sockets
            .get(&conn)
            .map_or(0, |socket| socket.swarms.len())
    }

    fn join(&mut self, from: ConnId, request: JoinRequest, now_unix: u64) -> Routed {
        let JoinRequest {
            version,
            swarm_id,
            peer_id,
            grant,
            have,
        } = request;
        let refuse = |reason: RefusalReason, detail: String| {
            answer(
                Envelope {
                    to: from,
                    message: ServerMessage::Refused {
                        swarm_id,
                        reason,
                        detail,
                    },
                },
                refusal_is_strike(reason),
            )
        };
        if version != SIGNAL_VERSION {
            return refuse(
                RefusalReason::VersionMismatch,
                format!("this server speaks signalling version {SIGNAL_VERSION}, not {version}"),
            );
        }
        let bound = self.sockets.get(&from).and_then(|s| s.peer_id.as_ref());
        if let Some(bound) = bound.filter(|bound| **bound != peer_id) {
            return refuse(
                RefusalReason::PeerIdChanged,
                format!("this socket joined as {bound}, not {peer_id}"),
            );
        }
        if let Err(e) = have.validate() {
            return refuse(RefusalReason::BadSummary, e.to_string());
        }
        let Some(grant) = grant else {
            return refuse(
                RefusalReason::NoGrant,
                "a join needs a grant from the provider".into(),
            );
        };
        let granted = match grant.verify(&self.provider_key, &swarm_id, now_unix) {
            Ok(granted) => granted,
            Err(e) => return refuse(refusal_for(&e), e.to_string()),
        };
        if granted.peer_id != peer_id.as_str() {
            let e = GrantError::WrongPeer {
                named: granted.peer_id.chars().take(80).collect(),
                presented: peer_id.to_string(),
            };
            return refuse(RefusalReason::WrongPeer, e.to_string());
        }

        let (renewing, swarms_joined) = self
            .sockets
            .get(&from)
            .map(|s| (s.swarms.contains(&swarm_id), s.swarms.len()))
            .unwrap_or_default();
        if !renewing && swarms_joined >= self.config.max_swarms_per_socket {
            return refuse(
                RefusalReason::TooManySwarms,
                format!(
                    "a socket may be in at most {} swarms",
                    self.config.max_swarms_per_socket
                ),
            );
        }
        let mut out = Vec::new();
        let socket = self.sockets.entry(from).or_default();
        socket.peer_id = Some(peer_id.clone());
        socket.swarms.insert(swarm_id);

        let swarm = self.swarms.entry(swarm_id).or_default();
        let knows = match swarm.members.remove(&peer_id) {
            Some(old) if old.conn != from => {
                // A reconnecting tab: the old socket is told, the peers are not,
                // since the same peer goes on and its data channels may be alive.
                if let Some(old_socket) = self.sockets.get_mut(&old.conn) {
                    old_socket.swarms.remove(&swarm_id);
                }
                out.push(Envelope {
                    to: old.conn,
                    message: ServerMessage::Removed {
                        swarm_id,
                        reason: RemovalReason::Replaced,
                    },
                });
                old.knows
            }
            Some(same_socket) => same_socket.knows,
            None => BTreeSet::new(),
        };
        let swarm = self.swarms.entry(swarm_id).or_default();
        swarm.members.insert(
            peer_id.clone(),
            Member {
                conn: from,
                have,
                expires_at: granted.expires_at,
                knows,
            },
        );
        let peers = self.choose_peers(swarm_id, &peer_id, &BTreeSet::new(), now_unix);
        out.push(Envelope {
            to: from,
            message: ServerMessage::Joined { swarm_id, peers },
        });
        Routed {
            deliveries: out,
            strike: false,
        }
    }

    /// The socket's peer id if it is a member of `swarm_id`.
    fn member_id(&self, conn: ConnId, swarm_id: &Sha256Hash) -> Option<PeerId> {
        let socket = self.sockets.get(&conn)?;
        if !socket.swarms.contains(swarm_id) {
            return None;
        }
        socket.peer_id.clone()
    }

    fn not_joined(conn: ConnId) -> Routed {
        answer(
            error(
                conn,
                ErrorCode::NotJoined,
                "this socket is not in that swarm",
            ),
            false,
        )
    }

    fn leave(&mut self, from: ConnId, swarm_id: Sha256Hash) -> Routed {
        let Some(peer_id) = self.member_id(from, &swarm_id) else {
            return Self::not_joined(from);
        };
        let mut out = Vec::new();
        self.remove_member(swarm_id, &peer_id, &mut out);
        Routed {
            deliveries: out,
            strike: false,
        }
    }

    fn update_have(&mut self, from: ConnId, swarm_id: Sha256Hash, have: HaveSummary) -> Routed {
        if let Err(e) = have.validate() {
            return answer(
                error(from, ErrorCode::Malformed, format!("have-summary: {e}")),
                true,
            );
        }
        let Some(peer_id) = self.member_id(from, &swarm_id) else {
            return Self::not_joined(from);
        };
        if let Some(member) = self
            .swarms
            .get_mut(&swarm_id)
            .and_then(|swarm| swarm.members.get_mut(&peer_id))
        {
            member.have = have;
        }
        Routed::default()
    }

    fn find_peers(
        &mut self,
        from: ConnId,
        swarm_id: Sha256Hash,
        exclude: Vec<PeerId>,
        now_unix: u64,
    ) -> Routed {
        if exclude.len() > MAX_EXCLUDED_PEERS {
            return answer(
                error(
                    from,
                    ErrorCode::Malformed,
                    format!("at most {MAX_EXCLUDED_PEERS} excluded peers"),
                ),
                true,
            );
        }
        let Some(peer_id) = self.member_id(from, &swarm_id) else {
            return Self::not_joined(from);
        };
        let exclude: BTreeSet<PeerId> = exclude.into_iter().collect();
        let peers = self.choose_peers(swarm_id, &peer_id, &exclude, now_unix);
        answer(
            Envelope {
                to: from,
                message: ServerMessage::Peers { swarm_id, peers },
            },
            false,
        )
    }

    /// The tracker's choice for `peer_id` among the live members of its swarm; the
    /// chosen become peers it knows.
    fn choose_peers(
        &mut self,
        swarm_id: Sha256Hash,
        peer_id: &PeerId,
        exclude: &BTreeSet<PeerId>,
        now_unix: u64,
    ) -> Vec<PeerInfo> {
        let Some(swarm) = self.swarms.get_mut(&swarm_id) else {
            return Vec::new();
        };
        let Some(me) = swarm.members.get(peer_id) else {
            return Vec::new();
        };
        let candidates = swarm
            .members
            .iter()
            .filter(|(id, member)| {
                *id != peer_id && !exclude.contains(*id) && member.expires_at > now_unix
            })
            .map(|(id, member)| (id, &member.have));
        let chosen: Vec<PeerInfo> =
            tracker::choose(&mut self.rng, &me.have, candidates, &self.config.tracker)
                .into_iter()
                .filter_map(|id| {
                    swarm.members.get(id).map(|member| PeerInfo {
                        peer_id: id.clone(),
                        have: member.have.clone(),
                    })
                })
                .collect();
        if let Some(me) = swarm.members.get_mut(peer_id) {
            me.knows
                .extend(chosen.iter().map(|info| info.peer_id.clone()));
        }
        chosen
    }

    fn relay(
        &mut self,
        from: ConnId,
        swarm_id: Sha256Hash,
        to: PeerId,
        signal: Signal,
        now_unix: u64,
    ) -> Routed {
        if let Err(detail) = signal.check() {
            return answer(error(from, ErrorCode::Malformed, detail), true);
        }
        let Some(sender_id) = self.member_id(from, &swarm_id) else {
            return Self::not_joined(from);
        };
        let unknown = || {
            answer(
                error(
                    from,
                    ErrorCode::UnknownPeer,
                    format!("no peer {to} in that swarm"),
                ),
                false,
            )
        };
        if to == sender_id {
            return unknown();
        }
        let Some(swarm) = self.swarms.get_mut(&swarm_id) else {
            return unknown();
        };
        let Some(target) = swarm.members.get_mut(&to) else {
            return unknown();
        };
        if target.expires_at <= now_unix {
            let mut routed = unknown();
            self.remove_with_notice(
                swarm_id,
                &to,
                RemovalReason::GrantExpired,
                &mut routed.deliveries,
            );
            return routed;
        }
        target.knows.insert(sender_id.clone());
        let target_conn = target.conn;
        if let Some(sender) = swarm.members.get_mut(&sender_id) {
            sender.knows.insert(to);
        }
        answer(
            Envelope {
                to: target_conn,
                message: signal.into_message(swarm_id, sender_id),
            },
            false,
        )
    }

    /// Removes a member, telling it why and announcing its leave.
    fn remove_with_notice(
        &mut self,
        swarm_id: Sha256Hash,
        peer_id: &PeerId,
        reason: RemovalReason,
        out: &mut Vec<Envelope>,
    ) {
        if let Some(conn) = self.remove_member(swarm_id, peer_id, out) {
            out.push(Envelope {
                to: conn,
                message: ServerMessage::Removed { swarm_id, reason },
            });
        }
    }

    /// Removes a member and tells the members that know it; returns its socket.
    fn remove_member(
        &mut self,
        swarm_id: Sha256Hash,
        peer_id: &PeerId,
        out: &mut Vec<Envelope>,
    ) -> Option<ConnId> {
        let swarm = self.swarms.get_mut(&swarm_id)?;
        let member = swarm.members.remove(peer_id)?;
        for other in swarm.members.values_mut() {
            if other.knows.remove(peer_id) {
                out.push(Envelope {
                    to: other.conn,
                    message: ServerMessage::PeerLeft {
                        swarm_id,
                        peer_id: peer_id.clone(),
                    },
                });
            }
        }
        if swarm.members.is_empty() {
            self.swarms.remove(&swarm_id);
        }
        if let Some(socket) = self.sockets.get_mut(&member.conn) {
            socket.swarms.remove(&swarm_id);
        }
        Some(member.conn)
    }

    /// Checks the invariants in the module docs; tests call it after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (swarm_id, swarm) in &self.swarms {
            if swarm.members.is_empty() {
                return Err(format!("swarm {swarm_id} is empty"));
            }
            for (peer_id, member) in &swarm.members {
                let socket = self
                    .sockets
                    .get(&member.conn)
                    .ok_or_else(|| format!("{peer_id:?} is on unknown socket {:?}", member.conn))?;
                if socket.peer_id.as_ref() != Some(peer_id) || !socket.swarms.contains(swarm_id) {
                    return Err(format!(
                        "socket {:?} does not list {peer_id:?}",
                        member.conn
                    ));
                }
                if member.knows.contains(peer_id)
                    || member.knows.iter().any(|k| !swarm.members.contains_key(k))
                {
                    return Err(format!("{peer_id:?} knows a non-member"));
                }
            }
        }
        for (conn, socket) in &self.sockets {
            for swarm_id in &socket.swarms {
                let on_socket = socket.peer_id.as_ref().is_some_and(|peer_id| {
                    self.swarms
                        .get(swarm_id)
                        .and_then(|swarm| swarm.members.get(peer_id))
                        .is_some_and(|member| member.conn == *conn)
                });
                if !on_socket {
                    return Err(format!("socket {conn:?} lists {swarm_id} wrongly"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
