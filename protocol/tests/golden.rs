//! Golden bytes for every wire type.
//!
//! A FAILING TEST HERE MEANS A SHIPPED WIRE TYPE CHANGED. Bincode is not self-describing: agents
//! and controllers of different releases only understand each other while these bytes stay the
//! same. Do not edit the literal to make the test pass; revert the type change and add a new
//! request/event kind or a new versioned body type (with a new golden test) instead.
//!
//! Each check also decodes the committed bytes, so bytes written by an older build keep decoding
//! to the same value. To add a type: write its test with an empty literal, run it once, and paste
//! the `actual` hex from the failure message.

use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flotilla_protocol::backup::{ImportReport, StateExport, StateImport};
use flotilla_protocol::codec::{self, PREFIX_LEN};
use flotilla_protocol::containers::{
    ConsoleAccess, ConsoleFrame, ConsoleOpen, ContainerAction, ContainerCreate, ContainerList, ContainerOp,
    ContainerQuery, ContainerSample, ContainerSamples, ContainerSpec, ContainerState, ContainerStatus, OsTemplate,
    SnapshotInfo, SnapshotList, TaskInfo, TaskQuery, TaskStarted, TaskState, Upid,
};
use flotilla_protocol::enroll::{EnrollRefusal, EnrollRefused, EnrollRequest, Enrolled, RenewRequest, Renewed};
use flotilla_protocol::facts::HostFacts;
use flotilla_protocol::messages::{
    Capabilities, Event, EventAck, EventKind, Heartbeat, Hello, ProtocolVersion, Upgrade, Welcome, ENVELOPE_VERSION,
};
use flotilla_protocol::metrics::MetricsSample;
use flotilla_protocol::proxy::{
    ApplyReport, ClientSpec, CoreFlavor, CoreState, CoreStatus, CutOff, InboundSpec, InboundTraffic, LogLevel, LogLine,
    LogQuery, OnlineSource, ProxyState, TrafficBatch, UserTraffic,
};
use flotilla_protocol::rpc::{Request, RequestKind, Response, RpcError, RpcResult};
use flotilla_protocol::token::JoinToken;
use flotilla_protocol::upgrade::{
    AgentRelease, AgentUpgrade, PackageChunk, PackageChunkRequest, PackageRef, RolloutId, UpgradeOutcome,
    UpgradeResult, UpgradeStarted,
};
use flotilla_protocol::users::{
    ClientLifecycle, DesiredUsers, DnsStat, DnsStatsQuery, LocalChange, LocalChanges, LocalChangesApplied, SourceStat,
    StatsReset, UserChange, UserEvent, UserStat, UserStats,
};
use flotilla_protocol::wireguard::{
    WgApplyReport, WgCutOff, WgInterfaceSpec, WgInterfaceStatus, WgKey, WgPeerRef, WgPeerSpec, WgPeerTraffic, WgState,
    WgStatus, WgTrafficBatch,
};
use flotilla_protocol::{Envelope, Message, NodeId, RequestId, ALPN_ENROLL, ALPN_LINK};
use serde::de::DeserializeOwned;
use serde::Serialize;

// ---- helpers ----------------------------------------------------------------------------------

#[track_caller]
fn assert_golden(what: &str, actual: &[u8], golden: &str) {
    let actual = hex::encode(actual);
    assert!(
        actual == golden,
        "wire bytes of {what} changed: a shipped type was edited (see the top of golden.rs)\n\
         golden: {golden}\n\
         actual: {actual}"
    );
}

/// A whole frame (length prefix + envelope) of `message`.
#[track_caller]
fn check_message(message: Message, golden: &str) {
    let what = message.name();
    let envelope = Envelope::new(message);
    assert_golden(what, &codec::encode(&envelope).unwrap(), golden);

    let bytes = hex::decode(golden).unwrap();
    let prefix: [u8; PREFIX_LEN] = bytes[..PREFIX_LEN].try_into().unwrap();
    assert_eq!(codec::body_len(prefix).unwrap(), bytes.len() - PREFIX_LEN);
    assert_eq!(codec::decode_body(&bytes[PREFIX_LEN..]).unwrap(), envelope);
}

/// A body type (carried inside `Event`/`Request`/`Response` bytes).
#[track_caller]
fn check_body<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T, golden: &str) {
    let what = std::any::type_name::<T>();
    assert_golden(what, &codec::encode_body(value).unwrap(), golden);
    assert_eq!(&codec::decode_from::<T>(&hex::decode(golden).unwrap()).unwrap(), value);
}

// ---- fixed sample values ----------------------------------------------------------------------
// Chosen to exercise the encoding: multi-byte varints (values >= 251), a negative id (zigzag),
// IPv4 and IPv6 addresses, non-ASCII text, fractional floats.

fn facts() -> HostFacts {
    HostFacts {
        hostname: "nl-1".into(),
        os: "Debian GNU/Linux 12".into(),
        kernel: "6.1.0-18-amd64".into(),
        arch: "x86_64".into(),
        cpu_model: "AMD EPYC 7543P 32-Core Processor".into(),
        cpu_cores: 4,
        public_ips: vec![
            IpAddr::V4(Ipv4Addr::new(45, 67, 89, 10)),
            IpAddr::V6(Ipv6Addr::new(0x2a01, 0x4f8, 0xc17, 0x1234, 0, 0, 0, 1)),
        ],
        private_ips: vec![
            IpAddr::V4(Ipv4Addr::new(10, 8, 0, 1)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
        ],
    }
}

fn metrics() -> MetricsSample {
    MetricsSample {
        taken_at_ms: 1_717_171_717_171,
        cpu_percent: 12.5,
        mem_used: 1_073_741_824,
        mem_total: 4_294_967_296,
        swap_used: 0,
        swap_total: 536_870_912,
        disk_used: 21_474_836_480,
        disk_total: 85_899_345_920,
        load: [0.25, 0.5, 1.75],
        uptime_secs: 864_000,
        net_rx_bytes: 123_456_789_012,
        net_tx_bytes: 98_765_432_109,
    }
}

const V1_0: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

// ---- messages: one test per `Message` variant -------------------------------------------------

#[test]
fn hello() {
    check_message(
        Message::Hello(Hello {
            protocol: V1_0,
            agent_version: "0.1.0".into(),
            node_id: NodeId(42),
            capabilities: Capabilities::METRICS | Capabilities::CERT_RENEWAL,
            facts: facts(),
            applied_revision: 300,
        }),
        "0000008e0100010005302e312e305403046e6c2d311344656269616e20474e552f4c696e75782031320e362e312e302d31382d616d643634067838365f363420414d4420455059432037353433502033322d436f72652050726f636573736f720402002d43590a012a0104f80c171234000000000000000102000a08000101fd000000000000000000000000000002fb2c01",
    );
}

#[test]
fn welcome() {
    check_message(
        Message::Welcome(Welcome {
            protocol: V1_0,
            controller_version: "0.1.0".into(),
            node_id: NodeId(42),
            node_name: "amsterdam-1".into(),
            heartbeat_interval_ms: 5_000,
            desired_revision: 301,
            server_time_ms: 1_717_171_717_171,
        }),
        "000000260101010005302e312e30540b616d7374657264616d2d31fb8813fb2d01fd330469cf8f010000",
    );
}

#[test]
fn upgrade() {
    check_message(
        Message::Upgrade(Upgrade {
            min_version: ProtocolVersion { major: 2, minor: 0 },
            max_version: ProtocolVersion { major: 2, minor: 3 },
            message: "agent 0.1.0 is too old: upgrade to 0.3 or later".into(),
        }),
        "000000360102020002032f6167656e7420302e312e3020697320746f6f206f6c643a207570677261646520746f20302e33206f72206c61746572",
    );
}

#[test]
fn heartbeat() {
    check_message(Message::Heartbeat(Heartbeat { seq: 7, sent_at_us: 1_234_567_890 }), "00000008010307fcd2029649");
}

#[test]
fn heartbeat_ack() {
    check_message(Message::HeartbeatAck(Heartbeat { seq: 7, sent_at_us: 1_234_567_890 }), "00000008010407fcd2029649");
}

#[test]
fn event_carrying_a_metrics_sample() {
    check_message(
        Message::Event(Event {
            kind: EventKind::METRICS_SAMPLE,
            seq: 1_000,
            body: codec::encode_body(&metrics()).unwrap(),
        }),
        "00000069010501fbe80362fd330469cf8f01000000004841fc00000040fd000000000100000000fc00000020fd0000000005000000fd0000000014000000000000000000d03f000000000000e03f000000000000fc3ffc002f0d00fd141a99be1c000000fd2de5e0fe16000000",
    );
}

#[test]
fn event_ack() {
    check_message(Message::EventAck(EventAck { seq: 1_000 }), "000000050106fbe803");
}

#[test]
fn request_ping() {
    check_message(
        Message::Request(Request { id: RequestId(1), deadline_ms: 10_000, kind: RequestKind::PING, body: vec![] }),
        "00000008010701fb10270100",
    );
}

#[test]
fn request_renew_certificate() {
    check_message(
        Message::Request(Request {
            id: RequestId(65_536),
            deadline_ms: 30_000,
            kind: RequestKind::RENEW_CERTIFICATE,
            body: codec::encode_body(&RenewRequest { csr_der: vec![0x30, 0x82, 0x01, 0x0a] }).unwrap(),
        }),
        "000000110107fc00000100fb30750205043082010a",
    );
}

#[test]
fn response_ok() {
    check_message(
        Message::Response(Response {
            id: RequestId(65_536),
            result: RpcResult::Ok(codec::encode_body(&Renewed { cert_der: vec![0x30, 0x82, 0x02, 0x10] }).unwrap()),
        }),
        "0000000e0108fc0000010000050430820210",
    );
}

#[test]
fn response_err_every_rpc_error() {
    let cases = [
        (RpcError::Unsupported(999), "000000080108030100fbe703"),
        (
            RpcError::BadRequest("body does not decode".into()),
            "0000001a010803010114626f647920646f6573206e6f74206465636f6465",
        ),
        (RpcError::DeadlineExceeded, "000000050108030102"),
        (RpcError::Refused("node is deleted".into()), "0000001501080301030f6e6f64652069732064656c65746564"),
        (RpcError::Failed("disk full".into()), "0000000f0108030104096469736b2066756c6c"),
    ];
    for (error, golden) in cases {
        check_message(Message::Response(Response { id: RequestId(3), result: RpcResult::Err(error) }), golden);
    }
}

#[test]
fn enroll() {
    check_message(
        Message::Enroll(EnrollRequest {
            secret: [0xab; 32],
            csr_der: vec![0x30, 0x81, 0x9f],
            agent_version: "0.1.0".into(),
            facts: facts(),
        }),
        "000000ab0109abababababababababababababababababababababababababababababababab0330819f05302e312e30046e6c2d311344656269616e20474e552f4c696e75782031320e362e312e302d31382d616d643634067838365f363420414d4420455059432037353433502033322d436f72652050726f636573736f720402002d43590a012a0104f80c171234000000000000000102000a08000101fd000000000000000000000000000002",
    );
}

#[test]
fn enrolled() {
    check_message(
        Message::Enrolled(Enrolled {
            node_id: NodeId(-5),
            node_name: "tokyo-ß".into(),
            cert_der: vec![0x30, 0x82],
            ca_der: vec![0x30, 0x83, 0x00],
        }),
        "00000013010a0908746f6b796f2dc39f02308203308300",
    );
}

#[test]
fn enroll_refused_every_reason() {
    let cases = [
        (EnrollRefusal::UnknownToken, "00000006010b00026e6f"),
        (EnrollRefusal::TokenUsed, "00000006010b01026e6f"),
        (EnrollRefusal::TokenExpired, "00000006010b02026e6f"),
        (EnrollRefusal::NodeDeleted, "00000006010b03026e6f"),
        (EnrollRefusal::BadCsr, "00000006010b04026e6f"),
        (EnrollRefusal::Internal, "00000006010b05026e6f"),
    ];
    for (reason, golden) in cases {
        check_message(Message::EnrollRefused(EnrollRefused { reason, message: "no".into() }), golden);
    }
}

// ---- bodies -----------------------------------------------------------------------------------

#[test]
fn metrics_sample_body() {
    check_body(&metrics(), "fd330469cf8f01000000004841fc00000040fd000000000100000000fc00000020fd0000000005000000fd0000000014000000000000000000d03f000000000000e03f000000000000fc3ffc002f0d00fd141a99be1c000000fd2de5e0fe16000000");
}

#[test]
fn host_facts_body() {
    check_body(&facts(), "046e6c2d311344656269616e20474e552f4c696e75782031320e362e312e302d31382d616d643634067838365f363420414d4420455059432037353433502033322d436f72652050726f636573736f720402002d43590a012a0104f80c171234000000000000000102000a08000101fd000000000000000000000000000002");
}

#[test]
fn renew_request_body() {
    check_body(&RenewRequest { csr_der: vec![0x30, 0x82, 0x01, 0x0a] }, "043082010a");
}

#[test]
fn renewed_body() {
    check_body(&Renewed { cert_der: vec![0x30, 0x82, 0x02, 0x10] }, "0430820210");
}

// ---- join tokens and numbered constants -------------------------------------------------------

/// Tokens are printed, pasted into shells and kept in provisioning scripts: an old token string
/// must keep parsing.
#[test]
fn join_token_string() {
    let token = JoinToken {
        controller: vec!["203.0.113.7:4433".into(), "[2001:db8::7]:4433".into()],
        ca_fingerprint: [0x11; 32],
        secret: [0x22; 32],
    };
    let golden = "flt1_AhAyMDMuMC4xMTMuNzo0NDMzElsyMDAxOmRiODo6N106NDQzMxERERERERERERERERERERERERERERERERERERERERERIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI";
    assert_eq!(token.encode(), golden, "join token encoding changed");
    assert_eq!(JoinToken::parse(golden).unwrap(), token);
}

/// Kinds, capability bits and ALPNs are wire values too.
#[test]
fn numbered_constants() {
    assert_eq!(ENVELOPE_VERSION, 1);
    assert_eq!(EventKind::METRICS_SAMPLE, EventKind(1));
    assert_eq!(RequestKind::PING, RequestKind(1));
    assert_eq!(RequestKind::RENEW_CERTIFICATE, RequestKind(2));
    assert_eq!(RequestKind::METRICS_NOW, RequestKind(3));
    assert_eq!(Capabilities::METRICS, Capabilities(1));
    assert_eq!(Capabilities::CERT_RENEWAL, Capabilities(2));
    assert_eq!(Capabilities::PROXY_CORE, Capabilities(4));
    assert_eq!(Capabilities::USER_LIFECYCLE, Capabilities(8));
    assert_eq!(EventKind::TRAFFIC_BATCH, EventKind(2));
    assert_eq!(EventKind::CORE_STATUS, EventKind(3));
    assert_eq!(EventKind::USER_EVENT, EventKind(4));
    assert_eq!(RequestKind::APPLY_PROXY_STATE, RequestKind(4));
    assert_eq!(RequestKind::RESTART_CORE, RequestKind(5));
    assert_eq!(RequestKind::CORE_LOGS, RequestKind(6));
    assert_eq!(RequestKind::CORE_STATUS, RequestKind(7));
    assert_eq!(RequestKind::EXPORT_STATE, RequestKind(8));
    assert_eq!(RequestKind::IMPORT_STATE, RequestKind(9));
    assert_eq!(RequestKind::APPLY_USERS, RequestKind(10));
    assert_eq!(RequestKind::LOCAL_USER_CHANGES, RequestKind(11));
    assert_eq!(RequestKind::USER_STATS, RequestKind(12));
    assert_eq!(RequestKind::DNS_STATS, RequestKind(13));
    assert_eq!(RequestKind::RESET_STATS, RequestKind(14));
    assert_eq!(RequestKind::APPLY_WIREGUARD, RequestKind(15));
    assert_eq!(RequestKind::WIREGUARD_STATUS, RequestKind(16));
    assert_eq!(EventKind::WG_TRAFFIC, EventKind(5));
    assert_eq!(EventKind::WG_STATUS, EventKind(6));
    assert_eq!(Capabilities::WIREGUARD, Capabilities(16));
    assert_eq!(RequestKind::UPGRADE_AGENT, RequestKind(17));
    assert_eq!(RequestKind::FETCH_PACKAGE, RequestKind(18));
    assert_eq!(EventKind::AGENT_RELEASE, EventKind(7));
    assert_eq!(Capabilities::SELF_UPGRADE, Capabilities(32));
    assert_eq!(RequestKind::CONTAINER_CREATE, RequestKind(19));
    assert_eq!(RequestKind::CONTAINER_ACTION, RequestKind(20));
    assert_eq!(RequestKind::CONTAINER_STATUS, RequestKind(21));
    assert_eq!(RequestKind::CONTAINER_LIST, RequestKind(22));
    assert_eq!(RequestKind::SNAPSHOT_LIST, RequestKind(23));
    assert_eq!(RequestKind::TASK_STATUS, RequestKind(24));
    assert_eq!(RequestKind::CONSOLE_ACCESS, RequestKind(25));
    assert_eq!(RequestKind::CONSOLE_OPEN, RequestKind(26));
    assert_eq!(EventKind::CONTAINER_TASK, EventKind(8));
    assert_eq!(EventKind::CONTAINER_SAMPLES, EventKind(9));
    assert_eq!(Capabilities::CONTAINERS, Capabilities(64));
    assert_eq!(ALPN_LINK, b"flotilla/1");
    assert_eq!(ALPN_ENROLL, b"flotilla-enroll/1");
}

// ---- proxy cores ------------------------------------------------------------------------------

fn proxy_state() -> ProxyState {
    ProxyState {
        revision: 301,
        inbounds: vec![InboundSpec {
            tag: "inbound-443".into(),
            listen: String::new(),
            port: 443,
            protocol: "vless".into(),
            settings: r#"{"decryption":"none"}"#.into(),
            stream_settings: r#"{"network":"tcp"}"#.into(),
            sniffing: "{}".into(),
            enable: true,
        }],
        clients: vec![ClientSpec {
            inbound_tag: "inbound-443".into(),
            email: "анна@example.com".into(),
            secret: "5783a3e7-e373-51cd-8642-c83782b807c5".into(),
            flow: "xtls-rprx-vision".into(),
            enable: true,
            expiry_ms: 1_735_689_600_000,
            total_bytes: 107_374_182_400,
            reset_generation: 2,
        }],
    }
}

#[test]
fn proxy_state_body() {
    check_body(&proxy_state(), "fb2d01010b696e626f756e642d34343300fbbb0105766c657373157b2264656372797074696f6e223a226e6f6e65227d117b226e6574776f726b223a22746370227d027b7d01010b696e626f756e642d34343314d0b0d0bdd0bdd0b0406578616d706c652e636f6d2435373833613365372d653337332d353163642d383634322d6338333738326238303763351078746c732d727072782d766973696f6e01fd00f8523e28030000fd000000001900000002");
}

#[test]
fn apply_report_body() {
    let report = ApplyReport {
        revision: 301,
        users_added: 300,
        users_removed: 1,
        inbounds_changed: 1,
        core_restarted: true,
        failures: vec![("inbound inbound-8443".into(), "v2ray 4.34 cannot serve REALITY".into())],
    };
    check_body(&report, "fb2d01fb2c010101010114696e626f756e6420696e626f756e642d383434331f763272617920342e33342063616e6e6f74207365727665205245414c495459");
}

#[test]
fn core_status_body_every_state() {
    let states = [
        CoreState::NotInstalled,
        CoreState::Starting,
        CoreState::Running,
        CoreState::Restarting,
        CoreState::Unreachable,
        CoreState::Stopped,
    ];
    let golden = [
        "01010006342e33342e30fc8051010001fb2d010103614078010203624078000363407801010f65786974207374617475733a203233",
        "01010106342e33342e30fc8051010001fb2d010103614078010203624078000363407801010f65786974207374617475733a203233",
        "01010206342e33342e30fc8051010001fb2d010103614078010203624078000363407801010f65786974207374617475733a203233",
        "01010306342e33342e30fc8051010001fb2d010103614078010203624078000363407801010f65786974207374617475733a203233",
        "01010406342e33342e30fc8051010001fb2d010103614078010203624078000363407801010f65786974207374617475733a203233",
        "01010506342e33342e30fc8051010001fb2d010103614078010203624078000363407801010f65786974207374617475733a203233",
    ];
    for (state, golden) in states.into_iter().zip(golden) {
        let status = CoreStatus {
            flavor: Some(CoreFlavor::V2ray),
            state,
            version: "4.34.0".into(),
            uptime_secs: 86_400,
            per_user_stats: true,
            applied_revision: 301,
            online: vec!["a@x".into()],
            online_source: OnlineSource::RecentTraffic,
            cut_off: vec![("b@x".into(), CutOff::Expired), ("c@x".into(), CutOff::Depleted)],
            last_error: Some("exit status: 23".into()),
        };
        check_body(&status, golden);
    }
    for flavor in [CoreFlavor::Xray, CoreFlavor::V2ray, CoreFlavor::SingBox] {
        let golden = match flavor {
            CoreFlavor::Xray => "010000",
            CoreFlavor::V2ray => "010100",
            CoreFlavor::SingBox => "010200",
        };
        check_body(&(Some(flavor), OnlineSource::CoreApi), golden);
    }
}

#[test]
fn traffic_batch_body() {
    let batch = TrafficBatch {
        journal: 0x1234_5678_9abc,
        seq: 300,
        taken_at_ms: 1_717_171_717_171,
        users: vec![UserTraffic { email: "a@x".into(), up: 87, down: 10_485_966 }],
        inbounds: vec![InboundTraffic { tag: "inbound-443".into(), up: 120, down: 10_761_337 }],
    };
    check_body(
        &batch,
        "fdbc9a785634120000fb2c01fd330469cf8f010000010361407857fcce00a000010b696e626f756e642d34343378fc7934a400",
    );
}

#[test]
fn log_bodies() {
    check_body(&LogQuery { count: 100, min_level: LogLevel::Warning }, "6402");
    let lines = vec![
        LogLine { at_ms: 1_717_171_717_171, level: LogLevel::Debug, text: "d".into() },
        LogLine { at_ms: 1_717_171_717_172, level: LogLevel::Info, text: "i".into() },
        LogLine { at_ms: 1_717_171_717_173, level: LogLevel::Warning, text: "w".into() },
        LogLine { at_ms: 1_717_171_717_174, level: LogLevel::Error, text: "e".into() },
    ];
    check_body(
        &lines,
        "04fd330469cf8f010000000164fd340469cf8f010000010169fd350469cf8f010000020177fd360469cf8f010000030165",
    );
}

// ---- node state backups -----------------------------------------------------------------------

#[test]
fn backup_bodies() {
    check_body(
        &StateExport { taken_at_ms: 1_717_171_717_171, sqlite: b"SQLite format 3\0".to_vec() },
        "fd330469cf8f0100001053514c69746520666f726d6174203300",
    );
    check_body(&StateImport { sqlite: vec![0, 255, 7] }, "0300ff07");
    check_body(&ImportReport { clients: 300, revision: 301 }, "fb2c01fb2d01");
}

// ---- per-host user lifecycle --------------------------------------------------------------------

fn golden_client() -> ClientSpec {
    ClientSpec {
        inbound_tag: "vless-in".into(),
        email: "u1".into(),
        secret: "s".into(),
        flow: String::new(),
        enable: true,
        expiry_ms: 0,
        total_bytes: 0,
        reset_generation: 1,
    }
}

#[test]
fn user_lifecycle_bodies() {
    let lifecycle = ClientLifecycle { email: "u1".into(), limit_ip: 2, renew_days: 30, created_ms: 1_717_171_717_171 };
    check_body(
        &DesiredUsers {
            state: ProxyState { revision: 7, inbounds: vec![], clients: vec![golden_client()] },
            lifecycle: vec![lifecycle.clone()],
        },
        "07000108766c6573732d696e0275310173000100000101027531021efd6608d29e1f030000",
    );
    let changes = LocalChanges {
        outbox: 99,
        changes: vec![
            LocalChange {
                id: 1,
                made_at_ms: 1_717_171_717_171,
                change: UserChange::Add { client: golden_client(), lifecycle: lifecycle.clone() },
            },
            LocalChange { id: 2, made_at_ms: 0, change: UserChange::Delete { email: "a".into() } },
            LocalChange { id: 3, made_at_ms: 0, change: UserChange::SetEnabled { email: "a".into(), enable: false } },
            LocalChange { id: 4, made_at_ms: 0, change: UserChange::SetLimitIp { email: "a".into(), limit_ip: 5 } },
            LocalChange { id: 5, made_at_ms: 0, change: UserChange::SetExpiry { email: "a".into(), expiry_ms: 9 } },
            LocalChange { id: 6, made_at_ms: 0, change: UserChange::SetRenew { email: "a".into(), renew_days: 30 } },
            LocalChange { id: 7, made_at_ms: 0, change: UserChange::ResetTraffic { email: None } },
        ],
    };
    check_body(&changes, "630701fd6608d29e1f0300000008766c6573732d696e02753101730001000001027531021efd6608d29e1f030000020001016103000201610004000301610505000401611206000501611e07000600");
    check_body(
        &LocalChangesApplied { through: 7, revision: 8, refused: vec![(2, "gone".into())] },
        "0708010204676f6e65",
    );
    let stats = UserStats {
        sources: vec![SourceStat {
            direction: "inbound".into(),
            tag: "vless-in".into(),
            rate_bps: 8,
            uplink: 1,
            downlink: 2,
            sess_uplink: 3,
            sess_downlink: 4,
        }],
        users: vec![UserStat {
            ips: vec!["10.0.0.1".into()],
            last_seen_ms: Some(5),
            ..UserStat::from_desired(&golden_client(), Some(&lifecycle))
        }],
        per_user_stats: false,
        unavailable: vec!["rate".into()],
    };
    check_body(&stats, "0107696e626f756e6408766c6573732d696e080102030401027531017308766c6573732d696e010a000000000001001e02010831302e302e302e31fd6608d29e1f03000000010472617465");
    check_body(&DnsStatsQuery { user: "u1".into(), count: 20 }, "02753114");
    check_body(
        &vec![DnsStat { user: "u1".into(), domain: "example.com".into(), count: 3 }],
        "010275310b6578616d706c652e636f6d03",
    );
    check_body(&StatsReset::Sessions, "01");
    check_body(
        &UserEvent::IpLimitExceeded { email: "u1".into(), limit: 2, ips: vec!["10.0.0.1".into()], until_ms: 9 },
        "0002753102010831302e302e302e3112",
    );
}

// ---- WireGuard --------------------------------------------------------------------------------

#[test]
fn wireguard_bodies() {
    let (a, b) = (WgKey([1; 32]), WgKey([0xfe; 32]));
    let state = WgState {
        revision: 300,
        interfaces: vec![WgInterfaceSpec {
            name: "wg0".into(),
            private_key: a,
            listen_port: 51820,
            addresses: vec!["10.0.0.1/24".into()],
            mtu: 1420,
            enabled: true,
        }],
        peers: vec![WgPeerSpec {
            interface: "wg0".into(),
            public_key: b,
            preshared_key: None,
            allowed_ips: vec!["10.0.0.2/32".into()],
            enabled: true,
            expiry_ms: 1_717_171_717_171,
            quota_bytes: 1 << 30,
            reset_generation: 1,
        }],
    };
    check_body(&state, "fb2c0101037767300101010101010101010101010101010101010101010101010101010101010101fb6cca010b31302e302e302e312f3234fb8c05010103776730fefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefe00010b31302e302e302e322f333201fd6608d29e1f030000fc0000004001");
    check_body(
        &WgApplyReport {
            revision: 300,
            peers_added: 1,
            peers_removed: 2,
            peers_updated: 3,
            interfaces_changed: 1,
            failures: vec![("wg1".into(), "port in use".into())],
        },
        "fb2c010102030101037767310b706f727420696e20757365",
    );
    check_body(
        &WgTrafficBatch {
            journal: 9,
            seq: 300,
            taken_at_ms: 1_717_171_717_171,
            peers: vec![WgPeerTraffic { interface: "wg0".into(), public_key: b, rx: 1000, tx: 70_000 }],
        },
        "09fb2c01fd330469cf8f0100000103776730fefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefbe803fc70110100",
    );
    let peer = WgPeerRef { interface: "wg0".into(), public_key: b };
    check_body(
        &WgStatus {
            applied_revision: 300,
            backend: "userspace".into(),
            interfaces: vec![
                WgInterfaceStatus { name: "wg0".into(), listen_port: 51820, up: true, error: None },
                WgInterfaceStatus { name: "wg1".into(), listen_port: 51821, up: false, error: Some("port in use".into()) },
            ],
            connected: vec![peer.clone()],
            cut_off: vec![(peer.clone(), WgCutOff::Quota), (peer, WgCutOff::Expired)],
        },
        "fb2c01097573657273706163650203776730fb6cca010003776731fb6dca00010b706f727420696e207573650103776730fefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefe0203776730fefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefe0003776730fefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefe01",
    );
}

// ---- agent self-upgrade -----------------------------------------------------------------------

#[test]
fn upgrade_bodies() {
    let target = PackageRef { version: "0.2.0-1".into(), sha256: [0xab; 32], size: 4_679_676 };
    let rollback = PackageRef { version: "0.1.0-0~previous".into(), sha256: [7; 32], size: 5_354_996 };
    check_body(
        &AgentUpgrade { rollout: RolloutId(300), target: target.clone(), rollback, health_timeout_ms: 120_000 },
        "fb580207302e322e302d31ababababababababababababababababababababababababababababababababfcfc67470010302e312e302d307e70726576696f75730707070707070707070707070707070707070707070707070707070707070707fcf4b55100fcc0d40100",
    );
    check_body(
        &UpgradeStarted { from_version: "0.1.0-1".into(), unit: "flotilla-agent-upgrade-300".into() },
        "07302e312e302d311a666c6f74696c6c612d6167656e742d757067726164652d333030",
    );
    check_body(
        &PackageChunkRequest { sha256: target.sha256, offset: 1 << 20, len: 1 << 20 },
        "ababababababababababababababababababababababababababababababababfc00001000fc00001000",
    );
    check_body(&PackageChunk { data: vec![0x21, 0x3c, 0x61, 0x72] }, "04213c6172");
    let outcome = |result| UpgradeOutcome {
        rollout: RolloutId(-1),
        from_version: "0.1.0-1".into(),
        to_version: "0.2.0-1".into(),
        result,
        finished_at_ms: 1_717_171_717_171,
    };
    check_body(
        &AgentRelease {
            package_version: Some("0.2.0-1".into()),
            upgrading: Some(RolloutId(300)),
            last_upgrade: Some(outcome(UpgradeResult::Upgraded)),
        },
        "0107302e322e302d3101fb5802010107302e312e302d3107302e322e302d3100fd330469cf8f010000",
    );
    check_body(&AgentRelease::default(), "000000");
    check_body(
        &outcome(UpgradeResult::RolledBack { reason: "exited at once, état 1".into() }),
        "0107302e312e302d3107302e322e302d310117657869746564206174206f6e63652c20c3a97461742031fd330469cf8f010000",
    );
    check_body(
        &outcome(UpgradeResult::Failed { reason: "dpkg: error".into() }),
        "0107302e312e302d3107302e322e302d31020b64706b673a206572726f72fd330469cf8f010000",
    );
}

// ---- containers -------------------------------------------------------------------------------

#[test]
fn container_bodies() {
    let spec = |template| ContainerSpec {
        name: "vps-300".into(),
        template,
        cores: 2,
        memory_mib: 1024,
        disk_gb: 10,
        root_password: "pässword".into(),
    };
    check_body(
        &ContainerCreate { spec: spec(OsTemplate::Busybox), user: "alice@flotilla".into() },
        "077670732d3330300002fb00040a0970c3a47373776f72640e616c69636540666c6f74696c6c61",
    );
    check_body(
        &ContainerCreate { spec: spec(OsTemplate::Debian { release: "bookworm".into() }), user: "a".into() },
        "077670732d3330300108626f6f6b776f726d02fb00040a0970c3a47373776f72640161",
    );
    check_body(
        &ContainerCreate {
            spec: spec(OsTemplate::Named { template: "download".into(), args: vec!["-d".into(), "alpine".into()] }),
            user: "a".into(),
        },
        "077670732d3330300208646f776e6c6f616402022d6406616c70696e6502fb00040a0970c3a47373776f72640161",
    );
    let ops = [
        ContainerOp::Start,
        ContainerOp::Stop { timeout_s: 30 },
        ContainerOp::Restart { timeout_s: 300 },
        ContainerOp::Delete,
        ContainerOp::SetPassword { password: "x".into() },
        ContainerOp::Resize { cores: Some(4), memory_mib: None, disk_gb: Some(300) },
        ContainerOp::SnapshotCreate { name: "s1".into(), description: "before".into() },
        ContainerOp::SnapshotRollback { name: "s1".into() },
        ContainerOp::SnapshotDelete { name: "s1".into() },
    ];
    let golden = [
        "077670732d3330300008726f6f744070616d",
        "077670732d333030011e08726f6f744070616d",
        "077670732d33303002fb2c0108726f6f744070616d",
        "077670732d3330300308726f6f744070616d",
        "077670732d33303004017808726f6f744070616d",
        "077670732d3330300501040001fb2c0108726f6f744070616d",
        "077670732d33303006027331066265666f726508726f6f744070616d",
        "077670732d3330300702733108726f6f744070616d",
        "077670732d3330300802733108726f6f744070616d",
    ];
    for (op, golden) in ops.into_iter().zip(golden) {
        check_body(&ContainerAction { name: "vps-300".into(), op, user: "root@pam".into() }, golden);
    }
    let upid = Upid("UPID:nl-1:0003A1B2:0A1B2C3D:6650F00D:vzcreate:vps-300:alice@flotilla:".into());
    check_body(&TaskStarted { upid: upid.clone() }, "45555049443a6e6c2d313a30303033413142323a30413142324333443a36363530463030443a767a6372656174653a7670732d3330303a616c69636540666c6f74696c6c613a");
    check_body(&TaskQuery { upid: upid.clone() }, "45555049443a6e6c2d313a30303033413142323a30413142324333443a36363530463030443a767a6372656174653a7670732d3330303a616c69636540666c6f74696c6c613a");
    check_body(&ContainerQuery { name: "vps-300".into() }, "077670732d333030");
    for (state, golden) in [
        (TaskState::Running, "45555049443a6e6c2d313a30303033413142323a30413142324333443a36363530463030443a767a6372656174653a7670732d3330303a616c69636540666c6f74696c6c613a08767a637265617465077670732d33303000fd330469cf8f01000001fd700769cf8f01000002086372656174696e67075441534b204f4b"),
        (TaskState::Ok, "45555049443a6e6c2d313a30303033413142323a30413142324333443a36363530463030443a767a6372656174653a7670732d3330303a616c69636540666c6f74696c6c613a08767a637265617465077670732d33303001fd330469cf8f01000001fd700769cf8f01000002086372656174696e67075441534b204f4b"),
        (TaskState::Error { message: "disk full".into() }, "45555049443a6e6c2d313a30303033413142323a30413142324333443a36363530463030443a767a6372656174653a7670732d3330303a616c69636540666c6f74696c6c613a08767a637265617465077670732d33303002096469736b2066756c6cfd330469cf8f01000001fd700769cf8f01000002086372656174696e67075441534b204f4b"),
    ] {
        check_body(
            &TaskInfo {
                upid: upid.clone(),
                kind: "vzcreate".into(),
                container: "vps-300".into(),
                state,
                started_ms: 1_717_171_717_171,
                ended_ms: Some(1_717_171_718_000),
                log: vec!["creating".into(), "TASK OK".into()],
            },
            golden,
        );
    }
    let sample = ContainerSample {
        time_ms: 1_717_171_717_171,
        cpu: 0.25,
        mem_used: 536_870_912,
        disk_used: 5_368_709_120,
        net_in: 300,
        net_out: 70_000,
    };
    let status = |state, managed| ContainerStatus {
        name: "vps-300".into(),
        state,
        managed,
        uptime_s: 3600,
        cores: 2,
        mem_max: 1 << 30,
        disk_max: 10 << 30,
        now: sample,
        ipv4: Some("10.0.3.100".into()),
        samples: vec![sample, sample],
    };
    check_body(&status(ContainerState::Running, true), "077670732d3330300001fb100e02fc00000040fd0000008002000000fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100010a31302e302e332e31303002fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100");
    check_body(
        &ContainerList {
            containers: vec![
                status(ContainerState::Stopped, false),
                status(ContainerState::Frozen, true),
                status(ContainerState::Creating, true),
                status(ContainerState::Missing, true),
            ],
        },
        "04077670732d3330300100fb100e02fc00000040fd0000008002000000fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100010a31302e302e332e31303002fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100077670732d3330300201fb100e02fc00000040fd0000008002000000fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100010a31302e302e332e31303002fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100077670732d3330300301fb100e02fc00000040fd0000008002000000fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100010a31302e302e332e31303002fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100077670732d3330300401fb100e02fc00000040fd0000008002000000fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100010a31302e302e332e31303002fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100",
    );
    check_body(
        &SnapshotList {
            snapshots: vec![SnapshotInfo { name: "s1".into(), description: "é".into(), snaptime: 1_704_067_200 }],
        },
        "0102733102c3a9fc80009265",
    );
    check_body(
        &ContainerSamples { containers: vec![("vps-300".into(), ContainerState::Running, sample)] },
        "01077670732d33303000fd330469cf8f010000000000000000d03ffc00000020fd0000004001000000fb2c01fc70110100",
    );
}

#[test]
fn console_bodies() {
    check_body(&ConsoleAccess::Terminal, "00");
    check_body(
        &ConsoleAccess::Url("https://pve:8006/?console=lxc&vmid=101".into()),
        "012668747470733a2f2f7076653a383030362f3f636f6e736f6c653d6c786326766d69643d313031",
    );
    check_body(&ConsoleOpen { name: "vps-1-3fa2c1".into(), cols: 300, rows: 45 }, "0c7670732d312d336661326331fb2c012d");
    check_body(&ConsoleFrame::Data(b"ls\r".to_vec()), "00036c730d");
    check_body(&ConsoleFrame::Resize { cols: 123, rows: 45 }, "017b2d");
    check_body(&ConsoleFrame::Exit(Some(-1)), "020101");
    check_body(&ConsoleFrame::Exit(None), "0200");
}

#[test]
fn file_bodies() {
    use flotilla_protocol::files::{FileAnswer, FileEntry, FileError, FileErrorKind, FileKind, FileOp, FileWrite};
    assert_eq!(RequestKind::FILE_OP, RequestKind(29));
    check_body(&FileOp::Roots, "00");
    check_body(&FileOp::List { path: "/srv/www".into(), show_hidden: true }, "01082f7372762f77777701");
    check_body(
        &FileOp::Read { path: "/srv/www/é.txt".into(), offset: 300, max_bytes: 2_097_152 },
        "020f2f7372762f7777772fc3a92e747874fb2c01fc00002000",
    );
    check_body(
        &FileOp::Write(FileWrite {
            path: "a".into(),
            content: b"hi".to_vec(),
            create_only: false,
            upload: 7,
            offset: 251,
            finish: true,
        }),
        "0301610268690007fbfb0001",
    );
    check_body(
        &FileOp::Create { parent: "/srv".into(), name: "d".into(), kind: FileKind::Directory, content: vec![] },
        "04042f73727601640100",
    );
    check_body(
        &FileOp::Delete { paths: vec!["/srv/a".into(), "b".into()], recursive: true },
        "0502062f7372762f61016201",
    );
    check_body(&FileAnswer::Roots { dirs: vec!["/srv/www".into()] }, "0001082f7372762f777777");
    check_body(
        &FileAnswer::List {
            entries: vec![FileEntry {
                name: "index.php".into(),
                kind: FileKind::File,
                size: 4096,
                mode: 0o644,
                owner: "www-data".into(),
                group: "1001".into(),
                modified_ms: -1,
            }],
        },
        "010109696e6465782e70687000fb0010fba401087777772d64617461043130303101",
    );
    check_body(
        &FileAnswer::Content { bytes: vec![0xff, 0], size: 300, truncated: true, modified_ms: 1 },
        "0202ff00fb2c010102",
    );
    check_body(&FileAnswer::Done, "03");
    for (i, kind) in [
        FileErrorKind::Forbidden,
        FileErrorKind::NotFound,
        FileErrorKind::BadInput,
        FileErrorKind::Exists,
        FileErrorKind::TooLarge,
        FileErrorKind::Failed,
    ]
    .into_iter()
    .enumerate()
    {
        let golden = ["04000178", "04010178", "04020178", "04030178", "04040178", "04050178"][i];
        check_body(&FileAnswer::Error(FileError { kind, message: "x".into() }), golden);
    }
}

#[test]
fn file_trash_bodies() {
    use flotilla_protocol::files::{
        FileAnswer, FileError, FileErrorKind, FileKind, FileOp, TrashEntry, TrashRootStats,
    };
    check_body(&FileOp::Trash { paths: vec!["/srv/a".into(), "b".into()] }, "0602062f7372762f610162");
    check_body(&FileOp::TrashList { page: 2, limit: 300 }, "0702fb2c01");
    check_body(&FileOp::TrashStats, "08");
    check_body(&FileOp::TrashRestore { id: "0f".into() }, "09023066");
    check_body(&FileOp::TrashDelete { id: "0f".into() }, "0a023066");
    check_body(&FileOp::TrashEmpty, "0b");
    let entry = TrashEntry {
        id: "00112233445566778899aabbccddeeff".into(),
        root: "/srv".into(),
        original_path: "/srv/a".into(),
        kind: FileKind::Directory,
        size: 4096,
        deleted_ms: 1_772_884_800_000,
    };
    check_body(&FileAnswer::Trashed { entries: vec![entry.clone()] }, "0501203030313132323333343435353636373738383939616162626363646465656666042f737276062f7372762f6101fb0010fd0064569039030000");
    check_body(&FileAnswer::TrashList { entries: vec![entry.clone()], total: 7 }, "0601203030313132323333343435353636373738383939616162626363646465656666042f737276062f7372762f6101fb0010fd006456903903000007");
    check_body(
        &FileAnswer::TrashStats { roots: vec![TrashRootStats { root: "/srv".into(), count: 1, bytes: 300 }] },
        "0701042f73727601fb2c01",
    );
    check_body(&FileAnswer::Restored(entry), "08203030313132323333343435353636373738383939616162626363646465656666042f737276062f7372762f6101fb0010fd0064569039030000");
    check_body(&FileAnswer::TrashRemoved { count: 2, bytes: 70_000 }, "0902fc70110100");
    check_body(&FileAnswer::Error(FileError { kind: FileErrorKind::Conflict, message: "x".into() }), "04060178");
}

#[test]
fn bandwidth_bodies() {
    use flotilla_protocol::bandwidth::{BandwidthQuery, BandwidthReport, DayUsage, InterfaceUsage};
    assert_eq!(RequestKind::BANDWIDTH, RequestKind(30));
    check_body(&BandwidthQuery { month: None }, "00");
    check_body(&BandwidthQuery { month: Some("2026-03".into()) }, "0107323032362d3033");
    let eth0 = InterfaceUsage { interface: "eth0".into(), rx_bytes: 10_737_418_240, tx_bytes: 251 };
    check_body(
        &BandwidthReport {
            month: "2026-03".into(),
            interfaces: vec![eth0.clone()],
            days: vec![DayUsage { day: "2026-03-07".into(), usage: eth0 }],
            sampled_at_ms: 1_772_841_600_000,
        },
        "07323032362d3033010465746830fd0000008002000000fbfb00010a323032362d30332d30370465746830fd0000008002000000fbfb00fd000498c59c010000",
    );
}

#[test]
fn services_bodies() {
    use flotilla_protocol::services::{
        ServiceAction, ServiceActionResult, ServiceFailed, ServiceInfo, ServiceList, ServiceOp, ServiceQuery,
        ServiceState,
    };
    assert_eq!(RequestKind::SERVICES_LIST, RequestKind(27));
    assert_eq!(RequestKind::SERVICE_ACTION, RequestKind(28));
    assert_eq!(EventKind::SERVICE_FAILED, EventKind(10));
    assert_eq!(Capabilities::SERVICES, Capabilities(128));
    let nginx = ServiceInfo {
        name: "nginx".into(),
        unit: "nginx.service".into(),
        display_name: "A high performance web server — nginx".into(),
        state: ServiceState::Active,
        sub_state: "running".into(),
        pid: Some(70_000),
        uptime_s: Some(864_000),
        cpu_percent: Some(0.5),
        memory_bytes: Some(134_217_728),
        enabled: true,
        unit_file_state: "enabled".into(),
    };
    let stopped = ServiceInfo {
        name: "mysql".into(),
        unit: "mariadb.service".into(),
        display_name: "MariaDB".into(),
        state: ServiceState::Other("maintenance".into()),
        sub_state: "dead".into(),
        pid: None,
        uptime_s: None,
        cpu_percent: None,
        memory_bytes: None,
        enabled: false,
        unit_file_state: "disabled".into(),
    };
    check_body(&ServiceQuery { name: None }, "00");
    check_body(&ServiceQuery { name: Some("php-fpm".into()) }, "01077068702d66706d");
    check_body(&ServiceList { services: vec![nginx.clone(), stopped] }, "02056e67696e780d6e67696e782e736572766963652741206869676820706572666f726d616e6365207765622073657276657220e28094206e67696e78000772756e6e696e6701fc7011010001fc002f0d00010000003f01fc000000080107656e61626c6564056d7973716c0f6d6172696164622e73657276696365074d617269614442060b6d61696e74656e616e6365046465616400000000000864697361626c6564");
    check_body(&ServiceAction { name: "mysql".into(), action: ServiceOp::Restart }, "056d7973716c02");
    check_body(
        &ServiceAction { name: "nginx.service".into(), action: ServiceOp::Stop },
        "0d6e67696e782e7365727669636501",
    );
    check_body(&ServiceActionResult { job_result: "done".into(), service: nginx }, "04646f6e65056e67696e780d6e67696e782e736572766963652741206869676820706572666f726d616e6365207765622073657276657220e28094206e67696e78000772756e6e696e6701fc7011010001fc002f0d00010000003f01fc000000080107656e61626c6564");
    check_body(
        &ServiceFailed { unit: "flt-fail.service".into(), message: "failed (Result: exit-code, status 1)".into() },
        "10666c742d6661696c2e73657276696365246661696c65642028526573756c743a20657869742d636f64652c20737461747573203129",
    );
    for (state, golden) in [(ServiceState::Failed, "03"), (ServiceState::Inactive, "02")] {
        check_body(&state, golden);
    }
}
