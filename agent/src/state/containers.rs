//! The containers driver's records in `agent.db`: the containers this agent created (the only
//! ones it changes) with their bridge address, their snapshots, and the tasks it ran with their
//! logs.

use std::net::Ipv4Addr;

use flotilla_protocol::containers::{TaskInfo, TaskState, Upid};
use rusqlite::{params, OptionalExtension};

use super::{StateError, StateStore};

/// What the agent knows about a container it created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedContainer {
    pub name: String,
    pub ipv4: Ipv4Addr,
    pub cores: u32,
    pub memory_mib: u64,
    /// Recorded only: the LXC dir backend has no disk quota.
    pub disk_gb: u64,
    /// False until its create task finished.
    pub created: bool,
}

/// A snapshot, by the name the controller gave it, and the backend's own name for it
/// (`lxc-snapshot` names them `snap0`, `snap1`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub name: String,
    pub backend_name: String,
    pub description: String,
    pub snaptime: u64,
}

/// Why a container could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("a container named {0} is already managed by this agent")]
    NameTaken(String),
    #[error("no free address left in the pool ({0} addresses, all in use)")]
    PoolExhausted(usize),
    #[error(transparent)]
    State(#[from] StateError),
}

const TASK_STATE_RUNNING: &str = "running";
const TASK_STATE_OK: &str = "ok";
const TASK_STATE_ERROR: &str = "error";

fn task_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskInfo> {
    let state: String = r.get(3)?;
    let message: Option<String> = r.get(4)?;
    let log: String = r.get(7)?;
    Ok(TaskInfo {
        upid: Upid(r.get(0)?),
        kind: r.get(1)?,
        container: r.get(2)?,
        state: match state.as_str() {
            TASK_STATE_RUNNING => TaskState::Running,
            TASK_STATE_OK => TaskState::Ok,
            _ => TaskState::Error { message: message.unwrap_or_default() },
        },
        started_ms: r.get::<_, i64>(5)? as u64,
        ended_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        log: if log.is_empty() { vec![] } else { log.split('\n').map(str::to_string).collect() },
    })
}

const TASK_COLUMNS: &str = "upid, kind, container, state, message, started_ms, ended_ms, log";

impl StateStore {
    /// Reserves `name` and the first address of `pool` no managed container holds, in one
    /// transaction: an address is never handed out twice while in use.
    pub fn register_container(
        &self,
        name: &str,
        pool: &[Ipv4Addr],
        cores: u32,
        memory_mib: u64,
        disk_gb: u64,
    ) -> Result<Ipv4Addr, RegisterError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(StateError::from)?;
        let taken: Option<String> = tx
            .query_row("SELECT name FROM containers WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(StateError::from)?;
        if taken.is_some() {
            return Err(RegisterError::NameTaken(name.into()));
        }
        let used: Vec<String> = {
            let mut stmt = tx.prepare("SELECT ipv4 FROM containers").map_err(StateError::from)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(StateError::from)?;
            rows.collect::<Result<_, _>>().map_err(StateError::from)?
        };
        let ip = pool
            .iter()
            .find(|ip| !used.iter().any(|u| u == &ip.to_string()))
            .copied()
            .ok_or(RegisterError::PoolExhausted(pool.len()))?;
        tx.execute(
            "INSERT INTO containers (name, ipv4, cores, memory_mib, disk_gb, created) VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            params![name, ip.to_string(), cores, memory_mib as i64, disk_gb as i64],
        )
        .map_err(StateError::from)?;
        tx.commit().map_err(StateError::from)?;
        Ok(ip)
    }

    /// Marks a container's creation as done.
    pub fn container_created(&self, name: &str) -> Result<(), StateError> {
        self.conn().execute("UPDATE containers SET created = 1 WHERE name = ?1", [name])?;
        Ok(())
    }

    /// Forgets a container (deleted, or its creation failed): its address is free again.
    pub fn unregister_container(&self, name: &str) -> Result<(), StateError> {
        let conn = self.conn();
        conn.execute("DELETE FROM container_snapshots WHERE container = ?1", [name])?;
        conn.execute("DELETE FROM containers WHERE name = ?1", [name])?;
        Ok(())
    }

    /// Records new resource limits; `None` keeps the current value.
    pub fn update_container_limits(
        &self,
        name: &str,
        cores: Option<u32>,
        memory_mib: Option<u64>,
        disk_gb: Option<u64>,
    ) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE containers SET cores = COALESCE(?2, cores), memory_mib = COALESCE(?3, memory_mib),
                 disk_gb = COALESCE(?4, disk_gb) WHERE name = ?1",
            params![name, cores, memory_mib.map(|v| v as i64), disk_gb.map(|v| v as i64)],
        )?;
        Ok(())
    }

    /// One managed container.
    pub fn managed_container(&self, name: &str) -> Result<Option<ManagedContainer>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, ipv4, cores, memory_mib, disk_gb, created FROM containers WHERE name = ?1",
                [name],
                container_from_row,
            )
            .optional()?)
    }

    /// Every managed container, by name.
    pub fn managed_containers(&self) -> Result<Vec<ManagedContainer>, StateError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, ipv4, cores, memory_mib, disk_gb, created FROM containers ORDER BY name")?;
        let rows = stmt.query_map([], container_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a snapshot taken by the backend.
    pub fn add_snapshot(&self, container: &str, snapshot: &SnapshotRecord) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO container_snapshots (container, name, backend_name, description, snaptime)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![container, snapshot.name, snapshot.backend_name, snapshot.description, snapshot.snaptime as i64],
        )?;
        Ok(())
    }

    /// Forgets one snapshot.
    pub fn remove_snapshot(&self, container: &str, name: &str) -> Result<(), StateError> {
        self.conn().execute("DELETE FROM container_snapshots WHERE container = ?1 AND name = ?2", [container, name])?;
        Ok(())
    }

    /// A container's snapshots, oldest first.
    pub fn snapshots(&self, container: &str) -> Result<Vec<SnapshotRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, backend_name, description, snaptime FROM container_snapshots
             WHERE container = ?1 ORDER BY snaptime, rowid",
        )?;
        let rows = stmt.query_map([container], |r| {
            Ok(SnapshotRecord {
                name: r.get(0)?,
                backend_name: r.get(1)?,
                description: r.get(2)?,
                snaptime: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether a task with this id was ever recorded.
    pub fn task_exists(&self, upid: &str) -> Result<bool, StateError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM container_tasks WHERE upid = ?1", [upid], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Records a task that just started.
    pub fn insert_task(&self, task: &TaskInfo) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO container_tasks (upid, kind, container, state, started_ms, log) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![task.upid.0, task.kind, task.container, TASK_STATE_RUNNING, task.started_ms as i64, task.log.join("\n")],
        )?;
        Ok(())
    }

    /// Appends one line to a task's log.
    pub fn append_task_log(&self, upid: &Upid, line: &str) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE container_tasks SET log = CASE WHEN log = '' THEN ?2 ELSE log || char(10) || ?2 END WHERE upid = ?1",
            params![upid.0, line],
        )?;
        Ok(())
    }

    /// Records how a task ended, then forgets all but the `keep` newest ended tasks.
    pub fn finish_task(&self, upid: &Upid, state: &TaskState, ended_ms: u64, keep: usize) -> Result<(), StateError> {
        let (state, message) = match state {
            TaskState::Running => (TASK_STATE_RUNNING, None),
            TaskState::Ok => (TASK_STATE_OK, None),
            TaskState::Error { message } => (TASK_STATE_ERROR, Some(message.as_str())),
        };
        let conn = self.conn();
        conn.execute(
            "UPDATE container_tasks SET state = ?2, message = ?3, ended_ms = ?4 WHERE upid = ?1",
            params![upid.0, state, message, ended_ms as i64],
        )?;
        conn.execute(
            "DELETE FROM container_tasks WHERE state != ?1 AND upid NOT IN
                 (SELECT upid FROM container_tasks ORDER BY started_ms DESC, rowid DESC LIMIT ?2)",
            params![TASK_STATE_RUNNING, keep as i64],
        )?;
        Ok(())
    }

    /// One task with its whole log.
    pub fn task(&self, upid: &Upid) -> Result<Option<TaskInfo>, StateError> {
        Ok(self
            .conn()
            .query_row(&format!("SELECT {TASK_COLUMNS} FROM container_tasks WHERE upid = ?1"), [&upid.0], task_from_row)
            .optional()?)
    }

    /// Marks every task still `Running` as failed (called at start: nothing runs them any more),
    /// returning how many there were.
    pub fn fail_interrupted_tasks(&self, message: &str, ended_ms: u64) -> Result<usize, StateError> {
        Ok(self.conn().execute(
            "UPDATE container_tasks SET state = ?1, message = ?2, ended_ms = ?3 WHERE state = ?4",
            params![TASK_STATE_ERROR, message, ended_ms as i64, TASK_STATE_RUNNING],
        )?)
    }
}

fn container_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ManagedContainer> {
    let ip: String = r.get(1)?;
    Ok(ManagedContainer {
        name: r.get(0)?,
        ipv4: ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
        cores: r.get(2)?,
        memory_mib: r.get::<_, i64>(3)? as u64,
        disk_gb: r.get::<_, i64>(4)? as u64,
        created: r.get(5)?,
    })
}
