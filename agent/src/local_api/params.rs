//! Request parameters as the original reads them with `FormValue`: a form-encoded body
//! (`curl -d`) first, then the query string, so `curl -X DELETE "…?user=x"` and
//! `curl -X PATCH … -d "user=x"` both work.

use axum::extract::{FromRequest, Request};
use axum::http::header;

use super::ApiError;

/// Largest form body read: parameters are a few short values.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The request's parameters, body values before query values, in their order.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// The first value of `key`; an empty value counts as missing (as in the original).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// The first value of `key`, or a 400 saying it is required.
    pub(crate) fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key).ok_or_else(|| ApiError::BadRequest(format!("{key} is required")))
    }
}

fn parse(text: &[u8], what: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_bytes(text).map_err(|e| ApiError::BadRequest(format!("{what}: {e}")))
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let query = parse(req.uri().query().unwrap_or("").as_bytes(), "query string")?;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let body = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await.map_err(|_| {
            ApiError::BadRequest(format!("cannot read the request body (at most {MAX_FORM_BYTES} bytes)"))
        })?;
        let mut pairs = Vec::new();
        if !body.is_empty() {
            match content_type.as_deref() {
                None | Some("application/x-www-form-urlencoded") => pairs = parse(&body, "form body")?,
                Some(other) => {
                    return Err(ApiError::BadRequest(format!(
                        "parameters must be form-encoded (curl -d \"user=…\") or in the query string, not {other}"
                    )))
                }
            }
        }
        pairs.extend(query);
        Ok(Params(pairs))
    }
}
