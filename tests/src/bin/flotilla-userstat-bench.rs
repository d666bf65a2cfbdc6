//! `flotilla-userstat-bench`: figures of the per-host user API (v2ray-stat) on a real core.
//!
//! 1. `bulk_add_users` of an N-line file (default 10,000) through the agent's local API, on a
//!    v2ray or Xray the agent's own driver supervises: wall time, and proof the core did not
//!    restart (same pid before and after).
//! 2. `GET /api/v1/stats` with those N users: latency over repeated requests, body size.
//! 3. Access-log tailing: M synthetic lines (default 1,000,000) in the cores' format, read,
//!    parsed and counted per user with the IP limit checked for N users after every read, as the
//!    driver does each second: lines per second.
//!
//! Binds 127.0.0.1 only; the core, its config and every temp file go away at the end. Figures are
//! printed, never asserted.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use flotilla_agent::drivers::core::access_log::{self, AccessTracker, Tail};
use flotilla_agent::drivers::core::{CoreDriver, CoreMode, CoreSettings, ProxyCore};
use flotilla_agent::local_api::{self, LocalApiSettings};
use flotilla_agent::state::StateStore;
use flotilla_protocol::proxy::{InboundSpec, ProxyState};
use flotilla_tests::harness::free_port;

/// Per-host user API figures.
#[derive(Debug, Parser)]
#[command(name = "flotilla-userstat-bench", version)]
struct Args {
    /// Users in the bulk-add file.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// `GET /api/v1/stats` requests timed.
    #[arg(long, default_value_t = 20)]
    stats_requests: usize,
    /// Synthetic access log lines.
    #[arg(long, default_value_t = 1_000_000)]
    log_lines: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let store = StateStore::open(&dir.path().join("agent"))?;
    let settings = CoreSettings { mode: CoreMode::Supervised, ..CoreSettings::default() };
    let Some(core) = CoreDriver::start(&settings, store, &dir.path().join("agent")).await? else {
        bail!("no proxy core on PATH (install v2ray or xray)");
    };
    let result = run(&args, dir.path(), core.clone()).await;
    core.stop().await;
    result
}

async fn run(args: &Args, dir: &std::path::Path, core: Arc<CoreDriver>) -> anyhow::Result<()> {
    let port = free_port();
    let inbound = InboundSpec {
        tag: "vless-in".into(),
        listen: "127.0.0.1".into(),
        port,
        protocol: "vless".into(),
        settings: r#"{"decryption":"none"}"#.into(),
        stream_settings: r#"{"network":"tcp","security":"none"}"#.into(),
        sniffing: "{}".into(),
        enable: true,
    };
    let report = core.apply(ProxyState { revision: 1, inbounds: vec![inbound], clients: vec![] }).await;
    if !report.failures.is_empty() {
        bail!("core refused the inbound: {:?}", report.failures);
    }
    let status = core.current_status().await;
    println!("core: {} {}", status.flavor.map(|f| f.as_str()).unwrap_or("?"), status.version);

    let api_port = free_port();
    let api_settings = LocalApiSettings {
        listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], api_port))),
        ..LocalApiSettings::default()
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let api = tokio::spawn(local_api::serve(api_settings, Some(core.clone() as Arc<dyn ProxyCore>), stop_rx));
    let base = format!("http://127.0.0.1:{api_port}");
    wait_up(&base).await?;

    // 1. Bulk add.
    let file = dir.join("users.txt");
    let mut f = std::fs::File::create(&file)?;
    for i in 0..args.users {
        writeln!(f, "bench-{i:05}")?;
    }
    drop(f);
    let pid_before = core_pid(dir);
    let started = Instant::now();
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "600", "-X", "POST"])
        .arg(format!("{base}/api/v1/bulk_add_users"))
        .arg("-F")
        .arg(format!("users_file=@{}", file.display()))
        .output()
        .await
        .context("curl")?;
    let took = started.elapsed();
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    let users = core.user_stats().await.users.len();
    println!(
        "\n[1] bulk_add_users, {} lines: HTTP {code} in {:.2} s ({:.0} users/s); {users} users on the node; core pid {} → {} ({})",
        args.users,
        took.as_secs_f64(),
        args.users as f64 / took.as_secs_f64(),
        pid_before.as_deref().unwrap_or("?"),
        core_pid(dir).as_deref().unwrap_or("?"),
        if pid_before == core_pid(dir) { "no restart" } else { "RESTARTED" },
    );

    // 2. The stats table with every user.
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..args.stats_requests {
        let started = Instant::now();
        let body = agent.get(&format!("{base}/api/v1/stats")).call()?.into_string()?;
        times.push(started.elapsed());
        size = body.len();
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
    println!(
        "[2] GET /api/v1/stats with {users} users, {} requests: p50 {:.1} ms, p99 {:.1} ms, {} KiB each",
        times.len(),
        pct(0.5),
        pct(0.99),
        size / 1024
    );

    // 3. Access log tailing.
    let log = dir.join("bench-access.log");
    let mut tail = Tail::from_end(&log, u64::MAX);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&log)?);
    for i in 0..args.log_lines {
        let user = i % args.users.max(1);
        writeln!(
            f,
            "2026/11/30 17:13:39 10.{}.{}.{}:{} accepted tcp:site-{}.example.com:443 [direct] email: bench-{user:05}",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255,
            10_000 + i % 50_000,
            i % 1000
        )?;
    }
    drop(f);
    let limited: std::collections::HashSet<String> = (0..args.users).map(|i| format!("bench-{i:05}")).collect();
    let mut tracker = AccessTracker::default();
    let started = Instant::now();
    let (mut read, mut over) = (0usize, 0usize);
    loop {
        let lines = tail.read_new()?;
        if lines.is_empty() {
            break;
        }
        read += lines.len();
        for line in &lines {
            if let Some(access) = access_log::parse_line(line) {
                tracker.record(access, 0);
            }
        }
        over = tracker.over_limit(|email| limited.contains(email).then_some(2)).len();
        let _ = tracker.take_destinations();
    }
    let took = started.elapsed();
    println!(
        "[3] access log: {read} lines read, parsed and counted in {:.2} s ({:.0} lines/s), IP limit checked for {} users after each 8 MiB read ({over} over their limit)",
        took.as_secs_f64(),
        read as f64 / took.as_secs_f64(),
        args.users
    );

    let _ = stop.send(true);
    let _ = api.await;
    Ok(())
}

async fn wait_up(base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ureq::get(&format!("{base}/")).call().is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("local API did not come up on {base}")
}

fn core_pid(dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(dir.join("agent").join("core.pid")).ok().map(|s| s.trim().to_string())
}
