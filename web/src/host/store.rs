//! The browser's store of sealed blocks: one IndexedDB object store, keyed by the
//! lowercase hex SHA-256 of the sealed bytes, holding those bytes as a `Uint8Array`.
//!
//! Invariants:
//! - only bytes whose SHA-256 was checked against a signed manifest are put here
//!   (the callers in `player` and later the swarm driver verify first);
//! - a value is always a `Uint8Array`; anything else found under a key is
//!   reported as [`StoreError::Corrupt`], never trusted and never a panic;
//! - blocks stay sealed at rest: the block key never touches IndexedDB.

use js_sys::Uint8Array;
use telly_proto::Sha256Hash;
use wasm_bindgen::{JsCast, JsValue};

use idb::{Database, DatabaseEvent, Factory, ObjectStoreParams, TransactionMode};

/// The database the app uses; tests open others.
pub const DEFAULT_DB_NAME: &str = "telly";
const DB_VERSION: u32 = 1;
const BLOCKS: &str = "blocks";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("this browser offers no IndexedDB here ({0})")]
    Unavailable(String),
    #[error("the browser's storage quota for this site is used up: no more blocks can be kept")]
    Quota,
    #[error("stored block {sha} is unusable: {reason}")]
    Corrupt { sha: String, reason: String },
    #[error("IndexedDB failed: {0}")]
    Failed(String),
}

impl StoreError {
    /// Maps an IndexedDB failure, singling out the quota (a `QuotaExceededError`
    /// DOMException on the request or the transaction).
    pub fn from_idb(error: idb::Error) -> Self {
        if let idb::Error::DomException(exception) = &error {
            return Self::from_dom_exception(exception);
        }
        let text = error.to_string();
        if text.contains("QuotaExceededError") {
            Self::Quota
        } else {
            Self::Failed(text)
        }
    }

    pub fn from_dom_exception(exception: &web_sys::DomException) -> Self {
        if exception.name() == "QuotaExceededError" {
            Self::Quota
        } else {
            Self::Failed(format!("{}: {}", exception.name(), exception.message()))
        }
    }
}

/// An open handle on the block store. Cheap to clone (one IndexedDB connection).
#[derive(Clone, Debug)]
pub struct BlockStore {
    db: std::rc::Rc<Database>,
    name: String,
}

impl BlockStore {
    /// Opens (and on first use creates) the store in database `name`.
    pub async fn open(name: &str) -> Result<Self, StoreError> {
        let factory = Factory::new().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut request = factory
            .open(name, Some(DB_VERSION))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        request.on_upgrade_needed(|event| {
            // Version 1 is the first schema: one out-of-line-keyed store.
            if let Ok(db) = event.database()
                && !db.store_names().iter().any(|s| s == BLOCKS)
            {
                let _ = db.create_object_store(BLOCKS, ObjectStoreParams::new());
            }
        });
        let db = request.await.map_err(StoreError::from_idb)?;
        Ok(Self {
            db: std::rc::Rc::new(db),
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Closes this connection. Other clones become unusable.
    pub fn close(&self) {
        self.db.close();
    }

    /// Removes database `name` and everything in it.
    pub async fn delete_database(name: &str) -> Result<(), StoreError> {
        let factory = Factory::new().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        factory
            .delete(name)
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)
    }

    fn key(sha: &Sha256Hash) -> JsValue {
        JsValue::from_str(&sha.to_hex())
    }

    /// Stores `sealed` under `sha`, replacing what was there. Resolves once the
    /// transaction has committed, so a quota failure surfaces here.
    pub async fn put(&self, sha: &Sha256Hash, sealed: &Uint8Array) -> Result<(), StoreError> {
        let tx = self
            .db
            .transaction(&[BLOCKS], TransactionMode::ReadWrite)
            .map_err(StoreError::from_idb)?;
        let store = tx.object_store(BLOCKS).map_err(StoreError::from_idb)?;
        store
            .put(sealed, Some(&Self::key(sha)))
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)?;
        match tx
            .commit()
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)?
        {
            idb::TransactionResult::Committed => Ok(()),
            idb::TransactionResult::Aborted => Err(StoreError::Failed(format!(
                "storing block {sha} was aborted"
            ))),
        }
    }

    /// The sealed bytes stored under `sha`, if any. The caller still verifies
    /// them: storage can rot or be edited by hand.
    pub async fn get(&self, sha: &Sha256Hash) -> Result<Option<Uint8Array>, StoreError> {
        let tx = self
            .db
            .transaction(&[BLOCKS], TransactionMode::ReadOnly)
            .map_err(StoreError::from_idb)?;
        let store = tx.object_store(BLOCKS).map_err(StoreError::from_idb)?;
        let value = store
            .get(Self::key(sha))
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)?;
        match value {
            None => Ok(None),
            Some(value) if value.is_undefined() => Ok(None),
            Some(value) => match value.dyn_into::<Uint8Array>() {
                Ok(bytes) => Ok(Some(bytes)),
                Err(other) => Err(StoreError::Corrupt {
                    sha: sha.to_hex(),
                    reason: format!(
                        "holds a {} instead of bytes",
                        other.js_typeof().as_string().unwrap_or_default()
                    ),
                }),
            },
        }
    }

    pub async fn has(&self, sha: &Sha256Hash) -> Result<bool, StoreError> {
        let tx = self
            .db
            .transaction(&[BLOCKS], TransactionMode::ReadOnly)
            .map_err(StoreError::from_idb)?;
        let store = tx.object_store(BLOCKS).map_err(StoreError::from_idb)?;
        let key = store
            .get_key(Self::key(sha))
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)?;
        Ok(key.is_some_and(|k| !k.is_undefined()))
    }

    /// Every block held. Keys that are not SHA-256 hex (written by something
    /// else) are skipped: they can never match a manifest.
    pub async fn list(&self) -> Result<Vec<Sha256Hash>, StoreError> {
        let tx = self
            .db
            .transaction(&[BLOCKS], TransactionMode::ReadOnly)
            .map_err(StoreError::from_idb)?;
        let store = tx.object_store(BLOCKS).map_err(StoreError::from_idb)?;
        let keys = store
            .get_all_keys(None, None)
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.as_string()?.parse().ok())
            .collect())
    }

    pub async fn delete(&self, sha: &Sha256Hash) -> Result<(), StoreError> {
        let tx = self
            .db
            .transaction(&[BLOCKS], TransactionMode::ReadWrite)
            .map_err(StoreError::from_idb)?;
        let store = tx.object_store(BLOCKS).map_err(StoreError::from_idb)?;
        store
            .delete(Self::key(sha))
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)?;
        tx.commit()
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)?;
        Ok(())
    }

    /// Writes an arbitrary value under a key. Only tests use it, to plant the
    /// corrupt entries that real storage can end up with.
    #[doc(hidden)]
    pub async fn put_raw_for_tests(&self, key: &str, value: &JsValue) -> Result<(), StoreError> {
        let tx = self
            .db
            .transaction(&[BLOCKS], TransactionMode::ReadWrite)
            .map_err(StoreError::from_idb)?;
        let store = tx.object_store(BLOCKS).map_err(StoreError::from_idb)?;
        store
            .put(value, Some(&JsValue::from_str(key)))
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)?;
        tx.commit()
            .map_err(StoreError::from_idb)?
            .await
            .map_err(StoreError::from_idb)?;
        Ok(())
    }
}
