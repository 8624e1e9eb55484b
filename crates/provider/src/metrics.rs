//! What the origin has sent, per title and per block, since the server started,
//! and what the tabs report having moved through the swarm.
//!
//! Blocks are requested by hash alone, so counting per title needs the map from
//! block hash to title. It is held in memory and reloaded from the catalogue when
//! the catalogue's generation ([`crate::db::catalogue_generation`]) has moved, which
//! covers titles published or removed by another process while the server runs.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use telly_proto::api::{Metrics, SwarmReport, TitleMetrics};
use telly_proto::{Sha256Hash, TitleId};

#[derive(Debug, Default)]
pub struct OriginMetrics {
    counters: Mutex<Metrics>,
}

// Every counter saturates: a long-running server (or a stream of hostile reports)
// must not panic in debug builds or wrap to small numbers in release builds.
impl OriginMetrics {
    pub fn record(&self, title: &str, block: &Sha256Hash, bytes: u64) {
        self.update(title, |entry| {
            entry.origin_bytes = entry.origin_bytes.saturating_add(bytes);
            entry.origin_blocks = entry.origin_blocks.saturating_add(1);
            let fetches = entry.block_fetches.entry(block.to_hex()).or_default();
            *fetches = fetches.saturating_add(1);
        });
    }

    /// Adds one tab's report (already checked by the caller) to the title's sums.
    pub fn record_report(&self, title: &str, report: &SwarmReport) {
        self.update(title, |entry| {
            entry.peer_bytes_reported = entry
                .peer_bytes_reported
                .saturating_add(report.bytes_from_peers);
            entry.origin_bytes_reported = entry
                .origin_bytes_reported
                .saturating_add(report.bytes_from_origin);
            entry.uploaded_bytes_reported = entry
                .uploaded_bytes_reported
                .saturating_add(report.bytes_uploaded);
            entry.reports = entry.reports.saturating_add(1);
        });
    }

    fn update(&self, title: &str, change: impl FnOnce(&mut TitleMetrics)) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        change(counters.titles.entry(title.to_owned()).or_default());
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
    fn reports_add_up_per_title_and_saturate() {
        let m = OriginMetrics::default();
        let report = SwarmReport {
            bytes_from_peers: 10,
            bytes_from_origin: 20,
            bytes_uploaded: 30,
        };
        m.record_report("t1", &report);
        m.record_report("t1", &report);
        let t1 = &m.snapshot().titles["t1"];
        assert_eq!(
            (
                t1.peer_bytes_reported,
                t1.origin_bytes_reported,
                t1.uploaded_bytes_reported,
                t1.reports
            ),
            (20, 40, 60, 2)
        );
        // Reports do not touch what the origin itself counted.
        assert_eq!((t1.origin_bytes, t1.origin_blocks), (0, 0));

        m.update("t2", |entry| entry.peer_bytes_reported = u64::MAX - 5);
        m.record_report("t2", &report);
        assert_eq!(m.snapshot().titles["t2"].peer_bytes_reported, u64::MAX);
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
