//! What the v2ray-stat handlers work on: the users of one node (the agent's own core) or of a
//! whole fleet (the controller). The handlers find it in the request's extensions, so each host
//! of the API puts its own there (a fixed one on the agent, a per-request scope on the
//! controller).

use std::sync::Arc;

use flotilla_protocol::users::{DnsStat, DnsStatsQuery, StatsReset, UserChange, UserStats};

use crate::drivers::core::{ProxyCore, UserChangeError};

/// Users and statistics behind the API.
#[async_trait::async_trait]
pub trait UserDirectory: Send + Sync {
    /// Users and traffic sources now.
    async fn user_stats(&self) -> UserStats;
    /// Applies changes in order; one result per change.
    async fn change_users(&self, changes: Vec<UserChange>) -> Vec<Result<(), UserChangeError>>;
    /// The most frequent destinations of a user.
    async fn dns_stats(&self, query: &DnsStatsQuery) -> Vec<DnsStat>;
    /// Zeroes statistics.
    async fn reset_stats(&self, what: StatsReset);
}

/// The agent's own core as a directory.
pub struct CoreDirectory(pub Arc<dyn ProxyCore>);

#[async_trait::async_trait]
impl UserDirectory for CoreDirectory {
    async fn user_stats(&self) -> UserStats {
        self.0.user_stats().await
    }

    async fn change_users(&self, changes: Vec<UserChange>) -> Vec<Result<(), UserChangeError>> {
        self.0.change_users(changes).await
    }

    async fn dns_stats(&self, query: &DnsStatsQuery) -> Vec<DnsStat> {
        self.0.dns_stats(query).await
    }

    async fn reset_stats(&self, what: StatsReset) {
        self.0.reset_stats(what).await
    }
}
