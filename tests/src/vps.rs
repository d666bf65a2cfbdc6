//! The VPS API in end-to-end tests: a Bearer client (the panel's login), and what it takes to run
//! real LXC containers on a test agent (root, the lxc tools, the busybox template).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{bin_dir, wait_for, Api, Fleet, Reply};

/// Whether containers can run here: root, network namespaces, the lxc tools, and the busybox
/// template with a static busybox.
pub fn available() -> Result<(), String> {
    if !crate::netns::available() {
        return Err("needs root and `ip` (network namespaces)".into());
    }
    for tool in
        ["lxc-create", "lxc-start", "lxc-attach", "lxc-info", "lxc-stop", "lxc-destroy", "lxc-snapshot", "busybox"]
    {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        if !found {
            return Err(format!("`{tool}` not installed (apt-get install -y lxc lxc-templates busybox-static)"));
        }
    }
    if !Path::new("/usr/share/lxc/templates/lxc-busybox").exists() {
        return Err("the LXC busybox template is missing (lxc-templates)".into());
    }
    Ok(())
}

/// `agent.toml` of an agent running LXC containers on a bridge of its own (`n` keeps bridges and
/// subnets of concurrent tests apart), sampling every second.
pub fn agent_config(n: u8) -> String {
    format!(
        "[containers]\nbackend = \"lxc\"\nbridge = \"fltv{n}\"\naddress_pool = \"10.205.{n}.10-10.205.{n}.60\"\n\
         gateway_cidr = \"10.205.{n}.1/24\"\nsample_interval = \"1s\"\n"
    )
}

/// A logged-in user of the VPS API.
pub struct Vps {
    api: Api,
    token: String,
}

impl Vps {
    /// Logs in with `POST /api/auth/login` (`email` carries a user name or an e-mail).
    pub fn login(api: &Api, login: &str, password: &str) -> Vps {
        let body = json!({ "email": login, "password": password });
        let reply = api.request("POST", "/api/auth/login", Some(body.to_string().as_bytes()), None);
        assert_eq!(reply.status, 200, "login as {login}: {}", reply.raw);
        let token = reply.body["token"].as_str().unwrap_or_else(|| panic!("no token: {}", reply.raw)).to_string();
        Vps { api: api.clone(), token }
    }

    /// `Authorization` value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Any call with this user's token; `body` is JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let text = body.map(|b| b.to_string());
        self.api.request(method, path, text.as_deref().map(str::as_bytes), Some(&self.bearer()))
    }

    /// A call that must answer `status`; returns the body.
    #[track_caller]
    pub fn expect(&self, method: &str, path: &str, body: Option<&Value>, status: u16) -> Value {
        let reply = self.call(method, path, body);
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.raw);
        reply.body
    }

    /// Waits for task `upid` to end; returns its final state (`ok` or `error`) and the answer.
    pub fn wait_task(&self, upid: &str, limit: Duration) -> Value {
        wait_for(&format!("task {upid}"), limit, || {
            let reply = self.call("GET", &format!("/api/server/tasks/{upid}"), None);
            assert_eq!(reply.status, 200, "task {upid}: {}", reply.raw);
            (reply.body["state"] != "running").then_some(reply.body)
        })
    }

    /// Waits until task `upid` ended well.
    #[track_caller]
    pub fn task_ok(&self, upid: &str, limit: Duration) {
        let task = self.wait_task(upid, limit);
        assert_eq!(task["state"], "ok", "task {upid}: {task:#}");
    }
}

/// Runs `lxc-attach -n NAME -- sh -c SCRIPT` in network namespace `ns` (the container's command
/// socket lives in the namespace its monitor runs in); returns stdout.
pub fn in_guest(ns: Option<&str>, name: &str, script: &str) -> Result<String, String> {
    let mut cmd = host_command(ns, "lxc-attach");
    let out = cmd
        .args(["-n", name, "--clear-env", "--", "sh", "-c", script])
        .output()
        .map_err(|e| format!("lxc-attach: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "lxc-attach {name} `{script}`: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `lxc-cgroup -n NAME KEY` in `ns`.
pub fn cgroup_value(ns: Option<&str>, name: &str, key: &str) -> Option<String> {
    let mut cmd = host_command(ns, "lxc-cgroup");
    let out = cmd.args(["-n", name, key]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// An lxc tool run as on the agent's host: in its network namespace (the containers' command
/// sockets are abstract sockets of that namespace), with the machine's `/sys`.
fn host_command(ns: Option<&str>, tool: &str) -> Command {
    match ns {
        Some(ns) => crate::netns::net_only(ns, std::ffi::OsStr::new(tool)),
        None => Command::new(tool),
    }
}

/// Whether a container named `name` exists on this host.
pub fn container_exists(name: &str) -> bool {
    Path::new("/var/lib/lxc").join(name).exists()
}

/// Destroys containers by name, whatever their state (cleanup after a failed test).
pub fn destroy(ns: Option<&str>, names: &[String]) {
    for name in names {
        for args in [vec!["lxc-stop", "-n", name, "-k"], vec!["lxc-destroy", "-n", name, "-f"]] {
            let mut cmd = host_command(ns, args[0]);
            cmd.args(&args[1..]);
            let _ = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
        }
    }
}

/// Adds a customer (role viewer) with the controller's CLI; `email` optional.
pub fn add_user(fleet: &Fleet, name: &str, password: &str, email: Option<&str>) {
    let mut cmd = Command::new(bin_dir().join("flotilla-controller"));
    cmd.arg("--data-dir").arg(fleet.controller_data_dir()).args(["user", "add", name, "--role", "viewer"]);
    if let Some(email) = email {
        cmd.args(["--email", email]);
    }
    let out = cmd.env("FLOTILLA_PASSWORD", password).output().expect("flotilla-controller user add");
    assert!(out.status.success(), "user add {name}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Destroys the named containers when dropped, so a test that fails halfway leaves none behind.
pub struct Cleanup {
    pub ns: Option<String>,
    pub names: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        destroy(self.ns.as_deref(), &self.names);
    }
}

/// The catalog most tests order from: a BusyBox OS and a tiny tariff (1 core, 256 MB, 1 GB),
/// added by `admin`. Returns their ids.
pub fn busybox_catalog(admin: &Vps) -> (i64, i64) {
    let os = admin.expect("POST", "/api/os", Some(&json!({ "name": "BusyBox", "template": "busybox" })), 201);
    let tariff = json!({ "name": "Tiny", "cores": 1, "memory": 256, "disk": 1, "price": 100 });
    let tariff = admin.expect("POST", "/api/tariff", Some(&tariff), 201);
    (os["id"].as_i64().expect("os id"), tariff["id"].as_i64().expect("tariff id"))
}

/// A server just ordered with `POST /api/server/create` (its container is still being made).
#[derive(Debug, Clone)]
pub struct Order {
    pub id: i64,
    /// Its container on the node.
    pub container: String,
    /// The root password shown once.
    pub password: String,
    /// The create task's UPID.
    pub task: String,
}

impl Order {
    /// Orders a server of OS `os` and tariff `tariff` as `user`.
    pub fn place(user: &Vps, os: i64, tariff: i64) -> Order {
        let created = user.expect("POST", "/api/server/create", Some(&json!({ "osId": os, "tariffId": tariff })), 201);
        let id = created["id"].as_i64().expect("id");
        let server = user.expect("GET", &format!("/api/server/{id}"), None, 200);
        Order {
            id,
            container: server["container"].as_str().expect("container").to_string(),
            password: created["rootPassword"].as_str().expect("rootPassword").to_string(),
            task: created["taskId"].as_str().expect("taskId").to_string(),
        }
    }

    /// Waits for the create task and for `/status` to say running with an address; returns it.
    pub fn wait_running(&self, user: &Vps, limit: Duration) -> Value {
        user.task_ok(&self.task, limit);
        wait_for("the server running with an address", limit, || {
            let s = user.expect("GET", &format!("/api/server/{}/status", self.id), None, 200);
            (s["status"] == "running" && s["ipAddress"].is_string()).then_some(s)
        })
    }
}
