//! The UI's node calls: the short list, renames, the "check connection" button, the forced
//! refresh and one node's server status.

use axum::extract::State;
use axum::Json;
use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{reason, UiUser};
use crate::api::multi_server::servers;
use crate::api::multi_server::servers::ServerStatus;
use crate::api::multi_server::{existing_node, ApiError, ErrorBody, JsonBody, NodeIdPath, TAG};
use crate::api::AppState;
use crate::store::NodeRecord;

/// One entry of `GET /api/v1/nodes/list`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({ "id": 1, "name": "Server-NL" }))]
pub struct NodeName {
    pub id: i64,
    pub name: String,
}

/// Ids and names of every node, in the order of `GET /api/v1/nodes`.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/list",
    operation_id = "list_node_names",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "Every node", body = Vec<NodeName>),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
    ),
)]
pub async fn list_names(_: UiUser, State(state): State<AppState>) -> Result<Json<Vec<NodeName>>, ApiError> {
    Ok(Json(state.store.nodes()?.into_iter().map(|n| NodeName { id: n.id.0, name: n.name }).collect()))
}

/// `PUT /api/v1/nodes/{node_id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    /// The new name (trimmed; unique in any case).
    #[serde(default)]
    name: Option<String>,
}

/// The answer to a successful node change.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({ "status": "success", "id": 1, "name": "Server-NL" }))]
pub struct NodeRenamed {
    /// Always `success`.
    pub status: String,
    pub id: i64,
    pub name: String,
}

/// Renames a node.
#[utoipa::path(
    put,
    path = "/api/v1/nodes/{node_id}",
    operation_id = "rename_node",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id")),
    request_body = Rename,
    responses(
        (status = 200, description = "Renamed", body = NodeRenamed),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 400, description = "Empty name or malformed body", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "Another node has that name", body = ErrorBody),
    ),
)]
pub async fn rename_node(
    _: UiUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
    JsonBody(body): JsonBody<Rename>,
) -> Result<Json<NodeRenamed>, ApiError> {
    let name = body.name.unwrap_or_default().trim().to_string();
    if name.is_empty() {
        return Err(ApiError::BadRequest("Name cannot be empty".into()));
    }
    // The same rules as a new node's name.
    let name = crate::api::multi_server::nodes::validate_name(Some(name))?;
    let old = existing_node(&state, id)?;
    if !state.store.rename_node(id, &name)? {
        return Err(ApiError::NotFound(format!("node {id} not found")));
    }
    tracing::info!(node_id = %id, old = %old.name, new = %name, "node renamed");
    Ok(Json(NodeRenamed { status: "success".into(), id: id.0, name }))
}

/// `POST /api/v1/nodes/check-connection` body: a node's id, or the URL the UI's "add node" form
/// holds (`user` and `password` are accepted and not used: Flotilla reaches hosts through
/// their agent, not by logging in to a panel).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CheckConnection {
    #[serde(default)]
    node_id: Option<i64>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    password: Option<String>,
}

/// `POST /api/v1/nodes/check-connection` answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "success": true, "message": "Agent connected", "base_url": "https://203.0.113.7:443",
    "inbounds_count": 2, "details": "agent 0.1.0; core v2ray 4.34.0 running", "node_id": 1
}))]
pub struct ConnectionCheck {
    /// Whether the node's agent is connected now.
    pub success: bool,
    /// What the UI shows: `Agent connected`, or why not.
    pub message: String,
    /// The node's panel URL as given (`scheme://host:port/path`), or empty.
    pub base_url: String,
    /// Inbounds the node has; null when no node matched.
    pub inbounds_count: Option<usize>,
    /// Agent and core versions, or what to do next.
    pub details: String,
    /// The node checked, when one matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<i64>,
}

/// `scheme://host:port/path` of a panel URL (`https://` when no scheme), and its host and port.
fn panel_base(raw: &str) -> Result<(String, String, String), ApiError> {
    let with_scheme = if raw.starts_with("http://") || raw.starts_with("https://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|_| ApiError::BadRequest("Invalid URL".into()))?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| ApiError::BadRequest("Invalid URL".into()))?;
    let port = url.port_or_known_default().map(|p| p.to_string()).unwrap_or_default();
    let path = url.path().trim_matches('/');
    let prefix = if path.is_empty() { String::new() } else { format!("/{path}") };
    let base = format!("{}://{host}:{port}{prefix}", url.scheme());
    Ok((base, host.trim_matches(|c| c == '[' || c == ']').to_string(), port))
}

/// Whether a node's agent is connected: by `node_id`, or by the host (and port) of `url` among
/// the registered nodes. Always 200 but for malformed input and unknown node ids.
#[utoipa::path(
    post,
    path = "/api/v1/nodes/check-connection",
    operation_id = "check_node_connection",
    tag = TAG,
    security(("basic" = [])),
    request_body = CheckConnection,
    responses(
        (status = 200, description = "The check's outcome (`success` says whether the agent is connected)", body = ConnectionCheck),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 400, description = "Neither `node_id` nor `url`, or an invalid URL", body = ErrorBody),
        (status = 404, description = "No node with that id", body = ErrorBody),
    ),
)]
pub async fn check_connection(
    _: UiUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CheckConnection>,
) -> Result<Json<ConnectionCheck>, ApiError> {
    let (node, base_url) = match (body.node_id, body.url.as_deref().map(str::trim).filter(|u| !u.is_empty())) {
        (Some(id), _) => {
            let node = existing_node(&state, NodeId(id))?;
            let base = node.url.clone().unwrap_or_default();
            (node, base)
        }
        (None, Some(url)) => {
            let (base, host, port) = panel_base(url)?;
            let found = state.store.nodes()?.into_iter().find(|n: &NodeRecord| {
                n.public_host.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(&host))
                    && n.panel_port.as_deref().is_none_or(|p| p.is_empty() || p == port)
            });
            match found {
                Some(node) => (node, base),
                None => {
                    return Ok(Json(ConnectionCheck {
                        success: false,
                        message: format!("No node with address {host} is registered yet"),
                        base_url: base,
                        inbounds_count: None,
                        details: "Flotilla reaches hosts through its agent: add the node, then run the enroll \
                                  command it answers with on the host"
                            .into(),
                        node_id: None,
                    }));
                }
            }
        }
        (None, None) => return Err(ApiError::BadRequest("Missing required fields: node_id or url".into())),
    };
    let live = state.fleet.live(node.id);
    let inbounds = state.store.inbounds(Some(node.id))?.len();
    let agent = live.agent_version.as_deref().map(|v| format!("agent {v}")).unwrap_or_else(|| "agent".into());
    let core = match &live.core {
        Some(core) => format!(
            "core {} {} {}",
            core.flavor.map(|f| f.as_str()).unwrap_or("proxy"),
            core.version,
            core.state.as_str()
        ),
        None => "no proxy core reported".into(),
    };
    let (message, details) = if live.connected {
        ("Agent connected".to_string(), format!("{agent}; {core}"))
    } else {
        let status = servers::server_status(&state, &node);
        let why = status.head.error.unwrap_or_else(|| "agent not connected".into());
        (why, format!("reason: {}", reason(&node, false)))
    };
    Ok(Json(ConnectionCheck {
        success: live.connected,
        message,
        base_url,
        inbounds_count: Some(inbounds),
        details,
        node_id: Some(node.id.0),
    }))
}

/// `POST /api/v1/nodes/refresh-now` answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "status": "success", "message": "Agents push their state as it changes; 2 of 3 nodes connected",
    "connected": 2, "nodes": 3
}))]
pub struct Refreshed {
    /// Always `success`.
    pub status: String,
    pub message: String,
    /// Nodes whose agent is connected now.
    pub connected: usize,
    /// Registered nodes.
    pub nodes: usize,
}

/// The UI's "refresh now". There is nothing to poll: connected agents push metrics every few
/// seconds and their core's status as it changes, so the next read is already current.
#[utoipa::path(
    post,
    path = "/api/v1/nodes/refresh-now",
    operation_id = "refresh_nodes_now",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "Live state is current", body = Refreshed),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
    ),
)]
pub async fn refresh_now(_: UiUser, State(state): State<AppState>) -> Result<Json<Refreshed>, ApiError> {
    let nodes = state.store.nodes()?;
    let connected = nodes.iter().filter(|n| state.fleet.live(n.id).connected).count();
    Ok(Json(Refreshed {
        status: "success".into(),
        message: format!("Agents push their state as it changes; {connected} of {} nodes connected", nodes.len()),
        connected,
        nodes: nodes.len(),
    }))
}

/// `GET /api/v1/nodes/{node_id}/server-status` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeServerStatus {
    /// `online` or `offline`.
    pub status: String,
    /// `ok`, `not_enrolled` or `agent_offline`.
    pub reason: String,
    /// The `GET /api/v1/servers/{node_id}/status` object, with `timestamp` in RFC 3339 (`…Z`) so
    /// that browsers read it as UTC.
    #[serde(flatten)]
    pub server: ServerStatus,
}

/// One node's server status; an offline node is still a 200, with `available: false`.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{node_id}/server-status",
    operation_id = "node_server_status",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id")),
    responses(
        (status = 200, description = "Status (`available: false` when the agent is away)", body = NodeServerStatus),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
    ),
)]
pub async fn server_status(
    _: UiUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<NodeServerStatus>, ApiError> {
    let node = existing_node(&state, id)?;
    let mut server = servers::server_status(&state, &node);
    let available = server.head.available;
    // `api::timestamp` is UTC without an offset; `new Date()` would read it as local time.
    if !server.head.timestamp.is_empty() && !server.head.timestamp.ends_with('Z') {
        server.head.timestamp.push('Z');
    }
    Ok(Json(NodeServerStatus {
        status: if available { "online" } else { "offline" }.into(),
        reason: reason(&node, available).into(),
        server,
    }))
}
