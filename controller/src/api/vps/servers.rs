//! `/api/server…`: virtual servers. Each is a container on one node, created and changed by that
//! node's agent as asynchronous tasks (`taskId` is the task's UPID, queryable at
//! `/api/server/tasks/{upid}`).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use flotilla_protocol::codec;
use flotilla_protocol::containers::{
    ContainerAction, ContainerCreate, ContainerOp, ContainerQuery, ContainerSample, ContainerSpec, ContainerState,
    ContainerStatus, SnapshotList, TaskInfo, TaskQuery, TaskStarted, TaskState, Upid,
};
use flotilla_protocol::rpc::{RequestKind, RpcError};
use flotilla_protocol::NodeId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::catalog::{os_json, tariff_json};
use super::{blocking, iso, path_id, Body, Customer, VpsError};
use crate::api::AppState;
use crate::fleet::FleetError;
use crate::store::{NewServer, OsRecord, ServerRecord, ServerStatus, StoreError, TariffRecord};

/// Shown instead of a stored root password: it is given once, at creation and on change.
const MASK: &str = "********";
/// How long a quick call to a node may take.
const CALL: Duration = Duration::from_secs(15);
/// How long an answer waits for a task that must finish first (password, resize).
const TASK_WAIT: Duration = Duration::from_secs(60);

/// A server as the panel lists it: the row, its `os` and `tariff`, the address as both
/// `ipAddress` (the document) and `ip` (what one version of the web UI reads).
pub fn server_json(state: &AppState, s: &ServerRecord, os: &[OsRecord], tariffs: &[TariffRecord]) -> Value {
    let os = os.iter().find(|o| o.id == s.os_id).map(os_json).unwrap_or(Value::Null);
    let tariff = tariffs.iter().find(|t| t.id == s.tariff_id).map(tariff_json).unwrap_or(Value::Null);
    let node = s.node_id.map(|n| state.fleet.live(n).connected);
    json!({
        "id": s.id,
        "userId": s.user_id,
        "owner": s.username,
        "tariffId": s.tariff_id,
        "osId": s.os_id,
        "nodeId": s.node_id.map(|n| n.0),
        "nodeOnline": node,
        "status": s.status.as_str(),
        "proxmoxId": s.vmid,
        "container": s.container,
        "ipAddress": s.ip_address,
        "ip": s.ip_address,
        "rootPassword": MASK,
        "cores": s.cores,
        "memory": s.memory_mib,
        "disk": s.disk_gb,
        "createTask": s.create_task.as_ref().map(|u| u.0.clone()),
        "createdAt": iso(s.created_at),
        "updatedAt": iso(s.updated_at),
        "nextPaymentDate": Value::Null,
        "autoRenew": false,
        "os": os,
        "tariff": tariff,
    })
}

/// The caller's server `id` (others' are not found).
pub(super) async fn owned(state: &AppState, user: &Customer, raw: &str) -> Result<ServerRecord, VpsError> {
    let id = path_id(raw, "id")?;
    let store = state.store.clone();
    let server = blocking(move || store.server(id)).await?;
    server
        .filter(|s| user.is_admin() || s.user_id == user.id)
        .ok_or_else(|| VpsError::not_found(format!("server {id} not found")))
}

pub(super) fn node_of(server: &ServerRecord) -> Result<NodeId, VpsError> {
    server
        .node_id
        .ok_or_else(|| VpsError::conflict(format!("server {} has no node any more (the node was deleted)", server.id)))
}

/// A fleet failure as this family's error: the node's refusal is the caller's problem (400/409),
/// an unreachable node a 503.
pub(super) fn call_error(e: FleetError) -> VpsError {
    match e {
        FleetError::Rpc { error: RpcError::BadRequest(m), .. } => VpsError::bad(m),
        FleetError::Rpc { error: RpcError::Refused(m), .. } => VpsError::conflict(m),
        FleetError::Rpc { error: RpcError::Unsupported(_), node } => {
            VpsError::unavailable(format!("node {node} does not run containers"))
        }
        FleetError::NotConnected(node) => VpsError::unavailable(format!("node {node} is offline; try again later")),
        FleetError::Timeout(node) => VpsError::unavailable(format!("node {node} did not answer in time")),
        FleetError::Store(e) => e.into(),
        other => VpsError::unavailable(other.to_string()),
    }
}

/// One call to a node's containers driver.
pub(super) async fn call<T: serde::Serialize, A: serde::de::DeserializeOwned>(
    state: &AppState,
    node: NodeId,
    kind: RequestKind,
    body: &T,
    timeout: Duration,
) -> Result<A, VpsError> {
    let body = codec::encode_body(body).map_err(|e| VpsError::internal(e.to_string()))?;
    let answer = state.fleet.call(node, kind, body, timeout).await.map_err(call_error)?;
    codec::decode_from(&answer).map_err(|e| VpsError::internal(format!("undecodable answer from node {node}: {e}")))
}

/// Starts an operation on a server's container; records its task. Returns the task's UPID.
async fn act(state: &AppState, user: &Customer, server: &ServerRecord, op: ContainerOp) -> Result<Upid, VpsError> {
    let node = node_of(server)?;
    let kind = op.task_type().to_string();
    let action = ContainerAction { name: server.container.clone(), op, user: format!("{}@flotilla", user.username) };
    let started: TaskStarted = call(state, node, RequestKind::CONTAINER_ACTION, &action, CALL).await?;
    let task = TaskInfo {
        upid: started.upid.clone(),
        kind,
        container: server.container.clone(),
        state: TaskState::Running,
        started_ms: crate::store::now_ms() as u64,
        ended_ms: None,
        log: vec![],
    };
    let store = state.store.clone();
    let id = server.id;
    blocking(move || store.record_task(node, Some(id), &task)).await?;
    Ok(started.upid)
}

/// Waits for a task to end (asking its node), records it, and returns it.
async fn wait_task(
    state: &AppState,
    node: NodeId,
    server: Option<i64>,
    upid: &Upid,
    limit: Duration,
) -> Result<TaskInfo, VpsError> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let task: TaskInfo =
            call(state, node, RequestKind::TASK_STATUS, &TaskQuery { upid: upid.clone() }, CALL).await?;
        if task.state != TaskState::Running || tokio::time::Instant::now() >= until {
            let store = state.store.clone();
            let t = task.clone();
            blocking(move || store.record_task(node, server, &t)).await?;
            return Ok(task);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Fails with the task's error when it did not end `Ok`.
fn task_ok(task: &TaskInfo) -> Result<(), VpsError> {
    match &task.state {
        TaskState::Ok => Ok(()),
        TaskState::Error { message } => Err(VpsError::bad(format!("task {} failed: {message}", task.upid))),
        TaskState::Running => Err(VpsError::unavailable(format!(
            "task {} still runs; follow it at /api/server/tasks/{}",
            task.upid, task.upid
        ))),
    }
}

async fn catalogs(state: &AppState) -> Result<(Vec<OsRecord>, Vec<TariffRecord>), VpsError> {
    let store = state.store.clone();
    blocking(move || Ok::<_, StoreError>((store.os_list()?, store.tariffs()?))).await
}

pub async fn list(user: Customer, State(state): State<AppState>) -> Result<Json<Vec<Value>>, VpsError> {
    let store = state.store.clone();
    let scope = user.scope();
    let servers = blocking(move || store.servers(scope)).await?;
    let (os, tariffs) = catalogs(&state).await?;
    Ok(Json(servers.iter().map(|s| server_json(&state, s, &os, &tariffs)).collect()))
}

pub async fn get_one(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, VpsError> {
    let server = owned(&state, &user, &raw).await?;
    let (os, tariffs) = catalogs(&state).await?;
    Ok(Json(server_json(&state, &server, &os, &tariffs)))
}

fn percent(used: u64, max: u64) -> f64 {
    if max == 0 {
        0.0
    } else {
        ((used as f64 / max as f64) * 1000.0).round() / 10.0
    }
}

/// The `stats.data` object of `/status` and of the Socket.IO `server-stats` event.
pub fn stats_data(
    server: &ServerRecord,
    state_name: &str,
    uptime: u64,
    now: &ContainerSample,
    mem_max: u64,
    disk_max: u64,
    points: &[(ContainerSample, u64, u64)],
) -> Value {
    let rrd: Vec<Value> = points
        .iter()
        .map(|(p, mem_max, disk_max)| {
            json!({
                "time": p.time_ms / 1000,
                "cpu": p.cpu,
                "maxcpu": server.cores,
                "mem": p.mem_used,
                "maxmem": mem_max,
                "disk": p.disk_used,
                "maxdisk": disk_max,
                "netin": p.net_in,
                "netout": p.net_out,
            })
        })
        .collect();
    json!({
        "vmid": server.vmid,
        "status": state_name,
        "uptime": uptime,
        "cpu": now.cpu,
        "cpus": server.cores,
        "memory": { "used": now.mem_used, "max": mem_max, "usage": percent(now.mem_used, mem_max) },
        "disk": { "used": now.disk_used, "max": disk_max, "usage": percent(now.disk_used, disk_max) },
        "network": { "in": now.net_in, "out": now.net_out },
        "rrdData": rrd,
    })
}

fn state_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Running => "running",
        ContainerState::Stopped => "stopped",
        ContainerState::Frozen => "suspended",
        ContainerState::Creating => "creating",
        ContainerState::Missing => "deleted",
    }
}

/// The server status a container state means (`None`: leave the stored one).
pub fn server_status_for(state: ContainerState) -> Option<ServerStatus> {
    match state {
        ContainerState::Running => Some(ServerStatus::Running),
        ContainerState::Stopped | ContainerState::Frozen => Some(ServerStatus::Stopped),
        ContainerState::Creating | ContainerState::Missing => None,
    }
}

pub async fn status(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, VpsError> {
    let mut server = owned(&state, &user, &raw).await?;
    let (os, tariffs) = catalogs(&state).await?;
    let since = time::OffsetDateTime::now_utc().unix_timestamp() - 3600;
    let store = state.store.clone();
    let id = server.id;
    let history = blocking(move || store.server_metrics(id, since)).await?;
    let (mem_max, disk_max) = (server.memory_mib << 20, server.disk_gb * 1_000_000_000);
    let live = match (server.node_id, server.status) {
        (Some(node), status) if status != ServerStatus::Creating && status != ServerStatus::Error => {
            let query = ContainerQuery { name: server.container.clone() };
            call::<_, ContainerStatus>(&state, node, RequestKind::CONTAINER_STATUS, &query, CALL).await.ok()
        }
        _ => None,
    };
    let stats = match &live {
        Some(live) => {
            if let Some(status) = server_status_for(live.state).filter(|_| server.status != ServerStatus::Deleting) {
                let (store, ip) = (state.store.clone(), live.ipv4.clone());
                if blocking(move || store.set_server_state(id, status, ip.as_deref())).await? {
                    server.status = status;
                    server.ip_address = live.ipv4.clone().or(server.ip_address.take());
                }
            }
            // The agent's ring buffer is the finer series; the store's the longer.
            let points: Vec<(ContainerSample, u64, u64)> = if live.samples.len() >= 2 {
                live.samples.iter().map(|s| (*s, live.mem_max, live.disk_max)).collect()
            } else {
                history
            };
            json!({
                "status": "success",
                "data": stats_data(&server, state_name(live.state), live.uptime_s, &live.now, live.mem_max, live.disk_max, &points),
            })
        }
        None => {
            let last = history.last().map(|(s, _, _)| *s).unwrap_or(ContainerSample {
                time_ms: 0,
                cpu: 0.0,
                mem_used: 0,
                disk_used: 0,
                net_in: 0,
                net_out: 0,
            });
            json!({
                "status": if server.node_id.is_some_and(|n| state.fleet.live(n).connected) { "success" } else { "offline" },
                "data": stats_data(&server, server.status.as_str(), 0, &last, mem_max, disk_max, &history),
            })
        }
    };
    let mut body = server_json(&state, &server, &os, &tariffs);
    body["stats"] = stats;
    Ok(Json(body))
}

/// `POST /api/server/create` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    os_id: Option<i64>,
    tariff_id: Option<i64>,
    /// Administrators may place the server on a node of their choice.
    node_id: Option<i64>,
}

/// A random root password: 16 characters without look-alikes.
fn generate_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..16).map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char).collect()
}

/// The node a new server of `tariff` goes to: a connected node with the container capability and
/// room for it (memory and disk its agent reports, minus what its servers' tariffs reserve), the
/// one with the most free memory.
async fn place(state: &AppState, tariff: &TariffRecord) -> Result<NodeId, VpsError> {
    let store = state.store.clone();
    let (nodes, reserved) = blocking(move || Ok::<_, StoreError>((store.nodes()?, store.reserved_per_node()?))).await?;
    let mut best: Option<(NodeId, i128)> = None;
    for node in nodes {
        let live = state.fleet.live(node.id);
        if !(live.connected && live.containers_capable) {
            continue;
        }
        let (_, _, mem_used, disk_used) =
            reserved.iter().find(|r| r.0 == node.id).copied().unwrap_or((node.id, 0, 0, 0));
        let cores = live.facts.as_ref().map(|f| f.cpu_cores).unwrap_or(0);
        if cores != 0 && tariff.cores > cores {
            continue;
        }
        let (mem_total, disk_total) =
            live.metrics.as_ref().map(|m| (m.mem_total >> 20, m.disk_total / 1_000_000_000)).unwrap_or((0, 0));
        let free_mem = if mem_total == 0 { i128::MAX / 2 } else { mem_total as i128 - mem_used as i128 };
        let free_disk = if disk_total == 0 { i128::MAX / 2 } else { disk_total as i128 - disk_used as i128 };
        if free_mem < tariff.memory_mib as i128 || free_disk < tariff.disk_gb as i128 {
            continue;
        }
        if best.is_none_or(|(_, m)| free_mem > m) {
            best = Some((node.id, free_mem));
        }
    }
    best.map(|(n, _)| n).ok_or_else(|| {
        VpsError::unavailable(format!(
            "no node that runs containers has room for tariff {:?} ({} core(s), {} MiB, {} GB)",
            tariff.name, tariff.cores, tariff.memory_mib, tariff.disk_gb
        ))
    })
}

pub async fn create(
    user: Customer,
    State(state): State<AppState>,
    Body(body): Body<CreateBody>,
) -> Result<(StatusCode, Json<Value>), VpsError> {
    let (Some(os_id), Some(tariff_id)) = (body.os_id, body.tariff_id) else {
        return Err(VpsError::bad("osId and tariffId are required"));
    };
    let store = state.store.clone();
    let (os, tariff) = blocking(move || Ok::<_, StoreError>((store.os(os_id)?, store.tariff(tariff_id)?))).await?;
    let os = os.ok_or_else(|| VpsError::bad(format!("osId {os_id}: no such OS")))?;
    let tariff = tariff.ok_or_else(|| VpsError::bad(format!("tariffId {tariff_id}: no such tariff")))?;
    let node = match body.node_id {
        Some(_) if !user.is_admin() => return Err(VpsError::forbidden("only administrators choose the node")),
        Some(id) => {
            let live = state.fleet.live(NodeId(id));
            if !live.connected || !live.containers_capable {
                return Err(VpsError::bad(format!("nodeId {id}: not a connected node that runs containers")));
            }
            NodeId(id)
        }
        None => place(&state, &tariff).await?,
    };
    let password = generate_password();
    let store = state.store.clone();
    let new = NewServer { user_id: user.id, node_id: node, os_id, tariff_id, root_password: password.clone() };
    let server = blocking(move || store.create_server(&new)).await?;
    let request = ContainerCreate {
        spec: ContainerSpec {
            name: server.container.clone(),
            template: os.template.clone(),
            cores: tariff.cores,
            memory_mib: tariff.memory_mib,
            disk_gb: tariff.disk_gb,
            root_password: password.clone(),
        },
        user: format!("{}@flotilla", user.username),
    };
    let started: Result<TaskStarted, VpsError> =
        call(&state, node, RequestKind::CONTAINER_CREATE, &request, CALL).await;
    let started = match started {
        Ok(s) => s,
        Err(e) => {
            // Nothing was created on the node: forget the server again.
            let store = state.store.clone();
            let id = server.id;
            let _ = blocking(move || store.delete_server(id)).await;
            return Err(e);
        }
    };
    let store = state.store.clone();
    let (id, upid) = (server.id, started.upid.clone());
    let task = TaskInfo {
        upid: upid.clone(),
        kind: "vzcreate".into(),
        container: server.container.clone(),
        state: TaskState::Running,
        started_ms: crate::store::now_ms() as u64,
        ended_ms: None,
        log: vec![],
    };
    blocking(move || -> Result<(), StoreError> {
        store.set_server_create_task(id, &upid)?;
        store.record_task(node, Some(id), &task)
    })
    .await?;
    tracing::info!(server = server.id, node = %node, user = %user.username, os = %os.name, tariff = %tariff.name, "server creating");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": server.id,
            "status": "creating",
            "proxmoxId": server.vmid,
            "ipAddress": Value::Null,
            "rootPassword": password,
            "taskId": started.upid.0,
            "nodeId": node.0,
            "userId": user.id,
            "osId": os_id,
            "tariffId": tariff_id,
        })),
    ))
}

async fn power(
    user: Customer,
    state: AppState,
    raw: String,
    op: ContainerOp,
    action: &str,
) -> Result<Json<Value>, VpsError> {
    let server = owned(&state, &user, &raw).await?;
    if matches!(server.status, ServerStatus::Creating | ServerStatus::Deleting) {
        return Err(VpsError::conflict(format!("server {} is {}", server.id, server.status.as_str())));
    }
    let upid = act(&state, &user, &server, op).await?;
    Ok(Json(json!({ "status": "success", "action": action, "taskId": upid.0 })))
}

pub async fn start(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, VpsError> {
    power(user, state, raw, ContainerOp::Start, "start").await
}

pub async fn stop(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, VpsError> {
    power(user, state, raw, ContainerOp::Stop { timeout_s: 30 }, "stop").await
}

pub async fn restart(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, VpsError> {
    power(user, state, raw, ContainerOp::Restart { timeout_s: 30 }, "restart").await
}

pub async fn delete(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, VpsError> {
    let server = owned(&state, &user, &raw).await?;
    let Some(_) = server.node_id else {
        // Its node is gone, and the container with it.
        let store = state.store.clone();
        let id = server.id;
        blocking(move || store.delete_server(id)).await?;
        return Ok(Json(json!({ "status": "deleted" })));
    };
    let upid = match act(&state, &user, &server, ContainerOp::Delete).await {
        Ok(upid) => upid,
        Err(e) if server.status == ServerStatus::Error => {
            // A failed create may have left nothing to delete on the node.
            tracing::info!(server = server.id, error = %e.message, "deleting a failed server's record");
            let store = state.store.clone();
            let id = server.id;
            blocking(move || store.delete_server(id)).await?;
            return Ok(Json(json!({ "status": "deleted" })));
        }
        Err(e) => return Err(e),
    };
    let store = state.store.clone();
    let id = server.id;
    blocking(move || store.set_server_state(id, ServerStatus::Deleting, None)).await?;
    Ok(Json(json!({ "status": "deleted", "taskId": upid.0 })))
}

pub async fn password(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, VpsError> {
    let server = owned(&state, &user, &raw).await?;
    // The password is set by a command inside the guest: a stopped one cannot take it.
    if server.status != ServerStatus::Running {
        return Err(VpsError::conflict(format!(
            "server {} is {}: start it to change its password",
            server.id,
            server.status.as_str()
        )));
    }
    let node = node_of(&server)?;
    let password = generate_password();
    let upid = act(&state, &user, &server, ContainerOp::SetPassword { password: password.clone() }).await?;
    let task = wait_task(&state, node, Some(server.id), &upid, TASK_WAIT).await?;
    task_ok(&task)?;
    let store = state.store.clone();
    let (id, p) = (server.id, password.clone());
    blocking(move || store.set_server_password(id, &p)).await?;
    Ok(Json(json!({ "status": "success", "password": password, "taskId": upid.0 })))
}

/// `PUT /api/server/{id}/resize` body: memory in MB, disk in GB, as the panel sends them.
#[derive(Debug, Deserialize)]
pub struct ResizeBody {
    cores: Option<u32>,
    memory: Option<u64>,
    disk: Option<u64>,
}

pub async fn resize(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<ResizeBody>,
) -> Result<Json<Value>, VpsError> {
    let server = owned(&state, &user, &raw).await?;
    let node = node_of(&server)?;
    if body.cores.is_none() && body.memory.is_none() && body.disk.is_none() {
        return Err(VpsError::bad("give at least one of cores, memory (MB) and disk (GB)"));
    }
    if body.cores.is_some_and(|c| !(1..=64).contains(&c)) {
        return Err(VpsError::bad("cores must be between 1 and 64"));
    }
    if body.memory.is_some_and(|m| !(64..=1_048_576).contains(&m)) {
        return Err(VpsError::bad("memory must be between 64 and 1048576 MB"));
    }
    if let Some(disk) = body.disk {
        if disk < server.disk_gb {
            return Err(VpsError::bad(format!("disk can only grow: {} GB now, {disk} GB asked", server.disk_gb)));
        }
    }
    let op = ContainerOp::Resize { cores: body.cores, memory_mib: body.memory, disk_gb: body.disk };
    let upid = act(&state, &user, &server, op).await?;
    let task = wait_task(&state, node, Some(server.id), &upid, TASK_WAIT).await?;
    task_ok(&task)?;
    let store = state.store.clone();
    let id = server.id;
    blocking(move || store.set_server_size(id, body.cores, body.memory, body.disk)).await?;
    let cores = body.cores.unwrap_or(server.cores);
    let memory = body.memory.unwrap_or(server.memory_mib);
    let disk = body.disk.unwrap_or(server.disk_gb);
    Ok(Json(
        json!({ "status": "success", "data": { "cores": cores, "memory": memory, "disk": disk }, "taskId": upid.0 }),
    ))
}

/// A snapshot name as the panel's backend cleaned it: letters, digits, `_` and `-`.
fn snapshot_name(raw: Option<String>) -> Result<String, VpsError> {
    let name: String =
        raw.unwrap_or_default().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    if name.is_empty() || name.len() > 40 {
        return Err(VpsError::bad("snapname: 1 to 40 letters, digits, '_' or '-'"));
    }
    Ok(name)
}

/// Snapshot bodies.
#[derive(Debug, Deserialize)]
pub struct SnapshotBody {
    snapname: Option<String>,
    description: Option<String>,
}

pub async fn snapshots(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, VpsError> {
    let server = owned(&state, &user, &raw).await?;
    let node = node_of(&server)?;
    let list: SnapshotList =
        call(&state, node, RequestKind::SNAPSHOT_LIST, &ContainerQuery { name: server.container.clone() }, CALL)
            .await?;
    let data: Vec<Value> = list
        .snapshots
        .iter()
        .map(|s| json!({ "name": s.name, "description": s.description, "snaptime": s.snaptime }))
        .collect();
    Ok(Json(json!({ "status": "success", "data": data })))
}

/// A snapshot operation on the caller's server: the cleaned name and the task running it.
async fn snapshot_task(
    state: &AppState,
    user: &Customer,
    raw: &str,
    snapname: Option<String>,
    op: impl FnOnce(String) -> ContainerOp,
) -> Result<(String, Upid), VpsError> {
    let server = owned(state, user, raw).await?;
    let name = snapshot_name(snapname)?;
    let upid = act(state, user, &server, op(name.clone())).await?;
    Ok((name, upid))
}

pub async fn snapshot_create(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<SnapshotBody>,
) -> Result<Json<Value>, VpsError> {
    let description = body.description.unwrap_or_default();
    let op = |name| ContainerOp::SnapshotCreate { name, description };
    let (name, upid) = snapshot_task(&state, &user, &raw, body.snapname, op).await?;
    Ok(Json(json!({ "status": "success", "taskId": upid.0, "snapname": name })))
}

pub async fn snapshot_rollback(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<SnapshotBody>,
) -> Result<Json<Value>, VpsError> {
    let op = |name| ContainerOp::SnapshotRollback { name };
    let (_, upid) = snapshot_task(&state, &user, &raw, body.snapname, op).await?;
    Ok(Json(json!({ "status": "success", "taskId": upid.0 })))
}

pub async fn snapshot_delete(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<SnapshotBody>,
) -> Result<Json<Value>, VpsError> {
    let op = |name| ContainerOp::SnapshotDelete { name };
    let (_, upid) = snapshot_task(&state, &user, &raw, body.snapname, op).await?;
    Ok(Json(json!({ "status": "success", "taskId": upid.0 })))
}

/// `GET /api/server/tasks/{upid}`: a task's state and log, Proxmox-style (`status` running or
/// stopped, `exitstatus` `OK` or the error), plus `state`.
pub async fn task(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, VpsError> {
    let upid = Upid(raw.trim().to_string());
    let store = state.store.clone();
    let u = upid.clone();
    let record = blocking(move || store.task(&u)).await?;
    let not_found = || VpsError::not_found(format!("task {} not found", upid.0));
    let record = record.ok_or_else(not_found)?;
    // Tasks of a server are its owner's, also once the server is deleted.
    if !user.is_admin() && record.user_id != Some(user.id) {
        return Err(not_found());
    }
    let mut info = TaskInfo {
        upid: record.upid.clone(),
        kind: record.kind.clone(),
        container: String::new(),
        state: record.state.clone(),
        started_ms: record.started_at.unix_timestamp() as u64 * 1000,
        ended_ms: record.ended_at.map(|t| t.unix_timestamp() as u64 * 1000),
        log: record.log.clone(),
    };
    if let (TaskState::Running, Some(node)) = (&record.state, record.node_id) {
        if let Ok(fresh) = wait_task(&state, node, record.server_id, &record.upid, Duration::ZERO).await {
            info = fresh;
        }
    }
    let (status, exit) = match &info.state {
        TaskState::Running => ("running", Value::Null),
        TaskState::Ok => ("stopped", json!("OK")),
        TaskState::Error { message } => ("stopped", json!(message)),
    };
    let log: Vec<Value> = info.log.iter().enumerate().map(|(n, t)| json!({ "n": n + 1, "t": t })).collect();
    Ok(Json(json!({
        "upid": info.upid.0,
        "type": if info.kind.is_empty() { record.kind } else { info.kind.clone() },
        "status": status,
        "exitstatus": exit,
        "state": match &info.state { TaskState::Running => "running", TaskState::Ok => "ok", TaskState::Error { .. } => "error" },
        "node": record.node_id.map(|n| n.0),
        "serverId": record.server_id,
        "starttime": info.started_ms / 1000,
        "endtime": info.ended_ms.map(|t| t / 1000),
        "log": log,
    })))
}
