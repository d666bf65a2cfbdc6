//! The decisions of the WireGuard driver, without IO: which parts of a pushed state are usable,
//! what must change on a device (peer by peer), which peers are cut off for quota or expiry and
//! when they come back, and the traffic deltas of a counter reading.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use flotilla_protocol::wireguard::{WgCutOff, WgInterfaceSpec, WgKey, WgPeerSpec, WgPeerTraffic, WgState};

use crate::state::{WgCutRecord, WgPeerKey, WgUsage};

/// Longest interface name Linux takes (IFNAMSIZ - 1).
pub const MAX_NAME_LEN: usize = 15;

/// Checks an interface name the way the kernel does (`dev_valid_name`).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty interface name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("interface name {name:?} is longer than {MAX_NAME_LEN} bytes"));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace()) {
        return Err(format!("interface name {name:?} is not a valid device name"));
    }
    Ok(())
}

fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (ip, prefix) = text.trim().split_once('/').ok_or_else(|| format!("{text:?} is not address/prefix"))?;
    let ip: IpAddr = ip.parse().map_err(|_| format!("{text:?}: {ip:?} is not an IP address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| format!("{text:?}: bad prefix length"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("{text:?}: prefix length over {max}"));
    }
    Ok((ip, prefix))
}

/// An interface address (`10.0.0.1/24`) in canonical text; host bits are kept.
pub fn canonical_address(text: &str) -> Result<String, String> {
    let (ip, prefix) = parse_cidr(text)?;
    Ok(format!("{ip}/{prefix}"))
}

/// An allowed IP range in canonical text with the host bits cleared, as WireGuard stores it
/// (so a pushed `10.0.0.5/24` compares equal to the device's `10.0.0.0/24`).
pub fn canonical_allowed_ip(text: &str) -> Result<String, String> {
    let (ip, prefix) = parse_cidr(text)?;
    let network = match ip {
        IpAddr::V4(v4) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            IpAddr::from((u32::from(v4) & mask).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            IpAddr::from((u128::from(v6) & mask).to_be_bytes())
        }
    };
    Ok(format!("{network}/{prefix}"))
}

/// How failures name a peer.
pub fn peer_label(interface: &str, key: &WgKey) -> String {
    format!("peer {interface}/{}", key.to_base64())
}

/// The usable part of a pushed state, in canonical form, and (item, why) for what was refused:
/// an interface with a bad name or address and its peers, a peer of no (usable) interface, a
/// duplicate, a bad allowed IP, an allowed IP already held by another peer of the interface.
pub fn validate(state: WgState) -> (WgState, Vec<(String, String)>) {
    let mut failures = Vec::new();
    let mut interfaces: Vec<WgInterfaceSpec> = Vec::new();
    for mut spec in state.interfaces {
        let item = format!("interface {}", spec.name);
        let checked = check_name(&spec.name).and_then(|()| {
            if interfaces.iter().any(|i| i.name == spec.name) {
                return Err("listed twice".to_string());
            }
            spec.addresses.iter().map(|a| canonical_address(a)).collect::<Result<Vec<_>, _>>()
        });
        match checked {
            Ok(addresses) => {
                spec.addresses = addresses;
                interfaces.push(spec);
            }
            Err(why) => failures.push((item, why)),
        }
    }
    let mut peers: Vec<WgPeerSpec> = Vec::new();
    let mut seen: BTreeSet<WgPeerKey> = BTreeSet::new();
    let mut held: BTreeMap<(String, String), WgKey> = BTreeMap::new();
    for mut spec in state.peers {
        let item = peer_label(&spec.interface, &spec.public_key);
        let checked = (|| {
            if !interfaces.iter().any(|i| i.name == spec.interface) {
                return Err(format!("interface {:?} is not in the state (or was refused)", spec.interface));
            }
            if !seen.insert((spec.interface.clone(), spec.public_key)) {
                return Err("listed twice".to_string());
            }
            let ips = spec.allowed_ips.iter().map(|a| canonical_allowed_ip(a)).collect::<Result<Vec<_>, _>>()?;
            // WireGuard would silently move the range to the peer configured last.
            for ip in &ips {
                if let Some(other) = held.get(&(spec.interface.clone(), ip.clone())) {
                    return Err(format!("allowed IP {ip} already belongs to {}", other.to_base64()));
                }
            }
            Ok(ips)
        })();
        match checked {
            Ok(ips) => {
                for ip in &ips {
                    held.insert((spec.interface.clone(), ip.clone()), spec.public_key);
                }
                spec.allowed_ips = ips;
                peers.push(spec);
            }
            Err(why) => failures.push((item, why)),
        }
    }
    (WgState { revision: state.revision, interfaces, peers }, failures)
}

/// One peer as it is on a device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LivePeer {
    pub preshared_key: Option<WgKey>,
    /// Canonical ranges.
    pub allowed_ips: BTreeSet<String>,
    pub rx: u64,
    pub tx: u64,
    /// Unix milliseconds of the last handshake; `None` if never.
    pub last_handshake_ms: Option<i64>,
}

/// One device as it is on the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveDevice {
    pub public_key: Option<WgKey>,
    pub listen_port: u16,
    pub peers: BTreeMap<WgKey, LivePeer>,
    /// Canonical addresses, link-local ones left out (the kernel adds those by itself).
    pub addresses: BTreeSet<String>,
    pub mtu: u32,
    pub up: bool,
}

/// The public key of a private key.
pub fn public_key(private: &WgKey) -> WgKey {
    WgKey(wireguard_control::Key(private.0).get_public().0)
}

/// What changes on a device that exists, besides its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceChanges {
    pub private_key: bool,
    pub listen_port: Option<u16>,
    pub add_addresses: Vec<String>,
    pub remove_addresses: Vec<String>,
    /// Set MTU and bring the link up.
    pub link: bool,
}

impl InterfaceChanges {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == InterfaceChanges::default()
    }
}

/// Changes turning `live` into `spec`. Port 0 and MTU 0 mean "whatever the device has".
pub fn diff_interface(spec: &WgInterfaceSpec, live: &LiveDevice) -> InterfaceChanges {
    let want: BTreeSet<&String> = spec.addresses.iter().collect();
    let have: BTreeSet<&String> = live.addresses.iter().collect();
    InterfaceChanges {
        private_key: live.public_key != Some(public_key(&spec.private_key)),
        listen_port: (spec.listen_port != 0 && spec.listen_port != live.listen_port).then_some(spec.listen_port),
        add_addresses: want.difference(&have).map(|a| a.to_string()).collect(),
        remove_addresses: have.difference(&want).map(|a| a.to_string()).collect(),
        link: !live.up || (spec.mtu != 0 && u32::from(spec.mtu) != live.mtu),
    }
}

/// Peer changes for one device: unchanged peers are in none of the lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerDiff {
    pub add: Vec<WgPeerSpec>,
    /// Peers whose preshared key or allowed IPs differ.
    pub update: Vec<WgPeerSpec>,
    pub remove: Vec<WgKey>,
}

impl PeerDiff {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.update.is_empty() && self.remove.is_empty()
    }
}

fn same_peer(spec: &WgPeerSpec, live: &LivePeer) -> bool {
    // An all-zero preshared key is how the device says "none".
    let psk = spec.preshared_key.filter(|k| k.0 != [0; 32]);
    psk == live.preshared_key && spec.allowed_ips.iter().cloned().collect::<BTreeSet<_>>() == live.allowed_ips
}

/// Changes turning the peers a device has into the peers it should have.
pub fn diff_peers(have: &BTreeMap<WgKey, LivePeer>, want: &[&WgPeerSpec]) -> PeerDiff {
    let mut diff = PeerDiff::default();
    let wanted: BTreeMap<WgKey, &WgPeerSpec> = want.iter().map(|p| (p.public_key, *p)).collect();
    for key in have.keys() {
        if !wanted.contains_key(key) {
            diff.remove.push(*key);
        }
    }
    for (key, spec) in wanted {
        match have.get(&key) {
            None => diff.add.push(spec.clone()),
            Some(live) if !same_peer(spec, live) => diff.update.push(spec.clone()),
            Some(_) => {}
        }
    }
    diff
}

/// Why `peer` must be off its device at `now_ms` given its `usage`, if it must.
pub fn cut_reason(peer: &WgPeerSpec, usage: WgUsage, now_ms: i64) -> Option<WgCutOff> {
    if peer.expiry_ms != 0 && now_ms >= peer.expiry_ms {
        return Some(WgCutOff::Expired);
    }
    // Usage counted before the controller's latest reset does not count against the quota.
    let usage = if usage.reset_generation < peer.reset_generation { WgUsage::default() } else { usage };
    if peer.quota_bytes != 0 && usage.total() >= peer.quota_bytes {
        return Some(WgCutOff::Quota);
    }
    None
}

/// The cut-offs after this decision. An enabled peer is cut when a reason holds. A cut peer
/// stays cut while its spec is the one it was cut under (a moved clock alone brings nobody
/// back); once the controller pushes a different spec it returns if no reason holds any more,
/// else it stays cut under the new spec. Disabled or removed peers are not cut-offs.
pub fn enforce(
    peers: &[WgPeerSpec],
    current: &BTreeMap<WgPeerKey, WgCutRecord>,
    usage: &HashMap<WgPeerKey, WgUsage>,
    now_ms: i64,
) -> BTreeMap<WgPeerKey, WgCutRecord> {
    let mut next = BTreeMap::new();
    for peer in peers.iter().filter(|p| p.enabled) {
        let key = (peer.interface.clone(), peer.public_key);
        if let Some(record) = current.get(&key).filter(|r| r.spec == *peer) {
            next.insert(key, record.clone());
            continue;
        }
        let used = usage.get(&key).copied().unwrap_or_default();
        if let Some(reason) = cut_reason(peer, used, now_ms) {
            next.insert(key, WgCutRecord { reason, spec: peer.clone() });
        }
    }
    next
}

/// Deltas of a counter reading against the baselines of the last committed one, and the
/// baselines that changed. A counter below its baseline means the device (or the peer) was
/// recreated and counts from zero again, so its whole value is new traffic.
pub fn deltas(
    reading: &[(WgPeerKey, u64, u64)],
    baselines: &HashMap<WgPeerKey, (u64, u64)>,
) -> (Vec<WgPeerTraffic>, Vec<(WgPeerKey, u64, u64)>) {
    let mut traffic = Vec::new();
    let mut changed = Vec::new();
    for (key, rx, tx) in reading {
        let (base_rx, base_tx) = baselines.get(key).copied().unwrap_or((0, 0));
        let delta = |now: u64, base: u64| if now >= base { now - base } else { now };
        let (drx, dtx) = (delta(*rx, base_rx), delta(*tx, base_tx));
        if (*rx, *tx) != (base_rx, base_tx) {
            changed.push((key.clone(), *rx, *tx));
        }
        if drx > 0 || dtx > 0 {
            traffic.push(WgPeerTraffic { interface: key.0.clone(), public_key: key.1, rx: drx, tx: dtx });
        }
    }
    (traffic, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::drivers::wireguard::fixtures::{key, peer};

    fn iface(name: &str) -> WgInterfaceSpec {
        crate::drivers::wireguard::fixtures::iface(name, 51820)
    }

    fn live_peer(ips: &[&str]) -> LivePeer {
        LivePeer { allowed_ips: ips.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn names_and_cidrs() {
        assert!(check_name("wg0").is_ok());
        assert!(check_name("fifteen-chars-x").is_ok());
        assert!(check_name("sixteen-chars-xx").unwrap_err().contains("longer than 15"));
        for bad in ["", ".", "..", "a/b", "a b", "a:1"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(canonical_address(" 10.0.0.1/24").unwrap(), "10.0.0.1/24");
        assert_eq!(canonical_address("fd00:0::1/64").unwrap(), "fd00::1/64");
        assert_eq!(canonical_allowed_ip("10.0.0.5/24").unwrap(), "10.0.0.0/24");
        assert_eq!(canonical_allowed_ip("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert_eq!(canonical_allowed_ip("fd00::7/128").unwrap(), "fd00::7/128");
        assert_eq!(canonical_allowed_ip("fd00::7/0").unwrap(), "::/0");
        for bad in ["10.0.0.1", "10.0.0.1/33", "fd00::1/129", "x/24", "10.0.0.1/x"] {
            assert!(canonical_allowed_ip(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation_refuses_items_alone() {
        let mut bad_addr = iface("wg1");
        bad_addr.addresses = vec!["10.0.0.300/24".into()];
        let mut overlap = peer("wg0", 3);
        overlap.allowed_ips = vec!["10.8.0.2/32".into()];
        let mut bad_ip = peer("wg0", 4);
        bad_ip.allowed_ips = vec!["nonsense".into()];
        let state = WgState {
            revision: 3,
            interfaces: vec![iface("wg0"), iface("a-name-far-too-long"), bad_addr, iface("wg0")],
            peers: vec![peer("wg0", 2), peer("wg0", 2), overlap, bad_ip, peer("wg1", 5), peer("wg9", 6)],
        };
        let (ok, failures) = validate(state);
        assert_eq!(ok.revision, 3);
        assert_eq!(ok.interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), vec!["wg0"]);
        assert_eq!(ok.peers, vec![peer("wg0", 2)]);
        let items: Vec<&str> = failures.iter().map(|(item, _)| item.as_str()).collect();
        assert_eq!(items.len(), 8, "{failures:?}");
        assert!(items.contains(&"interface a-name-far-too-long"));
        assert!(failures.iter().any(|(_, why)| why.contains("already belongs to")));
    }

    #[test]
    fn interface_diff_touches_only_what_changed() {
        let spec = iface("wg0");
        let live = LiveDevice {
            public_key: Some(public_key(&spec.private_key)),
            listen_port: 51820,
            peers: BTreeMap::new(),
            addresses: ["10.8.0.1/24".to_string()].into(),
            mtu: 1420,
            up: true,
        };
        assert!(diff_interface(&spec, &live).is_empty());
        let moved = WgInterfaceSpec { listen_port: 51821, addresses: vec!["10.9.0.1/24".into()], ..spec.clone() };
        let d = diff_interface(&moved, &live);
        assert_eq!(d.listen_port, Some(51821));
        assert_eq!((d.add_addresses, d.remove_addresses), (vec!["10.9.0.1/24".into()], vec!["10.8.0.1/24".into()]));
        assert!(!d.private_key && !d.link);
        let down = LiveDevice { up: false, public_key: None, ..live.clone() };
        let d = diff_interface(&spec, &down);
        assert!(d.link && d.private_key);
        let defaults = WgInterfaceSpec { listen_port: 0, mtu: 0, ..spec };
        assert!(diff_interface(&defaults, &LiveDevice { listen_port: 40000, mtu: 1500, ..live }).is_empty());
    }

    #[test]
    fn peer_diff_is_per_peer_and_leaves_unchanged_peers_alone() {
        let have: BTreeMap<WgKey, LivePeer> = [
            (key(1), live_peer(&["10.8.0.1/32"])),
            (key(2), live_peer(&["10.8.0.2/32"])),
            (key(3), live_peer(&["10.8.0.3/32"])),
            (key(4), LivePeer { preshared_key: Some(key(9)), ..live_peer(&["10.8.0.4/32"]) }),
        ]
        .into();
        let unchanged = peer("wg0", 1);
        let mut moved = peer("wg0", 3);
        moved.allowed_ips = vec!["10.8.0.33/32".into()];
        let psk_dropped = peer("wg0", 4);
        let new = peer("wg0", 5);
        let d = diff_peers(&have, &[&unchanged, &moved, &psk_dropped, &new]);
        assert_eq!(d.remove, vec![key(2)]);
        assert_eq!(d.add, vec![new]);
        assert_eq!(d.update, vec![moved, psk_dropped]);
        // A zero preshared key is no key, and allowed IPs compare as sets.
        let mut zero = peer("wg0", 1);
        zero.preshared_key = Some(WgKey([0; 32]));
        zero.allowed_ips = vec!["10.8.0.1/32".into(), "10.8.0.1/32".into()];
        assert!(diff_peers(&[(key(1), live_peer(&["10.8.0.1/32"]))].into(), &[&zero]).is_empty());
    }

    #[test]
    fn expiry_and_quota() {
        let used = |total: u64, reset_generation| WgUsage { rx: total / 2, tx: total - total / 2, reset_generation };
        let p = |expiry_ms, quota_bytes, reset_generation| WgPeerSpec {
            expiry_ms,
            quota_bytes,
            reset_generation,
            ..peer("wg0", 1)
        };
        assert_eq!(cut_reason(&p(0, 0, 0), used(u64::MAX / 2, 0), 5), None, "0 means never and unlimited");
        assert_eq!(cut_reason(&p(10, 0, 0), used(0, 0), 9), None);
        assert_eq!(cut_reason(&p(10, 0, 0), used(0, 0), 10), Some(WgCutOff::Expired));
        assert_eq!(cut_reason(&p(0, 100, 0), used(99, 0), 0), None);
        assert_eq!(cut_reason(&p(0, 100, 0), used(100, 0), 0), Some(WgCutOff::Quota));
        assert_eq!(cut_reason(&p(0, 100, 1), used(100, 0), 0), None, "a newer reset generation zeroes usage");
        assert_eq!(cut_reason(&p(10, 100, 0), used(100, 0), 11), Some(WgCutOff::Expired), "expiry wins");
    }

    #[test]
    fn cut_offs_come_back_only_under_a_new_spec_whose_reason_is_gone() {
        let k: WgPeerKey = ("wg0".into(), key(1));
        let quota = WgPeerSpec { quota_bytes: 100, ..peer("wg0", 1) };
        let mut usage = HashMap::new();
        usage.insert(k.clone(), WgUsage { rx: 60, tx: 40, reset_generation: 0 });
        let cut = enforce(std::slice::from_ref(&quota), &BTreeMap::new(), &usage, 0);
        assert_eq!(cut[&k], WgCutRecord { reason: WgCutOff::Quota, spec: quota.clone() });

        // Same spec: stays cut, whatever the clock or usage says.
        assert_eq!(enforce(std::slice::from_ref(&quota), &cut, &HashMap::new(), 0), cut);
        // Quota raised but still reached: stays cut, now under the new spec.
        let raised = WgPeerSpec { quota_bytes: 90, ..quota.clone() };
        let still = enforce(std::slice::from_ref(&raised), &cut, &usage, 0);
        assert_eq!(still[&k].spec, raised);
        // Raised past the usage: back.
        let enough = WgPeerSpec { quota_bytes: 1000, ..quota.clone() };
        assert!(enforce(std::slice::from_ref(&enough), &cut, &usage, 0).is_empty());
        // A newer reset generation (the controller zeroed the usage): back.
        let reset = WgPeerSpec { reset_generation: 1, ..quota.clone() };
        assert!(enforce(std::slice::from_ref(&reset), &cut, &usage, 0).is_empty());

        // Expiry: moved into the future brings it back; a clock moved back alone does not.
        let expired = WgPeerSpec { expiry_ms: 50, ..peer("wg0", 1) };
        let cut = enforce(std::slice::from_ref(&expired), &BTreeMap::new(), &HashMap::new(), 60);
        assert_eq!(cut[&k].reason, WgCutOff::Expired);
        assert_eq!(enforce(std::slice::from_ref(&expired), &cut, &HashMap::new(), 10), cut);
        let extended = WgPeerSpec { expiry_ms: 500, ..expired.clone() };
        assert!(enforce(std::slice::from_ref(&extended), &cut, &HashMap::new(), 60).is_empty());

        // Toggled off: no longer a cut-off (it is simply disabled); on again with the reason
        // still there: cut again.
        let off = WgPeerSpec { enabled: false, ..expired.clone() };
        assert!(enforce(std::slice::from_ref(&off), &cut, &HashMap::new(), 60).is_empty());
        assert_eq!(enforce(std::slice::from_ref(&expired), &BTreeMap::new(), &HashMap::new(), 60), cut);
        // Removed from the state: forgotten.
        assert!(enforce(&[], &cut, &HashMap::new(), 60).is_empty());
    }

    #[test]
    fn deltas_against_baselines_and_resets() {
        let a: WgPeerKey = ("wg0".into(), key(1));
        let b: WgPeerKey = ("wg0".into(), key(2));
        let mut base = HashMap::new();
        let (t, changed) = deltas(&[(a.clone(), 100, 1000), (b.clone(), 0, 0)], &base);
        assert_eq!(t, vec![WgPeerTraffic { interface: "wg0".into(), public_key: key(1), rx: 100, tx: 1000 }]);
        assert_eq!(changed, vec![(a.clone(), 100, 1000)], "an idle new peer needs no baseline row");
        base.extend(changed.into_iter().map(|(k, rx, tx)| (k, (rx, tx))));
        // Same reading: nothing moved, nothing to rewrite.
        assert_eq!(deltas(&[(a.clone(), 100, 1000)], &base), (vec![], vec![]));
        // tx grew by 50; rx went backwards (device recreated): all of it is new.
        let (t, changed) = deltas(&[(a.clone(), 30, 1050)], &base);
        assert_eq!((t[0].rx, t[0].tx), (30, 50));
        assert_eq!(changed, vec![(a, 30, 1050)]);
    }
}
