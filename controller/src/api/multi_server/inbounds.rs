//! `/api/v1/inbounds`: inbounds across the fleet, created on many nodes at once, cloned, deleted.
//!
//! Inbound ids are numbered per node, as each 3x-ui panel numbers its own; `node_id` says which
//! node's inbound is meant.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use flotilla_agent::drivers::core::config::check_support;
use flotilla_protocol::proxy::InboundSpec;
use flotilla_protocol::NodeId;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{existing_node, node_address, target_nodes, ApiError, BasicUser, JsonBody};
use crate::api::AppState;
use crate::fleet::push::PushOutcome;
use crate::proxy::{self, InboundInput};
use crate::store::{ClientRecord, InboundRecord, NewClient, NodeRecord};

/// `GET /api/v1/inbounds` filters.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    protocol: Option<String>,
    security: Option<String>,
    node_id: Option<i64>,
}

/// One inbound as listed: the document's fields, plus the 3x-ui objects scripts read.
pub fn inbound_json(node: &NodeRecord, ip: Option<&str>, inbound: &InboundRecord, clients: &[&ClientRecord]) -> Value {
    let stream = proxy::stored_object(&inbound.stream_settings);
    let security = proxy::security(&stream);
    json!({
        "id": inbound.id,
        "node_id": node.id.0,
        "node_name": node.name,
        "node_ip": ip,
        "protocol": inbound.protocol,
        "port": inbound.port,
        "listen": inbound.listen,
        "tag": inbound.tag,
        "remark": inbound.remark,
        "enable": inbound.enable,
        "security": security,
        "is_reality": security == "reality",
        "settings": proxy::settings_with_clients(inbound, clients),
        "streamSettings": stream,
        "sniffing": proxy::stored_object(&inbound.sniffing),
        "up": inbound.up,
        "down": inbound.down,
        "total": inbound.up + inbound.down,
        "expiryTime": 0,
        "clientCount": clients.len(),
    })
}

pub async fn list(
    _: BasicUser,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let nodes: HashMap<NodeId, NodeRecord> = state.store.nodes()?.into_iter().map(|n| (n.id, n)).collect();
    let node_filter = q.node_id.map(NodeId);
    if let Some(id) = node_filter {
        existing_node(&state, id)?;
    }
    let clients = state.store.clients(node_filter, None)?;
    let mut by_inbound: HashMap<(NodeId, i64), Vec<&ClientRecord>> = HashMap::new();
    for c in &clients {
        by_inbound.entry((c.node_id, c.inbound_id)).or_default().push(c);
    }
    let mut ips = HashMap::new();
    let mut items = vec![];
    for inbound in state.store.inbounds(node_filter)? {
        let Some(node) = nodes.get(&inbound.node_id) else { continue };
        if q.protocol.as_deref().is_some_and(|p| !p.eq_ignore_ascii_case(&inbound.protocol)) {
            continue;
        }
        if let Some(want) = &q.security {
            if !want.eq_ignore_ascii_case(&proxy::security(&proxy::stored_object(&inbound.stream_settings))) {
                continue;
            }
        }
        let ip = ips.entry(node.id).or_insert_with(|| node_address(node, &state.fleet.live(node.id))).clone();
        let empty = vec![];
        let clients = by_inbound.get(&(node.id, inbound.id)).unwrap_or(&empty);
        items.push(inbound_json(node, ip.as_deref(), &inbound, clients));
    }
    Ok(Json(json!({ "count": items.len(), "inbounds": items })))
}

/// Refuses an inbound the node's core cannot serve, when the node's core is known.
fn check_core(state: &AppState, node: &NodeRecord, input: &InboundInput) -> Result<(), ApiError> {
    let Some(core) = state.fleet.live(node.id).core else { return Ok(()) };
    let Some(flavor) = core.flavor else { return Ok(()) };
    let spec = InboundSpec {
        tag: input.inbound.tag.clone().unwrap_or_default(),
        listen: input.inbound.listen.clone(),
        port: input.inbound.port,
        protocol: input.inbound.protocol.clone(),
        settings: input.inbound.settings.clone(),
        stream_settings: input.inbound.stream_settings.clone(),
        sniffing: input.inbound.sniffing.clone(),
        enable: true,
    };
    check_support(flavor, &spec).map_err(|e| {
        ApiError::BadRequest(format!("node {} ({}): {} {}: {e}", node.id, node.name, flavor.as_str(), core.version))
    })
}

/// Refuses a port another inbound of the node already uses.
fn check_port(state: &AppState, node: &NodeRecord, port: u16) -> Result<(), ApiError> {
    if let Some(other) = state.store.inbounds(Some(node.id))?.into_iter().find(|i| i.port == port) {
        return Err(ApiError::BadRequest(format!(
            "port: {port} is already used by inbound {} on node {} ({})",
            other.id, node.id, node.name
        )));
    }
    Ok(())
}

/// Creates `input` on every node, pushes, and rolls back on nodes whose agent refused it (the
/// port is held by another program, the core cannot serve it). Returns per-node results.
async fn create_on(
    state: &AppState,
    nodes: &[NodeRecord],
    input: &InboundInput,
    clients: impl Fn(&NodeRecord) -> Vec<NewClient>,
) -> Result<Vec<Value>, ApiError> {
    for node in nodes {
        check_port(state, node, input.inbound.port)?;
        check_core(state, node, input)?;
    }
    let mut created: Vec<(NodeRecord, InboundRecord)> = vec![];
    for node in nodes {
        let record = state.store.create_inbound(node.id, &input.inbound, &clients(node))?;
        created.push((node.clone(), record));
    }
    let ids: Vec<NodeId> = created.iter().map(|(n, _)| n.id).collect();
    let outcomes = state.fleet.push_many(&ids).await;
    let mut rollback = vec![];
    let mut results = vec![];
    for (node, record) in &created {
        let outcome = &outcomes[&node.id];
        let refused: Vec<String> = match outcome {
            PushOutcome::Applied(r) => r
                .failures
                .iter()
                .filter(|(what, _)| *what == format!("inbound {}", record.tag))
                .map(|(_, why)| format!("node {} ({}): {why}", node.id, node.name))
                .collect(),
            _ => vec![],
        };
        if !refused.is_empty() {
            state.store.delete_inbound(node.id, record.id)?;
            rollback.push(node.id);
            results.push(json!({
                "node": node.name, "node_id": node.id.0, "success": false, "status": "refused",
                "error": refused.join("; "),
            }));
            continue;
        }
        results.push(json!({
            "node": node.name,
            "node_id": node.id.0,
            "success": true,
            "status": outcome.status(),
            "inbound_id": record.id,
            "tag": record.tag,
            "port": record.port,
            "remark": record.remark,
            "errors": outcome.errors(),
        }));
    }
    if !rollback.is_empty() {
        state.fleet.push_many(&rollback).await;
        if rollback.len() == created.len() {
            let why: Vec<&str> = results.iter().filter_map(|r| r["error"].as_str()).collect();
            return Err(ApiError::BadRequest(format!("inbound refused: {}", why.join("; "))));
        }
    }
    Ok(results)
}

fn node_ids_field(body: &Map<String, Value>, field: &str) -> Result<Option<Vec<i64>>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| ApiError::BadRequest(format!("{field}: must be a list of node ids"))))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ApiError::BadRequest(format!("{field}: must be a list of node ids or null"))),
    }
}

pub async fn create(
    _: BasicUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let ids = node_ids_field(&body, "node_ids")?;
    let input = proxy::parse_inbound(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let nodes = target_nodes(&state, ids.as_deref())?;
    if nodes.is_empty() {
        return Err(ApiError::BadRequest("node_ids: there are no nodes to add the inbound to".into()));
    }
    let results = create_on(&state, &nodes, &input, |_| input.clients.clone()).await?;
    Ok(Json(json!({ "success": true, "results": results })))
}

/// `POST /api/v1/inbounds/clone` body.
#[derive(Debug, Deserialize)]
pub struct CloneBody {
    source_node_id: Option<i64>,
    source_inbound_id: Option<i64>,
    #[serde(default)]
    target_node_ids: Option<Vec<i64>>,
    #[serde(default)]
    modifications: Map<String, Value>,
}

pub async fn clone(
    _: BasicUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CloneBody>,
) -> Result<Json<Value>, ApiError> {
    let (Some(source_node), Some(source_id)) = (body.source_node_id, body.source_inbound_id) else {
        return Err(ApiError::BadRequest("source_node_id and source_inbound_id are required".into()));
    };
    let source_node = existing_node(&state, NodeId(source_node))?;
    let source = state
        .store
        .inbound(source_node.id, source_id)?
        .ok_or_else(|| ApiError::NotFound(format!("inbound {source_id} not found on node {}", source_node.id)))?;
    let include_clients = body.modifications.get("include_clients").and_then(Value::as_bool).unwrap_or(false);
    let mut merged = Map::new();
    merged.insert("port".into(), json!(source.port));
    merged.insert("protocol".into(), json!(source.protocol));
    merged.insert("remark".into(), json!(source.remark));
    merged.insert("listen".into(), json!(source.listen));
    merged.insert("enable".into(), json!(source.enable));
    merged.insert("settings".into(), proxy::stored_object(&source.settings));
    merged.insert("streamSettings".into(), proxy::stored_object(&source.stream_settings));
    merged.insert("sniffing".into(), proxy::stored_object(&source.sniffing));
    for (k, v) in body.modifications {
        if k != "include_clients" {
            merged.insert(k, v);
        }
    }
    let input = proxy::parse_inbound(&merged).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let targets = match body.target_node_ids.as_deref() {
        Some([]) | None => state.store.nodes()?.into_iter().filter(|n| n.id != source_node.id).collect(),
        Some(ids) => target_nodes(&state, Some(ids))?,
    };
    if targets.is_empty() {
        return Err(ApiError::BadRequest("target_node_ids: there are no other nodes to clone to".into()));
    }
    let source_clients: Vec<NewClient> = if include_clients {
        state
            .store
            .clients(Some(source_node.id), None)?
            .into_iter()
            .filter(|c| c.inbound_id == source.id)
            .map(|c| NewClient {
                email: c.email,
                secret: c.secret,
                flow: c.flow,
                enable: c.enable,
                expiry_ms: c.expiry_ms,
                total_bytes: c.total_bytes,
                limit_ip: c.limit_ip,
                sub_id: c.sub_id,
                tg_id: c.tg_id,
                comment: c.comment,
            })
            .collect()
    } else {
        vec![]
    };
    let results = create_on(&state, &targets, &input, |_| source_clients.clone()).await?;
    Ok(Json(json!({ "success": true, "results": results })))
}

/// `?node_id=` of a delete.
#[derive(Debug, Deserialize)]
pub struct NodeQuery {
    node_id: Option<String>,
}

pub async fn delete(
    _: BasicUser,
    State(state): State<AppState>,
    axum::extract::Path(inbound_id): axum::extract::Path<String>,
    Query(q): Query<NodeQuery>,
) -> Result<Json<Value>, ApiError> {
    let inbound_id: i64 = inbound_id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("inbound_id must be an integer, got {inbound_id:?}")))?;
    let node_id = q
        .node_id
        .ok_or_else(|| ApiError::BadRequest("node_id: query parameter is required".into()))?
        .parse::<i64>()
        .map_err(|_| ApiError::BadRequest("node_id: must be an integer".into()))?;
    let node = existing_node(&state, NodeId(node_id))?;
    if !state.store.delete_inbound(node.id, inbound_id)? {
        return Err(ApiError::NotFound(format!("inbound {inbound_id} not found on node {}", node.id)));
    }
    let outcome = state.fleet.push_proxy_state(node.id).await;
    Ok(Json(json!({
        "success": true,
        "node": node.name,
        "status": outcome.status(),
        "errors": outcome.errors(),
    })))
}
