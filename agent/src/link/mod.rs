//! The link to the controller: dial out, say hello, then serve heartbeats, push metrics, answer
//! requests and renew the certificate, reconnecting with backoff whenever the link drops. Nothing
//! on the host depends on the link being up.

pub mod acks;
pub mod backoff;
pub mod liveness;
pub mod outbox;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_protocol::backup::{StateExport, StateImport};
use flotilla_protocol::close::CloseCode;
use flotilla_protocol::codec;
use flotilla_protocol::enroll::{RenewRequest, Renewed};
use flotilla_protocol::facts::HostFacts;
use flotilla_protocol::io::{read_message, write_message};
use flotilla_protocol::messages::{Capabilities, Event, EventKind, Hello, Message, Welcome};
use flotilla_protocol::proxy::{LogQuery, ProxyState, TrafficBatch};
use flotilla_protocol::rpc::{Request, RequestKind, RpcError, RpcResult};
use flotilla_protocol::upgrade::AgentUpgrade;
use flotilla_protocol::users::{DesiredUsers, DnsStatsQuery, StatsReset};
use flotilla_protocol::wireguard::{WgState, WgStatus};
use flotilla_protocol::{RequestId, CONTROLLER_SERVER_NAME, PROTOCOL_VERSION};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use crate::drivers::containers::ContainersDriver;
use crate::drivers::core::ProxyCore;
use crate::drivers::metrics::MetricsSampler;
use crate::drivers::wireguard::WireGuardDriver;
use crate::identity::{new_key_and_csr, CertInfo, Identity};
use crate::state::{LinkState, StateStore};
use crate::upgrade::SelfUpgrade;
use acks::JournalAcks;
use backoff::Backoff;
use liveness::Liveness;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
const RENEW_RETRY: Duration = Duration::from_secs(60);
/// How often a session whose AGENT_RELEASE named an upgrade in progress looks for its end.
const UPGRADE_WATCH: Duration = Duration::from_secs(1);

/// Why a connection attempt or session ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("controller refused this node: {0}")]
    Refused(String),
    /// The controller says this identity is revoked (node deleted, certificate superseded):
    /// no retry can succeed; only a new enrollment can.
    #[error("controller revoked this node's identity: {0}")]
    Revoked(String),
    #[error("another agent with this node's identity took over the link (cloned host or data dir?)")]
    Replaced,
    #[error("controller requires an agent upgrade: {0}")]
    Upgrade(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl LinkError {
    /// The status to record for a link that ended this way.
    fn state(&self) -> LinkState {
        match self {
            LinkError::Refused(_) | LinkError::Revoked(_) => LinkState::Refused,
            LinkError::Replaced => LinkState::Replaced,
            _ => LinkState::Disconnected,
        }
    }
}

/// Delay before retrying after a refusal or a takeover by a twin: retrying fast would only make
/// two agents sharing one identity push each other off the link in a loop.
const SLOW_RETRY: Duration = Duration::from_secs(30);

/// QUIC's code for the TLS alert `certificate_revoked` (crypto errors are 0x100 + the alert):
/// what the controller answers for a deleted node's or a superseded certificate.
const TLS_ALERT_CERTIFICATE_REVOKED: u64 = 0x100 + 44;

/// Exit status of `flotilla-agent run` when the controller revoked this node's identity; the
/// systemd unit's `RestartPreventExitStatus=` stops restarting on it.
pub const EXIT_REVOKED: u8 = 78;

/// Turns a QUIC connection error into a link error, recognising refusals of our certificate.
fn classify(addr: SocketAddr, e: &quinn::ConnectionError) -> LinkError {
    use quinn::ConnectionError as C;
    match e {
        C::ApplicationClosed(ac) => {
            let code = CloseCode(ac.error_code.into_inner() as u32);
            if code == CloseCode::REVOKED {
                LinkError::Revoked(code.describe().into())
            } else if code == CloseCode::CERTIFICATE_REQUIRED {
                LinkError::Refused(code.describe().into())
            } else if code == CloseCode::REPLACED {
                LinkError::Replaced
            } else {
                LinkError::Connect(addr, format!("closed by controller: {}", code.describe()))
            }
        }
        // A TLS alert during the handshake: the controller rejected our certificate (revoked,
        // unknown CA) or we rejected its.
        C::ConnectionClosed(cc) if u64::from(cc.error_code) == TLS_ALERT_CERTIFICATE_REVOKED => {
            LinkError::Revoked(format!("TLS handshake rejected: {cc}"))
        }
        C::ConnectionClosed(cc) if (0x100..0x200).contains(&u64::from(cc.error_code)) => {
            LinkError::Refused(format!("TLS handshake rejected: {cc}"))
        }
        C::TransportError(te) if (0x100..0x200).contains(&u64::from(te.code)) => {
            LinkError::Refused(format!("TLS handshake failed: {te}"))
        }
        other => LinkError::Connect(addr, other.to_string()),
    }
}

/// What a session can use from the agent.
#[derive(Clone, Default)]
pub struct ServeContext {
    /// Where renewed certificates are stored (None: renewal disabled, as in simulations).
    pub state: Option<StateStore>,
    /// Metrics driver; None disables metrics events.
    pub sampler: Option<Arc<Mutex<MetricsSampler>>>,
    pub metrics_interval: Duration,
    /// Proxy core driver; None when the host has no core (or in simulations).
    pub core: Option<Arc<dyn ProxyCore>>,
    /// WireGuard driver; None when WireGuard is off on this host.
    pub wireguard: Option<Arc<WireGuardDriver>>,
    /// Self-upgrade; None disables `AGENT_RELEASE` events and `UPGRADE_AGENT`.
    pub upgrade: Option<Arc<SelfUpgrade>>,
    /// Containers driver; None when containers are off on this host.
    pub containers: Option<Arc<ContainersDriver>>,
    /// Files driver; None when no `[files] roots` are configured.
    pub files: Option<Arc<crate::drivers::files::FilesDriver>>,
    /// Bandwidth counters; None in simulations.
    pub bandwidth: Option<Arc<crate::drivers::bandwidth::BandwidthDriver>>,
    /// systemd services driver; None when the host has no systemd on its bus (or it is off).
    pub services: Option<Arc<crate::drivers::services::ServicesDriver>>,
}

impl std::fmt::Debug for ServeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeContext").field("metrics_interval", &self.metrics_interval).finish()
    }
}

/// A welcomed session.
pub struct Established {
    pub conn: quinn::Connection,
    pub welcome: Welcome,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    identity: Identity,
}

impl std::fmt::Debug for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established").field("welcome", &self.welcome).finish()
    }
}

/// What a session with `ctx` can do: WireGuard is announced with or without a proxy core.
fn capabilities(ctx: &ServeContext) -> Capabilities {
    let mut caps = Capabilities::METRICS | Capabilities::CERT_RENEWAL;
    if ctx.core.is_some() {
        caps = caps | Capabilities::PROXY_CORE | Capabilities::USER_LIFECYCLE;
    }
    if ctx.wireguard.is_some() {
        caps = caps | Capabilities::WIREGUARD;
    }
    if ctx.containers.is_some() {
        caps = caps | Capabilities::CONTAINERS;
    }
    if ctx.services.is_some() {
        caps = caps | Capabilities::SERVICES;
    }
    if ctx.files.is_some() {
        caps = caps | Capabilities::FILES;
    }
    if ctx.bandwidth.is_some() {
        caps = caps | Capabilities::BANDWIDTH;
    }
    if ctx.upgrade.as_ref().is_some_and(|u| u.supported()) {
        caps = caps | Capabilities::SELF_UPGRADE;
    }
    caps
}

/// Dials `addr` with `identity` and completes Hello/Welcome, announcing what `ctx` can do.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    addr: SocketAddr,
    facts: HostFacts,
    ctx: &ServeContext,
) -> Result<Established, LinkError> {
    let config = tls::link_config(identity).map_err(|e| LinkError::Config(e.to_string()))?;
    let connecting = endpoint
        .connect_with(config, addr, CONTROLLER_SERVER_NAME)
        .map_err(|e| LinkError::Connect(addr, e.to_string()))?;
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| LinkError::Timeout("QUIC handshake"))?
        .map_err(|e| classify(addr, &e))?;
    let handshake = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| classify(addr, &e))?;
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            node_id: identity.node_id,
            capabilities: capabilities(ctx),
            facts,
            applied_revision: ctx.core.as_ref().map(|c| c.applied_revision()).unwrap_or(0),
        };
        // A refusal right after the handshake surfaces here as a failed write: report the
        // connection's close reason rather than a bare stream error.
        let gone = |e: &dyn std::fmt::Display| {
            conn.close_reason().map(|r| classify(addr, &r)).unwrap_or_else(|| LinkError::Protocol(e.to_string()))
        };
        write_message(&mut send, Message::Hello(hello)).await.map_err(|e| gone(&e))?;
        match read_message(&mut recv).await {
            Ok(Message::Welcome(welcome)) => Ok((send, recv, welcome)),
            Ok(Message::Upgrade(u)) => Err(LinkError::Upgrade(u.message)),
            Ok(other) => Err(LinkError::Protocol(format!("expected Welcome, got {}", other.name()))),
            Err(e) => Err(gone(&e)),
        }
    };
    let (send, recv, welcome) =
        tokio::time::timeout(WELCOME_TIMEOUT, handshake).await.map_err(|_| LinkError::Timeout("Welcome"))??;
    Ok(Established { conn, welcome, send, recv, identity: identity.clone() })
}

impl Established {
    /// Serves the session until it ends or `shutdown` flips; returns why it ended.
    pub async fn serve(self, ctx: &ServeContext, shutdown: &mut watch::Receiver<bool>) -> LinkError {
        let Established { conn, welcome, mut send, recv, identity } = self;
        let addr = conn.remote_address();
        let interval = Duration::from_millis(welcome.heartbeat_interval_ms.max(100) as u64);
        let mut liveness = Liveness::new(Instant::now(), interval);

        let (tx, mut rx) = mpsc::channel(64);
        let reader = tokio::spawn(flotilla_protocol::io::forward_messages(recv, tx));
        let requests = tokio::spawn(serve_requests(conn.clone(), ctx.clone()));
        let outbox = ctx.core.clone().map(|core| tokio::spawn(outbox::ship(conn.clone(), core)));

        let mut metrics = tokio::time::interval(ctx.metrics_interval.max(Duration::from_millis(100)));
        metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        let mut identity = identity;
        let mut renew_at = renewal_instant(&identity, ctx);
        let mut acks = JournalAcks::default();
        // The WireGuard journal has its own row numbers; event acks cover both.
        let mut wg_acks = JournalAcks::default();
        let (mut journal, mut core_status) = match &ctx.core {
            Some(core) => (Some(core.journal()), Some(core.status())),
            None => (None, None),
        };
        let (mut wg_journal, mut wg_status) = match &ctx.wireguard {
            Some(wg) => (Some(wg.journal()), Some(wg.status())),
            None => (None, None),
        };
        let mut wg_sent: Option<WgStatus> = None;
        let mut user_events = ctx.core.as_ref().and_then(|c| c.user_events());
        // Container tasks and samples: events from now on (a task that ran while the link was
        // down is read with TASK_STATUS).
        let mut container_tasks = ctx.containers.as_ref().map(|c| c.task_events());
        let mut container_samples = ctx.containers.as_ref().map(|c| c.samples());
        // Units that entered the failed state (one event per transition; none while the link is down).
        let mut service_failures = ctx.services.as_ref().map(|s| s.failures());
        // The release first of all: a freshly upgraded agent confirms it is up (the installer
        // waits for that), and the controller learns how the last upgrade ended.
        let mut upgrade_running = false;
        if let Some(upgrade) = &ctx.upgrade {
            match welcome_release(upgrade).await {
                Some(release) => {
                    upgrade_running = release.upgrading.is_some();
                    if let Err(e) = send_event(&mut send, &mut seq, EventKind::AGENT_RELEASE, &release).await {
                        return e;
                    }
                }
                None => tracing::warn!("cannot read the agent's release state"),
            }
        }
        let mut upgrade_watch = tokio::time::interval(UPGRADE_WATCH);
        upgrade_watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The core's state first (the controller reads from it whether the core counts per
        // user), then everything journaled while the link was down.
        if let Some(core) = &ctx.core {
            let status = core.current_status().await;
            if let Err(e) = send_event(&mut send, &mut seq, EventKind::CORE_STATUS, &status).await {
                return e;
            }
            if let Err(e) = ship_journal(&mut send, core, &mut acks, &mut seq).await {
                return e;
            }
        }
        if let Some(wg) = &ctx.wireguard {
            let status = wg.current_status().await;
            if let Err(e) = send_wg_status(&mut send, &mut seq, &mut wg_sent, status).await {
                return e;
            }
            if let Err(e) = ship_wg_journal(&mut send, wg, &mut wg_acks, &mut seq).await {
                return e;
            }
        }
        let end = loop {
            let dead_at = tokio::time::Instant::from_std(liveness.deadline());
            tokio::select! {
                _ = tokio::time::sleep_until(dead_at) => {
                    if liveness.is_dead(Instant::now()) {
                        conn.close(quinn::VarInt::from_u32(CloseCode::HEARTBEAT_TIMEOUT.0), b"no heartbeat");
                        break LinkError::Timeout("controller heartbeats stopped");
                    }
                }
                msg = rx.recv() => match msg {
                    Some(Ok(Message::Heartbeat(hb))) => {
                        liveness.on_heartbeat(Instant::now());
                        if let Err(e) = write_message(&mut send, Message::HeartbeatAck(hb)).await {
                            break LinkError::Protocol(format!("control stream: {e}"));
                        }
                    }
                    Some(Ok(Message::EventAck(ack))) => {
                        if let (Some(through), Some(core)) = (acks.acked(ack.seq), &ctx.core) {
                            let core = core.clone();
                            let deleted = tokio::task::spawn_blocking(move || core.journal_committed(through)).await;
                            if let Ok(Err(e)) = deleted {
                                tracing::warn!(error = %e, "cannot drop acknowledged journal rows");
                            }
                        }
                        if let (Some(through), Some(wg)) = (wg_acks.acked(ack.seq), &ctx.wireguard) {
                            let wg = wg.clone();
                            let deleted = tokio::task::spawn_blocking(move || wg.journal_committed(through)).await;
                            if let Ok(Err(e)) = deleted {
                                tracing::warn!(error = %e, "cannot drop acknowledged WireGuard journal rows");
                            }
                        }
                    }
                    Some(Ok(other)) => {
                        conn.close(quinn::VarInt::from_u32(CloseCode::PROTOCOL_ERROR.0), b"unexpected message");
                        break LinkError::Protocol(format!("unexpected {} on control stream", other.name()));
                    }
                    Some(Err(e)) => {
                        conn.close(quinn::VarInt::from_u32(CloseCode::PROTOCOL_ERROR.0), b"malformed frame");
                        break LinkError::Protocol(format!("malformed frame on control stream: {e}"));
                    }
                    None => break conn.close_reason().map(|r| classify(addr, &r))
                        .unwrap_or(LinkError::Protocol("control stream ended".into())),
                },
                _ = metrics.tick(), if ctx.sampler.is_some() => {
                    let Some(sample) = sample(ctx.sampler.clone()).await else { continue };
                    if let Err(e) = send_event(&mut send, &mut seq, EventKind::METRICS_SAMPLE, &sample).await {
                        break e;
                    }
                }
                Some(()) = changed(&mut journal) => {
                    let Some(core) = &ctx.core else { continue };
                    if let Err(e) = ship_journal(&mut send, core, &mut acks, &mut seq).await {
                        break e;
                    }
                }
                Some(()) = changed(&mut wg_journal) => {
                    let Some(wg) = &ctx.wireguard else { continue };
                    if let Err(e) = ship_wg_journal(&mut send, wg, &mut wg_acks, &mut seq).await {
                        break e;
                    }
                }
                Some(()) = changed(&mut wg_status) => {
                    let Some(rx) = &wg_status else { continue };
                    let status = rx.borrow().clone();
                    if let Err(e) = send_wg_status(&mut send, &mut seq, &mut wg_sent, status).await {
                        break e;
                    }
                }
                // The installer finished while this session runs (the new agent's own upgrade,
                // or the old agent before the rollback's restart): report the outcome now.
                _ = upgrade_watch.tick(), if upgrade_running => {
                    let Some(upgrade) = &ctx.upgrade else { continue };
                    if upgrade.upgrade_pending() {
                        continue;
                    }
                    let upgrade = upgrade.clone();
                    let Ok(release) = tokio::task::spawn_blocking(move || upgrade.release()).await else { continue };
                    upgrade_running = release.upgrading.is_some();
                    if let Err(e) = send_event(&mut send, &mut seq, EventKind::AGENT_RELEASE, &release).await {
                        break e;
                    }
                }
                Some(task) = next_broadcast(&mut container_tasks) => {
                    if let Err(e) = send_event(&mut send, &mut seq, EventKind::CONTAINER_TASK, &task).await {
                        break e;
                    }
                }
                Some(()) = changed(&mut container_samples) => {
                    let Some(rx) = &container_samples else { continue };
                    let samples = rx.borrow().clone();
                    if let Err(e) = send_event(&mut send, &mut seq, EventKind::CONTAINER_SAMPLES, &samples).await {
                        break e;
                    }
                }
                Some(failed) = next_broadcast(&mut service_failures) => {
                    if let Err(e) = send_event(&mut send, &mut seq, EventKind::SERVICE_FAILED, &failed).await {
                        break e;
                    }
                }
                Some(event) = next_broadcast(&mut user_events) => {
                    if let Err(e) = send_event(&mut send, &mut seq, EventKind::USER_EVENT, &event).await {
                        break e;
                    }
                }
                Some(()) = changed(&mut core_status) => {
                    let Some(rx) = &core_status else { continue };
                    let status = rx.borrow().clone();
                    if let Err(e) = send_event(&mut send, &mut seq, EventKind::CORE_STATUS, &status).await {
                        break e;
                    }
                }
                _ = sleep_until_opt(renew_at) => {
                    renew_at = match renew(&conn, &identity, ctx).await {
                        Ok(renewed) => {
                            identity = renewed;
                            renewal_instant(&identity, ctx)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "certificate renewal failed; keeping the current certificate");
                            Some(tokio::time::Instant::now() + RENEW_RETRY)
                        }
                    };
                }
                e = conn.closed() => break classify(addr, &e),
                _ = shutdown.changed() => {
                    conn.close(quinn::VarInt::from_u32(CloseCode::SHUTDOWN.0), b"agent shutting down");
                    break LinkError::Protocol("agent shutting down".into());
                }
            }
        };
        reader.abort();
        requests.abort();
        if let Some(task) = outbox {
            task.abort();
        }
        end
    }
}

/// Confirms a self-upgrade if this agent is its target, then reads the release to announce.
async fn welcome_release(upgrade: &Arc<SelfUpgrade>) -> Option<flotilla_protocol::upgrade::AgentRelease> {
    let upgrade = upgrade.clone();
    tokio::task::spawn_blocking(move || {
        upgrade.on_welcome();
        upgrade.release()
    })
    .await
    .ok()
}

/// Resolves when the watched value changes; never when there is nothing to watch (or it closed).
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) -> Option<()> {
    match rx {
        Some(r) => match r.changed().await {
            Ok(()) => Some(()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// The next event of a broadcast (the core's user events, container tasks); never when there is
/// none to watch. Events missed while the link was busy are dropped (user events are also in
/// the agent's log, tasks in its store).
async fn next_broadcast<T: Clone>(rx: &mut Option<tokio::sync::broadcast::Receiver<T>>) -> Option<T> {
    let Some(r) = rx else { return std::future::pending().await };
    loop {
        match r.recv().await {
            Ok(event) => return Some(event),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// Sends one event on the control stream.
async fn send_event<T: serde::Serialize>(
    send: &mut quinn::SendStream,
    seq: &mut u64,
    kind: EventKind,
    body: &T,
) -> Result<(), LinkError> {
    let body = codec::encode_body(body).map_err(|e| LinkError::Protocol(e.to_string()))?;
    *seq += 1;
    write_message(send, Message::Event(Event { kind, seq: *seq, body }))
        .await
        .map_err(|e| LinkError::Protocol(format!("control stream: {e}")))
}

/// Journal rows per read while shipping; each row is one event.
const JOURNAL_CHUNK: usize = 256;

/// Sends every proxy journal row not yet sent in this session, oldest first.
async fn ship_journal(
    send: &mut quinn::SendStream,
    core: &Arc<dyn ProxyCore>,
    acks: &mut JournalAcks,
    seq: &mut u64,
) -> Result<(), LinkError> {
    let journal = core.journal_id().map_err(|e| LinkError::Protocol(e.to_string()))?;
    let core = core.clone();
    ship_rows(send, acks, seq, EventKind::TRAFFIC_BATCH, move |after| {
        let rows = core.journal_after(after, JOURNAL_CHUNK).map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let batch = TrafficBatch {
                    journal,
                    seq: row.seq,
                    taken_at_ms: row.taken_at_ms,
                    users: row.users,
                    inbounds: row.inbounds,
                };
                (row.seq, batch)
            })
            .collect())
    })
    .await
}

/// Sends every WireGuard journal row not yet sent in this session, oldest first.
async fn ship_wg_journal(
    send: &mut quinn::SendStream,
    wg: &Arc<WireGuardDriver>,
    acks: &mut JournalAcks,
    seq: &mut u64,
) -> Result<(), LinkError> {
    let wg = wg.clone();
    ship_rows(send, acks, seq, EventKind::WG_TRAFFIC, move |after| {
        let rows = wg.journal_after(after, JOURNAL_CHUNK).map_err(|e| e.to_string())?;
        Ok(rows.into_iter().map(|batch| (batch.seq, batch)).collect())
    })
    .await
}

/// Sends the rows `read(after)` gives (journal seq, event body) as `kind` events until it gives
/// none, recording each in `acks`: the one loop behind both journals.
async fn ship_rows<B, F>(
    send: &mut quinn::SendStream,
    acks: &mut JournalAcks,
    seq: &mut u64,
    kind: EventKind,
    read: F,
) -> Result<(), LinkError>
where
    B: serde::Serialize + Send + 'static,
    F: Fn(u64) -> Result<Vec<(u64, B)>, String> + Clone + Send + 'static,
{
    loop {
        let after = acks.sent_through();
        let reader = read.clone();
        let rows = tokio::task::spawn_blocking(move || reader(after))
            .await
            .map_err(|e| LinkError::Protocol(e.to_string()))?
            .map_err(LinkError::Protocol)?;
        if rows.is_empty() {
            return Ok(());
        }
        for (row_seq, body) in rows {
            send_event(send, seq, kind, &body).await?;
            acks.sent(*seq, row_seq);
        }
    }
}

/// Sends the WireGuard status unless it is the one last sent in this session.
async fn send_wg_status(
    send: &mut quinn::SendStream,
    seq: &mut u64,
    last: &mut Option<WgStatus>,
    status: WgStatus,
) -> Result<(), LinkError> {
    if last.as_ref() == Some(&status) {
        return Ok(());
    }
    send_event(send, seq, EventKind::WG_STATUS, &status).await?;
    *last = Some(status);
    Ok(())
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When to renew (None when renewal is disabled or the certificate is unreadable).
fn renewal_instant(identity: &Identity, ctx: &ServeContext) -> Option<tokio::time::Instant> {
    ctx.state.as_ref()?;
    let info = CertInfo::parse(&identity.cert_der)?;
    let wait = (info.renew_at() - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
    Some(tokio::time::Instant::now() + Duration::try_from(wait).unwrap_or_default())
}

async fn sample(sampler: Option<Arc<Mutex<MetricsSampler>>>) -> Option<flotilla_protocol::metrics::MetricsSample> {
    let sampler = sampler?;
    tokio::task::spawn_blocking(move || sampler.lock().unwrap_or_else(|p| p.into_inner()).sample()).await.ok()
}

/// Asks the controller to sign a new key for this node and stores it. The old certificate stays
/// in use until the new one is stored.
async fn renew(conn: &quinn::Connection, identity: &Identity, ctx: &ServeContext) -> Result<Identity, String> {
    let state = ctx.state.as_ref().ok_or("renewal disabled")?;
    let (key_der, csr_der) = new_key_and_csr(&identity.node_name).map_err(|e| e.to_string())?;
    let renewed: Renewed =
        call_controller(conn, RequestKind::RENEW_CERTIFICATE, &RenewRequest { csr_der }, Duration::from_secs(10))
            .await?;
    let info = CertInfo::parse(&renewed.cert_der).ok_or("controller sent an unreadable certificate")?;
    state.replace_certificate(&renewed.cert_der, &key_der).map_err(|e| e.to_string())?;
    tracing::info!(serial = %info.serial_hex, not_after = %info.not_after, "certificate renewed");
    Ok(Identity { cert_der: renewed.cert_der, key_der, ..identity.clone() })
}

/// One request to the controller on its own stream, answered within `timeout`.
pub(crate) async fn call_controller<T: serde::Serialize, A: serde::de::DeserializeOwned>(
    conn: &quinn::Connection,
    kind: RequestKind,
    body: &T,
    timeout: Duration,
) -> Result<A, String> {
    let body = codec::encode_body(body).map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let request = Request { id: RequestId(1), deadline_ms: timeout.as_millis() as u32, kind, body };
    let answer = tokio::time::timeout(timeout, flotilla_protocol::io::call(&mut send, &mut recv, request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = send.finish();
    codec::decode_from(&answer).map_err(|e| e.to_string())
}

/// Requests the controller opens towards this agent.
async fn serve_requests(conn: quinn::Connection, ctx: ServeContext) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let (ctx, conn) = (ctx.clone(), conn.clone());
        tokio::spawn(async move {
            let request = match flotilla_protocol::io::read_request(&mut recv).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "unreadable controller request");
                    return;
                }
            };
            let (id, kind) = (request.id, request.kind);
            // A console keeps its stream after the answer: the terminal flows on it.
            if kind == RequestKind::CONSOLE_OPEN {
                return serve_console(request, &ctx, send, recv).await;
            }
            // The only request that needs the link itself: it pulls packages over it.
            let result = if kind == RequestKind::UPGRADE_AGENT {
                upgrade_agent(request, &ctx, &conn).await
            } else {
                dispatch(request, ctx).await
            };
            let served = flotilla_protocol::io::write_response(&mut send, id, result).await;
            let _ = send.finish();
            if let Err(e) = served {
                tracing::debug!(error = %e, "controller request failed");
            }
        });
    }
}

/// Answers `CONSOLE_OPEN` and, once the shell runs, relays it on the same stream.
async fn serve_console(request: Request, ctx: &ServeContext, mut send: quinn::SendStream, recv: quinn::RecvStream) {
    use flotilla_protocol::containers::ConsoleOpen;
    let opened = match (&ctx.containers, codec::decode_from::<ConsoleOpen>(&request.body)) {
        (None, _) => Err(RpcError::Unsupported(request.kind.0)),
        (_, Err(e)) => Err(RpcError::BadRequest(e.to_string())),
        (Some(containers), Ok(open)) => containers.open_console(&open).await.map_err(|e| e.to_rpc()),
    };
    let (result, session) = match opened {
        Ok(session) => (RpcResult::Ok(vec![]), Some(session)),
        Err(e) => (RpcResult::Err(e), None),
    };
    if flotilla_protocol::io::write_response(&mut send, request.id, result).await.is_err() {
        return;
    }
    match session {
        Some(session) => session.relay(send, recv).await,
        None => {
            let _ = send.finish();
        }
    }
}

/// Answers `UPGRADE_AGENT` once both packages are downloaded over `conn` and the installer runs.
async fn upgrade_agent(request: Request, ctx: &ServeContext, conn: &quinn::Connection) -> RpcResult {
    let Some(upgrade) = &ctx.upgrade else { return RpcResult::Err(RpcError::Unsupported(request.kind.0)) };
    let req = match codec::decode_from::<AgentUpgrade>(&request.body) {
        Ok(r) => r,
        Err(e) => return RpcResult::Err(RpcError::BadRequest(e.to_string())),
    };
    let rollout = req.rollout;
    match upgrade.start(req, conn).await {
        Ok(started) => codec::encode_body(&started)
            .map(RpcResult::Ok)
            .unwrap_or_else(|e| RpcResult::Err(RpcError::Failed(e.to_string()))),
        Err(e) => {
            tracing::warn!(%rollout, error = %e, "agent upgrade not started");
            RpcResult::Err(e.to_rpc())
        }
    }
}

/// Answers one controller request. Unknown kinds are answered, never dropped.
pub async fn dispatch(request: Request, ctx: ServeContext) -> RpcResult {
    fn answer<T: serde::Serialize>(value: &T) -> RpcResult {
        codec::encode_body(value).map(RpcResult::Ok).unwrap_or_else(|e| RpcResult::Err(RpcError::Failed(e.to_string())))
    }
    let no_core = || RpcResult::Err(RpcError::Refused("no proxy core on this host".into()));
    match request.kind {
        RequestKind::PING => RpcResult::Ok(vec![]),
        RequestKind::METRICS_NOW => match sample(ctx.sampler).await {
            Some(s) => answer(&s),
            None => RpcResult::Err(RpcError::Failed("metrics driver disabled".into())),
        },
        RequestKind::APPLY_PROXY_STATE => {
            let Some(core) = ctx.core else { return no_core() };
            match codec::decode_from::<ProxyState>(&request.body) {
                Ok(state) => answer(&core.apply(state).await),
                Err(e) => RpcResult::Err(RpcError::BadRequest(e.to_string())),
            }
        }
        RequestKind::APPLY_USERS => {
            let Some(core) = ctx.core else { return no_core() };
            match codec::decode_from::<DesiredUsers>(&request.body) {
                Ok(desired) => answer(&core.apply_users(desired).await),
                Err(e) => RpcResult::Err(RpcError::BadRequest(e.to_string())),
            }
        }
        RequestKind::USER_STATS => match ctx.core {
            Some(core) => answer(&core.user_stats().await),
            None => no_core(),
        },
        RequestKind::DNS_STATS => {
            let Some(core) = ctx.core else { return no_core() };
            match codec::decode_from::<DnsStatsQuery>(&request.body) {
                Ok(q) => answer(&core.dns_stats(&q).await),
                Err(e) => RpcResult::Err(RpcError::BadRequest(e.to_string())),
            }
        }
        RequestKind::RESET_STATS => {
            let Some(core) = ctx.core else { return no_core() };
            match codec::decode_from::<StatsReset>(&request.body) {
                Ok(what) => {
                    core.reset_stats(what).await;
                    RpcResult::Ok(vec![])
                }
                Err(e) => RpcResult::Err(RpcError::BadRequest(e.to_string())),
            }
        }
        RequestKind::RESTART_CORE => match ctx.core {
            Some(core) => answer(&core.restart().await),
            None => no_core(),
        },
        RequestKind::CORE_STATUS => match ctx.core {
            Some(core) => answer(&core.current_status().await),
            None => no_core(),
        },
        RequestKind::CORE_LOGS => {
            let Some(core) = ctx.core else { return no_core() };
            match codec::decode_from::<LogQuery>(&request.body) {
                Ok(q) => answer(&core.logs(&q)),
                Err(e) => RpcResult::Err(RpcError::BadRequest(e.to_string())),
            }
        }
        RequestKind::EXPORT_STATE => {
            let Some(state) = ctx.state else { return RpcResult::Err(RpcError::Refused("no agent store".into())) };
            let exported = tokio::task::spawn_blocking(move || state.export_snapshot()).await;
            match exported {
                Ok(Ok(sqlite)) => {
                    let taken_at_ms = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 / 1_000_000;
                    answer(&StateExport { taken_at_ms, sqlite })
                }
                Ok(Err(e)) => RpcResult::Err(RpcError::Failed(e.to_string())),
                Err(e) => RpcResult::Err(RpcError::Failed(e.to_string())),
            }
        }
        RequestKind::IMPORT_STATE => {
            let Some(state) = ctx.state else { return RpcResult::Err(RpcError::Refused("no agent store".into())) };
            let import = match codec::decode_from::<StateImport>(&request.body) {
                Ok(i) => i,
                Err(e) => return RpcResult::Err(RpcError::BadRequest(e.to_string())),
            };
            match tokio::task::spawn_blocking(move || state.import_snapshot(&import.sqlite)).await {
                Ok(Ok(report)) => answer(&report),
                Ok(Err(crate::state::backup::ImportError::State(e))) => RpcResult::Err(RpcError::Failed(e.to_string())),
                Ok(Err(e)) => RpcResult::Err(RpcError::BadRequest(e.to_string())),
                Err(e) => RpcResult::Err(RpcError::Failed(e.to_string())),
            }
        }
        RequestKind::APPLY_WIREGUARD => {
            let Some(wg) = ctx.wireguard else { return RpcResult::Err(RpcError::Unsupported(request.kind.0)) };
            match codec::decode_from::<WgState>(&request.body) {
                Ok(state) => answer(&wg.apply(state).await),
                Err(e) => RpcResult::Err(RpcError::BadRequest(e.to_string())),
            }
        }
        RequestKind::WIREGUARD_STATUS => match ctx.wireguard {
            Some(wg) => answer(&wg.current_status().await),
            None => RpcResult::Err(RpcError::Unsupported(request.kind.0)),
        },
        RequestKind::CONTAINER_CREATE
        | RequestKind::CONTAINER_ACTION
        | RequestKind::CONTAINER_STATUS
        | RequestKind::CONTAINER_LIST
        | RequestKind::SNAPSHOT_LIST
        | RequestKind::TASK_STATUS
        | RequestKind::CONSOLE_ACCESS => {
            let Some(containers) = ctx.containers else { return RpcResult::Err(RpcError::Unsupported(request.kind.0)) };
            dispatch_containers(&request, containers).await
        }
        RequestKind::FILE_OP => {
            let Some(files) = ctx.files else { return RpcResult::Err(RpcError::Unsupported(request.kind.0)) };
            match codec::decode_from::<flotilla_protocol::files::FileOp>(&request.body) {
                Ok(op) => match tokio::task::spawn_blocking(move || files.handle(op)).await {
                    Ok(answered) => answer(&answered),
                    Err(e) => RpcResult::Err(RpcError::Failed(e.to_string())),
                },
                Err(e) => RpcResult::Err(RpcError::BadRequest(e.to_string())),
            }
        }
        RequestKind::BANDWIDTH => {
            let Some(bandwidth) = ctx.bandwidth else { return RpcResult::Err(RpcError::Unsupported(request.kind.0)) };
            match codec::decode_from::<flotilla_protocol::bandwidth::BandwidthQuery>(&request.body) {
                Ok(query) => match tokio::task::spawn_blocking(move || bandwidth.report(&query)).await {
                    Ok(Ok(report)) => answer(&report),
                    Ok(Err(e)) => RpcResult::Err(RpcError::BadRequest(e)),
                    Err(e) => RpcResult::Err(RpcError::Failed(e.to_string())),
                },
                Err(e) => RpcResult::Err(RpcError::BadRequest(e.to_string())),
            }
        }
        RequestKind::SERVICES_LIST | RequestKind::SERVICE_ACTION => {
            let Some(services) = ctx.services else { return RpcResult::Err(RpcError::Unsupported(request.kind.0)) };
            dispatch_services(&request, &services).await
        }
        // Answered by the session, which has the connection the packages come over.
        RequestKind::UPGRADE_AGENT => RpcResult::Err(RpcError::Refused("upgrade requests need the link".into())),
        other => RpcResult::Err(RpcError::Unsupported(other.0)),
    }
}

/// Answers the services driver's requests.
async fn dispatch_services(request: &Request, services: &crate::drivers::services::ServicesDriver) -> RpcResult {
    use flotilla_protocol::services::{ServiceAction, ServiceQuery};
    fn answer<T: serde::Serialize>(value: Result<T, crate::drivers::services::ServicesError>) -> RpcResult {
        match value {
            Ok(v) => codec::encode_body(&v)
                .map(RpcResult::Ok)
                .unwrap_or_else(|e| RpcResult::Err(RpcError::Failed(e.to_string()))),
            Err(e) => RpcResult::Err(e.to_rpc()),
        }
    }
    // An undecodable body is `Failed`: `BadRequest` means "no such service" for these kinds.
    let undecodable = |e: flotilla_protocol::CodecError| RpcResult::Err(RpcError::Failed(format!("bad body: {e}")));
    if request.kind == RequestKind::SERVICES_LIST {
        match codec::decode_from::<ServiceQuery>(&request.body) {
            Ok(q) => answer(services.list(&q).await),
            Err(e) => undecodable(e),
        }
    } else {
        match codec::decode_from::<ServiceAction>(&request.body) {
            Ok(a) => answer(services.action(&a).await),
            Err(e) => undecodable(e),
        }
    }
}

/// Answers the containers driver's requests.
async fn dispatch_containers(request: &Request, containers: Arc<ContainersDriver>) -> RpcResult {
    use flotilla_protocol::containers::{ContainerAction, ContainerCreate, ContainerQuery, TaskQuery};
    fn answer<T: serde::Serialize>(value: Result<T, crate::drivers::containers::ContainersError>) -> RpcResult {
        match value {
            Ok(v) => codec::encode_body(&v)
                .map(RpcResult::Ok)
                .unwrap_or_else(|e| RpcResult::Err(RpcError::Failed(e.to_string()))),
            Err(e) => RpcResult::Err(e.to_rpc()),
        }
    }
    fn body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, RpcResult> {
        codec::decode_from::<T>(&request.body).map_err(|e| RpcResult::Err(RpcError::BadRequest(e.to_string())))
    }
    let result = match request.kind {
        RequestKind::CONTAINER_CREATE => body::<ContainerCreate>(request).map(|req| answer(containers.create(req))),
        RequestKind::CONTAINER_ACTION => body::<ContainerAction>(request).map(|req| answer(containers.action(req))),
        RequestKind::CONTAINER_STATUS => match body::<ContainerQuery>(request) {
            Ok(q) => Ok(answer(containers.status(&q.name).await)),
            Err(e) => Err(e),
        },
        RequestKind::CONTAINER_LIST => Ok(answer(containers.list().await)),
        RequestKind::SNAPSHOT_LIST => body::<ContainerQuery>(request).map(|q| answer(containers.snapshots(&q.name))),
        RequestKind::TASK_STATUS => body::<TaskQuery>(request).map(|q| answer(containers.task(&q.upid))),
        RequestKind::CONSOLE_ACCESS => match body::<ContainerQuery>(request) {
            Ok(q) => Ok(answer(containers.console_access(&q.name).await)),
            Err(e) => Err(e),
        },
        other => Ok(RpcResult::Err(RpcError::Unsupported(other.0))),
    };
    result.unwrap_or_else(|e| e)
}

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub metrics_interval: Duration,
    /// Replaces the controller addresses stored at enrollment.
    pub controller_override: Option<String>,
    /// The proxy core driver, started by the caller (None: no core on this host).
    pub core: Option<Arc<dyn ProxyCore>>,
    /// The WireGuard driver, started by the caller (None: WireGuard off on this host).
    pub wireguard: Option<Arc<WireGuardDriver>>,
}

/// Keeps the link up until `shutdown` flips. Needs an enrolled identity in `state`.
pub async fn run(state: StateStore, settings: RunSettings, shutdown: watch::Receiver<bool>) -> Result<(), LinkError> {
    run_with_upgrade(state, settings, None, shutdown).await
}

/// [`run`], answering the controller's upgrades with `upgrade` (the agent binary; simulations
/// have none).
pub async fn run_with_upgrade(
    state: StateStore,
    settings: RunSettings,
    upgrade: Option<Arc<SelfUpgrade>>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), LinkError> {
    run_with_drivers(state, settings, LinkDrivers { upgrade, ..LinkDrivers::default() }, shutdown).await
}

/// Drivers a link serves besides [`RunSettings`]' (a separate struct, so code that spells out
/// a `RunSettings` keeps compiling as drivers are added).
#[derive(Clone, Default)]
pub struct LinkDrivers {
    /// Self-upgrade (the agent binary; simulations have none).
    pub upgrade: Option<Arc<SelfUpgrade>>,
    /// The containers driver, started by the caller (None: containers off on this host).
    pub containers: Option<Arc<ContainersDriver>>,
    /// The files driver (None: no `[files] roots`).
    pub files: Option<Arc<crate::drivers::files::FilesDriver>>,
    /// The bandwidth counters, started by the caller.
    pub bandwidth: Option<Arc<crate::drivers::bandwidth::BandwidthDriver>>,
    /// The services driver, started by the caller (None: no systemd here, or off).
    pub services: Option<Arc<crate::drivers::services::ServicesDriver>>,
}

/// [`run`] with every optional driver.
pub async fn run_with_drivers(
    state: StateStore,
    settings: RunSettings,
    drivers: LinkDrivers,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let sampler = Arc::new(Mutex::new(MetricsSampler::new()));
    let ctx = ServeContext {
        state: Some(state.clone()),
        sampler: Some(sampler),
        metrics_interval: settings.metrics_interval,
        core: settings.core.clone(),
        wireguard: settings.wireguard.clone(),
        upgrade: drivers.upgrade,
        containers: drivers.containers,
        files: drivers.files,
        bandwidth: drivers.bandwidth,
        services: drivers.services,
    };
    let mut backoff = Backoff::for_link();
    let record = |s: LinkState, c: Option<&str>, d: Option<&str>| {
        if let Err(e) = state.set_link_status(s, c, d) {
            tracing::warn!(error = %e, "cannot record link status");
        }
    };
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Re-read every attempt: a renewal may have replaced the certificate.
        let identity = match state.identity() {
            Ok(Some(i)) => i,
            Ok(None) => return Err(LinkError::Config("not enrolled".into())),
            Err(e) => return Err(LinkError::Config(e.to_string())),
        };
        let addrs = match &settings.controller_override {
            Some(a) => vec![a.clone()],
            None => identity.controller.clone(),
        };
        let mut slow = false;
        for addr in &addrs {
            record(LinkState::Connecting, Some(addr), None);
            let (e, welcomed) = match attempt(addr, &identity, &ctx, &mut backoff, &mut shutdown, &record).await {
                Ok(end) => (end, true),
                Err(e) => (e, false),
            };
            match &e {
                LinkError::Revoked(_) => {
                    tracing::error!(controller = %addr, error = %e, "stopping: re-enroll this host with a new token (flotilla-agent enroll --force TOKEN), then start the agent");
                    record(e.state(), None, Some(&e.to_string()));
                    return Err(e);
                }
                LinkError::Refused(_) => {
                    tracing::error!(controller = %addr, error = %e, "controller refuses this node; re-enroll with a new token")
                }
                LinkError::Replaced => {
                    tracing::error!(controller = %addr, "{e}; retrying in {}s", SLOW_RETRY.as_secs())
                }
                _ if welcomed => tracing::warn!(controller = %addr, reason = %e, "link lost; reconnecting"),
                _ => tracing::info!(controller = %addr, error = %e, "controller unreachable"),
            }
            record(e.state(), None, Some(&e.to_string()));
            slow |= matches!(e, LinkError::Refused(_) | LinkError::Replaced);
            if welcomed || slow {
                break;
            }
        }
        let delay = if slow { SLOW_RETRY } else { backoff.next_delay(rand::random::<f64>()) };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }
    record(LinkState::Stopped, None, Some("agent stopped"));
    Ok(())
}

/// One connection attempt. `Ok(reason)` if a session was welcomed (and later ended).
async fn attempt(
    addr: &str,
    identity: &Identity,
    ctx: &ServeContext,
    backoff: &mut Backoff,
    shutdown: &mut watch::Receiver<bool>,
    record: &impl Fn(LinkState, Option<&str>, Option<&str>),
) -> Result<LinkError, LinkError> {
    let target = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| LinkError::Resolve(addr.into(), e.to_string()))?
        .next()
        .ok_or_else(|| LinkError::Resolve(addr.into(), "no address".into()))?;
    let endpoint = tls::client_endpoint(target).map_err(|e| LinkError::Connect(target, e.to_string()))?;
    let facts = crate::facts::gather();
    let established = connect(&endpoint, identity, target, facts, ctx).await?;
    backoff.reset();
    tracing::info!(controller = %addr, node = %established.welcome.node_name, "connected to controller");
    record(LinkState::Connected, Some(addr), None);
    let end = established.serve(ctx, shutdown).await;
    endpoint.close(0u32.into(), b"");
    Ok(end)
}
