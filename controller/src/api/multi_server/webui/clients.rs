//! The UI's clients tab: one node's clients, one client's traffic on one node, and adding one
//! client to the same inbound id on many nodes.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::Json;
use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::UiUser;
use crate::api::multi_server::clients::Client;
use crate::api::multi_server::{
    existing_node, node_address, target_nodes, ApiError, ErrorBody, JsonBody, NodeIdPath, Query, TAG,
};
use crate::api::AppState;
use crate::fleet::push::PushOutcome;
use crate::proxy;
use crate::store::{InboundRecord, NewClient, NodeRecord, StoreError};

/// `GET /api/v1/nodes/{node_id}/clients` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeClients {
    /// The node's clients, as `GET /api/v1/clients` lists them.
    pub clients: Vec<Client>,
    pub count: usize,
}

/// One node's clients.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{node_id}/clients",
    operation_id = "node_clients",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id")),
    responses(
        (status = 200, description = "The node's clients", body = NodeClients),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
    ),
)]
pub async fn node_clients(
    _: UiUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<NodeClients>, ApiError> {
    let node = existing_node(&state, id)?;
    let live = state.fleet.live(id);
    let ip = node_address(&node, &live);
    let inbounds: HashMap<i64, InboundRecord> =
        state.store.inbounds(Some(id))?.into_iter().map(|i| (i.id, i)).collect();
    let clients: Vec<Client> = state
        .store
        .clients(Some(id), None)?
        .iter()
        .map(|c| Client::of(&node, ip.as_deref(), inbounds.get(&c.inbound_id), c).with_live(&live))
        .collect();
    Ok(Json(NodeClients { count: clients.len(), clients }))
}

/// `?email=` of the client traffic call.
#[derive(Debug, Deserialize, IntoParams)]
pub struct EmailQuery {
    /// The client's email (any case).
    email: Option<String>,
}

/// One client's traffic on one node. A client the node does not have is `available: false`
/// with an `error` (not a 404: the UI takes a 404 for "endpoint missing").
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "node": "Server-NL", "node_id": 1, "available": true, "email": "a@b",
    "upload": 123, "download": 456, "total": 579, "enable": true, "expiryTime": 0
}))]
pub struct ClientTraffic {
    pub node: String,
    pub node_id: i64,
    /// Whether the node has this client.
    pub available: bool,
    pub email: String,
    /// Bytes up, down and both, as the controller counted them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    /// Unix ms, 0 = never.
    #[serde(rename = "expiryTime", skip_serializing_if = "Option::is_none")]
    pub expiry_time: Option<i64>,
    /// `client_not_found` when unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn traffic_of(state: &AppState, node: &NodeRecord, email: &str) -> Result<ClientTraffic, ApiError> {
    let found =
        state.store.clients(Some(node.id), Some(email))?.into_iter().find(|c| c.email.eq_ignore_ascii_case(email));
    let mut out = ClientTraffic {
        node: node.name.clone(),
        node_id: node.id.0,
        available: found.is_some(),
        email: email.to_string(),
        upload: None,
        download: None,
        total: None,
        enable: None,
        expiry_time: None,
        reason: None,
        error: None,
    };
    match found {
        Some(c) => {
            out.email = c.email.clone();
            out.upload = Some(c.up);
            out.download = Some(c.down);
            out.total = Some(c.used());
            out.enable = Some(c.enable);
            out.expiry_time = Some(c.expiry_ms);
        }
        None => {
            out.reason = Some("client_not_found".into());
            out.error = Some(format!("node {} ({}) has no client {email:?}", node.id, node.name));
        }
    }
    Ok(out)
}

/// One client's traffic on one node, by `?email=`.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{node_id}/client-traffic",
    operation_id = "node_client_traffic",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id"), EmailQuery),
    responses(
        (status = 200, description = "The client's traffic, or `available: false`", body = ClientTraffic),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 400, description = "No email", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
    ),
)]
pub async fn client_traffic(
    _: UiUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
    Query(q): Query<EmailQuery>,
) -> Result<Json<ClientTraffic>, ApiError> {
    let email = q
        .email
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::BadRequest("email: query parameter is required".into()))?;
    let node = existing_node(&state, id)?;
    Ok(Json(traffic_of(&state, &node, &email)?))
}

/// One client's traffic on one node, the email in the path (the UI's older form).
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{node_id}/client/{email}/traffic",
    operation_id = "node_client_traffic_by_path",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id"), ("email" = String, Path, description = "The client's email, URL-encoded")),
    responses(
        (status = 200, description = "The client's traffic, or `available: false`", body = ClientTraffic),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
    ),
)]
pub async fn client_traffic_by_path(
    _: UiUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
    Path(segments): Path<(String, String)>,
) -> Result<Json<ClientTraffic>, ApiError> {
    let node = existing_node(&state, id)?;
    Ok(Json(traffic_of(&state, &node, &segments.1)?))
}

/// `POST /api/v1/clients/add-to-nodes` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddToNodes {
    email: Option<String>,
    /// `""`, `xtls-rprx-vision` or `xtls-rprx-vision-udp443`; kept on VLESS inbounds only.
    #[serde(default)]
    flow: Option<String>,
    /// The inbound id to add to on every node.
    #[serde(default)]
    #[schema(value_type = i64)]
    inbound_id: Option<Value>,
    /// Quota in GB (a value of 1,048,576 or more is bytes), 0 = unlimited.
    #[serde(default, rename = "totalGB")]
    #[schema(value_type = Option<i64>)]
    total_gb: Option<Value>,
    /// Unix ms, 0 = never.
    #[serde(default, rename = "expiryTime")]
    #[schema(value_type = Option<i64>)]
    expiry_time: Option<Value>,
    /// Default true.
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    enable: Option<Value>,
    /// Nodes to add to; null or absent: every node.
    #[serde(default)]
    node_ids: Option<Vec<i64>>,
}

/// One node's outcome of `add-to-nodes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddResult {
    pub node: String,
    pub node_id: i64,
    pub success: bool,
    /// `Inbound N not found`, why the node refused the client (its email is taken there, its core
    /// cannot serve it), or `Failed to add client`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When added: `applied`, `partial`, `queued` (offline node) or `failed` (agent not reached
    /// in time; the client is stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// What the node's agent reported while applying; absent when nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<String>,
}

/// Counts of `add-to-nodes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddSummary {
    pub total: usize,
    pub successful: usize,
    pub failed: usize,
}

/// `POST /api/v1/clients/add-to-nodes` answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "results": [{ "node": "Server-NL", "node_id": 1, "success": true, "status": "applied" },
                { "node": "Server-DE", "node_id": 2, "success": false, "error": "Inbound 1 not found" }],
    "summary": { "total": 2, "successful": 1, "failed": 1 }
}))]
pub struct AddToNodesResult {
    pub results: Vec<AddResult>,
    pub summary: AddSummary,
}

fn inbound_id_field(raw: Option<&Value>) -> Result<i64, ApiError> {
    match raw {
        None | Some(Value::Null) => Err(ApiError::BadRequest("inbound_id is required".into())),
        Some(Value::Number(n)) => {
            n.as_i64().ok_or_else(|| ApiError::BadRequest("inbound_id must be an integer".into()))
        }
        Some(Value::String(s)) => {
            s.trim().parse().map_err(|_| ApiError::BadRequest("inbound_id must be an integer".into()))
        }
        Some(_) => Err(ApiError::BadRequest("inbound_id must be an integer".into())),
    }
}

/// Adds one client (one UUID or password, `subId` = email) to inbound `inbound_id` of every
/// target node; nodes without that inbound report it and the others go ahead.
#[utoipa::path(
    post,
    path = "/api/v1/clients/add-to-nodes",
    operation_id = "add_client_to_nodes",
    tag = TAG,
    security(("basic" = [])),
    request_body = AddToNodes,
    responses(
        (status = 200, description = "Per node results", body = AddToNodesResult),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 400, description = "No email or inbound_id, an invalid flow, or a malformed field", body = ErrorBody),
        (status = 404, description = "A listed node does not exist", body = ErrorBody),
    ),
)]
pub async fn add_client_to_nodes(
    _: UiUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AddToNodes>,
) -> Result<Json<AddToNodesResult>, ApiError> {
    let email = body.email.map(|e| e.trim().to_string()).filter(|e| !e.is_empty());
    let email = email.ok_or_else(|| ApiError::BadRequest("email is required".into()))?;
    let inbound_id = inbound_id_field(body.inbound_id.as_ref())?;
    let flow = body.flow.unwrap_or_default();
    if !proxy::FLOWS.contains(&flow.as_str()) {
        return Err(ApiError::BadRequest(format!("Invalid flow value. Must be one of: {:?}", proxy::FLOWS)));
    }
    let nodes = target_nodes(&state, body.node_ids.as_deref())?;

    // One identity on every node, so the email's subscription links all carry the same one.
    let mut client = Map::new();
    client.insert("email".into(), Value::from(email.clone()));
    client.insert("subId".into(), Value::from(email.clone()));
    client.insert("id".into(), Value::from(proxy::new_secret("vless")));
    client.insert("password".into(), Value::from(proxy::new_secret("trojan")));
    for (key, value) in [("totalGB", body.total_gb), ("expiryTime", body.expiry_time), ("enable", body.enable)] {
        if let Some(v) = value {
            client.insert(key.into(), v);
        }
    }
    // Every node's client is parsed before any is stored: a bad field fails the whole request.
    let mut plan: Vec<(NodeRecord, Result<NewClient, String>)> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let inbound = state.store.inbound(node.id, inbound_id)?;
        let entry = match inbound {
            None => Err(format!("Inbound {inbound_id} not found")),
            Some(i) if !proxy::has_clients(&i.protocol) => {
                Err(format!("Inbound {inbound_id} is a {} inbound, which has no clients", i.protocol))
            }
            Some(i) => {
                let mut fields = client.clone();
                // A flow belongs to VLESS clients only; other protocols drop it, as 3x-ui does.
                if i.protocol == "vless" {
                    fields.insert("flow".into(), Value::from(flow.clone()));
                }
                let parsed = proxy::parse_client(&i.protocol, &Value::Object(fields), "body").map_err(|e| {
                    ApiError::BadRequest(format!(
                        "{}: {}",
                        e.field.strip_prefix("body.").unwrap_or(&e.field),
                        e.message
                    ))
                })?;
                Ok(parsed)
            }
        };
        plan.push((node, entry));
    }
    let mut stored: Vec<(NodeRecord, Result<(), String>)> = Vec::with_capacity(plan.len());
    for (node, entry) in plan {
        let outcome = match entry {
            Err(e) => Err(e),
            Ok(new) => match state.store.add_clients(node.id, inbound_id, std::slice::from_ref(&new)) {
                Ok(mut outcomes) => outcomes.pop().unwrap_or_else(|| Err("Failed to add client".into())),
                Err(StoreError::NotFound(_)) => Err(format!("Inbound {inbound_id} not found")),
                Err(e) => return Err(e.into()),
            },
        };
        stored.push((node, outcome));
    }
    let added: Vec<NodeId> = stored.iter().filter(|(_, o)| o.is_ok()).map(|(n, _)| n.id).collect();
    let outcomes = state.fleet.push_many(&added).await;
    let mut rollback = vec![];
    let mut results = Vec::with_capacity(stored.len());
    for (node, mut outcome) in stored {
        let pushed = outcomes.get(&node.id);
        // A client the node's core cannot take (a Vision flow on v2ray) is removed again there.
        if let Some(PushOutcome::Applied(report)) = pushed {
            let what = format!("client {email}");
            let refused: Vec<&str> = report
                .failures
                .iter()
                .filter(|(w, _)| w.eq_ignore_ascii_case(&what))
                .map(|(_, why)| why.as_str())
                .collect();
            if !refused.is_empty() {
                if let Some(c) = state.store.client(node.id, inbound_id, &email)? {
                    state.store.delete_client(&c)?;
                    rollback.push(node.id);
                }
                outcome = Err(format!("node {} ({}) refused the client: {}", node.id, node.name, refused.join("; ")));
            }
        }
        results.push(AddResult {
            node: node.name,
            node_id: node.id.0,
            status: pushed.filter(|_| outcome.is_ok()).map(|o| o.status().to_string()),
            errors: pushed.map(|o| o.errors()).unwrap_or_default(),
            success: outcome.is_ok(),
            error: outcome.err(),
        });
    }
    if !rollback.is_empty() {
        state.fleet.push_many(&rollback).await;
    }
    let successful = results.iter().filter(|r| r.success).count();
    let summary = AddSummary { total: results.len(), successful, failed: results.len() - successful };
    Ok(Json(AddToNodesResult { results, summary }))
}
