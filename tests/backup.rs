//! Root integration: backups of a real busybox container through the real daemon and CLI,
//! to a local directory and to sshd in a second network namespace standing in for the
//! backup host. The copies are compared entry by entry with the container's upper dir
//! (contents, owners, modes, xattrs, whiteouts, hard links).

use rig::{require_root, test_tempdir, wait_until, DaemonConfig, Rig, Sandbox};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn attach(rig: &Rig, name: &str, script: &str) -> Output {
    let out = rig.attach(name, script);
    assert!(out.status.success(), "attach {script}: {out:?}");
    out
}

fn container_dir(rig: &Rig, name: &str) -> PathBuf {
    rig.sandbox()
        .host_path(rig.store_root().join("lxc/containers").join(name))
}

/// A container whose upper dir holds every kind of marker: a whiteout (a deleted base
/// file), an opaque directory (a base dir removed and made again), a file with odd
/// owners and mode, a hard link, and a user xattr.
fn busy_container(rig: &Rig, name: &str) {
    rig.ctl_ok(&["create", name, "--base", "bb"]);
    rig.ctl_ok(&["start", name]);
    attach(
        rig,
        name,
        "rm /etc/udhcpc.script && rm -rf /etc/init.d && mkdir /etc/init.d && \
         echo new > /etc/init.d/rcS && mkdir -p /root && echo hello > /root/note && \
         chown 1234:5678 /root/note && chmod 640 /root/note && ln /root/note /root/link && \
         mkfifo /root/fifo && sync",
    );
    let upper = container_dir(rig, name).join("rootfs-layer");
    let wo = std::fs::symlink_metadata(upper.join("etc/udhcpc.script")).unwrap();
    assert!(
        wo.file_type().is_char_device() && wo.rdev() == 0,
        "whiteout made"
    );
    assert_eq!(
        xattr(&upper.join("etc/init.d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    set_xattr(&upper.join("root/note"), "user.customer", b"kept");
}

fn xattr_names(p: &Path) -> Vec<String> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C string; buf is writable for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut names: Vec<String> = buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    names
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings; buf is writable for its length.
    let len =
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings; value is readable for its length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {}", p.display());
}

/// Everything a restore depends on, per relative path. Hard links appear as the first
/// path of their inode group; `trusted.overlay.origin`/`uuid` name the store's file
/// system and are left out (a copy legitimately carries them unchanged, but they are
/// not compared by value here).
/// The id range base of the container whose `rootfs-layer` is `upper` (from the
/// `container.toml` beside it; 0 when privileged).
fn id_base(upper: &Path) -> u32 {
    let text = std::fs::read_to_string(upper.parent().unwrap().join("container.toml")).unwrap();
    let spec: toml::Value = toml::from_str(&text).unwrap();
    spec.get("idmap")
        .map_or(0, |m| m["uid"].as_integer().unwrap() as u32)
}

/// Every entry of an upper dir with owners as the container sees them (its upper is
/// stored shifted into its id range).
fn manifest(root: &Path) -> BTreeMap<String, String> {
    let base = id_base(root);
    let seen = |id: u32| {
        if id >= base && id - base < 65536 {
            id - base
        } else {
            id
        }
    };
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                "d".to_string()
            } else if ft.is_symlink() {
                format!("l->{}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_char_device() {
                format!("c{}", md.rdev())
            } else if ft.is_fifo() {
                "p".to_string()
            } else {
                format!("f:{}", String::from_utf8_lossy(&std::fs::read(&p).unwrap()))
            };
            if !ft.is_dir() {
                inodes.entry(md.ino()).or_default().push(rel.clone());
            }
            let xattrs: Vec<String> = xattr_names(&p)
                .into_iter()
                .map(|n| match xattr(&p, &n) {
                    Some(v) if !n.starts_with("trusted.overlay.origin") => format!("{n}={v:?}"),
                    _ => n,
                })
                .collect();
            out.insert(
                rel,
                format!(
                    "{kind} {:o} {}:{} x={xattrs:?}",
                    md.mode(),
                    seen(md.uid()),
                    seen(md.gid())
                ),
            );
        }
    }
    // Hard links within the tree (a whiteout's link into work/ is outside it).
    for group in inodes.values().filter(|g| g.len() > 1) {
        let first = group.iter().min().unwrap();
        for p in group {
            out.get_mut(p).unwrap().push_str(&format!(" link={first}"));
        }
    }
    out
}

/// This host's id (`host info --json`), its directory on the backup target.
fn host_id(rig: &Rig) -> String {
    let info: serde_json::Value =
        serde_json::from_str(&rig.ctl_ok(&["host", "info", "--json"])).unwrap();
    let id = info["host_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "{info}");
    id
}

fn status_of(rig: &Rig, name: &str) -> serde_json::Value {
    let all: serde_json::Value =
        serde_json::from_str(&rig.ctl_ok(&["backup", "status", "--json"])).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} in {all}"))
}

fn assert_copy_matches(rig: &Rig, name: &str, copy: &Path) {
    let src = container_dir(rig, name);
    assert_eq!(
        manifest(&copy.join("rootfs-layer")),
        manifest(&src.join("rootfs-layer"))
    );
    let wo = std::fs::symlink_metadata(copy.join("rootfs-layer/etc/udhcpc.script")).unwrap();
    assert!(
        wo.file_type().is_char_device() && wo.rdev() == 0,
        "whiteout kept"
    );
    assert_eq!(
        xattr(
            &copy.join("rootfs-layer/etc/init.d"),
            "trusted.overlay.opaque"
        )
        .as_deref(),
        Some(&b"y"[..])
    );
    // The upper layer of an unprivileged container is stored shifted into its id range.
    let spec: toml::Value =
        toml::from_str(&std::fs::read_to_string(copy.join("container.toml")).unwrap()).unwrap();
    let shift = spec
        .get("idmap")
        .map_or(0, |m| m["uid"].as_integer().unwrap() as u32);
    let note = std::fs::symlink_metadata(copy.join("rootfs-layer/root/note")).unwrap();
    assert_eq!(
        (note.uid(), note.gid(), note.mode() & 0o7777),
        (shift + 1234, shift + 5678, 0o640)
    );
    // root/link and root/note are one inode (history trees add links to older trees).
    let link = std::fs::symlink_metadata(copy.join("rootfs-layer/root/link")).unwrap();
    assert_eq!(link.ino(), note.ino());
    assert_eq!(
        xattr(&copy.join("rootfs-layer/root/note"), "user.customer").as_deref(),
        Some(&b"kept"[..])
    );
    assert!(copy.join("container.toml").is_file());
    assert!(copy.join("work").is_dir(), "work/ itself is kept");
    assert_eq!(
        std::fs::read_dir(copy.join("work")).unwrap().count(),
        0,
        "work/ is not backed up"
    );
    assert!(
        !copy.join(".snapshots").exists(),
        ".snapshots is not backed up"
    );
    let staging: Vec<_> = std::fs::read_dir(src.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".backup-"))
        .collect();
    assert!(
        staging.is_empty(),
        "temporary snapshot dropped: {staging:?}"
    );
}

/// The restored container runs, its upper dir equals the backup's entry by entry, and
/// inside it deleted files stay deleted (whiteouts) and a replaced dir hides the base's.
fn assert_restored(rig: &Rig, name: &str, copy: &Path) {
    let dir = container_dir(rig, name);
    assert_eq!(
        manifest(&dir.join("rootfs-layer")),
        manifest(&copy.join("rootfs-layer"))
    );
    let info: serde_json::Value =
        serde_json::from_str(&rig.ctl_ok(&["info", name, "--json"])).unwrap();
    assert_eq!(info["state"], "running", "{info}");
    let out = attach(
        rig,
        name,
        "cat /root/note; ls /etc/init.d; [ -e /etc/udhcpc.script ] && echo resurrected; stat -c %u:%g /root/note",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello\nrcS\n1234:5678\n"
    );
}

#[test]
fn local_backup_is_verified_persisted_and_survives_a_failed_run() {
    require_root();
    let target_dir = test_tempdir("osm-backup-target-");
    let target = target_dir.path().join("lxc");
    let mut rig = Rig::builder().backup_target(&target).start();
    rig.import_busybox_base("bb");
    busy_container(&rig, "web1");

    let out = rig.ctl_ok(&["backup", "run", "web1"]);
    assert!(out.contains("backup verified"), "{out}");
    let copy = target.join(host_id(&rig)).join("web1");
    assert_copy_matches(&rig, "web1", &copy);
    let st = status_of(&rig, "web1");
    assert_eq!(st["last_result"], "ok", "{st}");
    assert!(
        st["last_success"].as_u64().unwrap() > 0
            && st["last_attempt_bytes_sent"].as_u64().unwrap() > 0,
        "{st}"
    );
    assert_eq!(rig.ctl_ok(&["backup", "list", "web1"]).trim(), "mirror");
    // Monitoring reads the same from the container object's properties.
    let prop = |p: &str| {
        let out = rig.bus().dbus_send(&[
            "--print-reply=literal",
            "--dest=uk.co.devtank.OsmHost1",
            "/uk/co/devtank/OsmHost1/container/web1",
            "org.freedesktop.DBus.Properties.Get",
            "string:uk.co.devtank.OsmHost1.Container",
            &format!("string:{p}"),
        ]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Times are µs since the epoch, in `backup status --json` as in the properties.
    let success_us = st["last_success"].as_u64().unwrap();
    assert!(success_us > 1_600_000_000_000_000, "{st}");
    assert!(
        prop("LastBackupSuccess").ends_with(&success_us.to_string()),
        "{}",
        prop("LastBackupSuccess")
    );
    assert!(
        prop("LastBackupResult").contains("ok"),
        "{}",
        prop("LastBackupResult")
    );
    // And `info` shows them, as the properties carry them, to anyone.
    let out = rig.ctl_as_nobody(&["info", "web1", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["last_backup_success"], success_us, "{info}");
    assert_eq!(info["last_backup_result"], "ok", "{info}");
    assert!(
        info["last_backup_attempt"].as_u64().unwrap() >= success_us,
        "{info}"
    );
    let page = rig.ctl_ok(&["info", "web1"]);
    let line = |label: &str| {
        page.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} in {page}"))
            .to_string()
    };
    assert!(line("last backup:").ends_with(", ok"), "{page}");
    assert!(!line("last success:").ends_with("never"), "{page}");
    // Anyone may read the status; only admins may run or restore.
    let out = rig.ctl_as_nobody(&["backup", "status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    for args in [
        &["backup", "run", "web1"][..],
        &["backup", "restore", "web1", "--as", "web9"][..],
    ] {
        let out = rig.ctl_as_nobody(args);
        assert_eq!(out.status.code(), Some(7), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("usermod -aG osm-admin"), "{err}");
    }

    // A change made after the snapshot is not in that backup.
    attach(&rig, "web1", "echo changed > /root/note");
    assert_eq!(
        std::fs::read_to_string(copy.join("rootfs-layer/root/note")).unwrap(),
        "hello\n"
    );

    // Restore into a new container: it starts and has the backed-up data.
    rig.ctl_ok(&["backup", "restore", "web1", "--as", "web2"]);
    assert_restored(&rig, "web2", &copy);

    // Restore over the container itself: the change is rolled back, and the state
    // before the restore is kept in a safety snapshot.
    rig.ctl_ok(&["backup", "restore", "web1"]);
    assert_restored(&rig, "web1", &copy);
    let safety: Vec<PathBuf> = std::fs::read_dir(container_dir(&rig, "web1").parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".pre-restore-web1-")
        })
        .collect();
    assert_eq!(safety.len(), 1, "{safety:?}");
    assert_eq!(
        std::fs::read_to_string(safety[0].join("rootfs-layer/root/note")).unwrap(),
        "changed\n"
    );

    // Status survives a restart; an unreachable target fails the run with a clear
    // status and leaves the earlier backup as it was.
    let before = status_of(&rig, "web1");
    let mut cfg = DaemonConfig::for_test_dir(rig.dir());
    cfg.set_str("backup.target", "root@198.51.100.9:/srv/backups/lxc")
        .set("backup.timeout", "5");
    rig.daemon().write_config(&cfg);
    rig.daemon_mut().restart();
    assert_eq!(
        status_of(&rig, "web1"),
        before,
        "status persisted across restarts"
    );
    let err = rig.ctl_err(&["backup", "run", "--all"]);
    assert!(err.contains("web1") && err.contains("ssh"), "{err}");
    let st = status_of(&rig, "web1");
    assert!(
        st["last_result"].as_str().unwrap().contains("unreachable"),
        "{st}"
    );
    assert_eq!(st["last_success"], before["last_success"], "{st}");
    assert_eq!(
        std::fs::read_to_string(copy.join("rootfs-layer/root/note")).unwrap(),
        "hello\n"
    );
    assert!(std::fs::symlink_metadata(copy.join("rootfs-layer/etc/udhcpc.script")).is_ok());
}

#[test]
fn history_mode_links_to_the_previous_tree_and_prunes_by_policy() {
    require_root();
    let target_dir = test_tempdir("osm-backup-history-");
    let target = target_dir.path().join("lxc");
    let t = target.display().to_string();
    let rig = Rig::builder()
        .config(move |c| {
            c.set_str("backup.target", &t)
                .set_str("backup.mode", "history")
                .set("backup.keep_daily", "2")
                .set("backup.keep_weekly", "0")
                .set("backup.keep_monthly", "2");
        })
        .start();
    rig.import_busybox_base("bb");
    busy_container(&rig, "web1");
    rig.ctl_ok(&["backup", "run", "web1"]);
    let trees = rig.ctl_ok(&["backup", "list", "web1"]);
    let first: Vec<&str> = trees.lines().collect();
    assert_eq!(first.len(), 1, "{trees}");
    let dir = target.join(host_id(&rig)).join("web1");
    assert_copy_matches(&rig, "web1", &dir.join(first[0]));

    // Older trees as earlier nights would have left them.
    let now = osm_hostd::fsutil::now_secs();
    let day = 86_400;
    let name = |days: u64| osm_hostd::backup::history_name(now - days * day);
    std::fs::rename(dir.join(first[0]), dir.join(name(1))).unwrap();
    for d in [2, 40, 80] {
        let st = Command::new("cp")
            .arg("-a")
            .arg(dir.join(name(1)))
            .arg(dir.join(name(d)))
            .status()
            .unwrap();
        assert!(st.success());
    }
    rig.ctl_ok(&["backup", "run", "--all"]);
    let trees = rig.ctl_ok(&["backup", "list", "web1"]);
    let kept: Vec<&str> = trees.lines().collect();
    let newest = *kept.last().unwrap();
    assert!(newest > name(1).as_str(), "{trees}");
    assert!(
        kept.contains(&name(1).as_str()),
        "keep_daily = 2 keeps yesterday: {trees}"
    );
    assert!(
        !kept.contains(&name(80).as_str()),
        "three months back is pruned: {trees}"
    );
    if kept.contains(&name(2).as_str()) {
        panic!("the day before yesterday is neither daily nor monthly here: {trees}");
    }
    assert_copy_matches(&rig, "web1", &dir.join(newest));
    // Every tree is checked against its own manifest and listing.
    rig.ctl_ok(&["backup", "verify", "--all"]);
    // Unchanged files are hard links into the previous tree (--link-dest).
    let a = std::fs::metadata(dir.join(newest).join("container.toml")).unwrap();
    let b = std::fs::metadata(dir.join(name(1)).join("container.toml")).unwrap();
    assert_eq!(
        a.ino(),
        b.ino(),
        "unchanged file linked to the previous tree"
    );
    // Restore from a chosen night, by a prefix of its name (the date).
    let from = name(1);
    rig.ctl_ok(&[
        "backup",
        "restore",
        "web1",
        "--from",
        &from[..10],
        "--as",
        "web3",
    ]);
    assert_restored(&rig, "web3", &dir.join(&from));
    assert!(!std::fs::read_dir(&dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".incomplete-")));
}

/// sshd in its own network namespace on 198.51.100.2, joined to the rig's namespace by
/// a veth pair: the backup host. Killed with its sandbox.
struct BackupHost {
    // Field order is drop order: sshd first, then its namespace.
    _sshd: rig::SandboxChild,
    _sandbox: Sandbox,
}

const LOCAL_ADDR: &str = "198.51.100.1";
const REMOTE_ADDR: &str = "198.51.100.2";

impl BackupHost {
    fn start(rig: &Rig, dir: &Path) -> BackupHost {
        let sandbox = Sandbox::new();
        let out = Command::new("nsenter")
            .arg(format!("--target={}", rig.sandbox().holder_pid()))
            .args([
                "--net", "--", "ip", "link", "add", "osm-bk0", "type", "veth", "peer", "name",
                "osm-bk1", "netns",
            ])
            .arg(sandbox.holder_pid().to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "veth: {out:?}");
        rig.sandbox().run_ok(
            "ip",
            &["addr", "add", &format!("{LOCAL_ADDR}/24"), "dev", "osm-bk0"],
        );
        rig.sandbox()
            .run_ok("ip", &["link", "set", "osm-bk0", "up"]);
        sandbox.run_ok(
            "ip",
            &[
                "addr",
                "add",
                &format!("{REMOTE_ADDR}/24"),
                "dev",
                "osm-bk1",
            ],
        );
        sandbox.run_ok("ip", &["link", "set", "osm-bk1", "up"]);
        sandbox.run_ok("ip", &["link", "set", "lo", "up"]);

        let keygen = |path: &Path| {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path)
                .status()
                .unwrap();
            assert!(st.success());
        };
        keygen(&dir.join("host_key"));
        keygen(&dir.join("id"));
        std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).unwrap();
        let conf = dir.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "ListenAddress {REMOTE_ADDR}:22\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n",
                dir.join("host_key").display(),
                dir.join("authorized_keys").display()
            ),
        )
        .unwrap();
        sandbox.run_ok("mkdir", &["-p", "/run/sshd"]);
        let mut cmd = sandbox.command("/usr/sbin/sshd");
        cmd.args(["-D", "-e", "-f"]).arg(&conf);
        let sshd = sandbox.spawn(&mut cmd).unwrap();
        let up = wait_until(Duration::from_secs(10), || {
            rig.in_sandbox("/bin/busybox")
                .args(["nc", "-w", "1", REMOTE_ADDR, "22"])
                .stdin(std::process::Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).starts_with("SSH-"))
                .unwrap_or(false)
        });
        assert!(up, "sshd answers on {REMOTE_ADDR}:22");
        BackupHost {
            _sshd: sshd,
            _sandbox: sandbox,
        }
    }
}

/// A daemon backing up over ssh to `root@REMOTE_ADDR:<remote>` with the key and known
/// hosts kept in `keys`, by `transport`.
fn ssh_target_rig(keys: &Path, remote: &Path, transport: &str) -> Rig {
    let (k2, r2, t2) = (
        keys.to_path_buf(),
        remote.to_path_buf(),
        transport.to_string(),
    );
    Rig::builder()
        .config(move |c| {
            c.set_str(
                "backup.target",
                &format!("root@{REMOTE_ADDR}:{}", r2.display()),
            )
            .set_str("backup.transport", &t2)
            .set_str("backup.ssh_key", &k2.join("id").display().to_string())
            .set(
                "backup.ssh_options",
                &format!(
                    "[\"StrictHostKeyChecking=accept-new\", \"UserKnownHostsFile={}\"]",
                    k2.join("known_hosts").display()
                ),
            )
            .set("backup.timeout", "10");
        })
        .start()
}

#[test]
fn ssh_backup_to_a_second_namespace_keeps_every_marker() {
    require_root();
    let keys = test_tempdir("osm-backup-ssh-");
    let kd = keys.path().to_path_buf();
    let remote = kd.join("remote");
    let rig = ssh_target_rig(&kd, &remote, "rsync");
    let _host = BackupHost::start(&rig, &kd);
    rig.import_busybox_base("bb");
    busy_container(&rig, "web1");
    let out = rig.ctl_ok(&["backup", "run", "web1"]);
    assert!(out.contains("backup verified"), "{out}");
    let remote_tree = remote.join(host_id(&rig)).join("web1");
    assert_copy_matches(&rig, "web1", &remote_tree);
    assert!(remote_tree.join(".osm-backup.toml").is_file());
    rig.ctl_ok(&["backup", "verify", "web1"]);
    assert_eq!(status_of(&rig, "web1")["last_result"], "ok");
    assert_eq!(rig.ctl_ok(&["backup", "list", "web1"]).trim(), "mirror");
    rig.ctl_ok(&["backup", "restore", "web1", "--as", "web2"]);
    assert_restored(&rig, "web2", &remote_tree);
    // A file changed on the backup host is found by verify (re-read over ssh).
    std::fs::write(remote_tree.join("rootfs-layer/root/note"), "tampered\n").unwrap();
    let err = rig.ctl_err(&["backup", "verify", "--all"]);
    assert!(err.contains("root/note"), "{err}");
}

#[test]
fn a_file_changed_after_the_snapshot_is_not_in_that_backup() {
    require_root();
    let target_dir = test_tempdir("osm-backup-consistent-");
    let target = target_dir.path().join("lxc");
    let rig = Rig::builder().backup_target(&target).start();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    let dir = container_dir(&rig, "web1");
    let upper = dir.join("rootfs-layer");
    std::fs::create_dir_all(upper.join("srv")).unwrap();
    // Enough data that the copy takes a while after the snapshot is taken.
    let mut big = vec![0u8; 96 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    std::fs::write(upper.join("srv/big"), &big).unwrap();
    std::fs::write(upper.join("srv/note"), "before\n").unwrap();
    let _ = Command::new("sync").status();

    let mut run = rig.ctl_command(&["backup", "run", "web1"]);
    let child = run
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let staging = dir.parent().unwrap().join(".backup-web1");
    assert!(
        wait_until(Duration::from_secs(30), || staging.exists()),
        "the backup snapshot appears"
    );
    std::fs::write(upper.join("srv/note"), "after\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(
            target
                .join(host_id(&rig))
                .join("web1/rootfs-layer/srv/note")
        )
        .unwrap(),
        "before\n"
    );
    assert!(!staging.exists(), "the snapshot is dropped");
}

/// A 2 GiB loop-mounted Btrfs at `<dir>/btrfs`, mounted in `sandbox` (whose mount
/// namespace releases it); returns the mount point.
fn btrfs_target(sandbox: &Sandbox, dir: &Path) -> PathBuf {
    let img = dir.join("target.img");
    let mnt = dir.join("btrfs");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = Command::new("truncate")
        .args(["-s", "2G"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    sandbox.track_loop_files_under(dir);
    sandbox.run_ok("mkfs.btrfs", &["-q".as_ref(), img.as_os_str()]);
    sandbox.run_ok(
        "mount",
        &[
            "-o".as_ref(),
            "loop".as_ref(),
            img.as_os_str(),
            mnt.as_os_str(),
        ],
    );
    mnt
}

/// The history trees in a container's backup directory, oldest first.
fn send_trees(dir: &Path) -> Vec<String> {
    let mut t: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 18 && n.ends_with('Z'))
        .collect();
    t.sort();
    t
}

/// `p` as the test sees it (through a sandbox's `host_path`).
fn is_readonly_subvolume(p: &Path) -> bool {
    let out = Command::new("btrfs")
        .args(["property", "get", "-ts"])
        .arg(p)
        .arg("ro")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim() == "ro=true"
}

/// The host-side parents of `uuid`'s incremental sends.
fn send_parents(rig: &Rig, uuid: &str) -> Vec<String> {
    let dir = rig.sandbox().host_path(
        rig.store_root()
            .join("lxc/containers/.send-parents")
            .join(uuid),
    );
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn uuid_of(rig: &Rig, name: &str) -> String {
    let spec: toml::Value = toml::from_str(
        &std::fs::read_to_string(container_dir(rig, name).join("container.toml")).unwrap(),
    )
    .unwrap();
    spec["uuid"].as_str().unwrap().to_string()
}

#[test]
fn btrfs_send_backups_are_incremental_verified_and_restore_like_rsync() {
    require_root();
    let work = test_tempdir("osm-backup-send-");
    let mnt = work.path().join("btrfs");
    let target = mnt.join("lxc");
    let rsync_target = work.path().join("rsync");
    let t = target.display().to_string();
    let send_config = move |c: &mut DaemonConfig| {
        c.set_str("backup.target", &t)
            .set_str("backup.transport", "btrfs-send")
            .set_str("backup.mode", "history")
            .set("backup.keep_last", "5");
    };
    let mut rig = Rig::builder().config(send_config.clone()).start();
    btrfs_target(rig.sandbox(), work.path());
    let seen = |p: &Path| rig.sandbox().host_path(p);
    rig.import_busybox_base("bb");
    busy_container(&rig, "web1");
    attach(
        &rig,
        "web1",
        "dd if=/dev/urandom of=/root/big bs=1M count=8 2>/dev/null && sync",
    );

    // Full send: a read-only received subvolume holding exactly what rsync would copy.
    let out = rig.ctl_ok(&["backup", "run", "web1"]);
    assert!(out.contains("backup verified"), "{out}");
    let dir = seen(&target.join(host_id(&rig)).join("web1"));
    let first = send_trees(&dir);
    assert_eq!(first.len(), 1, "{first:?}");
    let tree1 = dir.join(&first[0]);
    assert_copy_matches(&rig, "web1", &tree1.join("snapshot"));
    assert!(is_readonly_subvolume(&tree1.join("snapshot")));
    assert!(tree1.join(".osm-backup.toml").is_file() && dir.join(".osm-backup.toml").is_file());
    let full = status_of(&rig, "web1")["last_attempt_bytes_sent"]
        .as_u64()
        .unwrap();
    assert!(full > 8 << 20, "the full stream carries the data: {full}");
    let uuid = uuid_of(&rig, "web1");
    assert_eq!(
        send_parents(&rig, &uuid),
        first,
        "the parent kept on the host"
    );
    let kept = rig
        .sandbox()
        .host_path(rig.store_root().join("lxc/containers/.send-parents"));
    for d in [kept.clone(), kept.join(&uuid)] {
        let md = std::fs::metadata(&d).unwrap();
        assert_eq!(
            (md.uid(), md.mode() & 0o077),
            (0, 0),
            "{} closed to other users",
            d.display()
        );
    }

    // Incremental: only the change travels; the host keeps only the newest parent.
    std::thread::sleep(Duration::from_millis(1100));
    attach(
        &rig,
        "web1",
        "echo again > /root/note2 && rm /root/fifo && sync",
    );
    rig.ctl_ok(&["backup", "run", "web1"]);
    let trees = send_trees(&dir);
    assert_eq!(trees.len(), 2, "{trees:?}");
    let st = status_of(&rig, "web1");
    let inc = st["last_attempt_bytes_sent"].as_u64().unwrap();
    assert!(
        inc < 1 << 20,
        "incremental stream of {inc} bytes (full {full})"
    );
    assert_eq!(st["last_result"], "ok", "{st}");
    assert!(rig.daemon().log().contains(&format!("parent={}", first[0])));
    assert_eq!(send_parents(&rig, &uuid), trees[1..].to_vec());
    let tree2 = dir.join(&trees[1]).join("snapshot");
    assert_copy_matches(&rig, "web1", &tree2);
    assert_eq!(
        std::fs::read_to_string(tree2.join("rootfs-layer/root/note2")).unwrap(),
        "again\n"
    );
    assert!(!tree2.join("rootfs-layer/root/fifo").exists());
    assert!(
        tree1.join("snapshot/rootfs-layer/root/fifo").exists(),
        "older tree intact"
    );
    let listed = rig.ctl_ok(&["backup", "list", "web1"]);
    assert_eq!(
        listed.split_whitespace().collect::<Vec<_>>(),
        trees,
        "{listed}"
    );
    rig.ctl_ok(&["backup", "verify", "web1"]);

    // Restore from the newest send-mode tree into a new container.
    rig.ctl_ok(&["backup", "restore", "web1", "--as", "web2"]);
    assert_restored(&rig, "web2", &tree2);

    // verify re-reads every file: a change inside a received tree is found.
    let ro = |v: &str| {
        let st = Command::new("btrfs")
            .args(["property", "set", "-f", "-ts"])
            .arg(tree1.join("snapshot"))
            .args(["ro", v])
            .status()
            .unwrap();
        assert!(st.success());
    };
    ro("false");
    std::fs::write(tree1.join("snapshot/rootfs-layer/root/note"), "tampered\n").unwrap();
    ro("true");
    let err = rig.ctl_err(&["backup", "verify", "web1"]);
    assert!(
        err.contains("root/note") && err.contains(&first[0]),
        "{err}"
    );

    // The target's copy of the parent is no longer the one the host sent (replaced by a
    // writable snapshot, which drops the received uuid, made read-only again): the
    // incremental receive fails, what it left is deleted, and the run sends in full.
    // (Run in the sandbox: btrfs finds the file system by the mount it sees.)
    let newest = target.join(host_id(&rig)).join("web1").join(&trees[1]);
    let (snap, copy) = (newest.join("snapshot"), newest.join("copy"));
    rig.sandbox().run_ok(
        "btrfs",
        &[
            "subvolume".as_ref(),
            "snapshot".as_ref(),
            snap.as_os_str(),
            copy.as_os_str(),
        ],
    );
    rig.sandbox().run_ok(
        "btrfs",
        &[
            "property".as_ref(),
            "set".as_ref(),
            "-ts".as_ref(),
            copy.as_os_str(),
            "ro".as_ref(),
            "true".as_ref(),
        ],
    );
    rig.sandbox().run_ok(
        "btrfs",
        &["subvolume".as_ref(), "delete".as_ref(), snap.as_os_str()],
    );
    rig.sandbox()
        .run_ok("mv", &[copy.as_os_str(), snap.as_os_str()]);
    std::thread::sleep(Duration::from_millis(1100));
    rig.ctl_ok(&["backup", "run", "web1"]);
    assert!(
        rig.daemon().log().contains("sending in full"),
        "{}",
        rig.daemon().log_tail(20)
    );
    let st = status_of(&rig, "web1");
    assert_eq!(st["last_result"], "ok", "{st}");
    assert!(
        st["last_attempt_bytes_sent"].as_u64().unwrap() > 8 << 20,
        "{st}"
    );
    let trees = send_trees(&dir);
    assert_eq!(trees.len(), 3, "{trees:?}");
    assert_copy_matches(&rig, "web1", &dir.join(&trees[2]).join("snapshot"));
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".incomplete-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Restore over the running container from the newest send-mode tree (journaled swap).
    attach(&rig, "web1", "echo changed > /root/note && sync");
    rig.ctl_ok(&["backup", "restore", "web1"]);
    assert_eq!(attach(&rig, "web1", "cat /root/note").stdout, b"hello\n");

    // The same container backed up and restored with rsync gives the same upper dir,
    // byte for byte, owners, modes, xattrs and whiteouts included.
    let mut cfg = DaemonConfig::for_test_dir(rig.dir());
    cfg.set_str("backup.target", &rsync_target.display().to_string());
    rig.daemon().write_config(&cfg);
    rig.daemon_mut().restart();
    rig.ctl_ok(&["backup", "run", "web1"]);
    assert!(
        send_parents(&rig, &uuid).is_empty(),
        "rsync mode drops the kept send parents"
    );
    rig.ctl_ok(&["backup", "restore", "web1", "--as", "web3"]);
    let (a, b) = (container_dir(&rig, "web2"), container_dir(&rig, "web3"));
    assert_eq!(
        manifest(&a.join("rootfs-layer")),
        manifest(&b.join("rootfs-layer"))
    );
    assert_eq!(
        std::fs::read(a.join("rootfs-layer/root/big")).unwrap(),
        std::fs::read(b.join("rootfs-layer/root/big")).unwrap()
    );

    // A copy a restore fetched, left by a killed daemon, is deleted at the next start.
    let stale = rig
        .store_root()
        .join("lxc/containers/.send-parents/.restore-web9");
    std::fs::create_dir_all(rig.sandbox().host_path(&stale)).unwrap();
    rig.sandbox().run_ok(
        "btrfs",
        &[
            "subvolume",
            "create",
            &stale.join("snapshot").display().to_string(),
        ],
    );

    // rsync cannot continue the send-mode trees (nor the other way round): refused.
    let mut cfg = DaemonConfig::for_test_dir(rig.dir());
    cfg.set_str("backup.target", &target.display().to_string());
    rig.daemon().write_config(&cfg);
    rig.daemon_mut().restart();
    assert!(!rig.sandbox().host_path(&stale).exists());
    let err = rig.ctl_err(&["backup", "run", "web1"]);
    assert!(
        err.contains("transport = \"btrfs-send\"") && err.contains("move that directory away"),
        "{err}"
    );

    // Back in send mode: a re-created web1 (another uuid) may not write into the tree.
    let mut cfg = DaemonConfig::for_test_dir(rig.dir());
    send_config(&mut cfg);
    rig.daemon().write_config(&cfg);
    rig.daemon_mut().restart();
    rig.ctl_ok(&["delete", "web1", "--force"]);
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    let err = rig.ctl_err(&["backup", "run", "web1"]);
    assert!(err.contains("another container named web1"), "{err}");
    assert_eq!(send_trees(&dir), trees, "the old trees are intact");
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".incomplete-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The old container's host-side parent went with it; the refused run kept none.
    assert!(send_parents(&rig, &uuid).is_empty());
    assert!(send_parents(&rig, &uuid_of(&rig, "web1")).is_empty());
}

#[test]
fn btrfs_send_to_a_target_that_is_not_btrfs_fails_clearly() {
    require_root();
    let work = test_tempdir("osm-backup-send-nobtrfs-");
    let mnt = work.path().join("tmpfs");
    std::fs::create_dir_all(&mnt).unwrap();
    let t = mnt.join("lxc").display().to_string();
    let rig = Rig::builder()
        .config(move |c| {
            c.set_str("backup.target", &t)
                .set_str("backup.transport", "btrfs-send");
        })
        .start();
    rig.sandbox().run_ok(
        "mount",
        &["-t", "tmpfs", "tmpfs", &mnt.display().to_string()],
    );
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    let err = rig.ctl_err(&["backup", "run", "web1"]);
    assert!(
        err.contains("not Btrfs") && err.contains("tmpfs") && err.contains("transport = \"rsync\""),
        "{err}"
    );
    let st = status_of(&rig, "web1");
    assert!(
        st["last_result"].as_str().unwrap().contains("not Btrfs"),
        "{st}"
    );
    assert!(
        std::fs::read_dir(rig.sandbox().host_path(mnt.join("lxc")))
            .unwrap()
            .next()
            .is_none(),
        "nothing was written to the target"
    );
}

#[test]
fn btrfs_send_over_ssh_receives_at_the_far_end_and_restores_from_there() {
    require_root();
    let keys = test_tempdir("osm-backup-send-ssh-");
    let kd = keys.path().to_path_buf();
    let remote = kd.join("btrfs").join("lxc");
    let rig = ssh_target_rig(&kd, &remote, "btrfs-send");
    let host = BackupHost::start(&rig, &kd);
    btrfs_target(&host._sandbox, &kd);
    rig.import_busybox_base("bb");
    busy_container(&rig, "web1");
    rig.ctl_ok(&["backup", "run", "web1"]);
    std::thread::sleep(Duration::from_millis(1100));
    attach(&rig, "web1", "echo two > /root/note2 && sync");
    let out = rig.ctl_ok(&["backup", "run", "web1"]);
    assert!(out.contains("backup verified"), "{out}");
    let dir = host
        ._sandbox
        .host_path(remote.join(host_id(&rig)).join("web1"));
    // Mirror mode keeps only the newest received tree (the next run's parent).
    let trees = send_trees(&dir);
    assert_eq!(trees.len(), 1, "{trees:?}");
    let tree = dir.join(&trees[0]).join("snapshot");
    assert_copy_matches(&rig, "web1", &tree);
    assert!(is_readonly_subvolume(&tree));
    assert!(
        rig.daemon().log().contains("parent=20"),
        "the second run was incremental"
    );
    rig.ctl_ok(&["backup", "verify", "--all"]);
    rig.ctl_ok(&["backup", "restore", "web1", "--as", "web2"]);
    assert_restored(&rig, "web2", &tree);
    assert_eq!(attach(&rig, "web2", "cat /root/note2").stdout, b"two\n");
    let parents = rig
        .sandbox()
        .host_path(rig.store_root().join("lxc/containers/.send-parents"));
    let fetched: Vec<_> = std::fs::read_dir(&parents)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".restore-"))
        .collect();
    assert!(
        fetched.is_empty(),
        "the fetched copy is deleted: {fetched:?}"
    );
    // Over the existing container too (fetched, then the journaled swap).
    attach(&rig, "web1", "echo changed > /root/note && sync");
    rig.ctl_ok(&["backup", "restore", "web1"]);
    assert_eq!(attach(&rig, "web1", "cat /root/note").stdout, b"hello\n");
    assert_eq!(
        std::fs::read_dir(&parents)
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".restore-"))
            .count(),
        0
    );
}

#[test]
fn layers_travel_to_the_target_and_a_restore_imports_a_missing_one() {
    require_root();
    let work = test_tempdir("osm-backup-layers-");
    let target = work.path().join("lxc");
    let rig = Rig::builder().backup_target(&target).start();
    rig.import_busybox_base("bb");
    // A layer from an archive: a file, and a whiteout hiding a base file.
    let tree = work.path().join("layer");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/layer-note"), "from the layer\n").unwrap();
    let st = Command::new("mknod")
        .arg(tree.join("etc/udhcpc.script"))
        .args(["c", "0", "0"])
        .status()
        .unwrap();
    assert!(st.success());
    let archive = work.path().join("layer.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    rig.ctl_ok(&[
        "layer",
        "import",
        "ly1",
        archive.to_str().unwrap(),
        "--base",
        "bb",
    ]);
    rig.ctl_ok(&["create", "web1", "--base", "bb", "--layer", "ly1"]);
    rig.ctl_ok(&["start", "web1"]);
    let check = "cat /etc/layer-note; [ -e /etc/udhcpc.script ] && echo base-file; cat /root/data";
    attach(
        &rig,
        "web1",
        "mkdir -p /root && echo mine > /root/data && sync",
    );
    let before = attach(&rig, "web1", check).stdout;
    assert_eq!(String::from_utf8_lossy(&before), "from the layer\nmine\n");

    rig.ctl_ok(&["backup", "run", "web1"]);
    let archives = |dir: &str| -> Vec<String> {
        std::fs::read_dir(target.join(dir))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let layers = archives("layers");
    assert_eq!(layers.len(), 1, "{layers:?}");
    let m: toml::Value = toml::from_str(
        &std::fs::read_to_string(target.join(host_id(&rig)).join("web1/.osm-backup.toml")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["layers"][0]["name"].as_str(), Some("ly1"), "{m}");
    assert_eq!(
        m["layers"][0]["archive"].as_str(),
        Some(format!("layers/{}", layers[0]).as_str()),
        "{m}"
    );
    assert!(
        m["layers"][0]["version"]
            .as_str()
            .unwrap()
            .starts_with("import:"),
        "{m}"
    );
    // Stored once: a second run finds it there.
    rig.ctl_ok(&["backup", "run", "web1"]);
    assert_eq!(archives("layers"), layers);

    // The container and its layer are gone; the restore brings the layer back first.
    rig.ctl_ok(&["delete", "web1", "--force"]);
    rig.ctl_ok(&["layer", "delete", "ly1"]);
    assert!(!rig.ctl_ok(&["layer", "list"]).contains("ly1"));
    rig.ctl_ok(&["backup", "restore", "web1"]);
    assert!(rig.ctl_ok(&["layer", "list"]).contains("ly1"));
    assert_eq!(attach(&rig, "web1", check).stdout, before);

    // A damaged archive is refused, and leaves no half-imported layer.
    rig.ctl_ok(&["delete", "web1", "--force"]);
    rig.ctl_ok(&["layer", "delete", "ly1"]);
    let path = target.join("layers").join(&layers[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = rig.ctl_err(&["backup", "restore", "web1"]);
    assert!(err.contains("damaged") && err.contains("ly1"), "{err}");
    assert!(!rig.ctl_ok(&["layer", "list"]).contains("ly1"));
    assert!(!rig.ctl_ok(&["list"]).contains("web1"));
}
