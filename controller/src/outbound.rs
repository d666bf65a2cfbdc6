//! Outbound HTTP from the controller to services it reports on (AdGuard Home, Prometheus, Loki,
//! Grafana). Blocking `ureq` agents, called from `spawn_blocking`, with a hard per-request
//! timeout. TLS goes through rustls. Certificates are checked against the Mozilla roots
//! (webpki-roots); a caller that asks for no verification gets a verifier that accepts any
//! certificate but still checks the handshake signatures, so the connection at least talks to
//! whoever holds the presented key.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// An HTTP agent whose every request gives up after `timeout`, following no redirect (a redirect
/// could carry credentials to another host; the caller reports it instead). With `verify_tls`
/// false, any server certificate is accepted (self-signed admin interfaces).
pub fn agent(timeout: Duration, verify_tls: bool) -> ureq::Agent {
    let builder = ureq::AgentBuilder::new().timeout(timeout).redirects(0).max_idle_connections(0);
    let builder = if verify_tls { builder } else { builder.tls_config(unverified_tls()) };
    builder.build()
}

/// `url` without its user and password, for showing and logging.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        _ => url.to_string(),
    }
}

/// Checks an `http(s)://host[:port][/path]` URL and returns it without a trailing slash, or says
/// what is wrong with it.
pub fn parse_http_url(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let url = url::Url::parse(trimmed).map_err(|e| format!("{e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("must start with http:// or https://, got {:?}", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    Ok(trimmed.to_string())
}

/// A short description of a failed request: the status, else the transport error.
pub fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, _) => format!("HTTP {code}"),
        ureq::Error::Transport(t) => {
            // ureq's text starts with the URL, which the caller already names.
            let text = t.to_string();
            let prefix = t.url().map(|u| format!("{u}: ")).unwrap_or_default();
            text.strip_prefix(&prefix).unwrap_or(&text).to_string()
        }
    }
}

fn unverified_tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Accepts every server certificate (the operator said `verify_tls: false`), but verifies the
/// handshake signatures with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;

    /// An HTTPS server with a self-signed certificate for `localhost`, answering `hello` to every
    /// request, for `connections` connections.
    fn self_signed_server(connections: usize) -> u16 {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(connections) {
                let Ok(stream) = stream else { continue };
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut reader = BufReader::new(&mut tls);
                let mut line = String::new();
                // A refused handshake ends here with an error; the next connection is served.
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
                let _ = tls.flush();
            }
        });
        port
    }

    #[test]
    fn verify_tls_false_accepts_a_self_signed_certificate_and_true_refuses_it() {
        let port = self_signed_server(2);
        let url = format!("https://localhost:{port}/control/status");
        let checked = agent(Duration::from_secs(5), true).get(&url).call();
        let err = checked.expect_err("a self-signed certificate must not pass verification");
        assert!(describe(&err).to_lowercase().contains("certificate"), "{}", describe(&err));
        let unchecked = agent(Duration::from_secs(5), false).get(&url).call().expect("verify_tls false");
        assert_eq!(unchecked.into_string().unwrap(), "hello");
    }

    #[test]
    fn urls_are_checked_redacted_and_failures_described() {
        assert_eq!(parse_http_url(" https://dns.example.com:3000/ ").unwrap(), "https://dns.example.com:3000");
        assert_eq!(parse_http_url("http://10.0.0.5/adguard/").unwrap(), "http://10.0.0.5/adguard");
        for bad in ["dns.example.com", "ftp://dns.example.com", "https://", "http://h/?x=1", ""] {
            assert!(parse_http_url(bad).is_err(), "{bad}");
        }
        assert_eq!(redact("http://user:pw@prom.local:9090"), "http://prom.local:9090");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let refused =
            agent(Duration::from_secs(2), true).get(&format!("http://127.0.0.1:{port}/x")).call().unwrap_err();
        assert!(describe(&refused).starts_with("Connection Failed"), "{}", describe(&refused));
        assert_eq!(redact("http://prom.local:9090"), "http://prom.local:9090");
    }
}
