//! The web console of a guest: a shell under a pseudo-terminal, relayed over a link stream.
//!
//! The controller opens one bi-stream per console (`CONSOLE_OPEN`); after the answer both ends
//! exchange [`ConsoleFrame`]s on it. The shell is the backend's console command (`lxc-attach`
//! for LXC) run under a pty of this host, so the guest needs no sshd and no network.

use std::sync::atomic::{AtomicUsize, Ordering};

use flotilla_protocol::containers::{ConsoleAccess, ConsoleFrame, ConsoleOpen};
use flotilla_protocol::io::{forward_console_frames, write_console_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{validate_name, ConsoleEntry, ContainersDriver, ContainersError};

/// Consoles open at once on one host; more are refused (each holds a process and a pty).
pub const MAX_CONSOLES: usize = 32;

/// Bytes of terminal output sent per frame at most.
const CHUNK: usize = 16 * 1024;

/// Consoles open now, across the driver.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// A shell running under a pty, ready to be relayed.
pub struct ConsoleSession {
    pty: pty_process::Pty,
    child: tokio::process::Child,
    container: String,
    _slot: Slot,
}

impl std::fmt::Debug for ConsoleSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSession").field("container", &self.container).field("pid", &self.child.id()).finish()
    }
}

/// One of the [`MAX_CONSOLES`] places, given back on drop.
#[derive(Debug)]
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        OPEN.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_CONSOLES).then_some(n + 1)).ok()?;
        Some(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ContainersDriver {
    /// `CONSOLE_ACCESS`: how the console of a managed, running container is reached.
    pub async fn console_access(&self, name: &str) -> Result<ConsoleAccess, ContainersError> {
        self.managed(name)?;
        Ok(match self.backend.console(name).await? {
            ConsoleEntry::Command(_) => ConsoleAccess::Terminal,
            ConsoleEntry::Url(url) => ConsoleAccess::Url(url),
        })
    }

    /// `CONSOLE_OPEN`: starts the guest's shell under a pty of `cols` × `rows`.
    pub async fn open_console(&self, req: &ConsoleOpen) -> Result<ConsoleSession, ContainersError> {
        validate_name(&req.name)?;
        self.managed(&req.name)?;
        let argv = match self.backend.console(&req.name).await? {
            ConsoleEntry::Command(argv) if !argv.is_empty() => argv,
            ConsoleEntry::Command(_) => {
                return Err(ContainersError::Refused("the backend gave no console command".into()))
            }
            ConsoleEntry::Url(_) => {
                return Err(ContainersError::Refused(format!(
                    "{}: this backend serves its own web console (ask for its URL)",
                    req.name
                )))
            }
        };
        let slot = Slot::take().ok_or_else(|| {
            ContainersError::Refused(format!("{MAX_CONSOLES} consoles are open on this host already"))
        })?;
        let spawn = || -> Result<(pty_process::Pty, tokio::process::Child), pty_process::Error> {
            let (pty, pts) = pty_process::open()?;
            pty.resize(pty_process::Size::new(req.rows.max(1), req.cols.max(1)))?;
            let child = pty_process::Command::new(&argv[0]).args(&argv[1..]).kill_on_drop(true).spawn(pts)?;
            Ok((pty, child))
        };
        let (pty, child) =
            spawn().map_err(|e| ContainersError::Refused(format!("cannot start the console of {}: {e}", req.name)))?;
        tracing::info!(container = %req.name, "console opened");
        Ok(ConsoleSession { pty, child, container: req.name.clone(), _slot: slot })
    }
}

impl ConsoleSession {
    /// Relays until the shell ends (its exit code is the last frame) or the controller finishes
    /// its half (the shell is killed).
    pub async fn relay<W, R>(self, mut send: W, recv: R)
    where
        W: AsyncWrite + Unpin + Send,
        R: AsyncRead + Unpin + Send + 'static,
    {
        let ConsoleSession { pty, mut child, container, _slot } = self;
        let (mut from_pty, mut to_pty) = pty.into_split();
        // Frames are read in their own task: a half-read frame must not be lost to `select!`.
        let (tx, mut frames) = mpsc::channel::<ConsoleFrame>(64);
        let reader = tokio::spawn(forward_console_frames(recv, tx));
        let mut buf = vec![0u8; CHUNK];
        let mut viewer_gone = false;
        loop {
            tokio::select! {
                read = from_pty.read(&mut buf) => match read {
                    // EIO is how a pty master reports that the last slave closed.
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if write_console_frame(&mut send, &ConsoleFrame::Data(buf[..n].to_vec())).await.is_err() {
                            viewer_gone = true;
                            break;
                        }
                    }
                },
                frame = frames.recv() => match frame {
                    Some(ConsoleFrame::Data(bytes)) => {
                        if to_pty.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Some(ConsoleFrame::Resize { cols, rows }) => {
                        let _ = to_pty.resize(pty_process::Size::new(rows.max(1), cols.max(1)));
                    }
                    Some(ConsoleFrame::Exit(_)) => {}
                    None => {
                        viewer_gone = true;
                        break;
                    }
                },
            }
        }
        reader.abort();
        let code = if viewer_gone {
            let _ = child.kill().await;
            None
        } else {
            // The pty closed: the shell is ending; give it a moment to be reaped.
            match tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await {
                Ok(Ok(status)) => status.code(),
                _ => {
                    let _ = child.kill().await;
                    None
                }
            }
        };
        if !viewer_gone {
            let _ = write_console_frame(&mut send, &ConsoleFrame::Exit(code)).await;
        }
        let _ = send.shutdown().await;
        tracing::info!(container = %container, exit = ?code, "console closed");
    }
}
