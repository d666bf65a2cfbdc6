//! The CandyPanel Telegram bot's API (`/bot_api/…`) end to end, over HTTP the way `bot.py`
//! calls it: a user registers, picks a language, prices an order, says they paid; the admin
//! lists, approves and rejects orders, bans, corrects totals, broadcasts and drives the panel.
//!
//! The panel is installed on a node that has no agent: interfaces and clients are stored and
//! their configs handed out, and the node would get them when it connects. No root needed; the
//! refusal of remote callers is checked when the harness can put the controller in a network
//! namespace of its own.

use std::time::SystemTime;

use flotilla_tests::harness::{Fleet, FleetOptions, Reply};
use flotilla_tests::wireguard::{config_value, refused, Candy};
use serde_json::{json, Value};

const ADMIN: i64 = 987_654_321;
const ALICE: i64 = 111_111;
const BOB: i64 = 222_222;
const GIB: u64 = 1 << 30;
const SERVER_IP: &str = "203.0.113.7";

/// A controller on loopback with the panel installed (`wg0` on a node without an agent) and
/// logged in.
fn panel() -> (Fleet, Candy) {
    let fleet = Fleet::start_with(FleetOptions { loopback: true, ..Default::default() });
    let (node, _token) = fleet.create_node("wg-1");
    let mut candy = Candy::new(&fleet.api);
    let password = fleet.api.password.clone();
    candy.install(node, SERVER_IP, "10.8.0.1/24", "admin", &password);
    candy.login("admin", &password);
    (fleet, candy)
}

fn set(candy: &Candy, key: &str, value: &str) {
    candy.manage_ok(&json!({ "resource": "setting", "action": "update", "key": key, "value": value }));
}

/// POST `path` with `body` and no credentials, as the bot does.
fn bot(candy: &Candy, path: &str, body: Value) -> Reply {
    candy.api.request("POST", path, Some(body.to_string().as_bytes()), None)
}

/// Asserts a success with `message`; its `data`.
#[track_caller]
fn ok(reply: &Reply, message: &str) -> Value {
    assert_eq!((reply.status, &reply.body["success"]), (200, &json!(true)), "{}", reply.raw);
    assert_eq!(reply.body["message"], json!(message), "{}", reply.raw);
    let keys: Vec<&String> = reply.body.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 3, "message, success and data: {}", reply.raw);
    reply.body["data"].clone()
}

/// A number the bot formats with `:.2f`: a JSON float.
#[track_caller]
fn float(v: &Value) -> f64 {
    assert!(v.is_f64(), "expected a JSON float, got {v}");
    v.as_f64().unwrap()
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) as Unix seconds.
fn unix(text: &str) -> i64 {
    let at = humantime::parse_rfc3339(&format!("{text}Z")).unwrap_or_else(|e| panic!("expiry {text:?}: {e}"));
    at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

const DAY: i64 = 86_400;

/// Registers `tid`.
fn register(candy: &Candy, tid: i64) {
    let r = bot(candy, "/bot_api/user/register", json!({ "telegram_id": tid }));
    assert_eq!(r.status, 200, "{}", r.raw);
}

/// Prices and submits an order as the bot does (`calculate_price`, then `/bought`).
fn buy(candy: &Candy, tid: i64, order_id: &str, order: Value) -> Value {
    let mut body = json!({ "telegram_id": tid });
    body.as_object_mut().unwrap().extend(order.as_object().unwrap().clone());
    let price = ok(&bot(candy, "/bot_api/user/calculate_price", body.clone()), "Price calculated successfully.");
    body["amount"] = price["calculated_amount"].clone();
    body["order_id"] = json!(order_id);
    body["card_number_sent"] = json!("User confirmed payment via bot");
    ok(&bot(candy, "/bot_api/user/submit_transaction", body), "Transaction submitted for review.")
}

fn approve(candy: &Candy, order_id: &str) -> Reply {
    bot(candy, "/bot_api/admin/approve_transaction", json!({ "telegram_id": ADMIN, "order_id": order_id }))
}

fn transactions(candy: &Candy, filter: &str) -> Vec<Value> {
    let data = ok(
        &bot(candy, "/bot_api/admin/get_transactions", json!({ "telegram_id": ADMIN, "status_filter": filter })),
        "Transactions retrieved.",
    );
    data["transactions"].as_array().expect("transactions").clone()
}

fn manage_user(candy: &Candy, action: &str, value: Value) -> Reply {
    bot(
        candy,
        "/bot_api/admin/manage_user",
        json!({ "admin_telegram_id": ADMIN, "target_telegram_id": ALICE, "action": action, "value": value }),
    )
}

fn status(candy: &Candy, tid: i64) -> Value {
    ok(&bot(candy, "/bot_api/user/account_status", json!({ "telegram_id": tid })), "Your account status:")
}

#[test]
fn a_purchase_goes_from_start_to_licence() {
    let (_fleet, candy) = panel();

    // Before an admin is set, nobody is admin, "0" included.
    let check = bot(&candy, "/bot_api/admin/check_admin", json!({ "telegram_id": "0" }));
    refused(&check, 400, "Missing telegram_id");
    let check =
        ok(&bot(&candy, "/bot_api/admin/check_admin", json!({ "telegram_id": ADMIN })), "Admin status checked.");
    assert_eq!(check, json!({ "is_admin": false, "admin_telegram_id": "0" }));
    refused(&bot(&candy, "/bot_api/admin/get_all_users", json!({ "telegram_id": "0" })), 403, "Unauthorized");
    refused(&bot(&candy, "/bot_api/admin/get_transactions", json!({ "telegram_id": 0 })), 403, "Unauthorized");
    let support = bot(&candy, "/bot_api/user/call_support", json!({ "telegram_id": ALICE, "message": "hi" }));
    refused(&support, 500, "Admin Telegram ID not set in bot settings. Support is unavailable.");

    set(&candy, "telegram_bot_admin_id", &ADMIN.to_string());
    set(&candy, "prices", r#"{"1GB": 4000, "1Month": 75000, "10GB": 35000}"#);
    set(&candy, "admin_card_number", "6037-0000-1111-2222");
    let check =
        ok(&bot(&candy, "/bot_api/admin/check_admin", json!({ "telegram_id": ADMIN })), "Admin status checked.");
    assert_eq!(check, json!({ "is_admin": true, "admin_telegram_id": ADMIN.to_string() }));
    let check =
        ok(&bot(&candy, "/bot_api/admin/check_admin", json!({ "telegram_id": ALICE })), "Admin status checked.");
    assert_eq!(check["is_admin"], json!(false));

    // /start and the language picker.
    let r = bot(&candy, "/bot_api/user/register", json!({ "telegram_id": ALICE }));
    assert_eq!(ok(&r, "User registered successfully."), json!({ "registered": true, "language": "en" }));
    let r = bot(&candy, "/bot_api/user/set_language", json!({ "telegram_id": ALICE, "language": "fa" }));
    assert_eq!(ok(&r, "Language updated successfully."), Value::Null);
    let r = bot(&candy, "/bot_api/user/register", json!({ "telegram_id": ALICE }));
    assert_eq!(ok(&r, "User already registered."), json!({ "registered": true, "language": "fa" }));
    let r = bot(&candy, "/bot_api/user/set_language", json!({ "telegram_id": ALICE, "language": "de" }));
    refused(&r, 400, "Unsupported language. Available: 'en', 'fa'");
    let r = bot(&candy, "/bot_api/user/set_language", json!({ "telegram_id": BOB, "language": "en" }));
    refused(&r, 404, "User not registered with the bot.");

    // No licence before the first approval.
    let r = bot(&candy, "/bot_api/user/get_license", json!({ "telegram_id": ALICE }));
    refused(&r, 404, "You don't have an active license yet. Please purchase one using the 'Buy Traffic' option.");
    let before = status(&candy, ALICE);
    assert_eq!(
        before,
        json!({
            "status": "active", "traffic_bought_gb": 0.0, "time_bought_days": 0, "candy_client_name": null,
            "used_traffic_bytes": 0, "traffic_limit_bytes": 0, "expires": "N/A", "note": "",
        })
    );

    // "Buy Traffic": card number and price list, then prices of each plan.
    let r = bot(&candy, "/bot_api/user/initiate_purchase", json!({ "telegram_id": ALICE }));
    let details = ok(&r, "Purchase initiation details.");
    assert_eq!(details["admin_card_number"], json!("6037-0000-1111-2222"));
    assert_eq!(details["prices"], json!({ "1GB": 4000, "1Month": 75000, "10GB": 35000 }), "an object, not text");
    let price = |order: Value| {
        let mut body = json!({ "telegram_id": ALICE });
        body.as_object_mut().unwrap().extend(order.as_object().unwrap().clone());
        let data = ok(&bot(&candy, "/bot_api/user/calculate_price", body), "Price calculated successfully.");
        float(&data["calculated_amount"])
    };
    assert_eq!(price(json!({ "purchase_type": "gb", "quantity": 10.0 })), 40000.0);
    assert_eq!(price(json!({ "purchase_type": "month", "quantity": 2.0 })), 150000.0);
    assert_eq!(price(json!({ "purchase_type": "custom", "time_quantity": 1.0, "traffic_quantity": 10.0 })), 115000.0);

    // `/bought ORD-1`: the stored amount is the server's price, not what the caller says.
    let body = json!({
        "telegram_id": ALICE, "order_id": "ORD-1", "card_number_sent": "User confirmed payment via bot",
        "purchase_type": "gb", "quantity": 10.0, "amount": 1.0,
    });
    let submitted =
        ok(&bot(&candy, "/bot_api/user/submit_transaction", body.clone()), "Transaction submitted for review.");
    assert_eq!(submitted, json!({ "admin_telegram_id": ADMIN.to_string() }));
    refused(
        &bot(&candy, "/bot_api/user/submit_transaction", body),
        400,
        "This Order ID has already been submitted. Please use a unique one or contact support if you believe this is an error.",
    );

    // The admin sees it pending.
    let pending = transactions(&candy, "pending");
    assert_eq!(pending.len(), 1, "{pending:?}");
    let t = &pending[0];
    assert_eq!((t["order_id"].clone(), t["telegram_id"].clone()), (json!("ORD-1"), json!(ALICE)));
    assert_eq!((float(&t["amount"]), float(&t["quantity"])), (40000.0, 10.0));
    assert_eq!((t["purchase_type"].clone(), t["status"].clone()), (json!("gb"), json!("pending")));
    assert_eq!((t["approved_at"].clone(), t["admin_note"].clone()), (Value::Null, Value::Null));
    assert_eq!(t["card_number_sent"], json!("User confirmed payment via bot"));
    assert!(t["requested_at"].as_str().is_some_and(|at| unix(at) > now() - 60), "{t}");
    assert_eq!((float(&t["time_quantity"]), float(&t["traffic_quantity"])), (0.0, 0.0));
    refused(&bot(&candy, "/bot_api/admin/get_transactions", json!({ "telegram_id": ALICE })), 403, "Unauthorized");

    // Approval creates tguser_<id> on wg0 with 10 GiB and a year.
    let r = approve(&candy, "ORD-1");
    let approved = ok(&r, "Transaction ORD-1 approved. Client 'tguser_111111' created in CandyPanel.");
    assert!(approved["telegram_id"].is_i64() && approved["telegram_id"] == json!(ALICE), "{approved}");
    assert_eq!(approved["client_name"], json!("tguser_111111"));
    assert_eq!((float(&approved["new_traffic_gb"]), approved["new_time_days"].clone()), (10.0, json!(0)));
    let config = approved["client_config"].as_str().expect("client_config");
    assert!(config.starts_with("[Interface]"), "{config}");
    assert_eq!(config_value(config, "Endpoint"), Some(format!("{SERVER_IP}:51820")));
    assert_eq!(config_value(config, "Address").as_deref(), Some("10.8.0.2/32"));
    refused(&approve(&candy, "ORD-1"), 400, "Transaction is not pending. It has been already processed.");
    assert!(transactions(&candy, "pending").is_empty());
    let done = transactions(&candy, "approved");
    assert_eq!(done.len(), 1);
    assert!(done[0]["approved_at"].as_str().is_some_and(|at| unix(at) > now() - 60), "{done:?}");

    let client = candy.client("tguser_111111");
    assert_eq!(client["traffic"], json!((10 * GIB).to_string()));
    assert_eq!((client["wg"].clone(), client["status"].clone()), (json!(0), json!(true)));
    assert_eq!(client["note"], json!("Bot User: 111111 - Order: ORD-1"));
    let expires = unix(client["expires"].as_str().expect("expires"));
    assert!((expires - (now() + 365 * DAY)).abs() < 120, "a GB plan runs a year: {client}");

    // The licence and the status.
    let licence =
        ok(&bot(&candy, "/bot_api/user/get_license", json!({ "telegram_id": ALICE })), "Your WireGuard configuration:");
    let text = licence["config"].as_str().expect("config");
    assert!(text.starts_with("\n[Interface]"), "get_config layout: {text:?}");
    assert_eq!(config_value(text, "PrivateKey"), config_value(config, "PrivateKey"));
    let s = status(&candy, ALICE);
    assert_eq!((s["status"].clone(), float(&s["traffic_bought_gb"])), (json!("active"), 10.0));
    assert_eq!((s["time_bought_days"].clone(), s["candy_client_name"].clone()), (json!(0), json!("tguser_111111")));
    assert_eq!((s["traffic_limit_bytes"].clone(), s["used_traffic_bytes"].clone()), (json!(10 * GIB), json!(0)));
    assert_eq!((s["expires"].clone(), s["note"].clone()), (client["expires"].clone(), client["note"].clone()));

    // A month on top: the same client, 1 TiB, 30 more days from the running expiry.
    buy(&candy, ALICE, "ORD-2", json!({ "purchase_type": "month", "quantity": 1 }));
    let r = approve(&candy, "ORD-2");
    let approved = ok(&r, "Transaction ORD-2 approved. Client 'tguser_111111' updated in CandyPanel.");
    assert_eq!((float(&approved["new_traffic_gb"]), approved["new_time_days"].clone()), (0.0, json!(30)));
    assert!(approved["client_config"].as_str().is_some_and(|c| c.starts_with("\n[Interface]")), "{approved}");
    let client = candy.client("tguser_111111");
    assert_eq!(client["traffic"], json!((1024 * GIB).to_string()));
    assert_eq!(unix(client["expires"].as_str().unwrap()), expires + 30 * DAY);
    let s = status(&candy, ALICE);
    assert_eq!((float(&s["traffic_bought_gb"]), s["time_bought_days"].clone()), (10.0, json!(30)));

    // A custom order rejected: nothing changes but the order.
    buy(&candy, ALICE, "ORD-3", json!({ "purchase_type": "custom", "time_quantity": 2.0, "traffic_quantity": 5.0 }));
    let r = bot(
        &candy,
        "/bot_api/admin/reject_transaction",
        json!({ "telegram_id": ADMIN, "order_id": "ORD-3", "admin_note": "no payment found" }),
    );
    assert_eq!(ok(&r, "Transaction ORD-3 rejected."), json!({ "telegram_id": ALICE }));
    let rejected = transactions(&candy, "rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        (rejected[0]["status"].clone(), rejected[0]["admin_note"].clone()),
        (json!("rejected"), json!("no payment found"))
    );
    assert_eq!((float(&rejected[0]["time_quantity"]), float(&rejected[0]["traffic_quantity"])), (2.0, 5.0));
    assert_eq!(float(&rejected[0]["amount"]), 170000.0);
    let again = json!({ "telegram_id": ADMIN, "order_id": "ORD-3" });
    refused(
        &bot(&candy, "/bot_api/admin/reject_transaction", again),
        400,
        "Transaction is not pending. It has been already processed.",
    );
    refused(&approve(&candy, "ORD-3"), 400, "Transaction is not pending. It has been already processed.");
    refused(&approve(&candy, "NOPE"), 404, "Transaction not found.");
    let nope = json!({ "telegram_id": ADMIN, "order_id": "NOPE" });
    refused(&bot(&candy, "/bot_api/admin/reject_transaction", nope), 404, "Transaction not found.");
    assert_eq!(transactions(&candy, "all").len(), 3);
    assert_eq!(candy.client("tguser_111111")["traffic"], json!((1024 * GIB).to_string()), "rejection changes nothing");

    // Two admins approving one order at once: exactly one wins.
    buy(&candy, ALICE, "ORD-4", json!({ "purchase_type": "gb", "quantity": 1 }));
    let answers: Vec<u16> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..2).map(|_| s.spawn(|| approve(&candy, "ORD-4").status)).collect();
        racers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = answers.clone();
    sorted.sort();
    assert_eq!(sorted, vec![200, 400], "{answers:?}");
    assert_eq!(candy.client("tguser_111111")["traffic"], json!((1025 * GIB).to_string()), "delivered once");
    let s = status(&candy, ALICE);
    assert_eq!(float(&s["traffic_bought_gb"]), 11.0);
}

#[test]
fn the_admin_manages_users_and_the_panel() {
    let (_fleet, candy) = panel();
    set(&candy, "telegram_bot_admin_id", &ADMIN.to_string());
    register(&candy, ALICE);
    register(&candy, BOB);
    buy(&candy, ALICE, "A-1", json!({ "purchase_type": "custom", "time_quantity": 1, "traffic_quantity": 20 }));
    let approved =
        ok(&approve(&candy, "A-1"), "Transaction A-1 approved. Client 'tguser_111111' created in CandyPanel.");
    assert_eq!((float(&approved["new_traffic_gb"]), approved["new_time_days"].clone()), (20.0, json!(30)));
    let expires = unix(candy.client("tguser_111111")["expires"].as_str().unwrap());
    assert!((expires - (now() + 30 * DAY)).abs() < 120);

    // Users and broadcast.
    let users =
        ok(&bot(&candy, "/bot_api/admin/get_all_users", json!({ "telegram_id": ADMIN })), "All bot users retrieved.");
    let users = users["users"].as_array().expect("users").clone();
    assert_eq!(users.len(), 2);
    let alice = users.iter().find(|u| u["telegram_id"] == json!(ALICE)).expect("alice listed");
    assert_eq!(
        (alice["candy_client_name"].clone(), float(&alice["traffic_bought_gb"])),
        (json!("tguser_111111"), 20.0)
    );
    assert_eq!((alice["time_bought_days"].clone(), alice["status"].clone()), (json!(30), json!("active")));
    assert_eq!((alice["is_admin"].clone(), alice["language"].clone()), (json!(0), json!("en")));
    assert!(alice["created_at"].as_str().is_some_and(|at| unix(at) > now() - 60));
    let r = bot(
        &candy,
        "/bot_api/admin/send_message_to_all",
        json!({ "telegram_id": ADMIN, "message": "maintenance at 2" }),
    );
    let broadcast = ok(&r, "Broadcast message prepared.");
    let mut ids: Vec<i64> =
        broadcast["target_user_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!((ids, broadcast["message"].clone()), (vec![ALICE, BOB], json!("maintenance at 2")));
    let r = bot(&candy, "/bot_api/admin/send_message_to_all", json!({ "telegram_id": BOB, "message": "x" }));
    refused(&r, 403, "Unauthorized");

    // The older bot's one-call purchase: a quote, then with an order id and card the order.
    let legacy = json!({ "telegram_id": BOB, "purchase_type": "gb", "quantity": 2 });
    let quote = ok(
        &bot(&candy, "/bot_api/user/buy_traffic_request", legacy.clone()),
        "Please choose your purchase type and quantity.",
    );
    assert_eq!(float(&quote["calculated_amount"]), 8000.0);
    assert_eq!(
        (quote["admin_telegram_id"].clone(), quote["admin_card_number"].clone()),
        (json!(ADMIN.to_string()), json!("YOUR_ADMIN_CARD_NUMBER"))
    );
    assert_eq!(quote["prices"], json!({ "1GB": 4000, "1Month": 75000 }));
    let mut order = legacy;
    order["order_id"] = json!("B-1");
    order["card_number_sent"] = json!("6037");
    ok(&bot(&candy, "/bot_api/user/buy_traffic_request", order), "Purchase request submitted. Admin will review.");
    let pending = transactions(&candy, "pending");
    assert_eq!(
        (pending.len(), pending[0]["order_id"].clone(), float(&pending[0]["amount"])),
        (1, json!("B-1"), 8000.0)
    );

    // Support goes to the admin, named by the client when there is one.
    let r = bot(&candy, "/bot_api/user/call_support", json!({ "telegram_id": ALICE, "message": "slow" }));
    let support = ok(&r, "Your message has been sent to support.");
    assert_eq!(support["admin_telegram_id"], json!(ADMIN.to_string()));
    assert_eq!(support["support_message"], json!("Support request from tguser_111111 (ID: 111111):\n\nslow"));
    let r = bot(&candy, "/bot_api/user/call_support", json!({ "telegram_id": 5, "message": "who am I" }));
    assert_eq!(
        ok(&r, "Your message has been sent to support.")["support_message"],
        json!("Support request from User 5 (ID: 5):\n\nwho am I")
    );

    // Ban: the client goes off; twice is fine; a banned user cannot order.
    assert_eq!(ok(&manage_user(&candy, "ban", Value::Null), "User 111111 has been banned."), Value::Null);
    assert_eq!(candy.client("tguser_111111")["status"], json!(false));
    ok(&manage_user(&candy, "ban", Value::Null), "User 111111 has been banned.");
    assert_eq!(status(&candy, ALICE)["status"], json!("banned"));
    let body = json!({
        "telegram_id": ALICE, "order_id": "A-2", "card_number_sent": "paid", "purchase_type": "gb", "quantity": 1,
    });
    refused(
        &bot(&candy, "/bot_api/user/submit_transaction", body),
        403,
        "Your account is banned. Please contact support.",
    );
    ok(&manage_user(&candy, "unban", Value::Null), "User 111111 has been unbanned.");
    ok(&manage_user(&candy, "unban", Value::Null), "User 111111 has been unbanned.");
    assert_eq!(candy.client("tguser_111111")["status"], json!(true));
    assert_eq!(status(&candy, ALICE)["status"], json!("active"));

    // Corrections: traffic is the new total; time moves the expiry by the difference.
    ok(&manage_user(&candy, "update_traffic", json!(50)), "User 111111 traffic updated to 50.0 GB.");
    assert_eq!(candy.client("tguser_111111")["traffic"], json!((50 * GIB).to_string()));
    assert_eq!(float(&status(&candy, ALICE)["traffic_bought_gb"]), 50.0);
    ok(&manage_user(&candy, "update_time", json!(40)), "User 111111 time updated to 40 days.");
    assert_eq!(unix(candy.client("tguser_111111")["expires"].as_str().unwrap()), expires + 10 * DAY);
    ok(&manage_user(&candy, "update_time", json!("25")), "User 111111 time updated to 25 days.");
    assert_eq!(unix(candy.client("tguser_111111")["expires"].as_str().unwrap()), expires - 5 * DAY);
    assert_eq!(status(&candy, ALICE)["time_bought_days"], json!(25));
    refused(&manage_user(&candy, "update_traffic", json!("lots")), 400, "Invalid value for traffic. Must be a number.");
    refused(&manage_user(&candy, "update_time", json!(1.5)), 400, "Invalid value for time. Must be an integer.");
    refused(&manage_user(&candy, "update_time", Value::Null), 400, "Invalid action or missing value.");
    refused(&manage_user(&candy, "promote", json!(1)), 400, "Invalid action or missing value.");
    let wrong_admin = json!({ "admin_telegram_id": BOB, "target_telegram_id": ALICE, "action": "ban" });
    refused(&bot(&candy, "/bot_api/admin/manage_user", wrong_admin), 403, "Unauthorized");
    assert_eq!(candy.client("tguser_111111")["status"], json!(true), "the refused ban changed nothing");
    let unknown = json!({ "admin_telegram_id": ADMIN, "target_telegram_id": 42, "action": "ban" });
    refused(&bot(&candy, "/bot_api/admin/manage_user", unknown), 404, "Target user not found.");
    let missing = json!({ "admin_telegram_id": ADMIN, "action": "ban" });
    refused(&bot(&candy, "/bot_api/admin/manage_user", missing), 400, "Missing required fields.");

    // The panel from the bot: `/cp_*` commands.
    let control = |admin: i64, resource: &str, action: &str, data: Value| {
        bot(
            &candy,
            "/bot_api/admin/server_control",
            json!({ "admin_telegram_id": admin, "resource": resource, "action": action, "data": data }),
        )
    };
    let r = control(ADMIN, "client", "get_config", json!({ "name": "tguser_111111" }));
    let got = ok(&r, "CandyPanel: Client config retrieved successfully.");
    assert!(got["config"].as_str().is_some_and(|c| c.contains("[Peer]")), "{got}");
    let r = control(
        ADMIN,
        "client",
        "create",
        json!({ "name": "cp-made", "expires": "2031-01-01T00:00:00", "traffic": "1073741824", "wg_id": 0 }),
    );
    let made = ok(&r, "CandyPanel: Client created successfully!");
    assert!(made["client_config"].as_str().is_some_and(|c| c.starts_with("[Interface]")), "{made}");
    let r = control(ADMIN, "setting", "update", json!({ "key": "dns", "value": "1.1.1.1" }));
    assert_eq!(ok(&r, "CandyPanel: Changed!"), json!({}), "data is an object, never null");
    assert_eq!(
        ok(
            &control(ADMIN, "sync", "trigger", json!({})),
            "CandyPanel: Synchronization process initiated successfully."
        ),
        json!({})
    );
    refused(
        &control(ADMIN, "client", "get_config", json!({ "name": "ghost" })),
        404,
        "CandyPanel Error: Client not found.",
    );
    refused(
        &control(ADMIN, "client", "explode", json!({})),
        400,
        "CandyPanel Error: Invalid action 'explode' for client resource",
    );
    refused(
        &control(ADMIN, "api_token", "create_or_update", json!({ "name": "x", "token": "y" })),
        400,
        "Unknown resource type: api_token",
    );
    refused(
        &control(BOB, "setting", "update", json!({ "key": "telegram_bot_admin_id", "value": "222222" })),
        403,
        "Unauthorized",
    );
    let check = ok(&bot(&candy, "/bot_api/admin/check_admin", json!({ "telegram_id": BOB })), "Admin status checked.");
    assert_eq!(check["is_admin"], json!(false), "the refused change did not happen");
    let r = bot(&candy, "/bot_api/admin/server_control", json!({ "admin_telegram_id": ADMIN, "resource": "client" }));
    refused(&r, 400, "Missing admin_telegram_id, resource, or action.");

    // `/adminlogin`'s status: the dashboard only, `alert` as JSON text.
    for method in ["POST", "GET"] {
        let r = candy.api.request(method, "/bot_api/admin/data", (method == "POST").then_some(b"{}".as_slice()), None);
        let data = ok(&r, "Dashboard data retrieved successfully.");
        assert_eq!(data.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["dashboard"], "{data}");
        let dashboard = &data["dashboard"];
        let alert: Value = serde_json::from_str(dashboard["alert"].as_str().expect("alert is text")).expect("JSON");
        assert!(alert.is_array(), "{alert}");
        assert_eq!(dashboard["clients_count"], json!(2));
        for key in ["cpu", "mem", "uptime", "net", "status"] {
            assert!(dashboard.get(key).is_some(), "dashboard.{key}: {dashboard}");
        }
    }
}

#[test]
fn bad_input_is_refused_in_the_envelope() {
    let (_fleet, candy) = panel();
    set(&candy, "telegram_bot_admin_id", &ADMIN.to_string());
    register(&candy, ALICE);
    let raw = |path: &str, body: &[u8]| candy.api.request("POST", path, Some(body), None);

    refused(&raw("/bot_api/user/register", b"{not json"), 400, "Invalid JSON body…");
    refused(&raw("/bot_api/user/register", b"[1, 2]"), 400, "Request body must be a JSON object");
    refused(&raw("/bot_api/user/register", b""), 400, "Missing telegram_id");
    refused(
        &bot(&candy, "/bot_api/user/register", json!({ "telegram_id": "abc" })),
        400,
        "Field 'telegram_id' must be an integer",
    );
    refused(
        &bot(&candy, "/bot_api/user/register", json!({ "telegram_id": -5 })),
        400,
        "Field 'telegram_id' must be a positive Telegram id",
    );
    refused(
        &bot(&candy, "/bot_api/user/set_language", json!({ "telegram_id": ALICE })),
        400,
        "Missing telegram_id or language",
    );
    refused(&bot(&candy, "/bot_api/user/initiate_purchase", json!({})), 400, "Missing telegram_id");
    refused(
        &bot(&candy, "/bot_api/user/initiate_purchase", json!({ "telegram_id": BOB })),
        404,
        "User not registered with the bot.",
    );

    let calc = |body: Value| bot(&candy, "/bot_api/user/calculate_price", body);
    refused(&calc(json!({ "telegram_id": ALICE })), 400, "Missing telegram_id or purchase_type");
    refused(
        &calc(json!({ "telegram_id": BOB, "purchase_type": "gb", "quantity": 1 })),
        404,
        "User not registered with the bot.",
    );
    refused(
        &calc(json!({ "telegram_id": ALICE, "purchase_type": "year", "quantity": 1 })),
        400,
        "Invalid purchase_type. Must be 'gb', 'month', or 'custom'.",
    );
    refused(&calc(json!({ "telegram_id": ALICE, "purchase_type": "gb" })), 400, "Missing quantity for GB purchase");
    refused(
        &calc(json!({ "telegram_id": ALICE, "purchase_type": "month" })),
        400,
        "Missing quantity for Month purchase",
    );
    refused(
        &calc(json!({ "telegram_id": ALICE, "purchase_type": "gb", "quantity": -2 })),
        400,
        "Quantity must be greater than 0.",
    );
    refused(
        &calc(json!({ "telegram_id": ALICE, "purchase_type": "gb", "quantity": "ten" })),
        400,
        "Field 'quantity' must be a number",
    );
    refused(
        &calc(json!({ "telegram_id": ALICE, "purchase_type": "gb", "quantity": 1e12 })),
        400,
        "Quantity is too large…",
    );
    refused(
        &calc(json!({ "telegram_id": ALICE, "purchase_type": "custom", "time_quantity": 0, "traffic_quantity": 0 })),
        400,
        "Quantity must be greater than 0.",
    );

    // Prices the admin has not set: the bot's "contact support" texts.
    set(&candy, "prices", r#"{"1GB": 4000}"#);
    let r = calc(json!({ "telegram_id": ALICE, "purchase_type": "month", "quantity": 1 }));
    refused(&r, 500, "Price per Month not configured. Please contact support.");
    let r = calc(json!({ "telegram_id": ALICE, "purchase_type": "custom", "time_quantity": 1, "traffic_quantity": 1 }));
    let message = r.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("Price for") && message.contains("not configured"), "{}", r.raw);

    let submit = |body: Value| bot(&candy, "/bot_api/user/submit_transaction", body);
    refused(&submit(json!({ "telegram_id": ALICE, "order_id": "X" })), 400, "Missing required transaction details.");
    let unregistered =
        json!({ "telegram_id": BOB, "order_id": "X", "card_number_sent": "c", "purchase_type": "gb", "quantity": 1 });
    refused(&submit(unregistered), 404, "User not registered with the bot.");
    let long = json!({ "telegram_id": ALICE, "order_id": "9".repeat(200), "card_number_sent": "c", "purchase_type": "gb", "quantity": 1 });
    refused(&submit(long), 400, "Order ID must be at most 128 characters.");
    assert!(
        ok(
            &bot(&candy, "/bot_api/admin/get_transactions", json!({ "telegram_id": ADMIN, "status_filter": "all" })),
            "Transactions retrieved."
        )["transactions"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was stored"
    );

    refused(&bot(&candy, "/bot_api/user/get_license", json!({})), 400, "Missing telegram_id");
    refused(
        &bot(&candy, "/bot_api/user/get_license", json!({ "telegram_id": BOB })),
        404,
        "User not registered with the bot. Please use /start to register.",
    );
    refused(
        &bot(&candy, "/bot_api/user/account_status", json!({ "telegram_id": BOB })),
        404,
        "User not registered with the bot. Please use /start to register.",
    );
    refused(
        &bot(&candy, "/bot_api/user/call_support", json!({ "telegram_id": ALICE, "message": "  " })),
        400,
        "Missing telegram_id or message",
    );
    refused(&bot(&candy, "/bot_api/admin/check_admin", json!({})), 400, "Missing telegram_id");
    let r = bot(&candy, "/bot_api/admin/get_transactions", json!({ "telegram_id": ADMIN, "status_filter": "bogus" }));
    refused(&r, 400, "Invalid status_filter. Must be 'pending', 'approved', 'rejected', or 'all'.");
    refused(
        &bot(&candy, "/bot_api/admin/approve_transaction", json!({ "telegram_id": ADMIN })),
        400,
        "Missing required fields for approval.",
    );
    refused(
        &bot(&candy, "/bot_api/admin/approve_transaction", json!({ "telegram_id": ALICE, "order_id": "X" })),
        403,
        "Unauthorized",
    );
    refused(
        &bot(&candy, "/bot_api/admin/reject_transaction", json!({ "order_id": "X" })),
        400,
        "Missing telegram_id or order_id.",
    );
    refused(
        &bot(&candy, "/bot_api/admin/send_message_to_all", json!({ "telegram_id": ADMIN })),
        400,
        "Missing telegram_id or message.",
    );
}

/// The bot runs beside the controller; other hosts get 403 on every bot route.
#[test]
fn remote_callers_are_refused() {
    let fleet = Fleet::start();
    if !fleet.namespaced() {
        eprintln!("SKIPPED remote_callers_are_refused: the controller is not in a network namespace of its own");
        return;
    }
    let candy = Candy::new(&fleet.api);
    for path in ["/bot_api/user/register", "/bot_api/admin/check_admin", "/bot_api/admin/data"] {
        refused(&bot(&candy, path, json!({ "telegram_id": ALICE })), 403, "The bot API only answers local callers");
    }
    let r = candy.api.request("GET", "/bot_api/admin/data", None, None);
    refused(&r, 403, "The bot API only answers local callers");
}
