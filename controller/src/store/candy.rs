//! The CandyPanel API's own data: its settings table (key → string value, in the panel's row
//! order) and the bearer sessions its logins hand out.

use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// Settings the panel stores, with their defaults, in the order its UI lists them. The admin
/// password and the single global session token of the original are not settings here: logins
/// use the controller's users and get a session each.
pub const CANDY_SETTINGS: &[(&str, &str)] = &[
    ("server_ip", "192.168.1.100"),
    ("custom_endpont", "192.168.1.100"),
    ("dns", "8.8.8.8"),
    ("ipv6_dns", "2001:4860:4860::8888"),
    ("status", "1"),
    ("alert", "[\"Welcome to the CandyPanel API of Flotilla\"]"),
    ("reset_time", "0"),
    ("mtu", "1420"),
    ("bandwidth", "0"),
    ("uptime", "0"),
    ("telegram_bot_status", "0"),
    ("telegram_bot_admin_id", "0"),
    ("telegram_bot_token", "YOUR_TELEGRAM_BOT_TOKEN"),
    ("telegram_api_hash", "YOUR_TELEGRAM_API_HASH"),
    ("telegram_api_id", "YOUR_TELEGRAM_API_ID"),
    ("admin_card_number", "YOUR_ADMIN_CARD_NUMBER"),
    ("prices", "{\"1GB\": 4000, \"1Month\": 75000}"),
    ("api_tokens", "{}"),
    ("auto_backup", "1"),
    ("install", "0"),
    ("telegram_bot_pid", "0"),
    ("ap_port", "3446"),
    ("next_reset_at", "0"),
];

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl Store {
    /// Every setting, defaults filled in, in the panel's order.
    pub fn candy_settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT key, value FROM candy_settings")?;
        let stored: std::collections::HashMap<String, String> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        Ok(CANDY_SETTINGS
            .iter()
            .map(|(k, default)| (k.to_string(), stored.get(*k).cloned().unwrap_or_else(|| default.to_string())))
            .collect())
    }

    /// One setting (its default when never set); `None` for a key the panel does not have.
    pub fn candy_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let default = CANDY_SETTINGS.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string());
        let Some(default) = default else { return Ok(None) };
        let stored: Option<String> = self
            .conn()
            .query_row("SELECT value FROM candy_settings WHERE key = ?1", params![key], |r| r.get(0))
            .optional()?;
        Ok(Some(stored.unwrap_or(default)))
    }

    /// Sets settings in one transaction (callers validate keys and values).
    pub fn set_candy_settings(&self, values: &[(&str, &str)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (key, value) in values {
            tx.execute(
                "INSERT INTO candy_settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a login session for `username`, valid until `expires_at` (Unix seconds).
    pub fn create_api_session(&self, token: &str, username: &str, expires_at: i64) -> Result<(), StoreError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let conn = self.conn();
        conn.execute("DELETE FROM api_sessions WHERE expires_at <= ?1", params![now])?;
        conn.execute(
            "INSERT INTO api_sessions (token_hash, username, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![token_hash(token), username, now, expires_at],
        )?;
        Ok(())
    }

    /// The user a session token belongs to, while it has not expired.
    pub fn api_session_user(&self, token: &str) -> Result<Option<String>, StoreError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Ok(self
            .conn()
            .query_row(
                "SELECT username FROM api_sessions WHERE token_hash = ?1 AND expires_at > ?2",
                params![token_hash(token), now],
                |r| r.get(0),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_have_defaults_in_order_and_sessions_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let settings = store.candy_settings().unwrap();
        assert_eq!(settings[0], ("server_ip".into(), "192.168.1.100".into()));
        store.set_candy_settings(&[("dns", "1.1.1.1"), ("mtu", "1380")]).unwrap();
        assert_eq!(store.candy_setting("dns").unwrap().as_deref(), Some("1.1.1.1"));
        assert_eq!(store.candy_settings().unwrap()[2].1, "1.1.1.1", "order kept");
        assert_eq!(store.candy_setting("session_token").unwrap(), None, "not a setting here");

        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        store.create_api_session("tok-1", "admin", now + 60).unwrap();
        store.create_api_session("tok-2", "admin", now - 1).unwrap();
        assert_eq!(store.api_session_user("tok-1").unwrap().as_deref(), Some("admin"));
        assert_eq!(store.api_session_user("tok-2").unwrap(), None, "expired");
        assert_eq!(store.api_session_user("nope").unwrap(), None);
    }
}
