//! The user lifecycle in `agent.db`: per-client settings beyond the core's own, the outbox of
//! user changes made on this host until the controller's pushed state contains them, and the
//! totals per traffic source.
//!
//! A local change is committed with the desired state it produced in one transaction, so after
//! a crash the agent serves exactly what it answered and still owes the controller the change.

use std::collections::BTreeMap;

use flotilla_protocol::codec;
use flotilla_protocol::proxy::ProxyState;
use flotilla_protocol::users::{ClientLifecycle, DnsStat, LocalChange, UserChange};
use rusqlite::params;

use super::{StateError, StateStore};

/// Desired users as this host has them: the pushed state with local changes applied, and the
/// lifecycle settings by lower-cased email.
#[derive(Debug, Clone)]
pub struct LocalUsers {
    pub state: ProxyState,
    pub lifecycle: BTreeMap<String, ClientLifecycle>,
}

/// Totals of one traffic source since its last reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUsage {
    /// `inbound` or `outbound`.
    pub direction: String,
    pub tag: String,
    pub up: u64,
    pub down: u64,
}

const OUTBOX_ID: &str = "outbox_id";

impl StateStore {
    /// Lifecycle settings of every client, by lower-cased email.
    pub fn lifecycle(&self) -> Result<BTreeMap<String, ClientLifecycle>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT email, limit_ip, renew_days, created_ms FROM client_lifecycle")?;
        let rows = stmt
            .query_map([], |r| {
                let email: String = r.get(0)?;
                Ok((
                    email.to_lowercase(),
                    ClientLifecycle {
                        email,
                        limit_ip: r.get::<_, i64>(1)? as u32,
                        renew_days: r.get::<_, i64>(2)? as u32,
                        created_ms: r.get(3)?,
                    },
                ))
            })?
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok(rows)
    }

    /// Stores the desired users whole (a push, or a push with the outbox replayed over it), and
    /// drops outbox entries the applied revision already contains.
    pub fn save_users(&self, users: &LocalUsers) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        write_users(&tx, users)?;
        tx.execute(
            "DELETE FROM user_outbox WHERE included_in IS NOT NULL AND included_in <= ?1",
            params![users.state.revision as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Commits changes made on this host with the desired users they produced; returns the
    /// outbox id of the last one.
    pub fn save_local_changes(
        &self,
        users: &LocalUsers,
        changes: &[UserChange],
        made_at_ms: i64,
    ) -> Result<u64, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        write_users(&tx, users)?;
        let mut last = 0;
        {
            let mut insert = tx.prepare_cached("INSERT INTO user_outbox (made_at_ms, body) VALUES (?1, ?2)")?;
            for change in changes {
                let body =
                    codec::encode_body(change).map_err(|e| StateError::Undecodable("user change", e.to_string()))?;
                insert.execute(params![made_at_ms, body])?;
                last = tx.last_insert_rowid() as u64;
            }
        }
        tx.commit()?;
        Ok(last)
    }

    /// Outbox entries not yet committed by the controller, after id `after`, oldest first.
    pub fn pending_changes(&self, after: u64, limit: usize) -> Result<Vec<LocalChange>, StateError> {
        self.outbox_rows("WHERE included_in IS NULL AND id > ?1 ORDER BY id LIMIT ?2", after, limit)
    }

    /// Outbox entries to replay over a pushed state of `revision`: those the controller has not
    /// committed yet, or committed in a later revision. Oldest first.
    pub fn replayable_changes(&self, revision: u64) -> Result<Vec<LocalChange>, StateError> {
        self.outbox_rows(
            "WHERE included_in IS NULL OR included_in > ?1 ORDER BY id LIMIT ?2",
            revision,
            i64::MAX as usize,
        )
    }

    fn outbox_rows(&self, filter: &str, after: u64, limit: usize) -> Result<Vec<LocalChange>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("SELECT id, made_at_ms, body FROM user_outbox {filter}"))?;
        let rows = stmt
            .query_map(params![after as i64, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, made_at_ms, body)| {
                let change =
                    codec::decode_from(&body).map_err(|e| StateError::Undecodable("user change", e.to_string()))?;
                Ok(LocalChange { id: id as u64, made_at_ms, change })
            })
            .collect()
    }

    /// The controller committed every entry through `through`, in revision `revision`.
    pub fn changes_committed(&self, through: u64, revision: u64) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE user_outbox SET included_in = ?2 WHERE id <= ?1 AND included_in IS NULL",
            params![through as i64, revision as i64],
        )?;
        Ok(())
    }

    /// The id of this store's outbox, drawn at random on first use.
    pub fn outbox_id(&self) -> Result<u64, StateError> {
        self.random_setting(OUTBOX_ID)
    }

    /// Totals per traffic source.
    pub fn source_usage(&self) -> Result<Vec<SourceUsage>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT direction, tag, up, down FROM source_usage ORDER BY direction, tag")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SourceUsage {
                    direction: r.get(0)?,
                    tag: r.get(1)?,
                    up: r.get::<_, i64>(2)? as u64,
                    down: r.get::<_, i64>(3)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Zeroes the totals of every traffic source.
    pub fn reset_source_usage(&self) -> Result<(), StateError> {
        self.conn().execute("UPDATE source_usage SET up = 0, down = 0", [])?;
        Ok(())
    }

    /// Adds connection counts per (email, destination).
    pub fn add_destinations(&self, counts: &[(String, String, u64)]) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut add = tx.prepare_cached(
                "INSERT INTO destination_stats (email, destination, count) VALUES (?1, ?2, ?3)
                 ON CONFLICT(email, destination) DO UPDATE SET count = count + excluded.count",
            )?;
            for (email, destination, n) in counts {
                add.execute(params![email, destination, *n as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The `limit` destinations `email` reached most often, most frequent first.
    pub fn destinations(&self, email: &str, limit: u32) -> Result<Vec<DnsStat>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT email, destination, count FROM destination_stats WHERE email = ?1
             ORDER BY count DESC, destination LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![email, limit as i64], |r| {
                Ok(DnsStat { user: r.get(0)?, domain: r.get(1)?, count: r.get::<_, i64>(2)? as u64 })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Forgets every destination count.
    pub fn clear_destinations(&self) -> Result<(), StateError> {
        self.conn().execute("DELETE FROM destination_stats", [])?;
        Ok(())
    }
}

/// The one writer of the stored desired state (`proxy_state`) and the lifecycles beside it.
fn write_users(tx: &rusqlite::Transaction<'_>, users: &LocalUsers) -> Result<(), StateError> {
    let body = codec::encode_body(&users.state).map_err(|e| StateError::Undecodable("proxy state", e.to_string()))?;
    tx.execute(
        "INSERT OR REPLACE INTO proxy_state (id, revision, body) VALUES (1, ?1, ?2)",
        params![users.state.revision as i64, body],
    )?;
    tx.execute("DELETE FROM client_lifecycle", [])?;
    let mut insert = tx.prepare_cached(
        "INSERT OR REPLACE INTO client_lifecycle (email, limit_ip, renew_days, created_ms) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for l in users.lifecycle.values() {
        insert.execute(params![l.email, l.limit_ip as i64, l.renew_days as i64, l.created_ms])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use flotilla_protocol::proxy::ProxyState;

    use super::*;
    use crate::state::Poll;

    fn users(revision: u64, emails: &[&str]) -> LocalUsers {
        let lifecycle = emails
            .iter()
            .map(|e| {
                (e.to_lowercase(), ClientLifecycle { email: e.to_string(), limit_ip: 2, renew_days: 30, created_ms: 9 })
            })
            .collect();
        LocalUsers { state: ProxyState { revision, inbounds: vec![], clients: vec![] }, lifecycle }
    }

    #[test]
    fn local_changes_stay_until_a_push_contains_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let change = |email: &str| UserChange::SetEnabled { email: email.into(), enable: false };
        let first = s.save_local_changes(&users(4, &["A"]), &[change("a"), change("b")], 100).unwrap();
        assert_eq!(s.lifecycle().unwrap()["a"].limit_ip, 2);
        assert_eq!(s.proxy_state().unwrap().unwrap().revision, 4);
        let pending = s.pending_changes(0, 10).unwrap();
        assert_eq!(pending.iter().map(|c| c.id).collect::<Vec<_>>(), vec![first - 1, first]);
        assert_eq!(pending[1].change, change("b"));
        assert_eq!(s.pending_changes(first - 1, 10).unwrap().len(), 1, "after an id");

        s.changes_committed(first - 1, 6).unwrap();
        assert_eq!(s.pending_changes(0, 10).unwrap().len(), 1, "committed ones are not sent again");
        assert_eq!(s.replayable_changes(5).unwrap().len(), 2, "but replayed until a push contains them");
        assert_eq!(s.replayable_changes(6).unwrap().len(), 1, "revision 6 contains the first");
        s.save_users(&users(5, &[])).unwrap();
        assert_eq!(s.replayable_changes(5).unwrap().len(), 2, "revision 5 does not contain revision 6's change");
        s.save_users(&users(6, &[])).unwrap();
        assert_eq!(s.replayable_changes(0).unwrap().len(), 1, "applied: dropped");
        assert!(s.lifecycle().unwrap().is_empty());
        let id = s.outbox_id().unwrap();
        assert_eq!(StateStore::open(dir.path()).unwrap().outbox_id().unwrap(), id);
    }

    #[test]
    fn destinations_add_up_rank_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let c = |e: &str, d: &str, n| (e.to_string(), d.to_string(), n);
        s.add_destinations(&[c("u", "a.com", 1), c("u", "b.com", 5), c("v", "a.com", 9)]).unwrap();
        s.add_destinations(&[c("U", "a.com", 7)]).unwrap();
        let got = s.destinations("u", 10).unwrap();
        assert_eq!(got.iter().map(|d| (d.domain.as_str(), d.count)).collect::<Vec<_>>(), [("a.com", 8), ("b.com", 5)]);
        assert_eq!(s.destinations("u", 1).unwrap().len(), 1);
        s.clear_destinations().unwrap();
        assert!(s.destinations("v", 10).unwrap().is_empty());
    }

    #[test]
    fn source_totals_add_up_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let t = |tag: &str, up, down| flotilla_protocol::proxy::InboundTraffic { tag: tag.into(), up, down };
        let poll =
            Poll { inbounds: vec![t("vless-in", 1, 2)], outbounds: vec![t("direct", 3, 4)], ..Default::default() };
        s.record_poll(&poll).unwrap();
        s.record_poll(&poll).unwrap();
        let got = s.source_usage().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].direction.as_str(), got[0].tag.as_str(), got[0].up, got[0].down),
            ("inbound", "vless-in", 2, 4)
        );
        assert_eq!((got[1].direction.as_str(), got[1].up, got[1].down), ("outbound", 6, 8));
        s.reset_source_usage().unwrap();
        assert!(s.source_usage().unwrap().iter().all(|u| u.up == 0 && u.down == 0));
    }
}
