//! Grants: the provider's signed permission for one viewer's peer to join one
//! title's swarm until an expiry. Signalling checks them on join and peers check
//! each other's in the handshake.

use serde::{Deserialize, Serialize};

use crate::hash::Sha256Hash;
use crate::signing::{ProviderPublicKey, SignatureError, SignatureHex};

/// A grant body larger than this is refused before parsing.
pub const MAX_GRANT_BYTES: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The viewer's account name.
    pub viewer: String,
    /// The peer id the viewer's tab or node uses in the swarm (random, hex).
    pub peer_id: String,
    pub title_id: String,
    /// The swarm: SHA-256 of the title's signed manifest body.
    pub swarm_id: Sha256Hash,
    /// Unix seconds.
    pub expires_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedGrant {
    pub body: String,
    pub signature: SignatureHex,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error("grant signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("grant is too large")]
    TooLarge,
    #[error("grant does not parse: {0}")]
    Parse(String),
    #[error("grant expired at {expired_at}, now is {now}")]
    Expired { expired_at: u64, now: u64 },
    #[error("grant is for another swarm")]
    WrongSwarm,
    #[error("grant names peer {named}, not {presented}")]
    WrongPeer { named: String, presented: String },
}

impl SignedGrant {
    pub fn sign(grant: &Grant, key: &ed25519_dalek::SigningKey) -> Self {
        let body = serde_json::to_string(grant).expect("a grant always serializes");
        let signature = SignatureHex::sign(key, body.as_bytes());
        Self { body, signature }
    }

    /// Verifies signature, expiry (`now_unix` is the caller's clock) and swarm.
    pub fn verify(
        &self,
        key: &ProviderPublicKey,
        swarm_id: &Sha256Hash,
        now_unix: u64,
    ) -> Result<Grant, GrantError> {
        if self.body.len() > MAX_GRANT_BYTES {
            return Err(GrantError::TooLarge);
        }
        key.verify(self.body.as_bytes(), &self.signature)?;
        let grant: Grant =
            serde_json::from_str(&self.body).map_err(|e| GrantError::Parse(e.to_string()))?;
        if grant.expires_at <= now_unix {
            return Err(GrantError::Expired {
                expired_at: grant.expires_at,
                now: now_unix,
            });
        }
        if &grant.swarm_id != swarm_id {
            return Err(GrantError::WrongSwarm);
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn grant() -> Grant {
        Grant {
            viewer: "ada".into(),
            peer_id: "00ff".into(),
            title_id: "t".into(),
            swarm_id: Sha256Hash::of(b"m"),
            expires_at: 1000,
        }
    }

    #[test]
    fn verifies_and_refuses() {
        let k = SigningKey::from_bytes(&[9; 32]);
        let public = ProviderPublicKey(k.verifying_key());
        let signed = SignedGrant::sign(&grant(), &k);
        assert_eq!(
            signed.verify(&public, &grant().swarm_id, 999).unwrap(),
            grant()
        );
        assert!(matches!(
            signed.verify(&public, &grant().swarm_id, 1000),
            Err(GrantError::Expired { .. })
        ));
        assert_eq!(
            signed.verify(&public, &Sha256Hash::of(b"other"), 1),
            Err(GrantError::WrongSwarm)
        );
        let other = ProviderPublicKey(SigningKey::from_bytes(&[8; 32]).verifying_key());
        assert!(matches!(
            signed.verify(&other, &grant().swarm_id, 1),
            Err(GrantError::Signature(_))
        ));
    }
}
