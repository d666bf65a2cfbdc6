//! The v2ray-stat API's formats (`api-docs/v2ray-stat.md`): the `stats_columns` settings, the
//! plain-text `/stats` and `/dns_stats` tables, the `/users` JSON element, the `users_file` of
//! `bulk_add_users`, the `adjust_date` offsets and the date strings the original shows.
//!
//! Pure functions shared by the agent (its local API) and the controller (the same endpoints
//! fleet-wide), so both render byte-for-byte the same text. Nothing here travels over the link:
//! these are not wire types and carry no golden bytes.
//!
//! Dates are shown in UTC. The original mixes the host's local zone (`created`, `last_seen`) with
//! UTC (`adjust_date` parses `sub_end` as UTC); one zone everywhere keeps `adjust_date` exact.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::macros::format_description;
use time::OffsetDateTime;

use crate::users::{DnsStat, SourceStat, UserStat, UserStats};

/// `sort_order` / the second word of a `sort` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortOrder {
    Asc,
    Desc,
}

impl SortOrder {
    /// `ASC` or `DESC`.
    pub fn as_str(self) -> &'static str {
        match self {
            SortOrder::Asc => "ASC",
            SortOrder::Desc => "DESC",
        }
    }

    /// `ASC`/`DESC`, any case (the original compares the upper-cased word).
    pub fn parse(s: &str) -> Option<SortOrder> {
        if s.eq_ignore_ascii_case("asc") {
            Some(SortOrder::Asc)
        } else if s.eq_ignore_ascii_case("desc") {
            Some(SortOrder::Desc)
        } else {
            None
        }
    }

    fn apply(self, ord: Ordering) -> Ordering {
        match self {
            SortOrder::Asc => ord,
            SortOrder::Desc => ord.reverse(),
        }
    }
}

/// Declares a column enum with its config key, the original's table header, and whether it is a
/// traffic column (right-aligned, human units).
macro_rules! columns {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $key:literal, $header:literal, $traffic:literal;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every column, in the document's order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// Name in `stats_columns` and in `sort_by`.
            pub fn key(self) -> &'static str {
                match self {
                    $($name::$variant => $key,)*
                }
            }

            /// Table header, as the original titles the column.
            pub fn header(self) -> &'static str {
                match self {
                    $($name::$variant => $header,)*
                }
            }

            /// A traffic column: right-aligned and shown in human units.
            pub fn is_traffic(self) -> bool {
                match self {
                    $($name::$variant => $traffic,)*
                }
            }

            /// The column named `key` (exact, lower case, as the original matches it).
            pub fn from_key(key: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|c| c.key() == key)
            }

            /// Every key, comma-separated, for error messages and warnings.
            pub fn allowed() -> String {
                Self::ALL.iter().map(|c| c.key()).collect::<Vec<_>>().join(", ")
            }
        }
    };
}

columns! {
    /// A column of the server (traffic sources) section of `/stats`.
    ServerColumn {
        /// Inbound or outbound tag.
        Source = "source", "Source", false;
        Rate = "rate", "Rate", true;
        Uplink = "uplink", "Uplink", true;
        Downlink = "downlink", "Downlink", true;
        SessUplink = "sess_uplink", "Sess Up", true;
        SessDownlink = "sess_downlink", "Sess Down", true;
    }
}

columns! {
    /// A column of the client section of `/stats` (also the values `sort_by` takes).
    ClientColumn {
        User = "user", "User", false;
        /// The credential: UUID or password.
        Uuid = "uuid", "ID", false;
        LastSeen = "last_seen", "Last seen", false;
        Rate = "rate", "Rate", true;
        Uplink = "uplink", "Uplink", true;
        Downlink = "downlink", "Downlink", true;
        SessUplink = "sess_uplink", "Sess Up", true;
        SessDownlink = "sess_downlink", "Sess Down", true;
        Enabled = "enabled", "Enabled", false;
        SubEnd = "sub_end", "Sub end", false;
        Renew = "renew", "Renew", false;
        LimIp = "lim_ip", "Lim", false;
        Ips = "ips", "Ips", false;
        Created = "created", "Created", false;
    }
}

/// Client columns that only per-user counters fill: unavailable where `per_user_stats` is false.
const PER_USER_COUNTER_COLUMNS: [ClientColumn; 6] = [
    ClientColumn::LastSeen,
    ClientColumn::Rate,
    ClientColumn::Uplink,
    ClientColumn::Downlink,
    ClientColumn::SessUplink,
    ClientColumn::SessDownlink,
];

/// The `stats_columns` setting, with the original's keys (YAML `stats_columns:` of its
/// config.yaml, or TOML `[stats_columns.server]` / `[stats_columns.client]` in agent.toml).
///
/// Column names and sort strings stay text here so that a wrong one is dropped with a warning by
/// [`StatsColumns::resolve`], as the original does, instead of failing the whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsColumns {
    /// Missing (or YAML `null`): the section is not shown.
    #[serde(default)]
    pub server: Option<StatsSection>,
    /// Missing (or YAML `null`): the section is not shown.
    #[serde(default)]
    pub client: Option<StatsSection>,
}

/// One section of [`StatsColumns`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsSection {
    /// `"<column> <ASC|DESC>"`; missing: `source ASC` (server) or `user ASC` (client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
    /// Columns in display order; missing or empty hides the section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

impl Default for StatsColumns {
    /// What the original's shipped config.yaml shows: sources with rate and totals, clients with
    /// last seen, rate and totals; default sorts.
    fn default() -> Self {
        let section =
            |cols: &[&str]| StatsSection { sort: None, columns: Some(cols.iter().map(|c| c.to_string()).collect()) };
        StatsColumns {
            server: Some(section(&["source", "rate", "uplink", "downlink"])),
            client: Some(section(&["user", "last_seen", "rate", "uplink", "downlink"])),
        }
    }
}

/// [`StatsColumns`] checked: known columns only, sorts parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedColumns {
    /// Empty: the server section is not shown.
    pub server: Vec<ServerColumn>,
    /// Order of the server rows.
    pub server_sort: (ServerColumn, SortOrder),
    /// Empty: the client section is not shown.
    pub client: Vec<ClientColumn>,
    /// Order of the client rows unless the request's `sort_by`/`sort_order` say otherwise.
    pub client_sort: (ClientColumn, SortOrder),
}

impl Default for ResolvedColumns {
    fn default() -> Self {
        StatsColumns::default().resolve().0
    }
}

impl StatsColumns {
    /// Checks the setting: unknown or repeated columns are dropped and a bad sort falls back to
    /// the default, each with a warning to log (the original logs and carries on the same way).
    pub fn resolve(&self) -> (ResolvedColumns, Vec<String>) {
        let mut warnings = Vec::new();
        let server_section = self.server.clone().unwrap_or_default();
        let client_section = self.client.clone().unwrap_or_default();
        let server =
            resolve_columns("server", &server_section, ServerColumn::from_key, ServerColumn::allowed, &mut warnings);
        let client =
            resolve_columns("client", &client_section, ClientColumn::from_key, ClientColumn::allowed, &mut warnings);
        let server_sort = resolve_sort(
            "server",
            server_section.sort.as_deref(),
            (ServerColumn::Source, SortOrder::Asc),
            ServerColumn::from_key,
            |c| c.key(),
            &mut warnings,
        );
        let client_sort = resolve_sort(
            "client",
            client_section.sort.as_deref(),
            (ClientColumn::User, SortOrder::Asc),
            ClientColumn::from_key,
            |c| c.key(),
            &mut warnings,
        );
        (ResolvedColumns { server, server_sort, client, client_sort }, warnings)
    }
}

fn resolve_columns<C: Copy + PartialEq>(
    section: &str,
    settings: &StatsSection,
    from_key: fn(&str) -> Option<C>,
    allowed: fn() -> String,
    warnings: &mut Vec<String>,
) -> Vec<C> {
    let mut out = Vec::new();
    for name in settings.columns.iter().flatten() {
        match from_key(name.trim()) {
            Some(c) if out.contains(&c) => {
                warnings.push(format!("stats_columns.{section}: column '{name}' listed twice, showing it once"))
            }
            Some(c) => out.push(c),
            None => warnings
                .push(format!("stats_columns.{section}: unknown column '{name}' ignored (valid: {})", allowed())),
        }
    }
    out
}

fn resolve_sort<C: Copy>(
    section: &str,
    sort: Option<&str>,
    default: (C, SortOrder),
    from_key: fn(&str) -> Option<C>,
    key: fn(C) -> &'static str,
    warnings: &mut Vec<String>,
) -> (C, SortOrder) {
    let Some(sort) = sort.filter(|s| !s.trim().is_empty()) else {
        return default;
    };
    let fallback = format!("{} {}", key(default.0), default.1.as_str());
    let words: Vec<&str> = sort.split_whitespace().collect();
    let [column, order] = words[..] else {
        warnings.push(format!("stats_columns.{section}.sort: '{sort}' is not '<column> <ASC|DESC>', using {fallback}"));
        return default;
    };
    let Some(column) = from_key(column) else {
        warnings.push(format!("stats_columns.{section}.sort: unknown column '{column}', using {fallback}"));
        return default;
    };
    let order = SortOrder::parse(order).unwrap_or_else(|| {
        warnings.push(format!("stats_columns.{section}.sort: order '{order}' is not ASC or DESC, using ASC"));
        SortOrder::Asc
    });
    (column, order)
}

/// A rate as the original's `/stats` shows it (decimal units of bits per second).
pub fn format_rate(bps: u64) -> String {
    match bps {
        b if b >= 1_000_000 => format!("{:.2} Mbps", b as f64 / 1_000_000.0),
        b if b >= 1_000 => format!("{:.2} Kbps", b as f64 / 1_000.0),
        b => format!("{b} bps"),
    }
}

/// A byte count as the original's `/stats` shows it (binary units, at most GB).
pub fn format_bytes(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match bytes {
        b if b >= GIB => format!("{:.2} GB", b as f64 / GIB as f64),
        b if b >= MIB => format!("{:.2} MB", b as f64 / MIB as f64),
        b if b >= KIB => format!("{:.2} KB", b as f64 / KIB as f64),
        b => format!("{b} B"),
    }
}

fn utc(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok()
}

/// The original's stored date format (`2006-01-02-15`, the hour in UTC), used for `sub_end` and
/// `created`; 0 (never / unknown) is the empty string, as the original keeps it.
pub fn format_hour_date(ms: i64) -> String {
    if ms == 0 {
        return String::new();
    }
    utc(ms)
        .and_then(|t| t.format(format_description!("[year]-[month]-[day]-[hour]")).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Parses the original's `2006-01-02-15` (UTC) back into unix milliseconds.
pub fn parse_hour_date(s: &str) -> Option<i64> {
    let (date_part, hour) = s.rsplit_once('-')?;
    let date = time::Date::parse(date_part, format_description!("[year]-[month]-[day]")).ok()?;
    let hour: u8 = hour.parse().ok().filter(|h| *h < 24 && hour.len() == 2)?;
    let at = date.with_hms(hour, 0, 0).ok()?.assume_utc();
    Some(at.unix_timestamp() * 1000)
}

/// How long a non-zero rate counts as "online" after the poll that saw it: a stalled poller
/// (core down) must not leave a user online forever on its last rate.
const ONLINE_WINDOW_MS: i64 = 5 * 60_000;

/// `last_seen` as the original shows it: `online` while the user has traffic, else the minute
/// traffic was last seen (`2006-01-02 15:04`, UTC), or empty if never.
pub fn format_last_seen(user: &UserStat, now_ms: i64) -> String {
    match user.last_seen_ms {
        Some(seen) if user.rate_bps > 0 && now_ms.saturating_sub(seen) <= ONLINE_WINDOW_MS => "online".into(),
        Some(seen) => utc(seen)
            .and_then(|t| t.format(format_description!("[year]-[month]-[day] [hour]:[minute]")).ok())
            .unwrap_or_else(|| seen.to_string()),
        None if user.rate_bps > 0 => "online".into(),
        None => String::new(),
    }
}

/// One row of the original's plain-text tables: headers left-aligned, traffic cells
/// right-aligned, every column followed by two spaces (trailing ones included).
fn render_table(headers: &[(&str, bool)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for ((header, _), w) in headers.iter().zip(&widths) {
        out.push_str(&format!("{header:<width$}", width = w + 2));
    }
    out.push('\n');
    for w in &widths {
        out.push_str(&"-".repeat(*w));
        out.push_str("  ");
    }
    out.push('\n');
    for row in rows {
        for (((_, right), w), cell) in headers.iter().zip(&widths).zip(row) {
            if *right {
                out.push_str(&format!("{cell:>w$}  "));
            } else {
                out.push_str(&format!("{cell:<width$}", width = w + 2));
            }
        }
        out.push('\n');
    }
    out
}

fn server_cell(s: &SourceStat, c: ServerColumn) -> String {
    match c {
        ServerColumn::Source => s.tag.clone(),
        ServerColumn::Rate => format_rate(s.rate_bps),
        ServerColumn::Uplink => format_bytes(s.uplink),
        ServerColumn::Downlink => format_bytes(s.downlink),
        ServerColumn::SessUplink => format_bytes(s.sess_uplink),
        ServerColumn::SessDownlink => format_bytes(s.sess_downlink),
    }
}

fn server_cmp(a: &SourceStat, b: &SourceStat, c: ServerColumn) -> Ordering {
    match c {
        ServerColumn::Source => a.tag.cmp(&b.tag),
        ServerColumn::Rate => a.rate_bps.cmp(&b.rate_bps),
        ServerColumn::Uplink => a.uplink.cmp(&b.uplink),
        ServerColumn::Downlink => a.downlink.cmp(&b.downlink),
        ServerColumn::SessUplink => a.sess_uplink.cmp(&b.sess_uplink),
        ServerColumn::SessDownlink => a.sess_downlink.cmp(&b.sess_downlink),
    }
}

fn client_cell(u: &UserStat, c: ClientColumn, now_ms: i64) -> String {
    match c {
        ClientColumn::User => u.email.clone(),
        ClientColumn::Uuid => u.secret.clone(),
        ClientColumn::LastSeen => format_last_seen(u, now_ms),
        ClientColumn::Rate => format_rate(u.rate_bps),
        ClientColumn::Uplink => format_bytes(u.uplink),
        ClientColumn::Downlink => format_bytes(u.downlink),
        ClientColumn::SessUplink => format_bytes(u.sess_uplink),
        ClientColumn::SessDownlink => format_bytes(u.sess_downlink),
        ClientColumn::Enabled => u.enabled.to_string(),
        ClientColumn::SubEnd => format_hour_date(u.sub_end_ms),
        ClientColumn::Renew => u.renew_days.to_string(),
        ClientColumn::LimIp => u.limit_ip.to_string(),
        ClientColumn::Ips => u.ips.join(","),
        ClientColumn::Created => format_hour_date(u.created_ms),
    }
}

/// Orders like the original's SQL over its text/integer columns: `enabled` as the words
/// (`false` < `true`), `last_seen` never < a date < online, dates with "never" first.
fn client_cmp(a: &UserStat, b: &UserStat, c: ClientColumn, now_ms: i64) -> Ordering {
    let seen_rank = |u: &UserStat| {
        let shown = format_last_seen(u, now_ms);
        (shown == "online", u.last_seen_ms.unwrap_or(i64::MIN))
    };
    match c {
        ClientColumn::User => a.email.cmp(&b.email),
        ClientColumn::Uuid => a.secret.cmp(&b.secret),
        ClientColumn::LastSeen => seen_rank(a).cmp(&seen_rank(b)),
        ClientColumn::Rate => a.rate_bps.cmp(&b.rate_bps),
        ClientColumn::Uplink => a.uplink.cmp(&b.uplink),
        ClientColumn::Downlink => a.downlink.cmp(&b.downlink),
        ClientColumn::SessUplink => a.sess_uplink.cmp(&b.sess_uplink),
        ClientColumn::SessDownlink => a.sess_downlink.cmp(&b.sess_downlink),
        ClientColumn::Enabled => a.enabled.cmp(&b.enabled),
        ClientColumn::SubEnd => a.sub_end_ms.cmp(&b.sub_end_ms),
        ClientColumn::Renew => a.renew_days.cmp(&b.renew_days),
        ClientColumn::LimIp => a.limit_ip.cmp(&b.limit_ip),
        ClientColumn::Ips => a.ips.join(",").cmp(&b.ips.join(",")),
        ClientColumn::Created => a.created_ms.cmp(&b.created_ms),
    }
}

/// Client columns the node's core cannot fill: the per-user counters when `per_user_stats` is
/// false, plus every client column the core names in `unavailable`.
pub fn unavailable_client_columns(stats: &UserStats) -> Vec<ClientColumn> {
    ClientColumn::ALL
        .iter()
        .copied()
        .filter(|c| {
            (!stats.per_user_stats && PER_USER_COUNTER_COLUMNS.contains(c))
                || stats.unavailable.iter().any(|u| u == c.key())
        })
        .collect()
}

/// The `/stats` answer: the server section then the client section, in the original's layout.
/// `client_sort` overrides the configured client sort (the `sort_by`/`sort_order` parameters).
/// Cells a core cannot fill read `n/a`, and a note under the client table names those columns.
pub fn render_stats(
    stats: &UserStats,
    columns: &ResolvedColumns,
    client_sort: Option<(ClientColumn, SortOrder)>,
    now_ms: i64,
) -> String {
    let mut out = String::new();
    if !columns.server.is_empty() {
        let (by, order) = columns.server_sort;
        let mut sources: Vec<&SourceStat> = stats.sources.iter().collect();
        // Ties keep a stable order by tag (SQLite's order for equal keys is unspecified).
        sources.sort_by(|a, b| order.apply(server_cmp(a, b, by)).then_with(|| a.tag.cmp(&b.tag)));
        let headers: Vec<(&str, bool)> = columns.server.iter().map(|c| (c.header(), c.is_traffic())).collect();
        let rows: Vec<Vec<String>> =
            sources.iter().map(|s| columns.server.iter().map(|c| server_cell(s, *c)).collect()).collect();
        out.push_str("➤  Server Statistics:\n");
        out.push_str(&render_table(&headers, &rows));
        out.push('\n');
    }
    if !columns.client.is_empty() {
        let (by, order) = client_sort.unwrap_or(columns.client_sort);
        let missing = unavailable_client_columns(stats);
        let mut users: Vec<&UserStat> = stats.users.iter().collect();
        users.sort_by(|a, b| order.apply(client_cmp(a, b, by, now_ms)).then_with(|| a.email.cmp(&b.email)));
        let headers: Vec<(&str, bool)> = columns.client.iter().map(|c| (c.header(), c.is_traffic())).collect();
        let rows: Vec<Vec<String>> = users
            .iter()
            .map(|u| {
                columns
                    .client
                    .iter()
                    .map(|c| if missing.contains(c) { "n/a".to_string() } else { client_cell(u, *c, now_ms) })
                    .collect()
            })
            .collect();
        out.push_str("➤  Client Statistics:\n");
        out.push_str(&render_table(&headers, &rows));
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|c| c.key()).collect();
            out.push_str(&format!(
                "Note: this node's proxy core cannot fill these client columns (shown as n/a): {}\n",
                names.join(", ")
            ));
        }
    }
    if out.is_empty() {
        return "No custom columns specified in config.\n".into();
    }
    // The original ends the answer with Println, one more newline.
    out.push('\n');
    out
}

/// The `/dns_stats` answer in the original's layout: a title, a header and one row per domain.
pub fn render_dns_stats(stats: &[DnsStat]) -> String {
    let mut out = String::from(" 📊 DNS Query Statistics:\n");
    out.push_str(&format!("{:<12} {:<6} {}\n", "User", "Count", "Domain"));
    out.push_str(&"-".repeat(61));
    out.push('\n');
    for s in stats {
        out.push_str(&format!("{:<12} {:<6} {}\n", s.user, s.count, s.domain));
    }
    out.push('\n');
    out
}

/// One element of the `/users` JSON array, with the original's field names and types (`rate`
/// and `enabled` are strings there; dates are `2006-01-02-15` or empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserJson {
    pub user: String,
    /// The credential: UUID or password.
    pub uuid: String,
    /// Bits per second, as a decimal string.
    pub rate: String,
    /// `"true"` or `"false"`.
    pub enabled: String,
    pub created: String,
    pub sub_end: String,
    pub renew: u32,
    pub lim_ip: u32,
    /// Source addresses, comma-separated.
    pub ips: String,
    pub uplink: u64,
    pub downlink: u64,
    pub sess_uplink: u64,
    pub sess_downlink: u64,
}

impl From<&UserStat> for UserJson {
    fn from(u: &UserStat) -> Self {
        UserJson {
            user: u.email.clone(),
            uuid: u.secret.clone(),
            rate: u.rate_bps.to_string(),
            enabled: u.enabled.to_string(),
            created: format_hour_date(u.created_ms),
            sub_end: format_hour_date(u.sub_end_ms),
            renew: u.renew_days,
            lim_ip: u.limit_ip,
            ips: u.ips.join(","),
            uplink: u.uplink,
            downlink: u.downlink,
            sess_uplink: u.sess_uplink,
            sess_downlink: u.sess_downlink,
        }
    }
}

/// Longest user name accepted.
pub const MAX_USER_LEN: usize = 64;
/// Longest credential accepted (a trojan/shadowsocks password can be long, but not unbounded).
pub const MAX_CREDENTIAL_LEN: usize = 256;
/// Longest inbound tag accepted.
pub const MAX_TAG_LEN: usize = 64;

/// Checks a user name (the core's `email`). Refused: empty, too long, whitespace or control
/// characters, `,` and `#` (they split and end lines of the users file), `/` and `\` (the name is
/// a path segment of subscription URLs), `"`, and `>>>` (the separator of the cores' counter
/// names: `user>>>NAME>>>traffic>>>uplink`).
pub fn validate_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("user name is empty".into());
    }
    if name.chars().count() > MAX_USER_LEN {
        return Err(format!("user name is longer than {MAX_USER_LEN} characters"));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("user name contains whitespace or a control character ({c:?})"));
    }
    if let Some(c) = name.chars().find(|c| matches!(c, ',' | '#' | '/' | '\\' | '"')) {
        return Err(format!("user name contains '{c}'"));
    }
    if name.contains(">>>") {
        return Err("user name contains '>>>'".into());
    }
    Ok(())
}

/// True for the 8-4-4-4-12 shape of a UUID, whatever the characters.
fn looks_like_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
}

/// Checks a credential (UUID for vless/vmess, password for trojan/shadowsocks). The inbound's
/// protocol is not known here, so any non-blank text is taken, but one shaped like a UUID must
/// be a valid one (a mistyped UUID would otherwise become a password nobody can use).
pub fn validate_credential(credential: &str) -> Result<(), String> {
    if credential.is_empty() {
        return Err("credential is empty".into());
    }
    if credential.chars().count() > MAX_CREDENTIAL_LEN {
        return Err(format!("credential is longer than {MAX_CREDENTIAL_LEN} characters"));
    }
    if credential.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("credential contains whitespace or a control character".into());
    }
    if looks_like_uuid(credential)
        && !credential.bytes().enumerate().all(|(i, b)| matches!(i, 8 | 13 | 18 | 23) || b.is_ascii_hexdigit())
    {
        return Err(format!("credential '{credential}' looks like a UUID but is not a valid one"));
    }
    Ok(())
}

/// Checks an inbound tag given by a caller (whether the node has it is the core's answer).
pub fn validate_inbound_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("inboundTag is empty".into());
    }
    if tag.chars().count() > MAX_TAG_LEN {
        return Err(format!("inboundTag is longer than {MAX_TAG_LEN} characters"));
    }
    if tag.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',') {
        return Err("inboundTag contains whitespace, a control character or ','".into());
    }
    Ok(())
}

/// One non-blank line of a `users_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsersFileLine {
    /// A user to add; `None` fields take the defaults (generated credential, default inbound).
    Ok { line_no: usize, user: String, credential: Option<String>, inbound_tag: Option<String> },
    /// A line that cannot be used, with its text (comment removed) and why.
    Err { line_no: usize, text: String, why: String },
}

impl UsersFileLine {
    /// 1-based line number in the file.
    pub fn line_no(&self) -> usize {
        match self {
            UsersFileLine::Ok { line_no, .. } | UsersFileLine::Err { line_no, .. } => *line_no,
        }
    }
}

/// Removes a `# comment`: a `#` at the start of the line or after whitespace (a `#` inside a
/// password, `pa#ss`, is kept).
fn strip_comment(line: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return &line[..i];
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Parses a `bulk_add_users` file: one user a line as `user,credential,inboundTag`,
/// `user,credential`, `user` or `user,,inboundTag`. Blank lines and `#` comments (whole-line or
/// trailing, as in the document's example) are skipped; whitespace around fields, CRLF line ends
/// and a UTF-8 BOM are accepted. A user repeated in the file is refused on its second line.
pub fn parse_users_file(text: &str) -> Vec<UsersFileLine> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let data = strip_comment(raw.strip_suffix('\r').unwrap_or(raw)).trim();
        if data.is_empty() {
            continue;
        }
        let err = |why: String| UsersFileLine::Err { line_no, text: data.to_string(), why };
        let fields: Vec<&str> = data.split(',').map(str::trim).collect();
        if fields.len() > 3 {
            out.push(err("too many fields: expected user[,credential[,inboundTag]]".into()));
            continue;
        }
        if fields.iter().any(|f| f.chars().any(char::is_whitespace)) {
            out.push(err("whitespace inside a field (start comments with '#')".into()));
            continue;
        }
        let user = fields[0];
        if let Err(why) = validate_user_name(user) {
            out.push(err(why));
            continue;
        }
        let credential = fields.get(1).filter(|c| !c.is_empty()).map(|c| c.to_string());
        if let Some(Err(why)) = credential.as_deref().map(validate_credential) {
            out.push(err(why));
            continue;
        }
        let inbound_tag = fields.get(2).filter(|t| !t.is_empty()).map(|t| t.to_string());
        if let Some(Err(why)) = inbound_tag.as_deref().map(validate_inbound_tag) {
            out.push(err(why));
            continue;
        }
        // Cores match users case-insensitively, so `Bob` and `bob` are the same user.
        if let Some(first) = seen.get(&user.to_ascii_lowercase()) {
            out.push(err(format!("user '{user}' already appears on line {first}")));
            continue;
        }
        seen.insert(user.to_ascii_lowercase(), line_no);
        out.push(UsersFileLine::Ok { line_no, user: user.to_string(), credential, inbound_tag });
    }
    out
}

/// An `adjust_date` offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateOffset {
    /// `0`: no end date.
    Never,
    /// Move the end by days and hours, forward or back.
    Shift { negative: bool, days: u32, hours: u32 },
}

/// Largest day count of an offset (about 270 years): keeps the arithmetic far from overflow.
const MAX_OFFSET_DAYS: u32 = 100_000;
const HOUR_MS: i64 = 3_600_000;

/// Parses an `adjust_date` `sub_end`: `+days`, `-days`, `+days:hours`, `-days:hours`, unsigned
/// (forward), or `0` for no end date. A leading space stands for `+`: `curl -d "sub_end=+30:0"`
/// sends a raw `+`, which form decoding turns into a space.
pub fn parse_date_offset(s: &str) -> Result<DateOffset, String> {
    let bad = || {
        format!(
            "sub_end must be an offset like +30, -7, +30:12 or -1:6 (days[:hours]), or 0 for no end date; got '{s}'"
        )
    };
    let t = s.trim_end();
    if t == "0" {
        return Ok(DateOffset::Never);
    }
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'+') => (false, &t[1..]),
        Some(b'-') => (true, &t[1..]),
        // Exactly one: the '+' curl sent. More spaces were never a '+'.
        Some(b' ') => (false, &t[1..]),
        _ => (false, t),
    };
    let (days, hours) = match rest.split_once(':') {
        Some((d, h)) => (d, Some(h)),
        None => (rest, None),
    };
    let number = |n: &str| -> Result<u32, String> {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        n.parse::<u32>().map_err(|_| format!("sub_end offset '{s}' is too large"))
    };
    let days = number(days)?;
    let hours = hours.map(number).transpose()?.unwrap_or(0);
    if days > MAX_OFFSET_DAYS || hours > MAX_OFFSET_DAYS * 24 {
        return Err(format!("sub_end offset '{s}' is too large (at most {MAX_OFFSET_DAYS} days)"));
    }
    Ok(DateOffset::Shift { negative, days, hours })
}

impl DateOffset {
    /// The new subscription end (unix ms, 0 = never) from `base_ms` (the current end, or now when
    /// there is none). The result falls on a whole UTC hour, as the original stores
    /// `2006-01-02-15`; an offset far into the past gives the earliest such hour instead of 0,
    /// which would mean "never".
    pub fn apply(self, base_ms: i64) -> i64 {
        match self {
            DateOffset::Never => 0,
            DateOffset::Shift { negative, days, hours } => {
                let delta = (i64::from(days) * 24 + i64::from(hours)) * HOUR_MS;
                let t = if negative { base_ms.saturating_sub(delta) } else { base_ms.saturating_add(delta) };
                (t - t.rem_euclid(HOUR_MS)).max(HOUR_MS)
            }
        }
    }
}

impl fmt::Display for DateOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DateOffset::Never => f.write_str("0"),
            DateOffset::Shift { negative, days, hours } => {
                write!(f, "{}{days}:{hours}", if *negative { '-' } else { '+' })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    /// 2025-07-15 12:00:00 UTC.
    const NOON: i64 = 1_752_580_800_000;

    fn user(email: &str) -> UserStat {
        UserStat {
            email: email.into(),
            secret: "123e4567-e89b-12d3-a456-426614174000".into(),
            inbound_tag: "vless-in".into(),
            last_seen_ms: None,
            rate_bps: 0,
            uplink: 0,
            downlink: 0,
            sess_uplink: 0,
            sess_downlink: 0,
            enabled: true,
            sub_end_ms: 0,
            renew_days: 0,
            limit_ip: 0,
            ips: vec![],
            created_ms: 0,
        }
    }

    fn source(tag: &str, rate: u64, up: u64, down: u64) -> SourceStat {
        SourceStat {
            direction: "inbound".into(),
            tag: tag.into(),
            rate_bps: rate,
            uplink: up,
            downlink: down,
            sess_uplink: up / 2,
            sess_downlink: down / 2,
        }
    }

    fn sample() -> UserStats {
        let mut alice = user("alice");
        alice.rate_bps = 1_500_000;
        alice.last_seen_ms = Some(NOON - 10_000);
        alice.uplink = 3 * 1024 * 1024;
        alice.downlink = 5 * (1 << 30);
        let mut bob = user("bob");
        bob.last_seen_ms = Some(NOON - 3 * 3_600_000);
        bob.uplink = 2048;
        bob.downlink = 100;
        UserStats {
            sources: vec![source("vless-in", 2500, 10_000, 2_000_000), source("direct", 0, 5, 0)],
            users: vec![bob, alice, user("carol")],
            per_user_stats: true,
            unavailable: vec![],
        }
    }

    #[test]
    fn default_columns_render_the_originals_layout() {
        let text = render_stats(&sample(), &ResolvedColumns::default(), None, NOON);
        let expected = "\
➤  Server Statistics:
Source    Rate       Uplink   Downlink  
--------  ---------  -------  --------  
direct        0 bps      5 B       0 B  
vless-in  2.50 Kbps  9.77 KB   1.91 MB  

➤  Client Statistics:
User   Last seen         Rate       Uplink   Downlink  
-----  ----------------  ---------  -------  --------  
alice  online            1.50 Mbps  3.00 MB   5.00 GB  
bob    2025-07-15 09:00      0 bps  2.00 KB     100 B  
carol                        0 bps      0 B       0 B  

";
        assert_eq!(text, expected);
    }

    #[test]
    fn sorting_and_every_client_column() {
        let stats = sample();
        let (cols, warnings) = StatsColumns {
            server: Some(StatsSection { sort: Some("rate desc".into()), columns: Some(vec!["source".into()]) }),
            client: Some(StatsSection {
                sort: None,
                columns: Some(ClientColumn::ALL.iter().map(|c| c.key().to_string()).collect()),
            }),
        }
        .resolve();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cols.server_sort, (ServerColumn::Rate, SortOrder::Desc));
        let text = render_stats(&stats, &cols, Some((ClientColumn::Rate, SortOrder::Desc)), NOON);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[3], "vless-in  ", "highest rate first");
        assert!(lines[7].starts_with("User   ID   "), "{}", lines[7]);
        assert!(lines[7].trim_end().ends_with("Lim  Ips  Created"), "{}", lines[7]);
        assert!(lines[9].starts_with("alice "), "rate DESC puts alice first: {}", lines[9]);
        // Equal rates keep the user order.
        assert!(lines[10].starts_with("bob ") && lines[11].starts_with("carol "));
        let text = render_stats(&stats, &cols, Some((ClientColumn::LastSeen, SortOrder::Asc)), NOON);
        let users: Vec<&str> = text.lines().skip(9).take(3).map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(users, ["carol", "bob", "alice"], "never < a date < online");
    }

    #[test]
    fn hidden_sections_and_unavailable_columns() {
        let mut stats = sample();
        let hidden = StatsColumns { server: Some(StatsSection::default()), client: None };
        assert_eq!(render_stats(&stats, &hidden.resolve().0, None, NOON), "No custom columns specified in config.\n");
        // The document's example without server statistics (JSON has the YAML's shape).
        let client_only: StatsColumns = serde_json::from_str(
            r#"{"server": {"columns": []}, "client": {"columns": ["user", "rate", "uplink", "downlink"]}}"#,
        )
        .unwrap();
        let cols = client_only.resolve().0;
        assert!(cols.server.is_empty());
        stats.per_user_stats = false;
        stats.unavailable = vec!["ips".into(), "bogus".into()];
        let text = render_stats(&stats, &cols, None, NOON);
        assert!(text.starts_with("➤  Client Statistics:\nUser   Rate  Uplink  Downlink  \n"), "{text}");
        assert!(text.contains("alice   n/a     n/a       n/a  \n"), "{text}");
        assert!(text.ends_with(
            "Note: this node's proxy core cannot fill these client columns (shown as n/a): \
             last_seen, rate, uplink, downlink, sess_uplink, sess_downlink, ips\n\n"
        ));
    }

    #[test]
    fn resolve_warns_and_falls_back() {
        let cols = StatsColumns {
            server: Some(StatsSection {
                sort: Some("bogus DESC".into()),
                columns: Some(vec!["source".into(), "cpu".into(), "source".into()]),
            }),
            client: Some(StatsSection { sort: Some("rate UP".into()), columns: Some(vec!["user".into()]) }),
        };
        let (r, warnings) = cols.resolve();
        assert_eq!(r.server, [ServerColumn::Source]);
        assert_eq!(r.server_sort, (ServerColumn::Source, SortOrder::Asc));
        assert_eq!(r.client_sort, (ClientColumn::Rate, SortOrder::Asc));
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0].contains("unknown column 'cpu'") && warnings[0].contains("sess_downlink"));
        assert!(warnings[1].contains("listed twice"));
        assert!(warnings[2].contains("unknown column 'bogus', using source ASC"));
        assert!(warnings[3].contains("order 'UP'"));
        let one_word =
            StatsColumns { server: None, client: Some(StatsSection { sort: Some("rate".into()), columns: None }) };
        let (r, warnings) = one_word.resolve();
        assert_eq!((r.client_sort, r.client.len()), ((ClientColumn::User, SortOrder::Asc), 0));
        assert!(warnings[0].contains("is not '<column> <ASC|DESC>'"));
        // The defaults are the original's shipped config.yaml.
        let d = ResolvedColumns::default();
        assert_eq!(d.server, [ServerColumn::Source, ServerColumn::Rate, ServerColumn::Uplink, ServerColumn::Downlink]);
        assert_eq!(d.client.len(), 5);
        assert_eq!(d.client_sort, (ClientColumn::User, SortOrder::Asc));
    }

    #[test]
    fn units_follow_the_original() {
        assert_eq!(format_rate(999), "999 bps");
        assert_eq!(format_rate(1_000), "1.00 Kbps");
        assert_eq!(format_rate(2_345_678), "2.35 Mbps");
        assert_eq!(format_rate(5_000_000_000), "5000.00 Mbps");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.00 KB");
        assert_eq!(format_bytes(1_572_864), "1.50 MB");
        assert_eq!(format_bytes(3 << 40), "3072.00 GB");
    }

    #[test]
    fn dates_and_users_json() {
        assert_eq!(format_hour_date(NOON + 59 * 60_000), "2025-07-15-12");
        assert_eq!(format_hour_date(0), "");
        assert_eq!(parse_hour_date("2025-07-15-12"), Some(NOON));
        assert_eq!(parse_hour_date("2025-07-15-24"), None);
        assert_eq!(parse_hour_date("2025-07-15"), None);
        let mut u = user("newuser");
        u.rate_bps = 800;
        u.sub_end_ms = NOON + 30 * DAY;
        u.created_ms = NOON;
        u.renew_days = 30;
        u.limit_ip = 5;
        u.ips = vec!["203.0.113.7".into(), "198.51.100.2".into()];
        u.uplink = 7;
        let json = serde_json::to_string(&UserJson::from(&u)).unwrap();
        assert_eq!(
            json,
            r#"{"user":"newuser","uuid":"123e4567-e89b-12d3-a456-426614174000","rate":"800","enabled":"true","created":"2025-07-15-12","sub_end":"2025-08-14-12","renew":30,"lim_ip":5,"ips":"203.0.113.7,198.51.100.2","uplink":7,"downlink":0,"sess_uplink":0,"sess_downlink":0}"#
        );
        // A stale rate (poller stalled) does not keep a user online.
        let mut stale = user("x");
        stale.rate_bps = 10;
        stale.last_seen_ms = Some(NOON - 3_600_000);
        assert_eq!(format_last_seen(&stale, NOON), "2025-07-15 11:00");
    }

    #[test]
    fn dns_table() {
        let rows = [DnsStat { user: "newuser".into(), domain: "example.com".into(), count: 42 }];
        assert_eq!(
            render_dns_stats(&rows),
            format!(
                " 📊 DNS Query Statistics:\nUser         Count  Domain\n{}\nnewuser      42     example.com\n\n",
                "-".repeat(61)
            )
        );
    }

    fn ok(line_no: usize, user: &str, credential: Option<&str>, tag: Option<&str>) -> UsersFileLine {
        UsersFileLine::Ok {
            line_no,
            user: user.into(),
            credential: credential.map(Into::into),
            inbound_tag: tag.map(Into::into),
        }
    }

    #[test]
    fn the_documents_users_file() {
        let doc = "user1,550e8400-e29b-41d4-a716-446655440000,vless-in  # Полный формат\n\
                   user2,6ba7b810-9dad-11d1-80b4-00c04fd430c8           # Без inboundTag\n\
                   user3                                                # Только имя, UUID будет сгенерирован\n\
                   user4,,vless-in                                      # Имя и inboundTag, UUID будет сгенерирован\n";
        assert_eq!(
            parse_users_file(doc),
            [
                ok(1, "user1", Some("550e8400-e29b-41d4-a716-446655440000"), Some("vless-in")),
                ok(2, "user2", Some("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), None),
                ok(3, "user3", None, None),
                ok(4, "user4", None, Some("vless-in")),
            ]
        );
    }

    #[test]
    fn users_file_edge_cases() {
        let text = "\u{feff}# header comment\r\n\
                    \r\n\
                    alice , pa#ss , trojan-in\r\n\
                    bob,\r\n\
                    ALICE\n\
                    a,b,c,d\n\
                    bad name,x\n\
                    carol,123e4567-e89b-12d3-a456-42661417400Z\n\
                    dave,x,tag\twith-tab\n\
                    has/slash\n\
                    eve extra words\n\
                    ,nouser\n\
                    \t   # indented comment\n\
                    frank";
        let lines = parse_users_file(text);
        assert_eq!(lines[0], ok(3, "alice", Some("pa#ss"), Some("trojan-in")));
        assert_eq!(lines[1], ok(4, "bob", None, None));
        let errs: Vec<(usize, &str)> = lines
            .iter()
            .filter_map(|l| match l {
                UsersFileLine::Err { line_no, why, .. } => Some((*line_no, why.as_str())),
                UsersFileLine::Ok { .. } => None,
            })
            .collect();
        assert_eq!(errs.len(), 8, "{errs:?}");
        assert_eq!(errs[0], (5, "user 'ALICE' already appears on line 3"));
        assert!(errs[1].1.starts_with("too many fields"));
        assert!(errs[2].1.starts_with("whitespace inside a field"));
        assert!(errs[3].1.contains("looks like a UUID"));
        assert!(errs[4].1.starts_with("whitespace inside a field"));
        assert_eq!(errs[5], (10, "user name contains '/'"));
        assert!(errs[6].1.starts_with("whitespace inside a field"));
        assert_eq!(errs[7], (12, "user name is empty"));
        assert_eq!(lines.last(), Some(&ok(14, "frank", None, None)));
        match &lines[2] {
            UsersFileLine::Err { text, .. } => assert_eq!(text, "ALICE"),
            other => panic!("{other:?}"),
        }
        assert!(parse_users_file("").is_empty());
        assert!(validate_user_name(&"x".repeat(65)).is_err());
        assert!(validate_user_name("a>>>b").is_err());
        assert!(validate_user_name("user@example.com").is_ok());
        assert!(validate_credential("123E4567-E89B-12D3-A456-426614174000").is_ok());
        assert!(validate_credential("a b").is_err());
    }

    #[test]
    fn date_offsets() {
        let shift = |negative, days, hours| DateOffset::Shift { negative, days, hours };
        assert_eq!(parse_date_offset("+30:0"), Ok(shift(false, 30, 0)));
        assert_eq!(parse_date_offset(" 30:0"), Ok(shift(false, 30, 0)), "form-decoded '+'");
        assert_eq!(parse_date_offset("-7"), Ok(shift(true, 7, 0)));
        assert_eq!(parse_date_offset("+5"), Ok(shift(false, 5, 0)));
        assert_eq!(parse_date_offset("-1:6"), Ok(shift(true, 1, 6)));
        assert_eq!(parse_date_offset("12"), Ok(shift(false, 12, 0)));
        assert_eq!(parse_date_offset("0"), Ok(DateOffset::Never));
        assert_eq!(parse_date_offset("+0"), Ok(shift(false, 0, 0)));
        for bad in ["", "+", "abc", "+1:", "1:x", "++1", "+-1", "1.5", "+ 1", "  1", " -1", "1:2:3", "99999999999"] {
            assert!(parse_date_offset(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(parse_date_offset("+100001").unwrap_err().contains("too large"));
        assert_eq!(shift(false, 30, 0).to_string(), "+30:0");
        assert_eq!(shift(true, 1, 6).to_string(), "-1:6");
        // Applied: whole hours, in UTC, never 0 ("never") by accident.
        assert_eq!(shift(false, 30, 0).apply(NOON), NOON + 30 * DAY);
        assert_eq!(shift(true, 1, 6).apply(NOON), NOON - DAY - 6 * 3_600_000);
        assert_eq!(shift(false, 0, 1).apply(NOON + 25 * 60_000), NOON + 3_600_000, "floored to the hour");
        assert_eq!(shift(true, 100_000, 0).apply(NOON), 3_600_000);
        assert_eq!(DateOffset::Never.apply(NOON), 0);
        assert_eq!(format_hour_date(shift(false, 30, 0).apply(NOON)), "2025-08-14-12");
    }
}
