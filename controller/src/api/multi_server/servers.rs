//! `/api/v1/servers/…`: status and availability from the live agents.
//!
//! Shapes follow the document and the original manager: an unavailable node carries an `error`
//! string; percentages have two decimals; `xray.version` is always a string.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::{existing_node, node_call_error, ApiError, BasicUser, ErrorBody, NodeIdPath, Query, TAG};
use crate::api::{timestamp, AppState};
use crate::fleet::push::PUSH_TIMEOUT;
use crate::fleet::NodeLive;
use crate::store::NodeRecord;
use flotilla_protocol::codec;
use flotilla_protocol::facts::HostFacts;
use flotilla_protocol::proxy::{CoreState, CoreStatus, LogLevel, LogLine, LogQuery};
use flotilla_protocol::rpc::RequestKind;

fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        ((used as f64 / total as f64) * 10_000.0).round() / 100.0
    }
}

/// Why a node is not available, for the `error` field.
fn unavailable_reason(node: &NodeRecord, last_seen: Option<OffsetDateTime>) -> String {
    match (node.enrolled_at, last_seen) {
        (None, _) => "agent not enrolled yet".to_string(),
        (Some(_), Some(seen)) => format!("agent not connected (last seen {})", timestamp(seen)),
        (Some(_), None) => "agent not connected".to_string(),
    }
}

/// The live view of a node, falling back to what the store kept from earlier sessions.
struct View<'a> {
    node: &'a NodeRecord,
    live: NodeLive,
    last_seen: Option<OffsetDateTime>,
}

impl<'a> View<'a> {
    fn of(state: &AppState, node: &'a NodeRecord) -> Self {
        let live = state.fleet.live(node.id);
        let last_seen = live.last_seen.or(node.last_seen_at);
        View { node, live, last_seen }
    }

    /// The common head of both row shapes, plus `error` when unavailable.
    fn head(&self, timestamp_at: OffsetDateTime) -> ServerHead {
        ServerHead {
            node: self.node.name.clone(),
            node_id: self.node.id.0,
            available: self.live.connected,
            timestamp: timestamp(timestamp_at),
            last_seen: self.last_seen.map(timestamp),
            error: (!self.live.connected).then(|| unavailable_reason(self.node, self.last_seen)),
        }
    }
}

/// The fields every row of `/servers/status` and `/servers/availability` starts with.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerHead {
    /// Name of the node.
    pub node: String,
    pub node_id: i64,
    /// Its agent's link is up.
    pub available: bool,
    /// When the row's data was taken (UTC, `YYYY-MM-DDTHH:MM:SS`): now for an available node, else
    /// its last metrics sample or contact.
    pub timestamp: String,
    /// When its agent was last heard from; null if never.
    pub last_seen: Option<String>,
    /// Why the node is not available; only on unavailable rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub error: Option<String>,
}

/// Used, total and percentage (two decimals) of a resource, in bytes.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub current: u64,
    pub total: u64,
    pub percent: f64,
}

impl Usage {
    fn of(used: u64, total: u64) -> Self {
        Usage { current: used, total, percent: percent(used, total) }
    }
}

/// The host's last metrics sample.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemStats {
    /// Whole-host CPU use in percent, one decimal.
    pub cpu: f64,
    pub mem: Usage,
    pub swap: Usage,
    /// The filesystem mounted at `/`.
    pub disk: Usage,
    /// Host uptime, seconds.
    pub uptime: u64,
    /// 1, 5 and 15 minute load averages.
    #[schema(min_items = 3, max_items = 3)]
    pub loads: [f64; 3],
}

/// Bytes the host sent and received since it booted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Network {
    pub upload: u64,
    pub download: u64,
}

/// Facts about the host its agent reported.
#[derive(Debug, Serialize, ToSchema)]
pub struct Host {
    pub hostname: String,
    /// Distribution name and version, e.g. "Debian GNU/Linux 12".
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpu_model: String,
    pub cpu_cores: u32,
    /// Globally routable addresses on the host's interfaces.
    pub public_ips: Vec<String>,
    /// Every other non-loopback address (private ranges, CGNAT, ULA).
    pub private_ips: Vec<String>,
}

impl From<&HostFacts> for Host {
    fn from(f: &HostFacts) -> Self {
        Host {
            hostname: f.hostname.clone(),
            os: f.os.clone(),
            kernel: f.kernel.clone(),
            arch: f.arch.clone(),
            cpu_model: f.cpu_model.clone(),
            cpu_cores: f.cpu_cores,
            public_ips: f.public_ips.iter().map(ToString::to_string).collect(),
            private_ips: f.private_ips.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The node's proxy core (named `xray` as in the document, whichever core it is).
#[derive(Debug, Serialize, ToSchema)]
pub struct CoreBlock {
    /// `running`, `starting`, `restarting`, `stopped`, `unreachable` (the node is away) or
    /// `not_installed`.
    pub state: String,
    pub running: bool,
    /// The core's version; empty when unknown.
    pub version: String,
    /// Seconds since the core started; 0 when not running.
    pub uptime: u64,
    /// `xray`, `v2ray` or `sing-box`; absent while the core was never seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub core: Option<Option<String>>,
    /// The core counts traffic per user; only while the node is connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = bool, required = false)]
    pub per_user_stats: Option<bool>,
    /// The core's or its supervisor's last error; only while the node is connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub error: Option<Option<String>>,
}

/// One row of `GET /api/v1/servers/status`, and the answer of `GET /api/v1/servers/{node_id}/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerStatus {
    #[serde(flatten)]
    pub head: ServerHead,
    /// Null until the node's agent sent metrics.
    pub system: Option<SystemStats>,
    pub xray: CoreBlock,
    /// Null until the node's agent sent metrics.
    pub network: Option<Network>,
    /// Null until the node's agent reported its host.
    pub host: Option<Host>,
    /// Version of the node's agent; null while it is not connected.
    pub agent_version: Option<String>,
}

/// `GET /api/v1/servers/status` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerStatusList {
    pub count: usize,
    pub servers: Vec<ServerStatus>,
}

/// One row of `GET /api/v1/servers/availability`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Availability {
    #[serde(flatten)]
    pub head: ServerHead,
    /// Round trip of the last heartbeat over the agent's link, milliseconds (two decimals); null
    /// when not connected.
    pub latency_ms: Option<f64>,
    /// 200 when connected, else null.
    pub status_code: Option<u16>,
}

/// `GET /api/v1/servers/availability` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AvailabilityList {
    pub availability: Vec<Availability>,
}

/// `POST /api/v1/servers/{node_id}/restart-xray` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestartResult {
    /// The core runs again.
    pub success: bool,
    pub node: String,
    pub state: String,
    pub version: String,
    pub error: Option<String>,
}

/// One log line of the core.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogEntry {
    /// Unix milliseconds.
    pub time: u64,
    /// `debug`, `info`, `warning` or `error`.
    pub level: String,
    pub message: String,
}

/// `GET /api/v1/servers/{node_id}/logs` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Logs {
    pub node: String,
    pub count: usize,
    /// The lowest level returned.
    pub level: String,
    /// The lines' text, oldest first.
    pub logs: Vec<String>,
    /// The same lines with their time and level.
    pub entries: Vec<LogEntry>,
}

/// The documented server status object.
pub(crate) fn server_status(state: &AppState, node: &NodeRecord) -> ServerStatus {
    let view = View::of(state, node);
    let metrics = view.live.metrics.as_ref().or(node.last_metrics.as_ref());
    let sampled_at =
        metrics.and_then(|m| OffsetDateTime::from_unix_timestamp_nanos(m.taken_at_ms as i128 * 1_000_000).ok());
    let at = if view.live.connected {
        OffsetDateTime::now_utc()
    } else {
        sampled_at.or(view.last_seen).unwrap_or(node.created_at)
    };
    ServerStatus {
        head: view.head(at),
        system: metrics.map(|m| SystemStats {
            cpu: (m.cpu_percent as f64 * 10.0).round() / 10.0,
            mem: Usage::of(m.mem_used, m.mem_total),
            swap: Usage::of(m.swap_used, m.swap_total),
            disk: Usage::of(m.disk_used, m.disk_total),
            uptime: m.uptime_secs,
            loads: m.load,
        }),
        xray: core_block(&view.live),
        network: metrics.map(|m| Network { upload: m.net_tx_bytes, download: m.net_rx_bytes }),
        host: view.live.facts.as_ref().or(node.facts.as_ref()).map(Host::from),
        agent_version: view.live.agent_version.clone(),
    }
}

/// The `xray` block: the node's proxy core as its agent last reported it.
fn core_block(live: &NodeLive) -> CoreBlock {
    let flavor = |core: &CoreStatus| Some(core.flavor.map(|f| f.as_str().to_string()));
    match (&live.core, live.connected) {
        (Some(core), true) => CoreBlock {
            state: core.state.as_str().into(),
            running: core.state == CoreState::Running,
            version: core.version.clone(),
            uptime: if core.state == CoreState::Running {
                core.uptime_secs + live.core_reported_at.map(|t| t.elapsed().as_secs()).unwrap_or(0)
            } else {
                0
            },
            core: flavor(core),
            per_user_stats: Some(core.per_user_stats),
            error: Some(core.last_error.clone()),
        },
        // Seen earlier, but the node is away now: what its core does is unknown.
        (Some(core), false) => CoreBlock {
            state: CoreState::Unreachable.as_str().into(),
            running: false,
            version: core.version.clone(),
            uptime: 0,
            core: flavor(core),
            per_user_stats: None,
            error: None,
        },
        (None, connected) => CoreBlock {
            state: if connected && live.proxy_capable { "starting" } else { "not_installed" }.into(),
            running: false,
            version: String::new(),
            uptime: 0,
            core: None,
            per_user_stats: None,
            error: None,
        },
    }
}

/// Calls the node's agent; offline or core-less nodes are a clear 4xx, not a 500.
async fn core_call(state: &AppState, node: &NodeRecord, kind: RequestKind, body: Vec<u8>) -> Result<Vec<u8>, ApiError> {
    let live = state.fleet.live(node.id);
    if !live.connected {
        return Err(ApiError::Conflict(format!("node {} ({}) is not connected", node.id, node.name)));
    }
    if !live.proxy_capable {
        return Err(ApiError::Conflict(format!("node {} ({}) has no proxy core", node.id, node.name)));
    }
    state.fleet.call(node.id, kind, body, PUSH_TIMEOUT).await.map_err(|e| node_call_error(node, e))
}

/// Restart the node's proxy core, and wait for it to run again.
#[utoipa::path(
    post,
    path = "/api/v1/servers/{node_id}/restart-xray",
    operation_id = "restart_core",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id (a positive integer)", minimum = 1)),
    responses(
        (
            status = 200, description = "The core's state after the restart", body = RestartResult,
            example = json!({ "success": true, "node": "Server-NL", "state": "running", "version": "1.8.6", "error": null }),
        ),
        (status = 400, description = "`node_id` is not a positive integer", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "The node is not connected, has no proxy core, or its agent refused", body = ErrorBody),
    ),
)]
pub async fn restart_core(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<RestartResult>, ApiError> {
    let node = existing_node(&state, id)?;
    let answer = core_call(&state, &node, RequestKind::RESTART_CORE, vec![]).await?;
    let status: CoreStatus = codec::decode_from(&answer).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(RestartResult {
        success: status.state == CoreState::Running,
        node: node.name,
        state: status.state.as_str().into(),
        version: status.version,
        error: status.last_error,
    }))
}

/// `?count=&level=` of the logs endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Lines to return, 1 to 10000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    count: Option<String>,
    /// Lowest level returned: `debug`, `info` (default), `warning` or `error`.
    level: Option<String>,
}

/// Read the last lines of the node's proxy core log.
#[utoipa::path(
    get,
    path = "/api/v1/servers/{node_id}/logs",
    operation_id = "core_logs",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id (a positive integer)", minimum = 1), LogsQuery),
    responses(
        (status = 200, description = "The lines, oldest first", body = Logs, example = logs_example),
        (status = 400, description = "Bad `node_id`, `count` or `level`", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "The node is not connected, has no proxy core, or its agent refused", body = ErrorBody),
    ),
)]
pub async fn logs(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
    Query(q): Query<LogsQuery>,
) -> Result<Json<Logs>, ApiError> {
    let node = existing_node(&state, id)?;
    let count = match q.count.as_deref() {
        None | Some("") => 100,
        Some(c) => c
            .parse::<u32>()
            .ok()
            .filter(|c| (1..=10_000).contains(c))
            .ok_or_else(|| ApiError::BadRequest(format!("count: must be an integer from 1 to 10000, got {c:?}")))?,
    };
    let level = match q.level.as_deref() {
        None | Some("") => LogLevel::Info,
        Some(l) => LogLevel::parse(l)
            .ok_or_else(|| ApiError::BadRequest(format!("level: must be debug, info, warning or error, got {l:?}")))?,
    };
    let body =
        codec::encode_body(&LogQuery { count, min_level: level }).map_err(|e| ApiError::Internal(e.to_string()))?;
    let answer = core_call(&state, &node, RequestKind::CORE_LOGS, body).await?;
    let lines: Vec<LogLine> = codec::decode_from(&answer).map_err(|e| ApiError::Internal(e.to_string()))?;
    let logs: Vec<String> = lines.iter().map(|l| l.text.clone()).collect();
    let entries: Vec<LogEntry> = lines
        .into_iter()
        .map(|l| LogEntry { time: l.at_ms, level: l.level.as_str().into(), message: l.text })
        .collect();
    Ok(Json(Logs { node: node.name, count: logs.len(), level: level.as_str().into(), logs, entries }))
}

/// Get the status of every node: its host's metrics and its proxy core.
#[utoipa::path(
    get,
    path = "/api/v1/servers/status",
    operation_id = "servers_status",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "One row per node", body = ServerStatusList, example = status_list_example),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
    ),
)]
pub async fn status_all(_: BasicUser, State(state): State<AppState>) -> Result<Json<ServerStatusList>, ApiError> {
    let servers: Vec<ServerStatus> = state.store.nodes()?.iter().map(|n| server_status(&state, n)).collect();
    Ok(Json(ServerStatusList { count: servers.len(), servers }))
}

/// Get the status of one node.
#[utoipa::path(
    get,
    path = "/api/v1/servers/{node_id}/status",
    operation_id = "server_status",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id (a positive integer)", minimum = 1)),
    responses(
        (status = 200, description = "The node's status", body = ServerStatus, example = status_one_example),
        (status = 400, description = "`node_id` is not a positive integer", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
    ),
)]
pub async fn status_one(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<ServerStatus>, ApiError> {
    let node = existing_node(&state, id)?;
    Ok(Json(server_status(&state, &node)))
}

/// Check whether each node's agent is connected, and its link's latency.
#[utoipa::path(
    get,
    path = "/api/v1/servers/availability",
    operation_id = "servers_availability",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "One row per node", body = AvailabilityList, example = availability_example),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
    ),
)]
pub async fn availability(_: BasicUser, State(state): State<AppState>) -> Result<Json<AvailabilityList>, ApiError> {
    let availability = state
        .store
        .nodes()?
        .iter()
        .map(|node| {
            let view = View::of(&state, node);
            Availability {
                head: view.head(OffsetDateTime::now_utc()),
                // Round trip of the last application heartbeat over the agent's link.
                latency_ms: view
                    .live
                    .rtt
                    .filter(|_| view.live.connected)
                    .map(|r| (r.as_secs_f64() * 100_000.0).round() / 100.0),
                status_code: view.live.connected.then_some(200),
            }
        })
        .collect();
    Ok(Json(AvailabilityList { availability }))
}

/// The document's status row, with Flotilla's fields.
fn status_one_example() -> Value {
    json!({
        "node": "Server-NL",
        "node_id": 1,
        "available": true,
        "timestamp": "2026-02-20T22:52:00",
        "last_seen": "2026-02-20T22:51:58",
        "system": {
            "cpu": 15.5,
            "mem": { "current": 2147483648u64, "total": 8589934592u64, "percent": 25.0 },
            "swap": { "current": 0, "total": 0, "percent": 0.0 },
            "disk": { "current": 21474836480u64, "total": 107374182400u64, "percent": 20.0 },
            "uptime": 259200,
            "loads": [0.5, 0.7, 0.6]
        },
        "xray": {
            "state": "running", "running": true, "version": "1.8.6", "uptime": 86400,
            "core": "xray", "per_user_stats": true, "error": null
        },
        "network": { "upload": 1073741824u64, "download": 5368709120u64 },
        "host": {
            "hostname": "nl-1", "os": "Debian GNU/Linux 12", "kernel": "6.1.0-18-amd64", "arch": "x86_64",
            "cpu_model": "AMD EPYC 7543", "cpu_cores": 4, "public_ips": ["123.45.67.89"], "private_ips": []
        },
        "agent_version": "0.1.0"
    })
}

fn status_list_example() -> Value {
    json!({ "servers": [status_one_example()], "count": 1 })
}

fn availability_example() -> Value {
    json!({
        "availability": [
            {
                "node": "Server-NL", "node_id": 1, "available": true, "latency_ms": 45.23, "status_code": 200,
                "timestamp": "2026-02-20T22:52:00", "last_seen": "2026-02-20T22:51:58"
            },
            {
                "node": "Server-DE", "node_id": 2, "available": false, "latency_ms": null, "status_code": null,
                "timestamp": "2026-02-20T22:52:00", "last_seen": "2026-02-19T08:00:00",
                "error": "agent not connected (last seen 2026-02-19T08:00:00)"
            }
        ]
    })
}

fn logs_example() -> Value {
    json!({
        "node": "Server-NL",
        "count": 1,
        "level": "info",
        "logs": ["Xray 1.8.6 started"],
        "entries": [{ "time": 1771627920000u64, "level": "info", "message": "Xray 1.8.6 started" }]
    })
}
