//! Webhooks of the external API against a real controller: deliveries to local HTTP receivers
//! (retries after two 500s, the HMAC signature checked from the secret returned at create),
//! real fleet events (`node.online`/`node.offline` of a real agent), logs and 24-hour stats,
//! a delivery pending when the controller is SIGKILLed delivered once after the restart,
//! Telegram/Slack/Discord request shapes, and bad input.
//!
//! Telegram, Slack and Discord cannot be reached from here: local receivers stand in for them
//! (the Telegram base URL is `[webhooks] telegram_api` of `controller.toml`; Slack and Discord
//! URLs are the webhooks' own), and the test checks the paths and bodies their APIs expect.
//!
//! The fleet runs on loopback so that the controller reaches the receivers at 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_tests::harness::{basic_header, bin_dir, free_port, wait_for, Fleet, FleetOptions};
use flotilla_tests::panelica::{create_key, External};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// A request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("receiver body is not JSON ({e}): {}", self.body))
    }
}

/// A local HTTP receiver on 127.0.0.1: answers the scripted statuses in order, then 200; one
/// request per connection. Stopped on drop.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(script: &[u16]) -> Receiver {
        Receiver::start_on(free_port(), script)
    }

    fn start_on(port: u16, script: &[u16]) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("receiver port");
        listener.set_nonblocking(true).expect("nonblocking");
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut script: std::collections::VecDeque<u16> = script.iter().copied().collect();
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).ok();
                stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let Some(req) = read_request(&stream) else { continue };
                let status = script.pop_front().unwrap_or(200);
                g.lock().unwrap().push(req);
                let body = if status == 200 { r#"{"ok":true}"# } else { r#"{"ok":false}"# };
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Receiver { port, got, stop, thread: Some(thread) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived; returns them.
    #[track_caller]
    fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        wait_for(&format!("{n} requests at the receiver"), timeout, || {
            let got = self.got();
            (got.len() >= n).then_some(got)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(stream: &std::net::TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = vec![];
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Received { method, path, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// hex(HMAC-SHA256(secret, timestamp + "." + body)), from the documented formula.
fn expected_signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn loopback_fleet() -> Fleet {
    Fleet::start_with(FleetOptions { loopback: true, ..Default::default() })
}

/// An administrator's key with every scope, without a rate limit (the tests poll).
fn admin(fleet: &Fleet) -> External {
    External::new(&fleet.api, create_key(fleet, "webhooks-admin", "*:*", &["--tier", "enterprise"]))
}

fn create_http(ext: &External, name: &str, url: &str, events: &[&str], extra: Value) -> Value {
    let mut body = json!({
        "name": name,
        "destination_type": "http",
        "destination_config": { "url": url, "method": "POST" },
        "events": events,
        "retry_count": 3,
        "retry_delay_seconds": 1,
        "timeout_seconds": 5,
    });
    if let Some(obj) = extra.as_object() {
        for (k, v) in obj {
            body[k] = v.clone();
        }
    }
    ext.expect("POST", "/v1/webhooks", Some(&body.to_string()), 201)
}

fn logs(ext: &External, id: &str, query: &str) -> Value {
    let reply = ext.call("GET", &format!("/v1/webhooks/{id}/logs{query}"), None);
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.body["status"], "success", "{}", reply.raw);
    reply.body
}

#[test]
fn http_deliveries_retry_are_signed_and_logged() {
    let mut fleet = loopback_fleet();
    let ext = admin(&fleet);
    let receiver = Receiver::start(&[500, 500]);
    let hook = create_http(&ext, "ops", &receiver.url("/hooks/flotilla"), &["node.online", "node.offline"], json!({}));
    let id = hook["id"].as_str().unwrap().to_string();
    let secret = hook["secret"].as_str().expect("secret returned on create").to_string();
    assert!(secret.starts_with("whsec_"), "{hook}");
    assert_eq!(hook["retry_delay_seconds"], 1);
    assert_eq!(hook["is_active"], true);
    // The secret is shown once.
    let listed = ext.expect("GET", "/v1/webhooks", None, 200);
    let one = listed.as_array().unwrap().iter().find(|w| w["id"] == id.as_str()).expect("listed").clone();
    assert!(one.get("secret").is_none(), "{one}");
    assert!(ext.expect("GET", &format!("/v1/webhooks/{id}"), None, 200).get("secret").is_none());

    // A test event: 500, 500, then 200 — three attempts of the same event, 1 s then 2 s apart.
    let started = Instant::now();
    let queued = ext.expect("POST", &format!("/v1/webhooks/{id}/test"), Some("{}"), 200);
    let delivery = queued["delivery_id"].as_str().expect("delivery_id").to_string();
    let got = receiver.wait_for(3, Duration::from_secs(20));
    eprintln!("3 attempts received in {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(3), "retries wait 1 s then 2 s");
    let event_id = got[0].json()["id"].as_str().unwrap().to_string();
    assert!(event_id.starts_with("evt_"), "{}", got[0].body);
    assert_eq!(event_id, queued["event_id"].as_str().unwrap());
    for r in &got {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hooks/flotilla"));
        let body = r.json();
        assert_eq!(body["id"], event_id.as_str(), "same event on every attempt");
        assert_eq!(body["type"], "webhook.test");
        assert_eq!(body["data"]["webhook_id"], id.as_str());
        assert!(body["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
        assert_eq!(r.header("X-Flotilla-Event"), Some("webhook.test"));
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let ts = r.header("X-Flotilla-Timestamp").expect("timestamp");
        let now = flotilla_tests::panelica::now();
        assert!((ts.parse::<i64>().unwrap() - now).abs() < 60, "timestamp {ts}");
        assert_eq!(r.header("X-Flotilla-Signature"), Some(expected_signature(&secret, ts, &r.body).as_str()));
    }
    let log = wait_for("the test delivery logged as a success", Duration::from_secs(10), || {
        let l = logs(&ext, &id, "");
        (l["data"][0]["status"] == "success").then_some(l)
    });
    let entry = &log["data"][0];
    assert_eq!(entry["id"], delivery.as_str());
    assert_eq!(entry["event_id"], event_id.as_str());
    assert_eq!(
        (entry["status_code"].as_u64(), entry["attempts"].as_u64(), entry["retry_count"].as_u64()),
        (Some(200), Some(3), Some(2))
    );
    assert!(entry["response_time_ms"].is_u64(), "{entry}");

    // Real fleet events: an agent connects (node.online), then stops (node.offline).
    let agent = fleet.add_agent("wh-1");
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(20));
    let online = wait_for("node.online delivered", Duration::from_secs(15), || {
        receiver.got().into_iter().map(|r| r.json()).find(|b| b["type"] == "node.online")
    });
    assert_eq!(online["data"]["node_id"], node);
    assert_eq!(online["data"]["node_name"], "wh-1");
    fleet.stop_agent(agent, false);
    let offline = wait_for("node.offline delivered", Duration::from_secs(20), || {
        receiver.got().into_iter().map(|r| r.json()).find(|b| b["type"] == "node.offline")
    });
    assert_eq!(offline["data"]["node_id"], node);
    assert!(offline["data"]["reason"].is_string(), "{offline}");
    for r in receiver.got() {
        let ts = r.header("X-Flotilla-Timestamp").unwrap();
        assert_eq!(r.header("X-Flotilla-Signature"), Some(expected_signature(&secret, ts, &r.body).as_str()));
    }

    // Logs, paged as documented, and the 24 h stats from these deliveries.
    // One log entry per event the receiver saw (a reconnecting agent may add a node.online).
    let events: std::collections::BTreeSet<String> =
        receiver.got().iter().map(|r| r.json()["id"].as_str().unwrap().to_string()).collect();
    let n = events.len() as u64;
    assert!(n >= 3, "{events:?}");
    let all = wait_for("every delivery finished", Duration::from_secs(10), || {
        let l = logs(&ext, &id, "?page=1&limit=20");
        (l["total"] == n && l["data"].as_array()?.iter().all(|d| d["status"] == "success")).then_some(l)
    });
    assert_eq!((all["page"].as_u64(), all["limit"].as_u64()), (Some(1), Some(20)));
    let types: Vec<&str> = all["data"].as_array().unwrap().iter().map(|d| d["event_type"].as_str().unwrap()).collect();
    assert_eq!((types[0], types[types.len() - 1]), ("node.offline", "webhook.test"), "newest first: {types:?}");
    assert!(types.contains(&"node.online"), "{types:?}");
    let page2 = logs(&ext, &id, "?page=2&limit=1");
    assert_eq!((page2["total"].as_u64(), page2["data"].as_array().unwrap().len()), (Some(n), 1));
    assert_eq!(page2["data"][0]["event_type"], types[1]);
    let stats = ext.expect("GET", "/v1/webhooks/stats", None, 200);
    assert_eq!(stats["total_webhooks"], 1, "{stats}");
    assert_eq!(stats["active_webhooks"], 1, "{stats}");
    assert_eq!(stats["total_deliveries_24h"], n, "{stats}");
    assert_eq!(stats["successful_deliveries_24h"], n, "{stats}");
    assert_eq!(stats["failed_deliveries_24h"], 0, "{stats}");
    assert_eq!(stats["success_rate_24h"], 100.0, "{stats}");
    assert!(stats["avg_response_time_ms"].is_u64(), "{stats}");

    // Disabled: the stats count it as inactive, and no test is queued.
    ext.expect("POST", &format!("/v1/webhooks/{id}/disable"), None, 200);
    assert_eq!(ext.expect("GET", "/v1/webhooks/stats", None, 200)["active_webhooks"], 0);
    let refused = ext.call("POST", &format!("/v1/webhooks/{id}/test"), Some("{}"));
    assert_eq!((refused.status, refused.body["code"].as_str()), (409, Some("WEBHOOK_DISABLED")), "{}", refused.raw);
    let enabled = ext.expect("POST", &format!("/v1/webhooks/{id}/enable"), None, 200);
    assert_eq!(enabled["is_active"], true);

    // A delivery that never succeeds is failed after retry_count retries.
    let dead = Receiver::start(&[500; 10]);
    let failing = create_http(&ext, "dead", &dead.url("/x"), &["node.offline"], json!({ "retry_count": 1 }));
    let fid = failing["id"].as_str().unwrap();
    ext.expect("POST", &format!("/v1/webhooks/{fid}/test"), Some("{}"), 200);
    let failed = wait_for("the failing delivery given up", Duration::from_secs(15), || {
        let l = logs(&ext, fid, "");
        (l["data"][0]["status"] == "failed").then_some(l)
    });
    assert_eq!(failed["data"][0]["attempts"], 2, "{failed}");
    assert_eq!(failed["data"][0]["status_code"], 500, "{failed}");
    assert!(failed["data"][0]["error"].as_str().unwrap().contains("HTTP 500"), "{failed}");
    assert_eq!(dead.got().len(), 2);
    let stats = ext.expect("GET", "/v1/webhooks/stats", None, 200);
    assert_eq!(
        (stats["failed_deliveries_24h"].as_u64(), stats["successful_deliveries_24h"].as_u64()),
        (Some(1), Some(n))
    );
    let rate = (n as f64 * 1000.0 / (n + 1) as f64).round() / 10.0;
    assert_eq!(stats["success_rate_24h"].as_f64(), Some(rate), "{stats}");

    // Deleting answers JSON, and the webhook is gone.
    let deleted = ext.expect("DELETE", &format!("/v1/webhooks/{fid}"), None, 200);
    assert_eq!(deleted["deleted"], true);
    ext.expect("GET", &format!("/v1/webhooks/{fid}"), None, 404);
}

#[test]
fn a_delivery_pending_at_a_controller_kill_is_delivered_once_after_restart() {
    let mut fleet = loopback_fleet();
    let ext = admin(&fleet);
    // The receiver is down: its port is chosen, nothing listens yet.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/down");
    let hook = create_http(&ext, "later", &url, &["node.offline"], json!({ "retry_count": 10 }));
    let id = hook["id"].as_str().unwrap().to_string();
    let queued = ext.expect("POST", &format!("/v1/webhooks/{id}/test"), Some("{}"), 200);
    let event_id = queued["event_id"].as_str().unwrap().to_string();
    let pending = wait_for("a failed attempt, still pending", Duration::from_secs(10), || {
        let l = logs(&ext, &id, "");
        let d = l["data"][0].clone();
        (d["status"] == "pending" && d["attempts"].as_u64() >= Some(1)).then_some(d)
    });
    assert!(pending["error"].as_str().is_some_and(|e| !e.is_empty()), "{pending}");
    assert!(pending["next_attempt_at"].is_string(), "{pending}");
    fleet.kill_controller();

    let receiver = Receiver::start_on(port, &[]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(receiver.got().is_empty(), "nothing delivers while the controller is down");
    fleet.start_controller();
    let got = receiver.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0].json()["id"], event_id.as_str());
    // Nothing more arrives: delivered exactly once.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(receiver.got().len(), 1, "{:?}", receiver.got());
    let l = logs(&ext, &id, "");
    assert_eq!(l["total"], 1);
    assert_eq!(l["data"][0]["status"], "success", "{l}");
    assert!(l["data"][0]["attempts"].as_u64() >= Some(2), "{l}");
}

/// Runs `flotilla-controller user …` against the running controller's data dir.
fn user_command(fleet: &Fleet, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin_dir().join("flotilla-controller"))
        .arg("--data-dir")
        .arg(fleet.controller_data_dir())
        .arg("user")
        .args(args)
        .env("FLOTILLA_PASSWORD", "correct horse battery")
        .output()
        .expect("flotilla-controller user")
}

#[test]
fn users_added_and_deleted_by_the_cli_reach_the_running_controllers_webhooks() {
    let fleet = loopback_fleet();
    let ext = admin(&fleet);
    let receiver = Receiver::start(&[]);
    create_http(&ext, "users", &receiver.url("/users"), &["user.created", "user.deleted"], json!({}));
    // Another process (the CLI) writes the user and its event into the store's outbox; the
    // running controller's worker delivers it.
    let out = user_command(&fleet, &["add", "carol", "--role", "viewer"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = receiver.wait_for(1, Duration::from_secs(20));
    let created = got[0].json();
    assert_eq!(created["type"], "user.created", "{created}");
    assert_eq!(created["data"]["username"], "carol");
    assert_eq!(created["data"]["role"], "viewer");
    assert!(created["id"].as_str().is_some_and(|id| id.starts_with("evt_")), "{created}");

    let listed = user_command(&fleet, &["list", "--json"]);
    let users: Value = serde_json::from_slice(&listed.stdout).expect("user list --json");
    let row = users.as_array().unwrap().iter().find(|u| u["username"] == "carol").cloned().expect("carol listed");
    assert_eq!((&row["id"], &row["role"]), (&created["data"]["user_id"], &json!("viewer")), "{row}");
    assert!(row.get("password_hash").is_none(), "{row}");
    let carol = basic_header("carol", "correct horse battery");
    assert_eq!(fleet.api.request("GET", "/api/v1/nodes", None, Some(&carol)).status, 200);
    let out = user_command(&fleet, &["delete", "carol"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = receiver.wait_for(2, Duration::from_secs(20));
    let deleted = got[1].json();
    assert_eq!(deleted["type"], "user.deleted", "{deleted}");
    assert_eq!(deleted["data"]["user_id"], created["data"]["user_id"]);
    let listed = user_command(&fleet, &["list"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("carol"), "deleted users are not listed");
    // A deleted user is gone: Basic auth of the multi-server API refuses them.
    assert_eq!(fleet.api.request("GET", "/api/v1/nodes", None, Some(&carol)).status, 401);
    let again = user_command(&fleet, &["delete", "carol"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("carol"), "{again:?}");
    // The last administrator stays.
    let last = user_command(&fleet, &["delete", &fleet.api.user]);
    assert!(!last.status.success());
    assert!(String::from_utf8_lossy(&last.stderr).contains("last administrator"), "{last:?}");
}

#[test]
fn telegram_slack_and_discord_get_their_api_requests() {
    let mut fleet = loopback_fleet();
    // Stand-ins for api.telegram.org, hooks.slack.com and discord.com (not reachable here).
    let receiver = Receiver::start(&[]);
    std::fs::write(fleet.controller_config(), format!("[webhooks]\ntelegram_api = \"{}\"\n", receiver.url("/tg")))
        .unwrap();
    fleet.stop_controller();
    fleet.start_controller();
    let ext = admin(&fleet);
    let mk = |body: Value| ext.expect("POST", "/v1/webhooks", Some(&body.to_string()), 201);
    let tg = mk(json!({
        "name": "Telegram Alerts",
        "destination_type": "telegram",
        "destination_config": { "bot_token": "123456:ABC-DEF_ghi", "chat_id": "-1001234567890", "parse_mode": "HTML" },
        "events": ["security.ip_blocked", "backup.failed"],
    }));
    assert_eq!(tg["destination_config"]["bot_token"], "123456:****", "the token is not shown: {tg}");
    assert_eq!(
        (tg["retry_count"].as_u64(), tg["retry_delay_seconds"].as_u64(), tg["timeout_seconds"].as_u64()),
        (Some(3), Some(60), Some(30))
    );
    let slack = mk(json!({
        "name": "Slack Notifications",
        "destination_type": "slack",
        "destination_config": { "webhook_url": receiver.url("/slack/services/T1/B2/xyz"), "channel": "#server-alerts" },
        "events": ["system.service_failed", "system.disk_warning"],
    }));
    assert_eq!(slack["destination_config"]["webhook_url"], "http://127.0.0.1/****", "{slack}");
    let discord = mk(json!({
        "name": "Discord Alerts",
        "destination_type": "discord",
        "destination_config": { "webhook_url": receiver.url("/discord/api/webhooks/123/abc"), "username": "Flotilla Bot" },
        "events": ["domain.created", "ssl.expiring_soon"],
    }));
    for hook in [&tg, &slack, &discord] {
        ext.expect("POST", &format!("/v1/webhooks/{}/test", hook["id"].as_str().unwrap()), Some("{}"), 200);
    }
    let got = receiver.wait_for(3, Duration::from_secs(15));
    let by_path =
        |prefix: &str| got.iter().find(|r| r.path.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}: {got:?}"));
    let t = by_path("/tg/");
    assert_eq!((t.method.as_str(), t.path.as_str()), ("POST", "/tg/bot123456:ABC-DEF_ghi/sendMessage"));
    let body = t.json();
    assert_eq!(body["chat_id"], "-1001234567890");
    assert_eq!(body["parse_mode"], "HTML");
    assert!(body["text"].as_str().unwrap().starts_with("<b>Test event</b>"), "{body}");
    assert!(t.header("X-Flotilla-Signature").is_none(), "only http destinations are signed");
    let s = by_path("/slack/");
    assert_eq!(s.path, "/slack/services/T1/B2/xyz");
    let body = s.json();
    assert_eq!(body["channel"], "#server-alerts");
    assert!(body["text"].as_str().unwrap().contains("*Test event*"), "{body}");
    let d = by_path("/discord/");
    assert_eq!(d.path, "/discord/api/webhooks/123/abc");
    let body = d.json();
    assert_eq!(body["username"], "Flotilla Bot");
    assert!(body["content"].as_str().unwrap().starts_with("**Test event**"), "{body}");

    // A PATCH that sends the masked config back keeps the token; a new chat id is merged in.
    let tid = tg["id"].as_str().unwrap();
    let patched = ext.expect(
        "PATCH",
        &format!("/v1/webhooks/{tid}"),
        Some(
            &json!({ "destination_config": { "bot_token": "123456:****", "chat_id": "42" }, "name": "TG" }).to_string(),
        ),
        200,
    );
    assert_eq!((patched["name"].as_str(), patched["destination_config"]["chat_id"].as_str()), (Some("TG"), Some("42")));
    // A new second: the same signed POST within one would be refused as a replay.
    std::thread::sleep(Duration::from_millis(1100));
    ext.expect("POST", &format!("/v1/webhooks/{tid}/test"), Some("{}"), 200);
    let got = receiver.wait_for(4, Duration::from_secs(15));
    let last = got.iter().filter(|r| r.path.starts_with("/tg/")).nth(1).expect("second telegram message");
    assert_eq!(last.path, "/tg/bot123456:ABC-DEF_ghi/sendMessage");
    assert_eq!(last.json()["chat_id"], "42");

    // The catalogue, by category as the document has it.
    let events = ext.expect("GET", "/v1/webhooks/events", None, 200);
    let cats = events["categories"].as_array().unwrap();
    assert_eq!(cats[0]["name"], "User Events");
    assert_eq!(cats[0]["events"][0]["type"], "user.created");
    let all: Vec<&str> =
        cats.iter().flat_map(|c| c["events"].as_array().unwrap()).map(|e| e["type"].as_str().unwrap()).collect();
    for t in ["domain.deleted", "security.ip_blocked", "backup.failed", "system.service_failed", "system.disk_warning"]
    {
        assert!(all.contains(&t), "{t} in {all:?}");
    }
    for t in ["ssl.expiring_soon", "node.online", "node.offline", "vps.alert"] {
        assert!(all.contains(&t), "{t} in {all:?}");
    }
}

#[test]
fn bad_input_and_other_users_webhooks_are_refused() {
    let fleet = loopback_fleet();
    let ext = admin(&fleet);
    let hook = create_http(&ext, "mine", "http://127.0.0.1:9/x", &["node.offline"], json!({}));
    let id = hook["id"].as_str().unwrap();
    let bad = |method: &str, path: &str, body: &str, what: &str| {
        let r = ext.call(method, path, Some(body));
        assert_eq!(r.status, 400, "{what}: {}", r.raw);
        assert_eq!(
            (r.body["status"].as_str(), r.body["code"].as_str()),
            (Some("error"), Some("VALIDATION_ERROR")),
            "{what}: {}",
            r.raw
        );
        let text = r.body["error"].as_str().unwrap().to_string();
        eprintln!("{what}: {text}");
        text
    };
    let base = json!({
        "name": "x",
        "destination_type": "http",
        "destination_config": { "url": "https://example.com/hook" },
        "events": ["node.offline"],
    });
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b.to_string()
    };
    bad("POST", "/v1/webhooks", "{not json", "bad JSON");
    bad("POST", "/v1/webhooks", "", "no body");
    assert!(bad("POST", "/v1/webhooks", &with("name", json!("")), "empty name").starts_with("name"));
    assert!(
        bad("POST", "/v1/webhooks", &with("destination_type", json!("pigeon")), "type").starts_with("destination_type")
    );
    assert!(bad("POST", "/v1/webhooks", &with("destination_config", json!({ "url": "ftp://example.com/x" })), "ftp")
        .contains("http:// or https://"));
    assert!(bad("POST", "/v1/webhooks", &with("destination_config", json!({ "url": "file:///etc/passwd" })), "file")
        .contains("http:// or https://"));
    assert!(bad(
        "POST",
        "/v1/webhooks",
        &with("destination_config", json!({ "url": "https://x", "method": "GET" })),
        "GET"
    )
    .contains("method"));
    assert!(bad("POST", "/v1/webhooks", &with("events", json!(["node.exploded"])), "event").contains("node.exploded"));
    assert!(bad("POST", "/v1/webhooks", &with("events", json!([])), "no events").starts_with("events"));
    assert!(bad("POST", "/v1/webhooks", &with("retry_count", json!(11)), "retries").starts_with("retry_count"));
    assert!(bad("POST", "/v1/webhooks", &with("timeout_seconds", json!(121)), "timeout").starts_with("timeout_seconds"));
    assert!(
        bad("POST", "/v1/webhooks", &with("retry_delay_seconds", json!(0)), "delay").starts_with("retry_delay_seconds")
    );
    let tg = json!({ "name": "t", "destination_type": "telegram", "destination_config": { "bot_token": "1:a" }, "events": ["node.offline"] });
    assert!(bad("POST", "/v1/webhooks", &tg.to_string(), "chat_id").contains("chat_id"));
    bad("PATCH", &format!("/v1/webhooks/{id}"), r#"{"timeout_seconds": 0}"#, "patch timeout");
    bad("PATCH", &format!("/v1/webhooks/{id}"), r#"{"destination_type": "slack"}"#, "type without config");
    let r = ext.call("GET", &format!("/v1/webhooks/{id}/logs?page=0"), None);
    assert_eq!((r.status, r.body["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{}", r.raw);
    let r = ext.call("GET", "/v1/webhooks/00000000-0000-0000-0000-000000000000", None);
    assert_eq!((r.status, r.body["code"].as_str()), (404, Some("NOT_FOUND")), "{}", r.raw);

    // Scopes: a read-only key reads but does not write.
    let reader = External::new(&fleet.api, create_key(&fleet, "reader", "webhooks:read", &["--tier", "enterprise"]));
    reader.expect("GET", "/v1/webhooks", None, 200);
    let r = reader.call("POST", &format!("/v1/webhooks/{id}/test"), Some("{}"));
    assert_eq!((r.status, r.body["code"].as_str()), (403, Some("INSUFFICIENT_SCOPE")), "{}", r.raw);

    // Another user's key sees only its own webhooks: the admin's are 404.
    let out = std::process::Command::new(bin_dir().join("flotilla-controller"))
        .arg("--data-dir")
        .arg(fleet.controller_data_dir())
        .args(["user", "add", "bob", "--role", "viewer"])
        .env("FLOTILLA_PASSWORD", "bob-password-123")
        .output()
        .unwrap();
    assert!(out.status.success(), "user add: {}", String::from_utf8_lossy(&out.stderr));
    let bob = External::new(
        &fleet.api,
        create_key(&fleet, "bob", "webhooks:read,webhooks:write", &["--tier", "enterprise", "--user", "bob"]),
    );
    assert_eq!(bob.expect("GET", "/v1/webhooks", None, 200), json!([]));
    bob.expect("GET", &format!("/v1/webhooks/{id}"), None, 404);
    bob.expect("DELETE", &format!("/v1/webhooks/{id}"), None, 404);
    let own = bob.expect("POST", "/v1/webhooks", Some(&base.to_string()), 201);
    assert_eq!(bob.expect("GET", "/v1/webhooks", None, 200).as_array().unwrap().len(), 1);
    assert_eq!(bob.expect("GET", "/v1/webhooks/stats", None, 200)["total_webhooks"], 1);
    // The administrator sees both.
    assert_eq!(ext.expect("GET", "/v1/webhooks", None, 200).as_array().unwrap().len(), 2);
    ext.expect("GET", &format!("/v1/webhooks/{}", own["id"].as_str().unwrap()), None, 200);
}
