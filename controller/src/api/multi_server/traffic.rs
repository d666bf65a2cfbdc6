//! `/api/v1/traffic/stats` and `/api/v1/automation/reset-all-traffic`: traffic totals as the
//! controller committed them from the agents' journals, in bytes.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::Json;
use flotilla_protocol::NodeId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{target_nodes, ApiError, BasicUser, JsonBody};
use crate::api::AppState;

/// `?group_by=`.
#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    group_by: Option<String>,
}

#[derive(Default)]
struct Sum {
    up: u64,
    down: u64,
    count: u64,
}

impl Sum {
    fn add(&mut self, up: u64, down: u64) {
        self.up += up;
        self.down += down;
        self.count += 1;
    }

    fn json(&self) -> Value {
        json!({ "up": self.up, "down": self.down, "total": self.up + self.down, "count": self.count })
    }
}

pub async fn stats(
    _: BasicUser,
    State(state): State<AppState>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    let group_by = q.group_by.unwrap_or_else(|| "client".into());
    let names: HashMap<NodeId, String> = state.store.nodes()?.into_iter().map(|n| (n.id, n.name)).collect();
    let mut sums: BTreeMap<String, Sum> = BTreeMap::new();
    match group_by.as_str() {
        // One entry per email, summed over every node and inbound it is on.
        "client" => {
            for c in state.store.clients(None, None)? {
                sums.entry(c.email.to_lowercase()).or_default().add(c.up, c.down);
            }
        }
        // "node:remark" keys, as the original manager names inbounds (tag when no remark).
        "inbound" => {
            for i in state.store.inbounds(None)? {
                let node = names.get(&i.node_id).cloned().unwrap_or_else(|| i.node_id.to_string());
                let label = if i.remark.is_empty() { i.tag.clone() } else { i.remark.clone() };
                sums.entry(format!("{node}:{label}")).or_default().add(i.up, i.down);
            }
        }
        // Client traffic per node, including clients deleted since.
        "node" => {
            let per_node = state.store.node_traffic()?;
            let mut clients: HashMap<NodeId, u64> = HashMap::new();
            for c in state.store.clients(None, None)? {
                *clients.entry(c.node_id).or_default() += 1;
            }
            for (id, name) in &names {
                let (up, down) = per_node.get(id).copied().unwrap_or_default();
                sums.insert(name.clone(), Sum { up, down, count: clients.get(id).copied().unwrap_or(0) });
            }
        }
        other => {
            return Err(ApiError::BadRequest(format!("group_by: must be client, inbound or node, got {other:?}")));
        }
    }
    let stats: serde_json::Map<String, Value> = sums.into_iter().map(|(k, s)| (k, s.json())).collect();
    Ok(Json(json!({ "stats": stats, "group_by": group_by })))
}

/// `POST /api/v1/automation/reset-all-traffic` body.
#[derive(Debug, Deserialize)]
pub struct ResetAll {
    #[serde(default)]
    node_ids: Option<Vec<i64>>,
    #[serde(default)]
    inbound_id: Option<i64>,
}

pub async fn reset_all(
    _: BasicUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ResetAll>,
) -> Result<Json<Value>, ApiError> {
    let nodes = target_nodes(&state, body.node_ids.as_deref())?;
    let mut counts = vec![];
    for node in &nodes {
        counts.push(state.store.reset_traffic(node.id, body.inbound_id, None)?);
    }
    let changed: Vec<NodeId> = nodes.iter().zip(&counts).filter(|(_, c)| **c > 0).map(|(n, _)| n.id).collect();
    let outcomes = state.fleet.push_many(&changed).await;
    let results: Vec<Value> = nodes
        .iter()
        .zip(counts)
        .map(|(node, count)| {
            let outcome = outcomes.get(&node.id);
            json!({
                "node": node.name,
                "node_id": node.id.0,
                "reset_count": count,
                "status": outcome.map(|o| o.status()).unwrap_or("unchanged"),
                "errors": outcome.map(|o| o.errors()).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(json!({ "success": true, "results": results })))
}
