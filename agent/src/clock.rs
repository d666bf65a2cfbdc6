//! The wall clock behind the agent's time-based decisions (subscription ends, renewals, quotas
//! by date). Tests move it forward through a skew file rather than sleeping for days.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// System time, plus the milliseconds written in the skew file when one is set.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    skew_file: Option<PathBuf>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { skew_file: None }
    }

    /// System time plus the signed millisecond count in `path` (read at every call; a missing or
    /// unreadable file counts as 0).
    pub fn with_skew_file(path: PathBuf) -> Clock {
        Clock { skew_file: Some(path) }
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> i64 {
        let system = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        system.saturating_add(self.skew_ms())
    }

    fn skew_ms(&self) -> i64 {
        let Some(path) = &self.skew_file else { return 0 };
        std::fs::read_to_string(path).ok().and_then(|t| t.trim().trim_start_matches('+').parse().ok()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_file_moves_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("skew");
        let clock = Clock::with_skew_file(path.clone());
        let before = Clock::system().now_ms();
        assert!(clock.now_ms() - before < 1_000, "no file: no skew");
        std::fs::write(&path, "+2592000000\n").unwrap();
        assert!(clock.now_ms() - before >= 2_592_000_000);
        std::fs::write(&path, "-1000").unwrap();
        assert!(clock.now_ms() < Clock::system().now_ms());
    }
}
