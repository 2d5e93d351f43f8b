//! Tests of the root test rig itself (`tests/common/`), without osm-hostd: namespaces,
//! private bus and policy, a real busybox LXC container, and teardown on drop and panic.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rig::handmade_lxc::{self, lxc_cgroups_of};
use rig::{
    assert_no_leftovers, busybox_rootfs_tar, leftovers_under, list_names, procs, require_root,
    test_tempdir, wait_until, BusPolicy, PrivateBus, Rig, Sandbox, StandInService, BUS_NAME,
};

#[test]
#[ignore = "probe: run as uid 65534 by root_guard_fails_without_root"]
fn root_guard_probe() {
    require_root();
}

#[test]
fn root_guard_fails_without_root() {
    require_root();
    let exe = std::env::current_exe().unwrap();
    let out = as_nobody(&exe.to_string_lossy())
        .args(["--exact", "root_guard_probe", "--include-ignored"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "non-root run passed:\n{text}");
    assert!(text.contains("root integration tests need root"), "{text}");
}

#[test]
fn sandbox_has_its_own_network_and_sysfs() {
    let sb = Sandbox::new();
    assert_eq!(links(&sb.run_ok("ip", &["-o", "link", "show"])), ["lo"]);
    let lo = sb.run_ok("ip", &["-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "lo is down: {lo}");
    let host = String::from_utf8(
        Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        links(&host.unwrap()).len() > 1,
        "host should have more than lo"
    );

    // A fresh sysfs shows this namespace's interfaces: what LXC looks bridges up in.
    sb.run_ok("ip", &["link", "add", "lxcbr0", "type", "bridge"]);
    assert_eq!(
        words(&sb.run_ok("ls", &["/sys/class/net"])),
        ["lo", "lxcbr0"]
    );

    // ... with the host's cgroup hierarchies still mounted under it.
    let mut host_cg: Vec<String> = fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    host_cg.sort();
    assert_eq!(words(&sb.run_ok("ls", &["/sys/fs/cgroup"])), host_cg);
    assert_eq!(
        sb.run_ok("stat", &["-f", "-c", "%T", "/run/lxc"]).trim(),
        "tmpfs"
    );
}

#[test]
fn sandbox_mounts_stay_inside() {
    let dir = test_tempdir("osm-selftest-");
    let mnt = dir.path().join("m");
    fs::create_dir(&mnt).unwrap();
    let sb = Sandbox::builder().scratch_in(dir.path()).start();
    sb.run_ok(
        "mount",
        &[
            Path::new("-t"),
            Path::new("tmpfs"),
            Path::new("selftest"),
            mnt.as_path(),
        ],
    );
    sb.run_ok("sh", &["-c", &format!("echo hi > {}/file", mnt.display())]);

    let m = mnt.to_string_lossy().into_owned();
    assert!(sb.run_ok("cat", &["/proc/self/mountinfo"]).contains(&m));
    assert!(!fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&m));
    assert!(!mnt.join("file").exists(), "the tmpfs leaked to the host");
    let via_proc = fs::read_to_string(sb.host_path(mnt.join("file"))).unwrap();
    assert_eq!(via_proc, "hi\n");

    drop(sb);
    assert_no_leftovers(dir.path());
}

#[test]
fn sandbox_init_reaps_orphans_and_children_get_signals() {
    let sb = Sandbox::new();
    let holder = sb.holder_pid();
    let pid_ns = procs::ns_id(holder, "pid").unwrap();
    assert!(sb
        .run_ok("cat", &["/proc/1/cmdline"])
        .contains("osm-sandbox-holder"));

    // An orphan is re-parented to the holder, which must reap it like an init.
    sb.run_ok("sh", &["-c", "sleep 0.3 >/dev/null 2>&1 &"]);
    let zombies = || {
        procs::pids_in_ns("pid", &pid_ns)
            .into_iter()
            .filter(|&p| procs::state(p) == Some('Z'))
            .count()
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(wait_until(Duration::from_secs(3), || zombies() == 0));

    // nsenter does not forward signals; SandboxChild signals the real program.
    let mut child = sb.spawn(sb.command("sleep").arg("600")).unwrap();
    let pid = child.pid().expect("inner pid");
    assert_eq!(procs::ns_id(pid, "pid").unwrap(), pid_ns);
    // spawn returns as soon as nsenter has forked; the exec follows.
    assert!(wait_until(Duration::from_secs(5), || {
        procs::cmdline(pid).as_deref() == Some("sleep 600")
    }));
    child.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child
        .wait_timeout(Duration::from_secs(5))
        .expect("sleep exits");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

#[test]
fn private_bus_answers_list_names_on_host_and_in_sandbox() {
    let dir = test_tempdir("osm-selftest-");
    let bus = PrivateBus::start(dir.path(), BusPolicy::Real);
    assert!(list_names(bus.address())
        .iter()
        .any(|n| n == "org.freedesktop.DBus"));

    let sb = Sandbox::new();
    let dir2 = test_tempdir("osm-selftest-");
    let inner = PrivateBus::start_in(&sb.handle(), dir2.path(), BusPolicy::Real);
    // A path socket crosses network namespaces.
    assert!(list_names(inner.address())
        .iter()
        .any(|n| n == "org.freedesktop.DBus"));
    assert!(!inner.name_has_owner(BUS_NAME));
}

#[test]
fn real_policy_denies_nobody_mutations_but_not_introspection() {
    let dir = test_tempdir("osm-selftest-");
    let bus = PrivateBus::start(dir.path(), BusPolicy::Real);
    let create = "uk.co.devtank.OsmHost1.Manager.CreateContainer";
    let introspect = "org.freedesktop.DBus.Introspectable.Introspect";

    // With nobody owning the name, the bus answers ServiceUnknown (activation comes
    // before policy), so a stand-in service owns it while we probe the policy.
    let no_owner = call_service(bus.address(), true, create);
    assert!(no_owner.contains("ServiceUnknown"), "{no_owner}");
    {
        let _service = StandInService::start(bus.address());
        let denied = call_service(bus.address(), true, create);
        assert!(
            denied.contains("org.freedesktop.DBus.Error.AccessDenied"),
            "{denied}"
        );
        let allowed = call_service(bus.address(), true, introspect);
        assert!(allowed.contains("<node"), "{allowed}");
        let root = call_service(bus.address(), false, create);
        assert!(root.contains("stand-in created web1"), "{root}");
    }

    // uid 65534 reaches the socket and may talk to the bus driver.
    let out = as_nobody("dbus-send")
        .arg(format!("--bus={}", bus.address()))
        .args([
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
        ])
        .arg("org.freedesktop.DBus.ListNames")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn permissive_policy_lets_nobody_through_to_the_daemon() {
    let dir = test_tempdir("osm-selftest-");
    let bus = PrivateBus::start(dir.path(), BusPolicy::Permissive);
    let _service = StandInService::start(bus.address());
    let create = "uk.co.devtank.OsmHost1.Manager.CreateContainer";
    let out = call_service(bus.address(), true, create);
    assert!(out.contains("stand-in created web1"), "{out}");
}

#[test]
fn busybox_tar_has_the_expected_layout() {
    let dir = test_tempdir("osm-selftest-");
    let t = Instant::now();
    let tar = busybox_rootfs_tar(dir.path());
    let took = t.elapsed();
    let out = Command::new("tar")
        .args(["-tvf"])
        .arg(&tar)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "bin/busybox",
        "bin/sh -> busybox",
        "sbin/init -> ../bin/busybox",
        "etc/inittab",
        "etc/init.d/rcS",
        "etc/passwd",
        "etc/group",
        " proc/",
        " tmp/",
    ] {
        assert!(
            listing.contains(needle),
            "{needle} missing from:\n{listing}"
        );
    }
    assert!(listing.contains("rwxr-xr-x 0/0") && listing.contains("etc/init.d/rcS"));
    assert!(took < Duration::from_secs(5), "busybox image took {took:?}");
}

#[test]
fn busybox_container_runs_and_stops_in_sandbox() {
    let dir = test_tempdir("osm-selftest-");
    let name = unique_name("bb");
    let sb = Sandbox::builder().scratch_in(dir.path()).start();
    let lxc_path = dir.path().join("lxc");
    sb.track_lxc_path(&lxc_path);
    let tar = busybox_rootfs_tar(dir.path());
    start_busybox_container(&sb, &tar, &lxc_path, &name);

    let lp = lxc_path.to_string_lossy().into_owned();
    // RUNNING comes as init starts; rcS reaches its `sleep` a moment later.
    let ps = || sb.run_ok("lxc-attach", &["-P", &lp, "-n", &name, "--", "ps"]);
    wait_until(Duration::from_secs(10), || ps().contains("sleep 86400"));
    let ps = ps();
    assert!(ps.contains("init") && ps.contains("sleep 86400"), "{ps}");
    assert!(!sb
        .run_ok("ip", &["-o", "link", "show", "master", "lxcbr0"])
        .is_empty());
    let monitors = leftovers_under(dir.path());
    assert!(
        monitors.iter().any(|l| l.contains("[lxc monitor]")),
        "{monitors:?}"
    );

    // lxc-stop sends lxc.signal.halt (SIGPWR by default); busybox init halts on it.
    let t = Instant::now();
    sb.run_ok("lxc-stop", &["-P", &lp, "-n", &name]);
    let took = t.elapsed();
    assert_eq!(sb.lxc_state(&lxc_path, &name), "STOPPED");
    assert!(took < Duration::from_secs(10), "clean halt took {took:?}");
    eprintln!("lxc-stop (SIGPWR) of busybox init took {took:?}");
    let log = fs::read_to_string(lxc_path.join(&name).join("lxc.log")).unwrap();
    assert!(log.contains("ended on signal Interrupt"), "{log}");

    drop(sb);
    assert_no_leftovers(dir.path());
    assert_no_cgroups_of(&name);
}

#[test]
fn sandbox_drop_releases_running_container_mounts_and_loop_devices() {
    let dir = test_tempdir("osm-selftest-");
    let name = unique_name("td");
    let img = dir.path().join("store.img");
    fs::File::create(&img).unwrap().set_len(4 << 30).unwrap();
    let mkfs = Command::new("mkfs.btrfs")
        .arg("-q")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        mkfs.status.success(),
        "{}",
        String::from_utf8_lossy(&mkfs.stderr)
    );
    let store = dir.path().join("store");
    fs::create_dir(&store).unwrap();
    let tar = busybox_rootfs_tar(dir.path());

    let (mut busy, holder, net_ns, mnt_ns);
    {
        let sb = Sandbox::builder().scratch_in(dir.path()).start();
        sb.track_loop_files_under(dir.path());
        sb.run_ok(
            "mount",
            &[
                Path::new("-o"),
                Path::new("loop"),
                img.as_path(),
                store.as_path(),
            ],
        );
        assert!(leftovers_under(dir.path())
            .iter()
            .any(|l| l.starts_with("loop device")));
        let lxc_path = store.join("lxc");
        sb.track_lxc_path(&lxc_path);
        // The store is mounted only inside; the helper writes through host_path.
        start_busybox_container(&sb, &tar, &lxc_path, &name);
        // A process keeping the store busy, killed only by the namespace's end.
        let script = format!("cd {} && exec sleep 600", store.display());
        busy = sb.spawn(sb.command("sh").args(["-c", &script])).unwrap();
        holder = sb.holder_pid();
        net_ns = sb.net_ns().to_string();
        mnt_ns = sb.mnt_ns().to_string();
    }
    assert!(
        busy.try_wait().is_some(),
        "process inside survived the sandbox"
    );
    assert_ne!(
        procs::ns_id(holder, "mnt").as_deref(),
        Some(mnt_ns.as_str()),
        "holder alive"
    );
    assert!(procs::pids_in_ns("net", &net_ns).is_empty());
    assert!(procs::pids_in_ns("mnt", &mnt_ns).is_empty());
    assert_no_leftovers(dir.path());
    assert_no_cgroups_of(&name);
}

#[test]
fn panic_in_test_body_still_cleans_up() {
    let dir = test_tempdir("osm-selftest-");
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let sb = Sandbox::builder().scratch_in(dir.path()).start();
        let m = dir.path().join("m");
        fs::create_dir(&m).unwrap();
        sb.run_ok(
            "mount",
            &[
                Path::new("-t"),
                Path::new("tmpfs"),
                Path::new("x"),
                m.as_path(),
            ],
        );
        *seen.lock().unwrap() = Some((sb.holder_pid(), sb.mnt_ns().to_string()));
        panic!("deliberate panic inside a test body");
    }));
    assert!(result.is_err());
    let (holder, mnt_ns) = seen.lock().unwrap().take().unwrap();
    assert_ne!(
        procs::ns_id(holder, "mnt").as_deref(),
        Some(mnt_ns.as_str()),
        "holder alive"
    );
    assert!(procs::pids_in_ns("mnt", &mnt_ns).is_empty());
    assert_no_leftovers(dir.path());
}

#[test]
#[ignore = "probe: SIGKILLed by sandbox_dies_with_a_killed_test_process"]
fn sandbox_probe_waits_to_be_killed() {
    let scratch = std::env::var("OSM_SELFTEST_SCRATCH").expect("run by the killer test");
    let sb = Sandbox::builder().scratch_in(Path::new(&scratch)).start();
    println!("HOLDER {} {}", sb.holder_pid(), sb.mnt_ns());
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn sandbox_dies_with_a_killed_test_process() {
    use std::io::{BufRead, BufReader};
    let dir = test_tempdir("osm-selftest-");
    let exe = std::env::current_exe().unwrap();
    let mut probe = Command::new(exe)
        .args([
            "--exact",
            "sandbox_probe_waits_to_be_killed",
            "--include-ignored",
            "--nocapture",
        ])
        .env("OSM_SELFTEST_SCRATCH", dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(probe.stdout.take().unwrap());
    while !line.starts_with("HOLDER ") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "probe ended without a sandbox"
        );
    }
    let mut fields = line.split_whitespace().skip(1);
    let holder: i32 = fields.next().unwrap().parse().unwrap();
    let mnt_ns = fields.next().unwrap().to_string();
    assert_eq!(
        procs::ns_id(holder, "mnt").as_deref(),
        Some(mnt_ns.as_str())
    );

    // No Drop runs on SIGKILL: the holder must notice its stdin pipe closing.
    probe.kill().unwrap();
    probe.wait().unwrap();
    assert!(wait_until(Duration::from_secs(10), || procs::pids_in_ns(
        "mnt", &mnt_ns
    )
    .is_empty()));
    assert_no_leftovers(dir.path());
}

#[test]
fn rig_without_daemon_writes_a_valid_config_and_tears_down() {
    let rig = Rig::builder()
        .no_daemon_start()
        .config(|c| {
            c.set_str("network.address", "10.0.7.1/24")
                .append("[backup]\nmode = \"history\"");
        })
        .start();
    let path = rig.daemon().config_path().to_path_buf();
    let text = fs::read_to_string(&path).unwrap();
    let cfg = osm_hostd::config::HostConfig::parse(&text, &path)
        .unwrap_or_else(|e| panic!("rig config rejected: {e}\n{text}"));
    assert_eq!(cfg.store_root, rig.store_root());
    assert_eq!(
        cfg.loop_image.as_deref(),
        Some(rig.dir().join("store.img").as_path())
    );
    assert_eq!(cfg.loop_size, 6 << 30);
    assert_eq!(cfg.network.bridge, "lxcbr0");
    assert_eq!(cfg.network.subnet.gateway.to_string(), "10.0.7.1");
    assert_eq!(cfg.network.subnet.cidr(), "10.0.7.0/24");
    assert_eq!(cfg.backup.mode, osm_hostd::backup::Mode::History);
    assert_eq!(cfg.cache_dir, Path::new("/var/cache/osm-host-tests"));

    // The bus runs inside the sandbox; nobody reaches it from inside too.
    let out = rig
        .in_sandbox("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "dbus-send",
        ])
        .arg(format!("--bus={}", rig.bus().address()))
        .args([
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
        ])
        .arg("org.freedesktop.DBus.ListNames")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = rig.lxc_state("nothing");
    assert!(state.starts_with("lxc-info failed"), "{state}");

    let dir: PathBuf = rig.dir().to_path_buf();
    drop(rig);
    assert!(!dir.exists());
    assert_no_leftovers(&dir);
}

// ---- helpers ----

fn unique_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "rig-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn as_nobody(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
    cmd
}

/// `dbus-send` a method call to the service; returns stdout + stderr.
fn call_service(address: &str, nobody: bool, method: &str) -> String {
    let mut cmd = if nobody {
        as_nobody("dbus-send")
    } else {
        Command::new("dbus-send")
    };
    let out = cmd
        .arg(format!("--bus={address}"))
        .args([
            "--print-reply",
            &format!("--dest={BUS_NAME}"),
            "/uk/co/devtank/OsmHost1",
            method,
        ])
        .args(method.ends_with("CreateContainer").then_some("string:web1"))
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn links(ip_o_link: &str) -> Vec<String> {
    ip_o_link
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .collect()
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

/// Unpacks the busybox image, writes an LXC config (through `/proc/<holder>/root`,
/// so it works on mounts that exist only inside), and starts it on `lxcbr0`.
fn start_busybox_container(sb: &Sandbox, tar: &Path, lxc_path: &Path, name: &str) {
    let rootfs = lxc_path.join(name).join("rootfs");
    fs::create_dir_all(sb.host_path(&rootfs)).unwrap();
    handmade_lxc::unpack_tar(&sb.handle(), tar, &rootfs);
    let config = handmade_lxc::busybox_lxc_config(lxc_path, name, &rootfs);
    fs::write(sb.host_path(lxc_path.join(name).join("config")), config).unwrap();
    handmade_lxc::add_bridge(&sb.handle(), "lxcbr0");
    let lp = lxc_path.to_string_lossy();
    sb.run_ok("lxc-start", &["-P", &lp, "-n", name]);
    assert!(
        wait_until(Duration::from_secs(10), || sb.lxc_state(lxc_path, name)
            == "RUNNING"),
        "{name} did not reach RUNNING: {}",
        sb.lxc_state(lxc_path, name)
    );
}

fn assert_no_cgroups_of(name: &str) {
    let left = lxc_cgroups_of(name);
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}
