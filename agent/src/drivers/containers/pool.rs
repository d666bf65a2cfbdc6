//! The addresses containers get on the node's bridge: a range of the bridge's subnet, handed out
//! through `agent.db` (`StateStore::register_container`) so one is never given twice.

use std::net::Ipv4Addr;

/// A pool setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("address_pool {0:?}: expected FIRST-LAST, e.g. 10.203.0.10-10.203.0.250")]
    Range(String),
    #[error("gateway_cidr {0:?}: expected ADDRESS/PREFIX, e.g. 10.203.0.1/24")]
    Gateway(String),
    #[error("address_pool {pool} is not inside the bridge's subnet {gateway}")]
    OutsideSubnet { pool: String, gateway: String },
    #[error("address_pool {0} holds the gateway address")]
    HoldsGateway(String),
}

/// The bridge's address and the range guests are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    first: Ipv4Addr,
    last: Ipv4Addr,
}

impl AddressPool {
    /// Parses `FIRST-LAST` and `GATEWAY/PREFIX`, checking the range is inside the subnet and
    /// leaves out the gateway, the network and the broadcast address.
    pub fn parse(range: &str, gateway_cidr: &str) -> Result<AddressPool, PoolError> {
        let (gw, prefix) = gateway_cidr.split_once('/').ok_or_else(|| PoolError::Gateway(gateway_cidr.into()))?;
        let gateway: Ipv4Addr = gw.trim().parse().map_err(|_| PoolError::Gateway(gateway_cidr.into()))?;
        let prefix: u8 = prefix.trim().parse().map_err(|_| PoolError::Gateway(gateway_cidr.into()))?;
        if !(8..=30).contains(&prefix) {
            return Err(PoolError::Gateway(gateway_cidr.into()));
        }
        let (a, b) = range.split_once('-').ok_or_else(|| PoolError::Range(range.into()))?;
        let first: Ipv4Addr = a.trim().parse().map_err(|_| PoolError::Range(range.into()))?;
        let last: Ipv4Addr = b.trim().parse().map_err(|_| PoolError::Range(range.into()))?;
        if u32::from(first) > u32::from(last) {
            return Err(PoolError::Range(range.into()));
        }
        let mask = u32::MAX << (32 - prefix);
        let net = u32::from(gateway) & mask;
        let broadcast = net | !mask;
        let inside = |ip: Ipv4Addr| {
            let v = u32::from(ip);
            v & mask == net && v != net && v != broadcast
        };
        if !inside(first) || !inside(last) {
            return Err(PoolError::OutsideSubnet { pool: range.into(), gateway: gateway_cidr.into() });
        }
        if (u32::from(first)..=u32::from(last)).contains(&u32::from(gateway)) {
            return Err(PoolError::HoldsGateway(range.into()));
        }
        Ok(AddressPool { gateway, prefix, first, last })
    }

    /// Every address of the range, lowest first.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from).collect()
    }

    /// `GATEWAY/PREFIX`, as `ip addr add` takes it.
    pub fn gateway_cidr(&self) -> String {
        format!("{}/{}", self.gateway, self.prefix)
    }
}
