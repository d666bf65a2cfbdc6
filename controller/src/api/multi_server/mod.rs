//! The Multi-Server Manager API (`api-docs/multi-server-manager.md`): HTTP Basic auth, errors as
//! `{"detail": "…"}`.
//!
//! Every handler answers with a typed DTO (`#[derive(Serialize, ToSchema)]`) declared in its own
//! module, and carries a `#[utoipa::path]` description; `api/openapi.rs` gathers them into the
//! document served at `/openapi.json`.

pub(crate) mod backup;
pub(crate) mod clients;
pub(crate) mod feed;
pub(crate) mod inbounds;
pub(crate) mod nodes;
pub mod rollouts;
pub(crate) mod servers;
pub(crate) mod subscription;
pub(crate) mod traffic;
pub(crate) mod webui;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use super::{timestamp, AppState};
use crate::auth::{AuthError, Identity};
use crate::fleet::FleetError;
pub(crate) use crate::store::now_ms;
use crate::store::StoreError;

/// Routes of this family.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/nodes", get(nodes::list).post(nodes::create))
        .route("/api/v1/nodes/{node_id}", axum::routing::delete(nodes::delete).get(nodes::get_one))
        .route("/api/v1/nodes/{node_id}/join-token", post(nodes::new_join_token))
        .route("/api/v1/servers/status", get(servers::status_all))
        .route("/api/v1/servers/availability", get(servers::availability))
        .route("/api/v1/servers/{node_id}/status", get(servers::status_one))
        .route("/api/v1/servers/{node_id}/restart-xray", post(servers::restart_core))
        .route("/api/v1/servers/{node_id}/logs", get(servers::logs))
        .route("/api/v1/inbounds", get(inbounds::list).post(inbounds::create))
        .route("/api/v1/inbounds/clone", post(inbounds::clone))
        .route("/api/v1/inbounds/{inbound_id}", axum::routing::delete(inbounds::delete))
        .route("/api/v1/clients", get(clients::list))
        .route("/api/v1/clients/batch-add", post(clients::batch_add))
        .route("/api/v1/clients/batch-delete", post(clients::batch_delete))
        .route("/api/v1/clients/online", get(clients::online))
        .route("/api/v1/clients/{client_id}", axum::routing::put(clients::update).delete(clients::delete))
        .route("/api/v1/clients/{client_id}/reset-traffic", post(clients::reset_traffic))
        .route("/api/v1/traffic/stats", get(traffic::stats))
        .route("/api/v1/automation/reset-all-traffic", post(traffic::reset_all))
        .route("/api/v1/emails", get(subscription::emails))
        .route("/api/v1/sub/{email}", get(subscription::subscription))
        .route("/api/v1/sub-grouped/{identifier}", get(subscription::grouped))
        .route("/api/v1/backup/database/{node_id}", get(backup::get_one).post(backup::import))
        .route("/api/v1/backup/node/{node_id}", get(backup::download))
        .route("/api/v1/backup/all", get(backup::all))
        .route("/api/v1/backup/node/{node_id}/import", post(backup::import_file))
        .route(
            "/api/v1/agent-packages",
            get(rollouts::list_packages)
                .post(rollouts::add_package_route)
                .layer(axum::extract::DefaultBodyLimit::max(rollouts::MAX_PACKAGE)),
        )
        .route("/api/v1/agent-packages/{version}", axum::routing::delete(rollouts::delete_package))
        .route("/api/v1/rollouts", get(rollouts::list).post(rollouts::create))
        .route("/api/v1/rollouts/{rollout_id}", get(rollouts::get_one))
        .route("/api/v1/rollouts/{rollout_id}/cancel", post(rollouts::cancel))
        .merge(webui::router())
}

/// Tag of every operation of this family in the OpenAPI document.
pub const TAG: &str = "multi-server";

/// The family's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong; never empty.
    pub detail: String,
}

/// The answer to a change of one node's proxy state (inbound deleted, client edited, deleted or
/// reset): the change is stored, and pushed to the node's agent or queued for it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeChange {
    pub success: bool,
    /// Name of the node.
    pub node: String,
    /// `applied` (the agent applied it), `partial` (its core refused part of it, see `errors`),
    /// `queued` (the node is offline; it converges on reconnect) or `failed` (the agent could not
    /// be reached in time; the change is stored).
    pub status: String,
    pub errors: Vec<String>,
}

impl NodeChange {
    fn new(node: &crate::store::NodeRecord, outcome: &crate::fleet::push::PushOutcome) -> Self {
        NodeChange { success: true, node: node.name.clone(), status: outcome.status().into(), errors: outcome.errors() }
    }
}

/// `GET /api/v1/health` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `healthy` while the API answers.
    pub status: String,
    /// Now, UTC, `YYYY-MM-DDTHH:MM:SS`.
    pub timestamp: String,
}

/// Errors of this family, rendered as `{"detail": "…"}`.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    /// Authenticated, but the role does not allow it.
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed,
    Conflict(String),
    PayloadTooLarge,
    /// A node's agent did not answer in time, or its link failed mid-call.
    Gateway(StatusCode, String),
    Internal(String),
}

impl std::fmt::Display for ApiError {
    /// The `detail` the API would answer (for the CLI, which shares some of its checks).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::BadRequest(d)
            | ApiError::Unauthorized(d)
            | ApiError::Forbidden(d)
            | ApiError::NotFound(d)
            | ApiError::Conflict(d)
            | ApiError::Gateway(_, d)
            | ApiError::Internal(d) => f.write_str(d),
            ApiError::MethodNotAllowed => f.write_str("Method Not Allowed"),
            ApiError::PayloadTooLarge => f.write_str("request body too large"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match self {
            ApiError::BadRequest(d) => (StatusCode::BAD_REQUEST, d),
            ApiError::Unauthorized(d) => {
                let body = Json(ErrorBody { detail: d });
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Basic realm=\"flotilla\", charset=\"UTF-8\"")],
                    body,
                )
                    .into_response();
            }
            ApiError::Forbidden(d) => (StatusCode::FORBIDDEN, d),
            ApiError::NotFound(d) => (StatusCode::NOT_FOUND, d),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed".to_string()),
            ApiError::Conflict(d) => (StatusCode::CONFLICT, d),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request body too large".to_string()),
            ApiError::Gateway(status, d) => (status, d),
            ApiError::Internal(d) => {
                tracing::error!(error = %d, "internal error serving the multi-server API");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal server error".to_string())
            }
        };
        (status, Json(ErrorBody { detail })).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
            StoreError::Invalid(why) => ApiError::BadRequest(why),
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::Store(s) => s.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Runs store work off the async threads; its error becomes the family's error.
pub(crate) async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(e.to_string()))?.map_err(Into::into)
}

/// Fallback for unknown paths (JSON, like every other error of the API).
pub async fn not_found() -> ApiError {
    ApiError::NotFound("Not Found".into())
}

/// Fallback for a known path with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// An authenticated caller (HTTP Basic).
pub struct BasicUser(#[allow(dead_code)] pub Identity);

impl FromRequestParts<AppState> for BasicUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match state.auth.basic(header).await {
            Ok(identity) => Ok(BasicUser(identity)),
            Err(AuthError::Missing) => Err(ApiError::Unauthorized("Not authenticated".into())),
            Err(AuthError::Malformed) => Err(ApiError::Unauthorized("Invalid authentication header".into())),
            Err(AuthError::Invalid) => Err(ApiError::Unauthorized("Invalid credentials".into())),
            Err(AuthError::Store(e)) => Err(e.into()),
        }
    }
}

/// Largest JSON body taken: axum's default body limit, which `Bytes` enforces while reading.
const MAX_JSON_BODY: usize = 2 * 1024 * 1024;

/// JSON body accepted whatever the Content-Type (scripts often omit it); any parse failure is a
/// 400 with the parser's explanation.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        // Refuse an announced oversize body before reading any of it: a client that sent
        // `Expect: 100-continue` then never uploads it, and nobody's connection is reset mid-send.
        let announced =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|len| len > MAX_JSON_BODY as u64) {
            return Err(ApiError::PayloadTooLarge);
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(format!("cannot read request body: {e}"))
            }
        })?;
        // serde would happily read a struct from a JSON array; the documents only take objects.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::BadRequest("request body must be a JSON object".into()));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// Query parameters; a malformed one (`?node_id=abc`) is a 400 in the family's error shape.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Query(q))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// The `{node_id}` path segment (also on routes with more parameters): a positive integer, or a
/// 400.
pub struct NodeIdPath(pub flotilla_protocol::NodeId);

impl FromRequestParts<AppState> for NodeIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let axum::extract::Path(params) =
            axum::extract::Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let raw = params.get("node_id").map(String::as_str).unwrap_or_default();
        raw.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(|id| NodeIdPath(flotilla_protocol::NodeId(id)))
            .ok_or_else(|| ApiError::BadRequest(format!("node_id must be a positive integer, got {raw:?}")))
    }
}

/// A failed call to a node's agent, as this family's error: the node being away or refusing is
/// a 409 that names it; anything else is the controller's fault.
fn node_call_error(node: &crate::store::NodeRecord, e: FleetError) -> ApiError {
    match e {
        FleetError::NotConnected(_) => ApiError::Conflict(format!("node {} ({}) is not connected", node.id, node.name)),
        FleetError::Rpc { error, .. } => ApiError::Conflict(format!("node {} ({}): {error}", node.id, node.name)),
        // The agent is there but slow or its link broke: the caller may retry; not our bug.
        FleetError::Timeout(_) => ApiError::Gateway(
            StatusCode::GATEWAY_TIMEOUT,
            format!("node {} ({}) did not answer in time", node.id, node.name),
        ),
        FleetError::Call { error, .. } => ApiError::Gateway(
            StatusCode::BAD_GATEWAY,
            format!("node {} ({}): link failed: {error}", node.id, node.name),
        ),
        other => ApiError::Internal(other.to_string()),
    }
}

/// The stored node, or a 404.
fn existing_node(state: &AppState, id: flotilla_protocol::NodeId) -> Result<crate::store::NodeRecord, ApiError> {
    state.store.node(id)?.ok_or_else(|| ApiError::NotFound(format!("node {id} not found")))
}

/// The address clients reach the node at: the host of its `url`, else the public address its
/// agent reported, else the address its link comes from.
pub(crate) fn node_address(node: &crate::store::NodeRecord, live: &crate::fleet::NodeLive) -> Option<String> {
    node.public_host
        .clone()
        .or_else(|| {
            live.facts.as_ref().or(node.facts.as_ref()).and_then(|f| f.public_ips.first()).map(|ip| ip.to_string())
        })
        .or_else(|| live.peer_addr.map(|a| a.ip().to_string()))
}

/// The nodes a multi-node request targets: all of them for `null`/absent, else each listed one
/// (an unknown id is a 404).
fn target_nodes(state: &AppState, ids: Option<&[i64]>) -> Result<Vec<crate::store::NodeRecord>, ApiError> {
    let all = state.store.nodes()?;
    let Some(ids) = ids else { return Ok(all) };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let node =
            all.iter().find(|n| n.id.0 == *id).ok_or_else(|| ApiError::NotFound(format!("node {id} not found")))?;
        if !out.iter().any(|n: &crate::store::NodeRecord| n.id == node.id) {
            out.push(node.clone());
        }
    }
    Ok(out)
}

/// Check that the API answers (public, no authentication).
#[utoipa::path(
    get,
    path = "/api/v1/health",
    operation_id = "health",
    tag = TAG,
    responses((
        status = 200, description = "The API answers", body = Health,
        example = json!({ "status": "healthy", "timestamp": "2026-02-20T22:52:00" }),
    )),
)]
pub(crate) async fn health() -> Json<Health> {
    Json(Health { status: "healthy".into(), timestamp: timestamp(time::OffsetDateTime::now_utc()) })
}

#[cfg(test)]
mod tests {
    use flotilla_protocol::NodeId;

    use super::*;

    fn node() -> crate::store::NodeRecord {
        crate::store::NodeRecord {
            id: NodeId(3),
            name: "nl-1".into(),
            url: None,
            public_host: None,
            panel_port: None,
            base_path: String::new(),
            has_panel_user: false,
            has_panel_password: false,
            revision: 0,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            enrolled_at: None,
            last_seen_at: None,
            facts: None,
            last_metrics: None,
            agent_package: None,
        }
    }

    #[test]
    fn a_slow_or_broken_node_is_a_gateway_error_not_ours() {
        let status = |e| node_call_error(&node(), e).into_response().status();
        assert_eq!(status(FleetError::Timeout(NodeId(3))), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(status(FleetError::Call { node: NodeId(3), error: "reset".into() }), StatusCode::BAD_GATEWAY);
        assert_eq!(status(FleetError::NotConnected(NodeId(3))), StatusCode::CONFLICT);
    }
}
