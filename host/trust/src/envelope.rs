//! The signed form of an approval: a DSSE envelope (Dead Simple Signing Envelope, the
//! format in-toto and Sigstore sign attestations in), JSON with the statement base64-encoded
//! as its payload and one signature per reviewer over DSSE's pre-authentication encoding.
//! Any DSSE verifier with the reviewer's ed25519 public key checks it, and envelopes of other
//! DSSE signers are read too (a signature without `keyid`, URL-safe base64, extra fields).

use std::collections::BTreeSet;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SigningKey};
use crate::TrustError;

/// The payload type of an approval.
pub const PAYLOAD_TYPE: &str = "application/vnd.wasmcni.approval+json";

/// Signatures of one envelope that are verified, at most: more is refused unread (each costs
/// an ed25519 verification over the whole payload).
pub const MAX_SIGNATURES: usize = 16;

/// A DSSE envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
pub struct Signature {
    /// The key's id ([`PublicKey::id`]); DSSE lets a signer leave it out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
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
        decode(&self.payload)
            .ok_or_else(|| TrustError::Envelope("the payload is not base64".into()))
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

    /// Which of `keys` signed the payload, each signature verified once against the key its
    /// `keyid` names (against each key where it names none), and what was wrong with the
    /// others. More than [`MAX_SIGNATURES`] signatures fail unread.
    pub fn verify(&self, keys: &[PublicKey]) -> Result<Verified, TrustError> {
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(TrustError::Envelope(format!(
                "{} signatures, more than {MAX_SIGNATURES}",
                self.signatures.len()
            )));
        }
        let message = pae(&self.payload_type, &self.body()?);
        let mut verified = Verified::default();
        let mut seen = BTreeSet::new();
        for signature in &self.signatures {
            if !signature.keyid.is_empty() && !seen.insert(signature.keyid.as_str()) {
                continue; // the same key twice counts once
            }
            let Some(sig) = decode(&signature.sig) else {
                verified
                    .problems
                    .push("a signature that is not base64".into());
                continue;
            };
            if signature.keyid.is_empty() {
                match keys.iter().find(|k| k.verifies(&message, &sig)) {
                    Some(key) => {
                        verified.signers.insert(key.id().to_owned());
                    }
                    None => verified
                        .problems
                        .push("a signature without a key id that none of [trust] keys made".into()),
                }
                continue;
            }
            match keys.iter().find(|k| k.id() == signature.keyid) {
                Some(key) if key.verifies(&message, &sig) => {
                    verified.signers.insert(key.id().to_owned());
                }
                Some(key) => verified.problems.push(format!(
                    "the signature by {} does not verify (the file changed after it was signed)",
                    key.id()
                )),
                None => verified.problems.push(format!(
                    "a signature by {}, which is not one of [trust] keys",
                    shown_key_id(&signature.keyid)
                )),
            }
        }
        Ok(verified)
    }
}

/// What [`Envelope::verify`] found.
#[derive(Debug, Default)]
pub struct Verified {
    /// Ids of the trusted keys whose signatures verify.
    pub signers: BTreeSet<String>,
    /// Each other signature, and what is wrong with it.
    pub problems: Vec<String>,
}

/// Standard or URL-safe base64, padded or not.
fn decode(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    [STANDARD, URL_SAFE]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .or_else(|| {
            use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
            [STANDARD_NO_PAD, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(trimmed).ok())
        })
}

/// A key id from an untrusted file, for a message: a well-formed one as it is, anything else
/// quoted with escapes and cut to 80 characters.
fn shown_key_id(id: &str) -> String {
    let well_formed = id
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if well_formed {
        id.to_owned()
    } else {
        let cut: String = id.chars().take(80).collect();
        format!("{cut:?}{}", if id.chars().count() > 80 { "…" } else { "" })
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
        let keys = [key.public()];
        let envelope = Envelope::sign(&statement, &key);
        let signers = |e: &Envelope, keys: &[PublicKey]| e.verify(keys).unwrap().signers;
        assert_eq!(signers(&envelope, &keys).len(), 1);
        assert_eq!(envelope.statement().unwrap(), statement);
        let mut changed = envelope.clone();
        changed.payload = STANDARD.encode(br#"{"digest":"sha256:01"}"#);
        assert!(signers(&changed, &keys).is_empty());
        assert!(changed.verify(&keys).unwrap().problems[0].contains("does not verify"));
        let mut retyped = envelope.clone();
        retyped.payload_type = "application/json".into();
        assert!(signers(&retyped, &keys).is_empty());
        assert!(retyped.statement().is_err());
        // Another key, or garbage, verifies nothing.
        let other = SigningKey::generate().unwrap();
        assert!(signers(&envelope, &[other.public()]).is_empty());
        let mut garbage = envelope.clone();
        garbage.signatures[0].sig = "not base64!".into();
        assert!(signers(&garbage, &keys).is_empty());
        // A stranger's signature under a trusted key's id verifies nothing either.
        let mut spoofed = Envelope::sign(&statement, &other);
        spoofed.signatures[0].keyid = key.public().id().to_owned();
        assert!(signers(&spoofed, &keys).is_empty());
    }

    #[test]
    fn other_dsse_signers_envelopes_are_read_and_floods_refused_unread() {
        let key = SigningKey::generate().unwrap();
        let keys = [key.public()];
        let statement = serde_json::json!({"digest": "sha256:00"});
        // No key id, URL-safe unpadded base64, an extra field: still this key's signature.
        let signed = Envelope::sign(&statement, &key);
        let raw = STANDARD.decode(&signed.signatures[0].sig).unwrap();
        let text = serde_json::json!({
            "payloadType": PAYLOAD_TYPE,
            "payload": signed.payload,
            "signatures": [{"sig": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw), "extra": 1}],
        });
        let foreign: Envelope = serde_json::from_value(text).unwrap();
        assert_eq!(foreign.verify(&keys).unwrap().signers.len(), 1);
        // The same signature many times is one signer; too many are refused unread.
        let mut repeated = signed.clone();
        repeated.signatures = vec![signed.signatures[0].clone(); MAX_SIGNATURES];
        assert_eq!(repeated.verify(&keys).unwrap().signers.len(), 1);
        repeated.signatures.push(signed.signatures[0].clone());
        assert!(repeated.verify(&keys).is_err());
        // A hostile key id is quoted and cut in messages.
        let mut hostile = signed;
        hostile.signatures[0].keyid = format!("x\n{}", "y".repeat(500));
        let problems = hostile.verify(&keys).unwrap().problems;
        assert!(
            problems[0].len() < 200 && !problems[0].contains('\n'),
            "{problems:?}"
        );
    }
}
