//! Host facts sent with `Hello` and `Enroll`: who this host is and which addresses it has.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flotilla_protocol::facts::HostFacts;
use sysinfo::{CpuRefreshKind, Networks, RefreshKind, System};

/// Reads the host's facts now. Never fails: a fact the OS does not reveal is left empty.
pub fn gather() -> HostFacts {
    // Listing CPUs also reads their brand (from /proc/cpuinfo on Linux); usage is not needed.
    let system = System::new_with_specifics(RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()));
    let cpu_model = system.cpus().first().map(|cpu| cpu.brand().trim().to_owned()).unwrap_or_default();
    let cpu_cores = match system.cpus().len() {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };

    let networks = Networks::new_with_refreshed_list();
    let (public_ips, private_ips) =
        split_addresses(networks.values().flat_map(|data| data.ip_networks().iter().map(|net| net.addr)));

    HostFacts {
        hostname: System::host_name().unwrap_or_default(),
        os: os_name(),
        kernel: System::kernel_version().unwrap_or_default(),
        arch: std::env::consts::ARCH.to_owned(),
        cpu_model,
        cpu_cores: u32::try_from(cpu_cores).unwrap_or(u32::MAX),
        public_ips,
        private_ips,
    }
}

/// "Debian GNU/Linux 12": the distribution's name and version from os-release.
fn os_name() -> String {
    // Not `long_os_version()`: on Linux it wraps this as "Linux (Debian GNU/Linux 12)".
    match (System::name(), System::os_version()) {
        (Some(name), Some(version)) => format!("{name} {version}"),
        // Rolling distributions (Arch, Debian sid) have no version.
        (Some(name), None) => name,
        (None, _) => System::long_os_version().unwrap_or_else(|| std::env::consts::OS.to_owned()),
    }
}

/// Whom an interface address is reachable from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Globally routable on the Internet.
    Public,
    /// Unicast, but only within some private network (RFC 1918, CGNAT, ULA, benchmarking, …).
    Private,
}

/// Sorted, deduplicated `(public, private)` addresses; addresses of no use to the controller
/// (loopback, link-local, …; see [`classify`]) are dropped.
fn split_addresses(addrs: impl Iterator<Item = IpAddr>) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let (mut public, mut private) = (Vec::new(), Vec::new());
    for addr in addrs {
        match classify(addr) {
            Some(Scope::Public) => public.push(addr),
            Some(Scope::Private) => private.push(addr),
            None => {}
        }
    }
    for list in [&mut public, &mut private] {
        list.sort_unstable();
        list.dedup();
    }
    (public, private)
}

/// Classifies an interface address. `None` for addresses that do not identify the host to anyone
/// else: unspecified, loopback, link-local, multicast and broadcast. Documentation ranges count
/// as private.
///
/// "Public" follows the IANA special-purpose registries (as `std`'s unstable `is_global` does);
/// every other unicast address is "Private".
fn classify(ip: IpAddr) -> Option<Scope> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            // ::ffff:a.b.c.d is the IPv4 host seen through an IPv6 socket.
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Scope> {
    let [a, b, c, d] = ip.octets();
    // 0.0.0.0/8 ("this network", including unspecified) is never a host's own address.
    let this_network = a == 0;
    if this_network || ip.is_loopback() || ip.is_link_local() || ip.is_multicast() || ip.is_broadcast() {
        return None;
    }
    // 100.64.0.0/10, shared address space (carrier-grade NAT, also Tailscale).
    let shared_cgnat = a == 100 && (b & 0xc0) == 64;
    // 192.0.0.0/24, except .9 and .10 which the registry lists as globally reachable.
    let ietf_assignments = a == 192 && b == 0 && c == 0 && d != 9 && d != 10;
    let benchmarking = a == 198 && (b & 0xfe) == 18; // 198.18.0.0/15
    let reserved = a >= 240; // 240.0.0.0/4 (broadcast already excluded)
                             // Documentation ranges do show up on lab and test machines (this project's CI among them):
                             // they identify the host there, but never publicly.
    let not_global =
        ip.is_private() || ip.is_documentation() || shared_cgnat || ietf_assignments || benchmarking || reserved;
    Some(scope(not_global))
}

fn classify_v6(ip: Ipv6Addr) -> Option<Scope> {
    let s = ip.segments();
    let link_local = (s[0] & 0xffc0) == 0xfe80; // fe80::/10
    let documentation = (s[0] == 0x2001 && s[1] == 0x0db8) // 2001:db8::/32
        || (s[0] == 0x3fff && s[1] < 0x1000); // 3fff::/20 (RFC 9637)
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || link_local {
        return None;
    }
    if documentation {
        return Some(Scope::Private);
    }
    // Only 2000::/3 is allocated as global unicast; anything else on an interface (ULA fc00::/7,
    // deprecated site-local fec0::/10, NAT64 local-use 64:ff9b:1::/48, …) is private.
    let global_unicast = (s[0] & 0xe000) == 0x2000;
    // 2001::/23 (Teredo, benchmarking, …), except the blocks the registry lists as globally
    // reachable: PCP and TURN anycast, AMT 2001:3::/32, AS112-v6 2001:4:112::/48, and
    // ORCHIDv2 + DETs 2001:20::/27.
    let ietf_assignments = s[0] == 0x2001
        && s[1] < 0x200
        && !(u128::from(ip) == 0x2001_0001_0000_0000_0000_0000_0000_0001
            || u128::from(ip) == 0x2001_0001_0000_0000_0000_0000_0000_0002
            || s[1] == 3
            || (s[1] == 4 && s[2] == 0x112)
            || (0x20..=0x3f).contains(&s[1]));
    // 6to4, 2002::/16: the registry says "N/A", and the host's real IPv4 is listed anyway.
    let six_to_four = s[0] == 0x2002;
    Some(scope(!global_unicast || ietf_assignments || six_to_four))
}

fn scope(not_global: bool) -> Scope {
    if not_global {
        Scope::Private
    } else {
        Scope::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Option<Scope> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_public() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "45.67.89.10",
            "100.63.255.255", // just below CGNAT
            "100.128.0.0",    // just above CGNAT
            "172.15.255.255", // just below 172.16/12
            "172.32.0.0",     // just above 172.16/12
            "192.0.0.9",      // PCP anycast, globally reachable
            "192.0.0.10",     // TURN anycast, globally reachable
            "192.0.1.1",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(c(ip), Some(Scope::Public), "{ip}");
        }
    }

    #[test]
    fn ipv4_private() {
        for ip in [
            "10.0.0.1",
            "10.255.255.254",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.10",
            "100.64.0.1",      // CGNAT (also Tailscale)
            "100.127.255.254", // CGNAT upper end
            "192.0.0.8",       // IETF protocol assignments
            "198.18.0.1",      // benchmarking
            "198.19.255.254",
            "240.0.0.1", // reserved
            "255.255.255.254",
        ] {
            assert_eq!(c(ip), Some(Scope::Private), "{ip}");
        }
    }

    #[test]
    fn ipv4_ignored() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.1.1", // link-local
            "224.0.0.1",   // multicast
            "239.255.255.250",
            "255.255.255.255", // broadcast
        ] {
            assert_eq!(c(ip), None, "{ip}");
        }
        for ip in ["192.0.2.1", "198.51.100.7", "203.0.113.200", "2001:db8::1", "3fff::1"] {
            assert_eq!(c(ip), Some(Scope::Private), "documentation range {ip}");
        }
    }

    #[test]
    fn ipv6_public() {
        for ip in [
            "2606:4700:4700::1111",
            "2a01:4f8:c17:1234::1",
            "2001:4860:4860::8888",
            "2001:200::1", // first address after 2001::/23
            "2001:1::1",   // PCP anycast
            "2001:3::1",   // AMT
            "2001:4:112::1",
            "2001:20::1", // ORCHIDv2
            "3ffe::1",    // still 2000::/3, outside 3fff::/20
            "3fff:1000::1",
        ] {
            assert_eq!(c(ip), Some(Scope::Public), "{ip}");
        }
    }

    #[test]
    fn ipv6_private() {
        for ip in [
            "fd00::1", // ULA
            "fdab:cdef:1234::42",
            "fc00::1",          // ULA, L=0 half
            "fec0::1",          // deprecated site-local
            "64:ff9b:1::1",     // local-use NAT64
            "2001::1",          // Teredo
            "2001:2::1",        // benchmarking
            "2001:1::3",        // IETF protocol assignments, not an anycast exception
            "2002:c000:201::1", // 6to4
            "100::1",           // discard-only
            "4000::1",          // outside 2000::/3: not allocated for global unicast
            "::ffff:10.0.0.1",  // IPv4-mapped private
        ] {
            assert_eq!(c(ip), Some(Scope::Private), "{ip}");
        }
    }

    #[test]
    fn ipv6_ignored() {
        for ip in [
            "::",
            "::1",
            "fe80::1",
            "febf:ffff::1",     // top of fe80::/10
            "ff02::1",          // multicast
            "ff0e::1",          // global-scope multicast is still not a host address
            "::ffff:127.0.0.1", // IPv4-mapped loopback
        ] {
            assert_eq!(c(ip), None, "{ip}");
        }
        assert_eq!(c("::ffff:1.1.1.1"), Some(Scope::Public));
    }

    #[test]
    fn split_sorts_dedups_and_drops() {
        let addrs = ["10.0.0.2", "1.1.1.1", "127.0.0.1", "10.0.0.1", "1.1.1.1", "fe80::1", "fd00::1", "10.0.0.2"]
            .map(|s| s.parse::<IpAddr>().unwrap());
        let (public, private) = split_addresses(addrs.into_iter());
        let ips = |v: &[&str]| v.iter().map(|s| s.parse::<IpAddr>().unwrap()).collect::<Vec<_>>();
        assert_eq!(public, ips(&["1.1.1.1"]));
        assert_eq!(private, ips(&["10.0.0.1", "10.0.0.2", "fd00::1"]));
    }

    #[test]
    fn gather_describes_this_host() {
        let facts = gather();
        assert!(!facts.hostname.is_empty(), "{facts:?}");
        assert!(!facts.kernel.is_empty(), "{facts:?}");
        assert!(!facts.os.is_empty(), "{facts:?}");
        assert_eq!(facts.arch, std::env::consts::ARCH);
        assert!(facts.cpu_cores >= 1, "{facts:?}");
        assert_eq!(facts.cpu_model, facts.cpu_model.trim());
        for ip in &facts.public_ips {
            assert_eq!(classify(*ip), Some(Scope::Public), "{ip}");
        }
        for ip in &facts.private_ips {
            assert_eq!(classify(*ip), Some(Scope::Private), "{ip}");
        }
        for list in [&facts.public_ips, &facts.private_ips] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "sorted and unique: {list:?}");
        }
    }
}
