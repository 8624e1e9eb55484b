//! The WebCrypto path against RustCrypto on random data, and tampering.
//! Run: CHROMEDRIVER=/usr/bin/chromedriver cargo test -p telly-web --target wasm32-unknown-unknown

#![cfg(target_arch = "wasm32")]

mod common;

use common::{js, random_bytes, random_key, reference_seal, reference_sha256};
use telly_web::host::crypto::{BlockKey, CryptoError, merkle_leaves, sha256};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn digest_agrees_with_sha2() {
    for len in [0usize, 1, 55, 64, 1000, 65_537, 512 * 1024] {
        let data = random_bytes(len);
        assert_eq!(
            sha256(&js(&data)).await.unwrap(),
            reference_sha256(&data),
            "length {len}"
        );
    }
}

#[wasm_bindgen_test]
async fn merkle_leaves_agree_with_sha2() {
    let piece = telly_proto::merkle::PIECE_SIZE;
    for len in [
        0,
        1,
        piece - 1,
        piece,
        piece + 1,
        5 * piece + 77,
        512 * 1024,
    ] {
        let data = random_bytes(len);
        assert_eq!(
            merkle_leaves(&js(&data)).await.unwrap(),
            telly_proto::merkle::leaves(&data),
            "length {len}"
        );
    }
}

#[wasm_bindgen_test]
async fn open_agrees_with_aes_gcm() {
    for len in [0usize, 1, 16, 1000, 512 * 1024] {
        let key = random_key();
        let nonce: [u8; 12] = random_bytes(12).try_into().unwrap();
        let plain = random_bytes(len);
        let sealed = reference_seal(&key, nonce, &plain);
        let block_key = BlockKey::import(&key).await.unwrap();
        let opened = block_key.open(&js(&sealed)).await.unwrap();
        assert_eq!(opened.to_vec(), plain, "length {len}");
        let opened = block_key
            .verify_and_open(&js(&sealed), &reference_sha256(&sealed))
            .await
            .unwrap();
        assert_eq!(opened.to_vec(), plain, "length {len}");
    }
}

#[wasm_bindgen_test]
async fn any_flipped_byte_fails_to_open() {
    let key = random_key();
    let plain = random_bytes(4096);
    let sealed = reference_seal(&key, [9; 12], &plain);
    let block_key = BlockKey::import(&key).await.unwrap();
    // A byte of the nonce, of the ciphertext, and of the tag.
    for at in [0, 11, 12, 2000, sealed.len() - 16, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[at] ^= 0x01;
        assert_eq!(
            block_key.open(&js(&bad)).await.err(),
            Some(CryptoError::Decrypt),
            "flipped byte {at}"
        );
    }
}

#[wasm_bindgen_test]
async fn wrong_key_fails_to_open() {
    let sealed = reference_seal(&random_key(), [1; 12], b"a fragment");
    let other = BlockKey::import(&random_key()).await.unwrap();
    assert_eq!(
        other.open(&js(&sealed)).await.err(),
        Some(CryptoError::Decrypt)
    );
}

#[wasm_bindgen_test]
async fn too_short_is_reported_not_decrypted() {
    let key = BlockKey::import(&random_key()).await.unwrap();
    for len in [0usize, 12, 27] {
        assert_eq!(
            key.open(&js(&vec![0u8; len])).await.err(),
            Some(CryptoError::TooShort(len as u32))
        );
    }
}

#[wasm_bindgen_test]
async fn hash_mismatch_stops_before_decryption() {
    let raw = random_key();
    let sealed = reference_seal(&raw, [3; 12], b"media");
    let key = BlockKey::import(&raw).await.unwrap();
    let wrong = reference_sha256(b"something else");
    match key.verify_and_open(&js(&sealed), &wrong).await {
        Err(CryptoError::HashMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, reference_sha256(&sealed));
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
}

/// The browser half of `cargo xtask bench` (block-open): WebCrypto verify +
/// open of 512 KiB sealed blocks, at least 32 MiB. Off unless the `bench`
/// feature is on:
/// CHROMEDRIVER=/usr/bin/chromedriver cargo test -p telly-web --release \
///   --target wasm32-unknown-unknown --features bench --test browser_crypto -- bench_block_open --nocapture
#[cfg(feature = "bench")]
#[wasm_bindgen_test]
async fn bench_block_open() {
    const BLOCK: usize = 512 * 1024;
    const BLOCKS: usize = 64;
    let raw = [0x42u8; 32];
    let key = BlockKey::import(&raw).await.unwrap();
    let mut sealed = Vec::with_capacity(BLOCKS);
    for i in 0..BLOCKS {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let plain: Vec<u8> = (0..BLOCK).map(|j| (i * 31 + j * 7) as u8).collect();
        let bytes = reference_seal(&raw, nonce, &plain);
        let sha = reference_sha256(&bytes);
        sealed.push((js(&bytes), sha));
    }
    // Warm up WebCrypto's key schedule and the JIT.
    for (bytes, sha) in sealed.iter().take(4) {
        key.verify_and_open(bytes, sha).await.unwrap();
    }
    let performance = web_sys::window().unwrap().performance().unwrap();
    // Whole passes until at least 3 s have gone by, as the native side does, so
    // that timer resolution and one-off pauses don't decide the figure.
    let start = performance.now();
    let mut total = 0u64;
    while performance.now() - start < 3_000.0 {
        for (bytes, sha) in &sealed {
            let plain = key.verify_and_open(bytes, sha).await.unwrap();
            assert_eq!(plain.length() as usize, BLOCK);
            total += u64::from(bytes.length());
        }
    }
    let seconds = (performance.now() - start) / 1000.0;
    let mb_s = total as f64 / 1e6 / seconds;
    console_log!("BENCH block-open browser_mb_s={mb_s:.1}");
    web_sys::console::log_1(&format!("BENCH block-open browser_mb_s={mb_s:.1}").into());
}
