//! Pulls a package of the controller's catalog over the link (`FETCH_PACKAGE`, in chunks) and
//! keeps it only if its size and SHA-256 are the ones the controller named.

use std::path::Path;
use std::time::Duration;

use flotilla_protocol::rpc::RequestKind;
use flotilla_protocol::upgrade::{PackageChunk, PackageChunkRequest, PackageRef, MAX_CHUNK};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::files::partial_path;
use super::UpgradeError;
use crate::link::call_controller;

/// How long one chunk may take.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// Larger packages are refused before anything is downloaded (the agent's is a few MiB).
pub const MAX_PACKAGE_SIZE: u64 = 512 * 1024 * 1024;

/// Downloads `package` to `dest` (mode 0600), unless a checked copy is already there.
pub async fn fetch_package(conn: &quinn::Connection, package: &PackageRef, dest: &Path) -> Result<(), UpgradeError> {
    let fail = |reason: String| UpgradeError::Download { version: package.version.clone(), reason };
    if package.size > MAX_PACKAGE_SIZE {
        return Err(fail(format!("{} bytes is more than the {MAX_PACKAGE_SIZE} accepted", package.size)));
    }
    if matches_file(dest, package).await {
        tracing::info!(version = %package.version, "package already downloaded");
        return Ok(());
    }
    let part = partial_path(dest);
    let fetched = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&part)
            .await
            .map_err(|e| fail(format!("{}: {e}", part.display())))?;
        let mut digest = Sha256::new();
        let mut offset = 0u64;
        while offset < package.size {
            let len = (package.size - offset).min(MAX_CHUNK.into()) as u32;
            let request = PackageChunkRequest { sha256: package.sha256, offset, len };
            let chunk: PackageChunk = call_controller(conn, RequestKind::FETCH_PACKAGE, &request, CHUNK_TIMEOUT)
                .await
                .map_err(|e| fail(format!("at byte {offset}: {e}")))?;
            if chunk.data.is_empty() {
                return Err(fail(format!("the controller's copy ends at byte {offset}, not {}", package.size)));
            }
            if chunk.data.len() > len as usize {
                return Err(fail(format!("asked for {len} bytes at {offset}, got {}", chunk.data.len())));
            }
            digest.update(&chunk.data);
            file.write_all(&chunk.data).await.map_err(|e| fail(format!("{}: {e}", part.display())))?;
            offset += chunk.data.len() as u64;
        }
        if digest.finalize().as_slice() != package.sha256 {
            return Err(UpgradeError::Corrupt { version: package.version.clone() });
        }
        file.sync_all().await.map_err(|e| fail(format!("{}: {e}", part.display())))?;
        tokio::fs::rename(&part, dest).await.map_err(|e| fail(format!("{}: {e}", dest.display())))
    }
    .await;
    if fetched.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    fetched
}

/// Whether `path` holds exactly `package`.
async fn matches_file(path: &Path, package: &PackageRef) -> bool {
    let path = path.to_owned();
    let expected = package.clone();
    tokio::task::spawn_blocking(move || file_matches(&path, &expected)).await.unwrap_or(false)
}

/// Whether `path` has the size and SHA-256 of `package`.
pub fn file_matches(path: &Path, package: &PackageRef) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else { return false };
    if file.metadata().map(|m| m.len()).ok() != Some(package.size) {
        return false;
    }
    let mut digest = Sha256::new();
    std::io::copy(&mut file, &mut digest).is_ok() && digest.finalize().as_slice() == package.sha256
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use flotilla_protocol::codec;
    use flotilla_protocol::rpc::{RpcError, RpcResult};
    use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

    use super::*;

    /// A loopback QUIC "controller" whose catalog is `catalog` (content, named digest), serving
    /// FETCH_PACKAGE as the real one does (short at the end, refused for an unknown digest), and
    /// a connection to it.
    pub(in crate::upgrade) async fn controller_serving(
        catalog: Vec<(Vec<u8>, [u8; 32])>,
    ) -> (quinn::Endpoint, quinn::Connection) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = CertificateDer::from(issued.cert.der().to_vec());
        let key = PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der());
        let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key.into())
            .unwrap();
        let server_config = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).unwrap(),
        ));
        let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let accepting = server.clone();
        tokio::spawn(async move {
            let conn = accepting.accept().await.unwrap().await.unwrap();
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let catalog = catalog.clone();
                tokio::spawn(async move {
                    let _ = flotilla_protocol::io::answer(&mut send, &mut recv, |req| async move {
                        let ask: PackageChunkRequest = codec::decode_from(&req.body).unwrap();
                        let Some((package, _)) = catalog.iter().find(|(_, sha)| *sha == ask.sha256) else {
                            return RpcResult::Err(RpcError::Refused("unknown package".into()));
                        };
                        let start = (ask.offset as usize).min(package.len());
                        let end = (start + ask.len.min(MAX_CHUNK) as usize).min(package.len());
                        RpcResult::Ok(codec::encode_body(&PackageChunk { data: package[start..end].to_vec() }).unwrap())
                    })
                    .await;
                    let _ = send.finish();
                });
            }
        });

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).unwrap(),
        )));
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        (server, conn)
    }

    #[tokio::test]
    async fn packages_arrive_in_chunks_and_are_checked() {
        // Two and a half chunks.
        let bytes: Vec<u8> = (0..(MAX_CHUNK as usize * 5 / 2)).map(|i| (i % 251) as u8).collect();
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let package = PackageRef { version: "0.2.0-1".into(), sha256, size: bytes.len() as u64 };
        let (_server, conn) = controller_serving(vec![(bytes.clone(), sha256)]).await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("p.deb");

        fetch_package(&conn, &package, &dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);

        // The controller's file is shorter than announced.
        let longer = PackageRef { size: package.size + 10, ..package.clone() };
        let e = fetch_package(&conn, &longer, &dir.path().join("longer.deb")).await.unwrap_err();
        assert!(e.to_string().contains("ends at byte"), "{e}");
        // Right size, other content.
        let mut other = bytes.clone();
        other[7] ^= 1;
        let forged = PackageRef { sha256: Sha256::digest(&other).into(), ..package.clone() };
        let e = fetch_package(&conn, &forged, &dir.path().join("forged.deb")).await.unwrap_err();
        assert!(e.to_string().contains("refused: unknown package"), "{e}");
        // What the controller sends does not match the digest it named.
        let (_server2, lying) = controller_serving(vec![(other, sha256)]).await;
        let e = fetch_package(&lying, &package, &dir.path().join("lying.deb")).await.unwrap_err();
        assert!(matches!(e, UpgradeError::Corrupt { .. }), "{e}");
        let mut left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["p.deb"], "failed downloads leave nothing behind");
    }

    #[test]
    fn a_file_matches_only_its_own_size_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.deb");
        std::fs::write(&path, b"package bytes").unwrap();
        let sha256: [u8; 32] = Sha256::digest(b"package bytes").into();
        let package = PackageRef { version: "1".into(), sha256, size: 13 };
        assert!(file_matches(&path, &package));
        assert!(!file_matches(&path, &PackageRef { size: 12, ..package.clone() }));
        assert!(!file_matches(&path, &PackageRef { sha256: [0; 32], ..package.clone() }));
        assert!(!file_matches(&dir.path().join("missing"), &package));
    }
}
