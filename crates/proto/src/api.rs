//! JSON bodies of the provider's HTTP API (documented in docs/API.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::signing::ProviderPublicKey;

/// `GET /api/config`: what the web app needs before anything else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    pub provider_name: String,
    pub provider_key: ProviderPublicKey,
    /// How peers reach each other; absent in answers of older providers.
    #[serde(default)]
    pub network: NetworkConfig,
    /// The page may honour `?fault=` switches; only `telly serve --test-faults`
    /// sets it, never a real deployment.
    #[serde(default)]
    pub test_faults: bool,
}

/// How tabs find and reach each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// STUN/TURN servers the provider runs for its viewers, as
    /// `RTCIceServer.urls` strings; none by default (host candidates only).
    #[serde(default)]
    pub ice_servers: Vec<String>,
    /// Tests and one-machine demos only: peers use loopback candidates alone
    /// (Chromium gathers them only after a media permission, DESIGN.md).
    #[serde(default)]
    pub loopback_ice: bool,
    /// The signalling WebSocket's path on this origin.
    #[serde(default = "default_signal_path")]
    pub signal_path: String,
}

fn default_signal_path() -> String {
    "/signal".into()
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            loopback_ice: false,
            signal_path: default_signal_path(),
        }
    }
}

/// `POST /api/titles/{id}/grant`: a tab asks to join the title's swarm as `peer_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub peer_id: crate::signal::PeerId,
}

/// The answer: a grant for signalling and for peers' handshakes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantResponse {
    /// SHA-256 of the signed manifest's body: the swarm's name.
    pub swarm_id: crate::hash::Sha256Hash,
    pub grant: crate::grant::SignedGrant,
    /// Unix seconds; ask for a fresh grant before then.
    pub expires_at: u64,
}

/// `POST /api/titles/{id}/report`: what one tab moved for this title since its
/// previous report for it (deltas, not totals, so the provider just adds them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmReport {
    /// Verified block bytes this tab received from peers.
    pub bytes_from_peers: u64,
    /// Block bytes this tab fetched from the origin.
    pub bytes_from_origin: u64,
    /// Block bytes this tab sent to peers.
    pub bytes_uploaded: u64,
}

impl SwarmReport {
    /// The most any one field may claim. Tabs report every few seconds, and no
    /// tab moves 4 GiB in that time; anything larger is a bug or a lie, and would
    /// let one tab swamp the counters.
    pub const MAX_BYTES: u64 = 4 << 30;

    /// The first field over [`Self::MAX_BYTES`], as `(name, value)`.
    pub fn oversized_field(&self) -> Option<(&'static str, u64)> {
        [
            ("bytes_from_peers", self.bytes_from_peers),
            ("bytes_from_origin", self.bytes_from_origin),
            ("bytes_uploaded", self.bytes_uploaded),
        ]
        .into_iter()
        .find(|(_, value)| *value > Self::MAX_BYTES)
    }
}

/// `POST /api/session`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignIn {
    pub name: String,
    pub password: String,
}

/// `GET /api/session` and the answer to a sign-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub viewer: String,
}

/// Every error the API returns: a status code and this body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// `GET /api/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub titles: BTreeMap<String, TitleMetrics>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TitleMetrics {
    /// Bytes of sealed blocks and init segments the origin sent for this title.
    pub origin_bytes: u64,
    /// Block and init-segment responses the origin sent for this title.
    pub origin_blocks: u64,
    /// How often each block (by hash) was sent.
    #[serde(default)]
    pub block_fetches: BTreeMap<String, u64>,
    /// Sums of the tabs' [`SwarmReport`]s for this title: bytes from peers,
    /// bytes from the origin (as the tabs saw them), bytes uploaded to peers.
    #[serde(default)]
    pub peer_bytes_reported: u64,
    #[serde(default)]
    pub origin_bytes_reported: u64,
    #[serde(default)]
    pub uploaded_bytes_reported: u64,
    /// Reports accepted for this title.
    #[serde(default)]
    pub reports: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_reports_refuse_unknown_and_missing_fields() {
        let report: SwarmReport = serde_json::from_str(
            r#"{"bytes_from_peers": 1, "bytes_from_origin": 2, "bytes_uploaded": 3}"#,
        )
        .unwrap();
        assert_eq!(
            report,
            SwarmReport {
                bytes_from_peers: 1,
                bytes_from_origin: 2,
                bytes_uploaded: 3
            }
        );
        for bad in [
            r#"{"bytes_from_peers": 1, "bytes_from_origin": 2, "bytes_uploaded": 3, "extra": 0}"#,
            r#"{"bytes_from_peers": 1, "bytes_from_origin": 2}"#,
            r#"{"bytes_from_peers": -1, "bytes_from_origin": 2, "bytes_uploaded": 3}"#,
        ] {
            assert!(serde_json::from_str::<SwarmReport>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oversized_fields_are_named() {
        let at_limit = SwarmReport {
            bytes_from_peers: SwarmReport::MAX_BYTES,
            bytes_from_origin: SwarmReport::MAX_BYTES,
            bytes_uploaded: SwarmReport::MAX_BYTES,
        };
        assert_eq!(at_limit.oversized_field(), None);
        let over = SwarmReport {
            bytes_uploaded: SwarmReport::MAX_BYTES + 1,
            ..at_limit
        };
        assert_eq!(
            over.oversized_field(),
            Some(("bytes_uploaded", SwarmReport::MAX_BYTES + 1))
        );
    }

    #[test]
    fn answers_of_older_providers_still_parse() {
        let metrics: TitleMetrics =
            serde_json::from_str(r#"{"origin_bytes": 5, "origin_blocks": 1}"#).unwrap();
        assert_eq!((metrics.reports, metrics.peer_bytes_reported), (0, 0));
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let config: ClientConfig = serde_json::from_value(serde_json::json!({
            "provider_name": "Old TV",
            "provider_key": ProviderPublicKey(key),
        }))
        .unwrap();
        assert!(!config.test_faults);
    }
}
