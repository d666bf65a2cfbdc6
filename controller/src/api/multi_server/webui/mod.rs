//! The endpoints the original system's React web UI calls beyond the document
//! (`research/msm-frontend-api.md` §3): login checks, node renames, per-node inbound and client
//! lists in the shapes the UI reads, batch inbound changes, adding one client to many nodes, the
//! live fleet snapshot, and the monitoring tab (node history, AdGuard Home panels, the
//! Prometheus/Loki/Grafana stack). Paths, bodies and answers follow what the UI sends and reads; errors
//! are the family's `{"detail": "…"}`.
//!
//! A 401 from these routes carries no `WWW-Authenticate` challenge: the UI checks credentials
//! itself, and a challenge would make the browser pop up its own login dialog over it.

pub(crate) mod adguard;
pub(crate) mod auth;
pub(crate) mod clients;
pub(crate) mod inbounds;
pub(crate) mod monitoring;
pub(crate) mod nodes;
pub(crate) mod snapshots;
pub(crate) mod stack;

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

use super::BasicUser;
use crate::api::AppState;
use crate::auth::Identity;

/// Routes of the web UI.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/mfa-status", get(auth::mfa_status))
        .route("/api/v1/auth/verify", get(auth::verify))
        .route("/api/v1/nodes/list", get(nodes::list_names))
        .route("/api/v1/nodes/check-connection", post(nodes::check_connection))
        .route("/api/v1/nodes/refresh-now", post(nodes::refresh_now))
        .route("/api/v1/nodes/{node_id}", put(nodes::rename_node))
        .route("/api/v1/nodes/{node_id}/server-status", get(nodes::server_status))
        .route("/api/v1/nodes/{node_id}/inbounds", get(inbounds::node_inbounds))
        .route("/api/v1/nodes/{node_id}/clients", get(clients::node_clients))
        .route("/api/v1/nodes/{node_id}/client-traffic", get(clients::client_traffic))
        .route("/api/v1/nodes/{node_id}/client/{email}/traffic", get(clients::client_traffic_by_path))
        .route("/api/v1/inbounds/batch-enable", post(inbounds::batch_enable_inbounds))
        .route("/api/v1/inbounds/batch-update", post(inbounds::batch_update_inbounds))
        .route("/api/v1/inbounds/batch-delete", post(inbounds::batch_delete_inbounds))
        .route("/api/v1/clients/add-to-nodes", post(clients::add_client_to_nodes))
        .route("/api/v1/snapshots/latest", get(snapshots::latest_snapshot))
        .route("/api/v1/health/deps", get(monitoring::health_deps))
        .route("/api/v1/history/nodes/{node_id}", get(monitoring::node_history))
        .route("/api/v1/adguard/sources", get(adguard::list_sources).post(adguard::create_source))
        .route("/api/v1/adguard/sources/{source_id}", put(adguard::update_source).delete(adguard::delete_source))
        .route("/api/v1/adguard/collect-now", post(adguard::collect_now))
        .route("/api/v1/adguard/overview", get(adguard::overview))
        .route("/api/v1/adguard/history", get(adguard::history))
        .route("/api/v1/monitoring/stack", get(stack::stack))
}

/// A caller authenticated with HTTP Basic, as [`BasicUser`], whose 401 has no challenge header.
pub struct UiUser(pub Identity);

impl FromRequestParts<AppState> for UiUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match BasicUser::from_request_parts(parts, state).await {
            Ok(BasicUser(identity)) => Ok(UiUser(identity)),
            Err(e) => {
                let mut response = e.into_response();
                response.headers_mut().remove(header::WWW_AUTHENTICATE);
                Err(response)
            }
        }
    }
}

/// Why a node is unavailable, as the UI's `reason` codes go (`ok` when it is available).
fn reason(node: &crate::store::NodeRecord, connected: bool) -> &'static str {
    match (connected, node.enrolled_at) {
        (true, _) => "ok",
        (false, None) => "not_enrolled",
        (false, Some(_)) => "agent_offline",
    }
}
