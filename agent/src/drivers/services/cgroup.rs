//! CPU time and memory of a unit's cgroup (systemd's `ControlGroup`), read from the cgroup
//! filesystem: cgroup v2 (`cpu.stat` `usage_usec`, `memory.current`), the unified hierarchy of a
//! hybrid layout, or the v1 `cpuacct`/`memory` controllers. Missing files give None.

use std::path::{Path, PathBuf};

/// Where cgroup filesystems are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

fn dir(root: &Path, sub: &str, cgroup: &str) -> PathBuf {
    let rel = cgroup.trim_start_matches('/');
    let base = if sub.is_empty() { root.to_path_buf() } else { root.join(sub) };
    if rel.is_empty() {
        base
    } else {
        base.join(rel)
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// CPU time used by `cgroup` so far, nanoseconds.
pub fn cpu_usage_ns(root: &Path, cgroup: &str) -> Option<u64> {
    if cgroup.contains("..") {
        return None;
    }
    // v2 (also the unified hierarchy of a hybrid layout): cpu.stat exists whether or not the
    // cpu controller is enabled.
    for sub in ["", "unified"] {
        if let Ok(text) = std::fs::read_to_string(dir(root, sub, cgroup).join("cpu.stat")) {
            let usec =
                text.lines().find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.trim().parse::<u64>().ok()));
            if let Some(usec) = usec {
                return Some(usec.saturating_mul(1000));
            }
        }
    }
    ["cpuacct", "cpu,cpuacct", "cpu"].iter().find_map(|sub| read_u64(&dir(root, sub, cgroup).join("cpuacct.usage")))
}

/// Memory charged to `cgroup` now, bytes.
pub fn memory_bytes(root: &Path, cgroup: &str) -> Option<u64> {
    if cgroup.contains("..") {
        return None;
    }
    read_u64(&dir(root, "", cgroup).join("memory.current"))
        .or_else(|| read_u64(&dir(root, "unified", cgroup).join("memory.current")))
        .or_else(|| read_u64(&dir(root, "memory", cgroup).join("memory.usage_in_bytes")))
}

/// Percent of one CPU used between two readings `elapsed_ns` apart.
pub fn percent(before_ns: u64, after_ns: u64, elapsed_ns: u64) -> Option<f32> {
    if elapsed_ns == 0 || after_ns < before_ns {
        return None;
    }
    let p = (after_ns - before_ns) as f64 * 100.0 / elapsed_ns as f64;
    Some(((p * 10.0).round() / 10.0) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_v1_and_hybrid_layouts() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let cg = "/system.slice/nginx.service";
        assert_eq!((cpu_usage_ns(r, cg), memory_bytes(r, cg)), (None, None));
        // Hybrid: cpu.stat in the unified hierarchy, memory in v1.
        std::fs::create_dir_all(r.join("unified/system.slice/nginx.service")).unwrap();
        std::fs::write(r.join("unified/system.slice/nginx.service/cpu.stat"), "usage_usec 1500\nuser_usec 1000\n")
            .unwrap();
        std::fs::create_dir_all(r.join("memory/system.slice/nginx.service")).unwrap();
        std::fs::write(r.join("memory/system.slice/nginx.service/memory.usage_in_bytes"), "4096\n").unwrap();
        assert_eq!((cpu_usage_ns(r, cg), memory_bytes(r, cg)), (Some(1_500_000), Some(4096)));
        // v2 wins.
        std::fs::create_dir_all(r.join("system.slice/nginx.service")).unwrap();
        std::fs::write(r.join("system.slice/nginx.service/cpu.stat"), "usage_usec 7\n").unwrap();
        std::fs::write(r.join("system.slice/nginx.service/memory.current"), "8192").unwrap();
        assert_eq!((cpu_usage_ns(r, cg), memory_bytes(r, cg)), (Some(7000), Some(8192)));
        // v1 cpuacct only.
        std::fs::create_dir_all(r.join("cpu,cpuacct/x.service")).unwrap();
        std::fs::write(r.join("cpu,cpuacct/x.service/cpuacct.usage"), "123456789\n").unwrap();
        assert_eq!(cpu_usage_ns(r, "/x.service"), Some(123_456_789));
        assert_eq!(cpu_usage_ns(r, "/../../etc"), None);
    }

    #[test]
    fn percent_of_one_cpu() {
        assert_eq!(percent(0, 500_000_000, 1_000_000_000), Some(50.0));
        assert_eq!(percent(0, 2_000_000_000, 1_000_000_000), Some(200.0));
        assert_eq!(percent(5, 4, 1), None);
        assert_eq!(percent(0, 1, 0), None);
    }
}
