//! `/api/v1/agent-packages` and `/api/v1/rollouts`: the catalog of `flotilla-agent` packages and
//! rolling upgrades of the fleet's agents (Flotilla's own routes in this family; admins only).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{blocking, ApiError, BasicUser, ErrorBody, JsonBody, TAG};
use crate::agent_package::AgentPackage;
use crate::api::{timestamp, AppState};
use crate::store::{
    AgentPackageRecord, NewRollout, NodeUpgradeState, PackageAdded, Role, RolloutNodeRecord, RolloutView, StoreError,
};

/// Largest package accepted (the agent's .deb is about 5 MB).
pub const MAX_PACKAGE: usize = 64 * 1024 * 1024;
/// Health timeout when the request names none.
pub const DEFAULT_HEALTH_TIMEOUT_S: u32 = 120;
/// Batch size when the request names none.
pub const DEFAULT_BATCH_SIZE: u32 = 5;

fn admin(user: &BasicUser) -> Result<(), ApiError> {
    match user.0.role {
        Role::Admin => Ok(()),
        _ => Err(ApiError::Forbidden("only administrators manage agent packages and rollouts".into())),
    }
}

/// A package of the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentPackageInfo {
    /// Debian version (`0.2.0-1`), the catalog's key.
    pub version: String,
    /// Debian architecture (`amd64`).
    pub architecture: String,
    /// SHA-256 of the .deb, hex.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// UTC, `YYYY-MM-DDTHH:MM:SS`.
    pub added_at: String,
    /// Whether this upload added it (false: the same file was there already). Only in the
    /// answer to an upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added: Option<bool>,
}

impl From<AgentPackageRecord> for AgentPackageInfo {
    fn from(p: AgentPackageRecord) -> Self {
        AgentPackageInfo {
            version: p.version,
            architecture: p.arch,
            sha256: hex::encode(p.sha256),
            size: p.size,
            added_at: timestamp(p.added_at),
            added: None,
        }
    }
}

/// Checks a .deb and adds it to the catalog (shared by the API and the CLI).
pub fn add_package(store: &crate::store::Store, data: &[u8]) -> Result<(AgentPackageRecord, PackageAdded), ApiError> {
    let package = AgentPackage::inspect(data).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let added = store.add_agent_package(&package.version, &package.arch, package.sha256, data)?;
    let record = store
        .agent_package(&package.version)?
        .ok_or_else(|| ApiError::Internal("the package vanished after it was added".into()))?;
    Ok((record, added))
}

/// List the agent packages of the rollout catalog.
#[utoipa::path(
    get,
    path = "/api/v1/agent-packages",
    operation_id = "list_agent_packages",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "The catalog, newest first", body = [AgentPackageInfo]),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
    ),
)]
pub async fn list_packages(
    user: BasicUser,
    State(state): State<AppState>,
) -> Result<Json<Vec<AgentPackageInfo>>, ApiError> {
    admin(&user)?;
    let store = state.store.clone();
    let packages = blocking(move || store.agent_packages()).await?;
    Ok(Json(packages.into_iter().map(Into::into).collect()))
}

/// Upload a flotilla-agent .deb to the rollout catalog.
///
/// The body is the file itself. Its control file must name `flotilla-agent`; its version becomes
/// the catalog key that rollouts name.
#[utoipa::path(
    post,
    path = "/api/v1/agent-packages",
    operation_id = "add_agent_package",
    tag = TAG,
    security(("basic" = [])),
    request_body(content = Vec<u8>, content_type = "application/vnd.debian.binary-package",
        description = "The flotilla-agent .deb file itself (at most 64 MiB)"),
    responses(
        (status = 200, description = "In the catalog (`added`: false when the same file was there already)", body = AgentPackageInfo),
        (status = 400, description = "Not a flotilla-agent Debian package", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 409, description = "Another file with the same version is in the catalog", body = ErrorBody),
        (status = 413, description = "Larger than 64 MiB", body = ErrorBody),
    ),
)]
pub async fn add_package_route(
    user: BasicUser,
    State(state): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<AgentPackageInfo>, ApiError> {
    admin(&user)?;
    let data = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::BadRequest(format!("cannot read the package: {e}")),
    })?;
    let store = state.store.clone();
    let (record, added) = blocking(move || add_package(&store, &data)).await?;
    tracing::info!(version = %record.version, added = ?added, "agent package uploaded");
    Ok(Json(AgentPackageInfo { added: Some(added == PackageAdded::Added), ..record.into() }))
}

/// Remove an agent package from the catalog.
#[utoipa::path(
    delete,
    path = "/api/v1/agent-packages/{version}",
    operation_id = "delete_agent_package",
    tag = TAG,
    security(("basic" = [])),
    params(("version" = String, Path, description = "Debian version of the package")),
    responses(
        (status = 200, description = "Removed", body = Deleted),
        (status = 400, description = "A running rollout installs it", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No such version in the catalog", body = ErrorBody),
    ),
)]
pub async fn delete_package(
    user: BasicUser,
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    admin(&user)?;
    let store = state.store.clone();
    let v = version.clone();
    let deleted = blocking(move || store.delete_agent_package(&v)).await?;
    if !deleted {
        return Err(ApiError::NotFound(format!("flotilla-agent package {version} not found")));
    }
    Ok(Json(Deleted { success: true, message: format!("package {version} removed from the catalog") }))
}

/// Answer to a removal.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub success: bool,
    pub message: String,
}

/// `POST /api/v1/rollouts` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRollout {
    /// Catalog version to install. Required.
    #[schema(value_type = String, required = true)]
    version: Option<String>,
    /// Nodes per wave after the canary [default: 5].
    #[schema(minimum = 1)]
    batch_size: Option<u32>,
    /// Upgrade one node alone first [default: true].
    canary: Option<bool>,
    /// Seconds each node has, once its new package is installed, to reconnect on the new version;
    /// a node that does not is rolled back by its own installer and stops the rollout [default: 120].
    #[schema(minimum = 1)]
    health_timeout_s: Option<u32>,
    /// Nodes to upgrade, in this order [default: every node, by id].
    nodes: Option<Vec<i64>>,
}

/// Nodes of a rollout counted by state.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Progress {
    pub total: usize,
    pub pending: usize,
    pub upgrading: usize,
    pub upgraded: usize,
    pub failed: usize,
    pub rolled_back: usize,
    pub skipped: usize,
}

/// One node of a rollout.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutNode {
    pub node_id: i64,
    /// Its name when the rollout started.
    pub name: String,
    /// 0 is the canary; null for a skipped node.
    pub wave: Option<u32>,
    /// `pending`, `upgrading`, `upgraded`, `failed`, `rolled_back` or `skipped`.
    pub state: String,
    /// Package version it ran before.
    pub from_version: Option<String>,
    /// Why it was skipped, failed or rolled back.
    pub message: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// A rollout and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rollout {
    pub id: i64,
    /// The package version being installed.
    pub version: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// How it ended (or why it stopped).
    pub message: Option<String>,
    pub batch_size: u32,
    pub canary: bool,
    pub health_timeout_s: u32,
    pub created_by: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// Wave being worked on (null once finished).
    pub current_wave: Option<u32>,
    pub progress: Progress,
    pub nodes: Vec<RolloutNode>,
}

impl From<RolloutView> for Rollout {
    fn from(v: RolloutView) -> Self {
        let mut progress = Progress { total: v.nodes.len(), ..Default::default() };
        for n in &v.nodes {
            *match n.state {
                NodeUpgradeState::Pending => &mut progress.pending,
                NodeUpgradeState::Upgrading => &mut progress.upgrading,
                NodeUpgradeState::Upgraded => &mut progress.upgraded,
                NodeUpgradeState::Failed => &mut progress.failed,
                NodeUpgradeState::RolledBack => &mut progress.rolled_back,
                NodeUpgradeState::Skipped => &mut progress.skipped,
            } += 1;
        }
        let running = v.rollout.state == crate::store::RolloutState::Running;
        let current_wave = running
            .then(|| {
                v.nodes
                    .iter()
                    .filter(|n| matches!(n.state, NodeUpgradeState::Pending | NodeUpgradeState::Upgrading))
                    .map(|n| n.wave)
                    .min()
            })
            .flatten();
        Rollout {
            id: v.rollout.id.0,
            version: v.rollout.version,
            state: v.rollout.state.as_str().into(),
            message: v.rollout.message,
            batch_size: v.rollout.batch_size,
            canary: v.rollout.canary,
            health_timeout_s: v.rollout.health_timeout_s,
            created_by: v.rollout.created_by,
            created_at: timestamp(v.rollout.created_at),
            finished_at: v.rollout.finished_at.map(timestamp),
            current_wave,
            progress,
            nodes: v.nodes.into_iter().map(RolloutNode::from).collect(),
        }
    }
}

impl From<RolloutNodeRecord> for RolloutNode {
    fn from(n: RolloutNodeRecord) -> Self {
        RolloutNode {
            node_id: n.node_id.0,
            name: n.node_name,
            wave: (n.wave != u32::MAX).then_some(n.wave),
            state: n.state.as_str().into(),
            from_version: n.from_version,
            message: n.message,
            started_at: n.started_at.map(timestamp),
            finished_at: n.finished_at.map(timestamp),
        }
    }
}

/// The rollout `body` asks for, with defaults applied (shared by the API and the CLI).
pub fn new_rollout(
    version: Option<String>,
    batch_size: Option<u32>,
    canary: Option<bool>,
    health_timeout_s: Option<u32>,
    nodes: Option<Vec<i64>>,
    created_by: &str,
) -> Result<NewRollout, ApiError> {
    let version = version.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let version = version.ok_or_else(|| ApiError::BadRequest("field 'version' is required".into()))?;
    let nodes = nodes
        .map(|ids| {
            ids.into_iter()
                .map(|id| match id {
                    1.. => Ok(flotilla_protocol::NodeId(id)),
                    _ => Err(ApiError::BadRequest(format!("nodes: {id} is not a node id"))),
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    if nodes.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::BadRequest("nodes must not be empty (leave it out for every node)".into()));
    }
    Ok(NewRollout {
        version,
        batch_size: batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
        canary: canary.unwrap_or(true),
        health_timeout_s: health_timeout_s.unwrap_or(DEFAULT_HEALTH_TIMEOUT_S),
        nodes,
        created_by: created_by.to_string(),
    })
}

/// Start a rolling upgrade of the fleet's agents.
///
/// Waves: one canary node, then batches of `batch_size`. Each node fetches the package over its
/// link, installs it and must reconnect on the new version within `health_timeout_s`; one that
/// does not reinstalls its previous package, and the rollout stops there.
#[utoipa::path(
    post,
    path = "/api/v1/rollouts",
    operation_id = "create_rollout",
    tag = TAG,
    security(("basic" = [])),
    request_body = CreateRollout,
    responses(
        (status = 200, description = "Started; follow it at GET /api/v1/rollouts/{id}", body = Rollout),
        (status = 400, description = "Bad field, no nodes, or another rollout still running", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No such package version or node", body = ErrorBody),
    ),
)]
pub async fn create(
    user: BasicUser,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateRollout>,
) -> Result<Json<Rollout>, ApiError> {
    admin(&user)?;
    let new =
        new_rollout(body.version, body.batch_size, body.canary, body.health_timeout_s, body.nodes, &user.0.username)?;
    let store = state.store.clone();
    let view = tokio::task::spawn_blocking(move || store.create_rollout(&new))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            other => other.into(),
        })?;
    tracing::info!(rollout = view.rollout.id.0, version = %view.rollout.version, by = %user.0.username, "rollout created");
    state.rollouts.wake();
    Ok(Json(view.into()))
}

/// List rollouts, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/rollouts",
    operation_id = "list_rollouts",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "Every rollout, newest first", body = [Rollout]),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
    ),
)]
pub async fn list(user: BasicUser, State(state): State<AppState>) -> Result<Json<Vec<Rollout>>, ApiError> {
    admin(&user)?;
    let store = state.store.clone();
    let views = blocking(move || store.rollouts()).await?;
    Ok(Json(views.into_iter().map(Into::into).collect()))
}

fn rollout_id(raw: &str) -> Result<flotilla_protocol::upgrade::RolloutId, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .map(flotilla_protocol::upgrade::RolloutId)
        .ok_or_else(|| ApiError::BadRequest(format!("rollout_id must be a positive integer, got {raw:?}")))
}

/// Progress of one rollout.
#[utoipa::path(
    get,
    path = "/api/v1/rollouts/{rollout_id}",
    operation_id = "get_rollout",
    tag = TAG,
    security(("basic" = [])),
    params(("rollout_id" = i64, Path, description = "Rollout id", minimum = 1)),
    responses(
        (status = 200, description = "The rollout and every node's progress", body = Rollout),
        (status = 400, description = "`rollout_id` is not a positive integer", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No such rollout", body = ErrorBody),
    ),
)]
pub async fn get_one(
    user: BasicUser,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Rollout>, ApiError> {
    admin(&user)?;
    let id = rollout_id(&raw)?;
    let store = state.store.clone();
    let view = blocking(move || store.rollout(id)).await?;
    view.map(|v| Json(v.into())).ok_or_else(|| ApiError::NotFound(format!("rollout {id} not found")))
}

/// Cancel a running rollout.
#[utoipa::path(
    post,
    path = "/api/v1/rollouts/{rollout_id}/cancel",
    operation_id = "cancel_rollout",
    tag = TAG,
    security(("basic" = [])),
    params(("rollout_id" = i64, Path, description = "Rollout id", minimum = 1)),
    responses(
        (status = 200, description = "Cancelled: no further wave starts (nodes already upgrading finish)", body = Rollout),
        (status = 400, description = "Not running any more", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No such rollout", body = ErrorBody),
    ),
)]
pub async fn cancel(
    user: BasicUser,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Rollout>, ApiError> {
    admin(&user)?;
    let id = rollout_id(&raw)?;
    let store = state.store.clone();
    let by = user.0.username.clone();
    let view = blocking(move || cancel_rollout(&store, id, &by)).await?;
    Ok(Json(view.into()))
}

/// Cancels a running rollout (shared by the API and the CLI).
pub fn cancel_rollout(
    store: &crate::store::Store,
    id: flotilla_protocol::upgrade::RolloutId,
    by: &str,
) -> Result<RolloutView, ApiError> {
    let view = store.rollout(id)?.ok_or_else(|| ApiError::NotFound(format!("rollout {id} not found")))?;
    let message = format!("cancelled by {by}");
    if !store.finish_rollout(id, crate::store::RolloutState::Cancelled, &message)? {
        return Err(ApiError::BadRequest(format!("rollout {id} is {} already", view.rollout.state.as_str())));
    }
    tracing::info!(rollout = id.0, %by, "rollout cancelled");
    store.rollout(id)?.ok_or_else(|| ApiError::NotFound(format!("rollout {id} not found")))
}
