//! `flotilla-wg-bench`: figures of WireGuard through the CandyPanel API, on a real controller and
//! a real agent driving wireguard-go in a network namespace of its own.
//!
//! 1. Create N clients (default 1,000) one API call after another; each call answers once the
//!    agent applied the peer, so the time is "API to peer on the device". Per-call latency
//!    (p50, p99, max), total, and a check that the device has every peer.
//! 2. Fill up to M clients (default 5,000), then time `GET /api/data` (what CandyPanel's UI polls
//!    every 5 s): latency over repeated requests, body size, controller RSS.
//!
//! Needs root (namespaces) and wireguard-go; everything it starts goes away at the end. Figures
//! are printed, never asserted.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use flotilla_tests::harness::{Fleet, FleetOptions};
use flotilla_tests::wireguard::{self, Candy};
use serde_json::json;

/// WireGuard / CandyPanel API figures.
#[derive(Debug, Parser)]
#[command(name = "flotilla-wg-bench", version)]
struct Args {
    /// Clients created one call at a time, timed.
    #[arg(long, default_value_t = 1_000)]
    clients: usize,
    /// Clients in place when `/api/data` is timed (filled with 4 calls in flight).
    #[arg(long, default_value_t = 5_000)]
    data_clients: usize,
    /// `GET /api/data` requests timed.
    #[arg(long, default_value_t = 20)]
    data_requests: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn create(candy: &Candy, name: &str) -> anyhow::Result<()> {
    let reply = candy.manage(&json!({
        "resource": "client", "action": "create", "name": name, "expires": "2099-01-01",
        "traffic": "0", "wg_id": 0,
    }));
    if reply.status != 200 {
        bail!("create {name}: {}", reply.raw);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Err(why) = wireguard::available() {
        bail!("flotilla-wg-bench {why}");
    }
    let mut fleet = Fleet::start_with(FleetOptions::default());
    let agent = fleet.add_wireguard_agent("wg-bench", wireguard::AGENT_CONFIG);
    let node_id = fleet.agent(agent).node_id;
    let server_ip = fleet.agent(agent).host.addr.map(|a| a.to_string()).unwrap_or_else(|| "127.0.0.1".into());
    fleet.wait_connected(&[node_id], Duration::from_secs(30));
    let mut candy = Candy::new(&fleet.api);
    candy.install(node_id, &server_ip, "10.90.0.1/18", "bench-admin", "bench-password");
    candy.login("bench-admin", "bench-password");

    println!("== create {} clients, one call at a time (API to peer applied)", args.clients);
    let mut latencies = Vec::with_capacity(args.clients);
    let started = Instant::now();
    for i in 0..args.clients {
        let t = Instant::now();
        create(&candy, &format!("bench-{i}"))?;
        latencies.push(t.elapsed());
    }
    let total = started.elapsed();
    latencies.sort();
    println!(
        "  total {:.2} s ({:.0} clients/s); per call p50 {}, p99 {}, max {}",
        total.as_secs_f64(),
        args.clients as f64 / total.as_secs_f64(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
    let peers = fleet.agent_wg(agent, &["show", "wg0", "peers"]).map_err(anyhow::Error::msg)?;
    let on_device = peers.lines().filter(|l| !l.trim().is_empty()).count();
    println!("  peers on the agent's wg0: {on_device}");

    if args.data_clients > args.clients {
        let fill = Instant::now();
        let next = std::sync::atomic::AtomicUsize::new(args.clients);
        std::thread::scope(|s| -> anyhow::Result<()> {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| -> anyhow::Result<()> {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if i >= args.data_clients {
                                return Ok(());
                            }
                            create(&candy, &format!("bench-{i}"))?;
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().map_err(|_| anyhow::anyhow!("a fill worker panicked"))??;
            }
            Ok(())
        })?;
        println!(
            "== filled to {} clients in {:.1} s (4 calls in flight)",
            args.data_clients,
            fill.elapsed().as_secs_f64()
        );
    }

    println!("== GET /api/data with {} clients, {} requests", args.data_clients.max(args.clients), args.data_requests);
    let mut latencies = Vec::with_capacity(args.data_requests);
    let mut size = 0;
    for _ in 0..args.data_requests {
        let t = Instant::now();
        let reply = candy.api.request("GET", "/api/data", None, Some(&candy.bearer()));
        latencies.push(t.elapsed());
        if reply.status != 200 {
            bail!("/api/data: {}", reply.raw);
        }
        size = reply.raw.len();
        let listed = reply.body["data"]["clients"].as_array().map(Vec::len).unwrap_or(0);
        if listed != args.data_clients.max(args.clients) {
            bail!("/api/data listed {listed} clients");
        }
    }
    latencies.sort();
    println!(
        "  p50 {}, p99 {}, max {}; body {:.1} KiB",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        size as f64 / 1024.0
    );
    let pid = fleet.controller_pid().context("controller pid")?;
    if let Some(kib) = rss_kib(pid) {
        println!("  controller RSS {:.1} MiB", kib as f64 / 1024.0);
    }
    Ok(())
}
