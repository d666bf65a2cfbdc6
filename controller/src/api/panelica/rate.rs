//! Rate tiers of API keys: a token bucket per key and per minute (governor's GCRA, with the
//! tier's burst), a second per hour, and fixed-window counters for what `GET /v1/rate-limit` and
//! the `X-RateLimit-*` headers report. `X-RateLimit-Remaining` is the smaller of what is left of
//! the minute window and of the bucket, so a client pacing itself by the header is never refused.
//!
//! Starter's burst is its whole minute: the official WHMCS module paces its nightly usage run
//! as 60 requests a minute.
//!
//! | tier | per minute | per hour | burst |
//! |---|---|---|---|
//! | starter | 60 | 1,000 | 60 |
//! | professional | 300 | 10,000 | 50 |
//! | business | 1,000 | 50,000 | 200 |
//! | enterprise | unlimited | unlimited | — |

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

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
        RateTier::Starter => Some(Limits { per_minute: 60, per_hour: 1_000, burst: 60 }),
        RateTier::Professional => Some(Limits { per_minute: 300, per_hour: 10_000, burst: 50 }),
        RateTier::Business => Some(Limits { per_minute: 1_000, per_hour: 50_000, burst: 200 }),
        RateTier::Enterprise => None,
    }
}

/// A bucket that says how much of its burst is left.
type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One key's buckets and counters.
struct KeyState {
    tier: RateTier,
    minute: Bucket,
    hour: Bucket,
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
    /// Requests the buckets would take right now (None: not measured, or unlimited).
    pub burst_left: Option<u32>,
}

impl Usage {
    /// Requests left now: the minute window's, capped by the bucket's burst (None: unlimited).
    pub fn remaining(&self) -> Option<u32> {
        let limits = self.limits?;
        let window = limits.per_minute.saturating_sub(self.minute);
        Some(self.burst_left.map_or(window, |b| b.min(window)))
    }

    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (Unix seconds) of the minute window, also
    /// under the `-Minute` names the MCP server reads (none for unlimited tiers).
    pub fn headers(&self) -> Option<[(&'static str, String); 6]> {
        let limits = self.limits?;
        let remaining = self.remaining()?.to_string();
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
            minute: RateLimiter::direct(minute).with_middleware::<StateInformationMiddleware>(),
            hour: RateLimiter::direct(hour).with_middleware::<StateInformationMiddleware>(),
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
            burst_left: None,
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
            let admitted = state.minute.check().and_then(|m| state.hour.check().map(|h| (m, h)));
            match admitted {
                Err(not_until) => {
                    let wait = not_until.wait_time_from(clock.now()).max(Duration::from_secs(1));
                    Verdict::Limited { retry_after: wait, usage: Usage { burst_left: Some(0), ..usage } }
                }
                Ok((m, h)) => {
                    state.minute_count.1 += 1;
                    state.hour_count.1 += 1;
                    let burst_left = m.remaining_burst_capacity().min(h.remaining_burst_capacity());
                    Verdict::Admitted(Usage {
                        minute: usage.minute + 1,
                        hour: usage.hour + 1,
                        burst_left: Some(burst_left),
                        ..usage
                    })
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
        // Professional: 50 at once (its burst), then one every 200 ms; the header counts down
        // to what the bucket would take, not to the minute's 300.
        for i in 0..50 {
            let Verdict::Admitted(u) = limits.check("k", RateTier::Professional, now) else { panic!("request {i}") };
            assert_eq!(u.remaining(), Some(49 - i), "request {i}");
        }
        match limits.check("k", RateTier::Professional, now) {
            Verdict::Limited { retry_after, usage } => {
                assert!(
                    retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(2),
                    "{retry_after:?}"
                );
                assert_eq!((usage.minute, usage.hour, usage.remaining()), (50, 50, Some(0)));
                assert_eq!(usage.headers().unwrap()[1], ("x-ratelimit-remaining", "0".to_string()));
            }
            other => panic!("{other:?}"),
        }
        // Starter: its whole minute at once (the WHMCS module paces itself at 60 a minute).
        for i in 0..60 {
            assert!(matches!(limits.check("s", RateTier::Starter, now), Verdict::Admitted(_)), "request {i}");
        }
        assert!(matches!(limits.check("s", RateTier::Starter, now), Verdict::Limited { .. }));
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
        assert_eq!(h[1].1, "49", "the bucket's burst of 50, one used, binds before the minute's 300");
        let later = limits.usage("k", RateTier::Professional, t + 65);
        assert_eq!((later.minute, later.hour, later.reset_at), (0, 1, t + 120));
        assert!(limits.usage("k", RateTier::Enterprise, t).headers().is_none());
    }
}
