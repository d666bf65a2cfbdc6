//! `flotilla-vps-fanout-bench`: the VPS API's Socket.IO fan-out of stats on a real controller and a
//! real agent running LXC containers (busybox template) in a network namespace of its own.
//!
//! Creates S servers (default 50) on one node, then opens C Socket.IO clients (default 200; the
//! real `socket.io-client` v4 under one Node process, `tests/js/vps-fanout.mjs`), each subscribed
//! to every server. The agent samples every second, so the controller pushes C × S `server-stats`
//! per second. Over a measuring window (default 30 s) it reports the latency from the agent's
//! sample (`sampledAt`) to a client (p50, p99, max), the controller's CPU (user + sys seconds per
//! wall second, from `/proc/<pid>/stat`) and RSS. The agent samples its containers one after
//! another and reports them together, so the latency also shows the age of the pass's newest
//! sample alone (link, controller and delivery without the pass).
//!
//! Needs root (namespaces), LXC, busybox-static, node and npm; every container it creates is
//! destroyed at the end, and the Node process is killed. Figures are printed, never asserted.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use flotilla_tests::harness::Fleet;
use flotilla_tests::socketio::{script, socket_io_client};
use flotilla_tests::vps::{self, Vps};
use serde_json::{json, Value};

/// The bridge/subnet number of the agent: apart from the tests' and `flotilla-vps-bench`'s (9).
const NET: u8 = 8;
/// Addresses in `vps::agent_config`'s pool (`.10` to `.60`): one per server.
const POOL: usize = 51;
/// Server creations in flight.
const CREATING: usize = 4;
/// Bound on connecting and subscribing every client.
const READY_WITHIN: Duration = Duration::from_secs(300);
/// Pause between the last subscribe and the window: the subscribe answers' burst passes.
const SETTLE: Duration = Duration::from_secs(3);

/// Socket.IO fan-out figures.
#[derive(Debug, Parser)]
#[command(name = "flotilla-vps-fanout-bench", version)]
struct Args {
    /// Socket.IO clients, each subscribed to every server.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(1..=2000))]
    clients: u16,
    /// Servers (busybox containers) on the one node.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=POOL as i64))]
    servers: u16,
    /// Length of the measuring window in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..=600))]
    seconds: u16,
}

/// Destroys the containers the run created, however it ends.
struct Cleanup {
    ns: Option<String>,
    names: Mutex<Vec<String>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = self.names.get_mut().unwrap_or_else(|e| e.into_inner());
        if !names.is_empty() {
            eprintln!("flotilla-vps-fanout-bench: destroying {} containers", names.len());
        }
        vps::destroy(self.ns.as_deref(), names);
    }
}

/// The Node process holding the clients; killed when dropped.
struct Clients {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
}

impl Clients {
    fn start(
        modules: &std::path::Path,
        url: &str,
        token: &str,
        ids: &[i64],
        clients: u16,
        limit: Duration,
    ) -> anyhow::Result<Clients> {
        let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
        let mut child = Command::new("node")
            .arg(script("vps-fanout.mjs"))
            .env("SIO_MODULES", modules)
            .env("URL", url)
            .env("TOKEN", token)
            .env("SERVER_IDS", ids.join(","))
            .env("CLIENTS", clients.to_string())
            // The script's own bound, in case this process dies without closing its stdin.
            .env("LIMIT_S", limit.as_secs().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start node")?;
        let stdout = child.stdout.take().context("node's stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "event": "text", "text": line }));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Ok(Clients { stdin: child.stdin.take(), child, lines })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a line (`start`, `stop`) to the script.
    fn say(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("node's stdin closed")?;
        writeln!(stdin, "{line}").context("writing to node")?;
        stdin.flush().context("writing to node")
    }

    /// The next line whose `event` is `event`, within `limit`; a `failed` line is an error.
    fn wait(&mut self, event: &str, limit: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => bail!("no `{event}` from the clients within {limit:?}"),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the clients exited before `{event}`"),
            };
            match line["event"].as_str() {
                Some(e) if e == event => return Ok(line),
                Some("failed") => bail!("clients: {}", line["message"]),
                _ => eprintln!("clients: {line}"),
            }
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        // Closing stdin ends the script; a stuck one is killed.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU ticks (utime + stime) and RSS in bytes of a process.
fn proc_usage(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    ensure!(fields.len() > 12, "short /proc/{pid}/stat");
    let ticks = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .context("VmRSS")?;
    Ok((ticks, rss_kib * 1024))
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

/// The controller process itself: the harness may start it through a wrapper that execs it
/// (same pid) or forks it (a child).
fn controller_process(pid: u32) -> anyhow::Result<u32> {
    let comm = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    // `comm` is cut at 15 characters.
    let ours = |pid: &str| comm(pid).trim().starts_with("flotilla-contro");
    if ours(&pid.to_string()) {
        return Ok(pid);
    }
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let found = children.split_whitespace().find(|c| ours(c)).context("no flotilla-controller process")?;
    Ok(found.parse()?)
}

/// Creates `count` servers from `order`, `CREATING` at a time, each waited for until it runs
/// with an address; every container name goes into `cleanup` as soon as it is known.
fn create_servers(admin: &Vps, order: &Value, count: usize, cleanup: &Cleanup) -> anyhow::Result<Vec<i64>> {
    let next = AtomicUsize::new(0);
    // Set by the first failure: the other threads stop taking orders.
    let failed = AtomicBool::new(false);
    let ids = Mutex::new(vec![]);
    let create_one = || -> anyhow::Result<()> {
        let reply = admin.call("POST", "/api/server/create", Some(order));
        if reply.status != 201 {
            bail!("create: {}", reply.raw);
        }
        let id = reply.body["id"].as_i64().context("no id in the create answer")?;
        let server = admin.expect("GET", &format!("/api/server/{id}"), None, 200);
        let name = server["container"].as_str().context("no container name")?.to_string();
        cleanup.names.lock().unwrap_or_else(|e| e.into_inner()).push(name);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = admin.expect("GET", &format!("/api/server/{id}"), None, 200);
            if s["status"] == "running" && s["ipAddress"].is_string() {
                break;
            }
            if s["status"] == "error" || Instant::now() > deadline {
                bail!("server {id} did not come up: {s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ids.lock().unwrap_or_else(|e| e.into_inner()).push(id);
        Ok(())
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CREATING.min(count))
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    while !failed.load(Ordering::SeqCst) && next.fetch_add(1, Ordering::SeqCst) < count {
                        create_one().inspect_err(|_| failed.store(true, Ordering::SeqCst))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(result) => result?,
                Err(_) => bail!("a creating thread panicked"),
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    let mut ids = ids.into_inner().unwrap_or_else(|e| e.into_inner());
    ids.sort();
    Ok(ids)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (clients, servers, seconds) = (args.clients, usize::from(args.servers), u64::from(args.seconds));
    if let Err(why) = vps::available() {
        println!("flotilla-vps-fanout-bench: skipped: {why}");
        return Ok(());
    }
    let modules = match socket_io_client() {
        Ok(dir) => dir,
        Err(why) => {
            println!("flotilla-vps-fanout-bench: skipped: {why}");
            return Ok(());
        }
    };
    let mut fleet = Fleet::start();
    let controller = controller_process(fleet.controller_pid().context("controller not running")?)?;
    let agent = fleet.add_container_agent("vps-fanout", &vps::agent_config(NET));
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(20));
    // Declared after the fleet: dropped first, while the namespace still exists.
    let cleanup = Cleanup { ns: fleet.agent(agent).host.ns.clone(), names: Mutex::new(vec![]) };
    let admin = Vps::login(&fleet.api, "admin", &fleet.api.password.clone());
    let os = admin.expect("POST", "/api/os", Some(&json!({ "name": "BusyBox", "template": "busybox" })), 201);
    let tariff = json!({ "name": "Bench", "cores": 1, "memory": 128, "disk": 1 });
    let tariff = admin.expect("POST", "/api/tariff", Some(&tariff), 201);
    let order = json!({ "osId": os["id"], "tariffId": tariff["id"] });

    println!(
        "flotilla-vps-fanout-bench: {clients} Socket.IO clients × {servers} busybox servers on one node, \
         {seconds} s window"
    );
    let started = Instant::now();
    let ids = create_servers(&admin, &order, servers, &cleanup)?;
    println!(
        "  {:<42} {:.1} s ({CREATING} in flight)",
        format!("{servers} servers running in"),
        started.elapsed().as_secs_f64()
    );
    let (_, rss_before) = proc_usage(controller)?;

    let token = admin.bearer().strip_prefix("Bearer ").context("bearer")?.to_string();
    // The script's bound: connecting, settling and the window, with room to spare.
    let limit = READY_WITHIN + SETTLE + Duration::from_secs(seconds + 60);
    let mut sockets = Clients::start(&modules, &fleet.api.base, &token, &ids, clients, limit)?;
    let ready = sockets.wait("ready", READY_WITHIN)?;
    println!(
        "  {:<42} {:.1} s (transports {})",
        format!("{clients} clients connected and subscribed"),
        ready["seconds"].as_f64().unwrap_or(f64::NAN),
        ready["transports"]
    );
    std::thread::sleep(SETTLE);

    let tick = clock_ticks();
    let (cpu0, _) = proc_usage(controller)?;
    let (node_cpu0, _) = proc_usage(sockets.pid())?;
    let t0 = Instant::now();
    sockets.say("start")?;
    let mut rss_peak = 0;
    let window = Duration::from_secs(seconds);
    while t0.elapsed() < window {
        std::thread::sleep(Duration::from_millis(500).min(window.saturating_sub(t0.elapsed())));
        rss_peak = rss_peak.max(proc_usage(controller)?.1);
    }
    sockets.say("stop")?;
    let wall = t0.elapsed().as_secs_f64();
    let (cpu1, rss_end) = proc_usage(controller)?;
    let (node_cpu1, _) = proc_usage(sockets.pid())?;
    let summary = sockets.wait("summary", Duration::from_secs(30))?;

    let num = |key: &str| summary[key].as_f64().unwrap_or(f64::NAN);
    let expected = f64::from(clients) * servers as f64 * num("seconds");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "  {:<42} p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  (p90 {:.0} ms, min {:.0} ms)",
        "latency, agent's sample to client",
        num("p50_ms"),
        num("p99_ms"),
        num("max_ms"),
        num("p90_ms"),
        num("min_ms")
    );
    println!(
        "  {:<42} p50 {:.0} ms  max {:.0} ms  ({:.0} reports seen by client 0)",
        "agent's pass over the containers",
        num("pass_p50_ms"),
        num("pass_max_ms"),
        num("reports")
    );
    println!(
        "  {:<42} p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        "latency, a pass's newest sample to client",
        num("newest_p50_ms"),
        num("newest_p99_ms"),
        num("newest_max_ms")
    );
    println!(
        "  {:<42} {:.0} ({:.0}/s; {:.0} expected at one sample per second; per client {:.0}..{:.0})",
        "server-stats received in the window",
        num("pushes"),
        num("pushes") / num("seconds"),
        expected,
        num("per_client_min"),
        num("per_client_max")
    );
    println!(
        "  {:<42} {:.3} s/s ({:.1} % of one core)",
        "controller CPU (user + sys)",
        (cpu1 - cpu0) as f64 / tick / wall,
        (cpu1 - cpu0) as f64 / tick / wall * 100.0
    );
    println!(
        "  {:<42} {:.1} MiB before the clients, {:.1} MiB peak, {:.1} MiB at the end",
        "controller RSS",
        mib(rss_before),
        mib(rss_peak),
        mib(rss_end)
    );
    println!(
        "  {:<42} {:.3} s/s (shares the cores with the controller)",
        "Node clients' CPU (user + sys)",
        (node_cpu1 - node_cpu0) as f64 / tick / wall
    );
    drop(sockets);
    drop(cleanup);
    Ok(())
}
