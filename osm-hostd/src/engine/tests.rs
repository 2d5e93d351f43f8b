//! Engine sequencing against a recording fake of the host-effects layer.

use super::*;
use crate::testing::FakeHost;

struct Fixture {
    _dir: tempfile::TempDir,
    host: Arc<FakeHost>,
    engine: Arc<Engine>,
}

fn fixture() -> Fixture {
    let (dir, host, engine) = crate::testing::fake_engine();
    Fixture {
        _dir: dir,
        host,
        engine,
    }
}

fn req(name: &str) -> CreateRequest {
    CreateRequest {
        name: name.into(),
        base: "bb".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_builds_under_a_staging_name_and_publishes_the_layout() {
    let f = fixture();
    assert_eq!(
        f.engine.create_container(req("web1")).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(
        f.host.calls(),
        vec!["subvol-create .creating-web1", "subvol-create .snapshots"]
    );
    let dir = f.engine.store().container_dir("web1");
    for entry in [
        "container.toml",
        "lxc.container.conf",
        "rootfs-layer",
        "work",
        ".snapshots",
        "config",
    ] {
        assert!(
            dir.join(entry).symlink_metadata().is_ok(),
            "{entry} missing"
        );
    }
    assert!(!f
        .engine
        .store()
        .containers_dir()
        .join(".creating-web1")
        .exists());
    let spec = ContainerSpec::load(&dir).unwrap();
    assert_eq!(spec.base, "bb");
}

#[tokio::test]
async fn create_is_idempotent_but_refuses_a_different_spec() {
    let f = fixture();
    f.engine.create_container(req("web1")).await.unwrap();
    assert_eq!(
        f.engine.create_container(req("web1")).await.unwrap(),
        CreateOutcome::AlreadyExisted
    );
    let mut other = req("web1");
    other.autostart = crate::spec::Autostart::Always;
    assert_eq!(
        f.engine.create_container(other).await.unwrap_err().kind(),
        "AlreadyExists"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_and_leave_nothing() {
    let f = fixture();
    assert_eq!(
        f.engine
            .create_container(req("Bad_Name"))
            .await
            .unwrap_err()
            .kind(),
        "InvalidArgument"
    );
    let mut r = req("web1");
    r.base = "missing".into();
    assert_eq!(
        f.engine.create_container(r).await.unwrap_err().kind(),
        "NotFound"
    );
    let mut r = req("web1");
    r.memory = Some(1024);
    assert_eq!(
        f.engine.create_container(r).await.unwrap_err().kind(),
        "InvalidArgument"
    );
    assert!(f.host.calls().is_empty());
    assert_eq!(
        std::fs::read_dir(f.engine.store().containers_dir())
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn start_stop_delete_sequence_and_state_guards() {
    let f = fixture();
    let mut events = f.engine.subscribe();
    f.engine.create_container(req("web1")).await.unwrap();
    f.engine.start_container("web1").await.unwrap();
    let info = f.engine.container_info("web1").unwrap();
    assert_eq!((info.state, info.init_pid), (RunState::Running, Some(4242)));
    assert!(info.started_at > 0);
    let err = f.engine.delete_container("web1", false).await.unwrap_err();
    assert_eq!(err.kind(), "InvalidState");
    assert!(err.message().contains("--force"), "{err}");
    assert_eq!(
        f.engine.stop_container("web1", None, false).await.unwrap(),
        lifecycle::Transition::Done
    );
    assert_eq!(
        f.engine.stop_container("web1", None, false).await.unwrap(),
        lifecycle::Transition::AlreadyThere
    );
    f.engine.delete_container("web1", false).await.unwrap();
    assert!(f.engine.container_info("web1").is_err());
    assert!(!f.engine.store().container_dir("web1").exists());
    let calls = f.host.calls();
    let rootfs = f.engine.config().runtime_dir.join("rootfs/web1");
    assert_eq!(
        &calls[2..],
        [
            format!("mount_rootfs {}", rootfs.display()).as_str(),
            "lxc-start web1",
            "lxc-stop web1 force=false",
            format!("unmount_rootfs {}", rootfs.display()).as_str(),
            "subvol-delete .deleting-web1"
        ]
    );
    let mut seen = vec![];
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(seen.contains(&Event::ContainerAdded("web1".into())));
    assert!(seen.contains(&Event::ContainerChanged("web1".into())));
    assert_eq!(seen.last(), Some(&Event::ContainerRemoved("web1".into())));
}

#[tokio::test]
async fn force_delete_kills_a_running_container() {
    let f = fixture();
    f.engine.create_container(req("web1")).await.unwrap();
    f.engine.start_container("web1").await.unwrap();
    f.engine.delete_container("web1", true).await.unwrap();
    assert!(f
        .host
        .calls()
        .contains(&"lxc-stop web1 force=true".to_string()));
}

#[tokio::test]
async fn failed_start_leaves_the_container_stopped() {
    let f = fixture();
    f.engine.create_container(req("web1")).await.unwrap();
    *f.host.fail_start.lock().unwrap() = true;
    let err = f.engine.start_container("web1").await.unwrap_err();
    assert!(err.message().contains("lxc-start failed"));
    assert_eq!(
        f.engine.container_info("web1").unwrap().state,
        RunState::Stopped
    );
}

#[tokio::test]
async fn a_second_operation_on_a_busy_container_is_refused() {
    let f = fixture();
    f.engine.create_container(req("web1")).await.unwrap();
    let c = f.engine.container("web1").unwrap();
    let _held = c.begin("restore").unwrap();
    let err = f.engine.start_container("web1").await.unwrap_err();
    assert_eq!(err.kind(), "Busy");
    assert!(err.message().contains("restore"), "{err}");
}

#[tokio::test]
async fn a_restarted_engine_rolls_back_staging_and_adopts_running_containers() {
    let f = fixture();
    f.engine.create_container(req("web1")).await.unwrap();
    f.engine.start_container("web1").await.unwrap();
    let containers = f.engine.store().containers_dir();
    std::fs::create_dir(containers.join(".creating-half")).unwrap();
    std::fs::create_dir(containers.join(".deleting-gone")).unwrap();
    let cfg = f.engine.config().clone();
    let again = Engine::open(
        cfg,
        f.engine.store().clone(),
        f.engine.facts.clone(),
        f.host.clone(),
    )
    .unwrap();
    assert_eq!(again.container_names(), vec!["web1"]);
    assert_eq!(
        again.container_info("web1").unwrap().state,
        RunState::Running
    );
    assert!(!containers.join(".creating-half").exists());
    assert!(!containers.join(".deleting-gone").exists());
}

#[tokio::test]
async fn base_in_use_cannot_be_deleted() {
    let f = fixture();
    f.engine.create_container(req("web1")).await.unwrap();
    let err = f.engine.delete_base("bb").await.unwrap_err();
    assert_eq!(err.kind(), "InvalidState");
    assert!(err.message().contains("web1"));
    f.engine.delete_container("web1", false).await.unwrap();
    f.engine.delete_base("bb").await.unwrap();
    assert!(f.engine.base_names().is_empty());
}

#[tokio::test]
async fn a_create_failing_half_way_leaves_nothing_and_says_no_space() {
    let f = fixture();
    *f.host.fail_subvolume.lock().unwrap() = Some(".snapshots".into());
    let err = f.engine.create_container(req("web1")).await.unwrap_err();
    assert_eq!(err.kind(), "NoSpace", "{err}");
    assert!(f
        .host
        .calls()
        .contains(&"subvol-delete .creating-web1".to_string()));
    assert_eq!(
        std::fs::read_dir(f.engine.store().containers_dir())
            .unwrap()
            .count(),
        0
    );
    assert!(f.engine.container_info("web1").is_err());
    // The name is free again: a retry once there is space succeeds.
    *f.host.fail_subvolume.lock().unwrap() = None;
    f.engine.create_container(req("web1")).await.unwrap();
}

#[tokio::test]
async fn snapshots_are_numbered_listed_deleted_and_configured_for_snapper() {
    let f = fixture();
    f.engine.create_container(req("web1")).await.unwrap();
    let cfg = f.engine.config().snapper.configs_dir.join("web1");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("TIMELINE_CREATE=\"no\""), "{text}");
    let mut r = SnapshotRequest {
        description: "first".into(),
        cleanup: "number".into(),
        ..Default::default()
    };
    assert_eq!(
        f.engine.create_snapshot("web1", r.clone()).await.unwrap(),
        1
    );
    assert_eq!(
        f.engine.create_snapshot("web1", r.clone()).await.unwrap(),
        2
    );
    assert!(f
        .host
        .calls()
        .contains(&"snapshot web1 -> snapshot ro=true".to_string()));
    let list = f.engine.list_snapshots("web1").unwrap();
    assert_eq!(list.iter().map(|s| s.num).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(list[0].userdata["created_by"], "osm-hostd");
    assert_eq!(f.engine.snapshot_summary("web1").count, 2);

    f.engine.delete_snapshot("web1", 2).await.unwrap();
    assert_eq!(
        f.engine
            .delete_snapshot("web1", 2)
            .await
            .unwrap_err()
            .kind(),
        "NotFound"
    );
    assert_eq!(
        f.engine.create_snapshot("web1", r.clone()).await.unwrap(),
        3
    );
    r.cleanup = "weekly".into();
    assert_eq!(
        f.engine
            .create_snapshot("web1", r)
            .await
            .unwrap_err()
            .kind(),
        "InvalidArgument"
    );
    assert_eq!(
        f.engine
            .create_snapshot("nope", SnapshotRequest::default())
            .await
            .unwrap_err()
            .kind(),
        "NotFound"
    );

    // A restore holds the container: other operations are Busy until it is done.
    let c = f.engine.container("web1").unwrap();
    let held = c.begin_owned("restore").unwrap();
    let err = f.engine.restore_snapshot("web1", 1).unwrap_err();
    assert_eq!(err.kind(), "Busy");
    assert!(err.message().contains("restore"), "{err}");
    drop(held);

    f.engine.delete_container("web1", false).await.unwrap();
    assert!(!cfg.exists(), "the snapper config goes with the container");
}

#[tokio::test]
async fn restore_swaps_in_a_writable_snapshot_and_keeps_the_snapshots() {
    let f = fixture();
    f.engine.create_container(req("web1")).await.unwrap();
    let num = f
        .engine
        .create_snapshot("web1", SnapshotRequest::default())
        .await
        .unwrap();
    let mut events = f.engine.subscribe();
    let job = f.engine.restore_snapshot("web1", num).unwrap();
    while !matches!(events.recv().await.unwrap(), Event::JobFinished(id) if id == job.id) {}
    let status = job.status();
    assert_eq!(
        status.state,
        jobs::JobState::Completed,
        "{}",
        status.message
    );
    let calls = f.host.calls();
    let safety = calls
        .iter()
        .rposition(|c| c == "snapshot web1 -> snapshot ro=true")
        .unwrap();
    let staged = calls
        .iter()
        .position(|c| c == "snapshot snapshot -> .restore-web1 ro=false")
        .unwrap();
    assert!(safety < staged, "{calls:?}");
    // The replaced data goes to the trash and is deleted in the background.
    let trash = f.engine.trash_dir();
    let deleted = |calls: &[String]| {
        calls
            .iter()
            .any(|c| c.starts_with("subvol-delete web1-replaced-"))
    };
    let empty = || std::fs::read_dir(&trash).unwrap().count() == 0;
    for _ in 0..100 {
        if deleted(&f.host.calls()) && empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(deleted(&f.host.calls()), "{:?}", f.host.calls());
    assert!(
        !calls.iter().any(|c| c == "subvol-delete .restore-web1"),
        "{calls:?}"
    );
    assert!(empty(), "the trash is emptied");
    let list = f.engine.list_snapshots("web1").unwrap();
    assert_eq!(list.iter().map(|s| s.num).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(list[1].userdata["restore_of"], "1");
    let containers: Vec<String> = std::fs::read_dir(f.engine.store().containers_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(containers, vec!["web1"], "no journal or staging left");
}

#[tokio::test]
async fn restore_refuses_a_snapshot_whose_base_is_gone() {
    let f = fixture();
    f.engine.create_container(req("web1")).await.unwrap();
    let num = f
        .engine
        .create_snapshot("web1", SnapshotRequest::default())
        .await
        .unwrap();
    let dir = f.engine.store().container_dir("web1");
    let mut spec = ContainerSpec::load(&dir).unwrap();
    spec.base = "gone".into();
    spec.save(&dir.join(format!(".snapshots/{num}/snapshot")))
        .unwrap();
    let err = f.engine.restore_snapshot("web1", num).unwrap_err();
    assert_eq!(err.kind(), "InvalidState");
    assert!(err.message().contains("\"gone\""), "{err}");
}

#[tokio::test]
async fn recovery_drops_backup_snapshots_but_keeps_safety_snapshots() {
    let f = fixture();
    let containers = f.engine.store().containers_dir();
    std::fs::create_dir(containers.join(".backup-web1")).unwrap();
    std::fs::create_dir(containers.join(".pre-restore-web1-2026-01-01T000000Z")).unwrap();
    let again = Engine::open(
        f.engine.config().clone(),
        f.engine.store().clone(),
        f.engine.facts.clone(),
        f.host.clone(),
    )
    .unwrap();
    assert!(again.container_names().is_empty());
    assert!(!containers.join(".backup-web1").exists());
    assert!(containers
        .join(".pre-restore-web1-2026-01-01T000000Z")
        .exists());
}

#[tokio::test]
async fn only_one_backup_run_at_a_time_and_names_are_checked() {
    let f = fixture();
    f.engine.create_container(req("web1")).await.unwrap();
    let err = f.engine.run_backup(vec!["nope".into()], false).unwrap_err();
    assert_eq!(err.kind(), "NotFound");
    let err = f.engine.run_backup(vec![], false).unwrap_err();
    assert_eq!(err.kind(), "InvalidArgument");
    // A run in progress holds the run key.
    f.engine
        .reserved
        .lock()
        .unwrap()
        .insert("backup:run".to_string());
    let err = f.engine.run_backup(vec![], true).unwrap_err();
    assert_eq!(err.kind(), "Busy", "{err}");
}

#[tokio::test]
async fn new_containers_get_their_own_id_ranges_until_the_pool_runs_out() {
    let f = fixture();
    let pool = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    let cfg = f.engine.config().isolation.clone();
    assert_eq!(
        pool(&cfg.subuid_file),
        "root:1048576:65536000\n",
        "a pool was added at open"
    );
    f.engine.create_container(req("a")).await.unwrap();
    f.engine.create_container(req("b")).await.unwrap();
    let map = |n: &str| f.engine.container_info(n).unwrap().spec.idmap.unwrap();
    assert_eq!(map("a").uid, 1_048_576);
    assert_eq!(map("b").uid, 1_048_576 + 65536);
    let mut p = req("p");
    p.privileged = true;
    f.engine.create_container(p).await.unwrap();
    let spec = f.engine.container_info("p").unwrap().spec;
    assert!(spec.privileged && spec.idmap.is_none());
    // Deleting a container frees its range for the next one.
    f.engine.delete_container("a", false).await.unwrap();
    f.engine.create_container(req("c")).await.unwrap();
    assert_eq!(map("c").uid, 1_048_576);
    // Only room for two: the third is refused with what to do, and nothing is left.
    for file in [&cfg.subuid_file, &cfg.subgid_file] {
        std::fs::write(file, "root:1048576:131072\n").unwrap();
    }
    let err = f.engine.create_container(req("d")).await.unwrap_err();
    assert_eq!(err.kind(), "InvalidState");
    assert!(err.message().contains("subordinate ids exhausted"), "{err}");
    assert!(f.engine.container_info("d").is_err());
    assert!(!f.engine.store().container_dir("d").exists());
}

#[tokio::test]
async fn a_failed_start_leaves_no_mount_behind() {
    let f = fixture();
    f.engine.create_container(req("web1")).await.unwrap();
    *f.host.fail_start.lock().unwrap() = true;
    assert!(f.engine.start_container("web1").await.is_err());
    let rootfs = f.engine.config().runtime_dir.join("rootfs/web1");
    let calls = f.host.calls();
    assert!(calls.contains(&format!("mount_rootfs {}", rootfs.display())));
    assert_eq!(
        calls.last().unwrap(),
        &format!("unmount_rootfs {}", rootfs.display())
    );
    assert!(!rootfs.exists());
}
