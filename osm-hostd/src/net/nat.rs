//! NAT and forwarding for the containers: nftables tables of our own, `ip osm_host`
//! (forward filter, masquerade) and `bridge osm_host` (per-port anti-spoofing, see
//! [`super::isolation`]), replaced as a whole in one atomic `nft -f -` batch. Other
//! tables and rules are never touched, and applying the same ruleset twice changes
//! nothing.

use super::ipam::Subnet;
use std::io::Write;
use std::process::{Command, Stdio};

pub const NFT: &str = "/usr/sbin/nft";
pub const TABLE: &str = "osm_host";

/// What the containers' firewall is made of; [`Firewall::ruleset`] renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firewall {
    pub bridge: String,
    /// The containers' subnet, `10.0.3.0/24`.
    pub cidr: String,
    pub nat: bool,
    /// `[network] isolate`: a default-drop forward chain for the bridge's traffic and
    /// the per-port `bridge` table (see [`super::isolation`]).
    pub isolate: bool,
    pub ports: Vec<super::isolation::Port>,
    /// Rules of the `published` chain, each a whole nft rule (`ip daddr 10.0.3.2 tcp
    /// dport 8883 accept`): the only way from outside into a container. Filled by the
    /// publishing of ports (a later capability); empty today.
    pub published: Vec<String>,
}

impl Firewall {
    /// The batch for both tables: create-if-missing, delete (so no old rule survives),
    /// define afresh, applied as one transaction.
    pub fn ruleset(&self) -> String {
        let bridge = &self.bridge;
        let mut s = format!(
            "# osm-hostd: NAT and forwarding for the containers on {bridge}\n\
             table ip {TABLE} {{}}\n\
             delete table ip {TABLE}\n"
        );
        if self.nat || self.isolate {
            s.push_str(&format!("table ip {TABLE} {{\n"));
            s.push_str(&self.forward_chains());
            if self.nat {
                let cidr = &self.cidr;
                s.push_str(&format!(
                    "\tchain postrouting {{\n\
                     \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
                     \t\tip saddr {cidr} ip daddr != {cidr} masquerade\n\
                     \t}}\n"
                ));
            }
            s.push_str("}\n");
        }
        s.push_str(&super::isolation::bridge_table(self.isolate, &self.ports));
        s
    }

    fn forward_chains(&self) -> String {
        let b = &self.bridge;
        if !self.isolate {
            return format!(
                "\tchain forward {{\n\
                 \t\ttype filter hook forward priority filter; policy accept;\n\
                 \t\tiifname \"{b}\" accept\n\
                 \t\toifname \"{b}\" ct state established,related accept\n\
                 \t}}\n"
            );
        }
        // Policy drop for the containers' traffic only: what neither comes from nor
        // goes to the bridge is the host's own business and passes this chain.
        let mut s = format!(
            "\tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy drop;\n\
             \t\tiifname != \"{b}\" oifname != \"{b}\" accept\n\
             \t\tiifname \"{b}\" oifname \"{b}\" drop\n\
             \t\tiifname \"{b}\" accept\n\
             \t\toifname \"{b}\" ct state established,related accept\n\
             \t\toifname \"{b}\" jump published\n\
             \t}}\n\
             \tchain published {{\n"
        );
        for rule in &self.published {
            s.push_str(&format!("\t\t{rule}\n"));
        }
        s.push_str("\t}\n");
        s
    }
}

/// The batch for the flat bridge (no isolation, no container ports): kept for callers
/// that only need NAT.
pub fn ruleset(bridge: &str, subnet: &Subnet, nat: bool) -> String {
    Firewall {
        bridge: bridge.to_string(),
        cidr: subnet.cidr(),
        nat,
        isolate: false,
        ports: Vec::new(),
        published: Vec::new(),
    }
    .ruleset()
}

/// Applies the batch with `nft -f -`.
pub fn apply(ruleset: &str) -> Result<(), String> {
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {NFT}: {e} (install nftables)"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(ruleset.as_bytes())
        .map_err(|e| format!("writing the ruleset to nft: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft refused the containers' firewall ruleset ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_replaces_only_our_table_atomically() {
        let s = Subnet::parse("10.0.3.1/24", None).unwrap();
        let r = ruleset("lxcbr0", &s, true);
        let lines: Vec<&str> = r.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines[0], "table ip osm_host {}");
        assert_eq!(lines[1], "delete table ip osm_host");
        assert!(r.contains("ip saddr 10.0.3.0/24 ip daddr != 10.0.3.0/24 masquerade"));
        assert!(r.contains("type nat hook postrouting priority srcnat"));
        assert!(r.contains("iifname \"lxcbr0\" accept"));
        assert_eq!(
            r.matches("table ip").count(),
            3,
            "no other table is named: {r}"
        );
        let off = ruleset("lxcbr0", &s, false);
        assert!(!off.contains("masquerade") && off.contains("delete table ip osm_host"));
        assert!(off.contains("delete table bridge osm_host") && !off.contains("chain prerouting"));
    }

    #[test]
    fn isolation_drops_forwarding_into_containers_but_leaves_room_for_publishing() {
        let s = Subnet::parse("10.0.3.1/24", None).unwrap();
        let mut fw = Firewall {
            bridge: "lxcbr0".into(),
            cidr: s.cidr(),
            nat: true,
            isolate: true,
            ports: Vec::new(),
            published: Vec::new(),
        };
        fw.ports.push(crate::net::isolation::Port {
            veth: "osm12345678".into(),
            mac: "02:00:00:00:00:01".into(),
            ip: "10.0.3.2".parse().unwrap(),
        });
        fw.ports.push(crate::net::isolation::Port {
            veth: "osm12345679".into(),
            mac: "02:00:00:00:00:02".into(),
            ip: "10.0.3.3".parse().unwrap(),
        });
        let r = fw.ruleset();
        assert!(r.contains("policy drop;"), "{r}");
        assert!(r.contains("iifname != \"lxcbr0\" oifname != \"lxcbr0\" accept"));
        assert!(r.contains("iifname \"lxcbr0\" oifname \"lxcbr0\" drop"));
        assert!(r.contains("oifname \"lxcbr0\" ct state established,related accept"));
        assert!(r.contains("chain published {\n\t}"), "{r}");
        assert!(r.contains("masquerade") && r.contains("table bridge osm_host {\n"));
        fw.published
            .push("ip daddr 10.0.3.2 tcp dport 8883 accept".into());
        fw.nat = false;
        let r = fw.ruleset();
        assert!(r.contains("\t\tip daddr 10.0.3.2 tcp dport 8883 accept\n"));
        assert!(!r.contains("masquerade") && r.contains("policy drop;"));
    }
}
