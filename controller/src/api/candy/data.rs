//! `GET /api/data`: dashboard, clients, interfaces and settings in one answer (the UI polls it
//! every 5 s while the dashboard is open).

use std::collections::HashSet;

use axum::extract::State;
use axum::http::HeaderMap;
use flotilla_protocol::wireguard::WgKey;
use flotilla_protocol::NodeId;
use serde_json::{json, Map, Value};

use super::{blocking, Admin, CandyError, Done};
use crate::api::AppState;
use crate::store::{StoreError, WgClientRecord, WgInterfaceRecord};

const GIB: f64 = (1u64 << 30) as f64;

/// Everything the dashboard shows.
pub async fn all_data(State(state): State<AppState>, _admin: Admin, headers: HeaderMap) -> Result<Done, CandyError> {
    let snapshot = Snapshot::read(&state).await?;
    let dashboard = dashboard_of(&state, &snapshot);
    let Snapshot { clients, interfaces, settings, .. } = snapshot;
    let connected = connected_peers(&state, &interfaces);
    let uptime = dashboard["uptime"].clone();
    let bandwidth = dashboard["bandwidth"].clone();

    let clients: Vec<Value> = clients.iter().map(|c| client_json(c, &connected, true)).collect();
    let interfaces: Vec<Value> = interfaces
        .iter()
        .map(|i| {
            json!({
                "wg": i.wg,
                "public_key": i.public_key,
                "port": i.port,
                "address_range": i.address_range,
                "ipv6_address_range": i.ipv6_address_range,
                "status": i.status,
                "node_id": i.node_id.0,
                "endpoint": i.endpoint,
            })
        })
        .collect();
    // Every value a string, as the UI compares them with `!==` to find what the user changed.
    let mut out = Map::new();
    for (key, value) in settings {
        let value = match key.as_str() {
            "next_reset_at" => continue,
            "bandwidth" => bandwidth.clone(),
            "uptime" => uptime.clone(),
            "ap_port" => Value::String(request_port(&headers).unwrap_or(value)),
            _ => Value::String(value),
        };
        out.insert(key, value);
    }
    Ok(Done::with(
        "All data retrieved successfully.",
        json!({ "dashboard": dashboard, "clients": clients, "interfaces": interfaces, "settings": out }),
    ))
}

/// The port the caller reached the panel on (the panel shows it as `ap_port`).
fn request_port(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(axum::http::header::HOST)?.to_str().ok()?;
    let port = host.rsplit_once(':')?.1;
    port.parse::<u16>().ok().map(|p| p.to_string())
}

/// One client as the panel lists it. `with_wg`: the public page leaves the interface number out.
pub(crate) fn client_json(c: &WgClientRecord, connected: &HashSet<(u32, WgKey)>, with_wg: bool) -> Value {
    let key = WgKey::from_base64(&c.public_key);
    let mut v = json!({
        "name": c.name,
        "public_key": c.public_key,
        "private_key": c.private_key.to_base64(),
        "address": c.address,
        "ipv6_address": c.ipv6_address,
        "created_at": c.created_at,
        "expires": c.expires,
        "note": c.note,
        "traffic": c.traffic,
        "used_trafic": { "download": c.used_down, "upload": c.used_up },
        "connected_now": key.is_some_and(|k| connected.contains(&(c.wg, k))),
        "status": c.status,
    });
    if with_wg {
        v["wg"] = json!(c.wg);
    }
    if let Some(why) = &c.cut_off {
        v["cut_off"] = json!(why);
    }
    v
}

/// Peers the agents report with a recent handshake, by interface number.
pub(crate) fn connected_peers(state: &AppState, interfaces: &[WgInterfaceRecord]) -> HashSet<(u32, WgKey)> {
    let mut out = HashSet::new();
    let nodes: HashSet<NodeId> = interfaces.iter().map(|i| i.node_id).collect();
    for node in nodes {
        let Some(status) = state.fleet.live(node).wireguard else { continue };
        for peer in status.connected {
            if let Some(iface) = interfaces.iter().find(|i| i.node_id == node && i.device() == peer.interface) {
                out.insert((iface.wg, peer.public_key));
            }
        }
    }
    out
}

/// What `/api/data` and the bot's dashboard read from the store, in one blocking call.
struct Snapshot {
    clients: Vec<WgClientRecord>,
    interfaces: Vec<WgInterfaceRecord>,
    settings: Vec<(String, String)>,
    /// The node the dashboard describes: the one holding the lowest-numbered interface (where
    /// the panel was installed), else the first node.
    dashboard_node: Option<NodeId>,
}

impl Snapshot {
    async fn read(state: &AppState) -> Result<Snapshot, CandyError> {
        let store = state.store.clone();
        blocking(move || -> Result<_, StoreError> {
            let interfaces = store.wg_interfaces()?;
            let dashboard_node =
                interfaces.first().map(|i| i.node_id).or_else(|| store.nodes().ok()?.first().map(|n| n.id));
            Ok(Snapshot { clients: store.wg_clients()?, interfaces, settings: store.candy_settings()?, dashboard_node })
        })
        .await
    }
}

fn dashboard_of(state: &AppState, snapshot: &Snapshot) -> Value {
    let Snapshot { clients, settings, dashboard_node, .. } = snapshot;
    let setting = |key: &str| settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    let live = dashboard_node.map(|n| state.fleet.live(n)).unwrap_or_default();
    let bandwidth: u64 = clients.iter().map(|c| c.used_down.saturating_add(c.used_up)).sum();
    let alert: Value = serde_json::from_str(&setting("alert")).unwrap_or_else(|_| json!([]));
    let (cpu, mem, uptime) = match &live.metrics {
        Some(m) => {
            let total = m.mem_total as f64;
            let usage = if total > 0.0 { m.mem_used as f64 * 100.0 / total } else { 0.0 };
            (
                format!("{:.1}%", m.cpu_percent),
                json!({
                    "total": format!("{:.2} GB", total / GIB),
                    "available": format!("{:.2} GB", m.mem_total.saturating_sub(m.mem_used) as f64 / GIB),
                    "usage": format!("{usage:.1}%"),
                }),
                m.uptime_secs,
            )
        }
        None => ("0.0%".to_string(), json!({ "total": "0.00 GB", "available": "0.00 GB", "usage": "0.0%" }), 0),
    };
    let (down, up) = match (&live.previous_metrics, &live.metrics) {
        (Some(a), Some(b)) if b.taken_at_ms > a.taken_at_ms => {
            let secs = (b.taken_at_ms - a.taken_at_ms) as f64 / 1000.0;
            (
                b.net_rx_bytes.saturating_sub(a.net_rx_bytes) as f64 / secs / 1024.0,
                b.net_tx_bytes.saturating_sub(a.net_tx_bytes) as f64 / secs / 1024.0,
            )
        }
        _ => (0.0, 0.0),
    };
    json!({
        "cpu": cpu,
        "mem": mem,
        "clients_count": clients.len(),
        "status": setting("status"),
        "alert": alert,
        "bandwidth": bandwidth.to_string(),
        "uptime": uptime.to_string(),
        "net": { "download": format!("{down:.2} KB/s"), "upload": format!("{up:.2} KB/s") },
    })
}

/// The dashboard alone (the bot's admin status).
pub async fn dashboard(state: &AppState) -> Result<Value, CandyError> {
    Ok(dashboard_of(state, &Snapshot::read(state).await?))
}
