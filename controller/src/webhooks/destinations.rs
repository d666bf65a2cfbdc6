//! Destinations: checking a webhook's `destination_config`, masking its secrets for display, and
//! turning a queued delivery into the HTTP request each service expects.
//!
//! - `http`: the payload itself, POST or PUT, signed with the webhook's secret:
//!   `X-Flotilla-Signature` = hex(HMAC-SHA256(secret, timestamp + "." + body)), with
//!   `X-Flotilla-Timestamp` (Unix seconds of this attempt) and `X-Flotilla-Event`.
//! - `telegram`: Bot API `POST {telegram_api}/bot{token}/sendMessage {chat_id, text, parse_mode}`.
//! - `slack`: `POST webhook_url {text, channel?, username?}`.
//! - `discord`: `POST webhook_url {content, username?}`.

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::store::{Destination, DestinationType, DueDelivery};

/// What a masked secret reads as.
pub const MASK: &str = "****";
/// Custom headers an `http` destination may carry.
const MAX_HEADERS: usize = 20;
/// Longest URL accepted.
const MAX_URL: usize = 2048;

/// Checks an `http(s)://` URL with a host (a query is allowed: some receivers take their token
/// there); returns it trimmed.
pub fn check_url(field: &str, raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(format!("destination_config.{field}: required"));
    }
    if raw.len() > MAX_URL {
        return Err(format!("destination_config.{field}: at most {MAX_URL} characters"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("destination_config.{field}: not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("destination_config.{field}: must be an http:// or https:// URL, not {}:", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("destination_config.{field}: has no host"));
    }
    if url.fragment().is_some() {
        return Err(format!("destination_config.{field}: must not have a #fragment"));
    }
    Ok(raw.to_string())
}

/// `scheme://host[:port]/****`: a URL whose path is its secret (Slack, Discord).
fn mask_secret_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{}://{}/{MASK}", u.scheme(), u.host_str().unwrap_or("")),
        Err(_) => MASK.into(),
    }
}

/// An `http` URL as shown: no credentials, and its query (which may hold a token) masked.
fn mask_http_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let had_query = u.query().is_some();
            u.set_query(None);
            if had_query {
                format!("{u}?{MASK}")
            } else {
                u.to_string()
            }
        }
        Err(_) => MASK.into(),
    }
}

fn is_masked(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| s.contains(MASK))
}

fn string_field(config: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match config.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Some(Value::Number(n)) if name == "chat_id" => Ok(Some(n.to_string())),
        Some(_) => Err(format!("destination_config.{name}: must be a string")),
    }
}

/// Checks `config` for a destination of `kind`. `previous` is the webhook's whole current config
/// when a PATCH keeps the type: fields not given are kept, and secrets given back masked (as the
/// API showed them) keep their old value.
pub fn check(kind: DestinationType, config: &Value, previous: Option<&Value>) -> Result<Destination, String> {
    let given = config.as_object().ok_or("destination_config: must be a JSON object")?;
    let mut merged = previous.and_then(Value::as_object).cloned().unwrap_or_default();
    for (k, v) in given {
        let secret = matches!(k.as_str(), "bot_token" | "webhook_url" | "url" | "headers");
        if secret && previous.is_some() && (is_masked(Some(v)) || (k == "headers" && headers_masked(v))) {
            continue;
        }
        merged.insert(k.clone(), v.clone());
    }
    let c = &merged;
    match kind {
        DestinationType::Http => {
            let url = check_url("url", &string_field(c, "url")?.unwrap_or_default())?;
            let method = string_field(c, "method")?.unwrap_or_else(|| "POST".into()).to_ascii_uppercase();
            if !matches!(method.as_str(), "POST" | "PUT") {
                return Err(format!("destination_config.method: {method:?} is not POST or PUT"));
            }
            let headers = match c.get("headers") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(h)) => {
                    if h.len() > MAX_HEADERS {
                        return Err(format!("destination_config.headers: at most {MAX_HEADERS}"));
                    }
                    for (name, value) in h {
                        let lower = name.to_ascii_lowercase();
                        if name.is_empty()
                            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                            || matches!(
                                lower.as_str(),
                                "host" | "content-length" | "content-type" | "transfer-encoding"
                            )
                            || lower.starts_with("x-flotilla-")
                        {
                            return Err(format!("destination_config.headers: {name:?} cannot be set"));
                        }
                        if value.as_str().is_none_or(|v| v.contains(['\r', '\n'])) {
                            return Err(format!("destination_config.headers.{name}: must be a one-line string"));
                        }
                    }
                    h.clone()
                }
                Some(_) => return Err("destination_config.headers: must be an object of strings".into()),
            };
            let shown_headers: Map<String, Value> = headers.keys().map(|k| (k.clone(), json!(MASK))).collect();
            Ok(Destination {
                kind,
                shown: json!({ "url": mask_http_url(&url), "method": method, "headers": shown_headers }),
                full: json!({ "url": url, "method": method, "headers": headers }),
            })
        }
        DestinationType::Telegram => {
            let token = string_field(c, "bot_token")?.ok_or("destination_config.bot_token: required")?;
            let valid = token.split_once(':').is_some_and(|(id, rest)| {
                !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_digit())
                    && !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
            if !valid {
                return Err("destination_config.bot_token: expected the bot's token, 123456:ABC-DEF…".into());
            }
            let chat_id = string_field(c, "chat_id")?.ok_or("destination_config.chat_id: required")?;
            let parse_mode = string_field(c, "parse_mode")?.unwrap_or_else(|| "HTML".into());
            let parse_mode = ["HTML", "Markdown", "MarkdownV2"]
                .into_iter()
                .find(|m| m.eq_ignore_ascii_case(&parse_mode))
                .ok_or_else(|| {
                    format!("destination_config.parse_mode: {parse_mode:?} is not HTML, Markdown or MarkdownV2")
                })?;
            let bot_id = token.split(':').next().unwrap_or_default();
            Ok(Destination {
                kind,
                shown: json!({ "bot_token": format!("{bot_id}:{MASK}"), "chat_id": chat_id, "parse_mode": parse_mode }),
                full: json!({ "bot_token": token, "chat_id": chat_id, "parse_mode": parse_mode }),
            })
        }
        DestinationType::Slack | DestinationType::Discord => {
            let url = check_url("webhook_url", &string_field(c, "webhook_url")?.unwrap_or_default())?;
            let mut shown = json!({ "webhook_url": mask_secret_url(&url) });
            let mut full = json!({ "webhook_url": url });
            let optional: &[&str] =
                if kind == DestinationType::Slack { &["channel", "username"] } else { &["username"] };
            for name in optional {
                if let Some(v) = string_field(c, name)? {
                    if v.len() > 80 {
                        return Err(format!("destination_config.{name}: at most 80 characters"));
                    }
                    shown[*name] = json!(v);
                    full[*name] = json!(v);
                }
            }
            Ok(Destination { kind, shown, full })
        }
    }
}

fn headers_masked(v: &Value) -> bool {
    v.as_object().is_some_and(|h| !h.is_empty() && h.values().all(|v| v.as_str() == Some(MASK)))
}

/// An HTTP request to make.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// hex(HMAC-SHA256(secret, timestamp + "." + body)): the `X-Flotilla-Signature` of `http`
/// deliveries.
pub fn signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

const USER_AGENT: &str = concat!("Flotilla-Webhooks/", env!("CARGO_PKG_VERSION"));

/// The request of delivery `d` at Unix second `now_s`; `telegram_api` is the Bot API's base URL.
pub fn request(d: &DueDelivery, telegram_api: &str, now_s: i64) -> Result<OutRequest, String> {
    let field = |name: &str| d.config.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
    let json_headers = || vec![("Content-Type".to_string(), "application/json".to_string())];
    match d.destination_type {
        DestinationType::Http => {
            let timestamp = now_s.to_string();
            let mut headers = json_headers();
            headers.push(("User-Agent".into(), USER_AGENT.into()));
            if let Some(custom) = d.config.get("headers").and_then(Value::as_object) {
                headers.extend(custom.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))));
            }
            headers.push(("X-Flotilla-Event".into(), d.event_type.clone()));
            headers.push(("X-Flotilla-Delivery".into(), d.id.clone()));
            headers.push(("X-Flotilla-Timestamp".into(), timestamp.clone()));
            headers.push(("X-Flotilla-Signature".into(), signature(&d.secret, &timestamp, &d.payload)));
            let method = if field("method") == "PUT" { "PUT" } else { "POST" };
            Ok(OutRequest { method, url: field("url"), headers, body: d.payload.clone() })
        }
        DestinationType::Telegram => {
            let parse_mode = field("parse_mode");
            let text = truncate(&message(d, Style::for_telegram(&parse_mode)), 4096);
            let chat_id = field("chat_id");
            let body = json!({ "chat_id": chat_id, "text": text, "parse_mode": parse_mode });
            Ok(OutRequest {
                method: "POST",
                url: format!("{}/bot{}/sendMessage", telegram_api.trim_end_matches('/'), field("bot_token")),
                headers: json_headers(),
                body: body.to_string(),
            })
        }
        DestinationType::Slack => {
            let mut body = json!({ "text": truncate(&message(d, Style::Slack), 3000) });
            for name in ["channel", "username"] {
                if let Some(v) = d.config.get(name) {
                    body[name] = v.clone();
                }
            }
            Ok(OutRequest {
                method: "POST",
                url: field("webhook_url"),
                headers: json_headers(),
                body: body.to_string(),
            })
        }
        DestinationType::Discord => {
            let mut body = json!({ "content": truncate(&message(d, Style::Discord), 2000) });
            if let Some(v) = d.config.get("username") {
                body["username"] = v.clone();
            }
            Ok(OutRequest {
                method: "POST",
                url: field("webhook_url"),
                headers: json_headers(),
                body: body.to_string(),
            })
        }
    }
}

/// How a chat message is marked up.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Style {
    TelegramHtml,
    TelegramMarkdown,
    TelegramMarkdownV2,
    Slack,
    Discord,
}

impl Style {
    fn for_telegram(parse_mode: &str) -> Style {
        match parse_mode {
            "Markdown" => Style::TelegramMarkdown,
            "MarkdownV2" => Style::TelegramMarkdownV2,
            _ => Style::TelegramHtml,
        }
    }

    /// `s` with the characters this markup would interpret escaped.
    fn escape(self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match (self, c) {
                (Style::TelegramHtml, '&') | (Style::Slack, '&') => out.push_str("&amp;"),
                (Style::TelegramHtml, '<') | (Style::Slack, '<') => out.push_str("&lt;"),
                (Style::TelegramHtml, '>') | (Style::Slack, '>') => out.push_str("&gt;"),
                (Style::TelegramMarkdown, '_' | '*' | '`' | '[') => {
                    out.push('\\');
                    out.push(c);
                }
                (
                    Style::TelegramMarkdownV2,
                    '_' | '*' | '[' | ']' | '(' | ')' | '~' | '`' | '>' | '#' | '+' | '-' | '=' | '|' | '{' | '}' | '.'
                    | '!' | '\\',
                ) => {
                    out.push('\\');
                    out.push(c);
                }
                (Style::Discord, '*' | '_' | '`' | '~' | '|' | '\\') => {
                    out.push('\\');
                    out.push(c);
                }
                _ => out.push(c),
            }
        }
        out
    }

    fn bold(self, s: &str) -> String {
        let s = self.escape(s);
        match self {
            Style::TelegramHtml => format!("<b>{s}</b>"),
            Style::TelegramMarkdown | Style::TelegramMarkdownV2 | Style::Slack => format!("*{s}*"),
            Style::Discord => format!("**{s}**"),
        }
    }
}

/// A chat message about the event: a bold title, then one `key: value` line per data field,
/// then the event id.
fn message(d: &DueDelivery, style: Style) -> String {
    let payload: Value = serde_json::from_str(&d.payload).unwrap_or(Value::Null);
    let mut lines = vec![format!(
        "{} ({})",
        style.bold(&crate::webhooks::events::title(&d.event_type)),
        style.escape(&d.event_type)
    )];
    if let Some(data) = payload.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            lines.push(format!("{}: {}", style.escape(k), style.escape(&truncate(&text, 500))));
        }
    }
    lines.push(style.escape(&d.event_id));
    lines.join("\n")
}

/// At most `max` characters.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(kind: DestinationType, config: Value) -> DueDelivery {
        DueDelivery {
            id: "d1".into(),
            webhook_id: "w1".into(),
            event_id: "evt_1".into(),
            event_type: "node.offline".into(),
            payload: r#"{"id":"evt_1","type":"node.offline","created_at":"2026-01-01T00:00:00Z","data":{"node_name":"a<b>_c"}}"#
                .into(),
            attempts: 0,
            created_at_ms: 0,
            retry_count: 3,
            retry_delay_seconds: 60,
            timeout_seconds: 30,
            destination_type: kind,
            config,
            secret: "whsec_x".into(),
        }
    }

    #[test]
    fn configs_are_checked_and_secrets_masked() {
        let d = check(DestinationType::Http, &json!({"url": "https://u:p@example.com/h?token=abc"}), None).unwrap();
        assert_eq!(d.shown["url"], "https://example.com/h?****");
        assert_eq!(d.full["method"], "POST");
        assert!(check(DestinationType::Http, &json!({"url": "ftp://example.com"}), None).unwrap_err().contains("http"));
        assert!(check(DestinationType::Http, &json!({"url": "https://x", "method": "GET"}), None).is_err());
        assert!(check(DestinationType::Http, &json!({}), None).unwrap_err().contains("required"));
        let t = check(DestinationType::Telegram, &json!({"bot_token": "123:AB-c_d", "chat_id": -100}), None).unwrap();
        assert_eq!(t.shown["bot_token"], "123:****");
        assert_eq!(t.full["chat_id"], "-100");
        assert!(check(DestinationType::Telegram, &json!({"bot_token": "nope", "chat_id": "1"}), None).is_err());
        let s = check(DestinationType::Slack, &json!({"webhook_url": "https://hooks.slack.com/services/T/B/x"}), None)
            .unwrap();
        assert_eq!(s.shown["webhook_url"], "https://hooks.slack.com/****");
        // A PATCH sending back what the API showed keeps the secret.
        let again = check(DestinationType::Telegram, &t.shown, Some(&t.full)).unwrap();
        assert_eq!(again.full["bot_token"], "123:AB-c_d");
        let changed = check(DestinationType::Telegram, &json!({"chat_id": "42"}), Some(&t.full)).unwrap();
        assert_eq!(
            (changed.full["bot_token"].as_str(), changed.full["chat_id"].as_str()),
            (Some("123:AB-c_d"), Some("42"))
        );
    }

    #[test]
    fn requests_have_each_service_shape() {
        let http =
            check(DestinationType::Http, &json!({"url": "http://127.0.0.1:9/h", "method": "put"}), None).unwrap();
        let r = request(&due(DestinationType::Http, http.full), "", 1700000000).unwrap();
        assert_eq!(r.method, "PUT");
        let sig = r.headers.iter().find(|(k, _)| k == "X-Flotilla-Signature").unwrap().1.clone();
        assert_eq!(sig, signature("whsec_x", "1700000000", &r.body));
        let tg = check(DestinationType::Telegram, &json!({"bot_token": "1:x", "chat_id": "5"}), None).unwrap();
        let r = request(&due(DestinationType::Telegram, tg.full), "http://127.0.0.1:1/", 0).unwrap();
        assert_eq!(r.url, "http://127.0.0.1:1/bot1:x/sendMessage");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert!(body["text"].as_str().unwrap().contains("node_name: a&lt;b&gt;_c"), "{body}");
        assert_eq!(body["parse_mode"], "HTML");
        let dc =
            check(DestinationType::Discord, &json!({"webhook_url": "https://d/x", "username": "bot"}), None).unwrap();
        let body: Value =
            serde_json::from_str(&request(&due(DestinationType::Discord, dc.full), "", 0).unwrap().body).unwrap();
        assert_eq!(body["username"], "bot");
        assert!(body["content"].as_str().unwrap().starts_with("**Node offline**"));
    }
}
