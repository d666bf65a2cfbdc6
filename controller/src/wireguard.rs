//! WireGuard as the controller models it: key pairs, address pools, quota and expiry values as
//! panels send them, and the client config text (wg-quick format) handed to users.

use std::collections::HashSet;
use std::net::IpAddr;

use flotilla_protocol::wireguard::WgKey;
use time::{OffsetDateTime, PrimitiveDateTime};

/// MTU of the server side of every interface (wireguard-go's default too).
pub const SERVER_MTU: u16 = 1420;

/// Keepalive written into client configs, so peers behind NAT stay reachable.
pub const CLIENT_KEEPALIVE_SECS: u16 = 25;

/// A WireGuard key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPair {
    pub private: WgKey,
    pub public: WgKey,
}

impl KeyPair {
    /// A fresh pair from the OS random source.
    pub fn generate() -> KeyPair {
        let secret = x25519_dalek::StaticSecret::from(rand::random::<[u8; 32]>());
        let public = x25519_dalek::PublicKey::from(&secret);
        KeyPair { private: WgKey(secret.to_bytes()), public: WgKey(public.to_bytes()) }
    }

    /// A fresh pair whose public key has no `/` in base64. Panels put the public key in URL
    /// paths (`/qr/<name>/<key>`) unescaped; half of all keys would break them otherwise.
    pub fn generate_url_safe() -> KeyPair {
        loop {
            let pair = KeyPair::generate();
            if !pair.public.to_base64().contains('/') {
                return pair;
            }
        }
    }

    /// The pair of a stored private key.
    pub fn from_private(private: WgKey) -> KeyPair {
        let secret = x25519_dalek::StaticSecret::from(private.0);
        KeyPair { private: WgKey(secret.to_bytes()), public: WgKey(x25519_dalek::PublicKey::from(&secret).to_bytes()) }
    }
}

/// Why a value sent by a panel is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("invalid address range '{0}': expected an address with a prefix, like 10.0.0.1/24")]
    Range(String),
    #[error("invalid traffic '{0}': expected a number of bytes")]
    Traffic(String),
    #[error("invalid expiry date '{0}': expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS")]
    Expires(String),
}

/// An interface's own address and the prefix of its network (`10.0.0.1/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    pub address: IpAddr,
    pub prefix: u8,
}

impl AddressRange {
    /// Parses `addr/prefix`. Host networks (a /32 or /128) leave no room for clients and are refused.
    pub fn parse(text: &str) -> Result<AddressRange, ValueError> {
        let bad = || ValueError::Range(text.to_string());
        let (addr, prefix) = text.trim().split_once('/').ok_or_else(bad)?;
        let address: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 30 } else { 126 };
        if prefix > max || prefix < 8 {
            return Err(bad());
        }
        Ok(AddressRange { address, prefix })
    }

    /// The network this range is in, as `network/prefix` (to compare ranges for overlap).
    pub fn network(&self) -> (u128, u8, bool) {
        let (value, bits) = as_bits(self.address);
        let host_bits = bits - self.prefix as u32;
        ((value >> host_bits) << host_bits, self.prefix, self.address.is_ipv4())
    }

    /// Whether two ranges share any address.
    pub fn overlaps(&self, other: &AddressRange) -> bool {
        if self.address.is_ipv4() != other.address.is_ipv4() {
            return false;
        }
        let shorter = self.prefix.min(other.prefix);
        let (a, bits) = as_bits(self.address);
        let (b, _) = as_bits(other.address);
        let host_bits = bits - shorter as u32;
        a >> host_bits == b >> host_bits
    }

    /// The lowest host address of the network that is neither the interface's own address nor
    /// taken; `None` when the pool is exhausted. Network and broadcast addresses are skipped.
    pub fn next_free(&self, taken: &HashSet<IpAddr>) -> Option<IpAddr> {
        let (value, bits) = as_bits(self.address);
        let host_bits = bits - self.prefix as u32;
        let network = (value >> host_bits) << host_bits;
        let last = network | ((1u128 << host_bits) - 1);
        // One more than the taken count always reaches a free address if there is one.
        let mut candidate = network + 1;
        while candidate < last {
            let ip = from_bits(candidate, self.address.is_ipv4());
            if ip != self.address && !taken.contains(&ip) {
                return Some(ip);
            }
            candidate += 1;
        }
        None
    }
}

impl std::fmt::Display for AddressRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

fn as_bits(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(v4) => (u32::from(v4) as u128, 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn from_bits(value: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4((value as u32).into())
    } else {
        IpAddr::V6(value.into())
    }
}

/// A quota as panels send it: bytes as a decimal string, possibly fractional (CandyPanel's UI
/// multiplies megabytes by 1024²). Fractions are truncated; zero or less means unlimited.
pub fn parse_traffic(text: &str) -> Result<u64, ValueError> {
    let value: f64 = text.trim().parse().map_err(|_| ValueError::Traffic(text.to_string()))?;
    if !value.is_finite() {
        return Err(ValueError::Traffic(text.to_string()));
    }
    Ok(if value <= 0.0 { 0 } else { value.min(u64::MAX as f64) as u64 })
}

/// An expiry as panels send it: `YYYY-MM-DD` (end of nothing: that midnight), or a date-time
/// with `T` or a space, seconds and fraction optional, with an optional offset (naive times are
/// UTC). Returns the canonical text (`YYYY-MM-DDTHH:MM:SS`, UTC) and Unix milliseconds.
pub fn parse_expires(text: &str) -> Result<(String, i64), ValueError> {
    let bad = || ValueError::Expires(text.to_string());
    let t = text.trim();
    let at = if let Ok(dt) = OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        dt
    } else {
        let t = t.replacen(' ', "T", 1);
        let (date_part, time_part) = t.split_once('T').unwrap_or((&t, "00:00:00"));
        let date = time::Date::parse(date_part, time::macros::format_description!("[year]-[month]-[day]"))
            .map_err(|_| bad())?;
        let time_part = time_part.split(['+', 'Z']).next().unwrap_or_default();
        let time_part = time_part.split('.').next().unwrap_or_default();
        let time = match time_part.len() {
            5 => time::Time::parse(time_part, time::macros::format_description!("[hour]:[minute]")),
            _ => time::Time::parse(time_part, time::macros::format_description!("[hour]:[minute]:[second]")),
        }
        .map_err(|_| bad())?;
        PrimitiveDateTime::new(date, time).assume_utc()
    };
    let ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    Ok((crate::api::timestamp(at), ms))
}

/// How a config text is laid out: CandyPanel produced three slightly different ones, and its
/// clients (the bot, the UI's download, QR scanners) were written against each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigLayout {
    /// Answer to a client create: IPv6 DNS only for clients with an IPv6 address.
    Created,
    /// `get_config` and the bot's licence: starts with a newline; IPv6 DNS whenever set.
    Fetched,
    /// What a QR code encodes: as `Fetched`, without the surrounding newlines.
    Qr,
}

/// Everything a client config needs.
#[derive(Debug, Clone)]
pub struct ClientConfig<'a> {
    pub private_key: &'a WgKey,
    pub address: &'a str,
    pub ipv6_address: Option<&'a str>,
    pub dns: &'a str,
    pub ipv6_dns: &'a str,
    pub mtu: &'a str,
    pub server_public_key: &'a str,
    pub endpoint_host: &'a str,
    pub port: u16,
}

impl ClientConfig<'_> {
    /// The wg-quick text.
    pub fn render(&self, layout: ConfigLayout) -> String {
        let mut address = format!("{}/32", self.address);
        if let Some(v6) = self.ipv6_address {
            address.push_str(&format!(", {v6}/128"));
        }
        let mut dns = self.dns.to_string();
        let with_v6_dns = match layout {
            ConfigLayout::Created => self.ipv6_address.is_some(),
            ConfigLayout::Fetched | ConfigLayout::Qr => true,
        };
        if with_v6_dns && !self.ipv6_dns.is_empty() {
            dns.push_str(&format!(", {}", self.ipv6_dns));
        }
        let host = match self.endpoint_host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("[{v6}]"),
            Err(_) => self.endpoint_host.to_string(),
        };
        let mtu = if self.mtu.trim().is_empty() { "1420" } else { self.mtu.trim() };
        let body = format!(
            "[Interface]\nPrivateKey = {}\nAddress = {address}\nDNS = {dns}\nMTU = {mtu}\n\n[Peer]\nPublicKey = {}\nEndpoint = {host}:{}\nAllowedIPs = 0.0.0.0/0, ::/0\nPersistentKeepalive = {CLIENT_KEEPALIVE_SECS}",
            self.private_key.to_base64(),
            self.server_public_key,
            self.port,
        );
        match layout {
            ConfigLayout::Created => body + "\n",
            ConfigLayout::Fetched => format!("\n{body}\n"),
            ConfigLayout::Qr => body,
        }
    }
}

/// A PNG of a QR code of `text` (error correction L, 4-module quiet zone, 3 px per module: what
/// `qrencode` produced for CandyPanel).
pub fn qr_png(text: &str) -> Result<Vec<u8>, String> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::L)
        .map_err(|e| format!("cannot encode the config as a QR code: {e}"))?;
    let modules = code.width();
    let (scale, quiet) = (3usize, 4usize);
    let side = (modules + 2 * quiet) * scale;
    let colors = code.to_colors();
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (mx, my) = (i % modules + quiet, i / modules + quiet);
            for y in my * scale..(my + 1) * scale {
                pixels[y * side + mx * scale..y * side + (mx + 1) * scale].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&pixels).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_skip_the_interface_address_and_say_when_they_are_exhausted() {
        let range = AddressRange::parse("10.0.0.1/30").unwrap();
        let mut taken = HashSet::new();
        let first = range.next_free(&taken).unwrap();
        assert_eq!(first.to_string(), "10.0.0.2", "10.0.0.1 is the server's own address");
        taken.insert(first);
        assert_eq!(range.next_free(&taken), None, "a /30 has two hosts: the server and one client");

        let range = AddressRange::parse("10.8.0.1/22").unwrap();
        let mut taken = HashSet::new();
        for _ in 0..1000 {
            let ip = range.next_free(&taken).unwrap();
            assert!(taken.insert(ip), "never the same address twice");
        }
        assert_eq!(taken.len(), 1000);

        let v6 = AddressRange::parse("fd00:8::1/64").unwrap();
        assert_eq!(v6.next_free(&HashSet::new()).unwrap().to_string(), "fd00:8::2");
        for bad in ["10.0.0.1", "10.0.0.1/32", "nope/24", "10.0.0.1/x", "300.0.0.1/24"] {
            assert!(AddressRange::parse(bad).is_err(), "{bad}");
        }
        assert!(AddressRange::parse("10.0.0.1/24").unwrap().overlaps(&AddressRange::parse("10.0.0.200/25").unwrap()));
        assert!(!AddressRange::parse("10.0.0.1/24").unwrap().overlaps(&AddressRange::parse("10.0.1.1/24").unwrap()));
    }

    #[test]
    fn traffic_and_expiry_accept_what_the_panels_send() {
        assert_eq!(parse_traffic("314572.8"), Ok(314_572));
        assert_eq!(parse_traffic("0"), Ok(0));
        assert_eq!(parse_traffic(" 1073741824 "), Ok(1 << 30));
        assert_eq!(parse_traffic("-5"), Ok(0));
        assert!(parse_traffic("ten").is_err());
        assert!(parse_traffic("NaN").is_err());

        assert_eq!(parse_expires("2025-12-31").unwrap(), ("2025-12-31T00:00:00".into(), 1_767_139_200_000));
        assert_eq!(parse_expires("2025-12-31T23:59:59").unwrap().1, 1_767_225_599_000);
        assert_eq!(parse_expires("2025-12-31 23:59").unwrap().0, "2025-12-31T23:59:00");
        assert_eq!(parse_expires("2025-12-31T23:59:59.123456").unwrap().0, "2025-12-31T23:59:59");
        assert_eq!(parse_expires("2026-01-01T01:00:00+01:00").unwrap().0, "2026-01-01T00:00:00");
        for bad in ["", "tomorrow", "2025-13-01", "2025-12-31T25:00"] {
            assert!(parse_expires(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configs_have_the_three_layouts_clients_expect() {
        let key = WgKey([1; 32]);
        let config = ClientConfig {
            private_key: &key,
            address: "10.0.0.2",
            ipv6_address: None,
            dns: "8.8.8.8",
            ipv6_dns: "2001:4860:4860::8888",
            mtu: "1420",
            server_public_key: "SERVERKEY=",
            endpoint_host: "203.0.113.7",
            port: 51820,
        };
        let created = config.render(ConfigLayout::Created);
        assert!(created.starts_with("[Interface]\nPrivateKey = AQEB"));
        assert!(
            created.contains("\nAddress = 10.0.0.2/32\nDNS = 8.8.8.8\nMTU = 1420\n\n[Peer]\nPublicKey = SERVERKEY=\n")
        );
        assert!(
            created.ends_with("Endpoint = 203.0.113.7:51820\nAllowedIPs = 0.0.0.0/0, ::/0\nPersistentKeepalive = 25\n")
        );
        let fetched = config.render(ConfigLayout::Fetched);
        assert!(fetched.starts_with("\n[Interface]"));
        assert!(fetched.contains("DNS = 8.8.8.8, 2001:4860:4860::8888\n"));
        assert_eq!(config.render(ConfigLayout::Qr), fetched.trim_matches('\n'));
        let v6 = ClientConfig { endpoint_host: "2001:db8::1", ..config };
        assert!(v6.render(ConfigLayout::Qr).contains("Endpoint = [2001:db8::1]:51820"));
    }

    #[test]
    fn generated_keys_match_their_private_half_and_suit_urls() {
        let pair = KeyPair::generate_url_safe();
        assert!(!pair.public.to_base64().contains('/'));
        assert_eq!(KeyPair::from_private(pair.private), pair);
        assert_ne!(KeyPair::generate().private, KeyPair::generate().private);
    }

    #[test]
    fn qr_codes_are_png_images() {
        let png = qr_png("[Interface]\nPrivateKey = x\n").unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
