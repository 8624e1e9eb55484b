//! JSON bodies of the provider's HTTP API (documented in docs/API.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::signing::ProviderPublicKey;

/// `GET /api/config`: what the web app needs before anything else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    pub provider_name: String,
    pub provider_key: ProviderPublicKey,
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
