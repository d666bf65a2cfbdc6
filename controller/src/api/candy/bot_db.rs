//! The settings file CandyPanel's Telegram bot reads at start. `bot.py` takes its token and API
//! credentials straight from the panel's SQLite file (`settings(key, value)` through the panel's
//! `db.py`), not over HTTP; to run it unchanged, the controller keeps those rows up to date in the
//! file named by `[candy] bot_db` (e.g. `Backend/CandyPanel.db` beside the bot).

use std::path::Path;

use rusqlite::{params, Connection};

use crate::store::{Store, StoreError};

/// The settings the bot reads; nothing else (no admin secrets) is written to the file.
const BOT_KEYS: &[&str] = &["telegram_bot_token", "telegram_api_id", "telegram_api_hash", "telegram_bot_admin_id"];

/// Writes the bot's settings into `path` (creating the file and its table when missing).
pub fn write(store: &Store, path: &Path) -> Result<(), StoreError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let tx = conn.transaction()?;
    tx.execute("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)", [])?;
    for key in BOT_KEYS {
        let value = store.candy_setting(key)?.unwrap_or_default();
        tx.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Whether a setting change concerns the bot's file.
pub fn concerns(key: &str) -> bool {
    BOT_KEYS.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bot_file_gets_its_credentials_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.set_candy_settings(&[("telegram_bot_token", "123:abc"), ("dns", "1.1.1.1")]).unwrap();
        let file = dir.path().join("CandyPanel.db");
        write(&store, &file).unwrap();
        write(&store, &file).unwrap();
        let conn = Connection::open(&file).unwrap();
        let token: String =
            conn.query_row("SELECT value FROM settings WHERE key = 'telegram_bot_token'", [], |r| r.get(0)).unwrap();
        assert_eq!(token, "123:abc");
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM settings", [], |r| r.get(0)).unwrap();
        assert_eq!(count, BOT_KEYS.len() as i64);
    }
}
