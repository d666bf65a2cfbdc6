//! The VPS API end to end: a real agent running real LXC containers (busybox template) in its
//! network namespace, driven through `/api/server…` by two customers and an administrator.
//! Needs root, network namespaces, LXC and busybox-static; skipped otherwise.

use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_tests::harness::{wait_for, Fleet};
use flotilla_tests::vps::{self, add_user, cgroup_value, container_exists, in_guest, Cleanup, Vps};
use serde_json::{json, Value};

#[test]
fn a_server_lives_its_whole_life_through_the_api() {
    if let Err(why) = vps::available() {
        eprintln!("SKIPPED a_server_lives_its_whole_life_through_the_api: {why}");
        return;
    }
    let t0 = Instant::now();
    let mut fleet = Fleet::start();
    let agent = fleet.add_container_agent("vps-1", &vps::agent_config(1));
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(20));
    let ns = fleet.agent(agent).host.ns.clone();
    let admin = Vps::login(&fleet.api, "admin", &fleet.api.password.clone());
    add_user(&fleet, "bob", "bob-password-1", None);
    add_user(&fleet, "carol", "carol-password-1", None);
    let bob = Vps::login(&fleet.api, "bob", "bob-password-1");
    let carol = Vps::login(&fleet.api, "carol", "carol-password-1");

    // Catalogs: administrators only; lists are public.
    let os = admin.expect("POST", "/api/os", Some(&json!({ "name": "BusyBox", "template": "busybox" })), 201);
    let tariff = json!({ "name": "Tiny", "cores": 1, "memory": 256, "disk": 1, "price": 100 });
    let tariff = admin.expect("POST", "/api/tariff", Some(&tariff), 201);
    bob.expect("POST", "/api/os", Some(&json!({ "name": "Mine", "template": "busybox" })), 403);
    let public = fleet.api.request("GET", "/api/tariff", None, None);
    assert_eq!(public.status, 200, "{}", public.raw);
    assert_eq!(public.body[0]["description"], "1 core, 256 MB RAM, 1 GB SSD", "{}", public.raw);
    let unauthenticated = fleet.api.request("GET", "/api/server", None, Some("Bearer null"));
    assert_eq!(
        (unauthenticated.status, unauthenticated.body["error"].is_string()),
        (401, true),
        "{}",
        unauthenticated.raw
    );

    // Bob buys a server: answered at once, created by a task on the node.
    let order = json!({ "osId": os["id"], "tariffId": tariff["id"] });
    let created = bob.expect("POST", "/api/server/create", Some(&order), 201);
    assert_eq!(created["status"], "creating", "{created}");
    let id = created["id"].as_i64().expect("id");
    let password = created["rootPassword"].as_str().expect("rootPassword").to_string();
    let upid = created["taskId"].as_str().expect("taskId").to_string();
    assert!(upid.starts_with("UPID:") && upid.contains(":vzcreate:"), "{upid}");
    let server = bob.expect("GET", &format!("/api/server/{id}"), None, 200);
    let name = server["container"].as_str().expect("container").to_string();
    let _cleanup = Cleanup { ns: ns.clone(), names: vec![name.clone()] };
    assert_eq!(server["rootPassword"], "********", "listed masked");
    let created_at = Instant::now();
    bob.task_ok(&upid, Duration::from_secs(120));
    let mut last = Value::Null;
    let status = wait_for("the server running with an address", Duration::from_secs(60), || {
        let s = bob.expect("GET", &format!("/api/server/{id}/status"), None, 200);
        if s != last {
            eprintln!("status: {s}");
            last = s.clone();
        }
        (s["status"] == "running"
            && s["ipAddress"].is_string()
            && s["stats"]["data"]["memory"]["used"].as_u64() > Some(0))
        .then_some(s)
    });
    eprintln!("created and running in {:.1?}: {}", created_at.elapsed(), status["ipAddress"]);
    assert!(status["ipAddress"].as_str().unwrap().starts_with("10.205.1."), "{status:#}");
    assert_eq!(status["tariff"]["name"], "Tiny");
    assert_eq!(status["os"]["name"], "BusyBox");
    let data = &status["stats"]["data"];
    assert_eq!(data["memory"]["max"], json!(256u64 << 20), "{data:#}");
    let usage = data["memory"]["usage"].as_f64().unwrap();
    assert!(usage > 0.0 && usage < 100.0, "{data:#}");
    let cpu = data["cpu"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&cpu), "cpu is a fraction: {data:#}");

    // The root password works inside: its hash in /etc/shadow matches.
    let check_password = |password: &str| {
        let shadow = in_guest(ns.as_deref(), &name, "grep '^root:' /etc/shadow").expect("shadow");
        let hash = shadow.split(':').nth(1).unwrap_or_default().to_string();
        let salt = hash.split('$').nth(2).unwrap_or_default().to_string();
        let out = Command::new("openssl").args(["passwd", "-6", "-salt", &salt, password]).output().expect("openssl");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hash, "root's hash in the guest");
    };
    check_password(&password);

    // Others see nothing of it; the administrator sees all.
    carol.expect("GET", &format!("/api/server/{id}"), None, 404);
    carol.expect("POST", &format!("/api/server/{id}/stop"), Some(&json!({})), 404);
    carol.expect("GET", &format!("/api/server/tasks/{upid}"), None, 404);
    assert_eq!(carol.expect("GET", "/api/server", None, 200), json!([]));
    let all = admin.expect("GET", "/api/server", None, 200);
    assert!(all.as_array().unwrap().iter().any(|s| s["id"] == id && s["owner"] == "bob"), "{all:#}");
    let me = bob.expect("GET", "/api/auth/me", None, 200);
    assert_eq!((me["user"]["username"].clone(), me["user"]["servers"][0]["id"].clone()), (json!("bob"), json!(id)));

    // A new password, shown once and working.
    let changed = bob.expect("POST", &format!("/api/server/{id}/password"), Some(&json!({})), 200);
    let new_password = changed["password"].as_str().expect("password").to_string();
    assert_ne!(new_password, password);
    check_password(&new_password);

    // Resize: memory live in the cgroup; the disk never shrinks.
    bob.expect("PUT", &format!("/api/server/{id}/resize"), Some(&json!({ "memory": 512 })), 200);
    let limit = ["memory.max", "memory.limit_in_bytes"].iter().find_map(|k| cgroup_value(ns.as_deref(), &name, k));
    assert_eq!(limit.as_deref(), Some("536870912"), "the container's memory limit");
    let shrink = bob.call("PUT", &format!("/api/server/{id}/resize"), Some(&json!({ "disk": 0 })));
    assert_eq!(shrink.status, 400, "{}", shrink.raw);
    assert_eq!(bob.expect("GET", &format!("/api/server/{id}"), None, 200)["memory"], 512);

    // Snapshot, change a file, roll back: the file is as it was.
    in_guest(ns.as_deref(), &name, "echo before > /root/f").unwrap();
    let snap = bob.expect(
        "POST",
        &format!("/api/server/{id}/snapshots"),
        Some(&json!({ "snapname": "s1", "description": "first" })),
        200,
    );
    bob.task_ok(snap["taskId"].as_str().unwrap(), Duration::from_secs(60));
    let list = bob.expect("GET", &format!("/api/server/{id}/snapshots"), None, 200);
    assert!(
        list["data"].as_array().unwrap().iter().any(|s| s["name"] == "s1" && s["description"] == "first"),
        "{list:#}"
    );
    in_guest(ns.as_deref(), &name, "echo after > /root/f").unwrap();
    let back =
        bob.expect("POST", &format!("/api/server/{id}/snapshots/rollback"), Some(&json!({ "snapname": "s1" })), 200);
    bob.task_ok(back["taskId"].as_str().unwrap(), Duration::from_secs(60));
    let content = wait_for("the guest back after the rollback", Duration::from_secs(30), || {
        in_guest(ns.as_deref(), &name, "cat /root/f").ok()
    });
    assert_eq!(content, "before");
    let gone = bob.expect("DELETE", &format!("/api/server/{id}/snapshots"), Some(&json!({ "snapname": "s1" })), 200);
    bob.task_ok(gone["taskId"].as_str().unwrap(), Duration::from_secs(60));

    // Power.
    let stop = bob.expect("POST", &format!("/api/server/{id}/stop"), Some(&json!({})), 200);
    assert_eq!((stop["status"].clone(), stop["action"].clone()), (json!("success"), json!("stop")));
    bob.task_ok(stop["taskId"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(bob.expect("GET", &format!("/api/server/{id}/status"), None, 200)["status"], "stopped");
    let start = bob.expect("POST", &format!("/api/server/{id}/start"), Some(&json!({})), 200);
    bob.task_ok(start["taskId"].as_str().unwrap(), Duration::from_secs(60));
    let restart = bob.expect("POST", &format!("/api/server/{id}/restart"), Some(&json!({})), 200);
    bob.task_ok(restart["taskId"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(bob.expect("GET", &format!("/api/server/{id}/status"), None, 200)["status"], "running");

    // Delete: the container is gone, and so is the server.
    let deleted = bob.expect("DELETE", &format!("/api/server/{id}"), None, 200);
    assert_eq!(deleted["status"], "deleted");
    bob.task_ok(deleted["taskId"].as_str().unwrap(), Duration::from_secs(60));
    wait_for("the server gone", Duration::from_secs(20), || {
        (bob.call("GET", &format!("/api/server/{id}"), None).status == 404).then_some(())
    });
    assert!(!container_exists(&name), "container {name} still exists");
    let task: Value = admin.expect("GET", &format!("/api/server/tasks/{upid}"), None, 200);
    assert_eq!(task["exitstatus"], "OK", "tasks outlive their server: {task:#}");
    eprintln!("a_server_lives_its_whole_life_through_the_api: {:.1?}", t0.elapsed());
}

#[test]
fn bad_input_is_a_4xx_with_an_error_body() {
    let fleet = Fleet::start();
    let admin = Vps::login(&fleet.api, "admin", &fleet.api.password.clone());
    let wrong = fleet.api.request("POST", "/api/auth/login", Some(br#"{"email":"admin","password":"nope"}"#), None);
    assert_eq!((wrong.status, wrong.body["error"].is_string(), wrong.body["message"].is_string()), (401, true, true));
    for (method, path, body, status) in [
        ("POST", "/api/server/create", json!({}), 400),
        ("POST", "/api/server/create", json!({ "osId": 9, "tariffId": 9 }), 400),
        ("GET", "/api/server/abc", json!(null), 400),
        ("GET", "/api/server/99", json!(null), 404),
        ("POST", "/api/tariff", json!({ "name": "x" }), 400),
        ("POST", "/api/os", json!({ "name": "x", "template": "windows" }), 400),
        ("GET", "/api/server/tasks/UPID:nope", json!(null), 404),
    ] {
        let body = (!body.is_null()).then_some(&body);
        let reply = admin.call(method, path, body);
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.raw);
        assert!(reply.body["error"].is_string(), "{method} {path}: {}", reply.raw);
    }
    // No node runs containers: creating says so instead of failing later.
    let os = admin.expect("POST", "/api/os", Some(&json!({ "name": "BusyBox", "template": "busybox" })), 201);
    let tariff =
        admin.expect("POST", "/api/tariff", Some(&json!({ "name": "T", "cores": 1, "memory": 128, "disk": 1 })), 201);
    let reply = admin.call("POST", "/api/server/create", Some(&json!({ "osId": os["id"], "tariffId": tariff["id"] })));
    assert_eq!(reply.status, 503, "{}", reply.raw);
    assert!(reply.body["error"].as_str().unwrap().contains("no node that runs containers"), "{}", reply.raw);
    let registration = fleet.api.request(
        "POST",
        "/api/auth/register",
        Some(br#"{"username":"x","email":"x@y","password":"12345678"}"#),
        None,
    );
    assert_eq!(registration.status, 403, "registration is closed by default: {}", registration.raw);
}
