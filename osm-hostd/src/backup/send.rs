//! The Btrfs send/receive transport (issue 12, `[backup] transport = "btrfs-send"`).
//!
//! Pure pieces: the transport's name, the layout of a send-mode tree, which snapshot an
//! incremental stream starts from, and the argument vectors (never a shell string but
//! for the one quoted command ssh hands the far end). The engine's `backup_send`
//! sequences them.
//!
//! Layout on the target, inside the same `<target>/<host-id>/<name>/` directory as the
//! rsync modes: one plain directory per tree, named by its start time like history
//! trees, holding the received read-only subvolume [`TREE_SUBVOLUME`] and, beside it
//! (a received subvolume cannot be written to), the tree's manifest and listing.

use super::rsync::shell_quote;

/// The received read-only subvolume inside a send-mode tree directory.
pub const TREE_SUBVOLUME: &str = "snapshot";

/// Host-side read-only snapshots kept as parents of the next incremental send, one
/// directory per container uuid, inside the store's containers directory.
pub const PARENTS_DIR: &str = ".send-parents";

/// `backup.transport`: how trees reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Transport {
    #[default]
    Rsync,
    BtrfsSend,
}

impl TryFrom<String> for Transport {
    type Error = String;
    fn try_from(text: String) -> Result<Transport, String> {
        Transport::parse(&text).map_err(|e| format!("backup.transport = {e}"))
    }
}

impl Transport {
    pub fn parse(text: &str) -> Result<Transport, String> {
        match text {
            "rsync" => Ok(Transport::Rsync),
            "btrfs-send" => Ok(Transport::BtrfsSend),
            other => Err(format!(
                "{other:?} must be \"rsync\" (the default) or \"btrfs-send\" (needs a Btrfs target)"
            )),
        }
    }
}

/// The newest tree that both the host (its kept parent snapshots) and the target have:
/// the parent of an incremental send. `None` means a full send.
pub fn common_parent(host: &[String], target: &[String]) -> Option<String> {
    host.iter()
        .filter(|n| super::parse_history_name(n).is_some() && target.contains(n))
        .max()
        .cloned()
}

/// `btrfs send` of the read-only snapshot `snap`, incremental from `parent` when given.
pub fn send_args(snap: &str, parent: Option<&str>) -> Vec<String> {
    let mut a = vec!["send".to_string()];
    if let Some(p) = parent {
        a.push("-p".into());
        a.push(p.to_string());
    }
    a.push("--".into());
    a.push(snap.to_string());
    a
}

/// `btrfs receive` into the directory `dir`.
pub fn receive_args(dir: &str) -> Vec<String> {
    vec!["receive".into(), "--".into(), dir.to_string()]
}

/// The far end's command for ssh: the words of `words`, each quoted for its shell.
pub fn remote_command(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The error when the target's file system (as `stat -f -c %T` names it) cannot take a
/// send stream; `None` for Btrfs.
pub fn not_btrfs(shown: &str, fstype: &str) -> Option<String> {
    (fstype.trim() != "btrfs").then(|| {
        format!(
            "backup.transport is \"btrfs-send\" but the target {shown} is on {} (not Btrfs): btrfs receive needs a Btrfs file system there. Put the target on Btrfs, or set transport = \"rsync\" in the [backup] section to copy with rsync",
            match fstype.trim() {
                "" => "an unknown file system",
                t => t,
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names() {
        assert_eq!(Transport::parse("rsync").unwrap(), Transport::Rsync);
        assert_eq!(
            Transport::parse("btrfs-send").unwrap(),
            Transport::BtrfsSend
        );
        let e = Transport::parse("send").unwrap_err();
        assert!(e.contains("btrfs-send") && e.contains("rsync"), "{e}");
    }

    #[test]
    fn the_parent_is_the_newest_tree_both_sides_have() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let host = s(&["2026-11-01T000000Z", "2026-11-02T000000Z"]);
        let target = s(&[
            "2026-11-01T000000Z",
            "2026-11-03T000000Z",
            ".incomplete-2026-11-02T000000Z",
        ]);
        assert_eq!(
            common_parent(&host, &target).as_deref(),
            Some("2026-11-01T000000Z")
        );
        assert_eq!(common_parent(&host, &s(&["x"])), None);
        assert_eq!(common_parent(&s(&["latest"]), &s(&["latest"])), None);
        assert_eq!(common_parent(&[], &target), None);
    }

    #[test]
    fn argument_vectors() {
        assert_eq!(send_args("/s/a", None), ["send", "--", "/s/a"]);
        assert_eq!(
            send_args("/s/b", Some("/s/a")),
            ["send", "-p", "/s/a", "--", "/s/b"]
        );
        assert_eq!(receive_args("/t/x"), ["receive", "--", "/t/x"]);
        assert_eq!(
            remote_command(&["btrfs".into(), "receive".into(), "/it's".into()]),
            "'btrfs' 'receive' '/it'\\''s'"
        );
        assert!(not_btrfs("/t", "btrfs\n").is_none());
        let e = not_btrfs("/t", "ext2/ext3").unwrap();
        assert!(
            e.contains("ext2/ext3") && e.contains("transport = \"rsync\""),
            "{e}"
        );
    }
}
