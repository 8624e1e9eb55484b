//! The swarm as the player's [`BlockSource`]: a block is asked of the tab's hub
//! and arrives when the engine has delivered it, from peers or the origin.

use futures::channel::{mpsc, oneshot};
use futures::future::{Either, LocalBoxFuture, select};
use gloo_timers::future::TimeoutFuture;
use js_sys::Uint8Array;
use telly_proto::Sha256Hash;

use super::hub::HubEvent;
use crate::host::source::{BlockSource, Freshness, SourceError};

/// A block not delivered within this long is reported as failed, so that the
/// player's retry and back-off apply; the engine keeps fetching it meanwhile.
const WANT_PATIENCE_MS: u32 = 30_000;

pub struct SwarmSource {
    pub(super) swarm: Sha256Hash,
    pub(super) hub: mpsc::UnboundedSender<HubEvent>,
}

impl SwarmSource {
    pub(super) fn error(sha: Sha256Hash, reason: impl Into<String>) -> SourceError {
        SourceError {
            source_name: "swarm",
            sha,
            reason: reason.into(),
            refused_copies: 0,
        }
    }
}

impl BlockSource for SwarmSource {
    fn name(&self) -> &'static str {
        "swarm"
    }

    fn keeps_blocks(&self) -> bool {
        true
    }

    fn fetch(
        &self,
        sha: Sha256Hash,
        _size: u64,
        // Peers' bytes are checked chunk by chunk and the engine's origin
        // retries bypass caches by themselves.
        _freshness: Freshness,
    ) -> LocalBoxFuture<'static, Result<Uint8Array, SourceError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.hub.unbounded_send(HubEvent::Want {
            swarm: self.swarm,
            sha,
            reply,
        });
        Box::pin(async move {
            if sent.is_err() {
                return Err(Self::error(sha, "the swarm has stopped"));
            }
            match select(answer, TimeoutFuture::new(WANT_PATIENCE_MS)).await {
                Either::Left((Ok(Ok(bytes)), _)) => Ok(bytes),
                Either::Left((Ok(Err(error)), _)) => Err(error),
                Either::Left((Err(_), _)) => Err(Self::error(sha, "the swarm dropped the request")),
                Either::Right(_) => Err(Self::error(
                    sha,
                    format!("not delivered within {} s", WANT_PATIENCE_MS / 1000),
                )),
            }
        })
    }
}

impl Drop for SwarmSource {
    fn drop(&mut self) {
        let _ = self
            .hub
            .unbounded_send(HubEvent::Unwatch { swarm: self.swarm });
    }
}
