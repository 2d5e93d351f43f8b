//! The D-Bus layer over a peer-to-peer connection (no bus daemon, no root needed),
//! with the engine on a fake host.

use super::auth::{Admins, Auth, Policy};
use super::serve;
use futures_util::StreamExt;
use osm_host_bus as api;
use osm_host_bus::proxies::{BaseProxy, ContainerProxy, JobProxy, ManagerProxy};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use zbus::connection::Builder;
use zbus::zvariant::Value;
use zbus::Connection;

struct Peer {
    _dir: tempfile::TempDir,
    server: Connection,
    client: Connection,
}

/// A peer whose caller (this test process) is an administrator.
async fn peer() -> Peer {
    peer_with(Auth::new(Admins::uids([nix::unistd::geteuid().as_raw()]))).await
}

async fn peer_with(auth: Auth) -> Peer {
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
    serve(&server, engine, auth).await.unwrap();
    Peer {
        _dir: dir,
        server,
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

/// Admits the caller while `admit` is set: a test switches it off after setting up.
struct Switch(Arc<AtomicBool>);

impl Policy for Switch {
    fn may_change(&self, caller: &super::auth::Caller) -> Result<(), String> {
        if self.0.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(format!("uid {} is not an administrator here", caller.uid))
        }
    }
}

const DENIED: &str = "uk.co.devtank.OsmHost1.Error.AccessDenied";

#[tokio::test]
async fn mutating_calls_are_refused_to_callers_the_policy_does_not_admit() {
    let p = peer_with(Auth::new(Admins::uids([]))).await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let err = mgr
        .create_container("web1", "bb", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(error_name(&err), DENIED);
    assert!(err.to_string().contains("osm-admin"), "{err}");
    assert!(err.to_string().contains("usermod -aG osm-admin"), "{err}");
    assert_eq!(
        error_name(&mgr.get_container("web1").await.unwrap_err()),
        "uk.co.devtank.OsmHost1.Error.NotFound",
        "a refused create leaves nothing behind"
    );
}

#[tokio::test]
async fn a_caller_the_policy_refuses_may_still_read_everything() {
    let admit = Arc::new(AtomicBool::new(true));
    let p = peer_with(Auth::new(Switch(admit.clone()))).await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let path = mgr
        .create_container("web1", "bb", HashMap::new())
        .await
        .unwrap();
    mgr.create_snapshot("web1", "first", "", HashMap::new())
        .await
        .unwrap();
    admit.store(false, Ordering::SeqCst);

    // Every read-only method of the contract answers (or fails for another reason).
    let ct = proxy::<ContainerProxy>(&p.client, path.as_str()).await;
    assert_eq!(mgr.get_container("web1").await.unwrap(), path);
    assert_ne!(error_name(&mgr.get_base("none").await.unwrap_err()), DENIED);
    assert_eq!(mgr.list_snapshots("web1").await.unwrap().len(), 1);
    assert_eq!(ct.list_snapshots().await.unwrap().len(), 1);
    assert!(mgr.get_network_info().await.is_ok());
    assert!(mgr.get_backup_status().await.is_ok());
    if let Err(e) = mgr.list_backups("web1").await {
        assert_ne!(error_name(&e), DENIED, "{e}");
    }
    assert!(ct.get_disk_usage().await.is_ok());
    assert!(mgr.list_customers().await.is_ok());
    assert!(mgr.get_capacity().await.is_ok());
    assert!(mgr.check_health(3600).await.is_ok());
    assert!(mgr.list_layers().await.is_ok());
    if let Err(e) = mgr.list_backups_from_host("web1", "").await {
        assert_ne!(error_name(&e), DENIED, "{e}");
    }
    assert_eq!(ct.state().await.unwrap(), "stopped");
    assert_eq!(
        api::access::READ_ONLY_METHODS.len(),
        13,
        "a read above per method"
    );

    // Every verb that changes state is refused, on every object, and changes nothing.
    let base = proxy::<BaseProxy>(&p.client, &api::base_path("bb")).await;
    let archive = tempfile::NamedTempFile::new().unwrap();
    let refused: Vec<zbus::Result<()>> = vec![
        mgr.start_container("web1").await,
        ct.start().await,
        mgr.stop_container("web1", true, 0).await,
        ct.stop(true, 0).await,
        mgr.restart_container("web1", 0).await,
        ct.restart(0).await,
        mgr.delete_container("web1", true).await,
        ct.delete(true).await,
        mgr.delete_snapshot("web1", 1).await,
        ct.delete_snapshot(1).await,
        mgr.cleanup_snapshots("web1").await.map(drop),
        ct.cleanup_snapshots().await.map(drop),
        mgr.restore_snapshot("web1", 1).await.map(drop),
        ct.restore_snapshot(1).await.map(drop),
        mgr.create_snapshot("web1", "", "", HashMap::new())
            .await
            .map(drop),
        ct.create_snapshot("", "", HashMap::new()).await.map(drop),
        mgr.set_container("web1", HashMap::new()).await,
        mgr.delete_base("bb").await,
        base.delete().await,
        mgr.import_base("b2", std::os::fd::AsFd::as_fd(archive.as_file()).into())
            .await
            .map(drop),
        mgr.build_base("b2", "").await.map(drop),
        mgr.prune_bases("bb").await.map(drop),
        mgr.prune_layers("").await.map(drop),
        mgr.run_backup(&[], true).await.map(drop),
        mgr.restore_backup("web1", "", "").await.map(drop),
        mgr.shutdown().await.map(drop),
    ];
    for (i, r) in refused.into_iter().enumerate() {
        let err = r.expect_err("a mutating call went through");
        assert_eq!(error_name(&err), DENIED, "call {i}: {err}");
        assert!(err.to_string().contains("not an administrator"), "{err}");
    }
    assert_eq!(ct.state().await.unwrap(), "stopped");
    assert_eq!(ct.snapshot_count().await.unwrap(), 1);
}

#[tokio::test]
async fn created_containers_appear_in_the_object_manager_and_signal_state() {
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
    assert_eq!(info.bridge, "lxcbr0");
    assert_eq!(info.subnet, "10.0.3.0/24");
    assert_eq!((info.used, info.free), (2, 251));
    assert_eq!(info.dnsmasq_state, "unmanaged");
}

#[tokio::test]
async fn snapshots_are_methods_properties_and_signals() {
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
    let s = &list[0];
    assert_eq!(
        (s.num, s.kind.as_str(), s.pre_num, s.uid),
        (1, "single", 0, 0)
    );
    assert_eq!(
        (s.description.as_str(), s.cleanup.as_str()),
        ("first", "number")
    );
    assert_eq!(s.userdata["important"], "yes");
    assert!(
        s.date > 1_600_000_000_000_000,
        "µs since the epoch: {}",
        s.date
    );

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
async fn publish_and_customers_are_typed_methods_and_properties() {
    let p = peer().await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let path = mgr
        .create_container("web1", "bb", HashMap::new())
        .await
        .unwrap();
    let err = mgr
        .publish("web1", &[("not a host", 3000)], &[])
        .await
        .unwrap_err();
    assert_eq!(
        error_name(&err),
        "uk.co.devtank.OsmHost1.Error.InvalidArgument"
    );
    // The fake engine's config has no [publish] domain.
    let err = mgr
        .publish("web1", &[("web1.example.test", 3000)], &[(8883, 1883)])
        .await
        .unwrap_err();
    assert_eq!(
        error_name(&err),
        "uk.co.devtank.OsmHost1.Error.InvalidState"
    );
    assert!(err.to_string().contains("[publish] domain"), "{err}");
    let err = mgr
        .unpublish("web1", &["web1.example.test"], &[], false)
        .await
        .unwrap_err();
    assert_eq!(error_name(&err), "uk.co.devtank.OsmHost1.Error.NotFound");
    let err = mgr
        .add_customer("Acme Corp", 8883, HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(
        error_name(&err),
        "uk.co.devtank.OsmHost1.Error.InvalidArgument"
    );
    assert!(err.to_string().contains("acme-corp"), "{err}");
    assert!(mgr.list_customers().await.unwrap().is_empty());
    let err = mgr.delete_customer("web1").await.unwrap_err();
    assert_eq!(
        error_name(&err),
        "uk.co.devtank.OsmHost1.Error.InvalidArgument"
    );
    let ct = proxy::<ContainerProxy>(&p.client, path.as_str()).await;
    assert!(ct.published_http().await.unwrap().is_empty());
    assert!(ct.published_streams().await.unwrap().is_empty());
    assert_eq!(ct.preset().await.unwrap(), "");
}

/// The bus policy file lets anyone call exactly the contract's read-only methods (the
/// test above checks the daemon answers each of them to a non-admin).
#[test]
fn the_bus_policy_lets_everyone_call_exactly_the_read_only_methods() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/dbus/uk.co.devtank.OsmHost1.conf"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("<policy context=\"default\">").unwrap();
    let default = &text[start..start + text[start..].find("</policy>").unwrap()];
    let attr = |rule: &str, key: &str| -> Option<String> {
        let at = rule.find(&format!("{key}=\""))? + key.len() + 2;
        Some(rule[at..at + rule[at..].find('"')?].to_string())
    };
    let mut allowed: Vec<(String, String)> = default
        .split("<allow")
        .skip(1)
        .filter_map(|rule| Some((attr(rule, "send_interface")?, attr(rule, "send_member")?)))
        .filter(|(iface, _)| iface.starts_with(api::BUS_NAME))
        .collect();
    allowed.sort();
    let mut want: Vec<(String, String)> = api::access::READ_ONLY_METHODS
        .iter()
        .map(|(i, m)| (i.to_string(), m.to_string()))
        .collect();
    want.sort();
    assert_eq!(allowed, want);
}

#[tokio::test]
async fn one_read_of_every_property_reads_the_container_once() {
    let p = peer().await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let path = mgr
        .create_container("web1", "bb", HashMap::new())
        .await
        .unwrap();
    let obj = p
        .server
        .object_server()
        .interface::<_, super::ContainerObject>(path.as_str())
        .await
        .unwrap();
    let props = proxy::<zbus::fdo::PropertiesProxy>(&p.client, path.as_str()).await;
    let iface = zbus::names::InterfaceName::try_from(api::CONTAINER_IFACE).unwrap();
    let reads = || async { obj.get().await.views_read() };
    for _ in 0..2 {
        let before = reads().await;
        let all = props.get_all(iface.clone()).await.unwrap();
        assert!(all.len() >= 20, "{all:?}");
        assert_eq!(reads().await, before + 1, "one GetAll, one read");
    }
    let om = proxy::<zbus::fdo::ObjectManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let before = reads().await;
    om.get_managed_objects().await.unwrap();
    // One read, unless the machine stalls past VIEW_MAX_AGE mid-list; never one per
    // property.
    assert!(reads().await <= before + 2, "one list, one read");

    // An event makes the next read fresh.
    mgr.create_snapshot("web1", "", "", HashMap::new())
        .await
        .unwrap();
    let all = props.get_all(iface).await.unwrap();
    assert_eq!(u32::try_from(&all["SnapshotCount"]).unwrap(), 1);
}

/// `osm-hostctl info --json` and `list --json` carry every Container property the daemon
/// serves, under its snake_case name (`info` once lost the LastBackup* properties).
#[tokio::test]
async fn the_cli_decodes_every_container_property() {
    let p = peer().await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let path = mgr
        .create_container("web1", "bb", HashMap::new())
        .await
        .unwrap();
    let props = proxy::<zbus::fdo::PropertiesProxy>(&p.client, path.as_str()).await;
    let iface = zbus::names::InterfaceName::try_from(api::CONTAINER_IFACE).unwrap();
    let all = props.get_all(iface).await.unwrap();
    let info = osm_hostctl::model::ContainerInfo::from_properties(&all).unwrap();
    let json = serde_json::to_value(&info).unwrap();
    let snake = |name: &str| {
        let mut out = String::new();
        let mut prev_lower = false;
        for c in name.chars() {
            if c.is_ascii_uppercase() && prev_lower {
                out.push('_');
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            out.push(c.to_ascii_lowercase());
        }
        out
    };
    // The CLI groups the published vhosts and streams under `published`.
    let field = |key: &str| match key {
        "published_http" => json["published"].get("http"),
        "published_streams" => json["published"].get("tls_streams"),
        _ => json.get(key),
    };
    let mut missing: Vec<String> = all
        .keys()
        .map(|k| snake(k))
        .filter(|k| field(k).is_none())
        .collect();
    missing.sort();
    assert!(missing.is_empty(), "the CLI drops {missing:?}");
    assert_eq!(json["name"], "web1");
    assert_eq!(json["last_backup_result"], "");
}

#[tokio::test]
async fn layers_are_built_as_jobs_listed_and_refused_with_the_reason() {
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

#[tokio::test]
async fn a_rebase_is_a_job_whose_output_is_the_report() {
    let p = peer().await;
    let mgr = proxy::<ManagerProxy>(&p.client, api::MANAGER_PATH).await;
    let archive = tempfile::NamedTempFile::new().unwrap();
    let fd = std::os::fd::AsFd::as_fd(archive.as_file());
    let import = mgr.import_base("bb@2", fd.into()).await.unwrap();
    let import = proxy::<JobProxy>(&p.client, import.as_str()).await;
    let done = |job: JobProxy<'static>| async move {
        for _ in 0..100 {
            if job.state().await.unwrap() != "running" {
                return job;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the job did not finish");
    };
    assert_eq!(done(import).await.state().await.unwrap(), "completed");
    mgr.create_container("c1", "bb", HashMap::new())
        .await
        .unwrap();

    let err = mgr.rebase("c1", "bb", &[], false).await.unwrap_err();
    assert_eq!(
        error_name(&err),
        "uk.co.devtank.OsmHost1.Error.InvalidArgument"
    );
    assert!(err.to_string().contains("already on bb"), "{err}");
    let err = mgr.rebase("c1", "bb@9", &[], false).await.unwrap_err();
    assert_eq!(error_name(&err), "uk.co.devtank.OsmHost1.Error.NotFound");

    let path = mgr.rebase("c1", "bb@2", &[], true).await.unwrap();
    let job = done(proxy::<JobProxy>(&p.client, path.as_str()).await).await;
    assert_eq!(job.kind().await.unwrap(), "rebase");
    assert_eq!(
        job.state().await.unwrap(),
        "completed",
        "{:?}",
        job.message().await
    );
    let report: serde_json::Value = serde_json::from_str(&job.output().await.unwrap()).unwrap();
    assert_eq!(report["container"], "c1");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["from"]["base"], "bb");
    assert_eq!(report["to"]["base"], "bb@2");
    assert!(report["conflicts"].as_array().unwrap().is_empty());
}
