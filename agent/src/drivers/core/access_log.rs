//! The core's access log, tailed: which source addresses each user connects from (the IP limit,
//! the `ips` column) and which destinations each user reaches (the destination statistics).
//!
//! Xray and v2ray write one line per accepted connection. v2ray 4.34:
//! `2026/11/30 17:13:39 127.0.0.1:33520 accepted tcp:example.com:443 [direct] email: user1`;
//! Xray puts `from ` before the source (optionally `tcp:`) and `[in >> out]` in the brackets.
//! The log is read from where the last read stopped and truncated once it grows past a limit
//! (the cores open it for appending, so they go on writing at the new end).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One accepted connection of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub source_ip: String,
    /// Destination host name or address, without the port.
    pub destination: String,
    pub email: String,
}

/// Reads one access log line; `None` for lines of other kinds (rejected, API calls, no email).
pub fn parse_line(line: &str) -> Option<Access> {
    let (before, after) = line.split_once(" accepted ")?;
    let email = after.rsplit_once("email:")?.1.trim();
    if email.is_empty() {
        return None;
    }
    let source = before.rsplit(' ').next()?;
    let source = source.strip_prefix("tcp:").or_else(|| source.strip_prefix("udp:")).unwrap_or(source);
    let destination = after.split(' ').next()?;
    let destination = destination.split_once(':').map(|(_, rest)| rest).unwrap_or(destination);
    Some(Access {
        source_ip: host_of(source)?.to_string(),
        destination: host_of(destination)?.to_string(),
        email: email.to_string(),
    })
}

/// `host:port` or `[v6]:port` → host.
fn host_of(addr: &str) -> Option<&str> {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map(|(h, _)| h);
    }
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    (!host.is_empty()).then_some(host)
}

/// Position in the log file between reads.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
    /// Bytes of an unfinished last line, kept for the next read.
    partial: Vec<u8>,
    /// Truncate the file once a read has consumed this much of it.
    rotate_at: u64,
}

/// Largest read per call, so one tick never stalls on a huge backlog.
const READ_CHUNK: u64 = 8 * 1024 * 1024;

impl Tail {
    /// Tails `path` from its current end (earlier lines were counted by an earlier run or belong
    /// to none).
    pub fn from_end(path: &Path, rotate_at: u64) -> Tail {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Tail { path: path.to_path_buf(), offset, partial: Vec::new(), rotate_at }
    }

    /// Lines written since the last call (complete lines only).
    pub fn read_new(&mut self) -> std::io::Result<Vec<String>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            // Truncated or replaced behind our back: start over.
            self.offset = 0;
            self.partial.clear();
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        file.take(READ_CHUNK).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(&buf);
        let complete = data.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        self.partial = data.split_off(complete);
        let lines = String::from_utf8_lossy(&data).lines().map(str::to_string).collect();
        if self.offset >= self.rotate_at && self.offset == len && self.partial.is_empty() {
            std::fs::OpenOptions::new().write(true).open(&self.path)?.set_len(0)?;
            self.offset = 0;
        }
        Ok(lines)
    }
}

/// Source addresses per user within a sliding window, and destination counts not yet stored.
#[derive(Debug, Default)]
pub struct AccessTracker {
    /// Lower-cased email → address → last seen (unix ms).
    sources: HashMap<String, HashMap<String, i64>>,
    /// (email, destination) → connections since the last [`AccessTracker::take_destinations`].
    destinations: BTreeMap<(String, String), u64>,
}

impl AccessTracker {
    /// Records one connection seen at `now_ms`.
    pub fn record(&mut self, access: Access, now_ms: i64) {
        let email = access.email.to_lowercase();
        self.sources.entry(email.clone()).or_default().insert(access.source_ip, now_ms);
        *self.destinations.entry((email, access.destination)).or_default() += 1;
    }

    /// Forgets addresses not seen within `window_ms` of `now_ms`.
    pub fn expire(&mut self, now_ms: i64, window_ms: i64) {
        for ips in self.sources.values_mut() {
            ips.retain(|_, seen| now_ms - *seen <= window_ms);
        }
        self.sources.retain(|_, ips| !ips.is_empty());
    }

    /// The user's addresses within the window, most recent first.
    pub fn ips(&self, email: &str) -> Vec<String> {
        let Some(ips) = self.sources.get(&email.to_lowercase()) else { return vec![] };
        let mut list: Vec<(&String, &i64)> = ips.iter().collect();
        list.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        list.into_iter().map(|(ip, _)| ip.clone()).collect()
    }

    /// Users seen with more distinct addresses than their limit (`limit_of` a lower-cased email;
    /// `None` or 0: no limit), by email: (email, limit, addresses). Walks only the users seen in
    /// the window, not every client.
    pub fn over_limit(&self, limit_of: impl Fn(&str) -> Option<u32>) -> Vec<(String, u32, Vec<String>)> {
        let mut over: Vec<(String, u32, Vec<String>)> = self
            .sources
            .iter()
            .filter_map(|(email, ips)| {
                let limit = limit_of(email).filter(|l| *l > 0)?;
                (ips.len() > limit as usize).then(|| (email.clone(), limit, self.ips(email)))
            })
            .collect();
        over.sort_by(|a, b| a.0.cmp(&b.0));
        over
    }

    /// Destination counts gathered since the last call.
    pub fn take_destinations(&mut self) -> Vec<(String, String, u64)> {
        std::mem::take(&mut self.destinations).into_iter().map(|((e, d), n)| (e, d, n)).collect()
    }

    /// Forgets a user's addresses (its IP-limit cool-down is over: counting starts afresh).
    pub fn forget(&mut self, email: &str) {
        self.sources.remove(&email.to_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn reads_v2ray_and_xray_lines() {
        let v2ray = "2026/11/30 17:13:39 127.0.0.1:33520 accepted tcp:example.com:443 [direct] email: user1";
        assert_eq!(
            parse_line(v2ray),
            Some(Access { source_ip: "127.0.0.1".into(), destination: "example.com".into(), email: "user1".into() })
        );
        let xray =
            "2026/11/30 17:13:39.123456 from tcp:10.0.0.7:5555 accepted udp:1.1.1.1:53 [vless-in >> direct] email: b@x";
        assert_eq!(
            parse_line(xray),
            Some(Access { source_ip: "10.0.0.7".into(), destination: "1.1.1.1".into(), email: "b@x".into() })
        );
        let v6 = "2026/11/30 17:13:39 [2001:db8::1]:4000 accepted tcp:[2001:db8::2]:80 [direct] email: c";
        assert_eq!(
            parse_line(v6).map(|a| (a.source_ip, a.destination)),
            Some(("2001:db8::1".into(), "2001:db8::2".into()))
        );
        assert_eq!(parse_line("2026/11/30 17:13:39 127.0.0.1:1 rejected  proxy/vless: invalid user"), None);
        assert_eq!(parse_line("2026/11/30 17:13:39 127.0.0.1:1 accepted tcp:127.0.0.1:10085 [api]"), None, "no user");
    }

    #[test]
    fn tail_returns_complete_lines_once_and_survives_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "old line\n").unwrap();
        let mut tail = Tail::from_end(&path, 1 << 20);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        write!(f, "one\ntw").unwrap();
        assert_eq!(tail.read_new().unwrap(), vec!["one".to_string()]);
        writeln!(f, "o").unwrap();
        assert_eq!(tail.read_new().unwrap(), vec!["two".to_string()]);
        assert!(tail.read_new().unwrap().is_empty());
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(tail.read_new().unwrap(), vec!["new".to_string()], "truncated: read from the start");
    }

    #[test]
    fn tail_rotates_a_large_log_it_has_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut tail = Tail::from_end(&path, 10);
        std::fs::write(&path, "0123456789abc\n").unwrap();
        assert_eq!(tail.read_new().unwrap().len(), 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "read past the limit: truncated");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(f, "next").unwrap();
        assert_eq!(tail.read_new().unwrap(), vec!["next".to_string()]);
    }

    #[test]
    fn tracker_counts_sources_in_a_window_and_destinations() {
        let mut t = AccessTracker::default();
        let a = |ip: &str, dest: &str| Access { source_ip: ip.into(), destination: dest.into(), email: "U".into() };
        t.record(a("10.0.0.1", "x.com"), 1_000);
        t.record(a("10.0.0.2", "x.com"), 2_000);
        t.record(a("10.0.0.3", "y.com"), 3_000);
        assert_eq!(t.ips("u"), vec!["10.0.0.3", "10.0.0.2", "10.0.0.1"]);
        let limits = |l: u32| move |email: &str| (email == "u").then_some(l);
        assert_eq!(t.over_limit(limits(2)), vec![("u".to_string(), 2, t.ips("u"))]);
        assert!(t.over_limit(limits(3)).is_empty());
        assert!(t.over_limit(limits(0)).is_empty(), "0 = no limit");
        assert!(t.over_limit(|_| None).is_empty(), "no lifecycle = no limit");
        t.expire(61_500, 60_000);
        assert_eq!(t.ips("u"), vec!["10.0.0.3", "10.0.0.2"], "10.0.0.1 left the window");
        assert_eq!(t.take_destinations(), vec![("u".into(), "x.com".into(), 2), ("u".into(), "y.com".into(), 1)]);
        assert!(t.take_destinations().is_empty());
    }
}
