//! The IndexedDB block store in a real browser.
//! Run: CHROMEDRIVER=/usr/bin/chromedriver cargo test -p telly-web --target wasm32-unknown-unknown

#![cfg(target_arch = "wasm32")]

mod common;

use common::{js, random_bytes, reference_sha256, unique_db};
use telly_web::host::store::{BlockStore, StoreError};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn put_get_has_list_delete() {
    let name = unique_db("store-basic");
    let store = BlockStore::open(&name).await.unwrap();
    let a = random_bytes(100_000);
    let b = random_bytes(10);
    let (ha, hb) = (reference_sha256(&a), reference_sha256(&b));

    assert!(!store.has(&ha).await.unwrap());
    assert!(store.get(&ha).await.unwrap().is_none());
    assert!(store.list().await.unwrap().is_empty());

    store.put(&ha, &js(&a)).await.unwrap();
    store.put(&hb, &js(&b)).await.unwrap();
    assert!(store.has(&ha).await.unwrap());
    assert_eq!(store.get(&ha).await.unwrap().unwrap().to_vec(), a);
    assert_eq!(store.get(&hb).await.unwrap().unwrap().to_vec(), b);
    let mut listed = store.list().await.unwrap();
    listed.sort();
    let mut expected = vec![ha, hb];
    expected.sort();
    assert_eq!(listed, expected);

    // Putting again replaces, it does not duplicate.
    store.put(&ha, &js(&a)).await.unwrap();
    assert_eq!(store.list().await.unwrap().len(), 2);

    store.delete(&ha).await.unwrap();
    assert!(!store.has(&ha).await.unwrap());
    assert!(store.get(&ha).await.unwrap().is_none());
    assert_eq!(store.list().await.unwrap(), vec![hb]);
    // Deleting what is absent is fine.
    store.delete(&ha).await.unwrap();

    store.close();
    BlockStore::delete_database(&name).await.unwrap();
}

#[wasm_bindgen_test]
async fn blocks_survive_reopening() {
    let name = unique_db("store-reopen");
    let block = random_bytes(512 * 1024);
    let sha = reference_sha256(&block);
    {
        let store = BlockStore::open(&name).await.unwrap();
        store.put(&sha, &js(&block)).await.unwrap();
        store.close();
    }
    let store = BlockStore::open(&name).await.unwrap();
    assert_eq!(store.list().await.unwrap(), vec![sha]);
    assert_eq!(store.get(&sha).await.unwrap().unwrap().to_vec(), block);
    store.close();
    BlockStore::delete_database(&name).await.unwrap();
    // After deletion a fresh store is empty.
    let store = BlockStore::open(&name).await.unwrap();
    assert!(store.list().await.unwrap().is_empty());
    store.close();
    BlockStore::delete_database(&name).await.unwrap();
}

#[wasm_bindgen_test]
async fn corrupt_entries_are_reported_not_trusted() {
    let name = unique_db("store-corrupt");
    let store = BlockStore::open(&name).await.unwrap();
    let sha = reference_sha256(b"a block");
    store
        .put_raw_for_tests(&sha.to_hex(), &JsValue::from_str("not bytes"))
        .await
        .unwrap();
    match store.get(&sha).await {
        Err(StoreError::Corrupt { sha: s, reason }) => {
            assert_eq!(s, sha.to_hex());
            assert!(reason.contains("string"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A key that is no SHA-256 can never match a manifest: list skips it.
    store
        .put_raw_for_tests("not-a-hash", &js(b"x").into())
        .await
        .unwrap();
    assert_eq!(store.list().await.unwrap(), vec![sha]);
    // The corrupt entry can be removed like any other.
    store.delete(&sha).await.unwrap();
    assert!(store.get(&sha).await.unwrap().is_none());
    store.close();
    BlockStore::delete_database(&name).await.unwrap();
}

#[wasm_bindgen_test]
fn quota_exceeded_is_recognised() {
    let quota =
        web_sys::DomException::new_with_message_and_name("full", "QuotaExceededError").unwrap();
    assert_eq!(StoreError::from_dom_exception(&quota), StoreError::Quota);
    let other =
        web_sys::DomException::new_with_message_and_name("gone", "InvalidStateError").unwrap();
    assert!(matches!(
        StoreError::from_dom_exception(&other),
        StoreError::Failed(m) if m.contains("InvalidStateError")
    ));
    assert_eq!(
        StoreError::from_idb(idb::Error::DomException(quota)),
        StoreError::Quota
    );
}
