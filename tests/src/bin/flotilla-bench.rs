//! `flotilla-bench`: one process simulating N agents against one real controller.
//!
//! Every simulated agent is enrolled for real (its own key, CSR and certificate), then holds a
//! real mutual-TLS QUIC link that answers heartbeats and sends what a busy `flotilla-agent` sends
//! at its default rates: a metrics sample every 5 s (real sysinfo readings from one sampler
//! shared by all simulated agents) and a traffic batch every 10 s from an in-memory proxy core
//! ([`RecordingCore`]: the batches are synthetic, their path through the link and the
//! controller's store is the real one). Reports connect time, controller RSS and CPU at steady
//! state, the heartbeat RTT the controller measured (p50/p99, from
//! `/api/v1/servers/availability`), and optionally how long adding one client to every node takes
//! end to end (`POST /api/v1/clients/batch-add`, answered once every agent applied it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use flotilla_agent::drivers::core::ProxyCore;
use flotilla_agent::drivers::metrics::MetricsSampler;
use flotilla_agent::link::{self, ServeContext};
use flotilla_protocol::facts::HostFacts;
use flotilla_protocol::token::JoinToken;
use flotilla_tests::bench_core::{CoreCounters, RecordingCore, TrafficTicker};
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
    /// Metrics sample interval of every simulated agent (agent default 5s; 0s: no metrics).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    metrics_interval: Duration,
    /// Traffic poll interval of every simulated agent: one journal row each (agent default
    /// 10s; 0s: no traffic batches).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    stats_interval: Duration,
    /// Users with traffic in each simulated traffic batch.
    #[arg(long, default_value_t = 10)]
    users_per_agent: usize,
    /// Rounds of "add one client to every node" to time after the steady state (0: skip).
    #[arg(long, default_value_t = 20)]
    add_client_rounds: usize,
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
    let metrics = match args.metrics_interval {
        d if d.is_zero() => "off".to_string(),
        d => format!("every {d:?} (real sysinfo sample)"),
    };
    let traffic = match args.stats_interval {
        d if d.is_zero() || args.users_per_agent == 0 => "off".to_string(),
        d => format!("every {d:?} with {} users (synthetic)", args.users_per_agent),
    };
    println!("  per agent: metrics {metrics}, traffic batch {traffic}");
    let idle_rss = proc_usage(pid)?.0;
    // The machine may be shared: say how busy it was when the run started.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("  load average at start: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));

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
    // Metrics: all simulated agents share one sampler that reads the host once a second and
    // repeats that reading, so the controller gets real-sized samples at the real rate while the
    // simulator does not spend a core reading /proc for 10,000 agents.
    let sampler = (!args.metrics_interval.is_zero())
        .then(|| Arc::new(Mutex::new(MetricsSampler::reusing(Duration::from_secs(1)))));
    let counters = Arc::new(CoreCounters::default());
    let users = if args.stats_interval.is_zero() { 0 } else { args.users_per_agent };
    let cores: Vec<Arc<RecordingCore>> =
        (0..identities.len()).map(|i| RecordingCore::new(&format!("sim-{i}"), users, counters.clone())).collect();
    // Bounded: stops with the run, and after an hour at most.
    let _ticker = (users > 0)
        .then(|| TrafficTicker::spawn(cores.clone(), args.stats_interval, Duration::from_secs(3600), stop_rx.clone()));
    let t = Instant::now();
    let mut connects = vec![];
    for (i, identity) in identities.into_iter().enumerate() {
        let endpoint = endpoints[i % endpoints.len()].clone();
        let ctx = ServeContext {
            state: None,
            sampler: sampler.clone(),
            metrics_interval: if args.metrics_interval.is_zero() {
                Duration::from_secs(3600)
            } else {
                args.metrics_interval
            },
            core: Some(cores[i].clone() as Arc<dyn ProxyCore>),
            ..ServeContext::default()
        };
        let (limit, mut stop) = (limit.clone(), stop_rx.clone());
        let target = ctl.quic;
        connects.push(tokio::spawn(async move {
            let mut attempts = 0;
            let established = loop {
                attempts += 1;
                let permit = limit.acquire().await.expect("semaphore");
                let facts = HostFacts { hostname: format!("sim-{i}"), cpu_cores: 1, ..Default::default() };
                match link::connect(&endpoint, &identity, target, facts, &ctx).await {
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
    let (_, _, own0) = proc_usage(std::process::id())?;
    let (written0, committed0) =
        (counters.rows_written.load(Ordering::Relaxed), counters.rows_committed.load(Ordering::Relaxed));
    let w = Instant::now();
    tokio::time::sleep(args.settle).await;
    let (rss, peak, ticks1) = proc_usage(pid)?;
    let (_, _, own1) = proc_usage(std::process::id())?;
    let window = w.elapsed().as_secs_f64();
    let cpu = (ticks1 - ticks0) as f64 / clock_ticks() / window * 100.0;
    let own_cpu = (own1 - own0) as f64 / clock_ticks() / window * 100.0;
    let written = counters.rows_written.load(Ordering::Relaxed) - written0;
    let committed = counters.rows_committed.load(Ordering::Relaxed) - committed0;
    println!(
        "  controller RSS at steady state: {:.1} MiB (peak {:.1} MiB, idle before agents {:.1} MiB)",
        rss as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        idle_rss as f64 / 1048576.0
    );
    println!("  controller CPU at steady state: {cpu:.1} % of one core (over {window:.0} s)");
    if sampler.is_some() {
        println!(
            "  metrics load: {:.0} samples/s expected ({} links / {:?})",
            connected.len() as f64 / args.metrics_interval.as_secs_f64(),
            connected.len(),
            args.metrics_interval
        );
    }
    if users > 0 {
        println!(
            "  traffic load: {:.0} batches/s written, {:.0}/s committed by the controller ({} users each; {} rows still unacked, {} dropped)",
            written as f64 / window,
            committed as f64 / window,
            users,
            counters.rows_written.load(Ordering::Relaxed) - counters.rows_committed.load(Ordering::Relaxed),
            counters.rows_dropped.load(Ordering::Relaxed),
        );
    }
    println!("  simulator CPU in the same window: {own_cpu:.1} % of one core (shares the machine with the controller)");

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
    let (http, auth) = (ctl.http.clone(), ctl.auth.clone());
    let status: Value = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        Ok(ureq::get(&format!("{http}/api/v1/servers/status")).set("Authorization", &auth).call()?.into_json()?)
    })
    .await??;
    let servers = status["servers"].as_array().cloned().unwrap_or_default();
    let with_metrics = servers.iter().filter(|s| !s["system"].is_null()).count();
    let with_core = servers.iter().filter(|s| s["xray"]["running"] == Value::Bool(true)).count();
    println!(
        "  in /api/v1/servers/status: {with_metrics}/{} with a metrics sample, {with_core}/{} with a running (in-memory) core",
        servers.len(),
        servers.len()
    );
    if let Ok((own_rss, _, _)) = proc_usage(std::process::id()) {
        println!("  (simulator process RSS: {:.1} MiB)", own_rss as f64 / 1048576.0);
    }

    let added = if args.add_client_rounds > 0 && !connected.is_empty() {
        add_client_rounds(args, ctl, &cores).await
    } else {
        Ok(())
    };

    let _ = stop_tx.send(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for e in &endpoints {
        e.close(0u32.into(), b"bench done");
    }
    if available < connected.len() {
        bail!("{} links connected but only {available} available", connected.len());
    }
    added
}

/// A blocking authenticated POST of `body` (off the async threads); the JSON answer.
async fn post(ctl: &Controller, path: &str, body: Value) -> anyhow::Result<Value> {
    let (url, auth) = (format!("{}{path}", ctl.http), ctl.auth.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(300)).build();
        match agent.post(&url).set("Authorization", &auth).send_json(body) {
            Ok(r) => Ok(r.into_json()?),
            Err(ureq::Error::Status(code, r)) => bail!("{url}: HTTP {code}: {}", r.into_string().unwrap_or_default()),
            Err(e) => bail!("{url}: {e}"),
        }
    })
    .await?
}

/// Per-node `status` words of a fan-out answer: (applied, anything else).
fn statuses(answer: &Value) -> (usize, usize) {
    let rows = answer["results"].as_array().cloned().unwrap_or_default();
    let applied = rows.iter().filter(|r| r["status"] == "applied").count();
    (applied, rows.len() - applied)
}

/// One vless inbound on every node, then `--add-client-rounds` times one new client on every
/// node, each call timed: the API answers once every node's agent has applied the change (the
/// controller pushes each node's whole proxy state, here to in-memory cores).
async fn add_client_rounds(args: &Args, ctl: &Controller, cores: &[Arc<RecordingCore>]) -> anyhow::Result<()> {
    let nodes = cores.len();
    let t = Instant::now();
    let answer = post(
        ctl,
        "/api/v1/inbounds",
        serde_json::json!({ "node_ids": null, "port": 30001, "protocol": "vless", "settings": { "decryption": "none" } }),
    )
    .await?;
    let (applied, other) = statuses(&answer);
    println!(
        "  create one vless inbound on all {nodes} nodes (POST /api/v1/inbounds): {:.3} s, {applied} applied, {other} not",
        t.elapsed().as_secs_f64()
    );
    let mut times = vec![];
    let (mut applied_total, mut other_total) = (0, 0);
    for k in 0..args.add_client_rounds {
        let body = serde_json::json!({
            "node_ids": null,
            "clients": [{ "email": format!("bench-{k}@x"), "inbound_id": 1 }],
        });
        let t = Instant::now();
        let answer = post(ctl, "/api/v1/clients/batch-add", body).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let (applied, other) = statuses(&answer);
        applied_total += applied;
        other_total += other;
        if other > 0 && other_total == other {
            let bad = answer["results"].as_array().and_then(|r| r.iter().find(|r| r["status"] != "applied")).cloned();
            eprintln!("  round {k}: {other} nodes not applied, e.g. {}", bad.unwrap_or_default());
        }
    }
    let (first, last) = (times.first().copied().unwrap_or(f64::NAN), times.last().copied().unwrap_or(f64::NAN));
    times.sort_by(|a, b| a.total_cmp(b));
    let with_all =
        cores.iter().filter(|c| c.applied().is_some_and(|s| s.clients.len() == args.add_client_rounds)).count();
    println!(
        "  add one client to all {nodes} nodes (POST /api/v1/clients/batch-add, {} rounds): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        times.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  (min {:.1} ms; first round {first:.1} ms, last round {last:.1} ms: each push carries the node's whole state)",
        times.first().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  per-node statuses: {applied_total} applied, {other_total} not; cores holding all {} clients: {with_all}/{nodes}",
        args.add_client_rounds
    );
    if other_total > 0 {
        // "queued" means the controller saw the node offline: count the links still up.
        let (http, auth) = (ctl.http.clone(), ctl.auth.clone());
        let body: Value = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
            Ok(ureq::get(&format!("{http}/api/v1/servers/availability"))
                .set("Authorization", &auth)
                .call()?
                .into_json()?)
        })
        .await??;
        let rows = body["availability"].as_array().cloned().unwrap_or_default();
        let up = rows.iter().filter(|r| r["available"] == Value::Bool(true)).count();
        println!("  links still available after the rounds: {up}/{} (the simulator does not reconnect)", rows.len());
        bail!("{other_total} per-node results were not \"applied\"");
    }
    Ok(())
}
