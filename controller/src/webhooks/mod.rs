//! Webhooks of the external API: events become rows of a durable outbox in the store, and a
//! worker delivers them to HTTP endpoints, Telegram, Slack or Discord.
//!
//! [`Webhooks::emit`] writes one delivery per matching enabled webhook in a single transaction
//! (so an event is queued for all its webhooks or for none) and wakes the worker. The worker
//! claims due deliveries, sends them (blocking `ureq` on the blocking pool, each with its
//! webhook's timeout), and records the outcome: success on a 2xx, else a retry after
//! `retry_delay_seconds × 2^(attempt − 1)` (capped at an hour, or at the delay itself when that is
//! longer) until `retry_count` retries are spent, then failed. A controller that stops loses
//! nothing: pending rows are picked up at start-up, and rows that were mid-attempt are tried
//! again, so delivery is at least once (receivers de-duplicate on the event id).
//!
//! A listener turns the fleet's host events (`node.online`, `node.offline`,
//! `system.service_failed`, `system.disk_warning`) and the VPS alerts (`vps.alert`) into events.
//! Events about stored changes (`user.created`, `user.deleted`, `quota.exhausted`,
//! `client.expired`) are queued by the store in the transaction of the change itself, so they
//! are raised whichever process made it; the worker finds them at its next look (≤ 5 s).

pub mod destinations;
pub mod events;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::sync::{broadcast::error::RecvError, Notify, Semaphore};

use crate::fleet::{Fleet, HostEvent};
use crate::store::{now_ms, AttemptOutcome, Audience, DueDelivery, NewEvent, Store, StoreError, WebhookRecord};
use crate::vps_alerts::AlertHub;

/// Default base URL of Telegram's Bot API.
pub const DEFAULT_TELEGRAM_API: &str = "https://api.telegram.org";
/// Longest wait between retries, unless the webhook's own delay is longer.
const MAX_BACKOFF_MS: i64 = 3_600_000;
/// Finished deliveries are kept this long (the logs), then pruned.
const RETENTION_MS: i64 = 30 * 24 * 3_600_000;
/// How much of a failed answer's body is kept in the log.
const ERROR_BODY: u64 = 300;

/// Settings of the webhooks (`[webhooks]` of `controller.toml`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Base URL of Telegram's Bot API (tests point it at a local receiver).
    pub telegram_api: String,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings { telegram_api: DEFAULT_TELEGRAM_API.into(), concurrency: 32 }
    }
}

impl WebhookSettings {
    /// Checks the settings; says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        destinations::check_url("telegram_api", &self.telegram_api)
            .map_err(|e| format!("[webhooks] {}", e.trim_start_matches("destination_config.")))?;
        if self.concurrency == 0 || self.concurrency > 1024 {
            return Err("[webhooks] concurrency: 1 to 1024".into());
        }
        Ok(())
    }
}

/// An event queued by [`Webhooks::emit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// `evt_<uuid>`.
    pub event_id: String,
    /// One per receiving webhook.
    pub deliveries: Vec<String>,
    /// Unix ms.
    pub created_at_ms: i64,
}

/// The webhook engine: emits events into the outbox and runs the delivery worker.
pub struct Webhooks {
    store: Store,
    settings: WebhookSettings,
    agent: ureq::Agent,
    wake: Notify,
    slots: Arc<Semaphore>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Wait before the retry that follows `attempts_done` failed attempts.
pub fn backoff_ms(retry_delay_seconds: u32, attempts_done: u32) -> i64 {
    let base = i64::from(retry_delay_seconds) * 1000;
    let factor = 1i64 << attempts_done.saturating_sub(1).min(20);
    base.saturating_mul(factor).min(MAX_BACKOFF_MS.max(base))
}

impl Webhooks {
    /// An engine over `store` (nothing runs until [`Webhooks::start`]).
    pub fn new(store: Store, settings: WebhookSettings) -> Result<Arc<Webhooks>, String> {
        settings.validate()?;
        // No redirects: a redirect would carry the signed body (or a bot token) elsewhere.
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(Duration::from_secs(10))
            .max_idle_connections_per_host(4)
            .user_agent(concat!("Flotilla-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Arc::new(Webhooks {
            store,
            agent,
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            tasks: Mutex::new(vec![]),
        }))
    }

    /// The settings in force.
    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    /// Queues an event of `event_type` with `data` for every enabled webhook of `audience`
    /// subscribed to it (blocking: call from the blocking pool or [`Webhooks::emit_async`]).
    pub fn emit(&self, event_type: &str, data: Value, audience: Audience) -> Result<Emitted, StoreError> {
        let event = NewEvent::new(event_type, data);
        let deliveries = self.store.enqueue_webhook_event(&event, &audience)?;
        if !deliveries.is_empty() {
            tracing::debug!(event = %event_type, id = %event.id, webhooks = deliveries.len(), "webhook event queued");
            self.wake.notify_one();
        }
        Ok(Emitted { event_id: event.id, deliveries, created_at_ms: event.created_at_ms })
    }

    /// [`Webhooks::emit`] from async code; failures are logged (an event must never fail
    /// whatever raised it).
    pub async fn emit_async(self: &Arc<Self>, event_type: &str, data: Value, audience: Audience) -> Option<Emitted> {
        let this = self.clone();
        let t = event_type.to_string();
        match tokio::task::spawn_blocking(move || this.emit(&t, data, audience)).await {
            Ok(Ok(emitted)) => Some(emitted),
            Ok(Err(e)) => {
                tracing::error!(event = %event_type, error = %e, "cannot queue a webhook event");
                None
            }
            Err(e) => {
                tracing::error!(event = %event_type, error = %e, "webhook event task failed");
                None
            }
        }
    }

    /// Queues a `webhook.test` event for `hook` only (blocking).
    pub fn test(&self, hook: &WebhookRecord) -> Result<Emitted, StoreError> {
        let data = json!({
            "message": "This is a test event from Flotilla: the webhook works.",
            "webhook_id": hook.id,
            "webhook_name": hook.name,
        });
        self.emit(events::TEST, data, Audience::Webhook(hook.id.clone()))
    }

    /// Wakes the worker (a webhook was enabled: its pending deliveries are due again).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Starts the delivery worker and the listener of `fleet`'s host events and `alerts`. The
    /// listener subscribes before this returns, so nothing raised afterwards is missed.
    pub fn start(self: &Arc<Self>, fleet: Arc<Fleet>, alerts: &AlertHub) {
        self.start_worker();
        let host = fleet.host_events();
        let vps = alerts.subscribe();
        let task = tokio::spawn(listen(self.clone(), fleet, host, vps));
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
    }

    /// Starts the delivery worker only.
    pub fn start_worker(self: &Arc<Self>) {
        let task = tokio::spawn(self.clone().work());
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
    }

    /// Stops the worker and the listener; deliveries under way are finished by their tasks or,
    /// if the process ends first, retried at the next start.
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
    }

    async fn store_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Corrupt(format!("store task: {e}")))?
    }

    /// The worker: claims due deliveries while there are free slots, sleeps until the next one
    /// is due (or something is queued, or a slot frees up).
    async fn work(self: Arc<Self>) {
        match self.store_call(|s| s.release_webhook_claims(now_ms())).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(deliveries = n, "webhook deliveries under way at the last stop are tried again"),
            Err(e) => tracing::error!(error = %e, "cannot release webhook deliveries of the last run"),
        }
        let mut last_prune: Option<Instant> = None;
        loop {
            if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                last_prune = Some(Instant::now());
                match self.store_call(|s| s.prune_webhook_deliveries(now_ms() - RETENTION_MS)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deliveries = n, "old webhook deliveries pruned"),
                    Err(e) => tracing::warn!(error = %e, "cannot prune webhook deliveries"),
                }
            }
            let free = self.slots.available_permits();
            let mut claimed = 0;
            if free > 0 {
                match self.store_call(move |s| s.claim_webhook_deliveries(now_ms(), free, 60_000)).await {
                    Ok(due) => {
                        claimed = due.len();
                        for d in due {
                            let Ok(permit) = self.slots.clone().try_acquire_owned() else { break };
                            let this = self.clone();
                            tokio::spawn(async move {
                                this.deliver(d).await;
                                drop(permit);
                                this.wake.notify_one();
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read due webhook deliveries");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        continue;
                    }
                }
            }
            if claimed > 0 && claimed == free {
                // Slots were the limit: there may be more due; wait for a slot.
                self.wake.notified().await;
                continue;
            }
            let wait = match self.store_call(|s| s.next_webhook_due()).await {
                Ok(Some(at)) => Duration::from_millis((at - now_ms()).clamp(0, 5_000) as u64),
                Ok(None) => Duration::from_secs(5),
                Err(_) => Duration::from_secs(5),
            };
            if wait.is_zero() && self.slots.available_permits() == 0 {
                self.wake.notified().await;
            } else if !wait.is_zero() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// One attempt of `d`, and its record.
    async fn deliver(self: &Arc<Self>, d: DueDelivery) {
        let this = self.clone();
        let id = d.id.clone();
        let (hook, event_type, attempts_before) = (d.webhook_id.clone(), d.event_type.clone(), d.attempts);
        let (retry_count, retry_delay) = (d.retry_count, d.retry_delay_seconds);
        let sent = tokio::task::spawn_blocking(move || this.send(&d)).await;
        let (ok, status_code, response_time_ms, error) = match sent {
            Ok(result) => result,
            Err(e) => (false, None, 0, format!("delivery task failed: {e}")),
        };
        let attempts_done = attempts_before + 1;
        let outcome = if ok {
            AttemptOutcome::Delivered { status_code: status_code.unwrap_or(200), response_time_ms }
        } else if attempts_done > retry_count {
            tracing::warn!(webhook = %hook, event = %event_type, attempts = attempts_done, %error, "webhook delivery failed for good");
            AttemptOutcome::Failed { status_code, response_time_ms, error }
        } else {
            let next_at_ms = now_ms() + backoff_ms(retry_delay, attempts_done);
            tracing::info!(webhook = %hook, event = %event_type, attempt = attempts_done, %error, "webhook delivery failed; will retry");
            AttemptOutcome::Retry { next_at_ms, status_code, response_time_ms, error }
        };
        if let Err(e) = self.store_call(move |s| s.record_webhook_attempt(&id, &outcome)).await {
            // The claim's lease runs out and the delivery is tried again.
            tracing::error!(error = %e, "cannot record a webhook delivery");
        }
    }

    /// Sends `d` (blocking): (delivered, status code, response time ms, error).
    fn send(&self, d: &DueDelivery) -> (bool, Option<u16>, u64, String) {
        let req =
            match destinations::request(d, &self.settings.telegram_api, OffsetDateTime::now_utc().unix_timestamp()) {
                Ok(r) => r,
                Err(e) => return (false, None, 0, e),
            };
        let mut call = self.agent.request(req.method, &req.url).timeout(Duration::from_secs(d.timeout_seconds.into()));
        for (name, value) in &req.headers {
            call = call.set(name, value);
        }
        let started = Instant::now();
        let result = call.send_string(&req.body);
        let elapsed = || started.elapsed().as_millis() as u64;
        // The URL of Telegram carries the bot token: errors name the destination type instead.
        let scrub = |s: String| if d.config.get("bot_token").is_some() { s.replace(&req.url, "telegram") } else { s };
        match result {
            Ok(resp) => {
                let status = resp.status();
                let body = excerpt(resp);
                let ms = elapsed();
                if (200..300).contains(&status) {
                    (true, Some(status), ms, String::new())
                } else {
                    (false, Some(status), ms, scrub(format!("HTTP {status}{body}")))
                }
            }
            Err(ureq::Error::Status(status, resp)) => {
                let body = excerpt(resp);
                (false, Some(status), elapsed(), scrub(format!("HTTP {status}{body}")))
            }
            Err(e) => {
                let ms = elapsed();
                (false, None, ms, scrub(crate::outbound::describe(&e)))
            }
        }
    }
}

/// `": <start of the body>"` of an answer, read to its end (bounded) so the connection can be
/// reused.
fn excerpt(resp: ureq::Response) -> String {
    let mut buf = Vec::new();
    let _ = resp.into_reader().take(64 * 1024).read_to_end(&mut buf);
    buf.truncate(ERROR_BODY as usize);
    let text = String::from_utf8_lossy(&buf).trim().replace(['\r', '\n'], " ");
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// Turns host events and VPS alerts into webhook events.
async fn listen(
    hooks: Arc<Webhooks>,
    fleet: Arc<Fleet>,
    mut host: tokio::sync::broadcast::Receiver<HostEvent>,
    mut vps: tokio::sync::broadcast::Receiver<crate::vps_alerts::ServerAlerts>,
) {
    let (mut host_open, mut vps_open) = (true, true);
    while host_open || vps_open {
        tokio::select! {
            event = host.recv(), if host_open => match event {
                Ok(event) => host_event(&hooks, &fleet, event).await,
                Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "webhooks: host events lost (listener too slow)"),
                Err(RecvError::Closed) => host_open = false,
            },
            alert = vps.recv(), if vps_open => match alert {
                Ok(alert) => vps_alert(&hooks, alert).await,
                Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "webhooks: VPS alerts lost (listener too slow)"),
                Err(RecvError::Closed) => vps_open = false,
            },
        }
    }
}

async fn host_event(hooks: &Arc<Webhooks>, fleet: &Arc<Fleet>, event: HostEvent) {
    let node_of = |event: &HostEvent| match event {
        HostEvent::NodeOnline { node }
        | HostEvent::NodeOffline { node, .. }
        | HostEvent::ServiceFailed { node, .. }
        | HostEvent::DiskWarning { node, .. } => *node,
    };
    let node = node_of(&event);
    let store = fleet.store().clone();
    let name =
        tokio::task::spawn_blocking(move || store.node(node)).await.ok().and_then(Result::ok).flatten().map(|n| n.name);
    let (kind, data) = match event {
        HostEvent::NodeOnline { .. } => (events::NODE_ONLINE, json!({ "node_id": node.0, "node_name": name })),
        HostEvent::NodeOffline { reason, .. } => {
            (events::NODE_OFFLINE, json!({ "node_id": node.0, "node_name": name, "reason": reason }))
        }
        HostEvent::ServiceFailed { unit, message, .. } => (
            events::SERVICE_FAILED,
            json!({ "node_id": node.0, "node_name": name, "service": unit, "message": message }),
        ),
        HostEvent::DiskWarning { mount, used_percent, .. } => (
            events::DISK_WARNING,
            json!({ "node_id": node.0, "node_name": name, "mount": mount, "used_percent": used_percent }),
        ),
    };
    hooks.emit_async(kind, data, Audience::Fleet).await;
}

async fn vps_alert(hooks: &Arc<Webhooks>, alert: crate::vps_alerts::ServerAlerts) {
    let store = hooks.store.clone();
    let id = alert.server_id;
    let server = tokio::task::spawn_blocking(move || store.server(id)).await.ok().and_then(Result::ok).flatten();
    let audience = server.as_ref().map(|s| Audience::User(s.user_id)).unwrap_or(Audience::Fleet);
    let data = json!({
        "server_id": alert.server_id,
        "server_name": server.as_ref().map(|s| s.container.clone()),
        "alerts": alert.alerts,
    });
    hooks.emit_async(events::VPS_ALERT, data, audience).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_delay_and_is_capped() {
        assert_eq!(backoff_ms(1, 1), 1000);
        assert_eq!(backoff_ms(1, 2), 2000);
        assert_eq!(backoff_ms(60, 3), 240_000);
        assert_eq!(backoff_ms(60, 10), MAX_BACKOFF_MS);
        // A delay longer than the cap is kept as it is.
        assert_eq!(backoff_ms(7200, 5), 7_200_000);
    }
}
