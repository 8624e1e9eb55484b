//! The provider's Ed25519 identity as it appears on the wire: a public key and
//! signatures, both hex. Signing happens only on the provider; everyone verifies.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The provider's public key, the root of trust of a Telly network.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProviderPublicKey(pub VerifyingKey);

/// An Ed25519 signature as 128 hex characters.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SignatureHex(pub String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the signature is not 64 bytes of hex")]
    Malformed,
    #[error("the signature does not match the provider's key")]
    Invalid,
    #[error("not an Ed25519 public key")]
    BadKey,
}

impl ProviderPublicKey {
    pub fn verify(&self, message: &[u8], signature: &SignatureHex) -> Result<(), SignatureError> {
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(&signature.0, &mut bytes).map_err(|_| SignatureError::Malformed)?;
        self.0
            .verify_strict(message, &Signature::from_bytes(&bytes))
            .map_err(|_| SignatureError::Invalid)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }
}

impl SignatureHex {
    pub fn sign(key: &SigningKey, message: &[u8]) -> Self {
        Self(hex::encode(key.sign(message).to_bytes()))
    }
}

impl fmt::Debug for SignatureHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sig({}…)", &self.0.get(..12).unwrap_or(&self.0))
    }
}

impl fmt::Debug for ProviderPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderPublicKey({})", self.to_hex())
    }
}

impl FromStr for ProviderPublicKey {
    type Err = SignatureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| SignatureError::BadKey)?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| SignatureError::BadKey)
    }
}

impl Serialize for ProviderPublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ProviderPublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}
