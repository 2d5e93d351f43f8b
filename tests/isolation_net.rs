//! Root integration (issue 9, items 4-6): customers cannot see each other on the bridge
//! (isolated ports, per-veth anti-spoofing, nothing forwarded into a container), the
//! store is private and mounted nosuid,nodev, and container names that belong to the
//! host are refused. Busybox containers through the rig; traffic only between the
//! test's own namespaces.

use osm_hostd::net::isolation::veth_name;
use rig::{require_root, wait_until, Rig, Sandbox};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn eth0_has(rig: &Rig, name: &str, ip: &str) -> bool {
    stdout(&rig.attach(name, "ip -4 addr show dev eth0")).contains(&format!("inet {ip}/24"))
}

fn mac_of(rig: &Rig, name: &str) -> String {
    rig.info_json(name)["mac_address"]
        .as_str()
        .unwrap()
        .to_lowercase()
}

/// Starts `name` and waits for its reserved address.
fn start_with_address(rig: &Rig, name: &str, ip: &str) {
    rig.ctl_ok(&["start", name]);
    assert!(
        wait_until(Duration::from_secs(15), || eth0_has(rig, name, ip)),
        "{name} did not get {ip}: {}\n{}",
        stdout(&rig.attach(name, "ip addr")),
        rig.daemon().log_tail(30)
    );
}

/// Serves `text` with busybox httpd on port 8080 inside `name`.
fn serve(rig: &Rig, name: &str, text: &str) {
    let out = rig.attach(
        name,
        &format!(
            "mkdir -p /tmp/www && echo {text} > /tmp/www/index.html && httpd -p 8080 -h /tmp/www"
        ),
    );
    assert!(out.status.success(), "{out:?}");
}

/// `wget` from inside container `from`; the body, or "" on failure.
fn wget_in(rig: &Rig, from: &str, url: &str) -> String {
    stdout(&rig.attach(from, &format!("timeout 4 wget -q -O - {url}")))
}

fn host_wget(sandbox: &Sandbox, url: &str) -> String {
    stdout(
        &sandbox
            .command("/bin/busybox")
            .args(["timeout", "4", "wget", "-q", "-O", "-", url])
            .output()
            .unwrap(),
    )
}

/// The link-layer address the host's neighbour table holds for `ip` on the bridge.
fn host_neigh(rig: &Rig, ip: &str) -> String {
    rig.sandbox()
        .run_ok("ip", &["neigh", "show", ip, "dev", "lxcbr0"])
}

/// Sends one UDP datagram to 10.0.3.1:9999 from each source port, out of container
/// `name`'s network namespace (the host's python3 there, for a UDP sender busybox lacks),
/// and returns the source ports the host received.
fn udp_ports_received(rig: &Rig, name: &str, ports: &[u16]) -> Vec<u16> {
    const LISTEN: &str = "import socket\n\
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        s.bind(('10.0.3.1', 9999))\n\
        print('ready', flush=True)\n\
        s.settimeout(3)\n\
        try:\n\
        \x20   while True:\n\
        \x20       d, a = s.recvfrom(64)\n\
        \x20       print(a[1], flush=True)\n\
        except socket.timeout:\n\
        \x20   pass\n";
    let listener = rig
        .in_sandbox("/usr/bin/python3")
        .args(["-c", LISTEN])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = rig.info_json(name)["init_pid"]
        .as_u64()
        .unwrap()
        .to_string();
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let send = format!(
        "import socket\n\
         for p in [{}]:\n\
         \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         \x20   s.bind(('0.0.0.0', p))\n\
         \x20   for _ in range(3):\n\
         \x20       s.sendto(b'x', ('10.0.3.1', 9999))\n\
         \x20   s.close()\n",
        list.join(", ")
    );
    let out = rig
        .in_sandbox("nsenter")
        .args(["-t", &pid, "-n", "/usr/bin/python3", "-c", &send])
        .output()
        .unwrap();
    assert!(out.status.success(), "sender: {out:?}");
    let out = listener.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(text.starts_with("ready"), "listener: {out:?}");
    let mut got: Vec<u16> = text.lines().filter_map(|l| l.parse().ok()).collect();
    got.sort();
    got.dedup();
    got
}

/// Sends ICMPv6 router advertisements (type 134) and echo requests (type 128) to all
/// nodes out of container `name`'s eth0, and returns the ICMPv6 types the host heard on
/// the bridge.
fn icmpv6_types_heard(rig: &Rig, name: &str) -> Vec<u8> {
    const LISTEN: &str = "import socket\n\
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)\n\
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'lxcbr0')\n\
        print('ready', flush=True)\n\
        s.settimeout(3)\n\
        try:\n\
        \x20   while True:\n\
        \x20       d, a = s.recvfrom(1500)\n\
        \x20       print(d[0], flush=True)\n\
        except socket.timeout:\n\
        \x20   pass\n";
    const SEND: &str = "import socket, struct\n\
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)\n\
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)\n\
        idx = socket.if_nametoindex('eth0')\n\
        ra = struct.pack('!BBHBBHII', 134, 0, 0, 64, 0, 1800, 0, 0)\n\
        echo = struct.pack('!BBHHH', 128, 0, 0, 1, 1)\n\
        for _ in range(3):\n\
        \x20   s.sendto(ra, ('ff02::1', 0, 0, idx))\n\
        \x20   s.sendto(echo, ('ff02::1', 0, 0, idx))\n";
    let listener = rig
        .in_sandbox("/usr/bin/python3")
        .args(["-c", LISTEN])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = rig.info_json(name)["init_pid"]
        .as_u64()
        .unwrap()
        .to_string();
    let out = rig
        .in_sandbox("nsenter")
        .args(["-t", &pid, "-n", "/usr/bin/python3", "-c", SEND])
        .output()
        .unwrap();
    assert!(out.status.success(), "sender: {out:?}");
    let out = listener.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(text.starts_with("ready"), "listener: {out:?}");
    let mut got: Vec<u8> = text.lines().filter_map(|l| l.parse().ok()).collect();
    got.retain(|t| *t == 128 || *t == 134);
    got.sort();
    got.dedup();
    got
}

/// A second namespace standing in for the internet, joined to the rig's by a veth pair
/// on a documentation prefix, with a route to the containers' subnet through the rig
/// (as a router on the host's LAN could have).
struct Outside {
    sandbox: Sandbox,
}

const OUTSIDE_HOST: &str = "198.51.100.1";
const OUTSIDE_PEER: &str = "198.51.100.2";

impl Outside {
    fn connect(rig: &Rig) -> Outside {
        let sandbox = Sandbox::new();
        let out = std::process::Command::new("nsenter")
            .arg(format!("--target={}", rig.sandbox().holder_pid()))
            .args([
                "--net", "--", "ip", "link", "add", "osm-out", "type", "veth", "peer", "name",
                "osm-in", "netns",
            ])
            .arg(sandbox.holder_pid().to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "veth: {out:?}");
        let host_addr = format!("{OUTSIDE_HOST}/24");
        rig.sandbox()
            .run_ok("ip", &["addr", "add", &host_addr, "dev", "osm-out"]);
        rig.sandbox()
            .run_ok("ip", &["link", "set", "osm-out", "up"]);
        let peer_addr = format!("{OUTSIDE_PEER}/24");
        sandbox.run_ok("ip", &["addr", "add", &peer_addr, "dev", "osm-in"]);
        sandbox.run_ok("ip", &["link", "set", "osm-in", "up"]);
        sandbox.run_ok("ip", &["route", "add", "10.0.3.0/24", "via", OUTSIDE_HOST]);
        Outside { sandbox }
    }

    /// An httpd in the outside namespace, serving `hello from outside`.
    fn serve(&self, rig: &Rig) -> rig::SandboxChild {
        let www = rig.dir().join("outside-www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), "hello from outside\n").unwrap();
        let mut cmd = self.sandbox.command("/bin/busybox");
        cmd.args(["httpd", "-f", "-p", &format!("{OUTSIDE_PEER}:8080"), "-h"])
            .arg(&www);
        self.sandbox.spawn(&mut cmd).unwrap()
    }
}

/// Two running containers a1 (10.0.3.2) and a2 (10.0.3.3), each serving its name.
fn two_containers(rig: &Rig) {
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "a1", "--base", "bb"]);
    rig.ctl_ok(&["create", "a2", "--base", "bb"]);
    start_with_address(rig, "a1", "10.0.3.2");
    start_with_address(rig, "a2", "10.0.3.3");
    serve(rig, "a1", "inside-a1");
    serve(rig, "a2", "inside-a2");
    // The host reaches both (NGINX publishing needs that), and learns a2's MAC.
    for (ip, text) in [("10.0.3.2", "inside-a1"), ("10.0.3.3", "inside-a2")] {
        let url = format!("http://{ip}:8080/index.html");
        assert!(
            wait_until(Duration::from_secs(5), || host_wget(rig.sandbox(), &url)
                .contains(text)),
            "the host reaches {url}"
        );
    }
}

fn port_isolated(rig: &Rig, name: &str) -> bool {
    let veth = veth_name(name);
    rig.sandbox()
        .run_ok("ip", &["-d", "link", "show", "dev", &veth])
        .contains("isolated on")
}

/// a1 claims a2's address over ARP (gratuitous request and unsolicited reply); returns
/// the host's neighbour entry for a2 afterwards.
fn arp_spoof_a2(rig: &Rig) -> String {
    // Linux ignores a neighbour update within a second of the last one (locktime).
    std::thread::sleep(Duration::from_millis(1500));
    // a1 takes the address itself (arping binds to its source) and announces it.
    let out = rig.attach(
        "a1",
        "ip addr add 10.0.3.3/32 dev eth0 && arping -U -c 2 -w 3 -I eth0 -s 10.0.3.3 10.0.3.3; \
         arping -A -c 2 -w 3 -I eth0 -s 10.0.3.3 10.0.3.3; ip addr del 10.0.3.3/32 dev eth0",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Sent 2 probe"),
        "arping: {out:?}"
    );
    host_neigh(rig, "10.0.3.3")
}

/// a1 pings the host from a second address it gave itself; true if a reply came.
/// The host knows where that address is (a static neighbour entry), so only a
/// dropped request can keep the reply away.
fn ping_from_foreign_source(rig: &Rig) -> bool {
    let mac = mac_of(rig, "a1");
    rig.sandbox().run_ok(
        "ip",
        &[
            "neigh",
            "replace",
            "10.0.3.99",
            "lladdr",
            &mac,
            "dev",
            "lxcbr0",
            "nud",
            "permanent",
        ],
    );
    let out = rig.attach(
        "a1",
        "ip addr add 10.0.3.99/24 dev eth0 2>/dev/null; ping -c 2 -W 2 -I 10.0.3.99 10.0.3.1",
    );
    rig.attach("a1", "ip addr del 10.0.3.99/24 dev eth0");
    out.status.success()
}

/// a1 sends to a2's address through the host (the bridge's MAC as next hop); the body,
/// or "" when the host did not forward it.
fn wget_a2_through_the_gateway(rig: &Rig) -> String {
    let gw_mac = rig
        .sandbox()
        .run_ok("cat", &["/sys/class/net/lxcbr0/address"])
        .trim()
        .to_string();
    rig.attach(
        "a1",
        &format!("ip neigh replace 10.0.3.3 lladdr {gw_mac} dev eth0 nud permanent"),
    );
    let body = wget_in(rig, "a1", "http://10.0.3.3:8080/index.html");
    rig.attach("a1", "ip neigh del 10.0.3.3 dev eth0");
    body
}

/// a1 sends a few frames from a MAC that is not its own; true if the bridge let them in
/// (it learns a source address only from frames it accepted).
fn foreign_mac_enters_the_bridge(rig: &Rig) -> bool {
    const FOREIGN: &str = "02:de:ad:be:ef:01";
    let mac = mac_of(rig, "a1");
    rig.attach(
        "a1",
        &format!(
            "ip link set dev eth0 address {FOREIGN}; ping -c 2 -W 1 10.0.3.1; \
             ip link set dev eth0 address {mac}"
        ),
    );
    rig.sandbox()
        .run_ok("bridge", &["fdb", "show", "br", "lxcbr0"])
        .contains(FOREIGN)
}

#[test]
fn containers_cannot_reach_or_impersonate_each_other_but_reach_host_and_outside() {
    require_root();
    let rig = Rig::new();
    let outside = Outside::connect(&rig);
    let _server = outside.serve(&rig);
    two_containers(&rig);

    // Both host-side veths carry the derived names and are isolated bridge ports.
    for n in ["a1", "a2"] {
        assert!(
            wait_until(Duration::from_secs(5), || port_isolated(&rig, n)),
            "{n}'s port: {}",
            rig.sandbox().run_ok("ip", &["-d", "link", "show"])
        );
    }
    let tables = rig.sandbox().run_ok("nft", &["list", "tables"]);
    assert!(tables.contains("table bridge osm_host"), "{tables}");

    // No container reaches another's TCP port, by address or through the gateway.
    assert_eq!(wget_in(&rig, "a1", "http://10.0.3.3:8080/index.html"), "");
    assert_eq!(wget_in(&rig, "a2", "http://10.0.3.2:8080/index.html"), "");
    let nc = rig.attach("a1", "echo x | timeout 4 nc -w 2 10.0.3.3 8080");
    assert!(!nc.status.success(), "nc reached a2: {nc:?}");
    assert_eq!(wget_a2_through_the_gateway(&rig), "", "routed via the host");

    // The host's bridge address (DNS of dnsmasq) and the outside through NAT still work.
    let out = rig.attach("a1", "nslookup a2 10.0.3.1");
    assert!(stdout(&out).contains("10.0.3.3"), "{out:?}");
    assert!(rig.attach("a1", "ping -c 1 -W 2 10.0.3.1").status.success());
    let url = format!("http://{OUTSIDE_PEER}:8080/index.html");
    assert!(
        wait_until(Duration::from_secs(10), || wget_in(&rig, "a1", &url)
            .contains("hello from outside")),
        "a1 reaches the outside through NAT"
    );
    // Nothing from the outside gets into a container, though it has a route.
    assert_eq!(
        host_wget(&outside.sandbox, "http://10.0.3.3:8080/index.html"),
        "",
        "the outside reached a container"
    );

    // ARP for another's address is dropped: the host keeps a2's MAC.
    let (m1, m2) = (mac_of(&rig, "a1"), mac_of(&rig, "a2"));
    let neigh = arp_spoof_a2(&rig);
    assert!(
        !neigh.contains(&m1),
        "the host took a1's MAC for a2: {neigh}"
    );
    assert!(
        host_wget(rig.sandbox(), "http://10.0.3.3:8080/index.html").contains("inside-a2"),
        "a2 is still reached at its address ({m2})"
    );

    // Frames from a foreign MAC never enter the bridge.
    assert!(!foreign_mac_enters_the_bridge(&rig));
    assert!(rig.attach("a1", "ping -c 1 -W 2 10.0.3.1").status.success());

    // A foreign source address gets nowhere; the own one does.
    assert!(
        !ping_from_foreign_source(&rig),
        "a spoofed source got a reply"
    );
    assert!(rig
        .attach("a1", "ping -c 1 -W 2 -I 10.0.3.2 10.0.3.1")
        .status
        .success());

    // Nothing from a DHCP server port leaves a container; other ports do.
    assert_eq!(udp_ports_received(&rig, "a1", &[67, 547, 6767]), vec![6767]);
    // Nor an IPv6 router advertisement; other ICMPv6 does.
    assert_eq!(icmpv6_types_heard(&rig, "a1"), vec![128]);

    // A restarted daemon finds the ports again and keeps them isolated.
    let mut rig = rig;
    rig.sandbox().run_ok(
        "ip",
        &[
            "link",
            "set",
            "dev",
            &veth_name("a2"),
            "type",
            "bridge_slave",
            "isolated",
            "off",
        ],
    );
    rig.daemon_mut().restart();
    assert!(port_isolated(&rig, "a2"), "re-applied at daemon start");
    assert_eq!(wget_in(&rig, "a1", "http://10.0.3.3:8080/index.html"), "");

    // A deleted container's rules go; the others stay.
    rig.ctl_ok(&["delete", "a2", "--force"]);
    let veth2 = veth_name("a2");
    assert!(wait_until(Duration::from_secs(5), || !rig
        .sandbox()
        .run_ok("nft", &["list", "table", "bridge", "osm_host"])
        .contains(&veth2)));
    let t = rig
        .sandbox()
        .run_ok("nft", &["list", "table", "bridge", "osm_host"]);
    assert!(t.contains(&veth_name("a1")), "{t}");
    rig.ctl_ok(&["stop", "a1", "--force"]);
}

#[test]
fn isolate_false_keeps_the_flat_bridge() {
    require_root();
    let rig = Rig::builder()
        .config(|c| {
            c.set("network.isolate", "false");
        })
        .start();
    let outside = Outside::connect(&rig);
    two_containers(&rig);
    assert!(!port_isolated(&rig, "a1"));
    let tables = rig.sandbox().run_ok("nft", &["list", "tables"]);
    assert!(!tables.contains("table bridge osm_host"), "{tables}");

    // Each of the checks of the isolated test, seen to pass on a flat bridge.
    assert!(
        wait_until(Duration::from_secs(5), || wget_in(
            &rig,
            "a1",
            "http://10.0.3.3:8080/index.html"
        )
        .contains("inside-a2")),
        "a1 reaches a2 on a flat bridge"
    );
    assert!(
        host_wget(&outside.sandbox, "http://10.0.3.3:8080/index.html").contains("inside-a2"),
        "the outside routes into a container when forwarding is open"
    );
    assert!(ping_from_foreign_source(&rig), "a foreign source passes");
    assert!(
        wget_a2_through_the_gateway(&rig).contains("inside-a2"),
        "the host routes between containers when forwarding is open"
    );
    assert!(foreign_mac_enters_the_bridge(&rig), "a foreign MAC passes");
    assert_eq!(
        udp_ports_received(&rig, "a1", &[67, 547, 6767]),
        vec![67, 547, 6767]
    );
    assert_eq!(icmpv6_types_heard(&rig, "a1"), vec![128, 134]);
    let neigh = arp_spoof_a2(&rig);
    assert!(
        neigh.contains(&mac_of(&rig, "a1")),
        "on a flat bridge a1's ARP takes a2's address: {neigh}"
    );
    rig.ctl_ok(&["stop", "a1", "--force"]);
    rig.ctl_ok(&["stop", "a2", "--force"]);
}

fn mode_and_owner(rig: &Rig, path: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(rig.sandbox().host_path(path)).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// The mount options of the topmost mount exactly at `point`, as the daemon's mount
/// namespace has them.
fn mount_options(rig: &Rig, point: &Path) -> Option<String> {
    let info = rig.sandbox().run_ok("cat", &["/proc/self/mountinfo"]);
    info.lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(point.to_str().unwrap()))
        .map(|l| l.split(' ').nth(5).unwrap().to_string())
}

fn has_nosuid_nodev(opts: &str) -> bool {
    opts.split(',').any(|o| o == "nosuid") && opts.split(',').any(|o| o == "nodev")
}

#[test]
fn the_store_and_the_backup_tree_are_private_and_nosuid_nodev() {
    require_root();
    let mut rig = Rig::builder().no_daemon_start().start();
    // The backup target exists, open to everyone, before the daemon starts.
    let target = rig.dir().join("backups");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cfg = rig::DaemonConfig::for_test_dir(rig.dir());
    cfg.set_str("backup.target", target.to_str().unwrap());
    rig.daemon().write_config(&cfg);
    rig.daemon_mut().start();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "c1", "--base", "bb"]);

    let store = rig.store_root();
    let dirs = [
        store.clone(),
        store.join("lxc"),
        store.join("lxc/containers"),
        store.join("lxc/containers/c1"),
        target.clone(),
    ];
    for d in &dirs {
        assert_eq!(mode_and_owner(&rig, d), (0o700, 0, 0), "{}", d.display());
    }
    let opts = mount_options(&rig, &store).expect("the store is mounted");
    assert!(has_nosuid_nodev(&opts), "{opts}");

    // An existing store opened up by hand, and mounted without the flags, is fixed at
    // the next start.
    for d in &dirs {
        std::fs::set_permissions(
            rig.sandbox().host_path(d),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    rig.daemon_mut().stop();
    rig.sandbox().run_ok(
        "mount",
        &["-o", "remount,suid,dev", store.to_str().unwrap()],
    );
    let opts = mount_options(&rig, &store).unwrap();
    assert!(!opts.contains("nosuid"), "{opts}");
    rig.daemon_mut().start();
    for d in &dirs {
        assert_eq!(mode_and_owner(&rig, d), (0o700, 0, 0), "{}", d.display());
    }
    let opts = mount_options(&rig, &store).unwrap();
    assert!(has_nosuid_nodev(&opts), "{opts}");
}

#[test]
fn a_store_inside_a_larger_btrfs_is_bind_mounted_nosuid_nodev_on_its_own() {
    require_root();
    let mut rig = Rig::builder().no_daemon_start().start();
    let fs = rig.dir().join("btrfs");
    let img = rig.dir().join("btrfs.img");
    std::fs::create_dir(&fs).unwrap();
    rig.sandbox()
        .run_ok("truncate", &["-s", "4G", img.to_str().unwrap()]);
    rig.sandbox()
        .run_ok("mkfs.btrfs", &["-q", img.to_str().unwrap()]);
    rig.sandbox().run_ok(
        "mount",
        &["-o", "loop", img.to_str().unwrap(), fs.to_str().unwrap()],
    );
    let store = fs.join("store");
    let mut cfg = rig::DaemonConfig::for_test_dir(rig.dir());
    cfg.remove("loop_image")
        .set_str("store_root", store.to_str().unwrap());
    rig.daemon().write_config(&cfg);
    rig.daemon_mut().start();

    let opts = mount_options(&rig, &store).expect("the store has a mount of its own");
    assert!(has_nosuid_nodev(&opts), "{opts}");
    let around = mount_options(&rig, &fs).unwrap();
    assert!(
        !around.contains("nosuid"),
        "the filesystem around the store is left as it was: {around}"
    );
    // Idempotent: a restart adds no second bind mount.
    rig.daemon_mut().restart();
    let info = rig.sandbox().run_ok("cat", &["/proc/self/mountinfo"]);
    let count = info
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(store.to_str().unwrap()))
        .count();
    assert_eq!(count, 1, "{info}");
    assert_eq!(mode_and_owner(&rig, &store), (0o700, 0, 0));
    rig.daemon_mut().stop();
    rig.sandbox().run_ok("umount", &[store.to_str().unwrap()]);
    rig.sandbox().run_ok("umount", &[fs.to_str().unwrap()]);
}

#[test]
fn names_the_host_owns_are_refused_and_left_untouched() {
    require_root();
    let rig = Rig::new();
    rig.import_busybox_base("bb");
    let configs = rig.dir().join("snapper/configs");
    let foreign = "SUBVOLUME=\"/home\"\nFSTYPE=\"btrfs\"\n";
    std::fs::write(configs.join("home"), foreign).unwrap();
    let defaults = rig.dir().join("snapper/default");
    std::fs::write(&defaults, "SNAPPER_CONFIGS=\"home\"\n").unwrap();
    let hosts = rig.dir().join("hosts");
    let hosts_text = "127.0.0.1\tlocalhost\n192.168.1.9\tnas nas.lan\n";
    std::fs::write(&hosts, hosts_text).unwrap();

    let out = rig.ctl(&["create", "home", "--base", "bb"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("snapper config") && err.contains("did not write"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(configs.join("home")).unwrap(),
        foreign
    );

    for (name, code, says) in [
        ("localhost", 5, "reserved"),
        ("ip6-loopback", 5, "reserved"),
        ("nas", 4, "outside osm-host's managed block"),
    ] {
        let out = rig.ctl(&["create", name, "--base", "bb"]);
        assert_eq!(out.status.code(), Some(code), "{name}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{name}: {err}");
        assert_eq!(rig.ctl(&["info", name]).status.code(), Some(3), "{name}");
    }
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), hosts_text);

    // A config the daemon wrote and someone then took over survives a delete.
    rig.ctl_ok(&["create", "db1", "--base", "bb"]);
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&hosts).unwrap().contains("db1")
    }));
    let theirs = "SUBVOLUME=\"/srv/db1\"\n";
    std::fs::write(configs.join("db1"), theirs).unwrap();
    rig.ctl_ok(&["delete", "db1"]);
    assert_eq!(
        std::fs::read_to_string(configs.join("db1")).unwrap(),
        theirs
    );
    let listed = std::fs::read_to_string(&defaults).unwrap();
    assert!(
        listed.contains("home") && listed.contains("db1"),
        "{listed}"
    );
    assert_eq!(
        std::fs::read_to_string(configs.join("home")).unwrap(),
        foreign,
        "the host's config is never touched"
    );
}
