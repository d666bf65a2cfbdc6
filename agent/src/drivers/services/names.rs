//! The document's service names and the systemd units behind them, and the allow-list that
//! decides which units the API may see and touch. Pure: the D-Bus side says which units exist.

use std::cmp::Ordering;

/// The external API document's names (and a few common spellings) with the units they stand
/// for, in order of preference; `*` matches any run of characters (`php*-fpm`: the installed
/// PHP-FPM, the highest version when several are).
pub const ALIASES: &[(&str, &[&str])] = &[
    ("nginx", &["nginx"]),
    ("apache", &["apache2", "httpd"]),
    ("apache2", &["apache2", "httpd"]),
    ("httpd", &["httpd", "apache2"]),
    ("mysql", &["mariadb", "mysql", "mysqld"]),
    ("mariadb", &["mariadb", "mysql", "mysqld"]),
    ("postgresql", &["postgresql"]),
    ("redis", &["redis-server", "redis"]),
    ("php-fpm", &["php*-fpm", "php-fpm"]),
    ("postfix", &["postfix"]),
    ("dovecot", &["dovecot"]),
    ("bind", &["named", "bind9"]),
    ("named", &["named", "bind9"]),
    ("bind9", &["bind9", "named"]),
    ("proftpd", &["proftpd"]),
    ("pure-ftpd", &["pure-ftpd", "pure-ftpd-mysql"]),
    ("vsftpd", &["vsftpd"]),
    ("fail2ban", &["fail2ban"]),
    ("clamav", &["clamav-daemon", "clamd", "clamd@scan"]),
    ("ssh", &["ssh", "sshd"]),
    ("sshd", &["sshd", "ssh"]),
    ("memcached", &["memcached"]),
    ("exim", &["exim4", "exim"]),
    ("spamassassin", &["spamd", "spamassassin"]),
    ("opendkim", &["opendkim"]),
    ("cron", &["cron", "crond"]),
    ("docker", &["docker"]),
    ("powerdns", &["pdns"]),
];

/// What the API may see and touch when `[services] allow` is not set: the hosting services of
/// the document. `ssh` and `cron` are left out on purpose (stopping them locks people out).
pub const DEFAULT_ALLOW: &[&str] = &[
    "nginx",
    "apache",
    "mysql",
    "postgresql",
    "redis",
    "php-fpm",
    "postfix",
    "dovecot",
    "bind",
    "proftpd",
    "pure-ftpd",
    "vsftpd",
    "fail2ban",
    "clamav",
    "memcached",
    "exim",
    "spamassassin",
    "opendkim",
];

/// `name` without a trailing `.service`.
pub fn stem(name: &str) -> &str {
    name.strip_suffix(".service").unwrap_or(name)
}

/// Whether `stem` can name a service unit (systemd's unit name characters, no path).
pub fn valid_stem(stem: &str) -> bool {
    !stem.is_empty()
        && stem.len() <= 200
        && !stem.starts_with('.')
        && !stem.starts_with('-')
        && stem.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\'))
}

/// The unit names (stems, maybe with `*`) `name` may stand for, best first.
pub fn candidates(name: &str) -> Vec<String> {
    let stem = stem(name);
    match ALIASES.iter().find(|(alias, _)| *alias == stem) {
        Some((_, units)) => units.iter().map(|u| u.to_string()).collect(),
        None => vec![stem.to_string()],
    }
}

/// Whether `pattern` (`*` = any run of characters) matches all of `s`.
pub fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else { return false };
            (0..=tail.len()).filter(|i| tail.is_char_boundary(*i)).any(|i| glob(rest, &tail[i..]))
        }
    }
}

/// Compares names so that embedded numbers order as numbers (`php8.10-fpm` > `php8.2-fpm`).
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn parts(s: &str) -> Vec<Result<u64, String>> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut digits = false;
        for c in s.chars() {
            if !cur.is_empty() && c.is_ascii_digit() != digits {
                out.push(if digits { Ok(cur.parse().unwrap_or(u64::MAX)) } else { Err(std::mem::take(&mut cur)) });
                cur.clear();
            }
            digits = c.is_ascii_digit();
            cur.push(c);
        }
        if !cur.is_empty() {
            out.push(if digits { Ok(cur.parse().unwrap_or(u64::MAX)) } else { Err(cur) });
        }
        out
    }
    parts(a).cmp(&parts(b))
}

/// The unit (stem) that `candidates` resolve to among `installed` stems: the first candidate
/// that exists; for a pattern, its highest-versioned match.
pub fn pick(candidates: &[String], installed: &[String]) -> Option<String> {
    for c in candidates {
        if c.contains('*') {
            let best = installed.iter().filter(|u| glob(c, u)).max_by(|a, b| version_cmp(a, b));
            if let Some(best) = best {
                return Some(best.clone());
            }
        } else if installed.iter().any(|u| u == c) {
            return Some(c.clone());
        }
    }
    None
}

/// `[services] allow`: the document's names or unit names the API may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<String>,
}

impl AllowList {
    pub fn new(entries: &[String]) -> AllowList {
        let mut out: Vec<String> = Vec::new();
        for e in entries {
            let e = stem(e.trim()).to_string();
            if !e.is_empty() && !out.contains(&e) {
                out.push(e);
            }
        }
        AllowList { entries: out }
    }

    /// The entries, as configured (without `.service`).
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// The name the API shows for unit `unit_stem` when an entry allows it (the entry's name),
    /// or None when none does.
    pub fn api_name(&self, unit_stem: &str) -> Option<&str> {
        self.entries.iter().find(|e| candidates(e).iter().any(|c| glob(c, unit_stem))).map(String::as_str)
    }

    /// Every concrete unit stem and every pattern the entries may stand for (what to ask
    /// systemd about).
    pub fn all_candidates(&self) -> (Vec<String>, Vec<String>) {
        let (mut plain, mut patterns) = (Vec::new(), Vec::new());
        for e in &self.entries {
            for c in candidates(e) {
                let list = if c.contains('*') { &mut patterns } else { &mut plain };
                if !list.contains(&c) {
                    list.push(c);
                }
            }
        }
        (plain, patterns)
    }
}

impl Default for AllowList {
    fn default() -> Self {
        AllowList::new(&DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn document_names_map_to_the_installed_unit() {
        let installed = v(&["mariadb", "php8.2-fpm", "php8.10-fpm", "named", "redis-server", "apache2", "ssh"]);
        assert_eq!(pick(&candidates("mysql"), &installed).as_deref(), Some("mariadb"));
        assert_eq!(pick(&candidates("mysql"), &v(&["mysql"])).as_deref(), Some("mysql"));
        assert_eq!(pick(&candidates("php-fpm"), &installed).as_deref(), Some("php8.10-fpm"));
        assert_eq!(pick(&candidates("bind"), &installed).as_deref(), Some("named"));
        assert_eq!(pick(&candidates("bind"), &v(&["bind9"])).as_deref(), Some("bind9"));
        assert_eq!(pick(&candidates("redis"), &installed).as_deref(), Some("redis-server"));
        assert_eq!(pick(&candidates("apache"), &installed).as_deref(), Some("apache2"));
        assert_eq!(pick(&candidates("httpd"), &installed).as_deref(), Some("apache2"));
        assert_eq!(pick(&candidates("sshd"), &installed).as_deref(), Some("ssh"));
        // A unit's own name, with or without `.service`.
        assert_eq!(pick(&candidates("mariadb.service"), &installed).as_deref(), Some("mariadb"));
        assert_eq!(pick(&candidates("flt-demo"), &v(&["flt-demo"])).as_deref(), Some("flt-demo"));
        assert_eq!(pick(&candidates("nginx"), &installed), None);
    }

    #[test]
    fn globs_and_versions() {
        assert!(glob("php*-fpm", "php8.2-fpm") && glob("php*-fpm", "php-fpm") && !glob("php*-fpm", "php8.2-fpm2"));
        assert!(glob("a*b*c", "a_b_b_c") && !glob("a*b*c", "a_c"));
        assert_eq!(version_cmp("php8.10-fpm", "php8.9-fpm"), Ordering::Greater);
        assert_eq!(version_cmp("php7.4-fpm", "php8.2-fpm"), Ordering::Less);
    }

    #[test]
    fn the_allow_list_names_what_it_allows() {
        let allow = AllowList::new(&v(&["mysql", "flt-demo.service", "php-fpm", " nginx ", "nginx"]));
        assert_eq!(allow.entries(), ["mysql", "flt-demo", "php-fpm", "nginx"]);
        assert_eq!(allow.api_name("mariadb"), Some("mysql"));
        assert_eq!(allow.api_name("mysqld"), Some("mysql"));
        assert_eq!(allow.api_name("flt-demo"), Some("flt-demo"));
        assert_eq!(allow.api_name("php8.2-fpm"), Some("php-fpm"));
        assert_eq!(allow.api_name("ssh"), None);
        assert_eq!(allow.api_name("flt-demo2"), None);
        let (plain, patterns) = allow.all_candidates();
        assert_eq!(plain, ["mariadb", "mysql", "mysqld", "flt-demo", "php-fpm", "nginx"]);
        assert_eq!(patterns, ["php*-fpm"]);
        let default = AllowList::default();
        assert!(default.api_name("mariadb").is_some() && default.api_name("nginx").is_some());
        assert_eq!(default.api_name("ssh"), None, "ssh is not allowed by default");
        assert_eq!(default.api_name("cron"), None);
    }

    #[test]
    fn unit_names_are_checked() {
        for ok in ["nginx", "php8.2-fpm", "getty@tty1", "systemd-fsck@dev-disk-by\\x2duuid-1"] {
            assert!(valid_stem(ok), "{ok}");
        }
        for bad in ["", "../etc/passwd", "a b", "-x", ".hidden", "a/b", "x;rm"] {
            assert!(!valid_stem(bad), "{bad}");
        }
    }
}
