//! The external API's services and server status against a real systemd: an agent runs inside
//! a Debian LXC container with systemd as PID 1 (see `flotilla_tests::lxc`), enrolled to the
//! test's controller, and manages units written into the container (`flt-demo.service` running
//! `sleep infinity`, `flt-fail.service` that fails) through the signed API.
//!
//! The controller runs in the fleet's network namespace; the container reaches it through the
//! host (lxc-net's NAT). Skips without root, LXC or namespaces.

use std::time::Duration;

use flotilla_tests::harness::{bin_dir, wait_for, Fleet};
use flotilla_tests::lxc::{self, Container};
use flotilla_tests::panelica::{create_key, External};
use serde_json::Value;

const DEMO_UNIT: &str = "[Unit]\nDescription=Flotilla demo service\n\n[Service]\nExecStart=/bin/sleep infinity\n\n\
[Install]\nWantedBy=multi-user.target\n";
const FAIL_UNIT: &str =
    "[Unit]\nDescription=Flotilla failing service\n\n[Service]\nType=oneshot\nExecStart=/bin/false\nRestart=no\n";
const AGENT_TOML: &str = "[services]\nallow = [\"flt-demo\", \"flt-fail.service\", \"nginx\", \"mysql\"]\n\
watch_interval = \"1s\"\n";

fn service<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array().expect("data is an array").iter().find(|s| s["name"] == name)
}

fn main_pid(c: &Container, unit: &str) -> u64 {
    c.show(unit, "MainPID").parse().unwrap_or(0)
}

#[test]
fn services_and_status_on_a_real_systemd() {
    if let Some(why) = lxc::unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let fleet = Fleet::start();
    let Some(net) = fleet.net() else {
        eprintln!("skipping: the controller must run in a network namespace the containers can reach");
        return;
    };
    let controller = format!("{}:4433", net.controller_http_ip());
    let c = Container::start("svc");
    c.wait_ready(Duration::from_secs(120));

    // The agent binary, the units and the agent's config.
    let pid = lxc::run_bounded(Duration::from_secs(10), "lxc-info", &["-n", &c.name, "-pH"], None);
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    let root = format!("/proc/{pid}/root");
    std::fs::copy(bin_dir().join("flotilla-agent"), format!("{root}/usr/local/bin/flotilla-agent"))
        .expect("copy agent");
    std::fs::write(format!("{root}/etc/systemd/system/flt-demo.service"), DEMO_UNIT).unwrap();
    std::fs::write(format!("{root}/etc/systemd/system/flt-fail.service"), FAIL_UNIT).unwrap();
    std::fs::create_dir_all(format!("{root}/etc/flotilla")).unwrap();
    std::fs::write(format!("{root}/etc/flotilla/agent.toml"), AGENT_TOML).unwrap();
    c.ok("chmod 755 /usr/local/bin/flotilla-agent && systemctl daemon-reload && systemctl enable --now flt-demo.service \
          && systemctl start dbus.socket dbus.service");

    let (node_id, token) = fleet.create_node("svc-1");
    c.ok(&format!(
        "flotilla-agent --data-dir /var/lib/flotilla-agent --config /etc/flotilla/agent.toml enroll {token} \
         --controller {controller}"
    ));
    c.ok(&format!(
        "systemd-run --unit=flt-agent -p Environment=RUST_LOG=info,flotilla_agent=debug -p Environment=NO_COLOR=1 \
         /usr/local/bin/flotilla-agent --data-dir /var/lib/flotilla-agent --config /etc/flotilla/agent.toml run \
         --controller {controller} --local-api off --metrics-interval 1s"
    ));
    let agent_log = || c.sh("journalctl -u flt-agent --no-pager -o cat 2>&1").1;
    let connected = std::time::Instant::now();
    while !fleet.availability(node_id).is_some_and(|r| r["available"] == Value::Bool(true)) {
        assert!(connected.elapsed() < Duration::from_secs(40), "agent never connected:\n{}", agent_log());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(agent_log().contains("services API on"), "{}", agent_log());

    let ext = External::new(&fleet.api, create_key(&fleet, "svc", "*:*", &[]));

    // List: the allowed units that exist, in the document's shape.
    let list = ext.expect("GET", "/v1/server/services", None, 200);
    let demo = service(&list, "flt-demo").unwrap_or_else(|| panic!("flt-demo listed: {list}"));
    assert_eq!(demo["unit"], "flt-demo.service");
    assert_eq!(demo["display_name"], "Flotilla demo service");
    assert_eq!(demo["status"], "running");
    assert_eq!(demo["active_state"], "active");
    assert_eq!(demo["sub_state"], "running");
    assert_eq!(demo["enabled"], true);
    assert_eq!(demo["pid"].as_u64(), Some(main_pid(&c, "flt-demo")));
    assert!(demo["uptime_seconds"].as_u64().is_some() && demo["uptime"].is_string(), "{demo}");
    assert!(demo["cpu_percent"].as_f64().is_some_and(|p| (0.0..=100.0).contains(&p)), "cpu: {demo}");
    assert!(demo["memory_bytes"].as_u64().is_some_and(|m| m > 0), "memory: {demo}");
    let fail = service(&list, "flt-fail").unwrap_or_else(|| panic!("flt-fail listed: {list}"));
    assert_eq!(fail["status"], "stopped");
    assert!(service(&list, "nginx").is_none() && service(&list, "mysql").is_none(), "not installed: {list}");
    assert!(service(&list, "ssh").is_none(), "not allowed: {list}");
    // node_id selects the node.
    let by_id = ext.expect("GET", &format!("/v1/server/services?node_id={node_id}"), None, 200);
    assert!(service(&by_id, "flt-demo").is_some());
    ext.expect("GET", "/v1/server/services?node_id=999999", None, 404);

    // Stop, start, restart (a new main PID each start).
    let stopped = ext.expect("POST", "/v1/server/services/flt-demo/stop", None, 200);
    assert_eq!((stopped["status"].as_str(), stopped["pid"].as_u64()), (Some("stopped"), None), "{stopped}");
    assert_eq!(c.show("flt-demo", "ActiveState"), "inactive");
    let started = ext.expect("POST", "/v1/server/services/flt-demo/start", None, 200);
    assert_eq!(started["status"], "running", "{started}");
    let pid1 = main_pid(&c, "flt-demo");
    assert!(pid1 != 0 && started["pid"].as_u64() == Some(pid1), "{started} vs {pid1}");
    let restarted = ext.expect("POST", "/v1/server/services/flt-demo.service/restart", Some("{}"), 200);
    let pid2 = main_pid(&c, "flt-demo");
    assert!(pid2 != 0 && pid2 != pid1, "restart kept PID {pid1}");
    assert_eq!(restarted["pid"].as_u64(), Some(pid2), "{restarted}");
    assert_eq!(restarted["job_result"], "done");

    // Outside the allow-list: 403; unknown: 404; a key without the scope: 403 naming it.
    let reply = ext.call("POST", "/v1/server/services/ssh/restart", None);
    assert_eq!((reply.status, reply.body["code"].as_str()), (403, Some("SERVICE_NOT_ALLOWED")), "{}", reply.raw);
    let reply = ext.call("POST", "/v1/server/services/systemd-journald/stop", None);
    assert_eq!(reply.status, 403, "{}", reply.raw);
    assert_eq!(c.show("systemd-journald", "ActiveState"), "active");
    let reply = ext.call("POST", "/v1/server/services/flt-nope/start", None);
    assert_eq!((reply.status, reply.body["code"].as_str()), (404, Some("SERVICE_NOT_FOUND")), "{}", reply.raw);
    let reply = ext.call("POST", "/v1/server/services/..%2Fetc/start", None);
    assert_eq!(reply.status, 404, "{}", reply.raw);
    let reader = External::new(&fleet.api, create_key(&fleet, "svc-read", "services:read", &[]));
    reader.expect("GET", "/v1/server/services", None, 200);
    let reply = reader.call("POST", "/v1/server/services/flt-demo/restart", None);
    assert_eq!((reply.status, reply.body["required_scope"].as_str()), (403, Some("services:restart")), "{}", reply.raw);
    assert_eq!(main_pid(&c, "flt-demo"), pid2, "a refused restart restarted");

    // A unit that fails: the start answers 502 and SERVICE_FAILED reaches the controller once.
    let reply = ext.call("POST", "/v1/server/services/flt-fail/start", None);
    assert_eq!((reply.status, reply.body["code"].as_str()), (502, Some("SERVICE_ACTION_FAILED")), "{}", reply.raw);
    assert_eq!(c.show("flt-fail", "ActiveState"), "failed");
    wait_for("SERVICE_FAILED at the controller", Duration::from_secs(20), || {
        let log = fleet.controller_log_text();
        log.lines().any(|l| l.contains("service failed on node") && l.contains("flt-fail.service")).then_some(())
    });
    let log = agent_log();
    assert!(log.contains("service failed") && log.contains("flt-fail.service"), "{log}");
    let list = ext.expect("GET", "/v1/server/services", None, 200);
    assert_eq!(service(&list, "flt-fail").unwrap()["status"], "failed");
    std::thread::sleep(Duration::from_secs(3));
    let announced = fleet
        .controller_log_text()
        .lines()
        .filter(|l| l.contains("service failed on node") && l.contains("flt-fail.service"))
        .count();
    assert_eq!(announced, 1, "one event per failure");

    // Server status: the document's fields from the node's facts and metrics.
    let status = ext.expect("GET", "/v1/server/status", None, 200);
    assert_eq!(status["hostname"].as_str(), Some(c.ok("hostname").as_str()), "{status}");
    assert!(status["os"].as_str().is_some_and(|o| o.contains("Debian")), "{status}");
    assert!(status["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{status}");
    // The official MCP server's "server health" recipe asks /v1/server/metrics: the same figures.
    let metrics = ext.expect("GET", "/v1/server/metrics", None, 200);
    assert_eq!((&metrics["hostname"], &metrics["cpu"]["cores"]), (&status["hostname"], &status["cpu"]["cores"]));
    assert!(status["uptime_seconds"].as_u64().is_some_and(|u| u > 0), "{status}");
    assert!(status["cpu"]["cores"].as_u64().is_some_and(|n| n >= 1), "{status}");
    assert!(status["cpu"]["usage_percent"].as_f64().is_some_and(|p| (0.0..=100.0).contains(&p)), "{status}");
    let (total, used) = (status["memory"]["total_mb"].as_u64().unwrap(), status["memory"]["used_mb"].as_u64().unwrap());
    assert!(total > 0 && used <= total, "{status}");
    assert!(status["memory"]["usage_percent"].as_f64().is_some(), "{status}");
    let disk = &status["disk"];
    assert!(disk["total_gb"].as_f64().is_some_and(|t| t > 0.0), "{status}");
    assert!(disk["used_gb"].as_f64().unwrap() <= disk["total_gb"].as_f64().unwrap(), "{status}");
    assert_eq!(status["load_average"].as_array().map(Vec::len), Some(3), "{status}");
    assert!(status["network"]["rx_bytes"].as_u64().is_some(), "{status}");
    let reply = reader.call("GET", "/v1/server/status", None);
    assert_eq!((reply.status, reply.body["required_scope"].as_str()), (403, Some("server:read")), "{}", reply.raw);
}
