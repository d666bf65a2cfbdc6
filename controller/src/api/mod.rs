//! HTTP APIs: one module per API family, each with its own router and error shape, merged here.

pub mod candy;
pub mod install;
pub mod multi_server;
pub mod openapi;
pub mod panelica;
pub mod v2ray_stat;
pub mod vps;

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
    /// Live events for the web UI's WebSocket feed.
    pub feed: multi_server::feed::FeedHub,
    /// The node history sampler.
    pub history: Arc<crate::jobs::history::HistoryJob>,
    /// The AdGuard Home collector.
    pub adguard: Arc<crate::jobs::adguard::AdGuardJob>,
    /// The monitoring stack beside the controller, and the panel's public paths.
    pub monitoring: Arc<crate::monitoring::Monitoring>,
    /// The fleet-wide v2ray-stat API.
    pub v2ray_stat: Arc<v2ray_stat::V2rayStatSettings>,
    /// The CandyPanel API's settings.
    pub candy: Arc<candy::CandySettings>,
    /// The one-line node install.
    pub install: Arc<install::InstallSettings>,
    /// Rolling agent upgrades.
    pub rollouts: Arc<crate::rollout::Rollouts>,
    /// The VPS API's settings.
    pub vps: Arc<vps::VpsSettings>,
    /// The VPS servers' resource alerts as they fire (Socket.IO `server-alerts`, e-mail).
    pub vps_alerts: crate::vps_alerts::AlertHub,
    /// Outgoing e-mail (server ready, critical alerts; `notify` for anything else).
    pub mailer: Arc<crate::email::Mailer>,
    /// Console URLs of the VPS API handed out and not used yet.
    pub vps_consoles: Arc<vps::console::ConsoleTickets>,
    /// The external (Panelica) API's settings, rate buckets and replay guard.
    pub external: Arc<panelica::ExternalApi>,
    /// The external API's webhooks: the outbox and its delivery worker.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
}

/// The whole HTTP application. With a `base_path` (`/my-panel`) every route is served both under
/// it and at the root, so scripts written for a reverse-proxied panel run unchanged either way.
pub fn app(state: AppState, base_path: Option<&str>) -> Router {
    let routes = Router::new()
        .merge(multi_server::router())
        .merge(v2ray_stat::router(state.clone()))
        .merge(candy::router())
        .merge(install::router())
        .merge(vps::router().layer(vps::cors(&state.vps)))
        .merge(panelica::router(&state))
        .route(openapi::PATH, axum::routing::get(openapi::serve))
        // The web UI's feed lives beside the API, not under /api.
        .route("/ws", axum::routing::get(multi_server::feed::connect));
    let routes = match base_path {
        Some(prefix) => Router::new().nest(prefix, routes.clone()).merge(routes),
        None => routes,
    };
    routes.fallback(candy::ui::fallback).method_not_allowed_fallback(candy::ui::method_not_allowed).with_state(state)
}

/// Timestamp in the documents' format: ISO 8601 without offset (UTC), second precision.
pub fn timestamp(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    t.to_offset(time::UtcOffset::UTC).format(&f).unwrap_or_default()
}
