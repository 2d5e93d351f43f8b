//! The D-Bus layer over a peer-to-peer connection (no bus daemon, no root needed),
//! with the engine on a fake host.

use super::serve;
use futures_util::StreamExt;
use osm_host_bus as api;
use osm_host_bus::proxies::{ContainerProxy, JobProxy, ManagerProxy};
use std::collections::HashMap;
use zbus::connection::Builder;
use zbus::zvariant::Value;
use zbus::Connection;

struct Peer {
    _dir: tempfile::TempDir,
    _server: Connection,
    client: Connection,
}

async fn peer() -> Peer {
    let (dir, _host, engine) = crate::testing::fake_engine();
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let guid = zbus::Guid::generate();
    let server = async {
        Builder::unix_stream(a)
            .server(guid)
            .unwrap()
            .p2p()
            .build()
            .await
            .unwrap()
    };
    let client = async { Builder::unix_stream(b).p2p().build().await.unwrap() };
    let (server, client) = tokio::join!(server, client);
    serve(&server, engine).await.unwrap();
    Peer {
        _dir: dir,
        _server: server,
        client,
    }
}

/// A proxy for `path` on the daemon's side of the peer-to-peer connection.
async fn proxy<P>(client: &Connection, path: &str) -> P
where
    P: From<zbus::Proxy<'static>> + zbus::proxy::Defaults,
{
    zbus::proxy::Builder::<P>::new(client)
        .destination(api::BUS_NAME)
        .unwrap()
        .path(path.to_string())
        .unwrap()
        .build()
        .await
        .unwrap()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn error_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn errors_carry_the_design_names_and_a_message() {
    let p = peer().await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let err = mgr.get_container("nope").await.unwrap_err();
    assert_eq!(error_name(&err), "uk.co.devtank.OsmHost1.Error.NotFound");
    assert!(
        err.to_string().contains("no container named \"nope\""),
        "{err}"
    );
}

#[tokio::test]
async fn mutating_calls_follow_the_callers_privilege() {
    let p = peer().await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let result = mgr.create_container("web1", "bb", HashMap::new()).await;
    if is_root() {
        assert_eq!(
            result.unwrap().as_str(),
            "/uk/co/devtank/OsmHost1/container/web1"
        );
    } else {
        let err = result.unwrap_err();
        assert_eq!(
            error_name(&err),
            "uk.co.devtank.OsmHost1.Error.AccessDenied"
        );
        assert!(err.to_string().contains("osm-admin"), "{err}");
    }
}

#[tokio::test]
async fn created_containers_appear_in_the_object_manager_and_signal_state() {
    if !is_root() {
        // The privilege test above covers non-root callers; this one needs to create.
        panic!("this unit test creates containers and must run as root (the daemon allows only root or osm-admin)");
    }
    let p = peer().await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let mut opts = HashMap::new();
    opts.insert("memory", Value::from(1u64 << 30));
    let path = mgr.create_container("web-1", "bb", opts).await.unwrap();
    assert_eq!(path.as_str(), "/uk/co/devtank/OsmHost1/container/web_2d1");

    let om = proxy::<zbus::fdo::ObjectManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let objects = om.get_managed_objects().await.unwrap();
    let props = &objects[&path][api::CONTAINER_IFACE];
    assert_eq!(props["Name"], Value::from("web-1").try_to_owned().unwrap());
    assert_eq!(
        props["MemoryLimit"],
        Value::from(1u64 << 30).try_to_owned().unwrap()
    );

    let ct = proxy::<ContainerProxy>(&p.client, path.as_str()).await;
    assert_eq!(ct.state().await.unwrap(), "stopped");
    let mut changes = ct.receive_state_changed().await;
    mgr.start_container("web-1").await.unwrap();
    let mut seen = Vec::new();
    while let Ok(Some(change)) =
        tokio::time::timeout(std::time::Duration::from_secs(5), changes.next()).await
    {
        let v = change.get().await.unwrap();
        seen.push(v.clone());
        if v == "running" {
            break;
        }
    }
    assert_eq!(
        seen.last().map(String::as_str),
        Some("running"),
        "signals seen: {seen:?}"
    );
    assert_eq!(ct.init_pid().await.unwrap(), 4242);
}

#[tokio::test]
async fn base_import_is_a_job_that_finishes_with_a_signal() {
    if !is_root() {
        panic!("this unit test imports a base and must run as root (the daemon allows only root or osm-admin)");
    }
    let p = peer().await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let archive = tempfile::NamedTempFile::new().unwrap();
    let fd = std::os::fd::AsFd::as_fd(archive.as_file());
    let job_path = mgr.import_base("bb2", fd.into()).await.unwrap();
    assert!(job_path
        .as_str()
        .starts_with("/uk/co/devtank/OsmHost1/job/"));
    let job = proxy::<JobProxy>(&p.client, job_path.as_str()).await;
    assert_eq!(job.kind().await.unwrap(), "import-base");
    assert_eq!(job.target().await.unwrap(), "bb2");
    let mut finished = job.receive_finished().await.unwrap();
    if job.state().await.unwrap() == "running" {
        let sig = tokio::time::timeout(std::time::Duration::from_secs(5), finished.next())
            .await
            .unwrap()
            .unwrap();
        assert!(sig.args().unwrap().success);
    }
    assert_eq!(job.state().await.unwrap(), "completed");
    assert_eq!(
        mgr.get_base("bb2").await.unwrap().as_str(),
        "/uk/co/devtank/OsmHost1/base/bb2"
    );
    let err = mgr.import_base("bb2", fd.into()).await.unwrap_err();
    assert_eq!(
        error_name(&err),
        "uk.co.devtank.OsmHost1.Error.AlreadyExists"
    );
}

#[tokio::test]
async fn addresses_are_an_option_a_property_and_counted_in_network_info() {
    assert!(
        is_root(),
        "this unit test creates containers and must run as root"
    );
    let p = peer().await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let mut opts = HashMap::new();
    opts.insert("ip", Value::from("10.0.3.77"));
    let path = mgr.create_container("web1", "bb", opts).await.unwrap();
    mgr.create_container("web2", "bb", HashMap::new())
        .await
        .unwrap();
    let mut opts = HashMap::new();
    opts.insert("ip", Value::from("10.0.3.77"));
    let err = mgr.create_container("web3", "bb", opts).await.unwrap_err();
    assert_eq!(
        error_name(&err),
        "uk.co.devtank.OsmHost1.Error.AlreadyExists"
    );
    let ct = proxy::<ContainerProxy>(&p.client, path.as_str()).await;
    assert_eq!(ct.ipv4_address().await.unwrap(), "10.0.3.77");
    let info = mgr.get_network_info().await.unwrap();
    let get = |k: &str| info[k].try_clone().unwrap();
    assert_eq!(String::try_from(get("Bridge")).unwrap(), "lxcbr0");
    assert_eq!(String::try_from(get("Subnet")).unwrap(), "10.0.3.0/24");
    assert_eq!(u32::try_from(get("Used")).unwrap(), 2);
    assert_eq!(u32::try_from(get("Free")).unwrap(), 251);
    assert_eq!(String::try_from(get("DnsmasqState")).unwrap(), "unmanaged");
}

#[tokio::test]
async fn snapshots_are_methods_properties_and_signals() {
    if !is_root() {
        panic!("this unit test creates containers and must run as root (the daemon allows only root or osm-admin)");
    }
    let p = peer().await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let path = mgr
        .create_container("web1", "bb", HashMap::new())
        .await
        .unwrap();
    let ct = proxy::<ContainerProxy>(&p.client, path.as_str()).await;
    let mut created = ct.receive_snapshot_created().await.unwrap();
    let mut deleted = ct.receive_snapshot_deleted().await.unwrap();
    let mut ud = HashMap::new();
    ud.insert("important", "yes");
    let num = mgr
        .create_snapshot("web1", "first", "number", ud)
        .await
        .unwrap();
    assert_eq!(num, 1);
    let wait = std::time::Duration::from_secs(5);
    let sig = tokio::time::timeout(wait, created.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sig.args().unwrap().num, 1);
    assert_eq!(ct.snapshot_count().await.unwrap(), 1);
    assert!(ct.newest_snapshot().await.unwrap() > 0);
    let list = ct.list_snapshots().await.unwrap();
    assert_eq!(list.len(), 1);
    let (n, kind, pre, _date, uid, desc, cleanup, userdata) = &list[0];
    assert_eq!((*n, kind.as_str(), *pre, *uid), (1, "single", 0, 0));
    assert_eq!((desc.as_str(), cleanup.as_str()), ("first", "number"));
    assert_eq!(userdata["important"], "yes");

    let err = ct
        .create_snapshot("", "weekly", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(
        error_name(&err),
        "uk.co.devtank.OsmHost1.Error.InvalidArgument"
    );
    let err = mgr.restore_snapshot("web1", 7).await.unwrap_err();
    assert_eq!(error_name(&err), "uk.co.devtank.OsmHost1.Error.NotFound");

    let mut restored = ct.receive_restored().await.unwrap();
    let job = mgr.restore_snapshot("web1", 1).await.unwrap();
    assert!(job.as_str().starts_with("/uk/co/devtank/OsmHost1/job/"));
    let sig = tokio::time::timeout(wait, restored.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sig.args().unwrap().num, 1);
    assert_eq!(ct.snapshot_count().await.unwrap(), 2, "the safety snapshot");

    ct.delete_snapshot(1).await.unwrap();
    let sig = tokio::time::timeout(wait, deleted.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sig.args().unwrap().num, 1);
    assert_eq!(ct.snapshot_count().await.unwrap(), 1);
}

#[tokio::test]
async fn set_container_changes_boot_properties_and_shutdown_lists_the_stopped() {
    assert!(
        is_root(),
        "run the unit tests as root (scripts/test.sh does)"
    );
    let p = peer().await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let mut opts = HashMap::new();
    opts.insert("autostart", Value::from("last-state"));
    opts.insert("boot_priority", Value::from(5i32));
    let path = mgr.create_container("web1", "bb", opts).await.unwrap();
    let c = proxy::<ContainerProxy>(&p.client, path.as_str()).await;
    assert_eq!(c.autostart_policy().await.unwrap(), "last-state");
    assert!(c.autostart().await.unwrap());
    assert_eq!(c.boot_priority().await.unwrap(), 5);
    assert_eq!(c.warning().await.unwrap(), "");

    let mut settings = HashMap::new();
    settings.insert("autostart", Value::from(false));
    settings.insert("boot_delay", Value::from(7u32));
    mgr.set_container("web1", settings).await.unwrap();
    assert_eq!(c.autostart_policy().await.unwrap(), "false");
    assert!(!c.autostart().await.unwrap());
    assert_eq!(c.boot_delay().await.unwrap(), 7);

    let mut bad = HashMap::new();
    bad.insert("colour", Value::from("red"));
    let err = mgr.set_container("web1", bad).await.unwrap_err();
    assert_eq!(
        error_name(&err),
        "uk.co.devtank.OsmHost1.Error.InvalidArgument"
    );

    mgr.start_container("web1").await.unwrap();
    assert_eq!(mgr.shutdown().await.unwrap(), ["web1"]);
    assert_eq!(c.state().await.unwrap(), "stopped");
}

#[tokio::test]
async fn layers_are_built_as_jobs_listed_and_refused_with_the_reason() {
    assert!(
        is_root(),
        "this unit test builds layers and must run as root (the daemon allows only root or osm-admin)"
    );
    let p = peer().await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    assert!(mgr.list_layers().await.unwrap().is_empty());
    let cases = [
        (
            "l1",
            "name = \"l1\"\nbase = \"bb\"\npackage = []",
            "InvalidArgument",
            "package",
        ),
        (
            "l1",
            "name = \"l2\"\nbase = \"bb\"",
            "InvalidArgument",
            "recipe is for layer \"l2\"",
        ),
        (
            "l1",
            "name = \"l1\"\nbase = \"nobase\"",
            "NotFound",
            "base \"nobase\"",
        ),
        (
            "l1",
            "name = \"l1\"\nbase = \"bb\"\n[[sources]]\nname = \"g\"\nuri = \"https://x\"\n\
             suites = [\"stable\"]\ncomponents = [\"main\"]\nkey_file = \"keys/g.asc\"",
            "InvalidArgument",
            "keys/g.asc",
        ),
    ];
    for (name, recipe, error, needle) in cases {
        let err = mgr
            .build_layer(name, recipe, HashMap::new())
            .await
            .unwrap_err();
        assert_eq!(
            error_name(&err),
            format!("uk.co.devtank.OsmHost1.Error.{error}"),
            "{recipe}: {err}"
        );
        assert!(err.to_string().contains(needle), "{recipe}: {err}");
    }
    // A valid recipe starts a job; this fake host cannot build, so the job fails and
    // leaves no layer behind.
    let job_path = mgr
        .build_layer("l1", "name = \"l1\"\nbase = \"bb\"", HashMap::new())
        .await
        .unwrap();
    let job = proxy::<JobProxy>(&p.client, job_path.as_str()).await;
    assert_eq!(job.kind().await.unwrap(), "build-layer");
    let mut finished = job.receive_finished().await.unwrap();
    if job.state().await.unwrap() == "running" {
        let sig = tokio::time::timeout(std::time::Duration::from_secs(5), finished.next())
            .await
            .unwrap()
            .unwrap();
        assert!(!sig.args().unwrap().success);
    }
    assert_eq!(job.state().await.unwrap(), "failed");
    assert!(mgr.list_layers().await.unwrap().is_empty());
    let err = mgr.delete_layer("l1").await.unwrap_err();
    assert_eq!(error_name(&err), "uk.co.devtank.OsmHost1.Error.NotFound");
}
