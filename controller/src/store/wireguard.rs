//! WireGuard interfaces and clients the controller wants on its nodes, their usage (from the
//! agents' WireGuard journals, exactly once) and the per-node revision of that state.
//!
//! `wg` is the fleet-wide interface number the CandyPanel API shows; its device on the node is
//! `wg{wg}`. Private keys are sealed with `secret.key`.

use std::collections::HashSet;
use std::net::IpAddr;

use flotilla_protocol::wireguard::{WgCutOff, WgInterfaceSpec, WgKey, WgPeerSpec, WgState, WgTrafficBatch};
use flotilla_protocol::NodeId;
use rusqlite::{params, OptionalExtension, Transaction};

use serde_json::json;

use super::webhooks::{enqueue_event, iso_ms, Audience, NewEvent};
use super::{Store, StoreError};
use crate::webhooks::events;
use crate::wireguard::{AddressRange, KeyPair, SERVER_MTU};

/// Why a WireGuard change is refused. The texts are CandyPanel's, which its clients show as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WgRefusal {
    #[error("Client with this name already exists.")]
    ClientExists,
    #[error("Client '{0}' not found.")]
    ClientNotFound(String),
    #[error("WireGuard interface wg{0} not found.")]
    InterfaceNotFound(u32),
    #[error("No available IPv4 addresses in the subnet.")]
    PoolExhausted,
    #[error("An interface with port {0} already exists.")]
    PortTaken(u16),
    #[error("An interface with address range {0} already exists.")]
    RangeTaken(String),
    #[error("An interface with IPv6 address range {0} already exists.")]
    Ipv6RangeTaken(String),
    #[error("node {0} not found")]
    NodeNotFound(NodeId),
}

/// Store failure or refusal.
#[derive(Debug, thiserror::Error)]
pub enum WgStoreError {
    #[error(transparent)]
    Refused(#[from] WgRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for WgStoreError {
    fn from(e: rusqlite::Error) -> Self {
        WgStoreError::Store(e.into())
    }
}

/// An interface as stored (without its private key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgInterfaceRecord {
    pub wg: u32,
    pub node_id: NodeId,
    pub public_key: String,
    pub port: u16,
    pub address_range: String,
    pub ipv6_address_range: Option<String>,
    /// Host written into client configs; `None`: the panel's `custom_endpont` setting.
    pub endpoint: Option<String>,
    pub status: bool,
}

impl WgInterfaceRecord {
    /// Device name on the node.
    pub fn device(&self) -> String {
        format!("wg{}", self.wg)
    }
}

/// What creating an interface needs.
#[derive(Debug, Clone)]
pub struct NewWgInterface {
    pub node_id: NodeId,
    pub port: u16,
    pub address_range: AddressRange,
    pub ipv6_address_range: Option<AddressRange>,
    pub endpoint: Option<String>,
}

/// A change of an interface; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct WgInterfaceChange {
    pub address_range: Option<AddressRange>,
    pub port: Option<u16>,
    pub status: Option<bool>,
}

/// A client as stored, private key opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgClientRecord {
    pub name: String,
    pub wg: u32,
    pub public_key: String,
    pub private_key: WgKey,
    pub address: String,
    pub ipv6_address: Option<String>,
    pub created_at: String,
    pub expires: String,
    pub expires_ms: i64,
    pub note: String,
    /// The quota as the panel sent it.
    pub traffic: String,
    pub quota_bytes: u64,
    /// Received from the client (CandyPanel's `download`: the server's rx).
    pub used_down: u64,
    /// Sent to the client (`upload`: the server's tx).
    pub used_up: u64,
    pub status: bool,
    /// Why the node's agent took it off (`quota`, `expired`), until re-enabled.
    pub cut_off: Option<String>,
}

/// What creating a client needs; the store picks its address.
#[derive(Debug, Clone)]
pub struct NewWgClient {
    pub name: String,
    pub wg: u32,
    pub keys: KeyPair,
    pub created_at: String,
    pub expires: String,
    pub expires_ms: i64,
    pub note: String,
    pub traffic: String,
    pub quota_bytes: u64,
}

/// A change of a client; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct WgClientChange {
    pub expires: Option<(String, i64)>,
    pub traffic: Option<(String, u64)>,
    pub status: Option<bool>,
    pub note: Option<String>,
}

impl WgClientChange {
    /// Whether it changes anything at all.
    pub fn is_empty(&self) -> bool {
        self.expires.is_none() && self.traffic.is_none() && self.status.is_none() && self.note.is_none()
    }
}

const CLIENT_COLUMNS: &str = "name, wg, public_key, private_key, address, ipv6_address, created_at, expires, \
     expires_ms, note, traffic, quota_bytes, used_down, used_up, status, cut_off";

const INTERFACE_COLUMNS: &str = "wg, node_id, public_key, port, address_range, ipv6_address_range, endpoint, status";

fn interface_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WgInterfaceRecord> {
    Ok(WgInterfaceRecord {
        wg: r.get::<_, i64>(0)? as u32,
        node_id: NodeId(r.get(1)?),
        public_key: r.get(2)?,
        port: r.get::<_, i64>(3)? as u16,
        address_range: r.get(4)?,
        ipv6_address_range: r.get(5)?,
        endpoint: r.get(6)?,
        status: r.get(7)?,
    })
}

/// Bumps and returns the node's WireGuard revision.
fn bump(tx: &Transaction<'_>, node: NodeId) -> Result<u64, StoreError> {
    let rev: i64 = tx.query_row(
        "INSERT INTO wg_revisions (node_id, revision) VALUES (?1, 1)
         ON CONFLICT(node_id) DO UPDATE SET revision = revision + 1 RETURNING revision",
        params![node.0],
        |r| r.get(0),
    )?;
    Ok(rev as u64)
}

impl Store {
    fn client_row(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<(WgClientRecord, Vec<u8>)> {
        Ok((
            WgClientRecord {
                name: r.get(0)?,
                wg: r.get::<_, i64>(1)? as u32,
                public_key: r.get(2)?,
                private_key: WgKey([0; 32]),
                address: r.get(4)?,
                ipv6_address: r.get(5)?,
                created_at: r.get(6)?,
                expires: r.get(7)?,
                expires_ms: r.get(8)?,
                note: r.get(9)?,
                traffic: r.get(10)?,
                quota_bytes: r.get::<_, i64>(11)? as u64,
                used_down: r.get::<_, i64>(12)? as u64,
                used_up: r.get::<_, i64>(13)? as u64,
                status: r.get(14)?,
                cut_off: r.get(15)?,
            },
            r.get(3)?,
        ))
    }

    fn open_key(&self, sealed: &[u8]) -> Result<WgKey, StoreError> {
        let bytes = self.secrets.open(sealed)?;
        Ok(WgKey(bytes.try_into().map_err(|_| StoreError::Corrupt("WireGuard private key".into()))?))
    }

    fn clients_where(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<WgClientRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("SELECT {CLIENT_COLUMNS} FROM wg_clients {filter} ORDER BY id"))?;
        let rows = stmt.query_map(args, |r| self.client_row(r))?.collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        rows.into_iter()
            .map(|(mut c, sealed)| {
                c.private_key = self.open_key(&sealed)?;
                Ok(c)
            })
            .collect()
    }

    /// Every WireGuard interface, by `wg`.
    pub fn wg_interfaces(&self) -> Result<Vec<WgInterfaceRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("SELECT {INTERFACE_COLUMNS} FROM wg_interfaces ORDER BY wg"))?;
        let rows = stmt.query_map([], interface_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One interface.
    pub fn wg_interface(&self, wg: u32) -> Result<Option<WgInterfaceRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {INTERFACE_COLUMNS} FROM wg_interfaces WHERE wg = ?1"),
                params![wg as i64],
                interface_row,
            )
            .optional()?)
    }

    /// Creates an interface with a new key pair under the lowest free `wg` number. Ports and
    /// address ranges must be free on its node (other nodes may reuse them).
    pub fn create_wg_interface(&self, new: &NewWgInterface) -> Result<WgInterfaceRecord, WgStoreError> {
        let keys = KeyPair::generate();
        let sealed = self.secrets.seal(&keys.private.0);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let node_exists: bool =
            tx.query_row("SELECT EXISTS(SELECT 1 FROM nodes WHERE id = ?1)", params![new.node_id.0], |r| r.get(0))?;
        if !node_exists {
            return Err(WgRefusal::NodeNotFound(new.node_id).into());
        }
        let existing: Vec<(i64, u16, String, Option<String>)> = {
            let mut stmt =
                tx.prepare("SELECT wg, port, address_range, ipv6_address_range FROM wg_interfaces WHERE node_id = ?1")?;
            let rows = stmt
                .query_map(params![new.node_id.0], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)? as u16, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows
        };
        for (_, port, range, v6) in &existing {
            if *port == new.port {
                return Err(WgRefusal::PortTaken(new.port).into());
            }
            if AddressRange::parse(range).is_ok_and(|r| r.overlaps(&new.address_range)) {
                return Err(WgRefusal::RangeTaken(new.address_range.to_string()).into());
            }
            if let (Some(mine), Some(theirs)) = (&new.ipv6_address_range, v6.as_deref()) {
                if AddressRange::parse(theirs).is_ok_and(|r| r.overlaps(mine)) {
                    return Err(WgRefusal::Ipv6RangeTaken(mine.to_string()).into());
                }
            }
        }
        // Lowest free number, like CandyPanel: a deleted wg1 is reused before wg3 is made.
        let wg: i64 = tx.query_row(
            "SELECT COALESCE((SELECT MIN(w.wg + 1) FROM wg_interfaces w
               WHERE NOT EXISTS (SELECT 1 FROM wg_interfaces x WHERE x.wg = w.wg + 1)), 0)
             WHERE EXISTS (SELECT 1 FROM wg_interfaces WHERE wg = 0)
             UNION ALL SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM wg_interfaces WHERE wg = 0)",
            [],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO wg_interfaces (wg, node_id, private_key, public_key, port, address_range, ipv6_address_range,
               endpoint, status, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9)",
            params![
                wg,
                new.node_id.0,
                sealed,
                keys.public.to_base64(),
                new.port as i64,
                new.address_range.to_string(),
                new.ipv6_address_range.map(|r| r.to_string()),
                new.endpoint,
                time::OffsetDateTime::now_utc().unix_timestamp(),
            ],
        )?;
        bump(&tx, new.node_id)?;
        tx.commit()?;
        drop(conn);
        Ok(self.wg_interface(wg as u32)?.ok_or_else(|| StoreError::NotFound(format!("interface wg{wg}")))?)
    }

    /// Changes an interface. Clients keep their addresses when the range moves.
    pub fn update_wg_interface(&self, wg: u32, change: &WgInterfaceChange) -> Result<WgInterfaceRecord, WgStoreError> {
        let current = self.wg_interface(wg)?.ok_or(WgRefusal::InterfaceNotFound(wg))?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some(port) = change.port.filter(|p| *p != current.port) {
            let taken: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM wg_interfaces WHERE node_id = ?1 AND port = ?2 AND wg != ?3)",
                params![current.node_id.0, port as i64, wg as i64],
                |r| r.get(0),
            )?;
            if taken {
                return Err(WgRefusal::PortTaken(port).into());
            }
        }
        tx.execute(
            "UPDATE wg_interfaces SET address_range = COALESCE(?2, address_range), port = COALESCE(?3, port),
               status = COALESCE(?4, status) WHERE wg = ?1",
            params![
                wg as i64,
                change.address_range.map(|r| r.to_string()),
                change.port.map(|p| p as i64),
                change.status
            ],
        )?;
        bump(&tx, current.node_id)?;
        tx.commit()?;
        drop(conn);
        Ok(self.wg_interface(wg)?.ok_or(WgRefusal::InterfaceNotFound(wg))?)
    }

    /// Deletes an interface and every client on it. Returns the names of the deleted clients.
    pub fn delete_wg_interface(&self, wg: u32) -> Result<Vec<String>, WgStoreError> {
        let current = self.wg_interface(wg)?.ok_or(WgRefusal::InterfaceNotFound(wg))?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let names: Vec<String> = {
            let mut stmt = tx.prepare("SELECT name FROM wg_clients WHERE wg = ?1")?;
            let rows = stmt.query_map(params![wg as i64], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
            rows
        };
        tx.execute("DELETE FROM wg_clients WHERE wg = ?1", params![wg as i64])?;
        tx.execute("DELETE FROM wg_interfaces WHERE wg = ?1", params![wg as i64])?;
        bump(&tx, current.node_id)?;
        tx.commit()?;
        Ok(names)
    }

    /// Creates a client at the lowest free address of its interface's range (and of its IPv6
    /// range, when the interface has one and it has room).
    pub fn create_wg_client(&self, new: &NewWgClient) -> Result<WgClientRecord, WgStoreError> {
        let iface = self.wg_interface(new.wg)?.ok_or(WgRefusal::InterfaceNotFound(new.wg))?;
        let range = AddressRange::parse(&iface.address_range).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let v6_range = iface.ipv6_address_range.as_deref().and_then(|r| AddressRange::parse(r).ok());
        let sealed = self.secrets.seal(&new.keys.private.0);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: bool =
            tx.query_row("SELECT EXISTS(SELECT 1 FROM wg_clients WHERE name = ?1)", params![new.name], |r| r.get(0))?;
        if exists {
            return Err(WgRefusal::ClientExists.into());
        }
        let (taken, taken_v6) = {
            let mut stmt = tx.prepare_cached("SELECT address, ipv6_address FROM wg_clients WHERE wg = ?1")?;
            let rows = stmt
                .query_map(params![new.wg as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let v4: HashSet<IpAddr> = rows.iter().filter_map(|(a, _)| a.parse().ok()).collect();
            let v6: HashSet<IpAddr> = rows.iter().filter_map(|(_, b)| b.as_deref()?.parse().ok()).collect();
            (v4, v6)
        };
        let address = range.next_free(&taken).ok_or(WgRefusal::PoolExhausted)?;
        let ipv6 = v6_range.and_then(|r| r.next_free(&taken_v6));
        tx.execute(
            "INSERT INTO wg_clients (name, wg, public_key, private_key, address, ipv6_address, created_at, expires,
               expires_ms, note, traffic, quota_bytes, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 1)",
            params![
                new.name,
                new.wg as i64,
                new.keys.public.to_base64(),
                sealed,
                address.to_string(),
                ipv6.map(|a| a.to_string()),
                new.created_at,
                new.expires,
                new.expires_ms,
                new.note,
                new.traffic,
                new.quota_bytes.min(i64::MAX as u64) as i64,
            ],
        )?;
        bump(&tx, iface.node_id)?;
        tx.commit()?;
        drop(conn);
        Ok(self.wg_client(&new.name)?.ok_or_else(|| WgRefusal::ClientNotFound(new.name.clone()))?)
    }

    /// One client by name.
    pub fn wg_client(&self, name: &str) -> Result<Option<WgClientRecord>, StoreError> {
        Ok(self.clients_where("WHERE name = ?1", params![name])?.into_iter().next())
    }

    /// Every client, in creation order.
    pub fn wg_clients(&self) -> Result<Vec<WgClientRecord>, StoreError> {
        self.clients_where("", [])
    }

    /// Number of clients.
    pub fn wg_client_count(&self) -> Result<u64, StoreError> {
        Ok(self.conn().query_row("SELECT COUNT(*) FROM wg_clients", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Bytes moved by every client, both ways.
    pub fn wg_total_usage(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT COALESCE(SUM(used_down + used_up), 0) FROM wg_clients", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Changes a client. Re-enabling clears the agent's cut-off, so the peer comes back with the
    /// same keys and address (the agent cuts it again if its quota or expiry still says so).
    pub fn update_wg_client(&self, name: &str, change: &WgClientChange) -> Result<WgClientRecord, WgStoreError> {
        let current = self.wg_client(name)?.ok_or_else(|| WgRefusal::ClientNotFound(name.to_string()))?;
        let node = self.wg_interface(current.wg)?.ok_or(WgRefusal::InterfaceNotFound(current.wg))?.node_id;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE wg_clients SET expires = COALESCE(?2, expires), expires_ms = COALESCE(?3, expires_ms),
               traffic = COALESCE(?4, traffic), quota_bytes = COALESCE(?5, quota_bytes),
               status = COALESCE(?6, status), note = COALESCE(?7, note),
               cut_off = CASE WHEN ?6 = 1 THEN NULL ELSE cut_off END
             WHERE name = ?1",
            params![
                name,
                change.expires.as_ref().map(|e| e.0.clone()),
                change.expires.as_ref().map(|e| e.1),
                change.traffic.as_ref().map(|t| t.0.clone()),
                change.traffic.as_ref().map(|t| t.1.min(i64::MAX as u64) as i64),
                change.status,
                change.note,
            ],
        )?;
        bump(&tx, node)?;
        tx.commit()?;
        drop(conn);
        Ok(self.wg_client(name)?.ok_or_else(|| WgRefusal::ClientNotFound(name.to_string()))?)
    }

    /// Deletes a client.
    pub fn delete_wg_client(&self, name: &str) -> Result<(), WgStoreError> {
        let current = self.wg_client(name)?.ok_or_else(|| WgRefusal::ClientNotFound(name.to_string()))?;
        let node = self.wg_interface(current.wg)?.map(|i| i.node_id);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM wg_clients WHERE name = ?1", params![name])?;
        if let Some(node) = node {
            bump(&tx, node)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The node's desired WireGuard state, for its agent.
    pub fn wg_state(&self, node: NodeId) -> Result<WgState, StoreError> {
        let revision: i64 = self
            .conn()
            .query_row("SELECT revision FROM wg_revisions WHERE node_id = ?1", params![node.0], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let interfaces: Vec<(WgInterfaceRecord, Vec<u8>)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {INTERFACE_COLUMNS}, private_key FROM wg_interfaces WHERE node_id = ?1 ORDER BY wg"
            ))?;
            let rows = stmt
                .query_map(params![node.0], |r| Ok((interface_row(r)?, r.get(8)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows
        };
        let mut state = WgState { revision: revision as u64, ..Default::default() };
        for (iface, sealed) in &interfaces {
            let mut addresses = vec![iface.address_range.clone()];
            addresses.extend(iface.ipv6_address_range.clone());
            state.interfaces.push(WgInterfaceSpec {
                name: iface.device(),
                private_key: self.open_key(sealed)?,
                listen_port: iface.port,
                addresses,
                mtu: SERVER_MTU,
                enabled: iface.status,
            });
        }
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT c.wg, c.public_key, c.address, c.ipv6_address, c.status, c.expires_ms, c.quota_bytes,
                    c.reset_generation
             FROM wg_clients c JOIN wg_interfaces i ON i.wg = c.wg WHERE i.node_id = ?1 ORDER BY c.id",
        )?;
        let peers = stmt
            .query_map(params![node.0], |r| {
                let address: String = r.get(2)?;
                let v6: Option<String> = r.get(3)?;
                let mut allowed_ips = vec![format!("{address}/32")];
                allowed_ips.extend(v6.map(|a| format!("{a}/128")));
                Ok((
                    format!("wg{}", r.get::<_, i64>(0)?),
                    r.get::<_, String>(1)?,
                    allowed_ips,
                    r.get::<_, bool>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)? as u64,
                    r.get::<_, i64>(7)? as u32,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (interface, public_key, allowed_ips, enabled, expiry_ms, quota_bytes, reset_generation) in peers {
            let Some(public_key) = WgKey::from_base64(&public_key) else { continue };
            state.peers.push(WgPeerSpec {
                interface,
                public_key,
                preshared_key: None,
                allowed_ips,
                enabled,
                expiry_ms,
                quota_bytes,
                reset_generation,
            });
        }
        Ok(state)
    }

    /// Nodes that have any WireGuard interface.
    pub fn wg_nodes(&self) -> Result<Vec<NodeId>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT DISTINCT node_id FROM wg_interfaces ORDER BY node_id")?;
        let rows = stmt.query_map([], |r| Ok(NodeId(r.get(0)?)))?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Commits one WireGuard journal row of a node; `false` when it was committed before.
    pub fn apply_wg_traffic_batch(&self, node: NodeId, batch: &WgTrafficBatch) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let cursor: Option<(i64, i64)> = tx
            .query_row("SELECT journal, seq FROM wg_traffic_cursors WHERE node_id = ?1", params![node.0], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((journal, seq)) = cursor {
            if journal == batch.journal as i64 && batch.seq as i64 <= seq {
                return Ok(false);
            }
        }
        {
            let mut add = tx.prepare_cached(
                "UPDATE wg_clients SET used_down = used_down + ?3, used_up = used_up + ?4
                 WHERE public_key = ?2 AND wg IN (SELECT wg FROM wg_interfaces WHERE node_id = ?1)",
            )?;
            for p in &batch.peers {
                add.execute(params![
                    node.0,
                    p.public_key.to_base64(),
                    p.rx.min(i64::MAX as u64) as i64,
                    p.tx.min(i64::MAX as u64) as i64
                ])?;
            }
        }
        tx.execute(
            "INSERT INTO wg_traffic_cursors (node_id, journal, seq) VALUES (?1, ?2, ?3)
             ON CONFLICT(node_id) DO UPDATE SET journal = excluded.journal, seq = excluded.seq",
            params![node.0, batch.journal as i64, batch.seq as i64],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Records peers the node's agent took off for their quota or expiry: they show as disabled
    /// until an operator (or a purchase) enables them again. Returns whether anything changed
    /// (the node's revision is bumped then).
    pub fn record_wg_cut_offs(&self, node: NodeId, cut: &[(WgKey, WgCutOff)]) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut changed = 0;
        {
            let mut mark = tx.prepare_cached(
                "UPDATE wg_clients SET status = 0, cut_off = ?3
                 WHERE public_key = ?2 AND status = 1 AND wg IN (SELECT wg FROM wg_interfaces WHERE node_id = ?1)
                 RETURNING name, wg, quota_bytes, used_down + used_up, expires_ms",
            )?;
            for (key, why) in cut {
                let why_text = match why {
                    WgCutOff::Quota => "quota",
                    WgCutOff::Expired => "expired",
                };
                let marked = mark
                    .query_row(params![node.0, key.to_base64(), why_text], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .optional()?;
                let Some((name, wg, quota, used, expires_ms)) = marked else { continue };
                changed += 1;
                let (kind, data) = match why {
                    WgCutOff::Quota => (
                        events::QUOTA_EXHAUSTED,
                        json!({ "node_id": node.0, "client_type": "wireguard", "client": name, "interface": format!("wg{wg}"),
                                "used_bytes": used, "quota_bytes": quota }),
                    ),
                    WgCutOff::Expired => (
                        events::CLIENT_EXPIRED,
                        json!({ "node_id": node.0, "client_type": "wireguard", "client": name, "interface": format!("wg{wg}"),
                                "expired_at": iso_ms(expires_ms) }),
                    ),
                };
                enqueue_event(&tx, &NewEvent::new(kind, data), &Audience::Fleet)?;
            }
        }
        if changed > 0 {
            bump(&tx, node)?;
        }
        tx.commit()?;
        Ok(changed > 0)
    }

    /// The periodic counter reset (`reset_time`): zeroes every client's usage, starts a new quota
    /// period on the agents (the reset generation), and re-enables clients that were cut only for
    /// their quota. Interfaces stay up. Returns the nodes to push to.
    pub fn reset_wg_usage(&self) -> Result<Vec<NodeId>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE wg_clients SET used_down = 0, used_up = 0, reset_generation = reset_generation + 1,
               status = CASE WHEN cut_off = 'quota' THEN 1 ELSE status END,
               cut_off = CASE WHEN cut_off = 'quota' THEN NULL ELSE cut_off END",
            [],
        )?;
        let nodes: Vec<NodeId> = {
            let mut stmt = tx.prepare("SELECT DISTINCT node_id FROM wg_interfaces")?;
            let rows = stmt.query_map([], |r| Ok(NodeId(r.get(0)?)))?.collect::<Result<Vec<_>, _>>()?;
            rows
        };
        for node in &nodes {
            bump(&tx, *node)?;
        }
        tx.commit()?;
        Ok(nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewNode;
    use flotilla_protocol::wireguard::WgPeerTraffic;

    fn node(store: &Store, name: &str) -> NodeId {
        store.create_node(&NewNode { name: name.into(), ..Default::default() }).unwrap().id
    }

    fn new_client(name: &str, wg: u32) -> NewWgClient {
        NewWgClient {
            name: name.into(),
            wg,
            keys: KeyPair::generate_url_safe(),
            created_at: "2026-01-01T00:00:00".into(),
            expires: "2027-01-01T00:00:00".into(),
            expires_ms: 1_798_761_600_000,
            note: String::new(),
            traffic: "1000".into(),
            quota_bytes: 1000,
        }
    }

    #[test]
    fn interfaces_clients_state_usage_and_cut_offs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (node(&store, "a"), node(&store, "b"));
        let range = AddressRange::parse("10.0.0.1/29").unwrap();
        let new = |node_id, port| NewWgInterface {
            node_id,
            port,
            address_range: range,
            ipv6_address_range: None,
            endpoint: None,
        };
        let wg0 = store.create_wg_interface(&new(a, 51820)).unwrap();
        assert_eq!((wg0.wg, wg0.device()), (0, "wg0".to_string()));
        let refused = store.create_wg_interface(&new(a, 51820)).unwrap_err();
        assert!(matches!(refused, WgStoreError::Refused(WgRefusal::PortTaken(51820))));
        let refused = store.create_wg_interface(&new(a, 51821)).unwrap_err();
        assert!(matches!(refused, WgStoreError::Refused(WgRefusal::RangeTaken(_))), "overlapping range on one node");
        let wg1 = store.create_wg_interface(&new(b, 51820)).unwrap();
        assert_eq!(wg1.wg, 1, "another node may reuse port and range, never the device name");

        let c1 = store.create_wg_client(&new_client("c1", 0)).unwrap();
        assert_eq!(c1.address, "10.0.0.2");
        assert!(matches!(
            store.create_wg_client(&new_client("c1", 0)).unwrap_err(),
            WgStoreError::Refused(WgRefusal::ClientExists)
        ));
        for i in 2..=5 {
            store.create_wg_client(&new_client(&format!("c{i}"), 0)).unwrap();
        }
        // A /29 has six hosts; the server has one of them.
        assert!(matches!(
            store.create_wg_client(&new_client("c6", 0)).unwrap_err(),
            WgStoreError::Refused(WgRefusal::PoolExhausted)
        ));
        store.delete_wg_client("c3").unwrap();
        assert_eq!(store.create_wg_client(&new_client("c6", 0)).unwrap().address, "10.0.0.4", "freed address reused");

        let state = store.wg_state(a).unwrap();
        assert_eq!(state.interfaces.len(), 1);
        assert_eq!(state.peers.len(), 5);
        assert_eq!(state.interfaces[0].name, "wg0");
        assert_eq!(KeyPair::from_private(state.interfaces[0].private_key).public.to_base64(), wg0.public_key);
        assert!(store.wg_state(b).unwrap().peers.is_empty());

        let key = WgKey::from_base64(&c1.public_key).unwrap();
        let batch = |seq| WgTrafficBatch {
            journal: 7,
            seq,
            taken_at_ms: 0,
            peers: vec![WgPeerTraffic { interface: "wg0".into(), public_key: key, rx: 10, tx: 20 }],
        };
        assert!(store.apply_wg_traffic_batch(a, &batch(1)).unwrap());
        assert!(!store.apply_wg_traffic_batch(a, &batch(1)).unwrap(), "a resent row counts once");
        assert!(store.apply_wg_traffic_batch(b, &batch(1)).unwrap(), "another node's journal is separate");
        let c1 = store.wg_client("c1").unwrap().unwrap();
        assert_eq!((c1.used_down, c1.used_up), (10, 20), "node b has no such peer");

        let admin = store.create_user("root", "x", crate::store::Role::Admin).unwrap();
        crate::store::webhooks::tests::hook(&store, admin, &["quota.exhausted"]);
        let before = store.wg_state(a).unwrap().revision;
        assert!(store.record_wg_cut_offs(a, &[(key, WgCutOff::Quota)]).unwrap());
        assert!(!store.record_wg_cut_offs(a, &[(key, WgCutOff::Quota)]).unwrap(), "already recorded");
        let events = crate::store::webhooks::tests::queued(&store);
        assert_eq!(events.len(), 1, "one event, not one per report");
        let data = &events[0]["data"];
        assert_eq!((data["client"].as_str(), data["interface"].as_str()), (Some("c1"), Some("wg0")));
        assert_eq!((data["used_bytes"].as_i64(), data["client_type"].as_str()), (Some(30), Some("wireguard")));
        let c1 = store.wg_client("c1").unwrap().unwrap();
        assert_eq!((c1.status, c1.cut_off.as_deref()), (false, Some("quota")));
        assert!(store.wg_state(a).unwrap().revision > before);
        assert_eq!(store.reset_wg_usage().unwrap(), vec![a, b]);
        let c1 = store.wg_client("c1").unwrap().unwrap();
        assert_eq!((c1.status, c1.cut_off, c1.used_down), (true, None, 0), "a new period lifts a quota cut");

        let names = store.delete_wg_interface(0).unwrap();
        assert_eq!(names.len(), 5);
        assert_eq!(store.wg_client_count().unwrap(), 0);
        let again = store.create_wg_interface(&new(a, 51820)).unwrap();
        assert_eq!(again.wg, 0, "the lowest free number is reused");
    }
}
