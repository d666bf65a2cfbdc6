//! The local API's one error type: plain-text bodies, as the original's `http.Error` answers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::drivers::core::UserChangeError;

/// An error answer of the local API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: which parameter and why.
    #[error("{0}")]
    BadRequest(String),
    /// 404: an unknown user or path.
    #[error("{0}")]
    NotFound(String),
    /// 405 with `Allow`: the method the path takes.
    #[error("invalid method: use {0}")]
    MethodNotAllowed(&'static str),
    /// 503: the node has no proxy core.
    #[error("no proxy core on this node")]
    NoCore,
    /// 500: the agent itself failed (its store), never the caller's input.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NoCore => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<UserChangeError> for ApiError {
    fn from(e: UserChangeError) -> Self {
        match e {
            UserChangeError::UnknownUser(_) => ApiError::NotFound(e.to_string()),
            UserChangeError::UnknownInbound(_) | UserChangeError::Exists(_) | UserChangeError::Invalid(..) => {
                ApiError::BadRequest(e.to_string())
            }
            UserChangeError::NoCore => ApiError::NoCore,
            UserChangeError::Store(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// A `text/plain` answer; a missing final newline is added, as `http.Error` does.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], body).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = text(self.status(), self.to_string());
        if let ApiError::MethodNotAllowed(allowed) = self {
            // GET routes answer HEAD too.
            let allow = if allowed == "GET" { "GET, HEAD" } else { allowed };
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let ApiError::Internal(why) = &self {
            tracing::error!(error = %why, "local API request failed");
        }
        response
    }
}
