//! Rolling agent upgrades: the catalog of `flotilla-agent` packages, the package version each
//! node last reported, and rollouts with the progress of every node in them.

use flotilla_protocol::upgrade::{RolloutId, UpgradeOutcome, UpgradeResult};
use flotilla_protocol::NodeId;
use rusqlite::{params, OptionalExtension};
use time::OffsetDateTime;

use super::{from_unix, unix, Store, StoreError};

/// A package of the catalog, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPackageRecord {
    /// Debian version, the catalog's key.
    pub version: String,
    pub arch: String,
    pub sha256: [u8; 32],
    pub size: u64,
    pub added_at: OffsetDateTime,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    /// Waves are still being started or watched.
    Running,
    /// Every node is upgraded (or was skipped, with its reason).
    Succeeded,
    /// A node did not come back healthy; later waves were not started.
    Failed,
    /// An operator stopped it; later waves were not started.
    Cancelled,
}

impl RolloutState {
    /// The name used in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Succeeded => "succeeded",
            RolloutState::Failed => "failed",
            RolloutState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "running" => RolloutState::Running,
            "succeeded" => RolloutState::Succeeded,
            "failed" => RolloutState::Failed,
            "cancelled" => RolloutState::Cancelled,
            other => return Err(StoreError::Corrupt(format!("rollout state {other:?}"))),
        })
    }
}

/// Where one node of a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeUpgradeState {
    /// Its wave has not started.
    Pending,
    /// The agent took the upgrade; the controller waits for it to come back on the new version.
    Upgrading,
    /// It came back on the new version.
    Upgraded,
    /// It did not come back healthy in time, or refused the upgrade.
    Failed,
    /// It did not come back healthy and reinstalled its previous package.
    RolledBack,
    /// Left out, with the reason in the message (already on the version, offline, nothing to
    /// roll back to).
    Skipped,
}

impl NodeUpgradeState {
    /// The name used in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeUpgradeState::Pending => "pending",
            NodeUpgradeState::Upgrading => "upgrading",
            NodeUpgradeState::Upgraded => "upgraded",
            NodeUpgradeState::Failed => "failed",
            NodeUpgradeState::RolledBack => "rolled_back",
            NodeUpgradeState::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => NodeUpgradeState::Pending,
            "upgrading" => NodeUpgradeState::Upgrading,
            "upgraded" => NodeUpgradeState::Upgraded,
            "failed" => NodeUpgradeState::Failed,
            "rolled_back" => NodeUpgradeState::RolledBack,
            "skipped" => NodeUpgradeState::Skipped,
            other => return Err(StoreError::Corrupt(format!("rollout node state {other:?}"))),
        })
    }

    /// A node in this state stops its rollout.
    pub fn stops_rollout(self) -> bool {
        matches!(self, NodeUpgradeState::Failed | NodeUpgradeState::RolledBack)
    }
}

/// What starting a rollout needs.
#[derive(Debug, Clone)]
pub struct NewRollout {
    /// Catalog version to install.
    pub version: String,
    /// Nodes per wave after the canary.
    pub batch_size: u32,
    /// The first node forms a wave of its own.
    pub canary: bool,
    /// How long each node has to come back on the new version.
    pub health_timeout_s: u32,
    /// Nodes to upgrade, in this order; `None`: every node, by id.
    pub nodes: Option<Vec<NodeId>>,
    /// Who started it.
    pub created_by: String,
}

/// A rollout as stored.
#[derive(Debug, Clone)]
pub struct RolloutRecord {
    pub id: RolloutId,
    pub version: String,
    pub batch_size: u32,
    pub canary: bool,
    pub health_timeout_s: u32,
    pub state: RolloutState,
    pub message: Option<String>,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

/// One node of a rollout.
#[derive(Debug, Clone)]
pub struct RolloutNodeRecord {
    pub node_id: NodeId,
    /// The node's name when the rollout started.
    pub node_name: String,
    /// 0 is the canary wave (when there is one).
    pub wave: u32,
    pub state: NodeUpgradeState,
    /// Package version the node ran when its upgrade started (or when the rollout was created).
    pub from_version: Option<String>,
    pub message: Option<String>,
    pub started_at: Option<OffsetDateTime>,
    /// Until when the controller waits for the node to come back.
    pub deadline_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
}

/// A rollout with its nodes in order.
#[derive(Debug, Clone)]
pub struct RolloutView {
    pub rollout: RolloutRecord,
    pub nodes: Vec<RolloutNodeRecord>,
}

/// Whether a package was new to the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageAdded {
    Added,
    /// The same file was there already.
    AlreadyThere,
}

/// Wave of the node at `position` (0-based).
pub fn wave_of(position: u32, batch_size: u32, canary: bool) -> u32 {
    let batch = batch_size.max(1);
    match canary {
        true if position == 0 => 0,
        true => 1 + (position - 1) / batch,
        false => position / batch,
    }
}

const ROLLOUT_COLUMNS: &str =
    "id, version, batch_size, canary, health_timeout_s, state, message, created_by, created_at, finished_at";
const NODE_COLUMNS: &str =
    "node_id, node_name, wave, state, from_version, message, started_at, deadline_at, finished_at";

fn rollout_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RolloutRecord, String)> {
    Ok((
        RolloutRecord {
            id: RolloutId(r.get(0)?),
            version: r.get(1)?,
            batch_size: r.get(2)?,
            canary: r.get(3)?,
            health_timeout_s: r.get(4)?,
            state: RolloutState::Running,
            message: r.get(6)?,
            created_by: r.get(7)?,
            created_at: from_unix(r.get(8)?),
            finished_at: r.get::<_, Option<i64>>(9)?.map(from_unix),
        },
        r.get(5)?,
    ))
}

fn node_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RolloutNodeRecord, String)> {
    Ok((
        RolloutNodeRecord {
            node_id: NodeId(r.get(0)?),
            node_name: r.get(1)?,
            wave: r.get(2)?,
            state: NodeUpgradeState::Pending,
            from_version: r.get(4)?,
            message: r.get(5)?,
            started_at: r.get::<_, Option<i64>>(6)?.map(from_unix),
            deadline_at: r.get::<_, Option<i64>>(7)?.map(from_unix),
            finished_at: r.get::<_, Option<i64>>(8)?.map(from_unix),
        },
        r.get(3)?,
    ))
}

fn package_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(AgentPackageRecord, Vec<u8>)> {
    Ok((
        AgentPackageRecord {
            version: r.get(0)?,
            arch: r.get(1)?,
            sha256: [0; 32],
            size: r.get::<_, i64>(3)? as u64,
            added_at: from_unix(r.get(4)?),
        },
        r.get(2)?,
    ))
}

fn with_sha((mut record, sha): (AgentPackageRecord, Vec<u8>)) -> Result<AgentPackageRecord, StoreError> {
    record.sha256 = sha.try_into().map_err(|_| StoreError::Corrupt("package digest is not 32 bytes".into()))?;
    Ok(record)
}

impl Store {
    // ---- the package catalog ---------------------------------------------------------------

    /// Adds a package (already checked to be a `flotilla-agent` .deb). The same file again is
    /// fine; another file under a version already in the catalog is a conflict.
    pub fn add_agent_package(
        &self,
        version: &str,
        arch: &str,
        sha256: [u8; 32],
        data: &[u8],
    ) -> Result<PackageAdded, StoreError> {
        let conn = self.conn();
        let existing: Option<Vec<u8>> = conn
            .query_row("SELECT sha256 FROM agent_packages WHERE version = ?1", params![version], |r| r.get(0))
            .optional()?;
        match existing {
            Some(sha) if sha == sha256 => return Ok(PackageAdded::AlreadyThere),
            Some(_) => {
                return Err(StoreError::Conflict(format!(
                    "a different flotilla-agent package with version {version} (remove it first)"
                )))
            }
            None => {}
        }
        let other: Option<String> = conn
            .query_row("SELECT version FROM agent_packages WHERE sha256 = ?1", params![&sha256[..]], |r| r.get(0))
            .optional()?;
        if let Some(other) = other {
            return Err(StoreError::Conflict(format!("this file, as version {other}")));
        }
        conn.execute(
            "INSERT INTO agent_packages (version, arch, sha256, size, data, added_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![version, arch, &sha256[..], data.len() as i64, data, unix(OffsetDateTime::now_utc())],
        )?;
        Ok(PackageAdded::Added)
    }

    /// The catalog, newest first.
    pub fn agent_packages(&self) -> Result<Vec<AgentPackageRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT version, arch, sha256, size, added_at FROM agent_packages ORDER BY added_at DESC, version DESC",
        )?;
        let rows = stmt.query_map([], package_from_row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(with_sha).collect()
    }

    /// One package of the catalog.
    pub fn agent_package(&self, version: &str) -> Result<Option<AgentPackageRecord>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT version, arch, sha256, size, added_at FROM agent_packages WHERE version = ?1",
                params![version],
                package_from_row,
            )
            .optional()?;
        row.map(with_sha).transpose()
    }

    /// Up to `len` bytes of the package with digest `sha256` from `offset`; `None` when the
    /// catalog has no such package.
    pub fn agent_package_chunk(&self, sha256: &[u8; 32], offset: u64, len: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.conn();
        let row: Option<(i64, Option<Vec<u8>>)> = conn
            .query_row(
                // substr() on a BLOB counts bytes, from 1.
                "SELECT size, substr(data, ?2 + 1, ?3) FROM agent_packages WHERE sha256 = ?1",
                params![&sha256[..], offset as i64, len as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(size, data)| if offset >= size as u64 { Vec::new() } else { data.unwrap_or_default() }))
    }

    /// The whole file of a catalog package.
    pub fn agent_package_file(&self, version: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT data FROM agent_packages WHERE version = ?1", params![version], |r| r.get(0))
            .optional()?)
    }

    /// Removes a package; refused while a running rollout installs it. False if it was not there.
    pub fn delete_agent_package(&self, version: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        let running: Option<i64> = conn
            .query_row(
                "SELECT id FROM rollouts WHERE version = ?1 AND state = 'running' LIMIT 1",
                params![version],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = running {
            return Err(StoreError::Invalid(format!("rollout {id} is installing {version}; cancel it first")));
        }
        Ok(conn.execute("DELETE FROM agent_packages WHERE version = ?1", params![version])? > 0)
    }

    /// The `flotilla-agent` package version a node's agent reported (`None`: not run from the
    /// package).
    pub fn record_agent_package_version(&self, node: NodeId, version: Option<&str>) -> Result<(), StoreError> {
        self.conn().execute("UPDATE nodes SET agent_package = ?2 WHERE id = ?1", params![node.0, version])?;
        Ok(())
    }

    /// The package version a node last reported.
    pub fn agent_package_version(&self, node: NodeId) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT agent_package FROM nodes WHERE id = ?1", params![node.0], |r| r.get(0))
            .optional()?
            .flatten())
    }

    // ---- rollouts -------------------------------------------------------------------------

    /// Creates a running rollout. Nodes that cannot take part are recorded as skipped with the
    /// reason: already on the version, never reported a package version, or on a version the
    /// catalog lacks (nothing to roll back to).
    pub fn create_rollout(&self, new: &NewRollout) -> Result<RolloutView, StoreError> {
        if new.batch_size == 0 {
            return Err(StoreError::Invalid("batch_size must be at least 1".into()));
        }
        if new.health_timeout_s == 0 {
            return Err(StoreError::Invalid("health_timeout must be at least 1 second".into()));
        }
        let id = {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM agent_packages WHERE version = ?1)",
                params![new.version],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StoreError::NotFound(format!("flotilla-agent package {}", new.version)));
            }
            let running: Option<i64> =
                tx.query_row("SELECT id FROM rollouts WHERE state = 'running' LIMIT 1", [], |r| r.get(0)).optional()?;
            if let Some(running) = running {
                return Err(StoreError::Invalid(format!(
                    "rollout {running} is still running; wait for it or cancel it first"
                )));
            }
            let all: Vec<(i64, String, Option<String>)> = {
                let mut stmt = tx.prepare("SELECT id, name, agent_package FROM nodes ORDER BY id")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let chosen: Vec<(i64, String, Option<String>)> = match &new.nodes {
                None => all,
                Some(ids) => {
                    let mut chosen = Vec::with_capacity(ids.len());
                    for id in ids {
                        if chosen.iter().any(|(c, _, _)| *c == id.0) {
                            return Err(StoreError::Invalid(format!("node {id} is listed twice")));
                        }
                        let node = all
                            .iter()
                            .find(|(n, _, _)| *n == id.0)
                            .ok_or_else(|| StoreError::NotFound(format!("node {id}")))?;
                        chosen.push(node.clone());
                    }
                    chosen
                }
            };
            if chosen.is_empty() {
                return Err(StoreError::Invalid("there are no nodes to upgrade".into()));
            }
            let now = unix(OffsetDateTime::now_utc());
            tx.execute(
                "INSERT INTO rollouts (version, batch_size, canary, health_timeout_s, state, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
                params![new.version, new.batch_size, new.canary, new.health_timeout_s, new.created_by, now],
            )?;
            let id = tx.last_insert_rowid();
            let mut position = 0u32;
            for (node, name, from) in chosen {
                let skip = match from.as_deref() {
                    Some(v) if v == new.version => Some(format!("already runs {v}")),
                    None => Some(
                        "its agent has reported no flotilla-agent package version (not installed from the \
                         package, or not connected since this controller was upgraded)"
                            .to_string(),
                    ),
                    Some(v) => {
                        let known: bool = tx.query_row(
                            "SELECT EXISTS(SELECT 1 FROM agent_packages WHERE version = ?1)",
                            params![v],
                            |r| r.get(0),
                        )?;
                        (!known).then(|| {
                            format!("it runs {v}, which is not in the package catalog: nothing to roll back to")
                        })
                    }
                };
                let (state, wave) = match skip {
                    Some(_) => (NodeUpgradeState::Skipped, None),
                    None => {
                        let wave = wave_of(position, new.batch_size, new.canary);
                        position += 1;
                        (NodeUpgradeState::Pending, Some(wave))
                    }
                };
                tx.execute(
                    "INSERT INTO rollout_nodes (rollout_id, node_id, node_name, position, wave, state, from_version,
                     message, finished_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        id,
                        node,
                        name,
                        position,
                        // Skipped nodes sort after every wave.
                        wave.unwrap_or(u32::MAX),
                        state.as_str(),
                        from,
                        skip,
                        wave.is_none().then_some(now)
                    ],
                )?;
            }
            tx.commit()?;
            RolloutId(id)
        };
        self.rollout(id)?.ok_or_else(|| StoreError::Corrupt("rollout vanished".into()))
    }

    /// One rollout with its nodes (waves in order, then skipped nodes).
    pub fn rollout(&self, id: RolloutId) -> Result<Option<RolloutView>, StoreError> {
        let conn = self.conn();
        let sql = format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?1");
        let Some((mut rollout, state)) = conn.query_row(&sql, params![id.0], rollout_from_row).optional()? else {
            return Ok(None);
        };
        rollout.state = RolloutState::parse(&state)?;
        let sql =
            format!("SELECT {NODE_COLUMNS} FROM rollout_nodes WHERE rollout_id = ?1 ORDER BY wave, position, rowid");
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![id.0], node_from_row)?.collect::<Result<Vec<_>, _>>()?;
        let nodes = rows
            .into_iter()
            .map(|(mut node, state)| {
                node.state = NodeUpgradeState::parse(&state)?;
                Ok(node)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some(RolloutView { rollout, nodes }))
    }

    /// Every rollout, newest first, with their nodes.
    pub fn rollouts(&self) -> Result<Vec<RolloutView>, StoreError> {
        let ids: Vec<i64> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT id FROM rollouts ORDER BY id DESC")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        ids.into_iter().filter_map(|id| self.rollout(RolloutId(id)).transpose()).collect()
    }

    /// The rollout in state `running`, if any (there is at most one).
    pub fn running_rollout(&self) -> Result<Option<RolloutId>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT id FROM rollouts WHERE state = 'running' ORDER BY id LIMIT 1", [], |r| r.get(0))
            .optional()?
            .map(RolloutId))
    }

    /// Moves a node of a rollout to `state`. `deadline` is set when it starts upgrading; a
    /// final state records the finish time.
    pub fn set_rollout_node(
        &self,
        id: RolloutId,
        node: NodeId,
        state: NodeUpgradeState,
        message: Option<&str>,
        from_version: Option<&str>,
        deadline: Option<OffsetDateTime>,
    ) -> Result<(), StoreError> {
        let now = unix(OffsetDateTime::now_utc());
        let started = (state == NodeUpgradeState::Upgrading).then_some(now);
        let finished = (!matches!(state, NodeUpgradeState::Pending | NodeUpgradeState::Upgrading)).then_some(now);
        self.conn().execute(
            "UPDATE rollout_nodes SET state = ?3, message = ?4, from_version = COALESCE(?5, from_version),
             started_at = COALESCE(?6, started_at), deadline_at = COALESCE(?7, deadline_at), finished_at = ?8
             WHERE rollout_id = ?1 AND node_id = ?2",
            params![id.0, node.0, state.as_str(), message, from_version, started, deadline.map(unix), finished],
        )?;
        Ok(())
    }

    /// Ends a running rollout. False if it was not running (cancelled meanwhile).
    pub fn finish_rollout(&self, id: RolloutId, state: RolloutState, message: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE rollouts SET state = ?2, message = ?3, finished_at = ?4 WHERE id = ?1 AND state = 'running'",
            params![id.0, state.as_str(), message, unix(OffsetDateTime::now_utc())],
        )? > 0)
    }

    /// Records how an upgrade ended, as the node's agent reported it: a node still upgrading, or
    /// one given up on, gets its final state. Returns the new state when a row changed.
    pub fn record_upgrade_outcome(
        &self,
        node: NodeId,
        outcome: &UpgradeOutcome,
    ) -> Result<Option<NodeUpgradeState>, StoreError> {
        let (state, message) = match &outcome.result {
            UpgradeResult::Upgraded => (NodeUpgradeState::Upgraded, None),
            UpgradeResult::RolledBack { reason } => {
                (NodeUpgradeState::RolledBack, Some(format!("rolled back to {}: {reason}", outcome.from_version)))
            }
            UpgradeResult::Failed { reason } => (NodeUpgradeState::Failed, Some(format!("rollback failed: {reason}"))),
        };
        let changed = self.conn().execute(
            "UPDATE rollout_nodes SET state = ?3, message = COALESCE(?4, message), finished_at = ?5
             WHERE rollout_id = ?1 AND node_id = ?2 AND state IN ('upgrading', 'failed') AND state != ?3",
            params![outcome.rollout.0, node.0, state.as_str(), message, (outcome.finished_at_ms / 1000) as i64],
        )?;
        Ok((changed > 0).then_some(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewNode;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn node(store: &Store, name: &str, package: Option<&str>) -> NodeId {
        let id = store.create_node(&NewNode { name: name.into(), ..Default::default() }).unwrap().id;
        store.record_agent_package_version(id, package).unwrap();
        id
    }

    fn new(version: &str) -> NewRollout {
        NewRollout {
            version: version.into(),
            batch_size: 2,
            canary: true,
            health_timeout_s: 60,
            nodes: None,
            created_by: "admin".into(),
        }
    }

    #[test]
    fn waves_start_with_a_canary_then_batches() {
        let waves: Vec<u32> = (0..6).map(|p| wave_of(p, 2, true)).collect();
        assert_eq!(waves, [0, 1, 1, 2, 2, 3]);
        let waves: Vec<u32> = (0..5).map(|p| wave_of(p, 2, false)).collect();
        assert_eq!(waves, [0, 0, 1, 1, 2]);
        assert_eq!(wave_of(3, 0, false), 3, "a zero batch size is taken as one");
    }

    #[test]
    fn catalog_keeps_one_file_per_version_and_serves_chunks() {
        let (_dir, store) = store();
        let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let sha = [1u8; 32];
        assert_eq!(store.add_agent_package("0.2.0-1", "amd64", sha, &data).unwrap(), PackageAdded::Added);
        assert_eq!(store.add_agent_package("0.2.0-1", "amd64", sha, &data).unwrap(), PackageAdded::AlreadyThere);
        assert!(matches!(store.add_agent_package("0.2.0-1", "amd64", [2; 32], &data), Err(StoreError::Conflict(_))));
        assert!(matches!(store.add_agent_package("0.3.0-1", "amd64", sha, &data), Err(StoreError::Conflict(_))));
        let listed = store.agent_packages().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].size, listed[0].sha256), (3000, sha));
        assert_eq!(store.agent_package_chunk(&sha, 0, 1000).unwrap().unwrap(), &data[..1000]);
        assert_eq!(store.agent_package_chunk(&sha, 2500, 1000).unwrap().unwrap(), &data[2500..]);
        assert_eq!(store.agent_package_chunk(&sha, 3000, 1000).unwrap().unwrap(), Vec::<u8>::new());
        assert_eq!(store.agent_package_chunk(&[9; 32], 0, 10).unwrap(), None);
        assert!(store.delete_agent_package("0.2.0-1").unwrap());
        assert!(!store.delete_agent_package("0.2.0-1").unwrap());
    }

    #[test]
    fn rollout_skips_nodes_it_cannot_upgrade_or_roll_back_and_orders_the_rest_in_waves() {
        let (_dir, store) = store();
        store.add_agent_package("0.1.0-1", "amd64", [1; 32], b"old").unwrap();
        store.add_agent_package("0.2.0-1", "amd64", [2; 32], b"new").unwrap();
        let a = node(&store, "a", Some("0.1.0-1"));
        let current = node(&store, "current", Some("0.2.0-1"));
        let b = node(&store, "b", Some("0.1.0-1"));
        let dev = node(&store, "dev", None);
        let foreign = node(&store, "foreign", Some("0.0.9-1"));
        let c = node(&store, "c", Some("0.1.0-1"));

        assert!(matches!(store.create_rollout(&new("9.9.9-1")), Err(StoreError::NotFound(_))));
        let view = store.create_rollout(&new("0.2.0-1")).unwrap();
        assert_eq!(view.rollout.state, RolloutState::Running);
        let order: Vec<(NodeId, u32, NodeUpgradeState)> =
            view.nodes.iter().map(|n| (n.node_id, n.wave, n.state)).collect();
        let (p, s) = (NodeUpgradeState::Pending, NodeUpgradeState::Skipped);
        assert_eq!(
            order,
            [(a, 0, p), (b, 1, p), (c, 1, p), (current, u32::MAX, s), (dev, u32::MAX, s), (foreign, u32::MAX, s)]
        );
        let why = |id| view.nodes.iter().find(|n| n.node_id == id).unwrap().message.clone().unwrap();
        assert_eq!(why(current), "already runs 0.2.0-1");
        assert!(why(dev).contains("no flotilla-agent package version"), "{}", why(dev));
        assert!(why(foreign).contains("nothing to roll back to"), "{}", why(foreign));

        // One at a time; the package it installs stays while it runs.
        assert!(matches!(store.create_rollout(&new("0.2.0-1")), Err(StoreError::Invalid(_))));
        assert!(matches!(store.delete_agent_package("0.2.0-1"), Err(StoreError::Invalid(_))));
        assert_eq!(store.running_rollout().unwrap(), Some(view.rollout.id));

        // The agent's report settles a node still upgrading, and one given up on.
        let id = view.rollout.id;
        store.set_rollout_node(id, a, NodeUpgradeState::Upgrading, None, Some("0.1.0-1"), None).unwrap();
        let outcome = UpgradeOutcome {
            rollout: id,
            from_version: "0.1.0-1".into(),
            to_version: "0.2.0-1".into(),
            result: UpgradeResult::RolledBack { reason: "exited at once".into() },
            finished_at_ms: 1_700_000_000_000,
        };
        store.set_rollout_node(id, a, NodeUpgradeState::Failed, Some("did not come back"), None, None).unwrap();
        assert_eq!(store.record_upgrade_outcome(a, &outcome).unwrap(), Some(NodeUpgradeState::RolledBack));
        assert_eq!(store.record_upgrade_outcome(a, &outcome).unwrap(), None, "recorded once");
        assert_eq!(store.record_upgrade_outcome(b, &outcome).unwrap(), None, "b never started");
        let node_a = store.rollout(id).unwrap().unwrap().nodes.into_iter().find(|n| n.node_id == a).unwrap();
        assert_eq!(node_a.state, NodeUpgradeState::RolledBack);
        assert_eq!(node_a.message.as_deref(), Some("rolled back to 0.1.0-1: exited at once"));

        assert!(store.finish_rollout(id, RolloutState::Failed, "node a rolled back").unwrap());
        assert!(!store.finish_rollout(id, RolloutState::Succeeded, "again").unwrap());
        assert_eq!(store.running_rollout().unwrap(), None);
        let explicit = NewRollout { nodes: Some(vec![c, c]), ..new("0.2.0-1") };
        assert!(matches!(store.create_rollout(&explicit), Err(StoreError::Invalid(_))));
        let explicit = NewRollout { nodes: Some(vec![c, b]), ..new("0.2.0-1") };
        let view = store.create_rollout(&explicit).unwrap();
        assert_eq!(view.nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(), [c, b]);
        assert_eq!(store.rollouts().unwrap().len(), 2);
    }
}
