//! Backups of the controller's data dir: one archive with a consistent copy of the store (SQLite's
//! online backup API, so `serve` keeps running) and the keys without which that copy is useless
//! (`secret.key` opens the sealed secrets, the CA keeps every agent's trust). `restore` checks an
//! archive completely before it replaces anything, and keeps what it replaces.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

/// Files of the data dir an archive carries besides the store.
const KEY_FILES: &[&str] = &["secret.key", "ca.key", "ca.crt"];
/// The store's file name in the data dir and in the archive.
const STORE_FILE: &str = "controller.db";
/// What the archive says about itself.
const MANIFEST: &str = "MANIFEST";

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("not a usable backup: {0}")]
    Invalid(String),
    #[error("{0} already holds a store; pass --replace to replace it (the current files are kept beside it)")]
    Exists(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |e| BackupError::Io(path.display().to_string(), e)
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub schema_version: i64,
    pub nodes: i64,
    pub bytes: u64,
}

/// Writes an archive of `data_dir` to `out` (mode 0600: it holds keys).
pub fn backup(data_dir: &Path, out: &Path) -> Result<BackupSummary, BackupError> {
    let store = data_dir.join(STORE_FILE);
    if !store.exists() {
        return Err(BackupError::Invalid(format!("no store at {}", store.display())));
    }
    // The copy goes to a private temporary file beside the output, then into the archive.
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new().prefix(".flotilla-backup-").tempdir_in(parent).map_err(io(parent))?;
    let copy = tmp.path().join(STORE_FILE);
    {
        let live = rusqlite::Connection::open_with_flags(&store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        live.busy_timeout(std::time::Duration::from_secs(10))?;
        live.backup(rusqlite::DatabaseName::Main, &copy, None)?;
    }
    let summary = check_store(&copy)?;
    let staged = tmp.path().join("archive.zip");
    {
        let file = std::fs::File::create(&staged).map_err(io(&staged))?;
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o600);
        let manifest = format!(
            "flotilla-controller backup\nversion {}\nschema {}\ncreated {}\n",
            env!("CARGO_PKG_VERSION"),
            summary.schema_version,
            crate::api::timestamp(OffsetDateTime::now_utc())
        );
        zip.start_file(MANIFEST, options)?;
        zip.write_all(manifest.as_bytes()).map_err(io(&staged))?;
        zip.start_file(STORE_FILE, options)?;
        zip.write_all(&std::fs::read(&copy).map_err(io(&copy))?).map_err(io(&staged))?;
        for name in KEY_FILES {
            let path = data_dir.join(name);
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            zip.start_file(*name, options)?;
            zip.write_all(&bytes).map_err(io(&staged))?;
        }
        zip.finish()?;
    }
    set_private(&staged)?;
    std::fs::rename(&staged, out).map_err(io(out))?;
    let bytes = std::fs::metadata(out).map_err(io(out))?.len();
    Ok(BackupSummary { bytes, ..summary })
}

fn set_private(path: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))
}

/// Opens a store copy and checks it: SQLite's integrity check, a schema this build knows.
fn check_store(path: &Path) -> Result<BackupSummary, BackupError> {
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity != "ok" {
        return Err(BackupError::Invalid(format!("integrity check failed: {integrity}")));
    }
    let schema: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = crate::store::schema_versions_known();
    if schema == 0 || schema > known {
        return Err(BackupError::Invalid(format!("store schema {schema}; this build knows 1 to {known}")));
    }
    let nodes: i64 = conn.query_row("SELECT COUNT(*) FROM nodes", [], |r| r.get(0))?;
    Ok(BackupSummary { schema_version: schema, nodes, bytes: 0 })
}

/// Restores the archive `from` into `data_dir`. Everything is checked first (entries, the store's
/// integrity and schema, key sizes); files already there are renamed `<name>.before-restore-<time>`
/// and only with `replace`. The controller must be stopped meanwhile.
pub fn restore(from: &Path, data_dir: &Path, replace: bool) -> Result<BackupSummary, BackupError> {
    let file = std::fs::File::open(from).map_err(io(from))?;
    let mut zip = zip::ZipArchive::new(file)?;
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for name in std::iter::once(MANIFEST).chain(std::iter::once(STORE_FILE)).chain(KEY_FILES.iter().copied()) {
        let mut entry =
            zip.by_name(name).map_err(|_| BackupError::Invalid(format!("{} has no {name}", from.display())))?;
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(io(from))?;
        entries.push((name.to_string(), bytes));
    }
    let manifest = String::from_utf8_lossy(&entries[0].1).to_string();
    if !manifest.starts_with("flotilla-controller backup") {
        return Err(BackupError::Invalid("not a flotilla-controller backup (MANIFEST)".into()));
    }
    let secret = &entries.iter().find(|(n, _)| n == "secret.key").expect("listed").1;
    if secret.len() != 32 {
        return Err(BackupError::Invalid(format!("secret.key has {} bytes", secret.len())));
    }
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    crate::private_file::ensure_private_dir(data_dir).map_err(io(data_dir))?;
    let staging = tempfile::Builder::new().prefix(".flotilla-restore-").tempdir_in(data_dir).map_err(io(data_dir))?;
    for (name, bytes) in &entries[1..] {
        crate::private_file::write(&staging.path().join(name), bytes).map_err(io(&staging.path().join(name)))?;
    }
    let summary = check_store(&staging.path().join(STORE_FILE))?;
    let current = data_dir.join(STORE_FILE);
    if current.exists() && !replace {
        return Err(BackupError::Exists(data_dir.display().to_string()));
    }
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    let names: Vec<&str> = std::iter::once(STORE_FILE).chain(KEY_FILES.iter().copied()).collect();
    for name in names.iter().chain(["controller.db-wal", "controller.db-shm"].iter()) {
        let target = data_dir.join(name);
        if target.exists() {
            let kept = PathBuf::from(format!("{}.before-restore-{stamp}", target.display()));
            std::fs::rename(&target, &kept).map_err(io(&target))?;
        }
    }
    for name in names {
        let target = data_dir.join(name);
        std::fs::rename(staging.path().join(name), &target).map_err(io(&target))?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewNode, Store};

    #[test]
    fn a_backup_restores_into_an_empty_dir_and_bad_archives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        crate::private_file::ensure_private_dir(&data).unwrap();
        let store = Store::open(&data).unwrap();
        store.create_node(&NewNode { name: "nl-1".into(), ..Default::default() }).unwrap();
        crate::pki::Pki::load_or_create(&data).unwrap();
        // Taken while the store is open, as under a running `serve`.
        let out = dir.path().join("backup.zip");
        let summary = backup(&data, &out).unwrap();
        assert_eq!(summary.nodes, 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);

        let restored = dir.path().join("restored");
        restore(&out, &restored, false).unwrap();
        let again = Store::open(&restored).unwrap();
        assert_eq!(again.nodes().unwrap()[0].name, "nl-1");
        assert!(matches!(restore(&out, &restored, false), Err(BackupError::Exists(_))), "never replaced silently");
        restore(&out, &restored, true).unwrap();
        let kept = std::fs::read_dir(&restored)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("controller.db.before-restore-"));
        assert_eq!(kept.count(), 1, "the replaced store is kept");

        let junk = dir.path().join("junk.zip");
        std::fs::write(&junk, b"not a zip").unwrap();
        assert!(restore(&junk, &dir.path().join("x"), false).is_err());
        assert!(!dir.path().join("x").join(STORE_FILE).exists(), "nothing written for a bad archive");
    }
}
