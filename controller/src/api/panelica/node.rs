//! Which node a host endpoint (services, status, files, bandwidth) acts on: `node_id` when given,
//! else the only node, else the node running on the controller's own host (the demo's local
//! agent), else the caller must say.

use std::time::Duration;

use axum::http::StatusCode;
use flotilla_protocol::NodeId;
use serde::Deserialize;

use super::{blocking, ApiError};
use crate::api::AppState;
use crate::fleet::FleetError;

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
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NO_NODE", "no node is enrolled yet"))
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
        return Err(offline(node));
    }
    Ok(node)
}

fn offline(node: NodeId) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "NODE_OFFLINE",
        format!("node {} is offline; try again later", node.0),
    )
}

/// The family's answer for a call to a node's agent that failed on the way rather than in the
/// operation: the node went offline (503), did not answer within `timeout` (504), or the link
/// failed (502). Each endpoint maps its own operation's refusals (`FleetError::Rpc`) first.
pub fn link_error(e: FleetError, timeout: Duration) -> ApiError {
    match e {
        FleetError::NotConnected(node) => offline(node),
        FleetError::Timeout(node) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "NODE_TIMEOUT",
            format!("node {} did not answer in {} s", node.0, timeout.as_secs()),
        ),
        other => ApiError::new(StatusCode::BAD_GATEWAY, "NODE_ERROR", other.to_string()),
    }
}
