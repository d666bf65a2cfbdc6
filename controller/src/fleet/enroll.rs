//! Enrollment connections (ALPN `flotilla-enroll/1`): one `Enroll` request, one answer.

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::close::CloseCode;
use flotilla_protocol::enroll::{EnrollRefusal, EnrollRefused, EnrollRequest, Enrolled};
use flotilla_protocol::io::{read_message, write_message};
use flotilla_protocol::messages::Message;
use flotilla_protocol::token::JoinToken;
use time::OffsetDateTime;

use super::Fleet;
use crate::pki::AgentCsr;
use crate::store::TokenRefusal;

const ENROLL_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn run(fleet: Arc<Fleet>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let exchange = async {
        let (mut send, mut recv) = conn.accept_bi().await.ok()?;
        let Message::Enroll(request) = read_message(&mut recv).await.ok()? else {
            return None;
        };
        let reply = match enroll(&fleet, request).await {
            Ok(enrolled) => {
                tracing::info!(%remote, node_id = %enrolled.node_id, "agent enrolled");
                Message::Enrolled(enrolled)
            }
            Err(refused) => {
                tracing::info!(%remote, reason = ?refused.reason, "enrollment refused");
                Message::EnrollRefused(refused)
            }
        };
        write_message(&mut send, reply).await.ok()?;
        send.finish().ok()?;
        Some(())
    };
    if tokio::time::timeout(ENROLL_TIMEOUT, exchange).await.ok().flatten().is_none() {
        conn.close(quinn::VarInt::from_u32(CloseCode::PROTOCOL_ERROR.0), b"bad enrollment exchange");
        return;
    }
    // Let the agent read the answer and close first; then make sure the connection is gone.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    conn.close(quinn::VarInt::from_u32(CloseCode::ENROLL_DONE.0), b"enrollment done");
}

fn refuse(reason: EnrollRefusal, message: impl Into<String>) -> EnrollRefused {
    EnrollRefused { reason, message: message.into() }
}

async fn enroll(fleet: &Arc<Fleet>, request: EnrollRequest) -> Result<Enrolled, EnrollRefused> {
    // Check the CSR before burning the token on it.
    let csr = AgentCsr::parse(&request.csr_der).map_err(|e| refuse(EnrollRefusal::BadCsr, e.to_string()))?;
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "enrollment failed");
        refuse(EnrollRefusal::Internal, "controller error during enrollment; see its log")
    };
    let store = fleet.store.clone();
    let hash = JoinToken::secret_hash(&request.secret);
    let consumed = tokio::task::spawn_blocking(move || store.consume_join_token(&hash, OffsetDateTime::now_utc()))
        .await
        .map_err(|e| internal(&e))?
        .map_err(|e| internal(&e))?;
    let node = consumed.map_err(|r| match r {
        TokenRefusal::Unknown => refuse(
            EnrollRefusal::UnknownToken,
            "join token not recognised by this controller (never issued, or its node was deleted)",
        ),
        TokenRefusal::Used => refuse(EnrollRefusal::TokenUsed, "join token was already used; create a new one"),
        TokenRefusal::Expired => refuse(EnrollRefusal::TokenExpired, "join token has expired; create a new one"),
    })?;
    let issued = fleet.pki.sign_agent_csr(&csr, node, fleet.config.agent_cert_lifetime).map_err(|e| internal(&e))?;
    let store = fleet.store.clone();
    let (serial, not_after, facts) = (issued.serial.clone(), issued.not_after, request.facts.clone());
    let record = tokio::task::spawn_blocking(move || {
        store.record_cert(node, &serial, not_after)?;
        store.record_node_connected(node, &facts)?;
        store.node(node)
    })
    .await
    .map_err(|e| internal(&e))?
    .map_err(|e| internal(&e))?
    .ok_or_else(|| refuse(EnrollRefusal::NodeDeleted, "the node was deleted during enrollment"))?;
    fleet.certs.allow(issued.serial, node);
    Ok(Enrolled { node_id: node, node_name: record.name, cert_der: issued.der, ca_der: fleet.pki.ca_der().to_vec() })
}
