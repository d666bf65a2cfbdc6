//! The VPS API's real-time feed: Socket.IO (protocol v5, i.e. socket.io-client v3/v4) at
//! `/socket.io`, on the controller's HTTP listener.
//!
//! * Connect with a session token of `POST /api/auth/login`: `auth: {token}` in the CONNECT
//!   packet, `?token=` in the handshake query, or an `Authorization: Bearer` header. Without one
//!   the connection is refused (`connect_error`), unless `[vps] anonymous_socketio` is on (the
//!   original web UI sends no token); anonymous sockets may watch any server.
//! * `subscribe-server` (the server id, a number or numeric string) joins room `server-{id}`
//!   when the caller may see the server (its owner, an administrator) and answers at once with
//!   its `server-stats`; otherwise an `error` event `{message}`. `unsubscribe-server` leaves.
//! * Every samples report of a node pushes `server-stats` `{serverId, sampledAt, stats: {status,
//!   data}}` (`sampledAt`: Unix ms of the agent's sample) to the rooms of its servers, and
//!   `server-alerts` `{serverId, alerts}` when a metric passes its threshold (see
//!   [`crate::vps_alerts`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use flotilla_protocol::codec;
use flotilla_protocol::containers::{ContainerQuery, ContainerSample, ContainerState, ContainerStatus, TaskState};
use flotilla_protocol::rpc::RequestKind;
use flotilla_protocol::NodeId;
use serde_json::{json, Value};
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::SocketIo;
use tokio::sync::broadcast::error::RecvError;

use super::servers::stats_data;
use super::{bearer, customer_for_token, Customer};
use crate::api::AppState;
use crate::store::{ServerRecord, ServerStatus, StoreError};
use crate::vps::{VpsEvent, METRICS_BUCKET_S};
use crate::vps_alerts::{AlertTracker, ServerAlerts};

/// Where socket.io-client looks by default.
pub const PATH: &str = "/socket.io";
/// At most this many recorded points go in `rrdData` (one per metrics bucket: 30 minutes).
const RRD_POINTS: usize = 60;
/// How long a (node, container) → server lookup is trusted; tasks (resize, delete) drop it
/// sooner.
const SERVER_CACHE_TTL: Duration = Duration::from_secs(30);
/// How long a subscribe waits for the node's live status before answering from what is known.
const LIVE_CALL: Duration = Duration::from_secs(5);
/// How long a node's live status answers further subscribes to the same server: a panel opened
/// by many viewers at once asks the node once, not once per viewer.
const LIVE_FRESH: Duration = Duration::from_secs(2);

/// Why a connection is refused; the text is the client's `connect_error` message.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "authentication required: pass a session token from POST /api/auth/login as auth.token, \
         ?token= or an Authorization: Bearer header"
    )]
    Missing,
    #[error("invalid or expired token")]
    Invalid,
    #[error("cannot check the token now; try again")]
    Unavailable,
}

/// Who is on the other end of a socket (kept in the socket's extensions).
#[derive(Debug, Clone)]
enum Caller {
    User(Customer),
    /// No token, accepted because `[vps] anonymous_socketio` is on.
    Anonymous,
}

/// The latest sample of a server from its node's reports.
#[derive(Debug, Clone, Copy)]
struct Live {
    state: ContainerState,
    sample: ContainerSample,
    /// Unix ms the container was first seen running (or, after a live status, started): the
    /// samples carry no uptime.
    running_since_ms: Option<u64>,
}

impl Live {
    fn uptime(&self) -> u64 {
        match (self.state, self.running_since_ms) {
            (ContainerState::Running, Some(since)) => self.sample.time_ms.saturating_sub(since) / 1000,
            _ => 0,
        }
    }
}

/// What the connect and event handlers and the pusher share.
struct Shared {
    state: AppState,
    live: Mutex<HashMap<i64, Live>>,
    /// The nodes' recent live statuses per container; one call in flight per container.
    statuses: Mutex<HashMap<(NodeId, String), StatusSlot>>,
}

/// A container's latest live status and when it came; locked while a call for it is in flight.
type StatusSlot = Arc<tokio::sync::Mutex<Option<(Instant, ContainerStatus)>>>;

impl Shared {
    /// Records a sample of server `id`; returns it with its uptime bookkeeping.
    fn record(&self, id: i64, state: ContainerState, sample: ContainerSample) -> Live {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let since = match (state, live.get(&id).and_then(|l| l.running_since_ms)) {
            (ContainerState::Running, Some(since)) => Some(since),
            (ContainerState::Running, None) => Some(sample.time_ms),
            _ => None,
        };
        let entry = Live { state, sample, running_since_ms: since };
        live.insert(id, entry);
        entry
    }

    fn latest(&self, id: i64) -> Option<Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).get(&id).copied()
    }

    fn forget(&self, id: i64) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

/// Serves Socket.IO on `router`, at `/socket.io` and, with a `base_path`, also at
/// `{base_path}/socket.io` (one engine per path: a socketioxide layer answers a single path;
/// both get every push). Starts the task that pushes stats and alerts; it ends when aborted.
pub fn attach(state: AppState, router: Router, base_path: Option<&str>) -> (Router, tokio::task::JoinHandle<()>) {
    let shared = Arc::new(Shared { state, live: Mutex::new(HashMap::new()), statuses: Mutex::new(HashMap::new()) });
    let mut paths = vec![PATH.to_string()];
    paths.extend(base_path.map(|prefix| format!("{prefix}{PATH}")));
    let mut router = router;
    let mut ios = vec![];
    for path in paths {
        let (layer, io) = SocketIo::builder().req_path(path).build_layer();
        register(&io, shared.clone());
        // The layer answers its path before the router; everything else passes through.
        router = router.layer(layer);
        ios.push(io);
    }
    let events = shared.state.fleet.vps_events();
    let task = tokio::spawn(push(shared, ios, events));
    (router, task)
}

/// The `/` namespace: authentication middleware, then the subscribe handlers.
fn register(io: &SocketIo, shared: Arc<Shared>) {
    let auth_shared = shared.clone();
    let authenticate = move |s: SocketRef, TryData(auth): TryData<Value>| {
        let shared = auth_shared.clone();
        async move { authenticate(&shared, &s, auth.ok()).await }
    };
    let on_connect = move |s: SocketRef| {
        let subscribe_shared = shared.clone();
        s.on("subscribe-server", move |s: SocketRef, TryData(raw): TryData<Value>| {
            let shared = subscribe_shared.clone();
            async move { subscribe(&shared, &s, raw.ok()).await }
        });
        s.on("unsubscribe-server", |s: SocketRef, TryData(raw): TryData<Value>| async move {
            if let Some(id) = raw.ok().as_ref().and_then(server_id) {
                s.leave(room(id));
            }
        });
        async {}
    };
    io.ns("/", on_connect.with(authenticate));
}

/// The room of a server's subscribers.
fn room(id: i64) -> String {
    format!("server-{id}")
}

/// A server id as the UI sends it: a number, or a string of digits.
fn server_id(raw: &Value) -> Option<i64> {
    let id = match raw {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    (id > 0).then_some(id)
}

/// The connect middleware: finds the caller's token and checks it.
async fn authenticate(shared: &Shared, s: &SocketRef, auth: Option<Value>) -> Result<(), ConnectError> {
    let usable = |t: &str| {
        let t = t.trim();
        // Clients without a token may still send `null` or `undefined` as text.
        (!t.is_empty() && t != "null" && t != "undefined").then(|| t.to_string())
    };
    let parts = s.req_parts();
    let from_auth = auth.as_ref().and_then(|a| a.get("token")).and_then(Value::as_str).and_then(usable);
    let from_query = || {
        let query = parts.uri.query()?;
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token").and_then(|(_, v)| usable(&v))
    };
    let token = from_auth.or_else(from_query).or_else(|| bearer(parts));
    let caller = match token {
        Some(token) => match customer_for_token(&shared.state, token).await {
            Ok(Some(customer)) => Caller::User(customer),
            Ok(None) => return Err(ConnectError::Invalid),
            Err(_) => return Err(ConnectError::Unavailable),
        },
        None if shared.state.vps.anonymous_socketio => Caller::Anonymous,
        None => return Err(ConnectError::Missing),
    };
    s.extensions.insert(caller);
    Ok(())
}

/// `subscribe-server`: joins the server's room and sends its stats, or an `error` event.
async fn subscribe(shared: &Shared, s: &SocketRef, raw: Option<Value>) {
    let refuse = |message: String| {
        let _ = s.emit("error", &json!({ "message": message }));
    };
    let Some(id) = raw.as_ref().and_then(server_id) else {
        return refuse(format!("subscribe-server needs a server id, got {}", raw.unwrap_or(Value::Null)));
    };
    let store = shared.state.store.clone();
    let server = match tokio::task::spawn_blocking(move || store.server(id)).await {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "socket.io: cannot read a server");
            return refuse("cannot read the server now; try again".into());
        }
        Err(e) => {
            tracing::warn!(error = %e, "socket.io: server lookup failed");
            return refuse("cannot read the server now; try again".into());
        }
    };
    let allowed = |server: &ServerRecord| match s.extensions.get::<Caller>() {
        Some(Caller::User(user)) => user.is_admin() || user.id == server.user_id,
        Some(Caller::Anonymous) => true,
        None => false,
    };
    // Others' servers are "not found", as in the REST API.
    let Some(server) = server.filter(allowed) else { return refuse(format!("server {id} not found")) };
    s.join(room(id));
    let stats = snapshot(shared, &server).await;
    let _ = s.emit("server-stats", &json!({ "serverId": id, "stats": stats }));
}

/// The last `RRD_POINTS` recorded points of a server.
async fn recorded(shared: &Shared, id: i64) -> Vec<(ContainerSample, u64, u64)> {
    let since = time::OffsetDateTime::now_utc().unix_timestamp() - (RRD_POINTS as u64 * METRICS_BUCKET_S) as i64;
    let store = shared.state.store.clone();
    match tokio::task::spawn_blocking(move || store.server_metrics(id, since)).await {
        Ok(Ok(mut points)) => {
            points.drain(..points.len().saturating_sub(RRD_POINTS));
            points
        }
        Ok(Err(e)) => {
            tracing::warn!(server = id, error = %e, "socket.io: cannot read recorded metrics");
            vec![]
        }
        Err(_) => vec![],
    }
}

/// A server's `stats` on subscribe: the node's live status when it answers quickly, else the
/// latest reported sample, else the last recorded point.
async fn snapshot(shared: &Shared, server: &ServerRecord) -> Value {
    let points = recorded(shared, server.id).await;
    let (mem_max, disk_max) = maxima(server);
    let settled = !matches!(server.status, ServerStatus::Creating | ServerStatus::Error);
    let node = server.node_id.filter(|n| shared.state.fleet.live(*n).connected);
    if let (Some(node), true) = (node, settled) {
        if let Some(live) = live_status(shared, node, &server.container).await {
            if live.state == ContainerState::Running {
                // Seeds the uptime the pushes count on.
                let mut map = shared.live.lock().unwrap_or_else(|e| e.into_inner());
                let since = live.now.time_ms.saturating_sub(live.uptime_s * 1000);
                let entry = map.entry(server.id).or_insert(Live {
                    state: live.state,
                    sample: live.now,
                    running_since_ms: None,
                });
                entry.running_since_ms = Some(since);
            }
            let finer: Vec<_> = live.samples.iter().map(|s| (*s, live.mem_max, live.disk_max)).collect();
            let finer = &finer[finer.len().saturating_sub(RRD_POINTS)..];
            let points = if finer.len() >= 2 { finer } else { &points[..] };
            let data = stats_data(
                server,
                state_name(live.state),
                live.uptime_s,
                &live.now,
                live.mem_max,
                live.disk_max,
                points,
            );
            return json!({ "status": "success", "data": data });
        }
    }
    let (name, uptime, now) = match shared.latest(server.id) {
        Some(live) => (state_name(live.state), live.uptime(), live.sample),
        None => (
            server.status.as_str(),
            0,
            points.last().map(|(s, _, _)| *s).unwrap_or(ContainerSample {
                time_ms: 0,
                cpu: 0.0,
                mem_used: 0,
                disk_used: 0,
                net_in: 0,
                net_out: 0,
            }),
        ),
    };
    json!({
        "status": if node.is_some() { "success" } else { "offline" },
        "data": stats_data(server, name, uptime, &now, mem_max, disk_max, &points),
    })
}

/// The container's status from its node, if it answers within [`LIVE_CALL`]; an answer younger
/// than [`LIVE_FRESH`] is reused, and concurrent subscribes wait for the one call in flight.
async fn live_status(shared: &Shared, node: NodeId, container: &str) -> Option<ContainerStatus> {
    let slot = {
        let mut statuses = shared.statuses.lock().unwrap_or_else(|e| e.into_inner());
        statuses.retain(|_, slot| {
            slot.try_lock().map_or(true, |s| s.as_ref().is_some_and(|(at, _)| at.elapsed() < LIVE_FRESH))
        });
        statuses.entry((node, container.to_string())).or_default().clone()
    };
    let mut slot = slot.lock().await;
    if let Some((at, status)) = slot.as_ref() {
        if at.elapsed() < LIVE_FRESH {
            return Some(status.clone());
        }
    }
    let body = codec::encode_body(&ContainerQuery { name: container.to_string() }).ok()?;
    match shared.state.fleet.call(node, RequestKind::CONTAINER_STATUS, body, LIVE_CALL).await {
        Ok(answer) => {
            let status: ContainerStatus = codec::decode_from(&answer).ok()?;
            *slot = Some((Instant::now(), status.clone()));
            Some(status)
        }
        Err(e) => {
            tracing::debug!(%node, container, error = %e, "socket.io: no live status");
            None
        }
    }
}

/// Memory and disk capacity of a server in bytes (as the REST API counts them).
fn maxima(server: &ServerRecord) -> (u64, u64) {
    (server.memory_mib << 20, server.disk_gb * 1_000_000_000)
}

fn percent(used: u64, max: u64) -> f64 {
    if max == 0 {
        0.0
    } else {
        used as f64 / max as f64 * 100.0
    }
}

/// The run state as the Proxmox API names it (as `/api/server/{id}/status` does).
fn state_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Running => "running",
        ContainerState::Stopped => "stopped",
        ContainerState::Frozen => "suspended",
        ContainerState::Creating => "creating",
        ContainerState::Missing => "deleted",
    }
}

/// A (node, container) → server lookup.
struct Cached {
    server: Option<ServerRecord>,
    fetched: Instant,
}

/// The pusher: follows the nodes' reports, sends stats to subscribed rooms and alerts to rooms
/// and the alert hub.
async fn push(shared: Arc<Shared>, ios: Vec<SocketIo>, mut events: tokio::sync::broadcast::Receiver<VpsEvent>) {
    let mut servers: HashMap<(NodeId, String), Cached> = HashMap::new();
    let mut alerts = AlertTracker::new(shared.state.vps.alerts);
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            // Samples are snapshots: the next report catches up.
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "socket.io: fell behind the nodes' reports");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        match event {
            VpsEvent::Task { server: Some(id), task, .. } => {
                // Resizes and deletions change what the cache holds.
                servers.retain(|_, c| c.server.as_ref().is_none_or(|s| s.id != id));
                if task.kind == "vzdestroy" && task.state == TaskState::Ok {
                    alerts.forget(id);
                    shared.forget(id);
                }
            }
            VpsEvent::Task { server: None, .. } => {}
            VpsEvent::Samples { node, samples } => {
                let stale: Vec<String> = samples
                    .containers
                    .iter()
                    .map(|(name, _, _)| name)
                    .filter(|name| {
                        servers.get(&(node, (*name).clone())).is_none_or(|c| c.fetched.elapsed() > SERVER_CACHE_TTL)
                    })
                    .cloned()
                    .collect();
                if !stale.is_empty() {
                    match lookup(&shared, node, stale).await {
                        Ok(found) => {
                            let fetched = Instant::now();
                            for (name, server) in found {
                                servers.insert((node, name), Cached { server, fetched });
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "socket.io: cannot map containers to servers"),
                    }
                }
                for (name, state, sample) in &samples.containers {
                    let Some(server) = servers.get(&(node, name.clone())).and_then(|c| c.server.clone()) else {
                        continue;
                    };
                    let live = shared.record(server.id, *state, *sample);
                    let (mem_max, disk_max) = maxima(&server);
                    if *state == ContainerState::Running {
                        let fired = alerts.observe(
                            server.id,
                            sample.cpu,
                            percent(sample.mem_used, mem_max),
                            percent(sample.disk_used, disk_max),
                        );
                        if !fired.is_empty() {
                            let payload = ServerAlerts { server_id: server.id, alerts: fired };
                            tracing::info!(server = server.id, alerts = ?payload.alerts, "resource alert");
                            // Nobody listening is fine.
                            let _ = shared.state.vps_alerts.send(payload.clone());
                            for io in &ios {
                                if let Err(e) = io.to(room(server.id)).emit("server-alerts", &payload).await {
                                    tracing::debug!(error = %e, "socket.io: alert not sent");
                                }
                            }
                        }
                    }
                    // Stats cost a store read: only for servers someone watches.
                    if ios.iter().all(|io| io.to(room(server.id)).sockets().is_empty()) {
                        continue;
                    }
                    let points = recorded(&shared, server.id).await;
                    let data =
                        stats_data(&server, state_name(*state), live.uptime(), sample, mem_max, disk_max, &points);
                    // `sampledAt`: Unix ms of the agent's sample, so clients (and the fan-out
                    // benchmark) can tell how old a push is; the original UI ignores it.
                    let payload = json!({
                        "serverId": server.id,
                        "sampledAt": sample.time_ms,
                        "stats": { "status": "success", "data": data },
                    });
                    for io in &ios {
                        if let Err(e) = io.to(room(server.id)).emit("server-stats", &payload).await {
                            tracing::debug!(error = %e, "socket.io: stats not sent");
                        }
                    }
                }
            }
        }
    }
}

/// The servers of containers `names` on `node`, in one trip to the store.
async fn lookup(
    shared: &Shared,
    node: NodeId,
    names: Vec<String>,
) -> Result<Vec<(String, Option<ServerRecord>)>, StoreError> {
    let store = shared.state.store.clone();
    tokio::task::spawn_blocking(move || {
        names
            .into_iter()
            .map(|name| store.server_by_container(node, &name).map(|server| (name, server)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| StoreError::Invalid(format!("lookup task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_as_the_ui_sends_them() {
        assert_eq!(server_id(&json!(7)), Some(7));
        assert_eq!(server_id(&json!(7.0)), Some(7));
        assert_eq!(server_id(&json!(" 12 ")), Some(12));
        for bad in [json!(0), json!(-1), json!(1.5), json!("x"), json!(null), json!({ "id": 1 })] {
            assert_eq!(server_id(&bad), None, "{bad}");
        }
    }

    #[test]
    fn uptime_counts_from_the_first_running_sample() {
        let sample =
            |t: u64| ContainerSample { time_ms: t, cpu: 0.0, mem_used: 0, disk_used: 0, net_in: 0, net_out: 0 };
        let mut live = Live { state: ContainerState::Running, sample: sample(61_000), running_since_ms: Some(1_000) };
        assert_eq!(live.uptime(), 60);
        live.state = ContainerState::Stopped;
        assert_eq!(live.uptime(), 0);
    }
}
