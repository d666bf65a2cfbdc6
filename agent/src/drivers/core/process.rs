//! The core process (Xray, v2ray or sing-box) as a supervised child: started with its config
//! file, its output kept in a bounded ring of [`LogLine`]s, restarted with backoff whenever it
//! exits, until [`CoreProcess::stop`].
//!
//! One task per core owns the child and runs a small loop: start → wait for an exit or a command
//! → (after an exit) wait out the [`RestartSchedule`] delay → start again. The handle only sends
//! commands and reads the shared status and log ring.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_protocol::proxy::{CoreFlavor, LogLevel, LogLine};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::link::backoff::Backoff;

/// Lines kept by default.
pub const LOG_CAPACITY: usize = 1000;
/// A child that ran this long counts as healthy: the backoff starts over and its predecessor's
/// error is no longer reported.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// Between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long to wait for the rest of a dead child's output.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Longest log line kept (bytes); the rest is cut.
const MAX_LINE: usize = 4096;
/// Deadline of `version` and config-check runs.
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// Restart delays of a crashing core: 0.5 s doubling to a 30 s cap, and back to 0.5 s once a
/// child has run [`HEALTHY_AFTER`]. Pure; the supervisor feeds it how long each child ran.
#[derive(Debug, Clone)]
pub struct RestartSchedule {
    backoff: Backoff,
}

impl Default for RestartSchedule {
    fn default() -> Self {
        RestartSchedule { backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)) }
    }
}

impl RestartSchedule {
    /// Delay before the next start, after a child that ran for `ran_for` exited (or failed to
    /// start: `Duration::ZERO`).
    pub fn after_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= HEALTHY_AFTER {
            self.backoff.reset();
        }
        // No jitter (unit 1.0 = the full ceiling): one local process has nobody to spread out from.
        self.backoff.next_delay(1.0)
    }

    /// Start over (an explicit restart is not a crash).
    pub fn reset(&mut self) {
        self.backoff.reset();
    }
}

/// Severity of one line of core output. v2ray/Xray write `2026/11/30 14:00:00 [Warning] …`,
/// sing-box `+0000 2026-11-30 14:00:00 WARN …` (or `FATAL[0000] …`); Go panics and
/// `Failed to start: …` are errors; anything else (access log, banners) is info.
pub fn parse_level(line: &str) -> LogLevel {
    for token in line.split_whitespace().take(4) {
        let word = match token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            Some(inner) => inner.to_ascii_uppercase(),
            // sing-box: bare upper-case names, possibly followed by `[0000]`.
            None => token.split('[').next().unwrap_or_default().to_string(),
        };
        match word.as_str() {
            "DEBUG" | "TRACE" => return LogLevel::Debug,
            "INFO" => return LogLevel::Info,
            "WARNING" | "WARN" => return LogLevel::Warning,
            "ERROR" | "FATAL" | "PANIC" => return LogLevel::Error,
            _ => {}
        }
    }
    let errorish = ["panic:", "fatal error:", "Failed to start"];
    if errorish.iter().any(|p| line.starts_with(p)) {
        LogLevel::Error
    } else {
        LogLevel::Info
    }
}

/// Removes ANSI colour sequences (`ESC [ … letter`), which sing-box may emit.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Bounded ring of captured lines, plus the latest error line of the current child.
#[derive(Debug)]
struct LogRing {
    lines: VecDeque<LogLine>,
    capacity: usize,
    last_error_line: Option<String>,
}

impl LogRing {
    fn new(capacity: usize) -> Self {
        LogRing { lines: VecDeque::with_capacity(capacity.min(1024)), capacity, last_error_line: None }
    }

    fn push(&mut self, raw: &str, at_ms: u64) {
        let mut text = strip_ansi(raw.trim_end());
        if text.is_empty() {
            return;
        }
        if text.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let level = parse_level(&text);
        if level == LogLevel::Error {
            self.last_error_line = Some(text.clone());
        }
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(LogLine { at_ms, level, text });
    }

    /// The last `count` lines at `min_level` or above, oldest first.
    fn tail(&self, count: usize, min_level: LogLevel) -> Vec<LogLine> {
        let mut out: Vec<LogLine> =
            self.lines.iter().rev().filter(|l| l.level >= min_level).take(count).cloned().collect();
        out.reverse();
        out
    }
}

#[derive(Debug, Default)]
struct Status {
    started_at: Option<Instant>,
    pid: Option<u32>,
    generation: u64,
    last_error: Option<String>,
    stopped: bool,
}

#[derive(Debug)]
struct Shared {
    status: Mutex<Status>,
    logs: Mutex<LogRing>,
}

enum Control {
    Restart(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
}

/// What to run.
#[derive(Debug, Clone)]
struct Launch {
    flavor: CoreFlavor,
    binary: PathBuf,
    config_path: PathBuf,
}

/// Arguments that run a core with a config file.
pub fn run_args(flavor: CoreFlavor, config: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = match flavor {
        // v2ray 4.x has no `run` subcommand.
        CoreFlavor::V2ray => vec!["-config".into()],
        CoreFlavor::Xray | CoreFlavor::SingBox => vec!["run".into(), "-c".into()],
    };
    args.push(config.into());
    args
}

/// A supervised core process. Dropping the handle stops the core too (and the child is killed
/// on drop if the runtime goes away first).
#[derive(Debug)]
pub struct CoreProcess {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Control>,
}

impl CoreProcess {
    /// Starts `binary` with `config_path` (v2ray 4.x: `-config PATH`; Xray and sing-box:
    /// `run -c PATH`) and keeps it running until [`stop`](Self::stop). The first child is
    /// started before this returns (a failure shows in [`last_error`](Self::last_error) and is
    /// retried with backoff). Must be called inside a tokio runtime.
    pub fn spawn(flavor: CoreFlavor, binary: PathBuf, config_path: PathBuf) -> CoreProcess {
        Self::spawn_with_capacity(flavor, binary, config_path, LOG_CAPACITY)
    }

    /// [`spawn`](Self::spawn) keeping `log_capacity` lines.
    pub fn spawn_with_capacity(
        flavor: CoreFlavor,
        binary: PathBuf,
        config_path: PathBuf,
        log_capacity: usize,
    ) -> CoreProcess {
        let shared =
            Arc::new(Shared { status: Mutex::new(Status::default()), logs: Mutex::new(LogRing::new(log_capacity)) });
        let (tx, rx) = mpsc::unbounded_channel();
        let launch = Launch { flavor, binary, config_path };
        // The first child starts before `spawn` returns, so its pid and generation are known.
        let first = start(&launch, &shared);
        tokio::spawn(supervise(launch, shared.clone(), rx, first));
        CoreProcess { shared, commands: tx }
    }

    /// Stops the running child (SIGTERM, SIGKILL after 3 s) and starts a new one now, also when
    /// it was waiting out a backoff. Returns once the new child was started (or failed to).
    pub async fn restart(&self) {
        let (ack, done) = oneshot::channel();
        if self.commands.send(Control::Restart(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Stops the core for good. Returns once the child is gone.
    pub async fn stop(&self) {
        let (ack, done) = oneshot::channel();
        if self.commands.send(Control::Stop(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Start of the current child; `None` when none is running.
    pub fn started_at(&self) -> Option<Instant> {
        self.shared.status.lock().unwrap().started_at
    }

    /// Number of children started so far: a caller that sees it change re-applies its users.
    pub fn generation(&self) -> u64 {
        self.shared.status.lock().unwrap().generation
    }

    /// Process id of the current child; `None` when none is running.
    pub fn pid(&self) -> Option<u32> {
        self.shared.status.lock().unwrap().pid
    }

    pub fn is_running(&self) -> bool {
        self.started_at().is_some()
    }

    /// Whether [`stop`](Self::stop) has completed.
    pub fn is_stopped(&self) -> bool {
        self.shared.status.lock().unwrap().stopped
    }

    /// Why the last child ended or could not start (exit status and its last error line), until
    /// a child has been running for [`HEALTHY_AFTER`].
    pub fn last_error(&self) -> Option<String> {
        let status = self.shared.status.lock().unwrap();
        match status.started_at {
            Some(t) if t.elapsed() >= HEALTHY_AFTER => None,
            _ => status.last_error.clone(),
        }
    }

    /// The last `count` captured lines at `min_level` or above, oldest first.
    pub fn logs(&self, count: usize, min_level: LogLevel) -> Vec<LogLine> {
        self.shared.logs.lock().unwrap().tail(count, min_level)
    }
}

/// A started child and the tasks copying its output into the ring.
struct Running {
    child: Child,
    started: Instant,
    readers: Vec<JoinHandle<()>>,
}

fn start(launch: &Launch, shared: &Arc<Shared>) -> Result<Running, String> {
    let mut command = Command::new(&launch.binary);
    command
        .args(run_args(launch.flavor, &launch.config_path))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", launch.binary.display()))?;
    let mut readers = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(copy_lines(out, shared.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(copy_lines(err, shared.clone())));
    }
    let started = Instant::now();
    shared.logs.lock().unwrap().last_error_line = None;
    let generation = {
        let mut status = shared.status.lock().unwrap();
        status.started_at = Some(started);
        status.pid = child.id();
        status.generation += 1;
        status.generation
    };
    tracing::info!(core = launch.flavor.as_str(), pid = child.id(), generation, "core started");
    Ok(Running { child, started, readers })
}

async fn copy_lines(stream: impl AsyncRead + Unpin, shared: Arc<Shared>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => shared.logs.lock().unwrap().push(&String::from_utf8_lossy(&buf), now_ms()),
        }
    }
}

impl Running {
    /// SIGTERM, then SIGKILL after [`TERM_GRACE`]; reaps the child and drains its output.
    async fn terminate(mut self) {
        if let Ok(None) = self.child.try_wait() {
            let termed = match self.child.id() {
                // tokio can only SIGKILL; without a libc/rustix-process dependency, `kill` sends
                // the polite signal.
                Some(pid) => Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await
                    .is_ok_and(|s| s.success()),
                None => false,
            };
            let exited = termed && tokio::time::timeout(TERM_GRACE, self.child.wait()).await.is_ok();
            if !exited {
                let _ = self.child.kill().await;
            }
        }
        self.drain().await;
    }

    /// Waits briefly for the readers to reach end of output (a grandchild may hold the pipes).
    async fn drain(&mut self) {
        for reader in self.readers.drain(..) {
            let abort = reader.abort_handle();
            if tokio::time::timeout(DRAIN_GRACE, reader).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// Records that no child is running.
fn mark_gone(shared: &Shared) {
    let mut status = shared.status.lock().unwrap();
    status.started_at = None;
    status.pid = None;
}

fn mark_stopped(shared: &Shared) {
    mark_gone(shared);
    shared.status.lock().unwrap().stopped = true;
}

/// The supervisor loop; ends on `Stop` or when the handle is dropped.
async fn supervise(
    launch: Launch,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Control>,
    first: Result<Running, String>,
) {
    let core = launch.flavor.as_str();
    let mut schedule = RestartSchedule::default();
    // Restart requests answered once the next child has been started.
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut started = first;
    loop {
        for ack in waiting.drain(..) {
            let _ = ack.send(());
        }
        let delay = match started {
            Err(e) => {
                tracing::warn!(core, error = %e, "core failed to start");
                shared.status.lock().unwrap().last_error = Some(e);
                schedule.after_exit(Duration::ZERO)
            }
            Ok(mut running) => {
                let exit = tokio::select! {
                    exit = running.child.wait() => exit,
                    command = commands.recv() => {
                        running.terminate().await;
                        mark_gone(&shared);
                        match command {
                            Some(Control::Restart(ack)) => {
                                tracing::info!(core, "core restarting on request");
                                waiting.push(ack);
                                schedule.reset();
                                started = start(&launch, &shared);
                                continue;
                            }
                            Some(Control::Stop(ack)) => {
                                mark_stopped(&shared);
                                tracing::info!(core, "core stopped");
                                let _ = ack.send(());
                                return;
                            }
                            None => {
                                mark_stopped(&shared);
                                return;
                            }
                        }
                    }
                };
                mark_gone(&shared);
                let ran_for = running.started.elapsed();
                running.drain().await;
                let error = describe_exit(core, exit, shared.logs.lock().unwrap().last_error_line.take());
                tracing::warn!(core, ran_for = ?ran_for, error = %error, "core exited");
                shared.status.lock().unwrap().last_error = Some(error);
                schedule.after_exit(ran_for)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            command = commands.recv() => match command {
                Some(Control::Restart(ack)) => {
                    waiting.push(ack);
                    schedule.reset();
                }
                Some(Control::Stop(ack)) => {
                    mark_stopped(&shared);
                    let _ = ack.send(());
                    return;
                }
                None => {
                    mark_stopped(&shared);
                    return;
                }
            }
        }
        started = start(&launch, &shared);
    }
}

fn describe_exit(core: &str, exit: std::io::Result<ExitStatus>, last_error_line: Option<String>) -> String {
    let mut text = match exit {
        Ok(status) => format!("{core} exited ({status})"),
        Err(e) => format!("{core}: waiting for the process failed: {e}"),
    };
    if let Some(line) = last_error_line {
        text.push_str(": ");
        text.push_str(&line);
    }
    text
}

/// Runs `binary args…` with a deadline; returns (success, stdout + stderr).
async fn run_tool(binary: &Path, args: &[&OsStr]) -> Result<(bool, String), String> {
    let output = Command::new(binary).args(args).stdin(Stdio::null()).kill_on_drop(true).output();
    match tokio::time::timeout(TOOL_TIMEOUT, output).await {
        Err(_) => Err(format!("{} timed out", binary.display())),
        Ok(Err(e)) => Err(format!("cannot run {}: {e}", binary.display())),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok((out.status.success(), text))
        }
    }
}

/// First `N.N…` token of the first non-empty line (`V2Ray 4.34.0 (user) …` → `4.34.0`,
/// `Xray 26.1.13 (…)` → `26.1.13`, `sing-box version 1.14.4` → `1.14.4`).
pub fn parse_version(output: &str) -> Option<String> {
    let line = output.lines().map(str::trim).find(|l| !l.is_empty())?;
    line.split_whitespace()
        .map(|t| t.strip_prefix('v').unwrap_or(t).trim_end_matches([',', ';', ')']))
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()) && t.contains('.'))
        .map(str::to_string)
}

/// The core's version (`v2ray -version`, `xray version`, `sing-box version`), `None` if the
/// binary cannot be run or says nothing recognisable.
pub async fn detect_version(flavor: CoreFlavor, binary: &Path) -> Option<String> {
    let arg = match flavor {
        CoreFlavor::V2ray => "-version",
        CoreFlavor::Xray | CoreFlavor::SingBox => "version",
    };
    let (_, text) = run_tool(binary, &[OsStr::new(arg)]).await.ok()?;
    parse_version(&text)
}

/// The flavor a core binary's file name says (`xray`, `v2ray`, `sing-box`).
pub fn flavor_of(name: &str) -> Option<CoreFlavor> {
    let name = name.to_ascii_lowercase();
    if name.contains("xray") {
        Some(CoreFlavor::Xray)
    } else if name.contains("v2ray") {
        Some(CoreFlavor::V2ray)
    } else if name.contains("sing-box") || name.contains("singbox") {
        Some(CoreFlavor::SingBox)
    } else {
        None
    }
}

/// Binary names [`find_on_path`] tries by default, in order of preference.
pub const CORE_NAMES: [&str; 3] = ["xray", "v2ray", "sing-box"];

/// The first of `names` (in order; see [`CORE_NAMES`]) that is an executable file in a `$PATH`
/// directory, with its flavor.
pub fn find_on_path(names: &[&str]) -> Option<(CoreFlavor, PathBuf)> {
    let path = std::env::var_os("PATH")?;
    find_in_dirs(names, &std::env::split_paths(&path).collect::<Vec<_>>())
}

fn find_in_dirs(names: &[&str], dirs: &[PathBuf]) -> Option<(CoreFlavor, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    names.iter().find_map(|name| {
        let flavor = flavor_of(name)?;
        dirs.iter().map(|dir| dir.join(name)).find_map(|candidate| {
            let meta = std::fs::metadata(&candidate).ok()?;
            (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some((flavor, candidate))
        })
    })
}

/// The part of a failed config check worth showing: its error lines (without `panic: `), else
/// its last line.
fn check_error_text(output: &str) -> String {
    let lines: Vec<String> = output.lines().map(|l| strip_ansi(l.trim())).filter(|l| !l.is_empty()).collect();
    let errors: Vec<&str> = lines
        .iter()
        .filter(|l| parse_level(l) == LogLevel::Error)
        .map(|l| l.strip_prefix("panic: ").unwrap_or(l))
        .take(3)
        .collect();
    if !errors.is_empty() {
        errors.join("; ")
    } else {
        lines.last().cloned().unwrap_or_else(|| "config check failed".into())
    }
}

/// Checks a config file without starting the core (v2ray: `-test -config`; Xray:
/// `run -test -c`; sing-box: `check -c`). `Err` holds the core's error text.
pub async fn check_config(flavor: CoreFlavor, binary: &Path, config: &Path) -> Result<(), String> {
    let leading: &[&str] = match flavor {
        CoreFlavor::V2ray => &["-test", "-config"],
        CoreFlavor::Xray => &["run", "-test", "-c"],
        CoreFlavor::SingBox => &["check", "-c"],
    };
    let mut args: Vec<&OsStr> = leading.iter().map(OsStr::new).collect();
    args.push(config.as_os_str());
    match run_tool(binary, &args).await? {
        (true, _) => Ok(()),
        (false, text) => Err(check_error_text(&text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delays_double_to_the_cap_and_reset_after_a_healthy_run() {
        let mut s = RestartSchedule::default();
        let crash = Duration::from_secs(1);
        let delays: Vec<u64> = (0..9).map(|_| s.after_exit(crash).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        // A child that ran 29 s was still crash-looping; one that ran 30 s was healthy.
        assert_eq!(s.after_exit(Duration::from_secs(29)), Duration::from_secs(30));
        assert_eq!(s.after_exit(HEALTHY_AFTER), Duration::from_millis(500));
        assert_eq!(s.after_exit(crash), Duration::from_secs(1));
        s.reset();
        assert_eq!(s.after_exit(crash), Duration::from_millis(500));
    }

    #[test]
    fn levels_of_v2ray_xray_and_sing_box_lines() {
        let cases = [
            ("2026/11/30 14:00:00 [Warning] core: V2Ray 4.34.0 started", LogLevel::Warning),
            ("2026/11/30 14:00:00 [Error] app/proxyman/inbound: connection ends", LogLevel::Error),
            ("2026/11/30 14:00:00 [Debug] x", LogLevel::Debug),
            ("2026/11/30 14:00:00 [Info] v2ray.com/core/main/jsonem: Reading config: ok.json", LogLevel::Info),
            ("2026/11/30 14:00:00 127.0.0.1:5555 accepted tcp:1.1.1.1:443 [in-1 -> direct] email: a@x", LogLevel::Info),
            ("+0000 2026-11-30 14:00:00 WARN inbound/vless[vless-in]: x", LogLevel::Warning),
            ("+0000 2026-11-30 14:00:00 ERROR router: x", LogLevel::Error),
            ("FATAL[0000] decode config at x.json: unknown field", LogLevel::Error),
            ("panic: open /nonexist.json: no such file or directory", LogLevel::Error),
            ("Failed to start: main: failed to load config files", LogLevel::Error),
            ("V2Ray 4.34.0 (user) 20230518-074445 (go1.19.8 linux/amd64)", LogLevel::Info),
            ("this line mentions an error later on", LogLevel::Info),
        ];
        for (line, level) in cases {
            assert_eq!(parse_level(line), level, "{line}");
        }
    }

    #[test]
    fn ring_keeps_the_newest_lines_and_filters_by_level() {
        let mut ring = LogRing::new(3);
        for (i, line) in
            ["a [Info] 1", "a b [Error] 2", "\u{1b}[33mWARN\u{1b}[0m three", "a b [Info] 4", "", "5"].iter().enumerate()
        {
            ring.push(line, i as u64);
        }
        let all: Vec<String> = ring.tail(10, LogLevel::Debug).into_iter().map(|l| l.text).collect();
        assert_eq!(all, ["WARN three", "a b [Info] 4", "5"]);
        let warn = ring.tail(10, LogLevel::Warning);
        assert_eq!(warn.len(), 1);
        assert_eq!((warn[0].level, warn[0].at_ms), (LogLevel::Warning, 2));
        assert_eq!(ring.tail(1, LogLevel::Debug)[0].text, "5");
        assert_eq!(ring.last_error_line.as_deref(), Some("a b [Error] 2"));
        ring.push(&"é".repeat(MAX_LINE), 9);
        assert!(ring.tail(1, LogLevel::Debug)[0].text.len() <= MAX_LINE);
    }

    #[test]
    fn versions_from_each_core() {
        assert_eq!(
            parse_version("V2Ray 4.34.0 (user) 20230518-074445 (go1.19.8 linux/amd64)\nA unified platform").as_deref(),
            Some("4.34.0")
        );
        assert_eq!(
            parse_version("Xray 26.1.13 (Xray, Penetrates Everything.) 7a8b (go1.25 linux/amd64)").as_deref(),
            Some("26.1.13")
        );
        assert_eq!(parse_version("sing-box version 1.14.4\n\nEnvironment: go1.27.3").as_deref(), Some("1.14.4"));
        assert_eq!(parse_version("usage: foo"), None);
    }

    #[test]
    fn check_errors_keep_the_reason() {
        let v2ray = "V2Ray 4.34.0 (user)\nA unified platform for anti-censorship.\n\
                     panic: v2ray.com/core/infra/conf: invalid port range: \"x\"\n\ngoroutine 1 [running]:\n";
        assert_eq!(check_error_text(v2ray), "v2ray.com/core/infra/conf: invalid port range: \"x\"");
        assert_eq!(check_error_text("something odd\nlast words\n"), "last words");
    }

    #[test]
    fn run_args_per_flavor() {
        let p = Path::new("/etc/c.json");
        let args = |f| run_args(f, p).into_iter().map(|a| a.into_string().unwrap()).collect::<Vec<_>>();
        assert_eq!(args(CoreFlavor::V2ray), ["-config", "/etc/c.json"]);
        assert_eq!(args(CoreFlavor::Xray), ["run", "-c", "/etc/c.json"]);
        assert_eq!(args(CoreFlavor::SingBox), ["run", "-c", "/etc/c.json"]);
    }

    #[test]
    fn finds_the_first_preferred_core_in_path_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let put = |dir: &Path, name: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        put(a.path(), "sing-box", 0o755);
        put(b.path(), "v2ray", 0o755);
        put(a.path(), "xray", 0o644); // not executable
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_in_dirs(&CORE_NAMES, &dirs), Some((CoreFlavor::V2ray, b.path().join("v2ray"))));
        assert_eq!(find_in_dirs(&["sing-box"], &dirs), Some((CoreFlavor::SingBox, a.path().join("sing-box"))));
        assert_eq!(find_in_dirs(&["xray"], &dirs), None);
    }
}
