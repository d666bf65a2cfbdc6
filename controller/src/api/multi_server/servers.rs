//! `/api/v1/servers/…`: status and availability from the live agents.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{existing_node, ApiError, BasicUser, NodeIdPath};
use crate::api::{timestamp, AppState};
use crate::store::NodeRecord;

fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        ((used as f64 / total as f64) * 1000.0).round() / 10.0
    }
}

/// The documented server status object.
fn status_json(state: &AppState, node: &NodeRecord) -> Value {
    let live = state.fleet.live(node.id);
    let metrics = live.metrics.as_ref().or(node.last_metrics.as_ref());
    let last_seen = live.last_seen.or(node.last_seen_at);
    let system = metrics.map(|m| {
        json!({
            "cpu": (m.cpu_percent as f64 * 10.0).round() / 10.0,
            "mem": { "current": m.mem_used, "total": m.mem_total, "percent": percent(m.mem_used, m.mem_total) },
            "swap": { "current": m.swap_used, "total": m.swap_total, "percent": percent(m.swap_used, m.swap_total) },
            "disk": { "current": m.disk_used, "total": m.disk_total, "percent": percent(m.disk_used, m.disk_total) },
            "uptime": m.uptime_secs,
            "loads": m.load,
        })
    });
    let network = metrics.map(|m| json!({ "upload": m.net_tx_bytes, "download": m.net_rx_bytes }));
    let sampled_at =
        metrics.and_then(|m| OffsetDateTime::from_unix_timestamp_nanos(m.taken_at_ms as i128 * 1_000_000).ok());
    json!({
        "node": node.name,
        "node_id": node.id.0,
        "available": live.connected,
        "timestamp": timestamp(if live.connected { OffsetDateTime::now_utc() } else { sampled_at.or(last_seen).unwrap_or(node.created_at) }),
        "last_seen": last_seen.map(timestamp),
        "system": system,
        // Filled by the proxy-core driver once a core is managed on the node.
        "xray": { "state": "not_installed", "running": false, "version": null, "uptime": 0 },
        "network": network,
        "host": live.facts.as_ref().or(node.facts.as_ref()),
        "agent_version": live.agent_version,
    })
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
            let live = state.fleet.live(node.id);
            let last_seen = live.last_seen.or(node.last_seen_at);
            json!({
                "node": node.name,
                "node_id": node.id.0,
                "available": live.connected,
                // Round trip of the last application heartbeat over the agent's link.
                "latency_ms": live.rtt.filter(|_| live.connected).map(|r| (r.as_secs_f64() * 100_000.0).round() / 100.0),
                "status_code": if live.connected { Some(200) } else { None },
                "timestamp": timestamp(OffsetDateTime::now_utc()),
                "last_seen": last_seen.map(timestamp),
            })
        })
        .collect();
    Ok(Json(json!({ "availability": rows })))
}
