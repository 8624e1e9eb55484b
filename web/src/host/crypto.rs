//! WebCrypto: the browser's hot path for block verification and opening.
//!
//! SHA-256 and AES-256-GCM run in the browser's native code through
//! `SubtleCrypto`; RustCrypto compiled to WASM is about 0.06 × native speed here,
//! WebCrypto about 0.7 × (DESIGN.md, toolchain facts). Bytes stay in JS memory
//! (`Uint8Array`) from the network to IndexedDB to MSE; only the 32-byte digest
//! crosses into WASM.
//!
//! Sealed block format (crates/media/INTERFACE.md): `nonce (12) || AES-256-GCM
//! ciphertext || tag (16)`, no associated data.

use js_sys::{Array, ArrayBuffer, Uint8Array};
use telly_proto::Sha256Hash;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AesGcmParams, CryptoKey, SubtleCrypto};

pub const NONCE_LEN: u32 = 12;
pub const TAG_LEN: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("WebCrypto is not available in this browser context: {0}")]
    Unavailable(String),
    #[error("the block's SHA-256 is {actual}, the signed manifest says {expected}")]
    HashMismatch {
        expected: Sha256Hash,
        actual: Sha256Hash,
    },
    #[error("a sealed block of {0} bytes is shorter than its nonce and tag")]
    TooShort(u32),
    #[error("the sealed block does not open under the title's key (tampered, or the wrong key)")]
    Decrypt,
    #[error("WebCrypto refused the block key: {0}")]
    BadKey(String),
    #[error("WebCrypto failed: {0}")]
    Failed(String),
}

/// Describes a JS exception for an error message.
pub(crate) fn js_error_text(value: &JsValue) -> String {
    if let Some(exception) = value.dyn_ref::<web_sys::DomException>() {
        return format!("{}: {}", exception.name(), exception.message());
    }
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return format!("{}: {}", error.name(), error.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}

fn subtle() -> Result<SubtleCrypto, CryptoError> {
    // `crypto` lives on the global object of windows and workers alike.
    let crypto = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("crypto"))
        .map_err(|e| CryptoError::Unavailable(js_error_text(&e)))?;
    let crypto: web_sys::Crypto = crypto
        .dyn_into()
        .map_err(|_| CryptoError::Unavailable("no `crypto` object".into()))?;
    Ok(crypto.subtle())
}

/// SHA-256 of `data`, computed by WebCrypto.
pub async fn sha256(data: &Uint8Array) -> Result<Sha256Hash, CryptoError> {
    let promise = subtle()?
        .digest_with_str_and_buffer_source("SHA-256", data)
        .map_err(|e| CryptoError::Failed(js_error_text(&e)))?;
    let digest = JsFuture::from(promise)
        .await
        .map_err(|e| CryptoError::Failed(js_error_text(&e)))?;
    to_hash(&digest)
}

/// A WebCrypto SHA-256 result (an `ArrayBuffer`) as a hash.
fn to_hash(digest: &JsValue) -> Result<Sha256Hash, CryptoError> {
    let digest = Uint8Array::new(digest);
    if digest.length() != 32 {
        return Err(CryptoError::Failed(format!(
            "SHA-256 digest of {} bytes",
            digest.length()
        )));
    }
    let mut out = [0u8; 32];
    digest.copy_to(&mut out);
    Ok(Sha256Hash(out))
}

/// The Merkle leaves of a sealed block (`telly_proto::merkle::leaves`: one
/// SHA-256 of `0x00 ‖ piece` per 16 KiB piece), hashed by WebCrypto. Every
/// piece's digest is asked for at once: the browser computes them on its own
/// threads, so the page's thread only copies the pieces. This is what lets the
/// swarm engine check a block read back from IndexedDB, or fetched whole from the
/// origin, without hashing it in WASM (`telly_swarm::Fetched`).
pub async fn merkle_leaves(block: &Uint8Array) -> Result<Vec<Sha256Hash>, CryptoError> {
    let subtle = subtle()?;
    let len = block.length();
    let piece = telly_proto::merkle::PIECE_SIZE as u32;
    let mut digests = Vec::with_capacity(len.div_ceil(piece).max(1) as usize);
    let mut start = 0;
    loop {
        let end = (start + piece).min(len);
        // A leaf is prefixed so that it can never pass for a node; a fresh
        // buffer starts zeroed, which is that prefix.
        let prefixed = Uint8Array::new_with_length(end - start + 1);
        prefixed.set(&block.subarray(start, end), 1);
        let promise = subtle
            .digest_with_str_and_buffer_source("SHA-256", &prefixed)
            .map_err(|e| CryptoError::Failed(js_error_text(&e)))?;
        digests.push(JsFuture::from(promise));
        start = end;
        if start >= len {
            break;
        }
    }
    futures::future::try_join_all(digests)
        .await
        .map_err(|e| CryptoError::Failed(js_error_text(&e)))?
        .iter()
        .map(to_hash)
        .collect()
}

/// Bytes for the swarm engine with their Merkle leaves hashed by WebCrypto, so
/// that the engine checks them against the signed roots without hashing them in
/// WASM. Should WebCrypto fail, the engine hashes them itself.
pub async fn with_leaves(bytes: &Uint8Array) -> telly_swarm::Fetched {
    let leaves = match merkle_leaves(bytes).await {
        Ok(leaves) => Some(leaves),
        Err(error) => {
            tracing::warn!(%error, "WebCrypto could not hash a block; the engine will");
            None
        }
    };
    telly_swarm::Fetched {
        bytes: bytes.to_vec(),
        leaves,
    }
}

/// Checks that `data` hashes to `expected`.
pub async fn verify(data: &Uint8Array, expected: &Sha256Hash) -> Result<(), CryptoError> {
    let actual = sha256(data).await?;
    if actual != *expected {
        return Err(CryptoError::HashMismatch {
            expected: *expected,
            actual,
        });
    }
    Ok(())
}

/// A title's block key, imported into WebCrypto (not extractable, decrypt only).
#[derive(Clone, Debug)]
pub struct BlockKey {
    key: CryptoKey,
}

impl BlockKey {
    pub async fn import(raw: &[u8; 32]) -> Result<Self, CryptoError> {
        let usages = Array::of1(&JsValue::from_str("decrypt"));
        let promise = subtle()?
            .import_key_with_str(
                "raw",
                &Uint8Array::from(&raw[..]),
                "AES-GCM",
                false,
                &usages,
            )
            .map_err(|e| CryptoError::BadKey(js_error_text(&e)))?;
        let key = JsFuture::from(promise)
            .await
            .map_err(|e| CryptoError::BadKey(js_error_text(&e)))?;
        let key = key
            .dyn_into::<CryptoKey>()
            .map_err(|_| CryptoError::BadKey("importKey did not return a CryptoKey".into()))?;
        Ok(Self { key })
    }

    /// Opens a sealed block. GCM's tag check makes any change to the bytes fail.
    pub async fn open(&self, sealed: &Uint8Array) -> Result<Uint8Array, CryptoError> {
        let len = sealed.length();
        if len < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::TooShort(len));
        }
        // The nonce is copied (`slice`), the ciphertext only viewed (`subarray`):
        // WebCrypto copies its inputs before the promise starts anyway.
        let nonce = sealed.slice(0, NONCE_LEN);
        let ciphertext = sealed.subarray(NONCE_LEN, len);
        let params = AesGcmParams::new_with_u8_array("AES-GCM", &nonce);
        let promise = subtle()?
            .decrypt_with_object_and_buffer_source(&params, &self.key, &ciphertext)
            .map_err(|e| CryptoError::Failed(js_error_text(&e)))?;
        let plain = JsFuture::from(promise).await.map_err(|e| {
            // WebCrypto reports a failed tag check as an `OperationError`.
            match e.dyn_ref::<web_sys::DomException>() {
                Some(ex) if ex.name() == "OperationError" => CryptoError::Decrypt,
                _ => CryptoError::Failed(js_error_text(&e)),
            }
        })?;
        let plain: ArrayBuffer = plain
            .dyn_into()
            .map_err(|_| CryptoError::Failed("decrypt did not return an ArrayBuffer".into()))?;
        Ok(Uint8Array::new(&plain))
    }

    /// Checks the sealed bytes against the signed manifest's hash, then opens them.
    /// Nothing that fails the hash is ever decrypted.
    pub async fn verify_and_open(
        &self,
        sealed: &Uint8Array,
        expected: &Sha256Hash,
    ) -> Result<Uint8Array, CryptoError> {
        verify(sealed, expected).await?;
        self.open(sealed).await
    }
}
