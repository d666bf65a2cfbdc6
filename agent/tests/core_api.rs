//! The core driver against a real v2ray 4.34 (`/usr/bin/v2ray`, Debian's `v2ray` package):
//! users added and removed live over the gRPC API, stats, and the supervised process. Skipped
//! (with a note) where v2ray is not installed.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_agent::drivers::core::api::{parse_inbound_counter, CoreApi, CoreApiError};
use flotilla_agent::drivers::core::process::{check_config, detect_version, CoreProcess};
use flotilla_protocol::proxy::{ClientSpec, CoreFlavor, LogLevel};

const V2RAY: &str = "/usr/bin/v2ray";

fn v2ray() -> Option<PathBuf> {
    let path = Path::new(V2RAY);
    if path.exists() {
        Some(path.to_path_buf())
    } else {
        eprintln!("skipping: {V2RAY} not installed (apt-get install --no-install-recommends v2ray)");
        None
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// A v2ray server config: the API on `api_port`, a vmess inbound `in-1` and a vless inbound
/// `in-2`, both without clients.
fn server_config(api_port: u16, vmess_port: u16, vless_port: u16) -> String {
    serde_json::json!({
        "log": {"loglevel": "warning", "access": "none"},
        "api": {"tag": "api", "services": ["HandlerService", "StatsService", "LoggerService"]},
        "stats": {},
        "policy": {
            "levels": {"0": {"statsUserUplink": true, "statsUserDownlink": true}},
            "system": {"statsInboundUplink": true, "statsInboundDownlink": true,
                       "statsOutboundUplink": true, "statsOutboundDownlink": true}
        },
        "inbounds": [
            {"tag": "api", "listen": "127.0.0.1", "port": api_port, "protocol": "dokodemo-door",
             "settings": {"address": "127.0.0.1"}},
            {"tag": "in-1", "listen": "127.0.0.1", "port": vmess_port, "protocol": "vmess",
             "settings": {"clients": []}},
            {"tag": "in-2", "listen": "127.0.0.1", "port": vless_port, "protocol": "vless",
             "settings": {"decryption": "none", "clients": []}}
        ],
        "outbounds": [{"tag": "direct", "protocol": "freedom"}],
        "routing": {"rules": [{"type": "field", "inboundTag": ["api"], "outboundTag": "api"}]}
    })
    .to_string()
}

fn client(tag: &str, email: &str, uuid: &str) -> ClientSpec {
    ClientSpec {
        inbound_tag: tag.into(),
        email: email.into(),
        secret: uuid.into(),
        flow: String::new(),
        enable: true,
        expiry_ms: 0,
        total_bytes: 0,
        reset_generation: 0,
    }
}

/// Waits until the core answers its API.
async fn wait_for_api(api: &CoreApi) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match api.sys_uptime().await {
            Ok(_) => return,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("core API never answered: {e}"),
        }
    }
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_users_stats_and_supervision() {
    let Some(binary) = v2ray() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.json");
    let api_port = free_port();
    std::fs::write(&config, server_config(api_port, free_port(), free_port())).unwrap();

    assert_eq!(detect_version(CoreFlavor::V2ray, &binary).await.as_deref(), Some("4.34.0"));
    check_config(CoreFlavor::V2ray, &binary, &config).await.unwrap();

    let core = CoreProcess::spawn(CoreFlavor::V2ray, binary, config.clone());
    let api = CoreApi::new(SocketAddr::from((Ipv4Addr::LOCALHOST, api_port)), CoreFlavor::V2ray);
    wait_for_api(&api).await;
    assert!(core.is_running());
    assert_eq!(core.generation(), 1);
    assert!(core.started_at().is_some());

    // vmess: add, add again, remove, remove again.
    let vmess = client("in-1", "a@x", "5783a3e7-e373-51cd-8642-c83782b807c5");
    api.add_user("in-1", "vmess", &vmess, None).await.unwrap();
    let again = api.add_user("in-1", "vmess", &vmess, None).await;
    assert!(matches!(again, Err(CoreApiError::AlreadyExists(_))), "{again:?}");

    // vless works the same way.
    let vless = client("in-2", "b@x", "0e7d8a0f-8a5e-4a6e-9d7c-2a0f3b1c4d5e");
    api.add_user("in-2", "vless", &vless, None).await.unwrap();
    let again = api.add_user("in-2", "vless", &vless, None).await;
    assert!(matches!(again, Err(CoreApiError::AlreadyExists(_))), "{again:?}");

    // An unknown inbound tag is refused.
    let unknown =
        api.add_user("nope", "vmess", &client("nope", "c@x", "5783a3e7-e373-51cd-8642-c83782b807c5"), None).await;
    assert!(unknown.is_err(), "{unknown:?}");

    // Stats: the API's own inbound counts our calls; nothing is reset by a plain query.
    let stats = api.query_stats("", false).await.unwrap();
    assert!(
        stats.iter().any(|(name, _)| parse_inbound_counter(name).is_some_and(|(tag, _)| tag == "api")),
        "{stats:?}"
    );
    assert!(api.query_stats("user>>>", true).await.is_ok());
    assert!(api.sys_uptime().await.unwrap() < 600);
    assert_eq!(api.online_users().await.unwrap(), None, "v2ray has no online-user API");
    assert_eq!(api.inbound_users("in-1").await.unwrap(), None, "v2ray cannot list users");

    api.remove_user("in-1", "a@x").await.unwrap();
    let again = api.remove_user("in-1", "a@x").await;
    assert!(matches!(again, Err(CoreApiError::NotFound(_))), "{again:?}");
    api.remove_user("in-2", "b@x").await.unwrap();

    // The banner and the "started" warning were captured.
    let logs = core.logs(100, LogLevel::Debug);
    assert!(logs.iter().any(|l| l.text.contains("V2Ray 4.34.0")), "{logs:?}");
    assert!(core.logs(100, LogLevel::Warning).iter().all(|l| l.level >= LogLevel::Warning));

    // A restart is a new child: users are gone and must be re-applied.
    let generation = core.generation();
    core.restart().await;
    assert_eq!(core.generation(), generation + 1);
    wait_for_api(&api).await;
    api.add_user("in-1", "vmess", &vmess, None).await.unwrap();
    assert_eq!(core.last_error(), None, "a requested restart is not an error");

    let needle = config.to_str().unwrap();
    assert_eq!(processes_mentioning(needle).len(), 1);
    core.stop().await;
    assert!(!core.is_running());
    assert!(core.is_stopped());
    assert!(processes_mentioning(needle).is_empty(), "v2ray outlived stop()");
    let gone = api.sys_uptime().await;
    assert!(matches!(gone, Err(CoreApiError::Unavailable(_))), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_core_is_restarted_with_its_error_kept() {
    let Some(binary) = v2ray() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.json");
    std::fs::write(&config, r#"{"inbounds": [{"port": "not-a-port", "protocol": "vmess"}]}"#).unwrap();

    let err = check_config(CoreFlavor::V2ray, &binary, &config).await.unwrap_err();
    assert!(err.contains("invalid port range"), "{err}");

    let core = CoreProcess::spawn(CoreFlavor::V2ray, binary, config.clone());
    // First crash, 0.5 s backoff, second start.
    wait_until("a second start", Duration::from_secs(10), || core.generation() >= 2).await;
    let error = core.last_error().expect("the crash is reported");
    assert!(error.contains("exited") && error.contains("invalid port range"), "{error}");
    assert!(core.logs(50, LogLevel::Error).iter().any(|l| l.text.starts_with("panic:")));

    core.stop().await;
    assert!(!core.is_running());
    let generation = core.generation();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(core.generation(), generation, "no start after stop()");
    assert!(processes_mentioning(config.to_str().unwrap()).is_empty());
}

#[tokio::test]
async fn a_missing_binary_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-core");
    assert_eq!(detect_version(CoreFlavor::Xray, &missing).await, None);
    assert!(check_config(CoreFlavor::Xray, &missing, &dir.path().join("c.json")).await.is_err());

    let core = CoreProcess::spawn(CoreFlavor::Xray, missing, dir.path().join("c.json"));
    wait_until("the start failure", Duration::from_secs(5), || core.last_error().is_some()).await;
    assert!(core.last_error().unwrap().contains("cannot start"));
    assert_eq!(core.generation(), 0);
    assert!(!core.is_running());
    core.stop().await;
    assert!(core.is_stopped());
}
