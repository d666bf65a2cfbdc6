//! E-mail notifications (the VPS API's "Email Notifications"): an SMTP [`Mailer`] over a durable
//! outbox in the store, and the VPS notifier that mails a server's owner when the server is ready
//! and when it raises a critical resource alert.
//!
//! SMTP settings come from `SMTP_HOST`, `SMTP_PORT`, `SMTP_USER`, `SMTP_PASS` and `SMTP_FROM`,
//! each overriding the same key of `[email]` in `controller.toml` (`host`, `port`, `user`, `pass`,
//! `from`). No host: e-mail is off and nothing is queued. STARTTLS is used when the server offers
//! it, port 465 speaks TLS from the start, and credentials are sent only when a user is set.
//!
//! Other parts of the controller (payment reminders, support replies) call
//! [`Mailer::notify`]; it waits only for the mail's row in the store (written on the blocking
//! pool), never for SMTP, and never fails the caller.
//!
//! Delivery: a mail is a row of `mail_outbox` first. A worker claims due rows (a few at once,
//! each with a lease longer than an attempt), sends each through the [`Transport`] and records
//! the outcome: sent, retried after the [`Backoff`]'s next wait, or failed for good after its last
//! try (with the error). Rows claimed by a run that stopped mid-attempt are released at the next
//! start, so nothing queued is lost across a restart or a crash. In the normal path (claim, send,
//! record) a mail is sent once; a crash after the SMTP server accepted a mail but before the
//! outcome was recorded sends it again after the restart (at least once, not exactly once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::{broadcast, Notify, Semaphore};

use crate::config::EmailConfig;
use crate::store::{now_ms, DueMail, MailOutcome, ServerRecord, Store};
use crate::vps::VpsEvent;
use crate::vps_alerts::{AlertLevel, ServerAlerts};

/// Default SMTP port (submission, as in the document's example).
pub const DEFAULT_PORT: u16 = 587;
/// Default minimum time between two alert mails about one server.
pub const DEFAULT_ALERT_INTERVAL: Duration = Duration::from_secs(3600);
/// Deliveries in flight at once.
const CONCURRENT: usize = 4;
/// One attempt is cut off after this long (the SMTP transport's own timeout is 30 s per step).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a claimed mail is left to its attempt before it may be claimed again: longer than
/// [`ATTEMPT_TIMEOUT`], so one mail is never attempted twice at once.
const LEASE: Duration = Duration::from_secs(120);
/// Sent and failed mails are kept this long, then pruned.
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often old mails are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The worker looks at the outbox at least this often, even when nothing wakes it.
const IDLE: Duration = Duration::from_secs(60);
/// How long a created server's address is waited for before the mail says "see the panel".
const ADDRESS_WAIT: Duration = Duration::from_secs(30);

/// One e-mail to send (plain text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Resolved SMTP settings (environment over `[email]`).
#[derive(Clone, PartialEq)]
pub struct EmailSettings {
    /// SMTP server; `None`: e-mail is off.
    pub host: Option<String>,
    pub port: u16,
    pub user: Option<String>,
    pub pass: Option<String>,
    /// Sender address [default: `flotilla@<host>`].
    pub from: Option<String>,
    /// At most one alert mail per server per this long.
    pub alert_interval: Duration,
    /// A setting that cannot be used (reported by `server::start`).
    pub invalid: Option<String>,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            host: None,
            port: DEFAULT_PORT,
            user: None,
            pass: None,
            from: None,
            alert_interval: DEFAULT_ALERT_INTERVAL,
            invalid: None,
        }
    }
}

/// Never shows the password.
impl std::fmt::Debug for EmailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("pass", &self.pass.as_ref().map(|_| "********"))
            .field("from", &self.from)
            .field("alert_interval", &self.alert_interval)
            .field("invalid", &self.invalid)
            .finish()
    }
}

impl EmailSettings {
    /// `[email]` of the file with the `SMTP_*` variables (as read by `env`) overriding it; empty
    /// values count as unset. A bad port or sender is kept in `invalid`.
    pub fn resolve(file: &EmailConfig, env: impl Fn(&str) -> Option<String>) -> EmailSettings {
        let pick = |var: &str, key: &Option<String>| env(var).or_else(|| key.clone()).filter(|v| !v.trim().is_empty());
        let host = pick("SMTP_HOST", &file.host).map(|h| h.trim().to_string());
        let mut invalid = None;
        let port = match env("SMTP_PORT").filter(|p| !p.trim().is_empty()) {
            Some(p) => p.trim().parse::<u16>().ok().filter(|p| *p > 0).unwrap_or_else(|| {
                invalid = Some(format!("SMTP_PORT must be a port number, got {p:?}"));
                DEFAULT_PORT
            }),
            None => file.port.unwrap_or(DEFAULT_PORT),
        };
        let from = pick("SMTP_FROM", &file.from);
        let settings = EmailSettings {
            host,
            port,
            user: pick("SMTP_USER", &file.user),
            pass: pick("SMTP_PASS", &file.pass),
            from,
            alert_interval: file.alert_interval.unwrap_or(DEFAULT_ALERT_INTERVAL),
            invalid,
        };
        if settings.invalid.is_none() && settings.host.is_some() {
            if let Err(e) = settings.sender().parse::<Mailbox>() {
                return EmailSettings { invalid: Some(format!("SMTP_FROM / [email] from: {e}")), ..settings };
            }
        }
        settings
    }

    /// Refuses unusable settings.
    pub fn validate(&self) -> Result<(), String> {
        match &self.invalid {
            Some(e) => Err(e.clone()),
            None if self.port == 0 => Err("[email] port must not be 0".into()),
            None => Ok(()),
        }
    }

    /// The sender: `from`, or `flotilla@<host>`.
    pub fn sender(&self) -> String {
        self.from.clone().unwrap_or_else(|| format!("flotilla@{}", self.host.as_deref().unwrap_or("localhost")))
    }
}

/// The message `from` sends for `n`.
pub fn build_message(from: &str, n: &Notification) -> Result<Message, String> {
    let from: Mailbox = from.parse().map_err(|e| format!("sender {from:?}: {e}"))?;
    let to: Mailbox = n.to.parse().map_err(|e| format!("recipient {:?}: {e}", n.to))?;
    Message::builder()
        .from(from)
        .to(to)
        .subject(n.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(n.body.clone())
        .map_err(|e| e.to_string())
}

/// Where mails go: SMTP, or a fake in tests.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// One attempt; the error says why (never with the password).
    async fn deliver(&self, n: &Notification) -> Result<(), String>;
}

/// The SMTP transport.
pub struct Smtp {
    from: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Smtp {
    /// A transport for `settings` (which must name a host).
    pub fn new(settings: &EmailSettings) -> Result<Smtp, String> {
        let host = settings.host.clone().ok_or("no SMTP host")?;
        let params = TlsParameters::new(host.clone()).map_err(|e| format!("TLS for {host}: {e}"))?;
        // 465 is SMTPS (TLS from the first byte); elsewhere STARTTLS when offered, else plain.
        let tls = if settings.port == 465 { Tls::Wrapper(params) } else { Tls::Opportunistic(params) };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(30)));
        if let Some(user) = &settings.user {
            builder = builder.credentials(Credentials::new(user.clone(), settings.pass.clone().unwrap_or_default()));
        }
        Ok(Smtp { from: settings.sender(), transport: builder.build() })
    }
}

#[async_trait::async_trait]
impl Transport for Smtp {
    async fn deliver(&self, n: &Notification) -> Result<(), String> {
        let message = build_message(&self.from, n)?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Retry schedule: `tries` attempts, waiting `first`, then twice as long each time, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub tries: u32,
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 15 tries: waits doubling from 1 s up to an hour between them, about 3 h 10 min in all,
    /// so an SMTP server down for a maintenance window still gets the mail.
    fn default() -> Self {
        Backoff { tries: 15, first: Duration::from_secs(1), max: Duration::from_secs(3600) }
    }
}

impl Backoff {
    /// The waits between attempts (one fewer than `tries`).
    pub fn delays(&self) -> Vec<Duration> {
        (1..self.tries).filter_map(|attempt| self.wait_after(attempt)).collect()
    }

    /// The wait after failed attempt number `attempt` (from 1), or `None` when it was the last.
    pub fn wait_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.tries {
            return None;
        }
        let doublings = attempt.saturating_sub(1);
        Some(self.first.saturating_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX)).min(self.max))
    }
}

/// Queues notifications in the store's outbox and sends them in the background; off when no SMTP
/// host is configured.
pub struct Mailer {
    outbox: Option<Arc<Outbox>>,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Unix milliseconds now (the store's times); tests pass a clock that follows tokio's paused time.
type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What the worker and the queueing side share.
struct Outbox {
    store: Store,
    transport: Arc<dyn Transport>,
    backoff: Backoff,
    /// Something was queued, or an attempt ended (a slot is free).
    wake: Notify,
    slots: Arc<Semaphore>,
    now_ms: Clock,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("enabled", &self.enabled()).finish()
    }
}

impl Mailer {
    /// A mailer for `settings` queueing in `store`, or a disabled one (logged once) without a
    /// host. Needs a runtime; mails queued by an earlier run are sent too.
    pub fn start(settings: &EmailSettings, store: Store) -> Arc<Mailer> {
        let Some(host) = settings.host.as_deref() else {
            tracing::info!("e-mail notifications are off (no SMTP_HOST / [email] host)");
            return Arc::new(Mailer::disabled());
        };
        match Smtp::new(settings) {
            Ok(smtp) => {
                tracing::info!(host, port = settings.port, from = %settings.sender(), "e-mail notifications on");
                Mailer::with_transport(store, Arc::new(smtp), Backoff::default())
            }
            Err(e) => {
                tracing::error!(error = %e, "e-mail notifications are off: the SMTP transport cannot be built");
                Arc::new(Mailer::disabled())
            }
        }
    }

    /// A mailer that drops everything (and queues nothing).
    pub fn disabled() -> Mailer {
        Mailer { outbox: None, worker: Mutex::new(None) }
    }

    /// A mailer queueing in `store` and sending through `transport`, retrying per `backoff`.
    pub fn with_transport(store: Store, transport: Arc<dyn Transport>, backoff: Backoff) -> Arc<Mailer> {
        Mailer::with_clock(store, transport, backoff, Arc::new(now_ms))
    }

    fn with_clock(store: Store, transport: Arc<dyn Transport>, backoff: Backoff, now_ms: Clock) -> Arc<Mailer> {
        let outbox = Arc::new(Outbox {
            store,
            transport,
            backoff,
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(CONCURRENT)),
            now_ms,
        });
        let worker = tokio::spawn(outbox.clone().work());
        Arc::new(Mailer { outbox: Some(outbox), worker: Mutex::new(Some(worker)) })
    }

    /// Whether mails are sent at all.
    pub fn enabled(&self) -> bool {
        self.outbox.is_some()
    }

    /// Stops the worker; mails queued or under way stay in the outbox for the next start.
    pub fn stop(&self) {
        if let Some(worker) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            worker.abort();
        }
    }

    /// Queues `n` in the outbox (on the blocking pool, so the caller waits for the row only, never
    /// for SMTP); returns whether it was queued. Off, a bad address or a store failure drop it,
    /// logged: the caller never fails because of mail.
    pub async fn send(&self, n: Notification) -> bool {
        let Some(outbox) = &self.outbox else { return false };
        if let Err(e) = n.to.parse::<Mailbox>() {
            tracing::warn!(to = %n.to, error = %e, "e-mail not sent: bad recipient address");
            return false;
        }
        let (store, now) = (outbox.store.clone(), (outbox.now_ms)());
        let (to, subject) = (n.to.clone(), n.subject.clone());
        let queued = tokio::task::spawn_blocking(move || store.enqueue_mail(&n.to, &n.subject, &n.body, now)).await;
        match queued {
            Ok(Ok(id)) => {
                tracing::debug!(id, %to, %subject, "e-mail queued");
                outbox.wake.notify_one();
                true
            }
            Ok(Err(e)) => {
                tracing::error!(%to, %subject, error = %e, "e-mail dropped: cannot queue it in the store");
                false
            }
            Err(e) => {
                tracing::error!(%to, %subject, error = %e, "e-mail dropped: the queueing task failed");
                false
            }
        }
    }

    /// The generic hook (payment reminders, support replies, …): queues a plain-text mail.
    pub async fn notify(&self, to: impl Into<String>, subject: impl Into<String>, body: impl Into<String>) -> bool {
        self.send(Notification { to: to.into(), subject: subject.into(), body: body.into() }).await
    }
}

impl Outbox {
    async fn store_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, String> {
        blocking(&self.store, f).await
    }

    /// The worker: lifts the claims of the last run, then claims due mails while there are free
    /// slots and sleeps until the next one is due (or something is queued, or a slot frees up).
    async fn work(self: Arc<Self>) {
        match self.store_call(|s| s.release_mail_claims()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(mails = n, "e-mails being sent at the last stop are tried again"),
            Err(e) => tracing::error!(error = %e, "cannot release the e-mails of the last run"),
        }
        match self.store_call(|s| s.pending_mail_count()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pending = n, "e-mails queued before this start are sent now"),
            Err(e) => tracing::warn!(error = %e, "cannot count the queued e-mails"),
        }
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                let before = (self.now_ms)() - RETENTION.as_millis() as i64;
                match self.store_call(move |s| s.prune_mail(before)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(mails = n, "old sent and failed e-mails pruned"),
                    Err(e) => tracing::warn!(error = %e, "cannot prune old e-mails"),
                }
            }
            let free = self.slots.available_permits();
            if free == 0 {
                self.wake.notified().await;
                continue;
            }
            let now = (self.now_ms)();
            let due = match self.store_call(move |s| s.claim_due_mail(now, free, LEASE.as_millis() as i64)).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the due e-mails");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            let full = due.len() == free;
            for mail in due {
                // Only this loop takes slots, so the ones counted free are still free.
                let Ok(slot) = self.slots.clone().acquire_owned().await else { return };
                let this = self.clone();
                tokio::spawn(async move {
                    this.attempt(mail).await;
                    drop(slot);
                    this.wake.notify_one();
                });
            }
            if full {
                // Slots were the limit: more may be due; wait for one to free up.
                self.wake.notified().await;
                continue;
            }
            let wait = match self.store_call(|s| s.next_mail_due()).await {
                Ok(Some(at)) => Duration::from_millis((at - (self.now_ms)()).clamp(0, IDLE.as_millis() as i64) as u64),
                Ok(None) | Err(_) => IDLE,
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// One attempt of `mail`, and its record: sent, retried after the backoff's next wait, or
    /// given up after its last try.
    async fn attempt(&self, mail: DueMail) {
        let n = Notification { to: mail.recipient, subject: mail.subject, body: mail.body };
        let attempt = mail.attempts + 1;
        let sent = match tokio::time::timeout(ATTEMPT_TIMEOUT, self.transport.deliver(&n)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer in {}", humantime::format_duration(ATTEMPT_TIMEOUT))),
        };
        let outcome = match sent {
            Ok(()) => {
                tracing::info!(id = mail.id, to = %n.to, subject = %n.subject, attempt, "e-mail sent");
                MailOutcome::Sent
            }
            Err(error) => match self.backoff.wait_after(attempt) {
                Some(wait) => {
                    tracing::warn!(id = mail.id, to = %n.to, subject = %n.subject, attempt, %error, retry_in = ?wait, "e-mail not sent yet");
                    MailOutcome::Retry { next_at_ms: (self.now_ms)() + wait.as_millis() as i64, error }
                }
                None => {
                    tracing::error!(id = mail.id, to = %n.to, subject = %n.subject, attempt, %error, "e-mail given up");
                    MailOutcome::Failed { error }
                }
            },
        };
        let (id, now) = (mail.id, (self.now_ms)());
        if let Err(e) = self.store_call(move |s| s.record_mail_attempt(id, &outcome, now)).await {
            // Its lease runs out and it is tried again (a sent mail may then arrive twice).
            tracing::error!(id, error = %e, "cannot record an e-mail attempt");
        }
    }
}

/// At most one mail per key per interval.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    last: HashMap<i64, Instant>,
}

impl RateLimit {
    pub fn new(interval: Duration) -> Self {
        RateLimit { interval, last: HashMap::new() }
    }

    /// Whether a mail about `key` may go out at `now` (and if so, records it).
    pub fn allow(&mut self, key: i64, now: Instant) -> bool {
        if self.last.get(&key).is_some_and(|t| now.saturating_duration_since(*t) < self.interval) {
            return false;
        }
        self.last.retain(|_, t| now.saturating_duration_since(*t) < self.interval);
        self.last.insert(key, now);
        true
    }
}

/// What the server-ready mail says about the server.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedServer {
    pub id: i64,
    pub username: String,
    pub address: Option<String>,
    pub os: Option<String>,
    pub tariff: Option<String>,
}

/// The mail sent when a server was created. Lines stay under 76 characters, so the body goes
/// out as plain 7-bit text, readable as is.
pub fn server_ready(to: &str, s: &CreatedServer) -> Notification {
    let id = s.id;
    let mut body = format!("Hello {},\n\nyour server #{id} is ready.\n\n", s.username);
    match &s.address {
        Some(address) => body.push_str(&format!(
            "Address: {address}\n\nLog in with\n\n    ssh root@{address}\n\n\
             using the root password shown when you ordered the server.\n\n"
        )),
        None => body.push_str(
            "Address: not known yet, see the panel.\n\nLog in with\n\n    ssh root@ADDRESS\n\n\
             using the root password shown when you ordered the server.\n\n",
        ),
    }
    body.push_str(&format!(
        "Lost it? Set a new one in the panel, or with\n\n    POST /api/server/{id}/password\n\n\
         (the new password is shown once).\n\n"
    ));
    body.push_str(&format!("Operating system: {}\n", s.os.as_deref().unwrap_or("unknown")));
    body.push_str(&format!("Tariff: {}\n", s.tariff.as_deref().unwrap_or("unknown")));
    Notification { to: to.into(), subject: format!("Your server #{id} is ready"), body }
}

/// The mail sent for a server's critical alerts.
pub fn critical_alerts(to: &str, username: &str, alerts: &ServerAlerts, interval: Duration) -> Notification {
    let id = alerts.server_id;
    let mut body = format!("Hello {username},\n\nyour server #{id} is running out of resources:\n\n");
    for a in alerts.alerts.iter().filter(|a| a.level == AlertLevel::Critical) {
        body.push_str(&format!("- {}\n", a.message));
    }
    body.push_str(&format!(
        "\nConsider stopping what uses them, or a larger tariff\n\
         (PUT /api/server/{id}/resize).\n\
         You get at most one such mail per server every {}.\n",
        humantime::format_duration(interval)
    ));
    Notification { to: to.into(), subject: format!("Critical resource alert on your server #{id}"), body }
}

async fn blocking<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, String> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

/// The owner's e-mail address of `server`, if they have one.
async fn owner_email(store: &Store, server: &ServerRecord) -> Option<String> {
    let username = server.username.clone();
    match blocking(store, move |s| s.user_id_and_email(&username)).await {
        Ok(found) => found.and_then(|(_, email)| email).filter(|e| !e.trim().is_empty()),
        Err(e) => {
            tracing::warn!(server = server.id, error = %e, "e-mail: cannot read the owner's address");
            None
        }
    }
}

/// Mails the owner of server `id` once it has an address (or after [`ADDRESS_WAIT`]).
async fn on_created(store: Store, mailer: Arc<Mailer>, id: i64) {
    let started = Instant::now();
    let server = loop {
        let server = match blocking(&store, move |s| s.server(id)).await {
            Ok(Some(server)) => server,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(server = id, error = %e, "e-mail: cannot read the new server");
                return;
            }
        };
        if server.ip_address.is_some() || started.elapsed() >= ADDRESS_WAIT {
            break server;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let Some(to) = owner_email(&store, &server).await else {
        tracing::debug!(server = id, user = %server.username, "no e-mail address: no server-ready mail");
        return;
    };
    let (os_id, tariff_id) = (server.os_id, server.tariff_id);
    let names = blocking(&store, move |s| Ok((s.os(os_id)?.map(|o| o.name), s.tariff(tariff_id)?.map(|t| t.name))))
        .await
        .unwrap_or_default();
    let created = CreatedServer {
        id,
        username: server.username.clone(),
        address: server.ip_address.clone(),
        os: names.0,
        tariff: names.1,
    };
    mailer.send(server_ready(&to, &created)).await;
}

/// Follows the nodes' reports and the alert hub, mailing owners: a server is ready, a server
/// raised a critical alert (at most once per `alert_interval` per server).
pub fn spawn_vps_notifier(
    store: Store,
    mailer: Arc<Mailer>,
    mut events: broadcast::Receiver<VpsEvent>,
    mut alerts: broadcast::Receiver<ServerAlerts>,
    alert_interval: Duration,
) -> tokio::task::JoinHandle<()> {
    use broadcast::error::RecvError;
    tokio::spawn(async move {
        let mut limit = RateLimit::new(alert_interval);
        let (mut events_open, mut alerts_open) = (true, true);
        while events_open || alerts_open {
            tokio::select! {
                event = events.recv(), if events_open => match event {
                    Ok(VpsEvent::Task { server: Some(id), task, .. })
                        if task.kind == "vzcreate" && task.state == flotilla_protocol::containers::TaskState::Ok =>
                    {
                        tokio::spawn(on_created(store.clone(), mailer.clone(), id));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "e-mail: fell behind the nodes' reports; some server-ready mails may be missing");
                    }
                    Err(RecvError::Closed) => events_open = false,
                },
                alert = alerts.recv(), if alerts_open => match alert {
                    Ok(payload) => {
                        if !payload.alerts.iter().any(|a| a.level == AlertLevel::Critical) {
                            continue;
                        }
                        if !limit.allow(payload.server_id, Instant::now()) {
                            tracing::debug!(server = payload.server_id, "e-mail: alert mail rate-limited");
                            continue;
                        }
                        let (store, mailer) = (store.clone(), mailer.clone());
                        tokio::spawn(async move {
                            let id = payload.server_id;
                            let Ok(Some(server)) = blocking(&store, move |s| s.server(id)).await else { return };
                            if let Some(to) = owner_email(&store, &server).await {
                                mailer.send(critical_alerts(&to, &server.username, &payload, alert_interval)).await;
                            }
                        });
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "e-mail: fell behind the resource alerts");
                    }
                    Err(RecvError::Closed) => alerts_open = false,
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vps_alerts::{Alert, AlertKind};
    use std::sync::Mutex;

    #[test]
    fn settings_come_from_the_environment_over_the_file() {
        let file = EmailConfig {
            host: Some("mail.example.com".into()),
            port: Some(25),
            user: Some("file-user".into()),
            pass: Some("file-pass".into()),
            from: None,
            alert_interval: None,
        };
        let none = |_: &str| None;
        let s = EmailSettings::resolve(&file, none);
        assert_eq!((s.host.as_deref(), s.port, s.user.as_deref()), (Some("mail.example.com"), 25, Some("file-user")));
        assert_eq!(s.sender(), "flotilla@mail.example.com");
        assert_eq!(s.alert_interval, DEFAULT_ALERT_INTERVAL);
        assert!(s.validate().is_ok());
        assert!(!format!("{s:?}").contains("file-pass"), "the password is never shown");
        let env = |k: &str| match k {
            "SMTP_HOST" => Some("smtp.gmail.com".into()),
            "SMTP_PORT" => Some("465".into()),
            "SMTP_PASS" => Some("app-password".into()),
            "SMTP_FROM" => Some("Panel <panel@example.com>".into()),
            _ => None,
        };
        let s = EmailSettings::resolve(&file, env);
        assert_eq!((s.host.as_deref(), s.port, s.pass.as_deref()), (Some("smtp.gmail.com"), 465, Some("app-password")));
        assert_eq!(s.user.as_deref(), Some("file-user"));
        assert_eq!(s.sender(), "Panel <panel@example.com>");
        let off = EmailSettings::resolve(&EmailConfig::default(), none);
        assert_eq!(off.host, None);
        assert!(off.validate().is_ok());
        let bad = EmailSettings::resolve(&file, |k| (k == "SMTP_PORT").then(|| "smtp".into()));
        assert!(bad.validate().unwrap_err().contains("SMTP_PORT"));
        let bad_from = EmailSettings::resolve(&file, |k| (k == "SMTP_FROM").then(|| "not an address".into()));
        assert!(bad_from.validate().is_err());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let secs = |b: Backoff| b.delays().iter().map(|d| d.as_secs()).collect::<Vec<_>>();
        let default = secs(Backoff::default());
        assert_eq!(default[..5], [1, 2, 4, 8, 16]);
        assert_eq!(default[11..], [2048, 3600, 3600]);
        assert_eq!(default.iter().sum::<u64>(), 11_295, "about 3 h 10 min of retries");
        let capped = Backoff { tries: 8, first: Duration::from_secs(1), max: Duration::from_secs(10) };
        assert_eq!(secs(capped), vec![1, 2, 4, 8, 10, 10, 10]);
        assert!(Backoff { tries: 1, ..Backoff::default() }.delays().is_empty());
        let many = Backoff { tries: 100, first: Duration::from_secs(1), max: Duration::from_secs(60) };
        assert_eq!(many.delays().last(), Some(&Duration::from_secs(60)), "no overflow");
        let b = Backoff::default();
        assert_eq!((b.wait_after(1), b.wait_after(4)), (Some(Duration::from_secs(1)), Some(Duration::from_secs(8))));
        assert_eq!(b.wait_after(15), None, "the fifteenth try was the last");
    }

    #[test]
    fn rate_limit_allows_one_per_interval_per_server() {
        let mut limit = RateLimit::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        assert!(limit.allow(1, t0));
        assert!(!limit.allow(1, t0 + Duration::from_secs(60)));
        assert!(limit.allow(2, t0 + Duration::from_secs(60)), "another server");
        assert!(!limit.allow(1, t0 + Duration::from_secs(3599)));
        assert!(limit.allow(1, t0 + Duration::from_secs(3600)));
        assert!(!limit.allow(1, t0 + Duration::from_secs(3700)));
    }

    #[test]
    fn server_ready_mail() {
        let s = CreatedServer {
            id: 7,
            username: "bob".into(),
            address: Some("10.205.1.23".into()),
            os: Some("Debian 12".into()),
            tariff: Some("Tiny".into()),
        };
        let n = server_ready("bob@example.com", &s);
        assert_eq!(n.subject, "Your server #7 is ready");
        for part in ["10.205.1.23", "ssh root@10.205.1.23", "POST /api/server/7/password", "Debian 12", "Tiny"] {
            assert!(n.body.contains(part), "{part:?} in {}", n.body);
        }
        assert!(n.body.lines().all(|l| l.len() < 76), "short lines: {}", n.body);
        let unknown = server_ready("bob@example.com", &CreatedServer { address: None, os: None, ..s });
        assert!(unknown.body.contains("see the panel"), "{}", unknown.body);
        let message = build_message("flotilla@example.com", &n).unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(text.contains("To: bob@example.com"), "{text}");
        assert!(text.contains("Subject: Your server #7 is ready"), "{text}");
        assert!(text.contains("text/plain"), "{text}");
        assert!(text.contains("Content-Transfer-Encoding: 7bit"), "{text}");
        assert!(text.contains("    ssh root@10.205.1.23\r\n"), "{text}");
        assert!(build_message("flotilla@example.com", &Notification { to: "nobody".into(), ..n }).is_err());
    }

    #[test]
    fn alert_mail_lists_the_critical_alerts() {
        let payload = ServerAlerts {
            server_id: 3,
            alerts: vec![
                Alert { kind: AlertKind::Cpu, message: "CPU usage is at 99%".into(), level: AlertLevel::Critical },
                Alert { kind: AlertKind::Disk, message: "Disk usage is at 91%".into(), level: AlertLevel::Warning },
            ],
        };
        let n = critical_alerts("bob@example.com", "bob", &payload, Duration::from_secs(3600));
        assert_eq!(n.subject, "Critical resource alert on your server #3");
        assert!(n.body.contains("CPU usage is at 99%") && !n.body.contains("Disk"), "{}", n.body);
        assert!(n.body.contains("every 1h"), "{}", n.body);
    }

    /// Fails its first `failures` attempts.
    struct Flaky {
        failures: u32,
        attempts: Mutex<Vec<(tokio::time::Instant, String)>>,
    }

    #[async_trait::async_trait]
    impl Transport for Flaky {
        async fn deliver(&self, n: &Notification) -> Result<(), String> {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.push((tokio::time::Instant::now(), n.to.clone()));
            if attempts.len() as u32 <= self.failures {
                Err("connection refused".into())
            } else {
                Ok(())
            }
        }
    }

    /// Never answers (an SMTP server that accepted the connection and hangs).
    struct Hanging {
        attempts: Mutex<u32>,
    }

    #[async_trait::async_trait]
    impl Transport for Hanging {
        async fn deliver(&self, _: &Notification) -> Result<(), String> {
            *self.attempts.lock().unwrap() += 1;
            std::future::pending().await
        }
    }

    /// Unix ms that follow tokio's (paused) clock, so the outbox's retry times and the worker's
    /// sleeps agree.
    fn paused_clock() -> Clock {
        let (base, wall) = (tokio::time::Instant::now(), now_ms());
        Arc::new(move || wall + base.elapsed().as_millis() as i64)
    }

    fn open_store(dir: &std::path::Path) -> Store {
        Store::open(dir).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn delivery_is_retried_with_backoff_and_given_up_after_the_last_try() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let flaky = Arc::new(Flaky { failures: 3, attempts: Mutex::new(vec![]) });
        let mailer = Mailer::with_clock(store.clone(), flaky.clone(), Backoff::default(), paused_clock());
        let t0 = tokio::time::Instant::now();
        assert!(mailer.notify("bob@example.com", "s", "b").await);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let at: Vec<u64> = flaky.attempts.lock().unwrap().iter().map(|(t, _)| (*t - t0).as_secs()).collect();
        assert_eq!(at, vec![0, 1, 3, 7], "waits of 1, 2, 4 s");
        let m = store.mail(1).unwrap().unwrap();
        assert_eq!((m.state, m.attempts), (crate::store::MailState::Sent, 4));
        mailer.stop();

        let down = Arc::new(Flaky { failures: u32::MAX, attempts: Mutex::new(vec![]) });
        let five = Backoff { tries: 5, ..Backoff::default() };
        let mailer = Mailer::with_clock(store.clone(), down.clone(), five, paused_clock());
        assert!(mailer.notify("carol@example.com", "s", "b").await);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(down.attempts.lock().unwrap().len(), 5);
        let m = store.mail(2).unwrap().unwrap();
        assert_eq!((m.state, m.attempts), (crate::store::MailState::Failed, 5));
        assert_eq!(m.last_error.as_deref(), Some("connection refused"));
        assert_eq!(store.pending_mail_count().unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_mailer_queues_without_blocking_and_sends_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let flaky = Arc::new(Flaky { failures: 1, attempts: Mutex::new(vec![]) });
        let mailer = Mailer::with_clock(store.clone(), flaky.clone(), Backoff::default(), paused_clock());
        assert!(mailer.notify("bob@example.com", "Payment due", "Please pay.").await);
        assert!(!mailer.notify("not an address", "x", "y").await, "a bad address is refused at once");
        assert!(!Mailer::disabled().notify("bob@example.com", "x", "y").await);
        let off = Mailer::start(&EmailSettings::default(), store.clone());
        assert!(!off.enabled() && !off.notify("bob@example.com", "x", "y").await, "no host: nothing queued");
        assert_eq!(store.pending_mail_count().unwrap(), 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let attempts = flaky.attempts.lock().unwrap().clone();
        assert_eq!(attempts.len(), 2, "one failure, one retry");
        assert!(attempts.iter().all(|(_, to)| to == "bob@example.com"));
        assert_eq!(store.pending_mail_count().unwrap(), 0);
        assert!(store.mail(2).unwrap().is_none(), "only the good mail was queued");
    }

    #[test]
    fn a_mail_under_way_when_the_process_dies_is_sent_once_after_the_restart() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        // First run: the SMTP server hangs; the run ends (its runtime dropped) mid-attempt.
        let hanging = Arc::new(Hanging { attempts: Mutex::new(0) });
        runtime().block_on(async {
            let store = open_store(dir.path());
            let mailer = Mailer::with_clock(store.clone(), hanging.clone(), Backoff::default(), paused_clock());
            assert!(mailer.notify("bob@example.com", "Your server #7 is ready", "Hello").await);
            assert!(mailer.notify("carol@example.com", "Your server #8 is ready", "Hello").await);
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(*hanging.attempts.lock().unwrap(), 2);
            assert!(store.mail(1).unwrap().unwrap().claimed_until_ms.is_some(), "claimed while under way");
        });
        // Second run: both are due at once and go out once each.
        let smtp = Arc::new(Flaky { failures: 0, attempts: Mutex::new(vec![]) });
        runtime().block_on(async {
            let store = open_store(dir.path());
            assert_eq!(store.pending_mail_count().unwrap(), 2, "nothing lost");
            let _mailer = Mailer::with_clock(store.clone(), smtp.clone(), Backoff::default(), paused_clock());
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert_eq!(store.pending_mail_count().unwrap(), 0);
            for id in [1, 2] {
                let m = store.mail(id).unwrap().unwrap();
                assert_eq!((m.state, m.attempts), (crate::store::MailState::Sent, 1), "{m:?}");
            }
        });
        let mut to: Vec<String> = smtp.attempts.lock().unwrap().iter().map(|(_, to)| to.clone()).collect();
        to.sort();
        assert_eq!(to, vec!["bob@example.com", "carol@example.com"], "each sent once");
    }
}
