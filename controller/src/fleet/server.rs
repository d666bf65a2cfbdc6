//! The QUIC endpoint and its accept loop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::{ALPN_ENROLL, ALPN_LINK};
use quinn::crypto::rustls::QuicServerConfig;

use super::tls::{self, CertRegistry};
use super::{enroll, session, Fleet, FleetConfig, FleetError};
use crate::pki::Pki;
use crate::private_file;

/// Idle timeout of a link; agents send QUIC keep-alives well below it.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer that has not completed the TLS handshake after this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The stateless-reset key is kept in the data dir so that, after a crash and restart, the
/// controller answers packets of the dead connections with resets the agents recognise: they
/// reconnect at once instead of waiting for their heartbeat timeout. The connection-ID generator
/// is keyed from it too: quinn only answers with a reset for connection IDs it can validate as
/// its own, and a per-process random CID key would make the old IDs look foreign.
fn reset_key(data_dir: &Path) -> Result<ring::hmac::Key, FleetError> {
    let path = data_dir.join("quic-reset.key");
    let bytes = match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => b,
        _ => {
            let b: [u8; 32] = rand::random();
            private_file::write(&path, &b).map_err(|e| FleetError::Endpoint(format!("{}: {e}", path.display())))?;
            b.to_vec()
        }
    };
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes))
}

pub(super) fn bind(
    pki: &Pki,
    certs: Arc<CertRegistry>,
    config: &FleetConfig,
    data_dir: &Path,
) -> Result<quinn::Endpoint, FleetError> {
    let tls = tls::server_config(pki, certs).map_err(|e| FleetError::Endpoint(e.to_string()))?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| FleetError::Endpoint(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("30 s fits a VarInt")))
        .max_concurrent_bidi_streams(64u32.into())
        .max_concurrent_uni_streams(8u32.into())
        // Links carry small frames; modest windows keep 10k links' worst-case buffering bounded.
        .stream_receive_window((1024u32 * 1024).into())
        .receive_window((4u32 * 1024 * 1024).into())
        .send_window(4 * 1024 * 1024);
    server.transport_config(Arc::new(transport));
    let key = reset_key(data_dir)?;
    let tag = ring::hmac::sign(&key, b"flotilla quic connection id generator");
    let cid_key = u64::from_le_bytes(tag.as_ref()[..8].try_into().expect("HMAC-SHA256 tag has 32 bytes"));
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(key));
    endpoint_config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let socket = std::net::UdpSocket::bind(config.quic)
        .map_err(|e| FleetError::Endpoint(format!("cannot bind UDP {}: {e}", config.quic)))?;
    let runtime = quinn::default_runtime().ok_or_else(|| FleetError::Endpoint("no async runtime".into()))?;
    quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime)
        .map_err(|e| FleetError::Endpoint(format!("{}: {e}", config.quic)))
}

pub(super) async fn accept_loop(fleet: Arc<Fleet>) {
    while let Some(incoming) = fleet.endpoint.accept().await {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, async { incoming.accept()?.await }).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "QUIC handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "QUIC handshake timed out");
                    return;
                }
            };
            let alpn = conn
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol);
            match alpn.as_deref() {
                Some(a) if a == ALPN_LINK => session::run(fleet, conn).await,
                Some(a) if a == ALPN_ENROLL => enroll::run(fleet, conn).await,
                _ => conn.close(0u32.into(), b"unknown ALPN"),
            }
        });
    }
}
