//! Reviewers' ed25519 keys: private keys as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), public
//! keys as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), the formats `openssl
//! genpkey -algorithm ed25519` and `openssl pkey -pubout` write, so a reviewer may make their
//! key with either tool. A key is named by its id: `sha256:` and the hex SHA-256 of its DER
//! public key, which is what logs and messages show (never a key or a signature).

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, Verifier};
use sha2::Digest;

use crate::TrustError;

/// A reviewer's private key.
pub struct SigningKey(ed25519_dalek::SigningKey);

/// A reviewer's public key, with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    id: String,
}

impl SigningKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SigningKey, TrustError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| TrustError::Key(format!("no random bytes for a new key: {e}")))?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Reads a PKCS#8 PEM private key; `origin` names it in errors.
    pub fn from_pem(text: &str, origin: &str) -> Result<SigningKey, TrustError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(text)
            .map(SigningKey)
            .map_err(|e| {
                TrustError::Key(format!(
                    "{origin} is not an ed25519 private key in PKCS#8 PEM ({e}); make one with `wasmcni-host keygen` or `openssl genpkey -algorithm ed25519`"
                ))
            })
    }

    /// The key as PKCS#8 PEM (for a file only its owner reads).
    pub fn to_pem(&self) -> Result<String, TrustError> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| TrustError::Key(format!("cannot encode the private key: {e}")))
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        PublicKey::new(self.0.verifying_key())
    }

    /// Signs `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl PublicKey {
    fn new(key: ed25519_dalek::VerifyingKey) -> PublicKey {
        let der = key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_else(|_| key.as_bytes().to_vec());
        let id = format!("sha256:{:x}", sha2::Sha256::digest(der));
        PublicKey { key, id }
    }

    /// Reads a SubjectPublicKeyInfo PEM public key; `origin` names it in errors.
    pub fn from_pem(text: &str, origin: &str) -> Result<PublicKey, TrustError> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(text)
            .map(PublicKey::new)
            .map_err(|e| {
                TrustError::Key(format!(
                    "{origin} is not an ed25519 public key in PEM ({e}); `wasmcni-host keygen` writes one beside the private key, `openssl pkey -pubout` derives one"
                ))
            })
    }

    /// The key as PEM.
    pub fn to_pem(&self) -> Result<String, TrustError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| TrustError::Key(format!("cannot encode the public key: {e}")))
    }

    /// `sha256:<hex>` of the DER public key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether `signature` is this key's signature of `message` (strict: no malleable
    /// encodings).
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        self.key.verify_strict(message, &signature).is_ok()
            && self.key.verify(message, &signature).is_ok()
    }
}
