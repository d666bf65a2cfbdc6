//! AdGuard Home, as the web UI's AdGuard panels show it: a client of its admin API and the pure
//! arithmetic over the samples the collector stores (`jobs::adguard`).
//!
//! The client reads two documented endpoints with HTTP Basic auth: `GET /control/status`
//! (`running`, `version`, `protection_enabled`) and `GET /control/stats`. From the stats it takes
//! `num_dns_queries`, `num_blocked_filtering`, `avg_processing_time` (seconds) and the
//! `top_blocked_domains` / `top_clients` lists (`[{"<name>": <count>}, …]`). Those figures cover
//! AdGuard Home's statistics window (24 hours by default), so they are not monotonic counters: a
//! window that slides can make them fall.
//!
//! What the stats API does not have, Flotilla does not invent: AdGuard Home (through v0.107)
//! reports neither cache hits nor upstream failures there, so `cache_hit_ratio` and
//! `upstream_errors` stay `None` (JSON `null`). "Blocked" means blocked by filters, as on AdGuard
//! Home's own dashboard; safe-browsing and parental-control replacements (`num_replaced_*`) are
//! not counted in it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::outbound;
use crate::store::{AdGuardSample, TopEntry};

/// Longest wait for one request to an AdGuard Home.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Entries kept of each top list.
pub const TOP_N: usize = 10;

/// How to reach one AdGuard Home.
#[derive(Clone)]
pub struct Target {
    /// Base URL of its admin interface, without a trailing slash; the API is under `/control/`.
    pub admin_url: String,
    /// HTTP Basic user; empty to send no credentials.
    pub username: String,
    pub password: Option<String>,
    pub verify_tls: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Target").field("admin_url", &self.admin_url).field("username", &self.username).finish()
    }
}

/// Why an AdGuard Home could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AdGuardError {
    /// No HTTP answer (refused, timed out, TLS failure, …).
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// AdGuard Home refused the credentials.
    #[error("{url}: credentials refused (HTTP {status})")]
    Unauthorized { url: String, status: u16 },
    /// Any other non-2xx answer.
    #[error("{url}: HTTP {status}{detail}")]
    Status { url: String, status: u16, detail: String },
    /// A 2xx answer that is not AdGuard Home's JSON.
    #[error("{url}: not an AdGuard Home answer ({reason})")]
    Unexpected { url: String, reason: String },
    /// The API answers but its DNS server does not run.
    #[error("AdGuard Home answers, but its DNS server is not running")]
    NotRunning,
}

/// `GET /control/status`, the part Flotilla uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub running: bool,
    pub version: String,
    pub protection_enabled: bool,
}

/// `GET /control/stats`, as Flotilla reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub queries_total: u64,
    pub blocked_total: u64,
    pub avg_latency_ms: Option<f64>,
    /// Not in AdGuard Home's stats API; kept for the UI's shape (see the module docs).
    pub cache_hit_ratio: Option<f64>,
    /// Not in AdGuard Home's stats API; kept for the UI's shape (see the module docs).
    pub upstream_errors: Option<u64>,
    pub top_blocked_domains: Vec<TopEntry>,
    pub top_clients: Vec<TopEntry>,
}

#[derive(Deserialize)]
struct RawStatus {
    // Absent only in very old releases, which had no way to stop the DNS server from the API.
    running: Option<bool>,
    #[serde(default)]
    version: String,
    #[serde(default)]
    protection_enabled: bool,
}

#[derive(Deserialize)]
struct RawStats {
    // Required: an answer without them is not AdGuard Home's stats.
    num_dns_queries: u64,
    num_blocked_filtering: u64,
    avg_processing_time: Option<f64>,
    #[serde(default)]
    top_blocked_domains: Vec<BTreeMap<String, Value>>,
    #[serde(default)]
    top_clients: Vec<BTreeMap<String, Value>>,
}

/// Parses a `/control/status` body.
pub fn parse_status(body: &str) -> Result<Status, String> {
    let raw: RawStatus = serde_json::from_str(body).map_err(|e| e.to_string())?;
    Ok(Status {
        running: raw.running.unwrap_or(true),
        version: raw.version,
        protection_enabled: raw.protection_enabled,
    })
}

/// Parses a `/control/stats` body.
pub fn parse_stats(body: &str) -> Result<Stats, String> {
    let raw: RawStats = serde_json::from_str(body).map_err(|e| e.to_string())?;
    Ok(Stats {
        queries_total: raw.num_dns_queries,
        blocked_total: raw.num_blocked_filtering,
        avg_latency_ms: raw.avg_processing_time.filter(|t| t.is_finite() && *t >= 0.0).map(|t| round2(t * 1000.0)),
        cache_hit_ratio: None,
        upstream_errors: None,
        top_blocked_domains: top_list(raw.top_blocked_domains),
        top_clients: top_list(raw.top_clients),
    })
}

/// `[{"a.example": 12}, …]` as entries, largest first, at most [`TOP_N`].
fn top_list(raw: Vec<BTreeMap<String, Value>>) -> Vec<TopEntry> {
    let mut out: Vec<TopEntry> = raw
        .into_iter()
        .flatten()
        .filter_map(|(name, count)| {
            let count = count.as_u64().or_else(|| count.as_f64().filter(|c| *c >= 0.0).map(|c| c.round() as u64))?;
            Some(TopEntry { name, count })
        })
        .collect();
    // Stable: AdGuard Home's own order breaks ties.
    out.sort_by_key(|e| std::cmp::Reverse(e.count));
    out.truncate(TOP_N);
    out
}

/// Reads one AdGuard Home (blocking; call from `spawn_blocking`): its status, then its stats.
pub fn fetch(target: &Target) -> Result<(Status, Stats), AdGuardError> {
    let agent = outbound::agent(TIMEOUT, target.verify_tls);
    let get = |path: &str| -> Result<String, AdGuardError> {
        let url = format!("{}{path}", target.admin_url);
        let shown = outbound::redact(&url);
        let mut req = agent.get(&url);
        if !target.username.is_empty() {
            req = req.set("Authorization", &basic(&target.username, target.password.as_deref().unwrap_or_default()));
        }
        match req.call() {
            Ok(resp) => resp.into_string().map_err(|e| AdGuardError::Unreachable { url: shown, reason: e.to_string() }),
            Err(ureq::Error::Status(status @ (401 | 403), _)) => Err(AdGuardError::Unauthorized { url: shown, status }),
            Err(ureq::Error::Status(status, resp)) => {
                let detail = match resp.header("Location") {
                    Some(to) => format!(" (redirected to {}; use that as admin_url)", outbound::redact(to)),
                    None => String::new(),
                };
                Err(AdGuardError::Status { url: shown, status, detail })
            }
            Err(e) => Err(AdGuardError::Unreachable { url: shown, reason: outbound::describe(&e) }),
        }
    };
    let unexpected = |path: &str, reason: String| AdGuardError::Unexpected {
        url: outbound::redact(&format!("{}{path}", target.admin_url)),
        reason,
    };
    let status = parse_status(&get("/control/status")?).map_err(|e| unexpected("/control/status", e))?;
    if !status.running {
        return Err(AdGuardError::NotRunning);
    }
    let stats = parse_stats(&get("/control/stats")?).map_err(|e| unexpected("/control/stats", e))?;
    Ok((status, stats))
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// The sample a collection of source `source_id` at `ts` gives.
pub fn sample(source_id: i64, ts: i64, outcome: &Result<(Status, Stats), AdGuardError>) -> AdGuardSample {
    match outcome {
        Ok((_, stats)) => AdGuardSample {
            source_id,
            ts,
            available: true,
            queries_total: stats.queries_total,
            blocked_total: stats.blocked_total,
            avg_latency_ms: stats.avg_latency_ms,
            cache_hit_ratio: stats.cache_hit_ratio,
            upstream_errors: stats.upstream_errors,
            top_blocked_domains: stats.top_blocked_domains.clone(),
            top_clients: stats.top_clients.clone(),
            error: String::new(),
        },
        Err(e) => unavailable(source_id, ts, e.to_string()),
    }
}

/// A sample of a source that could not be read.
pub fn unavailable(source_id: i64, ts: i64, error: String) -> AdGuardSample {
    AdGuardSample {
        source_id,
        ts,
        available: false,
        queries_total: 0,
        blocked_total: 0,
        avg_latency_ms: None,
        cache_hit_ratio: None,
        upstream_errors: None,
        top_blocked_domains: vec![],
        top_clients: vec![],
        error,
    }
}

/// `x` rounded to two decimals.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Percent of `queries` that were blocked, two decimals (0 without queries).
pub fn blocked_rate(queries: u64, blocked: u64) -> f64 {
    if queries == 0 {
        return 0.0;
    }
    round2(blocked as f64 * 100.0 / queries as f64)
}

/// The sources at a glance. Figures add up the sources that answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub sources_total: usize,
    pub sources_online: usize,
    pub queries_total: u64,
    pub blocked_total: u64,
    /// Percent of all their queries that were blocked.
    pub blocked_rate: f64,
    /// Mean of their average latencies (`None` when none reports one).
    pub avg_latency_ms: Option<f64>,
    /// Mean of the ratios reported (`None` when none reports one, as AdGuard Home does not).
    pub cache_hit_ratio: Option<f64>,
    /// Sum of the counts reported (`None` when none reports one, as AdGuard Home does not).
    pub upstream_errors: Option<u64>,
    /// Mean of their block rates (what a per-source gauge averages to).
    pub blocked_rate_avg: f64,
}

/// Adds up the latest sample of each source.
pub fn summarize<'a>(latest: impl IntoIterator<Item = &'a AdGuardSample>) -> Summary {
    let all: Vec<&AdGuardSample> = latest.into_iter().collect();
    let live: Vec<&AdGuardSample> = all.iter().copied().filter(|s| s.available).collect();
    let mean =
        |values: Vec<f64>| (!values.is_empty()).then(|| round2(values.iter().sum::<f64>() / values.len() as f64));
    let queries_total = live.iter().map(|s| s.queries_total).sum();
    let blocked_total = live.iter().map(|s| s.blocked_total).sum();
    let reported_errors: Vec<u64> = live.iter().filter_map(|s| s.upstream_errors).collect();
    Summary {
        sources_total: all.len(),
        sources_online: live.len(),
        queries_total,
        blocked_total,
        blocked_rate: blocked_rate(queries_total, blocked_total),
        avg_latency_ms: mean(live.iter().filter_map(|s| s.avg_latency_ms).collect()),
        cache_hit_ratio: mean(live.iter().filter_map(|s| s.cache_hit_ratio).collect()),
        upstream_errors: (!reported_errors.is_empty()).then(|| reported_errors.iter().sum()),
        blocked_rate_avg: mean(live.iter().map(|s| blocked_rate(s.queries_total, s.blocked_total)).collect())
            .unwrap_or(0.0),
    }
}

/// Samples laid out on a common time axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucketed {
    /// Start of every bucket some source has a sample in (Unix seconds), ascending.
    pub buckets: Vec<i64>,
    /// Per source (in the order first seen in the input): for each bucket, the newest sample
    /// of that source in it, if any.
    pub series: Vec<(i64, Vec<Option<AdGuardSample>>)>,
    /// Growth of the query counts from each source's first to its last point it answered at,
    /// summed (a fall, when AdGuard Home's statistics window slides, counts as none).
    pub queries_delta: u64,
    /// The same for the blocked counts.
    pub blocked_delta: u64,
}

/// Puts samples into `bucket_sec`-wide buckets aligned on the Unix epoch, keeping the newest
/// sample of each source in each bucket (as the original manager's history does).
pub fn bucketize(samples: &[AdGuardSample], bucket_sec: i64) -> Bucketed {
    let bucket_sec = bucket_sec.max(1);
    let mut order: Vec<i64> = vec![];
    let mut newest: HashMap<(i64, i64), &AdGuardSample> = HashMap::new();
    for s in samples {
        if !order.contains(&s.source_id) {
            order.push(s.source_id);
        }
        let bucket = s.ts.div_euclid(bucket_sec) * bucket_sec;
        let slot = newest.entry((s.source_id, bucket)).or_insert(s);
        if s.ts > slot.ts {
            *slot = s;
        }
    }
    let mut buckets: Vec<i64> = newest.keys().map(|(_, b)| *b).collect();
    buckets.sort_unstable();
    buckets.dedup();
    let (mut queries_delta, mut blocked_delta) = (0u64, 0u64);
    let series = order
        .into_iter()
        .map(|source| {
            let points: Vec<Option<AdGuardSample>> =
                buckets.iter().map(|b| newest.get(&(source, *b)).map(|s| (*s).clone())).collect();
            // An unreachable source's zeros are no count, so they are left out.
            let present: Vec<&AdGuardSample> = points.iter().flatten().filter(|s| s.available).collect();
            if let (Some(first), Some(last)) = (present.first(), present.last()) {
                queries_delta += last.queries_total.saturating_sub(first.queries_total);
                blocked_delta += last.blocked_total.saturating_sub(first.blocked_total);
            }
            (source, points)
        })
        .collect();
    Bucketed { buckets, series, queries_delta, blocked_delta }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/control/stats` answer of AdGuard Home v0.107 (hours, trimmed series).
    const STATS: &str = r#"{
        "time_units": "hours",
        "top_queried_domains": [{"example.org": 120}, {"play.googleapis.com": 80}],
        "top_clients": [{"192.168.1.10": 150}, {"192.168.1.42": 50}],
        "top_blocked_domains": [{"doubleclick.net": 21}, {"ads.example": 30}],
        "top_upstreams_responses": [{"tls://1.1.1.1": 170}],
        "top_upstreams_avg_time": [{"tls://1.1.1.1": 0.0118}],
        "dns_queries": [0, 0, 120, 80],
        "blocked_filtering": [0, 0, 30, 21],
        "replaced_safebrowsing": [0, 0, 0, 1],
        "replaced_parental": [0, 0, 0, 0],
        "num_dns_queries": 200,
        "num_blocked_filtering": 51,
        "num_replaced_safebrowsing": 1,
        "num_replaced_safesearch": 0,
        "num_replaced_parental": 0,
        "avg_processing_time": 0.012345
    }"#;

    #[test]
    fn stats_are_read_as_adguard_home_documents_them() {
        let stats = parse_stats(STATS).unwrap();
        assert_eq!((stats.queries_total, stats.blocked_total), (200, 51), "filters only, not safe browsing");
        assert_eq!(stats.avg_latency_ms, Some(12.35), "seconds → milliseconds");
        assert_eq!((stats.cache_hit_ratio, stats.upstream_errors), (None, None), "not in the stats API");
        assert_eq!(
            stats.top_blocked_domains,
            vec![
                TopEntry { name: "ads.example".into(), count: 30 },
                TopEntry { name: "doubleclick.net".into(), count: 21 }
            ],
            "largest first"
        );
        assert_eq!(stats.top_clients[0], TopEntry { name: "192.168.1.10".into(), count: 150 });
        assert_eq!(blocked_rate(stats.queries_total, stats.blocked_total), 25.5);

        // A fresh install: empty lists, no processing time yet.
        let fresh = parse_stats(r#"{"num_dns_queries": 0, "num_blocked_filtering": 0, "top_clients": []}"#).unwrap();
        assert_eq!((fresh.queries_total, fresh.avg_latency_ms, fresh.top_clients.len()), (0, None, 0));
        // Long lists are cut; odd entries (floats, negatives) are read or skipped, not fatal.
        let long: Vec<String> = (0..15).map(|i| format!(r#"{{"c{i}.example": {i}}}"#)).collect();
        let body = format!(
            r#"{{"num_dns_queries": 1, "num_blocked_filtering": 0,
                 "top_blocked_domains": [{}, {{"f.example": 2.6}}, {{"neg.example": -1}}]}}"#,
            long.join(",")
        );
        let cut = parse_stats(&body).unwrap().top_blocked_domains;
        assert_eq!(cut.len(), TOP_N);
        assert_eq!(cut[0].name, "c14.example");
        assert!(!cut.iter().any(|e| e.name == "neg.example"));
        // Anything else is refused rather than read as zeros.
        assert!(parse_stats(r#"{"status": "ok"}"#).is_err());
        assert!(parse_stats("<html>login</html>").is_err());
    }

    #[test]
    fn status_says_whether_dns_runs() {
        let s = parse_status(
            r#"{"dns_addresses": ["127.0.0.1"], "dns_port": 53, "http_port": 3000, "protection_enabled": true,
                "dhcp_available": true, "running": true, "version": "v0.107.52", "language": "en"}"#,
        )
        .unwrap();
        assert_eq!(s, Status { running: true, version: "v0.107.52".into(), protection_enabled: true });
        assert!(!parse_status(r#"{"running": false, "version": "v0.107.52"}"#).unwrap().running);
        assert!(parse_status("[]").is_err());
    }

    fn point(source_id: i64, ts: i64, queries: u64, blocked: u64, available: bool) -> AdGuardSample {
        if !available {
            return unavailable(source_id, ts, "down".into());
        }
        let mut stats = parse_stats(STATS).unwrap();
        (stats.queries_total, stats.blocked_total) = (queries, blocked);
        let status = Status { running: true, version: "v0.107.52".into(), protection_enabled: true };
        sample(source_id, ts, &Ok((status, stats)))
    }

    #[test]
    fn summary_counts_only_sources_that_answered() {
        let a = point(1, 100, 200, 50, true);
        let b = point(2, 100, 600, 30, true);
        let down = point(3, 100, 0, 0, false);
        let s = summarize([&a, &b, &down]);
        assert_eq!((s.sources_total, s.sources_online), (3, 2));
        assert_eq!((s.queries_total, s.blocked_total), (800, 80));
        assert_eq!(s.blocked_rate, 10.0, "of all queries, not a mean of rates");
        assert_eq!(s.blocked_rate_avg, 15.0, "mean of 25% and 5%");
        assert_eq!(s.avg_latency_ms, Some(12.35));
        assert_eq!((s.cache_hit_ratio, s.upstream_errors), (None, None));
        let none = summarize([&down]);
        assert_eq!((none.sources_online, none.blocked_rate, none.avg_latency_ms), (0, 0.0, None));
    }

    #[test]
    fn buckets_keep_the_newest_sample_per_source_and_line_sources_up() {
        let samples = vec![
            point(1, 1000, 100, 10, true),
            point(1, 1010, 110, 11, true), // same 60 s bucket as 1000: replaces it
            point(1, 1080, 150, 20, true),
            point(1, 1250, 90, 25, true), // the window slid: the count fell
            point(2, 1090, 500, 5, true),
            point(2, 1300, 0, 0, false),
        ];
        let b = bucketize(&samples, 60);
        assert_eq!(b.buckets, vec![960, 1080, 1200, 1260]);
        let one = &b.series[0];
        assert_eq!(one.0, 1);
        let ts: Vec<Option<i64>> = one.1.iter().map(|p| p.as_ref().map(|s| s.ts)).collect();
        assert_eq!(ts, vec![Some(1010), Some(1080), Some(1250), None]);
        let two: Vec<Option<i64>> = b.series[1].1.iter().map(|p| p.as_ref().map(|s| s.ts)).collect();
        assert_eq!(two, vec![None, Some(1090), None, Some(1300)]);
        // Source 1: 110 → 90 queries fell (0), 11 → 25 blocked (14); source 2 answered once (0, 0).
        assert_eq!((b.queries_delta, b.blocked_delta), (0, 14));

        let wide = bucketize(&samples, 3600);
        assert_eq!(wide.buckets, vec![0]);
        assert_eq!(wide.series[0].1[0].as_ref().map(|s| s.ts), Some(1250), "the newest of the bucket");
        assert_eq!(wide.queries_delta, 0, "one point per source: no growth to measure");
        assert_eq!(
            bucketize(&[], 60),
            Bucketed { buckets: vec![], series: vec![], queries_delta: 0, blocked_delta: 0 }
        );
    }
}
