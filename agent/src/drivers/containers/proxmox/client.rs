//! A small client of the Proxmox VE REST API (`https://HOST:8006/api2/json`): API-token auth,
//! form-encoded bodies, `{"data": …}` answers, errors from the `errors` map or the status line,
//! and tasks (UPIDs) polled until they stop.
//!
//! TLS is never "accept anything": the server is checked against a CA (PEM) or its leaf
//! certificate's SHA-256 is pinned (Proxmox's own certificate is self-signed per node).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::drivers::containers::tasks::TaskHandle;

/// One request's deadline. Long operations are tasks: their POST answers at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Task log lines copied into the agent's task log at most.
const TASK_LOG_LINES: usize = 500;

/// What went wrong talking to Proxmox VE.
#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// No HTTP answer: connection refused, DNS, timeout, or a certificate that did not verify.
    #[error("cannot reach the Proxmox API at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// 401: the token id or secret is wrong (or the token expired or was deleted).
    #[error("the Proxmox API refused the API token {token_id} (HTTP 401 {reason}): check token_id and its secret")]
    Unauthorized { token_id: String, reason: String },
    /// Any other error answer; `message` is the `errors` map (parameter checks, HTTP 400) or
    /// the status line's text, where Proxmox puts its messages.
    #[error("Proxmox API {method} {path}: HTTP {status}: {message}")]
    Api { method: Method, path: String, status: u16, message: String },
    /// A 2xx answer that is not the `{"data": …}` expected.
    #[error("Proxmox API {method} {path}: unexpected answer: {detail}")]
    Decode { method: Method, path: String, detail: String },
    /// A task stopped with an exit status other than `OK` or `WARNINGS: n`.
    #[error("Proxmox task {upid} failed: {exitstatus}")]
    TaskFailed { upid: String, exitstatus: String },
    /// A task still running at its deadline (it was asked to stop).
    #[error("Proxmox task {upid} did not finish within {secs}s")]
    TaskTimeout { upid: String, secs: u64 },
    /// The TLS settings cannot be used (unreadable CA file, bad PEM).
    #[error("Proxmox TLS: {0}")]
    Tls(String),
}

impl PveError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            PveError::Api { status, .. } => Some(*status),
            PveError::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }
}

/// How the API's certificate is checked.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates (PEM) the server's chain must lead to; its name must match the URL's host.
    Ca(Vec<CertificateDer<'static>>),
    /// The SHA-256 of the server's leaf certificate (DER): exactly that certificate, any name.
    Fingerprint([u8; 32]),
}

impl Trust {
    /// Reads a PEM file of one or more certificates.
    pub fn ca_file(path: &std::path::Path) -> Result<Trust, PveError> {
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(path).map_err(|e| PveError::Tls(format!("ca_file {}: {e}", path.display())))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| PveError::Tls(format!("ca_file {}: {e:?}", path.display())))?;
        if certs.is_empty() {
            return Err(PveError::Tls(format!("ca_file {}: no certificate in it", path.display())));
        }
        Ok(Trust::Ca(certs))
    }
}

/// Parses a SHA-256 fingerprint as `pvenode cert info` prints it (`AB:CD:…`), colons optional.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hex_digits: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&hex_digits).map_err(|_| format!("fingerprint {s:?}: not hex"))?;
    bytes.try_into().map_err(|_| format!("fingerprint {s:?}: a SHA-256 is 32 bytes (64 hex digits)"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly the certificate whose SHA-256 is pinned; the handshake signatures are still
/// checked against it (so the peer holds its key).
#[derive(Debug)]
struct PinnedLeaf {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = flotilla_protocol::token::fingerprint(end_entity);
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate has SHA-256 fingerprint {}, not the pinned {}",
                colon_hex(&got),
                colon_hex(&self.pin)
            )))
        }
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

/// `AB:CD:…`, as Proxmox prints fingerprints.
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn tls_config(trust: &Trust) -> Result<rustls::ClientConfig, PveError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PveError::Tls(e.to_string()))?;
    let mut config = match trust {
        Trust::Ca(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs {
                roots.add(cert.clone()).map_err(|e| PveError::Tls(format!("ca_file: {e}")))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedLeaf { pin: *pin, provider: provider() }))
            .with_no_client_auth(),
    };
    // pveproxy speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Percent-encodes one path segment (UPIDs hold `:` `@` `!`).
pub fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The error and its causes on one line (reqwest's own message hides the TLS reason).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

/// A stopped or running task (`GET /nodes/{node}/tasks/{upid}/status`).
#[derive(Debug, Deserialize)]
struct TaskStatus {
    status: String,
    #[serde(default)]
    exitstatus: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LogLine {
    #[serde(default)]
    t: String,
}

/// A login ticket (`POST /access/ticket`).
#[derive(Debug, Clone, Deserialize)]
pub struct Ticket {
    pub ticket: String,
    #[serde(rename = "CSRFPreventionToken")]
    pub csrf: String,
    pub username: String,
}

/// The API client of one Proxmox VE host.
#[derive(Clone)]
pub struct PveClient {
    http: reqwest::Client,
    /// `https://host:8006`, no trailing slash.
    url: String,
    token_id: String,
    /// `PVEAPIToken=ID=SECRET`; never logged.
    auth: String,
    /// How often a task's status is asked.
    poll: Duration,
}

impl std::fmt::Debug for PveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveClient").field("url", &self.url).field("token_id", &self.token_id).finish()
    }
}

impl PveClient {
    /// A client of `url` (`https://host:8006`) with the API token `token_id` (`user@realm!name`).
    pub fn new(url: &str, token_id: &str, secret: &str, trust: &Trust) -> Result<PveClient, PveError> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(trust)?)
            .https_only(true)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| PveError::Tls(chain(&e)))?;
        Ok(PveClient {
            http,
            url: url.trim_end_matches('/').to_string(),
            token_id: token_id.into(),
            auth: format!("PVEAPIToken={token_id}={secret}"),
            poll: Duration::from_millis(500),
        })
    }

    /// Asks a task's status this often (tests make it short).
    pub fn set_poll_interval(&mut self, every: Duration) {
        self.poll = every;
    }

    /// `https://host:8006`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The token's id (`user@realm!name`).
    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    /// `GET path?params`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, params: &[(&str, String)]) -> Result<T, PveError> {
        self.call(Method::GET, path, params).await
    }

    /// `POST path` with a form body.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, params: &[(&str, String)]) -> Result<T, PveError> {
        self.call(Method::POST, path, params).await
    }

    /// `PUT path` with a form body.
    pub async fn put<T: DeserializeOwned>(&self, path: &str, params: &[(&str, String)]) -> Result<T, PveError> {
        self.call(Method::PUT, path, params).await
    }

    /// `DELETE path?params`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str, params: &[(&str, String)]) -> Result<T, PveError> {
        self.call(Method::DELETE, path, params).await
    }

    /// One API call: `path` is below `/api2/json` and already encoded. GET and DELETE carry
    /// their parameters in the query, POST and PUT form-encoded (booleans as `0`/`1`).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<T, PveError> {
        let request = self.request(method.clone(), path, params).header("Authorization", &self.auth);
        self.send(method, path, request).await
    }

    /// `POST /access/ticket`: a login ticket for a user (consoles need one: API tokens cannot
    /// open console websockets).
    pub async fn login(&self, username: &str, password: &str) -> Result<Ticket, PveError> {
        let path = "/access/ticket";
        let params = [("username", username.to_string()), ("password", password.to_string())];
        self.send(Method::POST, path, self.request(Method::POST, path, &params)).await
    }

    fn request(&self, method: Method, path: &str, params: &[(&str, String)]) -> reqwest::RequestBuilder {
        let url = format!("{}/api2/json{path}", self.url);
        let builder = self.http.request(method.clone(), url);
        if params.is_empty() {
            builder
        } else if method == Method::GET || method == Method::DELETE {
            builder.query(params)
        } else {
            builder.form(params)
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, PveError> {
        let response =
            request.send().await.map_err(|e| PveError::Unreachable { url: self.url.clone(), detail: chain(&e) })?;
        let status = response.status();
        // Proxmox writes its error messages into the HTTP/1 reason phrase.
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
        let body =
            response.bytes().await.map_err(|e| PveError::Unreachable { url: self.url.clone(), detail: chain(&e) })?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(PveError::Unauthorized { token_id: self.token_id.clone(), reason });
        }
        if !status.is_success() {
            return Err(PveError::Api {
                method,
                path: path.into(),
                status: status.as_u16(),
                message: error_message(&reason, &body),
            });
        }
        serde_json::from_slice::<Envelope<T>>(&body).map(|e| e.data).map_err(|e| PveError::Decode {
            method,
            path: path.into(),
            detail: format!("{e} in {}", String::from_utf8_lossy(&body[..body.len().min(300)])),
        })
    }

    /// Waits for a task to stop (polling its status), copies its log into `log`, and fails
    /// unless it ended `OK` or `WARNINGS: n`. Past `limit` the task is asked to stop.
    pub async fn wait_task(&self, node: &str, upid: &str, limit: Duration, log: &TaskHandle) -> Result<(), PveError> {
        let path = format!("/nodes/{}/tasks/{}", enc(node), enc(upid));
        let deadline = tokio::time::Instant::now() + limit;
        let status = loop {
            let status: TaskStatus = self.get(&format!("{path}/status"), &[]).await?;
            if status.status == "stopped" {
                break status;
            }
            if tokio::time::Instant::now() >= deadline {
                // Best effort: a task left running would hold the guest's lock.
                let _ = self.delete::<Value>(&path, &[]).await;
                return Err(PveError::TaskTimeout { upid: upid.into(), secs: limit.as_secs() });
            }
            tokio::time::sleep(self.poll).await;
        };
        let params = [("start", "0".to_string()), ("limit", TASK_LOG_LINES.to_string())];
        match self.get::<Vec<LogLine>>(&format!("{path}/log"), &params).await {
            Ok(lines) => {
                for line in lines.iter().filter(|l| !l.t.is_empty()) {
                    log.log(format!("pve: {}", line.t));
                }
            }
            Err(e) => log.log(format!("cannot read the Proxmox task log: {e}")),
        }
        let exit = status.exitstatus.unwrap_or_default();
        if exit == "OK" || exit.starts_with("WARNINGS") {
            Ok(())
        } else {
            Err(PveError::TaskFailed {
                upid: upid.into(),
                exitstatus: if exit.is_empty() { "no exit status".into() } else { exit },
            })
        }
    }
}

/// The message of an error answer: the `errors` map of a failed parameter check
/// (`param: message`), else the reason phrase, with the body's `message` if it adds to it.
fn error_message(reason: &str, body: &[u8]) -> String {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let mut parts = vec![];
    if let Some(Value::Object(errors)) = json.as_ref().and_then(|j| j.get("errors")) {
        let list: Vec<String> = errors
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()).trim()))
            .collect();
        parts.push(list.join("; "));
    }
    let reason = reason.trim();
    if parts.is_empty() || !reason.eq_ignore_ascii_case("Parameter verification failed.") {
        parts.insert(0, reason.to_string());
    }
    if let Some(message) = json.as_ref().and_then(|j| j.get("message")).and_then(Value::as_str) {
        let message = message.trim();
        if !message.is_empty() && !parts.iter().any(|p| p.contains(message)) {
            parts.push(message.to_string());
        }
    }
    parts.retain(|p| !p.is_empty());
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_upids_and_reads_errors() {
        assert_eq!(
            enc("UPID:pve1:0003A1B2:0A1B2C3D:6650F00D:vzcreate:101:root@pam!agent:"),
            "UPID%3Apve1%3A0003A1B2%3A0A1B2C3D%3A6650F00D%3Avzcreate%3A101%3Aroot%40pam%21agent%3A"
        );
        let body = br#"{"data":null,"errors":{"vmid":"property is missing and it is not optional"}}"#;
        assert_eq!(
            error_message("Parameter verification failed.", body),
            "vmid: property is missing and it is not optional"
        );
        assert_eq!(
            error_message("Permission check failed (/vms/101, VM.Allocate)", br#"{"data":null}"#),
            "Permission check failed (/vms/101, VM.Allocate)"
        );
        assert_eq!(error_message("Internal Server Error", br#"{"message":"boom\n"}"#), "Internal Server Error: boom");
        let pin = parse_fingerprint(&colon_hex(&[0xAB; 32])).unwrap();
        assert_eq!(pin, [0xAB; 32]);
        assert_eq!(parse_fingerprint(&"ab".repeat(32)).unwrap(), [0xAB; 32]);
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint("zz").is_err());
    }
}
