//! Counters since the core last started, and the current rate, per traffic source and user: the
//! `sess_*` and `rate` columns of the local statistics. Fed with each poll's deltas; forgotten
//! when the core restarts (its counters do) or on request.

use std::collections::HashMap;
use std::time::Instant;

/// What a counter belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A client, by lower-cased email.
    User(String),
    Inbound(String),
    Outbound(String),
}

/// Session totals and rates of every source seen.
#[derive(Debug, Default)]
pub struct SessionCounters {
    totals: HashMap<Source, (u64, u64)>,
    rates: HashMap<Source, u64>,
    last_poll: Option<Instant>,
}

impl SessionCounters {
    /// Adds one poll's deltas taken at `at`; rates are over the time since the previous poll
    /// (a source that did not move has rate 0).
    pub fn observe(&mut self, at: Instant, moved: impl IntoIterator<Item = (Source, u64, u64)>) {
        let elapsed = self.last_poll.map(|p| at.saturating_duration_since(p).as_secs_f64());
        self.last_poll = Some(at);
        self.rates.clear();
        for (source, up, down) in moved {
            if let Some(secs) = elapsed.filter(|s| *s > 0.0) {
                self.rates.insert(source.clone(), ((up + down) as f64 * 8.0 / secs) as u64);
            }
            let slot = self.totals.entry(source).or_default();
            slot.0 += up;
            slot.1 += down;
        }
    }

    /// Forgets everything: the core restarted, or the operator reset the session statistics.
    pub fn reset(&mut self) {
        self.totals.clear();
        self.rates.clear();
    }

    /// (up, down) since the core started.
    pub fn session(&self, source: &Source) -> (u64, u64) {
        self.totals.get(source).copied().unwrap_or_default()
    }

    /// Bits per second over the last poll.
    pub fn rate(&self, source: &Source) -> u64 {
        self.rates.get(source).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn totals_accumulate_and_rates_follow_the_last_poll() {
        let mut s = SessionCounters::default();
        let t0 = Instant::now();
        let a = Source::User("a".into());
        s.observe(t0, [(a.clone(), 100, 900)]);
        assert_eq!((s.session(&a), s.rate(&a)), ((100, 900), 0), "no rate before a second poll");
        s.observe(t0 + Duration::from_secs(2), [(a.clone(), 250, 0)]);
        assert_eq!((s.session(&a), s.rate(&a)), ((350, 900), 1000));
        s.observe(t0 + Duration::from_secs(4), []);
        assert_eq!(s.rate(&a), 0, "idle: rate 0");
        s.reset();
        assert_eq!(s.session(&a), (0, 0));
    }
}
