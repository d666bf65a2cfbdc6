//! The VPS API (`api-docs/vps-proxmox.md`): virtual servers as containers on the fleet's nodes,
//! their OS and tariff catalogs, and the panel's login. Bearer tokens (sessions shared with the
//! CandyPanel login); errors as `{"error": "…"}` (plus the same text as `message`, which the
//! original web UI's login and action screens read).
//!
//! Multi-tenant: a server belongs to the user who created it; a user sees and acts only on their
//! own servers (others' are a 404), an administrator on all.

pub(crate) mod auth;
pub mod catalog;
pub mod console;
pub(crate) mod openapi;
pub(crate) mod servers;
pub mod socketio;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::AppState;
use crate::store::{Role, StoreError};

/// Settings of the VPS API (`[vps]`).
#[derive(Debug, Clone, Default)]
pub struct VpsSettings {
    /// `POST /api/auth/register` creates accounts (off: only operators add users).
    pub registration: bool,
    /// Socket.IO connections without a session token are accepted (the original web UI sends
    /// none) and may watch any server: a compatibility switch, off by default.
    pub anonymous_socketio: bool,
    /// When `server-alerts` fire.
    pub alerts: crate::vps_alerts::AlertThresholds,
    /// Origins allowed to call the API from a browser (CORS).
    pub cors_origins: Vec<String>,
    /// Where the console page loads xterm.js from (an npm CDN's base URL); `None`:
    /// [`DEFAULT_CONSOLE_ASSETS`].
    pub console_assets: Option<String>,
}

/// The npm CDN the console page loads xterm.js from by default (pinned by SRI hashes).
pub const DEFAULT_CONSOLE_ASSETS: &str = "https://cdn.jsdelivr.net/npm";

/// Where the panel's web UI runs in development (its Vite and CRA servers).
pub const DEFAULT_CORS_ORIGINS: &[&str] = &["http://localhost:3000", "http://localhost:5173"];

/// CORS for the family: the panel's web UI is served from another origin than the API. Bearer
/// tokens are sent by the page itself (not cookies), so an allowed origin gains nothing a page
/// without the token could use; the list still names origins rather than `*`.
pub fn cors(settings: &VpsSettings) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderValue, Method};
    let origins: Vec<HeaderValue> =
        settings.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .allow_credentials(true)
}

/// Routes of this family.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/register", post(auth::register))
        .route("/api/auth/me", get(auth::me))
        .route("/api/os", get(catalog::os_list).post(catalog::os_add))
        .route("/api/os/{id}", axum::routing::delete(catalog::os_delete))
        .route("/api/tariff", get(catalog::tariff_list).post(catalog::tariff_add))
        .route("/api/tariff/{id}", axum::routing::delete(catalog::tariff_delete))
        .route("/api/server", get(servers::list))
        .route("/api/server/create", post(servers::create))
        .route("/api/server/tasks/{upid}", get(servers::task))
        .route("/api/server/{id}", get(servers::get_one).delete(servers::delete))
        .route("/api/server/{id}/status", get(servers::status))
        .route("/api/server/{id}/start", post(servers::start))
        .route("/api/server/{id}/stop", post(servers::stop))
        .route("/api/server/{id}/restart", post(servers::restart))
        .route("/api/server/{id}/password", post(servers::password))
        .route("/api/server/{id}/resize", put(servers::resize))
        .route(
            "/api/server/{id}/snapshots",
            get(servers::snapshots).post(servers::snapshot_create).delete(servers::snapshot_delete),
        )
        .route("/api/server/{id}/snapshots/rollback", post(servers::snapshot_rollback))
        .route("/api/server/console", post(console::by_vmid))
        .route("/api/proxmox/console", post(console::by_server_id))
        .route("/api/server/{id}/console", get(console::by_path))
        .route(&format!("{}/{{ticket}}", console::PAGE_PATH), get(console::page))
        .route(&format!("{}/{{ticket}}/ws", console::PAGE_PATH), get(console::socket))
}

/// Whether `path` belongs to this family (for the shared fallbacks).
pub fn is_vps_path(path: &str) -> bool {
    ["/api/server", "/api/os", "/api/tariff", "/api/auth/", "/api/proxmox/", console::PAGE_PATH]
        .iter()
        .any(|p| path.starts_with(p))
}

/// Errors of this family: `{"error": "…", "message": "…"}`.
#[derive(Debug)]
pub struct VpsError {
    pub status: StatusCode,
    pub message: String,
}

impl VpsError {
    pub fn bad(message: impl Into<String>) -> Self {
        VpsError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        VpsError { status: StatusCode::UNAUTHORIZED, message: message.into() }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        VpsError { status: StatusCode::FORBIDDEN, message: message.into() }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        VpsError { status: StatusCode::NOT_FOUND, message: message.into() }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        VpsError { status: StatusCode::CONFLICT, message: message.into() }
    }
    /// The node that holds the server cannot do it now (offline, busy).
    pub fn unavailable(message: impl Into<String>) -> Self {
        VpsError { status: StatusCode::SERVICE_UNAVAILABLE, message: message.into() }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        tracing::error!(error = %message.into(), "internal error serving the VPS API");
        VpsError { status: StatusCode::INTERNAL_SERVER_ERROR, message: "internal server error".into() }
    }
}

impl IntoResponse for VpsError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message, "message": self.message }))).into_response()
    }
}

impl From<StoreError> for VpsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => VpsError::conflict(format!("{what} already exists")),
            StoreError::Invalid(why) => VpsError::bad(why),
            StoreError::NotFound(what) => VpsError::not_found(format!("{what} not found")),
            other => VpsError::internal(other.to_string()),
        }
    }
}

/// Runs store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static, E: Into<VpsError> + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, VpsError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| VpsError::internal(e.to_string()))?.map_err(Into::into)
}

/// The caller: a user with a session from `POST /api/auth/login` (or the CandyPanel login).
#[derive(Debug, Clone)]
pub struct Customer {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

impl Customer {
    /// Administrators see and manage every server and the catalogs.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// `Some(own id)` for a customer, `None` (everyone's) for an administrator.
    pub fn scope(&self) -> Option<i64> {
        (!self.is_admin()).then_some(self.id)
    }
}

impl FromRequestParts<AppState> for Customer {
    type Rejection = VpsError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, VpsError> {
        let token = bearer(parts).ok_or_else(|| VpsError::unauthorized("Authorization: Bearer <token> required"))?;
        customer_for_token(state, token).await?.ok_or_else(|| VpsError::unauthorized("invalid or expired token"))
    }
}

/// The token of an `Authorization: Bearer …` header.
pub(crate) fn bearer(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim();
    // The web UI sends `Bearer null` when it has no token.
    (!token.is_empty() && token != "null" && token != "undefined").then(|| token.to_string())
}

/// The user a session token belongs to.
pub(crate) async fn customer_for_token(state: &AppState, token: String) -> Result<Option<Customer>, VpsError> {
    let store = state.store.clone();
    blocking(move || -> Result<Option<Customer>, StoreError> {
        let Some(username) = store.api_session_user(&token)? else { return Ok(None) };
        let Some(user) = store.user(&username)? else { return Ok(None) };
        Ok(Some(Customer { id: user.id, username: user.username, role: user.role }))
    })
    .await
}

/// A JSON object body, on any method (the UI sends one with DELETE), whatever the Content-Type;
/// an empty body is `{}`.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = VpsError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, VpsError> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| VpsError {
            status: e.status(),
            message: format!("cannot read the request body: {}", e.body_text()),
        })?;
        let text = if bytes.iter().all(u8::is_ascii_whitespace) { &b"{}"[..] } else { &bytes[..] };
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(VpsError::bad("the request body must be a JSON object"));
        }
        serde_json::from_slice(text).map(Body).map_err(|e| VpsError::bad(format!("invalid JSON body: {e}")))
    }
}

/// A numeric `{id}` path segment.
pub(crate) fn path_id(raw: &str, what: &str) -> Result<i64, VpsError> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| VpsError::bad(format!("{what} must be a positive integer, got {raw:?}")))
}

/// Timestamps as the original API writes them: ISO 8601 UTC with milliseconds and `Z`.
pub(crate) fn iso(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(time::UtcOffset::UTC).format(&f).unwrap_or_default()
}
