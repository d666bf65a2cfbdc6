//! Rolling agent upgrades: install a catalog package on the fleet's agents wave by wave (a canary
//! node first, then batches), wait for each node to come back on the new version, and stop at the
//! first node that does not. That node's own installer puts the previous package back.
//!
//! The plan and every node's progress live in the store, so a rollout started from the CLI is
//! picked up by the running controller, and one in progress resumes after a controller restart.

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::codec;
use flotilla_protocol::rpc::RequestKind;
use flotilla_protocol::upgrade::{AgentUpgrade, PackageRef, RolloutId, UpgradeResult, UpgradeStarted};
use flotilla_protocol::NodeId;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::fleet::{Fleet, FleetError};
use crate::store::{NodeUpgradeState, RolloutNodeRecord, RolloutState, RolloutView, Store, StoreError};

/// How often the store is checked for a rollout started elsewhere (the CLI), and how often a
/// node being upgraded is looked at.
const POLL: Duration = Duration::from_millis(500);
/// How long the controller waits, besides the health timeout, for the download and `dpkg` on the
/// node, and for the report of a rollback.
const INSTALL_GRACE: Duration = Duration::from_secs(90);
/// How long an agent has to fetch both packages and start its installer.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Drives rollouts in the background.
#[derive(Debug)]
pub struct Rollouts {
    fleet: Arc<Fleet>,
    wake: Notify,
}

/// Rollout failures surfaced to callers.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the engine stopped: {0}")]
    Join(String),
}

impl Rollouts {
    /// Starts the engine; it resumes a rollout left running.
    pub fn start(fleet: Arc<Fleet>) -> Arc<Rollouts> {
        let engine = Arc::new(Rollouts { fleet, wake: Notify::new() });
        let driver = engine.clone();
        tokio::spawn(async move { driver.run().await });
        engine
    }

    /// Looks for a newly created rollout now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, RolloutError> {
        let store = self.fleet.store().clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| RolloutError::Join(e.to_string()))?
            .map_err(Into::into)
    }

    async fn run(self: Arc<Self>) {
        loop {
            match self.blocking(|s| s.running_rollout()).await {
                Ok(Some(id)) => {
                    if let Err(e) = self.drive(id).await {
                        tracing::error!(rollout = id.0, error = %e, "rollout engine failed; retrying");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read rollouts"),
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), self.wake.notified()).await;
        }
    }

    /// Runs one rollout to its end (or until it is cancelled).
    async fn drive(&self, id: RolloutId) -> Result<(), RolloutError> {
        let Some(view) = self.blocking(move |s| s.rollout(id)).await? else { return Ok(()) };
        tracing::info!(rollout = id.0, version = %view.rollout.version, nodes = view.nodes.len(), "rollout running");
        let mut waves: Vec<u32> = view.nodes.iter().filter(|n| n.wave != u32::MAX).map(|n| n.wave).collect();
        waves.dedup();
        for wave in waves {
            let Some(view) = self.blocking(move |s| s.rollout(id)).await? else { return Ok(()) };
            if view.rollout.state != RolloutState::Running {
                return Ok(());
            }
            let members: Vec<RolloutNodeRecord> = view.nodes.iter().filter(|n| n.wave == wave).cloned().collect();
            tracing::info!(rollout = id.0, wave, nodes = members.len(), "wave starting");
            let tasks: Vec<_> = members.into_iter().map(|node| self.upgrade_node(&view, node)).collect();
            futures_util::future::join_all(tasks).await;
            let Some(view) = self.blocking(move |s| s.rollout(id)).await? else { return Ok(()) };
            let failed: Vec<&RolloutNodeRecord> =
                view.nodes.iter().filter(|n| n.wave == wave && n.state.stops_rollout()).collect();
            if !failed.is_empty() {
                let untouched = view.nodes.iter().filter(|n| n.state == NodeUpgradeState::Pending).count();
                let why: Vec<String> = failed
                    .iter()
                    .map(|n| format!("{} {}: {}", n.node_name, n.state.as_str(), n.message.as_deref().unwrap_or("")))
                    .collect();
                let message = format!(
                    "wave {wave} failed ({}); stopped with {untouched} node(s) left on their version",
                    why.join("; ")
                );
                tracing::warn!(rollout = id.0, %message, "rollout stopped");
                self.blocking(move |s| s.finish_rollout(id, RolloutState::Failed, &message)).await?;
                return Ok(());
            }
        }
        let Some(view) = self.blocking(move |s| s.rollout(id)).await? else { return Ok(()) };
        let count = |state| view.nodes.iter().filter(|n| n.state == state).count();
        let message = format!(
            "{} node(s) upgraded to {}, {} skipped",
            count(NodeUpgradeState::Upgraded),
            view.rollout.version,
            count(NodeUpgradeState::Skipped)
        );
        tracing::info!(rollout = id.0, %message, "rollout finished");
        self.blocking(move |s| s.finish_rollout(id, RolloutState::Succeeded, &message)).await?;
        Ok(())
    }

    /// Starts (or, after a controller restart, resumes watching) one node's upgrade and waits
    /// until it is settled.
    async fn upgrade_node(&self, view: &RolloutView, node: RolloutNodeRecord) {
        let id = view.rollout.id;
        let target = view.rollout.version.clone();
        let deadline = match node.state {
            NodeUpgradeState::Pending => match self.begin(view, &node).await {
                Ok(Some(deadline)) => deadline,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(rollout = id.0, node_id = %node.node_id, error = %e, "cannot start the node's upgrade");
                    return;
                }
            },
            NodeUpgradeState::Upgrading => node.deadline_at.unwrap_or_else(OffsetDateTime::now_utc),
            _ => return,
        };
        if let Err(e) = self.watch(id, node.node_id, &target, deadline).await {
            tracing::warn!(rollout = id.0, node_id = %node.node_id, error = %e, "lost track of the node's upgrade");
        }
    }

    /// Sends the upgrade to the node. Returns the deadline for its return, or `None` when the
    /// node was settled at once (skipped, refused).
    async fn begin(
        &self,
        view: &RolloutView,
        node: &RolloutNodeRecord,
    ) -> Result<Option<OffsetDateTime>, RolloutError> {
        let (id, node_id) = (view.rollout.id, node.node_id);
        let settle = |state: NodeUpgradeState, message: String| async move {
            tracing::info!(rollout = id.0, %node_id, state = state.as_str(), %message, "node settled");
            self.blocking(move |s| s.set_rollout_node(id, node_id, state, Some(&message), None, None)).await
        };
        let live = self.fleet.live(node_id);
        if !live.connected {
            settle(NodeUpgradeState::Skipped, "offline when its wave started".into()).await?;
            return Ok(None);
        }
        if !live.self_upgrade_capable {
            let why = "its agent cannot upgrade itself (not run from the flotilla-agent package under systemd)";
            settle(NodeUpgradeState::Skipped, why.into()).await?;
            return Ok(None);
        }
        let current = live.release.as_ref().and_then(|r| r.package_version.clone()).or(node.from_version.clone());
        let Some(current) = current else {
            settle(NodeUpgradeState::Skipped, "its agent reports no package version".into()).await?;
            return Ok(None);
        };
        if current == view.rollout.version {
            settle(NodeUpgradeState::Skipped, format!("already runs {current}")).await?;
            return Ok(None);
        }
        let (target_version, from) = (view.rollout.version.clone(), current.clone());
        let (target, rollback) =
            self.blocking(move |s| Ok((s.agent_package(&target_version)?, s.agent_package(&from)?))).await?;
        let Some(target) = target else {
            settle(NodeUpgradeState::Failed, format!("package {} left the catalog", view.rollout.version)).await?;
            return Ok(None);
        };
        let Some(rollback) = rollback else {
            let why = format!("it runs {current}, which is not in the package catalog: nothing to roll back to");
            settle(NodeUpgradeState::Skipped, why).await?;
            return Ok(None);
        };
        let timeout = Duration::from_secs(view.rollout.health_timeout_s.into());
        let request = AgentUpgrade {
            rollout: id,
            target: PackageRef { version: target.version, sha256: target.sha256, size: target.size },
            rollback: PackageRef { version: rollback.version, sha256: rollback.sha256, size: rollback.size },
            health_timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
        };
        let deadline = OffsetDateTime::now_utc() + START_TIMEOUT + timeout + INSTALL_GRACE;
        let from = current.clone();
        self.blocking(move |s| {
            s.set_rollout_node(id, node_id, NodeUpgradeState::Upgrading, None, Some(&from), Some(deadline))
        })
        .await?;
        let body = codec::encode_body(&request).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        match self.fleet.call(node_id, RequestKind::UPGRADE_AGENT, body, START_TIMEOUT).await {
            Ok(answer) => {
                let started: Option<UpgradeStarted> = codec::decode_from(&answer).ok();
                tracing::info!(
                    rollout = id.0, %node_id, from = %current, to = %view.rollout.version,
                    unit = started.map(|s| s.unit).unwrap_or_default(), "node upgrading"
                );
                // The node's health clock starts once its installer runs.
                let deadline = OffsetDateTime::now_utc() + timeout + INSTALL_GRACE;
                self.blocking(move |s| {
                    s.set_rollout_node(id, node_id, NodeUpgradeState::Upgrading, None, None, Some(deadline))
                })
                .await?;
                Ok(Some(deadline))
            }
            Err(e) => {
                let why = match e {
                    FleetError::Rpc { error, .. } => format!("the agent refused the upgrade: {error}"),
                    other => format!("the upgrade could not be handed to the agent: {other}"),
                };
                settle(NodeUpgradeState::Failed, why).await?;
                Ok(None)
            }
        }
    }

    /// Waits until the node is back on `target` (upgraded), reports a rollback, or `deadline`
    /// passes (failed).
    async fn watch(
        &self,
        id: RolloutId,
        node: NodeId,
        target: &str,
        deadline: OffsetDateTime,
    ) -> Result<(), RolloutError> {
        loop {
            let live = self.fleet.live(node);
            let release = live.release.as_ref().filter(|_| live.connected);
            if release.and_then(|r| r.package_version.as_deref()) == Some(target) {
                let message = format!("back on {target}");
                tracing::info!(rollout = id.0, node_id = %node, "node upgraded and back");
                self.blocking(move |s| {
                    s.set_rollout_node(id, node, NodeUpgradeState::Upgraded, Some(&message), None, None)
                })
                .await?;
                return Ok(());
            }
            // The agent's report of a rollback is recorded by its session; a row no longer
            // upgrading is settled.
            let row = self
                .blocking(move |s| s.rollout(id))
                .await?
                .and_then(|v| v.nodes.into_iter().find(|n| n.node_id == node));
            match row {
                Some(row) if row.state == NodeUpgradeState::Upgrading => {}
                _ => return Ok(()),
            }
            if let Some(outcome) = release.and_then(|r| r.last_upgrade.as_ref()).filter(|o| o.rollout == id) {
                if !matches!(outcome.result, UpgradeResult::Upgraded) {
                    let outcome = outcome.clone();
                    self.blocking(move |s| s.record_upgrade_outcome(node, &outcome)).await?;
                    continue;
                }
            }
            if OffsetDateTime::now_utc() >= deadline {
                let message = format!("did not come back on {target} in time");
                tracing::warn!(rollout = id.0, node_id = %node, %message, "node failed");
                self.blocking(move |s| {
                    s.set_rollout_node(id, node, NodeUpgradeState::Failed, Some(&message), None, None)
                })
                .await?;
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
