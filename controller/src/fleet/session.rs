//! One enrolled agent's link: identify it by its certificate, exchange Hello/Welcome, then run
//! heartbeats, ingest events and answer the agent's requests until the link ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_protocol::close::CloseCode;
use flotilla_protocol::codec;
use flotilla_protocol::containers::{ContainerQuery, ContainerSamples, ContainerStatus, TaskInfo};
use flotilla_protocol::enroll::{RenewRequest, Renewed};
use flotilla_protocol::io::{read_message, write_message};
use flotilla_protocol::messages::{Capabilities, EventAck, EventKind, Heartbeat, Hello, Message, Upgrade, Welcome};
use flotilla_protocol::metrics::MetricsSample;
use flotilla_protocol::proxy::{CoreStatus, TrafficBatch};
use flotilla_protocol::rpc::{Request, RequestKind, RpcError, RpcResult};
use flotilla_protocol::upgrade::{AgentRelease, PackageChunk, PackageChunkRequest, MAX_CHUNK};
use flotilla_protocol::users::{LocalChanges, UserEvent};
use flotilla_protocol::wireguard::{WgStatus, WgTrafficBatch};
use flotilla_protocol::{NodeId, PROTOCOL_VERSION};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::tls::serial_of;
use super::{Fleet, HostEvent};
use crate::pki::AgentCsr;

/// Consecutive unanswered heartbeats after which the link is declared dead.
const HEARTBEAT_MISSES: u64 = 3;
/// How often live observations are written through to the store while connected; also how soon
/// a node deleted behind the controller's back (`flotilla-controller node remove`) is dropped.
const PERSIST_EVERY: Duration = Duration::from_secs(30);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

fn close(conn: &quinn::Connection, code: CloseCode, why: &str) {
    conn.close(quinn::VarInt::from_u32(code.0), why.as_bytes());
}

/// Node and serial named by the connection's client certificate, if it is still valid.
fn identify(fleet: &Fleet, conn: &quinn::Connection) -> Option<(NodeId, Vec<u8>)> {
    let chain = conn.peer_identity()?.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    let serial = serial_of(chain.first()?)?;
    let node = fleet.certs.node_of(&serial)?;
    Some((node, serial))
}

pub(super) async fn run(fleet: Arc<Fleet>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let Some((node, serial)) = identify(&fleet, &conn) else {
        tracing::info!(%remote, "link without a valid client certificate refused");
        close(&conn, CloseCode::CERTIFICATE_REQUIRED, "client certificate required");
        return;
    };
    let span = tracing::info_span!("session", node_id = %node, peer = %remote);
    serve(fleet, conn, node, serial).instrument(span).await;
}

async fn serve(fleet: Arc<Fleet>, conn: quinn::Connection, node: NodeId, serial: Vec<u8>) {
    let (mut send, mut recv) = match tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        _ => {
            close(&conn, CloseCode::PROTOCOL_ERROR, "no control stream");
            return;
        }
    };
    let hello: Hello = match tokio::time::timeout(HELLO_TIMEOUT, read_message(&mut recv)).await {
        Ok(Ok(Message::Hello(h))) => h,
        Ok(Ok(other)) => {
            tracing::warn!(message = other.name(), "expected Hello");
            close(&conn, CloseCode::PROTOCOL_ERROR, "expected Hello");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "unreadable Hello");
            close(&conn, CloseCode::PROTOCOL_ERROR, "unreadable Hello");
            return;
        }
        Err(_) => {
            close(&conn, CloseCode::PROTOCOL_ERROR, "no Hello");
            return;
        }
    };
    if hello.protocol.major != PROTOCOL_VERSION.major {
        tracing::warn!(agent_protocol = %hello.protocol, "agent protocol incompatible; asking it to upgrade");
        let upgrade = Upgrade {
            min_version: flotilla_protocol::messages::ProtocolVersion { major: PROTOCOL_VERSION.major, minor: 0 },
            max_version: PROTOCOL_VERSION,
            message: format!(
                "this controller speaks protocol {}.x; agent {} speaks {}",
                PROTOCOL_VERSION.major, hello.agent_version, hello.protocol
            ),
        };
        let _ = write_message(&mut send, Message::Upgrade(upgrade)).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        close(&conn, CloseCode::UPGRADE_REQUIRED, "upgrade required");
        return;
    }
    if hello.node_id != node {
        tracing::warn!(claimed = %hello.node_id, "Hello names another node than the certificate");
        close(&conn, CloseCode::PROTOCOL_ERROR, "node id does not match certificate");
        return;
    }
    let store = fleet.store.clone();
    let record = {
        let serial = serial.clone();
        let facts = hello.facts.clone();
        tokio::task::spawn_blocking(move || -> Result<_, crate::store::StoreError> {
            let Some(record) = store.node(node)? else { return Ok(None) };
            let stale = store.supersede_older_certs(node, &serial)?;
            store.record_node_connected(node, &facts)?;
            Ok(Some((record, stale)))
        })
        .await
    };
    let (record, stale) = match record {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => {
            close(&conn, CloseCode::REVOKED, "node deleted");
            return;
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "store failure while accepting a session");
            close(&conn, CloseCode::SHUTDOWN, "controller store failure");
            return;
        }
        Err(_) => return,
    };
    fleet.certs.revoke(&stale);
    let session = fleet.attach(node, conn.clone(), &hello);
    let welcome = Welcome {
        protocol: PROTOCOL_VERSION,
        controller_version: env!("CARGO_PKG_VERSION").to_string(),
        node_id: node,
        node_name: record.name.clone(),
        heartbeat_interval_ms: fleet.config.heartbeat_interval.as_millis() as u32,
        desired_revision: record.revision,
        server_time_ms: (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64,
    };
    if write_message(&mut send, Message::Welcome(welcome)).await.is_err() {
        fleet.detach(node, session);
        return;
    }
    tracing::info!(agent = %hello.agent_version, host = %hello.facts.hostname, "agent connected");
    fleet.announce(HostEvent::NodeOnline { node });
    // The agent converges on its own from what it stored; it needs a push only when the
    // controller holds a newer (or, after a restore, different) revision.
    if hello.capabilities.contains(Capabilities::PROXY_CORE) && hello.applied_revision != record.revision {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let outcome = fleet.push_proxy_state(node).await;
            tracing::info!(status = outcome.status(), errors = ?outcome.errors(), "desired proxy state pushed on connect");
        });
    }

    // WireGuard: the agent restores its devices itself; a push brings it to the stored state
    // (a no-op for peers that already match).
    if hello.capabilities.contains(Capabilities::WIREGUARD) {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let outcome = fleet.push_wireguard(node).await;
            tracing::info!(status = outcome.status(), errors = ?outcome.errors(), "WireGuard state pushed on connect");
        });
    }

    // The control stream is read by its own task: frame reads are not cancel-safe in a select.
    let (tx, mut rx) = mpsc::channel(64);
    let reader = tokio::spawn(flotilla_protocol::io::forward_messages(recv, tx));
    let requests = tokio::spawn(serve_agent_requests(fleet.clone(), conn.clone(), node));

    let epoch = Instant::now();
    let mut heartbeat = tokio::time::interval(fleet.config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut persist = tokio::time::interval_at(tokio::time::Instant::now() + PERSIST_EVERY, PERSIST_EVERY);
    let (mut sent, mut acked) = (0u64, 0u64);
    let reason = loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                if sent - acked >= HEARTBEAT_MISSES {
                    close(&conn, CloseCode::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                    break "heartbeat timeout".to_string();
                }
                sent += 1;
                let hb = Heartbeat { seq: sent, sent_at_us: epoch.elapsed().as_micros() as u64 };
                if let Err(e) = write_message(&mut send, Message::Heartbeat(hb)).await {
                    break format!("control stream write failed: {e}");
                }
            }
            msg = rx.recv() => match msg {
                Some(Ok(Message::HeartbeatAck(hb))) => {
                    if hb.seq > sent {
                        close(&conn, CloseCode::PROTOCOL_ERROR, "ack for a heartbeat never sent");
                        break "bogus heartbeat ack".to_string();
                    }
                    acked = acked.max(hb.seq);
                    let rtt = epoch.elapsed().saturating_sub(Duration::from_micros(hb.sent_at_us));
                    fleet.update_live(node, session, |live| {
                        live.rtt = Some(rtt);
                        live.last_seen = Some(OffsetDateTime::now_utc());
                    });
                }
                Some(Ok(Message::Event(event))) => match event.kind {
                    EventKind::METRICS_SAMPLE => match codec::decode_from::<MetricsSample>(&event.body) {
                        Ok(sample) => {
                            crate::api::panelica::status::watch_disk(&fleet, node, &sample);
                            fleet.update_live(node, session, |live| {
                                live.previous_metrics = live.metrics.take();
                                live.metrics = Some(sample);
                                live.last_seen = Some(OffsetDateTime::now_utc());
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable metrics sample dropped"),
                    },
                    EventKind::TRAFFIC_BATCH => {
                        let batch = match codec::decode_from::<TrafficBatch>(&event.body) {
                            Ok(b) => b,
                            Err(e) => {
                                close(&conn, CloseCode::PROTOCOL_ERROR, "undecodable traffic batch");
                                break format!("undecodable traffic batch: {e}");
                            }
                        };
                        let store = fleet.store.clone();
                        // Ack only after the commit: an unacked batch is resent and skipped
                        // as a duplicate if it had been committed after all.
                        // The agent reports its core's status before any batch.
                        let per_user = fleet.live(node).core.is_none_or(|c| c.per_user_stats);
                        match tokio::task::spawn_blocking(move || store.apply_traffic_batch(node, &batch, per_user)).await {
                            Ok(Ok(_)) => {
                                if let Err(e) = write_message(&mut send, Message::EventAck(EventAck { seq: event.seq })).await {
                                    break format!("control stream write failed: {e}");
                                }
                            }
                            Ok(Err(e)) => tracing::error!(error = %e, "cannot commit a traffic batch; the agent will resend it"),
                            Err(_) => break "traffic commit task failed".to_string(),
                        }
                    }
                    EventKind::CORE_STATUS => match codec::decode_from::<CoreStatus>(&event.body) {
                        Ok(status) => {
                            let changed = fleet.live(node).core.map(|c| c.cut_off) != Some(status.cut_off.clone());
                            if changed {
                                let store = fleet.store.clone();
                                let cut = status.cut_off.clone();
                                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.set_cut_offs(node, &cut)).await {
                                    tracing::warn!(error = %e, "cannot record cut-off clients");
                                }
                            }
                            fleet.update_live(node, session, |live| {
                                live.core = Some(status);
                                live.core_reported_at = Some(Instant::now());
                                live.last_seen = Some(OffsetDateTime::now_utc());
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable core status dropped"),
                    },
                    EventKind::USER_EVENT => match codec::decode_from::<UserEvent>(&event.body) {
                        Ok(UserEvent::IpLimitExceeded { email, limit, ips, until_ms }) => {
                            tracing::warn!(%email, limit, ?ips, until_ms, "agent disabled a user over its IP limit");
                            fleet.update_live(node, session, |live| {
                                let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
                                live.ip_limited.retain(|_, until| *until > now);
                                live.ip_limited.insert(email.to_lowercase(), until_ms);
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable user event dropped"),
                    },
                    EventKind::WG_TRAFFIC => {
                        let batch = match codec::decode_from::<WgTrafficBatch>(&event.body) {
                            Ok(b) => b,
                            Err(e) => {
                                close(&conn, CloseCode::PROTOCOL_ERROR, "undecodable WireGuard traffic batch");
                                break format!("undecodable WireGuard traffic batch: {e}");
                            }
                        };
                        let store = fleet.store.clone();
                        // Acked only after the commit, like proxy traffic.
                        match tokio::task::spawn_blocking(move || store.apply_wg_traffic_batch(node, &batch)).await {
                            Ok(Ok(_)) => {
                                if let Err(e) = write_message(&mut send, Message::EventAck(EventAck { seq: event.seq })).await {
                                    break format!("control stream write failed: {e}");
                                }
                            }
                            Ok(Err(e)) => tracing::error!(error = %e, "cannot commit a WireGuard traffic batch; the agent will resend it"),
                            Err(_) => break "WireGuard traffic commit task failed".to_string(),
                        }
                    }
                    EventKind::WG_STATUS => match codec::decode_from::<WgStatus>(&event.body) {
                        Ok(status) => {
                            let cut: Vec<_> = status.cut_off.iter().map(|(p, why)| (p.public_key, *why)).collect();
                            fleet.update_live(node, session, |live| {
                                live.wireguard = Some(status);
                                live.last_seen = Some(OffsetDateTime::now_utc());
                            });
                            if !cut.is_empty() {
                                let store = fleet.store.clone();
                                let fleet = fleet.clone();
                                tokio::spawn(async move {
                                    match tokio::task::spawn_blocking(move || store.record_wg_cut_offs(node, &cut)).await {
                                        Ok(Ok(true)) => {
                                            fleet.push_wireguard(node).await;
                                        }
                                        Ok(Ok(false)) => {}
                                        Ok(Err(e)) => tracing::warn!(error = %e, "cannot record WireGuard cut-offs"),
                                        Err(_) => {}
                                    }
                                });
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable WireGuard status dropped"),
                    },
                    EventKind::AGENT_RELEASE => match codec::decode_from::<AgentRelease>(&event.body) {
                        Ok(release) => {
                            tracing::info!(
                                package = release.package_version.as_deref().unwrap_or("none"),
                                upgrading = ?release.upgrading.map(|r| r.0),
                                "agent release reported"
                            );
                            fleet.update_live(node, session, |live| live.release = Some(release.clone()));
                            let store = fleet.store.clone();
                            let recorded = tokio::task::spawn_blocking(move || {
                                store.record_agent_package_version(node, release.package_version.as_deref())?;
                                match &release.last_upgrade {
                                    Some(outcome) => store.record_upgrade_outcome(node, outcome),
                                    None => Ok(None),
                                }
                            })
                            .await;
                            match recorded {
                                Ok(Ok(Some(state))) => {
                                    tracing::info!(state = state.as_str(), "upgrade outcome recorded")
                                }
                                Ok(Ok(None)) => {}
                                Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the agent's release"),
                                Err(_) => {}
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable agent release dropped"),
                    },
                    EventKind::CONTAINER_TASK => match codec::decode_from::<TaskInfo>(&event.body) {
                        Ok(task) => {
                            let (store, task) = (fleet.store.clone(), Arc::new(task));
                            let t = task.clone();
                            let after = tokio::task::spawn_blocking(move || crate::vps::on_task(&store, node, &t)).await;
                            match after {
                                Ok(Ok((after, server))) => {
                                    let _ = fleet.vps_events.send(crate::vps::VpsEvent::Task { node, server, task });
                                    if let (crate::vps::AfterTask::RefreshStatus(server), _) = (after, server) {
                                        tokio::spawn(refresh_server(fleet.clone(), node, server));
                                    }
                                }
                                Ok(Err(e)) => tracing::warn!(error = %e, "cannot record a container task"),
                                Err(_) => {}
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable container task dropped"),
                    },
                    EventKind::CONTAINER_SAMPLES => match codec::decode_from::<ContainerSamples>(&event.body) {
                        Ok(samples) => {
                            let (store, samples) = (fleet.store.clone(), Arc::new(samples));
                            let s = samples.clone();
                            match tokio::task::spawn_blocking(move || crate::vps::on_samples(&store, node, &s)).await {
                                Ok(Ok(())) => {
                                    let _ = fleet.vps_events.send(crate::vps::VpsEvent::Samples { node, samples });
                                }
                                Ok(Err(e)) => tracing::warn!(error = %e, "cannot record container samples"),
                                Err(_) => {}
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable container samples dropped"),
                    },
                    EventKind::SERVICE_FAILED => {
                        match codec::decode_from::<flotilla_protocol::services::ServiceFailed>(&event.body) {
                            Ok(failed) => {
                                tracing::warn!(unit = %failed.unit, message = %failed.message, "service failed on node");
                                fleet.announce(HostEvent::ServiceFailed { node, unit: failed.unit, message: failed.message });
                            }
                            Err(e) => tracing::warn!(error = %e, "undecodable service failure dropped"),
                        }
                    }
                    other => tracing::debug!(kind = other.0, "event kind not known to this controller; skipped"),
                },
                Some(Ok(other)) => {
                    tracing::warn!(message = other.name(), "unexpected message on control stream");
                    close(&conn, CloseCode::PROTOCOL_ERROR, "unexpected message on control stream");
                    break format!("unexpected {}", other.name());
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "malformed frame on control stream");
                    close(&conn, CloseCode::PROTOCOL_ERROR, "malformed frame on control stream");
                    break format!("malformed frame: {e}");
                }
                None => {
                    close(&conn, CloseCode::SHUTDOWN, "control stream ended");
                    break "control stream ended".to_string();
                }
            },
            _ = persist.tick() => {
                let store = fleet.store.clone();
                // The latest sample is in the live cache already; persist that.
                let m = fleet.live(node).metrics;
                let exists = tokio::task::spawn_blocking(move || {
                    store.record_node_seen(node, OffsetDateTime::now_utc(), m.as_ref())?;
                    Ok::<_, crate::store::StoreError>(store.node(node)?.is_some())
                })
                .await;
                if let Ok(Ok(false)) = exists {
                    fleet.certs.revoke_node(node);
                    close(&conn, CloseCode::REVOKED, "node deleted");
                    break "node deleted".to_string();
                }
            }
            e = conn.closed() => break e.to_string(),
        }
    };
    reader.abort();
    requests.abort();
    if let Some(live) = fleet.detach(node, session) {
        let store = fleet.store.clone();
        let at = live.last_seen.unwrap_or_else(OffsetDateTime::now_utc);
        let _ = tokio::task::spawn_blocking(move || store.record_node_seen(node, at, live.metrics.as_ref())).await;
        fleet.announce(HostEvent::NodeOffline { node, reason: reason.clone() });
    }
    tracing::info!(%reason, "agent disconnected");
}

/// Requests the agent opens towards the controller (certificate renewal, ping).
async fn serve_agent_requests(fleet: Arc<Fleet>, conn: quinn::Connection, node: NodeId) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let served = flotilla_protocol::io::answer(&mut send, &mut recv, |req| handle(fleet, node, req)).await;
            let _ = send.finish();
            if let Err(e) = served {
                tracing::debug!(error = %e, "agent request failed");
            }
        });
    }
}

async fn handle(fleet: Arc<Fleet>, node: NodeId, request: Request) -> RpcResult {
    match request.kind {
        RequestKind::PING => RpcResult::Ok(vec![]),
        RequestKind::RENEW_CERTIFICATE => match renew(&fleet, node, &request.body).await {
            Ok(body) => RpcResult::Ok(body),
            Err(e) => RpcResult::Err(e),
        },
        RequestKind::LOCAL_USER_CHANGES => match local_user_changes(&fleet, node, &request.body).await {
            Ok(body) => RpcResult::Ok(body),
            Err(e) => RpcResult::Err(e),
        },
        RequestKind::FETCH_PACKAGE => match package_chunk(&fleet, &request.body).await {
            Ok(body) => RpcResult::Ok(body),
            Err(e) => RpcResult::Err(e),
        },
        other => RpcResult::Err(RpcError::Unsupported(other.0)),
    }
}

/// User changes the agent made locally: committed exactly once, answered after the commit, then
/// pushed back as a state that contains them (the agent replays them until it has it).
async fn local_user_changes(fleet: &Arc<Fleet>, node: NodeId, body: &[u8]) -> Result<Vec<u8>, RpcError> {
    let changes: LocalChanges = codec::decode_from(body).map_err(|e| RpcError::BadRequest(e.to_string()))?;
    let store = fleet.store.clone();
    let applied =
        tokio::task::spawn_blocking(move || store.apply_user_changes(node, Some(changes.outbox), &changes.changes))
            .await
            .map_err(|e| RpcError::Failed(e.to_string()))?
            .map_err(|e| RpcError::Failed(e.to_string()))?;
    for (id, why) in &applied.refused {
        tracing::warn!(id, %why, "user change made on the agent refused");
    }
    let applied = applied.into_wire();
    let fleet = fleet.clone();
    tokio::spawn(async move {
        let outcome = fleet.push_proxy_state(node).await;
        tracing::debug!(status = outcome.status(), "state with the agent's user changes pushed");
    });
    codec::encode_body(&applied).map_err(|e| RpcError::Failed(e.to_string()))
}

/// Asks a node for a just-created server's container and records its address.
async fn refresh_server(fleet: Arc<Fleet>, node: NodeId, server: i64) {
    let store = fleet.store.clone();
    let Ok(Ok(Some(record))) = tokio::task::spawn_blocking(move || store.server(server)).await else { return };
    let query = ContainerQuery { name: record.container };
    let Ok(body) = codec::encode_body(&query) else { return };
    match fleet.call(node, RequestKind::CONTAINER_STATUS, body, Duration::from_secs(15)).await {
        Ok(answer) => {
            let Ok(status) = codec::decode_from::<ContainerStatus>(&answer) else { return };
            let Some(state) = crate::api::vps::servers::server_status_for(status.state) else { return };
            let store = fleet.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.set_server_state(server, state, status.ipv4.as_deref()))
                .await;
        }
        Err(e) => tracing::debug!(error = %e, server, "cannot read a new server's status"),
    }
}

/// A byte range of a catalog package, for an agent upgrading itself.
async fn package_chunk(fleet: &Arc<Fleet>, body: &[u8]) -> Result<Vec<u8>, RpcError> {
    let req: PackageChunkRequest = codec::decode_from(body).map_err(|e| RpcError::BadRequest(e.to_string()))?;
    let store = fleet.store.clone();
    let len = req.len.min(MAX_CHUNK);
    let chunk = tokio::task::spawn_blocking(move || store.agent_package_chunk(&req.sha256, req.offset, len))
        .await
        .map_err(|e| RpcError::Failed(e.to_string()))?
        .map_err(|e| RpcError::Failed(e.to_string()))?
        .ok_or_else(|| RpcError::Refused(format!("no package {} in the catalog", hex::encode(req.sha256))))?;
    codec::encode_body(&PackageChunk { data: chunk }).map_err(|e| RpcError::Failed(e.to_string()))
}

async fn renew(fleet: &Arc<Fleet>, node: NodeId, body: &[u8]) -> Result<Vec<u8>, RpcError> {
    let req: RenewRequest = codec::decode_from(body).map_err(|e| RpcError::BadRequest(e.to_string()))?;
    let csr = AgentCsr::parse(&req.csr_der).map_err(|e| RpcError::BadRequest(e.to_string()))?;
    let issued = fleet
        .pki
        .sign_agent_csr(&csr, node, fleet.config.agent_cert_lifetime)
        .map_err(|e| RpcError::Failed(e.to_string()))?;
    let store = fleet.store.clone();
    let (serial, not_after) = (issued.serial.clone(), issued.not_after);
    tokio::task::spawn_blocking(move || store.record_cert(node, &serial, not_after))
        .await
        .map_err(|e| RpcError::Failed(e.to_string()))?
        .map_err(|e| RpcError::Failed(e.to_string()))?;
    fleet.certs.allow(issued.serial.clone(), node);
    tracing::info!(not_after = %issued.not_after, "agent certificate renewed");
    codec::encode_body(&Renewed { cert_der: issued.der }).map_err(|e| RpcError::Failed(e.to_string()))
}
