//! `flotilla-agent`: the per-host agent binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flotilla_agent::config::{AgentConfig, DEFAULT_CONFIG, DEFAULT_DATA_DIR};
use flotilla_agent::drivers::containers::{BackendSetting as ContainersBackend, ContainersDriver};
use flotilla_agent::drivers::core::{CoreDriver, ProxyCore};
use flotilla_agent::drivers::wireguard::{BackendSetting, WireGuardDriver};
use flotilla_agent::identity::CertInfo;
use flotilla_agent::link::{self, RunSettings};
use flotilla_agent::local_api::{self, LocalApiSettings};
use flotilla_agent::state::StateStore;
use flotilla_agent::upgrade::{self, SelfUpgrade};
use std::sync::Arc;

/// Flotilla host agent.
///
/// Keeps one mutual-TLS QUIC link to the Flotilla controller, reports host facts and metrics,
/// drives the proxy core and (when configured) WireGuard, and keeps everything on this host
/// running while the controller is unreachable.
///
/// First enroll with the token the controller gave for this node, then run:
///
///   flotilla-agent enroll flt1_…
///   flotilla-agent run
#[derive(Debug, Parser)]
#[command(name = "flotilla-agent", version, verbatim_doc_comment)]
struct Cli {
    /// Directory for the agent's state (identity, key, local store).
    #[arg(long, global = true, env = "FLOTILLA_AGENT_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Configuration file (TOML; keys as in packaging/agent/agent.toml). Missing is fine at the
    /// default path [default: /etc/flotilla/agent.toml].
    #[arg(long, global = true, env = "FLOTILLA_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: connect to the controller and serve until stopped (SIGINT/SIGTERM;
    /// SIGHUP reloads the configuration). Exits with status 78 when the controller revoked this
    /// node's identity (node deleted, certificate superseded): re-enroll, then run again.
    ///
    /// With a WireGuard backend configured ([wireguard] backend, or --wireguard-backend), the
    /// agent checks at start that it works (the module, or wireguard-go) and refuses to start
    /// if it does not; it then restores the interfaces and peers it last applied, without
    /// waiting for the controller. Tunnels keep running while the agent is stopped.
    Run {
        /// Metrics sampling interval, e.g. "5s" (overrides the config file) [default: 5s].
        #[arg(long, value_parser = humantime::parse_duration)]
        metrics_interval: Option<Duration>,
        /// Controller address host:port (overrides the one stored at enrollment).
        #[arg(long)]
        controller: Option<String>,
        /// Proxy core traffic poll interval, e.g. "10s" (overrides [core] stats_interval).
        #[arg(long, value_parser = humantime::parse_duration)]
        stats_interval: Option<Duration>,
        /// Testing only: a file holding milliseconds to add to the clock of expiry and renewal
        /// decisions, so tests can pass a subscription end without waiting for it.
        #[arg(long, hide = true)]
        clock_skew_file: Option<PathBuf>,
        /// Local v2ray-stat API: a loopback address such as 127.0.0.1:9952, or "off" (overrides
        /// [local_api] listen).
        #[arg(long, value_name = "ADDR|off")]
        local_api: Option<String>,
        /// Columns of the local API's /api/v1/stats from a v2ray-stat config.yaml (its
        /// `stats_columns`; other keys are ignored). Overrides [stats_columns].
        #[arg(long, value_name = "FILE")]
        stats_columns: Option<PathBuf>,
        /// WireGuard backend: "kernel" (the wireguard module), "userspace" (wireguard-go) or
        /// "off" (overrides [wireguard] backend; default: off).
        #[arg(long, value_name = "kernel|userspace|off")]
        wireguard_backend: Option<BackendSetting>,
        /// Containers backend: "lxc" (the lxc-* tools), "proxmox" (the node's Proxmox VE API,
        /// [containers.proxmox]) or "off" (overrides [containers] backend; default: off).
        #[arg(long, value_name = "lxc|proxmox|off")]
        containers_backend: Option<ContainersBackend>,
    },
    /// Enroll this host with a join token from the controller (POST /api/v1/nodes).
    ///
    /// Generates the agent's key on this host, sends a certificate request and stores the signed
    /// certificate. Exits non-zero with a one-line reason if the token is bad, used or expired.
    Enroll {
        /// The join token (flt1_…).
        token: String,
        /// Controller address host:port (overrides the one inside the token).
        #[arg(long)]
        controller: Option<String>,
        /// Replace an existing identity.
        #[arg(long)]
        force: bool,
    },
    /// Check the configuration file, and that the WireGuard and containers backends it names
    /// are present, then exit: 0 when the agent can start with it, 2 when not (with the reason). systemd runs it
    /// before starting and before reloading the service.
    CheckConfig,
    /// Show enrollment and link status as recorded by the running agent.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Install the package an upgrade left in <data-dir>/upgrade (started by the agent in a
    /// transient systemd unit; not for interactive use).
    ApplyUpgrade,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs neither the configuration nor an identity: only what the agent left in the data dir.
    if matches!(cli.command, Command::ApplyUpgrade) {
        return apply_upgrade(&cli.data_dir);
    }
    let explicit = cli.config.is_some();
    let config_path = cli.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let config = match AgentConfig::load(&config_path, explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flotilla-agent: config: {e}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Command::CheckConfig) {
        return check_config(&config_path, &config);
    }
    let log = flotilla_agent::logging::init(&config.log);
    let reload = flotilla_agent::logging::ConfigReload::new(config_path, log, move |path| {
        AgentConfig::load(path, explicit).map(|c| c.log).map_err(|e| e.to_string())
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla-agent: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(cli, config, reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-agent: {e:#}");
            match e.downcast_ref::<link::LinkError>() {
                Some(link::LinkError::Revoked(_)) => ExitCode::from(link::EXIT_REVOKED),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn real_main(cli: Cli, config: AgentConfig, reload: flotilla_agent::logging::ConfigReload) -> anyhow::Result<()> {
    let state = StateStore::open(&cli.data_dir)?;
    match cli.command {
        Command::Enroll { token, controller, force } => {
            let controller = controller.or(config.controller.addr.clone());
            let done = flotilla_agent::enroll::enroll(&state, &token, controller.as_deref(), force).await?;
            println!(
                "enrolled as node {} ({}) with controller {}; start the agent with: flotilla-agent run",
                done.identity.node_id, done.identity.node_name, done.controller_addr
            );
            Ok(())
        }
        Command::Run {
            metrics_interval,
            controller,
            stats_interval,
            clock_skew_file,
            local_api,
            stats_columns,
            wireguard_backend,
            containers_backend,
        } => {
            // SIGHUP reloads; registered first, so an early `systemctl reload` cannot end us.
            let hup = flotilla_agent::signals::hangup();
            let mut core_settings = config.core.clone();
            if let Some(i) = stats_interval {
                core_settings.stats_interval = i;
            }
            if let Some(path) = clock_skew_file {
                tracing::warn!(path = %path.display(), "clock skew file in use (testing only)");
                core_settings.clock = flotilla_agent::clock::Clock::with_skew_file(path);
            }
            // A WireGuard backend that was asked for but cannot run is an error to fix, not a
            // host quietly serving without its tunnels. Checked (and the tunnels restored) before
            // waiting for enrollment: neither needs the controller.
            let mut wg_settings = config.wireguard.clone();
            if let Some(backend) = wireguard_backend {
                wg_settings.backend = backend;
            }
            let wireguard = match wg_settings.backend {
                BackendSetting::Off => None,
                _ => Some(
                    WireGuardDriver::start(&wg_settings, state.clone(), core_settings.clock.clone())
                        .await
                        .map_err(|e| anyhow::anyhow!("WireGuard: {e}"))?,
                ),
            };
            // Like WireGuard: a containers backend asked for but unusable stops the agent with
            // what to install.
            let mut ct_settings = config.containers.clone();
            if let Some(backend) = containers_backend {
                ct_settings.backend = backend;
            }
            let containers = ContainersDriver::start(&ct_settings, state.clone())
                .await
                .map_err(|e| anyhow::anyhow!("containers: {e}"))?;
            if state.identity()?.is_none() {
                // A service started before enrollment waits for it instead of crash-looping.
                tracing::warn!("not enrolled yet: run `flotilla-agent enroll TOKEN`; waiting");
                tokio::select! {
                    _ = async {
                        while !matches!(state.identity(), Ok(Some(_))) {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                    } => tracing::info!("enrolled; starting"),
                    _ = flotilla_agent::signals::stopped() => return Ok(()),
                }
            }
            let api_settings = LocalApiSettings::from_config(
                &config,
                local_api.as_deref(),
                stats_columns.as_deref(),
                core_settings.clock.clone(),
            )?;
            // A broken core setup must not take the link down: the controller should still see
            // the host (and the error) rather than an agent in a crash loop.
            let core = match CoreDriver::start(&core_settings, state.clone(), &cli.data_dir).await {
                Ok(core) => core,
                Err(e) => {
                    tracing::error!(error = %e, "proxy core driver not started");
                    None
                }
            };
            let settings = RunSettings {
                metrics_interval: metrics_interval.unwrap_or(config.metrics_interval),
                controller_override: controller.or(config.controller.addr.clone()),
                core: core.clone().map(|c| c as Arc<dyn ProxyCore>),
                wireguard: wireguard.clone(),
            };
            let (tx, rx) = tokio::sync::watch::channel(false);
            // The local API is an extra: a taken port (v2ray-stat itself still running) is logged,
            // and the agent goes on serving.
            let api_core = core.clone().map(|c| c as Arc<dyn ProxyCore>);
            let api_rx = rx.clone();
            let api = tokio::spawn(async move {
                if let Err(e) = local_api::serve(api_settings, api_core, api_rx).await {
                    tracing::error!(error = %e, "local v2ray-stat API not running");
                }
            });
            // Files inside `[files] roots` (none: off); bandwidth counters always.
            let files = flotilla_agent::drivers::files::FilesDriver::new(&config.files)
                .map_err(|e| anyhow::anyhow!("[files] {e}"))?
                .map(Arc::new);
            let bandwidth = flotilla_agent::drivers::bandwidth::BandwidthDriver::start(state.clone());
            // systemd units over D-Bus; off (one log line) where there is no systemd.
            let services = flotilla_agent::drivers::services::ServicesDriver::start(&config.services).await;
            let self_upgrade = Arc::new(SelfUpgrade::probe(&cli.data_dir));
            tracing::debug!(?self_upgrade, supported = self_upgrade.supported(), "self-upgrade");
            let drivers = link::LinkDrivers {
                upgrade: Some(self_upgrade),
                containers: containers.clone(),
                files,
                bandwidth: Some(bandwidth.clone()),
                services: services.clone(),
            };
            let mut link = tokio::spawn(link::run_with_drivers(state, settings, drivers, rx));
            // The link ends by itself only when the controller revoked this node.
            let ended = tokio::select! {
                _ = flotilla_agent::signals::stopped_reloading(hup, || reload.reload()) => None,
                ended = &mut link => Some(ended),
            };
            tracing::info!("stopping");
            let _ = tx.send(true);
            let result = match ended {
                Some(Ok(result)) => result.map_err(Into::into),
                Some(Err(e)) => Err(anyhow::anyhow!("link task failed: {e}")),
                None => match tokio::time::timeout(Duration::from_secs(5), link).await {
                    Ok(Ok(result)) => result.map_err(Into::into),
                    _ => Ok(()),
                },
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), api).await;
            if let Some(core) = core {
                core.stop().await;
            }
            if let Some(wireguard) = wireguard {
                wireguard.stop();
            }
            if let Some(containers) = containers {
                containers.stop();
            }
            bandwidth.stop();
            if let Some(services) = services {
                services.stop();
            }
            result
        }
        Command::Status { json } => status(&state, json),
        Command::CheckConfig | Command::ApplyUpgrade => unreachable!("handled before the runtime starts"),
    }
}

/// `apply-upgrade`: the installer, logging to stderr (the journal of its transient unit). Exits 0
/// when the new version runs, 1 when it was rolled back, failed, or there was nothing to apply.
fn apply_upgrade(data_dir: &std::path::Path) -> ExitCode {
    flotilla_agent::logging::init("info");
    let dir = upgrade::files::UpgradeDir::new(data_dir);
    let timing = upgrade::installer::InstallerTiming::default();
    match upgrade::installer::apply_upgrade(&dir, &upgrade::commands::SystemRunner, timing) {
        Ok(outcome) if outcome.result == flotilla_protocol::upgrade::UpgradeResult::Upgraded => ExitCode::SUCCESS,
        Ok(outcome) => {
            eprintln!("flotilla-agent: upgrade to {} did not succeed: {:?}", outcome.to_version, outcome.result);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("flotilla-agent: apply-upgrade: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config`: the file loaded; the WireGuard backend it names must also be usable.
fn check_config(path: &std::path::Path, config: &AgentConfig) -> ExitCode {
    if let Some(backend) = config.wireguard.backend.backend() {
        if let Err(e) = flotilla_agent::drivers::wireguard::LinuxHost::probe(backend) {
            eprintln!("flotilla-agent: config: {}: [wireguard] {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if config.containers.backend == ContainersBackend::Lxc {
        if let Err(e) = flotilla_agent::drivers::containers::check_lxc_host(&config.containers) {
            eprintln!("flotilla-agent: config: {}: [containers] {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if path.exists() {
        println!("flotilla-agent: config {} is valid", path.display());
    } else {
        println!("flotilla-agent: no config file at {}: the defaults apply", path.display());
    }
    ExitCode::SUCCESS
}

fn status(state: &StateStore, json: bool) -> anyhow::Result<()> {
    let Some(identity) = state.identity()? else {
        if json {
            println!("{}", serde_json::json!({ "enrolled": false }));
        } else {
            println!("not enrolled (run `flotilla-agent enroll TOKEN`)");
        }
        return Ok(());
    };
    let cert = CertInfo::parse(&identity.cert_der);
    let link = state.link_status()?;
    if json {
        let v = serde_json::json!({
            "enrolled": true,
            "node_id": identity.node_id.0,
            "node_name": identity.node_name,
            "controller": identity.controller,
            "certificate": cert.as_ref().map(|c| serde_json::json!({
                "serial": c.serial_hex,
                "not_before": c.not_before.unix_timestamp(),
                "not_after": c.not_after.unix_timestamp(),
                "renew_at": c.renew_at().unix_timestamp(),
            })),
            "link": link.as_ref().map(|l| serde_json::json!({
                "state": l.state.as_str(),
                "since": l.since.unix_timestamp(),
                "controller": l.controller,
                "detail": l.detail,
                "updated_at": l.updated_at.unix_timestamp(),
            })),
        });
        println!("{v}");
        return Ok(());
    }
    println!("node:        {} ({})", identity.node_id, identity.node_name);
    println!("controller:  {}", identity.controller.join(", "));
    if let Some(c) = cert {
        println!("certificate: serial {} valid until {} (renews at {})", c.serial_hex, c.not_after, c.renew_at());
    }
    match link {
        Some(l) => println!(
            "link:        {} since {}{}",
            l.state.as_str(),
            l.since,
            l.detail.map(|d| format!(" ({d})")).unwrap_or_default()
        ),
        None => println!("link:        never started"),
    }
    Ok(())
}
