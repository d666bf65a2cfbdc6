//! Share links (`vless://`, `vmess://`, `trojan://`, `ss://`) and subscription bodies, in the
//! shapes 3x-ui emits and v2rayN-style clients parse (`../shared/specs/share-links.md`).
//!
//! Pure functions over the inbound's 3x-ui JSON (`settings`, `streamSettings`): no IO, no store.
//! Every output is deterministic (query keys sorted, first REALITY short id / server name) so a
//! subscription only changes when the inbound or client does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv6Addr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

/// The inbound a link points at: its 3x-ui JSON as stored.
#[derive(Debug, Clone, Copy)]
pub struct LinkInbound<'a> {
    /// `vless`, `vmess`, `trojan`, `shadowsocks`, … (other protocols have no link).
    pub protocol: &'a str,
    pub port: u16,
    /// The inbound's remark; the link's name is `<remark>-<email>`.
    pub remark: &'a str,
    /// 3x-ui `settings` (for shadowsocks: `method`, `password` = server PSK for 2022 methods).
    pub settings: &'a Value,
    /// 3x-ui `streamSettings` (`{}` or null = plain TCP, no TLS).
    pub stream_settings: &'a Value,
}

/// The client the link is for.
#[derive(Debug, Clone, Copy)]
pub struct LinkClient<'a> {
    pub email: &'a str,
    /// UUID (vless, vmess) or password (trojan, shadowsocks; the user PSK for 2022 methods).
    pub secret: &'a str,
    /// VLESS flow (`""` = none).
    pub flow: &'a str,
}

/// One share link for `client` on `inbound` at `host` (a domain, IPv4 or IPv6 address; IPv6 is
/// bracketed in URIs, IDNs become punycode). `None` for protocols without a link format (socks,
/// http, dokodemo-door, …) and for vmess over REALITY, which the vmess format cannot express.
pub fn share_link(host: &str, inbound: &LinkInbound, client: &LinkClient) -> Option<String> {
    let stream = Stream::parse(inbound.stream_settings);
    let name = remark(inbound.remark, client.email);
    match inbound.protocol {
        "vless" => {
            let mut q = stream.query();
            q.insert("encryption", "none".into());
            if !client.flow.is_empty() {
                q.insert("flow", client.flow.into());
            }
            Some(format!(
                "vless://{}@{}:{}?{}#{}",
                encode(client.secret),
                uri_host(host),
                inbound.port,
                query_string(&q),
                encode(&name)
            ))
        }
        "trojan" => Some(format!(
            "trojan://{}@{}:{}?{}#{}",
            encode(client.secret),
            uri_host(host),
            inbound.port,
            query_string(&stream.query()),
            encode(&name)
        )),
        "vmess" => vmess_link(host, inbound.port, &name, client, &stream),
        "shadowsocks" => Some(ss_link(host, inbound, client, &stream, &name)),
        _ => None,
    }
}

/// Subscription body: every link followed by `"\n"`, the whole text standard base64 with padding.
pub fn subscription_body(links: &[String]) -> String {
    let mut raw = String::with_capacity(links.iter().map(|l| l.len() + 1).sum());
    for link in links {
        raw.push_str(link);
        raw.push('\n');
    }
    STANDARD.encode(raw)
}

/// `Subscription-Userinfo` header value. `total` 0 = unlimited; `expire_unix_secs` 0 = never (a
/// negative value, 3x-ui's "starts on first use", is sent as 0 as well).
pub fn userinfo_header(up: u64, down: u64, total: u64, expire_unix_secs: i64) -> String {
    format!("upload={up}; download={down}; total={total}; expire={}", expire_unix_secs.max(0))
}

/// 3x-ui's link name: `<inbound remark>-<email>`, or just the email without a remark.
fn remark(inbound_remark: &str, email: &str) -> String {
    match (inbound_remark.is_empty(), email.is_empty()) {
        (true, _) => email.to_owned(),
        (false, true) => inbound_remark.to_owned(),
        (false, false) => format!("{inbound_remark}-{email}"),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (`A–Z a–z 0–9 - . _ ~`), as
/// `encodeURIComponent` does for the characters that matter here; a space becomes `%20`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `k=v&…` in key order (the map is sorted), values percent-encoded, empty values left out.
fn query_string(q: &BTreeMap<&'static str, String>) -> String {
    q.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join("&")
}

/// The host as it goes into a URI authority: IPv6 in brackets, IDN as punycode.
fn uri_host(host: &str) -> String {
    let bare = bare_host(host);
    if let Ok(v6) = bare.parse::<Ipv6Addr>() {
        return format!("[{v6}]");
    }
    match url::Host::parse(bare) {
        Ok(h) => h.to_string(),
        Err(_) => bare.to_owned(),
    }
}

/// The host without brackets (vmess `add` is a JSON field, not a URI authority).
fn bare_host(host: &str) -> &str {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> &'v str {
    let mut cur = v;
    for key in path {
        match cur.get(key) {
            Some(next) => cur = next,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

/// A `Host` header value from a headers object (key compared case-insensitively; a string or a
/// list of strings joined with `,`).
fn host_header(headers: Option<&Value>) -> String {
    let Some(obj) = headers.and_then(Value::as_object) else { return String::new() };
    for (k, v) in obj {
        if k.eq_ignore_ascii_case("host") {
            return match v {
                Value::String(s) => s.clone(),
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
                _ => String::new(),
            };
        }
    }
    String::new()
}

/// What a link needs from `streamSettings`.
#[derive(Debug, Default)]
struct Stream {
    /// `tcp`, `kcp`, `ws`, `grpc`, `httpupgrade`, `xhttp`, … (`raw` is written `tcp`).
    network: String,
    /// tcp/kcp header type (`""` when none).
    header_type: String,
    host: String,
    path: String,
    service_name: String,
    authority: String,
    /// grpc `multi` or xhttp mode.
    mode: String,
    seed: String,
    /// `none`, `tls` or `reality`.
    security: String,
    sni: String,
    alpn: String,
    fp: String,
    allow_insecure: bool,
    pbk: String,
    sid: String,
    spx: String,
}

impl Stream {
    fn parse(s: &Value) -> Stream {
        let network = match str_at(s, &["network"]) {
            "" | "raw" => "tcp".to_owned(),
            n => n.to_owned(),
        };
        let mut st = Stream { network, ..Stream::default() };
        match st.network.as_str() {
            "tcp" => {
                let tcp = s.get("tcpSettings").or_else(|| s.get("rawSettings")).unwrap_or(&Value::Null);
                if str_at(tcp, &["header", "type"]) == "http" {
                    st.header_type = "http".into();
                    let request = tcp.get("header").and_then(|h| h.get("request")).unwrap_or(&Value::Null);
                    st.path = match request.get("path") {
                        Some(Value::Array(p)) => p.first().and_then(Value::as_str).unwrap_or("").to_owned(),
                        Some(Value::String(p)) => p.clone(),
                        _ => String::new(),
                    };
                    st.host = host_header(request.get("headers"));
                }
            }
            "kcp" => {
                let kcp = s.get("kcpSettings").unwrap_or(&Value::Null);
                st.header_type = str_at(kcp, &["header", "type"]).to_owned();
                st.seed = str_at(kcp, &["seed"]).to_owned();
            }
            "ws" | "httpupgrade" | "xhttp" | "splithttp" => {
                let key = match st.network.as_str() {
                    "ws" => "wsSettings",
                    "httpupgrade" => "httpupgradeSettings",
                    "xhttp" => "xhttpSettings",
                    _ => "splithttpSettings",
                };
                let t = s.get(key).unwrap_or(&Value::Null);
                st.path = str_at(t, &["path"]).to_owned();
                st.host = str_at(t, &["host"]).to_owned();
                if st.host.is_empty() {
                    st.host = host_header(t.get("headers"));
                }
                if st.network != "ws" && st.network != "httpupgrade" {
                    st.mode = str_at(t, &["mode"]).to_owned();
                }
            }
            "grpc" => {
                let g = s.get("grpcSettings").unwrap_or(&Value::Null);
                st.service_name = str_at(g, &["serviceName"]).to_owned();
                st.authority = str_at(g, &["authority"]).to_owned();
                if g.get("multiMode").and_then(Value::as_bool) == Some(true) {
                    st.mode = "multi".into();
                }
            }
            _ => {}
        }
        st.security = match str_at(s, &["security"]) {
            "" => "none".into(),
            sec => sec.to_owned(),
        };
        match st.security.as_str() {
            "tls" => {
                let tls = s.get("tlsSettings").unwrap_or(&Value::Null);
                st.sni = str_at(tls, &["serverName"]).to_owned();
                st.alpn = match tls.get("alpn") {
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
                    Some(Value::String(a)) => a.clone(),
                    _ => String::new(),
                };
                st.fp = str_at(tls, &["settings", "fingerprint"]).to_owned();
                st.allow_insecure = tls.pointer("/settings/allowInsecure").and_then(Value::as_bool) == Some(true);
            }
            "reality" => {
                let r = s.get("realitySettings").unwrap_or(&Value::Null);
                st.pbk = str_at(r, &["settings", "publicKey"]).to_owned();
                st.fp = str_at(r, &["settings", "fingerprint"]).to_owned();
                st.spx = str_at(r, &["settings", "spiderX"]).to_owned();
                st.sid = first_str(r.get("shortIds"));
                st.sni = first_str(r.get("serverNames"));
            }
            _ => {}
        }
        st
    }

    /// The VLESS/Trojan query parameters (without `encryption`/`flow`).
    fn query(&self) -> BTreeMap<&'static str, String> {
        let mut q = BTreeMap::new();
        q.insert("type", self.network.clone());
        q.insert("security", self.security.clone());
        match self.network.as_str() {
            "tcp" => {
                if self.header_type == "http" {
                    q.insert("headerType", "http".into());
                    q.insert("host", self.host.clone());
                    q.insert("path", self.path.clone());
                }
            }
            "kcp" => {
                q.insert("headerType", self.header_type.clone());
                q.insert("seed", self.seed.clone());
            }
            "grpc" => {
                q.insert("serviceName", self.service_name.clone());
                q.insert("authority", self.authority.clone());
                q.insert("mode", self.mode.clone());
            }
            _ => {
                q.insert("host", self.host.clone());
                q.insert("path", self.path.clone());
                q.insert("mode", self.mode.clone());
            }
        }
        match self.security.as_str() {
            "tls" => {
                q.insert("sni", self.sni.clone());
                q.insert("alpn", self.alpn.clone());
                q.insert("fp", self.fp.clone());
                if self.allow_insecure {
                    q.insert("allowInsecure", "1".into());
                }
            }
            "reality" => {
                q.insert("sni", self.sni.clone());
                q.insert("fp", self.fp.clone());
                q.insert("pbk", self.pbk.clone());
                q.insert("sid", self.sid.clone());
                q.insert("spx", self.spx.clone());
            }
            _ => {}
        }
        q
    }
}

fn first_str(v: Option<&Value>) -> String {
    match v {
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or("").to_owned(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// `vmess://` + standard base64 (padded) of the v2rayN "v2" JSON.
fn vmess_link(host: &str, port: u16, name: &str, client: &LinkClient, st: &Stream) -> Option<String> {
    let tls = match st.security.as_str() {
        "tls" => "tls",
        "none" => "",
        // REALITY (or anything else) has no vmess spelling.
        _ => return None,
    };
    let (header_type, host_field, path) = match st.network.as_str() {
        "tcp" => (if st.header_type.is_empty() { "none" } else { &st.header_type }, &st.host, &st.path),
        "kcp" => (if st.header_type.is_empty() { "none" } else { &st.header_type }, &st.host, &st.seed),
        "grpc" => (if st.mode == "multi" { "multi" } else { "gun" }, &st.authority, &st.service_name),
        _ => ("none", &st.host, &st.path),
    };
    let mut obj = json!({
        "v": "2",
        "ps": name,
        "add": bare_host(host),
        "port": port,
        "id": client.secret,
        "aid": 0,
        "scy": "auto",
        "net": st.network,
        "type": header_type,
        "host": host_field,
        "path": path,
        "tls": tls,
        "sni": st.sni,
        "alpn": st.alpn,
        "fp": st.fp,
    });
    if st.allow_insecure {
        obj["insecure"] = json!("1");
    }
    if matches!(st.network.as_str(), "xhttp" | "splithttp") && !st.mode.is_empty() {
        obj["mode"] = json!(st.mode);
    }
    Some(format!("vmess://{}", STANDARD.encode(obj.to_string())))
}

/// SIP002 `ss://`: classic AEAD methods carry base64(`method:password`) (standard, padded); 2022
/// methods carry percent-encoded `method:serverPSK:userPSK` (SIP022 forbids base64 there).
fn ss_link(host: &str, inbound: &LinkInbound, client: &LinkClient, st: &Stream, name: &str) -> String {
    let method = match str_at(inbound.settings, &["method"]) {
        // Xray's aliases; sing-box and most clients only know the IETF names.
        "chacha20-poly1305" => "chacha20-ietf-poly1305",
        "xchacha20-poly1305" => "xchacha20-ietf-poly1305",
        m => m,
    };
    let server_password = str_at(inbound.settings, &["password"]);
    let password = if client.secret.is_empty() { server_password } else { client.secret };
    let userinfo = if method.starts_with("2022-blake3-") {
        if server_password.is_empty() || server_password == password {
            format!("{}:{}", encode(method), encode(password))
        } else {
            format!("{}:{}:{}", encode(method), encode(server_password), encode(password))
        }
    } else {
        STANDARD.encode(format!("{method}:{password}"))
    };
    let mut link = format!("ss://{userinfo}@{}:{}", uri_host(host), inbound.port);
    // Plain TCP without TLS is pure SIP002; anything else carries the Xray-style transport
    // parameters 3x-ui appends (pure SIP002 clients ignore them).
    if st.network != "tcp" || !st.header_type.is_empty() || st.security != "none" {
        link.push('?');
        link.push_str(&query_string(&st.query()));
    }
    link.push('#');
    link.push_str(&encode(name));
    link
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "a3482e88-686a-4a58-8126-99c9df64b7bf";

    fn link(protocol: &str, settings: Value, stream: Value, client: LinkClient) -> Option<String> {
        let inbound =
            LinkInbound { protocol, port: 443, remark: "NL 1", settings: &settings, stream_settings: &stream };
        share_link("vpn.example.com", &inbound, &client)
    }

    fn client<'a>(secret: &'a str, flow: &'a str) -> LinkClient<'a> {
        LinkClient { email: "alice@x", secret, flow }
    }

    fn decode_vmess(link: &str) -> Value {
        let b64 = link.strip_prefix("vmess://").unwrap();
        serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap()
    }

    #[test]
    fn vless_reality_vision() {
        let stream = json!({
            "network": "tcp", "security": "reality",
            "realitySettings": {
                "serverNames": ["www.microsoft.com", "microsoft.com"],
                "shortIds": ["6ba85179e30d4fc2", "ab"],
                "privateKey": "secret-never-in-links",
                "settings": {"publicKey": "KEY", "fingerprint": "chrome", "spiderX": "/"}
            },
            "tcpSettings": {"header": {"type": "none"}}
        });
        let l = link("vless", json!({"decryption": "none"}), stream, client(UUID, "xtls-rprx-vision")).unwrap();
        assert_eq!(
            l,
            format!(
                "vless://{UUID}@vpn.example.com:443?encryption=none&flow=xtls-rprx-vision&fp=chrome&pbk=KEY\
                 &security=reality&sid=6ba85179e30d4fc2&sni=www.microsoft.com&spx=%2F&type=tcp#NL%201-alice%40x"
            )
        );
        assert!(!l.contains("secret-never-in-links"));
    }

    #[test]
    fn vless_plain_tcp_has_no_flow_when_unset() {
        let l = link("vless", json!({}), json!({}), client(UUID, "")).unwrap();
        assert_eq!(
            l,
            format!("vless://{UUID}@vpn.example.com:443?encryption=none&security=none&type=tcp#NL%201-alice%40x")
        );
    }

    #[test]
    fn vless_ws_tls() {
        let stream = json!({
            "network": "ws", "security": "tls",
            "wsSettings": {"path": "/ws path", "headers": {"Host": "cdn.example.com"}},
            "tlsSettings": {"serverName": "vpn.example.com", "alpn": ["h2", "http/1.1"],
                            "settings": {"fingerprint": "firefox", "allowInsecure": true}}
        });
        let l = link("vless", json!({}), stream, client(UUID, "")).unwrap();
        assert_eq!(
            l,
            format!(
                "vless://{UUID}@vpn.example.com:443?allowInsecure=1&alpn=h2%2Chttp%2F1.1&encryption=none&fp=firefox\
                 &host=cdn.example.com&path=%2Fws%20path&security=tls&sni=vpn.example.com&type=ws#NL%201-alice%40x"
            )
        );
    }

    #[test]
    fn grpc_kcp_httpupgrade_and_tcp_http_params() {
        let grpc = link(
            "vless",
            json!({}),
            json!({"network": "grpc", "grpcSettings": {"serviceName": "svc", "multiMode": true}}),
            client(UUID, ""),
        )
        .unwrap();
        assert!(grpc.contains("?encryption=none&mode=multi&security=none&serviceName=svc&type=grpc#"), "{grpc}");

        let kcp = link(
            "trojan",
            json!({}),
            json!({"network": "kcp", "kcpSettings": {"header": {"type": "wechat-video"}, "seed": "s33d"}}),
            client("pw", ""),
        )
        .unwrap();
        assert!(kcp.contains("?headerType=wechat-video&security=none&seed=s33d&type=kcp#"), "{kcp}");

        let hu = link(
            "vless",
            json!({}),
            json!({"network": "httpupgrade", "httpupgradeSettings": {"path": "/up", "host": "h.example"}}),
            client(UUID, ""),
        )
        .unwrap();
        assert!(hu.contains("host=h.example&path=%2Fup&security=none&type=httpupgrade#"), "{hu}");

        let tcp_http = link(
            "vless",
            json!({}),
            json!({"network": "tcp", "tcpSettings": {"header": {"type": "http",
                "request": {"path": ["/a", "/b"], "headers": {"Host": ["a.example", "b.example"]}}}}}),
            client(UUID, ""),
        )
        .unwrap();
        assert!(tcp_http.contains("headerType=http&host=a.example%2Cb.example&path=%2Fa&security=none&type=tcp#"));
    }

    #[test]
    fn trojan_password_and_remark_are_percent_encoded() {
        let stream = json!({"network": "tcp", "security": "tls", "tlsSettings": {"serverName": "t.example"}});
        let inbound = LinkInbound {
            protocol: "trojan",
            port: 8443,
            remark: "My Server/1",
            settings: &json!({}),
            stream_settings: &stream,
        };
        let c = LinkClient { email: "bob smith", secret: "p@ss:w/o+r=d", flow: "xtls-rprx-vision" };
        let l = share_link("t.example", &inbound, &c).unwrap();
        assert_eq!(
            l,
            "trojan://p%40ss%3Aw%2Fo%2Br%3Dd@t.example:8443?security=tls&sni=t.example&type=tcp#My%20Server%2F1-bob%20smith"
        );
        // Trojan has no flow in the link.
        assert!(!l.contains("flow="));
    }

    #[test]
    fn trojan_without_tls_says_security_none() {
        let l = link("trojan", json!({}), json!({}), client("pw", "")).unwrap();
        assert_eq!(l, "trojan://pw@vpn.example.com:443?security=none&type=tcp#NL%201-alice%40x");
    }

    #[test]
    fn vmess_json_round_trips() {
        let stream = json!({
            "network": "ws", "security": "tls",
            "wsSettings": {"path": "/v", "headers": {"host": "cdn.example"}},
            "tlsSettings": {"serverName": "sni.example", "alpn": ["http/1.1"], "settings": {"fingerprint": "chrome"}}
        });
        let l = link("vmess", json!({}), stream, client(UUID, "")).unwrap();
        let v = decode_vmess(&l);
        assert_eq!(
            v,
            json!({"v": "2", "ps": "NL 1-alice@x", "add": "vpn.example.com", "port": 443, "id": UUID, "aid": 0,
                   "scy": "auto", "net": "ws", "type": "none", "host": "cdn.example", "path": "/v", "tls": "tls",
                   "sni": "sni.example", "alpn": "http/1.1", "fp": "chrome"})
        );
        // Standard alphabet with padding (decodes strictly above), port is a number.
        assert!(v["port"].is_u64());
    }

    #[test]
    fn vmess_plain_grpc_and_reality() {
        let l = link("vmess", json!({}), json!({}), client(UUID, "")).unwrap();
        let v = decode_vmess(&l);
        assert_eq!((v["net"].as_str(), v["type"].as_str(), v["tls"].as_str()), (Some("tcp"), Some("none"), Some("")));

        let g = link(
            "vmess",
            json!({}),
            json!({"network": "grpc", "grpcSettings": {"serviceName": "svc"}}),
            client(UUID, ""),
        )
        .unwrap();
        let v = decode_vmess(&g);
        assert_eq!(
            (v["net"].as_str(), v["type"].as_str(), v["path"].as_str()),
            (Some("grpc"), Some("gun"), Some("svc"))
        );

        assert_eq!(link("vmess", json!({}), json!({"security": "reality"}), client(UUID, "")), None);
    }

    #[test]
    fn shadowsocks_classic_is_padded_std_base64() {
        let l = link("shadowsocks", json!({"method": "aes-128-gcm", "password": "srv"}), json!({}), client("pw?1", ""))
            .unwrap();
        let userinfo = STANDARD.encode("aes-128-gcm:pw?1");
        assert_eq!(l, format!("ss://{userinfo}@vpn.example.com:443#NL%201-alice%40x"));
        // "aes-128-gcm:pw?1" is 16 bytes: padding must be there.
        assert!(userinfo.ends_with("=="));

        // Xray's alias is written with the IETF name every client knows.
        let l = link("shadowsocks", json!({"method": "chacha20-poly1305"}), json!({}), client("pw", "")).unwrap();
        let b64 = l.strip_prefix("ss://").unwrap().split('@').next().unwrap();
        assert_eq!(STANDARD.decode(b64).unwrap(), b"chacha20-ietf-poly1305:pw");

        // Single-user (v2ray): the inbound's password when the client has none.
        let l = link("shadowsocks", json!({"method": "aes-256-gcm", "password": "srv"}), json!({}), client("", ""))
            .unwrap();
        assert!(l.starts_with(&format!("ss://{}@", STANDARD.encode("aes-256-gcm:srv"))));
    }

    #[test]
    fn shadowsocks_2022_is_percent_encoded_not_base64() {
        let l = link(
            "shadowsocks",
            json!({"method": "2022-blake3-aes-128-gcm", "password": "c2VydmVyUFNLc2VydmVyUA=="}),
            json!({}),
            client("dXNlclBTS3VzZXJQU0t1cw==", ""),
        )
        .unwrap();
        assert_eq!(
            l,
            "ss://2022-blake3-aes-128-gcm:c2VydmVyUFNLc2VydmVyUA%3D%3D:dXNlclBTS3VzZXJQU0t1cw%3D%3D\
             @vpn.example.com:443#NL%201-alice%40x"
        );
    }

    #[test]
    fn shadowsocks_over_ws_carries_transport_params() {
        let l = link(
            "shadowsocks",
            json!({"method": "aes-128-gcm"}),
            json!({"network": "ws", "wsSettings": {"path": "/s"}}),
            client("pw", ""),
        )
        .unwrap();
        assert!(l.ends_with("@vpn.example.com:443?path=%2Fs&security=none&type=ws#NL%201-alice%40x"), "{l}");
    }

    #[test]
    fn ipv6_hosts_are_bracketed_in_uris_and_bare_in_vmess() {
        let settings = json!({});
        let stream = json!({});
        let inbound =
            LinkInbound { protocol: "vless", port: 443, remark: "", settings: &settings, stream_settings: &stream };
        let c = client(UUID, "");
        for host in ["2001:db8::1", "[2001:db8::1]"] {
            let l = share_link(host, &inbound, &c).unwrap();
            assert!(l.starts_with(&format!("vless://{UUID}@[2001:db8::1]:443?")), "{l}");
            assert!(l.ends_with("#alice%40x"), "no remark: just the email: {l}");
        }
        let trojan = LinkInbound { protocol: "trojan", ..inbound };
        assert!(share_link("::1", &trojan, &c).unwrap().contains("@[::1]:443?"));
        let vmess = LinkInbound { protocol: "vmess", ..inbound };
        assert_eq!(decode_vmess(&share_link("[2001:db8::1]", &vmess, &c).unwrap())["add"], "2001:db8::1");
        // IPv4 and IDN.
        assert!(share_link("203.0.113.7", &inbound, &c).unwrap().contains("@203.0.113.7:443?"));
        assert!(share_link("bücher.example", &inbound, &c).unwrap().contains("@xn--bcher-kva.example:443?"));
    }

    #[test]
    fn protocols_without_links() {
        for p in ["socks", "http", "dokodemo-door", "wireguard"] {
            assert_eq!(link(p, json!({}), json!({}), client("x", "")), None, "{p}");
        }
    }

    #[test]
    fn subscription_body_is_newline_terminated_then_base64() {
        let links = vec!["vless://a@h:1?type=tcp#x".to_string(), "trojan://b@h:2?security=tls#y".to_string()];
        let body = subscription_body(&links);
        let raw = String::from_utf8(STANDARD.decode(&body).unwrap()).unwrap();
        assert_eq!(raw, "vless://a@h:1?type=tcp#x\ntrojan://b@h:2?security=tls#y\n");
        assert_eq!(body.len() % 4, 0, "standard base64 with padding");
        assert_eq!(subscription_body(&[]), "");
    }

    #[test]
    fn userinfo_header_format() {
        assert_eq!(
            userinfo_header(1, 2, 3_000_000_000, 1_767_225_600),
            "upload=1; download=2; total=3000000000; expire=1767225600"
        );
        assert_eq!(userinfo_header(0, 0, 0, 0), "upload=0; download=0; total=0; expire=0");
        assert_eq!(userinfo_header(0, 0, 0, -86_400), "upload=0; download=0; total=0; expire=0");
    }
}
