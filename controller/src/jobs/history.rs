//! Samples every node's state into the node history at a fixed interval (the web UI's charts),
//! and drops samples past the retention.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::proxy::CoreState;
use time::OffsetDateTime;

use crate::fleet::Fleet;
use crate::store::{HistoryPoint, StoreError};

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// How long samples are kept.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Whether the sampler runs (reported by `GET /api/v1/health/deps`).
#[derive(Debug, Default)]
pub struct HistoryJob {
    running: AtomicBool,
}

impl HistoryJob {
    /// Starts sampling now and every [`INTERVAL`].
    pub fn start(fleet: Arc<Fleet>) -> Arc<HistoryJob> {
        let job = Arc::new(HistoryJob::default());
        let handle = job.clone();
        tokio::spawn(async move {
            handle.running.store(true, Ordering::Relaxed);
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let fleet = fleet.clone();
                match tokio::task::spawn_blocking(move || sample(&fleet)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "node history sample failed"),
                    Err(e) => tracing::warn!(error = %e, "node history task failed"),
                }
            }
        });
        job
    }

    /// Whether the sampler has started.
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

fn sample(fleet: &Fleet) -> Result<(), StoreError> {
    let store = fleet.store();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let traffic: HashMap<_, _> = store.node_traffic()?;
    let points: Vec<HistoryPoint> = store
        .nodes()?
        .iter()
        .map(|node| {
            let live = fleet.live(node.id);
            let core = live.core.as_ref().filter(|_| live.connected);
            let (up, down) = traffic.get(&node.id).copied().unwrap_or_default();
            HistoryPoint {
                node_id: node.id,
                ts: now,
                available: live.connected,
                core_running: core.is_some_and(|c| c.state == CoreState::Running),
                cpu: live
                    .metrics
                    .as_ref()
                    .filter(|_| live.connected)
                    .map(|m| (m.cpu_percent as f64 * 10.0).round() / 10.0),
                online_clients: core.map(|c| c.online.len() as u32).unwrap_or(0),
                traffic_total: up.saturating_add(down),
                rtt_ms: live.rtt.filter(|_| live.connected).map(|r| r.as_secs_f64() * 1000.0),
            }
        })
        .collect();
    store.record_history(&points)?;
    store.prune_history(now - RETENTION.as_secs() as i64)?;
    Ok(())
}
