//! Container networking on the host: the bridge and its address, forwarding, NAT,
//! dnsmasq with one reservation per container, and the managed block of the hosts file.
//!
//! The engine owns the addresses (each container's `ipv4` in `container.toml`, chosen
//! at create); this service makes the host follow them, every effect through the
//! host seam ([`crate::host::Networking`], [`crate::host::SystemFiles`]). It reacts to
//! the engine's container events, so it never changes what the engine decided. With
//! `[network] manage = false` only the hosts file is kept; the bridge, forwarding, NAT
//! and dnsmasq are left to someone else.

pub mod bridge;
pub mod dnsmasq;
pub mod hosts_file;
pub mod ipam;
pub mod isolation;
pub mod nat;
pub mod publish_fw;
pub mod supervisor;

use crate::engine::{Engine, Event};
use dnsmasq::{DhcpHost, DnsmasqPaths};
use ipam::Subnet;
use std::sync::Arc;
use supervisor::Supervisor;
use tokio::sync::broadcast::error::RecvError;

/// Sets up the host's side of the network and starts keeping it in step with the
/// containers. Returns the dnsmasq supervisor when the daemon manages networking.
pub async fn start(engine: &Arc<Engine>) -> Result<Option<Arc<Supervisor>>, String> {
    let cfg = engine.config().clone();
    let net = &cfg.network;
    let subnet = net.subnet;
    let host = engine.host();
    let supervisor = if net.manage {
        let report = host.ensure_bridge(&net.bridge, &subnet).await?;
        tracing::info!(bridge = %net.bridge, address = %format!("{}/{}", subnet.gateway, subnet.prefix),
            created = report.created, address_added = report.address_added, set_up = report.set_up,
            "bridge ready");
        host.enable_forwarding()?;
        apply_ruleset(engine)?;
        tracing::info!(
            nat = net.nat,
            isolate = net.isolate,
            table = nat::TABLE,
            "nftables tables applied"
        );
        if net.isolate {
            // Containers that kept running while the daemon was away.
            let ports = host.isolate_bridge_ports(&net.bridge).await?;
            tracing::info!(ports = ports.len(), "bridge ports isolated");
        }
        let paths = DnsmasqPaths::under(&cfg.runtime_dir);
        let rs = engine.reservations();
        dnsmasq::sync_files(&paths, &rs)
            .map_err(|e| format!("writing dnsmasq's files in {}: {e}", paths.dir.display()))?;
        let args = dnsmasq::args(&net.bridge, &subnet, &paths);
        Some(host.start_dnsmasq(args, paths, rs))
    } else {
        tracing::info!("network.manage = false: leaving the bridge, NAT and dnsmasq alone");
        None
    };
    sync_hosts_file(engine);
    let events = engine.subscribe();
    tokio::spawn(follow(engine.clone(), supervisor.clone(), events));
    Ok(supervisor)
}

/// The containers' firewall as the engine's containers stand now.
fn firewall(engine: &Engine, subnet: &Subnet) -> nat::Firewall {
    let net = &engine.config().network;
    nat::Firewall {
        bridge: net.bridge.clone(),
        cidr: subnet.cidr(),
        nat: net.nat,
        isolate: net.isolate,
        ports: engine
            .reservations()
            .into_iter()
            .map(|r| isolation::Port {
                veth: isolation::veth_name(&r.name),
                mac: r.mac,
                ip: r.ip,
            })
            .collect(),
        published: Vec::new(),
    }
}

/// Re-applies the nftables tables after containers came or went (their ports' rules).
fn resync_firewall(engine: &Engine) {
    let net = &engine.config().network;
    if !net.manage || !net.isolate {
        return;
    }
    if let Err(e) = apply_ruleset(engine) {
        tracing::error!(error = %e, "cannot update the containers' firewall");
    }
}

/// Isolates the bridge port of a container that just started.
async fn isolate_ports(engine: &Engine, name: &str) {
    let net = &engine.config().network;
    if !net.manage || !net.isolate {
        return;
    }
    let running = engine
        .container_info(name)
        .is_ok_and(|i| i.state == crate::engine::RunState::Running);
    if !running {
        return;
    }
    match engine.host().isolate_bridge_ports(&net.bridge).await {
        Ok(ports) => {
            tracing::debug!(container = %name, ports = ports.len(), "bridge ports isolated")
        }
        Err(e) => tracing::error!(container = %name, error = %e, "cannot isolate the bridge ports"),
    }
}

/// Replaces the daemon's nftables tables in one batch: NAT, forwarding and the bridge
/// isolation for the containers as they stand now, plus the published ports' accepts.
pub fn apply_ruleset(engine: &Engine) -> Result<(), String> {
    let subnet = engine.config().network.subnet;
    let mut batch = firewall(engine, &subnet).ruleset();
    batch.push_str(&publish_fw::rules(&engine.published_ports()));
    engine.host().apply_nft(&batch)
}

fn sync_hosts_file(engine: &Engine) {
    let path = &engine.config().hosts_file;
    let entries: Vec<_> = engine
        .reservations()
        .into_iter()
        .map(|r| (r.name, r.ip))
        .collect();
    match engine.host().sync_hosts_file(path, &entries) {
        Ok(true) => {
            tracing::info!(file = %path.display(), entries = entries.len(), "hosts file updated")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot update the hosts file")
        }
    }
}

/// Brings dnsmasq's files and the hosts file in line with the containers; a removed
/// reservation restarts dnsmasq so that its lease is purged.
fn resync(engine: &Engine, supervisor: Option<&Arc<Supervisor>>, removed: bool) {
    sync_hosts_file(engine);
    let Some(sup) = supervisor else { return };
    let rs: Vec<DhcpHost> = engine.reservations();
    match dnsmasq::sync_files(sup.paths(), &rs) {
        Ok(changed) => {
            if removed {
                sup.restart(rs);
            } else if changed {
                sup.reload(rs);
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot write dnsmasq's reservations"),
    }
}

async fn follow(
    engine: Arc<Engine>,
    supervisor: Option<Arc<Supervisor>>,
    mut events: tokio::sync::broadcast::Receiver<Event>,
) {
    loop {
        match events.recv().await {
            Ok(Event::ContainerAdded(_)) | Ok(Event::ContainerSpecChanged(_)) => {
                resync_firewall(&engine);
                resync(&engine, supervisor.as_ref(), false)
            }
            Ok(Event::ContainerRemoved(_)) | Err(RecvError::Lagged(_)) => {
                resync_firewall(&engine);
                resync(&engine, supervisor.as_ref(), true)
            }
            Ok(Event::ContainerChanged(name)) => isolate_ports(&engine, &name).await,
            Ok(_) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod seam_tests;
