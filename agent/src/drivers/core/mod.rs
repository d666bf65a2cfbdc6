//! Proxy core driver: Xray and v2ray over their gRPC API (users live, stats polled), the core
//! process itself (supervised or external), its config file, and the traffic journal feed.

pub mod api;
pub mod config;
mod driver;
pub mod limits;
pub mod process;
pub mod reconcile;
pub mod singbox;
pub mod stats;

use flotilla_protocol::proxy::{ApplyReport, CoreStatus, LogLine, LogQuery, ProxyState};
use tokio::sync::watch;

use crate::state::{StateError, StoredBatch};
pub use driver::{CoreDriver, CoreMode, CoreSettings, DriverError};

/// What the link needs from a proxy core: apply pushed state, report status, and hand over
/// journal rows until the controller has committed them. [`CoreDriver`] drives real cores;
/// simulations (the benchmark) plug in their own.
#[async_trait::async_trait]
pub trait ProxyCore: Send + Sync + std::fmt::Debug {
    /// Revision of the proxy state applied (sent in `Hello`).
    fn applied_revision(&self) -> u64;
    /// The core's status; a change is pushed to the controller as an event.
    fn status(&self) -> watch::Receiver<CoreStatus>;
    /// The latest journal sequence written; the link ships rows when it moves.
    fn journal(&self) -> watch::Receiver<u64>;
    /// Status now.
    async fn current_status(&self) -> CoreStatus;
    /// Applies a pushed proxy state; answers once the core has taken it.
    async fn apply(&self, state: ProxyState) -> ApplyReport;
    /// Restarts the core.
    async fn restart(&self) -> CoreStatus;
    /// Recent core log lines.
    fn logs(&self, query: &LogQuery) -> Vec<LogLine>;
    /// Id of the traffic journal.
    fn journal_id(&self) -> Result<u64, StateError>;
    /// Journal rows after `seq`, oldest first (blocking: call off the async threads).
    fn journal_after(&self, seq: u64, limit: usize) -> Result<Vec<StoredBatch>, StateError>;
    /// The controller committed every row through `seq` (blocking).
    fn journal_committed(&self, seq: u64) -> Result<(), StateError>;
}
