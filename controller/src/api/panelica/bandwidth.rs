//! Bandwidth (`bandwidth:read`): per node interface totals of a month, from the byte counters
//! the node's agent adds up in its store (so a reboot does not reset a month). Per-domain figures
//! come with vhosts (`domains` is empty until then); accounts do not exist yet either, so
//! `/v1/bandwidth/accounts/{id}` answers the node's month total with a `note` saying so.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use flotilla_protocol::bandwidth::{BandwidthQuery, BandwidthReport};
use flotilla_protocol::codec;
use flotilla_protocol::rpc::{RequestKind, RpcError};
use flotilla_protocol::NodeId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::node::{self, NodeChoice};
use super::{ok, ApiError};
use crate::api::AppState;
use crate::fleet::FleetError;
use crate::store::iso_ms;

const CALL: Duration = Duration::from_secs(15);

/// Query of the bandwidth routes.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BandwidthParams {
    pub node_id: Option<i64>,
    /// Only `monthly` (the document's one period).
    pub period: Option<String>,
    /// `YYYY-MM`; default: this month (UTC).
    pub month: Option<String>,
}

fn valid_month(month: &str) -> bool {
    let b = month.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit)
        && matches!(month[5..].parse::<u8>(), Ok(1..=12))
}

fn allow(caller: &Caller) -> Result<(), ApiError> {
    caller.require("bandwidth:read")?;
    if caller.scope_user().is_some() {
        return Err(ApiError::forbidden(
            "FORBIDDEN",
            "server bandwidth is served to administrators' keys only until accounts exist",
        ));
    }
    Ok(())
}

async fn report(state: &AppState, caller: &Caller, p: &BandwidthParams) -> Result<(NodeId, BandwidthReport), ApiError> {
    allow(caller)?;
    if let Some(period) = p.period.as_deref().filter(|p| !p.is_empty() && *p != "monthly") {
        return Err(ApiError::bad(format!("period {period:?}: only monthly is supported")));
    }
    let month = p.month.clone().filter(|m| !m.is_empty());
    if let Some(m) = &month {
        if !valid_month(m) {
            return Err(ApiError::bad(format!("month {m:?}: use YYYY-MM")));
        }
    }
    let node = node::select(state, NodeChoice { node_id: p.node_id }).await?;
    let body = codec::encode_body(&BandwidthQuery { month }).map_err(ApiError::internal)?;
    let answer = state.fleet.call(node, RequestKind::BANDWIDTH, body, CALL).await.map_err(|e| match e {
        FleetError::Rpc { node, error: RpcError::Unsupported(_) } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "BANDWIDTH_UNAVAILABLE",
            format!("node {} keeps no bandwidth counters (an older agent)", node.0),
        ),
        FleetError::Rpc { error: RpcError::BadRequest(why), .. } => ApiError::bad(why),
        other => node::link_error(other, CALL),
    })?;
    Ok((node, codec::decode_from(&answer).map_err(ApiError::internal)?))
}

fn totals(r: &BandwidthReport) -> (u64, u64) {
    r.interfaces.iter().fold((0, 0), |(i, o), u| (i + u.rx_bytes, o + u.tx_bytes))
}

fn interfaces(r: &BandwidthReport) -> Vec<Value> {
    r.interfaces
        .iter()
        .map(|u| {
            json!({
                "interface": u.interface,
                "bytes_in": u.rx_bytes,
                "bytes_out": u.tx_bytes,
                "total_bytes": u.rx_bytes + u.tx_bytes,
            })
        })
        .collect()
}

/// `GET /v1/bandwidth?period=monthly&month=YYYY-MM[&node_id=]`: the document's fields
/// (`total_bytes_in`, `total_bytes_out`, `period` = the month, `domains`) plus `interfaces`.
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<BandwidthParams>,
) -> Result<Json<Value>, ApiError> {
    let (node, r) = report(&state, &caller, &p).await?;
    let (bytes_in, bytes_out) = totals(&r);
    Ok(ok(json!({
        "total_bytes_in": bytes_in,
        "total_bytes_out": bytes_out,
        "total_bytes": bytes_in + bytes_out,
        "period": r.month,
        "period_type": "monthly",
        "month": r.month,
        "interfaces": interfaces(&r),
        "domains": [],
        "node_id": node.0,
        "sampled_at": iso_ms(r.sampled_at_ms as i64),
    })))
}

/// `GET /v1/bandwidth/summary[?month=&node_id=]`: month totals, per interface and per day.
pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<BandwidthParams>,
) -> Result<Json<Value>, ApiError> {
    let (node, r) = report(&state, &caller, &p).await?;
    let (bytes_in, bytes_out) = totals(&r);
    let mut days: Vec<(String, u64, u64)> = vec![];
    for d in &r.days {
        match days.last_mut() {
            Some(last) if last.0 == d.day => {
                last.1 += d.usage.rx_bytes;
                last.2 += d.usage.tx_bytes;
            }
            _ => days.push((d.day.clone(), d.usage.rx_bytes, d.usage.tx_bytes)),
        }
    }
    let days: Vec<Value> = days
        .into_iter()
        .map(|(date, i, o)| json!({ "date": date, "bytes_in": i, "bytes_out": o, "total_bytes": i + o }))
        .collect();
    Ok(ok(json!({
        "month": r.month,
        "total_bytes_in": bytes_in,
        "total_bytes_out": bytes_out,
        "total_bytes": bytes_in + bytes_out,
        "interfaces": interfaces(&r),
        "days": days,
        "node_id": node.0,
        "sampled_at": iso_ms(r.sampled_at_ms as i64),
    })))
}

/// Whether `id` could name an account (a number or a UUID-like token); anything else is 404.
fn plausible_account_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `GET /v1/bandwidth/accounts/{id}[?month=&node_id=]`: `data.bytes_used` (what the WHMCS
/// module reads). Until accounts exist this is the node's month total, with a `note`.
pub async fn account(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<BandwidthParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require("bandwidth:read")?;
    if !plausible_account_id(&id) {
        return Err(ApiError::not_found(format!("account {id} not found")));
    }
    let (node, r) = report(&state, &caller, &p).await?;
    let (bytes_in, bytes_out) = totals(&r);
    Ok(ok(json!({
        "account_id": id,
        "month": r.month,
        "bytes_used": bytes_in + bytes_out,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "scope": "node",
        "note": "accounts are not served by this release yet: this is the whole node's traffic for the month",
        "node_id": node.0,
        "sampled_at": iso_ms(r.sampled_at_ms as i64),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_ids() {
        assert!(valid_month("2026-03"));
        assert!(!valid_month("2026-3") && !valid_month("2026-13") && !valid_month("march"));
        assert!(plausible_account_id("42") && plausible_account_id("0b6f3a2e-9c1d-4e2f-8a7b-1c2d3e4f5a6b"));
        assert!(!plausible_account_id("") && !plausible_account_id("a b") && !plausible_account_id(&"x".repeat(65)));
    }
}
