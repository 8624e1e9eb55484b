//! Signalling: what a tab or node says to the signalling server and tracker, and
//! what it hears back, over one WebSocket of JSON text frames.
//!
//! A socket may join several swarms (a tab shares every title it holds), always as
//! the same [`PeerId`]: the one its grants name. Every message after [`ClientMessage::Join`]
//! names the swarm it concerns, and the server relays only between two members of
//! that swarm. The server's design, limits and peer choice are in
//! `signalling/README.md`; the limits a client must respect arrive in
//! [`ServerMessage::Welcome`] as soon as the socket opens.
//!
//! Every type here is plain data; [`HaveSummary::validate`] and [`PeerId::parse`]
//! hold the only rules, so the server and its clients agree on them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::grant::SignedGrant;
use crate::hash::Sha256Hash;

/// Bumped on any incompatible change to the messages below; sent in
/// [`ClientMessage::Join`] and [`ServerMessage::Welcome`].
pub const SIGNAL_VERSION: u32 = 1;
/// The longest text frame a server accepts by default. An SDP offer for one data
/// channel with a handful of candidates is 1–3 KiB; a grant at most 2 KiB.
pub const MAX_SIGNAL_MESSAGE_BYTES: usize = 16 * 1024;
/// The longest SDP relayed.
pub const MAX_SDP_BYTES: usize = 12 * 1024;
/// The longest ICE candidate line (or `sdpMid`) relayed.
pub const MAX_CANDIDATE_BYTES: usize = 1024;
/// Most time spans in a [`HaveSummary`].
pub const MAX_HAVE_SPANS: usize = 32;
/// Most peer ids in `ClientMessage::FindPeers`'s `exclude`.
pub const MAX_EXCLUDED_PEERS: usize = 64;
/// Shortest and longest peer id, in hex digits (8 to 32 random bytes).
pub const PEER_ID_HEX_LEN: std::ops::RangeInclusive<usize> = 16..=64;

/// A peer's name in a swarm: lowercase hex, chosen at random by the tab or node,
/// and named by its grant.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a peer id is 16 to 64 lowercase hex digits, not {0:?}")]
pub struct PeerIdError(pub String);

impl PeerId {
    pub fn parse(text: &str) -> Result<Self, PeerIdError> {
        let well_formed = PEER_ID_HEX_LEN.contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if well_formed {
            Ok(Self(text.to_owned()))
        } else {
            Err(PeerIdError(text.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PeerId {
    type Error = PeerIdError;

    fn try_from(text: String) -> Result<Self, PeerIdError> {
        Self::parse(&text)
    }
}

impl From<PeerId> for String {
    fn from(id: PeerId) -> String {
        id.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Peer({})", &self.0[..self.0.len().min(12)])
    }
}

/// A half-open span of title time, `[start_ms, end_ms)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Span {
    pub fn len_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }

    /// Milliseconds that both spans cover.
    pub fn overlap_ms(&self, other: &Span) -> u64 {
        let start = self.start_ms.max(other.start_ms);
        let end = self.end_ms.min(other.end_ms);
        end.saturating_sub(start)
    }
}

/// What a peer holds and where it plays, in title time: compact enough to report
/// every few seconds, precise enough for the tracker to pair peers usefully.
///
/// Time rather than block ids, because every track's blocks cover the same time
/// line and the tracker need not know the manifest. A span counts only when the
/// peer holds every track's blocks over it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaveSummary {
    /// Where the player is, in ms from the title's start; absent when the peer
    /// only shares (not playing this title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playhead_ms: Option<u64>,
    /// Spans held whole: sorted, disjoint, non-empty, at most [`MAX_HAVE_SPANS`]
    /// (a peer with more gaps reports the largest spans).
    #[serde(default)]
    pub spans: Vec<Span>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HaveSummaryError {
    #[error("more than {MAX_HAVE_SPANS} spans")]
    TooManySpans,
    #[error("span {index} is empty or reversed")]
    EmptySpan { index: usize },
    #[error("span {index} overlaps or precedes the one before it")]
    Unsorted { index: usize },
}

impl HaveSummary {
    /// Checks the invariants documented on the fields.
    pub fn validate(&self) -> Result<(), HaveSummaryError> {
        if self.spans.len() > MAX_HAVE_SPANS {
            return Err(HaveSummaryError::TooManySpans);
        }
        for (index, span) in self.spans.iter().enumerate() {
            if span.end_ms <= span.start_ms {
                return Err(HaveSummaryError::EmptySpan { index });
            }
            if index > 0 && span.start_ms < self.spans[index - 1].end_ms {
                return Err(HaveSummaryError::Unsorted { index });
            }
        }
        Ok(())
    }

    /// Milliseconds of `window` this peer holds.
    pub fn held_within(&self, window: &Span) -> u64 {
        self.spans.iter().map(|span| span.overlap_ms(window)).sum()
    }
}

/// One ICE candidate as the browser's `RTCIceCandidateInit` carries it; an empty
/// `candidate` marks the end of candidates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
}

/// What a client sends. JSON objects tagged by `"type"`, e.g.
/// `{"type":"offer","swarm_id":"…","to":"…","sdp":"…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Join a swarm, or renew membership with a fresher grant. The server answers
    /// [`ServerMessage::Joined`] or [`ServerMessage::Refused`].
    Join {
        version: u32,
        swarm_id: Sha256Hash,
        /// Who this socket is; every grant it presents must name this id.
        peer_id: PeerId,
        /// Optional in the type so that a join without one gets a clear refusal.
        #[serde(default)]
        grant: Option<SignedGrant>,
        #[serde(default)]
        have: HaveSummary,
    },
    Leave {
        swarm_id: Sha256Hash,
    },
    /// A fresh have-summary; send one every few seconds while playing.
    Have {
        swarm_id: Sha256Hash,
        have: HaveSummary,
    },
    /// Ask for more peers, other than those listed (ones already connected or
    /// tried). Answered with [`ServerMessage::Peers`].
    FindPeers {
        swarm_id: Sha256Hash,
        #[serde(default)]
        exclude: Vec<PeerId>,
    },
    Offer {
        swarm_id: Sha256Hash,
        to: PeerId,
        sdp: String,
        /// The dialler has no source for anything it lacks ahead (every peer
        /// it has is behind it): a peer with every place taken may let an
        /// idle one go to take it.
        #[serde(default)]
        stranded: bool,
    },
    Answer {
        swarm_id: Sha256Hash,
        to: PeerId,
        sdp: String,
    },
    Candidate {
        swarm_id: Sha256Hash,
        to: PeerId,
        candidate: IceCandidate,
    },
    /// An application-level heartbeat for clients that cannot see WebSocket pings
    /// (browsers); answered with [`ServerMessage::Pong`].
    Ping {
        nonce: u64,
    },
}

/// A peer the tracker suggests, with what it last reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: PeerId,
    pub have: HaveSummary,
}

/// Why a join was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// The join carried no grant.
    NoGrant,
    /// The grant is not signed by this provider's key.
    BadSignature,
    /// The grant is too large or its body is not a grant.
    BadGrant,
    Expired,
    /// The grant is for another swarm (another title, or an older manifest).
    WrongSwarm,
    /// The grant names another peer id than the one in the join.
    WrongPeer,
    /// The socket already joined as another peer id.
    PeerIdChanged,
    VersionMismatch,
    /// The socket is in as many swarms as the server allows.
    TooManySwarms,
    /// The have-summary breaks its rules.
    BadSummary,
}

/// Why the server took a socket out of a swarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    /// The grant expired; join again with a fresh one.
    GrantExpired,
    /// Another socket joined the swarm as the same peer (a reconnecting tab).
    Replaced,
}

/// Errors about one message; the socket stays open, but malformed, oversized and
/// over-rate messages are counted and too many of them close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not one of [`ClientMessage`], a binary frame, or a field breaks a rule.
    Malformed,
    /// Longer than the limit in [`Limits::max_message_bytes`].
    TooLarge,
    /// Faster than [`Limits::messages_per_second`] allows.
    RateLimited,
    /// The socket is not in the swarm the message names.
    NotJoined,
    /// No such peer in that swarm (it may have just left).
    UnknownPeer,
    /// The peer is there but not reading; the message was dropped.
    PeerUnreachable,
}

/// The limits a client must respect, sent in [`ServerMessage::Welcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_message_bytes: u32,
    /// Sustained messages per second; bursts up to `burst` are allowed.
    pub messages_per_second: u32,
    pub burst: u32,
    /// The server pings this often and drops a socket silent for `idle_timeout_ms`.
    pub heartbeat_ms: u32,
    pub idle_timeout_ms: u32,
    pub max_swarms: u32,
    pub peers_per_answer: u32,
}

/// What the server sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message on every socket.
    Welcome {
        version: u32,
        limits: Limits,
    },
    Joined {
        swarm_id: Sha256Hash,
        /// The tracker's choice of peers to dial, best first.
        peers: Vec<PeerInfo>,
    },
    Refused {
        swarm_id: Sha256Hash,
        reason: RefusalReason,
        detail: String,
    },
    Peers {
        swarm_id: Sha256Hash,
        peers: Vec<PeerInfo>,
    },
    /// A peer this socket was told about, or exchanged signals with, left the swarm.
    PeerLeft {
        swarm_id: Sha256Hash,
        peer_id: PeerId,
    },
    /// The server took this socket out of a swarm.
    Removed {
        swarm_id: Sha256Hash,
        reason: RemovalReason,
    },
    Offer {
        swarm_id: Sha256Hash,
        from: PeerId,
        sdp: String,
        /// As the dialler said (see [`ClientMessage::Offer`]).
        #[serde(default)]
        stranded: bool,
    },
    Answer {
        swarm_id: Sha256Hash,
        from: PeerId,
        sdp: String,
    },
    Candidate {
        swarm_id: Sha256Hash,
        from: PeerId,
        candidate: IceCandidate,
    },
    Pong {
        nonce: u64,
    },
    Error {
        code: ErrorCode,
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId::parse(&format!("{n:02x}").repeat(8)).unwrap()
    }

    #[test]
    fn peer_ids_are_lowercase_hex_of_bounded_length() {
        assert!(PeerId::parse(&"a".repeat(16)).is_ok());
        assert!(PeerId::parse(&"0".repeat(64)).is_ok());
        for bad in [
            "",
            &"a".repeat(15),
            &"a".repeat(65),
            &"A".repeat(16),
            &"g".repeat(16),
            &"é".repeat(8),
        ] {
            assert!(PeerId::parse(bad).is_err(), "{bad:?}");
        }
        let json = format!("{{\"type\":\"leave\",\"swarm_id\":\"{}\"}}", "0".repeat(64));
        assert!(serde_json::from_str::<ClientMessage>(&json).is_ok());
        let bad = r#"{"type":"find_peers","swarm_id":"00","exclude":["XYZ"]}"#;
        assert!(serde_json::from_str::<ClientMessage>(bad).is_err());
    }

    #[test]
    fn messages_round_trip_with_a_type_tag() {
        let swarm_id = Sha256Hash::of(b"manifest");
        let client = [
            ClientMessage::Join {
                version: SIGNAL_VERSION,
                swarm_id,
                peer_id: peer(1),
                grant: None,
                have: HaveSummary {
                    playhead_ms: Some(4000),
                    spans: vec![Span {
                        start_ms: 0,
                        end_ms: 8000,
                    }],
                },
            },
            ClientMessage::Candidate {
                swarm_id,
                to: peer(2),
                candidate: IceCandidate {
                    candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0),
                },
            },
            ClientMessage::Ping { nonce: 7 },
        ];
        for message in client {
            let json = serde_json::to_string(&message).unwrap();
            assert!(json.starts_with("{\"type\":"), "{json}");
            assert_eq!(
                serde_json::from_str::<ClientMessage>(&json).unwrap(),
                message
            );
        }
        let server = ServerMessage::Refused {
            swarm_id,
            reason: RefusalReason::NoGrant,
            detail: "no grant".into(),
        };
        let json = serde_json::to_string(&server).unwrap();
        assert!(json.contains("\"reason\":\"no_grant\""), "{json}");
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&json).unwrap(),
            server
        );
    }

    #[test]
    fn unknown_types_and_fields_do_not_parse() {
        for bad in [
            r#"{"type":"shout"}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"ping","nonce":1,"extra":true}"#,
            r#"{"nonce":1}"#,
            r#"[1,2]"#,
        ] {
            assert!(serde_json::from_str::<ClientMessage>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn have_summaries_must_be_sorted_disjoint_and_bounded() {
        let span = |start_ms, end_ms| Span { start_ms, end_ms };
        let ok = HaveSummary {
            playhead_ms: None,
            spans: vec![span(0, 10), span(10, 20), span(30, 40)],
        };
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.held_within(&span(5, 35)), 5 + 10 + 5);
        let reversed = HaveSummary {
            playhead_ms: None,
            spans: vec![span(10, 5)],
        };
        assert_eq!(
            reversed.validate(),
            Err(HaveSummaryError::EmptySpan { index: 0 })
        );
        let overlapping = HaveSummary {
            playhead_ms: None,
            spans: vec![span(0, 10), span(9, 20)],
        };
        assert_eq!(
            overlapping.validate(),
            Err(HaveSummaryError::Unsorted { index: 1 })
        );
        let many = HaveSummary {
            playhead_ms: None,
            spans: (0..=MAX_HAVE_SPANS as u64)
                .map(|i| span(i * 10, i * 10 + 5))
                .collect(),
        };
        assert_eq!(many.validate(), Err(HaveSummaryError::TooManySpans));
    }
}
