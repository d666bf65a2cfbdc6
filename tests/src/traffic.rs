//! Real traffic through the agents' proxy cores: a file server on an agent's host, a client core
//! (a second v2ray process) dialing one of its inbounds from the controller's side of the network
//! (the "internet" of the test fleet), and curl downloading through the client core's SOCKS port.
//! In loopback mode everything runs on 127.0.0.1.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::Fleet;

/// An HTTP server on an agent's host serving one file.
#[derive(Debug, Clone)]
pub struct FileServer {
    /// URL as seen from the agent's host (where the proxy core connects from).
    pub url: String,
    pub size: u64,
}

/// A client proxy core with a SOCKS inbound.
#[derive(Debug, Clone)]
pub struct ClientCore {
    pub socks: u16,
    ns: Option<String>,
}

/// Path of the v2ray binary used as client core.
pub fn v2ray_binary() -> Option<PathBuf> {
    ["/usr/bin/v2ray", "/usr/local/bin/v2ray"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// A port unlikely to be taken in a fresh namespace (or on loopback: checked free now).
fn port_in(ns: Option<&str>) -> u16 {
    match ns {
        None => crate::harness::free_port(),
        Some(_) => 20_000 + rand::random::<u16>() % 30_000,
    }
}

fn in_ns(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

/// Waits until something listens on 127.0.0.1:`port` inside `ns`.
fn wait_listening(ns: Option<&str>, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = in_ns(ns, "bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not listen on port {port} within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Fleet {
    /// Namespace of the traffic clients: the controller's (None in loopback mode).
    pub fn client_ns(&self) -> Option<String> {
        self.net().map(|n| n.controller_ns())
    }

    /// Address a client dials to reach agent `index`'s inbounds.
    pub fn agent_dial_addr(&mut self, index: usize) -> String {
        self.agent(index).host.addr.map(|a| a.to_string()).unwrap_or_else(|| "127.0.0.1".into())
    }

    /// Serves a file of `size` bytes over HTTP on agent `index`'s host.
    pub fn file_server(&mut self, index: usize, size: u64) -> FileServer {
        let ns = self.agent(index).host.ns.clone();
        let dir = self.tmp.path().join(format!("www-{index}-{size}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = std::fs::File::create(dir.join("f.bin")).unwrap();
        file.set_len(size).unwrap();
        let port = port_in(ns.as_deref());
        let args: Vec<String> = vec![
            "-m".into(),
            "http.server".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--directory".into(),
            dir.display().to_string(),
        ];
        let log = self.tmp.path().join(format!("www-{index}-{port}.log"));
        self.spawn_helper(ns.as_deref(), std::path::Path::new("python3"), &args, &log);
        wait_listening(ns.as_deref(), port, "file server");
        FileServer { url: format!("http://127.0.0.1:{port}/f.bin"), size }
    }

    /// Starts a client core whose only outbound is `outbound` (v2ray JSON).
    pub fn client_core(&mut self, outbound: Value) -> ClientCore {
        let ns = self.client_ns();
        self.client_core_in(ns, outbound)
    }

    /// Like [`Fleet::client_core`], on the host of namespace `ns` (a user elsewhere).
    pub fn client_core_in(&mut self, ns: Option<String>, outbound: Value) -> ClientCore {
        let socks = port_in(ns.as_deref());
        let config = json!({
            "log": { "loglevel": "warning", "access": "none" },
            "inbounds": [{ "listen": "127.0.0.1", "port": socks, "protocol": "socks",
                           "settings": { "auth": "noauth", "udp": false } }],
            "outbounds": [outbound],
        });
        let path = self.tmp.path().join(format!("client-core-{socks}.json"));
        std::fs::write(&path, config.to_string()).unwrap();
        let binary = v2ray_binary().expect("v2ray is needed for client cores");
        let log = self.tmp.path().join(format!("client-core-{socks}.log"));
        self.spawn_helper(ns.as_deref(), &binary, &["-config".into(), path.display().to_string()], &log);
        wait_listening(ns.as_deref(), socks, "client core");
        ClientCore { socks, ns }
    }

    /// Starts a client core from a share link (`vmess://` or `vless://`), as a user's app would.
    pub fn client_core_from_link(&mut self, link: &str) -> ClientCore {
        self.client_core(outbound_from_link(link))
    }
}

/// A v2ray outbound for a share link, parsed the way client apps read them.
pub fn outbound_from_link(link: &str) -> Value {
    if let Some(b64) = link.strip_prefix("vmess://") {
        let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).expect("vmess link is base64");
        let v: Value = serde_json::from_slice(&raw).expect("vmess link is JSON");
        let port = v["port"].as_u64().or_else(|| v["port"].as_str().and_then(|p| p.parse().ok())).expect("port");
        let mut out = json!({
            "protocol": "vmess",
            "settings": { "vnext": [{ "address": v["add"], "port": port,
                "users": [{ "id": v["id"], "alterId": 0, "security": "auto" }] }] },
        });
        if v["net"].as_str().is_some_and(|n| n != "tcp") {
            out["streamSettings"] = json!({ "network": v["net"], "wsSettings": { "path": v["path"] } });
        }
        return out;
    }
    if let Some(rest) = link.strip_prefix("vless://") {
        let url = url_parts(rest);
        return json!({
            "protocol": "vless",
            "settings": { "vnext": [{ "address": url.host, "port": url.port,
                "users": [{ "id": url.user, "encryption": "none" }] }] },
        });
    }
    panic!("unsupported share link {link}");
}

struct LinkParts {
    user: String,
    host: String,
    port: u16,
}

fn url_parts(rest: &str) -> LinkParts {
    let rest = rest.split('#').next().unwrap_or_default();
    let rest = rest.split('?').next().unwrap_or_default();
    let (user, hostport) = rest.split_once('@').expect("user@host:port");
    let (host, port) = hostport.rsplit_once(':').expect("host:port");
    LinkParts {
        user: user.to_string(),
        host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port: port.trim_end_matches('/').parse().expect("port"),
    }
}

impl ClientCore {
    fn curl(&self, server: &FileServer, limit_rate: Option<&str>, max_secs: u32) -> Command {
        let mut c = in_ns(self.ns.as_deref(), "curl");
        c.args(["-sS", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", &max_secs.to_string()])
            .args(["--socks5-hostname", &format!("127.0.0.1:{}", self.socks)]);
        if let Some(rate) = limit_rate {
            c.args(["--limit-rate", rate]);
        }
        c.arg(&server.url);
        c
    }

    /// Downloads the server's file through this core; the bytes received, or curl's error.
    pub fn download(&self, server: &FileServer) -> Result<u64, String> {
        self.download_within(server, 120)
    }

    /// A download expected to fail: a refused user's connection is not closed at once (the
    /// server drains it to resist probing), so give up after `max_secs`.
    pub fn download_within(&self, server: &FileServer, max_secs: u32) -> Result<u64, String> {
        let out = self.curl(server, None, max_secs).output().map_err(|e| format!("curl: {e}"))?;
        let got: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        if out.status.success() {
            Ok(got)
        } else {
            Err(format!("curl {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Starts a rate-limited download in the background; join it with [`Download::finish`].
    pub fn start_download(&self, server: &FileServer, rate: &str) -> Download {
        let child = self
            .curl(server, Some(rate), 120)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("curl");
        Download { child: Some(child) }
    }
}

/// A download running in the background.
#[derive(Debug)]
pub struct Download {
    child: Option<std::process::Child>,
}

impl Download {
    /// Whether curl is still transferring.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits for the download; the bytes received, or curl's error.
    pub fn finish(mut self) -> Result<u64, String> {
        let child = self.child.take().expect("download");
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let got: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        if out.status.success() {
            Ok(got)
        } else {
            Err(format!("curl {} after {got} bytes: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
