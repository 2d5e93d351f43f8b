//! Customers cannot see each other on the bridge (`[network] isolate`, on by default):
//!
//! - every container's host-side veth has a name derived from the container's name
//!   ([`veth_name`], given to LXC as `lxc.net.0.veth.pair`), so the rules below can name
//!   it before the container ever starts and a restarted daemon finds it again;
//! - every port of the bridge is an isolated port (`IFLA_BRPORT_ISOLATED`): the kernel
//!   forwards frames between an isolated port and the bridge itself only, never to
//!   another isolated port. Set after each start and at daemon start;
//! - a `bridge osm_host` nftables table drops, per veth, frames whose Ethernet, ARP or
//!   IPv4 source is not the container's own MAC and address (DHCP's 0.0.0.0 discover
//!   excepted), and DHCP server replies and IPv6 router advertisements from any
//!   container; it also drops veth-to-veth forwarding, which covers the moment between
//!   LXC attaching a veth and the daemon isolating the port.

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::link::{InfoBridgePort, LinkAttribute, LinkMessage};
use rtnetlink::LinkBridgePort;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The prefix of every container's host-side veth.
pub const VETH_PREFIX: &str = "osm";

/// The host-side veth name of container `name`: `osm` + 8 hex digits of a stable hash
/// (FNV-1a, 32 bits) of the name; 11 characters, within IFNAMSIZ.
pub fn veth_name(name: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{VETH_PREFIX}{h:08x}")
}

/// One container's port: what its veth may send as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub veth: String,
    pub mac: String,
    pub ip: Ipv4Addr,
}

/// The `bridge osm_host` table (replacing any older one; with `isolate` off, only the
/// removal).
pub fn bridge_table(isolate: bool, ports: &[Port]) -> String {
    let t = super::nat::TABLE;
    let mut s = format!("table bridge {t} {{}}\ndelete table bridge {t}\n");
    if !isolate {
        return s;
    }
    let any = format!("\"{VETH_PREFIX}*\"");
    let _ = write!(
        s,
        "table bridge {t} {{\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority filter; policy accept;\n\
         \t\tiifname {any} jump from_container\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname {any} oifname {any} drop\n\
         \t}}\n\
         \tchain from_container {{\n\
         \t\tudp sport 67 drop\n\
         \t\tudp sport 547 drop\n\
         \t\ticmpv6 type nd-router-advert drop\n"
    );
    if !ports.is_empty() {
        let map: Vec<String> = ports
            .iter()
            .map(|p| format!("\"{}\" : jump port_{}", p.veth, p.veth))
            .collect();
        let _ = writeln!(s, "\t\tiifname vmap {{ {} }}", map.join(", "));
    }
    // A container port the daemon holds no rules for sends nothing.
    s.push_str("\t\tdrop\n\t}\n");
    for p in ports {
        let (veth, mac, ip) = (&p.veth, p.mac.to_ascii_lowercase(), p.ip);
        let _ = write!(
            s,
            "\tchain port_{veth} {{\n\
             \t\tether saddr != {mac} drop\n\
             \t\tarp saddr ether != {mac} drop\n\
             \t\tarp saddr ip 0.0.0.0 accept\n\
             \t\tarp saddr ip != {ip} drop\n\
             \t\tip saddr 0.0.0.0 udp sport 68 udp dport 67 accept\n\
             \t\tip saddr != {ip} drop\n\
             \t\taccept\n\
             \t}}\n"
        );
    }
    s.push_str("}\n");
    s
}

fn nl(what: &str, e: rtnetlink::Error) -> String {
    format!("{what}: {e}")
}

fn name_of(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn controller_of(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// Makes every port of `bridge` an isolated port; returns the ports set. Idempotent, and
/// cheap enough (one link dump) to run after every container start. Ports of veths not
/// named by [`veth_name`] (containers started before this daemon version) are isolated
/// too; their anti-spoofing rules apply from their next start.
pub async fn isolate_bridge_ports(bridge: &str) -> Result<Vec<String>, String> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("opening a netlink socket: {e}"))?;
    let task = tokio::spawn(conn);
    let result = async {
        let links: Vec<LinkMessage> = handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl("listing network interfaces", e))?;
        let Some(br) = links.iter().find(|l| name_of(l) == Some(bridge)) else {
            return Ok(Vec::new());
        };
        let br = br.header.index;
        let mut done = Vec::new();
        for l in links.iter().filter(|l| controller_of(l) == Some(br)) {
            let name = name_of(l).unwrap_or_default().to_string();
            let msg = LinkBridgePort::new(l.header.index)
                .append_info_data(InfoBridgePort::Isolated(true))
                .build();
            match handle.link().set_port(msg).execute().await {
                Ok(()) => done.push(name),
                // The container stopped meanwhile: its veth is gone.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {}
                Err(e) => return Err(nl(&format!("isolating bridge port {name}"), e)),
            }
        }
        Ok(done)
    }
    .await;
    task.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_short_and_distinct() {
        assert_eq!(veth_name("web1"), veth_name("web1"));
        assert_ne!(veth_name("web1"), veth_name("web2"));
        let long = "a".repeat(63);
        assert_eq!(veth_name(&long).len(), 11);
        assert!(veth_name("x").starts_with("osm"));
        // Pinned: a restarted daemon must find the veths an older one named.
        assert_eq!(veth_name(""), "osm811c9dc5");
    }

    #[test]
    fn bridge_table_guards_each_port_and_drops_servers() {
        let ports = [Port {
            veth: "osm12345678".into(),
            mac: "02:AA:00:00:00:01".into(),
            ip: "10.0.3.2".parse().unwrap(),
        }];
        let t = bridge_table(true, &ports);
        assert!(t.starts_with("table bridge osm_host {}\ndelete table bridge osm_host\n"));
        assert!(t.contains("iifname \"osm*\" oifname \"osm*\" drop"));
        assert!(t.contains("udp sport 67 drop") && t.contains("nd-router-advert drop"));
        assert!(t.contains("iifname vmap { \"osm12345678\" : jump port_osm12345678 }"));
        assert!(t.contains("ether saddr != 02:aa:00:00:00:01 drop"));
        assert!(t.contains("arp saddr ip != 10.0.3.2 drop"));
        assert!(t.contains("ip saddr != 10.0.3.2 drop"));
        let off = bridge_table(false, &ports);
        assert!(!off.contains("chain"), "{off}");
        let empty = bridge_table(true, &[]);
        assert!(!empty.contains("vmap") && empty.contains("\t\tdrop\n"));
    }
}
