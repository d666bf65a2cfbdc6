//! `flotilla-bench`: one process simulating N agents against one real controller.
//!
//! Every simulated agent is enrolled for real (its own key, CSR and certificate), then holds a
//! real mutual-TLS QUIC link that answers heartbeats, exactly like `flotilla-agent` minus the
//! metrics driver. Reports connect time, controller RSS and CPU at steady state, and the heartbeat
//! RTT the controller measured (p50/p99, from `/api/v1/servers/availability`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use flotilla_agent::link::{self, ServeContext};
use flotilla_protocol::facts::HostFacts;
use flotilla_protocol::token::JoinToken;
use flotilla_tests::harness::{basic_header, free_port};
use serde_json::Value;
use tokio::sync::Semaphore;

/// Simulate N agents against a real controller and print figures.
#[derive(Debug, Parser)]
#[command(name = "flotilla-bench", version)]
struct Args {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// How long to measure the steady state after everyone is connected.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    settle: Duration,
    /// Controller heartbeat interval (production default 5s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    heartbeat: Duration,
    /// Client UDP endpoints the simulated agents are spread over.
    #[arg(long, default_value_t = 8)]
    endpoints: usize,
    /// Handshakes (enrollments, connects) in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Directory with the flotilla-controller binary (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

struct Controller {
    child: Child,
    http: String,
    quic: SocketAddr,
    auth: String,
    _dir: tempfile::TempDir,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_controller(bin: &Path, heartbeat: Duration) -> anyhow::Result<Controller> {
    let dir = tempfile::Builder::new().prefix("flotilla-bench-").tempdir()?;
    let (h, q) = (free_port(), free_port());
    let config = dir.path().join("controller.toml");
    std::fs::write(&config, "")?;
    let log = std::fs::File::create(dir.path().join("controller.log"))?;
    let child = Command::new(bin.join("flotilla-controller"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .args(["--http", &format!("127.0.0.1:{h}"), "--quic", &format!("127.0.0.1:{q}")])
        .args(["--public-addr", &format!("127.0.0.1:{q}")])
        .args(["--heartbeat-interval", &format!("{}ms", heartbeat.as_millis())])
        .args(["--admin-user", "bench", "--admin-password", "bench-password"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start flotilla-controller")?;
    let c = Controller {
        child,
        http: format!("http://127.0.0.1:{h}"),
        quic: format!("127.0.0.1:{q}").parse()?,
        auth: basic_header("bench", "bench-password"),
        _dir: dir,
    };
    let start = Instant::now();
    while ureq::get(&format!("{}/api/v1/health", c.http)).call().is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("controller did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(c)
}

/// (RSS, peak RSS) in bytes, and CPU ticks (utime + stime) of a process.
fn proc_usage(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok((kib("VmRSS:") * 1024, kib("VmHWM:") * 1024, ticks))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Installed next to this binary (target/<profile>/), unless told otherwise.
    let bin = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?.parent().context("bench binary has no directory")?.to_path_buf(),
    };
    let ctl = start_controller(&bin, args.heartbeat)?;
    let pid = ctl.child.id();
    println!(
        "flotilla-bench: {} simulated agents, heartbeat {:?}, {} client endpoints",
        args.agents, args.heartbeat, args.endpoints
    );
    let idle_rss = proc_usage(pid)?.0;

    // 1. Nodes, through the real API (several client threads).
    let t = Instant::now();
    let tokens = create_nodes(&ctl, args.agents)?;
    println!("  create {} nodes via POST /api/v1/nodes: {:.2} s", tokens.len(), t.elapsed().as_secs_f64());

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(simulate(&args, &ctl, tokens, pid, idle_rss));
    drop(ctl);
    result
}

fn create_nodes(ctl: &Controller, n: usize) -> anyhow::Result<Vec<String>> {
    let threads = 8.min(n.max(1));
    let per = n.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (http, auth) = (ctl.http.clone(), ctl.auth.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<String>> {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
                let mut out = vec![];
                for i in (t * per)..((t + 1) * per).min(n) {
                    let body: Value = agent
                        .post(&format!("{http}/api/v1/nodes"))
                        .set("Authorization", &auth)
                        .send_json(serde_json::json!({ "name": format!("sim-{i}") }))?
                        .into_json()?;
                    out.push(body["join_token"].as_str().context("join_token")?.to_string());
                }
                Ok(out)
            })
        })
        .collect();
    let mut tokens = vec![];
    for h in handles {
        tokens.extend(h.join().map_err(|_| anyhow::anyhow!("node thread panicked"))??);
    }
    Ok(tokens)
}

async fn simulate(args: &Args, ctl: &Controller, tokens: Vec<String>, pid: u32, idle_rss: u64) -> anyhow::Result<()> {
    let limit = Arc::new(Semaphore::new(args.concurrency));
    let addr = ctl.quic.to_string();

    // 2. Real enrollments: key generated here, CSR signed by the controller.
    let t = Instant::now();
    let mut tasks = vec![];
    for (i, token) in tokens.into_iter().enumerate() {
        let (limit, addr) = (limit.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.expect("semaphore");
            let token = JoinToken::parse(&token)?;
            let facts = HostFacts { hostname: format!("sim-{i}"), cpu_cores: 1, ..Default::default() };
            anyhow::Ok(flotilla_agent::enroll::enroll_identity(&token, Some(&addr), facts).await?.identity)
        }));
    }
    let mut identities = vec![];
    for task in tasks {
        identities.push(task.await??);
    }
    println!("  enroll {} agents (QUIC + CSR signing): {:.2} s", identities.len(), t.elapsed().as_secs_f64());

    // 3. Links: connect everyone, measure until the last Welcome.
    let endpoints: Vec<quinn::Endpoint> = (0..args.endpoints.max(1))
        .map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")))
        .collect::<Result<_, _>>()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ctx = ServeContext { state: None, sampler: None, metrics_interval: Duration::from_secs(3600) };
    let t = Instant::now();
    let mut connects = vec![];
    for (i, identity) in identities.into_iter().enumerate() {
        let endpoint = endpoints[i % endpoints.len()].clone();
        let (limit, ctx, mut stop) = (limit.clone(), ctx.clone(), stop_rx.clone());
        let target = ctl.quic;
        connects.push(tokio::spawn(async move {
            let mut attempts = 0;
            let established = loop {
                attempts += 1;
                let permit = limit.acquire().await.expect("semaphore");
                let facts = HostFacts { hostname: format!("sim-{i}"), cpu_cores: 1, ..Default::default() };
                match link::connect(&endpoint, &identity, target, facts).await {
                    Ok(e) => break e,
                    Err(e) if attempts >= 5 => return Err(anyhow::anyhow!("agent {i}: {e}")),
                    Err(_) => {
                        drop(permit);
                        tokio::time::sleep(Duration::from_millis(200 * attempts)).await;
                    }
                }
            };
            let connected_after = t.elapsed();
            tokio::spawn(async move {
                let _ = established.serve(&ctx, &mut stop).await;
            });
            Ok(connected_after)
        }));
    }
    let mut connected = vec![];
    let mut failures = 0;
    for c in connects {
        match c.await? {
            Ok(d) => connected.push(d),
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("  connect failed: {e}");
                }
            }
        }
    }
    let all = connected.iter().max().copied().unwrap_or_default();
    println!(
        "  connect {} links (handshake to Welcome): {:.2} s for all, {} failed",
        connected.len(),
        all.as_secs_f64(),
        failures
    );

    // 4. Steady state: several heartbeat rounds, then CPU over a window and RSS at its end.
    tokio::time::sleep(args.heartbeat * 2).await;
    let (_, _, ticks0) = proc_usage(pid)?;
    let w = Instant::now();
    tokio::time::sleep(args.settle).await;
    let (rss, peak, ticks1) = proc_usage(pid)?;
    let cpu = (ticks1 - ticks0) as f64 / clock_ticks() / w.elapsed().as_secs_f64() * 100.0;
    println!(
        "  controller RSS at steady state: {:.1} MiB (peak {:.1} MiB, idle before agents {:.1} MiB)",
        rss as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        idle_rss as f64 / 1048576.0
    );
    println!("  controller CPU at steady state: {cpu:.1} % of one core (over {:.0} s)", w.elapsed().as_secs_f64());

    // 5. RTTs as the controller measured them.
    let (http, auth) = (ctl.http.clone(), ctl.auth.clone());
    let body: Value = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        Ok(ureq::get(&format!("{http}/api/v1/servers/availability")).set("Authorization", &auth).call()?.into_json()?)
    })
    .await??;
    let rows = body["availability"].as_array().cloned().unwrap_or_default();
    let available = rows.iter().filter(|r| r["available"] == Value::Bool(true)).count();
    let mut rtts: Vec<f64> = rows.iter().filter_map(|r| r["latency_ms"].as_f64()).collect();
    rtts.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  heartbeat RTT measured by the controller: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} links)",
        percentile(&rtts, 50.0),
        percentile(&rtts, 99.0),
        rtts.last().copied().unwrap_or(f64::NAN),
        rtts.len()
    );
    println!("  available in /api/v1/servers/availability: {available}/{}", rows.len());
    if let Ok((own_rss, _, _)) = proc_usage(std::process::id()) {
        println!("  (simulator process RSS: {:.1} MiB)", own_rss as f64 / 1048576.0);
    }

    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for e in &endpoints {
        e.close(0u32.into(), b"bench done");
    }
    if available < connected.len() {
        bail!("{} links connected but only {available} available", connected.len());
    }
    Ok(())
}
