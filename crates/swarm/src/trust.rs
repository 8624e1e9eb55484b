//! What the engine trusts, and how it checks it.
//!
//! The engine's logic (who is asked, who is banned, what is delivered) is the same
//! whatever the bytes are; the checks themselves sit behind [`Trust`]. Real hosts
//! (browser, native node) use [`Signed`]: Ed25519 grants, Merkle leaf layers checked
//! against the signed manifest's roots, SHA-256 of every 16 KiB piece and of whole
//! origin blocks. The simulator supplies its own model of content (sizes and an
//! honesty flag) so that ten thousand viewers need not hash terabytes.

use std::fmt::Debug;
use std::sync::Arc;

use telly_proto::manifest::BlockEntry;
use telly_proto::wire::{self, CHUNK_SIZE};
use telly_proto::{ProviderPublicKey, Sha256Hash, SignedGrant, merkle};

/// A peer's credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("grant refused: {0}")]
pub struct AdmitError(pub String);

/// Origin data that does not match the manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("origin data refused: {0}")]
pub struct OriginError(pub String);

/// The checks and data types of one kind of host.
pub trait Trust {
    /// What a peer presents in its handshake.
    type Grant: Clone + Debug;
    /// What proves the chunks of one block (for [`Signed`], the Merkle leaf layer).
    type Hashes: Clone + Debug;
    /// One chunk of a block's bytes.
    type Chunk: Clone + Debug;
    /// What the host hands over from an origin (HTTP) fetch or from its own store.
    type Fetched;

    /// Checks a peer's grant at unix time `now_unix`; returns the peer's name
    /// (the grant's peer id), under which a ban is remembered.
    fn admit(&self, grant: &Self::Grant, now_unix: u64) -> Result<String, AdmitError>;
    /// True when `hashes` are those the manifest commits to for this block.
    fn check_hashes(&self, entry: &BlockEntry, hashes: &Self::Hashes) -> bool;
    /// True when `chunk` is chunk `index` of the block whose checked hashes are `hashes`.
    fn check_chunk(
        &self,
        entry: &BlockEntry,
        hashes: &Self::Hashes,
        index: usize,
        chunk: &Self::Chunk,
    ) -> bool;
    /// Bytes of a chunk.
    fn chunk_len(chunk: &Self::Chunk) -> usize;
    /// Splits and checks fetched bytes that start at chunk `first`. A fetch from
    /// chunk 0 to the end is checked whole (SHA-256) and yields the hashes; a partial
    /// fetch needs the block's already checked hashes (`known`).
    fn open_fetched(
        &self,
        entry: &BlockEntry,
        first: usize,
        fetched: Self::Fetched,
        known: Option<&Self::Hashes>,
    ) -> Result<(Self::Hashes, Vec<Self::Chunk>), OriginError>;
}

/// Bytes a real host hands over from an origin fetch or its own store.
///
/// `leaves`, when present, are the Merkle leaves of exactly `bytes` (one per
/// 16 KiB piece, from the first piece fetched), computed by the host's own SHA-256:
/// the browser asks WebCrypto, which hashes at native speed off the page's thread,
/// where SHA-256 in WASM runs about twenty times slower on it. The engine then
/// checks only that they are the leaves the signed manifest commits to. A host
/// without a faster hash leaves them out and the engine hashes the bytes itself.
/// Leaves that the host did not compute from these very bytes would let unchecked
/// bytes through: that is the host's one duty here.
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub leaves: Option<Vec<Sha256Hash>>,
}

impl From<Vec<u8>> for Fetched {
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            leaves: None,
        }
    }
}

/// Real content: Ed25519 grants, SHA-256 and Merkle proofs over the sealed bytes.
#[derive(Clone, Debug)]
pub struct Signed {
    pub provider_key: ProviderPublicKey,
    pub swarm_id: Sha256Hash,
}

impl Trust for Signed {
    type Grant = SignedGrant;
    type Hashes = Arc<[Sha256Hash]>;
    type Chunk = Arc<[u8]>;
    type Fetched = Fetched;

    fn admit(&self, grant: &SignedGrant, now_unix: u64) -> Result<String, AdmitError> {
        grant
            .verify(&self.provider_key, &self.swarm_id, now_unix)
            .map(|g| g.peer_id)
            .map_err(|e| AdmitError(e.to_string()))
    }

    fn check_hashes(&self, entry: &BlockEntry, hashes: &Self::Hashes) -> bool {
        wire::check_leaves(entry, hashes)
    }

    fn check_chunk(
        &self,
        entry: &BlockEntry,
        hashes: &Self::Hashes,
        index: usize,
        chunk: &Self::Chunk,
    ) -> bool {
        wire::check_chunk(entry.size, hashes, index, chunk)
    }

    fn chunk_len(chunk: &Self::Chunk) -> usize {
        chunk.len()
    }

    fn open_fetched(
        &self,
        entry: &BlockEntry,
        first: usize,
        fetched: Fetched,
        known: Option<&Self::Hashes>,
    ) -> Result<(Self::Hashes, Vec<Self::Chunk>), OriginError> {
        let Fetched { bytes, leaves } = fetched;
        let chunks: Vec<Self::Chunk> = bytes.chunks(CHUNK_SIZE).map(Arc::from).collect();
        if first == 0 && bytes.len() as u64 == entry.size {
            // A whole block: its leaves, checked against the signed Merkle root,
            // commit to every byte, so neither a hash of the whole block nor a
            // check per chunk adds anything.
            let leaves: Self::Hashes = leaves.unwrap_or_else(|| merkle::leaves(&bytes)).into();
            if !wire::check_leaves(entry, &leaves) {
                return Err(OriginError(
                    "block does not match the manifest's signed Merkle root".into(),
                ));
            }
            return Ok((leaves, chunks));
        }
        let hashes = known
            .cloned()
            .ok_or_else(|| OriginError("a partial fetch needs the block's hashes".into()))?;
        let whole_chunks = chunks.len() + first <= wire::chunk_count(entry.size);
        let all_good = whole_chunks
            && match &leaves {
                // The host's leaves of these bytes, against the checked layer.
                Some(leaves) => {
                    let from = first * wire::CHUNK_PIECES;
                    leaves.len() == merkle::piece_count(bytes.len())
                        && hashes.get(from..from + leaves.len()) == Some(&leaves[..])
                }
                None => chunks
                    .iter()
                    .enumerate()
                    .all(|(i, c)| wire::check_chunk(entry.size, &hashes, first + i, c)),
            };
        if !all_good || chunks.is_empty() {
            return Err(OriginError(format!(
                "fetched bytes from chunk {first} do not match the manifest"
            )));
        }
        Ok((hashes, chunks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(len: usize) -> (BlockEntry, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 1000) as u8).collect();
        let entry = BlockEntry {
            start_ms: 0,
            duration_ms: 2_000,
            size: len as u64,
            sha256: Sha256Hash::of(&bytes),
            piece_root: merkle::root(&bytes),
        };
        (entry, bytes)
    }

    fn signed() -> Signed {
        Signed {
            provider_key: ProviderPublicKey(
                ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key(),
            ),
            swarm_id: Sha256Hash([0; 32]),
        }
    }

    /// What an honest host hands over: the leaves of exactly the bytes it has.
    fn hashed_by_host(bytes: Vec<u8>) -> Fetched {
        let leaves = Some(merkle::leaves(&bytes));
        Fetched { bytes, leaves }
    }

    #[test]
    fn a_whole_block_opens_alike_with_or_without_the_hosts_leaves() {
        let (entry, bytes) = block(5 * CHUNK_SIZE / 2 + 77);
        let (by_engine, chunks) = signed()
            .open_fetched(&entry, 0, bytes.clone().into(), None)
            .unwrap();
        let (by_host, host_chunks) = signed()
            .open_fetched(&entry, 0, hashed_by_host(bytes), None)
            .unwrap();
        assert_eq!(by_engine, by_host);
        assert_eq!(chunks, host_chunks);
        assert_eq!(chunks.len(), 3);
    }

    #[test]
    fn a_tampered_block_is_refused_even_with_the_leaves_of_what_arrived() {
        let (entry, mut bytes) = block(3 * CHUNK_SIZE);
        bytes[CHUNK_SIZE + 5] ^= 1;
        assert!(
            signed()
                .open_fetched(&entry, 0, hashed_by_host(bytes.clone()), None)
                .is_err()
        );
        assert!(
            signed()
                .open_fetched(&entry, 0, bytes.into(), None)
                .is_err()
        );
    }

    #[test]
    fn a_partial_fetch_is_checked_against_the_known_leaves_either_way() {
        let (entry, bytes) = block(3 * CHUNK_SIZE + 100);
        let known: Arc<[Sha256Hash]> = merkle::leaves(&bytes).into();
        let tail = bytes[CHUNK_SIZE..].to_vec();
        for fetched in [tail.clone().into(), hashed_by_host(tail.clone())] {
            let (_, chunks) = signed()
                .open_fetched(&entry, 1, fetched, Some(&known))
                .unwrap();
            assert_eq!(chunks.len(), 3);
        }
        let mut bad = tail;
        bad[2 * CHUNK_SIZE + 50] ^= 0x80;
        for fetched in [bad.clone().into(), hashed_by_host(bad.clone())] {
            assert!(
                signed()
                    .open_fetched(&entry, 1, fetched, Some(&known))
                    .is_err()
            );
        }
        // Leaves for another stretch of the block than the bytes start at.
        let misplaced = Fetched {
            bytes: bytes[CHUNK_SIZE..].to_vec(),
            leaves: Some(merkle::leaves(&bytes[..2 * CHUNK_SIZE + 100])),
        };
        assert!(
            signed()
                .open_fetched(&entry, 1, misplaced, Some(&known))
                .is_err()
        );
    }
}
