//! The original web UI against a real controller: every call the UI makes beyond the document
//! (`research/msm-frontend-api.md` §2–3), with the bodies the UI sends, checked for the fields
//! the UI reads. The first test needs no agent; the second runs a real v2ray core behind an agent
//! and moves real bytes through it.

use std::time::Duration;

use flotilla_tests::harness::{basic_header, wait_for, Fleet, FleetOptions, Reply, BASE_PATH};
use flotilla_tests::traffic::{v2ray_binary, ClientCore, FileServer};
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;

fn put(fleet: &Fleet, path: &str, body: &Value) -> Reply {
    fleet.api.request("PUT", path, Some(body.to_string().as_bytes()), Some(&fleet.api.basic()))
}

/// A `{"detail": "…"}` error with `status`, whose detail contains `needle`.
#[track_caller]
fn assert_detail(r: &Reply, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.raw);
    let detail = r.body["detail"].as_str().unwrap_or_else(|| panic!("no detail: {}", r.raw));
    assert!(detail.contains(needle), "{detail:?} should contain {needle:?}");
}

/// A 401 the browser will not answer with its own login dialog.
#[track_caller]
fn assert_401_without_challenge(r: &Reply) {
    assert_eq!(r.status, 401, "{}", r.raw);
    assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{}", r.raw);
    assert_eq!(r.header("www-authenticate"), None, "a challenge makes browsers pop up their dialog");
}

fn create_node(fleet: &Fleet, body: Value) -> i64 {
    let r = fleet.api.post("/api/v1/nodes", &body);
    assert_eq!(r.status, 200, "{}", r.raw);
    r.body["id"].as_i64().unwrap()
}

#[test]
fn login_node_and_status_calls_answer_as_the_ui_expects() {
    let fleet = Fleet::start_with(FleetOptions { loopback: true, ..Default::default() });

    // Login: the public MFA probe, then the credentials check (also under the panel's prefix).
    for prefix in ["", BASE_PATH] {
        let mfa = fleet.api.request("GET", &format!("{prefix}/api/v1/auth/mfa-status"), None, None);
        assert_eq!(mfa.status, 200, "{}", mfa.raw);
        assert_eq!(mfa.body, json!({ "enabled": false }));
    }
    let verified = fleet.api.get("/api/v1/auth/verify");
    assert_eq!(verified.status, 200, "{}", verified.raw);
    assert_eq!(verified.body, json!({ "user": "admin", "role": "admin", "mfa_enabled": false }));
    let wrong = basic_header("admin", "not-the-password");
    assert_401_without_challenge(&fleet.api.request("GET", "/api/v1/auth/verify", None, Some(&wrong)));
    assert_401_without_challenge(&fleet.api.request("GET", "/api/v1/auth/verify", None, None));
    assert_401_without_challenge(&fleet.api.request("GET", "/api/v1/nodes/list", None, Some(&wrong)));
    assert_401_without_challenge(&fleet.api.request("GET", "/api/v1/snapshots/latest", None, None));

    // Nodes: the short list, renames.
    let nl = create_node(&fleet, json!({ "name": "Server-NL", "url": "https://203.0.113.7:8443/panel/" }));
    let de = create_node(&fleet, json!({ "name": "Server-DE" }));
    let list = fleet.api.get("/api/v1/nodes/list");
    assert_eq!(list.status, 200, "{}", list.raw);
    assert_eq!(list.body, json!([{ "id": nl, "name": "Server-NL" }, { "id": de, "name": "Server-DE" }]));
    let renamed = put(&fleet, &format!("/api/v1/nodes/{de}"), &json!({ "name": "Server-FR" }));
    assert_eq!(renamed.status, 200, "{}", renamed.raw);
    assert_eq!(renamed.body["status"], "success");
    assert_eq!(
        fleet.api.get(&format!("/api/v1/nodes/{de}")).body["name"],
        "Server-FR",
        "GET on the same path still works"
    );
    assert_detail(&put(&fleet, &format!("/api/v1/nodes/{de}"), &json!({ "name": "  " })), 400, "Name cannot be empty");
    assert_detail(&put(&fleet, &format!("/api/v1/nodes/{de}"), &json!({ "name": "server-nl" })), 409, "already exists");
    assert_detail(&put(&fleet, "/api/v1/nodes/999", &json!({ "name": "X" })), 404, "not found");
    assert_detail(&put(&fleet, &format!("/api/v1/nodes/{de}"), &json!({ "name": "X", "url": "y" })), 400, "url");

    // "Check connection" from the add-node form: the UI sends the panel URL and credentials.
    let ui_form = json!({ "url": "203.0.113.7:8443/panel", "user": "admin", "password": "secret" });
    let check = fleet.api.post("/api/v1/nodes/check-connection", &ui_form);
    assert_eq!(check.status, 200, "{}", check.raw);
    assert_eq!(check.body["success"], json!(false), "its agent never enrolled: {}", check.raw);
    assert_eq!(check.body["node_id"], json!(nl));
    assert_eq!(check.body["base_url"], "https://203.0.113.7:8443/panel");
    assert_eq!(check.body["inbounds_count"], json!(0));
    assert!(check.body["message"].as_str().is_some_and(|m| m.contains("not enrolled")), "{}", check.raw);
    let unknown = fleet.api.post(
        "/api/v1/nodes/check-connection",
        &json!({ "url": "https://198.51.100.1", "user": "a", "password": "b" }),
    );
    assert_eq!(unknown.status, 200, "{}", unknown.raw);
    assert_eq!(unknown.body["success"], json!(false));
    assert_eq!(unknown.body["inbounds_count"], Value::Null);
    assert!(unknown.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_detail(&fleet.api.post("/api/v1/nodes/check-connection", &json!({ "user": "a" })), 400, "Missing");
    assert_detail(&fleet.api.post("/api/v1/nodes/check-connection", &json!({ "url": "https://" })), 400, "Invalid URL");
    assert_detail(&fleet.api.post("/api/v1/nodes/check-connection", &json!({ "node_id": 999 })), 404, "not found");

    let refresh = fleet.api.post("/api/v1/nodes/refresh-now", &json!({}));
    assert_eq!(refresh.status, 200, "{}", refresh.raw);
    assert_eq!(refresh.body["status"], "success");
    assert!(refresh.body["message"].is_string());

    // Status of a node whose agent is away is a 200 with `available: false`.
    let status = fleet.api.get(&format!("/api/v1/nodes/{nl}/server-status"));
    assert_eq!(status.status, 200, "{}", status.raw);
    assert_eq!(status.body["node"], "Server-NL");
    assert_eq!(status.body["available"], json!(false));
    assert_eq!(status.body["status"], "offline");
    assert_eq!(status.body["reason"], "not_enrolled");
    assert!(status.body["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", status.raw);
    assert_detail(&fleet.api.get("/api/v1/nodes/999/server-status"), 404, "not found");

    let snapshot = fleet.api.get("/api/v1/snapshots/latest");
    assert_eq!(snapshot.status, 200, "{}", snapshot.raw);
    assert_eq!(snapshot.body["count"], 2);
    assert_eq!(snapshot.body["mode"], "live");
    assert!(snapshot.body["timestamp"].as_f64().unwrap() > 1.7e9, "unix seconds: {}", snapshot.raw);
    let names: Vec<&str> =
        snapshot.body["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Server-FR", "Server-NL"], "sorted by name");
    for n in snapshot.body["nodes"].as_array().unwrap() {
        assert_eq!(n["available"], json!(false), "{n}");
        assert_eq!(n["status"], "offline");
        assert_eq!(n["xray_running"], json!(false));
        assert_eq!((n["cpu"].as_f64(), n["online_clients"].as_u64()), (Some(0.0), Some(0)), "{n}");
        assert!(n["error"].as_str().is_some_and(|e| !e.is_empty()), "{n}");
        assert!(n["node_id"].is_i64() && n["reason"].is_string() && n["traffic_total"].is_u64(), "{n}");
    }

    // Per-node lists of a node without inbounds.
    let inbounds = fleet.api.get(&format!("/api/v1/nodes/{nl}/inbounds"));
    assert_eq!(inbounds.status, 200, "{}", inbounds.raw);
    assert_eq!((inbounds.body["node"].as_str(), &inbounds.body["inbounds"]), (Some("Server-NL"), &json!([])));
    let clients = fleet.api.get(&format!("/api/v1/nodes/{nl}/clients"));
    assert_eq!(clients.body, json!({ "clients": [], "count": 0 }), "{}", clients.raw);
    assert_detail(&fleet.api.get("/api/v1/nodes/999/inbounds"), 404, "not found");
    assert_detail(&fleet.api.get("/api/v1/nodes/999/clients"), 404, "not found");

    // Client traffic: an unknown client is not a 404 (the UI would take the endpoint for missing).
    for path in [
        format!("/api/v1/nodes/{nl}/client-traffic?email=nobody@x"),
        format!("/api/v1/nodes/{nl}/client/nobody%40x/traffic"),
    ] {
        let r = fleet.api.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.raw);
        assert_eq!(r.body["available"], json!(false), "{}", r.raw);
        assert!(r.body["error"].as_str().is_some_and(|e| e.contains("nobody@x")), "{}", r.raw);
    }
    assert_detail(&fleet.api.get("/api/v1/nodes/999/client-traffic?email=a@x"), 404, "not found");
    assert_detail(&fleet.api.get("/api/v1/nodes/999/client/a@x/traffic"), 404, "not found");
    assert_detail(&fleet.api.get(&format!("/api/v1/nodes/{nl}/client-traffic")), 400, "email");

    // Batch inbound calls and add-to-nodes refuse what the reference refuses.
    for path in ["/api/v1/inbounds/batch-enable", "/api/v1/inbounds/batch-update", "/api/v1/inbounds/batch-delete"] {
        assert_detail(
            &fleet.api.post(path, &json!({ "node_ids": [nl], "inbound_ids": [] })),
            400,
            "inbound_ids required",
        );
        assert_detail(&fleet.api.post(path, &json!({ "node_ids": [nl] })), 400, "inbound_ids required");
    }
    let update = |updates: Value| {
        fleet
            .api
            .post("/api/v1/inbounds/batch-update", &json!({ "node_ids": [nl], "inbound_ids": [1], "updates": updates }))
    };
    assert_detail(&update(json!({})), 400, "updates");
    assert_detail(&update(json!({ "port": 1 })), 400, "port");
    let none = fleet
        .api
        .post("/api/v1/inbounds/batch-enable", &json!({ "node_ids": [nl], "inbound_ids": [1], "enable": true }));
    assert_eq!(none.body, json!({ "results": [], "total": 0, "successful": 0 }), "{}", none.raw);

    let add = |body: Value| fleet.api.post("/api/v1/clients/add-to-nodes", &body);
    assert_detail(
        &add(json!({ "flow": "", "inbound_id": 1, "totalGB": 0, "expiryTime": 0, "enable": true })),
        400,
        "email is required",
    );
    assert_detail(&add(json!({ "email": "a@x", "flow": "", "totalGB": 0 })), 400, "inbound_id is required");
    assert_detail(
        &add(json!({ "email": "a@x", "flow": "xtls-rprx-direct", "inbound_id": 1 })),
        400,
        "Invalid flow value",
    );
    assert_detail(&add(json!({ "email": "a@x", "inbound_id": 1, "node_ids": [999] })), 404, "node 999");
    let missing =
        add(json!({ "email": "a@x", "flow": "", "inbound_id": 1, "totalGB": 0, "expiryTime": 0, "enable": true }));
    assert_eq!(missing.status, 200, "{}", missing.raw);
    assert_eq!(missing.body["summary"], json!({ "total": 2, "successful": 0, "failed": 2 }), "{}", missing.raw);
    for r in missing.body["results"].as_array().unwrap() {
        assert_eq!((r["success"].as_bool(), r["error"].as_str()), (Some(false), Some("Inbound 1 not found")), "{r}");
        assert!(r["node"].is_string());
    }
}

/// A fleet with one agent whose v2ray runs; returns (fleet, agent index, node id).
fn fleet_with_core() -> (Fleet, usize, i64) {
    let mut fleet = Fleet::start_with(FleetOptions::default());
    let agent = fleet.add_agent("nl-1");
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(15));
    wait_for("the agent's v2ray to run", Duration::from_secs(20), || {
        let s = fleet.api.get(&format!("/api/v1/servers/{node}/status")).body;
        (s["xray"]["running"] == json!(true)).then_some(())
    });
    (fleet, agent, node)
}

/// The UI's "add inbound" body: a 3x-ui inbound with JSON text fields.
fn add_inbound(fleet: &Fleet, node: i64, port: u16, remark: &str, enable: bool) -> i64 {
    let body = json!({
        "port": port, "protocol": "vmess", "remark": remark, "enable": enable, "expiryTime": 0, "listen": "",
        "total": 0, "settings": "{\"clients\":[]}", "streamSettings": "{\"network\":\"tcp\",\"security\":\"none\"}",
        "sniffing": "{\"enabled\":false,\"destOverride\":[]}", "node_ids": [node],
    });
    let r = fleet.api.post("/api/v1/inbounds", &body);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["results"][0]["success"], json!(true), "{}", r.raw);
    r.body["results"][0]["inbound_id"].as_i64().unwrap()
}

fn vmess_client(fleet: &mut Fleet, agent: usize, port: u16, id: &str) -> ClientCore {
    let addr = fleet.agent_dial_addr(agent);
    fleet.client_core(json!({
        "protocol": "vmess",
        "settings": { "vnext": [{ "address": addr, "port": port, "users": [{ "id": id, "alterId": 0 }] }] },
    }))
}

fn batch(fleet: &Fleet, action: &str, body: Value) -> Value {
    let r = fleet.api.post(&format!("/api/v1/inbounds/batch-{action}"), &body);
    assert_eq!(r.status, 200, "batch-{action}: {}", r.raw);
    r.body
}

fn node_inbound(fleet: &Fleet, node: i64, id: i64) -> Value {
    let r = fleet.api.get(&format!("/api/v1/nodes/{node}/inbounds"));
    assert_eq!(r.status, 200, "{}", r.raw);
    r.body["inbounds"].as_array().unwrap().iter().find(|i| i["id"] == json!(id)).cloned().unwrap_or(Value::Null)
}

fn wait_download(client: &ClientCore, server: &FileServer, what: &str) {
    wait_for(what, Duration::from_secs(20), || client.download_within(server, 5).ok());
}

#[test]
fn inbound_and_client_tabs_drive_a_real_core() {
    if v2ray_binary().is_none() {
        eprintln!("SKIP: v2ray is not installed (apt-get install v2ray); .ci/run installs it");
        return;
    }
    let (mut fleet, agent, node) = fleet_with_core();
    let away = create_node(&fleet, json!({ "name": "Server-DE" }));
    let port = 23_490;
    let inbound = add_inbound(&fleet, node, port, "main", true);

    // The inbounds tab reads raw 3x-ui objects per node.
    let raw = node_inbound(&fleet, node, inbound);
    assert_eq!((raw["protocol"].as_str(), raw["port"].as_u64()), (Some("vmess"), Some(port as u64)), "{raw}");
    assert_eq!((raw["remark"].as_str(), raw["enable"].as_bool()), (Some("main"), Some(true)), "{raw}");
    assert_eq!((raw["security"].as_str(), raw["tag"].as_str()), (Some("none"), Some("inbound-23490")), "{raw}");
    for field in ["settings", "streamSettings", "sniffing"] {
        let text = raw[field].as_str().unwrap_or_else(|| panic!("{field} is JSON text: {raw}"));
        assert!(serde_json::from_str::<Value>(text).unwrap().is_object(), "{field}: {text}");
    }
    assert_eq!(raw["clientStats"], json!([]));
    let list = fleet.api.get(&format!("/api/v1/nodes/{node}/inbounds")).body;
    assert_eq!((list["available"].as_bool(), list["connected"].as_bool()), (Some(true), Some(true)), "{list}");

    // "Add client to multiple servers": GB as typed, the node without the inbound says so.
    let added = fleet.api.post(
        "/api/v1/clients/add-to-nodes",
        &json!({ "email": "ui@x", "flow": "", "inbound_id": inbound, "totalGB": 5, "expiryTime": 0, "enable": true,
                 "node_ids": [node, away] }),
    );
    assert_eq!(added.status, 200, "{}", added.raw);
    assert_eq!(added.body["summary"], json!({ "total": 2, "successful": 1, "failed": 1 }), "{}", added.raw);
    let results = added.body["results"].as_array().unwrap();
    assert_eq!(
        (results[0]["node"].as_str(), results[0]["success"].as_bool()),
        (Some("nl-1"), Some(true)),
        "{}",
        added.raw
    );
    assert_eq!(results[0]["status"], "applied", "{}", added.raw);
    assert_eq!(results[1]["node"], "Server-DE");
    assert_eq!(results[1]["error"], format!("Inbound {inbound} not found"));

    // The clients tab: one call per node, then traffic per client.
    let clients = fleet.api.get(&format!("/api/v1/nodes/{node}/clients")).body;
    assert_eq!(clients["count"], 1, "{clients}");
    let c = &clients["clients"][0];
    assert_eq!(
        (c["email"].as_str(), c["protocol"].as_str(), c["subId"].as_str()),
        (Some("ui@x"), Some("vmess"), Some("ui@x"))
    );
    assert_eq!(
        (c["total"].as_u64(), c["expiryTime"].as_i64(), c["enable"].as_bool()),
        (Some(5 << 30), Some(0), Some(true))
    );
    assert_eq!((c["inbound_id"].as_i64(), c["password"].as_str()), (Some(inbound), Some("")));
    let id = c["id"].as_str().expect("a vmess client has a UUID").to_string();
    assert_eq!(fleet.api.get(&format!("/api/v1/nodes/{away}/clients")).body["count"], 0);

    let server = fleet.file_server(agent, MIB);
    let client = vmess_client(&mut fleet, agent, port, &id);
    assert_eq!(client.download(&server).unwrap(), server.size);
    let traffic = wait_for("ui@x's traffic", Duration::from_secs(20), || {
        let t = fleet.api.get(&format!("/api/v1/nodes/{node}/client-traffic?email=ui@x")).body;
        (t["download"].as_u64()? >= server.size).then_some(t)
    });
    assert_eq!((traffic["available"].as_bool(), traffic["email"].as_str()), (Some(true), Some("ui@x")), "{traffic}");
    let (up, down) = (traffic["upload"].as_u64().unwrap(), traffic["download"].as_u64().unwrap());
    assert!(up > 0 && traffic["total"].as_u64() == Some(up + down), "{traffic}");
    assert_eq!((traffic["enable"].as_bool(), traffic["expiryTime"].as_i64()), (Some(true), Some(0)));
    let legacy = fleet.api.get(&format!("/api/v1/nodes/{node}/client/ui%40x/traffic")).body;
    assert_eq!(legacy["download"], traffic["download"], "{legacy}");
    let stats = &node_inbound(&fleet, node, inbound)["clientStats"][0];
    assert_eq!((stats["email"].as_str(), stats["inboundId"].as_i64()), (Some("ui@x"), Some(inbound)), "{stats}");
    assert_eq!(stats["down"], traffic["download"]);

    // Status tab and header: the live node, the away one.
    let status = fleet.api.get(&format!("/api/v1/nodes/{node}/server-status")).body;
    assert_eq!((status["available"].as_bool(), status["status"].as_str()), (Some(true), Some("online")), "{status}");
    assert_eq!((status["node"].as_str(), status["xray"]["running"].as_bool()), (Some("nl-1"), Some(true)), "{status}");
    assert!(status["xray"]["version"].is_string() && status["system"]["cpu"].is_number(), "{status}");
    assert!(status["system"]["mem"]["percent"].is_number() && status["network"]["download"].is_u64(), "{status}");
    let ts = status["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 20, "an RFC 3339 UTC time browsers parse as UTC: {ts}");
    let snapshot = fleet.api.get("/api/v1/snapshots/latest").body;
    let live = snapshot["nodes"].as_array().unwrap().iter().find(|n| n["node_id"] == json!(node)).unwrap().clone();
    assert_eq!((live["available"].as_bool(), live["xray_running"].as_bool()), (Some(true), Some(true)), "{live}");
    assert_eq!(
        (live["status"].as_str(), live["reason"].as_str(), live["error"].as_str()),
        (Some("online"), Some("ok"), Some(""))
    );
    assert!(live["traffic_total"].as_u64().unwrap() >= server.size, "{live}");
    assert!(live["timestamp"].as_f64().unwrap() > 1.7e9, "{live}");
    let check = fleet.api.post("/api/v1/nodes/check-connection", &json!({ "node_id": node })).body;
    assert_eq!((check["success"].as_bool(), check["inbounds_count"].as_u64()), (Some(true), Some(1)), "{check}");

    // Batch disable: the core stops serving the inbound; enable brings it back.
    let off = batch(&fleet, "enable", json!({ "node_ids": [node], "inbound_ids": [inbound], "enable": false }));
    assert_eq!((off["total"].as_u64(), off["successful"].as_u64()), (Some(1), Some(1)), "{off}");
    let r = &off["results"][0];
    assert_eq!(
        (r["node"].as_str(), r["inbound_id"].as_i64(), r["remark"].as_str()),
        (Some("nl-1"), Some(inbound), Some("main"))
    );
    assert_eq!(
        (r["success"].as_bool(), r["enabled"].as_bool(), r["status"].as_str()),
        (Some(true), Some(false), Some("applied"))
    );
    assert_eq!(node_inbound(&fleet, node, inbound)["enable"], json!(false));
    assert!(client.download_within(&server, 5).is_err(), "a disabled inbound is not served");
    let on = batch(&fleet, "enable", json!({ "node_ids": [node], "inbound_ids": [inbound], "enable": true }));
    assert_eq!(on["successful"], 1, "{on}");
    wait_download(&client, &server, "the re-enabled inbound to serve again");

    // Batch update: remark (and enable) as the UI's form sends them.
    let updated = batch(
        &fleet,
        "update",
        json!({ "node_ids": [node], "inbound_ids": [inbound], "updates": { "remark": "renamed" } }),
    );
    assert_eq!(
        (updated["successful"].as_u64(), updated["results"][0]["remark"].as_str()),
        (Some(1), Some("renamed")),
        "{updated}"
    );
    assert!(updated["results"][0].get("enabled").is_none(), "{updated}");
    assert_eq!(node_inbound(&fleet, node, inbound)["remark"], "renamed");
    client.download(&server).expect("a remark change does not interrupt the inbound");

    // Enabling an inbound whose port another program holds is refused and rolled back.
    let held: u16 = server.url.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap();
    let blocked = add_inbound(&fleet, node, held, "blocked", false);
    let refused = batch(&fleet, "enable", json!({ "node_ids": [node], "inbound_ids": [blocked], "enable": true }));
    let r = &refused["results"][0];
    assert_eq!(
        (refused["successful"].as_u64(), r["success"].as_bool(), r["status"].as_str()),
        (Some(0), Some(false), Some("refused"))
    );
    assert!(r["error"].as_str().is_some_and(|e| e.contains(&format!("inbound-{held}"))), "{refused}");
    assert_eq!(node_inbound(&fleet, node, blocked)["enable"], json!(false), "rolled back");
    client.download(&server).expect("the other inbound keeps serving");

    // Batch delete: the inbound and its clients go, on the core too.
    let deleted = batch(&fleet, "delete", json!({ "node_ids": [node, away], "inbound_ids": [inbound, blocked] }));
    assert_eq!((deleted["total"].as_u64(), deleted["successful"].as_u64()), (Some(2), Some(2)), "{deleted}");
    assert_eq!(fleet.api.get(&format!("/api/v1/nodes/{node}/inbounds")).body["inbounds"], json!([]));
    assert_eq!(fleet.api.get(&format!("/api/v1/nodes/{node}/clients")).body["count"], 0);
    assert!(client.download_within(&server, 5).is_err(), "a deleted inbound is not served");
    let gone = fleet.api.get(&format!("/api/v1/nodes/{node}/client-traffic?email=ui@x")).body;
    assert_eq!(gone["available"], json!(false), "{gone}");
}

/// The UI's live feed: `/ws?token=base64(user:pass)` under the base path, the two subscriptions it
/// sends, a first snapshot per node, an `inbound_update` after a batch call; bad credentials close
/// with 1008.
#[test]
fn the_websocket_feed_answers_subscriptions_and_pushes_updates() {
    use base64::Engine;
    use tungstenite::Message;

    let mut fleet = Fleet::start_with(FleetOptions { loopback: true, ..Default::default() });
    let agent = fleet.add_agent("ws-1");
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(15));
    let host = fleet.api.base.trim_start_matches("http://").to_string();
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", fleet.api.user, fleet.api.password));

    let (mut bad, _) = tungstenite::connect(format!("ws://{host}{BASE_PATH}/ws?token=Zm9vOmJhcg==")).expect("upgrade");
    match bad.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("bad credentials must close with 1008, got {other:?}"),
    }

    let (mut ws, _) = tungstenite::connect(format!("ws://{host}{BASE_PATH}/ws?token={token}")).expect("upgrade");
    for channel in ["inbounds", "snapshot_delta"] {
        ws.send(Message::text(json!({ "type": "subscribe", "channel": channel }).to_string())).unwrap();
    }
    let mut read = |want: &str| -> Value {
        loop {
            let msg = ws.read().expect("feed message");
            if let Message::Text(text) = msg {
                let v: Value = serde_json::from_str(text.as_str()).unwrap();
                if v["type"] == want {
                    return v;
                }
            }
        }
    };
    assert_eq!(read("subscribed")["status"], "success");
    let first = read("snapshot_delta");
    assert_eq!(first["data"]["node"], "ws-1", "{first}");
    assert_eq!(first["data"]["snapshot"]["available"], json!(true), "{first}");

    let r = fleet
        .api
        .post("/api/v1/inbounds/batch-enable", &json!({ "node_ids": [node], "inbound_ids": [42], "enable": false }));
    assert_eq!(r.status, 200, "{}", r.raw);
    let update = read("inbound_update");
    assert_eq!(update["data"]["action"], "batch_enable", "{update}");
    assert_eq!(update["data"]["result"]["total"], r.body["total"], "{update}");
}

/// The monitoring tab: the controller's dependencies and a node's history, which the controller
/// samples at start and every minute.
#[test]
fn monitoring_tab_shows_dependencies_and_node_history() {
    let mut fleet = Fleet::start_with(FleetOptions { loopback: true, ..Default::default() });
    let agent = fleet.add_agent("hist-1");
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(15));
    let deps = fleet.api.get("/api/v1/health/deps");
    assert_eq!(deps.status, 200, "{}", deps.raw);
    assert_eq!(deps.body["collector_running"], json!(true), "{}", deps.raw);
    assert_eq!(deps.body["redis"]["enabled"], json!(false));

    // A restarted controller samples at once; the agent is back within a second or two.
    fleet.stop_controller();
    fleet.start_controller();
    fleet.wait_connected(&[node], Duration::from_secs(15));
    let history = fleet.api.get(&format!("/api/v1/history/nodes/{node}?since_sec=3600&limit=900"));
    assert_eq!(history.status, 200, "{}", history.raw);
    let points = history.body["points"].as_array().unwrap();
    assert!(!points.is_empty(), "{}", history.raw);
    assert_eq!(points[0]["node_name"], "hist-1");
    assert!(points[0]["ts"].as_i64().unwrap() > 1_700_000_000);
    assert!(points[0]["traffic_total"].is_u64(), "{}", history.raw);
    assert_eq!(history.body["since_sec"], 3600);
    assert_eq!(fleet.api.get("/api/v1/history/nodes/999").status, 404);
}
