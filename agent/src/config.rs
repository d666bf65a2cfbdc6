//! `agent.toml`: optional settings; every key has a default.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use flotilla_protocol::v2ray_stat::StatsColumns;
use serde::{Deserialize, Deserializer};

/// Default config file.
pub const DEFAULT_CONFIG: &str = "/etc/flotilla/agent.toml";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/flotilla-agent";

/// Parsed agent configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// How often host metrics are sampled and pushed.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// Log filter (`RUST_LOG` syntax), overridden by `RUST_LOG`.
    pub log: String,
    pub controller: ControllerSection,
    /// `[core]`: the proxy core the agent drives.
    pub core: crate::drivers::core::CoreSettings,
    /// `[local_api]`: the v2ray-stat API on loopback.
    pub local_api: LocalApiSection,
    /// `[wireguard]`: the WireGuard backend (absent: WireGuard off).
    pub wireguard: crate::drivers::wireguard::WireGuardSettings,
    /// `[containers]`: the containers backend (absent: containers off).
    pub containers: crate::drivers::containers::ContainersSettings,
    /// `[files]`: the directories the external API's file manager may act in (absent: files off).
    pub files: crate::drivers::files::FilesSettings,
    /// `[services]`: the systemd units the external API may see and touch.
    pub services: crate::drivers::services::ServicesSettings,
    /// `[stats_columns.server]` / `[stats_columns.client]`: the tables of the local API's
    /// `GET /api/v1/stats` (absent: the original v2ray-stat's shipped defaults).
    pub stats_columns: Option<StatsColumns>,
}

/// `[local_api]`: the v2ray-stat API (`crate::local_api`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalApiSection {
    /// Loopback `host:port`; `"off"` or `""` disables the API (`None`).
    #[serde(deserialize_with = "deserialize_listen")]
    pub listen: Option<SocketAddr>,
    /// Inbound of users added without `inboundTag`.
    #[serde(deserialize_with = "deserialize_inbound_tag")]
    pub default_inbound_tag: String,
}

impl Default for LocalApiSection {
    fn default() -> Self {
        LocalApiSection {
            listen: Some(crate::local_api::DEFAULT_LISTEN),
            default_inbound_tag: crate::local_api::DEFAULT_INBOUND_TAG.into(),
        }
    }
}

fn deserialize_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    crate::local_api::parse_listen(&text).map_err(serde::de::Error::custom)
}

fn deserialize_inbound_tag<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let tag = String::deserialize(d)?;
    flotilla_protocol::v2ray_stat::validate_inbound_tag(&tag).map_err(serde::de::Error::custom)?;
    Ok(tag)
}

/// `[controller]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerSection {
    /// Overrides the controller address stored at enrollment.
    pub addr: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            metrics_interval: Duration::from_secs(5),
            log: "info".into(),
            controller: ControllerSection::default(),
            core: crate::drivers::core::CoreSettings::default(),
            local_api: LocalApiSection::default(),
            wireguard: crate::drivers::wireguard::WireGuardSettings::default(),
            containers: crate::drivers::containers::ContainersSettings::default(),
            files: crate::drivers::files::FilesSettings::default(),
            services: crate::drivers::services::ServicesSettings::default(),
            stats_columns: None,
        }
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, String),
}

impl AgentConfig {
    fn validated(self) -> Result<AgentConfig, String> {
        if self.metrics_interval < Duration::from_millis(100) {
            return Err("metrics_interval must be at least 100ms".into());
        }
        if self.wireguard.poll_interval < Duration::from_millis(100) {
            return Err("[wireguard] poll_interval must be at least 100ms".into());
        }
        self.containers.validate().map_err(|e| format!("[containers] {e}"))?;
        self.files.validate().map_err(|e| format!("[files] {e}"))?;
        self.services.validate().map_err(|e| format!("[services] {e}"))?;
        Ok(self)
    }

    /// Loads `path`; a missing file at the default location means defaults, elsewhere an error.
    pub fn load(path: &Path, explicit: bool) -> Result<AgentConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str::<AgentConfig>(&text)
                .map_err(|e| e.to_string())
                .and_then(AgentConfig::validated)
                .map_err(|e| ConfigError::Parse(path.display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(AgentConfig::default()),
            Err(e) => Err(ConfigError::Read(path.display().to_string(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults() {
        let c: AgentConfig = toml::from_str("metrics_interval = \"2s\"\n[controller]\naddr = \"x:1\"\n").unwrap();
        assert_eq!(c.metrics_interval, Duration::from_secs(2));
        assert_eq!(c.controller.addr.as_deref(), Some("x:1"));
        assert_eq!(c.log, "info");
        assert!(toml::from_str::<AgentConfig>("bogus = 1").is_err());
        let dir = tempfile::tempdir().unwrap();
        let too_fast = dir.path().join("agent.toml");
        std::fs::write(&too_fast, "metrics_interval = \"1ms\"").unwrap();
        assert!(AgentConfig::load(&too_fast, true).unwrap_err().to_string().contains("at least 100ms"));
        let missing = AgentConfig::load(Path::new("/nonexistent/agent.toml"), false).unwrap();
        assert_eq!(missing.metrics_interval, Duration::from_secs(5));
        assert!(AgentConfig::load(Path::new("/nonexistent/agent.toml"), true).is_err());
    }

    #[test]
    fn core_section_parses_and_defaults_to_auto() {
        use crate::drivers::core::CoreMode;
        let c: AgentConfig = toml::from_str("").unwrap();
        assert_eq!((c.core.mode, c.core.stats_interval), (CoreMode::Auto, Duration::from_secs(10)));
        let c: AgentConfig = toml::from_str(
            "[core]\nmode = \"external\"\nflavor = \"xray\"\napi = \"127.0.0.1:10085\"\n\
             restart_command = \"systemctl restart xray\"\nstats_interval = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(c.core.mode, CoreMode::External);
        assert_eq!(c.core.api, Some("127.0.0.1:10085".parse().unwrap()));
        assert_eq!(c.core.stats_interval, Duration::from_secs(2));
        assert!(toml::from_str::<AgentConfig>("[core]\nmode = \"sometimes\"").is_err());
        // Every commented-out key of the packaged file is a real key.
        let packaged = include_str!("../../packaging/agent/agent.toml");
        let uncommented: String = packaged
            .lines()
            .map(|l| l.strip_prefix('#').filter(|r| r.starts_with('[') || r.contains(" = ")).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        toml::from_str::<AgentConfig>(&uncommented).unwrap();
    }

    #[test]
    fn wireguard_section_defaults_to_off() {
        use crate::drivers::wireguard::{Backend, BackendSetting};
        let c: AgentConfig = toml::from_str("").unwrap();
        assert_eq!(c.wireguard.backend, BackendSetting::Off);
        assert_eq!(c.wireguard.backend.backend(), None);
        assert_eq!(c.wireguard.poll_interval, Duration::from_secs(2));
        assert_eq!(c.wireguard.connected_window, Duration::from_secs(180));
        let c: AgentConfig = toml::from_str(
            "[wireguard]\nbackend = \"userspace\"\npoll_interval = \"500ms\"\nconnected_window = \"1m\"\n",
        )
        .unwrap();
        assert_eq!(c.wireguard.backend.backend(), Some(Backend::Userspace));
        assert_eq!(c.wireguard.poll_interval, Duration::from_millis(500));
        assert_eq!(c.wireguard.connected_window, Duration::from_secs(60));
        let c: AgentConfig = toml::from_str("[wireguard]\nbackend = \"kernel\"\n").unwrap();
        assert_eq!(c.wireguard.backend.backend(), Some(Backend::Kernel));
        assert_eq!(
            toml::from_str::<AgentConfig>("[wireguard]\nbackend = \"off\"\n").unwrap().wireguard.backend,
            BackendSetting::Off
        );
        assert!(toml::from_str::<AgentConfig>("[wireguard]\nbackend = \"boringtun\"\n").is_err());
        assert!(toml::from_str::<AgentConfig>("[wireguard]\nport = 1\n").is_err());
        assert_eq!("Userspace".parse::<BackendSetting>(), Ok(BackendSetting::Userspace));
        assert!("nope".parse::<BackendSetting>().is_err());
        let dir = tempfile::tempdir().unwrap();
        let too_fast = dir.path().join("agent.toml");
        std::fs::write(&too_fast, "[wireguard]\npoll_interval = \"1ms\"").unwrap();
        assert!(AgentConfig::load(&too_fast, true).unwrap_err().to_string().contains("poll_interval"));
    }

    #[test]
    fn containers_section_defaults_to_off() {
        use crate::drivers::containers::BackendSetting;
        let c: AgentConfig = toml::from_str("").unwrap();
        assert_eq!(c.containers.backend, BackendSetting::Off);
        assert_eq!(c.containers.bridge, "fltbr0");
        assert_eq!(c.containers.sample_interval, Duration::from_secs(10));
        assert_eq!(c.containers.samples_kept, 120);
        let c: AgentConfig = toml::from_str(
            "[containers]\nbackend = \"lxc\"\nbridge = \"br9\"\naddress_pool = \"10.9.0.2-10.9.0.3\"\n\
             gateway_cidr = \"10.9.0.1/24\"\nlxc_path = \"/srv/lxc\"\nsample_interval = \"5s\"\nsamples_kept = 10\n",
        )
        .unwrap();
        assert_eq!(c.containers.backend, BackendSetting::Lxc);
        assert_eq!(c.containers.validate().unwrap().addresses().len(), 2);
        // Proxmox needs its table; with it, the table's keys are checked too.
        let proxmox: AgentConfig = toml::from_str("[containers]\nbackend = \"proxmox\"\n").unwrap();
        assert!(proxmox.containers.validate().unwrap_err().contains("[containers.proxmox]"));
        let proxmox: AgentConfig = toml::from_str(
            "[containers]\nbackend = \"proxmox\"\n[containers.proxmox]\ntoken_id = \"root@pam!flotilla\"\n\
             token_secret_file = \"/etc/flotilla/pve-token\"\nfingerprint = \"AB:CD\"\n",
        )
        .unwrap();
        assert!(proxmox.containers.validate().unwrap_err().contains("fingerprint"));
        assert!(toml::from_str::<AgentConfig>("[containers]\nbackend = \"docker\"\n").is_err());
        assert!(toml::from_str::<AgentConfig>("[containers]\nport = 1\n").is_err());
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("agent.toml");
        std::fs::write(&bad, "[containers]\naddress_pool = \"10.9.0.2-10.9.0.3\"\n").unwrap();
        assert!(AgentConfig::load(&bad, true).unwrap_err().to_string().contains("not inside"));
        assert_eq!("LXC".parse::<BackendSetting>(), Ok(BackendSetting::Lxc));
    }

    #[test]
    fn local_api_and_stats_columns() {
        use flotilla_protocol::v2ray_stat::{ClientColumn, ServerColumn, SortOrder};
        let c: AgentConfig = toml::from_str("").unwrap();
        assert_eq!(c.local_api.listen, Some("127.0.0.1:9952".parse().unwrap()));
        assert_eq!(c.local_api.default_inbound_tag, "vless-in");
        assert_eq!(c.stats_columns, None);
        let c: AgentConfig = toml::from_str(
            "[local_api]\nlisten = \"[::1]:9000\"\ndefault_inbound_tag = \"trojan-in\"\n\
             [stats_columns.server]\ncolumns = []\n\
             [stats_columns.client]\nsort = \"rate DESC\"\ncolumns = [\"user\", \"rate\", \"bogus\"]\n",
        )
        .unwrap();
        assert_eq!(c.local_api.listen, Some("[::1]:9000".parse().unwrap()));
        assert_eq!(c.local_api.default_inbound_tag, "trojan-in");
        let (cols, warnings) = c.stats_columns.unwrap().resolve();
        assert!(cols.server.is_empty(), "an empty list hides the section");
        assert_eq!(cols.server_sort, (ServerColumn::Source, SortOrder::Asc));
        assert_eq!(cols.client, [ClientColumn::User, ClientColumn::Rate]);
        assert_eq!(cols.client_sort, (ClientColumn::Rate, SortOrder::Desc));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        for off in ["off", "", "OFF"] {
            let c: AgentConfig = toml::from_str(&format!("[local_api]\nlisten = \"{off}\"\n")).unwrap();
            assert_eq!(c.local_api.listen, None);
        }
        let public = toml::from_str::<AgentConfig>("[local_api]\nlisten = \"0.0.0.0:9952\"\n").unwrap_err();
        assert!(public.to_string().contains("not a loopback address"), "{public}");
        assert!(toml::from_str::<AgentConfig>("[local_api]\nlisten = \"nowhere\"\n").is_err());
        assert!(toml::from_str::<AgentConfig>("[local_api]\ndefault_inbound_tag = \"a b\"\n").is_err());
        assert!(toml::from_str::<AgentConfig>("[local_api]\nport = 1\n").is_err());
        assert!(toml::from_str::<AgentConfig>("[stats_columns.server]\ncolums = []\n").is_err());
    }
}
