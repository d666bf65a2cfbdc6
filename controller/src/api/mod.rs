//! HTTP APIs: one module per API family, each with its own router and error shape, merged here.

pub mod multi_server;

use std::sync::Arc;

use axum::Router;

use crate::auth::Authenticator;
use crate::fleet::Fleet;
use crate::store::Store;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub fleet: Arc<Fleet>,
    pub auth: Arc<Authenticator>,
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(multi_server::router())
        .fallback(multi_server::not_found)
        .method_not_allowed_fallback(multi_server::method_not_allowed)
        .with_state(state)
}

/// Timestamp in the documents' format: ISO 8601 without offset (UTC), second precision.
pub fn timestamp(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    t.to_offset(time::UtcOffset::UTC).format(&f).unwrap_or_default()
}
