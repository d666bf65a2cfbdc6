//! Turning raw core counters into traffic deltas.
//!
//! The agent reads counters without resetting them and takes deltas against the last committed
//! reading (the baseline): a crash between the read and the commit then loses nothing, because
//! the next reading still contains those bytes. A counter below its baseline means the core
//! restarted, so its whole value is new traffic.

use std::collections::{BTreeMap, HashMap};

use flotilla_protocol::proxy::{InboundTraffic, UserTraffic};

use super::api::{parse_inbound_counter, parse_outbound_counter, parse_user_counter, Direction};

/// Deltas of one reading.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deltas {
    pub users: Vec<UserTraffic>,
    pub inbounds: Vec<InboundTraffic>,
    pub outbounds: Vec<InboundTraffic>,
    /// Counters whose value changed, with their new raw value.
    pub baselines: Vec<(String, i64)>,
}

/// Deltas of `reading` against `baselines`.
pub fn deltas(reading: &[(String, i64)], baselines: &HashMap<String, i64>) -> Deltas {
    let mut users: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut inbounds: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut outbounds: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut out = Deltas::default();
    for (name, value) in reading {
        let value = (*value).max(0);
        let base = baselines.get(name).copied().unwrap_or(0);
        let delta = if value >= base { value - base } else { value } as u64;
        if value != base {
            out.baselines.push((name.clone(), value));
        }
        if delta == 0 {
            continue;
        }
        let (slot, direction) = if let Some((email, d)) = parse_user_counter(name) {
            (users.entry(email).or_default(), d)
        } else if let Some((tag, d)) = parse_inbound_counter(name) {
            (inbounds.entry(tag).or_default(), d)
        } else if let Some((tag, d)) = parse_outbound_counter(name) {
            (outbounds.entry(tag).or_default(), d)
        } else {
            continue;
        };
        match direction {
            Direction::Up => slot.0 += delta,
            Direction::Down => slot.1 += delta,
        }
    }
    out.users = users.into_iter().map(|(email, (up, down))| UserTraffic { email: email.into(), up, down }).collect();
    let tagged = |m: BTreeMap<&str, (u64, u64)>| -> Vec<InboundTraffic> {
        m.into_iter().map(|(tag, (up, down))| InboundTraffic { tag: tag.into(), up, down }).collect()
    };
    out.inbounds = tagged(inbounds);
    out.outbounds = tagged(outbounds);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(items: &[(&str, i64)]) -> Vec<(String, i64)> {
        items.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn deltas_against_baselines_and_restarts() {
        let mut base = HashMap::new();
        let r = reading(&[
            ("user>>>a@x>>>traffic>>>uplink", 100),
            ("user>>>a@x>>>traffic>>>downlink", 1000),
            ("inbound>>>in-1>>>traffic>>>downlink", 1100),
            ("outbound>>>direct>>>traffic>>>downlink", 7),
        ]);
        let d = deltas(&r, &base);
        assert_eq!(d.users, vec![UserTraffic { email: "a@x".into(), up: 100, down: 1000 }]);
        assert_eq!(d.inbounds, vec![InboundTraffic { tag: "in-1".into(), up: 0, down: 1100 }]);
        assert_eq!(d.outbounds, vec![InboundTraffic { tag: "direct".into(), up: 0, down: 7 }]);
        assert_eq!(d.baselines.len(), 4);
        base.extend(d.baselines);

        // Same reading again: nothing moved, no baseline to rewrite.
        assert_eq!(deltas(&r, &base), Deltas::default());

        // Grew by 50 down; the uplink counter dropped (core restarted): its value is all new.
        let r2 = reading(&[("user>>>a@x>>>traffic>>>uplink", 30), ("user>>>a@x>>>traffic>>>downlink", 1050)]);
        let d2 = deltas(&r2, &base);
        assert_eq!(d2.users, vec![UserTraffic { email: "a@x".into(), up: 30, down: 50 }]);
    }
}
