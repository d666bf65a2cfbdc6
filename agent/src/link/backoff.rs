//! Reconnect delays: jittered exponential backoff, capped, reset only once a session is welcomed
//! (a controller that accepts TLS but then refuses us must not be hammered).

use std::time::Duration;

/// Backoff schedule. `next_delay` takes the jitter source so tests are deterministic.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A schedule starting at `base` and never exceeding `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap, attempt: 0 }
    }

    /// The agent's schedule: 500 ms doubling up to 30 s.
    pub fn for_link() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }

    /// Delay before the next attempt. `unit` is a uniform random number in `[0, 1)`; the delay is
    /// drawn from `[ceiling/2, ceiling)` ("equal jitter") so agents that lost the same controller
    /// spread out but still retry promptly.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        let ceiling = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let unit = unit.clamp(0.0, 1.0);
        ceiling / 2 + ceiling.mul_f64(unit / 2.0)
    }

    /// Back to the first delay. Called on `Welcome`, never merely on a completed handshake.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_to_the_cap() {
        let mut b = Backoff::for_link();
        let ceilings: Vec<Duration> = (0..10).map(|_| b.next_delay(0.999_999)).collect();
        assert!(ceilings[0] < Duration::from_millis(500));
        assert!(ceilings[0] >= Duration::from_millis(499));
        assert!(ceilings[1] > ceilings[0] && ceilings[2] > ceilings[1]);
        assert!(ceilings.iter().all(|d| *d <= Duration::from_secs(30)));
        assert!(ceilings[9] > Duration::from_millis(29_999));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let mut lo = Backoff::for_link();
        let mut hi = Backoff::for_link();
        for _ in 0..8 {
            let (a, b) = (lo.next_delay(0.0), hi.next_delay(0.999));
            assert!(a <= b);
            assert!(a * 2 >= b.mul_f64(0.99), "lower bound is half the ceiling: {a:?} vs {b:?}");
        }
    }

    #[test]
    fn only_reset_restarts_the_schedule() {
        let mut b = Backoff::for_link();
        for _ in 0..6 {
            b.next_delay(0.5);
        }
        assert_eq!(b.attempts(), 6);
        assert!(b.next_delay(0.5) > Duration::from_secs(10));
        b.reset();
        assert!(b.next_delay(0.5) < Duration::from_millis(500));
    }

    #[test]
    fn survives_many_attempts_without_overflow() {
        let mut b = Backoff::for_link();
        for _ in 0..10_000 {
            assert!(b.next_delay(0.3) <= Duration::from_secs(30));
        }
    }
}
