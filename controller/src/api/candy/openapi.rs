//! The CandyPanel family in `/openapi.json`. Its bodies are the panel's free-form flat JSON (read
//! through [`super::Fields`]), so the operations are described from one table rather than typed
//! DTOs: path, method, who may call it, what to send, what comes back. A test checks the table
//! against the router.

use serde_json::json;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{OpenApi, Required};
use utoipa::Modify;

/// Tag of the family's operations.
pub const TAG: &str = "candypanel";
/// Name of its bearer security scheme.
pub const BEARER: &str = "candy_bearer";

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (the install check, logins, the public client pages).
    Public,
    /// A login session or an API token, as `Authorization: Bearer`.
    Bearer,
    /// Callers on the controller's own host only (the Telegram bot).
    Loopback,
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
    /// Content type of the success answer.
    pub answers: &'static str,
}

const fn route(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    access: Access,
    example: Option<&'static str>,
) -> Route {
    Route { method, path, id, summary, access, example, answers: "application/json" }
}

use Access::{Bearer, Loopback, Public};

/// Every route of the family.
pub const ROUTES: &[Route] = &[
    route("get", "/check", "candy_check", "Whether the panel is installed (`{\"installed\": bool}`)", Public, None),
    route(
        "post",
        "/api/auth",
        "candy_auth",
        "Log in (`action: login`) or install once (`action: install`)",
        Public,
        Some(r#"{"action": "login", "username": "admin", "password": "…"}"#),
    ),
    route(
        "post",
        "/api/manage",
        "candy_manage",
        "Change clients, interfaces, settings, API tokens, or sync (`resource` + `action`, fields flat)",
        Bearer,
        Some(
            r#"{"resource": "client", "action": "create", "name": "phone", "expires": "2030-01-01", "traffic": "0", "wg_id": 0}"#,
        ),
    ),
    route("get", "/api/data", "candy_data", "Dashboard, clients, interfaces and settings", Bearer, None),
    route(
        "get",
        "/client-details/{name}/{public_key}",
        "candy_client_details",
        "A client's public page data (name and public key are the secret)",
        Public,
        None,
    ),
    Route {
        answers: "image/png",
        ..route("get", "/qr/{name}/{public_key}", "candy_qr", "QR code of a client's config", Public, None)
    },
    Route {
        answers: "text/html",
        ..route("get", "/shortlink/{name}/{public_key}", "candy_shortlink", "A client's page", Public, None)
    },
    route(
        "post",
        "/bot_api/user/register",
        "bot_register",
        "Register a Telegram user",
        Loopback,
        Some(r#"{"telegram_id": 123456789}"#),
    ),
    route(
        "post",
        "/bot_api/user/set_language",
        "bot_set_language",
        "Set a user's language (`en`, `fa`)",
        Loopback,
        Some(r#"{"telegram_id": 123456789, "language": "en"}"#),
    ),
    route(
        "post",
        "/bot_api/user/initiate_purchase",
        "bot_initiate_purchase",
        "Card number and prices for a purchase",
        Loopback,
        Some(r#"{"telegram_id": 123456789}"#),
    ),
    route(
        "post",
        "/bot_api/user/calculate_price",
        "bot_calculate_price",
        "Price of a purchase (`gb`, `month` or `custom`)",
        Loopback,
        Some(r#"{"telegram_id": 123456789, "purchase_type": "gb", "quantity": 10}"#),
    ),
    route(
        "post",
        "/bot_api/user/submit_transaction",
        "bot_submit_transaction",
        "Submit a paid order for review",
        Loopback,
        Some(
            r#"{"telegram_id": 123456789, "order_id": "ORDER123", "card_number_sent": "User confirmed payment via bot", "purchase_type": "gb", "quantity": 10, "amount": 40000}"#,
        ),
    ),
    route(
        "post",
        "/bot_api/user/buy_traffic_request",
        "bot_buy_traffic_request",
        "Price, and with `order_id` the order too (older bots)",
        Loopback,
        Some(r#"{"telegram_id": 123456789, "purchase_type": "gb", "quantity": 10}"#),
    ),
    route(
        "post",
        "/bot_api/user/get_license",
        "bot_get_license",
        "The user's WireGuard config",
        Loopback,
        Some(r#"{"telegram_id": 123456789}"#),
    ),
    route(
        "post",
        "/bot_api/user/account_status",
        "bot_account_status",
        "The user's traffic and expiry",
        Loopback,
        Some(r#"{"telegram_id": 123456789}"#),
    ),
    route(
        "post",
        "/bot_api/user/call_support",
        "bot_call_support",
        "A support message for the admin",
        Loopback,
        Some(r#"{"telegram_id": 123456789, "message": "…"}"#),
    ),
    route(
        "post",
        "/bot_api/admin/check_admin",
        "bot_check_admin",
        "Whether a Telegram id is the bot's admin",
        Loopback,
        Some(r#"{"telegram_id": 987654321}"#),
    ),
    route(
        "post",
        "/bot_api/admin/get_all_users",
        "bot_get_all_users",
        "All bot users (admin)",
        Loopback,
        Some(r#"{"telegram_id": 987654321}"#),
    ),
    route(
        "post",
        "/bot_api/admin/get_transactions",
        "bot_get_transactions",
        "Orders, by status (admin)",
        Loopback,
        Some(r#"{"telegram_id": 987654321, "status_filter": "pending"}"#),
    ),
    route(
        "post",
        "/bot_api/admin/approve_transaction",
        "bot_approve_transaction",
        "Approve an order: creates or extends the user's client (admin)",
        Loopback,
        Some(r#"{"telegram_id": 987654321, "order_id": "ORDER123", "admin_note": "paid"}"#),
    ),
    route(
        "post",
        "/bot_api/admin/reject_transaction",
        "bot_reject_transaction",
        "Reject an order (admin)",
        Loopback,
        Some(r#"{"telegram_id": 987654321, "order_id": "ORDER123"}"#),
    ),
    route(
        "post",
        "/bot_api/admin/manage_user",
        "bot_manage_user",
        "Ban, unban, or set a user's traffic or time (admin)",
        Loopback,
        Some(
            r#"{"admin_telegram_id": 987654321, "target_telegram_id": 123456789, "action": "update_time", "value": 30}"#,
        ),
    ),
    route(
        "post",
        "/bot_api/admin/send_message_to_all",
        "bot_send_message_to_all",
        "Recipients of a broadcast (admin)",
        Loopback,
        Some(r#"{"telegram_id": 987654321, "message": "…"}"#),
    ),
    route(
        "post",
        "/bot_api/admin/server_control",
        "bot_server_control",
        "The `/api/manage` operations for the bot's admin (fields under `data`)",
        Loopback,
        Some(
            r#"{"admin_telegram_id": 987654321, "resource": "client", "action": "get_config", "data": {"name": "phone"}}"#,
        ),
    ),
    route(
        "get",
        "/bot_api/admin/data",
        "bot_admin_data_get",
        "The dashboard for the bot's status view",
        Loopback,
        None,
    ),
    route(
        "post",
        "/bot_api/admin/data",
        "bot_admin_data",
        "The dashboard for the bot's status view (as the bot sends it)",
        Loopback,
        Some("{}"),
    ),
];

fn object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Object)
}

/// Adds the family's operations and its bearer scheme to the document.
pub struct CandyPaths;

impl Modify for CandyPaths {
    fn modify(&self, openapi: &mut OpenApi) {
        crate::api::openapi::add_bearer_scheme(
            openapi,
            BEARER,
            "`data.access_token` of an `/api/auth` login, or an API token added with `api_token`",
        );
        let envelope = |success: bool| {
            let mut o = object()
                .property("message", ObjectBuilder::new().schema_type(Type::String))
                .required("message")
                .property("success", ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([success])))
                .required("success");
            if success {
                o = o.property(
                    "data",
                    object().description(Some("Depends on the operation; `null` when there is nothing")),
                );
            }
            o.build()
        };
        for r in ROUTES {
            let ok_content = match r.answers {
                "application/json" if r.path == "/check" => ContentBuilder::new()
                    .schema(Some(object().property("installed", ObjectBuilder::new().schema_type(Type::Boolean))))
                    .example(Some(json!({ "installed": true })))
                    .build(),
                "application/json" => ContentBuilder::new().schema(Some(envelope(true))).build(),
                _ => ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String))).build(),
            };
            let error = ContentBuilder::new()
                .schema(Some(envelope(false)))
                .example(Some(json!({ "message": "What was wrong", "success": false })))
                .build();
            let mut op = OperationBuilder::new()
                .tag(TAG)
                .operation_id(Some(r.id))
                .summary(Some(r.summary))
                .response("200", ResponseBuilder::new().description("Done").content(r.answers, ok_content))
                .response(
                    "400",
                    ResponseBuilder::new().description("Bad input").content("application/json", error.clone()),
                );
            op = match r.access {
                Access::Public => op,
                Access::Bearer => op.security(SecurityRequirement::new::<_, _, String>(BEARER, [])).response(
                    "401",
                    ResponseBuilder::new()
                        .description("Missing or invalid token")
                        .content("application/json", error.clone()),
                ),
                Access::Loopback => op
                    .description(Some("Answered to callers on the controller's host only (the bot runs beside it)."))
                    .response(
                        "403",
                        ResponseBuilder::new()
                            .description("Not a local caller, or not the bot's admin")
                            .content("application/json", error.clone()),
                    ),
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
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
                );
            }
            let method = if r.method == "get" { HttpMethod::Get } else { HttpMethod::Post };
            openapi.paths.add_path_operation(r.path, vec![method], op.build());
        }
    }
}
