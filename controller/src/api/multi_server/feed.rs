//! `/ws`: the web UI's live feed. Credentials come as `?token=base64(user:pass)` (browsers cannot
//! set headers on a WebSocket) or as a Basic header; a refusal closes with 1008 before any
//! message. Clients subscribe to channels: `snapshot_delta` sends a node's snapshot whenever its
//! availability, core state, CPU, online count or traffic changes; `inbounds` relays
//! `inbound_update` events published by batch inbound operations.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::ApiError;
use crate::api::AppState;

/// How often node snapshots are compared for deltas.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);
/// Policy violation: the close code the UI treats as "log in again".
const POLICY_VIOLATION: u16 = 1008;

/// Events published to every connected feed.
#[derive(Debug, Clone)]
pub struct FeedHub {
    tx: broadcast::Sender<Value>,
}

impl Default for FeedHub {
    fn default() -> Self {
        FeedHub { tx: broadcast::channel(64).0 }
    }
}

impl FeedHub {
    /// Publishes an `inbound_update` (`action` = `batch_enable`, `batch_update`, `batch_delete`).
    pub fn inbound_update(&self, action: &str, result: &Value) {
        let _ = self.tx.send(json!({
            "type": "inbound_update",
            "channel": "inbounds",
            "data": { "action": action, "result": result },
            "timestamp": unix_now(),
        }));
    }
}

fn unix_now() -> f64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9
}

/// `?token=&totp=`.
#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    token: Option<String>,
}

pub async fn connect(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Query(q): Query<FeedQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let header = match (&q.token, headers.get(axum::http::header::AUTHORIZATION)) {
        (Some(token), _) => Some(format!("Basic {token}")),
        (None, Some(h)) => h.to_str().ok().map(str::to_string),
        (None, None) => None,
    };
    let allowed = state.auth.basic(header.as_deref()).await.is_ok();
    Ok(ws.on_upgrade(move |socket| async move {
        if allowed {
            serve(socket, state).await;
        } else {
            refuse(socket).await;
        }
    }))
}

async fn refuse(mut socket: WebSocket) {
    let frame = CloseFrame { code: POLICY_VIOLATION, reason: "Unauthorized".into() };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// One node's snapshot as `/snapshots/latest` shows it (the fields deltas are taken on).
fn snapshots(state: &AppState) -> HashMap<String, Value> {
    let Ok(nodes) = state.store.nodes() else { return HashMap::new() };
    let traffic = state.store.node_traffic().unwrap_or_default();
    nodes
        .iter()
        .map(|n| {
            let live = state.fleet.live(n.id);
            let core = live.core.as_ref().filter(|_| live.connected);
            let (up, down) = traffic.get(&n.id).copied().unwrap_or_default();
            let snapshot = json!({
                "name": n.name,
                "node_id": n.id.0,
                "available": live.connected,
                "xray_running": core.is_some_and(|c| c.state == flotilla_protocol::proxy::CoreState::Running),
                "cpu": live.metrics.as_ref().map(|m| (m.cpu_percent as f64 * 10.0).round() / 10.0),
                "online_clients": core.map(|c| c.online.len()).unwrap_or(0),
                "traffic_total": up + down,
                "reason": if live.connected { Value::Null } else { json!("agent not connected") },
                "error": Value::Null,
            });
            (n.name.clone(), snapshot)
        })
        .collect()
}

/// Fields whose change is news, and the change itself (`{field: {old, new}}`).
fn changes(old: &Value, new: &Value) -> serde_json::Map<String, Value> {
    ["available", "xray_running", "cpu", "online_clients", "traffic_total", "reason", "error"]
        .iter()
        .filter(|f| old[**f] != new[**f])
        .map(|f| (f.to_string(), json!({ "old": old[*f], "new": new[*f] })))
        .collect()
}

async fn serve(mut socket: WebSocket, state: AppState) {
    let mut events = state.feed.tx.subscribe();
    let mut channels: BTreeSet<String> = BTreeSet::new();
    let mut last: HashMap<String, Value> = HashMap::new();
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    loop {
        let out = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let msg: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    let channel = msg["channel"].as_str().unwrap_or_default().to_string();
                    match msg["type"].as_str() {
                        Some("subscribe") => {
                            channels.insert(channel.clone());
                            vec![json!({ "type": "subscribed", "channel": channel, "status": "success" })]
                        }
                        Some("unsubscribe") => {
                            channels.remove(&channel);
                            vec![json!({ "type": "unsubscribed", "channel": channel, "status": "success" })]
                        }
                        Some("ping") => vec![json!({ "type": "pong", "timestamp": unix_now() })],
                        _ => vec![json!({ "type": "error", "message": "unknown message" })],
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => vec![],
            },
            event = events.recv() => match event {
                Ok(event) if channels.contains(event["channel"].as_str().unwrap_or_default()) => vec![event],
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => vec![],
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick(), if channels.contains("snapshot_delta") => {
                let now = snapshots(&state);
                let mut out = vec![];
                for (name, snapshot) in &now {
                    let delta = match last.get(name) {
                        None => Some(json!({ "node": name, "snapshot": snapshot })),
                        Some(old) => {
                            let c = changes(old, snapshot);
                            (!c.is_empty()).then(|| json!({ "node": name, "snapshot": snapshot, "changes": c }))
                        }
                    };
                    if let Some(data) = delta {
                        out.push(json!({ "type": "snapshot_delta", "timestamp": unix_now(), "data": data }));
                    }
                }
                last = now;
                out
            }
        };
        for msg in out {
            if socket.send(Message::Text(msg.to_string().into())).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_only_what_moved() {
        let old = json!({ "available": false, "xray_running": false, "cpu": 1.0, "online_clients": 0 });
        let new = json!({ "available": true, "xray_running": false, "cpu": 1.0, "online_clients": 2 });
        let c = changes(&old, &new);
        assert_eq!(c.len(), 2);
        assert_eq!(c["available"], json!({ "old": false, "new": true }));
        assert_eq!(c["online_clients"]["new"], 2);
        assert!(changes(&new, &new).is_empty());
    }
}
