//! The core's config file, generated from desired state: Xray and v2ray 4.34 (one JSON shape,
//! per-flavor differences below) and sing-box (its own shape). Pure functions over the pushed
//! [`InboundSpec`]s and [`ClientSpec`]s, plus [`write_atomic`] to put the result on disk.
//!
//! What each flavor cannot serve is refused up front by [`check_support`] (per inbound) and
//! [`check_client`] (per client) with the missing feature named, so the driver can report it and
//! apply the rest; [`build`] / [`build_singbox`] refuse the same things with a [`ConfigError`]
//! rather than writing a config the core would reject or, worse, silently serve differently
//! (v2ray 4.34 accepts `"security": "reality"` and a Vision flow at load and then serves neither).
//!
//! Facts behind the rules (`../shared/COMPONENTS.md`, `../shared/specs/`), checked against the
//! real v2ray 4.34 (`v2ray -test`) and sing-box 1.14 (`sing-box check`) binaries:
//! - v2ray 4.34 has no gRPC, httpupgrade, xhttp or `raw` transport names, no REALITY, no XTLS or
//!   Vision, no shadowsocks-2022 and single-user shadowsocks only; VLESS needs
//!   `"decryption": "none"`; sniffing knows only `http` and `tls`; there is no `api.listen`, so
//!   the API is wired through a `dokodemo-door` inbound and a routing rule (Xray accepts the same).
//! - Xray removed the HTTP/2 (`h2`/`http`) and QUIC transports and legacy `xtls` security; a
//!   VLESS inbound flow is `""` or `xtls-rprx-vision`.
//! - The sing-box wheel is built without `with_grpc`, `with_utls` and `with_reality_server`
//!   (REALITY fails `check` for want of uTLS); a shadowsocks inbound without users or password
//!   fails `check`; the legacy inbound `sniff` field is gone (a route `sniff` action instead).
//! - No geoip/geosite files are installed, so nothing here references them.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use flotilla_protocol::proxy::{ClientSpec, CoreFlavor, InboundSpec};
use serde_json::{json, Map, Value};

/// Everything a core config is made of.
#[derive(Debug, Clone, Copy)]
pub struct CoreConfigInput<'a> {
    pub flavor: CoreFlavor,
    /// Loopback port of the core's gRPC API (Xray/v2ray; unused by sing-box).
    pub api_port: u16,
    /// Disabled inbounds are left out.
    pub inbounds: &'a [InboundSpec],
    /// Disabled clients and clients of inbounds not served are left out.
    pub clients: &'a [ClientSpec],
    /// `debug`, `info`, `warning` (`warn`), `error` or `none`.
    pub log_level: &'a str,
    /// Where Xray/v2ray write their access log (None: no access log).
    pub access_log: Option<&'a str>,
}

/// Something the core cannot serve, naming the missing feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub flavor: CoreFlavor,
    /// What is missing, e.g. `REALITY (security "reality")`.
    pub feature: String,
}

impl Unsupported {
    fn new(flavor: CoreFlavor, feature: impl Into<String>) -> Unsupported {
        Unsupported { flavor, feature: feature.into() }
    }
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cannot serve {}", core_label(self.flavor), self.feature)
    }
}

impl std::error::Error for Unsupported {}

fn core_label(flavor: CoreFlavor) -> &'static str {
    match flavor {
        CoreFlavor::Xray => "Xray",
        CoreFlavor::V2ray => "v2ray 4.34",
        CoreFlavor::SingBox => "sing-box (this build)",
    }
}

/// Why no config was built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} configs are not built by this function")]
    WrongFlavor(&'static str),
    #[error("unknown log level {0:?} (debug, info, warning, error, none)")]
    LogLevel(String),
    #[error("inbound {tag}: {source}")]
    Inbound {
        tag: String,
        #[source]
        source: Unsupported,
    },
    #[error("client {email:?} of inbound {tag}: {source}")]
    Client {
        tag: String,
        email: String,
        #[source]
        source: Unsupported,
    },
    #[error("two enabled inbounds are tagged {0:?}")]
    DuplicateTag(String),
    #[error("inbound tag {0:?} is reserved for the core's API")]
    ReservedTag(String),
    #[error("inbound {tag}: port {port} is the core's own API port")]
    PortClash { tag: String, port: u16 },
    #[error("client email {0:?} appears twice (cores count traffic per email, compared lower-cased)")]
    DuplicateEmail(String),
}

const KNOWN_PROTOCOLS: [&str; 7] = ["vless", "vmess", "trojan", "shadowsocks", "dokodemo-door", "socks", "http"];

/// Inbound tag of the API's dokodemo-door inbound (and the API's outbound tag).
/// Tag of the inbound and outbound that carry the agent's own API calls to the core.
pub const API_TAG: &str = "api";

/// Whether `flavor` can serve `inbound` as this module builds it. Also validates what every
/// flavor needs: a known protocol, `settings`/`streamSettings`/`sniffing` that parse as JSON
/// objects, a tag and a non-zero port.
pub fn check_support(flavor: CoreFlavor, inbound: &InboundSpec) -> Result<(), Unsupported> {
    let no = |feature: String| Err(Unsupported::new(flavor, feature));
    if inbound.port == 0 {
        return no("an inbound on port 0".into());
    }
    if inbound.tag.is_empty() {
        return no("an inbound without a tag".into());
    }
    let protocol = inbound.protocol.as_str();
    if !KNOWN_PROTOCOLS.contains(&protocol) {
        return no(format!("protocol {protocol:?}"));
    }
    let parsed = Parsed::new(inbound).map_err(|e| Unsupported::new(flavor, e))?;
    let network = parsed.network();
    let security = parsed.security();

    match (flavor, network) {
        (_, "tcp" | "raw" | "ws" | "websocket") => {}
        (CoreFlavor::Xray | CoreFlavor::V2ray, "kcp" | "mkcp") => {}
        (CoreFlavor::Xray, "grpc" | "httpupgrade" | "xhttp" | "splithttp") => {}
        (CoreFlavor::Xray, "h2" | "h3" | "http") => {
            return no(format!("the HTTP/2 transport (network {network:?}, removed from Xray; use xhttp)"))
        }
        (CoreFlavor::Xray, "quic") => return no("the QUIC transport (removed from Xray; use xhttp)".into()),
        (CoreFlavor::V2ray, "h2" | "http" | "quic" | "domainsocket" | "ds") => {}
        (CoreFlavor::V2ray, "grpc" | "gun") => return no("the gRPC transport (added in v2ray 4.36)".into()),
        (CoreFlavor::SingBox, "httpupgrade") => {}
        (CoreFlavor::SingBox, "grpc") => return no("the gRPC transport (built without with_grpc)".into()),
        (_, other) => return no(format!("the {other} transport")),
    }
    if flavor == CoreFlavor::SingBox && matches!(network, "tcp" | "raw") {
        let tcp = parsed.stream.get("tcpSettings").or_else(|| parsed.stream.get("rawSettings"));
        if let Some(kind) = tcp.and_then(|t| t.pointer("/header/type")).and_then(Value::as_str) {
            if kind != "none" {
                return no(format!("TCP header obfuscation (header type {kind:?})"));
            }
        }
        if tcp.and_then(|t| t.get("acceptProxyProtocol")).and_then(Value::as_bool) == Some(true) {
            return no("PROXY protocol on an inbound (acceptProxyProtocol)".into());
        }
    }

    match security {
        "" | "none" => {}
        "tls" => {
            if flavor == CoreFlavor::SingBox && singbox_tls(&parsed.stream).is_none() {
                return no("TLS without a certificate (certificateFile/keyFile or certificate/key)".into());
            }
        }
        "xtls" => return no("legacy XTLS (security \"xtls\"; use tls with the Vision flow)".into()),
        "reality" => match flavor {
            CoreFlavor::Xray => {}
            CoreFlavor::V2ray => return no("REALITY (security \"reality\")".into()),
            CoreFlavor::SingBox => {
                return no("REALITY (security \"reality\"; built without with_utls/with_reality_server)".into())
            }
        },
        other => return no(format!("security {other:?}")),
    }

    match protocol {
        "vless" => {
            let decryption = parsed.settings.get("decryption").and_then(Value::as_str).unwrap_or("none");
            if decryption != "none" && flavor != CoreFlavor::Xray {
                return no(format!("VLESS encryption (decryption {decryption:?})"));
            }
        }
        "shadowsocks" => check_shadowsocks(flavor, &parsed.settings)?,
        "dokodemo-door" if flavor == CoreFlavor::SingBox => {
            if parsed.settings.get("followRedirect").and_then(Value::as_bool) == Some(true) {
                return no("a transparent proxy (dokodemo-door followRedirect)".into());
            }
            if str_of(&parsed.settings, "address").is_empty() {
                return no("dokodemo-door without a target address".into());
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_shadowsocks(flavor: CoreFlavor, settings: &Map<String, Value>) -> Result<(), Unsupported> {
    let no = |feature: String| Err(Unsupported::new(flavor, feature));
    let method = str_of(settings, "method");
    if method.is_empty() {
        return no("shadowsocks without a method".into());
    }
    let classic = match flavor {
        CoreFlavor::V2ray => {
            &["aes-128-gcm", "aes-256-gcm", "chacha20-poly1305", "chacha20-ietf-poly1305", "none", "plain"][..]
        }
        CoreFlavor::Xray => &[
            "aes-128-gcm",
            "aes-256-gcm",
            "chacha20-poly1305",
            "chacha20-ietf-poly1305",
            "xchacha20-poly1305",
            "xchacha20-ietf-poly1305",
            "none",
            "plain",
        ][..],
        CoreFlavor::SingBox => &[
            "aes-128-gcm",
            "aes-192-gcm",
            "aes-256-gcm",
            "chacha20-poly1305",
            "chacha20-ietf-poly1305",
            "xchacha20-poly1305",
            "xchacha20-ietf-poly1305",
            "none",
        ][..],
    };
    if let Some(key_len) = ss2022_key_len(method) {
        if flavor == CoreFlavor::V2ray {
            return no(format!("shadowsocks-2022 (method {method:?})"));
        }
        let psk = str_of(settings, "password");
        if b64_decoded_len(psk) != Some(key_len) {
            return no(format!("a {method} inbound whose password is not a base64 {key_len}-byte key"));
        }
    } else if !classic.contains(&method) {
        return no(format!("shadowsocks method {method:?}"));
    }
    if flavor == CoreFlavor::V2ray && str_of(settings, "password").is_empty() {
        return no("single-user shadowsocks without settings.password".into());
    }
    Ok(())
}

/// Whether `flavor` can serve `client` on `inbound`: an email (cores count traffic per email), a
/// secret of the right shape, and a flow the core knows. Clients of a v2ray shadowsocks inbound
/// always pass: v2ray's shadowsocks is single-user and ignores them.
pub fn check_client(flavor: CoreFlavor, inbound: &InboundSpec, client: &ClientSpec) -> Result<(), Unsupported> {
    let no = |feature: String| Err(Unsupported::new(flavor, feature));
    if flavor == CoreFlavor::V2ray && inbound.protocol == "shadowsocks" {
        return Ok(());
    }
    if client.email.is_empty() {
        return no("a client without an email".into());
    }
    match inbound.protocol.as_str() {
        "vless" | "vmess" => {
            let ok = is_uuid(&client.secret)
                || (flavor == CoreFlavor::Xray && !client.secret.is_empty() && client.secret.len() <= 30);
            if !ok {
                return no("a client id that is not a UUID".into());
            }
        }
        "trojan" | "shadowsocks" => {
            if client.secret.is_empty() {
                return no("a client without a password".into());
            }
            if inbound.protocol == "shadowsocks" {
                let settings = parse_object(&inbound.settings, "settings").unwrap_or_default();
                let method = str_of(&settings, "method");
                if let Some(key_len) = ss2022_key_len(method) {
                    if b64_decoded_len(&client.secret) != Some(key_len) {
                        return no(format!("a {method} client whose password is not a base64 {key_len}-byte key"));
                    }
                }
            }
        }
        _ => {}
    }
    if inbound.protocol == "vless" {
        match (flavor, client.flow.as_str()) {
            (_, "") => {}
            (CoreFlavor::V2ray, flow) => return no(format!("the XTLS flow {flow:?}")),
            (_, "xtls-rprx-vision" | "xtls-rprx-vision-udp443") => {}
            (_, flow) => return no(format!("VLESS flow {flow:?}")),
        }
    }
    Ok(())
}

/// The full JSON config for Xray or v2ray 4.34 (sing-box: [`build_singbox`]).
pub fn build(input: &CoreConfigInput) -> Result<Value, ConfigError> {
    let flavor = input.flavor;
    if flavor == CoreFlavor::SingBox {
        return Err(ConfigError::WrongFlavor("sing-box"));
    }
    let loglevel = match input.log_level {
        "warn" => "warning",
        l @ ("debug" | "info" | "warning" | "error" | "none") => l,
        other => return Err(ConfigError::LogLevel(other.to_owned())),
    };
    let served = served(input, &[input.api_port])?;

    let mut inbounds = vec![json!({
        "tag": API_TAG, "listen": "127.0.0.1", "port": input.api_port,
        "protocol": "dokodemo-door", "settings": {"address": "127.0.0.1"}
    })];
    for (inbound, parsed, clients) in served {
        inbounds.push(xray_inbound(flavor, inbound, parsed, &clients));
    }

    let mut level0 = json!({"statsUserUplink": true, "statsUserDownlink": true});
    if flavor == CoreFlavor::Xray {
        level0["statsUserOnline"] = json!(true);
    }
    Ok(json!({
        "log": {"loglevel": loglevel, "access": input.access_log.unwrap_or("none")},
        "api": {"tag": API_TAG, "services": ["HandlerService", "StatsService", "LoggerService"]},
        "stats": {},
        "policy": {
            "levels": {"0": level0},
            "system": {
                "statsInboundUplink": true, "statsInboundDownlink": true,
                "statsOutboundUplink": true, "statsOutboundDownlink": true
            }
        },
        "inbounds": inbounds,
        "outbounds": [{"protocol": "freedom", "tag": "direct"}, {"protocol": "blackhole", "tag": "blocked"}],
        "routing": {"rules": [{"type": "field", "inboundTag": [API_TAG], "outboundTag": API_TAG}]}
    }))
}

/// The full JSON config for sing-box: vless/vmess/trojan/shadowsocks inbounds with their users
/// (`name` = email), socks/http/dokodemo-door (`direct`) inbounds, tcp/ws/httpupgrade
/// transports, TLS from certificate files or inline PEM, sniffing as a route `sniff` action, and
/// the clash API on `127.0.0.1:clash_api_port` (sing-box's only stats surface in this build).
///
/// A shadowsocks inbound with no enabled client is left out: sing-box refuses one without users,
/// and its top-level password would otherwise let anyone holding it in.
pub fn build_singbox(input: &CoreConfigInput, clash_api_port: u16) -> Result<Value, ConfigError> {
    if input.flavor != CoreFlavor::SingBox {
        return Err(ConfigError::WrongFlavor(input.flavor.as_str()));
    }
    let log = match input.log_level {
        "none" => json!({"disabled": true}),
        "warning" | "warn" => json!({"level": "warn"}),
        l @ ("debug" | "info" | "error") => json!({"level": l}),
        other => return Err(ConfigError::LogLevel(other.to_owned())),
    };
    let served = served(input, &[clash_api_port])?;

    let mut inbounds = Vec::new();
    let mut rules = Vec::new();
    for (inbound, parsed, clients) in served {
        let Some(ib) = singbox_inbound(inbound, &parsed, &clients) else { continue };
        if parsed.sniffing.get("enabled").and_then(Value::as_bool) == Some(true) {
            rules.push(json!({"inbound": [inbound.tag], "action": "sniff"}));
        }
        inbounds.push(ib);
    }
    Ok(json!({
        "log": log,
        "inbounds": inbounds,
        "outbounds": [{"type": "direct", "tag": "direct"}],
        "route": {"rules": rules, "final": "direct"},
        "experimental": {"clash_api": {"external_controller": format!("127.0.0.1:{clash_api_port}"), "secret": ""}}
    }))
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory (mode 0600), fsync,
/// rename over `path`, fsync the directory. A crash leaves either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()
}

/// The inbound's JSON fields, parsed.
#[derive(Debug, Clone)]
struct Parsed {
    settings: Map<String, Value>,
    stream: Map<String, Value>,
    sniffing: Map<String, Value>,
}

impl Parsed {
    fn new(inbound: &InboundSpec) -> Result<Parsed, String> {
        Ok(Parsed {
            settings: parse_object(&inbound.settings, "settings")?,
            stream: parse_object(&inbound.stream_settings, "streamSettings")?,
            sniffing: parse_object(&inbound.sniffing, "sniffing")?,
        })
    }

    fn network(&self) -> &str {
        match str_of(&self.stream, "network") {
            "" => "tcp",
            n => n,
        }
    }

    fn security(&self) -> &str {
        str_of(&self.stream, "security")
    }
}

/// `text` as a JSON object (`""` counts as `{}`); the error names `what`.
fn parse_object(text: &str, what: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!("{what} that are not a JSON object")),
        Err(e) => Err(format!("{what} that are not valid JSON ({e})")),
    }
}

fn str_of<'m>(m: &'m Map<String, Value>, key: &str) -> &'m str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

/// An enabled inbound, validated, with the enabled clients placed on it.
type Served<'a> = (&'a InboundSpec, Parsed, Vec<&'a ClientSpec>);

/// The enabled inbounds, each validated and with its enabled clients, in input order.
fn served<'a>(input: &CoreConfigInput<'a>, own_ports: &[u16]) -> Result<Vec<Served<'a>>, ConfigError> {
    let flavor = input.flavor;
    let mut tags = HashSet::new();
    let mut out = Vec::new();
    for inbound in input.inbounds.iter().filter(|i| i.enable) {
        let tag = &inbound.tag;
        if flavor != CoreFlavor::SingBox && tag == API_TAG {
            return Err(ConfigError::ReservedTag(tag.clone()));
        }
        if !tags.insert(tag.as_str()) {
            return Err(ConfigError::DuplicateTag(tag.clone()));
        }
        if own_ports.contains(&inbound.port) {
            return Err(ConfigError::PortClash { tag: tag.clone(), port: inbound.port });
        }
        check_support(flavor, inbound).map_err(|source| ConfigError::Inbound { tag: tag.clone(), source })?;
        let parsed = Parsed::new(inbound)
            .map_err(|e| ConfigError::Inbound { tag: tag.clone(), source: Unsupported::new(flavor, e) })?;
        out.push((inbound, parsed, Vec::new()));
    }
    let mut emails = HashSet::new();
    for client in input.clients.iter().filter(|c| c.enable) {
        let Some((inbound, _, clients)) = out.iter_mut().find(|(i, _, _)| i.tag == client.inbound_tag) else {
            continue;
        };
        if !carries_users(flavor, &inbound.protocol) {
            continue;
        }
        check_client(flavor, inbound, client).map_err(|source| ConfigError::Client {
            tag: inbound.tag.clone(),
            email: client.email.clone(),
            source,
        })?;
        if !emails.insert(client.email.to_lowercase()) {
            return Err(ConfigError::DuplicateEmail(client.email.clone()));
        }
        clients.push(client);
    }
    Ok(out)
}

/// Whether the inbound's users come from the clients (rather than its own settings).
fn carries_users(flavor: CoreFlavor, protocol: &str) -> bool {
    match protocol {
        "vless" | "vmess" | "trojan" => true,
        "shadowsocks" => flavor != CoreFlavor::V2ray,
        _ => false,
    }
}

/// One Xray/v2ray inbound.
fn xray_inbound(flavor: CoreFlavor, inbound: &InboundSpec, parsed: Parsed, clients: &[&ClientSpec]) -> Value {
    let Parsed { mut settings, mut stream, mut sniffing } = parsed;
    let v2ray = flavor == CoreFlavor::V2ray;
    let protocol = inbound.protocol.as_str();

    if carries_users(flavor, protocol) || protocol == "shadowsocks" {
        settings.remove("clients");
    }
    let method = str_of(&settings, "method").to_owned();
    let users: Vec<Value> = match protocol {
        "vless" => {
            settings.entry("decryption").or_insert_with(|| json!("none"));
            clients
                .iter()
                .map(|c| {
                    let mut u = json!({"id": c.secret, "email": c.email, "level": 0});
                    if !c.flow.is_empty() {
                        // 3x-ui's client-side variant; the server only knows the base flow.
                        let flow = if c.flow == "xtls-rprx-vision-udp443" { "xtls-rprx-vision" } else { &c.flow };
                        u["flow"] = json!(flow);
                    }
                    u
                })
                .collect()
        }
        "vmess" => clients
            .iter()
            .map(|c| {
                let mut u = json!({"id": c.secret, "email": c.email, "level": 0});
                if v2ray {
                    u["alterId"] = json!(0);
                }
                u
            })
            .collect(),
        "trojan" => clients.iter().map(|c| json!({"password": c.secret, "email": c.email, "level": 0})).collect(),
        "shadowsocks" if !v2ray => clients
            .iter()
            .map(|c| {
                let mut u = json!({"password": c.secret, "email": c.email, "level": 0});
                // 2022 users carry only their key; classic users carry their cipher.
                if ss2022_key_len(&method).is_none() {
                    u["method"] = json!(method);
                }
                u
            })
            .collect(),
        _ => Vec::new(),
    };
    if carries_users(flavor, protocol) {
        settings.insert("clients".into(), Value::Array(users));
    }

    // 3x-ui-only keys: link hints (fingerprint, allowInsecure, publicKey, …) and external proxies.
    stream.remove("externalProxy");
    for key in ["tlsSettings", "realitySettings"] {
        if let Some(Value::Object(s)) = stream.get_mut(key) {
            s.remove("settings");
        }
    }
    if v2ray {
        // v2ray 4.34 knows `raw` only by its old name.
        if str_of(&stream, "network") == "raw" {
            stream.insert("network".into(), json!("tcp"));
        }
        if let Some(raw) = stream.remove("rawSettings") {
            stream.entry("tcpSettings").or_insert(raw);
        }
        // v2ray 4.34 sniffs only http and tls; `quic`/`fakedns` fail the whole config.
        if let Some(Value::Array(d)) = sniffing.get_mut("destOverride") {
            d.retain(|p| matches!(p.as_str(), Some("http" | "tls")));
            if d.is_empty() {
                sniffing.clear();
            }
        }
    }

    let mut ib = Map::new();
    ib.insert("tag".into(), json!(inbound.tag));
    if !inbound.listen.is_empty() {
        ib.insert("listen".into(), json!(inbound.listen));
    }
    ib.insert("port".into(), json!(inbound.port));
    ib.insert("protocol".into(), json!(protocol));
    ib.insert("settings".into(), Value::Object(settings));
    if !stream.is_empty() {
        ib.insert("streamSettings".into(), Value::Object(stream));
    }
    if !sniffing.is_empty() {
        ib.insert("sniffing".into(), Value::Object(sniffing));
    }
    Value::Object(ib)
}

/// One sing-box inbound, `None` when it would serve nobody (shadowsocks without users).
fn singbox_inbound(inbound: &InboundSpec, parsed: &Parsed, clients: &[&ClientSpec]) -> Option<Value> {
    let settings = &parsed.settings;
    let listen = if inbound.listen.is_empty() { "::" } else { inbound.listen.as_str() };
    let mut ib = json!({"tag": inbound.tag, "listen": listen, "listen_port": inbound.port});
    match inbound.protocol.as_str() {
        "vless" => {
            ib["type"] = json!("vless");
            let users: Vec<Value> = clients
                .iter()
                .map(|c| {
                    let mut u = json!({"name": c.email, "uuid": c.secret});
                    if !c.flow.is_empty() {
                        u["flow"] = json!("xtls-rprx-vision");
                    }
                    u
                })
                .collect();
            ib["users"] = json!(users);
        }
        "vmess" => {
            ib["type"] = json!("vmess");
            let users: Vec<Value> =
                clients.iter().map(|c| json!({"name": c.email, "uuid": c.secret, "alterId": 0})).collect();
            ib["users"] = json!(users);
        }
        "trojan" => {
            ib["type"] = json!("trojan");
            let users: Vec<Value> = clients.iter().map(|c| json!({"name": c.email, "password": c.secret})).collect();
            ib["users"] = json!(users);
        }
        "shadowsocks" => {
            if clients.is_empty() {
                return None;
            }
            let method = match str_of(settings, "method") {
                "chacha20-poly1305" => "chacha20-ietf-poly1305",
                "xchacha20-poly1305" => "xchacha20-ietf-poly1305",
                m => m,
            };
            ib["type"] = json!("shadowsocks");
            ib["method"] = json!(method);
            if ss2022_key_len(method).is_some() {
                ib["password"] = json!(str_of(settings, "password"));
            }
            let users: Vec<Value> = clients.iter().map(|c| json!({"name": c.email, "password": c.secret})).collect();
            ib["users"] = json!(users);
            if let Some(n) = singbox_network(settings) {
                ib["network"] = json!(n);
            }
        }
        "socks" | "http" => {
            ib["type"] = json!(inbound.protocol);
            if str_of(settings, "auth") == "password" || inbound.protocol == "http" {
                let users: Vec<Value> = settings
                    .get("accounts")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter().map(|acc| json!({"username": acc.get("user"), "password": acc.get("pass")})).collect()
                    })
                    .unwrap_or_default();
                if !users.is_empty() {
                    ib["users"] = json!(users);
                }
            }
        }
        "dokodemo-door" => {
            ib["type"] = json!("direct");
            ib["override_address"] = json!(str_of(settings, "address"));
            if let Some(port) = settings.get("port").and_then(Value::as_u64).filter(|p| *p > 0) {
                ib["override_port"] = json!(port);
            }
            if let Some(n) = singbox_network(settings) {
                ib["network"] = json!(n);
            }
        }
        _ => return None,
    }
    if matches!(inbound.protocol.as_str(), "vless" | "vmess" | "trojan") {
        if let Some(t) = singbox_transport(parsed) {
            ib["transport"] = t;
        }
    }
    if parsed.security() == "tls" {
        if let Some(tls) = singbox_tls(&parsed.stream) {
            ib["tls"] = tls;
        }
    }
    Some(ib)
}

/// sing-box `network` from an Xray `network` list: only a single `tcp` or `udp` is written.
fn singbox_network(settings: &Map<String, Value>) -> Option<&'static str> {
    let n = str_of(settings, "network").replace(' ', "");
    match n.as_str() {
        "tcp" => Some("tcp"),
        "udp" => Some("udp"),
        _ => None,
    }
}

fn singbox_transport(parsed: &Parsed) -> Option<Value> {
    let (kind, key) = match parsed.network() {
        "ws" | "websocket" => ("ws", "wsSettings"),
        "httpupgrade" => ("httpupgrade", "httpupgradeSettings"),
        _ => return None,
    };
    let s = parsed.stream.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
    let mut t = json!({"type": kind});
    let mut path = str_of(&s, "path");
    // Xray clients put WebSocket early data in the path (`/ws?ed=2048`) and send it in
    // Sec-WebSocket-Protocol; sing-box matches the bare path and needs the early data declared.
    if let Some((bare, query)) = path.split_once('?') {
        let ed = query.split('&').find_map(|kv| kv.strip_prefix("ed=")).and_then(|n| n.parse::<u32>().ok());
        if let (Some(ed), "ws") = (ed, kind) {
            path = bare;
            t["max_early_data"] = json!(ed);
            t["early_data_header_name"] = json!("Sec-WebSocket-Protocol");
        }
    }
    if !path.is_empty() {
        t["path"] = json!(path);
    }
    let mut host = str_of(&s, "host").to_owned();
    if host.is_empty() {
        if let Some(Value::Object(h)) = s.get("headers") {
            if let Some((_, v)) = h.iter().find(|(k, _)| k.eq_ignore_ascii_case("host")) {
                host = v.as_str().unwrap_or("").to_owned();
            }
        }
    }
    if !host.is_empty() {
        if kind == "ws" {
            t["headers"] = json!({"Host": host});
        } else {
            t["host"] = json!(host);
        }
    }
    Some(t)
}

/// sing-box `tls` from Xray `tlsSettings`; `None` without a usable certificate.
fn singbox_tls(stream: &Map<String, Value>) -> Option<Value> {
    let tls = stream.get("tlsSettings").and_then(Value::as_object).cloned().unwrap_or_default();
    let cert = tls.get("certificates").and_then(Value::as_array).and_then(|c| c.first()).and_then(Value::as_object)?;
    let mut out = json!({"enabled": true});
    let (file, key_file) = (str_of(cert, "certificateFile"), str_of(cert, "keyFile"));
    if !file.is_empty() && !key_file.is_empty() {
        out["certificate_path"] = json!(file);
        out["key_path"] = json!(key_file);
    } else {
        let lines = |k: &str| -> Option<Value> {
            match cert.get(k) {
                Some(Value::Array(a)) if !a.is_empty() => Some(Value::Array(a.clone())),
                Some(Value::String(s)) if !s.is_empty() => Some(json!(s.lines().collect::<Vec<_>>())),
                _ => None,
            }
        };
        out["certificate"] = lines("certificate")?;
        out["key"] = lines("key")?;
    }
    let sni = str_of(&tls, "serverName");
    if !sni.is_empty() {
        out["server_name"] = json!(sni);
    }
    if let Some(Value::Array(alpn)) = tls.get("alpn") {
        if !alpn.is_empty() {
            out["alpn"] = json!(alpn);
        }
    }
    for (from, to) in [("minVersion", "min_version"), ("maxVersion", "max_version")] {
        let v = str_of(&tls, from);
        if !v.is_empty() {
            out[to] = json!(v);
        }
    }
    Some(out)
}

/// Key length of a shadowsocks-2022 method, `None` for other methods.
fn ss2022_key_len(method: &str) -> Option<usize> {
    match method {
        "2022-blake3-aes-128-gcm" => Some(16),
        "2022-blake3-aes-256-gcm" | "2022-blake3-chacha20-poly1305" => Some(32),
        _ => None,
    }
}

/// Decoded length of standard base64 (padding optional), `None` if it is not base64.
fn b64_decoded_len(s: &str) -> Option<usize> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/') {
        return None;
    }
    if s.len() != body.len() && !s.len().is_multiple_of(4) {
        return None;
    }
    Some(body.len() * 3 / 4)
}

/// Canonical UUID text (`8-4-4-4-12` hex) or its 32-digit form.
fn is_uuid(s: &str) -> bool {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let groups: Vec<usize> = s.split('-').map(str::len).collect();
    hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) && (groups == [32] || groups == [8, 4, 4, 4, 12])
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "a3482e88-686a-4a58-8126-99c9df64b7bf";
    const U2: &str = "0b7c6f0e-1d2a-4c39-9e8f-5a6b7c8d9e0f";
    const U3: &str = "5d1c2b3a-4f5e-4a7b-8c9d-0e1f2a3b4c5d";

    fn inbound(tag: &str, protocol: &str, port: u16, settings: Value, stream: Value) -> InboundSpec {
        InboundSpec {
            tag: tag.into(),
            listen: String::new(),
            port,
            protocol: protocol.into(),
            settings: settings.to_string(),
            stream_settings: stream.to_string(),
            sniffing: "{}".into(),
            enable: true,
        }
    }

    fn client(tag: &str, email: &str, secret: &str) -> ClientSpec {
        ClientSpec {
            inbound_tag: tag.into(),
            email: email.into(),
            secret: secret.into(),
            flow: String::new(),
            enable: true,
            expiry_ms: 0,
            total_bytes: 0,
            reset_generation: 0,
        }
    }

    fn input<'a>(flavor: CoreFlavor, inbounds: &'a [InboundSpec], clients: &'a [ClientSpec]) -> CoreConfigInput<'a> {
        CoreConfigInput { flavor, api_port: 10085, inbounds, clients, log_level: "warning", access_log: None }
    }

    /// vmess + vless + trojan (plain) + shadowsocks, with clients, some of them not to be placed.
    fn fleet() -> (Vec<InboundSpec>, Vec<ClientSpec>) {
        let mut vless = inbound("in-vless", "vless", 20001, json!({"fallbacks": [{"dest": 80}]}), json!({}));
        vless.sniffing = json!({"enabled": true, "destOverride": ["http", "tls", "quic", "fakedns"]}).to_string();
        let mut off = inbound("in-off", "vmess", 20005, json!({}), json!({}));
        off.enable = false;
        let inbounds = vec![
            inbound("in-vmess", "vmess", 20000, json!({}), json!({"network": "ws", "wsSettings": {"path": "/v"}})),
            vless,
            inbound("in-trojan", "trojan", 20002, json!({}), json!({"network": "tcp", "security": "none"})),
            inbound(
                "in-ss",
                "shadowsocks",
                20003,
                json!({"method": "aes-128-gcm", "password": "srv", "network": "tcp,udp"}),
                json!({}),
            ),
            off,
        ];
        let mut disabled = client("in-vmess", "disabled@x", U3);
        disabled.enable = false;
        let clients = vec![
            client("in-vmess", "a@x", U1),
            client("in-vless", "b@x", U2),
            client("in-trojan", "c@x", "trojan-pw"),
            client("in-ss", "d@x", "ss-user-pw"),
            client("in-off", "e@x", U3),
            disabled,
        ];
        (inbounds, clients)
    }

    fn inbound_json<'v>(config: &'v Value, tag: &str) -> &'v Value {
        config["inbounds"].as_array().unwrap().iter().find(|i| i["tag"] == tag).unwrap_or_else(|| panic!("{tag}"))
    }

    #[test]
    fn v2ray_config_shape() {
        let (inbounds, clients) = fleet();
        let c = build(&input(CoreFlavor::V2ray, &inbounds, &clients)).unwrap();
        assert_eq!(c["log"], json!({"loglevel": "warning", "access": "none"}));
        assert_eq!(c["api"], json!({"tag": "api", "services": ["HandlerService", "StatsService", "LoggerService"]}));
        assert_eq!(c["stats"], json!({}));
        assert_eq!(c["policy"]["levels"]["0"], json!({"statsUserUplink": true, "statsUserDownlink": true}));
        assert_eq!(
            c["policy"]["system"],
            json!({"statsInboundUplink": true, "statsInboundDownlink": true,
                   "statsOutboundUplink": true, "statsOutboundDownlink": true})
        );
        assert_eq!(
            c["inbounds"][0],
            json!({"tag": "api", "listen": "127.0.0.1", "port": 10085, "protocol": "dokodemo-door",
                   "settings": {"address": "127.0.0.1"}})
        );
        assert_eq!(c["routing"], json!({"rules": [{"type": "field", "inboundTag": ["api"], "outboundTag": "api"}]}));
        assert_eq!(
            c["outbounds"],
            json!([{"protocol": "freedom", "tag": "direct"}, {"protocol": "blackhole", "tag": "blocked"}])
        );
        // The disabled inbound is not there; the order is the input's.
        let tags: Vec<&str> = c["inbounds"].as_array().unwrap().iter().map(|i| i["tag"].as_str().unwrap()).collect();
        assert_eq!(tags, ["api", "in-vmess", "in-vless", "in-trojan", "in-ss"]);

        assert_eq!(
            inbound_json(&c, "in-vmess"),
            &json!({"tag": "in-vmess", "port": 20000, "protocol": "vmess",
                    "settings": {"clients": [{"id": U1, "email": "a@x", "alterId": 0, "level": 0}]},
                    "streamSettings": {"network": "ws", "wsSettings": {"path": "/v"}}})
        );
        assert_eq!(
            inbound_json(&c, "in-vless"),
            &json!({"tag": "in-vless", "port": 20001, "protocol": "vless",
                    "settings": {"decryption": "none", "fallbacks": [{"dest": 80}],
                                 "clients": [{"id": U2, "email": "b@x", "level": 0}]},
                    "sniffing": {"enabled": true, "destOverride": ["http", "tls"]}})
        );
        assert_eq!(
            inbound_json(&c, "in-trojan")["settings"],
            json!({"clients": [{"password": "trojan-pw", "email": "c@x", "level": 0}]})
        );
        // v2ray's shadowsocks is single-user: settings as given, clients ignored.
        assert_eq!(
            inbound_json(&c, "in-ss")["settings"],
            json!({"method": "aes-128-gcm", "password": "srv", "network": "tcp,udp"})
        );
        let text = c.to_string();
        for absent in ["disabled@x", "e@x", "geoip", "geosite", "statsUserOnline"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
    }

    #[test]
    fn xray_config_differences() {
        let (inbounds, mut clients) = fleet();
        clients[1].flow = "xtls-rprx-vision-udp443".into();
        let c = build(&input(CoreFlavor::Xray, &inbounds, &clients)).unwrap();
        assert_eq!(c["policy"]["levels"]["0"]["statsUserOnline"], json!(true));
        assert_eq!(
            inbound_json(&c, "in-vmess")["settings"]["clients"],
            json!([{"id": U1, "email": "a@x", "level": 0}])
        );
        assert_eq!(
            inbound_json(&c, "in-vless")["settings"]["clients"],
            json!([{"id": U2, "email": "b@x", "level": 0, "flow": "xtls-rprx-vision"}])
        );
        // Xray sniffing is passed through untouched.
        assert_eq!(inbound_json(&c, "in-vless")["sniffing"]["destOverride"], json!(["http", "tls", "quic", "fakedns"]));
        // Multi-user shadowsocks: classic users carry the cipher.
        assert_eq!(
            inbound_json(&c, "in-ss")["settings"]["clients"],
            json!([{"password": "ss-user-pw", "method": "aes-128-gcm", "email": "d@x", "level": 0}])
        );
    }

    #[test]
    fn xray_shadowsocks_2022_users_carry_only_their_key() {
        let psk = "AAAAAAAAAAAAAAAAAAAAAA==";
        let upsk = "AQEBAQEBAQEBAQEBAQEBAQ==";
        let inbounds = [inbound(
            "ss22",
            "shadowsocks",
            20010,
            json!({"method": "2022-blake3-aes-128-gcm", "password": psk}),
            json!({}),
        )];
        let clients = [client("ss22", "a@x", upsk)];
        let c = build(&input(CoreFlavor::Xray, &inbounds, &clients)).unwrap();
        assert_eq!(
            inbound_json(&c, "ss22")["settings"],
            json!({"method": "2022-blake3-aes-128-gcm", "password": psk,
                   "clients": [{"password": upsk, "email": "a@x", "level": 0}]})
        );
        // A user key of the wrong size is refused by name.
        let bad = [client("ss22", "a@x", "short")];
        let err = build(&input(CoreFlavor::Xray, &inbounds, &bad)).unwrap_err();
        assert!(matches!(err, ConfigError::Client { .. }), "{err}");
        assert_eq!(
            check_support(CoreFlavor::V2ray, &inbounds[0]).unwrap_err().to_string(),
            "v2ray 4.34 cannot serve shadowsocks-2022 (method \"2022-blake3-aes-128-gcm\")"
        );
    }

    #[test]
    fn three_x_ui_only_keys_are_stripped() {
        let stream = json!({
            "network": "tcp", "security": "tls", "externalProxy": [{"dest": "cdn.example", "port": 443}],
            "tlsSettings": {"serverName": "x.example", "alpn": ["h2"],
                            "certificates": [{"certificateFile": "/c.pem", "keyFile": "/k.pem"}],
                            "settings": {"allowInsecure": false, "fingerprint": "chrome"}}
        });
        let settings = json!({"clients": [{"id": U1, "email": "old@x", "totalGB": 0, "expiryTime": 0, "enable": true,
                                           "tgId": "", "subId": "s", "limitIp": 0, "reset": 0, "comment": ""}],
                              "decryption": "none", "fallbacks": []});
        let inbounds = [inbound("in", "vless", 443, settings, stream)];
        let clients = [client("in", "a@x", U1)];
        for flavor in [CoreFlavor::Xray, CoreFlavor::V2ray] {
            let c = build(&input(flavor, &inbounds, &clients)).unwrap();
            let ib = inbound_json(&c, "in");
            assert_eq!(
                ib["settings"],
                json!({"decryption": "none", "fallbacks": [], "clients": [{"id": U1, "email": "a@x", "level": 0}]})
            );
            assert_eq!(
                ib["streamSettings"],
                json!({"network": "tcp", "security": "tls",
                       "tlsSettings": {"serverName": "x.example", "alpn": ["h2"],
                                       "certificates": [{"certificateFile": "/c.pem", "keyFile": "/k.pem"}]}})
            );
        }
    }

    #[test]
    fn v2ray_renames_raw_to_tcp() {
        let inbounds = [inbound(
            "in",
            "vmess",
            443,
            json!({}),
            json!({"network": "raw", "rawSettings": {"header": {"type": "none"}}}),
        )];
        let c = build(&input(CoreFlavor::V2ray, &inbounds, &[])).unwrap();
        assert_eq!(
            inbound_json(&c, "in")["streamSettings"],
            json!({"network": "tcp", "tcpSettings": {"header": {"type": "none"}}})
        );
    }

    #[test]
    fn check_support_names_what_v2ray_lacks() {
        let cases = [
            ("vless", json!({"network": "tcp", "security": "reality"}), "REALITY"),
            ("vless", json!({"security": "xtls"}), "legacy XTLS"),
            ("vmess", json!({"network": "grpc"}), "gRPC transport"),
            ("vmess", json!({"network": "httpupgrade"}), "httpupgrade transport"),
            ("vmess", json!({"network": "xhttp"}), "xhttp transport"),
            ("vmess", json!({"network": "splithttp"}), "splithttp transport"),
        ];
        for (protocol, stream, feature) in cases {
            let ib = inbound("in", protocol, 443, json!({}), stream.clone());
            let err = check_support(CoreFlavor::V2ray, &ib).unwrap_err();
            assert!(err.to_string().starts_with("v2ray 4.34 cannot serve "), "{err}");
            assert!(err.feature.contains(feature), "{stream}: {err}");
        }
        assert_eq!(
            check_support(CoreFlavor::V2ray, &inbound("in", "vless", 443, json!({}), json!({"security": "reality"})))
                .unwrap_err()
                .to_string(),
            "v2ray 4.34 cannot serve REALITY (security \"reality\")"
        );
        let hysteria = inbound("in", "hysteria", 443, json!({}), json!({}));
        assert_eq!(check_support(CoreFlavor::V2ray, &hysteria).unwrap_err().feature, "protocol \"hysteria\"");
        // Xray serves these.
        for stream in [json!({"security": "reality"}), json!({"network": "grpc"}), json!({"network": "xhttp"})] {
            check_support(CoreFlavor::Xray, &inbound("in", "vless", 443, json!({}), stream)).unwrap();
        }
        // … but not what it removed.
        for network in ["h2", "http", "quic"] {
            let ib = inbound("in", "vless", 443, json!({}), json!({"network": network}));
            assert!(check_support(CoreFlavor::Xray, &ib).unwrap_err().feature.contains("removed from Xray"));
        }
    }

    #[test]
    fn check_support_validates_the_spec() {
        let ok = inbound("in", "vmess", 443, json!({}), json!({}));
        check_support(CoreFlavor::V2ray, &ok).unwrap();
        let mut port0 = ok.clone();
        port0.port = 0;
        assert!(check_support(CoreFlavor::Xray, &port0).unwrap_err().feature.contains("port 0"));
        let mut bad_json = ok.clone();
        bad_json.settings = "{not json".into();
        assert!(check_support(CoreFlavor::Xray, &bad_json)
            .unwrap_err()
            .feature
            .contains("settings that are not valid JSON"));
        let mut not_object = ok.clone();
        not_object.stream_settings = "[1]".into();
        assert!(check_support(CoreFlavor::Xray, &not_object).unwrap_err().feature.contains("streamSettings"));
        let mut sniff = ok.clone();
        sniff.sniffing = "true".into();
        assert!(check_support(CoreFlavor::Xray, &sniff).unwrap_err().feature.contains("sniffing"));
        let mut empty = ok.clone();
        empty.settings = String::new();
        check_support(CoreFlavor::Xray, &empty).unwrap();
        let unknown = inbound("in", "wireguard", 443, json!({}), json!({}));
        assert!(check_support(CoreFlavor::Xray, &unknown).is_err());
        let ss_no_password = inbound("in", "shadowsocks", 443, json!({"method": "aes-128-gcm"}), json!({}));
        assert!(check_support(CoreFlavor::V2ray, &ss_no_password).is_err());
        check_support(CoreFlavor::Xray, &ss_no_password).unwrap();
        let ss_old = inbound("in", "shadowsocks", 443, json!({"method": "aes-256-cfb", "password": "p"}), json!({}));
        assert!(check_support(CoreFlavor::V2ray, &ss_old).unwrap_err().feature.contains("aes-256-cfb"));
    }

    #[test]
    fn check_client_refuses_what_the_core_cannot_hold() {
        let vless = inbound("in", "vless", 443, json!({}), json!({}));
        let mut vision = client("in", "a@x", U1);
        vision.flow = "xtls-rprx-vision".into();
        assert_eq!(
            check_client(CoreFlavor::V2ray, &vless, &vision).unwrap_err().to_string(),
            "v2ray 4.34 cannot serve the XTLS flow \"xtls-rprx-vision\""
        );
        check_client(CoreFlavor::Xray, &vless, &vision).unwrap();
        check_client(CoreFlavor::SingBox, &vless, &vision).unwrap();
        vision.flow = "xtls-rprx-direct".into();
        assert!(check_client(CoreFlavor::Xray, &vless, &vision).is_err());

        assert!(check_client(CoreFlavor::V2ray, &vless, &client("in", "a@x", "not-a-uuid-at-all")).is_err());
        check_client(CoreFlavor::Xray, &vless, &client("in", "a@x", "short-string-id")).unwrap();
        assert!(check_client(CoreFlavor::Xray, &vless, &client("in", "", U1)).is_err());
        let trojan = inbound("in", "trojan", 443, json!({}), json!({}));
        assert!(check_client(CoreFlavor::Xray, &trojan, &client("in", "a@x", "")).is_err());
        // v2ray shadowsocks ignores its clients, so they never block a config.
        let ss = inbound("in", "shadowsocks", 443, json!({"method": "aes-128-gcm", "password": "p"}), json!({}));
        check_client(CoreFlavor::V2ray, &ss, &client("in", "", "")).unwrap();
    }

    #[test]
    fn build_refuses_inconsistent_state() {
        let (inbounds, clients) = fleet();
        let err = |inbounds: &[InboundSpec], clients: &[ClientSpec]| {
            build(&input(CoreFlavor::V2ray, inbounds, clients)).unwrap_err()
        };

        let mut dup_tag = inbounds.clone();
        dup_tag[1].tag = "in-vmess".into();
        assert_eq!(err(&dup_tag, &clients), ConfigError::DuplicateTag("in-vmess".into()));

        let mut reserved = inbounds.clone();
        reserved[0].tag = "api".into();
        assert_eq!(err(&reserved, &[]), ConfigError::ReservedTag("api".into()));

        let mut clash = inbounds.clone();
        clash[0].port = 10085;
        assert!(matches!(err(&clash, &clients), ConfigError::PortClash { port: 10085, .. }));

        let mut dup_email = clients.clone();
        dup_email[1].email = "A@X".into();
        assert_eq!(err(&inbounds, &dup_email), ConfigError::DuplicateEmail("A@X".into()));

        let mut reality = inbounds.clone();
        reality[1].stream_settings = json!({"security": "reality"}).to_string();
        let e = err(&reality, &clients);
        assert_eq!(e.to_string(), "inbound in-vless: v2ray 4.34 cannot serve REALITY (security \"reality\")");

        let mut vision = clients.clone();
        vision[1].flow = "xtls-rprx-vision".into();
        assert!(matches!(err(&inbounds, &vision), ConfigError::Client { .. }));

        // A disabled inbound is not validated at all: it is not configured.
        let mut off = inbounds.clone();
        off[4].stream_settings = json!({"security": "reality"}).to_string();
        build(&input(CoreFlavor::V2ray, &off, &clients)).unwrap();

        assert_eq!(
            build(&input(CoreFlavor::SingBox, &inbounds, &clients)).unwrap_err(),
            ConfigError::WrongFlavor("sing-box")
        );
        let mut loud = input(CoreFlavor::Xray, &inbounds, &clients);
        loud.log_level = "loud";
        assert!(matches!(build(&loud).unwrap_err(), ConfigError::LogLevel(_)));
    }

    fn singbox_fleet(dir: &Path) -> (Vec<InboundSpec>, Vec<ClientSpec>) {
        let (cert, key) = self_signed(dir);
        let (mut inbounds, clients) = fleet();
        inbounds.retain(|i| i.tag != "in-off");
        inbounds.push(inbound(
            "in-trojan-tls",
            "trojan",
            20004,
            json!({}),
            json!({"network": "tcp", "security": "tls",
                   "tlsSettings": {"serverName": "localhost", "alpn": ["h2", "http/1.1"],
                                   "certificates": [{"certificateFile": cert, "keyFile": key}],
                                   "settings": {"fingerprint": "chrome"}}}),
        ));
        inbounds.push(inbound("in-ss-empty", "shadowsocks", 20006, json!({"method": "aes-256-gcm"}), json!({})));
        inbounds.push(inbound(
            "in-socks",
            "socks",
            20007,
            json!({"auth": "password", "accounts": [{"user": "u", "pass": "p"}], "udp": true}),
            json!({}),
        ));
        inbounds.push(inbound(
            "in-doko",
            "dokodemo-door",
            20008,
            json!({"address": "1.1.1.1", "port": 53, "network": "udp"}),
            json!({}),
        ));
        inbounds.push(inbound(
            "in-ws-ed",
            "vmess",
            20013,
            json!({}),
            json!({"network": "ws", "wsSettings": {"path": "/e?ed=2048", "headers": {"Host": "cdn.example"}}}),
        ));
        let mut clients = clients;
        clients.push(client("in-trojan-tls", "f@x", "tls-pw"));
        (inbounds, clients)
    }

    #[test]
    fn singbox_config_shape() {
        let dir = tempfile::tempdir().unwrap();
        let (inbounds, clients) = singbox_fleet(dir.path());
        let c = build_singbox(&input(CoreFlavor::SingBox, &inbounds, &clients), 9090).unwrap();
        assert_eq!(c["log"], json!({"level": "warn"}));
        assert_eq!(c["experimental"], json!({"clash_api": {"external_controller": "127.0.0.1:9090", "secret": ""}}));
        assert_eq!(c["outbounds"], json!([{"type": "direct", "tag": "direct"}]));
        assert_eq!(c["route"], json!({"rules": [{"inbound": ["in-vless"], "action": "sniff"}], "final": "direct"}));
        assert_eq!(
            inbound_json(&c, "in-vmess"),
            &json!({"type": "vmess", "tag": "in-vmess", "listen": "::", "listen_port": 20000,
                    "users": [{"name": "a@x", "uuid": U1, "alterId": 0}],
                    "transport": {"type": "ws", "path": "/v"}})
        );
        assert_eq!(inbound_json(&c, "in-vless")["users"], json!([{"name": "b@x", "uuid": U2}]));
        assert_eq!(
            inbound_json(&c, "in-ws-ed")["transport"],
            json!({"type": "ws", "path": "/e", "max_early_data": 2048,
                   "early_data_header_name": "Sec-WebSocket-Protocol", "headers": {"Host": "cdn.example"}})
        );
        assert_eq!(
            inbound_json(&c, "in-ss"),
            &json!({"type": "shadowsocks", "tag": "in-ss", "listen": "::", "listen_port": 20003,
                    "method": "aes-128-gcm", "users": [{"name": "d@x", "password": "ss-user-pw"}]})
        );
        let tls = &inbound_json(&c, "in-trojan-tls")["tls"];
        assert_eq!(tls["enabled"], json!(true));
        assert_eq!(tls["server_name"], json!("localhost"));
        assert_eq!(tls["alpn"], json!(["h2", "http/1.1"]));
        assert!(tls["certificate_path"].as_str().unwrap().ends_with("cert.pem"));
        assert_eq!(inbound_json(&c, "in-socks")["users"], json!([{"username": "u", "password": "p"}]));
        assert_eq!(
            inbound_json(&c, "in-doko"),
            &json!({"type": "direct", "tag": "in-doko", "listen": "::", "listen_port": 20008,
                    "override_address": "1.1.1.1", "override_port": 53, "network": "udp"})
        );
        // A shadowsocks inbound nobody may use is left out.
        assert!(c["inbounds"].as_array().unwrap().iter().all(|i| i["tag"] != "in-ss-empty"));
        assert!(build_singbox(&input(CoreFlavor::Xray, &inbounds, &clients), 9090).is_err());
        assert!(matches!(
            build_singbox(&input(CoreFlavor::SingBox, &inbounds, &clients), 20000).unwrap_err(),
            ConfigError::PortClash { port: 20000, .. }
        ));
    }

    #[test]
    fn check_support_names_what_singbox_lacks() {
        let cases = [
            (json!({"network": "grpc"}), "gRPC transport (built without with_grpc)"),
            (json!({"security": "reality"}), "REALITY"),
            (json!({"network": "kcp"}), "kcp transport"),
            (json!({"network": "tcp", "tcpSettings": {"header": {"type": "http"}}}), "TCP header obfuscation"),
            (json!({"security": "tls", "tlsSettings": {}}), "TLS without a certificate"),
        ];
        for (stream, feature) in cases {
            let err = check_support(CoreFlavor::SingBox, &inbound("in", "vless", 443, json!({}), stream.clone()))
                .unwrap_err();
            assert!(err.to_string().starts_with("sing-box (this build) cannot serve"), "{err}");
            assert!(err.feature.contains(feature), "{stream}: {err}");
        }
        check_support(CoreFlavor::SingBox, &inbound("in", "vless", 443, json!({}), json!({"network": "httpupgrade"})))
            .unwrap();
    }

    #[test]
    fn write_atomic_replaces_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["config.json"], "no temp file left behind");
        assert!(write_atomic(&dir.path().join("missing/config.json"), b"x").is_err());
    }

    fn self_signed(dir: &Path) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        (cert.display().to_string(), key.display().to_string())
    }

    /// Runs `binary args… FILE` on `config` written to a temp file; `Ok` on exit 0.
    fn run_check(binary: &Path, args: &[&str], config: &Value) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write_atomic(&path, serde_json::to_string_pretty(config).unwrap().as_bytes()).unwrap();
        let out = std::process::Command::new(binary).args(args).arg(&path).output().unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        }
    }

    const V2RAY: &str = "/usr/bin/v2ray";

    #[test]
    fn real_v2ray_accepts_the_built_config() {
        if !Path::new(V2RAY).exists() {
            eprintln!("skipped: {V2RAY} not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (mut inbounds, mut clients) = singbox_fleet(dir.path());
        inbounds.retain(|i| i.tag != "in-ss-empty");
        inbounds.push(inbound(
            "in-vmess-kcp",
            "vmess",
            20009,
            json!({}),
            json!({"network": "kcp", "kcpSettings": {"header": {"type": "wechat-video"}, "seed": "s"}}),
        ));
        clients.push(client("in-vmess-kcp", "g@x", U3));
        let config = build(&input(CoreFlavor::V2ray, &inbounds, &clients)).unwrap();
        run_check(Path::new(V2RAY), &["-test", "-config"], &config).unwrap();

        // The refusals are real: what check_support refuses, v2ray refuses too (or, for REALITY
        // and Vision, accepts and then serves something else).
        let mut grpc = config.clone();
        grpc["inbounds"][1]["streamSettings"] = json!({"network": "grpc", "grpcSettings": {"serviceName": "x"}});
        assert!(run_check(Path::new(V2RAY), &["-test", "-config"], &grpc).unwrap_err().contains("grpc"));
        let mut quic_sniff = config;
        quic_sniff["inbounds"][1]["sniffing"] = json!({"enabled": true, "destOverride": ["quic"]});
        assert!(run_check(Path::new(V2RAY), &["-test", "-config"], &quic_sniff).is_err());
    }

    /// sing-box binary from `SING_BOX_BIN` or `sing-box` on PATH.
    fn sing_box() -> Option<std::path::PathBuf> {
        if let Some(p) = std::env::var_os("SING_BOX_BIN") {
            return Some(p.into());
        }
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("sing-box")).find(|p| p.exists())
    }

    #[test]
    fn real_singbox_accepts_the_built_config() {
        let Some(bin) = sing_box() else {
            eprintln!("skipped: no sing-box (set SING_BOX_BIN)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (mut inbounds, mut clients) = singbox_fleet(dir.path());
        let (psk, upsk) = ("AAAAAAAAAAAAAAAAAAAAAA==", "AQEBAQEBAQEBAQEBAQEBAQ==");
        inbounds.push(inbound(
            "ss22",
            "shadowsocks",
            20011,
            json!({"method": "2022-blake3-aes-128-gcm", "password": psk}),
            json!({}),
        ));
        inbounds.push(inbound(
            "in-hu",
            "vless",
            20012,
            json!({}),
            json!({"network": "httpupgrade", "httpupgradeSettings": {"path": "/u", "host": "h.example"}}),
        ));
        clients.push(client("ss22", "h@x", upsk));
        let mut vision = client("in-hu", "i@x", U3);
        vision.flow = "xtls-rprx-vision".into();
        clients.push(vision);
        let config = build_singbox(&input(CoreFlavor::SingBox, &inbounds, &clients), 9090).unwrap();
        run_check(&bin, &["check", "-c"], &config).unwrap();
    }
}
