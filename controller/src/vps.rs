//! Keeps the VPS API's servers in step with what their nodes' agents report: the end of each
//! container task (a create that finished, a delete that went through) and the periodic samples
//! (run state, metrics recorded for the history).

use flotilla_protocol::containers::{ContainerSamples, TaskInfo, TaskState};
use flotilla_protocol::NodeId;

use crate::api::vps::servers::server_status_for;
use crate::store::{ServerStatus, Store, StoreError};

/// What nodes reported about containers, for live consumers (Socket.IO, alerts, e-mail), sent
/// after the store has it.
#[derive(Debug, Clone)]
pub enum VpsEvent {
    /// A node's latest samples.
    Samples { node: NodeId, samples: std::sync::Arc<ContainerSamples> },
    /// A task started or ended; `server` is the server it belongs to, if any.
    Task { node: NodeId, server: Option<i64>, task: std::sync::Arc<TaskInfo> },
}

/// Width of a metrics bucket: at most one recorded sample per server per bucket (the original
/// monitoring service checked every 30 seconds).
pub const METRICS_BUCKET_S: u64 = 30;
/// How long recorded metrics are kept.
pub const METRICS_KEPT_S: i64 = 24 * 3600;

/// What the caller should do after a task report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterTask {
    Nothing,
    /// The server's container now exists: ask its node for the address.
    RefreshStatus(i64),
}

/// Records a task report and what its end means for the server. Returns what to do next and the
/// server it belongs to.
pub fn on_task(store: &Store, node: NodeId, task: &TaskInfo) -> Result<(AfterTask, Option<i64>), StoreError> {
    let server = store.server_by_container(node, &task.container)?;
    let id = server.as_ref().map(|s| s.id);
    Ok((on_task_of(store, node, task, server)?, id))
}

fn on_task_of(
    store: &Store,
    node: NodeId,
    task: &TaskInfo,
    server: Option<crate::store::ServerRecord>,
) -> Result<AfterTask, StoreError> {
    store.record_task(node, server.as_ref().map(|s| s.id), task)?;
    let Some(server) = server else { return Ok(AfterTask::Nothing) };
    let ended_ok = task.state == TaskState::Ok;
    match (task.kind.as_str(), &task.state) {
        ("vzcreate", TaskState::Ok) => {
            store.set_server_state(server.id, ServerStatus::Running, None)?;
            tracing::info!(server = server.id, upid = %task.upid, "server created");
            return Ok(AfterTask::RefreshStatus(server.id));
        }
        ("vzcreate", TaskState::Error { message }) => {
            tracing::warn!(server = server.id, upid = %task.upid, %message, "server creation failed");
            store.set_server_state(server.id, ServerStatus::Error, None)?;
        }
        ("vzdestroy", TaskState::Ok) => {
            store.delete_server(server.id)?;
            tracing::info!(server = server.id, "server deleted");
        }
        ("vzdestroy", TaskState::Error { message }) => {
            tracing::warn!(server = server.id, %message, "server deletion failed");
            store.set_server_state(server.id, ServerStatus::Stopped, None)?;
        }
        ("vzstart" | "vzreboot", _) if ended_ok => {
            store.set_server_state(server.id, ServerStatus::Running, None)?;
        }
        ("vzstop", _) if ended_ok => {
            store.set_server_state(server.id, ServerStatus::Stopped, None)?;
        }
        _ => {}
    }
    Ok(AfterTask::Nothing)
}

/// Records a node's samples: each server's run state, and one sample per bucket.
pub fn on_samples(store: &Store, node: NodeId, samples: &ContainerSamples) -> Result<(), StoreError> {
    for (container, state, sample) in &samples.containers {
        let Some(server) = store.server_by_container(node, container)? else { continue };
        let settled = !matches!(server.status, ServerStatus::Creating | ServerStatus::Deleting | ServerStatus::Error);
        if let Some(status) = server_status_for(*state).filter(|_| settled) {
            store.set_server_state(server.id, status, None)?;
        }
        let bucketed = flotilla_protocol::containers::ContainerSample {
            time_ms: sample.time_ms / (METRICS_BUCKET_S * 1000) * (METRICS_BUCKET_S * 1000),
            ..*sample
        };
        store.record_server_metrics(
            server.id,
            &bucketed,
            server.memory_mib << 20,
            server.disk_gb * 1_000_000_000,
            METRICS_KEPT_S,
        )?;
    }
    Ok(())
}
