//! Keys and licences. A title has one CENC content key (what the CDM uses) and one
//! block key (what seals blocks for the swarm and for storage at rest).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// A CENC key id (16 bytes), hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 16]);

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", hex::encode(self.0))
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        let mut out = [0u8; 16];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(Self(out))
    }
}

impl KeyId {
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

/// A title's secrets, held by the provider and handed out in licences.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TitleKeys {
    pub key_id: KeyId,
    #[serde(with = "hex")]
    pub content_key: [u8; 16],
    #[serde(with = "hex")]
    pub block_key: [u8; 32],
}

impl fmt::Debug for TitleKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TitleKeys")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// What a signed-in viewer gets for a title: the block key to open sealed blocks.
/// The content key reaches the CDM only through the Clear Key exchange.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Licence {
    pub title_id: String,
    pub key_id: KeyId,
    #[serde(with = "hex")]
    pub block_key: [u8; 32],
    /// Unix seconds after which the licence is no longer honoured (rentals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl fmt::Debug for Licence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Licence")
            .field("title_id", &self.title_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The browser's Clear Key licence request (the EME `message` event's JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearKeyRequest {
    /// Key ids, base64url without padding.
    pub kids: Vec<String>,
    #[serde(default, rename = "type")]
    pub session_type: Option<String>,
}

/// A JSON Web Key set as Clear Key's `MediaKeySession.update` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearKeyResponse {
    pub keys: Vec<JsonWebKey>,
    #[serde(rename = "type")]
    pub session_type: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonWebKey {
    pub kty: String,
    /// Key id, base64url.
    pub kid: String,
    /// Key, base64url.
    pub k: String,
}

impl ClearKeyResponse {
    /// Answers `request` with the keys among `keys` whose ids it asked for.
    pub fn answer(request: &ClearKeyRequest, keys: &[TitleKeys]) -> Self {
        let keys = keys
            .iter()
            .filter(|k| {
                request
                    .kids
                    .iter()
                    .any(|kid| *kid == k.key_id.to_base64url())
            })
            .map(|k| JsonWebKey {
                kty: "oct".into(),
                kid: k.key_id.to_base64url(),
                k: URL_SAFE_NO_PAD.encode(k.content_key),
            })
            .collect();
        Self {
            keys,
            session_type: request
                .session_type
                .clone()
                .unwrap_or_else(|| "temporary".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_key_answers_only_the_keys_asked_for() {
        let a = TitleKeys {
            key_id: KeyId([1; 16]),
            content_key: [2; 16],
            block_key: [3; 32],
        };
        let b = TitleKeys {
            key_id: KeyId([4; 16]),
            ..a.clone()
        };
        let req: ClearKeyRequest = serde_json::from_str(&format!(
            r#"{{"kids":["{}"],"type":"temporary"}}"#,
            a.key_id.to_base64url()
        ))
        .unwrap();
        let resp = ClearKeyResponse::answer(&req, &[a.clone(), b]);
        assert_eq!(resp.keys.len(), 1);
        assert_eq!(resp.keys[0].kid, "AQEBAQEBAQEBAQEBAQEBAQ");
        assert_eq!(resp.keys[0].k, "AgICAgICAgICAgICAgICAg");
        assert_eq!(resp.session_type, "temporary");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let l = Licence {
            title_id: "x".into(),
            key_id: KeyId([0; 16]),
            block_key: [0xAB; 32],
            expires_at: None,
        };
        assert!(!format!("{l:?}").contains("abab"));
    }
}
