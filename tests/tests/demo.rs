//! The README's main job: `flotilla-controller demo` starts a controller and a local agent, prints
//! how to reach them, stops cleanly on Ctrl-C, and a second run reuses the same data dir.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;

use flotilla_tests::harness::{basic_header, bin_dir, free_port, wait_for, Fleet};
use flotilla_tests::netns;
use flotilla_tests::wireguard::{self, WgPeer};
use serde_json::{json, Value};

struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Demo {
    fn start(dir: &std::path::Path, http: u16, quic: u16, local_api: u16) -> Demo {
        Demo::start_on(dir, http, quic, local_api, None)
    }

    /// The demo on a host of its own: in namespace `ns` with its own `/run/wireguard` (`wg_dir`).
    fn start_on(
        dir: &std::path::Path,
        http: u16,
        quic: u16,
        local_api: u16,
        host: Option<(&str, &std::path::Path)>,
    ) -> Demo {
        let program = bin_dir().join("flotilla-controller");
        let command = match host {
            Some((ns, wg_dir)) => netns::with_wireguard_dir(Some(ns), wg_dir, program.as_os_str()),
            None => Command::new(program),
        };
        Demo::start_with(command, dir, http, quic, local_api)
    }

    /// The demo run by `command` (the controller binary, possibly wrapped).
    fn start_with(mut command: Command, dir: &std::path::Path, http: u16, quic: u16, local_api: u16) -> Demo {
        // An empty config file: the host's /etc/flotilla must not leak into the test.
        let config = dir.join("demo.toml");
        std::fs::write(&config, "").unwrap();
        let mut child = command
            .current_dir(dir)
            .args(["demo", "--config"])
            .arg(&config)
            .args(["--http", &format!("127.0.0.1:{http}"), "--quic", &format!("127.0.0.1:{quic}")])
            .args(["--local-api", &format!("127.0.0.1:{local_api}")])
            .env("RUST_LOG", "warn")
            .env_remove("FLOTILLA_ADMIN_USER")
            .env_remove("FLOTILLA_ADMIN_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start demo");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo { child, lines }
    }

    /// Lines printed until "Press Ctrl-C".
    fn banner(&self) -> Vec<String> {
        let mut out = vec![];
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(30)).expect("demo banner");
            let done = line.contains("Press Ctrl-C");
            out.push(line);
            if done {
                return out;
            }
        }
    }

    fn interrupt(mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        wait_for("demo to exit", Duration::from_secs(15), || self.child.try_wait().unwrap())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // The whole process group: the proxy core the demo's agent started outlives a killed
        // agent on purpose (workloads survive the agent), and would hold the demo's ports.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn login(banner: &[String]) -> (String, String) {
    let line = banner.iter().find(|l| l.trim_start().starts_with("login:")).expect("login line");
    let creds = line.trim_start().trim_start_matches("login:").trim();
    let (user, password) = creds.split_once(" / ").expect("user / password");
    (user.to_string(), password.to_string())
}

fn get(url: &str, user: &str, password: &str) -> Value {
    ureq::get(url).set("Authorization", &basic_header(user, password)).call().expect(url).into_json().unwrap()
}

#[test]
fn demo_runs_the_controller_and_a_local_agent_and_restarts_on_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let (http, quic, local_api) = (free_port(), free_port(), free_port());
    let base = format!("http://127.0.0.1:{http}");

    let demo = Demo::start(dir.path(), http, quic, local_api);
    let banner = demo.banner();
    let text = banner.join("\n");
    assert!(text.contains(&format!("{base}/api/v1/")), "{text}");
    assert!(text.contains("curl -u"), "curl examples: {text}");
    // Three more with WireGuard on this host (install, client, data).
    let wireguard_lines = if text.contains("WireGuard, the CandyPanel API") { 3 } else { 0 };
    // Three with containers on this host (catalogs, create, status).
    let vps_lines = if text.contains("Virtual servers, the VPS API") { 4 } else { 0 };
    let curls = banner.iter().filter(|l| l.trim_start().starts_with("curl ")).count();
    // And the external API's health (its signed example starts with the key's variables).
    assert_eq!(curls, 8 + wireguard_lines + vps_lines, "{text}");
    let (user, password) = login(&banner);
    assert_eq!(user, "admin");
    assert!(password.len() >= 16, "generated password: {password}");

    // The local agent connects and reports real metrics.
    let status = wait_for("local agent metrics", Duration::from_secs(20), || {
        let v = get(&format!("{base}/api/v1/servers/status"), &user, &password);
        let s = v["servers"].as_array()?.first()?.clone();
        (s["available"] == Value::Bool(true) && !s["system"].is_null()).then_some(s)
    });
    assert_eq!(status["node"], "local");
    let node_id = status["node_id"].as_i64().unwrap();
    // The first curl example works as printed.
    let curl = banner.iter().find(|l| l.contains("/servers/status")).unwrap();
    assert!(curl.contains(&format!("{user}:{password}")), "{curl}");
    // The external API's signed example (openssl signs it) works as printed.
    let signed = banner.iter().find(|l| l.contains("X-Signature")).expect("a signed example");
    let out = Command::new("sh").arg("-c").arg(signed.trim()).output().expect("sh");
    let me: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{signed}: {out:?}"));
    assert_eq!((&me["status"], &me["data"]["user"]["username"]), (&json!("success"), &json!("admin")), "{me}");

    // With v2ray installed (as .ci/demo does), the proxy examples work as printed: an inbound, a
    // client, and a subscription whose link a real client core connects with on this machine.
    if flotilla_tests::traffic::v2ray_binary().is_some() {
        wait_for("the local core to run", Duration::from_secs(20), || {
            let v = get(&format!("{base}/api/v1/servers/{node_id}/status"), &user, &password);
            (v["xray"]["running"] == Value::Bool(true)).then_some(())
        });
        let run = |line: &str| {
            let out = std::process::Command::new("sh").arg("-c").arg(line.trim()).output().expect("sh");
            assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let example =
            |needle: &str| banner.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle}: {text}"));
        let inbound: Value = serde_json::from_str(&run(example("/api/v1/inbounds"))).unwrap();
        assert_eq!(inbound["results"][0]["status"], "applied", "{inbound}");
        let client: Value = serde_json::from_str(&run(example("/api/v1/clients/batch-add"))).unwrap();
        assert_eq!(client["results"][0]["results"][0]["success"], Value::Bool(true), "{client}");
        let sub = run(example("/api/v1/sub/"));
        let links = base64::engine::general_purpose::STANDARD.decode(sub.trim()).expect("base64 subscription");
        let link = String::from_utf8(links).unwrap().lines().next().unwrap().to_string();
        assert!(link.starts_with("vless://") && link.contains("@127.0.0.1:"), "{link}");
        demo_proxy_works(dir.path(), &link);

        // The v2ray-stat lines too: the document's add_user on the seeded `vless-in`, then the
        // user in the host's table and, through the local agent's link, on the controller.
        let added = run(example("/api/v1/add_user"));
        assert!(added.contains("newuser"), "{added}");
        let stats = run(example(&format!("127.0.0.1:{local_api}/api/v1/stats")));
        assert!(stats.contains("newuser"), "{stats}");
        wait_for("newuser on the controller", Duration::from_secs(15), || {
            let v = get(&format!("{base}/api/v1/clients?email=newuser"), &user, &password);
            (v["clients"].as_array()?.len() == 1).then_some(())
        });
    }

    assert!(demo.interrupt().success(), "Ctrl-C exits with status 0");
    assert!(dir.path().join("flotilla-demo/controller.db").exists());

    // Second run: same data dir, same admin, same node, no duplicate.
    let demo = Demo::start(dir.path(), http, quic, local_api);
    let banner = demo.banner();
    assert_eq!(login(&banner), (user.clone(), password.clone()), "credentials reused");
    assert!(!banner.join("\n").contains("enrolled the local agent"), "not enrolled twice");
    wait_for("local agent back", Duration::from_secs(20), || {
        let v = get(&format!("{base}/api/v1/servers/availability"), &user, &password);
        let rows = v["availability"].as_array()?.clone();
        (rows.len() == 1 && rows[0]["node_id"] == node_id && rows[0]["available"] == Value::Bool(true)).then_some(())
    });
    assert!(demo.interrupt().success());
}

/// Connects a real client core with the demo's share link and downloads through it.
fn demo_proxy_works(dir: &std::path::Path, link: &str) {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::File::create(www.join("f.bin")).unwrap().set_len(100_000).unwrap();
    let (http, socks) = (free_port(), free_port());
    let mut server = std::process::Command::new("python3")
        .args(["-m", "http.server", &http.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(&www)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let config = serde_json::json!({
        "log": { "loglevel": "warning" },
        "inbounds": [{ "listen": "127.0.0.1", "port": socks, "protocol": "socks", "settings": { "auth": "noauth" } }],
        "outbounds": [flotilla_tests::traffic::outbound_from_link(link)],
    });
    let path = dir.join("client.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut core = std::process::Command::new(flotilla_tests::traffic::v2ray_binary().unwrap())
        .args(["-config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("v2ray");
    let got = wait_for("a download through the demo's proxy", Duration::from_secs(15), || {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "10", "--socks5-hostname"])
            .arg(format!("127.0.0.1:{socks}"))
            .arg(format!("http://127.0.0.1:{http}/f.bin"))
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().ok()).flatten()
    });
    let _ = core.kill();
    let _ = core.wait();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(got, 100_000);
}

/// The banner's WireGuard lines on a demo machine: install, log in, create a client; the config
/// it returns brings up a real tunnel from another network namespace, and `/api/data` sees it.
#[test]
fn demo_wireguard_example_gives_a_config_that_brings_up_a_real_tunnel() {
    if let Err(why) = wireguard::available() {
        eprintln!("skipped: WireGuard end-to-end {why}");
        return;
    }
    // The fleet gives the namespaces (its own controller is not used): one for the demo
    // machine, one for the phone.
    let mut fleet = Fleet::start();
    let host = fleet.new_host("demo");
    let (ns, addr) = (host.ns.clone().expect("namespace"), host.addr.expect("address"));
    let dir = tempfile::tempdir().unwrap();
    let wg_dir = dir.path().join("run-wireguard");
    std::fs::create_dir_all(&wg_dir).unwrap();
    let demo = Demo::start_on(dir.path(), 18080, 14433, 9952, Some((&ns, &wg_dir)));
    let banner = demo.banner();
    let text = banner.join("\n");
    let example = |needle: &str| {
        banner.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle}: {text}")).trim().to_string()
    };
    // Run on the demo machine, as its operator would.
    let run = |script: &str| -> Value {
        let out = Command::new("ip").args(["netns", "exec", &ns, "sh", "-c", script]).output().expect("sh");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{script}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    // The printed server_ip is this machine's first address; the phone reaches it on the bridge.
    let install = example("\"action\":\"install\"");
    let printed = install.split("\"server_ip\":\"").nth(1).and_then(|r| r.split('"').next()).expect("server_ip");
    let install = install.replace(&format!("\"server_ip\":\"{printed}\""), &format!("\"server_ip\":\"{addr}\""));
    let installed = run(&install);
    assert_eq!(installed["success"], Value::Bool(true), "{installed}");
    let token = example("TOKEN=$(");
    let created = run(&format!("{token}\n{}", example("\"resource\":\"client\"")));
    assert_eq!(created["success"], Value::Bool(true), "{created}");
    let config = created["data"]["client_config"].as_str().expect("client_config").to_string();
    assert!(config.contains(&format!("Endpoint = {addr}:51820")), "{config}");

    let phone = WgPeer::up(&mut fleet, "phone", &config, "10.66.0.1/24");
    phone.wait_ping("10.66.0.1", Duration::from_secs(30));
    let data_line = format!("{token}\n{}", example("/api/data"));
    wait_for("the phone connected and counted in /api/data", Duration::from_secs(30), || {
        let data = run(&data_line);
        let client = data["data"]["clients"].as_array()?.iter().find(|c| c["name"] == "phone")?.clone();
        let used = client["used_trafic"]["download"].as_u64()? + client["used_trafic"]["upload"].as_u64()?;
        (client["connected_now"] == Value::Bool(true) && used > 0).then_some(())
    });
    drop(phone);
    assert!(demo.interrupt().success(), "Ctrl-C exits with status 0");
}

#[test]
fn demo_vps_example_creates_a_running_server() {
    if let Err(why) = flotilla_tests::vps::available() {
        eprintln!("skipped: containers {why}");
        return;
    }
    // A namespace of its own (from a fleet whose controller is not used), keeping the machine's
    // cgroups for LXC: the demo's agent makes its bridge there.
    let mut fleet = Fleet::start();
    let host = fleet.new_host("demo-vps");
    let ns = host.ns.clone().expect("namespace");
    let dir = tempfile::tempdir().unwrap();
    let program = bin_dir().join("flotilla-controller");
    let demo = Demo::start_with(netns::net_only(&ns, program.as_os_str()), dir.path(), 18081, 14434, 9953);
    let banner = demo.banner();
    let text = banner.join("\n");
    let example = |needle: &str| {
        banner.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle}: {text}")).trim().to_string()
    };
    let run = |script: &str| -> Value {
        let out = netns::net_only(&ns, std::ffi::OsStr::new("sh")).args(["-c", script]).output().expect("sh");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{script}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let token = example("/api/auth/login");
    let created = run(&format!("{token}\n{}", example("/api/server/create")));
    assert_eq!(created["status"], "creating", "{created}");
    let name = wait_for("the server's container name", Duration::from_secs(10), || {
        let server = run(&format!("{token}\n{}", example("/api/server/1/status")));
        server["container"].as_str().map(str::to_string)
    });
    let _cleanup = scopeguard(ns.clone(), name.clone());
    let status = wait_for("the demo's server running", Duration::from_secs(120), || {
        let server = run(&format!("{token}\n{}", example("/api/server/1/status")));
        (server["status"] == "running" && server["ipAddress"].is_string()).then_some(server)
    });
    assert!(status["ipAddress"].as_str().unwrap().starts_with("10.203.0."), "{status}");
    assert_eq!(status["os"]["name"], "BusyBox");
    let console = run(&format!("{token}\n{}", example("/api/server/console")));
    assert!(
        console["status"] == "success" && console["url"].as_str().is_some_and(|u| u.contains("/vps-console/")),
        "{console}"
    );
    assert!(demo.interrupt().success(), "Ctrl-C exits with status 0");
}

/// Destroys the demo's container when the test ends, however it ends.
fn scopeguard(ns: String, name: String) -> impl Drop {
    struct Guard(String, String);
    impl Drop for Guard {
        fn drop(&mut self) {
            flotilla_tests::vps::destroy(Some(&self.0), std::slice::from_ref(&self.1));
        }
    }
    Guard(ns, name)
}
