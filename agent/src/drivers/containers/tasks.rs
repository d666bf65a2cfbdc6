//! Container tasks: every create and action runs in the background under a Proxmox-style UPID,
//! with its state and log in `agent.db` and an event for the link when it starts and ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flotilla_protocol::containers::{TaskInfo, TaskState, Upid};
use tokio::sync::broadcast;

use crate::state::{StateError, StateStore};

/// Ended tasks kept in `agent.db`.
pub const TASKS_KEPT: usize = 500;
/// Log lines a `CONTAINER_TASK` event carries (the newest).
pub const EVENT_LOG_LINES: usize = 50;
/// The error a task left running by a previous agent process ends with.
pub const INTERRUPTED: &str = "the agent restarted while the task ran";

/// The parts of a UPID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpidParts {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    /// Unix seconds.
    pub starttime: u64,
    pub kind: String,
    pub id: String,
    pub user: String,
}

/// A UPID that is not in Proxmox's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a UPID: {0:?}")]
pub struct UpidError(pub String);

impl UpidParts {
    /// `UPID:<node>:<pid %08X>:<pstart %08X>:<starttime %08X>:<type>:<id>:<user>:`.
    pub fn format(&self) -> Upid {
        Upid(format!(
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.kind, self.id, self.user
        ))
    }

    /// The reverse of [`UpidParts::format`].
    pub fn parse(upid: &str) -> Result<UpidParts, UpidError> {
        let bad = || UpidError(upid.into());
        let rest = upid.strip_prefix("UPID:").and_then(|r| r.strip_suffix(':')).ok_or_else(bad)?;
        let fields: Vec<&str> = rest.split(':').collect();
        let [node, pid, pstart, starttime, kind, id, user] = fields[..] else { return Err(bad()) };
        let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad());
        if node.is_empty() || kind.is_empty() {
            return Err(bad());
        }
        Ok(UpidParts {
            node: node.into(),
            pid: u32::try_from(hex(pid)?).map_err(|_| bad())?,
            pstart: hex(pstart)?,
            starttime: hex(starttime)?,
            kind: kind.into(),
            id: id.into(),
            user: user.into(),
        })
    }
}

/// A task that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{container} is busy: task {upid} runs on it")]
    Busy { container: String, upid: Upid },
    #[error(transparent)]
    State(#[from] StateError),
}

/// This process as UPIDs name it: host name, pid and the pid's start time in clock ticks.
#[derive(Debug, Clone)]
pub struct Origin {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
}

impl Origin {
    /// This agent process.
    pub fn current() -> Origin {
        // A host name with a colon would break the UPID's fields.
        let node = sysinfo::System::host_name().unwrap_or_else(|| "localhost".into()).replace(':', "-");
        let pid = std::process::id();
        Origin { node, pid, pstart: process_start_ticks(pid).unwrap_or(0) }
    }
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks after boot.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its closing one.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The running tasks (one at most per container), their store and their events.
pub struct TaskRegistry {
    store: StateStore,
    origin: Origin,
    running: Mutex<HashMap<String, Upid>>,
    events: broadcast::Sender<TaskInfo>,
}

impl TaskRegistry {
    /// Marks tasks a previous agent left `Running` as failed, then starts empty.
    pub fn open(store: StateStore, origin: Origin) -> Result<TaskRegistry, StateError> {
        let failed = store.fail_interrupted_tasks(INTERRUPTED, now_ms())?;
        if failed > 0 {
            tracing::warn!(failed, "container tasks interrupted by an agent restart marked as failed");
        }
        let (events, _) = broadcast::channel(256);
        Ok(TaskRegistry { store, origin, running: Mutex::new(HashMap::new()), events })
    }

    /// Task starts and ends, for the link's `CONTAINER_TASK` events (log cut to the newest
    /// [`EVENT_LOG_LINES`]).
    pub fn subscribe(&self) -> broadcast::Receiver<TaskInfo> {
        self.events.subscribe()
    }

    /// The task running on `container`, if any.
    pub fn running_on(&self, container: &str) -> Option<Upid> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).get(container).cloned()
    }

    /// Registers a task of `kind` on `container`; refused while another task runs on it (one
    /// operation at a time per container, like Proxmox's per-guest lock).
    pub fn begin(self: &Arc<Self>, kind: &str, container: &str, user: &str) -> Result<TaskHandle, TaskError> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(upid) = running.get(container) {
            return Err(TaskError::Busy { container: container.into(), upid: upid.clone() });
        }
        let started_ms = now_ms();
        let mut parts = UpidParts {
            node: self.origin.node.clone(),
            pid: self.origin.pid,
            pstart: self.origin.pstart,
            starttime: started_ms / 1000,
            kind: kind.into(),
            id: container.into(),
            user: user.into(),
        };
        // Two tasks of one kind on one container within a second would share a UPID: move the
        // later one's start forward until it is unique.
        while self.store.task_exists(&parts.format().0)? {
            parts.starttime += 1;
        }
        let info = TaskInfo {
            upid: parts.format(),
            kind: kind.into(),
            container: container.into(),
            state: TaskState::Running,
            started_ms,
            ended_ms: None,
            log: vec![],
        };
        self.store.insert_task(&info)?;
        running.insert(container.into(), info.upid.clone());
        drop(running);
        let _ = self.events.send(info.clone());
        Ok(TaskHandle { registry: self.clone(), info: Mutex::new(info), finished: Mutex::new(false) })
    }

    /// A task with its whole log.
    pub fn get(&self, upid: &Upid) -> Result<Option<TaskInfo>, StateError> {
        self.store.task(upid)
    }
}

/// One running task: its log, and how it ends. Dropped without [`TaskHandle::finish`], it ends
/// as an error (a panic in its work, say) so its container is not locked forever.
pub struct TaskHandle {
    registry: Arc<TaskRegistry>,
    info: Mutex<TaskInfo>,
    finished: Mutex<bool>,
}

impl TaskHandle {
    /// The task's id.
    pub fn upid(&self) -> Upid {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).upid.clone()
    }

    /// Adds a line to the log (in `agent.db` at once, so `TASK_STATUS` sees it).
    pub fn log(&self, line: impl Into<String>) {
        let line: String = line.into();
        // One entry per line, as Proxmox's task logs.
        for l in line.lines() {
            let mut info = self.info.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = self.registry.store.append_task_log(&info.upid, l) {
                tracing::warn!(upid = %info.upid, error = %e, "cannot store a task log line");
            }
            info.log.push(l.to_string());
        }
    }

    /// Ends the task: Ok, or an error whose message also becomes the last log line.
    pub fn finish(&self, result: Result<(), String>) {
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        if *finished {
            return;
        }
        *finished = true;
        let state = match result {
            Ok(()) => {
                self.log("TASK OK");
                TaskState::Ok
            }
            Err(message) => {
                self.log(format!("TASK ERROR: {message}"));
                TaskState::Error { message }
            }
        };
        let ended = now_ms();
        let mut event = {
            let mut info = self.info.lock().unwrap_or_else(|p| p.into_inner());
            info.state = state.clone();
            info.ended_ms = Some(ended);
            info.clone()
        };
        if let Err(e) = self.registry.store.finish_task(&event.upid, &state, ended, TASKS_KEPT) {
            tracing::warn!(upid = %event.upid, error = %e, "cannot store a task's end");
        }
        self.registry.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&event.container);
        let skip = event.log.len().saturating_sub(EVENT_LOG_LINES);
        event.log.drain(..skip);
        let _ = self.registry.events.send(event);
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        self.finish(Err("the task ended without a result".into()));
    }
}
