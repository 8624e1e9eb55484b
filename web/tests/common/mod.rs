//! Helpers shared by the browser tests: random bytes, reference sealing with
//! RustCrypto, and unique database names.

#![allow(dead_code)]

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use js_sys::Uint8Array;
use telly_proto::Sha256Hash;

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    getrandom::getrandom(&mut out).expect("browser randomness");
    out
}

pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).expect("browser randomness");
    key
}

/// The sealed-block format of crates/media/INTERFACE.md, built with RustCrypto
/// as the reference the WebCrypto path is held against.
pub fn reference_seal(key: &[u8; 32], nonce: [u8; 12], plain: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key).expect("32-byte key");
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), plain)
        .expect("AES-GCM encrypts any length here");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    sealed
}

pub fn reference_sha256(bytes: &[u8]) -> Sha256Hash {
    use sha2::Digest;
    Sha256Hash(sha2::Sha256::digest(bytes).into())
}

pub fn js(bytes: &[u8]) -> Uint8Array {
    Uint8Array::from(bytes)
}

/// A database name no other test (or earlier run) uses.
pub fn unique_db(prefix: &str) -> String {
    let mut salt = [0u8; 8];
    getrandom::getrandom(&mut salt).expect("browser randomness");
    format!("{prefix}-{}", hex::encode(salt))
}
