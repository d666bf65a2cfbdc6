//! The envelope and the messages it carries.
//!
//! Streams of one link:
//! - the *control stream*, the first bi-stream the agent opens: `Hello` → `Welcome` | `Upgrade`,
//!   then heartbeats (controller → agent, echoed back) and events (agent → controller, acked);
//! - one bi-stream per RPC, opened by either side: `Request` → `Response`.
//!
//! Enrollment uses its own ALPN and exactly one bi-stream: `Enroll` → `Enrolled` | `EnrollRefused`.

use serde::{Deserialize, Serialize};

use crate::enroll::{EnrollRefused, EnrollRequest, Enrolled};
use crate::facts::HostFacts;
use crate::ids::NodeId;
use crate::rpc::{Request, Response};

/// Version of the envelope layout itself. Bumped only if `Envelope` changes shape.
pub const ENVELOPE_VERSION: u16 = 1;

/// Everything on the wire is one of these, length-prefixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub message: Message,
}

impl Envelope {
    /// Wraps a message in the current envelope version.
    pub fn new(message: Message) -> Self {
        Envelope { version: ENVELOPE_VERSION, message }
    }
}

/// All message types. New variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    Upgrade(Upgrade),
    Heartbeat(Heartbeat),
    HeartbeatAck(Heartbeat),
    Event(Event),
    EventAck(EventAck),
    Request(Request),
    Response(Response),
    Enroll(EnrollRequest),
    Enrolled(Enrolled),
    EnrollRefused(EnrollRefused),
}

impl Message {
    /// Short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Welcome(_) => "Welcome",
            Message::Upgrade(_) => "Upgrade",
            Message::Heartbeat(_) => "Heartbeat",
            Message::HeartbeatAck(_) => "HeartbeatAck",
            Message::Event(_) => "Event",
            Message::EventAck(_) => "EventAck",
            Message::Request(_) => "Request",
            Message::Response(_) => "Response",
            Message::Enroll(_) => "Enroll",
            Message::Enrolled(_) => "Enrolled",
            Message::EnrollRefused(_) => "EnrollRefused",
        }
    }
}

/// A protocol version; peers with the same major interoperate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Feature bits an agent announces. Unknown bits are ignored, so this grows without a new type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// Pushes `MetricsSample` events.
    pub const METRICS: Capabilities = Capabilities(1 << 0);
    /// Answers and sends certificate renewal RPCs.
    pub const CERT_RENEWAL: Capabilities = Capabilities(1 << 1);
    /// Drives a proxy core: answers `APPLY_PROXY_STATE`, ships traffic batches.
    pub const PROXY_CORE: Capabilities = Capabilities(1 << 2);
    /// Keeps per-user lifecycle (IP limits, renewals) and a local user API: answers
    /// `APPLY_USERS`, `USER_STATS`, `DNS_STATS`, `RESET_STATS`; sends `LOCAL_USER_CHANGES`.
    pub const USER_LIFECYCLE: Capabilities = Capabilities(1 << 3);
    /// Drives WireGuard: answers `APPLY_WIREGUARD` and `WIREGUARD_STATUS`, sends `WG_TRAFFIC`
    /// and `WG_STATUS` events.
    pub const WIREGUARD: Capabilities = Capabilities(1 << 4);
    /// Runs from the Debian package under systemd and answers `UPGRADE_AGENT`.
    pub const SELF_UPGRADE: Capabilities = Capabilities(1 << 5);
    /// Runs containers: answers `CONTAINER_*`, `SNAPSHOT_LIST` and `TASK_STATUS`, sends
    /// `CONTAINER_TASK` and `CONTAINER_SAMPLES` events.
    pub const CONTAINERS: Capabilities = Capabilities(1 << 6);
    /// Drives systemd services over D-Bus: answers `SERVICES_LIST` and `SERVICE_ACTION`, sends
    /// `SERVICE_FAILED` events.
    pub const SERVICES: Capabilities = Capabilities(1 << 7);
    /// Serves files inside its configured roots: answers `FILE_OP`.
    pub const FILES: Capabilities = Capabilities(1 << 8);
    /// Keeps per-interface byte totals: answers `BANDWIDTH`.
    pub const BANDWIDTH: Capabilities = Capabilities(1 << 9);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, rhs: Self) -> Self {
        Capabilities(self.0 | rhs.0)
    }
}

/// First message of a link, agent → controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: ProtocolVersion,
    pub agent_version: String,
    /// The node id the agent believes it is; must match its certificate.
    pub node_id: NodeId,
    pub capabilities: Capabilities,
    pub facts: HostFacts,
    /// Revision of the desired state the agent last applied (0 = none yet).
    pub applied_revision: u64,
}

/// The controller accepts the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: ProtocolVersion,
    pub controller_version: String,
    pub node_id: NodeId,
    pub node_name: String,
    /// How often the controller will send heartbeats; the agent declares the link dead after
    /// several intervals of silence.
    pub heartbeat_interval_ms: u32,
    /// Revision of the node's desired state held by the controller.
    pub desired_revision: u64,
    /// Controller wall clock, Unix milliseconds (lets the agent notice clock skew).
    pub server_time_ms: u64,
}

/// The controller refuses the session because the agent is too old (or too new).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upgrade {
    pub min_version: ProtocolVersion,
    pub max_version: ProtocolVersion,
    pub message: String,
}

/// Controller → agent liveness probe, echoed back unchanged in `HeartbeatAck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub seq: u64,
    /// Sender's monotonic clock, microseconds; only the sender interprets it.
    pub sent_at_us: u64,
}

/// Kind of telemetry event. A number, so an older controller can skip kinds it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventKind(pub u16);

impl EventKind {
    /// Body: [`crate::metrics::MetricsSample`].
    pub const METRICS_SAMPLE: EventKind = EventKind(1);
    /// Body: [`crate::proxy::TrafficBatch`]; acked only once committed.
    pub const TRAFFIC_BATCH: EventKind = EventKind(2);
    /// Body: [`crate::proxy::CoreStatus`].
    pub const CORE_STATUS: EventKind = EventKind(3);
    /// Agent → controller: [`crate::users::UserEvent`] (a user the agent disabled by itself).
    pub const USER_EVENT: EventKind = EventKind(4);
    /// Agent → controller: [`crate::wireguard::WgTrafficBatch`]; acked only once committed.
    pub const WG_TRAFFIC: EventKind = EventKind(5);
    /// Agent → controller: [`crate::wireguard::WgStatus`], whenever it changes.
    pub const WG_STATUS: EventKind = EventKind(6);
    /// Agent → controller, first on every session: [`crate::upgrade::AgentRelease`].
    pub const AGENT_RELEASE: EventKind = EventKind(7);
    /// Agent → controller: [`crate::containers::TaskInfo`] when a container task starts or ends.
    pub const CONTAINER_TASK: EventKind = EventKind(8);
    /// Agent → controller: [`crate::containers::ContainerSamples`] on every stats sample.
    pub const CONTAINER_SAMPLES: EventKind = EventKind(9);
    /// Agent → controller: [`crate::services::ServiceFailed`] when an allowed unit enters the
    /// `failed` state.
    pub const SERVICE_FAILED: EventKind = EventKind(10);
}

/// Agent → controller telemetry. `seq` increases per agent; the controller acks what it has
/// committed so the agent can drop it (exactly-once accounting for journal kinds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub seq: u64,
    /// bincode of the kind's body type.
    pub body: Vec<u8>,
}

/// Controller → agent: every event up to and including `seq` is durable on the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAck {
    pub seq: u64,
}
