//! `POST /api/manage`: one endpoint, a `resource` and an `action`, fields flat beside them.

use axum::extract::State;
use flotilla_protocol::NodeId;
use serde_json::{json, Map, Value};

use super::clients::{self, CreateClient};
use super::{blocking, Admin, CandyError, Done, Fields};
use crate::api::AppState;
use crate::store::{NewWgInterface, StoreError, WgClientChange, WgInterfaceChange};
use crate::wireguard::{parse_expires, parse_traffic, AddressRange, ConfigLayout};

/// Settings only the controller writes.
const READ_ONLY_SETTINGS: &[&str] = &["install", "bandwidth", "uptime", "telegram_bot_pid", "ap_port", "next_reset_at"];

/// Shortest API token accepted: these tokens are admin credentials.
const MIN_API_TOKEN_LEN: usize = 16;

/// Changes interfaces, clients, settings and API tokens.
pub async fn manage(State(state): State<AppState>, admin: Admin, fields: Fields) -> Result<Done, CandyError> {
    let resource = fields.non_empty("resource")?;
    let action = fields.non_empty("action")?;
    let (Some(resource), Some(action)) = (resource, action) else {
        return Err(CandyError::bad("Missing 'resource' or 'action' in request body"));
    };
    tracing::info!(user = %admin.name, %resource, %action, "CandyPanel change");
    dispatch(&state, &resource, &action, &fields).await
}

/// Runs one `resource`/`action` with its fields (the bot's passthrough calls this too).
pub async fn dispatch(state: &AppState, resource: &str, action: &str, fields: &Fields) -> Result<Done, CandyError> {
    let invalid = |what: &str| CandyError::bad(format!("Invalid action '{action}' for {what} resource"));
    match resource {
        "client" => match action {
            "create" => create_client(state, fields).await,
            "update" => update_client(state, fields).await,
            "delete" => delete_client(state, fields).await,
            "get_config" => client_config(state, fields).await,
            _ => Err(invalid("client")),
        },
        "interface" => match action {
            "create" => create_interface(state, fields).await,
            "update" => update_interface(state, fields).await,
            "delete" => delete_interface(state, fields).await,
            _ => Err(invalid("interface")),
        },
        "setting" => match action {
            "update" => update_setting(state, fields).await,
            _ => Err(invalid("setting")),
        },
        "api_token" => match action {
            "create_or_update" | "create" | "update" | "add" => save_api_token(state, fields).await,
            "delete" => delete_api_token(state, fields).await,
            _ => Err(invalid("API token")),
        },
        "sync" => match action {
            "trigger" => {
                sync(state).await?;
                Ok(Done::message("Synchronization process initiated successfully."))
            }
            _ => Err(invalid("sync")),
        },
        other => Err(CandyError::bad(format!("Unknown resource type: {other}"))),
    }
}

async fn create_client(state: &AppState, fields: &Fields) -> Result<Done, CandyError> {
    let name = fields.non_empty("name")?;
    let expires = fields.non_empty("expires")?;
    let traffic = fields.non_empty("traffic")?;
    let (Some(name), Some(expires), Some(traffic)) = (name, expires, traffic) else {
        return Err(CandyError::bad("Missing name, expires, or traffic for client creation"));
    };
    let wg = interface_number(fields.int("wg_id")?.unwrap_or(0))?;
    let note = fields.text("note")?.unwrap_or_default();
    let (_, config) = clients::create_client(state, CreateClient { name, expires, traffic, wg, note }).await?;
    Ok(Done::with("Client created successfully!", json!({ "client_config": config })))
}

async fn update_client(state: &AppState, fields: &Fields) -> Result<Done, CandyError> {
    let name = fields.non_empty("name")?.ok_or_else(|| CandyError::bad("Missing client name for update"))?;
    let change = WgClientChange {
        expires: fields
            .non_empty("expires")?
            .map(|e| parse_expires(&e).map_err(|e| CandyError::bad(e.to_string())))
            .transpose()?,
        traffic: fields
            .non_empty("traffic")?
            .map(|t| parse_traffic(&t).map(|q| (t.trim().to_string(), q)).map_err(|e| CandyError::bad(e.to_string())))
            .transpose()?,
        status: fields.flag("status")?,
        note: fields.text("note")?,
    };
    if change.is_empty() {
        return Err(CandyError::bad("No valid update data provided."));
    }
    clients::update_client(state, &name, change).await.map_err(not_found_is_400)?;
    Ok(Done::message(format!("Client '{name}' edited successfully.")))
}

async fn delete_client(state: &AppState, fields: &Fields) -> Result<Done, CandyError> {
    let name = fields.non_empty("name")?.ok_or_else(|| CandyError::bad("Missing client name for deletion"))?;
    clients::delete_client(state, &name).await?;
    Ok(Done::message(format!("Client '{name}' deleted successfully.")))
}

async fn client_config(state: &AppState, fields: &Fields) -> Result<Done, CandyError> {
    let name = fields.non_empty("name")?.ok_or_else(|| CandyError::bad("Missing client name to get config"))?;
    let client = clients::find_client(state, &name).await?.ok_or_else(|| CandyError::not_found("Client not found."))?;
    let config = clients::client_config(state, &client, ConfigLayout::Fetched).await?;
    Ok(Done::with("Client config retrieved successfully.", json!({ "config": config })))
}

/// The panel answers an unknown client on update with a 400, not a 404.
fn not_found_is_400(e: CandyError) -> CandyError {
    if e.status == axum::http::StatusCode::NOT_FOUND {
        CandyError::bad(e.message)
    } else {
        e
    }
}

fn interface_number(n: i64) -> Result<u32, CandyError> {
    u32::try_from(n).map_err(|_| CandyError::bad(format!("Invalid interface id {n}: must be 0 or more")))
}

fn port(n: i64) -> Result<u16, CandyError> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| CandyError::bad(format!("Invalid port {n}: must be 1-65535")))
}

fn range(text: &str) -> Result<AddressRange, CandyError> {
    AddressRange::parse(text).map_err(|e| CandyError::bad(e.to_string()))
}

/// The node an interface goes on: the given `node_id`, else the first node whose agent drives
/// WireGuard (connected now, or holding interfaces already).
pub(crate) async fn wireguard_node(state: &AppState, requested: Option<i64>) -> Result<NodeId, CandyError> {
    let store = state.store.clone();
    let (nodes, with_interfaces) = blocking(move || Ok::<_, StoreError>((store.nodes()?, store.wg_nodes()?))).await?;
    if let Some(id) = requested {
        let node =
            nodes.iter().find(|n| n.id.0 == id).ok_or_else(|| CandyError::bad(format!("Node {id} not found")))?;
        return Ok(node.id);
    }
    nodes
        .iter()
        .map(|n| n.id)
        .find(|id| state.fleet.live(*id).wireguard_capable || with_interfaces.contains(id))
        .ok_or_else(|| {
            CandyError::bad(
                "No WireGuard node: enroll an agent with a [wireguard] backend (and connect it), or pass node_id",
            )
        })
}

async fn create_interface(state: &AppState, fields: &Fields) -> Result<Done, CandyError> {
    let address_range = fields.non_empty("address_range")?;
    let port_number = fields.int("port")?;
    let (Some(address_range), Some(port_number)) = (address_range, port_number) else {
        return Err(CandyError::bad("Missing address_range or port for interface creation"));
    };
    let node_id = wireguard_node(state, fields.int("node_id")?).await?;
    let endpoint = match fields.non_empty("endpoint")? {
        Some(e) => Some(e.trim().to_string()),
        None => default_endpoint(state, node_id).await?,
    };
    let new = NewWgInterface {
        node_id,
        port: port(port_number)?,
        address_range: range(&address_range)?,
        ipv6_address_range: fields.non_empty("ipv6_address_range")?.map(|r| range(&r)).transpose()?,
        endpoint,
    };
    let store = state.store.clone();
    let iface = blocking(move || store.create_wg_interface(&new)).await?;
    clients::push_node(state, iface.node_id).await;
    Ok(Done::message("New Interface Created!"))
}

/// Where clients of a new interface on `node` connect when the request names no `endpoint`:
/// the panel's `custom_endpont` on the node it was installed on (`None`), the node's own address
/// on any other node (its `url` host, the public address its agent reports, else the address its
/// link comes from).
async fn default_endpoint(state: &AppState, node: NodeId) -> Result<Option<String>, CandyError> {
    let store = state.store.clone();
    let (record, interfaces) =
        blocking(move || Ok::<_, StoreError>((store.node(node)?, store.wg_interfaces()?))).await?;
    let install_node = interfaces.first().map(|i| i.node_id);
    if install_node.is_none_or(|n| n == node) {
        return Ok(None);
    }
    let record = record.ok_or_else(|| CandyError::bad(format!("Node {node} not found")))?;
    Ok(crate::api::multi_server::node_address(&record, &state.fleet.live(node)))
}

/// `wg3` → 3.
fn parse_interface_name(name: &str) -> Result<u32, CandyError> {
    name.trim()
        .strip_prefix("wg")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| CandyError::bad(format!("Invalid interface name '{name}': expected wg followed by its number")))
}

async fn update_interface(state: &AppState, fields: &Fields) -> Result<Done, CandyError> {
    let name = fields.non_empty("name")?.ok_or_else(|| CandyError::bad("Missing interface name for update"))?;
    let wg = parse_interface_name(&name)?;
    let change = WgInterfaceChange {
        address_range: fields.non_empty("address")?.map(|r| range(&r)).transpose()?,
        port: fields.int("port")?.map(port).transpose()?,
        status: fields.flag("status")?,
    };
    let store = state.store.clone();
    let exists = blocking(move || store.wg_interface(wg)).await?;
    if exists.is_none() {
        return Err(CandyError::bad(format!("Interface wg{wg} does not exist in database.")));
    }
    let store = state.store.clone();
    let iface = blocking(move || store.update_wg_interface(wg, &change)).await?;
    clients::push_node(state, iface.node_id).await;
    Ok(Done::message(format!("Interface wg{wg} edited successfully.")))
}

async fn delete_interface(state: &AppState, fields: &Fields) -> Result<Done, CandyError> {
    let wg = fields.int("wg_id")?.ok_or_else(|| CandyError::bad("Missing wg_id for interface deletion"))?;
    let wg = interface_number(wg)?;
    let store = state.store.clone();
    let iface = blocking(move || store.wg_interface(wg)).await?;
    let iface = iface.ok_or_else(|| CandyError::bad(format!("Interface wg{wg} not found.")))?;
    let store = state.store.clone();
    blocking(move || store.delete_wg_interface(wg)).await?;
    clients::push_node(state, iface.node_id).await;
    Ok(Done::message(format!("Interface wg{wg} and all associated clients deleted successfully.")))
}

/// Checks a setting's new value; the message names the key and what it needs.
pub(crate) fn validate_setting(key: &str, value: &str) -> Result<(), CandyError> {
    let bad = |what: &str| Err(CandyError::bad(format!("Invalid value for '{key}': {what}")));
    let v = value.trim();
    match key {
        "server_ip" | "custom_endpont" | "dns" if v.is_empty() => bad("must not be empty"),
        "server_ip" | "custom_endpont" if v.contains(['/', ' ', ':']) && v.parse::<std::net::Ipv6Addr>().is_err() => {
            bad("expected an IP address or a host name")
        }
        "mtu" if !v.parse::<u16>().is_ok_and(|m| (576..=9000).contains(&m)) => {
            bad("expected a number from 576 to 9000")
        }
        "reset_time" if !v.parse::<f64>().is_ok_and(|h| h >= 0.0 && h.is_finite()) => {
            bad("expected a number of hours (0 turns the reset off)")
        }
        "status" | "auto_backup" | "telegram_bot_status" if v != "0" && v != "1" => bad("expected '0' or '1'"),
        "telegram_bot_admin_id" if !v.is_empty() && !v.chars().all(|c| c.is_ascii_digit()) => {
            bad("expected a numeric Telegram id ('0' for none)")
        }
        "prices" => match serde_json::from_str::<Value>(v) {
            // Only the two priced units are computed with; other keys are shown by the bot as is.
            Ok(Value::Object(map)) if ["1GB", "1Month"].iter().all(|k| map.get(*k).is_none_or(price_value)) => Ok(()),
            _ => bad("expected a JSON object of prices with numeric \"1GB\" and \"1Month\", like {\"1GB\": 4000, \"1Month\": 75000}"),
        },
        "alert" => match serde_json::from_str::<Value>(v) {
            Ok(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(()),
            _ => bad("expected a JSON array of strings"),
        },
        "api_tokens" => match serde_json::from_str::<Value>(v) {
            Ok(Value::Object(map)) if map.values().all(Value::is_string) => Ok(()),
            _ => bad("expected a JSON object of token names to tokens"),
        },
        _ => Ok(()),
    }
}

fn price_value(v: &Value) -> bool {
    v.is_number() || v.as_str().is_some_and(|s| s.trim().parse::<f64>().is_ok())
}

async fn update_setting(state: &AppState, fields: &Fields) -> Result<Done, CandyError> {
    let key = fields.non_empty("key")?;
    let value = fields.text("value")?;
    let (Some(key), Some(value)) = (key, value) else {
        return Err(CandyError::bad("Missing key or value for setting update"));
    };
    if !crate::store::CANDY_SETTINGS.iter().any(|(k, _)| *k == key) {
        return Err(CandyError::bad("Invalid Key"));
    }
    if READ_ONLY_SETTINGS.contains(&key.as_str()) {
        return Err(CandyError::bad(format!("Setting '{key}' is read-only")));
    }
    validate_setting(&key, &value)?;
    let mut values = vec![(key.clone(), value.trim().to_string())];
    if key == "reset_time" {
        let hours: f64 = value.trim().parse().unwrap_or(0.0);
        let next = if hours > 0.0 { crate::store::now_ms() / 1000 + (hours * 3600.0) as i64 } else { 0 };
        values.push(("next_reset_at".into(), next.to_string()));
    }
    let store = state.store.clone();
    blocking(move || {
        let pairs: Vec<(&str, &str)> = values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        store.set_candy_settings(&pairs)
    })
    .await?;
    if let (Some(path), true) = (state.candy.bot_db.clone(), super::bot_db::concerns(&key)) {
        let store = state.store.clone();
        if let Err(e) = blocking(move || super::bot_db::write(&store, &path)).await {
            return Err(CandyError::internal(format!(
                "Setting saved, but the bot's settings file was not written: {}",
                e.message
            )));
        }
    }
    Ok(Done::message("Changed!"))
}

async fn api_tokens(state: &AppState) -> Result<Map<String, Value>, CandyError> {
    let store = state.store.clone();
    let text = blocking(move || store.candy_setting("api_tokens")).await?.unwrap_or_default();
    Ok(serde_json::from_str(&text).unwrap_or_default())
}

async fn store_api_tokens(state: &AppState, tokens: Map<String, Value>) -> Result<(), CandyError> {
    let text = Value::Object(tokens).to_string();
    let store = state.store.clone();
    blocking(move || store.set_candy_settings(&[("api_tokens", &text)])).await
}

async fn save_api_token(state: &AppState, fields: &Fields) -> Result<Done, CandyError> {
    let name = fields.non_empty("name")?;
    let token = fields.non_empty("token")?;
    let (Some(name), Some(token)) = (name, token) else {
        return Err(CandyError::bad("Missing name or token for API token operation"));
    };
    if token.trim().len() < MIN_API_TOKEN_LEN {
        return Err(CandyError::bad(format!(
            "API token must be at least {MIN_API_TOKEN_LEN} characters: it authenticates as an admin"
        )));
    }
    let mut tokens = api_tokens(state).await?;
    tokens.insert(name.clone(), Value::String(token.trim().to_string()));
    store_api_tokens(state, tokens).await?;
    Ok(Done::message(format!("API token '{name}' added/updated successfully.")))
}

async fn delete_api_token(state: &AppState, fields: &Fields) -> Result<Done, CandyError> {
    let name = fields.non_empty("name")?.ok_or_else(|| CandyError::bad("Missing name for API token deletion"))?;
    let mut tokens = api_tokens(state).await?;
    if tokens.remove(&name).is_none() {
        return Err(CandyError::bad(format!("API token '{name}' not found.")));
    }
    store_api_tokens(state, tokens).await?;
    Ok(Done::message(format!("API token '{name}' deleted successfully.")))
}

/// The panel's "sync": runs the scheduled counter reset when it is due, then brings every
/// WireGuard node to its stored state. Usage arrives continuously from the agents' journals and
/// quotas and expiry are enforced by the agents, so there is nothing else to collect here.
pub async fn sync(state: &AppState) -> Result<(), CandyError> {
    let store = state.store.clone();
    let nodes = blocking(move || -> Result<Vec<NodeId>, StoreError> {
        crate::jobs::wireguard_reset::reset_if_due(&store, time::OffsetDateTime::now_utc().unix_timestamp())?;
        store.wg_nodes()
    })
    .await?;
    let pushes = nodes.into_iter().map(|node| clients::push_node(state, node));
    futures_util::future::join_all(pushes).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_before_they_are_stored() {
        for (key, value) in [
            ("mtu", "1380"),
            ("reset_time", "24"),
            ("prices", "{\"1GB\": 4000, \"1Month\": \"75000\"}"),
            ("prices", "{\"1GB\": 4000, \"note\": \"Toman\"}"),
            ("telegram_bot_admin_id", "123456"),
            ("server_ip", "203.0.113.7"),
            ("custom_endpont", "vpn.example.com"),
            ("custom_endpont", "2001:db8::1"),
            ("alert", "[\"hi\"]"),
        ] {
            assert!(validate_setting(key, value).is_ok(), "{key}={value}");
        }
        for (key, value) in [
            ("mtu", "big"),
            ("mtu", "100"),
            ("reset_time", "-1"),
            ("prices", "[1]"),
            ("prices", "{\"1GB\": \"cheap\"}"),
            ("telegram_bot_status", "yes"),
            ("telegram_bot_admin_id", "@admin"),
            ("server_ip", ""),
            ("custom_endpont", "http://x/"),
            ("alert", "oops"),
        ] {
            let e = validate_setting(key, value).unwrap_err();
            assert!(e.message.contains(key), "{key}={value}: {}", e.message);
        }
        assert_eq!(parse_interface_name("wg12").unwrap(), 12);
        assert!(parse_interface_name("eth0").is_err());
    }
}
