//! The fleet comes up: three agents enroll and report real metrics of their hosts.

use std::time::Duration;

use flotilla_tests::harness::{wait_for, Fleet};
use serde_json::Value;

fn host_mem_total() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kb * 1024
}

#[test]
fn three_agents_enroll_and_report_real_metrics() {
    let mut fleet = Fleet::start();
    let agents: Vec<usize> = ["nl-1", "de-1", "fi-1"].iter().map(|n| fleet.add_agent(n)).collect();
    let ids: Vec<i64> = agents.iter().map(|i| fleet.agent(*i).node_id).collect();
    fleet.wait_connected(&ids, Duration::from_secs(15));

    // Metrics arrive within a couple of intervals.
    let servers = wait_for("metrics from all three agents", Duration::from_secs(15), || {
        let reply = fleet.api.get("/api/v1/servers/status");
        let servers = reply.body["servers"].as_array()?.clone();
        (servers.len() == 3 && servers.iter().all(|s| !s["system"].is_null())).then_some(servers)
    });
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    for s in &servers {
        assert_eq!(s["available"], Value::Bool(true), "{s}");
        let sys = &s["system"];
        assert_eq!(sys["mem"]["total"].as_u64().unwrap(), host_mem_total(), "same kernel, same MemTotal");
        assert!(sys["mem"]["current"].as_u64().unwrap() > 0);
        assert!(sys["disk"]["total"].as_u64().unwrap() > 0);
        assert!(sys["uptime"].as_u64().unwrap() > 0);
        assert_eq!(sys["loads"].as_array().unwrap().len(), 3);
        let cpu = sys["cpu"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&cpu));
        assert_eq!(s["host"]["cpu_cores"].as_u64().unwrap(), cores);
        // Each agent supervises the v2ray it finds on PATH (installed by .ci/run).
        let expected = if flotilla_tests::traffic::v2ray_binary().is_some() { "running" } else { "not_installed" };
        let core = wait_for("the core state", Duration::from_secs(20), || {
            let one = fleet.api.get(&format!("/api/v1/servers/{}/status", s["node_id"])).body;
            (one["xray"]["state"] == expected).then_some(one["xray"].clone())
        });
        assert_eq!(core["running"], Value::Bool(expected == "running"), "{core}");
        assert!(s["network"]["download"].is_u64());
    }
    // Each agent is seen from its own host's address.
    if fleet.namespaced() {
        let nodes = fleet.api.get("/api/v1/nodes").body;
        for (i, idx) in agents.iter().enumerate() {
            let addr = fleet.agent(*idx).host.addr.unwrap().to_string();
            let node = nodes.as_array().unwrap().iter().find(|n| n["id"] == ids[i]).unwrap();
            assert_eq!(node["ip"], Value::String(addr), "{node}");
            assert_eq!(node["connected"], Value::Bool(true));
        }
    }
    // Heartbeat RTT is measured for every node.
    for id in &ids {
        let row = fleet.availability(*id).unwrap();
        let latency = wait_for("latency", Duration::from_secs(5), || fleet.availability(*id)?["latency_ms"].as_f64());
        assert!(latency > 0.0 && latency < 1000.0, "{row}");
        assert_eq!(row["status_code"], 200);
    }
}
