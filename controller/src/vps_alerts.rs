//! Resource alerts of the VPS API's servers: CPU, memory or disk use above a threshold (90% by
//! default, `[vps] alert_cpu`, `alert_memory`, `alert_disk`), with hysteresis so that a server
//! hovering around the threshold is not reported on every sample. The Socket.IO feed sends them
//! as `server-alerts`; anyone else (an e-mail notifier) subscribes to [`AlertHub`].

use std::collections::HashMap;

use serde::Serialize;

/// Usage at or above which an alert is `critical` rather than a `warning` (percent of capacity),
/// unless the configured threshold is higher still.
const CRITICAL_PERCENT: f64 = 95.0;

/// When alerts fire (`[vps]` of `controller.toml`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertThresholds {
    /// CPU use as a fraction of the server's cores (0..1) above which it alerts.
    pub cpu: f64,
    /// Memory use in percent above which it alerts.
    pub memory: f64,
    /// Disk use in percent above which it alerts.
    pub disk: f64,
    /// Percentage points a metric must fall below its threshold before it may alert again.
    pub margin: f64,
}

impl Default for AlertThresholds {
    /// The original monitoring service's 90% on all three, re-armed 5 points below.
    fn default() -> Self {
        AlertThresholds { cpu: 0.9, memory: 90.0, disk: 90.0, margin: 5.0 }
    }
}

/// A threshold outside its range.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ThresholdError {
    #[error("[vps] alert_cpu must be a fraction in (0, 1], got {0}")]
    Cpu(f64),
    #[error("[vps] alert_{0} must be a percentage in (0, 100], got {1}")]
    Percent(&'static str, f64),
    #[error("[vps] alert_margin must be in [0, 100), got {0}")]
    Margin(f64),
}

impl AlertThresholds {
    /// Checks the ranges (a config typo such as `alert_cpu = 90` would silence CPU alerts).
    pub fn validate(self) -> Result<Self, ThresholdError> {
        if !(self.cpu > 0.0 && self.cpu <= 1.0) {
            return Err(ThresholdError::Cpu(self.cpu));
        }
        for (name, value) in [("memory", self.memory), ("disk", self.disk)] {
            if !(value > 0.0 && value <= 100.0) {
                return Err(ThresholdError::Percent(name, value));
            }
        }
        if !(0.0..100.0).contains(&self.margin) {
            return Err(ThresholdError::Margin(self.margin));
        }
        Ok(self)
    }
}

/// What an alert is about (`type` in the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    Cpu,
    Memory,
    Disk,
}

impl AlertKind {
    fn label(self) -> &'static str {
        match self {
            AlertKind::Cpu => "CPU",
            AlertKind::Memory => "Memory",
            AlertKind::Disk => "Disk",
        }
    }
}

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertLevel {
    Warning,
    Critical,
}

/// One alert as the web UI reads it: `{type, message, level}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    #[serde(rename = "type")]
    pub kind: AlertKind,
    /// `CPU usage is at 95%`.
    pub message: String,
    pub level: AlertLevel,
}

/// The `server-alerts` payload: `{serverId, alerts}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerAlerts {
    pub server_id: i64,
    pub alerts: Vec<Alert>,
}

/// Fan-out of fired alerts to whoever listens (the Socket.IO feed, later an e-mail notifier).
pub type AlertHub = tokio::sync::broadcast::Sender<ServerAlerts>;

/// A new hub; alerts sent while nobody listens are dropped.
pub fn hub() -> AlertHub {
    tokio::sync::broadcast::channel(256).0
}

/// Which metrics of which servers are above their threshold, i.e. have fired and are not yet
/// re-armed.
#[derive(Debug, Default)]
pub struct AlertTracker {
    thresholds: AlertThresholds,
    fired: HashMap<(i64, AlertKind), bool>,
}

impl AlertTracker {
    /// A tracker with nothing fired.
    pub fn new(thresholds: AlertThresholds) -> Self {
        AlertTracker { thresholds, fired: HashMap::new() }
    }

    /// Takes one sample of server `id` (CPU as a 0..1 fraction, memory and disk in percent) and
    /// returns the alerts that fire now: a metric that went above its threshold and had not
    /// fired since it last fell below threshold − margin.
    pub fn observe(&mut self, id: i64, cpu: f64, memory_percent: f64, disk_percent: f64) -> Vec<Alert> {
        let t = self.thresholds;
        // Everything in percent, so one margin serves all three.
        let metrics = [
            (AlertKind::Cpu, cpu * 100.0, t.cpu * 100.0),
            (AlertKind::Memory, memory_percent, t.memory),
            (AlertKind::Disk, disk_percent, t.disk),
        ];
        let mut alerts = vec![];
        for (kind, value, threshold) in metrics {
            if !value.is_finite() {
                continue;
            }
            let fired = self.fired.entry((id, kind)).or_insert(false);
            if !*fired && value > threshold {
                *fired = true;
                let level =
                    if value >= CRITICAL_PERCENT.max(threshold) { AlertLevel::Critical } else { AlertLevel::Warning };
                alerts.push(Alert {
                    kind,
                    message: format!("{} usage is at {}%", kind.label(), value.round() as i64),
                    level,
                });
            } else if *fired && value < threshold - t.margin {
                *fired = false;
            }
        }
        alerts
    }

    /// Drops what is known of server `id` (deleted).
    pub fn forget(&mut self, id: i64) {
        self.fired.retain(|(server, _), _| *server != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(alerts: &[Alert]) -> Vec<AlertKind> {
        alerts.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn fires_once_above_the_threshold_and_again_only_after_falling_below_the_margin() {
        let mut t = AlertTracker::new(AlertThresholds::default());
        assert!(t.observe(1, 0.5, 10.0, 10.0).is_empty());
        assert!(t.observe(1, 0.9, 90.0, 90.0).is_empty(), "at the threshold is not above it");
        let first = t.observe(1, 0.95, 10.0, 10.0);
        assert_eq!(
            first,
            vec![Alert { kind: AlertKind::Cpu, message: "CPU usage is at 95%".into(), level: AlertLevel::Critical }]
        );
        // Still above, dipping under the threshold but not under threshold − margin: quiet.
        assert!(t.observe(1, 0.97, 10.0, 10.0).is_empty());
        assert!(t.observe(1, 0.87, 10.0, 10.0).is_empty());
        assert!(t.observe(1, 0.93, 10.0, 10.0).is_empty(), "not re-armed at 87%");
        // Below 85%: re-armed; the next rise fires again.
        assert!(t.observe(1, 0.84, 10.0, 10.0).is_empty());
        let again = t.observe(1, 0.92, 10.0, 10.0);
        assert_eq!(again[0].level, AlertLevel::Warning);
        assert_eq!(again[0].message, "CPU usage is at 92%");
    }

    #[test]
    fn metrics_and_servers_are_tracked_apart() {
        let mut t = AlertTracker::new(AlertThresholds::default());
        assert_eq!(kinds(&t.observe(1, 0.1, 91.0, 99.0)), vec![AlertKind::Memory, AlertKind::Disk]);
        assert_eq!(kinds(&t.observe(2, 0.1, 91.0, 10.0)), vec![AlertKind::Memory], "another server");
        assert_eq!(kinds(&t.observe(1, 0.99, 91.0, 99.0)), vec![AlertKind::Cpu], "only the new one");
        t.forget(1);
        assert_eq!(kinds(&t.observe(1, 0.99, 91.0, 99.0)).len(), 3, "forgotten: fires afresh");
        assert!(t.observe(2, 0.1, 91.0, 10.0).is_empty(), "server 2 untouched");
    }

    #[test]
    fn configured_thresholds_and_levels() {
        let thresholds = AlertThresholds { cpu: 0.5, memory: 80.0, disk: 97.0, margin: 10.0 }.validate().unwrap();
        let mut t = AlertTracker::new(thresholds);
        let alerts = t.observe(7, 0.6, 81.0, 98.0);
        let levels: Vec<_> = alerts.iter().map(|a| (a.kind, a.level)).collect();
        assert_eq!(
            levels,
            vec![
                (AlertKind::Cpu, AlertLevel::Warning),
                (AlertKind::Memory, AlertLevel::Warning),
                (AlertKind::Disk, AlertLevel::Critical),
            ]
        );
        assert!(t.observe(7, 0.41, 71.0, 88.0).is_empty());
        assert!(t.observe(7, 0.6, 81.0, 98.0).is_empty(), "the 10-point margin is not crossed yet");
        assert!(t.observe(7, 0.39, 69.0, 86.0).is_empty());
        assert_eq!(t.observe(7, 0.6, 81.0, 98.0).len(), 3);
        assert!(t.observe(8, f64::NAN, 0.0, 0.0).is_empty(), "no number, no alert");
    }

    #[test]
    fn out_of_range_thresholds_are_refused() {
        let d = AlertThresholds::default();
        assert_eq!(AlertThresholds { cpu: 90.0, ..d }.validate(), Err(ThresholdError::Cpu(90.0)));
        assert_eq!(AlertThresholds { disk: 0.0, ..d }.validate(), Err(ThresholdError::Percent("disk", 0.0)));
        assert_eq!(AlertThresholds { margin: -1.0, ..d }.validate(), Err(ThresholdError::Margin(-1.0)));
        assert!(d.validate().is_ok());
    }

    #[test]
    fn payload_shape() {
        let payload = ServerAlerts {
            server_id: 3,
            alerts: vec![Alert {
                kind: AlertKind::Disk,
                message: "Disk usage is at 91%".into(),
                level: AlertLevel::Warning,
            }],
        };
        assert_eq!(
            serde_json::to_value(&payload).unwrap(),
            serde_json::json!({ "serverId": 3, "alerts": [{ "type": "disk", "message": "Disk usage is at 91%", "level": "warning" }] })
        );
    }
}
