//! Each container's fixed IPv4 address: chosen at create (the lowest free one in the
//! range, or the one asked for), stored in `container.toml`, released with the
//! container. The host side (bridge, dnsmasq, hosts file) follows in `crate::net`.

use super::{Engine, NameClaim};
use crate::error::{EngineError, EngineResult};
use crate::net::dnsmasq::DhcpHost;
use crate::net::ipam::{PinError, Subnet};
use crate::net::supervisor::{DnsmasqStatus, Supervisor};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

const IP_KEY: &str = "ip:";

/// What `GetNetworkInfo` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub bridge: String,
    /// The bridge's address, `10.0.3.1/24`.
    pub address: String,
    /// The subnet, `10.0.3.0/24`.
    pub subnet: String,
    pub range_first: String,
    pub range_last: String,
    pub used: u32,
    pub free: u32,
    pub nat: bool,
    pub managed: bool,
    /// `None` when the daemon does not manage networking.
    pub dnsmasq: Option<DnsmasqStatus>,
}

impl Engine {
    pub(super) fn subnet(&self) -> Subnet {
        self.cfg.network.subnet
    }

    fn used_addresses(&self) -> BTreeSet<Ipv4Addr> {
        self.all_containers()
            .iter()
            .filter_map(|c| c.info().spec.ipv4.and_then(|a| a.parse().ok()))
            .collect()
    }

    /// Chooses (or checks a pinned) address and holds it until the create publishes.
    pub(super) fn allocate_ipv4(
        &self,
        pinned: Option<&str>,
    ) -> EngineResult<(Ipv4Addr, NameClaim<'_>)> {
        let subnet = self.subnet();
        let mut reserved = self.reserved.lock().expect("reserved lock");
        let mut used = self.used_addresses();
        used.extend(
            reserved
                .iter()
                .filter_map(|k| k.strip_prefix(IP_KEY))
                .filter_map(|a| a.parse::<Ipv4Addr>().ok()),
        );
        let ip = match pinned {
            Some(text) => subnet.check_pinned(text, &used).map_err(|e| match e {
                PinError::Invalid(m) => EngineError::invalid_argument(m),
                PinError::Taken(ip) => EngineError::already_exists(format!(
                    "address {ip} is already taken{}; choose another or leave --ip out to get a free one",
                    self.owner_of(ip).map(|n| format!(" by container {n}")).unwrap_or_default()
                )),
            })?,
            None => subnet.allocate(&used).ok_or_else(|| {
                EngineError::no_space(format!(
                    "no free address left in {} to {} ({} in use); widen network.dhcp_range or delete unused containers",
                    subnet.first,
                    subnet.last,
                    used.len()
                ))
            })?,
        };
        let key = format!("{IP_KEY}{ip}");
        reserved.insert(key.clone());
        Ok((ip, NameClaim { engine: self, key }))
    }

    fn owner_of(&self, ip: Ipv4Addr) -> Option<String> {
        let text = ip.to_string();
        self.all_containers()
            .into_iter()
            .find(|c| c.info().spec.ipv4.as_deref() == Some(text.as_str()))
            .map(|c| c.name.clone())
    }

    /// Gives an address to containers whose spec predates networking (or that share
    /// one, e.g. after a restore), keeping the first holder of a duplicate.
    pub(super) fn assign_missing_addresses(&self) {
        let subnet = self.subnet();
        let mut seen = BTreeSet::new();
        let mut needy = Vec::new();
        for c in self.all_containers() {
            match c.info().spec.ipv4.and_then(|a| a.parse::<Ipv4Addr>().ok()) {
                Some(ip) if subnet.assignable(ip) && seen.insert(ip) => {}
                _ => needy.push(c),
            }
        }
        for c in needy {
            let Some(ip) = subnet.allocate(&seen) else {
                tracing::error!(container = %c.name, "no free address for the container");
                continue;
            };
            let mut spec = c.info().spec;
            tracing::warn!(container = %c.name, old = ?spec.ipv4, new = %ip, "assigning the container an address");
            spec.ipv4 = Some(ip.to_string());
            if let Err(e) = spec.save(&self.store.container_dir(&c.name)) {
                tracing::error!(container = %c.name, error = %e, "cannot record the container's address");
                continue;
            }
            seen.insert(ip);
            c.update(|s| s.spec = spec);
        }
    }

    /// Every container's DHCP reservation (name, MAC, address), sorted by name.
    pub fn reservations(&self) -> Vec<DhcpHost> {
        self.all_containers()
            .iter()
            .filter_map(|c| {
                let spec = c.info().spec;
                Some(DhcpHost {
                    ip: spec.ipv4.as_deref()?.parse().ok()?,
                    name: spec.name,
                    mac: spec.mac,
                })
            })
            .collect()
    }

    /// Lets `network_info` report dnsmasq's state.
    pub fn set_dnsmasq(&self, supervisor: Arc<Supervisor>) {
        let _ = self.dnsmasq.set(supervisor);
    }

    pub fn network_info(&self) -> NetworkInfo {
        let subnet = self.subnet();
        // Addresses outside the range (left by a changed config) take nothing from it.
        let used = self
            .used_addresses()
            .into_iter()
            .filter(|ip| subnet.assignable(*ip))
            .count() as u32;
        let net = &self.cfg.network;
        NetworkInfo {
            bridge: net.bridge.clone(),
            address: format!("{}/{}", subnet.gateway, subnet.prefix),
            subnet: subnet.cidr(),
            range_first: subnet.first.to_string(),
            range_last: subnet.last.to_string(),
            used,
            free: subnet.capacity().saturating_sub(used),
            nat: net.nat,
            managed: net.manage,
            dnsmasq: self.dnsmasq.get().map(|s| s.status()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::{CreateRequest, Engine};
    use crate::error::ErrorKind;
    use std::sync::Arc;

    fn req(name: &str, ip: Option<&str>) -> CreateRequest {
        CreateRequest {
            name: name.into(),
            base: "bb".into(),
            ip: ip.map(String::from),
            ..Default::default()
        }
    }

    fn ip_of(e: &Engine, name: &str) -> Option<String> {
        e.container_info(name).unwrap().spec.ipv4
    }

    async fn engine_with(names: &[&str]) -> (tempfile::TempDir, Arc<Engine>) {
        let (dir, _host, engine) = crate::testing::fake_engine();
        for n in names {
            engine.create_container(req(n, None)).await.unwrap();
        }
        (dir, engine)
    }

    #[tokio::test]
    async fn addresses_are_the_lowest_free_stored_and_released() {
        let (_d, e) = engine_with(&["a", "b"]).await;
        assert_eq!(ip_of(&e, "a").as_deref(), Some("10.0.3.2"));
        assert_eq!(ip_of(&e, "b").as_deref(), Some("10.0.3.3"));
        let spec = crate::spec::ContainerSpec::load(&e.store().container_dir("b")).unwrap();
        assert_eq!(
            spec.ipv4.as_deref(),
            Some("10.0.3.3"),
            "stored in container.toml"
        );
        e.delete_container("a", false).await.unwrap();
        e.create_container(req("c", None)).await.unwrap();
        assert_eq!(
            ip_of(&e, "c").as_deref(),
            Some("10.0.3.2"),
            "a deleted container's address is released"
        );
        let info = e.network_info();
        assert_eq!(
            (info.used, info.free, info.subnet.as_str()),
            (2, 251, "10.0.3.0/24")
        );
    }

    #[tokio::test]
    async fn pinned_addresses_are_honoured_or_refused() {
        let (_d, e) = engine_with(&["a"]).await;
        e.create_container(req("p", Some("10.0.3.50")))
            .await
            .unwrap();
        assert_eq!(ip_of(&e, "p").as_deref(), Some("10.0.3.50"));
        let err = e
            .create_container(req("q", Some("10.0.3.50")))
            .await
            .unwrap_err();
        assert!(
            (err.kind() == ErrorKind::AlreadyExists && err.message().contains("container p")),
            "{err:?}"
        );
        for bad in ["10.0.3.1", "10.0.4.9", "nonsense"] {
            let err = e.create_container(req("q", Some(bad))).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}: {err:?}");
        }
        assert!(
            e.container_info("q").is_err(),
            "refused creates leave nothing"
        );
        // The same create again, pinned or not, is idempotent.
        e.create_container(req("p", Some("10.0.3.50")))
            .await
            .unwrap();
        e.create_container(req("p", None)).await.unwrap();
        assert!(e
            .create_container(req("p", Some("10.0.3.51")))
            .await
            .is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creates_never_share_an_address() {
        let (_d, e) = engine_with(&[]).await;
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let e = e.clone();
                tokio::spawn(async move { e.create_container(req(&format!("c{i}"), None)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let ips: std::collections::BTreeSet<_> =
            e.reservations().into_iter().map(|r| r.ip).collect();
        assert_eq!(ips.len(), 12);
        assert_eq!(ips.last().unwrap().to_string(), "10.0.3.13");
    }

    #[tokio::test]
    async fn old_specs_without_an_address_get_one_at_open() {
        let (dir, e) = engine_with(&["a", "b"]).await;
        for n in ["a", "b"] {
            let d = e.store().container_dir(n);
            let mut spec = crate::spec::ContainerSpec::load(&d).unwrap();
            spec.ipv4 = if n == "a" {
                None
            } else {
                Some("10.0.3.2".into())
            };
            spec.save(&d).unwrap();
        }
        let cfg = e.config().clone();
        let store = crate::store::Store::at(&cfg.store_root);
        drop(e);
        let facts = crate::lxcconf::HostFacts {
            apparmor: false,
            v2_controllers: vec![],
            v1_controllers: vec![],
            cgroup2_only: false,
        };
        let host = Arc::new(crate::testing::FakeHost::default());
        let e = Engine::open(cfg, store, facts, host).unwrap();
        let (a, b) = (ip_of(&e, "a").unwrap(), ip_of(&e, "b").unwrap());
        assert_ne!(a, b);
        assert_eq!(b, "10.0.3.2", "the holder of an address keeps it");
        let spec = crate::spec::ContainerSpec::load(&e.store().container_dir("a")).unwrap();
        assert_eq!(spec.ipv4, Some(a));
        assert_eq!(e.reservations().len(), 2);
        drop(dir);
    }
}
