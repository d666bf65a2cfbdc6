//! `/api/v1/nodes`: the node registry.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{existing_node, node_address, ApiError, BasicUser, JsonBody, NodeIdPath};
use crate::api::{timestamp, AppState};
use crate::fleet::IssuedToken;
use crate::store::{NewNode, NodeRecord};

/// Shown instead of stored panel credentials (the document returns them decrypted; they are kept
/// encrypted and never listed).
const MASK: &str = "********";

/// `POST /api/v1/nodes` body: the documented panel fields, all optional but `name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    name: Option<String>,
    url: Option<String>,
    user: Option<String>,
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

fn validate_name(name: Option<String>) -> Result<String, ApiError> {
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

/// The documented node object, plus Flotilla's link fields.
fn node_json(state: &AppState, node: &NodeRecord) -> Value {
    let live = state.fleet.live(node.id);
    let ip = node_address(node, &live);
    json!({
        "id": node.id.0,
        "name": node.name,
        "ip": ip,
        "port": node.panel_port.clone().unwrap_or_default(),
        "user": if node.has_panel_user { MASK } else { "" },
        "password": if node.has_panel_password { MASK } else { "" },
        "base_path": node.base_path,
        "enrolled": node.enrolled_at.is_some(),
        "connected": live.connected,
        "last_seen": live.last_seen.or(node.last_seen_at).map(timestamp),
        "created_at": timestamp(node.created_at),
    })
}

fn with_token(mut body: Value, issued: &IssuedToken) -> Value {
    // `status` as the original manager answers; the node and its token ride along.
    body["status"] = json!("success");
    body["join_token"] = json!(issued.token);
    body["join_token_expires_at"] = json!(timestamp(issued.expires_at));
    body["enroll_command"] = json!(format!("flotilla-agent enroll {}", issued.token));
    body
}

pub async fn list(_: BasicUser, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let nodes = state.store.nodes()?;
    Ok(Json(Value::Array(nodes.iter().map(|n| node_json(&state, n)).collect())))
}

pub async fn get_one(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<Value>, ApiError> {
    let node = existing_node(&state, id)?;
    Ok(Json(node_json(&state, &node)))
}

pub async fn create(
    _: BasicUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateNode>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(with_token(node_json(&state, &node), &issued)))
}

pub async fn new_join_token(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<Value>, ApiError> {
    let node = existing_node(&state, id)?;
    let issued = state.fleet.issue_join_token(node.id)?;
    Ok(Json(with_token(node_json(&state, &node), &issued)))
}

pub async fn delete(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<Value>, ApiError> {
    if !state.fleet.remove_node(id)? {
        return Err(ApiError::NotFound(format!("node {id} not found")));
    }
    Ok(Json(json!({ "status": "success", "id": id.0 })))
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
