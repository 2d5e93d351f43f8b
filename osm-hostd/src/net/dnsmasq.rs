//! dnsmasq on the bridge: its argument vector, the reservation files of its hosts
//! directory (one file per container, `<mac>,<ip>,<name>`), the names file for DNS, and
//! purging leases that no reservation backs. Pure or file-level logic; the process
//! itself is run by [`super::supervisor`].

use super::ipam::Subnet;
use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// How long a lease lasts; containers renew at half of it, so a dnsmasq that is down
/// for minutes costs nobody their address.
pub const LEASE_TIME: &str = "1h";

/// One container's DHCP reservation and DNS name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DhcpHost {
    pub name: String,
    pub mac: String,
    pub ip: Ipv4Addr,
}

/// dnsmasq's files under `<runtime_dir>/dnsmasq/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsmasqPaths {
    pub dir: PathBuf,
    pub hosts_dir: PathBuf,
    pub leases: PathBuf,
    pub pid_file: PathBuf,
    pub names: PathBuf,
}

impl DnsmasqPaths {
    pub fn under(runtime_dir: &Path) -> DnsmasqPaths {
        let dir = runtime_dir.join("dnsmasq");
        DnsmasqPaths {
            hosts_dir: dir.join("hosts"),
            leases: dir.join("leases"),
            pid_file: dir.join("dnsmasq.pid"),
            names: dir.join("names"),
            dir,
        }
    }
}

/// The argument vector (without the program). Static DHCP only: an address is handed
/// out only to a MAC reserved for it, so no dynamic lease can ever take an address the
/// daemon later gives to a new container.
pub fn args(bridge: &str, subnet: &Subnet, paths: &DnsmasqPaths) -> Vec<String> {
    let p = |x: &Path| x.display().to_string();
    vec![
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        "--no-hosts".into(),
        // Plain names (containers) and private reverse lookups are answered here or not
        // at all, never sent to the upstream servers.
        "--domain-needed".into(),
        "--bogus-priv".into(),
        "--bind-interfaces".into(),
        format!("--interface={bridge}"),
        "--except-interface=lo".into(),
        format!("--listen-address={}", subnet.gateway),
        format!(
            "--dhcp-range={},static,{},{LEASE_TIME}",
            subnet.first,
            subnet.netmask()
        ),
        "--dhcp-authoritative".into(),
        "--dhcp-no-override".into(),
        "--no-ping".into(),
        "--dhcp-rapid-commit".into(),
        format!("--dhcp-hostsdir={}", p(&paths.hosts_dir)),
        format!("--dhcp-leasefile={}", p(&paths.leases)),
        format!("--addn-hosts={}", p(&paths.names)),
        format!("--pid-file={}", p(&paths.pid_file)),
        "--log-facility=-".into(),
    ]
}

pub fn reservation_line(r: &DhcpHost) -> String {
    format!("{},{},{}\n", r.mac, r.ip, r.name)
}

/// The names file (`--addn-hosts`): `IP name` per container.
pub fn names_text(rs: &[DhcpHost]) -> String {
    rs.iter()
        .map(|r| format!("{}\t{}\n", r.ip, r.name))
        .collect()
}

/// Makes the hosts directory and names file match `rs`; returns whether anything
/// changed (then dnsmasq needs a SIGHUP: it adds hostsdir entries on its own through
/// inotify but only drops them on SIGHUP, and re-reads the names file only then).
pub fn sync_files(paths: &DnsmasqPaths, rs: &[DhcpHost]) -> io::Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&paths.hosts_dir)?;
    let mut changed = false;
    let want: BTreeMap<&str, String> = rs
        .iter()
        .map(|r| (r.name.as_str(), reservation_line(r)))
        .collect();
    for entry in std::fs::read_dir(&paths.hosts_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !want.contains_key(name.as_str()) {
            std::fs::remove_file(entry.path())?;
            changed = true;
        }
    }
    for (name, line) in &want {
        changed |= write_if_changed(&paths.hosts_dir.join(name), line)?;
    }
    changed |= write_if_changed(&paths.names, &names_text(rs))?;
    Ok(changed)
}

fn write_if_changed(path: &Path, text: &str) -> io::Result<bool> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o644)?;
    Ok(true)
}

/// The lease file without leases that no reservation backs (a deleted container's, or
/// an address now reserved for another MAC). Lines are `expiry mac ip name client-id`.
pub fn purge_leases(text: &str, rs: &[DhcpHost]) -> String {
    text.lines()
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 3 || f[0] == "duid" {
                return true;
            }
            rs.iter()
                .any(|r| r.mac.eq_ignore_ascii_case(f[1]) && r.ip.to_string() == f[2])
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Rewrites the lease file through [`purge_leases`]; only while dnsmasq is not running
/// (it keeps leases in memory and would write the stale ones back).
pub fn purge_lease_file(paths: &DnsmasqPaths, rs: &[DhcpHost]) -> io::Result<usize> {
    let text = match std::fs::read_to_string(&paths.leases) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let kept = purge_leases(&text, rs);
    let dropped = text.lines().count() - kept.lines().count();
    if dropped > 0 {
        crate::fsutil::write_atomic(&paths.leases, kept.as_bytes(), 0o644)?;
    }
    Ok(dropped)
}

/// The leases in the lease file, as (mac, ip).
pub fn read_leases(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[0] != "duid").then(|| (f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, mac: &str, ip: &str) -> DhcpHost {
        DhcpHost {
            name: name.into(),
            mac: mac.into(),
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn arguments_follow_the_config() {
        let s = Subnet::parse("10.0.3.1/24", Some("10.0.3.2-10.0.3.254")).unwrap();
        let paths = DnsmasqPaths::under(Path::new("/run/osm-host"));
        let a = args("lxcbr0", &s, &paths);
        for want in [
            "--keep-in-foreground",
            "--interface=lxcbr0",
            "--listen-address=10.0.3.1",
            "--dhcp-range=10.0.3.2,static,255.255.255.0,1h",
            "--dhcp-hostsdir=/run/osm-host/dnsmasq/hosts",
            "--dhcp-leasefile=/run/osm-host/dnsmasq/leases",
            "--pid-file=/run/osm-host/dnsmasq/dnsmasq.pid",
            "--conf-file=/dev/null",
            "--no-ping",
            "--dhcp-rapid-commit",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
    }

    #[test]
    fn files_follow_the_reservations() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DnsmasqPaths::under(dir.path());
        let a = r("web1", "02:00:00:00:00:01", "10.0.3.2");
        let b = r("web2", "02:00:00:00:00:02", "10.0.3.3");
        assert!(sync_files(&paths, &[a.clone(), b.clone()]).unwrap());
        assert!(!sync_files(&paths, &[a.clone(), b.clone()]).unwrap());
        assert_eq!(
            std::fs::read_to_string(paths.hosts_dir.join("web1")).unwrap(),
            "02:00:00:00:00:01,10.0.3.2,web1\n"
        );
        assert!(sync_files(&paths, &[a]).unwrap());
        assert!(!paths.hosts_dir.join("web2").exists());
        assert_eq!(
            std::fs::read_to_string(&paths.names).unwrap(),
            "10.0.3.2\tweb1\n"
        );
    }

    #[test]
    fn leases_without_a_reservation_are_purged() {
        let rs = [r("web1", "02:00:00:00:00:01", "10.0.3.2")];
        let text = "1700000000 02:00:00:00:00:01 10.0.3.2 web1 *\n\
                    1700000000 02:00:00:00:00:09 10.0.3.3 gone *\n\
                    1700000000 02:00:00:00:00:07 10.0.3.2 thief *\n";
        assert_eq!(
            purge_leases(text, &rs),
            "1700000000 02:00:00:00:00:01 10.0.3.2 web1 *\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let paths = DnsmasqPaths::under(dir.path());
        std::fs::create_dir_all(&paths.dir).unwrap();
        std::fs::write(&paths.leases, text).unwrap();
        assert_eq!(purge_lease_file(&paths, &rs).unwrap(), 2);
        assert_eq!(read_leases(&paths.leases).len(), 1);
    }
}
