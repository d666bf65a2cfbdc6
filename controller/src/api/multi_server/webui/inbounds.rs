//! The UI's inbounds tab: one node's inbounds as 3x-ui's own objects, and batch enable, update
//! and delete across nodes. Batch changes are stored, then pushed to every touched node's agent
//! at once (an inbound enabled or disabled restarts that node's core); an offline node gets them
//! when it reconnects.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::Json;
use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::UiUser;
use crate::api::multi_server::{existing_node, target_nodes, ApiError, ErrorBody, JsonBody, NodeIdPath, TAG};
use crate::api::AppState;
use crate::fleet::push::PushOutcome;
use crate::proxy;
use crate::store::{ClientRecord, InboundRecord, NodeRecord};

/// A client's counters in 3x-ui's `clientStats` shape.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct XuiClientStat {
    /// The client's row id.
    pub id: i64,
    pub inbound_id: i64,
    /// False while the client is disabled, or cut off for expiry or quota.
    pub enable: bool,
    pub email: String,
    /// Bytes.
    pub up: u64,
    pub down: u64,
    /// Unix ms, 0 = never.
    pub expiry_time: i64,
    /// Quota in bytes, 0 = unlimited.
    pub total: u64,
    /// Days between automatic resets; always 0.
    pub reset: u32,
}

/// An inbound as 3x-ui's `/panel/api/inbounds/list` gives it: `settings`, `streamSettings` and
/// `sniffing` are JSON text. `security` is added (from `streamSettings`) for the UI's column.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": 1, "up": 0, "down": 0, "total": 0, "remark": "Main", "enable": true, "expiryTime": 0,
    "clientStats": [{ "id": 1, "inboundId": 1, "enable": true, "email": "a@b", "up": 0, "down": 0,
                      "expiryTime": 0, "total": 0, "reset": 0 }],
    "listen": "", "port": 443, "protocol": "vless",
    "settings": "{\"clients\":[…],\"decryption\":\"none\"}", "streamSettings": "{\"network\":\"tcp\",\"security\":\"none\"}",
    "tag": "inbound-443", "sniffing": "{}", "security": "none"
}))]
pub struct XuiInbound {
    pub id: i64,
    /// Bytes through the inbound.
    pub up: u64,
    pub down: u64,
    /// 3x-ui's inbound quota in bytes; always 0 (unlimited): quotas are per client.
    pub total: u64,
    pub remark: String,
    pub enable: bool,
    /// Always 0 (never): expiry is per client.
    pub expiry_time: i64,
    pub client_stats: Vec<XuiClientStat>,
    pub listen: String,
    pub port: u16,
    pub protocol: String,
    /// JSON text, with the clients.
    pub settings: String,
    /// JSON text.
    pub stream_settings: String,
    pub tag: String,
    /// JSON text.
    pub sniffing: String,
    /// `streamSettings.security`, `none` when unset.
    pub security: String,
}

fn xui_inbound(inbound: &InboundRecord, clients: &[&ClientRecord]) -> XuiInbound {
    XuiInbound {
        id: inbound.id,
        up: inbound.up,
        down: inbound.down,
        total: 0,
        remark: inbound.remark.clone(),
        enable: inbound.enable,
        expiry_time: 0,
        client_stats: clients
            .iter()
            .map(|c| XuiClientStat {
                id: c.row,
                inbound_id: inbound.id,
                enable: c.enable && c.cut_off.is_none(),
                email: c.email.clone(),
                up: c.up,
                down: c.down,
                expiry_time: c.expiry_ms,
                total: c.total_bytes,
                reset: 0,
            })
            .collect(),
        listen: inbound.listen.clone(),
        port: inbound.port,
        protocol: inbound.protocol.clone(),
        settings: proxy::settings_with_clients(inbound, clients).to_string(),
        stream_settings: inbound.stream_settings.clone(),
        tag: inbound.tag.clone(),
        sniffing: inbound.sniffing.clone(),
        security: proxy::security(&proxy::stored_object(&inbound.stream_settings)),
    }
}

/// `GET /api/v1/nodes/{node_id}/inbounds` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeInbounds {
    pub node: String,
    pub node_id: i64,
    /// Always true: the controller holds every node's inbounds, also while its agent is away.
    pub available: bool,
    /// Whether the node's agent is connected now (changes to an offline node are queued).
    pub connected: bool,
    pub inbounds: Vec<XuiInbound>,
}

/// One node's inbounds in 3x-ui's shape.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{node_id}/inbounds",
    operation_id = "node_inbounds",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id")),
    responses(
        (status = 200, description = "The node's inbounds", body = NodeInbounds),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
    ),
)]
pub async fn node_inbounds(
    _: UiUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<NodeInbounds>, ApiError> {
    let node = existing_node(&state, id)?;
    let clients = state.store.clients(Some(id), None)?;
    let inbounds = state
        .store
        .inbounds(Some(id))?
        .iter()
        .map(|i| {
            let mine: Vec<&ClientRecord> = clients.iter().filter(|c| c.inbound_id == i.id).collect();
            xui_inbound(i, &mine)
        })
        .collect();
    Ok(Json(NodeInbounds {
        node: node.name,
        node_id: id.0,
        available: true,
        connected: state.fleet.live(id).connected,
        inbounds,
    }))
}

/// `POST /api/v1/inbounds/batch-enable` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchEnableInbounds {
    /// Nodes to change; null or absent: every node.
    #[serde(default)]
    node_ids: Option<Vec<i64>>,
    /// Inbound ids, changed on every listed node that has them.
    #[serde(default)]
    inbound_ids: Option<Vec<i64>>,
    /// Default true.
    #[serde(default)]
    enable: Option<bool>,
}

/// The fields `batch-update` may change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundUpdates {
    #[serde(default)]
    remark: Option<String>,
    #[serde(default)]
    enable: Option<bool>,
}

/// `POST /api/v1/inbounds/batch-update` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchUpdateInbounds {
    #[serde(default)]
    node_ids: Option<Vec<i64>>,
    #[serde(default)]
    inbound_ids: Option<Vec<i64>>,
    #[serde(default)]
    updates: InboundUpdates,
}

/// `POST /api/v1/inbounds/batch-delete` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchDeleteInbounds {
    #[serde(default)]
    node_ids: Option<Vec<i64>>,
    #[serde(default)]
    inbound_ids: Option<Vec<i64>>,
}

/// One inbound of a batch change.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundResult {
    pub node: String,
    pub node_id: i64,
    pub inbound_id: i64,
    pub remark: String,
    /// The change is stored (and applied, or queued for an offline node). False when the node's
    /// core refused an inbound this change enabled; it is disabled again then.
    pub success: bool,
    /// `batch-enable` only: the requested state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `applied`, `partial`, `queued`, `failed` (agent not reached in time; the change is
    /// stored), `unchanged` (nothing to do) or `refused`.
    pub status: String,
    /// Why `success` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the node's agent reported while applying.
    pub errors: Vec<String>,
}

/// Answer of the batch inbound calls.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "results": [{ "node": "Server-NL", "node_id": 1, "inbound_id": 3, "remark": "Main", "success": true,
                  "enabled": false, "status": "applied", "errors": [] }],
    "total": 1, "successful": 1
}))]
pub struct InboundBatchResult {
    pub results: Vec<InboundResult>,
    pub total: usize,
    pub successful: usize,
}

enum Change {
    Flags { remark: Option<String>, enable: Option<bool> },
    Delete,
}

/// One inbound the batch touched.
struct Touched {
    node: NodeRecord,
    /// As it is after the change (before it, for a delete).
    inbound: InboundRecord,
    was_enabled: bool,
    changed: bool,
}

/// The listed inbound ids; none is a 400.
fn required(inbound_ids: Option<Vec<i64>>) -> Result<Vec<i64>, ApiError> {
    inbound_ids.filter(|ids| !ids.is_empty()).ok_or_else(|| ApiError::BadRequest("inbound_ids required".into()))
}

/// Applies `change` to every listed inbound id on every target node that has it, then pushes.
async fn apply(
    state: &AppState,
    node_ids: Option<&[i64]>,
    ids: Vec<i64>,
    change: Change,
    report_enabled: Option<bool>,
) -> Result<InboundBatchResult, ApiError> {
    let nodes = target_nodes(state, node_ids)?;
    let mut touched = vec![];
    for node in &nodes {
        for inbound in state.store.inbounds(Some(node.id))?.into_iter().filter(|i| ids.contains(&i.id)) {
            let was_enabled = inbound.enable;
            match &change {
                Change::Flags { remark, enable } => {
                    if let Some((after, changed)) =
                        state.store.update_inbound_flags(node.id, inbound.id, remark.as_deref(), *enable)?
                    {
                        touched.push(Touched { node: node.clone(), inbound: after, was_enabled, changed });
                    }
                }
                Change::Delete => {
                    if state.store.delete_inbound(node.id, inbound.id)? {
                        touched.push(Touched { node: node.clone(), inbound, was_enabled, changed: true });
                    }
                }
            }
        }
    }
    let changed: Vec<NodeId> =
        touched.iter().filter(|t| t.changed).map(|t| t.node.id).collect::<BTreeSet<_>>().into_iter().collect();
    let outcomes = state.fleet.push_many(&changed).await;
    let mut rollback = BTreeSet::new();
    let mut results = Vec::with_capacity(touched.len());
    for t in touched {
        let outcome = outcomes.get(&t.node.id).filter(|_| t.changed);
        // An inbound this change enabled that the core cannot serve (its port is held by another
        // program, the core lacks a feature) is disabled again, as a refused new inbound is.
        let refused: Vec<String> = match outcome {
            Some(PushOutcome::Applied(report)) if t.inbound.enable && !t.was_enabled => report
                .failures
                .iter()
                .filter(|(what, _)| *what == format!("inbound {}", t.inbound.tag))
                .map(|(_, why)| why.clone())
                .collect(),
            _ => vec![],
        };
        if !refused.is_empty() {
            state.store.update_inbound_flags(t.node.id, t.inbound.id, None, Some(false))?;
            rollback.insert(t.node.id);
        }
        let success = refused.is_empty();
        results.push(InboundResult {
            node: t.node.name.clone(),
            node_id: t.node.id.0,
            inbound_id: t.inbound.id,
            remark: t.inbound.remark.clone(),
            success,
            enabled: report_enabled,
            status: match outcome {
                _ if !success => "refused".into(),
                Some(o) => o.status().into(),
                None => "unchanged".into(),
            },
            error: (!success).then(|| {
                format!(
                    "node {} ({}) cannot serve inbound {}: {}",
                    t.node.id,
                    t.node.name,
                    t.inbound.tag,
                    refused.join("; ")
                )
            }),
            errors: outcome.map(PushOutcome::errors).unwrap_or_default(),
        });
    }
    if !rollback.is_empty() {
        state.fleet.push_many(&rollback.into_iter().collect::<Vec<_>>()).await;
    }
    let successful = results.iter().filter(|r| r.success).count();
    Ok(InboundBatchResult { total: results.len(), successful, results })
}

/// Tells the web UI's open feeds (`inbound_update` on channel `inbounds`), then hands `result` on.
fn announce(state: &AppState, action: &str, result: InboundBatchResult) -> InboundBatchResult {
    if let Ok(value) = serde_json::to_value(&result) {
        state.feed.inbound_update(action, &value);
    }
    result
}

/// Enables or disables inbounds on many nodes (every listed id on every listed node that has it).
#[utoipa::path(
    post,
    path = "/api/v1/inbounds/batch-enable",
    operation_id = "batch_enable_inbounds",
    tag = TAG,
    security(("basic" = [])),
    request_body = BatchEnableInbounds,
    responses(
        (status = 200, description = "Per inbound results", body = InboundBatchResult),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 400, description = "No inbound_ids, or a malformed body", body = ErrorBody),
        (status = 404, description = "A listed node does not exist", body = ErrorBody),
    ),
)]
pub async fn batch_enable_inbounds(
    _: UiUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BatchEnableInbounds>,
) -> Result<Json<InboundBatchResult>, ApiError> {
    let ids = required(body.inbound_ids)?;
    let enable = body.enable.unwrap_or(true);
    let change = Change::Flags { remark: None, enable: Some(enable) };
    let result = apply(&state, body.node_ids.as_deref(), ids, change, Some(enable)).await?;
    Ok(Json(announce(&state, "batch_enable", result)))
}

/// Changes the remark and/or enable flag of inbounds on many nodes.
#[utoipa::path(
    post,
    path = "/api/v1/inbounds/batch-update",
    operation_id = "batch_update_inbounds",
    tag = TAG,
    security(("basic" = [])),
    request_body = BatchUpdateInbounds,
    responses(
        (status = 200, description = "Per inbound results", body = InboundBatchResult),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 400, description = "No inbound_ids, nothing to update, or an unsupported field", body = ErrorBody),
        (status = 404, description = "A listed node does not exist", body = ErrorBody),
    ),
)]
pub async fn batch_update_inbounds(
    _: UiUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BatchUpdateInbounds>,
) -> Result<Json<InboundBatchResult>, ApiError> {
    let ids = required(body.inbound_ids)?;
    let InboundUpdates { remark, enable } = body.updates;
    if remark.is_none() && enable.is_none() {
        return Err(ApiError::BadRequest("updates: give remark and/or enable".into()));
    }
    let change = Change::Flags { remark, enable };
    let result = apply(&state, body.node_ids.as_deref(), ids, change, None).await?;
    Ok(Json(announce(&state, "batch_update", result)))
}

/// Deletes inbounds (with their clients) on many nodes.
#[utoipa::path(
    post,
    path = "/api/v1/inbounds/batch-delete",
    operation_id = "batch_delete_inbounds",
    tag = TAG,
    security(("basic" = [])),
    request_body = BatchDeleteInbounds,
    responses(
        (status = 200, description = "Per inbound results", body = InboundBatchResult),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 400, description = "No inbound_ids, or a malformed body", body = ErrorBody),
        (status = 404, description = "A listed node does not exist", body = ErrorBody),
    ),
)]
pub async fn batch_delete_inbounds(
    _: UiUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BatchDeleteInbounds>,
) -> Result<Json<InboundBatchResult>, ApiError> {
    let ids = required(body.inbound_ids)?;
    let result = apply(&state, body.node_ids.as_deref(), ids, Change::Delete, None).await?;
    Ok(Json(announce(&state, "batch_delete", result)))
}
