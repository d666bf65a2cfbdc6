//! `flotilla-agent enroll TOKEN`: generate a key here, send a CSR with the token's secret, store
//! the certificate the controller signs.

use std::time::Duration;

use flotilla_protocol::enroll::{EnrollRefusal, EnrollRequest};
use flotilla_protocol::facts::HostFacts;
use flotilla_protocol::io::{read_message, write_message};
use flotilla_protocol::messages::Message;
use flotilla_protocol::token::{JoinToken, TokenError};
use flotilla_protocol::CONTROLLER_SERVER_NAME;

use crate::facts;
use crate::identity::{new_key_and_csr, Identity, KeyError};
use crate::link::tls;
use crate::state::{StateError, StateStore};

const ENROLL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why enrollment failed; each renders as one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("already enrolled as node {0}; pass --force to replace this identity")]
    AlreadyEnrolled(String),
    #[error("controller refused the token: {0}")]
    Refused(String),
    #[error("cannot reach the controller at {addrs}: {last}")]
    Unreachable { addrs: String, last: String },
    #[error("controller sent an unexpected answer: {0}")]
    Protocol(String),
    #[error("controller's CA does not match the fingerprint in the token")]
    CaMismatch,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl EnrollError {
    /// The controller's refusal, if that is what happened.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            EnrollError::Refused(m) => Some(m),
            _ => None,
        }
    }
}

/// Result of a successful enrollment.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub identity: Identity,
    pub controller_addr: String,
}

/// Enrolls with the controller named by `token` (or `controller_override`) and stores the identity.
pub async fn enroll(
    state: &StateStore,
    token: &str,
    controller_override: Option<&str>,
    force: bool,
) -> Result<Enrollment, EnrollError> {
    let token = JoinToken::parse(token)?;
    if let (Some(existing), false) = (state.identity()?, force) {
        return Err(EnrollError::AlreadyEnrolled(format!("{} ({})", existing.node_id, existing.node_name)));
    }
    let enrollment = enroll_identity(&token, controller_override, facts::gather()).await?;
    state.save_identity(&enrollment.identity)?;
    Ok(enrollment)
}

/// The enrollment exchange alone: returns the identity without storing it (used by `enroll` and
/// by simulators that hold many identities in memory).
pub async fn enroll_identity(
    token: &JoinToken,
    controller_override: Option<&str>,
    facts: HostFacts,
) -> Result<Enrollment, EnrollError> {
    let addrs: Vec<String> = match controller_override {
        Some(a) => vec![a.to_string()],
        None => token.controller.clone(),
    };
    let (key_der, csr_der) = new_key_and_csr(&facts.hostname)?;
    let request =
        EnrollRequest { secret: token.secret, csr_der, agent_version: env!("CARGO_PKG_VERSION").to_string(), facts };
    let config = tls::enroll_config(token.ca_fingerprint).map_err(|e| EnrollError::Protocol(e.to_string()))?;
    let mut last = String::from("no address to try");
    for addr in &addrs {
        match tokio::time::timeout(ENROLL_TIMEOUT, exchange(addr, config.clone(), request.clone())).await {
            Ok(Ok(Message::Enrolled(enrolled))) => {
                if flotilla_protocol::token::fingerprint(&enrolled.ca_der) != token.ca_fingerprint {
                    return Err(EnrollError::CaMismatch);
                }
                let identity = Identity {
                    node_id: enrolled.node_id,
                    node_name: enrolled.node_name,
                    controller: addrs.clone(),
                    ca_der: enrolled.ca_der,
                    cert_der: enrolled.cert_der,
                    key_der,
                };
                return Ok(Enrollment { identity, controller_addr: addr.clone() });
            }
            Ok(Ok(Message::EnrollRefused(r))) => {
                let hint = match r.reason {
                    EnrollRefusal::TokenUsed | EnrollRefusal::TokenExpired | EnrollRefusal::UnknownToken => {
                        " (ask for a new token: POST /api/v1/nodes/{id}/join-token)"
                    }
                    _ => "",
                };
                return Err(EnrollError::Refused(format!("{}{hint}", r.message)));
            }
            Ok(Ok(other)) => return Err(EnrollError::Protocol(other.name().to_string())),
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: timed out after {}s", ENROLL_TIMEOUT.as_secs()),
        }
    }
    Err(EnrollError::Unreachable { addrs: addrs.join(", "), last })
}

async fn exchange(addr: &str, config: quinn::ClientConfig, request: EnrollRequest) -> Result<Message, String> {
    let target =
        tokio::net::lookup_host(addr).await.map_err(|e| format!("cannot resolve: {e}"))?.next().ok_or("no address")?;
    let endpoint = tls::client_endpoint(target).map_err(|e| e.to_string())?;
    let conn = endpoint
        .connect_with(config, target, CONTROLLER_SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    write_message(&mut send, Message::Enroll(request)).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let answer = read_message(&mut recv).await.map_err(|e| e.to_string());
    conn.close(quinn::VarInt::from_u32(flotilla_protocol::close::CloseCode::ENROLL_DONE.0), b"done");
    endpoint.wait_idle().await;
    answer
}
