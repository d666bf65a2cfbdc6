//! The node history: one row per node per sample (state, CPU, online clients, traffic total),
//! kept for a bounded time.

use flotilla_protocol::NodeId;
use rusqlite::params;

use super::{Store, StoreError};

/// One sample of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPoint {
    pub node_id: NodeId,
    /// Unix seconds.
    pub ts: i64,
    pub available: bool,
    pub core_running: bool,
    pub cpu: Option<f64>,
    pub online_clients: u32,
    pub traffic_total: u64,
    pub rtt_ms: Option<f64>,
}

impl Store {
    /// Records samples (one transaction).
    pub fn record_history(&self, points: &[HistoryPoint]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO node_history
                 (node_id, ts, available, core_running, cpu, online_clients, traffic_total, rtt_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for p in points {
                insert.execute(params![
                    p.node_id.0,
                    p.ts,
                    p.available,
                    p.core_running,
                    p.cpu,
                    p.online_clients,
                    p.traffic_total as i64,
                    p.rtt_ms
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Samples of `node` at or after `since` (Unix seconds), oldest first, the newest `limit`.
    pub fn history(&self, node: NodeId, since: i64, limit: u32) -> Result<Vec<HistoryPoint>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT node_id, ts, available, core_running, cpu, online_clients, traffic_total, rtt_ms
             FROM (SELECT * FROM node_history WHERE node_id = ?1 AND ts >= ?2 ORDER BY ts DESC LIMIT ?3)
             ORDER BY ts",
        )?;
        let rows = stmt
            .query_map(params![node.0, since, limit], |r| {
                Ok(HistoryPoint {
                    node_id: NodeId(r.get(0)?),
                    ts: r.get(1)?,
                    available: r.get(2)?,
                    core_running: r.get(3)?,
                    cpu: r.get(4)?,
                    online_clients: r.get(5)?,
                    traffic_total: r.get::<_, i64>(6)? as u64,
                    rtt_ms: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Drops samples older than `before` (Unix seconds).
    pub fn prune_history(&self, before: i64) -> Result<usize, StoreError> {
        Ok(self.conn().execute("DELETE FROM node_history WHERE ts < ?1", params![before])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewNode;

    #[test]
    fn history_is_kept_in_order_limited_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let node = s.create_node(&NewNode { name: "n".into(), ..Default::default() }).unwrap().id;
        let point = |ts| HistoryPoint {
            node_id: node,
            ts,
            available: ts % 2 == 0,
            core_running: true,
            cpu: Some(1.5),
            online_clients: 2,
            traffic_total: ts as u64 * 10,
            rtt_ms: None,
        };
        s.record_history(&(1..=10).map(point).collect::<Vec<_>>()).unwrap();
        let got = s.history(node, 3, 4).unwrap();
        assert_eq!(got.iter().map(|p| p.ts).collect::<Vec<_>>(), vec![7, 8, 9, 10], "the newest 4, oldest first");
        assert_eq!(got[0], point(7));
        assert_eq!(s.prune_history(6).unwrap(), 5);
        assert_eq!(s.history(node, 0, 100).unwrap().len(), 5);
    }
}
