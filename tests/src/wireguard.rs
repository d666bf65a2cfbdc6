//! WireGuard in end-to-end tests: a client of the CandyPanel API (bearer logins, flat
//! `/api/manage` bodies), a real WireGuard peer brought up from a client config the panel
//! returned (wireguard-go in a namespace of the test fleet), and a reader of `wg show … dump`.

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{wait_for, Api, Fleet, Reply};
use crate::netns;

/// Whether WireGuard end-to-end tests can run here: root with network namespaces, and
/// wireguard-go, `wg` and `ping` installed.
pub fn available() -> Result<(), String> {
    if !netns::available() {
        return Err("needs root and `ip` (network namespaces)".into());
    }
    for tool in ["wireguard-go", "wg", "ping"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        if !found {
            return Err(format!(
                "`{tool}` not installed (apt-get install -y --no-install-recommends wireguard-tools wireguard-go iputils-ping)"
            ));
        }
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err("no /dev/net/tun".into());
    }
    Ok(())
}

/// `agent.toml` of an agent driving wireguard-go, polling fast.
pub const AGENT_CONFIG: &str =
    "[wireguard]\nbackend = \"userspace\"\npoll_interval = \"500ms\"\nconnected_window = \"180s\"\n";

/// The CandyPanel API of the fleet's controller, with the bearer token of a login.
#[derive(Debug, Clone)]
pub struct Candy {
    pub api: Api,
    pub token: String,
}

impl Candy {
    /// Not logged in yet.
    pub fn new(api: &Api) -> Candy {
        Candy { api: api.clone(), token: String::new() }
    }

    /// `POST /api/auth` with `body` (no credentials).
    pub fn auth(&self, body: &Value) -> Reply {
        self.api.request("POST", "/api/auth", Some(body.to_string().as_bytes()), None)
    }

    /// Installs the panel: `wg0` on `node_id`, `server_ip` in client configs, admin
    /// `user`/`password`. Panics unless it succeeds.
    pub fn install(&self, node_id: i64, server_ip: &str, range: &str, user: &str, password: &str) {
        let reply = self.auth(&json!({
            "action": "install", "server_ip": server_ip, "wg_port": "51820", "wg_address_range": range,
            "wg_dns": "8.8.8.8", "admin_user": user, "admin_password": password, "node_id": node_id,
        }));
        assert_eq!((reply.status, &reply.body["success"]), (200, &json!(true)), "install: {}", reply.raw);
    }

    /// Logs in and keeps the token.
    pub fn login(&mut self, user: &str, password: &str) {
        let reply = self.auth(&json!({ "action": "login", "username": user, "password": password }));
        assert_eq!(reply.status, 200, "login: {}", reply.raw);
        self.token = reply.body["data"]["access_token"].as_str().expect("access_token").to_string();
    }

    /// `Bearer <token>`.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `POST /api/manage` with a flat body.
    pub fn manage(&self, body: &Value) -> Reply {
        self.api.request("POST", "/api/manage", Some(body.to_string().as_bytes()), Some(&self.bearer()))
    }

    /// `POST /api/manage`, asserting success; the answer's `data`.
    pub fn manage_ok(&self, body: &Value) -> Value {
        let reply = self.manage(body);
        assert_eq!((reply.status, &reply.body["success"]), (200, &json!(true)), "{body}: {}", reply.raw);
        reply.body["data"].clone()
    }

    /// Creates a client and returns its config text.
    pub fn create_client(&self, name: &str, wg: u32, traffic: &str, expires: &str) -> String {
        let data = self.manage_ok(&json!({
            "resource": "client", "action": "create", "name": name, "expires": expires,
            "traffic": traffic, "wg_id": wg, "note": "",
        }));
        data["client_config"].as_str().expect("client_config").to_string()
    }

    /// `GET /api/data`'s `data`.
    pub fn data(&self) -> Value {
        let reply = self.api.request("GET", "/api/data", None, Some(&self.bearer()));
        assert_eq!(reply.status, 200, "/api/data: {}", reply.raw);
        reply.body["data"].clone()
    }

    /// One client of `/api/data`.
    pub fn client(&self, name: &str) -> Value {
        let data = self.data();
        let clients = data["clients"].as_array().expect("clients").clone();
        clients.into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("client {name} not in /api/data"))
    }

    /// GET `path` without credentials: status, content type, raw body (for images).
    pub fn get_bytes(&self, path: &str) -> (u16, String, Vec<u8>) {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
        let resp = match agent.get(&format!("{}{}", self.api.base, path)).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("GET {path}: {e}"),
        };
        let (status, kind) = (resp.status(), resp.header("content-type").unwrap_or_default().to_string());
        let mut body = Vec::new();
        resp.into_reader().take(10 << 20).read_to_end(&mut body).expect("read body");
        (status, kind, body)
    }
}

/// Asserts a refusal in the CandyPanel envelope: `status`, `success: false`, exactly `message`
/// (or a message starting with it when `message` ends in `…`), and no other field.
#[track_caller]
pub fn refused(reply: &Reply, status: u16, message: &str) {
    assert_eq!(reply.status, status, "expected {status} {message:?}, got: {}", reply.raw);
    assert_eq!(reply.body["success"], json!(false), "{}", reply.raw);
    let got = reply.body["message"].as_str().unwrap_or_else(|| panic!("no message: {}", reply.raw));
    match message.strip_suffix('…') {
        Some(prefix) => assert!(got.starts_with(prefix), "expected a message starting {prefix:?}, got {got:?}"),
        None => assert_eq!(got, message),
    }
    let fields: Vec<&String> = reply.body.as_object().expect("object").keys().collect();
    assert_eq!(fields.len(), 2, "only message and success: {}", reply.raw);
}

/// Today plus `days` as `YYYY-MM-DD` (UTC).
pub fn date_in(days: i64) -> String {
    let now = std::time::SystemTime::now();
    let at = if days >= 0 {
        now + Duration::from_secs(days as u64 * 86_400)
    } else {
        now - Duration::from_secs(days.unsigned_abs() * 86_400)
    };
    humantime::format_rfc3339_seconds(at).to_string()[..10].to_string()
}

/// A field of a wg-quick config (`Key = value`), first occurrence.
pub fn config_value(config: &str, key: &str) -> Option<String> {
    config.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().to_string())
    })
}

/// The public key of a base64 private key (`wg pubkey`).
pub fn public_key_of(private_key: &str) -> String {
    use std::io::Write;
    let mut child =
        Command::new("wg").arg("pubkey").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("wg pubkey");
    child.stdin.take().expect("stdin").write_all(format!("{private_key}\n").as_bytes()).expect("write key");
    let out = child.wait_with_output().expect("wg pubkey");
    assert!(out.status.success(), "wg pubkey failed for a config's private key");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `10.0.1.1/24` → `10.0.1.0/24`.
pub fn network_of(range: &str) -> String {
    let (addr, prefix) = range.split_once('/').expect("address/prefix");
    let addr: Ipv4Addr = addr.parse().expect("IPv4 address");
    let prefix: u32 = prefix.parse().expect("prefix");
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    format!("{}/{prefix}", Ipv4Addr::from(u32::from(addr) & mask))
}

/// One peer line of `wg show <dev> dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpPeer {
    pub public_key: String,
    pub endpoint: String,
    pub allowed_ips: Vec<String>,
    /// Unix seconds, 0 for never.
    pub latest_handshake: u64,
    pub rx: u64,
    pub tx: u64,
}

/// `wg show <dev> dump`: the device's public key and port, and its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub public_key: String,
    pub listen_port: u16,
    pub peers: Vec<DumpPeer>,
}

impl Dump {
    /// Parses the dump of one device.
    pub fn parse(text: &str) -> Dump {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let head: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
        let peers = lines
            .map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                assert!(f.len() >= 8, "peer line of a dump: {line:?}");
                DumpPeer {
                    public_key: f[0].to_string(),
                    endpoint: f[2].to_string(),
                    allowed_ips: f[3].split(',').filter(|a| *a != "(none)").map(str::to_string).collect(),
                    latest_handshake: f[4].parse().unwrap_or(0),
                    rx: f[5].parse().unwrap_or(0),
                    tx: f[6].parse().unwrap_or(0),
                }
            })
            .collect();
        Dump {
            public_key: head.get(1).unwrap_or(&"").to_string(),
            listen_port: head.get(2).and_then(|p| p.parse().ok()).unwrap_or(0),
            peers,
        }
    }

    /// The peer with that public key.
    pub fn peer(&self, public_key: &str) -> Option<&DumpPeer> {
        self.peers.iter().find(|p| p.public_key == public_key)
    }
}

/// The dump of device `dev` of agent `index`, or why it could not be read.
pub fn agent_dump(fleet: &Fleet, index: usize, dev: &str) -> Result<Dump, String> {
    fleet.agent_wg(index, &["show", dev, "dump"]).map(|t| Dump::parse(&t))
}

static PEERS: AtomicUsize = AtomicUsize::new(0);

/// Lines of a wg-quick config that `wg setconf` refuses (wg-quick applies them itself).
const WG_QUICK_ONLY: &[&str] =
    &["address", "dns", "mtu", "table", "preup", "postup", "predown", "postdown", "saveconfig"];

/// A WireGuard client on a host of its own on the fleet's bridge (so it reaches the agents'
/// addresses), from a config text the panel returned: wireguard-go in the foreground with a
/// private `/run/wireguard`, `wg setconf`, the config's address, and a route to the server's
/// subnet only (the namespace's other routes stay). Stopped on drop; its namespace goes with
/// the fleet.
#[derive(Debug)]
pub struct WgPeer {
    pub ns: String,
    pub device: String,
    /// The tunnel address the config gave (without prefix).
    pub address: String,
    pub public_key: String,
    dir: PathBuf,
    child: Child,
}

impl WgPeer {
    /// Brings the peer up; `server_range` is the server interface's `address/prefix`
    /// (`10.0.0.1/24`): its subnet is routed into the tunnel.
    pub fn up(fleet: &mut Fleet, name: &str, config: &str, server_range: &str) -> WgPeer {
        let host = fleet.new_host(name);
        let ns = host.ns.clone().expect("a WireGuard peer needs network namespaces");
        let device = format!("wgc{}", PEERS.fetch_add(1, Ordering::Relaxed));
        let dir = fleet.tmp.path().join(format!("peer-{name}"));
        std::fs::create_dir_all(&dir).expect("peer dir");
        let log = std::fs::File::create(dir.join("wireguard-go.log")).expect("peer log");
        let child = netns::with_wireguard_dir(Some(&ns), &dir, "wireguard-go".as_ref())
            .args(["-f", &device])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start wireguard-go");
        let private_key = config_value(config, "PrivateKey").expect("PrivateKey in the config");
        let addresses = config_value(config, "Address").expect("Address in the config");
        let address = addresses.split(',').next().unwrap_or_default().trim().to_string();
        let mut peer = WgPeer {
            ns,
            device,
            address: address.split('/').next().unwrap_or_default().to_string(),
            public_key: public_key_of(&private_key),
            dir,
            child,
        };
        let socket = peer.dir.join(format!("{}.sock", peer.device));
        wait_for(&format!("{}'s UAPI socket", peer.device), Duration::from_secs(10), || {
            if let Ok(Some(status)) = peer.child.try_wait() {
                panic!("wireguard-go exited with {status}: {}", peer.log());
            }
            socket.exists().then_some(())
        });
        let stripped: String = config
            .lines()
            .filter(|line| {
                let key = line.split_once('=').map(|(k, _)| k.trim().to_ascii_lowercase()).unwrap_or_default();
                !WG_QUICK_ONLY.contains(&key.as_str())
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let conf = peer.dir.join(format!("{}.conf", peer.device));
        std::fs::write(&conf, stripped).expect("write peer config");
        let dev = peer.device.clone();
        peer.wg(&["setconf", &dev, &conf.display().to_string()]).unwrap_or_else(|e| panic!("{e}"));
        let mtu = config_value(config, "MTU").unwrap_or_else(|| "1420".into());
        let ns = peer.ns.clone();
        for a in addresses.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            run_ip(&["-n", &ns, "address", "add", a, "dev", &dev]);
        }
        run_ip(&["-n", &ns, "link", "set", "dev", &dev, "mtu", &mtu, "up"]);
        run_ip(&["-n", &ns, "route", "add", &network_of(server_range), "dev", &dev]);
        peer
    }

    /// `wg ARGS` against this peer's device; stdout or why it failed.
    pub fn wg(&self, args: &[&str]) -> Result<String, String> {
        let out = netns::with_wireguard_dir(Some(&self.ns), &self.dir, "wg".as_ref())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("wg {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// `wg show` of the peer's device, parsed.
    pub fn dump(&self) -> Dump {
        Dump::parse(&self.wg(&["show", &self.device, "dump"]).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Pings `target` `count` times with `size`-byte payloads, 0.2 s apart, from the peer's
    /// namespace; returns how many replies came back (bounded: count × 0.2 s + 2 s).
    pub fn ping(&self, target: &str, count: u32, size: u32) -> u32 {
        let deadline = (count as f64 * 0.2 + 2.0).ceil() as u32;
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "ping", "-n", "-q", "-i", "0.2", "-W", "1"])
            .args(["-c", &count.to_string(), "-s", &size.to_string(), "-w", &deadline.to_string(), target])
            .stdin(Stdio::null())
            .output()
            .expect("ping");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(',').find_map(|part| part.trim().strip_suffix(" received")?.trim().parse().ok()).unwrap_or(0)
    }

    /// Sends `count` UDP datagrams of `size` bytes to `target:port` from the peer's namespace:
    /// traffic one way only (what answers is at most a rate-limited ICMP error).
    pub fn send_udp(&self, target: &str, port: u16, count: u32, size: u32) {
        let script = format!("for i in $(seq {count}); do printf '%0{size}d' 0 > /dev/udp/{target}/{port}; done");
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "timeout", "30", "bash", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .expect("bash");
        assert!(out.status.success(), "UDP to {target}:{port}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }

    /// Pings until one reply comes back (the first handshake may be retried after 5 s);
    /// panics after `timeout`.
    pub fn wait_ping(&self, target: &str, timeout: Duration) {
        let start = Instant::now();
        while self.ping(target, 3, 56) == 0 {
            assert!(
                start.elapsed() < timeout,
                "{} cannot ping {target} through the tunnel after {timeout:?}; peer: {:?}",
                self.device,
                self.wg(&["show", &self.device])
            );
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("wireguard-go.log")).unwrap_or_default()
    }
}

fn run_ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

impl Drop for WgPeer {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}
