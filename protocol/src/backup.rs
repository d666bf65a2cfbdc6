//! Node state backups: the agent's store as a consistent SQLite snapshot (without its identity:
//! the private key never leaves the host), and its validated re-import.

use serde::{Deserialize, Serialize};

/// `EXPORT_STATE` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateExport {
    /// Unix milliseconds of the snapshot.
    pub taken_at_ms: u64,
    /// The SQLite database file.
    pub sqlite: Vec<u8>,
}

/// `IMPORT_STATE` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateImport {
    pub sqlite: Vec<u8>,
}

/// `IMPORT_STATE` answer: what the agent took from the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Clients whose usage (quota accounting) was restored.
    pub clients: u32,
    /// Revision of the proxy state found in the snapshot (informational: the controller's
    /// desired state stays the source of truth and is pushed again after an import).
    pub revision: u64,
}
