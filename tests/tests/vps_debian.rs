//! The VPS API with a real systemd guest: a customer's server created from a Debian 12 OS
//! template (`debian:bookworm`, `lxc-create -t debian -- -r bookworm` on the agent), booted to a
//! running systemd, its generated and its changed root password proved by logging in, stopped
//! cleanly, started again and deleted.
//!
//! Needs what `vps.rs` needs plus the LXC debian template, debootstrap, rsync and wget, and the
//! Debian mirror: lxc-debian asks deb.debian.org about the release on every create, also when
//! its rootfs cache (`/var/cache/lxc/debian`) is filled; the first create on a machine runs
//! debootstrap from the mirror (minutes), later ones copy the cache (seconds). Skipped without
//! them. The agent's network namespace has no route out, so the test gives the template's wget
//! a way: a small HTTP proxy in this process for `*.debian.org` only, reached over the fleet's
//! own namespaces and named in a `WGETRC` the agent inherits (nothing else reads it).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_tests::harness::{wait_for, Fleet};
use flotilla_tests::vps::{self, add_user, container_exists, in_guest, Cleanup, Vps};
use serde_json::{json, Value};

/// The create task's limit: a first debootstrap takes minutes, a copy of the cache seconds.
const CREATE_LIMIT: Duration = Duration::from_secs(15 * 60);
/// systemd's boot to `running`/`degraded`.
const BOOT_LIMIT: Duration = Duration::from_secs(120);
/// The API's stop timeout (`ContainerOp::Stop { timeout_s: 30 }`): a clean shutdown ends before.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// What lxc-debian fetches first (`release_info`).
const RELEASE_URL: &str = "http://deb.debian.org/debian/dists/bookworm/Release";

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Why the debian template cannot be used here (None: it can).
fn debian_unavailable() -> Option<String> {
    if !Path::new("/usr/share/lxc/templates/lxc-debian").exists() {
        return Some("the LXC debian template is missing (apt-get install lxc-templates)".into());
    }
    for tool in ["debootstrap", "rsync", "wget", "timeout"] {
        if !on_path(tool) {
            return Some(format!("`{tool}` not installed (apt-get install -y debootstrap rsync wget)"));
        }
    }
    let out = Command::new("timeout").args(["20", "wget", "-q", "-O", "/dev/null", RELEASE_URL]).output();
    if !out.is_ok_and(|o| o.status.success()) {
        return Some(format!("the Debian mirror is unreachable ({RELEASE_URL}); lxc-debian needs it on every create"));
    }
    None
}

/// Serves as an HTTP proxy on `ip` (a port of its own) for plain-HTTP GET and HEAD to
/// `*.debian.org`, one thread per connection, for the rest of the process.
fn start_mirror_proxy(ip: Ipv4Addr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("proxy on {ip}: {e}"));
    let addr = listener.local_addr().expect("proxy address");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                if let Err(e) = proxy_one(conn) {
                    eprintln!("mirror proxy: {e}");
                }
            });
        }
    });
    addr
}

/// One proxied request: `GET http://host/path` is sent to `host:80` as `GET /path` with
/// `Connection: close`, and the answer copied back until the mirror closes.
fn proxy_one(mut client: TcpStream) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = vec![];
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut request = lines.next().unwrap_or_default().split(' ');
    let (method, url, version) =
        (request.next().unwrap_or_default(), request.next().unwrap_or_default(), request.next().unwrap_or("HTTP/1.1"));
    let target = url.strip_prefix("http://").map(|rest| match rest.split_once('/') {
        Some((host, path)) => (host.to_string(), format!("/{path}")),
        None => (rest.to_string(), "/".to_string()),
    });
    let allowed = |host: &str| {
        let name = host.split(':').next().unwrap_or_default();
        name == "debian.org" || name.ends_with(".debian.org")
    };
    let Some((host, path)) = target.filter(|(host, _)| matches!(method, "GET" | "HEAD") && allowed(host)) else {
        eprintln!("mirror proxy: refused {method} {url}");
        return client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    let host_port = if host.contains(':') { host.clone() } else { format!("{host}:80") };
    let upstream_addr = host_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host}: no address")))?;
    let mut upstream = TcpStream::connect_timeout(&upstream_addr, Duration::from_secs(20))?;
    upstream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut out = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
        if !matches!(name.as_str(), "connection" | "proxy-connection" | "keep-alive" | "proxy-authorization") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes())?;
    std::io::copy(&mut upstream, &mut client)?;
    Ok(())
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// The test process's end of the fleet's veth (10.S.0.1), where the mirror proxy listens; None
/// when the fleet runs without namespaces (its agents reach the mirror directly).
fn test_end(fleet: &Fleet) -> Option<Ipv4Addr> {
    let [a, o, _, _] = fleet.net()?.controller_http_ip().octets();
    Some(Ipv4Addr::new(a, o, 0, 1))
}

/// Lets agent namespace `agent_ns` of the fleet reach [`test_end`]: a route in the agent's
/// namespace, forwarding in the controller's, and a route back on the fleet's veth (it goes with
/// the veth when the fleet is torn down).
fn route_agent_to_test(fleet: &Fleet, agent_ns: &str) {
    let net = fleet.net().expect("a namespaced fleet");
    let [a, o, _, _] = net.controller_http_ip().octets();
    let controller = net.controller_agent_ip().to_string();
    ip(&["-n", agent_ns, "route", "replace", &format!("{a}.{o}.0.0/24"), "via", &controller]);
    let sysctl = Command::new("ip")
        .args(["netns", "exec", &net.controller_ns(), "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .output()
        .expect("sysctl");
    assert!(sysctl.status.success(), "ip_forward: {}", String::from_utf8_lossy(&sysctl.stderr));
    let veth = format!("f{}-r", net.slot);
    let via = net.controller_http_ip().to_string();
    ip(&["route", "replace", &format!("{a}.{o}.1.0/24"), "via", &via, "dev", &veth]);
}

/// How a root login attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Login {
    Accepted,
    Refused,
}

/// Logs in as root with `password` inside the guest: `su` run by `nobody` (so it must ask for
/// the password) on a pty made by `script`, the password typed once the prompt shows.
///
/// Why `su` and not ssh or the hash in `/etc/shadow`: Debian 12's chpasswd writes yescrypt
/// (`$y$`) hashes, which `openssl passwd` cannot recompute, and its sshd refuses root password
/// logins by default (changing that would test our edit, not the product) and sshpass is not a
/// test dependency; `su` goes through the guest's own PAM stack, which is what a console login
/// uses, and needs only the guest's essential packages (util-linux, bsdutils).
fn root_login(ns: Option<&str>, name: &str, password: &str) -> Login {
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()), "quoting assumes [A-Za-z0-9]: {password:?}");
    // PAM prints the prompt, then turns echo off with TCSAFLUSH, dropping what was typed ahead:
    // wait for the prompt, and a little longer. The writer (fd 3) stays open until su is done
    // so script does not pass on an EOF early. Every step is bounded by `timeout`.
    let script = format!(
        r#"d=$(mktemp -d) && mkfifo "$d/in" || exit 1
runuser -u nobody -- env SHELL=/bin/sh TERM=dumb timeout 20 \
    script -q -e -c "su root -c 'echo LOGIN-OK-\$(id -u)'" /dev/null <"$d/in" >"$d/out" 2>&1 &
p=$!
exec 3>"$d/in"
i=0
until grep -q 'assword' "$d/out" || [ $i -ge 100 ]; do i=$((i+1)); sleep 0.1; done
sleep 0.5
printf '%s\n' '{password}' >&3
wait $p
rc=$?
exec 3>&-
cat "$d/out"
echo "rc=$rc"
rm -rf "$d""#
    );
    for attempt in 1..=3 {
        let out = in_guest(ns, name, &script).unwrap_or_else(|e| panic!("login attempt: {e}"));
        if out.contains("LOGIN-OK-0") {
            return Login::Accepted;
        }
        if out.contains("Authentication failure") {
            return Login::Refused;
        }
        // Neither: the typed password was lost (flushed) or su timed out; try again.
        eprintln!("root login attempt {attempt} inconclusive: {out:?}");
    }
    panic!("su as root in {name}: no answer after 3 attempts");
}

/// Waits for systemd in the guest to finish booting; returns `running` or `degraded`.
fn wait_systemd(ns: Option<&str>, name: &str) -> String {
    let pid1 = in_guest(ns, name, "cat /proc/1/comm").expect("PID 1 of the guest");
    assert_eq!(pid1, "systemd", "PID 1 of the guest");
    // Right after a start systemd may not answer on its bus yet (empty answer): ask again.
    let limit = BOOT_LIMIT.as_secs();
    let wait = format!(
        "timeout {limit} sh -c 'until s=$(systemctl is-system-running --wait 2>/dev/null) || [ -n \"$s\" ]; \
         do sleep 0.2; done; echo \"$s\"'; true"
    );
    let state = in_guest(ns, name, &wait).expect("systemctl is-system-running");
    if state == "degraded" {
        let failed = in_guest(ns, name, "systemctl --failed --no-legend --plain; true").unwrap_or_default();
        eprintln!("systemd is degraded; failed units:\n{failed}");
    }
    assert!(state == "running" || state == "degraded", "systemd in the guest is {state:?}, not running");
    state
}

#[test]
fn a_debian_server_boots_systemd_and_takes_its_passwords() {
    const TEST: &str = "a_debian_server_boots_systemd_and_takes_its_passwords";
    if let Err(why) = vps::available() {
        eprintln!("SKIPPED {TEST}: {why}");
        return;
    }
    if let Some(why) = debian_unavailable() {
        eprintln!("SKIPPED {TEST}: {why}");
        return;
    }
    let t0 = Instant::now();
    let mut fleet = Fleet::start();
    // Before the agent starts: it inherits WGETRC, and so do lxc-create and the template.
    let proxy = test_end(&fleet).map(start_mirror_proxy);
    if let Some(proxy) = proxy {
        let wgetrc = fleet.tmp.path().join("wgetrc");
        std::fs::write(&wgetrc, format!("use_proxy = on\nhttp_proxy = http://{proxy}/\n")).expect("wgetrc");
        std::env::set_var("WGETRC", &wgetrc);
    }
    let agent = fleet.add_container_agent("vps-debian", &vps::agent_config(4));
    let agent_ns = fleet.agent(agent).host.ns.clone();
    if let (Some(proxy), Some(agent_ns)) = (proxy, agent_ns.as_deref()) {
        route_agent_to_test(&fleet, agent_ns);
        eprintln!("the agent's wget goes through the mirror proxy at {proxy}");
    }
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(20));
    let ns = agent_ns;
    let admin = Vps::login(&fleet.api, "admin", &fleet.api.password.clone());
    add_user(&fleet, "dora", "dora-password-1", None);
    let dora = Vps::login(&fleet.api, "dora", "dora-password-1");

    let os = json!({ "name": "Debian 12", "template": "debian:bookworm" });
    let os = admin.expect("POST", "/api/os", Some(&os), 201);
    assert_eq!(os["template"], "debian:bookworm", "{os}");
    let tariff = json!({ "name": "Small", "cores": 1, "memory": 512, "disk": 2, "price": 300 });
    let tariff = admin.expect("POST", "/api/tariff", Some(&tariff), 201);

    // Dora buys a Debian server.
    let order = vps::Order::place(&dora, os["id"].as_i64().expect("os id"), tariff["id"].as_i64().expect("tariff id"));
    let (id, password, upid, name) = (order.id, order.password.clone(), order.task.clone(), order.container.clone());
    let _cleanup = Cleanup { ns: ns.clone(), names: vec![name.clone()] };
    let created_at = Instant::now();
    let task = dora.wait_task(&upid, CREATE_LIMIT);
    assert_eq!(task["state"], "ok", "create task: {task:#}");
    eprintln!("created in {:.1?}", created_at.elapsed());
    let mut last = Value::Null;
    let status = wait_for("the server running with an address", Duration::from_secs(60), || {
        let s = dora.expect("GET", &format!("/api/server/{id}/status"), None, 200);
        let brief = json!([s["status"], s["ipAddress"]]);
        if brief != last {
            eprintln!("status: {brief}");
            last = brief;
        }
        (s["status"] == "running" && s["ipAddress"].is_string()).then_some(s)
    });
    let ip = status["ipAddress"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.205.4."), "{status:#}");
    assert_eq!(status["os"]["name"], "Debian 12");

    // A real systemd guest, booted, still holding the static address (ifupdown did not flush it).
    let state = wait_systemd(ns.as_deref(), &name);
    eprintln!("systemd {state} {:.1?} after the order", created_at.elapsed());
    let release = in_guest(ns.as_deref(), &name, ". /etc/os-release && echo $VERSION_CODENAME").unwrap();
    assert_eq!(release, "bookworm");
    let addrs = in_guest(ns.as_deref(), &name, "ip -4 -o addr show dev eth0").unwrap();
    assert!(addrs.contains(&format!("inet {ip}/")), "eth0 of the guest after boot: {addrs}");

    // The generated root password logs in; a wrong one does not.
    assert_eq!(root_login(ns.as_deref(), &name, &password), Login::Accepted, "the generated root password");
    assert_eq!(root_login(ns.as_deref(), &name, "WrongPassword99"), Login::Refused, "a wrong password");

    // A new one through the API: it works, the old one no longer does.
    let changed = dora.expect("POST", &format!("/api/server/{id}/password"), Some(&json!({})), 200);
    assert_eq!(changed["status"], "success", "{changed}");
    let new_password = changed["password"].as_str().expect("password").to_string();
    assert_ne!(new_password, password);
    assert_eq!(root_login(ns.as_deref(), &name, &new_password), Login::Accepted, "the new root password");
    assert_eq!(root_login(ns.as_deref(), &name, &password), Login::Refused, "the old root password");

    // Stop: systemd shuts down cleanly, before the stop timeout would kill it. A unit's ExecStop
    // leaves a mark only systemd's own shutdown writes (a killed guest runs no ExecStop).
    let unit = "[Unit]\nDescription=marks a clean shutdown\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
                ExecStart=/bin/rm -f /root/clean-shutdown\nExecStop=/bin/sh -c 'echo clean > /root/clean-shutdown'\n";
    let install = format!(
        "printf '%s' \"{unit}\" > /etc/systemd/system/flotilla-mark.service && systemctl daemon-reload \
         && systemctl start flotilla-mark.service && systemctl is-active flotilla-mark.service"
    );
    assert_eq!(in_guest(ns.as_deref(), &name, &install).unwrap(), "active");
    let stop = dora.expect("POST", &format!("/api/server/{id}/stop"), Some(&json!({})), 200);
    let stopping = Instant::now();
    let task = dora.wait_task(stop["taskId"].as_str().unwrap(), STOP_TIMEOUT + Duration::from_secs(30));
    let took = stopping.elapsed();
    eprintln!("stopped in {took:.1?}");
    assert_eq!(task["state"], "ok", "stop task: {task:#}");
    let log = task["log"].to_string();
    assert!(!log.contains("killing"), "the guest was killed, not shut down: {task:#}");
    assert!(took < STOP_TIMEOUT, "stopping took {took:?}: the guest did not shut down by itself: {task:#}");
    assert_eq!(dora.expect("GET", &format!("/api/server/{id}/status"), None, 200)["status"], "stopped");

    // Start again: systemd boots, and the changed password survived on disk.
    let start = dora.expect("POST", &format!("/api/server/{id}/start"), Some(&json!({})), 200);
    dora.task_ok(start["taskId"].as_str().unwrap(), Duration::from_secs(60));
    assert_eq!(dora.expect("GET", &format!("/api/server/{id}/status"), None, 200)["status"], "running");
    wait_systemd(ns.as_deref(), &name);
    let mark = in_guest(ns.as_deref(), &name, "cat /root/clean-shutdown");
    assert_eq!(mark.as_deref(), Ok("clean"), "systemd's shutdown ran the units' ExecStop");
    assert_eq!(root_login(ns.as_deref(), &name, &new_password), Login::Accepted, "the new password after a restart");

    // Delete: the container is gone, and so is the server.
    let deleted = dora.expect("DELETE", &format!("/api/server/{id}"), None, 200);
    assert_eq!(deleted["status"], "deleted");
    dora.task_ok(deleted["taskId"].as_str().unwrap(), Duration::from_secs(120));
    wait_for("the server gone", Duration::from_secs(20), || {
        (dora.call("GET", &format!("/api/server/{id}"), None).status == 404).then_some(())
    });
    assert!(!container_exists(&name), "container {name} still exists");
    eprintln!("{TEST}: {:.1?}", t0.elapsed());
}
