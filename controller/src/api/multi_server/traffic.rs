//! `/api/v1/traffic/stats` and `/api/v1/automation/reset-all-traffic`: traffic totals as the
//! controller committed them from the agents' journals, in bytes.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::Json;
use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{target_nodes, ApiError, BasicUser, ErrorBody, JsonBody, Query, TAG};
use crate::api::AppState;

/// `?group_by=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// What to sum by (default `client`).
    #[param(inline, value_type = Option<GroupBy>)]
    group_by: Option<String>,
}

/// What traffic statistics are summed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One entry per email, summed over every node and inbound it is on.
    Client,
    /// One entry per inbound, keyed `node:remark` (the tag when there is no remark).
    Inbound,
    /// Client traffic per node, including clients deleted since; keyed by node name.
    Node,
}

impl GroupBy {
    fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "client" => Some(GroupBy::Client),
            "inbound" => Some(GroupBy::Inbound),
            "node" => Some(GroupBy::Node),
            _ => None,
        }
    }
}

/// Traffic of one group, in bytes.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct TrafficSum {
    pub up: u64,
    pub down: u64,
    /// `up + down`.
    pub total: u64,
    /// Records summed: by client, the email's clients across nodes and inbounds; by inbound, 1;
    /// by node, its clients now.
    pub count: u64,
}

impl TrafficSum {
    fn add(&mut self, up: u64, down: u64) {
        self.up += up;
        self.down += down;
        self.total = self.up + self.down;
        self.count += 1;
    }
}

/// `GET /api/v1/traffic/stats` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrafficStats {
    /// Sums by group key (email, `node:remark` or node name), sorted by key.
    pub stats: BTreeMap<String, TrafficSum>,
    pub group_by: String,
}

/// Sum the traffic the controller committed from the agents' journals, in bytes.
#[utoipa::path(
    get,
    path = "/api/v1/traffic/stats",
    operation_id = "traffic_stats",
    tag = TAG,
    security(("basic" = [])),
    params(StatsQuery),
    responses(
        (
            status = 200, description = "Sums by group", body = TrafficStats,
            example = json!({
                "stats": {
                    "user@example.com": { "up": 1073741824u64, "down": 5368709120u64, "total": 6442450944u64, "count": 3 }
                },
                "group_by": "client"
            }),
        ),
        (status = 400, description = "`group_by` is not client, inbound or node", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
    ),
)]
pub async fn stats(
    _: BasicUser,
    State(state): State<AppState>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<TrafficStats>, ApiError> {
    let group_by = q.group_by.unwrap_or_else(|| "client".into());
    let names: HashMap<NodeId, String> = state.store.nodes()?.into_iter().map(|n| (n.id, n.name)).collect();
    let mut sums: BTreeMap<String, TrafficSum> = BTreeMap::new();
    let Some(group) = GroupBy::parse(&group_by) else {
        return Err(ApiError::BadRequest(format!("group_by: must be client, inbound or node, got {group_by:?}")));
    };
    match group {
        // One entry per email, summed over every node and inbound it is on.
        GroupBy::Client => {
            for c in state.store.clients(None, None)? {
                sums.entry(c.email.to_lowercase()).or_default().add(c.up, c.down);
            }
        }
        // "node:remark" keys, as the original manager names inbounds (tag when no remark).
        GroupBy::Inbound => {
            for i in state.store.inbounds(None)? {
                let node = names.get(&i.node_id).cloned().unwrap_or_else(|| i.node_id.to_string());
                let label = if i.remark.is_empty() { i.tag.clone() } else { i.remark.clone() };
                sums.entry(format!("{node}:{label}")).or_default().add(i.up, i.down);
            }
        }
        // Client traffic per node, including clients deleted since.
        GroupBy::Node => {
            let per_node = state.store.node_traffic()?;
            let mut clients: HashMap<NodeId, u64> = HashMap::new();
            for c in state.store.clients(None, None)? {
                *clients.entry(c.node_id).or_default() += 1;
            }
            for (id, name) in &names {
                let (up, down) = per_node.get(id).copied().unwrap_or_default();
                let count = clients.get(id).copied().unwrap_or(0);
                sums.insert(name.clone(), TrafficSum { up, down, total: up + down, count });
            }
        }
    }
    Ok(Json(TrafficStats { stats: sums, group_by }))
}

/// `POST /api/v1/automation/reset-all-traffic` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetAll {
    /// Nodes to reset; absent or null for every node.
    #[serde(default)]
    node_ids: Option<Vec<i64>>,
    /// Only the clients of this inbound (ids are per node); absent for all.
    #[serde(default)]
    inbound_id: Option<i64>,
}

/// A reset on one node.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResetNode {
    pub node: String,
    pub node_id: i64,
    /// Clients whose traffic was zeroed.
    pub reset_count: usize,
    /// `applied`, `partial`, `queued`, `failed`, or `unchanged` when there was nothing to reset.
    pub status: String,
    pub errors: Vec<String>,
}

/// `POST /api/v1/automation/reset-all-traffic` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResetAllResult {
    pub success: bool,
    pub results: Vec<ResetNode>,
}

/// Zero the traffic of every client of the listed nodes (and lift quota cut-offs).
#[utoipa::path(
    post,
    path = "/api/v1/automation/reset-all-traffic",
    operation_id = "reset_all_traffic",
    tag = TAG,
    security(("basic" = [])),
    request_body(content = ResetAll, example = json!({ "node_ids": [1, 2], "inbound_id": 1 })),
    responses(
        (
            status = 200, description = "One result per node", body = ResetAllResult,
            example = json!({
                "success": true,
                "results": [
                    { "node": "Server-NL", "node_id": 1, "reset_count": 12, "status": "applied", "errors": [] },
                    { "node": "Server-DE", "node_id": 2, "reset_count": 0, "status": "unchanged", "errors": [] }
                ]
            }),
        ),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "A listed node does not exist", body = ErrorBody),
    ),
)]
pub async fn reset_all(
    _: BasicUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ResetAll>,
) -> Result<Json<ResetAllResult>, ApiError> {
    let nodes = target_nodes(&state, body.node_ids.as_deref())?;
    let mut counts = vec![];
    for node in &nodes {
        counts.push(state.store.reset_traffic(node.id, body.inbound_id, None)?);
    }
    let changed: Vec<NodeId> = nodes.iter().zip(&counts).filter(|(_, c)| **c > 0).map(|(n, _)| n.id).collect();
    let outcomes = state.fleet.push_many(&changed).await;
    let results = nodes
        .iter()
        .zip(counts)
        .map(|(node, count)| {
            let outcome = outcomes.get(&node.id);
            ResetNode {
                node: node.name.clone(),
                node_id: node.id.0,
                reset_count: count,
                status: outcome.map(|o| o.status()).unwrap_or("unchanged").into(),
                errors: outcome.map(|o| o.errors()).unwrap_or_default(),
            }
        })
        .collect();
    Ok(Json(ResetAllResult { success: true, results }))
}
