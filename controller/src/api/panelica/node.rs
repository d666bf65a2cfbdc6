//! Which node a host endpoint (services, status, files, bandwidth) acts on: `node_id` when given,
//! else the only node, else the node running on the controller's own host (the demo's local
//! agent), else the caller must say.

use flotilla_protocol::NodeId;
use serde::Deserialize;

use super::{blocking, ApiError};
use crate::api::AppState;

/// The optional `node_id` of host endpoints (query string or body).
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct NodeChoice {
    pub node_id: Option<i64>,
}

/// The node `choice` names, or the default one; it must be connected.
pub async fn select(state: &AppState, choice: NodeChoice) -> Result<NodeId, ApiError> {
    let store = state.store.clone();
    let nodes = blocking(move || store.nodes()).await?;
    let node = match choice.node_id {
        Some(id) => nodes
            .iter()
            .find(|n| n.id.0 == id)
            .map(|n| n.id)
            .ok_or_else(|| ApiError::not_found(format!("node {id} not found")))?,
        None if nodes.len() == 1 => nodes[0].id,
        None if nodes.is_empty() => {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "NO_NODE",
                "no node is enrolled yet",
            ))
        }
        None => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
            let local: Vec<NodeId> = nodes
                .iter()
                .map(|n| n.id)
                .filter(|id| state.fleet.live(*id).facts.is_some_and(|f| !host.is_empty() && f.hostname == host))
                .collect();
            match local.as_slice() {
                [one] => *one,
                _ => {
                    return Err(ApiError::bad(format!(
                        "node_id is required: {} nodes are enrolled (GET /api/v1/nodes lists them)",
                        nodes.len()
                    )))
                }
            }
        }
    };
    if !state.fleet.live(node).connected {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "NODE_OFFLINE",
            format!("node {} is offline; try again later", node.0),
        ));
    }
    Ok(node)
}
