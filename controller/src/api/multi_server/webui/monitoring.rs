//! The web UI's monitoring tab, for what Flotilla has: the controller's own dependencies and each
//! node's history as sampled by the controller (`jobs::history`).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::UiUser;
use crate::api::multi_server::{existing_node, ApiError, ErrorBody, NodeIdPath, Query, TAG};
use crate::api::AppState;

/// The state of an optional dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dependency {
    pub enabled: bool,
    pub ok: bool,
    pub error: Option<String>,
}

/// What the controller's background work depends on.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthDeps {
    /// `ok`, or `degraded` when the history sampler is not running.
    pub status: &'static str,
    /// The node history sampler runs.
    pub collector_running: bool,
    /// Flotilla keeps its state in its embedded store; there is no Redis.
    pub redis: Dependency,
}

/// The controller's background work.
#[utoipa::path(
    get,
    path = "/api/v1/health/deps",
    operation_id = "health_deps",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "Dependencies", body = HealthDeps),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
    ),
)]
pub async fn health_deps(_: UiUser, State(state): State<AppState>) -> Json<HealthDeps> {
    let running = state.history.running();
    Json(HealthDeps {
        status: if running { "ok" } else { "degraded" },
        collector_running: running,
        redis: Dependency { enabled: false, ok: false, error: Some("disabled_or_unavailable".into()) },
    })
}

/// `?since_sec=&limit=` of a node's history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How far back, seconds (60 to 2,592,000; default 86,400).
    since_sec: Option<i64>,
    /// At most this many points, the newest (100 to 5,000; default 1,200).
    limit: Option<i64>,
}

/// One sample.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPointOut {
    /// Unix seconds.
    pub ts: i64,
    pub node_id: i64,
    pub node_name: String,
    /// 1 when the agent was connected.
    pub available: u8,
    /// 1 when its proxy core ran.
    pub xray_running: u8,
    pub cpu: Option<f64>,
    pub online_clients: u32,
    /// Client traffic of the node so far, bytes.
    pub traffic_total: u64,
    /// Heartbeat round trip, milliseconds.
    pub poll_ms: Option<f64>,
}

/// A node's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeHistory {
    pub node_id: i64,
    pub since_sec: i64,
    pub count: usize,
    /// Oldest first.
    pub points: Vec<HistoryPointOut>,
}

/// A node's state over time, sampled every minute by the controller.
#[utoipa::path(
    get,
    path = "/api/v1/history/nodes/{node_id}",
    operation_id = "node_history",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id"), HistoryQuery),
    responses(
        (status = 200, description = "Samples, oldest first", body = NodeHistory),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
    ),
)]
pub async fn node_history(
    _: UiUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<NodeHistory>, ApiError> {
    let node = existing_node(&state, id)?;
    // The original manager clamps rather than refuses.
    let since_sec = q.since_sec.unwrap_or(86_400).clamp(60, 2_592_000);
    let limit = q.limit.unwrap_or(1_200).clamp(100, 5_000) as u32;
    let since = time::OffsetDateTime::now_utc().unix_timestamp() - since_sec;
    let store = state.store.clone();
    let points = tokio::task::spawn_blocking(move || store.history(node.id, since, limit))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let points: Vec<HistoryPointOut> = points
        .into_iter()
        .map(|p| HistoryPointOut {
            ts: p.ts,
            node_id: node.id.0,
            node_name: node.name.clone(),
            available: p.available.into(),
            xray_running: p.core_running.into(),
            cpu: p.cpu,
            online_clients: p.online_clients,
            traffic_total: p.traffic_total,
            poll_ms: p.rtt_ms.map(|r| (r * 100.0).round() / 100.0),
        })
        .collect();
    Ok(Json(NodeHistory { node_id: node.id.0, since_sec, count: points.len(), points }))
}
