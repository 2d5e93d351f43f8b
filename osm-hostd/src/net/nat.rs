//! NAT for the containers: one nftables table of our own, `ip osm_host`, replaced as a
//! whole in one atomic `nft -f -` batch. Other tables and rules are never touched, and
//! applying the same ruleset twice changes nothing.

use super::ipam::Subnet;
use std::io::Write;
use std::process::{Command, Stdio};

pub const NFT: &str = "/usr/sbin/nft";
pub const TABLE: &str = "osm_host";

/// The batch: create-if-missing, delete (so no old rule survives), define afresh. With
/// `nat` off the table is only removed.
pub fn ruleset(bridge: &str, subnet: &Subnet, nat: bool) -> String {
    let mut s = format!(
        "# osm-hostd: NAT and forwarding for the containers on {bridge}\n\
         table ip {TABLE} {{}}\n\
         delete table ip {TABLE}\n"
    );
    if nat {
        let cidr = subnet.cidr();
        s.push_str(&format!(
            "table ip {TABLE} {{\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tiifname \"{bridge}\" accept\n\
             \t\toifname \"{bridge}\" ct state established,related accept\n\
             \t}}\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr {cidr} ip daddr != {cidr} masquerade\n\
             \t}}\n\
             }}\n"
        ));
    }
    s
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
            "nft refused the NAT ruleset ({}): {}",
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
    }
}
