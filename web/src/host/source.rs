//! Where sealed blocks come from. Today only the provider's HTTP origin; the
//! swarm (issue 5) adds peers behind the same seam. Sources are untrusted: the
//! player verifies every block against the signed manifest whatever its source.

use futures::future::LocalBoxFuture;
use js_sys::Uint8Array;
use telly_proto::Sha256Hash;

use crate::host::api::Api;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name} could not deliver block {sha}: {reason}")]
pub struct SourceError {
    pub source_name: &'static str,
    pub sha: Sha256Hash,
    pub reason: String,
    /// Copies the source itself received and refused as corrupt (the swarm
    /// checks every chunk before the player sees it), so the player can count
    /// and show them as it does the copies it refuses itself.
    pub refused_copies: u32,
}

/// Whether a source may answer from a cache on the way (the browser's HTTP
/// cache, a CDN). After a copy was refused, the next fetch must not be served
/// the same bad bytes from a cache that keeps immutable blocks forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    CachedOk,
    BypassCaches,
}

pub trait BlockSource {
    /// A short name for statistics and messages ("origin", "swarm").
    fn name(&self) -> &'static str;

    /// True when the source keeps what it delivers in the tab's block store
    /// itself (the swarm does, as soon as a block is verified), so the player
    /// need not write it again.
    fn keeps_blocks(&self) -> bool {
        false
    }

    /// The sealed bytes of the block `sha`, whose manifest size is `size`.
    fn fetch(
        &self,
        sha: Sha256Hash,
        size: u64,
        freshness: Freshness,
    ) -> LocalBoxFuture<'static, Result<Uint8Array, SourceError>>;
}

/// The provider's origin: `GET /blocks/{sha256}`.
#[derive(Clone, Debug)]
pub struct OriginSource {
    api: Api,
}

impl OriginSource {
    pub fn new(api: Api) -> Self {
        Self { api }
    }
}

impl BlockSource for OriginSource {
    fn name(&self) -> &'static str {
        "origin"
    }

    fn fetch(
        &self,
        sha: Sha256Hash,
        size: u64,
        freshness: Freshness,
    ) -> LocalBoxFuture<'static, Result<Uint8Array, SourceError>> {
        let api = self.api.clone();
        Box::pin(async move {
            // A little slack over the manifest size so that a wrong-sized body
            // is still read and reported as a hash mismatch, not a network error.
            api.block(
                &sha,
                size.saturating_add(64 * 1024),
                freshness == Freshness::BypassCaches,
            )
            .await
            .map_err(|e| SourceError {
                source_name: "origin",
                sha,
                reason: e.to_string(),
                refused_copies: 0,
            })
        })
    }
}
