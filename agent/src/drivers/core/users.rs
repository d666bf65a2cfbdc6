//! User changes made on the agent (its local v2ray-stat API, auto-renewals): validated and
//! applied to the desired state here, sans-IO, so the same code applies a new change and
//! replays the outbox over a state the controller pushed before it learnt of the change.

use std::collections::BTreeMap;

use flotilla_protocol::proxy::ProxyState;
use flotilla_protocol::users::{ClientLifecycle, UserChange};

/// Why a user change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserChangeError {
    #[error("user '{0}' not found")]
    UnknownUser(String),
    #[error("inbound '{0}' not found on this node")]
    UnknownInbound(String),
    #[error("user '{0}' already exists")]
    Exists(String),
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    #[error("this node has no proxy core to manage users on")]
    NoCore,
    #[error("agent store: {0}")]
    Store(String),
}

/// Lifecycle settings by lower-cased email.
pub type Lifecycles = BTreeMap<String, ClientLifecycle>;

/// Applies `change` to `state` and `lifecycle`, or says why it cannot apply.
pub fn apply(state: &mut ProxyState, lifecycle: &mut Lifecycles, change: &UserChange) -> Result<(), UserChangeError> {
    match change {
        UserChange::Add { client, lifecycle: life } => {
            if position(state, &client.email).is_ok() {
                return Err(UserChangeError::Exists(client.email.clone()));
            }
            if !state.inbounds.iter().any(|i| i.tag == client.inbound_tag) {
                return Err(UserChangeError::UnknownInbound(client.inbound_tag.clone()));
            }
            state.clients.push(client.clone());
            lifecycle.insert(client.email.to_lowercase(), life.clone());
        }
        UserChange::Delete { email } => {
            let at = position(state, email)?;
            state.clients.remove(at);
            lifecycle.remove(&email.to_lowercase());
        }
        UserChange::SetEnabled { email, enable } => {
            let at = position(state, email)?;
            state.clients[at].enable = *enable;
        }
        UserChange::SetExpiry { email, expiry_ms } => {
            let at = position(state, email)?;
            state.clients[at].expiry_ms = *expiry_ms;
        }
        UserChange::SetLimitIp { email, limit_ip } => {
            let at = position(state, email)?;
            entry(lifecycle, &state.clients[at].email).limit_ip = *limit_ip;
        }
        UserChange::SetRenew { email, renew_days } => {
            let at = position(state, email)?;
            entry(lifecycle, &state.clients[at].email).renew_days = *renew_days;
        }
        UserChange::ResetTraffic { email: Some(email) } => {
            let at = position(state, email)?;
            state.clients[at].reset_generation += 1;
        }
        UserChange::ResetTraffic { email: None } => {
            for c in &mut state.clients {
                c.reset_generation += 1;
            }
        }
    }
    Ok(())
}

/// Index of the client `email` (ASCII case-insensitive, as the cores match), or why not.
fn position(state: &ProxyState, email: &str) -> Result<usize, UserChangeError> {
    state
        .clients
        .iter()
        .position(|c| c.email.eq_ignore_ascii_case(email))
        .ok_or_else(|| UserChangeError::UnknownUser(email.to_string()))
}

/// The lifecycle entry of `email`, created with defaults if missing.
fn entry<'a>(lifecycle: &'a mut Lifecycles, email: &str) -> &'a mut ClientLifecycle {
    lifecycle.entry(email.to_lowercase()).or_insert_with(|| ClientLifecycle {
        email: email.to_string(),
        limit_ip: 0,
        renew_days: 0,
        created_ms: 0,
    })
}

/// Replays changes over a pushed state; a change that no longer applies (the controller deleted
/// the user meanwhile) is skipped: the controller's answer to it will say so.
pub fn replay<'a>(
    state: &mut ProxyState,
    lifecycle: &mut Lifecycles,
    changes: impl IntoIterator<Item = &'a UserChange>,
) {
    for change in changes {
        if let Err(e) = apply(state, lifecycle, change) {
            tracing::debug!(error = %e, "local change no longer applies to the pushed state");
        }
    }
}

/// The next subscription end of a client with auto-renew: `expiry_ms` moved forward by whole
/// `renew_days` periods until it is in the future. `None` when there is nothing to renew.
pub fn renewed_expiry(expiry_ms: i64, renew_days: u32, now_ms: i64) -> Option<i64> {
    if expiry_ms <= 0 || renew_days == 0 || expiry_ms > now_ms {
        return None;
    }
    let period = i64::from(renew_days) * 86_400_000;
    let periods = (now_ms - expiry_ms) / period + 1;
    Some(expiry_ms + periods * period)
}

#[cfg(test)]
mod tests {
    use flotilla_protocol::proxy::{ClientSpec, InboundSpec};

    use super::*;

    fn state() -> ProxyState {
        ProxyState {
            revision: 3,
            inbounds: vec![InboundSpec {
                tag: "vless-in".into(),
                listen: String::new(),
                port: 10443,
                protocol: "vless".into(),
                settings: "{}".into(),
                stream_settings: "{}".into(),
                sniffing: "{}".into(),
                enable: true,
            }],
            clients: vec![],
        }
    }

    fn client(email: &str, tag: &str) -> ClientSpec {
        ClientSpec {
            inbound_tag: tag.into(),
            email: email.into(),
            secret: "123e4567-e89b-12d3-a456-426614174000".into(),
            flow: String::new(),
            enable: true,
            expiry_ms: 0,
            total_bytes: 0,
            reset_generation: 0,
        }
    }

    fn add(email: &str, tag: &str) -> UserChange {
        let lifecycle = ClientLifecycle { email: email.into(), limit_ip: 0, renew_days: 0, created_ms: 1 };
        UserChange::Add { client: client(email, tag), lifecycle }
    }

    #[test]
    fn changes_apply_and_refuse_with_reasons() {
        let (mut s, mut l) = (state(), Lifecycles::new());
        apply(&mut s, &mut l, &add("newuser", "vless-in")).unwrap();
        assert_eq!(apply(&mut s, &mut l, &add("NEWUSER", "vless-in")), Err(UserChangeError::Exists("NEWUSER".into())));
        assert_eq!(apply(&mut s, &mut l, &add("x", "nope")), Err(UserChangeError::UnknownInbound("nope".into())));
        apply(&mut s, &mut l, &UserChange::SetEnabled { email: "NewUser".into(), enable: false }).unwrap();
        apply(&mut s, &mut l, &UserChange::SetLimitIp { email: "newuser".into(), limit_ip: 5 }).unwrap();
        apply(&mut s, &mut l, &UserChange::SetRenew { email: "newuser".into(), renew_days: 30 }).unwrap();
        apply(&mut s, &mut l, &UserChange::ResetTraffic { email: None }).unwrap();
        assert!(!s.clients[0].enable);
        assert_eq!(s.clients[0].reset_generation, 1);
        assert_eq!((l["newuser"].limit_ip, l["newuser"].renew_days, l["newuser"].created_ms), (5, 30, 1));
        let gone = UserChange::SetEnabled { email: "ghost".into(), enable: true };
        assert_eq!(apply(&mut s, &mut l, &gone), Err(UserChangeError::UnknownUser("ghost".into())));
        apply(&mut s, &mut l, &UserChange::Delete { email: "newuser".into() }).unwrap();
        assert!(s.clients.is_empty() && l.is_empty());
    }

    #[test]
    fn replay_skips_what_no_longer_applies() {
        let (mut s, mut l) = (state(), Lifecycles::new());
        let changes = [add("a", "vless-in"), UserChange::Delete { email: "ghost".into() }, add("b", "vless-in")];
        replay(&mut s, &mut l, &changes);
        assert_eq!(s.clients.iter().map(|c| c.email.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn renewal_moves_past_now_by_whole_periods() {
        let day = 86_400_000;
        assert_eq!(renewed_expiry(0, 30, 5 * day), None, "never expires");
        assert_eq!(renewed_expiry(10 * day, 30, 5 * day), None, "not yet passed");
        assert_eq!(renewed_expiry(10 * day, 0, 11 * day), None, "no renewal");
        assert_eq!(renewed_expiry(10 * day, 30, 10 * day), Some(40 * day), "passes exactly now");
        assert_eq!(renewed_expiry(10 * day, 30, 75 * day), Some(100 * day), "two periods missed");
    }
}
