//! `/bot_api/admin/…`: what the bot's admin (setting `telegram_bot_admin_id`) can do: review
//! orders, manage bot users, broadcast, and drive the panel like `/api/manage`.

use axum::extract::State;
use serde::Serialize;
use serde_json::{Map, Value};

use super::plan::{new_expiry, new_quota, shift_expiry, Current, Order, GIB, MAX_GB};
use super::{admin_id, failed, plan_error, reply, telegram_id, with_store, PURCHASES};
use crate::api::candy::clients::{self, CreateClient};
use crate::api::candy::{data as panel_data, manage, now_iso, CandyError, Done, Fields};
use crate::api::AppState;
use crate::store::{
    BotTransaction, BotUser, BotUserStatus, Decision, TransactionStatus, WgClientChange, WgClientRecord,
};
use crate::wireguard::ConfigLayout;

#[derive(Serialize)]
struct AdminCheck {
    is_admin: bool,
    admin_telegram_id: String,
}

/// Whether `telegram_id` is the bot's admin (the bot asks before every admin action).
pub async fn check_admin(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?.ok_or_else(|| CandyError::bad("Missing telegram_id"))?;
    let admin = admin_id(&state).await?;
    reply("Admin status checked.", &AdminCheck { is_admin: admin.is(Some(tid)), admin_telegram_id: admin.shown() })
}

#[derive(Serialize)]
struct UserRow {
    telegram_id: i64,
    candy_client_name: Option<String>,
    traffic_bought_gb: f64,
    time_bought_days: i64,
    status: &'static str,
    /// 0/1, as the panel's column.
    is_admin: u8,
    created_at: String,
    language: String,
}

#[derive(Serialize)]
struct Users {
    users: Vec<UserRow>,
}

/// Every bot user.
pub async fn get_all_users(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let admin = admin_id(&state).await?;
    admin.require(telegram_id(&fields, "telegram_id")?)?;
    let users = with_store(&state, |s| s.bot_users()).await?;
    let users = users
        .into_iter()
        .map(|u| UserRow {
            telegram_id: u.telegram_id,
            is_admin: admin.is(Some(u.telegram_id)) as u8,
            candy_client_name: u.candy_client_name,
            traffic_bought_gb: u.traffic_bought_gb,
            time_bought_days: u.time_bought_days,
            status: u.status.as_str(),
            created_at: u.created_at,
            language: u.language,
        })
        .collect();
    reply("All bot users retrieved.", &Users { users })
}

#[derive(Serialize)]
struct TransactionRow {
    order_id: String,
    telegram_id: i64,
    amount: f64,
    card_number_sent: String,
    status: &'static str,
    requested_at: String,
    approved_at: Option<String>,
    admin_note: Option<String>,
    purchase_type: &'static str,
    quantity: f64,
    time_quantity: f64,
    traffic_quantity: f64,
}

impl From<BotTransaction> for TransactionRow {
    fn from(t: BotTransaction) -> Self {
        TransactionRow {
            order_id: t.order_id,
            telegram_id: t.telegram_id,
            amount: t.amount,
            card_number_sent: t.card_number_sent,
            status: t.status.as_str(),
            requested_at: t.requested_at,
            approved_at: t.approved_at,
            admin_note: t.admin_note,
            purchase_type: t.purchase_type.as_str(),
            quantity: t.quantity,
            time_quantity: t.time_quantity,
            traffic_quantity: t.traffic_quantity,
        }
    }
}

#[derive(Serialize)]
struct Transactions {
    transactions: Vec<TransactionRow>,
}

/// Orders with status `status_filter` (default `pending`; `all`: every order).
pub async fn get_transactions(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    admin_id(&state).await?.require(telegram_id(&fields, "telegram_id")?)?;
    let filter = fields.non_empty("status_filter")?.unwrap_or_else(|| "pending".into());
    let status = match filter.trim() {
        "all" => None,
        other => Some(TransactionStatus::parse(other).ok_or_else(|| {
            CandyError::bad("Invalid status_filter. Must be 'pending', 'approved', 'rejected', or 'all'.")
        })?),
    };
    let transactions = with_store(&state, move |s| s.bot_transactions(status)).await?;
    reply("Transactions retrieved.", &Transactions { transactions: transactions.into_iter().map(Into::into).collect() })
}

#[derive(Serialize)]
struct Approved {
    client_config: Option<String>,
    telegram_id: i64,
    client_name: String,
    new_traffic_gb: f64,
    new_time_days: i64,
}

/// What an approval did to the client.
struct Delivered {
    client_name: String,
    created: bool,
    config: Option<String>,
}

/// `/approve <ORDER_ID> [note]`: the order's traffic and time go onto the user's client (created
/// on the first purchase). The order is approved atomically first and put back to pending if
/// the client cannot be changed, so an order is never delivered twice.
pub async fn approve_transaction(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?;
    let order_id = fields.non_empty("order_id")?.map(|o| o.trim().to_string());
    let (Some(tid), Some(order_id)) = (tid, order_id) else {
        return Err(CandyError::bad("Missing required fields for approval."));
    };
    admin_id(&state).await?.require(Some(tid))?;
    let note = fields.text("admin_note")?.filter(|n| !n.trim().is_empty());

    let _one_at_a_time = PURCHASES.lock().await;
    let id = order_id.clone();
    let transaction = with_store(&state, move |s| s.bot_transaction(&id))
        .await?
        .ok_or_else(|| CandyError::not_found("Transaction not found."))?;
    if transaction.status != TransactionStatus::Pending {
        return Err(not_pending());
    }
    let order = Order::of(&transaction).map_err(|e| {
        CandyError::internal(format!(
            "Invalid quantities in transaction record: {}",
            e.to_string().trim_end_matches('.')
        ))
    })?;
    let buyer = transaction.telegram_id;
    let user = with_store(&state, move |s| s.bot_user(buyer))
        .await?
        .ok_or_else(|| CandyError::not_found(format!("User {buyer} not found in bot's database. Cannot approve.")))?;

    let id = order_id.clone();
    let decided = with_store(&state, move |s| {
        s.decide_bot_transaction(&id, TransactionStatus::Approved, &now_iso(), note.as_deref())
    })
    .await?;
    match decided {
        Decision::Decided(_) => {}
        Decision::NotFound => return Err(CandyError::not_found("Transaction not found.")),
        Decision::NotPending(_) => return Err(not_pending()),
    }
    let delivered = match deliver(&state, &transaction, &order, &user).await {
        Ok(d) => d,
        Err(e) => {
            let id = order_id.clone();
            if let Err(reopen) = with_store(&state, move |s| s.reopen_bot_transaction(&id)).await {
                tracing::error!(%order_id, error = %reopen.message, "approval failed and the order could not be reopened");
            }
            return Err(e);
        }
    };
    let grant = order.grant();
    tracing::info!(%order_id, telegram_id = buyer, client = %delivered.client_name, "bot order approved");
    let verb = if delivered.created { "created" } else { "updated" };
    reply(
        format!("Transaction {order_id} approved. Client '{}' {verb} in CandyPanel.", delivered.client_name),
        &Approved {
            client_config: delivered.config,
            telegram_id: buyer,
            client_name: delivered.client_name,
            new_traffic_gb: grant.traffic_gb,
            new_time_days: grant.time_days,
        },
    )
}

fn not_pending() -> CandyError {
    CandyError::bad("Transaction is not pending. It has been already processed.")
}

/// Creates or extends the buyer's client and books the purchase on the user.
async fn deliver(
    state: &AppState,
    transaction: &BotTransaction,
    order: &Order,
    user: &BotUser,
) -> Result<Delivered, CandyError> {
    let tid = user.telegram_id;
    let (client_name, existing) = match &user.candy_client_name {
        Some(name) => (name.clone(), clients::find_client(state, name).await?),
        None => {
            let name = format!("tguser_{tid}");
            match clients::find_client(state, &name).await? {
                // Somebody else's client has the name.
                Some(_) => (format!("tguser_{tid}_{}", time::OffsetDateTime::now_utc().unix_timestamp()), None),
                None => (name, None),
            }
        }
    };
    let grant = order.grant();
    let current = existing.as_ref().map(|c| Current {
        quota_bytes: c.quota_bytes,
        used_bytes: c.used_down.saturating_add(c.used_up),
        expires_ms: c.expires_ms,
    });
    let quota = new_quota(order, &grant, current.as_ref());
    let expires =
        new_expiry(time::OffsetDateTime::now_utc(), current.as_ref(), grant.extend_days).map_err(plan_error)?;
    let expires_ms = (expires.unix_timestamp_nanos() / 1_000_000) as i64;
    let expires = crate::api::timestamp(expires);

    let (created, config) = match existing {
        Some(_) => {
            let change = WgClientChange {
                expires: Some((expires, expires_ms)),
                traffic: Some((quota.to_string(), quota)),
                status: Some(true),
                note: None,
            };
            let client = clients::update_client(state, &client_name, change)
                .await
                .map_err(|e| failed("Failed to update client in CandyPanel", e))?;
            let config = match clients::client_config(state, &client, ConfigLayout::Fetched).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(client = %client_name, error = %e.message, "approved, but its config is unavailable");
                    None
                }
            };
            (false, config)
        }
        None => {
            let wg = with_store(state, |s| s.wg_interfaces()).await?.first().map(|i| i.wg).ok_or_else(|| {
                CandyError::bad("Failed to create client in CandyPanel: no WireGuard interface exists")
            })?;
            let new = CreateClient {
                name: client_name.clone(),
                expires,
                traffic: quota.to_string(),
                wg,
                note: format!("Bot User: {tid} - Order: {}", transaction.order_id),
            };
            let (_, config) = clients::create_client(state, new)
                .await
                .map_err(|e| failed("Failed to create client in CandyPanel", e))?;
            (true, Some(config))
        }
    };
    let name = client_name.clone();
    with_store(state, move |s| s.record_bot_purchase(tid, &name, grant.traffic_gb, grant.time_days)).await?;
    Ok(Delivered { client_name, created, config })
}

#[derive(Serialize)]
struct Rejected {
    telegram_id: i64,
}

/// `/reject <ORDER_ID> [note]`.
pub async fn reject_transaction(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?;
    let order_id = fields.non_empty("order_id")?.map(|o| o.trim().to_string());
    let (Some(tid), Some(order_id)) = (tid, order_id) else {
        return Err(CandyError::bad("Missing telegram_id or order_id."));
    };
    admin_id(&state).await?.require(Some(tid))?;
    let note = fields.text("admin_note")?.filter(|n| !n.trim().is_empty());
    let id = order_id.clone();
    let decided = with_store(&state, move |s| {
        s.decide_bot_transaction(&id, TransactionStatus::Rejected, &now_iso(), note.as_deref())
    })
    .await?;
    match decided {
        Decision::Decided(t) => {
            tracing::info!(%order_id, telegram_id = t.telegram_id, "bot order rejected");
            reply(format!("Transaction {order_id} rejected."), &Rejected { telegram_id: t.telegram_id })
        }
        Decision::NotFound => Err(CandyError::not_found("Transaction not found.")),
        Decision::NotPending(_) => Err(not_pending()),
    }
}

/// The user's client, when they have one and it still exists.
async fn client_of(state: &AppState, user: &BotUser) -> Result<Option<WgClientRecord>, CandyError> {
    match &user.candy_client_name {
        Some(name) => clients::find_client(state, name).await,
        None => Ok(None),
    }
}

/// `/ban`, `/unban`, `/update_traffic <id> <GB>`, `/update_time <id> <DAYS>`. Traffic and time
/// are the user's new totals; the client's quota becomes the traffic (0: unlimited) and its
/// expiry moves by the change in days.
pub async fn manage_user(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let admin = telegram_id(&fields, "admin_telegram_id")?;
    let target = telegram_id(&fields, "target_telegram_id")?;
    let action = fields.non_empty("action")?;
    let (Some(admin), Some(target), Some(action)) = (admin, target, action) else {
        return Err(CandyError::bad("Missing required fields."));
    };
    admin_id(&state).await?.require(Some(admin))?;
    let _one_at_a_time = PURCHASES.lock().await;
    let user = with_store(&state, move |s| s.bot_user(target))
        .await?
        .ok_or_else(|| CandyError::not_found("Target user not found."))?;
    let has_value = fields.get("value").is_some();
    match action.trim() {
        "ban" | "unban" => {
            let ban = action.trim() == "ban";
            let status = if ban { BotUserStatus::Banned } else { BotUserStatus::Active };
            with_store(&state, move |s| s.set_bot_user_status(target, status)).await?;
            let message = format!("User {target} has been {}.", if ban { "banned" } else { "unbanned" });
            tracing::info!(telegram_id = target, status = status.as_str(), "bot user status changed");
            // A client already in that state is left alone. The ban stands even when the client
            // cannot be changed (the answer says so), as it also stops new orders.
            if let Some(client) = client_of(&state, &user).await?.filter(|c| c.status == ban) {
                let change = WgClientChange { status: Some(!ban), ..Default::default() };
                let what = if ban { "disable" } else { "enable" };
                clients::update_client(&state, &client.name, change)
                    .await
                    .map_err(|e| failed(&format!("{message} (Failed to {what} client in CandyPanel"), e))
                    .map_err(|e| CandyError { message: format!("{})", e.message), ..e })?;
            }
            Ok(Done::message(message))
        }
        "update_traffic" if has_value => {
            let invalid = || CandyError::bad("Invalid value for traffic. Must be a number.");
            let gb = fields.number("value").map_err(|_| invalid())?.ok_or_else(invalid)?;
            if !(0.0..=MAX_GB).contains(&gb) {
                return Err(CandyError::bad(format!("Invalid value for traffic. Must be from 0 to {MAX_GB} GB.")));
            }
            let message = format!("User {target} traffic updated to {gb:?} GB.");
            if let Some(client) = client_of(&state, &user).await? {
                let bytes = (gb * GIB as f64) as u64;
                let change = WgClientChange { traffic: Some((bytes.to_string(), bytes)), ..Default::default() };
                clients::update_client(&state, &client.name, change)
                    .await
                    .map_err(|e| failed(&format!("{message} (Failed to update traffic in CandyPanel"), e))
                    .map_err(|e| CandyError { message: format!("{})", e.message), ..e })?;
            }
            with_store(&state, move |s| s.set_bot_user_totals(target, Some(gb), None)).await?;
            tracing::info!(telegram_id = target, gb, "bot user traffic set");
            Ok(Done::message(message))
        }
        "update_time" if has_value => {
            let invalid = || CandyError::bad("Invalid value for time. Must be an integer.");
            let days = fields.int("value").map_err(|_| invalid())?.ok_or_else(invalid)?;
            if days < 0 {
                return Err(CandyError::bad("Invalid value for time. Must be 0 or more days."));
            }
            let message = format!("User {target} time updated to {days} days.");
            let shift = days.saturating_sub(user.time_bought_days);
            if let Some(client) = client_of(&state, &user).await?.filter(|_| shift != 0) {
                let expires = shift_expiry(client.expires_ms, shift).map_err(plan_error)?;
                let expires_ms = (expires.unix_timestamp_nanos() / 1_000_000) as i64;
                let change = WgClientChange {
                    expires: Some((crate::api::timestamp(expires), expires_ms)),
                    ..Default::default()
                };
                clients::update_client(&state, &client.name, change)
                    .await
                    .map_err(|e| failed(&format!("{message} (Failed to update expiry in CandyPanel"), e))
                    .map_err(|e| CandyError { message: format!("{})", e.message), ..e })?;
            }
            with_store(&state, move |s| s.set_bot_user_totals(target, None, Some(days))).await?;
            tracing::info!(telegram_id = target, days, shift, "bot user time set");
            Ok(Done::message(message))
        }
        _ => Err(CandyError::bad("Invalid action or missing value.")),
    }
}

#[derive(Serialize)]
struct Broadcast {
    target_user_ids: Vec<i64>,
    message: String,
}

/// `/broadcast <text>`: every user's id (banned ones too) for the bot to send the text to.
pub async fn send_message_to_all(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?;
    let message = fields.non_empty("message")?;
    let (Some(tid), Some(message)) = (tid, message) else {
        return Err(CandyError::bad("Missing telegram_id or message."));
    };
    admin_id(&state).await?.require(Some(tid))?;
    let users = with_store(&state, |s| s.bot_users()).await?;
    let target_user_ids = users.iter().map(|u| u.telegram_id).collect();
    reply("Broadcast message prepared.", &Broadcast { target_user_ids, message })
}

/// `/cp_…`: one `/api/manage` action, its fields in `data`. API tokens are not reachable
/// from the bot.
pub async fn server_control(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let admin = telegram_id(&fields, "admin_telegram_id")?;
    let resource = fields.non_empty("resource")?;
    let action = fields.non_empty("action")?;
    let (Some(admin), Some(resource), Some(action)) = (admin, resource, action) else {
        return Err(CandyError::bad("Missing admin_telegram_id, resource, or action."));
    };
    admin_id(&state).await?.require(Some(admin))?;
    let (resource, action) = (resource.trim(), action.trim());
    if !["client", "interface", "setting", "sync"].contains(&resource) {
        return Err(CandyError::bad(format!("Unknown resource type: {resource}")));
    }
    tracing::info!(telegram_id = admin, %resource, %action, "CandyPanel change from the bot");
    match manage::dispatch(&state, resource, action, &fields).await {
        Ok(done) => {
            // The bot reads `data.config` / `data.client_config`: always an object.
            let data = match done.data {
                Value::Object(map) => Value::Object(map),
                _ => Value::Object(Map::new()),
            };
            Ok(Done::with(format!("CandyPanel: {}", done.message), data))
        }
        Err(e) => Err(CandyError { message: format!("CandyPanel Error: {}", e.message), ..e }),
    }
}

#[derive(Serialize)]
struct AdminData {
    dashboard: Value,
}

/// `/adminlogin`'s server status: the dashboard alone (never settings, clients or keys), with
/// `alert` as JSON text, which the bot decodes.
pub async fn data(State(state): State<AppState>) -> Result<Done, CandyError> {
    let mut dashboard = panel_data::dashboard(&state).await?;
    if let Some(alert) = dashboard.get_mut("alert") {
        if !alert.is_string() {
            *alert = Value::String(alert.to_string());
        }
    }
    reply("Dashboard data retrieved successfully.", &AdminData { dashboard })
}
