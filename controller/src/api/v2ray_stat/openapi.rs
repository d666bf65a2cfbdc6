//! The fleet-wide v2ray-stat family in `/openapi.json`. Its parameters are the original's form
//! fields and query strings and most answers are plain text, so the operations are described
//! from one table; a test checks it against the router.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::OpenApi;
use utoipa::Modify;

/// Tag of the family's operations.
pub const TAG: &str = "v2ray-stat";
/// Name of its bearer scheme (`[v2ray_stat] api_token`).
pub const TOKEN: &str = "v2ray_stat_token";

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    /// Form fields or query, as an example (`user=alice&enabled=false`); "" for none.
    pub params: &'static str,
    /// Content type of the success answer.
    pub answers: &'static str,
}

const fn route(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    params: &'static str,
) -> Route {
    Route { method, path, id, summary, params, answers: "text/plain" }
}

/// Every route of the family (each also takes `node_id` to pick one node).
pub const ROUTES: &[Route] = &[
    Route {
        answers: "application/json",
        ..route("get", "/api/v1/users", "v2s_users", "Every user, as the original's JSON array", "")
    },
    route("get", "/api/v1/stats", "v2s_stats", "The server and client tables", "sort_by=user&sort_order=ASC"),
    route("get", "/api/v1/dns_stats", "v2s_dns_stats", "A user's most frequent destinations", "user=alice&count=20"),
    route("post", "/api/v1/delete_dns_stats", "v2s_delete_dns_stats", "Forget every destination count", ""),
    route("post", "/api/v1/reset_traffic_stats", "v2s_reset_traffic_stats", "Zero the traffic sources' totals", ""),
    route("post", "/api/v1/reset_clients_stats", "v2s_reset_clients_stats", "Zero every client's totals", ""),
    route("post", "/api/v1/reset_traffic", "v2s_reset_traffic", "Zero the session counters and rates", ""),
    route(
        "post",
        "/api/v1/add_user",
        "v2s_add_user",
        "Add a user (credential generated when missing)",
        "user=alice&credential=123e4567-e89b-12d3-a456-426614174000&inboundTag=vless-in",
    ),
    route(
        "post",
        "/api/v1/bulk_add_users",
        "v2s_bulk_add_users",
        "Add the users of a multipart file `users_file` in one change",
        "",
    ),
    route("delete", "/api/v1/delete_user", "v2s_delete_user", "Delete a user", "user=alice&inboundTag=vless-in"),
    route("patch", "/api/v1/set_enabled", "v2s_set_enabled", "Enable or disable a user", "user=alice&enabled=false"),
    route(
        "patch",
        "/api/v1/update_lim_ip",
        "v2s_update_lim_ip",
        "Set a user's limit of source addresses (0 = none)",
        "user=alice&lim_ip=2",
    ),
    route(
        "patch",
        "/api/v1/adjust_date",
        "v2s_adjust_date",
        "Move a user's subscription end (+days[:hours], -days[:hours], 0)",
        "user=alice&sub_end=+30",
    ),
    route(
        "patch",
        "/api/v1/update_renew",
        "v2s_update_renew",
        "Set a user's auto-renewal in days (0 = none)",
        "user=alice&renew=30",
    ),
];

/// `a=1&b=2` as the object a form body describes.
fn form_example(params: &str) -> serde_json::Value {
    let fields = params.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.into()));
    serde_json::Value::Object(fields.collect())
}

fn method(name: &str) -> HttpMethod {
    match name {
        "get" => HttpMethod::Get,
        "post" => HttpMethod::Post,
        "delete" => HttpMethod::Delete,
        _ => HttpMethod::Patch,
    }
}

/// Adds the family's operations and its token scheme to the document.
pub struct V2rayStatPaths;

impl Modify for V2rayStatPaths {
    fn modify(&self, openapi: &mut OpenApi) {
        crate::api::openapi::add_bearer_scheme(
            openapi,
            TOKEN,
            "`[v2ray_stat] api_token` of controller.toml (or FLOTILLA_V2RAY_STAT_TOKEN)",
        );
        let text = || ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String))).build();
        for r in ROUTES {
            let ok = match r.answers {
                "application/json" => {
                    ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::Array))).build()
                }
                _ => text(),
            };
            let mut op = OperationBuilder::new()
                .tag(TAG)
                .operation_id(Some(r.id))
                .summary(Some(r.summary))
                .description(Some("Fleet-wide; `node_id` (query or form) limits it to one node."))
                .security(SecurityRequirement::new::<_, _, String>(super::super::openapi::BASIC_AUTH, []))
                .security(SecurityRequirement::new::<_, _, String>(TOKEN, []))
                .response("200", ResponseBuilder::new().description("Done").content(r.answers, ok))
                .response(
                    "400",
                    ResponseBuilder::new().description("Bad input (plain text)").content("text/plain", text()),
                )
                .response(
                    "401",
                    ResponseBuilder::new().description("Missing or wrong credentials").content("text/plain", text()),
                );
            if r.path.ends_with("bulk_add_users") {
                let body = RequestBodyBuilder::new()
                    .content(
                        "multipart/form-data",
                        ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::Object))).build(),
                    )
                    .build();
                op = op.request_body(Some(body));
            } else if !r.params.is_empty() && r.method != "get" {
                let body = RequestBodyBuilder::new()
                    .content(
                        "application/x-www-form-urlencoded",
                        ContentBuilder::new()
                            .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                            .example(Some(form_example(r.params)))
                            .build(),
                    )
                    .build();
                op = op.request_body(Some(body));
            }
            openapi.paths.add_path_operation(r.path, vec![method(r.method)], op.build());
        }
    }
}
