//! Self-upgrade of an agent installed from the `flotilla-agent` Debian package (the agent side of
//! the controller's rolling upgrades).
//!
//! 1. `UPGRADE_AGENT` ([`SelfUpgrade::start`]): the agent downloads the target and the rollback
//!    package from the controller, checks them, writes `pending.json` and starts
//!    `flotilla-agent apply-upgrade` in a transient systemd unit.
//! 2. The installer ([`installer::apply_upgrade`]) runs `dpkg -i`; dpkg's postinst restarts the
//!    agent, now the new binary.
//! 3. The new agent, once the controller welcomes it, writes the `healthy` marker
//!    ([`SelfUpgrade::on_welcome`]). Without it in time, the installer reinstalls the rollback
//!    package and restarts the agent.
//! 4. Every session starts with an `AGENT_RELEASE` ([`SelfUpgrade::release`]): the installed
//!    version, the upgrade in progress, and how the last one ended.

pub mod commands;
pub mod download;
pub mod dpkg;
pub mod files;
pub mod installer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flotilla_protocol::rpc::RpcError;
use flotilla_protocol::upgrade::{AgentRelease, AgentUpgrade, RolloutId, UpgradeStarted};

use commands::{CommandRunner, SystemRunner};
use files::{PendingUpgrade, StateFileError, UpgradeDir};

/// The Debian package the agent ships in.
pub const AGENT_PACKAGE: &str = "flotilla-agent";

/// The agent's systemd unit, restarted by dpkg's postinst and after a rollback.
pub const AGENT_SERVICE: &str = "flotilla-agent.service";

/// Exists when systemd is the init system (what `sd_booted()` checks).
pub const SYSTEMD_RUNTIME_DIR: &str = "/run/systemd/system";

/// Why an upgrade cannot start, or the installer cannot run.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("this agent does not run from the flotilla-agent package")]
    NotPackaged,
    #[error("systemd is not running on this host")]
    NoSystemd,
    #[error("systemd-run is not installed on this host")]
    NoSystemdRun,
    #[error("cannot find the agent's own executable: {0}")]
    NoExecutable(String),
    #[error("flotilla-agent {0} is already installed")]
    AlreadyInstalled(String),
    #[error("the rollback package is flotilla-agent {rollback}, but {installed} is installed")]
    WrongRollback { rollback: String, installed: String },
    #[error("the upgrade of rollout {rollout} is still running ({unit})")]
    InProgress { rollout: RolloutId, unit: String },
    #[error("cannot download flotilla-agent {version}: {reason}")]
    Download { version: String, reason: String },
    #[error("the downloaded flotilla-agent {version} does not have the SHA-256 the controller named")]
    Corrupt { version: String },
    #[error("systemd-run could not start the installer: {0}")]
    Launch(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    #[error("no upgrade to apply ({} is missing)", .0.display())]
    NothingPending(PathBuf),
}

impl UpgradeError {
    /// The answer to `UPGRADE_AGENT`: refusals for what the controller asked at the wrong host or
    /// time (nothing happened), failures for what went wrong on the way.
    pub fn to_rpc(&self) -> RpcError {
        match self {
            UpgradeError::NotPackaged
            | UpgradeError::NoSystemd
            | UpgradeError::NoSystemdRun
            | UpgradeError::NoExecutable(_)
            | UpgradeError::AlreadyInstalled(_)
            | UpgradeError::WrongRollback { .. }
            | UpgradeError::InProgress { .. }
            | UpgradeError::Launch(_) => RpcError::Refused(self.to_string()),
            _ => RpcError::Failed(self.to_string()),
        }
    }

    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UpgradeError {
        let what = what.into();
        move |source| UpgradeError::Io { what, source }
    }
}

/// What the host offers a self-upgrade, found once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSupport {
    /// Version of the installed `flotilla-agent` package (None: not installed from it).
    pub package_version: Option<String>,
    /// systemd is the init system.
    pub systemd: bool,
    /// `systemd-run` is on `PATH`.
    pub systemd_run: bool,
    /// This process's executable, which also runs the installer.
    pub executable: Result<PathBuf, String>,
}

impl HostSupport {
    /// Looks at this host: dpkg's database, systemd, `PATH`, the running executable.
    pub fn probe() -> HostSupport {
        HostSupport::probe_at(Path::new(dpkg::DPKG_ADMIN_DIR), Path::new(SYSTEMD_RUNTIME_DIR))
    }

    /// [`HostSupport::probe`] with another dpkg database and systemd runtime directory.
    pub fn probe_at(dpkg_admin_dir: &Path, systemd_runtime_dir: &Path) -> HostSupport {
        HostSupport {
            package_version: dpkg::installed_version(dpkg_admin_dir, AGENT_PACKAGE),
            systemd: systemd_runtime_dir.is_dir(),
            systemd_run: commands::on_path("systemd-run"),
            executable: current_executable(),
        }
    }

    /// Why this host cannot upgrade itself, if it cannot.
    fn unsupported(&self) -> Option<UpgradeError> {
        if self.package_version.is_none() {
            Some(UpgradeError::NotPackaged)
        } else if !self.systemd {
            Some(UpgradeError::NoSystemd)
        } else if !self.systemd_run {
            Some(UpgradeError::NoSystemdRun)
        } else {
            self.executable.as_ref().err().map(|e| UpgradeError::NoExecutable(e.clone()))
        }
    }
}

/// The running executable's path. After the file was replaced on disk (a package upgrade not
/// yet followed by a restart), Linux names it "PATH (deleted)"; the path is what is wanted.
fn current_executable() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(path) => Ok(PathBuf::from(path)),
        None => Ok(exe),
    }
}

/// The agent's side of self-upgrades.
pub struct SelfUpgrade {
    data_dir: PathBuf,
    dir: UpgradeDir,
    host: HostSupport,
    runner: Arc<dyn CommandRunner>,
    /// One `UPGRADE_AGENT` at a time: a second one waits, then finds the first one's installer.
    starting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SelfUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfUpgrade").field("data_dir", &self.data_dir).field("host", &self.host).finish()
    }
}

impl SelfUpgrade {
    /// Self-upgrade for the agent whose state is in `data_dir`, on this host.
    pub fn probe(data_dir: &Path) -> SelfUpgrade {
        SelfUpgrade::new(data_dir, HostSupport::probe(), Arc::new(SystemRunner))
    }

    /// Self-upgrade with the host's facts and commands given (tests, simulations).
    pub fn new(data_dir: &Path, host: HostSupport, runner: Arc<dyn CommandRunner>) -> SelfUpgrade {
        // The installer runs with `/` as its working directory.
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        let dir = UpgradeDir::new(&data_dir);
        SelfUpgrade { data_dir, dir, host, runner, starting: tokio::sync::Mutex::new(()) }
    }

    /// Whether this agent can upgrade itself: it runs from the package, under systemd.
    pub fn supported(&self) -> bool {
        self.host.unsupported().is_none()
    }

    /// The installed package's version, as read when the agent started.
    pub fn package_version(&self) -> Option<&str> {
        self.host.package_version.as_deref()
    }

    /// The upgrade directory.
    pub fn dir(&self) -> &UpgradeDir {
        &self.dir
    }

    /// This session's `AGENT_RELEASE` (blocking: reads files, may ask systemctl). A pending
    /// upgrade whose installer is gone (host rebooted mid-upgrade) is dropped, not reported.
    pub fn release(&self) -> AgentRelease {
        let upgrading = self.live_pending().map(|p| p.upgrade.rollout);
        let last_upgrade = self.dir.read_outcome().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring an unreadable upgrade outcome");
            None
        });
        AgentRelease { package_version: self.host.package_version.clone(), upgrading, last_upgrade }
    }

    /// Called when the controller welcomed this agent (blocking): if this process is the
    /// upgrade's target version, tells the installer so by writing the `healthy` marker. The old
    /// agent never does: its version is the old one. Returns whether the marker was written.
    pub fn on_welcome(&self) -> bool {
        let pending = match self.dir.read_pending() {
            Ok(Some(p)) => p,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the pending upgrade");
                return false;
            }
        };
        if self.host.package_version.as_deref() != Some(pending.upgrade.target.version.as_str()) {
            return false;
        }
        match self.dir.mark_healthy() {
            Ok(()) => {
                tracing::info!(rollout = %pending.upgrade.rollout, version = %pending.upgrade.target.version, "upgraded agent welcomed by the controller");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the healthy marker; the installer will roll back");
                false
            }
        }
    }

    /// Whether `pending.json` exists (cheap; for watching the installer finish).
    pub fn upgrade_pending(&self) -> bool {
        self.dir.has_pending()
    }

    /// Answers `UPGRADE_AGENT`: checks the request, downloads and checks both packages over
    /// `conn`, and starts the installer in a transient systemd unit.
    pub async fn start(
        self: &Arc<Self>,
        req: AgentUpgrade,
        conn: &quinn::Connection,
    ) -> Result<UpgradeStarted, UpgradeError> {
        let _one_at_a_time = self.starting.lock().await;
        let this = self.clone();
        let admit = req.clone();
        let from_version = blocking(move || this.admit(&admit)).await?;
        tracing::info!(rollout = %req.rollout, from = %from_version, to = %req.target.version, "agent upgrade requested; downloading");
        self.dir.create().map_err(UpgradeError::io(format!("create {}", self.dir.path().display())))?;
        let downloaded = async {
            download::fetch_package(conn, &req.target, &self.dir.package_path(&req.target.sha256)).await?;
            download::fetch_package(conn, &req.rollback, &self.dir.package_path(&req.rollback.sha256)).await
        }
        .await;
        if let Err(e) = downloaded {
            let _ = self.dir.remove_packages(&req);
            return Err(e);
        }
        let this = self.clone();
        blocking(move || this.launch(req, from_version)).await
    }

    /// Whether `req` can start now; returns the installed version it upgrades from.
    fn admit(&self, req: &AgentUpgrade) -> Result<String, UpgradeError> {
        if let Some(why) = self.host.unsupported() {
            return Err(why);
        }
        let installed = self.host.package_version.clone().unwrap_or_default();
        if req.target.version == installed {
            return Err(UpgradeError::AlreadyInstalled(installed));
        }
        if req.rollback.version != installed {
            return Err(UpgradeError::WrongRollback { rollback: req.rollback.version.clone(), installed });
        }
        if let Some(pending) = self.live_pending() {
            return Err(UpgradeError::InProgress { rollout: pending.upgrade.rollout, unit: pending.unit });
        }
        Ok(installed)
    }

    /// The pending upgrade whose installer still runs. A stale `pending.json` (its unit is gone:
    /// the host rebooted, the installer was killed) is removed, so it blocks nothing.
    fn live_pending(&self) -> Option<PendingUpgrade> {
        let pending = match self.dir.read_pending() {
            Ok(p) => p?,
            Err(e) => {
                tracing::warn!(error = %e, "removing an unreadable pending upgrade");
                let _ = self.dir.remove_pending();
                return None;
            }
        };
        let state = self.runner.run("systemctl", &["is-active", &pending.unit]);
        let state = state.output.trim();
        if matches!(state, "active" | "activating" | "deactivating" | "reloading" | "refreshing") {
            return Some(pending);
        }
        tracing::warn!(rollout = %pending.upgrade.rollout, unit = %pending.unit, state, "the installer of a pending upgrade is gone; forgetting it");
        let _ = self.dir.remove_pending();
        let _ = self.dir.remove_packages(&pending.upgrade);
        None
    }

    /// Writes `pending.json` and starts the installer (blocking).
    fn launch(&self, req: AgentUpgrade, from_version: String) -> Result<UpgradeStarted, UpgradeError> {
        let exe = self.host.executable.clone().map_err(UpgradeError::NoExecutable)?;
        let unit = format!("flotilla-agent-upgrade-{}.service", req.rollout);
        // A marker left from an earlier upgrade must not pass this one's health check.
        self.dir.clear_healthy().map_err(UpgradeError::io("remove the old healthy marker"))?;
        let pending = PendingUpgrade {
            upgrade: req,
            from_version: from_version.clone(),
            unit: unit.clone(),
            started_at_ms: unix_ms(),
        };
        self.dir
            .write_pending(&pending)
            .map_err(UpgradeError::io(format!("write {}", self.dir.pending_path().display())))?;
        let unit_arg = format!("--unit={unit}");
        let description = format!("--description=Flotilla agent upgrade to {}", pending.upgrade.target.version);
        let (exe, data_dir) = (exe.to_string_lossy(), self.data_dir.to_string_lossy());
        // Started by PID 1: outside the agent's sandbox and cgroup, so it outlives the restart.
        let args =
            [&unit_arg, "--collect", "--quiet", &description, "--", &exe, "--data-dir", &data_dir, "apply-upgrade"];
        let started = self.runner.run("systemd-run", &args);
        if !started.success {
            let _ = self.dir.remove_pending();
            let _ = self.dir.remove_packages(&pending.upgrade);
            return Err(UpgradeError::Launch(started.output.trim().to_owned()));
        }
        tracing::info!(%unit, to = %pending.upgrade.target.version, "installer started");
        Ok(UpgradeStarted { from_version, unit })
    }
}

/// Runs blocking work (files, systemctl) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, UpgradeError> + Send + 'static,
) -> Result<T, UpgradeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| UpgradeError::Io { what: "upgrade task".into(), source: std::io::Error::other(e.to_string()) })?
}

/// Now, in Unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The upgrade the module's tests use: 0.1.0-1 → 0.2.0-1, rollout 7, 300 ms to come back.
#[cfg(test)]
pub(crate) fn sample_upgrade() -> AgentUpgrade {
    use flotilla_protocol::upgrade::PackageRef;
    AgentUpgrade {
        rollout: RolloutId(7),
        target: PackageRef { version: "0.2.0-1".into(), sha256: [0xaa; 32], size: 3 },
        rollback: PackageRef { version: "0.1.0-1".into(), sha256: [0xbb; 32], size: 3 },
        health_timeout_ms: 300,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::commands::CommandOutput;
    use super::*;
    use flotilla_protocol::upgrade::{UpgradeOutcome, UpgradeResult};

    /// systemctl says `unit_state` for every unit; systemd-run succeeds or not.
    struct FakeSystemd {
        unit_state: &'static str,
        launches: bool,
        calls: Mutex<Vec<String>>,
    }

    impl CommandRunner for FakeSystemd {
        fn run(&self, program: &str, args: &[&str]) -> CommandOutput {
            self.calls.lock().unwrap().push(format!("{program} {}", args.join(" ")));
            match program {
                "systemctl" => CommandOutput { success: self.unit_state == "active", output: self.unit_state.into() },
                "systemd-run" if self.launches => CommandOutput { success: true, output: String::new() },
                _ => CommandOutput {
                    success: false,
                    output: "Failed to start transient service unit: Access denied\n".into(),
                },
            }
        }
    }

    fn host(version: Option<&str>) -> HostSupport {
        HostSupport {
            package_version: version.map(str::to_owned),
            systemd: true,
            systemd_run: true,
            executable: Ok(PathBuf::from("/usr/bin/flotilla-agent")),
        }
    }

    fn agent(
        data: &Path,
        version: Option<&str>,
        unit_state: &'static str,
        launches: bool,
    ) -> (Arc<SelfUpgrade>, Arc<FakeSystemd>) {
        let fake = Arc::new(FakeSystemd { unit_state, launches, calls: Mutex::new(vec![]) });
        (Arc::new(SelfUpgrade::new(data, host(version), fake.clone())), fake)
    }

    fn pending(unit: &str) -> PendingUpgrade {
        PendingUpgrade {
            upgrade: sample_upgrade(),
            from_version: "0.1.0-1".into(),
            unit: unit.into(),
            started_at_ms: 1,
        }
    }

    #[test]
    fn support_needs_the_package_and_systemd() {
        let data = tempfile::tempdir().unwrap();
        let (old, _) = agent(data.path(), Some("0.1.0-1"), "inactive", true);
        assert!(old.supported());
        let (dev, _) = agent(data.path(), None, "inactive", true);
        assert!(!dev.supported());
        let refused = dev.admit(&sample_upgrade()).unwrap_err();
        assert_eq!(
            refused.to_rpc(),
            RpcError::Refused("this agent does not run from the flotilla-agent package".into())
        );
        let no_systemd = SelfUpgrade::new(
            data.path(),
            HostSupport { systemd: false, ..host(Some("0.1.0-1")) },
            Arc::new(SystemRunner),
        );
        assert!(!no_systemd.supported());
        assert_eq!(no_systemd.admit(&sample_upgrade()).unwrap_err().to_string(), "systemd is not running on this host");

        let missing = tempfile::tempdir().unwrap();
        let probed = HostSupport::probe_at(&missing.path().join("dpkg"), &missing.path().join("systemd"));
        assert_eq!((probed.package_version, probed.systemd), (None, false));
    }

    #[test]
    fn requests_are_checked_against_what_is_installed() {
        let data = tempfile::tempdir().unwrap();
        let (new, _) = agent(data.path(), Some("0.2.0-1"), "inactive", true);
        assert!(matches!(new.admit(&sample_upgrade()), Err(UpgradeError::AlreadyInstalled(v)) if v == "0.2.0-1"));
        let (other, _) = agent(data.path(), Some("0.0.9-1"), "inactive", true);
        assert_eq!(
            other.admit(&sample_upgrade()).unwrap_err().to_string(),
            "the rollback package is flotilla-agent 0.1.0-1, but 0.0.9-1 is installed"
        );
        let (old, _) = agent(data.path(), Some("0.1.0-1"), "inactive", true);
        assert_eq!(old.admit(&sample_upgrade()).unwrap(), "0.1.0-1");
    }

    #[test]
    fn a_running_installer_blocks_a_second_upgrade_and_a_stale_one_does_not() {
        let data = tempfile::tempdir().unwrap();
        let (busy, fake) = agent(data.path(), Some("0.1.0-1"), "active", true);
        busy.dir.write_pending(&pending("flotilla-agent-upgrade-6.service")).unwrap();
        let refused = busy.admit(&sample_upgrade()).unwrap_err();
        assert_eq!(refused.to_string(), "the upgrade of rollout 7 is still running (flotilla-agent-upgrade-6.service)");
        assert!(matches!(refused.to_rpc(), RpcError::Refused(_)));
        assert_eq!(*fake.calls.lock().unwrap(), ["systemctl is-active flotilla-agent-upgrade-6.service"]);
        assert_eq!(busy.release().upgrading, Some(RolloutId(7)));

        let (after_reboot, _) = agent(data.path(), Some("0.1.0-1"), "inactive", true);
        assert_eq!(after_reboot.admit(&sample_upgrade()).unwrap(), "0.1.0-1");
        assert!(!after_reboot.upgrade_pending(), "the stale pending.json is removed");
    }

    #[test]
    fn launch_writes_pending_and_starts_the_installer_unit() {
        let data = tempfile::tempdir().unwrap();
        let (old, fake) = agent(data.path(), Some("0.1.0-1"), "inactive", true);
        old.dir.mark_healthy().unwrap();
        let started = old.launch(sample_upgrade(), "0.1.0-1".into()).unwrap();
        assert_eq!(
            started,
            UpgradeStarted { from_version: "0.1.0-1".into(), unit: "flotilla-agent-upgrade-7.service".into() }
        );
        assert!(!old.dir.is_healthy(), "an old marker cannot pass the new upgrade");
        let written = old.dir.read_pending().unwrap().unwrap();
        assert_eq!((written.upgrade, written.unit), (sample_upgrade(), started.unit));
        let data_dir = data.path().display();
        assert_eq!(
            *fake.calls.lock().unwrap(),
            [format!(
                "systemd-run --unit=flotilla-agent-upgrade-7.service --collect --quiet \
                 --description=Flotilla agent upgrade to 0.2.0-1 -- /usr/bin/flotilla-agent --data-dir {data_dir} apply-upgrade"
            )]
        );
    }

    #[tokio::test]
    async fn start_downloads_both_packages_then_launches() {
        use flotilla_protocol::upgrade::PackageRef;
        use sha2::{Digest, Sha256};
        let package = |version: &str, bytes: &[u8]| PackageRef {
            version: version.into(),
            sha256: Sha256::digest(bytes).into(),
            size: bytes.len() as u64,
        };
        let req = AgentUpgrade {
            target: package("0.2.0-1", b"new agent"),
            rollback: package("0.1.0-1", b"old agent"),
            ..sample_upgrade()
        };
        let (_controller, conn) = download::tests::controller_serving(vec![
            (b"new agent".to_vec(), req.target.sha256),
            (b"old agent".to_vec(), req.rollback.sha256),
        ])
        .await;
        let data = tempfile::tempdir().unwrap();
        let (old, fake) = agent(data.path(), Some("0.1.0-1"), "inactive", true);

        let started = old.start(req.clone(), &conn).await.unwrap();
        assert_eq!(started.unit, "flotilla-agent-upgrade-7.service");
        assert_eq!(std::fs::read(old.dir.package_path(&req.target.sha256)).unwrap(), b"new agent");
        assert_eq!(std::fs::read(old.dir.package_path(&req.rollback.sha256)).unwrap(), b"old agent");
        assert_eq!(old.dir.read_pending().unwrap().unwrap().upgrade, req);
        assert!(fake.calls.lock().unwrap().last().unwrap().starts_with("systemd-run "));

        // A rollback package the controller does not have: nothing is left behind.
        let data = tempfile::tempdir().unwrap();
        let (old, _) = agent(data.path(), Some("0.1.0-1"), "inactive", true);
        let unknown = AgentUpgrade { rollback: package("0.1.0-1", b"lost"), ..req };
        let e = old.start(unknown, &conn).await.unwrap_err();
        assert!(matches!(e.to_rpc(), RpcError::Failed(m) if m.contains("unknown package")));
        assert!(!old.upgrade_pending());
        assert_eq!(std::fs::read_dir(old.dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_failed_launch_leaves_nothing_pending() {
        let data = tempfile::tempdir().unwrap();
        let (old, _) = agent(data.path(), Some("0.1.0-1"), "inactive", false);
        let refused = old.launch(sample_upgrade(), "0.1.0-1".into()).unwrap_err();
        assert_eq!(
            refused.to_rpc(),
            RpcError::Refused(
                "systemd-run could not start the installer: Failed to start transient service unit: Access denied"
                    .into()
            )
        );
        assert!(!old.upgrade_pending());
    }

    #[test]
    fn only_the_target_version_marks_itself_healthy() {
        let data = tempfile::tempdir().unwrap();
        let (old, _) = agent(data.path(), Some("0.1.0-1"), "active", true);
        let (new, _) = agent(data.path(), Some("0.2.0-1"), "active", true);
        assert!(!new.on_welcome(), "nothing pending: nothing to confirm");

        old.dir.write_pending(&pending("flotilla-agent-upgrade-7.service")).unwrap();
        assert!(!old.on_welcome());
        assert!(!old.dir.is_healthy());
        assert!(new.on_welcome());
        assert!(new.dir.is_healthy());
    }

    #[test]
    fn release_reports_the_version_the_upgrade_and_the_last_outcome() {
        let data = tempfile::tempdir().unwrap();
        let (new, _) = agent(data.path(), Some("0.2.0-1"), "active", true);
        assert_eq!(
            new.release(),
            AgentRelease { package_version: Some("0.2.0-1".into()), upgrading: None, last_upgrade: None }
        );
        new.dir.write_pending(&pending("flotilla-agent-upgrade-7.service")).unwrap();
        let outcome = UpgradeOutcome {
            rollout: RolloutId(6),
            from_version: "0.0.9-1".into(),
            to_version: "0.1.0-1".into(),
            result: UpgradeResult::Upgraded,
            finished_at_ms: 5,
        };
        new.dir.write_outcome(&outcome).unwrap();
        assert_eq!(
            new.release(),
            AgentRelease {
                package_version: Some("0.2.0-1".into()),
                upgrading: Some(RolloutId(7)),
                last_upgrade: Some(outcome)
            }
        );
    }
}
