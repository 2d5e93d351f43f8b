//! Rendering of LXC configuration: the host-wide `include/common.conf` and each
//! container's `lxc.container.conf`. Pure functions over [`HostFacts`], so what differs
//! between hosts (AppArmor, cgroup layout, the bridge) is detected once and tested here.

use crate::spec::ContainerSpec;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const CONTAINER_CONF: &str = "lxc.container.conf";

/// What the host offers, detected at daemon start (see [`HostFacts::detect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub apparmor: bool,
    /// Controllers available in the unified (v2) hierarchy; the rest are v1.
    pub v2_controllers: Vec<String>,
    /// Controllers of the mounted v1 hierarchies.
    pub v1_controllers: Vec<String>,
    /// True when no v1 hierarchy is mounted (a cgroup2-only host).
    pub cgroup2_only: bool,
}

impl HostFacts {
    pub fn detect() -> HostFacts {
        let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .map(|s| s.trim() == "Y")
            .unwrap_or(false);
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut unified = None;
        let mut has_v1 = false;
        let mut v1_controllers = Vec::new();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let fstype = post.split_whitespace().next().unwrap_or("");
            let mount_point = pre.split_whitespace().nth(4).unwrap_or("");
            match fstype {
                "cgroup2" if unified.is_none() => unified = Some(PathBuf::from(mount_point)),
                "cgroup" => {
                    has_v1 = true;
                    // The super options name the hierarchy's controllers (`rw,pids`).
                    let options = post.split_whitespace().nth(2).unwrap_or("");
                    v1_controllers.extend(
                        options
                            .split(',')
                            .filter(|o| !o.contains('=') && !matches!(*o, "rw" | "ro"))
                            .map(String::from),
                    );
                }
                _ => {}
            }
        }
        let v2_controllers = unified
            .and_then(|p| std::fs::read_to_string(p.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        HostFacts {
            apparmor,
            v2_controllers,
            v1_controllers,
            cgroup2_only: !has_v1,
        }
    }

    fn controller_is_v2(&self, controller: &str) -> bool {
        self.cgroup2_only || self.v2_controllers.iter().any(|c| c == controller)
    }

    /// Whether any hierarchy has `controller` (a nested host may have none).
    fn has_controller(&self, controller: &str) -> bool {
        self.v2_controllers
            .iter()
            .chain(&self.v1_controllers)
            .any(|c| c == controller)
    }
}

/// `include/seccomp`: system calls no container may make, in LXC's denylist format
/// (LXC's own default list plus kexec_file_load, swap, port I/O and the kernel log).
pub fn render_seccomp() -> String {
    let mut s = String::from("2\ndenylist\nreject_force_umount\n[all]\n");
    for call in [
        "kexec_load",
        "kexec_file_load",
        "open_by_handle_at",
        "init_module",
        "finit_module",
        "delete_module",
        "swapon",
        "swapoff",
        "iopl",
        "ioperm",
        "syslog",
    ] {
        let _ = writeln!(s, "{call} errno 1");
    }
    s
}

/// `include/common.conf`: settings shared by every container on the host; `seccomp` is
/// the profile [`render_seccomp`] wrote.
pub fn render_common(facts: &HostFacts, seccomp: &Path) -> String {
    let mut s = String::from(
        "# LXC settings shared by every container on this host.\n\
         # Written by osm-hostd at start; local changes are overwritten.\n",
    );
    if facts.apparmor {
        // No nesting: a customer's container does not run containers.
        s.push_str("lxc.apparmor.profile = generated\n");
    } else {
        s.push_str("# This kernel has no AppArmor.\nlxc.apparmor.profile = unconfined\n");
    }
    s.push_str(
        "lxc.mount.auto = cgroup:mixed proc:mixed sys:mixed\n\
         lxc.autodev = 1\n\
         lxc.tty.dir = lxc\n\
         lxc.tty.max = 4\n\
         lxc.pty.max = 1024\n\
         lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio syslog sys_pacct wake_alarm block_suspend\n\
         lxc.mount.entry = /sys/fs/fuse/connections sys/fs/fuse/connections none bind,optional 0 0\n",
    );
    let _ = writeln!(s, "lxc.seccomp.profile = {}", seccomp.display());
    let key = if facts.controller_is_v2("devices") || facts.cgroup2_only {
        "lxc.cgroup2.devices"
    } else {
        "lxc.cgroup.devices"
    };
    let _ = writeln!(s, "{key}.deny = a");
    for dev in [
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:7 rwm",
        "c 1:8 rwm",
        "c 1:9 rwm",
        "c 5:0 rwm",
        "c 5:1 rwm",
        "c 5:2 rwm",
        "c 136:* rwm",
        "c 10:229 rwm",
    ] {
        let _ = writeln!(s, "{key}.allow = {dev}");
    }
    s
}

/// Paths a container's config refers to.
pub struct ConfPaths<'a> {
    pub common_conf: &'a Path,
    pub base_dir: &'a Path,
    /// Layer directories, top-most first.
    pub layer_dirs: &'a [PathBuf],
    pub upper_dir: &'a Path,
    /// Bridge to attach to, when it exists on the host.
    pub bridge: Option<&'a str>,
    /// Unprivileged containers: the merged tree the daemon mounted (see `idmap`).
    pub merged: &'a Path,
    /// Most processes the container may run; 0 for no limit.
    pub pids_max: u32,
}

/// overlayfs options every container's rootfs is mounted with, privileged or not: with
/// them an upper dir holds plain copies (no index, metacopy or redirect xattrs pointing
/// into a lower), so it stays valid over a different lower stack (a rebase).
pub const OVERLAY_OPTIONS: &str = "index=off,metacopy=off,redirect_dir=off";

/// `lxc.container.conf` for one container.
pub fn render_container(spec: &ContainerSpec, paths: &ConfPaths<'_>, facts: &HostFacts) -> String {
    let mut s = String::from(
        "# Generated by osm-hostd from container.toml at every start; edit that instead.\n",
    );
    let _ = writeln!(s, "lxc.include = {}", paths.common_conf.display());
    let _ = writeln!(s, "lxc.uts.name = {}", spec.name);
    if let Some(map) = spec.unprivileged_map() {
        // LXC refuses idmap= with an overlay rootfs: the daemon mounts it.
        let _ = writeln!(s, "lxc.rootfs.path = dir:{}", paths.merged.display());
        let _ = writeln!(s, "lxc.idmap = u 0 {} {}", map.uid, map.count);
        let _ = writeln!(s, "lxc.idmap = g 0 {} {}", map.gid, map.count);
    } else {
        // LXC puts overlayfs' work dir at dirname(upper)/work, the layout's `work/`.
        let mut rootfs = String::from("overlay");
        for dir in paths
            .layer_dirs
            .iter()
            .map(PathBuf::as_path)
            .chain([paths.base_dir, paths.upper_dir])
        {
            let _ = write!(rootfs, ":{}", dir.display());
        }
        let _ = writeln!(s, "lxc.rootfs.path = {rootfs}");
        // LXC appends these to its overlay mount's data.
        let _ = writeln!(s, "lxc.rootfs.options = {OVERLAY_OPTIONS}");
    }
    match paths.bridge {
        Some(bridge) => {
            let _ = writeln!(s, "lxc.net.0.type = veth");
            let _ = writeln!(s, "lxc.net.0.link = {bridge}");
            // A name the daemon can derive, for port isolation and anti-spoofing rules.
            let veth = crate::net::isolation::veth_name(&spec.name);
            let _ = writeln!(s, "lxc.net.0.veth.pair = {veth}");
            let _ = writeln!(s, "lxc.net.0.flags = up");
            let _ = writeln!(s, "lxc.net.0.name = eth0");
            let _ = writeln!(s, "lxc.net.0.hwaddr = {}", spec.mac);
        }
        None => {
            let _ = writeln!(s, "# The bridge does not exist: loopback only.");
            let _ = writeln!(s, "lxc.net.0.type = empty");
        }
    }
    if let Some(bytes) = spec.memory {
        if facts.controller_is_v2("memory") {
            let _ = writeln!(s, "lxc.cgroup2.memory.max = {bytes}");
        } else {
            let _ = writeln!(s, "lxc.cgroup.memory.limit_in_bytes = {bytes}");
        }
    }
    // The default pids limit applies where the host has the controller; a host without
    // it (a nested test host with an empty cgroup2) runs containers without one.
    if paths.pids_max > 0 && facts.has_controller("pids") {
        if facts.controller_is_v2("pids") {
            let _ = writeln!(s, "lxc.cgroup2.pids.max = {}", paths.pids_max);
        } else {
            let _ = writeln!(s, "lxc.cgroup.pids.max = {}", paths.pids_max);
        }
    }
    if let Some(cpus) = spec.cpus {
        const PERIOD: u64 = 100_000;
        let quota = u64::from(cpus) * PERIOD;
        if facts.controller_is_v2("cpu") {
            let _ = writeln!(s, "lxc.cgroup2.cpu.max = {quota} {PERIOD}");
        } else {
            let _ = writeln!(s, "lxc.cgroup.cpu.cfs_period_us = {PERIOD}");
            let _ = writeln!(s, "lxc.cgroup.cpu.cfs_quota_us = {quota}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(v2_only: bool) -> HostFacts {
        HostFacts {
            apparmor: v2_only,
            v2_controllers: if v2_only {
                vec!["cpu".into(), "memory".into(), "pids".into()]
            } else {
                vec![]
            },
            v1_controllers: if v2_only {
                vec![]
            } else {
                vec!["cpu".into(), "memory".into(), "pids".into()]
            },
            cgroup2_only: v2_only,
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "web1".into(),
            base: "bookworm".into(),
            layers: vec!["stack".into()],
            mac: "02:00:00:00:00:01".into(),
            ipv4: None,
            autostart: Default::default(),
            boot_priority: 0,
            boot_delay: 0,
            memory: Some(1 << 30),
            cpus: Some(2),
            created: 0,
            uuid: None,
            snapshots: Default::default(),
            publish: Default::default(),
            privileged: true,
            idmap: None,
        }
    }

    fn render(f: &HostFacts, bridge: Option<&str>) -> String {
        render_spec(&spec(), f, bridge)
    }

    fn render_spec(spec: &ContainerSpec, f: &HostFacts, bridge: Option<&str>) -> String {
        let layers = [PathBuf::from("/s/lxc/layers/stack")];
        let paths = ConfPaths {
            common_conf: Path::new("/s/lxc/include/common.conf"),
            base_dir: Path::new("/s/lxc/os-bases/bookworm"),
            layer_dirs: &layers,
            upper_dir: Path::new("/s/lxc/containers/web1/rootfs-layer"),
            bridge,
            merged: Path::new("/run/osm-host/rootfs/web1"),
            pids_max: 4096,
        };
        render_container(spec, &paths, f)
    }

    #[test]
    fn overlay_stack_is_layers_then_base_then_upper() {
        let conf = render(&facts(false), Some("lxcbr0"));
        assert!(conf.contains(
            "lxc.rootfs.path = overlay:/s/lxc/layers/stack:/s/lxc/os-bases/bookworm:/s/lxc/containers/web1/rootfs-layer\n"
        ));
        assert!(conf.contains("lxc.include = /s/lxc/include/common.conf\n"));
        assert!(conf.contains("lxc.uts.name = web1\n"));
        assert!(conf.contains("lxc.rootfs.options = index=off,metacopy=off,redirect_dir=off\n"));
    }

    #[test]
    fn unprivileged_containers_get_the_mounted_tree_and_their_id_range() {
        let mut s = spec();
        s.privileged = false;
        s.idmap = Some(crate::idmap::IdMap {
            uid: 1_065_536,
            gid: 1_065_536,
            count: 65536,
        });
        let conf = render_spec(&s, &facts(false), None);
        assert!(conf.contains("lxc.rootfs.path = dir:/run/osm-host/rootfs/web1\n"));
        assert!(conf.contains("lxc.idmap = u 0 1065536 65536\n"));
        assert!(conf.contains("lxc.idmap = g 0 1065536 65536\n"));
        assert!(!conf.contains("overlay:"));
        // Privileged (explicitly, or a spec from before idmaps) keeps LXC's overlay.
        let old = render(&facts(false), None);
        assert!(!old.contains("lxc.idmap"));
        s.privileged = true;
        assert!(!render_spec(&s, &facts(false), None).contains("lxc.idmap"));
    }

    #[test]
    fn pids_are_limited_in_the_hierarchy_the_host_has() {
        assert!(render(&facts(false), None).contains("lxc.cgroup.pids.max = 4096\n"));
        assert!(render(&facts(true), None).contains("lxc.cgroup2.pids.max = 4096\n"));
        // A cgroup2 without controllers (a nested host): no limit LXC could not set.
        let bare = HostFacts {
            v2_controllers: vec![],
            ..facts(true)
        };
        assert!(!render(&bare, None).contains("pids.max"));
    }

    #[test]
    fn seccomp_denies_module_loading_and_kexec() {
        let p = render_seccomp();
        assert!(p.starts_with("2\ndenylist\n"));
        for call in [
            "init_module",
            "finit_module",
            "kexec_load",
            "open_by_handle_at",
        ] {
            assert!(p.contains(&format!("\n{call} errno 1\n")), "{call}");
        }
        let common = render_common(&facts(false), Path::new("/s/lxc/include/seccomp"));
        assert!(common.contains("lxc.seccomp.profile = /s/lxc/include/seccomp\n"));
        assert!(common.contains("sys_module"));
        assert!(!common.contains("allow_nesting"));
        assert!(common.contains("proc:mixed sys:mixed"));
    }

    #[test]
    fn network_is_a_veth_on_the_bridge_with_the_stable_mac() {
        let conf = render(&facts(false), Some("lxcbr0"));
        assert!(conf.contains("lxc.net.0.link = lxcbr0\n"));
        assert!(conf.contains("lxc.net.0.hwaddr = 02:00:00:00:00:01\n"));
        let veth = crate::net::isolation::veth_name("web1");
        assert!(conf.contains(&format!("lxc.net.0.veth.pair = {veth}\n")));
        let conf = render(&facts(false), None);
        assert!(conf.contains("lxc.net.0.type = empty\n"));
        assert!(!conf.contains("veth"));
    }

    #[test]
    fn limits_follow_the_hierarchy_the_host_has() {
        let v1 = render(&facts(false), None);
        assert!(v1.contains("lxc.cgroup.memory.limit_in_bytes = 1073741824\n"));
        assert!(v1.contains("lxc.cgroup.cpu.cfs_quota_us = 200000\n"));
        let v2 = render(&facts(true), None);
        assert!(v2.contains("lxc.cgroup2.memory.max = 1073741824\n"));
        assert!(v2.contains("lxc.cgroup2.cpu.max = 200000 100000\n"));
        assert!(!v2.contains("lxc.cgroup.memory"));
    }

    #[test]
    fn common_conf_matches_apparmor_and_never_pulls_lxcfs_hooks() {
        let sc = Path::new("/s/seccomp");
        let without = render_common(&facts(false), sc);
        assert!(without.contains("lxc.apparmor.profile = unconfined"));
        assert!(without.contains("lxc.cgroup.devices.deny = a"));
        let with = render_common(&facts(true), sc);
        assert!(with.contains("lxc.apparmor.profile = generated"));
        assert!(with.contains("lxc.cgroup2.devices.deny = a"));
        for c in [&without, &with] {
            assert!(!c.contains("common.conf.d") && !c.contains("lxcfs"));
        }
    }
}
