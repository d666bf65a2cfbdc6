//! `GET /api/v1/snapshots/latest`: the fleet at a glance, from the agents' live state (there is
//! no poller: agents push metrics every few seconds and their core's status as it changes).

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use flotilla_protocol::NodeId;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{reason, UiUser};
use crate::api::multi_server::servers::{self, ServerStatus};
use crate::api::multi_server::{ApiError, ErrorBody, TAG};
use crate::api::AppState;

/// One node in the snapshot.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeSnapshot {
    pub name: String,
    pub node_id: i64,
    /// The node's agent is connected.
    pub available: bool,
    /// `online` or `offline`.
    pub status: String,
    /// `ok`, `not_enrolled` or `agent_offline`.
    pub reason: String,
    /// Why the node is unavailable; empty when it is available.
    pub error: String,
    pub xray_running: bool,
    /// Host CPU use, percent (0 when offline).
    pub cpu: f64,
    /// Clients the core saw recently (0 when offline).
    pub online_clients: usize,
    /// Bytes up and down through the node's inbounds, as counted so far.
    pub traffic_total: u64,
    /// When the data was taken (the last metrics sample, else the last contact): Unix seconds.
    pub timestamp: Option<f64>,
    /// Round trip of the agent link's last heartbeat, ms (0 when offline).
    pub poll_ms: f64,
}

/// `GET /api/v1/snapshots/latest` answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "timestamp": 1741860000.5, "count": 1, "mode": "live",
    "nodes": [{ "name": "Server-NL", "node_id": 1, "available": true, "status": "online", "reason": "ok",
                "error": "", "xray_running": true, "cpu": 15.5, "online_clients": 3,
                "traffic_total": 123456789, "timestamp": 1741860000.4, "poll_ms": 1.3 }]
}))]
pub struct FleetSnapshot {
    /// Now, Unix seconds.
    pub timestamp: Option<f64>,
    pub count: usize,
    /// Always `live`: the state is pushed by the agents, not polled.
    pub mode: String,
    /// Sorted by name.
    pub nodes: Vec<NodeSnapshot>,
}

fn unix_secs(t: OffsetDateTime) -> f64 {
    (t.unix_timestamp_nanos() / 1_000_000) as f64 / 1000.0
}

/// Every node's availability, core and load, sorted by name.
#[utoipa::path(
    get,
    path = "/api/v1/snapshots/latest",
    operation_id = "latest_snapshot",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "The fleet now", body = FleetSnapshot),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
    ),
)]
pub async fn latest_snapshot(_: UiUser, State(state): State<AppState>) -> Result<Json<FleetSnapshot>, ApiError> {
    let now = OffsetDateTime::now_utc();
    // The documented status rows say what is available and why not, in the servers module's words.
    let stored = state.store.nodes()?;
    let rows: HashMap<i64, ServerStatus> = stored.iter().map(|n| (n.id.0, servers::server_status(&state, n))).collect();
    let mut traffic: HashMap<NodeId, u64> = HashMap::new();
    for i in state.store.inbounds(None)? {
        *traffic.entry(i.node_id).or_default() += i.up.saturating_add(i.down);
    }
    let mut nodes: Vec<NodeSnapshot> = stored
        .into_iter()
        .map(|node| {
            let live = state.fleet.live(node.id);
            let row = rows.get(&node.id.0);
            let available = live.connected;
            let sampled = live.metrics.as_ref().filter(|_| available).map(|m| m.taken_at_ms as f64 / 1000.0);
            NodeSnapshot {
                available,
                status: if available { "online" } else { "offline" }.into(),
                reason: reason(&node, available).into(),
                error: row.and_then(|r| r.head.error.clone()).filter(|_| !available).unwrap_or_default(),
                xray_running: available && row.is_some_and(|r| r.xray.running),
                cpu: row.and_then(|r| r.system.as_ref()).map(|s| s.cpu).filter(|_| available).unwrap_or(0.0),
                online_clients: live.core.as_ref().filter(|_| available).map(|c| c.online.len()).unwrap_or(0),
                traffic_total: traffic.get(&node.id).copied().unwrap_or(0),
                timestamp: sampled.or_else(|| live.last_seen.or(node.last_seen_at).map(unix_secs)),
                poll_ms: live
                    .rtt
                    .filter(|_| available)
                    .map(|r| (r.as_secs_f64() * 100_000.0).round() / 100.0)
                    .unwrap_or(0.0),
                name: node.name,
                node_id: node.id.0,
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()).then(a.node_id.cmp(&b.node_id)));
    Ok(Json(FleetSnapshot { timestamp: Some(unix_secs(now)), count: nodes.len(), mode: "live".into(), nodes }))
}
