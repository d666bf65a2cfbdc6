//! Which version of a package dpkg has on the host, read from its database.
//!
//! dpkg does not rewrite `status` after every change: while it runs, each change goes to a journal
//! file in `updates/` (numbered, applied in order over `status`), and `status` is only rewritten at
//! checkpoints. The new agent started by the package's own postinst runs exactly then, so both are
//! read, as dpkg itself reads them.

use std::path::Path;

/// dpkg's database directory.
pub const DPKG_ADMIN_DIR: &str = "/var/lib/dpkg";

/// What dpkg records about one package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRecord {
    /// The `Status:` field: want, error flag and state (`install ok installed`).
    pub status: String,
    pub version: Option<String>,
}

impl PackageRecord {
    /// The version whose files are on disk, or None when the package is not there (removed, only
    /// its conffiles left, half-unpacked, or flagged for reinstallation).
    ///
    /// Not only `installed`: during `dpkg -i`, the postinst (which restarts the agent) runs while
    /// the package is `half-configured`, and the new agent must already see its own version.
    /// The want (`install`, `hold`, `deinstall`) does not change what is installed.
    pub fn unpacked_version(&self) -> Option<&str> {
        let mut words = self.status.split_whitespace();
        let (_want, flag, state) = (words.next()?, words.next()?, words.next()?);
        let present =
            matches!(state, "installed" | "triggers-pending" | "triggers-awaited" | "half-configured" | "unpacked");
        (flag == "ok" && present).then_some(self.version.as_deref()?)
    }
}

/// The version of `package` whose files are installed, per the dpkg database in `admin_dir`.
pub fn installed_version(admin_dir: &Path, package: &str) -> Option<String> {
    let mut record = std::fs::read_to_string(admin_dir.join("status")).ok().and_then(|t| find_record(&t, package));
    for update in journal_files(&admin_dir.join("updates")) {
        if let Some(newer) = std::fs::read_to_string(&update).ok().and_then(|t| find_record(&t, package)) {
            record = Some(newer);
        }
    }
    record?.unpacked_version().map(str::to_owned)
}

/// dpkg's journal files (all-digit names), oldest first.
fn journal_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut numbered: Vec<(u64, std::path::PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.bytes().all(|b| b.is_ascii_digit()).then(|| name.parse().ok())??;
            Some((n, e.path()))
        })
        .collect();
    numbered.sort();
    numbered.into_iter().map(|(_, p)| p).collect()
}

/// The last stanza of `text` (dpkg's control format) for `package`.
pub fn find_record(text: &str, package: &str) -> Option<PackageRecord> {
    let mut found = None;
    for stanza in text.split("\n\n").flat_map(|s| s.split("\r\n\r\n")) {
        let mut name = None;
        let mut status = None;
        let mut version = None;
        for line in stanza.lines() {
            // Continuation lines (descriptions, conffiles) start with a blank.
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((field, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            match field.trim().to_ascii_lowercase().as_str() {
                "package" => name = Some(value),
                "status" => status = Some(value.to_owned()),
                "version" => version = Some(value.to_owned()),
                _ => {}
            }
        }
        if name == Some(package) {
            found = Some(PackageRecord { status: status.unwrap_or_default(), version });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: adduser
Status: install ok installed
Priority: important
Version: 3.134

Package: flotilla-agent
Status: install ok installed
Priority: optional
Section: net
Installed-Size: 12345
Maintainer: Flotilla maintainers <flotilla@example.invalid>
Architecture: amd64
Version: 0.1.0-1
Conffiles:
 /etc/flotilla/agent.toml 0123456789abcdef
Description: Flotilla host agent
 The Flotilla agent runs on every managed host.
 Version: 9.9.9 (a continuation line, not a field)

Package: flotilla-controller
Status: install ok installed
Version: 0.3.0-1
";

    fn version_in(text: &str) -> Option<String> {
        find_record(text, "flotilla-agent")?.unpacked_version().map(str::to_owned)
    }

    #[test]
    fn installed_package_among_others() {
        assert_eq!(version_in(STATUS).as_deref(), Some("0.1.0-1"));
    }

    #[test]
    fn removed_package_with_conffiles_left_has_no_version() {
        let text = "Package: flotilla-agent\nStatus: deinstall ok config-files\nVersion: 0.1.0-1\n";
        assert_eq!(version_in(text), None);
        let text = "Package: flotilla-agent\nStatus: purge ok not-installed\n";
        assert_eq!(version_in(text), None);
    }

    #[test]
    fn absent_package_has_no_version() {
        let text = "Package: flotilla-agent-tools\nStatus: install ok installed\nVersion: 1\n";
        assert_eq!(version_in(text), None);
        assert_eq!(version_in(""), None);
    }

    #[test]
    fn package_being_configured_or_held_counts() {
        let text = "Package: flotilla-agent\nStatus: install ok half-configured\nVersion: 0.2.0-1\n";
        assert_eq!(version_in(text).as_deref(), Some("0.2.0-1"));
        let text = "Package: flotilla-agent\nStatus: hold ok installed\nVersion: 0.2.0-1\n";
        assert_eq!(version_in(text).as_deref(), Some("0.2.0-1"));
        let text = "Package: flotilla-agent\nStatus: install reinstreq half-installed\nVersion: 0.2.0-1\n";
        assert_eq!(version_in(text), None);
    }

    #[test]
    fn journal_updates_override_status() {
        let admin = tempfile::tempdir().unwrap();
        std::fs::write(admin.path().join("status"), STATUS).unwrap();
        assert_eq!(installed_version(admin.path(), "flotilla-agent").as_deref(), Some("0.1.0-1"));

        // dpkg -i of 0.2.0-1, during the postinst: the status file still has the old record.
        let updates = admin.path().join("updates");
        std::fs::create_dir(&updates).unwrap();
        let unpacked = "Package: flotilla-agent\nStatus: install ok unpacked\nVersion: 0.2.0-1\n";
        let configuring = "Package: flotilla-agent\nStatus: install ok half-configured\nVersion: 0.2.0-1\n";
        std::fs::write(updates.join("0009"), unpacked).unwrap();
        std::fs::write(updates.join("0010"), configuring).unwrap();
        std::fs::write(updates.join("tmp.i"), "Package: flotilla-agent\nStatus: purge ok not-installed\n").unwrap();
        assert_eq!(installed_version(admin.path(), "flotilla-agent").as_deref(), Some("0.2.0-1"));

        assert_eq!(installed_version(&admin.path().join("missing"), "flotilla-agent"), None);
    }
}
