//! Health, the calling key (`/v1/me`) and its rate usage (`/v1/rate-limit`).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::auth::Caller;
use super::{ok, rate, rfc3339, ApiError};
use crate::api::AppState;
use crate::store::Role;

/// Uptime as Panelica writes it: `10d 5h 30m`.
pub fn uptime_text(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m")
    }
}

/// `GET /health`, `/v1/health` (no signature): the document's fields inside the envelope.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    ok(json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": uptime_text(state.external.started.elapsed().as_secs()),
    }))
}

/// Panelica's role names: the controller's administrators are `ROOT`, operators `ADMIN`,
/// everyone else `USER`.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "ROOT",
        Role::Operator => "ADMIN",
        Role::Viewer => "USER",
    }
}

/// `GET /v1/me`: the calling key (any valid key may ask).
pub async fn me(caller: Caller) -> Json<Value> {
    let k = &caller.key;
    ok(json!({
        "key_id": k.id,
        "key_prefix": k.key_prefix(),
        "name": k.name,
        "scopes": k.scopes,
        "rate_limit_tier": k.tier.as_str(),
        "environment": k.environment.as_str(),
        "status": "active",
        "expires_at": k.expires_at.map(rfc3339),
        "ip_whitelist": k.ip_allow,
        "user": { "id": k.user_id, "username": k.username, "role": role_name(k.role) },
    }))
}

/// `GET /v1/rate-limit`: the calling key's tier and usage (this request included).
pub async fn rate_limit(caller: Caller, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let usage = state.external.rates.usage(&caller.key.id, caller.key.tier, now.unix_timestamp());
    let reset = OffsetDateTime::from_unix_timestamp(usage.reset_at).unwrap_or(now);
    let limits = rate::limits(caller.key.tier);
    Ok(ok(json!({
        "tier": caller.key.tier.as_str(),
        "requests_per_minute": limits.map(|l| json!(l.per_minute)).unwrap_or(json!("unlimited")),
        "requests_per_hour": limits.map(|l| json!(l.per_hour)).unwrap_or(json!("unlimited")),
        "burst_size": limits.map(|l| json!(l.burst)).unwrap_or(Value::Null),
        "current_minute_usage": usage.minute,
        "current_hour_usage": usage.hour,
        "reset_at": rfc3339(reset),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_like_panelicas() {
        assert_eq!(uptime_text(10 * 86_400 + 5 * 3600 + 30 * 60 + 7), "10d 5h 30m");
        assert_eq!(uptime_text(3 * 3600 + 60), "3h 1m");
        assert_eq!(uptime_text(59), "0m");
    }
}
