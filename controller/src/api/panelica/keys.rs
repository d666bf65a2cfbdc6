//! `/v1/api-keys`: a user's keys, managed with a key holding `*:*`. The secret is shown on
//! create and regenerate only. A key sees its own user's keys; an administrator's, everyone's.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::auth::Caller;
use super::{blocking, ok, ok_with, rfc3339, spec, ApiError};
use crate::api::AppState;
use crate::store::{ApiKeyChange, ApiKeyRecord, KeyEnvironment, NewApiKey, RateTier};

/// The scope `/v1/api-keys` needs.
pub const MANAGE: &str = "*:*";
/// Longest expiry a key may be given, in days (ten years).
const MAX_DAYS: u32 = 3650;

/// A key as listed.
pub fn key_json(k: &ApiKeyRecord) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "key_prefix": k.key_prefix(),
        "scopes": k.scopes,
        "rate_limit_tier": k.tier.as_str(),
        "ip_whitelist": k.ip_allow,
        "environment": k.environment.as_str(),
        "is_active": k.enabled,
        "expires_at": k.expires_at.map(rfc3339),
        "last_used_at": k.last_used_at.map(rfc3339),
        "created_at": rfc3339(k.created_at),
        "user_id": k.user_id,
        "username": k.username,
    })
}

/// Checks scopes: `*:*`, a scope of the API ([`spec::SCOPES`]) or `resource:*`. Returns them
/// trimmed and deduplicated.
pub fn check_scopes(scopes: &[String]) -> Result<Vec<String>, String> {
    if scopes.is_empty() {
        return Err("scopes: give at least one (e.g. \"domains:read\", or \"*:*\" for everything)".into());
    }
    let mut out: Vec<String> = vec![];
    for raw in scopes {
        let scope = raw.trim();
        let valid =
            scope == "*:*" || spec::SCOPES.contains(&scope) || scope.strip_suffix(":*").is_some_and(spec::is_resource);
        if !valid {
            return Err(format!(
                "scopes: {scope:?} is not a scope; use one of {}, RESOURCE:* or *:*",
                spec::SCOPES.join(", ")
            ));
        }
        if !out.iter().any(|s| s == scope) {
            out.push(scope.to_string());
        }
    }
    Ok(out)
}

/// Checks an allow-list: addresses and CIDR blocks.
pub fn check_ips(ips: &[String]) -> Result<Vec<String>, String> {
    ips.iter()
        .map(|raw| {
            let ip = raw.trim();
            let valid = ip.parse::<std::net::IpAddr>().is_ok() || ip.parse::<ipnet::IpNet>().is_ok();
            if valid {
                Ok(ip.to_string())
            } else {
                Err(format!("ip_whitelist: {ip:?} is neither an address nor a CIDR block"))
            }
        })
        .collect()
}

/// What creating a key takes (the API's body; the CLI fills the same).
#[derive(Debug, Default, Deserialize)]
pub struct KeyRequest {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub rate_limit_tier: Option<String>,
    pub ip_whitelist: Option<Vec<String>>,
    /// Days until it expires; none or 0: never.
    pub expires_in: Option<u32>,
    pub environment: Option<String>,
}

impl KeyRequest {
    /// The key to create for user `user_id`, or why not.
    pub fn into_new(self, user_id: i64) -> Result<NewApiKey, String> {
        let name = self.name.map(|n| n.trim().to_string()).unwrap_or_default();
        if name.is_empty() || name.len() > 100 {
            return Err("name: 1 to 100 characters required".into());
        }
        let scopes = check_scopes(&self.scopes.unwrap_or_default())?;
        let tier = match self.rate_limit_tier.as_deref() {
            None => RateTier::Professional,
            Some(t) => RateTier::parse(t).ok_or_else(|| {
                format!("rate_limit_tier: {t:?} is not one of starter, professional, business, enterprise")
            })?,
        };
        let environment = match self.environment.as_deref() {
            None => KeyEnvironment::Live,
            Some(e) => KeyEnvironment::parse(e).ok_or_else(|| format!("environment: {e:?} is not live or test"))?,
        };
        let ip_allow = check_ips(&self.ip_whitelist.unwrap_or_default())?;
        let expires_at = match self.expires_in {
            None | Some(0) => None,
            Some(d) if d > MAX_DAYS => return Err(format!("expires_in: at most {MAX_DAYS} days")),
            Some(d) => Some(OffsetDateTime::now_utc() + time::Duration::days(d.into())),
        };
        Ok(NewApiKey { user_id, name, environment, scopes, tier, ip_allow, expires_at })
    }
}

/// The created key with its credentials (shown once).
pub fn created_json(key: &ApiKeyRecord, secret: &str) -> Value {
    let mut body = key_json(key);
    body["api_key"] = json!(key.public_key);
    body["api_secret"] = json!(secret);
    body
}

/// `GET /v1/api-keys`.
pub async fn list(caller: Caller, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    caller.require(MANAGE)?;
    let store = state.store.clone();
    let user = caller.scope_user();
    let keys = blocking(move || store.api_keys(user)).await?;
    Ok(ok(Value::Array(keys.iter().map(key_json).collect())))
}

/// `POST /v1/api-keys`.
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: Option<Json<KeyRequest>>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(MANAGE)?;
    let Some(Json(body)) = body else { return Err(ApiError::bad("a JSON body with name and scopes is required")) };
    let new = body.into_new(caller.key.user_id).map_err(ApiError::bad)?;
    let store = state.store.clone();
    let (key, secret) = blocking(move || store.create_api_key(&new)).await?;
    tracing::info!(key = %key.key_prefix(), by = %caller.key.key_prefix(), "API key created");
    Ok((
        StatusCode::CREATED,
        ok_with(created_json(&key, &secret), "API key created: store the secret now, it is not shown again"),
    ))
}

/// The caller's key `id` (others' are not found).
async fn visible(state: &AppState, caller: &Caller, id: String) -> Result<ApiKeyRecord, ApiError> {
    let store = state.store.clone();
    let key = blocking(move || store.api_key(&id)).await?;
    key.filter(|k| caller.is_admin() || k.user_id == caller.key.user_id)
        .ok_or_else(|| ApiError::not_found("API key not found"))
}

/// `GET /v1/api-keys/{key_id}`.
pub async fn get_one(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(MANAGE)?;
    Ok(ok(key_json(&visible(&state, &caller, id).await?)))
}

/// `POST /v1/api-keys/{key_id}/regenerate`: a new secret; the old one stops working.
pub async fn regenerate(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(MANAGE)?;
    let key = visible(&state, &caller, id).await?;
    let store = state.store.clone();
    let key_id = key.id.clone();
    let secret = blocking(move || store.regenerate_api_key_secret(&key_id))
        .await?
        .ok_or_else(|| ApiError::not_found("API key not found"))?;
    tracing::info!(key = %key.key_prefix(), by = %caller.key.key_prefix(), "API key secret regenerated");
    Ok(ok_with(json!({ "id": key.id, "api_key": key.public_key, "api_secret": secret }), "secret regenerated"))
}

/// `PATCH /v1/api-keys/{key_id}` body.
#[derive(Debug, Default, Deserialize)]
pub struct KeyUpdate {
    name: Option<String>,
    scopes: Option<Vec<String>>,
    rate_limit_tier: Option<String>,
    ip_whitelist: Option<Vec<String>>,
    is_active: Option<bool>,
    /// Days from now; 0: never expires.
    expires_in: Option<u32>,
}

/// `PATCH /v1/api-keys/{key_id}`: rename, rescope, retier, enable or disable.
pub async fn update(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<KeyUpdate>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(MANAGE)?;
    let key = visible(&state, &caller, id).await?;
    let Json(body) = body.unwrap_or_default();
    let name = body.name.map(|n| n.trim().to_string());
    if name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 100) {
        return Err(ApiError::bad("name: 1 to 100 characters"));
    }
    let change = ApiKeyChange {
        name,
        scopes: body.scopes.as_deref().map(check_scopes).transpose().map_err(ApiError::bad)?,
        tier: body
            .rate_limit_tier
            .as_deref()
            .map(|t| RateTier::parse(t).ok_or_else(|| ApiError::bad(format!("rate_limit_tier: {t:?} is not a tier"))))
            .transpose()?,
        ip_allow: body.ip_whitelist.as_deref().map(check_ips).transpose().map_err(ApiError::bad)?,
        expires_at: match body.expires_in {
            None => None,
            Some(0) => Some(None),
            Some(d) if d > MAX_DAYS => return Err(ApiError::bad(format!("expires_in: at most {MAX_DAYS} days"))),
            Some(d) => Some(Some(OffsetDateTime::now_utc() + time::Duration::days(d.into()))),
        },
        enabled: body.is_active,
    };
    let store = state.store.clone();
    let updated = blocking(move || store.update_api_key(&key.id, &change))
        .await?
        .ok_or_else(|| ApiError::not_found("API key not found"))?;
    Ok(ok_with(key_json(&updated), "API key updated"))
}

/// `DELETE /v1/api-keys/{key_id}` (answered with JSON: the WHMCS module takes an empty 204 for a
/// failure).
pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(MANAGE)?;
    let key = visible(&state, &caller, id).await?;
    let store = state.store.clone();
    let key_id = key.id.clone();
    blocking(move || store.delete_api_key(&key_id)).await?;
    tracing::info!(key = %key.key_prefix(), by = %caller.key.key_prefix(), "API key deleted");
    Ok(ok_with(json!({ "id": key.id, "deleted": true }), "API key deleted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn scopes_are_resources_of_the_api_with_read_or_write() {
        assert_eq!(check_scopes(&s(&["*:*"])).unwrap(), s(&["*:*"]));
        assert_eq!(
            check_scopes(&s(&[" domains:read", "domains:read", "webhooks:*", "services:restart"])).unwrap(),
            s(&["domains:read", "webhooks:*", "services:restart"])
        );
        assert!(check_scopes(&s(&["domains:fly"])).unwrap_err().contains("not a scope"));
        assert!(check_scopes(&s(&["nothing:read"])).is_err());
        assert!(check_scopes(&[]).is_err());
    }

    #[test]
    fn a_key_request_has_defaults_and_refuses_nonsense() {
        let req = KeyRequest { name: Some("k".into()), scopes: Some(s(&["*:*"])), ..Default::default() };
        let new = req.into_new(7).unwrap();
        assert_eq!(
            (new.user_id, new.tier, new.environment, new.expires_at),
            (7, RateTier::Professional, KeyEnvironment::Live, None)
        );
        let bad = |req: KeyRequest| req.into_new(1).unwrap_err();
        let base = || KeyRequest { name: Some("k".into()), scopes: Some(s(&["*:*"])), ..Default::default() };
        assert!(bad(KeyRequest { name: None, ..base() }).starts_with("name"));
        assert!(bad(KeyRequest { rate_limit_tier: Some("gold".into()), ..base() }).starts_with("rate_limit_tier"));
        assert!(bad(KeyRequest { environment: Some("prod".into()), ..base() }).starts_with("environment"));
        assert!(bad(KeyRequest { ip_whitelist: Some(s(&["1.2.3.4", "nope"])), ..base() }).starts_with("ip_whitelist"));
        assert!(bad(KeyRequest { expires_in: Some(5000), ..base() }).starts_with("expires_in"));
        let ok = KeyRequest { ip_whitelist: Some(s(&["10.0.0.0/8", "2001:db8::1"])), expires_in: Some(90), ..base() };
        let new = ok.into_new(1).unwrap();
        assert_eq!(new.ip_allow.len(), 2);
        assert!(new.expires_at.is_some());
    }
}
