//! The manifest: what a title is made of, signed by the provider.
//!
//! Invariants (checked by [`Manifest::validate`], which [`SignedManifest::verify`] runs):
//! - every track has at least one block, and its blocks are contiguous in time
//!   (`blocks[i+1].start_ms == blocks[i].start_ms + blocks[i].duration_ms`);
//! - every block's `size` is at least the sealing overhead and at most [`MAX_BLOCK_SIZE`];
//! - `sha256` is the digest of the block's sealed bytes, `piece_root` the Merkle
//!   root of the same bytes (see [`crate::merkle`]), so a block can be checked whole
//!   or piece by piece.
//!
//! The signature covers the exact JSON text of the manifest (`body`), so no
//! canonical form is needed: verify the bytes, then parse them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hash::Sha256Hash;
use crate::licence::KeyId;
use crate::signing::{ProviderPublicKey, SignatureError, SignatureHex};

pub const MANIFEST_VERSION: u32 = 1;
/// No sealed block may exceed this; a bigger one in a manifest is refused.
pub const MAX_BLOCK_SIZE: u64 = 16 * 1024 * 1024;
/// AES-GCM nonce (12) plus tag (16).
pub const SEAL_OVERHEAD: u64 = 28;
/// A manifest body larger than this is refused before parsing.
pub const MAX_MANIFEST_BYTES: usize = 8 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub title_id: String,
    pub title: String,
    pub duration_ms: u64,
    /// The CENC key id of the title's content key (one key per title).
    pub key_id: KeyId,
    pub tracks: Vec<Track>,
    /// Unix seconds.
    pub published_at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    Video,
    Audio,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    pub kind: TrackKind,
    /// RFC 6381 codec string, e.g. `avc1.64001F` or `mp4a.40.2`.
    pub codec: String,
    /// What `MediaSource.isTypeSupported` and `addSourceBuffer` take.
    pub mime: String,
    /// Peak bits per second of the media.
    pub bandwidth: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// The sealed init segment (`ftyp` + `moov`), addressed like a block.
    pub init: BlockEntry,
    pub blocks: Vec<BlockEntry>,
}

/// One sealed block: one fragment (`moof` + `mdat`) of one track.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEntry {
    pub start_ms: u64,
    pub duration_ms: u64,
    /// Bytes of the sealed block.
    pub size: u64,
    /// SHA-256 of the sealed bytes; also the block's address at the origin.
    pub sha256: Sha256Hash,
    /// Merkle root over the sealed bytes' pieces ([`crate::merkle`]).
    pub piece_root: Sha256Hash,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("manifest is {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("manifest does not parse: {0}")]
    Parse(String),
    #[error("manifest version {0} is not supported (this build reads {MANIFEST_VERSION})")]
    Version(u32),
    #[error("manifest is inconsistent: {0}")]
    Invalid(String),
}

impl Manifest {
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.version != MANIFEST_VERSION {
            return Err(ManifestError::Version(self.version));
        }
        if self.tracks.is_empty() {
            return Err(ManifestError::Invalid("no tracks".into()));
        }
        for (t, track) in self.tracks.iter().enumerate() {
            if track.blocks.is_empty() {
                return Err(ManifestError::Invalid(format!("track {t} has no blocks")));
            }
            let mut expected_start = track.blocks[0].start_ms;
            for (i, block) in std::iter::once(&track.init)
                .chain(&track.blocks)
                .enumerate()
            {
                if block.size < SEAL_OVERHEAD || block.size > MAX_BLOCK_SIZE {
                    return Err(ManifestError::Invalid(format!(
                        "track {t} block {i} has size {}",
                        block.size
                    )));
                }
            }
            for (i, block) in track.blocks.iter().enumerate() {
                if block.start_ms != expected_start {
                    return Err(ManifestError::Invalid(format!(
                        "track {t} block {i} starts at {} ms, expected {expected_start} ms",
                        block.start_ms
                    )));
                }
                expected_start = block.start_ms.saturating_add(block.duration_ms);
            }
        }
        Ok(())
    }

    /// The index of the block of `track` that holds time `at_ms` (the last one past the end).
    pub fn block_at(&self, track: usize, at_ms: u64) -> Option<usize> {
        let blocks = &self.tracks.get(track)?.blocks;
        let i = blocks.partition_point(|b| b.start_ms + b.duration_ms <= at_ms);
        Some(i.min(blocks.len().saturating_sub(1)))
    }

    /// Total sealed bytes of all tracks, init segments included.
    pub fn total_bytes(&self) -> u64 {
        self.tracks
            .iter()
            .map(|t| t.init.size + t.blocks.iter().map(|b| b.size).sum::<u64>())
            .sum()
    }
}

/// A manifest as the provider publishes it: the JSON text and its signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    pub body: String,
    pub signature: SignatureHex,
}

impl SignedManifest {
    pub fn sign(manifest: &Manifest, key: &ed25519_dalek::SigningKey) -> Self {
        let body = serde_json::to_string(manifest).expect("a manifest always serializes");
        let signature = SignatureHex::sign(key, body.as_bytes());
        Self { body, signature }
    }

    /// Checks the signature against the provider's key, then parses and validates.
    pub fn verify(&self, key: &ProviderPublicKey) -> Result<Manifest, ManifestError> {
        if self.body.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(self.body.len()));
        }
        key.verify(self.body.as_bytes(), &self.signature)?;
        let manifest: Manifest =
            serde_json::from_str(&self.body).map_err(|e| ManifestError::Parse(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The swarm id: SHA-256 of the signed body.
    pub fn swarm_id(&self) -> Sha256Hash {
        Sha256Hash(Sha256::digest(self.body.as_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn block(start_ms: u64, duration_ms: u64, size: u64) -> BlockEntry {
        BlockEntry {
            start_ms,
            duration_ms,
            size,
            sha256: Sha256Hash::of(&start_ms.to_le_bytes()),
            piece_root: Sha256Hash::of(&size.to_le_bytes()),
        }
    }

    fn manifest(durations: &[u64]) -> Manifest {
        let mut start = 0;
        let blocks = durations
            .iter()
            .map(|&d| {
                let b = block(start, d, 1000 + d);
                start += d;
                b
            })
            .collect();
        Manifest {
            version: MANIFEST_VERSION,
            title_id: "t".into(),
            title: "Title".into(),
            duration_ms: start,
            key_id: KeyId([7; 16]),
            tracks: vec![Track {
                kind: TrackKind::Video,
                codec: "avc1.64001F".into(),
                mime: "video/mp4; codecs=\"avc1.64001F\"".into(),
                bandwidth: 2_000_000,
                width: Some(1280),
                height: Some(720),
                init: block(0, 0, 900),
                blocks,
            }],
            published_at: 1_700_000_000,
        }
    }

    fn public(k: &SigningKey) -> ProviderPublicKey {
        ProviderPublicKey(k.verifying_key())
    }

    #[test]
    fn sign_verify_round_trip() {
        let m = manifest(&[2000, 2000, 1500]);
        let signed = SignedManifest::sign(&m, &key(1));
        assert_eq!(signed.verify(&public(&key(1))).unwrap(), m);
        let json = serde_json::to_string(&signed).unwrap();
        let back: SignedManifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.verify(&public(&key(1))).unwrap(), m);
        assert_eq!(back.swarm_id(), signed.swarm_id());
    }

    #[test]
    fn another_key_is_refused() {
        let signed = SignedManifest::sign(&manifest(&[2000]), &key(1));
        assert!(matches!(
            signed.verify(&public(&key(2))),
            Err(ManifestError::Signature(SignatureError::Invalid))
        ));
    }

    #[test]
    fn tampered_body_is_refused() {
        let mut signed = SignedManifest::sign(&manifest(&[2000]), &key(1));
        signed.body = signed.body.replace("Title", "Tytle");
        assert!(signed.verify(&public(&key(1))).is_err());
    }

    #[test]
    fn gaps_and_bad_sizes_are_invalid() {
        let mut m = manifest(&[2000, 2000]);
        m.tracks[0].blocks[1].start_ms += 1;
        assert!(matches!(m.validate(), Err(ManifestError::Invalid(_))));
        let mut m = manifest(&[2000]);
        m.tracks[0].blocks[0].size = MAX_BLOCK_SIZE + 1;
        assert!(m.validate().is_err());
        let mut m = manifest(&[2000]);
        m.version = 99;
        assert_eq!(m.validate(), Err(ManifestError::Version(99)));
    }

    #[test]
    fn block_at_finds_the_covering_block() {
        let m = manifest(&[2000, 2000, 1500]);
        assert_eq!(m.block_at(0, 0), Some(0));
        assert_eq!(m.block_at(0, 1999), Some(0));
        assert_eq!(m.block_at(0, 2000), Some(1));
        assert_eq!(m.block_at(0, 5499), Some(2));
        assert_eq!(m.block_at(0, 99_999), Some(2));
        assert_eq!(m.block_at(3, 0), None);
    }

    proptest! {
        #[test]
        fn any_signed_manifest_round_trips(durations in prop::collection::vec(1u64..10_000, 1..50), seed in any::<u8>()) {
            let m = manifest(&durations);
            let signed = SignedManifest::sign(&m, &key(seed));
            prop_assert_eq!(signed.verify(&public(&key(seed))).unwrap(), m);
        }

        #[test]
        fn garbage_never_panics(body in ".{0,200}", sig in "[0-9a-f]{0,130}") {
            let signed = SignedManifest { body, signature: SignatureHex(sig) };
            let _ = signed.verify(&public(&key(1)));
        }
    }
}
