//! `GET /check` and `POST /api/auth` (`login`, `install`). Logins are the controller's users:
//! the same admin as the other API families. Each login gets its own expiring session token.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{blocking, manage, CandyError, Done, Fields};
use crate::api::AppState;
use crate::auth::AuthError;
use crate::store::{NewWgInterface, Role, StoreError};
use crate::wireguard::AddressRange;

/// Serialises installs: two at once must not both pass the "not installed yet" check.
static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether the panel has been installed: its flag is set or an interface exists already.
async fn installed(state: &AppState) -> Result<bool, CandyError> {
    let store = state.store.clone();
    blocking(move || -> Result<bool, StoreError> {
        Ok(store.candy_setting("install")?.as_deref() == Some("1") || !store.wg_interfaces()?.is_empty())
    })
    .await
}

/// `{"installed": bool}` (public).
pub async fn check(State(state): State<AppState>) -> Result<Json<Value>, CandyError> {
    Ok(Json(json!({ "installed": installed(&state).await? })))
}

/// `login` or `install`.
pub async fn auth(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    match fields.non_empty("action")?.as_deref() {
        None => Err(CandyError::bad("Missing 'action' in request body")),
        Some("login") => login(&state, &fields).await,
        Some("install") => install(&state, &fields).await,
        Some(_) => Err(CandyError::bad("Invalid action specified. Must be 'login' or 'install'.")),
    }
}

async fn login(state: &AppState, fields: &Fields) -> Result<Done, CandyError> {
    if !installed(state).await? {
        return Err(CandyError::bad("CandyPanel is not installed. Please use the 'install' action."));
    }
    let username = fields.non_empty("username")?;
    let password = fields.text("password")?.filter(|p| !p.is_empty());
    let (Some(username), Some(password)) = (username, password) else {
        return Err(CandyError::bad("Missing username or password for login"));
    };
    let identity = match state.auth.verify(&username, &password).await {
        Ok(identity) => identity,
        Err(AuthError::Store(e)) => return Err(e.into()),
        Err(_) => return Err(CandyError::unauthorized("Wrong username or password!")),
    };
    if identity.role == Role::Viewer {
        return Err(CandyError::forbidden(format!("User '{username}' is a viewer and may not manage WireGuard")));
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let expires_at = time::OffsetDateTime::now_utc().unix_timestamp() + state.candy.session_ttl.as_secs() as i64;
    let store = state.store.clone();
    let (t, user) = (token.clone(), identity.username.clone());
    blocking(move || store.create_api_session(&t, &user, expires_at)).await?;
    Ok(Done::with("Login successful!", json!({ "access_token": token, "token_type": "bearer" })))
}

async fn install(state: &AppState, fields: &Fields) -> Result<Done, CandyError> {
    let _one_at_a_time = INSTALL.lock().await;
    if installed(state).await? {
        return Err(CandyError::bad("CandyPanel is already installed."));
    }
    let server_ip = fields
        .non_empty("server_ip")?
        .ok_or_else(|| CandyError::bad("Missing required field for installation: 'server_ip'"))?;
    let port =
        fields.int("wg_port")?.ok_or_else(|| CandyError::bad("Missing required field for installation: 'wg_port'"))?;
    let server_ip = server_ip.trim().to_string();
    if server_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(CandyError::bad(format!(
            "Invalid server_ip '{server_ip}': expected the server's public IP address"
        )));
    }
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| CandyError::bad(format!("Invalid wg_port {port}: must be 1-65535")))?;
    let range_text = fields.non_empty("wg_address_range")?.unwrap_or_else(|| "10.0.0.1/24".into());
    let range = AddressRange::parse(&range_text).map_err(|e| CandyError::bad(e.to_string()))?;
    let ipv6_range = fields
        .non_empty("wg_ipv6_address")?
        .map(|r| AddressRange::parse(&r).map_err(|e| CandyError::bad(e.to_string())))
        .transpose()?;
    let dns = fields.non_empty("wg_dns")?.unwrap_or_else(|| "8.8.8.8".into());
    let ipv6_dns = fields.text("wg_ipv6_dns")?;
    let admin_user = fields.non_empty("admin_user")?.unwrap_or_else(|| "admin".into());
    let admin_password = fields
        .text("admin_password")?
        .filter(|p| !p.is_empty())
        .ok_or_else(|| CandyError::bad("Missing admin_password: choose the admin's password"))?;
    let node_id = manage::wireguard_node(state, fields.int("node_id")?).await?;

    // One user base: an existing user must prove its password; install never resets one.
    let store = state.store.clone();
    let name = admin_user.clone();
    let existing = blocking(move || store.user(&name)).await?;
    if existing.is_some() {
        match state.auth.verify(&admin_user, &admin_password).await {
            Ok(identity) if identity.role == Role::Admin => {}
            Ok(_) => return Err(CandyError::forbidden(format!("User '{admin_user}' is not an admin"))),
            Err(AuthError::Store(e)) => return Err(e.into()),
            Err(_) => {
                return Err(CandyError::unauthorized(format!(
                    "User '{admin_user}' exists and the password is wrong: install never changes an existing user's password"
                )))
            }
        }
    } else {
        let hash = crate::auth::hash_password(&admin_password)?;
        let store = state.store.clone();
        let name = admin_user.clone();
        blocking(move || store.create_user(&name, &hash, Role::Admin)).await?;
        state.auth.clear_cache();
        tracing::info!(user = %admin_user, "CandyPanel install created the admin user");
    }

    let new = NewWgInterface { node_id, port, address_range: range, ipv6_address_range: ipv6_range, endpoint: None };
    let store = state.store.clone();
    let iface = blocking(move || store.create_wg_interface(&new)).await?;
    let mut settings = vec![
        ("server_ip", server_ip.clone()),
        ("custom_endpont", server_ip),
        ("dns", dns),
        ("install", "1".to_string()),
    ];
    if let Some(v6) = ipv6_dns {
        settings.push(("ipv6_dns", v6));
    }
    let store = state.store.clone();
    blocking(move || {
        let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        store.set_candy_settings(&pairs)
    })
    .await?;
    super::clients::push_node(state, iface.node_id).await;
    Ok(Done::message("Installed successfully!"))
}
