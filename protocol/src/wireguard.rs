//! WireGuard on a node: the interfaces and peers the controller wants there, the transfer
//! counters the agent journals, and the status it reports.
//!
//! The agent keeps the last state it was given and enforces quotas and expiry from it by
//! itself, so a peer is cut on time even while the controller is away.

use serde::{Deserialize, Serialize};

/// A WireGuard key: 32 raw bytes (base64 in config files and APIs, hex on the UAPI socket).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WgKey(pub [u8; 32]);

impl WgKey {
    /// Standard padded base64, as `wg` and config files write keys.
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Parses a base64 key (44 characters); `None` when it is not 32 bytes of base64.
    pub fn from_base64(s: &str) -> Option<WgKey> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(s.trim()).ok()?;
        Some(WgKey(bytes.try_into().ok()?))
    }
}

impl std::fmt::Debug for WgKey {
    // Public keys are what logs need; a private key never reaches a log through Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgKey({}…)", &self.to_base64()[..8])
    }
}

/// One interface the node should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgInterfaceSpec {
    /// Device name on the host (`wg0`); at most 15 bytes.
    pub name: String,
    pub private_key: WgKey,
    pub listen_port: u16,
    /// The interface's own addresses with their prefix (`10.0.0.1/24`, `fd00::1/64`).
    pub addresses: Vec<String>,
    pub mtu: u16,
    /// False: the device is taken down; its peers stay in the state.
    pub enabled: bool,
}

/// One peer (a client) of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgPeerSpec {
    /// Name of the interface it belongs to.
    pub interface: String,
    pub public_key: WgKey,
    pub preshared_key: Option<WgKey>,
    /// `10.0.0.2/32` and so on.
    pub allowed_ips: Vec<String>,
    /// False: the peer is kept off the device (same keys and address when re-enabled).
    pub enabled: bool,
    /// Unix milliseconds after which the agent takes the peer off; 0 = never.
    pub expiry_ms: i64,
    /// Bytes both ways after which the agent takes the peer off; 0 = unlimited.
    pub quota_bytes: u64,
    /// Bumped to zero the usage the quota is measured against.
    pub reset_generation: u32,
}

/// `APPLY_WIREGUARD` body: every interface and peer the node should have. The agent diffs it
/// against the device peer by peer; unchanged peers are not touched.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WgState {
    pub revision: u64,
    pub interfaces: Vec<WgInterfaceSpec>,
    pub peers: Vec<WgPeerSpec>,
}

/// `APPLY_WIREGUARD` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WgApplyReport {
    pub revision: u64,
    pub peers_added: u32,
    pub peers_removed: u32,
    pub peers_updated: u32,
    pub interfaces_changed: u32,
    /// (interface or peer, why) for what the host refused.
    pub failures: Vec<(String, String)>,
}

/// Bytes one peer moved since the previous batch, as the server sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgPeerTraffic {
    pub interface: String,
    pub public_key: WgKey,
    /// Received from the peer (the client's upload).
    pub rx: u64,
    /// Sent to the peer (the client's download).
    pub tx: u64,
}

/// `WG_TRAFFIC` event body: one journal row of the agent's WireGuard journal. Acked only once
/// the controller committed it; `(journal, seq)` lets it skip a resent duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgTrafficBatch {
    pub journal: u64,
    pub seq: u64,
    pub taken_at_ms: u64,
    pub peers: Vec<WgPeerTraffic>,
}

/// Why the agent took an enabled peer off its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WgCutOff {
    /// Its usage reached `quota_bytes`.
    Quota,
    /// `expiry_ms` passed.
    Expired,
}

/// One interface as it is on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgInterfaceStatus {
    pub name: String,
    pub listen_port: u16,
    /// The device exists and is up.
    pub up: bool,
    /// Why it is not, when it should be.
    pub error: Option<String>,
}

/// A peer the status mentions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WgPeerRef {
    pub interface: String,
    pub public_key: WgKey,
}

/// `WG_STATUS` event body, sent whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WgStatus {
    /// Revision of the state last applied.
    pub applied_revision: u64,
    /// `kernel` or `userspace`.
    pub backend: String,
    pub interfaces: Vec<WgInterfaceStatus>,
    /// Peers with a handshake in the last three minutes.
    pub connected: Vec<WgPeerRef>,
    /// Enabled peers the agent keeps off their device, and why.
    pub cut_off: Vec<(WgPeerRef, WgCutOff)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_base64_and_debug_hides_most_of_them() {
        let key = WgKey([7; 32]);
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(WgKey::from_base64(&text), Some(key));
        assert_eq!(WgKey::from_base64("short"), None);
        assert_eq!(WgKey::from_base64("not base64 at all!!"), None);
        assert!(!format!("{key:?}").contains(&text));
    }
}
