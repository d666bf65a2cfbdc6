//! The driver against a fake host: what it changes on devices, what it journals, and what it
//! keeps across a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_protocol::wireguard::{WgCutOff, WgInterfaceSpec, WgKey, WgPeerSpec, WgState};

use super::device::{Backend, DeviceError, WgHost};
use super::reconcile::{public_key, LiveDevice, LivePeer};
use super::{BackendSetting, WireGuardDriver, WireGuardSettings};
use crate::clock::Clock;
use crate::state::StateStore;

/// Devices in memory, and a log of every change made to them.
#[derive(Debug, Default)]
struct FakeHost {
    devices: Mutex<BTreeMap<String, LiveDevice>>,
    log: Mutex<Vec<String>>,
    /// Ports another program holds: creating a device on one fails.
    taken_ports: Mutex<BTreeSet<u16>>,
}

fn short(key: &WgKey) -> String {
    key.to_base64()[..4].to_string()
}

impl FakeHost {
    fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn device(&self, name: &str) -> Option<LiveDevice> {
        self.devices.lock().unwrap().get(name).cloned()
    }

    fn peers(&self, name: &str) -> Vec<WgKey> {
        self.device(name).map(|d| d.peers.keys().copied().collect()).unwrap_or_default()
    }

    /// The peer moved bytes (counters are totals, as the device reports them).
    fn count(&self, name: &str, key: WgKey, rx: u64, tx: u64, handshake_ms: Option<i64>) {
        let mut devices = self.devices.lock().unwrap();
        let peer = devices.get_mut(name).unwrap().peers.get_mut(&key).unwrap();
        (peer.rx, peer.tx) = (rx, tx);
        if handshake_ms.is_some() {
            peer.last_handshake_ms = handshake_ms;
        }
    }

    fn live_peer(spec: &WgPeerSpec, old: Option<&LivePeer>) -> LivePeer {
        LivePeer {
            preshared_key: spec.preshared_key.filter(|k| k.0 != [0; 32]),
            allowed_ips: spec.allowed_ips.iter().cloned().collect(),
            ..old.cloned().unwrap_or_default()
        }
    }
}

impl WgHost for FakeHost {
    fn backend(&self) -> Backend {
        Backend::Userspace
    }

    fn exists(&self, name: &str) -> bool {
        self.devices.lock().unwrap().contains_key(name)
    }

    fn is_up(&self, name: &str) -> bool {
        self.device(name).is_some_and(|d| d.up)
    }

    fn read(&self, name: &str) -> Result<LiveDevice, DeviceError> {
        self.device(name).ok_or_else(|| DeviceError::Name(format!("no device {name}")))
    }

    fn create(&self, spec: &WgInterfaceSpec, peers: &[&WgPeerSpec]) -> Result<(), DeviceError> {
        if self.taken_ports.lock().unwrap().contains(&spec.listen_port) {
            return Err(DeviceError::Command("configure".into(), "address already in use".into()));
        }
        let device = LiveDevice {
            public_key: Some(public_key(&spec.private_key)),
            listen_port: spec.listen_port,
            peers: peers.iter().map(|p| (p.public_key, FakeHost::live_peer(p, None))).collect(),
            addresses: BTreeSet::new(),
            mtu: 1420,
            up: false,
        };
        self.devices.lock().unwrap().insert(spec.name.clone(), device);
        self.note(format!("create {} {}", spec.name, peers.len()));
        Ok(())
    }

    fn set_private_key(&self, name: &str, key: &WgKey) -> Result<(), DeviceError> {
        self.devices.lock().unwrap().get_mut(name).unwrap().public_key = Some(public_key(key));
        self.note(format!("key {name}"));
        Ok(())
    }

    fn set_listen_port(&self, name: &str, port: u16) -> Result<(), DeviceError> {
        self.devices.lock().unwrap().get_mut(name).unwrap().listen_port = port;
        self.note(format!("port {name} {port}"));
        Ok(())
    }

    fn change_peers(&self, name: &str, upsert: &[&WgPeerSpec], remove: &[WgKey]) -> Result<(), DeviceError> {
        let mut devices = self.devices.lock().unwrap();
        let device = devices.get_mut(name).unwrap();
        let mut line = format!("peers {name}");
        for key in remove {
            device.peers.remove(key);
            line.push_str(&format!(" -{}", short(key)));
        }
        for p in upsert {
            let live = FakeHost::live_peer(p, device.peers.get(&p.public_key));
            device.peers.insert(p.public_key, live);
            line.push_str(&format!(" +{}", short(&p.public_key)));
        }
        drop(devices);
        self.note(line);
        Ok(())
    }

    fn set_addresses(&self, name: &str, add: &[String], remove: &[String]) -> Result<(), DeviceError> {
        let mut devices = self.devices.lock().unwrap();
        let device = devices.get_mut(name).unwrap();
        for a in remove {
            device.addresses.remove(a);
        }
        device.addresses.extend(add.iter().cloned());
        drop(devices);
        self.note(format!("addresses {name} +{add:?} -{remove:?}"));
        Ok(())
    }

    fn set_link_up(&self, name: &str, mtu: u16) -> Result<(), DeviceError> {
        let mut devices = self.devices.lock().unwrap();
        let device = devices.get_mut(name).unwrap();
        device.up = true;
        if mtu != 0 {
            device.mtu = mtu.into();
        }
        drop(devices);
        self.note(format!("link {name}"));
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<(), DeviceError> {
        self.devices.lock().unwrap().remove(name);
        self.note(format!("delete {name}"));
        Ok(())
    }
}

use super::fixtures::{iface, key, peer};

fn state(revision: u64, interfaces: Vec<WgInterfaceSpec>, peers: Vec<WgPeerSpec>) -> WgState {
    WgState { revision, interfaces, peers }
}

fn settings() -> WireGuardSettings {
    // Polls are driven by the tests (`current_status`), not by the timer.
    WireGuardSettings {
        backend: BackendSetting::Userspace,
        poll_interval: Duration::from_secs(3600),
        connected_window: Duration::from_secs(180),
    }
}

async fn start(dir: &std::path::Path, host: &Arc<FakeHost>, clock: Clock) -> Arc<WireGuardDriver> {
    let store = StateStore::open(dir).unwrap();
    WireGuardDriver::start_with_host(&settings(), store, clock, host.clone()).await.unwrap()
}

fn now_ms() -> i64 {
    Clock::system().now_ms()
}

#[tokio::test]
async fn peers_change_one_at_a_time_and_unchanged_peers_are_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let wg = start(dir.path(), &host, Clock::system()).await;
    assert!(host.take_log().is_empty(), "nothing to restore");

    let two = state(1, vec![iface("wg0", 51820)], vec![peer("wg0", 1), peer("wg0", 2)]);
    let report = wg.apply(two.clone()).await;
    assert_eq!((report.revision, report.peers_added, report.interfaces_changed), (1, 2, 1), "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(host.take_log(), vec!["create wg0 2", "addresses wg0 +[\"10.8.0.1/24\"] -[]", "link wg0"]);
    let device = host.device("wg0").unwrap();
    assert!(device.up);
    assert_eq!(host.peers("wg0"), vec![key(1), key(2)]);

    // The same state again changes nothing at all.
    let report = wg.apply(two).await;
    assert_eq!(
        (report.peers_added, report.peers_removed, report.peers_updated, report.interfaces_changed),
        (0, 0, 0, 0)
    );
    assert!(host.take_log().is_empty());

    // Peer 1 is talking; peer 2 goes, peer 3 comes, peer 1 is not touched.
    host.count("wg0", key(1), 500, 700, Some(now_ms()));
    let report = wg.apply(state(2, vec![iface("wg0", 51820)], vec![peer("wg0", 1), peer("wg0", 3)])).await;
    assert_eq!((report.peers_added, report.peers_removed), (1, 1));
    assert_eq!(host.take_log(), vec![format!("peers wg0 -{} +{}", short(&key(2)), short(&key(3)))]);
    let p1 = host.device("wg0").unwrap().peers[&key(1)].clone();
    assert_eq!((p1.rx, p1.tx), (500, 700), "counters (and the session) of peer 1 stay");

    // An allowed-IP change updates that peer alone; a port change is one live setting.
    let mut moved = peer("wg0", 3);
    moved.allowed_ips = vec!["10.8.0.33/32".into()];
    let report = wg.apply(state(3, vec![iface("wg0", 51821)], vec![peer("wg0", 1), moved])).await;
    assert_eq!((report.peers_updated, report.interfaces_changed), (1, 1), "{report:?}");
    assert_eq!(host.take_log(), vec!["port wg0 51821".to_string(), format!("peers wg0 +{}", short(&key(3)))]);

    let status = wg.current_status().await;
    assert_eq!(status.applied_revision, 3);
    assert_eq!(status.backend, "userspace");
    assert_eq!(status.interfaces.len(), 1);
    assert!(status.interfaces[0].up && status.interfaces[0].error.is_none());
    assert_eq!(status.interfaces[0].listen_port, 51821);
    assert_eq!(status.connected.iter().map(|p| p.public_key).collect::<Vec<_>>(), vec![key(1)]);
    wg.stop();
}

#[tokio::test]
async fn counters_are_journaled_once_across_device_resets() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let wg = start(dir.path(), &host, Clock::system()).await;
    let mut journal = wg.journal();
    wg.apply(state(1, vec![iface("wg0", 51820)], vec![peer("wg0", 1), peer("wg0", 2)])).await;

    host.count("wg0", key(1), 100, 1000, None);
    wg.current_status().await;
    assert!(journal.has_changed().unwrap());
    let rows = wg.journal_after(0, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].peers[0].public_key, rows[0].peers[0].rx, rows[0].peers[0].tx), (key(1), 100, 1000));
    assert_eq!(rows[0].journal, wg.journal_id().unwrap());
    journal.borrow_and_update();

    // Nothing moved: no row.
    wg.current_status().await;
    assert!(!journal.has_changed().unwrap());
    assert_eq!(wg.journal_after(0, 10).unwrap().len(), 1);

    // The device was recreated behind our back: counters restart low; all of it is new.
    host.count("wg0", key(1), 30, 1050, None);
    wg.current_status().await;
    let rows = wg.journal_after(rows[0].seq, 10).unwrap();
    assert_eq!((rows[0].peers[0].rx, rows[0].peers[0].tx), (30, 50));

    // The controller committed the first row; the second stays until acked.
    let first = wg.journal_after(0, 1).unwrap()[0].seq;
    wg.journal_committed(first).unwrap();
    assert_eq!(wg.journal_after(0, 10).unwrap().len(), 1);
    let usage = StateStore::open(dir.path()).unwrap().wg_usage().unwrap();
    assert_eq!(usage[&("wg0".to_string(), key(1))].total(), 1180);
    wg.stop();
}

#[tokio::test]
async fn a_quota_cut_off_holds_across_a_restart_until_a_new_spec_lifts_it() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let wg = start(dir.path(), &host, Clock::system()).await;
    let limited = WgPeerSpec { quota_bytes: 1000, ..peer("wg0", 1) };
    let pushed = state(1, vec![iface("wg0", 51820)], vec![limited.clone(), peer("wg0", 2)]);
    wg.apply(pushed.clone()).await;
    host.take_log();

    host.count("wg0", key(1), 600, 500, Some(now_ms()));
    let status = wg.current_status().await;
    assert_eq!(status.cut_off.len(), 1);
    assert_eq!((status.cut_off[0].0.public_key, status.cut_off[0].1), (key(1), WgCutOff::Quota));
    assert_eq!(host.peers("wg0"), vec![key(2)], "cut = off the device");
    assert!(status.connected.is_empty(), "a cut peer is not reported connected");
    wg.stop();
    drop(wg);

    // A restarted agent keeps it off, and the same push changes nothing.
    host.take_log();
    let wg = start(dir.path(), &host, Clock::system()).await;
    assert!(host.take_log().is_empty(), "{:?}", host.take_log());
    let report = wg.apply(pushed).await;
    assert_eq!(report.peers_added, 0);
    assert_eq!(wg.current_status().await.cut_off.len(), 1);

    // Raised, but still reached: stays off.
    let raised = WgPeerSpec { quota_bytes: 1100, ..limited.clone() };
    wg.apply(state(2, vec![iface("wg0", 51820)], vec![raised, peer("wg0", 2)])).await;
    assert_eq!(host.peers("wg0"), vec![key(2)]);
    // Raised past the usage: back, with the same keys and allowed IPs.
    let enough = WgPeerSpec { quota_bytes: 5000, ..limited.clone() };
    let report = wg.apply(state(3, vec![iface("wg0", 51820)], vec![enough, peer("wg0", 2)])).await;
    assert_eq!(report.peers_added, 1);
    assert_eq!(host.peers("wg0"), vec![key(1), key(2)]);
    assert!(host.device("wg0").unwrap().peers[&key(1)].allowed_ips.contains("10.8.0.1/32"));
    assert!(wg.current_status().await.cut_off.is_empty());

    // A reset (higher generation) zeroes the usage: the old quota fits again.
    host.count("wg0", key(1), 5000, 0, None);
    wg.current_status().await;
    assert_eq!(host.peers("wg0"), vec![key(2)], "quota of 5000 reached");
    let reset = WgPeerSpec { quota_bytes: 5000, reset_generation: 1, ..limited };
    wg.apply(state(4, vec![iface("wg0", 51820)], vec![reset, peer("wg0", 2)])).await;
    assert_eq!(host.peers("wg0"), vec![key(1), key(2)]);
    wg.stop();
}

#[tokio::test]
async fn expiry_follows_the_agent_clock() {
    let dir = tempfile::tempdir().unwrap();
    let skew = dir.path().join("skew");
    let clock = Clock::with_skew_file(skew.clone());
    let host = Arc::new(FakeHost::default());
    let wg = start(&dir.path().join("db"), &host, clock).await;
    let hour = 3_600_000;
    let expiring = WgPeerSpec { expiry_ms: now_ms() + hour, ..peer("wg0", 1) };
    wg.apply(state(1, vec![iface("wg0", 51820)], vec![expiring.clone()])).await;
    assert_eq!(host.peers("wg0"), vec![key(1)]);

    std::fs::write(&skew, (2 * hour).to_string()).unwrap();
    let status = wg.current_status().await;
    assert_eq!(status.cut_off[0].1, WgCutOff::Expired);
    assert!(host.peers("wg0").is_empty());
    // Moved back in time alone: still off (the spec it was cut under has not changed).
    std::fs::write(&skew, "0").unwrap();
    wg.current_status().await;
    assert!(host.peers("wg0").is_empty());
    // Extended by the controller: back.
    let extended = WgPeerSpec { expiry_ms: now_ms() + 10 * hour, ..expiring };
    wg.apply(state(2, vec![iface("wg0", 51820)], vec![extended])).await;
    assert_eq!(host.peers("wg0"), vec![key(1)]);
    wg.stop();
}

#[tokio::test]
async fn interfaces_it_did_not_create_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let theirs = LiveDevice { listen_port: 4000, up: true, ..Default::default() };
    host.devices.lock().unwrap().insert("wg0".into(), theirs.clone());
    let wg = start(dir.path(), &host, Clock::system()).await;
    let report = wg.apply(state(1, vec![iface("wg0", 51820)], vec![peer("wg0", 1)])).await;
    assert_eq!(report.failures.len(), 1);
    assert!(report.failures[0].1.contains("not created by flotilla"), "{report:?}");
    assert_eq!(host.device("wg0"), Some(theirs.clone()));
    let status = wg.current_status().await;
    assert!(status.interfaces[0].error.as_deref().unwrap().contains("not created by flotilla"));
    // Dropped from the state: still not ours to delete.
    wg.apply(state(2, vec![], vec![])).await;
    assert_eq!(host.device("wg0"), Some(theirs));
    assert!(host.take_log().is_empty());
    wg.stop();
}

#[tokio::test]
async fn disabled_interfaces_go_down_and_removed_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let wg = start(dir.path(), &host, Clock::system()).await;
    let peers = vec![peer("wg0", 1), peer("wg0", 2)];
    wg.apply(state(1, vec![iface("wg0", 51820), iface("wg1", 51821)], peers.clone())).await;
    assert!(host.exists("wg0") && host.exists("wg1"));
    host.take_log();

    let off = WgInterfaceSpec { enabled: false, ..iface("wg0", 51820) };
    let report = wg.apply(state(2, vec![off, iface("wg1", 51821)], peers.clone())).await;
    assert_eq!(report.interfaces_changed, 1);
    assert_eq!(host.take_log(), vec!["delete wg0"]);
    let status = wg.current_status().await;
    assert!(!status.interfaces.iter().find(|i| i.name == "wg0").unwrap().up);

    // Enabled again: the same peers come back from the state.
    wg.apply(state(3, vec![iface("wg0", 51820), iface("wg1", 51821)], peers)).await;
    assert_eq!(host.peers("wg0"), vec![key(1), key(2)]);
    host.take_log();

    // Removed from the state: deleted and forgotten.
    wg.apply(state(4, vec![iface("wg0", 51820)], vec![])).await;
    assert_eq!(
        host.take_log(),
        vec!["delete wg1".to_string(), format!("peers wg0 -{} -{}", short(&key(1)), short(&key(2)))]
    );
    assert_eq!(StateStore::open(dir.path()).unwrap().wg_managed().unwrap(), BTreeSet::from(["wg0".to_string()]));
    wg.stop();
}

#[tokio::test]
async fn a_restart_restores_devices_from_the_local_state_alone() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let wg = start(dir.path(), &host, Clock::system()).await;
    wg.apply(state(7, vec![iface("wg0", 51820)], vec![peer("wg0", 1), peer("wg0", 2)])).await;
    wg.stop();
    drop(wg);

    // Still running after an agent restart: nothing is touched.
    host.take_log();
    let wg = start(dir.path(), &host, Clock::system()).await;
    assert!(host.take_log().is_empty());
    assert_eq!(wg.applied_revision(), 7);
    wg.stop();
    drop(wg);

    // After a reboot (no device): rebuilt with its peers, no controller needed.
    host.devices.lock().unwrap().clear();
    let wg = start(dir.path(), &host, Clock::system()).await;
    assert_eq!(host.take_log()[0], "create wg0 2");
    assert_eq!(host.peers("wg0"), vec![key(1), key(2)]);
    assert_eq!(wg.status().borrow().applied_revision, 7);
    // A stale push does not roll it back.
    let report = wg.apply(state(6, vec![], vec![])).await;
    assert_eq!(report.revision, 7);
    assert!(host.exists("wg0"));
    wg.stop();
}

#[tokio::test]
async fn invalid_items_are_reported_and_the_rest_applied() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    host.taken_ports.lock().unwrap().insert(51999);
    let wg = start(dir.path(), &host, Clock::system()).await;
    let mut bad_ip = peer("wg0", 2);
    bad_ip.allowed_ips = vec!["10.8.0.2/40".into()];
    let report = wg
        .apply(state(
            1,
            vec![iface("wg0", 51820), iface("much-too-long-name", 1), iface("wg2", 51999)],
            vec![peer("wg0", 1), bad_ip],
        ))
        .await;
    let items: Vec<&str> = report.failures.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(items.len(), 3, "{report:?}");
    assert!(items.contains(&"interface much-too-long-name"));
    assert!(items.contains(&"interface wg2"), "the port is taken: {report:?}");
    assert_eq!(host.peers("wg0"), vec![key(1)]);
    assert!(!host.exists("wg2"));
    let status = wg.current_status().await;
    let wg2 = status.interfaces.iter().find(|i| i.name == "wg2").unwrap();
    assert!(!wg2.up && wg2.error.as_deref().unwrap().contains("in use"));
    assert!(StateStore::open(dir.path()).unwrap().wg_managed().unwrap().contains("wg0"));
    assert!(!StateStore::open(dir.path()).unwrap().wg_managed().unwrap().contains("wg2"));
    wg.stop();
}

#[tokio::test]
async fn status_changes_are_published_only_when_something_changes() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let wg = start(dir.path(), &host, Clock::system()).await;
    let mut status = wg.status();
    wg.apply(state(1, vec![iface("wg0", 51820)], vec![peer("wg0", 1)])).await;
    assert!(status.has_changed().unwrap());
    status.borrow_and_update();
    host.count("wg0", key(1), 10, 10, None);
    wg.current_status().await;
    assert!(!status.has_changed().unwrap(), "counters alone are not news");
    host.count("wg0", key(1), 20, 20, Some(now_ms()));
    wg.current_status().await;
    assert!(status.has_changed().unwrap(), "a handshake is");
    wg.stop();
}

#[tokio::test]
async fn the_link_answers_wireguard_requests() {
    use crate::link::{dispatch, ServeContext};
    use flotilla_protocol::codec;
    use flotilla_protocol::rpc::{Request, RequestKind, RpcError, RpcResult};
    use flotilla_protocol::wireguard::{WgApplyReport, WgStatus};
    use flotilla_protocol::RequestId;

    let ctx = |wireguard| ServeContext {
        state: None,
        sampler: None,
        metrics_interval: Duration::from_secs(1),
        core: None,
        wireguard,
        upgrade: None,
        containers: None,
        ..ServeContext::default()
    };
    let request = |kind, body| Request { id: RequestId(1), deadline_ms: 1_000, kind, body };
    let body = codec::encode_body(&state(1, vec![iface("wg0", 51820)], vec![peer("wg0", 1)])).unwrap();

    let answer = dispatch(request(RequestKind::APPLY_WIREGUARD, body.clone()), ctx(None)).await;
    assert!(matches!(answer, RpcResult::Err(RpcError::Unsupported(15))), "{answer:?}");
    let answer = dispatch(request(RequestKind::WIREGUARD_STATUS, vec![]), ctx(None)).await;
    assert!(matches!(answer, RpcResult::Err(RpcError::Unsupported(16))), "{answer:?}");

    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let wg = start(dir.path(), &host, Clock::system()).await;
    let answer = dispatch(request(RequestKind::APPLY_WIREGUARD, vec![0xff; 3]), ctx(Some(wg.clone()))).await;
    assert!(matches!(answer, RpcResult::Err(RpcError::BadRequest(_))), "{answer:?}");
    let RpcResult::Ok(report) = dispatch(request(RequestKind::APPLY_WIREGUARD, body), ctx(Some(wg.clone()))).await
    else {
        panic!("apply refused")
    };
    let report: WgApplyReport = codec::decode_from(&report).unwrap();
    assert_eq!((report.revision, report.peers_added), (1, 1));
    let RpcResult::Ok(status) = dispatch(request(RequestKind::WIREGUARD_STATUS, vec![]), ctx(Some(wg.clone()))).await
    else {
        panic!("status refused")
    };
    let status: WgStatus = codec::decode_from(&status).unwrap();
    assert_eq!((status.applied_revision, status.interfaces.len()), (1, 1));
    wg.stop();
}
