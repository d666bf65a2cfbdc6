//! `/bot_api/user/…`: what any Telegram user of the bot can do.

use axum::extract::State;
use serde::Serialize;
use serde_json::{Map, Value};

use super::plan::{Order, Prices};
use super::{admin_id, failed, plan_error, reply, setting, telegram_id, with_store};
use crate::api::candy::{clients, now_iso, CandyError, Done, Fields};
use crate::api::AppState;
use crate::store::{BotUser, BotUserStatus, NewBotTransaction, PurchaseType};
use crate::wireguard::ConfigLayout;

/// Languages the bot has texts for.
const LANGUAGES: &[&str] = &["en", "fa"];

/// Longest order id (a bank reference) accepted.
const MAX_ORDER_ID: usize = 128;

const NOT_REGISTERED: &str = "User not registered with the bot.";
const NOT_REGISTERED_START: &str = "User not registered with the bot. Please use /start to register.";
/// The bot looks for "You don't have an active license yet".
const NO_LICENSE: &str = "You don't have an active license yet. Please purchase one using the 'Buy Traffic' option.";

async fn registered(state: &AppState, telegram_id: i64, missing: &'static str) -> Result<BotUser, CandyError> {
    with_store(state, move |s| s.bot_user(telegram_id)).await?.ok_or_else(|| CandyError::not_found(missing))
}

#[derive(Serialize)]
struct Registered {
    registered: bool,
    language: String,
}

/// `/start`: registers the account (language `en`) or finds it.
pub async fn register(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?.ok_or_else(|| CandyError::bad("Missing telegram_id"))?;
    let (user, new) = with_store(&state, move |s| s.register_bot_user(tid, &now_iso())).await?;
    if new {
        tracing::info!(telegram_id = tid, "bot user registered");
    }
    let message = if new { "User registered successfully." } else { "User already registered." };
    reply(message, &Registered { registered: true, language: user.language })
}

/// The language the bot talks in.
pub async fn set_language(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?;
    let language = fields.non_empty("language")?;
    let (Some(tid), Some(language)) = (tid, language) else {
        return Err(CandyError::bad("Missing telegram_id or language"));
    };
    let language = language.trim().to_string();
    if !LANGUAGES.contains(&language.as_str()) {
        return Err(CandyError::bad("Unsupported language. Available: 'en', 'fa'"));
    }
    if !with_store(&state, move |s| s.set_bot_user_language(tid, &language)).await? {
        return Err(CandyError::not_found(NOT_REGISTERED));
    }
    Ok(Done::message("Language updated successfully."))
}

#[derive(Serialize)]
struct PurchaseDetails {
    admin_card_number: String,
    prices: Map<String, Value>,
}

/// "Buy Traffic": where to pay and the price list.
pub async fn initiate_purchase(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?.ok_or_else(|| CandyError::bad("Missing telegram_id"))?;
    registered(&state, tid, NOT_REGISTERED).await?;
    let prices = Prices::parse(&setting(&state, "prices").await?);
    let admin_card_number = setting(&state, "admin_card_number").await?;
    reply("Purchase initiation details.", &PurchaseDetails { admin_card_number, prices: prices.listed })
}

/// The order in a body: `purchase_type` (already checked present) and its quantities.
fn order_of(fields: &Fields, purchase_type: &str) -> Result<Order, CandyError> {
    let kind = PurchaseType::parse(purchase_type.trim())
        .ok_or_else(|| CandyError::bad("Invalid purchase_type. Must be 'gb', 'month', or 'custom'."))?;
    Order::new(kind, fields.number("quantity")?, fields.number("time_quantity")?, fields.number("traffic_quantity")?)
        .map_err(plan_error)
}

/// The price of an order, from the panel's current prices.
async fn price_of(state: &AppState, order: &Order) -> Result<f64, CandyError> {
    Prices::parse(&setting(state, "prices").await?).price(order).map_err(plan_error)
}

#[derive(Serialize)]
struct Price {
    calculated_amount: f64,
}

/// What an order would cost.
pub async fn calculate_price(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?;
    let purchase_type = fields.non_empty("purchase_type")?;
    let (Some(tid), Some(purchase_type)) = (tid, purchase_type) else {
        return Err(CandyError::bad("Missing telegram_id or purchase_type"));
    };
    registered(&state, tid, NOT_REGISTERED).await?;
    let order = order_of(&fields, &purchase_type)?;
    let calculated_amount = price_of(&state, &order).await?;
    reply("Price calculated successfully.", &Price { calculated_amount })
}

/// Stores a pending order of a registered user who is not banned, at the price computed here
/// (an amount the caller sends is only compared with it). Returns the amount.
async fn add_order(
    state: &AppState,
    user: &BotUser,
    order_id: String,
    card_number_sent: String,
    order: Order,
    claimed_amount: Option<f64>,
) -> Result<f64, CandyError> {
    if user.status == BotUserStatus::Banned {
        return Err(CandyError::forbidden("Your account is banned. Please contact support."));
    }
    if order_id.chars().count() > MAX_ORDER_ID {
        return Err(CandyError::bad(format!("Order ID must be at most {MAX_ORDER_ID} characters.")));
    }
    let amount = price_of(state, &order).await?;
    if let Some(claimed) = claimed_amount.filter(|c| (c - amount).abs() >= 0.005) {
        tracing::info!(telegram_id = user.telegram_id, %order_id, claimed, amount, "order stored at the current price");
    }
    let (quantity, time_quantity, traffic_quantity) = order.columns();
    let new = NewBotTransaction {
        order_id: order_id.clone(),
        telegram_id: user.telegram_id,
        amount,
        card_number_sent,
        requested_at: now_iso(),
        purchase_type: order.purchase_type(),
        quantity,
        time_quantity,
        traffic_quantity,
    };
    if !with_store(state, move |s| s.add_bot_transaction(&new)).await? {
        return Err(CandyError::bad(
            "This Order ID has already been submitted. Please use a unique one or contact support if you believe this is an error.",
        ));
    }
    tracing::info!(telegram_id = user.telegram_id, %order_id, amount, "bot order submitted");
    Ok(amount)
}

#[derive(Serialize)]
struct Submitted {
    admin_telegram_id: String,
}

/// `/bought <ORDER_ID>`: the user says they paid; the order waits for the admin.
pub async fn submit_transaction(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?;
    let order_id = fields.non_empty("order_id")?;
    let card_number_sent = fields.non_empty("card_number_sent")?;
    let purchase_type = fields.non_empty("purchase_type")?;
    let (Some(tid), Some(order_id), Some(card_number_sent), Some(purchase_type)) =
        (tid, order_id, card_number_sent, purchase_type)
    else {
        return Err(CandyError::bad("Missing required transaction details."));
    };
    let claimed = fields.number("amount")?;
    let user = registered(&state, tid, NOT_REGISTERED).await?;
    let order = order_of(&fields, &purchase_type)?;
    add_order(&state, &user, order_id.trim().to_string(), card_number_sent, order, claimed).await?;
    let admin_telegram_id = admin_id(&state).await?.shown();
    reply("Transaction submitted for review.", &Submitted { admin_telegram_id })
}

#[derive(Serialize)]
struct LegacyPurchase {
    admin_card_number: String,
    prices: Map<String, Value>,
    admin_telegram_id: String,
    calculated_amount: f64,
}

/// The older bot's single purchase call: prices and the amount, and with `order_id` and
/// `card_number_sent` also the order.
pub async fn buy_traffic_request(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?;
    let purchase_type = fields.non_empty("purchase_type")?;
    let (Some(tid), Some(purchase_type)) = (tid, purchase_type) else {
        return Err(CandyError::bad("Missing telegram_id or purchase_type"));
    };
    let user = registered(&state, tid, NOT_REGISTERED).await?;
    let order = order_of(&fields, &purchase_type)?;
    let prices = Prices::parse(&setting(&state, "prices").await?);
    let mut calculated_amount = prices.price(&order).map_err(plan_error)?;
    let message = match (fields.non_empty("order_id")?, fields.non_empty("card_number_sent")?) {
        (Some(order_id), Some(card)) => {
            calculated_amount = add_order(&state, &user, order_id.trim().to_string(), card, order, None).await?;
            "Purchase request submitted. Admin will review."
        }
        _ => "Please choose your purchase type and quantity.",
    };
    let answer = LegacyPurchase {
        admin_card_number: setting(&state, "admin_card_number").await?,
        prices: prices.listed,
        admin_telegram_id: admin_id(&state).await?.shown(),
        calculated_amount,
    };
    reply(message, &answer)
}

#[derive(Serialize)]
struct License {
    config: String,
}

/// "Get License": the user's client config (also while disabled or expired, as the panel does).
pub async fn get_license(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?.ok_or_else(|| CandyError::bad("Missing telegram_id"))?;
    let user = registered(&state, tid, NOT_REGISTERED_START).await?;
    let name = user.candy_client_name.ok_or_else(|| CandyError::not_found(NO_LICENSE))?;
    let retrieve = |e: CandyError| {
        let e = failed("Failed to retrieve license. Reason", e);
        CandyError { message: format!("{}. Please contact support.", e.message), ..e }
    };
    let client = clients::find_client(&state, &name)
        .await
        .map_err(retrieve)?
        .ok_or_else(|| retrieve(CandyError::not_found(format!("Client '{name}' not found."))))?;
    let config = clients::client_config(&state, &client, ConfigLayout::Fetched).await.map_err(retrieve)?;
    reply("Your WireGuard configuration:", &License { config })
}

#[derive(Serialize)]
struct AccountStatus {
    status: &'static str,
    traffic_bought_gb: f64,
    time_bought_days: i64,
    candy_client_name: Option<String>,
    used_traffic_bytes: u64,
    traffic_limit_bytes: u64,
    expires: String,
    note: String,
}

/// "Account Status": what the user bought and their client's usage and expiry.
pub async fn account_status(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?.ok_or_else(|| CandyError::bad("Missing telegram_id"))?;
    let user = registered(&state, tid, NOT_REGISTERED_START).await?;
    let mut answer = AccountStatus {
        status: user.status.as_str(),
        traffic_bought_gb: user.traffic_bought_gb,
        time_bought_days: user.time_bought_days,
        candy_client_name: user.candy_client_name.clone(),
        used_traffic_bytes: 0,
        traffic_limit_bytes: 0,
        expires: "N/A".into(),
        note: String::new(),
    };
    if let Some(name) = &user.candy_client_name {
        match clients::find_client(&state, name).await? {
            Some(client) => {
                answer.used_traffic_bytes = client.used_down.saturating_add(client.used_up);
                answer.traffic_limit_bytes = client.quota_bytes;
                answer.expires = client.expires;
                answer.note = client.note;
            }
            None => {
                answer.note = "Your VPN client configuration might be out of sync or deleted from the server. \
                               Please contact support."
                    .into();
            }
        }
    }
    reply("Your account status:", &answer)
}

#[derive(Serialize)]
struct Support {
    admin_telegram_id: String,
    support_message: String,
}

/// `/support <text>`: the text, addressed, for the bot to forward to the admin.
pub async fn call_support(State(state): State<AppState>, fields: Fields) -> Result<Done, CandyError> {
    let tid = telegram_id(&fields, "telegram_id")?;
    let message = fields.non_empty("message")?;
    let (Some(tid), Some(message)) = (tid, message) else {
        return Err(CandyError::bad("Missing telegram_id or message"));
    };
    let admin = admin_id(&state).await?;
    if admin.0.is_none() {
        return Err(CandyError::internal("Admin Telegram ID not set in bot settings. Support is unavailable."));
    }
    let user = with_store(&state, move |s| s.bot_user(tid)).await?;
    let from = user.and_then(|u| u.candy_client_name).unwrap_or_else(|| format!("User {tid}"));
    reply(
        "Your message has been sent to support.",
        &Support {
            admin_telegram_id: admin.shown(),
            support_message: format!("Support request from {from} (ID: {tid}):\n\n{message}"),
        },
    )
}
