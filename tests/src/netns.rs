//! Test hosts as network namespaces.
//!
//! Layout of one fleet (slot `S`, allocated by atomically creating the controller's namespace):
//! - `fltS-c`: the controller's host. Bridge `fS-br` holds 10.(100+S).1.1/24 for agents; veth
//!   `fS-h`/`fS-r` links it to the test process (root namespace) over 10.(100+S).0.0/24, so HTTP
//!   calls target 10.(100+S).0.2, an address inside a namespace the test created.
//! - `fltS-aI`: agent I's host, 10.(100+S).1.(10+I)/24 on veth `fSaI` bridged into `fltS-c`.
//!
//! Everything is deleted on drop; stale namespaces of crashed runs are removed by `.ci/run`.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Highest slot; keeps 10.(100+S) inside 10.0.0.0/8.
const MAX_SLOT: u8 = 150;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Whether this process can create namespaces (root and `ip` present).
pub fn available() -> bool {
    // SAFETY-free check: euid via /proc, to keep the crate free of unsafe.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false);
    root && Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success())
}

/// The namespaces and links of one fleet.
#[derive(Debug)]
pub struct FleetNet {
    pub slot: u8,
    agents: Vec<String>,
}

impl FleetNet {
    /// Allocates a slot and creates the controller's namespace and links.
    pub fn create() -> Result<FleetNet, String> {
        let start = (std::process::id() % MAX_SLOT as u32) as u8;
        for i in 0..MAX_SLOT {
            let slot = 1 + (start + i) % MAX_SLOT;
            // 10.203.0.0/24 is the containers' default bridge (fltbr0) on the host, which the
            // demo test leaves up: a fleet there is unreachable from the host.
            if 100 + u16::from(slot) == 203 {
                continue;
            }
            if ip(&["netns", "add", &format!("flt{slot}-c")]).is_ok() {
                let net = FleetNet { slot, agents: vec![] };
                net.setup_controller()?;
                return Ok(net);
            }
        }
        Err("no free network namespace slot".into())
    }

    fn octet(&self) -> u8 {
        100 + self.slot
    }

    /// Namespace of the controller.
    pub fn controller_ns(&self) -> String {
        format!("flt{}-c", self.slot)
    }

    /// Address of the controller as seen from the test process.
    pub fn controller_http_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet(), 0, 2)
    }

    /// Address of the controller as seen from agents.
    pub fn controller_agent_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet(), 1, 1)
    }

    fn setup_controller(&self) -> Result<(), String> {
        let (s, o, ns) = (self.slot, self.octet(), self.controller_ns());
        let (host, root, br) = (format!("f{s}-h"), format!("f{s}-r"), format!("f{s}-br"));
        ip(&["link", "add", &root, "type", "veth", "peer", "name", &host])?;
        ip(&["link", "set", &host, "netns", &ns])?;
        ip(&["addr", "add", &format!("10.{o}.0.1/24"), "dev", &root])?;
        ip(&["link", "set", &root, "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("10.{o}.0.2/24"), "dev", &host])?;
        ip(&["-n", &ns, "link", "set", &host, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // A fixed MAC: a bridge without one takes the lowest MAC among its ports and changes it as
        // agents join, leaving earlier agents with a stale ARP entry for the controller.
        let mac = format!("02:f1:07:00:00:{s:02x}");
        ip(&["-n", &ns, "link", "add", &br, "address", &mac, "type", "bridge"])?;
        ip(&["-n", &ns, "addr", "add", &format!("10.{o}.1.1/24"), "dev", &br])?;
        ip(&["-n", &ns, "link", "set", &br, "up"])
    }

    /// Creates agent host `index` and returns its namespace name and address.
    pub fn add_agent(&mut self, index: u8) -> Result<(String, Ipv4Addr), String> {
        let (s, o) = (self.slot, self.octet());
        let ns = format!("flt{s}-a{index}");
        let (inner, outer) = (format!("f{s}a{index}"), format!("f{s}b{index}"));
        ip(&["netns", "add", &ns])?;
        self.agents.push(ns.clone());
        let cns = self.controller_ns();
        ip(&["link", "add", &inner, "netns", &ns, "type", "veth", "peer", "name", &outer, "netns", &cns])?;
        ip(&["-n", &cns, "link", "set", &outer, "master", &format!("f{s}-br")])?;
        ip(&["-n", &cns, "link", "set", &outer, "up"])?;
        let addr = Ipv4Addr::new(10, o, 1, 10 + index);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &inner])?;
        ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok((ns, addr))
    }

    /// Cuts or restores agent `ns`'s link (partition tests).
    pub fn set_agent_link(&self, index: u8, up: bool) -> Result<(), String> {
        let ns = format!("flt{}-a{index}", self.slot);
        ip(&["-n", &ns, "link", "set", &format!("f{}a{index}", self.slot), if up { "up" } else { "down" }])
    }
}

/// Kills every process in namespace `ns` and waits (at most 3 s) until none is left. Deleting a
/// namespace only removes its name: processes started in it (daemons such as wireguard-go, which
/// leave their parent) would keep running, and keep the network namespace alive.
pub fn kill_all(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let pids = Command::new("ip").args(["netns", "pids", ns]).output().map(|o| o.stdout).unwrap_or_default();
        let pids: Vec<String> = String::from_utf8_lossy(&pids).split_whitespace().map(str::to_string).collect();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        let _ = Command::new("kill").arg("-KILL").args(&pids).stderr(Stdio::null()).status();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `program` to run in namespace `ns` (None: here) with `dir` bind-mounted on `/run/wireguard`
/// in a mount namespace of its own: wireguard-go's socket directory is shared by every network
/// namespace, so two devices named `wg0` in two namespaces would otherwise collide. `ip netns
/// exec` already gives the process a private mount namespace (a slave of the host's: the mount
/// does not leak out); outside a namespace `unshare -m` does. The exec chain keeps the pid, so
/// the returned command's child is `program` itself.
/// `program` in network namespace `ns`, keeping the machine's `/sys/fs/cgroup` (LXC needs it):
/// `ip netns exec` mounts a fresh sysfs over `/sys`, which hides the cgroup mounts. Here only the
/// network directories of `/sys` are replaced by the namespace's (LXC checks its bridge there),
/// inside a private mount namespace.
pub fn net_only(ns: &str, program: &OsStr) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).args(["unshare", "-m", "--propagation", "private", "sh", "-c"]);
    c.arg(
        r#"d=/run/flotilla-netns-sysfs; mkdir -p "$d" && mount -t sysfs sysfs "$d" \
        && mount --bind "$d/class/net" /sys/class/net && mount --bind "$d/devices/virtual/net" /sys/devices/virtual/net \
        && exec "$@""#,
    );
    c.arg("sh").arg(program);
    c
}

pub fn with_wireguard_dir(ns: Option<&str>, dir: &Path, program: &OsStr) -> Command {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c
        }
        None => {
            let mut c = Command::new("unshare");
            c.args(["-m", "--propagation", "private"]);
            c
        }
    };
    c.args(["sh", "-c", r#"mkdir -p /run/wireguard && mount --bind "$0" /run/wireguard && exec "$@""#]);
    c.arg(dir).arg(program);
    c
}

impl Drop for FleetNet {
    fn drop(&mut self) {
        for ns in self.agents.drain(..) {
            kill_all(&ns);
            let _ = ip(&["netns", "del", &ns]);
        }
        kill_all(&self.controller_ns());
        let _ = ip(&["netns", "del", &self.controller_ns()]);
        // The root end of the veth goes with its peer; delete explicitly in case it lingers.
        let _ = ip(&["link", "del", &format!("f{}-r", self.slot)]);
    }
}
