//! Ships user changes made on this host to the controller (`LOCAL_USER_CHANGES`), oldest first,
//! whenever the outbox grows and at the start of every session. An entry leaves the "to send"
//! set once the controller answers that it committed it; it is replayed over pushed states
//! until one contains it (see `drivers::core::users`).

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::rpc::RequestKind;
use flotilla_protocol::users::{LocalChanges, LocalChangesApplied};

use super::call_controller;
use crate::drivers::core::ProxyCore;

/// Entries per request.
const CHUNK: usize = 512;
/// Pause before resending after a failed request.
const RETRY: Duration = Duration::from_secs(3);

/// Runs for the session: ships what is pending now, then whenever the outbox moves.
pub async fn ship(conn: quinn::Connection, core: Arc<dyn ProxyCore>) {
    let mut moved = core.outbox();
    let outbox = match core.outbox_id() {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox id; local user changes stay on this host");
            return;
        }
    };
    loop {
        loop {
            let reader = core.clone();
            let pending = match tokio::task::spawn_blocking(move || reader.pending_changes(0, CHUNK)).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the outbox");
                    break;
                }
                Err(_) => return,
            };
            if pending.is_empty() {
                break;
            }
            let count = pending.len();
            let body = LocalChanges { outbox, changes: pending };
            let answer: Result<LocalChangesApplied, String> =
                call_controller(&conn, RequestKind::LOCAL_USER_CHANGES, &body, Duration::from_secs(30)).await;
            match answer {
                Ok(applied) => {
                    for (id, why) in &applied.refused {
                        tracing::warn!(id, %why, "controller refused a user change made here; its next push wins");
                    }
                    tracing::info!(
                        count,
                        revision = applied.revision,
                        "local user changes committed by the controller"
                    );
                    let writer = core.clone();
                    let (through, revision) = (applied.through, applied.revision);
                    match tokio::task::spawn_blocking(move || writer.changes_committed(through, revision)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "cannot mark user changes committed");
                            tokio::time::sleep(RETRY).await;
                        }
                        Err(_) => return,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot ship local user changes; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        if moved.changed().await.is_err() {
            return;
        }
    }
}
