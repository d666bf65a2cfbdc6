//! Pushing a node's desired proxy state to its agent, and fanning a change out to many nodes at
//! once with a deadline: one slow or offline node never holds up the others. An offline node
//! keeps the change in the store and gets it when it reconnects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::codec;
use flotilla_protocol::proxy::ApplyReport;
use flotilla_protocol::rpc::RequestKind;
use flotilla_protocol::wireguard::WgApplyReport;
use flotilla_protocol::NodeId;

use super::{Fleet, FleetError};

/// How long a push may take: a core restart (new inbound) or thousands of users take seconds.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Pushes of one fan-out in flight at once.
pub const PUSHES_IN_FLIGHT: usize = 64;

/// What happened to a change on one node.
#[derive(Debug, Clone)]
pub enum PushOutcome {
    /// The agent applied it; `failures` lists what its core refused.
    Applied(ApplyReport),
    /// The node is offline; the change is stored and converges when it reconnects.
    Queued,
    /// The agent could not be reached in time or failed; the change is stored.
    Failed(String),
}

impl PushOutcome {
    /// The API's per-node status word.
    pub fn status(&self) -> &'static str {
        match self {
            PushOutcome::Applied(r) if r.failures.is_empty() => "applied",
            PushOutcome::Applied(_) => "partial",
            PushOutcome::Queued => "queued",
            PushOutcome::Failed(_) => "failed",
        }
    }

    /// Errors to report for this node.
    pub fn errors(&self) -> Vec<String> {
        match self {
            PushOutcome::Applied(r) => r.failures.iter().map(|(what, why)| format!("{what}: {why}")).collect(),
            PushOutcome::Queued => vec![],
            PushOutcome::Failed(e) => vec![e.clone()],
        }
    }
}

/// What happened to a WireGuard change on one node.
#[derive(Debug, Clone)]
pub enum WgPushOutcome {
    /// The agent applied it; `failures` lists what the host refused.
    Applied(WgApplyReport),
    /// The node is offline (or does not drive WireGuard yet); the change is stored.
    Queued,
    /// The agent could not be reached in time or failed; the change is stored.
    Failed(String),
}

impl WgPushOutcome {
    /// One word for logs.
    pub fn status(&self) -> &'static str {
        match self {
            WgPushOutcome::Applied(r) if r.failures.is_empty() => "applied",
            WgPushOutcome::Applied(_) => "partial",
            WgPushOutcome::Queued => "queued",
            WgPushOutcome::Failed(_) => "failed",
        }
    }

    /// Errors to report.
    pub fn errors(&self) -> Vec<String> {
        match self {
            WgPushOutcome::Applied(r) => r.failures.iter().map(|(what, why)| format!("{what}: {why}")).collect(),
            WgPushOutcome::Queued => vec![],
            WgPushOutcome::Failed(e) => vec![e.clone()],
        }
    }
}

impl Fleet {
    fn wg_push_lock(&self, node: NodeId) -> Arc<tokio::sync::Mutex<()>> {
        self.wg_push_locks.lock().unwrap_or_else(|p| p.into_inner()).entry(node).or_default().clone()
    }

    /// Sends the node's desired WireGuard state to its agent and waits for it to apply. Pushes
    /// to a node are serialised and each reads the state afresh; a push that waited behind
    /// another whose state already covered its change finds nothing to do on the agent.
    pub async fn push_wireguard(self: &Arc<Self>, node: NodeId) -> WgPushOutcome {
        let live = self.live(node);
        if !live.connected || !live.wireguard_capable {
            return WgPushOutcome::Queued;
        }
        let lock = self.wg_push_lock(node);
        let _serial = lock.lock().await;
        let store = self.store.clone();
        let encoded = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
            let state = store.wg_state(node).map_err(|e| e.to_string())?;
            codec::encode_body(&state).map_err(|e| format!("WireGuard state too large to send: {e}"))
        })
        .await;
        let body = match encoded {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => return WgPushOutcome::Failed(e),
            Err(e) => return WgPushOutcome::Failed(e.to_string()),
        };
        match self.call(node, RequestKind::APPLY_WIREGUARD, body, PUSH_TIMEOUT).await {
            Ok(answer) => match codec::decode_from::<WgApplyReport>(&answer) {
                Ok(report) => {
                    tracing::debug!(node_id = %node, revision = report.revision, added = report.peers_added,
                        removed = report.peers_removed, "WireGuard state applied");
                    WgPushOutcome::Applied(report)
                }
                Err(e) => WgPushOutcome::Failed(format!("unreadable answer: {e}")),
            },
            Err(FleetError::NotConnected(_)) => WgPushOutcome::Queued,
            Err(e) => WgPushOutcome::Failed(e.to_string()),
        }
    }

    fn push_lock(&self, node: NodeId) -> Arc<tokio::sync::Mutex<()>> {
        self.push_locks.lock().unwrap_or_else(|p| p.into_inner()).entry(node).or_default().clone()
    }

    /// Sends the node's current desired proxy state to its agent and waits for it to apply.
    /// Pushes to one node are serialised, and each reads the state afresh, so the agent sees
    /// revisions in order.
    pub async fn push_proxy_state(self: &Arc<Self>, node: NodeId) -> PushOutcome {
        if !self.live(node).connected {
            return PushOutcome::Queued;
        }
        let lock = self.push_lock(node);
        let _serial = lock.lock().await;
        let store = self.store.clone();
        // Agents that keep client lifecycles get them with the state; older ones the state alone.
        let lifecycle = self.live(node).lifecycle_capable;
        let encoded = tokio::task::spawn_blocking(move || -> Result<(RequestKind, Vec<u8>), String> {
            let too_large = |e: flotilla_protocol::CodecError| format!("proxy state too large to send: {e}");
            if lifecycle {
                let desired = store.desired_users(node).map_err(|e| e.to_string())?;
                Ok((RequestKind::APPLY_USERS, codec::encode_body(&desired).map_err(too_large)?))
            } else {
                let state = store.proxy_state(node).map_err(|e| e.to_string())?;
                Ok((RequestKind::APPLY_PROXY_STATE, codec::encode_body(&state).map_err(too_large)?))
            }
        })
        .await;
        let (kind, body) = match encoded {
            Ok(Ok(encoded)) => encoded,
            Ok(Err(e)) => return PushOutcome::Failed(e),
            Err(e) => return PushOutcome::Failed(e.to_string()),
        };
        match self.call(node, kind, body, PUSH_TIMEOUT).await {
            Ok(answer) => match codec::decode_from::<ApplyReport>(&answer) {
                Ok(report) => {
                    tracing::debug!(node_id = %node, revision = report.revision, added = report.users_added,
                        removed = report.users_removed, "proxy state applied");
                    PushOutcome::Applied(report)
                }
                Err(e) => PushOutcome::Failed(format!("unreadable answer: {e}")),
            },
            Err(FleetError::NotConnected(_)) => PushOutcome::Queued,
            Err(e) => PushOutcome::Failed(e.to_string()),
        }
    }

    /// Pushes to every node in `nodes` concurrently, at most [`PUSHES_IN_FLIGHT`] at a time: each
    /// push reads the store, and thousands at once would starve the sessions' own store writes
    /// (traffic commits) and with them their heartbeats.
    pub async fn push_many(self: &Arc<Self>, nodes: &[NodeId]) -> HashMap<NodeId, PushOutcome> {
        let mut tasks = tokio::task::JoinSet::new();
        let limit = Arc::new(tokio::sync::Semaphore::new(PUSHES_IN_FLIGHT));
        for &node in nodes {
            let (fleet, limit) = (self.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                (node, fleet.push_proxy_state(node).await)
            });
        }
        let mut out = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((node, outcome)) = joined {
                out.insert(node, outcome);
            }
        }
        for &node in nodes {
            out.entry(node).or_insert_with(|| PushOutcome::Failed("push task failed".into()));
        }
        out
    }
}
