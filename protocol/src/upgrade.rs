//! Self-upgrade of agents installed from the `flotilla-agent` Debian package, for the
//! controller's rolling upgrades.
//!
//! The controller sends `UPGRADE_AGENT` naming two packages of its catalog by content: the target
//! and the package the node runs now. The agent pulls both over the link (`FETCH_PACKAGE`, in
//! chunks), checks their digests, and hands them to an installer in a transient systemd unit that
//! outlives the agent's own restart. The installer reinstalls the previous package unless the new
//! agent reconnects to the controller within the health timeout. Each session starts with an
//! `AGENT_RELEASE` event: the installed package version and the last upgrade's outcome.

use serde::{Deserialize, Serialize};

/// A rollout, as numbered by the controller's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RolloutId(pub i64);

impl std::fmt::Display for RolloutId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One package of the controller's catalog, named by its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    /// Debian version (`0.2.0-1`).
    pub version: String,
    /// SHA-256 of the whole `.deb` file.
    pub sha256: [u8; 32],
    /// Size of the file in bytes.
    pub size: u64,
}

/// Controller → agent, `UPGRADE_AGENT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUpgrade {
    pub rollout: RolloutId,
    /// The package to install.
    pub target: PackageRef,
    /// The package the node runs now, reinstalled when the target does not come back healthy.
    pub rollback: PackageRef,
    /// How long the new agent has, once installed, to reconnect to the controller.
    pub health_timeout_ms: u32,
}

/// Answer to `UPGRADE_AGENT`: both packages are on the node and checked, and the installer runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeStarted {
    /// The package version installed when the upgrade started.
    pub from_version: String,
    /// The transient systemd unit running the installer.
    pub unit: String,
}

/// Agent → controller, `FETCH_PACKAGE`: a byte range of a catalog package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageChunkRequest {
    pub sha256: [u8; 32],
    pub offset: u64,
    /// At most [`MAX_CHUNK`] bytes are answered.
    pub len: u32,
}

/// Largest chunk the controller answers, well under the frame limit.
pub const MAX_CHUNK: u32 = 1024 * 1024;

/// Answer to `FETCH_PACKAGE`: the bytes from `offset` (fewer at the end of the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageChunk {
    pub data: Vec<u8>,
}

/// Agent → controller, `AGENT_RELEASE`, first on every session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentRelease {
    /// Version of the installed `flotilla-agent` package; `None` when the agent does not run from
    /// the package (a development binary, another packaging).
    pub package_version: Option<String>,
    /// The rollout whose installer runs on the host right now.
    pub upgrading: Option<RolloutId>,
    /// How the last upgrade on this host ended.
    pub last_upgrade: Option<UpgradeOutcome>,
}

/// The end of one upgrade on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeOutcome {
    pub rollout: RolloutId,
    pub from_version: String,
    pub to_version: String,
    pub result: UpgradeResult,
    /// Unix milliseconds.
    pub finished_at_ms: u64,
}

/// What an upgrade came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpgradeResult {
    /// The new agent reconnected in time and runs.
    Upgraded,
    /// The new package did not come back healthy; the previous one is installed again.
    RolledBack { reason: String },
    /// Even the rollback failed: the host needs an operator.
    Failed { reason: String },
}
