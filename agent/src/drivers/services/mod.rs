//! systemd services over D-Bus (`org.freedesktop.systemd1`): list the allowed units with their
//! state, main PID, uptime and cgroup CPU/memory, start/stop/restart them (waiting for systemd's
//! job), and watch them for the `failed` state. Which units the API may see and touch is
//! `[services] allow` ([`names`]). Off when the host has no systemd on its system bus.

pub mod cgroup;
pub mod names;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_protocol::rpc::RpcError;
use flotilla_protocol::services::{
    ServiceAction, ServiceActionResult, ServiceFailed, ServiceInfo, ServiceList, ServiceOp, ServiceQuery, ServiceState,
};
use serde::Deserialize;
use tokio::sync::broadcast;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use names::AllowList;

const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";
const JOB: &str = "org.freedesktop.systemd1.Job";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// CPU samples older than this are not used for a percentage (a fresh pair is taken).
const CPU_SAMPLE_MAX_AGE: Duration = Duration::from_secs(60);
/// The pair of CPU readings a list takes when it has no recent sample.
const CPU_SAMPLE_GAP: Duration = Duration::from_millis(250);

/// `[services]` of `agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesSettings {
    /// Serve the services API when the host's systemd answers on the system bus (default
    /// true); false turns the driver off.
    pub enabled: bool,
    /// Which units the API may list and touch: the document's names (`mysql`, `php-fpm`, …)
    /// or unit names (`flt-demo`, `mariadb.service`). Default: [`names::DEFAULT_ALLOW`].
    pub allow: Vec<String>,
    /// How often the allowed units are checked for the `failed` state.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
    /// How long a start/stop/restart waits for systemd's job to end.
    #[serde(with = "humantime_serde")]
    pub job_timeout: Duration,
}

impl Default for ServicesSettings {
    fn default() -> Self {
        ServicesSettings {
            enabled: true,
            allow: names::DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect(),
            watch_interval: Duration::from_secs(5),
            job_timeout: Duration::from_secs(25),
        }
    }
}

impl ServicesSettings {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.watch_interval < Duration::from_millis(200) {
            return Err("watch_interval must be at least 200ms".into());
        }
        if self.job_timeout < Duration::from_secs(1) {
            return Err("job_timeout must be at least 1s".into());
        }
        if let Some(bad) = self.allow.iter().find(|a| !names::valid_stem(names::stem(a.trim()))) {
            return Err(format!("allow: {bad:?} is not a service or unit name"));
        }
        Ok(())
    }
}

/// Why a services call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("no service {0} on this host")]
    NotFound(String),
    #[error("service {0} is not in this agent's [services] allow list")]
    NotAllowed(String),
    #[error("systemd: {0}")]
    Failed(String),
}

impl ServicesError {
    /// As the protocol carries it (see `flotilla_protocol::services`).
    pub fn to_rpc(&self) -> RpcError {
        match self {
            ServicesError::NotFound(_) => RpcError::BadRequest(self.to_string()),
            ServicesError::NotAllowed(_) => RpcError::Refused(self.to_string()),
            ServicesError::Failed(_) => RpcError::Failed(self.to_string()),
        }
    }
}

impl From<zbus::Error> for ServicesError {
    fn from(e: zbus::Error) -> Self {
        ServicesError::Failed(e.to_string())
    }
}

/// One row of `ListUnitsByNames`.
type UnitRow = (String, String, String, String, String, String, OwnedObjectPath, u32, String, OwnedObjectPath);

/// A unit systemd knows (loaded, or at least has a file for).
#[derive(Debug, Clone)]
struct UnitEntry {
    stem: String,
    active_state: String,
    path: OwnedObjectPath,
}

/// The services driver.
pub struct ServicesDriver {
    conn: zbus::Connection,
    allow: AllowList,
    job_timeout: Duration,
    cgroup_root: PathBuf,
    /// Last CPU reading per unit: (usage ns, when).
    cpu: Mutex<HashMap<String, (u64, Instant)>>,
    failed: broadcast::Sender<ServiceFailed>,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for ServicesDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServicesDriver").field("allow", &self.allow).finish()
    }
}

impl ServicesDriver {
    /// Connects to systemd on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` or the standard socket)
    /// and starts the failure watcher. None (with one log line saying why) when services are
    /// off in the config or there is no systemd to talk to.
    pub async fn start(settings: &ServicesSettings) -> Option<Arc<ServicesDriver>> {
        if !settings.enabled {
            tracing::info!("services API off ([services] enabled = false)");
            return None;
        }
        let probe = async {
            let conn = zbus::Connection::system().await?;
            let version: String = get_property(&conn, MANAGER_PATH, MANAGER, "Version").await?;
            Ok::<_, zbus::Error>((conn, version))
        };
        let (conn, version) = match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(Ok(ok)) => ok,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "services API off: no systemd on the D-Bus system bus");
                return None;
            }
            Err(_) => {
                tracing::info!("services API off: the D-Bus system bus did not answer within 5 s");
                return None;
            }
        };
        let allow = AllowList::new(&settings.allow);
        tracing::info!(systemd = %version, allow = ?allow.entries(), "services API on (systemd over D-Bus)");
        let driver = Arc::new(ServicesDriver {
            conn,
            allow,
            job_timeout: settings.job_timeout,
            cgroup_root: PathBuf::from(cgroup::ROOT),
            cpu: Mutex::new(HashMap::new()),
            failed: broadcast::channel(64).0,
            watcher: Mutex::new(None),
        });
        let watcher = tokio::spawn(watch(Arc::downgrade(&driver), settings.watch_interval));
        *driver.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(watcher);
        Some(driver)
    }

    /// Stops the failure watcher.
    pub fn stop(&self) {
        if let Some(w) = self.watcher.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.abort();
        }
    }

    /// `SERVICE_FAILED` events from now on.
    pub fn failures(&self) -> broadcast::Receiver<ServiceFailed> {
        self.failed.subscribe()
    }

    /// Every allowed service installed here (or the one `query` names).
    pub async fn list(&self, query: &ServiceQuery) -> Result<ServiceList, ServicesError> {
        let targets = match &query.name {
            Some(name) => {
                let (api_name, unit) = self.resolve(name).await?;
                vec![(api_name, unit)]
            }
            None => self.allowed_units().await?.into_iter().map(|(n, u)| (n, u.stem)).collect(),
        };
        let mut infos = Vec::new();
        for (api_name, stem) in &targets {
            match self.info(api_name, stem).await {
                Ok(info) => infos.push(info),
                Err(e) => tracing::debug!(unit = %stem, error = %e, "service vanished while listing"),
            }
        }
        self.fill_cpu(&mut infos).await;
        Ok(ServiceList { services: infos })
    }

    /// Starts, stops or restarts a service and waits (bounded) for systemd's job to end.
    pub async fn action(&self, action: &ServiceAction) -> Result<ServiceActionResult, ServicesError> {
        let (api_name, stem) = self.resolve(&action.name).await?;
        let unit = format!("{stem}.service");
        let method = match action.action {
            ServiceOp::Start => "StartUnit",
            ServiceOp::Stop => "StopUnit",
            ServiceOp::Restart => "RestartUnit",
        };
        tracing::info!(%unit, action = action.action.as_str(), "service action");
        let reply =
            self.conn.call_method(Some(DEST), MANAGER_PATH, Some(MANAGER), method, &(unit.as_str(), "replace")).await?;
        let job: OwnedObjectPath = reply.body().deserialize()?;
        let started = Instant::now();
        let mut finished = false;
        while started.elapsed() < self.job_timeout {
            let alive: Result<String, zbus::Error> = get_property(&self.conn, job.as_str(), JOB, "State").await;
            if alive.is_err() {
                finished = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut list = [self.info(&api_name, &stem).await?];
        self.fill_cpu(&mut list).await;
        let [info] = list;
        let job_result = if !finished {
            "pending"
        } else if info.state == ServiceState::Failed {
            "failed"
        } else {
            "done"
        };
        Ok(ServiceActionResult { job_result: job_result.into(), service: info })
    }

    /// The API name and unit stem of `name`: NotFound when no such unit exists, NotAllowed
    /// when the allow-list leaves it out.
    async fn resolve(&self, name: &str) -> Result<(String, String), ServicesError> {
        let stem = names::stem(name.trim());
        if !names::valid_stem(stem) {
            return Err(ServicesError::NotFound(name.to_string()));
        }
        let candidates = names::candidates(stem);
        let (plain, patterns): (Vec<String>, Vec<String>) = candidates.iter().cloned().partition(|c| !c.contains('*'));
        let installed = self.installed(&plain, &patterns).await?;
        let stems: Vec<String> = installed.iter().map(|u| u.stem.clone()).collect();
        let unit = names::pick(&candidates, &stems).ok_or_else(|| ServicesError::NotFound(name.to_string()))?;
        let api_name = self.allow.api_name(&unit).ok_or_else(|| ServicesError::NotAllowed(name.to_string()))?;
        Ok((api_name.to_string(), unit))
    }

    /// The allowed units that exist here, each with the API name of its allow-list entry.
    async fn allowed_units(&self) -> Result<Vec<(String, UnitEntry)>, ServicesError> {
        let (plain, patterns) = self.allow.all_candidates();
        let installed = self.installed(&plain, &patterns).await?;
        let stems: Vec<String> = installed.iter().map(|u| u.stem.clone()).collect();
        let mut out: Vec<(String, UnitEntry)> = Vec::new();
        for entry in self.allow.entries() {
            let Some(unit) = names::pick(&names::candidates(entry), &stems) else { continue };
            if out.iter().any(|(_, u)| u.stem == unit) {
                continue;
            }
            if let Some(found) = installed.iter().find(|u| u.stem == unit) {
                out.push((entry.clone(), found.clone()));
            }
        }
        Ok(out)
    }

    /// Which of `plain` units (and units matching `patterns`) systemd has.
    async fn installed(&self, plain: &[String], patterns: &[String]) -> Result<Vec<UnitEntry>, ServicesError> {
        let mut names: Vec<String> = plain.iter().map(|p| format!("{p}.service")).collect();
        if !patterns.is_empty() {
            let globs: Vec<String> = patterns.iter().map(|p| format!("{p}.service")).collect();
            let reply = self
                .conn
                .call_method(
                    Some(DEST),
                    MANAGER_PATH,
                    Some(MANAGER),
                    "ListUnitFilesByPatterns",
                    &(Vec::<String>::new(), globs),
                )
                .await?;
            let files: Vec<(String, String)> = reply.body().deserialize()?;
            for (path, _state) in files {
                if let Some(file) = path.rsplit('/').next() {
                    if file.ends_with(".service") && !file.contains('@') && !names.iter().any(|n| n == file) {
                        names.push(file.to_string());
                    }
                }
            }
        }
        if names.is_empty() {
            return Ok(vec![]);
        }
        let reply =
            self.conn.call_method(Some(DEST), MANAGER_PATH, Some(MANAGER), "ListUnitsByNames", &(names,)).await?;
        let rows: Vec<UnitRow> = reply.body().deserialize()?;
        Ok(rows
            .into_iter()
            .filter(|r| r.2 != "not-found")
            .map(|r| UnitEntry { stem: names::stem(&r.0).to_string(), active_state: r.3, path: r.6 })
            .collect())
    }

    /// One unit's details (CPU left for [`Self::fill_cpu`]).
    async fn info(&self, api_name: &str, stem: &str) -> Result<ServiceInfo, ServicesError> {
        let unit = format!("{stem}.service");
        let reply =
            self.conn.call_method(Some(DEST), MANAGER_PATH, Some(MANAGER), "LoadUnit", &(unit.as_str(),)).await?;
        let path: OwnedObjectPath = reply.body().deserialize()?;
        let u = get_all(&self.conn, path.as_str(), UNIT).await?;
        let s = get_all(&self.conn, path.as_str(), SERVICE).await.unwrap_or_default();
        if prop_str(&u, "LoadState") == "not-found" {
            return Err(ServicesError::NotFound(stem.to_string()));
        }
        let state = ServiceState::parse(&prop_str(&u, "ActiveState"));
        let pid = prop_u32(&s, "MainPID").filter(|p| *p != 0);
        let entered_us = prop_u64(&u, "ActiveEnterTimestamp").unwrap_or(0);
        let uptime_s = match state {
            ServiceState::Active | ServiceState::Reloading if entered_us > 0 => {
                let now_us = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
                Some(((now_us - entered_us as i128).max(0) / 1_000_000) as u64)
            }
            _ => None,
        };
        let cgroup = prop_str(&s, "ControlGroup");
        let memory_bytes = if cgroup.is_empty() {
            None
        } else {
            cgroup::memory_bytes(&self.cgroup_root, &cgroup)
                .or_else(|| prop_u64(&s, "MemoryCurrent").filter(|m| *m != u64::MAX))
        };
        let unit_file_state = prop_str(&u, "UnitFileState");
        let description = prop_str(&u, "Description");
        Ok(ServiceInfo {
            name: api_name.to_string(),
            unit,
            display_name: if description.is_empty() { stem.to_string() } else { description },
            state,
            sub_state: prop_str(&u, "SubState"),
            pid,
            uptime_s,
            cpu_percent: None,
            memory_bytes,
            enabled: matches!(unit_file_state.as_str(), "enabled" | "enabled-runtime"),
            unit_file_state,
        })
    }

    /// CPU percentages: against the unit's previous reading when it is recent, else over a
    /// short gap measured now (one gap for all units).
    async fn fill_cpu(&self, infos: &mut [ServiceInfo]) {
        let mut cgroups = Vec::new();
        for info in infos.iter() {
            let cg = if info.pid.is_some() || matches!(info.state, ServiceState::Active | ServiceState::Reloading) {
                self.control_group(&info.unit).await
            } else {
                None
            };
            cgroups.push(cg);
        }
        let read = |cg: &Option<String>| cg.as_deref().and_then(|cg| cgroup::cpu_usage_ns(&self.cgroup_root, cg));
        let now = Instant::now();
        let mut first: Vec<Option<u64>> = cgroups.iter().map(read).collect();
        let mut need_gap = false;
        {
            let mut cpu = self.cpu.lock().unwrap_or_else(|p| p.into_inner());
            for (info, usage) in infos.iter_mut().zip(&first) {
                let Some(usage) = usage else { continue };
                match cpu.get(&info.unit) {
                    Some((before, at))
                        if now.duration_since(*at) >= Duration::from_millis(100)
                            && now.duration_since(*at) <= CPU_SAMPLE_MAX_AGE =>
                    {
                        info.cpu_percent = cgroup::percent(*before, *usage, now.duration_since(*at).as_nanos() as u64);
                    }
                    _ => need_gap = true,
                }
                if info.cpu_percent.is_some() {
                    cpu.insert(info.unit.clone(), (*usage, now));
                }
            }
        }
        if need_gap {
            tokio::time::sleep(CPU_SAMPLE_GAP).await;
            let later = Instant::now();
            let second: Vec<Option<u64>> = cgroups.iter().map(read).collect();
            let mut cpu = self.cpu.lock().unwrap_or_else(|p| p.into_inner());
            for ((info, before), after) in infos.iter_mut().zip(first.iter_mut()).zip(second) {
                if info.cpu_percent.is_some() {
                    continue;
                }
                if let (Some(b), Some(a)) = (before, after) {
                    info.cpu_percent = cgroup::percent(*b, a, later.duration_since(now).as_nanos() as u64);
                    cpu.insert(info.unit.clone(), (a, later));
                }
            }
        }
    }

    async fn control_group(&self, unit: &str) -> Option<String> {
        let reply = self.conn.call_method(Some(DEST), MANAGER_PATH, Some(MANAGER), "LoadUnit", &(unit,)).await.ok()?;
        let path: OwnedObjectPath = reply.body().deserialize().ok()?;
        let cg: String = get_property(&self.conn, path.as_str(), SERVICE, "ControlGroup").await.ok()?;
        (!cg.is_empty()).then_some(cg)
    }

    /// Why a unit failed, in systemd's words.
    async fn failure_message(&self, path: &str) -> String {
        let s = get_all(&self.conn, path, SERVICE).await.unwrap_or_default();
        let result = prop_str(&s, "Result");
        let code = prop_i32(&s, "ExecMainCode").unwrap_or(0);
        let status = prop_i32(&s, "ExecMainStatus").unwrap_or(0);
        // ExecMainCode is a CLD_* code: 1 exited, 2 killed, 3 dumped.
        let main = match code {
            1 => format!(", main process exited with status {status}"),
            2 | 3 => format!(", main process killed by signal {status}"),
            _ => String::new(),
        };
        format!("entered the failed state (Result: {}{main})", if result.is_empty() { "unknown" } else { &result })
    }
}

/// Polls the allowed units; announces each transition into `failed` once. Units present at the
/// first poll set the baseline (a unit already failed then was failed before this agent looked).
async fn watch(driver: std::sync::Weak<ServicesDriver>, interval: Duration) {
    let mut last: HashMap<String, String> = HashMap::new();
    let mut first = true;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(driver) = driver.upgrade() else { return };
        let units = match driver.allowed_units().await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "service watch: cannot list units");
                continue;
            }
        };
        for (_, unit) in units {
            let name = format!("{}.service", unit.stem);
            let before = last.insert(name.clone(), unit.active_state.clone());
            let entered = unit.active_state == "failed" && before.as_deref() != Some("failed");
            if entered && !(first && before.is_none()) {
                let message = driver.failure_message(unit.path.as_str()).await;
                tracing::warn!(unit = %name, %message, "service failed");
                let _ = driver.failed.send(ServiceFailed { unit: name, message });
            }
        }
        first = false;
    }
}

async fn get_property<T>(conn: &zbus::Connection, path: &str, interface: &str, name: &str) -> Result<T, zbus::Error>
where
    T: TryFrom<OwnedValue>,
    <T as TryFrom<OwnedValue>>::Error: Into<zbus::Error>,
{
    let reply = conn.call_method(Some(DEST), path, Some(PROPERTIES), "Get", &(interface, name)).await?;
    let value: OwnedValue = reply.body().deserialize()?;
    T::try_from(value).map_err(Into::into)
}

async fn get_all(
    conn: &zbus::Connection,
    path: &str,
    interface: &str,
) -> Result<HashMap<String, OwnedValue>, zbus::Error> {
    let reply = conn.call_method(Some(DEST), path, Some(PROPERTIES), "GetAll", &(interface,)).await?;
    reply.body().deserialize()
}

fn prop_str(map: &HashMap<String, OwnedValue>, key: &str) -> String {
    map.get(key).and_then(|v| v.try_clone().ok()).and_then(|v| String::try_from(v).ok()).unwrap_or_default()
}

fn prop_u64(map: &HashMap<String, OwnedValue>, key: &str) -> Option<u64> {
    map.get(key).and_then(|v| v.try_clone().ok()).and_then(|v| u64::try_from(v).ok())
}

fn prop_u32(map: &HashMap<String, OwnedValue>, key: &str) -> Option<u32> {
    map.get(key).and_then(|v| v.try_clone().ok()).and_then(|v| u32::try_from(v).ok())
}

fn prop_i32(map: &HashMap<String, OwnedValue>, key: &str) -> Option<i32> {
    map.get(key).and_then(|v| v.try_clone().ok()).and_then(|v| i32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_validate() {
        let s = ServicesSettings::default();
        assert!(s.enabled && s.allow.iter().any(|a| a == "mysql"));
        s.validate().unwrap();
        let bad = ServicesSettings { allow: vec!["../x".into()], ..ServicesSettings::default() };
        assert!(bad.validate().unwrap_err().contains("../x"));
        let fast = ServicesSettings { watch_interval: Duration::from_millis(1), ..ServicesSettings::default() };
        assert!(fast.validate().is_err());
    }

    #[test]
    fn errors_map_to_the_protocols_kinds() {
        assert!(matches!(ServicesError::NotFound("x".into()).to_rpc(), RpcError::BadRequest(_)));
        assert!(matches!(ServicesError::NotAllowed("x".into()).to_rpc(), RpcError::Refused(_)));
        assert!(matches!(ServicesError::Failed("x".into()).to_rpc(), RpcError::Failed(_)));
    }

    #[tokio::test]
    async fn no_system_bus_means_off() {
        let settings = ServicesSettings { enabled: false, ..ServicesSettings::default() };
        assert!(ServicesDriver::start(&settings).await.is_none());
    }
}
