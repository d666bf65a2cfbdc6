//! One handler per endpoint of the document. Each checks for a core first (503 without one),
//! then its parameters (400 naming the parameter), then asks the core.

use std::fmt::Write as _;

use axum::extract::multipart::MultipartRejection;
use axum::extract::Multipart;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use flotilla_protocol::proxy::ClientSpec;
use flotilla_protocol::users::{ClientLifecycle, DnsStatsQuery, StatsReset, UserChange, UserStat};
use flotilla_protocol::v2ray_stat::{
    format_hour_date, parse_date_offset, parse_users_file, render_dns_stats, render_stats, validate_credential,
    validate_inbound_tag, validate_user_name, ClientColumn, DateOffset, SortOrder, UserJson, UsersFileLine,
};

use super::error::text;
use super::params::Params;
use super::UserDirectory;
use super::{ApiError, AppState};
use crate::drivers::core::UserChangeError;

/// `dns_stats` rows when `count` is not given (the original's default).
const DEFAULT_DNS_COUNT: u32 = 20;
/// Highest `lim_ip` (the original's range is 0..=100; 0 = no limit).
const MAX_LIM_IP: u32 = 100;
/// Highest `renew`, in days: a century is renewal enough.
const MAX_RENEW_DAYS: u32 = 36_500;
/// Most users one `bulk_add_users` file may add (one core change covers them all).
const MAX_BULK_USERS: usize = 10_000;

type ApiResult = Result<Response, ApiError>;

fn ok(body: impl Into<String>) -> ApiResult {
    Ok(text(StatusCode::OK, body))
}

/// The one result of a one-change `change_users` call.
fn single(results: Vec<Result<(), UserChangeError>>) -> Result<(), ApiError> {
    match results.into_iter().next() {
        Some(result) => result.map_err(ApiError::from),
        None => Err(ApiError::Internal("the proxy core answered no result for the change".into())),
    }
}

/// `user` checked: present and a valid name.
fn user_param(params: &Params) -> Result<&str, ApiError> {
    let user = params.required("user")?;
    validate_user_name(user).map_err(|why| ApiError::BadRequest(format!("user: {why}")))?;
    Ok(user)
}

/// The user named `name` (matched as the cores match: ASCII case-insensitively), or a 404.
async fn find_user(core: &dyn UserDirectory, name: &str) -> Result<UserStat, ApiError> {
    core.user_stats()
        .await
        .users
        .into_iter()
        .find(|u| u.email.eq_ignore_ascii_case(name))
        .ok_or_else(|| ApiError::NotFound(format!("user '{name}' not found")))
}

/// Go's `strconv.ParseBool`, which the original uses for `enabled`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// An optional whole number in `0..=max`, `default` when missing.
fn number_param(params: &Params, key: &str, default: u32, max: u32, what: &str) -> Result<u32, ApiError> {
    let Some(raw) = params.get(key) else { return Ok(default) };
    raw.trim().parse::<u32>().ok().filter(|n| *n <= max).ok_or_else(|| {
        ApiError::BadRequest(format!("{key} must be a whole number from 0 to {max} ({what}); got '{raw}'"))
    })
}

/// `GET /`: a one-line banner, as the original's `Answer()`.
pub(super) async fn banner() -> Response {
    let version = env!("CARGO_PKG_VERSION");
    let mut response = text(StatusCode::OK, format!("flotilla-agent / {version} (v2ray-stat API)"));
    if let Ok(server) = HeaderValue::from_str(&format!("flotilla-agent/{version}")) {
        response.headers_mut().insert(header::SERVER, server);
    }
    response
}

/// Any other path.
pub(super) async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("not found: {}", uri.path()))
}

/// `GET /api/v1/users`: every user as the original's JSON array.
pub(super) async fn users(st: AppState) -> ApiResult {
    let core = st.core()?;
    let users: Vec<UserJson> = core.user_stats().await.users.iter().map(UserJson::from).collect();
    let mut body = serde_json::to_string(&users).map_err(|e| ApiError::Internal(format!("users JSON: {e}")))?;
    // Go's json.Encoder ends the document with a newline.
    body.push('\n');
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"))], body).into_response())
}

/// `GET /api/v1/stats?sort_by=&sort_order=`: the server and client tables.
pub(super) async fn stats(st: AppState, params: Params) -> ApiResult {
    let core = st.core()?;
    let sort_by = params
        .get("sort_by")
        .map(|s| {
            ClientColumn::from_key(s).ok_or_else(|| {
                ApiError::BadRequest(format!("invalid sort_by '{s}': must be one of {}", ClientColumn::allowed()))
            })
        })
        .transpose()?;
    let sort_order = params
        .get("sort_order")
        .map(|s| {
            SortOrder::parse(s)
                .ok_or_else(|| ApiError::BadRequest(format!("invalid sort_order '{s}': must be ASC or DESC")))
        })
        .transpose()?;
    // Each parameter overrides its half of the configured client sort, as in the original.
    let client_sort = (sort_by.is_some() || sort_order.is_some()).then(|| {
        let (by, order) = st.columns.client_sort;
        (sort_by.unwrap_or(by), sort_order.unwrap_or(order))
    });
    let stats = core.user_stats().await;
    ok(render_stats(&stats, &st.columns, client_sort, st.clock.now_ms()))
}

/// `GET /api/v1/dns_stats?user=&count=`: a user's most frequent destinations.
pub(super) async fn dns_stats(st: AppState, params: Params) -> ApiResult {
    let core = st.core()?;
    let user = user_param(&params)?;
    let count = match params.get("count") {
        None => DEFAULT_DNS_COUNT,
        Some(raw) => raw.trim().parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "count must be a positive whole number (default {DEFAULT_DNS_COUNT}); got '{raw}'"
            ))
        })?,
    };
    let mut rows = core.dns_stats(&DnsStatsQuery { user: user.to_string(), count }).await;
    // The original's ORDER BY count DESC LIMIT count, whatever order the core answered in.
    rows.sort_by_key(|r| std::cmp::Reverse(r.count));
    rows.truncate(count as usize);
    ok(render_dns_stats(&rows))
}

/// `POST /api/v1/delete_dns_stats`.
pub(super) async fn delete_dns_stats(st: AppState) -> ApiResult {
    st.core()?.reset_stats(StatsReset::Dns).await;
    tracing::info!("local API: DNS statistics deleted");
    ok("DNS statistics deleted")
}

/// `POST /api/v1/reset_traffic_stats`: totals of the traffic sources.
pub(super) async fn reset_traffic_stats(st: AppState) -> ApiResult {
    st.core()?.reset_stats(StatsReset::Sources).await;
    tracing::info!("local API: traffic source totals reset");
    ok("Traffic totals of the sources (inbounds and outbounds) reset")
}

/// `POST /api/v1/reset_clients_stats`: totals of every client.
pub(super) async fn reset_clients_stats(st: AppState) -> ApiResult {
    let core = st.core()?;
    single(core.change_users(vec![UserChange::ResetTraffic { email: None }]).await)?;
    tracing::info!("local API: traffic of every client reset");
    ok("Traffic totals of all clients reset")
}

/// `POST /api/v1/reset_traffic`: session counters and rates.
pub(super) async fn reset_traffic(st: AppState) -> ApiResult {
    st.core()?.reset_stats(StatsReset::Sessions).await;
    tracing::info!("local API: session traffic counters reset");
    ok("Session traffic counters reset")
}

/// A user to add, with what was defaulted.
struct NewUser {
    user: String,
    credential: String,
    generated: bool,
    inbound_tag: String,
}

impl NewUser {
    fn new(user: &str, credential: Option<&str>, inbound_tag: Option<&str>, default_tag: &str) -> NewUser {
        let generated = credential.is_none();
        NewUser {
            user: user.to_string(),
            credential: credential.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string),
            generated,
            inbound_tag: inbound_tag.unwrap_or(default_tag).to_string(),
        }
    }

    fn change(&self, now_ms: i64) -> UserChange {
        UserChange::Add {
            client: ClientSpec {
                inbound_tag: self.inbound_tag.clone(),
                email: self.user.clone(),
                secret: self.credential.clone(),
                flow: String::new(),
                enable: true,
                expiry_ms: 0,
                total_bytes: 0,
                reset_generation: 0,
            },
            lifecycle: ClientLifecycle { email: self.user.clone(), limit_ip: 0, renew_days: 0, created_ms: now_ms },
        }
    }

    /// "user1 to vless-in", plus the credential when it was generated (else nobody knows it).
    fn describe(&self) -> String {
        let mut s = format!("'{}' to inbound '{}'", self.user, self.inbound_tag);
        if self.generated {
            let _ = write!(s, ", credential {} (generated)", self.credential);
        }
        s
    }
}

/// `POST /api/v1/add_user` with `user`, optional `credential` (generated UUID when missing) and
/// optional `inboundTag` (the configured default when missing).
pub(super) async fn add_user(st: AppState, params: Params) -> ApiResult {
    let core = st.core()?;
    let user = user_param(&params)?;
    let credential = params.get("credential");
    if let Some(c) = credential {
        validate_credential(c).map_err(|why| ApiError::BadRequest(format!("credential: {why}")))?;
    }
    let tag = params.get("inboundTag");
    if let Some(t) = tag {
        validate_inbound_tag(t).map_err(ApiError::BadRequest)?;
    }
    let new = NewUser::new(user, credential, tag, &st.default_inbound_tag);
    single(core.change_users(vec![new.change(st.clock.now_ms())]).await)?;
    tracing::info!(user = %new.user, inbound = %new.inbound_tag, "local API: user added");
    ok(format!("User {} added", new.describe()))
}

/// `POST /api/v1/bulk_add_users`: the multipart file `users_file`, added in one core change,
/// answered with one line per file line and a summary.
pub(super) async fn bulk_add_users(st: AppState, multipart: Result<Multipart, MultipartRejection>) -> ApiResult {
    let core = st.core()?;
    let how = "send the file as multipart/form-data field users_file (curl -F \"users_file=@users.txt\")";
    let mut multipart = multipart.map_err(|e| ApiError::BadRequest(format!("{e}: {how}")))?;
    let mut file = None;
    while let Some(field) =
        multipart.next_field().await.map_err(|e| ApiError::BadRequest(format!("multipart body: {e}")))?
    {
        if field.name() == Some("users_file") {
            let bytes = field.bytes().await.map_err(|e| ApiError::BadRequest(format!("users_file: {e}")))?;
            file = Some(bytes);
            break;
        }
    }
    let file = file.ok_or_else(|| ApiError::BadRequest(format!("users_file is required: {how}")))?;
    let content =
        std::str::from_utf8(&file).map_err(|_| ApiError::BadRequest("users_file is not UTF-8 text".into()))?;
    let lines = parse_users_file(content);
    if lines.is_empty() {
        return Err(ApiError::BadRequest("users_file has no users (only blank or comment lines)".into()));
    }
    let valid = lines.iter().filter(|l| matches!(l, UsersFileLine::Ok { .. })).count();
    if valid > MAX_BULK_USERS {
        return Err(ApiError::BadRequest(format!("users_file has {valid} users; at most {MAX_BULK_USERS} at once")));
    }

    // Every valid line becomes one change of a single core call, so the core changes once.
    let now = st.clock.now_ms();
    let mut adds = Vec::new();
    for line in &lines {
        if let UsersFileLine::Ok { line_no, user, credential, inbound_tag } = line {
            let new = NewUser::new(user, credential.as_deref(), inbound_tag.as_deref(), &st.default_inbound_tag);
            adds.push((*line_no, new));
        }
    }
    let mut results = if adds.is_empty() {
        Vec::new()
    } else {
        core.change_users(adds.iter().map(|(_, n)| n.change(now)).collect()).await
    }
    .into_iter();

    let mut report = String::new();
    let (mut added, mut rejected, mut no_core, mut store) = (0usize, 0usize, 0usize, 0usize);
    let mut adds = adds.into_iter().peekable();
    for line in &lines {
        match line {
            UsersFileLine::Err { line_no, text, why } => {
                rejected += 1;
                let _ = writeln!(report, "line {line_no}: rejected '{text}': {why}");
            }
            UsersFileLine::Ok { line_no, .. } => {
                let Some((_, new)) = adds.next_if(|(n, _)| n == line_no) else { continue };
                match results.next().unwrap_or(Err(UserChangeError::Store("no result from the proxy core".into()))) {
                    Ok(()) => {
                        added += 1;
                        let _ = writeln!(report, "line {line_no}: added {}", new.describe());
                    }
                    Err(e) => {
                        rejected += 1;
                        no_core += usize::from(e == UserChangeError::NoCore);
                        store += usize::from(matches!(e, UserChangeError::Store(_)));
                        let _ = writeln!(report, "line {line_no}: rejected '{}': {e}", new.user);
                    }
                }
            }
        }
    }
    let _ = writeln!(report, "{added} added, {rejected} rejected");
    tracing::info!(added, rejected, "local API: bulk add");
    // Something added: 200 with the report. Nothing: say why in the status too.
    let status = if added > 0 {
        StatusCode::OK
    } else if no_core > 0 && no_core == rejected {
        StatusCode::SERVICE_UNAVAILABLE
    } else if store > 0 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(text(status, report))
}

/// `DELETE /api/v1/delete_user?user=&inboundTag=`: `inboundTag`, when given, must be the
/// user's inbound.
pub(super) async fn delete_user(st: AppState, params: Params) -> ApiResult {
    let core = st.core()?;
    let user = user_param(&params)?;
    let tag = params.get("inboundTag");
    if let Some(t) = tag {
        validate_inbound_tag(t).map_err(ApiError::BadRequest)?;
    }
    let found = find_user(core.as_ref(), user).await?;
    if let Some(t) = tag.filter(|t| *t != found.inbound_tag) {
        return Err(ApiError::NotFound(format!(
            "user '{user}' not found in inbound '{t}' (the user is in inbound '{}')",
            found.inbound_tag
        )));
    }
    single(core.change_users(vec![UserChange::Delete { email: found.email.clone() }]).await)?;
    tracing::info!(user = %found.email, inbound = %found.inbound_tag, "local API: user deleted");
    ok(format!("User '{}' deleted from inbound '{}'", found.email, found.inbound_tag))
}

/// `PATCH /api/v1/set_enabled` with `user` and `enabled` (true when missing, as the original).
pub(super) async fn set_enabled(st: AppState, params: Params) -> ApiResult {
    let core = st.core()?;
    let user = user_param(&params)?;
    let enable = match params.get("enabled") {
        None => true,
        Some(raw) => parse_bool(raw)
            .ok_or_else(|| ApiError::BadRequest(format!("enabled must be true or false; got '{raw}'")))?,
    };
    single(core.change_users(vec![UserChange::SetEnabled { email: user.to_string(), enable }]).await)?;
    let word = if enable { "enabled" } else { "disabled" };
    tracing::info!(user, "local API: user {word}");
    ok(format!("User '{user}' {word}"))
}

/// `PATCH /api/v1/update_lim_ip` with `user` and `lim_ip` (0 = no limit when missing).
pub(super) async fn update_lim_ip(st: AppState, params: Params) -> ApiResult {
    let core = st.core()?;
    let user = user_param(&params)?;
    let limit_ip = number_param(&params, "lim_ip", 0, MAX_LIM_IP, "0 = no limit")?;
    single(core.change_users(vec![UserChange::SetLimitIp { email: user.to_string(), limit_ip }]).await)?;
    tracing::info!(user, limit_ip, "local API: IP limit set");
    ok(format!("IP limit of '{user}' set to {limit_ip}"))
}

/// `PATCH /api/v1/adjust_date` with `user` and `sub_end` (`+days[:hours]`, `-days[:hours]`, `0`
/// for no end): moves the current end, or now when there is none.
pub(super) async fn adjust_date(st: AppState, params: Params) -> ApiResult {
    let core = st.core()?;
    let user = user_param(&params)?;
    let raw = params.get("sub_end").ok_or_else(|| {
        ApiError::BadRequest("sub_end is required: an offset like +30:0 (days:hours), -7, or 0 for no end".into())
    })?;
    let offset = parse_date_offset(raw).map_err(ApiError::BadRequest)?;
    let found = find_user(core.as_ref(), user).await?;
    let base = if found.sub_end_ms > 0 { found.sub_end_ms } else { st.clock.now_ms() };
    let expiry_ms = offset.apply(base);
    single(core.change_users(vec![UserChange::SetExpiry { email: found.email.clone(), expiry_ms }]).await)?;
    tracing::info!(user = %found.email, %offset, expiry_ms, "local API: subscription end moved");
    match offset {
        DateOffset::Never => ok(format!("Subscription of '{}' now has no end date", found.email)),
        DateOffset::Shift { .. } => ok(format!(
            "Subscription date for '{}' updated with sub_end {offset}: ends {} UTC",
            found.email,
            format_hour_date(expiry_ms)
        )),
    }
}

/// `PATCH /api/v1/update_renew` with `user` and `renew` (days; 0 = no renewal when missing).
pub(super) async fn update_renew(st: AppState, params: Params) -> ApiResult {
    let core = st.core()?;
    let user = user_param(&params)?;
    let renew_days = number_param(&params, "renew", 0, MAX_RENEW_DAYS, "days; 0 = no renewal")?;
    single(core.change_users(vec![UserChange::SetRenew { email: user.to_string(), renew_days }]).await)?;
    tracing::info!(user, renew_days, "local API: auto-renewal set");
    ok(format!("Auto-renewal of '{user}' set to {renew_days} days"))
}
