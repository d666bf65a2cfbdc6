//! WireGuard end to end: the CandyPanel API on the controller, a real agent driving
//! wireguard-go in its network namespace, and real peers (wireguard-go + `wg`) in namespaces of
//! their own, set up from the configs the API hands out. Needs root, network namespaces,
//! wireguard-go, wireguard-tools and ping; skipped otherwise (the bad-input test runs anywhere).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use flotilla_tests::harness::{wait_for, Fleet};
use flotilla_tests::wireguard::{self, agent_dump, config_value, date_in, refused, Candy, WgPeer, AGENT_CONFIG};
use serde_json::{json, Value};

/// A fleet with one WireGuard agent and the panel installed on it (`wg0` on `range`, port
/// 51820), logged in as the fleet's admin. `None` (after saying why) when WireGuard cannot run.
struct WgFleet {
    fleet: Fleet,
    agent: usize,
    /// The agent host's address: the `server_ip` (endpoint) of client configs.
    server_ip: String,
    candy: Candy,
}

fn wg_fleet(test: &str, range: &str, agent_args: &[&str]) -> Option<WgFleet> {
    if let Err(why) = wireguard::available() {
        eprintln!("SKIPPED {test}: {why}");
        return None;
    }
    let mut fleet = Fleet::start();
    if !fleet.namespaced() {
        eprintln!("SKIPPED {test}: agents are not in network namespaces");
        return None;
    }
    let agent = fleet.add_wireguard_agent("wg-1", AGENT_CONFIG);
    if !agent_args.is_empty() {
        fleet.stop_agent(agent, false);
        fleet.start_agent_with(agent, agent_args);
    }
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(20));
    let server_ip = fleet.agent(agent).host.addr.expect("agent address").to_string();
    let mut candy = Candy::new(&fleet.api);
    let password = fleet.api.password.clone();
    candy.install(node, &server_ip, range, "admin", &password);
    candy.login("admin", &password);
    wait_for("wg0 on the agent", Duration::from_secs(20), || {
        agent_dump(&fleet, agent, "wg0").ok().filter(|d| d.listen_port == 51820)
    });
    Some(WgFleet { fleet, agent, server_ip, candy })
}

fn used(client: &Value) -> (u64, u64) {
    let down = client["used_trafic"]["download"].as_u64().expect("download is a number");
    let up = client["used_trafic"]["upload"].as_u64().expect("upload is a number");
    (down, up)
}

/// Waits until `f` holds, polling every 200 ms; panics with `what` after `timeout`.
#[track_caller]
fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    wait_for(what, timeout, || f().then_some(()));
}

#[test]
fn a_real_peer_pings_through_an_interface_made_by_the_api() {
    let Some(WgFleet { mut fleet, agent, server_ip, candy }) =
        wg_fleet("a_real_peer_pings_through_an_interface_made_by_the_api", "10.0.0.1/24", &[])
    else {
        return;
    };
    let done = candy.manage_ok(
        &json!({ "resource": "interface", "action": "create", "address_range": "10.0.1.1/24", "port": 51821 }),
    );
    assert_eq!(done, Value::Null);
    let wg1 = wait_for("wg1 on the agent", Duration::from_secs(20), || {
        agent_dump(&fleet, agent, "wg1").ok().filter(|d| d.listen_port == 51821)
    });
    let data = candy.data();
    let iface = data["interfaces"].as_array().unwrap().iter().find(|i| i["wg"] == 1).cloned().expect("wg1 listed");
    assert_eq!((iface["port"].clone(), iface["address_range"].clone()), (json!(51821), json!("10.0.1.1/24")));
    assert_eq!(iface["public_key"], json!(wg1.public_key), "the API and the device agree on wg1's key");

    let config = candy.create_client("alice", 1, "1073741824", &date_in(30));
    assert_eq!(config_value(&config, "Address").as_deref(), Some("10.0.1.2/32"), "{config}");
    assert_eq!(config_value(&config, "Endpoint"), Some(format!("{server_ip}:51821")));
    assert_eq!(config_value(&config, "PublicKey"), Some(wg1.public_key.clone()));

    let peer = WgPeer::up(&mut fleet, "alice-peer", &config, "10.0.1.1/24");
    peer.wait_ping("10.0.1.1", Duration::from_secs(30));
    assert!(peer.ping("10.0.1.1", 5, 56) >= 4, "steady pings through the tunnel");

    // The agent journals the counters to the controller and reports the handshake.
    eventually("alice's traffic and connection in /api/data", Duration::from_secs(20), || {
        let c = candy.client("alice");
        let (down, up) = used(&c);
        down > 0 && up > 0 && c["connected_now"] == json!(true)
    });
    // Download is what the server received from the client, upload what it sent (the panel's
    // names are the server's view): one-way UDP from the client moves download only.
    let (down_before, up_before) = used(&candy.client("alice"));
    peer.send_udp("10.0.1.1", 9, 200, 1000);
    // 200 datagrams of 1,000 bytes; UDP may lose a few on the way into wireguard-go (runs here
    // counted 190-205 kB), so half of it is the bar: what matters is the direction.
    eventually("alice's one-way traffic counted as download", Duration::from_secs(20), || {
        used(&candy.client("alice")).0 >= down_before + 100_000
    });
    let (down, up) = used(&candy.client("alice"));
    assert!(
        up - up_before < 50_000,
        "upload moved by {} for one-way traffic in (download +{})",
        up - up_before,
        down - down_before
    );
    let alice = candy.client("alice");
    assert_eq!((alice["wg"].clone(), alice["address"].clone()), (json!(1), json!("10.0.1.2")));
    assert_eq!((alice["status"].clone(), alice["public_key"].clone()), (json!(true), json!(peer.public_key)));
    assert_eq!(alice["traffic"], json!("1073741824"), "traffic stays the string it was sent as");

    // get_config hands out the same keys and endpoint.
    let fetched = candy.manage_ok(&json!({ "resource": "client", "action": "get_config", "name": "alice" }));
    let fetched = fetched["config"].as_str().expect("config");
    for key in ["PrivateKey", "Address", "PublicKey", "Endpoint"] {
        assert_eq!(config_value(fetched, key), config_value(&config, key), "{key} of get_config");
    }

    // The public pages, keyed by name and public key.
    let details = candy.api.request("GET", &format!("/client-details/alice/{}", peer.public_key), None, None);
    assert_eq!(details.status, 200, "{}", details.raw);
    let d = &details.body["data"];
    assert_eq!((d["name"].clone(), d["address"].clone()), (json!("alice"), json!("10.0.1.2")));
    assert_eq!(d["interface_port"], json!(51821), "the client's own interface, not wg0: {d}");
    assert_eq!(d["interface_public_key"], json!(wg1.public_key));
    assert_eq!(d["server_endpoint_ip"], json!(server_ip));
    assert!(d.get("wg").is_none(), "the public page leaves the interface number out");
    let wrong =
        candy.api.request("GET", "/client-details/alice/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", None, None);
    refused(&wrong, 404, "Client not found or public key mismatch.");
    let (status, kind, png) = candy.get_bytes(&format!("/qr/alice/{}", peer.public_key));
    assert_eq!((status, kind.as_str()), (200, "image/png"));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 200, "a PNG image ({} bytes)", png.len());
    let page = candy.api.request("GET", &format!("/shortlink/alice/{}", peer.public_key), None, None);
    assert_eq!(page.status, 200);
    assert!(page.raw.contains("alice"), "{}", page.raw);

    // The server's device has the peer with the client's address only, at the peer's host.
    let dump = agent_dump(&fleet, agent, "wg1").expect("wg1 dump");
    let seen = dump.peer(&peer.public_key).expect("the peer on wg1");
    assert_eq!(seen.allowed_ips, vec!["10.0.1.2/32".to_string()]);
    assert!(seen.latest_handshake > 0 && seen.rx > 0 && seen.tx > 0, "{seen:?}");
    let peer_host = peer.dump();
    assert_eq!(peer_host.peers[0].endpoint, format!("{server_ip}:51821"));
    assert!(agent_dump(&fleet, agent, "wg0").unwrap().peers.is_empty(), "wg0 has no clients");

    // Every byte the device counted reaches the controller once: its counters (never reset
    // here) and the journaled usage meet exactly (keepalives may move both; read until equal).
    let mut last = None;
    let settled = (0..50).any(|_| {
        let device = agent_dump(&fleet, agent, "wg1").unwrap().peer(&peer.public_key).map(|p| (p.rx, p.tx));
        let counted = used(&candy.client("alice"));
        last = Some((device, counted));
        std::thread::sleep(Duration::from_millis(200));
        device == Some(counted)
    });
    assert!(settled, "device counters (rx, tx) vs /api/data (download, upload): {last:?}");

    // Deleting the interface takes its device and its clients away.
    let gone = candy.manage_ok(&json!({ "resource": "interface", "action": "delete", "wg_id": 1 }));
    assert_eq!(gone, Value::Null);
    eventually("wg1 gone from the agent", Duration::from_secs(20), || agent_dump(&fleet, agent, "wg1").is_err());
    assert!(candy.data()["clients"].as_array().unwrap().is_empty(), "alice went with wg1");
    assert_eq!(peer.ping("10.0.1.1", 3, 56), 0, "nothing answers where wg1 was");
    assert!(agent_dump(&fleet, agent, "wg0").is_ok(), "wg0 stays");
}

#[test]
fn quota_and_expiry_cut_peers_while_the_controller_is_down() {
    let skew = tempfile::NamedTempFile::new().expect("skew file");
    let skew_path = skew.path().display().to_string();
    let Some(WgFleet { mut fleet, agent, candy, .. }) = wg_fleet(
        "quota_and_expiry_cut_peers_while_the_controller_is_down",
        "10.0.0.1/24",
        &["--clock-skew-file", &skew_path],
    ) else {
        return;
    };
    let quota_config = candy.create_client("by-quota", 0, "30000", &date_in(365));
    let expiry_config = candy.create_client("by-date", 0, "0", &date_in(2));
    let quota_peer = WgPeer::up(&mut fleet, "quota-peer", &quota_config, "10.0.0.1/24");
    let expiry_peer = WgPeer::up(&mut fleet, "expiry-peer", &expiry_config, "10.0.0.1/24");
    quota_peer.wait_ping("10.0.0.1", Duration::from_secs(30));
    expiry_peer.wait_ping("10.0.0.1", Duration::from_secs(30));
    let before = candy.client("by-quota");
    let (down, up) = used(&before);
    assert!(down + up < 30_000, "the first pings stay under the quota: {before}");

    fleet.stop_controller();
    // ~2.2 kB per 1000-byte ping (both ways): the quota runs out after a few rounds.
    let start = Instant::now();
    let mut rounds = 0;
    let mut last_seen = 0;
    while let Some(p) = agent_dump(&fleet, agent, "wg0").unwrap().peer(&quota_peer.public_key).cloned() {
        assert!(rounds < 40 && start.elapsed() < Duration::from_secs(60), "the agent never cut the quota peer");
        last_seen = p.rx + p.tx;
        quota_peer.ping("10.0.0.1", 5, 1000);
        rounds += 1;
    }
    eprintln!("quota peer cut after {rounds} rounds of 5 pings, {:?}", start.elapsed());
    assert_eq!(quota_peer.ping("10.0.0.1", 3, 56), 0, "a cut peer gets no answer");
    assert!(expiry_peer.ping("10.0.0.1", 3, 56) > 0, "the other peer is untouched");

    // Three days later (by the agent's clock) the other client has expired.
    std::fs::write(skew.path(), (3 * 86_400_000i64).to_string()).unwrap();
    eventually("the agent to cut the expired peer", Duration::from_secs(20), || {
        agent_dump(&fleet, agent, "wg0").unwrap().peer(&expiry_peer.public_key).is_none()
    });
    assert_eq!(expiry_peer.ping("10.0.0.1", 3, 56), 0, "an expired peer gets no answer");

    fleet.start_controller();
    eventually("both cut-offs in /api/data", Duration::from_secs(30), || {
        let (q, e) = (candy.client("by-quota"), candy.client("by-date"));
        q["status"] == json!(false)
            && q["cut_off"] == json!("quota")
            && e["status"] == json!(false)
            && e["cut_off"] == json!("expired")
    });
    eventually("the quota peer's usage journaled", Duration::from_secs(20), || {
        let (down, up) = used(&candy.client("by-quota"));
        down + up >= 30_000
    });
    // Rows shipped again after the restart are not counted twice: at most one round of pings
    // (~11 kB) past the last reading before the cut.
    let (down, up) = used(&candy.client("by-quota"));
    assert!(down + up <= last_seen + 16_000, "usage {} counted more than once? last reading {last_seen}", down + up);
    let cut = candy.client("by-quota");

    // More traffic, then enabled again: the same peer comes back.
    candy.manage_ok(&json!({ "resource": "client", "action": "update", "name": "by-quota", "traffic": "100000000" }));
    assert_eq!(candy.client("by-quota")["status"], json!(false), "raising the quota alone does not re-enable");
    candy.manage_ok(&json!({ "resource": "client", "action": "update", "name": "by-quota", "status": true }));
    let back = wait_for("the quota peer back on wg0", Duration::from_secs(20), || {
        agent_dump(&fleet, agent, "wg0").unwrap().peer(&quota_peer.public_key).cloned()
    });
    assert_eq!(back.allowed_ips, vec![format!("{}/32", quota_peer.address)], "same address");
    let again = candy.client("by-quota");
    assert_eq!(
        (again["public_key"].clone(), again["address"].clone()),
        (cut["public_key"].clone(), cut["address"].clone())
    );
    assert_eq!(again["status"], json!(true));
    assert!(again.get("cut_off").is_none(), "{again}");
    quota_peer.wait_ping("10.0.0.1", Duration::from_secs(45));
    assert!(agent_dump(&fleet, agent, "wg0").unwrap().peer(&expiry_peer.public_key).is_none(), "still expired");
}

#[test]
fn editing_one_client_keeps_another_clients_session() {
    let Some(WgFleet { mut fleet, agent, candy, .. }) =
        wg_fleet("editing_one_client_keeps_another_clients_session", "10.0.0.1/24", &[])
    else {
        return;
    };
    let config_a = candy.create_client("edited", 0, "0", &date_in(30));
    let config_b = candy.create_client("bystander", 0, "0", &date_in(30));
    let peer_a = WgPeer::up(&mut fleet, "peer-a", &config_a, "10.0.0.1/24");
    let peer_b = WgPeer::up(&mut fleet, "peer-b", &config_b, "10.0.0.1/24");
    peer_a.wait_ping("10.0.0.1", Duration::from_secs(30));
    peer_b.wait_ping("10.0.0.1", Duration::from_secs(30));
    assert!(peer_b.ping("10.0.0.1", 5, 500) >= 4);
    let b_of = |fleet: &Fleet| agent_dump(fleet, agent, "wg0").unwrap().peer(&peer_b.public_key).cloned().expect("B");
    let b_before = b_of(&fleet);
    assert!(b_before.latest_handshake > 0 && b_before.rx > 0, "{b_before:?}");

    let edit = |body: Value| {
        let mut body = body;
        body["resource"] = json!("client");
        body["action"] = json!("update");
        body["name"] = json!("edited");
        candy.manage_ok(&body);
    };
    let check_b = |fleet: &Fleet, after: &str| {
        let b = b_of(fleet);
        assert_eq!(b.latest_handshake, b_before.latest_handshake, "B's session was restarted by {after}");
        assert!(b.rx >= b_before.rx && b.tx >= b_before.tx, "B's counters went back after {after}: {b:?}");
    };
    edit(json!({ "note": "renamed in the books" }));
    check_b(&fleet, "a note");
    edit(json!({ "traffic": "5000000000" }));
    check_b(&fleet, "a new quota");
    edit(json!({ "status": false }));
    eventually("A off the device", Duration::from_secs(10), || {
        agent_dump(&fleet, agent, "wg0").unwrap().peer(&peer_a.public_key).is_none()
    });
    check_b(&fleet, "disabling A");
    edit(json!({ "status": 1 }));
    eventually("A back on the device", Duration::from_secs(10), || {
        agent_dump(&fleet, agent, "wg0").unwrap().peer(&peer_a.public_key).is_some()
    });
    check_b(&fleet, "enabling A");
    let a = candy.client("edited");
    assert_eq!(
        (a["note"].clone(), a["traffic"].clone(), a["status"].clone()),
        (json!("renamed in the books"), json!("5000000000"), json!(true))
    );

    assert!(peer_b.ping("10.0.0.1", 5, 56) >= 4, "B still pings, on the same session");
    check_b(&fleet, "the pings after");
    peer_a.wait_ping("10.0.0.1", Duration::from_secs(45));
}

#[test]
fn a_thousand_clients_on_one_interface() {
    let Some(WgFleet { fleet, agent, candy, .. }) = wg_fleet("a_thousand_clients_on_one_interface", "10.8.0.1/22", &[])
    else {
        return;
    };
    let expires = date_in(365);
    let start = Instant::now();
    for i in 0..1000 {
        let reply = candy.manage(&json!({
            "resource": "client", "action": "create", "name": format!("bulk-{i:04}"),
            "expires": expires, "traffic": "0", "wg_id": 0,
        }));
        assert_eq!(reply.status, 200, "client {i}: {}", reply.raw);
        assert!(start.elapsed() < Duration::from_secs(600), "1,000 creates take over 10 minutes (at {i})");
    }
    let created = start.elapsed();
    eprintln!("1,000 clients created through the API in {created:?} ({:?} each)", created / 1000);

    let start = Instant::now();
    wait_for("1,000 peers on the agent's wg0", Duration::from_secs(60), || {
        let n = agent_dump(&fleet, agent, "wg0").map(|d| d.peers.len()).unwrap_or(0);
        (n == 1000).then_some(())
    });
    eprintln!("the agent's device had 1,000 peers {:?} after the last create", start.elapsed());
    let start = Instant::now();
    let data = candy.data();
    eprintln!("/api/data with 1,000 clients answered in {:?}", start.elapsed());
    let clients = data["clients"].as_array().expect("clients");
    assert_eq!(clients.len(), 1000);
    assert_eq!(data["dashboard"]["clients_count"], json!(1000));
    let addresses: HashSet<&str> = clients.iter().map(|c| c["address"].as_str().expect("address")).collect();
    assert_eq!(addresses.len(), 1000, "distinct addresses");
    assert!(!addresses.contains("10.8.0.1"), "the server's address is never handed out");
    assert!(addresses.iter().all(|a| a.starts_with("10.8.")), "all in 10.8.0.0/22");
    assert!(clients.iter().all(|c| c["connected_now"] == json!(false) && c["status"] == json!(true)));
    let dump = agent_dump(&fleet, agent, "wg0").unwrap();
    let on_device: HashSet<String> = dump.peers.iter().flat_map(|p| p.allowed_ips.clone()).collect();
    assert!(addresses.iter().all(|a| on_device.contains(&format!("{a}/32"))), "every address is a peer's");

    // A /30 holds the server and one client.
    candy.manage_ok(
        &json!({ "resource": "interface", "action": "create", "address_range": "10.9.0.1/30", "port": 51822 }),
    );
    let config = candy.create_client("small-1", 1, "0", &expires);
    assert_eq!(config_value(&config, "Address").as_deref(), Some("10.9.0.2/32"));
    let full = candy.manage(&json!({
        "resource": "client", "action": "create", "name": "small-2", "expires": expires, "traffic": "0", "wg_id": 1,
    }));
    refused(&full, 400, "No available IPv4 addresses in the subnet.");
}

#[test]
fn every_bad_input_is_refused_in_the_envelope() {
    // No WireGuard runs here: the panel is installed on a node whose agent never connects
    // (changes are stored and queued), so this runs without root too.
    let fleet = Fleet::start();
    let (node, _) = fleet.create_node("wg-offline");
    let mut candy = Candy::new(&fleet.api);
    let password = fleet.api.password.clone();
    let check = candy.api.request("GET", "/check", None, None);
    assert_eq!(check.body, json!({ "installed": false }));
    // Unknown endpoints and wrong methods of this family answer in its envelope too.
    refused(&candy.api.request("GET", "/api/manage", None, None), 405, "Method GET is not allowed on /api/manage");
    refused(
        &candy.api.request("POST", "/bot_api/user/nope", Some(b"{}"), None),
        404,
        "Unknown endpoint /bot_api/user/nope",
    );

    let login = json!({ "action": "login", "username": "admin", "password": password });
    refused(&candy.auth(&login), 400, "CandyPanel is not installed. Please use the 'install' action.");
    refused(&candy.auth(&json!({ "username": "admin" })), 400, "Missing 'action' in request body");
    let garbled = candy.api.request("POST", "/api/auth", Some(b"{\"action\": login}"), None);
    refused(&garbled, 400, "Invalid JSON body…");
    refused(&candy.auth(&json!({ "action": "sudo" })), 400, "Invalid action specified. Must be 'login' or 'install'.");
    let install = |user: &str, pass: &str, ip: &str| {
        json!({
            "action": "install", "server_ip": ip, "wg_port": "51820", "wg_address_range": "10.0.0.1/24",
            "wg_dns": "8.8.8.8", "admin_user": user, "admin_password": pass, "node_id": node,
        })
    };
    // An existing admin name with a wrong password: refused, nothing installed, password kept.
    refused(
        &candy.auth(&install("admin", "not-the-password", "192.0.2.10")),
        401,
        "User 'admin' exists and the password is wrong…",
    );
    assert_eq!(candy.api.request("GET", "/check", None, None).body, json!({ "installed": false }));
    assert_eq!(fleet.api.get("/api/v1/nodes").status, 200, "the admin's password still works");
    refused(&candy.auth(&install("admin", &password, "not-an-ip")), 400, "Invalid server_ip 'not-an-ip'…");
    let mut no_ip = install("admin", &password, "x");
    no_ip.as_object_mut().unwrap().remove("server_ip");
    refused(&candy.auth(&no_ip), 400, "Missing required field for installation: 'server_ip'");
    let mut bad_port = install("admin", &password, "192.0.2.10");
    bad_port["wg_port"] = json!("70000");
    refused(&candy.auth(&bad_port), 400, "Invalid wg_port 70000: must be 1-65535");
    let mut bad_range = install("admin", &password, "192.0.2.10");
    bad_range["wg_address_range"] = json!("10.0.0.1");
    refused(&candy.auth(&bad_range), 400, "invalid address range '10.0.0.1'…");

    let ok = candy.auth(&install("admin", &password, "192.0.2.10"));
    assert_eq!((ok.status, ok.body["message"].clone()), (200, json!("Installed successfully!")), "{}", ok.raw);
    refused(&candy.auth(&install("admin", &password, "192.0.2.10")), 400, "CandyPanel is already installed.");
    refused(&candy.auth(&install("other", "pw", "192.0.2.10")), 400, "CandyPanel is already installed.");

    let wrong = json!({ "action": "login", "username": "admin", "password": "nope" });
    refused(&candy.auth(&wrong), 401, "Wrong username or password!");
    let ghost = json!({ "action": "login", "username": "ghost", "password": "nope" });
    refused(&candy.auth(&ghost), 401, "Wrong username or password!");
    refused(
        &candy.auth(&json!({ "action": "login", "username": "admin" })),
        400,
        "Missing username or password for login",
    );
    candy.login("admin", &password);

    // Credentials: none, unknown, or not a bearer token.
    let body = json!({ "resource": "sync", "action": "trigger" }).to_string();
    for auth in [None, Some("Bearer not-a-session".to_string()), Some(fleet.api.basic()), Some("Bearer ".to_string())] {
        let manage = candy.api.request("POST", "/api/manage", Some(body.as_bytes()), auth.as_deref());
        let data = candy.api.request("GET", "/api/data", None, auth.as_deref());
        for reply in [manage, data] {
            assert_eq!(reply.status, 401, "{auth:?}: {}", reply.raw);
            assert_eq!(reply.body["success"], json!(false), "{auth:?}: a JSON envelope, not {}", reply.raw);
            assert!(reply.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", reply.raw);
            assert!(reply.header("content-type").is_some_and(|t| t.starts_with("application/json")));
        }
    }

    let raw = |bytes: &[u8]| candy.api.request("POST", "/api/manage", Some(bytes), Some(&candy.bearer()));
    refused(&raw(b"{\"resource\": "), 400, "Invalid JSON body…");
    refused(&raw(b"[1, 2]"), 400, "Request body must be a JSON object");
    refused(&raw(b""), 400, "Missing 'resource' or 'action' in request body");
    let manage = |body: Value| candy.manage(&body);
    refused(&manage(json!({ "action": "create" })), 400, "Missing 'resource' or 'action' in request body");
    refused(&manage(json!({ "resource": "client" })), 400, "Missing 'resource' or 'action' in request body");
    refused(&manage(json!({ "resource": "planet", "action": "create" })), 400, "Unknown resource type: planet");
    for (resource, what) in [
        ("client", "client"),
        ("interface", "interface"),
        ("setting", "setting"),
        ("api_token", "API token"),
        ("sync", "sync"),
    ] {
        let reply = manage(json!({ "resource": resource, "action": "explode" }));
        refused(&reply, 400, &format!("Invalid action 'explode' for {what} resource"));
    }

    // Clients.
    let client = |name: &str, expires: &str, traffic: Value, wg: Value| json!({ "resource": "client", "action": "create", "name": name, "expires": expires, "traffic": traffic, "wg_id": wg });
    let future = date_in(30);
    candy.manage_ok(&client("dup", &future, json!("1000"), json!(0)));
    refused(&manage(client("dup", &future, json!("1000"), json!(0))), 400, "Client with this name already exists.");
    refused(
        &manage(client("bad-date", "tomorrow", json!("1000"), json!(0))),
        400,
        "invalid expiry date 'tomorrow': expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS",
    );
    refused(
        &manage(client("bad-date", "2025-13-01", json!("1000"), json!(0))),
        400,
        "invalid expiry date '2025-13-01'…",
    );
    refused(
        &manage(client("bad-traffic", &future, json!("ten"), json!(0))),
        400,
        "invalid traffic 'ten': expected a number of bytes",
    );
    refused(&manage(client("bad-traffic", &future, json!([1]), json!(0))), 400, "Field 'traffic' must be a string");
    refused(
        &manage(client("no-traffic", &future, Value::Null, json!(0))),
        400,
        "Missing name, expires, or traffic for client creation",
    );
    refused(&manage(client("bad/name", &future, json!("1"), json!(0))), 400, "Client name must not contain…");
    refused(&manage(client("bad-wg", &future, json!("1"), json!(7))), 400, "WireGuard interface wg7 not found.");
    refused(
        &manage(client("bad-wg", &future, json!("1"), json!(-1))),
        400,
        "Invalid interface id -1: must be 0 or more",
    );
    refused(&manage(client("bad-wg", &future, json!("1"), json!("zero"))), 400, "Field 'wg_id' must be an integer");
    let update = |fields: Value| {
        let mut body = fields;
        body["resource"] = json!("client");
        body["action"] = json!("update");
        manage(body)
    };
    refused(&update(json!({ "name": "ghost", "note": "x" })), 400, "Client 'ghost' not found.");
    refused(&update(json!({ "note": "x" })), 400, "Missing client name for update");
    refused(&update(json!({ "name": "dup" })), 400, "No valid update data provided.");
    refused(&update(json!({ "name": "dup", "traffic": "lots" })), 400, "invalid traffic 'lots'…");
    refused(&update(json!({ "name": "dup", "expires": "someday" })), 400, "invalid expiry date 'someday'…");
    refused(&update(json!({ "name": "dup", "status": "maybe" })), 400, "Field 'status' must be true or false");
    refused(&update(json!({ "name": "dup", "status": 2 })), 400, "Field 'status' must be true or false");
    let get_config = manage(json!({ "resource": "client", "action": "get_config", "name": "ghost" }));
    refused(&get_config, 404, "Client not found.");
    refused(
        &manage(json!({ "resource": "client", "action": "delete", "name": "ghost" })),
        400,
        "Client 'ghost' not found.",
    );
    refused(&manage(json!({ "resource": "client", "action": "delete" })), 400, "Missing client name for deletion");

    // Interfaces.
    let iface = |range: &str, port: Value| json!({ "resource": "interface", "action": "create", "address_range": range, "port": port });
    refused(&manage(iface("10.0.5.1/24", json!(51820))), 400, "An interface with port 51820 already exists.");
    refused(
        &manage(iface("10.0.0.129/25", json!(51830))),
        400,
        "An interface with address range 10.0.0.129/25 already exists.",
    );
    refused(
        &manage(iface("10.0.0.0/16", json!(51830))),
        400,
        "An interface with address range 10.0.0.0/16 already exists.",
    );
    refused(&manage(iface("10.0.6.1/24", json!(0))), 400, "Invalid port 0: must be 1-65535");
    refused(&manage(iface("10.0.6.1/24", json!("http"))), 400, "Field 'port' must be an integer");
    refused(&manage(iface("10.0.6.1/33", json!(51831))), 400, "invalid address range '10.0.6.1/33'…");
    refused(
        &manage(json!({ "resource": "interface", "action": "create", "port": 51831 })),
        400,
        "Missing address_range or port for interface creation",
    );
    let delete = |wg: Value| manage(json!({ "resource": "interface", "action": "delete", "wg_id": wg }));
    refused(&delete(json!(9)), 400, "Interface wg9 not found.");
    refused(&delete(json!(-1)), 400, "Invalid interface id -1: must be 0 or more");
    refused(&delete(Value::Null), 400, "Missing wg_id for interface deletion");
    let edit = |name: &str| manage(json!({ "resource": "interface", "action": "update", "name": name, "port": 51840 }));
    refused(&edit("wg4"), 400, "Interface wg4 does not exist in database.");
    refused(&edit("eth0"), 400, "Invalid interface name 'eth0': expected wg followed by its number");

    // Settings and API tokens.
    let setting = |key: &str, value: Value| {
        manage(json!({ "resource": "setting", "action": "update", "key": key, "value": value }))
    };
    refused(&setting("no_such_key", json!("1")), 400, "Invalid Key");
    refused(&setting("mtu", json!("big")), 400, "Invalid value for 'mtu': expected a number from 576 to 9000");
    refused(&setting("reset_time", json!("-1")), 400, "Invalid value for 'reset_time'…");
    refused(&setting("prices", json!("[1]")), 400, "Invalid value for 'prices'…");
    refused(&setting("install", json!("0")), 400, "Setting 'install' is read-only");
    refused(&setting("mtu", Value::Null), 400, "Missing key or value for setting update");
    let token = |name: &str, token: &str| {
        manage(json!({ "resource": "api_token", "action": "create_or_update", "name": name, "token": token }))
    };
    refused(&token("app", "short"), 400, "API token must be at least 16 characters…");
    refused(&token("", "0123456789abcdef0123"), 400, "Missing name or token for API token operation");
    refused(
        &manage(json!({ "resource": "api_token", "action": "delete", "name": "ghost" })),
        400,
        "API token 'ghost' not found.",
    );

    // Nothing refused changed anything; the admin's login still works.
    let data = candy.data();
    let names: Vec<&str> = data["clients"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, vec!["dup"]);
    assert_eq!(data["interfaces"].as_array().unwrap().len(), 1);
    assert_eq!(data["settings"]["mtu"], json!("1420"));
    candy.login("admin", &password);
}

/// Interfaces belong to nodes: the same port and range on two nodes are two interfaces (`wg0` on
/// one, `wg1` on the other), each client config points at its own node, and a port taken on a
/// node is refused there only.
#[test]
fn each_node_has_its_own_interfaces_and_ports() {
    let test = "each_node_has_its_own_interfaces_and_ports";
    let Some(WgFleet { mut fleet, agent, server_ip, candy }) = wg_fleet(test, "10.0.0.1/24", &[]) else {
        return;
    };
    let second = fleet.add_wireguard_agent("wg-2", AGENT_CONFIG);
    let node2 = fleet.agent(second).node_id;
    fleet.wait_connected(&[node2], Duration::from_secs(20));
    let second_ip = fleet.agent(second).host.addr.expect("address").to_string();
    candy.manage_ok(&json!({
        "resource": "interface", "action": "create", "address_range": "10.0.0.1/24", "port": 51820, "node_id": node2,
    }));
    let wg1 = wait_for("wg1 on the second node", Duration::from_secs(20), || {
        agent_dump(&fleet, second, "wg1").ok().filter(|d| d.listen_port == 51820)
    });
    assert!(agent_dump(&fleet, agent, "wg1").is_err(), "wg1 is not on the first node");
    assert!(agent_dump(&fleet, second, "wg0").is_err(), "wg0 is not on the second node");
    let taken = candy.manage(&json!({
        "resource": "interface", "action": "create", "address_range": "10.5.0.1/24", "port": 51820, "node_id": node2,
    }));
    refused(&taken, 400, "An interface with port 51820 already exists.");

    let first = candy.create_client("on-first", 0, "0", &date_in(30));
    let other = candy.create_client("on-second", 1, "0", &date_in(30));
    assert_eq!(config_value(&first, "Endpoint"), Some(format!("{server_ip}:51820")));
    assert_eq!(
        config_value(&other, "Endpoint"),
        Some(format!("{second_ip}:51820")),
        "an interface on another node defaults to that node's address"
    );
    assert_eq!(config_value(&other, "PublicKey"), Some(wg1.public_key.clone()));
    assert_eq!(config_value(&first, "Address"), config_value(&other, "Address"), "pools are per interface");
    let a = WgPeer::up(&mut fleet, "first-peer", &first, "10.0.0.1/24");
    let b = WgPeer::up(&mut fleet, "second-peer", &other, "10.0.0.1/24");
    a.wait_ping("10.0.0.1", Duration::from_secs(30));
    b.wait_ping("10.0.0.1", Duration::from_secs(30));
    eventually("both clients connected, each on its own node", Duration::from_secs(20), || {
        ["on-first", "on-second"].iter().all(|n| candy.client(n)["connected_now"] == json!(true))
    });
    assert!(agent_dump(&fleet, second, "wg1").unwrap().peer(&b.public_key).is_some());
    assert!(agent_dump(&fleet, agent, "wg0").unwrap().peer(&b.public_key).is_none());
}

/// `reset_time` starts a new counter period on schedule: usage goes back to zero while the
/// interface stays up and the peer keeps its session.
#[test]
fn reset_time_zeroes_counters_without_taking_the_interface_down() {
    let test = "reset_time_zeroes_counters_without_taking_the_interface_down";
    let Some(WgFleet { mut fleet, agent, candy, .. }) = wg_fleet(test, "10.0.0.1/24", &[]) else {
        return;
    };
    let config = candy.create_client("period", 0, "0", &date_in(30));
    let peer = WgPeer::up(&mut fleet, "period-peer", &config, "10.0.0.1/24");
    peer.wait_ping("10.0.0.1", Duration::from_secs(30));
    assert!(peer.ping("10.0.0.1", 5, 1000) >= 4);
    eventually("usage counted", Duration::from_secs(20), || used(&candy.client("period")).0 > 5_000);
    let before = agent_dump(&fleet, agent, "wg0").unwrap().peer(&peer.public_key).cloned().expect("peer");

    // A period of 1.8 s; the sync runs the reset once it is due.
    candy.manage_ok(&json!({ "resource": "setting", "action": "update", "key": "reset_time", "value": "0.0005" }));
    std::thread::sleep(Duration::from_millis(2_000));
    candy.manage_ok(&json!({ "resource": "sync", "action": "trigger" }));
    let (down, up) = used(&candy.client("period"));
    assert!(down + up < 1_000, "usage after the reset: {down} + {up}");
    let after = agent_dump(&fleet, agent, "wg0").unwrap();
    assert_eq!(after.listen_port, 51820, "the interface stayed up");
    let now = after.peer(&peer.public_key).cloned().expect("the peer stayed on the device");
    assert_eq!(now.latest_handshake, before.latest_handshake, "the session was not restarted");
    assert!(peer.ping("10.0.0.1", 3, 56) >= 2, "traffic still flows");
    // Counting goes on from zero.
    eventually("new traffic counted after the reset", Duration::from_secs(20), || used(&candy.client("period")).0 > 0);
    candy.manage_ok(&json!({ "resource": "setting", "action": "update", "key": "reset_time", "value": "0" }));
}
