//! The real `socket.io-client` v4 under Node, as the VPS API's Socket.IO test and the fan-out
//! benchmark drive it: where its modules are (installed once into a cache outside the
//! repository) and where the JS clients of `tests/js/` live.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A JS client of `tests/js/` by file name.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js").join(name)
}

/// Runs `cmd`, killing it after `limit`; returns whether it succeeded and its stderr.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Result<(), String> {
    let mut child =
        cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return if status.success() { Ok(()) } else { Err(format!("{cmd:?}: {status}: {err}")) };
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} took longer than {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A directory whose `node_modules` holds `socket.io-client@4`, installed on first use into a
/// cache outside the repository (later runs reuse it).
pub fn socket_io_client() -> Result<PathBuf, String> {
    for tool in ["node", "npm"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        if !found {
            return Err(format!("`{tool}` not installed (apt-get install -y nodejs npm)"));
        }
    }
    let home = std::env::var_os("HOME").ok_or("no $HOME for the npm cache dir")?;
    let dir = PathBuf::from(home).join(".cache/flotilla/node");
    if dir.join("node_modules/socket.io-client/package.json").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut npm = Command::new("npm");
    npm.args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
        .arg(&dir)
        .arg("socket.io-client@4");
    run_bounded(npm, Duration::from_secs(300)).map_err(|e| format!("npm install socket.io-client@4: {e}"))?;
    Ok(dir)
}
