//! Webhooks of the external API and their outbox. A webhook's destination config is kept twice:
//! as the API shows it (tokens and secret URLs masked) and whole, sealed with `secret.key`,
//! because deliveries need the bot token or the Slack URL back. The per-webhook HMAC secret is
//! sealed too (it signs, so it cannot be hashed).
//!
//! The outbox (`webhook_deliveries`) gets one row per (event, matching webhook) in the same
//! transaction that decides who receives the event, so an event is either queued for everyone or
//! for no one, and a queued delivery survives a restart. Times of deliveries are Unix
//! milliseconds.

use rusqlite::{params, OptionalExtension, Row, Transaction};
use serde_json::Value;
use time::OffsetDateTime;

use super::{from_unix, unix, Store, StoreError};

/// Where a webhook delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationType {
    /// A signed JSON POST (or PUT) to a URL.
    Http,
    /// Telegram's Bot API `sendMessage`.
    Telegram,
    /// A Slack incoming webhook.
    Slack,
    /// A Discord webhook.
    Discord,
}

impl DestinationType {
    /// Every type, as the API lists them.
    pub const ALL: [DestinationType; 4] =
        [DestinationType::Http, DestinationType::Telegram, DestinationType::Slack, DestinationType::Discord];

    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationType::Http => "http",
            DestinationType::Telegram => "telegram",
            DestinationType::Slack => "slack",
            DestinationType::Discord => "discord",
        }
    }

    /// Parses an API name (case-insensitive).
    pub fn parse(s: &str) -> Option<DestinationType> {
        DestinationType::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// State of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not delivered yet; retried at `next_attempt_at`.
    Pending,
    /// A 2xx answer.
    Success,
    /// Every attempt failed.
    Failed,
}

impl DeliveryState {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Success => "success",
            DeliveryState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<DeliveryState, StoreError> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "success" => Ok(DeliveryState::Success),
            "failed" => Ok(DeliveryState::Failed),
            other => Err(StoreError::Corrupt(format!("delivery state {other:?}"))),
        }
    }
}

/// A webhook as listed (secrets masked, no HMAC secret).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    /// A UUID.
    pub id: String,
    pub user_id: i64,
    pub username: String,
    pub name: String,
    pub destination_type: DestinationType,
    /// The config with its secrets masked.
    pub destination_config: Value,
    /// Event types it receives (`*`: all).
    pub events: Vec<String>,
    /// Retries after the first attempt.
    pub retry_count: u32,
    /// Delay before the first retry; each next one doubles it.
    pub retry_delay_seconds: u32,
    pub timeout_seconds: u32,
    pub enabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A webhook's destination: its type, the config as shown and the whole config.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub kind: DestinationType,
    /// Secrets masked: what the API shows.
    pub shown: Value,
    /// Everything: sealed at rest.
    pub full: Value,
}

/// What creating a webhook needs (checked by the API).
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub user_id: i64,
    pub name: String,
    pub destination: Destination,
    pub events: Vec<String>,
    pub retry_count: u32,
    pub retry_delay_seconds: u32,
    pub timeout_seconds: u32,
    pub enabled: bool,
}

/// Changes to a webhook; `None` keeps the field.
#[derive(Debug, Clone, Default)]
pub struct WebhookChange {
    pub name: Option<String>,
    pub destination: Option<Destination>,
    pub events: Option<Vec<String>>,
    pub retry_count: Option<u32>,
    pub retry_delay_seconds: Option<u32>,
    pub timeout_seconds: Option<u32>,
    pub enabled: Option<bool>,
}

/// Who an event is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Fleet-wide (nodes, host services): webhooks of administrators and operators.
    Fleet,
    /// About one user's objects (their VPS): that user's webhooks and administrators'.
    User(i64),
    /// One webhook only, whatever it subscribes to (`webhook.test`).
    Webhook(String),
}

/// An event to queue.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `evt_<uuid>`.
    pub id: String,
    /// `node.offline`.
    pub event_type: String,
    /// The JSON body every destination is made from: `{id, type, created_at, data}`.
    pub payload: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

impl NewEvent {
    /// An event of `event_type` about `data`, raised now, with a fresh `evt_…` id.
    pub fn new(event_type: &str, data: Value) -> NewEvent {
        let created_at_ms = now_ms();
        let id = format!("evt_{}", uuid::Uuid::new_v4());
        let payload = serde_json::json!({
            "id": id,
            "type": event_type,
            "created_at": iso_ms(created_at_ms),
            "data": data,
        })
        .to_string();
        NewEvent { id, event_type: event_type.to_string(), payload, created_at_ms }
    }
}

/// One delivery as the logs show it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: u32,
    /// Unix ms of the next attempt (pending only).
    pub next_attempt_at_ms: Option<i64>,
    /// Of the last attempt.
    pub status_code: Option<u16>,
    /// Of the last attempt.
    pub response_time_ms: Option<u64>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

/// A delivery the worker took, with everything it needs to send it.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at_ms: i64,
    pub retry_count: u32,
    pub retry_delay_seconds: u32,
    pub timeout_seconds: u32,
    pub destination_type: DestinationType,
    /// The whole (unsealed) config.
    pub config: Value,
    /// The HMAC secret.
    pub secret: String,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// Delivered (2xx).
    Delivered { status_code: u16, response_time_ms: u64 },
    /// Failed; tried again at `next_at_ms`.
    Retry { next_at_ms: i64, status_code: Option<u16>, response_time_ms: u64, error: String },
    /// Failed for the last time.
    Failed { status_code: Option<u16>, response_time_ms: u64, error: String },
}

/// Delivery counts over a window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WebhookStats {
    pub total_webhooks: u64,
    pub active_webhooks: u64,
    pub deliveries: u64,
    pub successful: u64,
    pub failed: u64,
    pub pending: u64,
    /// Mean response time of the successful deliveries' last attempts.
    pub avg_response_time_ms: Option<f64>,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Unix milliseconds as RFC 3339 (UTC).
pub fn iso_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

const COLUMNS: &str = "w.id, w.user_id, u.username, w.name, w.destination_type, w.destination_config, w.events, \
                       w.retry_count, w.retry_delay_seconds, w.timeout_seconds, w.enabled, w.created_at, w.updated_at";

type RawWebhook = (String, i64, String, String, String, String, String, u32, u32, u32, bool, i64, i64);

fn raw(r: &Row<'_>) -> rusqlite::Result<RawWebhook> {
    RawWebhook::try_from(r)
}

fn parse(raw: RawWebhook) -> Result<WebhookRecord, StoreError> {
    let (
        id,
        user_id,
        username,
        name,
        kind,
        config,
        events,
        retry_count,
        retry_delay,
        timeout,
        enabled,
        created,
        updated,
    ) = raw;
    let corrupt = |what: &str| StoreError::Corrupt(format!("webhook {id}: {what}"));
    Ok(WebhookRecord {
        destination_type: DestinationType::parse(&kind).ok_or_else(|| corrupt("destination_type"))?,
        destination_config: serde_json::from_str(&config).map_err(|_| corrupt("destination_config"))?,
        events: serde_json::from_str(&events).map_err(|_| corrupt("events"))?,
        id,
        user_id,
        username,
        name,
        retry_count,
        retry_delay_seconds: retry_delay,
        timeout_seconds: timeout,
        enabled,
        created_at: from_unix(created),
        updated_at: from_unix(updated),
    })
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, event_type, state, attempts, next_attempt_at, status_code, \
                                response_time_ms, error, created_at, delivered_at";

type RawDelivery =
    (String, String, String, String, String, u32, i64, Option<u16>, Option<u64>, Option<String>, i64, Option<i64>);

fn raw_delivery(r: &Row<'_>) -> rusqlite::Result<RawDelivery> {
    RawDelivery::try_from(r)
}

fn parse_delivery(raw: RawDelivery) -> Result<DeliveryRecord, StoreError> {
    let (id, webhook_id, event_id, event_type, state, attempts, next, status_code, rt, error, created, delivered) = raw;
    let state = DeliveryState::parse(&state)?;
    Ok(DeliveryRecord {
        id,
        webhook_id,
        event_id,
        event_type,
        next_attempt_at_ms: (state == DeliveryState::Pending).then_some(next),
        state,
        attempts,
        status_code,
        response_time_ms: rt,
        error,
        created_at_ms: created,
        delivered_at_ms: delivered,
    })
}

fn json_text(v: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Whether a webhook subscribed to `events` receives `event_type`.
pub fn subscribes(events: &[String], event_type: &str) -> bool {
    events.iter().any(|e| e == "*" || e == event_type)
}

/// Queues `event` inside `tx` (so it is raised only if what it reports is committed): one
/// delivery per enabled webhook of `audience` subscribed to it.
pub(crate) fn enqueue_event(
    tx: &Transaction<'_>,
    event: &NewEvent,
    audience: &Audience,
) -> Result<Vec<String>, StoreError> {
    let targets: Vec<String> = {
        let mut stmt = tx.prepare_cached(
            "SELECT w.id, w.events, w.user_id, u.role FROM webhooks w JOIN users u ON u.id = w.user_id \
                 WHERE w.enabled = 1 OR w.id = ?1",
        )?;
        let only = match audience {
            Audience::Webhook(id) => Some(id.as_str()),
            _ => None,
        };
        let rows = stmt
            .query_map(params![only], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .filter(|(id, events, user_id, role)| match audience {
                Audience::Webhook(only) => id == only,
                Audience::Fleet => {
                    matches!(role.as_str(), "admin" | "operator")
                        && serde_json::from_str::<Vec<String>>(events).is_ok_and(|e| subscribes(&e, &event.event_type))
                }
                Audience::User(owner) => {
                    (role == "admin" || user_id == owner)
                        && serde_json::from_str::<Vec<String>>(events).is_ok_and(|e| subscribes(&e, &event.event_type))
                }
            })
            .map(|(id, ..)| id)
            .collect()
    };
    let mut ids = Vec::with_capacity(targets.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, payload, next_attempt_at, \
                 created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        )?;
        for hook in targets {
            let id = uuid::Uuid::new_v4().to_string();
            insert.execute(params![id, hook, event.id, event.event_type, event.payload, event.created_at_ms])?;
            ids.push(id);
        }
    }
    Ok(ids)
}

impl Store {
    /// Creates a webhook; returns it with its HMAC secret (shown once).
    pub fn create_webhook(&self, new: &NewWebhook) -> Result<(WebhookRecord, String), StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()));
        let sealed_secret = self.secrets.seal(secret.as_bytes());
        let sealed_config = self.secrets.seal(json_text(&new.destination.full)?.as_bytes());
        let now = unix(OffsetDateTime::now_utc());
        let changed = self.conn().execute(
            "INSERT INTO webhooks (id, user_id, name, destination_type, destination_config, destination_sealed, events, \
             retry_count, retry_delay_seconds, timeout_seconds, enabled, secret, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)",
            params![
                id,
                new.user_id,
                new.name,
                new.destination.kind.as_str(),
                json_text(&new.destination.shown)?,
                sealed_config,
                json_text(&new.events)?,
                new.retry_count,
                new.retry_delay_seconds,
                new.timeout_seconds,
                new.enabled,
                sealed_secret,
                now,
            ],
        );
        match changed {
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(StoreError::NotFound(format!("user {}", new.user_id)))
            }
            other => other?,
        };
        let hook = self.webhook(&id)?.ok_or_else(|| StoreError::Corrupt("webhook vanished".into()))?;
        Ok((hook, secret))
    }

    /// One webhook by id.
    pub fn webhook(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM webhooks w JOIN users u ON u.id = w.user_id WHERE w.id = ?1");
        self.conn().query_row(&sql, params![id], raw).optional()?.map(parse).transpose()
    }

    /// The whole (unsealed) destination config of a webhook.
    pub fn webhook_destination(&self, id: &str) -> Result<Option<Value>, StoreError> {
        let sealed: Option<Vec<u8>> = self
            .conn()
            .query_row("SELECT destination_sealed FROM webhooks WHERE id = ?1", params![id], |r| r.get(0))
            .optional()?;
        sealed.map(|s| self.open_json(&s)).transpose()
    }

    fn open_json(&self, sealed: &[u8]) -> Result<Value, StoreError> {
        let plain = self.secrets.open(sealed)?;
        serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt(format!("sealed webhook config: {e}")))
    }

    /// Webhooks, newest first: all of them, or `user`'s.
    pub fn webhooks(&self, user: Option<i64>) -> Result<Vec<WebhookRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhooks w JOIN users u ON u.id = w.user_id \
             WHERE ?1 IS NULL OR w.user_id = ?1 ORDER BY w.created_at DESC, w.id"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![user], raw)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(parse).collect()
    }

    /// Applies `change`; `None` when there is no such webhook.
    pub fn update_webhook(&self, id: &str, change: &WebhookChange) -> Result<Option<WebhookRecord>, StoreError> {
        let sealed = change
            .destination
            .as_ref()
            .map(|d| json_text(&d.full).map(|text| self.secrets.seal(text.as_bytes())))
            .transpose()?;
        let events = change.events.as_ref().map(json_text).transpose()?;
        let shown = change.destination.as_ref().map(|d| json_text(&d.shown)).transpose()?;
        let changed = self.conn().execute(
            "UPDATE webhooks SET name = COALESCE(?2, name), destination_type = COALESCE(?3, destination_type), \
             destination_config = COALESCE(?4, destination_config), \
             destination_sealed = COALESCE(?5, destination_sealed), events = COALESCE(?6, events), \
             retry_count = COALESCE(?7, retry_count), retry_delay_seconds = COALESCE(?8, retry_delay_seconds), \
             timeout_seconds = COALESCE(?9, timeout_seconds), enabled = COALESCE(?10, enabled), updated_at = ?11 \
             WHERE id = ?1",
            params![
                id,
                change.name,
                change.destination.as_ref().map(|d| d.kind.as_str()),
                shown,
                sealed,
                events,
                change.retry_count,
                change.retry_delay_seconds,
                change.timeout_seconds,
                change.enabled,
                unix(OffsetDateTime::now_utc()),
            ],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        self.webhook(id)
    }

    /// Deletes a webhook and its deliveries; false when there was none.
    pub fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute("DELETE FROM webhooks WHERE id = ?1", params![id])? > 0)
    }

    /// Queues `event` for every enabled webhook of `audience` subscribed to it; returns the
    /// deliveries' ids.
    pub fn enqueue_webhook_event(&self, event: &NewEvent, audience: &Audience) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ids = enqueue_event(&tx, event, audience)?;
        tx.commit()?;
        Ok(ids)
    }

    /// Takes up to `limit` deliveries due at `now_ms` (of enabled webhooks), marking them
    /// claimed and moving their next attempt `lease_ms` ahead, so a crash mid-attempt leaves
    /// them to [`Store::release_webhook_claims`].
    pub fn claim_webhook_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        type ClaimRow = (String, String, String, String, String, u32, i64, u32, u32, u32, String, Vec<u8>, Vec<u8>);
        let rows: Vec<ClaimRow> = {
            let mut stmt = tx.prepare_cached(
                "SELECT d.id, d.webhook_id, d.event_id, d.event_type, d.payload, d.attempts, d.created_at, \
                 w.retry_count, w.retry_delay_seconds, w.timeout_seconds, w.destination_type, w.destination_sealed, \
                 w.secret FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                 WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 AND w.enabled = 1 \
                 ORDER BY d.next_attempt_at LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![now_ms, limit as i64], |r| ClaimRow::try_from(r))?
                .collect::<Result<Vec<_>, _>>()?;
            rows
        };
        let mut out = Vec::with_capacity(rows.len());
        {
            let mut claim = tx
                .prepare_cached("UPDATE webhook_deliveries SET claimed = 1, next_attempt_at = ?2 + ?3 WHERE id = ?1")?;
            for (
                id,
                webhook_id,
                event_id,
                event_type,
                payload,
                attempts,
                created,
                retries,
                delay,
                timeout,
                kind,
                sealed,
                secret,
            ) in rows
            {
                // The lease outlasts the attempt's own timeout.
                claim.execute(params![id, now_ms, lease_ms.max(i64::from(timeout) * 1000 + 30_000)])?;
                let destination_type = DestinationType::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("webhook {webhook_id}: destination_type")))?;
                let secret = String::from_utf8(self.secrets.open(&secret)?)
                    .map_err(|_| StoreError::Corrupt(format!("webhook {webhook_id}: secret")))?;
                out.push(DueDelivery {
                    config: self.open_json(&sealed)?,
                    id,
                    webhook_id,
                    event_id,
                    event_type,
                    payload,
                    attempts,
                    created_at_ms: created,
                    retry_count: retries,
                    retry_delay_seconds: delay,
                    timeout_seconds: timeout,
                    destination_type,
                    secret,
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Makes deliveries claimed by a previous run (it stopped mid-attempt) due now. Returns how
    /// many. Their receivers may have got them already: delivery is at least once.
    pub fn release_webhook_claims(&self, now_ms: i64) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE webhook_deliveries SET claimed = 0, next_attempt_at = MIN(next_attempt_at, ?1) \
             WHERE claimed = 1 AND state = 'pending'",
            params![now_ms],
        )?)
    }

    /// Records the end of an attempt of delivery `id`.
    pub fn record_webhook_attempt(&self, id: &str, outcome: &AttemptOutcome) -> Result<(), StoreError> {
        let now = now_ms();
        let conn = self.conn();
        match outcome {
            AttemptOutcome::Delivered { status_code, response_time_ms } => conn.execute(
                "UPDATE webhook_deliveries SET state = 'success', attempts = attempts + 1, claimed = 0, \
                 status_code = ?2, response_time_ms = ?3, error = NULL, delivered_at = ?4 WHERE id = ?1",
                params![id, status_code, response_time_ms, now],
            )?,
            AttemptOutcome::Retry { next_at_ms, status_code, response_time_ms, error } => conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, claimed = 0, next_attempt_at = ?2, \
                 status_code = ?3, response_time_ms = ?4, error = ?5 WHERE id = ?1",
                params![id, next_at_ms, status_code, response_time_ms, error],
            )?,
            AttemptOutcome::Failed { status_code, response_time_ms, error } => conn.execute(
                "UPDATE webhook_deliveries SET state = 'failed', attempts = attempts + 1, claimed = 0, \
                 status_code = ?2, response_time_ms = ?3, error = ?4 WHERE id = ?1",
                params![id, status_code, response_time_ms, error],
            )?,
        };
        Ok(())
    }

    /// When the next pending delivery of an enabled webhook is due (Unix ms), if any.
    pub fn next_webhook_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.conn().query_row(
            "SELECT MIN(d.next_attempt_at) FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.state = 'pending' AND w.enabled = 1",
            [],
            |r| r.get(0),
        )?)
    }

    /// A page of a webhook's deliveries, newest first, and how many there are.
    pub fn webhook_deliveries(
        &self,
        webhook_id: &str,
        page: u32,
        limit: u32,
    ) -> Result<(Vec<DeliveryRecord>, u64), StoreError> {
        let conn = self.conn();
        let total: i64 = conn.query_row(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = ?1",
            params![webhook_id],
            |r| r.get(0),
        )?;
        let offset = i64::from(page.saturating_sub(1)) * i64::from(limit);
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = ?1 \
             ORDER BY created_at DESC, id LIMIT ?2 OFFSET ?3"
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![webhook_id, limit, offset], raw_delivery)?.collect::<Result<Vec<_>, _>>()?;
        Ok((rows.into_iter().map(parse_delivery).collect::<Result<_, _>>()?, total as u64))
    }

    /// One delivery by id.
    pub fn webhook_delivery(&self, id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1");
        self.conn().query_row(&sql, params![id], raw_delivery).optional()?.map(parse_delivery).transpose()
    }

    /// Webhook counts (all, or `user`'s) and their deliveries created since `since_ms`.
    pub fn webhook_stats(&self, user: Option<i64>, since_ms: i64) -> Result<WebhookStats, StoreError> {
        let conn = self.conn();
        let (total, active): (i64, Option<i64>) = conn.query_row(
            "SELECT COUNT(*), SUM(enabled) FROM webhooks WHERE ?1 IS NULL OR user_id = ?1",
            params![user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (deliveries, successful, failed, pending, avg): (i64, Option<i64>, Option<i64>, Option<i64>, Option<f64>) =
            conn.query_row(
                "SELECT COUNT(*), SUM(d.state = 'success'), SUM(d.state = 'failed'), SUM(d.state = 'pending'), \
                 AVG(CASE WHEN d.state = 'success' THEN d.response_time_ms END) \
                 FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                 WHERE d.created_at >= ?2 AND (?1 IS NULL OR w.user_id = ?1)",
                params![user, since_ms],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?;
        Ok(WebhookStats {
            total_webhooks: total as u64,
            active_webhooks: active.unwrap_or(0) as u64,
            deliveries: deliveries as u64,
            successful: successful.unwrap_or(0) as u64,
            failed: failed.unwrap_or(0) as u64,
            pending: pending.unwrap_or(0) as u64,
            avg_response_time_ms: avg,
        })
    }

    /// Deletes finished deliveries created before `before_ms`; returns how many.
    pub fn prune_webhook_deliveries(&self, before_ms: i64) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM webhook_deliveries WHERE created_at < ?1 AND state != 'pending'",
            params![before_ms],
        )?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::Role;
    use serde_json::json;

    /// Payloads of every delivery queued since the last call (claiming them).
    pub(crate) fn queued(store: &Store) -> Vec<Value> {
        let due = store.claim_webhook_deliveries(i64::MAX / 2, 1000, 60_000).unwrap();
        due.iter().map(|d| serde_json::from_str::<Value>(&d.payload).unwrap()).collect()
    }

    /// An enabled HTTP webhook of `user` subscribed to `events`.
    pub(crate) fn hook(store: &Store, user: i64, events: &[&str]) -> WebhookRecord {
        let config = json!({ "url": "http://127.0.0.1:9/h", "method": "POST", "headers": {} });
        let new = NewWebhook {
            user_id: user,
            name: "h".into(),
            destination: Destination { kind: DestinationType::Http, shown: config.clone(), full: config },
            events: events.iter().map(|e| e.to_string()).collect(),
            retry_count: 3,
            retry_delay_seconds: 1,
            timeout_seconds: 5,
            enabled: true,
        };
        store.create_webhook(&new).unwrap().0
    }

    fn event(t: &str, at: i64) -> NewEvent {
        NewEvent { id: format!("evt_{at}"), event_type: t.into(), payload: "{}".into(), created_at_ms: at }
    }

    #[test]
    fn events_reach_their_audience_and_survive_a_crash_mid_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let admin = store.create_user("a", "x", Role::Admin).unwrap();
        let viewer = store.create_user("v", "x", Role::Viewer).unwrap();
        let a = hook(&store, admin, &["node.offline"]);
        let v = hook(&store, viewer, &["*"]);
        let other = hook(&store, admin, &["vps.alert"]);
        // Fleet events: administrators' and operators' webhooks subscribed to them.
        let ids = store.enqueue_webhook_event(&event("node.offline", 1), &Audience::Fleet).unwrap();
        assert_eq!(ids.len(), 1);
        // A user's event: theirs and administrators'.
        let ids = store.enqueue_webhook_event(&event("vps.alert", 2), &Audience::User(viewer)).unwrap();
        assert_eq!(ids.len(), 2);
        let ids = store.enqueue_webhook_event(&event("webhook.test", 3), &Audience::Webhook(a.id.clone())).unwrap();
        assert_eq!(ids.len(), 1);
        // Disabled webhooks get nothing new, and their queued rows wait.
        store.update_webhook(&v.id, &WebhookChange { enabled: Some(false), ..Default::default() }).unwrap();
        assert!(store.enqueue_webhook_event(&event("node.offline", 4), &Audience::User(viewer)).unwrap().len() == 1);
        let due = store.claim_webhook_deliveries(10, 100, 60_000).unwrap();
        let hooks: Vec<&str> = due.iter().map(|d| d.webhook_id.as_str()).collect();
        assert_eq!(due.len(), 4, "{hooks:?}");
        assert!(!hooks.contains(&v.id.as_str()) && hooks.contains(&other.id.as_str()));
        assert_eq!(due[0].secret.len(), "whsec_".len() + 64);
        // Claimed rows are not due again until released (the lease).
        assert!(store.claim_webhook_deliveries(10, 100, 60_000).unwrap().is_empty());
        store
            .record_webhook_attempt(&due[0].id, &AttemptOutcome::Delivered { status_code: 200, response_time_ms: 7 })
            .unwrap();
        // A crash: the other three were mid-attempt; at the next start they are due at once.
        assert_eq!(store.release_webhook_claims(20).unwrap(), 3);
        assert_eq!(store.claim_webhook_deliveries(20, 100, 60_000).unwrap().len(), 3);
        let stats = store.webhook_stats(None, 0).unwrap();
        assert_eq!((stats.total_webhooks, stats.active_webhooks, stats.deliveries, stats.successful), (3, 2, 5, 1));
        assert_eq!(store.webhook_stats(Some(viewer), 0).unwrap().deliveries, 1);
        let (page, total) = store.webhook_deliveries(&a.id, 1, 10).unwrap();
        assert_eq!((total, page.len()), (3, 3));
        assert!(store.delete_webhook(&a.id).unwrap());
        assert_eq!(store.webhook_deliveries(&a.id, 1, 10).unwrap().1, 0);
    }

    #[test]
    fn users_made_and_deleted_anywhere_raise_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let admin = store.create_user("root", "x", Role::Admin).unwrap();
        hook(&store, admin, &["user.created", "user.deleted"]);
        let bob = store.create_user("bob", "x", Role::Viewer).unwrap();
        let created = queued(&store);
        assert_eq!(created.len(), 1, "the admin's own creation came before the webhook");
        assert_eq!(created[0]["data"], json!({ "user_id": bob, "username": "bob", "role": "viewer" }));
        assert!(created[0]["id"].as_str().unwrap().starts_with("evt_"));
        assert!(store.create_user("bob", "x", Role::Viewer).is_err());
        assert!(queued(&store).is_empty(), "a refused create raises nothing");

        // Refusals: the last administrator, and a user who still has virtual servers.
        let last = store.delete_user("root").unwrap_err().to_string();
        assert!(last.contains("last administrator"), "{last}");
        assert!(matches!(store.delete_user("nobody").unwrap_err(), StoreError::NotFound(_)));
        let conn = store.conn();
        conn.execute_batch(
            "INSERT INTO vps_os (id, name, template, created_at) VALUES (1, 'busybox', 'busybox', 0);
             INSERT INTO vps_tariffs (id, name, cores, memory_mib, disk_gb, created_at) VALUES (1, 'tiny', 1, 64, 1, 0);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO vps_servers (user_id, os_id, tariff_id, container, vmid, status, cores, memory_mib, disk_gb, \
             created_at, updated_at) VALUES (?1, 1, 1, 'c1', 101, 'running', 1, 64, 1, 0, 0)",
            params![bob],
        )
        .unwrap();
        drop(conn);
        let owns = store.delete_user("bob").unwrap_err().to_string();
        assert!(owns.contains("owns 1 virtual server"), "{owns}");
        store.conn().execute("DELETE FROM vps_servers", []).unwrap();

        let own_hook = hook(&store, bob, &["*"]);
        let names: Vec<String> = store.users().unwrap().into_iter().map(|u| u.username).collect();
        assert_eq!(names, ["root", "bob"]);
        let deleted = store.delete_user("bob").unwrap();
        assert_eq!(deleted.id, bob);
        assert!(store.webhook(&own_hook.id).unwrap().is_none(), "their webhooks go with them");
        let events = queued(&store);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["type"], "user.deleted");
        assert_eq!(events[0]["data"]["username"], "bob");
        assert!(store.user("bob").unwrap().is_none());
    }
}
