//! Join tokens: `flt1_` + base64url(bincode(JoinToken)).
//!
//! A token carries where the controller is, the SHA-256 of its CA certificate (the agent pins
//! it, so enrollment needs no prior trust), and a 32-byte secret of which the controller keeps
//! only the hash.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "flt1_";

/// Decoded join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// Controller QUIC addresses (`host:port`), tried in order.
    pub controller: Vec<String>,
    /// SHA-256 of the controller CA certificate's DER.
    pub ca_fingerprint: [u8; 32],
    pub secret: [u8; 32],
}

/// A token string that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a Flotilla join token (expected it to start with {PREFIX})")]
    Prefix,
    #[error("join token is corrupted (was it copied whole?)")]
    Corrupt,
}

impl JoinToken {
    /// The string handed to operators.
    pub fn encode(&self) -> String {
        let bytes =
            bincode::serde::encode_to_vec(self, bincode::config::standard()).expect("a JoinToken always encodes");
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses a token string (surrounding whitespace is ignored).
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let body = s.trim().strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
        if body.len() > 4096 {
            return Err(TokenError::Corrupt);
        }
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenError::Corrupt)?;
        let config = bincode::config::standard().with_limit::<4096>();
        let (token, used): (JoinToken, usize) =
            bincode::serde::decode_from_slice(&bytes, config).map_err(|_| TokenError::Corrupt)?;
        if used != bytes.len() || token.controller.is_empty() {
            return Err(TokenError::Corrupt);
        }
        Ok(token)
    }

    /// Hash under which the controller stores the secret.
    pub fn secret_hash(secret: &[u8; 32]) -> [u8; 32] {
        Sha256::digest(secret).into()
    }
}

/// SHA-256 of a certificate's DER, as pinned in tokens.
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JoinToken {
        JoinToken { controller: vec!["203.0.113.7:4433".into()], ca_fingerprint: [7; 32], secret: [9; 32] }
    }

    #[test]
    fn round_trips() {
        let t = sample();
        let s = t.encode();
        assert!(s.starts_with("flt1_"));
        assert_eq!(JoinToken::parse(&format!("  {s}\n")).unwrap(), t);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(JoinToken::parse("hello"), Err(TokenError::Prefix));
        assert_eq!(JoinToken::parse("flt1_!!!"), Err(TokenError::Corrupt));
        let s = sample().encode();
        assert_eq!(JoinToken::parse(&s[..s.len() - 5]), Err(TokenError::Corrupt));
        assert_eq!(JoinToken::parse(&format!("{s}AAAA")), Err(TokenError::Corrupt));
    }
}
