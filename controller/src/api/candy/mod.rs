//! The CandyPanel API (`candypanel-wireguard.md`): WireGuard interfaces and clients for
//! CandyPanel's web UI, its Telegram bot and scripts. Every answer is the panel's envelope
//! `{message, success, data}`; bodies are flat JSON, as the original's clients send them.
//!
//! Deliberate differences from the original: logins use the controller's users and each gets
//! its own expiring session (no global token, no `Bearer NONE`); settings never carry the admin
//! password, a session token or server private keys; the bot's endpoints check the admin id
//! they are given.

pub mod bot;
pub mod bot_db;
pub mod clients;
pub mod data;
pub mod login;
pub mod manage;
pub mod openapi;
pub mod public;
pub mod ui;

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::AppState;
use crate::store::{StoreError, WgRefusal, WgStoreError};

/// `[candy]` settings of the controller.
#[derive(Debug, Clone)]
pub struct CandySettings {
    /// How long a login's bearer token stays valid.
    pub session_ttl: Duration,
    /// CandyPanel's built web UI (`Frontend/dist`), served at `/` and for any GET outside the
    /// APIs (see [`ui`]); `None`: not served.
    pub ui_dir: Option<PathBuf>,
    /// SQLite file CandyPanel's `bot.py` reads its credentials from (see [`bot_db`]).
    pub bot_db: Option<PathBuf>,
}

impl Default for CandySettings {
    fn default() -> Self {
        CandySettings { session_ttl: Duration::from_secs(24 * 3600), ui_dir: None, bot_db: None }
    }
}

/// The API's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/check", get(login::check))
        .route("/api/auth", post(login::auth))
        .route("/api/manage", post(manage::manage))
        .route("/api/data", get(data::all_data))
        .route("/client-details/{name}/{*key}", get(public::client_details))
        .route("/qr/{name}/{*key}", get(public::qr))
        .route("/shortlink/{name}/{*key}", get(public::shortlink))
        .merge(bot::router())
}

/// Whether `path` belongs to this API family (its errors then use this family's envelope).
pub fn is_candy_path(path: &str) -> bool {
    ["/check", "/api/auth", "/api/manage", "/api/data"].contains(&path)
        || ["/bot_api/", "/client-details/", "/qr/", "/shortlink/"].iter().any(|p| path.starts_with(p))
}

/// A failure, as `{"message": "…", "success": false}` with its status.
#[derive(Debug)]
pub struct CandyError {
    pub status: StatusCode,
    pub message: String,
}

impl CandyError {
    /// 400 with `message`.
    pub fn bad(message: impl Into<String>) -> CandyError {
        CandyError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> CandyError {
        CandyError { status: StatusCode::NOT_FOUND, message: message.into() }
    }

    /// 401 with `message`.
    pub fn unauthorized(message: impl Into<String>) -> CandyError {
        CandyError { status: StatusCode::UNAUTHORIZED, message: message.into() }
    }

    /// 403 with `message`.
    pub fn forbidden(message: impl Into<String>) -> CandyError {
        CandyError { status: StatusCode::FORBIDDEN, message: message.into() }
    }

    /// 500 with `message`: the controller failed, not the caller.
    pub fn internal(message: impl Into<String>) -> CandyError {
        CandyError { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into() }
    }
}

impl IntoResponse for CandyError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(message = %self.message, "CandyPanel API failure");
        }
        (self.status, Json(json!({ "message": self.message, "success": false }))).into_response()
    }
}

impl From<StoreError> for CandyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => CandyError::bad(m),
            StoreError::Conflict(m) => CandyError::bad(format!("{m} already exists")),
            StoreError::NotFound(m) => CandyError::not_found(format!("{m} not found")),
            other => CandyError::internal(format!("An unexpected error occurred: {other}")),
        }
    }
}

impl From<WgStoreError> for CandyError {
    fn from(e: WgStoreError) -> Self {
        match e {
            WgStoreError::Refused(r @ (WgRefusal::ClientNotFound(_) | WgRefusal::NodeNotFound(_))) => {
                CandyError::not_found(r.to_string())
            }
            WgStoreError::Refused(r) => CandyError::bad(r.to_string()),
            WgStoreError::Store(e) => e.into(),
        }
    }
}

/// A success: `{"message": …, "success": true, "data": …}` (`data` is `null` when there is
/// nothing to return, as in the original).
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub message: String,
    pub data: Value,
}

impl Done {
    /// A success with data.
    pub fn with(message: impl Into<String>, data: Value) -> Done {
        Done { message: message.into(), data }
    }

    /// A success without data.
    pub fn message(message: impl Into<String>) -> Done {
        Done { message: message.into(), data: Value::Null }
    }
}

impl IntoResponse for Done {
    fn into_response(self) -> Response {
        Json(json!({ "message": self.message, "success": true, "data": self.data })).into_response()
    }
}

/// A JSON object body. Fields are read at the top level first, then inside `data` (the bot's
/// passthrough nests them; the web UI sends them flat). Malformed bodies are a 400 in the
/// envelope, never axum's plain-text rejection.
#[derive(Debug, Clone, Default)]
pub struct Fields(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = CandyError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > MAX_BODY)
        {
            return Err(CandyError { status: StatusCode::PAYLOAD_TOO_LARGE, message: "Request body too large".into() });
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| CandyError::bad(format!("Unreadable request body: {e}")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields::default());
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Fields(map)),
            Ok(_) => Err(CandyError::bad("Request body must be a JSON object")),
            Err(e) => Err(CandyError::bad(format!("Invalid JSON body: {e}"))),
        }
    }
}

/// Largest body accepted (a bulk of settings is a few KiB).
const MAX_BODY: u64 = 1 << 20;

impl Fields {
    /// The raw value of `key`, top level first, then `data.key`; JSON `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let top = self.0.get(key).filter(|v| !v.is_null());
        top.or_else(|| self.0.get("data")?.as_object()?.get(key).filter(|v| !v.is_null()))
    }

    /// A text field; numbers are accepted and written out (panels send ports and ids either way).
    pub fn text(&self, key: &str) -> Result<Option<String>, CandyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(CandyError::bad(format!("Field '{key}' must be a string"))),
        }
    }

    /// A non-empty text field.
    pub fn non_empty(&self, key: &str) -> Result<Option<String>, CandyError> {
        Ok(self.text(key)?.filter(|s| !s.trim().is_empty()))
    }

    /// An integer field, from a number or a numeric string.
    pub fn int(&self, key: &str) -> Result<Option<i64>, CandyError> {
        let bad = || CandyError::bad(format!("Field '{key}' must be an integer"));
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .map(Some)
                .ok_or_else(bad),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    /// A number field, from a number or a numeric string.
    pub fn number(&self, key: &str) -> Result<Option<f64>, CandyError> {
        let bad = || CandyError::bad(format!("Field '{key}' must be a number"));
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()).map(Some).ok_or_else(bad),
            Some(_) => Err(bad()),
        }
    }

    /// A flag: `true`/`false`, `1`/`0`, or those as strings (the UI sends back the stored 0/1).
    pub fn flag(&self, key: &str) -> Result<Option<bool>, CandyError> {
        let bad = || CandyError::bad(format!("Field '{key}' must be true or false"));
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(0) => Ok(Some(false)),
                Some(1) => Ok(Some(true)),
                _ => Err(bad()),
            },
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(bad()),
            },
            Some(_) => Err(bad()),
        }
    }
}

/// The caller of an admin endpoint: a login session or one of the panel's API tokens.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The user the session belongs to, or `api_token:<name>`.
    pub name: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = CandyError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let missing = || CandyError::unauthorized("Authorization header missing or not a Bearer token");
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(missing)?;
        let token = header.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or_else(missing)?;
        if token.is_empty() {
            return Err(missing());
        }
        let store = state.store.clone();
        let token = token.to_string();
        let found = tokio::task::spawn_blocking(move || -> Result<Option<String>, StoreError> {
            if let Some(user) = store.api_session_user(&token)? {
                return Ok(Some(user));
            }
            let tokens = store.candy_setting("api_tokens")?.unwrap_or_default();
            let tokens: Map<String, Value> = serde_json::from_str(&tokens).unwrap_or_default();
            Ok(tokens.iter().find_map(|(name, value)| {
                let value = value.as_str()?;
                let same: bool = subtle::ConstantTimeEq::ct_eq(value.as_bytes(), token.as_bytes()).into();
                (same && !value.is_empty()).then(|| format!("api_token:{name}"))
            }))
        })
        .await
        .map_err(|e| CandyError::internal(e.to_string()))??;
        found.map(|name| Admin { name }).ok_or_else(|| CandyError::unauthorized("Invalid or expired token"))
    }
}

/// Now as the panel writes creation times: ISO 8601 UTC, second precision.
pub(crate) fn now_iso() -> String {
    super::timestamp(time::OffsetDateTime::now_utc())
}

/// Runs store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static, E: Into<CandyError> + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, CandyError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| CandyError::internal(e.to_string()))?.map_err(Into::into)
}
