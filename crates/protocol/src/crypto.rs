//! ed25519 signing and strict verification, and the request/response hashes of receipts.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::encoding::{Hash32, Pubkey, Signature};
use crate::error::ProtocolError;

/// sha256 over the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The receipt's `input_hash`: sha256(method ‖ path+query ‖ body).
pub fn input_hash(method: &str, path_and_query: &str, body: &[u8]) -> Hash32 {
    Hash32(sha256(&[
        method.as_bytes(),
        path_and_query.as_bytes(),
        body,
    ]))
}

/// The receipt's `output_hash`: sha256(response body).
pub fn output_hash(body: &[u8]) -> Hash32 {
    Hash32(sha256(&[body]))
}

/// The public key of a signing key.
pub fn pubkey_of(key: &SigningKey) -> Pubkey {
    Pubkey(key.verifying_key().to_bytes())
}

/// Signs `message` with `key`.
pub fn sign(key: &SigningKey, message: &[u8]) -> Signature {
    Signature(key.sign(message).to_bytes())
}

/// Verifies `signature` over `message` by `signer` with `verify_strict`: small-order keys,
/// non-canonical `R`/`s` and malleated signatures are rejected.
pub fn verify(signer: &Pubkey, message: &[u8], signature: &Signature) -> Result<(), ProtocolError> {
    let key = VerifyingKey::from_bytes(&signer.0)
        .map_err(|_| ProtocolError::InvalidPublicKey(signer.to_string()))?;
    let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(message, &signature)
        .map_err(|_| ProtocolError::BadSignature {
            signer: signer.to_string(),
        })
}
