//! rsync and ssh argument vectors, and rsync's exit-code policy (from rsync's man page:
//! which codes fail a run and which are worth one more try).

use super::Settings;

/// One rsync transfer of a container's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsyncJob {
    /// The snapshot (local directory); a trailing `/` is added.
    pub src: String,
    /// `dir` or `host:dir`; a trailing `/` is added.
    pub dest: String,
    /// History mode: the previous tree, relative to `dest` (`../<prev>`).
    pub link_dest: Option<String>,
    /// Only compare and list what differs (`-n -i`), the metadata check after a run.
    pub check_only: bool,
    /// Leave out `.snapshots` and `work/*` (a whole container; not for a restore of
    /// `rootfs-layer/`, where `work/` would be the customer's own directory).
    pub excludes: bool,
    /// Compare contents, not size and time (`--checksum`): a restore must not keep a
    /// file changed within the same second as the backed-up one.
    pub checksum: bool,
}

/// Excludes the nested `.snapshots` subvolume (empty in a snapshot), the overlay's
/// work dir contents (the dir itself is kept: overlayfs needs it), and keeps the tree's
/// manifest and listing (`/.osm-backup*`) out of the transfer and safe from `--delete`.
pub const EXCLUDES: [&str; 3] = [
    "--exclude=/.snapshots/",
    "--exclude=/work/*",
    super::identity::EXCLUDE,
];

/// The rsync argument vector (without the program name). `-a` carries devices (the
/// whiteouts), `-H` the hard links whiteouts share, `-AX` ACLs and `trusted.*` xattrs,
/// `--numeric-ids` is mandatory, `-x` stays inside the container's subvolume.
pub fn rsync_args(cfg: &impl Settings, job: &RsyncJob) -> Vec<String> {
    let mut a: Vec<String> = vec!["-aHAXS".into(), "--numeric-ids".into(), "-x".into()];
    if job.excludes {
        a.extend(EXCLUDES.iter().map(|s| s.to_string()));
    }
    a.push("--delete".into());
    if job.checksum {
        a.push("--checksum".into());
    }
    a.push(format!("--timeout={}", cfg.timeout().max(1)));
    if job.check_only {
        a.extend(["--dry-run".into(), "--itemize-changes".into()]);
    } else {
        a.extend(["--mkpath".into(), "--stats".into()]);
    }
    if let Some(prev) = &job.link_dest {
        a.push(format!("--link-dest={prev}"));
    }
    if cfg.target().is_remote() {
        a.push("-e".into());
        a.push(ssh_command(cfg));
    }
    a.push("--".into());
    a.push(format!("{}/", job.src.trim_end_matches('/')));
    a.push(format!("{}/", job.dest.trim_end_matches('/')));
    a
}

/// The ssh argument vector's options (after `ssh`, before the host).
pub fn ssh_options(cfg: &impl Settings) -> Vec<String> {
    let mut a = vec![
        "-o".to_string(),
        "BatchMode=yes".to_string(),
        "-o".to_string(),
        format!("ConnectTimeout={}", cfg.timeout().clamp(1, 60)),
    ];
    if let Some(key) = cfg.ssh_key() {
        a.push("-i".into());
        a.push(key.path().display().to_string());
    }
    for o in cfg.ssh_options() {
        a.push("-o".into());
        a.push(o.as_str().to_string());
    }
    a
}

/// rsync's `-e` value. rsync splits it on spaces itself, honouring single quotes, so
/// every word is single-quoted; the key and options were checked at load to hold no
/// quote or newline ([`super::SshKey`], [`super::SshOption`]).
pub fn ssh_command(cfg: &impl Settings) -> String {
    std::iter::once("ssh".to_string())
        .chain(ssh_options(cfg))
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes one word for the remote shell ssh hands its command to.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitClass {
    Ok,
    /// Worth another attempt later (network, timeouts, ssh).
    Retry(String),
    Fail(String),
}

/// Maps rsync's exit code. 23 and 24 are failures (rsync only warns on 24, and rsnapshot
/// and many scripts accept both; not here): a read-only snapshot
/// cannot have vanishing files, and 23 includes lost xattrs and owners.
pub fn classify_exit(code: Option<i32>) -> ExitClass {
    let what = match code {
        Some(0) => return ExitClass::Ok,
        None => return ExitClass::Retry("rsync was killed by a signal".into()),
        Some(c) => c,
    };
    let msg = |m: &str| format!("rsync exit {what}: {m}");
    match what {
        1 => ExitClass::Fail(msg("syntax or usage error")),
        2 => ExitClass::Fail(msg("protocol incompatibility")),
        3 => ExitClass::Fail(msg("errors selecting input/output files or dirs")),
        4 => ExitClass::Fail(msg("requested action not supported")),
        5 => ExitClass::Fail(msg("error starting client-server protocol")),
        11 => ExitClass::Fail(msg("error in file I/O")),
        12 => ExitClass::Fail(msg("error in rsync protocol data stream")),
        25 => ExitClass::Fail(msg("--max-delete limit stopped deletions")),
        23 => ExitClass::Fail(msg(
            "partial transfer due to error (files, xattrs or owners were not copied)",
        )),
        24 => ExitClass::Fail(msg(
            "source files vanished, impossible from a read-only snapshot",
        )),
        10 => ExitClass::Retry(msg("error in socket I/O")),
        20 => ExitClass::Retry(msg("received SIGUSR1 or SIGINT")),
        30 => ExitClass::Retry(msg("timeout in data send/receive")),
        35 => ExitClass::Retry(msg("timeout waiting for daemon connection")),
        255 => ExitClass::Retry(msg(
            "ssh failed: the target is unreachable or refused the key",
        )),
        _ => ExitClass::Fail(msg("unexpected exit code")),
    }
}

/// Bytes sent, from `--stats` output ("Total bytes sent: 1,234").
pub fn parse_bytes_sent(stats: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("Total bytes sent:"))
        .map(|v| v.chars().filter(|c| c.is_ascii_digit()).collect::<String>())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Cfg {
        target: crate::backup::Target,
        ssh_key: Option<crate::backup::SshKey>,
        ssh_options: Vec<crate::backup::SshOption>,
    }

    impl Settings for Cfg {
        fn target(&self) -> &crate::backup::Target {
            &self.target
        }
        fn timeout(&self) -> u32 {
            300
        }
        fn ssh_key(&self) -> Option<&crate::backup::SshKey> {
            self.ssh_key.as_ref()
        }
        fn ssh_options(&self) -> &[crate::backup::SshOption] {
            &self.ssh_options
        }
    }

    fn cfg(target: &str) -> Cfg {
        Cfg {
            target: crate::backup::Target::parse(target).unwrap(),
            ssh_key: None,
            ssh_options: Vec::new(),
        }
    }

    #[test]
    fn local_args_carry_the_mandatory_flags() {
        let job = RsyncJob {
            src: "/s/containers/.backup-web1".into(),
            dest: "/b/web1".into(),
            link_dest: None,
            check_only: false,
            excludes: true,
            checksum: false,
        };
        let a = rsync_args(&cfg("/b"), &job);
        for f in [
            "-aHAXS",
            "--numeric-ids",
            "-x",
            "--delete",
            "--exclude=/work/*",
            "--exclude=/.snapshots/",
            "--exclude=/.osm-backup*",
            "--stats",
        ] {
            assert!(a.iter().any(|x| x == f), "{f} missing from {a:?}");
        }
        assert!(!a.iter().any(|x| x == "-e"));
        let n = a.len();
        assert_eq!(
            a[n - 3..],
            ["--", "/s/containers/.backup-web1/", "/b/web1/"]
        );
    }

    #[test]
    fn ssh_args_are_quoted_words() {
        let mut c = cfg("root@198.51.100.2:/srv/b");
        c.ssh_key = Some(
            std::path::PathBuf::from("/etc/osm-host/backup key")
                .try_into()
                .unwrap(),
        );
        c.ssh_options = vec![
            "StrictHostKeyChecking=accept-new".try_into().unwrap(),
            "UserKnownHostsFile=/k h".try_into().unwrap(),
        ];
        let job = RsyncJob {
            src: "/s".into(),
            dest: "root@198.51.100.2:/srv/b/web1".into(),
            link_dest: Some("../2026-01-01T000000Z".into()),
            check_only: true,
            excludes: true,
            checksum: false,
        };
        let a = rsync_args(&c, &job);
        let e = &a[a.iter().position(|x| x == "-e").unwrap() + 1];
        assert!(e.starts_with("'ssh' '-o' 'BatchMode=yes'"), "{e}");
        assert!(e.contains("'-i' '/etc/osm-host/backup key'"), "{e}");
        assert!(e.contains("'UserKnownHostsFile=/k h'"), "{e}");
        assert!(
            a.contains(&"--dry-run".to_string()) && a.contains(&"--itemize-changes".to_string())
        );
        assert!(a.contains(&"--link-dest=../2026-01-01T000000Z".to_string()));
    }

    #[test]
    fn exit_codes_follow_the_spec() {
        assert_eq!(classify_exit(Some(0)), ExitClass::Ok);
        for c in [1, 2, 3, 4, 5, 11, 12, 23, 24, 25, 99] {
            assert!(matches!(classify_exit(Some(c)), ExitClass::Fail(_)), "{c}");
        }
        for c in [10, 20, 30, 35, 255] {
            assert!(matches!(classify_exit(Some(c)), ExitClass::Retry(_)), "{c}");
        }
        assert!(matches!(classify_exit(None), ExitClass::Retry(_)));
    }

    #[test]
    fn stats_and_quoting() {
        assert_eq!(
            parse_bytes_sent("Number of files: 3\nTotal bytes sent: 1,234,567\n"),
            1_234_567
        );
        assert_eq!(parse_bytes_sent(""), 0);
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }
}
