//! The signed form of an approval: a DSSE envelope (Dead Simple Signing Envelope, the
//! format in-toto and Sigstore sign attestations in), JSON with the statement base64-encoded
//! as its payload and one signature per reviewer over DSSE's pre-authentication encoding.
//! Any DSSE verifier with the reviewer's ed25519 public key checks it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SigningKey};
use crate::TrustError;

/// The payload type of an approval.
pub const PAYLOAD_TYPE: &str = "application/vnd.wasmcni.approval+json";

/// A DSSE envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    /// [`PAYLOAD_TYPE`].
    pub payload_type: String,
    /// The statement's JSON, base64.
    pub payload: String,
    /// One per reviewer.
    pub signatures: Vec<Signature>,
}

/// One reviewer's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The key's id ([`PublicKey::id`]).
    pub keyid: String,
    /// The signature, base64.
    pub sig: String,
}

/// DSSE's pre-authentication encoding: `DSSEv1 <len> <type> <len> <body>`.
fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut message = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        body.len()
    )
    .into_bytes();
    message.extend_from_slice(body);
    message
}

impl Envelope {
    /// `statement` signed by `key`.
    pub fn sign(statement: &serde_json::Value, key: &SigningKey) -> Envelope {
        let body = serde_json::to_vec(statement).unwrap_or_default();
        let signature = key.sign(&pae(PAYLOAD_TYPE, &body));
        Envelope {
            payload_type: PAYLOAD_TYPE.to_owned(),
            payload: STANDARD.encode(&body),
            signatures: vec![Signature {
                keyid: key.public().id().to_owned(),
                sig: STANDARD.encode(signature),
            }],
        }
    }

    /// Adds `key`'s signature of the same payload (a second reviewer co-signing).
    pub fn cosign(&mut self, key: &SigningKey) -> Result<(), TrustError> {
        let body = self.body()?;
        let id = key.public().id().to_owned();
        self.signatures.retain(|s| s.keyid != id);
        self.signatures.push(Signature {
            keyid: id,
            sig: STANDARD.encode(key.sign(&pae(&self.payload_type, &body))),
        });
        Ok(())
    }

    /// The payload's bytes.
    pub fn body(&self) -> Result<Vec<u8>, TrustError> {
        STANDARD
            .decode(&self.payload)
            .map_err(|e| TrustError::Envelope(format!("the payload is not base64: {e}")))
    }

    /// The signed statement.
    pub fn statement(&self) -> Result<serde_json::Value, TrustError> {
        if self.payload_type != PAYLOAD_TYPE {
            return Err(TrustError::Envelope(format!(
                "payload type {:?} is not {PAYLOAD_TYPE:?}",
                self.payload_type
            )));
        }
        serde_json::from_slice(&self.body()?)
            .map_err(|e| TrustError::Envelope(format!("the payload is not JSON: {e}")))
    }

    /// Whether one of the signatures is `key`'s and verifies.
    pub fn signed_by(&self, key: &PublicKey) -> Result<bool, TrustError> {
        let message = pae(&self.payload_type, &self.body()?);
        Ok(self.signatures.iter().any(|s| {
            s.keyid == key.id()
                && STANDARD
                    .decode(&s.sig)
                    .is_ok_and(|sig| key.verifies(&message, &sig))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preauthentication_encoding_is_dsse_v1() {
        // DSSE's own test vector.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn a_changed_payload_or_type_no_longer_verifies() {
        let key = SigningKey::generate().unwrap();
        let statement = serde_json::json!({"digest": "sha256:00"});
        let envelope = Envelope::sign(&statement, &key);
        assert!(envelope.signed_by(&key.public()).unwrap());
        assert_eq!(envelope.statement().unwrap(), statement);
        let mut changed = envelope.clone();
        changed.payload = STANDARD.encode(br#"{"digest":"sha256:01"}"#);
        assert!(!changed.signed_by(&key.public()).unwrap());
        let mut retyped = envelope.clone();
        retyped.payload_type = "application/json".into();
        assert!(!retyped.signed_by(&key.public()).unwrap());
        assert!(retyped.statement().is_err());
        // Another key's id on this key's signature, or garbage, verifies nothing.
        let other = SigningKey::generate().unwrap();
        assert!(!envelope.signed_by(&other.public()).unwrap());
        let mut garbage = envelope;
        garbage.signatures[0].sig = "not base64!".into();
        assert!(!garbage.signed_by(&key.public()).unwrap());
    }
}
