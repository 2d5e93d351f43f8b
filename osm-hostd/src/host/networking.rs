//! The host's side of the containers' network: the bridge, forwarding, nftables and
//! the dnsmasq process (real implementation: [`crate::net`]'s submodules).

use super::RealHost;
use std::path::Path;

pub trait Networking {
    fn bridge_exists(&self, bridge: &str) -> bool;
}

impl Networking for RealHost {
    fn bridge_exists(&self, bridge: &str) -> bool {
        Path::new("/sys/class/net")
            .join(bridge)
            .join("bridge")
            .exists()
    }
}
