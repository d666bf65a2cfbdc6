//! Log output of the Flotilla binaries: stderr, coloured only on a terminal (the journal and log
//! files get plain text), with a filter that a SIGHUP reload can replace without a restart.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The running process's log filter.
#[derive(Clone)]
pub struct LogFilter {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` chose the filter at start; it keeps winning over the config file.
    from_env: bool,
}

impl std::fmt::Debug for LogFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFilter").field("from_env", &self.from_env).finish()
    }
}

impl LogFilter {
    /// Replaces the filter with `filter` (a config file's `log`); `Ok(false)` when `RUST_LOG`
    /// set it at start and so keeps it.
    pub fn set(&self, filter: &str) -> Result<bool, String> {
        if self.from_env {
            return Ok(false);
        }
        let new = EnvFilter::try_new(filter).map_err(|e| format!("log filter {filter:?}: {e}"))?;
        self.handle.reload(new).map_err(|e| e.to_string())?;
        Ok(true)
    }
}

impl LogFilter {
    /// Finishes a configuration reload (SIGHUP): applies the re-read file's log filter, or
    /// reports why the file did not load (the running settings stay). Other settings take
    /// effect at the next restart, and the log says so.
    pub fn apply_reloaded(&self, path: &std::path::Path, loaded: Result<String, String>) {
        match loaded {
            Ok(filter) => match self.set(&filter) {
                Ok(applied) => tracing::info!(
                    path = %path.display(),
                    log = if applied { filter.as_str() } else { "(RUST_LOG kept)" },
                    "configuration reloaded: log filter applied; other settings take effect at the next restart"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "configuration reloaded, but its log filter is invalid; kept the old one")
                }
            },
            Err(e) => tracing::error!(error = %e, "configuration not reloaded; the running settings stay"),
        }
    }
}

/// Reads a configuration file's log filter (or says why the file does not load).
type ReadFilter = Box<dyn Fn(&std::path::Path) -> Result<String, String> + Send + Sync>;

/// What a SIGHUP reload needs: where the configuration came from, how to read its log filter
/// again, and the filter to replace.
pub struct ConfigReload {
    path: std::path::PathBuf,
    log: LogFilter,
    read_filter: ReadFilter,
}

impl std::fmt::Debug for ConfigReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigReload").field("path", &self.path).finish()
    }
}

impl ConfigReload {
    /// `read_filter` loads the file at the path and returns its `log` filter (or why it failed).
    pub fn new(
        path: std::path::PathBuf,
        log: LogFilter,
        read_filter: impl Fn(&std::path::Path) -> Result<String, String> + Send + Sync + 'static,
    ) -> ConfigReload {
        ConfigReload { path, log, read_filter: Box::new(read_filter) }
    }

    /// Re-reads the configuration (SIGHUP; `systemctl reload`). Links and workloads keep running.
    pub fn reload(&self) {
        self.log.apply_reloaded(&self.path, (self.read_filter)(&self.path));
    }
}

/// Installs the global subscriber: `default` as the filter unless `RUST_LOG` is set; colours
/// only when stderr is a terminal and `NO_COLOR` is unset.
pub fn init(default: &str) -> LogFilter {
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let (filter, handle) = reload::Layer::new(filter);
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour);
    tracing_subscriber::registry().with(filter).with(output).init();
    LogFilter { handle, from_env }
}
