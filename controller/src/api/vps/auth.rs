//! The panel's login (`POST /api/auth/login` → `{token}`), optional registration, and
//! `GET /api/auth/me` with the user's servers, in the shapes the original web UI reads.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::servers::server_json;
use super::{blocking, Body, Customer, VpsError};
use crate::api::AppState;
use crate::auth::AuthError;
use crate::store::{Role, StoreError};

/// `POST /api/auth/login` body. The web UI sends `email` (a user name works too) and, in its
/// latest version, a captcha token, which is ignored.
#[derive(Debug, Deserialize)]
pub struct LoginBody {
    email: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

pub async fn login(State(state): State<AppState>, Body(body): Body<LoginBody>) -> Result<Json<Value>, VpsError> {
    let login = body.email.or(body.username).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let (Some(login), Some(password)) = (login, body.password.filter(|p| !p.is_empty())) else {
        return Err(VpsError::bad("email and password are required"));
    };
    let store = state.store.clone();
    let l = login.clone();
    let username = blocking(move || store.username_for_login(&l)).await?;
    let wrong = || VpsError::unauthorized("wrong e-mail or password");
    let username = username.ok_or_else(wrong)?;
    let identity = match state.auth.verify(&username, &password).await {
        Ok(identity) => identity,
        Err(AuthError::Store(e)) => return Err(e.into()),
        Err(_) => return Err(wrong()),
    };
    let token = hex::encode(rand::random::<[u8; 32]>());
    let expires_at = time::OffsetDateTime::now_utc().unix_timestamp() + state.candy.session_ttl.as_secs() as i64;
    let store = state.store.clone();
    let (t, user) = (token.clone(), identity.username.clone());
    blocking(move || store.create_api_session(&t, &user, expires_at)).await?;
    tracing::info!(user = %identity.username, "VPS panel login");
    Ok(Json(json!({ "token": token })))
}

/// `POST /api/auth/register` body.
#[derive(Debug, Deserialize)]
pub struct RegisterBody {
    username: Option<String>,
    email: Option<String>,
    password: Option<String>,
}

pub async fn register(
    State(state): State<AppState>,
    Body(body): Body<RegisterBody>,
) -> Result<(StatusCode, Json<Value>), VpsError> {
    if !state.vps.registration {
        return Err(VpsError::forbidden("registration is closed; ask the operator for an account"));
    }
    let username = body.username.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let email = body.email.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let (Some(username), Some(email), Some(password)) = (username, email, body.password) else {
        return Err(VpsError::bad("username, email and password are required"));
    };
    if username.len() > 64 || username.chars().any(|c| c.is_control() || c == '@' || c == ':') {
        return Err(VpsError::bad("username: at most 64 characters, without '@' or ':'"));
    }
    if !email.contains('@') || email.len() > 254 {
        return Err(VpsError::bad("email is not an e-mail address"));
    }
    if password.chars().count() < 8 {
        return Err(VpsError::bad("password must be at least 8 characters"));
    }
    let hash = crate::auth::hash_password(&password).map_err(|e| VpsError::internal(e.to_string()))?;
    let store = state.store.clone();
    let (u, e) = (username.clone(), email.clone());
    blocking(move || -> Result<(), StoreError> {
        if store.username_for_login(&e)?.is_some() {
            return Err(StoreError::Conflict(format!("a user with e-mail {e:?}")));
        }
        store.create_user(&u, &hash, Role::Viewer)?;
        store.set_user_email(&u, Some(&e))?;
        Ok(())
    })
    .await?;
    tracing::info!(user = %username, "VPS panel registration");
    Ok((StatusCode::CREATED, Json(json!({ "message": "registered; log in now" }))))
}

pub async fn me(user: Customer, State(state): State<AppState>) -> Result<Json<Value>, VpsError> {
    let store = state.store.clone();
    let scope = Some(user.id);
    let name = user.username.clone();
    let (servers, catalogs, account) = blocking(move || -> Result<_, StoreError> {
        let servers = store.servers(scope)?;
        let catalogs = (store.os_list()?, store.tariffs()?);
        let account = store.user_id_and_email(&name)?;
        Ok((servers, catalogs, account))
    })
    .await?;
    let email = account.and_then(|(_, e)| e);
    let servers: Vec<Value> = servers.iter().map(|s| server_json(&state, s, &catalogs.0, &catalogs.1)).collect();
    Ok(Json(json!({
        "user": {
            "id": user.id,
            "username": user.username,
            "email": email,
            // The panel's operator flag (0/1) and admin flag: Flotilla's administrators.
            "operator": i32::from(user.is_admin()),
            "isAdmin": user.is_admin(),
            // No billing in Flotilla: the panel's balance is always 0.
            "balance": 0.0,
            "servers": servers,
            "tickets": [],
        }
    })))
}
