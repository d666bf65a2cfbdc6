//! `agent.toml`: optional settings; every key has a default.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

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
}
