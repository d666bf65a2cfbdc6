//! The decoder faces bytes from the network before anything about the peer is trusted (enrollment
//! runs before the agent has a certificate), so it must be total: any input yields a value, "need
//! more bytes" or an error; never a panic and never an allocation beyond the frame limit. These
//! properties fuzz every decoding entry point, and check that valid messages survive the trip.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use flotilla_protocol::codec::{self, body_len, decode_body, decode_from, encode, PREFIX_LEN};
use flotilla_protocol::enroll::{EnrollRefusal, EnrollRefused, EnrollRequest, Enrolled, RenewRequest, Renewed};
use flotilla_protocol::facts::HostFacts;
use flotilla_protocol::messages::{
    Capabilities, Event, EventAck, EventKind, Heartbeat, Hello, ProtocolVersion, Upgrade, Welcome,
};
use flotilla_protocol::metrics::MetricsSample;
use flotilla_protocol::rpc::{Request, RequestKind, Response, RpcError, RpcResult};
use flotilla_protocol::token::JoinToken;
use flotilla_protocol::MAX_FRAME_LEN;
use flotilla_protocol::{CodecError, Envelope, FrameBuffer, Message, NodeId, RequestId};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

// ---- strategies -------------------------------------------------------------------------------

/// Any Unicode text, including control characters and non-BMP characters.
fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..24).prop_map(String::from_iter)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    (any::<u16>(), any::<u16>()).prop_map(|(major, minor)| ProtocolVersion { major, minor })
}

fn host_facts() -> impl Strategy<Value = HostFacts> {
    (text(), text(), text(), text(), text(), any::<u32>(), vec(any::<IpAddr>(), 0..4), vec(any::<IpAddr>(), 0..4))
        .prop_map(|(hostname, os, kernel, arch, cpu_model, cpu_cores, public_ips, private_ips)| HostFacts {
            hostname,
            os,
            kernel,
            arch,
            cpu_model,
            cpu_cores,
            public_ips,
            private_ips,
        })
}

fn hello() -> impl Strategy<Value = Hello> {
    (version(), text(), any::<i64>(), any::<u64>(), host_facts(), any::<u64>()).prop_map(
        |(protocol, agent_version, node, caps, facts, applied_revision)| Hello {
            protocol,
            agent_version,
            node_id: NodeId(node),
            capabilities: Capabilities(caps),
            facts,
            applied_revision,
        },
    )
}

fn welcome() -> impl Strategy<Value = Welcome> {
    (version(), text(), any::<i64>(), text(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
        |(protocol, controller_version, node, node_name, hb, desired_revision, now)| Welcome {
            protocol,
            controller_version,
            node_id: NodeId(node),
            node_name,
            heartbeat_interval_ms: hb,
            desired_revision,
            server_time_ms: now,
        },
    )
}

fn upgrade() -> impl Strategy<Value = Upgrade> {
    (version(), version(), text()).prop_map(|(min_version, max_version, message)| Upgrade {
        min_version,
        max_version,
        message,
    })
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (any::<u64>(), any::<u64>()).prop_map(|(seq, sent_at_us)| Heartbeat { seq, sent_at_us })
}

fn event() -> impl Strategy<Value = Event> {
    (any::<u16>(), any::<u64>(), bytes(256)).prop_map(|(kind, seq, body)| Event { kind: EventKind(kind), seq, body })
}

fn request() -> impl Strategy<Value = Request> {
    (any::<u64>(), any::<u32>(), any::<u16>(), bytes(256)).prop_map(|(id, deadline_ms, kind, body)| Request {
        id: RequestId(id),
        deadline_ms,
        kind: RequestKind(kind),
        body,
    })
}

fn rpc_error() -> impl Strategy<Value = RpcError> {
    prop_oneof![
        any::<u16>().prop_map(RpcError::Unsupported),
        text().prop_map(RpcError::BadRequest),
        Just(RpcError::DeadlineExceeded),
        text().prop_map(RpcError::Refused),
        text().prop_map(RpcError::Failed),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let result = prop_oneof![bytes(256).prop_map(RpcResult::Ok), rpc_error().prop_map(RpcResult::Err)];
    (any::<u64>(), result).prop_map(|(id, result)| Response { id: RequestId(id), result })
}

fn enroll_request() -> impl Strategy<Value = EnrollRequest> {
    (any::<[u8; 32]>(), bytes(300), text(), host_facts())
        .prop_map(|(secret, csr_der, agent_version, facts)| EnrollRequest { secret, csr_der, agent_version, facts })
}

fn enrolled() -> impl Strategy<Value = Enrolled> {
    (any::<i64>(), text(), bytes(300), bytes(300)).prop_map(|(node, node_name, cert_der, ca_der)| Enrolled {
        node_id: NodeId(node),
        node_name,
        cert_der,
        ca_der,
    })
}

fn enroll_refused() -> impl Strategy<Value = EnrollRefused> {
    let reason = prop_oneof![
        Just(EnrollRefusal::UnknownToken),
        Just(EnrollRefusal::TokenUsed),
        Just(EnrollRefusal::TokenExpired),
        Just(EnrollRefusal::NodeDeleted),
        Just(EnrollRefusal::BadCsr),
        Just(EnrollRefusal::Internal),
    ];
    (reason, text()).prop_map(|(reason, message)| EnrollRefused { reason, message })
}

/// Every variant of [`Message`].
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hello().prop_map(Message::Hello),
        welcome().prop_map(Message::Welcome),
        upgrade().prop_map(Message::Upgrade),
        heartbeat().prop_map(Message::Heartbeat),
        heartbeat().prop_map(Message::HeartbeatAck),
        event().prop_map(Message::Event),
        any::<u64>().prop_map(|seq| Message::EventAck(EventAck { seq })),
        request().prop_map(Message::Request),
        response().prop_map(Message::Response),
        enroll_request().prop_map(Message::Enroll),
        enrolled().prop_map(Message::Enrolled),
        enroll_refused().prop_map(Message::EnrollRefused),
    ]
}

fn metrics_sample() -> impl Strategy<Value = MetricsSample> {
    // `any::<f32>()` yields no NaN, so `PartialEq` is a fair round-trip check.
    let counters = any::<[u64; 10]>();
    (any::<f32>(), any::<[f64; 3]>(), counters).prop_map(|(cpu_percent, load, c)| MetricsSample {
        taken_at_ms: c[0],
        cpu_percent,
        mem_used: c[1],
        mem_total: c[2],
        swap_used: c[3],
        swap_total: c[4],
        disk_used: c[5],
        disk_total: c[6],
        load,
        uptime_secs: c[7],
        net_rx_bytes: c[8],
        net_tx_bytes: c[9],
    })
}

fn join_token() -> impl Strategy<Value = JoinToken> {
    (vec(text(), 1..4), any::<[u8; 32]>(), any::<[u8; 32]>())
        .prop_map(|(controller, ca_fingerprint, secret)| JoinToken { controller, ca_fingerprint, secret })
}

/// Runs `decode_from` for every body type. Each closure reports whether the bytes decoded, which
/// is ignored: only a panic (or an abort on a huge allocation) fails.
const BODY_DECODERS: &[fn(&[u8]) -> bool] = &[
    |b| decode_from::<MetricsSample>(b).is_ok(),
    |b| decode_from::<HostFacts>(b).is_ok(),
    |b| decode_from::<Hello>(b).is_ok(),
    |b| decode_from::<Welcome>(b).is_ok(),
    |b| decode_from::<Upgrade>(b).is_ok(),
    |b| decode_from::<Heartbeat>(b).is_ok(),
    |b| decode_from::<Event>(b).is_ok(),
    |b| decode_from::<EventAck>(b).is_ok(),
    |b| decode_from::<Request>(b).is_ok(),
    |b| decode_from::<Response>(b).is_ok(),
    |b| decode_from::<RpcResult>(b).is_ok(),
    |b| decode_from::<RpcError>(b).is_ok(),
    |b| decode_from::<EnrollRequest>(b).is_ok(),
    |b| decode_from::<Enrolled>(b).is_ok(),
    |b| decode_from::<EnrollRefused>(b).is_ok(),
    |b| decode_from::<RenewRequest>(b).is_ok(),
    |b| decode_from::<Renewed>(b).is_ok(),
    |b| decode_from::<Message>(b).is_ok(),
    |b| decode_from::<Envelope>(b).is_ok(),
    |b| decode_from::<JoinToken>(b).is_ok(),
];

fn frame(message: Message) -> Vec<u8> {
    encode(&Envelope::new(message)).expect("a small message encodes")
}

// ---- never panics on garbage ------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn decode_body_never_panics(body in bytes(4096)) {
        let _ = decode_body(&body);
    }

    /// Garbage behind a valid envelope version byte, so decoding gets past the version check
    /// into `Message` itself.
    #[test]
    fn decode_body_of_current_version_never_panics(rest in bytes(4096)) {
        let mut body = vec![1u8]; // varint ENVELOPE_VERSION
        body.extend_from_slice(&rest);
        let _ = decode_body(&body);
    }

    /// Valid frames with some bytes changed and maybe cut short: the inputs that reach deepest.
    /// Whatever decodes must also re-encode and decode to the same value.
    #[test]
    fn corrupted_valid_frames_never_panic(
        message in message(),
        edits in vec((any::<Index>(), any::<u8>()), 1..8),
        cut in any::<Index>(),
        truncate in any::<bool>(),
    ) {
        let mut body = frame(message)[PREFIX_LEN..].to_vec();
        for (at, value) in edits {
            let i = at.index(body.len());
            body[i] = value;
        }
        if truncate {
            body.truncate(cut.index(body.len()));
        }
        if let Ok(envelope) = decode_body(&body) {
            let again = frame(envelope.message.clone());
            prop_assert_eq!(decode_body(&again[PREFIX_LEN..]).unwrap(), envelope);
        }
    }

    #[test]
    fn frame_buffer_never_panics(chunks in vec(bytes(600), 0..16)) {
        let mut fb = FrameBuffer::new();
        let mut fed = 0;
        'feed: for chunk in &chunks {
            fb.extend(chunk);
            fed += chunk.len();
            loop {
                match fb.next_envelope() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    // The stream is out of sync: a connection would be dropped here.
                    Err(_) => break 'feed,
                }
            }
            prop_assert!(fb.pending() <= fed);
        }
    }

    /// A plausible length prefix, then garbage behind a current envelope version: exercises the
    /// buffer's bookkeeping across frames as well as the decoder.
    #[test]
    fn frame_buffer_with_valid_version_garbage_never_panics(
        len in 0u32..8192,
        rest in bytes(8192),
    ) {
        let mut fb = FrameBuffer::new();
        fb.extend(&len.to_be_bytes());
        fb.extend(&[1]);
        fb.extend(&rest);
        while let Ok(Some(_)) = fb.next_envelope() {}
    }

    #[test]
    fn body_decoders_never_panic(body in bytes(4096)) {
        for decode in BODY_DECODERS {
            let _ = decode(&body);
        }
    }

    #[test]
    fn join_token_parse_never_panics_on_any_string(s in ".{0,300}") {
        let _ = JoinToken::parse(&s);
        let _ = JoinToken::parse(&format!("flt1_{s}"));
    }

    #[test]
    fn join_token_parse_never_panics_on_base64url(s in "[A-Za-z0-9_-]{0,700}") {
        let _ = JoinToken::parse(&format!("flt1_{s}"));
    }

    /// Well-formed base64 of arbitrary bytes reaches the bincode decoder every time.
    #[test]
    fn join_token_parse_never_panics_on_arbitrary_payload(payload in bytes(600)) {
        let _ = JoinToken::parse(&format!("flt1_{}", URL_SAFE_NO_PAD.encode(&payload)));
    }
}

// ---- round trips ------------------------------------------------------------------------------

proptest! {
    #[test]
    fn every_message_round_trips(message in message()) {
        let envelope = Envelope::new(message);
        let bytes = encode(&envelope).unwrap();
        let prefix: [u8; PREFIX_LEN] = bytes[..PREFIX_LEN].try_into().unwrap();
        prop_assert_eq!(body_len(prefix).unwrap(), bytes.len() - PREFIX_LEN);
        prop_assert_eq!(decode_body(&bytes[PREFIX_LEN..]).unwrap(), envelope);
    }

    /// However the transport splits a stream of frames, the same messages come out in order.
    #[test]
    fn frame_buffer_reassembles_any_split(
        messages in vec(message(), 1..6),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let stream: Vec<u8> = messages.iter().cloned().flat_map(frame).collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();

        let mut fb = FrameBuffer::new();
        let mut out = Vec::new();
        for pair in cuts.windows(2) {
            fb.extend(&stream[pair[0]..pair[1]]);
            while let Some(envelope) = fb.next_envelope().unwrap() {
                out.push(envelope.message);
            }
        }
        prop_assert_eq!(out, messages);
        prop_assert_eq!(fb.pending(), 0);
    }

    #[test]
    fn metrics_sample_body_round_trips(sample in metrics_sample()) {
        let body = codec::encode_body(&sample).unwrap();
        prop_assert_eq!(decode_from::<MetricsSample>(&body).unwrap(), sample);
    }

    #[test]
    fn host_facts_body_round_trips(facts in host_facts()) {
        let body = codec::encode_body(&facts).unwrap();
        prop_assert_eq!(decode_from::<HostFacts>(&body).unwrap(), facts);
    }

    #[test]
    fn join_token_round_trips(token in join_token()) {
        prop_assert_eq!(JoinToken::parse(&token.encode()).unwrap(), token);
    }

    /// Any proper prefix of a valid body is an error, never a value or a panic.
    #[test]
    fn truncated_bodies_are_refused(message in message(), cut in any::<Index>()) {
        let bytes = frame(message);
        let body = &bytes[PREFIX_LEN..];
        let short = &body[..cut.index(body.len())];
        prop_assert!(decode_body(short).is_err());
    }
}

// ---- size limits ------------------------------------------------------------------------------

proptest! {
    #[test]
    fn length_prefix_over_the_limit_is_refused(len in (MAX_FRAME_LEN as u32 + 1)..=u32::MAX) {
        let prefix = len.to_be_bytes();
        prop_assert!(matches!(body_len(prefix), Err(CodecError::TooLarge(n)) if n == len as usize));

        // Refused on the prefix alone: the buffer does not wait for (or allocate) the body.
        let mut fb = FrameBuffer::new();
        fb.extend(&prefix);
        prop_assert!(matches!(fb.next_envelope(), Err(CodecError::TooLarge(n)) if n == len as usize));
    }

    #[test]
    fn length_prefix_within_the_limit_waits_for_the_body(len in 1..=MAX_FRAME_LEN as u32) {
        let prefix = len.to_be_bytes();
        prop_assert_eq!(body_len(prefix).unwrap(), len as usize);
        let mut fb = FrameBuffer::new();
        fb.extend(&prefix);
        prop_assert!(matches!(fb.next_envelope(), Ok(None)));
        prop_assert_eq!(fb.pending(), PREFIX_LEN);
    }
}

#[test]
fn length_prefix_at_exactly_the_limit_is_accepted() {
    let prefix = (MAX_FRAME_LEN as u32).to_be_bytes();
    assert_eq!(body_len(prefix).unwrap(), MAX_FRAME_LEN);
    assert!(matches!(body_len((MAX_FRAME_LEN as u32 + 1).to_be_bytes()), Err(CodecError::TooLarge(_))));
}

#[test]
fn body_over_the_limit_is_refused() {
    let body = vec![0u8; MAX_FRAME_LEN + 1];
    assert!(matches!(
        decode_body(&body),
        Err(CodecError::TooLarge(n)) if n == MAX_FRAME_LEN + 1
    ));
}

#[test]
fn message_over_the_limit_is_not_encoded() {
    let request =
        Request { id: RequestId(1), deadline_ms: 1_000, kind: RequestKind::PING, body: vec![0; MAX_FRAME_LEN] };
    assert!(matches!(
        encode(&Envelope::new(Message::Request(request))),
        Err(CodecError::Encode(_) | CodecError::TooLarge(_))
    ));
}

/// A length field inside a body that claims far more than the input holds must fail cleanly
/// rather than allocate what it claims.
#[test]
fn inner_lengths_claiming_huge_sizes_are_refused() {
    // bincode varint: 253 introduces a little-endian u64.
    let huge_u64 = [253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert!(decode_from::<Vec<u8>>(&huge_u64).is_err());
    assert!(decode_from::<String>(&huge_u64).is_err());
    assert!(decode_from::<RenewRequest>(&huge_u64).is_err());

    // A Request whose body claims 3 MiB (within the frame limit) but carries 4 bytes.
    let mut body = vec![1u8]; // envelope version
    body.push(7); // Message::Request
    body.extend_from_slice(&[1, 100, 1]); // id, deadline_ms, kind
    body.push(252); // varint: u32 follows
    body.extend_from_slice(&(3u32 * 1024 * 1024).to_le_bytes());
    body.extend_from_slice(&[1, 2, 3, 4]);
    assert!(matches!(decode_body(&body), Err(CodecError::Malformed(_))));

    // A HostFacts address list claiming u64::MAX entries.
    let mut facts = vec![0u8; 5]; // five empty strings
    facts.push(1); // cpu_cores
    facts.extend_from_slice(&huge_u64);
    assert!(decode_from::<HostFacts>(&facts).is_err());
}
