//! The controller → agent RPC path, with a real controller and a real agent link in-process.

use std::time::Duration;

use flotilla_agent::link::{self, RunSettings};
use flotilla_agent::state::StateStore;
use flotilla_protocol::codec;
use flotilla_protocol::metrics::MetricsSample;
use flotilla_protocol::rpc::{RequestKind, RpcError};

use super::FleetError;
use crate::server::{self, Settings};
use crate::store::NewNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_calls_reach_the_agent_and_unknown_kinds_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_tests(&dir.path().join("controller"));
    // public_addrs is overridden below: the port is known only now.
    settings.fleet.heartbeat_interval = Duration::from_millis(500);
    let running = server::start(settings).await.unwrap();
    let quic = running.quic_addr.to_string();
    let node = running.store.create_node(&NewNode { name: "rpc-1".into(), ..Default::default() }).unwrap();
    let token = running.fleet.issue_join_token(node.id).unwrap();
    let state = StateStore::open(&dir.path().join("agent")).unwrap();
    flotilla_agent::enroll::enroll(&state, &token.token, Some(&quic), false).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(link::run(
        state,
        RunSettings {
            metrics_interval: Duration::from_secs(60),
            controller_override: Some(quic),
            core: None,
            wireguard: None,
        },
        stopped,
    ));

    // Not connected yet (or ever): a clear error, not a hang.
    let ghost = crate::store::NewNode { name: "ghost".into(), ..Default::default() };
    let ghost = running.store.create_node(&ghost).unwrap();
    let err = running.fleet.call(ghost.id, RequestKind::PING, vec![], Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, FleetError::NotConnected(id) if id == ghost.id), "{err}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !running.fleet.live(node.id).connected {
        assert!(tokio::time::Instant::now() < deadline, "agent did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pong = running.fleet.call(node.id, RequestKind::PING, vec![], Duration::from_secs(5)).await.unwrap();
    assert!(pong.is_empty());
    let body = running.fleet.call(node.id, RequestKind::METRICS_NOW, vec![], Duration::from_secs(5)).await.unwrap();
    let sample: MetricsSample = codec::decode_from(&body).unwrap();
    assert!(sample.mem_total > 0 && sample.mem_used <= sample.mem_total, "{sample:?}");
    let err = running.fleet.call(node.id, RequestKind(999), vec![1, 2, 3], Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, FleetError::Rpc { error: RpcError::Unsupported(999), .. }), "{err}");
    // The link survived the unknown request.
    assert!(running.fleet.live(node.id).connected);
    running.fleet.call(node.id, RequestKind::PING, vec![], Duration::from_secs(5)).await.unwrap();

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
    running.shutdown().await;
}
