//! Starting and stopping a whole controller: store, PKI, admin bootstrap, fleet endpoint, HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::Rng;

use crate::api::{self, AppState};
use crate::auth::{self, Authenticator};
use crate::config::MonitoringConfig;
use crate::fleet::{Fleet, FleetConfig, FleetError};
use crate::pki::{Pki, PkiError};
use crate::private_file;
use crate::store::{Role, Store, StoreError};

/// Name of the file holding a generated first admin password (mode 0600).
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

/// Everything needed to start a controller.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub fleet: FleetConfig,
    /// First admin (`--admin-user/--admin-password`); if the user exists its password is reset.
    pub admin: Option<(String, String)>,
    pub pam_service: Option<String>,
    /// URL prefix every API is also served under (`/my-panel`), checked by [`parse_base_path`].
    pub base_path: Option<String>,
    /// The monitoring stack the web UI's monitoring tab reports on (`[monitoring]`).
    pub monitoring: MonitoringConfig,
    /// The fleet-wide v2ray-stat API (`[v2ray_stat]`).
    pub v2ray_stat: crate::api::v2ray_stat::V2rayStatSettings,
    /// The CandyPanel API (`[candy]`).
    pub candy: crate::api::candy::CandySettings,
    /// The VPS API (`[vps]`).
    pub vps: crate::api::vps::VpsSettings,
    /// The external (Panelica) API.
    pub external: crate::api::panelica::ExternalApiSettings,
    /// The one-line node install (`[install]`).
    pub install: crate::api::install::InstallSettings,
    /// E-mail notifications (`[email]` and the `SMTP_*` environment variables).
    pub email: crate::email::EmailSettings,
    /// The external API's webhooks (`[webhooks]`).
    pub webhooks: crate::webhooks::WebhookSettings,
}

#[cfg(test)]
impl Settings {
    /// A controller on loopback with ephemeral ports, admin `admin` / `admin-password`.
    pub(crate) fn for_tests(data_dir: &std::path::Path) -> Settings {
        Settings {
            data_dir: data_dir.to_path_buf(),
            http: "127.0.0.1:0".parse().expect("literal"),
            fleet: FleetConfig {
                quic: "127.0.0.1:0".parse().expect("literal"),
                public_addrs: vec!["127.0.0.1:1".into()],
                join_token_ttl: std::time::Duration::from_secs(60),
                agent_cert_lifetime: std::time::Duration::from_secs(3600),
                heartbeat_interval: std::time::Duration::from_secs(5),
            },
            admin: Some(("admin".into(), "admin-password".into())),
            pam_service: None,
            base_path: None,
            monitoring: Default::default(),
            v2ray_stat: Default::default(),
            candy: Default::default(),
            vps: Default::default(),
            external: Default::default(),
            install: Default::default(),
            email: Default::default(),
            webhooks: Default::default(),
        }
    }
}

/// Validates a `--base-path`: `/` followed by path segments, no trailing slash (`/` alone = none).
pub fn parse_base_path(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if !trimmed.starts_with('/')
        || trimmed.contains("//")
        || trimmed.chars().any(|c| c.is_whitespace() || matches!(c, '?' | '#' | '{' | '}' | '*'))
    {
        return Err(format!("base path must look like /my-panel, got {raw:?}"));
    }
    Ok(trimmed.to_string())
}

/// Controller start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("cannot listen on HTTP {0}: {1}")]
    Http(SocketAddr, std::io::Error),
    #[error("{0}")]
    BasePath(String),
    #[error("{0}")]
    Monitoring(String),
    #[error(transparent)]
    VpsAlerts(#[from] crate::vps_alerts::ThresholdError),
    #[error("e-mail: {0}")]
    Email(String),
    #[error("{0}")]
    Webhooks(String),
}

/// How the first admin came to be.
#[derive(Debug, Clone)]
pub enum AdminBootstrap {
    /// Created or reset from the given credentials.
    Given { username: String },
    /// Generated now; the password is shown once and saved in `initial-admin-password`.
    Generated { username: String, password: String },
    /// Users already existed; nothing changed.
    Existing,
}

/// A running controller.
pub struct Running {
    pub store: Store,
    pub fleet: Arc<Fleet>,
    pub http_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    pub admin: AdminBootstrap,
    http: tokio::task::JoinHandle<()>,
    /// The Socket.IO pusher (it holds the fleet, so it is ended here, not by the fleet).
    socketio: tokio::task::JoinHandle<()>,
    /// The e-mail notifier (server ready, critical alerts), when e-mail is on.
    notifier: Option<tokio::task::JoinHandle<()>>,
    /// The webhooks' delivery worker and event listener.
    webhooks: Arc<crate::webhooks::Webhooks>,
    /// The e-mail outbox's worker.
    mailer: Arc<crate::email::Mailer>,
    stop_http: tokio::sync::oneshot::Sender<()>,
    /// Where the external API's own listener is bound, when configured.
    pub external_addr: Option<SocketAddr>,
    external: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("http", &self.http_addr).field("quic", &self.quic_addr).finish()
    }
}

fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..20).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

/// Ensures there is an administrator.
pub fn bootstrap_admin(
    store: &Store,
    data_dir: &Path,
    given: Option<(String, String)>,
) -> Result<AdminBootstrap, StoreError> {
    if let Some((username, password)) = given {
        let hash = auth::hash_password(&password)?;
        if !store.set_password_hash(&username, &hash)? {
            store.create_user(&username, &hash, Role::Admin)?;
        }
        return Ok(AdminBootstrap::Given { username });
    }
    if store.user_count()? > 0 {
        return Ok(AdminBootstrap::Existing);
    }
    let (username, password) = ("admin".to_string(), generate_password());
    store.create_user(&username, &auth::hash_password(&password)?, Role::Admin)?;
    let path = data_dir.join(INITIAL_PASSWORD_FILE);
    if let Err(e) = private_file::write(&path, format!("{username}:{password}\n").as_bytes()) {
        tracing::warn!(error = %e, "could not save the generated admin password");
    }
    Ok(AdminBootstrap::Generated { username, password })
}

/// Adds the one-liner's agent package to the rollout catalog, so the nodes it installs can be
/// rolled back to it. A file that cannot be read or is not an agent package is only logged: the
/// one-liner route reports it to whoever asks.
fn offer_install_package(store: &Store, path: &std::path::Path) {
    let added = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|data| api::multi_server::rollouts::add_package(store, &data).map_err(|e| e.to_string()));
    match added {
        Ok((record, crate::store::PackageAdded::Added)) => {
            tracing::info!(version = %record.version, path = %path.display(), "install package added to the rollout catalog")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the install package is not in the rollout catalog")
        }
    }
}

/// Starts everything; returns once the HTTP and QUIC sockets are bound.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    // Settings are checked before anything is created or bound.
    let base_path = match settings.base_path.as_deref().map(parse_base_path).transpose() {
        Ok(p) => p.filter(|p| !p.is_empty()),
        Err(e) => return Err(StartError::BasePath(e)),
    };
    settings.vps.alerts.validate()?;
    settings.email.validate().map_err(StartError::Email)?;
    settings.webhooks.validate().map_err(StartError::Webhooks)?;
    let monitoring = crate::monitoring::Monitoring::new(&settings.monitoring, base_path.as_deref())
        .map_err(StartError::Monitoring)?;
    private_file::ensure_private_dir(&settings.data_dir)
        .map_err(|e| StartError::DataDir(settings.data_dir.display().to_string(), e))?;
    let store = Store::open(&settings.data_dir)?;
    let admin = bootstrap_admin(&store, &settings.data_dir, settings.admin.clone())?;
    let pki = Arc::new(Pki::load_or_create(&settings.data_dir)?);
    let ca_fingerprint = pki.ca_fingerprint();
    let fleet = Fleet::start(store.clone(), pki, settings.fleet.clone(), &settings.data_dir)?;
    let quic_addr = fleet.local_addr().map_err(|e| FleetError::Endpoint(e.to_string()))?;
    crate::jobs::wireguard_reset::start(fleet.clone());
    if let Some(path) = &settings.install.agent_package {
        offer_install_package(&store, path);
    }
    if let Some(path) = &settings.candy.bot_db {
        crate::api::candy::bot_db::write(&store, path)?;
    }
    let auth = Arc::new(Authenticator::new(store.clone(), settings.pam_service.clone()));
    let mailer = crate::email::Mailer::start(&settings.email, store.clone());
    let vps_alerts = crate::vps_alerts::hub();
    // Subscribed before the Socket.IO pusher (which raises the alerts) starts.
    let notifier = mailer.enabled().then(|| {
        crate::email::spawn_vps_notifier(
            store.clone(),
            mailer.clone(),
            fleet.vps_events(),
            vps_alerts.subscribe(),
            settings.email.alert_interval,
        )
    });
    // Started before the Socket.IO pusher raises VPS alerts; pending deliveries resume now.
    let webhooks =
        crate::webhooks::Webhooks::new(store.clone(), settings.webhooks.clone()).map_err(StartError::Webhooks)?;
    webhooks.start(fleet.clone(), &vps_alerts);
    let state = AppState {
        store: store.clone(),
        fleet: fleet.clone(),
        auth,
        feed: Default::default(),
        history: crate::jobs::history::HistoryJob::start(fleet.clone()),
        adguard: crate::jobs::adguard::AdGuardJob::start(store.clone()),
        monitoring: Arc::new(monitoring),
        v2ray_stat: Arc::new(settings.v2ray_stat.clone()),
        candy: Arc::new(settings.candy.clone()),
        install: Arc::new(settings.install.clone()),
        rollouts: crate::rollout::Rollouts::start(fleet.clone()),
        vps: Arc::new(settings.vps.clone()),
        vps_alerts,
        mailer: mailer.clone(),
        vps_consoles: Default::default(),
        external: Arc::new(api::panelica::ExternalApi::new(settings.external.clone())),
        webhooks: webhooks.clone(),
    };
    // The external API's own listener (the original's port 3002), when configured.
    let external = match settings.external.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| StartError::Http(addr, e))?;
            let bound = listener.local_addr().map_err(|e| StartError::Http(addr, e))?;
            let app = api::panelica::standalone(state.clone());
            tracing::info!(http = %bound, "external API listening on its own port too");
            Some((
                bound,
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
                    {
                        tracing::error!(error = %e, "external API listener failed");
                    }
                }),
            ))
        }
        None => None,
    };
    let app = api::app(state.clone(), base_path.as_deref());
    // Socket.IO wraps the whole app: its layer answers /socket.io (and {base_path}/socket.io).
    let (app, socketio) = api::vps::socketio::attach(state, app, base_path.as_deref());
    let listener =
        tokio::net::TcpListener::bind(settings.http).await.map_err(|e| StartError::Http(settings.http, e))?;
    let http_addr = listener.local_addr().map_err(|e| StartError::Http(settings.http, e))?;
    let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(http = %http_addr, quic = %quic_addr, ca = %hex::encode(ca_fingerprint), "controller started");
    let (external_addr, external) = external.unzip();
    Ok(Running {
        store,
        fleet,
        http_addr,
        quic_addr,
        admin,
        http,
        socketio,
        notifier,
        webhooks,
        mailer,
        stop_http,
        external_addr,
        external,
    })
}

impl Running {
    /// Stops HTTP and closes every agent link.
    pub async fn shutdown(self) {
        let _ = self.stop_http.send(());
        self.socketio.abort();
        if let Some(notifier) = &self.notifier {
            notifier.abort();
        }
        if let Some(external) = &self.external {
            external.abort();
        }
        self.webhooks.stop();
        self.mailer.stop();
        self.fleet.shutdown().await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.http).await;
    }
}
