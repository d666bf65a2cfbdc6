//! The per-host user lifecycle in the store: what a push carries beside the proxy state (IP
//! limits, auto-renew days, creation times), and user changes applied by name — those an agent
//! made locally (exactly once, by its outbox cursor) and those of the fleet-wide v2ray-stat API.

use flotilla_protocol::proxy::ClientSpec;
use flotilla_protocol::users::{ClientLifecycle, DesiredUsers, LocalChange, LocalChangesApplied, UserChange};
use flotilla_protocol::NodeId;
use rusqlite::{params, OptionalExtension, Transaction};

use super::proxy::{bump, insert_client, NewClient};
use super::{Store, StoreError};

impl Store {
    /// The node's desired state with every client's lifecycle, as pushed to agents that keep it.
    pub fn desired_users(&self, node: NodeId) -> Result<DesiredUsers, StoreError> {
        let state = self.proxy_state(node)?;
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT email, limit_ip, renew_days, created_at FROM clients WHERE node_id = ?1 ORDER BY id",
        )?;
        let lifecycle = stmt
            .query_map(params![node.0], |r| {
                Ok(ClientLifecycle {
                    email: r.get(0)?,
                    limit_ip: r.get::<_, i64>(1)? as u32,
                    renew_days: r.get::<_, i64>(2)? as u32,
                    created_ms: r.get::<_, i64>(3)?.saturating_mul(1000),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DesiredUsers { state, lifecycle })
    }

    /// Applies user changes to `node` in one transaction. With `outbox` (changes an agent made
    /// locally), entries at or below the node's cursor for that outbox were applied before and
    /// are skipped; the cursor moves in the same transaction. The revision moves once if
    /// anything changed. Refusals are per change and do not stop the others.
    pub fn apply_user_changes(
        &self,
        node: NodeId,
        outbox: Option<u64>,
        changes: &[LocalChange],
    ) -> Result<AppliedChanges, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: Option<i64> =
            tx.query_row("SELECT revision FROM nodes WHERE id = ?1", params![node.0], |r| r.get(0)).optional()?;
        let Some(mut revision) = exists.map(|r| r as u64) else {
            return Err(StoreError::NotFound(format!("node {node}")));
        };
        let cursor = match outbox {
            Some(outbox) => tx
                .query_row(
                    "SELECT last_id FROM user_change_cursors WHERE node_id = ?1 AND outbox = ?2",
                    params![node.0, outbox as i64],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .map(|c| c as u64)
                .unwrap_or(0),
            None => 0,
        };
        let mut refused = Vec::new();
        let mut changed = false;
        let mut through = cursor;
        for entry in changes.iter().filter(|c| outbox.is_none() || c.id > cursor) {
            match apply_one(&tx, node, &entry.change)? {
                Ok(()) => changed = true,
                Err(refusal) => refused.push((entry.id, refusal)),
            }
            through = through.max(entry.id);
        }
        if changed {
            revision = bump(&tx, node)?;
        }
        if let Some(outbox) = outbox {
            tx.execute(
                "INSERT OR REPLACE INTO user_change_cursors (node_id, outbox, last_id) VALUES (?1, ?2, ?3)",
                params![node.0, outbox as i64, through as i64],
            )?;
        }
        tx.commit()?;
        Ok(AppliedChanges { through, revision, refused })
    }
}

/// Why the store refused one user change (the others still apply).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeRefusal {
    #[error("user '{0}' not found")]
    UnknownUser(String),
    #[error("inbound '{0}' not found")]
    UnknownInbound(String),
    /// The email is taken on the node (cores count traffic per email).
    #[error("user '{0}' already exists")]
    Taken(String),
}

/// What [`Store::apply_user_changes`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedChanges {
    /// Every change up to this outbox id is committed (applied or refused).
    pub through: u64,
    /// The node's revision that contains them.
    pub revision: u64,
    pub refused: Vec<(u64, ChangeRefusal)>,
}

impl AppliedChanges {
    /// The answer to an agent's `LOCAL_USER_CHANGES`.
    pub fn into_wire(self) -> LocalChangesApplied {
        let refused = self.refused.into_iter().map(|(id, why)| (id, why.to_string())).collect();
        LocalChangesApplied { through: self.through, revision: self.revision, refused }
    }
}

/// One change: the outer error fails the transaction, the inner one refuses this change alone.
fn apply_one(tx: &Transaction<'_>, node: NodeId, change: &UserChange) -> Result<Result<(), ChangeRefusal>, StoreError> {
    let unknown = |email: &str| Ok(Err(ChangeRefusal::UnknownUser(email.to_string())));
    let update = |sql: &str, email: &str, value: i64| -> Result<Result<(), ChangeRefusal>, StoreError> {
        let n = tx.execute(
            &format!("UPDATE clients SET {sql} WHERE node_id = ?1 AND email = ?2"),
            params![node.0, email, value],
        )?;
        if n == 0 {
            return unknown(email);
        }
        Ok(Ok(()))
    };
    match change {
        UserChange::Add { client, lifecycle } => {
            let inbound: Option<i64> = tx
                .query_row(
                    "SELECT id FROM inbounds WHERE node_id = ?1 AND tag = ?2",
                    params![node.0, client.inbound_tag],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(inbound) = inbound else {
                return Ok(Err(ChangeRefusal::UnknownInbound(client.inbound_tag.clone())));
            };
            match insert_client(tx, node, inbound, &new_client(client, lifecycle)) {
                Ok(()) => {}
                Err(StoreError::Invalid(_)) => return Ok(Err(ChangeRefusal::Taken(client.email.clone()))),
                Err(e) => return Err(e),
            }
            tx.execute(
                "UPDATE clients SET renew_days = ?3, created_at = ?4 WHERE node_id = ?1 AND email = ?2",
                params![node.0, client.email, lifecycle.renew_days as i64, lifecycle.created_ms / 1000],
            )?;
            Ok(Ok(()))
        }
        UserChange::Delete { email } => {
            if tx.execute("DELETE FROM clients WHERE node_id = ?1 AND email = ?2", params![node.0, email])? == 0 {
                return unknown(email);
            }
            Ok(Ok(()))
        }
        UserChange::SetEnabled { email, enable } => update("enable = ?3", email, i64::from(*enable)),
        UserChange::SetExpiry { email, expiry_ms } => {
            // A new end in the future lifts an expiry cut-off at once in the views; the agent
            // confirms with its next status.
            update(
                "expiry_ms = ?3, cut_off = CASE WHEN cut_off = 'expired' AND (?3 = 0 OR ?3 > CAST(strftime('%s','now') AS INTEGER) * 1000) THEN NULL ELSE cut_off END",
                email,
                *expiry_ms,
            )
        }
        UserChange::SetLimitIp { email, limit_ip } => update("limit_ip = ?3", email, i64::from(*limit_ip)),
        UserChange::SetRenew { email, renew_days } => update("renew_days = ?3", email, i64::from(*renew_days)),
        UserChange::ResetTraffic { email } => {
            let reset = "up = 0, down = 0, reset_generation = reset_generation + 1, \
                         cut_off = CASE WHEN cut_off = 'depleted' THEN NULL ELSE cut_off END";
            match email {
                Some(email) => update(reset, email, 0),
                None => {
                    tx.execute(&format!("UPDATE clients SET {reset} WHERE node_id = ?1"), params![node.0])?;
                    Ok(Ok(()))
                }
            }
        }
    }
}

fn new_client(client: &ClientSpec, lifecycle: &ClientLifecycle) -> NewClient {
    NewClient {
        email: client.email.clone(),
        secret: client.secret.clone(),
        flow: client.flow.clone(),
        enable: client.enable,
        expiry_ms: client.expiry_ms,
        total_bytes: client.total_bytes,
        limit_ip: lifecycle.limit_ip,
        sub_id: client.email.clone(),
        tg_id: String::new(),
        comment: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use flotilla_protocol::proxy::ClientSpec;

    use super::*;
    use crate::store::{NewInbound, NewNode};

    fn node_with_store() -> (tempfile::TempDir, Store, NodeId) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let node = store.create_node(&NewNode { name: "n".into(), ..Default::default() }).unwrap().id;
        (dir, store, node)
    }

    fn inbound(s: &Store, node: NodeId, tag: &str, port: u16) {
        let new = NewInbound {
            tag: Some(tag.into()),
            port,
            protocol: "vless".into(),
            enable: true,
            settings: "{}".into(),
            stream_settings: "{}".into(),
            sniffing: "{}".into(),
            ..Default::default()
        };
        s.create_inbound(node, &new, &[]).unwrap();
    }

    fn add(id: u64, email: &str, tag: &str) -> LocalChange {
        let client = ClientSpec {
            inbound_tag: tag.into(),
            email: email.into(),
            secret: "123e4567-e89b-12d3-a456-426614174000".into(),
            flow: String::new(),
            enable: true,
            expiry_ms: 0,
            total_bytes: 0,
            reset_generation: 0,
        };
        let lifecycle =
            ClientLifecycle { email: email.into(), limit_ip: 2, renew_days: 30, created_ms: 1_700_000_000_000 };
        LocalChange { id, made_at_ms: 0, change: UserChange::Add { client, lifecycle } }
    }

    fn change(id: u64, change: UserChange) -> LocalChange {
        LocalChange { id, made_at_ms: 0, change }
    }

    #[test]
    fn local_changes_apply_once_in_order_and_refuse_alone() {
        let (_d, s, node) = node_with_store();
        inbound(&s, node, "vless-in", 10443);
        let before = s.node(node).unwrap().unwrap().revision;
        let batch = vec![
            add(1, "newuser", "vless-in"),
            add(2, "lost", "nope"),
            change(3, UserChange::SetEnabled { email: "newuser".into(), enable: false }),
            change(4, UserChange::SetRenew { email: "ghost".into(), renew_days: 1 }),
        ];
        let applied = s.apply_user_changes(node, Some(77), &batch).unwrap();
        assert_eq!((applied.through, applied.revision), (4, before + 1));
        assert_eq!(applied.refused.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(applied.refused[0].1, ChangeRefusal::UnknownInbound("nope".into()));
        assert_eq!(applied.refused[1].1, ChangeRefusal::UnknownUser("ghost".into()));
        let desired = s.desired_users(node).unwrap();
        assert_eq!(desired.state.revision, before + 1);
        assert_eq!(desired.state.clients.len(), 1);
        assert!(!desired.state.clients[0].enable);
        assert_eq!(desired.lifecycle[0].renew_days, 30);
        assert_eq!(desired.lifecycle[0].limit_ip, 2);
        assert_eq!(desired.lifecycle[0].created_ms, 1_700_000_000_000);

        // Resent after a lost answer: nothing applies twice, the revision stays.
        let again = s.apply_user_changes(node, Some(77), &batch).unwrap();
        assert_eq!((again.through, again.revision, again.refused.len()), (4, before + 1, 0));
        // A new outbox (a wiped agent) starts over.
        let fresh = s.apply_user_changes(node, Some(78), &[change(1, UserChange::Delete { email: "newuser".into() })]);
        assert_eq!(fresh.unwrap().revision, before + 2);
        assert!(s.desired_users(node).unwrap().state.clients.is_empty());
    }
}
