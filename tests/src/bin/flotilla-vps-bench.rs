//! `flotilla-vps-bench`: figures of the VPS API on a real controller and a real agent running LXC
//! containers (busybox template) in a network namespace of its own.
//!
//! Orders N servers (default 20) one `POST /api/server/create` after another and times, per
//! server, the API answer and the way to `running` with an address (the create task's end as the
//! node reports it): p50, p99, max and total. Then deletes them all and times that too.
//!
//! Needs root (namespaces), LXC and busybox-static; every container it creates is destroyed at the
//! end. Figures are printed, never asserted.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use flotilla_tests::harness::Fleet;
use flotilla_tests::vps::{self, Vps};
use serde_json::json;

/// VPS API figures.
#[derive(Debug, Parser)]
#[command(name = "flotilla-vps-bench", version)]
struct Args {
    /// Servers created (and deleted), one order after another.
    #[arg(long, default_value_t = 20)]
    servers: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn figures(what: &str, mut d: Vec<Duration>) {
    d.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!(
        "  {what:<34} p50 {:>8}  p99 {:>8}  max {:>8}",
        ms(percentile(&d, 0.5)),
        ms(percentile(&d, 0.99)),
        ms(d.last().copied().unwrap_or_default())
    );
}

/// Destroys what the run created, however it ends.
struct Cleanup {
    ns: Option<String>,
    names: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        vps::destroy(self.ns.as_deref(), &self.names);
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Err(why) = vps::available() {
        println!("flotilla-vps-bench: skipped: {why}");
        return Ok(());
    }
    let mut fleet = Fleet::start();
    let agent = fleet.add_container_agent("vps-bench", &vps::agent_config(9));
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(20));
    let mut cleanup = Cleanup { ns: fleet.agent(agent).host.ns.clone(), names: vec![] };
    let admin = Vps::login(&fleet.api, "admin", &fleet.api.password.clone());
    let os = admin.expect("POST", "/api/os", Some(&json!({ "name": "BusyBox", "template": "busybox" })), 201);
    let tariff = json!({ "name": "Bench", "cores": 1, "memory": 128, "disk": 1 });
    let tariff = admin.expect("POST", "/api/tariff", Some(&tariff), 201);
    let order = json!({ "osId": os["id"], "tariffId": tariff["id"] });

    println!("flotilla-vps-bench: {} busybox servers on one node, one order after another", args.servers);
    let (mut answers, mut running) = (vec![], vec![]);
    let mut ids = vec![];
    let total = Instant::now();
    for _ in 0..args.servers {
        let start = Instant::now();
        let reply = admin.call("POST", "/api/server/create", Some(&order));
        if reply.status != 201 {
            bail!("create: {}", reply.raw);
        }
        answers.push(start.elapsed());
        let id = reply.body["id"].as_i64().context("id")?;
        let server = admin.expect("GET", &format!("/api/server/{id}"), None, 200);
        cleanup.names.push(server["container"].as_str().context("container")?.to_string());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = admin.expect("GET", &format!("/api/server/{id}"), None, 200);
            if s["status"] == "running" && s["ipAddress"].is_string() {
                break;
            }
            if s["status"] == "error" || Instant::now() > deadline {
                bail!("server {id} did not come up: {s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        running.push(start.elapsed());
        ids.push(id);
    }
    let created_in = total.elapsed();
    figures("create: API answer", answers);
    figures("create: order to running + address", running);
    println!(
        "  {:<34} {:.1} s ({:.2} s per server)",
        "all created in",
        created_in.as_secs_f64(),
        created_in.as_secs_f64() / args.servers as f64
    );

    let mut deletes = vec![];
    for id in ids {
        let start = Instant::now();
        let deleted = admin.expect("DELETE", &format!("/api/server/{id}"), None, 200);
        admin.task_ok(deleted["taskId"].as_str().context("taskId")?, Duration::from_secs(60));
        deletes.push(start.elapsed());
    }
    figures("delete: order to container gone", deletes);
    Ok(())
}
