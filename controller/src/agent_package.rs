//! `flotilla-agent` packages offered to nodes: what a .deb file says about itself, checked before
//! it enters the catalog that rolling upgrades install from.

use sha2::{Digest, Sha256};

/// The package every node runs.
pub const AGENT_PACKAGE_NAME: &str = "flotilla-agent";

/// A checked agent package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPackage {
    /// Debian version from the control file (`0.2.0-1`).
    pub version: String,
    /// Debian architecture (`amd64`).
    pub arch: String,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
}

/// Why a file is not an agent package.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("not a Debian package: {0}")]
    NotDeb(String),
    #[error("the package is {0:?}, not {AGENT_PACKAGE_NAME}")]
    WrongPackage(String),
    #[error("the package's control file has no {0}")]
    MissingField(&'static str),
    #[error("the package version {0:?} is not a Debian version")]
    BadVersion(String),
}

impl AgentPackage {
    /// Reads and checks the control file of a .deb held in memory.
    pub fn inspect(data: &[u8]) -> Result<AgentPackage, PackageError> {
        let not_deb = |e: &dyn std::fmt::Display| PackageError::NotDeb(e.to_string());
        let mut deb = debpkg::DebPkg::parse(data).map_err(|e| not_deb(&e))?;
        let mut control = deb.control().map_err(|e| not_deb(&e))?;
        let text = control_file(&mut control).map_err(|e| not_deb(&e))?;
        let control = ControlFields::parse(&text);
        let name = control.get("Package").ok_or(PackageError::MissingField("Package"))?;
        if name != AGENT_PACKAGE_NAME {
            return Err(PackageError::WrongPackage(name.to_string()));
        }
        let version = control.get("Version").unwrap_or_default().to_string();
        if version.is_empty() {
            return Err(PackageError::MissingField("Version"));
        }
        // Debian versions: [epoch:]upstream[-revision], alphanumerics and . + ~ - :
        if !version.chars().next().is_some_and(|c| c.is_ascii_digit())
            || !version.chars().all(|c| c.is_ascii_alphanumeric() || ".+~-:".contains(c))
        {
            return Err(PackageError::BadVersion(version));
        }
        let arch = control.get("Architecture").filter(|a| !a.is_empty());
        let arch = arch.ok_or(PackageError::MissingField("Architecture"))?.to_string();
        Ok(AgentPackage { version, arch, sha256: Sha256::digest(data).into() })
    }
}

/// The text of `./control` in the control archive.
fn control_file<R: std::io::Read>(archive: &mut tar::Archive<R>) -> std::io::Result<String> {
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if path.file_name().is_some_and(|n| n == "control") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text)?;
            return Ok(text);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the control archive has no control file"))
}

/// The single-line fields of a binary package's control file (deb822: `Name: value`; lines
/// starting with a space continue the previous field and are not needed here).
struct ControlFields(Vec<(String, String)>);

impl ControlFields {
    fn parse(text: &str) -> ControlFields {
        let fields = text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .filter(|l| !l.starts_with([' ', '\t']))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        ControlFields(fields)
    }

    /// A field by name (case-insensitive, as deb822 says).
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_fields_are_read_from_the_first_paragraph() {
        let c = ControlFields::parse("Package: flotilla-agent\nVersion: 0.2.0-1\nDescription: x\n more text\nArchitecture: amd64\n\nPackage: other\n");
        assert_eq!(c.get("package"), Some("flotilla-agent"));
        assert_eq!(c.get("Version"), Some("0.2.0-1"));
        assert_eq!(c.get("Architecture"), Some("amd64"));
        assert_eq!(c.get("Depends"), None);
    }

    #[test]
    fn refuses_what_is_not_an_agent_deb() {
        assert!(matches!(AgentPackage::inspect(b"#!/bin/sh\nexit 0\n"), Err(PackageError::NotDeb(_))));
        assert!(matches!(AgentPackage::inspect(b""), Err(PackageError::NotDeb(_))));
    }

    /// A real package when the test run has one (`.ci/run` builds them into FLOTILLA_DEB_DIR).
    #[test]
    fn reads_the_built_agent_package() {
        let Some(dir) = std::env::var_os("FLOTILLA_DEB_DIR") else {
            eprintln!("FLOTILLA_DEB_DIR not set; only the refusals are checked");
            return;
        };
        let find = |prefix: &str| {
            std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
                .unwrap_or_else(|| panic!("no {prefix}* in FLOTILLA_DEB_DIR"))
        };
        let data = std::fs::read(find("flotilla-agent_")).unwrap();
        let package = AgentPackage::inspect(&data).unwrap();
        assert!(package.version.starts_with(env!("CARGO_PKG_VERSION")), "{package:?}");
        assert_eq!(package.arch, "amd64");
        let controller = std::fs::read(find("flotilla-controller_")).unwrap();
        match AgentPackage::inspect(&controller) {
            Err(PackageError::WrongPackage(name)) => assert_eq!(name, "flotilla-controller"),
            other => panic!("the controller package was taken as an agent package: {other:?}"),
        }
    }
}
