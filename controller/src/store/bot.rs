//! The CandyPanel Telegram bot's own records: its users (one per Telegram account, linked to the
//! WireGuard client their purchases feed) and their payment orders, which an admin approves or
//! rejects exactly once.

use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError};

/// Whether a bot user may buy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotUserStatus {
    Active,
    Banned,
}

impl BotUserStatus {
    /// The stored and shown text (`active`, `banned`).
    pub fn as_str(self) -> &'static str {
        match self {
            BotUserStatus::Active => "active",
            BotUserStatus::Banned => "banned",
        }
    }

    fn parse(s: &str) -> Result<BotUserStatus, StoreError> {
        match s {
            "active" => Ok(BotUserStatus::Active),
            "banned" => Ok(BotUserStatus::Banned),
            other => Err(StoreError::Corrupt(format!("bot user status {other:?}"))),
        }
    }
}

/// A Telegram account known to the bot.
#[derive(Debug, Clone, PartialEq)]
pub struct BotUser {
    pub telegram_id: i64,
    /// The WireGuard client its purchases go to; `None` until the first approval.
    pub candy_client_name: Option<String>,
    pub traffic_bought_gb: f64,
    pub time_bought_days: i64,
    pub status: BotUserStatus,
    pub created_at: String,
    pub language: String,
}

/// What an order buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseType {
    /// `quantity` GB.
    Gb,
    /// `quantity` months.
    Month,
    /// `time_quantity` months and `traffic_quantity` GB.
    Custom,
}

impl PurchaseType {
    /// The stored and shown text (`gb`, `month`, `custom`).
    pub fn as_str(self) -> &'static str {
        match self {
            PurchaseType::Gb => "gb",
            PurchaseType::Month => "month",
            PurchaseType::Custom => "custom",
        }
    }

    /// The type named `s`, as the bot sends it.
    pub fn parse(s: &str) -> Option<PurchaseType> {
        match s {
            "gb" => Some(PurchaseType::Gb),
            "month" => Some(PurchaseType::Month),
            "custom" => Some(PurchaseType::Custom),
            _ => None,
        }
    }
}

/// Where an order is in its review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    Pending,
    Approved,
    Rejected,
}

impl TransactionStatus {
    /// The stored and shown text (`pending`, `approved`, `rejected`).
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionStatus::Pending => "pending",
            TransactionStatus::Approved => "approved",
            TransactionStatus::Rejected => "rejected",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<TransactionStatus> {
        match s {
            "pending" => Some(TransactionStatus::Pending),
            "approved" => Some(TransactionStatus::Approved),
            "rejected" => Some(TransactionStatus::Rejected),
            _ => None,
        }
    }
}

/// A payment order as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BotTransaction {
    /// The bank reference the user typed; unique.
    pub order_id: String,
    pub telegram_id: i64,
    pub amount: f64,
    pub card_number_sent: String,
    pub status: TransactionStatus,
    pub requested_at: String,
    /// When it was approved or rejected.
    pub approved_at: Option<String>,
    pub admin_note: Option<String>,
    pub purchase_type: PurchaseType,
    pub quantity: f64,
    pub time_quantity: f64,
    pub traffic_quantity: f64,
}

/// What submitting an order needs; it starts pending.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBotTransaction {
    pub order_id: String,
    pub telegram_id: i64,
    pub amount: f64,
    pub card_number_sent: String,
    pub requested_at: String,
    pub purchase_type: PurchaseType,
    pub quantity: f64,
    pub time_quantity: f64,
    pub traffic_quantity: f64,
}

/// The outcome of deciding an order.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// It was pending and now has the new status.
    Decided(BotTransaction),
    /// No order with that id.
    NotFound,
    /// Somebody decided it already; as it stands.
    NotPending(BotTransaction),
}

const USER_COLUMNS: &str =
    "telegram_id, candy_client_name, traffic_bought_gb, time_bought_days, status, created_at, language";

const TRANSACTION_COLUMNS: &str = "order_id, telegram_id, amount, card_number_sent, status, requested_at, \
     approved_at, admin_note, purchase_type, quantity, time_quantity, traffic_quantity";

/// A row of `USER_COLUMNS`; the status is parsed by the caller (rusqlite's closure cannot fail
/// with a store error).
fn user_row(r: &Row<'_>) -> rusqlite::Result<(BotUser, String)> {
    Ok((
        BotUser {
            telegram_id: r.get(0)?,
            candy_client_name: r.get(1)?,
            traffic_bought_gb: r.get(2)?,
            time_bought_days: r.get(3)?,
            status: BotUserStatus::Active,
            created_at: r.get(5)?,
            language: r.get(6)?,
        },
        r.get(4)?,
    ))
}

fn user_of((mut user, status): (BotUser, String)) -> Result<BotUser, StoreError> {
    user.status = BotUserStatus::parse(&status)?;
    Ok(user)
}

/// A row of `TRANSACTION_COLUMNS`, with its status and purchase type still as text.
fn transaction_row(r: &Row<'_>) -> rusqlite::Result<(BotTransaction, String, String)> {
    Ok((
        BotTransaction {
            order_id: r.get(0)?,
            telegram_id: r.get(1)?,
            amount: r.get(2)?,
            card_number_sent: r.get(3)?,
            status: TransactionStatus::Pending,
            requested_at: r.get(5)?,
            approved_at: r.get(6)?,
            admin_note: r.get(7)?,
            purchase_type: PurchaseType::Gb,
            quantity: r.get(9)?,
            time_quantity: r.get(10)?,
            traffic_quantity: r.get(11)?,
        },
        r.get(4)?,
        r.get(8)?,
    ))
}

fn transaction_of((mut t, status, kind): (BotTransaction, String, String)) -> Result<BotTransaction, StoreError> {
    t.status = TransactionStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("status {status:?} of order {}", t.order_id)))?;
    t.purchase_type = PurchaseType::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("purchase type {kind:?} of order {}", t.order_id)))?;
    Ok(t)
}

impl Store {
    /// One bot user.
    pub fn bot_user(&self, telegram_id: i64) -> Result<Option<BotUser>, StoreError> {
        let row = self
            .conn()
            .query_row(&format!("SELECT {USER_COLUMNS} FROM bot_users WHERE telegram_id = ?1"), [telegram_id], user_row)
            .optional()?;
        row.map(user_of).transpose()
    }

    /// Registers a Telegram account (language `en`), or finds it. Returns the user and whether
    /// it is new.
    pub fn register_bot_user(&self, telegram_id: i64, created_at: &str) -> Result<(BotUser, bool), StoreError> {
        let added = self.conn().execute(
            "INSERT INTO bot_users (telegram_id, created_at) VALUES (?1, ?2) ON CONFLICT(telegram_id) DO NOTHING",
            params![telegram_id, created_at],
        )?;
        let user =
            self.bot_user(telegram_id)?.ok_or_else(|| StoreError::NotFound(format!("bot user {telegram_id}")))?;
        Ok((user, added == 1))
    }

    /// Every bot user, oldest first.
    pub fn bot_users(&self) -> Result<Vec<BotUser>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM bot_users ORDER BY created_at, telegram_id"))?;
        let rows = stmt.query_map([], user_row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(user_of).collect()
    }

    /// Sets a user's language; `false` when the user is unknown.
    pub fn set_bot_user_language(&self, telegram_id: i64, language: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("UPDATE bot_users SET language = ?2 WHERE telegram_id = ?1", params![telegram_id, language])?;
        Ok(n == 1)
    }

    /// Bans or unbans a user; `false` when the user is unknown.
    pub fn set_bot_user_status(&self, telegram_id: i64, status: BotUserStatus) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE bot_users SET status = ?2 WHERE telegram_id = ?1",
            params![telegram_id, status.as_str()],
        )?;
        Ok(n == 1)
    }

    /// Sets what a user has bought in total (an admin's correction); `None` keeps a value.
    /// `false` when the user is unknown.
    pub fn set_bot_user_totals(
        &self,
        telegram_id: i64,
        traffic_gb: Option<f64>,
        time_days: Option<i64>,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE bot_users SET traffic_bought_gb = COALESCE(?2, traffic_bought_gb),
               time_bought_days = COALESCE(?3, time_bought_days)
             WHERE telegram_id = ?1",
            params![telegram_id, traffic_gb, time_days],
        )?;
        Ok(n == 1)
    }

    /// Books an approved purchase on its user: links the client, adds what was bought and makes
    /// the user active again.
    pub fn record_bot_purchase(
        &self,
        telegram_id: i64,
        client_name: &str,
        traffic_gb: f64,
        time_days: i64,
    ) -> Result<BotUser, StoreError> {
        let n = self.conn().execute(
            "UPDATE bot_users SET candy_client_name = ?2, traffic_bought_gb = traffic_bought_gb + ?3,
               time_bought_days = time_bought_days + ?4, status = 'active'
             WHERE telegram_id = ?1",
            params![telegram_id, client_name, traffic_gb, time_days],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("bot user {telegram_id}")));
        }
        self.bot_user(telegram_id)?.ok_or_else(|| StoreError::NotFound(format!("bot user {telegram_id}")))
    }

    /// Stores a new pending order; `false` when its order id was submitted before.
    pub fn add_bot_transaction(&self, new: &NewBotTransaction) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "INSERT INTO bot_transactions (order_id, telegram_id, amount, card_number_sent, status, requested_at,
               purchase_type, quantity, time_quantity, traffic_quantity)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(order_id) DO NOTHING",
            params![
                new.order_id,
                new.telegram_id,
                new.amount,
                new.card_number_sent,
                new.requested_at,
                new.purchase_type.as_str(),
                new.quantity,
                new.time_quantity,
                new.traffic_quantity,
            ],
        )?;
        Ok(n == 1)
    }

    /// One order.
    pub fn bot_transaction(&self, order_id: &str) -> Result<Option<BotTransaction>, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {TRANSACTION_COLUMNS} FROM bot_transactions WHERE order_id = ?1"),
                [order_id],
                transaction_row,
            )
            .optional()?;
        row.map(transaction_of).transpose()
    }

    /// Orders in submission order; `None`: all of them.
    pub fn bot_transactions(&self, status: Option<TransactionStatus>) -> Result<Vec<BotTransaction>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TRANSACTION_COLUMNS} FROM bot_transactions WHERE ?1 IS NULL OR status = ?1
             ORDER BY requested_at, rowid"
        ))?;
        let rows =
            stmt.query_map([status.map(TransactionStatus::as_str)], transaction_row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(transaction_of).collect()
    }

    /// Approves or rejects a pending order, in one step: of two admins deciding the same order
    /// at once, exactly one succeeds.
    pub fn decide_bot_transaction(
        &self,
        order_id: &str,
        to: TransactionStatus,
        decided_at: &str,
        admin_note: Option<&str>,
    ) -> Result<Decision, StoreError> {
        if to == TransactionStatus::Pending {
            return Err(StoreError::Invalid("an order is decided as approved or rejected".into()));
        }
        let row = self
            .conn()
            .query_row(
                &format!(
                    "UPDATE bot_transactions SET status = ?2, approved_at = ?3, admin_note = ?4
                     WHERE order_id = ?1 AND status = 'pending' RETURNING {TRANSACTION_COLUMNS}"
                ),
                params![order_id, to.as_str(), decided_at, admin_note],
                transaction_row,
            )
            .optional()?;
        if let Some(row) = row {
            return Ok(Decision::Decided(transaction_of(row)?));
        }
        Ok(match self.bot_transaction(order_id)? {
            None => Decision::NotFound,
            Some(t) => Decision::NotPending(t),
        })
    }

    /// Puts an approved order back to pending (its approval could not be carried out); `false`
    /// when it was not approved.
    pub fn reopen_bot_transaction(&self, order_id: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE bot_transactions SET status = 'pending', approved_at = NULL, admin_note = NULL
             WHERE order_id = ?1 AND status = 'approved'",
            [order_id],
        )?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, telegram_id: i64, at: &str) -> NewBotTransaction {
        NewBotTransaction {
            order_id: id.into(),
            telegram_id,
            amount: 40000.0,
            card_number_sent: "User confirmed payment via bot".into(),
            requested_at: at.into(),
            purchase_type: PurchaseType::Gb,
            quantity: 10.0,
            time_quantity: 0.0,
            traffic_quantity: 0.0,
        }
    }

    #[test]
    fn users_register_once_and_keep_their_totals() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.bot_user(42).unwrap(), None);
        let (user, new) = store.register_bot_user(42, "2026-01-01T00:00:00").unwrap();
        assert!(new);
        assert_eq!(
            user,
            BotUser {
                telegram_id: 42,
                candy_client_name: None,
                traffic_bought_gb: 0.0,
                time_bought_days: 0,
                status: BotUserStatus::Active,
                created_at: "2026-01-01T00:00:00".into(),
                language: "en".into(),
            }
        );
        assert!(store.set_bot_user_language(42, "fa").unwrap());
        let (again, new) = store.register_bot_user(42, "2026-02-02T00:00:00").unwrap();
        assert!(!new, "a second /start finds the user");
        assert_eq!((again.language.as_str(), again.created_at.as_str()), ("fa", "2026-01-01T00:00:00"));
        assert!(!store.set_bot_user_language(7, "fa").unwrap(), "unknown user");

        store.register_bot_user(7, "2025-12-31T00:00:00").unwrap();
        let ids: Vec<i64> = store.bot_users().unwrap().iter().map(|u| u.telegram_id).collect();
        assert_eq!(ids, vec![7, 42], "oldest first");

        let user = store.record_bot_purchase(42, "tguser_42", 10.5, 0).unwrap();
        let user2 = store.record_bot_purchase(42, "tguser_42", 0.0, 30).unwrap();
        assert_eq!(user.candy_client_name.as_deref(), Some("tguser_42"));
        assert_eq!((user2.traffic_bought_gb, user2.time_bought_days), (10.5, 30), "purchases add up");
        assert!(matches!(store.record_bot_purchase(9, "x", 1.0, 1), Err(StoreError::NotFound(_))));

        assert!(store.set_bot_user_status(42, BotUserStatus::Banned).unwrap());
        assert!(store.set_bot_user_status(42, BotUserStatus::Banned).unwrap(), "banning twice is fine");
        assert_eq!(store.bot_user(42).unwrap().unwrap().status, BotUserStatus::Banned);
        assert!(store.set_bot_user_totals(42, Some(50.0), None).unwrap());
        let user = store.bot_user(42).unwrap().unwrap();
        assert_eq!((user.traffic_bought_gb, user.time_bought_days), (50.0, 30), "only the given total changes");
        assert!(store.set_bot_user_totals(42, None, Some(90)).unwrap());
        assert_eq!(store.bot_user(42).unwrap().unwrap().time_bought_days, 90);
        assert!(!store.set_bot_user_totals(9, Some(1.0), None).unwrap());
        let user = store.record_bot_purchase(42, "tguser_42", 1.0, 0).unwrap();
        assert_eq!(user.status, BotUserStatus::Active, "an approved purchase reactivates");
        assert!(
            matches!(store.record_bot_purchase(7, "tguser_42", 1.0, 0), Err(StoreError::Sqlite(_)),),
            "one client per user"
        );
    }

    #[test]
    fn orders_are_unique_and_decided_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.add_bot_transaction(&order("A1", 42, "2026-01-01T00:00:02")).unwrap());
        assert!(!store.add_bot_transaction(&order("A1", 43, "2026-01-01T00:00:03")).unwrap(), "order id reused");
        let mut custom = order("B2", 43, "2026-01-01T00:00:01");
        custom.purchase_type = PurchaseType::Custom;
        (custom.quantity, custom.time_quantity, custom.traffic_quantity) = (0.0, 2.0, 15.0);
        assert!(store.add_bot_transaction(&custom).unwrap());

        let a1 = store.bot_transaction("A1").unwrap().unwrap();
        assert_eq!((a1.telegram_id, a1.status, a1.purchase_type), (42, TransactionStatus::Pending, PurchaseType::Gb));
        assert_eq!((a1.amount, a1.quantity, a1.approved_at, a1.admin_note), (40000.0, 10.0, None, None));
        let b2 = store.bot_transaction("B2").unwrap().unwrap();
        assert_eq!((b2.purchase_type, b2.time_quantity, b2.traffic_quantity), (PurchaseType::Custom, 2.0, 15.0));
        assert_eq!(store.bot_transaction("nope").unwrap(), None);

        let ids = |s| store.bot_transactions(s).unwrap().into_iter().map(|t| t.order_id).collect::<Vec<_>>();
        assert_eq!(ids(None), vec!["B2", "A1"], "in submission order");
        assert_eq!(ids(Some(TransactionStatus::Pending)), vec!["B2", "A1"]);

        let at = "2026-01-02T00:00:00";
        let Decision::Decided(done) =
            store.decide_bot_transaction("A1", TransactionStatus::Approved, at, Some("paid")).unwrap()
        else {
            panic!("A1 was pending")
        };
        assert_eq!(
            (done.status, done.approved_at.as_deref(), done.admin_note.as_deref()),
            (TransactionStatus::Approved, Some(at), Some("paid"))
        );
        let again = store.decide_bot_transaction("A1", TransactionStatus::Rejected, at, None).unwrap();
        assert!(matches!(again, Decision::NotPending(t) if t.status == TransactionStatus::Approved), "decided once");
        assert_eq!(
            store.decide_bot_transaction("X", TransactionStatus::Approved, at, None).unwrap(),
            Decision::NotFound
        );
        assert!(store.decide_bot_transaction("B2", TransactionStatus::Pending, at, None).is_err());
        assert_eq!(ids(Some(TransactionStatus::Approved)), vec!["A1"]);

        assert!(store.reopen_bot_transaction("A1").unwrap(), "a failed approval puts it back");
        assert!(!store.reopen_bot_transaction("A1").unwrap());
        let a1 = store.bot_transaction("A1").unwrap().unwrap();
        assert_eq!((a1.status, a1.approved_at, a1.admin_note), (TransactionStatus::Pending, None, None));

        let Decision::Decided(rejected) =
            store.decide_bot_transaction("B2", TransactionStatus::Rejected, at, None).unwrap()
        else {
            panic!("B2 was pending")
        };
        assert_eq!((rejected.status, rejected.approved_at.as_deref()), (TransactionStatus::Rejected, Some(at)));
        assert!(!store.reopen_bot_transaction("B2").unwrap(), "a rejection stays");
        assert_eq!(ids(Some(TransactionStatus::Rejected)), vec!["B2"]);
    }
}
