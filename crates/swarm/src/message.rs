//! The engine's view of wire messages, generic over the [`Trust`] in use, and the
//! conversions to and from [`telly_proto::wire::Message`] for real hosts.

use std::sync::Arc;

use telly_proto::Sha256Hash;
use telly_proto::wire::{Bitfield, BlockId, GoodbyeReason, Handshake, Message};

use crate::trust::{Signed, Trust};

/// A message between two engines. Real hosts convert with
/// [`PeerMessage::to_wire`] / [`PeerMessage::from_wire`]; the simulator moves them as is.
#[derive(Clone, Debug)]
pub enum PeerMessage<T: Trust> {
    Handshake {
        version: u8,
        swarm_id: Sha256Hash,
        grant: T::Grant,
    },
    HaveMap(Bitfield),
    Have(BlockId),
    Hashes {
        block: BlockId,
        hashes: T::Hashes,
    },
    Request {
        block: BlockId,
        first: u16,
        count: u16,
        deadline_ms: u32,
        want_hashes: bool,
    },
    Cancel {
        block: BlockId,
        first: u16,
        count: u16,
    },
    Reject {
        block: BlockId,
        first: u16,
        count: u16,
    },
    Chunk {
        block: BlockId,
        index: u16,
        data: T::Chunk,
    },
    Choke,
    Unchoke,
    Goodbye(GoodbyeReason),
    Coming {
        block: BlockId,
        hops: u8,
    },
    Sending {
        block: BlockId,
        index: u16,
    },
}

impl<T: Trust> PeerMessage<T> {
    /// Bytes this message occupies on the wire, near enough for rate accounting.
    pub fn wire_len(&self, hashes_len: impl Fn(&T::Hashes) -> usize) -> usize {
        match self {
            PeerMessage::Chunk { data, .. } => 12 + T::chunk_len(data),
            PeerMessage::Hashes { hashes, .. } => 8 + hashes_len(hashes),
            PeerMessage::HaveMap(bits) => 8 + bits.len().div_ceil(8),
            PeerMessage::Handshake { .. } => 400,
            _ => 16,
        }
    }
}

impl PeerMessage<Signed> {
    pub fn to_wire(&self) -> Message {
        match self.clone() {
            PeerMessage::Handshake {
                version,
                swarm_id,
                grant,
            } => Message::Handshake(Handshake {
                version,
                swarm_id,
                grant,
            }),
            PeerMessage::HaveMap(bits) => Message::HaveMap(bits),
            PeerMessage::Have(block) => Message::Have(block),
            PeerMessage::Hashes { block, hashes } => Message::Hashes {
                block,
                leaves: hashes.to_vec(),
            },
            PeerMessage::Request {
                block,
                first,
                count,
                deadline_ms,
                want_hashes,
            } => Message::Request {
                block,
                first,
                count,
                deadline_ms,
                want_hashes,
            },
            PeerMessage::Cancel {
                block,
                first,
                count,
            } => Message::Cancel {
                block,
                first,
                count,
            },
            PeerMessage::Reject {
                block,
                first,
                count,
            } => Message::Reject {
                block,
                first,
                count,
            },
            PeerMessage::Chunk { block, index, data } => Message::Chunk {
                block,
                index,
                data: data.to_vec(),
            },
            PeerMessage::Choke => Message::Choke,
            PeerMessage::Unchoke => Message::Unchoke,
            PeerMessage::Goodbye(reason) => Message::Goodbye(reason),
            PeerMessage::Coming { block, hops } => Message::Coming { block, hops },
            PeerMessage::Sending { block, index } => Message::Sending { block, index },
        }
    }

    pub fn from_wire(message: Message) -> Self {
        match message {
            Message::Handshake(h) => PeerMessage::Handshake {
                version: h.version,
                swarm_id: h.swarm_id,
                grant: h.grant,
            },
            Message::HaveMap(bits) => PeerMessage::HaveMap(bits),
            Message::Have(block) => PeerMessage::Have(block),
            Message::Hashes { block, leaves } => PeerMessage::Hashes {
                block,
                hashes: Arc::from(leaves),
            },
            Message::Request {
                block,
                first,
                count,
                deadline_ms,
                want_hashes,
            } => PeerMessage::Request {
                block,
                first,
                count,
                deadline_ms,
                want_hashes,
            },
            Message::Cancel {
                block,
                first,
                count,
            } => PeerMessage::Cancel {
                block,
                first,
                count,
            },
            Message::Reject {
                block,
                first,
                count,
            } => PeerMessage::Reject {
                block,
                first,
                count,
            },
            Message::Chunk { block, index, data } => PeerMessage::Chunk {
                block,
                index,
                data: Arc::from(data),
            },
            Message::Choke => PeerMessage::Choke,
            Message::Unchoke => PeerMessage::Unchoke,
            Message::Goodbye(reason) => PeerMessage::Goodbye(reason),
            Message::Coming { block, hops } => PeerMessage::Coming { block, hops },
            Message::Sending { block, index } => PeerMessage::Sending { block, index },
        }
    }
}
