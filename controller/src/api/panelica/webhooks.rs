//! `/v1/webhooks`: a user's webhooks (an administrator's key sees everyone's; another key its
//! own user's, others' are 404), their delivery logs and 24-hour statistics, the event
//! catalogue, and test deliveries. The per-webhook HMAC secret is shown once, on create.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::{blocking, ok, ok_with, rfc3339, ApiError};
use crate::api::AppState;
use crate::store::{iso_ms, DeliveryRecord, DestinationType, NewWebhook, WebhookChange, WebhookRecord};
use crate::webhooks::{destinations, events};

/// Scope of the reads.
pub const READ: &str = "webhooks:read";
/// Scope of the changes (delete included).
pub const WRITE: &str = "webhooks:write";
/// Most retries after the first attempt.
pub const MAX_RETRIES: u32 = 10;
/// Longest delivery timeout, seconds.
pub const MAX_TIMEOUT: u32 = 120;
/// Longest first retry delay, seconds (a day).
pub const MAX_RETRY_DELAY: u32 = 86_400;
/// Largest page of the logs.
const MAX_LIMIT: u32 = 100;

/// A webhook as listed: secrets of its destination masked, no HMAC secret.
pub fn webhook_json(w: &WebhookRecord) -> Value {
    json!({
        "id": w.id,
        "user_id": w.user_id,
        "username": w.username,
        "name": w.name,
        "destination_type": w.destination_type.as_str(),
        "destination_config": w.destination_config,
        "events": w.events,
        "retry_count": w.retry_count,
        "retry_delay_seconds": w.retry_delay_seconds,
        "timeout_seconds": w.timeout_seconds,
        "is_active": w.enabled,
        "enabled": w.enabled,
        "created_at": rfc3339(w.created_at),
        "updated_at": rfc3339(w.updated_at),
    })
}

/// A delivery as the logs show it (the document's fields first).
pub fn delivery_json(d: &DeliveryRecord) -> Value {
    json!({
        "id": d.id,
        "webhook_id": d.webhook_id,
        "event_type": d.event_type,
        "event_id": d.event_id,
        "status": d.state.as_str(),
        "status_code": d.status_code,
        "response_time_ms": d.response_time_ms,
        "retry_count": d.attempts.saturating_sub(1),
        "attempts": d.attempts,
        "error": d.error,
        "next_attempt_at": d.next_attempt_at_ms.map(iso_ms),
        "created_at": iso_ms(d.created_at_ms),
        "delivered_at": d.delivered_at_ms.map(iso_ms),
    })
}

/// The body of POST and PATCH. Unknown fields are ignored (a client may send back a whole
/// listed webhook).
#[derive(Debug, Default, Deserialize)]
struct WebhookBody {
    name: Option<String>,
    destination_type: Option<String>,
    destination_config: Option<Value>,
    events: Option<Vec<String>>,
    retry_count: Option<i64>,
    retry_delay_seconds: Option<i64>,
    timeout_seconds: Option<i64>,
    is_active: Option<bool>,
    enabled: Option<bool>,
}

fn parse_body(bytes: &Bytes) -> Result<Option<WebhookBody>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| ApiError::bad("the body is not a valid webhook object").details(e.to_string()))
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad("name: 1 to 100 characters required"));
    }
    Ok(name.to_string())
}

fn check_type(raw: &str) -> Result<DestinationType, ApiError> {
    DestinationType::parse(raw)
        .ok_or_else(|| ApiError::bad(format!("destination_type: {raw:?} is not one of http, telegram, slack, discord")))
}

fn check_events(list: &[String]) -> Result<Vec<String>, ApiError> {
    if list.is_empty() {
        return Err(ApiError::bad("events: give at least one event type (GET /v1/webhooks/events lists them)"));
    }
    let mut out: Vec<String> = vec![];
    for raw in list {
        let e = raw.trim();
        if e != "*" && !events::is_known(e) {
            return Err(ApiError::bad(format!("events: {e:?} is not an event type"))
                .details(format!("known: {} (or \"*\" for all)", events::all().collect::<Vec<_>>().join(", "))));
        }
        if !out.iter().any(|o| o == e) {
            out.push(e.to_string());
        }
    }
    Ok(out)
}

fn check_range(field: &str, value: Option<i64>, min: u32, max: u32) -> Result<Option<u32>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if v < i64::from(min) || v > i64::from(max) => {
            Err(ApiError::bad(format!("{field}: must be between {min} and {max}, got {v}")))
        }
        Some(v) => Ok(Some(v as u32)),
    }
}

/// `GET /v1/webhooks`.
pub async fn list(caller: Caller, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    caller.require(READ)?;
    let store = state.store.clone();
    let user = caller.scope_user();
    let hooks = blocking(move || store.webhooks(user)).await?;
    Ok(ok(Value::Array(hooks.iter().map(webhook_json).collect())))
}

/// `POST /v1/webhooks`: the answer carries `secret` (for `X-Flotilla-Signature`), shown once.
pub async fn create(caller: Caller, State(state): State<AppState>, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    caller.require(WRITE)?;
    let body = parse_body(&body)?.ok_or_else(|| {
        ApiError::bad("a JSON body with name, destination_type, destination_config and events is required")
    })?;
    let name = check_name(body.name.as_deref().unwrap_or_default())?;
    let kind = check_type(body.destination_type.as_deref().unwrap_or("http"))?;
    let config = body.destination_config.ok_or_else(|| ApiError::bad("destination_config: required"))?;
    let destination = destinations::check(kind, &config, None).map_err(ApiError::bad)?;
    let new = NewWebhook {
        user_id: caller.key.user_id,
        name,
        destination,
        events: check_events(&body.events.unwrap_or_default())?,
        retry_count: check_range("retry_count", body.retry_count, 0, MAX_RETRIES)?.unwrap_or(3),
        retry_delay_seconds: check_range("retry_delay_seconds", body.retry_delay_seconds, 1, MAX_RETRY_DELAY)?
            .unwrap_or(60),
        timeout_seconds: check_range("timeout_seconds", body.timeout_seconds, 1, MAX_TIMEOUT)?.unwrap_or(30),
        enabled: body.is_active.or(body.enabled).unwrap_or(true),
    };
    let store = state.store.clone();
    let (hook, secret) = blocking(move || store.create_webhook(&new)).await?;
    tracing::info!(webhook = %hook.id, kind = hook.destination_type.as_str(), by = %caller.key.key_prefix(), "webhook created");
    let mut data = webhook_json(&hook);
    data["secret"] = json!(secret);
    Ok((
        StatusCode::CREATED,
        ok_with(data, "webhook created: store the secret now (it signs X-Flotilla-Signature), it is not shown again"),
    ))
}

/// `GET /v1/webhooks/events`: the catalogue by category.
pub async fn event_types(caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(READ)?;
    let categories: Vec<Value> = events::CATALOGUE
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "events": c.events.iter().map(|e| json!({
                    "type": e.event_type,
                    "description": e.description,
                    "emitted": e.emitted,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(ok(json!({ "categories": categories })))
}

/// `GET /v1/webhooks/stats`: the caller's webhooks and their deliveries of the last 24 hours.
pub async fn stats(caller: Caller, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    caller.require(READ)?;
    let store = state.store.clone();
    let user = caller.scope_user();
    let since = crate::store::now_ms() - 24 * 3_600_000;
    let s = blocking(move || store.webhook_stats(user, since)).await?;
    let finished = s.successful + s.failed;
    let rate = if finished == 0 { 0.0 } else { (s.successful as f64 * 1000.0 / finished as f64).round() / 10.0 };
    Ok(ok(json!({
        "total_webhooks": s.total_webhooks,
        "active_webhooks": s.active_webhooks,
        "total_deliveries_24h": s.deliveries,
        "successful_deliveries_24h": s.successful,
        "failed_deliveries_24h": s.failed,
        "pending_deliveries_24h": s.pending,
        "avg_response_time_ms": s.avg_response_time_ms.map(f64::round).unwrap_or(0.0) as u64,
        "success_rate_24h": rate,
    })))
}

/// The caller's webhook `id` (others' are not found).
async fn visible(state: &AppState, caller: &Caller, id: String) -> Result<WebhookRecord, ApiError> {
    let store = state.store.clone();
    let hook = blocking(move || store.webhook(&id)).await?;
    hook.filter(|w| caller.is_admin() || w.user_id == caller.key.user_id)
        .ok_or_else(|| ApiError::not_found("webhook not found"))
}

/// `GET /v1/webhooks/{id}`.
pub async fn get_one(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READ)?;
    Ok(ok(webhook_json(&visible(&state, &caller, id).await?)))
}

async fn apply(state: &AppState, hook: &WebhookRecord, change: WebhookChange) -> Result<WebhookRecord, ApiError> {
    let store = state.store.clone();
    let id = hook.id.clone();
    let updated = blocking(move || store.update_webhook(&id, &change))
        .await?
        .ok_or_else(|| ApiError::not_found("webhook not found"))?;
    if updated.enabled && !hook.enabled {
        // Its deliveries queued while disabled are due again.
        state.webhooks.wake();
    }
    Ok(updated)
}

/// `PATCH /v1/webhooks/{id}`: any field of the create body. A `destination_config` with the
/// same type is merged into the current one; secrets sent back masked keep their value.
pub async fn update(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(WRITE)?;
    let hook = visible(&state, &caller, id).await?;
    let body = parse_body(&body)?.unwrap_or_default();
    let kind = body.destination_type.as_deref().map(check_type).transpose()?;
    let destination = match (kind, body.destination_config) {
        (None, None) => None,
        (Some(k), None) if k == hook.destination_type => None,
        (Some(k), None) => {
            return Err(ApiError::bad(format!("destination_config: required to change the type to {}", k.as_str())))
        }
        (kind, Some(config)) => {
            let kind = kind.unwrap_or(hook.destination_type);
            let previous = if kind == hook.destination_type {
                let store = state.store.clone();
                let id = hook.id.clone();
                blocking(move || store.webhook_destination(&id)).await?
            } else {
                None
            };
            Some(destinations::check(kind, &config, previous.as_ref()).map_err(ApiError::bad)?)
        }
    };
    let change = WebhookChange {
        name: body.name.as_deref().map(check_name).transpose()?,
        destination,
        events: body.events.as_deref().map(check_events).transpose()?,
        retry_count: check_range("retry_count", body.retry_count, 0, MAX_RETRIES)?,
        retry_delay_seconds: check_range("retry_delay_seconds", body.retry_delay_seconds, 1, MAX_RETRY_DELAY)?,
        timeout_seconds: check_range("timeout_seconds", body.timeout_seconds, 1, MAX_TIMEOUT)?,
        enabled: body.is_active.or(body.enabled),
    };
    let updated = apply(&state, &hook, change).await?;
    Ok(ok_with(webhook_json(&updated), "webhook updated"))
}

async fn set_enabled(caller: Caller, state: AppState, id: String, enabled: bool) -> Result<Json<Value>, ApiError> {
    caller.require(WRITE)?;
    let hook = visible(&state, &caller, id).await?;
    let updated = apply(&state, &hook, WebhookChange { enabled: Some(enabled), ..Default::default() }).await?;
    Ok(ok_with(webhook_json(&updated), if enabled { "webhook enabled" } else { "webhook disabled" }))
}

/// `POST /v1/webhooks/{id}/enable`.
pub async fn enable(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_enabled(caller, state, id, true).await
}

/// `POST /v1/webhooks/{id}/disable`: no new events are queued for it, and queued ones wait
/// until it is enabled again.
pub async fn disable(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_enabled(caller, state, id, false).await
}

/// `DELETE /v1/webhooks/{id}` (answered with JSON), with its delivery logs.
pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(WRITE)?;
    let hook = visible(&state, &caller, id).await?;
    let store = state.store.clone();
    let hook_id = hook.id.clone();
    blocking(move || store.delete_webhook(&hook_id)).await?;
    tracing::info!(webhook = %hook.id, by = %caller.key.key_prefix(), "webhook deleted");
    Ok(ok_with(json!({ "id": hook.id, "deleted": true }), "webhook deleted"))
}

fn page_param(query: &HashMap<String, String>, name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
    match query.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n >= 1 && n <= max => Ok(n),
            _ => Err(ApiError::bad(format!("{name}: a whole number from 1 to {max}, got {v:?}"))),
        },
    }
}

/// `GET /v1/webhooks/{id}/logs?page=1&limit=20`: newest first, paged as the document shows
/// (`data`, `total`, `page`, `limit` at the top level, beside `status`).
pub async fn logs(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READ)?;
    let page = page_param(&query, "page", 1, 1_000_000)?;
    let limit = page_param(&query, "limit", 20, MAX_LIMIT)?;
    let hook = visible(&state, &caller, id).await?;
    let store = state.store.clone();
    let (rows, total) = blocking(move || store.webhook_deliveries(&hook.id, page, limit)).await?;
    Ok(Json(json!({
        "status": "success",
        "data": rows.iter().map(delivery_json).collect::<Vec<_>>(),
        "total": total,
        "page": page,
        "limit": limit,
    })))
}

/// `POST /v1/webhooks/{id}/test`: queues a `webhook.test` event for this webhook only and
/// answers with its delivery (follow it in the logs).
pub async fn test(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(WRITE)?;
    let hook = visible(&state, &caller, id).await?;
    if !hook.enabled {
        return Err(ApiError::new(StatusCode::CONFLICT, "WEBHOOK_DISABLED", "this webhook is disabled")
            .details("enable it first: POST /v1/webhooks/{id}/enable"));
    }
    let engine = state.webhooks.clone();
    let hook_id = hook.id.clone();
    let emitted = blocking(move || engine.test(&hook)).await?;
    let delivery = emitted.deliveries.first().cloned().ok_or_else(|| ApiError::not_found("webhook not found"))?;
    Ok(ok_with(
        json!({
            "webhook_id": hook_id,
            "delivery_id": delivery,
            "event_id": emitted.event_id,
            "event_type": events::TEST,
            "status": "pending",
        }),
        "test event queued; see GET /v1/webhooks/{id}/logs",
    ))
}
