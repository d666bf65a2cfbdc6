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
use crate::fleet::NodeLive;
use crate::store::NodeRecord;

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
    // Filled by the proxy-core driver once a core is managed on the node.
    row["xray"] = json!({ "state": "not_installed", "running": false, "version": "", "uptime": 0 });
    row["network"] = metrics.map(|m| json!({ "upload": m.net_tx_bytes, "download": m.net_rx_bytes })).into();
    row["host"] = json!(view.live.facts.as_ref().or(node.facts.as_ref()));
    row["agent_version"] = json!(view.live.agent_version);
    row
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
