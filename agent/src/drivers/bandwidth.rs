//! Bandwidth per network interface: `/proc/net/dev` read every minute (and before every
//! `BANDWIDTH` answer), deltas added to per-day totals in `agent.db` (`state::bandwidth`), so a
//! reboot or an agent restart does not reset a month. Loopback is not counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_protocol::bandwidth::{BandwidthQuery, BandwidthReport};
use time::OffsetDateTime;

use crate::state::bandwidth::NetCounters;
use crate::state::StateStore;

/// How often the counters are read.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(60);

/// Parses `/proc/net/dev`: (interface, rx bytes, tx bytes), loopback left out.
pub fn parse_net_dev(text: &str) -> Vec<NetCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            let fields: Vec<u64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            (name != "lo" && fields.len() >= 9).then(|| NetCounters {
                interface: name.to_string(),
                rx: fields[0],
                tx: fields[8],
            })
        })
        .collect()
}

/// Whether `month` is `YYYY-MM`.
pub fn valid_month(month: &str) -> bool {
    let b = month.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit)
        && matches!(month[5..].parse::<u8>(), Ok(1..=12))
}

/// The bandwidth counter of this host.
#[derive(Debug)]
pub struct BandwidthDriver {
    state: StateStore,
    /// Samples are taken one at a time (the minute tick and an answer may coincide).
    lock: Mutex<()>,
    sampled_at_ms: AtomicU64,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl BandwidthDriver {
    /// Takes a first sample and samples every [`SAMPLE_INTERVAL`] until [`BandwidthDriver::stop`].
    pub fn start(state: StateStore) -> Arc<BandwidthDriver> {
        let driver = Arc::new(BandwidthDriver {
            state,
            lock: Mutex::new(()),
            sampled_at_ms: AtomicU64::new(0),
            task: Mutex::new(None),
        });
        let ticking = Arc::downgrade(&driver);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            loop {
                tick.tick().await;
                let Some(driver) = ticking.upgrade() else { break };
                let sampled = tokio::task::spawn_blocking(move || driver.sample()).await;
                if let Ok(Err(e)) = sampled {
                    tracing::warn!(error = %e, "bandwidth counters not sampled");
                }
            }
        });
        *driver.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        driver
    }

    /// Stops the sampling task.
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }

    /// Reads the counters now and adds what moved to today (blocking).
    pub fn sample(&self) -> Result<(), String> {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let text = std::fs::read_to_string("/proc/net/dev").map_err(|e| format!("/proc/net/dev: {e}"))?;
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let now = OffsetDateTime::now_utc();
        let day = format!("{:04}-{:02}-{:02}", now.year(), u8::from(now.month()), now.day());
        self.state.record_net_sample(boot_id.trim(), &day, &parse_net_dev(&text)).map_err(|e| e.to_string())?;
        self.sampled_at_ms.store((now.unix_timestamp_nanos() / 1_000_000) as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The month `query` names (after a fresh sample), blocking. `Err` for a malformed month.
    pub fn report(&self, query: &BandwidthQuery) -> Result<BandwidthReport, String> {
        let month = match &query.month {
            Some(m) if valid_month(m) => m.clone(),
            Some(m) => return Err(format!("month {m:?} is not YYYY-MM")),
            None => {
                let now = OffsetDateTime::now_utc();
                format!("{:04}-{:02}", now.year(), u8::from(now.month()))
            }
        };
        if let Err(e) = self.sample() {
            tracing::warn!(error = %e, "bandwidth counters not sampled");
        }
        let (interfaces, days) = self.state.net_usage(&month).map_err(|e| e.to_string())?;
        Ok(BandwidthReport { month, interfaces, days, sampled_at_ms: self.sampled_at_ms.load(Ordering::Relaxed) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:  123456     100    0    0    0     0          0         0   123456     100    0    0    0     0       0          0\n  \
            eth0: 9876543210 5000    0    0    0     0          0         0 1234567   4000    0    0    0     0       0          0\n";
        assert_eq!(
            parse_net_dev(text),
            vec![NetCounters { interface: "eth0".into(), rx: 9_876_543_210, tx: 1_234_567 }]
        );
    }

    #[test]
    fn months() {
        assert!(valid_month("2026-03") && valid_month("1999-12"));
        for bad in ["2026-13", "2026-00", "2026-3", "26-03", "2026/03", "2026-03-01", "abcd-ef"] {
            assert!(!valid_month(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn reports_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let driver = BandwidthDriver::start(StateStore::open(dir.path()).unwrap());
        let report = tokio::task::spawn_blocking({
            let driver = driver.clone();
            move || driver.report(&BandwidthQuery { month: None })
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(report.month.len(), 7);
        assert!(report.sampled_at_ms > 0);
        assert!(driver.report(&BandwidthQuery { month: Some("2026-13".into()) }).is_err());
        driver.stop();
    }
}
