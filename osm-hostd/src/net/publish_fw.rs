//! The published ports in the daemon's nftables table: a `published_input` chain (input hook) that accepts
//! exactly the public ports NGINX serves for the containers (80 and 443 while any vhost
//! exists, plus each TLS stream's port), with counters. It is appended to the NAT
//! batch (`nat::ruleset`) as a second block of the same table, so the whole table is
//! still replaced in one atomic `nft -f -`.
//!
//! Published traffic is host input (NGINX listens on the host) and then host output to
//! the container; nothing is forwarded into the containers for it.

use super::nat::TABLE;
use std::collections::BTreeSet;

/// The chain's text for `ports` (sorted, without duplicates); empty when none.
pub fn rules(ports: &BTreeSet<u16>) -> String {
    if ports.is_empty() {
        return String::new();
    }
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "table ip {TABLE} {{\n\
         \tchain published_input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\ttcp dport {{ {} }} counter accept comment \"published by osm-hostd\"\n\
         \t}}\n\
         }}\n",
        list.join(", ")
    )
}

/// The public ports the containers' publish entries need open.
pub fn published_ports<'a>(
    specs: impl IntoIterator<Item = &'a crate::publish::PublishSpec>,
) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for p in specs {
        if !p.http.is_empty() {
            ports.extend(crate::publish::VHOST_PORTS);
        }
        ports.extend(p.tls_streams.iter().map(|s| s.public));
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::{HttpRoute, PublishSpec, TlsStream};

    #[test]
    fn accepts_exactly_the_published_ports() {
        assert_eq!(rules(&BTreeSet::new()), "");
        let a = PublishSpec {
            http: vec![HttpRoute {
                host: "a.x.test".into(),
                port: 3000,
            }],
            ..Default::default()
        };
        let b = PublishSpec {
            tls_streams: vec![TlsStream {
                public: 8883,
                port: 1883,
            }],
            ..Default::default()
        };
        let ports = published_ports([&a, &b]);
        assert_eq!(ports, BTreeSet::from([80, 443, 8883]));
        let r = rules(&ports);
        assert!(
            r.contains("tcp dport { 80, 443, 8883 } counter accept"),
            "{r}"
        );
        assert!(r.contains("type filter hook input priority filter"));
        assert_eq!(published_ports([&b]), BTreeSet::from([8883]));
    }
}
