//! The managed block of `/etc/hosts` (`hosts_file`): one `IP name` line per container
//! between two marker lines. Everything outside the block is kept byte for byte; the
//! file is replaced atomically, and only when its text changes.

use std::net::Ipv4Addr;
use std::path::Path;

pub const BEGIN: &str = "# BEGIN osm-host managed block (osm-hostd rewrites it; do not edit)";
pub const END: &str = "# END osm-host managed block";

/// `text` with its managed block replaced by `entries` (appended at the end when the
/// file has none; removed entirely when `entries` is empty).
pub fn with_block(text: &str, entries: &[(String, Ipv4Addr)]) -> String {
    let mut before = String::new();
    let mut after = String::new();
    let mut state = 0; // 0 before the block, 1 inside, 2 after
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        match state {
            0 if bare.starts_with("# BEGIN osm-host managed block") => state = 1,
            0 => before.push_str(line),
            1 if bare.starts_with(END) => state = 2,
            1 => {}
            _ => after.push_str(line),
        }
    }
    let mut block = String::new();
    if !entries.is_empty() {
        block.push_str(BEGIN);
        block.push('\n');
        for (name, ip) in entries {
            block.push_str(&format!("{ip}\t{name}\n"));
        }
        block.push_str(END);
        block.push('\n');
    }
    if !block.is_empty() && !before.is_empty() && !before.ends_with('\n') {
        before.push('\n');
    }
    format!("{before}{block}{after}")
}

/// The host names the file gives outside the managed block (comments dropped), as
/// written: what the host owns and a container must not shadow.
pub fn names_outside_block(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("# BEGIN osm-host managed block") {
            inside = true;
        } else if line.starts_with(END) {
            inside = false;
        } else if !inside {
            let content = line.split('#').next().unwrap_or_default();
            names.extend(content.split_whitespace().skip(1).map(String::from));
        }
    }
    names
}

/// Rewrites the block in the file at `path`; returns whether the file changed. A
/// missing file is created (mode 0644).
pub fn sync(path: &Path, entries: &[(String, Ipv4Addr)]) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let (old, mode) = match std::fs::read_to_string(path) {
        Ok(t) => {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
            (t, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o644),
        Err(e) => return Err(e),
    };
    let new = with_block(&old, entries);
    if new == old {
        return Ok(false);
    }
    crate::fsutil::write_atomic(path, new.as_bytes(), mode)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(list: &[(&str, &str)]) -> Vec<(String, Ipv4Addr)> {
        list.iter()
            .map(|(n, ip)| (n.to_string(), ip.parse().unwrap()))
            .collect()
    }

    #[test]
    fn block_is_appended_replaced_and_removed_leaving_the_rest() {
        let orig = "127.0.0.1\tlocalhost\n# a comment\n192.168.1.5 nas";
        let one = with_block(orig, &e(&[("web1", "10.0.3.2")]));
        assert_eq!(
            one,
            format!("127.0.0.1\tlocalhost\n# a comment\n192.168.1.5 nas\n{BEGIN}\n10.0.3.2\tweb1\n{END}\n")
        );
        let edited = one + "10.9.9.9 later\n";
        let two = with_block(&edited, &e(&[("web1", "10.0.3.2"), ("web2", "10.0.3.3")]));
        assert!(two.contains("10.0.3.2\tweb1\n10.0.3.3\tweb2\n"), "{two}");
        assert!(
            two.ends_with(&format!("{END}\n10.9.9.9 later\n")),
            "lines after the block stay after it: {two}"
        );
        let none = with_block(&two, &[]);
        assert_eq!(
            none,
            "127.0.0.1\tlocalhost\n# a comment\n192.168.1.5 nas\n10.9.9.9 later\n"
        );
        assert_eq!(with_block(&none, &[]), none, "idempotent");
    }

    #[test]
    fn sync_writes_only_on_change_and_keeps_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        std::fs::write(&p, "127.0.0.1 localhost\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(sync(&p, &e(&[("a", "10.0.3.2")])).unwrap());
        assert!(!sync(&p, &e(&[("a", "10.0.3.2")])).unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(sync(&p, &[]).unwrap());
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "127.0.0.1 localhost\n"
        );
    }
}
