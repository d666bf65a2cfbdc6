//! The VPS API's data: the OS and tariff catalogs, virtual servers (containers on nodes, each
//! owned by one user), the tasks the agents ran for them, and their recorded metrics.

use flotilla_protocol::containers::{ContainerSample, OsTemplate, TaskInfo, TaskState, Upid};
use flotilla_protocol::NodeId;
use rusqlite::{params, OptionalExtension, Row};
use time::OffsetDateTime;

use super::{from_unix, unix, Store, StoreError};

/// An OS template of the catalog (`osId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsRecord {
    pub id: i64,
    pub name: String,
    /// `linux` (the original panel also knew `windows`).
    pub kind: String,
    pub template: OsTemplate,
}

/// A tariff of the catalog (`tariffId`).
#[derive(Debug, Clone, PartialEq)]
pub struct TariffRecord {
    pub id: i64,
    pub name: String,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gb: u64,
    pub price: f64,
    pub description: String,
}

/// Lifecycle of a virtual server as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStatus {
    Creating,
    Running,
    Stopped,
    /// Its create task failed; the message is on the task.
    Error,
    /// Its delete task runs.
    Deleting,
}

impl ServerStatus {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Creating => "creating",
            ServerStatus::Running => "running",
            ServerStatus::Stopped => "stopped",
            ServerStatus::Error => "error",
            ServerStatus::Deleting => "deleting",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "creating" => ServerStatus::Creating,
            "running" => ServerStatus::Running,
            "stopped" => ServerStatus::Stopped,
            "error" => ServerStatus::Error,
            "deleting" => ServerStatus::Deleting,
            other => return Err(StoreError::Corrupt(format!("server status {other:?}"))),
        })
    }
}

/// A virtual server.
#[derive(Debug, Clone)]
pub struct ServerRecord {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub node_id: Option<NodeId>,
    pub os_id: i64,
    pub tariff_id: i64,
    /// Name of its container on the node.
    pub container: String,
    /// Proxmox-style numeric id shown as `proxmoxId` (100 + id).
    pub vmid: i64,
    pub status: ServerStatus,
    pub ip_address: Option<String>,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gb: u64,
    pub create_task: Option<Upid>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// What creating a server records (the container is created afterwards, by its node).
#[derive(Debug, Clone)]
pub struct NewServer {
    pub user_id: i64,
    pub node_id: NodeId,
    pub os_id: i64,
    pub tariff_id: i64,
    pub root_password: String,
}

/// A task as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub upid: Upid,
    pub server_id: Option<i64>,
    /// Owner of its server (kept after the server is deleted).
    pub user_id: Option<i64>,
    pub node_id: Option<NodeId>,
    pub kind: String,
    pub state: TaskState,
    pub log: Vec<String>,
    pub started_at: OffsetDateTime,
    pub ended_at: Option<OffsetDateTime>,
}

/// The catalog text of a template: `busybox`, `debian:<release>`, or `lxc:<template> [args…]`.
pub fn template_to_text(t: &OsTemplate) -> String {
    match t {
        OsTemplate::Busybox => "busybox".into(),
        OsTemplate::Debian { release } => format!("debian:{release}"),
        OsTemplate::Named { template, args } => {
            std::iter::once(format!("lxc:{template}")).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ")
        }
    }
}

/// Parses [`template_to_text`]'s form.
pub fn template_from_text(s: &str) -> Result<OsTemplate, String> {
    let s = s.trim();
    if s == "busybox" {
        return Ok(OsTemplate::Busybox);
    }
    if let Some(release) = s.strip_prefix("debian:") {
        if release.is_empty() || !release.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("debian release {release:?} is not a release name (bookworm)"));
        }
        return Ok(OsTemplate::Debian { release: release.into() });
    }
    if let Some(rest) = s.strip_prefix("lxc:") {
        let mut parts = rest.split_whitespace().map(str::to_string);
        let template = parts.next().filter(|t| !t.is_empty()).ok_or("lxc: needs a template name")?;
        return Ok(OsTemplate::Named { template, args: parts.collect() });
    }
    Err(format!("template {s:?}: expected busybox, debian:<release> or lxc:<template> [args]"))
}

const SERVER_COLUMNS: &str = "s.id, s.user_id, u.username, s.node_id, s.os_id, s.tariff_id, s.container, s.vmid, \
     s.status, s.ip_address, s.cores, s.memory_mib, s.disk_gb, s.create_task, s.created_at, s.updated_at";

fn server_from_row(r: &Row<'_>) -> rusqlite::Result<(ServerRecord, String)> {
    Ok((
        ServerRecord {
            id: r.get(0)?,
            user_id: r.get(1)?,
            username: r.get(2)?,
            node_id: r.get::<_, Option<i64>>(3)?.map(NodeId),
            os_id: r.get(4)?,
            tariff_id: r.get(5)?,
            container: r.get(6)?,
            vmid: r.get(7)?,
            status: ServerStatus::Creating,
            ip_address: r.get(9)?,
            cores: r.get(10)?,
            memory_mib: r.get::<_, i64>(11)? as u64,
            disk_gb: r.get::<_, i64>(12)? as u64,
            create_task: r.get::<_, Option<String>>(13)?.map(Upid),
            created_at: from_unix(r.get(14)?),
            updated_at: from_unix(r.get(15)?),
        },
        r.get(8)?,
    ))
}

fn finish_server((mut s, status): (ServerRecord, String)) -> Result<ServerRecord, StoreError> {
    s.status = ServerStatus::parse(&status)?;
    Ok(s)
}

fn os_from_row(r: &Row<'_>) -> rusqlite::Result<(i64, String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn finish_os((id, name, kind, template): (i64, String, String, String)) -> Result<OsRecord, StoreError> {
    let template = template_from_text(&template).map_err(StoreError::Corrupt)?;
    Ok(OsRecord { id, name, kind, template })
}

fn tariff_from_row(r: &Row<'_>) -> rusqlite::Result<TariffRecord> {
    Ok(TariffRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        cores: r.get(2)?,
        memory_mib: r.get::<_, i64>(3)? as u64,
        disk_gb: r.get::<_, i64>(4)? as u64,
        price: r.get(5)?,
        description: r.get(6)?,
    })
}

fn task_state_to_db(state: &TaskState) -> (&'static str, Option<&str>) {
    match state {
        TaskState::Running => ("running", None),
        TaskState::Ok => ("ok", None),
        TaskState::Error { message } => ("error", Some(message.as_str())),
    }
}

fn unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

impl Store {
    // ---- catalogs -------------------------------------------------------------------------

    /// Adds an OS template to the catalog.
    pub fn add_os(&self, name: &str, kind: &str, template: &OsTemplate) -> Result<OsRecord, StoreError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("name must not be empty".into()));
        }
        let conn = self.conn();
        conn.execute(
            "INSERT INTO vps_os (name, type, template, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, kind, template_to_text(template), unix(OffsetDateTime::now_utc())],
        )
        .map_err(|e| {
            if unique_violation(&e) {
                StoreError::Conflict(format!("an OS named {name:?}"))
            } else {
                e.into()
            }
        })?;
        Ok(OsRecord { id: conn.last_insert_rowid(), name: name.into(), kind: kind.into(), template: template.clone() })
    }

    /// The OS catalog, by id.
    pub fn os_list(&self) -> Result<Vec<OsRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, name, type, template FROM vps_os ORDER BY id")?;
        let rows = stmt.query_map([], os_from_row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(finish_os).collect()
    }

    /// One OS of the catalog.
    pub fn os(&self, id: i64) -> Result<Option<OsRecord>, StoreError> {
        let row = self
            .conn()
            .query_row("SELECT id, name, type, template FROM vps_os WHERE id = ?1", params![id], os_from_row)
            .optional()?;
        row.map(finish_os).transpose()
    }

    /// Removes an OS; refused while a server uses it.
    pub fn delete_os(&self, id: i64) -> Result<bool, StoreError> {
        let conn = self.conn();
        let used: i64 =
            conn.query_row("SELECT COUNT(*) FROM vps_servers WHERE os_id = ?1", params![id], |r| r.get(0))?;
        if used > 0 {
            return Err(StoreError::Invalid(format!("OS {id} is used by {used} server(s)")));
        }
        Ok(conn.execute("DELETE FROM vps_os WHERE id = ?1", params![id])? > 0)
    }

    /// Adds a tariff to the catalog.
    pub fn add_tariff(&self, t: &TariffRecord) -> Result<TariffRecord, StoreError> {
        let name = t.name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid("name must not be empty".into()));
        }
        if t.cores == 0 || t.memory_mib < 16 || t.disk_gb == 0 {
            return Err(StoreError::Invalid(
                "a tariff needs at least 1 core, 16 MiB of memory and 1 GB of disk".into(),
            ));
        }
        if !(t.price.is_finite() && t.price >= 0.0) {
            return Err(StoreError::Invalid("price must be a number of at least 0".into()));
        }
        let conn = self.conn();
        conn.execute(
            "INSERT INTO vps_tariffs (name, cores, memory_mib, disk_gb, price, description, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                name,
                t.cores,
                t.memory_mib as i64,
                t.disk_gb as i64,
                t.price,
                t.description,
                unix(OffsetDateTime::now_utc())
            ],
        )
        .map_err(|e| {
            if unique_violation(&e) {
                StoreError::Conflict(format!("a tariff named {name:?}"))
            } else {
                e.into()
            }
        })?;
        Ok(TariffRecord { id: conn.last_insert_rowid(), name: name.into(), ..t.clone() })
    }

    /// The tariff catalog, by id.
    pub fn tariffs(&self) -> Result<Vec<TariffRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, name, cores, memory_mib, disk_gb, price, description FROM vps_tariffs ORDER BY id")?;
        let rows = stmt.query_map([], tariff_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One tariff.
    pub fn tariff(&self, id: i64) -> Result<Option<TariffRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, cores, memory_mib, disk_gb, price, description FROM vps_tariffs WHERE id = ?1",
                params![id],
                tariff_from_row,
            )
            .optional()?)
    }

    /// Removes a tariff; refused while a server uses it.
    pub fn delete_tariff(&self, id: i64) -> Result<bool, StoreError> {
        let conn = self.conn();
        let used: i64 =
            conn.query_row("SELECT COUNT(*) FROM vps_servers WHERE tariff_id = ?1", params![id], |r| r.get(0))?;
        if used > 0 {
            return Err(StoreError::Invalid(format!("tariff {id} is used by {used} server(s)")));
        }
        Ok(conn.execute("DELETE FROM vps_tariffs WHERE id = ?1", params![id])? > 0)
    }

    // ---- servers --------------------------------------------------------------------------

    /// Records a new server in state `creating`, sized by its tariff, with a container name of
    /// its own (`vps-<id>-<random>`).
    pub fn create_server(&self, new: &NewServer) -> Result<ServerRecord, StoreError> {
        let id = {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let tariff: Option<(u32, i64, i64)> = tx
                .query_row(
                    "SELECT cores, memory_mib, disk_gb FROM vps_tariffs WHERE id = ?1",
                    params![new.tariff_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let (cores, memory, disk) =
                tariff.ok_or_else(|| StoreError::NotFound(format!("tariff {}", new.tariff_id)))?;
            let os: bool =
                tx.query_row("SELECT EXISTS(SELECT 1 FROM vps_os WHERE id = ?1)", params![new.os_id], |r| r.get(0))?;
            if !os {
                return Err(StoreError::NotFound(format!("OS {}", new.os_id)));
            }
            let now = unix(OffsetDateTime::now_utc());
            let sealed = self.secrets.seal(new.root_password.as_bytes());
            // A placeholder name first: the real one carries the row id.
            tx.execute(
                "INSERT INTO vps_servers (user_id, node_id, os_id, tariff_id, container, vmid, status, root_password,
                 cores, memory_mib, disk_gb, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, hex(randomblob(16)), 0, 'creating', ?5, ?6, ?7, ?8, ?9, ?9)",
                params![new.user_id, new.node_id.0, new.os_id, new.tariff_id, sealed, cores, memory, disk, now],
            )?;
            let id = tx.last_insert_rowid();
            // A random suffix: containers of several controllers (or of a store restored from an
            // older backup) may share a host, and LXC names are per host.
            let suffix: u32 = rand::random::<u32>() & 0xff_ffff;
            tx.execute(
                "UPDATE vps_servers SET container = ?2, vmid = ?3 WHERE id = ?1",
                params![id, format!("vps-{id}-{suffix:06x}"), 100 + id],
            )?;
            tx.commit()?;
            id
        };
        self.server(id)?.ok_or_else(|| StoreError::Corrupt("server vanished after insert".into()))
    }

    /// One server.
    pub fn server(&self, id: i64) -> Result<Option<ServerRecord>, StoreError> {
        let sql =
            format!("SELECT {SERVER_COLUMNS} FROM vps_servers s JOIN users u ON u.id = s.user_id WHERE s.id = ?1");
        let row = self.conn().query_row(&sql, params![id], server_from_row).optional()?;
        row.map(finish_server).transpose()
    }

    /// The server whose container on `node` is `container`.
    pub fn server_by_container(&self, node: NodeId, container: &str) -> Result<Option<ServerRecord>, StoreError> {
        let sql = format!(
            "SELECT {SERVER_COLUMNS} FROM vps_servers s JOIN users u ON u.id = s.user_id
             WHERE s.node_id = ?1 AND s.container = ?2"
        );
        let row = self.conn().query_row(&sql, params![node.0, container], server_from_row).optional()?;
        row.map(finish_server).transpose()
    }

    /// Servers of one user (`Some`), or every server (`None`), by id.
    pub fn servers(&self, user_id: Option<i64>) -> Result<Vec<ServerRecord>, StoreError> {
        let sql = format!(
            "SELECT {SERVER_COLUMNS} FROM vps_servers s JOIN users u ON u.id = s.user_id
             WHERE ?1 IS NULL OR s.user_id = ?1 ORDER BY s.id"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![user_id], server_from_row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(finish_server).collect()
    }

    /// Servers per node with the resources their tariffs reserve: `(node, cores, memory MiB,
    /// disk GB)`, for placement.
    pub fn reserved_per_node(&self) -> Result<Vec<(NodeId, u64, u64, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT node_id, SUM(cores), SUM(memory_mib), SUM(disk_gb) FROM vps_servers
             WHERE node_id IS NOT NULL GROUP BY node_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((NodeId(r.get(0)?), r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64, r.get::<_, i64>(3)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The root password of a server (stored sealed).
    pub fn server_password(&self, id: i64) -> Result<Option<String>, StoreError> {
        let sealed: Option<Option<Vec<u8>>> = self
            .conn()
            .query_row("SELECT root_password FROM vps_servers WHERE id = ?1", params![id], |r| r.get(0))
            .optional()?;
        match sealed.flatten() {
            Some(sealed) => {
                let plain = self.secrets.open(&sealed)?;
                Ok(Some(String::from_utf8(plain).map_err(|e| StoreError::Corrupt(e.to_string()))?))
            }
            None => Ok(None),
        }
    }

    /// Records a new root password.
    pub fn set_server_password(&self, id: i64, password: &str) -> Result<(), StoreError> {
        let sealed = self.secrets.seal(password.as_bytes());
        self.conn().execute(
            "UPDATE vps_servers SET root_password = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, sealed, unix(OffsetDateTime::now_utc())],
        )?;
        Ok(())
    }

    /// Updates what the node reported: status and address (`None` keeps the address).
    pub fn set_server_state(&self, id: i64, status: ServerStatus, ip: Option<&str>) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE vps_servers SET status = ?2, ip_address = COALESCE(?3, ip_address), updated_at = ?4
             WHERE id = ?1 AND (status != ?2 OR (?3 IS NOT NULL AND ip_address IS NOT ?3))",
            params![id, status.as_str(), ip, unix(OffsetDateTime::now_utc())],
        )? > 0)
    }

    /// Records the create task of a server.
    pub fn set_server_create_task(&self, id: i64, upid: &Upid) -> Result<(), StoreError> {
        self.conn().execute("UPDATE vps_servers SET create_task = ?2 WHERE id = ?1", params![id, upid.0])?;
        Ok(())
    }

    /// Records new sizes after a resize.
    pub fn set_server_size(
        &self,
        id: i64,
        cores: Option<u32>,
        memory_mib: Option<u64>,
        disk_gb: Option<u64>,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE vps_servers SET cores = COALESCE(?2, cores), memory_mib = COALESCE(?3, memory_mib),
             disk_gb = COALESCE(?4, disk_gb), updated_at = ?5 WHERE id = ?1",
            params![
                id,
                cores,
                memory_mib.map(|m| m as i64),
                disk_gb.map(|d| d as i64),
                unix(OffsetDateTime::now_utc())
            ],
        )?;
        Ok(())
    }

    /// Forgets a server (its container is gone). Its tasks stay, detached.
    pub fn delete_server(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute("DELETE FROM vps_servers WHERE id = ?1", params![id])? > 0)
    }

    // ---- tasks ----------------------------------------------------------------------------

    /// Records (or updates) a task an agent reported or answered with.
    pub fn record_task(&self, node: NodeId, server_id: Option<i64>, task: &TaskInfo) -> Result<(), StoreError> {
        let (state, message) = task_state_to_db(&task.state);
        self.conn().execute(
            "INSERT INTO vps_tasks (upid, server_id, user_id, node_id, kind, state, message, log, started_at, ended_at)
             VALUES (?1, ?2, (SELECT user_id FROM vps_servers WHERE id = ?2), ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (upid) DO UPDATE SET
               kind = CASE WHEN excluded.kind != '' THEN excluded.kind ELSE kind END,
               server_id = COALESCE(server_id, excluded.server_id),
               user_id = COALESCE(user_id, excluded.user_id),
               -- A late 'running' (the API's own record of the start) never reopens an ended task.
               state = CASE WHEN excluded.state = 'running' AND state != 'running' THEN state ELSE excluded.state END,
               message = CASE WHEN excluded.state = 'running' AND state != 'running' THEN message ELSE excluded.message END,
               ended_at = CASE WHEN excluded.state = 'running' AND state != 'running' THEN ended_at ELSE excluded.ended_at END,
               log = CASE WHEN length(excluded.log) >= length(log) THEN excluded.log ELSE log END",
            params![
                task.upid.0,
                server_id,
                node.0,
                task.kind,
                state,
                message,
                task.log.join("\n"),
                (task.started_ms / 1000) as i64,
                task.ended_ms.map(|ms| (ms / 1000) as i64)
            ],
        )?;
        Ok(())
    }

    /// One task.
    pub fn task(&self, upid: &Upid) -> Result<Option<TaskRecord>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT upid, server_id, user_id, node_id, kind, state, message, log, started_at, ended_at
                 FROM vps_tasks WHERE upid = ?1",
                params![upid.0],
                |r| {
                    let state: String = r.get(5)?;
                    let message: Option<String> = r.get(6)?;
                    let log: String = r.get(7)?;
                    Ok((
                        TaskRecord {
                            upid: Upid(r.get(0)?),
                            server_id: r.get(1)?,
                            user_id: r.get(2)?,
                            node_id: r.get::<_, Option<i64>>(3)?.map(NodeId),
                            kind: r.get(4)?,
                            state: TaskState::Running,
                            log: if log.is_empty() { vec![] } else { log.lines().map(str::to_string).collect() },
                            started_at: from_unix(r.get(8)?),
                            ended_at: r.get::<_, Option<i64>>(9)?.map(from_unix),
                        },
                        state,
                        message,
                    ))
                },
            )
            .optional()?;
        let Some((mut task, state, message)) = row else { return Ok(None) };
        task.state = match state.as_str() {
            "running" => TaskState::Running,
            "ok" => TaskState::Ok,
            "error" => TaskState::Error { message: message.unwrap_or_default() },
            other => return Err(StoreError::Corrupt(format!("task state {other:?}"))),
        };
        Ok(Some(task))
    }

    // ---- metrics --------------------------------------------------------------------------

    /// Records one sample of a server, keeping `keep_secs` of history.
    pub fn record_server_metrics(
        &self,
        id: i64,
        sample: &ContainerSample,
        mem_max: u64,
        disk_max: u64,
        keep_secs: i64,
    ) -> Result<(), StoreError> {
        let ts = (sample.time_ms / 1000) as i64;
        let conn = self.conn();
        conn.execute(
            "INSERT OR REPLACE INTO vps_metrics (server_id, ts, cpu, mem_used, mem_max, disk_used, disk_max, net_in, net_out)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                id,
                ts,
                sample.cpu,
                sample.mem_used as i64,
                mem_max as i64,
                sample.disk_used as i64,
                disk_max as i64,
                sample.net_in as i64,
                sample.net_out as i64
            ],
        )?;
        conn.execute("DELETE FROM vps_metrics WHERE server_id = ?1 AND ts < ?2", params![id, ts - keep_secs])?;
        Ok(())
    }

    /// Recorded samples of a server since `since` (Unix seconds), oldest first:
    /// `(sample, mem_max, disk_max)`.
    pub fn server_metrics(&self, id: i64, since: i64) -> Result<Vec<(ContainerSample, u64, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT ts, cpu, mem_used, mem_max, disk_used, disk_max, net_in, net_out FROM vps_metrics
             WHERE server_id = ?1 AND ts >= ?2 ORDER BY ts",
        )?;
        let rows = stmt.query_map(params![id, since], |r| {
            Ok((
                ContainerSample {
                    time_ms: r.get::<_, i64>(0)? as u64 * 1000,
                    cpu: r.get(1)?,
                    mem_used: r.get::<_, i64>(2)? as u64,
                    disk_used: r.get::<_, i64>(4)? as u64,
                    net_in: r.get::<_, i64>(6)? as u64,
                    net_out: r.get::<_, i64>(7)? as u64,
                },
                r.get::<_, i64>(3)? as u64,
                r.get::<_, i64>(5)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- users' e-mail --------------------------------------------------------------------

    /// Sets (or clears) a user's e-mail address, unique across users (any case).
    pub fn set_user_email(&self, username: &str, email: Option<&str>) -> Result<bool, StoreError> {
        match self.conn().execute("UPDATE users SET email = ?2 WHERE username = ?1", params![username, email]) {
            Ok(n) => Ok(n > 0),
            Err(e) if unique_violation(&e) => Err(StoreError::Conflict(format!("a user with e-mail {email:?}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// The user name of whoever has `name_or_email` as name or e-mail.
    pub fn username_for_login(&self, name_or_email: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT username FROM users WHERE username = ?1 OR email = ?1 COLLATE NOCASE
                 ORDER BY username = ?1 DESC LIMIT 1",
                params![name_or_email],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// `(id, e-mail)` of a user.
    pub fn user_id_and_email(&self, username: &str) -> Result<Option<(i64, Option<String>)>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT id, email FROM users WHERE username = ?1", params![username], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewNode, Role};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn templates_round_trip_through_their_catalog_text() {
        for t in [
            OsTemplate::Busybox,
            OsTemplate::Debian { release: "bookworm".into() },
            OsTemplate::Named { template: "alpine".into(), args: vec!["-r".into(), "3.19".into()] },
        ] {
            assert_eq!(template_from_text(&template_to_text(&t)).unwrap(), t);
        }
        assert!(template_from_text("windows").is_err());
        assert!(template_from_text("debian:book worm").is_err());
    }

    #[test]
    fn servers_are_sized_by_their_tariff_and_listed_per_owner() {
        let (_dir, store) = store();
        let alice = store.create_user("alice", "x", Role::Viewer).unwrap();
        let bob = store.create_user("bob", "x", Role::Viewer).unwrap();
        assert!(store.set_user_email("alice", Some("alice@example.com")).unwrap());
        assert!(matches!(store.set_user_email("bob", Some("ALICE@example.com")), Err(StoreError::Conflict(_))));
        assert_eq!(store.username_for_login("Alice@Example.com").unwrap().as_deref(), Some("alice"));
        assert_eq!(store.username_for_login("bob").unwrap().as_deref(), Some("bob"));
        let node = store.create_node(&NewNode { name: "n1".into(), ..Default::default() }).unwrap().id;
        let os = store.add_os("BusyBox", "linux", &OsTemplate::Busybox).unwrap();
        assert!(matches!(store.add_os("BusyBox", "linux", &OsTemplate::Busybox), Err(StoreError::Conflict(_))));
        let small = TariffRecord {
            id: 0,
            name: "Small".into(),
            cores: 1,
            memory_mib: 256,
            disk_gb: 2,
            price: 300.0,
            description: String::new(),
        };
        let tariff = store.add_tariff(&small).unwrap();
        let new = |user_id| NewServer {
            user_id,
            node_id: node,
            os_id: os.id,
            tariff_id: tariff.id,
            root_password: "s3cret".into(),
        };
        let a = store.create_server(&new(alice)).unwrap();
        let suffix = a.container.strip_prefix(&format!("vps-{}-", a.id)).unwrap_or_default();
        assert!(suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_hexdigit()), "{}", a.container);
        assert_eq!((a.vmid, a.status), (100 + a.id, ServerStatus::Creating));
        assert_eq!((a.cores, a.memory_mib, a.disk_gb, a.username.as_str()), (1, 256, 2, "alice"));
        let b = store.create_server(&new(bob)).unwrap();
        assert_eq!(store.servers(Some(alice)).unwrap().len(), 1);
        assert_eq!(store.servers(None).unwrap().len(), 2);
        assert_eq!(store.server_password(a.id).unwrap().as_deref(), Some("s3cret"));
        assert_eq!(store.reserved_per_node().unwrap(), [(node, 2, 512, 4)]);
        assert!(store.set_server_state(b.id, ServerStatus::Running, Some("10.203.0.10")).unwrap());
        assert!(!store.set_server_state(b.id, ServerStatus::Running, None).unwrap(), "no change");
        let b = store.server_by_container(node, &b.container).unwrap().unwrap();
        assert_eq!((b.status, b.ip_address.as_deref()), (ServerStatus::Running, Some("10.203.0.10")));
        assert!(matches!(store.delete_tariff(tariff.id), Err(StoreError::Invalid(_))));
        assert!(matches!(
            store.create_server(&NewServer { tariff_id: 99, ..new(alice) }),
            Err(StoreError::NotFound(_))
        ));

        let task = TaskInfo {
            upid: Upid("UPID:n1:00000001:00000002:00000003:vzcreate:vps-1:alice@flotilla:".into()),
            kind: "vzcreate".into(),
            container: a.container.clone(),
            state: TaskState::Running,
            started_ms: 1_700_000_000_000,
            ended_ms: None,
            log: vec!["creating".into()],
        };
        store.record_task(node, Some(a.id), &task).unwrap();
        let done = TaskInfo {
            state: TaskState::Error { message: "boom".into() },
            ended_ms: Some(1_700_000_001_000),
            log: vec!["creating".into(), "boom".into()],
            ..task.clone()
        };
        store.record_task(node, None, &done).unwrap();
        store.record_task(node, None, &TaskInfo { kind: String::new(), log: vec![], ..task.clone() }).unwrap();
        let got = store.task(&task.upid).unwrap().unwrap();
        assert_eq!(
            (got.server_id, got.state, got.log.len()),
            (Some(a.id), TaskState::Error { message: "boom".into() }, 2)
        );

        let sample =
            ContainerSample { time_ms: 1_700_000_000_000, cpu: 0.5, mem_used: 1, disk_used: 2, net_in: 3, net_out: 4 };
        store.record_server_metrics(a.id, &sample, 10, 20, 3600).unwrap();
        store
            .record_server_metrics(a.id, &ContainerSample { time_ms: 1_700_007_200_000, ..sample }, 10, 20, 3600)
            .unwrap();
        assert_eq!(store.server_metrics(a.id, 0).unwrap().len(), 1, "older than an hour before the newest is dropped");
        assert!(store.delete_server(a.id).unwrap());
        let kept = store.task(&task.upid).unwrap().unwrap();
        assert_eq!(
            (kept.server_id, kept.user_id),
            (None, Some(alice)),
            "tasks outlive their server, and stay its owner's"
        );
    }
}
