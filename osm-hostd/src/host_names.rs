//! Names a new container must not take because something on the host that osm-hostd
//! does not own already answers to them: a snapper config it did not write, a name in
//! the hosts file outside its managed block, the host's own hostname, and the names the
//! resolver gives to loopback and broadcast (`localhost`, `ip6-loopback`, ...). A
//! container takes its name everywhere at once (LXC, hostname, DHCP, hosts block,
//! snapper config), so a collision would overwrite or shadow the host's own entry.

use std::path::Path;

/// Names Debian's, systemd's and macOS's default hosts files give to loopback,
/// broadcast and the IPv6 multicast groups.
pub const RESERVED: &[&str] = &[
    "localhost",
    "localhost4",
    "localhost6",
    "localdomain",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "broadcasthost",
];

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collision {
    /// A name the resolver reserves (`localhost`, ...) or the host's own hostname.
    Reserved(String),
    /// Something on the host that osm-hostd does not own already has it.
    Taken(String),
}

/// Where to look.
pub struct HostNameSources<'a> {
    pub hosts_file: &'a Path,
    pub snapper_configs_dir: &'a Path,
    /// The host's hostname (`gethostname`); `None` when unknown.
    pub hostname: Option<String>,
}

/// Checks `name` (an already valid container name) against the host.
pub fn check(name: &str, src: &HostNameSources<'_>) -> Result<(), Collision> {
    if RESERVED.contains(&name) {
        return Err(Collision::Reserved(format!(
            "container name {name:?} is reserved for the host's loopback or broadcast address; choose another name"
        )));
    }
    if let Some(host) = &src.hostname {
        let host = host.to_ascii_lowercase();
        let short = host.split('.').next().unwrap_or_default();
        if name == host || name == short {
            return Err(Collision::Reserved(format!(
                "container name {name:?} is this host's own hostname ({host}); choose another name"
            )));
        }
    }
    let config = src.snapper_configs_dir.join(name);
    match std::fs::read(&config) {
        Ok(text) if !text.starts_with(crate::snapper::config::MARKER.as_bytes()) => {
            return Err(Collision::Taken(format!(
                "container name {name:?} collides with the snapper config {} that osm-hostd did not write; \
                 choose another name (the config is left as it is)",
                config.display()
            )))
        }
        _ => {}
    }
    let text = std::fs::read_to_string(src.hosts_file).unwrap_or_default();
    if crate::net::hosts_file::names_outside_block(&text)
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
    {
        return Err(Collision::Taken(format!(
            "container name {name:?} is already in {} outside osm-host's managed block; \
             choose another name, or remove that entry first",
            src.hosts_file.display()
        )));
    }
    Ok(())
}

/// The host's hostname, as the daemon's UTS namespace has it.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(dir: &Path, hostname: Option<&str>) -> HostNameSources<'static> {
        let hosts: &'static Path = Box::leak(dir.join("hosts").into_boxed_path());
        let configs: &'static Path = Box::leak(dir.join("configs").into_boxed_path());
        HostNameSources {
            hosts_file: hosts,
            snapper_configs_dir: configs,
            hostname: hostname.map(String::from),
        }
    }

    #[test]
    fn reserved_names_and_the_hostname_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(dir.path(), Some("Server7.example.net"));
        for n in ["localhost", "ip6-loopback", "broadcasthost", "server7"] {
            assert!(matches!(check(n, &src), Err(Collision::Reserved(_))), "{n}");
        }
        assert_eq!(check("web1", &src), Ok(()));
    }

    #[test]
    fn foreign_snapper_configs_are_refused_ours_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(dir.path(), None);
        std::fs::create_dir_all(src.snapper_configs_dir).unwrap();
        std::fs::write(
            src.snapper_configs_dir.join("home"),
            "SUBVOLUME=\"/home\"\n",
        )
        .unwrap();
        let text = format!("{} for container web1\n", crate::snapper::config::MARKER);
        std::fs::write(src.snapper_configs_dir.join("web1"), text).unwrap();
        match check("home", &src) {
            Err(Collision::Taken(m)) => assert!(m.contains("did not write"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(check("web1", &src), Ok(()));
    }

    #[test]
    fn hosts_entries_outside_the_block_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(dir.path(), None);
        let text = format!(
            "127.0.0.1 localhost\n192.168.1.9\tNAS backup.lan # nas\n{}\n10.0.3.2\tweb1\n{}\n",
            crate::net::hosts_file::BEGIN,
            crate::net::hosts_file::END
        );
        std::fs::write(src.hosts_file, text).unwrap();
        assert!(matches!(check("nas", &src), Err(Collision::Taken(_))));
        assert_eq!(check("web1", &src), Ok(()), "our own block is ours");
        assert_eq!(check("backup", &src), Ok(()), "only whole names collide");
    }
}
