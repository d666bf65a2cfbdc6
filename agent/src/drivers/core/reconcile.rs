//! What must change on the core: the users it should have (desired, enabled, not cut off) diffed
//! against the users it has, one user at a time; and whether the inbound set changed at all.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_protocol::proxy::{ClientSpec, InboundSpec};

/// A user on the core: inbound tag and lower-cased email (cores compare emails lower-cased).
pub type UserKey = (String, String);

/// The key of `client`.
pub fn key(client: &ClientSpec) -> UserKey {
    (client.inbound_tag.clone(), client.email.to_lowercase())
}

/// The users the core should have: enabled clients of enabled, served inbounds, minus the
/// emails cut off for expiry or quota.
pub fn wanted_users(
    inbounds: &[InboundSpec],
    clients: &[ClientSpec],
    cut_off: &BTreeSet<String>,
) -> BTreeMap<UserKey, ClientSpec> {
    let served: BTreeSet<&str> = inbounds.iter().filter(|i| i.enable).map(|i| i.tag.as_str()).collect();
    clients
        .iter()
        .filter(|c| c.enable && served.contains(c.inbound_tag.as_str()) && !cut_off.contains(&c.email.to_lowercase()))
        .map(|c| (key(c), c.clone()))
        .collect()
}

/// User changes to make, removals first (an email moving between inbounds must leave the old one
/// before the core accepts it on the new one).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UserDiff {
    pub remove: Vec<UserKey>,
    pub add: Vec<ClientSpec>,
}

impl UserDiff {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

/// Changes turning `have` into `want`. A user whose credentials changed is removed and re-added;
/// fields the core does not hold (quota, expiry) change nothing on it.
pub fn diff_users(have: &BTreeMap<UserKey, ClientSpec>, want: &BTreeMap<UserKey, ClientSpec>) -> UserDiff {
    let mut diff = UserDiff::default();
    for (k, old) in have {
        match want.get(k) {
            Some(new) if new.secret == old.secret && new.flow == old.flow => {}
            _ => diff.remove.push(k.clone()),
        }
    }
    for (k, new) in want {
        match have.get(k) {
            Some(old) if new.secret == old.secret && new.flow == old.flow => {}
            _ => diff.add.push(new.clone()),
        }
    }
    diff
}

/// The inbounds the core config holds: enabled ones, in a stable order.
pub fn served_inbounds(inbounds: &[InboundSpec]) -> Vec<InboundSpec> {
    let mut served: Vec<InboundSpec> = inbounds.iter().filter(|i| i.enable).cloned().collect();
    served.sort_by(|a, b| a.tag.cmp(&b.tag));
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(tag: &str, enable: bool) -> InboundSpec {
        InboundSpec {
            tag: tag.into(),
            listen: String::new(),
            port: 1,
            protocol: "vless".into(),
            settings: "{}".into(),
            stream_settings: "{}".into(),
            sniffing: "{}".into(),
            enable,
        }
    }

    fn client(tag: &str, email: &str, secret: &str, enable: bool) -> ClientSpec {
        ClientSpec {
            inbound_tag: tag.into(),
            email: email.into(),
            secret: secret.into(),
            flow: String::new(),
            enable,
            expiry_ms: 0,
            total_bytes: 0,
            reset_generation: 0,
        }
    }

    #[test]
    fn wanted_skips_disabled_unserved_and_cut_off() {
        let inbounds = [inbound("a", true), inbound("b", false)];
        let clients = [
            client("a", "On@x", "1", true),
            client("a", "off@x", "2", false),
            client("b", "unserved@x", "3", true),
            client("a", "cut@x", "4", true),
            client("zzz", "orphan@x", "5", true),
        ];
        let cut: BTreeSet<String> = ["cut@x".to_string()].into();
        let want = wanted_users(&inbounds, &clients, &cut);
        assert_eq!(want.keys().cloned().collect::<Vec<_>>(), vec![("a".to_string(), "on@x".to_string())]);
    }

    #[test]
    fn diff_is_per_user_and_readds_changed_credentials() {
        let have: BTreeMap<_, _> =
            [client("a", "keep@x", "1", true), client("a", "gone@x", "2", true), client("a", "rekey@x", "3", true)]
                .into_iter()
                .map(|c| (key(&c), c))
                .collect();
        let mut quota_changed = client("a", "keep@x", "1", true);
        quota_changed.total_bytes = 5;
        let want: BTreeMap<_, _> = [quota_changed, client("a", "rekey@x", "33", true), client("a", "new@x", "4", true)]
            .into_iter()
            .map(|c| (key(&c), c))
            .collect();
        let d = diff_users(&have, &want);
        let removed: Vec<&str> = d.remove.iter().map(|k| k.1.as_str()).collect();
        let added: Vec<&str> = d.add.iter().map(|c| c.email.as_str()).collect();
        assert_eq!(removed, vec!["gone@x", "rekey@x"]);
        assert_eq!(added, vec!["new@x", "rekey@x"]);
        assert!(diff_users(&want, &want).is_empty());
    }
}
