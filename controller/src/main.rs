//! `flotilla-controller`: the fleet controller binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use flotilla_controller::api::v2ray_stat::V2rayStatSettings;
use flotilla_controller::config::{FileConfig, MonitoringConfig, DEFAULT_CONFIG, DEFAULT_DATA_DIR};
use flotilla_controller::fleet::FleetConfig;
use flotilla_controller::server::{self, AdminBootstrap, Settings, INITIAL_PASSWORD_FILE};
use flotilla_controller::store::{NewNode, Role, Store};
use flotilla_controller::{auth, demo, pki::Pki, private_file};

/// Flotilla fleet controller.
///
/// Holds the desired state of a fleet of VPN/proxy/hosting servers in an embedded SQLite store,
/// keeps one mutual-TLS QUIC link per host agent, and serves the operators' HTTP APIs
/// (Multi-Server Manager API under /api/v1/...).
///
/// Quick start on one machine:   flotilla-controller demo
/// Production:                   flotilla-controller serve --public-addr vpn.example.com:4433
#[derive(Debug, Parser)]
#[command(name = "flotilla-controller", version, verbatim_doc_comment)]
struct Cli {
    /// Directory for the store, CA and keys [default: /var/lib/flotilla-controller; demo:
    /// ./flotilla-demo].
    #[arg(long, global = true, env = "FLOTILLA_CONTROLLER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file (TOML; keys as in packaging/controller/controller.toml). Flags override
    /// it. Missing is fine at the default path [default: /etc/flotilla/controller.toml].
    #[arg(long, global = true, env = "FLOTILLA_CONTROLLER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Clone)]
struct ServeArgs {
    /// HTTP API listen address [default: 127.0.0.1:8080].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// QUIC (UDP) listen address for agents [default: 0.0.0.0:4433; demo: 127.0.0.1:4433].
    #[arg(long)]
    quic: Option<SocketAddr>,
    /// Address agents use to reach this controller (host:port), written into join tokens.
    /// Repeat for several. Defaults to the QUIC listen address, or this host's name when that
    /// address is unspecified (0.0.0.0).
    #[arg(long = "public-addr")]
    public_addr: Vec<String>,
    /// Lifetime of join tokens, e.g. "24h" [default: 24h].
    #[arg(long, value_parser = humantime::parse_duration)]
    join_token_ttl: Option<Duration>,
    /// Lifetime of agent certificates, e.g. "30d"; agents renew at 70% [default: 30d].
    #[arg(long, value_parser = humantime::parse_duration)]
    agent_cert_lifetime: Option<Duration>,
    /// Interval of application heartbeats to agents, e.g. "5s"; three missed ones end a link
    /// [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// URL prefix every API is also served under, for a reverse proxy that forwards
    /// https://example.com/my-panel/… unchanged, e.g. "/my-panel". The unprefixed paths keep
    /// working. [default: none]
    #[arg(long, value_parser = server::parse_base_path)]
    base_path: Option<String>,
    /// Prometheus of the monitoring stack (http(s) base URL), which the web UI's monitoring tab
    /// probes and asks for `sum(up)` ([monitoring] prometheus_url) [default: none].
    #[arg(long, value_parser = service_url)]
    prometheus_url: Option<String>,
    /// Loki of the monitoring stack (http(s) base URL), probed at /ready [default: none].
    #[arg(long, value_parser = service_url)]
    loki_url: Option<String>,
    /// Grafana of the monitoring stack (http(s) base URL), probed at /api/health [default: none].
    #[arg(long, value_parser = service_url)]
    grafana_url: Option<String>,
    /// Path the reverse proxy serves Grafana under; the web UI links to it [default: grafana].
    #[arg(long)]
    grafana_public_path: Option<String>,
    /// First administrator's user name (created, or its password reset, at start).
    #[arg(long, env = "FLOTILLA_ADMIN_USER", requires = "admin_password")]
    admin_user: Option<String>,
    /// First administrator's password. If no admin is given and no user exists, one is generated
    /// and printed once.
    #[arg(long, env = "FLOTILLA_ADMIN_PASSWORD", requires = "admin_user", hide_env_values = true)]
    admin_password: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller.
    Serve(ServeArgs),
    /// All-in-one demo: controller on an embedded store plus a local agent, enrolled automatically.
    Demo(DemoArgs),
    /// Manage nodes directly in the store (works while `serve` runs).
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage built-in users.
    #[command(subcommand)]
    User(UserCommand),
}

/// `demo`: the controller's settings plus the local agent's.
#[derive(Debug, clap::Args)]
struct DemoArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Where the local agent serves the v2ray-stat API (loopback only, no auth), or "off".
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:9952")]
    local_api: String,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Create a node and print its join token and enroll command.
    Add {
        name: String,
        /// Public address of the node (used for share links).
        #[arg(long)]
        address: Option<String>,
        /// Address agents use to reach the controller (host:port), written into the token.
        #[arg(long = "public-addr", required = true)]
        public_addr: Vec<String>,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        join_token_ttl: Duration,
    },
    /// List nodes.
    List,
    /// Delete a node; a running controller drops its link within 30 s (the HTTP API does it at once).
    Remove { id: i64 },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user (or reset its password with --reset). The password is read from
    /// FLOTILLA_PASSWORD or, if unset, the first line of standard input.
    Add {
        username: String,
        #[arg(long, default_value = "admin")]
        role: Role,
        #[arg(long)]
        reset: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let explicit = cli.config.is_some();
    let config_path = cli.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let file = match FileConfig::load(&config_path, explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flotilla-controller: config: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(file.log.clone().unwrap_or_else(|| "info".into())));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla-controller: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(cli, file)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flotilla-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn settings(args: &ServeArgs, file: &FileConfig, data_dir: PathBuf, demo: bool) -> Settings {
    let http = args.http.or(file.http).unwrap_or_else(|| "127.0.0.1:8080".parse().expect("literal"));
    let default_quic = if demo { "127.0.0.1:4433" } else { "0.0.0.0:4433" };
    let quic = args.quic.or(file.quic).unwrap_or_else(|| default_quic.parse().expect("literal"));
    let mut public_addrs = args.public_addr.clone();
    if public_addrs.is_empty() {
        public_addrs = file.public_addr.clone().unwrap_or_default();
    }
    if public_addrs.is_empty() {
        public_addrs.push(if quic.ip().is_unspecified() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
            tracing::warn!("no --public-addr given; join tokens will name this host as {}", host.trim());
            format!("{}:{}", host.trim(), quic.port())
        } else {
            quic.to_string()
        });
    }
    Settings {
        data_dir,
        http,
        fleet: FleetConfig {
            quic,
            public_addrs,
            join_token_ttl: args.join_token_ttl.or(file.join_token_ttl).unwrap_or(Duration::from_secs(24 * 3600)),
            agent_cert_lifetime: args
                .agent_cert_lifetime
                .or(file.agent_cert_lifetime)
                .unwrap_or(Duration::from_secs(30 * 24 * 3600)),
            heartbeat_interval: args.heartbeat_interval.or(file.heartbeat_interval).unwrap_or(Duration::from_secs(5)),
        },
        admin: args.admin_user.clone().zip(args.admin_password.clone()),
        candy: {
            let defaults = flotilla_controller::api::candy::CandySettings::default();
            flotilla_controller::api::candy::CandySettings {
                session_ttl: file.candy.session_ttl.unwrap_or(defaults.session_ttl),
                ui_dir: file.candy.ui_dir.clone(),
                bot_db: file.candy.bot_db.clone(),
            }
        },
        base_path: args.base_path.clone().or_else(|| file.base_path.clone()),
        v2ray_stat: {
            let local = flotilla_agent::local_api::LocalApiSettings {
                listen: None,
                default_inbound_tag: file
                    .v2ray_stat
                    .default_inbound_tag
                    .clone()
                    .unwrap_or_else(|| flotilla_agent::local_api::DEFAULT_INBOUND_TAG.into()),
                stats_columns: file.v2ray_stat.stats_columns.clone().unwrap_or_default(),
                clock: flotilla_agent::clock::Clock::system(),
            };
            let api_token = std::env::var("FLOTILLA_V2RAY_STAT_TOKEN")
                .ok()
                .or_else(|| file.v2ray_stat.api_token.clone())
                .filter(|t| !t.is_empty());
            V2rayStatSettings { api_token, local }
        },
        monitoring: MonitoringConfig {
            prometheus_url: args.prometheus_url.clone().or_else(|| file.monitoring.prometheus_url.clone()),
            loki_url: args.loki_url.clone().or_else(|| file.monitoring.loki_url.clone()),
            grafana_url: args.grafana_url.clone().or_else(|| file.monitoring.grafana_url.clone()),
            grafana_public_path: args
                .grafana_public_path
                .clone()
                .or_else(|| file.monitoring.grafana_public_path.clone()),
        },
        // With the `pam` feature, the packaged /etc/pam.d/flotilla-controller stack by default.
        pam_service: file
            .pam_service
            .clone()
            .or_else(|| cfg!(feature = "pam").then(|| "flotilla-controller".to_string())),
    }
}

async fn real_main(cli: Cli, file: FileConfig) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let running = server::start(settings(&args, &file, data_dir.clone(), false)).await?;
            match &running.admin {
                AdminBootstrap::Generated { username, password } => println!(
                    "created administrator {username:?} with password {password:?} (also in {}; delete it once noted)",
                    data_dir.join(INITIAL_PASSWORD_FILE).display()
                ),
                AdminBootstrap::Given { username } => {
                    tracing::info!(user = %username, "administrator set from flags/env")
                }
                AdminBootstrap::Existing => {}
            }
            println!(
                "flotilla-controller listening: http://{} (API), quic://{} (agents)",
                running.http_addr, running.quic_addr
            );
            wait_for_signal().await;
            tracing::info!("stopping");
            running.shutdown().await;
            Ok(())
        }
        Command::Demo(args) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from("flotilla-demo"));
            let local_api = flotilla_agent::local_api::parse_listen(&args.local_api)
                .map_err(|e| anyhow::anyhow!("--local-api: {e}"))?;
            demo::run(settings(&args.serve, &file, data_dir, true), local_api, wait_for_signal()).await
        }
        Command::Node(cmd) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            node_command(cmd, &data_dir)
        }
        Command::User(UserCommand::Add { username, role, reset }) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            private_file::ensure_private_dir(&data_dir)?;
            let store = Store::open(&data_dir)?;
            let password = match std::env::var("FLOTILLA_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if password.len() < 8 {
                anyhow::bail!("password must be at least 8 characters");
            }
            let hash = auth::hash_password(&password)?;
            if reset {
                if !store.set_password_hash(&username, &hash)? {
                    anyhow::bail!("no user {username:?}");
                }
                println!("password of {username:?} reset");
            } else {
                store.create_user(&username, &hash, role)?;
                println!("user {username:?} added");
            }
            Ok(())
        }
    }
}

fn node_command(cmd: NodeCommand, data_dir: &std::path::Path) -> anyhow::Result<()> {
    private_file::ensure_private_dir(data_dir)?;
    let store = Store::open(data_dir)?;
    match cmd {
        NodeCommand::Add { name, address, public_addr, join_token_ttl } => {
            let pki = Pki::load_or_create(data_dir)?;
            let node = store.create_node(&NewNode { name, public_host: address, ..Default::default() })?;
            let issued = flotilla_controller::fleet::issue_join_token(
                &store,
                pki.ca_fingerprint(),
                &public_addr,
                join_token_ttl,
                node.id,
            )?;
            println!("node {} ({}) created; on the host run:", node.id, node.name);
            println!("  flotilla-agent enroll {}", issued.token);
        }
        NodeCommand::List => {
            for n in store.nodes()? {
                println!(
                    "{:>5}  {:<24} {:<10} last seen {}",
                    n.id.0,
                    n.name,
                    if n.enrolled_at.is_some() { "enrolled" } else { "pending" },
                    n.last_seen_at.map(flotilla_controller::api::timestamp).unwrap_or_else(|| "never".into())
                );
            }
        }
        NodeCommand::Remove { id } => {
            if !store.delete_node(flotilla_protocol::NodeId(id))? {
                anyhow::bail!("no node {id}");
            }
            println!("node {id} deleted");
        }
    }
    Ok(())
}

/// An http(s) service URL flag.
fn service_url(raw: &str) -> Result<String, String> {
    flotilla_controller::outbound::parse_http_url(raw)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
