//! WireGuard driver: keeps this host's WireGuard interfaces and peers equal to the state the
//! controller pushed (peer by peer, never rebuilding an interface), journals transfer counters
//! for exactly-once accounting, cuts peers off for quota or expiry from its local copy of the
//! state, and restores all of it at start without the controller.
//!
//! The agent only changes interfaces it created (recorded in `agent.db`); a device of the same
//! name made by someone else is reported and left alone.

pub mod device;
pub mod reconcile;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_protocol::wireguard::{
    WgApplyReport, WgInterfaceSpec, WgInterfaceStatus, WgPeerRef, WgPeerSpec, WgState, WgStatus, WgTrafficBatch,
};
use serde::Deserialize;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::state::{StateError, StateStore, WgCutRecord, WgPeerKey, WgPoll};
pub use device::{detect, Backend, DeviceError, LinuxHost, WgHost};
use reconcile::{LiveDevice, PeerDiff};

/// `[wireguard] backend`: which WireGuard the agent drives, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendSetting {
    /// No WireGuard: the capability is not announced.
    #[default]
    Off,
    /// The kernel module.
    Kernel,
    /// wireguard-go (or `$WG_USERSPACE_IMPLEMENTATION`).
    Userspace,
}

impl BackendSetting {
    /// The backend to run, `None` when off.
    pub fn backend(self) -> Option<Backend> {
        match self {
            BackendSetting::Off => None,
            BackendSetting::Kernel => Some(Backend::Kernel),
            BackendSetting::Userspace => Some(Backend::Userspace),
        }
    }
}

impl FromStr for BackendSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(BackendSetting::Off),
            "kernel" => Ok(BackendSetting::Kernel),
            "userspace" => Ok(BackendSetting::Userspace),
            other => Err(format!("unknown WireGuard backend {other:?} (kernel, userspace, off)")),
        }
    }
}

/// `[wireguard]` of `agent.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WireGuardSettings {
    pub backend: BackendSetting,
    /// How often transfer counters and handshakes are read (and quotas checked).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A peer whose last handshake is this recent counts as connected.
    #[serde(with = "humantime_serde")]
    pub connected_window: Duration,
}

impl Default for WireGuardSettings {
    fn default() -> Self {
        WireGuardSettings {
            backend: BackendSetting::Off,
            poll_interval: Duration::from_secs(2),
            connected_window: Duration::from_secs(180),
        }
    }
}

/// Why the WireGuard driver cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WireGuardError {
    #[error("WireGuard is disabled (backend = \"off\")")]
    Disabled,
    #[error("wireguard-go not found; install wireguard-go or set backend=kernel (or point WG_USERSPACE_IMPLEMENTATION at another implementation)")]
    NoUserspace,
    #[error("/dev/net/tun not found: userspace WireGuard needs the tun device (modprobe tun), or set backend=kernel")]
    NoTun,
    #[error("kernel WireGuard not available ({0}); load the wireguard module or set backend=userspace")]
    NoKernel(String),
    #[error("`ip` not found; install iproute2")]
    NoIp,
    #[error(transparent)]
    State(#[from] StateError),
}

/// A device as the driver found it at the start of a pass.
enum Seen {
    Absent,
    /// Exists, but the agent did not create it.
    Foreign,
    Present(LiveDevice),
    Unreadable(String),
}

struct Inner {
    desired: WgState,
    /// Interfaces the agent created.
    managed: BTreeSet<String>,
    cut_off: BTreeMap<WgPeerKey, WgCutRecord>,
    /// Failures of the last pass by item, so each is logged when it appears, not every poll.
    failures: BTreeMap<String, String>,
}

/// What one pass did.
#[derive(Debug, Default)]
struct Outcome {
    added: u32,
    removed: u32,
    updated: u32,
    interfaces: u32,
    failures: BTreeMap<String, String>,
}

impl Outcome {
    fn fail(&mut self, item: String, why: impl std::fmt::Display) {
        let why = why.to_string();
        self.failures.entry(item).and_modify(|w| *w = format!("{w}; {why}")).or_insert(why);
    }
}

/// The running driver; shared by the link (requests, events) and its own poll task.
pub struct WireGuardDriver {
    host: Arc<dyn WgHost>,
    store: StateStore,
    clock: Clock,
    poll_interval: Duration,
    connected_window: Duration,
    inner: Mutex<Inner>,
    status_tx: watch::Sender<WgStatus>,
    /// Latest journal sequence written; the link ships rows when it moves.
    journal_tx: watch::Sender<u64>,
    stopped: AtomicBool,
}

impl std::fmt::Debug for WireGuardDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireGuardDriver").field("backend", &self.host.backend()).finish()
    }
}

/// System time, for journal timestamps and handshake ages (quota and expiry decisions use the
/// driver's [`Clock`], which tests skew).
fn system_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn interface_item(name: &str) -> String {
    format!("interface {name}")
}

impl WireGuardDriver {
    /// Probes the configured backend (a clear error when it cannot run here), restores the
    /// interfaces and peers of the last applied state, and starts polling.
    pub async fn start(
        settings: &WireGuardSettings,
        store: StateStore,
        clock: Clock,
    ) -> Result<Arc<WireGuardDriver>, WireGuardError> {
        let backend = settings.backend.backend().ok_or(WireGuardError::Disabled)?;
        let host = LinuxHost::probe(backend)?;
        Self::start_with_host(settings, store, clock, Arc::new(host)).await
    }

    /// [`WireGuardDriver::start`] on a given host (tests use a fake one).
    pub async fn start_with_host(
        settings: &WireGuardSettings,
        store: StateStore,
        clock: Clock,
        host: Arc<dyn WgHost>,
    ) -> Result<Arc<WireGuardDriver>, WireGuardError> {
        let desired = store.wg_state()?.unwrap_or_default();
        let managed = store.wg_managed()?;
        let cut_off = store.wg_cut_offs()?;
        // Drawn now, so the first batch never waits on it.
        store.wg_journal_id()?;
        let initial = WgStatus {
            applied_revision: desired.revision,
            backend: host.backend().as_str().into(),
            ..Default::default()
        };
        let driver = Arc::new(WireGuardDriver {
            host,
            store,
            clock,
            poll_interval: settings.poll_interval.max(Duration::from_millis(100)),
            connected_window: settings.connected_window,
            inner: Mutex::new(Inner { desired, managed, cut_off, failures: BTreeMap::new() }),
            status_tx: watch::channel(initial).0,
            journal_tx: watch::channel(0).0,
            stopped: AtomicBool::new(false),
        });
        // Restore before anything else, from the local state alone.
        let restoring = driver.clone();
        let _ = tokio::task::spawn_blocking(move || restoring.pass()).await;
        {
            let inner = driver.lock();
            tracing::info!(
                backend = driver.host.backend().as_str(),
                revision = inner.desired.revision,
                interfaces = inner.desired.interfaces.len(),
                peers = inner.desired.peers.len(),
                cut_off = inner.cut_off.len(),
                "WireGuard driver started"
            );
        }
        tokio::spawn(driver.clone().run());
        Ok(driver)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.host.backend()
    }

    /// Revision of the WireGuard state applied.
    pub fn applied_revision(&self) -> u64 {
        self.status_tx.borrow().applied_revision
    }

    /// Applies a pushed state: refuses what is invalid (reported in `failures`), persists the
    /// rest, then changes the devices peer by peer.
    pub async fn apply(self: &Arc<Self>, state: WgState) -> WgApplyReport {
        let this = self.clone();
        let revision = state.revision;
        tokio::task::spawn_blocking(move || this.apply_now(state)).await.unwrap_or_else(|e| WgApplyReport {
            revision,
            failures: vec![("agent".into(), format!("WireGuard apply failed: {e}"))],
            ..Default::default()
        })
    }

    /// The status now (after a fresh read of the devices).
    pub async fn current_status(self: &Arc<Self>) -> WgStatus {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.pass()).await;
        self.status_tx.borrow().clone()
    }

    /// The status; it changes (and the link sends it) only when something in it changes.
    pub fn status(&self) -> watch::Receiver<WgStatus> {
        self.status_tx.subscribe()
    }

    /// The latest journal sequence written; the link ships rows when it moves.
    pub fn journal(&self) -> watch::Receiver<u64> {
        self.journal_tx.subscribe()
    }

    /// Id of the WireGuard traffic journal.
    pub fn journal_id(&self) -> Result<u64, StateError> {
        self.store.wg_journal_id()
    }

    /// Journal rows after `seq` as events, oldest first (blocking: call off the async threads).
    pub fn journal_after(&self, seq: u64, limit: usize) -> Result<Vec<WgTrafficBatch>, StateError> {
        self.store.wg_journal_after(seq, limit)
    }

    /// The controller committed every row through `seq` (blocking).
    pub fn journal_committed(&self, seq: u64) -> Result<(), StateError> {
        self.store.delete_wg_journal_through(seq).map(drop)
    }

    /// Stops the poll task. Devices stay up: tunnels outlive the agent.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if self.stopped.load(Ordering::Relaxed) {
                return;
            }
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.pass()).await;
        }
    }

    /// One poll: counters into the journal, quotas and expiry, and the devices converged.
    fn pass(&self) {
        let mut inner = self.lock();
        self.sync(&mut inner);
    }

    fn apply_now(&self, state: WgState) -> WgApplyReport {
        let mut inner = self.lock();
        let mut report = WgApplyReport { revision: inner.desired.revision, ..Default::default() };
        if state.revision < inner.desired.revision {
            tracing::debug!(pushed = state.revision, applied = inner.desired.revision, "stale WireGuard state ignored");
            return report;
        }
        let (state, refused) = reconcile::validate(state);
        for (item, why) in &refused {
            tracing::warn!(%item, %why, "WireGuard state item refused");
        }
        report.failures = refused;
        if let Err(e) = self.store.save_wg_state(&state) {
            report.failures.push(("agent store".into(), e.to_string()));
            return report;
        }
        inner.desired = state;
        let outcome = self.sync(&mut inner);
        report.revision = inner.desired.revision;
        report.peers_added = outcome.added;
        report.peers_removed = outcome.removed;
        report.peers_updated = outcome.updated;
        report.interfaces_changed = outcome.interfaces;
        report.failures.extend(outcome.failures);
        report
    }

    /// Reads the devices, journals their counters, decides cut-offs, converges the devices on
    /// the desired state and publishes the status.
    fn sync(&self, inner: &mut Inner) -> Outcome {
        let names: BTreeSet<String> =
            inner.managed.iter().cloned().chain(inner.desired.interfaces.iter().map(|i| i.name.clone())).collect();
        let live: BTreeMap<String, Seen> = names
            .into_iter()
            .map(|name| {
                let seen = if !self.host.exists(&name) {
                    Seen::Absent
                } else if !inner.managed.contains(&name) {
                    Seen::Foreign
                } else {
                    match self.host.read(&name) {
                        Ok(device) => Seen::Present(device),
                        Err(e) => Seen::Unreadable(e.to_string()),
                    }
                };
                (name, seen)
            })
            .collect();
        self.record_counters(&live);
        self.enforce(inner);
        let mut outcome = Outcome::default();
        let mut ports = BTreeMap::new();
        let mut connected = BTreeSet::new();
        self.converge(inner, &live, &mut outcome, &mut ports, &mut connected);
        for (item, why) in &outcome.failures {
            if inner.failures.get(item) != Some(why) {
                tracing::warn!(%item, %why, "WireGuard change failed; retried at every poll");
            }
        }
        for item in inner.failures.keys().filter(|i| !outcome.failures.contains_key(*i)) {
            tracing::info!(%item, "WireGuard failure resolved");
        }
        inner.failures = outcome.failures.clone();
        self.publish(inner, &ports, connected);
        outcome
    }

    /// Commits the deltas of the counters just read (and the new baselines) in one transaction.
    fn record_counters(&self, live: &BTreeMap<String, Seen>) {
        let baselines = match self.store.wg_baselines() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read WireGuard counter baselines");
                return;
            }
        };
        let mut reading = Vec::new();
        for (name, seen) in live {
            if let Seen::Present(device) = seen {
                reading.extend(device.peers.iter().map(|(key, p)| ((name.clone(), *key), p.rx, p.tx)));
            }
        }
        let read: HashSet<&WgPeerKey> = reading.iter().map(|(k, _, _)| k).collect();
        // A peer gone from a device we could read (or whose device is gone) counts from zero
        // if it comes back.
        let forget: Vec<WgPeerKey> = baselines
            .keys()
            .filter(|k| matches!(live.get(&k.0), Some(Seen::Present(_)) | Some(Seen::Absent) | None))
            .filter(|k| !read.contains(k))
            .cloned()
            .collect();
        let (peers, changed) = reconcile::deltas(&reading, &baselines);
        if peers.is_empty() && changed.is_empty() && forget.is_empty() {
            return;
        }
        let poll = WgPoll { taken_at_ms: system_ms() as u64, baselines: changed, forget, peers };
        match self.store.record_wg_poll(&poll) {
            Ok(Some(seq)) => {
                self.journal_tx.send_replace(seq);
            }
            Ok(None) => {}
            // The baselines stay as they were: the next poll counts these bytes again.
            Err(e) => tracing::warn!(error = %e, "cannot record WireGuard traffic"),
        }
    }

    /// Recomputes the cut-offs from the local state, usage and clock; records changes.
    fn enforce(&self, inner: &mut Inner) {
        let usage = match self.store.wg_usage() {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read WireGuard usage; cut-offs unchanged");
                return;
            }
        };
        let next = reconcile::enforce(&inner.desired.peers, &inner.cut_off, &usage, self.clock.now_ms());
        if next == inner.cut_off {
            return;
        }
        for (key, record) in &next {
            if inner.cut_off.get(key).map(|r| r.reason) != Some(record.reason) {
                tracing::info!(interface = %key.0, peer = %key.1.to_base64(), reason = ?record.reason, "WireGuard peer cut off");
            }
        }
        for key in inner.cut_off.keys().filter(|k| !next.contains_key(*k)) {
            tracing::info!(interface = %key.0, peer = %key.1.to_base64(), "WireGuard peer no longer cut off");
        }
        if let Err(e) = self.store.save_wg_cut_offs(&next) {
            tracing::warn!(error = %e, "cannot record WireGuard cut-offs");
        }
        inner.cut_off = next;
    }

    fn converge(
        &self,
        inner: &mut Inner,
        live: &BTreeMap<String, Seen>,
        out: &mut Outcome,
        ports: &mut BTreeMap<String, u16>,
        connected: &mut BTreeSet<WgPeerKey>,
    ) {
        let desired_names: BTreeSet<String> = inner.desired.interfaces.iter().map(|i| i.name.clone()).collect();
        for name in inner.managed.clone().into_iter().filter(|n| !desired_names.contains(n)) {
            match live.get(&name) {
                Some(Seen::Present(_)) | Some(Seen::Unreadable(_)) => self.delete(inner, &name, live, out),
                _ => self.unmanage(inner, &name),
            }
        }
        let now = system_ms();
        let window = self.connected_window.as_millis() as i64;
        for spec in inner.desired.interfaces.clone() {
            let name = spec.name.as_str();
            let want: Vec<&WgPeerSpec> = inner
                .desired
                .peers
                .iter()
                .filter(|p| p.interface == name && p.enabled)
                .filter(|p| !inner.cut_off.contains_key(&(p.interface.clone(), p.public_key)))
                .collect();
            match live.get(name) {
                Some(Seen::Foreign) => {
                    out.fail(interface_item(name), "exists on this host and was not created by flotilla; left alone")
                }
                Some(Seen::Unreadable(e)) if spec.enabled => out.fail(interface_item(name), e),
                Some(Seen::Unreadable(_)) | Some(Seen::Present(_)) if !spec.enabled => {
                    self.delete(inner, name, live, out)
                }
                Some(Seen::Present(device)) => {
                    ports.insert(name.to_string(), device.listen_port);
                    let want: Vec<WgPeerSpec> = want.into_iter().cloned().collect();
                    self.update(name, &spec, device, &want, out, ports);
                    for p in &want {
                        let key = (name.to_string(), p.public_key);
                        let recent = device.peers.get(&p.public_key).and_then(|l| l.last_handshake_ms);
                        if recent.is_some_and(|t| now - t <= window) {
                            connected.insert(key);
                        }
                    }
                }
                _ if spec.enabled => {
                    let want: Vec<WgPeerSpec> = want.into_iter().cloned().collect();
                    if self.create(inner, &spec, &want, out) {
                        ports.insert(name.to_string(), spec.listen_port);
                    }
                }
                _ => {}
            }
        }
    }

    fn unmanage(&self, inner: &mut Inner, name: &str) {
        if let Err(e) = self.store.remove_wg_managed(name) {
            tracing::warn!(error = %e, "cannot record a WireGuard interface as gone");
            return;
        }
        inner.managed.remove(name);
    }

    /// Deletes a device the agent made (removed from the state, or disabled).
    fn delete(&self, inner: &mut Inner, name: &str, live: &BTreeMap<String, Seen>, out: &mut Outcome) {
        if let Err(e) = self.host.delete(name) {
            out.fail(interface_item(name), e);
            return;
        }
        tracing::info!(interface = name, "WireGuard interface deleted");
        out.interfaces += 1;
        if let Some(Seen::Present(device)) = live.get(name) {
            let gone: Vec<WgPeerKey> = device.peers.keys().map(|k| (name.to_string(), *k)).collect();
            if let Err(e) = self.store.forget_wg_baselines(&gone) {
                tracing::warn!(error = %e, "cannot forget WireGuard counter baselines");
            }
        }
        self.unmanage(inner, name);
    }

    /// Creates a device with its peers, addresses and link; true if it exists afterwards.
    fn create(&self, inner: &mut Inner, spec: &WgInterfaceSpec, want: &[WgPeerSpec], out: &mut Outcome) -> bool {
        let name = spec.name.as_str();
        // Recorded first: a crash right after creation still leaves the device known as ours.
        if let Err(e) = self.store.add_wg_managed(name) {
            out.fail(interface_item(name), e);
            return false;
        }
        inner.managed.insert(name.to_string());
        let peers: Vec<&WgPeerSpec> = want.iter().collect();
        if let Err(e) = self.host.create(spec, &peers) {
            out.fail(interface_item(name), e);
            if !self.host.exists(name) {
                self.unmanage(inner, name);
            }
            return false;
        }
        tracing::info!(interface = name, peers = want.len(), "WireGuard interface created");
        out.interfaces += 1;
        out.added += want.len() as u32;
        if let Err(e) = self.host.set_addresses(name, &spec.addresses, &[]) {
            out.fail(interface_item(name), e);
        }
        if let Err(e) = self.host.set_link_up(name, spec.mtu) {
            out.fail(interface_item(name), e);
        }
        true
    }

    /// Converges an existing device: its own settings live, then its peers one by one.
    fn update(
        &self,
        name: &str,
        spec: &WgInterfaceSpec,
        device: &LiveDevice,
        want: &[WgPeerSpec],
        out: &mut Outcome,
        ports: &mut BTreeMap<String, u16>,
    ) {
        let changes = reconcile::diff_interface(spec, device);
        let mut results = Vec::new();
        if changes.private_key {
            results.push(self.host.set_private_key(name, &spec.private_key));
        }
        if let Some(port) = changes.listen_port {
            let moved = self.host.set_listen_port(name, port);
            if moved.is_ok() {
                ports.insert(name.to_string(), port);
            }
            results.push(moved);
        }
        if !changes.add_addresses.is_empty() || !changes.remove_addresses.is_empty() {
            results.push(self.host.set_addresses(name, &changes.add_addresses, &changes.remove_addresses));
        }
        if changes.link {
            results.push(self.host.set_link_up(name, spec.mtu));
        }
        if !changes.is_empty() {
            let failed: Vec<String> = results.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
            if failed.is_empty() {
                tracing::info!(interface = name, ?changes, "WireGuard interface updated");
                out.interfaces += 1;
            } else {
                out.fail(interface_item(name), failed.join("; "));
            }
        }
        let want: Vec<&WgPeerSpec> = want.iter().collect();
        let diff = reconcile::diff_peers(&device.peers, &want);
        if !diff.is_empty() {
            self.change_peers(name, diff, out);
        }
    }

    /// Applies a peer diff in one request; if the device refuses it, peer by peer, so a bad
    /// peer fails alone and is named.
    fn change_peers(&self, name: &str, diff: PeerDiff, out: &mut Outcome) {
        let upsert: Vec<&WgPeerSpec> = diff.add.iter().chain(diff.update.iter()).collect();
        let mut removed = Vec::new();
        if self.host.change_peers(name, &upsert, &diff.remove).is_ok() {
            out.added += diff.add.len() as u32;
            out.updated += diff.update.len() as u32;
            out.removed += diff.remove.len() as u32;
            removed = diff.remove;
        } else {
            for key in diff.remove {
                match self.host.change_peers(name, &[], &[key]) {
                    Ok(()) => {
                        out.removed += 1;
                        removed.push(key);
                    }
                    Err(e) => out.fail(reconcile::peer_label(name, &key), e),
                }
            }
            for (peer, added) in diff.add.iter().map(|p| (p, true)).chain(diff.update.iter().map(|p| (p, false))) {
                match self.host.change_peers(name, &[peer], &[]) {
                    Ok(()) if added => out.added += 1,
                    Ok(()) => out.updated += 1,
                    Err(e) => out.fail(reconcile::peer_label(name, &peer.public_key), e),
                }
            }
        }
        if !removed.is_empty() {
            let gone: Vec<WgPeerKey> = removed.iter().map(|k| (name.to_string(), *k)).collect();
            if let Err(e) = self.store.forget_wg_baselines(&gone) {
                tracing::warn!(error = %e, "cannot forget WireGuard counter baselines");
            }
        }
    }

    fn publish(&self, inner: &Inner, ports: &BTreeMap<String, u16>, connected: BTreeSet<WgPeerKey>) {
        let mut interfaces: Vec<WgInterfaceStatus> = inner
            .desired
            .interfaces
            .iter()
            .map(|spec| {
                let error = inner.failures.get(&interface_item(&spec.name)).cloned();
                let present = ports.contains_key(&spec.name);
                WgInterfaceStatus {
                    name: spec.name.clone(),
                    listen_port: ports.get(&spec.name).copied().unwrap_or(spec.listen_port),
                    up: spec.enabled && present && self.host.is_up(&spec.name),
                    error,
                }
            })
            .collect();
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        let peer_ref =
            |(interface, public_key): &WgPeerKey| WgPeerRef { interface: interface.clone(), public_key: *public_key };
        let status = WgStatus {
            applied_revision: inner.desired.revision,
            backend: self.host.backend().as_str().into(),
            interfaces,
            connected: connected.iter().map(peer_ref).collect(),
            cut_off: inner.cut_off.iter().map(|(k, r)| (peer_ref(k), r.reason)).collect(),
        };
        self.status_tx.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
    }
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
