//! Encryption at rest for secrets kept in the store (panel credentials now; API secrets and
//! WireGuard keys later). XChaCha20-Poly1305 with a random nonce per value; the 32-byte key lives
//! in `secret.key` in the data dir (mode 0600), so a copied database alone reveals nothing.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, OsRng};
use chacha20poly1305::{AeadCore, XChaCha20Poly1305, XNonce};

use super::StoreError;
use crate::private_file;

const NONCE_LEN: usize = 24;

/// Seals and opens secret values.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    /// Loads the key from `path`, creating it on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, StoreError> {
        let key = match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            Ok(_) => return Err(StoreError::SecretKey(format!("{} is not a 32-byte key", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = XChaCha20Poly1305::generate_key(&mut OsRng).to_vec();
                private_file::write(path, &key).map_err(|e| StoreError::SecretKey(e.to_string()))?;
                key
            }
            Err(e) => return Err(StoreError::SecretKey(format!("{}: {e}", path.display()))),
        };
        let cipher = XChaCha20Poly1305::new_from_slice(&key).map_err(|e| StoreError::SecretKey(e.to_string()))?;
        Ok(SecretBox { cipher })
    }

    /// nonce || ciphertext+tag.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        out.extend(self.cipher.encrypt(&nonce, plaintext).expect("encryption of in-memory data cannot fail"));
        out
    }

    /// Reverses [`SecretBox::seal`].
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < NONCE_LEN {
            return Err(StoreError::Corrupt("sealed value too short".into()));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| StoreError::Corrupt("sealed value does not decrypt with secret.key".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let a = SecretBox::load_or_create(&path).unwrap();
        let sealed = a.seal(b"hunter2");
        assert_ne!(&sealed[NONCE_LEN..], b"hunter2");
        let b = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(b.open(&sealed).unwrap(), b"hunter2");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(b.open(&tampered).is_err());
    }
}
