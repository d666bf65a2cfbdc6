//! Containers (the VPS API's virtual servers) on a node: what the controller asks the agent's
//! containers driver to do, the tasks those operations run as, and the live status and samples
//! the agent reports.
//!
//! Every operation that changes a container runs as an asynchronous task with a Proxmox-style
//! UPID; the agent answers the request as soon as the task has started, keeps the task (state and
//! log) in its store, and sends `CONTAINER_TASK` events as it progresses.

use serde::{Deserialize, Serialize};

/// A task id in Proxmox's format:
/// `UPID:<node>:<pid %08X>:<pstart %08X>:<starttime %08X>:<type>:<id>:<user>:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Upid(pub String);

impl std::fmt::Display for Upid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The OS a container is created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OsTemplate {
    /// LXC's `busybox` template: a shell and init in a second, for tests and demos.
    Busybox,
    /// LXC's `debian` template (debootstrap) with this release (`bookworm`).
    Debian { release: String },
    /// A backend-specific template: a Proxmox volume id (`local:vztmpl/…`) or an LXC template
    /// name with its arguments.
    Named { template: String, args: Vec<String> },
}

/// What a new container gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Name on the host (LXC name, Proxmox hostname); `[a-z0-9-]`, at most 63 bytes.
    pub name: String,
    pub template: OsTemplate,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gb: u64,
    /// Set inside the guest once it runs.
    pub root_password: String,
}

/// `CONTAINER_CREATE` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerCreate {
    pub spec: ContainerSpec,
    /// Who asked (goes into the UPID's user field), e.g. `alice@flotilla`.
    pub user: String,
}

/// What to do to an existing container (`CONTAINER_ACTION`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerOp {
    Start,
    /// Clean shutdown, killed after `timeout_s`.
    Stop {
        timeout_s: u32,
    },
    Restart {
        timeout_s: u32,
    },
    /// Refused while another task on the container runs.
    Delete,
    SetPassword {
        password: String,
    },
    /// Each `Some` is changed; cores and memory live (cgroup limits), the disk only grows.
    Resize {
        cores: Option<u32>,
        memory_mib: Option<u64>,
        disk_gb: Option<u64>,
    },
    SnapshotCreate {
        name: String,
        description: String,
    },
    SnapshotRollback {
        name: String,
    },
    SnapshotDelete {
        name: String,
    },
}

impl ContainerOp {
    /// The Proxmox task type an operation runs as (the UPID's `<type>`).
    pub fn task_type(&self) -> &'static str {
        match self {
            ContainerOp::Start => "vzstart",
            ContainerOp::Stop { .. } => "vzstop",
            ContainerOp::Restart { .. } => "vzreboot",
            ContainerOp::Delete => "vzdestroy",
            ContainerOp::SetPassword { .. } => "vzpasswd",
            ContainerOp::Resize { .. } => "resize",
            ContainerOp::SnapshotCreate { .. } => "vzsnapshot",
            ContainerOp::SnapshotRollback { .. } => "vzrollback",
            ContainerOp::SnapshotDelete { .. } => "vzdelsnapshot",
        }
    }
}

/// `CONTAINER_ACTION` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerAction {
    pub name: String,
    pub op: ContainerOp,
    pub user: String,
}

/// Answer to `CONTAINER_CREATE` and `CONTAINER_ACTION`: the task that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStarted {
    pub upid: Upid,
}

/// Where a task is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    Running,
    Ok,
    Error { message: String },
}

/// A task and its log (`TASK_STATUS` answer, `CONTAINER_TASK` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub upid: Upid,
    /// Proxmox task type: `vzcreate`, `vzstart`, `vzstop`, `vzreboot`, `vzdestroy`, `vzpasswd`,
    /// `resize`, `vzsnapshot`, `vzrollback`, `vzdelsnapshot`.
    pub kind: String,
    /// The container's name.
    pub container: String,
    pub state: TaskState,
    /// Unix milliseconds.
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// Log lines, oldest first (the `CONTAINER_TASK` event carries at most the last 50).
    pub log: Vec<String>,
}

/// `TASK_STATUS` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskQuery {
    pub upid: Upid,
}

/// `CONTAINER_STATUS` and `SNAPSHOT_LIST` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerQuery {
    pub name: String,
}

/// Run state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Running,
    Stopped,
    Frozen,
    /// Being created (its create task runs).
    Creating,
    /// Not on the host (deleted, or never created).
    Missing,
}

/// One sample of a container's use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ContainerSample {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// Fraction of one core, summed over cores, divided by the container's cores (0..1).
    pub cpu: f64,
    pub mem_used: u64,
    pub disk_used: u64,
    /// Cumulative bytes received by the guest.
    pub net_in: u64,
    /// Cumulative bytes sent by the guest.
    pub net_out: u64,
}

/// Live status of one container (`CONTAINER_STATUS` answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    pub state: ContainerState,
    /// Created by this agent; other guests are listed read-only.
    pub managed: bool,
    pub uptime_s: u64,
    pub cores: u32,
    pub mem_max: u64,
    pub disk_max: u64,
    /// The latest sample (zeros when stopped).
    pub now: ContainerSample,
    /// Its IPv4 address on the node's bridge.
    pub ipv4: Option<String>,
    /// Recent samples, oldest first (the ring buffer).
    pub samples: Vec<ContainerSample>,
}

/// `CONTAINER_LIST` answer: every container on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerList {
    pub containers: Vec<ContainerStatus>,
}

/// A snapshot of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub description: String,
    /// Unix seconds.
    pub snaptime: u64,
}

/// `SNAPSHOT_LIST` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotInfo>,
}

/// `CONTAINER_SAMPLES` event: the latest sample of every managed container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSamples {
    pub containers: Vec<(String, ContainerState, ContainerSample)>,
}

/// `CONSOLE_ACCESS` answer: how the guest's console is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleAccess {
    /// A terminal the agent runs on its host: open it with `CONSOLE_OPEN` over the link.
    Terminal,
    /// The backend's own web console (Proxmox's xterm.js/noVNC page), already authorised.
    Url(String),
}

/// `CONSOLE_OPEN` body: a terminal on a container, `cols` × `rows` characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleOpen {
    pub name: String,
    pub cols: u16,
    pub rows: u16,
}

/// What flows on a console stream once `CONSOLE_OPEN` is answered, in both directions, each
/// frame a `u32` big-endian length and the bincode body (see [`crate::io::write_console_frame`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleFrame {
    /// Bytes typed (controller → agent) or printed (agent → controller).
    Data(Vec<u8>),
    /// The viewer's window changed size (controller → agent).
    Resize { cols: u16, rows: u16 },
    /// The shell ended with this exit code, if it had one (agent → controller, last frame).
    Exit(Option<i32>),
}
