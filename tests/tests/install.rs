//! The one-line node install served by the controller: `POST /api/v1/nodes` hands out the
//! one-liner, and the real script, run on a fresh host of the test, checks the controller's CA
//! against the token and the package's signature with openssl before it installs anything.
//!
//! Installing the .deb needs a real Debian host with systemd (the container suites do that);
//! here `apt-get`, `flotilla-agent` and `systemctl` are stand-ins that record how the script
//! called them, so what is under test is the script's download and verification logic.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use flotilla_protocol::token::JoinToken;
use flotilla_tests::harness::{wait_for, Fleet};
use serde_json::json;

const PACKAGE: &[u8] = b"!<arch>\nnot really a deb, but signed like one\n";

/// Stand-ins for the commands the script ends with; each records its arguments in `record`.
fn stand_ins(dir: &Path, record: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = |name: &str, extra: &str| {
        let path = dir.join(name);
        let body = format!("#!/bin/sh\necho \"{name} $*\" >> '{}'\n{extra}\nexit 0\n", record.display());
        std::fs::write(&path, body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    // apt-get keeps a copy of the package it was given.
    script("apt-get", &format!("for a; do last=$a; done; cp \"$last\" '{}/installed.deb'", dir.display()));
    script("flotilla-agent", "");
    script("systemctl", "");
}

/// Runs `curl -fsSL … | sh` as the one-liner says, on host namespace `ns` with the stand-ins first
/// on PATH. Returns (success, output).
fn run_one_liner(ns: Option<&str>, shims: &Path, line: &str) -> (bool, String) {
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", shims.display());
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "env"]);
            c
        }
        None => Command::new("env"),
    };
    let out = cmd.arg(format!("PATH={path}")).args(["sh", "-c", line]).output().expect("sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_one_liner_checks_the_ca_and_the_package_before_installing() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl not installed");
        return;
    }
    let mut fleet = Fleet::start();
    let (_, plain) = {
        let reply = fleet.api.post("/api/v1/nodes", &json!({ "name": "before" }));
        (reply.status, reply.body.clone())
    };
    assert!(plain.get("install_command").is_none(), "no one-liner without a package: {plain}");
    let package = fleet.controller_data_dir().with_file_name("flotilla-agent.deb");
    std::fs::write(&package, PACKAGE).unwrap();
    std::fs::write(fleet.controller_config(), format!("[install]\nagent_package = \"{}\"\n", package.display()))
        .unwrap();
    fleet.stop_controller();
    fleet.start_controller();

    let reply = fleet.api.post("/api/v1/nodes", &json!({ "name": "fresh-1" }));
    assert_eq!(reply.status, 200, "{}", reply.raw);
    let line = reply.body["install_command"].as_str().expect("install_command").to_string();
    let token = reply.body["join_token"].as_str().unwrap().to_string();
    assert_eq!(line, format!("curl -fsSL {}/install.sh | sh -s -- {token}", fleet.api.base));

    // A fresh host reaches the controller on the fleet's bridge, not at the address the test
    // uses: the one-liner with the address the host would be given.
    let port = fleet.api.base.rsplit(':').next().unwrap().to_string();
    let reachable = match fleet.net() {
        Some(net) => format!("http://{}:{port}", net.controller_agent_ip()),
        None => fleet.api.base.clone(),
    };
    let line = line.replace(&fleet.api.base, &reachable);
    // The stand-ins record what the script did.
    let host = fleet.new_host("fresh");
    let dir = tempfile::tempdir().unwrap();
    let (shims, record) = (dir.path().join("bin"), dir.path().join("calls"));
    stand_ins(&shims, &record);
    let (ok, out) = run_one_liner(host.ns.as_deref(), &shims, &line);
    assert!(ok, "{out}");
    let calls = std::fs::read_to_string(&record).unwrap_or_else(|e| panic!("no calls recorded ({e}): {out}"));
    let lines: Vec<&str> = calls.lines().collect();
    assert!(lines[0].starts_with("apt-get install") && lines[0].ends_with("flotilla-agent.deb"), "{calls}");
    assert_eq!(lines[1], format!("flotilla-agent enroll {token}"), "{calls}");
    assert_eq!(std::fs::read(shims.join("installed.deb")).unwrap(), PACKAGE, "the package as the controller served it");

    // A token pinning another CA: refused before anything is downloaded or installed.
    std::fs::remove_file(&record).unwrap();
    let mut foreign = JoinToken::parse(&token).unwrap();
    foreign.ca_fingerprint[0] ^= 0xff;
    let foreign_line = line.replace(&token, &foreign.encode());
    let (ok, out) = run_one_liner(host.ns.as_deref(), &shims, &foreign_line);
    assert!(!ok, "{out}");
    assert!(out.contains("is not the one in the token"), "{out}");
    assert!(!record.exists(), "nothing installed: {:?}", std::fs::read_to_string(&record));

    // A package altered on the way (here: served by a stand-in mirror with the real CA and the
    // real signature, but other bytes): refused by the signature check.
    let script = ureq::get(&format!("{}/install.sh", fleet.api.base)).call().unwrap().into_string().unwrap();
    let mirror = dir.path().join("mirror");
    std::fs::create_dir_all(mirror.join("install")).unwrap();
    for name in ["ca.der", "flotilla-agent.deb.sig"] {
        let mut bytes = Vec::new();
        let url = format!("{}/install/{name}", fleet.api.base);
        std::io::Read::read_to_end(&mut ureq::get(&url).call().unwrap().into_reader(), &mut bytes).unwrap();
        std::fs::write(mirror.join("install").join(name), bytes).unwrap();
    }
    std::fs::write(mirror.join("install/flotilla-agent.deb"), b"!<arch>\nsomething else entirely\n").unwrap();
    let port = flotilla_tests::harness::free_port();
    let mut server = Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(&mirror)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 http.server");
    let mirror_url = format!("http://127.0.0.1:{port}");
    wait_for("the mirror", Duration::from_secs(10), || {
        ureq::get(&format!("{mirror_url}/install/ca.der")).call().ok().map(|_| ())
    });
    let tampered = script.replace(&fleet.api.base, &mirror_url);
    std::fs::write(dir.path().join("install.sh"), tampered).unwrap();
    let (ok, out) = run_one_liner(None, &shims, &format!("sh {} {token}", dir.path().join("install.sh").display()));
    let _ = server.kill();
    let _ = server.wait();
    assert!(!ok, "{out}");
    assert!(out.contains("not signed by the controller's CA"), "{out}");
    assert!(!record.exists(), "nothing installed");
}
