//! `flotilla-agent apply-upgrade`: installs the package an upgrade left in the upgrade directory,
//! waits for the new agent to reconnect, and reinstalls the previous package if it does not.
//!
//! It runs in a transient systemd unit started by the agent, so it is outside the agent's cgroup
//! and sandbox and survives the restart of the agent that dpkg's postinst triggers.

use std::time::{Duration, Instant};

use flotilla_protocol::upgrade::{UpgradeOutcome, UpgradeResult};

use super::commands::{CommandOutput, CommandRunner};
use super::files::{PendingUpgrade, UpgradeDir};
use super::{unix_ms, UpgradeError, AGENT_SERVICE};

/// How often the installer looks for the `healthy` marker.
const HEALTH_POLL: Duration = Duration::from_millis(250);

/// The installer's waits, apart from the upgrade's own health timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallerTiming {
    /// Pause before the first `dpkg -i`: dpkg's postinst restarts the agent, whose answer to
    /// `UPGRADE_AGENT` should reach the controller first.
    pub answer_grace: Duration,
    /// How long `dpkg -i` keeps being retried while another dpkg or apt holds dpkg's lock
    /// (unattended-upgrades), instead of counting as a failed install.
    pub lock_wait: Duration,
    /// Pause between those retries.
    pub lock_retry: Duration,
}

impl Default for InstallerTiming {
    fn default() -> InstallerTiming {
        InstallerTiming {
            answer_grace: Duration::from_secs(2),
            lock_wait: Duration::from_secs(120),
            lock_retry: Duration::from_secs(3),
        }
    }
}

/// Lines of dpkg's output kept in an outcome's reason.
const DPKG_TAIL_LINES: usize = 5;

/// Applies the pending upgrade in `dir` to the end and returns how it ended (also written to
/// `outcome.json`). Fails only when there is no readable pending upgrade.
pub fn apply_upgrade(
    dir: &UpgradeDir,
    runner: &dyn CommandRunner,
    timing: InstallerTiming,
) -> Result<UpgradeOutcome, UpgradeError> {
    let pending = dir.read_pending()?.ok_or_else(|| UpgradeError::NothingPending(dir.pending_path()))?;
    let upgrade = &pending.upgrade;
    let (target, rollback) = (&upgrade.target.version, &upgrade.rollback.version);
    tracing::info!(rollout = %upgrade.rollout, from = %pending.from_version, to = %target, "installing flotilla-agent");
    std::thread::sleep(timing.answer_grace);

    let installed = dpkg_install(runner, dir, &upgrade.target.sha256, timing);
    let outcome = if !installed.success {
        let reason = format!("dpkg could not install {target}: {}", installed.tail(DPKG_TAIL_LINES));
        tracing::error!(%reason, "rolling back");
        roll_back(dir, runner, &pending, reason, timing)
    } else {
        let timeout = Duration::from_millis(upgrade.health_timeout_ms.into());
        tracing::info!(timeout = ?timeout, "{target} installed; waiting for the new agent to reconnect");
        if wait_healthy(dir, timeout) {
            tracing::info!(version = %target, "the new agent reconnected: upgrade done");
            record(dir, &pending, UpgradeResult::Upgraded)
        } else {
            let facts =
                runner.run("systemctl", &["show", AGENT_SERVICE, "-p", "ActiveState,Result,ExecMainStatus,NRestarts"]);
            let facts = facts.output.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(", ");
            let reason = format!(
                "the new agent did not reconnect within {}s ({facts})",
                f64::from(upgrade.health_timeout_ms) / 1000.0
            );
            tracing::error!(%reason, "rolling back to {rollback}");
            roll_back(dir, runner, &pending, reason, timing)
        }
    };

    if let Err(e) = dir.clear_healthy() {
        tracing::warn!(error = %e, "cannot remove the healthy marker");
    }
    if let Err(e) = dir.remove_packages(upgrade) {
        tracing::warn!(error = %e, "cannot remove the downloaded packages");
    }
    Ok(outcome)
}

/// Reinstalls the rollback package, records the outcome, then restarts the agent so that the
/// agent now on disk reports the outcome in its first session.
fn roll_back(
    dir: &UpgradeDir,
    runner: &dyn CommandRunner,
    pending: &PendingUpgrade,
    reason: String,
    timing: InstallerTiming,
) -> UpgradeOutcome {
    let version = &pending.upgrade.rollback.version;
    let reinstalled = dpkg_install(runner, dir, &pending.upgrade.rollback.sha256, timing);
    let result = if reinstalled.success {
        tracing::info!(%version, "previous package reinstalled");
        UpgradeResult::RolledBack { reason }
    } else {
        let reason = format!("{reason}; reinstalling {version} failed too: {}", reinstalled.tail(DPKG_TAIL_LINES));
        tracing::error!(%reason, "the host needs an operator");
        UpgradeResult::Failed { reason }
    };
    // Outcome first: dpkg's postinst already restarted the agent, possibly before this point; the
    // restart below makes sure the agent's next first AGENT_RELEASE carries the outcome. The
    // agent may also have stopped (crash loop given up, failed ExecStartPre), hence reset-failed.
    let outcome = record(dir, pending, result);
    for args in [["reset-failed", AGENT_SERVICE], ["restart", AGENT_SERVICE]] {
        let out = runner.run("systemctl", &args);
        if !out.success {
            tracing::warn!(command = %args.join(" "), output = %out.tail(DPKG_TAIL_LINES), "systemctl failed");
        }
    }
    outcome
}

/// `dpkg -i` of a downloaded package, keeping the administrator's conffiles; retried while
/// another package manager holds dpkg's lock.
fn dpkg_install(
    runner: &dyn CommandRunner,
    dir: &UpgradeDir,
    sha256: &[u8; 32],
    timing: InstallerTiming,
) -> CommandOutput {
    let package = dir.package_path(sha256);
    let package = package.to_string_lossy();
    let give_up = Instant::now() + timing.lock_wait;
    loop {
        tracing::info!(package = %package, "dpkg -i");
        // An older version (the rollback) is a downgrade: dpkg allows it with a warning.
        let out = runner.run("dpkg", &["-i", "--force-confold", "--force-confdef", &package]);
        if out.success {
            return out;
        }
        if dpkg_locked(&out) && Instant::now() + timing.lock_retry < give_up {
            tracing::info!(output = %out.tail(1), "dpkg is busy; retrying");
            std::thread::sleep(timing.lock_retry);
            continue;
        }
        tracing::warn!(output = %out.output, "dpkg failed");
        return out;
    }
}

/// Whether dpkg failed only because another process holds its lock (then nothing was changed):
/// "dpkg frontend lock was locked by another process", "dpkg status database is locked by
/// another process".
fn dpkg_locked(out: &CommandOutput) -> bool {
    out.output.lines().any(|l| l.starts_with("dpkg: error:") && l.contains("lock") && l.contains("another process"))
}

/// Waits up to `timeout` for the new agent's `healthy` marker.
fn wait_healthy(dir: &UpgradeDir, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if dir.is_healthy() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(HEALTH_POLL.min(deadline - now));
    }
}

/// Writes the outcome and removes `pending.json`, in that order: an agent never sees neither.
fn record(dir: &UpgradeDir, pending: &PendingUpgrade, result: UpgradeResult) -> UpgradeOutcome {
    let outcome = UpgradeOutcome {
        rollout: pending.upgrade.rollout,
        from_version: pending.from_version.clone(),
        to_version: pending.upgrade.target.version.clone(),
        result,
        finished_at_ms: unix_ms(),
    };
    if let Err(e) = dir.write_outcome(&outcome) {
        tracing::error!(error = %e, "cannot write the upgrade outcome");
    }
    if let Err(e) = dir.remove_pending() {
        tracing::error!(error = %e, "cannot remove pending.json");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::super::sample_upgrade as upgrade;
    use super::*;

    const FAST: InstallerTiming = InstallerTiming {
        answer_grace: Duration::ZERO,
        lock_wait: Duration::from_millis(500),
        lock_retry: Duration::from_millis(10),
    };

    /// Answers every command from a script and records the calls, with what was on disk then.
    struct FakeHost {
        dir: UpgradeDir,
        calls: Mutex<Vec<Call>>,
        /// Whether `dpkg -i` of the target / of the rollback succeeds.
        target_installs: bool,
        rollback_installs: bool,
        /// Whether the new agent comes up (writes the marker) when the target is installed.
        new_agent_healthy: bool,
        /// How many more `dpkg -i` find dpkg's lock taken.
        dpkg_busy_for: Mutex<usize>,
    }

    #[derive(Debug, Clone)]
    struct Call {
        command: String,
        /// outcome.json / pending.json existed when the command ran.
        outcome_written: bool,
        pending_present: bool,
    }

    impl CommandRunner for FakeHost {
        fn run(&self, program: &str, args: &[&str]) -> CommandOutput {
            let command = format!("{program} {}", args.join(" "));
            self.calls.lock().unwrap().push(Call {
                command: command.clone(),
                outcome_written: self.dir.outcome_path().exists(),
                pending_present: self.dir.has_pending(),
            });
            let target = self.dir.package_path(&upgrade().target.sha256);
            let rollback = self.dir.package_path(&upgrade().rollback.sha256);
            let mut busy = self.dpkg_busy_for.lock().unwrap();
            let (success, output) = if program == "dpkg" && *busy > 0 {
                *busy -= 1;
                (false, "dpkg: error: dpkg frontend lock was locked by another process with pid 4242\nNote: removing the lock file is always wrong\n")
            } else if program == "dpkg" && command.ends_with(target.to_str().unwrap()) {
                if self.target_installs && self.new_agent_healthy {
                    self.dir.mark_healthy().unwrap();
                }
                (self.target_installs, "Unpacking flotilla-agent (0.2.0-1)\npostinst: boom\n")
            } else if program == "dpkg" && command.ends_with(rollback.to_str().unwrap()) {
                (self.rollback_installs, "dpkg: warning: downgrading flotilla-agent\nno space left\n")
            } else if command.starts_with("systemctl show") {
                (true, "ActiveState=activating\nResult=exit-code\nExecMainStatus=1\nNRestarts=4\n")
            } else {
                (true, "")
            };
            CommandOutput { success, output: output.into() }
        }
    }

    fn host(
        target_installs: bool,
        rollback_installs: bool,
        new_agent_healthy: bool,
    ) -> (tempfile::TempDir, Arc<FakeHost>) {
        let data = tempfile::tempdir().unwrap();
        let dir = UpgradeDir::new(data.path());
        dir.write_pending(&PendingUpgrade {
            upgrade: upgrade(),
            from_version: "0.1.0-1".into(),
            unit: "flotilla-agent-upgrade-7.service".into(),
            started_at_ms: 1,
        })
        .unwrap();
        for sha in [upgrade().target.sha256, upgrade().rollback.sha256] {
            std::fs::write(dir.package_path(&sha), b"deb").unwrap();
        }
        let fake = FakeHost {
            dir,
            calls: Mutex::new(vec![]),
            target_installs,
            rollback_installs,
            new_agent_healthy,
            dpkg_busy_for: Mutex::new(0),
        };
        (data, Arc::new(fake))
    }

    fn commands(fake: &FakeHost) -> Vec<String> {
        fake.calls.lock().unwrap().iter().map(|c| c.command.clone()).collect()
    }

    fn dpkg_i(fake: &FakeHost, sha: &[u8; 32]) -> String {
        format!("dpkg -i --force-confold --force-confdef {}", fake.dir.package_path(sha).display())
    }

    /// Nothing but outcome.json is left.
    fn assert_cleaned(fake: &FakeHost) {
        let mut left: Vec<_> = std::fs::read_dir(fake.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["outcome.json"]);
    }

    #[test]
    fn healthy_new_agent_is_upgraded() {
        let (_data, fake) = host(true, true, true);
        let outcome = apply_upgrade(&fake.dir, fake.as_ref(), FAST).unwrap();
        assert_eq!(outcome.result, UpgradeResult::Upgraded);
        assert_eq!((outcome.from_version.as_str(), outcome.to_version.as_str()), ("0.1.0-1", "0.2.0-1"));
        assert_eq!(commands(&fake), [dpkg_i(&fake, &upgrade().target.sha256)]);
        let written = fake.dir.read_outcome().unwrap().unwrap();
        assert_eq!((written.rollout, written.result), (outcome.rollout, UpgradeResult::Upgraded));
        assert_cleaned(&fake);
    }

    #[test]
    fn silent_new_agent_is_rolled_back_and_the_outcome_precedes_the_restart() {
        let (_data, fake) = host(true, true, false);
        let started = Instant::now();
        let outcome = apply_upgrade(&fake.dir, fake.as_ref(), FAST).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        let UpgradeResult::RolledBack { reason } = &outcome.result else { panic!("{outcome:?}") };
        assert_eq!(
            reason,
            "the new agent did not reconnect within 0.3s \
             (ActiveState=activating, Result=exit-code, ExecMainStatus=1, NRestarts=4)"
        );
        assert_eq!(
            commands(&fake),
            [
                dpkg_i(&fake, &upgrade().target.sha256),
                "systemctl show flotilla-agent.service -p ActiveState,Result,ExecMainStatus,NRestarts".into(),
                dpkg_i(&fake, &upgrade().rollback.sha256),
                "systemctl reset-failed flotilla-agent.service".into(),
                "systemctl restart flotilla-agent.service".into(),
            ]
        );
        let calls = fake.calls.lock().unwrap().clone();
        let rollback_dpkg = &calls[2];
        assert!(!rollback_dpkg.outcome_written && rollback_dpkg.pending_present);
        for restart in &calls[3..] {
            assert!(restart.outcome_written && !restart.pending_present, "{restart:?}");
        }
        assert_eq!(fake.dir.read_outcome().unwrap().unwrap().result, outcome.result);
        assert_cleaned(&fake);
    }

    #[test]
    fn dpkg_failure_of_the_target_rolls_back_at_once() {
        let (_data, fake) = host(false, true, true);
        let started = Instant::now();
        let outcome = apply_upgrade(&fake.dir, fake.as_ref(), FAST).unwrap();
        assert!(started.elapsed() < Duration::from_millis(250), "no health wait after a failed dpkg");
        let UpgradeResult::RolledBack { reason } = &outcome.result else { panic!("{outcome:?}") };
        assert_eq!(reason, "dpkg could not install 0.2.0-1: Unpacking flotilla-agent (0.2.0-1) | postinst: boom");
        assert_eq!(
            commands(&fake),
            [
                dpkg_i(&fake, &upgrade().target.sha256),
                dpkg_i(&fake, &upgrade().rollback.sha256),
                "systemctl reset-failed flotilla-agent.service".into(),
                "systemctl restart flotilla-agent.service".into(),
            ]
        );
        assert_cleaned(&fake);
    }

    #[test]
    fn failed_rollback_is_failed() {
        let (_data, fake) = host(true, false, false);
        let outcome = apply_upgrade(&fake.dir, fake.as_ref(), FAST).unwrap();
        let UpgradeResult::Failed { reason } = &outcome.result else { panic!("{outcome:?}") };
        assert!(reason.starts_with("the new agent did not reconnect within 0.3s"), "{reason}");
        assert!(
            reason.ends_with(
                "; reinstalling 0.1.0-1 failed too: dpkg: warning: downgrading flotilla-agent | no space left"
            ),
            "{reason}"
        );
        assert_eq!(fake.dir.read_outcome().unwrap().unwrap().result, outcome.result);
        // The agent is still restarted: whatever is on disk should come up and report.
        assert!(commands(&fake).contains(&"systemctl restart flotilla-agent.service".to_string()));
        assert_cleaned(&fake);
    }

    #[test]
    fn a_busy_dpkg_is_waited_for() {
        let (_data, fake) = host(true, true, true);
        *fake.dpkg_busy_for.lock().unwrap() = 2;
        let outcome = apply_upgrade(&fake.dir, fake.as_ref(), FAST).unwrap();
        assert_eq!(outcome.result, UpgradeResult::Upgraded);
        assert_eq!(commands(&fake), vec![dpkg_i(&fake, &upgrade().target.sha256); 3]);

        // Busy for longer than the lock wait: a failed install, then a failed rollback.
        let (_data, fake) = host(true, true, true);
        *fake.dpkg_busy_for.lock().unwrap() = 1000;
        let outcome = apply_upgrade(&fake.dir, fake.as_ref(), FAST).unwrap();
        let UpgradeResult::Failed { reason } = &outcome.result else { panic!("{outcome:?}") };
        assert!(reason.starts_with("dpkg could not install 0.2.0-1: dpkg: error: dpkg frontend lock"), "{reason}");
    }

    #[test]
    fn nothing_pending_is_an_error() {
        let data = tempfile::tempdir().unwrap();
        let dir = UpgradeDir::new(data.path());
        let fake = FakeHost {
            dir: dir.clone(),
            calls: Mutex::new(vec![]),
            target_installs: true,
            rollback_installs: true,
            new_agent_healthy: true,
            dpkg_busy_for: Mutex::new(0),
        };
        assert!(matches!(apply_upgrade(&dir, &fake, FAST), Err(UpgradeError::NothingPending(_))));
        assert!(commands(&fake).is_empty());
    }
}
