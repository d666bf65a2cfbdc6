//! `/api/v1/backup/…`: a node's agent state as a consistent SQLite snapshot (base64 in JSON, or
//! the file itself), and its validated import. The agent leaves its identity out of every
//! snapshot, so a backup never carries the node's private key.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use flotilla_protocol::backup::{ImportReport, StateExport, StateImport};
use flotilla_protocol::codec;
use flotilla_protocol::rpc::{RequestKind, RpcError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{existing_node, node_call_error, ApiError, BasicUser, ErrorBody, JsonBody, NodeIdPath, Query, TAG};
use crate::api::{timestamp, AppState};
use crate::fleet::push::PUSH_TIMEOUT;
use crate::fleet::FleetError;
use crate::store::NodeRecord;

/// A node refusing a backup's content is the caller's 400; other failures as for any node call.
fn rpc_error(node: &NodeRecord, e: FleetError) -> ApiError {
    match e {
        FleetError::Rpc { error: RpcError::BadRequest(why), .. } => {
            ApiError::BadRequest(format!("backup_data: node {} ({}) refused it: {why}", node.id, node.name))
        }
        other => node_call_error(node, other),
    }
}

async fn export(state: &AppState, node: &NodeRecord) -> Result<StateExport, ApiError> {
    let answer = state
        .fleet
        .call(node.id, RequestKind::EXPORT_STATE, vec![], PUSH_TIMEOUT)
        .await
        .map_err(|e| rpc_error(node, e))?;
    codec::decode_from(&answer).map_err(|e| ApiError::Internal(e.to_string()))
}

/// One node's backup.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeBackup {
    pub node: String,
    pub node_id: i64,
    /// Base64 of the SQLite file (the document's name).
    pub backup: String,
    /// The same, under the name the original manager answers with.
    pub backup_b64: String,
    /// Always `base64`.
    pub encoding: &'static str,
    /// Always `sqlite`.
    pub format: &'static str,
    /// Bytes of the SQLite file.
    pub size: usize,
    pub timestamp: String,
}

impl NodeBackup {
    fn of(node: &NodeRecord, export: &StateExport) -> NodeBackup {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&export.sqlite);
        let at = OffsetDateTime::from_unix_timestamp_nanos(export.taken_at_ms as i128 * 1_000_000)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        NodeBackup {
            node: node.name.clone(),
            node_id: node.id.0,
            backup: b64.clone(),
            backup_b64: b64,
            encoding: "base64",
            format: "sqlite",
            size: export.sqlite.len(),
            timestamp: timestamp(at),
        }
    }
}

/// One row of `/backup/all`: a backup, or why the node has none.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BackupRow {
    Backup(NodeBackup),
    Failed { node: String, node_id: i64, error: String },
}

/// Backups of every node.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllBackups {
    pub backups: Vec<BackupRow>,
    /// Nodes backed up (offline nodes have an `error` row instead).
    pub count: usize,
    pub timestamp: String,
}

/// The answer to an import.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    pub success: bool,
    pub node: String,
    /// Clients whose usage (quota accounting) the node took from the backup.
    pub clients_restored: u32,
    /// Revision of the proxy state inside the backup (the controller's desired state is pushed
    /// again after an import).
    pub backup_revision: u64,
    /// Push of the desired state after the import: `applied`, `queued`, …
    pub status: &'static str,
}

/// The message of an error, for per-node results.
fn describe(e: &ApiError) -> String {
    match e {
        ApiError::BadRequest(d) | ApiError::Conflict(d) | ApiError::NotFound(d) | ApiError::Unauthorized(d) => {
            d.clone()
        }
        ApiError::Internal(_) => "internal error".into(),
        other => format!("{other:?}"),
    }
}

/// The node's agent state as a consistent SQLite snapshot, base64 (without its identity).
#[utoipa::path(
    get,
    path = "/api/v1/backup/database/{node_id}",
    operation_id = "get_node_backup",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id")),
    responses(
        (status = 200, description = "The snapshot", body = NodeBackup),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "The node is offline", body = ErrorBody),
    ),
)]
pub async fn get_one(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Json<NodeBackup>, ApiError> {
    let node = existing_node(&state, id)?;
    let export = export(&state, &node).await?;
    Ok(Json(NodeBackup::of(&node, &export)))
}

/// The same snapshot as a file download (as the web UI offers it).
#[utoipa::path(
    get,
    path = "/api/v1/backup/node/{node_id}",
    operation_id = "download_node_backup",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id")),
    responses(
        (status = 200, description = "The SQLite file", content_type = "application/vnd.sqlite3", body = Vec<u8>),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "The node is offline", body = ErrorBody),
    ),
)]
pub async fn download(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
) -> Result<Response, ApiError> {
    let node = existing_node(&state, id)?;
    let export = export(&state, &node).await?;
    let name = format!("attachment; filename=\"flotilla-node-{}.db\"", node.id);
    let disposition = HeaderValue::from_str(&name).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.sqlite3")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        export.sqlite,
    )
        .into_response())
}

/// `?format=` of `/backup/all`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AllQuery {
    /// `zip` (default, as the original manager and its web UI) or `json`.
    format: Option<String>,
}

/// Backups of every node, taken concurrently: a ZIP with `<node>.db` per node (or
/// `<node>.error.txt` saying why there is none), or with `?format=json` the JSON rows.
#[utoipa::path(
    get,
    path = "/api/v1/backup/all",
    operation_id = "all_node_backups",
    tag = TAG,
    security(("basic" = [])),
    params(AllQuery),
    responses(
        (status = 200, description = "A ZIP of every node's backup", content_type = "application/zip", body = Vec<u8>),
        (status = 200, description = "With ?format=json: one row per node", body = AllBackups),
        (status = 400, description = "Unknown format", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
    ),
)]
pub async fn all(_: BasicUser, State(state): State<AppState>, Query(q): Query<AllQuery>) -> Result<Response, ApiError> {
    let json = match q.format.as_deref() {
        None | Some("") | Some("zip") => false,
        Some("json") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("format: must be zip or json, got {other:?}"))),
    };
    let nodes = state.store.nodes()?;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, node) in nodes.iter().cloned().enumerate() {
        let state = state.clone();
        tasks.spawn(async move { (i, export(&state, &node).await) });
    }
    let mut exports: Vec<Option<Result<StateExport, ApiError>>> = (0..nodes.len()).map(|_| None).collect();
    while let Some(Ok((i, result))) = tasks.join_next().await {
        exports[i] = Some(result);
    }
    let now = OffsetDateTime::now_utc();
    if json {
        let backups: Vec<BackupRow> = nodes
            .iter()
            .zip(exports)
            .map(|(node, export)| match export {
                Some(Ok(e)) => BackupRow::Backup(NodeBackup::of(node, &e)),
                Some(Err(e)) => BackupRow::Failed { node: node.name.clone(), node_id: node.id.0, error: describe(&e) },
                None => BackupRow::Failed {
                    node: node.name.clone(),
                    node_id: node.id.0,
                    error: "backup task failed".into(),
                },
            })
            .collect();
        let count = backups.iter().filter(|r| matches!(r, BackupRow::Backup(_))).count();
        return Ok(Json(AllBackups { backups, count, timestamp: timestamp(now) }).into_response());
    }
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    // SQLite pages are stored as they are: the archive is a container, not a compressor.
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (node, export) in nodes.iter().zip(exports) {
        let stem = file_stem(&node.name);
        let (name, bytes) = match export {
            Some(Ok(e)) => (format!("{stem}.db"), e.sqlite),
            Some(Err(e)) => (format!("{stem}.error.txt"), describe(&e).into_bytes()),
            None => (format!("{stem}.error.txt"), b"backup task failed".to_vec()),
        };
        zip.start_file(name, options).map_err(|e| ApiError::Internal(e.to_string()))?;
        std::io::Write::write_all(&mut zip, &bytes).map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    let archive = zip.finish().map_err(|e| ApiError::Internal(e.to_string()))?.into_inner();
    let stamp = time::macros::format_description!("[year][month][day]_[hour][minute][second]");
    let name = format!("attachment; filename=\"all_backups_{}.zip\"", now.format(&stamp).unwrap_or_default());
    let disposition = HeaderValue::from_str(&name).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/zip")),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        archive,
    )
        .into_response())
}

/// A node name made safe as a file name inside the archive.
fn file_stem(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

/// The web UI's import: the `.db` file as multipart field `file`.
#[utoipa::path(
    post,
    path = "/api/v1/backup/node/{node_id}/import",
    operation_id = "import_node_backup_file",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id")),
    request_body(content = Vec<u8>, content_type = "multipart/form-data", description = "Field `file`: the backup"),
    responses(
        (status = 200, description = "Imported", body = ImportResult),
        (status = 400, description = "No file, an empty file, or not a node backup", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "The node is offline", body = ErrorBody),
    ),
)]
pub async fn import_file(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
    mut form: axum::extract::Multipart,
) -> Result<Json<ImportResult>, ApiError> {
    let node = existing_node(&state, id)?;
    let mut file = None;
    while let Some(field) = form.next_field().await.map_err(|e| ApiError::BadRequest(format!("file: {e}")))? {
        if field.name() == Some("file") {
            file = Some(field.bytes().await.map_err(|e| ApiError::BadRequest(format!("file: {e}")))?);
        }
    }
    let file = file.ok_or_else(|| ApiError::BadRequest("file required".into()))?;
    if file.is_empty() {
        return Err(ApiError::BadRequest("empty file".into()));
    }
    Ok(Json(import_into(&state, node, file.to_vec()).await?))
}

/// `POST /api/v1/backup/database/{node_id}` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportBody {
    /// Base64 of a backup made by `GET /api/v1/backup/database/{node_id}`.
    backup_data: Option<String>,
    /// The name the original manager's GET answers with, accepted too.
    backup_b64: Option<String>,
}

/// Validates a backup on the node and restores its per-client usage; the controller's desired
/// state is pushed again afterwards.
#[utoipa::path(
    post,
    path = "/api/v1/backup/database/{node_id}",
    operation_id = "import_node_backup",
    tag = TAG,
    security(("basic" = [])),
    params(("node_id" = i64, Path, description = "Node id")),
    request_body = ImportBody,
    responses(
        (status = 200, description = "Imported", body = ImportResult),
        (status = 400, description = "Not base64, not a SQLite file, damaged, or not a node backup", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "The node is offline", body = ErrorBody),
    ),
)]
pub async fn import(
    _: BasicUser,
    State(state): State<AppState>,
    NodeIdPath(id): NodeIdPath,
    JsonBody(body): JsonBody<ImportBody>,
) -> Result<Json<ImportResult>, ApiError> {
    let node = existing_node(&state, id)?;
    let data = body
        .backup_data
        .or(body.backup_b64)
        .ok_or_else(|| ApiError::BadRequest("backup_data: is required (base64 of a node backup)".into()))?;
    let sqlite = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| ApiError::BadRequest(format!("backup_data: not base64: {e}")))?;
    Ok(Json(import_into(&state, node, sqlite).await?))
}

/// Sends a backup to the node for a validated import, then pushes the desired state again.
async fn import_into(state: &AppState, node: NodeRecord, sqlite: Vec<u8>) -> Result<ImportResult, ApiError> {
    let body = codec::encode_body(&StateImport { sqlite })
        .map_err(|e| ApiError::BadRequest(format!("backup_data: too large to send to the node: {e}")))?;
    let answer = state
        .fleet
        .call(node.id, RequestKind::IMPORT_STATE, body, PUSH_TIMEOUT)
        .await
        .map_err(|e| rpc_error(&node, e))?;
    let report: ImportReport = codec::decode_from(&answer).map_err(|e| ApiError::Internal(e.to_string()))?;
    // The controller's desired state stays the source of truth: make sure the node has it.
    let outcome = state.fleet.push_proxy_state(node.id).await;
    Ok(ImportResult {
        success: true,
        node: node.name,
        clients_restored: report.clients,
        backup_revision: report.revision,
        status: outcome.status(),
    })
}
