//! systemd services on a node (the external API's `/v1/server/services`): what the agent's
//! services driver lists, the start/stop/restart it runs, and the event it sends when a watched
//! unit fails.
//!
//! Errors of `SERVICES_LIST` / `SERVICE_ACTION` travel as [`crate::rpc::RpcError`]s with a fixed
//! meaning: `BadRequest` = no such service on the node (the controller answers 404), `Refused` =
//! the unit exists but the agent's `[services] allow` list leaves it out (403), `Unsupported` =
//! no systemd on the node (503), `Failed` = systemd refused or the job failed.

use serde::{Deserialize, Serialize};

/// systemd's `ActiveState` of a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    /// Anything newer systemd versions add (`maintenance`, `refreshing`), as systemd spells it.
    Other(String),
}

impl ServiceState {
    /// From systemd's spelling.
    pub fn parse(s: &str) -> ServiceState {
        match s {
            "active" => ServiceState::Active,
            "reloading" => ServiceState::Reloading,
            "inactive" => ServiceState::Inactive,
            "failed" => ServiceState::Failed,
            "activating" => ServiceState::Activating,
            "deactivating" => ServiceState::Deactivating,
            other => ServiceState::Other(other.to_string()),
        }
    }

    /// systemd's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            ServiceState::Active => "active",
            ServiceState::Reloading => "reloading",
            ServiceState::Inactive => "inactive",
            ServiceState::Failed => "failed",
            ServiceState::Activating => "activating",
            ServiceState::Deactivating => "deactivating",
            ServiceState::Other(s) => s,
        }
    }
}

/// One service as the agent sees it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// The name the API uses: the document's (`mysql`) when the allow-list entry is one of its
    /// names, else the unit's name without `.service`.
    pub name: String,
    /// The systemd unit (`mariadb.service`).
    pub unit: String,
    /// The unit's `Description`.
    pub display_name: String,
    pub state: ServiceState,
    /// systemd's `SubState` (`running`, `dead`, `exited`, …).
    pub sub_state: String,
    /// `MainPID`; None when the unit has no main process.
    pub pid: Option<u32>,
    /// Seconds since the unit last became active; None unless active.
    pub uptime_s: Option<u64>,
    /// CPU use of the unit's cgroup over the last sampling interval, percent of one CPU.
    pub cpu_percent: Option<f32>,
    /// Memory charged to the unit's cgroup.
    pub memory_bytes: Option<u64>,
    /// `UnitFileState` is `enabled` (or `enabled-runtime`).
    pub enabled: bool,
    /// `UnitFileState` as systemd spells it (`enabled`, `disabled`, `static`, `masked`, …).
    pub unit_file_state: String,
}

/// `SERVICES_LIST` answer: every allowed service installed on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceList {
    pub services: Vec<ServiceInfo>,
}

/// `SERVICES_LIST` body: one service (by the API's or the unit's name), or all allowed ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceQuery {
    pub name: Option<String>,
}

/// What to do to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceOp {
    Start,
    Stop,
    Restart,
}

impl ServiceOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceOp::Start => "start",
            ServiceOp::Stop => "stop",
            ServiceOp::Restart => "restart",
        }
    }
}

/// `SERVICE_ACTION` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAction {
    /// The API's name (`mysql`) or the unit's (`mariadb`, `mariadb.service`).
    pub name: String,
    pub action: ServiceOp,
}

/// `SERVICE_ACTION` answer, once systemd's job has ended (or the wait gave up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceActionResult {
    /// systemd's job result (`done`, `failed`, `canceled`, `timeout`, `dependency`, …), or
    /// `pending` when the job had not ended within the agent's wait.
    pub job_result: String,
    /// The service after the job.
    pub service: ServiceInfo,
}

/// `SERVICE_FAILED` event body: an allowed unit entered the `failed` state (sent once per
/// transition into it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFailed {
    /// The systemd unit (`nginx.service`).
    pub unit: String,
    /// What systemd says about it (`Result`, sub-state, main process exit status).
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_systemds_spelling() {
        for s in ["active", "reloading", "inactive", "failed", "activating", "deactivating", "maintenance"] {
            assert_eq!(ServiceState::parse(s).as_str(), s);
        }
        assert_eq!(ServiceState::parse("maintenance"), ServiceState::Other("maintenance".into()));
    }
}
