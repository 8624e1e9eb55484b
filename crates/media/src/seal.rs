//! Sealing and opening blocks: AES-256-GCM under the title's block key.
//!
//! A sealed block is `nonce (12 bytes) || ciphertext || tag (16 bytes)`, with no
//! associated data. The nonce travels with the block so a block can be opened with
//! nothing but the key; the caller picks a fresh random nonce for every block it
//! seals (a nonce must never repeat under one key). This half of the crate does no
//! IO and reads no clock, so it builds for wasm32 as well.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use telly_proto::hash::Sha256Hash;

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed block has beyond its plaintext; equals `telly_proto::manifest::SEAL_OVERHEAD`.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const _: () = assert!(OVERHEAD as u64 == telly_proto::manifest::SEAL_OVERHEAD);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("sealed block does not match its expected SHA-256")]
    HashMismatch,
    #[error("sealed block is shorter than a nonce and a tag")]
    TooShort,
    #[error("sealed block does not decrypt under this key (tampered, or the wrong key)")]
    Decrypt,
}

/// Seals `plain` under `block_key` with `nonce`; the result is `nonce || ciphertext || tag`.
pub fn seal_block(block_key: &[u8; 32], nonce: [u8; NONCE_LEN], plain: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(block_key.into());
    let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &[], &mut out[NONCE_LEN..])
        .expect("AES-GCM encrypts any block under 64 GiB");
    out.extend_from_slice(&tag);
    out
}

/// Opens a block sealed by [`seal_block`], returning its plaintext.
pub fn open_block(block_key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < OVERHEAD {
        return Err(OpenError::TooShort);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let cipher = Aes256Gcm::new(block_key.into());
    let mut plain = ciphertext.to_vec();
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            &[],
            &mut plain,
            Tag::from_slice(tag),
        )
        .map_err(|_| OpenError::Decrypt)?;
    Ok(plain)
}

/// Checks that `sealed` hashes to `expected` (the manifest's digest), then opens it.
pub fn verify_and_open(
    block_key: &[u8; 32],
    sealed: &[u8],
    expected: &Sha256Hash,
) -> Result<Vec<u8>, OpenError> {
    if Sha256Hash::of(sealed) != *expected {
        return Err(OpenError::HashMismatch);
    }
    open_block(block_key, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [0x42; 32];

    #[test]
    fn layout_is_nonce_ciphertext_tag() {
        let nonce = [9u8; NONCE_LEN];
        let sealed = seal_block(&KEY, nonce, b"hello");
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(&sealed[..NONCE_LEN], &nonce);
        assert_ne!(&sealed[NONCE_LEN..NONCE_LEN + 5], b"hello");
        // The same key and nonce give the same bytes (deterministic, so the caller
        // must vary the nonce); a different nonce changes everything after it.
        assert_eq!(seal_block(&KEY, nonce, b"hello"), sealed);
        let other = seal_block(&KEY, [8; NONCE_LEN], b"hello");
        assert_ne!(other[NONCE_LEN..], sealed[NONCE_LEN..]);
    }

    #[test]
    fn known_answer_matches_aes_256_gcm() {
        // NIST GCM test vector (gcmEncryptExtIV256.rsp, Count 0 of PTlen=128, AADlen=0).
        let key: [u8; 32] =
            hex::decode("31bdadd96698c204aa9ce1448ea94ae1fb4a9a0b3c9d773b51bb1822666b8f22")
                .unwrap()
                .try_into()
                .unwrap();
        let nonce: [u8; 12] = hex::decode("0d18e06c7c725ac9e362e1ce")
            .unwrap()
            .try_into()
            .unwrap();
        let plain = hex::decode("2db5168e932556f8089a0622981d017d").unwrap();
        let sealed = seal_block(&key, nonce, &plain);
        assert_eq!(
            hex::encode(&sealed[NONCE_LEN..]),
            "fa4362189661d163fcd6a56d8bf0405ad636ac1bbedd5cc3ee727dc2ab4a9489"
        );
        assert_eq!(open_block(&key, &sealed).unwrap(), plain);
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let sealed = seal_block(&KEY, [0; NONCE_LEN], b"");
        assert_eq!(sealed.len(), OVERHEAD);
        assert_eq!(open_block(&KEY, &sealed).unwrap(), b"");
    }

    #[test]
    fn wrong_key_and_wrong_hash_are_refused() {
        let sealed = seal_block(&KEY, [1; NONCE_LEN], b"some media");
        assert_eq!(open_block(&[0x43; 32], &sealed), Err(OpenError::Decrypt));
        let right = Sha256Hash::of(&sealed);
        assert_eq!(
            verify_and_open(&KEY, &sealed, &right).unwrap(),
            b"some media"
        );
        assert_eq!(
            verify_and_open(&KEY, &sealed, &Sha256Hash::of(b"other")),
            Err(OpenError::HashMismatch)
        );
    }

    proptest! {
        #[test]
        fn round_trip(plain in prop::collection::vec(any::<u8>(), 0..4096), key in any::<[u8; 32]>(), nonce in any::<[u8; 12]>()) {
            let sealed = seal_block(&key, nonce, &plain);
            prop_assert_eq!(sealed.len(), plain.len() + OVERHEAD);
            prop_assert_eq!(verify_and_open(&key, &sealed, &Sha256Hash::of(&sealed)).unwrap(), plain);
        }

        #[test]
        fn any_flipped_byte_fails(plain in prop::collection::vec(any::<u8>(), 0..512), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let sealed = seal_block(&KEY, [7; NONCE_LEN], &plain);
            let mut bad = sealed.clone();
            let i = at.index(bad.len());
            bad[i] ^= 1 << bit;
            prop_assert_eq!(open_block(&KEY, &bad), Err(OpenError::Decrypt));
            // Against the manifest's digest of the good bytes, the hash check fires first.
            prop_assert_eq!(verify_and_open(&KEY, &bad, &Sha256Hash::of(&sealed)), Err(OpenError::HashMismatch));
        }

        #[test]
        fn short_input_errors(short in prop::collection::vec(any::<u8>(), 0..OVERHEAD)) {
            prop_assert_eq!(open_block(&KEY, &short), Err(OpenError::TooShort));
        }

        #[test]
        fn truncated_or_extended_fails(plain in prop::collection::vec(any::<u8>(), 1..512), extra in prop::collection::vec(any::<u8>(), 1..8)) {
            let sealed = seal_block(&KEY, [3; NONCE_LEN], &plain);
            prop_assert_eq!(open_block(&KEY, &sealed[..sealed.len() - 1]), Err(OpenError::Decrypt));
            let mut longer = sealed.clone();
            longer.extend_from_slice(&extra);
            prop_assert_eq!(open_block(&KEY, &longer), Err(OpenError::Decrypt));
        }
    }
}
