//! What the systemd units rely on, with the real binaries: `check-config` exit codes, a SIGHUP
//! reload that keeps links, plain logs and no password when the output is not a terminal, and a
//! controller backup taken while `serve` runs that restores into a working controller.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use flotilla_tests::harness::{basic_header, bin_dir, free_port, wait_for, Fleet};

fn run(program: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin_dir().join(program)).args(args).env("NO_COLOR", "1").output().expect(program);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_config_says_whether_a_service_can_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let good = file("agent.toml", "log = \"debug\"\n[core]\nmode = \"off\"\n");
    assert_eq!(run("flotilla-agent", &["--config", &good, "check-config"]).0, 0);
    let bad = file("agent-bad.toml", "[core]\nstats_interval = \"soon\"\n");
    let (code, text) = run("flotilla-agent", &["--config", &bad, "check-config"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("agent-bad.toml"), "the message names the file: {text}");
    let missing = dir.path().join("none.toml").display().to_string();
    assert_eq!(run("flotilla-agent", &["--config", &missing, "check-config"]).0, 2, "an explicit file must exist");

    let good = file("controller.toml", "log = \"info\"\nbase_path = \"/panel\"\n");
    assert_eq!(run("flotilla-controller", &["--config", &good, "check-config"]).0, 0);
    for (name, text, needle) in [
        ("c1.toml", "http = \"not an address\"\n", "http"),
        ("c2.toml", "base_path = \"no-slash\"\n", "base_path"),
        ("c3.toml", "[monitoring]\nprometheus_url = \"ftp://x\"\n", "monitoring"),
        ("c4.toml", "[candy]\nui_dir = \"/nonexistent\"\n", "ui_dir"),
    ] {
        let path = file(name, text);
        let (code, out) = run("flotilla-controller", &["--config", &path, "check-config"]);
        assert_eq!(code, 2, "{name}: {out}");
        assert!(out.contains(needle), "{name}: {out}");
    }
}

#[test]
fn sighup_reloads_both_without_dropping_the_link() {
    let mut fleet = Fleet::start();
    let agent = fleet.add_agent("hup-1");
    let node = fleet.agent(agent).node_id;
    fleet.wait_connected(&[node], Duration::from_secs(20));
    let agent_log = fleet.agent(agent).host.log.clone();
    let connects = |log: &str| log.matches("agent connected").count();
    let before = connects(&fleet.controller_log_text());

    let hup = |pid: u32| assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    hup(fleet.agent(agent).pid().expect("agent pid"));
    hup(fleet.controller_pid().expect("controller pid"));
    wait_for("both to log the reload", Duration::from_secs(10), || {
        let a = std::fs::read_to_string(&agent_log).unwrap_or_default();
        let c = fleet.controller_log_text();
        (a.contains("configuration reloaded") && c.contains("configuration reloaded")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(fleet.agent(agent).is_running(), "the agent survived SIGHUP");
    let log = fleet.controller_log_text();
    assert_eq!(connects(&log), before, "no reconnect after the reload:\n{log}");
    assert!(!log.contains("agent disconnected"), "the link stayed up:\n{log}");
    assert_eq!(fleet.availability(node).expect("node")["available"], serde_json::json!(true));
}

/// A controller run as systemd does (stdout and stderr to files, not a terminal).
struct Controller {
    child: std::process::Child,
    http: u16,
}

impl Controller {
    fn start(data_dir: &Path, logs: &Path) -> Controller {
        let http = free_port();
        let out = std::fs::File::create(logs.join("stdout")).unwrap();
        let err = std::fs::File::create(logs.join("stderr")).unwrap();
        // An empty config file: the host's /etc/flotilla must not leak into the test.
        let config = logs.join("controller.toml");
        std::fs::write(&config, "").unwrap();
        let child = Command::new(bin_dir().join("flotilla-controller"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .arg("--config")
            .arg(&config)
            .args(["--http", &format!("127.0.0.1:{http}"), "--quic", &format!("127.0.0.1:{}", free_port())])
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .env_remove("FLOTILLA_ADMIN_USER")
            .env_remove("FLOTILLA_ADMIN_PASSWORD")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("controller");
        Controller { child, http }
    }

    fn nodes_status(&self, user: &str, password: &str) -> u16 {
        let url = format!("http://127.0.0.1:{}/api/v1/nodes", self.http);
        match ureq::get(&url).set("Authorization", &basic_header(user, password)).call() {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(_) => 0,
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn off_a_terminal_logs_are_plain_the_password_stays_in_its_file_and_backups_restore() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let controller = Controller::start(&data, dir.path());
    let password_file = data.join("initial-admin-password");
    let creds = wait_for("the generated admin password file", Duration::from_secs(20), || {
        std::fs::read_to_string(&password_file).ok().filter(|t| t.contains(':'))
    });
    let (user, password) = creds.trim().split_once(':').map(|(u, p)| (u.to_string(), p.to_string())).unwrap();
    wait_for("the API", Duration::from_secs(20), || (controller.nodes_status(&user, &password) == 200).then_some(()));
    let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(
        !stdout.contains(&password) && !stderr.contains(&password),
        "the password is not printed:\n{stdout}{stderr}"
    );
    assert!(stdout.contains("initial-admin-password"), "says where it is: {stdout}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes off a terminal:\n{stderr}");
    assert!(stderr.contains("controller started"), "{stderr}");

    // A backup while serve runs, restored into a new data dir, serves the same users.
    let archive = dir.path().join("controller-backup.zip");
    let (code, out) = run(
        "flotilla-controller",
        &["--data-dir", &data.display().to_string(), "backup", "--out", &archive.display().to_string()],
    );
    assert_eq!(code, 0, "{out}");
    let restored = dir.path().join("restored");
    let from = archive.display().to_string();
    let (code, out) =
        run("flotilla-controller", &["--data-dir", &restored.display().to_string(), "restore", "--from", &from]);
    assert_eq!(code, 0, "{out}");
    let (code, out) =
        run("flotilla-controller", &["--data-dir", &restored.display().to_string(), "restore", "--from", &from]);
    assert_ne!(code, 0, "an existing store is not replaced without --replace: {out}");
    drop(controller);
    let logs = dir.path().join("second");
    std::fs::create_dir_all(&logs).unwrap();
    let second = Controller::start(&restored, &logs);
    wait_for("the restored controller", Duration::from_secs(20), || {
        (second.nodes_status(&user, &password) == 200).then_some(())
    });
    let stdout = std::fs::read_to_string(logs.join("stdout")).unwrap();
    assert!(!stdout.contains("created administrator"), "the restored store has its admin: {stdout}");
}

/// The packaged units pass `systemd-analyze verify` and stay within their exposure budgets
/// (controller ≤ 2.0, agent ≤ 7.0, as `systemd-analyze security` scores them).
#[test]
fn units_verify_and_stay_within_their_exposure_budgets() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("SKIPPED: systemd-analyze not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    for (name, budget) in [("flotilla-controller", 2.0), ("flotilla-agent", 7.0)] {
        // `verify` checks that ExecStart exists on this machine: point it at the built binary.
        let text = std::fs::read_to_string(units.join(format!("{name}.service"))).unwrap();
        let text = text.replace(&format!("/usr/bin/{name}"), &bin_dir().join(name).display().to_string());
        let unit = dir.path().join(format!("{name}.service"));
        std::fs::write(&unit, text).unwrap();
        let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
        let says = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success() && says.trim().is_empty(), "{name}: {says}");
        let out = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&unit).output().unwrap();
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        let score: f64 = report
            .lines()
            .find_map(|l| {
                l.split("Overall exposure level for").nth(1)?.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("{name}: no score in {report}"));
        assert!(score <= budget, "{name}: exposure {score} > {budget}\n{report}");
    }
}
