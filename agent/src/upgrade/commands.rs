//! The host commands self-upgrade runs (dpkg, systemctl, systemd-run), behind a trait so tests can
//! stand in for them.

use std::process::{Command, Stdio};

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output followed by its standard error.
    pub output: String,
}

impl CommandOutput {
    /// The last `n` non-empty lines of the output, joined by " | ": enough of dpkg's chatter to
    /// say why it failed, short enough for an outcome's reason.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.output.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(n)..].join(" | ");
        if tail.is_empty() {
            "no output".into()
        } else {
            tail
        }
    }
}

/// Runs a program to completion (blocking).
pub trait CommandRunner: Send + Sync {
    /// Runs `program` with `args`; a program that cannot be started counts as failed.
    fn run(&self, program: &str, args: &[&str]) -> CommandOutput;
}

/// Runs the real programs, found on `PATH`, with no input.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, program: &str, args: &[&str]) -> CommandOutput {
        let output = Command::new(program)
            .args(args)
            // dpkg must never stop to ask: maintainer scripts and debconf take their defaults.
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output();
        match output {
            Ok(out) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                CommandOutput { success: out.status.success(), output: text }
            }
            Err(e) => CommandOutput { success: false, output: format!("cannot run {program}: {e}") },
        }
    }
}

/// Whether `name` is an executable file in one of `PATH`'s directories.
pub fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path)
        .any(|dir| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let out = CommandOutput { success: false, output: "a\n\nb\n  c  \nd\n".into() };
        assert_eq!(out.tail(2), "c | d");
        assert_eq!(out.tail(10), "a | b | c | d");
        assert_eq!(CommandOutput { success: false, output: "\n".into() }.tail(3), "no output");
    }

    #[test]
    fn system_runner_reports_exit_and_output() {
        let ok = SystemRunner.run("sh", &["-c", "echo out; echo err >&2"]);
        assert!(ok.success);
        assert_eq!(ok.output, "out\nerr\n");
        assert!(!SystemRunner.run("sh", &["-c", "exit 3"]).success);
        let missing = SystemRunner.run("/nonexistent/flotilla-test", &[]);
        assert!(!missing.success && missing.output.starts_with("cannot run"));
    }
}
