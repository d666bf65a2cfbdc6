//! Enrollment and certificate renewal bodies.

use serde::{Deserialize, Serialize};

use crate::facts::HostFacts;
use crate::ids::NodeId;

/// `flotilla-agent enroll`: the token's secret, a CSR for a key generated on the host, and facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub secret: [u8; 32],
    /// DER PKCS#10 request. The controller ignores its subject and names the node itself.
    pub csr_der: Vec<u8>,
    pub agent_version: String,
    pub facts: HostFacts,
}

/// Enrollment accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolled {
    pub node_id: NodeId,
    pub node_name: String,
    /// DER of the agent's certificate.
    pub cert_der: Vec<u8>,
    /// DER of the controller CA (the agent pins it for every later connection).
    pub ca_der: Vec<u8>,
}

/// Why enrollment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollRefusal {
    /// No such token (mistyped, or never issued by this controller).
    UnknownToken,
    /// The token was already used by another enrollment.
    TokenUsed,
    TokenExpired,
    /// The node the token was made for has been deleted.
    NodeDeleted,
    /// The CSR could not be parsed or its signature is wrong.
    BadCsr,
    Internal,
}

/// Enrollment refused, with a one-line human reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollRefused {
    pub reason: EnrollRefusal,
    pub message: String,
}

/// Agent → controller over an established link: sign a new key's CSR for the same node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr_der: Vec<u8>,
}

/// The renewed certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Renewed {
    pub cert_der: Vec<u8>,
}
