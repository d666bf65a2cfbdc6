//! The v2ray-stat API fleet-wide (`api-docs/v2ray-stat.md`): the same endpoints, parameters and
//! plain-text answers as each agent's local API (the handlers are the agent's, shared), behind
//! the controller's authentication (HTTP Basic, or `Authorization: Bearer <api_token>` when a
//! token is configured).
//!
//! `node_id` (query or form) picks one node; without it reads aggregate across nodes (users by
//! name, sources by tag) and writes go to every node that has the user, or for a new user every
//! node with its inbound tag. Writes land in the store first and are pushed to the agents; an
//! offline node converges when it reconnects. Live figures (rates, session counters, source
//! addresses) come from the agents; an offline node contributes its stored totals.

pub mod openapi;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use flotilla_agent::drivers::core::UserChangeError;
use flotilla_agent::local_api::{self, UserDirectory};
use flotilla_protocol::codec;
use flotilla_protocol::rpc::RequestKind;
use flotilla_protocol::users::{
    DnsStat, DnsStatsQuery, LocalChange, SourceStat, StatsReset, UserChange, UserStat, UserStats,
};
use flotilla_protocol::NodeId;

use super::AppState;
use crate::auth::AuthError;
use crate::fleet::Fleet;
use crate::store::{ChangeRefusal, Store};

/// How long a read waits for each agent.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the fleet-wide family.
#[derive(Debug, Clone, Default)]
pub struct V2rayStatSettings {
    /// Accepted as `Authorization: Bearer <token>` besides Basic (None: Basic only).
    pub api_token: Option<String>,
    /// Columns of `GET /api/v1/stats`, and the default inbound tag.
    pub local: local_api::LocalApiSettings,
}

/// The family's routes; every request is authenticated and scoped by [`scope`].
pub fn router(state: AppState) -> Router<AppState> {
    let settings = state.v2ray_stat.local.clone();
    local_api::routes(&settings).layer(axum::middleware::from_fn_with_state(state, scope))
}

/// Authenticates the caller and gives the shared handlers a directory of the selected node (or
/// of the whole fleet).
async fn scope(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let bearer = header.as_deref().and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
    let authorized = match (bearer, &state.v2ray_stat.api_token) {
        (Some(given), Some(token)) => constant_time_eq(given.as_bytes(), token.as_bytes()),
        (Some(_), None) => false,
        (None, _) => match state.auth.basic(header.as_deref()).await {
            Ok(_) => true,
            Err(AuthError::Store(e)) => {
                tracing::error!(error = %e, "authentication store failure");
                return (StatusCode::INTERNAL_SERVER_ERROR, "authentication unavailable\n").into_response();
            }
            Err(_) => false,
        },
    };
    if !authorized {
        let mut response =
            (StatusCode::UNAUTHORIZED, "Unauthorized: use HTTP Basic or Bearer <api_token>\n").into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"flotilla\""));
        return response;
    }
    // `node_id` may come in the query or in a form body; the body is read once and put back.
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response(),
    };
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let from_query = parts.uri.query().and_then(|q| node_id_param(q.as_bytes()));
    let from_form = if is_form { node_id_param(&bytes) } else { None };
    let node = match from_query.or(from_form) {
        None => None,
        Some(raw) => match raw.parse::<i64>().ok().filter(|n| *n > 0).map(NodeId) {
            Some(node) => match state.store.node(node) {
                Ok(Some(_)) => Some(node),
                Ok(None) => return (StatusCode::NOT_FOUND, format!("node {node} not found\n")).into_response(),
                Err(e) => {
                    tracing::error!(error = %e, "store failure");
                    return (StatusCode::INTERNAL_SERVER_ERROR, "store unavailable\n").into_response();
                }
            },
            None => {
                return (StatusCode::BAD_REQUEST, format!("node_id must be a positive integer, got {raw:?}\n"))
                    .into_response()
            }
        },
    };
    let directory: Arc<dyn UserDirectory> =
        Arc::new(FleetDirectory { fleet: state.fleet.clone(), store: state.store.clone(), node });
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(directory);
    next.run(request).await
}

fn node_id_param(encoded: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(encoded).find(|(k, _)| k == "node_id").map(|(_, v)| v.into_owned())
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The users of one node, or of the fleet, as the v2ray-stat handlers see them.
pub struct FleetDirectory {
    fleet: Arc<Fleet>,
    store: Store,
    node: Option<NodeId>,
}

impl FleetDirectory {
    /// Nodes in scope.
    fn nodes(&self) -> Vec<NodeId> {
        match self.node {
            Some(n) => vec![n],
            None => self.store.nodes().map(|ns| ns.into_iter().map(|n| n.id).collect()).unwrap_or_default(),
        }
    }

    /// One node's stats: from its agent when it answers, else from the store's totals.
    async fn node_stats(&self, node: NodeId) -> UserStats {
        if self.fleet.live(node).lifecycle_capable {
            if let Ok(answer) = self.fleet.call(node, RequestKind::USER_STATS, vec![], AGENT_TIMEOUT).await {
                if let Ok(stats) = codec::decode_from::<UserStats>(&answer) {
                    return stats;
                }
            }
        }
        self.stored_stats(node)
    }

    fn stored_stats(&self, node: NodeId) -> UserStats {
        let Ok(desired) = self.store.desired_users(node) else {
            return UserStats { sources: vec![], users: vec![], per_user_stats: true, unavailable: vec![] };
        };
        let clients: HashMap<String, (u64, u64, bool)> = self
            .store
            .clients(Some(node), None)
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.email.to_lowercase(), (c.up, c.down, c.cut_off.is_some())))
            .collect();
        let lifecycle: HashMap<String, _> =
            desired.lifecycle.iter().map(|l| (l.email.to_lowercase(), l.clone())).collect();
        let users = desired
            .state
            .clients
            .iter()
            .map(|c| {
                let key = c.email.to_lowercase();
                let (up, down, cut) = clients.get(&key).copied().unwrap_or_default();
                UserStat {
                    uplink: up,
                    downlink: down,
                    enabled: c.enable && !cut,
                    ..UserStat::from_desired(c, lifecycle.get(&key))
                }
            })
            .collect();
        UserStats { sources: vec![], users, per_user_stats: true, unavailable: vec![] }
    }

    /// Nodes a change applies to: the selected one, or those having the user (for a new user,
    /// its inbound tag).
    fn targets(&self, change: &UserChange) -> Result<Vec<NodeId>, UserChangeError> {
        let store_err = |e: crate::store::StoreError| UserChangeError::Store(e.to_string());
        if let Some(node) = self.node {
            return Ok(vec![node]);
        }
        match change {
            UserChange::Add { client, .. } => {
                let nodes: Vec<NodeId> = self
                    .store
                    .inbounds(None)
                    .map_err(store_err)?
                    .into_iter()
                    .filter(|i| i.tag == client.inbound_tag)
                    .map(|i| i.node_id)
                    .collect();
                if nodes.is_empty() {
                    return Err(UserChangeError::UnknownInbound(client.inbound_tag.clone()));
                }
                Ok(nodes)
            }
            UserChange::ResetTraffic { email: None } => Ok(self.nodes()),
            other => {
                let email = other.email().unwrap_or_default();
                let mut nodes: Vec<NodeId> =
                    self.store.clients_with_email(email).map_err(store_err)?.into_iter().map(|c| c.node_id).collect();
                nodes.dedup();
                if nodes.is_empty() {
                    return Err(UserChangeError::UnknownUser(email.to_string()));
                }
                Ok(nodes)
            }
        }
    }

    async fn reset_on(&self, nodes: Vec<NodeId>, what: StatsReset) {
        let Ok(body) = codec::encode_body(&what) else { return };
        let calls = nodes.into_iter().filter(|n| self.fleet.live(*n).lifecycle_capable).map(|node| {
            let (fleet, body) = (self.fleet.clone(), body.clone());
            async move {
                if let Err(e) = fleet.call(node, RequestKind::RESET_STATS, body, AGENT_TIMEOUT).await {
                    tracing::warn!(node_id = %node, error = %e, "statistics reset not delivered");
                }
            }
        });
        futures_util::future::join_all(calls).await;
    }
}

#[async_trait::async_trait]
impl UserDirectory for FleetDirectory {
    async fn user_stats(&self) -> UserStats {
        let per_node = futures_util::future::join_all(self.nodes().into_iter().map(|n| self.node_stats(n))).await;
        if self.node.is_some() {
            return per_node.into_iter().next().unwrap_or(UserStats {
                sources: vec![],
                users: vec![],
                per_user_stats: true,
                unavailable: vec![],
            });
        }
        merge(per_node)
    }

    async fn change_users(&self, changes: Vec<UserChange>) -> Vec<Result<(), UserChangeError>> {
        // Group the changes per node (in order), apply each node's in one transaction, push once.
        let mut per_node: BTreeMap<NodeId, Vec<(usize, LocalChange)>> = BTreeMap::new();
        let mut results: Vec<Result<(), UserChangeError>> = Vec::with_capacity(changes.len());
        for (index, change) in changes.into_iter().enumerate() {
            match self.targets(&change) {
                Ok(nodes) => {
                    for node in nodes {
                        let entry = LocalChange { id: index as u64 + 1, made_at_ms: 0, change: change.clone() };
                        per_node.entry(node).or_default().push((index, entry));
                    }
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        // A change succeeds if any target node took it; otherwise it fails with the first refusal.
        let mut applied: HashSet<usize> = HashSet::new();
        let mut refused: HashMap<usize, UserChangeError> = HashMap::new();
        let mut touched = Vec::new();
        for (node, entries) in per_node {
            let store = self.store.clone();
            let list: Vec<LocalChange> = entries.iter().map(|(_, c)| c.clone()).collect();
            let outcome = tokio::task::spawn_blocking(move || store.apply_user_changes(node, None, &list))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match outcome {
                Ok(done) => {
                    let refusals: HashMap<u64, ChangeRefusal> = done.refused.into_iter().collect();
                    for (index, entry) in &entries {
                        match refusals.get(&entry.id) {
                            Some(why) => {
                                refused.entry(*index).or_insert_with(|| refusal(why));
                            }
                            None => {
                                applied.insert(*index);
                            }
                        }
                    }
                    touched.push(node);
                }
                Err(e) => {
                    for (index, _) in &entries {
                        refused.entry(*index).or_insert_with(|| UserChangeError::Store(e.clone()));
                    }
                }
            }
        }
        for (index, result) in results.iter_mut().enumerate() {
            if result.is_ok() && !applied.contains(&index) {
                *result = Err(refused
                    .remove(&index)
                    .unwrap_or_else(|| UserChangeError::Store("no node took the change".into())));
            }
        }
        if !touched.is_empty() {
            self.fleet.push_many(&touched).await;
        }
        results
    }

    async fn dns_stats(&self, query: &DnsStatsQuery) -> Vec<DnsStat> {
        let Ok(body) = codec::encode_body(query) else { return vec![] };
        let calls = self.nodes().into_iter().filter(|n| self.fleet.live(*n).lifecycle_capable).map(|node| {
            let (fleet, body) = (self.fleet.clone(), body.clone());
            async move {
                let answer = fleet.call(node, RequestKind::DNS_STATS, body, AGENT_TIMEOUT).await.ok()?;
                codec::decode_from::<Vec<DnsStat>>(&answer).ok()
            }
        });
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for stats in futures_util::future::join_all(calls).await.into_iter().flatten() {
            for s in stats {
                *counts.entry((s.user, s.domain)).or_default() += s.count;
            }
        }
        let mut merged: Vec<DnsStat> =
            counts.into_iter().map(|((user, domain), count)| DnsStat { user, domain, count }).collect();
        merged.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.domain.cmp(&b.domain)));
        merged.truncate(query.count as usize);
        merged
    }

    async fn reset_stats(&self, what: StatsReset) {
        self.reset_on(self.nodes(), what).await;
    }
}

/// A refusal from the store, as the shared handlers answer it.
fn refusal(why: &ChangeRefusal) -> UserChangeError {
    match why {
        ChangeRefusal::UnknownUser(email) => UserChangeError::UnknownUser(email.clone()),
        ChangeRefusal::UnknownInbound(tag) => UserChangeError::UnknownInbound(tag.clone()),
        ChangeRefusal::Taken(email) => UserChangeError::Exists(email.clone()),
    }
}

/// The fleet's view: users merged by name (traffic summed, newest activity, any node enabled),
/// sources merged by direction and tag.
fn merge(per_node: Vec<UserStats>) -> UserStats {
    let mut users: BTreeMap<String, UserStat> = BTreeMap::new();
    let mut sources: BTreeMap<(String, String), SourceStat> = BTreeMap::new();
    let mut unavailable: Vec<String> = Vec::new();
    let mut per_user_stats = true;
    for stats in per_node {
        per_user_stats &= stats.per_user_stats;
        for column in stats.unavailable {
            if !unavailable.contains(&column) {
                unavailable.push(column);
            }
        }
        for u in stats.users {
            match users.get_mut(&u.email.to_lowercase()) {
                None => {
                    users.insert(u.email.to_lowercase(), u);
                }
                Some(m) => {
                    m.rate_bps += u.rate_bps;
                    m.uplink += u.uplink;
                    m.downlink += u.downlink;
                    m.sess_uplink += u.sess_uplink;
                    m.sess_downlink += u.sess_downlink;
                    m.enabled |= u.enabled;
                    m.last_seen_ms = m.last_seen_ms.max(u.last_seen_ms);
                    m.sub_end_ms =
                        if m.sub_end_ms == 0 || u.sub_end_ms == 0 { 0 } else { m.sub_end_ms.max(u.sub_end_ms) };
                    m.limit_ip = m.limit_ip.max(u.limit_ip);
                    m.renew_days = m.renew_days.max(u.renew_days);
                    m.created_ms = if m.created_ms == 0 { u.created_ms } else { m.created_ms.min(u.created_ms.max(1)) };
                    for ip in u.ips {
                        if !m.ips.contains(&ip) {
                            m.ips.push(ip);
                        }
                    }
                }
            }
        }
        for s in stats.sources {
            let slot = sources.entry((s.direction.clone(), s.tag.clone())).or_insert_with(|| SourceStat {
                direction: s.direction.clone(),
                tag: s.tag.clone(),
                rate_bps: 0,
                uplink: 0,
                downlink: 0,
                sess_uplink: 0,
                sess_downlink: 0,
            });
            slot.rate_bps += s.rate_bps;
            slot.uplink += s.uplink;
            slot.downlink += s.downlink;
            slot.sess_uplink += s.sess_uplink;
            slot.sess_downlink += s.sess_downlink;
        }
    }
    UserStats {
        sources: sources.into_values().collect(),
        users: users.into_values().collect(),
        per_user_stats,
        unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: &str, up: u64, enabled: bool) -> UserStat {
        UserStat {
            email: email.into(),
            secret: "s".into(),
            inbound_tag: "vless-in".into(),
            last_seen_ms: Some(up as i64),
            rate_bps: 8,
            uplink: up,
            downlink: 1,
            sess_uplink: 0,
            sess_downlink: 0,
            enabled,
            sub_end_ms: 100,
            renew_days: 0,
            limit_ip: 0,
            ips: vec![format!("10.0.0.{up}")],
            created_ms: 5,
        }
    }

    #[test]
    fn fleet_view_merges_users_by_name_and_sources_by_tag() {
        let source = |tag: &str, up| SourceStat {
            direction: "inbound".into(),
            tag: tag.into(),
            rate_bps: 1,
            uplink: up,
            downlink: 0,
            sess_uplink: 0,
            sess_downlink: 0,
        };
        let a = UserStats {
            sources: vec![source("vless-in", 10)],
            users: vec![user("alice", 3, false), user("bob", 1, true)],
            per_user_stats: true,
            unavailable: vec![],
        };
        let b = UserStats {
            sources: vec![source("vless-in", 5), source("other", 1)],
            users: vec![user("Alice", 4, true)],
            per_user_stats: false,
            unavailable: vec!["rate".into()],
        };
        let m = merge(vec![a, b]);
        assert_eq!(m.users.len(), 2);
        let alice = &m.users[0];
        assert_eq!((alice.uplink, alice.downlink, alice.rate_bps, alice.enabled), (7, 2, 16, true));
        assert_eq!(alice.last_seen_ms, Some(4));
        assert_eq!(alice.ips, vec!["10.0.0.3".to_string(), "10.0.0.4".to_string()]);
        assert_eq!(m.sources.len(), 2);
        assert_eq!(m.sources.iter().find(|s| s.tag == "vless-in").unwrap().uplink, 15);
        assert!(!m.per_user_stats);
        assert_eq!(m.unavailable, vec!["rate".to_string()]);
    }

    #[test]
    fn bearer_comparison_is_exact() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }
}
