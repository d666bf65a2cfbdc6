//! Files on a node (`files:read|write|delete`), in the document's shapes and the official
//! clients' (`GET /v1/files/accessible-directories`, `?user_id=`, `POST /v1/files`, `DELETE
//! /v1/files` with a JSON body `{paths, permanent}`, the trash under `/v1/files/trash`).
//!
//! A delete moves entries into their root's trash on the node unless `permanent` is true; the
//! trash is listed, restored from, and removed for good through its own endpoints.
//!
//! Everything happens inside the node's `[files] roots` (its agent refuses anything else: `..`,
//! other absolute paths, symbolic links leading out, devices, FIFOs and sockets answer 403).
//! Accounts do not exist yet, so `user_id` is accepted and not used: the roots are the node's;
//! per-account homes come with accounts. Keys of USER-role users are refused (the roots are not
//! theirs). Content is text: `content` is the file as UTF-8 with `encoding: "utf-8"`; a file that
//! is not UTF-8 comes as base64 with `encoding: "base64"`, and a write with `encoding: "base64"`
//! sends base64.

use std::time::Duration;

use crate::store::iso_ms;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine;
use flotilla_protocol::codec;
use flotilla_protocol::files::{FileAnswer, FileEntry, FileErrorKind, FileKind, FileOp, FileWrite, TrashEntry, CHUNK};
use flotilla_protocol::rpc::{RequestKind, RpcError};
use flotilla_protocol::NodeId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Caller, SignedBody};
use super::node::{self, NodeChoice};
use super::{ok, ok_with, ApiError};
use crate::api::AppState;
use crate::fleet::FleetError;

/// How long one call to the agent may take.
const CALL: Duration = Duration::from_secs(30);
/// Trash entries a page by default, and at most.
const TRASH_LIMIT: u32 = 100;
const TRASH_LIMIT_MAX: u32 = 1000;

/// The scope, and that the key may act on the node's roots.
fn allow(caller: &Caller, scope: &str) -> Result<(), ApiError> {
    caller.require(scope)?;
    if caller.scope_user().is_some() {
        return Err(ApiError::forbidden(
            "FORBIDDEN",
            "files are served to administrators' keys only until accounts (with their own home directories) exist",
        ));
    }
    Ok(())
}

fn call_error(e: FleetError) -> ApiError {
    match e {
        FleetError::Rpc { node, error: RpcError::Unsupported(_) } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "FILES_UNAVAILABLE",
            format!("node {} serves no files", node.0),
        )
        .details("set [files] roots in the node's agent.toml (or upgrade its agent)"),
        FleetError::Rpc { error: RpcError::BadRequest(why), .. } => ApiError::bad(why),
        other => node::link_error(other, CALL),
    }
}

fn is_trash(request: &FileOp) -> bool {
    matches!(
        request,
        FileOp::Trash { .. }
            | FileOp::TrashList { .. }
            | FileOp::TrashStats
            | FileOp::TrashRestore { .. }
            | FileOp::TrashDelete { .. }
            | FileOp::TrashEmpty
    )
}

/// One `FILE_OP`; refusals become the family's errors.
async fn op(state: &AppState, node: NodeId, request: &FileOp) -> Result<FileAnswer, ApiError> {
    let body = codec::encode_body(request).map_err(ApiError::internal)?;
    let answer = state.fleet.call(node, RequestKind::FILE_OP, body, CALL).await.map_err(|e| match e {
        // The agent answers every operation it can decode with a `FileAnswer`: a body it cannot
        // decode is one added after it was built.
        FleetError::Rpc { node, error: RpcError::BadRequest(_) } if is_trash(request) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TRASH_UNAVAILABLE",
            format!("node {}'s agent keeps no trash", node.0),
        )
        .details("upgrade its agent, or delete with permanent: true"),
        other => call_error(other),
    })?;
    match codec::decode_from::<FileAnswer>(&answer).map_err(ApiError::internal)? {
        FileAnswer::Error(e) => {
            let (status, code) = match e.kind {
                FileErrorKind::Forbidden => (StatusCode::FORBIDDEN, "FORBIDDEN"),
                FileErrorKind::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
                FileErrorKind::BadInput => (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
                FileErrorKind::Exists | FileErrorKind::Conflict => (StatusCode::CONFLICT, "CONFLICT"),
                FileErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
                FileErrorKind::Failed => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
            };
            Err(ApiError::new(status, code, e.message))
        }
        other => Ok(other),
    }
}

fn unexpected(answer: FileAnswer) -> ApiError {
    ApiError::internal(format!("unexpected answer from the agent: {answer:?}"))
}

/// A `user_id` as the clients send it (number or string); accepted, not used yet.
fn user_id(value: &Option<Value>) -> Option<String> {
    match value {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Query of the GET routes.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FilesQuery {
    pub node_id: Option<i64>,
    pub user_id: Option<String>,
    pub path: Option<String>,
    pub show_hidden: Option<String>,
    pub permanent: Option<String>,
    pub page: Option<String>,
    pub limit: Option<String>,
}

impl FilesQuery {
    fn node(&self) -> NodeChoice {
        NodeChoice { node_id: self.node_id }
    }
}

/// `GET /v1/files/accessible-directories[?user_id=&node_id=]`: `data.directories[]`, `[0]` the
/// default root.
pub async fn accessible(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FilesQuery>,
) -> Result<Json<Value>, ApiError> {
    allow(&caller, "files:read")?;
    let node = node::select(&state, q.node()).await?;
    match op(&state, node, &FileOp::Roots).await? {
        FileAnswer::Roots { dirs } => Ok(ok(json!({ "directories": dirs, "node_id": node.0, "user_id": q.user_id }))),
        other => Err(unexpected(other)),
    }
}

/// The `type` of an entry as the official clients compare it: a directory is `folder` (the WHMCS
/// module's file manager opens only those; the document's example says `directory`, `is_dir`
/// says it too).
fn type_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Directory => "folder",
        other => other.as_str(),
    }
}

/// Bytes for people: `512 B`, `4.0 KB`, `1.5 MB` (powers of 1024, as file managers show them).
fn size_formatted(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Unix ms as `2026-03-07 12:00` (UTC), the file manager's Modified column.
fn modified_str(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

fn entry_json(dir: &str, e: &FileEntry) -> Value {
    let path = if dir.is_empty() { e.name.clone() } else { format!("{}/{}", dir.trim_end_matches('/'), e.name) };
    let permissions = format!("{:04o}", e.mode);
    json!({
        "name": e.name,
        "path": path,
        "type": type_name(e.kind),
        "is_dir": e.kind == FileKind::Directory,
        "size": e.size,
        "size_formatted": size_formatted(e.size),
        "permissions": permissions,
        "permissions_octal": permissions,
        "owner": e.owner,
        "group": e.group,
        "modified_at": iso_ms(e.modified_ms),
        "modified_str": modified_str(e.modified_ms),
    })
}

/// `GET /v1/files?path=[&user_id=&show_hidden=&node_id=]`: `data.files[]` (the document's entry
/// fields) and `data.path`; no `path` lists the first root.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FilesQuery>,
) -> Result<Json<Value>, ApiError> {
    allow(&caller, "files:read")?;
    let node = node::select(&state, q.node()).await?;
    let show_hidden = matches!(q.show_hidden.as_deref(), Some("1" | "true" | "yes"));
    let mut path = q.path.clone().unwrap_or_default();
    if path.is_empty() {
        if let FileAnswer::Roots { dirs } = op(&state, node, &FileOp::Roots).await? {
            path = dirs.into_iter().next().unwrap_or_default();
        }
    }
    match op(&state, node, &FileOp::List { path: path.clone(), show_hidden }).await? {
        FileAnswer::List { entries } => {
            let files: Vec<Value> = entries.iter().map(|e| entry_json(&path, e)).collect();
            Ok(ok(json!({ "path": path, "files": files, "total": files.len(), "node_id": node.0 })))
        }
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/files/content?path=[&user_id=&node_id=]`: `data.content` (text), `data.encoding`
/// (`utf-8`, or `base64` for a file that is not UTF-8).
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FilesQuery>,
) -> Result<Json<Value>, ApiError> {
    allow(&caller, "files:read")?;
    let path = q.path.clone().filter(|p| !p.is_empty()).ok_or_else(|| ApiError::bad("path is required"))?;
    let node = node::select(&state, q.node()).await?;
    let mut bytes = vec![];
    let mut first: Option<(u64, i64)> = None;
    loop {
        let request = FileOp::Read { path: path.clone(), offset: bytes.len() as u64, max_bytes: CHUNK as u32 };
        match op(&state, node, &request).await? {
            FileAnswer::Content { bytes: chunk, size, truncated, modified_ms } => {
                if first.is_some_and(|f| f != (size, modified_ms)) {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "CONFLICT",
                        format!("{path} changed while being read"),
                    ));
                }
                first = Some((size, modified_ms));
                let empty = chunk.is_empty();
                bytes.extend_from_slice(&chunk);
                if !truncated || empty {
                    break;
                }
            }
            other => return Err(unexpected(other)),
        }
    }
    let (size, modified_ms) = first.unwrap_or_default();
    let (content, encoding) = match String::from_utf8(bytes) {
        Ok(text) => (text, "utf-8"),
        Err(e) => (base64::engine::general_purpose::STANDARD.encode(e.into_bytes()), "base64"),
    };
    Ok(ok(json!({
        "path": path,
        "content": content,
        "encoding": encoding,
        "size": size,
        "modified_at": iso_ms(modified_ms),
        "node_id": node.0,
    })))
}

/// Body of `PUT /v1/files/content` and `POST /v1/files`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WriteBody {
    pub user_id: Option<Value>,
    pub node_id: Option<i64>,
    pub path: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub content: Option<String>,
    /// `utf-8` (default) or `base64`.
    pub encoding: Option<String>,
}

impl WriteBody {
    fn node(&self, q: &FilesQuery) -> NodeChoice {
        NodeChoice { node_id: self.node_id.or(q.node_id) }
    }

    fn bytes(&self) -> Result<Vec<u8>, ApiError> {
        let content = self.content.clone().unwrap_or_default();
        match self.encoding.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("" | "utf-8" | "utf8" | "text" | "plain") => Ok(content.into_bytes()),
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(content.trim())
                .map_err(|e| ApiError::bad(format!("content is not valid base64: {e}"))),
            Some(other) => Err(ApiError::bad(format!("encoding {other:?}: use utf-8 or base64"))),
        }
    }
}

/// The request body, up to the family's `body_limit` (axum's own 2 MB default would cut a file
/// write short; the signature check has buffered it already).
/// An empty body and WHMCS's `[]` (what it sends when it has no fields) read as no fields.
fn parse<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    let meaningful: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    if meaningful.is_empty() || meaningful == b"[]" {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

/// Writes a whole file, in chunks when it is larger than one frame.
async fn write_file(
    state: &AppState,
    node: NodeId,
    path: &str,
    content: Vec<u8>,
    create_only: bool,
) -> Result<(), ApiError> {
    if content.len() <= CHUNK {
        let w = FileWrite { path: path.into(), content, create_only, upload: 0, offset: 0, finish: true };
        op(state, node, &FileOp::Write(w)).await?;
        return Ok(());
    }
    let upload = rand::random::<u64>() | 1;
    let chunks: Vec<&[u8]> = content.chunks(CHUNK).collect();
    let mut offset = 0u64;
    for (i, chunk) in chunks.iter().enumerate() {
        let w = FileWrite {
            path: path.into(),
            content: chunk.to_vec(),
            create_only,
            upload,
            offset,
            finish: i + 1 == chunks.len(),
        };
        op(state, node, &FileOp::Write(w)).await?;
        offset += chunk.len() as u64;
    }
    Ok(())
}

/// `PUT /v1/files/content {path, content[, encoding, user_id, node_id]}`: replaces (or
/// creates) the file atomically, keeping its mode.
pub async fn write(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FilesQuery>,
    SignedBody(body): SignedBody,
) -> Result<Json<Value>, ApiError> {
    allow(&caller, "files:write")?;
    let b: WriteBody = parse(&body)?;
    let path = b.path.clone().filter(|p| !p.is_empty()).ok_or_else(|| ApiError::bad("path is required"))?;
    if b.content.is_none() {
        return Err(ApiError::bad("content is required"));
    }
    let content = b.bytes()?;
    let node = node::select(&state, b.node(&q)).await?;
    let size = content.len();
    write_file(&state, node, &path, content, false).await?;
    tracing::info!(key = %caller.key.key_prefix(), node_id = %node, %path, size, "external API: file written");
    Ok(ok_with(json!({ "path": path, "size": size, "node_id": node.0, "user_id": user_id(&b.user_id) }), "File saved"))
}

/// `POST /v1/files {path (the parent directory), name, type: file|folder|directory[, content,
/// encoding]}`: 201, 409 when it exists.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FilesQuery>,
    SignedBody(body): SignedBody,
) -> Result<impl IntoResponse, ApiError> {
    allow(&caller, "files:write")?;
    let b: WriteBody = parse(&body)?;
    let parent = b.path.clone().unwrap_or_default();
    let name = b.name.clone().filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad("name is required"))?;
    let kind = match b.kind.as_deref().unwrap_or("file").to_ascii_lowercase().as_str() {
        "file" => FileKind::File,
        "folder" | "directory" | "dir" => FileKind::Directory,
        other => return Err(ApiError::bad(format!("type {other:?}: use file, folder or directory"))),
    };
    let content = b.bytes()?;
    if kind == FileKind::Directory && !content.is_empty() {
        return Err(ApiError::bad("a folder has no content"));
    }
    let node = node::select(&state, b.node(&q)).await?;
    let mut parent = parent;
    if parent.is_empty() {
        if let FileAnswer::Roots { dirs } = op(&state, node, &FileOp::Roots).await? {
            parent = dirs.into_iter().next().unwrap_or_default();
        }
    }
    let full = format!("{}/{name}", parent.trim_end_matches('/'));
    if kind == FileKind::File && content.len() > CHUNK {
        if name.contains('/') || name == "." || name == ".." {
            return Err(ApiError::bad(format!("{name:?}: not a valid file name")));
        }
        write_file(&state, node, &full, content, true).await?;
    } else {
        op(&state, node, &FileOp::Create { parent: parent.clone(), name: name.clone(), kind, content }).await?;
    }
    tracing::info!(key = %caller.key.key_prefix(), node_id = %node, path = %full, kind = kind.as_str(), "external API: file created");
    let data = json!({ "path": full, "name": name, "type": kind.as_str(), "node_id": node.0 });
    Ok((StatusCode::CREATED, ok_with(data, if kind == FileKind::File { "File created" } else { "Folder created" })))
}

/// Body of `DELETE /v1/files`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteBody {
    pub user_id: Option<Value>,
    pub node_id: Option<i64>,
    pub paths: Vec<String>,
    pub path: Option<String>,
    /// `true`: removed for good. `false` (what WHMCS sends) or absent: moved to the trash.
    pub permanent: Option<bool>,
}

/// A truthy or falsy query value (`1/true/yes`, `0/false/no`).
fn flag(value: &Option<String>, name: &str) -> Result<Option<bool>, ApiError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => Ok(None),
        Some("1" | "true" | "yes") => Ok(Some(true)),
        Some("0" | "false" | "no") => Ok(Some(false)),
        Some(other) => Err(ApiError::bad(format!("{name}: true or false, got {other:?}"))),
    }
}

/// `DELETE /v1/files?path=` (the document) or with a JSON body `{paths[], permanent}` (the
/// clients): into the trash unless `permanent` is true (body or query), then directories go with
/// their contents. Every path is checked before any is moved or removed.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FilesQuery>,
    SignedBody(body): SignedBody,
) -> Result<Json<Value>, ApiError> {
    allow(&caller, "files:delete")?;
    let b: DeleteBody = parse(&body)?;
    let mut paths = b.paths.clone();
    paths.extend(b.path.clone().into_iter().chain(q.path.clone()).filter(|p| !p.is_empty()));
    if paths.is_empty() {
        return Err(ApiError::bad("path (query) or paths (body) is required"));
    }
    let permanent = match b.permanent {
        Some(p) => p,
        None => flag(&q.permanent, "permanent")?.unwrap_or(false),
    };
    let node = node::select(&state, NodeChoice { node_id: b.node_id.or(q.node_id) }).await?;
    let mut data = json!({
        "deleted": paths,
        "permanent": permanent,
        "node_id": node.0,
        "user_id": user_id(&b.user_id),
    });
    if permanent {
        op(&state, node, &FileOp::Delete { paths: paths.clone(), recursive: true }).await?;
        tracing::info!(key = %caller.key.key_prefix(), node_id = %node, ?paths, "external API: files deleted");
        return Ok(ok_with(data, "Deleted permanently"));
    }
    match op(&state, node, &FileOp::Trash { paths: paths.clone() }).await? {
        FileAnswer::Trashed { entries } => {
            tracing::info!(key = %caller.key.key_prefix(), node_id = %node, ?paths, "external API: files moved to the trash");
            data["trashed"] = entries.iter().map(trash_json).collect();
            Ok(ok_with(data, "Moved to trash"))
        }
        other => Err(unexpected(other)),
    }
}

/// A trash entry as the API shows it.
fn trash_json(e: &TrashEntry) -> Value {
    let name = e.original_path.rsplit('/').next().unwrap_or_default();
    json!({
        "id": e.id,
        "name": name,
        "original_path": e.original_path,
        "root": e.root,
        "type": type_name(e.kind),
        "is_dir": e.kind == FileKind::Directory,
        "size": e.size,
        "size_formatted": size_formatted(e.size),
        "deleted_at": iso_ms(e.deleted_ms),
    })
}

fn page_param(value: &Option<String>, name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
    match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(format!("{name}: a whole number from 1 to {max}, got {v:?}"))),
        },
    }
}

/// `GET /v1/files/trash[?user_id=&page=&limit=&node_id=]`: newest first; `data[]` with `total`,
/// `page` and `limit` beside it (as the family's other paged lists).
pub async fn trash_list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FilesQuery>,
) -> Result<Json<Value>, ApiError> {
    allow(&caller, "files:read")?;
    let page = page_param(&q.page, "page", 1, 1_000_000)?;
    let limit = page_param(&q.limit, "limit", TRASH_LIMIT, TRASH_LIMIT_MAX)?;
    let node = node::select(&state, q.node()).await?;
    match op(&state, node, &FileOp::TrashList { page, limit }).await? {
        FileAnswer::TrashList { entries, total } => Ok(Json(json!({
            "status": "success",
            "data": entries.iter().map(trash_json).collect::<Vec<_>>(),
            "total": total,
            "page": page,
            "limit": limit,
            "node_id": node.0,
        }))),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/files/trash/stats[?user_id=&node_id=]`: `data.count`, `data.total_bytes` and the
/// same per root.
pub async fn trash_stats(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FilesQuery>,
) -> Result<Json<Value>, ApiError> {
    allow(&caller, "files:read")?;
    let node = node::select(&state, q.node()).await?;
    match op(&state, node, &FileOp::TrashStats).await? {
        FileAnswer::TrashStats { roots } => {
            let count: u64 = roots.iter().map(|r| r.count).sum();
            let bytes: u64 = roots.iter().map(|r| r.bytes).fold(0, u64::saturating_add);
            let per_root: Vec<Value> =
                roots.iter().map(|r| json!({ "root": r.root, "count": r.count, "total_bytes": r.bytes })).collect();
            Ok(ok(json!({ "count": count, "total_bytes": bytes, "roots": per_root, "node_id": node.0 })))
        }
        other => Err(unexpected(other)),
    }
}

/// Body of the trash's POSTs (`{user_id}`; WHMCS may send `[]`, MCP nothing).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TrashBody {
    pub user_id: Option<Value>,
    pub node_id: Option<i64>,
}

/// `POST /v1/files/trash/{id}/restore {user_id}`: back at its original path (missing parent
/// directories recreated); 409 `CONFLICT` when something is there now, 404 for an unknown id.
pub async fn trash_restore(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<FilesQuery>,
    SignedBody(body): SignedBody,
) -> Result<Json<Value>, ApiError> {
    allow(&caller, "files:write")?;
    let b: TrashBody = parse(&body)?;
    let node = node::select(&state, NodeChoice { node_id: b.node_id.or(q.node_id) }).await?;
    match op(&state, node, &FileOp::TrashRestore { id: id.clone() }).await? {
        FileAnswer::Restored(entry) => {
            tracing::info!(key = %caller.key.key_prefix(), node_id = %node, %id, path = %entry.original_path, "external API: restored from the trash");
            let mut data = trash_json(&entry);
            data["restored_path"] = json!(entry.original_path);
            data["node_id"] = json!(node.0);
            data["user_id"] = json!(user_id(&b.user_id));
            Ok(ok_with(data, "Restored"))
        }
        other => Err(unexpected(other)),
    }
}

/// `DELETE /v1/files/trash/{id}?user_id=`: removed for good; 404 for an unknown id.
pub async fn trash_delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<FilesQuery>,
) -> Result<Json<Value>, ApiError> {
    allow(&caller, "files:delete")?;
    let node = node::select(&state, q.node()).await?;
    match op(&state, node, &FileOp::TrashDelete { id: id.clone() }).await? {
        FileAnswer::TrashRemoved { bytes, .. } => {
            tracing::info!(key = %caller.key.key_prefix(), node_id = %node, %id, "external API: trash entry deleted");
            let data =
                json!({ "id": id, "deleted": true, "freed_bytes": bytes, "node_id": node.0, "user_id": q.user_id });
            Ok(ok_with(data, "Deleted permanently"))
        }
        other => Err(unexpected(other)),
    }
}

/// `POST /v1/files/trash/empty {user_id}`: everything in the node's trash removed for good.
pub async fn trash_empty(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FilesQuery>,
    SignedBody(body): SignedBody,
) -> Result<Json<Value>, ApiError> {
    allow(&caller, "files:delete")?;
    let b: TrashBody = parse(&body)?;
    let node = node::select(&state, NodeChoice { node_id: b.node_id.or(q.node_id) }).await?;
    match op(&state, node, &FileOp::TrashEmpty).await? {
        FileAnswer::TrashRemoved { count, bytes } => {
            tracing::info!(key = %caller.key.key_prefix(), node_id = %node, count, bytes, "external API: trash emptied");
            let data = json!({
                "deleted_count": count,
                "freed_bytes": bytes,
                "node_id": node.0,
                "user_id": user_id(&b.user_id),
            });
            Ok(ok_with(data, "Trash emptied"))
        }
        other => Err(unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_as_the_document() {
        let e = FileEntry {
            name: "index.php".into(),
            kind: FileKind::File,
            size: 4096,
            mode: 0o644,
            owner: "user1".into(),
            group: "user1".into(),
            modified_ms: 1_772_884_800_000,
        };
        let v = entry_json("/home/user1/", &e);
        assert_eq!(v["permissions"], "0644");
        assert_eq!(v["type"], "file");
        assert_eq!(v["path"], "/home/user1/index.php");
        assert_eq!(v["modified_at"], "2026-03-07T12:00:00Z");
    }

    #[test]
    fn content_encodings() {
        let body = |content: &str, encoding: Option<&str>| WriteBody {
            content: Some(content.into()),
            encoding: encoding.map(Into::into),
            ..WriteBody::default()
        };
        assert_eq!(body("héllo", None).bytes().unwrap(), "héllo".as_bytes());
        assert_eq!(body("/wA=", Some("base64")).bytes().unwrap(), vec![0xff, 0]);
        assert!(body("!!", Some("base64")).bytes().is_err());
        assert!(body("x", Some("latin1")).bytes().is_err());
    }

    #[test]
    fn bodies_and_flags() {
        let b: DeleteBody = parse(&Bytes::from_static(b" [] ")).unwrap();
        assert!(b.paths.is_empty() && b.permanent.is_none());
        let b: DeleteBody =
            parse(&Bytes::from_static(br#"{"user_id": 1, "paths": ["a"], "permanent": false}"#)).unwrap();
        assert_eq!((b.paths, b.permanent), (vec!["a".to_string()], Some(false)));
        assert_eq!(flag(&Some("TRUE".into()), "p").unwrap(), Some(true));
        assert_eq!(flag(&None, "p").unwrap(), None);
        assert!(flag(&Some("maybe".into()), "p").is_err());
        assert_eq!(page_param(&None, "limit", 100, 1000).unwrap(), 100);
        assert!(page_param(&Some("0".into()), "page", 1, 10).is_err());
        assert!(page_param(&Some("11".into()), "page", 1, 10).is_err());
    }

    #[test]
    fn trash_entries_read_clearly() {
        let e = TrashEntry {
            id: "00112233445566778899aabbccddeeff".into(),
            root: "/srv/www".into(),
            original_path: "/srv/www/site/index.php".into(),
            kind: FileKind::File,
            size: 5,
            deleted_ms: 1_772_884_800_000,
        };
        let v = trash_json(&e);
        assert_eq!((v["name"].as_str(), v["type"].as_str()), (Some("index.php"), Some("file")));
        assert_eq!(v["deleted_at"], "2026-03-07T12:00:00Z");
        assert_eq!(v["size_formatted"], "5 B");
    }

    #[test]
    fn entries_carry_what_the_whmcs_file_manager_reads() {
        let e = FileEntry {
            name: "wp-content".into(),
            kind: FileKind::Directory,
            size: 4096,
            mode: 0o755,
            owner: "www".into(),
            group: "www".into(),
            modified_ms: 1_772_884_800_000,
        };
        let v = entry_json("/srv/www", &e);
        assert_eq!((v["type"].as_str(), v["is_dir"].as_bool()), (Some("folder"), Some(true)));
        assert_eq!((v["size_formatted"].as_str(), v["permissions_octal"].as_str()), (Some("4.0 KB"), Some("0755")));
        assert_eq!(
            (v["modified_str"].as_str(), v["path"].as_str()),
            (Some("2026-03-07 12:00"), Some("/srv/www/wp-content"))
        );
        assert_eq!(
            [size_formatted(0), size_formatted(1536 * 1024), size_formatted(3 << 30)],
            ["0 B", "1.5 MB", "3.0 GB"]
        );
    }
}
