//! Refusals: what the controller turns away, how it says so, and that turning one peer away never
//! costs anyone else their link.
//!
//! Every story runs its own fleet. Raw QUIC clients built here talk to the controller from the
//! test process: over the veth into the controller's namespace, or over loopback.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_agent::identity::Identity;
use flotilla_agent::link::{self, ServeContext};
use flotilla_protocol::close::CloseCode;
use flotilla_protocol::codec::{self, PREFIX_LEN};
use flotilla_protocol::facts::HostFacts;
use flotilla_protocol::io::{call, read_message, write_message, CallError};
use flotilla_protocol::messages::{Capabilities, Envelope, Heartbeat, Hello, Message};
use flotilla_protocol::rpc::{Request, RequestKind, RpcError};
use flotilla_protocol::token::JoinToken;
use flotilla_protocol::{NodeId, RequestId, ALPN_LINK, CONTROLLER_SERVER_NAME, MAX_FRAME_LEN, PROTOCOL_VERSION};
use flotilla_tests::harness::{wait_for, Fleet, FleetOptions, Host};
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

/// Upper bound for any single network step of a raw client (handshake, answer, close).
const STEP: Duration = Duration::from_secs(10);

// TLS alert numbers, as carried in QUIC CRYPTO_ERROR close codes (0x100 + alert).
const ALERT_CERTIFICATE_REVOKED: u8 = 44;
const ALERT_UNKNOWN_CA: u8 = 48;
const ALERT_DECRYPT_ERROR: u8 = 51;
const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;

// ---- helpers --------------------------------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// The controller's QUIC endpoint as reachable from the test process (root namespace): the
/// controller binds every address of its namespace, including the veth end the HTTP API uses.
fn quic_from_test(fleet: &Fleet) -> SocketAddr {
    match fleet.net() {
        Some(net) => SocketAddr::from((net.controller_http_ip(), fleet.agent_quic.port())),
        None => fleet.agent_quic,
    }
}

fn controller_ca_pem(fleet: &Fleet) -> String {
    std::fs::read_to_string(fleet.controller_data_dir().join("ca.crt")).expect("controller ca.crt")
}

fn controller_ca_der(fleet: &Fleet) -> Vec<u8> {
    CertificateDer::from_pem_slice(controller_ca_pem(fleet).as_bytes()).expect("PEM certificate in ca.crt").to_vec()
}

/// Runs `flotilla-agent enroll TOKEN EXTRA…` on `host`, requires it to fail, and returns its
/// one-line reason.
fn enroll_refused(fleet: &Fleet, host: &Host, token: &str, extra: &[&str]) -> String {
    let mut args = vec!["enroll", token];
    args.extend_from_slice(extra);
    let out = fleet.agent_cmd(host, &args);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(
        !out.status.success(),
        "enroll should have failed, but it succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "the reason should be one line:\n{stderr}");
    assert!(stderr.starts_with("flotilla-agent: "), "{stderr}");
    stderr
}

/// `flotilla-agent status --json` of any host.
fn host_status(fleet: &Fleet, host: &Host) -> Value {
    let out = fleet.agent_cmd(host, &["status", "--json"]);
    assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn link_state(status: &Value) -> String {
    status["link"]["state"].as_str().unwrap_or("none").to_string()
}

fn health(fleet: &Fleet) -> u16 {
    fleet.api.request("GET", "/api/v1/health", None, None).status
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// A raw QUIC client configuration: TLS 1.3, `roots` as the only trust anchor, `alpn` offered,
/// and optionally a client certificate (DER cert, PKCS#8 DER key).
fn client_config(roots_der: &[u8], client: Option<(Vec<u8>, Vec<u8>)>, alpn: &[&[u8]]) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(roots_der.to_vec())).expect("trust anchor");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let mut tls = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS config");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(15).try_into().expect("idle timeout")));
    config.transport_config(Arc::new(transport));
    config
}

/// A client endpoint in the test process; must be called inside the runtime.
fn endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("0.0.0.0:0".parse().expect("bind address")).expect("client endpoint")
}

fn hello(node: NodeId) -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        agent_version: "refusals-test".into(),
        node_id: node,
        capabilities: Capabilities::default(),
        facts: HostFacts { hostname: "refusals-test".into(), ..HostFacts::default() },
        applied_revision: 0,
    }
}

fn frame(message: Message) -> Vec<u8> {
    codec::encode(&Envelope::new(message)).expect("encodable message")
}

/// How a link attempt of a raw client ended.
#[derive(Debug)]
enum Attempt {
    /// The client's own handshake failed.
    HandshakeFailed(quinn::ConnectionError),
    /// The handshake completed on the client's side, but the controller closed the connection
    /// without welcoming it; `answer` is whatever message came first.
    ClosedBeforeWelcome {
        answer: Option<&'static str>,
        reason: quinn::ConnectionError,
    },
    Welcomed,
}

impl Attempt {
    /// The connection error of a refusal; panics if the controller answered anything at all.
    fn refusal(self) -> quinn::ConnectionError {
        match self {
            Attempt::HandshakeFailed(e) => e,
            Attempt::ClosedBeforeWelcome { answer: None, reason } => reason,
            other => panic!("expected a refusal before any answer, got {other:?}"),
        }
    }
}

/// Dials the controller, opens the control stream, says Hello as `node` and reports what happened.
async fn dial_and_hello(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    node: NodeId,
) -> Attempt {
    let connecting = endpoint.connect_with(config, addr, CONTROLLER_SERVER_NAME).expect("connect_with");
    let conn = match tokio::time::timeout(STEP, connecting).await.expect("QUIC handshake neither done nor failed") {
        Ok(c) => c,
        Err(e) => return Attempt::HandshakeFailed(e),
    };
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        write_message(&mut send, Message::Hello(hello(node))).await.ok()?;
        read_message(&mut recv).await.ok()
    };
    let answer = tokio::time::timeout(STEP, exchange).await.expect("controller neither answered nor closed");
    if let Some(Message::Welcome(_)) = answer {
        conn.close(quinn::VarInt::from_u32(CloseCode::SHUTDOWN.0), b"test done");
        return Attempt::Welcomed;
    }
    let reason = tokio::time::timeout(STEP, conn.closed()).await.expect("connection left open after a refusal");
    Attempt::ClosedBeforeWelcome { answer: answer.map(|m| m.name()), reason }
}

/// The TLS alert of a connection closed during the handshake (QUIC CRYPTO_ERROR 0x100 + alert).
fn tls_alert(e: &quinn::ConnectionError) -> Option<u8> {
    let code = match e {
        quinn::ConnectionError::ConnectionClosed(cc) => u64::from(cc.error_code),
        quinn::ConnectionError::TransportError(te) => u64::from(te.code),
        _ => return None,
    };
    (0x100..0x200).contains(&code).then(|| (code - 0x100) as u8)
}

/// The application close code of a connection the controller closed.
fn app_close(e: &quinn::ConnectionError) -> Option<CloseCode> {
    match e {
        quinn::ConnectionError::ApplicationClosed(ac) => Some(CloseCode(ac.error_code.into_inner() as u32)),
        _ => None,
    }
}

/// Client certificate parameters shaped like the ones the controller issues to `node` (name, SAN,
/// usages), with a fresh random serial that nobody recorded (validity: rcgen's wide default).
fn node_cert_params(node: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, format!("flotilla-node-{node}"));
    params.subject_alt_names = vec![SanType::DnsName(format!("node-{node}.flotilla").try_into().expect("DNS name"))];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let mut serial: [u8; 16] = rand::random();
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params
}

/// A client certificate for `node` signed by `issuer`: (cert DER, PKCS#8 key DER).
fn node_cert(node: i64, issuer: &Issuer<'_, KeyPair>) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate().expect("key");
    let cert = node_cert_params(node).signed_by(&key, issuer).expect("sign client certificate");
    (cert.der().to_vec(), key.serialize_der())
}

/// A self-made CA named `name`, with a fresh key.
fn rogue_ca(name: &str) -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::OrganizationName, "Flotilla");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Issuer::new(params, key)
}

/// Enrolls a node from inside the test process (the identity stays in memory).
async fn enroll_in_process(token: &str, addr: SocketAddr) -> Identity {
    let token = JoinToken::parse(token).expect("token");
    let facts = HostFacts { hostname: "refusals-probe".into(), ..HostFacts::default() };
    flotilla_agent::enroll::enroll_identity(&token, Some(&addr.to_string()), facts)
        .await
        .expect("in-process enrollment")
        .identity
}

// ---- stories ----------------------------------------------------------------------------------------

/// An operator deletes a node. Its agent is cut off at once, is refused from then on (also after a
/// restart), and keeps running: the host goes on serving on its own.
#[test]
fn deleted_node_is_disconnected_at_once_and_refused_afterwards() {
    let mut fleet = Fleet::start();
    let doomed = fleet.add_agent("nl-1");
    let keeper = fleet.add_agent("de-1");
    let (doomed_id, keeper_id) = (fleet.agent(doomed).node_id, fleet.agent(keeper).node_id);
    fleet.wait_connected(&[doomed_id, keeper_id], Duration::from_secs(15));
    wait_for("nl-1 to record its link as connected", Duration::from_secs(5), || {
        (link_state(&fleet.agent_status(doomed)) == "connected").then_some(())
    });

    let deleted_at = Instant::now();
    let reply = fleet.api.delete(&format!("/api/v1/nodes/{doomed_id}"));
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.body["status"], "success");

    // The agent hears about it within a few seconds, not at its next heartbeat timeout.
    let status = wait_for("the deleted node's agent to record a refusal", Duration::from_secs(5), || {
        let s = fleet.agent_status(doomed);
        (link_state(&s) == "refused").then_some(s)
    });
    eprintln!("refused {:?} after the DELETE: {}", deleted_at.elapsed(), status["link"]);
    let detail = status["link"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(CloseCode::REVOKED.describe()), "{status}");
    // The identity stays: losing the link never deletes it.
    assert_eq!(status["enrolled"], true);
    assert_eq!(status["node_id"].as_i64(), Some(doomed_id));

    // The controller has forgotten the node.
    for path in [format!("/api/v1/servers/{doomed_id}/status"), format!("/api/v1/nodes/{doomed_id}")] {
        let reply = fleet.api.get(&path);
        assert_eq!(reply.status, 404, "GET {path}: {}", reply.raw);
    }
    assert_eq!(fleet.api.delete(&format!("/api/v1/nodes/{doomed_id}")).status, 404, "deleting twice");
    assert!(fleet.availability(doomed_id).is_none());
    let log = fleet.controller_log_text();
    assert!(log.contains("node deleted; its agent is disconnected and refused from now on"), "{log}");

    // No retry can succeed: the agent stops with the status systemd does not restart on. The
    // other node is untouched.
    let exited =
        wait_for("the deleted node's agent to exit", Duration::from_secs(10), || fleet.agent(doomed).exit_status());
    assert_eq!(exited.code(), Some(i32::from(flotilla_agent::link::EXIT_REVOKED)), "{exited:?}");
    assert_eq!(link_state(&fleet.agent_status(doomed)), "refused");
    fleet.wait_connected(&[keeper_id], Duration::from_secs(1));

    // Restarted, it dials again at once and its certificate is refused at the TLS handshake.
    fleet.stop_agent(doomed, false);
    fleet.start_agent(doomed);
    let status = wait_for("the restarted agent to be refused at the handshake", Duration::from_secs(10), || {
        let s = fleet.agent_status(doomed);
        let detail = s["link"]["detail"].as_str().unwrap_or_default().to_string();
        (link_state(&s) == "refused" && detail.contains("TLS")).then_some(s)
    });
    eprintln!("after restart: {}", status["link"]);
    let exited = wait_for("the restarted agent to exit", Duration::from_secs(10), || fleet.agent(doomed).exit_status());
    assert_eq!(exited.code(), Some(i32::from(flotilla_agent::link::EXIT_REVOKED)), "revoked at the handshake too");
    assert!(fleet.availability(doomed_id).is_none());
    fleet.wait_connected(&[keeper_id], Duration::from_secs(1));
}

/// A join token works once. The second host that tries it is told so, and stays un-enrolled.
#[test]
fn reused_join_token_is_refused() {
    let mut fleet = Fleet::start();
    let (node_id, token) = fleet.create_node("nl-1");
    let first = fleet.new_host("nl-1");
    let out = fleet.agent_cmd(&first, &["enroll", &token]);
    assert!(out.status.success(), "first enrollment: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(host_status(&fleet, &first)["node_id"].as_i64(), Some(node_id));

    let second = fleet.new_host("impostor");
    let reason = enroll_refused(&fleet, &second, &token, &[]);
    assert!(reason.contains("already used"), "{reason}");
    assert!(reason.contains("join-token"), "the reason should say how to get a new token: {reason}");
    assert_eq!(host_status(&fleet, &second)["enrolled"], false);
    assert!(fleet.controller_log_text().contains("TokenUsed"));
}

/// A join token left lying around past its lifetime is refused.
#[test]
fn expired_join_token_is_refused() {
    let mut fleet =
        Fleet::start_with(FleetOptions { join_token_ttl: Some(Duration::from_secs(1)), ..Default::default() });
    let (node_id, token) = fleet.create_node("nl-1");
    std::thread::sleep(Duration::from_millis(2500));
    let host = fleet.new_host("nl-1");
    let reason = enroll_refused(&fleet, &host, &token, &[]);
    assert!(reason.contains("expired"), "{reason}");
    assert_eq!(host_status(&fleet, &host)["enrolled"], false);
    let node = fleet.api.get(&format!("/api/v1/nodes/{node_id}"));
    assert_eq!(node.body["enrolled"], false, "{}", node.raw);
}

/// Strings that are not tokens are rejected locally with a clear reason, without bothering the
/// controller; well-formed tokens the controller never issued (or whose node is gone) are
/// refused by the controller as not recognised.
#[test]
fn garbage_and_unknown_tokens_are_refused() {
    let mut fleet = Fleet::start();
    let (_, real) = fleet.create_node("nl-1");
    let host = fleet.new_host("nl-1");
    let refused_before = count(&fleet.controller_log_text(), "enrollment refused");

    let reason = enroll_refused(&fleet, &host, "hello", &[]);
    assert!(reason.contains("not a Flotilla join token"), "{reason}");
    let truncated = &real[..real.len() - 7];
    let reason = enroll_refused(&fleet, &host, truncated, &[]);
    assert!(reason.contains("corrupted"), "{reason}");
    let reason = enroll_refused(&fleet, &host, &format!("{real}AAAA"), &[]);
    assert!(reason.contains("corrupted"), "{reason}");
    assert_eq!(count(&fleet.controller_log_text(), "enrollment refused"), refused_before, "parsed locally");

    // Right controller, right CA, a secret it never issued.
    let forged = JoinToken {
        controller: vec![fleet.agent_quic.to_string()],
        ca_fingerprint: flotilla_protocol::token::fingerprint(&controller_ca_der(&fleet)),
        secret: rand::random(),
    }
    .encode();
    let reason = enroll_refused(&fleet, &host, &forged, &[]);
    assert!(reason.contains("not recognised"), "{reason}");

    // A real token whose node was deleted before it was used.
    let (gone_id, gone_token) = fleet.create_node("gone-1");
    assert_eq!(fleet.api.delete(&format!("/api/v1/nodes/{gone_id}")).status, 200);
    let reason = enroll_refused(&fleet, &host, &gone_token, &[]);
    assert!(reason.contains("not recognised"), "{reason}");
    assert_eq!(count(&fleet.controller_log_text(), "enrollment refused"), refused_before + 2);

    // A token pinning another CA: the agent refuses to talk to this controller at all.
    let other_ca = JoinToken { ca_fingerprint: rand::random(), ..JoinToken::parse(&real).unwrap() }.encode();
    let reason = enroll_refused(&fleet, &host, &other_ca, &[]);
    assert!(reason.contains("pinned"), "{reason}");
    assert_eq!(count(&fleet.controller_log_text(), "enrollment refused"), refused_before + 2, "no exchange");

    // None of that enrolled the host or burned the real token.
    assert_eq!(host_status(&fleet, &host)["enrolled"], false);
    let out = fleet.agent_cmd(&host, &["enroll", &real]);
    assert!(out.status.success(), "the real token still works: {}", String::from_utf8_lossy(&out.stderr));
}

/// Enrolling an enrolled host again needs `--force`; without it the identity is kept and the
/// token is not spent.
#[test]
fn enrolling_an_enrolled_host_needs_force() {
    let mut fleet = Fleet::start();
    let (first_id, first_token) = fleet.create_node("nl-1");
    let (second_id, second_token) = fleet.create_node("nl-2");
    let host = fleet.new_host("nl-1");
    let out = fleet.agent_cmd(&host, &["enroll", &first_token]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = host_status(&fleet, &host);

    let reason = enroll_refused(&fleet, &host, &second_token, &[]);
    assert!(reason.contains("already enrolled"), "{reason}");
    assert!(reason.contains(&first_id.to_string()) && reason.contains("--force"), "{reason}");
    let after = host_status(&fleet, &host);
    assert_eq!(after["node_id"].as_i64(), Some(first_id));
    assert_eq!(after["certificate"]["serial"], before["certificate"]["serial"], "identity untouched");

    // The refused attempt did not spend the token: --force uses it.
    let out = fleet.agent_cmd(&host, &["enroll", &second_token, "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(host_status(&fleet, &host)["node_id"].as_i64(), Some(second_id));
}

/// Client certificates the controller did not issue are refused at the TLS handshake: signed by a
/// rogue CA (under its own name, or impersonating the real CA's name), or signed by the real CA
/// with a serial the controller never recorded (a stolen CA key alone is not enough to get in
/// unnoticed; it proves the serial check, not just the chain check). The real agent of the node
/// the forgeries name stays connected throughout.
#[test]
fn certificates_the_controller_did_not_issue_are_refused() {
    let mut fleet = Fleet::start();
    let victim = fleet.add_agent("nl-1");
    let victim_id = fleet.agent(victim).node_id;
    fleet.wait_connected(&[victim_id], Duration::from_secs(15));
    let since = fleet.agent_status(victim)["link"]["since"].clone();

    let addr = quic_from_test(&fleet);
    let ca_der = controller_ca_der(&fleet);
    let real_ca = Issuer::from_ca_cert_pem(
        &controller_ca_pem(&fleet),
        KeyPair::from_pem(
            &std::fs::read_to_string(fleet.controller_data_dir().join("ca.key")).expect("controller ca.key"),
        )
        .expect("CA key"),
    )
    .expect("CA issuer");
    let impostor_ca = Issuer::from_ca_cert_der(&CertificateDer::from(ca_der.clone()), KeyPair::generate().unwrap())
        .expect("issuer with the real CA's name");

    let rt = runtime();
    let ep = rt.block_on(async { endpoint() });
    // Each forgery is refused with the TLS alert of its own flaw, which shows which check caught it.
    let forgeries: [(&str, Issuer<'_, KeyPair>, u8); 3] = [
        ("rogue CA", rogue_ca("Flotilla controller CA rogue"), ALERT_UNKNOWN_CA),
        ("rogue CA with the real CA's name", impostor_ca, ALERT_DECRYPT_ERROR),
        ("real CA, unrecorded serial", real_ca, ALERT_CERTIFICATE_REVOKED),
    ];
    for (what, issuer, expected) in forgeries {
        let config = client_config(&ca_der, Some(node_cert(victim_id, &issuer)), &[ALPN_LINK]);
        let attempt = rt.block_on(dial_and_hello(&ep, config, addr, NodeId(victim_id)));
        eprintln!("{what}: {attempt:?}");
        let error = attempt.refusal();
        assert_eq!(tls_alert(&error), Some(expected), "{what}: {error}");
    }

    // The forged certificates named the victim's node, yet its session was never replaced.
    std::thread::sleep(Duration::from_secs(2));
    fleet.wait_connected(&[victim_id], Duration::from_secs(1));
    let status = fleet.agent_status(victim);
    assert_eq!(link_state(&status), "connected");
    assert_eq!(status["link"]["since"], since, "the real agent never reconnected");
    let log = fleet.controller_log_text();
    assert!(!log.contains("a newer session replaces"), "{log}");
    assert_eq!(count(&log, "agent connected"), 1, "{log}");
}

/// The link ALPN without a client certificate completes TLS (enrollment needs that) and is then
/// closed with CERTIFICATE_REQUIRED, before any answer.
#[test]
fn link_without_client_certificate_is_closed_with_certificate_required() {
    let fleet = Fleet::start();
    let addr = quic_from_test(&fleet);
    let config = client_config(&controller_ca_der(&fleet), None, &[ALPN_LINK]);
    let rt = runtime();
    let attempt = rt.block_on(async { dial_and_hello(&endpoint(), config, addr, NodeId(1)).await });
    let error = attempt.refusal();
    assert_eq!(app_close(&error), Some(CloseCode::CERTIFICATE_REQUIRED), "{error}");
    assert!(fleet.controller_log_text().contains("link without a valid client certificate refused"));
    assert_eq!(health(&fleet), 200);
}

/// Strays fail at the handshake (wrong or no ALPN) and UDP garbage is shrugged off: the
/// controller stays healthy, connected agents keep their links, and a new agent still enrolls.
#[test]
fn wrong_alpn_and_udp_garbage_leave_the_controller_unaffected() {
    let mut fleet = Fleet::start();
    let first = fleet.add_agent("nl-1");
    let first_id = fleet.agent(first).node_id;
    fleet.wait_connected(&[first_id], Duration::from_secs(15));
    let since = fleet.agent_status(first)["link"]["since"].clone();
    let addr = quic_from_test(&fleet);
    let ca_der = controller_ca_der(&fleet);

    let rt = runtime();
    let ep = rt.block_on(async { endpoint() });
    let strays: [(&str, &[&[u8]]); 2] = [("ALPN h3", &[b"h3"]), ("no ALPN", &[])];
    for (what, alpn) in strays {
        let config = client_config(&ca_der, None, alpn);
        let attempt = rt.block_on(dial_and_hello(&ep, config, addr, NodeId(first_id)));
        eprintln!("{what}: {attempt:?}");
        match attempt {
            Attempt::HandshakeFailed(e) => {
                assert_eq!(tls_alert(&e), Some(ALERT_NO_APPLICATION_PROTOCOL), "{what}: {e}")
            }
            other => panic!("{what}: expected the handshake to fail, got {other:?}"),
        }
    }

    // 200 datagrams of random bytes, 1..=1400 long, at the QUIC port.
    let socket = UdpSocket::bind("0.0.0.0:0").expect("UDP socket");
    let mut rng = rand::thread_rng();
    let mut sent = 0usize;
    for i in 0..200 {
        let len = rng.gen_range(1..=1400);
        let mut datagram = vec![0u8; len];
        rng.fill(&mut datagram[..]);
        sent += socket.send_to(&datagram, addr).expect("send garbage");
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    eprintln!("sent {sent} bytes of garbage to {addr}");

    // Unaffected: healthy, the agent's link never dropped, and a newcomer still gets in.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(health(&fleet), 200);
    fleet.wait_connected(&[first_id], Duration::from_secs(1));
    let status = fleet.agent_status(first);
    assert_eq!(link_state(&status), "connected");
    assert_eq!(status["link"]["since"], since, "the agent never reconnected");
    let second = fleet.add_agent("de-1");
    let second_id = fleet.agent(second).node_id;
    fleet.wait_connected(&[first_id, second_id], Duration::from_secs(15));
    assert!(!fleet.controller_log_text().contains("agent disconnected"), "no link dropped");
}

/// A peer with a valid certificate that then sends broken frames on the control stream loses that
/// connection (PROTOCOL_ERROR), not its node: it can connect properly right after, and nobody
/// else notices.
#[test]
fn malformed_frames_after_a_valid_handshake_close_only_that_connection() {
    let mut fleet = Fleet::start();
    let bystander = fleet.add_agent("nl-1");
    let bystander_id = fleet.agent(bystander).node_id;
    fleet.wait_connected(&[bystander_id], Duration::from_secs(15));
    let since = fleet.agent_status(bystander)["link"]["since"].clone();
    let (probe_id, token) = fleet.create_node("probe");
    let addr = quic_from_test(&fleet);
    let rt = runtime();
    let identity = rt.block_on(enroll_in_process(&token, addr));
    assert_eq!(identity.node_id, NodeId(probe_id));

    let mut random = vec![0u8; 1000];
    rand::thread_rng().fill(&mut random[..]);
    let hello_frame = frame(Message::Hello(hello(NodeId(probe_id))));
    let mut future_envelope = frame(Message::Heartbeat(Heartbeat { seq: 1, sent_at_us: 1 }));
    future_envelope[PREFIX_LEN] = 9;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length prefix over 4 MiB", [((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec(), vec![0; 64]].concat()),
        ("length prefix u32::MAX", u32::MAX.to_be_bytes().to_vec()),
        ("1000 random bytes", random),
        ("Hello cut short", hello_frame[..hello_frame.len() - 3].to_vec()),
        ("envelope version 9", future_envelope),
        ("Heartbeat instead of Hello", frame(Message::Heartbeat(Heartbeat { seq: 1, sent_at_us: 1 }))),
        ("Hello naming another node", frame(Message::Hello(hello(NodeId(bystander_id))))),
    ];
    let ep = rt.block_on(async { endpoint() });
    for (what, bytes) in cases {
        let config = flotilla_agent::link::tls::link_config(&identity).expect("link config");
        let reason = rt.block_on(async {
            let conn = ep
                .connect_with(config, addr, CONTROLLER_SERVER_NAME)
                .expect("connect_with")
                .await
                .unwrap_or_else(|e| panic!("{what}: a valid identity must pass the handshake: {e}"));
            let (mut send, _recv) = conn.open_bi().await.expect("control stream");
            send.write_all(&bytes).await.expect("write");
            let _ = send.finish();
            tokio::time::timeout(STEP, conn.closed()).await.unwrap_or_else(|_| panic!("{what}: connection left open"))
        });
        eprintln!("{what}: {reason}");
        assert_eq!(app_close(&reason), Some(CloseCode::PROTOCOL_ERROR), "{what}: {reason}");
    }

    // The probe's node was not punished: its identity still gets a Welcome.
    let welcomed = rt.block_on(async {
        let ep = flotilla_agent::link::tls::client_endpoint(addr).expect("endpoint");
        let facts = HostFacts { hostname: "refusals-probe".into(), ..HostFacts::default() };
        let ctx = ServeContext { metrics_interval: Duration::from_secs(1), ..ServeContext::default() };
        let established = link::connect(&ep, &identity, addr, facts, &ctx).await.expect("a proper connect still works");
        let node = established.welcome.node_id;
        established.conn.close(quinn::VarInt::from_u32(CloseCode::SHUTDOWN.0), b"test done");
        node
    });
    assert_eq!(welcomed, NodeId(probe_id));

    // Nobody else noticed.
    assert_eq!(health(&fleet), 200);
    fleet.wait_connected(&[bystander_id], Duration::from_secs(1));
    let status = fleet.agent_status(bystander);
    assert_eq!(link_state(&status), "connected");
    assert_eq!(status["link"]["since"], since, "the bystander never reconnected");
}

/// A request of a kind the controller does not know is answered `Unsupported`, and so is the
/// link kept: a ping on the same connection succeeds afterwards. A broken RPC stream costs that
/// stream only.
#[test]
fn unknown_request_kind_is_answered_unsupported_and_the_link_stays() {
    let fleet = Fleet::start();
    let (probe_id, token) = fleet.create_node("probe");
    let addr = quic_from_test(&fleet);
    let rt = runtime();
    let identity = rt.block_on(enroll_in_process(&token, addr));

    // A real session, served by the agent's own code (it answers heartbeats) in the background.
    let (shutdown_tx, mut shutdown_rx) = tokio::sync::watch::channel(false);
    let (conn, session) = rt.block_on(async {
        let ep = flotilla_agent::link::tls::client_endpoint(addr).expect("endpoint");
        let facts = HostFacts { hostname: "refusals-probe".into(), ..HostFacts::default() };
        let ctx = ServeContext { metrics_interval: Duration::from_secs(1), ..ServeContext::default() };
        let established = link::connect(&ep, &identity, addr, facts, &ctx).await.expect("connect");
        let conn = established.conn.clone();
        let session = tokio::spawn(async move {
            let end = established.serve(&ctx, &mut shutdown_rx).await;
            drop(ep);
            end
        });
        (conn, session)
    });
    fleet.wait_connected(&[probe_id], Duration::from_secs(10));

    let request =
        |id: u64, kind: RequestKind, body: Vec<u8>| Request { id: RequestId(id), deadline_ms: 5_000, kind, body };
    rt.block_on(async {
        for (id, body) in [(1, vec![]), (2, vec![0xAB; 4096])] {
            let (mut send, mut recv) = conn.open_bi().await.expect("RPC stream");
            let answer = tokio::time::timeout(STEP, call(&mut send, &mut recv, request(id, RequestKind(999), body)))
                .await
                .expect("an answer, not silence");
            let _ = send.finish();
            assert!(matches!(answer, Err(CallError::Rpc(RpcError::Unsupported(999)))), "{answer:?}");
        }

        // A malformed frame on an RPC stream: that stream ends, unanswered.
        let (mut send, mut recv) = conn.open_bi().await.expect("RPC stream");
        send.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        let _ = send.finish();
        let answer = tokio::time::timeout(STEP, read_message(&mut recv)).await.expect("the stream ends");
        assert!(answer.is_err(), "a broken request must not be answered: {answer:?}");

        // The link is still up: PING answers on the same connection.
        let (mut send, mut recv) = conn.open_bi().await.expect("RPC stream");
        let pong = tokio::time::timeout(STEP, call(&mut send, &mut recv, request(3, RequestKind::PING, vec![])))
            .await
            .expect("PING answered");
        let _ = send.finish();
        assert_eq!(pong.expect("PING succeeds after Unsupported"), Vec::<u8>::new());
        assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
    });

    // The controller agrees, a couple of heartbeats later.
    std::thread::sleep(Duration::from_secs(2));
    fleet.wait_connected(&[probe_id], Duration::from_secs(1));
    assert!(conn.close_reason().is_none(), "{:?}", conn.close_reason());
    assert!(!fleet.controller_log_text().contains("agent disconnected"));

    shutdown_tx.send(true).expect("session running");
    let end = rt.block_on(async { tokio::time::timeout(STEP, session).await }).expect("session ends").expect("join");
    eprintln!("session ended: {end}");
}

/// Once welcomed, a peer that breaks framing on the control stream has its link closed as a
/// PROTOCOL_ERROR (DESIGN §2 and `CloseCode::PROTOCOL_ERROR`: "bad frame"), so the other side can
/// tell a broken peer from an orderly shutdown.
#[test]
fn garbage_on_the_control_stream_after_welcome_is_a_protocol_error() {
    let mut fleet = Fleet::start();
    let bystander = fleet.add_agent("nl-1");
    let bystander_id = fleet.agent(bystander).node_id;
    fleet.wait_connected(&[bystander_id], Duration::from_secs(15));
    let (probe_id, token) = fleet.create_node("probe");
    let addr = quic_from_test(&fleet);
    let rt = runtime();
    let identity = rt.block_on(enroll_in_process(&token, addr));
    let config = flotilla_agent::link::tls::link_config(&identity).expect("link config");
    let reason = rt.block_on(async {
        let ep = endpoint();
        let conn =
            ep.connect_with(config, addr, CONTROLLER_SERVER_NAME).expect("connect_with").await.expect("handshake");
        let (mut send, mut recv) = conn.open_bi().await.expect("control stream");
        write_message(&mut send, Message::Hello(hello(NodeId(probe_id)))).await.expect("Hello");
        let welcome = tokio::time::timeout(STEP, read_message(&mut recv)).await.expect("answer").expect("Welcome");
        assert!(matches!(welcome, Message::Welcome(_)), "{welcome:?}");
        send.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        tokio::time::timeout(STEP, conn.closed()).await.expect("connection left open after garbage")
    });
    eprintln!("garbage after Welcome: {reason}");
    assert_eq!(app_close(&reason), Some(CloseCode::PROTOCOL_ERROR), "after Welcome: {reason}");
    assert_eq!(health(&fleet), 200);
    fleet.wait_connected(&[bystander_id], Duration::from_secs(1));
}
