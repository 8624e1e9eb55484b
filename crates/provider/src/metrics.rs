//! What the origin has sent, per title and per block, since the server started.
//!
//! Blocks are requested by hash alone, so counting per title needs the map from
//! block hash to title. It is held in memory and reloaded from the catalogue when
//! the catalogue's generation ([`crate::db::catalogue_generation`]) has moved, which
//! covers titles published or removed by another process while the server runs.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use telly_proto::api::{Metrics, TitleMetrics};
use telly_proto::{Sha256Hash, TitleId};

#[derive(Debug, Default)]
pub struct OriginMetrics {
    counters: Mutex<Metrics>,
}

impl OriginMetrics {
    pub fn record(&self, title: &str, block: &Sha256Hash, bytes: u64) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let entry: &mut TitleMetrics = counters.titles.entry(title.to_owned()).or_default();
        entry.origin_bytes += bytes;
        entry.origin_blocks += 1;
        *entry.block_fetches.entry(block.to_hex()).or_default() += 1;
    }

    pub fn snapshot(&self) -> Metrics {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Block hash → owning title, tagged with the catalogue generation it was read at.
#[derive(Debug, Default)]
pub struct BlockOwners {
    inner: RwLock<OwnersAt>,
}

#[derive(Debug, Default)]
struct OwnersAt {
    generation: Option<i64>,
    owners: HashMap<Sha256Hash, TitleId>,
}

impl BlockOwners {
    pub fn owner(&self, block: &Sha256Hash) -> Option<TitleId> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .owners
            .get(block)
            .cloned()
    }

    /// Whether the map was read at a generation other than `current`.
    pub fn is_stale(&self, current: i64) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation
            != Some(current)
    }

    pub fn replace(&self, generation: i64, owners: HashMap<Sha256Hash, TitleId>) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = OwnersAt {
            generation: Some(generation),
            owners,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_responses_and_blocks_per_title() {
        let m = OriginMetrics::default();
        let a = Sha256Hash::of(b"a");
        let b = Sha256Hash::of(b"b");
        m.record("t1", &a, 100);
        m.record("t1", &a, 100);
        m.record("t1", &b, 7);
        m.record("t2", &b, 7);
        let snap = m.snapshot();
        let t1 = &snap.titles["t1"];
        assert_eq!((t1.origin_bytes, t1.origin_blocks), (207, 3));
        assert_eq!(t1.block_fetches[&a.to_hex()], 2);
        assert_eq!(snap.titles["t2"].origin_blocks, 1);
    }

    #[test]
    fn owners_track_their_generation() {
        let owners = BlockOwners::default();
        assert!(owners.is_stale(0));
        let h = Sha256Hash::of(b"x");
        owners.replace(3, HashMap::from([(h, "t".to_string())]));
        assert!(!owners.is_stale(3));
        assert!(owners.is_stale(4));
        assert_eq!(owners.owner(&h).as_deref(), Some("t"));
        assert_eq!(owners.owner(&Sha256Hash::of(b"y")), None);
    }
}
