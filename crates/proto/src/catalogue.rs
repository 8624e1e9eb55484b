//! Catalogue entries as the web app lists them.

use serde::{Deserialize, Serialize};

use crate::hash::Sha256Hash;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TitleSummary {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub synopsis: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    pub duration_ms: u64,
    /// Path of the poster image on the provider's origin.
    pub poster: String,
    /// The swarm id (SHA-256 of the signed manifest body).
    pub swarm_id: Sha256Hash,
    /// Sealed bytes of all tracks.
    pub size_bytes: u64,
    /// Unix seconds.
    pub published_at: u64,
}
