//! The simulator's model of content: sizes and an honesty flag instead of bytes.
//!
//! Ten thousand viewers of a 30-minute title move terabytes; the simulator models
//! a chunk by its length and whether it is genuine, a grant by whether the
//! provider signed it. The engine's decisions (verify, ban, deliver) run exactly
//! as with real bytes; the real checks are telly-swarm's `Signed`, tested there.

use telly_proto::manifest::BlockEntry;
use telly_proto::wire::{self, CHUNK_SIZE};
use telly_swarm::{AdmitError, OriginError, Trust};

#[derive(Clone, Copy, Debug, Default)]
pub struct Modelled;

/// A chunk as the simulator carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelledChunk {
    pub len: u32,
    /// False for data a cheating peer forged.
    pub genuine: bool,
}

/// A grant: the viewer it names and whether the provider signed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelledGrant {
    pub viewer: u32,
    pub valid: bool,
}

/// A block's leaf layer, by size (32 bytes per 16 KiB piece on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelledHashes {
    pub pieces: u32,
}

impl Trust for Modelled {
    type Grant = ModelledGrant;
    type Hashes = ModelledHashes;
    type Chunk = ModelledChunk;
    /// Bytes fetched.
    type Fetched = u64;

    fn admit(&self, grant: &ModelledGrant, _now_unix: u64) -> Result<String, AdmitError> {
        if grant.valid {
            Ok(grant.viewer.to_string())
        } else {
            Err(AdmitError("not signed by the provider".into()))
        }
    }

    fn check_hashes(&self, entry: &BlockEntry, hashes: &ModelledHashes) -> bool {
        hashes.pieces as usize == telly_proto::merkle::piece_count(entry.size as usize)
    }

    fn check_chunk(
        &self,
        entry: &BlockEntry,
        _hashes: &ModelledHashes,
        index: usize,
        chunk: &ModelledChunk,
    ) -> bool {
        chunk.genuine && chunk.len as usize == wire::chunk_len(entry.size, index)
    }

    fn chunk_len(chunk: &ModelledChunk) -> usize {
        chunk.len as usize
    }

    fn open_fetched(
        &self,
        entry: &BlockEntry,
        first: usize,
        fetched: u64,
        _known: Option<&ModelledHashes>,
    ) -> Result<(ModelledHashes, Vec<ModelledChunk>), OriginError> {
        let start = (first * CHUNK_SIZE) as u64;
        if start + fetched > entry.size || fetched == 0 {
            return Err(OriginError("fetched range is outside the block".into()));
        }
        let count = (fetched as usize).div_ceil(CHUNK_SIZE);
        let chunks = (first..first + count)
            .map(|i| ModelledChunk {
                len: wire::chunk_len(entry.size, i) as u32,
                genuine: true,
            })
            .collect();
        let hashes = ModelledHashes {
            pieces: telly_proto::merkle::piece_count(entry.size as usize) as u32,
        };
        Ok((hashes, chunks))
    }
}

/// Bytes a block's hashes take on the wire.
pub fn hashes_wire_len(h: &ModelledHashes) -> usize {
    h.pieces as usize * 32
}
