//! Link liveness as the agent sees it: after `Welcome`, the controller sends a heartbeat every
//! interval; several intervals of silence mean the link is dead even if QUIC has not noticed.

use std::time::{Duration, Instant};

/// Intervals of silence tolerated before the link is declared dead.
pub const MISSED_HEARTBEATS: u32 = 3;

/// Sans-IO heartbeat watchdog; the caller passes the time in.
#[derive(Debug, Clone)]
pub struct Liveness {
    interval: Duration,
    last_heard: Instant,
}

impl Liveness {
    /// Starts watching at `now` (the moment `Welcome` arrived).
    pub fn new(now: Instant, interval: Duration) -> Self {
        Liveness { interval: interval.max(Duration::from_millis(100)), last_heard: now }
    }

    /// A heartbeat arrived.
    pub fn on_heartbeat(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// When the link will be declared dead if nothing arrives before.
    pub fn deadline(&self) -> Instant {
        self.last_heard + self.interval * MISSED_HEARTBEATS + self.interval / 2
    }

    /// Whether the link is dead at `now`.
    pub fn is_dead(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dies_after_missed_heartbeats_only() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = Liveness::new(t0, s);
        assert!(!l.is_dead(t0 + s * 3));
        assert!(l.is_dead(t0 + s * 4));
        l.on_heartbeat(t0 + s * 3);
        assert!(!l.is_dead(t0 + s * 6));
        assert!(l.is_dead(t0 + s * 7));
        // A late-processed older timestamp never moves the deadline back.
        l.on_heartbeat(t0);
        assert!(!l.is_dead(t0 + s * 6));
    }
}
