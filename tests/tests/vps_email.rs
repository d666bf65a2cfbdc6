//! The VPS API's e-mail notifications end to end: a customer with an e-mail address orders a
//! busybox server and receives "Your server #ID is ready" with its address, through a local SMTP
//! sink (Python aiosmtpd, tests/py/smtp_sink.py). The mail outlives a controller crash: the SMTP
//! server hangs on the first attempt, the controller is SIGKILLed mid-attempt, restarts while
//! SMTP is down (refused), and the mail arrives once the sink is up, by the retries of the
//! store's outbox, exactly once.
//! Needs root, network namespaces, LXC, busybox-static and pip-installable aiosmtpd; skipped
//! otherwise.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_tests::harness::{wait_for, Fleet};
use flotilla_tests::vps::{self, Cleanup, Vps};
use serde_json::json;

/// A Python with aiosmtpd, in a venv under ~/.cache/flotilla (created once).
fn smtp_python() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME").ok_or("no HOME")?;
    let venv = Path::new(&home).join(".cache/flotilla/venv-smtp");
    let python = venv.join("bin/python");
    let has_aiosmtpd =
        |p: &Path| Command::new(p).args(["-c", "import aiosmtpd"]).output().is_ok_and(|o| o.status.success());
    if has_aiosmtpd(&python) {
        return Ok(python);
    }
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", "aiosmtpd"]))?;
    has_aiosmtpd(&python).then_some(python).ok_or_else(|| "aiosmtpd still not importable".into())
}

/// The SMTP sink, stopped on drop.
struct Sink {
    child: Child,
}

impl Sink {
    fn start(python: &Path, addr: SocketAddr, dir: &Path, log: &Path) -> Sink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/smtp_sink.py");
        let log = std::fs::File::create(log).expect("sink log");
        let child = Command::new(python)
            .arg(script)
            .args([addr.ip().to_string(), addr.port().to_string()])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("smtp sink");
        wait_for("the SMTP sink listening", Duration::from_secs(20), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
        Sink { child }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The messages the sink wrote.
fn received(dir: &Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "eml")).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect()
}

#[test]
fn the_owner_is_mailed_once_when_the_server_is_ready_even_across_a_controller_crash() {
    const NAME: &str = "the_owner_is_mailed_once_when_the_server_is_ready…";
    if let Err(why) = vps::available() {
        eprintln!("SKIPPED {NAME}: {why}");
        return;
    }
    let python = match smtp_python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED {NAME}: cannot install aiosmtpd: {why}");
            return;
        }
    };
    let mut fleet = Fleet::start();
    // The controller runs in its own namespace: the sink listens on the root namespace's end of
    // the veth to it (10.(100+S).0.1), or on loopback when the fleet is not namespaced.
    let host_ip = match fleet.net() {
        Some(net) => {
            let [a, b, c, _] = net.controller_http_ip().octets();
            Ipv4Addr::new(a, b, c, 1)
        }
        None => Ipv4Addr::LOCALHOST,
    };
    // First a server that takes connections and never greets (the kernel completes the handshake;
    // nothing answers): the controller's first attempt hangs there.
    let hanging = TcpListener::bind((host_ip, 0)).expect("free port");
    hanging.set_nonblocking(true).unwrap();
    let smtp = hanging.local_addr().unwrap();
    std::fs::write(fleet.controller_config(), format!("[email]\nhost = \"{host_ip}\"\nport = {}\n", smtp.port()))
        .unwrap();
    fleet.stop_controller();
    fleet.start_controller();

    let agent = fleet.add_container_agent("vps-mail", &vps::agent_config(3));
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(20));
    let ns = fleet.agent(agent).host.ns.clone();
    let admin = Vps::login(&fleet.api, "admin", &fleet.api.password.clone());
    vps::add_user(&fleet, "bob", "bob-password-1", Some("bob@example.com"));
    let bob = Vps::login(&fleet.api, "bob", "bob-password-1");
    let (os, tariff) = vps::busybox_catalog(&admin);

    let order = vps::Order::place(&bob, os, tariff);
    let id = order.id;
    let _cleanup = Cleanup { ns: ns.clone(), names: vec![order.container.clone()] };
    let address =
        order.wait_running(&bob, Duration::from_secs(120))["ipAddress"].as_str().expect("address").to_string();
    eprintln!("server {id} at {address}; waiting for the mailer's first attempt");

    // The mailer connects and waits for a greeting: the mail is claimed, mid-attempt. Crash now.
    let stuck = wait_for("the mailer's first attempt", Duration::from_secs(60), || hanging.accept().ok());
    fleet.kill_controller();
    drop((stuck, hanging));
    eprintln!("controller killed mid-attempt; restarting it with SMTP down");
    fleet.start_controller();

    // Back up: the outbox still holds the mail and retries it (1, 2, 4, 8 s apart) while the
    // port refuses; the sink comes up and a retry delivers. The operator can see it waiting.
    let waiting = mail_list(&fleet, &["--json"]);
    let waiting = waiting.as_array().expect("mail list --json");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!((&waiting[0]["recipient"], &waiting[0]["state"]), (&json!("bob@example.com"), &json!("pending")));
    std::thread::sleep(Duration::from_secs(1));
    let mail_dir = fleet.controller_data_dir().with_file_name("mail");
    let _sink = Sink::start(&python, smtp, &mail_dir, &mail_dir.with_extension("log"));
    let up = Instant::now();
    let mail = wait_for("the server-ready mail", Duration::from_secs(30), || {
        received(&mail_dir).into_iter().find(|m| m.contains("X-Rcpt-To: bob@example.com"))
    });
    eprintln!("mail arrived {:.1?} after the sink came up:\n{mail}", up.elapsed());
    assert!(mail.contains(&format!("Subject: Your server #{id} is ready")), "{mail}");
    assert!(mail.contains(&format!("ssh root@{address}")), "the address in the body: {mail}");
    assert!(mail.contains(&format!("POST /api/server/{id}/password")), "{mail}");
    assert!(mail.contains("BusyBox") && mail.contains("Tiny"), "OS and tariff: {mail}");
    assert!(mail.contains(&format!("X-Mail-From: flotilla@{host_ip}")), "{mail}");
    let log = std::fs::read_to_string(fleet.controller_log()).unwrap_or_default();
    assert!(
        log.contains("e-mails being sent at the last stop are tried again"),
        "the restarted controller released the mail claimed mid-attempt"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(received(&mail_dir).len(), 1, "one mail, sent once");
    assert_eq!(mail_list(&fleet, &["--json"]), json!([]), "nothing waits any more");
    let all = mail_list(&fleet, &["--all", "--json"]);
    assert_eq!(
        (&all[0]["state"], all[0]["attempts"].as_u64().is_some_and(|n| n >= 1)),
        (&json!("sent"), true),
        "{all}"
    );
}

/// `flotilla-controller mail list ARGS` against the running controller's data dir, parsed.
fn mail_list(fleet: &Fleet, args: &[&str]) -> serde_json::Value {
    let out = Command::new(flotilla_tests::harness::bin_dir().join("flotilla-controller"))
        .arg("--data-dir")
        .arg(fleet.controller_data_dir())
        .args(["mail", "list"])
        .args(args)
        .output()
        .expect("flotilla-controller mail list");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from mail list --json")
}
