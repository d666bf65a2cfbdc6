//! QUIC application close codes, so either side can tell the other why a link ended.

/// A reason for closing a link, sent as the QUIC application error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode(pub u32);

impl CloseCode {
    /// Orderly shutdown of either side.
    pub const SHUTDOWN: CloseCode = CloseCode(0);
    /// A newer session of the same node took over.
    pub const REPLACED: CloseCode = CloseCode(1);
    /// The node was deleted or its certificate is no longer valid.
    pub const REVOKED: CloseCode = CloseCode(2);
    /// The peer broke the protocol (bad frame, unexpected message, wrong node id).
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(3);
    /// Versions incompatible; an `Upgrade` message explains.
    pub const UPGRADE_REQUIRED: CloseCode = CloseCode(4);
    /// Heartbeats went unanswered.
    pub const HEARTBEAT_TIMEOUT: CloseCode = CloseCode(5);
    /// A link ALPN was used without a client certificate.
    pub const CERTIFICATE_REQUIRED: CloseCode = CloseCode(6);
    /// Enrollment finished (either way).
    pub const ENROLL_DONE: CloseCode = CloseCode(7);

    /// Human explanation, for logs and `flotilla-agent status`.
    pub fn describe(self) -> &'static str {
        match self.0 {
            0 => "shut down",
            1 => "replaced by a newer session of the same node",
            2 => "node deleted or certificate revoked",
            3 => "protocol error",
            4 => "agent version not supported by the controller",
            5 => "heartbeat timeout",
            6 => "client certificate required",
            7 => "enrollment finished",
            _ => "unknown reason",
        }
    }
}
