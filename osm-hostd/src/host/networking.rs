//! The host's side of the containers' network: the bridge, forwarding, nftables and
//! the dnsmasq process (real implementation: [`crate::net`]'s submodules). The service
//! that decides what to apply, and when, is [`crate::net`].

use super::RealHost;
use crate::net::bridge::BridgeReport;
use crate::net::dnsmasq::{DhcpHost, DnsmasqPaths};
use crate::net::ipam::Subnet;
use crate::net::supervisor::Supervisor;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

/// What the asynchronous (netlink) calls return.
pub type NetFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

pub trait Networking {
    fn bridge_exists(&self, bridge: &str) -> bool;
    /// Makes `bridge` exist, hold `subnet.gateway/prefix` and be up. Idempotent.
    fn ensure_bridge<'a>(
        &'a self,
        bridge: &'a str,
        subnet: &'a Subnet,
    ) -> NetFuture<'a, BridgeReport>;
    /// Turns on IPv4 forwarding.
    fn enable_forwarding(&self) -> Result<(), String>;
    /// Replaces the daemon's nftables tables with `ruleset`, in one `nft -f` batch.
    fn apply_nft(&self, ruleset: &str) -> Result<(), String>;
    /// Isolates every container port of `bridge`; returns the ports changed.
    fn isolate_bridge_ports<'a>(&'a self, bridge: &'a str) -> NetFuture<'a, Vec<String>>;
    /// Starts dnsmasq with `args` under a supervisor (adopting a running dnsmasq when
    /// it has exactly these arguments).
    fn start_dnsmasq(
        &self,
        args: Vec<String>,
        paths: DnsmasqPaths,
        rs: Vec<DhcpHost>,
    ) -> Arc<Supervisor>;
}

impl Networking for RealHost {
    fn bridge_exists(&self, bridge: &str) -> bool {
        Path::new("/sys/class/net")
            .join(bridge)
            .join("bridge")
            .exists()
    }
    fn ensure_bridge<'a>(
        &'a self,
        bridge: &'a str,
        subnet: &'a Subnet,
    ) -> NetFuture<'a, BridgeReport> {
        Box::pin(crate::net::bridge::ensure(bridge, subnet))
    }
    fn enable_forwarding(&self) -> Result<(), String> {
        crate::net::bridge::enable_forwarding()
    }
    fn apply_nft(&self, ruleset: &str) -> Result<(), String> {
        crate::net::nat::apply(ruleset)
    }
    fn isolate_bridge_ports<'a>(&'a self, bridge: &'a str) -> NetFuture<'a, Vec<String>> {
        Box::pin(crate::net::isolation::isolate_bridge_ports(bridge))
    }
    fn start_dnsmasq(
        &self,
        args: Vec<String>,
        paths: DnsmasqPaths,
        rs: Vec<DhcpHost>,
    ) -> Arc<Supervisor> {
        Supervisor::spawn(args, paths, rs)
    }
}
