//! Unit tests of the containers driver, and one lifecycle on real LXC (root, lxc and the
//! busybox template needed; skipped otherwise).

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::containers::{
    ContainerAction, ContainerCreate, ContainerOp, ContainerSpec, ContainerState, OsTemplate, TaskState, Upid,
};
use flotilla_protocol::rpc::RpcError;

use super::lxc::LxcBackend;
use super::pool::{AddressPool, PoolError};
use super::tasks::{Origin, TaskRegistry, UpidParts, EVENT_LOG_LINES, INTERRUPTED};
use super::*;
use crate::state::containers::RegisterError;
use crate::state::StateStore;

fn store() -> (tempfile::TempDir, StateStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    (dir, store)
}

fn origin() -> Origin {
    Origin { node: "nl-1".into(), pid: 0x1234, pstart: 0xABCDEF }
}

#[test]
fn upid_formats_and_parses() {
    let parts = UpidParts {
        node: "pve1".into(),
        pid: 0x1A2B,
        pstart: 0x3C4D5E,
        starttime: 0x65F0A1B2,
        kind: "vzcreate".into(),
        id: "web-1".into(),
        user: "alice@flotilla".into(),
    };
    let upid = parts.format();
    assert_eq!(upid.0, "UPID:pve1:00001A2B:003C4D5E:65F0A1B2:vzcreate:web-1:alice@flotilla:");
    assert_eq!(UpidParts::parse(&upid.0).unwrap(), parts);
    // A real Proxmox UPID.
    let pve = UpidParts::parse("UPID:pve:000B1B9C:0268E7A4:66A3F1C2:vzstart:101:root@pam:").unwrap();
    assert_eq!(
        (pve.pid, pve.kind.as_str(), pve.id.as_str(), pve.user.as_str()),
        (0xB1B9C, "vzstart", "101", "root@pam")
    );
    for bad in
        ["", "UPID:", "UPID:a:1:2:3:k:i:u", "PID:a:1:2:3:k:i:u:", "UPID:a:zz:2:3:k:i:u:", "UPID:a:1:2:3:k:i:u:x:"]
    {
        assert!(UpidParts::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn names_are_validated() {
    for good in ["a", "web-1", "0", &"a".repeat(63)] {
        assert!(validate_name(good).is_ok(), "{good}");
    }
    for bad in ["", "Web", "a_b", "a.b", "-a", "a b", "a/b", &"a".repeat(64), "é"] {
        let e = validate_name(bad).unwrap_err();
        assert!(matches!(e.to_rpc(), RpcError::BadRequest(_)), "{bad}");
    }
}

#[test]
fn pool_parses_and_never_hands_out_an_address_twice() {
    let pool = AddressPool::parse("10.9.0.10-10.9.0.12", "10.9.0.1/24").unwrap();
    assert_eq!(pool.addresses().len(), 3);
    assert_eq!(pool.gateway_cidr(), "10.9.0.1/24");
    assert!(matches!(AddressPool::parse("10.9.1.10-10.9.1.12", "10.9.0.1/24"), Err(PoolError::OutsideSubnet { .. })));
    assert!(matches!(AddressPool::parse("10.9.0.1-10.9.0.12", "10.9.0.1/24"), Err(PoolError::HoldsGateway(_))));
    assert!(matches!(AddressPool::parse("10.9.0.12-10.9.0.10", "10.9.0.1/24"), Err(PoolError::Range(_))));
    assert!(matches!(AddressPool::parse("10.9.0.10-10.9.0.255", "10.9.0.1/24"), Err(PoolError::OutsideSubnet { .. })));
    assert!(matches!(AddressPool::parse("x", "10.9.0.1/24"), Err(PoolError::Range(_))));
    assert!(matches!(AddressPool::parse("10.9.0.10-10.9.0.12", "10.9.0.1"), Err(PoolError::Gateway(_))));

    let (_dir, s) = store();
    let addrs = pool.addresses();
    let a = s.register_container("a", &addrs, 1, 64, 1).unwrap();
    let b = s.register_container("b", &addrs, 1, 64, 1).unwrap();
    let c = s.register_container("c", &addrs, 1, 64, 1).unwrap();
    assert_eq!([a, b, c], [addrs[0], addrs[1], addrs[2]]);
    assert!(matches!(s.register_container("d", &addrs, 1, 64, 1), Err(RegisterError::PoolExhausted(3))));
    assert!(matches!(s.register_container("a", &addrs, 1, 64, 1), Err(RegisterError::NameTaken(_))));
    // Released on delete, and handed out again (lowest free first).
    s.unregister_container("b").unwrap();
    assert_eq!(s.register_container("d", &addrs, 1, 64, 1).unwrap(), addrs[1]);
    let held: Vec<_> = s.managed_containers().unwrap().into_iter().map(|c| c.ipv4).collect();
    let mut unique = held.clone();
    unique.dedup();
    assert_eq!(held.len(), unique.len());
}

#[tokio::test]
async fn tasks_persist_and_a_restart_fails_the_running_ones() {
    let (_dir, s) = store();
    let tasks = Arc::new(TaskRegistry::open(s.clone(), origin()).unwrap());
    let mut events = tasks.subscribe();
    let done = tasks.begin("vzstart", "web-1", "alice@flotilla").unwrap();
    let upid = done.upid();
    assert!(upid.0.starts_with("UPID:nl-1:00001234:00ABCDEF:"), "{upid}");
    assert!(upid.0.ends_with(":vzstart:web-1:alice@flotilla:"), "{upid}");
    // One task per container at a time.
    assert!(matches!(tasks.begin("vzstop", "web-1", "bob"), Err(tasks::TaskError::Busy { .. })));
    for i in 0..60 {
        done.log(format!("line {i}"));
    }
    done.finish(Ok(()));
    let started = events.recv().await.unwrap();
    assert_eq!((started.state, started.log.len()), (TaskState::Running, 0));
    let ended = events.recv().await.unwrap();
    assert_eq!(ended.state, TaskState::Ok);
    assert_eq!(ended.log.len(), EVENT_LOG_LINES);
    assert_eq!(ended.log.last().unwrap(), "TASK OK");
    let stored = tasks.get(&upid).unwrap().unwrap();
    assert_eq!(stored.log.len(), 61);
    assert_eq!(stored.log[0], "line 0");
    assert!(stored.ended_ms.is_some());

    // Same kind on the same container within the second: still a unique UPID.
    let again = tasks.begin("vzstart", "web-1", "alice@flotilla").unwrap();
    assert_ne!(again.upid(), upid);
    again.finish(Err("boom".into()));
    assert_eq!(tasks.get(&again.upid()).unwrap().unwrap().state, TaskState::Error { message: "boom".into() });

    // The agent dies while a task runs: the next start marks it failed.
    let running = tasks.begin("vzcreate", "db-1", "alice@flotilla").unwrap();
    running.log("lxc-create -n db-1 -t busybox");
    let lost = running.upid();
    std::mem::forget(running);
    drop(tasks);
    let reopened = TaskRegistry::open(s.clone(), origin()).unwrap();
    let info = reopened.get(&lost).unwrap().unwrap();
    assert_eq!(info.state, TaskState::Error { message: INTERRUPTED.into() });
    assert_eq!(info.log, ["lxc-create -n db-1 -t busybox"]);
    assert!(reopened.get(&Upid("UPID:x:0:0:0:k:i:u:".into())).unwrap().is_none());
}

#[test]
fn old_tasks_are_pruned() {
    let (_dir, s) = store();
    for i in 0..10u64 {
        let info = flotilla_protocol::containers::TaskInfo {
            upid: Upid(format!("UPID:n:1:1:{i:08X}:vzstart:c:u:")),
            kind: "vzstart".into(),
            container: "c".into(),
            state: TaskState::Running,
            started_ms: i * 1000,
            ended_ms: None,
            log: vec![],
        };
        s.insert_task(&info).unwrap();
        s.finish_task(&info.upid, &TaskState::Ok, i * 1000 + 1, 3).unwrap();
    }
    assert!(s.task(&Upid("UPID:n:1:1:00000006:vzstart:c:u:".into())).unwrap().is_none());
    assert!(s.task(&Upid("UPID:n:1:1:00000009:vzstart:c:u:".into())).unwrap().is_some());
}

fn current(disk_gb: u64) -> crate::state::containers::ManagedContainer {
    crate::state::containers::ManagedContainer {
        name: "web-1".into(),
        ipv4: "10.9.0.10".parse().unwrap(),
        cores: 1,
        memory_mib: 512,
        disk_gb,
        created: true,
    }
}

#[test]
fn the_disk_only_grows() {
    let e = check_resize(&current(10), None, None, Some(5)).unwrap_err();
    assert_eq!(e.to_rpc(), RpcError::BadRequest("disk can only grow: 10 GB now, 5 GB asked".into()));
    assert!(check_resize(&current(10), None, None, Some(10)).is_ok());
    assert!(check_resize(&current(10), Some(2), Some(1024), Some(20)).is_ok());
    assert!(matches!(check_resize(&current(10), Some(0), None, None).unwrap_err().to_rpc(), RpcError::BadRequest(_)));
    assert!(matches!(check_resize(&current(10), None, None, None).unwrap_err().to_rpc(), RpcError::BadRequest(_)));
}

fn test_settings(lxc_path: &std::path::Path) -> ContainersSettings {
    ContainersSettings {
        backend: BackendSetting::Lxc,
        lxc_path: lxc_path.to_path_buf(),
        address_pool: "10.9.0.10-10.9.0.12".into(),
        gateway_cidr: "10.9.0.1/24".into(),
        ..ContainersSettings::default()
    }
}

fn spec(name: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        template: OsTemplate::Busybox,
        cores: 1,
        memory_mib: 128,
        disk_gb: 1,
        root_password: "pw".into(),
    }
}

/// What is refused before any backend command runs (the backend points at an empty dir).
#[tokio::test]
async fn requests_are_checked_before_a_task_starts() {
    let (_dir, s) = store();
    let lxc = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(lxc.path().join("theirs")).unwrap();
    std::fs::write(lxc.path().join("theirs/config"), "lxc.uts.name = theirs\n").unwrap();
    let backend = Arc::new(LxcBackend::new(lxc.path().to_path_buf()));
    let driver = ContainersDriver::with_backend(&test_settings(lxc.path()), s.clone(), backend).unwrap();
    let addrs = driver.pool.addresses();
    s.register_container("web-1", &addrs, 1, 512, 10).unwrap();
    s.container_created("web-1").unwrap();
    let action = |name: &str, op| ContainerAction { name: name.into(), op, user: "alice@flotilla".into() };
    let refused = |r: Result<_, ContainersError>| matches!(r.map(drop).unwrap_err().to_rpc(), RpcError::Refused(_));
    let bad = |r: Result<_, ContainersError>| matches!(r.map(drop).unwrap_err().to_rpc(), RpcError::BadRequest(_));

    let shrink =
        driver.action(action("web-1", ContainerOp::Resize { cores: None, memory_mib: None, disk_gb: Some(5) }));
    assert_eq!(shrink.unwrap_err().to_rpc(), RpcError::BadRequest("disk can only grow: 10 GB now, 5 GB asked".into()));
    assert!(refused(driver.action(action("nobody", ContainerOp::Start))));
    assert!(refused(driver.action(action("theirs", ContainerOp::Delete))));
    assert!(bad(driver.action(action("Bad_Name", ContainerOp::Start))));
    assert!(bad(driver.action(action("web-1", ContainerOp::SetPassword { password: String::new() }))));
    assert!(refused(driver.action(action("web-1", ContainerOp::SnapshotRollback { name: "nope".into() }))));
    let create = |spec| ContainerCreate { spec, user: "alice@flotilla".into() };
    assert!(refused(driver.create(create(spec("web-1")))), "name taken (managed)");
    assert!(refused(driver.create(create(spec("theirs")))), "name taken (on the host)");
    assert!(bad(driver.create(create(ContainerSpec { memory_mib: 1, ..spec("small") }))));
    assert!(bad(driver.create(ContainerCreate { spec: spec("x"), user: "a:b".into() })));
    // Unmanaged containers are listed read-only; unknown ones are refused.
    let theirs = driver.status("theirs").await.unwrap();
    assert!(!theirs.managed);
    assert!(matches!(driver.status("nobody").await.unwrap_err().to_rpc(), RpcError::Refused(_)));
    assert!(matches!(driver.snapshots("theirs").unwrap_err().to_rpc(), RpcError::Refused(_)));

    // Through the link's dispatcher: the request kinds reach the driver, or are unsupported
    // without it.
    use crate::link::{dispatch, ServeContext};
    use flotilla_protocol::codec;
    use flotilla_protocol::containers::{ContainerList, ContainerQuery};
    use flotilla_protocol::rpc::{Request, RequestKind, RpcResult};
    let request = |kind, body| Request { id: flotilla_protocol::RequestId(1), deadline_ms: 1_000, kind, body };
    let ctx = ServeContext { containers: Some(driver.clone()), ..ServeContext::default() };
    let RpcResult::Ok(body) = dispatch(request(RequestKind::CONTAINER_LIST, vec![]), ctx.clone()).await else {
        panic!("CONTAINER_LIST failed")
    };
    let list: ContainerList = codec::decode_from(&body).unwrap();
    let names: Vec<_> = list.containers.iter().map(|c| (c.name.as_str(), c.managed)).collect();
    assert_eq!(names, [("theirs", false), ("web-1", true)]);
    let query = codec::encode_body(&ContainerQuery { name: "nobody".into() }).unwrap();
    let answer = dispatch(request(RequestKind::CONTAINER_STATUS, query.clone()), ctx.clone()).await;
    assert!(matches!(answer, RpcResult::Err(RpcError::Refused(_))), "{answer:?}");
    let answer = dispatch(request(RequestKind::TASK_STATUS, vec![1, 2, 3]), ctx).await;
    assert!(matches!(answer, RpcResult::Err(RpcError::BadRequest(_))), "{answer:?}");
    let answer = dispatch(request(RequestKind::CONTAINER_STATUS, query), ServeContext::default()).await;
    assert!(matches!(answer, RpcResult::Err(RpcError::Unsupported(21))), "{answer:?}");
    driver.stop();
}

// ---- Real LXC ----

/// Removes what the lifecycle test made, however it ends.
struct Cleanup {
    name: String,
    bridge: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            let _ = std::process::Command::new(args[0])
                .args(&args[1..])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        run(&["lxc-stop", "-n", &self.name, "-k"]);
        run(&["lxc-destroy", "-n", &self.name, "-s"]);
        run(&["ip", "link", "del", &self.bridge]);
    }
}

async fn wait_task(driver: &ContainersDriver, upid: &Upid) -> flotilla_protocol::containers::TaskInfo {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let info = driver.task(upid).unwrap();
        if info.state != TaskState::Running {
            return info;
        }
        assert!(tokio::time::Instant::now() < deadline, "task {upid} still running: {:?}", info.log);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ok(driver: &Arc<ContainersDriver>, name: &str, op: ContainerOp) -> flotilla_protocol::containers::TaskInfo {
    let started = driver.action(ContainerAction { name: name.into(), op: op.clone(), user: "test@flotilla".into() });
    let info = wait_task(driver, &started.unwrap().upid).await;
    assert_eq!(info.state, TaskState::Ok, "{op:?}: {:#?}", info.log);
    info
}

fn root_hash(name: &str) -> String {
    let shadow = std::fs::read_to_string(format!("/var/lib/lxc/{name}/rootfs/etc/shadow")).unwrap_or_default();
    shadow.lines().find(|l| l.starts_with("root:")).and_then(|l| l.split(':').nth(1)).unwrap_or("").to_string()
}

#[tokio::test]
async fn lxc_lifecycle() {
    let usable = rustix::process::geteuid().is_root()
        && check_lxc_host(&ContainersSettings::default()).is_ok()
        && std::path::Path::new("/usr/share/lxc/templates/lxc-busybox").exists()
        && std::path::Path::new("/bin/busybox").exists();
    if !usable {
        eprintln!("skipped: needs root, lxc, the busybox template and busybox-static");
        return;
    }
    let pid = std::process::id();
    let name = format!("flt-t{pid}");
    let bridge = format!("fltt{}", pid % 1000);
    let net = pid % 250;
    let _cleanup = Cleanup { name: name.clone(), bridge: bridge.clone() };
    let (_dir, s) = store();
    let settings = ContainersSettings {
        backend: BackendSetting::Lxc,
        bridge: bridge.clone(),
        address_pool: format!("10.204.{net}.10-10.204.{net}.20"),
        gateway_cidr: format!("10.204.{net}.1/24"),
        sample_interval: Duration::from_secs(3600),
        ..ContainersSettings::default()
    };
    let driver = ContainersDriver::start(&settings, s.clone()).await.unwrap().expect("backend on");
    let mut events = driver.task_events();
    let expected_ip = format!("10.204.{net}.10");

    // Create.
    let spec = ContainerSpec { root_password: "first-pass".into(), ..spec(&name) };
    let started = driver.create(ContainerCreate { spec, user: "test@flotilla".into() }).unwrap();
    let created = wait_task(&driver, &started.upid).await;
    assert_eq!(created.state, TaskState::Ok, "{:#?}", created.log);
    assert!(started.upid.0.contains(&format!(":vzcreate:{name}:test@flotilla:")));
    let first = events.recv().await.unwrap();
    assert_eq!((first.upid.clone(), first.state), (started.upid.clone(), TaskState::Running));
    let end = events.recv().await.unwrap();
    assert_eq!(end.state, TaskState::Ok);

    // Status: running, the pool's first address (also inside), memory in use.
    let status = driver.status(&name).await.unwrap();
    assert_eq!(status.state, ContainerState::Running);
    assert!(status.managed);
    assert_eq!(status.ipv4.as_deref(), Some(expected_ip.as_str()));
    assert!(status.now.mem_used > 0, "{status:?}");
    assert_eq!(status.mem_max, 128 * 1024 * 1024);
    let usage = driver.backend().usage(&name).await.unwrap().unwrap();
    assert_eq!(usage.ipv4.as_deref(), Some(expected_ip.as_str()), "the guest keeps its static address");
    let first_hash = root_hash(&name);
    assert!(first_hash.starts_with("$6$"), "{first_hash:?}");

    // Samples.
    driver.sample_all().await;
    let samples = driver.samples().borrow().clone();
    assert_eq!(samples.containers.len(), 1);
    assert_eq!(samples.containers[0].0, name);
    assert!(samples.containers[0].2.disk_used > 0);
    assert_eq!(driver.status(&name).await.unwrap().samples.len(), 1);
    let list = driver.list().await.unwrap();
    assert!(list.containers.iter().any(|c| c.name == name && c.managed));

    // Password.
    ok(&driver, &name, ContainerOp::SetPassword { password: "second-pass".into() }).await;
    let second_hash = root_hash(&name);
    assert!(second_hash.starts_with("$6$") && second_hash != first_hash);

    // Resize memory live.
    ok(&driver, &name, ContainerOp::Resize { cores: Some(2), memory_mib: Some(256), disk_gb: Some(2) }).await;
    let file = lxc::CgroupLayout::detect().memory_file();
    assert_eq!(driver.backend().cgroup_value(&name, file).await.unwrap(), "268435456");
    let status = driver.status(&name).await.unwrap();
    assert_eq!((status.cores, status.mem_max, status.disk_max), (2, 256 * 1024 * 1024, 2_000_000_000));

    // Snapshot, write, rollback: the write is gone.
    ok(&driver, &name, ContainerOp::SnapshotCreate { name: "before".into(), description: "clean".into() }).await;
    let snaps = driver.snapshots(&name).unwrap().snapshots;
    assert_eq!((snaps.len(), snaps[0].name.as_str(), snaps[0].description.as_str()), (1, "before", "clean"));
    let f = format!("/var/lib/lxc/{name}/rootfs/root/f");
    lxc::run(
        "lxc-attach",
        &["-n", &name, "--", "sh", "-c", "mkdir -p /root && echo x > /root/f"],
        None,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert!(std::path::Path::new(&f).exists());
    ok(&driver, &name, ContainerOp::SnapshotRollback { name: "before".into() }).await;
    assert!(!std::path::Path::new(&f).exists(), "rollback keeps the file");
    let status = driver.status(&name).await.unwrap();
    assert_eq!(status.state, ContainerState::Running, "running again after the rollback");
    assert_eq!(status.ipv4.as_deref(), Some(expected_ip.as_str()));
    ok(&driver, &name, ContainerOp::SnapshotDelete { name: "before".into() }).await;
    assert!(driver.snapshots(&name).unwrap().snapshots.is_empty());

    // Stop, start.
    ok(&driver, &name, ContainerOp::Stop { timeout_s: 2 }).await;
    assert_eq!(driver.status(&name).await.unwrap().state, ContainerState::Stopped);
    ok(&driver, &name, ContainerOp::Start).await;
    assert_eq!(driver.status(&name).await.unwrap().state, ContainerState::Running);
    ok(&driver, &name, ContainerOp::Restart { timeout_s: 2 }).await;

    // Every edit replaced the agent's keys rather than piling them up.
    let config = std::fs::read_to_string(format!("/var/lib/lxc/{name}/config")).unwrap();
    assert_eq!(config.matches("lxc.net.0.ipv4.address").count(), 1, "{config}");
    assert_eq!(config.matches("# Set by flotilla-agent.").count(), 1, "{config}");

    // Delete: gone, address free.
    ok(&driver, &name, ContainerOp::Delete).await;
    assert!(matches!(driver.status(&name).await.unwrap_err().to_rpc(), RpcError::Refused(_)));
    assert!(!driver.list().await.unwrap().containers.iter().any(|c| c.name == name));
    assert!(s.managed_containers().unwrap().is_empty());
    let again = s.register_container("probe", &driver.pool.addresses(), 1, 64, 1).unwrap();
    assert_eq!(again.to_string(), expected_ip);
    driver.stop();
}
