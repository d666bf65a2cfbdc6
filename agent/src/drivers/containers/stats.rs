//! Usage samples of managed containers: a ring buffer per container in memory, filled every
//! `sample_interval`, and the latest of each published for the link's `CONTAINER_SAMPLES`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use flotilla_protocol::containers::ContainerSample;

use super::RawUsage;

/// `du` of a rootfs at most this often per container: it walks the whole tree.
pub const DISK_EVERY: Duration = Duration::from_secs(60);

/// A CPU counter reading and when it was taken.
#[derive(Debug, Clone, Copy)]
struct CpuReading {
    cpu_ns: u64,
    pid: u32,
    at: Instant,
}

#[derive(Debug, Default)]
struct PerContainer {
    ring: VecDeque<ContainerSample>,
    last_cpu: Option<CpuReading>,
    disk: Option<(u64, Instant)>,
}

/// The ring buffers.
#[derive(Debug)]
pub struct SampleBook {
    kept: usize,
    containers: HashMap<String, PerContainer>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// CPU use between two readings as a fraction of `cores` (0..1); 0 across a restart (new init
/// pid, counter reset) or without an earlier reading.
pub fn cpu_fraction(prev: Option<(u64, u32, Instant)>, now: (u64, u32, Instant), cores: u32) -> f64 {
    let Some((prev_ns, prev_pid, prev_at)) = prev else { return 0.0 };
    let wall = now.2.saturating_duration_since(prev_at).as_nanos() as f64;
    if prev_pid != now.1 || now.0 < prev_ns || wall <= 0.0 {
        return 0.0;
    }
    ((now.0 - prev_ns) as f64 / wall / f64::from(cores.max(1))).clamp(0.0, 1.0)
}

impl SampleBook {
    /// Keeps `kept` samples per container.
    pub fn new(kept: usize) -> SampleBook {
        SampleBook { kept: kept.max(1), containers: HashMap::new() }
    }

    /// The cached disk use when it is fresh enough, else None (time for a new `du`).
    pub fn cached_disk(&self, name: &str, now: Instant) -> Option<u64> {
        let (bytes, at) = self.containers.get(name)?.disk?;
        (now.saturating_duration_since(at) < DISK_EVERY).then_some(bytes)
    }

    /// Records a fresh `du` result.
    pub fn set_disk(&mut self, name: &str, bytes: u64, now: Instant) {
        self.containers.entry(name.into()).or_default().disk = Some((bytes, now));
    }

    /// The last known disk use (stale or not); 0 before the first `du`.
    pub fn last_disk(&self, name: &str) -> u64 {
        self.containers.get(name).and_then(|c| c.disk).map(|d| d.0).unwrap_or(0)
    }

    /// A sample from `usage` (None: not running, zeros) against the last recorded reading,
    /// without recording it: what a status query shows.
    pub fn peek(&self, name: &str, usage: Option<&RawUsage>, cores: u32, now: Instant) -> ContainerSample {
        let disk_used = self.last_disk(name);
        let Some(u) = usage else {
            return ContainerSample { time_ms: now_ms(), cpu: 0.0, mem_used: 0, disk_used, net_in: 0, net_out: 0 };
        };
        let prev = self.containers.get(name).and_then(|c| c.last_cpu).map(|r| (r.cpu_ns, r.pid, r.at));
        ContainerSample {
            time_ms: now_ms(),
            cpu: cpu_fraction(prev, (u.cpu_ns, u.pid, now), cores),
            mem_used: u.mem_used,
            disk_used,
            // The counters are the host end of the veth: what the host sends, the guest receives.
            net_in: u.host_tx,
            net_out: u.host_rx,
        }
    }

    /// Takes a sample (as [`SampleBook::peek`]) and records it in the container's ring.
    pub fn record(&mut self, name: &str, usage: Option<&RawUsage>, cores: u32, now: Instant) -> ContainerSample {
        let sample = self.peek(name, usage, cores, now);
        let entry = self.containers.entry(name.into()).or_default();
        entry.last_cpu = usage.map(|u| CpuReading { cpu_ns: u.cpu_ns, pid: u.pid, at: now });
        if entry.ring.len() == self.kept {
            entry.ring.pop_front();
        }
        entry.ring.push_back(sample);
        sample
    }

    /// A container's samples, oldest first.
    pub fn samples(&self, name: &str) -> Vec<ContainerSample> {
        self.containers.get(name).map(|c| c.ring.iter().copied().collect()).unwrap_or_default()
    }

    /// Drops containers no longer managed.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.containers.retain(|name, _| keep(name));
    }
}
