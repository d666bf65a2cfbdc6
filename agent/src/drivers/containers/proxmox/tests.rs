//! Tests of the Proxmox VE backend against a FAKE of the Proxmox API (`fake.rs`): Proxmox VE
//! cannot run here. The client code is the real one, TLS included (the fake's certificate is
//! pinned by fingerprint, or checked against its CA); the driver is the real driver.

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::containers::{
    ContainerAction, ContainerCreate, ContainerOp, ContainerSpec, ContainerState, OsTemplate, TaskInfo, TaskState, Upid,
};
use flotilla_protocol::rpc::RpcError;

use super::fake::FakePve;
use super::*;
use crate::drivers::containers::{BackendSetting, ContainersDriver, ContainersSettings};
use crate::state::StateStore;

const NODE: &str = "pve1";
const TOKEN_ID: &str = "root@pam!flotilla";
const SECRET: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

fn pve_settings(fake: &FakePve) -> ProxmoxSettings {
    ProxmoxSettings {
        url: fake.url.clone(),
        node: Some(NODE.into()),
        token_id: TOKEN_ID.into(),
        token_secret: Some(SECRET.into()),
        fingerprint: Some(fake.fingerprint.clone()),
        ..ProxmoxSettings::default()
    }
}

fn settings(pve: ProxmoxSettings) -> ContainersSettings {
    ContainersSettings {
        backend: BackendSetting::Proxmox,
        address_pool: "10.9.0.10-10.9.0.12".into(),
        gateway_cidr: "10.9.0.1/24".into(),
        sample_interval: Duration::from_secs(3600),
        proxmox: Some(pve),
        ..ContainersSettings::default()
    }
}

fn store() -> (tempfile::TempDir, StateStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    (dir, store)
}

/// A driver on the fake, polling tasks often (the fake's tasks take 40 ms).
async fn driver(fake: &FakePve, store: &StateStore) -> Arc<ContainersDriver> {
    driver_with(store, pve_settings(fake)).await
}

async fn driver_with(store: &StateStore, pve: ProxmoxSettings) -> Arc<ContainersDriver> {
    let mut backend = ProxmoxBackend::connect(&pve).await.unwrap();
    backend.api.set_poll_interval(Duration::from_millis(10));
    ContainersDriver::with_backend(&settings(pve), store.clone(), Arc::new(backend)).unwrap()
}

fn spec(name: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        template: OsTemplate::Debian { release: "bookworm".into() },
        cores: 1,
        memory_mib: 512,
        disk_gb: 8,
        root_password: "first-pass".into(),
    }
}

async fn wait_task(driver: &ContainersDriver, upid: &Upid) -> TaskInfo {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info = driver.task(upid).unwrap();
        if info.state != TaskState::Running {
            return info;
        }
        assert!(tokio::time::Instant::now() < deadline, "task {upid} still running: {:?}", info.log);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(driver: &Arc<ContainersDriver>, name: &str, op: ContainerOp) -> TaskInfo {
    let started = driver.action(ContainerAction { name: name.into(), op, user: "test@flotilla".into() }).unwrap();
    wait_task(driver, &started.upid).await
}

async fn ok(driver: &Arc<ContainersDriver>, name: &str, op: ContainerOp) -> TaskInfo {
    let info = run(driver, name, op.clone()).await;
    assert_eq!(info.state, TaskState::Ok, "{op:?}: {:#?}", info.log);
    info
}

fn error_of(info: &TaskInfo) -> String {
    match &info.state {
        TaskState::Error { message } => message.clone(),
        other => panic!("expected an error, got {other:?}: {:#?}", info.log),
    }
}

async fn handle(store: &StateStore, container: &str) -> TaskHandle {
    let registry = Arc::new(
        crate::drivers::containers::tasks::TaskRegistry::open(
            store.clone(),
            crate::drivers::containers::tasks::Origin { node: "t".into(), pid: 1, pstart: 1 },
        )
        .unwrap(),
    );
    registry.begin("resize", container, "test@flotilla").unwrap()
}

#[tokio::test]
async fn lifecycle_through_the_driver() {
    let fake = FakePve::start(NODE, TOKEN_ID, SECRET).await;
    let (_dir, s) = store();
    // Proxmox's `pct` cannot exist on this machine: a stand-in script, written later, records
    // what the backend runs.
    let pct_dir = tempfile::tempdir().unwrap();
    let (pct, seen) = (pct_dir.path().join("pct"), pct_dir.path().join("seen"));
    let driver = driver_with(&s, ProxmoxSettings { pct: pct.clone(), ..pve_settings(&fake) }).await;
    let name = "vps-3-a1b2c3";

    // Create: template, disk, limits, password and tag in the create; the network after.
    let started = driver.create(ContainerCreate { spec: spec(name), user: "test@flotilla".into() }).unwrap();
    let created = wait_task(&driver, &started.upid).await;
    assert_eq!(created.state, TaskState::Ok, "{:#?}", created.log);
    assert!(created.log.iter().any(|l| l.starts_with("pve: ")), "the Proxmox task log is copied: {:#?}", created.log);
    assert!(created.log.iter().any(|l| l.contains("set by Proxmox at create")));
    {
        let st = fake.state();
        let (vmid, ct) = st.cts.iter().next().unwrap();
        assert_eq!(*vmid, 100, "the VMID comes from /cluster/nextid");
        assert_eq!(ct.config["hostname"], name);
        assert_eq!(ct.config["ostemplate"], DEBIAN_12_TEMPLATE);
        assert_eq!(ct.config["rootfs"], "local-lvm:vm-100-disk-0,size=8G");
        assert_eq!(ct.config["x-fake-root-password"], "first-pass");
        assert_eq!((ct.config["tags"].as_str(), ct.config["unprivileged"].as_str()), ("flotilla", "1"));
        assert_eq!(ct.config["net0"], "name=eth0,bridge=vmbr0,ip=10.9.0.10/24,gw=10.9.0.1");
        assert!(ct.running);
    }

    // Status and samples from status/current.
    let status = driver.status(name).await.unwrap();
    assert_eq!((status.state, status.managed), (ContainerState::Running, true));
    assert_eq!(status.ipv4.as_deref(), Some("10.9.0.10"));
    assert_eq!((status.now.mem_used, status.now.net_in, status.now.net_out), (48 * 1024 * 1024, 123_456, 7_890));
    driver.sample_all().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    driver.sample_all().await;
    let sample = driver.samples().borrow().containers[0].2;
    assert_eq!(sample.disk_used, 700_000_000);
    // 0.25 of one core, integrated and read back by the driver.
    assert!((sample.cpu - 0.25).abs() < 0.05, "{sample:?}");
    assert_eq!(driver.backend().disk_used(name).await.unwrap(), 700_000_000);

    // Stop is a shutdown with the timeout and forceStop; start.
    ok(&driver, name, ContainerOp::Stop { timeout_s: 7 }).await;
    assert_eq!(driver.status(name).await.unwrap().state, ContainerState::Stopped);
    {
        let st = fake.state();
        let p = &st.last_params[&format!("POST /nodes/{NODE}/lxc/100/status/shutdown")];
        assert_eq!((p["timeout"].as_str(), p["forceStop"].as_str()), ("7", "1"));
    }
    ok(&driver, name, ContainerOp::Start).await;
    assert_eq!(driver.status(name).await.unwrap().state, ContainerState::Running);
    ok(&driver, name, ContainerOp::Restart { timeout_s: 2 }).await;

    // Limits live through PUT config; the memory readable as the cgroup value.
    ok(&driver, name, ContainerOp::Resize { cores: Some(2), memory_mib: Some(1024), disk_gb: None }).await;
    let config = fake.state().cts[&100].config.clone();
    assert_eq!((config["cores"].as_str(), config["memory"].as_str()), ("2", "1024"));
    assert_eq!(driver.backend().cgroup_value(name, "memory.max").await.unwrap(), (1024u64 << 20).to_string());
    assert!(driver.backend().cgroup_value(name, "cpu.max").await.is_err());
    let status = driver.status(name).await.unwrap();
    assert_eq!((status.cores, status.mem_max), (2, 1024 << 20));

    // Later passwords go through `pct exec` on the node: without pct, refused plainly; with it
    // (a stand-in script here: Proxmox's tool cannot exist on this machine), chpasswd in the CT.
    let refused = run(&driver, name, ContainerOp::SetPassword { password: "second-pass".into() }).await;
    assert!(error_of(&refused).contains("pct exec"), "{refused:?}");
    std::fs::write(&pct, format!("#!/bin/sh\necho \"$@\" > {0}\ncat >> {0}\n", seen.display())).unwrap();
    std::fs::set_permissions(&pct, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ok(&driver, name, ContainerOp::SetPassword { password: "second-pass".into() }).await;
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "exec 100 -- chpasswd\nroot:second-pass\n");

    // Snapshot, a config change, rollback: the registry's limits come back, running again.
    ok(&driver, name, ContainerOp::SnapshotCreate { name: "before".into(), description: "clean".into() }).await;
    let snaps = driver.snapshots(name).unwrap().snapshots;
    assert_eq!((snaps.len(), snaps[0].name.as_str(), snaps[0].description.as_str()), (1, "before", "clean"));
    let pve_snap = fake.state().cts[&100].snapshots[0].clone();
    assert!(pve_snap.name.starts_with("flt") && pve_snap.description == "clean", "{pve_snap:?}");
    fake.state().cts.get_mut(&100).unwrap().config.insert("memory".into(), "4096".into());
    ok(&driver, name, ContainerOp::SnapshotRollback { name: "before".into() }).await;
    assert_eq!(fake.state().cts[&100].config["memory"], "1024");
    assert_eq!(driver.status(name).await.unwrap().state, ContainerState::Running);
    ok(&driver, name, ContainerOp::SnapshotDelete { name: "before".into() }).await;
    assert!(fake.state().cts[&100].snapshots.is_empty());
    assert!(driver.snapshots(name).unwrap().snapshots.is_empty());

    // The rollback's configure kept the MAC address Proxmox had put into net0.
    fake.state().cts.get_mut(&100).unwrap().config.insert(
        "net0".into(),
        "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:AA:BB:CC,ip=10.9.0.10/24,gw=10.9.0.1,type=veth".into(),
    );
    let net = driver.network("10.9.0.10".parse().unwrap());
    let h = handle(&s, name).await;
    driver.backend().configure(name, &net, 2, 1024, &h).await.unwrap();
    assert!(fake.state().cts[&100].config["net0"].contains("hwaddr=BC:24:11:AA:BB:CC"));

    // The disk grows through /resize; a shrink is refused by Proxmox.
    let pve = ProxmoxBackend::connect(&pve_settings(&fake)).await.unwrap();
    pve.grow_disk(name, 10, &h).await.unwrap();
    assert_eq!(fake.state().cts[&100].config["rootfs"], "local-lvm:vm-100-disk-0,size=10G");
    let shrink = pve.grow_disk(name, 5, &h).await.unwrap_err().to_string();
    assert!(shrink.contains("HTTP 500: unable to shrink disk size"), "{shrink}");
    h.finish(Ok(()));

    // The console: Proxmox's xterm.js page for the CT.
    let crate::drivers::containers::ConsoleEntry::Url(url) = driver.backend().console(name).await.unwrap() else {
        panic!("a URL")
    };
    assert_eq!(url, format!("{}/?console=lxc&xtermjs=1&vmid=100&vmname={name}&node={NODE}", fake.url));

    // Delete: gone from Proxmox and the registry.
    ok(&driver, name, ContainerOp::Delete).await;
    assert!(fake.state().cts.is_empty());
    assert!(matches!(driver.status(name).await.unwrap_err().to_rpc(), RpcError::Refused(_)));
    assert!(s.managed_containers().unwrap().is_empty());
    let requests = fake.state().requests.join("\n");
    assert!(requests.contains(&format!("DELETE /nodes/{NODE}/lxc/100")), "{requests}");
    driver.stop();
}

#[tokio::test]
async fn foreign_cts_are_listed_read_only() {
    let fake = FakePve::start(NODE, TOKEN_ID, SECRET).await;
    fake.add_foreign(200, "theirs", "192.168.1.50");
    let (_dir, s) = store();
    let driver = driver(&fake, &s).await;
    let list = driver.list().await.unwrap();
    let theirs = list.containers.iter().find(|c| c.name == "theirs").expect("listed");
    assert_eq!((theirs.managed, theirs.state), (false, ContainerState::Running));
    assert_eq!(theirs.ipv4.as_deref(), Some("192.168.1.50"), "from /interfaces");
    let action = |op| ContainerAction { name: "theirs".into(), op, user: "test@flotilla".into() };
    let refused = driver.action(action(ContainerOp::Delete)).unwrap_err().to_rpc();
    assert_eq!(refused, RpcError::Refused("theirs was not created by this agent: it is read-only".into()));
    assert!(matches!(
        driver.action(action(ContainerOp::Stop { timeout_s: 1 })).unwrap_err().to_rpc(),
        RpcError::Refused(_)
    ));
    // The name is taken on the node.
    let taken = driver.create(ContainerCreate { spec: spec("theirs"), user: "test@flotilla".into() });
    assert!(matches!(taken.unwrap_err().to_rpc(), RpcError::Refused(_)));
    assert!(fake.state().cts[&200].running);
    assert!(!fake.state().requests.iter().any(|r| r.starts_with("POST") || r.starts_with("DELETE")));
    driver.stop();
}

#[tokio::test]
async fn task_failures_reach_the_agents_task() {
    let fake = FakePve::start(NODE, TOKEN_ID, SECRET).await;
    let (_dir, s) = store();
    let driver = driver(&fake, &s).await;

    // A create whose Proxmox task fails: the error text, and nothing left behind.
    fake.state().fail_next = Some(("vzcreate".into(), "unable to create CT 100 - no space left on device".into()));
    let started = driver.create(ContainerCreate { spec: spec("web-1"), user: "test@flotilla".into() }).unwrap();
    let failed = wait_task(&driver, &started.upid).await;
    let message = error_of(&failed);
    assert!(message.contains("Proxmox task UPID:pve1:"), "{message}");
    assert!(message.ends_with("failed: unable to create CT 100 - no space left on device"), "{message}");
    assert!(failed.log.iter().any(|l| l.contains("pve: TASK ERROR")), "{:#?}", failed.log);
    assert!(s.managed_containers().unwrap().is_empty());
    assert!(fake.state().cts.is_empty());

    // A template Proxmox does not have: the worker fails.
    let spec_missing = ContainerSpec {
        template: OsTemplate::Named { template: "local:vztmpl/nope.tar.zst".into(), args: vec![] },
        ..spec("web-2")
    };
    let started = driver.create(ContainerCreate { spec: spec_missing, user: "test@flotilla".into() }).unwrap();
    let message = error_of(&wait_task(&driver, &started.upid).await);
    assert!(message.contains("volume 'local:vztmpl/nope.tar.zst' does not exist"), "{message}");

    // Busybox has no Proxmox template unless mapped.
    let started = driver
        .create(ContainerCreate {
            spec: ContainerSpec { template: OsTemplate::Busybox, ..spec("web-3") },
            user: "t".into(),
        })
        .unwrap();
    let message = error_of(&wait_task(&driver, &started.upid).await);
    assert!(message.contains("no busybox template"), "{message}");
    assert!(fake.state().requests.iter().all(|r| !r.contains("/lxc/")), "nothing was created");

    // A start that fails on Proxmox fails the agent's start.
    let started = driver.create(ContainerCreate { spec: spec("web-4"), user: "test@flotilla".into() }).unwrap();
    assert_eq!(wait_task(&driver, &started.upid).await.state, TaskState::Ok);
    ok(&driver, "web-4", ContainerOp::Stop { timeout_s: 1 }).await;
    fake.state().fail_next = Some(("vzstart".into(), "startup for container '100' failed".into()));
    let message = error_of(&run(&driver, "web-4", ContainerOp::Start).await);
    assert!(message.ends_with("failed: startup for container '100' failed"), "{message}");
    driver.stop();
}

#[tokio::test]
async fn the_probe_says_what_is_wrong() {
    let fake = FakePve::start(NODE, TOKEN_ID, SECRET).await;
    let (_dir, s) = store();
    let start = |pve: ProxmoxSettings| {
        let s = s.clone();
        async move { ContainersDriver::start(&settings(pve), s).await.map(|d| d.expect("backend on")) }
    };

    // Through the driver's start: the good settings work (with the fingerprint pinned).
    start(pve_settings(&fake)).await.unwrap().stop();

    let bad_token = ProxmoxSettings { token_secret: Some("wrong".into()), ..pve_settings(&fake) };
    let e = start(bad_token).await.unwrap_err().to_string();
    assert!(e.contains("refused the API token root@pam!flotilla (HTTP 401 invalid token value!)"), "{e}");

    let wrong_pin = ProxmoxSettings { fingerprint: Some(client::colon_hex(&[7; 32])), ..pve_settings(&fake) };
    let e = start(wrong_pin).await.unwrap_err().to_string();
    assert!(e.contains("cannot reach the Proxmox API") && e.contains("not the pinned 07:07"), "{e}");

    let wrong_node = ProxmoxSettings { node: Some("pve9".into()), ..pve_settings(&fake) };
    let e = start(wrong_node).await.unwrap_err().to_string();
    assert!(e.contains("no such cluster node 'pve9'") && e.contains("set [containers.proxmox] node"), "{e}");

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let unreachable = ProxmoxSettings { url: format!("https://{closed}"), ..pve_settings(&fake) };
    let e = start(unreachable).await.unwrap_err().to_string();
    assert!(e.contains(&format!("cannot reach the Proxmox API at https://{closed}")), "{e}");

    // A CA file instead of the pin: the certificate chains to it and names 127.0.0.1.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("pve-root-ca.pem");
    std::fs::write(&ca, &fake.ca_pem).unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let with_ca = ProxmoxSettings {
        fingerprint: None,
        ca_file: Some(ca.clone()),
        token_secret: None,
        token_secret_file: Some(secret),
        ..pve_settings(&fake)
    };
    start(with_ca.clone()).await.unwrap().stop();
    // Another CA: refused.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(&ca, other.cert.pem()).unwrap();
    let e = start(with_ca).await.unwrap_err().to_string();
    assert!(e.contains("cannot reach the Proxmox API") && e.to_lowercase().contains("certificate"), "{e}");

    // Settings checked before any request.
    let e = start(ProxmoxSettings { url: fake.url.replace("https", "http"), ..pve_settings(&fake) }).await.unwrap_err();
    assert!(e.to_string().contains("must be https://"), "{e}");
    let e = start(ProxmoxSettings { token_id: "root@pam".into(), ..pve_settings(&fake) }).await.unwrap_err();
    assert!(e.to_string().contains("user@realm!tokenname"), "{e}");
    let mut none = settings(pve_settings(&fake));
    none.proxmox = None;
    let e = ContainersDriver::start(&none, s.clone()).await.unwrap_err().to_string();
    assert!(e.contains("needs a [containers.proxmox] table"), "{e}");
}

#[tokio::test]
async fn the_api_checks_parameters_like_proxmox() {
    let fake = FakePve::start(NODE, TOKEN_ID, SECRET).await;
    let pve = ProxmoxBackend::connect(&pve_settings(&fake)).await.unwrap();
    let api = pve.client();
    let lxc = format!("/nodes/{NODE}/lxc");
    let e = api.post::<String>(&lxc, &[("hostname", "x".into())]).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(e.to_string().contains("ostemplate: property is missing"), "{e}");
    assert!(e.to_string().contains("vmid: property is missing"), "{e}");
    let e = api
        .post::<String>(
            &lxc,
            &[("vmid", "100".into()), ("ostemplate", DEBIAN_12_TEMPLATE.into()), ("password", "abc".into())],
        )
        .await;
    assert!(e.unwrap_err().to_string().contains("password: value must have a minimum length of 5"));
    fake.add_foreign(200, "theirs", "192.168.1.50");
    let e = api.put::<Value>(&format!("{lxc}/200/config"), &[("memory", "8".into())]).await.unwrap_err();
    assert!(e.to_string().contains("memory: value must have a minimum value of 16"), "{e}");
    let e = api.delete::<String>(&format!("{lxc}/200"), &[]).await.unwrap_err();
    assert_eq!(e.to_string(), format!("Proxmox API DELETE {lxc}/200: HTTP 500: CT 200 is running - destroy failed"));
    // The console with a console user: a login ticket rides along.
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("console");
    std::fs::write(&pw, "console-pass\n").unwrap();
    let with_console = ProxmoxSettings {
        console_url: Some("https://pve.example.com:8006".into()),
        console_user: Some("console@pve".into()),
        console_password_file: Some(pw),
        ..pve_settings(&fake)
    };
    let pve = ProxmoxBackend::connect(&with_console).await.unwrap();
    let crate::drivers::containers::ConsoleEntry::Url(url) = pve.console("theirs").await.unwrap() else { panic!() };
    assert_eq!(
        url,
        "https://pve.example.com:8006/?console=lxc&xtermjs=1&vmid=200&vmname=theirs&node=pve1\
         &ticket=PVE%3Aconsole%40pve%3A66A3F1C2%3A%3Afake-signature"
    );
}

#[test]
fn settings_parse_and_templates_map() {
    let toml = r#"
        backend = "proxmox"
        address_pool = "192.168.100.10-192.168.100.200"
        gateway_cidr = "192.168.100.1/24"
        [proxmox]
        url = "https://127.0.0.1:8006"
        token_id = "root@pam!flotilla"
        token_secret_file = "/etc/flotilla/pve-token"
        storage = "local-zfs"
        bridge = "vmbr1"
        fingerprint = "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89"
        [proxmox.templates]
        busybox = "local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz"
        "debian:trixie" = "local:vztmpl/debian-13-standard_13.1-2_amd64.tar.zst"
    "#;
    let c: ContainersSettings = toml::from_str(toml).unwrap();
    c.validate().unwrap();
    let p = c.proxmox.as_ref().unwrap();
    assert_eq!((p.storage.as_str(), p.bridge.as_str(), p.unprivileged), ("local-zfs", "vmbr1", true));
    assert_eq!(
        p.template_volid(&OsTemplate::Busybox).unwrap(),
        "local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz"
    );
    assert_eq!(p.template_volid(&OsTemplate::Debian { release: "bookworm".into() }).unwrap(), DEBIAN_12_TEMPLATE);
    assert!(p.template_volid(&OsTemplate::Debian { release: "trixie".into() }).unwrap().contains("debian-13"));
    assert!(p
        .template_volid(&OsTemplate::Debian { release: "buster".into() })
        .unwrap_err()
        .contains("\"debian:buster\""));
    let named = OsTemplate::Named { template: "local:vztmpl/x.tar.zst".into(), args: vec![] };
    assert_eq!(p.template_volid(&named).unwrap(), "local:vztmpl/x.tar.zst");
    assert!(ProxmoxSettings::default()
        .template_volid(&OsTemplate::Busybox)
        .unwrap_err()
        .contains("no busybox template"));
    // The secret stays out of Debug output.
    let with_secret = ProxmoxSettings { token_secret: Some(SECRET.into()), ..p.clone() };
    assert!(!format!("{with_secret:?}").contains(SECRET));
    for (bad, why) in [
        (ProxmoxSettings { token_secret: Some("x".into()), ..p.clone() }, "not both"),
        (ProxmoxSettings { ca_file: Some("/ca.pem".into()), ..p.clone() }, "not both"),
        (ProxmoxSettings { token_secret_file: None, ..p.clone() }, "is needed"),
        (ProxmoxSettings { bridge: "a-very-long-bridge".into(), ..p.clone() }, "bridge"),
        (ProxmoxSettings { console_user: Some("c@pve".into()), ..p.clone() }, "go together"),
        (ProxmoxSettings { url: "https://h:8006/api2/json".into(), ..p.clone() }, "no path"),
    ] {
        let e = bad.validate().unwrap_err();
        assert!(e.contains(why), "{e}");
    }
}
