//! The web console of a server: `POST /api/server/console` hands out a short-lived, single-use
//! URL of a terminal page served here (xterm.js). Its WebSocket is relayed over the agent link to
//! a shell under a pty on the node (`CONSOLE_OPEN`), so neither the browser nor the controller
//! needs a route to the guest. Backends with a console of their own (Proxmox) give their URL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla_protocol::codec;
use flotilla_protocol::containers::{ConsoleAccess, ConsoleFrame, ConsoleOpen, ContainerQuery};
use flotilla_protocol::io::{forward_console_frames, write_console_frame};
use flotilla_protocol::rpc::RequestKind;
use flotilla_protocol::NodeId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::servers::{call, call_error, node_of, owned};
use super::{Body, Customer, VpsError};
use crate::api::AppState;
use crate::store::ServerStatus;

/// How long a console URL stays valid before its WebSocket is opened.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// Where the terminal page lives (beside the API; not under `/api`, it is a page).
pub const PAGE_PATH: &str = "/vps-console";
/// xterm.js and its fit add-on, pinned with Subresource Integrity (hashes of the npm files).
const XTERM_JS: (&str, &str) =
    ("@xterm/xterm@5.5.0/lib/xterm.js", "sha384-M169f14mRZOXm3hD/v2Ti0ThIT/RnAQagXA9nlE15yHAtrW19gdePJh/HaTzUOe/");
const XTERM_CSS: (&str, &str) =
    ("@xterm/xterm@5.5.0/css/xterm.css", "sha384-8Xk9wy/gzEDUKrXtrmCFa2bBuK3BpjpDuL/p0SeKQX19Khl/M+lHOgD/CyYf7efP");
const FIT_JS: (&str, &str) = (
    "@xterm/addon-fit@0.10.0/lib/addon-fit.js",
    "sha384-iF+jqbuti4XlB64clWgFWYEscb+UnSRv3VgVikGYZu+otNFnSHr7y7NcKfBnGizn",
);
/// How long the node may take to start the shell.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// A console URL handed out and not used yet.
#[derive(Debug, Clone)]
struct Ticket {
    server: i64,
    node: NodeId,
    container: String,
    username: String,
    expires: Instant,
}

/// The console URLs in flight (memory only: they live a minute).
#[derive(Debug, Default)]
pub struct ConsoleTickets {
    open: Mutex<HashMap<String, Ticket>>,
}

impl ConsoleTickets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ticket>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn issue(&self, ticket: Ticket) -> String {
        let id = hex::encode(rand::random::<[u8; 24]>());
        let mut open = self.lock();
        let now = Instant::now();
        open.retain(|_, t| t.expires > now);
        open.insert(id.clone(), ticket);
        id
    }

    /// The ticket, still valid, without using it (the page itself).
    fn peek(&self, id: &str) -> Option<Ticket> {
        self.lock().get(id).filter(|t| t.expires > Instant::now()).cloned()
    }

    /// The ticket, used up: a URL opens one terminal, once.
    fn take(&self, id: &str) -> Option<Ticket> {
        self.lock().remove(id).filter(|t| t.expires > Instant::now())
    }
}

/// Body of the console calls: `vmid` as the document has it (`proxmoxId`), or the server's id.
#[derive(Debug, Default, Deserialize)]
pub struct ConsoleBody {
    vmid: Option<Value>,
    #[serde(rename = "serverId")]
    server_id: Option<Value>,
    id: Option<Value>,
}

fn number(v: &Value, what: &str) -> Result<i64, VpsError> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .filter(|n| *n > 0)
        .ok_or_else(|| VpsError::bad(format!("{what} must be a positive integer")))
}

/// `POST /api/server/console` `{vmid}` (the document: the Proxmox-style id, 100 + server id) or
/// `{serverId}`.
pub async fn by_vmid(
    user: Customer,
    State(state): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Body(body): Body<ConsoleBody>,
) -> Result<Json<Value>, VpsError> {
    let id = match (&body.server_id, &body.id, &body.vmid) {
        (Some(v), _, _) => number(v, "serverId")?,
        (None, Some(v), _) => number(v, "id")?,
        (None, None, Some(v)) => number(v, "vmid")? - 100,
        (None, None, None) => return Err(VpsError::bad("give vmid (or serverId)")),
    };
    grant(&state, &user, &headers, uri.path(), &id.to_string()).await
}

/// `POST /api/proxmox/console` `{vmid}`: the panel's web UI sends the server's own id there.
pub async fn by_server_id(
    user: Customer,
    State(state): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Body(body): Body<ConsoleBody>,
) -> Result<Json<Value>, VpsError> {
    let id = match body.vmid.as_ref().or(body.server_id.as_ref()).or(body.id.as_ref()) {
        Some(v) => number(v, "vmid")?,
        None => return Err(VpsError::bad("give vmid (the server's id)")),
    };
    grant(&state, &user, &headers, uri.path(), &id.to_string()).await
}

/// `GET /api/server/{id}/console`: the same, for panels that ask by path.
pub async fn by_path(
    user: Customer,
    State(state): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(raw): Path<String>,
) -> Result<Json<Value>, VpsError> {
    grant(&state, &user, &headers, uri.path(), &raw).await
}

/// The console URL of the caller's server `raw`.
async fn grant(
    state: &AppState,
    user: &Customer,
    headers: &HeaderMap,
    path: &str,
    raw: &str,
) -> Result<Json<Value>, VpsError> {
    let server = owned(state, user, raw).await?;
    if server.status != ServerStatus::Running {
        return Err(VpsError::conflict(format!("server {} is {}: start it first", server.id, server.status.as_str())));
    }
    let node = node_of(&server)?;
    let query = ContainerQuery { name: server.container.clone() };
    let access: ConsoleAccess = call(state, node, RequestKind::CONSOLE_ACCESS, &query, OPEN_TIMEOUT).await?;
    let url = match access {
        ConsoleAccess::Url(url) => url,
        ConsoleAccess::Terminal => {
            let ticket = state.vps_consoles.issue(Ticket {
                server: server.id,
                node,
                container: server.container.clone(),
                username: user.username.clone(),
                expires: Instant::now() + TICKET_TTL,
            });
            format!("{}{PAGE_PATH}/{ticket}", crate::api::install::base_url(headers, path))
        }
    };
    tracing::info!(server = server.id, user = %user.username, "console URL issued");
    Ok(Json(json!({ "status": "success", "url": url, "expiresIn": TICKET_TTL.as_secs() })))
}

fn no_ticket() -> VpsError {
    VpsError::not_found("this console link is unknown, used or expired: ask for a new one")
}

/// `GET /vps-console/{ticket}`: the terminal page.
pub async fn page(State(state): State<AppState>, Path(ticket): Path<String>) -> Result<Response, VpsError> {
    let t = state.vps_consoles.peek(&ticket).ok_or_else(no_ticket)?;
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let cdn = state.vps.console_assets.as_deref().unwrap_or(super::DEFAULT_CONSOLE_ASSETS).trim_end_matches('/');
    let html = PAGE
        .replace("{title}", &format!("Server {} console", t.server))
        .replace("{css}", &format!("{cdn}/{}", XTERM_CSS.0))
        .replace("{css_sri}", XTERM_CSS.1)
        .replace("{js}", &format!("{cdn}/{}", XTERM_JS.0))
        .replace("{js_sri}", XTERM_JS.1)
        .replace("{fit}", &format!("{cdn}/{}", FIT_JS.0))
        .replace("{fit_sri}", FIT_JS.1)
        .replace("{nonce}", &nonce);
    let origin = cdn.split('/').take(3).collect::<Vec<_>>().join("/");
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}' {origin}; style-src 'unsafe-inline' {origin}; \
         connect-src 'self'; font-src {origin}; base-uri 'none'; form-action 'none'"
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            // The ticket is in the URL: keep it from the CDN's logs.
            (header::REFERRER_POLICY, "no-referrer".to_string()),
            (header::CONTENT_SECURITY_POLICY, csp),
        ],
        html,
    )
        .into_response())
}

/// The terminal's size at open.
#[derive(Debug, Deserialize)]
pub struct Size {
    cols: Option<u16>,
    rows: Option<u16>,
}

/// `GET /vps-console/{ticket}/ws`: uses the ticket, starts the shell on the node, relays.
pub async fn socket(
    State(state): State<AppState>,
    Path(ticket): Path<String>,
    Query(size): Query<Size>,
    ws: WebSocketUpgrade,
) -> Result<Response, VpsError> {
    let t = state.vps_consoles.take(&ticket).ok_or_else(no_ticket)?;
    let open = ConsoleOpen {
        name: t.container.clone(),
        cols: size.cols.unwrap_or(80).clamp(1, 1000),
        rows: size.rows.unwrap_or(24).clamp(1, 1000),
    };
    let body = codec::encode_body(&open).map_err(|e| VpsError::internal(e.to_string()))?;
    let (send, recv) =
        state.fleet.open_stream(t.node, RequestKind::CONSOLE_OPEN, body, OPEN_TIMEOUT).await.map_err(call_error)?;
    tracing::info!(server = t.server, user = %t.username, "console opened");
    Ok(ws.on_upgrade(move |socket| relay(socket, send, recv, t)))
}

/// Viewer frames: binary (and plain text) are keystrokes; a JSON text frame
/// `{"type":"resize","cols":…,"rows":…}` resizes.
fn viewer_frame(msg: Message) -> Option<ConsoleFrame> {
    match msg {
        Message::Binary(bytes) => Some(ConsoleFrame::Data(bytes.to_vec())),
        Message::Text(text) => {
            #[derive(Deserialize)]
            struct Control {
                #[serde(rename = "type")]
                kind: String,
                cols: u16,
                rows: u16,
            }
            match serde_json::from_str::<Control>(text.as_str()) {
                Ok(c) if c.kind == "resize" => Some(ConsoleFrame::Resize { cols: c.cols.max(1), rows: c.rows.max(1) }),
                _ => Some(ConsoleFrame::Data(text.as_str().as_bytes().to_vec())),
            }
        }
        Message::Ping(_) | Message::Pong(_) => None,
        Message::Close(_) => Some(ConsoleFrame::Exit(None)),
    }
}

async fn relay(mut socket: WebSocket, mut send: quinn::SendStream, recv: quinn::RecvStream, t: Ticket) {
    // The node's frames are read in a task: a half-read frame must not be lost to `select!`.
    let (tx, mut from_node) = tokio::sync::mpsc::channel::<ConsoleFrame>(64);
    let reader = tokio::spawn(forward_console_frames(recv, tx));
    loop {
        tokio::select! {
            frame = from_node.recv() => match frame {
                Some(ConsoleFrame::Data(bytes)) => {
                    if socket.send(Message::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
                Some(ConsoleFrame::Exit(code)) => {
                    let _ = socket.send(Message::Text(json!({ "type": "exit", "code": code }).to_string().into())).await;
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
                Some(ConsoleFrame::Resize { .. }) => {}
                None => {
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
            },
            msg = socket.recv() => match msg.and_then(Result::ok).map(viewer_frame) {
                Some(Some(ConsoleFrame::Exit(_))) | None => break,
                Some(Some(frame)) => {
                    if write_console_frame(&mut send, &frame).await.is_err() {
                        break;
                    }
                }
                Some(None) => {}
            },
        }
    }
    reader.abort();
    // Finishing our half tells the agent the viewer left: it ends the shell.
    let _ = send.finish();
    tracing::info!(server = t.server, user = %t.username, "console closed");
}

/// The terminal page: xterm.js on the page's own WebSocket.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="{css}" integrity="{css_sri}" crossorigin="anonymous">
<style>html,body{margin:0;height:100%;background:#000}#term{height:100%}</style>
</head><body><div id="term"></div>
<script src="{js}" integrity="{js_sri}" crossorigin="anonymous"></script>
<script src="{fit}" integrity="{fit_sri}" crossorigin="anonymous"></script>
<script nonce="{nonce}">
const term = new Terminal({ cursorBlink: true, convertEol: false });
const fit = new FitAddon.FitAddon();
term.loadAddon(fit);
term.open(document.getElementById('term'));
fit.fit();
const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
const ws = new WebSocket(scheme + '//' + location.host + location.pathname + '/ws?cols=' + term.cols + '&rows=' + term.rows);
ws.binaryType = 'arraybuffer';
const encoder = new TextEncoder();
ws.onmessage = (e) => {
  if (typeof e.data === 'string') {
    const m = JSON.parse(e.data);
    if (m.type === 'exit') term.write('\r\n[the shell ended]\r\n');
  } else {
    term.write(new Uint8Array(e.data));
  }
};
ws.onclose = () => term.write('\r\n[disconnected]\r\n');
term.onData((d) => { if (ws.readyState === 1) ws.send(encoder.encode(d)); });
term.onResize(({ cols, rows }) => { if (ws.readyState === 1) ws.send(JSON.stringify({ type: 'resize', cols, rows })); });
window.addEventListener('resize', () => fit.fit());
term.focus();
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(expires: Instant) -> Ticket {
        Ticket { server: 1, node: NodeId(1), container: "vps-1-aaaaaa".into(), username: "bob".into(), expires }
    }

    #[test]
    fn a_ticket_opens_one_console_before_it_expires() {
        let tickets = ConsoleTickets::default();
        let id = tickets.issue(ticket(Instant::now() + TICKET_TTL));
        assert_eq!(id.len(), 48, "192 random bits");
        assert!(tickets.peek(&id).is_some(), "the page may be loaded");
        assert!(tickets.peek(&id).is_some(), "and reloaded");
        assert_eq!(tickets.take(&id).map(|t| t.server), Some(1));
        assert!(tickets.take(&id).is_none() && tickets.peek(&id).is_none(), "used once");
        let stale = tickets.issue(ticket(Instant::now()));
        assert!(tickets.peek(&stale).is_none() && tickets.take(&stale).is_none(), "expired");
        tickets.issue(ticket(Instant::now() + TICKET_TTL));
        assert_eq!(tickets.lock().len(), 1, "expired tickets are dropped as new ones are issued");
    }

    #[test]
    fn viewer_frames_are_keystrokes_unless_they_are_a_resize() {
        assert_eq!(
            viewer_frame(Message::Text(r#"{"type":"resize","cols":100,"rows":0}"#.into())),
            Some(ConsoleFrame::Resize { cols: 100, rows: 1 })
        );
        assert_eq!(viewer_frame(Message::Text("ls\r".into())), Some(ConsoleFrame::Data(b"ls\r".to_vec())));
        assert_eq!(
            viewer_frame(Message::Text(r#"{"type":"x"}"#.into())),
            Some(ConsoleFrame::Data(br#"{"type":"x"}"#.to_vec()))
        );
        assert_eq!(viewer_frame(Message::Binary(vec![3].into())), Some(ConsoleFrame::Data(vec![3])));
        assert_eq!(viewer_frame(Message::Close(None)), Some(ConsoleFrame::Exit(None)));
    }
}
