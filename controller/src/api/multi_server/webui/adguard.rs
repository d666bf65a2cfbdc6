//! The monitoring tab's AdGuard panels: the AdGuard Home instances the controller polls
//! (`adguard/sources`), a collection on demand, the latest figures and their history. The
//! collector (`jobs::adguard`) reads each enabled source every minute; see `crate::adguard` for
//! what is read and what AdGuard Home does not report (`cache_hit_ratio`, `upstream_errors` are
//! null).

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::UiUser;
use crate::adguard;
use crate::api::multi_server::{blocking, ApiError, ErrorBody, JsonBody, Query, TAG};
use crate::api::AppState;
use crate::jobs::adguard::{CollectError, Collected};
use crate::store::{AdGuardSample, AdGuardSourceChange, AdGuardSourceRecord, NewAdGuardSource, StoreError, TopEntry};

/// An AdGuard Home source as listed; its password is never returned.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": 1, "name": "Home DNS", "admin_url": "https://dns.example.com:3000", "dns_url": "tls://dns.example.com",
    "username": "admin", "verify_tls": true, "enabled": true, "last_error": "", "last_success_ts": 1741860000,
    "last_collected_ts": 1741860000, "api_base": "https://dns.example.com:3000", "has_password": true,
    "version": "v0.107.52"
}))]
pub struct AdGuardSourceOut {
    pub id: i64,
    pub name: String,
    /// Base URL of the admin interface; the API is read under `/control/`.
    pub admin_url: String,
    /// Informational: where clients resolve.
    pub dns_url: String,
    /// HTTP Basic user (empty: none sent).
    pub username: String,
    /// Whether the admin interface's certificate is checked.
    pub verify_tls: bool,
    /// Whether the collector reads this source.
    pub enabled: bool,
    /// Why the last collection failed; empty after a good one.
    pub last_error: String,
    /// Unix seconds of the last good collection (0: never).
    pub last_success_ts: i64,
    /// Unix seconds of the last collection (0: never).
    pub last_collected_ts: i64,
    /// The URL the API last answered at (empty until it has).
    pub api_base: String,
    /// A password is stored (encrypted at rest).
    pub has_password: bool,
    /// AdGuard Home's version as last reported (empty until known).
    pub version: String,
}

impl From<AdGuardSourceRecord> for AdGuardSourceOut {
    fn from(r: AdGuardSourceRecord) -> Self {
        AdGuardSourceOut {
            id: r.id,
            name: r.name,
            admin_url: r.admin_url,
            dns_url: r.dns_url,
            username: r.username,
            verify_tls: r.verify_tls,
            enabled: r.enabled,
            last_error: r.last_error,
            last_success_ts: r.last_success_ts,
            last_collected_ts: r.last_collected_ts,
            api_base: r.api_base,
            has_password: r.has_password,
            version: r.version,
        }
    }
}

/// Body of `POST` (name and admin_url required) and `PUT` (every field optional: an absent
/// field, or an empty password, keeps the stored value) on `adguard/sources`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "name": "Home DNS", "admin_url": "https://dns.example.com:3000", "dns_url": "", "username": "admin",
    "password": "secret", "verify_tls": true, "enabled": true
}))]
pub struct AdGuardSourceIn {
    #[serde(default)]
    name: Option<String>,
    /// `http(s)://host[:port][/path]` of the admin interface.
    #[serde(default)]
    admin_url: Option<String>,
    #[serde(default)]
    dns_url: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// Default true. False accepts any certificate (self-signed admin interfaces).
    #[serde(default)]
    verify_tls: Option<bool>,
    /// Default true.
    #[serde(default)]
    enabled: Option<bool>,
}

/// The answer to a source change.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({ "status": "success", "id": 1 }))]
pub struct SourceSaved {
    /// Always `success`.
    pub status: String,
    /// The source's id.
    pub id: i64,
}

/// A trimmed text field; `None` when absent, `Some("")` when blank.
fn trimmed(v: &Option<String>) -> Option<String> {
    v.as_ref().map(|s| s.trim().to_string())
}

fn missing() -> ApiError {
    ApiError::BadRequest("Missing required fields".into())
}

fn admin_url(raw: &str) -> Result<String, ApiError> {
    let bad = |why: String| ApiError::BadRequest(format!("admin_url {:?}: {why}", crate::outbound::redact(raw)));
    let url = crate::outbound::parse_http_url(raw).map_err(bad)?;
    // The URL is listed back to every viewer; credentials belong in the sealed fields.
    if crate::outbound::redact(&url) != url {
        return Err(bad("put the credentials in username and password, not in the URL".into()));
    }
    Ok(url)
}

/// The `{source_id}` path segment: a positive integer, or a 400.
pub struct SourceIdPath(pub i64);

impl FromRequestParts<AppState> for SourceIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        raw.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(SourceIdPath)
            .ok_or_else(|| ApiError::BadRequest(format!("source_id must be a positive integer, got {raw:?}")))
    }
}

/// Every AdGuard Home source, by name.
#[utoipa::path(
    get,
    path = "/api/v1/adguard/sources",
    operation_id = "list_adguard_sources",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "Sources (without passwords)", body = Vec<AdGuardSourceOut>),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
    ),
)]
pub async fn list_sources(_: UiUser, State(state): State<AppState>) -> Result<Json<Vec<AdGuardSourceOut>>, ApiError> {
    let store = state.store.clone();
    Ok(Json(blocking(move || store.adguard_sources()).await?.into_iter().map(Into::into).collect()))
}

/// Adds an AdGuard Home source; the collector reads it from its next round (or `collect-now`).
#[utoipa::path(
    post,
    path = "/api/v1/adguard/sources",
    operation_id = "create_adguard_source",
    tag = TAG,
    security(("basic" = [])),
    request_body = AdGuardSourceIn,
    responses(
        (status = 200, description = "Added", body = SourceSaved),
        (status = 400, description = "`Missing required fields` (name, admin_url), or an admin_url that is not http(s)", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 409, description = "Another source has that name", body = ErrorBody),
    ),
)]
pub async fn create_source(
    _: UiUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<AdGuardSourceIn>,
) -> Result<Json<SourceSaved>, ApiError> {
    let (name, url) = (trimmed(&body.name).unwrap_or_default(), trimmed(&body.admin_url).unwrap_or_default());
    if name.is_empty() || url.is_empty() {
        return Err(missing());
    }
    let new = NewAdGuardSource {
        name,
        admin_url: admin_url(&url)?,
        dns_url: trimmed(&body.dns_url).unwrap_or_default(),
        username: trimmed(&body.username).unwrap_or_default(),
        // The UI's form sends an empty password when there is none.
        password: body.password.filter(|p| !p.is_empty()),
        verify_tls: body.verify_tls.unwrap_or(true),
        enabled: body.enabled.unwrap_or(true),
    };
    let store = state.store.clone();
    let created = blocking(move || store.create_adguard_source(&new)).await?;
    tracing::info!(source = %created.name, url = %crate::outbound::redact(&created.admin_url), "AdGuard source added");
    Ok(Json(SourceSaved { status: "success".into(), id: created.id }))
}

/// Changes an AdGuard Home source (the fields given; an empty password keeps the stored one).
#[utoipa::path(
    put,
    path = "/api/v1/adguard/sources/{source_id}",
    operation_id = "update_adguard_source",
    tag = TAG,
    security(("basic" = [])),
    params(("source_id" = i64, Path, description = "Source id")),
    request_body = AdGuardSourceIn,
    responses(
        (status = 200, description = "Changed", body = SourceSaved),
        (status = 400, description = "A blank name or admin_url, or an admin_url that is not http(s)", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 404, description = "No such source", body = ErrorBody),
        (status = 409, description = "Another source has that name", body = ErrorBody),
    ),
)]
pub async fn update_source(
    _: UiUser,
    State(state): State<AppState>,
    SourceIdPath(id): SourceIdPath,
    JsonBody(body): JsonBody<AdGuardSourceIn>,
) -> Result<Json<SourceSaved>, ApiError> {
    let name = trimmed(&body.name);
    let url = trimmed(&body.admin_url);
    if name.as_deref() == Some("") || url.as_deref() == Some("") {
        return Err(missing());
    }
    let change = AdGuardSourceChange {
        name,
        admin_url: url.as_deref().map(admin_url).transpose()?,
        dns_url: trimmed(&body.dns_url),
        username: trimmed(&body.username),
        password: body.password.filter(|p| !p.is_empty()),
        verify_tls: body.verify_tls,
        enabled: body.enabled,
    };
    let store = state.store.clone();
    let changed = blocking(move || store.update_adguard_source(id, &change)).await?;
    tracing::info!(source = %changed.name, enabled = changed.enabled, "AdGuard source changed");
    Ok(Json(SourceSaved { status: "success".into(), id }))
}

/// Deletes an AdGuard Home source and its samples.
#[utoipa::path(
    delete,
    path = "/api/v1/adguard/sources/{source_id}",
    operation_id = "delete_adguard_source",
    tag = TAG,
    security(("basic" = [])),
    params(("source_id" = i64, Path, description = "Source id")),
    responses(
        (status = 200, description = "Deleted", body = SourceSaved),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
        (status = 404, description = "No such source", body = ErrorBody),
    ),
)]
pub async fn delete_source(
    _: UiUser,
    State(state): State<AppState>,
    SourceIdPath(id): SourceIdPath,
) -> Result<Json<SourceSaved>, ApiError> {
    let store = state.store.clone();
    if !blocking(move || store.delete_adguard_source(id)).await? {
        return Err(ApiError::NotFound(format!("AdGuard source {id} not found")));
    }
    tracing::info!(source_id = id, "AdGuard source deleted");
    Ok(Json(SourceSaved { status: "success".into(), id }))
}

/// One entry of a top list.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopEntryOut {
    /// A domain, or a client (IP or name).
    pub name: String,
    pub count: u64,
}

fn top(list: &[TopEntry]) -> Vec<TopEntryOut> {
    list.iter().map(|e| TopEntryOut { name: e.name.clone(), count: e.count }).collect()
}

/// One source's latest figures. Counts cover AdGuard Home's statistics window (24 h by default).
#[derive(Debug, Serialize, ToSchema)]
pub struct AdGuardSnapshot {
    pub source_id: i64,
    pub source_name: String,
    pub admin_url: String,
    pub dns_url: String,
    pub api_base: String,
    /// Unix seconds of the collection (0: not collected yet).
    pub ts: i64,
    /// The API answered and its DNS server runs.
    pub available: bool,
    /// Why not; empty when available.
    pub error: String,
    pub queries_total: u64,
    /// Blocked by filters.
    pub blocked_total: u64,
    /// Percent of the queries.
    pub blocked_rate: f64,
    /// Null: AdGuard Home's stats API has no cache figures.
    pub cache_hit_ratio: Option<f64>,
    /// Average processing time, ms (null when unavailable).
    pub avg_latency_ms: Option<f64>,
    /// Null: AdGuard Home's stats API has no upstream error count.
    pub upstream_errors: Option<u64>,
    /// Largest first, at most 10.
    pub top_blocked_domains: Vec<TopEntryOut>,
    /// Largest first, at most 10.
    pub top_clients: Vec<TopEntryOut>,
}

fn snapshot(source: &AdGuardSourceRecord, s: &AdGuardSample) -> AdGuardSnapshot {
    AdGuardSnapshot {
        source_id: source.id,
        source_name: source.name.clone(),
        admin_url: source.admin_url.clone(),
        dns_url: source.dns_url.clone(),
        api_base: if s.available { source.admin_url.clone() } else { source.api_base.clone() },
        ts: s.ts,
        available: s.available,
        error: s.error.clone(),
        queries_total: s.queries_total,
        blocked_total: s.blocked_total,
        blocked_rate: adguard::blocked_rate(s.queries_total, s.blocked_total),
        cache_hit_ratio: s.cache_hit_ratio,
        avg_latency_ms: s.avg_latency_ms,
        upstream_errors: s.upstream_errors,
        top_blocked_domains: top(&s.top_blocked_domains),
        top_clients: top(&s.top_clients),
    }
}

/// `POST /api/v1/adguard/collect-now` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectedNow {
    /// Always `success` (a source that failed says so in its snapshot).
    pub status: String,
    pub count: usize,
    /// Every enabled source, by name.
    pub sources: Vec<AdGuardSnapshot>,
}

/// Reads every enabled source now, stores the samples and returns them.
#[utoipa::path(
    post,
    path = "/api/v1/adguard/collect-now",
    operation_id = "collect_adguard_now",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "One snapshot per enabled source", body = CollectedNow),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
    ),
)]
pub async fn collect_now(_: UiUser, State(state): State<AppState>) -> Result<Json<CollectedNow>, ApiError> {
    let collected = state.adguard.collect_now().await.map_err(|e| match e {
        CollectError::Store(s) => ApiError::from(s),
        other => ApiError::Internal(other.to_string()),
    })?;
    let sources: Vec<AdGuardSnapshot> =
        collected.iter().map(|Collected { source, sample, .. }| snapshot(source, sample)).collect();
    Ok(Json(CollectedNow { status: "success".into(), count: sources.len(), sources }))
}

/// The enabled sources with their latest samples (a source not collected yet shows as
/// unavailable).
pub(crate) fn latest(store: &crate::store::Store) -> Result<Vec<(AdGuardSourceRecord, AdGuardSample)>, StoreError> {
    let mut samples: std::collections::HashMap<i64, AdGuardSample> =
        store.latest_adguard_samples()?.into_iter().map(|s| (s.source_id, s)).collect();
    Ok(store
        .adguard_sources()?
        .into_iter()
        .filter(|s| s.enabled)
        .map(|source| {
            let sample = samples
                .remove(&source.id)
                .unwrap_or_else(|| adguard::unavailable(source.id, 0, "not collected yet".into()));
            (source, sample)
        })
        .collect())
}

/// All sources at a glance: what answered adds up; rates are percentages.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdGuardSummary {
    /// Enabled sources.
    pub sources_total: usize,
    /// Of those, the ones whose latest collection succeeded.
    pub sources_online: usize,
    pub queries_total: u64,
    pub blocked_total: u64,
    /// Percent of all their queries that were blocked.
    pub blocked_rate: f64,
    /// Mean of their average latencies, ms (null when none answered).
    pub avg_latency_ms: Option<f64>,
    /// Null: AdGuard Home does not report cache hits.
    pub cache_hit_ratio: Option<f64>,
    /// Null: AdGuard Home does not report upstream errors.
    pub upstream_errors: Option<u64>,
}

impl From<adguard::Summary> for AdGuardSummary {
    fn from(s: adguard::Summary) -> Self {
        AdGuardSummary {
            sources_total: s.sources_total,
            sources_online: s.sources_online,
            queries_total: s.queries_total,
            blocked_total: s.blocked_total,
            blocked_rate: s.blocked_rate,
            avg_latency_ms: s.avg_latency_ms,
            cache_hit_ratio: s.cache_hit_ratio,
            upstream_errors: s.upstream_errors,
        }
    }
}

/// `GET /api/v1/adguard/overview` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdGuardOverview {
    /// Now, Unix seconds.
    pub ts: i64,
    /// Every enabled source, by name.
    pub sources: Vec<AdGuardSnapshot>,
    pub summary: AdGuardSummary,
}

/// The latest figures of every enabled source, and their sum.
#[utoipa::path(
    get,
    path = "/api/v1/adguard/overview",
    operation_id = "adguard_overview",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "Latest figures", body = AdGuardOverview),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
    ),
)]
pub async fn overview(_: UiUser, State(state): State<AppState>) -> Result<Json<AdGuardOverview>, ApiError> {
    let store = state.store.clone();
    let latest = blocking(move || latest(&store)).await?;
    let summary = adguard::summarize(latest.iter().map(|(_, s)| s)).into();
    let sources = latest.iter().map(|(source, sample)| snapshot(source, sample)).collect();
    Ok(Json(AdGuardOverview { ts: OffsetDateTime::now_utc().unix_timestamp(), sources, summary }))
}

/// `?range_sec=&bucket_sec=&source_id=` of the AdGuard history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdGuardHistoryQuery {
    /// How far back, seconds (60 to 2,592,000; default 86,400).
    range_sec: Option<i64>,
    /// Width of a bucket, seconds (1 to 21,600; default 300). Only buckets holding a sample are
    /// listed, so a narrow bucket costs nothing more than the samples themselves.
    bucket_sec: Option<i64>,
    /// Only this source.
    source_id: Option<i64>,
}

/// One source in one bucket: its newest sample there.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdGuardHistoryPoint {
    /// Start of the bucket, Unix seconds.
    pub ts: i64,
    pub available: bool,
    pub queries_total: u64,
    pub blocked_total: u64,
    /// Percent.
    pub blocked_rate: f64,
    pub cache_hit_ratio: Option<f64>,
    pub avg_latency_ms: Option<f64>,
    pub upstream_errors: Option<u64>,
}

/// One source over time.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdGuardSeries {
    pub source_id: i64,
    pub source_name: String,
    /// One entry per bucket; null where the source has no sample.
    pub points: Vec<Option<AdGuardHistoryPoint>>,
}

/// Growth over the range (AdGuard Home's counts cover a sliding window: a fall counts as none).
#[derive(Debug, Serialize, ToSchema)]
pub struct AdGuardHistorySummary {
    pub queries_delta: u64,
    pub blocked_delta: u64,
    /// `queries_delta` over the range.
    pub queries_per_sec: f64,
    pub blocked_per_sec: f64,
}

/// `GET /api/v1/adguard/history` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdGuardHistory {
    /// Now, Unix seconds.
    pub ts: i64,
    pub range_sec: i64,
    pub bucket_sec: i64,
    /// Bucket starts, Unix seconds, ascending.
    pub buckets: Vec<i64>,
    /// By source name.
    pub series: Vec<AdGuardSeries>,
    pub summary: AdGuardHistorySummary,
}

/// The sources' samples on a common time axis, sampled every minute and kept 30 days.
#[utoipa::path(
    get,
    path = "/api/v1/adguard/history",
    operation_id = "adguard_history",
    tag = TAG,
    security(("basic" = [])),
    params(AdGuardHistoryQuery),
    responses(
        (status = 200, description = "Buckets and one series per source", body = AdGuardHistory),
        (status = 400, description = "A malformed parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
    ),
)]
pub async fn history(
    _: UiUser,
    State(state): State<AppState>,
    Query(q): Query<AdGuardHistoryQuery>,
) -> Result<Json<AdGuardHistory>, ApiError> {
    // Clamped rather than refused, as the original manager does.
    let range_sec = q.range_sec.unwrap_or(86_400).clamp(60, 2_592_000);
    let bucket_sec = q.bucket_sec.unwrap_or(300).clamp(1, 21_600);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let store = state.store.clone();
    let (sources, samples) = blocking(move || {
        Ok::<_, StoreError>((store.adguard_sources()?, store.adguard_samples_since(now - range_sec, q.source_id)?))
    })
    .await?;
    let bucketed = adguard::bucketize(&samples, bucket_sec);
    let name = |id: i64| sources.iter().find(|s| s.id == id).map(|s| s.name.clone()).unwrap_or_default();
    let mut series: Vec<AdGuardSeries> = bucketed
        .series
        .into_iter()
        .map(|(source_id, points)| AdGuardSeries {
            source_id,
            source_name: name(source_id),
            points: points
                .into_iter()
                .zip(&bucketed.buckets)
                .map(|(p, bucket)| {
                    p.map(|s| AdGuardHistoryPoint {
                        ts: *bucket,
                        available: s.available,
                        queries_total: s.queries_total,
                        blocked_total: s.blocked_total,
                        blocked_rate: adguard::blocked_rate(s.queries_total, s.blocked_total),
                        cache_hit_ratio: s.cache_hit_ratio,
                        avg_latency_ms: s.avg_latency_ms,
                        upstream_errors: s.upstream_errors,
                    })
                })
                .collect(),
        })
        .collect();
    series.sort_by(|a, b| {
        a.source_name.to_lowercase().cmp(&b.source_name.to_lowercase()).then(a.source_id.cmp(&b.source_id))
    });
    let per_sec = |delta: u64| (delta as f64 / range_sec as f64 * 10_000.0).round() / 10_000.0;
    Ok(Json(AdGuardHistory {
        ts: now,
        range_sec,
        bucket_sec,
        buckets: bucketed.buckets,
        series,
        summary: AdGuardHistorySummary {
            queries_delta: bucketed.queries_delta,
            blocked_delta: bucketed.blocked_delta,
            queries_per_sec: per_sec(bucketed.queries_delta),
            blocked_per_sec: per_sec(bucketed.blocked_delta),
        },
    }))
}
