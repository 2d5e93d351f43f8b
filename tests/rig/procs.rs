//! Reading the host's `/proc` (the test process lives in the host namespaces).

use std::fs;

/// Every pid currently listed in `/proc`.
pub fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The parent pid of `pid`, from `/proc/<pid>/stat` (the name field may hold spaces).
pub fn ppid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// The one-letter state of `pid` (`R`, `S`, `Z`, …).
pub fn state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Live children of `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| ppid(p) == Some(parent))
        .collect()
}

/// The command line of `pid` with NULs turned into spaces (empty for zombies).
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&raw).replace('\0', " ");
    Some(text.trim_end().to_string())
}

/// The identity of a namespace of `pid`, e.g. `net:[4026532301]`.
pub fn ns_id(pid: i32, kind: &str) -> Option<String> {
    let link = fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
    Some(link.to_string_lossy().into_owned())
}

/// Processes that are members of the namespace `id` (as given by [`ns_id`]).
pub fn pids_in_ns(kind: &str, id: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| ns_id(p, kind).as_deref() == Some(id))
        .collect()
}

/// Whether a process with this pid exists (including zombies).
pub fn pid_exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
