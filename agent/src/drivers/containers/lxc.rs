//! The LXC backend: privileged containers managed with the `lxc-*` tools (LXC 5), on a bridge the
//! agent configures, with static addresses and cgroup limits written into each container's
//! config file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use flotilla_protocol::containers::{ContainerSpec, ContainerState, OsTemplate};
use tokio::io::AsyncWriteExt;

use super::tasks::TaskHandle;
use super::{BackendError, ConsoleEntry, ContainerBackend, GuestNetwork, RawUsage};

/// The tools the backend runs; all must be on PATH.
pub const TOOLS: &[&str] =
    &["lxc-create", "lxc-start", "lxc-attach", "lxc-info", "lxc-stop", "lxc-destroy", "lxc-snapshot", "lxc-cgroup"];
/// What provides them, for the probe's message.
pub const INSTALL_HINT: &str = "apt-get install lxc lxc-templates busybox-static debootstrap rsync";

/// Short commands (info, cgroup, attach): bounded so a wedged container cannot hang a task.
const QUICK: Duration = Duration::from_secs(30);
/// `lxc-create` of a busybox container takes half a second; a debootstrap without cache minutes.
const CREATE_BUSYBOX: Duration = Duration::from_secs(120);
const CREATE_OTHER: Duration = Duration::from_secs(30 * 60);
/// Snapshots and rollbacks copy the whole rootfs (dir backend).
const COPY: Duration = Duration::from_secs(30 * 60);
/// How long `start` waits for RUNNING.
const START_WAIT: Duration = Duration::from_secs(30);

/// Which cgroup version holds a controller: LXC writes `lxc.cgroup.*` keys to v1 hierarchies
/// and `lxc.cgroup2.*` keys to the unified one. This host is hybrid (v1 memory and cpu, an
/// empty unified tree), so it is decided per controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Where the memory and cpu controllers live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLayout {
    pub memory: CgroupVersion,
    pub cpu: CgroupVersion,
}

impl CgroupLayout {
    /// Reads `/sys/fs/cgroup`: a v1 hierarchy with the controller's files wins (that is where
    /// LXC applies `lxc.cgroup.*`); otherwise the unified hierarchy.
    pub fn detect() -> CgroupLayout {
        Self::detect_in(Path::new("/sys/fs/cgroup"))
    }

    fn detect_in(root: &Path) -> CgroupLayout {
        let v1 = |dir: &str, file: &str| root.join(dir).join(file).exists();
        CgroupLayout {
            memory: if v1("memory", "memory.limit_in_bytes") { CgroupVersion::V1 } else { CgroupVersion::V2 },
            cpu: if v1("cpu", "cpu.cfs_quota_us") || v1("cpu,cpuacct", "cpu.cfs_quota_us") {
                CgroupVersion::V1
            } else {
                CgroupVersion::V2
            },
        }
    }

    /// The cgroup settings (controller file, value) for these limits, in the order to apply
    /// them (the v1 period before the quota).
    pub fn limits(&self, cores: Option<u32>, memory_mib: Option<u64>) -> Vec<(&'static str, String)> {
        const PERIOD_US: u64 = 100_000;
        let mut out = vec![];
        if let Some(cores) = cores {
            let quota = PERIOD_US * u64::from(cores.max(1));
            match self.cpu {
                CgroupVersion::V1 => {
                    out.push(("cpu.cfs_period_us", PERIOD_US.to_string()));
                    out.push(("cpu.cfs_quota_us", quota.to_string()));
                }
                CgroupVersion::V2 => out.push(("cpu.max", format!("{quota} {PERIOD_US}"))),
            }
        }
        if let Some(mib) = memory_mib {
            let bytes = (mib * 1024 * 1024).to_string();
            match self.memory {
                CgroupVersion::V1 => out.push(("memory.limit_in_bytes", bytes)),
                CgroupVersion::V2 => out.push(("memory.max", bytes)),
            }
        }
        out
    }

    /// The config file key of a controller file: `lxc.cgroup.` or `lxc.cgroup2.` before it.
    pub fn config_key(&self, file: &str) -> String {
        let version = if file.starts_with("memory.") { self.memory } else { self.cpu };
        match version {
            CgroupVersion::V1 => format!("lxc.cgroup.{file}"),
            CgroupVersion::V2 => format!("lxc.cgroup2.{file}"),
        }
    }

    /// The memory limit's controller file.
    pub fn memory_file(&self) -> &'static str {
        match self.memory {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        }
    }
}

/// The comment above the keys the agent writes into a container's config.
const MANAGED_MARK: &str = "# Set by flotilla-agent.";

/// The LXC backend.
#[derive(Debug, Clone)]
pub struct LxcBackend {
    lxc_path: PathBuf,
    cgroups: CgroupLayout,
}

impl LxcBackend {
    /// Containers under `lxc_path` (`lxc-* -P`).
    pub fn new(lxc_path: PathBuf) -> LxcBackend {
        LxcBackend { lxc_path, cgroups: CgroupLayout::detect() }
    }

    /// The cgroup layout limits are written for.
    pub fn cgroups(&self) -> CgroupLayout {
        self.cgroups
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.lxc_path.join(name)
    }

    fn config_path(&self, name: &str) -> PathBuf {
        self.dir(name).join("config")
    }

    /// Runs `tool -P lxc_path ARGS`, feeding `stdin`; a non-zero exit is an error with the
    /// tool's stderr.
    async fn lxc(
        &self,
        tool: &'static str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<String, BackendError> {
        let path = self.lxc_path.to_string_lossy().into_owned();
        let mut full = vec!["-P", path.as_str()];
        full.extend_from_slice(args);
        run(tool, &full, stdin, timeout).await
    }

    async fn info(&self, name: &str) -> Result<String, BackendError> {
        self.lxc("lxc-info", &["-n", name, "-H"], None, QUICK).await
    }

    /// Rewrites the keys the agent owns in the container's config file (atomically): every
    /// line setting one of `keys` goes, `set` is appended.
    fn edit_config(&self, name: &str, remove: &[&str], set: &[(String, String)]) -> Result<(), BackendError> {
        let path = self.config_path(name);
        let text = std::fs::read_to_string(&path).map_err(|e| BackendError::io(&path, e))?;
        let owned = |line: &str| {
            let key = line.split('=').next().unwrap_or("").trim();
            line == MANAGED_MARK || remove.contains(&key) || set.iter().any(|(k, _)| k == key)
        };
        let mut out: Vec<String> = text.lines().filter(|l| !owned(l)).map(str::to_string).collect();
        out.push(MANAGED_MARK.into());
        out.extend(set.iter().map(|(k, v)| format!("{k} = {v}")));
        write_atomic(&path, (out.join("\n") + "\n").as_bytes())
    }

    fn network_keys(net: &GuestNetwork) -> Vec<(String, String)> {
        vec![
            ("lxc.net.0.type".into(), "veth".into()),
            ("lxc.net.0.link".into(), net.bridge.clone()),
            ("lxc.net.0.flags".into(), "up".into()),
            ("lxc.net.0.ipv4.address".into(), format!("{}/{}", net.ipv4, net.prefix)),
            ("lxc.net.0.ipv4.gateway".into(), net.gateway.to_string()),
        ]
    }

    fn limit_keys(&self, cores: Option<u32>, memory_mib: Option<u64>) -> Vec<(String, String)> {
        self.cgroups.limits(cores, memory_mib).into_iter().map(|(f, v)| (self.cgroups.config_key(f), v)).collect()
    }

    /// Templates bring up eth0 with DHCP, which would flush the static address LXC set: turn
    /// that off in the rootfs for the templates the agent knows.
    fn keep_static_address(&self, name: &str, template: &OsTemplate, log: &TaskHandle) -> Result<(), BackendError> {
        let rootfs = self.dir(name).join("rootfs");
        match template {
            OsTemplate::Busybox => {
                let rcs = rootfs.join("etc/init.d/rcS");
                if let Ok(text) = std::fs::read_to_string(&rcs) {
                    let kept: Vec<&str> = text.lines().filter(|l| l.trim() != "/bin/udhcpc").collect();
                    write_atomic(&rcs, (kept.join("\n") + "\n").as_bytes())?;
                    set_mode(&rcs, 0o755)?;
                    log.log("busybox: udhcpc disabled (static address)");
                }
            }
            OsTemplate::Debian { .. } => {
                let ifaces = rootfs.join("etc/network/interfaces");
                if let Ok(text) = std::fs::read_to_string(&ifaces) {
                    write_atomic(&ifaces, text.replace("inet dhcp", "inet manual").as_bytes())?;
                    log.log("debian: eth0 set to manual (static address)");
                }
            }
            OsTemplate::Named { .. } => {}
        }
        Ok(())
    }

    async fn snapshot_names(&self, name: &str) -> Result<Vec<String>, BackendError> {
        let out = self.lxc("lxc-snapshot", &["-n", name, "-L"], None, QUICK).await?;
        Ok(parse_snapshot_list(&out))
    }
}

/// The snapshot names of `lxc-snapshot -L` (`snap0 (/var/lib/lxc/NAME/snaps) 2026:11:30 21:50:00`).
pub fn parse_snapshot_list(out: &str) -> Vec<String> {
    out.lines().filter(|l| l.contains(" (")).filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

/// Reads `lxc-info -H` (no `-s`): state, init pid, CPU ns, memory bytes, the first link's
/// counters and the first IPv4 address. None when it is not running.
pub fn parse_info(out: &str) -> Option<RawUsage> {
    let mut usage = RawUsage::default();
    let mut running = false;
    let mut link_seen = 0;
    for line in out.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        let number = || value.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match key.trim() {
            "State" => running = value == "RUNNING",
            "PID" => usage.pid = number() as u32,
            "CPU use" => usage.cpu_ns = number(),
            "Memory use" => usage.mem_used = number(),
            "IP" if usage.ipv4.is_none() && value.parse::<std::net::Ipv4Addr>().is_ok() => {
                usage.ipv4 = Some(value.to_string())
            }
            "Link" => link_seen += 1,
            "TX bytes" if link_seen == 1 => usage.host_tx = number(),
            "RX bytes" if link_seen == 1 => usage.host_rx = number(),
            _ => {}
        }
    }
    running.then_some(usage)
}

fn parse_state(s: &str) -> ContainerState {
    match s.trim() {
        // The protocol has no transitional states: report where it is heading from or to.
        "RUNNING" | "STOPPING" | "STARTING" | "THAWED" => ContainerState::Running,
        "FROZEN" | "FREEZING" => ContainerState::Frozen,
        _ => ContainerState::Stopped,
    }
}

/// Runs a tool with a deadline (killed when it passes), returning its stdout.
pub(crate) async fn run(
    tool: &'static str,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<String, BackendError> {
    run_program(Path::new(tool), tool, args, stdin, timeout).await
}

/// [`run`] for a program at a configured path; `tool` names it in errors.
pub(crate) async fn run_program(
    program: &Path,
    tool: &'static str,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<String, BackendError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| BackendError::Spawn { tool, source })?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A guest command that exits early closes the pipe; its exit status tells the story.
        let _ = pipe.write_all(data).await;
        drop(pipe);
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| BackendError::Timeout { tool, secs: timeout.as_secs() })?
        .map_err(|source| BackendError::Spawn { tool, source })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        Err(BackendError::Exit { tool, code: output.status.code(), stderr: failure_text(&stdout, &stderr) })
    }
}

/// What a failed tool said: the ends of its stdout and stderr. Templates print their reason on
/// stdout after pages of progress ("Invalid release …") and lxc-create only a generic line on
/// stderr, so both count; some tools say nothing on stderr when it is not a terminal.
fn failure_text(stdout: &str, stderr: &str) -> String {
    fn tail(text: &str, max: usize) -> &str {
        let text = text.trim();
        let mut start = text.len().saturating_sub(max);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        &text[start..]
    }
    match (tail(stdout, 400), tail(stderr, 400)) {
        ("", "") => "no error message".into(),
        (out, "") => out.into(),
        ("", err) => err.into(),
        (out, err) => format!("{err} (output: {out})"),
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), BackendError> {
    let tmp = path.with_extension("flotilla-tmp");
    let mode = std::fs::metadata(path).ok().map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        if let Some(mode) = mode {
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        BackendError::io(path, e)
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), BackendError> {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| BackendError::io(path, e))
}

/// `/etc/shadow` with root's hash replaced (or added); the other lines as they were.
pub fn shadow_with_root(shadow: &str, hash: &str, days: u64) -> String {
    let line = format!("root:{hash}:{days}:0:99999:7:::");
    let mut replaced = false;
    let mut out: Vec<String> = shadow
        .lines()
        .map(|l| {
            if l.starts_with("root:") {
                replaced = true;
                let mut fields: Vec<&str> = l.split(':').collect();
                if fields.len() >= 3 {
                    let days = days.to_string();
                    fields[1] = hash;
                    fields[2] = &days;
                    return fields.join(":");
                }
                line.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !replaced {
        out.insert(0, line);
    }
    out.join("\n") + "\n"
}

#[async_trait]
impl ContainerBackend for LxcBackend {
    fn exists(&self, name: &str) -> bool {
        self.config_path(name).is_file()
    }

    async fn list(&self) -> Result<Vec<String>, BackendError> {
        let entries = std::fs::read_dir(&self.lxc_path).map_err(|e| BackendError::io(&self.lxc_path, e))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("config").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn create(&self, spec: &ContainerSpec, log: &TaskHandle) -> Result<(), BackendError> {
        let (template, args, timeout): (&str, Vec<&str>, Duration) = match &spec.template {
            OsTemplate::Busybox => ("busybox", vec![], CREATE_BUSYBOX),
            OsTemplate::Debian { release } => ("debian", vec!["-r", release.as_str()], CREATE_OTHER),
            OsTemplate::Named { template, args } => (template, args.iter().map(String::as_str).collect(), CREATE_OTHER),
        };
        let mut full = vec!["-n", spec.name.as_str(), "-t", template];
        if !args.is_empty() {
            full.push("--");
            full.extend(args);
        }
        log.log(format!("lxc-create -n {} -t {template}", spec.name));
        self.lxc("lxc-create", &full, None, timeout).await?;
        self.keep_static_address(&spec.name, &spec.template, log)
    }

    async fn configure(
        &self,
        name: &str,
        net: &GuestNetwork,
        cores: u32,
        memory_mib: u64,
        log: &TaskHandle,
    ) -> Result<(), BackendError> {
        let mut keys = Self::network_keys(net);
        keys.extend(self.limit_keys(Some(cores), Some(memory_mib)));
        // The other version's keys go too: a config written on another host layout must not
        // keep limits LXC would refuse to apply.
        let other: Vec<String> = self
            .limit_keys(Some(cores), Some(memory_mib))
            .iter()
            .map(|(k, _)| {
                if let Some(rest) = k.strip_prefix("lxc.cgroup2.") {
                    format!("lxc.cgroup.{rest}")
                } else {
                    k.replacen("lxc.cgroup.", "lxc.cgroup2.", 1)
                }
            })
            .collect();
        let other: Vec<&str> = other.iter().map(String::as_str).collect();
        self.edit_config(name, &other, &keys)?;
        log.log(format!(
            "config: veth on {} with {}/{} via {}, {cores} core(s), {memory_mib} MiB",
            net.bridge, net.ipv4, net.prefix, net.gateway
        ));
        Ok(())
    }

    async fn state(&self, name: &str) -> Result<ContainerState, BackendError> {
        if !self.exists(name) {
            return Ok(ContainerState::Missing);
        }
        let out = self.lxc("lxc-info", &["-n", name, "-s", "-H"], None, QUICK).await?;
        Ok(parse_state(&out))
    }

    async fn start(&self, name: &str, log: &TaskHandle) -> Result<(), BackendError> {
        log.log(format!("lxc-start -n {name}"));
        self.lxc("lxc-start", &["-n", name], None, QUICK).await?;
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            if self.state(name).await? == ContainerState::Running {
                log.log(format!("{name} is running"));
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::Timeout { tool: "lxc-start", secs: START_WAIT.as_secs() });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(&self, name: &str, timeout: Duration, log: &TaskHandle) -> Result<(), BackendError> {
        // A plain `lxc-stop` can wait forever (busybox's init ignores the halt signal here):
        // `-t` kills after the timeout, and `-k` is the fallback if even that fails.
        let secs = timeout.as_secs().max(1).to_string();
        log.log(format!("lxc-stop -n {name} -t {secs}"));
        let graceful = self.lxc("lxc-stop", &["-n", name, "-t", &secs], None, timeout + Duration::from_secs(15)).await;
        if let Err(e) = graceful {
            log.log(format!("clean shutdown failed ({e}); killing"));
        }
        if self.state(name).await? != ContainerState::Stopped {
            self.kill(name, log).await?;
        }
        log.log(format!("{name} is stopped"));
        Ok(())
    }

    async fn kill(&self, name: &str, log: &TaskHandle) -> Result<(), BackendError> {
        log.log(format!("lxc-stop -n {name} -k"));
        self.lxc("lxc-stop", &["-n", name, "-k"], None, QUICK).await.map(drop)
    }

    async fn destroy(&self, name: &str, log: &TaskHandle) -> Result<(), BackendError> {
        log.log(format!("lxc-destroy -n {name} -s"));
        // -s: with its snapshots, which would otherwise make lxc-destroy refuse.
        self.lxc("lxc-destroy", &["-n", name, "-s"], None, COPY).await.map(drop)
    }

    async fn set_password(&self, name: &str, password: &str, log: &TaskHandle) -> Result<(), BackendError> {
        let line = format!("root:{password}\n");
        log.log("setting root's password (chpasswd)");
        match self.lxc("lxc-attach", &["-n", name, "--", "chpasswd"], Some(line.as_bytes()), QUICK).await {
            Ok(_) => return Ok(()),
            // 127: no chpasswd in the guest (busybox has none); anything else is a real error.
            Err(BackendError::Exit { code: Some(127), .. }) => {}
            Err(e) => return Err(e),
        }
        log.log("no chpasswd in the guest: hashing with mkpasswd -m sha512 and writing /etc/shadow");
        let input = format!("{password}\n");
        let hash = self
            .lxc("lxc-attach", &["-n", name, "--", "mkpasswd", "-m", "sha512"], Some(input.as_bytes()), QUICK)
            .await?;
        let hash = hash.trim();
        if !hash.starts_with("$6$") {
            return Err(BackendError::Invalid(format!("mkpasswd in the guest gave no SHA-512 hash: {hash:?}")));
        }
        let pid = parse_info(&self.info(name).await?).map(|u| u.pid).unwrap_or(0);
        if pid == 0 {
            return Err(BackendError::Invalid(format!("{name} is not running")));
        }
        // Through the init's root: right for every rootfs backing store.
        let shadow = PathBuf::from(format!("/proc/{pid}/root/etc/shadow"));
        let old = std::fs::read_to_string(&shadow).unwrap_or_default();
        let days = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() / 86_400)
            .unwrap_or(0);
        let existed = shadow.exists();
        write_atomic(&shadow, shadow_with_root(&old, hash, days).as_bytes())?;
        if !existed {
            set_mode(&shadow, 0o640)?;
        }
        Ok(())
    }

    async fn set_limits(
        &self,
        name: &str,
        cores: Option<u32>,
        memory_mib: Option<u64>,
        live: bool,
        log: &TaskHandle,
    ) -> Result<(), BackendError> {
        let keys = self.limit_keys(cores, memory_mib);
        self.edit_config(name, &[], &keys)?;
        for (k, v) in &keys {
            log.log(format!("config: {k} = {v}"));
        }
        if live {
            for (file, value) in self.cgroups.limits(cores, memory_mib) {
                log.log(format!("lxc-cgroup -n {name} {file} {value}"));
                self.lxc("lxc-cgroup", &["-n", name, file, &value], None, QUICK).await?;
            }
        }
        Ok(())
    }

    async fn cgroup_value(&self, name: &str, file: &str) -> Result<String, BackendError> {
        Ok(self.lxc("lxc-cgroup", &["-n", name, file], None, QUICK).await?.trim().to_string())
    }

    async fn snapshot_create(&self, name: &str, description: &str, log: &TaskHandle) -> Result<String, BackendError> {
        let before = self.snapshot_names(name).await?;
        let comment = tempfile_in(&self.lxc_path, description)?;
        let comment_path = comment.to_string_lossy().into_owned();
        log.log(format!("lxc-snapshot -n {name}"));
        let made = self.lxc("lxc-snapshot", &["-n", name, "-c", &comment_path], None, COPY).await;
        let _ = std::fs::remove_file(&comment);
        made?;
        let after = self.snapshot_names(name).await?;
        let new = after
            .into_iter()
            .find(|s| !before.contains(s))
            .ok_or_else(|| BackendError::Invalid("lxc-snapshot made no new snapshot".into()))?;
        log.log(format!("snapshot {new} taken"));
        Ok(new)
    }

    async fn snapshot_rollback(&self, name: &str, backend_name: &str, log: &TaskHandle) -> Result<(), BackendError> {
        log.log(format!("lxc-snapshot -n {name} -r {backend_name}"));
        self.lxc("lxc-snapshot", &["-n", name, "-r", backend_name], None, COPY).await.map(drop)
    }

    async fn snapshot_delete(&self, name: &str, backend_name: &str, log: &TaskHandle) -> Result<(), BackendError> {
        log.log(format!("lxc-snapshot -n {name} -d {backend_name}"));
        self.lxc("lxc-snapshot", &["-n", name, "-d", backend_name], None, COPY).await.map(drop)
    }

    async fn usage(&self, name: &str) -> Result<Option<RawUsage>, BackendError> {
        if !self.exists(name) {
            return Ok(None);
        }
        Ok(parse_info(&self.info(name).await?))
    }

    async fn disk_used(&self, name: &str) -> Result<u64, BackendError> {
        let rootfs = self.dir(name).join("rootfs");
        let rootfs = rootfs.to_string_lossy().into_owned();
        let out = run("du", &["-sb", &rootfs], None, Duration::from_secs(120)).await?;
        Ok(out.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    async fn grow_disk(&self, _name: &str, disk_gb: u64, log: &TaskHandle) -> Result<(), BackendError> {
        // The dir backing store has no quota: the new size is recorded and reported as
        // disk_max, nothing on the host enforces it.
        log.log(format!("disk: {disk_gb} GB recorded (the dir backend enforces no quota)"));
        Ok(())
    }

    async fn console(&self, name: &str) -> Result<ConsoleEntry, BackendError> {
        if self.state(name).await? != ContainerState::Running {
            return Err(BackendError::Invalid(format!("{name} is not running")));
        }
        // No command: lxc-attach runs root's shell from the guest's own passwd. A clean
        // environment keeps the agent's variables out of the guest.
        let path = self.lxc_path.to_string_lossy().into_owned();
        let argv = [
            "lxc-attach",
            "-P",
            path.as_str(),
            "-n",
            name,
            "--clear-env",
            "-v",
            "TERM=xterm-256color",
            "-v",
            "HOME=/root",
            "-v",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ];
        Ok(ConsoleEntry::Command(argv.iter().map(|a| a.to_string()).collect()))
    }
}

/// A private file holding `text` under `dir` (the snapshot comment `lxc-snapshot -c` reads).
fn tempfile_in(dir: &Path, text: &str) -> Result<PathBuf, BackendError> {
    let path = dir.join(format!(".flotilla-comment-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::write(&path, text).map_err(|e| BackendError::io(&path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_says_what_both_streams_ended_with() {
        assert_eq!(failure_text("", " \n"), "no error message");
        assert_eq!(failure_text("progress\nInvalid release bookworm\n", ""), "progress\nInvalid release bookworm");
        assert_eq!(
            failure_text("Invalid release bookworm\n", "lxc-create: Failed to create container\n"),
            "lxc-create: Failed to create container (output: Invalid release bookworm)"
        );
        // Cut on a character, never inside one.
        let long = "é".repeat(300);
        assert_eq!(failure_text("", &long).chars().count(), 200);
    }

    #[test]
    fn parses_lxc_info() {
        let out = "Name:           t1\nState:          RUNNING\nPID:            4788\nIP:             10.209.0.10\n\
                   CPU use:        2605225\nBlkIO use:      0\nMemory use:     438272\nKMem use:       225280\n\
                   Link:           veth5EzIa6\n TX bytes:      12\n RX bytes:      34\n Total bytes:   46\n";
        let u = parse_info(out).unwrap();
        assert_eq!((u.pid, u.cpu_ns, u.mem_used, u.host_tx, u.host_rx), (4788, 2605225, 438272, 12, 34));
        assert_eq!(u.ipv4.as_deref(), Some("10.209.0.10"));
        assert!(parse_info("Name: t1\nState:          STOPPED\n").is_none());
    }

    #[test]
    fn parses_snapshot_list_and_edits_shadow() {
        let out =
            "snap0 (/var/lib/lxc/t1/snaps) 2026:11:30 21:50:00\nsnap1 (/var/lib/lxc/t1/snaps) 2026:11:30 21:51:00\n";
        assert_eq!(parse_snapshot_list(out), ["snap0", "snap1"]);
        assert!(parse_snapshot_list("No snapshots\n").is_empty());
        assert_eq!(shadow_with_root("", "$6$x$y", 5), "root:$6$x$y:5:0:99999:7:::\n");
        assert_eq!(
            shadow_with_root("daemon:*:1::::::\nroot:!:1:0:99999:7:::\n", "$6$a$b", 9),
            "daemon:*:1::::::\nroot:$6$a$b:9:0:99999:7:::\n"
        );
    }

    #[test]
    fn cgroup_keys_follow_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("memory")).unwrap();
        std::fs::write(dir.path().join("memory/memory.limit_in_bytes"), "").unwrap();
        let hybrid = CgroupLayout::detect_in(dir.path());
        assert_eq!(hybrid, CgroupLayout { memory: CgroupVersion::V1, cpu: CgroupVersion::V2 });
        let limits = hybrid.limits(Some(2), Some(256));
        assert_eq!(limits, [("cpu.max", "200000 100000".to_string()), ("memory.limit_in_bytes", "268435456".into())]);
        assert_eq!(hybrid.config_key("memory.limit_in_bytes"), "lxc.cgroup.memory.limit_in_bytes");
        assert_eq!(hybrid.config_key("cpu.max"), "lxc.cgroup2.cpu.max");
    }
}
