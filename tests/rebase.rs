//! `osm-hostctl rebase`: a customer container moves to a new base version keeping what
//! the customer changed, by the three-way rules; a dry run changes nothing; a daemon
//! killed at any step leaves the old stack or the new one. `list` and `info` show newer
//! versions of what a container pinned until it is rebased; `layer prune` keeps what is used.
//!
//! The Debian case builds a second bookworm from `tests/recipes/bookworm-v2.toml` (one
//! package added, /etc/motd changed). Both base builds are cached in the rig's shared
//! cache (`/var/cache/osm-host-tests`), so only a first run goes to Debian's mirror.

use rig::{project_path, require_root, wait_until, Rig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BASE_RECIPE: &str = "base-images/debian-bookworm.toml";
const V2_RECIPE: &str = "tests/recipes/bookworm-v2.toml";
const SHARED_CACHE: &str = "/var/cache/osm-host-tests";

fn container_dir(rig: &Rig, name: &str) -> PathBuf {
    rig.sandbox().host_path(rig.lxc_path().join(name))
}

fn inside(rig: &Rig, name: &str, script: &str) -> String {
    let out = rig.attach(name, script);
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rebase_json(rig: &Rig, args: &[&str]) -> Value {
    let mut all = vec!["rebase"];
    all.extend_from_slice(args);
    all.push("--json");
    serde_json::from_str(&rig.ctl_ok(&all)).expect("rebase --json is JSON")
}

fn conflicts(report: &Value) -> Vec<(String, String)> {
    report["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_string(),
                c["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn set_xattr(p: &Path, name: &str, value: Option<&[u8]>) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings; the value is readable for its length.
    let r = unsafe {
        match value {
            Some(v) => libc::lsetxattr(path.as_ptr(), name.as_ptr(), v.as_ptr().cast(), v.len(), 0),
            None => libc::lremovexattr(path.as_ptr(), name.as_ptr()),
        }
    };
    assert_eq!(r, 0, "{}: {}", p.display(), std::io::Error::last_os_error());
}

fn snapshot_nums(rig: &Rig, name: &str) -> Vec<u64> {
    let list: Value =
        serde_json::from_str(&rig.ctl_ok(&["snapshot", "list", name, "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["num"].as_u64().unwrap())
        .collect()
}

fn wait_running(rig: &Rig, name: &str) {
    assert!(
        wait_until(Duration::from_secs(30), || rig.lxc_state(name) == "RUNNING"),
        "{name} does not run"
    );
}

/// A busybox base with extra files, as an archive for `base import`.
fn busybox_variant(rig: &Rig, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = rig.dir().join("images").join(name);
    std::fs::create_dir_all(&root).unwrap();
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("tar")
        .arg("-xf")
        .arg(rig.busybox_tar())
        .arg("-C")
        .arg(&root));
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let tar = rig.dir().join("images").join(format!("{name}.tar"));
    ok(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .arg("."));
    tar
}

const STATUS_V1: &str =
    "Package: busybox\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n";
const STATUS_V2: &str =
    "Package: busybox\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n\n\
Package: newtool\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n";

/// bb@1 and bb@2: busybox bases whose /etc/motd, a packaged tool and dpkg's state differ.
fn two_busybox_bases(rig: &Rig) {
    let one = busybox_variant(
        rig,
        "bb1",
        &[
            ("etc/motd", "v1\n"),
            ("usr/bin/tool", "v1\n"),
            ("var/lib/dpkg/status", STATUS_V1),
            ("var/lib/dpkg/info/busybox.list", "/usr/bin/tool\n"),
        ],
    );
    let two = busybox_variant(
        rig,
        "bb2",
        &[
            ("etc/motd", "v2\n"),
            ("usr/bin/tool", "v2\n"),
            ("usr/bin/newtool", "new\n"),
            ("var/lib/dpkg/status", STATUS_V2),
            ("var/lib/dpkg/info/busybox.list", "/usr/bin/tool\n"),
            ("var/lib/dpkg/info/newtool.list", "/usr/bin/newtool\n"),
        ],
    );
    rig.ctl_ok(&["base", "import", "bb@1", one.to_str().unwrap()]);
    rig.ctl_ok(&["base", "import", "bb@2", two.to_str().unwrap()]);
}

/// What the customer does: its own /etc/motd, data under /var/lib, a changed packaged
/// file, a package of its own in dpkg's status.
const CUSTOMER: &str = "echo mine > /etc/motd && mkdir -p /var/lib/foo && echo data > /var/lib/foo/data \
    && echo custom > /usr/bin/tool \
    && printf '\\nPackage: mine\\nStatus: install ok installed\\nArchitecture: all\\nVersion: 9\\n' >> /var/lib/dpkg/status \
    && sync";

/// What the container sees on bb@2 after a rebase from bb@1 (or on bb@1 as it was).
fn assert_on(rig: &Rig, name: &str, base: &str) {
    assert_eq!(rig.info_json(name)["base"], base);
    let seen = inside(
        rig,
        name,
        "cat /etc/motd /var/lib/foo/data /usr/bin/tool; ls /usr/bin/newtool 2>&1; grep -c '^Package: mine' /var/lib/dpkg/status",
    );
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        lines[0], "mine",
        "{base}: the customer's /etc/motd is kept: {seen}"
    );
    assert_eq!(
        lines[1], "data",
        "{base}: the customer's data is kept: {seen}"
    );
    assert_eq!(
        lines[4], "1",
        "{base}: the customer's package is known: {seen}"
    );
    if base == "bb@2" {
        assert_eq!(
            lines[2], "v2",
            "the packaged file is the new base's: {seen}"
        );
        assert_eq!(lines[3], "/usr/bin/newtool", "{seen}");
        let osm_new = inside(rig, name, "cat /etc/motd.osm-new");
        assert_eq!(osm_new, "v2\n");
        assert!(inside(rig, name, "cat /var/lib/dpkg/status").contains("Package: newtool"));
    } else {
        assert_ne!(lines[2], "v2", "{seen}");
        assert!(lines[3].contains("No such file"), "old stack: {seen}");
    }
}

#[test]
fn a_rebase_keeps_what_the_customer_changed_and_a_dry_run_changes_nothing() {
    require_root();
    let rig = Rig::new();
    two_busybox_bases(&rig);
    rig.ctl_ok(&["create", "web1", "--base", "bb@1"]);
    rig.ctl_ok(&["start", "web1"]);
    inside(&rig, "web1", CUSTOMER);
    let upper = container_dir(&rig, "web1").join("rootfs-layer");

    // Refusals name what was wrong and change nothing.
    let e = rig.ctl_err(&["rebase", "web1", "--base", "bb@1"]);
    assert!(e.contains("already on bb@1"), "{e}");
    let e = rig.ctl_err(&["rebase", "web1", "--base", "bb@9"]);
    assert!(e.contains("bb@9") && e.contains("not found"), "{e}");
    let e = rig.ctl_err(&["rebase", "web1", "--base", "bb@2", "--layer", "nope@1"]);
    assert!(e.contains("nope@1") && e.contains("not found"), "{e}");
    let e = rig.ctl_err(&["rebase", "nosuch", "--base", "bb@2"]);
    assert!(e.contains("nosuch"), "{e}");
    let out = rig.ctl_as_nobody(&["rebase", "web1", "--base", "bb@2", "--dry-run"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("osm-admin"),
        "{out:?}"
    );

    // A rebase that fails half-way (an upper tied to its lower by a redirect) leaves the
    // container as it was, running again.
    let tied = upper.join("var/lib/foo");
    set_xattr(&tied, "trusted.overlay.redirect", Some(b"/elsewhere"));
    let e = rig.ctl_err(&["rebase", "web1", "--base", "bb@2"]);
    assert!(e.contains("trusted.overlay.redirect"), "{e}");
    set_xattr(&tied, "trusted.overlay.redirect", None);
    wait_running(&rig, "web1");
    assert_on(&rig, "web1", "bb@1");
    let stray: Vec<String> = std::fs::read_dir(container_dir(&rig, "web1").parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "web1")
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // Dry run: the conflicts and their rules, nothing touched.
    let before = snapshot_nums(&rig, "web1");
    let dry = rebase_json(&rig, &["web1", "--base", "bb@2", "--dry-run"]);
    let expected = vec![
        ("/etc/motd".to_string(), "keep-with-osm-new".to_string()),
        ("/usr/bin/tool".to_string(), "new-lower".to_string()),
        (
            "/var/lib/dpkg/status".to_string(),
            "merged-status".to_string(),
        ),
    ];
    assert_eq!(conflicts(&dry), expected, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(rig.info_json("web1")["base"], "bb@1");
    assert_eq!(rig.lxc_state("web1"), "RUNNING");
    assert_eq!(snapshot_nums(&rig, "web1"), before);
    assert!(!upper.join("etc/motd.osm-new").exists());
    assert_eq!(
        std::fs::read_to_string(upper.join("usr/bin/tool")).unwrap(),
        "custom\n"
    );
    assert_on(&rig, "web1", "bb@1");

    // The rebase: safety snapshot, the rules applied, running again.
    let done = rebase_json(&rig, &["web1", "--base", "bb@2"]);
    assert_eq!(conflicts(&done), expected, "{done}");
    let safety = done["safety_snapshot"].as_u64().expect("a safety snapshot");
    wait_running(&rig, "web1");
    assert_on(&rig, "web1", "bb@2");
    // The customer's copy the rebase removed is in the safety snapshot.
    let kept = container_dir(&rig, "web1").join(format!(
        ".snapshots/{safety}/snapshot/rootfs-layer/usr/bin/tool"
    ));
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "custom\n");
    // Unprivileged: what the rebase wrote into the upper is owned by the container's root.
    let md = std::fs::symlink_metadata(upper.join("etc/motd.osm-new")).unwrap();
    let map =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(upper.join("etc/motd")).unwrap());
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), map);
    assert!(map > 0, "web1 is unprivileged, its upper stored shifted");

    // --all: every container on bb@2 (one privileged) back to bb@1.
    rig.ctl_ok(&["create", "web2", "--base", "bb@2", "--privileged"]);
    let all = rebase_json(&rig, &["--all", "--from", "bb@2", "--to", "bb@1"]);
    let moved: Vec<&str> = all["moved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["container"].as_str().unwrap())
        .collect();
    assert_eq!(moved, ["web1", "web2"], "{all}");
    assert_eq!(rig.info_json("web2")["base"], "bb@1");
    wait_running(&rig, "web1");
    assert_on(&rig, "web1", "bb@1");
    rig.ctl_ok(&["start", "web2"]);
    let conf =
        std::fs::read_to_string(container_dir(&rig, "web2").join("lxc.container.conf")).unwrap();
    assert!(
        conf.contains("lxc.rootfs.options = index=off,metacopy=off,redirect_dir=off"),
        "{conf}"
    );
    let e = rig.ctl_err(&["rebase", "--all", "--from", "bb@7", "--to", "bb@2"]);
    assert!(e.contains("no container is on base bb@7"), "{e}");
    rig.ctl_ok(&["stop", "web1", "--force"]);
    rig.ctl_ok(&["stop", "web2", "--force"]);
}

#[test]
fn a_daemon_killed_at_any_rebase_step_leaves_the_old_stack_or_the_new() {
    require_root();
    let mut rig = Rig::new();
    two_busybox_bases(&rig);
    rig.ctl_ok(&["create", "web1", "--base", "bb@1"]);
    rig.ctl_ok(&["start", "web1"]);
    inside(&rig, "web1", CUSTOMER);
    let mut on = "bb@1";
    for step in osm_hostd::engine::RESTORE_CRASH_STEPS {
        let other = if on == "bb@1" { "bb@2" } else { "bb@1" };
        let before = snapshot_nums(&rig, "web1");
        rig.kill_daemon_at(step, &["rebase", "web1", "--base", other]);
        let finished = ["moved", "exchanged", "cleaned"].contains(&step);
        let now = rig.info_json("web1")["base"].as_str().unwrap().to_string();
        assert_eq!(
            now,
            if finished { other } else { on },
            "{step}: finished or rolled back"
        );
        let containers = container_dir(&rig, "web1").parent().unwrap().to_path_buf();
        let leftovers: Vec<String> = std::fs::read_dir(&containers)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "web1")
            .collect();
        assert!(leftovers.is_empty(), "{step}: {leftovers:?}");
        let after = snapshot_nums(&rig, "web1");
        assert!(
            before.iter().all(|n| after.contains(n)),
            "{step}: snapshots lost"
        );
        wait_running(&rig, "web1");
        // The files the container sees match the stack its container.toml names.
        assert_on(&rig, "web1", &now);
        if now == "bb@1" {
            // Back on bb@1 after a round trip: the customer's motd.osm-new of bb@2 is
            // its own file now; drop it so the next round starts alike.
            inside(&rig, "web1", "rm -f /etc/motd.osm-new");
        }
        on = if now == "bb@1" { "bb@1" } else { "bb@2" };
    }
    rig.ctl_ok(&["stop", "web1", "--force"]);
}

fn base_archive(cache: &Path, recipe: &str) -> PathBuf {
    let text = std::fs::read_to_string(project_path(recipe)).unwrap();
    let key = osm_hostd::base::Recipe::parse(&text).unwrap().cache_key();
    cache.join("bases").join(format!("{key}.tar.zst"))
}

/// A tiny Debian package of the customer's own, built here with dpkg-deb.
fn customer_deb(rig: &Rig) -> Vec<u8> {
    let root = rig.dir().join("mine-deb");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/osm-test-mine")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: osm-test-mine\nVersion: 1.0\nArchitecture: all\nMaintainer: osm-host tests <root@localhost>\nDescription: a customer's own package\n",
    )
    .unwrap();
    std::fs::write(root.join("usr/share/osm-test-mine/hello"), "hello\n").unwrap();
    let deb = rig.dir().join("mine.deb");
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::read(deb).unwrap()
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[test]
fn a_debian_customer_moves_to_a_bookworm_with_a_new_package() {
    require_root();
    let shared = Path::new(SHARED_CACHE);
    for recipe in [BASE_RECIPE, V2_RECIPE] {
        if !base_archive(shared, recipe).exists() {
            let builder = Rig::builder().host_network().start();
            let path = project_path(recipe);
            builder.ctl_ok(&["base", "build", "warm", "--recipe", path.to_str().unwrap()]);
            assert!(base_archive(shared, recipe).exists(), "{recipe} is cached");
        }
    }
    let rig = Rig::new();
    for (name, recipe) in [("bookworm@1", BASE_RECIPE), ("bookworm@2", V2_RECIPE)] {
        let path = project_path(recipe);
        rig.ctl_ok(&["base", "build", name, "--recipe", path.to_str().unwrap()]);
    }
    rig.ctl_ok(&[
        "create",
        "cust1",
        "--base",
        "bookworm@1",
        "--memory",
        "512M",
    ]);
    rig.ctl_ok(&["start", "cust1"]);
    let deb = base64(&customer_deb(&rig));
    inside(
        &rig,
        "cust1",
        &format!(
            "echo 'customer motd' > /etc/motd && mkdir -p /var/lib/foo && echo data > /var/lib/foo/data \
             && echo {deb} | base64 -d > /root/mine.deb && dpkg -i /root/mine.deb >/dev/null && sync"
        ),
    );
    assert!(inside(&rig, "cust1", "command -v tree || echo none").contains("none"));

    let dry = rebase_json(&rig, &["cust1", "--base", "bookworm@2", "--dry-run"]);
    let found = conflicts(&dry);
    println!("conflicts of the Debian customer: {found:?}");
    assert!(
        found.contains(&("/etc/motd".into(), "keep-with-osm-new".into())),
        "{dry}"
    );
    assert!(
        found.contains(&("/var/lib/dpkg/status".into(), "merged-status".into())),
        "{dry}"
    );
    assert!(
        !found.iter().any(
            |(p, _)| p.starts_with("/var/lib/foo") || p.starts_with("/usr/share/osm-test-mine")
        ),
        "the customer's own data and package are no conflict: {dry}"
    );
    assert_eq!(rig.info_json("cust1")["base"], "bookworm@1");

    let done = rebase_json(&rig, &["cust1", "--base", "bookworm@2"]);
    assert_eq!(
        conflicts(&done),
        found,
        "the run applies what the dry run listed"
    );
    assert_eq!(rig.info_json("cust1")["base"], "bookworm@2");
    wait_running(&rig, "cust1");
    let seen = inside(
        &rig,
        "cust1",
        "command -v tree; cat /etc/motd /etc/motd.osm-new /var/lib/foo/data /usr/share/osm-test-mine/hello; \
         dpkg-query -W -f '${Status}\\n' osm-test-mine tree",
    );
    assert_eq!(
        seen,
        "/usr/bin/tree\ncustomer motd\nosm-host test base, version 2\ndata\nhello\n\
         install ok installed\ninstall ok installed\n"
    );
    rig.ctl_ok(&["stop", "cust1", "--force"]);
}

/// An overlay upper as an archive: a file of its own and a whiteout over busybox's od.
fn layer_tar(rig: &Rig) -> PathBuf {
    let root = rig.dir().join("images/extra");
    std::fs::create_dir_all(root.join("opt/extra")).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("opt/extra/file"), "extra\n").unwrap();
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("mknod")
        .arg(root.join("bin/od"))
        .args(["c", "0", "0"]));
    let tar = rig.dir().join("images/extra.tar");
    ok(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .arg("."));
    tar
}

fn is_whiteout(p: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

#[test]
fn layers_move_with_their_base_and_a_layer_export_imports_again() {
    require_root();
    let rig = Rig::new();
    two_busybox_bases(&rig);
    let tar = layer_tar(&rig);
    let tar = tar.to_str().unwrap();
    rig.ctl_ok(&["layer", "import", "extra@1", tar, "--base", "bb@1"]);
    rig.ctl_ok(&["layer", "import", "extra@2", tar, "--base", "bb@2"]);

    // Export, then import the archive again: the same tree, whiteout included.
    let out = rig.dir().join("extra-export.tar.zst");
    let outs = out.to_str().unwrap();
    let said = rig.ctl_ok(&["layer", "export", "extra@1", outs]);
    assert!(
        said.contains(&format!("layer import extra@1 {outs} --base bb@1")),
        "{said}"
    );
    let e = rig.ctl_err(&["layer", "export", "extra@1", outs]);
    assert!(e.contains("cannot create"), "an existing file is kept: {e}");
    let e = rig.ctl_err(&["layer", "export", "nope@1", &format!("{outs}.2")]);
    assert!(e.contains("nope@1"), "{e}");
    assert!(
        !Path::new(&format!("{outs}.2")).exists(),
        "a refused export leaves no file"
    );
    rig.ctl_ok(&["layer", "import", "copy@1", outs, "--base", "bb@1"]);
    let layers = rig.sandbox().host_path(rig.store_root().join("lxc/layers"));
    assert_eq!(
        std::fs::read_to_string(layers.join("copy@1/opt/extra/file")).unwrap(),
        "extra\n"
    );
    assert!(is_whiteout(&layers.join("copy@1/bin/od")));

    rig.ctl_ok(&["create", "web1", "--base", "bb@1", "--layer", "extra@1"]);
    rig.ctl_ok(&["start", "web1"]);
    inside(&rig, "web1", CUSTOMER);
    let e = rig.ctl_err(&["rebase", "web1", "--base", "bb@2"]);
    assert!(e.contains("--layer"), "{e}");
    let e = rig.ctl_err(&["rebase", "web1", "--base", "bb@2", "--layer", "extra@1"]);
    assert!(e.contains("built over base \"bb@1\""), "{e}");
    assert_eq!(rig.info_json("web1")["base"], "bb@1");

    let done = rebase_json(&rig, &["web1", "--base", "bb@2", "--layer", "extra@2"]);
    assert_eq!(
        done["to"]["layers"],
        serde_json::json!(["extra@2"]),
        "{done}"
    );
    wait_running(&rig, "web1");
    assert_eq!(
        rig.info_json("web1")["layers"],
        serde_json::json!(["extra@2"])
    );
    assert_on(&rig, "web1", "bb@2");
    let seen = inside(&rig, "web1", "cat /opt/extra/file; ls /bin/od 2>&1 || true");
    assert!(
        seen.starts_with("extra\n") && seen.contains("No such file"),
        "{seen}"
    );

    // --all picks each layer's version built over the target base.
    let all = rebase_json(&rig, &["--all", "--from", "bb@2", "--to", "bb@1"]);
    assert_eq!(
        all["moved"][0]["to"]["layers"],
        serde_json::json!(["extra@1"]),
        "{all}"
    );
    wait_running(&rig, "web1");
    assert_eq!(
        rig.info_json("web1")["layers"],
        serde_json::json!(["extra@1"])
    );
    rig.ctl_ok(&["stop", "web1", "--force"]);
}

#[test]
fn rebase_all_stops_at_the_first_failure_and_says_who_moved() {
    require_root();
    let rig = Rig::new();
    two_busybox_bases(&rig);
    for n in ["a1", "a2", "a3"] {
        rig.ctl_ok(&["create", n, "--base", "bb@1"]);
    }
    rig.ctl_ok(&["start", "a2"]);
    // a2's upper is tied to its lower (a redirect): its rebase fails half-way. (The
    // directory is made through the overlay: one made behind a mounted overlay's back
    // may be replaced by its next copy-up.)
    inside(&rig, "a2", "mkdir -p /var/lib/tied && sync");
    let tied = container_dir(&rig, "a2").join("rootfs-layer/var/lib/tied");
    set_xattr(&tied, "trusted.overlay.redirect", Some(b"/elsewhere"));
    let out = rig.ctl(&[
        "rebase", "--all", "--from", "bb@1", "--to", "bb@2", "--json",
    ]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("a2 did not move") && stderr.contains("moved before it: a1"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report, as JSON");
    assert_eq!(report["moved"][0]["container"], "a1", "{report}");
    assert_eq!(report["moved"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["failed"]["container"], "a2", "{report}");
    assert_eq!(report["not_moved"], serde_json::json!(["a3"]), "{report}");
    assert_eq!(rig.info_json("a1")["base"], "bb@2");
    assert_eq!(rig.info_json("a2")["base"], "bb@1");
    assert_eq!(rig.info_json("a3")["base"], "bb@1");
    wait_running(&rig, "a2");
    set_xattr(&tied, "trusted.overlay.redirect", None);
    // The safety snapshot brings a moved container back to where it was.
    let safety = report["moved"][0]["safety_snapshot"]
        .as_u64()
        .unwrap()
        .to_string();
    rig.ctl_ok(&["snapshot", "restore", "a1", &safety]);
    assert_eq!(rig.info_json("a1")["base"], "bb@1");
    rig.ctl_ok(&["stop", "a2", "--force"]);
}

/// The `list` row of container `name`.
fn list_row(rig: &Rig, name: &str) -> String {
    let list = rig.ctl_ok(&["list"]);
    list.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in {list}"))
        .to_string()
}

const NEWER_NOTE: &str =
    "* a newer version exists; see osm-hostctl info NAME and osm-hostctl rebase";

#[test]
fn list_and_info_show_newer_versions_until_a_rebase_and_layer_prune_keeps_what_is_used() {
    require_root();
    let rig = Rig::new();
    let one = busybox_variant(&rig, "bb1", &[("etc/motd", "v1\n")]);
    let two = busybox_variant(&rig, "bb2", &[("etc/motd", "v2\n")]);
    let tar = layer_tar(&rig);
    let tar = tar.to_str().unwrap();
    rig.ctl_ok(&["base", "import", "bb@1", one.to_str().unwrap()]);
    rig.ctl_ok(&["layer", "import", "extra@a", tar, "--base", "bb@1"]);
    for n in ["web1", "web2"] {
        rig.ctl_ok(&["create", n, "--base", "bb@1", "--layer", "extra@a"]);
    }
    let list = rig.ctl_ok(&["list"]);
    assert!(!list.contains('*'), "nothing newer yet: {list}");
    assert_eq!(
        rig.info_json("web1")["newer_layers"],
        serde_json::json!([""])
    );

    // A second version of the layer over the same base: both are marked, info names it.
    rig.ctl_ok(&["layer", "import", "extra@b", tar, "--base", "bb@1"]);
    assert!(list_row(&rig, "web1").contains(" bb@1* "));
    assert!(list_row(&rig, "web2").contains(" bb@1* "));
    let list = rig.ctl_ok(&["list"]);
    assert!(list.trim_end().ends_with(NEWER_NOTE), "{list}");
    let info = rig.ctl_ok(&["info", "web1"]);
    assert!(info.contains("extra@a (newer: extra@b)"), "{info}");
    let json = rig.info_json("web1");
    assert_eq!(json["newer_layers"], serde_json::json!(["extra@b"]));
    assert_eq!(json["newer_base"], "");
    let listed: Value = serde_json::from_str(&rig.ctl_ok(&["list", "--json"])).unwrap();
    let web2 = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web2")
        .unwrap();
    assert_eq!(web2["newer_layers"], serde_json::json!(["extra@b"]));

    // Rebased onto it, web1 is current; web2 is still marked.
    rebase_json(&rig, &["web1", "--base", "bb@1", "--layer", "extra@b"]);
    assert!(list_row(&rig, "web1").contains(" bb@1 "));
    assert!(list_row(&rig, "web2").contains(" bb@1* "));
    let info = rig.ctl_ok(&["info", "web1"]);
    assert!(!info.contains("newer"), "{info}");

    // A new base, with the layer built over it: the base is what is newer now.
    rig.ctl_ok(&["base", "import", "bb@2", two.to_str().unwrap()]);
    rig.ctl_ok(&["layer", "import", "extra@c", tar, "--base", "bb@2"]);
    assert!(list_row(&rig, "web1").contains(" bb@1* "));
    let info = rig.ctl_ok(&["info", "web1"]);
    assert!(info.contains("bb@1 (newer: bb@2)"), "{info}");
    assert!(
        !info.contains("(newer: extra"),
        "extra@c is over another base: {info}"
    );
    rebase_json(&rig, &["web1", "--base", "bb@2", "--layer", "extra@c"]);
    assert!(list_row(&rig, "web1").contains(" bb@2 "));
    assert!(list_row(&rig, "web2").contains(" bb@1* "));
    assert_eq!(
        rig.info_json("web1")["newer_layers"],
        serde_json::json!([""])
    );

    // Prune: extra@b is unused and not the newest; extra@a is old but web2 uses it.
    let e = rig.ctl_err(&["layer", "prune", "extra@a"]);
    assert!(e.contains("without a version"), "{e}");
    let e = rig.ctl_err(&["layer", "prune", "nope"]);
    assert!(e.contains("no versions of layer nope"), "{e}");
    let out = rig.ctl_ok(&["layer", "prune"]);
    assert_eq!(out.trim(), "deleted layer extra@b");
    let layers = rig.sandbox().host_path(rig.store_root().join("lxc/layers"));
    assert!(!layers.join("extra@b").exists());
    let listed: Value = serde_json::from_str(&rig.ctl_ok(&["layer", "list", "--json"])).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["extra@a", "extra@c"]);
    let out = rig.ctl_ok(&["layer", "prune", "extra"]);
    assert_eq!(out.trim(), "no unused older versions of layer extra");
    // web2 still starts on what it pinned.
    rig.ctl_ok(&["start", "web2"]);
    wait_running(&rig, "web2");
    assert_eq!(
        inside(&rig, "web2", "cat /opt/extra/file /etc/motd"),
        "extra\nv1\n"
    );
    rig.ctl_ok(&["stop", "web2", "--force"]);
}
