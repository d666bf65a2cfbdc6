//! `/api/v1/inbounds`: inbounds across the fleet, created on many nodes at once, cloned, deleted.
//!
//! Inbound ids are numbered per node, as each 3x-ui panel numbers its own; `node_id` says which
//! node's inbound is meant.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use flotilla_agent::drivers::core::config::check_support;
use flotilla_protocol::proxy::InboundSpec;
use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::{
    existing_node, node_address, target_nodes, ApiError, BasicUser, ErrorBody, JsonBody, NodeChange, Query, TAG,
};
use crate::api::AppState;
use crate::fleet::push::PushOutcome;
use crate::proxy::{self, InboundInput};
use crate::store::{ClientRecord, InboundRecord, NewClient, NodeRecord};

/// `GET /api/v1/inbounds` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only inbounds of this protocol (`vless`, `vmess`, `trojan`, …; any case).
    protocol: Option<String>,
    /// Only inbounds of this `streamSettings.security` (`reality`, `tls`, `none`; any case).
    security: Option<String>,
    /// Only inbounds of this node.
    node_id: Option<i64>,
}

/// One inbound as listed: the document's fields, plus the 3x-ui objects scripts read.
#[derive(Debug, Serialize, ToSchema)]
pub struct Inbound {
    /// Inbound id, numbered per node.
    pub id: i64,
    pub node_id: i64,
    pub node_name: String,
    /// The address clients reach the node at; null when none is known yet.
    pub node_ip: Option<String>,
    pub protocol: String,
    pub port: u16,
    /// Listen address; empty for all addresses.
    pub listen: String,
    pub tag: String,
    pub remark: String,
    pub enable: bool,
    /// `streamSettings.security`, `none` when unset.
    pub security: String,
    pub is_reality: bool,
    /// 3x-ui `settings`, with the inbound's clients in `settings.clients`.
    #[schema(value_type = Object)]
    pub settings: Value,
    /// 3x-ui `streamSettings`.
    #[serde(rename = "streamSettings")]
    #[schema(value_type = Object)]
    pub stream_settings: Value,
    /// 3x-ui `sniffing`.
    #[schema(value_type = Object)]
    pub sniffing: Value,
    /// Bytes up, summed over its clients (as counted by the core).
    pub up: u64,
    pub down: u64,
    pub total: u64,
    /// Always 0: inbounds do not expire.
    #[serde(rename = "expiryTime")]
    pub expiry_time: i64,
    #[serde(rename = "clientCount")]
    pub client_count: usize,
}

impl Inbound {
    pub fn of(node: &NodeRecord, ip: Option<&str>, inbound: &InboundRecord, clients: &[&ClientRecord]) -> Self {
        let stream = proxy::stored_object(&inbound.stream_settings);
        let security = proxy::security(&stream);
        Inbound {
            id: inbound.id,
            node_id: node.id.0,
            node_name: node.name.clone(),
            node_ip: ip.map(str::to_string),
            protocol: inbound.protocol.clone(),
            port: inbound.port,
            listen: inbound.listen.clone(),
            tag: inbound.tag.clone(),
            remark: inbound.remark.clone(),
            enable: inbound.enable,
            is_reality: security == "reality",
            security,
            settings: proxy::settings_with_clients(inbound, clients),
            stream_settings: stream,
            sniffing: proxy::stored_object(&inbound.sniffing),
            up: inbound.up,
            down: inbound.down,
            total: inbound.up + inbound.down,
            expiry_time: 0,
            client_count: clients.len(),
        }
    }
}

/// `GET /api/v1/inbounds` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundList {
    pub inbounds: Vec<Inbound>,
    pub count: usize,
}

/// `POST /api/v1/inbounds` body: an inbound in the 3x-ui shape, created on every listed node.
/// (Documentation of the body; the handler reads it field by field so each bad field is a 400
/// naming it.)
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct InboundBody {
    /// Nodes to create it on; absent or null for every node.
    pub node_ids: Option<Vec<i64>>,
    /// 1-65535, free on every target node. An integer or a string holding one.
    #[schema(minimum = 1, maximum = 65535)]
    pub port: i64,
    /// `vless`, `vmess`, `trojan`, `shadowsocks`, `dokodemo-door`, `socks` or `http` (any case).
    pub protocol: String,
    pub remark: Option<String>,
    /// IP address to listen on; empty for all.
    pub listen: Option<String>,
    /// Core tag; `inbound-<port>` by default (3x-ui's).
    pub tag: Option<String>,
    /// Default true.
    pub enable: Option<bool>,
    /// 3x-ui `settings`, as an object or as JSON text; `settings.clients` become clients of the inbound.
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
    /// 3x-ui `streamSettings`, as an object or as JSON text.
    #[serde(rename = "streamSettings")]
    #[schema(value_type = Option<Object>)]
    pub stream_settings: Option<Value>,
    /// 3x-ui `sniffing`, as an object or as JSON text.
    #[schema(value_type = Option<Object>)]
    pub sniffing: Option<Value>,
}

/// What one node did with a created or cloned inbound.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundNodeResult {
    pub node: String,
    pub node_id: i64,
    /// False when the node's agent refused the inbound (it was rolled back there).
    pub success: bool,
    /// `applied`, `partial`, `queued` or `failed` (see the single-node answers), or `refused`.
    pub status: String,
    /// Id of the new inbound on this node; only on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i64, required = false)]
    pub inbound_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u16, required = false)]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub remark: Option<String>,
    /// What the node's core refused; only on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<String>, required = false)]
    pub errors: Option<Vec<String>>,
    /// Why the node refused it; only when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub error: Option<String>,
}

/// `POST /api/v1/inbounds` and `POST /api/v1/inbounds/clone` answer: one result per node.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundResults {
    pub success: bool,
    pub results: Vec<InboundNodeResult>,
}

/// List every inbound across the fleet, with its clients in `settings.clients`.
#[utoipa::path(
    get,
    path = "/api/v1/inbounds",
    operation_id = "list_inbounds",
    tag = TAG,
    security(("basic" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Matching inbounds", body = InboundList, example = list_example),
        (status = 400, description = "Malformed query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "`node_id` names no node", body = ErrorBody),
    ),
)]
pub async fn list(
    _: BasicUser,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<InboundList>, ApiError> {
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
        items.push(Inbound::of(node, ip.as_deref(), &inbound, clients));
    }
    Ok(Json(InboundList { count: items.len(), inbounds: items }))
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
) -> Result<Vec<InboundNodeResult>, ApiError> {
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
            results.push(InboundNodeResult {
                node: node.name.clone(),
                node_id: node.id.0,
                success: false,
                status: "refused".into(),
                inbound_id: None,
                tag: None,
                port: None,
                remark: None,
                errors: None,
                error: Some(refused.join("; ")),
            });
            continue;
        }
        results.push(InboundNodeResult {
            node: node.name.clone(),
            node_id: node.id.0,
            success: true,
            status: outcome.status().into(),
            inbound_id: Some(record.id),
            tag: Some(record.tag.clone()),
            port: Some(record.port),
            remark: Some(record.remark.clone()),
            errors: Some(outcome.errors()),
            error: None,
        });
    }
    if !rollback.is_empty() {
        state.fleet.push_many(&rollback).await;
        if rollback.len() == created.len() {
            let why: Vec<&str> = results.iter().filter_map(|r| r.error.as_deref()).collect();
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

/// Create an inbound on every listed node (every node when `node_ids` is absent).
///
/// A node whose agent refuses it (its port is held by another program, its core cannot serve
/// it) gets a `refused` result and the inbound is rolled back there; when every node refuses,
/// the answer is a 400.
#[utoipa::path(
    post,
    path = "/api/v1/inbounds",
    operation_id = "create_inbound",
    tag = TAG,
    security(("basic" = [])),
    request_body(content = InboundBody, example = create_example),
    responses(
        (status = 200, description = "One result per node", body = InboundResults, example = results_example),
        (
            status = 400,
            description = "Malformed body; a bad field (the message starts with its name, e.g. `port: …`); \
                           the port is taken on a node; a node's core cannot serve it; every node refused it",
            body = ErrorBody,
        ),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "A listed node does not exist", body = ErrorBody),
    ),
)]
pub async fn create(
    _: BasicUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<InboundResults>, ApiError> {
    let ids = node_ids_field(&body, "node_ids")?;
    let input = proxy::parse_inbound(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let nodes = target_nodes(&state, ids.as_deref())?;
    if nodes.is_empty() {
        return Err(ApiError::BadRequest("node_ids: there are no nodes to add the inbound to".into()));
    }
    let results = create_on(&state, &nodes, &input, |_| input.clients.clone()).await?;
    Ok(Json(InboundResults { success: true, results }))
}

/// `POST /api/v1/inbounds/clone` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CloneBody {
    /// Node of the inbound to clone. Required.
    #[schema(value_type = i64, required = true)]
    source_node_id: Option<i64>,
    /// The inbound to clone. Required.
    #[schema(value_type = i64, required = true)]
    source_inbound_id: Option<i64>,
    /// Nodes to clone to; absent, null or empty for every other node.
    #[serde(default)]
    target_node_ids: Option<Vec<i64>>,
    /// Fields to change in the copies.
    #[serde(default)]
    #[schema(value_type = CloneModifications)]
    modifications: Map<String, Value>,
}

/// `modifications` of a clone: any field of an inbound body, plus `include_clients`.
/// (Documentation; the handler merges the object over the source inbound.)
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct CloneModifications {
    /// Copy the source inbound's clients too (default false).
    pub include_clients: Option<bool>,
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<i64>,
    pub protocol: Option<String>,
    pub remark: Option<String>,
    pub listen: Option<String>,
    pub tag: Option<String>,
    pub enable: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
    #[serde(rename = "streamSettings")]
    #[schema(value_type = Option<Object>)]
    pub stream_settings: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub sniffing: Option<Value>,
}

/// Clone an inbound of one node onto others, with `modifications` applied.
#[utoipa::path(
    post,
    path = "/api/v1/inbounds/clone",
    operation_id = "clone_inbound",
    tag = TAG,
    security(("basic" = [])),
    request_body(
        content = CloneBody,
        example = json!({
            "source_node_id": 1,
            "source_inbound_id": 2,
            "target_node_ids": [2, 3],
            "modifications": { "remark": "Cloned Inbound", "port": 8443 }
        }),
    ),
    responses(
        (status = 200, description = "One result per target node", body = InboundResults, example = results_example),
        (
            status = 400,
            description = "Malformed body; missing source ids; a bad modified field; the port is taken on a \
                           target; no target node; every target refused it",
            body = ErrorBody,
        ),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "The source node or inbound, or a target node, does not exist", body = ErrorBody),
    ),
)]
pub async fn clone(
    _: BasicUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CloneBody>,
) -> Result<Json<InboundResults>, ApiError> {
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
    Ok(Json(InboundResults { success: true, results }))
}

/// `?node_id=` of a delete.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NodeQuery {
    /// Node of the inbound. Required.
    #[param(value_type = i64)]
    node_id: Option<String>,
}

/// Delete an inbound (and its clients) from a node.
#[utoipa::path(
    delete,
    path = "/api/v1/inbounds/{inbound_id}",
    operation_id = "delete_inbound",
    tag = TAG,
    security(("basic" = [])),
    params(("inbound_id" = i64, Path, description = "Inbound id on the node"), NodeQuery),
    responses(
        (status = 200, description = "Deleted; pushed to the node or queued", body = NodeChange),
        (status = 400, description = "`inbound_id` or `node_id` missing or not an integer", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such node, or no such inbound on it", body = ErrorBody),
    ),
)]
pub async fn delete(
    _: BasicUser,
    State(state): State<AppState>,
    axum::extract::Path(inbound_id): axum::extract::Path<String>,
    Query(q): Query<NodeQuery>,
) -> Result<Json<NodeChange>, ApiError> {
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
    Ok(Json(NodeChange::new(&node, &outcome)))
}

/// The document's inbound body, with a client.
fn create_example() -> Value {
    json!({
        "node_ids": [1, 2],
        "port": 8443,
        "protocol": "vless",
        "remark": "New Inbound",
        "settings": { "clients": [{ "email": "user@example.com", "totalGB": 100 }], "decryption": "none" },
        "streamSettings": { "network": "tcp", "security": "none" }
    })
}

fn results_example() -> Value {
    json!({
        "success": true,
        "results": [
            {
                "node": "Server-NL", "node_id": 1, "success": true, "status": "applied", "inbound_id": 3,
                "tag": "inbound-8443", "port": 8443, "remark": "New Inbound", "errors": []
            },
            {
                "node": "Server-DE", "node_id": 2, "success": false, "status": "refused",
                "error": "node 2 (Server-DE): port 8443 is in use"
            }
        ]
    })
}

/// The document's inbound list, with the 3x-ui objects.
fn list_example() -> Value {
    json!({
        "inbounds": [{
            "id": 1,
            "node_id": 1,
            "node_name": "Server-NL",
            "node_ip": "123.45.67.89",
            "protocol": "vless",
            "port": 443,
            "listen": "",
            "tag": "inbound-443",
            "remark": "Main VLESS",
            "enable": true,
            "security": "reality",
            "is_reality": true,
            "settings": {
                "clients": [{
                    "id": "5783a3e7-e373-51cd-8642-c83782b807c5", "flow": "xtls-rprx-vision",
                    "email": "user@example.com", "enable": true, "expiryTime": 0, "totalGB": 107374182400u64,
                    "limitIp": 0, "subId": "k2v9x1m3q8w7e5r4", "tgId": "", "comment": "", "reset": 0
                }],
                "decryption": "none"
            },
            "streamSettings": {
                "network": "tcp",
                "security": "reality",
                "realitySettings": {
                    "dest": "www.example.com:443", "serverNames": ["www.example.com"],
                    "privateKey": "…", "shortIds": ["6ba85179e30d4fc2"]
                }
            },
            "sniffing": { "enabled": true, "destOverride": ["http", "tls"] },
            "up": 1073741824u64,
            "down": 5368709120u64,
            "total": 6442450944u64,
            "expiryTime": 0,
            "clientCount": 1
        }],
        "count": 1
    })
}
