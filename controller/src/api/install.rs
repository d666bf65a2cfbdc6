//! The one-line node install: `curl -fsSL <controller>/install.sh | sh -s -- TOKEN` downloads the
//! agent package from the controller, checks it, installs it, enrolls and starts the agent.
//!
//! Trust comes from the join token, which the operator got from the API: the script checks that
//! the CA the controller serves has the fingerprint pinned in the token, and that the package
//! carries that CA's signature, before installing anything. All routes are public (a new host
//! has no credentials yet; the token is its secret).

use std::path::PathBuf;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::AppState;

/// `[install]` settings of the controller.
#[derive(Debug, Clone, Default)]
pub struct InstallSettings {
    /// The `flotilla-agent` .deb handed to new hosts; `None`: the one-liner is not offered.
    pub agent_package: Option<PathBuf>,
}

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/install.sh", get(script))
        .route("/install/ca.der", get(ca))
        .route("/install/flotilla-agent.deb", get(package))
        .route("/install/flotilla-agent.deb.sig", get(signature))
}

/// The base URL the caller reached the controller at (scheme, host and any prefix before
/// `/api/`), for commands that must point back at it.
pub fn base_url(headers: &HeaderMap, path: &str) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let scheme = header("x-forwarded-proto").unwrap_or("http");
    let host = header("x-forwarded-host").or_else(|| header("host")).unwrap_or("127.0.0.1:8080");
    let prefix = path.find("/api/").map(|i| &path[..i]).unwrap_or("");
    format!("{scheme}://{host}{prefix}")
}

/// The one-liner for a token, or `None` when no agent package is configured.
pub fn command(state: &AppState, headers: &HeaderMap, path: &str, token: &str) -> Option<String> {
    state.install.agent_package.as_ref()?;
    Some(format!("curl -fsSL {}/install.sh | sh -s -- {token}", base_url(headers, path)))
}

fn not_offered() -> Response {
    let body = serde_json::json!({
        "detail": "no agent package is offered: set [install] agent_package in controller.toml to a flotilla-agent .deb",
    });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

async fn script(State(state): State<AppState>, headers: HeaderMap, uri: axum::extract::OriginalUri) -> Response {
    if state.install.agent_package.is_none() {
        return not_offered();
    }
    let path = uri.path();
    let base = base_url(&headers, path.strip_suffix("/install.sh").unwrap_or(path));
    let text = SCRIPT.replace("@BASE@", &base.replace('\'', ""));
    ([(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8")], text).into_response()
}

async fn ca(State(state): State<AppState>) -> Response {
    let der = state.fleet.pki().ca_der().to_vec();
    ([(header::CONTENT_TYPE, "application/pkix-cert")], der).into_response()
}

async fn read_package(state: &AppState) -> Result<Vec<u8>, Response> {
    let Some(path) = state.install.agent_package.clone() else { return Err(not_offered()) };
    tokio::fs::read(&path).await.map_err(|e| {
        tracing::error!(path = %path.display(), error = %e, "cannot read the agent package");
        let body = serde_json::json!({ "detail": format!("the agent package {} cannot be read: {e}", path.display()) });
        (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
    })
}

async fn package(State(state): State<AppState>) -> Response {
    match read_package(&state).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/vnd.debian.binary-package")], bytes).into_response(),
        Err(response) => response,
    }
}

async fn signature(State(state): State<AppState>) -> Response {
    let bytes = match read_package(&state).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let fleet = state.fleet.clone();
    match tokio::task::spawn_blocking(move || fleet.pki().sign(&bytes)).await {
        Ok(Ok(sig)) => ([(header::CONTENT_TYPE, "application/octet-stream")], sig).into_response(),
        Ok(Err(e)) => {
            let body = serde_json::json!({ "detail": format!("cannot sign the agent package: {e}") });
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "detail": e.to_string() }))).into_response()
        }
    }
}

/// The install script. `@BASE@` becomes the controller's base URL.
const SCRIPT: &str = r#"#!/bin/sh
# Flotilla agent install, served by the controller:
#   curl -fsSL @BASE@/install.sh | sh -s -- TOKEN
# Checks that the controller's CA is the one pinned in the join token and that the package is
# signed by it, then installs flotilla-agent, enrolls this host and starts the service.
set -eu
BASE='@BASE@'
TOKEN="${1:-}"
fail() { echo "flotilla install: $*" >&2; exit 1; }
[ -n "$TOKEN" ] || fail "usage: curl -fsSL $BASE/install.sh | sh -s -- TOKEN"
[ "$(id -u)" -eq 0 ] || fail "run as root (… | sudo sh -s -- TOKEN)"
command -v apt-get >/dev/null 2>&1 || fail "this installs a .deb: a Debian or Ubuntu host is needed"
export DEBIAN_FRONTEND=noninteractive
if ! command -v openssl >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The token is flt1_ + base64url(...); its last 64 bytes are the CA fingerprint and the secret.
body=${TOKEN#flt1_}
[ "$body" != "$TOKEN" ] || fail "not a Flotilla join token (it starts with flt1_)"
b64=$(printf '%s' "$body" | tr '_-' '/+')
while [ $(( ${#b64} % 4 )) -ne 0 ]; do b64="$b64="; done
printf '%s' "$b64" | base64 -d > "$WORK/token" 2>/dev/null || fail "the join token is corrupted (copied whole?)"
[ "$(wc -c < "$WORK/token")" -gt 64 ] || fail "the join token is corrupted (copied whole?)"
pinned=$(tail -c 64 "$WORK/token" | head -c 32 | od -An -tx1 | tr -d ' \n')

curl -fsS "$BASE/install/ca.der" -o "$WORK/ca.der" || fail "cannot download the controller CA from $BASE"
served=$(sha256sum "$WORK/ca.der" | cut -d' ' -f1)
[ "$served" = "$pinned" ] || fail "the CA at $BASE is not the one in the token (served $served, token $pinned)"
curl -fsS "$BASE/install/flotilla-agent.deb" -o "$WORK/flotilla-agent.deb" || fail "cannot download the agent package"
curl -fsS "$BASE/install/flotilla-agent.deb.sig" -o "$WORK/flotilla-agent.deb.sig" || fail "cannot download the package signature"
openssl x509 -inform DER -in "$WORK/ca.der" -pubkey -noout > "$WORK/ca.pub" || fail "unreadable CA certificate"
openssl dgst -sha256 -verify "$WORK/ca.pub" -signature "$WORK/flotilla-agent.deb.sig" "$WORK/flotilla-agent.deb" >/dev/null 2>&1 \
    || fail "the agent package is not signed by the controller's CA"

apt-get install -y -qq --no-install-recommends "$WORK/flotilla-agent.deb"
flotilla-agent enroll "$TOKEN"
if [ -d /run/systemd/system ]; then
    systemctl enable --now flotilla-agent
    echo "flotilla-agent installed, enrolled and started"
else
    echo "flotilla-agent installed and enrolled; start it with: flotilla-agent run"
fi
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_follow_the_request_and_any_prefix() {
        let mut h = HeaderMap::new();
        h.insert("host", "203.0.113.7:8080".parse().unwrap());
        assert_eq!(base_url(&h, "/api/v1/nodes"), "http://203.0.113.7:8080");
        assert_eq!(base_url(&h, "/panel/api/v1/nodes"), "http://203.0.113.7:8080/panel");
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "fleet.example.com".parse().unwrap());
        assert_eq!(base_url(&h, "/api/v1/nodes/3/join-token"), "https://fleet.example.com");
    }
}
