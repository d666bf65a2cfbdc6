//! The agent's local HTTP API: the v2ray-stat API (`api-docs/v2ray-stat.md`) on loopback, by
//! default `127.0.0.1:9952`, so scripts written for v2ray-stat keep working on a Flotilla host.
//!
//! Every endpoint goes through the node's [`ProxyCore`]: reads come from `user_stats()` and
//! `dns_stats()`, user changes go through one `change_users()` call each (a bulk add is one call
//! for the whole file), which applies them live and queues them for the controller. The text and
//! JSON shapes come from [`flotilla_protocol::v2ray_stat`], shared with the controller.
//!
//! Like the original, the API has no authentication; unlike it, it refuses to listen anywhere
//! but on a loopback address.

mod directory;
mod error;
mod handlers;
mod params;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use flotilla_protocol::v2ray_stat::{ResolvedColumns, StatsColumns};
use serde::Deserialize;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::AgentConfig;
use crate::drivers::core::ProxyCore;
pub use directory::{CoreDirectory, UserDirectory};
pub use error::ApiError;

/// Where the API listens unless configured otherwise (the original's default).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9952);
/// Inbound of users added without `inboundTag`, unless configured otherwise (the document's
/// examples and the original's default).
pub const DEFAULT_INBOUND_TAG: &str = "vless-in";

/// What [`serve`] needs.
#[derive(Debug, Clone)]
pub struct LocalApiSettings {
    /// Loopback address to listen on; `None`: the API is off.
    pub listen: Option<SocketAddr>,
    /// Inbound of users added without `inboundTag`.
    pub default_inbound_tag: String,
    /// Columns and sorts of `GET /api/v1/stats`.
    pub stats_columns: StatsColumns,
    /// The clock of subscription decisions: `adjust_date` counts from now when a user has no end
    /// date, and must agree with the core driver's clock (tests skew both).
    pub clock: Clock,
}

impl LocalApiSettings {
    /// The settings of `flotilla-agent run`: `[local_api]` and `[stats_columns]` of agent.toml,
    /// overridden by `--local-api ADDR|off` (`listen`) and `--stats-columns FILE` (a v2ray-stat
    /// config.yaml; one without `stats_columns` leaves agent.toml's or the defaults).
    pub fn from_config(
        config: &AgentConfig,
        listen: Option<&str>,
        stats_columns_file: Option<&Path>,
        clock: Clock,
    ) -> Result<LocalApiSettings, LocalApiError> {
        let listen = match listen {
            Some(text) => parse_listen(text).map_err(LocalApiError::Listen)?,
            None => config.local_api.listen,
        };
        let from_file = match stats_columns_file {
            Some(path) => {
                let columns = load_stats_columns(path)?;
                if columns.is_none() {
                    tracing::warn!(path = %path.display(), "no stats_columns in this file; using the configured columns");
                }
                columns
            }
            None => None,
        };
        Ok(LocalApiSettings {
            listen,
            default_inbound_tag: config.local_api.default_inbound_tag.clone(),
            stats_columns: from_file.or_else(|| config.stats_columns.clone()).unwrap_or_default(),
            clock,
        })
    }
}

impl Default for LocalApiSettings {
    fn default() -> Self {
        LocalApiSettings {
            listen: Some(DEFAULT_LISTEN),
            default_inbound_tag: DEFAULT_INBOUND_TAG.into(),
            stats_columns: StatsColumns::default(),
            clock: Clock::system(),
        }
    }
}

/// Why the local API could not run, or its settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalApiError {
    /// A `--local-api` value that is not a loopback address or `off`.
    #[error("--local-api: {0}")]
    Listen(String),
    /// The API has no authentication, so it never listens beyond loopback.
    #[error(
        "local API address {0} is not a loopback address: the v2ray-stat API has no authentication, so it only \
         listens on 127.0.0.1 or ::1"
    )]
    NotLoopback(SocketAddr),
    /// The address is taken (v2ray-stat itself still running?) or not available.
    #[error("local API: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The server failed while running.
    #[error("local API on {addr}: {source}")]
    Serve { addr: SocketAddr, source: std::io::Error },
    /// `--stats-columns FILE` cannot be read.
    #[error("{}: {source}", path.display())]
    ReadColumns { path: PathBuf, source: std::io::Error },
    /// `--stats-columns FILE` is not YAML with a valid `stats_columns`.
    #[error("{}: {why}", path.display())]
    ParseColumns { path: PathBuf, why: String },
}

/// Parses a listen setting (`[local_api] listen`, `--local-api`): `host:port` on a loopback
/// address (`localhost:PORT` too), or `off` / empty for no API.
pub fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let addr = match text.strip_prefix("localhost:") {
        Some(port) => port.parse::<u16>().map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p)).ok(),
        None => text.parse::<SocketAddr>().ok(),
    };
    let addr = addr.ok_or_else(|| format!("'{text}' is not an address like 127.0.0.1:9952 (or off)"))?;
    if !addr.ip().is_loopback() {
        return Err(LocalApiError::NotLoopback(addr).to_string());
    }
    Ok(Some(addr))
}

/// The part of a v2ray-stat `config.yaml` the agent uses; every other key is ignored.
#[derive(Debug, Deserialize)]
struct V2rayStatYaml {
    #[serde(default)]
    stats_columns: Option<StatsColumns>,
}

/// Reads `stats_columns` out of the text of a v2ray-stat `config.yaml` (`None`: the file has
/// none, so the defaults apply).
pub fn stats_columns_from_yaml(text: &str) -> Result<Option<StatsColumns>, String> {
    // An empty file (or one of comments only) is YAML null: no settings at all.
    if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Ok(None);
    }
    serde_yaml_ng::from_str::<V2rayStatYaml>(text).map(|y| y.stats_columns).map_err(|e| e.to_string())
}

/// Loads `--stats-columns FILE`: the `stats_columns` key of a v2ray-stat `config.yaml`.
pub fn load_stats_columns(path: &Path) -> Result<Option<StatsColumns>, LocalApiError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| LocalApiError::ReadColumns { path: path.to_path_buf(), source })?;
    stats_columns_from_yaml(&text).map_err(|why| LocalApiError::ParseColumns { path: path.to_path_buf(), why })
}

/// Settings every handler shares.
#[derive(Clone)]
pub(crate) struct Shared {
    default_inbound_tag: Arc<str>,
    columns: Arc<ResolvedColumns>,
    clock: Clock,
}

/// What a handler works with: the shared settings, and the directory of the request (from its
/// extensions; none on an agent without a core).
pub(crate) struct AppState {
    directory: Option<Arc<dyn UserDirectory>>,
    default_inbound_tag: Arc<str>,
    columns: Arc<ResolvedColumns>,
    clock: Clock,
}

impl AppState {
    /// The directory, or the 503 every endpoint answers on a node without a core.
    fn core(&self) -> Result<&Arc<dyn UserDirectory>, ApiError> {
        self.directory.as_ref().ok_or(ApiError::NoCore)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AppState {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let shared = parts
            .extensions
            .get::<Shared>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("v2ray-stat routes mounted without their settings".into()))?;
        Ok(AppState {
            directory: parts.extensions.get::<Arc<dyn UserDirectory>>().cloned(),
            default_inbound_tag: shared.default_inbound_tag,
            columns: shared.columns,
            clock: shared.clock,
        })
    }
}

/// A route for one method; any other method gets a 405 naming the allowed one (with `Allow`).
fn one<H, T, S>(filter: MethodFilter, allowed: &'static str, handler: H) -> MethodRouter<S>
where
    H: axum::handler::Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    on(filter, handler).fallback(move || async move { ApiError::MethodNotAllowed(allowed) })
}

/// The API's routes over `core` (`None`: every endpoint answers 503). `stats_columns` warnings
/// are not logged here; [`serve`] logs them once.
pub fn router(settings: &LocalApiSettings, core: Option<Arc<dyn ProxyCore>>) -> Router {
    let directory = core.map(|c| Arc::new(CoreDirectory(c)) as Arc<dyn UserDirectory>);
    let routes =
        routes(settings).route("/", one(MethodFilter::GET, "GET", handlers::banner)).fallback(handlers::not_found);
    match directory {
        Some(d) => routes.layer(axum::Extension(d)),
        None => routes,
    }
}

/// The document's endpoints, for any host of the API: the caller puts an
/// `Arc<dyn UserDirectory>` in each request's extensions (none: 503).
pub fn routes<S: Clone + Send + Sync + 'static>(settings: &LocalApiSettings) -> Router<S> {
    use handlers as h;
    let shared = Shared {
        default_inbound_tag: settings.default_inbound_tag.as_str().into(),
        columns: Arc::new(settings.stats_columns.resolve().0),
        clock: settings.clock.clone(),
    };
    let (get, post, patch, delete) = (MethodFilter::GET, MethodFilter::POST, MethodFilter::PATCH, MethodFilter::DELETE);
    Router::new()
        .route("/api/v1/users", one(get, "GET", h::users))
        .route("/api/v1/stats", one(get, "GET", h::stats))
        .route("/api/v1/dns_stats", one(get, "GET", h::dns_stats))
        .route("/api/v1/delete_dns_stats", one(post, "POST", h::delete_dns_stats))
        .route("/api/v1/reset_traffic_stats", one(post, "POST", h::reset_traffic_stats))
        .route("/api/v1/reset_clients_stats", one(post, "POST", h::reset_clients_stats))
        .route("/api/v1/reset_traffic", one(post, "POST", h::reset_traffic))
        .route("/api/v1/add_user", one(post, "POST", h::add_user))
        .route("/api/v1/bulk_add_users", one(post, "POST", h::bulk_add_users))
        .route("/api/v1/delete_user", one(delete, "DELETE", h::delete_user))
        .route("/api/v1/set_enabled", one(patch, "PATCH", h::set_enabled))
        .route("/api/v1/update_lim_ip", one(patch, "PATCH", h::update_lim_ip))
        .route("/api/v1/adjust_date", one(patch, "PATCH", h::adjust_date))
        .route("/api/v1/update_renew", one(patch, "PATCH", h::update_renew))
        .layer(axum::Extension(shared))
}

/// Serves the API until `shutdown` turns true (or its sender is dropped). Returns at once when
/// `settings.listen` is `None`; refuses a non-loopback address; a bind failure names the address.
///
/// Spawn it beside the link: `tokio::spawn(local_api::serve(settings, core, shutdown_rx))`.
pub async fn serve(
    settings: LocalApiSettings,
    core: Option<Arc<dyn ProxyCore>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LocalApiError> {
    let Some(addr) = settings.listen else {
        tracing::info!("local v2ray-stat API off");
        return Ok(());
    };
    if !addr.ip().is_loopback() {
        return Err(LocalApiError::NotLoopback(addr));
    }
    for warning in settings.stats_columns.resolve().1 {
        tracing::warn!("{warning}");
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| LocalApiError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    if core.is_none() {
        tracing::warn!(addr = %bound, "local v2ray-stat API listening, but this node has no proxy core: it answers 503");
    } else {
        tracing::info!(addr = %bound, "local v2ray-stat API listening");
    }
    let app = router(&settings, core);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
        .map_err(|source| LocalApiError::Serve { addr: bound, source })
}
