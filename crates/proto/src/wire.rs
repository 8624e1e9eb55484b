//! The peer wire protocol: what two viewers say to each other over a data channel.
//!
//! A frame is one byte of protocol version ([`WIRE_VERSION`]) followed by one
//! postcard-encoded [`Message`]. Frames never exceed [`MAX_FRAME_BYTES`], well under
//! the browsers' 256 KiB data channel limit; [`decode`] refuses bigger ones before
//! parsing, refuses trailing bytes, and checks every length against the limits
//! below, so a hostile peer gets a [`WireError`], never a panic or a huge allocation.
//!
//! # Units
//!
//! Blocks are named by a [`BlockId`]: their position in the manifest's flat order
//! (track 0's init segment, track 0's blocks, track 1's init segment, ...; see
//! [`block_order`]). Data moves in *chunks* of [`CHUNK_PIECES`] Merkle pieces
//! (64 KiB; the last chunk of a block may be shorter). Requests name a byte range of a
//! block as a range of chunks, so every range starts on a 64 KiB boundary.
//!
//! # How pieces are proven (the relaying decision)
//!
//! The signed manifest commits to each block's Merkle root over 16 KiB pieces
//! ([`crate::merkle`]). Rather than a proof with every piece (log₂(n) hashes, 1–2 %
//! overhead, and n·log₂(n) hashing to check a block), a sender first sends the
//! block's whole leaf layer once per connection, in [`Message::Hashes`], when the
//! request asked for it (`want_hashes`). The receiver checks the layer against the
//! signed root once ([`check_leaves`]), then each piece of every chunk with a single
//! hash against its leaf ([`check_chunk`]). A relay can so forward each verified
//! chunk at once, before the rest of its block has arrived: a premiere spreads in
//! chunk-times per hop, not block-times. Leaves cost 32 bytes per 16 KiB (0.2 %),
//! once per block per connection, and at most [`MAX_LEAVES`] of them fit one frame.

use serde::{Deserialize, Serialize};

use crate::grant::{MAX_GRANT_BYTES, SignedGrant};
use crate::hash::Sha256Hash;
use crate::manifest::{BlockEntry, MAX_BLOCK_SIZE, Manifest};
use crate::merkle::{self, PIECE_SIZE};

/// Bumped on any incompatible change to [`Message`]; the first byte of every frame.
pub const WIRE_VERSION: u8 = 3;
/// Merkle pieces per chunk, the unit of requests and data messages.
pub const CHUNK_PIECES: usize = 4;
/// Bytes of a full chunk (64 KiB).
pub const CHUNK_SIZE: usize = CHUNK_PIECES * PIECE_SIZE;
/// Most leaves of one block: a block of [`MAX_BLOCK_SIZE`] bytes.
pub const MAX_LEAVES: usize = (MAX_BLOCK_SIZE as usize).div_ceil(PIECE_SIZE);
/// Most chunks of one block.
pub const MAX_CHUNKS: usize = MAX_LEAVES.div_ceil(CHUNK_PIECES);
/// Most blocks a have-map can describe (its bitfield fills 32 KiB).
pub const MAX_BLOCKS: usize = 32 * 1024 * 8;
/// Most chunks one request may name.
pub const MAX_REQUEST_CHUNKS: u16 = 64;
/// Most times a [`Message::Coming`] is passed on after its first sender.
pub const MAX_COMING_HOPS: u8 = 3;
/// Bytes of the longest frame: a full chunk plus its header, with room to spare.
pub const MAX_FRAME_BYTES: usize = CHUNK_SIZE + 1024;

/// A block's position in the manifest's flat order (see [`block_order`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockId(pub u32);

/// Why a peer hangs up; sent in [`Message::Goodbye`] and reported by the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GoodbyeReason {
    /// The viewer closed the tab or stopped the node.
    Leaving,
    /// The other side sent data that failed verification.
    BadData,
    /// The other side broke the protocol (unexpected or malformed message).
    ProtocolViolation,
    /// The other side's grant is missing, forged, expired or for another peer.
    BadGrant,
    /// The other side is in another swarm.
    WrongSwarm,
    /// The other side speaks another protocol version.
    VersionMismatch,
    /// We have enough peers.
    TooManyPeers,
    /// The other side stopped answering.
    Timeout,
}

/// The first message each side sends, exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    pub version: u8,
    /// SHA-256 of the signed manifest body.
    pub swarm_id: Sha256Hash,
    /// The provider's permission for this peer to be in this swarm.
    pub grant: SignedGrant,
}

/// A bitfield over block ids, most significant bit first within each byte.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
}

impl Bitfield {
    pub fn new(len: usize) -> Self {
        Self {
            bits: vec![0; len.div_ceil(8)],
            len: len as u32,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// False for indices past the end.
    #[inline]
    pub fn get(&self, index: usize) -> bool {
        index < self.len() && self.bits[index / 8] & (0x80 >> (index % 8)) != 0
    }

    /// Ignores indices past the end (callers check ids against the manifest first).
    pub fn set(&mut self, index: usize, value: bool) {
        if index >= self.len() {
            return;
        }
        let mask = 0x80 >> (index % 8);
        if value {
            self.bits[index / 8] |= mask;
        } else {
            self.bits[index / 8] &= !mask;
        }
    }

    pub fn count_ones(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    pub fn iter_ones(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|&i| self.get(i))
    }

    fn is_well_formed(&self) -> bool {
        let len = self.len();
        if len > MAX_BLOCKS || self.bits.len() != len.div_ceil(8) {
            return false;
        }
        // Padding bits past `len` must be zero so that equal sets encode equally.
        let spare = self.bits.len() * 8 - len;
        spare == 0
            || self
                .bits
                .last()
                .is_none_or(|b| b & ((1u8 << spare) - 1) == 0)
    }
}

/// Every message of the peer protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Handshake(Handshake),
    /// Every block the sender holds or is receiving, sent once after the handshake.
    HaveMap(Bitfield),
    /// The sender now holds, or is receiving and will relay, this block.
    Have(BlockId),
    /// The leaf layer of a block's Merkle tree, sent before the first chunk of a
    /// block to a peer that asked for it.
    Hashes {
        block: BlockId,
        leaves: Vec<Sha256Hash>,
    },
    /// Please send `count` chunks of `block` from `first`. `deadline_ms` says how
    /// long the sender waits for them (ms from now) before it fetches them
    /// elsewhere: chunks that cannot arrive by then are refused, not sent.
    Request {
        block: BlockId,
        first: u16,
        count: u16,
        deadline_ms: u32,
        want_hashes: bool,
    },
    /// Never mind these chunks (they arrived from elsewhere or are no longer needed).
    Cancel {
        block: BlockId,
        first: u16,
        count: u16,
    },
    /// These requested chunks will not come from the sender.
    Reject {
        block: BlockId,
        first: u16,
        count: u16,
    },
    /// One chunk of a block: bytes `index * CHUNK_SIZE ..` of the sealed block.
    Chunk {
        block: BlockId,
        index: u16,
        #[serde(with = "chunk_bytes")]
        data: Vec<u8>,
    },
    /// The sender has no upload slot for the receiver: stop requesting.
    Choke,
    /// A slot is free: requests are welcome again.
    Unchoke,
    /// The sender closes the connection.
    Goodbye(GoodbyeReason),
    /// A block none of the sender's peers held is on its way into the
    /// sender's neighbourhood (someone near it is fetching it from the
    /// origin): the receiver need not fetch it early itself. The receiver
    /// passes it on with `hops - 1` while `hops` is above zero.
    Coming {
        block: BlockId,
        hops: u8,
    },
    /// The sender has begun sending this requested chunk; the chunk follows
    /// on the same ordered channel. A chunk takes its uploader's link a
    /// while to send and arrives whole, so without this its requester sees
    /// only silence, may give it up for another peer or the origin, and
    /// receives it anyway: a wasted copy of the uploader's scarce upload.
    Sending {
        block: BlockId,
        index: u16,
    },
}

/// Chunk data as one byte string rather than a sequence of `u8`s: postcard
/// writes both as a length and the raw bytes, so frames are identical, but a
/// byte string is copied at once instead of a byte at a time (about 8 ms per MB
/// of encode and decode in the browser, measured).
mod chunk_bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(data)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("chunk bytes")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(super::CHUNK_SIZE));
            while let Some(byte) = seq.next_element()? {
                if bytes.len() == super::CHUNK_SIZE {
                    return Err(A::Error::custom("chunk longer than CHUNK_SIZE"));
                }
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("protocol version {0} is not supported (this build speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("message is out of bounds: {0}")]
    OutOfBounds(&'static str),
}

impl Message {
    /// Checks the limits that the type alone cannot express.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Message::Handshake(h) => {
                if h.grant.body.len() > MAX_GRANT_BYTES || h.grant.signature.0.len() > 256 {
                    return Err(WireError::OutOfBounds("grant too large"));
                }
            }
            Message::HaveMap(bits) => {
                if !bits.is_well_formed() {
                    return Err(WireError::OutOfBounds("have-map length"));
                }
            }
            Message::Hashes { leaves, .. } => {
                if leaves.is_empty() || leaves.len() > MAX_LEAVES {
                    return Err(WireError::OutOfBounds("leaf count"));
                }
            }
            Message::Request { first, count, .. }
            | Message::Cancel { first, count, .. }
            | Message::Reject { first, count, .. } => {
                if *count == 0
                    || *count > MAX_REQUEST_CHUNKS
                    || usize::from(*first) + usize::from(*count) > MAX_CHUNKS
                {
                    return Err(WireError::OutOfBounds("chunk range"));
                }
            }
            Message::Chunk { index, data, .. } => {
                if data.is_empty() || data.len() > CHUNK_SIZE || usize::from(*index) >= MAX_CHUNKS {
                    return Err(WireError::OutOfBounds("chunk size or index"));
                }
            }
            Message::Coming { hops, .. } => {
                if *hops > MAX_COMING_HOPS {
                    return Err(WireError::OutOfBounds("coming hops"));
                }
            }
            Message::Sending { index, .. } => {
                if usize::from(*index) >= MAX_CHUNKS {
                    return Err(WireError::OutOfBounds("chunk index"));
                }
            }
            Message::Have(_) | Message::Choke | Message::Unchoke | Message::Goodbye(_) => {}
        }
        Ok(())
    }
}

/// Encodes one frame. Fails only for a message that breaks the limits.
pub fn encode(message: &Message) -> Result<Vec<u8>, WireError> {
    message.validate()?;
    let mut frame = vec![WIRE_VERSION];
    let body = postcard::to_allocvec(message).map_err(|e| WireError::Malformed(e.to_string()))?;
    frame.extend_from_slice(&body);
    if frame.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(frame.len()));
    }
    Ok(frame)
}

/// Decodes one frame; any input gives a message or an error, never a panic.
pub fn decode(frame: &[u8]) -> Result<Message, WireError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(frame.len()));
    }
    let (&version, body) = frame.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let (message, rest) = postcard::take_from_bytes::<Message>(body)
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    message.validate()?;
    Ok(message)
}

/// The manifest's blocks in wire order: each track's init segment, then its blocks.
pub fn block_order(manifest: &Manifest) -> impl Iterator<Item = (usize, &BlockEntry)> {
    manifest.tracks.iter().enumerate().flat_map(|(t, track)| {
        std::iter::once(&track.init)
            .chain(&track.blocks)
            .map(move |b| (t, b))
    })
}

/// Chunks of a block of `block_len` bytes.
pub fn chunk_count(block_len: u64) -> usize {
    (block_len as usize).div_ceil(CHUNK_SIZE).max(1)
}

/// Bytes of chunk `index` of a block of `block_len` bytes (0 past the end).
#[inline]
pub fn chunk_len(block_len: u64, index: usize) -> usize {
    let start = index.saturating_mul(CHUNK_SIZE);
    (block_len as usize).saturating_sub(start).min(CHUNK_SIZE)
}

/// True when `leaves` is the leaf layer that the manifest's signed root commits to.
pub fn check_leaves(entry: &BlockEntry, leaves: &[Sha256Hash]) -> bool {
    leaves.len() == merkle::piece_count(entry.size as usize)
        && merkle::root_of_leaves(leaves.to_vec()) == entry.piece_root
}

/// True when `data` is chunk `index` of a block whose (already checked) leaves are `leaves`.
pub fn check_chunk(block_len: u64, leaves: &[Sha256Hash], index: usize, data: &[u8]) -> bool {
    if data.len() != chunk_len(block_len, index) || data.is_empty() {
        return false;
    }
    let first_piece = index * CHUNK_PIECES;
    data.chunks(PIECE_SIZE).enumerate().all(|(i, piece)| {
        leaves
            .get(first_piece + i)
            .is_some_and(|leaf| *leaf == merkle::leaf_hash(piece))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SignatureHex;
    use proptest::prelude::*;

    fn grant() -> SignedGrant {
        SignedGrant {
            body: "{\"viewer\":\"ada\"}".into(),
            signature: SignatureHex("ab".repeat(64)),
        }
    }

    fn samples() -> Vec<Message> {
        let mut bits = Bitfield::new(13);
        bits.set(0, true);
        bits.set(12, true);
        vec![
            Message::Handshake(Handshake {
                version: WIRE_VERSION,
                swarm_id: Sha256Hash::of(b"m"),
                grant: grant(),
            }),
            Message::HaveMap(bits),
            Message::Have(BlockId(7)),
            Message::Hashes {
                block: BlockId(1),
                leaves: vec![Sha256Hash::of(b"a"); 40],
            },
            Message::Request {
                block: BlockId(3),
                first: 2,
                count: 5,
                deadline_ms: 1500,
                want_hashes: true,
            },
            Message::Cancel {
                block: BlockId(3),
                first: 2,
                count: 1,
            },
            Message::Reject {
                block: BlockId(3),
                first: 0,
                count: 8,
            },
            Message::Chunk {
                block: BlockId(9),
                index: 3,
                data: vec![0xA5; CHUNK_SIZE],
            },
            Message::Choke,
            Message::Unchoke,
            Message::Goodbye(GoodbyeReason::BadData),
            Message::Coming {
                block: BlockId(40),
                hops: MAX_COMING_HOPS,
            },
            Message::Sending {
                block: BlockId(41),
                index: 7,
            },
        ]
    }

    #[test]
    fn every_message_round_trips_within_the_limit() {
        for message in samples() {
            let frame = encode(&message).unwrap();
            assert!(frame.len() <= MAX_FRAME_BYTES, "{message:?}");
            assert_eq!(decode(&frame).unwrap(), message);
        }
        const { assert!(MAX_FRAME_BYTES < 256 * 1024) };
    }

    #[test]
    fn refuses_bad_frames_with_reasons() {
        assert_eq!(decode(&[]), Err(WireError::Empty));
        assert_eq!(decode(&[9, 0]), Err(WireError::Version(9)));
        assert_eq!(
            decode(&vec![WIRE_VERSION; MAX_FRAME_BYTES + 1]),
            Err(WireError::TooLarge(MAX_FRAME_BYTES + 1))
        );
        let mut frame = encode(&Message::Choke).unwrap();
        frame.push(0);
        assert_eq!(decode(&frame), Err(WireError::Trailing(1)));
        assert!(matches!(
            decode(&[WIRE_VERSION, 200]),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_out_of_bounds_fields() {
        let zero_count = Message::Request {
            block: BlockId(0),
            first: 0,
            count: 0,
            deadline_ms: 0,
            want_hashes: false,
        };
        assert!(matches!(
            encode(&zero_count),
            Err(WireError::OutOfBounds(_))
        ));
        let big_chunk = Message::Chunk {
            block: BlockId(0),
            index: 0,
            data: vec![0; CHUNK_SIZE + 1],
        };
        assert!(encode(&big_chunk).is_err());
        let far = Message::Coming {
            block: BlockId(0),
            hops: MAX_COMING_HOPS + 1,
        };
        assert!(matches!(encode(&far), Err(WireError::OutOfBounds(_))));
        let past_the_last_chunk = Message::Sending {
            block: BlockId(0),
            index: MAX_CHUNKS as u16,
        };
        assert!(matches!(
            encode(&past_the_last_chunk),
            Err(WireError::OutOfBounds(_))
        ));
        // A hand-made have-map whose declared length disagrees with its bytes.
        let mut frame = vec![WIRE_VERSION];
        frame.extend(postcard::to_allocvec(&Message::HaveMap(Bitfield::new(8))).unwrap());
        let last = frame.len() - 1;
        frame[last] = 100; // len = 100 bits but only one byte of bits
        assert!(matches!(decode(&frame), Err(WireError::OutOfBounds(_))));
    }

    #[test]
    fn leaves_and_chunks_verify_against_the_root() {
        let block: Vec<u8> = (0..CHUNK_SIZE * 2 + 5000)
            .map(|i| (i * 7 + i / 999) as u8)
            .collect();
        let entry = BlockEntry {
            start_ms: 0,
            duration_ms: 2000,
            size: block.len() as u64,
            sha256: Sha256Hash::of(&block),
            piece_root: merkle::root(&block),
        };
        let leaves = merkle::leaves(&block);
        assert!(check_leaves(&entry, &leaves));
        let mut forged = leaves.clone();
        forged[1] = Sha256Hash::of(b"x");
        assert!(!check_leaves(&entry, &forged));
        assert_eq!(chunk_count(entry.size), 3);
        for (i, chunk) in block.chunks(CHUNK_SIZE).enumerate() {
            assert_eq!(chunk.len(), chunk_len(entry.size, i));
            assert!(check_chunk(entry.size, &leaves, i, chunk));
        }
        let mut bad = block[..CHUNK_SIZE].to_vec();
        bad[CHUNK_SIZE - 1] ^= 1;
        assert!(!check_chunk(entry.size, &leaves, 0, &bad));
        assert!(!check_chunk(entry.size, &leaves, 1, &block[..CHUNK_SIZE]));
        assert!(!check_chunk(entry.size, &leaves, 9, &block[..10]));
    }

    #[test]
    fn bitfield_sets_and_ignores_out_of_range() {
        let mut bits = Bitfield::new(10);
        bits.set(9, true);
        bits.set(10, true);
        assert!(bits.get(9) && !bits.get(10) && !bits.get(0));
        assert_eq!(bits.count_ones(), 1);
        assert_eq!(bits.iter_ones().collect::<Vec<_>>(), vec![9]);
        bits.set(9, false);
        assert_eq!(bits.count_ones(), 0);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode(&bytes);
            let mut versioned = vec![WIRE_VERSION];
            versioned.extend(&bytes);
            if let Ok(message) = decode(&versioned) {
                // Whatever decodes re-encodes to a frame that decodes the same.
                let again = encode(&message).unwrap();
                prop_assert_eq!(decode(&again).unwrap(), message);
            }
        }

        #[test]
        fn mutated_frames_never_panic(pick in 0usize..12, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut frame = encode(&samples()[pick]).unwrap();
            for (at, xor) in flips {
                let i = at % frame.len();
                frame[i] ^= xor;
            }
            let _ = decode(&frame);
        }

        #[test]
        fn requests_round_trip(block in any::<u32>(), first in 0u16..(MAX_CHUNKS as u16 - MAX_REQUEST_CHUNKS), count in 1u16..=MAX_REQUEST_CHUNKS, deadline_ms in any::<u32>(), want_hashes in any::<bool>()) {
            let message = Message::Request { block: BlockId(block), first, count, deadline_ms, want_hashes };
            prop_assert_eq!(decode(&encode(&message).unwrap()).unwrap(), message);
        }

        #[test]
        fn chunks_round_trip(data in prop::collection::vec(any::<u8>(), 1..CHUNK_SIZE), index in 0u16..(MAX_CHUNKS as u16)) {
            let message = Message::Chunk { block: BlockId(1), index, data };
            prop_assert_eq!(decode(&encode(&message).unwrap()).unwrap(), message);
        }
    }
}
