//! Drives LXC through its `lxc-*` tools, as LXD drives its own start helper: liblxc's
//! `start()` forks from the calling thread of a multithreaded process and the `lxc`
//! crate has memory-safety bugs, so the daemon never links liblxc.
//!
//! LXC's command socket is an abstract unix socket scoped to the network namespace, so
//! these calls must run in the same network namespace as the container's `lxc-start`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const LXC_START: &str = "/usr/bin/lxc-start";
const LXC_STOP: &str = "/usr/bin/lxc-stop";
const LXC_INFO: &str = "/usr/bin/lxc-info";

#[derive(Debug, thiserror::Error)]
pub enum LxcError {
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed for container {name}: {detail}")]
    Failed {
        tool: &'static str,
        name: String,
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LxcState {
    pub running: bool,
    pub init_pid: Option<u32>,
}

/// The LXC tools for the containers under one lxcpath.
#[derive(Debug, Clone)]
pub struct Lxc {
    lxcpath: PathBuf,
    log_dir: PathBuf,
}

impl Lxc {
    pub fn new(lxcpath: &Path, log_dir: &Path) -> Lxc {
        Lxc {
            lxcpath: lxcpath.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
        }
    }

    pub fn log_file(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// Starts the container in the background; returns once LXC reports it RUNNING,
    /// with its init's pid. `lxc-start -p` names the monitor, whose only child is the
    /// container's init: reading that from /proc saves an `lxc-info` process per start.
    /// The LXC monitor is not our child (it double-forks), so it outlives the daemon.
    pub fn start(&self, name: &str) -> Result<LxcState, LxcError> {
        fs::create_dir_all(&self.log_dir).map_err(|source| LxcError::Spawn {
            tool: "lxc-start",
            source,
        })?;
        let log = self.log_file(name);
        // A fresh log per start, so a failure's explanation is not buried in old runs.
        let _ = fs::remove_file(&log);
        let pid_file = self.log_dir.join(format!("{name}.monitor.pid"));
        // What an earlier aborted start left, so LXC need not pick `<name>-1`.
        remove_empty_cgroups_now(name);
        let _ = fs::remove_file(&pid_file);
        let out_path = self.log_dir.join(format!("{name}.start.out"));
        // lxc-start's stdio goes to a file, not a pipe: the monitor it forks would hold
        // a pipe open for the container's whole life.
        let out = File::create(&out_path).map_err(|source| LxcError::Spawn {
            tool: "lxc-start",
            source,
        })?;
        let err = out.try_clone().map_err(|source| LxcError::Spawn {
            tool: "lxc-start",
            source,
        })?;
        let status = Command::new(LXC_START)
            .arg("-n")
            .arg(name)
            .arg("-P")
            .arg(&self.lxcpath)
            .arg("-d")
            .arg("-p")
            .arg(&pid_file)
            .arg("-o")
            .arg(&log)
            .arg("-l")
            .arg("WARN")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(|source| LxcError::Spawn {
                tool: "lxc-start",
                source,
            })?;
        if status.success() {
            return match init_of_monitor(&pid_file) {
                Some(pid) => Ok(LxcState {
                    running: true,
                    init_pid: Some(pid),
                }),
                None => self.state(name),
            };
        }
        // An aborted start of an unprivileged container leaves its monitor's cgroups
        // behind (LXC cannot remove the cgroup its monitor still sits in).
        remove_empty_cgroups(name);
        let mut detail = tail(&out_path, 10);
        let log_tail = tail(&log, 15);
        if !log_tail.is_empty() {
            detail.push_str("\nLXC log (");
            detail.push_str(&log.display().to_string());
            detail.push_str("):\n");
            detail.push_str(&log_tail);
        }
        Err(LxcError::Failed {
            tool: "lxc-start",
            name: name.to_string(),
            detail: detail.trim().to_string(),
        })
    }

    /// Asks init to power off and waits up to `timeout`, then kills; `force` kills at once.
    pub fn stop(&self, name: &str, timeout: Duration, force: bool) -> Result<(), LxcError> {
        let mut cmd = Command::new(LXC_STOP);
        cmd.arg("-n").arg(name).arg("-P").arg(&self.lxcpath);
        if force {
            cmd.arg("-k");
        } else {
            cmd.arg("-t").arg(timeout.as_secs().max(1).to_string());
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LxcError::Spawn {
                tool: "lxc-stop",
                source,
            })?;
        // lxc-stop exits 2 when the container was not running: that is success here.
        if out.status.success() || out.status.code() == Some(2) {
            return Ok(());
        }
        Err(LxcError::Failed {
            tool: "lxc-stop",
            name: name.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    pub fn state(&self, name: &str) -> Result<LxcState, LxcError> {
        // With no LXC monitor at all in this network namespace (a host boot, before the
        // first start), every container is stopped: no `lxc-info` process per container.
        if !std::fs::read("/proc/net/unix").map_or(true, |t| lists_lxc_monitor(&t)) {
            return Ok(LxcState {
                running: false,
                init_pid: None,
            });
        }
        let out = self.info(name, &["-s", "-p"])?;
        Ok(parse_info(&out))
    }

    fn info(&self, name: &str, what: &[&str]) -> Result<String, LxcError> {
        let out = Command::new(LXC_INFO)
            .arg("-n")
            .arg(name)
            .arg("-P")
            .arg(&self.lxcpath)
            .args(what)
            .arg("-H")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LxcError::Spawn {
                tool: "lxc-info",
                source,
            })?;
        if !out.status.success() {
            return Err(LxcError::Failed {
                tool: "lxc-info",
                name: name.to_string(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Whether `/proc/net/unix` (`table`) lists an LXC command socket: each running (or
/// starting, or stopping) container's monitor listens on an abstract socket named
/// `<lxcpath>/<name>/command`, or `lxc/<hash>/command` when that is too long. Only the
/// suffix is matched, so a path spelled another way (`-P` with a trailing slash) still
/// counts; something else's socket of that name only costs the `lxc-info` it saves.
fn lists_lxc_monitor(table: &[u8]) -> bool {
    table.split(|&b| b == b'\n').any(|line| {
        line.rsplit(|&b| b == b' ')
            .next()
            .is_some_and(|path| path.starts_with(b"@") && path.ends_with(b"/command"))
    })
}

/// Parses `lxc-info -s -p -H`, which prints `State: RUNNING` and `PID: 12` lines (or a
/// bare state when asked for the state alone).
/// Whether `dir` is one of LXC's cgroups for container `name`: `lxc.monitor.<name>` or
/// `lxc.payload.<name>`, or one with the `-<n>` LXC adds when that name was taken.
fn is_lxc_cgroup_of(dir: &str, name: &str) -> bool {
    ["lxc.monitor.", "lxc.payload."].iter().any(|prefix| {
        dir.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(name))
            .is_some_and(|tail| {
                tail.is_empty()
                    || tail
                        .strip_prefix('-')
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
    })
}

/// Removes LXC's cgroups of a stopped container `name` that are empty (rmdir refuses
/// the others) in every hierarchy, waiting a little for a failed start's monitor to go.
fn remove_empty_cgroups(name: &str) {
    let dirs = || -> Vec<PathBuf> {
        let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
            roots.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        roots
            .iter()
            .filter_map(|r| fs::read_dir(r).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| is_lxc_cgroup_of(&e.file_name().to_string_lossy(), name))
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    };
    for _ in 0..40 {
        let left = dirs();
        if left.is_empty() {
            return;
        }
        for dir in left {
            let _ = fs::remove_dir(&dir);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// How old an empty LXC cgroup must be before a start treats it as left over.
const STALE_CGROUP_AGE: Duration = Duration::from_secs(30);

/// [`remove_empty_cgroups`] without waiting, for a container about to start: only
/// cgroups older than [`STALE_CGROUP_AGE`].
fn remove_empty_cgroups_now(name: &str) {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let roots = std::iter::once(PathBuf::from("/sys/fs/cgroup"))
        .chain(hierarchies.flatten().map(|e| e.path()));
    for root in roots {
        let Ok(entries) = fs::read_dir(&root) else {
            continue;
        };
        // The name is matched before anything is stat'ed: each hierarchy holds the
        // cgroups of every running container, and a boot starts them all.
        for e in entries
            .flatten()
            .filter(|e| is_lxc_cgroup_of(&e.file_name().to_string_lossy(), name))
        {
            // Only what is old: a cgroup made a moment ago belongs to a start under way
            // (LXC creates it empty, then moves its monitor in), possibly of another
            // LXC user of the same name on this host.
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= STALE_CGROUP_AGE);
            if stale {
                let _ = fs::remove_dir(e.path());
            }
        }
    }
}

fn parse_info(out: &str) -> LxcState {
    let mut state = None;
    let mut pid = None;
    for line in out.lines() {
        match line.split_once(':') {
            Some((key, value)) if key.trim() == "State" => state = Some(value.trim().to_string()),
            Some((key, value)) if key.trim() == "PID" => pid = value.trim().parse().ok(),
            None if state.is_none() && !line.trim().is_empty() => {
                state = Some(line.trim().to_string())
            }
            _ => {}
        }
    }
    let running = matches!(state.as_deref(), Some("RUNNING" | "FREEZING" | "FROZEN"));
    LxcState {
        running,
        init_pid: pid.filter(|_| running),
    }
}

/// Global addresses inside the network namespace of process `pid` (a container's init),
/// read from /proc rather than by running `lxc-info -i` for every container listed.
pub fn addresses_of(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(trie) = fs::read_to_string(format!("/proc/{pid}/net/fib_trie")) {
        out.extend(parse_fib_trie_locals(&trie));
    }
    if let Ok(inet6) = fs::read_to_string(format!("/proc/{pid}/net/if_inet6")) {
        out.extend(parse_if_inet6(&inet6));
    }
    out
}

/// Local host addresses from /proc/net/fib_trie: an address line followed by
/// `/32 host LOCAL`; loopback excluded, each once.
fn parse_fib_trie_locals(trie: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut last: Option<&str> = None;
    for line in trie.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if t.starts_with("/32 host LOCAL") {
            if let Some(addr) = last.filter(|a| !a.starts_with("127.")) {
                if !found.iter().any(|f| f == addr) {
                    found.push(addr.to_string());
                }
            }
        } else if t.parse::<std::net::Ipv4Addr>().is_ok() {
            last = Some(t);
        }
    }
    found
}

/// Global-scope addresses from /proc/net/if_inet6 (link-local and loopback excluded).
fn parse_if_inet6(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (hex, scope) = (f.first()?, f.get(3)?);
            if *scope != "00" || hex.len() != 32 {
                return None;
            }
            let bits = u128::from_str_radix(hex, 16).ok()?;
            Some(std::net::Ipv6Addr::from(bits).to_string())
        })
        .collect()
}

/// The single child of the LXC monitor whose pid is in `pid_file`: the container's init.
fn init_of_monitor(pid_file: &Path) -> Option<u32> {
    let monitor: u32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let children = fs::read_to_string(format!("/proc/{monitor}/task/{monitor}/children")).ok()?;
    let mut pids = children.split_whitespace();
    let init = pids.next()?.parse().ok()?;
    pids.next().is_none().then_some(init)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_lxc_monitor_is_seen_by_its_command_socket() {
        let none = b"Num       RefCount Protocol Flags    Type St Inode Path\n\
0000000074247428: 00000003 00000000 00000000 0001 03 4846733 /tmp/rig/bus/system_bus_socket\n\
00000000b6921969: 00000002 00000000 00010000 0001 01 4846683 @/tmp/other/command-line\n\
00000000b6921960: 00000002 00000000 00010000 0001 01 4846684 /run/x/command\n";
        assert!(!lists_lxc_monitor(none));
        let mut one = none.to_vec();
        one.extend_from_slice(
            b"00000000bf1f77ab: 00000002 00000000 00010000 0001 01 4846898 @/srv/osm-lxc/lxc/containers/s1/command\n",
        );
        assert!(lists_lxc_monitor(&one));
        let hashed = b"00000000bf1f77ab: 00000002 00000000 00010000 0001 01 4846898 @lxc/0123456789abcdef/command";
        assert!(lists_lxc_monitor(hashed));
    }

    #[test]
    fn reads_addresses_from_proc() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.0.3.0/24 2 0 2\n        |-- 10.0.3.0\n           /24 link UNICAST\n        |-- 10.0.3.7\n           /32 host LOCAL\n  +-- 127.0.0.0/8 2 0 2\n     |-- 127.0.0.1\n        /32 host LOCAL\nLocal:\n        |-- 10.0.3.7\n           /32 host LOCAL\n";
        assert_eq!(parse_fib_trie_locals(trie), vec!["10.0.3.7"]);
        let inet6 = "00000000000000000000000000000001 01 80 10 80       lo\nfe80000000000000c0a8fffe01020304 02 40 20 80     eth0\nfd000000000000000000000000000007 02 40 00 80     eth0\n";
        assert_eq!(parse_if_inet6(inet6), vec!["fd00::7"]);
    }

    #[test]
    fn lxc_cgroup_names_match_only_their_container() {
        assert!(is_lxc_cgroup_of("lxc.monitor.web1", "web1"));
        assert!(is_lxc_cgroup_of("lxc.payload.web1-2", "web1"));
        assert!(!is_lxc_cgroup_of("lxc.monitor.web10", "web1"));
        assert!(!is_lxc_cgroup_of("lxc.monitor.web1-x", "web1"));
        assert!(!is_lxc_cgroup_of("lxc.pivot", "web1"));
    }

    #[test]
    fn parses_running_and_stopped_info() {
        assert_eq!(
            parse_info("State:          RUNNING\nPID:            4242\n"),
            LxcState {
                running: true,
                init_pid: Some(4242)
            }
        );
        assert_eq!(
            parse_info("State:          STOPPED\n"),
            LxcState {
                running: false,
                init_pid: None
            }
        );
        assert!(!parse_info("").running);
        assert!(parse_info("RUNNING\n").running);
    }
}
