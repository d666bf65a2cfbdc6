//! `GET /api/v1/monitoring/stack`: the monitoring stack beside Flotilla (Prometheus, Loki,
//! Grafana from `[monitoring]`), probed on each call, and a few fleet figures shown beside it.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::UiUser;
use crate::api::multi_server::{ApiError, ErrorBody, TAG};
use crate::api::AppState;
use crate::monitoring::{self, Probe};

/// One service of the stack.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceProbe {
    /// The service is configured.
    pub enabled: bool,
    /// Its configured URL, without credentials (empty when not configured).
    pub url: String,
    /// Its readiness endpoint answered 2xx.
    pub ok: bool,
    pub status_code: Option<u16>,
    /// Empty when ok; else `not configured`, the connection error, or the start of its answer.
    pub error: String,
}

impl From<Probe> for ServiceProbe {
    fn from(p: Probe) -> Self {
        ServiceProbe { enabled: p.enabled, url: p.url, ok: p.ok, status_code: p.status_code, error: p.error }
    }
}

/// The three services.
#[derive(Debug, Serialize, ToSchema)]
pub struct StackServices {
    /// Probed at `/-/ready`.
    pub prometheus: ServiceProbe,
    /// Probed at `/ready`.
    pub loki: ServiceProbe,
    /// Probed at `/api/health`.
    pub grafana: ServiceProbe,
}

/// Paths the reverse proxy serves things under, without slashes.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicPaths {
    /// The panel's `--base-path` (`my-panel`), or empty.
    pub panel: String,
    /// Grafana (`grafana` unless configured); the UI links to `<origin>/<grafana>/`.
    pub grafana: String,
}

/// Figures shown beside the stack: `{}` when Prometheus is not configured or not ready.
/// `up_sum` comes from Prometheus; the others are Flotilla's own numbers (its agents and its
/// AdGuard collector), so they do not depend on what Prometheus scrapes.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct PrometheusMetrics {
    /// `sum(up)`: Prometheus's scrape targets that are up (absent when the query failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up_sum: Option<f64>,
    /// Queries of the enabled AdGuard sources that answered, at their latest collection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adguard_queries_sum: Option<u64>,
    /// Of those, blocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adguard_blocked_sum: Option<u64>,
    /// Mean of those sources' block rates, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adguard_block_rate_avg: Option<f64>,
    /// Nodes whose agent is connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_online_sum: Option<u64>,
    /// Clients their cores saw recently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_clients_sum: Option<u64>,
}

/// `GET /api/v1/monitoring/stack` answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "ts": 1741860000,
    "public_paths": { "panel": "my-panel", "grafana": "grafana" },
    "services": {
        "prometheus": { "enabled": true, "url": "http://127.0.0.1:9090", "ok": true, "status_code": 200, "error": "" },
        "loki": { "enabled": true, "url": "http://127.0.0.1:3100", "ok": false, "status_code": 503,
                  "error": "Ingester not ready: waiting for 15s after being ready" },
        "grafana": { "enabled": false, "url": "", "ok": false, "status_code": null, "error": "not configured" }
    },
    "prometheus_metrics": {
        "up_sum": 3.0, "adguard_queries_sum": 1200, "adguard_blocked_sum": 300, "adguard_block_rate_avg": 25.0,
        "node_online_sum": 2, "node_clients_sum": 7
    }
}))]
pub struct StackStatus {
    /// Now, Unix seconds.
    pub ts: i64,
    pub public_paths: PublicPaths,
    pub services: StackServices,
    pub prometheus_metrics: PrometheusMetrics,
}

/// Probes the configured Prometheus, Loki and Grafana (3 s each, at once).
#[utoipa::path(
    get,
    path = "/api/v1/monitoring/stack",
    operation_id = "monitoring_stack",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "The stack now", body = StackStatus),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
    ),
)]
pub async fn stack(_: UiUser, State(state): State<AppState>) -> Result<Json<StackStatus>, ApiError> {
    let config = state.monitoring.clone();
    let run = |url: Option<String>, path: &'static str| {
        tokio::task::spawn_blocking(move || monitoring::probe(url.as_deref(), path))
    };
    let (prometheus, loki, grafana) = tokio::join!(
        run(config.prometheus_url.clone(), "/-/ready"),
        run(config.loki_url.clone(), "/ready"),
        run(config.grafana_url.clone(), "/api/health"),
    );
    let task = |e: tokio::task::JoinError| ApiError::Internal(e.to_string());
    let (prometheus, loki, grafana) = (prometheus.map_err(task)?, loki.map_err(task)?, grafana.map_err(task)?);

    let prometheus_metrics = match (&config.prometheus_url, prometheus.ok) {
        (Some(url), true) => {
            let url = url.clone();
            let up = tokio::task::spawn_blocking(move || monitoring::prometheus_query(&url, "sum(up)"))
                .await
                .map_err(task)?;
            let up_sum = up.map_err(|e| tracing::debug!(error = %e, "Prometheus sum(up) failed")).ok();
            let store = state.store.clone();
            let latest = tokio::task::spawn_blocking(move || super::adguard::latest(&store)).await.map_err(task)??;
            let adguard = crate::adguard::summarize(latest.iter().map(|(_, s)| s));
            let (mut online, mut clients) = (0u64, 0u64);
            for node in state.store.nodes()? {
                let live = state.fleet.live(node.id);
                if live.connected {
                    online += 1;
                    clients += live.core.as_ref().map(|c| c.online.len() as u64).unwrap_or(0);
                }
            }
            PrometheusMetrics {
                up_sum,
                adguard_queries_sum: Some(adguard.queries_total),
                adguard_blocked_sum: Some(adguard.blocked_total),
                adguard_block_rate_avg: Some(adguard.blocked_rate_avg),
                node_online_sum: Some(online),
                node_clients_sum: Some(clients),
            }
        }
        _ => PrometheusMetrics::default(),
    };
    Ok(Json(StackStatus {
        ts: OffsetDateTime::now_utc().unix_timestamp(),
        public_paths: PublicPaths { panel: config.panel_path.clone(), grafana: config.grafana_public_path.clone() },
        services: StackServices { prometheus: prometheus.into(), loki: loki.into(), grafana: grafana.into() },
        prometheus_metrics,
    }))
}
