//! The hard cases of the link (DESIGN.md §2, §6): controller killed and restarted, agents
//! restarted, a second agent process with the same identity, a partitioned link, certificate
//! renewal over the link, and an orderly controller shutdown.
//!
//! The tests of this file run one at a time (they measure reconnect times, which a neighbour
//! test hogging the two cores would distort). Timings are printed with `eprintln!`; run with
//! `--nocapture` to see them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flotilla_tests::harness::{bin_dir, wait_for, Fleet, FleetOptions};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls `f` every 50 ms until it holds; returns how long that took, panics after `timeout`.
#[track_caller]
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn available(fleet: &Fleet, id: i64) -> bool {
    fleet.availability(id).is_some_and(|r| r["available"] == Value::Bool(true))
}

fn all_available(fleet: &Fleet, ids: &[i64]) -> bool {
    ids.iter().all(|id| available(fleet, *id))
}

/// `(id, name)` of every node, sorted by id.
fn nodes(fleet: &Fleet) -> Vec<(i64, String)> {
    let r = fleet.api.get("/api/v1/nodes");
    assert_eq!(r.status, 200, "{}", r.raw);
    let mut v: Vec<(i64, String)> = r
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|n| (n["id"].as_i64().expect("id"), n["name"].as_str().expect("name").to_string()))
        .collect();
    v.sort();
    v
}

fn link_state(status: &Value) -> String {
    status["link"]["state"].as_str().unwrap_or("none").to_string()
}

fn serial(status: &Value) -> String {
    status["certificate"]["serial"].as_str().unwrap_or_else(|| panic!("no certificate serial: {status}")).to_string()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// Copies an agent data dir (the agent must be stopped: SQLite files are copied as they are).
fn copy_dir(from: &Path, to: &Path) {
    let out = Command::new("cp").arg("-a").arg(from).arg(to).output().expect("cp");
    assert!(
        out.status.success(),
        "cp -a {} {}: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An extra `flotilla-agent run` process outside the harness's bookkeeping; SIGKILLed on drop.
struct ExtraAgent {
    child: Child,
    data_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl ExtraAgent {
    /// Starts `flotilla-agent run` on `data_dir`, in namespace `ns` when given.
    fn start(fleet: &Fleet, name: &str, ns: Option<&str>, data_dir: &Path, extra: &[&str]) -> ExtraAgent {
        let config = fleet.tmp.path().join(format!("extra-{name}.toml"));
        std::fs::write(&config, "").expect("config");
        let log = fleet.tmp.path().join(format!("extra-{name}.log"));
        let file = std::fs::File::create(&log).expect("log");
        let program = bin_dir().join("flotilla-agent");
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        cmd.arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(&config)
            .args(["run", "--metrics-interval", &format!("{}ms", fleet.opts.metrics_interval.as_millis())])
            .args(extra)
            .env("RUST_LOG", "info,flotilla_agent=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        let child = cmd.spawn().expect("start extra flotilla-agent");
        ExtraAgent { child, data_dir: data_dir.to_path_buf(), config, log }
    }

    /// `flotilla-agent status --json` of this process's data dir.
    fn status(&self) -> Value {
        let out = Command::new(bin_dir().join("flotilla-agent"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&self.config)
            .args(["status", "--json"])
            .env("RUST_LOG", "warn")
            .output()
            .expect("flotilla-agent status");
        assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ExtraAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "---- extra agent {} log ----\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}

#[test]
fn controller_sigkill_and_restart_all_agents_back_within_5s() {
    let _serial = one_at_a_time();
    // The production heartbeat (5 s), not the harness's 1 s: an agent that only notices the dead
    // link by missed heartbeats then needs 3.5 x 5 s, so the 5 s bound below holds only if the
    // restarted controller answers the old connections with stateless resets, as designed.
    let heartbeat_interval = Duration::from_secs(5);
    let mut fleet = Fleet::start_with(FleetOptions { heartbeat_interval, ..Default::default() });
    let agents: Vec<usize> = ["k-1", "k-2", "k-3"].iter().map(|n| fleet.add_agent(n)).collect();
    let ids: Vec<i64> = agents.iter().map(|i| fleet.agent(*i).node_id).collect();
    fleet.wait_connected(&ids, Duration::from_secs(15));
    let before = nodes(&fleet);
    assert_eq!(before.len(), 3);

    fleet.kill_controller();
    // The agents keep running without their controller.
    std::thread::sleep(Duration::from_millis(500));
    for i in &agents {
        assert!(fleet.agent(*i).is_running(), "agent {i} died with the controller");
    }
    let restart = Instant::now();
    fleet.start_controller();
    let restart_took = restart.elapsed();
    let back = wait_until("all 3 agents available after the controller restart", Duration::from_secs(30), || {
        all_available(&fleet, &ids)
    });
    eprintln!(
        "TIMING controller SIGKILL+restart: controller up in {:.2} s; all 3 agents available {:.2} s after that",
        restart_took.as_secs_f64(),
        back.as_secs_f64()
    );
    // How each agent learned that its link was dead (stateless reset vs. heartbeat timeout).
    for i in &agents {
        let log = std::fs::read_to_string(&fleet.agent(*i).host.log).unwrap_or_default();
        let reason = log.lines().rfind(|l| l.contains("link lost")).unwrap_or("(no `link lost` line)");
        eprintln!("agent {i}: {reason}");
    }
    assert!(back < Duration::from_secs(5), "agents took {back:?} (> 5 s) to come back after the controller restart");

    // Same nodes, same ids, nothing duplicated.
    assert_eq!(nodes(&fleet), before);
    for (i, id) in agents.iter().zip(&ids) {
        assert_eq!(fleet.agent_status(*i)["node_id"].as_i64(), Some(*id));
        assert!(fleet.agent(*i).is_running());
    }
    // And they stay connected (not a flap right after the reconnect).
    std::thread::sleep(Duration::from_secs(2));
    assert!(all_available(&fleet, &ids), "an agent dropped again after the reconnect");
}

#[test]
fn agent_restart_keeps_its_node() {
    let _serial = one_at_a_time();
    let mut fleet = Fleet::start_with(FleetOptions::default());
    let a = fleet.add_agent("restart-1");
    let b = fleet.add_agent("restart-2");
    let (id_a, id_b) = (fleet.agent(a).node_id, fleet.agent(b).node_id);
    fleet.wait_connected(&[id_a, id_b], Duration::from_secs(15));
    let before = nodes(&fleet);
    let serial_before = serial(&fleet.agent_status(a));

    for hard in [false, true] {
        let variant = if hard { "SIGKILL" } else { "SIGTERM" };
        let replaced_before = count(&fleet.controller_log_text(), "replaces");
        fleet.stop_agent(a, hard);
        if !hard {
            // An orderly stop closes the link: the controller knows at once.
            let gone =
                wait_until("controller sees the stopped agent go", Duration::from_secs(3), || !available(&fleet, id_a));
            eprintln!("TIMING agent {variant}: controller saw the link close after {:.2} s", gone.as_secs_f64());
            assert_eq!(link_state(&fleet.agent_status(a)), "stopped");
        }
        let start = Instant::now();
        fleet.start_agent(a);
        wait_until(&format!("agent back after {variant}"), Duration::from_secs(10), || {
            link_state(&fleet.agent_status(a)) == "connected" && available(&fleet, id_a)
        });
        let back = start.elapsed();
        eprintln!(
            "TIMING agent {variant} restart: available again {:.2} s after the new process started",
            back.as_secs_f64()
        );
        assert!(back < Duration::from_secs(5), "agent took {back:?} to reconnect after {variant}");
        let status = fleet.agent_status(a);
        assert_eq!(status["node_id"].as_i64(), Some(id_a), "{variant}: same node id");
        assert_eq!(serial(&status), serial_before, "{variant}: the identity is kept");
        assert_eq!(nodes(&fleet), before, "{variant}: no duplicate or renamed node");
        assert!(available(&fleet, id_b), "{variant}: the other agent is unaffected");
        if hard {
            // The killed process never closed its link: the new session replaced the dead one
            // (unless the controller's heartbeat timeout noticed first).
            let replaced = count(&fleet.controller_log_text(), "replaces") - replaced_before;
            eprintln!("agent SIGKILL: the controller logged {replaced} session replacement(s)");
        }
    }
    // Stable afterwards.
    std::thread::sleep(Duration::from_secs(2));
    assert!(all_available(&fleet, &[id_a, id_b]));
    assert_eq!(nodes(&fleet), before);
}

#[test]
fn newer_session_of_the_same_node_replaces_the_old_one() {
    let _serial = one_at_a_time();
    let mut fleet = Fleet::start_with(FleetOptions::default());
    let a = fleet.add_agent("twin");
    let id = fleet.agent(a).node_id;
    fleet.wait_connected(&[id], Duration::from_secs(15));
    let before = nodes(&fleet);

    // A copy of the agent's identity (taken while stopped, so the SQLite files are consistent).
    fleet.stop_agent(a, false);
    let copy = fleet.tmp.path().join("agent-twin-copy");
    copy_dir(&fleet.agent(a).host.data_dir, &copy);
    fleet.start_agent(a);
    fleet.wait_connected(&[id], Duration::from_secs(10));
    let replaced_before = count(&fleet.controller_log_text(), "replaces");

    let ns = fleet.agent(a).host.ns.clone();
    let mut twin = ExtraAgent::start(&fleet, "twin-copy", ns.as_deref(), &copy, &[]);
    let took = wait_until("the controller logs a session replacement", Duration::from_secs(10), || {
        count(&fleet.controller_log_text(), "replaces") > replaced_before
    });
    eprintln!("second process with the same identity: first replacement logged after {:.2} s", took.as_secs_f64());

    // Over a few seconds: still exactly one node, always available, same id.
    let window = Instant::now();
    let mut polls = 0;
    while window.elapsed() < Duration::from_secs(5) {
        assert!(available(&fleet, id), "node unavailable while two sessions compete");
        assert_eq!(nodes(&fleet), before, "the second session created or renamed a node");
        polls += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(polls >= 10);
    assert!(fleet.agent(a).is_running() && twin.is_running(), "an agent process died");
    let replacements = count(&fleet.controller_log_text(), "replaces") - replaced_before;
    eprintln!(
        "two live processes with one identity: {replacements} replacement(s) in {:.1} s (original: {}, copy: {})",
        window.elapsed().as_secs_f64() + took.as_secs_f64(),
        link_state(&fleet.agent_status(a)),
        link_state(&twin.status()),
    );
    let original_log = std::fs::read_to_string(&fleet.agent(a).host.log).unwrap_or_default();
    eprintln!(
        "  `replaced by a newer session` seen by the original: {}, by the copy: {}",
        count(&original_log, "replaced by a newer session"),
        count(&twin.log_text(), "replaced by a newer session")
    );
    let status = twin.status();
    assert_eq!(status["node_id"].as_i64(), Some(id));
    // The pushed-off twin backs off (30 s) instead of pushing back at once: no replacement loop.
    assert!(replacements <= 2, "{replacements} replacements in ~5 s: the twins are fighting over the link");
    assert_eq!(link_state(&fleet.agent_status(a)), "replaced", "the original was pushed off and says so");

    // Once the copy is gone, the original takes the node back at its next (slow) retry.
    drop(twin);
    let back = wait_until("the original agent alone and connected", Duration::from_secs(40), || {
        link_state(&fleet.agent_status(a)) == "connected" && available(&fleet, id)
    });
    eprintln!("original back {:.1} s after the copy stopped", back.as_secs_f64());
    assert_eq!(nodes(&fleet), before);
}

#[test]
fn partitioned_link_recovers() {
    let _serial = one_at_a_time();
    let mut fleet = Fleet::start_with(FleetOptions::default());
    if !fleet.namespaced() {
        eprintln!("SKIPPED partitioned_link_recovers: agents are not in network namespaces (needs root and `ip`)");
        return;
    }
    let a = fleet.add_agent("part-1");
    let b = fleet.add_agent("part-2");
    let (id_a, id_b) = (fleet.agent(a).node_id, fleet.agent(b).node_id);
    fleet.wait_connected(&[id_a, id_b], Duration::from_secs(15));
    let host_index = u8::try_from(a).expect("host index"); // hosts are created in add_agent order

    fleet.net().unwrap().set_agent_link(host_index, false).expect("link down");
    let cut = Instant::now();
    let seen_down =
        wait_until("the controller marks the partitioned node unavailable", Duration::from_secs(15), || {
            !available(&fleet, id_a)
        });
    eprintln!(
        "TIMING partition: controller marked the node unavailable {:.2} s after the link went down (heartbeat 1 s x 3 misses)",
        seen_down.as_secs_f64()
    );
    assert!(seen_down >= Duration::from_secs(2), "unavailable after {seen_down:?}: faster than 3 missed heartbeats?");
    assert!(available(&fleet, id_b), "the other agent is unaffected by the partition");
    // The status row says why and since when, from the last heartbeat the controller saw.
    let row = fleet.availability(id_a).expect("row of the partitioned node");
    let error = row["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("agent not connected (last seen 20"), "{row}");
    assert!(row["last_seen"].is_string() && row["latency_ms"].is_null(), "{row}");
    // The agent notices too, and keeps running.
    wait_until("the partitioned agent notices", Duration::from_secs(10), || {
        link_state(&fleet.agent_status(a)) != "connected"
    });
    eprintln!("partition: agent noticed after {:.2} s", cut.elapsed().as_secs_f64());
    assert!(fleet.agent(a).is_running(), "the partitioned agent exited");

    fleet.net().unwrap().set_agent_link(host_index, true).expect("link up");
    let healed = Instant::now();
    let back = wait_until("the agent available again after the partition", Duration::from_secs(30), || {
        available(&fleet, id_a)
    });
    eprintln!(
        "TIMING partition: available again {:.2} s after the link came back (partition lasted {:.2} s)",
        back.as_secs_f64(),
        (healed - cut).as_secs_f64()
    );
    assert!(back < Duration::from_secs(10), "took {back:?} to recover from the partition");
    assert_eq!(link_state(&fleet.agent_status(a)), "connected");
    assert_eq!(nodes(&fleet).len(), 2);
    assert!(available(&fleet, id_b));
}

#[test]
fn certificate_renewal_over_the_link() {
    let _serial = one_at_a_time();
    let lifetime = Duration::from_secs(20);
    let mut fleet = Fleet::start_with(FleetOptions { agent_cert_lifetime: Some(lifetime), ..Default::default() });
    let a = fleet.add_agent("renew-1");
    let enrolled = Instant::now();
    let id = fleet.agent(a).node_id;
    fleet.wait_connected(&[id], Duration::from_secs(15));
    let status = fleet.agent_status(a);
    let old_serial = serial(&status);
    let cert = &status["certificate"];
    let (nb, na, renew_at) =
        (cert["not_before"].as_i64().unwrap(), cert["not_after"].as_i64().unwrap(), cert["renew_at"].as_i64().unwrap());
    eprintln!("certificate {old_serial}: lifetime {} s, renewal due {} s after not_before", na - nb, renew_at - nb);
    assert!((na - nb) >= 19 && (na - nb) <= 22, "lifetime {} s", na - nb);

    // Keep the identity as it is before the renewal (stop first: consistent SQLite files).
    fleet.stop_agent(a, false);
    let old_copy = fleet.tmp.path().join("agent-renew-1-before-renewal");
    copy_dir(&fleet.agent(a).host.data_dir, &old_copy);
    fleet.start_agent(a);
    fleet.wait_connected(&[id], Duration::from_secs(10));

    // Renewal over the live link; the node never goes away meanwhile.
    let mut polls = 0;
    let new_serial = loop {
        assert!(
            available(&fleet, id),
            "node unavailable while waiting for the renewal (after {:?})",
            enrolled.elapsed()
        );
        let s = serial(&fleet.agent_status(a));
        if s != old_serial {
            break s;
        }
        polls += 1;
        assert!(enrolled.elapsed() < Duration::from_secs(25), "no renewal within 25 s of enrollment ({polls} polls)");
        std::thread::sleep(Duration::from_millis(250));
    };
    let renewed_after = enrolled.elapsed();
    eprintln!(
        "TIMING renewal: serial changed {:.2} s after enrollment (due at 70% = {} s after not_before); {polls} polls, always available",
        renewed_after.as_secs_f64(),
        renew_at - nb
    );
    assert!(fleet.controller_log_text().contains("agent certificate renewed"));
    let renewed = fleet.agent_status(a);
    assert!(renewed["certificate"]["not_after"].as_i64().unwrap() > na, "the new certificate lives longer");
    assert_eq!(renewed["node_id"].as_i64(), Some(id));
    assert!(available(&fleet, id));
    assert_eq!(nodes(&fleet).len(), 1);

    // A restart connects with the new certificate.
    fleet.stop_agent(a, false);
    let restart = Instant::now();
    fleet.start_agent(a);
    wait_until("agent reconnected with the renewed certificate", Duration::from_secs(10), || {
        link_state(&fleet.agent_status(a)) == "connected" && available(&fleet, id)
    });
    eprintln!(
        "TIMING renewal: restarted agent connected with the new certificate in {:.2} s",
        restart.elapsed().as_secs_f64()
    );
    let current = serial(&fleet.agent_status(a));
    assert_ne!(current, old_serial, "the restarted agent went back to the old certificate");
    eprintln!("renewal: serials {old_serial} -> {new_serial} (now {current})");

    // The certificate from before the renewal is superseded now: a process holding it is refused
    // (before it would have expired anyway, so the refusal is the supersession's doing).
    let ns = fleet.agent(a).host.ns.clone();
    let mut stale = ExtraAgent::start(&fleet, "stale", ns.as_deref(), &old_copy, &[]);
    let refused = wait_until("the pre-renewal copy refused", Duration::from_secs(15), || {
        link_state(&stale.status()) == "refused"
    });
    let now_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let stale_status = stale.status();
    eprintln!(
        "renewal: the pre-renewal copy was refused after {:.2} s ({} s before its certificate would expire): {}",
        refused.as_secs_f64(),
        na - now_unix,
        stale_status["link"]["detail"]
    );
    if now_unix + 1 < na {
        // Still within its validity: the handshake failed because the serial is superseded.
        let detail = stale_status["link"]["detail"].as_str().unwrap_or_default().to_ascii_lowercase();
        assert!(detail.contains("revoked") || detail.contains("error 44"), "refused, but not as revoked: {detail}");
    }
    // Each attempt of the stale agent, as it classified it.
    for line in stale.log_text().lines().filter(|l| l.contains("unreachable") || l.contains("refuses")) {
        eprintln!("renewal: stale agent: {line}");
    }
    // Revoked (superseded) rather than merely unreachable: it stops with the status systemd
    // does not restart on.
    let exited = wait_for("the pre-renewal copy to exit", Duration::from_secs(10), || stale.exit_status());
    assert_eq!(exited.code(), Some(i32::from(flotilla_agent::link::EXIT_REVOKED)), "{exited:?}");
    // The genuine agent was not disturbed by the stale one.
    assert!(available(&fleet, id));
    assert_eq!(link_state(&fleet.agent_status(a)), "connected");
    assert_eq!(nodes(&fleet).len(), 1);
}

#[test]
fn controller_sigterm_agents_notice_and_reconnect() {
    let _serial = one_at_a_time();
    let mut fleet = Fleet::start_with(FleetOptions::default());
    let agents: Vec<usize> = ["t-1", "t-2"].iter().map(|n| fleet.add_agent(n)).collect();
    let ids: Vec<i64> = agents.iter().map(|i| fleet.agent(*i).node_id).collect();
    fleet.wait_connected(&ids, Duration::from_secs(15));
    let before = nodes(&fleet);

    let stop = Instant::now();
    fleet.stop_controller();
    let stopped_in = stop.elapsed();
    let noticed = wait_until("agents notice the controller shut down", Duration::from_secs(5), || {
        agents.iter().all(|i| link_state(&fleet.agent_status(*i)) != "connected")
    });
    eprintln!(
        "TIMING controller SIGTERM: exited in {:.2} s; all agents out of `connected` {:.2} s after it exited",
        stopped_in.as_secs_f64(),
        noticed.as_secs_f64()
    );
    for i in &agents {
        let s = fleet.agent_status(*i);
        let state = link_state(&s);
        assert!(state == "disconnected" || state == "connecting", "agent {i}: {s}");
    }
    // They keep running while the controller is away.
    std::thread::sleep(Duration::from_secs(2));
    for i in &agents {
        assert!(fleet.agent(*i).is_running(), "agent {i} exited without its controller");
    }

    let restart = Instant::now();
    fleet.start_controller();
    let up = restart.elapsed();
    let back = wait_until("agents reconnect after the controller restart", Duration::from_secs(30), || {
        all_available(&fleet, &ids)
    });
    eprintln!(
        "TIMING controller SIGTERM+restart: controller up in {:.2} s; agents available {:.2} s after that",
        up.as_secs_f64(),
        back.as_secs_f64()
    );
    assert!(back < Duration::from_secs(15), "agents took {back:?} to come back");
    for i in &agents {
        assert_eq!(link_state(&fleet.agent_status(*i)), "connected");
    }
    assert_eq!(nodes(&fleet), before);
}
