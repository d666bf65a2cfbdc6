//! `GET /v1/server/status`: the node's facts (from its agent's hello) and latest metrics sample,
//! in the document's fields and units; and the `system.disk_warning` watch on the samples.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use flotilla_protocol::codec;
use flotilla_protocol::metrics::MetricsSample;
use flotilla_protocol::rpc::RequestKind;
use flotilla_protocol::NodeId;
use serde_json::{json, Value};

use super::auth::Caller;
use super::node::{self, NodeChoice};
use super::services::human_duration;
use super::{ok, ApiError};
use crate::api::AppState;
use crate::fleet::{Fleet, HostEvent};

const MB: f64 = 1_048_576.0;
const GB: f64 = 1_073_741_824.0;

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        round1(used as f64 * 100.0 / total as f64)
    }
}

/// The status document of a node from what its agent reported.
pub fn status_json(
    node: NodeId,
    facts: Option<&flotilla_protocol::facts::HostFacts>,
    m: &MetricsSample,
    previous: Option<&MetricsSample>,
) -> Value {
    let rate = |now: u64, before: u64, dt_ms: u64| {
        if dt_ms == 0 || now < before {
            Value::Null
        } else {
            json!(((now - before) as f64 * 8000.0 / dt_ms as f64).round() as u64)
        }
    };
    let (rx_bps, tx_bps) = match previous {
        Some(p) if m.taken_at_ms > p.taken_at_ms => {
            let dt = m.taken_at_ms - p.taken_at_ms;
            (rate(m.net_rx_bytes, p.net_rx_bytes, dt), rate(m.net_tx_bytes, p.net_tx_bytes, dt))
        }
        _ => (Value::Null, Value::Null),
    };
    let sampled_at = crate::store::iso_ms(m.taken_at_ms as i64);
    let free_mem = m.mem_total.saturating_sub(m.mem_used);
    let free_disk = m.disk_total.saturating_sub(m.disk_used);
    json!({
        "hostname": facts.map(|f| f.hostname.as_str()),
        "os": facts.map(|f| f.os.as_str()),
        "kernel": facts.map(|f| f.kernel.as_str()),
        "arch": facts.map(|f| f.arch.as_str()),
        "uptime_seconds": m.uptime_secs,
        "uptime": human_duration(m.uptime_secs),
        "cpu": {
            "model": facts.map(|f| f.cpu_model.as_str()),
            "cores": facts.map(|f| f.cpu_cores),
            "usage_percent": round1(m.cpu_percent as f64),
        },
        "memory": {
            "total_mb": (m.mem_total as f64 / MB).round() as u64,
            "used_mb": (m.mem_used as f64 / MB).round() as u64,
            "free_mb": (free_mem as f64 / MB).round() as u64,
            "usage_percent": percent(m.mem_used, m.mem_total),
        },
        "swap": {
            "total_mb": (m.swap_total as f64 / MB).round() as u64,
            "used_mb": (m.swap_used as f64 / MB).round() as u64,
            "usage_percent": percent(m.swap_used, m.swap_total),
        },
        "disk": {
            "mount": "/",
            "total_gb": round1(m.disk_total as f64 / GB),
            "used_gb": round1(m.disk_used as f64 / GB),
            "free_gb": round1(free_disk as f64 / GB),
            "usage_percent": percent(m.disk_used, m.disk_total),
        },
        "load_average": [round2(m.load[0]), round2(m.load[1]), round2(m.load[2])],
        "network": {
            "rx_bytes": m.net_rx_bytes,
            "tx_bytes": m.net_tx_bytes,
            "rx_bps": rx_bps,
            "tx_bps": tx_bps,
        },
        "node_id": node.0,
        "sampled_at": sampled_at,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `GET /v1/server/status[?node_id=N]`.
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Query(choice): Query<NodeChoice>,
) -> Result<Json<Value>, ApiError> {
    caller.require("server:read")?;
    let node = node::select(&state, choice).await?;
    let live = state.fleet.live(node);
    let (sample, previous) = match live.metrics {
        Some(m) => (m, live.previous_metrics),
        // No sample pushed yet in this session: ask for one.
        None => {
            let answer =
                state.fleet.call(node, RequestKind::METRICS_NOW, vec![], Duration::from_secs(5)).await.map_err(
                    |e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "NO_METRICS", e.to_string()),
                )?;
            (codec::decode_from::<MetricsSample>(&answer).map_err(ApiError::internal)?, None)
        }
    };
    Ok(ok(status_json(node, live.facts.as_ref(), &sample, previous.as_ref())))
}

/// Points under the threshold a disk must fall before it can warn again.
pub const DISK_HYSTERESIS: f64 = 5.0;

/// `[external_api] disk_warning_percent` × 100 (an atomic: set once at start).
static DISK_WARNING: AtomicU64 = AtomicU64::new(9000);

/// Sets the disk warning threshold (percent used of the root filesystem).
pub fn set_disk_warning_percent(percent: f64) {
    DISK_WARNING.store((percent.clamp(1.0, 100.0) * 100.0) as u64, Ordering::Relaxed);
}

/// The threshold in force.
pub fn disk_warning_percent() -> f64 {
    DISK_WARNING.load(Ordering::Relaxed) as f64 / 100.0
}

/// Nodes whose root disk is over the threshold (warned, not yet back under it minus hysteresis).
static WARNED: LazyLock<Mutex<HashMap<NodeId, bool>>> = LazyLock::new(Default::default);

/// Whether a disk at `used` percent crosses the threshold now, and the new warned state.
pub fn crossing(warned: bool, used: f64, threshold: f64) -> (bool, bool) {
    if !warned && used >= threshold {
        (true, true)
    } else if warned && used < threshold - DISK_HYSTERESIS {
        (false, false)
    } else {
        (warned, false)
    }
}

/// Called for every metrics sample a node pushes: announces `HostEvent::DiskWarning` once per
/// crossing of the threshold.
pub fn watch_disk(fleet: &Fleet, node: NodeId, sample: &MetricsSample) {
    if sample.disk_total == 0 {
        return;
    }
    let used = percent(sample.disk_used, sample.disk_total);
    let threshold = disk_warning_percent();
    let announce = {
        let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
        let was = warned.get(&node).copied().unwrap_or(false);
        let (now, announce) = crossing(was, used, threshold);
        warned.insert(node, now);
        announce
    };
    if announce {
        tracing::warn!(node_id = %node, used_percent = used, threshold, "root disk usage passed the warning threshold");
        fleet.announce(HostEvent::DiskWarning { node, mount: "/".into(), used_percent: used });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_warns_once_per_crossing_with_hysteresis() {
        let mut warned = false;
        let mut announced = 0;
        for used in [80.0, 90.0, 95.0, 89.0, 86.0, 91.0, 84.9, 85.0, 90.0, 99.0] {
            let (now, announce) = crossing(warned, used, 90.0);
            warned = now;
            announced += announce as u32;
        }
        // 90 (first), then back under 85 at 84.9, then 90 again.
        assert_eq!(announced, 2);
    }

    #[test]
    fn status_has_the_documents_fields_and_units() {
        let facts = flotilla_protocol::facts::HostFacts {
            hostname: "server1.example.com".into(),
            os: "Debian GNU/Linux 12".into(),
            kernel: "6.1.0".into(),
            cpu_model: "Intel Xeon E-2288G".into(),
            cpu_cores: 8,
            ..Default::default()
        };
        let m = MetricsSample {
            taken_at_ms: 2_000,
            cpu_percent: 12.5,
            mem_used: 8192 * 1_048_576,
            mem_total: 32768 * 1_048_576,
            disk_used: 125 * 1_073_741_824,
            disk_total: 500 * 1_073_741_824,
            load: [0.45, 0.52, 0.48],
            uptime_secs: 8_640_000,
            net_rx_bytes: 2000,
            ..Default::default()
        };
        let before = MetricsSample { taken_at_ms: 1_000, net_rx_bytes: 1000, ..Default::default() };
        let v = status_json(NodeId(3), Some(&facts), &m, Some(&before));
        assert_eq!(v["hostname"], "server1.example.com");
        assert_eq!(v["uptime_seconds"], 8_640_000);
        assert_eq!(v["cpu"]["cores"], 8);
        assert_eq!(v["cpu"]["usage_percent"], 12.5);
        assert_eq!(v["memory"]["total_mb"], 32768);
        assert_eq!(v["memory"]["used_mb"], 8192);
        assert_eq!(v["memory"]["usage_percent"], 25.0);
        assert_eq!(v["disk"]["total_gb"], 500.0);
        assert_eq!(v["disk"]["used_gb"], 125.0);
        assert_eq!(v["disk"]["usage_percent"], 25.0);
        assert_eq!(v["load_average"], json!([0.45, 0.52, 0.48]));
        assert_eq!(v["network"]["rx_bps"], 8000);
    }
}
