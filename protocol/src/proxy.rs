//! Proxy cores (Xray, v2ray, sing-box): the desired inbounds and clients the controller pushes,
//! the traffic journal batches the agent ships back, and the core's reported state.
//!
//! Inbound settings travel as JSON text in the 3x-ui shapes (`settings` without its client list,
//! `streamSettings`, `sniffing`): the agent turns them into the core's own config, and bincode
//! cannot carry a self-describing JSON value anyway.

use serde::{Deserialize, Serialize};

/// Which proxy core a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CoreFlavor {
    Xray,
    V2ray,
    SingBox,
}

impl CoreFlavor {
    /// Lower-case name (`xray`, `v2ray`, `sing-box`), also the binary's usual name.
    pub fn as_str(self) -> &'static str {
        match self {
            CoreFlavor::Xray => "xray",
            CoreFlavor::V2ray => "v2ray",
            CoreFlavor::SingBox => "sing-box",
        }
    }
}

/// One inbound of a node's core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundSpec {
    /// The core's inbound tag; clients and counters refer to it.
    pub tag: String,
    /// Listen address ("" = all addresses).
    pub listen: String,
    pub port: u16,
    /// `vless`, `vmess`, `trojan`, `shadowsocks`, …
    pub protocol: String,
    /// JSON object: the 3x-ui `settings` minus `clients` (e.g. `{"decryption":"none"}`).
    pub settings: String,
    /// JSON object: the 3x-ui `streamSettings` (`{}` = plain TCP).
    pub stream_settings: String,
    /// JSON object: the 3x-ui `sniffing` (`{}` = off).
    pub sniffing: String,
    /// A disabled inbound is not configured on the core at all.
    pub enable: bool,
}

/// One client (user) of an inbound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSpec {
    pub inbound_tag: String,
    /// Unique per node (cores count traffic per email).
    pub email: String,
    /// UUID for vless/vmess, password for trojan/shadowsocks.
    pub secret: String,
    /// VLESS flow (`""` or `xtls-rprx-vision`).
    pub flow: String,
    pub enable: bool,
    /// Unix milliseconds after which the client is cut off; 0 = never.
    pub expiry_ms: i64,
    /// Traffic quota in bytes (up + down); 0 = unlimited.
    pub total_bytes: u64,
    /// Bumped by the controller at every traffic reset: the agent zeroes its local usage of the
    /// client when it sees a newer generation, so quotas restart with the controller's counters.
    pub reset_generation: u32,
}

/// Everything the controller wants on a node's core. Pushed whole; the agent diffs it against
/// what it applied and changes only what differs (one user at a time on the live core).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyState {
    /// The node's desired-state revision; an agent ignores a push older than what it applied.
    pub revision: u64,
    pub inbounds: Vec<InboundSpec>,
    pub clients: Vec<ClientSpec>,
}

/// What applying a [`ProxyState`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Revision now applied on the agent.
    pub revision: u64,
    pub users_added: u32,
    pub users_removed: u32,
    pub inbounds_changed: u32,
    /// The core had to be restarted (inbound set changed) or reloaded (sing-box).
    pub core_restarted: bool,
    /// Items the core refused, as (what, why). The rest of the state is applied.
    pub failures: Vec<(String, String)>,
}

/// Lifecycle state of the core process as the agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoreState {
    /// No core binary configured or found on the host.
    NotInstalled,
    Starting,
    /// Running and answering its API.
    Running,
    /// Exited; the supervisor will restart it after a backoff.
    Restarting,
    /// Managed elsewhere (external mode) and not answering its API.
    Unreachable,
    Stopped,
}

impl CoreState {
    /// Lower-case name as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            CoreState::NotInstalled => "not_installed",
            CoreState::Starting => "starting",
            CoreState::Running => "running",
            CoreState::Restarting => "restarting",
            CoreState::Unreachable => "unreachable",
            CoreState::Stopped => "stopped",
        }
    }
}

/// How the agent knows which clients are online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnlineSource {
    /// The core's online-user API (Xray's `GetAllOnlineUsers`).
    CoreApi,
    /// Traffic seen in the last two stats polls (cores without an online API).
    RecentTraffic,
}

/// Why the agent took a client off the core on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CutOff {
    Expired,
    Depleted,
}

/// Snapshot of the node's core, pushed as a `CORE_STATUS` event on change and on request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreStatus {
    pub flavor: Option<CoreFlavor>,
    pub state: CoreState,
    pub version: String,
    /// Seconds since the core process started (0 when not running).
    pub uptime_secs: u64,
    /// Per-user counters are available (false for sing-box builds without the v2ray API).
    pub per_user_stats: bool,
    /// Revision of the desired state applied on the core.
    pub applied_revision: u64,
    pub online: Vec<String>,
    pub online_source: OnlineSource,
    /// Clients the agent removed from the core by itself (expiry or quota).
    pub cut_off: Vec<(String, CutOff)>,
    /// Last error of the core or the supervisor, if any.
    pub last_error: Option<String>,
}

/// Traffic of one client since the previous batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTraffic {
    pub email: String,
    pub up: u64,
    pub down: u64,
}

/// Traffic of one inbound since the previous batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundTraffic {
    pub tag: String,
    pub up: u64,
    pub down: u64,
}

/// One row of the agent's traffic journal (`TRAFFIC_BATCH` event). The controller applies a
/// batch only if `seq` is beyond the last one it committed for this `journal` and acks after its
/// commit; the agent deletes rows only once acked. Together: exactly-once across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficBatch {
    /// Random id of the agent's journal, fixed when its store was created: a re-enrolled or
    /// wiped agent starts a new journal whose `seq` restarts at 1.
    pub journal: u64,
    pub seq: u64,
    /// Unix milliseconds of the poll.
    pub taken_at_ms: u64,
    pub users: Vec<UserTraffic>,
    pub inbounds: Vec<InboundTraffic>,
}

/// Log severity of a core log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    /// Lower-case name (`debug`, `info`, `warning`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        }
    }

    /// Parses the API's level names (`warn` accepted for `warning`).
    pub fn parse(s: &str) -> Option<LogLevel> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warning" | "warn" => Some(LogLevel::Warning),
            "error" => Some(LogLevel::Error),
            _ => None,
        }
    }
}

/// `CORE_LOGS` request: the last `count` lines at `min_level` or above.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    pub count: u32,
    pub min_level: LogLevel,
}

/// One captured core log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub at_ms: u64,
    pub level: LogLevel,
    pub text: String,
}
