//! The network service's sequencing against the recording fake of the host seam:
//! bring-up order, what a failure half-way leaves, and following the containers.
//! (There is no teardown to test: at shutdown the bridge, the nftables tables and
//! dnsmasq keep running for the containers, and the next daemon adopts them.)

use crate::engine::{CreateRequest, Engine};
use crate::testing::{fake_engine_with, Call, FakeHost, Kind};
use std::sync::Arc;

/// The network calls, in order (containers' and subvolumes' left out).
fn net_calls(host: &FakeHost) -> Vec<Kind> {
    host.recorded()
        .iter()
        .map(Call::kind)
        .filter(|k| {
            matches!(
                k,
                Kind::EnsureBridge
                    | Kind::EnableForwarding
                    | Kind::NftApply
                    | Kind::IsolatePorts
                    | Kind::DnsmasqStart
                    | Kind::SyncHostsFile
            )
        })
        .collect()
}

async fn with_web1(
    edit: impl FnOnce(&mut crate::config::HostConfig),
) -> (tempfile::TempDir, Arc<FakeHost>, Arc<Engine>) {
    let (dir, host, engine) = fake_engine_with(edit);
    create(&engine, "web1").await;
    (dir, host, engine)
}

async fn create(engine: &Arc<Engine>, name: &str) {
    engine
        .create_container(CreateRequest {
            name: name.into(),
            base: "bb".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn bring_up_makes_the_bridge_then_forwarding_then_the_firewall_then_dnsmasq() {
    let (_dir, host, engine) = with_web1(|_| {}).await;
    let sup = super::start(&engine).await.unwrap();
    assert!(sup.is_some(), "a managed network has a dnsmasq supervisor");
    assert_eq!(
        net_calls(&host),
        vec![
            Kind::EnsureBridge,
            Kind::EnableForwarding,
            Kind::NftApply,
            Kind::IsolatePorts,
            Kind::DnsmasqStart,
            Kind::SyncHostsFile,
        ]
    );
    let cfg = engine.config();
    let ip = engine.reservations()[0].ip;
    let Call::NftApply { ruleset } = &host.recorded_of(Kind::NftApply)[0] else {
        unreachable!()
    };
    assert!(
        ruleset.contains(&super::isolation::veth_name("web1")) && ruleset.contains(&ip.to_string()),
        "the firewall names web1's port: {ruleset}"
    );
    let Call::DnsmasqStart { args } = &host.recorded_of(Kind::DnsmasqStart)[0] else {
        unreachable!()
    };
    assert!(
        args.contains(&format!("--interface={}", cfg.network.bridge)),
        "{args:?}"
    );
    let names = super::dnsmasq::DnsmasqPaths::under(&cfg.runtime_dir).names;
    let names = std::fs::read_to_string(names).unwrap();
    assert!(
        names.contains("web1"),
        "dnsmasq's files are written before it starts: {names}"
    );
    let hosts = std::fs::read_to_string(&cfg.hosts_file).unwrap();
    assert!(
        hosts.contains("web1") && hosts.contains(&ip.to_string()),
        "{hosts}"
    );
}

#[tokio::test]
async fn a_refused_firewall_stops_bring_up_before_dnsmasq() {
    let (_dir, host, engine) = with_web1(|_| {}).await;
    host.fail_nth(Kind::NftApply, 1);
    let Err(err) = super::start(&engine).await else {
        panic!("bring-up succeeded")
    };
    assert!(err.contains("nft refused"), "{err}");
    assert_eq!(
        net_calls(&host),
        vec![Kind::EnsureBridge, Kind::EnableForwarding, Kind::NftApply],
        "no dnsmasq, no port changes, no hosts file after the failure"
    );
}

#[tokio::test]
async fn a_bridge_that_cannot_be_made_stops_bring_up_at_once() {
    let (_dir, host, engine) = with_web1(|_| {}).await;
    host.fail_nth(Kind::EnsureBridge, 1);
    let Err(err) = super::start(&engine).await else {
        panic!("bring-up succeeded")
    };
    assert!(err.contains("bridge"), "{err}");
    assert_eq!(net_calls(&host), vec![Kind::EnsureBridge]);
}

#[tokio::test]
async fn an_unmanaged_network_only_keeps_the_hosts_file() {
    let (_dir, host, engine) = with_web1(|c| c.network.manage = false).await;
    assert!(super::start(&engine).await.unwrap().is_none());
    assert_eq!(net_calls(&host), vec![Kind::SyncHostsFile]);
}

#[tokio::test]
async fn containers_coming_and_going_update_the_firewall_and_the_hosts_file() {
    let (_dir, host, engine) = with_web1(|_| {}).await;
    super::start(&engine).await.unwrap();
    let applied = host.count(Kind::NftApply);
    create(&engine, "web2").await;
    let veth2 = super::isolation::veth_name("web2");
    let last_ruleset = |host: &FakeHost| match host.recorded_of(Kind::NftApply).pop() {
        Some(Call::NftApply { ruleset }) => ruleset,
        _ => String::new(),
    };
    let mut waited = 0;
    while !(host.count(Kind::NftApply) > applied && last_ruleset(&host).contains(&veth2)) {
        assert!(waited < 200, "web2's port never reached the firewall");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    let hosts_file = engine.config().hosts_file.clone();
    let mut waited = 0;
    while !std::fs::read_to_string(&hosts_file)
        .unwrap()
        .contains("web2")
    {
        assert!(waited < 200, "web2 never reached the hosts file");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    engine.delete_container("web2", false).await.unwrap();
    let mut waited = 0;
    while last_ruleset(&host).contains(&veth2)
        || std::fs::read_to_string(&hosts_file)
            .unwrap()
            .contains("web2")
    {
        assert!(
            waited < 200,
            "web2 stayed in the firewall or the hosts file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
}
