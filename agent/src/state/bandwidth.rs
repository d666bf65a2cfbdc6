//! Bytes per network interface and day (UTC) in `agent.db`, added up from the kernel's counters:
//! one sample is one transaction (new baselines and the day's totals together), so a month
//! survives agent restarts and reboots and no delta is counted twice.

use flotilla_protocol::bandwidth::{DayUsage, InterfaceUsage};
use rusqlite::{params, OptionalExtension};

use super::{StateError, StateStore};

/// Raw counters of one interface as read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetCounters {
    pub interface: String,
    pub rx: u64,
    pub tx: u64,
}

/// What a counter moved since its baseline: a smaller value, or another boot, means the counter
/// started again (reboot, interface re-created), so all of the new value is new traffic.
pub fn delta(old: Option<(u64, u64, &str)>, rx: u64, tx: u64, boot_id: &str) -> (u64, u64) {
    match old {
        // First sight of the interface: its counters cover time before this agent counted.
        None => (0, 0),
        Some((_, _, boot)) if boot != boot_id => (rx, tx),
        Some((old_rx, old_tx, _)) => {
            let one = |new: u64, old: u64| if new < old { new } else { new - old };
            (one(rx, old_rx), one(tx, old_tx))
        }
    }
}

impl StateStore {
    /// Adds what each counter moved since its baseline to `day` (`YYYY-MM-DD`) and keeps the new
    /// values as baselines.
    pub fn record_net_sample(&self, boot_id: &str, day: &str, counters: &[NetCounters]) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for c in counters {
            let old: Option<(i64, i64, String)> = tx
                .query_row("SELECT rx, tx, boot_id FROM net_baseline WHERE interface = ?1", [&c.interface], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let (drx, dtx) =
                delta(old.as_ref().map(|(r, t, b)| (*r as u64, *t as u64, b.as_str())), c.rx, c.tx, boot_id);
            tx.execute(
                "INSERT INTO net_baseline (interface, rx, tx, boot_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(interface) DO UPDATE SET rx = excluded.rx, tx = excluded.tx, boot_id = excluded.boot_id",
                params![c.interface, c.rx as i64, c.tx as i64, boot_id],
            )?;
            if drx > 0 || dtx > 0 {
                tx.execute(
                    "INSERT INTO net_usage (interface, day, rx, tx) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(interface, day) DO UPDATE SET rx = rx + excluded.rx, tx = tx + excluded.tx",
                    params![c.interface, day, drx as i64, dtx as i64],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Totals of `month` (`YYYY-MM`) per interface, and per day and interface.
    pub fn net_usage(&self, month: &str) -> Result<(Vec<InterfaceUsage>, Vec<DayUsage>), StateError> {
        let conn = self.conn();
        let pattern = format!("{month}-%");
        let mut stmt = conn.prepare(
            "SELECT interface, SUM(rx), SUM(tx) FROM net_usage WHERE day LIKE ?1 GROUP BY interface ORDER BY interface",
        )?;
        let totals = stmt
            .query_map([&pattern], |r| {
                Ok(InterfaceUsage {
                    interface: r.get(0)?,
                    rx_bytes: r.get::<_, i64>(1)? as u64,
                    tx_bytes: r.get::<_, i64>(2)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt =
            conn.prepare("SELECT day, interface, rx, tx FROM net_usage WHERE day LIKE ?1 ORDER BY day, interface")?;
        let days = stmt
            .query_map([&pattern], |r| {
                Ok(DayUsage {
                    day: r.get(0)?,
                    usage: InterfaceUsage {
                        interface: r.get(1)?,
                        rx_bytes: r.get::<_, i64>(2)? as u64,
                        tx_bytes: r.get::<_, i64>(3)? as u64,
                    },
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((totals, days))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(interface: &str, rx: u64, tx: u64) -> NetCounters {
        NetCounters { interface: interface.into(), rx, tx }
    }

    #[test]
    fn deltas_survive_restarts_resets_and_reboots() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        // First sight: a baseline only.
        s.record_net_sample("boot-a", "2026-03-01", &[c("eth0", 1000, 500)]).unwrap();
        s.record_net_sample("boot-a", "2026-03-01", &[c("eth0", 1100, 550)]).unwrap();
        // The agent restarts: the store keeps the baseline.
        let s = StateStore::open(dir.path()).unwrap();
        s.record_net_sample("boot-a", "2026-03-02", &[c("eth0", 1300, 600)]).unwrap();
        // The interface was re-created: a smaller counter starts again.
        s.record_net_sample("boot-a", "2026-03-02", &[c("eth0", 40, 10)]).unwrap();
        // A reboot: the new counters are all new traffic, even when larger than the old.
        s.record_net_sample("boot-b", "2026-03-31", &[c("eth0", 2000, 1000), c("wg0", 7, 7)]).unwrap();
        s.record_net_sample("boot-b", "2026-04-01", &[c("eth0", 2001, 1000)]).unwrap();
        let (totals, days) = s.net_usage("2026-03").unwrap();
        assert_eq!(
            totals,
            vec![InterfaceUsage {
                interface: "eth0".into(),
                rx_bytes: 100 + 200 + 40 + 2000,
                tx_bytes: 50 + 50 + 10 + 1000
            }]
        );
        assert_eq!(days.iter().map(|d| d.day.as_str()).collect::<Vec<_>>(), ["2026-03-01", "2026-03-02", "2026-03-31"]);
        assert_eq!(s.net_usage("2026-04").unwrap().0[0].rx_bytes, 1);
        assert!(s.net_usage("2026-05").unwrap().0.is_empty());
    }
}
