//! The bridge, through rtnetlink: created if missing, its address added if missing, set
//! up. An existing bridge is adopted as it is (containers' veths stay attached), and an
//! address owned by another interface is refused rather than stolen.

use super::ipam::Subnet;
use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};
use std::net::{IpAddr, Ipv4Addr};

/// What [`ensure`] found and did, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BridgeReport {
    pub created: bool,
    pub address_added: bool,
    pub set_up: bool,
}

fn nl(what: &str, e: rtnetlink::Error) -> String {
    format!("{what}: {e}")
}

fn link_name(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn is_bridge(msg: &LinkMessage) -> bool {
    msg.attributes.iter().any(|a| {
        matches!(a, LinkAttribute::LinkInfo(infos)
            if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))))
    })
}

async fn links(handle: &Handle) -> Result<Vec<LinkMessage>, String> {
    handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl("listing network interfaces", e))
}

async fn find(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, String> {
    Ok(links(handle)
        .await?
        .into_iter()
        .find(|l| link_name(l) == Some(name)))
}

/// Every IPv4 address on the host with the index of the interface holding it.
async fn ipv4_addresses(handle: &Handle) -> Result<Vec<(u32, Ipv4Addr, u8)>, String> {
    let msgs: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| nl("listing addresses", e))?;
    Ok(msgs
        .iter()
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip))
                | AddressAttribute::Address(IpAddr::V4(ip)) => {
                    Some((m.header.index, *ip, m.header.prefix_len))
                }
                _ => None,
            })
        })
        .collect())
}

/// Makes `bridge` exist, hold `subnet.gateway/prefix` and be up. Idempotent.
pub async fn ensure(bridge: &str, subnet: &Subnet) -> Result<BridgeReport, String> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("opening a netlink socket: {e}"))?;
    let task = tokio::spawn(conn);
    let result = ensure_with(&handle, bridge, subnet).await;
    task.abort();
    result
}

async fn ensure_with(
    handle: &Handle,
    bridge: &str,
    subnet: &Subnet,
) -> Result<BridgeReport, String> {
    let mut report = BridgeReport::default();
    let addrs = ipv4_addresses(handle).await?;
    let existing = find(handle, bridge).await?;
    let index_of_bridge = existing.as_ref().map(|l| l.header.index);
    if let Some((idx, _, _)) = addrs
        .iter()
        .find(|(idx, ip, _)| *ip == subnet.gateway && Some(*idx) != index_of_bridge)
    {
        let owner = links(handle)
            .await?
            .into_iter()
            .find(|l| l.header.index == *idx)
            .and_then(|l| link_name(&l).map(String::from))
            .unwrap_or_else(|| format!("interface #{idx}"));
        return Err(format!(
            "network.address {}/{} is already used by {owner}; choose another subnet in hostd.toml or remove the address from {owner}",
            subnet.gateway, subnet.prefix
        ));
    }
    let link = match existing {
        Some(l) if !is_bridge(&l) => {
            return Err(format!(
                "network interface {bridge} exists but is not a bridge; remove it or set network.bridge to another name"
            ))
        }
        Some(l) => l,
        None => {
            handle
                .link()
                .add(LinkBridge::new(bridge).build())
                .execute()
                .await
                .map_err(|e| nl(&format!("creating bridge {bridge}"), e))?;
            report.created = true;
            find(handle, bridge)
                .await?
                .ok_or_else(|| format!("bridge {bridge} vanished right after it was created"))?
        }
    };
    let index = link.header.index;
    let has_addr = addrs
        .iter()
        .any(|(idx, ip, p)| *idx == index && *ip == subnet.gateway && *p == subnet.prefix);
    if !has_addr {
        handle
            .address()
            .add(index, IpAddr::V4(subnet.gateway), subnet.prefix)
            .execute()
            .await
            .map_err(|e| {
                nl(
                    &format!("adding {}/{} to {bridge}", subnet.gateway, subnet.prefix),
                    e,
                )
            })?;
        report.address_added = true;
    }
    if !link.header.flags.contains(LinkFlags::Up) {
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| nl(&format!("setting {bridge} up"), e))?;
        report.set_up = true;
    }
    Ok(report)
}

/// Lets the kernel route the containers' traffic (per network namespace).
pub fn enable_forwarding() -> Result<(), String> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1\n").map_err(|e| format!("enabling IPv4 forwarding ({path}): {e}"))
}
