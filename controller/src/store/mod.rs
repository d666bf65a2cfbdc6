//! The controller's embedded store: SQLite (WAL, foreign keys, busy timeout) with `user_version`
//! migrations. All SQL lives under this module; the rest of the controller sees typed methods.

mod adguard;
mod api_keys;
mod bot;
mod candy;
mod history;
mod mail;
mod migrations;
mod proxy;
mod rollout;
mod secrets;
mod users;
mod vps;
mod webhooks;
mod wireguard;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::webhooks::events;
use flotilla_protocol::facts::HostFacts;
use flotilla_protocol::metrics::MetricsSample;
use flotilla_protocol::NodeId;
use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

pub use adguard::{AdGuardSample, AdGuardSourceChange, AdGuardSourceRecord, NewAdGuardSource, TopEntry};
pub use api_keys::{ApiKeyChange, ApiKeyRecord, KeyEnvironment, NewApiKey, RateTier};
pub use bot::{BotTransaction, BotUser, BotUserStatus, Decision, NewBotTransaction, PurchaseType, TransactionStatus};
pub use candy::CANDY_SETTINGS;
pub use history::HistoryPoint;
pub use mail::{DueMail, MailOutcome, MailRecord, MailState};
pub use proxy::{ClientFilter, ClientRecord, InboundRecord, NewClient, NewInbound};
pub use rollout::{
    wave_of, AgentPackageRecord, NewRollout, NodeUpgradeState, PackageAdded, RolloutNodeRecord, RolloutRecord,
    RolloutState, RolloutView,
};
pub use secrets::SecretBox;
pub use users::{AppliedChanges, ChangeRefusal};
pub use vps::{
    template_from_text, template_to_text, NewServer, OsRecord, ServerRecord, ServerStatus, TariffRecord, TaskRecord,
};
pub use webhooks::{
    iso_ms, now_ms, subscribes, AttemptOutcome, Audience, DeliveryRecord, DeliveryState, Destination, DestinationType,
    DueDelivery, NewEvent, NewWebhook, WebhookChange, WebhookRecord, WebhookStats,
};
pub use wireguard::{
    NewWgClient, NewWgInterface, WgClientChange, WgClientRecord, WgInterfaceChange, WgInterfaceRecord, WgRefusal,
    WgStoreError,
};

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database was written by a newer Flotilla (schema {found}, this build knows {known})")]
    TooNew { found: i64, known: i64 },
    #[error("secret key: {0}")]
    SecretKey(String),
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("password hashing: {0}")]
    Hash(String),
    /// The change breaks a rule of the data (a port or email already taken); the message names
    /// the field.
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
}

/// Roles of built-in users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Operator,
    Viewer,
}

impl Role {
    /// Lower-case name (`admin`, `operator`, `viewer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    fn parse(s: &str) -> Result<Role, StoreError> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            other => Err(StoreError::Corrupt(format!("unknown role {other}"))),
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::parse(s).map_err(|_| format!("unknown role {s:?} (admin, operator, viewer)"))
    }
}

/// A user as stored (hash included; never serialised to clients).
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
}

/// A user as listed (no password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub email: Option<String>,
    pub created_at: OffsetDateTime,
}

/// What creating a node needs.
#[derive(Debug, Clone, Default)]
pub struct NewNode {
    pub name: String,
    /// The documented `url` of an existing panel, kept verbatim.
    pub url: Option<String>,
    /// Host part of `url`: the node's public address for share links.
    pub public_host: Option<String>,
    pub panel_port: Option<String>,
    pub base_path: String,
    /// Stored encrypted, like the password.
    pub panel_user: Option<String>,
    /// Stored encrypted.
    pub panel_password: Option<String>,
}

/// A node as stored.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub id: NodeId,
    pub name: String,
    pub url: Option<String>,
    pub public_host: Option<String>,
    pub panel_port: Option<String>,
    pub base_path: String,
    pub has_panel_user: bool,
    pub has_panel_password: bool,
    pub revision: u64,
    pub created_at: OffsetDateTime,
    pub enrolled_at: Option<OffsetDateTime>,
    pub last_seen_at: Option<OffsetDateTime>,
    pub facts: Option<HostFacts>,
    pub last_metrics: Option<MetricsSample>,
    /// Version of the `flotilla-agent` package its agent last reported.
    pub agent_package: Option<String>,
}

/// Why a join token cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Unknown,
    Used,
    Expired,
}

/// State of an agent certificate serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    /// Current (or newly issued and not yet used) certificate of the node.
    Valid(NodeId),
    /// Replaced by a newer certificate that the node has already used.
    Superseded(NodeId),
    /// Never issued here, or its node was deleted.
    Unknown,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    secrets: Arc<SecretBox>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_unix(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Store {
    /// Opens (creating and migrating) `controller.db` in `data_dir`, with its `secret.key`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(data_dir.join("controller.db"))?;
        let secrets = SecretBox::load_or_create(&data_dir.join("secret.key"))?;
        Self::from_connection(conn, secrets)
    }

    fn from_connection(mut conn: Connection, secrets: SecretBox) -> Result<Store, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        migrate(&mut conn)?;
        Ok(Store { conn: Arc::new(Mutex::new(conn)), secrets: Arc::new(secrets) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back), so a
        // poisoned mutex is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self.conn().query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    // ---- users -------------------------------------------------------------------------------

    /// Number of built-in users.
    pub fn user_count(&self) -> Result<u64, StoreError> {
        Ok(self.conn().query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Adds a user with an already computed argon2id PHC hash, and queues `user.created` for
    /// the webhooks in the same transaction (whichever API or command made the user).
    pub fn create_user(&self, username: &str, password_hash: &str, role: Role) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let res = tx.execute(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![username, password_hash, role.as_str(), unix(OffsetDateTime::now_utc())],
        );
        match res {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(StoreError::Conflict(format!("user {username:?}")));
            }
            Err(e) => return Err(e.into()),
        }
        let id = tx.last_insert_rowid();
        let data = serde_json::json!({ "user_id": id, "username": username, "role": role.as_str() });
        webhooks::enqueue_event(&tx, &NewEvent::new(events::USER_CREATED, data), &Audience::Fleet)?;
        tx.commit()?;
        Ok(id)
    }

    /// Every user, oldest first: (record without its hash, e-mail, created).
    pub fn users(&self) -> Result<Vec<UserSummary>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, username, role, email, created_at FROM users ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<Vec<(i64, String, String, Option<String>, i64)>, _>>()?;
        rows.into_iter()
            .map(|(id, username, role, email, created)| {
                Ok(UserSummary { id, username, role: Role::parse(&role)?, email, created_at: from_unix(created) })
            })
            .collect()
    }

    /// Deletes a user with their API keys, webhooks and sessions, and queues `user.deleted`.
    /// Refused while they own virtual servers (those are guests on nodes: delete them first)
    /// and for the last administrator.
    pub fn delete_user(&self, username: &str) -> Result<UserRecord, StoreError> {
        let user = self.user(username)?.ok_or_else(|| StoreError::NotFound(format!("user {username:?}")))?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let servers: i64 =
            tx.query_row("SELECT COUNT(*) FROM vps_servers WHERE user_id = ?1", params![user.id], |r| r.get(0))?;
        if servers > 0 {
            return Err(StoreError::Conflict(format!(
                "user {username:?} owns {servers} virtual server(s); delete them first"
            )));
        }
        if user.role == Role::Admin {
            let admins: i64 = tx.query_row("SELECT COUNT(*) FROM users WHERE role = 'admin'", [], |r| r.get(0))?;
            if admins <= 1 {
                return Err(StoreError::Conflict(format!("user {username:?} is the last administrator")));
            }
        }
        tx.execute("DELETE FROM api_sessions WHERE username = ?1", params![username])?;
        tx.execute("DELETE FROM users WHERE id = ?1", params![user.id])?;
        let data = serde_json::json!({ "user_id": user.id, "username": username, "role": user.role.as_str() });
        webhooks::enqueue_event(&tx, &NewEvent::new(events::USER_DELETED, data), &Audience::Fleet)?;
        tx.commit()?;
        Ok(user)
    }

    /// Replaces a user's password hash. Returns false if there is no such user.
    pub fn set_password_hash(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("UPDATE users SET password_hash = ?2 WHERE username = ?1", params![username, password_hash])?
            > 0)
    }

    /// Looks a user up by name.
    pub fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT id, username, password_hash, role FROM users WHERE username = ?1",
                params![username],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?)),
            )
            .optional()?;
        row.map(|(id, username, password_hash, role)| {
            Ok(UserRecord { id, username, password_hash, role: Role::parse(&role)? })
        })
        .transpose()
    }

    // ---- nodes -------------------------------------------------------------------------------

    /// Creates a node. Names are unique.
    pub fn create_node(&self, new: &NewNode) -> Result<NodeRecord, StoreError> {
        let sealed = new.panel_password.as_ref().map(|p| self.secrets.seal(p.as_bytes()));
        let sealed_user = new.panel_user.as_ref().map(|u| self.secrets.seal(u.as_bytes()));
        let id = {
            let conn = self.conn();
            let res = conn.execute(
                "INSERT INTO nodes (name, url, public_host, panel_port, base_path, panel_user, panel_password, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    new.name,
                    new.url,
                    new.public_host,
                    new.panel_port,
                    new.base_path,
                    sealed_user,
                    sealed,
                    unix(OffsetDateTime::now_utc())
                ],
            );
            match res {
                Ok(_) => conn.last_insert_rowid(),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                    return Err(StoreError::Conflict(format!("a node named {:?}", new.name)));
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.node(NodeId(id))?.ok_or_else(|| StoreError::Corrupt("node vanished after insert".into()))
    }

    const NODE_COLUMNS: &'static str = "id, name, url, public_host, panel_port, base_path, panel_user IS NOT NULL, \
        panel_password IS NOT NULL, revision, created_at, enrolled_at, last_seen_at, facts, last_metrics, agent_package";

    fn node_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRecord> {
        let facts: Option<String> = r.get(12)?;
        let metrics: Option<String> = r.get(13)?;
        Ok(NodeRecord {
            id: NodeId(r.get(0)?),
            name: r.get(1)?,
            url: r.get(2)?,
            public_host: r.get(3)?,
            panel_port: r.get(4)?,
            base_path: r.get(5)?,
            has_panel_user: r.get(6)?,
            has_panel_password: r.get(7)?,
            revision: r.get::<_, i64>(8)? as u64,
            created_at: from_unix(r.get(9)?),
            enrolled_at: r.get::<_, Option<i64>>(10)?.map(from_unix),
            last_seen_at: r.get::<_, Option<i64>>(11)?.map(from_unix),
            // Cached observations: an unreadable cache is dropped rather than failing the node.
            facts: facts.and_then(|s| serde_json::from_str(&s).ok()),
            last_metrics: metrics.and_then(|s| serde_json::from_str(&s).ok()),
            agent_package: r.get(14)?,
        })
    }

    /// One node.
    pub fn node(&self, id: NodeId) -> Result<Option<NodeRecord>, StoreError> {
        let sql = format!("SELECT {} FROM nodes WHERE id = ?1", Self::NODE_COLUMNS);
        Ok(self.conn().query_row(&sql, params![id.0], Self::node_from_row).optional()?)
    }

    /// All nodes, by id.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let sql = format!("SELECT {} FROM nodes ORDER BY id", Self::NODE_COLUMNS);
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([], Self::node_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Renames a node. Names stay unique (any case). Returns false if there is no such node.
    pub(crate) fn rename_node(&self, id: NodeId, name: &str) -> Result<bool, StoreError> {
        match self.conn().execute("UPDATE nodes SET name = ?2 WHERE id = ?1", params![id.0, name]) {
            Ok(n) => Ok(n > 0),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(StoreError::Conflict(format!("a node named {name:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a node with its tokens and certificates. Returns false if it did not exist.
    pub fn delete_node(&self, id: NodeId) -> Result<bool, StoreError> {
        Ok(self.conn().execute("DELETE FROM nodes WHERE id = ?1", params![id.0])? > 0)
    }

    /// Decrypted panel credentials `(user, password)` of a node (for the later agentless mode
    /// that drives an existing panel). `None` if the node does not exist.
    #[allow(clippy::type_complexity)]
    pub fn panel_credentials(&self, id: NodeId) -> Result<Option<(Option<String>, Option<String>)>, StoreError> {
        let row: Option<(Option<Vec<u8>>, Option<Vec<u8>>)> = self
            .conn()
            .query_row("SELECT panel_user, panel_password FROM nodes WHERE id = ?1", params![id.0], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let open = |sealed: Option<Vec<u8>>| -> Result<Option<String>, StoreError> {
            sealed
                .map(|s| {
                    let plain = self.secrets.open(&s)?;
                    String::from_utf8(plain).map_err(|_| StoreError::Corrupt("panel credential is not UTF-8".into()))
                })
                .transpose()
        };
        row.map(|(user, password)| Ok((open(user)?, open(password)?))).transpose()
    }

    /// Records that the node's agent connected now, with the facts it reported.
    pub fn record_node_connected(&self, id: NodeId, facts: &HostFacts) -> Result<(), StoreError> {
        let facts = serde_json::to_string(facts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn().execute(
            "UPDATE nodes SET last_seen_at = ?2, facts = ?3 WHERE id = ?1",
            params![id.0, unix(OffsetDateTime::now_utc()), facts],
        )?;
        Ok(())
    }

    /// Records when the node was last heard from and its last metrics sample.
    pub fn record_node_seen(
        &self,
        id: NodeId,
        at: OffsetDateTime,
        metrics: Option<&MetricsSample>,
    ) -> Result<(), StoreError> {
        let metrics = metrics.map(serde_json::to_string).transpose().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn().execute(
            "UPDATE nodes SET last_seen_at = ?2, last_metrics = COALESCE(?3, last_metrics) WHERE id = ?1",
            params![id.0, unix(at), metrics],
        )?;
        Ok(())
    }

    // ---- join tokens -------------------------------------------------------------------------

    /// Stores the hash of a new join token for `node`.
    pub fn create_join_token(
        &self,
        node: NodeId,
        secret_hash: &[u8; 32],
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO join_tokens (secret_hash, node_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![&secret_hash[..], node.0, unix(OffsetDateTime::now_utc()), unix(expires_at)],
        )?;
        Ok(())
    }

    /// Marks a token used, atomically, and returns its node; refuses unknown, used or expired tokens.
    pub fn consume_join_token(
        &self,
        secret_hash: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<Result<NodeId, TokenRefusal>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let row: Option<(i64, i64, Option<i64>)> = tx
            .query_row(
                "SELECT node_id, expires_at, used_at FROM join_tokens WHERE secret_hash = ?1",
                params![&secret_hash[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let outcome = match row {
            None => Err(TokenRefusal::Unknown),
            Some((_, _, Some(_))) => Err(TokenRefusal::Used),
            Some((_, expires, None)) if expires <= unix(now) => Err(TokenRefusal::Expired),
            Some((node, _, None)) => {
                tx.execute(
                    "UPDATE join_tokens SET used_at = ?2 WHERE secret_hash = ?1",
                    params![&secret_hash[..], unix(now)],
                )?;
                tx.execute("UPDATE nodes SET enrolled_at = ?2 WHERE id = ?1", params![node, unix(now)])?;
                Ok(NodeId(node))
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    // ---- agent certificates ------------------------------------------------------------------

    /// Records a certificate issued to `node`.
    pub fn record_cert(&self, node: NodeId, serial: &[u8], not_after: OffsetDateTime) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO node_certs (serial, node_id, issued_at, not_after) VALUES (?1, ?2, ?3, ?4)",
            params![serial, node.0, unix(OffsetDateTime::now_utc()), unix(not_after)],
        )?;
        Ok(())
    }

    /// What the store knows of a serial.
    pub fn cert_status(&self, serial: &[u8]) -> Result<CertStatus, StoreError> {
        let row: Option<(i64, bool)> = self
            .conn()
            .query_row("SELECT node_id, superseded FROM node_certs WHERE serial = ?1", params![serial], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        Ok(match row {
            None => CertStatus::Unknown,
            Some((node, false)) => CertStatus::Valid(NodeId(node)),
            Some((node, true)) => CertStatus::Superseded(NodeId(node)),
        })
    }

    /// The node has connected with `serial`: every certificate issued to it before that one is
    /// now stale and will be refused. Returns the serials superseded.
    pub fn supersede_older_certs(&self, node: NodeId, serial: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let issued: Option<i64> = tx
            .query_row(
                "SELECT issued_at FROM node_certs WHERE serial = ?1 AND node_id = ?2",
                params![serial, node.0],
                |r| r.get(0),
            )
            .optional()?;
        let Some(issued) = issued else {
            return Ok(vec![]);
        };
        let stale = {
            let mut stmt = tx.prepare(
                "SELECT serial FROM node_certs WHERE node_id = ?1 AND serial != ?2 AND superseded = 0
                 AND (issued_at < ?3 OR (issued_at = ?3 AND rowid < (SELECT rowid FROM node_certs WHERE serial = ?2)))",
            )?;
            let rows = stmt
                .query_map(params![node.0, serial, issued], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            rows
        };
        for s in &stale {
            tx.execute("UPDATE node_certs SET superseded = 1 WHERE serial = ?1", params![s])?;
        }
        tx.commit()?;
        Ok(stale)
    }

    /// Every serial that may still open a link, with its node.
    pub fn valid_certs(&self) -> Result<Vec<(Vec<u8>, NodeId)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT serial, node_id FROM node_certs WHERE superseded = 0")?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, NodeId(r.get(1)?))))?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// Highest store schema this build knows (and migrates to).
pub fn schema_versions_known() -> i64 {
    migrations::MIGRATIONS.len() as i64
}

/// Applies pending migrations in one transaction each.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = migrations::MIGRATIONS.len() as i64;
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > known {
        return Err(StoreError::TooNew { found: current, known });
    }
    for (index, sql) in migrations::MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "store migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
