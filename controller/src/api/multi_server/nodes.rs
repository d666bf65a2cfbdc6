//! `/api/v1/nodes`: the node registry.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{existing_node, node_address, ApiError, BasicUser, ErrorBody, JsonBody, NodeIdPath, TAG};
use crate::api::{timestamp, AppState};
use crate::fleet::IssuedToken;
use crate::store::{NewNode, NodeRecord};

/// Shown instead of stored panel credentials (the document returns them decrypted; they are kept
/// encrypted and never listed).
const MASK: &str = "********";

/// `POST /api/v1/nodes` body: the documented panel fields, all optional but `name`; any other
/// field is a 400.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    /// Unique, trimmed, 1-64 printable characters. Required.
    #[schema(value_type = String, required = true, max_length = 64)]
    name: Option<String>,
    /// The panel's URL (`http://` or `https://`); its host is where clients reach the node.
    url: Option<String>,
    /// Panel user; stored encrypted, never shown.
    user: Option<String>,
    /// Panel password; stored encrypted, never shown.
    password: Option<String>,
}

/// Host, port (as the document's string) and base path of a panel URL.
fn split_url(raw: &str) -> Result<(String, String, String), ApiError> {
    let url = url::Url::parse(raw).map_err(|e| ApiError::BadRequest(format!("url {raw:?} is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::BadRequest(format!("url must be http:// or https://, got {}://", url.scheme())));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ApiError::BadRequest("url has no host".into()))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = url.port_or_known_default().map(|p| p.to_string()).unwrap_or_default();
    let path = url.path().trim_matches('/').to_string();
    Ok((host, port, path))
}

pub(super) fn validate_name(name: Option<String>) -> Result<String, ApiError> {
    let name = name.ok_or_else(|| ApiError::BadRequest("field 'name' is required".into()))?;
    let name = name.trim().to_string();
    if name.is_empty() {
        return Err(ApiError::BadRequest("field 'name' must not be empty".into()));
    }
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("field 'name' must be at most 64 printable characters".into()));
    }
    Ok(name)
}

/// A node as listed: the document's panel fields, plus Flotilla's link fields.
#[derive(Debug, Serialize, ToSchema)]
pub struct Node {
    pub id: i64,
    pub name: String,
    /// The address clients reach the node at: the host of its `url`, else the public address its
    /// agent reported, else the address its link comes from; null when none is known yet.
    pub ip: Option<String>,
    /// Panel port from `url`, as a string (empty without a `url`).
    pub port: String,
    /// `********` when a panel user is stored (it is kept encrypted and never shown), else empty.
    pub user: String,
    /// `********` when a panel password is stored (it is kept encrypted and never shown), else empty.
    pub password: String,
    /// Path of the panel's `url`, without slashes.
    pub base_path: String,
    /// An agent enrolled for this node.
    pub enrolled: bool,
    /// Its agent's link is up now.
    pub connected: bool,
    /// When its agent was last heard from (UTC, `YYYY-MM-DDTHH:MM:SS`); null if never.
    pub last_seen: Option<String>,
    pub created_at: String,
    /// Version of the agent binary on its current link; null when not connected.
    pub agent_version: Option<String>,
    /// Version of the `flotilla-agent` package installed on the node, as its agent last reported
    /// it (what rollouts upgrade); null when it does not run from the package.
    pub agent_package: Option<String>,
}

/// A node with a fresh single-use join token for its agent (`POST /api/v1/nodes`,
/// `POST /api/v1/nodes/{node_id}/join-token`).
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeWithToken {
    #[serde(flatten)]
    pub node: Node,
    /// Always `success`, as the original manager answers.
    pub status: String,
    pub join_token: String,
    pub join_token_expires_at: String,
    /// What to run on the node's host.
    pub enroll_command: String,
    /// The one-liner that installs, enrolls and starts the agent on a fresh Debian host
    /// (present when the controller offers an agent package, `[install] agent_package`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install_command: Option<String>,
}

/// `DELETE /api/v1/nodes/{node_id}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedNode {
    /// Always `success`.
    pub status: String,
    pub id: i64,
}

impl Node {
    fn of(state: &AppState, node: &NodeRecord) -> Self {
        let live = state.fleet.live(node.id);
        Node {
            id: node.id.0,
            name: node.name.clone(),
            ip: node_address(node, &live),
            port: node.panel_port.clone().unwrap_or_default(),
            user: if node.has_panel_user { MASK } else { "" }.into(),
            password: if node.has_panel_password { MASK } else { "" }.into(),
            base_path: node.base_path.clone(),
            enrolled: node.enrolled_at.is_some(),
            connected: live.connected,
            last_seen: live.last_seen.or(node.last_seen_at).map(timestamp),
            created_at: timestamp(node.created_at),
            agent_version: live.agent_version.clone().filter(|_| live.connected),
            agent_package: live
                .release
                .as_ref()
                .filter(|_| live.connected)
                .map(|r| r.package_version.clone())
                .unwrap_or_else(|| node.agent_package.clone()),
        }
    }

    fn with_token(self, issued: &IssuedToken, install_command: Option<String>) -> NodeWithToken {
        NodeWithToken {
            node: self,
            status: "success".into(),
            join_token: issued.token.clone(),
            join_token_expires_at: timestamp(issued.expires_at),
            enroll_command: format!("flotilla-agent enroll {}", issued.token),
            install_command,
        }
    }
}

/// List every node.
#[utoipa::path(
    get,
    path = "/api/v1/nodes",
    operation_id = "list_nodes",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "Every node", body = [Node], example = list_example),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
    ),
)]
pub async fn list(_: BasicUser, State(state): State<AppState>) -> Result<Json<Vec<Node>>, ApiError> {
    let nodes = state.store.nodes()?;
    Ok(Json(nodes.iter().map(|n| Node::of(&state, n)).collect()))
}

/// Get one node.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{node_id}",
    operation_id = "get_node",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id (a positive integer)", minimum = 1)),
    responses(
        (status = 200, description = "The node", body = Node),
        (status = 400, description = "`node_id` is not a positive integer", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
    ),
)]
pub async fn get_one(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<Node>, ApiError> {
    let node = existing_node(&state, id)?;
    Ok(Json(Node::of(&state, &node)))
}

/// Add a node, and issue the join token its agent enrolls with.
#[utoipa::path(
    post,
    path = "/api/v1/nodes",
    operation_id = "create_node",
    tag = TAG,
    security(("basic" = [])),
    request_body(
        content = CreateNode,
        example = json!({
            "name": "Server-DE", "url": "https://123.45.67.89:443/path/", "user": "admin", "password": "password123"
        }),
    ),
    responses(
        (status = 200, description = "The node, with its join token", body = NodeWithToken, example = created_example),
        (status = 400, description = "Malformed body, unknown field, bad `name` or `url`", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 409, description = "A node of that name exists", body = ErrorBody),
    ),
)]
pub async fn create(
    _: BasicUser,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    uri: axum::extract::OriginalUri,
    JsonBody(body): JsonBody<CreateNode>,
) -> Result<Json<NodeWithToken>, ApiError> {
    let name = validate_name(body.name)?;
    let (public_host, panel_port, base_path) = match body.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) => {
            let (h, p, b) = split_url(url)?;
            (Some(h), Some(p), b)
        }
        None => (None, None, String::new()),
    };
    let new = NewNode {
        name,
        url: body.url.filter(|u| !u.trim().is_empty()),
        public_host,
        panel_port,
        base_path,
        panel_user: body.user.filter(|u| !u.is_empty()),
        panel_password: body.password.filter(|p| !p.is_empty()),
    };
    let node = state.store.create_node(&new)?;
    let issued = state.fleet.issue_join_token(node.id)?;
    tracing::info!(node_id = %node.id, name = %node.name, "node created");
    let install = crate::api::install::command(&state, &headers, uri.path(), &issued.token);
    Ok(Json(Node::of(&state, &node).with_token(&issued, install)))
}

/// Issue a new join token for a node.
///
/// Earlier unused tokens stay valid until they expire.
#[utoipa::path(
    post,
    path = "/api/v1/nodes/{node_id}/join-token",
    operation_id = "new_join_token",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id (a positive integer)", minimum = 1)),
    responses(
        (status = 200, description = "The node, with a new join token", body = NodeWithToken, example = created_example),
        (status = 400, description = "`node_id` is not a positive integer", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
    ),
)]
pub async fn new_join_token(
    _: BasicUser,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    uri: axum::extract::OriginalUri,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<NodeWithToken>, ApiError> {
    let node = existing_node(&state, id)?;
    let issued = state.fleet.issue_join_token(node.id)?;
    let install = crate::api::install::command(&state, &headers, uri.path(), &issued.token);
    Ok(Json(Node::of(&state, &node).with_token(&issued, install)))
}

/// Delete a node.
///
/// Its agent's certificate is refused from now on.
#[utoipa::path(
    delete,
    path = "/api/v1/nodes/{node_id}",
    operation_id = "delete_node",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id (a positive integer)", minimum = 1)),
    responses(
        (status = 200, description = "Deleted", body = DeletedNode, example = json!({ "status": "success", "id": 2 })),
        (status = 400, description = "`node_id` is not a positive integer", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
    ),
)]
pub async fn delete(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<DeletedNode>, ApiError> {
    if !state.fleet.remove_node(id)? {
        return Err(ApiError::NotFound(format!("node {id} not found")));
    }
    Ok(Json(DeletedNode { status: "success".into(), id: id.0 }))
}

/// The document's node list, with Flotilla's fields.
fn list_example() -> Value {
    json!([{
        "id": 1, "name": "Server-NL", "ip": "123.45.67.89", "port": "443", "user": "********",
        "password": "********", "base_path": "", "enrolled": true, "connected": true,
        "last_seen": "2026-02-20T22:52:00", "created_at": "2026-02-01T10:00:00"
    }])
}

fn created_example() -> Value {
    json!({
        "id": 2, "name": "Server-DE", "ip": "123.45.67.89", "port": "443", "user": "********",
        "password": "********", "base_path": "path", "enrolled": false, "connected": false,
        "last_seen": null, "created_at": "2026-02-20T22:52:00", "status": "success",
        "join_token": "flt1_…", "join_token_expires_at": "2026-02-21T22:52:00",
        "enroll_command": "flotilla-agent enroll flt1_…"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_follow_the_document() {
        assert_eq!(
            split_url("https://123.45.67.89:443/path/").unwrap(),
            ("123.45.67.89".into(), "443".into(), "path".into())
        );
        assert_eq!(
            split_url("http://panel.example.com").unwrap(),
            ("panel.example.com".into(), "80".into(), "".into())
        );
        assert_eq!(split_url("https://[2001:db8::1]:8443/").unwrap(), ("2001:db8::1".into(), "8443".into(), "".into()));
        assert!(split_url("ftp://x").is_err());
        assert!(split_url("not a url").is_err());
    }
}
