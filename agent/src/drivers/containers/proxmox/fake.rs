//! A FAKE of the Proxmox VE API endpoints the backend uses, for tests only: Proxmox VE cannot
//! run in this test environment. It follows `specs/proxmox.md`: HTTPS on 127.0.0.1 with a
//! certificate from its own CA (so both `ca_file` and `fingerprint` are exercised), the
//! `PVEAPIToken` header checked (401 otherwise), `{"data": …}` answers, parameter errors as 400
//! with `errors`, other errors in the status line, UPIDs in the real format for every long
//! operation, tasks that run for a moment (`running`, then `stopped` with `OK` or an error).
//! CTs live in memory. It is not Proxmox: only what the backend calls is there.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::drivers::containers::tasks::UpidParts;

/// The templates the fake's `local` storage holds.
pub const TEMPLATES: &[&str] = &["local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"];

/// A snapshot of a fake CT.
#[derive(Debug, Clone)]
pub struct FakeSnapshot {
    pub name: String,
    pub description: String,
    pub config: BTreeMap<String, String>,
}

/// A CT of the fake node.
#[derive(Debug, Clone)]
pub struct FakeCt {
    pub config: BTreeMap<String, String>,
    pub running: bool,
    pub pid: u32,
    pub lock: Option<String>,
    pub snapshots: Vec<FakeSnapshot>,
}

#[derive(Debug, Clone)]
struct FakeTask {
    parts: UpidParts,
    running: bool,
    exitstatus: Option<String>,
    log: Vec<String>,
}

/// What a task does when it ends.
#[derive(Debug, Clone)]
enum Effect {
    /// With the error the worker finds (a template that does not exist).
    Create(Option<String>),
    Start,
    Stop,
    Destroy,
    Snapshot(FakeSnapshot),
    Rollback(String),
    DelSnapshot(String),
    Resize(u64),
}

/// The fake node's state; tests read and change it directly.
#[derive(Debug)]
pub struct FakeState {
    pub node: String,
    /// The accepted `Authorization` header.
    pub auth: String,
    pub token_id: String,
    pub cts: BTreeMap<u32, FakeCt>,
    tasks: HashMap<String, FakeTask>,
    /// The next task of this type ends with this exit status instead of running.
    pub fail_next: Option<(String, String)>,
    /// How long a task runs.
    pub delay: Duration,
    /// `METHOD path` of every authenticated request, in order.
    pub requests: Vec<String>,
    /// Form/query parameters of the last request to each `METHOD path`.
    pub last_params: HashMap<String, BTreeMap<String, String>>,
    /// `(user, password)` that `/access/ticket` accepts.
    pub console_login: (String, String),
    next_pid: u32,
}

/// A running fake.
pub struct FakePve {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// SHA-256 of its certificate, `AB:CD:…`.
    pub fingerprint: String,
    /// Its CA, PEM.
    pub ca_pem: String,
    pub state: Arc<Mutex<FakeState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakePve {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            // A client that refuses the certificate ends its handshake: go on with the next.
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl FakePve {
    /// Starts a fake node `node` accepting the token `token_id=secret`.
    pub async fn start(node: &str, token_id: &str, secret: &str) -> FakePve {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "Fake Proxmox Virtual Environment CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        // Like pve-ssl.pem: the node's names and the loopback addresses.
        let leaf = CertificateParams::new(vec![node.to_string(), "localhost".into(), "127.0.0.1".into()]).unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let fingerprint =
            super::client::colon_hex(ring::digest::digest(&ring::digest::SHA256, leaf_cert.der()).as_ref());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)
            .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)) };
        let state = Arc::new(Mutex::new(FakeState {
            node: node.into(),
            auth: format!("PVEAPIToken={token_id}={secret}"),
            token_id: token_id.into(),
            cts: BTreeMap::new(),
            tasks: HashMap::new(),
            fail_next: None,
            delay: Duration::from_millis(40),
            requests: vec![],
            last_params: HashMap::new(),
            console_login: ("console@pve".into(), "console-pass".into()),
            next_pid: 4000,
        }));
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakePve { url: format!("https://127.0.0.1:{port}"), fingerprint, ca_pem: ca_cert.pem(), state, server }
    }

    /// Locks the state.
    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A CT made outside the agent (by hand in Proxmox, say).
    pub fn add_foreign(&self, vmid: u32, hostname: &str, ip: &str) {
        let mut s = self.state();
        let pid = s.next_pid;
        s.next_pid += 1;
        let config = BTreeMap::from([
            ("hostname".to_string(), hostname.to_string()),
            ("cores".into(), "1".into()),
            ("memory".into(), "256".into()),
            ("swap".into(), "0".into()),
            ("rootfs".into(), "local-lvm:vm-200-disk-0,size=4G".into()),
            ("net0".into(), format!("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip={ip}/24,type=veth")),
        ]);
        s.cts.insert(vmid, FakeCt { config, running: true, pid, lock: None, snapshots: vec![] });
    }
}

fn ok(data: Value) -> Response {
    axum::Json(json!({ "data": data })).into_response()
}

/// An error as Proxmox sends it: the message in the status line, `errors` for parameters.
fn fail(status: u16, reason: &str, errors: Option<Value>) -> Response {
    let mut body = json!({ "data": null });
    if let Some(errors) = errors {
        body["errors"] = errors;
    }
    let mut response = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.to_string()) {
        response.extensions_mut().insert(phrase);
    }
    response
}

fn bad_params(errors: Value) -> Response {
    fail(400, "Parameter verification failed.", Some(errors))
}

fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&segment[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<FakeState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(path) = uri.path().strip_prefix("/api2/json") else { return fail(404, "Not Found", None) };
    let raw = if method == Method::GET || method == Method::DELETE {
        uri.query().unwrap_or("").as_bytes().to_vec()
    } else {
        body.to_vec()
    };
    let params: BTreeMap<String, String> = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&raw)
        .map(|v| v.into_iter().collect())
        .unwrap_or_default();
    let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    if segs == ["access", "ticket"] && method == Method::POST {
        let s = state.lock().unwrap();
        let (user, password) = &s.console_login;
        if params.get("username") == Some(user) && params.get("password") == Some(password) {
            return ok(json!({
                "ticket": format!("PVE:{user}:66A3F1C2::fake-signature"),
                "CSRFPreventionToken": "66A3F1C2:fake-csrf",
                "username": user,
            }));
        }
        return fail(401, "authentication failure", None);
    }
    {
        let mut s = state.lock().unwrap();
        if headers.get("authorization").and_then(|h| h.to_str().ok()) != Some(s.auth.as_str()) {
            return fail(401, "invalid token value!", None);
        }
        let key = format!("{method} {path}");
        s.requests.push(key.clone());
        s.last_params.insert(key, params.clone());
    }
    route(&state, &method, &segs, &params)
}

fn route(state: &Arc<Mutex<FakeState>>, method: &Method, segs: &[&str], params: &BTreeMap<String, String>) -> Response {
    let mut s = state.lock().unwrap();
    match (method.clone(), segs) {
        (Method::GET, ["version"]) => ok(json!({"version": "8.2.4", "release": "8.2", "repoid": "faa83925"})),
        (Method::GET, ["cluster", "nextid"]) => {
            let id = (100u32..).find(|id| !s.cts.contains_key(id)).unwrap_or(100);
            ok(json!(id.to_string()))
        }
        (_, ["nodes", node, ..]) if *node != s.node => fail(595, &format!("no such cluster node '{node}'"), None),
        (Method::GET, ["nodes", _, "lxc"]) => {
            let list: Vec<Value> = s
                .cts
                .iter()
                .map(|(vmid, ct)| {
                    let mut v = json!({
                        // Proxmox sends LXC VMIDs as strings here.
                        "vmid": vmid.to_string(),
                        "name": ct.config.get("hostname").cloned().unwrap_or(format!("CT{vmid}")),
                        "status": if ct.running { "running" } else { "stopped" },
                        "maxmem": mib(&ct.config, "memory") * 1024 * 1024,
                        "type": "lxc",
                    });
                    if let Some(tags) = ct.config.get("tags") {
                        v["tags"] = json!(tags);
                    }
                    if let Some(lock) = &ct.lock {
                        v["lock"] = json!(lock);
                    }
                    v
                })
                .collect();
            ok(json!(list))
        }
        (Method::POST, ["nodes", _, "lxc"]) => create(&mut s, state, params),
        (method, ["nodes", _, "lxc", vmid, rest @ ..]) => {
            let Ok(vmid) = vmid.parse::<u32>() else {
                return bad_params(json!({"vmid": "type check ('integer') failed"}));
            };
            if !s.cts.contains_key(&vmid) {
                return fail(
                    500,
                    &format!("Configuration file 'nodes/{}/lxc/{vmid}.conf' does not exist", s.node),
                    None,
                );
            }
            ct_route(&mut s, state, &method, vmid, rest, params)
        }
        (Method::GET, ["nodes", _, "tasks", upid, "status"]) => match s.tasks.get(*upid) {
            Some(t) => {
                let mut v = json!({
                    "upid": upid, "node": t.parts.node, "pid": t.parts.pid, "pstart": t.parts.pstart,
                    "starttime": t.parts.starttime, "type": t.parts.kind, "id": t.parts.id, "user": t.parts.user,
                    "status": if t.running { "running" } else { "stopped" },
                });
                if let Some(e) = &t.exitstatus {
                    v["exitstatus"] = json!(e);
                }
                ok(v)
            }
            None => fail(500, "no such task", None),
        },
        (Method::GET, ["nodes", _, "tasks", upid, "log"]) => match s.tasks.get(*upid) {
            Some(t) => {
                ok(json!(t.log.iter().enumerate().map(|(n, l)| json!({"n": n + 1, "t": l})).collect::<Vec<_>>()))
            }
            None => fail(500, "no such task", None),
        },
        (Method::DELETE, ["nodes", _, "tasks", upid]) => match s.tasks.get_mut(*upid) {
            Some(t) => {
                t.running = false;
                t.exitstatus = Some("interrupted by signal".into());
                ok(Value::Null)
            }
            None => fail(500, "no such task", None),
        },
        _ => fail(501, &format!("Method '{method} /{}' not implemented", segs.join("/")), None),
    }
}

fn mib(config: &BTreeMap<String, String>, key: &str) -> u64 {
    config.get(key).and_then(|v| v.parse().ok()).unwrap_or(512)
}

fn disk_gib(config: &BTreeMap<String, String>) -> u64 {
    let rootfs = config.get("rootfs").map(String::as_str).unwrap_or("");
    rootfs
        .split(',')
        .find_map(|kv| kv.strip_prefix("size="))
        .and_then(|s| s.trim_end_matches('G').parse().ok())
        .unwrap_or(0)
}

const CREATE_KEYS: &[&str] = &[
    "vmid",
    "ostemplate",
    "hostname",
    "password",
    "ssh-public-keys",
    "storage",
    "rootfs",
    "cores",
    "memory",
    "swap",
    "net0",
    "unprivileged",
    "tags",
    "description",
    "start",
    "onboot",
    "features",
];
const CONFIG_KEYS: &[&str] =
    &["cores", "memory", "swap", "net0", "hostname", "description", "tags", "onboot", "nameserver", "digest", "rootfs"];

fn unknown_params(params: &BTreeMap<String, String>, allowed: &[&str]) -> Option<Response> {
    let unknown: serde_json::Map<String, Value> = params
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| {
            (k.clone(), json!("property is not defined in schema and the schema does not allow additional properties"))
        })
        .collect();
    (!unknown.is_empty()).then(|| bad_params(Value::Object(unknown)))
}

/// Checks `cores` and `memory` as Proxmox's schema does.
fn check_limits(params: &BTreeMap<String, String>) -> Option<Response> {
    if let Some(c) = params.get("cores") {
        if !c.parse::<u32>().is_ok_and(|c| (1..=8192).contains(&c)) {
            return Some(bad_params(json!({"cores": "value must have a minimum value of 1"})));
        }
    }
    if let Some(m) = params.get("memory") {
        if !m.parse::<u64>().is_ok_and(|m| m >= 16) {
            return Some(bad_params(json!({"memory": "value must have a minimum value of 16"})));
        }
    }
    None
}

fn create(s: &mut FakeState, state: &Arc<Mutex<FakeState>>, params: &BTreeMap<String, String>) -> Response {
    if let Some(r) = unknown_params(params, CREATE_KEYS) {
        return r;
    }
    let mut missing = serde_json::Map::new();
    for key in ["vmid", "ostemplate"] {
        if !params.contains_key(key) {
            missing.insert(key.into(), json!("property is missing and it is not optional"));
        }
    }
    if !missing.is_empty() {
        return bad_params(Value::Object(missing));
    }
    let Ok(vmid) = params["vmid"].parse::<u32>() else {
        return bad_params(json!({"vmid": "type check ('integer') failed"}));
    };
    if vmid < 100 {
        return bad_params(json!({"vmid": "value must have a minimum value of 100"}));
    }
    if params.get("password").is_some_and(|p| p.chars().count() < 5) {
        return bad_params(json!({"password": "value must have a minimum length of 5"}));
    }
    if let Some(r) = check_limits(params) {
        return r;
    }
    let rootfs = params.get("rootfs").cloned().unwrap_or("local:4".into());
    let Some(size) = rootfs.split_once(':').and_then(|(_, size)| size.parse::<u64>().ok()) else {
        return bad_params(json!({"rootfs": format!("invalid format - unable to parse volume ID '{rootfs}'")}));
    };
    if s.cts.contains_key(&vmid) {
        return fail(500, &format!("CT {vmid} already exists on node '{}'", s.node), None);
    }
    let storage = rootfs.split(':').next().unwrap_or("local");
    let mut config: BTreeMap<String, String> = params
        .iter()
        .filter(|(k, _)| !["vmid", "password", "start", "storage", "ssh-public-keys"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    config.insert("rootfs".into(), format!("{storage}:vm-{vmid}-disk-0,size={size}G"));
    config.entry("hostname".into()).or_insert(format!("CT{vmid}"));
    config.entry("memory".into()).or_insert("512".into());
    config.entry("swap".into()).or_insert("512".into());
    config.entry("cores".into()).or_insert("1".into());
    if let Some(pw) = params.get("password") {
        // Only for the tests' eyes: Proxmox writes it into the guest's /etc/shadow.
        config.insert("x-fake-root-password".into(), pw.clone());
    }
    s.cts.insert(vmid, FakeCt { config, running: false, pid: 0, lock: Some("create".into()), snapshots: vec![] });
    let template = &params["ostemplate"];
    // The worker finds out: the task fails (and the CT goes), as in Proxmox.
    let error = (!TEMPLATES.contains(&template.as_str()))
        .then(|| format!("unable to create CT {vmid} - volume '{template}' does not exist"));
    ok(json!(start_task(s, state, "vzcreate", vmid, Effect::Create(error))))
}

fn ct_route(
    s: &mut FakeState,
    state: &Arc<Mutex<FakeState>>,
    method: &Method,
    vmid: u32,
    rest: &[&str],
    params: &BTreeMap<String, String>,
) -> Response {
    let node = s.node.clone();
    let ct = s.cts.get(&vmid).cloned().unwrap();
    let locked = |what: &str| fail(500, &format!("CT is locked ({what})"), None);
    match (method.clone(), rest) {
        (Method::DELETE, []) => {
            if ct.running {
                return fail(500, &format!("CT {vmid} is running - destroy failed"), None);
            }
            if let Some(l) = &ct.lock {
                return locked(l);
            }
            ok(json!(start_task(s, state, "vzdestroy", vmid, Effect::Destroy)))
        }
        (Method::GET, ["status", "current"]) => {
            let cores: u64 = ct.config.get("cores").and_then(|c| c.parse().ok()).unwrap_or(1);
            let running = ct.running;
            ok(json!({
                "vmid": vmid,
                "name": ct.config.get("hostname"),
                "status": if running { "running" } else { "stopped" },
                "cpu": if running { 0.25 } else { 0.0 },
                "cpus": cores,
                "mem": if running { 48 * 1024 * 1024 } else { 0 },
                "maxmem": mib(&ct.config, "memory") * 1024 * 1024,
                "disk": if running { 700_000_000u64 } else { 0 },
                "maxdisk": disk_gib(&ct.config) * 1024 * 1024 * 1024,
                "netin": if running { 123_456 } else { 0 },
                "netout": if running { 7_890 } else { 0 },
                "uptime": if running { 42 } else { 0 },
                "pid": if running { json!(ct.pid) } else { Value::Null },
                "type": "lxc",
            }))
        }
        (Method::POST, ["status", action]) => {
            if let Some(l) = &ct.lock {
                return locked(l);
            }
            let (kind, effect, allowed): (&str, Effect, &[&str]) = match *action {
                "start" => ("vzstart", Effect::Start, &["skiplock", "debug"]),
                "stop" => ("vzstop", Effect::Stop, &["skiplock", "overrule-shutdown"]),
                "shutdown" => ("vzshutdown", Effect::Stop, &["timeout", "forceStop"]),
                _ => {
                    return fail(
                        501,
                        &format!("Method 'POST /nodes/{node}/lxc/{vmid}/status/{action}' not implemented"),
                        None,
                    )
                }
            };
            if let Some(r) = unknown_params(params, allowed) {
                return r;
            }
            ok(json!(start_task(s, state, kind, vmid, effect)))
        }
        (Method::GET, ["config"]) => {
            let mut map = serde_json::Map::new();
            for (k, v) in ct.config.iter().filter(|(k, _)| !k.starts_with("x-fake")) {
                // Numbers as numbers, as Proxmox types them.
                let value = match v.parse::<u64>() {
                    Ok(n) if ["cores", "memory", "swap", "unprivileged"].contains(&k.as_str()) => json!(n),
                    _ => json!(v),
                };
                map.insert(k.clone(), value);
            }
            map.insert("digest".into(), json!("0123456789abcdef0123456789abcdef01234567"));
            ok(Value::Object(map))
        }
        (Method::PUT, ["config"]) => {
            if let Some(r) = unknown_params(params, CONFIG_KEYS) {
                return r;
            }
            if params.contains_key("rootfs") {
                return bad_params(json!({"rootfs": "unable to modify read-only option: 'rootfs'"}));
            }
            if let Some(r) = check_limits(params) {
                return r;
            }
            if let Some(l) = &ct.lock {
                return locked(l);
            }
            let ct = s.cts.get_mut(&vmid).unwrap();
            for (k, v) in params.iter().filter(|(k, _)| k.as_str() != "digest") {
                ct.config.insert(k.clone(), v.clone());
            }
            ok(Value::Null)
        }
        (Method::GET, ["pending"]) => ok(json!(ct
            .config
            .iter()
            .filter(|(k, _)| !k.starts_with("x-fake"))
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect::<Vec<_>>())),
        (Method::PUT, ["resize"]) => {
            if params.get("disk").map(String::as_str) != Some("rootfs") {
                return bad_params(json!({"disk": "value 'rootfs' or 'mpN' expected"}));
            }
            let size = params.get("size").cloned().unwrap_or_default();
            let current = disk_gib(&ct.config);
            let wanted = match size.strip_prefix('+') {
                Some(plus) => plus.trim_end_matches('G').parse::<u64>().map(|g| current + g),
                None => size.trim_end_matches('G').parse::<u64>(),
            };
            let Ok(wanted) = wanted else {
                return bad_params(json!({"size": "value does not match the regex pattern"}));
            };
            if wanted < current {
                return fail(500, "unable to shrink disk size", None);
            }
            ok(json!(start_task(s, state, "resize", vmid, Effect::Resize(wanted))))
        }
        (Method::GET, ["snapshot"]) => {
            let mut list: Vec<Value> = ct
                .snapshots
                .iter()
                .map(|sn| json!({"name": sn.name, "description": sn.description, "snaptime": now_secs()}))
                .collect();
            list.push(json!({"name": "current", "description": "You are here!", "running": u8::from(ct.running)}));
            ok(json!(list))
        }
        (Method::POST, ["snapshot"]) => {
            let Some(name) = params.get("snapname") else {
                return bad_params(json!({"snapname": "property is missing and it is not optional"}));
            };
            let valid = name.len() >= 2
                && name.len() <= 40
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return bad_params(json!({"snapname": format!("invalid format - invalid configuration ID '{name}'")}));
            }
            if name == "current" || ct.snapshots.iter().any(|sn| &sn.name == name) {
                return fail(500, &format!("snapshot name '{name}' already used"), None);
            }
            let snap = FakeSnapshot {
                name: name.clone(),
                description: params.get("description").cloned().unwrap_or_default(),
                config: ct.config.clone(),
            };
            ok(json!(start_task(s, state, "vzsnapshot", vmid, Effect::Snapshot(snap))))
        }
        (Method::DELETE, ["snapshot", name]) => {
            if !ct.snapshots.iter().any(|sn| sn.name == *name) {
                return fail(500, &format!("snapshot '{name}' does not exist"), None);
            }
            ok(json!(start_task(s, state, "vzdelsnapshot", vmid, Effect::DelSnapshot(name.to_string()))))
        }
        (Method::POST, ["snapshot", name, "rollback"]) => {
            if !ct.snapshots.iter().any(|sn| sn.name == *name) {
                return fail(500, &format!("snapshot '{name}' does not exist"), None);
            }
            ok(json!(start_task(s, state, "vzrollback", vmid, Effect::Rollback(name.to_string()))))
        }
        (Method::GET, ["interfaces"]) => {
            if !ct.running {
                return fail(500, &format!("CT {vmid} not running"), None);
            }
            let ip = ct
                .config
                .get("net0")
                .and_then(|n| n.split(',').find_map(|kv| kv.strip_prefix("ip=")))
                .map(str::to_string);
            let mut list = vec![json!({"name": "lo", "inet": "127.0.0.1/8", "hwaddr": "00:00:00:00:00:00"})];
            if let Some(ip) = ip {
                list.push(json!({"name": "eth0", "inet": ip, "hwaddr": "bc:24:11:00:00:01"}));
            }
            ok(json!(list))
        }
        _ => fail(501, &format!("Method '{method} /nodes/{node}/lxc/{vmid}/{}' not implemented", rest.join("/")), None),
    }
}

/// Registers a running task and ends it after the delay: its effect applied, or the failure
/// `fail_next` asked for.
fn start_task(s: &mut FakeState, state: &Arc<Mutex<FakeState>>, kind: &str, vmid: u32, effect: Effect) -> String {
    let pid = s.next_pid;
    s.next_pid += 1;
    let parts = UpidParts {
        node: s.node.clone(),
        pid,
        pstart: 0x0A1B_2C3D,
        starttime: now_secs(),
        kind: kind.into(),
        id: vmid.to_string(),
        user: s.token_id.clone(),
    };
    let upid = parts.format().0;
    let first = format!("{kind} of CT {vmid} started");
    s.tasks.insert(upid.clone(), FakeTask { parts, running: true, exitstatus: None, log: vec![first] });
    let delay = s.delay;
    let state = state.clone();
    let id = upid.clone();
    let kind = kind.to_string();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut s = state.lock().unwrap();
        let failure = match &s.fail_next {
            Some((k, msg)) if *k == kind => Some(msg.clone()),
            _ => None,
        };
        let result = match failure {
            Some(msg) => {
                s.fail_next = None;
                if matches!(effect, Effect::Create(_)) {
                    s.cts.remove(&vmid);
                }
                Err(msg)
            }
            None => apply(&mut s, vmid, &effect),
        };
        if s.tasks.get(&id).is_some_and(|t| !t.running) {
            return; // stopped by DELETE meanwhile
        }
        let task = s.tasks.get_mut(&id).unwrap();
        task.running = false;
        match result {
            Ok(()) => {
                task.log.push("TASK OK".into());
                task.exitstatus = Some("OK".into());
            }
            Err(msg) => {
                task.log.push(format!("TASK ERROR: {msg}"));
                task.exitstatus = Some(msg);
            }
        }
    });
    upid
}

fn apply(s: &mut FakeState, vmid: u32, effect: &Effect) -> Result<(), String> {
    let pid = s.next_pid;
    s.next_pid += 1;
    let Some(ct) = s.cts.get_mut(&vmid) else { return Err(format!("CT {vmid} does not exist")) };
    match effect {
        Effect::Create(Some(error)) => {
            s.cts.remove(&vmid);
            return Err(error.clone());
        }
        Effect::Create(None) => ct.lock = None,
        Effect::Start if ct.running => return Err(format!("CT {vmid} already running")),
        Effect::Start => {
            ct.running = true;
            ct.pid = pid;
        }
        Effect::Stop if !ct.running => return Err(format!("CT {vmid} not running")),
        Effect::Stop => {
            ct.running = false;
            ct.pid = 0;
        }
        Effect::Destroy => {
            s.cts.remove(&vmid);
        }
        Effect::Snapshot(snap) => ct.snapshots.push(snap.clone()),
        Effect::Rollback(name) => {
            let snap = ct.snapshots.iter().find(|sn| &sn.name == name).cloned().ok_or("no such snapshot")?;
            // Proxmox stops the CT for a rollback (start=1 would start it again).
            ct.running = false;
            ct.pid = 0;
            ct.config = snap.config;
        }
        Effect::DelSnapshot(name) => ct.snapshots.retain(|sn| &sn.name != name),
        Effect::Resize(gib) => {
            let rootfs = ct.config.get("rootfs").cloned().unwrap_or_default();
            let volume = rootfs.split(',').next().unwrap_or("").to_string();
            ct.config.insert("rootfs".into(), format!("{volume},size={gib}G"));
        }
    }
    Ok(())
}
