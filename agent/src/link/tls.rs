//! Client-side TLS/QUIC configuration.
//!
//! - Enrollment: the agent has no trust yet; it accepts the controller only if the presented chain
//!   contains the CA whose SHA-256 the join token pinned, and the leaf verifies under that CA.
//! - Link: the CA stored at enrollment is the only root; the agent presents its certificate.

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::{ALPN_ENROLL, ALPN_LINK};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::identity::Identity;

/// QUIC keep-alive. Short, so that after a controller restart the next keep-alive draws a
/// stateless reset and the agent reconnects within seconds.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Idle timeout; matches the controller's.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS configuration failure.
#[derive(Debug, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsConfigError(String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug)]
struct PinnedCaVerifier {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca =
            intermediates.iter().find(|c| flotilla_protocol::token::fingerprint(c) == self.pin).ok_or_else(|| {
                rustls::Error::General("controller did not present the CA pinned by the join token".into())
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn quic(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsConfigError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsConfigError(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("30 s fits a VarInt")))
        .max_concurrent_bidi_streams(64u32.into())
        .max_concurrent_uni_streams(8u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

fn builder() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, TlsConfigError> {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsConfigError(e.to_string()))
}

/// QUIC client config for `flotilla-agent enroll`, trusting only the pinned CA.
pub fn enroll_config(ca_fingerprint: [u8; 32]) -> Result<quinn::ClientConfig, TlsConfigError> {
    let mut tls = builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier { pin: ca_fingerprint, provider: provider() }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_ENROLL.to_vec()];
    quic(tls)
}

/// QUIC client config of the link: the stored CA as sole root, the agent's certificate as client auth.
pub fn link_config(identity: &Identity) -> Result<quinn::ClientConfig, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(identity.ca_der.clone())).map_err(|e| TlsConfigError(format!("stored CA: {e}")))?;
    let mut tls = builder()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(identity.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone())),
        )
        .map_err(|e| TlsConfigError(format!("agent certificate: {e}")))?;
    tls.alpn_protocols = vec![ALPN_LINK.to_vec()];
    quic(tls)
}

/// A client endpoint on an ephemeral port of the right address family.
pub fn client_endpoint(for_addr: std::net::SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let bind: std::net::SocketAddr =
        if for_addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("valid literal");
    quinn::Endpoint::client(bind)
}
