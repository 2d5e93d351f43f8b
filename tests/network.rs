//! Root integration: the daemon's container network in the test's private network
//! namespace. Bridge, dnsmasq reservations answered over DHCP to busybox's udhcpc, the
//! hosts file block, NAT to a second namespace standing in for the outside, dnsmasq
//! repaired after kill -9, and adoption across daemon restarts. Traffic only between
//! the test's own namespaces.

use rig::{require_root, wait_until, DaemonConfig, Rig, Sandbox};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

fn info_json(rig: &Rig, name: &str) -> serde_json::Value {
    rig.info_json(name)
}

fn host_json(rig: &Rig) -> serde_json::Value {
    serde_json::from_str(&rig.ctl_ok(&["host", "info", "--json"])).expect("host info --json")
}

fn attach(rig: &Rig, name: &str, script: &str) -> Output {
    rig.attach(name, script)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The IPv4 addresses on the container's eth0, as `ip -4 addr` shows them inside.
fn eth0_has(rig: &Rig, name: &str, ip: &str) -> bool {
    stdout(&attach(rig, name, "ip -4 addr show dev eth0")).contains(&format!("inet {ip}/24"))
}

fn hosts(rig: &Rig) -> String {
    std::fs::read_to_string(rig.dir().join("hosts")).unwrap()
}

fn leases(rig: &Rig) -> String {
    std::fs::read_to_string(rig.dir().join("run/dnsmasq/leases")).unwrap_or_default()
}

/// `wget` of `url` with busybox, from inside the sandbox (the host side).
fn host_wget(rig: &Rig, url: &str) -> Output {
    rig.in_sandbox("/bin/busybox")
        .args(["timeout", "5", "wget", "-q", "-O", "-", url])
        .output()
        .unwrap()
}

fn exit_code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn busybox_containers_get_their_reserved_addresses_names_and_survive_restarts() {
    require_root();
    let mut rig = Rig::new();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["create", "web2", "--base", "bb", "--ip", "10.0.3.50"]);

    // Addresses are chosen at create, stored, and shown.
    assert_eq!(info_json(&rig, "web1")["ipv4_address"], "10.0.3.2");
    assert_eq!(info_json(&rig, "web2")["ipv4_address"], "10.0.3.50");
    let spec = std::fs::read_to_string(
        rig.sandbox()
            .host_path(rig.lxc_path().join("web2/container.toml")),
    )
    .unwrap();
    assert!(spec.contains("ipv4 = \"10.0.3.50\""), "{spec}");
    let list = rig.ctl_ok(&["list"]);
    assert!(
        list.contains("10.0.3.2") && list.contains("10.0.3.50"),
        "{list}"
    );

    // A taken or foreign pinned address is refused and leaves nothing.
    let out = rig.ctl(&["create", "web3", "--base", "bb", "--ip", "10.0.3.50"]);
    assert_eq!(exit_code(&out), 4, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("taken by container web2"),
        "{out:?}"
    );
    let out = rig.ctl(&["create", "web3", "--base", "bb", "--ip", "10.0.9.9"]);
    assert_eq!(exit_code(&out), 5, "{out:?}");
    assert_eq!(exit_code(&rig.ctl(&["info", "web3"])), 3);

    // The hosts file gets a managed block; the rest stays.
    assert!(
        wait_until(Duration::from_secs(5), || hosts(&rig)
            .contains("10.0.3.50\tweb2")),
        "{}",
        hosts(&rig)
    );
    let h = hosts(&rig);
    assert!(
        h.starts_with("127.0.0.1\tlocalhost\n# BEGIN osm-host managed block"),
        "{h}"
    );
    assert!(h.contains("10.0.3.2\tweb1\n"), "{h}");

    let net = host_json(&rig);
    assert_eq!(net["bridge"], "lxcbr0");
    assert_eq!(net["subnet"], "10.0.3.0/24");
    assert_eq!(net["used"], 2);
    assert_eq!(net["free"], 251);
    assert_eq!(net["dnsmasq_state"], "running", "{net}");
    let text = rig.ctl_ok(&["network", "info"]);
    assert!(
        text.contains("dnsmasq:") && text.contains("lxcbr0"),
        "{text}"
    );

    // udhcpc in each container gets the reserved address.
    rig.ctl_ok(&["start", "web1"]);
    rig.ctl_ok(&["start", "web2"]);
    for (name, ip) in [("web1", "10.0.3.2"), ("web2", "10.0.3.50")] {
        assert!(
            wait_until(Duration::from_secs(15), || eth0_has(&rig, name, ip)),
            "{name} did not get {ip}: {}\nleases: {}\n{}",
            stdout(&attach(&rig, name, "ip addr")),
            leases(&rig),
            rig.daemon().log_tail(40)
        );
    }
    // The daemon reports the address the container really has.
    let live = &info_json(&rig, "web1")["addresses"];
    assert!(
        live.as_array().unwrap().iter().any(|a| a == "10.0.3.2"),
        "{live}"
    );
    let mac = info_json(&rig, "web1")["mac_address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        leases(&rig).contains(&format!("{mac} 10.0.3.2 ")),
        "{}",
        leases(&rig)
    );

    // The host reaches a TCP port inside; containers resolve each other's names.
    let out = attach(
        &rig,
        "web1",
        "mkdir -p /tmp/www && echo inside-web1 > /tmp/www/index.html && httpd -p 8080 -h /tmp/www",
    );
    assert!(out.status.success(), "{out:?}");
    let fetched = |rig: &Rig| stdout(&host_wget(rig, "http://10.0.3.2:8080/index.html"));
    assert!(wait_until(Duration::from_secs(5), || fetched(&rig)
        .contains("inside-web1")));
    let out = attach(&rig, "web2", "nslookup web1 10.0.3.1");
    assert!(stdout(&out).contains("10.0.3.2"), "{out:?}");

    // kill -9 of dnsmasq is repaired within seconds, with a new process.
    let old_pid = host_json(&rig)["dnsmasq_pid"].as_u64().unwrap();
    assert!(old_pid > 0);
    rig.sandbox().run_ok("kill", &["-9", &old_pid.to_string()]);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let n = host_json(&rig);
            n["dnsmasq_state"] == "running" && n["dnsmasq_pid"].as_u64() != Some(old_pid)
        }),
        "dnsmasq was not restarted: {}",
        host_json(&rig)
    );
    assert!(host_json(&rig)["dnsmasq_restarts"].as_u64().unwrap() >= 1);
    // The new dnsmasq answers within seconds (it may still be binding right now).
    let mut out = attach(&rig, "web2", "nslookup web1 10.0.3.1");
    assert!(
        wait_until(Duration::from_secs(5), || {
            out = attach(&rig, "web2", "nslookup web1 10.0.3.1");
            stdout(&out).contains("10.0.3.2")
        }),
        "the new dnsmasq answers: {out:?}"
    );

    // A restarted daemon adopts bridge, dnsmasq and leases; connectivity never breaks.
    let pid = host_json(&rig)["dnsmasq_pid"].as_u64().unwrap();
    rig.daemon_mut().kill9();
    assert!(
        fetched(&rig).contains("inside-web1"),
        "connectivity without the daemon"
    );
    rig.daemon_mut().start();
    let n = host_json(&rig);
    assert_eq!(n["dnsmasq_pid"].as_u64(), Some(pid), "dnsmasq adopted: {n}");
    assert!(leases(&rig).contains(&mac), "leases kept");
    rig.daemon_mut().stop();
    assert!(
        fetched(&rig).contains("inside-web1"),
        "connectivity after a clean stop"
    );
    rig.sandbox().run_ok("ip", &["link", "show", "lxcbr0"]);
    rig.daemon_mut().start();
    assert_eq!(
        host_json(&rig)["dnsmasq_pid"].as_u64(),
        Some(pid),
        "adopted again"
    );
    assert!(fetched(&rig).contains("inside-web1"));
    // A renewal against the adopted dnsmasq still gets the same address.
    rig.ctl_ok(&["restart", "web1", "--timeout", "5"]);
    assert!(wait_until(Duration::from_secs(15), || eth0_has(
        &rig, "web1", "10.0.3.2"
    )));

    // Deleting a container releases its address, its name and its lease.
    let mac2 = info_json(&rig, "web2")["mac_address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(leases(&rig).contains(&mac2), "{}", leases(&rig));
    rig.ctl_ok(&["delete", "web2", "--force"]);
    assert!(
        wait_until(Duration::from_secs(10), || !hosts(&rig).contains("web2")
            && !leases(&rig).contains(&mac2)),
        "hosts:\n{}\nleases:\n{}",
        hosts(&rig),
        leases(&rig)
    );
    assert!(!rig.dir().join("run/dnsmasq/hosts/web2").exists());
    // The dnsmasq restarted for the purge still serves the others.
    rig.ctl_ok(&["restart", "web1", "--timeout", "5"]);
    assert!(wait_until(Duration::from_secs(15), || eth0_has(
        &rig, "web1", "10.0.3.2"
    )));
    assert!(hosts(&rig).contains("10.0.3.2\tweb1\n"));
    assert!(wait_until(Duration::from_secs(5), || host_json(&rig)
        ["dnsmasq_state"]
        == "running"));
    rig.ctl_ok(&["create", "web3", "--base", "bb", "--ip", "10.0.3.50"]);
    rig.ctl_ok(&["delete", "web1", "--force"]);
    rig.ctl_ok(&["delete", "web3"]);
    assert!(
        wait_until(Duration::from_secs(5), || !hosts(&rig).contains("osm-host")),
        "an empty block is removed: {}",
        hosts(&rig)
    );
    assert_eq!(hosts(&rig), "127.0.0.1\tlocalhost\n");
}

/// A second namespace standing in for the outside, joined to the rig's by a veth pair
/// on a documentation prefix. It has no route back to the containers' subnet, so a
/// reply reaches a container only through the masquerade.
struct Outside {
    sandbox: Sandbox,
}

const OUTSIDE_HOST: &str = "198.51.100.1";
const OUTSIDE_PEER: &str = "198.51.100.2";

impl Outside {
    fn connect(rig: &Rig) -> Outside {
        let sandbox = Sandbox::new();
        // Only the net namespace is entered, so `netns <pid>` names a host pid.
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
        rig.sandbox().run_ok(
            "ip",
            &[
                "addr",
                "add",
                &format!("{OUTSIDE_HOST}/24"),
                "dev",
                "osm-out",
            ],
        );
        rig.sandbox()
            .run_ok("ip", &["link", "set", "osm-out", "up"]);
        sandbox.run_ok(
            "ip",
            &[
                "addr",
                "add",
                &format!("{OUTSIDE_PEER}/24"),
                "dev",
                "osm-in",
            ],
        );
        sandbox.run_ok("ip", &["link", "set", "osm-in", "up"]);
        Outside { sandbox }
    }
}

#[test]
fn containers_reach_the_outside_through_nat_only() {
    require_root();
    let rig = Rig::new();
    let outside = Outside::connect(&rig);
    let www: PathBuf = rig.dir().join("outside-www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from outside\n").unwrap();
    let mut cmd = outside.sandbox.command("/bin/busybox");
    cmd.args(["httpd", "-f", "-p", &format!("{OUTSIDE_PEER}:8080"), "-h"])
        .arg(&www);
    let _server = outside.sandbox.spawn(&mut cmd).unwrap();

    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    rig.ctl_ok(&["start", "web1"]);
    assert!(wait_until(Duration::from_secs(15), || eth0_has(
        &rig, "web1", "10.0.3.2"
    )));
    let nft = rig
        .sandbox()
        .run_ok("nft", &["list", "table", "ip", "osm_host"]);
    assert!(nft.contains("masquerade"), "{nft}");

    let url = format!("http://{OUTSIDE_PEER}:8080/index.html");
    let get = |rig: &Rig| {
        stdout(&attach(
            rig,
            "web1",
            &format!("timeout 5 wget -q -O - {url}"),
        ))
    };
    assert!(
        wait_until(Duration::from_secs(10), || get(&rig)
            .contains("hello from outside")),
        "the container reaches the outside through NAT: {}",
        stdout(&attach(&rig, "web1", "ip route; ip addr"))
    );

    // Without our table the outside cannot answer: proof that the masquerade did it.
    rig.sandbox()
        .run_ok("nft", &["delete", "table", "ip", "osm_host"]);
    assert!(
        !get(&rig).contains("hello from outside"),
        "reached without NAT?"
    );
    // A restarted daemon puts the table back (idempotently, leaving other tables).
    rig.sandbox()
        .run_ok("nft", &["add", "table", "ip", "someone_else"]);
    let mut rig = rig;
    rig.daemon_mut().restart();
    rig.daemon_mut().restart();
    assert!(get(&rig).contains("hello from outside"));
    let tables = rig.sandbox().run_ok("nft", &["list", "tables"]);
    assert!(
        tables.contains("someone_else")
            && tables.matches("table ip osm_host").count() == 1
            && tables.matches("table bridge osm_host").count() == 1,
        "{tables}"
    );
    rig.ctl_ok(&["stop", "web1", "--force"]);
}

#[test]
fn an_address_owned_elsewhere_or_a_range_outside_the_subnet_stops_the_start() {
    require_root();
    let mut rig = Rig::builder().no_daemon_start().start();
    // No dummy module on every kernel: a veth pair will do.
    rig.sandbox().run_ok(
        "ip",
        &[
            "link", "add", "osm-v0", "type", "veth", "peer", "name", "osm-v1",
        ],
    );
    rig.sandbox()
        .run_ok("ip", &["addr", "add", "10.0.3.1/24", "dev", "osm-v0"]);
    let err = rig.daemon_mut().try_start().unwrap_err();
    assert!(
        err.contains("10.0.3.1/24 is already used by osm-v0"),
        "{err}"
    );

    let mut cfg = DaemonConfig::for_test_dir(rig.dir());
    cfg.set_str("network.dhcp_range", "10.0.4.2-10.0.4.20");
    rig.daemon().write_config(&cfg);
    let err = rig.daemon_mut().try_start().unwrap_err();
    assert!(err.contains("not inside network.address"), "{err}");

    // Another subnet works, and the bridge gets it.
    let mut cfg = DaemonConfig::for_test_dir(rig.dir());
    cfg.set_str("network.address", "10.0.7.1/24");
    rig.daemon().write_config(&cfg);
    rig.daemon_mut().start();
    let addr = rig
        .sandbox()
        .run_ok("ip", &["-4", "addr", "show", "dev", "lxcbr0"]);
    assert!(addr.contains("10.0.7.1/24"), "{addr}");
    assert_eq!(host_json(&rig)["range_first"], "10.0.7.2");
}

#[test]
fn with_manage_off_the_host_network_is_left_alone_but_names_are_kept() {
    require_root();
    let rig = Rig::builder()
        .config(|c| {
            c.set("network.manage", "false");
        })
        .start();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "web1", "--base", "bb"]);
    assert!(wait_until(Duration::from_secs(5), || hosts(&rig)
        .contains("10.0.3.2\tweb1")));
    let links = rig.sandbox().run_ok("ip", &["-o", "link"]);
    assert!(!links.contains("lxcbr0"), "{links}");
    let tables = rig.sandbox().run_ok("nft", &["list", "tables"]);
    assert!(!tables.contains("osm_host"), "{tables}");
    let n = host_json(&rig);
    assert_eq!(
        (n["managed"].as_bool(), n["dnsmasq_state"].as_str()),
        (Some(false), Some("unmanaged"))
    );
    assert!(!rig.dir().join("run/dnsmasq").exists());
    // Without the bridge a container still starts, with loopback only.
    rig.ctl_ok(&["start", "web1"]);
    rig.ctl_ok(&["stop", "web1", "--force"]);
}

#[test]
fn a_duid_client_id_as_systemd_networkd_sends_still_gets_the_macs_reservation() {
    require_root();
    let rig = Rig::new();
    rig.import_busybox_base("bb");
    rig.ctl_ok(&["create", "nd1", "--base", "bb", "--ip", "10.0.3.77"]);
    rig.ctl_ok(&["start", "nd1"]);
    assert!(wait_until(Duration::from_secs(15), || eth0_has(
        &rig,
        "nd1",
        "10.0.3.77"
    )));
    // Client id 0xff + IAID + DUID-LLT, the RFC 4361 form networkd uses.
    let out = attach(
        &rig,
        "nd1",
        "udhcpc -i eth0 -f -q -n -t 3 -T 1 -s /bin/true \
         -x 0x3d:ff0000000100010001276e4f2a0211223344 2>&1",
    );
    let text = stdout(&out);
    assert!(text.contains("lease of 10.0.3.77 obtained"), "{out:?}");
    rig.ctl_ok(&["stop", "nd1", "--force"]);
}
