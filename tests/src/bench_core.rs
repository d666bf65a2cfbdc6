//! An in-memory proxy core for `flotilla-bench`: records what the controller pushes and makes up
//! the traffic journal a busy node would ship, so simulated agents load the controller like real
//! ones (apply requests, core status events, one traffic batch per stats interval).
//!
//! Nothing runs a core and nothing touches disk. [`TrafficTicker`] writes the journal rows: one
//! shared task for all simulated agents, spreading their polls evenly over the interval as real
//! agents started at random moments would.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_agent::drivers::core::ProxyCore;
use flotilla_agent::state::{StateError, StoredBatch};
use flotilla_protocol::proxy::{
    ApplyReport, CoreFlavor, CoreState, CoreStatus, InboundTraffic, LogLine, LogQuery, OnlineSource, ProxyState,
    UserTraffic,
};
use tokio::sync::watch;

/// Journal rows kept while the controller does not ack (link down): the oldest are dropped
/// beyond this, so a long outage cannot grow the simulator without bound.
const MAX_ROWS: usize = 1024;

#[derive(Debug, Default)]
struct Inner {
    /// Last applied state.
    state: Option<ProxyState>,
    rows: VecDeque<StoredBatch>,
    /// Sequence of the last row written (0: none yet).
    last_seq: u64,
    /// Emails of the next batch, cached until the applied state changes.
    emails: Option<Vec<String>>,
}

/// Counters over every [`RecordingCore`] of a run.
#[derive(Debug, Default)]
pub struct CoreCounters {
    /// `APPLY_PROXY_STATE` requests answered.
    pub applies: AtomicU64,
    /// Journal rows written.
    pub rows_written: AtomicU64,
    /// Journal rows the controller committed (acked).
    pub rows_committed: AtomicU64,
    /// Rows dropped because the journal was full.
    pub rows_dropped: AtomicU64,
    /// User entries in the rows written.
    pub user_entries: AtomicU64,
}

/// A proxy core that only records: see the module docs.
#[derive(Debug)]
pub struct RecordingCore {
    /// Tag of this simulated node, used in its synthetic user emails.
    name: String,
    journal_id: u64,
    users_per_batch: usize,
    inner: Mutex<Inner>,
    status_tx: watch::Sender<CoreStatus>,
    journal_tx: watch::Sender<u64>,
    counters: Arc<CoreCounters>,
}

impl RecordingCore {
    /// A core for node `name` whose traffic rows carry about `users_per_batch` users.
    pub fn new(name: &str, users_per_batch: usize, counters: Arc<CoreCounters>) -> Arc<RecordingCore> {
        let status = CoreStatus {
            flavor: Some(CoreFlavor::Xray),
            state: CoreState::Running,
            version: "recording".into(),
            uptime_secs: 0,
            per_user_stats: true,
            applied_revision: 0,
            online: vec![],
            online_source: OnlineSource::CoreApi,
            cut_off: vec![],
            last_error: None,
        };
        Arc::new(RecordingCore {
            name: name.to_string(),
            // Below 2^63, as the real journal ids (the controller stores them as INTEGER).
            journal_id: rand::random::<u64>() >> 1,
            users_per_batch,
            inner: Mutex::new(Inner::default()),
            status_tx: watch::channel(status).0,
            journal_tx: watch::channel(0).0,
            counters,
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state last applied, if any.
    pub fn applied(&self) -> Option<ProxyState> {
        self.inner().state.clone()
    }

    /// Writes one journal row, as a stats poll in which every user moved traffic would, and
    /// tells the link. Users are the applied state's clients first (so the controller's updates
    /// hit real rows), then synthetic `u<j>@<node>` names up to `users_per_batch`.
    pub fn poll(&self) {
        if self.users_per_batch == 0 {
            return;
        }
        let taken_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut inner = self.inner();
        if inner.emails.is_none() {
            let mut emails: Vec<String> = inner
                .state
                .iter()
                .flat_map(|s| s.clients.iter().map(|c| c.email.clone()))
                .take(self.users_per_batch)
                .collect();
            let mut j = 0;
            while emails.len() < self.users_per_batch {
                emails.push(format!("u{j}@{}", self.name));
                j += 1;
            }
            inner.emails = Some(emails);
        }
        let users: Vec<UserTraffic> = inner
            .emails
            .iter()
            .flatten()
            .map(|email| UserTraffic {
                email: email.clone(),
                up: 1_000 + rand::random::<u64>() % 100_000,
                down: 10_000 + rand::random::<u64>() % 10_000_000,
            })
            .collect();
        let (up, down) = users.iter().fold((0, 0), |(u, d), t| (u + t.up, d + t.down));
        let tag = inner
            .state
            .as_ref()
            .and_then(|s| s.inbounds.first())
            .map(|i| i.tag.clone())
            .unwrap_or_else(|| "inbound-sim".into());
        inner.last_seq += 1;
        let seq = inner.last_seq;
        self.counters.user_entries.fetch_add(users.len() as u64, Ordering::Relaxed);
        inner.rows.push_back(StoredBatch { seq, taken_at_ms, users, inbounds: vec![InboundTraffic { tag, up, down }] });
        while inner.rows.len() > MAX_ROWS {
            inner.rows.pop_front();
            self.counters.rows_dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(inner);
        self.counters.rows_written.fetch_add(1, Ordering::Relaxed);
        self.journal_tx.send_replace(seq);
    }

    fn record(&self, state: ProxyState) -> ApplyReport {
        self.counters.applies.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner();
        let applied = inner.state.as_ref().map(|s| s.revision).unwrap_or(0);
        if state.revision < applied {
            return ApplyReport { revision: applied, ..Default::default() };
        }
        let key = |tag: &str, email: &str| (tag.to_string(), email.to_lowercase());
        let before: HashSet<(String, String)> =
            inner.state.iter().flat_map(|s| s.clients.iter().map(|c| key(&c.inbound_tag, &c.email))).collect();
        let after: HashSet<(String, String)> = state.clients.iter().map(|c| key(&c.inbound_tag, &c.email)).collect();
        let tags = |s: Option<&ProxyState>| -> HashSet<String> {
            s.map(|s| s.inbounds.iter().filter(|i| i.enable).map(|i| i.tag.clone()).collect()).unwrap_or_default()
        };
        let (old_tags, new_tags) = (tags(inner.state.as_ref()), tags(Some(&state)));
        let inbounds_changed = old_tags.symmetric_difference(&new_tags).count() as u32;
        let report = ApplyReport {
            revision: state.revision,
            users_added: after.difference(&before).count() as u32,
            users_removed: before.difference(&after).count() as u32,
            inbounds_changed,
            // A real core restarts when its inbound set changes; this one has nothing to restart.
            core_restarted: inbounds_changed > 0,
            failures: vec![],
        };
        inner.state = Some(state);
        inner.emails = None;
        drop(inner);
        // A real driver publishes its status after every apply; the new revision is news.
        self.status_tx.send_if_modified(|s| {
            let changed = s.applied_revision != report.revision;
            s.applied_revision = report.revision;
            changed
        });
        report
    }
}

#[async_trait::async_trait]
impl ProxyCore for RecordingCore {
    fn applied_revision(&self) -> u64 {
        self.status_tx.borrow().applied_revision
    }

    fn status(&self) -> watch::Receiver<CoreStatus> {
        self.status_tx.subscribe()
    }

    fn journal(&self) -> watch::Receiver<u64> {
        self.journal_tx.subscribe()
    }

    async fn current_status(&self) -> CoreStatus {
        self.status_tx.borrow().clone()
    }

    async fn apply(&self, state: ProxyState) -> ApplyReport {
        self.record(state)
    }

    async fn restart(&self) -> CoreStatus {
        self.status_tx.borrow().clone()
    }

    fn logs(&self, _query: &LogQuery) -> Vec<LogLine> {
        vec![]
    }

    fn journal_id(&self) -> Result<u64, StateError> {
        Ok(self.journal_id)
    }

    fn journal_after(&self, seq: u64, limit: usize) -> Result<Vec<StoredBatch>, StateError> {
        let inner = self.inner();
        Ok(inner.rows.iter().filter(|r| r.seq > seq).take(limit).cloned().collect())
    }

    fn journal_committed(&self, seq: u64) -> Result<(), StateError> {
        let mut inner = self.inner();
        let before = inner.rows.len();
        inner.rows.retain(|r| r.seq > seq);
        self.counters.rows_committed.fetch_add((before - inner.rows.len()) as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// One task polling every core once per `every`, spread evenly: core `i` polls in slot
/// `i % slots` of the interval.
#[derive(Debug)]
pub struct TrafficTicker {
    task: tokio::task::JoinHandle<()>,
}

impl TrafficTicker {
    /// Starts ticking `cores` until `stop` flips, `until` passes, or the ticker is dropped.
    pub fn spawn(
        cores: Vec<Arc<RecordingCore>>,
        every: Duration,
        until: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> TrafficTicker {
        const STEP: Duration = Duration::from_millis(100);
        let slots = (every.as_millis() / STEP.as_millis()).max(1) as usize;
        let step = every / slots as u32;
        let task = tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + until;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + step, step);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut slot = 0usize;
            // Bounded by `until` (and by `stop`).
            while tokio::time::Instant::now() < deadline {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                for core in cores.iter().skip(slot).step_by(slots) {
                    core.poll();
                }
                slot = (slot + 1) % slots;
            }
        });
        TrafficTicker { task }
    }
}

impl Drop for TrafficTicker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_protocol::proxy::{ClientSpec, InboundSpec};

    fn state(revision: u64, emails: &[&str]) -> ProxyState {
        ProxyState {
            revision,
            inbounds: vec![InboundSpec {
                tag: "in-1".into(),
                listen: String::new(),
                port: 1,
                protocol: "vless".into(),
                settings: "{}".into(),
                stream_settings: "{}".into(),
                sniffing: "{}".into(),
                enable: true,
            }],
            clients: emails
                .iter()
                .map(|e| ClientSpec {
                    inbound_tag: "in-1".into(),
                    email: e.to_string(),
                    secret: "s".into(),
                    flow: String::new(),
                    enable: true,
                    expiry_ms: 0,
                    total_bytes: 0,
                    reset_generation: 0,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn records_applies_and_keeps_the_journal_until_committed() {
        let counters = Arc::new(CoreCounters::default());
        let core = RecordingCore::new("n1", 3, counters.clone());
        let report = core.apply(state(2, &["a@x", "b@x"])).await;
        assert_eq!((report.revision, report.users_added, report.inbounds_changed), (2, 2, 1));
        assert_eq!(core.applied_revision(), 2);
        let report = core.apply(state(3, &["a@x", "c@x"])).await;
        assert_eq!((report.users_added, report.users_removed, report.core_restarted), (1, 1, false));
        assert_eq!(core.apply(state(1, &[])).await.revision, 3, "stale pushes are ignored");

        core.poll();
        core.poll();
        assert_eq!(*core.journal().borrow(), 2);
        let rows = core.journal_after(0, 10).unwrap();
        assert_eq!(rows.len(), 2);
        let emails: Vec<&str> = rows[0].users.iter().map(|u| u.email.as_str()).collect();
        assert_eq!(emails, ["a@x", "c@x", "u0@n1"]);
        assert_eq!(core.journal_after(1, 10).unwrap()[0].seq, 2);
        core.journal_committed(1).unwrap();
        assert_eq!(core.journal_after(0, 10).unwrap().len(), 1);
        assert_eq!(counters.rows_committed.load(Ordering::Relaxed), 1);
    }
}
