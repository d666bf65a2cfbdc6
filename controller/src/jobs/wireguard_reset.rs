//! CandyPanel's `reset_time`: every that many hours, every WireGuard client's counters start
//! again from zero. Interfaces stay up and sessions are kept: only the usage the quotas are
//! measured against is reset (on the controller and, through the reset generation, on agents).

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::NodeId;

use crate::fleet::Fleet;
use crate::store::{Store, StoreError};

/// How often the schedule is checked.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Starts checking the schedule every [`INTERVAL`].
pub fn start(fleet: Arc<Fleet>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = fleet.store().clone();
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            match tokio::task::spawn_blocking(move || reset_if_due(&store, now)).await {
                Ok(Ok(nodes)) => {
                    for node in nodes {
                        let fleet = fleet.clone();
                        tokio::spawn(async move { fleet.push_wireguard(node).await });
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "WireGuard counter reset failed"),
                Err(_) => return,
            }
        }
    });
}

/// Resets the counters when the scheduled time (`next_reset_at`, Unix seconds) has come, and
/// schedules the next one. Returns the nodes whose agents need the new state.
pub fn reset_if_due(store: &Store, now: i64) -> Result<Vec<NodeId>, StoreError> {
    let hours: f64 = store.candy_setting("reset_time")?.and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let due: i64 = store.candy_setting("next_reset_at")?.and_then(|v| v.parse().ok()).unwrap_or(0);
    if hours <= 0.0 || due <= 0 || now < due {
        return Ok(vec![]);
    }
    let next = now + (hours * 3600.0) as i64;
    store.set_candy_settings(&[("next_reset_at", &next.to_string())])?;
    let nodes = store.reset_wg_usage()?;
    tracing::info!(nodes = nodes.len(), "WireGuard counters reset (reset_time)");
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_only_when_due_and_schedules_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(reset_if_due(&store, 1_000).unwrap().is_empty(), "off by default");
        store.set_candy_settings(&[("reset_time", "2"), ("next_reset_at", "5000")]).unwrap();
        assert!(reset_if_due(&store, 4_999).unwrap().is_empty());
        reset_if_due(&store, 5_000).unwrap();
        assert_eq!(store.candy_setting("next_reset_at").unwrap().as_deref(), Some("12200"));
    }
}
