//! Proxy state, the traffic journal, per-client usage and counter baselines in `agent.db`.
//!
//! A stats poll is committed in one transaction: the new raw counter values (baselines), one
//! journal row with the deltas, and the per-client usage totals. The row stays until the
//! controller acks it after its own commit, so every byte is counted exactly once whichever side
//! dies when.

use std::collections::HashMap;

use flotilla_protocol::codec;
use flotilla_protocol::proxy::{InboundTraffic, ProxyState, UserTraffic};
use rusqlite::{params, OptionalExtension};

use super::{StateError, StateStore};

/// One stats poll to commit.
#[derive(Debug, Clone, Default)]
pub struct Poll {
    pub taken_at_ms: u64,
    /// Raw counter values read now; deltas of the next poll are taken against them.
    pub baselines: Vec<(String, i64)>,
    pub users: Vec<UserTraffic>,
    pub inbounds: Vec<InboundTraffic>,
    /// Outbound traffic: kept on the agent for its local statistics, not journaled.
    pub outbounds: Vec<InboundTraffic>,
}

/// A journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub seq: u64,
    pub taken_at_ms: u64,
    pub users: Vec<UserTraffic>,
    pub inbounds: Vec<InboundTraffic>,
}

/// Usage of one client since its last reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub up: u64,
    pub down: u64,
    pub reset_generation: u32,
    /// Unix milliseconds of the last poll that saw traffic of the client.
    pub last_seen_ms: Option<i64>,
}

impl Usage {
    /// Bytes both ways.
    pub fn total(&self) -> u64 {
        self.up.saturating_add(self.down)
    }
}

const JOURNAL_ID: &str = "journal_id";

impl StateStore {
    /// The proxy state last pushed by the controller.
    pub fn proxy_state(&self) -> Result<Option<ProxyState>, StateError> {
        let body: Option<Vec<u8>> =
            self.conn().query_row("SELECT body FROM proxy_state WHERE id = 1", [], |r| r.get(0)).optional()?;
        body.map(|b| codec::decode_from(&b).map_err(|e| StateError::Undecodable("proxy state", e.to_string())))
            .transpose()
    }

    /// A setting the agent picked itself (kept stable across restarts).
    pub fn setting(&self, key: &str) -> Result<Option<String>, StateError> {
        Ok(self.conn().query_row("SELECT value FROM settings WHERE key = ?1", params![key], |r| r.get(0)).optional()?)
    }

    /// Records a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.conn().execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)", params![key, value])?;
        Ok(())
    }

    /// The id of this store's traffic journal, drawn at random on first use.
    pub fn journal_id(&self) -> Result<u64, StateError> {
        self.random_setting(JOURNAL_ID)
    }

    /// A random id stored under `key` on first use and stable afterwards.
    pub(super) fn random_setting(&self, key: &str) -> Result<u64, StateError> {
        if let Some(v) = self.setting(key)?.and_then(|v| v.parse::<u64>().ok()) {
            return Ok(v);
        }
        // Kept below 2^63 so it also fits the controller's INTEGER columns.
        let id = rand::random::<u64>() >> 1;
        self.conn().execute("INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)", params![key, id])?;
        Ok(self.setting(key)?.and_then(|v| v.parse().ok()).unwrap_or(id))
    }

    /// Raw counter values of the last committed poll.
    pub fn baselines(&self) -> Result<HashMap<String, i64>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, value FROM counter_baseline")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<HashMap<_, _>, _>>()?;
        Ok(rows)
    }

    /// Forgets every baseline: the core restarted and its counters start again from zero.
    pub fn clear_baselines(&self) -> Result<(), StateError> {
        self.conn().execute("DELETE FROM counter_baseline", [])?;
        Ok(())
    }

    /// Commits one poll atomically. Returns the journal sequence number of its row, or `None`
    /// when nothing moved (no row is written then).
    pub fn record_poll(&self, poll: &Poll) -> Result<Option<u64>, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut upsert =
                tx.prepare_cached("INSERT OR REPLACE INTO counter_baseline (name, value) VALUES (?1, ?2)")?;
            for (name, value) in &poll.baselines {
                upsert.execute(params![name, value])?;
            }
        }
        let users: Vec<&UserTraffic> = poll.users.iter().filter(|u| u.up > 0 || u.down > 0).collect();
        let inbounds: Vec<&InboundTraffic> = poll.inbounds.iter().filter(|i| i.up > 0 || i.down > 0).collect();
        let seq = if users.is_empty() && inbounds.is_empty() {
            None
        } else {
            let body = codec::encode_body(&(&users, &inbounds))
                .map_err(|e| StateError::Undecodable("traffic batch", e.to_string()))?;
            tx.execute(
                "INSERT INTO traffic_journal (taken_at_ms, body) VALUES (?1, ?2)",
                params![poll.taken_at_ms as i64, body],
            )?;
            let seq = tx.last_insert_rowid() as u64;
            let mut add = tx.prepare_cached(
                "INSERT INTO client_usage (email, up, down, last_seen_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(email) DO UPDATE SET up = up + excluded.up, down = down + excluded.down,
                 last_seen_ms = excluded.last_seen_ms",
            )?;
            for u in &users {
                add.execute(params![u.email, u.up as i64, u.down as i64, poll.taken_at_ms as i64])?;
            }
            Some(seq)
        };
        {
            let mut add = tx.prepare_cached(
                "INSERT INTO source_usage (direction, tag, up, down) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(direction, tag) DO UPDATE SET up = up + excluded.up, down = down + excluded.down",
            )?;
            let sources =
                poll.inbounds.iter().map(|t| ("inbound", t)).chain(poll.outbounds.iter().map(|t| ("outbound", t)));
            for (direction, t) in sources.filter(|(_, t)| t.up > 0 || t.down > 0) {
                add.execute(params![direction, t.tag, t.up as i64, t.down as i64])?;
            }
        }
        tx.commit()?;
        Ok(seq)
    }

    /// Journal rows after `seq`, oldest first, at most `limit`.
    pub fn journal_after(&self, seq: u64, limit: usize) -> Result<Vec<StoredBatch>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, taken_at_ms, body FROM traffic_journal WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![seq as i64, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(seq, taken_at_ms, body)| {
                let (users, inbounds): (Vec<UserTraffic>, Vec<InboundTraffic>) =
                    codec::decode_from(&body).map_err(|e| StateError::Undecodable("traffic batch", e.to_string()))?;
                Ok(StoredBatch { seq: seq as u64, taken_at_ms: taken_at_ms as u64, users, inbounds })
            })
            .collect()
    }

    /// Drops journal rows up to and including `seq`: the controller has committed them.
    pub fn delete_journal_through(&self, seq: u64) -> Result<usize, StateError> {
        Ok(self.conn().execute("DELETE FROM traffic_journal WHERE seq <= ?1", params![seq as i64])?)
    }

    /// Number of journal rows waiting for an ack.
    pub fn journal_len(&self) -> Result<u64, StateError> {
        Ok(self.conn().query_row("SELECT COUNT(*) FROM traffic_journal", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Usage of every client seen, keyed by lower-cased email.
    pub fn usage(&self) -> Result<HashMap<String, Usage>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT email, up, down, reset_generation, last_seen_ms FROM client_usage")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?.to_lowercase(),
                    Usage {
                        up: r.get::<_, i64>(1)? as u64,
                        down: r.get::<_, i64>(2)? as u64,
                        reset_generation: r.get::<_, i64>(3)? as u32,
                        last_seen_ms: r.get(4)?,
                    },
                ))
            })?
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(rows)
    }

    /// Zeroes a client's usage for a reset of generation `generation`.
    pub fn reset_usage(&self, email: &str, generation: u32) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO client_usage (email, up, down, reset_generation) VALUES (?1, 0, 0, ?2)
             ON CONFLICT(email) DO UPDATE SET up = 0, down = 0, reset_generation = excluded.reset_generation",
            params![email, generation as i64],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: &str, up: u64, down: u64) -> UserTraffic {
        UserTraffic { email: email.into(), up, down }
    }

    #[test]
    fn a_poll_commits_baselines_journal_and_usage_together() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let quiet = Poll { taken_at_ms: 1, baselines: vec![("c".into(), 5)], ..Default::default() };
        assert_eq!(s.record_poll(&quiet).unwrap(), None, "nothing moved: no row");
        assert_eq!(s.baselines().unwrap()["c"], 5);

        let poll = Poll {
            taken_at_ms: 2,
            baselines: vec![("c".into(), 9)],
            users: vec![user("A@x", 3, 4), user("idle@x", 0, 0)],
            inbounds: vec![InboundTraffic { tag: "in-1".into(), up: 3, down: 5 }],
            outbounds: vec![],
        };
        let first = s.record_poll(&poll).unwrap().unwrap();
        let second = s.record_poll(&Poll { taken_at_ms: 3, users: vec![user("a@x", 1, 1)], ..Default::default() });
        let second = second.unwrap().unwrap();
        assert!(second > first);
        let rows = s.journal_after(0, 10).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].users, vec![user("A@x", 3, 4)], "idle users are not journaled");
        assert_eq!(
            s.usage().unwrap()["a@x"],
            Usage { up: 4, down: 5, reset_generation: 0, last_seen_ms: Some(3) },
            "emails match case-insensitively"
        );

        assert_eq!(s.delete_journal_through(first).unwrap(), 1);
        assert_eq!(s.journal_after(0, 10).unwrap()[0].seq, second);
        s.delete_journal_through(second).unwrap();
        // Sequence numbers are never reused, even once the journal is empty.
        let third = s.record_poll(&Poll { users: vec![user("a@x", 1, 0)], ..Default::default() }).unwrap().unwrap();
        assert!(third > second);

        s.reset_usage("a@x", 2).unwrap();
        assert_eq!(s.usage().unwrap()["a@x"], Usage { up: 0, down: 0, reset_generation: 2, last_seen_ms: Some(0) });
        let id = s.journal_id().unwrap();
        assert_eq!(StateStore::open(dir.path()).unwrap().journal_id().unwrap(), id, "journal id is stable");
    }

    #[test]
    fn proxy_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        assert!(s.proxy_state().unwrap().is_none());
        let state = ProxyState { revision: 7, inbounds: vec![], clients: vec![] };
        s.save_users(&crate::state::LocalUsers { state: state.clone(), lifecycle: Default::default() }).unwrap();
        assert_eq!(s.proxy_state().unwrap(), Some(state));
    }
}
