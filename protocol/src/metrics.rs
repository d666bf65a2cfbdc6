//! Host metrics samples pushed by the agent's metrics driver.

use serde::{Deserialize, Serialize};

/// One sample of host metrics. Byte counts are absolute; network counters are totals since boot
/// over all non-loopback interfaces.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetricsSample {
    /// Unix time of the sample, milliseconds.
    pub taken_at_ms: u64,
    /// Whole-host CPU use, 0..=100.
    pub cpu_percent: f32,
    pub mem_used: u64,
    pub mem_total: u64,
    pub swap_used: u64,
    pub swap_total: u64,
    /// Usage of the filesystem mounted at `/`.
    pub disk_used: u64,
    pub disk_total: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    pub uptime_secs: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
}
