//! The OpenAPI 3.1 description of the HTTP APIs, served at `GET /openapi.json` (public).
//!
//! Built from the handlers' `#[utoipa::path]` attributes and their typed DTOs, so a route or a
//! field cannot change without the document following. A test below pins the list of routes:
//! a route added to a family's `router()` must be added here too.

use std::borrow::Cow;
use std::sync::OnceLock;

use axum::extract::OriginalUri;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa::{Modify, OpenApi};

use super::candy::openapi::{CandyPaths, TAG as CANDY_TAG};
use super::multi_server::{self, backup, clients, inbounds, nodes, rollouts, servers, subscription, traffic, webui};
use super::v2ray_stat::openapi::{V2rayStatPaths, TAG as V2RAY_STAT_TAG};
use super::vps::openapi::{VpsPaths, TAG as VPS_TAG};

/// Path the document is served at (under the `--base-path` prefix too).
pub const PATH: &str = "/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flotilla",
        description = "HTTP APIs of the Flotilla controller. The `multi-server` family follows the \
                       Multi-Server Manager document (v3.1): HTTP Basic authentication on every route but \
                       `/api/v1/health` and `/api/v1/sub/{email}`, errors as `{\"detail\": \"…\"}`. The \
                       `candypanel` family follows the CandyPanel document: flat JSON bodies, Bearer tokens \
                       from `/api/auth`, answers as `{\"message\", \"success\", \"data\"}`.",
    ),
    paths(
        multi_server::health,
        nodes::list,
        nodes::create,
        nodes::get_one,
        nodes::delete,
        nodes::new_join_token,
        rollouts::list_packages,
        rollouts::add_package_route,
        rollouts::delete_package,
        rollouts::list,
        rollouts::create,
        rollouts::get_one,
        rollouts::cancel,
        servers::status_all,
        servers::availability,
        servers::status_one,
        servers::restart_core,
        servers::logs,
        inbounds::list,
        inbounds::create,
        inbounds::clone,
        inbounds::delete,
        clients::list,
        clients::batch_add,
        clients::batch_delete,
        clients::online,
        clients::update,
        clients::delete,
        clients::reset_traffic,
        traffic::stats,
        traffic::reset_all,
        subscription::emails,
        subscription::subscription,
        subscription::grouped,
        backup::get_one,
        backup::import,
        backup::download,
        backup::all,
        backup::import_file,
        webui::auth::mfa_status,
        webui::auth::verify,
        webui::nodes::list_names,
        webui::nodes::rename_node,
        webui::nodes::check_connection,
        webui::nodes::refresh_now,
        webui::nodes::server_status,
        webui::inbounds::node_inbounds,
        webui::inbounds::batch_enable_inbounds,
        webui::inbounds::batch_update_inbounds,
        webui::inbounds::batch_delete_inbounds,
        webui::clients::node_clients,
        webui::clients::client_traffic,
        webui::clients::client_traffic_by_path,
        webui::clients::add_client_to_nodes,
        webui::snapshots::latest_snapshot,
        webui::monitoring::health_deps,
        webui::monitoring::node_history,
        webui::adguard::list_sources,
        webui::adguard::create_source,
        webui::adguard::update_source,
        webui::adguard::delete_source,
        webui::adguard::collect_now,
        webui::adguard::overview,
        webui::adguard::history,
        webui::stack::stack,
    ),
    components(schemas(multi_server::ErrorBody)),
    modifiers(&BasicAuth, &CandyPaths, &V2rayStatPaths, &VpsPaths),
    tags(
        (name = multi_server::TAG, description = "Multi-Server Manager API: nodes, their proxy cores, inbounds, clients, traffic and subscriptions"),
        (name = V2RAY_STAT_TAG, description = "v2ray-stat API, fleet-wide: users, statistics and per-user lifecycle on every node (`node_id` picks one)"),
        (name = CANDY_TAG, description = "CandyPanel API: WireGuard interfaces and clients, settings, the public client pages and the Telegram bot's endpoints"),
        (name = VPS_TAG, description = "VPS API: virtual servers as containers on the fleet's nodes, their OS and tariff catalogs, and the panel's login (Bearer tokens; errors as `{\"error\", \"message\"}`)"),
    ),
)]
pub struct ApiDoc;

/// Name of the HTTP Basic security scheme the operations refer to.
pub const BASIC_AUTH: &str = "basic";

/// Adds a Bearer security scheme called `name` (the table-described families have one each).
pub fn add_bearer_scheme(openapi: &mut utoipa::openapi::OpenApi, name: &str, description: &str) {
    openapi.components.get_or_insert_with(Default::default).add_security_scheme(
        name,
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(description)).build()),
    );
}

/// Adds the HTTP Basic scheme the protected operations name.
struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BASIC_AUTH,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("Built-in users of the controller (and PAM users with `--features pam`)"))
                    .build(),
            ),
        );
    }
}

/// The document as JSON, built once.
fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// `GET /openapi.json`. Fetched under a `--base-path` prefix, the document names that prefix as its
/// server, so generated clients call the routes where they were found.
pub async fn serve(OriginalUri(uri): OriginalUri) -> Json<Cow<'static, utoipa::openapi::OpenApi>> {
    let prefix = uri.path().strip_suffix(PATH).unwrap_or_default().trim_end_matches('/');
    if prefix.is_empty() {
        return Json(Cow::Borrowed(document()));
    }
    let mut doc = document().clone();
    doc.servers = Some(vec![Server::new(prefix)]);
    Json(Cow::Owned(doc))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use serde_json::{json, Value};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Every route of `multi_server::router()`, with whether it is public. A route added there
    /// must be added here, with its `#[utoipa::path]` listed in [`ApiDoc`].
    const ROUTES: &[(&str, &str, bool)] = &[
        ("get", "/api/v1/health", true),
        ("get", "/api/v1/nodes", false),
        ("post", "/api/v1/nodes", false),
        ("get", "/api/v1/nodes/{node_id}", false),
        ("delete", "/api/v1/nodes/{node_id}", false),
        ("post", "/api/v1/nodes/{node_id}/join-token", false),
        ("get", "/api/v1/servers/status", false),
        ("get", "/api/v1/servers/availability", false),
        ("get", "/api/v1/servers/{node_id}/status", false),
        ("post", "/api/v1/servers/{node_id}/restart-xray", false),
        ("get", "/api/v1/servers/{node_id}/logs", false),
        ("get", "/api/v1/inbounds", false),
        ("post", "/api/v1/inbounds", false),
        ("post", "/api/v1/inbounds/clone", false),
        ("delete", "/api/v1/inbounds/{inbound_id}", false),
        ("get", "/api/v1/clients", false),
        ("post", "/api/v1/clients/batch-add", false),
        ("post", "/api/v1/clients/batch-delete", false),
        ("get", "/api/v1/clients/online", false),
        ("put", "/api/v1/clients/{client_id}", false),
        ("delete", "/api/v1/clients/{client_id}", false),
        ("post", "/api/v1/clients/{client_id}/reset-traffic", false),
        ("get", "/api/v1/traffic/stats", false),
        ("post", "/api/v1/automation/reset-all-traffic", false),
        ("get", "/api/v1/emails", false),
        ("get", "/api/v1/sub/{email}", true),
        ("get", "/api/v1/sub-grouped/{identifier}", true),
        ("get", "/api/v1/backup/database/{node_id}", false),
        ("post", "/api/v1/backup/database/{node_id}", false),
        ("get", "/api/v1/backup/node/{node_id}", false),
        ("get", "/api/v1/backup/all", false),
        ("post", "/api/v1/backup/node/{node_id}/import", false),
        ("get", "/api/v1/auth/mfa-status", true),
        ("get", "/api/v1/auth/verify", false),
        ("get", "/api/v1/nodes/list", false),
        ("put", "/api/v1/nodes/{node_id}", false),
        ("post", "/api/v1/nodes/check-connection", false),
        ("post", "/api/v1/nodes/refresh-now", false),
        ("get", "/api/v1/nodes/{node_id}/server-status", false),
        ("get", "/api/v1/nodes/{node_id}/inbounds", false),
        ("post", "/api/v1/inbounds/batch-enable", false),
        ("post", "/api/v1/inbounds/batch-update", false),
        ("post", "/api/v1/inbounds/batch-delete", false),
        ("get", "/api/v1/nodes/{node_id}/clients", false),
        ("get", "/api/v1/nodes/{node_id}/client-traffic", false),
        ("get", "/api/v1/nodes/{node_id}/client/{email}/traffic", false),
        ("post", "/api/v1/clients/add-to-nodes", false),
        ("get", "/api/v1/snapshots/latest", false),
        ("get", "/api/v1/health/deps", false),
        ("get", "/api/v1/history/nodes/{node_id}", false),
        ("get", "/api/v1/adguard/sources", false),
        ("post", "/api/v1/adguard/sources", false),
        ("put", "/api/v1/adguard/sources/{source_id}", false),
        ("delete", "/api/v1/adguard/sources/{source_id}", false),
        ("post", "/api/v1/adguard/collect-now", false),
        ("get", "/api/v1/adguard/overview", false),
        ("get", "/api/v1/adguard/history", false),
        ("get", "/api/v1/monitoring/stack", false),
        ("get", "/api/v1/agent-packages", false),
        ("post", "/api/v1/agent-packages", false),
        ("delete", "/api/v1/agent-packages/{version}", false),
        ("get", "/api/v1/rollouts", false),
        ("post", "/api/v1/rollouts", false),
        ("get", "/api/v1/rollouts/{rollout_id}", false),
        ("post", "/api/v1/rollouts/{rollout_id}/cancel", false),
    ];

    fn doc() -> Value {
        serde_json::to_value(ApiDoc::openapi()).expect("the document serialises")
    }

    fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{} {path} is not in the document", method.to_uppercase());
        op
    }

    #[test]
    fn the_document_serialises_and_parses_back() {
        let text = ApiDoc::openapi().to_json().expect("to_json");
        let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed, doc());
        assert!(parsed["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", parsed["openapi"]);
        let back: utoipa::openapi::OpenApi = serde_json::from_str(&text).expect("parses as an OpenAPI document");
        assert_eq!(back.paths.paths.len(), parsed["paths"].as_object().unwrap().len());
    }

    #[test]
    fn every_route_is_described_with_its_security_and_errors() {
        let doc = doc();
        let scheme = &doc["components"]["securitySchemes"][BASIC_AUTH];
        assert_eq!((&scheme["type"], &scheme["scheme"]), (&json!("http"), &json!("basic")), "{scheme}");
        let mut operation_ids = BTreeSet::new();
        for (method, path, public) in ROUTES {
            let what = format!("{} {path}", method.to_uppercase());
            let op = operation(&doc, method, path);
            assert_eq!(op["tags"], json!([multi_server::TAG]), "{what}");
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{what}: no operationId"));
            assert!(operation_ids.insert(id.to_string()), "{what}: operationId {id} is used twice");
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{what}: no summary");
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("200"), "{what}: no 200");
            let ok = &responses["200"]["content"];
            assert!(
                ["application/json", "text/plain", "application/vnd.sqlite3", "application/zip"]
                    .iter()
                    .any(|t| ok[*t]["schema"].is_object()),
                "{what}: 200 without a schema"
            );
            if *public {
                assert!(op.get("security").is_none(), "{what} is public: {}", op["security"]);
                assert!(!responses.contains_key("401"), "{what} is public but documents a 401");
            } else {
                assert_eq!(op["security"], json!([{ BASIC_AUTH: [] }]), "{what}");
                assert!(responses.contains_key("401"), "{what}: no 401");
            }
            // Every error is the family's `{"detail": "…"}`.
            for (status, response) in responses.iter().filter(|(s, _)| s.starts_with('4')) {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{what} {status}"
                );
            }
            // Path parameters are all declared.
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            let in_path: BTreeSet<&str> =
                path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
            assert_eq!(declared, in_path, "{what}: path parameters");
        }
        // Nothing is documented that the family does not serve.
        let listed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .chain(crate::api::candy::openapi::ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_string())))
            .chain(crate::api::v2ray_stat::openapi::ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_string())))
            .chain(crate::api::vps::openapi::ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_string())))
            .collect();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys().filter(|k| *k != "parameters") {
                assert!(
                    listed.contains(&(method.clone(), path.clone())),
                    "{method} {path} is documented but not listed"
                );
            }
        }
    }

    #[test]
    fn the_documents_examples_are_in_it() {
        let doc = doc();
        let body = |method: &str, path: &str| {
            operation(&doc, method, path)["requestBody"]["content"]["application/json"]["example"].clone()
        };
        let answer = |method: &str, path: &str| {
            operation(&doc, method, path)["responses"]["200"]["content"]["application/json"]["example"].clone()
        };
        assert_eq!(
            body("post", "/api/v1/clients/batch-add"),
            json!({
                "node_ids": [1, 2, 3],
                "clients": [{
                    "email": "user@example.com", "inbound_id": 1, "totalGB": 100,
                    "expiryTime": 1735689600000u64, "enable": true
                }]
            })
        );
        assert_eq!(
            body("post", "/api/v1/inbounds/clone"),
            json!({
                "source_node_id": 1, "source_inbound_id": 2, "target_node_ids": [2, 3],
                "modifications": { "remark": "Cloned Inbound", "port": 8443 }
            })
        );
        assert_eq!(
            body("post", "/api/v1/clients/batch-delete"),
            json!({ "node_ids": [1, 2], "email_pattern": "test", "expired_only": false, "depleted_only": false })
        );
        assert_eq!(
            body("post", "/api/v1/automation/reset-all-traffic"),
            json!({ "node_ids": [1, 2], "inbound_id": 1 })
        );
        assert_eq!(answer("get", "/api/v1/health"), json!({ "status": "healthy", "timestamp": "2026-02-20T22:52:00" }));
        assert_eq!(
            answer("get", "/api/v1/traffic/stats"),
            json!({
                "stats": {
                    "user@example.com": { "up": 1073741824u64, "down": 5368709120u64, "total": 6442450944u64, "count": 3 }
                },
                "group_by": "client"
            })
        );
        let inbound = &answer("get", "/api/v1/inbounds")["inbounds"][0];
        for (k, v) in [("node_name", json!("Server-NL")), ("port", json!(443)), ("is_reality", json!(true))] {
            assert_eq!(inbound[k], v, "{k}");
        }
        let client = &answer("get", "/api/v1/clients")["clients"][0];
        assert_eq!(client["inbound_remark"], "Main VLESS");
        let server = &answer("get", "/api/v1/servers/status")["servers"][0];
        assert_eq!(server["system"]["mem"]["total"], 8589934592u64);
        assert_eq!(answer("get", "/api/v1/servers/availability")["availability"][0]["latency_ms"], 45.23);
        assert_eq!(answer("get", "/api/v1/emails")["stats"]["user1@example.com"]["last"], "20.02 22:30");
    }

    /// Every example validates against the schema it illustrates, so an example cannot drift from
    /// the DTOs it documents.
    #[test]
    fn every_example_fits_its_schema() {
        let doc = doc();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let mut media: Vec<(String, &Value)> = vec![];
                if let Some(content) = op["requestBody"]["content"].as_object() {
                    media.extend(content.values().map(|m| ("request body".to_string(), m)));
                }
                for (status, response) in op["responses"].as_object().unwrap() {
                    if let Some(content) = response["content"].as_object() {
                        media.extend(content.values().map(|m| (format!("{status} answer"), m)));
                    }
                }
                for (what, m) in media {
                    let Some(example) = m.get("example") else { continue };
                    let mut errors = vec![];
                    validate(&doc, example, &m["schema"], "$", &mut errors);
                    assert!(errors.is_empty(), "{method} {path} {what}: {errors:#?}");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 25, "only {checked} examples");
    }

    #[test]
    fn the_example_check_catches_drift() {
        let doc = doc();
        let health = json!({ "$ref": "#/components/schemas/Health" });
        let mut errors = vec![];
        validate(&doc, &json!({ "status": "healthy", "timestamp": "2026-02-20T22:52:00" }), &health, "$", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        for bad in [
            json!({ "status": "healthy" }),
            json!({ "status": 1, "timestamp": "2026-02-20T22:52:00" }),
            json!({ "status": "healthy", "timestamp": "2026-02-20T22:52:00", "extra": true }),
            json!([]),
        ] {
            let mut errors = vec![];
            validate(&doc, &bad, &health, "$", &mut errors);
            assert!(!errors.is_empty(), "{bad} passed");
        }
        // Through allOf (a flattened head), nullable fields and maps.
        let row = json!({ "$ref": "#/components/schemas/Availability" });
        let mut errors = vec![];
        let ok = json!({
            "node": "n", "node_id": 1, "available": false, "timestamp": "t", "last_seen": null,
            "latency_ms": null, "status_code": null, "error": "agent not enrolled yet"
        });
        validate(&doc, &ok, &row, "$", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let mut missing_head = ok.clone();
        missing_head.as_object_mut().unwrap().remove("node_id");
        validate(&doc, &missing_head, &row, "$", &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let mut errors = vec![];
        let stats = json!({ "$ref": "#/components/schemas/TrafficStats" });
        validate(
            &doc,
            &json!({ "group_by": "node", "stats": { "nl": { "up": 1, "down": 2, "total": 3 } } }),
            &stats,
            "$",
            &mut errors,
        );
        assert_eq!(errors.len(), 1, "count is missing: {errors:?}");
    }

    /// A schema with `$ref`s and `allOf`s resolved into one object view.
    #[derive(Default)]
    struct Resolved {
        types: Option<Vec<String>>,
        properties: BTreeMap<String, Value>,
        required: BTreeSet<String>,
        additional: Option<Value>,
        items: Option<Value>,
        enumeration: Option<Vec<Value>>,
        one_of: Option<Vec<Value>>,
    }

    fn resolve(doc: &Value, schema: &Value, out: &mut Resolved) {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("foreign $ref {r}"));
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "dangling $ref {r}");
            resolve(doc, target, out);
        }
        for part in schema["allOf"].as_array().into_iter().flatten() {
            resolve(doc, part, out);
        }
        match &schema["type"] {
            Value::String(t) => out.types = Some(vec![t.clone()]),
            Value::Array(ts) => out.types = Some(ts.iter().filter_map(|t| t.as_str().map(String::from)).collect()),
            _ => {}
        }
        if let Some(props) = schema["properties"].as_object() {
            out.properties.extend(props.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        for r in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            out.required.insert(r.to_string());
        }
        if let Some(a) = schema.get("additionalProperties") {
            out.additional = Some(a.clone());
        }
        if let Some(i) = schema.get("items") {
            out.items = Some(i.clone());
        }
        if let Some(e) = schema["enum"].as_array() {
            out.enumeration = Some(e.clone());
        }
        if let Some(o) = schema["oneOf"].as_array() {
            out.one_of = Some(o.clone());
        }
    }

    fn validate(doc: &Value, value: &Value, schema: &Value, at: &str, errors: &mut Vec<String>) {
        let mut s = Resolved::default();
        resolve(doc, schema, &mut s);
        if let Some(variants) = &s.one_of {
            let fits = variants.iter().any(|v| {
                let mut e = vec![];
                validate(doc, value, v, at, &mut e);
                e.is_empty()
            });
            if !fits {
                errors.push(format!("{at}: fits none of oneOf"));
            }
            return;
        }
        if let Some(types) = &s.types {
            let fits = types.iter().any(|t| match t.as_str() {
                "null" => value.is_null(),
                "boolean" => value.is_boolean(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "string" => value.is_string(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                other => panic!("unknown type {other}"),
            });
            if !fits {
                errors.push(format!("{at}: {value} is not {types:?}"));
                return;
            }
        }
        if let Some(allowed) = &s.enumeration {
            if !allowed.contains(value) {
                errors.push(format!("{at}: {value} is not one of {allowed:?}"));
            }
        }
        match value {
            Value::Array(items) => {
                if let Some(item) = &s.items {
                    for (i, v) in items.iter().enumerate() {
                        validate(doc, v, item, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            Value::Object(fields) => {
                for r in &s.required {
                    if !fields.contains_key(r) {
                        errors.push(format!("{at}: required field {r} missing"));
                    }
                }
                for (k, v) in fields {
                    let here = format!("{at}.{k}");
                    match (s.properties.get(k), &s.additional) {
                        (Some(p), _) => validate(doc, v, p, &here, errors),
                        (None, Some(Value::Object(a))) => validate(doc, v, &Value::Object(a.clone()), &here, errors),
                        // An example must not show fields its schema does not declare (free-form
                        // objects such as `settings` declare none and take anything).
                        (None, _) if !s.properties.is_empty() => errors.push(format!("{here}: not in the schema")),
                        (None, _) => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// One request over a fresh connection: (status, body).
    async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, Value) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = if matches!(method, "POST" | "PUT") { "{}" } else { "" };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = vec![];
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.unwrap().unwrap();
        let raw = String::from_utf8_lossy(&raw).to_string();
        let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{raw}"));
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// The document and the router agree: every documented operation is served (also under the
    /// base path), a protected one answers 401 without credentials, and the document itself is
    /// public and names the prefix it was fetched under.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_documented_operation_is_served_with_the_documented_security() {
        let dir = tempfile::tempdir().unwrap();
        let running = crate::server::start(crate::server::Settings {
            base_path: Some("/my-panel".into()),
            ..crate::server::Settings::for_tests(dir.path())
        })
        .await
        .unwrap();
        let addr = running.http_addr;
        for prefix in ["", "/my-panel"] {
            for (method, path, public) in ROUTES {
                let concrete = path
                    .replace("{node_id}", "1")
                    .replace("{inbound_id}", "1")
                    .replace("{client_id}", "5783a3e7-e373-51cd-8642-c83782b807c5")
                    .replace("{email}", "nobody@example.com")
                    .replace("{identifier}", "nobody")
                    .replace("{source_id}", "1");
                let what = format!("{} {prefix}{concrete}", method.to_uppercase());
                let (status, body) = request(addr, &method.to_uppercase(), &format!("{prefix}{concrete}")).await;
                match (*public, *path) {
                    (false, _) => assert_eq!(status, 401, "{what}: {body}"),
                    (true, "/api/v1/health" | "/api/v1/auth/mfa-status") => assert_eq!(status, 200, "{what}: {body}"),
                    // Routed (not the fallback's "Not Found"): there is just no such client.
                    (true, _) => assert!(
                        status == 404 && body["detail"].as_str().is_some_and(|d| d.starts_with("no client")),
                        "{what}: {status} {body}"
                    ),
                }
            }
            let (status, served) = request(addr, "GET", &format!("{prefix}{PATH}")).await;
            assert_eq!(status, 200, "{prefix}{PATH}");
            assert_eq!(served["paths"], doc()["paths"]);
            match prefix {
                "" => assert!(served.get("servers").is_none(), "{}", served["servers"]),
                p => assert_eq!(served["servers"], json!([{ "url": p }])),
            }
        }
        running.shutdown().await;
    }

    /// The table-described families and their routers agree. CandyPanel: every documented
    /// operation is routed (not the family's "Unknown endpoint"), a Bearer one answers 401 without
    /// a token, and a
    /// public one does not, and a loopback one lets the test (calling from 127.0.0.1) through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn candypanel_and_v2ray_stat_operations_are_served_with_their_access() {
        use crate::api::candy::openapi::{Access, ROUTES as CANDY};
        let dir = tempfile::tempdir().unwrap();
        let running = crate::server::start(crate::server::Settings::for_tests(dir.path())).await.unwrap();
        let doc = doc();
        for r in CANDY {
            let what = format!("{} {}", r.method.to_uppercase(), r.path);
            let op = operation(&doc, r.method, r.path);
            assert_eq!(op["tags"], json!([crate::api::candy::openapi::TAG]), "{what}");
            let concrete = r.path.replace("{name}", "nobody").replace("{public_key}", "AAAA");
            let (status, body) = request(running.http_addr, &r.method.to_uppercase(), &concrete).await;
            let message = body["message"].as_str().unwrap_or_default();
            assert!(!message.starts_with("Unknown endpoint"), "{what}: not routed: {body}");
            match r.access {
                Access::Bearer => assert_eq!(status, 401, "{what}: {body}"),
                Access::Public => assert!(status != 401 && status != 403, "{what}: {status} {body}"),
                // A local caller gets past the loopback check (an admin call may still be 403
                // "Unauthorized" for want of the admin's id).
                Access::Loopback => {
                    assert!(status != 401 && !message.contains("only answers local callers"), "{what}: {status} {body}")
                }
            }
        }
        // The v2ray-stat family: documented, routed, and closed without credentials.
        for r in crate::api::v2ray_stat::openapi::ROUTES {
            let what = format!("{} {}", r.method.to_uppercase(), r.path);
            let op = operation(&doc, r.method, r.path);
            assert_eq!(op["tags"], json!([crate::api::v2ray_stat::openapi::TAG]), "{what}");
            let (status, body) = request(running.http_addr, &r.method.to_uppercase(), r.path).await;
            assert_eq!(status, 401, "{what}: {body}");
        }
        running.shutdown().await;
    }
}
