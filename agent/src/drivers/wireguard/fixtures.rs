//! Specs the driver's unit tests share.

use flotilla_protocol::wireguard::{WgInterfaceSpec, WgKey, WgPeerSpec};

/// A key of 32 bytes `n`.
pub fn key(n: u8) -> WgKey {
    WgKey([n; 32])
}

/// An enabled interface on 10.8.0.1/24.
pub fn iface(name: &str, port: u16) -> WgInterfaceSpec {
    WgInterfaceSpec {
        name: name.into(),
        private_key: key(200),
        listen_port: port,
        addresses: vec!["10.8.0.1/24".into()],
        mtu: 1420,
        enabled: true,
    }
}

/// An enabled peer `10.8.0.n/32` with key `n`, no quota or expiry.
pub fn peer(interface: &str, n: u8) -> WgPeerSpec {
    WgPeerSpec {
        interface: interface.into(),
        public_key: key(n),
        preshared_key: None,
        allowed_ips: vec![format!("10.8.0.{n}/32")],
        enabled: true,
        expiry_ms: 0,
        quota_bytes: 0,
        reset_generation: 0,
    }
}
