//! Request/response RPC, one bi-stream per call, usable in both directions.

use serde::{Deserialize, Serialize};

use crate::ids::RequestId;

/// What a request asks for. A number rather than an enum so that a peer can decode a request of
/// a kind it does not know and answer [`RpcError::Unsupported`] instead of dropping the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestKind(pub u16);

impl RequestKind {
    /// Either direction. Body: empty. Answer: empty. Proves the RPC path end to end.
    pub const PING: RequestKind = RequestKind(1);
    /// Agent → controller. Body: [`crate::enroll::RenewRequest`]. Answer: [`crate::enroll::Renewed`].
    pub const RENEW_CERTIFICATE: RequestKind = RequestKind(2);
    /// Controller → agent. Body: empty. Answer: [`crate::metrics::MetricsSample`] taken now.
    pub const METRICS_NOW: RequestKind = RequestKind(3);
    /// Controller → agent. Body: [`crate::proxy::ProxyState`]. Answer: [`crate::proxy::ApplyReport`]
    /// once the core has taken the change.
    pub const APPLY_PROXY_STATE: RequestKind = RequestKind(4);
    /// Controller → agent. Body: empty. Answer: [`crate::proxy::CoreStatus`] after the restart.
    pub const RESTART_CORE: RequestKind = RequestKind(5);
    /// Controller → agent. Body: [`crate::proxy::LogQuery`]. Answer: `Vec<`[`crate::proxy::LogLine`]`>`.
    pub const CORE_LOGS: RequestKind = RequestKind(6);
    /// Controller → agent. Body: empty. Answer: [`crate::proxy::CoreStatus`] now.
    pub const CORE_STATUS: RequestKind = RequestKind(7);
    /// Controller → agent. Body: empty. Answer: [`crate::backup::StateExport`].
    pub const EXPORT_STATE: RequestKind = RequestKind(8);
    /// Controller → agent. Body: [`crate::backup::StateImport`]. Answer: [`crate::backup::ImportReport`].
    pub const IMPORT_STATE: RequestKind = RequestKind(9);
    /// Controller → agent. Body: [`crate::users::DesiredUsers`]. Answer: [`crate::proxy::ApplyReport`].
    /// Replaces `APPLY_PROXY_STATE` for agents with [`crate::messages::Capabilities::USER_LIFECYCLE`].
    pub const APPLY_USERS: RequestKind = RequestKind(10);
    /// Agent → controller. Body: [`crate::users::LocalChanges`]. Answer:
    /// [`crate::users::LocalChangesApplied`] after the controller's commit.
    pub const LOCAL_USER_CHANGES: RequestKind = RequestKind(11);
    /// Controller → agent. Body: empty. Answer: [`crate::users::UserStats`].
    pub const USER_STATS: RequestKind = RequestKind(12);
    /// Controller → agent. Body: [`crate::users::DnsStatsQuery`]. Answer: `Vec<`[`crate::users::DnsStat`]`>`.
    pub const DNS_STATS: RequestKind = RequestKind(13);
    /// Controller → agent. Body: [`crate::users::StatsReset`]. Answer: empty.
    pub const RESET_STATS: RequestKind = RequestKind(14);
    /// Controller → agent. Body: [`crate::wireguard::WgState`]. Answer:
    /// [`crate::wireguard::WgApplyReport`] once the devices have it.
    pub const APPLY_WIREGUARD: RequestKind = RequestKind(15);
    /// Controller → agent. Body: empty. Answer: [`crate::wireguard::WgStatus`] now.
    pub const WIREGUARD_STATUS: RequestKind = RequestKind(16);
    /// Controller → agent. Body: [`crate::upgrade::AgentUpgrade`]. Answer:
    /// [`crate::upgrade::UpgradeStarted`] once both packages are on the node and the installer runs.
    pub const UPGRADE_AGENT: RequestKind = RequestKind(17);
    /// Agent → controller. Body: [`crate::upgrade::PackageChunkRequest`]. Answer:
    /// [`crate::upgrade::PackageChunk`].
    pub const FETCH_PACKAGE: RequestKind = RequestKind(18);
    /// Controller → agent. Body: [`crate::containers::ContainerCreate`]. Answer:
    /// [`crate::containers::TaskStarted`] once the create task runs.
    pub const CONTAINER_CREATE: RequestKind = RequestKind(19);
    /// Controller → agent. Body: [`crate::containers::ContainerAction`]. Answer:
    /// [`crate::containers::TaskStarted`].
    pub const CONTAINER_ACTION: RequestKind = RequestKind(20);
    /// Controller → agent. Body: [`crate::containers::ContainerQuery`]. Answer:
    /// [`crate::containers::ContainerStatus`].
    pub const CONTAINER_STATUS: RequestKind = RequestKind(21);
    /// Controller → agent. Body: empty. Answer: [`crate::containers::ContainerList`].
    pub const CONTAINER_LIST: RequestKind = RequestKind(22);
    /// Controller → agent. Body: [`crate::containers::ContainerQuery`]. Answer:
    /// [`crate::containers::SnapshotList`].
    pub const SNAPSHOT_LIST: RequestKind = RequestKind(23);
    /// Controller → agent. Body: [`crate::containers::TaskQuery`]. Answer:
    /// [`crate::containers::TaskInfo`] with the whole log.
    pub const TASK_STATUS: RequestKind = RequestKind(24);
    /// Controller → agent. Body: [`crate::containers::ContainerQuery`]. Answer:
    /// [`crate::containers::ConsoleAccess`].
    pub const CONSOLE_ACCESS: RequestKind = RequestKind(25);
    /// Controller → agent. Body: [`crate::containers::ConsoleOpen`]. Answer: empty once the
    /// terminal runs; the stream then carries [`crate::containers::ConsoleFrame`]s both ways until
    /// either side finishes it.
    pub const CONSOLE_OPEN: RequestKind = RequestKind(26);
    /// Controller → agent. Body: [`crate::services::ServiceQuery`]. Answer:
    /// [`crate::services::ServiceList`] (errors as in [`crate::services`]).
    pub const SERVICES_LIST: RequestKind = RequestKind(27);
    /// Controller → agent. Body: [`crate::services::ServiceAction`]. Answer:
    /// [`crate::services::ServiceActionResult`] once systemd's job has ended.
    pub const SERVICE_ACTION: RequestKind = RequestKind(28);
    /// Controller → agent. Body: [`crate::files::FileOp`]. Answer: [`crate::files::FileAnswer`]
    /// (a refusal is an answer too, `FileAnswer::Error`).
    pub const FILE_OP: RequestKind = RequestKind(29);
    /// Controller → agent. Body: [`crate::bandwidth::BandwidthQuery`]. Answer:
    /// [`crate::bandwidth::BandwidthReport`].
    pub const BANDWIDTH: RequestKind = RequestKind(30);
}

/// One call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    /// How long the caller will wait, milliseconds; the callee may give up after it.
    pub deadline_ms: u32,
    pub kind: RequestKind,
    /// bincode of the kind's body type.
    pub body: Vec<u8>,
}

/// The answer to one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: RequestId,
    pub result: RpcResult,
}

/// Success (bincode of the kind's answer type) or a typed failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RpcResult {
    Ok(Vec<u8>),
    Err(RpcError),
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RpcError {
    #[error("request kind {0} is not supported by this peer")]
    Unsupported(u16),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("deadline exceeded")]
    DeadlineExceeded,
    #[error("refused: {0}")]
    Refused(String),
    #[error("failed: {0}")]
    Failed(String),
}
