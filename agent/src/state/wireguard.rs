//! WireGuard in `agent.db`: the state last pushed by the controller, the interfaces the agent
//! created, the peers it cut off, per-peer usage, counter baselines and the WireGuard traffic
//! journal.
//!
//! As with the proxy journal, one poll is one transaction: the new raw counter values, one
//! journal row with the deltas and the per-peer usage totals. A row stays until the controller
//! acks it after its own commit, so every byte is counted exactly once whichever side dies when.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flotilla_protocol::codec;
use flotilla_protocol::wireguard::{WgCutOff, WgKey, WgPeerSpec, WgPeerTraffic, WgState, WgTrafficBatch};
use rusqlite::{params, OptionalExtension};

use super::{StateError, StateStore};

/// A peer: interface name and public key (the same key may sit on two interfaces).
pub type WgPeerKey = (String, WgKey);

/// Usage of one peer since its last reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WgUsage {
    /// Received from the peer (its upload).
    pub rx: u64,
    /// Sent to the peer (its download).
    pub tx: u64,
    pub reset_generation: u32,
}

impl WgUsage {
    /// Bytes both ways.
    pub fn total(&self) -> u64 {
        self.rx.saturating_add(self.tx)
    }
}

/// A peer the agent keeps off its device, and the spec it was cut under: it comes back only
/// when the controller pushes a different one (and the reason no longer holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgCutRecord {
    pub reason: WgCutOff,
    pub spec: WgPeerSpec,
}

/// One counter poll to commit.
#[derive(Debug, Clone, Default)]
pub struct WgPoll {
    pub taken_at_ms: u64,
    /// Raw (rx, tx) counters read now, for the peers whose counters changed.
    pub baselines: Vec<(WgPeerKey, u64, u64)>,
    /// Peers whose baseline is forgotten: they are no longer on their device, so their counters
    /// start again from zero if they come back.
    pub forget: Vec<WgPeerKey>,
    /// Deltas since the previous poll.
    pub peers: Vec<WgPeerTraffic>,
}

const WG_JOURNAL_ID: &str = "wg_journal_id";

fn key_of(bytes: Vec<u8>) -> Result<WgKey, StateError> {
    let raw: [u8; 32] =
        bytes.try_into().map_err(|_| StateError::Undecodable("WireGuard key", "not 32 bytes".into()))?;
    Ok(WgKey(raw))
}

fn reason_text(reason: WgCutOff) -> &'static str {
    match reason {
        WgCutOff::Quota => "quota",
        WgCutOff::Expired => "expired",
    }
}

fn parse_reason(text: &str) -> Result<WgCutOff, StateError> {
    match text {
        "quota" => Ok(WgCutOff::Quota),
        "expired" => Ok(WgCutOff::Expired),
        other => Err(StateError::Undecodable("WireGuard cut-off reason", other.into())),
    }
}

impl StateStore {
    /// The WireGuard state last applied.
    pub fn wg_state(&self) -> Result<Option<WgState>, StateError> {
        let body: Option<Vec<u8>> =
            self.conn().query_row("SELECT body FROM wg_state WHERE id = 1", [], |r| r.get(0)).optional()?;
        body.map(|b| codec::decode_from(&b).map_err(|e| StateError::Undecodable("WireGuard state", e.to_string())))
            .transpose()
    }

    /// Stores a pushed state whole, in one transaction with what follows from it: usage of
    /// peers whose reset generation moved past it is zeroed, and usage of peers no longer in
    /// the state is dropped.
    pub fn save_wg_state(&self, state: &WgState) -> Result<(), StateError> {
        let body = codec::encode_body(state).map_err(|e| StateError::Undecodable("WireGuard state", e.to_string()))?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO wg_state (id, revision, body) VALUES (1, ?1, ?2)",
            params![state.revision as i64, body],
        )?;
        let wanted: BTreeMap<WgPeerKey, u32> =
            state.peers.iter().map(|p| ((p.interface.clone(), p.public_key), p.reset_generation)).collect();
        let stored: Vec<(String, Vec<u8>, i64)> = {
            let mut stmt = tx.prepare("SELECT interface, public_key, reset_generation FROM wg_usage")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
            rows
        };
        let mut seen = BTreeSet::new();
        for (interface, key, generation) in stored {
            let key = key_of(key)?;
            let peer = (interface, key);
            match wanted.get(&peer) {
                None => {
                    tx.execute(
                        "DELETE FROM wg_usage WHERE interface = ?1 AND public_key = ?2",
                        params![peer.0, &peer.1 .0[..]],
                    )?;
                }
                Some(&g) if (g as i64) > generation => {
                    tx.execute(
                        "UPDATE wg_usage SET rx = 0, tx = 0, reset_generation = ?3
                         WHERE interface = ?1 AND public_key = ?2",
                        params![peer.0, &peer.1 .0[..], g as i64],
                    )?;
                }
                Some(_) => {}
            }
            seen.insert(peer);
        }
        // A peer pushed with a reset generation before it moved a byte starts at that generation,
        // so later usage is not taken for usage before the reset.
        for (peer, generation) in wanted.iter().filter(|(p, g)| **g > 0 && !seen.contains(*p)) {
            tx.execute(
                "INSERT INTO wg_usage (interface, public_key, rx, tx, reset_generation) VALUES (?1, ?2, 0, 0, ?3)",
                params![peer.0, &peer.1 .0[..], *generation as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Interfaces this agent created (the only ones it changes or deletes).
    pub fn wg_managed(&self) -> Result<BTreeSet<String>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM wg_managed")?;
        let names = stmt.query_map([], |r| r.get(0))?.collect::<Result<BTreeSet<String>, _>>()?;
        Ok(names)
    }

    /// Records that the agent is creating `name` (before it exists, so a crash right after
    /// still leaves it known as ours).
    pub fn add_wg_managed(&self, name: &str) -> Result<(), StateError> {
        self.conn().execute("INSERT OR IGNORE INTO wg_managed (name) VALUES (?1)", params![name])?;
        Ok(())
    }

    /// Forgets `name` once its device is gone.
    pub fn remove_wg_managed(&self, name: &str) -> Result<(), StateError> {
        self.conn().execute("DELETE FROM wg_managed WHERE name = ?1", params![name])?;
        Ok(())
    }

    /// Peers the agent keeps off their device.
    pub fn wg_cut_offs(&self) -> Result<BTreeMap<WgPeerKey, WgCutRecord>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT interface, public_key, reason, spec FROM wg_cut_off")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, String>(2)?, r.get::<_, Vec<u8>>(3)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(interface, key, reason, spec)| {
                let spec: WgPeerSpec = codec::decode_from(&spec)
                    .map_err(|e| StateError::Undecodable("WireGuard cut-off", e.to_string()))?;
                Ok(((interface, key_of(key)?), WgCutRecord { reason: parse_reason(&reason)?, spec }))
            })
            .collect()
    }

    /// Replaces the set of cut-off peers.
    pub fn save_wg_cut_offs(&self, cut: &BTreeMap<WgPeerKey, WgCutRecord>) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM wg_cut_off", [])?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO wg_cut_off (interface, public_key, reason, spec) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for ((interface, key), record) in cut {
                let spec = codec::encode_body(&record.spec)
                    .map_err(|e| StateError::Undecodable("WireGuard cut-off", e.to_string()))?;
                insert.execute(params![interface, &key.0[..], reason_text(record.reason), spec])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Usage of every peer seen since its last reset.
    pub fn wg_usage(&self) -> Result<HashMap<WgPeerKey, WgUsage>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT interface, public_key, rx, tx, reset_generation FROM wg_usage")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    WgUsage {
                        rx: r.get::<_, i64>(2)? as u64,
                        tx: r.get::<_, i64>(3)? as u64,
                        reset_generation: r.get::<_, i64>(4)? as u32,
                    },
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(|(interface, key, usage)| Ok(((interface, key_of(key)?), usage))).collect()
    }

    /// Raw (rx, tx) counters of the last committed poll, per peer.
    pub fn wg_baselines(&self) -> Result<HashMap<WgPeerKey, (u64, u64)>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT interface, public_key, rx, tx FROM wg_baseline")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(interface, key, rx, tx)| Ok(((interface, key_of(key)?), (rx as u64, tx as u64))))
            .collect()
    }

    /// Forgets the baselines of peers taken off their device (their counters restart at zero).
    pub fn forget_wg_baselines(&self, peers: &[WgPeerKey]) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        forget_baselines(&tx, peers)?;
        tx.commit()?;
        Ok(())
    }

    /// Commits one poll atomically. Returns the journal sequence number of its row, or `None`
    /// when nothing moved (no row is written then).
    pub fn record_wg_poll(&self, poll: &WgPoll) -> Result<Option<u64>, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        forget_baselines(&tx, &poll.forget)?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT OR REPLACE INTO wg_baseline (interface, public_key, rx, tx) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for ((interface, key), rx, txb) in &poll.baselines {
                upsert.execute(params![interface, &key.0[..], *rx as i64, *txb as i64])?;
            }
        }
        let moved: Vec<&WgPeerTraffic> = poll.peers.iter().filter(|p| p.rx > 0 || p.tx > 0).collect();
        let seq = if moved.is_empty() {
            None
        } else {
            let body = codec::encode_body(&moved)
                .map_err(|e| StateError::Undecodable("WireGuard traffic batch", e.to_string()))?;
            tx.execute(
                "INSERT INTO wg_journal (taken_at_ms, body) VALUES (?1, ?2)",
                params![poll.taken_at_ms as i64, body],
            )?;
            let seq = tx.last_insert_rowid() as u64;
            let mut add = tx.prepare_cached(
                "INSERT INTO wg_usage (interface, public_key, rx, tx) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(interface, public_key) DO UPDATE SET rx = rx + excluded.rx, tx = tx + excluded.tx",
            )?;
            for p in &moved {
                add.execute(params![p.interface, &p.public_key.0[..], p.rx as i64, p.tx as i64])?;
            }
            Some(seq)
        };
        tx.commit()?;
        Ok(seq)
    }

    /// The id of the WireGuard traffic journal (not the proxy journal's), drawn on first use.
    pub fn wg_journal_id(&self) -> Result<u64, StateError> {
        self.random_setting(WG_JOURNAL_ID)
    }

    /// Journal rows after `seq`, oldest first, at most `limit`, as the events that carry them.
    pub fn wg_journal_after(&self, seq: u64, limit: usize) -> Result<Vec<WgTrafficBatch>, StateError> {
        let journal = self.wg_journal_id()?;
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT seq, taken_at_ms, body FROM wg_journal WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt
            .query_map(params![seq as i64, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(seq, taken_at_ms, body)| {
                let peers: Vec<WgPeerTraffic> = codec::decode_from(&body)
                    .map_err(|e| StateError::Undecodable("WireGuard traffic batch", e.to_string()))?;
                Ok(WgTrafficBatch { journal, seq: seq as u64, taken_at_ms: taken_at_ms as u64, peers })
            })
            .collect()
    }

    /// Drops journal rows up to and including `seq`: the controller has committed them.
    pub fn delete_wg_journal_through(&self, seq: u64) -> Result<usize, StateError> {
        Ok(self.conn().execute("DELETE FROM wg_journal WHERE seq <= ?1", params![seq as i64])?)
    }

    /// Number of journal rows waiting for an ack.
    pub fn wg_journal_len(&self) -> Result<u64, StateError> {
        Ok(self.conn().query_row("SELECT COUNT(*) FROM wg_journal", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

fn forget_baselines(tx: &rusqlite::Transaction<'_>, peers: &[WgPeerKey]) -> Result<(), StateError> {
    let mut delete = tx.prepare_cached("DELETE FROM wg_baseline WHERE interface = ?1 AND public_key = ?2")?;
    for (interface, key) in peers {
        delete.execute(params![interface, &key.0[..]])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> WgKey {
        WgKey([n; 32])
    }

    fn traffic(interface: &str, n: u8, rx: u64, tx: u64) -> WgPeerTraffic {
        WgPeerTraffic { interface: interface.into(), public_key: key(n), rx, tx }
    }

    fn peer(interface: &str, n: u8, reset_generation: u32) -> WgPeerSpec {
        WgPeerSpec {
            interface: interface.into(),
            public_key: key(n),
            preshared_key: None,
            allowed_ips: vec![format!("10.0.0.{n}/32")],
            enabled: true,
            expiry_ms: 0,
            quota_bytes: 0,
            reset_generation,
        }
    }

    #[test]
    fn a_poll_commits_baselines_journal_and_usage_together() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let a: WgPeerKey = ("wg0".into(), key(1));
        let quiet = WgPoll { taken_at_ms: 1, baselines: vec![(a.clone(), 5, 6)], ..Default::default() };
        assert_eq!(s.record_wg_poll(&quiet).unwrap(), None, "nothing moved: no row");
        assert_eq!(s.wg_baselines().unwrap()[&a], (5, 6));

        let poll = WgPoll {
            taken_at_ms: 2,
            baselines: vec![(a.clone(), 8, 10)],
            forget: vec![],
            peers: vec![traffic("wg0", 1, 3, 4), traffic("wg0", 2, 0, 0)],
        };
        let first = s.record_wg_poll(&poll).unwrap().unwrap();
        let second = s
            .record_wg_poll(&WgPoll { taken_at_ms: 3, peers: vec![traffic("wg0", 1, 1, 1)], ..Default::default() })
            .unwrap()
            .unwrap();
        assert!(second > first);
        let rows = s.wg_journal_after(0, 10).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].peers, vec![traffic("wg0", 1, 3, 4)], "idle peers are not journaled");
        assert_eq!((rows[0].seq, rows[0].taken_at_ms), (first, 2));
        assert_eq!(s.wg_usage().unwrap()[&a], WgUsage { rx: 4, tx: 5, reset_generation: 0 });

        assert_eq!(s.delete_wg_journal_through(first).unwrap(), 1);
        assert_eq!(s.wg_journal_after(0, 10).unwrap()[0].seq, second);
        s.delete_wg_journal_through(second).unwrap();
        assert_eq!(s.wg_journal_len().unwrap(), 0);
        // Sequence numbers are never reused, even once the journal is empty.
        let third = s.record_wg_poll(&WgPoll { peers: vec![traffic("wg0", 1, 1, 0)], ..Default::default() });
        assert!(third.unwrap().unwrap() > second);

        // A forgotten baseline goes in the same transaction.
        s.record_wg_poll(&WgPoll { forget: vec![a.clone()], ..Default::default() }).unwrap();
        assert!(s.wg_baselines().unwrap().is_empty());
    }

    #[test]
    fn journal_id_is_stable_and_not_the_proxy_journals() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let id = s.wg_journal_id().unwrap();
        assert_ne!(id, s.journal_id().unwrap());
        assert_eq!(StateStore::open(dir.path()).unwrap().wg_journal_id().unwrap(), id);
        s.record_wg_poll(&WgPoll { peers: vec![traffic("wg0", 1, 1, 0)], ..Default::default() }).unwrap();
        assert_eq!(s.wg_journal_after(0, 1).unwrap()[0].journal, id);
    }

    #[test]
    fn saving_a_state_resets_and_prunes_usage() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let peers = vec![traffic("wg0", 1, 10, 10), traffic("wg0", 2, 5, 5), traffic("wg1", 1, 7, 0)];
        s.record_wg_poll(&WgPoll { peers, ..Default::default() }).unwrap();
        let state = WgState { revision: 4, interfaces: vec![], peers: vec![peer("wg0", 1, 1), peer("wg0", 2, 0)] };
        s.save_wg_state(&state).unwrap();
        let usage = s.wg_usage().unwrap();
        assert_eq!(usage[&("wg0".into(), key(1))], WgUsage { rx: 0, tx: 0, reset_generation: 1 }, "reset");
        assert_eq!(usage[&("wg0".into(), key(2))].total(), 10, "same generation: kept");
        assert!(!usage.contains_key(&("wg1".into(), key(1))), "no longer in the state: dropped");
        assert_eq!(s.wg_state().unwrap(), Some(state.clone()));
        // The same generation again resets nothing.
        s.record_wg_poll(&WgPoll { peers: vec![traffic("wg0", 1, 3, 0)], ..Default::default() }).unwrap();
        s.save_wg_state(&state).unwrap();
        assert_eq!(s.wg_usage().unwrap()[&("wg0".into(), key(1))].total(), 3);
        // A new peer pushed with a generation starts there.
        let state = WgState { peers: vec![peer("wg0", 3, 2)], ..state };
        s.save_wg_state(&state).unwrap();
        assert_eq!(s.wg_usage().unwrap()[&("wg0".into(), key(3))].reset_generation, 2);
    }

    #[test]
    fn managed_names_and_cut_offs_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        s.add_wg_managed("wg0").unwrap();
        s.add_wg_managed("wg0").unwrap();
        s.add_wg_managed("wg1").unwrap();
        s.remove_wg_managed("wg1").unwrap();
        let mut cut = BTreeMap::new();
        cut.insert(("wg0".to_string(), key(1)), WgCutRecord { reason: WgCutOff::Quota, spec: peer("wg0", 1, 0) });
        cut.insert(("wg0".to_string(), key(2)), WgCutRecord { reason: WgCutOff::Expired, spec: peer("wg0", 2, 0) });
        s.save_wg_cut_offs(&cut).unwrap();
        let again = StateStore::open(dir.path()).unwrap();
        assert_eq!(again.wg_managed().unwrap(), BTreeSet::from(["wg0".to_string()]));
        assert_eq!(again.wg_cut_offs().unwrap(), cut);
        cut.clear();
        again.save_wg_cut_offs(&cut).unwrap();
        assert!(again.wg_cut_offs().unwrap().is_empty());
    }
}
