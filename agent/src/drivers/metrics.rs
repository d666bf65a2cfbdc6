//! Metrics driver: samples CPU, memory, swap, root filesystem, load, uptime and network counters
//! with `sysinfo`, producing the wire type [`MetricsSample`].
//!
//! A [`MetricsSampler`] is long-lived: CPU usage is a difference between two readings of
//! `/proc/stat`, so the sampler keeps the previous reading between calls.

use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_protocol::metrics::MetricsSample;
use sysinfo::{Networks, System};

/// The filesystem whose usage a sample reports.
const ROOT: &str = "/";

/// Interface excluded from the network totals: loopback traffic is the host talking to itself
/// (including the agent's own local API) and says nothing about the node's real traffic.
const LOOPBACK_IFACE: &str = "lo";

/// Keeps the `sysinfo` state that successive samples need.
pub struct MetricsSampler {
    system: System,
    networks: Networks,
    /// Simulations sharing one sampler across many agents: a reading this young is handed out
    /// again (with a fresh timestamp) instead of reading /proc once per agent.
    reuse_within: Option<std::time::Duration>,
    last: Option<(std::time::Instant, MetricsSample)>,
}

impl MetricsSampler {
    /// Creates a sampler and takes a first CPU reading, so that the next [`sample`] reports the
    /// CPU use since now rather than an average since boot.
    ///
    /// [`sample`]: MetricsSampler::sample
    pub fn new() -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        let networks = Networks::new_with_refreshed_list();
        MetricsSampler { system, networks, reuse_within: None, last: None }
    }

    /// A sampler that reads the host at most once per `within` and repeats that reading in
    /// between: for one process simulating many agents (the benchmark), where a real reading per
    /// agent would measure the simulator rather than the controller.
    pub fn reusing(within: std::time::Duration) -> Self {
        MetricsSampler { reuse_within: Some(within), ..MetricsSampler::new() }
    }

    /// Takes one sample now.
    ///
    /// CPU use covers the time since the previous call (or since [`MetricsSampler::new`]); calls
    /// closer together than [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] repeat the previous value.
    /// Network totals are sums over the interfaces present now, so they drop when an interface
    /// goes away; consumers computing rates should treat a decrease as a counter reset.
    pub fn sample(&mut self) -> MetricsSample {
        if let (Some(within), Some((at, last))) = (self.reuse_within, &self.last) {
            if at.elapsed() < within {
                return MetricsSample { taken_at_ms: unix_ms_now(), ..last.clone() };
            }
        }
        let sample = self.read();
        if self.reuse_within.is_some() {
            self.last = Some((std::time::Instant::now(), sample.clone()));
        }
        sample
    }

    fn read(&mut self) -> MetricsSample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let (disk_used, disk_total) = self.root_disk_usage();
        self.networks.refresh(true);
        let (net_rx_bytes, net_tx_bytes) = network_totals(
            self.networks.iter().map(|(name, data)| (name.as_str(), data.total_received(), data.total_transmitted())),
        );
        let load = System::load_average();

        MetricsSample {
            taken_at_ms: unix_ms_now(),
            cpu_percent: clamp_percent(self.system.global_cpu_usage()),
            mem_used: self.system.used_memory(),
            mem_total: self.system.total_memory(),
            swap_used: self.system.used_swap(),
            swap_total: self.system.total_swap(),
            disk_used,
            disk_total,
            load: [load.one, load.five, load.fifteen],
            uptime_secs: System::uptime(),
            net_rx_bytes,
            net_tx_bytes,
        }
    }

    /// `(used, total)` bytes of the filesystem holding `/`, as `df` counts them: used is total
    /// minus free (`f_bfree`), so blocks reserved for root are not reported as used. One statvfs
    /// call on `/` only, so a stuck mount elsewhere cannot block sampling.
    fn root_disk_usage(&mut self) -> (u64, u64) {
        match rustix::fs::statvfs(ROOT) {
            Ok(st) => {
                let total = st.f_blocks.saturating_mul(st.f_frsize);
                (st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(st.f_frsize), total)
            }
            Err(_) => (0, 0),
        }
    }
}

impl Default for MetricsSampler {
    fn default() -> Self {
        Self::new()
    }
}

/// Sums `(interface, rx, tx)` totals over every interface except loopback.
fn network_totals<'a>(interfaces: impl Iterator<Item = (&'a str, u64, u64)>) -> (u64, u64) {
    interfaces
        .filter(|(name, _, _)| *name != LOOPBACK_IFACE)
        .fold((0, 0), |(rx, tx), (_, r, t)| (rx.saturating_add(r), tx.saturating_add(t)))
}

/// Keeps a CPU figure inside the documented 0..=100 (sysinfo can overshoot slightly, and a
/// zero-length interval yields NaN).
fn clamp_percent(value: f32) -> f32 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 100.0)
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_reports_memory_disk_and_time_of_this_host() {
        let mut sampler = MetricsSampler::new();
        let before = unix_ms_now();
        let s = sampler.sample();
        let after = unix_ms_now();

        assert!(before <= s.taken_at_ms && s.taken_at_ms <= after, "{s:?}");
        assert!(s.mem_total > 0, "{s:?}");
        assert!(s.mem_used > 0 && s.mem_used <= s.mem_total, "{s:?}");
        assert!(s.swap_used <= s.swap_total, "{s:?}");
        assert!(s.disk_total > 0, "no filesystem found for /: {s:?}");
        assert!(s.disk_used <= s.disk_total, "{s:?}");
        assert!(s.uptime_secs > 0, "{s:?}");
        assert!(s.load.iter().all(|l| l.is_finite() && *l >= 0.0), "{s:?}");
    }

    #[test]
    fn root_disk_matches_statvfs_as_df_reports_it() {
        // `stat -f` prints the kernel's statvfs("/"): fragment size, total and free blocks.
        let mut sampler = MetricsSampler::new();
        let s = sampler.sample();
        let out = std::process::Command::new("stat").args(["-f", "-c", "%S %b %f", "/"]).output().unwrap();
        let f: Vec<u64> =
            String::from_utf8(out.stdout).unwrap().split_whitespace().map(|x| x.parse().unwrap()).collect();
        let (frsize, blocks, free) = (f[0], f[1], f[2]);
        assert_eq!(s.disk_total, frsize * blocks);
        // Free space moves while tests run; allow 64 MiB of drift.
        let expected_used = (blocks - free) * frsize;
        assert!(s.disk_used.abs_diff(expected_used) < 64 << 20, "used {} vs {expected_used}", s.disk_used);
    }

    #[test]
    fn cpu_percent_is_a_percentage_and_counters_do_not_go_backwards() {
        let mut sampler = MetricsSampler::new();
        let first = sampler.sample();
        // Burn some CPU so the interval is not trivially idle, then wait past the minimum
        // interval sysinfo needs between two CPU readings.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL * 2 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let second = sampler.sample();

        for s in [&first, &second] {
            assert!((0.0..=100.0).contains(&s.cpu_percent), "{s:?}");
        }
        assert!(second.taken_at_ms >= first.taken_at_ms);
        assert!(second.uptime_secs >= first.uptime_secs);
        assert!(second.net_rx_bytes >= first.net_rx_bytes, "{first:?} then {second:?}");
        assert!(second.net_tx_bytes >= first.net_tx_bytes, "{first:?} then {second:?}");
    }

    #[test]
    fn network_totals_skip_loopback_and_sum_the_rest() {
        let ifaces = [("lo", 1_000, 1_000), ("eth0", 10, 20), ("wg0", 5, 7), ("lo0", 1, 1)];
        assert_eq!(network_totals(ifaces.into_iter()), (16, 28));
        assert_eq!(network_totals(std::iter::empty()), (0, 0));
        assert_eq!(network_totals([("lo", 9, 9)].into_iter()), (0, 0));
        assert_eq!(
            network_totals([("a", u64::MAX, 1), ("b", 1, 1)].into_iter()),
            (u64::MAX, 2),
            "saturates instead of wrapping"
        );
    }

    #[test]
    fn a_reusing_sampler_repeats_a_young_reading_with_a_fresh_time() {
        let mut s = MetricsSampler::reusing(std::time::Duration::from_secs(60));
        let first = s.sample();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = s.sample();
        assert_eq!(MetricsSample { taken_at_ms: first.taken_at_ms, ..second.clone() }, first);
        assert!(second.taken_at_ms >= first.taken_at_ms + 5);
        let mut fresh = MetricsSampler::reusing(std::time::Duration::ZERO);
        fresh.sample();
        assert!(fresh.last.is_some(), "kept, but never younger than zero");
    }

    #[test]
    fn clamp_percent_bounds() {
        assert_eq!(clamp_percent(f32::NAN), 0.0);
        assert_eq!(clamp_percent(-1.0), 0.0);
        assert_eq!(clamp_percent(100.4), 100.0);
        assert_eq!(clamp_percent(42.5), 42.5);
    }
}
