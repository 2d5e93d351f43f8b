//! Root integration (issue 12): backup trees carry their host's and container's
//! identity. Two hosts' daemons (two rigs: two stores, two host ids) back up to one local
//! target; a re-created container does not overwrite the old one's tree; a seed layout
//! is adopted; another host's container is restored on purpose with --from-host; verify
//! finds a file changed in a tree; a run interrupted by a killed daemon shows as failed.

use rig::{require_root, test_tempdir, wait_until, Rig};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn attach(rig: &Rig, name: &str, script: &str) -> String {
    let out = rig.attach(name, script);
    assert!(out.status.success(), "attach {script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn host_id(rig: &Rig) -> String {
    let info: serde_json::Value =
        serde_json::from_str(&rig.ctl_ok(&["host", "info", "--json"])).unwrap();
    let id = info["host_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "{info}");
    assert!(
        rig.ctl_ok(&["host", "info"]).contains(&id),
        "the plain page shows it"
    );
    id
}

fn rig_with_target(target: &Path) -> Rig {
    let rig = Rig::builder().backup_target(target).start();
    rig.import_busybox_base("bb");
    rig
}

fn manifest(tree: &Path) -> toml::Table {
    let text = std::fs::read_to_string(tree.join(".osm-backup.toml"))
        .unwrap_or_else(|e| panic!("{}: {e}", tree.display()));
    toml::from_str(&text).unwrap()
}

fn uuid_of(rig: &Rig, name: &str) -> String {
    let spec = rig
        .sandbox()
        .host_path(rig.store_root().join("lxc/containers").join(name))
        .join("container.toml");
    let t: toml::Table = toml::from_str(&std::fs::read_to_string(spec).unwrap()).unwrap();
    t["uuid"].as_str().unwrap().to_string()
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

#[test]
fn two_hosts_keep_separate_trees_and_a_recreated_container_is_refused() {
    require_root();
    let target_dir = test_tempdir("osm-backup-ident-");
    let target = target_dir.path().join("lxc");
    let a = rig_with_target(&target);
    let b = rig_with_target(&target);
    let (ida, idb) = (host_id(&a), host_id(&b));
    assert_ne!(ida, idb, "each store has its own host id");
    for (rig, text) in [(&a, "from A"), (&b, "from B")] {
        rig.ctl_ok(&["create", "web1", "--base", "bb"]);
        rig.ctl_ok(&["start", "web1"]);
        attach(rig, "web1", &format!("echo '{text}' > /root/who && sync"));
        rig.ctl_ok(&["backup", "run", "web1"]);
    }
    let (ta, tb) = (
        target.join(&ida).join("web1"),
        target.join(&idb).join("web1"),
    );
    assert_eq!(
        std::fs::read_to_string(ta.join("rootfs-layer/root/who")).unwrap(),
        "from A\n"
    );
    assert_eq!(
        std::fs::read_to_string(tb.join("rootfs-layer/root/who")).unwrap(),
        "from B\n"
    );
    let m = manifest(&ta);
    assert_eq!(m["host_id"].as_str(), Some(ida.as_str()));
    assert_eq!(
        m["container_uuid"].as_str(),
        Some(uuid_of(&a, "web1").as_str())
    );
    assert_eq!(m["base"]["name"].as_str(), Some("bb"));
    assert!(m["base"]["version"]
        .as_str()
        .unwrap()
        .starts_with("import:"));
    assert_eq!(manifest(&tb)["host_id"].as_str(), Some(idb.as_str()));
    assert!(
        !target.join("web1").exists(),
        "nothing at the old layout's place"
    );
    // The manifest is not part of the container: a second run keeps it (rsync --delete)
    // and a restore does not copy it in.
    b.ctl_ok(&["backup", "run", "web1"]);
    assert!(tb.join(".osm-backup.toml").is_file());
    assert!(tb.join(".osm-backup.files").is_file());

    assert_eq!(
        a.ctl_ok(&["backup", "list", "web1", "--from-host", &idb])
            .trim(),
        "mirror"
    );
    // B's container restored on A, on purpose: a new container with B's data.
    let err = a.ctl_err(&[
        "backup",
        "restore",
        "web1",
        "--from-host",
        "nonsense",
        "--as",
        "webb",
    ]);
    assert!(err.contains("not a host id"), "{err}");
    a.ctl_ok(&[
        "backup",
        "restore",
        "web1",
        "--from-host",
        &idb,
        "--as",
        "webb",
    ]);
    assert_eq!(attach(&a, "webb", "cat /root/who"), "from B\n");
    let restored_dir = a
        .sandbox()
        .host_path(a.store_root().join("lxc/containers/webb"));
    assert!(!restored_dir.join(".osm-backup.toml").exists());
    assert!(!restored_dir.join("rootfs-layer/.osm-backup.toml").exists());
    // A's own tree was never touched by any of that.
    assert_eq!(
        std::fs::read_to_string(ta.join("rootfs-layer/root/who")).unwrap(),
        "from A\n"
    );

    // A deletes web1 and makes a new one of that name: its backup would overwrite the
    // old customer's tree, so the run is refused and says what to do.
    a.ctl_ok(&["delete", "web1", "--force"]);
    a.ctl_ok(&["create", "web1", "--base", "bb"]);
    let err = a.ctl_err(&["backup", "run", "web1"]);
    assert!(
        err.contains("another container named web1") && err.contains("Move or delete"),
        "{err}"
    );
    assert!(status_of(&a, "web1")["last_result"]
        .as_str()
        .unwrap()
        .contains("another container"));
    assert_eq!(
        std::fs::read_to_string(ta.join("rootfs-layer/root/who")).unwrap(),
        "from A\n",
        "the old tree is intact"
    );
    // Restoring that old tree over the new container is refused too.
    let err = a.ctl_err(&["backup", "restore", "web1"]);
    assert!(err.contains("--as"), "{err}");
    // What the message says works: move the old tree away, and the run goes through.
    std::fs::rename(&ta, target.join(&ida).join("web1.old")).unwrap();
    a.ctl_ok(&["backup", "run", "web1"]);
    assert_eq!(
        manifest(&ta)["container_uuid"].as_str(),
        Some(uuid_of(&a, "web1").as_str())
    );
}

#[test]
fn a_seed_layout_is_adopted_and_verify_finds_a_changed_file() {
    require_root();
    let target_dir = test_tempdir("osm-backup-seed-");
    let target = target_dir.path().join("lxc");
    let rig = rig_with_target(&target);
    let id = host_id(&rig);
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["create", "web2", "--base", "bb"]);
    rig.ctl_ok(&["start", "web1"]);
    attach(&rig, "web1", "echo seed > /root/note && sync");
    rig.ctl_ok(&["backup", "run", "--all"]);
    // Make it look as the previous release left it: `<target>/<name>/`, no manifest.
    let tree = target.join(&id).join("web1");
    let seed = target.join("web1");
    std::fs::rename(&tree, &seed).unwrap();
    std::fs::remove_file(seed.join(".osm-backup.toml")).unwrap();
    std::fs::remove_file(seed.join(".osm-backup.files")).unwrap();
    // Another container's seed tree of the name web2 (another MAC): left alone.
    std::fs::remove_dir_all(target.join(&id).join("web2")).unwrap();
    let other = target.join("web2");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("container.toml"),
        "name = \"web2\"\nbase = \"bb\"\nmac = \"02:00:00:00:00:01\"\ncreated = 1\n",
    )
    .unwrap();
    // Before the next run, `backup list` and restore still find the seed tree.
    assert_eq!(rig.ctl_ok(&["backup", "list", "web1"]).trim(), "mirror");
    rig.ctl_ok(&["backup", "run", "--all"]);
    assert!(!seed.exists(), "the seed tree was moved into place");
    assert_eq!(
        std::fs::read_to_string(tree.join("rootfs-layer/root/note")).unwrap(),
        "seed\n"
    );
    assert_eq!(manifest(&tree)["host_id"].as_str(), Some(id.as_str()));
    assert!(other.join("container.toml").is_file(), "not ours: left");
    assert!(target.join(&id).join("web2/.osm-backup.toml").is_file());

    rig.ctl_ok(&["backup", "verify", "--all"]);
    rig.ctl_ok(&["backup", "verify", "web1"]);
    // Bit rot on the backup host: same size, same time, other bytes.
    let note = tree.join("rootfs-layer/root/note");
    let mtime = std::fs::metadata(&note).unwrap().modified().unwrap();
    std::fs::write(&note, "SEED\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&note)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let err = rig.ctl_err(&["backup", "verify", "web1"]);
    assert!(
        err.contains("rootfs-layer/root/note: content changed"),
        "{err}"
    );
    // A file added behind the daemon's back is named too.
    std::fs::write(note, "seed\n").unwrap();
    std::fs::write(tree.join("rootfs-layer/root/extra"), "x").unwrap();
    let err = rig.ctl_err(&["backup", "verify", "--all"]);
    assert!(err.contains("root/extra"), "{err}");
    let err = rig.ctl_err(&["backup", "verify", "nosuch"]);
    assert!(err.contains("no manifest"), "{err}");
}

#[test]
fn a_run_interrupted_by_a_killed_daemon_is_recorded_as_failed() {
    require_root();
    let target_dir = test_tempdir("osm-backup-killed-");
    let target = target_dir.path().join("lxc");
    let mut rig = rig_with_target(&target);
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    let dir: PathBuf = rig
        .sandbox()
        .host_path(rig.store_root().join("lxc/containers/web1"));
    let srv = dir.join("rootfs-layer/srv");
    std::fs::create_dir_all(&srv).unwrap();
    // Enough data that the copy is still running when the daemon is killed.
    for i in 0..4 {
        let mut big = vec![0u8; 64 << 20];
        let mut x: u64 = 0x9e3779b97f4a7c15 + i;
        for chunk in big.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        std::fs::write(srv.join(format!("big{i}")), &big).unwrap();
    }
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
    rig.daemon_mut().kill9();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    // rsync may outlive the daemon for a moment; the next start cleans up.
    let t = target.display().to_string();
    assert!(
        wait_until(Duration::from_secs(60), || !rig::procs::all_pids()
            .into_iter()
            .any(
                |p| rig::procs::cmdline(p).is_some_and(|c| c.contains("rsync") && c.contains(&t))
            )),
        "the orphaned rsync ends"
    );
    rig.daemon_mut().start();
    let st = status_of(&rig, "web1");
    assert!(
        st["last_result"].as_str().unwrap().contains("interrupted"),
        "{st}"
    );
    assert!(st["last_attempt"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["last_success"], 0, "{st}");
    assert!(!staging.exists(), "the backup snapshot is dropped");
    // The next run finishes the tree the interrupted one began.
    rig.ctl_ok(&["backup", "run", "web1"]);
    assert_eq!(status_of(&rig, "web1")["last_result"], "ok");
    rig.ctl_ok(&["backup", "verify", "web1"]);
}

/// The steps of a restore over a container where the daemon can be made to die
/// (`OSM_HOSTD_RESTORE_CRASH_AT`), in order.
const RESTORE_STEPS: [&str; 7] = [
    "journal",
    "stopped",
    "safety",
    "staged",
    "moved",
    "exchanged",
    "cleaned",
];

#[test]
fn a_daemon_killed_at_any_step_of_a_restore_over_a_container_finishes_or_rolls_back() {
    require_root();
    let target_dir = test_tempdir("osm-backup-crash-");
    let target = target_dir.path().join("lxc");
    let mut rig = rig_with_target(&target);
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["start", "web1"]);
    attach(
        &rig,
        "web1",
        "echo old > /root/v && rm /etc/udhcpc.script && sync",
    );
    rig.ctl_ok(&["backup", "run", "web1"]);
    attach(
        &rig,
        "web1",
        "echo new > /root/v && echo x > /root/added && sync",
    );
    let snap = rig.ctl_ok(&["snapshot", "create", "web1"]);
    let snap = snap.trim().rsplit(' ').next().unwrap().to_string();
    let dir = rig
        .sandbox()
        .host_path(rig.store_root().join("lxc/containers/web1"));
    for step in RESTORE_STEPS {
        rig.daemon_mut().stop();
        rig.daemon_mut()
            .set_env(osm_hostd::engine::RESTORE_CRASH_ENV, Some(step));
        rig.daemon_mut().start();
        let out = rig.ctl(&["backup", "restore", "web1"]);
        assert!(!out.status.success(), "{step}: the daemon should have died");
        assert!(
            wait_until(Duration::from_secs(10), || !rig.daemon_mut().is_running()),
            "{step}: daemon still running"
        );
        rig.daemon_mut()
            .set_env(osm_hostd::engine::RESTORE_CRASH_ENV, None);
        rig.daemon_mut().start();

        let v = std::fs::read_to_string(dir.join("rootfs-layer/root/v")).unwrap();
        let restored = v == "old\n";
        if ["moved", "exchanged", "cleaned"].contains(&step) {
            assert!(
                restored,
                "{step}: the restore was finished (v = {v:?}); {}",
                rig.daemon().log_tail(30)
            );
            assert!(!dir.join("rootfs-layer/root/added").exists(), "{step}");
        } else {
            assert_eq!(v, "new\n", "{step}: the restore was rolled back");
            assert!(dir.join("rootfs-layer/root/added").exists(), "{step}");
        }
        assert!(
            wait_until(Duration::from_secs(10), || rig.lxc_state("web1")
                == "RUNNING"),
            "{step}: the container runs again"
        );
        assert_eq!(
            attach(&rig, "web1", "cat /root/v"),
            v,
            "{step}: seen inside"
        );
        assert!(
            dir.join(".snapshots").join(&snap).join("snapshot").is_dir(),
            "{step}: the container's snapshots are kept"
        );
        let leftovers: Vec<String> = std::fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "web1" && !n.starts_with(".pre-restore-web1-"))
            .collect();
        assert!(leftovers.is_empty(), "{step}: {leftovers:?}");
        if restored {
            attach(
                &rig,
                "web1",
                "echo new > /root/v && echo x > /root/added && sync",
            );
        }
    }
    // Uninterrupted, it goes through.
    rig.ctl_ok(&["backup", "restore", "web1"]);
    assert_eq!(attach(&rig, "web1", "cat /root/v; ls /root"), "old\nv\n");
    rig.ctl_ok(&["stop", "web1", "--force"]);
}

/// Disaster recovery drill: host A backs up; host B (a new store, no bases) brings back
/// all of A's containers from the target alone: running, with their data, addresses,
/// autostart and boot settings.
#[test]
fn a_new_host_without_bases_restores_every_container_of_a_lost_host() {
    require_root();
    let target_dir = test_tempdir("osm-backup-dr-");
    let target = target_dir.path().join("lxc");
    let a = rig_with_target(&target);
    let ida = host_id(&a);
    a.ctl_ok(&["create", "web1", "--base", "bb", "--autostart"]);
    a.ctl_ok(&[
        "create",
        "web2",
        "--base",
        "bb",
        "--autostart",
        "last-state",
        "--boot-priority",
        "5",
        "--ip",
        "10.0.3.50",
    ]);
    for n in ["web1", "web2"] {
        a.ctl_ok(&["start", n]);
        attach(
            &a,
            n,
            &format!("echo 'data of {n}' > /root/data && rm /etc/udhcpc.script && sync"),
        );
    }
    a.ctl_ok(&["backup", "run", "--all"]);
    let bases: Vec<String> = std::fs::read_dir(target.join("bases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(bases.len(), 1, "one archive for the one base: {bases:?}");
    let archive = format!("bases/{}", bases[0]);
    assert!(archive.ends_with(".tar.zst"), "{archive}");
    let m = manifest(&target.join(&ida).join("web1"));
    assert_eq!(m["base"]["archive"].as_str(), Some(archive.as_str()));
    // Written once: a second run neither rewrites nor adds one.
    let before = std::fs::metadata(target.join(&archive))
        .unwrap()
        .modified()
        .unwrap();
    a.ctl_ok(&["backup", "run", "--all"]);
    assert_eq!(std::fs::read_dir(target.join("bases")).unwrap().count(), 1);
    assert_eq!(
        std::fs::metadata(target.join(&archive))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    let info_a: Vec<serde_json::Value> = ["web1", "web2"].iter().map(|n| a.info_json(n)).collect();
    drop(a); // host A is gone

    let b = Rig::builder().backup_target(&target).start();
    assert!(b
        .ctl_ok(&["base", "list"])
        .lines()
        .all(|l| !l.starts_with("bb")));
    let err = b.ctl_err(&["backup", "restore", "--all", "--from-host", &host_id(&b)]);
    assert!(err.contains("no backups of host"), "{err}");
    // A damaged archive is refused before anything is imported or created.
    let good = target.join("good-archive");
    std::fs::rename(target.join(&archive), &good).unwrap();
    std::fs::write(target.join(&archive), b"not the base").unwrap();
    let err = b.ctl_err(&["backup", "restore", "--all", "--from-host", &ida]);
    assert!(err.contains("is damaged"), "{err}");
    assert!(
        !b.ctl_ok(&["list"]).contains("web1"),
        "nothing half-restored"
    );
    std::fs::rename(&good, target.join(&archive)).unwrap();
    b.ctl_ok(&["backup", "restore", "--all", "--from-host", &ida]);
    assert!(
        b.ctl_ok(&["base", "list"]).contains("bb"),
        "the base came from the target"
    );
    for (n, was) in ["web1", "web2"].iter().zip(&info_a) {
        let now = b.info_json(n);
        assert_eq!(now["state"], "running", "{now}");
        for key in ["ipv4_address", "autostart_policy", "boot_priority", "base"] {
            assert_eq!(now[key], was[key], "{n}: {key}: {now} vs {was}");
        }
        assert_eq!(
            attach(
                &b,
                n,
                "cat /root/data; [ -e /etc/udhcpc.script ] && echo resurrected; true"
            ),
            format!("data of {n}\n")
        );
    }
    // Run again: both exist now, so nothing is touched and that is said.
    b.ctl_ok(&["backup", "restore", "--all", "--from-host", &ida]);
    // B's own backups go to its own directory; A's trees stay as they were.
    b.ctl_ok(&["backup", "run", "--all"]);
    assert!(target
        .join(host_id(&b))
        .join("web1/.osm-backup.toml")
        .is_file());
    assert_eq!(
        manifest(&target.join(&ida).join("web1"))["host_id"].as_str(),
        Some(ida.as_str())
    );
    for n in ["web1", "web2"] {
        b.ctl_ok(&["stop", n, "--force"]);
    }
}

#[test]
fn a_restore_onto_another_base_of_the_same_name_is_refused() {
    require_root();
    let target_dir = test_tempdir("osm-backup-ident-");
    let target = target_dir.path().join("lxc");
    let rig = rig_with_target(&target);
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["start", "web1"]);
    attach(&rig, "web1", "echo kept > /root/data && sync");
    rig.ctl_ok(&["backup", "run", "web1"]);
    rig.ctl_ok(&["delete", "web1", "--force"]);
    rig.ctl_ok(&["base", "delete", "bb"]);

    // Another image under the same name: the busybox tree plus one more file.
    let scratch = test_tempdir("osm-other-bb-");
    let other = scratch.path().join("other.tar");
    std::fs::copy(rig.busybox_tar(), &other).unwrap();
    std::fs::write(scratch.path().join("extra"), "not the backed-up base\n").unwrap();
    let out = std::process::Command::new("tar")
        .args([
            "--append",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "-f",
        ])
        .arg(&other)
        .arg("-C")
        .arg(scratch.path())
        .arg("extra")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    rig.ctl_ok(&["base", "import", "bb", &other.to_string_lossy()]);
    // Backing up a container on it stores its archive, so the host knows what it is.
    rig.ctl_ok(&["create", "web2", "--base", "bb"]);
    rig.ctl_ok(&["backup", "run", "web2"]);

    let err = rig.ctl_err(&["backup", "restore", "web1"]);
    assert!(
        err.contains("base bb on this host is not the one this backup was made on")
            && err.contains("Delete this host's base bb"),
        "{err}"
    );
    let list = rig.ctl_ok(&["list"]);
    assert!(!list.contains("web1"), "nothing was created: {list}");
    assert!(list.contains("web2"), "{list}");

    // With that base gone, the restore imports the backed-up one and brings web1 back.
    rig.ctl_ok(&["delete", "web2", "--force"]);
    rig.ctl_ok(&["base", "delete", "bb"]);
    rig.ctl_ok(&["backup", "restore", "web1"]);
    rig.ctl_ok(&["start", "web1"]);
    assert_eq!(attach(&rig, "web1", "cat /root/data"), "kept\n");
    assert!(
        !attach(&rig, "web1", "ls /").contains("extra"),
        "web1 sits on the base it was backed up on"
    );
}
