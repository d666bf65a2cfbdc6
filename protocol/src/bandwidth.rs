//! Bandwidth per network interface of a node (`BANDWIDTH`): byte totals the agent adds up from the
//! kernel's counters into its store every minute, so a month survives agent restarts and reboots.

use serde::{Deserialize, Serialize};

/// `BANDWIDTH` body (request kind 30). The agent samples its counters first, so the answer
/// includes traffic up to now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthQuery {
    /// `YYYY-MM` (UTC); `None`: the current month.
    pub month: Option<String>,
}

/// Bytes received and sent by one interface (or on one day).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceUsage {
    pub interface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One interface on one day (`YYYY-MM-DD`, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayUsage {
    pub day: String,
    pub usage: InterfaceUsage,
}

/// `BANDWIDTH` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthReport {
    /// The month reported, `YYYY-MM`.
    pub month: String,
    /// Month totals per interface (loopback excluded), by name.
    pub interfaces: Vec<InterfaceUsage>,
    /// Per day and interface, in order.
    pub days: Vec<DayUsage>,
    /// When the counters were last read, Unix milliseconds.
    pub sampled_at_ms: u64,
}
