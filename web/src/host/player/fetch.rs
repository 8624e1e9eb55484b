//! Getting one block ready for the decoder: from IndexedDB if held, else from a
//! source; verified against the signed manifest before it is stored or opened.
//!
//! Invariants:
//! - bytes whose SHA-256 or size differ from the manifest are never stored,
//!   never opened, never returned; the block is fetched again, at most
//!   [`MAX_ATTEMPTS`] times;
//! - a stored copy that fails verification is deleted before anything else.

use std::rc::Rc;

use gloo_timers::future::TimeoutFuture;
use js_sys::Uint8Array;
use telly_proto::BlockEntry;

use crate::host::crypto::{BlockKey, CryptoError, verify};
use crate::host::source::{BlockSource, Freshness};
use crate::host::store::{BlockStore, StoreError};

/// Copies fetched from sources per block before giving up for a while.
pub const MAX_ATTEMPTS: u32 = 3;

/// Everything needed to turn a manifest entry into media bytes.
pub struct Pipeline {
    pub store: Option<BlockStore>,
    pub source: Rc<dyn BlockSource>,
    pub key: BlockKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    Store,
    Source,
}

/// What getting one block did, for the player's statistics.
#[derive(Debug)]
pub struct Outcome {
    /// The opened (CENC-encrypted, fragmented MP4) bytes, or why not.
    pub media: Result<Uint8Array, String>,
    pub provenance: Option<Provenance>,
    /// Sealed bytes received from the source.
    pub source_bytes: u64,
    /// Source copies refused for a wrong hash or size.
    pub rejected: u32,
    pub corrupt_in_store: bool,
    /// The block was added to IndexedDB.
    pub newly_stored: bool,
    pub store_error: Option<StoreError>,
}

impl Outcome {
    fn new() -> Self {
        Self {
            media: Err(String::new()),
            provenance: None,
            source_bytes: 0,
            rejected: 0,
            corrupt_in_store: false,
            newly_stored: false,
            store_error: None,
        }
    }
}

impl Pipeline {
    pub async fn get(&self, entry: &BlockEntry) -> Outcome {
        self.get_hinted(entry, true).await
    }

    /// As [`Pipeline::get`], but when the player knows the block is not in
    /// the store and the source keeps blocks itself (the swarm, which holds
    /// what it fetched in memory and writes it to the store), the source is
    /// asked at once: a read of the store would queue behind the swarm's
    /// writes of everything it prefetched and find nothing.
    pub async fn get_hinted(&self, entry: &BlockEntry, maybe_stored: bool) -> Outcome {
        let mut outcome = Outcome::new();
        let look_in_store = maybe_stored || !self.source.keeps_blocks();
        if let Some(store) = self.store.as_ref().filter(|_| look_in_store) {
            match self.open_stored(store, entry, &mut outcome).await {
                Some(Ok(media)) => {
                    outcome.media = Ok(media);
                    outcome.provenance = Some(Provenance::Store);
                    return outcome;
                }
                Some(Err(fatal)) => {
                    outcome.media = Err(fatal);
                    return outcome;
                }
                None => {}
            }
        }
        outcome.media = self.fetch_from_source(entry, &mut outcome).await;
        if outcome.media.is_ok() {
            outcome.provenance = Some(Provenance::Source);
        }
        outcome
    }

    /// `None` when the store has no usable copy (a bad one is deleted).
    async fn open_stored(
        &self,
        store: &BlockStore,
        entry: &BlockEntry,
        outcome: &mut Outcome,
    ) -> Option<Result<Uint8Array, String>> {
        let sealed = match store.get(&entry.sha256).await {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return None,
            Err(StoreError::Corrupt { .. }) => {
                outcome.corrupt_in_store = true;
                let _ = store.delete(&entry.sha256).await;
                return None;
            }
            Err(e) => {
                outcome.store_error = Some(e);
                return None;
            }
        };
        match self.key.verify_and_open(&sealed, &entry.sha256).await {
            Ok(media) => Some(Ok(media)),
            // The hash matched the signed manifest, so these are the right bytes:
            // fetching again cannot help, the key is wrong.
            Err(CryptoError::Decrypt) => Some(Err(format!(
                "block {} does not open under this title's licence key",
                entry.sha256
            ))),
            Err(_) => {
                outcome.corrupt_in_store = true;
                let _ = store.delete(&entry.sha256).await;
                None
            }
        }
    }

    async fn fetch_from_source(
        &self,
        entry: &BlockEntry,
        outcome: &mut Outcome,
    ) -> Result<Uint8Array, String> {
        let mut last_problem = String::from("no attempt made");
        // Only the first try may be answered by a cache: a retry must not be
        // handed the same refused bytes again.
        let mut freshness = Freshness::CachedOk;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                TimeoutFuture::new(300 * attempt).await;
                freshness = Freshness::BypassCaches;
            }
            let sealed = match self.source.fetch(entry.sha256, entry.size, freshness).await {
                Ok(sealed) => sealed,
                Err(e) => {
                    outcome.rejected += e.refused_copies;
                    last_problem = e.to_string();
                    continue;
                }
            };
            outcome.source_bytes += u64::from(sealed.length());
            if u64::from(sealed.length()) != entry.size {
                outcome.rejected += 1;
                last_problem = format!(
                    "block {} arrived with {} bytes, the signed manifest says {}",
                    entry.sha256,
                    sealed.length(),
                    entry.size
                );
                continue;
            }
            match verify(&sealed, &entry.sha256).await {
                Ok(()) => {}
                Err(e @ CryptoError::HashMismatch { .. }) => {
                    outcome.rejected += 1;
                    last_problem = format!("refused a copy of block {}: {e}", entry.sha256);
                    continue;
                }
                Err(e) => {
                    last_problem = e.to_string();
                    continue;
                }
            }
            if self.source.keeps_blocks() {
                outcome.newly_stored = self.store.is_some();
            } else if let Some(store) = &self.store {
                match store.put(&entry.sha256, &sealed).await {
                    Ok(()) => outcome.newly_stored = true,
                    Err(e) => outcome.store_error = Some(e),
                }
            }
            return self.key.open(&sealed).await.map_err(|e| match e {
                CryptoError::Decrypt => format!(
                    "block {} does not open under this title's licence key",
                    entry.sha256
                ),
                other => other.to_string(),
            });
        }
        Err(format!(
            "block {} could not be fetched after {MAX_ATTEMPTS} attempts: {last_problem}",
            entry.sha256
        ))
    }
}
