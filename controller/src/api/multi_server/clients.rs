//! `/api/v1/clients`: proxy clients across the fleet. A client is named by its UUID (vless,
//! vmess) or password (trojan, shadowsocks) plus `node_id` and `inbound_id`; every change is
//! pushed to the node's agent before the answer, or queued when the node is offline.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::Json;
use flotilla_protocol::proxy::{CutOff, OnlineSource};
use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::{
    existing_node, node_address, now_ms, target_nodes, ApiError, BasicUser, ErrorBody, JsonBody, NodeChange, Query, TAG,
};
use crate::api::AppState;
use crate::proxy;
use crate::store::{ClientFilter, ClientRecord, InboundRecord, NodeRecord};

/// `GET /api/v1/clients` filters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only clients whose email contains this (any case).
    email: Option<String>,
    /// Only clients of this node.
    node_id: Option<i64>,
}

/// One client as listed: the 3x-ui client fields, plus where it lives and its state.
#[derive(Debug, Serialize, ToSchema)]
pub struct Client {
    /// UUID of a vless/vmess client; null for password-based protocols.
    pub id: Option<String>,
    /// Password of a trojan/shadowsocks client; empty for UUID-based protocols.
    pub password: String,
    pub email: String,
    pub enable: bool,
    /// Unix milliseconds; 0 = never.
    #[serde(rename = "expiryTime")]
    pub expiry_time: i64,
    /// Quota in bytes; 0 = unlimited.
    #[serde(rename = "totalGB")]
    pub total_gb: u64,
    /// Quota in bytes (same as `totalGB`).
    pub total: u64,
    /// Bytes up, as counted by the core.
    pub up: u64,
    pub down: u64,
    pub flow: String,
    #[serde(rename = "limitIp")]
    pub limit_ip: u32,
    #[serde(rename = "subId")]
    pub sub_id: String,
    #[serde(rename = "tgId")]
    pub tg_id: String,
    pub comment: String,
    pub node_id: i64,
    pub node_name: String,
    /// The address clients reach the node at; null when none is known yet.
    pub node_ip: Option<String>,
    pub inbound_id: i64,
    pub inbound_remark: String,
    pub protocol: String,
    /// Past its `expiryTime`.
    pub expired: bool,
    /// Used up its quota.
    pub depleted: bool,
    /// `expired`, `depleted` or `ip_limit` when the node's agent cut the client off by itself;
    /// else null.
    pub cut_off: Option<String>,
}

impl Client {
    pub fn of(node: &NodeRecord, ip: Option<&str>, inbound: Option<&InboundRecord>, c: &ClientRecord) -> Self {
        let protocol = inbound.map(|i| i.protocol.as_str()).unwrap_or("");
        let uuid = proxy::uses_uuid(protocol);
        let now = now_ms();
        Client {
            id: uuid.then(|| c.secret.clone()),
            password: if uuid { String::new() } else { c.secret.clone() },
            email: c.email.clone(),
            enable: c.enable,
            expiry_time: c.expiry_ms,
            total_gb: c.total_bytes,
            total: c.total_bytes,
            up: c.up,
            down: c.down,
            flow: c.flow.clone(),
            limit_ip: c.limit_ip,
            sub_id: c.sub_id.clone(),
            tg_id: c.tg_id.clone(),
            comment: c.comment.clone(),
            node_id: node.id.0,
            node_name: node.name.clone(),
            node_ip: ip.map(str::to_string),
            inbound_id: c.inbound_id,
            inbound_remark: inbound.map(|i| i.remark.clone()).unwrap_or_default(),
            protocol: protocol.to_string(),
            expired: c.expired(now),
            depleted: c.depleted(),
            cut_off: c.cut_off.map(|w| match w {
                CutOff::Expired => "expired".to_string(),
                CutOff::Depleted => "depleted".to_string(),
            }),
        }
    }

    /// Adds what only the node's live state knows: a client its agent has off the core for its
    /// IP limit shows `cut_off: "ip_limit"` until the cool-down ends.
    pub fn with_live(mut self, live: &crate::fleet::NodeLive) -> Self {
        let limited = live.ip_limited.get(&self.email.to_lowercase()).is_some_and(|until| *until > now_ms());
        if self.cut_off.is_none() && limited {
            self.cut_off = Some("ip_limit".into());
        }
        self
    }
}

/// `GET /api/v1/clients` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientList {
    pub clients: Vec<Client>,
    pub count: usize,
}

/// List every client across the fleet.
#[utoipa::path(
    get,
    path = "/api/v1/clients",
    operation_id = "list_clients",
    tag = TAG,
    security(("basic" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Matching clients", body = ClientList, example = list_example),
        (status = 400, description = "Malformed query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "`node_id` names no node", body = ErrorBody),
    ),
)]
pub async fn list(
    _: BasicUser,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ClientList>, ApiError> {
    let node_filter = q.node_id.map(NodeId);
    if let Some(id) = node_filter {
        existing_node(&state, id)?;
    }
    let nodes: HashMap<NodeId, NodeRecord> = state.store.nodes()?.into_iter().map(|n| (n.id, n)).collect();
    let inbounds: HashMap<(NodeId, i64), InboundRecord> =
        state.store.inbounds(node_filter)?.into_iter().map(|i| ((i.node_id, i.id), i)).collect();
    let mut lives = HashMap::new();
    let clients: Vec<Client> = state
        .store
        .clients(node_filter, q.email.as_deref().filter(|e| !e.is_empty()))?
        .iter()
        .filter_map(|c| {
            let node = nodes.get(&c.node_id)?;
            let (ip, live) = lives.entry(node.id).or_insert_with(|| {
                let live = state.fleet.live(node.id);
                (node_address(node, &live), live)
            });
            let client = Client::of(node, ip.as_deref(), inbounds.get(&(c.node_id, c.inbound_id)), c);
            Some(client.with_live(live))
        })
        .collect();
    Ok(Json(ClientList { count: clients.len(), clients }))
}

/// The 3x-ui client fields a request may set (documentation: the handlers read them leniently,
/// so numbers may also come as strings holding one, and each bad field is a 400 naming it).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct ClientFields {
    /// At most 200 characters without spaces; one client per email and inbound.
    pub email: Option<String>,
    /// UUID of a vless/vmess client; generated when absent.
    pub id: Option<String>,
    /// Password of a trojan/shadowsocks client; generated when absent.
    pub password: Option<String>,
    /// VLESS flow: empty, `xtls-rprx-vision` or `xtls-rprx-vision-udp443`.
    pub flow: Option<String>,
    /// Quota: bytes, or gigabytes (GiB) when below 1048576; 0 = unlimited.
    #[serde(rename = "totalGB")]
    pub total_gb: Option<i64>,
    /// Unix milliseconds; 0 = never.
    #[serde(rename = "expiryTime")]
    pub expiry_time: Option<i64>,
    /// Default true.
    pub enable: Option<bool>,
    #[serde(rename = "limitIp")]
    pub limit_ip: Option<i64>,
    #[serde(rename = "subId")]
    pub sub_id: Option<String>,
    #[serde(rename = "tgId")]
    pub tg_id: Option<String>,
    pub comment: Option<String>,
}

/// One client of a batch-add: the inbound it goes to on each node, and its fields.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct BatchAddClient {
    /// The inbound on each node (ids are per node); or name it by `inbound_remark`.
    pub inbound_id: Option<i64>,
    /// The inbound's remark, when `inbound_id` is absent.
    pub inbound_remark: Option<String>,
    #[serde(flatten)]
    pub fields: ClientFields,
}

/// `POST /api/v1/clients/batch-add` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchAdd {
    /// Nodes to add the clients on; absent or null for every node.
    #[serde(default)]
    node_ids: Option<Vec<i64>>,
    /// At least one. A client keeps one UUID/password across all nodes, so one subscription
    /// serves them all.
    #[schema(value_type = Vec<BatchAddClient>, required = true, min_items = 1)]
    clients: Option<Vec<Value>>,
}

/// What happened to one client of a batch-add on one node.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAddEntry {
    pub email: String,
    pub success: bool,
    /// The inbound it was added to; only on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i64, required = false)]
    pub inbound_id: Option<i64>,
    /// Its UUID or password; only on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub id: Option<String>,
    /// Why it was not added (no such inbound on this node, email taken, …); only on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub error: Option<String>,
}

impl BatchAddEntry {
    fn failed(email: &str, error: String) -> Self {
        BatchAddEntry { email: email.to_string(), success: false, inbound_id: None, id: None, error: Some(error) }
    }
}

/// A batch-add on one node.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAddNode {
    pub node: String,
    pub node_id: i64,
    /// `applied`, `partial`, `queued` or `failed` (see the single-client answers).
    pub status: String,
    pub errors: Vec<String>,
    /// One entry per client of the request, in its order.
    pub results: Vec<BatchAddEntry>,
}

/// `POST /api/v1/clients/batch-add` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAddResult {
    pub success: bool,
    pub results: Vec<BatchAddNode>,
}

/// The inbound a batch-add entry names on `node`: `inbound_id`, else `inbound_remark`.
fn entry_inbound<'a>(inbounds: &'a [InboundRecord], entry: &Map<String, Value>) -> Result<&'a InboundRecord, String> {
    if let Some(id) = entry.get("inbound_id").and_then(Value::as_i64) {
        return inbounds.iter().find(|i| i.id == id).ok_or_else(|| format!("Inbound {id} not found"));
    }
    if let Some(remark) = entry.get("inbound_remark").and_then(Value::as_str) {
        return inbounds.iter().find(|i| i.remark == remark).ok_or_else(|| format!("Inbound {remark:?} not found"));
    }
    Err("inbound_id is required".into())
}

/// Add clients on many nodes at once.
#[utoipa::path(
    post,
    path = "/api/v1/clients/batch-add",
    operation_id = "batch_add_clients",
    tag = TAG,
    security(("basic" = [])),
    request_body(content = BatchAdd, example = batch_add_example),
    responses(
        (status = 200, description = "One result per node and client", body = BatchAddResult, example = batch_add_result_example),
        (
            status = 400,
            description = "Malformed body; no clients; a bad client field (the message names it, e.g. \
                           `clients[0].id: …`)",
            body = ErrorBody,
        ),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "A listed node does not exist, or none of the named inbounds does", body = ErrorBody),
    ),
)]
pub async fn batch_add(
    _: BasicUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BatchAdd>,
) -> Result<Json<BatchAddResult>, ApiError> {
    let entries = body.clients.ok_or_else(|| ApiError::BadRequest("clients: is required".into()))?;
    if entries.is_empty() {
        return Err(ApiError::BadRequest("clients: must list at least one client".into()));
    }
    let mut objects = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let Value::Object(mut m) = e else {
            return Err(ApiError::BadRequest(format!("clients[{i}]: must be a JSON object")));
        };
        // One identity per entry across all nodes, so a subscription's links share it.
        if m.get("id").and_then(Value::as_str).is_none_or(str::is_empty) {
            m.insert("id".into(), json!(proxy::new_secret("vless")));
        }
        if m.get("password").and_then(Value::as_str).is_none_or(str::is_empty) {
            m.insert("password".into(), json!(proxy::new_secret("trojan")));
        }
        if !matches!(m.get("inbound_id"), None | Some(Value::Null) | Some(Value::Number(_))) {
            return Err(ApiError::BadRequest(format!("clients[{i}].inbound_id: must be an integer")));
        }
        objects.push(m);
    }
    let nodes = target_nodes(&state, body.node_ids.as_deref())?;
    // Thousands of nodes' store work must not hold an async worker (the agents' sessions run there).
    let store_state = state.clone();
    let (per_node, any_found) = tokio::task::spawn_blocking(move || store_new_clients(&store_state, &nodes, &objects))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    if !any_found {
        return Err(ApiError::NotFound("none of the named inbounds exists on the target nodes".into()));
    }
    push_and_answer(&state, per_node).await
}

/// Per-node store work of a batch add: each entry's inbound on each node, parsed and inserted.
/// Returns each node's entries and whether any named inbound exists anywhere.
#[allow(clippy::type_complexity)]
fn store_new_clients(
    state: &AppState,
    nodes: &[NodeRecord],
    objects: &[serde_json::Map<String, Value>],
) -> Result<(Vec<(NodeRecord, Vec<BatchAddEntry>)>, bool), ApiError> {
    let mut per_node = vec![];
    let mut any_found = false;
    for node in nodes {
        let inbounds = state.store.inbounds(Some(node.id))?;
        // Every entry gets its result below: at once when its inbound is missing, else with its group.
        let mut results: Vec<Option<BatchAddEntry>> = (0..objects.len()).map(|_| None).collect();
        let mut groups: HashMap<i64, Vec<(usize, crate::store::NewClient)>> = HashMap::new();
        for (i, entry) in objects.iter().enumerate() {
            let email = entry.get("email").and_then(Value::as_str).unwrap_or_default();
            match entry_inbound(&inbounds, entry) {
                Ok(inbound) => {
                    any_found = true;
                    let parsed =
                        proxy::parse_client(&inbound.protocol, &Value::Object(entry.clone()), &format!("clients[{i}]"))
                            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                    groups.entry(inbound.id).or_default().push((i, parsed));
                }
                Err(error) => results[i] = Some(BatchAddEntry::failed(email, error)),
            }
        }
        for (inbound_id, items) in groups {
            let new: Vec<crate::store::NewClient> = items.iter().map(|(_, c)| c.clone()).collect();
            let outcomes = state.store.add_clients(node.id, inbound_id, &new)?;
            for ((i, c), outcome) in items.iter().zip(outcomes) {
                results[*i] = Some(match outcome {
                    Ok(()) => BatchAddEntry {
                        email: c.email.clone(),
                        success: true,
                        inbound_id: Some(inbound_id),
                        id: Some(c.secret.clone()),
                        error: None,
                    },
                    Err(error) => BatchAddEntry::failed(&c.email, error),
                });
            }
        }
        per_node.push((node.clone(), results.into_iter().flatten().collect::<Vec<_>>()));
    }
    Ok((per_node, any_found))
}

async fn push_and_answer(
    state: &AppState,
    per_node: Vec<(NodeRecord, Vec<BatchAddEntry>)>,
) -> Result<Json<BatchAddResult>, ApiError> {
    let ids: Vec<NodeId> = per_node.iter().map(|(n, _)| n.id).collect();
    let outcomes = state.fleet.push_many(&ids).await;
    let results = per_node
        .into_iter()
        .map(|(node, results)| {
            let outcome = &outcomes[&node.id];
            BatchAddNode {
                node: node.name,
                node_id: node.id.0,
                status: outcome.status().into(),
                errors: outcome.errors(),
                results,
            }
        })
        .collect();
    Ok(Json(BatchAddResult { success: true, results }))
}

/// Query of a single-client delete.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClientQuery {
    /// Node of the client. Required.
    #[param(value_type = i64)]
    node_id: Option<String>,
    /// Inbound of the client on that node. Required.
    #[param(value_type = i64)]
    inbound_id: Option<String>,
}

fn int_field(raw: Option<&Value>, field: &str) -> Result<i64, ApiError> {
    match raw {
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().unwrap_or_default()),
        Some(Value::String(s)) => s.parse().map_err(|_| ApiError::BadRequest(format!("{field}: must be an integer"))),
        None | Some(Value::Null) => Err(ApiError::BadRequest(format!("{field}: is required"))),
        Some(_) => Err(ApiError::BadRequest(format!("{field}: must be an integer"))),
    }
}

/// The client `key` (UUID, password or email) of `inbound_id` on `node_id`, or a 404.
fn find_client(
    state: &AppState,
    node_id: i64,
    inbound_id: i64,
    key: &str,
) -> Result<(NodeRecord, InboundRecord, ClientRecord), ApiError> {
    let node = existing_node(state, NodeId(node_id))?;
    let inbound = state
        .store
        .inbound(node.id, inbound_id)?
        .ok_or_else(|| ApiError::NotFound(format!("inbound {inbound_id} not found on node {}", node.id)))?;
    let client = state.store.client(node.id, inbound_id, key)?.ok_or_else(|| {
        ApiError::NotFound(format!("client {key:?} not found in inbound {inbound_id} on node {}", node.id))
    })?;
    Ok((node, inbound, client))
}

/// `PUT /api/v1/clients/{client_id}` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateBody {
    /// Node of the client (an integer, or a string holding one). Required.
    #[schema(value_type = i64, required = true)]
    node_id: Option<Value>,
    /// Inbound of the client on that node (an integer, or a string holding one). Required.
    #[schema(value_type = i64, required = true)]
    inbound_id: Option<Value>,
    /// Fields to change; the others keep their values.
    #[serde(default)]
    #[schema(value_type = ClientFields)]
    updates: Map<String, Value>,
}

/// Change a client's fields.
#[utoipa::path(
    put,
    path = "/api/v1/clients/{client_id}",
    operation_id = "update_client",
    tag = TAG,
    security(("basic" = [])),
    params(("client_id" = String, Path, description = "The client's UUID (vless, vmess), password (trojan, shadowsocks) or email")),
    request_body(
        content = UpdateBody,
        example = json!({
            "node_id": 1,
            "inbound_id": 1,
            "updates": { "email": "newemail@example.com", "enable": false, "totalGB": 200 }
        }),
    ),
    responses(
        (status = 200, description = "Changed; pushed to the node or queued", body = NodeChange, example = change_example),
        (
            status = 400,
            description = "Malformed body; `node_id`/`inbound_id` missing or not integers; a bad field in \
                           `updates` (the message names it); the new email is used by another client of the node",
            body = ErrorBody,
        ),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such node, inbound on it, or client in it", body = ErrorBody),
    ),
)]
pub async fn update(
    _: BasicUser,
    State(state): State<AppState>,
    Path(key): Path<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Json<NodeChange>, ApiError> {
    let node_id = int_field(body.node_id.as_ref(), "node_id")?;
    let inbound_id = int_field(body.inbound_id.as_ref(), "inbound_id")?;
    let (node, inbound, mut client) = find_client(&state, node_id, inbound_id, &key)?;
    // Re-parse the merged client so every rule of a new client holds for an edited one.
    let mut merged = proxy::client_settings_json(&inbound.protocol, &client);
    if let Value::Object(m) = &mut merged {
        for (k, v) in body.updates {
            m.insert(k, v);
        }
    }
    let parsed =
        proxy::parse_client(&inbound.protocol, &merged, "updates").map_err(|e| ApiError::BadRequest(e.to_string()))?;
    client.email = parsed.email;
    client.secret = parsed.secret;
    client.flow = parsed.flow;
    client.enable = parsed.enable;
    client.expiry_ms = parsed.expiry_ms;
    client.total_bytes = parsed.total_bytes;
    client.limit_ip = parsed.limit_ip;
    client.sub_id = parsed.sub_id;
    client.tg_id = parsed.tg_id;
    client.comment = parsed.comment;
    state.store.update_client(&client)?;
    let outcome = state.fleet.push_proxy_state(node.id).await;
    Ok(Json(NodeChange::new(&node, &outcome)))
}

/// Delete a client from an inbound of a node.
#[utoipa::path(
    delete,
    path = "/api/v1/clients/{client_id}",
    operation_id = "delete_client",
    tag = TAG,
    security(("basic" = [])),
    params(
        ("client_id" = String, Path, description = "The client's UUID (vless, vmess), password (trojan, shadowsocks) or email"),
        ClientQuery,
    ),
    responses(
        (status = 200, description = "Deleted; pushed to the node or queued", body = NodeChange, example = change_example),
        (status = 400, description = "`node_id`/`inbound_id` missing or not integers", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such node, inbound on it, or client in it", body = ErrorBody),
    ),
)]
pub async fn delete(
    _: BasicUser,
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<ClientQuery>,
) -> Result<Json<NodeChange>, ApiError> {
    let node_id = int_field(q.node_id.map(Value::from).as_ref(), "node_id")?;
    let inbound_id = int_field(q.inbound_id.map(Value::from).as_ref(), "inbound_id")?;
    let (node, _, client) = find_client(&state, node_id, inbound_id, &key)?;
    state.store.delete_client(&client)?;
    let outcome = state.fleet.push_proxy_state(node.id).await;
    Ok(Json(NodeChange::new(&node, &outcome)))
}

/// `POST /api/v1/clients/{client_id}/reset-traffic` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetBody {
    /// Node of the client (an integer, or a string holding one). Required.
    #[schema(value_type = i64, required = true)]
    node_id: Option<Value>,
    /// Inbound of the client on that node (an integer, or a string holding one). Required.
    #[schema(value_type = i64, required = true)]
    inbound_id: Option<Value>,
    /// Accepted as in the document; the client is named by the path.
    #[serde(default)]
    #[allow(dead_code)]
    email: Option<String>,
}

/// Zero a client's traffic (and lift a quota cut-off).
#[utoipa::path(
    post,
    path = "/api/v1/clients/{client_id}/reset-traffic",
    operation_id = "reset_client_traffic",
    tag = TAG,
    security(("basic" = [])),
    params(("client_id" = String, Path, description = "The client's UUID (vless, vmess), password (trojan, shadowsocks) or email")),
    request_body(
        content = ResetBody,
        example = json!({ "node_id": 1, "inbound_id": 1, "email": "user@example.com" }),
    ),
    responses(
        (status = 200, description = "Reset; pushed to the node or queued", body = NodeChange, example = change_example),
        (status = 400, description = "Malformed body; `node_id`/`inbound_id` missing or not integers", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such node, inbound on it, or client in it", body = ErrorBody),
    ),
)]
pub async fn reset_traffic(
    _: BasicUser,
    State(state): State<AppState>,
    Path(key): Path<String>,
    JsonBody(body): JsonBody<ResetBody>,
) -> Result<Json<NodeChange>, ApiError> {
    let node_id = int_field(body.node_id.as_ref(), "node_id")?;
    let inbound_id = int_field(body.inbound_id.as_ref(), "inbound_id")?;
    let (node, _, client) = find_client(&state, node_id, inbound_id, &key)?;
    state.store.reset_traffic(node.id, None, Some(&[client.row]))?;
    let outcome = state.fleet.push_proxy_state(node.id).await;
    Ok(Json(NodeChange::new(&node, &outcome)))
}

/// `POST /api/v1/clients/batch-delete` body: at least one filter, or `all`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchDelete {
    /// Nodes to delete on; absent or null for every node.
    #[serde(default)]
    node_ids: Option<Vec<i64>>,
    /// Only clients whose email contains this (any case).
    email_pattern: Option<String>,
    /// Only clients past their `expiryTime`.
    #[serde(default)]
    expired_only: bool,
    /// Only clients that used up their quota.
    #[serde(default)]
    depleted_only: bool,
    /// Required to delete without any filter.
    #[serde(default)]
    all: bool,
}

/// A batch-delete on one node.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchDeleteNode {
    pub node: String,
    pub node_id: i64,
    pub deleted_count: usize,
    /// Emails of the deleted clients.
    pub deleted: Vec<String>,
    /// `applied`, `partial`, `queued`, `failed`, or `unchanged` when nothing matched.
    pub status: String,
    pub errors: Vec<String>,
}

/// `POST /api/v1/clients/batch-delete` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchDeleteResult {
    pub results: Vec<BatchDeleteNode>,
}

/// Delete the clients matching filters on many nodes.
#[utoipa::path(
    post,
    path = "/api/v1/clients/batch-delete",
    operation_id = "batch_delete_clients",
    tag = TAG,
    security(("basic" = [])),
    request_body(
        content = BatchDelete,
        example = json!({ "node_ids": [1, 2], "email_pattern": "test", "expired_only": false, "depleted_only": false }),
    ),
    responses(
        (
            status = 200, description = "One result per node", body = BatchDeleteResult,
            example = json!({
                "results": [{
                    "node": "Server-NL", "node_id": 1, "deleted_count": 2, "deleted": ["test1@example.com", "test2@example.com"],
                    "status": "applied", "errors": []
                }]
            }),
        ),
        (status = 400, description = "Malformed body, or no filter and no `all`", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 404, description = "A listed node does not exist", body = ErrorBody),
    ),
)]
pub async fn batch_delete(
    _: BasicUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BatchDelete>,
) -> Result<Json<BatchDeleteResult>, ApiError> {
    let pattern = body.email_pattern.filter(|p| !p.is_empty());
    if pattern.is_none() && !body.expired_only && !body.depleted_only && !body.all {
        return Err(ApiError::BadRequest(
            "no filter given: set email_pattern, expired_only or depleted_only, or \"all\": true to delete every client of the target nodes"
                .into(),
        ));
    }
    let nodes = target_nodes(&state, body.node_ids.as_deref())?;
    let filter =
        ClientFilter { email_pattern: pattern, expired_only: body.expired_only, depleted_only: body.depleted_only };
    let now = now_ms();
    let mut deleted = vec![];
    for node in &nodes {
        deleted.push(state.store.delete_clients_matching(node.id, &filter, now)?);
    }
    let changed: Vec<NodeId> = nodes.iter().zip(&deleted).filter(|(_, d)| !d.is_empty()).map(|(n, _)| n.id).collect();
    let outcomes = state.fleet.push_many(&changed).await;
    let results = nodes
        .iter()
        .zip(deleted)
        .map(|(node, emails)| {
            let outcome = outcomes.get(&node.id);
            BatchDeleteNode {
                node: node.name.clone(),
                node_id: node.id.0,
                deleted_count: emails.len(),
                deleted: emails,
                status: outcome.map(|o| o.status()).unwrap_or("unchanged").into(),
                errors: outcome.map(|o| o.errors()).unwrap_or_default(),
            }
        })
        .collect();
    Ok(Json(BatchDeleteResult { results }))
}

/// A client connected now.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnlineClient {
    pub email: String,
    /// Name of the node.
    pub node: String,
    pub node_id: i64,
}

/// `GET /api/v1/clients/online` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnlineClients {
    pub online_clients: Vec<OnlineClient>,
    pub count: usize,
    /// How each connected node knows: `core_api` (the core lists online users) or
    /// `recent_traffic` (users with traffic in the last poll), by node name.
    pub sources: BTreeMap<String, String>,
}

/// List the clients connected now, on every connected node.
#[utoipa::path(
    get,
    path = "/api/v1/clients/online",
    operation_id = "online_clients",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (
            status = 200, description = "Online clients", body = OnlineClients,
            example = json!({
                "online_clients": [{ "email": "user@example.com", "node": "Server-NL", "node_id": 1 }],
                "count": 1,
                "sources": { "Server-NL": "core_api" }
            }),
        ),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
    ),
)]
pub async fn online(_: BasicUser, State(state): State<AppState>) -> Result<Json<OnlineClients>, ApiError> {
    let mut rows = vec![];
    let mut sources = BTreeMap::new();
    for node in state.store.nodes()? {
        let live = state.fleet.live(node.id);
        let Some(core) = live.core.filter(|_| live.connected) else { continue };
        let source = match core.online_source {
            OnlineSource::CoreApi => "core_api",
            OnlineSource::RecentTraffic => "recent_traffic",
        };
        sources.insert(node.name.clone(), source.to_string());
        for email in core.online {
            rows.push(OnlineClient { email, node: node.name.clone(), node_id: node.id.0 });
        }
    }
    Ok(Json(OnlineClients { count: rows.len(), online_clients: rows, sources }))
}

/// The document's batch-add body.
fn batch_add_example() -> Value {
    json!({
        "node_ids": [1, 2, 3],
        "clients": [{
            "email": "user@example.com",
            "inbound_id": 1,
            "totalGB": 100,
            "expiryTime": 1735689600000u64,
            "enable": true
        }]
    })
}

fn batch_add_result_example() -> Value {
    json!({
        "success": true,
        "results": [
            {
                "node": "Server-NL", "node_id": 1, "status": "applied", "errors": [],
                "results": [{
                    "email": "user@example.com", "success": true, "inbound_id": 1,
                    "id": "5783a3e7-e373-51cd-8642-c83782b807c5"
                }]
            },
            {
                "node": "Server-DE", "node_id": 2, "status": "queued", "errors": [],
                "results": [{ "email": "user@example.com", "success": false, "error": "Inbound 1 not found" }]
            }
        ]
    })
}

fn change_example() -> Value {
    json!({ "success": true, "node": "Server-NL", "status": "applied", "errors": [] })
}

/// The document's client list, with Flotilla's fields.
fn list_example() -> Value {
    json!({
        "clients": [{
            "id": "5783a3e7-e373-51cd-8642-c83782b807c5",
            "password": "",
            "email": "user@example.com",
            "enable": true,
            "expiryTime": 0,
            "totalGB": 107374182400u64,
            "total": 107374182400u64,
            "up": 1073741824u64,
            "down": 5368709120u64,
            "flow": "",
            "limitIp": 0,
            "subId": "k2v9x1m3q8w7e5r4",
            "tgId": "",
            "comment": "",
            "node_id": 1,
            "node_name": "Server-NL",
            "node_ip": "123.45.67.89",
            "inbound_id": 1,
            "inbound_remark": "Main VLESS",
            "protocol": "vless",
            "expired": false,
            "depleted": false,
            "cut_off": null
        }],
        "count": 1
    })
}
