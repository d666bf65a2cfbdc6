//! The agent's own SQLite store (`agent.db`, mode 0600): identity, link status, the proxy state
//! last pushed by the controller, and the traffic journal with per-client usage; the same for
//! WireGuard (`wireguard`). `flotilla-agent status` reads it while `run` writes it (WAL allows
//! both).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use flotilla_protocol::NodeId;
use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use crate::identity::Identity;

pub use journal::{Poll, StoredBatch, Usage};
pub use users::{LocalUsers, SourceUsage};
pub use wireguard::{WgCutRecord, WgPeerKey, WgPoll, WgUsage};

const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE identity (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        node_id     INTEGER NOT NULL,
        node_name   TEXT NOT NULL,
        controller  TEXT NOT NULL,
        ca_der      BLOB NOT NULL,
        cert_der    BLOB NOT NULL,
        key_der     BLOB NOT NULL,
        enrolled_at INTEGER NOT NULL,
        renewed_at  INTEGER
    );
    CREATE TABLE link_status (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        state      TEXT NOT NULL,
        since      INTEGER NOT NULL,
        controller TEXT,
        detail     TEXT,
        updated_at INTEGER NOT NULL
    );
"#,
    r#"
    -- The proxy state last pushed by the controller (bincode of flotilla_protocol::proxy::ProxyState);
    -- restored at boot so the core serves the same users while the controller is away.
    CREATE TABLE proxy_state (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        revision INTEGER NOT NULL,
        body     BLOB NOT NULL
    );
    -- Agent-picked settings that must stay stable across restarts (core API port, journal id).
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- Traffic deltas not yet acknowledged by the controller. AUTOINCREMENT: a sequence number is
    -- never reused, even after rows are deleted.
    CREATE TABLE traffic_journal (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        taken_at_ms INTEGER NOT NULL,
        body        BLOB NOT NULL
    );
    -- Usage per client since its last reset: what quotas are enforced against, offline too.
    CREATE TABLE client_usage (
        email            TEXT PRIMARY KEY COLLATE NOCASE,
        up               INTEGER NOT NULL DEFAULT 0,
        down             INTEGER NOT NULL DEFAULT 0,
        reset_generation INTEGER NOT NULL DEFAULT 0
    );
    -- Last raw value read of each core counter: deltas are taken against it, so an agent killed
    -- between a poll and its commit loses nothing (the core keeps counting).
    CREATE TABLE counter_baseline (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
"#,
    r#"
    -- When each client last moved traffic (for the local user API).
    ALTER TABLE client_usage ADD COLUMN last_seen_ms INTEGER;
    -- What clients have beyond the core's own fields (IP limit, auto-renew, creation time).
    CREATE TABLE client_lifecycle (
        email      TEXT PRIMARY KEY COLLATE NOCASE,
        limit_ip   INTEGER NOT NULL DEFAULT 0,
        renew_days INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL DEFAULT 0
    );
    -- User changes made on this host, until a pushed state that contains them is applied:
    -- bincode of flotilla_protocol::users::UserChange; `included_in` is the controller revision
    -- that contains the change, once the controller has committed it.
    CREATE TABLE user_outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        made_at_ms  INTEGER NOT NULL,
        body        BLOB NOT NULL,
        included_in INTEGER
    );
    -- Totals per traffic source (inbound and outbound tags of the core) since their last reset.
    CREATE TABLE source_usage (
        direction TEXT NOT NULL,
        tag       TEXT NOT NULL,
        up        INTEGER NOT NULL DEFAULT 0,
        down      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (direction, tag)
    );
"#,
    r#"
    -- Destinations each user reached, from the core's access log (v2ray-stat's dns_stats).
    CREATE TABLE destination_stats (
        email       TEXT NOT NULL COLLATE NOCASE,
        destination TEXT NOT NULL,
        count       INTEGER NOT NULL,
        PRIMARY KEY (email, destination)
    );
"#,
    r#"
    -- The WireGuard state last pushed by the controller (bincode of
    -- flotilla_protocol::wireguard::WgState); restored at boot without the controller.
    CREATE TABLE wg_state (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        revision INTEGER NOT NULL,
        body     BLOB NOT NULL
    );
    -- Interfaces the agent created: the only ones it ever changes or deletes.
    CREATE TABLE wg_managed (
        name TEXT PRIMARY KEY
    );
    -- Enabled peers the agent took off their device (quota, expiry), with the spec they were
    -- cut under (bincode of WgPeerSpec).
    CREATE TABLE wg_cut_off (
        interface  TEXT NOT NULL,
        public_key BLOB NOT NULL,
        reason     TEXT NOT NULL,
        spec       BLOB NOT NULL,
        PRIMARY KEY (interface, public_key)
    );
    -- Bytes per peer since its last reset: what quotas are enforced against, offline too.
    CREATE TABLE wg_usage (
        interface        TEXT NOT NULL,
        public_key       BLOB NOT NULL,
        rx               INTEGER NOT NULL DEFAULT 0,
        tx               INTEGER NOT NULL DEFAULT 0,
        reset_generation INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (interface, public_key)
    );
    -- Last raw transfer counters read of each peer; deltas are taken against them.
    CREATE TABLE wg_baseline (
        interface  TEXT NOT NULL,
        public_key BLOB NOT NULL,
        rx         INTEGER NOT NULL,
        tx         INTEGER NOT NULL,
        PRIMARY KEY (interface, public_key)
    );
    -- WireGuard traffic deltas not yet acknowledged by the controller (bincode of
    -- Vec<WgPeerTraffic>); sequence numbers are never reused.
    CREATE TABLE wg_journal (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        taken_at_ms INTEGER NOT NULL,
        body        BLOB NOT NULL
    );
"#,
    r#"
    -- Containers this agent created (the only ones it changes), with the bridge address each
    -- holds: UNIQUE, so an address is never handed out twice while in use.
    CREATE TABLE containers (
        name       TEXT PRIMARY KEY,
        ipv4       TEXT NOT NULL UNIQUE,
        cores      INTEGER NOT NULL,
        memory_mib INTEGER NOT NULL,
        disk_gb    INTEGER NOT NULL,
        created    INTEGER NOT NULL DEFAULT 0
    );
    -- Snapshots by the controller's name; `backend_name` is lxc-snapshot's own (snap0, ...).
    CREATE TABLE container_snapshots (
        container    TEXT NOT NULL,
        name         TEXT NOT NULL,
        backend_name TEXT NOT NULL,
        description  TEXT NOT NULL,
        snaptime     INTEGER NOT NULL,
        PRIMARY KEY (container, name)
    );
    -- Container tasks (UPIDs) with their logs, newline-separated lines.
    CREATE TABLE container_tasks (
        upid       TEXT PRIMARY KEY,
        kind       TEXT NOT NULL,
        container  TEXT NOT NULL,
        state      TEXT NOT NULL,
        message    TEXT,
        started_ms INTEGER NOT NULL,
        ended_ms   INTEGER,
        log        TEXT NOT NULL DEFAULT ''
    );
"#,
    r#"
    -- Last raw byte counters read of each network interface, and the boot they belong to
    -- (/proc/sys/kernel/random/boot_id): deltas are taken against them.
    CREATE TABLE net_baseline (
        interface TEXT PRIMARY KEY,
        rx        INTEGER NOT NULL,
        tx        INTEGER NOT NULL,
        boot_id   TEXT NOT NULL
    );
    -- Bytes per interface and UTC day (YYYY-MM-DD); months are sums of days.
    CREATE TABLE net_usage (
        interface TEXT NOT NULL,
        day       TEXT NOT NULL,
        rx        INTEGER NOT NULL DEFAULT 0,
        tx        INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (interface, day)
    );
"#,
];

/// Agent store failures.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("agent database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("agent database {0}: {1}")]
    Io(String, std::io::Error),
    #[error("agent database was written by a newer flotilla-agent (schema {0})")]
    TooNew(i64),
    #[error("agent database holds a corrupt identity: {0}")]
    Corrupt(String),
    #[error("agent database holds an undecodable {0}: {1}")]
    Undecodable(&'static str, String),
}

/// State of the link as last recorded by `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Connected,
    Disconnected,
    /// The controller refuses this node (deleted); re-enrollment needed.
    Refused,
    /// Another agent holding the same identity took over the link.
    Replaced,
    Stopped,
}

impl LinkState {
    /// Lower-case name as shown by `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Disconnected => "disconnected",
            LinkState::Refused => "refused",
            LinkState::Replaced => "replaced",
            LinkState::Stopped => "stopped",
        }
    }

    fn parse(s: &str) -> LinkState {
        match s {
            "connecting" => LinkState::Connecting,
            "connected" => LinkState::Connected,
            "refused" => LinkState::Refused,
            "replaced" => LinkState::Replaced,
            "stopped" => LinkState::Stopped,
            _ => LinkState::Disconnected,
        }
    }
}

/// Last recorded link status.
#[derive(Debug, Clone)]
pub struct LinkStatus {
    pub state: LinkState,
    pub since: OffsetDateTime,
    pub controller: Option<String>,
    pub detail: Option<String>,
    pub updated_at: OffsetDateTime,
}

/// Handle to `agent.db`; cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    conn: Arc<Mutex<Connection>>,
    /// The data dir (private, 0700): scratch files such as backups go here.
    dir: std::path::PathBuf,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateStore")
    }
}

fn ts(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl StateStore {
    /// Opens `agent.db` in `data_dir` (created with mode 0700 if missing).
    pub fn open(data_dir: &Path) -> Result<StateStore, StateError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|e| StateError::Io(data_dir.display().to_string(), e))?;
        let path = data_dir.join("agent.db");
        let mut conn = Connection::open(&path)?;
        // It holds the private key.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StateError::Io(path.display().to_string(), e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StateError::TooNew(version));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(StateStore { conn: Arc::new(Mutex::new(conn)), dir: data_dir.to_path_buf() })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The enrolled identity, if any.
    pub fn identity(&self) -> Result<Option<Identity>, StateError> {
        let row = self
            .conn()
            .query_row(
                "SELECT node_id, node_name, controller, ca_der, cert_der, key_der FROM identity WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, Vec<u8>>(5)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(node_id, node_name, controller, ca_der, cert_der, key_der)| {
            let controller: Vec<String> =
                serde_json::from_str(&controller).map_err(|e| StateError::Corrupt(e.to_string()))?;
            Ok(Identity { node_id: NodeId(node_id), node_name, controller, ca_der, cert_der, key_der })
        })
        .transpose()
    }

    /// Stores a new identity (enrollment), replacing any previous one.
    pub fn save_identity(&self, identity: &Identity) -> Result<(), StateError> {
        let controller = serde_json::to_string(&identity.controller).map_err(|e| StateError::Corrupt(e.to_string()))?;
        self.conn().execute(
            "INSERT OR REPLACE INTO identity (id, node_id, node_name, controller, ca_der, cert_der, key_der, enrolled_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                identity.node_id.0,
                identity.node_name,
                controller,
                identity.ca_der,
                identity.cert_der,
                identity.key_der,
                OffsetDateTime::now_utc().unix_timestamp()
            ],
        )?;
        Ok(())
    }

    /// Replaces key and certificate together (renewal): one transaction, so a crash keeps either
    /// the old pair or the new one, never a mix.
    pub fn replace_certificate(&self, cert_der: &[u8], key_der: &[u8]) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE identity SET cert_der = ?1, key_der = ?2, renewed_at = ?3 WHERE id = 1",
            params![cert_der, key_der, OffsetDateTime::now_utc().unix_timestamp()],
        )?;
        Ok(())
    }

    /// Records the link state; `since` moves only when the state changes.
    pub fn set_link_status(
        &self,
        state: LinkState,
        controller: Option<&str>,
        detail: Option<&str>,
    ) -> Result<(), StateError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.conn().execute(
            "INSERT INTO link_status (id, state, since, controller, detail, updated_at) VALUES (1, ?1, ?2, ?3, ?4, ?2)
             ON CONFLICT(id) DO UPDATE SET
                since = CASE WHEN state = excluded.state THEN since ELSE excluded.since END,
                state = excluded.state, controller = COALESCE(excluded.controller, controller),
                detail = excluded.detail, updated_at = excluded.updated_at",
            params![state.as_str(), now, controller, detail],
        )?;
        Ok(())
    }

    /// Last recorded link status.
    pub fn link_status(&self) -> Result<Option<LinkStatus>, StateError> {
        Ok(self
            .conn()
            .query_row("SELECT state, since, controller, detail, updated_at FROM link_status WHERE id = 1", [], |r| {
                Ok(LinkStatus {
                    state: LinkState::parse(&r.get::<_, String>(0)?),
                    since: ts(r.get(1)?),
                    controller: r.get(2)?,
                    detail: r.get(3)?,
                    updated_at: ts(r.get(4)?),
                })
            })
            .optional()?)
    }
}

pub mod backup;
pub mod bandwidth;
pub mod containers;
pub mod journal;
pub mod users;
pub mod wireguard;

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            node_id: NodeId(3),
            node_name: "nl-1".into(),
            controller: vec!["127.0.0.1:4433".into()],
            ca_der: vec![1],
            cert_der: vec![2],
            key_der: vec![3],
        }
    }

    #[test]
    fn identity_round_trips_and_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        assert!(s.identity().unwrap().is_none());
        s.save_identity(&identity()).unwrap();
        s.replace_certificate(&[9], &[8]).unwrap();
        let again = StateStore::open(dir.path()).unwrap().identity().unwrap().unwrap();
        assert_eq!((again.node_id, again.cert_der, again.key_der), (NodeId(3), vec![9], vec![8]));
        let mode = std::fs::metadata(dir.path().join("agent.db")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn link_status_keeps_since_while_state_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        s.set_link_status(LinkState::Connected, Some("a:1"), None).unwrap();
        let first = s.link_status().unwrap().unwrap();
        s.set_link_status(LinkState::Connected, None, Some("rtt 1 ms")).unwrap();
        let second = s.link_status().unwrap().unwrap();
        assert_eq!(
            (second.state, second.since, second.controller.as_deref()),
            (LinkState::Connected, first.since, Some("a:1"))
        );
        s.set_link_status(LinkState::Disconnected, None, Some("timeout")).unwrap();
        assert_eq!(s.link_status().unwrap().unwrap().state, LinkState::Disconnected);
    }
}
