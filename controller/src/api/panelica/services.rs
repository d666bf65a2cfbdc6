//! `GET /v1/server/services` and `POST /v1/server/services/{name}/start|stop|restart`: the
//! node's systemd units through its agent's services driver (`SERVICES_LIST`,
//! `SERVICE_ACTION`). Which units may be seen and touched is the agent's `[services] allow`.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use flotilla_protocol::codec;
use flotilla_protocol::rpc::{RequestKind, RpcError};
use flotilla_protocol::services::{
    ServiceAction, ServiceActionResult, ServiceInfo, ServiceList, ServiceOp, ServiceQuery, ServiceState,
};
use flotilla_protocol::NodeId;
use serde_json::{json, Value};

use super::auth::Caller;
use super::node::{self, NodeChoice};
use super::{ok, ok_with, ApiError};
use crate::api::AppState;
use crate::fleet::FleetError;

/// Longer than the agent's default job wait (25 s), shorter than the clients' timeouts.
const CALL: Duration = Duration::from_secs(30);

/// The document's `status` for systemd's `ActiveState`.
pub fn status_word(state: &ServiceState) -> &str {
    match state {
        ServiceState::Active | ServiceState::Reloading => "running",
        ServiceState::Inactive => "stopped",
        ServiceState::Failed => "failed",
        ServiceState::Activating => "starting",
        ServiceState::Deactivating => "stopping",
        ServiceState::Other(s) => s,
    }
}

/// `864000` → `"10d 0h 0m"`, `59` → `"59s"`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

/// One service as the API shows it: the document's fields first, then systemd's.
pub fn service_json(s: &ServiceInfo) -> Value {
    json!({
        "name": s.name,
        "unit": s.unit,
        "display_name": s.display_name,
        "status": status_word(&s.state),
        "active_state": s.state.as_str(),
        "sub_state": s.sub_state,
        "pid": s.pid,
        "uptime_seconds": s.uptime_s,
        "uptime": s.uptime_s.map(human_duration),
        "cpu_percent": s.cpu_percent.map(|c| (c as f64 * 10.0).round() / 10.0),
        "memory_mb": s.memory_bytes.map(|b| (b as f64 / 1_048_576.0 * 10.0).round() / 10.0),
        "memory_bytes": s.memory_bytes,
        "enabled": s.enabled,
        "unit_file_state": s.unit_file_state,
    })
}

/// A failed call to the node, in the family's errors.
fn call_error(name: &str, e: FleetError) -> ApiError {
    match e {
        FleetError::Rpc { error: RpcError::BadRequest(why), .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "SERVICE_NOT_FOUND", format!("no service {name} on this server"))
                .details(why)
        }
        FleetError::Rpc { error: RpcError::Refused(why), .. } => ApiError::forbidden(
            "SERVICE_NOT_ALLOWED",
            format!("service {name} may not be managed through the API on this server"),
        )
        .details(format!("{why}; add it to [services] allow in the node's agent.toml")),
        FleetError::Rpc { node, error: RpcError::Unsupported(_) } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICES_UNAVAILABLE",
            format!("node {} cannot manage services (no systemd on its D-Bus system bus, or an older agent)", node.0),
        ),
        FleetError::Rpc { error, .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "SERVICE_ERROR", format!("service {name}: {error}"))
        }
        other => node::link_error(other, CALL),
    }
}

async fn call<T: serde::Serialize, A: serde::de::DeserializeOwned>(
    state: &AppState,
    node: NodeId,
    kind: RequestKind,
    body: &T,
    name: &str,
) -> Result<A, ApiError> {
    let body = codec::encode_body(body).map_err(ApiError::internal)?;
    let answer = state.fleet.call(node, kind, body, CALL).await.map_err(|e| call_error(name, e))?;
    codec::decode_from(&answer).map_err(ApiError::internal)
}

/// `GET /v1/server/services[?node_id=N]`: `data` is an array (the MCP client trims arrays).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(choice): Query<NodeChoice>,
) -> Result<Json<Value>, ApiError> {
    caller.require("services:read")?;
    let node = node::select(&state, choice).await?;
    let listed: ServiceList = call(&state, node, RequestKind::SERVICES_LIST, &ServiceQuery { name: None }, "*").await?;
    Ok(ok(Value::Array(listed.services.iter().map(service_json).collect())))
}

async fn act(
    state: AppState,
    caller: Caller,
    choice: NodeChoice,
    name: String,
    op: ServiceOp,
) -> Result<Json<Value>, ApiError> {
    caller.require(&format!("services:{}", op.as_str()))?;
    let node = node::select(&state, choice).await?;
    let action = ServiceAction { name: name.clone(), action: op };
    let done: ServiceActionResult = call(&state, node, RequestKind::SERVICE_ACTION, &action, &name).await?;
    tracing::info!(
        key = %caller.key.key_prefix(),
        node_id = %node,
        unit = %done.service.unit,
        action = op.as_str(),
        job = %done.job_result,
        "external API: service action"
    );
    let mut data = service_json(&done.service);
    if let Some(obj) = data.as_object_mut() {
        obj.insert("action".into(), json!(op.as_str()));
        obj.insert("job_result".into(), json!(done.job_result));
    }
    if done.job_result == "failed" {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "SERVICE_ACTION_FAILED",
            format!("{} of {} failed: the unit is {}", op.as_str(), done.service.unit, done.service.state.as_str()),
        )
        .details(format!("sub-state {}; see journalctl -u {} on the server", done.service.sub_state, done.service.unit))
        .with("data", data));
    }
    let past = match op {
        ServiceOp::Start => "started",
        ServiceOp::Stop => "stopped",
        ServiceOp::Restart => "restarted",
    };
    let message = if done.job_result == "pending" {
        format!("{name}: {} is still in progress", op.as_str())
    } else {
        format!("{name} {past}")
    };
    Ok(ok_with(data, &message))
}

/// `POST /v1/server/services/{name}/start`.
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(choice): Query<NodeChoice>,
) -> Result<Json<Value>, ApiError> {
    act(state, caller, choice, name, ServiceOp::Start).await
}

/// `POST /v1/server/services/{name}/stop`.
pub async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(choice): Query<NodeChoice>,
) -> Result<Json<Value>, ApiError> {
    act(state, caller, choice, name, ServiceOp::Stop).await
}

/// `POST /v1/server/services/{name}/restart`.
pub async fn restart(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(choice): Query<NodeChoice>,
) -> Result<Json<Value>, ApiError> {
    act(state, caller, choice, name, ServiceOp::Restart).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_as_the_document_words() {
        assert_eq!(status_word(&ServiceState::Active), "running");
        assert_eq!(status_word(&ServiceState::Inactive), "stopped");
        assert_eq!(status_word(&ServiceState::Failed), "failed");
        assert_eq!(status_word(&ServiceState::Activating), "starting");
        assert_eq!(status_word(&ServiceState::Other("maintenance".into())), "maintenance");
    }

    #[test]
    fn uptimes_read_like_the_document() {
        assert_eq!(human_duration(864_000), "10d 0h 0m");
        assert_eq!(human_duration(3_725), "1h 2m");
        assert_eq!(human_duration(61), "1m 1s");
        assert_eq!(human_duration(5), "5s");
    }

    #[test]
    fn a_service_has_the_documents_fields() {
        let s = ServiceInfo {
            name: "mysql".into(),
            unit: "mariadb.service".into(),
            display_name: "MariaDB 10.11.19 database server".into(),
            state: ServiceState::Active,
            sub_state: "running".into(),
            pid: Some(5678),
            uptime_s: Some(864_000),
            cpu_percent: Some(2.1),
            memory_bytes: Some(512 * 1_048_576),
            enabled: true,
            unit_file_state: "enabled".into(),
        };
        let v = service_json(&s);
        assert_eq!(v["name"], "mysql");
        assert_eq!(v["status"], "running");
        assert_eq!(v["pid"], 5678);
        assert_eq!(v["uptime_seconds"], 864_000);
        assert_eq!(v["cpu_percent"], 2.1);
        assert_eq!(v["memory_mb"], 512.0);
        assert_eq!(v["unit"], "mariadb.service");
    }
}
