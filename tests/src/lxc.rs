//! Throwaway Debian containers with a real systemd as PID 1, for the package tests.
//!
//! One golden bookworm base (systemd, dbus, curl, adduser, procps) is built once per machine and
//! kept; its name carries a hash of the recipe, so a changed recipe builds a new one. Every test
//! then boots ephemeral overlay clones of it (`lxc-copy -e`), which `Container`'s `Drop` stops (and
//! thereby deletes) even when the test panics. See COMPONENTS.md, "A Debian container with systemd
//! as a test host". Network traffic stays on the lxc-net bridge (10.0.3.0/24); only building the
//! base reaches the Debian mirror.
//!
//! All commands run under `timeout`, so no wait here is unbounded.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shell steps that build the golden base; `$N` is its name, `$R` its rootfs. Part of the name's
/// hash: editing them builds a new base.
const RECIPE: &str = r#"
lxc-create -t debian -n "$N" -- -r bookworm
rm -f "$R/etc/apt/sources.list"
mkdir -p "$R/etc/apt/sources.list.d"
cp /etc/apt/sources.list.d/debian.sources "$R/etc/apt/sources.list.d/"
lxc-start -n "$N"
for i in $(seq 240); do
    s=$(lxc-attach -n "$N" -- systemctl is-system-running 2>/dev/null || true)
    [ "$s" = running ] || [ "$s" = degraded ] && break
    sleep 0.25
done
lxc-attach -n "$N" --clear-env --set-var DEBIAN_FRONTEND=noninteractive \
    --set-var PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin -- \
    sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd dbus curl adduser procps && apt-get clean'
lxc-stop -n "$N" -t 20
: > "$R/etc/machine-id"
mkdir -p "$R/var/lib/dbus"
ln -sf /etc/machine-id "$R/var/lib/dbus/machine-id"
rm -f "$R"/var/lib/dhcp/dhclient*.leases
"#;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const LXC: &str = "/var/lib/lxc";

/// Why containers cannot be used here (None: they can).
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() != Some("0") {
        return Some("not running as root (LXC containers need root)".into());
    }
    for tool in ["lxc-create", "lxc-copy", "lxc-attach", "lxc-info", "lxc-stop", "timeout"] {
        if !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Some(format!("{tool} not found (apt-get install lxc lxc-templates debootstrap rsync)"));
        }
    }
    if !Path::new("/usr/libexec/lxc/lxc-net").exists() {
        return Some("/usr/libexec/lxc/lxc-net not found (package lxc)".into());
    }
    if !Path::new("/usr/share/lxc/templates/lxc-debian").exists() {
        return Some("the LXC debian template is missing (package lxc-templates)".into());
    }
    if !Path::new("/etc/apt/sources.list.d/debian.sources").exists() {
        return Some("/etc/apt/sources.list.d/debian.sources not found (copied into the containers)".into());
    }
    None
}

/// Runs `program args` with a time limit; panics if it cannot be started.
pub fn run_bounded(limit: Duration, program: &str, args: &[&str], stdin: Option<&Path>) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=5", &format!("{}", limit.as_secs().max(1)), program]).args(args);
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))),
        None => Stdio::null(),
    });
    cmd.output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Starts the lxc-net bridge (lxcbr0, 10.0.3.1/24, dnsmasq) unless it is up already.
///
/// `/run/lxc/network_up` can outlive lxc-net's dnsmasq (a host whose processes were stopped but
/// whose `/run` was kept): then containers boot without an address. So the marker counts only with
/// a live dnsmasq; otherwise the bridge is taken down and started again.
pub fn ensure_network() {
    static NETWORK: Mutex<()> = Mutex::new(());
    let _serial = NETWORK.lock().unwrap_or_else(|e| e.into_inner());
    let up = Path::new("/run/lxc/network_up");
    if up.exists() && lxc_dnsmasq_alive() {
        return;
    }
    if up.exists() {
        // The pid file names a dead dnsmasq; `lxc-net stop` would `kill -9` whatever has that pid now.
        let _ = std::fs::remove_file("/run/lxc/dnsmasq.pid");
        eprintln!("lxc-net: dnsmasq is gone; restarting the bridge");
        let out = run_bounded(Duration::from_secs(30), "/usr/libexec/lxc/lxc-net", &["stop"], None);
        assert!(!up.exists(), "lxc-net stop failed: {}", text(&out));
    }
    let out = run_bounded(Duration::from_secs(30), "/usr/libexec/lxc/lxc-net", &["start"], None);
    assert!(up.exists() && lxc_dnsmasq_alive(), "lxc-net start failed: {}", text(&out));
}

/// Whether the dnsmasq named by lxc-net's pid file is running.
fn lxc_dnsmasq_alive() -> bool {
    std::fs::read_to_string("/run/lxc/dnsmasq.pid")
        .ok()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{}/comm", pid.trim())).ok())
        .is_some_and(|comm| comm.trim() == "dnsmasq")
}

/// Name of the golden base for the current recipe.
pub fn golden_name() -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    RECIPE.hash(&mut h);
    format!("flt-golden-{:012x}", h.finish() & 0xffff_ffff_ffff)
}

static GOLDEN: Mutex<bool> = Mutex::new(false);

/// Builds the golden base if it does not exist yet (serialised within the process by a mutex and
/// across processes by `flock` on a lock file); returns its name.
pub fn golden() -> String {
    ensure_network();
    let name = golden_name();
    let mut done = GOLDEN.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return name;
    }
    let dir = Path::new(LXC).join(&name);
    let marker = dir.join("flotilla-golden-ready");
    std::fs::create_dir_all(LXC).expect("/var/lib/lxc");
    let lock = Path::new(LXC).join(".flt-golden.lock");
    // The script below runs under `flock`, so a second test process waits for the first build.
    let script = format!(
        r#"set -e
N={name}; R={lxc}/$N/rootfs
if [ -e {marker} ]; then exit 0; fi
# A half-built base from an interrupted run.
if lxc-info -n "$N" >/dev/null 2>&1; then lxc-stop -n "$N" -k >/dev/null 2>&1 || true; lxc-destroy -n "$N" -f; fi
# Bases of older recipes (kept while clones of them exist).
for old in $(lxc-ls -1 | grep '^flt-golden-' | grep -v "^$N\$" || true); do
    [ -d {lxc}/$old/rootfs ] && lxc-destroy -n "$old" >/dev/null 2>&1 || true
done
{RECIPE}
touch {marker}
"#,
        lxc = LXC,
        marker = marker.display(),
    );
    let start = Instant::now();
    let fresh = !marker.exists();
    let out = run_bounded(
        Duration::from_secs(900),
        "flock",
        &[&lock.display().to_string(), "env", &format!("PATH={PATH}"), "sh", "-c", &script],
        None,
    );
    assert!(out.status.success() && marker.exists(), "building the golden base {name} failed:\n{}", text(&out));
    if fresh {
        eprintln!("lxc: golden base {name} ready in {:.1?}", start.elapsed());
    }
    *done = true;
    name
}

/// A running ephemeral clone of the golden base, stopped (and so deleted) on drop.
#[derive(Debug)]
pub struct Container {
    pub name: String,
}

impl Container {
    /// Clones and starts a container named `flt-<tag>-<pid>-<n>`; does not wait for its boot
    /// (see `wait_ready`), so several can boot side by side.
    pub fn start(tag: &str) -> Container {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let golden = golden();
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("flt-{tag}-{}-{n}", std::process::id());
        let out = run_bounded(Duration::from_secs(60), "lxc-copy", &["-e", "-n", &golden, "-N", &name], None);
        let c = Container { name };
        assert!(out.status.success(), "lxc-copy -e -n {golden} -N {}: {}", c.name, text(&out));
        c
    }

    /// Waits until systemd inside reports `running` and the container has its IPv4 address.
    /// Returns the address.
    pub fn wait_ready(&self, limit: Duration) -> String {
        let start = Instant::now();
        let mut state = String::new();
        while start.elapsed() < limit {
            let out = self.attach(Duration::from_secs(10), &["systemctl", "is-system-running"], None);
            state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if state == "degraded" {
            eprintln!("{}: degraded: {}", self.name, self.sh("systemctl --failed --no-legend --plain").1);
        }
        assert!(state == "running" || state == "degraded", "{}: systemd is {state:?} after {limit:?}", self.name);
        loop {
            let out = run_bounded(Duration::from_secs(10), "lxc-info", &["-n", &self.name, "-iH"], None);
            let ip =
                String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with("10.0.3.")).map(str::to_string);
            if let Some(ip) = ip {
                return ip;
            }
            assert!(start.elapsed() < limit, "{}: no 10.0.3.x address after {limit:?}", self.name);
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `lxc-attach` with a clean environment (no host variables such as NO_COLOR or RUST_LOG).
    pub fn attach(&self, limit: Duration, argv: &[&str], stdin: Option<&Path>) -> Output {
        let path = format!("PATH={PATH}");
        let mut args = vec![
            "-n",
            &self.name,
            "--clear-env",
            "--set-var",
            &path,
            "--set-var",
            "DEBIAN_FRONTEND=noninteractive",
            "--set-var",
            "LANG=C.UTF-8",
            "--",
        ];
        args.extend_from_slice(argv);
        run_bounded(limit, "lxc-attach", &args, stdin)
    }

    /// Runs a shell script inside (60 s limit); returns its exit code and stdout+stderr.
    pub fn sh(&self, script: &str) -> (i32, String) {
        self.sh_limit(Duration::from_secs(60), script)
    }

    pub fn sh_limit(&self, limit: Duration, script: &str) -> (i32, String) {
        let out = self.attach(limit, &["sh", "-c", script], None);
        (out.status.code().unwrap_or(-1), text(&out))
    }

    /// Runs a shell script inside and returns its trimmed stdout; panics unless it exits 0.
    pub fn ok(&self, script: &str) -> String {
        let out = self.attach(Duration::from_secs(120), &["sh", "-c", script], None);
        assert!(out.status.success(), "{}: `{script}` failed ({}):\n{}", self.name, out.status, text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Copies a host file to `dest` inside.
    pub fn push(&self, file: &Path, dest: &str) {
        let out = self.attach(Duration::from_secs(60), &["sh", "-c", &format!("cat > '{dest}'")], Some(file));
        assert!(out.status.success(), "copy {} to {}:{dest}: {}", file.display(), self.name, text(&out));
    }

    /// `systemctl show -p PROP --value UNIT`.
    pub fn show(&self, unit: &str, prop: &str) -> String {
        self.sh(&format!("systemctl show -p {prop} --value {unit}")).1.trim().to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // An ephemeral clone deletes itself once stopped; destroy covers a clone that never ran.
        let _ = run_bounded(Duration::from_secs(30), "lxc-stop", &["-n", &self.name, "-k"], None);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) && Path::new(LXC).join(&self.name).exists() {
            std::thread::sleep(Duration::from_millis(200));
        }
        if Path::new(LXC).join(&self.name).exists() {
            let _ = run_bounded(Duration::from_secs(30), "lxc-destroy", &["-n", &self.name, "-f"], None);
        }
    }
}
