//! A running container's resource counters from its cgroup, on whichever hierarchy has
//! them: cgroup v1 controllers (hybrid hosts) or the v2 unified tree (Debian 12).
//!
//! The cgroup is found from the container's init (`/proc/<pid>/cgroup`), cut back to
//! LXC's `lxc.payload.<name>` so that sub-cgroups made inside (systemd's `init.scope`)
//! still count the whole container.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where each hierarchy is mounted, read once from `/proc/self/mountinfo`.
#[derive(Debug, Clone, Default)]
pub struct Mounts {
    /// v1 controller name -> (mount point, root of the mount inside the hierarchy).
    v1: HashMap<String, (PathBuf, String)>,
    v2: Option<(PathBuf, String)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub pids: Option<u64>,
}

impl Mounts {
    pub fn detect() -> Mounts {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| Mounts::parse(&t))
            .unwrap_or_default()
    }

    pub fn parse(mountinfo: &str) -> Mounts {
        let mut m = Mounts::default();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let (root, point) = (pre[3].to_string(), PathBuf::from(pre[4]));
            match post[0] {
                "cgroup2" if m.v2.is_none() => m.v2 = Some((point, root)),
                "cgroup" => {
                    for opt in post[2].split(',') {
                        if matches!(opt, "memory" | "cpuacct" | "pids") {
                            m.v1.entry(opt.to_string())
                                .or_insert((point.clone(), root.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        m
    }

    /// Reads what the cgroups of `pid` say; a counter that cannot be read is `None`.
    pub fn usage(&self, pid: u32) -> Usage {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return Usage::default();
        };
        let mut v1_paths: HashMap<&str, &str> = HashMap::new();
        let mut v2_path = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if ctrls.is_empty() {
                v2_path = Some(path);
            }
            for c in ctrls.split(',') {
                v1_paths.insert(c, path);
            }
        }
        let v1_dir = |ctrl: &str| -> Option<PathBuf> {
            let (point, root) = self.v1.get(ctrl)?;
            Some(join(point, root, v1_paths.get(ctrl)?))
        };
        let v2_dir = || -> Option<PathBuf> {
            let (point, root) = self.v2.as_ref()?;
            Some(join(point, root, v2_path?))
        };
        let cpu_seconds = v1_dir("cpuacct")
            .and_then(|d| read_u64(&d.join("cpuacct.usage")))
            .map(|ns| ns as f64 / 1e9)
            .or_else(|| {
                let stat = std::fs::read_to_string(v2_dir()?.join("cpu.stat")).ok()?;
                cpu_stat_usec(&stat).map(|us| us as f64 / 1e6)
            });
        let (memory_bytes, memory_limit_bytes) = match v1_dir("memory") {
            Some(d) => (
                read_u64(&d.join("memory.usage_in_bytes")),
                // v1 says "no limit" with a huge page-aligned number.
                read_u64(&d.join("memory.limit_in_bytes")).filter(|&l| l < (1 << 62)),
            ),
            None => match v2_dir() {
                Some(d) => (
                    read_u64(&d.join("memory.current")),
                    read_u64(&d.join("memory.max")),
                ),
                None => (None, None),
            },
        };
        let pids = v1_dir("pids")
            .and_then(|d| read_u64(&d.join("pids.current")))
            .or_else(|| read_u64(&v2_dir()?.join("pids.current")));
        Usage {
            cpu_seconds,
            memory_bytes,
            memory_limit_bytes,
            pids,
        }
    }
}

/// The directory of cgroup `path` in a hierarchy mounted at `point` whose mount shows
/// the subtree `root`, cut back to the container's payload cgroup.
fn join(point: &Path, root: &str, path: &str) -> PathBuf {
    let path = payload_cgroup(path);
    let rel = path
        .strip_prefix(root.trim_end_matches('/'))
        .unwrap_or(path);
    point.join(rel.trim_start_matches('/'))
}

/// `/a/lxc.payload.c1/init.scope` -> `/a/lxc.payload.c1`; other paths unchanged.
fn payload_cgroup(path: &str) -> &str {
    match path.find("/lxc.payload.") {
        Some(i) => {
            let rest = &path[i + 1..];
            match rest.find('/') {
                Some(j) => &path[..i + 1 + j],
                None => path,
            }
        }
        None => path,
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn cpu_stat_usec(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_v1_controllers_and_the_unified_tree() {
        let m = Mounts::parse(HYBRID);
        assert_eq!(m.v1["memory"].0, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m.v1["cpuacct"].0, PathBuf::from("/sys/fs/cgroup/cpuacct"));
        assert_eq!(m.v2.unwrap().0, PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn v2_only_host() {
        let m = Mounts::parse(
            "25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        assert!(m.v1.is_empty());
        assert_eq!(m.v2.unwrap().0, PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn payload_cgroup_cuts_sub_cgroups() {
        assert_eq!(
            payload_cgroup("/lxc.payload.c1/init.scope"),
            "/lxc.payload.c1"
        );
        assert_eq!(payload_cgroup("/x/lxc.payload.c1"), "/x/lxc.payload.c1");
        assert_eq!(payload_cgroup("/user.slice"), "/user.slice");
    }

    #[test]
    fn joins_below_the_mount_root() {
        assert_eq!(
            join(Path::new("/sys/fs/cgroup/memory"), "/", "/lxc.payload.a/x"),
            PathBuf::from("/sys/fs/cgroup/memory/lxc.payload.a")
        );
        assert_eq!(
            join(Path::new("/cg"), "/outer", "/outer/lxc.payload.a"),
            PathBuf::from("/cg/lxc.payload.a")
        );
    }

    #[test]
    fn reads_usage_usec() {
        assert_eq!(
            cpu_stat_usec("usage_usec 2500000\nuser_usec 1\n"),
            Some(2_500_000)
        );
    }
}
