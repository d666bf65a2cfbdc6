//! `flotilla-core-bench`: figures with real proxy cores (v2ray 4.x or Xray found on PATH).
//!
//! 1. Users added live to one running core: N users through the agent's own gRPC client
//!    (`CoreApi::add_user`), sequentially and then N more with bounded concurrency, with the
//!    core's RSS before and after, a check that the core never restarted, and (when python3 and
//!    curl are installed) a rate-limited download through the inbound that must survive the adds.
//! 2. One stats poll: (a) the real `QueryStats` on that core, with whatever counters it has (v2ray
//!    creates a user's counters only at the user's first connection, so 10,000 users who never
//!    connected have none); (b) the agent-side processing of a synthetic reading of N users'
//!    counters (deltas, the SQLite commit of baselines, journal row and usage, reading the row
//!    back to ship it).
//! 3. "Add one client to every node" end to end with N real agents, each supervising its own core,
//!    behind a real controller (the e2e harness, loopback).
//!
//! Everything binds 127.0.0.1 only; every process and temp dir is removed at the end. Figures are
//! printed, never asserted.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use flotilla_agent::drivers::core::api::CoreApi;
use flotilla_agent::drivers::core::config::{self, CoreConfigInput};
use flotilla_agent::drivers::core::process::{self, CoreProcess};
use flotilla_agent::drivers::core::stats;
use flotilla_agent::state::{Poll, StateStore};
use flotilla_protocol::proxy::{ClientSpec, CoreFlavor, InboundSpec, TrafficBatch};
use flotilla_tests::harness::{free_port, wait_for, Fleet, FleetOptions};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// Real-core figures: live user adds, stats polls, fleet-wide client adds.
#[derive(Debug, Parser)]
#[command(name = "flotilla-core-bench", version)]
struct Args {
    /// Users added to one live inbound (and users in the synthetic stats reading).
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Adds in flight at once in the concurrent pass (0: sequential pass only).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Rounds of "add one client to every node" in the fleet part.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Real agents (each with its own core) in the fleet part.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Skip parts 1 and 2 (one live core).
    #[arg(long)]
    skip_users: bool,
    /// Skip part 3 (the fleet of real agents).
    #[arg(long)]
    skip_fleet: bool,
    /// Core binary for parts 1 and 2 (default: v2ray, else xray, on PATH).
    #[arg(long)]
    core: Option<PathBuf>,
    /// Directory with flotilla-controller and flotilla-agent (default: FLOTILLA_BIN_DIR, else next
    /// to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// A child process killed (and reaped) on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(&v, 50.0)
}

/// Resident memory of `pid` in MiB (0 when unreadable).
fn rss_mib(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn client(tag: &str, email: String) -> ClientSpec {
    ClientSpec {
        inbound_tag: tag.into(),
        email,
        secret: uuid(),
        flow: String::new(),
        enable: true,
        expiry_ms: 0,
        total_bytes: 0,
        reset_generation: 0,
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Waits (at most `timeout`) until something accepts on 127.0.0.1:`port`.
fn wait_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The harness finds the binaries through FLOTILLA_BIN_DIR (its default assumes a test exe
    // in target/<profile>/deps).
    let bin = match (&args.bin_dir, std::env::var_os("FLOTILLA_BIN_DIR")) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => PathBuf::from(dir),
        (None, None) => std::env::current_exe()?.parent().context("bench binary has no directory")?.to_path_buf(),
    };
    std::env::set_var("FLOTILLA_BIN_DIR", &bin);
    println!("flotilla-core-bench: {} users, {} nodes × {} rounds", args.users, args.nodes, args.rounds);
    // The machine may be shared: say how busy it was when the run started.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("  load average at start: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));

    if !args.skip_users {
        let (flavor, binary) = match &args.core {
            Some(p) => {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                (process::flavor_of(name).context("--core: name the binary xray or v2ray")?, p.clone())
            }
            None => process::find_on_path(&["v2ray", "xray"]).context("no v2ray or xray on PATH")?,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(one_core(&args, flavor, binary))?;
    }
    if !args.skip_fleet {
        fleet(&args, &bin)?;
    }
    Ok(())
}

/// A download through the bench core's inbound, kept running during the adds.
struct Download {
    _server: Guard,
    _client: Guard,
    curl: Guard,
    file: PathBuf,
}

impl Download {
    fn received(&self) -> u64 {
        std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0)
    }

    fn running(&mut self) -> bool {
        self.curl.0.try_wait().ok().flatten().is_none()
    }
}

/// python3's http.server (a 1 GiB sparse file), a client v2ray dialing `inbound_port` as
/// `user`, and curl downloading at 1 MiB/s through the client's SOCKS port.
fn start_download(dir: &Path, core: &Path, inbound_port: u16, user: &ClientSpec) -> anyhow::Result<Download> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::File::create(www.join("f.bin"))?.set_len(1 << 30)?;
    let http = free_port();
    let server = Guard(
        Command::new("python3")
            .args(["-m", "http.server", &http.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("python3")?,
    );
    let socks = free_port();
    let config = json!({
        "log": { "loglevel": "warning", "access": "none" },
        "inbounds": [{ "listen": "127.0.0.1", "port": socks, "protocol": "socks",
                       "settings": { "auth": "noauth", "udp": false } }],
        "outbounds": [{ "protocol": "vmess", "settings": { "vnext": [{ "address": "127.0.0.1",
            "port": inbound_port, "users": [{ "id": user.secret, "alterId": 0 }] }] } }],
    });
    let path = dir.join("client.json");
    std::fs::write(&path, config.to_string())?;
    // The client core is always v2ray-style `-config` when it is v2ray, `run -c` for Xray.
    let flavor = core.file_name().and_then(|n| n.to_str()).and_then(process::flavor_of).unwrap_or(CoreFlavor::V2ray);
    let client = Guard(
        Command::new(core)
            .args(process::run_args(flavor, &path))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("client core")?,
    );
    if !wait_port(http, Duration::from_secs(10)) || !wait_port(socks, Duration::from_secs(10)) {
        bail!("file server or client core did not listen");
    }
    let file = dir.join("download.bin");
    let curl = Guard(
        Command::new("curl")
            .args(["-sS", "--limit-rate", "1M", "--max-time", "900", "-o"])
            .arg(&file)
            .args(["--socks5-hostname", &format!("127.0.0.1:{socks}"), &format!("http://127.0.0.1:{http}/f.bin")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("curl")?,
    );
    let mut d = Download { _server: server, _client: client, curl, file };
    let start = Instant::now();
    while d.received() == 0 {
        if start.elapsed() > Duration::from_secs(10) || !d.running() {
            bail!("the download through the inbound did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(d)
}

/// Parts 1 and 2: one live core.
async fn one_core(args: &Args, flavor: CoreFlavor, binary: PathBuf) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("flotilla-core-bench-").tempdir()?;
    let (api_port, port) = (free_port(), free_port());
    let tag = "bench-in";
    let inbound = InboundSpec {
        tag: tag.into(),
        listen: "127.0.0.1".into(),
        port,
        protocol: "vmess".into(),
        settings: "{}".into(),
        stream_settings: "{}".into(),
        sniffing: "{}".into(),
        enable: true,
    };
    let keep = client(tag, "keep@x".into());
    let input = CoreConfigInput {
        flavor,
        api_port,
        inbounds: std::slice::from_ref(&inbound),
        clients: std::slice::from_ref(&keep),
        log_level: "warning",
        access_log: None,
    };
    let config_path = dir.path().join("config.json");
    config::write_atomic(&config_path, &serde_json::to_vec_pretty(&config::build(&input)?)?)?;
    let version = process::detect_version(flavor, &binary).await.unwrap_or_default();
    println!(
        "\n[1] {} users added to one live {} {version} vmess inbound ({})",
        args.users,
        flavor.as_str(),
        binary.display()
    );
    let core = CoreProcess::spawn(flavor, binary.clone(), config_path);
    let api = CoreApi::new(SocketAddr::from(([127, 0, 0, 1], api_port)), flavor);
    let start = Instant::now();
    loop {
        match api.sys_uptime().await {
            Ok(_) => break,
            Err(e) if start.elapsed() > Duration::from_secs(15) => {
                core.stop().await;
                bail!("core API did not answer: {e}; core: {:?}", core.last_error());
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let result = users_and_stats(args, &api, &core, dir.path(), &binary, port, tag, &keep).await;
    core.stop().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn users_and_stats(
    args: &Args,
    api: &CoreApi,
    core: &CoreProcess,
    dir: &Path,
    binary: &Path,
    port: u16,
    tag: &str,
    keep: &ClientSpec,
) -> anyhow::Result<()> {
    let (pid0, gen0) = (core.pid(), core.generation());
    let rss0 = rss_mib(pid0);
    println!("  core RSS before: {rss0:.1} MiB (pid {pid0:?}, 1 user)");

    let mut download = if have("python3") && have("curl") {
        let d = dir.to_path_buf();
        let (binary, keep) = (binary.to_path_buf(), keep.clone());
        match tokio::task::spawn_blocking(move || start_download(&d, &binary, port, &keep)).await? {
            Ok(d) => Some(d),
            Err(e) => {
                println!("  (no download during the adds: {e})");
                None
            }
        }
    } else {
        println!("  (no download during the adds: python3 or curl missing)");
        None
    };
    let received0 = download.as_ref().map(Download::received).unwrap_or(0);

    // Sequential: what the agent's converge loop does.
    let users: Vec<ClientSpec> = (0..args.users).map(|i| client(tag, format!("u{i}@x"))).collect();
    let mut errors = 0usize;
    let mut first_error = None;
    let t = Instant::now();
    for u in &users {
        if let Err(e) = api.add_user(tag, "vmess", u, None).await {
            errors += 1;
            first_error.get_or_insert(e.to_string());
        }
    }
    let seq = t.elapsed().as_secs_f64();
    let rss1 = rss_mib(core.pid());
    println!(
        "  sequential: {} users in {seq:.2} s = {:.0} users/s ({:.3} ms each), {errors} errors{}",
        users.len(),
        users.len() as f64 / seq,
        seq * 1000.0 / users.len().max(1) as f64,
        first_error.map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    println!("  core RSS after {} users: {rss1:.1} MiB (+{:.1} MiB)", users.len() + 1, rss1 - rss0);

    let mut total = users.len() + 1;
    if args.concurrency > 0 {
        let more: Vec<ClientSpec> = (0..args.users).map(|i| client(tag, format!("c{i}@x"))).collect();
        let limit = Arc::new(Semaphore::new(args.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        let t = Instant::now();
        for u in more {
            let (api, limit, tag) = (api.clone(), limit.clone(), tag.to_string());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore");
                api.add_user(&tag, "vmess", &u, None).await.map_err(|e| e.to_string())
            });
        }
        let (mut errors, mut first_error) = (0usize, None);
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r? {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
        let took = t.elapsed().as_secs_f64();
        total += args.users;
        let rss2 = rss_mib(core.pid());
        println!(
            "  concurrent ({} in flight): {} more users in {took:.2} s = {:.0} users/s, {errors} errors{}",
            args.concurrency,
            args.users,
            args.users as f64 / took,
            first_error.map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        println!("  core RSS after {total} users: {rss2:.1} MiB (+{:.1} MiB over 1 user)", rss2 - rss0);
    }
    let restarted = core.pid() != pid0 || core.generation() != gen0;
    println!(
        "  core restarted during the adds: {} (pid {:?} → {:?}, generation {gen0} → {})",
        if restarted { "YES" } else { "no" },
        pid0,
        core.pid(),
        core.generation()
    );
    if let Some(d) = download.as_mut() {
        // curl's rate limit is an average (it may burst, then pause), so allow up to 10 s for
        // the next bytes after the adds.
        let end_of_adds = d.received();
        let waited = Instant::now();
        while d.received() == end_of_adds && d.running() && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (running, grew) = (d.running(), d.received() > end_of_adds);
        println!(
            "  download through the inbound during the adds (curl --limit-rate 1M, user keep@x): {} ({:.1} MiB received during the adds; afterwards still running: {running}, still receiving: {grew})",
            if running && grew { "survived" } else { "DROPPED" },
            end_of_adds.saturating_sub(received0) as f64 / 1048576.0,
        );
    }

    // 2a. The real QueryStats on this core.
    println!("\n[2] one stats poll");
    let mut times = vec![];
    let mut reading = vec![];
    for _ in 0..5 {
        let t = Instant::now();
        reading = api.query_stats("", false).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let user_counters = reading.iter().filter(|(n, _)| n.starts_with("user>>>")).count();
    println!(
        "  (a) REAL QueryStats on the core holding {total} users: {:.2} ms (median of 5), {} counters ({user_counters} user counters: v2ray creates them at a user's first connection)",
        median(times),
        reading.len()
    );
    let store_dir = dir.join("agent-real");
    let store = StateStore::open(&store_dir)?;
    let t = Instant::now();
    let baselines = store.baselines()?;
    let d = stats::deltas(&reading, &baselines);
    let poll = Poll {
        taken_at_ms: now_ms(),
        baselines: d.baselines,
        users: d.users,
        inbounds: d.inbounds,
        outbounds: d.outbounds,
    };
    store.record_poll(&poll)?;
    println!(
        "      agent processing of that real reading (baselines, deltas, SQLite commit): {:.2} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    drop(store);

    // 2b. Synthetic reading of N users, through the agent's own code and store.
    synthetic_poll(args.users, dir)?;
    Ok(())
}

/// Part 2b: deltas + `record_poll` of a synthetic reading with up- and downlink counters for
/// `users` users, in a temp agent store; five polls, every counter moving in each.
fn synthetic_poll(users: usize, dir: &Path) -> anyhow::Result<()> {
    let store = StateStore::open(&dir.join("agent-synthetic"))?;
    let names: Vec<(String, String)> = (0..users)
        .map(|i| (format!("user>>>u{i}@x>>>traffic>>>uplink"), format!("user>>>u{i}@x>>>traffic>>>downlink")))
        .collect();
    let (mut t_base, mut t_deltas, mut t_commit, mut t_read) = (vec![], vec![], vec![], vec![]);
    let mut event_bytes = 0;
    let mut last_seq = 0;
    for round in 1..=5i64 {
        let reading: Vec<(String, i64)> = names
            .iter()
            .enumerate()
            .flat_map(|(i, (up, down))| {
                let i = i as i64;
                [(up.clone(), round * (1_000 + i)), (down.clone(), round * (100_000 + 7 * i))]
            })
            .collect();
        let t = Instant::now();
        let baselines = store.baselines()?;
        t_base.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let d = stats::deltas(&reading, &baselines);
        t_deltas.push(t.elapsed().as_secs_f64() * 1000.0);
        let moved = d.users.len();
        let poll = Poll {
            taken_at_ms: now_ms(),
            baselines: d.baselines,
            users: d.users,
            inbounds: d.inbounds,
            outbounds: d.outbounds,
        };
        let t = Instant::now();
        let seq = store.record_poll(&poll)?.context("a poll where everyone moved writes a row")?;
        t_commit.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let rows = store.journal_after(last_seq, 256)?;
        t_read.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(rows.len() == 1 && rows[0].users.len() == moved, "journal row has all {moved} users");
        let row = &rows[0];
        let batch = TrafficBatch {
            journal: 1,
            seq: row.seq,
            taken_at_ms: row.taken_at_ms,
            users: row.users.clone(),
            inbounds: row.inbounds.clone(),
        };
        event_bytes = flotilla_protocol::codec::encode_body(&batch)?.len();
        store.delete_journal_through(seq)?;
        last_seq = seq;
    }
    let (b, d, c, r) = (median(t_base), median(t_deltas), median(t_commit), median(t_read));
    println!(
        "  (b) SYNTHETIC reading of {users} users ({} counters named user>>>u<i>@x>>>traffic>>>uplink|downlink), agent side only, median of 5 polls (all counters moving):",
        2 * users
    );
    println!("      read baselines from agent.db: {b:.1} ms");
    println!("      stats::deltas: {d:.1} ms");
    println!(
        "      StateStore::record_poll ({} baseline upserts + journal row + {users} usage upserts, one transaction): {c:.1} ms",
        2 * users
    );
    println!(
        "      journal_after (read the row back to ship it): {r:.1} ms; its TRAFFIC_BATCH event body: {:.0} KiB",
        event_bytes as f64 / 1024.0
    );
    println!("      total agent-side: {:.1} ms (agent.db on {}, synchronous=FULL)", b + d + c + r, dir.display());
    Ok(())
}

/// A fleet whose agents are stopped with SIGTERM, so each stops its own core (the harness's drop
/// SIGKILLs agents, which would leave their cores running); any process still naming the fleet's
/// temp dir afterwards is killed by pid.
struct FleetRun {
    fleet: Option<Fleet>,
    agents: usize,
}

impl FleetRun {
    fn fleet(&mut self) -> &mut Fleet {
        self.fleet.as_mut().expect("fleet runs until dropped")
    }
}

impl Drop for FleetRun {
    fn drop(&mut self) {
        let Some(mut fleet) = self.fleet.take() else { return };
        for i in 0..self.agents {
            fleet.stop_agent(i, false);
        }
        let marker = fleet.tmp.path().display().to_string();
        drop(fleet);
        let mine = std::process::id();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
            if pid == mine {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&marker) {
                eprintln!("  (killing leftover process {pid}: {})", cmdline.trim());
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}

/// Part 3: N real agents with real cores behind a real controller.
fn fleet(args: &Args, bin: &Path) -> anyhow::Result<()> {
    println!(
        "\n[3] add one client to {} nodes end to end (real controller, real agents, each with its own core; loopback)",
        args.nodes
    );
    for b in ["flotilla-controller", "flotilla-agent"] {
        if !bin.join(b).exists() {
            bail!("{b} not found in {} (build with --bins, or pass --bin-dir)", bin.display());
        }
    }
    if process::find_on_path(&["xray", "v2ray"]).is_none() {
        bail!("the agents need xray or v2ray on PATH");
    }
    // Production rates (heartbeat and metrics every 5 s, traffic polls every 10 s).
    let opts = FleetOptions {
        heartbeat_interval: Duration::from_secs(5),
        metrics_interval: Duration::from_secs(5),
        stats_interval: Duration::from_secs(10),
        loopback: true,
        ..Default::default()
    };
    let mut run = FleetRun { fleet: Some(Fleet::start_with(opts)), agents: 0 };
    let t = Instant::now();
    let mut ids = vec![];
    for i in 0..args.nodes {
        let index = run.fleet().add_agent(&format!("core-{i}"));
        run.agents = index + 1;
        ids.push(run.fleet().agent(index).node_id);
    }
    let fleet = &*run.fleet();
    fleet.wait_connected(&ids, Duration::from_secs(60));
    let running = |fleet: &Fleet| -> HashMap<i64, Value> {
        let body = fleet.api.get("/api/v1/servers/status").body;
        body["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["xray"]["running"] == json!(true))
            .filter_map(|s| Some((s["node_id"].as_i64()?, s["xray"].clone())))
            .collect()
    };
    wait_for("every agent's core to run", Duration::from_secs(60), || {
        (running(fleet).len() == ids.len()).then_some(())
    });
    let cores = running(fleet);
    let version = cores.values().next().and_then(|x| x["version"].as_str()).unwrap_or_default().to_string();
    println!(
        "  {} agents enrolled, connected, cores running: {:.1} s (core version {version})",
        ids.len(),
        t.elapsed().as_secs_f64()
    );

    // Inbound ids are numbered per node, so each node's inbound is id 1; ports differ because
    // every agent shares 127.0.0.1.
    let mut creates = vec![];
    for (i, id) in ids.iter().enumerate() {
        let mut port = 31_000 + i as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            port = free_port();
        }
        let t = Instant::now();
        let reply = fleet.api.post(
            "/api/v1/inbounds",
            &json!({ "node_ids": [id], "port": port, "protocol": "vmess", "remark": "bench",
                     "settings": { "clients": [] }, "streamSettings": { "network": "tcp", "security": "none" } }),
        );
        creates.push(t.elapsed().as_secs_f64() * 1000.0);
        let r = &reply.body["results"][0];
        if reply.status != 200 || r["status"] != "applied" || r["inbound_id"] != 1 {
            bail!("inbound on node {id}: HTTP {}: {}", reply.status, reply.raw);
        }
    }
    creates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  create one vmess inbound per node (new inbound = config check + core restart): p50 {:.0} ms, max {:.0} ms",
        percentile(&creates, 50.0),
        creates.last().copied().unwrap_or(f64::NAN)
    );
    wait_for("every core to run again", Duration::from_secs(60), || (running(fleet).len() == ids.len()).then_some(()));
    let before = running(fleet);

    let mut times = vec![];
    let (mut applied, mut other) = (0usize, 0usize);
    for k in 0..args.rounds {
        let body = json!({ "node_ids": null, "clients": [{ "email": format!("r{k}@x"), "inbound_id": 1 }] });
        let t = Instant::now();
        let reply = fleet.api.post("/api/v1/clients/batch-add", &body);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let rows = reply.body["results"].as_array().cloned().unwrap_or_default();
        let ok = rows.iter().filter(|r| r["status"] == "applied" && r["results"][0]["success"] == json!(true)).count();
        applied += ok;
        other += ids.len() - ok;
        if ok != ids.len() && other == ids.len() - ok {
            eprintln!("  round {k}: HTTP {}: {}", reply.status, reply.raw);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let after = running(fleet);
    let restarted = before
        .iter()
        .filter(|(id, x)| after.get(id).is_none_or(|a| a["uptime"].as_u64() < x["uptime"].as_u64()))
        .count();
    println!(
        "  add one client to all {} nodes (POST /api/v1/clients/batch-add, {} rounds): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ids.len(),
        times.len(),
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        times.last().copied().unwrap_or(f64::NAN)
    );
    println!("  per-node statuses: {applied} applied, {other} not; cores restarted during the rounds: {restarted}");
    drop(run);
    if other > 0 {
        bail!("{other} per-node results were not applied");
    }
    Ok(())
}
