//! The VPS family in `/openapi.json`. Its bodies are read into loose structs and its answers are
//! built as JSON in the shapes the original web UI reads, so the operations are described from
//! one table rather than typed DTOs: path, method, who may call it, what to send, what comes back
//! and which errors it answers. A test checks the table against the router.

use serde_json::{json, Value};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{OpenApi, Required};
use utoipa::Modify;

/// Tag of the family's operations.
pub const TAG: &str = "vps";
/// Name of its bearer security scheme.
pub const BEARER: &str = "vps_bearer";

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (the login, registration, and the catalogs' lists).
    Public,
    /// Any user with a session, as `Authorization: Bearer` (customers act on their own servers).
    Bearer,
    /// A session of an administrator.
    Admin,
}

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// An example request body (JSON text); `None` for no body.
    pub example: Option<&'static str>,
    /// Status of the success answer (200, or 201 for what creates).
    pub status: u16,
    /// An example of the success answer.
    pub answer: fn() -> Value,
    /// The error statuses the handler answers (besides 500), each with an example message.
    pub errors: &'static [(u16, &'static str)],
}

#[allow(clippy::too_many_arguments)]
const fn route(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    access: Access,
    example: Option<&'static str>,
    answer: fn() -> Value,
    errors: &'static [(u16, &'static str)],
) -> Route {
    Route { method, path, id, summary, access, example, status: 200, answer, errors }
}

use Access::{Admin, Bearer, Public};

const UPID: &str = "UPID:nl-1:0003A1B2:0A1B2C3D:6650F00D:vzcreate:vps-1-3fa2c1:alice@flotilla:";

fn os() -> Value {
    json!({ "id": 1, "name": "Debian 12", "type": "linux", "template": "debian:bookworm" })
}

fn tariff() -> Value {
    json!({
        "id": 1, "name": "Start", "price": 5.0, "description": "1 core, 1 GB RAM, 10 GB SSD",
        "cores": 1, "memory": 1024, "disk": 10
    })
}

/// A server as `server_json` writes it.
fn server() -> Value {
    json!({
        "id": 1, "userId": 2, "owner": "alice", "tariffId": 1, "osId": 1, "nodeId": 1, "nodeOnline": true,
        "status": "running", "proxmoxId": 101, "container": "vps-1-3fa2c1",
        "ipAddress": "10.0.3.17", "ip": "10.0.3.17", "rootPassword": "********",
        "cores": 1, "memory": 1024, "disk": 10, "createTask": UPID,
        "createdAt": "2026-01-05T10:00:00.000Z", "updatedAt": "2026-01-05T10:01:12.000Z",
        "nextPaymentDate": null, "autoRenew": false, "os": os(), "tariff": tariff()
    })
}

/// `{"status": "success", "taskId"}` of a task of `kind`, with `extra` fields.
fn task_started(kind: &str, extra: Value) -> Value {
    let mut answer = json!({ "status": "success", "taskId": UPID.replace("vzcreate", kind) });
    if let (Some(answer), Value::Object(extra)) = (answer.as_object_mut(), extra) {
        answer.extend(extra);
    }
    answer
}

const BAD_ID: (u16, &str) = (400, "id must be a positive integer, got \"abc\"");
const NO_TOKEN: (u16, &str) = (401, "Authorization: Bearer <token> required");
const NOT_ADMIN: (u16, &str) = (403, "only administrators change the catalogs");
const NO_SERVER: (u16, &str) = (404, "server 1 not found");
const BUSY: (u16, &str) = (409, "server 1 is creating");
const NODE_BUSY: (u16, &str) = (409, "vps-1-3fa2c1 is busy: task UPID:… runs on it");
const NO_SNAPSHOT: (u16, &str) = (409, "vps-1-3fa2c1 has no snapshot named before-upgrade");
const OFFLINE: (u16, &str) = (503, "node 1 is offline; try again later");

/// Every route of the family.
pub const ROUTES: &[Route] = &[
    route(
        "post",
        "/api/auth/login",
        "vps_login",
        "Log in with an e-mail (or user name) and password; answers a session token",
        Public,
        Some(r#"{"email": "alice@example.com", "password": "correct-horse"}"#),
        || json!({ "token": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }),
        &[(400, "email and password are required"), (401, "wrong e-mail or password")],
    ),
    Route {
        status: 201,
        ..route(
            "post",
            "/api/auth/register",
            "vps_register",
            "Create a customer account (when `[vps] registration` is on)",
            Public,
            Some(r#"{"username": "alice", "email": "alice@example.com", "password": "correct-horse"}"#),
            || json!({ "message": "registered; log in now" }),
            &[
                (400, "password must be at least 8 characters"),
                (403, "registration is closed; ask the operator for an account"),
                (409, "a user with e-mail \"alice@example.com\" already exists"),
            ],
        )
    },
    route(
        "get",
        "/api/auth/me",
        "vps_me",
        "The caller's account and own servers",
        Bearer,
        None,
        || {
            json!({ "user": {
                "id": 2, "username": "alice", "email": "alice@example.com", "operator": 0, "isAdmin": false,
                "balance": 0.0, "servers": [server()], "tickets": []
            } })
        },
        &[NO_TOKEN],
    ),
    route("get", "/api/os", "vps_os_list", "The OS catalog", Public, None, || json!([os()]), &[]),
    Route {
        status: 201,
        ..route(
            "post",
            "/api/os",
            "vps_os_add",
            "Add an OS (`template`: `busybox`, `debian:<release>` or `lxc:<template> [args]`; `type` linux)",
            Admin,
            Some(r#"{"name": "Debian 12", "type": "linux", "template": "debian:bookworm"}"#),
            os,
            &[(400, "name is required"), NO_TOKEN, NOT_ADMIN, (409, "an OS named \"Debian 12\" already exists")],
        )
    },
    route(
        "delete",
        "/api/os/{id}",
        "vps_os_delete",
        "Delete an OS no server uses",
        Admin,
        None,
        || json!({ "status": "deleted" }),
        &[(400, "OS 1 is used by 2 server(s)"), NO_TOKEN, NOT_ADMIN, (404, "OS 1 not found")],
    ),
    route("get", "/api/tariff", "vps_tariff_list", "The tariff catalog", Public, None, || json!([tariff()]), &[]),
    Route {
        status: 201,
        ..route(
            "post",
            "/api/tariff",
            "vps_tariff_add",
            "Add a tariff (`memory` in MiB, `disk` in GB; `description` defaults to the sizes)",
            Admin,
            Some(
                r#"{"name": "Start", "cores": 1, "memory": 1024, "disk": 10, "price": 5.0, "description": "1 core, 1 GB RAM, 10 GB SSD"}"#,
            ),
            tariff,
            &[
                (400, "name, cores, memory (MiB) and disk (GB) are required"),
                NO_TOKEN,
                NOT_ADMIN,
                (409, "a tariff named \"Start\" already exists"),
            ],
        )
    },
    route(
        "delete",
        "/api/tariff/{id}",
        "vps_tariff_delete",
        "Delete a tariff no server uses",
        Admin,
        None,
        || json!({ "status": "deleted" }),
        &[(400, "tariff 1 is used by 2 server(s)"), NO_TOKEN, NOT_ADMIN, (404, "tariff 1 not found")],
    ),
    route(
        "get",
        "/api/server",
        "vps_server_list",
        "The caller's servers (an administrator's: all)",
        Bearer,
        None,
        || json!([server()]),
        &[NO_TOKEN],
    ),
    Route {
        status: 201,
        ..route(
            "post",
            "/api/server/create",
            "vps_server_create",
            "Create a server from an OS and a tariff on a node with room (`nodeId`: administrators only); \
             the root password is shown only here",
            Bearer,
            Some(r#"{"osId": 1, "tariffId": 1}"#),
            || {
                json!({
                    "id": 1, "status": "creating", "proxmoxId": 101, "ipAddress": null,
                    "rootPassword": "k7Qm2xTzP9aRwE4n", "taskId": UPID, "nodeId": 1, "userId": 2,
                    "osId": 1, "tariffId": 1
                })
            },
            &[
                (400, "osId and tariffId are required"),
                NO_TOKEN,
                (403, "only administrators choose the node"),
                (404, "OS 1 not found"),
                (409, "a container named vps-1-3fa2c1 already exists on this host"),
                (503, "no node that runs containers has room for tariff \"Start\" (1 core(s), 1024 MiB, 10 GB)"),
            ],
        )
    },
    route(
        "get",
        "/api/server/tasks/{upid}",
        "vps_task",
        "A task's state and log (`status` running or stopped, `exitstatus` `OK` or the error)",
        Bearer,
        None,
        || {
            json!({
                "upid": UPID, "type": "vzcreate", "status": "stopped", "exitstatus": "OK", "state": "ok",
                "node": 1, "serverId": 1, "starttime": 1767607200, "endtime": 1767607272,
                "log": [{ "n": 1, "t": "creating container vps-1-3fa2c1" }, { "n": 2, "t": "TASK OK" }]
            })
        },
        &[NO_TOKEN, (404, "task UPID:… not found")],
    ),
    route(
        "get",
        "/api/server/{id}",
        "vps_server_get",
        "One server",
        Bearer,
        None,
        server,
        &[BAD_ID, NO_TOKEN, NO_SERVER],
    ),
    route(
        "delete",
        "/api/server/{id}",
        "vps_server_delete",
        "Delete a server and its container",
        Bearer,
        None,
        || json!({ "status": "deleted", "taskId": UPID.replace("vzcreate", "vzdestroy") }),
        &[BAD_ID, NO_TOKEN, NO_SERVER, NODE_BUSY, OFFLINE],
    ),
    route(
        "get",
        "/api/server/{id}/status",
        "vps_server_status",
        "A server with its live state and the last hour's usage (`stats`)",
        Bearer,
        None,
        || {
            let mut s = server();
            s["stats"] = json!({
                "status": "success",
                "data": {
                    "vmid": 101, "status": "running", "uptime": 3600, "cpu": 0.03, "cpus": 1,
                    "memory": { "used": 134217728, "max": 1073741824u64, "usage": 12.5 },
                    "disk": { "used": 1000000000, "max": 10000000000u64, "usage": 10.0 },
                    "network": { "in": 1048576, "out": 524288 },
                    "rrdData": [{
                        "time": 1767610800, "cpu": 0.03, "maxcpu": 1, "mem": 134217728, "maxmem": 1073741824u64,
                        "disk": 1000000000, "maxdisk": 10000000000u64, "netin": 1048576, "netout": 524288
                    }]
                }
            });
            s
        },
        &[BAD_ID, NO_TOKEN, NO_SERVER],
    ),
    route(
        "post",
        "/api/server/{id}/start",
        "vps_server_start",
        "Start a server",
        Bearer,
        None,
        || task_started("vzstart", json!({ "action": "start" })),
        &[BAD_ID, NO_TOKEN, NO_SERVER, BUSY, OFFLINE],
    ),
    route(
        "post",
        "/api/server/{id}/stop",
        "vps_server_stop",
        "Stop a server",
        Bearer,
        None,
        || task_started("vzstop", json!({ "action": "stop" })),
        &[BAD_ID, NO_TOKEN, NO_SERVER, BUSY, OFFLINE],
    ),
    route(
        "post",
        "/api/server/{id}/restart",
        "vps_server_restart",
        "Restart a server",
        Bearer,
        None,
        || task_started("vzreboot", json!({ "action": "restart" })),
        &[BAD_ID, NO_TOKEN, NO_SERVER, BUSY, OFFLINE],
    ),
    route(
        "post",
        "/api/server/{id}/password",
        "vps_server_password",
        "Set a new random root password (answered when the task has ended)",
        Bearer,
        None,
        || task_started("vzpasswd", json!({ "password": "Xc4vB8nM2kLp7qRs" })),
        &[
            (400, "task UPID:… failed: …"),
            NO_TOKEN,
            NO_SERVER,
            (409, "server 1 is stopped: start it to change its password"),
            (503, "task UPID:… still runs; follow it at /api/server/tasks/UPID:…"),
        ],
    ),
    route(
        "put",
        "/api/server/{id}/resize",
        "vps_server_resize",
        "Change cores, memory (MB) or disk (GB, grow only); answered when the task has ended",
        Bearer,
        Some(r#"{"cores": 2, "memory": 2048, "disk": 20}"#),
        || task_started("resize", json!({ "data": { "cores": 2, "memory": 2048, "disk": 20 } })),
        &[(400, "disk can only grow: 20 GB now, 10 GB asked"), NO_TOKEN, NO_SERVER, NODE_BUSY, OFFLINE],
    ),
    route(
        "get",
        "/api/server/{id}/snapshots",
        "vps_snapshot_list",
        "A server's snapshots",
        Bearer,
        None,
        || {
            json!({ "status": "success", "data": [
                { "name": "before-upgrade", "description": "before apt upgrade", "snaptime": 1767607200 }
            ] })
        },
        &[BAD_ID, NO_TOKEN, NO_SERVER, (409, "server 1 has no node any more (the node was deleted)"), OFFLINE],
    ),
    route(
        "post",
        "/api/server/{id}/snapshots",
        "vps_snapshot_create",
        "Take a snapshot (`snapname`: letters, digits, `_`, `-`)",
        Bearer,
        Some(r#"{"snapname": "before-upgrade", "description": "before apt upgrade"}"#),
        || task_started("vzsnapshot", json!({ "snapname": "before-upgrade" })),
        &[
            (400, "snapname: 1 to 40 letters, digits, '_' or '-'"),
            NO_TOKEN,
            NO_SERVER,
            (409, "vps-1-3fa2c1 already has a snapshot named before-upgrade"),
            OFFLINE,
        ],
    ),
    route(
        "delete",
        "/api/server/{id}/snapshots",
        "vps_snapshot_delete",
        "Delete a snapshot (named in the body)",
        Bearer,
        Some(r#"{"snapname": "before-upgrade"}"#),
        || task_started("vzdelsnapshot", json!({})),
        &[(400, "snapname: 1 to 40 letters, digits, '_' or '-'"), NO_TOKEN, NO_SERVER, NO_SNAPSHOT, OFFLINE],
    ),
    route(
        "post",
        "/api/server/{id}/snapshots/rollback",
        "vps_snapshot_rollback",
        "Roll a server back to a snapshot",
        Bearer,
        Some(r#"{"snapname": "before-upgrade"}"#),
        || task_started("vzrollback", json!({})),
        &[(400, "snapname: 1 to 40 letters, digits, '_' or '-'"), NO_TOKEN, NO_SERVER, NO_SNAPSHOT, OFFLINE],
    ),
    route(
        "post",
        "/api/server/console",
        "vps_console",
        "Web console URL (short-lived, single use); `vmid` is the Proxmox-style id (100 + id)",
        Bearer,
        Some(r#"{"vmid": 101}"#),
        console_url,
        CONSOLE_ERRORS,
    ),
    route(
        "post",
        "/api/proxmox/console",
        "vps_console_by_id",
        "Web console URL, as the panel's web UI asks for it (`vmid` carries the server's id)",
        Bearer,
        Some(r#"{"vmid": 1}"#),
        console_url,
        CONSOLE_ERRORS,
    ),
    route(
        "get",
        "/api/server/{id}/console",
        "vps_console_by_path",
        "Web console URL of server `id`",
        Bearer,
        None,
        console_url,
        CONSOLE_ERRORS,
    ),
];

/// A console URL: a terminal page of the controller, or a Proxmox node's own console.
fn console_url() -> Value {
    json!({ "status": "success", "url": "https://panel.example.com/vps-console/3f9c…", "expiresIn": 60 })
}

const CONSOLE_ERRORS: &[(u16, &str)] =
    &[(400, "give vmid (or serverId)"), NO_TOKEN, NO_SERVER, (409, "server 1 is stopped: start it first"), OFFLINE];

/// What an error status means on route `r`.
fn error_description(r: &Route, status: u16) -> &'static str {
    match (status, r.access) {
        (400, _) => "Bad input: an unreadable body or path, a missing or invalid field, or a failed task",
        (401, Public) => "Wrong e-mail or password",
        (401, _) => "Missing, invalid or expired token",
        (403, Admin) => "Not an administrator",
        (403, _) if r.id == "vps_register" => "Registration is closed",
        (403, _) => "Only administrators choose `nodeId`",
        (404, _) => "Not found (another user's server is not found either)",
        (409, _) if r.id == "vps_register" => "The user name or e-mail is taken",
        (409, Admin) => "One of that name exists already",
        (409, _) => "The server is being created or deleted, has no node any more, or its node refused",
        _ => "The server's node is offline, slow or without room, or the task still runs; try again later",
    }
}

fn object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Object)
}

fn http_method(name: &str) -> HttpMethod {
    match name {
        "get" => HttpMethod::Get,
        "post" => HttpMethod::Post,
        "put" => HttpMethod::Put,
        _ => HttpMethod::Delete,
    }
}

/// Adds the family's operations and its bearer scheme to the document.
pub struct VpsPaths;

impl Modify for VpsPaths {
    fn modify(&self, openapi: &mut OpenApi) {
        crate::api::openapi::add_bearer_scheme(
            openapi,
            BEARER,
            "`token` of a `POST /api/auth/login` (a CandyPanel login's `access_token` works too)",
        );
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let error_schema =
            || object().property("error", string()).required("error").property("message", string()).required("message");
        for r in ROUTES {
            let answer = (r.answer)();
            let schema = match answer {
                Value::Array(_) => Schema::Array(ArrayBuilder::new().items(object()).build()),
                _ => Schema::Object(object().description(Some("See the example")).build()),
            };
            let ok = ContentBuilder::new().schema(Some(schema)).example(Some(answer)).build();
            let mut op = OperationBuilder::new().tag(TAG).operation_id(Some(r.id)).summary(Some(r.summary)).response(
                r.status.to_string(),
                ResponseBuilder::new()
                    .description(if r.status == 201 { "Created" } else { "Done" })
                    .content("application/json", ok),
            );
            for (status, message) in r.errors {
                let content = ContentBuilder::new()
                    .schema(Some(error_schema()))
                    .example(Some(json!({ "error": message, "message": message })))
                    .build();
                op = op.response(
                    status.to_string(),
                    ResponseBuilder::new()
                        .description(error_description(r, *status))
                        .content("application/json", content),
                );
            }
            op = match r.access {
                Public => op,
                Bearer => op.security(SecurityRequirement::new::<_, _, String>(BEARER, [])),
                Admin => op
                    .description(Some("Administrators only."))
                    .security(SecurityRequirement::new::<_, _, String>(BEARER, [])),
            };
            if let Some(example) = r.example {
                let body = RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(object()))
                            .example(serde_json::from_str(example).ok())
                            .build(),
                    )
                    .build();
                op = op.request_body(Some(body));
            }
            for name in r.path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))) {
                let (kind, what) = match name {
                    "id" => (Type::Integer, "A positive id"),
                    _ => (Type::String, "A task's UPID, as `taskId` gave it"),
                };
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .description(Some(what))
                        .schema(Some(ObjectBuilder::new().schema_type(kind))),
                );
            }
            openapi.paths.add_path_operation(r.path, vec![http_method(r.method)], op.build());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use utoipa::OpenApi as _;

    use super::*;

    fn doc() -> Value {
        serde_json::to_value(crate::api::openapi::ApiDoc::openapi()).expect("the document serialises")
    }

    /// The document holds every row of the table as the row says: tag, unique id, security,
    /// success and error answers in the family's `{"error", "message"}`, path parameters, body.
    #[test]
    fn every_route_is_described_as_the_table_says() {
        let doc = doc();
        let scheme = &doc["components"]["securitySchemes"][BEARER];
        assert_eq!((&scheme["type"], &scheme["scheme"]), (&json!("http"), &json!("bearer")), "{scheme}");
        assert!(doc["tags"].as_array().unwrap().iter().any(|t| t["name"] == TAG), "no {TAG} tag");
        let mut ids = BTreeSet::new();
        for r in ROUTES {
            let what = format!("{} {}", r.method.to_uppercase(), r.path);
            let op = &doc["paths"][r.path][r.method];
            assert!(op.is_object(), "{what} is not in the document");
            assert_eq!(op["tags"], json!([TAG]), "{what}");
            assert!(ids.insert(r.id), "{what}: operationId {} is used twice", r.id);
            assert_eq!(op["operationId"], r.id, "{what}");
            match r.access {
                Public => assert!(op.get("security").is_none(), "{what} is public"),
                Bearer | Admin => assert_eq!(op["security"], json!([{ BEARER: [] }]), "{what}"),
            }
            let statuses: BTreeSet<u16> = r.errors.iter().map(|(s, _)| *s).collect();
            assert_eq!(statuses.len(), r.errors.len(), "{what}: an error status twice");
            assert_eq!(r.access != Public, r.errors.contains(&NO_TOKEN), "{what}: 401 iff a token is needed");
            assert_eq!(r.access == Admin, r.errors.contains(&NOT_ADMIN), "{what}: 403 iff administrators only");
            let responses = op["responses"].as_object().unwrap();
            let ok = &responses[&r.status.to_string()]["content"]["application/json"]["example"];
            assert!(ok.is_object() || ok.is_array(), "{what}: no example answer");
            for status in &statuses {
                let error = &responses[&status.to_string()]["content"]["application/json"];
                assert_eq!(error["schema"]["required"], json!(["error", "message"]), "{what} {status}");
                assert_eq!(error["example"]["error"], error["example"]["message"], "{what} {status}");
            }
            assert_eq!(responses.len(), statuses.len() + 1, "{what}: answers");
            match r.example {
                Some(text) => {
                    let example: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(example.is_object(), "{what}");
                    assert_eq!(op["requestBody"]["content"]["application/json"]["example"], example, "{what}");
                }
                None => assert!(op.get("requestBody").is_none(), "{what}"),
            }
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            let in_path: BTreeSet<&str> =
                r.path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
            assert_eq!(declared, in_path, "{what}: path parameters");
        }
    }

    /// One request: (status, body).
    async fn request(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = vec![];
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw)).await.unwrap().unwrap();
        let raw = String::from_utf8_lossy(&raw).to_string();
        let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{raw}"));
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// The table and the router agree: every row is routed (not the family's "no endpoint"), its
    /// example body is taken as the handler reads it, a token is required where the table says,
    /// administrators only where it says, and every error answered is one the row documents.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_route_is_served_with_its_access_and_documented_answers() {
        let dir = tempfile::tempdir().unwrap();
        let running = crate::server::start(crate::server::Settings {
            vps: crate::api::vps::VpsSettings { registration: true, ..Default::default() },
            ..crate::server::Settings::for_tests(dir.path())
        })
        .await
        .unwrap();
        let addr = running.http_addr;
        let row = |id: &str| ROUTES.iter().find(|r| r.id == id).unwrap();
        // The register and login examples work as they are.
        let register = row("vps_register");
        let (status, body) = request(addr, "POST", register.path, None, register.example.unwrap()).await;
        assert_eq!(status, 201, "{body}");
        let login = row("vps_login");
        let (status, body) = request(addr, "POST", login.path, None, login.example.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        let customer = body["token"].as_str().expect("a token").to_string();
        let admin_login = r#"{"username": "admin", "password": "admin-password"}"#;
        let (status, body) = request(addr, "POST", login.path, None, admin_login).await;
        assert_eq!(status, 200, "{body}");
        let admin = body["token"].as_str().expect("a token").to_string();

        for (who, token) in
            [("nobody", None), ("a customer", Some(customer.as_str())), ("an admin", Some(admin.as_str()))]
        {
            for r in ROUTES {
                let path = r.path.replace("{id}", "1").replace("{upid}", UPID);
                let what = format!("{} {path} as {who}", r.method.to_uppercase());
                let (status, body) =
                    request(addr, &r.method.to_uppercase(), &path, token, r.example.unwrap_or("")).await;
                let message = body["message"].as_str().unwrap_or_default();
                assert!(!message.starts_with("no endpoint"), "{what}: not routed: {body}");
                assert!(
                    !message.starts_with("invalid JSON body") && !message.starts_with("the request body"),
                    "{what}: the example is not what the handler reads: {body}"
                );
                match (r.access, who) {
                    (Bearer | Admin, "nobody") => assert_eq!(status, 401, "{what}: {body}"),
                    (Admin, "a customer") => assert_eq!(status, 403, "{what}: {body}"),
                    // The catalogs' examples create id 1, which the delete rows then delete.
                    (Admin, _) => assert_eq!(status, r.status, "{what}: {body}"),
                    _ => assert!(status != 401 && status != 403, "{what}: {status} {body}"),
                }
                if status >= 400 {
                    assert!(r.errors.iter().any(|(s, _)| *s == status), "{what}: {status} is not documented: {body}");
                    assert_eq!(body["error"], body["message"], "{what}: {body}");
                } else {
                    assert_eq!(status, r.status, "{what}: {body}");
                }
            }
        }
        running.shutdown().await;
    }
}
