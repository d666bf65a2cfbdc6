//! The two Debian packages on a real systemd, each test in throwaway Debian LXC containers (see
//! `flotilla_tests::lxc`): install, files and owners, the sandbox score, reload, crash restart,
//! enrollment against the packaged controller, the revoked agent's exit 78 staying down, remove
//! and purge, the upgrade from a previous build (config, CA, store and identity kept), and the
//! one-line install served by the controller (and its refusal of a token pinning another CA).
//!
//! Nothing is built here: the .deb files come from `FLOTILLA_DEB_DIR` (`.ci/run` builds them with
//! cargo-deb; the lower-versioned "previous" pair goes to its `previous/` subdirectory). Without
//! it, without root or without LXC the tests skip with a message.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_tests::harness::{basic_header, wait_for};
use flotilla_tests::lxc::{self, Container};
use serde_json::Value;

/// The .deb of `package` in FLOTILLA_DEB_DIR, or why the tests cannot run. `previous/<package>`
/// is the lower-versioned build of the same binaries in `$FLOTILLA_DEB_DIR/previous` (the upgrade
/// test installs it first).
fn deb(package: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os("FLOTILLA_DEB_DIR")
        .ok_or("FLOTILLA_DEB_DIR is not set (directory with the two .deb files)")?;
    let (sub, package) = package.rsplit_once('/').unwrap_or(("", package));
    let dir = PathBuf::from(dir).join(sub);
    let prefix = format!("{package}_");
    let found = std::fs::read_dir(&dir)
        .map_err(|e| format!("FLOTILLA_DEB_DIR={}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        });
    found.ok_or_else(|| format!("no {prefix}*.deb in FLOTILLA_DEB_DIR={}", dir.display()))
}

/// The packages needed, or None after saying why the test is skipped.
fn prerequisites(packages: &[&str]) -> Option<Vec<PathBuf>> {
    let mut debs = Vec::new();
    for p in packages {
        match deb(p) {
            Ok(path) => debs.push(path),
            Err(why) => {
                eprintln!("skipping the package test: {why}");
                return None;
            }
        }
    }
    if let Some(why) = lxc::unavailable() {
        eprintln!("skipping the package test: {why}");
        return None;
    }
    Some(debs)
}

/// Copies the .deb in and installs it with apt (dependencies from the golden base).
fn install(c: &Container, deb: &Path) {
    install_with(c, deb, "");
}

/// `install` with extra apt-get options; returns apt-get's output. stdin is /dev/null, so a dpkg
/// prompt (a conffile question, say) fails the install instead of hanging.
fn install_with(c: &Container, deb: &Path, options: &str) -> String {
    let name = deb.file_name().unwrap().to_str().unwrap();
    c.push(deb, &format!("/tmp/{name}"));
    let start = Instant::now();
    let (code, out) = c.sh_limit(
        Duration::from_secs(180),
        &format!("apt-get install -y --no-install-recommends {options} /tmp/{name} 2>&1"),
    );
    assert_eq!(code, 0, "apt-get install {name}:\n{out}");
    eprintln!("{}: installed {name} in {:.1?}", c.name, start.elapsed());
    out
}

/// The Version field of a .deb on this host.
fn deb_version(deb: &Path) -> String {
    let out = std::process::Command::new("dpkg-deb").arg("-f").arg(deb).arg("Version").output().expect("dpkg-deb");
    assert!(out.status.success(), "dpkg-deb -f {}: {}", deb.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn installed_version(c: &Container, package: &str) -> String {
    c.ok(&format!("dpkg-query -W -f='${{Version}}' {package}"))
}

fn stat(c: &Container, path: &str) -> String {
    c.ok(&format!("stat -c '%a %U %G' {path}"))
}

fn exposure(c: &Container, unit: &str) -> f64 {
    let (_, out) = c.sh(&format!("systemd-analyze security --no-pager {unit} 2>&1"));
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line for {unit}:\n{out}"));
    let score = line.split(':').nth(1).and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok());
    let score = score.unwrap_or_else(|| panic!("cannot parse {line:?}"));
    eprintln!("{}: {unit} exposure {score}", c.name);
    score
}

fn main_pid(c: &Container, unit: &str) -> u32 {
    c.show(unit, "MainPID").parse().unwrap_or(0)
}

/// Waits until `unit` is active with a main PID other than `old`; returns the new PID.
fn wait_restarted(c: &Container, unit: &str, old: u32, limit: Duration) -> u32 {
    wait_unit(c, unit, "a restart by systemd", limit, || {
        let pid = main_pid(c, unit);
        (c.show(unit, "ActiveState") == "active" && pid != 0 && pid != old).then_some(pid)
    })
}

/// Like `wait_for`, but a timeout panics with the unit's status and journal.
fn wait_unit<T>(c: &Container, unit: &str, what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            let status = c.sh(&format!("systemctl status --no-pager -n 0 {unit} 2>&1")).1;
            let log = c.sh(&format!("journalctl -u {unit} --no-pager -n 40 2>&1")).1;
            panic!("{}: timed out after {limit:?} waiting for {what}\n{status}\n{log}", c.name);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn journal(c: &Container, unit: &str) -> String {
    c.sh(&format!("journalctl -u {unit} --no-pager -o cat 2>&1")).1
}

fn verify_unit(c: &Container, unit: &str) {
    let (code, out) = c.sh(&format!("systemd-analyze verify /lib/systemd/system/{unit} 2>&1"));
    assert_eq!(code, 0, "systemd-analyze verify {unit}:\n{out}");
    assert!(!out.contains(unit), "verify warns about the unit:\n{out}");
}

/// `/etc/flotilla/<file>` is listed as a conffile of `package`.
fn assert_conffile(c: &Container, package: &str, file: &str) {
    let conffiles = c.ok(&format!("dpkg-query -W -f='${{Conffiles}}' {package}"));
    assert!(conffiles.lines().any(|l| l.split_whitespace().next() == Some(file)), "{file} not a conffile: {conffiles}");
}

/// Removes, then purges `package`: the state dir survives the remove, not the purge; no unit
/// stays enabled or running.
fn remove_and_purge(c: &Container, package: &str, state: &str, conffile: &str) {
    let start = Instant::now();
    let (code, out) = c.sh_limit(Duration::from_secs(120), &format!("apt-get remove -y {package} 2>&1"));
    assert_eq!(code, 0, "apt-get remove:\n{out}");
    assert!(c.sh(&format!("test -d {state}")).0 == 0, "remove deleted {state}");
    assert!(c.sh(&format!("test -e {conffile}")).0 == 0, "remove deleted the conffile {conffile}");
    assert!(c.sh(&format!("test -e /usr/bin/{package}")).0 != 0, "the binary is still there");
    let wants = format!("/etc/systemd/system/multi-user.target.wants/{package}.service");
    assert!(c.sh(&format!("test -e {wants} || test -L {wants}")).0 != 0, "{wants} left after remove");
    // `[/]`: the pattern does not match the shell that runs pgrep.
    let pids = c.sh(&format!("pgrep -af [/]usr/bin/{package}")).1;
    assert!(pids.trim().is_empty(), "{package} still running after remove: {pids}");
    let (code, out) = c.sh_limit(Duration::from_secs(120), &format!("apt-get purge -y {package} 2>&1"));
    assert_eq!(code, 0, "apt-get purge:\n{out}");
    assert!(c.sh(&format!("test -e {state}")).0 != 0, "purge kept {state}");
    assert!(c.sh(&format!("test -e {conffile}")).0 != 0, "purge kept {conffile}");
    let status = c.sh(&format!("dpkg-query -W -f='${{Status}}' {package} 2>&1")).1;
    assert!(!status.contains("installed") || status.contains("not-installed"), "{package}: {status}");
    eprintln!("{}: remove + purge of {package} in {:.1?}", c.name, start.elapsed());
}

/// The controller's HTTP API, reached on the container's address.
struct Api {
    base: String,
    auth: String,
    agent: ureq::Agent,
}

impl Api {
    /// The packaged controller in `ctl`, at `ctl_ip`:8080 with its generated admin, once it
    /// answers there.
    fn of_controller(ctl: &Container, ctl_ip: &str) -> Api {
        let (user, password) = admin_credentials(ctl);
        let api = Api {
            base: format!("http://{ctl_ip}:8080"),
            auth: basic_header(&user, &password),
            agent: ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).max_idle_connections(0).build(),
        };
        wait_unit(ctl, "flotilla-controller", "the API on the bridge", Duration::from_secs(20), || {
            api.call("GET", "/api/v1/servers/availability", None).ok().filter(|(s, _)| *s == 200)
        });
        api
    }

    /// `POST /api/v1/nodes` with `name`: the answer, with its id and join token.
    fn create_node(&self, name: &str) -> (Value, i64, String) {
        let (status, node) = self.call("POST", "/api/v1/nodes", Some(&serde_json::json!({ "name": name }))).unwrap();
        assert_eq!(status, 200, "create node: {node}");
        let node_id = node["id"].as_i64().expect("id");
        let token = node["join_token"].as_str().expect("join_token").to_string();
        (node, node_id, token)
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        let req = self.agent.request(method, &format!("{}{path}", self.base)).set("Authorization", &self.auth);
        let result = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(format!("{method} {path}: {e}")),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// `POST path` with a file as the raw body.
    fn upload(&self, path: &str, file: &Path) -> (u16, Value) {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let req = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
            .set("Content-Type", "application/vnd.debian.binary-package");
        let resp = match req.send_bytes(&data) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("POST {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn available(&self, node: i64) -> Option<bool> {
        let (status, body) = self.call("GET", "/api/v1/servers/availability", None).ok()?;
        if status != 200 {
            return None;
        }
        let row = body["availability"].as_array()?.iter().find(|r| r["node_id"].as_i64() == Some(node))?.clone();
        row["available"].as_bool()
    }
}

/// `user:password` from the generated initial-admin-password file.
fn admin_credentials(c: &Container) -> (String, String) {
    let file = "/var/lib/flotilla-controller/initial-admin-password";
    let text = wait_for("the initial admin password file", Duration::from_secs(20), || {
        let (code, out) = c.sh(&format!("cat {file}"));
        (code == 0 && out.contains(':')).then_some(out)
    });
    let (user, password) = text.trim().split_once(':').expect("user:password");
    (user.to_string(), password.to_string())
}

/// The controller's install checks, shared by both tests.
fn check_controller_install(c: &Container) {
    let unit = "flotilla-controller";
    assert_eq!(stat(c, "/usr/bin/flotilla-controller"), "755 root root");
    assert_conffile(c, unit, "/etc/flotilla/controller.toml");
    let passwd = c.ok("getent passwd flotilla");
    let shell = passwd.rsplit(':').next().unwrap_or_default();
    assert!(shell.ends_with("/nologin") || shell.ends_with("/false"), "flotilla has a login shell: {passwd}");
    assert!(c.ok("id -u flotilla").parse::<u32>().unwrap() < 1000, "flotilla is not a system user: {passwd}");
    verify_unit(c, "flotilla-controller.service");
    assert_eq!(c.ok("systemctl is-enabled flotilla-controller"), "enabled");
    wait_unit(c, unit, "active", Duration::from_secs(20), || (c.show(unit, "ActiveState") == "active").then_some(()));
    let pid = main_pid(c, unit);
    assert_eq!(c.ok(&format!("ps -o user= -p {pid}")), "flotilla", "the controller's user");
    assert_eq!(stat(c, "/var/lib/flotilla-controller"), "700 flotilla flotilla");
    for key in ["ca.key", "secret.key", "initial-admin-password"] {
        let path = format!("/var/lib/flotilla-controller/{key}");
        wait_for(&format!("{path} created"), Duration::from_secs(20), || {
            (c.sh(&format!("test -f {path}")).0 == 0).then_some(())
        });
        assert_eq!(stat(c, &path), "600 flotilla flotilla", "{path}");
    }
}

#[test]
fn controller_package_on_systemd() {
    let Some(debs) = prerequisites(&["flotilla-controller"]) else { return };
    let t0 = Instant::now();
    let c = Container::start("ctl");
    let ip = c.wait_ready(Duration::from_secs(90));
    eprintln!("{}: booted at {ip} in {:.1?} (golden base included)", c.name, t0.elapsed());
    install(&c, &debs[0]);
    let unit = "flotilla-controller";
    check_controller_install(&c);

    let score = exposure(&c, unit);
    assert!(score <= 2.0, "systemd-analyze security {unit}: exposure {score} > 2.0");

    // The generated password goes to its file only; the journal has plain text.
    let (_, password) = admin_credentials(&c);
    assert!(password.len() >= 12, "a weak generated password: {password:?}");
    let log = journal(&c, unit);
    assert!(!log.contains(&password), "the admin password is in the journal:\n{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in the journal:\n{log}");

    // Reload: same process, and it logs the reload.
    let pid = main_pid(&c, unit);
    let (code, out) = c.sh("systemctl reload flotilla-controller 2>&1");
    assert_eq!(code, 0, "systemctl reload: {out}");
    wait_unit(&c, unit, "the reload in the journal", Duration::from_secs(10), || {
        journal(&c, unit).contains("configuration reloaded").then_some(())
    });
    assert_eq!(main_pid(&c, unit), pid, "reload replaced the process");
    assert_eq!(c.show(unit, "ActiveState"), "active");

    // A crash is restarted (RestartSec=2).
    c.ok("systemctl kill -s SIGKILL flotilla-controller");
    let new = wait_restarted(&c, unit, pid, Duration::from_secs(10));
    eprintln!("{}: controller restarted after SIGKILL: pid {pid} -> {new}", c.name);
    let (user, password) = admin_credentials(&c);
    let auth = basic_header(&user, &password);
    wait_for("the restarted controller to answer", Duration::from_secs(10), || {
        let (code, out) = c.sh(&format!(
            "curl -s -o /dev/null -w '%{{http_code}}' -H 'Authorization: {auth}' http://127.0.0.1:8080/api/v1/servers/availability"
        ));
        (code == 0 && out.trim() == "200").then_some(())
    });

    remove_and_purge(&c, unit, "/var/lib/flotilla-controller", "/etc/flotilla/controller.toml");
    assert!(c.sh("getent passwd flotilla").0 == 0, "the flotilla user is kept on purge");
    eprintln!("controller_package_on_systemd: {:.1?}", t0.elapsed());
}

#[test]
fn agent_package_enrolls_against_the_packaged_controller() {
    let Some(debs) = prerequisites(&["flotilla-controller", "flotilla-agent"]) else { return };
    let t0 = Instant::now();
    let ctl = Container::start("ctl");
    let host = Container::start("agent");
    let ctl_ip = ctl.wait_ready(Duration::from_secs(90));
    let host_ip = host.wait_ready(Duration::from_secs(90));
    eprintln!("booted {} ({ctl_ip}) and {} ({host_ip}) in {:.1?}", ctl.name, host.name, t0.elapsed());

    // The controller, reachable from the bridge and dialled by agents at its container address.
    install(&ctl, &debs[0]);
    check_controller_install(&ctl);
    ctl.ok(&format!(
        "{{ printf 'http = \"0.0.0.0:8080\"\\npublic_addr = [\"{ctl_ip}:4433\"]\\n'; cat /etc/flotilla/controller.toml; }} > /tmp/c.toml \
         && cat /tmp/c.toml > /etc/flotilla/controller.toml && systemctl restart flotilla-controller"
    ));
    let api = Api::of_controller(&ctl, &ctl_ip);
    let (_, node_id, token) = api.create_node("c-agent");

    // The agent package: enabled, but not started before enrollment.
    let unit = "flotilla-agent";
    install(&host, &debs[1]);
    assert_eq!(stat(&host, "/usr/bin/flotilla-agent"), "755 root root");
    assert_conffile(&host, unit, "/etc/flotilla/agent.toml");
    assert_eq!(stat(&host, "/var/lib/flotilla-agent"), "700 root root");
    verify_unit(&host, "flotilla-agent.service");
    assert_eq!(host.ok("systemctl is-enabled flotilla-agent"), "enabled");
    assert_eq!(host.show(unit, "ActiveState"), "inactive", "started before enrollment");

    let (code, out) = host.sh(&format!("flotilla-agent enroll {token} 2>&1"));
    assert_eq!(code, 0, "enroll: {out}");
    host.ok("systemctl start flotilla-agent");
    let start = Instant::now();
    wait_unit(&host, unit, "the agent available on the controller", Duration::from_secs(30), || {
        (api.available(node_id) == Some(true)).then_some(())
    });
    eprintln!("agent available {:.1?} after start", start.elapsed());
    assert_eq!(host.ok("ps -o user= -p $(systemctl show -p MainPID --value flotilla-agent)"), "root");
    let key = host.ok("find /var/lib/flotilla-agent -name '*.key' -printf '%m %u %p\\n'");
    for line in key.lines() {
        assert!(line.starts_with("600 root "), "agent key mode: {line}");
    }

    let score = exposure(&host, unit);
    assert!(score <= 7.0, "systemd-analyze security {unit}: exposure {score} > 7.0");
    let agent_log = journal(&host, unit);
    assert!(!agent_log.contains('\u{1b}'), "ANSI escape codes in the agent's journal:\n{agent_log}");
    assert!(!agent_log.contains(&token), "the join token is in the journal:\n{agent_log}");

    // Reload keeps the link: same process, no new connection on the controller.
    let connects = || journal(&ctl, "flotilla-controller").matches("agent connected").count();
    let before = connects();
    assert!(before >= 1, "the controller logged no agent connection");
    let pid = main_pid(&host, unit);
    let (code, out) = host.sh("systemctl reload flotilla-agent 2>&1");
    assert_eq!(code, 0, "systemctl reload: {out}");
    wait_unit(&host, unit, "the reload in the journal", Duration::from_secs(10), || {
        journal(&host, unit).contains("configuration reloaded").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(main_pid(&host, unit), pid, "reload replaced the agent process");
    assert_eq!(api.available(node_id), Some(true), "unavailable after reload");
    assert_eq!(connects(), before, "the agent reconnected on reload");

    // A crash is restarted, and the agent comes back.
    host.ok("systemctl kill -s SIGKILL flotilla-agent");
    let new = wait_restarted(&host, unit, pid, Duration::from_secs(10));
    eprintln!("agent restarted after SIGKILL: pid {pid} -> {new}");
    wait_unit(&host, unit, "the restarted agent available again", Duration::from_secs(30), || {
        (connects() > before && api.available(node_id) == Some(true)).then_some(())
    });

    // Deleting the node revokes the agent: exit 78, and systemd leaves it down.
    let (status, body) = api.call("DELETE", &format!("/api/v1/nodes/{node_id}"), None).unwrap();
    assert!((200..300).contains(&status), "delete node: {status} {body}");
    let state = wait_unit(&host, unit, "the revoked agent to exit with 78", Duration::from_secs(30), || {
        let status = host.show(unit, "ExecMainStatus");
        let active = host.show(unit, "ActiveState");
        (status == "78" && (active == "failed" || active == "inactive")).then_some(active)
    });
    let restarts = host.show(unit, "NRestarts");
    std::thread::sleep(Duration::from_secs(5));
    let active = host.show(unit, "ActiveState");
    assert!(active == "failed" || active == "inactive", "restarted after exit 78: {active} (was {state})");
    assert_eq!(host.show(unit, "ExecMainStatus"), "78");
    assert_eq!(host.show(unit, "NRestarts"), restarts, "systemd restarted the revoked agent");
    assert!(host.sh("pgrep -af [/]usr/bin/flotilla-agent").1.trim().is_empty(), "an agent process is still running");

    remove_and_purge(&host, unit, "/var/lib/flotilla-agent", "/etc/flotilla/agent.toml");
    assert!(host.sh("test -e /etc/flotilla").0 != 0, "/etc/flotilla left behind by the agent's purge");
    eprintln!("agent_package_enrolls_against_the_packaged_controller: {:.1?}", t0.elapsed());
}

/// The agent's node id from `flotilla-agent status --json`.
fn agent_node_id(c: &Container) -> i64 {
    let out = c.ok("flotilla-agent --data-dir /var/lib/flotilla-agent status --json");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}"));
    assert_eq!(v["enrolled"], Value::Bool(true), "not enrolled: {out}");
    v["node_id"].as_i64().unwrap_or_else(|| panic!("no node_id: {out}"))
}

#[test]
fn upgrade_keeps_config_and_state() {
    let Some(debs) = prerequisites(&[
        "previous/flotilla-controller",
        "previous/flotilla-agent",
        "flotilla-controller",
        "flotilla-agent",
    ]) else {
        return;
    };
    let (old_ctl, old_agent, new_ctl, new_agent) = (&debs[0], &debs[1], &debs[2], &debs[3]);
    let (old_version, new_version) = (deb_version(old_ctl), deb_version(new_ctl));
    assert_eq!(deb_version(old_agent), old_version);
    assert_eq!(deb_version(new_agent), new_version);
    let t0 = Instant::now();
    let ctl = Container::start("ctl");
    let host = Container::start("agent");
    let ctl_ip = ctl.wait_ready(Duration::from_secs(90));
    let host_ip = host.wait_ready(Duration::from_secs(90));
    eprintln!("booted {} ({ctl_ip}) and {} ({host_ip}) in {:.1?}", ctl.name, host.name, t0.elapsed());
    let (code, out) = ctl.sh(&format!("dpkg --compare-versions '{old_version}' lt '{new_version}'"));
    assert_eq!(code, 0, "{old_version} does not sort before {new_version}: {out}");

    // The previous controller, with a locally edited conffile.
    install(&ctl, old_ctl);
    assert_eq!(installed_version(&ctl, "flotilla-controller"), old_version);
    check_controller_install(&ctl);
    let conf = "/etc/flotilla/controller.toml";
    let marker = "# edited by upgrade_keeps_config_and_state";
    ctl.ok(&format!(
        "{{ printf '{marker}\\nhttp = \"0.0.0.0:8080\"\\npublic_addr = [\"{ctl_ip}:4433\"]\\nlog = \"info\"\\n'; cat {conf}; }} > /tmp/c.toml \
         && cat /tmp/c.toml > {conf} && systemctl restart flotilla-controller"
    ));
    let conf_before = ctl.ok(&format!("cat {conf}"));
    let api = Api::of_controller(&ctl, &ctl_ip);
    let password_file = ctl.ok("cat /var/lib/flotilla-controller/initial-admin-password");
    let ca = ctl.ok("sha256sum /var/lib/flotilla-controller/ca.crt");
    let (_, node_id, token) = api.create_node("c-agent");

    // The previous agent, enrolled and connected.
    let unit = "flotilla-agent";
    install(&host, old_agent);
    assert_eq!(installed_version(&host, unit), old_version);
    let (code, out) = host.sh(&format!("flotilla-agent enroll {token} 2>&1"));
    assert_eq!(code, 0, "enroll: {out}");
    host.ok("systemctl start flotilla-agent");
    wait_unit(&host, unit, "the agent available on the controller", Duration::from_secs(30), || {
        (api.available(node_id) == Some(true)).then_some(())
    });
    assert_eq!(agent_node_id(&host), node_id);
    let agent_key = host.ok("find /var/lib/flotilla-agent -name '*.key' -exec sha256sum {} +");
    let ctl_pid = main_pid(&ctl, "flotilla-controller");
    let agent_pid = main_pid(&host, unit);
    assert!(ctl_pid != 0 && agent_pid != 0, "pids {ctl_pid} {agent_pid}");

    let connects = || journal(&ctl, "flotilla-controller").matches("agent connected").count();
    let before = connects();

    // Upgrade the controller. No --force-conf* option and stdin at EOF: dpkg keeps the edited
    // conffile on its own because the shipped copy did not change. (DEBIAN_FRONTEND does not
    // govern dpkg's conffile prompt: had the shipped copy changed, dpkg would ask, fail with "end
    // of file on stdin at conffile prompt" and leave the package unpacked; unattended upgrades
    // then need `-o Dpkg::Options::=--force-confold`.)
    let out = install_with(&ctl, new_ctl, "");
    assert!(!out.contains("Configuration file"), "dpkg asked about the conffile:\n{out}");
    assert_eq!(installed_version(&ctl, "flotilla-controller"), new_version);
    let new_ctl_pid = wait_restarted(&ctl, "flotilla-controller", ctl_pid, Duration::from_secs(20));
    eprintln!("controller upgraded {old_version} -> {new_version}: pid {ctl_pid} -> {new_ctl_pid}");
    assert_eq!(ctl.ok(&format!("cat {conf}")), conf_before, "the edited conffile changed");
    assert!(ctl.sh(&format!("test -e {conf}.dpkg-new || test -e {conf}.dpkg-dist")).0 != 0, "a .dpkg-new/-dist copy");
    assert_eq!(ctl.ok("sha256sum /var/lib/flotilla-controller/ca.crt"), ca, "the CA changed");
    assert_eq!(ctl.ok("cat /var/lib/flotilla-controller/initial-admin-password"), password_file);
    assert_eq!(ctl.ok("systemctl is-enabled flotilla-controller"), "enabled");
    // Same admin password, same store: the node is still there with its id (and is the only one).
    let (status, nodes) = wait_unit(&ctl, "flotilla-controller", "the upgraded API", Duration::from_secs(20), || {
        api.call("GET", "/api/v1/nodes", None).ok().filter(|(s, _)| *s == 200)
    });
    assert_eq!(status, 200);
    let ids: Vec<i64> = nodes.as_array().expect("node list").iter().filter_map(|n| n["id"].as_i64()).collect();
    assert_eq!(ids, vec![node_id], "nodes after the upgrade: {nodes}");
    // The old agent reconnects to the new controller (it trusts the same CA).
    wait_unit(
        &ctl,
        "flotilla-controller",
        "the agent back on the upgraded controller",
        Duration::from_secs(30),
        || (connects() > before && api.available(node_id) == Some(true)).then_some(()),
    );

    // Upgrade the agent: same identity, back on the controller without enrolling again.
    let before = connects();
    let out = install_with(&host, new_agent, "");
    assert!(!out.contains("not enrolled"), "the upgraded postinst thinks the host is not enrolled:\n{out}");
    let upgraded = Instant::now();
    assert_eq!(installed_version(&host, unit), new_version);
    let new_agent_pid = wait_restarted(&host, unit, agent_pid, Duration::from_secs(20));
    eprintln!("agent upgraded: pid {agent_pid} -> {new_agent_pid}");
    assert_eq!(agent_node_id(&host), node_id, "the agent's identity changed");
    assert_eq!(host.ok("find /var/lib/flotilla-agent -name '*.key' -exec sha256sum {} +"), agent_key);
    assert_eq!(host.ok("systemctl is-enabled flotilla-agent"), "enabled");
    wait_unit(&host, unit, "the upgraded agent available again", Duration::from_secs(20), || {
        (connects() > before && api.available(node_id) == Some(true)).then_some(())
    });
    eprintln!("upgraded agent available {:.1?} after the upgrade", upgraded.elapsed());
    let (_, nodes) = api.call("GET", "/api/v1/nodes", None).unwrap();
    let ids: Vec<i64> = nodes.as_array().expect("node list").iter().filter_map(|n| n["id"].as_i64()).collect();
    assert_eq!(ids, vec![node_id], "nodes after the agent's upgrade: {nodes}");

    // A stopped, disabled agent stays so across an upgrade (postinst's try-restart): downgrade to
    // the previous build and upgrade again, both with the agent off.
    host.ok("systemctl disable --now flotilla-agent");
    install_with(&host, old_agent, "--allow-downgrades");
    assert_eq!(installed_version(&host, unit), old_version);
    install_with(&host, new_agent, "");
    assert_eq!(installed_version(&host, unit), new_version);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(host.show(unit, "ActiveState"), "inactive", "an upgrade started the stopped agent");
    assert_eq!(host.sh("systemctl is-enabled flotilla-agent").1.trim(), "disabled", "an upgrade re-enabled it");
    assert!(host.sh("pgrep -af [/]usr/bin/flotilla-agent").1.trim().is_empty(), "an agent process is running");
    assert_eq!(agent_node_id(&host), node_id);
    eprintln!("upgrade_keeps_config_and_state: {:.1?}", t0.elapsed());
}

#[test]
fn one_liner_installs_enrolls_and_starts_an_agent() {
    let Some(debs) = prerequisites(&["flotilla-controller", "flotilla-agent"]) else { return };
    let t0 = Instant::now();
    let ctl = Container::start("ctl");
    let host = Container::start("oneliner");
    let forged = Container::start("forged");
    let ctl_ip = ctl.wait_ready(Duration::from_secs(90));
    let host_ip = host.wait_ready(Duration::from_secs(90));
    let forged_ip = forged.wait_ready(Duration::from_secs(90));
    eprintln!(
        "booted {} ({ctl_ip}), {} ({host_ip}) and {} ({forged_ip}) in {:.1?}",
        ctl.name,
        host.name,
        forged.name,
        t0.elapsed()
    );

    // The controller offers the agent package, reachable from the bridge.
    install(&ctl, &debs[0]);
    let package = "/var/lib/flotilla-controller/flotilla-agent.deb";
    ctl.push(&debs[1], package);
    ctl.ok(&format!("chown flotilla:flotilla {package} && chmod 644 {package}"));
    let conf = "/etc/flotilla/controller.toml";
    ctl.ok(&format!(
        "{{ printf 'http = \"0.0.0.0:8080\"\\npublic_addr = [\"{ctl_ip}:4433\"]\\n'; cat {conf}; \
         printf '\\n[install]\\nagent_package = \"{package}\"\\n'; }} > /tmp/c.toml \
         && cat /tmp/c.toml > {conf} && systemctl restart flotilla-controller"
    ));
    let api = Api::of_controller(&ctl, &ctl_ip);
    let (node, node_id, token) = api.create_node("c-oneliner");
    let line = node["install_command"].as_str().unwrap_or_else(|| panic!("no install_command: {node}")).to_string();
    assert_eq!(line, format!("curl -fsSL http://{ctl_ip}:8080/install.sh | sh -s -- {token}"));

    // A fresh host runs exactly the one-liner, as root. (openssl is already there: the base's
    // ca-certificates depends on it, so the script's apt-get fallback for it is not exercised and
    // the test needs no Debian mirror.)
    let unit = "flotilla-agent";
    let had_openssl = host.sh("command -v openssl").0 == 0;
    let start = Instant::now();
    let (code, out) = host.sh_limit(Duration::from_secs(240), &line);
    assert_eq!(code, 0, "the one-liner failed:\n{out}");
    eprintln!("{}: one-liner done in {:.1?} (openssl there before: {had_openssl})", host.name, start.elapsed());
    assert!(out.contains("flotilla-agent installed, enrolled and started"), "one-liner output:\n{out}");
    assert!(!out.contains(&token[8..]), "the one-liner printed the token:\n{out}");
    assert_eq!(host.ok("dpkg-query -W -f='${Status}' flotilla-agent"), "install ok installed");
    assert_eq!(installed_version(&host, unit), deb_version(&debs[1]));
    assert_eq!(host.sh("systemctl is-active flotilla-agent").1.trim(), "active");
    assert_eq!(host.sh("systemctl is-enabled flotilla-agent").1.trim(), "enabled");
    assert_eq!(agent_node_id(&host), node_id);
    wait_unit(&host, unit, "the agent available on the controller", Duration::from_secs(20), || {
        (api.available(node_id) == Some(true)).then_some(())
    });
    eprintln!("agent available {:.1?} after the one-liner started", start.elapsed());

    // A token pinning another CA: the script refuses before installing anything.
    let mut pinned = flotilla_protocol::token::JoinToken::parse(&token).expect("the join token parses");
    pinned.ca_fingerprint[0] ^= 0x01;
    let bad_token = pinned.encode();
    assert_ne!(bad_token, token);
    let bad_line = line.replace(&token, &bad_token);
    let (code, out) = forged.sh_limit(Duration::from_secs(240), &bad_line);
    assert_ne!(code, 0, "the one-liner accepted a token pinning another CA:\n{out}");
    assert!(out.contains("is not the one in the token"), "the one-liner's refusal:\n{out}");
    let status = forged.sh("dpkg-query -W -f='${Status}' flotilla-agent 2>&1").1;
    assert!(!status.contains("installed") || status.contains("not-installed"), "flotilla-agent: {status}");
    assert!(forged.sh("test -e /usr/bin/flotilla-agent").0 != 0, "/usr/bin/flotilla-agent exists");
    assert!(forged.sh("test -e /var/lib/flotilla-agent").0 != 0, "/var/lib/flotilla-agent exists");
    eprintln!("one_liner_installs_enrolls_and_starts_an_agent: {:.1?}", t0.elapsed());
}

/// The test's sabotage of one node: a drop-in runs the agent through a wrapper that exits at once
/// when the installed package is `broken` (as a release whose binary dies on start would).
const BROKEN_WRAPPER: &str = r#"#!/bin/sh
v=$(dpkg-query -W -f='${Version}' flotilla-agent)
if [ "$v" = "@BROKEN@" ]; then echo "flotilla-agent $v: broken build, exiting" >&2; exit 1; fi
exec /usr/bin/flotilla-agent run --data-dir /var/lib/flotilla-agent --config /etc/flotilla/agent.toml
"#;

#[test]
fn rolling_upgrade_stops_at_a_node_that_does_not_come_back_and_rolls_it_back() {
    let Some(debs) = prerequisites(&["flotilla-controller", "flotilla-agent", "previous/flotilla-agent"]) else {
        return;
    };
    let (new_version, old_version) = (deb_version(&debs[1]), deb_version(&debs[2]));
    let t0 = Instant::now();
    let ctl = Container::start("ctl");
    let hosts: Vec<Container> = (0..5).map(|i| Container::start(&format!("roll{i}"))).collect();
    let ctl_ip = ctl.wait_ready(Duration::from_secs(90));
    for h in &hosts {
        h.wait_ready(Duration::from_secs(90));
    }
    eprintln!("booted the controller and 5 hosts in {:.1?}", t0.elapsed());

    install(&ctl, &debs[0]);
    ctl.ok(&format!(
        "{{ printf 'http = \"0.0.0.0:8080\"\\npublic_addr = [\"{ctl_ip}:4433\"]\\n'; cat /etc/flotilla/controller.toml; }} > /tmp/c.toml \
         && cat /tmp/c.toml > /etc/flotilla/controller.toml && systemctl restart flotilla-controller"
    ));
    let api = Api::of_controller(&ctl, &ctl_ip);
    // The catalog: the new package through the API, the one the nodes run through the CLI.
    let (status, added) = api.upload("/api/v1/agent-packages", &debs[1]);
    assert_eq!(status, 200, "upload: {added}");
    assert_eq!((added["version"].as_str(), added["added"].as_bool()), (Some(new_version.as_str()), Some(true)));
    let (status, refused) = api.upload("/api/v1/agent-packages", &debs[0]);
    assert_eq!(status, 400, "the controller package was accepted: {refused}");
    ctl.push(&debs[2], "/tmp/previous-agent.deb");
    let out = ctl.ok("runuser -u flotilla -- flotilla-controller agent-package add /tmp/previous-agent.deb 2>&1");
    assert!(out.contains(&format!("flotilla-agent {old_version} ")) && out.contains("added"), "{out}");

    // Five nodes on the previous package, enrolled, side by side.
    let created: Vec<(i64, String)> = (0..hosts.len())
        .map(|i| {
            let (_, id, token) = api.create_node(&format!("roll-{i}"));
            (id, token)
        })
        .collect();
    std::thread::scope(|s| {
        for (host, (_, token)) in hosts.iter().zip(&created) {
            let deb = &debs[2];
            s.spawn(move || {
                install(host, deb);
                host.ok(&format!("flotilla-agent enroll {token} >/dev/null 2>&1 && systemctl start flotilla-agent"));
            });
        }
    });
    let nodes: Vec<i64> = created.iter().map(|(id, _)| *id).collect();
    // The third node (second wave) gets the sabotage.
    let broken = &hosts[2];
    broken.ok(&format!(
        "cat > /usr/local/sbin/flotilla-agent-or-fail <<'EOF'\n{}EOF\nchmod 755 /usr/local/sbin/flotilla-agent-or-fail && \
         mkdir -p /etc/systemd/system/flotilla-agent.service.d && printf '[Service]\\nExecStart=\\nExecStart=/usr/local/sbin/flotilla-agent-or-fail\\n' \
         > /etc/systemd/system/flotilla-agent.service.d/broken.conf && systemctl daemon-reload && systemctl restart flotilla-agent",
        BROKEN_WRAPPER.replace("@BROKEN@", &new_version)
    ));
    for (host, id) in hosts.iter().zip(&nodes) {
        wait_unit(host, "flotilla-agent", "the node reporting its package", Duration::from_secs(40), || {
            let (_, node) = api.call("GET", &format!("/api/v1/nodes/{id}"), None).ok()?;
            (node["connected"] == Value::Bool(true) && node["agent_package"].as_str() == Some(old_version.as_str()))
                .then_some(())
        });
    }
    let pids: Vec<u32> = hosts.iter().map(|h| main_pid(h, "flotilla-agent")).collect();
    eprintln!("5 agents on {old_version} after {:.1?}", t0.elapsed());

    // Canary, then waves of two, 20 s to come back each.
    let body = serde_json::json!({ "version": new_version, "batch_size": 2, "health_timeout_s": 20 });
    let (status, rollout) = api.call("POST", "/api/v1/rollouts", Some(&body)).unwrap();
    assert_eq!(status, 200, "create rollout: {rollout}");
    let id = rollout["id"].as_i64().expect("rollout id");
    let waves: Vec<(i64, i64)> = rollout["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node_id"].as_i64().unwrap(), n["wave"].as_i64().unwrap()))
        .collect();
    assert_eq!(waves, [(nodes[0], 0), (nodes[1], 1), (nodes[2], 1), (nodes[3], 2), (nodes[4], 2)]);
    let (status, again) = api.call("POST", "/api/v1/rollouts", Some(&body)).unwrap();
    assert_eq!(status, 400, "a second rollout while one runs: {again}");

    let start = Instant::now();
    let mut seen = String::new();
    let done = wait_for("the rollout to end", Duration::from_secs(300), || {
        let (_, r) = api.call("GET", &format!("/api/v1/rollouts/{id}"), None).ok()?;
        let line = format!("{} wave {} {}", r["state"], r["current_wave"], r["progress"]);
        if line != seen {
            eprintln!("{:>6.1?} rollout {line}", start.elapsed());
            seen = line;
        }
        (r["state"] != "running").then_some(r)
    });
    eprintln!("rollout ended after {:.1?}: {done:#}", start.elapsed());
    assert_eq!(done["state"], "failed", "{done:#}");
    let state = |node: i64| {
        let n = done["nodes"].as_array().unwrap().iter().find(|n| n["node_id"].as_i64() == Some(node)).unwrap();
        (n["state"].as_str().unwrap().to_string(), n["message"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(state(nodes[0]).0, "upgraded");
    assert_eq!(state(nodes[1]).0, "upgraded");
    let (broken_state, why) = state(nodes[2]);
    assert_eq!(broken_state, "rolled_back", "{why}");
    assert!(why.contains("did not reconnect"), "{why}");
    assert_eq!(state(nodes[3]).0, "pending");
    assert_eq!(state(nodes[4]).0, "pending");
    assert!(done["message"].as_str().unwrap_or_default().contains("roll-2"), "{done:#}");

    // On the hosts: the two upgraded run the new package, the broken one the previous package
    // again (and its agent is back), the last two were never touched.
    for (i, host) in hosts.iter().enumerate() {
        let expected = if i < 2 { &new_version } else { &old_version };
        assert_eq!(&installed_version(host, "flotilla-agent"), expected, "{}", host.name);
        wait_unit(host, "flotilla-agent", "the agent available", Duration::from_secs(30), || {
            (api.available(nodes[i]) == Some(true)).then_some(())
        });
    }
    for i in [3, 4] {
        assert_eq!(main_pid(&hosts[i], "flotilla-agent"), pids[i], "{} was restarted", hosts[i].name);
    }
    let installer = broken.sh("journalctl --no-pager -o cat -u 'flotilla-agent-upgrade-*' 2>&1").1;
    assert!(installer.contains(&old_version), "the installer's journal:\n{installer}");
    let (_, node) = api.call("GET", &format!("/api/v1/nodes/{}", nodes[2]), None).unwrap();
    assert_eq!(node["agent_package"].as_str(), Some(old_version.as_str()), "{node}");

    // The CLI shows the same progress.
    let text = ctl.ok(&format!("runuser -u flotilla -- flotilla-controller rollout status {id} 2>/dev/null"));
    assert!(text.contains(&format!("rollout {id} to {new_version}: failed")), "{text}");
    assert!(text.contains("rolled_back"), "{text}");
    eprintln!("rolling_upgrade_stops_at_a_node_that_does_not_come_back_and_rolls_it_back: {:.1?}", t0.elapsed());
}
