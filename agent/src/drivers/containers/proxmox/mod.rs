//! The Proxmox VE backend: containers of this Proxmox node, driven through its REST API with an
//! API token (`[containers] backend = "proxmox"` and `[containers.proxmox]` in `agent.toml`).
//!
//! How the agent's operations map onto Proxmox:
//! - **Names and VMIDs**: the agent's container name is the CT's `hostname` (Proxmox lists it as
//!   `name`); a new CT gets its VMID from `GET /cluster/nextid` and the tag `flotilla`. Every
//!   change resolves the name against a fresh listing, so a VMID freed and reused meanwhile is
//!   never hit; if several CTs share a name, the one tagged `flotilla` is used, else the
//!   operation is refused.
//! - **`exists`** is synchronous in the backend trait, so it answers from the last listing
//!   (refreshed by the start probe, every `list`/`state`, and after create and destroy).
//! - **Network**: `net0=name=eth0,bridge=<bridge>,ip=<pool address>/<prefix>,gw=<gateway>`
//!   (the address comes from `[containers] address_pool`/`gateway_cidr`; the bridge is
//!   `[containers.proxmox] bridge`, not `[containers] bridge`, which the agent creates only
//!   for LXC). The MAC address Proxmox generated is kept across rewrites.
//! - **Root password**: Proxmox sets it only at create (`password`); there is no API for a
//!   running CT without `pct exec`, so a later change is refused with a clear error.
//! - **Limits**: `cores` and `memory` by `PUT …/config` (applied live by Proxmox, left pending
//!   otherwise, which is logged). The disk is `rootfs=<storage>:<disk_gb>` (GiB) at create;
//!   [`ProxmoxBackend::grow_disk`] grows it (`PUT …/resize`).
//! - **Stop** is `status/shutdown` with `timeout` and `forceStop=1` (Proxmox kills after the
//!   timeout), **kill** is `status/stop`, **destroy** `DELETE` with `purge=1` and
//!   `destroy-unreferenced-disks=1`.
//! - **Snapshots** are Proxmox snapshots named `flt<unix ms>` (needs snapshot-capable storage:
//!   LVM-thin, ZFS, Ceph, btrfs).
//! - **Usage** from `status/current`: `mem`, `netin`/`netout` (Proxmox already counts them from
//!   the guest's side), `pid`; CPU is Proxmox's current fraction of `cpus`, integrated over time
//!   into the cumulative counter the driver expects; the address of unmanaged CTs comes from
//!   `…/interfaces`; disk use is `status/current`'s `disk`.
//! - **Console**: the Proxmox web console's URL (xterm.js), see [`ProxmoxBackend`]'s `console`.
//!
//! Every long call is a Proxmox task (a UPID) that is polled until it stops; its log is copied
//! into the agent's task (`pve: …` lines) and a failed exit status fails the agent's task.

pub mod client;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flotilla_protocol::containers::{ContainerSpec, ContainerState, OsTemplate};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::tasks::TaskHandle;
use super::{BackendError, ConsoleEntry, ContainerBackend, GuestNetwork, RawUsage};
use client::{enc, PveClient, PveError, Trust};

/// Where Proxmox keeps its cluster CA (it signs every node's `pve-ssl.pem`, whose names include
/// `127.0.0.1` and `localhost`): the trust used when neither `ca_file` nor `fingerprint` is set.
pub const PVE_ROOT_CA: &str = "/etc/pve/pve-root-ca.pem";
/// The tag every CT the agent creates carries.
pub const TAG: &str = "flotilla";
/// The Debian 12 template Proxmox offers (`pveam available --section system`), used for
/// `debian:bookworm` / `debian:12` unless `templates` maps them elsewhere.
pub const DEBIAN_12_TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

/// Create (downloads nothing, but unpacks a template onto new storage).
const CREATE_WAIT: Duration = Duration::from_secs(30 * 60);
/// Start, kill, destroy, snapshots, resize.
const TASK_WAIT: Duration = Duration::from_secs(10 * 60);
/// A stop's wait beyond the shutdown timeout (Proxmox kills at the timeout, then cleans up).
const STOP_MARGIN: Duration = Duration::from_secs(60);

/// `[containers.proxmox]` of `agent.toml`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProxmoxSettings {
    /// The API's address, `https://HOST:8006` (default `https://127.0.0.1:8006`: the agent runs
    /// on the node itself).
    pub url: String,
    /// The Proxmox node name (default: this host's name, without its domain).
    pub node: Option<String>,
    /// `user@realm!tokenname` (`pveum user token add root@pam flotilla --privsep 0`).
    pub token_id: String,
    /// The token's secret (UUID); or `token_secret_file`, exactly one of the two.
    pub token_secret: Option<String>,
    /// A file holding the token's secret (trailing whitespace ignored).
    pub token_secret_file: Option<PathBuf>,
    /// Storage for new root filesystems (default `local-lvm`).
    pub storage: String,
    /// The bridge guests' `net0` is attached to (default `vmbr0`).
    pub bridge: String,
    /// Create unprivileged CTs (default true; Proxmox's own default for new CTs).
    pub unprivileged: bool,
    /// Template volume ids by the agent's template names: `busybox`, `debian:<release>` and
    /// the names of `Named` templates (a `Named` template that is already a volume id,
    /// `STORAGE:vztmpl/FILE`, needs no entry). `debian:bookworm` and `debian:12` default to
    /// [`DEBIAN_12_TEMPLATE`]; busybox has no Proxmox template and is refused unless mapped.
    pub templates: BTreeMap<String, String>,
    /// The CA (PEM) the API's certificate must chain to, its name matching `url`'s host.
    pub ca_file: Option<PathBuf>,
    /// Or the SHA-256 of the API's certificate (`pvenode cert info`, `AB:CD:…`): that exact
    /// certificate is accepted. With neither, [`PVE_ROOT_CA`] is the CA.
    pub fingerprint: Option<String>,
    /// Where browsers reach the web console (default: `url`), `https://pve.example.com:8006`.
    pub console_url: Option<String>,
    /// A Proxmox user (`console@pve`, with `VM.Console` only) whose login ticket is added to
    /// console URLs; API tokens cannot open console sessions.
    pub console_user: Option<String>,
    /// Its password.
    pub console_password_file: Option<PathBuf>,
    /// Proxmox's container tool on this node (default `/usr/sbin/pct`): root password changes
    /// run `pct exec VMID -- chpasswd`, since the API sets the password only at create.
    pub pct: PathBuf,
}

impl Default for ProxmoxSettings {
    fn default() -> Self {
        ProxmoxSettings {
            url: "https://127.0.0.1:8006".into(),
            node: None,
            token_id: String::new(),
            token_secret: None,
            token_secret_file: None,
            storage: "local-lvm".into(),
            bridge: "vmbr0".into(),
            unprivileged: true,
            templates: BTreeMap::new(),
            ca_file: None,
            fingerprint: None,
            console_url: None,
            console_user: None,
            console_password_file: None,
            pct: PathBuf::from("/usr/sbin/pct"),
        }
    }
}

// By hand: the token secret must not reach logs.
impl std::fmt::Debug for ProxmoxSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxmoxSettings")
            .field("url", &self.url)
            .field("node", &self.node)
            .field("token_id", &self.token_id)
            .field("token_secret", &self.token_secret.as_ref().map(|_| "<redacted>"))
            .field("token_secret_file", &self.token_secret_file)
            .field("storage", &self.storage)
            .field("bridge", &self.bridge)
            .field("unprivileged", &self.unprivileged)
            .field("templates", &self.templates)
            .field("ca_file", &self.ca_file)
            .field("fingerprint", &self.fingerprint)
            .field("console_url", &self.console_url)
            .field("console_user", &self.console_user)
            .field("console_password_file", &self.console_password_file)
            .field("pct", &self.pct)
            .finish()
    }
}

fn check_https(key: &str, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{key} {url:?}: {e}"))?;
    if parsed.scheme() != "https" || parsed.host_str().is_none() {
        return Err(format!("{key} {url:?}: must be https://HOST[:PORT] (the Proxmox API is HTTPS only)"));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(format!("{key} {url:?}: no path (\"/api2/json\" is added)"));
    }
    Ok(())
}

impl ProxmoxSettings {
    /// Checks what can be checked without the network or the files.
    pub fn validate(&self) -> Result<(), String> {
        check_https("url", &self.url)?;
        if let Some(url) = &self.console_url {
            check_https("console_url", url)?;
        }
        let token_ok = self.token_id.split_once('@').and_then(|(user, rest)| {
            let (realm, name) = rest.split_once('!')?;
            Some(!user.is_empty() && !realm.is_empty() && !name.is_empty())
        }) == Some(true)
            && !self.token_id.contains(['=', ' ', '\t', '\n']);
        if !token_ok {
            return Err(format!("token_id {:?}: expected user@realm!tokenname, e.g. root@pam!flotilla", self.token_id));
        }
        match (&self.token_secret, &self.token_secret_file) {
            (Some(_), Some(_)) => return Err("token_secret and token_secret_file: set one, not both".into()),
            (None, None) => return Err("token_secret or token_secret_file is needed".into()),
            (Some(s), None) if s.trim().is_empty() => return Err("token_secret is empty".into()),
            _ => {}
        }
        if self.ca_file.is_some() && self.fingerprint.is_some() {
            return Err("ca_file and fingerprint: set one, not both".into());
        }
        if let Some(fp) = &self.fingerprint {
            client::parse_fingerprint(fp)?;
        }
        let id_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !id_ok(&self.storage) {
            return Err(format!("storage {:?}: a Proxmox storage id", self.storage));
        }
        if !id_ok(&self.bridge) || self.bridge.len() > 15 {
            return Err(format!("bridge {:?}: 1 to 15 characters of [A-Za-z0-9._-]", self.bridge));
        }
        if let Some(node) = &self.node {
            if !id_ok(node) {
                return Err(format!("node {node:?}: a Proxmox node name"));
            }
        }
        for (name, volid) in &self.templates {
            if !looks_like_volid(volid) {
                return Err(format!("templates.{name} = {volid:?}: expected a volume id, STORAGE:vztmpl/FILE"));
            }
        }
        match (&self.console_user, &self.console_password_file) {
            (Some(user), Some(_)) if !user.contains('@') || user.contains('!') => {
                Err(format!("console_user {user:?}: a user@realm (not an API token: tokens cannot open consoles)"))
            }
            (Some(_), None) | (None, Some(_)) => Err("console_user and console_password_file go together".into()),
            _ => Ok(()),
        }
    }

    /// The node name: `node`, or this host's name without its domain.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            let host = sysinfo::System::host_name().unwrap_or_else(|| "localhost".into());
            host.split('.').next().unwrap_or("localhost").to_string()
        })
    }

    /// The template volume id for `template`, or why there is none.
    pub fn template_volid(&self, template: &OsTemplate) -> Result<String, String> {
        let key = match template {
            OsTemplate::Busybox => "busybox".to_string(),
            OsTemplate::Debian { release } => format!("debian:{release}"),
            OsTemplate::Named { template, .. } => template.clone(),
        };
        if let Some(volid) = self.templates.get(&key) {
            return Ok(volid.clone());
        }
        match template {
            OsTemplate::Debian { release } if release == "bookworm" || release == "12" => Ok(DEBIAN_12_TEMPLATE.into()),
            OsTemplate::Named { template, .. } if looks_like_volid(template) => Ok(template.clone()),
            OsTemplate::Busybox => {
                Err("Proxmox VE has no busybox template: map one in [containers.proxmox.templates] \
                 (busybox = \"local:vztmpl/…\") or choose another OS"
                    .into())
            }
            _ => Err(format!(
                "no Proxmox template for {key:?}: map it in [containers.proxmox.templates] \
                 (\"{key}\" = \"local:vztmpl/…\", see `pveam available`)"
            )),
        }
    }

    fn read_secret(&self) -> Result<String, String> {
        let secret = match (&self.token_secret, &self.token_secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => {
                std::fs::read_to_string(path).map_err(|e| format!("token_secret_file {}: {e}", path.display()))?
            }
            (None, None) => return Err("token_secret or token_secret_file is needed".into()),
        };
        let secret = secret.trim().to_string();
        if secret.is_empty() {
            return Err("the API token's secret is empty".into());
        }
        Ok(secret)
    }

    fn trust(&self) -> Result<Trust, String> {
        if let Some(fp) = &self.fingerprint {
            return client::parse_fingerprint(fp).map(Trust::Fingerprint);
        }
        match &self.ca_file {
            Some(path) => Trust::ca_file(path).map_err(|e| e.to_string()),
            None => Trust::ca_file(std::path::Path::new(PVE_ROOT_CA)).map_err(|e| {
                format!(
                    "neither ca_file nor fingerprint is set and the node's CA is not readable ({e}): \
                     set fingerprint (`pvenode cert info`) or ca_file"
                )
            }),
        }
    }
}

/// `STORAGE:vztmpl/FILE` (or any `STORAGE:VOLUME`).
fn looks_like_volid(s: &str) -> bool {
    s.split_once(':').is_some_and(|(storage, volume)| !storage.is_empty() && !volume.is_empty())
        && !s.contains(char::is_whitespace)
}

/// A number Proxmox may send as a JSON number or a string (LXC listings have both).
fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn int(v: Option<&Value>) -> u64 {
    number(v).map(|n| n.max(0.0) as u64).unwrap_or(0)
}

/// One CT of the node's listing.
#[derive(Debug, Clone, PartialEq)]
struct Guest {
    vmid: u32,
    name: String,
    status: String,
    tagged: bool,
}

impl Guest {
    fn from_listing(v: &Value) -> Option<Guest> {
        let vmid = number(v.get("vmid"))? as u32;
        // Proxmox names a CT without hostname `CT<vmid>`.
        let name = v.get("name").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("CT{vmid}"));
        let status = v.get("status").and_then(Value::as_str).unwrap_or("unknown").to_string();
        let tags = v.get("tags").and_then(Value::as_str).unwrap_or("");
        let tagged = tags.split([';', ',', ' ']).any(|t| t == TAG);
        Some(Guest { vmid, name, status, tagged })
    }
}

fn parse_state(status: &str) -> ContainerState {
    match status {
        "running" => ContainerState::Running,
        "paused" | "frozen" | "suspended" => ContainerState::Frozen,
        _ => ContainerState::Stopped,
    }
}

/// The CPU counter made of Proxmox's instantaneous CPU fraction.
#[derive(Debug, Clone, Copy)]
struct CpuIntegral {
    pid: u32,
    ns: f64,
    at: Instant,
}

/// The Proxmox VE backend (see the module's documentation).
pub struct ProxmoxBackend {
    api: PveClient,
    node: String,
    settings: ProxmoxSettings,
    guests: Mutex<Vec<Guest>>,
    /// SHA-256 of the password each create set, until the driver's `set_password` right after
    /// the create consumes it (Proxmox set it already; nothing else can).
    create_passwords: Mutex<HashMap<String, [u8; 32]>>,
    cpu: Mutex<HashMap<u32, CpuIntegral>>,
}

impl std::fmt::Debug for ProxmoxBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxmoxBackend").field("api", &self.api).field("node", &self.node).finish()
    }
}

/// How long `pct exec … chpasswd` may take.
const PCT_TIMEOUT: Duration = Duration::from_secs(60);

fn password_digest(name: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(&[0]);
    ctx.update(password.as_bytes());
    ctx.finish().as_ref().try_into().unwrap_or([0; 32])
}

impl ProxmoxBackend {
    /// Connects and probes: `GET /version` (reachable, TLS trusted, token valid) and
    /// `GET /nodes/{node}/lxc` (the node exists and the token may list its CTs). The errors
    /// say which of these failed.
    pub async fn connect(settings: &ProxmoxSettings) -> Result<ProxmoxBackend, String> {
        settings.validate()?;
        let secret = settings.read_secret()?;
        let trust = settings.trust()?;
        let api = PveClient::new(&settings.url, &settings.token_id, &secret, &trust).map_err(|e| e.to_string())?;
        let backend = ProxmoxBackend::with_client(api, settings.node_name(), settings.clone());
        backend.probe().await?;
        Ok(backend)
    }

    /// A backend on a ready client (no probe).
    pub fn with_client(api: PveClient, node: String, settings: ProxmoxSettings) -> ProxmoxBackend {
        ProxmoxBackend {
            api,
            node,
            settings,
            guests: Mutex::new(vec![]),
            create_passwords: Mutex::new(HashMap::new()),
            cpu: Mutex::new(HashMap::new()),
        }
    }

    /// The API client.
    pub fn client(&self) -> &PveClient {
        &self.api
    }

    /// The probe [`ProxmoxBackend::connect`] runs; fills the name ↔ VMID cache.
    pub async fn probe(&self) -> Result<(), String> {
        let at = format!("Proxmox VE at {} (node {})", self.api.url(), self.node);
        let version: Value = self.api.get("/version", &[]).await.map_err(|e| format!("{at}: {e}"))?;
        let version = version.get("version").and_then(Value::as_str).unwrap_or("?").to_string();
        self.refresh().await.map_err(|e| match e.status() {
            Some(403) => format!(
                "{at}: the token {} may not list the node's containers ({e}); create it with --privsep 0 \
                 or grant it the roles the user has (see docs/operations.md)",
                self.api.token_id()
            ),
            Some(_) => format!("{at}: {e} (is {} this node's name? set [containers.proxmox] node)", self.node),
            None => format!("{at}: {e}"),
        })?;
        tracing::info!(url = %self.api.url(), node = %self.node, version, "Proxmox VE API reachable");
        Ok(())
    }

    fn lxc(&self) -> String {
        format!("/nodes/{}/lxc", enc(&self.node))
    }

    fn ct(&self, vmid: u32, rest: &str) -> String {
        format!("/nodes/{}/lxc/{vmid}{rest}", enc(&self.node))
    }

    /// Lists the node's CTs into the cache.
    async fn refresh(&self) -> Result<Vec<Guest>, PveError> {
        let list: Vec<Value> = self.api.get(&self.lxc(), &[]).await?;
        let mut guests: Vec<Guest> = list.iter().filter_map(Guest::from_listing).collect();
        guests.sort_by_key(|g| g.vmid);
        *self.guests.lock().unwrap_or_else(|p| p.into_inner()) = guests.clone();
        Ok(guests)
    }

    fn pick(guests: &[Guest], name: &str) -> Result<Option<Guest>, BackendError> {
        let named: Vec<&Guest> = guests.iter().filter(|g| g.name == name).collect();
        match named[..] {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            _ => {
                let ours: Vec<&&Guest> = named.iter().filter(|g| g.tagged).collect();
                match ours[..] {
                    [one] => Ok(Some((*one).clone())),
                    _ => Err(BackendError::Invalid(format!(
                        "several Proxmox CTs are named {name} (VMIDs {}): rename the others",
                        named.iter().map(|g| g.vmid.to_string()).collect::<Vec<_>>().join(", ")
                    ))),
                }
            }
        }
    }

    /// The CT named `name`, from a fresh listing.
    async fn find(&self, name: &str) -> Result<Option<Guest>, BackendError> {
        let guests = self.refresh().await?;
        Self::pick(&guests, name)
    }

    /// The VMID of `name` from a fresh listing (every change goes through here).
    async fn vmid(&self, name: &str) -> Result<u32, BackendError> {
        self.find(name)
            .await?
            .map(|g| g.vmid)
            .ok_or_else(|| BackendError::Invalid(format!("no CT named {name} on Proxmox node {}", self.node)))
    }

    /// The VMID of `name` from the cache, listing only when it is not there (reads).
    async fn vmid_cached(&self, name: &str) -> Result<u32, BackendError> {
        let cached = Self::pick(&self.guests.lock().unwrap_or_else(|p| p.into_inner()), name)?;
        match cached {
            Some(g) => Ok(g.vmid),
            None => self.vmid(name).await,
        }
    }

    /// Runs an API call that starts a task and waits for the task.
    async fn task(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &[(&str, String)],
        limit: Duration,
        log: &TaskHandle,
    ) -> Result<(), BackendError> {
        let upid: String = self.api.call(method, path, params).await?;
        log.log(format!("Proxmox task {upid}"));
        self.api.wait_task(&self.node, &upid, limit, log).await?;
        Ok(())
    }

    async fn config(&self, vmid: u32) -> Result<Map<String, Value>, BackendError> {
        Ok(self.api.get(&self.ct(vmid, "/config"), &[]).await?)
    }

    async fn status_current(&self, vmid: u32) -> Result<Map<String, Value>, BackendError> {
        Ok(self.api.get(&self.ct(vmid, "/status/current"), &[]).await?)
    }

    /// Grows the root filesystem to `disk_gb` GiB (`PUT …/resize`; Proxmox refuses to shrink).
    /// The driver's resize records the disk size only (the backend trait has no disk resize).
    pub async fn grow_disk(&self, name: &str, disk_gb: u64, log: &TaskHandle) -> Result<(), BackendError> {
        let vmid = self.vmid(name).await?;
        log.log(format!("resizing rootfs of CT {vmid} to {disk_gb}G"));
        let params = [("disk", "rootfs".to_string()), ("size", format!("{disk_gb}G"))];
        self.task(reqwest::Method::PUT, &self.ct(vmid, "/resize"), &params, TASK_WAIT, log).await
    }

    /// Allocates a VMID and posts the create; a VMID taken between `nextid` and the create
    /// (another client) is retried with the next one.
    async fn post_create(&self, params: Vec<(&str, String)>, log: &TaskHandle) -> Result<(u32, String), BackendError> {
        let mut last = None;
        for _ in 0..5 {
            let next: Value = self.api.get("/cluster/nextid", &[]).await?;
            let vmid = number(Some(&next))
                .map(|n| n as u32)
                .ok_or_else(|| BackendError::Invalid(format!("/cluster/nextid answered {next}")))?;
            let mut all = vec![("vmid", vmid.to_string())];
            all.extend(params.iter().cloned());
            match self.api.post::<String>(&self.lxc(), &all).await {
                Ok(upid) => return Ok((vmid, upid)),
                Err(e @ PveError::Api { .. }) if e.to_string().contains("already exists") => {
                    log.log(format!("VMID {vmid} was taken meanwhile; asking for another"));
                    last = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map(BackendError::from).unwrap_or_else(|| BackendError::Invalid("no free VMID".into())))
    }
}

impl From<PveError> for BackendError {
    fn from(e: PveError) -> Self {
        BackendError::Proxmox(e)
    }
}

#[async_trait]
impl ContainerBackend for ProxmoxBackend {
    fn exists(&self, name: &str) -> bool {
        self.guests.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|g| g.name == name)
    }

    async fn list(&self) -> Result<Vec<String>, BackendError> {
        let mut names: Vec<String> = self.refresh().await?.into_iter().map(|g| g.name).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn create(&self, spec: &ContainerSpec, log: &TaskHandle) -> Result<(), BackendError> {
        let ostemplate = self.settings.template_volid(&spec.template).map_err(BackendError::Invalid)?;
        // Proxmox's own minimum; said here rather than as a parameter error.
        if spec.root_password.chars().count() < 5 {
            return Err(BackendError::Invalid("Proxmox VE needs a root password of at least 5 characters".into()));
        }
        if self.find(&spec.name).await?.is_some() {
            return Err(BackendError::Invalid(format!("a CT named {} already exists on Proxmox", spec.name)));
        }
        let params = vec![
            ("ostemplate", ostemplate.clone()),
            ("hostname", spec.name.clone()),
            ("password", spec.root_password.clone()),
            ("rootfs", format!("{}:{}", self.settings.storage, spec.disk_gb)),
            ("cores", spec.cores.to_string()),
            ("memory", spec.memory_mib.to_string()),
            ("unprivileged", if self.settings.unprivileged { "1" } else { "0" }.to_string()),
            ("tags", TAG.to_string()),
            ("description", "Created by flotilla-agent.".to_string()),
            ("start", "0".to_string()),
        ];
        log.log(format!(
            "creating CT {} from {ostemplate} on {} ({} GiB)",
            spec.name, self.settings.storage, spec.disk_gb
        ));
        let (vmid, upid) = self.post_create(params, log).await?;
        log.log(format!("VMID {vmid}, Proxmox task {upid}"));
        let waited = self.api.wait_task(&self.node, &upid, CREATE_WAIT, log).await;
        // Whatever the outcome: the driver's cleanup asks `exists`.
        let _ = self.refresh().await;
        waited?;
        self.create_passwords
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.name.clone(), password_digest(&spec.name, &spec.root_password));
        log.log(format!("CT {vmid} created; root password set by Proxmox"));
        Ok(())
    }

    async fn configure(
        &self,
        name: &str,
        net: &GuestNetwork,
        cores: u32,
        memory_mib: u64,
        log: &TaskHandle,
    ) -> Result<(), BackendError> {
        let vmid = self.vmid(name).await?;
        let current = self.config(vmid).await?;
        // Keep the MAC Proxmox generated: a new one would look like a new host to the network.
        let hwaddr = current
            .get("net0")
            .and_then(Value::as_str)
            .and_then(|n| n.split(',').find_map(|kv| kv.strip_prefix("hwaddr=")))
            .map(|mac| format!(",hwaddr={mac}"))
            .unwrap_or_default();
        let net0 = format!(
            "name=eth0,bridge={}{hwaddr},ip={}/{},gw={}",
            self.settings.bridge, net.ipv4, net.prefix, net.gateway
        );
        let params = [("net0", net0.clone()), ("cores", cores.to_string()), ("memory", memory_mib.to_string())];
        self.api.put::<Value>(&self.ct(vmid, "/config"), &params).await?;
        log.log(format!("config of CT {vmid}: net0={net0}, cores={cores}, memory={memory_mib}"));
        Ok(())
    }

    async fn state(&self, name: &str) -> Result<ContainerState, BackendError> {
        Ok(match self.find(name).await? {
            Some(g) => parse_state(&g.status),
            None => ContainerState::Missing,
        })
    }

    async fn start(&self, name: &str, log: &TaskHandle) -> Result<(), BackendError> {
        let vmid = self.vmid(name).await?;
        log.log(format!("starting CT {vmid}"));
        self.task(reqwest::Method::POST, &self.ct(vmid, "/status/start"), &[], TASK_WAIT, log).await?;
        match self.state(name).await? {
            ContainerState::Running => {
                log.log(format!("{name} is running"));
                Ok(())
            }
            other => Err(BackendError::Invalid(format!("CT {vmid} started but is {other:?}"))),
        }
    }

    async fn stop(&self, name: &str, timeout: Duration, log: &TaskHandle) -> Result<(), BackendError> {
        let vmid = self.vmid(name).await?;
        let secs = timeout.as_secs().max(1);
        log.log(format!("shutting CT {vmid} down (killed after {secs}s)"));
        let params = [("timeout", secs.to_string()), ("forceStop", "1".to_string())];
        let path = self.ct(vmid, "/status/shutdown");
        let limit = Duration::from_secs(secs) + STOP_MARGIN;
        if let Err(e) = self.task(reqwest::Method::POST, &path, &params, limit, log).await {
            log.log(format!("clean shutdown failed ({e}); killing"));
        }
        if self.state(name).await? != ContainerState::Stopped {
            self.kill(name, log).await?;
        }
        log.log(format!("{name} is stopped"));
        Ok(())
    }

    async fn kill(&self, name: &str, log: &TaskHandle) -> Result<(), BackendError> {
        let vmid = self.vmid(name).await?;
        log.log(format!("stopping CT {vmid} at once"));
        self.task(reqwest::Method::POST, &self.ct(vmid, "/status/stop"), &[], TASK_WAIT, log).await
    }

    async fn destroy(&self, name: &str, log: &TaskHandle) -> Result<(), BackendError> {
        let vmid = self.vmid(name).await?;
        log.log(format!("destroying CT {vmid} with its disks and snapshots"));
        let params = [("purge", "1".to_string()), ("destroy-unreferenced-disks", "1".to_string())];
        let result = self.task(reqwest::Method::DELETE, &self.ct(vmid, ""), &params, TASK_WAIT, log).await;
        let _ = self.refresh().await;
        self.create_passwords.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        self.cpu.lock().unwrap_or_else(|p| p.into_inner()).remove(&vmid);
        result
    }

    async fn set_password(&self, name: &str, password: &str, log: &TaskHandle) -> Result<(), BackendError> {
        let digest = password_digest(name, password);
        let set_at_create = {
            let mut created = self.create_passwords.lock().unwrap_or_else(|p| p.into_inner());
            created.get(name) == Some(&digest) && created.remove(name).is_some()
        };
        if set_at_create {
            log.log("root password: set by Proxmox at create");
            return Ok(());
        }
        // The API has no call for it; the agent runs on the node, where `pct exec` reaches
        // the guest (as `lxc-attach` does for the LXC backend).
        let pct = &self.settings.pct;
        if !pct.is_file() {
            return Err(BackendError::Invalid(format!(
                "{} not found: the Proxmox VE backend changes root passwords with `pct exec` on the node (set \
                 [containers.proxmox] pct), or change it inside the guest (console, passwd)",
                pct.display()
            )));
        }
        let vmid = self.vmid(name).await?.to_string();
        log.log(format!("pct exec {vmid} -- chpasswd"));
        // A guest without chpasswd closes the pipe early; the exit status tells.
        let input = format!("root:{password}\n");
        let args = ["exec", vmid.as_str(), "--", "chpasswd"];
        super::lxc::run_program(pct, "pct", &args, Some(input.as_bytes()), PCT_TIMEOUT).await?;
        Ok(())
    }

    async fn set_limits(
        &self,
        name: &str,
        cores: Option<u32>,
        memory_mib: Option<u64>,
        live: bool,
        log: &TaskHandle,
    ) -> Result<(), BackendError> {
        let vmid = self.vmid(name).await?;
        let mut params = vec![];
        if let Some(c) = cores {
            params.push(("cores", c.to_string()));
        }
        if let Some(m) = memory_mib {
            params.push(("memory", m.to_string()));
        }
        if params.is_empty() {
            return Ok(());
        }
        self.api.put::<Value>(&self.ct(vmid, "/config"), &params).await?;
        for (k, v) in &params {
            log.log(format!("config of CT {vmid}: {k} = {v}"));
        }
        if live {
            // Proxmox applies what it can to the running CT and keeps the rest pending.
            let pending: Vec<Value> = self.api.get(&self.ct(vmid, "/pending"), &[]).await.unwrap_or_default();
            let waiting: Vec<&str> = pending
                .iter()
                .filter(|p| p.get("pending").is_some() || p.get("delete").is_some())
                .filter_map(|p| p.get("key").and_then(Value::as_str))
                .collect();
            if !waiting.is_empty() {
                log.log(format!("pending until the next restart: {}", waiting.join(", ")));
            }
        }
        Ok(())
    }

    /// The limits Proxmox writes into the CT's cgroup, from its config: `memory.max` /
    /// `memory.limit_in_bytes` (`memory` MiB) and `memory.swap.max` (`swap` MiB). CPU files
    /// are refused: Proxmox turns `cores` into a cpuset, `cpulimit` into `cpu.max`.
    async fn cgroup_value(&self, name: &str, file: &str) -> Result<String, BackendError> {
        let vmid = self.vmid_cached(name).await?;
        let config = self.config(vmid).await?;
        let mib = |key: &str, default: u64| -> String {
            let v = config.get(key).map(|v| int(Some(v))).unwrap_or(default);
            (v * 1024 * 1024).to_string()
        };
        match file {
            "memory.max" | "memory.limit_in_bytes" => Ok(mib("memory", 512)),
            "memory.swap.max" => Ok(mib("swap", 512)),
            other => Err(BackendError::Invalid(format!(
                "the Proxmox VE backend reads only memory limits from a CT's config, not {other:?}"
            ))),
        }
    }

    async fn snapshot_create(&self, name: &str, description: &str, log: &TaskHandle) -> Result<String, BackendError> {
        let vmid = self.vmid(name).await?;
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        // Proxmox snapshot names start with a letter; the agent's own names stay in its registry.
        let snapname = format!("flt{ms}");
        log.log(format!("snapshot {snapname} of CT {vmid}"));
        let params = [("snapname", snapname.clone()), ("description", description.to_string())];
        self.task(reqwest::Method::POST, &self.ct(vmid, "/snapshot"), &params, TASK_WAIT, log).await?;
        Ok(snapname)
    }

    async fn snapshot_rollback(&self, name: &str, backend_name: &str, log: &TaskHandle) -> Result<(), BackendError> {
        let vmid = self.vmid(name).await?;
        log.log(format!("rolling CT {vmid} back to {backend_name}"));
        let path = self.ct(vmid, &format!("/snapshot/{}/rollback", enc(backend_name)));
        self.task(reqwest::Method::POST, &path, &[], TASK_WAIT, log).await
    }

    async fn snapshot_delete(&self, name: &str, backend_name: &str, log: &TaskHandle) -> Result<(), BackendError> {
        let vmid = self.vmid(name).await?;
        log.log(format!("deleting snapshot {backend_name} of CT {vmid}"));
        let path = self.ct(vmid, &format!("/snapshot/{}", enc(backend_name)));
        self.task(reqwest::Method::DELETE, &path, &[], TASK_WAIT, log).await
    }

    async fn usage(&self, name: &str) -> Result<Option<RawUsage>, BackendError> {
        let Ok(vmid) = self.vmid_cached(name).await else { return Ok(None) };
        let status = self.status_current(vmid).await?;
        if status.get("status").and_then(Value::as_str) != Some("running") {
            self.cpu.lock().unwrap_or_else(|p| p.into_inner()).remove(&vmid);
            return Ok(None);
        }
        let pid = int(status.get("pid")) as u32;
        // Busy cores now (cpu is a fraction of cpus), integrated into a counter.
        let busy = number(status.get("cpu")).unwrap_or(0.0) * number(status.get("cpus")).unwrap_or(1.0);
        let now = Instant::now();
        let cpu_ns = {
            let mut cpu = self.cpu.lock().unwrap_or_else(|p| p.into_inner());
            let entry = cpu.entry(vmid).or_insert(CpuIntegral { pid, ns: 0.0, at: now });
            if entry.pid != pid {
                *entry = CpuIntegral { pid, ns: 0.0, at: now };
            }
            entry.ns += busy.max(0.0) * now.saturating_duration_since(entry.at).as_nanos() as f64;
            entry.at = now;
            entry.ns as u64
        };
        let interfaces: Vec<Value> = self.api.get(&self.ct(vmid, "/interfaces"), &[]).await.unwrap_or_default();
        let ipv4 = interfaces
            .iter()
            .filter(|i| i.get("name").and_then(Value::as_str) != Some("lo"))
            .filter_map(|i| i.get("inet").and_then(Value::as_str))
            .map(|inet| inet.split('/').next().unwrap_or(inet).to_string())
            .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok());
        Ok(Some(RawUsage {
            pid,
            cpu_ns,
            mem_used: int(status.get("mem")),
            // Proxmox counts from the guest's side already: netin is what the host sent it.
            host_tx: int(status.get("netin")),
            host_rx: int(status.get("netout")),
            ipv4,
        }))
    }

    async fn disk_used(&self, name: &str) -> Result<u64, BackendError> {
        let vmid = self.vmid_cached(name).await?;
        Ok(int(self.status_current(vmid).await?.get("disk")))
    }

    /// The Proxmox web console (xterm.js) of the CT:
    /// `CONSOLE_URL/?console=lxc&xtermjs=1&vmid=…&vmname=…&node=…`. Proxmox refuses console
    /// websockets to API tokens, so the page needs a user's session: with `console_user` the
    /// URL carries that user's login ticket (`&ticket=…`, valid 2 hours) for the front end to
    /// set as the `PVEAuthCookie`; without, the browser must be logged in to Proxmox.
    async fn grow_disk(&self, name: &str, disk_gb: u64, log: &TaskHandle) -> Result<(), BackendError> {
        ProxmoxBackend::grow_disk(self, name, disk_gb, log).await
    }

    async fn console(&self, name: &str) -> Result<ConsoleEntry, BackendError> {
        let guest = self
            .find(name)
            .await?
            .ok_or_else(|| BackendError::Invalid(format!("no CT named {name} on Proxmox node {}", self.node)))?;
        if parse_state(&guest.status) != ContainerState::Running {
            return Err(BackendError::Invalid(format!("{name} is not running")));
        }
        let base = self.settings.console_url.as_deref().unwrap_or(&self.settings.url).trim_end_matches('/');
        let mut url =
            format!("{base}/?console=lxc&xtermjs=1&vmid={}&vmname={}&node={}", guest.vmid, enc(name), enc(&self.node));
        if let (Some(user), Some(file)) = (&self.settings.console_user, &self.settings.console_password_file) {
            let password = std::fs::read_to_string(file).map_err(|e| BackendError::io(file, e))?;
            let ticket = self.api.login(user, password.trim_end_matches(['\n', '\r'])).await?;
            url.push_str(&format!("&ticket={}", enc(&ticket.ticket)));
        }
        Ok(ConsoleEntry::Url(url))
    }
}
