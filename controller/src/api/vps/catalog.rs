//! The OS (`/api/os`) and tariff (`/api/tariff`) catalogs: public lists as the web UI reads them
//! (its tariff page asks without a token), changed by administrators only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{blocking, path_id, Body, Customer, VpsError};
use crate::api::AppState;
use crate::store::{template_from_text, template_to_text, OsRecord, TariffRecord};

fn admin(user: &Customer) -> Result<(), VpsError> {
    if user.is_admin() {
        Ok(())
    } else {
        Err(VpsError::forbidden("only administrators change the catalogs"))
    }
}

/// An OS as the panel lists it.
pub fn os_json(os: &OsRecord) -> Value {
    json!({ "id": os.id, "name": os.name, "type": os.kind, "template": template_to_text(&os.template) })
}

/// The description the panel shows as bullet points (split at commas) when none was given.
pub fn default_description(cores: u32, memory_mib: u64, disk_gb: u64) -> String {
    let memory =
        if memory_mib.is_multiple_of(1024) { format!("{} GB", memory_mib / 1024) } else { format!("{memory_mib} MB") };
    let cores = if cores == 1 { "1 core".to_string() } else { format!("{cores} cores") };
    format!("{cores}, {memory} RAM, {disk_gb} GB SSD")
}

/// A tariff as the panel lists it, with Flotilla's explicit sizes.
pub fn tariff_json(t: &TariffRecord) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "price": t.price,
        "description": t.description,
        "cores": t.cores,
        "memory": t.memory_mib,
        "disk": t.disk_gb,
    })
}

pub async fn os_list(State(state): State<AppState>) -> Result<Json<Vec<Value>>, VpsError> {
    let store = state.store.clone();
    let list = blocking(move || store.os_list()).await?;
    Ok(Json(list.iter().map(os_json).collect()))
}

/// `POST /api/os` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOs {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    /// `busybox`, `debian:<release>` or `lxc:<template> [args]`.
    template: Option<String>,
}

pub async fn os_add(
    user: Customer,
    State(state): State<AppState>,
    Body(body): Body<NewOs>,
) -> Result<(StatusCode, Json<Value>), VpsError> {
    admin(&user)?;
    let name = body.name.ok_or_else(|| VpsError::bad("name is required"))?;
    let template = body
        .template
        .ok_or_else(|| VpsError::bad("template is required (busybox, debian:bookworm, lxc:<name> [args])"))?;
    let template = template_from_text(&template).map_err(VpsError::bad)?;
    let kind = body.kind.unwrap_or_else(|| "linux".into());
    if kind != "linux" {
        return Err(VpsError::bad("type: only linux guests run in containers"));
    }
    let store = state.store.clone();
    let os = blocking(move || store.add_os(&name, &kind, &template)).await?;
    Ok((StatusCode::CREATED, Json(os_json(&os))))
}

pub async fn os_delete(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, VpsError> {
    admin(&user)?;
    let id = path_id(&raw, "id")?;
    let store = state.store.clone();
    if !blocking(move || store.delete_os(id)).await? {
        return Err(VpsError::not_found(format!("OS {id} not found")));
    }
    Ok(Json(json!({ "status": "deleted" })))
}

pub async fn tariff_list(State(state): State<AppState>) -> Result<Json<Vec<Value>>, VpsError> {
    let store = state.store.clone();
    let list = blocking(move || store.tariffs()).await?;
    Ok(Json(list.iter().map(tariff_json).collect()))
}

/// `POST /api/tariff` body: sizes in cores, MiB and GB.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTariff {
    name: Option<String>,
    cores: Option<u32>,
    /// MiB.
    memory: Option<u64>,
    /// GB.
    disk: Option<u64>,
    price: Option<f64>,
    description: Option<String>,
}

pub async fn tariff_add(
    user: Customer,
    State(state): State<AppState>,
    Body(body): Body<NewTariff>,
) -> Result<(StatusCode, Json<Value>), VpsError> {
    admin(&user)?;
    let (Some(name), Some(cores), Some(memory_mib), Some(disk_gb)) = (body.name, body.cores, body.memory, body.disk)
    else {
        return Err(VpsError::bad("name, cores, memory (MiB) and disk (GB) are required"));
    };
    let description = body
        .description
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| default_description(cores, memory_mib, disk_gb));
    let tariff =
        TariffRecord { id: 0, name, cores, memory_mib, disk_gb, price: body.price.unwrap_or(0.0), description };
    let store = state.store.clone();
    let tariff = blocking(move || store.add_tariff(&tariff)).await?;
    Ok((StatusCode::CREATED, Json(tariff_json(&tariff))))
}

pub async fn tariff_delete(
    user: Customer,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, VpsError> {
    admin(&user)?;
    let id = path_id(&raw, "id")?;
    let store = state.store.clone();
    if !blocking(move || store.delete_tariff(id)).await? {
        return Err(VpsError::not_found(format!("tariff {id} not found")));
    }
    Ok(Json(json!({ "status": "deleted" })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_descriptions_read_as_the_panel_shows_them() {
        assert_eq!(default_description(1, 512, 2), "1 core, 512 MB RAM, 2 GB SSD");
        assert_eq!(default_description(2, 2048, 40), "2 cores, 2 GB RAM, 40 GB SSD");
    }
}
