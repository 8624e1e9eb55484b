//! The block pipeline (store → source → verify → store → open) with a source
//! that serves corrupt copies, as a broken origin or a hostile peer would.
//! Run: CHROMEDRIVER=/usr/bin/chromedriver cargo test -p telly-web --target wasm32-unknown-unknown

#![cfg(target_arch = "wasm32")]

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use common::{js, random_bytes, random_key, reference_seal, reference_sha256, unique_db};
use futures::future::LocalBoxFuture;
use js_sys::Uint8Array;
use telly_proto::{BlockEntry, Sha256Hash};
use telly_web::host::crypto::BlockKey;
use telly_web::host::player::fetch::{MAX_ATTEMPTS, Pipeline, Provenance};
use telly_web::host::source::{BlockSource, Freshness, SourceError};
use telly_web::host::store::BlockStore;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Serves the queued answers in order, then the last one forever; records
/// each call's freshness.
struct ScriptedSource {
    answers: RefCell<VecDeque<Vec<u8>>>,
    calls: RefCell<Vec<Freshness>>,
    /// Keeps what it fetched itself, as the swarm does.
    keeps: bool,
}

impl ScriptedSource {
    fn new(answers: Vec<Vec<u8>>) -> Rc<Self> {
        Self::made(answers, false)
    }

    fn keeping(answers: Vec<Vec<u8>>) -> Rc<Self> {
        Self::made(answers, true)
    }

    fn made(answers: Vec<Vec<u8>>, keeps: bool) -> Rc<Self> {
        Rc::new(Self {
            answers: RefCell::new(answers.into()),
            calls: RefCell::new(Vec::new()),
            keeps,
        })
    }

    fn calls(&self) -> u32 {
        self.calls.borrow().len() as u32
    }

    fn freshness(&self) -> Vec<Freshness> {
        self.calls.borrow().clone()
    }
}

impl BlockSource for ScriptedSource {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn keeps_blocks(&self) -> bool {
        self.keeps
    }

    fn fetch(
        &self,
        sha: Sha256Hash,
        _size: u64,
        freshness: Freshness,
    ) -> LocalBoxFuture<'static, Result<Uint8Array, SourceError>> {
        self.calls.borrow_mut().push(freshness);
        let mut answers = self.answers.borrow_mut();
        let answer = if answers.len() > 1 {
            answers.pop_front()
        } else {
            answers.front().cloned()
        };
        Box::pin(async move {
            answer.map(|a| js(&a)).ok_or(SourceError {
                source_name: "scripted",
                sha,
                reason: "nothing to serve".into(),
                refused_copies: 0,
            })
        })
    }
}

struct Fixture {
    raw_key: [u8; 32],
    plain: Vec<u8>,
    sealed: Vec<u8>,
    entry: BlockEntry,
}

fn fixture() -> Fixture {
    let raw_key = random_key();
    let plain = random_bytes(50_000);
    let sealed = reference_seal(&raw_key, [7; 12], &plain);
    let entry = BlockEntry {
        start_ms: 0,
        duration_ms: 2000,
        size: sealed.len() as u64,
        sha256: reference_sha256(&sealed),
        piece_root: reference_sha256(b"unused here"),
    };
    Fixture {
        raw_key,
        plain,
        sealed,
        entry,
    }
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x80;
    out
}

async fn pipeline(f: &Fixture, source: Rc<ScriptedSource>, db: &str) -> (Pipeline, BlockStore) {
    let store = BlockStore::open(db).await.unwrap();
    let pipeline = Pipeline {
        store: Some(store.clone()),
        source,
        key: BlockKey::import(&f.raw_key).await.unwrap(),
    };
    (pipeline, store)
}

#[wasm_bindgen_test]
async fn corrupt_copies_are_refused_never_stored_and_fetched_again() {
    let f = fixture();
    let source = ScriptedSource::new(vec![
        flipped(&f.sealed, 100),
        f.sealed[..f.sealed.len() - 1].to_vec(),
        f.sealed.clone(),
    ]);
    let db = unique_db("pipeline-retry");
    let (pipeline, store) = pipeline(&f, source.clone(), &db).await;
    let outcome = pipeline.get(&f.entry).await;
    assert_eq!(outcome.media.unwrap().to_vec(), f.plain);
    assert_eq!(outcome.rejected, 2);
    assert_eq!(outcome.provenance, Some(Provenance::Source));
    assert!(outcome.newly_stored);
    assert_eq!(
        source.freshness(),
        vec![
            Freshness::CachedOk,
            Freshness::BypassCaches,
            Freshness::BypassCaches
        ],
        "a refused copy must not be fetched again from a cache"
    );
    // Only the good copy was stored.
    assert_eq!(
        store.get(&f.entry.sha256).await.unwrap().unwrap().to_vec(),
        f.sealed
    );
    store.close();
    BlockStore::delete_database(&db).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_source_that_only_serves_corrupt_copies_gives_up_with_an_error() {
    let f = fixture();
    let source = ScriptedSource::new(vec![flipped(&f.sealed, 5000)]);
    let db = unique_db("pipeline-give-up");
    let (pipeline, store) = pipeline(&f, source.clone(), &db).await;
    let outcome = pipeline.get(&f.entry).await;
    let error = outcome.media.unwrap_err();
    assert!(error.contains(&f.entry.sha256.to_hex()), "{error}");
    assert_eq!(outcome.rejected, MAX_ATTEMPTS);
    assert_eq!(source.calls(), MAX_ATTEMPTS);
    assert!(!outcome.newly_stored);
    assert!(
        store.list().await.unwrap().is_empty(),
        "nothing corrupt is stored"
    );
    store.close();
    BlockStore::delete_database(&db).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_stored_block_is_used_without_asking_the_source() {
    let f = fixture();
    let source = ScriptedSource::new(vec![]);
    let db = unique_db("pipeline-stored");
    let (pipeline, store) = pipeline(&f, source.clone(), &db).await;
    store.put(&f.entry.sha256, &js(&f.sealed)).await.unwrap();
    let outcome = pipeline.get(&f.entry).await;
    assert_eq!(outcome.media.unwrap().to_vec(), f.plain);
    assert_eq!(outcome.provenance, Some(Provenance::Store));
    assert_eq!(source.calls(), 0);
    store.close();
    BlockStore::delete_database(&db).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_rotten_stored_copy_is_deleted_and_replaced() {
    let f = fixture();
    let source = ScriptedSource::new(vec![f.sealed.clone()]);
    let db = unique_db("pipeline-rotten");
    let (pipeline, store) = pipeline(&f, source.clone(), &db).await;
    store
        .put(&f.entry.sha256, &js(&flipped(&f.sealed, 20)))
        .await
        .unwrap();
    let outcome = pipeline.get(&f.entry).await;
    assert!(outcome.corrupt_in_store);
    assert_eq!(outcome.media.unwrap().to_vec(), f.plain);
    assert_eq!(source.calls(), 1);
    assert_eq!(
        store.get(&f.entry.sha256).await.unwrap().unwrap().to_vec(),
        f.sealed
    );

    // A stored value that is not bytes at all is treated the same way.
    store
        .put_raw_for_tests(&f.entry.sha256.to_hex(), &JsValue::from_f64(42.0))
        .await
        .unwrap();
    let outcome = pipeline.get(&f.entry).await;
    assert!(outcome.corrupt_in_store);
    assert!(outcome.media.is_ok());
    store.close();
    BlockStore::delete_database(&db).await.unwrap();
}

#[wasm_bindgen_test]
async fn without_a_store_blocks_still_play() {
    let f = fixture();
    let source = ScriptedSource::new(vec![f.sealed.clone()]);
    let pipeline = Pipeline {
        store: None,
        source: source.clone(),
        key: BlockKey::import(&f.raw_key).await.unwrap(),
    };
    let outcome = pipeline.get(&f.entry).await;
    assert_eq!(outcome.media.unwrap().to_vec(), f.plain);
    assert!(!outcome.newly_stored);
}

#[wasm_bindgen_test]
async fn a_block_known_not_stored_is_asked_of_a_keeping_source_without_reading_the_store() {
    let f = fixture();
    let db = unique_db("pipeline-hint");
    let store = BlockStore::open(&db).await.unwrap();
    store.put(&f.entry.sha256, &js(&f.sealed)).await.unwrap();
    let key = BlockKey::import(&f.raw_key).await.unwrap();
    let scripted = ScriptedSource::keeping(vec![f.sealed.clone()]);
    let keeping = Pipeline {
        store: Some(store.clone()),
        source: scripted.clone(),
        key: key.clone(),
    };
    let outcome = keeping.get_hinted(&f.entry, false).await;
    assert_eq!(outcome.media.unwrap().to_vec(), f.plain);
    assert_eq!(outcome.provenance, Some(Provenance::Source));
    assert_eq!(scripted.calls(), 1);
    // Maybe stored: the store is read first.
    let outcome = keeping.get_hinted(&f.entry, true).await;
    assert_eq!(outcome.provenance, Some(Provenance::Store));
    assert_eq!(scripted.calls(), 1);
    // A source that keeps nothing: the store is always read first.
    let plain = ScriptedSource::new(vec![f.sealed.clone()]);
    let origin = Pipeline {
        store: Some(store.clone()),
        source: plain.clone(),
        key,
    };
    let outcome = origin.get_hinted(&f.entry, false).await;
    assert_eq!(outcome.provenance, Some(Provenance::Store));
    assert_eq!(plain.calls(), 0);
    drop((keeping, origin));
    store.close();
    BlockStore::delete_database(&db).await.unwrap();
}
