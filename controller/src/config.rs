//! `controller.toml`: optional settings; CLI flags override them, and every key has a default.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Default config file.
pub const DEFAULT_CONFIG: &str = "/etc/flotilla/controller.toml";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/flotilla-controller";

/// Keys of `controller.toml`, all optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub http: Option<SocketAddr>,
    pub quic: Option<SocketAddr>,
    pub public_addr: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    pub join_token_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub agent_cert_lifetime: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    pub log: Option<String>,
    pub pam_service: Option<String>,
    /// URL prefix every API is also served under (reverse proxies), e.g. "/my-panel".
    pub base_path: Option<String>,
    /// `[monitoring]`: the Prometheus/Loki/Grafana stack the web UI's monitoring tab reports on.
    #[serde(default)]
    pub monitoring: MonitoringConfig,
    /// `[v2ray_stat]`: the fleet-wide v2ray-stat API.
    #[serde(default)]
    pub v2ray_stat: V2rayStatConfig,
    /// `[candy]`: the CandyPanel (WireGuard) API.
    #[serde(default)]
    pub candy: CandyConfig,
    /// `[install]`: the one-line node install.
    #[serde(default)]
    pub install: InstallConfig,
    /// `[external_api]`.
    #[serde(default)]
    pub external_api: ExternalApiConfig,
    /// `[vps]`.
    #[serde(default)]
    pub vps: VpsConfig,
    /// `[email]`: SMTP for notifications; the `SMTP_*` environment variables override it.
    #[serde(default)]
    pub email: EmailConfig,
    /// `[webhooks]`: delivery of the external API's webhooks.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
}

/// `[webhooks]` of `controller.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Base URL of Telegram's Bot API (default "https://api.telegram.org"); `telegram`
    /// destinations POST to `{telegram_api}/bot{token}/sendMessage`.
    pub telegram_api: Option<String>,
    /// Deliveries in flight at once (default 32).
    pub concurrency: Option<usize>,
}

/// `[email]` of `controller.toml`: the SMTP server notifications go through. Each key is
/// overridden by its environment variable (`SMTP_HOST`, `SMTP_PORT`, `SMTP_USER`, `SMTP_PASS`,
/// `SMTP_FROM`). Without a host no mail is sent.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server (`SMTP_HOST`); unset: e-mail is off.
    pub host: Option<String>,
    /// Its port (`SMTP_PORT`) [default: 587]; 465 speaks TLS from the start, any other port uses
    /// STARTTLS when the server offers it.
    pub port: Option<u16>,
    /// Login (`SMTP_USER`); unset: no authentication.
    pub user: Option<String>,
    /// Password (`SMTP_PASS`); better given in the environment than in this file.
    pub pass: Option<String>,
    /// Sender address (`SMTP_FROM`) [default: flotilla@<host>].
    pub from: Option<String>,
    /// At most one critical-alert mail per server this often [default: 1h].
    #[serde(default, with = "humantime_serde")]
    pub alert_interval: Option<Duration>,
}

/// Never shows the password.
impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("pass", &self.pass.as_ref().map(|_| "********"))
            .field("from", &self.from)
            .field("alert_interval", &self.alert_interval)
            .finish()
    }
}

/// `[external_api]` of `controller.toml`: the Panelica-style external API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalApiConfig {
    /// Largest request body in bytes (default 10 MiB); bodies are buffered whole to check
    /// their signature.
    pub body_limit: Option<usize>,
    /// Refuse a POST/PUT/PATCH/DELETE whose signature was already used within the 5-minute
    /// timestamp window (default true). GETs are never refused as replays.
    pub refuse_replays: Option<bool>,
    /// Serve the external API on a listener of its own too (e.g. "127.0.0.1:3002", the
    /// original's port): `/v1/…` and `/health` at the root as well as under `/api/external`.
    pub listen: Option<std::net::SocketAddr>,
    /// Root filesystem usage (percent) at which a node raises `system.disk_warning` (default
    /// 90; again only after it fell 5 points under).
    pub disk_warning_percent: Option<f64>,
}

/// `[vps]` of `controller.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpsConfig {
    /// Let anyone create an account with `POST /api/auth/register` (default: false).
    pub registration: Option<bool>,
    /// Accept Socket.IO connections without a session token (the original web UI sends none);
    /// anonymous sockets may watch any server's stats (default: false).
    pub anonymous_socketio: Option<bool>,
    /// CPU use (fraction of the server's cores, 0..1) above which `server-alerts` fires
    /// (default: 0.9).
    pub alert_cpu: Option<f64>,
    /// Memory use in percent above which `server-alerts` fires (default: 90).
    pub alert_memory: Option<f64>,
    /// Disk use in percent above which `server-alerts` fires (default: 90).
    pub alert_disk: Option<f64>,
    /// Percentage points a metric must drop below its threshold before it alerts again
    /// (default: 5).
    pub alert_margin: Option<f64>,
    /// Origins whose browser pages may call the VPS API (CORS), e.g. where the panel's web UI is
    /// served (default: its development origins, http://localhost:3000 and :5173).
    pub cors_origins: Option<Vec<String>>,
    /// Base URL the web console page loads xterm.js 5.5 from (an npm CDN or a mirror with the same
    /// paths; files are pinned by SRI hashes). Default: https://cdn.jsdelivr.net/npm.
    pub console_assets: Option<String>,
}

/// `[install]` of `controller.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallConfig {
    /// The flotilla-agent .deb new hosts download (`curl …/install.sh | sh -s -- TOKEN`); unset:
    /// no one-liner is offered.
    pub agent_package: Option<std::path::PathBuf>,
}

/// `[candy]` of `controller.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandyConfig {
    /// How long a login's bearer token stays valid [default: 24h].
    #[serde(default, with = "humantime_serde")]
    pub session_ttl: Option<Duration>,
    /// CandyPanel's built web UI (`Frontend/dist`), served at `/` (the UI calls the origin it
    /// was loaded from).
    pub ui_dir: Option<std::path::PathBuf>,
    /// SQLite file CandyPanel's `bot.py` reads its token and API credentials from (its
    /// `Backend/CandyPanel.db`); kept up to date when those settings change.
    pub bot_db: Option<std::path::PathBuf>,
}

/// `[v2ray_stat]` of `controller.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V2rayStatConfig {
    /// Token accepted as `Authorization: Bearer <token>` besides HTTP Basic (as v2ray-stat's own
    /// `api_token`); unset: Basic only. `FLOTILLA_V2RAY_STAT_TOKEN` overrides it.
    pub api_token: Option<String>,
    /// Inbound of users added without `inboundTag` [default: "vless-in"].
    pub default_inbound_tag: Option<String>,
    /// Columns and sorts of `GET /api/v1/stats`, as the agent's `[stats_columns]`.
    pub stats_columns: Option<flotilla_protocol::v2ray_stat::StatsColumns>,
}

/// `[monitoring]` of `controller.toml` (and the matching `serve` flags): where the monitoring
/// stack answers. A service left out is reported as not configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringConfig {
    /// Prometheus base URL (`http://127.0.0.1:9090`); probed at `/-/ready`, queried for `sum(up)`.
    pub prometheus_url: Option<String>,
    /// Loki base URL; probed at `/ready`.
    pub loki_url: Option<String>,
    /// Grafana base URL; probed at `/api/health`.
    pub grafana_url: Option<String>,
    /// Path the reverse proxy serves Grafana under, for the UI's link [default: "grafana"].
    pub grafana_public_path: Option<String>,
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, String),
}

impl FileConfig {
    /// Loads `path`; a missing file is fine unless it was named explicitly.
    pub fn load(path: &Path, explicit: bool) -> Result<FileConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| ConfigError::Parse(path.display().to_string(), e.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(FileConfig::default()),
            Err(e) => Err(ConfigError::Read(path.display().to_string(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys_and_rejects_unknown() {
        let c: FileConfig = toml::from_str(
            "http = \"127.0.0.1:9000\"\npublic_addr = [\"vpn.example.com:4433\"]\njoin_token_ttl = \"1h\"\n",
        )
        .unwrap();
        assert_eq!(c.http.unwrap().port(), 9000);
        assert_eq!(c.join_token_ttl, Some(Duration::from_secs(3600)));
        assert_eq!(c.public_addr.unwrap(), vec!["vpn.example.com:4433".to_string()]);
        assert!(toml::from_str::<FileConfig>("htp = \"x\"").is_err());
        assert!(c.monitoring.prometheus_url.is_none());
        let m: FileConfig =
            toml::from_str("[monitoring]\nprometheus_url = \"http://127.0.0.1:9090\"\ngrafana_public_path = \"/g/\"\n")
                .unwrap();
        assert_eq!(m.monitoring.prometheus_url.as_deref(), Some("http://127.0.0.1:9090"));
        assert_eq!(m.monitoring.grafana_public_path.as_deref(), Some("/g/"));
        assert!(toml::from_str::<FileConfig>("[monitoring]\nprometheus = \"x\"").is_err());
        let v: FileConfig = toml::from_str(
            "[v2ray_stat]\napi_token = \"t\"\n[v2ray_stat.stats_columns.client]\ncolumns = [\"user\"]\n",
        )
        .unwrap();
        assert_eq!(v.v2ray_stat.api_token.as_deref(), Some("t"));
        assert!(v.v2ray_stat.stats_columns.is_some());
        // Every commented-out key of the packaged file is a real key.
        let packaged = include_str!("../../packaging/controller/controller.toml");
        let uncommented: String = packaged
            .lines()
            .map(|l| l.strip_prefix('#').filter(|r| r.starts_with('[') || r.contains(" = ")).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        toml::from_str::<FileConfig>(&uncommented).unwrap();
        assert!(FileConfig::load(Path::new("/nonexistent.toml"), false).is_ok());
        assert!(FileConfig::load(Path::new("/nonexistent.toml"), true).is_err());
    }
}
