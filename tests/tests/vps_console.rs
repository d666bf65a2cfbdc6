//! The web console end to end: `POST /api/server/console` hands out a single-use URL; its page
//! is xterm.js; its WebSocket reaches a shell in a real LXC guest through the agent link. A
//! WebSocket client types commands and reads their output. A stopped server has no console and
//! takes no new password. Needs root, network namespaces, LXC
//! and busybox-static; skipped otherwise.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use flotilla_tests::harness::Fleet;
use flotilla_tests::vps::{self, add_user, busybox_catalog, Cleanup, Order, Vps};
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Opens the console page's WebSocket (`url` is the page).
fn connect(url: &str, cols: u16, rows: u16) -> Result<Socket, tungstenite::Error> {
    let ws = format!("{}/ws?cols={cols}&rows={rows}", url.replacen("http://", "ws://", 1));
    let (socket, _) = tungstenite::connect(ws)?;
    if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        tcp.set_read_timeout(Some(Duration::from_millis(500))).expect("read timeout");
    }
    Ok(socket)
}

/// Reads terminal output until `want` shows up (or `limit` passes); returns everything read.
/// The exit notice (a JSON text frame) is returned as text too. Like a terminal (xterm.js does
/// the same), it answers the shell's cursor position queries: BusyBox's line editor waits for
/// the answer before it reads a command.
fn read_until(socket: &mut Socket, want: &str, limit: Duration) -> String {
    let start = Instant::now();
    let mut seen = String::new();
    while start.elapsed() < limit && !seen.contains(want) {
        match socket.read() {
            Ok(Message::Binary(bytes)) => {
                let text = String::from_utf8_lossy(&bytes);
                for _ in 0..text.matches("\x1b[6n").count() {
                    socket.send(Message::Binary(b"\x1b[1;1R".to_vec().into())).expect("answer the position query");
                }
                seen.push_str(&text);
            }
            Ok(Message::Text(text)) => seen.push_str(text.as_str()),
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => {
                seen.push_str(&format!("\n[socket error: {e}]"));
                break;
            }
        }
    }
    seen
}

fn console_url(user: &Vps, path: &str, body: &Value) -> String {
    let answer = user.expect("POST", path, Some(body), 200);
    assert_eq!(answer["status"], "success", "{answer}");
    answer["url"].as_str().expect("url").to_string()
}

#[test]
fn a_websocket_client_runs_commands_in_the_guest_through_the_console() {
    if let Err(why) = vps::available() {
        eprintln!("SKIPPED a_websocket_client_runs_commands_in_the_guest_through_the_console: {why}");
        return;
    }
    let mut fleet = Fleet::start();
    let agent = fleet.add_container_agent("vps-console", &vps::agent_config(5));
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(20));
    let ns = fleet.agent(agent).host.ns.clone();
    let admin = Vps::login(&fleet.api, "admin", &fleet.api.password.clone());
    add_user(&fleet, "bob", "bob-password-1", None);
    add_user(&fleet, "carol", "carol-password-1", None);
    let bob = Vps::login(&fleet.api, "bob", "bob-password-1");
    let carol = Vps::login(&fleet.api, "carol", "carol-password-1");
    let (os, tariff) = busybox_catalog(&admin);
    let order = Order::place(&bob, os, tariff);
    let _cleanup = Cleanup { ns: ns.clone(), names: vec![order.container.clone()] };
    order.wait_running(&bob, Duration::from_secs(120));
    let id = order.id;
    let vmid = 100 + id;

    // Only the owner gets a console; the body is checked.
    carol.expect("POST", "/api/server/console", Some(&json!({ "vmid": vmid })), 404);
    carol.expect("POST", "/api/proxmox/console", Some(&json!({ "vmid": id })), 404);
    bob.expect("POST", "/api/server/console", Some(&json!({})), 400);
    bob.expect("POST", "/api/server/console", Some(&json!({ "vmid": "x" })), 400);
    let anonymous = fleet.api.request("POST", "/api/server/console", Some(br#"{"vmid":101}"#), None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.raw);

    // The document's call (Proxmox-style vmid) gives a page of this controller with xterm.js.
    let url = console_url(&bob, "/api/server/console", &json!({ "vmid": vmid }));
    assert!(url.starts_with(&fleet.api.base) && url.contains("/vps-console/"), "{url}");
    let page_path = url.trim_start_matches(&fleet.api.base).to_string();
    let page = fleet.api.request("GET", &page_path, None, None);
    assert_eq!(page.status, 200, "{}", page.raw);
    assert!(page.raw.contains("new Terminal(") && page.raw.contains("integrity=\"sha384-"), "{}", page.raw);
    let csp = page.header("content-security-policy").expect("a CSP").to_string();
    assert!(csp.contains("script-src 'nonce-"), "{csp}");
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));

    // A WebSocket client runs commands in the guest: the output is computed there.
    let mut socket = connect(&url, 100, 30).expect("console WebSocket");
    let banner = read_until(&mut socket, "# ", Duration::from_secs(20));
    assert!(banner.contains("# "), "no prompt: {banner:?}");
    socket.send(Message::Binary(b"echo console-$((6*7)) $(hostname)\n".to_vec().into())).expect("send");
    let out = read_until(&mut socket, "console-42", Duration::from_secs(20));
    assert!(out.contains(&format!("console-42 {}", order.container)), "output: {out:?}");
    // The viewer's size reaches the guest's terminal, and follows a resize.
    socket.send(Message::Text(r#"{"type":"resize","cols":123,"rows":45}"#.into())).expect("resize");
    socket.send(Message::Binary(b"stty size\n".to_vec().into())).expect("send");
    let out = read_until(&mut socket, "45 123", Duration::from_secs(10));
    assert!(out.contains("45 123"), "output: {out:?}");
    // The shell's end ends the console, with its exit code.
    socket.send(Message::Binary(b"exit 3\n".to_vec().into())).expect("send");
    let out = read_until(&mut socket, "\"type\":\"exit\"", Duration::from_secs(10));
    assert!(out.contains(r#"{"code":3,"type":"exit"}"#) || out.contains(r#"{"type":"exit","code":3}"#), "{out:?}");
    drop(socket);

    // The URL was single use.
    match connect(&url, 80, 24) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("a used console URL opened again: {:?}", other.map(|_| ())),
    }
    assert_eq!(fleet.api.request("GET", &page_path, None, None).status, 404);

    // The web UI's call (`vmid` = the server's id) and the by-path one; a viewer that leaves
    // ends the shell on the node (no lxc-attach is left behind).
    let url = console_url(&bob, "/api/proxmox/console", &json!({ "vmid": id }));
    let mut socket = connect(&url, 80, 24).expect("console WebSocket");
    assert!(read_until(&mut socket, "# ", Duration::from_secs(20)).contains("# "), "no prompt");
    socket.send(Message::Text("echo by-$((40+2))\n".into())).expect("send text");
    assert!(read_until(&mut socket, "by-42", Duration::from_secs(20)).contains("by-42"));
    socket.close(None).expect("close");
    drop(socket);
    let by_path = bob.expect("GET", &format!("/api/server/{id}/console"), None, 200);
    assert!(by_path["url"].as_str().is_some_and(|u| u.contains("/vps-console/")), "{by_path}");
    let attached = || {
        let out =
            std::process::Command::new("pgrep").args(["-f", &format!("lxc-attach .*-n {}", order.container)]).output();
        out.map(|o| !o.stdout.is_empty()).unwrap_or(false)
    };
    flotilla_tests::harness::wait_for("the console's shell ended", Duration::from_secs(10), || {
        (!attached()).then_some(())
    });

    // A stopped server has no console.
    let stop = bob.expect("POST", &format!("/api/server/{id}/stop"), Some(&json!({})), 200);
    bob.task_ok(stop["taskId"].as_str().expect("taskId"), Duration::from_secs(60));
    flotilla_tests::harness::wait_for("the server stopped", Duration::from_secs(30), || {
        let s = bob.expect("GET", &format!("/api/server/{id}/status"), None, 200);
        (s["status"] == "stopped").then_some(())
    });
    let refused = bob.call("POST", "/api/server/console", Some(&json!({ "vmid": vmid })));
    assert_eq!(refused.status, 409, "{}", refused.raw);
    assert!(refused.body["error"].as_str().is_some_and(|e| e.contains("start it first")), "{}", refused.raw);
    // Nor can its password change (it is set inside the guest).
    let refused = bob.call("POST", &format!("/api/server/{id}/password"), Some(&json!({})));
    assert_eq!(refused.status, 409, "{}", refused.raw);
}
