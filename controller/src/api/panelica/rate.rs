//! Rate tiers of API keys: a token bucket per key and per minute (governor's GCRA, with the
//! tier's burst), a second per hour, and fixed-window counters for what `GET /v1/rate-limit` and
//! the `X-RateLimit-*` headers report.
//!
//! | tier | per minute | per hour | burst |
//! |---|---|---|---|
//! | starter | 60 | 1,000 | 10 |
//! | professional | 300 | 10,000 | 50 |
//! | business | 1,000 | 50,000 | 200 |
//! | enterprise | unlimited | unlimited | — |

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::store::RateTier;

/// A tier's numbers; `None` for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_minute: u32,
    pub per_hour: u32,
    pub burst: u32,
}

/// The numbers of `tier`.
pub fn limits(tier: RateTier) -> Option<Limits> {
    match tier {
        RateTier::Starter => Some(Limits { per_minute: 60, per_hour: 1_000, burst: 10 }),
        RateTier::Professional => Some(Limits { per_minute: 300, per_hour: 10_000, burst: 50 }),
        RateTier::Business => Some(Limits { per_minute: 1_000, per_hour: 50_000, burst: 200 }),
        RateTier::Enterprise => None,
    }
}

/// One key's buckets and counters.
struct KeyState {
    tier: RateTier,
    minute: DefaultDirectRateLimiter,
    hour: DefaultDirectRateLimiter,
    /// (window start, requests admitted in it), Unix seconds.
    minute_count: (i64, u32),
    hour_count: (i64, u32),
}

/// What a request's check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; the usage to report.
    Admitted(Usage),
    /// Refused: wait this long.
    Limited { retry_after: Duration, usage: Usage },
}

/// A key's usage as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub tier: RateTier,
    pub limits: Option<Limits>,
    pub minute: u32,
    pub hour: u32,
    /// Unix seconds when the minute window ends.
    pub reset_at: i64,
}

impl Usage {
    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (Unix seconds) of the minute window, also
    /// under the `-Minute` names the MCP server reads (none for unlimited tiers).
    pub fn headers(&self) -> Option<[(&'static str, String); 6]> {
        let limits = self.limits?;
        let remaining = limits.per_minute.saturating_sub(self.minute).to_string();
        Some([
            ("x-ratelimit-limit", limits.per_minute.to_string()),
            ("x-ratelimit-remaining", remaining.clone()),
            ("x-ratelimit-reset", self.reset_at.to_string()),
            ("x-ratelimit-limit-minute", limits.per_minute.to_string()),
            ("x-ratelimit-remaining-minute", remaining),
            ("x-ratelimit-reset-minute", self.reset_at.to_string()),
        ])
    }
}

/// Every key's buckets (memory only: a restart refills them, which errs on the generous side).
#[derive(Default)]
pub struct RateLimits {
    keys: Mutex<HashMap<String, KeyState>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least 1")
}

impl KeyState {
    fn new(tier: RateTier) -> KeyState {
        let l = limits(tier).unwrap_or(Limits { per_minute: 1, per_hour: 1, burst: 1 });
        // Replenish at the tier's steady rate; the burst is how many may come at once.
        let minute = Quota::with_period(Duration::from_secs(60) / l.per_minute.max(1))
            .expect("a positive period")
            .allow_burst(nz(l.burst));
        let hour = Quota::per_hour(nz(l.per_hour));
        KeyState {
            tier,
            minute: RateLimiter::direct(minute),
            hour: RateLimiter::direct(hour),
            minute_count: (0, 0),
            hour_count: (0, 0),
        }
    }

    fn usage(&mut self, now: i64) -> Usage {
        let minute_start = now - now.rem_euclid(60);
        let hour_start = now - now.rem_euclid(3600);
        if self.minute_count.0 != minute_start {
            self.minute_count = (minute_start, 0);
        }
        if self.hour_count.0 != hour_start {
            self.hour_count = (hour_start, 0);
        }
        Usage {
            tier: self.tier,
            limits: limits(self.tier),
            minute: self.minute_count.1,
            hour: self.hour_count.1,
            reset_at: minute_start + 60,
        }
    }
}

impl RateLimits {
    fn with<T>(&self, key: &str, tier: RateTier, f: impl FnOnce(&mut KeyState) -> T) -> T {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let state = keys.entry(key.to_string()).or_insert_with(|| KeyState::new(tier));
        if state.tier != tier {
            // The key's tier changed: its buckets start afresh at the new rates.
            *state = KeyState::new(tier);
        }
        f(state)
    }

    /// Checks one request of key `key` at Unix second `now`, counting it when admitted.
    pub fn check(&self, key: &str, tier: RateTier, now: i64) -> Verdict {
        self.with(key, tier, |state| {
            let usage = state.usage(now);
            if limits(tier).is_none() {
                state.minute_count.1 += 1;
                state.hour_count.1 += 1;
                return Verdict::Admitted(Usage { minute: usage.minute + 1, hour: usage.hour + 1, ..usage });
            }
            let clock = DefaultClock::default();
            let refused = match state.minute.check() {
                Err(not_until) => Some(not_until.wait_time_from(clock.now())),
                Ok(()) => state.hour.check().err().map(|not_until| not_until.wait_time_from(clock.now())),
            };
            match refused {
                Some(wait) => Verdict::Limited { retry_after: wait.max(Duration::from_secs(1)), usage },
                None => {
                    state.minute_count.1 += 1;
                    state.hour_count.1 += 1;
                    Verdict::Admitted(Usage { minute: usage.minute + 1, hour: usage.hour + 1, ..usage })
                }
            }
        })
    }

    /// Key `key`'s usage now, without counting a request.
    pub fn usage(&self, key: &str, tier: RateTier, now: i64) -> Usage {
        self.with(key, tier, |state| state.usage(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_bucket_refuses_with_a_wait() {
        let limits = RateLimits::default();
        let now = 1_800_000_000;
        for i in 0..10 {
            assert!(matches!(limits.check("k", RateTier::Starter, now), Verdict::Admitted(_)), "request {i}");
        }
        match limits.check("k", RateTier::Starter, now) {
            Verdict::Limited { retry_after, usage } => {
                assert!(
                    retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(2),
                    "{retry_after:?}"
                );
                assert_eq!((usage.minute, usage.hour), (10, 10));
            }
            other => panic!("{other:?}"),
        }
        // Other keys have their own buckets; enterprise is unlimited.
        assert!(matches!(limits.check("other", RateTier::Starter, now), Verdict::Admitted(_)));
        for _ in 0..1000 {
            assert!(matches!(limits.check("big", RateTier::Enterprise, now), Verdict::Admitted(_)));
        }
        assert_eq!(limits.usage("big", RateTier::Enterprise, now).minute, 1000);
    }

    #[test]
    fn usage_counts_per_fixed_window() {
        let limits = RateLimits::default();
        // The start of an hour (1,800,000,000 is a multiple of 3600).
        let t: i64 = 1_800_000_000;
        assert_eq!(t % 3600, 0);
        let Verdict::Admitted(u) = limits.check("k", RateTier::Professional, t + 5) else { panic!() };
        assert_eq!((u.minute, u.hour, u.reset_at), (1, 1, t + 60));
        let h = u.headers().unwrap();
        assert_eq!(h[0].1, "300");
        assert_eq!(h[1].1, "299");
        let later = limits.usage("k", RateTier::Professional, t + 65);
        assert_eq!((later.minute, later.hour, later.reset_at), (0, 1, t + 120));
        assert!(limits.usage("k", RateTier::Enterprise, t).headers().is_none());
    }
}
