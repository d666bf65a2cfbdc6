//! The harness: `Fleet::start()` runs a real controller on a temp dir, `fleet.add_agent("nl-1")`
//! creates a node through the API, gives it a host (its own network namespace when possible),
//! enrolls and runs a real agent there. Everything is killed and removed on drop; the logs of a
//! failed test are printed.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::netns::{self, FleetNet};

/// Knobs of a test fleet. Defaults are fast: 1 s heartbeats and metrics.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub heartbeat_interval: Duration,
    pub metrics_interval: Duration,
    /// How often agents read their proxy core's traffic counters.
    pub stats_interval: Duration,
    pub agent_cert_lifetime: Option<Duration>,
    pub join_token_ttl: Option<Duration>,
    /// Use loopback even when namespaces are available.
    pub loopback: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            heartbeat_interval: Duration::from_secs(1),
            metrics_interval: Duration::from_secs(1),
            stats_interval: Duration::from_secs(1),
            agent_cert_lifetime: None,
            join_token_ttl: None,
            loopback: false,
        }
    }
}

/// URL prefix the test controller also serves every API under.
pub const BASE_PATH: &str = "/my-panel";

/// Directory holding the built binaries (`FLOTILLA_BIN_DIR`, else the target dir of this test).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("FLOTILLA_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    // A test runs from target/<profile>/deps/<test>, a benchmark binary from target/<profile>.
    let own = exe.parent().expect("exe dir");
    let dir = if own.join("flotilla-controller").exists() {
        own.to_path_buf()
    } else {
        own.parent().expect("target dir").to_path_buf()
    };
    for bin in ["flotilla-controller", "flotilla-agent"] {
        assert!(
            dir.join(bin).exists(),
            "{} not found in {}: run `cargo build --workspace --bins` first (or set FLOTILLA_BIN_DIR)",
            bin,
            dir.display()
        );
    }
    dir
}

/// A port free on 127.0.0.1 right now for both TCP and UDP (the caller binds it soon after, as
/// an HTTP or a QUIC port: a port free for TCP only once made a controller's QUIC bind fail).
pub fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub raw: String,
}

impl Reply {
    /// A response header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// HTTP client of the controller's API.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub user: String,
    pub password: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(base: String, user: String, password: String) -> Api {
        // No connection reuse: a pooled connection the server has just closed (after answering
        // an error without reading the body) would fail the next request with a spurious EOF.
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).max_idle_connections(0).build();
        Api { base, user, password, agent }
    }

    /// `Authorization` value for the admin.
    pub fn basic(&self) -> String {
        basic_header(&self.user, &self.password)
    }

    /// Any request: `body` is sent as-is with a JSON content type (None: no body at all), `auth`
    /// is the raw Authorization header (None: none sent).
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>, auth: Option<&str>) -> Reply {
        match auth {
            Some(a) => self.request_with(method, path, body, &[("Authorization", a)]),
            None => self.request_with(method, path, body, &[]),
        }
    }

    /// Any request with these headers; `body` as in [`Api::request`].
    pub fn request_with(&self, method: &str, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.request(method, &format!("{}{}", self.base, path));
        for (name, value) in headers {
            req = req.set(name, value);
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .map(|n| {
                let v = resp.header(&n).unwrap_or_default().to_string();
                (n, v)
            })
            .collect();
        let raw = resp.into_string().unwrap_or_default();
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Reply { status, headers, body, raw }
    }

    /// Authenticated GET.
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, Some(&self.basic()))
    }

    /// Authenticated POST of a JSON value.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, Some(body.to_string().as_bytes()), Some(&self.basic()))
    }

    /// Authenticated DELETE.
    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None, Some(&self.basic()))
    }

    /// Authenticated POST of a large body the way curl sends one: `Expect: 100-continue`, and
    /// the body only once the server says so. A server that refuses the announced length answers
    /// at once; writing the body blindly instead races the server's close (broken pipe, or a
    /// reset that eats the answer).
    pub fn post_expect_continue(&self, path: &str, body: &[u8]) -> Reply {
        use std::io::{BufRead, BufReader, Read, Write};
        let url = format!("{}{}", self.base, path);
        let rest = url.strip_prefix("http://").expect("the API is plain HTTP");
        let (authority, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut stream = std::net::TcpStream::connect(authority).unwrap_or_else(|e| panic!("connect {authority}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("socket timeout");
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            target,
            self.basic(),
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("write request head");
        let mut reader = BufReader::new(stream.try_clone().expect("clone socket"));
        let read_head = |reader: &mut BufReader<std::net::TcpStream>| {
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read response head");
                let line = line.trim_end().to_string();
                if line.is_empty() {
                    break lines;
                }
                lines.push(line);
            }
        };
        let mut lines = read_head(&mut reader);
        if lines.first().is_some_and(|l| l.contains(" 100 ")) {
            stream.write_all(body).expect("write request body");
            lines = read_head(&mut reader);
        }
        let status_line = lines.first().cloned().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines[1..]
            .iter()
            .filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string())))
            .collect();
        let length: Option<usize> =
            headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse().ok());
        let mut raw = Vec::new();
        match length {
            Some(n) => {
                raw.resize(n, 0);
                reader.read_exact(&mut raw).expect("read response body");
            }
            None => {
                reader.read_to_end(&mut raw).expect("read response body");
            }
        }
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Reply { status, headers, body, raw }
    }
}

/// `Basic base64(user:password)`.
pub fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// A host that can run an agent: a namespace (or loopback) and a data dir.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub ns: Option<String>,
    pub addr: Option<Ipv4Addr>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// This host's own `/run/wireguard` (wireguard-go's socket directory), bind-mounted into
    /// every agent process run on it: `None` for the machine's shared one.
    pub wg_dir: Option<PathBuf>,
    /// Enter only the network namespace (`nsenter --net`), keeping the machine's `/sys`: LXC needs
    /// the cgroup mounts under `/sys/fs/cgroup`, which `ip netns exec`'s fresh sysfs hides.
    pub keep_sysfs: bool,
    config: PathBuf,
}

/// An enrolled agent of the fleet.
#[derive(Debug)]
pub struct Agent {
    pub host: Host,
    pub node_id: i64,
    /// Where its local v2ray-stat API listens, on its host's loopback: the default port in a
    /// namespace of its own, a free one when agents share the machine's loopback.
    pub local_api: SocketAddr,
    child: Option<Child>,
}

impl Agent {
    /// Whether the agent process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The agent process's exit status, once it has exited by itself.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Pid of the running agent process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A controller plus agents, torn down on drop.
pub struct Fleet {
    pub tmp: tempfile::TempDir,
    pub opts: FleetOptions,
    pub api: Api,
    net: Option<FleetNet>,
    controller: Option<Child>,
    controller_cmd: Vec<String>,
    /// Address agents dial.
    pub agent_quic: SocketAddr,
    agents: Vec<Agent>,
    hosts_made: u8,
    /// Helper processes (HTTP servers, client cores) killed on drop.
    helpers: Vec<Child>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("api", &self.api.base).field("agents", &self.agents.len()).finish()
    }
}

/// Polls `f` until it returns `Some`, panicking with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `program` on a host: in namespace `ns` (None: here), with `wg_dir` as its `/run/wireguard`.
fn command_on(ns: Option<&str>, wg_dir: Option<&Path>, keep_sysfs: bool, program: &Path) -> Command {
    match (ns, wg_dir) {
        (_, Some(dir)) => netns::with_wireguard_dir(ns, dir, program.as_os_str()),
        (Some(ns), None) if keep_sysfs => netns::net_only(ns, program.as_os_str()),
        (Some(ns), None) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        (None, None) => Command::new(program),
    }
}

fn spawn_logged(ns: Option<&str>, program: &Path, args: &[String], log: &Path) -> Child {
    spawn_logged_on(ns, None, false, program, args, log)
}

fn spawn_logged_on(
    ns: Option<&str>,
    wg_dir: Option<&Path>,
    keep_sysfs: bool,
    program: &Path,
    args: &[String],
    log: &Path,
) -> Child {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let mut cmd = command_on(ns, wg_dir, keep_sysfs, program);
    cmd.args(args)
        .env("RUST_LOG", "info,flotilla_controller=debug,flotilla_agent=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file);
    cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()))
}

fn kill(child: &mut Child, signal: &str) {
    let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
}

impl Fleet {
    /// A fleet with default options.
    pub fn start() -> Fleet {
        Fleet::start_with(FleetOptions::default())
    }

    /// A fleet with `opts`; the controller is up when this returns.
    pub fn start_with(opts: FleetOptions) -> Fleet {
        let tmp = tempfile::Builder::new().prefix("flotilla-e2e-").tempdir().expect("tempdir");
        let net = if !opts.loopback && netns::available() {
            match FleetNet::create() {
                Ok(n) => Some(n),
                Err(e) => {
                    eprintln!("harness: cannot create network namespaces ({e}); using loopback");
                    None
                }
            }
        } else {
            None
        };
        let (http, quic_bind, agent_quic, api_base) = match &net {
            Some(n) => {
                eprintln!("harness: agents in their own network namespaces (slot {})", n.slot);
                (
                    "0.0.0.0:8080".to_string(),
                    "0.0.0.0:4433".to_string(),
                    SocketAddr::from((n.controller_agent_ip(), 4433)),
                    format!("http://{}:8080", n.controller_http_ip()),
                )
            }
            None => {
                eprintln!("harness: loopback mode (not root, no `ip`, or loopback requested)");
                let (h, q) = (free_port(), free_port());
                (
                    format!("127.0.0.1:{h}"),
                    format!("127.0.0.1:{q}"),
                    SocketAddr::from(([127, 0, 0, 1], q)),
                    format!("http://127.0.0.1:{h}"),
                )
            }
        };
        let password: String = (0..16).map(|_| (b'a' + rand::random::<u8>() % 26) as char).collect();
        let data = tmp.path().join("controller");
        let config = tmp.path().join("controller.toml");
        std::fs::write(&config, "").unwrap();
        let mut cmd: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "--http".into(),
            http,
            "--quic".into(),
            quic_bind,
            "--public-addr".into(),
            agent_quic.to_string(),
            "--heartbeat-interval".into(),
            format!("{}ms", opts.heartbeat_interval.as_millis()),
            // Every API is also served under this prefix (the documents' reverse-proxy examples).
            "--base-path".into(),
            BASE_PATH.into(),
            "--admin-user".into(),
            "admin".into(),
            "--admin-password".into(),
            password.clone(),
        ];
        if let Some(l) = opts.agent_cert_lifetime {
            cmd.extend(["--agent-cert-lifetime".into(), format!("{}ms", l.as_millis())]);
        }
        if let Some(t) = opts.join_token_ttl {
            cmd.extend(["--join-token-ttl".into(), format!("{}ms", t.as_millis())]);
        }
        let mut fleet = Fleet {
            api: Api::new(api_base, "admin".into(), password),
            tmp,
            opts,
            net,
            controller: None,
            controller_cmd: cmd,
            agent_quic,
            agents: vec![],
            hosts_made: 0,
            helpers: vec![],
        };
        fleet.start_controller();
        fleet
    }

    /// The controller's `--config` file (empty at start). A test writes it, then restarts the
    /// controller (`stop_controller`, `start_controller`) for it to apply.
    pub fn controller_config(&self) -> PathBuf {
        self.tmp.path().join("controller.toml")
    }

    /// Path of the controller's data dir.
    pub fn controller_data_dir(&self) -> PathBuf {
        self.tmp.path().join("controller")
    }

    /// The controller's log file.
    pub fn controller_log(&self) -> PathBuf {
        self.tmp.path().join("controller.log")
    }

    /// Whether agents run in namespaces.
    pub fn namespaced(&self) -> bool {
        self.net.is_some()
    }

    /// Network of the fleet, when namespaced.
    pub fn net(&self) -> Option<&FleetNet> {
        self.net.as_ref()
    }

    /// (Re)starts the controller and waits for its health endpoint.
    pub fn start_controller(&mut self) {
        assert!(self.controller.is_none(), "controller already running");
        let ns = self.net.as_ref().map(|n| n.controller_ns());
        let child = spawn_logged(
            ns.as_deref(),
            &bin_dir().join("flotilla-controller"),
            &self.controller_cmd,
            &self.controller_log(),
        );
        self.controller = Some(child);
        let api = self.api.clone();
        let started = Instant::now();
        wait_for("controller health", Duration::from_secs(20), || {
            if let Some(Ok(Some(status))) = self.controller.as_mut().map(|c| c.try_wait()) {
                panic!("controller exited with {status}:\n{}", self.log_tail(&self.controller_log(), 40));
            }
            let ok = api.agent.get(&format!("{}/api/v1/health", api.base)).call().is_ok();
            ok.then_some(())
        });
        eprintln!("harness: controller up in {:?}", started.elapsed());
    }

    /// Pid of the running controller process.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(Child::id)
    }

    /// SIGKILLs the controller (no chance to close links cleanly).
    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            kill(&mut c, "-KILL");
            let _ = c.wait();
        }
    }

    /// Stops the controller with SIGTERM.
    pub fn stop_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            kill(&mut c, "-TERM");
            let _ = c.wait();
        }
    }

    /// A new host (namespace or loopback) with an empty agent data dir.
    pub fn new_host(&mut self, name: &str) -> Host {
        let index = self.hosts_made;
        self.hosts_made += 1;
        let (ns, addr) = match self.net.as_mut() {
            Some(net) => {
                let (ns, addr) = net.add_agent(index).unwrap_or_else(|e| panic!("agent host {name}: {e}"));
                (Some(ns), Some(addr))
            }
            None => (None, None),
        };
        let data_dir = self.tmp.path().join(format!("agent-{name}"));
        let config = self.tmp.path().join(format!("agent-{name}.toml"));
        std::fs::write(&config, "").unwrap();
        let log = self.tmp.path().join(format!("agent-{name}.log"));
        Host { name: name.into(), ns, addr, data_dir, log, wg_dir: None, keep_sysfs: false, config }
    }

    /// Runs `flotilla-agent ARGS` once on `host` (enroll, status) and returns its output.
    pub fn agent_cmd(&self, host: &Host, args: &[&str]) -> Output {
        let mut full: Vec<String> = vec![
            "--data-dir".into(),
            host.data_dir.display().to_string(),
            "--config".into(),
            host.config.display().to_string(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        let program = bin_dir().join("flotilla-agent");
        let mut cmd = command_on(host.ns.as_deref(), host.wg_dir.as_deref(), host.keep_sysfs, &program);
        cmd.args(&full).env("NO_COLOR", "1").env("RUST_LOG", "warn").output().expect("run flotilla-agent")
    }

    /// Creates a node through the API; returns its id and join token.
    pub fn create_node(&self, name: &str) -> (i64, String) {
        let reply = self.api.post("/api/v1/nodes", &serde_json::json!({ "name": name }));
        assert_eq!(reply.status, 200, "create node {name}: {}", reply.raw);
        (reply.body["id"].as_i64().expect("id"), reply.body["join_token"].as_str().expect("join_token").to_string())
    }

    /// Creates a node, a host for it, enrolls and starts its agent; returns the agent's index.
    pub fn add_agent(&mut self, name: &str) -> usize {
        self.add_agent_configured(name, "")
    }

    /// Like [`Fleet::add_agent`], with `config` as the agent's `agent.toml`.
    pub fn add_agent_configured(&mut self, name: &str, config: &str) -> usize {
        let host = self.new_host(name);
        self.add_agent_on(host, config)
    }

    /// Like [`Fleet::add_agent_configured`] for an agent that drives WireGuard: its host gets a
    /// `/run/wireguard` of its own (kept across agent restarts), so agents of several fleets
    /// and of one fleet can all create `wg0`. [`Fleet::agent_wg`] looks at its devices.
    pub fn add_wireguard_agent(&mut self, name: &str, config: &str) -> usize {
        let mut host = self.new_host(name);
        let dir = self.tmp.path().join(format!("agent-{name}-run-wireguard"));
        std::fs::create_dir_all(&dir).expect("wireguard socket dir");
        host.wg_dir = Some(dir);
        self.add_agent_on(host, config)
    }

    /// Like [`Fleet::add_agent_configured`] for an agent that runs LXC containers: it keeps the
    /// machine's `/sys` (see [`Host::keep_sysfs`]).
    pub fn add_container_agent(&mut self, name: &str, config: &str) -> usize {
        let mut host = self.new_host(name);
        host.keep_sysfs = true;
        self.add_agent_on(host, config)
    }

    fn add_agent_on(&mut self, host: Host, config: &str) -> usize {
        let name = host.name.clone();
        let (node_id, token) = self.create_node(&name);
        std::fs::write(&host.config, config).unwrap();
        let out = self.agent_cmd(&host, &["enroll", &token]);
        assert!(
            out.status.success(),
            "enroll {name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let local_api = match host.ns {
            Some(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, 9952)),
            None => SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
        };
        self.agents.push(Agent { host, node_id, local_api, child: None });
        let index = self.agents.len() - 1;
        self.start_agent(index);
        index
    }

    /// Starts (or restarts) agent `index`'s `run` process, with `extra` arguments.
    pub fn start_agent_with(&mut self, index: usize, extra: &[&str]) {
        let metrics = format!("{}ms", self.opts.metrics_interval.as_millis());
        let stats_interval = self.opts.stats_interval;
        let agent = &mut self.agents[index];
        assert!(agent.child.is_none(), "agent {} already running", agent.host.name);
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            agent.host.data_dir.display().to_string(),
            "--config".into(),
            agent.host.config.display().to_string(),
            "run".into(),
            "--metrics-interval".into(),
            metrics,
            "--stats-interval".into(),
            format!("{}ms", stats_interval.as_millis()),
        ];
        if !extra.contains(&"--local-api") {
            args.extend(["--local-api".into(), agent.local_api.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let (ns, wg_dir) = (agent.host.ns.as_deref(), agent.host.wg_dir.as_deref());
        let program = bin_dir().join("flotilla-agent");
        agent.child = Some(spawn_logged_on(ns, wg_dir, agent.host.keep_sysfs, &program, &args, &agent.host.log));
    }

    /// Starts agent `index`.
    pub fn start_agent(&mut self, index: usize) {
        self.start_agent_with(index, &[]);
    }

    /// Stops agent `index` with SIGTERM (or SIGKILL when `hard`).
    pub fn stop_agent(&mut self, index: usize, hard: bool) {
        if let Some(mut c) = self.agents[index].child.take() {
            kill(&mut c, if hard { "-KILL" } else { "-TERM" });
            let _ = c.wait();
        }
    }

    /// Agent `index`.
    pub fn agent(&mut self, index: usize) -> &mut Agent {
        &mut self.agents[index]
    }

    /// Runs `curl -s` on agent `index`'s host (inside its namespace, if any), as an operator
    /// would there; `{api}` in an argument becomes the agent's local API base URL. Returns the
    /// status code and the body.
    pub fn agent_curl(&self, index: usize, args: &[&str]) -> (u16, String) {
        let agent = &self.agents[index];
        let api = format!("http://{}", agent.local_api);
        let mut cmd = match &agent.host.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "curl"]);
                c
            }
            None => Command::new("curl"),
        };
        cmd.args(["-s", "--max-time", "20", "-w", "\n%{http_code}"]);
        cmd.args(args.iter().map(|a| a.replace("{api}", &api)));
        cmd.current_dir(self.tmp.path());
        let out = cmd.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Runs `wg ARGS` on agent `index`'s host, against its own `/run/wireguard` (whether the
    /// agent runs or not); stdout, or why it failed.
    pub fn agent_wg(&self, index: usize, args: &[&str]) -> Result<String, String> {
        let host = &self.agents[index].host;
        let out = command_on(host.ns.as_deref(), host.wg_dir.as_deref(), host.keep_sysfs, Path::new("wg"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("wg {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("wg {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// `flotilla-agent status --json` of agent `index`.
    pub fn agent_status(&self, index: usize) -> Value {
        let out = self.agent_cmd(&self.agents[index].host, &["status", "--json"]);
        assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// The `/api/v1/servers/availability` row of `node_id`.
    pub fn availability(&self, node_id: i64) -> Option<Value> {
        let reply = self.api.get("/api/v1/servers/availability");
        assert_eq!(reply.status, 200, "{}", reply.raw);
        reply.body["availability"].as_array()?.iter().find(|r| r["node_id"].as_i64() == Some(node_id)).cloned()
    }

    /// Waits until every node in `ids` is available (connected).
    pub fn wait_connected(&self, ids: &[i64], timeout: Duration) {
        wait_for(&format!("nodes {ids:?} connected"), timeout, || {
            ids.iter()
                .all(|id| self.availability(*id).is_some_and(|r| r["available"] == Value::Bool(true)))
                .then_some(())
        });
    }

    /// Last `lines` lines of a log file.
    pub fn log_tail(&self, path: &Path, lines: usize) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The controller's log so far.
    pub fn controller_log_text(&self) -> String {
        std::fs::read_to_string(self.controller_log()).unwrap_or_default()
    }
}

impl Fleet {
    /// Starts `program args` in namespace `ns` (None: here) with output to `log`; the process is
    /// killed when the fleet is dropped.
    pub fn spawn_helper(&mut self, ns: Option<&str>, program: &Path, args: &[String], log: &Path) -> u32 {
        let child = spawn_logged(ns, program, args, log);
        let pid = child.id();
        self.helpers.push(child);
        pid
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        for mut c in self.helpers.drain(..) {
            kill(&mut c, "-KILL");
            let _ = c.wait();
        }
        for a in &mut self.agents {
            if let Some(mut c) = a.child.take() {
                kill(&mut c, "-KILL");
                let _ = c.wait();
            }
        }
        self.kill_controller();
        // Agents were SIGKILLed, so nothing stopped the proxy cores they supervised (a
        // systemd unit would kill its whole cgroup): end every process started from this
        // fleet's directory.
        let _ = Command::new("pkill").args(["-KILL", "-f", &self.tmp.path().display().to_string()]).status();
        if failed {
            eprintln!("---- controller log ----\n{}", self.log_tail(&self.controller_log(), 60));
            for a in &self.agents {
                eprintln!("---- agent {} log ----\n{}", a.host.name, self.log_tail(&a.host.log, 30));
            }
        }
        // Now, before the temp dir goes: this ends what runs in the namespaces, daemons the
        // agents started included, then deletes the namespaces.
        drop(self.net.take());
    }
}
