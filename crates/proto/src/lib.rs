//! Telly's shared vocabulary.
//!
//! Everything the provider, the browser, native nodes and the simulator must agree
//! on lives here: content hashes and ids, the signed manifest that names a swarm,
//! grants that admit a viewer to a swarm, licences, catalogue entries, the HTTP
//! API's JSON bodies and the peer wire protocol. Nothing here does IO or reads a
//! clock: time is always an argument.

pub mod api;
pub mod catalogue;
pub mod grant;
pub mod hash;
pub mod licence;
pub mod manifest;
pub mod merkle;
pub mod signal;
pub mod signing;
pub mod wire;

pub use catalogue::TitleSummary;
pub use grant::{Grant, GrantError, SignedGrant};
pub use hash::{HashParseError, Sha256Hash};
pub use licence::{ClearKeyRequest, ClearKeyResponse, JsonWebKey, KeyId, Licence, TitleKeys};
pub use manifest::{BlockEntry, Manifest, ManifestError, SignedManifest, Track, TrackKind};
pub use signing::{ProviderPublicKey, SignatureHex};

/// Ids of titles are URL-safe slugs chosen by the provider at publish time.
pub type TitleId = String;
