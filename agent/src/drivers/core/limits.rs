//! Expiry and quota decisions, taken on the agent from its local copy of the desired state and
//! its own usage counters, so they hold while the controller is unreachable.

use flotilla_protocol::proxy::{ClientSpec, CutOff};

use crate::state::journal::Usage;

/// Whether `client` must be off the core at `now_ms` given its `usage`.
pub fn cut_off(client: &ClientSpec, usage: Usage, now_ms: i64) -> Option<CutOff> {
    if client.expiry_ms > 0 && now_ms >= client.expiry_ms {
        return Some(CutOff::Expired);
    }
    // Usage counted before the controller's latest reset does not count against the quota.
    let usage = if usage.reset_generation < client.reset_generation { Usage::default() } else { usage };
    if client.total_bytes > 0 && usage.total() >= client.total_bytes {
        return Some(CutOff::Depleted);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(expiry_ms: i64, total_bytes: u64, reset_generation: u32) -> ClientSpec {
        ClientSpec {
            inbound_tag: "in".into(),
            email: "a@x".into(),
            secret: "s".into(),
            flow: String::new(),
            enable: true,
            expiry_ms,
            total_bytes,
            reset_generation,
        }
    }

    fn used(total: u64, reset_generation: u32) -> Usage {
        Usage { up: total / 2, down: total - total / 2, reset_generation, last_seen_ms: None }
    }

    #[test]
    fn expiry_and_quota() {
        assert_eq!(cut_off(&client(0, 0, 0), used(u64::MAX / 2, 0), 5), None, "0 means never and unlimited");
        assert_eq!(cut_off(&client(10, 0, 0), used(0, 0), 9), None);
        assert_eq!(cut_off(&client(10, 0, 0), used(0, 0), 10), Some(CutOff::Expired));
        assert_eq!(cut_off(&client(0, 100, 0), used(99, 0), 0), None);
        assert_eq!(cut_off(&client(0, 100, 0), used(100, 0), 0), Some(CutOff::Depleted));
        // A reset the agent has not applied yet already lifts the cut-off.
        assert_eq!(cut_off(&client(0, 100, 1), used(100, 0), 0), None);
        assert_eq!(cut_off(&client(10, 100, 0), used(100, 0), 11), Some(CutOff::Expired), "expiry wins");
    }
}
