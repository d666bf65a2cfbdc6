//! The per-host user lifecycle (the v2ray-stat API): settings a client has beyond what its core
//! knows, user changes made on an agent and shipped to the controller, and the statistics an
//! agent reports about its users and traffic sources.
//!
//! Desired state keeps travelling as [`ProxyState`]; these lifecycle settings ride beside it in
//! [`DesiredUsers`] (request `APPLY_USERS`), so no shipped wire type changes.

use serde::{Deserialize, Serialize};

use crate::proxy::{ClientSpec, ProxyState};

/// What a client has beyond the core's own fields (keyed by email, unique per node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientLifecycle {
    pub email: String,
    /// Distinct source addresses allowed at once; 0 = no limit.
    pub limit_ip: u32,
    /// Auto-renew: when the subscription end (`expiry_ms`) passes, extend it by this many days
    /// and keep the client on; 0 = no renewal.
    pub renew_days: u32,
    /// Unix milliseconds the client was created.
    pub created_ms: i64,
}

/// `APPLY_USERS` body: the whole desired state of the node plus every client's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredUsers {
    pub state: ProxyState,
    pub lifecycle: Vec<ClientLifecycle>,
}

/// One change to the node's users. Made on an agent (its local API, or an auto-renewal) it is
/// applied there at once and shipped to the controller; the controller applies the same change
/// to its store. Values are absolute so a change applied twice does no harm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserChange {
    Add {
        client: ClientSpec,
        lifecycle: ClientLifecycle,
    },
    Delete {
        email: String,
    },
    SetEnabled {
        email: String,
        enable: bool,
    },
    SetLimitIp {
        email: String,
        limit_ip: u32,
    },
    /// New subscription end, unix milliseconds (0 = never).
    SetExpiry {
        email: String,
        expiry_ms: i64,
    },
    SetRenew {
        email: String,
        renew_days: u32,
    },
    /// Zero the traffic totals of one client, or of every client of the node. Both sides bump
    /// the client's `reset_generation` by one, so they stay equal.
    ResetTraffic {
        email: Option<String>,
    },
}

impl UserChange {
    /// The client the change is about (`None`: all of them).
    pub fn email(&self) -> Option<&str> {
        match self {
            UserChange::Add { client, .. } => Some(&client.email),
            UserChange::Delete { email }
            | UserChange::SetEnabled { email, .. }
            | UserChange::SetLimitIp { email, .. }
            | UserChange::SetExpiry { email, .. }
            | UserChange::SetRenew { email, .. } => Some(email),
            UserChange::ResetTraffic { email } => email.as_deref(),
        }
    }
}

/// A change waiting in the agent's outbox, numbered in the order it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalChange {
    pub id: u64,
    /// Unix milliseconds it was made on the agent.
    pub made_at_ms: i64,
    pub change: UserChange,
}

/// `LOCAL_USER_CHANGES` request (agent to controller): outbox entries, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalChanges {
    /// Random id of the agent's outbox, fixed when its store was created (ids restart at 1 in a
    /// new one), so the controller can skip entries it already applied.
    pub outbox: u64,
    pub changes: Vec<LocalChange>,
}

/// Answer to [`LocalChanges`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalChangesApplied {
    /// Every entry up to this id is committed (applied or refused); the agent may drop them.
    pub through: u64,
    /// Desired-state revision that contains them; the agent keeps replaying the entries over
    /// pushed states older than this.
    pub revision: u64,
    /// Entries the controller could not apply, with why (the next push corrects the agent).
    pub refused: Vec<(u64, String)>,
}

/// Traffic of one source (an inbound or outbound tag of the core).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStat {
    /// `inbound` or `outbound`.
    pub direction: String,
    pub tag: String,
    /// Bits per second over the last poll.
    pub rate_bps: u64,
    pub uplink: u64,
    pub downlink: u64,
    /// Since the core last started.
    pub sess_uplink: u64,
    pub sess_downlink: u64,
}

/// Everything known about one user of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStat {
    pub email: String,
    /// UUID or password.
    pub secret: String,
    pub inbound_tag: String,
    /// Unix milliseconds of the last poll that saw traffic (None: never).
    pub last_seen_ms: Option<i64>,
    pub rate_bps: u64,
    pub uplink: u64,
    pub downlink: u64,
    pub sess_uplink: u64,
    pub sess_downlink: u64,
    /// Enabled in the desired state and not cut off.
    pub enabled: bool,
    /// Subscription end, unix milliseconds (0 = never).
    pub sub_end_ms: i64,
    pub renew_days: u32,
    pub limit_ip: u32,
    /// Source addresses seen within the IP-limit window, most recent first.
    pub ips: Vec<String>,
    pub created_ms: i64,
}

impl UserStat {
    /// A user as the desired state has it (enabled as desired), with no traffic figures yet.
    pub fn from_desired(client: &ClientSpec, lifecycle: Option<&ClientLifecycle>) -> UserStat {
        UserStat {
            email: client.email.clone(),
            secret: client.secret.clone(),
            inbound_tag: client.inbound_tag.clone(),
            last_seen_ms: None,
            rate_bps: 0,
            uplink: 0,
            downlink: 0,
            sess_uplink: 0,
            sess_downlink: 0,
            enabled: client.enable,
            sub_end_ms: client.expiry_ms,
            renew_days: lifecycle.map(|l| l.renew_days).unwrap_or(0),
            limit_ip: lifecycle.map(|l| l.limit_ip).unwrap_or(0),
            ips: vec![],
            created_ms: lifecycle.map(|l| l.created_ms).unwrap_or(0),
        }
    }
}

/// `USER_STATS` answer: a node's sources and users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStats {
    pub sources: Vec<SourceStat>,
    pub users: Vec<UserStat>,
    /// Per-user counters are real (false: sing-box release builds, whose per-user columns stay 0).
    pub per_user_stats: bool,
    /// Columns this core cannot fill, named as the API names them.
    pub unavailable: Vec<String>,
}

/// `DNS_STATS` request: the most frequent destinations of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStatsQuery {
    pub user: String,
    pub count: u32,
}

/// One destination domain a user reached, and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStat {
    pub user: String,
    pub domain: String,
    pub count: u64,
}

/// `RESET_STATS` request: which statistics of the node to zero (agent-local ones; client
/// traffic totals go through [`UserChange::ResetTraffic`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatsReset {
    /// Totals of the traffic sources (`reset_traffic_stats`).
    Sources,
    /// The session counters and rates of sources and users (`reset_traffic`).
    Sessions,
    /// The destination statistics (`delete_dns_stats`).
    Dns,
}

/// Something the agent did to a user on its own, sent as a `USER_EVENT` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    /// More distinct source addresses than the user's `limit_ip` within the window: the user
    /// is off the core until `until_ms` (unix ms).
    IpLimitExceeded { email: String, limit: u32, ips: Vec<String>, until_ms: i64 },
}
