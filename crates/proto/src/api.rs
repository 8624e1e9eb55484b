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
}
