//! `/api/v1/sub/{email}` (public) and `/api/v1/emails`: subscriptions gather one email's share
//! links across the fleet, each pointing at its node's public address.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use flotilla_protocol::NodeId;
use serde::Serialize;
use utoipa::ToSchema;

use super::{node_address, now_ms, ApiError, BasicUser, ErrorBody, TAG};
use crate::api::AppState;
use crate::proxy;
use crate::sharelinks::{self, LinkClient, LinkInbound};
use crate::store::{ClientRecord, InboundRecord};

/// Hours clients wait between subscription refreshes.
const UPDATE_INTERVAL_HOURS: &str = "12";

/// Get an email's subscription (public, no authentication).
///
/// The share links of all its clients across the fleet, one per line, base64-encoded, with the
/// usual subscription headers.
#[utoipa::path(
    get,
    path = "/api/v1/sub/{email}",
    operation_id = "subscription",
    tag = TAG,
    params(("email" = String, Path, description = "The clients' email (any case)")),
    responses(
        (
            status = 200,
            description = "Base64 of the share links (`vless://…`, `vmess://…`, …), one per line; empty when \
                           every client is disabled, expired or depleted",
            body = String,
            content_type = "text/plain",
            headers(
                ("subscription-userinfo" = String, description = "`upload=…; download=…; total=…; expire=…` (bytes; Unix seconds)"),
                ("profile-update-interval" = String, description = "Hours between refreshes"),
                ("profile-title" = String, description = "`base64:` and the email in base64"),
            ),
            example = json!("dmxlc3M6Ly81NzgzYTNlNy1lMzczLTUxY2QtODY0Mi1jODM3ODJiODA3YzVAMTIzLjQ1LjY3Ljg5OjQ0Mz90eXBlPXRjcCZzZWN1cml0eT1ub25lI01haW4lMjBWTEVTUw=="),
        ),
        (status = 404, description = "No client has this email", body = ErrorBody),
    ),
)]
pub async fn subscription(State(state): State<AppState>, Path(email): Path<String>) -> Result<Response, ApiError> {
    let clients = state.store.clients_with_email(&email)?;
    if clients.is_empty() {
        return Err(ApiError::NotFound(format!("no client with email {email:?}")));
    }
    let title = clients[0].email.clone();
    subscription_of(&state, &clients, &title)
}

/// One subscription for every client whose email contains `identifier` (any case), as the
/// original manager's grouped link (shown by its web UI).
#[utoipa::path(
    get,
    path = "/api/v1/sub-grouped/{identifier}",
    operation_id = "grouped_subscription",
    tag = TAG,
    params(("identifier" = String, Path, description = "Part of the clients' emails (any case)")),
    responses(
        (status = 200, description = "Base64 of the share links, one per line", body = String, content_type = "text/plain"),
        (status = 404, description = "No client's email contains it", body = ErrorBody),
    ),
)]
pub async fn grouped(State(state): State<AppState>, Path(identifier): Path<String>) -> Result<Response, ApiError> {
    let clients = state.store.clients(None, Some(&identifier)).map_err(ApiError::from)?;
    if identifier.trim().is_empty() || clients.is_empty() {
        return Err(ApiError::NotFound(format!("no client's email contains {identifier:?}")));
    }
    subscription_of(&state, &clients, &identifier)
}

/// The subscription body and headers of `clients`; fetches are counted per email.
fn subscription_of(state: &AppState, clients: &[ClientRecord], title: &str) -> Result<Response, ApiError> {
    let nodes: HashMap<NodeId, _> = state.store.nodes()?.into_iter().map(|n| (n.id, n)).collect();
    let mut inbounds: HashMap<(NodeId, i64), InboundRecord> = HashMap::new();
    for node in clients.iter().map(|c| c.node_id).collect::<BTreeSet<_>>() {
        for i in state.store.inbounds(Some(node))? {
            inbounds.insert((i.node_id, i.id), i);
        }
    }
    let now = now_ms();
    let (mut up, mut down, mut total, mut expire) = (0u64, 0u64, 0u64, 0i64);
    let mut links = vec![];
    for c in clients {
        up += c.up;
        down += c.down;
        total = total.saturating_add(c.total_bytes);
        if c.expiry_ms > 0 {
            expire = if expire == 0 { c.expiry_ms } else { expire.min(c.expiry_ms) };
        }
        if !c.enable || c.expired(now) || c.depleted() {
            continue;
        }
        let (Some(node), Some(inbound)) = (nodes.get(&c.node_id), inbounds.get(&(c.node_id, c.inbound_id))) else {
            continue;
        };
        if !inbound.enable {
            continue;
        }
        let Some(host) = node_address(node, &state.fleet.live(node.id)) else { continue };
        let settings = proxy::stored_object(&inbound.settings);
        let stream = proxy::stored_object(&inbound.stream_settings);
        let remark = if inbound.remark.is_empty() { node.name.as_str() } else { inbound.remark.as_str() };
        let link_inbound = LinkInbound {
            protocol: &inbound.protocol,
            port: inbound.port,
            remark,
            settings: &settings,
            stream_settings: &stream,
        };
        let link_client = LinkClient { email: &c.email, secret: &c.secret, flow: &c.flow };
        if let Some(link) = sharelinks::share_link(&host, &link_inbound, &link_client) {
            links.push(link);
        }
    }
    // A quota of 0 on any client means unlimited for the subscription as a whole.
    if clients.iter().any(|c| c.total_bytes == 0) {
        total = 0;
    }
    let fetched: BTreeSet<String> = clients.iter().map(|c| c.email.to_lowercase()).collect();
    for email in &fetched {
        if let Err(e) = state.store.record_sub_fetch(email) {
            tracing::warn!(error = %e, "cannot count a subscription fetch");
        }
    }
    let mut headers = HeaderMap::new();
    let set = |h: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(&mut headers, "subscription-userinfo", sharelinks::userinfo_header(up, down, total, expire / 1000));
    set(&mut headers, "profile-update-interval", UPDATE_INTERVAL_HOURS.into());
    set(
        &mut headers,
        "profile-title",
        format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(title.as_bytes())),
    );
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    Ok((StatusCode::OK, headers, sharelinks::subscription_body(&links)).into_response())
}

/// How often an email's subscription was fetched.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubFetches {
    pub count: u64,
    /// Last fetch, UTC, `DD.MM HH:MM`.
    pub last: String,
}

/// `GET /api/v1/emails` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Emails {
    /// Every client email (first spelling seen), sorted without regard to case.
    pub emails: Vec<String>,
    /// Subscription fetches by email; emails never fetched are absent.
    pub stats: BTreeMap<String, SubFetches>,
}

/// List every client email, and how often each one's subscription was fetched.
#[utoipa::path(
    get,
    path = "/api/v1/emails",
    operation_id = "list_emails",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (
            status = 200, description = "Emails and subscription fetches", body = Emails,
            example = json!({
                "emails": ["user1@example.com", "user2@example.com"],
                "stats": { "user1@example.com": { "count": 5, "last": "20.02 22:30" } }
            }),
        ),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
    ),
)]
pub async fn emails(_: BasicUser, State(state): State<AppState>) -> Result<Json<Emails>, ApiError> {
    let mut emails: Vec<String> = vec![];
    let mut seen = BTreeSet::new();
    for c in state.store.clients(None, None)? {
        if seen.insert(c.email.to_lowercase()) {
            emails.push(c.email);
        }
    }
    emails.sort_by_key(|e| e.to_lowercase());
    let fetches = state.store.sub_fetches()?;
    let format = time::macros::format_description!("[day].[month] [hour]:[minute]");
    let stats = emails
        .iter()
        .filter_map(|e| {
            let (count, last) = fetches.get(&e.to_lowercase())?;
            Some((e.clone(), SubFetches { count: *count, last: last.format(&format).unwrap_or_default() }))
        })
        .collect();
    Ok(Json(Emails { emails, stats }))
}
