//! `flotilla-controller`: the fleet controller binary.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
/// How e-mail notifications are configured (shown by `serve --help`).
const EMAIL_HELP: &str = "E-mail notifications (server ready, critical resource alerts) go through the SMTP server \
named by SMTP_HOST, SMTP_PORT [default: 587; 465 = implicit TLS, else STARTTLS when offered], SMTP_USER, \
SMTP_PASS and SMTP_FROM [default: flotilla@<host>]. These environment variables override the same keys \
(host, port, user, pass, from) of the config file's [email] section, which also has alert_interval \
[default: 1h]. Without a host no mail is sent.";

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
    #[command(after_help = EMAIL_HELP)]
    Serve(ServeArgs),
    /// All-in-one demo: controller on an embedded store plus a local agent, enrolled automatically.
    Demo(DemoArgs),
    /// Manage nodes directly in the store (works while `serve` runs).
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage built-in users.
    #[command(subcommand)]
    User(UserCommand),
    /// See the e-mail outbox.
    #[command(subcommand)]
    Mail(MailCommand),
    /// Write a backup archive of the data dir (mode 0600): a consistent copy of the store, taken
    /// with SQLite's online backup API while `serve` keeps running, plus secret.key and the CA.
    Backup {
        /// The archive to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup archive into the data dir (stop the controller first). The archive is
    /// checked completely before anything is replaced; replaced files are kept beside the new
    /// ones as `<name>.before-restore-<unix time>`.
    Restore {
        /// The archive to restore.
        #[arg(long)]
        from: PathBuf,
        /// Replace a store already in the data dir.
        #[arg(long)]
        replace: bool,
    },
    /// The catalog of flotilla-agent packages that rollouts install and roll back to (works while
    /// `serve` runs; run it as the controller's user, e.g. `sudo -u flotilla`).
    #[command(subcommand)]
    AgentPackage(AgentPackageCommand),
    /// Rolling upgrades of the agents: started here, driven by the running `serve` (it picks a new
    /// rollout up within 2 s), which installs the package node by node, a canary first, then
    /// batches, and stops at the first node that does not come back healthy (that node reinstalls
    /// its previous package by itself). The same as POST /api/v1/rollouts.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// The VPS API's catalogs of OS templates and tariffs (works while `serve` runs; run it as
    /// the controller's user). The same as POST /api/os and /api/tariff.
    #[command(subcommand)]
    Vps(VpsCommand),
    /// API keys of the external (Panelica-style) API, at /api/external/v1/ (works while `serve`
    /// or `demo` runs; run it as the controller's user). The secret is printed once.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Check the configuration file and exit: 0 when `serve` can start with it, 2 when not (with
    /// the reason). systemd runs it before starting and before reloading the service.
    CheckConfig,
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
enum ApiKeyCommand {
    /// Create a key and print it with its secret (shown once).
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated `resource:action` scopes, `*:*` for everything (needed to manage
        /// keys through the API).
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// starter (60/min), professional (300/min), business (1000/min) or enterprise
        /// (unlimited).
        #[arg(long, default_value = "professional")]
        tier: String,
        /// The user the key acts for [default: the first administrator].
        #[arg(long)]
        user: Option<String>,
        /// live or test (`pk_test_…`).
        #[arg(long, default_value = "live")]
        environment: String,
        /// Days until it expires [default: never].
        #[arg(long)]
        expires_in: Option<u32>,
        /// An address or CIDR block it may be used from (repeat) [default: anywhere].
        #[arg(long = "ip")]
        ips: Vec<String>,
        /// Print JSON (`public_key`, `secret_key`, …) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List,
    /// Delete a key (it stops working at once).
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
enum VpsCommand {
    /// Add an OS template: `busybox`, `debian:<release>` or `lxc:<template> [args…]`.
    OsAdd {
        name: String,
        #[arg(long)]
        template: String,
    },
    /// Add a tariff.
    TariffAdd {
        name: String,
        #[arg(long)]
        cores: u32,
        /// Memory in MiB.
        #[arg(long)]
        memory: u64,
        /// Disk in GB.
        #[arg(long)]
        disk: u64,
        #[arg(long, default_value_t = 0.0)]
        price: f64,
        /// Shown by the panel as bullet points (split at commas) [default: from the sizes].
        #[arg(long)]
        description: Option<String>,
    },
    /// List both catalogs.
    List,
}

#[derive(Debug, Subcommand)]
enum AgentPackageCommand {
    /// Add a flotilla-agent .deb (checked: its control file must name flotilla-agent).
    Add { file: PathBuf },
    /// List the catalog.
    List,
    /// Remove a version (refused while a running rollout installs it).
    Remove { version: String },
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Start upgrading the agents to a catalog version.
    Start {
        /// Package version to install (see `agent-package list`).
        version: String,
        /// Nodes per wave after the canary.
        #[arg(long, default_value_t = flotilla_controller::api::multi_server::rollouts::DEFAULT_BATCH_SIZE)]
        batch_size: u32,
        /// No canary wave: start with a full batch.
        #[arg(long)]
        no_canary: bool,
        /// How long each node has, once installed, to reconnect on the new version; one that does
        /// not is rolled back and stops the rollout.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
        health_timeout: Duration,
        /// Upgrade only these nodes, in this order (repeat) [default: every node, by id].
        #[arg(long = "node")]
        nodes: Vec<i64>,
        /// Follow the progress until the rollout ends; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Show a rollout's progress (default: the latest).
    Status {
        id: Option<i64>,
        /// Print the API's JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Follow the progress until the rollout ends; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Cancel a running rollout: no further wave starts.
    Cancel { id: i64 },
}

#[derive(Debug, Subcommand)]
enum MailCommand {
    /// The e-mail outbox: mail waiting to be sent and mail given up, newest first (with --all,
    /// sent mail too). Works while the controller runs.
    List {
        /// Sent mail too.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print a JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
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
        /// E-mail address (the VPS panel logs in with it; unique).
        #[arg(long)]
        email: Option<String>,
    },
    /// Delete a user with their API keys, webhooks and sessions (refused while they own
    /// virtual servers, and for the last administrator). Raises `user.deleted`.
    Delete { username: String },
    /// List the users: id, name, role, e-mail, created (no passwords).
    List {
        /// Print a JSON array instead of text.
        #[arg(long)]
        json: bool,
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
    if matches!(cli.command, Command::CheckConfig) {
        return check_config(&config_path, &file);
    }
    let log = flotilla_agent::logging::init(file.log.as_deref().unwrap_or("info"));
    let reload = flotilla_agent::logging::ConfigReload::new(config_path, log, move |path| {
        FileConfig::load(path, explicit).map(|f| f.log.unwrap_or_else(|| "info".into())).map_err(|e| e.to_string())
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla-controller: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(cli, file, reload)) {
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
    // Process-wide: read where the nodes' metrics samples arrive.
    flotilla_controller::api::panelica::status::set_disk_warning_percent(
        file.external_api.disk_warning_percent.unwrap_or(90.0),
    );
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
        // SMTP_* environment variables override `[email]` of the file.
        email: flotilla_controller::email::EmailSettings::resolve(&file.email, |k| std::env::var(k).ok()),
        install: flotilla_controller::api::install::InstallSettings {
            agent_package: file.install.agent_package.clone(),
        },
        webhooks: {
            let defaults = flotilla_controller::webhooks::WebhookSettings::default();
            flotilla_controller::webhooks::WebhookSettings {
                telegram_api: file.webhooks.telegram_api.clone().unwrap_or(defaults.telegram_api),
                concurrency: file.webhooks.concurrency.unwrap_or(defaults.concurrency),
            }
        },
        external: flotilla_controller::api::panelica::ExternalApiSettings {
            body_limit: file.external_api.body_limit.unwrap_or(10 * 1024 * 1024),
            refuse_replays: file.external_api.refuse_replays.unwrap_or(true),
            listen: file.external_api.listen,
        },
        vps: {
            let defaults = flotilla_controller::vps_alerts::AlertThresholds::default();
            flotilla_controller::api::vps::VpsSettings {
                registration: file.vps.registration.unwrap_or(false),
                anonymous_socketio: file.vps.anonymous_socketio.unwrap_or(false),
                cors_origins: file.vps.cors_origins.clone().unwrap_or_else(|| {
                    flotilla_controller::api::vps::DEFAULT_CORS_ORIGINS.iter().map(|o| o.to_string()).collect()
                }),
                console_assets: file.vps.console_assets.clone(),
                // Checked by server::start, which can refuse to start.
                alerts: flotilla_controller::vps_alerts::AlertThresholds {
                    cpu: file.vps.alert_cpu.unwrap_or(defaults.cpu),
                    memory: file.vps.alert_memory.unwrap_or(defaults.memory),
                    disk: file.vps.alert_disk.unwrap_or(defaults.disk),
                    margin: file.vps.alert_margin.unwrap_or(defaults.margin),
                },
            }
        },
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

async fn real_main(cli: Cli, file: FileConfig, reload: flotilla_agent::logging::ConfigReload) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            // SIGHUP reloads; registered first, so an early `systemctl reload` cannot end us.
            let hup = flotilla_agent::signals::hangup();
            let running = server::start(settings(&args, &file, data_dir.clone(), false)).await?;
            let password_file = data_dir.join(INITIAL_PASSWORD_FILE);
            match &running.admin {
                // Shown only to a person at a terminal: under systemd, stdout is the journal,
                // and passwords are never logged.
                AdminBootstrap::Generated { username, password } if std::io::stdout().is_terminal() => println!(
                    "created administrator {username:?} with password {password:?} (also in {}; delete it once noted)",
                    password_file.display()
                ),
                AdminBootstrap::Generated { username, .. } => println!(
                    "created administrator {username:?}; its password is in {} (mode 0600; delete it once noted)",
                    password_file.display()
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
            flotilla_agent::signals::stopped_reloading(hup, || reload.reload()).await;
            tracing::info!("stopping");
            running.shutdown().await;
            Ok(())
        }
        Command::Demo(args) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from("flotilla-demo"));
            let local_api = flotilla_agent::local_api::parse_listen(&args.local_api)
                .map_err(|e| anyhow::anyhow!("--local-api: {e}"))?;
            demo::run(settings(&args.serve, &file, data_dir, true), local_api, flotilla_agent::signals::stopped()).await
        }
        Command::Node(cmd) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            node_command(cmd, &data_dir)
        }
        Command::AgentPackage(cmd) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            agent_package_command(cmd, &data_dir)
        }
        Command::Vps(cmd) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            vps_command(cmd, &data_dir)
        }
        Command::ApiKey(cmd) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            api_key_command(cmd, &data_dir)
        }
        Command::Rollout(cmd) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            rollout_command(cmd, &data_dir).await
        }
        Command::CheckConfig => unreachable!("handled before the runtime starts"),
        Command::Backup { out } => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let summary = flotilla_controller::backup::backup(&data_dir, &out)?;
            println!(
                "backup of {} written to {} ({} bytes, store schema {}, {} nodes)",
                data_dir.display(),
                out.display(),
                summary.bytes,
                summary.schema_version,
                summary.nodes
            );
            Ok(())
        }
        Command::Restore { from, replace } => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let summary = flotilla_controller::backup::restore(&from, &data_dir, replace)?;
            println!(
                "restored {} into {} (store schema {}, {} nodes); start the controller",
                from.display(),
                data_dir.display(),
                summary.schema_version,
                summary.nodes
            );
            Ok(())
        }
        Command::User(UserCommand::Add { username, role, reset, email }) => {
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
            if let Some(email) = email.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
                if !email.contains('@') {
                    anyhow::bail!("--email {email:?} is not an e-mail address");
                }
                store.set_user_email(&username, Some(email))?;
                println!("e-mail of {username:?} set to {email}");
            }
            Ok(())
        }
        Command::Mail(MailCommand::List { all, limit, json }) => {
            use flotilla_controller::store::{iso_ms, MailState};
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let store = Store::open(&data_dir)?;
            let states: &[MailState] = if all { &[] } else { &[MailState::Pending, MailState::Failed] };
            let mails = store.mails(states, limit)?;
            if json {
                let list: Vec<serde_json::Value> = mails
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "id": m.id, "recipient": m.recipient, "subject": m.subject, "state": m.state.as_str(),
                            "attempts": m.attempts, "next_attempt_at": (m.state == MailState::Pending).then(|| iso_ms(m.next_attempt_at_ms)),
                            "last_error": m.last_error, "created_at": iso_ms(m.created_at_ms),
                            "sent_at": m.sent_at_ms.map(iso_ms),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else if mails.is_empty() {
                println!("no mail {}", if all { "in the outbox" } else { "waiting or given up" });
            } else {
                for m in &mails {
                    let when = match m.state {
                        MailState::Pending => format!("next try {}", iso_ms(m.next_attempt_at_ms)),
                        MailState::Sent => format!("sent {}", m.sent_at_ms.map(iso_ms).unwrap_or_default()),
                        MailState::Failed => "given up".to_string(),
                    };
                    println!(
                        "{:>6}  {:<7} tries={:<2} {:<28} {:?}  {when}{}",
                        m.id,
                        m.state.as_str(),
                        m.attempts,
                        m.recipient,
                        m.subject,
                        m.last_error.as_deref().map(|e| format!("  last error: {e}")).unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        Command::User(UserCommand::List { json }) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let store = Store::open(&data_dir)?;
            let users = store.users()?;
            let created = |u: &flotilla_controller::store::UserSummary| {
                u.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
            };
            if json {
                let list: Vec<serde_json::Value> = users
                    .iter()
                    .map(|u| {
                        serde_json::json!({
                            "id": u.id, "username": u.username, "role": u.role.as_str(),
                            "email": u.email, "created_at": created(u),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for u in &users {
                    let email = u.email.as_deref().unwrap_or("-");
                    println!("{:>4}  {:<20} {:<9} {:<30} {}", u.id, u.username, u.role.as_str(), email, created(u));
                }
            }
            Ok(())
        }
        Command::User(UserCommand::Delete { username }) => {
            let data_dir = cli.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let store = Store::open(&data_dir)?;
            let user = store.delete_user(&username)?;
            println!("user {:?} ({}) deleted", user.username, user.role.as_str());
            Ok(())
        }
    }
}

fn api_key_command(cmd: ApiKeyCommand, data_dir: &std::path::Path) -> anyhow::Result<()> {
    use flotilla_controller::api::panelica::keys::{created_json, key_json, KeyRequest};
    private_file::ensure_private_dir(data_dir)?;
    let store = Store::open(data_dir)?;
    match cmd {
        ApiKeyCommand::Create { name, scopes, tier, user, environment, expires_in, ips, json } => {
            let user = match user {
                Some(name) => store.user(&name)?.ok_or_else(|| anyhow::anyhow!("no user {name:?}"))?,
                None => store.first_admin()?.ok_or_else(|| {
                    anyhow::anyhow!("no administrator yet: give --user, or start the controller once")
                })?,
            };
            let request = KeyRequest {
                name: Some(name),
                scopes: Some(scopes),
                rate_limit_tier: Some(tier),
                ip_whitelist: Some(ips),
                expires_in,
                environment: Some(environment),
            };
            let new = request.into_new(user.id).map_err(|e| anyhow::anyhow!(e))?;
            let (key, secret) = store.create_api_key(&new)?;
            if json {
                let mut body = created_json(&key, &secret);
                body["public_key"] = serde_json::json!(key.public_key);
                body["secret_key"] = serde_json::json!(secret);
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                println!("API key {} ({}) for {}:", key.name, key.id, key.username);
                println!("  public key: {}", key.public_key);
                println!("  secret key: {secret}   (shown once: store it now)");
                println!("  scopes: {}; tier: {}", key.scopes.join(", "), key.tier.as_str());
            }
        }
        ApiKeyCommand::List => {
            for key in store.api_keys(None)? {
                let k = key_json(&key);
                println!(
                    "{}  {:<16} {:<20} user={} tier={} scopes={} active={} expires={}",
                    key.id,
                    key.key_prefix(),
                    key.name,
                    key.username,
                    key.tier.as_str(),
                    key.scopes.join(","),
                    key.enabled,
                    k["expires_at"].as_str().unwrap_or("never")
                );
            }
        }
        ApiKeyCommand::Delete { id } => {
            if !store.delete_api_key(&id)? {
                anyhow::bail!("no API key {id}");
            }
            println!("API key {id} deleted");
        }
    }
    Ok(())
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

fn vps_command(cmd: VpsCommand, data_dir: &Path) -> anyhow::Result<()> {
    use flotilla_controller::store::{template_from_text, template_to_text, TariffRecord};
    let store = Store::open(data_dir)?;
    match cmd {
        VpsCommand::OsAdd { name, template } => {
            let template = template_from_text(&template).map_err(|e| anyhow::anyhow!("--template: {e}"))?;
            let os = store.add_os(&name, "linux", &template)?;
            println!("OS {} ({}) added: {}", os.id, os.name, template_to_text(&os.template));
        }
        VpsCommand::TariffAdd { name, cores, memory, disk, price, description } => {
            let description = description
                .unwrap_or_else(|| flotilla_controller::api::vps::catalog::default_description(cores, memory, disk));
            let tariff = TariffRecord { id: 0, name, cores, memory_mib: memory, disk_gb: disk, price, description };
            let tariff = store.add_tariff(&tariff)?;
            println!("tariff {} ({}) added: {}", tariff.id, tariff.name, tariff.description);
        }
        VpsCommand::List => {
            for os in store.os_list()? {
                println!("os     {:>4}  {:<24} {}", os.id, os.name, template_to_text(&os.template));
            }
            for t in store.tariffs()? {
                println!(
                    "tariff {:>4}  {:<24} {} core(s), {} MiB, {} GB, price {}",
                    t.id, t.name, t.cores, t.memory_mib, t.disk_gb, t.price
                );
            }
        }
    }
    Ok(())
}

fn agent_package_command(cmd: AgentPackageCommand, data_dir: &Path) -> anyhow::Result<()> {
    use flotilla_controller::api::multi_server::rollouts::{add_package, AgentPackageInfo};
    let store = Store::open(data_dir)?;
    match cmd {
        AgentPackageCommand::Add { file } => {
            let data = std::fs::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let (record, added) = add_package(&store, &data).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let what = match added {
                flotilla_controller::store::PackageAdded::Added => "added",
                flotilla_controller::store::PackageAdded::AlreadyThere => "already in the catalog",
            };
            println!(
                "flotilla-agent {} ({}, {} bytes, sha256 {}) {what}",
                record.version,
                record.arch,
                record.size,
                hex::encode(record.sha256)
            );
        }
        AgentPackageCommand::List => {
            for p in store.agent_packages()?.into_iter().map(AgentPackageInfo::from) {
                println!("{:<24} {:<8} {:>10}  {}  added {}", p.version, p.architecture, p.size, p.sha256, p.added_at);
            }
        }
        AgentPackageCommand::Remove { version } => {
            if !store.delete_agent_package(&version)? {
                anyhow::bail!("no package {version} in the catalog");
            }
            println!("package {version} removed from the catalog");
        }
    }
    Ok(())
}

async fn rollout_command(cmd: RolloutCommand, data_dir: &Path) -> anyhow::Result<()> {
    use flotilla_controller::api::multi_server::rollouts::{cancel_rollout, new_rollout, Rollout};
    use flotilla_protocol::upgrade::RolloutId;
    let store = Store::open(data_dir)?;
    let (id, wait, json) = match cmd {
        RolloutCommand::Start { version, batch_size, no_canary, health_timeout, nodes, wait } => {
            let timeout = u32::try_from(health_timeout.as_secs()).unwrap_or(u32::MAX);
            let nodes = (!nodes.is_empty()).then_some(nodes);
            let new = new_rollout(Some(version), Some(batch_size), Some(!no_canary), Some(timeout), nodes, "cli")
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let view = store.create_rollout(&new)?;
            println!("rollout {} created; a running controller starts it within 2 s", view.rollout.id);
            (view.rollout.id, wait, false)
        }
        RolloutCommand::Status { id, json, wait } => {
            let id = match id {
                Some(id) => RolloutId(id),
                None => {
                    store.rollouts()?.first().map(|v| v.rollout.id).ok_or_else(|| anyhow::anyhow!("no rollouts yet"))?
                }
            };
            (id, wait, json)
        }
        RolloutCommand::Cancel { id } => {
            let view = cancel_rollout(&store, RolloutId(id), "cli").map_err(|e| anyhow::anyhow!("{e}"))?;
            print_rollout(&Rollout::from(view));
            return Ok(());
        }
    };
    let mut shown = String::new();
    loop {
        let view = store.rollout(id)?.ok_or_else(|| anyhow::anyhow!("no rollout {id}"))?;
        let rollout = Rollout::from(view);
        let text = if json { serde_json::to_string_pretty(&rollout)? } else { rollout_text(&rollout) };
        if text != shown {
            println!("{text}");
            shown = text;
        }
        if !wait || rollout.state != "running" {
            if wait && rollout.state != "succeeded" {
                anyhow::bail!("rollout {id} {}", rollout.state);
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn print_rollout(r: &flotilla_controller::api::multi_server::rollouts::Rollout) {
    println!("{}", rollout_text(r));
}

/// A rollout as the CLI prints it: one line for the rollout, one per node.
fn rollout_text(r: &flotilla_controller::api::multi_server::rollouts::Rollout) -> String {
    let p = &r.progress;
    let mut out = format!(
        "rollout {} to {}: {}{} ({} upgraded, {} upgrading, {} pending, {} failed, {} rolled back, {} skipped of {})",
        r.id,
        r.version,
        r.state,
        r.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(),
        p.upgraded,
        p.upgrading,
        p.pending,
        p.failed,
        p.rolled_back,
        p.skipped,
        p.total
    );
    for n in &r.nodes {
        let wave = n.wave.map(|w| format!("wave {w}")).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "\n  {wave:<7} node {:<5} {:<20} {:<12} from {:<18} {}",
            n.node_id,
            n.name,
            n.state,
            n.from_version.as_deref().unwrap_or("?"),
            n.message.as_deref().unwrap_or("")
        ));
    }
    out
}

/// An http(s) service URL flag.
fn service_url(raw: &str) -> Result<String, String> {
    flotilla_controller::outbound::parse_http_url(raw)
}

/// `check-config`: the file parsed; the values `serve` would refuse are refused here too.
fn check_config(path: &Path, file: &FileConfig) -> ExitCode {
    let fail = |what: String| {
        eprintln!("flotilla-controller: config: {}: {what}", path.display());
        ExitCode::from(2)
    };
    let base_path = match file.base_path.as_deref().map(server::parse_base_path).transpose() {
        Ok(b) => b.filter(|b| !b.is_empty()),
        Err(e) => return fail(format!("base_path: {e}")),
    };
    if let Err(e) = flotilla_controller::monitoring::Monitoring::new(&file.monitoring, base_path.as_deref()) {
        return fail(format!("[monitoring] {e}"));
    }
    if let Some(tag) = &file.v2ray_stat.default_inbound_tag {
        if let Err(e) = flotilla_protocol::v2ray_stat::validate_inbound_tag(tag) {
            return fail(format!("[v2ray_stat] default_inbound_tag: {e}"));
        }
    }
    if let Some(dir) = &file.candy.ui_dir {
        if !dir.join("index.html").is_file() {
            return fail(format!("[candy] ui_dir {}: no index.html there (a built Frontend/dist)", dir.display()));
        }
    }
    if let Some(parent) = file.candy.bot_db.as_deref().and_then(Path::parent) {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            return fail(format!("[candy] bot_db: directory {} does not exist", parent.display()));
        }
    }
    let webhooks = flotilla_controller::webhooks::WebhookSettings {
        telegram_api: file.webhooks.telegram_api.clone().unwrap_or_else(|| "https://api.telegram.org".into()),
        concurrency: file.webhooks.concurrency.unwrap_or(32),
    };
    if let Err(e) = webhooks.validate() {
        return fail(e);
    }
    if let Err(e) =
        flotilla_controller::email::EmailSettings::resolve(&file.email, |k| std::env::var(k).ok()).validate()
    {
        return fail(format!("[email] {e}"));
    }
    if path.exists() {
        println!("flotilla-controller: config {} is valid", path.display());
    } else {
        println!("flotilla-controller: no config file at {}: the defaults apply", path.display());
    }
    ExitCode::SUCCESS
}
