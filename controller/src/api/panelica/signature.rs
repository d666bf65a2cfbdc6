//! The request signature of the external API (`specs/hmac.md`, as Panelica's own clients sign):
//! lower-case hex of HMAC-SHA256(secret, METHOD + PATH + TIMESTAMP + BODY), plain concatenation.
//! PATH is the backend path (`/v1/…`, percent-decoded) plus `?` and the raw query when there is
//! one; BODY is the raw bytes as sent, empty for DELETE and multipart uploads.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's `X-Timestamp` may be from the controller's clock, either way.
pub const MAX_SKEW_S: i64 = 300;

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// Upper-case method.
    pub method: &'a str,
    /// The backend path, percent-decoded (`/v1/files/content`).
    pub path: &'a str,
    /// The raw query string as sent, without `?`.
    pub query: Option<&'a str>,
    /// `X-Timestamp` as sent (decimal seconds).
    pub timestamp: &'a str,
    /// The raw body; ignored for DELETE and multipart.
    pub body: &'a [u8],
    /// The request's body is multipart/form-data.
    pub multipart: bool,
}

impl Signed<'_> {
    /// The exact bytes the MAC covers.
    pub fn string_to_sign(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.method.len() + self.path.len() + 32 + self.body.len());
        out.extend_from_slice(self.method.as_bytes());
        out.extend_from_slice(self.path.as_bytes());
        if let Some(q) = self.query.filter(|q| !q.is_empty()) {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
        out.extend_from_slice(self.timestamp.as_bytes());
        if !self.method.eq_ignore_ascii_case("DELETE") && !self.multipart {
            out.extend_from_slice(self.body);
        }
        out
    }

    /// The signature `secret` makes of it (lower-case hex).
    pub fn sign(&self, secret: &str) -> String {
        hex::encode(self.mac(secret).finalize().into_bytes())
    }

    /// Whether `signature` (hex, either case) is `secret`'s, compared in constant time.
    pub fn verify(&self, secret: &str, signature: &str) -> bool {
        match hex::decode(signature.trim()) {
            Ok(bytes) => self.mac(secret).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }

    fn mac(&self, secret: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
        mac.update(&self.string_to_sign());
        mac
    }
}

/// Whether timestamp `ts` (decimal seconds) is within [`MAX_SKEW_S`] of `now`.
pub fn fresh(ts: &str, now: i64) -> bool {
    ts.trim().parse::<i64>().is_ok_and(|t| (now - t).abs() <= MAX_SKEW_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed<'a>(method: &'a str, path: &'a str, query: Option<&'a str>, body: &'a [u8]) -> Signed<'a> {
        Signed { method, path, query, timestamp: "1760000000", body, multipart: false }
    }

    #[test]
    fn the_string_to_sign_is_a_plain_concatenation() {
        // The example of specs/hmac.md.
        let s = signed("POST", "/v1/accounts/42/suspend", None, b"{}");
        assert_eq!(s.string_to_sign(), b"POST/v1/accounts/42/suspend1760000000{}");
        let q = signed("GET", "/v1/files", Some("path=%2Fhome%2Fa b&x=1"), b"");
        assert_eq!(q.string_to_sign(), b"GET/v1/files?path=%2Fhome%2Fa b&x=11760000000");
        // DELETE and multipart bodies are not signed.
        assert_eq!(signed("DELETE", "/v1/x", None, b"{\"a\":1}").string_to_sign(), b"DELETE/v1/x1760000000");
        let upload = Signed { multipart: true, ..signed("POST", "/v1/files/upload", None, b"--b\r\n") };
        assert_eq!(upload.string_to_sign(), b"POST/v1/files/upload1760000000");
    }

    #[test]
    fn a_signature_verifies_with_its_secret_only() {
        let s = signed("POST", "/v1/accounts/42/suspend", None, b"{}");
        let sig = s.sign("sk_live_secret");
        // HMAC-SHA256 known answer, computed independently:
        // printf 'POST/v1/accounts/42/suspend1760000000{}' | openssl dgst -sha256 -hmac sk_live_secret
        assert_eq!(sig, "0b30edb387af82a265e6b5de22f655a9bdc2b2f084281f25cff492c196de806d");
        assert!(s.verify("sk_live_secret", &sig));
        assert!(s.verify("sk_live_secret", &sig.to_uppercase()));
        assert!(!s.verify("sk_live_other", &sig));
        assert!(!signed("POST", "/v1/accounts/43/suspend", None, b"{}").verify("sk_live_secret", &sig));
        assert!(!s.verify("sk_live_secret", "zz"));
    }

    #[test]
    fn timestamps_are_fresh_for_five_minutes_either_way() {
        assert!(fresh("1000", 1300) && fresh("1300", 1000) && fresh(" 1000 ", 1000));
        assert!(!fresh("1000", 1301) && !fresh("1301", 1000) && !fresh("abc", 1000) && !fresh("", 1000));
    }
}
