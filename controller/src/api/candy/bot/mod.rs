//! `/bot_api/…`: the endpoints CandyPanel's Telegram bot (`Backend/bot.py`) calls. The bot posts
//! JSON bodies from the same host and says who it acts for with `telegram_id`; it has no other
//! credential. So every route here answers loopback callers only, and the admin routes check the
//! caller's id against the `telegram_bot_admin_id` setting (unset, `0` or empty: nobody is
//! admin).
//!
//! Purchases: a user orders traffic or time and pays out of band; the admin approves the order,
//! which creates or extends the user's WireGuard client (`plan` has the arithmetic).

mod admin;
mod plan;
mod user;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;

use super::{blocking, CandyError, Done, Fields};
use crate::api::AppState;
use crate::store::{Store, StoreError};

/// Serialises the changes bot users' clients go through (approvals, bans, an admin's
/// corrections): two approvals for one user must not both extend from the same expiry.
static PURCHASES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The bot's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/bot_api/user/register", post(user::register))
        .route("/bot_api/user/set_language", post(user::set_language))
        .route("/bot_api/user/initiate_purchase", post(user::initiate_purchase))
        .route("/bot_api/user/calculate_price", post(user::calculate_price))
        .route("/bot_api/user/submit_transaction", post(user::submit_transaction))
        .route("/bot_api/user/buy_traffic_request", post(user::buy_traffic_request))
        .route("/bot_api/user/get_license", post(user::get_license))
        .route("/bot_api/user/account_status", post(user::account_status))
        .route("/bot_api/user/call_support", post(user::call_support))
        .route("/bot_api/admin/check_admin", post(admin::check_admin))
        .route("/bot_api/admin/get_all_users", post(admin::get_all_users))
        .route("/bot_api/admin/get_transactions", post(admin::get_transactions))
        .route("/bot_api/admin/approve_transaction", post(admin::approve_transaction))
        .route("/bot_api/admin/reject_transaction", post(admin::reject_transaction))
        .route("/bot_api/admin/manage_user", post(admin::manage_user))
        .route("/bot_api/admin/send_message_to_all", post(admin::send_message_to_all))
        .route("/bot_api/admin/server_control", post(admin::server_control))
        .route("/bot_api/admin/data", get(admin::data).post(admin::data))
        .route_layer(middleware::from_fn(local_only))
}

/// Refuses callers from other hosts. The peer address comes from the server's connect info;
/// without it (an app served without `into_make_service_with_connect_info`) the peer is
/// unknown and the request passes, with a warning logged once.
async fn local_only(req: Request, next: Next) -> Response {
    match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) if !is_local(peer.ip()) => {
            tracing::debug!(%peer, path = %req.uri().path(), "bot API call from a remote host refused");
            CandyError::forbidden("The bot API only answers local callers").into_response()
        }
        Some(_) => next.run(req).await,
        None => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!("the HTTP server gives no peer addresses: the bot API cannot refuse remote callers");
            });
            next.run(req).await
        }
    }
}

/// Loopback, also as an IPv4-mapped IPv6 address (a dual-stack listener).
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Store work off the async threads.
async fn with_store<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, CandyError> {
    let store = state.store.clone();
    blocking(move || work(&store)).await
}

/// A success whose data is `data` serialised.
fn reply<T: Serialize>(message: impl Into<String>, data: &T) -> Result<Done, CandyError> {
    let data = serde_json::to_value(data).map_err(|e| CandyError::internal(format!("Cannot encode answer: {e}")))?;
    Ok(Done::with(message, data))
}

/// A Telegram id field. Absent, `null` or `0` is `None` (the bot's "missing"); ids are positive.
fn telegram_id(fields: &Fields, key: &str) -> Result<Option<i64>, CandyError> {
    match fields.int(key)? {
        None | Some(0) => Ok(None),
        Some(id) if id < 0 => Err(CandyError::bad(format!("Field '{key}' must be a positive Telegram id"))),
        Some(id) => Ok(Some(id)),
    }
}

/// The bot admin as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AdminId(Option<i64>);

impl AdminId {
    /// Reads setting `telegram_bot_admin_id`: `0`, empty or not a number means none.
    fn parse(setting: &str) -> AdminId {
        AdminId(setting.trim().parse::<i64>().ok().filter(|id| *id > 0))
    }

    /// The setting as the bot reads it: a numeric string, `"0"` when unset (the bot calls
    /// `int()` on anything else).
    fn shown(self) -> String {
        self.0.unwrap_or(0).to_string()
    }

    fn is(self, caller: Option<i64>) -> bool {
        self.0.is_some() && self.0 == caller
    }

    /// 403 "Unauthorized" unless `caller` is the admin.
    fn require(self, caller: Option<i64>) -> Result<(), CandyError> {
        if self.is(caller) {
            Ok(())
        } else {
            Err(CandyError::forbidden("Unauthorized"))
        }
    }
}

async fn admin_id(state: &AppState) -> Result<AdminId, CandyError> {
    let setting = with_store(state, |s| s.candy_setting("telegram_bot_admin_id")).await?;
    Ok(AdminId::parse(&setting.unwrap_or_default()))
}

/// A text setting of the panel (its default when never set).
async fn setting(state: &AppState, key: &'static str) -> Result<String, CandyError> {
    Ok(with_store(state, move |s| s.candy_setting(key)).await?.unwrap_or_default())
}

/// A plan refusal: 500 when the panel's prices are at fault (as the panel answers), else 400.
fn plan_error(e: plan::PlanError) -> CandyError {
    if e.is_configuration() {
        CandyError::internal(e.to_string())
    } else {
        CandyError::bad(e.to_string())
    }
}

/// `what` failed because of `e`: the message says both, the status stays `e`'s.
fn failed(what: &str, e: CandyError) -> CandyError {
    CandyError { status: e.status, message: format!("{what}: {}", e.message.trim_end_matches('.')) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_id_unset_means_nobody() {
        for unset in ["0", "", "  ", "abc", "-5"] {
            let admin = AdminId::parse(unset);
            assert_eq!(admin, AdminId(None), "{unset:?}");
            assert!(!admin.is(Some(0)) && !admin.is(None) && !admin.is(Some(5)));
            assert_eq!(admin.shown(), "0", "the bot int()s it");
            assert_eq!(admin.require(None).unwrap_err().message, "Unauthorized");
        }
        let admin = AdminId::parse(" 987654321 ");
        assert!(admin.is(Some(987654321)));
        assert!(!admin.is(Some(1)) && !admin.is(None));
        assert_eq!(admin.shown(), "987654321");
        assert!(admin.require(Some(987654321)).is_ok());
        assert_eq!(admin.require(Some(1)).unwrap_err().status, axum::http::StatusCode::FORBIDDEN);
    }

    #[test]
    fn telegram_ids_are_positive_integers() {
        let fields = |v: serde_json::Value| Fields(v.as_object().unwrap().clone());
        assert_eq!(telegram_id(&fields(serde_json::json!({"telegram_id": 42})), "telegram_id").unwrap(), Some(42));
        assert_eq!(telegram_id(&fields(serde_json::json!({"telegram_id": "42"})), "telegram_id").unwrap(), Some(42));
        assert_eq!(telegram_id(&fields(serde_json::json!({"telegram_id": 0})), "telegram_id").unwrap(), None);
        assert_eq!(telegram_id(&fields(serde_json::json!({})), "telegram_id").unwrap(), None);
        assert!(telegram_id(&fields(serde_json::json!({"telegram_id": -3})), "telegram_id").is_err());
        assert!(telegram_id(&fields(serde_json::json!({"telegram_id": "x"})), "telegram_id").is_err());
        assert!(telegram_id(&fields(serde_json::json!({"telegram_id": [1]})), "telegram_id").is_err());
    }

    #[test]
    fn only_loopback_is_local() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_local(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.1", "192.0.2.7", "::ffff:10.0.0.1", "2001:db8::1", "0.0.0.0"] {
            assert!(!is_local(ip.parse().unwrap()), "{ip}");
        }
    }
}
