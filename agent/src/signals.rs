//! Process signals of the Flotilla binaries: SIGINT and SIGTERM stop them gracefully, SIGHUP
//! reloads their configuration (`systemctl reload`) without dropping links.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Registers for SIGHUP. Call it early: until a handler exists, SIGHUP's default action ends
/// the process. `None` if the handler cannot be installed (reloads then end the process).
pub fn hangup() -> Option<Signal> {
    signal(SignalKind::hangup()).ok()
}

/// Resolves at the first SIGINT or SIGTERM.
pub async fn stopped() {
    let term = signal(SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves at the first SIGINT or SIGTERM, calling `reload` at every SIGHUP meanwhile.
pub async fn stopped_reloading(hup: Option<Signal>, mut reload: impl FnMut()) {
    let Some(mut hup) = hup else { return stopped().await };
    let stop = stopped();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            Some(()) = hup.recv() => reload(),
        }
    }
}
