//! The family's endpoint table, and what is made of it: the machine-readable spec the MCP server
//! reads (`GET /v1/api-spec`, no signature), a Postman v2.1 collection that signs, an OpenAPI
//! document, and the answer for paths not served yet (501 for the hosting resources of later
//! releases, 404 otherwise).

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Json;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::{ok, rfc3339, ApiError, PREFIX};
use crate::api::AppState;

/// Every scope of the API (`resource:action`); `resource:*` and `*:*` widen them.
pub const SCOPES: &[&str] = &[
    "accounts:read",
    "accounts:write",
    "accounts:delete",
    "plans:read",
    "plans:write",
    "domains:read",
    "domains:write",
    "domains:delete",
    "dns:read",
    "dns:write",
    "dns:delete",
    "ssl:read",
    "ssl:write",
    "databases:read",
    "databases:write",
    "databases:delete",
    "email:read",
    "email:write",
    "email:delete",
    "ftp:read",
    "ftp:write",
    "ftp:delete",
    "backups:read",
    "backups:write",
    "backups:restore",
    "server:read",
    "services:read",
    "services:start",
    "services:stop",
    "services:restart",
    "bandwidth:read",
    "files:read",
    "files:write",
    "files:delete",
    "cloudflare:read",
    "cloudflare:write",
    "webhooks:read",
    "webhooks:write",
];

/// Whether `resource` has a scope.
pub fn is_resource(resource: &str) -> bool {
    SCOPES.iter().any(|s| s.split_once(':').is_some_and(|(r, _)| r == resource))
}

/// The first path segments of hosting resources, served in later releases (501 until then).
const LATER: &[&str] = &[
    "accounts",
    "plans",
    "domains",
    "subdomains",
    "dns",
    "ssl",
    "databases",
    "mysql-users",
    "email",
    "email-accounts",
    "email-forwarders",
    "email-autoresponders",
    "ftp",
    "ftp-accounts",
    "backups",
    "cloudflare",
    "cron-jobs",
    "redirects",
    "php",
    "wordpress",
    "search",
];

/// Nested paths of a served resource that belong to a later release (501): bandwidth per domain
/// comes with the domains.
const LATER_PATHS: &[&str] = &["/v1/bandwidth/domains"];

/// Second spellings the official clients use for one resource: served, but left out of
/// `/v1/api-spec` (the MCP server names a tool after its path, and both spellings would make the
/// same name, taking the official one from the path it stands for).
const ALIASES: &[&str] = &["/v1/email/accounts", "/v1/ftp/accounts"];

/// One endpoint of the table.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub method: &'static str,
    /// `/v1/…` with `{param}`s.
    pub path: &'static str,
    pub category: &'static str,
    /// The scope needed; `None`: any valid key (or no signature for the public ones).
    pub scope: Option<&'static str>,
    pub summary: &'static str,
    /// No signature needed.
    pub public: bool,
    /// Served by this controller now (else a later release: 501).
    pub served: bool,
    /// Body fields: (name, JSON type, required).
    pub body: &'static [(&'static str, &'static str, bool)],
    /// Query parameters: (name, type, required).
    pub query: &'static [(&'static str, &'static str, bool)],
}

const fn ep(
    method: &'static str,
    path: &'static str,
    category: &'static str,
    scope: Option<&'static str>,
    summary: &'static str,
) -> Endpoint {
    Endpoint { method, path, category, scope, summary, public: false, served: true, body: &[], query: &[] }
}

const fn later(method: &'static str, path: &'static str, category: &'static str, scope: &'static str) -> Endpoint {
    Endpoint {
        method,
        path,
        category,
        scope: Some(scope),
        summary: "A hosting resource: served in a later release (501 NOT_IMPLEMENTED until then)",
        public: false,
        served: false,
        body: &[],
        query: &[],
    }
}

const KEY_BODY: &[(&str, &str, bool)] = &[
    ("name", "string", true),
    ("scopes", "array", true),
    ("rate_limit_tier", "string", false),
    ("ip_whitelist", "array", false),
    ("expires_in", "integer", false),
    ("environment", "string", false),
];

const WEBHOOK_BODY: &[(&str, &str, bool)] = &[
    ("name", "string", true),
    ("destination_type", "string", true),
    ("destination_config", "object", true),
    ("events", "array", true),
    ("retry_count", "integer", false),
    ("retry_delay_seconds", "integer", false),
    ("timeout_seconds", "integer", false),
    ("is_active", "boolean", false),
];

const WEBHOOK_PATCH: &[(&str, &str, bool)] = &[
    ("name", "string", false),
    ("destination_type", "string", false),
    ("destination_config", "object", false),
    ("events", "array", false),
    ("retry_count", "integer", false),
    ("retry_delay_seconds", "integer", false),
    ("timeout_seconds", "integer", false),
    ("is_active", "boolean", false),
];

/// The optional node of host endpoints (default: the only node, or the controller's own).
const NODE_QUERY: &[(&str, &str, bool)] = &[("node_id", "integer", false)];

/// Every endpoint: what this controller serves and what the document and the official clients
/// name for later releases.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint { public: true, ..ep("GET", "/health", "Core", None, "Health (no signature)") },
    Endpoint { public: true, ..ep("GET", "/v1/health", "Core", None, "Health (no signature)") },
    Endpoint { public: true, ..ep("GET", "/v1/api-spec", "Core", None, "This endpoint list (no signature)") },
    ep("GET", "/v1/me", "Core", None, "The calling API key, its scopes and user"),
    ep("GET", "/v1/rate-limit", "Core", None, "The calling key's rate tier and usage"),
    ep("GET", "/v1/postman-collection", "Core", None, "A Postman v2.1 collection with a signing pre-request script"),
    ep("GET", "/v1/api-keys", "API Keys", Some("*:*"), "List API keys"),
    Endpoint {
        body: KEY_BODY,
        ..ep("POST", "/v1/api-keys", "API Keys", Some("*:*"), "Create an API key (secret shown once)")
    },
    ep("GET", "/v1/api-keys/{key_id}", "API Keys", Some("*:*"), "One API key"),
    Endpoint {
        body: &[
            ("name", "string", false),
            ("scopes", "array", false),
            ("rate_limit_tier", "string", false),
            ("ip_whitelist", "array", false),
            ("is_active", "boolean", false),
            ("expires_in", "integer", false),
        ],
        ..ep("PATCH", "/v1/api-keys/{key_id}", "API Keys", Some("*:*"), "Change, enable or disable an API key")
    },
    ep("DELETE", "/v1/api-keys/{key_id}", "API Keys", Some("*:*"), "Delete an API key"),
    ep("POST", "/v1/api-keys/{key_id}/regenerate", "API Keys", Some("*:*"), "A new secret (shown once)"),
    ep("GET", "/v1/webhooks", "Webhooks", Some("webhooks:read"), "List webhooks"),
    Endpoint {
        body: WEBHOOK_BODY,
        ..ep("POST", "/v1/webhooks", "Webhooks", Some("webhooks:write"), "Create a webhook (secret shown once)")
    },
    ep("GET", "/v1/webhooks/events", "Webhooks", Some("webhooks:read"), "Event types by category"),
    ep("GET", "/v1/webhooks/stats", "Webhooks", Some("webhooks:read"), "Webhook and delivery counts of the last 24 h"),
    ep("GET", "/v1/webhooks/{id}", "Webhooks", Some("webhooks:read"), "One webhook"),
    Endpoint {
        body: WEBHOOK_PATCH,
        ..ep("PATCH", "/v1/webhooks/{id}", "Webhooks", Some("webhooks:write"), "Change, enable or disable a webhook")
    },
    ep("DELETE", "/v1/webhooks/{id}", "Webhooks", Some("webhooks:write"), "Delete a webhook and its logs"),
    ep("POST", "/v1/webhooks/{id}/enable", "Webhooks", Some("webhooks:write"), "Enable a webhook"),
    ep("POST", "/v1/webhooks/{id}/disable", "Webhooks", Some("webhooks:write"), "Disable a webhook"),
    Endpoint {
        query: &[("page", "integer", false), ("limit", "integer", false)],
        ..ep("GET", "/v1/webhooks/{id}/logs", "Webhooks", Some("webhooks:read"), "Delivery logs, newest first, paged")
    },
    ep("POST", "/v1/webhooks/{id}/test", "Webhooks", Some("webhooks:write"), "Queue a test event for it"),
    Endpoint {
        query: NODE_QUERY,
        ..ep(
            "GET",
            "/v1/server/status",
            "Server",
            Some("server:read"),
            "Hostname, OS, uptime, CPU, memory, disk, load and network of a node",
        )
    },
    Endpoint {
        query: NODE_QUERY,
        ..ep(
            "GET",
            "/v1/server/metrics",
            "Server",
            Some("server:read"),
            "A node's live metrics: CPU, memory, disk, load and network (the status' figures)",
        )
    },
    Endpoint {
        query: NODE_QUERY,
        ..ep(
            "GET",
            "/v1/server/services",
            "Server",
            Some("services:read"),
            "The node's allowed systemd services with state, PID, uptime, CPU and memory",
        )
    },
    Endpoint {
        query: NODE_QUERY,
        ..ep(
            "POST",
            "/v1/server/services/{name}/start",
            "Server",
            Some("services:start"),
            "Start a service (waits for systemd's job)",
        )
    },
    Endpoint {
        query: NODE_QUERY,
        ..ep(
            "POST",
            "/v1/server/services/{name}/stop",
            "Server",
            Some("services:stop"),
            "Stop a service (waits for systemd's job)",
        )
    },
    Endpoint {
        query: NODE_QUERY,
        ..ep(
            "POST",
            "/v1/server/services/{name}/restart",
            "Server",
            Some("services:restart"),
            "Restart a service (waits for systemd's job)",
        )
    },
    Endpoint {
        query: &[("user_id", "string", false), ("node_id", "integer", false)],
        ..ep(
            "GET",
            "/v1/files/accessible-directories",
            "File Manager",
            Some("files:read"),
            "The directories the file manager may act in (data.directories[], [0] the default)",
        )
    },
    Endpoint {
        query: &[
            ("path", "string", false),
            ("user_id", "string", false),
            ("show_hidden", "boolean", false),
            ("node_id", "integer", false),
        ],
        ..ep("GET", "/v1/files", "File Manager", Some("files:read"), "List a directory (data.files[])")
    },
    Endpoint {
        query: &[("path", "string", true), ("user_id", "string", false), ("node_id", "integer", false)],
        ..ep(
            "GET",
            "/v1/files/content",
            "File Manager",
            Some("files:read"),
            "Read a file (data.content; data.encoding utf-8 or base64)",
        )
    },
    Endpoint {
        body: &[
            ("path", "string", true),
            ("content", "string", true),
            ("encoding", "string", false),
            ("user_id", "string", false),
            ("node_id", "integer", false),
        ],
        ..ep(
            "PUT",
            "/v1/files/content",
            "File Manager",
            Some("files:write"),
            "Write a file atomically (encoding utf-8 or base64)",
        )
    },
    Endpoint {
        body: &[
            ("path", "string", true),
            ("name", "string", true),
            ("type", "string", true),
            ("content", "string", false),
            ("encoding", "string", false),
            ("user_id", "string", false),
            ("node_id", "integer", false),
        ],
        ..ep(
            "POST",
            "/v1/files",
            "File Manager",
            Some("files:write"),
            "Create a file or folder (type file, folder or directory) in path",
        )
    },
    Endpoint {
        query: &[("path", "string", false), ("permanent", "boolean", false), ("node_id", "integer", false)],
        body: &[("paths", "array", false), ("permanent", "boolean", false), ("user_id", "string", false)],
        ..ep(
            "DELETE",
            "/v1/files",
            "File Manager",
            Some("files:delete"),
            "Delete files and folders (?path= or a JSON body {paths[]}): to the trash unless permanent is true",
        )
    },
    Endpoint {
        query: &[
            ("user_id", "string", false),
            ("page", "integer", false),
            ("limit", "integer", false),
            ("node_id", "integer", false),
        ],
        ..ep(
            "GET",
            "/v1/files/trash",
            "File Manager",
            Some("files:read"),
            "The trash, newest first (data[]: id, name, original_path, type, size, deleted_at; total, page, limit)",
        )
    },
    Endpoint {
        query: &[("user_id", "string", false), ("node_id", "integer", false)],
        ..ep(
            "GET",
            "/v1/files/trash/stats",
            "File Manager",
            Some("files:read"),
            "Entries and bytes in the trash (data.count, data.total_bytes, per root)",
        )
    },
    Endpoint {
        query: &[("user_id", "string", false), ("node_id", "integer", false)],
        ..ep("DELETE", "/v1/files/trash/{id}", "File Manager", Some("files:delete"), "Remove one trash entry for good")
    },
    Endpoint {
        body: &[("user_id", "string", false), ("node_id", "integer", false)],
        ..ep(
            "POST",
            "/v1/files/trash/empty",
            "File Manager",
            Some("files:delete"),
            "Empty the trash (removed for good)",
        )
    },
    Endpoint {
        body: &[("user_id", "string", false), ("node_id", "integer", false)],
        ..ep(
            "POST",
            "/v1/files/trash/{id}/restore",
            "File Manager",
            Some("files:write"),
            "Put a trash entry back at its original path (409 when something is there now)",
        )
    },
    Endpoint {
        query: &[("period", "string", false), ("month", "string", false), ("node_id", "integer", false)],
        ..ep(
            "GET",
            "/v1/bandwidth",
            "Bandwidth",
            Some("bandwidth:read"),
            "A month's traffic of the node, per interface (period=monthly, month=YYYY-MM)",
        )
    },
    Endpoint {
        query: &[("month", "string", false), ("node_id", "integer", false)],
        ..ep(
            "GET",
            "/v1/bandwidth/summary",
            "Bandwidth",
            Some("bandwidth:read"),
            "A month's traffic per interface and per day",
        )
    },
    Endpoint {
        query: &[("month", "string", false), ("node_id", "integer", false)],
        ..ep(
            "GET",
            "/v1/bandwidth/accounts/{id}",
            "Bandwidth",
            Some("bandwidth:read"),
            "An account's traffic of the month (data.bytes_used; the node's total until accounts exist)",
        )
    },
    later("GET", "/v1/bandwidth/domains/{id}", "Bandwidth", "bandwidth:read"),
    later("GET", "/v1/search", "Core", "accounts:read"),
    later("GET", "/v1/accounts", "Accounts", "accounts:read"),
    later("POST", "/v1/accounts", "Accounts", "accounts:write"),
    later("GET", "/v1/accounts/{id}", "Accounts", "accounts:read"),
    later("PATCH", "/v1/accounts/{id}", "Accounts", "accounts:write"),
    later("DELETE", "/v1/accounts/{id}", "Accounts", "accounts:delete"),
    later("POST", "/v1/accounts/{id}/suspend", "Accounts", "accounts:write"),
    later("POST", "/v1/accounts/{id}/unsuspend", "Accounts", "accounts:write"),
    later("GET", "/v1/plans", "Plans", "plans:read"),
    later("POST", "/v1/plans", "Plans", "plans:write"),
    later("PATCH", "/v1/plans/{id}", "Plans", "plans:write"),
    later("GET", "/v1/domains", "Domains", "domains:read"),
    later("POST", "/v1/domains", "Domains", "domains:write"),
    later("GET", "/v1/domains/{id}", "Domains", "domains:read"),
    later("PATCH", "/v1/domains/{id}", "Domains", "domains:write"),
    later("DELETE", "/v1/domains/{id}", "Domains", "domains:delete"),
    later("GET", "/v1/dns/zones/{zone_id}/records", "DNS", "dns:read"),
    later("POST", "/v1/dns/zones/{zone_id}/records", "DNS", "dns:write"),
    later("GET", "/v1/ssl/certificates", "SSL", "ssl:read"),
    later("POST", "/v1/ssl/certificates", "SSL", "ssl:write"),
    later("GET", "/v1/databases", "Databases", "databases:read"),
    later("POST", "/v1/databases", "Databases", "databases:write"),
    later("GET", "/v1/email/accounts", "Email", "email:read"),
    later("POST", "/v1/email/accounts", "Email", "email:write"),
    later("GET", "/v1/email-accounts", "Email", "email:read"),
    later("GET", "/v1/ftp/accounts", "FTP", "ftp:read"),
    later("GET", "/v1/ftp-accounts", "FTP", "ftp:read"),
    later("GET", "/v1/backups", "Backups", "backups:read"),
    later("POST", "/v1/backups", "Backups", "backups:write"),
    later("GET", "/v1/cloudflare/zones", "CloudFlare", "cloudflare:read"),
];

/// The first segment after `/v1/` of a request path (nested or full).
fn resource_of(path: &str) -> &str {
    let rest = match path.find("/v1/") {
        Some(i) => &path[i + 4..],
        None => path.trim_start_matches('/'),
    };
    rest.split('/').next().unwrap_or("")
}

/// Paths not routed: hosting resources of later releases answer 501, the rest 404 (both in
/// the family's envelope; the caller's signature was checked first).
pub async fn unrouted(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    let resource = resource_of(uri.path());
    let backend = super::auth::backend_path(uri.path());
    if LATER.contains(&resource) || LATER_PATHS.iter().any(|p| backend.starts_with(p)) {
        return ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NOT_IMPLEMENTED",
            format!("{resource}: hosting resources are not served by this release yet"),
        )
        .details(format!("{method} {} is planned; the platform endpoints are in GET /v1/api-spec", uri.path()));
    }
    ApiError::not_found(format!("no endpoint {method} {}", uri.path()))
        .details("see GET /v1/api-spec for the endpoints")
}

fn fields(list: &[(&str, &str, bool)]) -> Vec<Value> {
    list.iter().map(|(name, ty, required)| json!({ "name": name, "type": ty, "required": required })).collect()
}

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({ "name": name, "type": "string", "required": true }))
        .collect()
}

/// The base URL callers reached this family at: `…/api/external`, or the root of the family's
/// own listener when called there at `/v1/…`.
fn base(headers: &HeaderMap, path: &str) -> String {
    let root = crate::api::install::base_url(headers, path);
    if path.contains(PREFIX) {
        format!("{root}{PREFIX}")
    } else {
        root
    }
}

/// `GET /v1/api-spec` (no signature): the endpoint list in the shape Panelica's MCP server
/// reads; `generated_at` is now (it estimates clock skew from it).
pub async fn api_spec(headers: HeaderMap, OriginalUri(uri): OriginalUri) -> Json<Value> {
    let endpoints: Vec<Value> = ENDPOINTS
        .iter()
        .filter(|e| !ALIASES.contains(&e.path))
        .map(|e| {
            let content_type = if e.body.is_empty() { "none" } else { "application/json" };
            json!({
                "method": e.method,
                "path": e.path,
                "category": e.category,
                "summary": e.summary,
                "description": if e.served { e.summary.to_string() } else { format!("{} Not served by this release yet.", e.summary) },
                "implemented": e.served,
                "auth": {
                    "required": !e.public,
                    "type": if e.public { "none" } else { "hmac" },
                    "scopes": e.scope.map(|s| vec![s]).unwrap_or_default(),
                },
                "request": {
                    "path_params": path_params(e.path),
                    "query_params": fields(e.query),
                    "body": { "content_type": content_type, "required": e.body.iter().any(|f| f.2), "fields": fields(e.body) },
                },
                "response": { "status_code": if e.method == "POST" && matches!(e.path, "/v1/api-keys" | "/v1/webhooks" | "/v1/files") { 201 } else { 200 }, "data_type": "object" },
            })
        })
        .collect();
    let mut categories: Vec<(&str, usize)> = vec![];
    for e in ENDPOINTS.iter().filter(|e| !ALIASES.contains(&e.path)) {
        match categories.iter_mut().find(|(c, _)| *c == e.category) {
            Some((_, n)) => *n += 1,
            None => categories.push((e.category, 1)),
        }
    }
    ok(json!({
        "title": "Flotilla external API (Panelica-compatible)",
        "description": "HMAC-SHA256 signed: METHOD + /v1 PATH[?query] + TIMESTAMP + BODY",
        "version": "v1",
        "panel_version": env!("CARGO_PKG_VERSION"),
        "generated_at": rfc3339(OffsetDateTime::now_utc()),
        "base_url": format!("{}/v1", base(&headers, uri.path())),
        "auth": {
            "type": "HMAC-SHA256",
            "description": "X-Signature = hex(HMAC-SHA256(secret, METHOD + PATH + TIMESTAMP + BODY)); body empty for DELETE",
            "headers": ["X-API-Key", "X-Timestamp", "X-Signature"],
        },
        "categories": categories.iter().map(|(name, count)| json!({ "name": name, "count": count })).collect::<Vec<_>>(),
        "scopes": SCOPES,
        "endpoints": endpoints,
    }))
}

/// The Postman sandbox script that signs each request as the API checks it.
const PRE_REQUEST: &str = r#"const secret = pm.variables.get('apiSecret');
const ts = Math.floor(Date.now() / 1000).toString();
const url = pm.variables.replaceIn(pm.request.url.toString());
const at = url.indexOf('/v1/');
const rest = at >= 0 ? url.substring(at) : '/';
const q = rest.indexOf('?');
const path = decodeURIComponent(q >= 0 ? rest.substring(0, q) : rest);
const query = q >= 0 ? rest.substring(q) : '';
const method = pm.request.method.toUpperCase();
let body = '';
if (method !== 'DELETE' && pm.request.body && pm.request.body.mode === 'raw' && pm.request.body.raw) {
  body = pm.variables.replaceIn(pm.request.body.raw);
}
const signature = CryptoJS.HmacSHA256(method + path + query + ts + body, secret).toString(CryptoJS.enc.Hex);
pm.request.headers.upsert({ key: 'X-API-Key', value: pm.variables.get('apiKey') });
pm.request.headers.upsert({ key: 'X-Timestamp', value: ts });
pm.request.headers.upsert({ key: 'X-Signature', value: signature });"#;

/// `GET /v1/postman-collection`: a Postman v2.1 collection of every endpoint, signing each
/// request in a collection-level pre-request script.
pub async fn postman(headers: HeaderMap, OriginalUri(uri): OriginalUri) -> Json<Value> {
    let mut folders: Vec<(&str, Vec<Value>)> = vec![];
    for e in ENDPOINTS {
        let segments: Vec<String> = e
            .path
            .trim_start_matches('/')
            .split('/')
            .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(p) => format!(":{p}"),
                None => s.to_string(),
            })
            .collect();
        let mut request = json!({
            "method": e.method,
            "header": [{ "key": "Accept", "value": "application/json" }],
            "url": {
                "raw": format!("{{{{baseUrl}}}}/{}", segments.join("/")),
                "host": ["{{baseUrl}}"],
                "path": segments,
            },
            "description": e.summary,
        });
        if !e.body.is_empty() {
            let example: Map<String, Value> = e
                .body
                .iter()
                .filter(|f| f.2)
                .map(|(n, ty, _)| (n.to_string(), if *ty == "array" { json!([]) } else { json!("") }))
                .collect();
            request["header"]
                .as_array_mut()
                .expect("array")
                .push(json!({ "key": "Content-Type", "value": "application/json" }));
            request["body"] = json!({
                "mode": "raw",
                "raw": serde_json::to_string_pretty(&Value::Object(example)).unwrap_or_default(),
                "options": { "raw": { "language": "json" } },
            });
        }
        let item = json!({ "name": format!("{} {}", e.method, e.path), "request": request });
        match folders.iter_mut().find(|(c, _)| *c == e.category) {
            Some((_, items)) => items.push(item),
            None => folders.push((e.category, vec![item])),
        }
    }
    ok(json!({
        "info": {
            "_postman_id": uuid::Uuid::new_v4().to_string(),
            "name": "Flotilla external API",
            "description": "Set apiKey and apiSecret; every request is signed by the collection's pre-request script.",
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
        },
        "variable": [
            { "key": "baseUrl", "value": base(&headers, uri.path()) },
            { "key": "apiKey", "value": "pk_live_…" },
            { "key": "apiSecret", "value": "sk_live_…" },
        ],
        "event": [{ "listen": "prerequest", "script": { "type": "text/javascript", "exec": PRE_REQUEST.lines().collect::<Vec<_>>() } }],
        "item": folders.into_iter().map(|(name, item)| json!({ "name": name, "item": item })).collect::<Vec<_>>(),
    }))
}

/// `GET /openapi.json` of this family (no signature): OpenAPI 3.1 made from the table.
pub async fn openapi(State(_): State<AppState>) -> Json<Value> {
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let mut op = json!({
            "summary": e.summary,
            "tags": [e.category],
            "operationId": format!("{}_{}", e.method.to_lowercase(), e.path.replace(['/', '{', '}', '-'], "_").trim_matches('_')),
            "responses": {
                "200": { "description": "`{\"status\": \"success\", \"data\": …}`" },
                "401": { "description": "Missing or bad signature, unknown, disabled or expired key" },
                "403": { "description": "INSUFFICIENT_SCOPE or IP_NOT_ALLOWED" },
                "429": { "description": "RATE_LIMIT_EXCEEDED, with Retry-After" },
            },
        });
        if !e.served {
            op["responses"]["501"] = json!({ "description": "NOT_IMPLEMENTED: a hosting resource of a later release" });
        }
        if e.public {
            op["security"] = json!([]);
        } else if let Some(scope) = e.scope {
            op["x-scope"] = json!(scope);
        }
        let parameters: Vec<Value> = path_params(e.path)
            .into_iter()
            .map(|p| json!({ "name": p["name"], "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if !parameters.is_empty() {
            op["parameters"] = Value::Array(parameters);
        }
        if !e.body.is_empty() {
            let props: Map<String, Value> =
                e.body.iter().map(|(n, ty, _)| (n.to_string(), json!({ "type": ty }))).collect();
            let required: Vec<&str> = e.body.iter().filter(|f| f.2).map(|f| f.0).collect();
            op["requestBody"] = json!({
                "required": !required.is_empty(),
                "content": { "application/json": { "schema": { "type": "object", "properties": props, "required": required } } },
            });
        }
        let entry = paths.entry(e.path.to_string()).or_insert_with(|| json!({}));
        entry[e.method.to_lowercase()] = op;
    }
    Json(json!({
        "openapi": "3.1.0",
        "info": { "title": "Flotilla external API (Panelica-compatible)", "version": env!("CARGO_PKG_VERSION") },
        "servers": [{ "url": PREFIX }],
        "components": { "securitySchemes": {
            "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-Key",
                "description": "With X-Timestamp (Unix seconds) and X-Signature = hex(HMAC-SHA256(secret, METHOD + /v1 PATH[?query] + TIMESTAMP + BODY))" },
        } },
        "security": [{ "apiKey": [] }],
        "paths": paths,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_scope_is_a_known_scope_and_paths_are_unique() {
        for e in ENDPOINTS {
            if let Some(scope) = e.scope {
                assert!(scope == "*:*" || SCOPES.contains(&scope), "{} {}: {scope}", e.method, e.path);
            }
            assert!(e.path.starts_with("/v1/") || e.path == "/health", "{}", e.path);
            assert_eq!(ENDPOINTS.iter().filter(|o| o.method == e.method && o.path == e.path).count(), 1, "{}", e.path);
            if !e.served {
                assert!(
                    LATER.contains(&resource_of(e.path)) || LATER_PATHS.iter().any(|p| e.path.starts_with(p)),
                    "{} must answer 501",
                    e.path
                );
            }
        }
    }

    #[test]
    fn the_resource_is_the_first_segment_after_v1() {
        assert_eq!(resource_of("/api/external/v1/email-accounts/3"), "email-accounts");
        assert_eq!(resource_of("/v1/accounts"), "accounts");
        assert_eq!(resource_of("/accounts/1"), "accounts");
    }
}
