//! The fleet: the QUIC endpoint agents dial, one session per connected node, and the live state
//! cache the HTTP APIs read.

mod enroll;
pub mod push;
mod server;
mod session;
pub mod tls;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_protocol::close::CloseCode;
use flotilla_protocol::facts::HostFacts;
use flotilla_protocol::metrics::MetricsSample;
use flotilla_protocol::proxy::CoreStatus;
use flotilla_protocol::rpc::{Request, RequestKind};
use flotilla_protocol::token::JoinToken;
use flotilla_protocol::{NodeId, RequestId};
use time::OffsetDateTime;

use crate::pki::Pki;
use crate::store::{Store, StoreError};
use tls::CertRegistry;

/// Settings of the fleet endpoint.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// UDP address the QUIC endpoint binds.
    pub quic: SocketAddr,
    /// Addresses written into join tokens (`host:port`), tried by agents in order.
    pub public_addrs: Vec<String>,
    pub join_token_ttl: Duration,
    pub agent_cert_lifetime: Duration,
    pub heartbeat_interval: Duration,
}

/// What the controller currently knows of a node's agent (in memory; see the store for what
/// survives restarts).
#[derive(Debug, Clone, Default)]
pub struct NodeLive {
    pub connected: bool,
    pub connected_since: Option<OffsetDateTime>,
    pub last_seen: Option<OffsetDateTime>,
    /// Round trip of the last answered application heartbeat.
    pub rtt: Option<Duration>,
    pub metrics: Option<MetricsSample>,
    pub facts: Option<HostFacts>,
    pub peer_addr: Option<SocketAddr>,
    pub agent_version: Option<String>,
    /// The agent drives a proxy core.
    pub proxy_capable: bool,
    /// The agent keeps per-user lifecycle settings and serves the local user API.
    pub lifecycle_capable: bool,
    /// Clients the agent has off the core for their IP limit, by lower-cased email: until when
    /// (unix ms), from its `USER_EVENT`s.
    pub ip_limited: std::collections::BTreeMap<String, i64>,
    /// Last status of the node's proxy core, and when it arrived (the agent does not resend it
    /// just because the uptime moved).
    pub core: Option<CoreStatus>,
    pub core_reported_at: Option<std::time::Instant>,
    /// The agent drives WireGuard.
    pub wireguard_capable: bool,
    /// Last WireGuard status the agent reported.
    pub wireguard: Option<flotilla_protocol::wireguard::WgStatus>,
    /// The metrics sample before `metrics` (host network rates are the difference).
    pub previous_metrics: Option<MetricsSample>,
    /// The agent can upgrade itself from a package it is sent.
    pub self_upgrade_capable: bool,
    /// Installed package and last upgrade, as this session's agent reported them.
    pub release: Option<flotilla_protocol::upgrade::AgentRelease>,
    /// The agent runs containers (the VPS API's servers).
    pub containers_capable: bool,
}

struct SessionSlot {
    id: u64,
    conn: quinn::Connection,
}

#[derive(Default)]
struct NodeEntry {
    live: NodeLive,
    session: Option<SessionSlot>,
}

/// Fleet failures surfaced to callers.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("node {0} is not connected")]
    NotConnected(NodeId),
    #[error("call to node {node} failed: {error}")]
    Call { node: NodeId, error: String },
    #[error("node {node} answered: {error}")]
    Rpc { node: NodeId, error: flotilla_protocol::rpc::RpcError },
    #[error("call to node {0} timed out")]
    Timeout(NodeId),
    #[error("QUIC endpoint: {0}")]
    Endpoint(String),
}

/// A join token just issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: OffsetDateTime,
}

/// Issues a single-use join token for `node`: a fresh secret whose hash is stored with an expiry.
/// Used by the API and by `flotilla-controller node add` (which runs without the endpoint).
pub fn issue_join_token(
    store: &Store,
    ca_fingerprint: [u8; 32],
    public_addrs: &[String],
    ttl: Duration,
    node: NodeId,
) -> Result<IssuedToken, StoreError> {
    let secret: [u8; 32] = rand::random();
    let expires_at = OffsetDateTime::now_utc() + time::Duration::try_from(ttl).unwrap_or(time::Duration::hours(24));
    store.create_join_token(node, &JoinToken::secret_hash(&secret), expires_at)?;
    let token = JoinToken { controller: public_addrs.to_vec(), ca_fingerprint, secret };
    Ok(IssuedToken { token: token.encode(), expires_at })
}

/// The agent registry plus the endpoint serving it.
pub struct Fleet {
    store: Store,
    pki: Arc<Pki>,
    certs: Arc<CertRegistry>,
    config: FleetConfig,
    nodes: Mutex<HashMap<NodeId, NodeEntry>>,
    next_session: AtomicU64,
    next_request: AtomicU64,
    endpoint: quinn::Endpoint,
    /// One lock per node so pushes of its proxy state reach the agent in revision order.
    push_locks: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    wg_push_locks: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    /// Container samples and tasks as nodes report them (after the store has them).
    vps_events: tokio::sync::broadcast::Sender<crate::vps::VpsEvent>,
    /// Host-level events of the nodes (webhooks' `node.*` and `system.*` events).
    host_events: tokio::sync::broadcast::Sender<HostEvent>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("quic", &self.config.quic).finish()
    }
}

/// Something that happened on a node, for the webhooks (and anything else that listens).
#[derive(Debug, Clone, PartialEq)]
pub enum HostEvent {
    /// Its agent connected.
    NodeOnline { node: NodeId },
    /// Its agent's link ended.
    NodeOffline { node: NodeId, reason: String },
    /// A systemd unit the agent watches entered the failed state.
    ServiceFailed { node: NodeId, unit: String, message: String },
    /// A filesystem passed the disk warning threshold (percent used).
    DiskWarning { node: NodeId, mount: String, used_percent: f64 },
}

impl Fleet {
    /// Binds the QUIC endpoint and starts accepting agents.
    pub fn start(
        store: Store,
        pki: Arc<Pki>,
        config: FleetConfig,
        data_dir: &std::path::Path,
    ) -> Result<Arc<Fleet>, FleetError> {
        let certs = Arc::new(CertRegistry::new(store.valid_certs()?));
        let endpoint = server::bind(&pki, certs.clone(), &config, data_dir)?;
        let fleet = Arc::new(Fleet {
            store,
            pki,
            certs,
            config,
            nodes: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
            endpoint,
            push_locks: Mutex::new(HashMap::new()),
            wg_push_locks: Mutex::new(HashMap::new()),
            vps_events: tokio::sync::broadcast::channel(1024).0,
            host_events: tokio::sync::broadcast::channel(1024).0,
        });
        tokio::spawn(server::accept_loop(fleet.clone()));
        Ok(fleet)
    }

    /// Address the QUIC endpoint is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Closes every link and the endpoint, waiting briefly for the close to reach agents.
    pub async fn shutdown(&self) {
        self.endpoint.close(quinn::VarInt::from_u32(CloseCode::SHUTDOWN.0), b"controller shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, NodeEntry>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The controller's CA.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The store behind the fleet.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Live state of one node (default: never connected since this controller started).
    pub fn live(&self, node: NodeId) -> NodeLive {
        self.lock().get(&node).map(|e| e.live.clone()).unwrap_or_default()
    }

    /// Container samples and task reports from now on. A slow receiver loses the oldest
    /// (`RecvError::Lagged`); the store has everything.
    pub fn vps_events(&self) -> tokio::sync::broadcast::Receiver<crate::vps::VpsEvent> {
        self.vps_events.subscribe()
    }

    /// Host-level events of every node, as they happen.
    pub fn host_events(&self) -> tokio::sync::broadcast::Receiver<HostEvent> {
        self.host_events.subscribe()
    }

    /// Announces a host-level event (no one listening is fine).
    pub fn announce(&self, event: HostEvent) {
        let _ = self.host_events.send(event);
    }

    /// Number of nodes with a session right now.
    pub fn connected_count(&self) -> usize {
        self.lock().values().filter(|e| e.session.is_some()).count()
    }

    /// Issues a single-use join token for `node`.
    pub fn issue_join_token(&self, node: NodeId) -> Result<IssuedToken, FleetError> {
        Ok(issue_join_token(
            &self.store,
            self.pki.ca_fingerprint(),
            &self.config.public_addrs,
            self.config.join_token_ttl,
            node,
        )?)
    }

    /// Deletes a node: its certificates stop working at once and its session is closed.
    pub fn remove_node(&self, node: NodeId) -> Result<bool, FleetError> {
        let existed = self.store.delete_node(node)?;
        self.certs.revoke_node(node);
        if let Some(entry) = self.lock().remove(&node) {
            if let Some(slot) = entry.session {
                slot.conn.close(quinn::VarInt::from_u32(CloseCode::REVOKED.0), b"node deleted");
            }
        }
        if existed {
            tracing::info!(node_id = %node, "node deleted; its agent is disconnected and refused from now on");
        }
        Ok(existed)
    }

    /// The node's current connection and a request to send on it.
    fn prepare(
        &self,
        node: NodeId,
        kind: RequestKind,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(quinn::Connection, Request), FleetError> {
        let conn = self
            .lock()
            .get(&node)
            .and_then(|e| e.session.as_ref().map(|s| s.conn.clone()))
            .ok_or(FleetError::NotConnected(node))?;
        let request = Request {
            id: RequestId(self.next_request.fetch_add(1, Ordering::Relaxed)),
            deadline_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
            kind,
            body,
        };
        Ok((conn, request))
    }

    /// Sends one request to a node's agent and waits for the answer.
    pub async fn call(
        &self,
        node: NodeId,
        kind: RequestKind,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, FleetError> {
        let (conn, request) = self.prepare(node, kind, body, timeout)?;
        let call = async {
            let (mut send, mut recv) =
                conn.open_bi().await.map_err(|e| FleetError::Call { node, error: e.to_string() })?;
            let out = flotilla_protocol::io::call(&mut send, &mut recv, request).await;
            let _ = send.finish();
            out.map_err(|e| match e {
                flotilla_protocol::io::CallError::Rpc(error) => FleetError::Rpc { node, error },
                other => FleetError::Call { node, error: other.to_string() },
            })
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| FleetError::Timeout(node))?
    }

    /// Opens a stream to a node's agent with a request that keeps it (a console): once the
    /// agent has answered, the stream is the caller's, both halves.
    pub async fn open_stream(
        &self,
        node: NodeId,
        kind: RequestKind,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), FleetError> {
        let (conn, request) = self.prepare(node, kind, body, timeout)?;
        let open = async {
            let (mut send, mut recv) =
                conn.open_bi().await.map_err(|e| FleetError::Call { node, error: e.to_string() })?;
            flotilla_protocol::io::call(&mut send, &mut recv, request).await.map_err(|e| match e {
                flotilla_protocol::io::CallError::Rpc(error) => FleetError::Rpc { node, error },
                other => FleetError::Call { node, error: other.to_string() },
            })?;
            Ok((send, recv))
        };
        tokio::time::timeout(timeout, open).await.map_err(|_| FleetError::Timeout(node))?
    }

    /// Registers a new session of `node`, closing any older one. Returns the session id.
    fn attach(&self, node: NodeId, conn: quinn::Connection, hello: &flotilla_protocol::messages::Hello) -> u64 {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let now = OffsetDateTime::now_utc();
        let mut nodes = self.lock();
        let entry = nodes.entry(node).or_default();
        if let Some(old) = entry.session.take() {
            tracing::info!(node_id = %node, "a newer session replaces the current one");
            old.conn.close(quinn::VarInt::from_u32(CloseCode::REPLACED.0), b"replaced by a newer session");
        }
        entry.live = NodeLive {
            connected: true,
            connected_since: Some(now),
            last_seen: Some(now),
            rtt: None,
            metrics: entry.live.metrics.take(),
            facts: Some(hello.facts.clone()),
            peer_addr: Some(conn.remote_address()),
            agent_version: Some(hello.agent_version.clone()),
            proxy_capable: hello.capabilities.contains(flotilla_protocol::messages::Capabilities::PROXY_CORE),
            lifecycle_capable: hello.capabilities.contains(flotilla_protocol::messages::Capabilities::USER_LIFECYCLE),
            ip_limited: std::mem::take(&mut entry.live.ip_limited),
            core: entry.live.core.take(),
            core_reported_at: entry.live.core_reported_at.take(),
            wireguard_capable: hello.capabilities.contains(flotilla_protocol::messages::Capabilities::WIREGUARD),
            wireguard: entry.live.wireguard.take(),
            previous_metrics: entry.live.previous_metrics.take(),
            self_upgrade_capable: hello.capabilities.contains(flotilla_protocol::messages::Capabilities::SELF_UPGRADE),
            // Reported afresh by every session.
            release: None,
            containers_capable: hello.capabilities.contains(flotilla_protocol::messages::Capabilities::CONTAINERS),
        };
        entry.session = Some(SessionSlot { id, conn });
        id
    }

    /// Ends session `id` of `node` if it is still the current one.
    fn detach(&self, node: NodeId, id: u64) -> Option<NodeLive> {
        let mut nodes = self.lock();
        let entry = nodes.get_mut(&node)?;
        if entry.session.as_ref().map(|s| s.id) != Some(id) {
            return None;
        }
        entry.session = None;
        entry.live.connected = false;
        Some(entry.live.clone())
    }

    /// Applies `f` to the live state of `node` while session `id` is current.
    fn update_live(&self, node: NodeId, id: u64, f: impl FnOnce(&mut NodeLive)) {
        let mut nodes = self.lock();
        if let Some(entry) = nodes.get_mut(&node) {
            if entry.session.as_ref().map(|s| s.id) == Some(id) {
                f(&mut entry.live);
            }
        }
    }
}
