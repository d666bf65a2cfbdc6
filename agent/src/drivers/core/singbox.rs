//! sing-box: no runtime user API in release builds, so users and inbounds change by rewriting the
//! config and sending SIGHUP (which drops every connection: reloads are rate-limited). Traffic
//! comes from the clash API's connection list; it has no user field, so sing-box nodes report
//! per-inbound traffic only (`per_user_stats: false`), unless the binary was built with the v2ray
//! API (detected by a probe config at start).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use flotilla_protocol::proxy::{CoreFlavor, InboundTraffic};
use serde::Deserialize;

/// Minimum time between two reloads: each one drops every connection of the node.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_secs(2);
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// A clash API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClashError {
    #[error("clash API {0}: {1}")]
    Http(String, String),
    #[error("clash API answered an unreadable {0}: {1}")]
    Decode(&'static str, String),
}

/// One entry of `/connections`.
#[derive(Debug, Clone, Deserialize)]
pub struct Connection {
    pub id: String,
    #[serde(default)]
    pub upload: u64,
    #[serde(default)]
    pub download: u64,
    #[serde(default)]
    pub metadata: ConnectionMetadata,
}

/// The part of a connection's metadata the agent reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConnectionMetadata {
    /// `<inbound type>/<inbound tag>`.
    #[serde(default, rename = "type")]
    pub kind: String,
}

impl Connection {
    /// Tag of the inbound the connection came in on.
    pub fn inbound_tag(&self) -> Option<&str> {
        self.metadata.kind.split_once('/').map(|(_, tag)| tag).filter(|t| !t.is_empty())
    }
}

/// `/connections` snapshot.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Connections {
    #[serde(default, rename = "downloadTotal")]
    pub download_total: u64,
    #[serde(default, rename = "uploadTotal")]
    pub upload_total: u64,
    #[serde(default)]
    pub connections: Vec<Connection>,
}

/// Client of sing-box's clash API on loopback.
#[derive(Debug, Clone)]
pub struct ClashApi {
    base: String,
    agent: ureq::Agent,
}

impl ClashApi {
    /// A client for the API at `addr`.
    pub fn new(addr: SocketAddr) -> ClashApi {
        ClashApi { base: format!("http://{addr}"), agent: ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build() }
    }

    fn get(&self, path: &'static str) -> Result<ureq::Response, ClashError> {
        self.agent.get(&format!("{}{path}", self.base)).call().map_err(|e| ClashError::Http(path.into(), e.to_string()))
    }

    /// `GET /version`: answers once the instance (and so its inbounds) is up.
    pub async fn version(&self) -> Result<String, ClashError> {
        let api = self.clone();
        blocking(move || {
            #[derive(Deserialize)]
            struct Version {
                version: String,
            }
            let v: Version =
                api.get("/version")?.into_json().map_err(|e| ClashError::Decode("version", e.to_string()))?;
            Ok(v.version)
        })
        .await
    }

    /// `GET /connections`.
    pub async fn connections(&self) -> Result<Connections, ClashError> {
        let api = self.clone();
        blocking(move || {
            api.get("/connections")?.into_json().map_err(|e| ClashError::Decode("connections", e.to_string()))
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ClashError> + Send + 'static,
) -> Result<T, ClashError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ClashError::Http("task".into(), e.to_string()))?
}

/// Per-inbound traffic from successive `/connections` snapshots. Open connections are attributed
/// to their inbound by their bytes since the last snapshot; bytes of connections that opened and
/// closed between two snapshots appear only in the instance's totals, so that remainder goes to
/// the node's only inbound when it has one, else to no inbound (tag `""`, counted for the node
/// alone). Sans-IO.
#[derive(Debug, Default)]
pub struct ConnectionTracker {
    seen: HashMap<String, (u64, u64)>,
    /// `uploadTotal`/`downloadTotal` of the previous snapshot.
    totals: (u64, u64),
}

impl ConnectionTracker {
    /// Deltas since the previous snapshot, per inbound tag. `sole_inbound`: the node's only
    /// served inbound, if it has exactly one.
    pub fn observe(&mut self, snapshot: &Connections, sole_inbound: Option<&str>) -> Vec<InboundTraffic> {
        let mut per_inbound: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut now = HashMap::with_capacity(snapshot.connections.len());
        let (mut seen_up, mut seen_down) = (0u64, 0u64);
        for c in &snapshot.connections {
            let (up0, down0) = self.seen.get(&c.id).copied().unwrap_or((0, 0));
            let (up, down) = (c.upload.saturating_sub(up0), c.download.saturating_sub(down0));
            seen_up += up;
            seen_down += down;
            let slot = per_inbound.entry(c.inbound_tag().unwrap_or_default().to_string()).or_default();
            slot.0 += up;
            slot.1 += down;
            now.insert(c.id.clone(), (c.upload, c.download));
        }
        self.seen = now;
        // Totals restart with the instance (reload): a smaller total is all new.
        let grown = |now: u64, before: u64| if now >= before { now - before } else { now };
        let (total_up, total_down) =
            (grown(snapshot.upload_total, self.totals.0), grown(snapshot.download_total, self.totals.1));
        self.totals = (snapshot.upload_total, snapshot.download_total);
        let (rest_up, rest_down) = (total_up.saturating_sub(seen_up), total_down.saturating_sub(seen_down));
        if rest_up > 0 || rest_down > 0 {
            let slot = per_inbound.entry(sole_inbound.unwrap_or_default().to_string()).or_default();
            slot.0 += rest_up;
            slot.1 += rest_down;
        }
        per_inbound
            .into_iter()
            .filter(|(_, (up, down))| *up > 0 || *down > 0)
            .map(|(tag, (up, down))| InboundTraffic { tag, up, down })
            .collect()
    }

    /// The instance restarted (reload): every connection is new and the totals start over.
    pub fn reset(&mut self) {
        self.seen.clear();
        self.totals = (0, 0);
    }
}

/// Whether this sing-box binary has the v2ray stats API (per-user counters): `sing-box check` of
/// a minimal config that asks for it fails on release builds.
pub async fn has_v2ray_api(binary: &Path, scratch: &Path) -> bool {
    let probe = serde_json::json!({
        "log": { "disabled": true },
        "inbounds": [],
        "outbounds": [{ "type": "direct", "tag": "direct" }],
        "experimental": { "v2ray_api": { "listen": "127.0.0.1:1", "stats": { "enabled": true } } },
    });
    let path = scratch.join("v2ray-api-probe.json");
    if std::fs::write(&path, probe.to_string()).is_err() {
        return false;
    }
    let ok = super::process::check_config(CoreFlavor::SingBox, binary, &path).await.is_ok();
    let _ = std::fs::remove_file(&path);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: &str, kind: &str, upload: u64, download: u64) -> Connection {
        Connection { id: id.into(), upload, download, metadata: ConnectionMetadata { kind: kind.into() } }
    }

    #[test]
    fn tracker_counts_each_connection_once_per_inbound() {
        let mut t = ConnectionTracker::default();
        let snap = |connections, up_total, down_total| Connections {
            connections,
            upload_total: up_total,
            download_total: down_total,
        };
        let first = snap(vec![conn("a", "vless/vless-in", 10, 100), conn("b", "vless/vless-in", 1, 1)], 11, 101);
        assert_eq!(t.observe(&first, None), vec![InboundTraffic { tag: "vless-in".into(), up: 11, down: 101 }]);
        // "a" moved on, "b" closed after 4 more bytes down, "d" is new.
        let second = snap(vec![conn("a", "vless/vless-in", 15, 300), conn("d", "trojan/tr-in", 2, 20)], 18, 325);
        assert_eq!(
            t.observe(&second, None),
            vec![
                InboundTraffic { tag: "".into(), up: 0, down: 4 },
                InboundTraffic { tag: "tr-in".into(), up: 2, down: 20 },
                InboundTraffic { tag: "vless-in".into(), up: 5, down: 200 },
            ],
            "bytes of closed connections are counted for the node"
        );
        assert!(t.observe(&second, None).is_empty(), "nothing moved");
        // A connection that came and went between two snapshots, on a node with one inbound.
        let third = snap(vec![], 18 + 80, 325 + 4000);
        assert_eq!(
            t.observe(&third, Some("vless-in")),
            vec![InboundTraffic { tag: "vless-in".into(), up: 80, down: 4000 }]
        );
        t.reset();
        let after_reload = snap(vec![conn("e", "vless/vless-in", 1, 2)], 1, 2);
        assert_eq!(t.observe(&after_reload, None), vec![InboundTraffic { tag: "vless-in".into(), up: 1, down: 2 }]);
    }

    #[test]
    fn parses_the_clash_connections_shape() {
        let json = r#"{"connections":[{"id":"0d5b","metadata":{"network":"tcp","type":"vless/vless-in",
            "sourceIP":"127.0.0.1","destinationPort":"80"},"upload":87,"download":10485966,"start":"x",
            "chains":["direct"],"rule":"final","rulePayload":""}],"downloadTotal":10485966,"memory":1,"uploadTotal":87}"#;
        let c: Connections = serde_json::from_str(json).unwrap();
        assert_eq!((c.download_total, c.connections[0].inbound_tag()), (10485966, Some("vless-in")));
    }
}
