//! `/api/v1/servers/…`: status and availability from the live agents.
//!
//! Shapes follow the document and the original manager: an unavailable node carries an `error`
//! string; percentages have two decimals; `xray.version` is always a string.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{existing_node, ApiError, BasicUser, NodeIdPath};
use crate::api::{timestamp, AppState};
use crate::fleet::push::PUSH_TIMEOUT;
use crate::fleet::{FleetError, NodeLive};
use crate::store::NodeRecord;
use flotilla_protocol::codec;
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
    fn head(&self, timestamp_at: OffsetDateTime) -> Value {
        let mut row = json!({
            "node": self.node.name,
            "node_id": self.node.id.0,
            "available": self.live.connected,
            "timestamp": timestamp(timestamp_at),
            "last_seen": self.last_seen.map(timestamp),
        });
        if !self.live.connected {
            row["error"] = json!(unavailable_reason(self.node, self.last_seen));
        }
        row
    }
}

/// The documented server status object.
fn status_json(state: &AppState, node: &NodeRecord) -> Value {
    let view = View::of(state, node);
    let metrics = view.live.metrics.as_ref().or(node.last_metrics.as_ref());
    let sampled_at =
        metrics.and_then(|m| OffsetDateTime::from_unix_timestamp_nanos(m.taken_at_ms as i128 * 1_000_000).ok());
    let at = if view.live.connected {
        OffsetDateTime::now_utc()
    } else {
        sampled_at.or(view.last_seen).unwrap_or(node.created_at)
    };
    let mut row = view.head(at);
    row["system"] = match metrics {
        Some(m) => json!({
            "cpu": (m.cpu_percent as f64 * 10.0).round() / 10.0,
            "mem": { "current": m.mem_used, "total": m.mem_total, "percent": percent(m.mem_used, m.mem_total) },
            "swap": { "current": m.swap_used, "total": m.swap_total, "percent": percent(m.swap_used, m.swap_total) },
            "disk": { "current": m.disk_used, "total": m.disk_total, "percent": percent(m.disk_used, m.disk_total) },
            "uptime": m.uptime_secs,
            "loads": m.load,
        }),
        None => Value::Null,
    };
    row["xray"] = core_json(&view.live);
    row["network"] = metrics.map(|m| json!({ "upload": m.net_tx_bytes, "download": m.net_rx_bytes })).into();
    row["host"] = json!(view.live.facts.as_ref().or(node.facts.as_ref()));
    row["agent_version"] = json!(view.live.agent_version);
    row
}

/// The `xray` block: the node's proxy core as its agent last reported it.
fn core_json(live: &NodeLive) -> Value {
    match (&live.core, live.connected) {
        (Some(core), true) => json!({
            "state": core.state.as_str(),
            "running": core.state == CoreState::Running,
            "version": core.version,
            "uptime": if core.state == CoreState::Running {
                core.uptime_secs + live.core_reported_at.map(|t| t.elapsed().as_secs()).unwrap_or(0)
            } else {
                0
            },
            "core": core.flavor.map(|f| f.as_str()),
            "per_user_stats": core.per_user_stats,
            "error": core.last_error,
        }),
        // Seen earlier, but the node is away now: what its core does is unknown.
        (Some(core), false) => json!({
            "state": CoreState::Unreachable.as_str(), "running": false, "version": core.version, "uptime": 0,
            "core": core.flavor.map(|f| f.as_str()),
        }),
        (None, true) if live.proxy_capable => {
            json!({ "state": "starting", "running": false, "version": "", "uptime": 0 })
        }
        (None, _) => json!({ "state": "not_installed", "running": false, "version": "", "uptime": 0 }),
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
    state.fleet.call(node.id, kind, body, PUSH_TIMEOUT).await.map_err(|e| match e {
        FleetError::NotConnected(_) => ApiError::Conflict(format!("node {} ({}) is not connected", node.id, node.name)),
        FleetError::Rpc { error, .. } => ApiError::Conflict(format!("node {} ({}): {error}", node.id, node.name)),
        other => ApiError::Internal(other.to_string()),
    })
}

pub async fn restart_core(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<Value>, ApiError> {
    let node = existing_node(&state, id)?;
    let answer = core_call(&state, &node, RequestKind::RESTART_CORE, vec![]).await?;
    let status: CoreStatus = codec::decode_from(&answer).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!({
        "success": status.state == CoreState::Running,
        "node": node.name,
        "state": status.state.as_str(),
        "version": status.version,
        "error": status.last_error,
    })))
}

/// `?count=&level=` of the logs endpoint.
#[derive(Debug, serde::Deserialize)]
pub struct LogsQuery {
    count: Option<String>,
    level: Option<String>,
}

pub async fn logs(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
    axum::extract::Query(q): axum::extract::Query<LogsQuery>,
) -> Result<Json<Value>, ApiError> {
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
    let entries: Vec<Value> =
        lines.iter().map(|l| json!({ "time": l.at_ms, "level": l.level.as_str(), "message": l.text })).collect();
    Ok(Json(
        json!({ "node": node.name, "count": logs.len(), "level": level.as_str(), "logs": logs, "entries": entries }),
    ))
}

pub async fn status_all(_: BasicUser, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let servers: Vec<Value> = state.store.nodes()?.iter().map(|n| status_json(&state, n)).collect();
    Ok(Json(json!({ "count": servers.len(), "servers": servers })))
}

pub async fn status_one(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<Value>, ApiError> {
    let node = existing_node(&state, id)?;
    Ok(Json(status_json(&state, &node)))
}

pub async fn availability(_: BasicUser, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows: Vec<Value> = state
        .store
        .nodes()?
        .iter()
        .map(|node| {
            let view = View::of(&state, node);
            let mut row = view.head(OffsetDateTime::now_utc());
            // Round trip of the last application heartbeat over the agent's link.
            row["latency_ms"] = json!(view
                .live
                .rtt
                .filter(|_| view.live.connected)
                .map(|r| (r.as_secs_f64() * 100_000.0).round() / 100.0));
            row["status_code"] = json!(view.live.connected.then_some(200));
            row
        })
        .collect();
    Ok(Json(json!({ "availability": rows })))
}
