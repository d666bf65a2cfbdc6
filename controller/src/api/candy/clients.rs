//! WireGuard clients: the operations `/api/manage` and the bot's approvals share. Each change is
//! stored first, then pushed to the interface's node (an offline node gets it on reconnect).

use flotilla_protocol::NodeId;

use super::{blocking, now_iso, CandyError};
use crate::api::AppState;
use crate::store::{NewWgClient, WgClientChange, WgClientRecord, WgRefusal};
use crate::wireguard::{parse_expires, parse_traffic, ClientConfig, ConfigLayout, KeyPair};

/// A client to create, as the panel's clients send it.
#[derive(Debug, Clone)]
pub struct CreateClient {
    pub name: String,
    /// Any accepted expiry text (`YYYY-MM-DD`, ISO date-time).
    pub expires: String,
    /// Quota in bytes, as text (may be fractional; `0` = unlimited).
    pub traffic: String,
    pub wg: u32,
    pub note: String,
}

/// Refuses names that would break the public pages' URLs or the config file name.
pub fn validate_name(name: &str) -> Result<(), CandyError> {
    if name.trim().is_empty() {
        return Err(CandyError::bad("Client name must not be empty"));
    }
    if name.len() > 64 {
        return Err(CandyError::bad("Client name must be at most 64 characters"));
    }
    if name.chars().any(|c| c == '/' || c == '\\' || c == '%' || c == '?' || c == '#' || c.is_control()) {
        return Err(CandyError::bad("Client name must not contain '/', '\\', '%', '?', '#' or control characters"));
    }
    Ok(())
}

/// Creates a client at the next free address and returns it with its config (the layout the
/// panel answers a create with).
pub async fn create_client(state: &AppState, req: CreateClient) -> Result<(WgClientRecord, String), CandyError> {
    validate_name(&req.name)?;
    let (expires, expires_ms) = parse_expires(&req.expires).map_err(|e| CandyError::bad(e.to_string()))?;
    let quota_bytes = parse_traffic(&req.traffic).map_err(|e| CandyError::bad(e.to_string()))?;
    let new = NewWgClient {
        name: req.name.clone(),
        wg: req.wg,
        keys: KeyPair::generate_url_safe(),
        created_at: now_iso(),
        expires,
        expires_ms,
        note: req.note,
        traffic: req.traffic.trim().to_string(),
        quota_bytes,
    };
    let store = state.store.clone();
    let client = blocking(move || store.create_wg_client(&new)).await?;
    push_interface(state, client.wg).await;
    let config = client_config(state, &client, ConfigLayout::Created).await?;
    Ok((client, config))
}

/// Changes a client (only the given fields).
pub async fn update_client(state: &AppState, name: &str, change: WgClientChange) -> Result<WgClientRecord, CandyError> {
    let store = state.store.clone();
    let owned = name.to_string();
    let client = blocking(move || store.update_wg_client(&owned, &change)).await?;
    push_interface(state, client.wg).await;
    Ok(client)
}

/// Deletes a client.
pub async fn delete_client(state: &AppState, name: &str) -> Result<(), CandyError> {
    let store = state.store.clone();
    let owned = name.to_string();
    let client = blocking(move || store.wg_client(&owned)).await?;
    let client = client.ok_or_else(|| CandyError::bad(WgRefusal::ClientNotFound(name.to_string()).to_string()))?;
    let store = state.store.clone();
    let owned = name.to_string();
    blocking(move || store.delete_wg_client(&owned)).await?;
    push_interface(state, client.wg).await;
    Ok(())
}

/// One client by name.
pub async fn find_client(state: &AppState, name: &str) -> Result<Option<WgClientRecord>, CandyError> {
    let store = state.store.clone();
    let owned = name.to_string();
    blocking(move || store.wg_client(&owned)).await
}

/// A client's config text. The endpoint is the interface's own endpoint when it has one, else
/// the panel's `custom_endpont` (set from `server_ip` at install).
pub async fn client_config(
    state: &AppState,
    client: &WgClientRecord,
    layout: ConfigLayout,
) -> Result<String, CandyError> {
    let store = state.store.clone();
    let wg = client.wg;
    let (iface, settings) =
        blocking(move || Ok::<_, crate::store::StoreError>((store.wg_interface(wg)?, store.candy_settings()?))).await?;
    let iface =
        iface.ok_or_else(|| CandyError::not_found(format!("Associated WireGuard interface wg{wg} not found.")))?;
    let setting = |key: &str| settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    let endpoint = iface.endpoint.clone().unwrap_or_else(|| setting("custom_endpont"));
    let (dns, ipv6_dns, mtu) = (setting("dns"), setting("ipv6_dns"), setting("mtu"));
    Ok(ClientConfig {
        private_key: &client.private_key,
        address: &client.address,
        ipv6_address: client.ipv6_address.as_deref(),
        dns: &dns,
        ipv6_dns: &ipv6_dns,
        mtu: &mtu,
        server_public_key: &iface.public_key,
        endpoint_host: &endpoint,
        port: iface.port,
    }
    .render(layout))
}

/// Pushes the WireGuard state of the node holding interface `wg`.
pub async fn push_interface(state: &AppState, wg: u32) {
    let store = state.store.clone();
    if let Ok(Some(iface)) = blocking(move || store.wg_interface(wg)).await {
        push_node(state, iface.node_id).await;
    }
}

/// Pushes a node's WireGuard state and logs what did not apply (the change is stored either way).
pub async fn push_node(state: &AppState, node: NodeId) {
    let outcome = state.fleet.push_wireguard(node).await;
    let errors = outcome.errors();
    if !errors.is_empty() {
        tracing::warn!(node_id = %node, status = outcome.status(), ?errors, "WireGuard change not fully applied");
    }
}
