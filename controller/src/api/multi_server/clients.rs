//! `/api/v1/clients`: proxy clients across the fleet. A client is named by its UUID (vless,
//! vmess) or password (trojan, shadowsocks) plus `node_id` and `inbound_id`; every change is
//! pushed to the node's agent before the answer, or queued when the node is offline.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use flotilla_protocol::proxy::{CutOff, OnlineSource};
use flotilla_protocol::NodeId;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{existing_node, node_address, now_ms, target_nodes, ApiError, BasicUser, JsonBody};
use crate::api::AppState;
use crate::proxy;
use crate::store::{ClientFilter, ClientRecord, InboundRecord, NodeRecord};

/// `GET /api/v1/clients` filters.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    email: Option<String>,
    node_id: Option<i64>,
}

/// One client as listed.
pub fn client_json(node: &NodeRecord, ip: Option<&str>, inbound: Option<&InboundRecord>, c: &ClientRecord) -> Value {
    let protocol = inbound.map(|i| i.protocol.as_str()).unwrap_or("");
    let now = now_ms();
    json!({
        "id": if proxy::uses_uuid(protocol) { Value::from(c.secret.clone()) } else { Value::Null },
        "password": if proxy::uses_uuid(protocol) { String::new() } else { c.secret.clone() },
        "email": c.email,
        "enable": c.enable,
        "expiryTime": c.expiry_ms,
        "totalGB": c.total_bytes,
        "total": c.total_bytes,
        "up": c.up,
        "down": c.down,
        "flow": c.flow,
        "limitIp": c.limit_ip,
        "subId": c.sub_id,
        "tgId": c.tg_id,
        "comment": c.comment,
        "node_id": node.id.0,
        "node_name": node.name,
        "node_ip": ip,
        "inbound_id": c.inbound_id,
        "inbound_remark": inbound.map(|i| i.remark.clone()).unwrap_or_default(),
        "protocol": protocol,
        "expired": c.expired(now),
        "depleted": c.depleted(),
        "cut_off": c.cut_off.map(|w| match w { CutOff::Expired => "expired", CutOff::Depleted => "depleted" }),
    })
}

pub async fn list(
    _: BasicUser,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let node_filter = q.node_id.map(NodeId);
    if let Some(id) = node_filter {
        existing_node(&state, id)?;
    }
    let nodes: HashMap<NodeId, NodeRecord> = state.store.nodes()?.into_iter().map(|n| (n.id, n)).collect();
    let inbounds: HashMap<(NodeId, i64), InboundRecord> =
        state.store.inbounds(node_filter)?.into_iter().map(|i| ((i.node_id, i.id), i)).collect();
    let mut ips = HashMap::new();
    let items: Vec<Value> = state
        .store
        .clients(node_filter, q.email.as_deref().filter(|e| !e.is_empty()))?
        .iter()
        .filter_map(|c| {
            let node = nodes.get(&c.node_id)?;
            let ip = ips.entry(node.id).or_insert_with(|| node_address(node, &state.fleet.live(node.id))).clone();
            Some(client_json(node, ip.as_deref(), inbounds.get(&(c.node_id, c.inbound_id)), c))
        })
        .collect();
    Ok(Json(json!({ "count": items.len(), "clients": items })))
}

/// `POST /api/v1/clients/batch-add` body.
#[derive(Debug, Deserialize)]
pub struct BatchAdd {
    #[serde(default)]
    node_ids: Option<Vec<i64>>,
    clients: Option<Vec<Value>>,
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

pub async fn batch_add(
    _: BasicUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BatchAdd>,
) -> Result<Json<Value>, ApiError> {
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
    let mut per_node = vec![];
    let mut any_found = false;
    for node in &nodes {
        let inbounds = state.store.inbounds(Some(node.id))?;
        let mut results: Vec<Value> = vec![Value::Null; objects.len()];
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
                Err(error) => results[i] = json!({ "email": email, "success": false, "error": error }),
            }
        }
        for (inbound_id, items) in groups {
            let new: Vec<crate::store::NewClient> = items.iter().map(|(_, c)| c.clone()).collect();
            let outcomes = state.store.add_clients(node.id, inbound_id, &new)?;
            for ((i, c), outcome) in items.iter().zip(outcomes) {
                results[*i] = match outcome {
                    Ok(()) => json!({ "email": c.email, "success": true, "inbound_id": inbound_id, "id": c.secret }),
                    Err(error) => json!({ "email": c.email, "success": false, "error": error }),
                };
            }
        }
        per_node.push((node.clone(), results));
    }
    if !any_found {
        return Err(ApiError::NotFound("none of the named inbounds exists on the target nodes".into()));
    }
    let ids: Vec<NodeId> = per_node.iter().map(|(n, _)| n.id).collect();
    let outcomes = state.fleet.push_many(&ids).await;
    let results: Vec<Value> = per_node
        .into_iter()
        .map(|(node, results)| {
            let outcome = &outcomes[&node.id];
            json!({
                "node": node.name,
                "node_id": node.id.0,
                "status": outcome.status(),
                "errors": outcome.errors(),
                "results": results,
            })
        })
        .collect();
    Ok(Json(json!({ "success": true, "results": results })))
}

/// Query of a single-client call.
#[derive(Debug, Deserialize)]
pub struct ClientQuery {
    node_id: Option<String>,
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

/// `PUT /api/v1/clients/{uuid}` body.
#[derive(Debug, Deserialize)]
pub struct UpdateBody {
    node_id: Option<Value>,
    inbound_id: Option<Value>,
    #[serde(default)]
    updates: Map<String, Value>,
}

pub async fn update(
    _: BasicUser,
    State(state): State<AppState>,
    Path(key): Path<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "success": true, "node": node.name, "status": outcome.status(), "errors": outcome.errors() })))
}

pub async fn delete(
    _: BasicUser,
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<ClientQuery>,
) -> Result<Json<Value>, ApiError> {
    let node_id = int_field(q.node_id.map(Value::from).as_ref(), "node_id")?;
    let inbound_id = int_field(q.inbound_id.map(Value::from).as_ref(), "inbound_id")?;
    let (node, _, client) = find_client(&state, node_id, inbound_id, &key)?;
    state.store.delete_client(&client)?;
    let outcome = state.fleet.push_proxy_state(node.id).await;
    Ok(Json(json!({ "success": true, "node": node.name, "status": outcome.status(), "errors": outcome.errors() })))
}

/// `POST /api/v1/clients/{uuid}/reset-traffic` body.
#[derive(Debug, Deserialize)]
pub struct ResetBody {
    node_id: Option<Value>,
    inbound_id: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    email: Option<String>,
}

pub async fn reset_traffic(
    _: BasicUser,
    State(state): State<AppState>,
    Path(key): Path<String>,
    JsonBody(body): JsonBody<ResetBody>,
) -> Result<Json<Value>, ApiError> {
    let node_id = int_field(body.node_id.as_ref(), "node_id")?;
    let inbound_id = int_field(body.inbound_id.as_ref(), "inbound_id")?;
    let (node, _, client) = find_client(&state, node_id, inbound_id, &key)?;
    state.store.reset_traffic(node.id, None, Some(&[client.row]))?;
    let outcome = state.fleet.push_proxy_state(node.id).await;
    Ok(Json(json!({ "success": true, "node": node.name, "status": outcome.status(), "errors": outcome.errors() })))
}

/// `POST /api/v1/clients/batch-delete` body.
#[derive(Debug, Deserialize)]
pub struct BatchDelete {
    #[serde(default)]
    node_ids: Option<Vec<i64>>,
    email_pattern: Option<String>,
    #[serde(default)]
    expired_only: bool,
    #[serde(default)]
    depleted_only: bool,
    /// Required to delete without any filter.
    #[serde(default)]
    all: bool,
}

pub async fn batch_delete(
    _: BasicUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BatchDelete>,
) -> Result<Json<Value>, ApiError> {
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
    let results: Vec<Value> = nodes
        .iter()
        .zip(deleted)
        .map(|(node, emails)| {
            let outcome = outcomes.get(&node.id);
            json!({
                "node": node.name,
                "node_id": node.id.0,
                "deleted_count": emails.len(),
                "deleted": emails,
                "status": outcome.map(|o| o.status()).unwrap_or("unchanged"),
                "errors": outcome.map(|o| o.errors()).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

pub async fn online(_: BasicUser, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut rows = vec![];
    let mut sources = Map::new();
    for node in state.store.nodes()? {
        let live = state.fleet.live(node.id);
        let Some(core) = live.core.filter(|_| live.connected) else { continue };
        sources.insert(
            node.name.clone(),
            json!(match core.online_source {
                OnlineSource::CoreApi => "core_api",
                OnlineSource::RecentTraffic => "recent_traffic",
            }),
        );
        for email in core.online {
            rows.push(json!({ "email": email, "node": node.name, "node_id": node.id.0 }));
        }
    }
    Ok(Json(json!({ "online_clients": rows, "count": rows.len(), "sources": sources })))
}
