//! API keys of the Panelica-style external API: a public key (`pk_live_…`) that names the key,
//! and a secret (`sk_live_…`) that signs requests. The secret must be read back to verify HMACs,
//! so it is sealed with the store's `secret.key`, never hashed; it is shown once, at creation
//! and on regeneration.

use rusqlite::{params, OptionalExtension, Row};
use time::OffsetDateTime;

use super::{from_unix, unix, Role, Store, StoreError};

/// Rate tiers of a key (requests per minute and hour, burst): see `api::panelica::rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateTier {
    Starter,
    Professional,
    Business,
    Enterprise,
}

impl RateTier {
    /// Every tier, cheapest first.
    pub const ALL: [RateTier; 4] =
        [RateTier::Starter, RateTier::Professional, RateTier::Business, RateTier::Enterprise];

    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RateTier::Starter => "starter",
            RateTier::Professional => "professional",
            RateTier::Business => "business",
            RateTier::Enterprise => "enterprise",
        }
    }

    /// Parses an API name (case-insensitive).
    pub fn parse(s: &str) -> Option<RateTier> {
        RateTier::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// Live keys act for real; test keys are told apart by their prefix (`pk_test_…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEnvironment {
    Live,
    Test,
}

impl KeyEnvironment {
    /// The API's name, also the keys' infix.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyEnvironment::Live => "live",
            KeyEnvironment::Test => "test",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<KeyEnvironment> {
        match s.trim().to_ascii_lowercase().as_str() {
            "live" => Some(KeyEnvironment::Live),
            "test" => Some(KeyEnvironment::Test),
            _ => None,
        }
    }
}

/// A key as listed (no secret).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    /// A UUID.
    pub id: String,
    pub user_id: i64,
    pub username: String,
    pub role: Role,
    pub name: String,
    /// `pk_live_…` / `pk_test_…`.
    pub public_key: String,
    pub environment: KeyEnvironment,
    /// `resource:action` scopes, `*:*` for everything.
    pub scopes: Vec<String>,
    pub tier: RateTier,
    /// Addresses and CIDR blocks the key may be used from; empty: anywhere.
    pub ip_allow: Vec<String>,
    pub expires_at: Option<OffsetDateTime>,
    pub enabled: bool,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

impl ApiKeyRecord {
    /// What the API shows of the public key: its first 16 characters (`pk_live_a1b2c3d4`).
    pub fn key_prefix(&self) -> &str {
        &self.public_key[..self.public_key.len().min(16)]
    }
}

/// What creating a key needs.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub user_id: i64,
    pub name: String,
    pub environment: KeyEnvironment,
    pub scopes: Vec<String>,
    pub tier: RateTier,
    pub ip_allow: Vec<String>,
    pub expires_at: Option<OffsetDateTime>,
}

/// Changes to a key; `None` keeps the field.
#[derive(Debug, Clone, Default)]
pub struct ApiKeyChange {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub tier: Option<RateTier>,
    pub ip_allow: Option<Vec<String>>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<OffsetDateTime>>,
    pub enabled: Option<bool>,
}

const COLUMNS: &str = "k.id, k.user_id, u.username, u.role, k.name, k.public_key, k.environment, k.scopes, k.tier, \
                       k.ip_allow, k.expires_at, k.enabled, k.created_at, k.last_used_at";

fn record(r: &Row<'_>) -> rusqlite::Result<(ApiKeyRecordRaw, Vec<u8>)> {
    Ok((
        ApiKeyRecordRaw {
            id: r.get(0)?,
            user_id: r.get(1)?,
            username: r.get(2)?,
            role: r.get(3)?,
            name: r.get(4)?,
            public_key: r.get(5)?,
            environment: r.get(6)?,
            scopes: r.get(7)?,
            tier: r.get(8)?,
            ip_allow: r.get(9)?,
            expires_at: r.get(10)?,
            enabled: r.get(11)?,
            created_at: r.get(12)?,
            last_used_at: r.get(13)?,
        },
        r.get(14).unwrap_or_default(),
    ))
}

/// A row before its text columns are parsed.
struct ApiKeyRecordRaw {
    id: String,
    user_id: i64,
    username: String,
    role: String,
    name: String,
    public_key: String,
    environment: String,
    scopes: String,
    tier: String,
    ip_allow: String,
    expires_at: Option<i64>,
    enabled: bool,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl ApiKeyRecordRaw {
    fn parse(self) -> Result<ApiKeyRecord, StoreError> {
        let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("api key {}: {what} {v:?}", self.id));
        Ok(ApiKeyRecord {
            role: Role::parse(&self.role)?,
            environment: KeyEnvironment::parse(&self.environment)
                .ok_or_else(|| corrupt("environment", &self.environment))?,
            scopes: serde_json::from_str(&self.scopes).map_err(|_| corrupt("scopes", &self.scopes))?,
            tier: RateTier::parse(&self.tier).ok_or_else(|| corrupt("tier", &self.tier))?,
            ip_allow: serde_json::from_str(&self.ip_allow).map_err(|_| corrupt("ip_allow", &self.ip_allow))?,
            expires_at: self.expires_at.map(from_unix),
            created_at: from_unix(self.created_at),
            last_used_at: self.last_used_at.map(from_unix),
            id: self.id,
            user_id: self.user_id,
            username: self.username,
            name: self.name,
            public_key: self.public_key,
            enabled: self.enabled,
        })
    }
}

/// A fresh `pk_ENV_…` and `sk_ENV_…` pair: 128 and 256 random bits.
fn new_key_pair(env: KeyEnvironment) -> (String, String) {
    let env = env.as_str();
    (format!("pk_{env}_{}", hex::encode(rand::random::<[u8; 16]>())), new_secret_for(env))
}

fn new_secret_for(env: &str) -> String {
    format!("sk_{env}_{}", hex::encode(rand::random::<[u8; 32]>()))
}

impl Store {
    /// The first administrator (the one keys act for when no user is named).
    pub fn first_admin(&self) -> Result<Option<super::UserRecord>, StoreError> {
        let name: Option<String> = self
            .conn()
            .query_row("SELECT username FROM users WHERE role = 'admin' ORDER BY id LIMIT 1", [], |r| r.get(0))
            .optional()?;
        match name {
            Some(name) => self.user(&name),
            None => Ok(None),
        }
    }

    /// Creates a key; returns it and its secret (the only time the secret leaves the store
    /// unasked).
    pub fn create_api_key(&self, new: &NewApiKey) -> Result<(ApiKeyRecord, String), StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (public_key, secret) = new_key_pair(new.environment);
        let sealed = self.secrets.seal(secret.as_bytes());
        let scopes = serde_json::to_string(&new.scopes).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let ip_allow = serde_json::to_string(&new.ip_allow).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let changed = self.conn().execute(
            "INSERT INTO api_keys (id, user_id, name, public_key, secret, environment, scopes, tier, ip_allow, \
             expires_at, enabled, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?11)",
            params![
                id,
                new.user_id,
                new.name,
                public_key,
                sealed,
                new.environment.as_str(),
                scopes,
                new.tier.as_str(),
                ip_allow,
                new.expires_at.map(unix),
                unix(OffsetDateTime::now_utc()),
            ],
        );
        match changed {
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(StoreError::NotFound(format!("user {}", new.user_id)))
            }
            other => other?,
        };
        let key = self.api_key(&id)?.ok_or_else(|| StoreError::Corrupt("api key vanished".into()))?;
        Ok((key, secret))
    }

    /// One key by id.
    pub fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = ?1");
        let row = self.conn().query_row(&sql, params![id], record).optional()?;
        row.map(|(raw, _)| raw.parse()).transpose()
    }

    /// Keys, newest first: all of them, or `user`'s.
    pub fn api_keys(&self, user: Option<i64>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys k JOIN users u ON u.id = k.user_id \
             WHERE ?1 IS NULL OR k.user_id = ?1 ORDER BY k.created_at DESC, k.id"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![user], record)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(|(raw, _)| raw.parse()).collect()
    }

    /// The key named by `public_key` and its secret, for verifying a request.
    pub fn api_key_for_signing(&self, public_key: &str) -> Result<Option<(ApiKeyRecord, String)>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS}, k.secret FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.public_key = ?1"
        );
        let row = self.conn().query_row(&sql, params![public_key], record).optional()?;
        let Some((raw, sealed)) = row else { return Ok(None) };
        let secret = String::from_utf8(self.secrets.open(&sealed)?)
            .map_err(|_| StoreError::Corrupt("api key secret is not text".into()))?;
        Ok(Some((raw.parse()?, secret)))
    }

    /// A new secret for key `id` (the old one stops working at once); `None` if no such key.
    pub fn regenerate_api_key_secret(&self, id: &str) -> Result<Option<String>, StoreError> {
        let Some(key) = self.api_key(id)? else { return Ok(None) };
        let secret = new_secret_for(key.environment.as_str());
        let sealed = self.secrets.seal(secret.as_bytes());
        self.conn().execute("UPDATE api_keys SET secret = ?2 WHERE id = ?1", params![id, sealed])?;
        Ok(Some(secret))
    }

    /// Applies `change` to key `id`; the key as it is now, `None` if no such key.
    pub fn update_api_key(&self, id: &str, change: &ApiKeyChange) -> Result<Option<ApiKeyRecord>, StoreError> {
        let json = |v: &Vec<String>| serde_json::to_string(v).map_err(|e| StoreError::Invalid(e.to_string()));
        let scopes = change.scopes.as_ref().map(json).transpose()?;
        let ip_allow = change.ip_allow.as_ref().map(json).transpose()?;
        let changed = self.conn().execute(
            "UPDATE api_keys SET name = COALESCE(?2, name), scopes = COALESCE(?3, scopes), tier = COALESCE(?4, tier), \
             ip_allow = COALESCE(?5, ip_allow), enabled = COALESCE(?6, enabled), \
             expires_at = CASE WHEN ?7 THEN ?8 ELSE expires_at END WHERE id = ?1",
            params![
                id,
                change.name,
                scopes,
                change.tier.map(RateTier::as_str),
                ip_allow,
                change.enabled,
                change.expires_at.is_some(),
                change.expires_at.flatten().map(unix),
            ],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        self.api_key(id)
    }

    /// Deletes key `id`; whether it existed.
    pub fn delete_api_key(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute("DELETE FROM api_keys WHERE id = ?1", params![id])? > 0)
    }

    /// Records that key `id` was used now (at most once a minute per key hits the disk).
    pub fn touch_api_key(&self, id: &str, at: OffsetDateTime) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2 - 60)",
            params![id, unix(at)],
        )?;
        Ok(())
    }
}
