//! The public client pages: `/client-details/<name>/<public key>` (JSON for the panel's client
//! page), `/qr/<name>/<public key>` (PNG) and `/shortlink/<name>/<public key>` (the page). The
//! pair of name and public key is the secret, as in the original; keys are generated without `/`
//! so the paths stay one segment each.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::{blocking, clients, CandyError, Done};
use crate::api::AppState;
use crate::store::{StoreError, WgClientRecord};
use crate::wireguard::ConfigLayout;

async fn client_by_key(state: &AppState, name: &str, key: &str) -> Result<WgClientRecord, CandyError> {
    let missing = || CandyError::not_found("Client not found or public key mismatch.");
    let client = clients::find_client(state, name).await?.ok_or_else(missing)?;
    let same: bool = subtle::ConstantTimeEq::ct_eq(client.public_key.as_bytes(), key.trim().as_bytes()).into();
    if same {
        Ok(client)
    } else {
        Err(missing())
    }
}

/// What the client page shows and needs to rebuild the config for download.
pub async fn client_details(
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Done, CandyError> {
    let client = client_by_key(&state, &name, &key).await?;
    let store = state.store.clone();
    let wg = client.wg;
    let (iface, settings) =
        blocking(move || -> Result<_, StoreError> { Ok((store.wg_interface(wg)?, store.candy_settings()?)) }).await?;
    let setting = |key: &str| settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    let interfaces: Vec<_> = iface.iter().cloned().collect();
    let connected = super::data::connected_peers(&state, &interfaces);
    let mut data = super::data::client_json(&client, &connected, false);
    data["interface_public_key"] = json!(iface.as_ref().map(|i| i.public_key.clone()));
    data["interface_port"] = json!(iface.as_ref().map(|i| i.port));
    let endpoint = iface.as_ref().and_then(|i| i.endpoint.clone()).unwrap_or_else(|| setting("custom_endpont"));
    data["server_endpoint_ip"] = json!(endpoint);
    data["server_dns"] = json!(setting("dns"));
    data["server_mtu"] = json!(setting("mtu"));
    Ok(Done::with("Client details retrieved successfully.", data))
}

/// The client's config as a QR code, for the WireGuard phone apps.
pub async fn qr(
    State(state): State<AppState>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Response, CandyError> {
    let client = client_by_key(&state, &name, &key).await?;
    let config = clients::client_config(&state, &client, ConfigLayout::Qr).await?;
    let png = blocking(move || crate::wireguard::qr_png(&config).map_err(CandyError::internal)).await?;
    Ok(([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "no-store")], png).into_response())
}

/// The client's page: the panel's own web UI when it is configured (`[candy] ui_dir`), else a
/// small page with the QR code and usage.
pub async fn shortlink(State(state): State<AppState>, Path((name, key)): Path<(String, String)>) -> Response {
    let client = match client_by_key(&state, &name, &key).await {
        Ok(c) => c,
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            let page = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Client Not Found</title></head>\
                <body><h1>Client Not Found</h1><p>No client has this name and key.</p></body></html>";
            return (StatusCode::NOT_FOUND, Html(page)).into_response();
        }
        Err(e) => return e.into_response(),
    };
    if let Some(dir) = &state.candy.ui_dir {
        if let Ok(index) = tokio::fs::read_to_string(dir.join("index.html")).await {
            return Html(index).into_response();
        }
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let quota =
        if client.quota_bytes == 0 { "unlimited".to_string() } else { format!("{:.2} GiB", gib(client.quota_bytes)) };
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{name}</title></head><body style=\"font-family:sans-serif;text-align:center\">\
         <h1>{name}</h1><p>{status} · expires {expires}</p><p>used {used:.2} GiB of {quota}</p>\
         <img alt=\"WireGuard config QR code\" src=\"/qr/{name}/{key}\"></body></html>",
        name = html_escape(&client.name),
        status = if client.status { "active" } else { "inactive" },
        expires = html_escape(&client.expires),
        used = gib(client.used_down.saturating_add(client.used_up)),
        key = html_escape(&client.public_key),
    );
    Html(page).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}
