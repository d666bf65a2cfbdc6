//! Containers (the VPS API's virtual servers): create, start/stop, resize, snapshots and live
//! status, each change an asynchronous task with a UPID (`tasks`). Two backends behind
//! [`ContainerBackend`]: LXC's tools (`lxc`) and a Proxmox VE node's REST API (`proxmox`); the
//! web console runs under a pty of the host (`console`). The agent only changes containers it created itself (`agent.db`'s registry), and
//! lists the host's others read-only.

pub mod console;
pub mod lxc;
pub mod pool;
pub mod proxmox;
pub mod stats;
pub mod tasks;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flotilla_protocol::containers::{
    ContainerAction, ContainerCreate, ContainerList, ContainerOp, ContainerSample, ContainerSamples, ContainerSpec,
    ContainerState, ContainerStatus, SnapshotInfo, SnapshotList, TaskInfo, TaskStarted, Upid,
};
use flotilla_protocol::rpc::RpcError;
use serde::{Deserialize, Deserializer};
use tokio::sync::{broadcast, watch};

use crate::state::containers::{ManagedContainer, RegisterError, SnapshotRecord};
use crate::state::{StateError, StateStore};
use pool::AddressPool;
use stats::SampleBook;
use tasks::{TaskHandle, TaskRegistry};

/// Which backend runs containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendSetting {
    /// No containers on this host (the default).
    #[default]
    Off,
    /// LXC's tools (`lxc-create`, …).
    Lxc,
    /// The REST API of the Proxmox VE node the agent runs on (`[containers.proxmox]`).
    Proxmox,
}

impl std::str::FromStr for BackendSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(BackendSetting::Off),
            "lxc" => Ok(BackendSetting::Lxc),
            "proxmox" => Ok(BackendSetting::Proxmox),
            other => Err(format!("unknown containers backend {other:?}: expected \"lxc\", \"proxmox\" or \"off\"")),
        }
    }
}

impl<'de> Deserialize<'de> for BackendSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `[containers]` of `agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainersSettings {
    /// `"lxc"`, `"proxmox"` or `"off"` (default).
    pub backend: BackendSetting,
    /// The bridge guests are attached to; created with `gateway_cidr` if missing.
    pub bridge: String,
    /// Guest addresses, `FIRST-LAST`.
    pub address_pool: String,
    /// The bridge's own address and the subnet's prefix; guests' gateway.
    pub gateway_cidr: String,
    /// Where LXC keeps containers (`lxc-* -P`).
    pub lxc_path: PathBuf,
    /// How often usage is sampled.
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    /// Samples kept per container (the status' history).
    pub samples_kept: usize,
    /// `[containers.proxmox]`: the Proxmox VE API (needed with `backend = "proxmox"`).
    pub proxmox: Option<proxmox::ProxmoxSettings>,
}

impl Default for ContainersSettings {
    fn default() -> Self {
        ContainersSettings {
            backend: BackendSetting::Off,
            bridge: "fltbr0".into(),
            address_pool: "10.203.0.10-10.203.0.250".into(),
            gateway_cidr: "10.203.0.1/24".into(),
            lxc_path: PathBuf::from("/var/lib/lxc"),
            sample_interval: Duration::from_secs(10),
            samples_kept: 120,
            proxmox: None,
        }
    }
}

impl ContainersSettings {
    /// Checks what can be checked without touching the host.
    pub fn validate(&self) -> Result<AddressPool, String> {
        let pool = AddressPool::parse(&self.address_pool, &self.gateway_cidr).map_err(|e| e.to_string())?;
        // IFNAMSIZ: 15 bytes and a NUL.
        let bridge_ok = !self.bridge.is_empty()
            && self.bridge.len() <= 15
            && self.bridge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !bridge_ok {
            return Err(format!("bridge {:?}: 1 to 15 characters of [A-Za-z0-9._-]", self.bridge));
        }
        if self.sample_interval < Duration::from_secs(1) {
            return Err("sample_interval must be at least 1s".into());
        }
        if !(1..=10_000).contains(&self.samples_kept) {
            return Err("samples_kept must be between 1 and 10000".into());
        }
        if !self.lxc_path.is_absolute() {
            return Err(format!("lxc_path {} must be absolute", self.lxc_path.display()));
        }
        match (&self.proxmox, self.backend) {
            (Some(p), _) => p.validate().map_err(|e| format!("proxmox: {e}"))?,
            (None, BackendSetting::Proxmox) => {
                return Err(
                    "backend \"proxmox\" needs a [containers.proxmox] table (url, token_id, token_secret)".into()
                )
            }
            (None, _) => {}
        }
        Ok(pool)
    }
}

/// A backend command that failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot run {tool}: {source}")]
    Spawn { tool: &'static str, source: std::io::Error },
    #[error("{tool} did not finish within {secs}s")]
    Timeout { tool: &'static str, secs: u64 },
    #[error("{tool} failed ({}): {stderr}", code.map(|c| format!("exit {c}")).unwrap_or_else(|| "killed".into()))]
    Exit { tool: &'static str, code: Option<i32>, stderr: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    /// The Proxmox VE API answered with an error, or a Proxmox task failed.
    #[error(transparent)]
    Proxmox(proxmox::client::PveError),
}

impl BackendError {
    fn io(path: &std::path::Path, source: std::io::Error) -> BackendError {
        BackendError::Io { path: path.display().to_string(), source }
    }
}

/// Why the driver cannot start on this host.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("the containers driver needs root (privileged LXC containers)")]
    NotRoot,
    #[error("{0} not found; {hint}", hint = lxc::INSTALL_HINT)]
    MissingTool(&'static str),
    #[error("bridge {bridge}: {message}")]
    Bridge { bridge: String, message: String },
    #[error("[containers] {0}")]
    Config(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Why a request is not served; maps onto the RPC error classes.
#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    /// Invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// A state conflict: unknown or unmanaged container, busy, name taken.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("{0}")]
    State(#[from] StateError),
}

impl ContainersError {
    /// The RPC error the controller gets.
    pub fn to_rpc(&self) -> RpcError {
        match self {
            ContainersError::BadRequest(m) => RpcError::BadRequest(m.clone()),
            ContainersError::Refused(m) => RpcError::Refused(m.clone()),
            other => RpcError::Failed(other.to_string()),
        }
    }
}

impl From<tasks::TaskError> for ContainersError {
    fn from(e: tasks::TaskError) -> Self {
        match e {
            tasks::TaskError::Busy { .. } => ContainersError::Refused(e.to_string()),
            tasks::TaskError::State(s) => ContainersError::State(s),
        }
    }
}

impl From<RegisterError> for ContainersError {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::State(s) => ContainersError::State(s),
            other => ContainersError::Refused(other.to_string()),
        }
    }
}

/// A guest's place on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNetwork {
    pub bridge: String,
    pub ipv4: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// Counters of a running container, as the backend reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawUsage {
    /// The container's init, as the host sees it.
    pub pid: u32,
    /// Cumulative CPU time of the container's cgroup.
    pub cpu_ns: u64,
    pub mem_used: u64,
    /// The host end of the veth: bytes sent towards the guest.
    pub host_tx: u64,
    pub host_rx: u64,
    pub ipv4: Option<String>,
}

/// How a running guest's console is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEntry {
    /// A program on this host whose terminal is a root shell in the guest; the agent runs it
    /// under a pty and relays it over the link.
    Command(Vec<String>),
    /// The backend's own web console, already authorised (Proxmox's xterm.js / noVNC page).
    Url(String),
}

/// What a container backend does. Long operations log their steps into the task.
#[async_trait]
pub trait ContainerBackend: Send + Sync {
    /// Whether a container by this name exists on the host.
    fn exists(&self, name: &str) -> bool;
    /// Every container on the host.
    async fn list(&self) -> Result<Vec<String>, BackendError>;
    /// Creates it from its template (not started, not yet configured).
    async fn create(&self, spec: &ContainerSpec, log: &TaskHandle) -> Result<(), BackendError>;
    /// Writes its network and limits into its configuration.
    async fn configure(
        &self,
        name: &str,
        net: &GuestNetwork,
        cores: u32,
        memory_mib: u64,
        log: &TaskHandle,
    ) -> Result<(), BackendError>;
    /// Its run state (`Missing` when it does not exist).
    async fn state(&self, name: &str) -> Result<ContainerState, BackendError>;
    /// Starts it and waits until it runs.
    async fn start(&self, name: &str, log: &TaskHandle) -> Result<(), BackendError>;
    /// Shuts it down cleanly, killing it after `timeout`.
    async fn stop(&self, name: &str, timeout: Duration, log: &TaskHandle) -> Result<(), BackendError>;
    /// Kills it at once.
    async fn kill(&self, name: &str, log: &TaskHandle) -> Result<(), BackendError>;
    /// Deletes it with its snapshots (stopped).
    async fn destroy(&self, name: &str, log: &TaskHandle) -> Result<(), BackendError>;
    /// Sets root's password inside (running).
    async fn set_password(&self, name: &str, password: &str, log: &TaskHandle) -> Result<(), BackendError>;
    /// Changes its limits in its configuration, and in its cgroups too when `live`.
    async fn set_limits(
        &self,
        name: &str,
        cores: Option<u32>,
        memory_mib: Option<u64>,
        live: bool,
        log: &TaskHandle,
    ) -> Result<(), BackendError>;
    /// Reads one cgroup file of a running container (e.g. `memory.limit_in_bytes`).
    async fn cgroup_value(&self, name: &str, file: &str) -> Result<String, BackendError>;
    /// Takes a snapshot (stopped or running), returning the backend's name for it.
    async fn snapshot_create(&self, name: &str, description: &str, log: &TaskHandle) -> Result<String, BackendError>;
    /// Restores a snapshot over the (stopped) container.
    async fn snapshot_rollback(&self, name: &str, backend_name: &str, log: &TaskHandle) -> Result<(), BackendError>;
    /// Deletes a snapshot.
    async fn snapshot_delete(&self, name: &str, backend_name: &str, log: &TaskHandle) -> Result<(), BackendError>;
    /// Counters of a running container; None when it does not run.
    async fn usage(&self, name: &str) -> Result<Option<RawUsage>, BackendError>;
    /// Bytes its root filesystem uses (slow: a tree walk).
    async fn disk_used(&self, name: &str) -> Result<u64, BackendError>;
    /// How to reach the console of the (running) container.
    async fn console(&self, name: &str) -> Result<ConsoleEntry, BackendError>;
    /// Grows its root disk to `disk_gb` (never shrinks: the driver checked).
    async fn grow_disk(&self, name: &str, disk_gb: u64, log: &TaskHandle) -> Result<(), BackendError>;
}

/// Container names: `[a-z0-9-]`, 1 to 63 bytes, not starting with `-` (it would read as an
/// option to the lxc tools).
pub fn validate_name(name: &str) -> Result<(), ContainersError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ContainersError::BadRequest(format!(
            "invalid container name {name:?}: 1 to 63 characters of [a-z0-9-], not starting with '-'"
        )))
    }
}

fn validate_snapshot_name(name: &str) -> Result<(), ContainersError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ContainersError::BadRequest(format!("invalid snapshot name {name:?}: 1 to 40 characters of [A-Za-z0-9_-]")))
    }
}

fn validate_password(password: &str) -> Result<(), ContainersError> {
    if password.is_empty() || password.len() > 256 || password.chars().any(|c| c.is_control()) {
        return Err(ContainersError::BadRequest(
            "the root password must be 1 to 256 characters, no control characters".into(),
        ));
    }
    Ok(())
}

fn validate_user(user: &str) -> Result<(), ContainersError> {
    // It becomes a UPID field.
    if user.len() > 128 || user.contains(':') || user.chars().any(|c| c.is_control()) {
        return Err(ContainersError::BadRequest(format!("invalid user {user:?}: no ':' or control characters")));
    }
    Ok(())
}

/// Checks a resize against the current limits: the disk only grows (a filesystem cannot shrink
/// under a running guest), and cores and memory stay sane.
pub fn check_resize(
    current: &ManagedContainer,
    cores: Option<u32>,
    memory_mib: Option<u64>,
    disk_gb: Option<u64>,
) -> Result<(), ContainersError> {
    if cores.is_none() && memory_mib.is_none() && disk_gb.is_none() {
        return Err(ContainersError::BadRequest("nothing to resize".into()));
    }
    check_limits(
        cores.unwrap_or(current.cores),
        memory_mib.unwrap_or(current.memory_mib),
        disk_gb.unwrap_or(current.disk_gb),
    )?;
    if let Some(asked) = disk_gb {
        if asked < current.disk_gb {
            return Err(ContainersError::BadRequest(format!(
                "disk can only grow: {} GB now, {asked} GB asked",
                current.disk_gb
            )));
        }
    }
    Ok(())
}

fn check_limits(cores: u32, memory_mib: u64, disk_gb: u64) -> Result<(), ContainersError> {
    if !(1..=1024).contains(&cores) {
        return Err(ContainersError::BadRequest(format!("cores must be 1 to 1024, not {cores}")));
    }
    // Below this even busybox's init gets killed by the OOM killer.
    if !(16..=16 * 1024 * 1024).contains(&memory_mib) {
        return Err(ContainersError::BadRequest(format!("memory must be 16 MiB to 16 TiB, not {memory_mib} MiB")));
    }
    if !(1..=1024 * 1024).contains(&disk_gb) {
        return Err(ContainersError::BadRequest(format!("disk must be 1 GB or more, not {disk_gb} GB")));
    }
    Ok(())
}

/// How long a snapshot or rollback waits for a clean shutdown before killing the guest.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(20);

/// The containers driver: requests from the link, tasks in the background, samples on a timer.
pub struct ContainersDriver {
    settings: ContainersSettings,
    pool: AddressPool,
    backend: Arc<dyn ContainerBackend>,
    store: StateStore,
    tasks: Arc<TaskRegistry>,
    book: Mutex<SampleBook>,
    samples: watch::Sender<ContainerSamples>,
    sampler: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for ContainersDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainersDriver").field("backend", &self.settings.backend).finish()
    }
}

/// Checks the host can run LXC containers as the settings ask, creating the bridge if missing.
pub async fn probe_lxc(settings: &ContainersSettings, pool: &AddressPool) -> Result<(), ProbeError> {
    check_lxc_host(settings)?;
    ensure_bridge(&settings.bridge, &pool.gateway_cidr()).await
}

/// What `check-config` verifies without changing the host: root, and the tools on PATH.
pub fn check_lxc_host(settings: &ContainersSettings) -> Result<(), ProbeError> {
    if !rustix::process::geteuid().is_root() {
        return Err(ProbeError::NotRoot);
    }
    for tool in lxc::TOOLS {
        if !on_path(tool) {
            return Err(ProbeError::MissingTool(tool));
        }
    }
    if !on_path("ip") {
        let message = "ip not found; apt-get install iproute2".into();
        return Err(ProbeError::Bridge { bridge: settings.bridge.clone(), message });
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// Creates the bridge with its address if it does not exist, gives an existing one the gateway
/// address if it lacks it, and sets it up.
pub async fn ensure_bridge(bridge: &str, gateway_cidr: &str) -> Result<(), ProbeError> {
    let fail = |e: BackendError| ProbeError::Bridge { bridge: bridge.into(), message: e.to_string() };
    let quick = Duration::from_secs(10);
    let exists = lxc::run("ip", &["link", "show", "dev", bridge], None, quick).await.is_ok();
    if !exists {
        tracing::info!(bridge, gateway_cidr, "creating the containers' bridge");
        lxc::run("ip", &["link", "add", bridge, "type", "bridge"], None, quick).await.map_err(fail)?;
    }
    let addrs = lxc::run("ip", &["-4", "-o", "addr", "show", "dev", bridge], None, quick).await.map_err(fail)?;
    if !addrs.split_whitespace().any(|w| w == gateway_cidr) {
        lxc::run("ip", &["addr", "add", gateway_cidr, "dev", bridge], None, quick).await.map_err(fail)?;
    }
    lxc::run("ip", &["link", "set", bridge, "up"], None, quick).await.map_err(fail)?;
    Ok(())
}

fn ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Seconds since the process `pid` started (the container's init: its uptime).
fn process_uptime(pid: u32) -> u64 {
    let Some(start_ticks) = tasks::process_start_ticks(pid) else { return 0 };
    let Ok(uptime) = std::fs::read_to_string("/proc/uptime") else { return 0 };
    let Some(host_up) = uptime.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else { return 0 };
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    (host_up - start_ticks as f64 / ticks).max(0.0) as u64
}

impl ContainersDriver {
    /// Probes the host for the configured backend, fails tasks a previous run left running,
    /// and starts the sampler. `Ok(None)` when the backend is off.
    pub async fn start(
        settings: &ContainersSettings,
        state: StateStore,
    ) -> Result<Option<Arc<ContainersDriver>>, ProbeError> {
        let pool = settings.validate().map_err(ProbeError::Config)?;
        match settings.backend {
            BackendSetting::Off => Ok(None),
            BackendSetting::Lxc => {
                probe_lxc(settings, &pool).await?;
                let backend = Arc::new(lxc::LxcBackend::new(settings.lxc_path.clone()));
                tracing::info!(cgroups = ?backend.cgroups(), bridge = %settings.bridge, "LXC containers driver started");
                Ok(Some(Self::with_backend(settings, state, backend)?))
            }
            BackendSetting::Proxmox => {
                let pve =
                    settings.proxmox.as_ref().ok_or_else(|| ProbeError::Config("no [containers.proxmox]".into()))?;
                let backend = Arc::new(proxmox::ProxmoxBackend::connect(pve).await.map_err(ProbeError::Config)?);
                tracing::info!(url = %pve.url, node = %pve.node_name(), "Proxmox VE containers driver started");
                Ok(Some(Self::with_backend(settings, state, backend)?))
            }
        }
    }

    /// A driver on any backend (no probe): what [`ContainersDriver::start`] builds, and tests.
    pub fn with_backend(
        settings: &ContainersSettings,
        state: StateStore,
        backend: Arc<dyn ContainerBackend>,
    ) -> Result<Arc<ContainersDriver>, ProbeError> {
        let pool = settings.validate().map_err(ProbeError::Config)?;
        let tasks = Arc::new(TaskRegistry::open(state.clone(), tasks::Origin::current())?);
        // A create interrupted by a restart left a registry row: without a container behind
        // it, free its name and address.
        for c in state.managed_containers()? {
            if !c.created && !backend.exists(&c.name) {
                tracing::warn!(container = %c.name, "dropping an interrupted create");
                state.unregister_container(&c.name)?;
            }
        }
        let (samples, _) = watch::channel(ContainerSamples { containers: vec![] });
        let driver = Arc::new(ContainersDriver {
            settings: settings.clone(),
            pool,
            backend,
            store: state,
            tasks,
            book: Mutex::new(SampleBook::new(settings.samples_kept)),
            samples,
            sampler: Mutex::new(None),
        });
        let weak = Arc::downgrade(&driver);
        let every = settings.sample_interval;
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(driver) = weak.upgrade() else { break };
                driver.sample_all().await;
            }
        });
        *driver.sampler.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(driver)
    }

    /// Stops the sampler (tasks in flight run on).
    pub fn stop(&self) {
        if let Some(h) = self.sampler.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.abort();
        }
    }

    /// Task starts and ends (`CONTAINER_TASK` events).
    pub fn task_events(&self) -> broadcast::Receiver<TaskInfo> {
        self.tasks.subscribe()
    }

    /// The latest sample of every managed container, after each tick (`CONTAINER_SAMPLES`).
    pub fn samples(&self) -> watch::Receiver<ContainerSamples> {
        self.samples.subscribe()
    }

    /// The backend (tests read cgroup values through it).
    pub fn backend(&self) -> &Arc<dyn ContainerBackend> {
        &self.backend
    }

    fn managed(&self, name: &str) -> Result<ManagedContainer, ContainersError> {
        validate_name(name)?;
        match self.store.managed_container(name)? {
            Some(c) => Ok(c),
            None if self.backend.exists(name) => {
                Err(ContainersError::Refused(format!("{name} was not created by this agent: it is read-only")))
            }
            None => Err(ContainersError::Refused(format!("unknown container {name}"))),
        }
    }

    fn network(&self, ip: Ipv4Addr) -> GuestNetwork {
        GuestNetwork {
            bridge: self.settings.bridge.clone(),
            ipv4: ip,
            prefix: self.pool.prefix,
            gateway: self.pool.gateway,
        }
    }

    /// `CONTAINER_CREATE`: reserves the name and an address, then creates, configures, starts
    /// and sets the password in a task.
    pub fn create(self: &Arc<Self>, req: ContainerCreate) -> Result<TaskStarted, ContainersError> {
        let spec = req.spec;
        validate_name(&spec.name)?;
        validate_user(&req.user)?;
        validate_password(&spec.root_password)?;
        check_limits(spec.cores, spec.memory_mib, spec.disk_gb)?;
        if self.backend.exists(&spec.name) {
            return Err(ContainersError::Refused(format!(
                "a container named {} already exists on this host",
                spec.name
            )));
        }
        let ip = self.store.register_container(
            &spec.name,
            &self.pool.addresses(),
            spec.cores,
            spec.memory_mib,
            spec.disk_gb,
        )?;
        let task = match self.tasks.begin("vzcreate", &spec.name, &req.user) {
            Ok(t) => t,
            Err(e) => {
                let _ = self.store.unregister_container(&spec.name);
                return Err(e.into());
            }
        };
        let upid = task.upid();
        let driver = self.clone();
        tokio::spawn(async move {
            let result = driver.run_create(&spec, ip, &task).await;
            if let Err(e) = &result {
                task.log(format!("create failed ({e}); removing what was made"));
                if driver.backend.exists(&spec.name) {
                    let _ = driver.backend.kill(&spec.name, &task).await;
                    if let Err(e) = driver.backend.destroy(&spec.name, &task).await {
                        task.log(format!("cleanup: {e}"));
                    }
                }
                if let Err(e) = driver.store.unregister_container(&spec.name) {
                    task.log(format!("cleanup: {e}"));
                }
            }
            task.finish(result.map_err(|e| e.to_string()));
        });
        Ok(TaskStarted { upid })
    }

    async fn run_create(&self, spec: &ContainerSpec, ip: Ipv4Addr, task: &TaskHandle) -> Result<(), ContainersError> {
        task.log(format!(
            "creating {} ({} core(s), {} MiB, {} GB disk) at {ip}",
            spec.name, spec.cores, spec.memory_mib, spec.disk_gb
        ));
        self.backend.create(spec, task).await?;
        self.backend.configure(&spec.name, &self.network(ip), spec.cores, spec.memory_mib, task).await?;
        // The dir backend has no disk quota: disk_gb is recorded (and reported as disk_max) only.
        self.backend.start(&spec.name, task).await?;
        self.backend.set_password(&spec.name, &spec.root_password, task).await?;
        task.log("root password set");
        self.store.container_created(&spec.name)?;
        Ok(())
    }

    /// `CONTAINER_ACTION`: checks the operation, then runs it in a task.
    pub fn action(self: &Arc<Self>, req: ContainerAction) -> Result<TaskStarted, ContainersError> {
        validate_user(&req.user)?;
        let current = self.managed(&req.name)?;
        if !current.created {
            // Its create task still runs (or it would have been dropped).
            if let Some(upid) = self.tasks.running_on(&req.name) {
                return Err(ContainersError::Refused(format!("{} is busy: task {upid} runs on it", req.name)));
            }
        }
        match &req.op {
            ContainerOp::SetPassword { password } => validate_password(password)?,
            ContainerOp::Resize { cores, memory_mib, disk_gb } => {
                check_resize(&current, *cores, *memory_mib, *disk_gb)?
            }
            ContainerOp::SnapshotCreate { name, description } => {
                validate_snapshot_name(name)?;
                if description.len() > 4096 {
                    return Err(ContainersError::BadRequest("snapshot description longer than 4096 bytes".into()));
                }
                if self.store.snapshots(&req.name)?.iter().any(|s| &s.name == name) {
                    return Err(ContainersError::Refused(format!("{} already has a snapshot named {name}", req.name)));
                }
            }
            ContainerOp::SnapshotRollback { name } | ContainerOp::SnapshotDelete { name } => {
                validate_snapshot_name(name)?;
                if !self.store.snapshots(&req.name)?.iter().any(|s| &s.name == name) {
                    return Err(ContainersError::Refused(format!("{} has no snapshot named {name}", req.name)));
                }
            }
            ContainerOp::Start | ContainerOp::Stop { .. } | ContainerOp::Restart { .. } | ContainerOp::Delete => {}
        }
        let task = self.tasks.begin(req.op.task_type(), &req.name, &req.user)?;
        let upid = task.upid();
        let driver = self.clone();
        tokio::spawn(async move {
            let result = driver.run_action(&req.name, req.op, &task).await;
            task.finish(result.map_err(|e| e.to_string()));
        });
        Ok(TaskStarted { upid })
    }

    async fn run_action(&self, name: &str, op: ContainerOp, task: &TaskHandle) -> Result<(), ContainersError> {
        let b = &self.backend;
        let state = b.state(name).await?;
        let running = state == ContainerState::Running;
        match op {
            ContainerOp::Start if running => task.log(format!("{name} is already running")),
            ContainerOp::Start => b.start(name, task).await?,
            ContainerOp::Stop { .. } if state == ContainerState::Stopped => {
                task.log(format!("{name} is already stopped"))
            }
            ContainerOp::Stop { timeout_s } => b.stop(name, Duration::from_secs(timeout_s.into()), task).await?,
            ContainerOp::Restart { timeout_s } => {
                if running {
                    b.stop(name, Duration::from_secs(timeout_s.into()), task).await?;
                }
                b.start(name, task).await?;
            }
            ContainerOp::Delete => {
                if state != ContainerState::Stopped {
                    b.kill(name, task).await?;
                }
                b.destroy(name, task).await?;
                self.store.unregister_container(name)?;
                self.book.lock().unwrap_or_else(|p| p.into_inner()).retain(|n| n != name);
                task.log(format!("{name} deleted; its address is free"));
            }
            ContainerOp::SetPassword { password } => {
                if !running {
                    return Err(ContainersError::Refused(format!("{name} is stopped: start it to set the password")));
                }
                b.set_password(name, &password, task).await?;
                task.log("root password set");
            }
            ContainerOp::Resize { cores, memory_mib, disk_gb } => {
                if cores.is_some() || memory_mib.is_some() {
                    b.set_limits(name, cores, memory_mib, running, task).await?;
                }
                if let Some(gb) = disk_gb {
                    b.grow_disk(name, gb, task).await?;
                }
                self.store.update_container_limits(name, cores, memory_mib, disk_gb)?;
            }
            ContainerOp::SnapshotCreate { name: snap, description } => {
                // lxc-snapshot copies a dir-backed rootfs and refuses while the container runs
                // (there is no consistent copy of a live tree): stop, copy, start again.
                if running {
                    task.log(format!("{name} runs: stopping it for the snapshot"));
                    b.stop(name, QUIESCE_TIMEOUT, task).await?;
                }
                let made = b.snapshot_create(name, &description, task).await;
                if running {
                    b.start(name, task).await?;
                }
                let backend_name = made?;
                let snaptime = ms_now() / 1000;
                self.store.add_snapshot(name, &SnapshotRecord { name: snap, backend_name, description, snaptime })?;
            }
            ContainerOp::SnapshotRollback { name: snap } => {
                let record = self.snapshot(name, &snap)?;
                if running {
                    b.stop(name, QUIESCE_TIMEOUT, task).await?;
                }
                b.snapshot_rollback(name, &record.backend_name, task).await?;
                // The snapshot's config comes back with it; the registry's network and limits
                // stay authoritative (the address is held in the pool for this container).
                let current = self.managed(name)?;
                b.configure(name, &self.network(current.ipv4), current.cores, current.memory_mib, task).await?;
                if running {
                    b.start(name, task).await?;
                }
            }
            ContainerOp::SnapshotDelete { name: snap } => {
                let record = self.snapshot(name, &snap)?;
                b.snapshot_delete(name, &record.backend_name, task).await?;
                self.store.remove_snapshot(name, &snap)?;
            }
        }
        Ok(())
    }

    fn snapshot(&self, container: &str, name: &str) -> Result<SnapshotRecord, ContainersError> {
        self.store
            .snapshots(container)?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ContainersError::Refused(format!("{container} has no snapshot named {name}")))
    }

    /// `TASK_STATUS`.
    pub fn task(&self, upid: &Upid) -> Result<TaskInfo, ContainersError> {
        self.tasks.get(upid)?.ok_or_else(|| ContainersError::Refused(format!("unknown task {upid}")))
    }

    /// `SNAPSHOT_LIST`.
    pub fn snapshots(&self, name: &str) -> Result<SnapshotList, ContainersError> {
        self.managed(name)?;
        let snapshots = self
            .store
            .snapshots(name)?
            .into_iter()
            .map(|s| SnapshotInfo { name: s.name, description: s.description, snaptime: s.snaptime })
            .collect();
        Ok(SnapshotList { snapshots })
    }

    /// `CONTAINER_STATUS`: managed or not; unknown names are refused.
    pub async fn status(&self, name: &str) -> Result<ContainerStatus, ContainersError> {
        validate_name(name)?;
        let managed = self.store.managed_container(name)?;
        if managed.is_none() && !self.backend.exists(name) {
            return Err(ContainersError::Refused(format!("unknown container {name}")));
        }
        Ok(self.status_of(name, managed).await)
    }

    /// `CONTAINER_LIST`: every container on the host and every managed one.
    pub async fn list(&self) -> Result<ContainerList, ContainersError> {
        let mut names = self.backend.list().await?;
        let managed = self.store.managed_containers()?;
        for c in &managed {
            if !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
        names.sort();
        let mut containers = vec![];
        for name in names {
            let m = managed.iter().find(|c| c.name == name).cloned();
            containers.push(self.status_of(&name, m).await);
        }
        Ok(ContainerList { containers })
    }

    async fn status_of(&self, name: &str, managed: Option<ManagedContainer>) -> ContainerStatus {
        let creating = managed.as_ref().is_some_and(|m| !m.created);
        let state = match self.backend.state(name).await {
            _ if creating => ContainerState::Creating,
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(container = name, error = %e, "cannot read a container's state");
                ContainerState::Stopped
            }
        };
        let usage = match state {
            ContainerState::Running | ContainerState::Frozen => self.backend.usage(name).await.ok().flatten(),
            _ => None,
        };
        let cores = managed.as_ref().map(|m| m.cores).unwrap_or(0);
        let (now, samples) = {
            let book = self.book.lock().unwrap_or_else(|p| p.into_inner());
            (
                book.peek(name, usage.as_ref(), cores, Instant::now()),
                if managed.is_some() { book.samples(name) } else { vec![] },
            )
        };
        ContainerStatus {
            name: name.into(),
            state,
            managed: managed.is_some(),
            uptime_s: usage.as_ref().map(|u| process_uptime(u.pid)).unwrap_or(0),
            cores,
            mem_max: managed.as_ref().map(|m| m.memory_mib * 1024 * 1024).unwrap_or(0),
            disk_max: managed.as_ref().map(|m| m.disk_gb * 1_000_000_000).unwrap_or(0),
            now,
            ipv4: managed.as_ref().map(|m| m.ipv4.to_string()).or_else(|| usage.and_then(|u| u.ipv4)),
            samples,
        }
    }

    /// One sampler tick: every managed container's counters into its ring, `du` where due, and
    /// the latest samples published.
    pub async fn sample_all(&self) {
        let Ok(managed) = self.store.managed_containers() else { return };
        let mut out = vec![];
        for c in managed.iter().filter(|c| c.created) {
            let state = self.backend.state(&c.name).await.unwrap_or(ContainerState::Stopped);
            let usage = match state {
                ContainerState::Running | ContainerState::Frozen => self.backend.usage(&c.name).await.ok().flatten(),
                _ => None,
            };
            let due =
                self.book.lock().unwrap_or_else(|p| p.into_inner()).cached_disk(&c.name, Instant::now()).is_none();
            if due && state != ContainerState::Missing {
                if let Ok(bytes) = self.backend.disk_used(&c.name).await {
                    self.book.lock().unwrap_or_else(|p| p.into_inner()).set_disk(&c.name, bytes, Instant::now());
                }
            }
            let sample: ContainerSample = self.book.lock().unwrap_or_else(|p| p.into_inner()).record(
                &c.name,
                usage.as_ref(),
                c.cores,
                Instant::now(),
            );
            out.push((c.name.clone(), state, sample));
        }
        self.book.lock().unwrap_or_else(|p| p.into_inner()).retain(|n| managed.iter().any(|c| c.name == n));
        self.samples.send_replace(ContainerSamples { containers: out });
    }
}

impl Drop for ContainersDriver {
    fn drop(&mut self) {
        self.stop();
    }
}
