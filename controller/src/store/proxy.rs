//! Proxy inbounds and clients per node, their traffic totals, the traffic journal cursor per
//! node, and subscription fetch counts. Every change to a node's inbounds or clients bumps its
//! revision in the same transaction, so the agent can tell a stale push from a new one.

use std::collections::HashMap;

use flotilla_protocol::proxy::{ClientSpec, CutOff, InboundSpec, ProxyState, TrafficBatch};
use flotilla_protocol::NodeId;
use rusqlite::{params, OptionalExtension, Transaction};
use time::OffsetDateTime;

use serde_json::json;

use super::webhooks::{enqueue_event, iso_ms, Audience, NewEvent};
use super::{from_unix, unix, Store, StoreError};
use crate::webhooks::events;

/// An inbound as stored. Its id is numbered per node, as a 3x-ui panel numbers its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRecord {
    pub node_id: NodeId,
    pub id: i64,
    pub tag: String,
    pub listen: String,
    pub port: u16,
    pub protocol: String,
    pub remark: String,
    pub enable: bool,
    /// JSON object text, without `clients`.
    pub settings: String,
    pub stream_settings: String,
    pub sniffing: String,
    pub up: u64,
    pub down: u64,
}

/// What creating an inbound needs.
#[derive(Debug, Clone, Default)]
pub struct NewInbound {
    /// Default `inbound-<port>`.
    pub tag: Option<String>,
    pub listen: String,
    pub port: u16,
    pub protocol: String,
    pub remark: String,
    pub enable: bool,
    pub settings: String,
    pub stream_settings: String,
    pub sniffing: String,
}

/// A client as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// Row id (internal; the API names clients by their secret).
    pub row: i64,
    pub node_id: NodeId,
    pub inbound_id: i64,
    pub email: String,
    /// UUID (vless/vmess) or password (trojan/shadowsocks).
    pub secret: String,
    pub flow: String,
    pub enable: bool,
    pub expiry_ms: i64,
    pub total_bytes: u64,
    pub limit_ip: u32,
    pub sub_id: String,
    pub tg_id: String,
    pub comment: String,
    pub reset_generation: u32,
    pub up: u64,
    pub down: u64,
    /// Set while the agent has the client off the core for expiry or quota.
    pub cut_off: Option<CutOff>,
}

impl ClientRecord {
    /// Bytes used both ways.
    pub fn used(&self) -> u64 {
        self.up.saturating_add(self.down)
    }

    /// Expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expiry_ms > 0 && now_ms >= self.expiry_ms
    }

    /// Quota used up.
    pub fn depleted(&self) -> bool {
        self.total_bytes > 0 && self.used() >= self.total_bytes
    }
}

/// What creating a client needs.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    pub email: String,
    pub secret: String,
    pub flow: String,
    pub enable: bool,
    pub expiry_ms: i64,
    pub total_bytes: u64,
    pub limit_ip: u32,
    pub sub_id: String,
    pub tg_id: String,
    pub comment: String,
}

/// Which clients a batch delete takes.
#[derive(Debug, Clone, Default)]
pub struct ClientFilter {
    /// Case-insensitive substring of the email.
    pub email_pattern: Option<String>,
    pub expired_only: bool,
    pub depleted_only: bool,
}

fn cut_off_str(c: CutOff) -> &'static str {
    match c {
        CutOff::Expired => "expired",
        CutOff::Depleted => "depleted",
    }
}

fn parse_cut_off(s: Option<String>) -> Option<CutOff> {
    match s.as_deref() {
        Some("expired") => Some(CutOff::Expired),
        Some("depleted") => Some(CutOff::Depleted),
        _ => None,
    }
}

const INBOUND_COLUMNS: &str =
    "node_id, id, tag, listen, port, protocol, remark, enable, settings, stream_settings, sniffing, up, down";

fn inbound_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InboundRecord> {
    Ok(InboundRecord {
        node_id: NodeId(r.get(0)?),
        id: r.get(1)?,
        tag: r.get(2)?,
        listen: r.get(3)?,
        port: r.get::<_, i64>(4)? as u16,
        protocol: r.get(5)?,
        remark: r.get(6)?,
        enable: r.get(7)?,
        settings: r.get(8)?,
        stream_settings: r.get(9)?,
        sniffing: r.get(10)?,
        up: r.get::<_, i64>(11)? as u64,
        down: r.get::<_, i64>(12)? as u64,
    })
}

const CLIENT_COLUMNS: &str = "id, node_id, inbound_id, email, secret, flow, enable, expiry_ms, total_bytes, limit_ip, \
    sub_id, tg_id, comment, reset_generation, up, down, cut_off";

fn client_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClientRecord> {
    Ok(ClientRecord {
        row: r.get(0)?,
        node_id: NodeId(r.get(1)?),
        inbound_id: r.get(2)?,
        email: r.get(3)?,
        secret: r.get(4)?,
        flow: r.get(5)?,
        enable: r.get(6)?,
        expiry_ms: r.get(7)?,
        total_bytes: r.get::<_, i64>(8)? as u64,
        limit_ip: r.get::<_, i64>(9)? as u32,
        sub_id: r.get(10)?,
        tg_id: r.get(11)?,
        comment: r.get(12)?,
        reset_generation: r.get::<_, i64>(13)? as u32,
        up: r.get::<_, i64>(14)? as u64,
        down: r.get::<_, i64>(15)? as u64,
        cut_off: parse_cut_off(r.get(16)?),
    })
}

/// `node_id` bounds selecting one node or all: a range the node_id indexes serve (SQLite cannot
/// use an index for `?1 IS NULL OR node_id = ?1`, and a push reads one node's rows every time).
fn node_range(node: Option<NodeId>) -> (i64, i64) {
    match node {
        Some(n) => (n.0, n.0),
        None => (i64::MIN, i64::MAX),
    }
}

/// Bumps and returns the node's revision.
pub(super) fn bump(tx: &Transaction<'_>, node: NodeId) -> Result<u64, StoreError> {
    let rev: i64 = tx.query_row(
        "UPDATE nodes SET revision = revision + 1 WHERE id = ?1 RETURNING revision",
        params![node.0],
        |r| r.get(0),
    )?;
    Ok(rev as u64)
}

pub(super) fn insert_client(
    tx: &Transaction<'_>,
    node: NodeId,
    inbound_id: i64,
    c: &NewClient,
) -> Result<(), StoreError> {
    let taken: Option<i64> = tx
        .query_row("SELECT inbound_id FROM clients WHERE node_id = ?1 AND email = ?2", params![node.0, c.email], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(other) = taken {
        return Err(StoreError::Invalid(format!(
            "email {:?} is already used by a client of inbound {other} on node {node} (cores count traffic per email)",
            c.email
        )));
    }
    tx.execute(
        "INSERT INTO clients (node_id, inbound_id, email, secret, flow, enable, expiry_ms, total_bytes, limit_ip,
                              sub_id, tg_id, comment, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            node.0,
            inbound_id,
            c.email,
            c.secret,
            c.flow,
            c.enable,
            c.expiry_ms,
            c.total_bytes as i64,
            c.limit_ip as i64,
            c.sub_id,
            c.tg_id,
            c.comment,
            unix(OffsetDateTime::now_utc())
        ],
    )?;
    Ok(())
}

impl Store {
    /// Creates an inbound with its first clients on `node`. Refuses a port or tag the node
    /// already uses.
    pub fn create_inbound(
        &self,
        node: NodeId,
        new: &NewInbound,
        clients: &[NewClient],
    ) -> Result<InboundRecord, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id: i64 = tx
            .query_row("SELECT next_inbound_id FROM nodes WHERE id = ?1", params![node.0], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("node {node}")))?;
        let tag = new.tag.clone().unwrap_or_else(|| format!("inbound-{}", new.port));
        let clash: Option<(i64, i64, String)> = tx
            .query_row(
                "SELECT id, port, tag FROM inbounds WHERE node_id = ?1 AND (port = ?2 OR tag = ?3)",
                params![node.0, new.port as i64, tag],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((other, port, other_tag)) = clash {
            return Err(StoreError::Invalid(if port == new.port as i64 {
                format!("port: {port} is already used by inbound {other} on node {node}")
            } else {
                format!("tag: {other_tag:?} is already used by inbound {other} on node {node}")
            }));
        }
        tx.execute(
            "INSERT INTO inbounds (node_id, id, tag, listen, port, protocol, remark, enable, settings, stream_settings,
                                   sniffing, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                node.0,
                id,
                tag,
                new.listen,
                new.port as i64,
                new.protocol,
                new.remark,
                new.enable,
                new.settings,
                new.stream_settings,
                new.sniffing,
                unix(OffsetDateTime::now_utc())
            ],
        )?;
        tx.execute("UPDATE nodes SET next_inbound_id = ?2 WHERE id = ?1", params![node.0, id + 1])?;
        for c in clients {
            insert_client(&tx, node, id, c)?;
        }
        bump(&tx, node)?;
        let record = tx.query_row(
            &format!("SELECT {INBOUND_COLUMNS} FROM inbounds WHERE node_id = ?1 AND id = ?2"),
            params![node.0, id],
            inbound_from_row,
        )?;
        tx.commit()?;
        Ok(record)
    }

    /// Inbounds of one node, or of every node, by node then id.
    pub fn inbounds(&self, node: Option<NodeId>) -> Result<Vec<InboundRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {INBOUND_COLUMNS} FROM inbounds WHERE node_id BETWEEN ?1 AND ?2 ORDER BY node_id, id"
        ))?;
        let (lo, hi) = node_range(node);
        let rows = stmt.query_map(params![lo, hi], inbound_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One inbound.
    pub fn inbound(&self, node: NodeId, id: i64) -> Result<Option<InboundRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {INBOUND_COLUMNS} FROM inbounds WHERE node_id = ?1 AND id = ?2"),
                params![node.0, id],
                inbound_from_row,
            )
            .optional()?)
    }

    /// Deletes an inbound and its clients. False if there was none.
    pub fn delete_inbound(&self, node: NodeId, id: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let gone = tx.execute("DELETE FROM inbounds WHERE node_id = ?1 AND id = ?2", params![node.0, id])? > 0;
        if gone {
            bump(&tx, node)?;
        }
        tx.commit()?;
        Ok(gone)
    }

    /// Sets an inbound's remark and/or enable flag. Returns the inbound as it is now and whether
    /// anything changed (the revision moves only then), or None if there is no such inbound.
    pub(crate) fn update_inbound_flags(
        &self,
        node: NodeId,
        id: i64,
        remark: Option<&str>,
        enable: Option<bool>,
    ) -> Result<Option<(InboundRecord, bool)>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let select = format!("SELECT {INBOUND_COLUMNS} FROM inbounds WHERE node_id = ?1 AND id = ?2");
        let Some(before) = tx.query_row(&select, params![node.0, id], inbound_from_row).optional()? else {
            return Ok(None);
        };
        let remark = remark.unwrap_or(&before.remark);
        let enable = enable.unwrap_or(before.enable);
        let changed = remark != before.remark || enable != before.enable;
        if changed {
            tx.execute(
                "UPDATE inbounds SET remark = ?3, enable = ?4 WHERE node_id = ?1 AND id = ?2",
                params![node.0, id, remark, enable],
            )?;
            bump(&tx, node)?;
        }
        let after = tx.query_row(&select, params![node.0, id], inbound_from_row)?;
        tx.commit()?;
        Ok(Some((after, changed)))
    }

    /// Adds clients to an inbound; each gets its own outcome (a taken email fails alone).
    pub fn add_clients(
        &self,
        node: NodeId,
        inbound_id: i64,
        clients: &[NewClient],
    ) -> Result<Vec<Result<(), String>>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: bool = tx
            .query_row("SELECT 1 FROM inbounds WHERE node_id = ?1 AND id = ?2", params![node.0, inbound_id], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            return Err(StoreError::NotFound(format!("inbound {inbound_id} on node {node}")));
        }
        let mut outcomes = Vec::with_capacity(clients.len());
        for c in clients {
            outcomes.push(match insert_client(&tx, node, inbound_id, c) {
                Ok(()) => Ok(()),
                Err(StoreError::Invalid(why)) => Err(why),
                Err(e) => return Err(e),
            });
        }
        if outcomes.iter().any(Result::is_ok) {
            bump(&tx, node)?;
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Clients, optionally of one node and/or whose email contains `email` (case-insensitive).
    pub fn clients(&self, node: Option<NodeId>, email: Option<&str>) -> Result<Vec<ClientRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CLIENT_COLUMNS} FROM clients
             WHERE node_id BETWEEN ?1 AND ?2 AND (?3 IS NULL OR instr(lower(email), lower(?3)) > 0)
             ORDER BY node_id, inbound_id, id"
        ))?;
        let (lo, hi) = node_range(node);
        let rows = stmt.query_map(params![lo, hi, email], client_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Clients with exactly this email (any case), across the fleet.
    pub fn clients_with_email(&self, email: &str) -> Result<Vec<ClientRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE email = ?1 ORDER BY node_id, id"))?;
        let rows = stmt.query_map(params![email], client_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The client of `inbound_id` on `node` named by its UUID/password (or, failing that, email).
    pub fn client(&self, node: NodeId, inbound_id: i64, key: &str) -> Result<Option<ClientRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {CLIENT_COLUMNS} FROM clients WHERE node_id = ?1 AND inbound_id = ?2
                     AND (secret = ?3 OR email = ?3) ORDER BY secret = ?3 DESC LIMIT 1"
                ),
                params![node.0, inbound_id, key],
                client_from_row,
            )
            .optional()?)
    }

    /// Replaces a client's editable fields (looked up by row).
    pub fn update_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let taken: Option<i64> = tx
            .query_row(
                "SELECT id FROM clients WHERE node_id = ?1 AND email = ?2 AND id != ?3",
                params![client.node_id.0, client.email, client.row],
                |r| r.get(0),
            )
            .optional()?;
        if taken.is_some() {
            return Err(StoreError::Invalid(format!(
                "email: {:?} is already used by another client on node {}",
                client.email, client.node_id
            )));
        }
        tx.execute(
            "UPDATE clients SET email = ?2, secret = ?3, flow = ?4, enable = ?5, expiry_ms = ?6, total_bytes = ?7,
                    limit_ip = ?8, sub_id = ?9, tg_id = ?10, comment = ?11
             WHERE id = ?1",
            params![
                client.row,
                client.email,
                client.secret,
                client.flow,
                client.enable,
                client.expiry_ms,
                client.total_bytes as i64,
                client.limit_ip as i64,
                client.sub_id,
                client.tg_id,
                client.comment
            ],
        )?;
        bump(&tx, client.node_id)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes one client (by row).
    pub fn delete_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if tx.execute("DELETE FROM clients WHERE id = ?1", params![client.row])? > 0 {
            bump(&tx, client.node_id)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes the clients of `node` matching `filter`; returns their emails.
    pub fn delete_clients_matching(
        &self,
        node: NodeId,
        filter: &ClientFilter,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let doomed: Vec<ClientRecord> = self
            .clients(Some(node), filter.email_pattern.as_deref())?
            .into_iter()
            .filter(|c| !filter.expired_only || c.expired(now_ms))
            .filter(|c| !filter.depleted_only || c.depleted())
            .collect();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for c in &doomed {
            tx.execute("DELETE FROM clients WHERE id = ?1", params![c.row])?;
        }
        if !doomed.is_empty() {
            bump(&tx, node)?;
        }
        tx.commit()?;
        Ok(doomed.into_iter().map(|c| c.email).collect())
    }

    /// Zeroes the traffic of the given clients (rows) of `node`, or of every client of the node
    /// (optionally of one inbound) when `rows` is None. The reset generation moves on, so the
    /// agent zeroes its own usage and lifts quota cut-offs. Returns how many were reset.
    pub fn reset_traffic(
        &self,
        node: NodeId,
        inbound_id: Option<i64>,
        rows: Option<&[i64]>,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut count = 0;
        match rows {
            Some(rows) => {
                for row in rows {
                    count += tx.execute(
                        "UPDATE clients SET up = 0, down = 0, reset_generation = reset_generation + 1,
                                cut_off = CASE WHEN cut_off = 'depleted' THEN NULL ELSE cut_off END
                         WHERE id = ?1 AND node_id = ?2",
                        params![row, node.0],
                    )?;
                }
            }
            None => {
                count = tx.execute(
                    "UPDATE clients SET up = 0, down = 0, reset_generation = reset_generation + 1,
                            cut_off = CASE WHEN cut_off = 'depleted' THEN NULL ELSE cut_off END
                     WHERE node_id = ?1 AND (?2 IS NULL OR inbound_id = ?2)",
                    params![node.0, inbound_id],
                )?;
                tx.execute(
                    "UPDATE inbounds SET up = 0, down = 0 WHERE node_id = ?1 AND (?2 IS NULL OR id = ?2)",
                    params![node.0, inbound_id],
                )?;
            }
        }
        if count > 0 {
            bump(&tx, node)?;
        }
        tx.commit()?;
        Ok(count)
    }

    /// The node's desired proxy state, as pushed to its agent.
    pub fn proxy_state(&self, node: NodeId) -> Result<ProxyState, StoreError> {
        let revision = self.node(node)?.ok_or_else(|| StoreError::NotFound(format!("node {node}")))?.revision;
        let inbounds = self.inbounds(Some(node))?;
        let tags: HashMap<i64, &str> = inbounds.iter().map(|i| (i.id, i.tag.as_str())).collect();
        let clients = self
            .clients(Some(node), None)?
            .into_iter()
            .filter_map(|c| {
                Some(ClientSpec {
                    inbound_tag: tags.get(&c.inbound_id)?.to_string(),
                    email: c.email,
                    secret: c.secret,
                    flow: c.flow,
                    enable: c.enable,
                    expiry_ms: c.expiry_ms,
                    total_bytes: c.total_bytes,
                    reset_generation: c.reset_generation,
                })
            })
            .collect();
        let inbounds = inbounds
            .into_iter()
            .map(|i| InboundSpec {
                tag: i.tag,
                listen: i.listen,
                port: i.port,
                protocol: i.protocol,
                settings: i.settings,
                stream_settings: i.stream_settings,
                sniffing: i.sniffing,
                enable: i.enable,
            })
            .collect();
        Ok(ProxyState { revision, inbounds, clients })
    }

    /// Applies one traffic journal batch of `node` exactly once: a batch at or below the node's
    /// cursor for the same journal was committed before and is skipped. Returns whether it was
    /// applied. The node's total counts client traffic; for a core without per-user counters
    /// (`per_user_stats` false: sing-box release builds) it counts inbound traffic instead.
    pub fn apply_traffic_batch(
        &self,
        node: NodeId,
        batch: &TrafficBatch,
        per_user_stats: bool,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let cursor: Option<(i64, i64)> = tx
            .query_row("SELECT journal, seq FROM traffic_cursors WHERE node_id = ?1", params![node.0], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((journal, seq)) = cursor {
            if journal == batch.journal as i64 && batch.seq as i64 <= seq {
                return Ok(false);
            }
        }
        let (mut up, mut down) = (0u64, 0u64);
        {
            let mut client = tx.prepare_cached(
                "UPDATE clients SET up = up + ?3, down = down + ?4 WHERE node_id = ?1 AND email = ?2",
            )?;
            for u in &batch.users {
                client.execute(params![node.0, u.email, u.up as i64, u.down as i64])?;
                up = up.saturating_add(u.up);
                down = down.saturating_add(u.down);
            }
            let mut inbound = tx
                .prepare_cached("UPDATE inbounds SET up = up + ?3, down = down + ?4 WHERE node_id = ?1 AND tag = ?2")?;
            for i in &batch.inbounds {
                inbound.execute(params![node.0, i.tag, i.up as i64, i.down as i64])?;
            }
            if !per_user_stats {
                for i in &batch.inbounds {
                    up = up.saturating_add(i.up);
                    down = down.saturating_add(i.down);
                }
            }
        }
        tx.execute(
            "INSERT INTO node_traffic (node_id, up, down) VALUES (?1, ?2, ?3)
             ON CONFLICT(node_id) DO UPDATE SET up = up + excluded.up, down = down + excluded.down",
            params![node.0, up as i64, down as i64],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO traffic_cursors (node_id, journal, seq) VALUES (?1, ?2, ?3)",
            params![node.0, batch.journal as i64, batch.seq as i64],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Client traffic per node (all clients ever, deleted ones included).
    pub fn node_traffic(&self) -> Result<HashMap<NodeId, (u64, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT node_id, up, down FROM node_traffic")?;
        let rows = stmt
            .query_map([], |r| Ok((NodeId(r.get(0)?), (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))))?
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(rows)
    }

    /// Records which clients of `node` its agent has cut off (replacing the previous report).
    /// Clients newly cut raise `quota.exhausted` or `client.expired` in the same transaction.
    pub fn set_cut_offs(&self, node: NodeId, cut: &[(String, CutOff)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let before: HashMap<String, String> = {
            let mut stmt =
                tx.prepare_cached("SELECT email, cut_off FROM clients WHERE node_id = ?1 AND cut_off IS NOT NULL")?;
            let rows = stmt.query_map(params![node.0], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        tx.execute("UPDATE clients SET cut_off = NULL WHERE node_id = ?1 AND cut_off IS NOT NULL", params![node.0])?;
        for (email, why) in cut {
            let why_text = cut_off_str(*why);
            let changed = tx.execute(
                "UPDATE clients SET cut_off = ?3 WHERE node_id = ?1 AND email = ?2",
                params![node.0, email, why_text],
            )?;
            if changed == 0 || before.get(email).map(String::as_str) == Some(why_text) {
                continue;
            }
            let (up, down, total_bytes, expiry_ms): (i64, i64, i64, i64) = tx.query_row(
                "SELECT up, down, total_bytes, expiry_ms FROM clients WHERE node_id = ?1 AND email = ?2",
                params![node.0, email],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            let (kind, data) = match why {
                CutOff::Depleted => (
                    events::QUOTA_EXHAUSTED,
                    json!({ "node_id": node.0, "client_type": "proxy", "client": email,
                            "used_bytes": up + down, "quota_bytes": total_bytes }),
                ),
                CutOff::Expired => (
                    events::CLIENT_EXPIRED,
                    json!({ "node_id": node.0, "client_type": "proxy", "client": email,
                            "expired_at": iso_ms(expiry_ms) }),
                ),
            };
            enqueue_event(&tx, &NewEvent::new(kind, data), &Audience::Fleet)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Counts one subscription fetch of `email`.
    pub fn record_sub_fetch(&self, email: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO sub_fetches (email, count, last_at) VALUES (?1, 1, ?2)
             ON CONFLICT(email) DO UPDATE SET count = count + 1, last_at = excluded.last_at",
            params![email, unix(OffsetDateTime::now_utc())],
        )?;
        Ok(())
    }

    /// Subscription fetches per email: (count, last fetch).
    pub fn sub_fetches(&self) -> Result<HashMap<String, (u64, OffsetDateTime)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT email, count, last_at FROM sub_fetches")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?.to_lowercase(), (r.get::<_, i64>(1)? as u64, from_unix(r.get(2)?))))
            })?
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewNode;
    use flotilla_protocol::proxy::UserTraffic;

    fn setup() -> (tempfile::TempDir, Store, NodeId) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let node = store.create_node(&NewNode { name: "n".into(), ..Default::default() }).unwrap().id;
        (dir, store, node)
    }

    fn inbound(port: u16) -> NewInbound {
        NewInbound {
            port,
            protocol: "vless".into(),
            enable: true,
            settings: "{}".into(),
            stream_settings: "{}".into(),
            sniffing: "{}".into(),
            ..Default::default()
        }
    }

    fn client(email: &str) -> NewClient {
        NewClient { email: email.into(), secret: format!("secret-{email}"), enable: true, ..Default::default() }
    }

    #[test]
    fn inbounds_are_numbered_per_node_and_ports_are_unique() {
        let (_d, s, node) = setup();
        let a = s.create_inbound(node, &inbound(443), &[client("a@x")]).unwrap();
        assert_eq!((a.id, a.tag.as_str()), (1, "inbound-443"));
        let err = s.create_inbound(node, &inbound(443), &[]).unwrap_err().to_string();
        assert!(err.contains("port: 443"), "{err}");
        let b = s.create_inbound(node, &inbound(8443), &[]).unwrap();
        assert_eq!(b.id, 2);
        let before = s.node(node).unwrap().unwrap().revision;
        let outcomes = s.add_clients(node, 2, &[client("A@x"), client("b@x")]).unwrap();
        assert!(outcomes[0].as_ref().unwrap_err().contains("already used"), "{outcomes:?}");
        assert!(outcomes[1].is_ok());
        assert_eq!(s.node(node).unwrap().unwrap().revision, before + 1);
        let state = s.proxy_state(node).unwrap();
        assert_eq!(state.inbounds.len(), 2);
        assert_eq!(state.clients.len(), 2);
        assert!(s.delete_inbound(node, 1).unwrap());
        assert_eq!(s.clients(Some(node), None).unwrap().len(), 1, "clients go with their inbound");
        assert_eq!(s.create_inbound(node, &inbound(443), &[]).unwrap().id, 3, "ids are not reused");
    }

    #[test]
    fn inbound_remark_and_enable_change_and_move_the_revision_only_when_different() {
        let (_d, s, node) = setup();
        s.create_inbound(node, &inbound(443), &[]).unwrap();
        let rev = || s.node(node).unwrap().unwrap().revision;
        let before = rev();
        let (i, changed) = s.update_inbound_flags(node, 1, None, Some(false)).unwrap().unwrap();
        assert!(changed && !i.enable && i.remark.is_empty());
        assert_eq!(rev(), before + 1);
        let (i, changed) = s.update_inbound_flags(node, 1, Some("main"), None).unwrap().unwrap();
        assert!(changed && !i.enable && i.remark == "main", "the other field is kept");
        let (_, changed) = s.update_inbound_flags(node, 1, Some("main"), Some(false)).unwrap().unwrap();
        assert!(!changed);
        assert_eq!(rev(), before + 2, "no change, no new revision");
        assert!(!s.proxy_state(node).unwrap().inbounds[0].enable);
        assert!(s.update_inbound_flags(node, 9, None, Some(true)).unwrap().is_none());
    }

    #[test]
    fn traffic_batches_apply_exactly_once_per_journal() {
        let (_d, s, node) = setup();
        s.create_inbound(node, &inbound(443), &[client("a@x")]).unwrap();
        let batch = |journal, seq| TrafficBatch {
            journal,
            seq,
            taken_at_ms: 0,
            users: vec![UserTraffic { email: "A@X".into(), up: 10, down: 100 }],
            inbounds: vec![],
        };
        assert!(s.apply_traffic_batch(node, &batch(7, 1), true).unwrap());
        assert!(!s.apply_traffic_batch(node, &batch(7, 1), true).unwrap(), "replay skipped");
        assert!(s.apply_traffic_batch(node, &batch(7, 2), true).unwrap());
        assert!(s.apply_traffic_batch(node, &batch(8, 1), true).unwrap(), "a new journal starts over");
        let c = &s.clients(Some(node), None).unwrap()[0];
        assert_eq!((c.up, c.down), (30, 300));
        assert_eq!(s.node_traffic().unwrap()[&node], (30, 300));
        assert_eq!(s.reset_traffic(node, None, Some(&[c.row])).unwrap(), 1);
        let c = &s.clients(Some(node), None).unwrap()[0];
        assert_eq!((c.up, c.down, c.reset_generation), (0, 0, 1));
    }

    #[test]
    fn clients_newly_cut_off_raise_quota_and_expiry_events_once() {
        use crate::store::webhooks::tests::{hook, queued};
        use crate::store::Role;
        let (_d, s, node) = setup();
        let admin = s.create_user("root", "x", Role::Admin).unwrap();
        hook(&s, admin, &["quota.exhausted", "client.expired"]);
        let mut a = client("a@x");
        a.total_bytes = 1000;
        s.create_inbound(node, &inbound(443), &[a, client("b@x")]).unwrap();
        let cut = [("a@x".to_string(), CutOff::Depleted), ("b@x".to_string(), CutOff::Expired)];
        s.set_cut_offs(node, &cut).unwrap();
        let events = queued(&s);
        let kinds: Vec<_> =
            events.iter().map(|e| (e["type"].as_str().unwrap(), e["data"]["client"].as_str().unwrap())).collect();
        assert_eq!(kinds, [("quota.exhausted", "a@x"), ("client.expired", "b@x")]);
        assert_eq!(events[0]["data"]["quota_bytes"], 1000);
        // The same report again raises nothing; a change of reason does.
        s.set_cut_offs(node, &cut).unwrap();
        assert!(queued(&s).is_empty());
        s.set_cut_offs(node, &[("b@x".to_string(), CutOff::Depleted)]).unwrap();
        let again = queued(&s);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0]["type"], "quota.exhausted");
        assert_eq!(again[0]["data"]["client_type"], "proxy");
        assert_eq!(again[0]["data"]["client"], "b@x");
    }
}
