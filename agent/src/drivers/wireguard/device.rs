//! WireGuard devices on this host: the backend (kernel module or userspace wireguard-go), probed
//! at start; peers and keys through `wireguard-control`; addresses, MTU, link state and removal
//! through `ip`. Everything here blocks: the driver calls it off the async threads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::UNIX_EPOCH;

use flotilla_protocol::wireguard::{WgInterfaceSpec, WgKey, WgPeerSpec};
use wireguard_control::{AllowedIp, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};

use super::reconcile::{canonical_address, LiveDevice, LivePeer};
use super::WireGuardError;

/// Where WireGuard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The kernel module, over netlink.
    Kernel,
    /// wireguard-go (or `$WG_USERSPACE_IMPLEMENTATION`), over its UAPI socket.
    Userspace,
}

impl Backend {
    /// `kernel` or `userspace`, as `WgStatus` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace",
        }
    }

    fn control(self) -> wireguard_control::Backend {
        match self {
            Backend::Kernel => wireguard_control::Backend::Kernel,
            Backend::Userspace => wireguard_control::Backend::Userspace,
        }
    }
}

/// The backend this host can run: the kernel module if it is there, else userspace if
/// wireguard-go is installed. For setups that pick by themselves (the all-in-one demo).
pub fn detect() -> Option<Backend> {
    if kernel_available().is_ok() {
        Some(Backend::Kernel)
    } else if userspace_implementation().is_some() {
        Some(Backend::Userspace)
    } else {
        None
    }
}

/// A failed device operation.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}")]
    Name(String),
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("`{0}` failed: {1}")]
    Command(String, String),
    #[error("a WireGuard socket for {0} already answers at {1} (a device of that name in another network namespace?); use another interface name")]
    SocketTaken(String, String),
}

/// What the driver needs from the host, one device at a time. [`LinuxHost`] is the real one;
/// tests use a fake.
pub trait WgHost: Send + Sync + std::fmt::Debug {
    /// The backend in use.
    fn backend(&self) -> Backend;
    /// Whether a network device of that name exists in this network namespace.
    fn exists(&self, name: &str) -> bool;
    /// Whether it exists and is up.
    fn is_up(&self, name: &str) -> bool;
    /// The device's keys, port, peers with their counters, addresses and link state.
    fn read(&self, name: &str) -> Result<LiveDevice, DeviceError>;
    /// Creates the device with its key, port and `peers` (a new device has nothing to keep).
    fn create(&self, spec: &WgInterfaceSpec, peers: &[&WgPeerSpec]) -> Result<(), DeviceError>;
    /// Replaces the device's private key.
    fn set_private_key(&self, name: &str, key: &WgKey) -> Result<(), DeviceError>;
    /// Moves the device to another listen port.
    fn set_listen_port(&self, name: &str, port: u16) -> Result<(), DeviceError>;
    /// Adds or updates `upsert` and removes `remove`; other peers are not touched.
    fn change_peers(&self, name: &str, upsert: &[&WgPeerSpec], remove: &[WgKey]) -> Result<(), DeviceError>;
    /// Adds and removes interface addresses.
    fn set_addresses(&self, name: &str, add: &[String], remove: &[String]) -> Result<(), DeviceError>;
    /// Sets the MTU (0: leave it) and brings the link up.
    fn set_link_up(&self, name: &str, mtu: u16) -> Result<(), DeviceError>;
    /// Deletes the device (userspace: wireguard-go exits with it).
    fn delete(&self, name: &str) -> Result<(), DeviceError>;
}

/// Devices of this host's network namespace.
#[derive(Debug)]
pub struct LinuxHost {
    backend: Backend,
    /// The userspace implementation, when that is the backend.
    implementation: Option<PathBuf>,
}

/// Socket directory wireguard-go uses (`/var/run` is `/run` on Debian).
const SOCKET_DIR: &str = "/var/run/wireguard";

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return executable(Path::new(name)).then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| executable(p))
}

/// The userspace implementation wireguard-control would run: `$WG_USERSPACE_IMPLEMENTATION`,
/// `$WG_QUICK_USERSPACE_IMPLEMENTATION`, else `wireguard-go`; `None` unless it is executable.
fn userspace_implementation() -> Option<PathBuf> {
    let chosen = std::env::var("WG_USERSPACE_IMPLEMENTATION")
        .or_else(|_| std::env::var("WG_QUICK_USERSPACE_IMPLEMENTATION"))
        .unwrap_or_else(|_| "wireguard-go".into());
    on_path(&chosen)
}

/// Whether the kernel has WireGuard: the module is loaded, or a test device can be created
/// (which loads it).
fn kernel_available() -> Result<(), String> {
    if Path::new("/sys/module/wireguard").exists() {
        return Ok(());
    }
    if on_path("ip").is_none() {
        return Err("no /sys/module/wireguard, and no `ip` to try loading it".into());
    }
    let probe = format!("wgprobe{}", std::process::id() % 100_000);
    match ip(&["link", "add", "dev", &probe, "type", "wireguard"]) {
        Ok(_) => {
            let _ = ip(&["link", "del", "dev", &probe]);
            Ok(())
        }
        Err(e) => Err(format!("no /sys/module/wireguard, and {e}")),
    }
}

/// Runs `ip ARGS`; its stdout, or its stderr as the error.
fn ip(args: &[&str]) -> Result<String, DeviceError> {
    let line = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DeviceError::Command(line.clone(), e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(DeviceError::Command(line, if err.is_empty() { out.status.to_string() } else { err }))
    }
}

fn iface(name: &str) -> Result<InterfaceName, DeviceError> {
    name.parse().map_err(|e| DeviceError::Name(format!("interface name {name:?}: {e}")))
}

fn peer_builder(spec: &WgPeerSpec) -> PeerConfigBuilder {
    let ips: Vec<AllowedIp> = spec.allowed_ips.iter().filter_map(|ip| ip.parse().ok()).collect();
    // Set both ways so an update also drops a key or a range the peer had.
    PeerConfigBuilder::new(&Key(spec.public_key.0))
        .set_preshared_key(Key(spec.preshared_key.map(|k| k.0).unwrap_or([0; 32])))
        .replace_allowed_ips()
        .add_allowed_ips(&ips)
}

fn sysfs(name: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(name).join(file)).ok().map(|s| s.trim().to_string())
}

/// Whether the link is administratively up (IFF_UP).
fn link_up(name: &str) -> bool {
    let flags = sysfs(name, "flags").and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok());
    flags.is_some_and(|f| f & 1 != 0)
}

/// The device's non-link-local addresses, from `ip -j address show`.
fn addresses(name: &str) -> Result<BTreeSet<String>, DeviceError> {
    #[derive(serde::Deserialize)]
    struct Link {
        #[serde(default)]
        addr_info: Vec<Addr>,
    }
    #[derive(serde::Deserialize)]
    struct Addr {
        local: Option<String>,
        prefixlen: Option<u8>,
        scope: Option<String>,
    }
    let text = ip(&["-j", "address", "show", "dev", name])?;
    let links: Vec<Link> = serde_json::from_str(text.trim())
        .map_err(|e| DeviceError::Command(format!("ip -j address show dev {name}"), e.to_string()))?;
    Ok(links
        .into_iter()
        .flat_map(|l| l.addr_info)
        .filter(|a| a.scope.as_deref() != Some("link"))
        .filter_map(|a| canonical_address(&format!("{}/{}", a.local?, a.prefixlen?)).ok())
        .collect())
}

impl LinuxHost {
    /// Checks that `backend` can run here, with the error an operator can act on.
    pub fn probe(backend: Backend) -> Result<LinuxHost, WireGuardError> {
        if on_path("ip").is_none() {
            return Err(WireGuardError::NoIp);
        }
        let implementation = match backend {
            Backend::Kernel => {
                kernel_available().map_err(WireGuardError::NoKernel)?;
                None
            }
            Backend::Userspace => {
                let found = userspace_implementation().ok_or(WireGuardError::NoUserspace)?;
                if !Path::new("/dev/net/tun").exists() {
                    return Err(WireGuardError::NoTun);
                }
                Some(found)
            }
        };
        Ok(LinuxHost { backend, implementation })
    }

    fn apply(&self, name: &str, update: DeviceUpdate) -> Result<(), DeviceError> {
        update.apply(&iface(name)?, self.backend.control()).map_err(|e| DeviceError::Io("configure", e))
    }

    /// Starts wireguard-go for `name` ourselves rather than leaving it to wireguard-control,
    /// which would say only "address not available" when it fails.
    fn start_userspace(&self, name: &str) -> Result<(), DeviceError> {
        let Some(implementation) = &self.implementation else { return Ok(()) };
        let socket = Path::new(SOCKET_DIR).join(format!("{name}.sock"));
        // The socket directory is shared by every network namespace: a live socket of that
        // name belongs to somebody else's device, which wireguard-control would configure.
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(DeviceError::SocketTaken(name.into(), socket.display().to_string()));
        }
        let out = Command::new(implementation)
            .arg(name)
            // It daemonizes; in the foreground, or logging to our pipes, it would hold them
            // open and this call would never return.
            .env_remove("WG_PROCESS_FOREGROUND")
            .env_remove("LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| DeviceError::Command(format!("{} {name}", implementation.display()), e.to_string()))?;
        if out.status.success() {
            return Ok(());
        }
        // Its banner about kernel support is noise; the error is on the last lines.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && !l.starts_with('┌') && !l.starts_with('│') && !l.starts_with('└'))
            .unwrap_or("no error output")
            .to_string();
        Err(DeviceError::Command(format!("{} {name}", implementation.display()), format!("{} ({why})", out.status)))
    }
}

impl WgHost for LinuxHost {
    fn backend(&self) -> Backend {
        self.backend
    }

    fn exists(&self, name: &str) -> bool {
        !name.is_empty() && !name.contains('/') && Path::new("/sys/class/net").join(name).exists()
    }

    fn is_up(&self, name: &str) -> bool {
        self.exists(name) && link_up(name)
    }

    fn read(&self, name: &str) -> Result<LiveDevice, DeviceError> {
        let device = wireguard_control::Device::get(&iface(name)?, self.backend.control())
            .map_err(|e| DeviceError::Io("read device", e))?;
        let peers: BTreeMap<WgKey, LivePeer> = device
            .peers
            .into_iter()
            .map(|p| {
                let handshake = p.stats.last_handshake_time.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
                let live = LivePeer {
                    preshared_key: p.config.preshared_key.map(|k| WgKey(k.0)).filter(|k| k.0 != [0; 32]),
                    allowed_ips: p.config.allowed_ips.iter().map(|a| format!("{}/{}", a.address, a.cidr)).collect(),
                    rx: p.stats.rx_bytes,
                    tx: p.stats.tx_bytes,
                    last_handshake_ms: handshake.map(|d| d.as_millis() as i64),
                };
                (WgKey(p.config.public_key.0), live)
            })
            .collect();
        Ok(LiveDevice {
            public_key: device.public_key.map(|k| WgKey(k.0)),
            listen_port: device.listen_port.unwrap_or(0),
            peers,
            addresses: addresses(name)?,
            mtu: sysfs(name, "mtu").and_then(|m| m.parse().ok()).unwrap_or(0),
            up: link_up(name),
        })
    }

    fn create(&self, spec: &WgInterfaceSpec, peers: &[&WgPeerSpec]) -> Result<(), DeviceError> {
        if self.backend == Backend::Userspace {
            self.start_userspace(&spec.name)?;
        }
        let mut update = DeviceUpdate::new().set_private_key(Key(spec.private_key.0));
        if spec.listen_port != 0 {
            update = update.set_listen_port(spec.listen_port);
        }
        let builders: Vec<PeerConfigBuilder> = peers.iter().map(|p| peer_builder(p)).collect();
        // (The kernel backend creates the device here.)
        let configured = self.apply(&spec.name, update.add_peers(&builders));
        if configured.is_err() && self.exists(&spec.name) {
            // A half-made device (its port taken, say) would only be mistaken for a working one.
            let _ = self.delete(&spec.name);
        }
        configured
    }

    fn set_private_key(&self, name: &str, key: &WgKey) -> Result<(), DeviceError> {
        self.apply(name, DeviceUpdate::new().set_private_key(Key(key.0)))
    }

    fn set_listen_port(&self, name: &str, port: u16) -> Result<(), DeviceError> {
        self.apply(name, DeviceUpdate::new().set_listen_port(port))
    }

    fn change_peers(&self, name: &str, upsert: &[&WgPeerSpec], remove: &[WgKey]) -> Result<(), DeviceError> {
        let builders: Vec<PeerConfigBuilder> = upsert.iter().map(|p| peer_builder(p)).collect();
        let mut update = DeviceUpdate::new().add_peers(&builders);
        for key in remove {
            update = update.remove_peer_by_key(&Key(key.0));
        }
        self.apply(name, update)
    }

    fn set_addresses(&self, name: &str, add: &[String], remove: &[String]) -> Result<(), DeviceError> {
        for address in remove {
            ip(&["address", "del", address, "dev", name])?;
        }
        for address in add {
            ip(&["address", "replace", address, "dev", name])?;
        }
        Ok(())
    }

    fn set_link_up(&self, name: &str, mtu: u16) -> Result<(), DeviceError> {
        let mtu = mtu.to_string();
        let mut args = vec!["link", "set", "dev", name];
        if mtu != "0" {
            args.extend(["mtu", mtu.as_str()]);
        }
        args.push("up");
        ip(&args).map(drop)
    }

    fn delete(&self, name: &str) -> Result<(), DeviceError> {
        // Also ends wireguard-go at once (removing its socket would take a second).
        ip(&["link", "del", "dev", name]).map(drop)
    }
}
