//! Verifying a signed request (`specs/hmac.md`'s checklist), then the key's state, address and
//! rate; the verified key rides on the request as a [`Caller`] that handlers ask for scopes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use super::rate::{Usage, Verdict};
use super::signature::{fresh, Signed, MAX_SKEW_S};
use super::{blocking, ApiError, PREFIX};
use crate::api::AppState;
use crate::store::{ApiKeyRecord, Role};

/// The verified key of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKeyRecord,
}

impl Caller {
    /// Whether the key holds `scope` (`resource:action`): exactly, or through `*:*`,
    /// `resource:*` or `*:action`.
    pub fn has(&self, scope: &str) -> bool {
        let (resource, action) = scope.split_once(':').unwrap_or((scope, ""));
        self.key.scopes.iter().any(|s| {
            let (r, a) = s.split_once(':').unwrap_or((s, ""));
            (r == "*" || r == resource) && (a == "*" || a == action)
        })
    }

    /// `Ok` when the key holds `scope`, else 403 `INSUFFICIENT_SCOPE` naming it.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden("INSUFFICIENT_SCOPE", format!("this API key lacks the scope {scope}"))
                .details(format!("required scope: {scope}; the key has: {}", self.key.scopes.join(", ")))
                .with("required_scope", serde_json::json!(scope))
                .with("available_scopes", serde_json::json!(self.key.scopes))
                .error_object(serde_json::json!({ "required_scope": scope, "available_scopes": self.key.scopes })))
        }
    }

    /// Whether the key acts for an administrator (sees every user's objects); other keys see
    /// their own user's only.
    pub fn is_admin(&self) -> bool {
        self.key.role == Role::Admin
    }

    /// `Some(user id)` whose objects the key sees, `None` for all.
    pub fn scope_user(&self) -> Option<i64> {
        (!self.is_admin()).then_some(self.key.user_id)
    }
}

/// The request body exactly as signed and buffered (up to `body_limit`): handlers that read it
/// whole take it here, past axum's default body limit.
#[derive(Debug, Clone)]
pub struct SignedBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequestParts<S> for SignedBody {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<SignedBody>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("MISSING_API_KEY", "this endpoint needs a signed request"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("MISSING_API_KEY", "this endpoint needs a signed request"))
    }
}

/// Signatures of state-changing requests seen within the timestamp window.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<(String, String), Instant>>,
}

impl ReplayGuard {
    /// Records `(key, signature)`; false when it was already seen within the window.
    fn first_use(&self, key: &str, signature: &str) -> bool {
        let window = Duration::from_secs(2 * MAX_SKEW_S as u64);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 10_000 {
            seen.retain(|_, at| at.elapsed() < window);
        }
        match seen.get(&(key.to_string(), signature.to_ascii_lowercase())) {
            Some(at) if at.elapsed() < window => false,
            _ => {
                seen.insert((key.to_string(), signature.to_ascii_lowercase()), Instant::now());
                true
            }
        }
    }

    /// Forgets a use whose request failed: repeating a refused request is not a replay (the
    /// official clients retry a failed call as it was, within the same second).
    fn forget(&self, key: &str, signature: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(&(key.to_string(), signature.to_ascii_lowercase()));
    }
}

/// A state-changing request's entry in the [`ReplayGuard`], released if the request fails.
struct ReplayEntry {
    key: String,
    signature: String,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// The backend path a signature covers: `/v1/…` after the mount point (and any base path),
/// percent-decoded.
pub fn backend_path(path: &str) -> String {
    percent_encoding::percent_decode_str(raw_backend_path(path)).decode_utf8_lossy().into_owned()
}

/// The backend path as sent (not decoded).
pub fn raw_backend_path(path: &str) -> &str {
    match path.find(PREFIX) {
        Some(i) => &path[i + PREFIX.len()..],
        None => path,
    }
}

/// Whether `ip` is allowed by `allow` (addresses and CIDR blocks; empty allows all). An
/// IPv4-mapped IPv6 peer counts as its IPv4 address.
pub fn ip_allowed(allow: &[String], ip: IpAddr) -> bool {
    if allow.is_empty() {
        return true;
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    allow.iter().any(|entry| {
        let entry = entry.trim();
        match entry.parse::<ipnet::IpNet>() {
            Ok(net) => net.contains(&ip),
            Err(_) => entry.parse::<IpAddr>().is_ok_and(|a| a == ip),
        }
    })
}

/// The layer in front of every signed route.
pub async fn verify(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match authenticate(&state, peer, request).await {
        Ok((request, usage, replay)) => {
            let mut response = next.run(request).await;
            if let Some(entry) = replay.filter(|_| !response.status().is_success()) {
                state.external.replays.forget(&entry.key, &entry.signature);
            }
            if let Some(headers) = usage.headers() {
                for (name, value) in headers {
                    if let Ok(v) = value.parse() {
                        response.headers_mut().insert(name, v);
                    }
                }
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn authenticate(
    state: &AppState,
    peer: SocketAddr,
    request: Request,
) -> Result<(Request, Usage, Option<ReplayEntry>), ApiError> {
    let (mut parts, body) = request.into_parts();
    let headers = &parts.headers;
    let public_key = header(headers, "x-api-key")
        .ok_or_else(|| ApiError::unauthorized("MISSING_API_KEY", "X-API-Key header required"))?
        .to_string();
    let timestamp = header(headers, "x-timestamp")
        .ok_or_else(|| ApiError::unauthorized("MISSING_TIMESTAMP", "X-Timestamp header required"))?
        .to_string();
    let signature = header(headers, "x-signature")
        .ok_or_else(|| ApiError::unauthorized("MISSING_SIGNATURE", "X-Signature header required"))?
        .to_string();
    let now = OffsetDateTime::now_utc();
    if !fresh(&timestamp, now.unix_timestamp()) {
        return Err(ApiError::unauthorized("TIMESTAMP_EXPIRED", "request timestamp is too old or in the future")
            .details(format!("X-Timestamp must be Unix seconds within {MAX_SKEW_S} s of the server's clock")));
    }
    let store = state.store.clone();
    let pk = public_key.clone();
    let (key, secret) = blocking(move || store.api_key_for_signing(&pk))
        .await?
        .ok_or_else(|| ApiError::unauthorized("INVALID_API_KEY", "invalid API key"))?;
    // The body exactly as sent, before anything parses it.
    let limit = state.external.settings.body_limit;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", format!("request body over {limit} bytes"))
    })?;
    let multipart = header(&parts.headers, header::CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("multipart/form-data"));
    let uri = parts.extensions.get::<axum::extract::OriginalUri>().map(|u| u.0.clone()).unwrap_or(parts.uri.clone());
    // The WHMCS module signs the percent-decoded path, the MCP server the path as sent: either
    // verifies (they differ only for ids that need escaping).
    let path = backend_path(uri.path());
    let raw_path = raw_backend_path(uri.path());
    let signed = Signed {
        method: parts.method.as_str(),
        path: &path,
        query: uri.query(),
        timestamp: &timestamp,
        body: &bytes,
        multipart,
    };
    let verified = signed.verify(&secret, &signature)
        || (raw_path != path && Signed { path: raw_path, ..signed }.verify(&secret, &signature));
    if !verified {
        tracing::info!(key = %key.key_prefix(), method = %parts.method, %path, "external API: bad signature");
        return Err(ApiError::unauthorized("INVALID_SIGNATURE", "invalid signature").details(
            "sign METHOD + PATH (/v1/…, with ?query) + TIMESTAMP + BODY with the secret key, HMAC-SHA256, lower-case hex",
        ));
    }
    if !key.enabled {
        return Err(ApiError::unauthorized("API_KEY_DISABLED", "this API key is disabled"));
    }
    if key.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::unauthorized("API_KEY_EXPIRED", "this API key has expired"));
    }
    if !ip_allowed(&key.ip_allow, peer.ip()) {
        tracing::info!(key = %key.key_prefix(), ip = %peer.ip(), "external API: address not allowed");
        return Err(ApiError::forbidden(
            "IP_NOT_ALLOWED",
            format!("requests from {} are not allowed for this key", peer.ip()),
        ));
    }
    let changes_state = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    // The body is part of the replay key: a DELETE's body is not signed, and two different
    // deletes within one second share a signature.
    let replay_key = format!("{signature}:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
    let replay = if changes_state && state.external.settings.refuse_replays {
        if !state.external.replays.first_use(&key.id, &replay_key) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "REPLAYED_REQUEST",
                "this signed request was already carried out",
            )
            .details("sign each state-changing request afresh (a new timestamp)"));
        }
        Some(ReplayEntry { key: key.id.clone(), signature: replay_key })
    } else {
        None
    };
    let usage = match state.external.rates.check(&key.id, key.tier, now.unix_timestamp()) {
        Verdict::Admitted(usage) => usage,
        Verdict::Limited { retry_after, usage } => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMIT_EXCEEDED",
                format!("rate limit of the {} tier exceeded", key.tier.as_str()),
            )
            .details(format!("retry after {} s", retry_after.as_secs().max(1)))
            .with("retry_after", serde_json::json!(retry_after.as_secs().max(1)))
            .error_object(serde_json::json!({
                "limit": usage.limits.map(|l| l.per_minute),
                "retry_after": retry_after.as_secs().max(1),
                "window": "minute",
            }));
            e.headers.push(("retry-after", retry_after.as_secs().max(1).to_string()));
            e.headers.extend(usage.headers().into_iter().flatten());
            return Err(e);
        }
    };
    tracing::debug!(key = %key.key_prefix(), method = %parts.method, %path, "external API call");
    let store = state.store.clone();
    let id = key.id.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = store.touch_api_key(&id, now) {
            tracing::debug!(error = %e, "cannot record an API key's use");
        }
    });
    parts.extensions.insert(Caller { key });
    parts.extensions.insert(SignedBody(bytes.clone()));
    Ok((Request::from_parts(parts, Body::from(bytes)), usage, replay))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_path_is_after_the_mount_point_and_decoded() {
        assert_eq!(backend_path("/api/external/v1/files"), "/v1/files");
        assert_eq!(backend_path("/panel/api/external/v1/a%20b/%C3%A9"), "/v1/a b/é");
        assert_eq!(backend_path("/v1/me"), "/v1/me");
    }

    #[test]
    fn allow_lists_take_addresses_and_blocks_of_both_families() {
        let allow = vec!["203.0.113.50".to_string(), "10.0.0.0/8".to_string(), "2001:db8::/32".to_string()];
        let ok = |s: &str| ip_allowed(&allow, s.parse().unwrap());
        assert!(ok("203.0.113.50") && ok("10.9.8.7") && ok("2001:db8::1") && ok("::ffff:10.1.1.1"));
        assert!(!ok("203.0.113.51") && !ok("11.0.0.1") && !ok("2001:db9::1"));
        assert!(ip_allowed(&[], "192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn replays_are_refused_within_the_window_only_for_the_same_key_and_signature() {
        let guard = ReplayGuard::default();
        assert!(guard.first_use("k", "ABC"));
        assert!(!guard.first_use("k", "abc"));
        assert!(guard.first_use("other", "abc"));
        assert!(guard.first_use("k", "abd"));
        guard.forget("k", "abd");
        assert!(guard.first_use("k", "abd"), "a failed request may be sent again");
    }
}
