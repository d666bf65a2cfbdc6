//! The agent's identity: node id, the controller's CA, and its own key and certificate. The key is
//! generated on this host and never leaves it; the controller only ever sees a CSR.

use flotilla_protocol::NodeId;
use rcgen::{CertificateParams, DnType, KeyPair};
use time::OffsetDateTime;

/// Fraction of a certificate's lifetime after which it is renewed.
pub const RENEW_AT: f64 = 0.7;

/// Everything the agent needs to dial its controller.
#[derive(Clone)]
pub struct Identity {
    pub node_id: NodeId,
    pub node_name: String,
    /// Controller QUIC addresses (`host:port`), tried in order.
    pub controller: Vec<String>,
    pub ca_der: Vec<u8>,
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER of the private key.
    pub key_der: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .field("node_name", &self.node_name)
            .field("controller", &self.controller)
            .finish_non_exhaustive()
    }
}

/// A key or CSR could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot create key or certificate request: {0}")]
pub struct KeyError(#[from] rcgen::Error);

/// A new P-256 key and a CSR for it, both DER.
pub fn new_key_and_csr(hostname: &str) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    // Informational only: the controller names the certificate after the node.
    params.distinguished_name.push(DnType::CommonName, format!("flotilla-agent {hostname}"));
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_der(), csr.der().to_vec()))
}

/// Validity window and serial of a DER certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub serial_hex: String,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Option<CertInfo> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(CertInfo {
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            serial_hex: hex::encode(cert.raw_serial()),
        })
    }

    /// When the certificate should be renewed (70% of its lifetime).
    pub fn renew_at(&self) -> OffsetDateTime {
        let life = self.not_after - self.not_before;
        self.not_before + life * RENEW_AT
    }

    /// Whether renewal is due at `now`.
    pub fn renewal_due(&self, now: OffsetDateTime) -> bool {
        now >= self.renew_at()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    #[test]
    fn renewal_is_due_at_seventy_percent() {
        let nb = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let info = CertInfo { not_before: nb, not_after: nb + time::Duration::seconds(100), serial_hex: "01".into() };
        assert_eq!(info.renew_at(), nb + time::Duration::seconds(70));
        assert!(!info.renewal_due(nb + time::Duration::seconds(69)));
        assert!(info.renewal_due(nb + time::Duration::seconds(70)));
    }

    #[test]
    fn csr_is_self_consistent() {
        let (key, csr) = new_key_and_csr("host-a").unwrap();
        assert!(!key.is_empty());
        let parsed = rcgen::CertificateSigningRequestParams::from_der(&csr.as_slice().into()).unwrap();
        let kp = KeyPair::try_from(key.as_slice()).unwrap();
        assert_eq!(parsed.public_key.subject_public_key_info(), kp.subject_public_key_info());
    }
}
