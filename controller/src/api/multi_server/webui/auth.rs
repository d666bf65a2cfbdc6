//! `/api/v1/auth/…`: the UI's login checks. Flotilla has no TOTP yet, so MFA is always off.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::UiUser;
use crate::api::multi_server::{ErrorBody, TAG};
use crate::store::Role;

/// `GET /api/v1/auth/mfa-status` answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({ "enabled": false }))]
pub struct MfaStatus {
    /// Whether logins need a TOTP code (`X-TOTP-Code`); always false.
    pub enabled: bool,
}

/// Whether the login form must ask for a TOTP code (public, no authentication).
#[utoipa::path(
    get,
    path = "/api/v1/auth/mfa-status",
    operation_id = "mfa_status",
    tag = TAG,
    responses((status = 200, description = "MFA setting", body = MfaStatus)),
)]
pub async fn mfa_status() -> Json<MfaStatus> {
    Json(MfaStatus { enabled: false })
}

/// `GET /api/v1/auth/verify` answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({ "user": "admin", "role": "admin", "mfa_enabled": false }))]
pub struct Verified {
    /// The user the credentials belong to.
    pub user: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// Always false.
    pub mfa_enabled: bool,
}

/// Checks the caller's credentials: the UI's login. A 401 carries no `WWW-Authenticate`.
#[utoipa::path(
    get,
    path = "/api/v1/auth/verify",
    operation_id = "verify_login",
    tag = TAG,
    security(("basic" = [])),
    responses(
        (status = 200, description = "Valid credentials", body = Verified),
        (status = 401, description = "Missing or invalid credentials (no challenge header)", body = ErrorBody),
    ),
)]
pub async fn verify(UiUser(identity): UiUser) -> Json<Verified> {
    Json(Verified { role: Role::as_str(identity.role).into(), user: identity.username, mfa_enabled: false })
}
