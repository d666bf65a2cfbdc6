//! The VPS API's Socket.IO feed end to end, with the real `socket.io-client` v4 under Node (as the
//! original web UI connects: WebSocket first) against a real controller and an agent running a
//! real LXC container: stats for the owner, refusals for the anonymous and for other customers,
//! a CPU alert when the guest burns CPU past a lowered threshold, and anonymous sockets admitted
//! once the compatibility switch is on.
//! Needs root, LXC (see tests/tests/vps.rs), and node + npm (socket.io-client is installed once
//! into ~/.cache/flotilla/node); skipped otherwise.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use flotilla_tests::harness::{wait_for, Fleet, BASE_PATH};
use flotilla_tests::socketio::socket_io_client;
use flotilla_tests::vps::{self, add_user, in_guest, Cleanup, Vps};
use serde_json::{json, Value};

/// The test's JS client.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/vps-socket.mjs")
}

/// How a client presents its token.
enum Auth<'a> {
    None,
    /// `auth: {token}` in the CONNECT packet.
    Token(&'a str),
    /// `?token=` in the handshake.
    Query(&'a str),
}

/// One running JS client and the events it printed.
struct Client {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    seen: Vec<Value>,
}

impl Client {
    fn start(name: &'static str, modules: &PathBuf, url: &str, path: &str, auth: Auth, id: i64) -> Client {
        let mut cmd = Command::new("node");
        cmd.arg(script())
            .env("SIO_MODULES", modules)
            .env("URL", url)
            .env("SIO_PATH", path)
            .env("SERVER_ID", id.to_string())
            // The client's own bound: every wait below is shorter.
            .env("LIMIT_S", "150")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        match auth {
            Auth::None => {}
            Auth::Token(t) => {
                cmd.env("TOKEN", t);
            }
            Auth::Query(t) => {
                cmd.env("QUERY_TOKEN", t);
            }
        }
        let mut child = cmd.spawn().expect("node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "event": "text", "data": line }));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Client { name, stdin: child.stdin.take(), child, lines, seen: vec![] }
    }

    /// The data of the next `event` within `limit` (other events are kept in `seen`).
    fn wait(&mut self, event: &str, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            let shown: String = line.to_string().chars().take(300).collect();
            eprintln!("{}: {shown}", self.name);
            self.seen.push(line.clone());
            if line["event"] == event {
                return Some(line["data"].clone());
            }
        }
    }

    /// Whether `event` came so far.
    fn saw(&self, event: &str) -> bool {
        self.seen.iter().any(|l| l["event"] == event)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Closing stdin ends the client; a stuck one is killed.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(user: &Vps) -> String {
    user.bearer().strip_prefix("Bearer ").expect("bearer").to_string()
}

#[test]
fn a_socket_io_client_gets_its_servers_stats_and_alerts() {
    if let Err(why) = vps::available() {
        eprintln!("SKIPPED a_socket_io_client_gets_its_servers_stats_and_alerts: {why}");
        return;
    }
    let modules = match socket_io_client() {
        Ok(dir) => dir,
        Err(why) => {
            eprintln!("SKIPPED a_socket_io_client_gets_its_servers_stats_and_alerts: {why}");
            return;
        }
    };
    let t0 = Instant::now();
    let mut fleet = Fleet::start();
    // CPU alerts from half a core; the switch for anonymous sockets stays off.
    std::fs::write(fleet.controller_config(), "[vps]\nalert_cpu = 0.5\nalert_memory = 90\nalert_disk = 90\n").unwrap();
    fleet.stop_controller();
    fleet.start_controller();
    let agent = fleet.add_container_agent("vps-sio", &vps::agent_config(2));
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(20));
    let ns = fleet.agent(agent).host.ns.clone();
    let admin = Vps::login(&fleet.api, "admin", &fleet.api.password.clone());
    add_user(&fleet, "bob", "bob-password-1", None);
    add_user(&fleet, "carol", "carol-password-1", None);
    let bob = Vps::login(&fleet.api, "bob", "bob-password-1");
    let carol = Vps::login(&fleet.api, "carol", "carol-password-1");

    let (os, tariff) = vps::busybox_catalog(&admin);
    let order = vps::Order::place(&bob, os, tariff);
    let (id, name) = (order.id, order.container.clone());
    let _cleanup = Cleanup { ns: ns.clone(), names: vec![name.clone()] };
    order.wait_running(&bob, Duration::from_secs(120));
    wait_for("the server running", Duration::from_secs(60), || {
        let s = bob.expect("GET", &format!("/api/server/{id}/status"), None, 200);
        (s["status"] == "running" && s["stats"]["data"]["memory"]["used"].as_u64() > Some(0)).then_some(())
    });

    // Bob, connected as the UI connects plus his token: his server's stats, at once and pushed.
    let url = fleet.api.base.clone();
    let bob_token = token(&bob);
    let mut bob_socket = Client::start("bob", &modules, &url, "/socket.io", Auth::Token(&bob_token), id);
    let connected = bob_socket.wait("connect", Duration::from_secs(20)).expect("bob connects");
    assert_eq!(connected["transport"], "websocket", "WebSocket first, without polling: {connected}");
    for which in ["on subscribe", "pushed"] {
        let stats = bob_socket.wait("server-stats", Duration::from_secs(15)).unwrap_or_else(|| panic!("stats {which}"));
        assert!(stats["serverId"].is_i64(), "serverId is a number: {stats}");
        assert_eq!(stats["serverId"], json!(id), "{stats}");
        assert_eq!(stats["stats"]["status"], "success", "{stats}");
        let data = &stats["stats"]["data"];
        let cpu = data["cpu"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&cpu), "cpu is a fraction: {data}");
        assert_eq!(data["memory"]["max"], json!(256u64 << 20), "{data}");
        assert!(data["memory"]["usage"].as_f64().is_some_and(|u| u > 0.0 && u < 100.0), "{data}");
        assert!(data["disk"]["usage"].is_number() && data["network"]["in"].is_u64(), "{data}");
        assert!(data["rrdData"].as_array().is_some_and(|r| r.len() <= 60), "{data}");
    }

    // The token as `?token=`, under the base path the controller also serves.
    let path = format!("{BASE_PATH}/socket.io");
    let mut query_socket = Client::start("query", &modules, &url, &path, Auth::Query(&bob_token), id);
    let stats = query_socket.wait("server-stats", Duration::from_secs(20)).expect("stats with ?token=");
    assert_eq!(stats["serverId"], json!(id), "{stats}");
    drop(query_socket);

    // No token, the switch off: refused with a reason.
    let mut anonymous = Client::start("anonymous", &modules, &url, "/socket.io", Auth::None, id);
    let refused = anonymous.wait("connect_error", Duration::from_secs(20)).expect("anonymous refused");
    assert!(refused["message"].as_str().unwrap_or_default().contains("authentication required"), "{refused}");
    assert!(!anonymous.saw("connect") && !anonymous.saw("server-stats"));
    let mut forged = Client::start("forged", &modules, &url, "/socket.io", Auth::Token("not-a-session"), id);
    let refused = forged.wait("connect_error", Duration::from_secs(20)).expect("a bad token refused");
    assert!(refused["message"].as_str().unwrap_or_default().contains("invalid"), "{refused}");

    // Carol may not watch Bob's server: an error, and no stats while samples keep coming.
    let carol_token = token(&carol);
    let mut carol_socket = Client::start("carol", &modules, &url, "/socket.io", Auth::Token(&carol_token), id);
    let error = carol_socket.wait("error", Duration::from_secs(20)).expect("an error for carol");
    assert!(error["message"].as_str().unwrap_or_default().contains("not found"), "{error}");
    assert!(carol_socket.wait("server-stats", Duration::from_secs(4)).is_none(), "carol got bob's stats");

    // The guest burns CPU past the lowered threshold: Bob gets a CPU alert.
    let burners = in_guest(
        ns.as_deref(),
        &name,
        "for i in 1 2; do (while :; do :; done) >/dev/null 2>&1 </dev/null & echo $!; done",
    )
    .expect("burners");
    let burners = burners.split_whitespace().collect::<Vec<_>>().join(" ");
    let alert = bob_socket.wait("server-alerts", Duration::from_secs(60));
    let _ = in_guest(ns.as_deref(), &name, &format!("kill {burners}"));
    let alert = alert.expect("a CPU alert");
    assert_eq!(alert["serverId"], json!(id), "{alert}");
    let cpu = alert["alerts"].as_array().and_then(|a| a.iter().find(|a| a["type"] == "cpu")).cloned();
    let cpu = cpu.unwrap_or_else(|| panic!("no cpu alert: {alert}"));
    assert!(cpu["message"].as_str().unwrap_or_default().starts_with("CPU usage is at "), "{cpu}");
    assert!(cpu["level"] == "warning" || cpu["level"] == "critical", "{cpu}");
    assert!(carol_socket.wait("server-alerts", Duration::from_millis(500)).is_none(), "carol got bob's alert");
    drop((bob_socket, carol_socket, anonymous, forged));

    // With the compatibility switch on, the original UI's anonymous socket is admitted.
    std::fs::write(fleet.controller_config(), "[vps]\nanonymous_socketio = true\n").unwrap();
    fleet.stop_controller();
    fleet.start_controller();
    let mut anonymous = Client::start("anonymous+switch", &modules, &url, "/socket.io", Auth::None, id);
    let stats = anonymous.wait("server-stats", Duration::from_secs(20)).expect("stats for an anonymous socket");
    assert_eq!(stats["serverId"], json!(id), "{stats}");
    eprintln!("a_socket_io_client_gets_its_servers_stats_and_alerts: {:.1?}", t0.elapsed());
}
