//! Manifest signatures checked in WASM, as the player does before using one.
//! Run: CHROMEDRIVER=/usr/bin/chromedriver cargo test -p telly-web --target wasm32-unknown-unknown

#![cfg(target_arch = "wasm32")]

use ed25519_dalek::SigningKey;
use telly_proto::manifest::MANIFEST_VERSION;
use telly_proto::{
    BlockEntry, KeyId, Manifest, ManifestError, ProviderPublicKey, Sha256Hash, SignedManifest,
    Track, TrackKind,
};
use telly_web::host::player::PlayerError;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn manifest() -> Manifest {
    let block = |start_ms: u64| BlockEntry {
        start_ms,
        duration_ms: 2000,
        size: 4096,
        sha256: Sha256Hash::of(&start_ms.to_le_bytes()),
        piece_root: Sha256Hash::of(b"root"),
    };
    Manifest {
        version: MANIFEST_VERSION,
        title_id: "test-title".into(),
        title: "Test Title".into(),
        duration_ms: 6000,
        key_id: KeyId([5; 16]),
        tracks: vec![Track {
            kind: TrackKind::Video,
            codec: "avc1.64001F".into(),
            mime: "video/mp4; codecs=\"avc1.64001F\"".into(),
            bandwidth: 1_000_000,
            width: Some(1280),
            height: Some(720),
            init: block(0),
            blocks: vec![block(0), block(2000), block(4000)],
        }],
        published_at: 1_700_000_000,
    }
}

fn provider(seed: u8) -> (SigningKey, ProviderPublicKey) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let public = ProviderPublicKey(key.verifying_key());
    (key, public)
}

#[wasm_bindgen_test]
fn the_providers_signature_is_accepted() {
    let (key, public) = provider(1);
    let signed = SignedManifest::sign(&manifest(), &key);
    // Through JSON, as it arrives from the API.
    let wire: SignedManifest =
        serde_json::from_str(&serde_json::to_string(&signed).unwrap()).unwrap();
    assert_eq!(wire.verify(&public).unwrap(), manifest());
}

#[wasm_bindgen_test]
fn another_keys_signature_is_refused_with_a_clear_message() {
    let (_, public) = provider(1);
    let (other, _) = provider(2);
    let forged = SignedManifest::sign(&manifest(), &other);
    let error = forged.verify(&public).unwrap_err();
    assert!(matches!(error, ManifestError::Signature(_)));
    let shown = PlayerError::from_manifest(error).to_string();
    assert!(shown.contains("not signed by the provider"), "{shown}");
}

#[wasm_bindgen_test]
fn a_tampered_body_is_refused() {
    let (key, public) = provider(1);
    let mut signed = SignedManifest::sign(&manifest(), &key);
    signed.body = signed.body.replace("\"size\":4096", "\"size\":4097");
    assert!(matches!(
        PlayerError::from_manifest(signed.verify(&public).unwrap_err()),
        PlayerError::ManifestNotSigned
    ));
}
