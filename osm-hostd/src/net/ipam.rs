//! IPv4 address management for the bridge's subnet: parsing the `[network]` settings
//! and choosing each container's fixed address. Pure logic; the engine supplies the set
//! of addresses in use (from every `container.toml`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The bridge's subnet as `hostd.toml` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The bridge's own address: the containers' gateway, DNS and DHCP server.
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// First and last address handed to containers (inclusive).
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl Subnet {
    /// Parses `address` (`10.0.3.1/24`) and an optional `dhcp_range`
    /// (`10.0.3.2-10.0.3.254`); without a range, every host address but the gateway.
    pub fn parse(address: &str, range: Option<&str>) -> Result<Subnet, String> {
        let (ip, prefix) = address.split_once('/').ok_or_else(|| {
            format!("network.address = {address:?} must be in CIDR form, e.g. 10.0.3.1/24")
        })?;
        let gateway: Ipv4Addr = ip
            .trim()
            .parse()
            .map_err(|_| format!("network.address = {address:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .trim()
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| {
                format!("network.address = {address:?}: the prefix length must be 8 to 30")
            })?;
        let mut s = Subnet {
            gateway,
            prefix,
            first: gateway,
            last: gateway,
        };
        if gateway == s.network() || gateway == s.broadcast() {
            return Err(format!(
                "network.address = {address:?} is the subnet's network or broadcast address; give a host address such as {}/{prefix}",
                Ipv4Addr::from(u32::from(s.network()) + 1)
            ));
        }
        match range {
            None => {
                // Every host address; the gateway is trimmed off when it is at an end.
                s.first = Ipv4Addr::from(u32::from(s.network()) + 1);
                s.last = Ipv4Addr::from(u32::from(s.broadcast()) - 1);
                if s.first == gateway {
                    s.first = Ipv4Addr::from(u32::from(gateway) + 1);
                } else if s.last == gateway {
                    s.last = Ipv4Addr::from(u32::from(gateway) - 1);
                }
            }
            Some(r) => {
                let bad = || {
                    format!("network.dhcp_range = {r:?} must be two IPv4 addresses, e.g. 10.0.3.2-10.0.3.254")
                };
                let (a, b) = r.split_once('-').ok_or_else(bad)?;
                s.first = a.trim().parse().map_err(|_| bad())?;
                s.last = b.trim().parse().map_err(|_| bad())?;
                if s.first > s.last {
                    return Err(format!("network.dhcp_range = {r:?} ends before it starts"));
                }
                for end in [s.first, s.last] {
                    if !s.is_host(end) {
                        return Err(format!(
                            "network.dhcp_range = {r:?} is not inside network.address = {address:?} (hosts {} to {})",
                            Ipv4Addr::from(u32::from(s.network()) + 1),
                            Ipv4Addr::from(u32::from(s.broadcast()) - 1)
                        ));
                    }
                }
            }
        }
        if s.capacity() == 0 {
            return Err(format!(
                "network.dhcp_range leaves no address for containers besides the gateway {gateway}"
            ));
        }
        Ok(s)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) | !self.mask())
    }

    /// `10.0.3.0/24`
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network(), self.prefix)
    }

    /// A usable host address of the subnet (not its network or broadcast address).
    fn is_host(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) & self.mask()) == u32::from(self.network())
            && ip != self.network()
            && ip != self.broadcast()
    }

    /// Whether `ip` may be given to a container: in the range and not the gateway.
    pub fn assignable(&self, ip: Ipv4Addr) -> bool {
        ip >= self.first && ip <= self.last && ip != self.gateway && self.is_host(ip)
    }

    /// How many addresses containers can have.
    pub fn capacity(&self) -> u32 {
        let span = u32::from(self.last) - u32::from(self.first) + 1;
        span - u32::from(self.in_range(self.gateway))
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        ip >= self.first && ip <= self.last
    }

    /// The lowest assignable address not in `used`.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last))
            .map(Ipv4Addr::from)
            .find(|ip| self.assignable(*ip) && !used.contains(ip))
    }

    /// Checks an address asked for with `create --ip`.
    pub fn check_pinned(
        &self,
        text: &str,
        used: &BTreeSet<Ipv4Addr>,
    ) -> Result<Ipv4Addr, PinError> {
        let ip: Ipv4Addr = text
            .trim()
            .parse()
            .map_err(|_| PinError::Invalid(format!("{text:?} is not an IPv4 address")))?;
        if ip == self.gateway {
            return Err(PinError::Invalid(format!(
                "{ip} is the bridge's own address (the gateway); choose one from {} to {}",
                self.first, self.last
            )));
        }
        if !self.assignable(ip) {
            return Err(PinError::Invalid(format!(
                "{ip} is outside the containers' range {} to {}",
                self.first, self.last
            )));
        }
        if used.contains(&ip) {
            return Err(PinError::Taken(ip));
        }
        Ok(ip)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinError {
    Invalid(String),
    Taken(Ipv4Addr),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn design_defaults_parse() {
        let s = Subnet::parse("10.0.3.1/24", Some("10.0.3.2-10.0.3.254")).unwrap();
        assert_eq!(s.cidr(), "10.0.3.0/24");
        assert_eq!(s.netmask(), ip("255.255.255.0"));
        assert_eq!(s.capacity(), 253);
        assert_eq!(s, Subnet::parse("10.0.3.1/24", None).unwrap());
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        for (a, r, want) in [
            ("10.0.3.1", None, "CIDR"),
            ("10.0.3.300/24", None, "not an IPv4"),
            ("10.0.3.1/33", None, "prefix"),
            ("10.0.3.0/24", None, "network or broadcast"),
            ("10.0.3.1/24", Some("10.0.4.2-10.0.4.9"), "not inside"),
            ("10.0.3.1/24", Some("10.0.3.2-10.0.3.255"), "not inside"),
            ("10.0.3.1/24", Some("10.0.3.9-10.0.3.2"), "ends before"),
            ("10.0.3.1/24", Some("10.0.3.2"), "two IPv4"),
            ("10.0.3.1/24", Some("10.0.3.1-10.0.3.1"), "no address"),
        ] {
            let err = Subnet::parse(a, r).unwrap_err();
            assert!(err.contains(want), "{a} {r:?}: {err}");
        }
    }

    #[test]
    fn allocation_takes_the_lowest_free_address_and_skips_the_gateway() {
        let s = Subnet::parse("10.0.3.5/24", Some("10.0.3.4-10.0.3.7")).unwrap();
        assert_eq!(s.capacity(), 3);
        let mut used = BTreeSet::new();
        let mut got = vec![];
        while let Some(a) = s.allocate(&used) {
            used.insert(a);
            got.push(a);
        }
        assert_eq!(got, [ip("10.0.3.4"), ip("10.0.3.6"), ip("10.0.3.7")]);
        used.remove(&ip("10.0.3.6"));
        assert_eq!(
            s.allocate(&used),
            Some(ip("10.0.3.6")),
            "a released address is reused"
        );
    }

    #[test]
    fn pinned_addresses_are_checked() {
        let s = Subnet::parse("10.0.3.1/24", Some("10.0.3.2-10.0.3.100")).unwrap();
        let used: BTreeSet<_> = [ip("10.0.3.10")].into();
        assert_eq!(s.check_pinned("10.0.3.11", &used), Ok(ip("10.0.3.11")));
        assert_eq!(
            s.check_pinned("10.0.3.10", &used),
            Err(PinError::Taken(ip("10.0.3.10")))
        );
        for bad in ["10.0.3.1", "10.0.3.200", "10.0.4.2", "x"] {
            assert!(
                matches!(s.check_pinned(bad, &used), Err(PinError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
