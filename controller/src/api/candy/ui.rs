//! CandyPanel's own web UI (its built `Frontend/dist`), served from `[candy] ui_dir`: the UI
//! calls the origin it was loaded from, so it must come from the controller's listener. Files
//! are served as they are; any other GET outside the APIs gets `index.html` (the UI routes in
//! the browser).

use std::path::{Component, Path, PathBuf};

use axum::extract::State;
use axum::http::{header, Method, Uri};
use axum::response::{IntoResponse, Response};

use crate::api::AppState;

/// The application's fallback: the UI when it is configured and the path is not an API's,
/// else the JSON 404 every API answers with.
pub async fn fallback(State(state): State<AppState>, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let api = ["/api/", "/bot_api/", "/openapi.json", "/ws"].iter().any(|p| path.starts_with(p));
    if let (Some(dir), false, true) = (&state.candy.ui_dir, api, method == Method::GET || method == Method::HEAD) {
        if let Some(file) = resolve(dir, path).await {
            if let Ok(body) = tokio::fs::read(&file).await {
                let cache =
                    if path.starts_with("/assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
                return ([(header::CONTENT_TYPE, content_type(&file)), (header::CACHE_CONTROL, cache)], body)
                    .into_response();
            }
        }
    }
    if super::is_candy_path(path) {
        return super::CandyError::not_found(format!("Unknown endpoint {path}")).into_response();
    }
    if crate::api::vps::is_vps_path(path) {
        return crate::api::vps::VpsError::not_found(format!("no endpoint {path}")).into_response();
    }
    if crate::api::panelica::is_external_path(path) {
        return crate::api::panelica::ApiError::not_found(format!("no endpoint {path}"))
            .details("the external API is under /api/external/v1/; see GET /api/external/v1/api-spec")
            .into_response();
    }
    crate::api::multi_server::not_found().await.into_response()
}

/// The fallback for a known path and the wrong method, in the envelope of the path's family.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    if super::is_candy_path(uri.path()) {
        let error = super::CandyError {
            status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
            message: format!("Method {method} is not allowed on {}", uri.path()),
        };
        return error.into_response();
    }
    if crate::api::panelica::is_external_path(uri.path()) {
        return crate::api::panelica::ApiError::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            format!("method {method} is not allowed on {}", uri.path()),
        )
        .into_response();
    }
    if crate::api::vps::is_vps_path(uri.path()) {
        let message = format!("method {method} is not allowed on {}", uri.path());
        return crate::api::vps::VpsError { status: axum::http::StatusCode::METHOD_NOT_ALLOWED, message }
            .into_response();
    }
    crate::api::multi_server::method_not_allowed().await.into_response()
}

/// The file for `path` under `dir`, else `dir/index.html`; never anything outside `dir`.
async fn resolve(dir: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    let clean = relative.components().all(|c| matches!(c, Component::Normal(_)));
    if clean && !relative.as_os_str().is_empty() {
        let candidate = dir.join(relative);
        if let (Ok(real), Ok(root)) = (tokio::fs::canonicalize(&candidate).await, tokio::fs::canonicalize(dir).await) {
            if real.starts_with(&root) && tokio::fs::metadata(&real).await.is_ok_and(|m| m.is_file()) {
                return Some(real);
            }
        }
    }
    let index = dir.join("index.html");
    tokio::fs::metadata(&index).await.is_ok_and(|m| m.is_file()).then_some(index)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_inside_the_dir_else_index_never_outside() {
        let dir = tempfile::tempdir().unwrap();
        let ui = dir.path().join("dist");
        std::fs::create_dir_all(ui.join("assets")).unwrap();
        std::fs::write(ui.join("index.html"), "<html>").unwrap();
        std::fs::write(ui.join("assets/app.js"), "x").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
        assert_eq!(resolve(&ui, "/assets/app.js").await.unwrap(), ui.join("assets/app.js").canonicalize().unwrap());
        assert_eq!(resolve(&ui, "/").await.unwrap(), ui.join("index.html"));
        assert_eq!(resolve(&ui, "/shortlink/a/b").await.unwrap(), ui.join("index.html"));
        assert_eq!(resolve(&ui, "/../secret.txt").await.unwrap(), ui.join("index.html"), "no way out");
        assert_eq!(content_type(Path::new("a.js")), "text/javascript; charset=utf-8");
    }
}
