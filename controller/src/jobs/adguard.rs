//! Collects every enabled AdGuard Home source at a fixed interval (the web UI's AdGuard panels),
//! and on demand (`POST /api/v1/adguard/collect-now`); drops samples past the retention.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::adguard::{self, Target};
use crate::store::{AdGuardSample, AdGuardSourceRecord, Store, StoreError};

/// Time between two collections.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// How long samples are kept (as the node history).
pub const RETENTION: Duration = super::history::RETENTION;

/// One source as just collected.
#[derive(Debug, Clone)]
pub struct Collected {
    /// The source as it was when the collection started.
    pub source: AdGuardSourceRecord,
    pub sample: AdGuardSample,
    /// The version it reported, when it answered.
    pub version: Option<String>,
}

/// Why a collection could not run at all (one source failing is a sample, not an error).
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("collection task failed: {0}")]
    Task(String),
}

/// The collector.
#[derive(Debug)]
pub struct AdGuardJob {
    store: Store,
    /// One collection at a time: a `collect-now` during a scheduled run waits for it rather than
    /// polling every AdGuard Home twice.
    collecting: tokio::sync::Mutex<()>,
}

impl AdGuardJob {
    /// Starts collecting now and every [`INTERVAL`].
    pub fn start(store: Store) -> Arc<AdGuardJob> {
        let job = Arc::new(AdGuardJob { store, collecting: Default::default() });
        let handle = job.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = handle.collect_now().await {
                    tracing::warn!(error = %e, "AdGuard collection failed");
                }
            }
        });
        job
    }

    /// Collects every enabled source at once (concurrently: one slow or dead source delays the
    /// others by nothing), stores the samples, and returns them in the sources' order.
    pub async fn collect_now(&self) -> Result<Vec<Collected>, CollectError> {
        let _one_at_a_time = self.collecting.lock().await;
        let store = self.store.clone();
        let sources = blocking(move || store.adguard_sources()).await??;
        let ts = OffsetDateTime::now_utc().unix_timestamp();
        let mut tasks = tokio::task::JoinSet::new();
        for (index, source) in sources.into_iter().filter(|s| s.enabled).enumerate() {
            let store = self.store.clone();
            tasks.spawn_blocking(move || collect_one(&store, source, ts).map(|c| (index, c)));
        }
        let mut collected = Vec::with_capacity(tasks.len());
        while let Some(done) = tasks.join_next().await {
            collected.push(done.map_err(|e| CollectError::Task(e.to_string()))??);
        }
        collected.sort_by_key(|(index, _)| *index);
        let collected: Vec<Collected> = collected.into_iter().map(|(_, c)| c).collect();
        let store = self.store.clone();
        let pruned = blocking(move || store.prune_adguard_samples(ts - RETENTION.as_secs() as i64)).await??;
        tracing::debug!(sources = collected.len(), pruned, "AdGuard sources collected");
        Ok(collected)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, CollectError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| CollectError::Task(e.to_string()))
}

/// Reads one source and records what it gave.
fn collect_one(store: &Store, source: AdGuardSourceRecord, ts: i64) -> Result<Collected, StoreError> {
    let target = Target {
        admin_url: source.admin_url.clone(),
        username: source.username.clone(),
        password: store.adguard_password(source.id)?,
        verify_tls: source.verify_tls,
    };
    let outcome = adguard::fetch(&target);
    if let Err(e) = &outcome {
        tracing::debug!(source = %source.name, error = %e, "AdGuard source unavailable");
    }
    let sample = adguard::sample(source.id, ts, &outcome);
    let version = outcome.ok().map(|(status, _)| status.version).filter(|v| !v.is_empty());
    // False when the source was deleted meanwhile: its sample is dropped, the answer still shows it.
    store.record_adguard_sample(&sample, version.as_deref())?;
    Ok(Collected { source, sample, version })
}
