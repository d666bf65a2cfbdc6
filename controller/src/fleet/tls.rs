//! TLS for the QUIC endpoint: TLS 1.3 only, ALPN `flotilla/1` + `flotilla-enroll/1`, and a client
//! certificate verifier that, on top of chain validation against the controller CA, refuses any
//! serial not currently valid (deleted node, superseded certificate) at the handshake.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use flotilla_protocol::{NodeId, ALPN_ENROLL, ALPN_LINK};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::pki::Pki;

/// Serials that may open a link, and their nodes. Mirrors the store's valid certificates so the
/// handshake path never touches SQLite.
#[derive(Debug, Default)]
pub struct CertRegistry {
    serials: RwLock<HashMap<Vec<u8>, NodeId>>,
}

impl CertRegistry {
    /// A registry holding `valid`.
    pub fn new(valid: impl IntoIterator<Item = (Vec<u8>, NodeId)>) -> Self {
        CertRegistry { serials: RwLock::new(valid.into_iter().collect()) }
    }

    /// Node of a valid serial.
    pub fn node_of(&self, serial: &[u8]) -> Option<NodeId> {
        self.serials.read().unwrap_or_else(|p| p.into_inner()).get(serial).copied()
    }

    /// Allows a newly issued serial.
    pub fn allow(&self, serial: Vec<u8>, node: NodeId) {
        self.serials.write().unwrap_or_else(|p| p.into_inner()).insert(serial, node);
    }

    /// Refuses serials from now on.
    pub fn revoke(&self, serials: &[Vec<u8>]) {
        let mut map = self.serials.write().unwrap_or_else(|p| p.into_inner());
        for s in serials {
            map.remove(s);
        }
    }

    /// Refuses every serial of a node.
    pub fn revoke_node(&self, node: NodeId) {
        self.serials.write().unwrap_or_else(|p| p.into_inner()).retain(|_, n| *n != node);
    }
}

/// Serial number of a DER certificate.
pub fn serial_of(cert: &[u8]) -> Option<Vec<u8>> {
    x509_parser::parse_x509_certificate(cert).ok().map(|(_, c)| c.raw_serial().to_vec())
}

#[derive(Debug)]
struct NodeCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    registry: Arc<CertRegistry>,
}

impl ClientCertVerifier for NodeCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Enrollment connects before the agent has a certificate; the link ALPN checks for one
        // right after the handshake.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let serial = serial_of(end_entity).ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.registry.node_of(&serial).is_none() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// TLS setup failure.
#[derive(Debug, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsError(String);

/// The rustls server configuration of the QUIC endpoint.
pub fn server_config(pki: &Pki, registry: Arc<CertRegistry>) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der().clone()).map_err(|e| TlsError(e.to_string()))?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError(e.to_string()))?;
    let verifier = Arc::new(NodeCertVerifier { inner, registry });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain(), pki.server_key())
        .map_err(|e| TlsError(e.to_string()))?;
    config.alpn_protocols = vec![ALPN_LINK.to_vec(), ALPN_ENROLL.to_vec()];
    Ok(config)
}
