//! The controller's private CA: created on first start, signs the QUIC server certificate and the
//! agents' CSRs. Agent certificates name their node; their serials are recorded in the store so
//! deleted nodes and stale certificates can be refused.

use std::path::Path;
use std::time::Duration;

use flotilla_protocol::{NodeId, CONTROLLER_SERVER_NAME};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::private_file;

/// CA lifetime. Long, because rotating it means re-enrolling every agent.
const CA_LIFETIME: time::Duration = time::Duration::days(3650);
/// Agent certificates are valid from slightly in the past to tolerate clock skew.
const BACKDATE: time::Duration = time::Duration::minutes(5);

/// PKI failures.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the certificate signing request is invalid: {0}")]
    BadCsr(rcgen::Error),
}

/// A certificate issued to an agent.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub der: Vec<u8>,
    pub serial: Vec<u8>,
    pub not_after: OffsetDateTime,
}

/// An agent's certificate signing request, parsed and its self-signature checked.
#[derive(Debug)]
pub struct AgentCsr(CertificateSigningRequestParams);

impl AgentCsr {
    /// Parses a DER PKCS#10 request; fails on garbage or a bad signature.
    pub fn parse(der: &[u8]) -> Result<AgentCsr, PkiError> {
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
            .map(AgentCsr)
            .map_err(PkiError::BadCsr)
    }
}

/// CA key and certificate plus the server identity derived from them.
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key_der: Vec<u8>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("ca_fingerprint", &hex::encode(self.ca_fingerprint())).finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.display().to_string(), source }
}

/// A random positive serial of 16 bytes whose DER encoding is exactly these bytes.
fn random_serial() -> Vec<u8> {
    let mut serial: [u8; 16] = rand::random();
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial.to_vec()
}

impl Pki {
    /// Loads `ca.key`/`ca.crt` from `data_dir`, creating them on first start (key mode 0600),
    /// and issues a fresh server certificate for this run.
    pub fn load_or_create(data_dir: &Path) -> Result<Pki, PkiError> {
        let key_path = data_dir.join("ca.key");
        let cert_path = data_dir.join("ca.crt");
        let (ca_key, ca_pem) = if key_path.exists() && cert_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
            (KeyPair::from_pem(&key_pem)?, cert_pem)
        } else {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, "Flotilla");
            dn.push(DnType::CommonName, format!("Flotilla controller CA {}", hex::encode(&random_serial()[..4])));
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.not_before = OffsetDateTime::now_utc() - BACKDATE;
            params.not_after = OffsetDateTime::now_utc() + CA_LIFETIME;
            params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
            let cert = params.self_signed(&key)?;
            // Key first: a crash in between leaves no certificate without its key.
            private_file::write(&key_path, key.serialize_pem().as_bytes()).map_err(io_err(&key_path))?;
            private_file::write(&cert_path, cert.pem().as_bytes()).map_err(io_err(&cert_path))?;
            tracing::info!(path = %cert_path.display(), "created controller CA");
            (key, cert.pem())
        };
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
        let ca_der = {
            let der = rustls_pemfile_der(&ca_pem).ok_or_else(|| PkiError::Io {
                path: cert_path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no certificate in ca.crt"),
            })?;
            CertificateDer::from(der)
        };
        let mut pki = Pki { issuer, ca_der, server_chain: vec![], server_key_der: vec![] };
        pki.issue_server_cert()?;
        Ok(pki)
    }

    fn issue_server_cert(&mut self) -> Result<(), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![CONTROLLER_SERVER_NAME.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, CONTROLLER_SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = OffsetDateTime::now_utc() - BACKDATE;
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(365);
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let cert = params.signed_by(&key, &self.issuer)?;
        // The CA rides along in the chain so an enrolling agent can match the pinned fingerprint.
        self.server_chain = vec![cert.der().clone(), self.ca_der.clone()];
        self.server_key_der = key.serialize_der();
        Ok(())
    }

    /// Signs `data` with the CA key (ECDSA P-256 with SHA-256, an ASN.1 DER signature, as
    /// `openssl dgst -sha256 -verify` checks it against the CA certificate's public key).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, PkiError> {
        Ok(rcgen::SigningKey::sign(self.issuer.key(), data)?)
    }

    /// DER of the CA certificate.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// SHA-256 of the CA certificate, as pinned in join tokens.
    pub fn ca_fingerprint(&self) -> [u8; 32] {
        flotilla_protocol::token::fingerprint(&self.ca_der)
    }

    /// Server certificate chain (leaf, CA) for the QUIC endpoint.
    pub fn server_chain(&self) -> Vec<CertificateDer<'static>> {
        self.server_chain.clone()
    }

    /// Server private key for the QUIC endpoint.
    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()))
    }

    /// Signs an agent's CSR for `node`. Only the CSR's public key is used; the controller decides
    /// the name, usages and lifetime.
    pub fn sign_agent_csr(&self, csr: &AgentCsr, node: NodeId, lifetime: Duration) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, agent_common_name(node));
        params.subject_alt_names = vec![SanType::DnsName(format!("node-{}.flotilla", node.0).try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        let lifetime = time::Duration::try_from(lifetime).unwrap_or(time::Duration::days(30));
        // Backdating widens the window the agent computes 70% of; keep it small relative to the
        // lifetime so short-lived certificates are not due for renewal the moment they arrive.
        params.not_before = now - BACKDATE.min(lifetime / 20);
        let not_after = now + lifetime;
        params.not_after = not_after;
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&csr.0.public_key, &self.issuer)?;
        Ok(IssuedCert { der: cert.der().to_vec(), serial, not_after })
    }
}

/// Common name of a node's certificate.
pub fn agent_common_name(node: NodeId) -> String {
    format!("flotilla-node-{}", node.0)
}

/// First certificate in a PEM string, as DER.
fn rustls_pemfile_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).ok().map(|c| c.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ca_is_created_once_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Pki::load_or_create(dir.path()).unwrap();
        assert_eq!(a.ca_fingerprint(), b.ca_fingerprint());
    }

    #[test]
    fn signs_csr_with_controller_chosen_identity() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::default();
        req.distinguished_name.push(DnType::CommonName, "i-want-to-be-admin");
        let csr = req.serialize_request(&key).unwrap();
        let csr = AgentCsr::parse(csr.der()).unwrap();
        let issued = pki.sign_agent_csr(&csr, NodeId(7), Duration::from_secs(3600)).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).unwrap();
        assert_eq!(cert.raw_serial(), issued.serial.as_slice());
        let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap();
        assert_eq!(cn, "flotilla-node-7");
        assert_eq!(cert.public_key().raw, key.subject_public_key_info().as_slice());
        assert!(matches!(AgentCsr::parse(b"not a csr"), Err(PkiError::BadCsr(_))));
    }

    #[test]
    fn short_lived_certificates_are_not_due_for_renewal_on_arrival() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let (_key, csr) = flotilla_agent::identity::new_key_and_csr("h").unwrap();
        let issued = pki.sign_agent_csr(&AgentCsr::parse(&csr).unwrap(), NodeId(1), Duration::from_secs(20)).unwrap();
        let info = flotilla_agent::identity::CertInfo::parse(&issued.der).unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(!info.renewal_due(now), "renew_at {} is not after now {now}", info.renew_at());
        assert!(info.renew_at() < now + time::Duration::seconds(15));
    }
}
