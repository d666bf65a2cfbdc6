//! The external API in Panelica's shape (`api-docs/panelica-hosting.md`, `specs/hmac.md`): every
//! call signed with an API key's secret (HMAC-SHA256), keys with scopes, rate tiers and IP
//! allow-lists, at `/api/external/v1/…` (the backend path `/v1/…` is what signatures cover).
//!
//! Answers are wrapped as Panelica's own clients read them, `{"status": "success", "data": …}`
//! (the document says "the data directly"; its clients and the real backend wrap). Errors are
//! `{"status": "error", "error", "code", "details"}`. Hosting resources of later issues answer
//! 501 `NOT_IMPLEMENTED`.

pub mod auth;
pub mod bandwidth;
pub mod files;
pub mod keys;
pub mod meta;
pub mod node;
pub mod rate;
pub mod services;
pub mod signature;
pub mod spec;
pub mod status;
pub mod webhooks;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;
use crate::store::StoreError;

/// Where the family is mounted (the original's nginx location).
pub const PREFIX: &str = "/api/external";

/// Settings of the family (`[external_api]`).
#[derive(Debug, Clone)]
pub struct ExternalApiSettings {
    /// Largest request body accepted (signed bodies are buffered whole before parsing).
    pub body_limit: usize,
    /// A listener of its own besides the controller's (the original's `127.0.0.1:3002`), serving
    /// `/v1/…` and `/health` at the root as well as under `/api/external`.
    pub listen: Option<std::net::SocketAddr>,
    /// Refuse a state-changing request (POST, PUT, PATCH, DELETE) whose signature was already
    /// used within the timestamp window. GETs are never refused as replays: the official clients
    /// send identical signed GETs within one second.
    pub refuse_replays: bool,
}

impl Default for ExternalApiSettings {
    fn default() -> Self {
        ExternalApiSettings { body_limit: 10 * 1024 * 1024, listen: None, refuse_replays: true }
    }
}

/// The family's live state: settings, rate buckets, replay guard.
#[derive(Debug)]
pub struct ExternalApi {
    pub settings: ExternalApiSettings,
    pub rates: rate::RateLimits,
    pub replays: auth::ReplayGuard,
    /// When this controller started (`/health`'s uptime).
    pub started: std::time::Instant,
}

impl ExternalApi {
    /// A fresh state with `settings`.
    pub fn new(settings: ExternalApiSettings) -> Self {
        ExternalApi {
            settings,
            rates: Default::default(),
            replays: Default::default(),
            started: std::time::Instant::now(),
        }
    }
}

/// An error of this family.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Machine-readable (`INVALID_SIGNATURE`).
    pub code: &'static str,
    /// What went wrong, for people.
    pub error: String,
    pub details: String,
    /// Extra headers (`Retry-After`).
    pub headers: Vec<(&'static str, String)>,
    /// Extra top-level fields the official clients read (`retry_after`, `required_scope`).
    pub extra: serde_json::Map<String, Value>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, code: &'static str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            error: error.into(),
            details: String::new(),
            headers: vec![],
            extra: Default::default(),
        }
    }
    /// Adds a top-level field.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// Sends `error` as an object, `{code, message, …fields}`, as the real backend does for a
    /// refused scope and a rate limit (the official clients read `required_scope` and
    /// `retry_after` there); the top-level `code` and `details` stay.
    pub fn error_object(self, fields: Value) -> Self {
        let mut object = json!({ "code": self.code, "message": self.error });
        if let (Some(o), Value::Object(more)) = (object.as_object_mut(), fields) {
            o.extend(more);
        }
        self.with("error", object)
    }
    /// Adds details.
    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    pub fn bad(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", error)
    }
    pub fn not_found(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", error)
    }
    pub fn forbidden(code: &'static str, error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, code, error)
    }
    pub fn unauthorized(code: &'static str, error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, code, error)
    }
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error serving the external API");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal server error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "status": "error", "error": self.error, "code": self.code, "details": self.details });
        if let Some(obj) = body.as_object_mut() {
            obj.extend(self.extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Invalid(why) => ApiError::bad(why),
            StoreError::Conflict(what) => {
                ApiError::new(StatusCode::CONFLICT, "CONFLICT", format!("{what} already exists"))
            }
            other => ApiError::internal(other),
        }
    }
}

/// A time as this family writes it: RFC 3339 (`2026-03-07T12:00:00Z`).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// A success answer: `{"status": "success", "data": …}`.
pub fn ok(data: Value) -> Json<Value> {
    Json(json!({ "status": "success", "data": data }))
}

/// A success answer with a message (what the clients show after a change).
pub fn ok_with(data: Value, message: &str) -> Json<Value> {
    Json(json!({ "status": "success", "data": data, "message": message }))
}

/// Runs store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?.map_err(ApiError::from)
}

/// Whether `path` belongs to this family (for the shared fallbacks).
pub fn is_external_path(path: &str) -> bool {
    path.starts_with(PREFIX)
}

/// The `/v1` routes: what needs a signature (with the auth layer) and what does not.
fn v1(state: &AppState) -> Router<AppState> {
    let signed = Router::new()
        .route("/me", get(meta::me))
        .route("/rate-limit", get(meta::rate_limit))
        .route("/postman-collection", get(spec::postman))
        .route("/api-keys", get(keys::list).post(keys::create))
        .route("/api-keys/{key_id}", get(keys::get_one).patch(keys::update).delete(keys::delete))
        .route("/api-keys/{key_id}/regenerate", post(keys::regenerate))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/events", get(webhooks::event_types))
        .route("/webhooks/stats", get(webhooks::stats))
        .route("/webhooks/{id}", get(webhooks::get_one).patch(webhooks::update).delete(webhooks::delete))
        .route("/webhooks/{id}/enable", post(webhooks::enable))
        .route("/webhooks/{id}/disable", post(webhooks::disable))
        .route("/webhooks/{id}/logs", get(webhooks::logs))
        .route("/webhooks/{id}/test", post(webhooks::test))
        .route("/server/status", get(status::status))
        .route("/server/metrics", get(status::status))
        .route("/server/services", get(services::list))
        .route("/server/services/{name}/start", post(services::start))
        .route("/server/services/{name}/stop", post(services::stop))
        .route("/server/services/{name}/restart", post(services::restart))
        .route("/files/accessible-directories", get(files::accessible))
        .route("/files", get(files::list).post(files::create).delete(files::delete))
        .route("/files/content", get(files::read).put(files::write))
        .route("/files/trash", get(files::trash_list))
        .route("/files/trash/stats", get(files::trash_stats))
        .route("/files/trash/empty", post(files::trash_empty))
        .route("/files/trash/{id}", axum::routing::delete(files::trash_delete))
        .route("/files/trash/{id}/restore", post(files::trash_restore))
        .route("/bandwidth", get(bandwidth::usage))
        .route("/bandwidth/summary", get(bandwidth::summary))
        .route("/bandwidth/accounts/{id}", get(bandwidth::account))
        .fallback(spec::unrouted)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::verify));
    Router::new()
        .route("/health", get(meta::health))
        .route("/api-spec", get(spec::api_spec))
        .route("/openapi.json", get(spec::openapi))
        .merge(signed)
}

/// The family alone, for its own listener: `/v1/…` and `/health` at the root (where the
/// original's backend answered behind its proxy) and the same under [`PREFIX`].
pub fn standalone(state: AppState) -> axum::Router {
    Router::new()
        .route("/health", get(meta::health))
        .nest("/v1", v1(&state))
        .merge(router(&state))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::not_found(format!("no endpoint {}", uri.path())).details("see GET /v1/api-spec")
        })
        .with_state(state)
}

/// Routes of this family under [`PREFIX`].
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        // Where the official clients look for it, besides the document's `/v1/health`.
        .route(&format!("{PREFIX}/health"), get(meta::health))
        .nest(&format!("{PREFIX}/v1"), v1(state))
}
