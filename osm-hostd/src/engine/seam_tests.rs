//! Backup and restore sequencing against the recording fake of the host seam: the
//! order of the effects, and what a failure half-way leaves behind.

use super::jobs::{Job, JobState, JobStatus};
use super::*;
use crate::testing::{fake_engine_with, Call, FakeHost, Kind};
use std::path::{Path, PathBuf};

struct Fixture {
    dir: tempfile::TempDir,
    host: Arc<FakeHost>,
    engine: Arc<Engine>,
}

/// An engine backing up into a local history-mode target, with container `web1`
/// holding `srv/index.html` = "v1".
async fn fixture() -> Fixture {
    let (dir, host, engine) = fake_engine_with(|c| {
        // Inside the engine's temp dir, removed with it.
        let target = c.store_root.parent().unwrap().join("backups");
        c.backup.target = crate::backup::Target::Local(target);
        c.backup.mode = crate::backup::Mode::History;
    });
    engine
        .create_container(CreateRequest {
            name: "web1".into(),
            base: "bb".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    write_page(&engine, "v1");
    Fixture { dir, host, engine }
}

fn page_path(engine: &Engine) -> PathBuf {
    engine
        .store()
        .container_dir("web1")
        .join("rootfs-layer/srv/index.html")
}

fn write_page(engine: &Engine, text: &str) {
    let page = page_path(engine);
    std::fs::create_dir_all(page.parent().unwrap()).unwrap();
    std::fs::write(page, text).unwrap();
}

fn page(engine: &Engine) -> String {
    std::fs::read_to_string(page_path(engine)).unwrap()
}

async fn finished(job: &Job) -> JobStatus {
    for _ in 0..2000 {
        let s = job.status();
        if s.state != JobState::Running {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("job {} did not finish", job.id);
}

async fn backup(f: &Fixture) -> JobStatus {
    let job = f.engine.run_backup(vec!["web1".into()], false).unwrap();
    finished(&job).await
}

/// Where the backup trees of web1 are.
fn trees_dir(f: &Fixture) -> PathBuf {
    let crate::backup::Target::Local(root) = &f.engine.config().backup.target else {
        panic!("the fixture's target is local");
    };
    root.join(f.engine.host_id()).join("web1")
}

fn index_of(calls: &[Call], what: impl Fn(&Call) -> bool) -> usize {
    calls
        .iter()
        .position(what)
        .unwrap_or_else(|| panic!("not in {calls:#?}"))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn a_backup_snapshots_copies_the_snapshot_verifies_and_records_the_result() {
    let f = fixture().await;
    let status = backup(&f).await;
    assert_eq!(status.state, JobState::Completed, "{}", status.message);
    let containers = f.engine.store().containers_dir();
    let staging = containers.join(".backup-web1");
    let calls = f.host.recorded();
    let snap = index_of(&calls, |c| {
        *c == Call::Snapshot {
            src: containers.join("web1"),
            dst: staging.clone(),
            ro: true,
        }
    });
    let copy = index_of(
        &calls,
        |c| matches!(c, Call::Rsync { src, dry_run: false, .. } if src == &format!("{}/", staging.display())),
    );
    let drop = index_of(&calls, |c| {
        *c == Call::DeleteSubvolume {
            path: staging.clone(),
        }
    });
    assert!(snap < copy && copy < drop, "{calls:#?}");
    // The copy went to an incomplete name, renamed once verified.
    let Call::Rsync { dest, .. } = &calls[copy] else {
        unreachable!()
    };
    assert!(dest.contains("/.incomplete-"), "{dest}");
    let trees = f.engine.list_backups("web1").unwrap();
    assert_eq!(trees.len(), 1, "{trees:?}");
    let tree = trees_dir(&f).join(&trees[0]);
    assert_eq!(
        std::fs::read_to_string(tree.join("rootfs-layer/srv/index.html")).unwrap(),
        "v1"
    );
    assert!(!staging.exists(), "the backup snapshot is dropped");
    let st = f.engine.backup_status();
    let web1 = &st.containers["web1"];
    assert!(web1.last_attempt.as_ref().unwrap().ok(), "{web1:?}");
    assert_eq!(web1.last_success.as_ref().unwrap().tree, trees[0]);
    assert_eq!(web1.in_progress, None);
}

#[tokio::test]
async fn a_transfer_failing_half_way_is_recorded_and_leaves_the_last_good_tree() {
    let f = fixture().await;
    assert_eq!(backup(&f).await.state, JobState::Completed);
    let good = f.engine.list_backups("web1").unwrap();
    let good_tree = trees_dir(&f).join(&good[0]);
    // History trees are named by the second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write_page(&f.engine, "v2");
    for i in 0..6 {
        std::fs::write(page_path(&f.engine).with_file_name(format!("f{i}")), "x").unwrap();
    }
    f.host.fail_nth(Kind::Rsync, f.host.count(Kind::Rsync) + 1);
    let status = backup(&f).await;
    assert_eq!(status.state, JobState::Failed);
    assert!(
        status.message.contains("rsync exit 23"),
        "{}",
        status.message
    );

    let st = f.engine.backup_status();
    let web1 = &st.containers["web1"];
    let attempt = web1.last_attempt.as_ref().unwrap();
    assert!(
        !attempt.ok() && attempt.result.contains("partial transfer"),
        "{attempt:?}"
    );
    assert_eq!(web1.last_success.as_ref().unwrap().tree, good[0]);
    assert_eq!(web1.in_progress, None);
    // The source snapshot is dropped after the failure, as after a success.
    let staging = f.engine.store().containers_dir().join(".backup-web1");
    let calls = f.host.recorded();
    let failed = calls
        .iter()
        .rposition(|c| matches!(c, Call::Rsync { dry_run: false, .. }))
        .unwrap();
    assert!(
        calls[failed..].contains(&Call::DeleteSubvolume {
            path: staging.clone()
        }),
        "{calls:#?}"
    );
    assert!(!staging.exists());
    // The last good tree is untouched and still the only one listed.
    assert_eq!(f.engine.list_backups("web1").unwrap(), good);
    assert_eq!(
        std::fs::read_to_string(good_tree.join("rootfs-layer/srv/index.html")).unwrap(),
        "v1"
    );
    assert!(!good_tree.join("rootfs-layer/srv/f0").exists());
}

/// Restores web1's backup ("v1") over web1 while it runs with "v2".
async fn restore_over(f: &Fixture) -> JobStatus {
    assert_eq!(backup(f).await.state, JobState::Completed);
    write_page(&f.engine, "v2");
    f.engine.start_container("web1").await.unwrap();
    let job = f.engine.restore_backup("web1", "", "").await.unwrap();
    finished(&job).await
}

#[tokio::test]
async fn a_restore_over_a_container_stages_verifies_keeps_a_safety_copy_then_swaps() {
    let f = fixture().await;
    let status = restore_over(&f).await;
    assert_eq!(status.state, JobState::Completed, "{}", status.message);
    let containers = f.engine.store().containers_dir();
    let (dir, staging) = (containers.join("web1"), containers.join(".restore-web1"));
    let calls = f.host.recorded();
    let restore = calls
        .iter()
        .rposition(|c| {
            *c == Call::LxcStart {
                name: "web1".into(),
            }
        })
        .unwrap();
    let from = calls[..restore]
        .iter()
        .rposition(|c| matches!(c, Call::LxcStart { .. }))
        .unwrap();
    let calls = &calls[from + 1..];
    let stop = index_of(
        calls,
        |c| matches!(c, Call::LxcStop { name, .. } if name == "web1"),
    );
    let safety = index_of(calls, |c| {
        matches!(c, Call::Snapshot { src, dst, ro: true }
            if *src == dir && dst.file_name().unwrap().to_string_lossy().starts_with(".pre-restore-web1-"))
    });
    let stage = index_of(calls, |c| {
        *c == Call::Snapshot {
            src: dir.clone(),
            dst: staging.clone(),
            ro: false,
        }
    });
    let into = format!("{}/", staging.join("rootfs-layer").display());
    let copy = index_of(
        calls,
        |c| matches!(c, Call::Rsync { dest, dry_run: false, .. } if *dest == into),
    );
    let verify = index_of(
        calls,
        |c| matches!(c, Call::Rsync { dest, dry_run: true, .. } if *dest == into),
    );
    let swap = index_of(calls, |c| {
        *c == Call::Exchange {
            a: staging.clone(),
            b: dir.clone(),
        }
    });
    let start = calls.len() - 1;
    let order = [stop, safety, stage, copy, verify, swap, start];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "{order:?} {calls:#?}"
    );
    assert_eq!(page(&f.engine), "v1");
    assert_eq!(
        f.engine.container_info("web1").unwrap().state,
        RunState::Running
    );
    let left = entries(&containers);
    assert!(
        left.iter().any(|n| n.starts_with(".pre-restore-web1-")),
        "{left:?}"
    );
    assert!(!staging.exists() && !containers.join(".restore-web1.toml").exists());
    // The replaced data went to the trash, which a thread of its own empties.
    let trash = f.engine.store().lxc_dir().join(".trash");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f
        .host
        .recorded()
        .iter()
        .any(|c| matches!(c, Call::DeleteSubvolume { path } if path.starts_with(&trash)))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the replaced data was never deleted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A restore over web1 whose `n`-th call of `kind` (counted from the restore) fails.
async fn restore_failing_at(kind: Kind, n: usize) -> (Fixture, JobStatus) {
    let f = fixture().await;
    assert_eq!(backup(&f).await.state, JobState::Completed);
    write_page(&f.engine, "v2");
    f.engine.start_container("web1").await.unwrap();
    f.host.fail_nth(kind, f.host.count(kind) + n);
    let job = f.engine.restore_backup("web1", "", "").await.unwrap();
    let status = finished(&job).await;
    (f, status)
}

#[tokio::test]
async fn a_restore_failing_at_any_step_leaves_the_old_container_running() {
    for (kind, n, step) in [
        (Kind::Snapshot, 1, "safety snapshot"),
        (Kind::Snapshot, 2, "staging snapshot"),
        (Kind::Rsync, 1, "copy"),
        (Kind::Rsync, 2, "verification"),
        (Kind::Exchange, 1, "exchange"),
    ] {
        let (f, status) = restore_failing_at(kind, n).await;
        assert_eq!(status.state, JobState::Failed, "{step}: {}", status.message);
        assert_eq!(page(&f.engine), "v2", "{step}: the old data stays");
        let containers = f.engine.store().containers_dir();
        assert!(
            !containers.join(".restore-web1").exists(),
            "{step}: staging dropped"
        );
        assert!(
            !containers.join(".restore-web1.toml").exists(),
            "{step}: journal removed"
        );
        assert!(
            containers.join("web1/.snapshots").is_dir(),
            "{step}: .snapshots stays with the container"
        );
        assert_eq!(
            f.engine.container_info("web1").unwrap().state,
            RunState::Running,
            "{step}: started again"
        );
        let calls = f.host.recorded();
        let failed = calls.iter().rposition(|c| c.kind() == kind).unwrap();
        assert!(
            calls[failed..].contains(&Call::LxcStart {
                name: "web1".into()
            }),
            "{step}: {calls:#?}"
        );
        assert!(
            !calls[failed + 1..]
                .iter()
                .any(|c| matches!(c, Call::Exchange { .. })),
            "{step}: nothing is swapped after the failure"
        );
        drop(f.dir);
    }
}

#[tokio::test]
async fn a_container_named_like_the_host_is_refused_and_the_manifest_names_the_host() {
    let f = fixture().await;
    let err = f
        .engine
        .create_container(CreateRequest {
            name: crate::host::fake::FAKE_HOSTNAME.into(),
            base: "bb".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "InvalidArgument", "{err}");
    assert!(err.message().contains("own hostname"), "{err}");
    assert_eq!(backup(&f).await.state, JobState::Completed);
    let tree = trees_dir(&f).join(&f.engine.list_backups("web1").unwrap()[0]);
    let manifest =
        std::fs::read_to_string(tree.join(crate::backup::identity::MANIFEST_FILE)).unwrap();
    assert!(
        manifest.contains(crate::host::fake::FAKE_HOSTNAME),
        "{manifest}"
    );
}

#[tokio::test]
async fn a_restore_as_a_new_container_shifts_the_copy_into_its_own_id_range() {
    let f = fixture().await;
    assert_eq!(backup(&f).await.state, JobState::Completed);
    let job = f.engine.restore_backup("web1", "", "web2").await.unwrap();
    let status = finished(&job).await;
    assert_eq!(status.state, JobState::Completed, "{}", status.message);
    let range = |name: &str| {
        f.engine
            .container_info(name)
            .unwrap()
            .spec
            .unprivileged_map()
            .map(|m| crate::shift::Range::of(Some(m)).uid)
            .unwrap()
    };
    let upper = f.engine.store().container_dir("web2").join("rootfs-layer");
    let calls = f.host.recorded();
    let verify = calls
        .iter()
        .rposition(|c| matches!(c, Call::Rsync { dry_run: true, .. }))
        .unwrap();
    let shift = index_of(&calls, |c| matches!(c, Call::ShiftOwners { .. }));
    assert_eq!(
        calls[shift],
        Call::ShiftOwners {
            root: upper.clone(),
            from: range("web1"),
            to: range("web2"),
        }
    );
    assert!(verify < shift, "shifted only once verified: {calls:#?}");
    assert!(calls[shift..].contains(&Call::LxcStart {
        name: "web2".into()
    }));
    assert_eq!(
        std::fs::read_to_string(upper.join("srv/index.html")).unwrap(),
        "v1"
    );
}

#[tokio::test]
async fn an_unreachable_ssh_target_fails_every_container_without_a_snapshot() {
    let (_dir, host, engine) = fake_engine_with(|c| {
        c.backup.target =
            crate::backup::Target::parse("backup@vault.example:/srv/backups").unwrap();
    });
    for name in ["web1", "web2"] {
        engine
            .create_container(CreateRequest {
                name: name.into(),
                base: "bb".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    host.fail_nth(Kind::Ssh, host.count(Kind::Ssh) + 1);
    let job = engine.run_backup(Vec::new(), true).unwrap();
    let status = finished(&job).await;
    assert_eq!(status.state, JobState::Failed);
    assert!(status.message.contains("2 of 2"), "{}", status.message);
    // One probe, nothing else: no snapshot, no transfer.
    let ssh = host.recorded_of(Kind::Ssh);
    assert_eq!(ssh.len(), 1, "{ssh:#?}");
    assert!(
        matches!(&ssh[0], Call::Ssh { host, command, .. } if host == "backup@vault.example" && command == "'true'"),
        "{ssh:#?}"
    );
    assert!(host.recorded_of(Kind::Rsync).is_empty());
    assert!(!host
        .recorded_of(Kind::Snapshot)
        .iter()
        .any(|c| matches!(c, Call::Snapshot { dst, .. } if dst.ends_with(".backup-web1"))));
    let st = engine.backup_status();
    for name in ["web1", "web2"] {
        let attempt = st.containers[name].last_attempt.as_ref().unwrap();
        assert!(
            attempt.result.contains("backup host backup@vault.example"),
            "{attempt:?}"
        );
        assert!(attempt.result.contains("unreachable"), "{attempt:?}");
    }
}
