//! Root integration of snapshots: the daemon's snapshots and snapper's are the same
//! snapshots, cleanup agrees with `snapper cleanup`, and restores bring data back and
//! survive a daemon killed at any step.

use osm_hostd::snapper::layout;
use osm_hostd::snapper::time::{format_date, local_tm, utc_tm};
use osm_hostd::snapper::{self, SnapshotInfo, SnapshotKind};
use rig::{require_root, wait_until, DaemonConfig, Rig};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

fn container_dir(rig: &Rig, name: &str) -> PathBuf {
    rig.sandbox()
        .host_path(rig.store_root().join("lxc/containers").join(name))
}

/// `snapper --no-dbus ARGS` inside the sandbox, with the rig's snapper config dir and
/// defaults file bound over snapper's fixed paths in a throwaway mount namespace.
fn snapper_cmd(rig: &Rig, args: &[&str]) -> Output {
    snapper_cmd_env(rig, &[], args)
}

fn snapper_cmd_env(rig: &Rig, env: &[(&str, &str)], args: &[&str]) -> Output {
    let cfg = rig.dir().join("snapper/configs");
    let def = rig.dir().join("snapper/default");
    let script =
        "mount --bind \"$0\" /etc/snapper/configs && mount --bind \"$1\" /etc/default/snapper \
                  && shift 2 && exec snapper --no-dbus \"$@\"";
    rig.in_sandbox("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .arg(&cfg)
        .arg(&def)
        .arg("_")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run snapper")
}

fn snapper_ok(rig: &Rig, args: &[&str]) -> String {
    let out = snapper_cmd(rig, args);
    assert!(out.status.success(), "snapper {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn snapper_list(rig: &Rig, name: &str) -> Vec<serde_json::Value> {
    let text = snapper_ok(rig, &["--utc", "--jsonout", "-c", name, "list"]);
    let v: serde_json::Value = serde_json::from_str(&text).expect("snapper --jsonout");
    v[name]
        .as_array()
        .expect("snapper list array")
        .iter()
        .filter(|s| s["number"] != 0)
        .cloned()
        .collect()
}

fn daemon_list(rig: &Rig, name: &str) -> Vec<serde_json::Value> {
    let text = rig.ctl_ok(&["snapshot", "list", name, "--json"]);
    serde_json::from_str::<serde_json::Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn numbers(list: &[serde_json::Value], key: &str) -> Vec<u64> {
    list.iter().map(|s| s[key].as_u64().unwrap()).collect()
}

fn in_container(rig: &Rig, name: &str, script: &str) -> String {
    let out = rig.attach(name, script);
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn snapper_sees_the_daemons_snapshots_and_the_daemon_sees_snappers() {
    require_root();
    let rig = Rig::new();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["create", "web2", "--base", "bb"]);

    let config = std::fs::read_to_string(rig.dir().join("snapper/configs/web1")).unwrap();
    let dir = rig.store_root().join("lxc/containers/web1");
    assert!(
        config.contains(&format!("SUBVOLUME=\"{}\"", dir.display())),
        "{config}"
    );
    assert!(config.contains("TIMELINE_CREATE=\"no\"") && config.contains("NUMBER_CLEANUP=\"no\""));
    let defaults = std::fs::read_to_string(rig.dir().join("snapper/default")).unwrap();
    assert!(
        defaults.contains("SNAPPER_CONFIGS=\"web1 web2\""),
        "{defaults}"
    );

    let n1 = rig.ctl_ok(&[
        "snapshot",
        "create",
        "web1",
        "--description",
        "before <upgrade> & über",
        "--cleanup",
        "number",
        "--userdata",
        "important=yes",
        "--userdata",
        "ticket=42",
    ]);
    assert_eq!(n1.trim(), "1");
    assert_eq!(rig.ctl_ok(&["snapshot", "create", "web1"]).trim(), "2");
    let by_snapper = snapper_ok(
        &rig,
        &[
            "-c",
            "web1",
            "create",
            "--print-number",
            "--description",
            "by snapper",
            "--cleanup-algorithm",
            "timeline",
            "--userdata",
            "k=v",
        ],
    );
    assert_eq!(by_snapper.trim(), "3");

    let ours = daemon_list(&rig, "web1");
    let theirs = snapper_list(&rig, "web1");
    assert_eq!(numbers(&ours, "num"), vec![1, 2, 3]);
    assert_eq!(numbers(&theirs, "number"), vec![1, 2, 3]);
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o["type"], t["type"], "{o} {t}");
        assert_eq!(o["description"], t["description"], "{o} {t}");
        assert_eq!(o["cleanup"], t["cleanup"], "{o} {t}");
        let date = format_date((o["date"].as_u64().unwrap() / 1_000_000) as i64);
        assert_eq!(t["date"], date.as_str(), "{o} {t}");
        let theirs_ud = if t["userdata"].is_null() {
            serde_json::json!({})
        } else {
            t["userdata"].clone()
        };
        assert_eq!(o["userdata"], theirs_ud, "{o} {t}");
    }
    assert_eq!(ours[0]["userdata"]["created_by"], "osm-hostd");
    assert_eq!(ours[0]["description"], "before <upgrade> & über");

    // info shows the count; snapper deletes a daemon snapshot like its own.
    let info: serde_json::Value =
        serde_json::from_str(&rig.ctl_ok(&["info", "web1", "--json"])).unwrap();
    assert_eq!(info["snapshot_count"], 3);
    assert!(info["newest_snapshot"].as_u64().unwrap() > 0);
    snapper_ok(&rig, &["-c", "web1", "delete", "2"]);
    assert_eq!(numbers(&daemon_list(&rig, "web1"), "num"), vec![1, 3]);
    assert!(!container_dir(&rig, "web1").join(".snapshots/2").exists());
    rig.ctl_ok(&["snapshot", "delete", "web1", "3"]);
    assert_eq!(numbers(&snapper_list(&rig, "web1"), "number"), vec![1]);

    // Numbers are never reused, even after the top snapshot is gone.
    assert_eq!(rig.ctl_ok(&["snapshot", "create", "web1"]).trim(), "4");

    // Refusals: unknown container, unknown snapshot, bad cleanup.
    assert_eq!(
        rig.ctl(&["snapshot", "list", "nope"]).status.code(),
        Some(3)
    );
    assert_eq!(
        rig.ctl(&["snapshot", "delete", "web1", "99"]).status.code(),
        Some(3)
    );
    assert_eq!(
        rig.ctl(&["snapshot", "restore", "web1", "99"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        rig.ctl_as_nobody(&["snapshot", "create", "web1"])
            .status
            .code(),
        Some(7)
    );

    // Deleting the container removes its snapper config and list entry, not others'.
    rig.ctl_ok(&["delete", "web1"]);
    assert!(!rig.dir().join("snapper/configs/web1").exists());
    let defaults = std::fs::read_to_string(rig.dir().join("snapper/default")).unwrap();
    assert!(defaults.contains("SNAPPER_CONFIGS=\"web2\""), "{defaults}");
}

#[test]
fn a_snapshot_below_the_free_space_floor_cleans_up_then_is_refused_with_the_numbers() {
    require_root();
    let limits = |c: &mut DaemonConfig| {
        c.set("snapshots.number.limit", "0")
            .set("snapshots.number.min_age", "0");
    };
    let mut rig = Rig::builder()
        .config(move |c| {
            limits(c);
            c.set_str("snapshots.min_free", "0");
        })
        .start();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["snapshot", "create", "web1", "--cleanup", "number"]);
    rig.ctl_ok(&["snapshot", "create", "web1", "--cleanup", "number"]);
    rig.ctl_ok(&["snapshot", "create", "web1", "--description", "kept"]);

    let mut config = DaemonConfig::for_test_dir(rig.dir());
    limits(&mut config);
    config.set_str("snapshots.min_free", "1T");
    rig.daemon_mut().stop();
    rig.daemon().write_config(&config);
    rig.daemon_mut().start();
    let out = rig.ctl(&["snapshot", "create", "web1"]);
    assert_eq!(out.status.code(), Some(8), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("free") && err.contains("1T"), "{err}");
    // Cleanup ran first: the number snapshots went, the one without cleanup stayed.
    assert_eq!(numbers(&daemon_list(&rig, "web1"), "num"), vec![3]);
}

#[test]
fn cleanup_on_demand_deletes_what_the_limits_allow_and_snapper_agrees() {
    require_root();
    let rig = Rig::builder()
        .config(|c| {
            c.set("snapshots.number.limit", "2")
                .set("snapshots.number.limit_important", "1")
                .set("snapshots.number.min_age", "0")
                .set_str("snapshots.min_free", "0");
        })
        .start();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&[
        "snapshot",
        "create",
        "web1",
        "--cleanup",
        "number",
        "--userdata",
        "important=yes",
    ]);
    for _ in 0..3 {
        rig.ctl_ok(&["snapshot", "create", "web1", "--cleanup", "number"]);
    }
    rig.ctl_ok(&["snapshot", "create", "web1", "--description", "manual"]);
    let out = rig.ctl_ok(&["snapshot", "cleanup", "web1"]);
    assert_eq!(out.trim(), "deleted snapshots 2 of web1");
    assert_eq!(numbers(&daemon_list(&rig, "web1"), "num"), vec![1, 3, 4, 5]);
    assert_eq!(
        numbers(&snapper_list(&rig, "web1"), "number"),
        vec![1, 3, 4, 5]
    );
    assert_eq!(
        rig.ctl_ok(&["snapshot", "cleanup", "web1"]).trim(),
        "nothing to clean up in web1"
    );
    assert_eq!(
        rig.ctl_as_nobody(&["snapshot", "cleanup", "web1"])
            .status
            .code(),
        Some(7)
    );
}

#[test]
fn scheduled_timeline_snapshots_follow_the_host_default_and_the_container_override() {
    require_root();
    let mut rig = Rig::builder()
        .config(|c| {
            c.set("snapshots.interval", "2")
                .set_str("snapshots.min_free", "0");
        })
        .start();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["create", "web2", "--base", "bb"]);
    rig.daemon_mut().stop();
    let spec = container_dir(&rig, "web2").join("container.toml");
    let mut text = std::fs::read_to_string(&spec).unwrap();
    text.push_str("\n[snapshots]\ntimeline_create = false\n");
    std::fs::write(&spec, text).unwrap();
    rig.daemon_mut().start();
    assert!(
        wait_until(Duration::from_secs(10), || !daemon_list(&rig, "web1")
            .is_empty()),
        "a scheduled snapshot of web1 appears"
    );
    let first = &daemon_list(&rig, "web1")[0];
    assert_eq!(first["cleanup"], "timeline");
    assert_eq!(first["description"], "timeline");
    std::thread::sleep(Duration::from_secs(3));
    assert!(daemon_list(&rig, "web2").is_empty(), "web2 opted out");
}

/// Writes a handwritten snapshot (read-only subvolume plus info.xml) inside the sandbox.
fn handmade(rig: &Rig, name: &str, info: &SnapshotInfo) {
    let dir = rig.store_root().join("lxc/containers").join(name);
    let ndir = dir.join(".snapshots").join(info.num.to_string());
    let out = rig
        .in_sandbox("sh")
        .args([
            "-c",
            "mkdir \"$1\" && btrfs -q subvolume snapshot -r \"$0\" \"$1/snapshot\"",
        ])
        .arg(&dir)
        .arg(&ndir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let host = rig.sandbox().host_path(&dir);
    layout::write_info(&host, info).unwrap();
}

fn surviving(rig: &Rig, name: &str) -> Vec<u32> {
    let dir = container_dir(rig, name);
    layout::read_snapshots(&dir, &|p: &Path| p.join("info.xml").exists() || p.is_dir())
        .unwrap()
        .iter()
        .map(|s| s.num)
        .collect()
}

/// 40 handwritten snapshots over ~15 months, dates rising with numbers: timeline ones a
/// few minutes to weeks apart, number ones (every fourth important), a pre/post pair
/// whose halves have different cleanup values, one without cleanup, and two too young
/// to delete.
fn oracle_set(now: i64, base: i64) -> Vec<SnapshotInfo> {
    // Fixed dates (so the periods are the same on every run), except the young two.
    let mut date = base;
    let steps = [
        3 * 3600,
        40 * 60,
        26 * 3600,
        9 * 86_400,
        2 * 3600,
        31 * 86_400,
        5 * 3600,
        20 * 60,
        4 * 86_400,
        13 * 3600,
        45 * 86_400,
        7 * 3600,
    ];
    let mut all = Vec::new();
    for num in 1..=40u32 {
        date += steps[num as usize % steps.len()];
        if num == 39 {
            date = now - 600;
        }
        let mut info = SnapshotInfo::single(num, date.min(now - 60));
        info.cleanup = match num % 5 {
            0 | 3 => "number".into(),
            // 39 is young: without a cleanup value it cannot make the timeline depend
            // on the time of day the test runs.
            4 if num == 24 || num == 39 => String::new(),
            _ => "timeline".into(),
        };
        if num % 4 == 0 {
            info.userdata.insert("important".into(), "yes".into());
        }
        if num == 10 {
            info.kind = SnapshotKind::Pre;
        }
        if num == 11 {
            info.kind = SnapshotKind::Post;
            info.pre_num = Some(10);
        }
        all.push(info);
    }
    all
}

fn handmade_set(rig: &Rig, name: &str, now: i64) -> Vec<SnapshotInfo> {
    let all = oracle_set(now, ORACLE_BASE);
    for info in &all {
        handmade(rig, name, info);
    }
    assert_eq!(surviving(rig, name).len(), 40);
    all
}

/// 2025-08-04 00:00:00 UTC: with this start the set is cleaned differently in UTC and
/// in EST5 (checked below), so the zone comparison is not vacuous.
const ORACLE_BASE: i64 = 1_754_265_600;

const ORACLE_NUMBER: snapper::NumberLimits = snapper::NumberLimits {
    limit: 4,
    limit_important: 2,
    min_age: 1800,
};
const ORACLE_TIMELINE: snapper::TimelineLimits = snapper::TimelineLimits {
    hourly: 3,
    daily: 3,
    weekly: 2,
    monthly: 2,
    yearly: 1,
    min_age: 3600,
};

fn kept(all: &[u32], deleted: &[u32]) -> Vec<u32> {
    all.iter()
        .copied()
        .filter(|n| !deleted.contains(n))
        .collect()
}

/// The oracle: the same snapshot set cleaned by the daemon's algorithms and by
/// `snapper cleanup number|timeline` leaves the same numbers, in the system's time zone
/// and in another one (snapper's timeline uses the local time of its process).
#[test]
fn cleanup_agrees_with_snapper_cleanup() {
    require_root();
    let rig = Rig::builder()
        .config(|c| {
            c.set("snapshots.number.limit", "4")
                .set("snapshots.number.limit_important", "2")
                .set("snapshots.number.min_age", "1800")
                .set("snapshots.timeline.hourly", "3")
                .set("snapshots.timeline.daily", "3")
                .set("snapshots.timeline.weekly", "2")
                .set("snapshots.timeline.monthly", "2")
                .set("snapshots.timeline.yearly", "1")
                .set("snapshots.timeline.min_age", "3600");
        })
        .start();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["create", "web2", "--base", "bb"]);
    let now = osm_hostd::fsutil::now_secs() as i64;
    let set1 = handmade_set(&rig, "web1", now);
    let set2 = handmade_set(&rig, "web2", now);
    let all: Vec<u32> = (1..=40).collect();

    // Number, then timeline on what is left, in the system's zone.
    let ours_number = snapper::number_cleanup(&set1, &ORACLE_NUMBER, now);
    assert!(!ours_number.is_empty());
    snapper_ok(&rig, &["-c", "web1", "cleanup", "number"]);
    let after_number = kept(&all, &ours_number);
    assert_eq!(
        surviving(&rig, "web1"),
        after_number,
        "number cleanup differs from snapper's"
    );
    let remaining: Vec<SnapshotInfo> = set1
        .into_iter()
        .filter(|s| after_number.contains(&s.num))
        .collect();
    let ours_timeline = snapper::timeline_cleanup(&remaining, &ORACLE_TIMELINE, now, &local_tm);
    assert!(!ours_timeline.is_empty());
    snapper_ok(&rig, &["-c", "web1", "cleanup", "timeline"]);
    assert_eq!(
        surviving(&rig, "web1"),
        kept(&after_number, &ours_timeline),
        "timeline cleanup differs from snapper's"
    );

    // Timeline alone in a fixed zone five hours behind UTC.
    let est = |s: i64| utc_tm(s - 5 * 3600);
    let ours_est = snapper::timeline_cleanup(&set2, &ORACLE_TIMELINE, now, &est);
    let ours_utc = snapper::timeline_cleanup(&set2, &ORACLE_TIMELINE, now, &utc_tm);
    assert_ne!(
        ours_est, ours_utc,
        "this set is cleaned differently in the two zones"
    );
    let out = snapper_cmd_env(
        &rig,
        &[("TZ", "EST5")],
        &["-c", "web2", "cleanup", "timeline"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        surviving(&rig, "web2"),
        kept(&all, &ours_est),
        "timeline cleanup in EST5 differs"
    );
}

fn char_dev(path: &Path) -> bool {
    path.symlink_metadata()
        .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// Puts the container in the "before" state and takes snapshot `num` of it.
fn prepare_restore_case(rig: &Rig, name: &str) -> u32 {
    in_container(
        rig,
        name,
        "echo old > /root/changed && echo keep > /root/deleted && rm /bin/vi && sync",
    );
    let num: u32 = rig
        .ctl_ok(&["snapshot", "create", name, "--description", "good"])
        .trim()
        .parse()
        .unwrap();
    in_container(
        rig,
        name,
        "echo new > /root/changed && rm /root/deleted && echo x > /root/added && rm /bin/od \
         && echo back > /bin/vi && sync",
    );
    num
}

fn assert_restored(rig: &Rig, name: &str) {
    let upper = container_dir(rig, name).join("rootfs-layer");
    assert_eq!(
        std::fs::read_to_string(upper.join("root/changed")).unwrap(),
        "old\n"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("root/deleted")).unwrap(),
        "keep\n"
    );
    assert!(!upper.join("root/added").exists(), "new files are gone");
    assert!(
        char_dev(&upper.join("bin/vi")),
        "the whiteout of the snapshot is back"
    );
    assert!(!upper.join("bin/od").exists(), "the later whiteout is gone");
}

fn assert_unrestored(rig: &Rig, name: &str) {
    let upper = container_dir(rig, name).join("rootfs-layer");
    assert_eq!(
        std::fs::read_to_string(upper.join("root/changed")).unwrap(),
        "new\n"
    );
    assert!(upper.join("root/added").exists());
    assert!(char_dev(&upper.join("bin/od")));
}

#[test]
fn restore_brings_files_and_whiteouts_back_and_keeps_every_snapshot() {
    require_root();
    let rig = Rig::new();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["start", "web1"]);
    let good = prepare_restore_case(&rig, "web1");
    let later: u32 = rig
        .ctl_ok(&["snapshot", "create", "web1"])
        .trim()
        .parse()
        .unwrap();

    rig.ctl_ok(&["snapshot", "restore", "web1", &good.to_string()]);
    assert_restored(&rig, "web1");
    assert_eq!(
        rig.lxc_state("web1"),
        "RUNNING",
        "a running container runs again"
    );
    // Seen from inside: the restored files, the base file deleted then is deleted again.
    assert_eq!(
        in_container(&rig, "web1", "cat /root/changed /root/deleted"),
        "old\nkeep\n"
    );
    in_container(
        &rig,
        "web1",
        "test ! -e /root/added && test ! -e /bin/vi && test -e /bin/od",
    );

    let list = daemon_list(&rig, "web1");
    let nums = numbers(&list, "num");
    assert_eq!(nums.len(), 3, "{list:?}");
    assert!(nums.contains(&u64::from(good)) && nums.contains(&u64::from(later)));
    let safety = list.last().unwrap();
    assert_eq!(safety["userdata"]["restore_of"], good.to_string());
    assert_eq!(safety["cleanup"], "");
    assert_eq!(numbers(&snapper_list(&rig, "web1"), "number"), nums);
    let dir = container_dir(&rig, "web1");
    // work/ was emptied; the restarted overlay mount made only its own work/work again.
    let work: Vec<String> = std::fs::read_dir(dir.join("work"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(work.iter().all(|n| n == "work" || n == "index"), "{work:?}");
    assert_eq!(dir.metadata().unwrap().ino(), 256);
    let containers = dir.parent().unwrap().to_path_buf();
    let names: Vec<String> = std::fs::read_dir(&containers)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["web1".to_string()],
        "nothing of the restore is left"
    );

    // Restoring the safety snapshot undoes the restore.
    rig.ctl_ok(&["snapshot", "restore", "web1", &safety["num"].to_string()]);
    assert_unrestored(&rig, "web1");
    rig.ctl_ok(&["stop", "web1", "--force"]);
}

#[test]
fn a_restore_while_another_operation_runs_is_refused_as_busy() {
    require_root();
    let rig = Rig::new();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    let n = rig.ctl_ok(&["snapshot", "create", "web1"]);
    rig.ctl_ok(&["start", "web1"]);
    // A stopped init cannot shut down cleanly, so `stop --timeout 4` holds the
    // container for four seconds before killing it.
    let info: serde_json::Value =
        serde_json::from_str(&rig.ctl_ok(&["info", "web1", "--json"])).unwrap();
    let pid = info["init_pid"].to_string();
    let out = rig
        .in_sandbox("kill")
        .args(["-STOP", &pid])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stopper = rig
        .ctl_command(&["stop", "web1", "--timeout", "4"])
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        let info: serde_json::Value =
            serde_json::from_str(&rig.ctl_ok(&["info", "web1", "--json"])).unwrap();
        info["state"] == "stopping"
    }));
    let out = rig.ctl(&["snapshot", "restore", "web1", n.trim()]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("busy") && err.contains("stop"), "{err}");
    assert_eq!(
        rig.ctl(&["snapshot", "create", "web1"]).status.code(),
        Some(6)
    );
    let stopped = stopper.wait_with_output().unwrap();
    assert!(stopped.status.success(), "{stopped:?}");
    // Once the stop is done, the restore goes through.
    rig.ctl_ok(&["snapshot", "restore", "web1", n.trim()]);
}

const STEPS: [&str; 7] = osm_hostd::engine::RESTORE_CRASH_STEPS;

#[test]
fn a_daemon_killed_at_any_restore_step_finishes_or_rolls_back() {
    require_root();
    let mut rig = Rig::new();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["start", "web1"]);
    let good = prepare_restore_case(&rig, "web1");
    for step in STEPS {
        let before = numbers(&daemon_list(&rig, "web1"), "num");
        rig.kill_daemon_at(step, &["snapshot", "restore", "web1", &good.to_string()]);

        let after = numbers(&daemon_list(&rig, "web1"), "num");
        assert!(
            before.iter().all(|n| after.contains(n)),
            "{step}: snapshots lost: {before:?} -> {after:?}"
        );
        let dir = container_dir(&rig, "web1");
        assert!(dir.join("container.toml").exists(), "{step}: data lost");
        let containers = dir.parent().unwrap().to_path_buf();
        let leftovers: Vec<String> = std::fs::read_dir(&containers)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "web1")
            .collect();
        assert!(leftovers.is_empty(), "{step}: {leftovers:?}");
        let upper = dir.join("rootfs-layer");
        let restored = std::fs::read_to_string(upper.join("root/changed")).unwrap() == "old\n";
        if ["exchanged", "cleaned", "moved"].contains(&step) {
            assert!(restored, "{step}: the restore was finished");
            assert_restored(&rig, "web1");
        } else {
            assert!(!restored, "{step}: the restore was rolled back");
            assert_unrestored(&rig, "web1");
        }
        assert!(
            wait_until(Duration::from_secs(10), || rig.lxc_state("web1")
                == "RUNNING"),
            "{step}: the container runs again"
        );
        assert_eq!(
            numbers(&snapper_list(&rig, "web1"), "number"),
            after,
            "{step}"
        );
        if restored {
            // Back to the "before" state for the next step.
            in_container(
                &rig,
                "web1",
                "echo new > /root/changed && rm /root/deleted && echo x > /root/added && rm /bin/od \
                 && echo back > /bin/vi && sync",
            );
        }
    }
    rig.ctl_ok(&["stop", "web1", "--force"]);
}

#[test]
fn a_stopped_container_stays_stopped_through_an_interrupted_restore() {
    require_root();
    let mut rig = Rig::new();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    let dir = container_dir(&rig, "web1");
    std::fs::write(dir.join("rootfs-layer/v"), "1\n").unwrap();
    let one = rig.ctl_ok(&["snapshot", "create", "web1"]);
    for step in ["safety", "moved", "exchanged"] {
        std::fs::write(dir.join("rootfs-layer/v"), "2\n").unwrap();
        rig.kill_daemon_at(step, &["snapshot", "restore", "web1", one.trim()]);
        let v = std::fs::read_to_string(dir.join("rootfs-layer/v")).unwrap();
        assert_eq!(v, if step == "safety" { "2\n" } else { "1\n" }, "{step}");
        assert_eq!(rig.lxc_state("web1"), "STOPPED", "{step}");
        let info: serde_json::Value =
            serde_json::from_str(&rig.ctl_ok(&["info", "web1", "--json"])).unwrap();
        assert_eq!(info["state"], "stopped", "{step}");
        assert!(numbers(&daemon_list(&rig, "web1"), "num").contains(&1));
    }
}
