//! Proxy inbounds and clients in the 3x-ui shapes operators already send: parsing and validating
//! request bodies into store types, and rendering stored ones back.
//!
//! Rules worth knowing:
//! - `settings`, `streamSettings` and `sniffing` are accepted as JSON objects or as JSON text
//!   (3x-ui's own API sends text).
//! - `totalGB` holds bytes, as 3x-ui stores it; a value below 1,048,576 is read as gigabytes
//!   (GiB), because the document's examples and one of the original forms send GB.
//! - `expiryTime` is Unix milliseconds, 0 = never.

use serde_json::{json, Map, Value};

use crate::store::{ClientRecord, InboundRecord, NewClient, NewInbound};

/// Protocols an inbound may use.
pub const PROTOCOLS: &[&str] = &["vless", "vmess", "trojan", "shadowsocks", "dokodemo-door", "socks", "http"];

/// Values of `totalGB` below this are gigabytes, not bytes.
pub const TOTAL_GB_BYTES_THRESHOLD: u64 = 1_048_576;

/// VLESS flows a client may carry.
pub const FLOWS: &[&str] = &["", "xtls-rprx-vision", "xtls-rprx-vision-udp443"];

/// Bad input, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> InputError {
    InputError { field: field.into(), message: message.into() }
}

/// A JSON object given either as an object or as JSON text; absent or null → `{}`.
pub fn json_object(field: &str, value: Option<&Value>) -> Result<Map<String, Value>, InputError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Map::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(bad(field, "must be a JSON object")),
            Err(e) => Err(bad(field, format!("is not valid JSON: {e}"))),
        },
        Some(_) => Err(bad(field, "must be a JSON object or a JSON string holding one")),
    }
}

/// Parses stored JSON object text (written by this module, so always an object).
pub fn stored_object(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

fn opt_str(body: &Map<String, Value>, field: &str) -> Result<Option<String>, InputError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

fn opt_bool(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, InputError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(field, "must be true or false")),
    }
}

fn opt_i64(body: &Map<String, Value>, field: &str) -> Result<Option<i64>, InputError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| bad(field, "must be an integer")),
        Some(Value::String(s)) if s.trim().parse::<i64>().is_ok() => Ok(s.trim().parse().ok()),
        Some(_) => Err(bad(field, "must be an integer")),
    }
}

/// `totalGB` as bytes (see the module doc for the GB rule).
pub fn total_bytes(raw: i64) -> Result<u64, InputError> {
    if raw < 0 {
        return Err(bad("totalGB", "must not be negative"));
    }
    let raw = raw as u64;
    Ok(if raw < TOTAL_GB_BYTES_THRESHOLD { raw.saturating_mul(1 << 30) } else { raw })
}

/// Whether `protocol` names clients by UUID (else by password).
pub fn uses_uuid(protocol: &str) -> bool {
    matches!(protocol, "vless" | "vmess")
}

/// Whether clients of `protocol` are users the core manages (others have no client list).
pub fn has_clients(protocol: &str) -> bool {
    matches!(protocol, "vless" | "vmess" | "trojan" | "shadowsocks")
}

/// A fresh client secret: a UUID for vless/vmess, a password of unreserved characters otherwise
/// (share-link parsers do not all percent-decode passwords).
pub fn new_secret(protocol: &str) -> String {
    let id = uuid::Uuid::new_v4();
    if uses_uuid(protocol) {
        id.to_string()
    } else {
        id.simple().to_string()
    }
}

fn new_sub_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// Parses one client object (3x-ui shape) for an inbound of `protocol`. `field` prefixes error
/// field names (e.g. `clients[2]`).
pub fn parse_client(protocol: &str, value: &Value, field: &str) -> Result<NewClient, InputError> {
    let Value::Object(body) = value else {
        return Err(bad(field, "must be a JSON object"));
    };
    let f = |name: &str| format!("{field}.{name}");
    let email = opt_str(body, "email").map_err(|e| bad(f("email"), e.message))?.unwrap_or_default();
    let email = email.trim().to_string();
    if email.is_empty() {
        return Err(bad(f("email"), "is required"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) || email.len() > 200 {
        return Err(bad(f("email"), "must be at most 200 characters without spaces"));
    }
    let secret = if uses_uuid(protocol) {
        match opt_str(body, "id").map_err(|e| bad(f("id"), e.message))? {
            Some(id) if !id.is_empty() => {
                uuid::Uuid::parse_str(&id).map_err(|_| bad(f("id"), format!("{id:?} is not a valid UUID")))?.to_string()
            }
            _ => new_secret(protocol),
        }
    } else {
        match opt_str(body, "password").map_err(|e| bad(f("password"), e.message))? {
            Some(p) if !p.is_empty() => p,
            _ => new_secret(protocol),
        }
    };
    let flow = opt_str(body, "flow").map_err(|e| bad(f("flow"), e.message))?.unwrap_or_default();
    if !FLOWS.contains(&flow.as_str()) {
        return Err(bad(f("flow"), format!("must be one of {FLOWS:?}")));
    }
    if !flow.is_empty() && protocol != "vless" {
        return Err(bad(f("flow"), "only VLESS clients have a flow"));
    }
    let expiry_ms = opt_i64(body, "expiryTime").map_err(|e| bad(f("expiryTime"), e.message))?.unwrap_or(0);
    if expiry_ms < 0 {
        return Err(bad(f("expiryTime"), "must be Unix milliseconds or 0 (never)"));
    }
    let total = opt_i64(body, "totalGB").map_err(|e| bad(f("totalGB"), e.message))?.unwrap_or(0);
    let total_bytes = total_bytes(total).map_err(|e| bad(f("totalGB"), e.message))?;
    let limit_ip = opt_i64(body, "limitIp").map_err(|e| bad(f("limitIp"), e.message))?.unwrap_or(0);
    Ok(NewClient {
        email,
        secret,
        flow,
        enable: opt_bool(body, "enable").map_err(|e| bad(f("enable"), e.message))?.unwrap_or(true),
        expiry_ms,
        total_bytes,
        limit_ip: limit_ip.clamp(0, u32::MAX as i64) as u32,
        sub_id: opt_str(body, "subId").map_err(|e| bad(f("subId"), e.message))?.unwrap_or_else(new_sub_id),
        tg_id: opt_str(body, "tgId").map_err(|e| bad(f("tgId"), e.message))?.unwrap_or_default(),
        comment: opt_str(body, "comment").map_err(|e| bad(f("comment"), e.message))?.unwrap_or_default(),
    })
}

/// An inbound body parsed: the inbound and the clients its `settings.clients` listed.
#[derive(Debug, Clone)]
pub struct InboundInput {
    pub inbound: NewInbound,
    pub clients: Vec<NewClient>,
}

/// Parses an inbound body (3x-ui shape).
pub fn parse_inbound(body: &Map<String, Value>) -> Result<InboundInput, InputError> {
    let port = opt_i64(body, "port")?.ok_or_else(|| bad("port", "is required"))?;
    if !(1..=65535).contains(&port) {
        return Err(bad("port", format!("{port} is not a port (1-65535)")));
    }
    let protocol = opt_str(body, "protocol")?.ok_or_else(|| bad("protocol", "is required"))?.to_ascii_lowercase();
    if !PROTOCOLS.contains(&protocol.as_str()) {
        return Err(bad("protocol", format!("unknown protocol {protocol:?} (known: {})", PROTOCOLS.join(", "))));
    }
    let listen = opt_str(body, "listen")?.unwrap_or_default();
    if !listen.is_empty() && listen.parse::<std::net::IpAddr>().is_err() {
        return Err(bad("listen", format!("{listen:?} is not an IP address")));
    }
    // 3x-ui's default tag, so other tools can find the inbound by it.
    let tag = Some(opt_str(body, "tag")?.filter(|t| !t.is_empty()).unwrap_or_else(|| format!("inbound-{port}")));
    if let Some(t) = &tag {
        if t == "api" || t.len() > 100 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("tag", format!("{t:?} is reserved or not a valid tag")));
        }
    }
    let mut settings = json_object("settings", body.get("settings"))?;
    let stream = json_object("streamSettings", body.get("streamSettings"))?;
    let sniffing = json_object("sniffing", body.get("sniffing"))?;
    if let Some(network) = stream.get("network") {
        if !network.is_string() {
            return Err(bad("streamSettings.network", "must be a string"));
        }
    }
    let clients = match settings.remove("clients") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(items)) if has_clients(&protocol) => items
            .iter()
            .enumerate()
            .map(|(i, c)| parse_client(&protocol, c, &format!("settings.clients[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(items)) if items.is_empty() => vec![],
        Some(_) => return Err(bad("settings.clients", format!("a {protocol} inbound takes no client list"))),
    };
    let mut seen = std::collections::HashSet::new();
    for c in &clients {
        if !seen.insert(c.email.to_lowercase()) {
            return Err(bad("settings.clients", format!("email {:?} appears twice", c.email)));
        }
    }
    if protocol == "vless" && !settings.contains_key("decryption") {
        settings.insert("decryption".into(), json!("none"));
    }
    Ok(InboundInput {
        inbound: NewInbound {
            tag,
            listen,
            port: port as u16,
            protocol,
            remark: opt_str(body, "remark")?.unwrap_or_default(),
            enable: opt_bool(body, "enable")?.unwrap_or(true),
            settings: Value::Object(settings).to_string(),
            stream_settings: Value::Object(stream).to_string(),
            sniffing: Value::Object(sniffing).to_string(),
        },
        clients,
    })
}

/// `security` of an inbound: `streamSettings.security`, `none` when unset.
pub fn security(stream_settings: &Value) -> String {
    stream_settings.get("security").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("none").to_string()
}

/// A client in the 3x-ui `settings.clients` shape.
pub fn client_settings_json(protocol: &str, c: &ClientRecord) -> Value {
    let mut v = json!({
        "email": c.email,
        "enable": c.enable,
        "expiryTime": c.expiry_ms,
        "totalGB": c.total_bytes,
        "limitIp": c.limit_ip,
        "subId": c.sub_id,
        "tgId": c.tg_id,
        "comment": c.comment,
        "reset": 0,
    });
    if uses_uuid(protocol) {
        v["id"] = json!(c.secret);
        if protocol == "vless" {
            v["flow"] = json!(c.flow);
        }
    } else {
        v["password"] = json!(c.secret);
    }
    v
}

/// The inbound's `settings` with its clients put back in.
pub fn settings_with_clients(inbound: &InboundRecord, clients: &[&ClientRecord]) -> Value {
    let mut settings = stored_object(&inbound.settings);
    if has_clients(&inbound.protocol) {
        settings["clients"] =
            Value::Array(clients.iter().map(|c| client_settings_json(&inbound.protocol, c)).collect());
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn total_gb_rule() {
        assert_eq!(total_bytes(0).unwrap(), 0);
        assert_eq!(total_bytes(100).unwrap(), 100 << 30, "small values are GB");
        assert_eq!(total_bytes(53_687_091_200).unwrap(), 53_687_091_200, "large values are bytes");
        assert_eq!(total_bytes(1_048_576).unwrap(), 1_048_576);
        assert!(total_bytes(-1).is_err());
    }

    #[test]
    fn inbound_bodies_accept_objects_and_json_text() {
        let text = parse_inbound(&obj(json!({
            "port": 8443, "protocol": "VLESS", "remark": "r",
            "settings": "{\"clients\":[{\"email\":\"a@x\",\"id\":\"5783a3e7-e373-51cd-8642-c83782b807c5\"}]}",
            "streamSettings": "{\"network\":\"tcp\",\"security\":\"none\"}",
        })))
        .unwrap();
        assert_eq!(text.inbound.protocol, "vless");
        assert_eq!(text.inbound.settings, r#"{"decryption":"none"}"#, "clients live in their own table");
        assert_eq!(text.clients.len(), 1);
        assert_eq!(text.clients[0].secret, "5783a3e7-e373-51cd-8642-c83782b807c5");
        let object =
            parse_inbound(&obj(json!({"port": 1, "protocol": "trojan", "settings": {"clients": [{"email": "b@x"}]}})))
                .unwrap();
        assert_eq!(object.clients[0].secret.len(), 32, "trojan passwords are generated");
    }

    #[test]
    fn bad_inbounds_name_the_field() {
        let field = |v: Value| parse_inbound(&obj(v)).unwrap_err().field;
        assert_eq!(field(json!({"protocol": "vless"})), "port");
        assert_eq!(field(json!({"port": 70000, "protocol": "vless"})), "port");
        assert_eq!(field(json!({"port": 1, "protocol": "wireguard-ish"})), "protocol");
        assert_eq!(field(json!({"port": 1, "protocol": "vless", "settings": "{nope"})), "settings");
        assert_eq!(field(json!({"port": 1, "protocol": "vless", "streamSettings": [1]})), "streamSettings");
        assert_eq!(
            field(json!({"port": 1, "protocol": "vless", "settings": {"clients": [{"email": "a", "id": "zzz"}]}})),
            "settings.clients[0].id"
        );
        assert_eq!(
            field(
                json!({"port": 1, "protocol": "vmess", "settings": {"clients": [{"email": "a", "flow": "xtls-rprx-vision"}]}})
            ),
            "settings.clients[0].flow"
        );
        assert_eq!(
            field(json!({"port": 1, "protocol": "vless", "settings": {"clients": [{"id": ""}]}})),
            "settings.clients[0].email"
        );
    }
}
