//! The core driver: owns the node's proxy state, keeps the core's users equal to it (live, one
//! user at a time), rewrites the config file so a core restart keeps everything, polls traffic
//! into the journal and enforces expiry and quotas locally.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Mutex as SyncMutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_protocol::proxy::{
    ApplyReport, ClientSpec, CoreFlavor, CoreState, CoreStatus, CutOff, InboundSpec, LogLine, LogQuery, OnlineSource,
    ProxyState,
};
use flotilla_protocol::users::{
    ClientLifecycle, DesiredUsers, DnsStat, DnsStatsQuery, LocalChange, SourceStat, StatsReset, UserChange, UserEvent,
    UserStat, UserStats,
};
use serde::Deserialize;
use tokio::sync::{watch, Mutex};

use super::access_log::{self, AccessTracker, Tail};
use super::api::{CoreApi, CoreApiError};
use super::config::{self, CoreConfigInput};
use super::process::{self, CoreProcess};
use super::reconcile::{self, UserKey};
use super::session::{SessionCounters, Source};
use super::users::{self as user_changes, Lifecycles, UserChangeError};
use super::ProxyCore;
use super::{limits, singbox, stats};
use crate::clock::Clock;
use crate::state::{LocalUsers, Poll, StateError, StateStore, StoredBatch};

/// How the agent runs the proxy core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CoreMode {
    /// Supervise the first of `xray`, `v2ray`, `sing-box` found on `PATH`; no core if none is
    /// installed.
    #[default]
    Auto,
    /// Supervise `binary` (or the first core on `PATH`); fail if there is none.
    Supervised,
    /// The core is managed elsewhere: use its API at `api`, write `config_path` if given, and
    /// restart it with `restart_command`.
    External,
    /// Never touch a proxy core.
    Off,
}

/// `[core]` of `agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoreSettings {
    pub mode: CoreMode,
    /// `xray`, `v2ray` or `sing-box` (default: from the binary's name).
    pub flavor: Option<String>,
    /// Core binary (supervised mode).
    pub binary: Option<PathBuf>,
    /// The core's gRPC API address (sing-box: its clash API) (default: a free loopback port,
    /// picked once and kept).
    pub api: Option<SocketAddr>,
    /// Config file the agent owns (default: `<data dir>/core/config.json`).
    pub config_path: Option<PathBuf>,
    /// Command restarting an external core (run with `sh -c`).
    pub restart_command: Option<String>,
    /// How often traffic counters are read into the journal.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
    /// Distinct source addresses of a user are counted over this window (`lim_ip`).
    #[serde(with = "humantime_serde")]
    pub ip_limit_window: Duration,
    /// A user over its `lim_ip` is off the core this long.
    #[serde(with = "humantime_serde")]
    pub ip_limit_cooldown: Duration,
    /// Clock of expiry and renewal decisions (not a config key: tests skew it).
    #[serde(skip)]
    pub clock: Clock,
}

impl Default for CoreSettings {
    fn default() -> Self {
        CoreSettings {
            mode: CoreMode::Auto,
            flavor: None,
            binary: None,
            api: None,
            config_path: None,
            restart_command: None,
            stats_interval: Duration::from_secs(10),
            ip_limit_window: Duration::from_secs(60),
            ip_limit_cooldown: Duration::from_secs(300),
            clock: Clock::system(),
        }
    }
}

/// Why the core driver cannot start or act.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("no proxy core found on PATH (looked for xray, v2ray, sing-box); install one or set [core] binary")]
    NoCore,
    #[error("unknown core flavor {0:?} (xray, v2ray, sing-box)")]
    UnknownFlavor(String),
    #[error("external core mode needs [core] api")]
    NoApi,
    #[error(transparent)]
    State(#[from] StateError),
    #[error("core config {0}: {1}")]
    Config(String, String),
    #[error("core API port: {0}")]
    Port(std::io::Error),
}

const API_PORT_SETTING: &str = "core_api_port";
/// The supervised core's access log, in its config's directory.
const ACCESS_LOG: &str = "access.log";
/// The access log is truncated once read past this size.
const ACCESS_LOG_ROTATE: u64 = 64 * 1024 * 1024;
/// How long an apply that restarted the core waits for its API to answer.
const API_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Interval of the housekeeping tick: restart detection, expiry.
const TICK: Duration = Duration::from_secs(1);

struct Inner {
    desired: ProxyState,
    /// Lifecycle settings of the desired clients, by lower-cased email.
    lifecycle: Lifecycles,
    /// `sess_*` and `rate` of users and sources.
    session: SessionCounters,
    /// Inbounds in the running config.
    served: Vec<InboundSpec>,
    /// Users on the running core.
    on_core: BTreeMap<UserKey, ClientSpec>,
    cut_off: BTreeMap<String, CutOff>,
    /// Process generation the users were last applied to.
    generation: u64,
    last_uptime: Option<u32>,
    /// Emails with traffic in each of the last two polls.
    recent: VecDeque<HashSet<String>>,
    last_error: Option<String>,
    /// Users over their IP limit, off the core until (unix ms).
    ip_blocked: BTreeMap<String, i64>,
    /// Source addresses and destinations from the access log.
    access: AccessTracker,
    /// sing-box: connections seen by the last poll, and when the config was last reloaded.
    tracker: singbox::ConnectionTracker,
    last_reload: Option<Instant>,
}

/// The running driver; shared by the link (requests, events) and its own poll loop.
pub struct CoreDriver {
    store: StateStore,
    flavor: CoreFlavor,
    api: CoreApi,
    /// sing-box's clash API (its only control surface besides config + SIGHUP).
    clash: Option<singbox::ClashApi>,
    per_user_stats: bool,
    api_port: u16,
    binary: Option<PathBuf>,
    process: Option<CoreProcess>,
    restart_command: Option<String>,
    config_path: Option<PathBuf>,
    version: String,
    stats_interval: Duration,
    clock: Clock,
    /// The core's access log, when the agent configures one (supervised Xray/v2ray).
    access_log: Option<std::sync::Arc<SyncMutex<Tail>>>,
    ip_limit_window: Duration,
    ip_limit_cooldown: Duration,
    user_events: tokio::sync::broadcast::Sender<UserEvent>,
    /// The agent's data dir (the supervised core's pid file lives there).
    data_dir: PathBuf,
    inner: Mutex<Inner>,
    status_tx: watch::Sender<CoreStatus>,
    /// Latest journal sequence written; the link ships rows when it moves.
    journal_tx: watch::Sender<u64>,
    /// Latest outbox id written; the link ships local user changes when it moves.
    outbox_tx: watch::Sender<u64>,
    stopped: SyncMutex<bool>,
}

impl std::fmt::Debug for CoreDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreDriver").field("flavor", &self.flavor).field("api_port", &self.api_port).finish()
    }
}

/// System time, for journal timestamps (decisions use the driver's [`Clock`]).
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn parse_flavor(name: &str) -> Result<CoreFlavor, DriverError> {
    match name.to_ascii_lowercase().as_str() {
        "xray" => Ok(CoreFlavor::Xray),
        "v2ray" => Ok(CoreFlavor::V2ray),
        "sing-box" | "singbox" => Ok(CoreFlavor::SingBox),
        other => Err(DriverError::UnknownFlavor(other.into())),
    }
}

/// A loopback port for the core's API: configured, remembered, or picked now and remembered.
fn api_port(store: &StateStore, configured: Option<SocketAddr>) -> Result<u16, DriverError> {
    if let Some(addr) = configured {
        return Ok(addr.port());
    }
    if let Some(port) = store.setting(API_PORT_SETTING)?.and_then(|p| p.parse::<u16>().ok()) {
        return Ok(port);
    }
    let probe = std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).map_err(DriverError::Port)?;
    let port = probe.local_addr().map_err(DriverError::Port)?.port();
    store.set_setting(API_PORT_SETTING, &port.to_string())?;
    Ok(port)
}

impl CoreDriver {
    /// Starts the driver per `settings`: `Ok(None)` when there is no core to drive (mode off, or
    /// auto with nothing installed).
    pub async fn start(
        settings: &CoreSettings,
        store: StateStore,
        data_dir: &Path,
    ) -> Result<Option<std::sync::Arc<CoreDriver>>, DriverError> {
        let (flavor, binary) = match settings.mode {
            CoreMode::Off => return Ok(None),
            CoreMode::External => {
                let flavor = parse_flavor(settings.flavor.as_deref().unwrap_or("xray"))?;
                settings.api.ok_or(DriverError::NoApi)?;
                (flavor, None)
            }
            CoreMode::Auto | CoreMode::Supervised => {
                let found = match &settings.binary {
                    Some(b) => {
                        let flavor = match &settings.flavor {
                            Some(f) => parse_flavor(f)?,
                            None => b
                                .file_name()
                                .and_then(|n| n.to_str())
                                .and_then(process::flavor_of)
                                .ok_or_else(|| DriverError::UnknownFlavor(b.display().to_string()))?,
                        };
                        Some((flavor, b.clone()))
                    }
                    None => process::find_on_path(&["xray", "v2ray", "sing-box"]),
                };
                match found {
                    Some((flavor, binary)) => (flavor, Some(binary)),
                    None if settings.mode == CoreMode::Auto => {
                        tracing::info!("no proxy core on PATH (xray, v2ray, sing-box); proxy features disabled");
                        return Ok(None);
                    }
                    None => return Err(DriverError::NoCore),
                }
            }
        };
        let port = api_port(&store, settings.api)?;
        let api_addr = settings.api.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        let config_path = match (&binary, &settings.config_path) {
            (_, Some(p)) => Some(p.clone()),
            (Some(_), None) => Some(data_dir.join("core").join("config.json")),
            (None, None) => None,
        };
        let version = match &binary {
            Some(b) => process::detect_version(flavor, b).await.unwrap_or_default(),
            None => String::new(),
        };
        // sing-box release builds lack the v2ray stats API: say so rather than invent numbers.
        let per_user_stats = match (flavor, &binary) {
            (CoreFlavor::SingBox, Some(b)) => {
                if singbox::has_v2ray_api(b, data_dir).await {
                    tracing::info!("this sing-box has the v2ray stats API; per-user stats from it are not wired yet");
                }
                false
            }
            (CoreFlavor::SingBox, None) => false,
            _ => true,
        };
        let desired = store.proxy_state()?.unwrap_or(ProxyState { revision: 0, inbounds: vec![], clients: vec![] });
        let initial = CoreStatus {
            flavor: Some(flavor),
            state: CoreState::Starting,
            version: version.clone(),
            uptime_secs: 0,
            per_user_stats,
            applied_revision: desired.revision,
            online: vec![],
            online_source: if flavor == CoreFlavor::Xray { OnlineSource::CoreApi } else { OnlineSource::RecentTraffic },
            cut_off: vec![],
            last_error: None,
        };
        let (status_tx, _) = watch::channel(initial);
        let (journal_tx, _) = watch::channel(0);
        let (outbox_tx, _) = watch::channel(0);
        let lifecycle = store.lifecycle()?;
        let mut driver = CoreDriver {
            store,
            flavor,
            api: CoreApi::new(api_addr, flavor),
            clash: (flavor == CoreFlavor::SingBox).then(|| singbox::ClashApi::new(api_addr)),
            per_user_stats,
            api_port: api_addr.port(),
            binary: binary.clone(),
            process: None,
            restart_command: settings.restart_command.clone(),
            config_path,
            version,
            stats_interval: settings.stats_interval.max(Duration::from_millis(200)),
            clock: settings.clock.clone(),
            access_log: match (&binary, flavor) {
                (Some(_), CoreFlavor::Xray | CoreFlavor::V2ray) => {
                    let path = data_dir.join("core").join(ACCESS_LOG);
                    Some(std::sync::Arc::new(SyncMutex::new(Tail::from_end(&path, ACCESS_LOG_ROTATE))))
                }
                _ => None,
            },
            ip_limit_window: settings.ip_limit_window,
            ip_limit_cooldown: settings.ip_limit_cooldown,
            user_events: tokio::sync::broadcast::channel(64).0,
            data_dir: data_dir.to_path_buf(),
            inner: Mutex::new(Inner {
                desired,
                lifecycle,
                session: SessionCounters::default(),
                served: vec![],
                on_core: BTreeMap::new(),
                cut_off: BTreeMap::new(),
                generation: 0,
                last_uptime: None,
                recent: VecDeque::new(),
                last_error: None,
                ip_blocked: BTreeMap::new(),
                access: AccessTracker::default(),
                tracker: singbox::ConnectionTracker::default(),
                last_reload: None,
            }),
            status_tx,
            journal_tx,
            outbox_tx,
            stopped: SyncMutex::new(false),
        };
        {
            // Work out renewals and cut-offs before the first config is written, so an expired
            // client is not served even for a moment after a reboot.
            let now = driver.clock.now_ms();
            let inner = driver.inner.get_mut();
            let renewals = renewals(inner, now);
            if !renewals.is_empty() {
                let mut users = LocalUsers { state: inner.desired.clone(), lifecycle: inner.lifecycle.clone() };
                user_changes::replay(&mut users.state, &mut users.lifecycle, &renewals);
                driver.store.save_local_changes(&users, &renewals, now)?;
                (inner.desired, inner.lifecycle) = (users.state, users.lifecycle);
            }
            let usage = driver.store.usage()?;
            for c in &inner.desired.clients {
                let used = usage.get(&c.email.to_lowercase()).copied().unwrap_or_default();
                if let Some(why) = limits::cut_off(c, used, now) {
                    inner.cut_off.insert(c.email.to_lowercase(), why);
                }
            }
            inner.served = reconcile::served_inbounds(&inner.desired.inbounds);
            let cut: BTreeSet<String> = inner.cut_off.keys().cloned().collect();
            inner.on_core = reconcile::wanted_users(&inner.served, &inner.desired.clients, &cut);
        }
        if let Some(path) = &driver.config_path {
            if let Some(dir) = path.parent() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| DriverError::Config(dir.display().to_string(), e.to_string()))?;
            }
            let access_log = driver.access_log_path();
            let inner = driver.inner.get_mut();
            let text = render_config(flavor, driver.api_port, &inner.served, &inner.on_core, access_log)?;
            // (sing-box's clash API shares the picked API port.)
            config::write_atomic(path, &text)
                .map_err(|e| DriverError::Config(path.display().to_string(), e.to_string()))?;
        }
        if let (Some(binary), Some(path)) = (&binary, &driver.config_path) {
            kill_stale_core(data_dir, binary);
            let process = CoreProcess::spawn(flavor, binary.clone(), path.clone());
            remember_core_pid(data_dir, process.pid());
            driver.process = Some(process);
            driver.inner.get_mut().generation = driver.process.as_ref().map(|p| p.generation()).unwrap_or(0);
        }
        let driver = std::sync::Arc::new(driver);
        tracing::info!(
            core = flavor.as_str(),
            version = %driver.version,
            api = %api_addr,
            binary = ?binary,
            "proxy core driver started"
        );
        tokio::spawn(driver.clone().run(data_dir.to_path_buf()));
        Ok(Some(driver))
    }

    /// Stops the poll loop and the supervised core.
    pub async fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        if let Some(p) = &self.process {
            p.stop().await;
        }
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a pushed proxy state: replays local user changes the push does not contain yet,
    /// refuses what the core cannot serve, persists the rest, then converges the core (live user
    /// changes; a restart only when inbounds changed). Without `lifecycle` (an older controller)
    /// the clients keep theirs.
    async fn apply_desired(&self, mut state: ProxyState, lifecycle: Option<Vec<ClientLifecycle>>) -> ApplyReport {
        let mut inner = self.inner.lock().await;
        let mut report = ApplyReport { revision: inner.desired.revision, ..Default::default() };
        if state.revision < inner.desired.revision {
            tracing::debug!(pushed = state.revision, applied = inner.desired.revision, "stale proxy state ignored");
            return report;
        }
        let mut lifecycle: Lifecycles = match lifecycle {
            Some(list) => list.into_iter().map(|l| (l.email.to_lowercase(), l)).collect(),
            None => inner.lifecycle.clone(),
        };
        let pending = match self.store.replayable_changes(state.revision) {
            Ok(p) => p,
            Err(e) => return fail(report, "agent store", e),
        };
        user_changes::replay(&mut state, &mut lifecycle, pending.iter().map(|c| &c.change));
        let kept: HashSet<String> = state.clients.iter().map(|c| c.email.to_lowercase()).collect();
        lifecycle.retain(|email, _| kept.contains(email));
        // Refuse inbounds the core cannot run, or whose port another program holds, rather
        // than writing a config the core would fail to start with.
        let held: HashSet<u16> = inner.served.iter().map(|i| i.port).collect();
        let mut refused = HashSet::new();
        for inbound in state.inbounds.iter().filter(|i| i.enable) {
            let verdict = config::check_support(self.flavor, inbound).map_err(|e| e.to_string()).and_then(|_| {
                if held.contains(&inbound.port) {
                    Ok(())
                } else {
                    port_free(inbound)
                }
            });
            if let Err(why) = verdict {
                report.failures.push((format!("inbound {}", inbound.tag), why));
                refused.insert(inbound.tag.clone());
            }
        }
        state.inbounds.retain(|i| !refused.contains(&i.tag));
        state.clients.retain(|c| !refused.contains(&c.inbound_tag));
        // A client the core cannot take (a Vision flow on v2ray) is refused alone, so the
        // config of everyone else still renders.
        let by_tag: std::collections::HashMap<&str, &InboundSpec> =
            state.inbounds.iter().map(|i| (i.tag.as_str(), i)).collect();
        let mut bad_clients = HashSet::new();
        for c in &state.clients {
            if let Some(inbound) = by_tag.get(c.inbound_tag.as_str()) {
                if let Err(why) = config::check_client(self.flavor, inbound, c) {
                    report.failures.push((format!("client {}", c.email), why.to_string()));
                    bad_clients.insert(c.email.to_lowercase());
                }
            }
        }
        drop(by_tag);
        state.clients.retain(|c| !bad_clients.contains(&c.email.to_lowercase()));

        if let Err(e) = self.sync_usage_resets(&state) {
            return fail(report, "agent store", e);
        }
        let users = LocalUsers { state, lifecycle };
        if let Err(e) = self.store.save_users(&users) {
            return fail(report, "agent store", e);
        }
        (inner.desired, inner.lifecycle) = (users.state, users.lifecycle);
        let changes = self.converge(&mut inner).await;
        report.users_added = changes.added;
        report.users_removed = changes.removed;
        report.inbounds_changed = changes.inbounds_changed;
        report.core_restarted = changes.restarted;
        report.failures.extend(changes.failures);
        report.revision = inner.desired.revision;
        self.publish(&inner);
        report
    }

    /// Zeroes the local usage of clients whose reset generation moved past it.
    fn sync_usage_resets(&self, state: &ProxyState) -> Result<(), StateError> {
        let usage = self.store.usage()?;
        for c in &state.clients {
            let email = c.email.to_lowercase();
            if usage.get(&email).map(|u| u.reset_generation).unwrap_or(0) < c.reset_generation {
                self.store.reset_usage(&email, c.reset_generation)?;
            }
        }
        Ok(())
    }

    /// Applies user changes made on this host: each is checked against the desired state and
    /// the core's abilities; those that pass are committed together with the outbox entries the
    /// controller will receive, then the core converges (live, no restart for users).
    async fn change_users_now(&self, changes: Vec<UserChange>) -> Vec<Result<(), UserChangeError>> {
        let mut inner = self.inner.lock().await;
        let mut users = LocalUsers { state: inner.desired.clone(), lifecycle: inner.lifecycle.clone() };
        let mut accepted = Vec::new();
        let results: Vec<Result<(), UserChangeError>> = changes
            .into_iter()
            .map(|change| {
                if let UserChange::Add { client, .. } = &change {
                    let inbound = users.state.inbounds.iter().find(|i| i.tag == client.inbound_tag);
                    if let Some(inbound) = inbound {
                        config::check_client(self.flavor, inbound, client)
                            .map_err(|e| UserChangeError::Invalid("credential", e.to_string()))?;
                    }
                }
                user_changes::apply(&mut users.state, &mut users.lifecycle, &change)?;
                accepted.push(change);
                Ok(())
            })
            .collect();
        if accepted.is_empty() {
            return results;
        }
        let now = self.clock.now_ms();
        let committed =
            self.sync_usage_resets(&users.state).and_then(|()| self.store.save_local_changes(&users, &accepted, now));
        let last = match committed {
            Ok(id) => id,
            Err(e) => {
                let e = UserChangeError::Store(e.to_string());
                return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
            }
        };
        (inner.desired, inner.lifecycle) = (users.state, users.lifecycle);
        let changes = self.converge(&mut inner).await;
        for (what, why) in &changes.failures {
            tracing::warn!(%what, %why, "local user change not taken by the core yet; retried every second");
        }
        self.publish(&inner);
        self.outbox_tx.send_replace(last);
        results
    }

    /// Records auto-renewals that are due (subscription end passed, renew days set) as local
    /// changes, so the controller learns the new end like any other change made here.
    fn take_renewals(&self, inner: &mut Inner) {
        let now = self.clock.now_ms();
        let due = renewals(inner, now);
        if due.is_empty() {
            return;
        }
        let mut users = LocalUsers { state: inner.desired.clone(), lifecycle: inner.lifecycle.clone() };
        user_changes::replay(&mut users.state, &mut users.lifecycle, &due);
        match self.store.save_local_changes(&users, &due, now) {
            Ok(last) => {
                for change in &due {
                    tracing::info!(email = ?change.email(), "subscription renewed");
                }
                (inner.desired, inner.lifecycle) = (users.state, users.lifecycle);
                self.outbox_tx.send_replace(last);
            }
            Err(e) => tracing::warn!(error = %e, "cannot record subscription renewals"),
        }
    }

    /// The node's users and sources with totals, session counters and rates.
    async fn stats_now(&self) -> UserStats {
        let inner = self.inner.lock().await;
        let usage = self.store.usage().unwrap_or_default();
        let sources = self.store.source_usage().unwrap_or_default();
        let users = inner
            .desired
            .clients
            .iter()
            .map(|c| {
                let email = c.email.to_lowercase();
                let used = usage.get(&email).copied().unwrap_or_default();
                let key = Source::User(email.clone());
                let (sess_uplink, sess_downlink) = inner.session.session(&key);
                UserStat {
                    last_seen_ms: used.last_seen_ms,
                    rate_bps: inner.session.rate(&key),
                    uplink: used.up,
                    downlink: used.down,
                    sess_uplink,
                    sess_downlink,
                    enabled: c.enable && !inner.cut_off.contains_key(&email) && !inner.ip_blocked.contains_key(&email),
                    ips: inner.access.ips(&email),
                    ..UserStat::from_desired(c, inner.lifecycle.get(&email))
                }
            })
            .collect();
        let sources = sources
            .into_iter()
            .map(|u| {
                let key = match u.direction.as_str() {
                    "inbound" => Source::Inbound(u.tag.clone()),
                    _ => Source::Outbound(u.tag.clone()),
                };
                let (sess_uplink, sess_downlink) = inner.session.session(&key);
                SourceStat {
                    direction: u.direction,
                    tag: u.tag,
                    rate_bps: inner.session.rate(&key),
                    uplink: u.up,
                    downlink: u.down,
                    sess_uplink,
                    sess_downlink,
                }
            })
            .collect();
        let mut unavailable: Vec<String> = if self.per_user_stats {
            vec![]
        } else {
            ["rate", "uplink", "downlink", "sess_uplink", "sess_downlink", "last_seen"].map(String::from).to_vec()
        };
        if self.access_log.is_none() {
            unavailable.push("ips".into());
        }
        UserStats { sources, users, per_user_stats: self.per_user_stats, unavailable }
    }

    /// Makes the core match the desired state: recomputes cut-offs, rewrites the config, and
    /// either restarts the core (inbound set changed) or changes users one by one.
    async fn converge(&self, inner: &mut Inner) -> Changes {
        let mut changes = Changes::default();
        self.take_renewals(inner);
        let usage = self.store.usage().unwrap_or_default();
        let now = self.clock.now_ms();
        let mut cut = BTreeMap::new();
        for c in inner.desired.clients.iter().filter(|c| c.enable) {
            let used = usage.get(&c.email.to_lowercase()).copied().unwrap_or_default();
            if let Some(why) = limits::cut_off(c, used, now) {
                if !inner.cut_off.contains_key(&c.email.to_lowercase()) {
                    tracing::info!(email = %c.email, reason = ?why, "client cut off");
                }
                cut.insert(c.email.to_lowercase(), why);
            }
        }
        inner.cut_off = cut;
        let served = reconcile::served_inbounds(&inner.desired.inbounds);
        let cut_keys: BTreeSet<String> = inner.cut_off.keys().chain(inner.ip_blocked.keys()).cloned().collect();
        let want = reconcile::wanted_users(&served, &inner.desired.clients, &cut_keys);
        let inbounds_changed = served != inner.served;
        let diff = reconcile::diff_users(&inner.on_core, &want);
        if !inbounds_changed && diff.is_empty() {
            return changes;
        }
        {
            // Only a new inbound set can make the core refuse its config; user lists cannot
            // (sing-box: always check, a refused reload would keep the old instance silently).
            if let Err(e) = self.write_config(&served, &want, inbounds_changed || self.clash.is_some()).await {
                changes.failures.push(("core config".into(), e));
                return changes;
            }
        }
        if self.clash.is_some() {
            // sing-box has no live user API: the rewritten config takes effect on a reload.
            changes.inbounds_changed =
                if inbounds_changed { served.len().abs_diff(inner.served.len()).max(1) as u32 } else { 0 };
            changes.added = diff.add.len() as u32;
            changes.removed = diff.remove.len() as u32;
            inner.served = served;
            inner.on_core = want;
            changes.restarted = true;
            if let Err(e) = self.reload(inner).await {
                changes.failures.push(("core reload".into(), e));
            }
            return changes;
        }
        if inbounds_changed {
            changes.inbounds_changed = served.len().abs_diff(inner.served.len()).max(1) as u32;
            changes.added = diff.add.len() as u32;
            changes.removed = diff.remove.len() as u32;
            inner.served = served;
            inner.on_core = want;
            changes.restarted = true;
            if let Err(e) = self.restart_core(inner).await {
                changes.failures.push(("core restart".into(), e));
            }
            return changes;
        }
        for k in diff.remove {
            match self.api.remove_user(&k.0, &k.1).await {
                Ok(()) | Err(CoreApiError::NotFound(_)) => {
                    inner.on_core.remove(&k);
                    changes.removed += 1;
                }
                Err(e) => changes.failures.push((format!("remove {} from {}", k.1, k.0), e.to_string())),
            }
        }
        for c in diff.add {
            let Some(inbound) = inner.served.iter().find(|i| i.tag == c.inbound_tag) else { continue };
            match self.api.add_user(&inbound.tag, &inbound.protocol, &c, None).await {
                Ok(()) | Err(CoreApiError::AlreadyExists(_)) => {
                    inner.on_core.insert(reconcile::key(&c), c);
                    changes.added += 1;
                }
                Err(e) => changes.failures.push((format!("add {} to {}", c.email, c.inbound_tag), e.to_string())),
            }
        }
        changes
    }

    async fn write_config(
        &self,
        served: &[InboundSpec],
        users: &BTreeMap<UserKey, ClientSpec>,
        check: bool,
    ) -> Result<(), String> {
        let Some(path) = self.config_path.clone() else { return Ok(()) };
        let text = render_config(self.flavor, self.api_port, served, users, self.access_log_path())
            .map_err(|e| e.to_string())?;
        let check = if let (Some(binary), true) = (&self.binary, check) {
            // Test the new file before it replaces the one the core runs on.
            let candidate = path.with_extension("candidate.json");
            let write = candidate.clone();
            let bytes = text.clone();
            tokio::task::spawn_blocking(move || config::write_atomic(&write, &bytes))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let verdict = process::check_config(self.flavor, binary, &candidate).await;
            let _ = std::fs::remove_file(&candidate);
            verdict
        } else {
            Ok(())
        };
        check.map_err(|e| format!("{} refused the config: {e}", self.flavor.as_str()))?;
        tokio::task::spawn_blocking(move || config::write_atomic(&path, &text))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Restarts the core and waits for its API; the caller has written the config.
    async fn restart_core(&self, inner: &mut Inner) -> Result<(), String> {
        // Read what the old process counted so far: its counters die with it.
        if let Err(e) = self.poll(inner).await {
            tracing::debug!(error = %e, "final poll before restart failed");
        }
        match (&self.process, &self.restart_command) {
            (Some(p), _) => p.restart().await,
            (None, Some(cmd)) => {
                let status = tokio::process::Command::new("sh").arg("-c").arg(cmd).status().await;
                match status {
                    Ok(s) if s.success() => {}
                    Ok(s) => return Err(format!("restart command {cmd:?} exited with {s}")),
                    Err(e) => return Err(format!("restart command {cmd:?}: {e}")),
                }
            }
            (None, None) => return Err("external core without restart_command: restart it yourself".into()),
        }
        let _ = self.store.clear_baselines();
        inner.session.reset();
        inner.last_uptime = None;
        if let Some(p) = &self.process {
            inner.generation = p.generation();
            // A new process: an agent killed from now on must find this one, not the old.
            remember_core_pid(&self.data_dir, p.pid());
        }
        inner.last_uptime = Some(self.wait_api().await?);
        inner.tracker.reset();
        // An external core may have come back from another config: re-add everyone.
        if self.process.is_none() && self.clash.is_none() {
            self.readd_users(inner).await;
        }
        Ok(())
    }

    /// The core's uptime in seconds, asking its API (which proves it answers).
    async fn uptime(&self) -> Result<u32, String> {
        match &self.clash {
            Some(clash) => {
                clash.version().await.map_err(|e| e.to_string())?;
                let started = self.process.as_ref().and_then(|p| p.started_at());
                Ok(started.map(|s| s.elapsed().as_secs() as u32).unwrap_or(0))
            }
            None => self.api.sys_uptime().await.map_err(|e| e.to_string()),
        }
    }

    /// sing-box: makes the rewritten config live with SIGHUP (or the external restart command),
    /// at most once per [`singbox::RELOAD_DEBOUNCE`]: a reload drops every connection, and
    /// changes made meanwhile are batched into the next push of the whole state.
    async fn reload(&self, inner: &mut Inner) -> Result<(), String> {
        if let Some(last) = inner.last_reload {
            tokio::time::sleep(singbox::RELOAD_DEBOUNCE.saturating_sub(last.elapsed())).await;
        }
        // Count what the connections moved so far: the reload drops them.
        if let Err(e) = self.poll(inner).await {
            tracing::debug!(error = %e, "poll before reload failed");
        }
        let pid = self.process.as_ref().and_then(|p| p.pid());
        match (pid, &self.restart_command) {
            (Some(pid), _) => {
                let status = tokio::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().await;
                if !status.is_ok_and(|s| s.success()) {
                    return Err(format!("cannot signal sing-box (pid {pid}) to reload"));
                }
            }
            (None, Some(cmd)) => {
                let status = tokio::process::Command::new("sh").arg("-c").arg(cmd).status().await;
                if !status.is_ok_and(|s| s.success()) {
                    return Err(format!("reload command {cmd:?} failed"));
                }
            }
            (None, None) => return Err("sing-box is not running and no restart_command is set".into()),
        }
        inner.last_reload = Some(Instant::now());
        inner.tracker.reset();
        inner.session.reset();
        // The old instance answers until it is closed; give the reload a moment to begin.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.wait_api().await.map(drop)
    }

    /// Waits for the core's API to answer; returns the core's uptime.
    async fn wait_api(&self) -> Result<u32, String> {
        let deadline = Instant::now() + API_READY_TIMEOUT;
        loop {
            match self.uptime().await {
                Ok(uptime) => return Ok(uptime),
                Err(e) if Instant::now() > deadline => return Err(format!("core API not answering: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn readd_users(&self, inner: &mut Inner) {
        for c in inner.on_core.values() {
            let Some(inbound) = inner.served.iter().find(|i| i.tag == c.inbound_tag) else { continue };
            match self.api.add_user(&inbound.tag, &inbound.protocol, c, None).await {
                Ok(()) | Err(CoreApiError::AlreadyExists(_)) => {}
                Err(e) => tracing::warn!(email = %c.email, error = %e, "cannot re-add user after core restart"),
            }
        }
    }

    /// Restarts the core on request (API `restart-xray`).
    async fn restart_now(&self) -> CoreStatus {
        let mut inner = self.inner.lock().await;
        if let Err(e) = self.restart_core(&mut inner).await {
            inner.last_error = Some(e);
        }
        self.publish(&inner);
        self.status_tx.borrow().clone()
    }

    fn publish(&self, inner: &Inner) {
        let running = match &self.process {
            Some(p) => p.is_running(),
            None => inner.last_uptime.is_some(),
        };
        let uptime_secs = match &self.process {
            Some(p) => p.started_at().map(|s| s.elapsed().as_secs()).unwrap_or(0),
            None => inner.last_uptime.unwrap_or(0) as u64,
        };
        let state = match (&self.process, running, inner.last_uptime.is_some()) {
            (_, true, true) => CoreState::Running,
            (Some(_), true, false) => CoreState::Starting,
            (Some(_), false, _) if self.is_stopped() => CoreState::Stopped,
            (Some(_), false, _) => CoreState::Restarting,
            (None, _, _) => CoreState::Unreachable,
        };
        let mut online: Vec<String> =
            inner.recent.iter().flatten().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        online.sort();
        let last_error = inner.last_error.clone().or_else(|| self.process.as_ref().and_then(|p| p.last_error()));
        let status = CoreStatus {
            flavor: Some(self.flavor),
            state,
            version: self.version.clone(),
            uptime_secs,
            per_user_stats: self.per_user_stats,
            applied_revision: inner.desired.revision,
            online,
            online_source: if self.flavor == CoreFlavor::Xray {
                OnlineSource::CoreApi
            } else {
                OnlineSource::RecentTraffic
            },
            cut_off: inner.cut_off.iter().map(|(e, w)| (e.clone(), *w)).collect(),
            last_error,
        };
        // Uptime moves every second; only a change in anything else is news for the link.
        self.status_tx.send_if_modified(|old| {
            let changed = CoreStatus { uptime_secs: old.uptime_secs, ..status.clone() } != *old;
            *old = status;
            changed
        });
    }

    /// The housekeeping loop: poll stats, notice core restarts, expire clients.
    async fn run(self: std::sync::Arc<Self>, data_dir: PathBuf) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_poll = Instant::now() + self.stats_interval;
        loop {
            tick.tick().await;
            if self.is_stopped() {
                return;
            }
            let mut inner = self.inner.lock().await;
            if let Some(p) = &self.process {
                if p.generation() != inner.generation {
                    // The core died and the supervisor restarted it from our config: its counters
                    // start from zero, and users added live since the last config write are in the
                    // file too (every change rewrites it).
                    tracing::warn!(error = ?p.last_error(), "proxy core restarted by the supervisor");
                    inner.generation = p.generation();
                    inner.last_uptime = None;
                    inner.tracker.reset();
                    inner.session.reset();
                    let _ = self.store.clear_baselines();
                    remember_core_pid(&data_dir, p.pid());
                }
            }
            // Running as soon as its API answers, not only after the first stats poll.
            if inner.last_uptime.is_none() {
                if let Ok(uptime) = self.uptime().await {
                    inner.last_uptime = Some(uptime);
                }
            }
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + self.stats_interval;
                match self.poll(&mut inner).await {
                    Ok(()) => inner.last_error = None,
                    Err(e) => {
                        tracing::debug!(error = %e, "stats poll failed");
                        inner.last_uptime = None;
                    }
                }
            }
            self.scan_access_log(&mut inner).await;
            let _ = self.converge(&mut inner).await;
            self.publish(&inner);
        }
    }

    fn access_log_path(&self) -> Option<String> {
        self.access_log.as_ref()?;
        let dir = self.config_path.as_ref()?.parent()?;
        Some(dir.join(ACCESS_LOG).display().to_string())
    }

    /// Reads new access log lines: source addresses per user (the IP limit), destination counts
    /// (stored). A user past its `lim_ip` is taken off the core for the cool-down, and the
    /// controller is told.
    async fn scan_access_log(&self, inner: &mut Inner) {
        let now = self.clock.now_ms();
        let over: Vec<String> =
            inner.ip_blocked.iter().filter(|(_, until)| **until <= now).map(|(e, _)| e.clone()).collect();
        for email in over {
            // The cool-down starts the count afresh (the addresses stayed visible during it).
            tracing::info!(%email, "IP limit cool-down over; user back on the core");
            inner.ip_blocked.remove(&email);
            inner.access.forget(&email);
        }
        let Some(tail) = self.access_log.clone() else { return };
        let read = tokio::task::spawn_blocking(move || tail.lock().unwrap_or_else(|p| p.into_inner()).read_new()).await;
        let lines = match read {
            Ok(Ok(lines)) => lines,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot read the core's access log");
                return;
            }
            Err(_) => return,
        };
        for line in &lines {
            if let Some(access) = access_log::parse_line(line) {
                inner.access.record(access, now);
            }
        }
        inner.access.expire(now, self.ip_limit_window.as_millis() as i64);
        let destinations = inner.access.take_destinations();
        if !destinations.is_empty() {
            let store = self.store.clone();
            let written = tokio::task::spawn_blocking(move || store.add_destinations(&destinations)).await;
            if let Ok(Err(e)) = written {
                tracing::warn!(error = %e, "cannot store destination statistics");
            }
        }
        // Lifecycles exist only for desired clients, keyed by lower-cased email as the tracker is.
        let over = inner.access.over_limit(|email| {
            (!inner.ip_blocked.contains_key(email)).then(|| inner.lifecycle.get(email).map(|l| l.limit_ip)).flatten()
        });
        for (email, limit, ips) in over {
            let until_ms = now + self.ip_limit_cooldown.as_millis() as i64;
            tracing::warn!(%email, limit, ?ips, "IP limit exceeded; user off the core for the cool-down");
            inner.ip_blocked.insert(email.clone(), until_ms);
            let _ = self.user_events.send(UserEvent::IpLimitExceeded { email, limit, ips, until_ms });
        }
    }

    /// One stats poll, committed to the journal. The caller holds `inner`, which serialises
    /// polls with restarts so a poll never straddles a counter reset.
    async fn poll(&self, inner: &mut Inner) -> Result<(), String> {
        if let Some(clash) = &self.clash {
            let snapshot = clash.connections().await.map_err(|e| e.to_string())?;
            inner.last_uptime = Some(self.uptime().await.unwrap_or(0));
            let sole = match inner.served.as_slice() {
                [only] => Some(only.tag.clone()),
                _ => None,
            };
            let inbounds = inner.tracker.observe(&snapshot, sole.as_deref());
            inner.session.observe(
                Instant::now(),
                inbounds.iter().map(|t| (Source::Inbound(t.tag.clone()), t.up, t.down)).collect::<Vec<_>>(),
            );
            let poll = Poll { taken_at_ms: now_ms() as u64, inbounds, ..Default::default() };
            return self.commit_poll(poll).await;
        }
        let uptime = self.api.sys_uptime().await.map_err(|e| e.to_string())?;
        if inner.last_uptime.is_some_and(|last| uptime < last) {
            // An external core restarted behind our back: counters reset, users lost on v2ray.
            tracing::warn!("proxy core restarted (uptime went back); re-adding users");
            let _ = self.store.clear_baselines();
            inner.session.reset();
            if self.process.is_none() {
                self.readd_users(inner).await;
            }
        }
        inner.last_uptime = Some(uptime);
        let reading = self.api.query_stats("", false).await.map_err(|e| e.to_string())?;
        let baselines = self.store.baselines().map_err(|e| e.to_string())?;
        let mut d = stats::deltas(&reading, &baselines);
        // The agent's own API calls are plumbing, not traffic anyone should see or pay for.
        d.inbounds.retain(|t| t.tag != config::API_TAG);
        d.outbounds.retain(|t| t.tag != config::API_TAG);
        let moved: HashSet<String> = d.users.iter().map(|u| u.email.to_lowercase()).collect();
        let counted = d
            .users
            .iter()
            .map(|t| (Source::User(t.email.to_lowercase()), t.up, t.down))
            .chain(d.inbounds.iter().map(|t| (Source::Inbound(t.tag.clone()), t.up, t.down)))
            .chain(d.outbounds.iter().map(|t| (Source::Outbound(t.tag.clone()), t.up, t.down)))
            .collect::<Vec<_>>();
        inner.session.observe(Instant::now(), counted);
        let poll = Poll {
            taken_at_ms: now_ms() as u64,
            baselines: d.baselines,
            users: d.users,
            inbounds: d.inbounds,
            outbounds: d.outbounds,
        };
        self.commit_poll(poll).await?;
        inner.recent.push_back(moved);
        while inner.recent.len() > 2 {
            inner.recent.pop_front();
        }
        if self.flavor == CoreFlavor::Xray {
            if let Ok(Some(online)) = self.api.online_users().await {
                inner.recent.clear();
                inner.recent.push_back(online.into_iter().map(|e| e.to_lowercase()).collect());
            }
        }
        Ok(())
    }

    /// Commits a poll to the journal and wakes the link.
    async fn commit_poll(&self, poll: Poll) -> Result<(), String> {
        let store = self.store.clone();
        let seq = tokio::task::spawn_blocking(move || store.record_poll(&poll))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if let Some(seq) = seq {
            self.journal_tx.send_replace(seq);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ProxyCore for CoreDriver {
    fn applied_revision(&self) -> u64 {
        self.status_tx.borrow().applied_revision
    }

    fn status(&self) -> watch::Receiver<CoreStatus> {
        self.status_tx.subscribe()
    }

    fn journal(&self) -> watch::Receiver<u64> {
        self.journal_tx.subscribe()
    }

    async fn current_status(&self) -> CoreStatus {
        let inner = self.inner.lock().await;
        self.publish(&inner);
        self.status_tx.borrow().clone()
    }

    async fn apply(&self, state: ProxyState) -> ApplyReport {
        self.apply_desired(state, None).await
    }

    async fn apply_users(&self, desired: DesiredUsers) -> ApplyReport {
        self.apply_desired(desired.state, Some(desired.lifecycle)).await
    }

    async fn user_stats(&self) -> UserStats {
        self.stats_now().await
    }

    async fn change_users(&self, changes: Vec<UserChange>) -> Vec<Result<(), UserChangeError>> {
        self.change_users_now(changes).await
    }

    async fn reset_stats(&self, what: StatsReset) {
        match what {
            StatsReset::Sources => {
                if let Err(e) = self.store.reset_source_usage() {
                    tracing::warn!(error = %e, "cannot reset source totals");
                }
            }
            StatsReset::Sessions => self.inner.lock().await.session.reset(),
            StatsReset::Dns => {
                if let Err(e) = self.store.clear_destinations() {
                    tracing::warn!(error = %e, "cannot clear destination statistics");
                }
            }
        }
    }

    async fn dns_stats(&self, query: &DnsStatsQuery) -> Vec<DnsStat> {
        self.store.destinations(&query.user, query.count).unwrap_or_default()
    }

    fn user_events(&self) -> Option<tokio::sync::broadcast::Receiver<UserEvent>> {
        Some(self.user_events.subscribe())
    }

    fn outbox(&self) -> watch::Receiver<u64> {
        self.outbox_tx.subscribe()
    }

    fn outbox_id(&self) -> Result<u64, StateError> {
        self.store.outbox_id()
    }

    fn pending_changes(&self, after: u64, limit: usize) -> Result<Vec<LocalChange>, StateError> {
        self.store.pending_changes(after, limit)
    }

    fn changes_committed(&self, through: u64, revision: u64) -> Result<(), StateError> {
        self.store.changes_committed(through, revision)
    }

    async fn restart(&self) -> CoreStatus {
        self.restart_now().await
    }

    fn logs(&self, query: &LogQuery) -> Vec<LogLine> {
        match &self.process {
            Some(p) => p.logs(query.count as usize, query.min_level),
            None => vec![],
        }
    }

    fn journal_id(&self) -> Result<u64, StateError> {
        self.store.journal_id()
    }

    fn journal_after(&self, seq: u64, limit: usize) -> Result<Vec<StoredBatch>, StateError> {
        self.store.journal_after(seq, limit)
    }

    fn journal_committed(&self, seq: u64) -> Result<(), StateError> {
        self.store.delete_journal_through(seq).map(drop)
    }
}

#[derive(Default)]
struct Changes {
    added: u32,
    removed: u32,
    inbounds_changed: u32,
    restarted: bool,
    failures: Vec<(String, String)>,
}

/// Auto-renewals due at `now_ms`: clients whose subscription end passed and that renew.
fn renewals(inner: &Inner, now_ms: i64) -> Vec<UserChange> {
    inner
        .desired
        .clients
        .iter()
        .filter_map(|c| {
            let days = inner.lifecycle.get(&c.email.to_lowercase())?.renew_days;
            let expiry_ms = user_changes::renewed_expiry(c.expiry_ms, days, now_ms)?;
            Some(UserChange::SetExpiry { email: c.email.clone(), expiry_ms })
        })
        .collect()
}

fn fail(mut report: ApplyReport, what: &str, e: impl std::fmt::Display) -> ApplyReport {
    report.failures.push((what.to_string(), e.to_string()));
    report
}

fn render_config(
    flavor: CoreFlavor,
    api_port: u16,
    served: &[InboundSpec],
    users: &BTreeMap<UserKey, ClientSpec>,
    access_log: Option<String>,
) -> Result<Vec<u8>, DriverError> {
    let clients: Vec<ClientSpec> = users.values().cloned().collect();
    let input = CoreConfigInput {
        flavor,
        api_port,
        inbounds: served,
        clients: &clients,
        log_level: "warning",
        access_log: access_log.as_deref(),
    };
    let value = match flavor {
        CoreFlavor::SingBox => config::build_singbox(&input, api_port),
        _ => config::build(&input),
    }
    .map_err(|e| DriverError::Config("build".into(), e.to_string()))?;
    serde_json::to_vec_pretty(&value).map_err(|e| DriverError::Config("encode".into(), e.to_string()))
}

/// Whether the inbound's port can be bound now (TCP), so a port held by another program is
/// refused with a clear reason instead of crash-looping the core.
fn port_free(inbound: &InboundSpec) -> Result<(), String> {
    let ip: std::net::IpAddr = if inbound.listen.is_empty() {
        std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        inbound.listen.parse().map_err(|_| format!("listen address {:?} is not an IP address", inbound.listen))?
    };
    std::net::TcpListener::bind((ip, inbound.port))
        .map(drop)
        .map_err(|e| format!("port {} is already in use on this node ({e})", inbound.port))
}

const CORE_PID_FILE: &str = "core.pid";

/// Records the supervised core's pid, so a restarted agent can stop an orphan left by a crash.
fn remember_core_pid(data_dir: &Path, pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = std::fs::write(data_dir.join(CORE_PID_FILE), pid.to_string());
    }
}

/// Stops a core left running by a previous agent process that was killed (it would hold the
/// inbound and API ports), but only if that pid still runs the same binary.
fn kill_stale_core(data_dir: &Path, binary: &Path) {
    let Ok(text) = std::fs::read_to_string(data_dir.join(CORE_PID_FILE)) else { return };
    let Ok(pid) = text.trim().parse::<u32>() else { return };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let same = exe.as_deref().zip(std::fs::canonicalize(binary).ok()).is_some_and(|(a, b)| a == b);
    if same {
        tracing::warn!(pid, "stopping a proxy core left behind by a previous agent run");
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        for _ in 0..50 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_file(data_dir.join(CORE_PID_FILE));
}
