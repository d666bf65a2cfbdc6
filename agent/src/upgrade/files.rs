//! The upgrade's files in `<data-dir>/upgrade/`, shared by the agent that starts an upgrade, the
//! installer that applies it, and the new agent that reports back:
//!
//! - `pending.json`: the upgrade being applied ([`PendingUpgrade`]); present from the moment the
//!   installer is started until it has written the outcome.
//! - `outcome.json`: how the last upgrade ended (the protocol's `UpgradeOutcome`, as JSON).
//! - `healthy`: written by the new agent once the controller welcomed it.
//! - `<hex sha256>.deb`: the downloaded packages, removed when the installer ends.
//!
//! JSON files are replaced atomically (temp file, fsync, rename), all with mode 0600 in a 0700
//! directory.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flotilla_protocol::upgrade::{AgentUpgrade, UpgradeOutcome};
use serde::{Deserialize, Serialize};

use crate::drivers::core::config::write_atomic;

/// An upgrade handed to the installer (`pending.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpgrade {
    /// The controller's request, as received.
    pub upgrade: AgentUpgrade,
    /// The package version installed when the upgrade started.
    pub from_version: String,
    /// The transient systemd unit running the installer (`flotilla-agent-upgrade-<rollout>.service`).
    pub unit: String,
    /// Unix milliseconds.
    pub started_at_ms: u64,
}

/// A state file that exists but cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct StateFileError {
    pub path: PathBuf,
    pub reason: String,
}

/// `<data-dir>/upgrade/`.
#[derive(Debug, Clone)]
pub struct UpgradeDir {
    dir: PathBuf,
}

impl UpgradeDir {
    /// The upgrade directory of the agent whose data directory is `data_dir` (not created yet).
    pub fn new(data_dir: &Path) -> UpgradeDir {
        UpgradeDir { dir: data_dir.join("upgrade") }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (mode 0700) if missing, and tightens its mode if not.
    pub fn create(&self) -> io::Result<()> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
    }

    /// `pending.json`.
    pub fn pending_path(&self) -> PathBuf {
        self.dir.join("pending.json")
    }

    /// `outcome.json`.
    pub fn outcome_path(&self) -> PathBuf {
        self.dir.join("outcome.json")
    }

    /// The marker the new agent writes once welcomed.
    pub fn healthy_path(&self) -> PathBuf {
        self.dir.join("healthy")
    }

    /// Where the package with this SHA-256 is stored once downloaded and checked.
    pub fn package_path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.deb", hex::encode(sha256)))
    }

    /// The upgrade being applied, if any.
    pub fn read_pending(&self) -> Result<Option<PendingUpgrade>, StateFileError> {
        read_json(&self.pending_path())
    }

    /// Whether an upgrade is being applied (without reading it).
    pub fn has_pending(&self) -> bool {
        self.pending_path().exists()
    }

    /// Replaces `pending.json`.
    pub fn write_pending(&self, pending: &PendingUpgrade) -> io::Result<()> {
        self.create()?;
        write_json(&self.pending_path(), pending)
    }

    /// Removes `pending.json` (fine if absent).
    pub fn remove_pending(&self) -> io::Result<()> {
        remove_if_present(&self.pending_path())
    }

    /// How the last upgrade ended, if one ever did.
    pub fn read_outcome(&self) -> Result<Option<UpgradeOutcome>, StateFileError> {
        read_json(&self.outcome_path())
    }

    /// Replaces `outcome.json`.
    pub fn write_outcome(&self, outcome: &UpgradeOutcome) -> io::Result<()> {
        self.create()?;
        write_json(&self.outcome_path(), outcome)
    }

    /// Whether the new agent has reported in.
    pub fn is_healthy(&self) -> bool {
        self.healthy_path().exists()
    }

    /// Writes the `healthy` marker.
    pub fn mark_healthy(&self) -> io::Result<()> {
        self.create()?;
        write_atomic(&self.healthy_path(), b"")
    }

    /// Removes the `healthy` marker (fine if absent).
    pub fn clear_healthy(&self) -> io::Result<()> {
        remove_if_present(&self.healthy_path())
    }

    /// Removes both packages of `upgrade` (and partial downloads of them).
    pub fn remove_packages(&self, upgrade: &AgentUpgrade) -> io::Result<()> {
        for sha in [&upgrade.target.sha256, &upgrade.rollback.sha256] {
            let path = self.package_path(sha);
            remove_if_present(&path)?;
            remove_if_present(&partial_path(&path))?;
        }
        Ok(())
    }
}

/// Where a package is written while it downloads.
pub fn partial_path(package: &Path) -> PathBuf {
    let mut name = package.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateFileError> {
    let fail = |reason: String| StateFileError { path: path.to_owned(), reason };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| fail(e.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(e.to_string())),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    text.push(b'\n');
    write_atomic(path, &text)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::sample_upgrade as upgrade;
    use flotilla_protocol::upgrade::{RolloutId, UpgradeResult};

    #[test]
    fn files_round_trip_with_private_modes() {
        let data = tempfile::tempdir().unwrap();
        let dir = UpgradeDir::new(data.path());
        assert_eq!(dir.read_pending().unwrap(), None);
        assert_eq!(dir.read_outcome().unwrap(), None);

        let pending = PendingUpgrade {
            upgrade: upgrade(),
            from_version: "0.1.0-1".into(),
            unit: "flotilla-agent-upgrade-7.service".into(),
            started_at_ms: 1,
        };
        dir.write_pending(&pending).unwrap();
        assert_eq!(dir.read_pending().unwrap(), Some(pending));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.pending_path()), 0o600);

        let outcome = UpgradeOutcome {
            rollout: RolloutId(7),
            from_version: "0.1.0-1".into(),
            to_version: "0.2.0-1".into(),
            result: UpgradeResult::RolledBack { reason: "no".into() },
            finished_at_ms: 2,
        };
        dir.write_outcome(&outcome).unwrap();
        assert_eq!(dir.read_outcome().unwrap(), Some(outcome));

        dir.remove_pending().unwrap();
        dir.remove_pending().unwrap();
        assert!(!dir.has_pending());

        std::fs::write(dir.pending_path(), b"{").unwrap();
        assert!(dir.read_pending().is_err());
    }

    #[test]
    fn packages_are_named_by_digest() {
        let dir = UpgradeDir::new(Path::new("/var/lib/flotilla-agent"));
        let path = dir.package_path(&[0xab; 32]);
        assert_eq!(path, Path::new("/var/lib/flotilla-agent/upgrade").join(format!("{}.deb", "ab".repeat(32))));
        assert_eq!(partial_path(&path).extension().unwrap(), "part");
    }
}
