//! Facts an agent reports about its host when it says hello.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What the agent sees of its host at connect time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    /// Distribution name and version, e.g. "Debian GNU/Linux 12".
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpu_model: String,
    pub cpu_cores: u32,
    /// Globally routable addresses on the host's interfaces.
    pub public_ips: Vec<IpAddr>,
    /// Every other non-loopback address (private ranges, CGNAT, ULA).
    pub private_ips: Vec<IpAddr>,
}
