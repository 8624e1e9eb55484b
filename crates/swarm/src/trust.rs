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
    type Fetched = Vec<u8>;

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
        fetched: Vec<u8>,
        known: Option<&Self::Hashes>,
    ) -> Result<(Self::Hashes, Vec<Self::Chunk>), OriginError> {
        let chunks: Vec<Self::Chunk> = fetched.chunks(CHUNK_SIZE).map(Arc::from).collect();
        if first == 0 && fetched.len() as u64 == entry.size {
            // A whole block: one pass computes its leaves, and the signed
            // Merkle root over them commits to every byte (SHA-256), so neither
            // a hash of the whole block nor a check per chunk adds anything.
            let leaves: Self::Hashes = merkle::leaves(&fetched).into();
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
            && chunks
                .iter()
                .enumerate()
                .all(|(i, c)| wire::check_chunk(entry.size, &hashes, first + i, c));
        if !all_good || chunks.is_empty() {
            return Err(OriginError(format!(
                "fetched bytes from chunk {first} do not match the manifest"
            )));
        }
        Ok((hashes, chunks))
    }
}
