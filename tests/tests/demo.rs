//! The README's main job: `flotilla-controller demo` starts a controller and a local agent, prints
//! how to reach them, stops cleanly on Ctrl-C, and a second run reuses the same data dir.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use flotilla_tests::harness::{basic_header, bin_dir, free_port, wait_for};
use serde_json::Value;

struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Demo {
    fn start(dir: &std::path::Path, http: u16, quic: u16) -> Demo {
        // An empty config file: the host's /etc/flotilla must not leak into the test.
        let config = dir.join("demo.toml");
        std::fs::write(&config, "").unwrap();
        let mut child = Command::new(bin_dir().join("flotilla-controller"))
            .current_dir(dir)
            .args(["demo", "--config"])
            .arg(&config)
            .args(["--http", &format!("127.0.0.1:{http}"), "--quic", &format!("127.0.0.1:{quic}")])
            .env("RUST_LOG", "warn")
            .env_remove("FLOTILLA_ADMIN_USER")
            .env_remove("FLOTILLA_ADMIN_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
    let (http, quic) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{http}");

    let demo = Demo::start(dir.path(), http, quic);
    let banner = demo.banner();
    let text = banner.join("\n");
    assert!(text.contains(&format!("{base}/api/v1/")), "{text}");
    assert!(text.contains("curl -u"), "two curl examples: {text}");
    assert_eq!(banner.iter().filter(|l| l.trim_start().starts_with("curl ")).count(), 2, "{text}");
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

    assert!(demo.interrupt().success(), "Ctrl-C exits with status 0");
    assert!(dir.path().join("flotilla-demo/controller.db").exists());

    // Second run: same data dir, same admin, same node, no duplicate.
    let demo = Demo::start(dir.path(), http, quic);
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
