//! Proxy core driver: Xray and v2ray over their gRPC API (users live, stats polled), the core
//! process itself (supervised or external), its config file, and the traffic journal feed.

pub mod access_log;
pub mod api;
pub mod config;
mod driver;
pub mod limits;
pub mod process;
pub mod reconcile;
pub mod session;
pub mod singbox;
pub mod stats;
pub mod users;

use flotilla_protocol::proxy::{ApplyReport, CoreStatus, LogLine, LogQuery, ProxyState};
use flotilla_protocol::users::{
    DesiredUsers, DnsStat, DnsStatsQuery, LocalChange, StatsReset, UserChange, UserEvent, UserStats,
};
use tokio::sync::watch;

use crate::state::{StateError, StoredBatch};
pub use driver::{CoreDriver, CoreMode, CoreSettings, DriverError};
pub use users::UserChangeError;

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

    /// Applies a pushed state with the clients' lifecycle settings (`APPLY_USERS`).
    async fn apply_users(&self, desired: DesiredUsers) -> ApplyReport {
        self.apply(desired.state).await
    }
    /// The node's users and traffic sources now.
    async fn user_stats(&self) -> UserStats {
        UserStats { sources: vec![], users: vec![], per_user_stats: false, unavailable: vec![] }
    }
    /// Applies user changes made on this host, in order, each live on the core and queued for
    /// the controller; one result per change.
    async fn change_users(&self, changes: Vec<UserChange>) -> Vec<Result<(), UserChangeError>> {
        changes.iter().map(|_| Err(UserChangeError::NoCore)).collect()
    }
    /// The most frequent destinations of a user.
    async fn dns_stats(&self, _query: &DnsStatsQuery) -> Vec<DnsStat> {
        vec![]
    }
    /// Zeroes agent-local statistics.
    async fn reset_stats(&self, _what: StatsReset) {}
    /// What the agent did to users on its own (IP limits), for the controller.
    fn user_events(&self) -> Option<tokio::sync::broadcast::Receiver<UserEvent>> {
        None
    }
    /// The latest outbox id written; the link ships local user changes when it moves.
    fn outbox(&self) -> watch::Receiver<u64> {
        watch::channel(0).1
    }
    /// Id of the outbox of local user changes.
    fn outbox_id(&self) -> Result<u64, StateError> {
        Ok(0)
    }
    /// Local user changes the controller has not committed, after id `after`, oldest first
    /// (blocking).
    fn pending_changes(&self, _after: u64, _limit: usize) -> Result<Vec<LocalChange>, StateError> {
        Ok(vec![])
    }
    /// The controller committed local changes through `through` in revision `revision` (blocking).
    fn changes_committed(&self, _through: u64, _revision: u64) -> Result<(), StateError> {
        Ok(())
    }
}
