//! Boot order, retries, warnings, host shutdown and `set`, against the fake host.

use super::*;
use crate::spec::Autostart;
use crate::testing::{fake_engine_with, FakeHost};

fn engine() -> (tempfile::TempDir, Arc<FakeHost>, Arc<Engine>) {
    fake_engine_with(|c| {
        c.boot.retry_delay = 0.0;
        c.boot.parallel = 2;
    })
}

async fn make(e: &Arc<Engine>, name: &str, autostart: Autostart, priority: i32) {
    e.create_container(CreateRequest {
        name: name.into(),
        base: "bb".into(),
        autostart,
        boot_priority: priority,
        ..Default::default()
    })
    .await
    .unwrap();
}

fn starts(host: &FakeHost) -> Vec<String> {
    host.calls()
        .into_iter()
        .filter_map(|c| c.strip_prefix("lxc-start ").map(str::to_string))
        .collect()
}

fn position(list: &[String], name: &str) -> usize {
    list.iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("{name} not in {list:?}"))
}

#[tokio::test]
async fn boot_starts_groups_by_priority_and_skips_the_rest() {
    let (_d, host, e) = engine();
    make(&e, "low", Autostart::Always, -5).await;
    make(&e, "mid", Autostart::Always, 0).await;
    make(&e, "hi1", Autostart::Always, 10).await;
    make(&e, "hi2", Autostart::Always, 10).await;
    make(&e, "hi3", Autostart::Always, 10).await;
    make(&e, "off", Autostart::Never, 20).await;
    make(&e, "last", Autostart::LastState, 20).await;
    e.autostart(true).await;
    let s = starts(&host);
    assert_eq!(s.len(), 5, "{s:?}");
    for hi in ["hi1", "hi2", "hi3"] {
        assert!(position(&s, hi) < position(&s, "mid"), "{s:?}");
    }
    assert!(position(&s, "mid") < position(&s, "low"), "{s:?}");
    assert_eq!(e.container_info("off").unwrap().state, RunState::Stopped);
    assert_eq!(e.container_info("last").unwrap().state, RunState::Stopped);
}

#[tokio::test]
async fn a_daemon_restart_starts_nothing() {
    let (_d, host, e) = engine();
    make(&e, "a", Autostart::Always, 0).await;
    assert!(e.claim_boot().unwrap());
    assert!(
        !e.claim_boot().unwrap(),
        "the marker makes later starts restarts"
    );
    e.autostart(false).await;
    assert!(starts(&host).is_empty());
}

#[tokio::test]
async fn a_daemon_that_failed_before_ready_leaves_the_boot_unclaimed() {
    let (_d, _host, e) = engine();
    assert!(e.claim_boot().unwrap());
    e.unclaim_boot();
    assert!(
        e.claim_boot().unwrap(),
        "the next start is still the first after the boot"
    );
}

#[tokio::test]
async fn a_failing_container_is_retried_then_warned_without_blocking_others() {
    let (_d, host, e) = engine();
    make(&e, "bad", Autostart::Always, 10).await;
    make(&e, "good", Autostart::Always, 0).await;
    host.fail_names.lock().unwrap().insert("bad".into());
    e.autostart(true).await;
    let s = starts(&host);
    assert_eq!(s.iter().filter(|n| *n == "bad").count(), 4, "{s:?}");
    assert_eq!(e.container_info("good").unwrap().state, RunState::Running);
    let warning = e.container_info("bad").unwrap().warning;
    assert!(warning.contains("4 attempts"), "{warning}");
    host.fail_names.lock().unwrap().clear();
    e.start_container("bad").await.unwrap();
    assert_eq!(
        e.container_info("bad").unwrap().warning,
        "",
        "a start clears it"
    );
}

#[tokio::test]
async fn host_shutdown_stops_in_reverse_order_and_last_state_follows() {
    let (_d, host, e) = engine();
    make(&e, "first", Autostart::Always, 10).await;
    make(&e, "second", Autostart::LastState, 0).await;
    make(&e, "third", Autostart::LastState, -1).await;
    make(&e, "idle", Autostart::LastState, 5).await;
    for n in ["first", "second", "third"] {
        e.start_container(n).await.unwrap();
    }
    let stopped = e.shutdown_host().await.unwrap();
    assert_eq!(stopped, ["third", "second", "first"]);
    assert_eq!(e.last_state("second"), Some(true));
    assert_eq!(e.last_state("idle"), Some(false));
    // Autostart is off once shutdown has begun.
    e.autostart(true).await;
    assert_eq!(e.container_info("first").unwrap().state, RunState::Stopped);
    // At the next boot (a fresh engine on the same store), last-state decides.
    let calls_before = starts(&host).len();
    let e2 = Engine::open(
        e.config().clone(),
        crate::store::Store::at(&e.config().store_root),
        crate::lxcconf::HostFacts {
            apparmor: false,
            v2_controllers: vec![],
            v1_controllers: vec![],
            cgroup2_only: false,
        },
        host.clone(),
    )
    .unwrap();
    e2.autostart(true).await;
    let s = starts(&host)[calls_before..].to_vec();
    assert_eq!(s, ["first", "second", "third"]);
}

#[tokio::test]
async fn set_rewrites_the_spec_and_refuses_nonsense() {
    let (_d, _host, e) = engine();
    make(&e, "a", Autostart::Never, 0).await;
    e.set_container(
        "a",
        SetRequest {
            autostart: Some(Autostart::LastState),
            boot_priority: Some(7),
            boot_delay: Some(3),
            memory: Some(64 << 20),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let spec = ContainerSpec::load(&e.store().container_dir("a")).unwrap();
    assert_eq!(spec.autostart, Autostart::LastState);
    assert_eq!((spec.boot_priority, spec.boot_delay), (7, 3));
    assert_eq!(spec.memory, Some(64 << 20));
    assert_eq!(e.container_info("a").unwrap().spec, spec);
    e.set_container(
        "a",
        SetRequest {
            memory: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(e.container_info("a").unwrap().spec.memory, None);
    for bad in [
        SetRequest::default(),
        SetRequest {
            memory: Some(1),
            ..Default::default()
        },
        SetRequest {
            boot_delay: Some(100_000),
            ..Default::default()
        },
    ] {
        assert_eq!(
            e.set_container("a", bad).await.unwrap_err().kind(),
            "InvalidArgument"
        );
    }
    assert_eq!(
        e.set_container(
            "nope",
            SetRequest {
                boot_priority: Some(1),
                ..Default::default()
            }
        )
        .await
        .unwrap_err()
        .kind(),
        "NotFound"
    );
}
