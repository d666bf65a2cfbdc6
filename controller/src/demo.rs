//! `flotilla-controller demo`: a controller on an embedded store plus a local agent running
//! in-process, enrolled automatically. Re-running reuses the data dir (same CA, admin, node).

use std::future::Future;
use std::time::Duration;

use flotilla_agent::drivers::containers::{BackendSetting as ContainersBackend, ContainersDriver, ContainersSettings};
use flotilla_agent::drivers::core::{CoreDriver, CoreSettings, ProxyCore};
use flotilla_agent::drivers::wireguard::{Backend, BackendSetting, WireGuardDriver, WireGuardSettings};
use flotilla_agent::link::{self, LinkDrivers, RunSettings};
use flotilla_agent::local_api::{self, LocalApiSettings};
use flotilla_agent::state::StateStore;
use std::sync::Arc;

use crate::server::{self, AdminBootstrap, Settings, INITIAL_PASSWORD_FILE};
use crate::store::{NewInbound, NewNode, Store, TariffRecord};

/// Name of the node the demo's local agent is enrolled as.
pub const DEMO_NODE: &str = "local";
/// Port of the inbound the banner's example creates.
const DEMO_PORT: u16 = 24443;

/// Tag and port of the inbound every demo starts with, so the v2ray-stat document's examples
/// (`inboundTag=vless-in`) work as printed.
const SEED_TAG: &str = "vless-in";
const SEED_PORT: u16 = 24444;

/// Runs the demo until `stop` completes. `local_api`: where the local agent serves the
/// v2ray-stat API (None: off).
pub async fn run(
    settings: Settings,
    local_api: Option<std::net::SocketAddr>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let data_dir = settings.data_dir.clone();
    let given_password = settings.admin.as_ref().map(|(_, p)| p.clone());
    let running = server::start(settings).await?;

    let (user, password) = match &running.admin {
        AdminBootstrap::Generated { username, password } => (username.clone(), Some(password.clone())),
        AdminBootstrap::Given { username } => (username.clone(), given_password),
        AdminBootstrap::Existing => match std::fs::read_to_string(data_dir.join(INITIAL_PASSWORD_FILE)) {
            Ok(line) => match line.trim().split_once(':') {
                Some((u, p)) => (u.to_string(), Some(p.to_string())),
                None => ("admin".to_string(), None),
            },
            Err(_) => ("admin".to_string(), None),
        },
    };

    // The local agent keeps its own state under the demo dir, as it would on a real host.
    let agent_state = StateStore::open(&data_dir.join("agent"))?;
    if agent_state.identity()?.is_none() {
        let store = running.store.clone();
        let node = match store.nodes()?.into_iter().find(|n| n.name == DEMO_NODE) {
            Some(n) => n,
            None => {
                let node = store.create_node(&NewNode {
                    name: DEMO_NODE.into(),
                    public_host: Some("127.0.0.1".into()),
                    ..Default::default()
                })?;
                let seed = NewInbound {
                    tag: Some(SEED_TAG.into()),
                    port: SEED_PORT,
                    protocol: "vless".into(),
                    remark: "v2ray-stat examples".into(),
                    enable: true,
                    settings: r#"{"decryption":"none"}"#.into(),
                    stream_settings: r#"{"network":"tcp","security":"none"}"#.into(),
                    sniffing: "{}".into(),
                    ..Default::default()
                };
                store.create_inbound(node.id, &seed, &[])?;
                node
            }
        };
        let token = running.fleet.issue_join_token(node.id)?;
        let enrolled = flotilla_agent::enroll::enroll(&agent_state, &token.token, None, false).await?;
        println!("enrolled the local agent as node {} ({})", enrolled.identity.node_id, enrolled.identity.node_name);
    }
    // The local agent supervises the first proxy core on PATH (`.ci/demo` installs v2ray).
    let agent_dir = data_dir.join("agent");
    let core = match CoreDriver::start(&CoreSettings::default(), agent_state.clone(), &agent_dir).await {
        Ok(core) => core,
        Err(e) => {
            println!("proxy core: {e}; the demo runs without one");
            None
        }
    };
    let core_note = match &core {
        Some(c) => {
            let status = c.current_status().await;
            let flavor = status.flavor.map(|f| f.as_str()).unwrap_or("a core");
            format!("the local agent supervises {flavor} {}, found on PATH", status.version)
        }
        None => "no proxy core found on PATH: install v2ray (apt-get install v2ray) for these examples".to_string(),
    };
    // The local agent drives WireGuard too: the kernel module when the host has it, else
    // wireguard-go (`.ci/demo` installs it), so the CandyPanel API's install makes a real wg0.
    let wireguard = match flotilla_agent::drivers::wireguard::detect() {
        Some(backend) => {
            let settings = WireGuardSettings {
                backend: match backend {
                    Backend::Kernel => BackendSetting::Kernel,
                    Backend::Userspace => BackendSetting::Userspace,
                },
                ..WireGuardSettings::default()
            };
            match WireGuardDriver::start(&settings, agent_state.clone(), flotilla_agent::clock::Clock::system()).await {
                Ok(driver) => Some(driver),
                Err(e) => {
                    println!("WireGuard: {e}; the demo runs without it");
                    None
                }
            }
        }
        None => {
            println!("WireGuard: neither the kernel module nor wireguard-go found; install wireguard-go for the CandyPanel examples");
            None
        }
    };
    // Containers (the VPS API) where this host can run them: root and the lxc tools. The guests
    // sit on the agent's own bridge (fltbr0, 10.203.0.1/24).
    let containers = match lxc_available() {
        Ok(()) => {
            let settings = ContainersSettings { backend: ContainersBackend::Lxc, ..ContainersSettings::default() };
            match ContainersDriver::start(&settings, agent_state.clone()).await {
                Ok(driver) => driver,
                Err(e) => {
                    println!("containers: {e}; the demo runs without them");
                    None
                }
            }
        }
        Err(why) => {
            println!("containers: {why}; the VPS API answers without a node to put servers on");
            None
        }
    };
    let catalog = match &containers {
        Some(_) => {
            let store = running.store.clone();
            tokio::task::spawn_blocking(move || seed_vps_catalog(&store)).await??
        }
        None => None,
    };
    // The address a peer elsewhere reaches this machine at, for the install example.
    let facts = flotilla_agent::facts::gather();
    let server_ip = facts
        .public_ips
        .iter()
        .chain(&facts.private_ips)
        .find(|ip| ip.is_ipv4())
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let wireguard_note =
        wireguard.as_ref().map(|w| format!("the local agent drives {} WireGuard", w.backend().as_str()));
    let (stop_agent, stop_rx) = tokio::sync::watch::channel(false);
    let api_settings = LocalApiSettings { listen: local_api, ..LocalApiSettings::default() };
    let api_core = core.clone().map(|c| c as Arc<dyn ProxyCore>);
    let api_stop = stop_rx.clone();
    let api = tokio::spawn(async move {
        if let Err(e) = local_api::serve(api_settings, api_core, api_stop).await {
            println!("local v2ray-stat API: {e}");
        }
    });
    // Per-interface byte counters of this machine (the external API's /v1/bandwidth).
    let bandwidth = flotilla_agent::drivers::bandwidth::BandwidthDriver::start(agent_state.clone());
    let agent = tokio::spawn(link::run_with_drivers(
        agent_state,
        RunSettings {
            metrics_interval: Duration::from_secs(5),
            controller_override: None,
            core: core.clone().map(|c| c as Arc<dyn ProxyCore>),
            wireguard: wireguard.clone(),
        },
        LinkDrivers {
            upgrade: None,
            containers: containers.clone(),
            // systemd units of this machine for the external API (off without systemd).
            services: flotilla_agent::drivers::services::ServicesDriver::start(&Default::default()).await,
            // The external API's file manager acts in the demo's `files` directory only.
            files: demo_files(&data_dir),
            bandwidth: Some(bandwidth),
        },
        stop_rx,
    ));

    let api_key = {
        let (store, dir, admin) = (running.store.clone(), data_dir.to_path_buf(), user.clone());
        tokio::task::spawn_blocking(move || demo_api_key(&store, &dir, &admin)).await?
    };
    let base = format!("http://{}", running.http_addr);
    let pw = password.clone().unwrap_or_else(|| "<password printed on the first run>".into());
    println!();
    println!("Flotilla demo is running (data in {})", data_dir.display());
    println!("  API:    {base}/api/v1/");
    println!("  agents: quic://{}", running.quic_addr);
    println!("  login:  {user} / {pw}");
    if password.is_none() {
        println!("          (pass --admin-user/--admin-password to set a new one)");
    }
    println!();
    println!("Try:");
    println!("  curl -u '{user}:{pw}' {base}/api/v1/servers/status");
    println!("  curl -u '{user}:{pw}' -X POST {base}/api/v1/nodes -H 'Content-Type: application/json' -d '{{\"name\":\"nl-1\",\"url\":\"https://203.0.113.7:443/\"}}'");
    println!();
    println!("Proxy ({core_note}):");
    println!("  # a VLESS inbound on port {DEMO_PORT} of every node, then a client on it");
    println!("  curl -u '{user}:{pw}' -X POST {base}/api/v1/inbounds -H 'Content-Type: application/json' -d '{{\"port\":{DEMO_PORT},\"protocol\":\"vless\",\"remark\":\"demo\",\"settings\":{{\"decryption\":\"none\"}},\"streamSettings\":{{\"network\":\"tcp\",\"security\":\"none\"}}}}'");
    println!("  curl -u '{user}:{pw}' -X POST {base}/api/v1/clients/batch-add -H 'Content-Type: application/json' -d '{{\"clients\":[{{\"email\":\"demo@example.com\",\"inbound_id\":2,\"totalGB\":100}}]}}'");
    println!("  # the subscription (no auth): base64 of the share links, usable on this machine");
    println!("  curl {base}/api/v1/sub/demo@example.com");
    println!();
    if let Some(addr) = local_api {
        println!("Users on this host (the v2ray-stat API, no auth, loopback; inbound {SEED_TAG} on port {SEED_PORT} is ready):");
        println!("  curl -X POST http://{addr}/api/v1/add_user -d \"user=newuser&credential=123e4567-e89b-12d3-a456-426614174000&inboundTag={SEED_TAG}\"");
        println!("  curl http://{addr}/api/v1/stats");
        println!("  # the same fleet-wide, authenticated: curl -u '{user}:{pw}' {base}/api/v1/users");
        println!();
    }
    match &wireguard_note {
        Some(note) => {
            let json = "-H 'Content-Type: application/json'";
            println!("WireGuard, the CandyPanel API ({note}; CandyPanel's web UI and bot work against {base}):");
            println!("  curl -X POST {base}/api/auth {json} -d '{{\"action\":\"install\",\"server_ip\":\"{server_ip}\",\"wg_port\":\"51820\",\"wg_address_range\":\"10.66.0.1/24\",\"admin_user\":\"{user}\",\"admin_password\":\"{pw}\"}}'");
            println!("  TOKEN=$(curl -s -X POST {base}/api/auth {json} -d '{{\"action\":\"login\",\"username\":\"{user}\",\"password\":\"{pw}\"}}' | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')");
            println!("  curl -X POST {base}/api/manage -H \"Authorization: Bearer $TOKEN\" {json} -d '{{\"resource\":\"client\",\"action\":\"create\",\"name\":\"phone\",\"expires\":\"2030-01-01\",\"traffic\":\"0\"}}'");
            println!("  curl -H \"Authorization: Bearer $TOKEN\" {base}/api/data");
            println!();
        }
        None => println!("WireGuard: not available on this host (install wireguard-go); the CandyPanel API answers without a node to put interfaces on.\n"),
    }
    match catalog {
        Some((os_id, tariff_id)) => {
            let json = "-H 'Content-Type: application/json'";
            println!("Virtual servers, the VPS API (the local agent runs LXC containers on bridge fltbr0):");
            println!("  TOKEN=$(curl -s -X POST {base}/api/auth/login {json} -d '{{\"email\":\"{user}\",\"password\":\"{pw}\"}}' | sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/')");
            println!("  curl {base}/api/os; curl {base}/api/tariff");
            println!("  curl -X POST {base}/api/server/create -H \"Authorization: Bearer $TOKEN\" {json} -d '{{\"osId\":{os_id},\"tariffId\":{tariff_id}}}'");
            println!("  curl -H \"Authorization: Bearer $TOKEN\" {base}/api/server/1/status");
            println!("  curl -X POST {base}/api/server/console -H \"Authorization: Bearer $TOKEN\" {json} -d '{{\"serverId\":1}}'   # open its url: a root shell in the guest");
            println!();
        }
        None => println!("Virtual servers: this host cannot run LXC containers (run as root with lxc, lxc-templates and busybox-static installed).\n"),
    }
    match &api_key {
        Ok((public, secret)) => {
            println!("External API (Panelica-style, HMAC-signed; the demo's key acts as {user}):");
            println!("  curl {base}/api/external/health");
            println!("  K={public}; S={secret}; T=$(date +%s); SIG=$(printf 'GET/v1/me%s' \"$T\" | openssl dgst -sha256 -hmac \"$S\" | sed 's/^.* //'); curl -H \"X-API-Key: $K\" -H \"X-Timestamp: $T\" -H \"X-Signature: $SIG\" {base}/api/external/v1/me");
            println!();
        }
        Err(e) => println!("External API: no demo key ({e}); make one with `flotilla-controller api-key create`.\n"),
    }
    println!("Press Ctrl-C to stop.");

    stop.await;
    println!("stopping…");
    let _ = stop_agent.send(true);
    if let Some(driver) = &containers {
        driver.stop();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), api).await;
    if let Some(core) = core {
        core.stop().await;
    }
    running.shutdown().await;
    Ok(())
}

/// The local agent's files driver, confined to `DATA_DIR/files` (created, with a README).
fn demo_files(data_dir: &std::path::Path) -> Option<Arc<flotilla_agent::drivers::files::FilesDriver>> {
    let root = data_dir.join("files");
    let settings = flotilla_agent::drivers::files::FilesSettings { roots: vec![root.clone()], ..Default::default() };
    match flotilla_agent::drivers::files::FilesDriver::new(&settings) {
        Ok(driver) => {
            let readme = root.join("README.txt");
            if !readme.exists() {
                let _ = std::fs::write(readme, "Files the external API's /v1/files endpoints may read and change.\n");
            }
            driver.map(Arc::new)
        }
        Err(e) => {
            println!("files: {e}; the files endpoints answer without a node to act on");
            None
        }
    }
}

/// Whether this host can run the demo's containers: root, the lxc tools and the busybox template.
fn lxc_available() -> Result<(), String> {
    if !running_as_root() {
        return Err("not running as root".into());
    }
    for tool in
        ["lxc-create", "lxc-start", "lxc-attach", "lxc-info", "lxc-stop", "lxc-destroy", "lxc-snapshot", "busybox"]
    {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        if !found {
            return Err(format!("{tool} not found (apt-get install lxc lxc-templates busybox-static)"));
        }
    }
    Ok(())
}

fn running_as_root() -> bool {
    // /proc/self/status names the effective uid on its "Uid:" line (real, effective, …).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// A catalog for the VPS examples, on the first run: BusyBox (instant), Debian 12 where LXC's
/// debian template is installed, and one small tariff. Returns the ids to order with.
fn seed_vps_catalog(store: &Store) -> Result<Option<(i64, i64)>, crate::store::StoreError> {
    use flotilla_protocol::containers::OsTemplate;
    if store.os_list()?.is_empty() {
        store.add_os("BusyBox", "linux", &OsTemplate::Busybox)?;
        if std::path::Path::new("/usr/share/lxc/templates/lxc-debian").exists() {
            store.add_os("Debian 12", "linux", &OsTemplate::Debian { release: "bookworm".into() })?;
        }
    }
    if store.tariffs()?.is_empty() {
        store.add_tariff(&TariffRecord {
            id: 0,
            name: "Demo".into(),
            cores: 1,
            memory_mib: 256,
            disk_gb: 1,
            price: 0.0,
            description: crate::api::vps::catalog::default_description(1, 256, 1),
        })?;
    }
    let os = store.os_list()?.into_iter().find(|o| o.name == "BusyBox").or(store.os_list()?.into_iter().next());
    let tariff = store.tariffs()?.into_iter().next();
    Ok(os.zip(tariff).map(|(o, t)| (o.id, t.id)))
}

/// The demo's external API key (`*:*`, acting as the admin): made on the first run, its secret
/// kept in `demo-api-key` (mode 0600) so every run prints a working signed example.
fn demo_api_key(store: &Store, data_dir: &std::path::Path, admin: &str) -> Result<(String, String), String> {
    let path = data_dir.join("demo-api-key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some((public, secret)) = text.trim().split_once(' ') {
            if store.api_key_for_signing(public).map_err(|e| e.to_string())?.is_some_and(|(_, s)| s == secret) {
                return Ok((public.to_string(), secret.to_string()));
            }
        }
    }
    let user = store.user(admin).map_err(|e| e.to_string())?.ok_or_else(|| format!("no user {admin}"))?;
    let request = crate::api::panelica::keys::KeyRequest {
        name: Some("demo".into()),
        scopes: Some(vec!["*:*".into()]),
        rate_limit_tier: Some("professional".into()),
        ..Default::default()
    };
    let new = request.into_new(user.id)?;
    let (key, secret) = store.create_api_key(&new).map_err(|e| e.to_string())?;
    crate::private_file::write(&path, format!("{} {secret}\n", key.public_key).as_bytes())
        .map_err(|e| e.to_string())?;
    Ok((key.public_key, secret))
}
