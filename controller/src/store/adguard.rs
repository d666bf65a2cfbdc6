//! AdGuard Home sources the controller polls, and their samples: one row per source per
//! collection (availability, query and block counts, latency, top lists), kept for a bounded
//! time. A source's password is sealed with `secret.key` and never read out with the source.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{unix, Store, StoreError};

/// One entry of a top list: a domain or a client, and how many queries it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopEntry {
    pub name: String,
    pub count: u64,
}

/// What creating an AdGuard source needs.
#[derive(Debug, Clone)]
pub struct NewAdGuardSource {
    pub name: String,
    /// Base URL of the admin interface (`https://dns.example.com:3000`), without a trailing slash.
    pub admin_url: String,
    /// Informational: the address clients resolve against.
    pub dns_url: String,
    /// HTTP Basic user; empty for none.
    pub username: String,
    /// Stored sealed.
    pub password: Option<String>,
    pub verify_tls: bool,
    pub enabled: bool,
}

/// A change of a source; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct AdGuardSourceChange {
    pub name: Option<String>,
    pub admin_url: Option<String>,
    pub dns_url: Option<String>,
    pub username: Option<String>,
    /// A new password (stored sealed).
    pub password: Option<String>,
    pub verify_tls: Option<bool>,
    pub enabled: Option<bool>,
}

/// A source as stored, without its password.
#[derive(Debug, Clone, PartialEq)]
pub struct AdGuardSourceRecord {
    pub id: i64,
    pub name: String,
    pub admin_url: String,
    pub dns_url: String,
    pub username: String,
    pub has_password: bool,
    pub verify_tls: bool,
    pub enabled: bool,
    /// Why the last collection failed; empty after a successful one.
    pub last_error: String,
    /// Unix seconds of the last successful collection (0: never).
    pub last_success_ts: i64,
    /// Unix seconds of the last collection attempt (0: never).
    pub last_collected_ts: i64,
    /// The URL the API answered at last (empty until it has).
    pub api_base: String,
    /// AdGuard Home's version as it last reported it (empty until known).
    pub version: String,
}

/// One collection of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct AdGuardSample {
    pub source_id: i64,
    /// Unix seconds.
    pub ts: i64,
    /// The API answered, with the DNS server running.
    pub available: bool,
    /// DNS queries over AdGuard Home's statistics window (0 when unavailable).
    pub queries_total: u64,
    /// Of those, blocked by filters.
    pub blocked_total: u64,
    pub avg_latency_ms: Option<f64>,
    /// Percent of queries answered from the cache, where AdGuard Home reports it.
    pub cache_hit_ratio: Option<f64>,
    /// Failed upstream exchanges, where AdGuard Home reports them.
    pub upstream_errors: Option<u64>,
    pub top_blocked_domains: Vec<TopEntry>,
    pub top_clients: Vec<TopEntry>,
    /// Why the source was unavailable; empty when it was available.
    pub error: String,
}

const SOURCE_COLUMNS: &str = "id, name, admin_url, dns_url, username, password IS NOT NULL, verify_tls, enabled, \
    last_error, last_success_ts, last_collected_ts, api_base, version";

fn source_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdGuardSourceRecord> {
    Ok(AdGuardSourceRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        admin_url: r.get(2)?,
        dns_url: r.get(3)?,
        username: r.get(4)?,
        has_password: r.get(5)?,
        verify_tls: r.get(6)?,
        enabled: r.get(7)?,
        last_error: r.get(8)?,
        last_success_ts: r.get(9)?,
        last_collected_ts: r.get(10)?,
        api_base: r.get(11)?,
        version: r.get(12)?,
    })
}

const SAMPLE_COLUMNS: &str =
    "source_id, ts, available, queries_total, blocked_total, avg_latency_ms, cache_hit_ratio, \
    upstream_errors, top_blocked_domains, top_clients, error";

fn sample_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdGuardSample> {
    let top = |i: usize| -> rusqlite::Result<Vec<TopEntry>> {
        // Display-only lists: an unreadable one is dropped rather than failing the whole answer.
        Ok(serde_json::from_str(&r.get::<_, String>(i)?).unwrap_or_default())
    };
    Ok(AdGuardSample {
        source_id: r.get(0)?,
        ts: r.get(1)?,
        available: r.get(2)?,
        queries_total: r.get::<_, i64>(3)?.max(0) as u64,
        blocked_total: r.get::<_, i64>(4)?.max(0) as u64,
        avg_latency_ms: r.get(5)?,
        cache_hit_ratio: r.get(6)?,
        upstream_errors: r.get::<_, Option<i64>>(7)?.map(|v| v.max(0) as u64),
        top_blocked_domains: top(8)?,
        top_clients: top(9)?,
        error: r.get(10)?,
    })
}

fn name_conflict(name: &str) -> StoreError {
    StoreError::Conflict(format!("an AdGuard source named {name:?}"))
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

impl Store {
    /// Adds a source. Names are unique (any case).
    pub fn create_adguard_source(&self, new: &NewAdGuardSource) -> Result<AdGuardSourceRecord, StoreError> {
        let sealed = new.password.as_ref().map(|p| self.secrets.seal(p.as_bytes()));
        let id = {
            let conn = self.conn();
            let res = conn.execute(
                "INSERT INTO adguard_sources (name, admin_url, dns_url, username, password, verify_tls, enabled, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    new.name,
                    new.admin_url,
                    new.dns_url,
                    new.username,
                    sealed,
                    new.verify_tls,
                    new.enabled,
                    unix(OffsetDateTime::now_utc())
                ],
            );
            match res {
                Ok(_) => conn.last_insert_rowid(),
                Err(e) if is_constraint(&e) => return Err(name_conflict(&new.name)),
                Err(e) => return Err(e.into()),
            }
        };
        self.adguard_source(id)?.ok_or_else(|| StoreError::Corrupt("AdGuard source vanished after insert".into()))
    }

    /// One source.
    pub fn adguard_source(&self, id: i64) -> Result<Option<AdGuardSourceRecord>, StoreError> {
        let sql = format!("SELECT {SOURCE_COLUMNS} FROM adguard_sources WHERE id = ?1");
        Ok(self.conn().query_row(&sql, params![id], source_from_row).optional()?)
    }

    /// Every source, by name (any case).
    pub fn adguard_sources(&self) -> Result<Vec<AdGuardSourceRecord>, StoreError> {
        let sql = format!("SELECT {SOURCE_COLUMNS} FROM adguard_sources ORDER BY name COLLATE NOCASE, id");
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([], source_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Changes a source; `NotFound` if there is none with `id`.
    pub fn update_adguard_source(
        &self,
        id: i64,
        change: &AdGuardSourceChange,
    ) -> Result<AdGuardSourceRecord, StoreError> {
        let sealed = change.password.as_ref().map(|p| self.secrets.seal(p.as_bytes()));
        let res = self.conn().execute(
            "UPDATE adguard_sources SET
                name = COALESCE(?2, name), admin_url = COALESCE(?3, admin_url), dns_url = COALESCE(?4, dns_url),
                username = COALESCE(?5, username), password = COALESCE(?6, password),
                verify_tls = COALESCE(?7, verify_tls), enabled = COALESCE(?8, enabled)
             WHERE id = ?1",
            params![
                id,
                change.name,
                change.admin_url,
                change.dns_url,
                change.username,
                sealed,
                change.verify_tls,
                change.enabled
            ],
        );
        match res {
            Ok(0) => return Err(StoreError::NotFound(format!("AdGuard source {id}"))),
            Ok(_) => {}
            Err(e) if is_constraint(&e) => return Err(name_conflict(change.name.as_deref().unwrap_or_default())),
            Err(e) => return Err(e.into()),
        }
        self.adguard_source(id)?.ok_or_else(|| StoreError::NotFound(format!("AdGuard source {id}")))
    }

    /// Deletes a source with its samples. Returns false if it did not exist.
    pub fn delete_adguard_source(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute("DELETE FROM adguard_sources WHERE id = ?1", params![id])? > 0)
    }

    /// The decrypted password of a source (`None`: no such source, or none set).
    pub fn adguard_password(&self, id: i64) -> Result<Option<String>, StoreError> {
        let sealed: Option<Option<Vec<u8>>> = self
            .conn()
            .query_row("SELECT password FROM adguard_sources WHERE id = ?1", params![id], |r| r.get(0))
            .optional()?;
        sealed
            .flatten()
            .map(|s| {
                let plain = self.secrets.open(&s)?;
                String::from_utf8(plain).map_err(|_| StoreError::Corrupt("AdGuard password is not UTF-8".into()))
            })
            .transpose()
    }

    /// Records a collection of one source and its outcome on the source (last error, last
    /// success, the version it reported), in one transaction. Returns false, recording nothing,
    /// when the source was deleted meanwhile.
    pub fn record_adguard_sample(&self, sample: &AdGuardSample, version: Option<&str>) -> Result<bool, StoreError> {
        let top = |list: &[TopEntry]| serde_json::to_string(list).map_err(|e| StoreError::Corrupt(e.to_string()));
        let (blocked_domains, clients) = (top(&sample.top_blocked_domains)?, top(&sample.top_clients)?);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let updated = tx.execute(
            "UPDATE adguard_sources SET
                last_error = ?2, last_collected_ts = ?3,
                last_success_ts = CASE WHEN ?4 THEN ?3 ELSE last_success_ts END,
                api_base = CASE WHEN ?4 THEN admin_url ELSE api_base END,
                version = COALESCE(?5, version)
             WHERE id = ?1",
            params![sample.source_id, sample.error, sample.ts, sample.available, version],
        )?;
        if updated == 0 {
            return Ok(false);
        }
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO adguard_samples ({SAMPLE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ),
            params![
                sample.source_id,
                sample.ts,
                sample.available,
                sample.queries_total as i64,
                sample.blocked_total as i64,
                sample.avg_latency_ms,
                sample.cache_hit_ratio,
                sample.upstream_errors.map(|v| v as i64),
                blocked_domains,
                clients,
                sample.error
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// The newest sample of every source that has one, by source id.
    pub fn latest_adguard_samples(&self) -> Result<Vec<AdGuardSample>, StoreError> {
        let sql = format!(
            "SELECT {SAMPLE_COLUMNS} FROM adguard_samples
             WHERE (source_id, ts) IN (SELECT source_id, MAX(ts) FROM adguard_samples GROUP BY source_id)
             ORDER BY source_id"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], sample_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Samples at or after `since` (Unix seconds), of one source or all, by source then time.
    pub fn adguard_samples_since(&self, since: i64, source: Option<i64>) -> Result<Vec<AdGuardSample>, StoreError> {
        let sql = format!(
            "SELECT {SAMPLE_COLUMNS} FROM adguard_samples
             WHERE ts >= ?1 AND (?2 IS NULL OR source_id = ?2)
             ORDER BY source_id, ts"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![since, source], sample_from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Drops samples older than `before` (Unix seconds).
    pub fn prune_adguard_samples(&self, before: i64) -> Result<usize, StoreError> {
        Ok(self.conn().execute("DELETE FROM adguard_samples WHERE ts < ?1", params![before])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_source(name: &str) -> NewAdGuardSource {
        NewAdGuardSource {
            name: name.into(),
            admin_url: "https://dns.example.com:3000".into(),
            dns_url: String::new(),
            username: "admin".into(),
            password: Some("ag-s3cret-pass".into()),
            verify_tls: true,
            enabled: true,
        }
    }

    fn sample(source_id: i64, ts: i64, available: bool) -> AdGuardSample {
        AdGuardSample {
            source_id,
            ts,
            available,
            queries_total: ts as u64 * 10,
            blocked_total: ts as u64,
            avg_latency_ms: available.then_some(12.5),
            cache_hit_ratio: None,
            upstream_errors: None,
            top_blocked_domains: vec![TopEntry { name: "ads.example".into(), count: 7 }],
            top_clients: vec![],
            error: if available { String::new() } else { "connection refused".into() },
        }
    }

    #[test]
    fn sources_are_unique_updatable_and_keep_their_password_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.create_adguard_source(&new_source("Home")).unwrap();
        assert!(a.has_password && a.enabled && a.verify_tls);
        assert_eq!((a.last_success_ts, a.api_base.as_str()), (0, ""));
        assert!(matches!(s.create_adguard_source(&new_source("home")), Err(StoreError::Conflict(_))));
        let b = s.create_adguard_source(&NewAdGuardSource { password: None, ..new_source("Alpha") }).unwrap();
        assert!(!b.has_password);
        assert_eq!(s.adguard_sources().unwrap().iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["Alpha", "Home"]);
        assert_eq!(s.adguard_password(a.id).unwrap().as_deref(), Some("ag-s3cret-pass"));
        assert_eq!(s.adguard_password(b.id).unwrap(), None);

        // A change keeps what it does not name, the password included.
        let changed =
            s.update_adguard_source(a.id, &AdGuardSourceChange { enabled: Some(false), ..Default::default() }).unwrap();
        assert!(!changed.enabled && changed.has_password && changed.name == "Home");
        assert_eq!(s.adguard_password(a.id).unwrap().as_deref(), Some("ag-s3cret-pass"));
        s.update_adguard_source(a.id, &AdGuardSourceChange { password: Some("new-one".into()), ..Default::default() })
            .unwrap();
        assert_eq!(s.adguard_password(a.id).unwrap().as_deref(), Some("new-one"));
        let rename = AdGuardSourceChange { name: Some("ALPHA".into()), ..Default::default() };
        assert!(matches!(s.update_adguard_source(a.id, &rename), Err(StoreError::Conflict(_))));
        assert!(matches!(s.update_adguard_source(999, &Default::default()), Err(StoreError::NotFound(_))));

        drop(s);
        let raw = std::fs::read(dir.path().join("controller.db")).unwrap();
        let wal = std::fs::read(dir.path().join("controller.db-wal")).unwrap_or_default();
        for needle in [&b"ag-s3cret-pass"[..], b"new-one"] {
            assert!(!raw.windows(needle.len()).any(|w| w == needle));
            assert!(!wal.windows(needle.len()).any(|w| w == needle));
        }
    }

    #[test]
    fn samples_update_their_source_and_are_listed_latest_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.create_adguard_source(&new_source("a")).unwrap().id;
        let b = s.create_adguard_source(&new_source("b")).unwrap().id;
        assert!(s.record_adguard_sample(&sample(a, 100, true), Some("v0.107.52")).unwrap());
        assert!(s.record_adguard_sample(&sample(a, 160, false), None).unwrap());
        assert!(s.record_adguard_sample(&sample(b, 130, true), Some("v0.107.40")).unwrap());
        let src = s.adguard_source(a).unwrap().unwrap();
        assert_eq!(
            (src.last_success_ts, src.last_collected_ts, src.last_error.as_str(), src.version.as_str()),
            (100, 160, "connection refused", "v0.107.52"),
            "a failure keeps the last success and the version"
        );
        assert_eq!(src.api_base, "https://dns.example.com:3000");
        let latest = s.latest_adguard_samples().unwrap();
        assert_eq!(latest, vec![sample(a, 160, false), sample(b, 130, true)]);
        assert_eq!(s.adguard_samples_since(120, None).unwrap().len(), 2);
        assert_eq!(s.adguard_samples_since(0, Some(a)).unwrap(), vec![sample(a, 100, true), sample(a, 160, false)]);
        assert_eq!(s.prune_adguard_samples(150).unwrap(), 2);
        assert_eq!(s.adguard_samples_since(0, None).unwrap(), vec![sample(a, 160, false)]);

        // A source deleted while it was being collected takes its samples with it, and a late
        // collection of it is dropped.
        assert!(s.delete_adguard_source(a).unwrap());
        assert!(!s.delete_adguard_source(a).unwrap());
        assert!(s.latest_adguard_samples().unwrap().is_empty());
        assert!(!s.record_adguard_sample(&sample(a, 200, true), None).unwrap());
    }
}
