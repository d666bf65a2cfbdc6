//! Backups of `agent.db`: a consistent snapshot (`VACUUM INTO`) with the identity table emptied,
//! so the agent's private key never leaves its host; and the validated import of such a
//! snapshot, which restores the per-client usage that quotas are enforced against.

use std::path::Path;

use flotilla_protocol::backup::ImportReport;
use flotilla_protocol::codec;
use flotilla_protocol::proxy::ProxyState;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{StateError, StateStore, MIGRATIONS};

/// Why a snapshot cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not a SQLite database: {0}")]
    NotSqlite(String),
    #[error("the database is damaged: {0}")]
    Damaged(String),
    #[error("not a Flotilla agent state backup (schema version {0})")]
    WrongSchema(i64),
    #[error("the backup's proxy state does not decode: {0}")]
    BadProxyState(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("scratch file: {0}")]
    Io(#[from] std::io::Error),
}

impl StateStore {
    /// A consistent copy of the store as a SQLite file, without the identity (key and
    /// certificate) or WireGuard private keys. The temporary copy lives in the store's own (private) directory.
    pub fn export_snapshot(&self) -> Result<Vec<u8>, StateError> {
        let path = self.dir.join(format!("agent-backup-{}.db", rand::random::<u64>()));
        let io = |e: std::io::Error| StateError::Io(path.display().to_string(), e);
        self.conn().execute("VACUUM INTO ?1", params![path.to_string_lossy()])?;
        let result = (|| {
            let copy = Connection::open(&path)?;
            copy.execute("DELETE FROM identity", [])?;
            // The WireGuard state holds the interfaces' private keys; the controller has them
            // and pushes them again, so a backup file never carries them.
            copy.execute("DELETE FROM wg_state", [])?;
            copy.execute_batch("VACUUM")?;
            drop(copy);
            std::fs::read(&path).map_err(io)
        })();
        let _ = std::fs::remove_file(&path);
        result
    }

    /// Validates a snapshot made by [`StateStore::export_snapshot`] and restores its per-client
    /// usage. The rest (identity, journal, counters, proxy state) is not taken: the host keeps
    /// its own identity and journal, and the controller pushes its desired state again.
    pub fn import_snapshot(&self, sqlite: &[u8]) -> Result<ImportReport, ImportError> {
        if !sqlite.starts_with(b"SQLite format 3\0") {
            return Err(ImportError::NotSqlite("missing the SQLite header".into()));
        }
        let path = self.dir.join(format!("agent-import-{}.db", rand::random::<u64>()));
        std::fs::write(&path, sqlite)?;
        let result = self.import_from(&path);
        let _ = std::fs::remove_file(&path);
        result
    }

    fn import_from(&self, path: &Path) -> Result<ImportReport, ImportError> {
        let copy = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| ImportError::NotSqlite(e.to_string()))?;
        let check: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| ImportError::NotSqlite(e.to_string()))?;
        if check != "ok" {
            return Err(ImportError::Damaged(check));
        }
        let version: i64 = copy.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(StateError::from)?;
        if version < 2 || version > MIGRATIONS.len() as i64 {
            return Err(ImportError::WrongSchema(version));
        }
        let body: Option<Vec<u8>> = copy
            .query_row("SELECT body FROM proxy_state WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(StateError::from)?;
        let revision = match body {
            Some(b) => {
                codec::decode_from::<ProxyState>(&b).map_err(|e| ImportError::BadProxyState(e.to_string()))?.revision
            }
            None => 0,
        };
        let usage: Vec<(String, i64, i64, i64)> = {
            let mut stmt =
                copy.prepare("SELECT email, up, down, reset_generation FROM client_usage").map_err(StateError::from)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(StateError::from)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(StateError::from)?;
            rows
        };
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(StateError::from)?;
        tx.execute("DELETE FROM client_usage", []).map_err(StateError::from)?;
        for (email, up, down, generation) in &usage {
            tx.execute(
                "INSERT INTO client_usage (email, up, down, reset_generation) VALUES (?1, ?2, ?3, ?4)",
                params![email, up.max(&0), down.max(&0), generation.max(&0)],
            )
            .map_err(StateError::from)?;
        }
        tx.commit().map_err(StateError::from)?;
        Ok(ImportReport { clients: usage.len() as u32, revision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::state::Poll;
    use flotilla_protocol::proxy::UserTraffic;
    use flotilla_protocol::NodeId;

    #[test]
    fn snapshots_leave_the_key_behind_and_restore_usage() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("a")).unwrap();
        s.save_identity(&Identity {
            node_id: NodeId(1),
            node_name: "n".into(),
            controller: vec!["x:1".into()],
            ca_der: vec![1],
            cert_der: vec![2],
            key_der: b"PRIVATE-KEY-BYTES".to_vec(),
        })
        .unwrap();
        let state = ProxyState { revision: 9, inbounds: vec![], clients: vec![] };
        s.save_users(&crate::state::LocalUsers { state, lifecycle: Default::default() }).unwrap();
        s.record_poll(&Poll { users: vec![UserTraffic { email: "a@x".into(), up: 5, down: 7 }], ..Default::default() })
            .unwrap();
        let snapshot = s.export_snapshot().unwrap();
        assert!(snapshot.starts_with(b"SQLite format 3\0"));
        assert!(!snapshot.windows(17).any(|w| w == b"PRIVATE-KEY-BYTES"), "the key never leaves the host");

        let other = StateStore::open(&dir.path().join("b")).unwrap();
        let report = other.import_snapshot(&snapshot).unwrap();
        assert_eq!(report, ImportReport { clients: 1, revision: 9 });
        assert_eq!(other.usage().unwrap()["a@x"].total(), 12);
        assert!(other.identity().unwrap().is_none(), "identity is never imported");

        assert!(matches!(other.import_snapshot(b"hello"), Err(ImportError::NotSqlite(_))));
        let mut damaged = snapshot.clone();
        let cut = damaged.len() / 2;
        damaged.truncate(cut);
        assert!(other.import_snapshot(&damaged).is_err(), "a truncated file is refused");
    }
}
