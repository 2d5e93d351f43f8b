//! Root integration tests for base images: archives keep everything a root filesystem
//! needs through validate + extract (device nodes, FIFOs, hard links, `trusted.*` and
//! `security.capability` xattrs, numeric owners, set-id modes), the build cache is used,
//! and a failed debootstrap leaves no cache file.
//!
//! Run as root: `cargo test --test base_archive`. Without root every test fails.
//! The bookworm build test downloads from Debian's mirror on its first run only (about
//! 1-2 min): it fills the shared test cache `/var/cache/osm-host-tests/bases`, which
//! later runs and the other suites reuse.

use osm_hostd::base::{build_rootfs, extract_archive, validate_archive, BaseError, Recipe};
use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const TEST_CACHE: &str = "/var/cache/osm-host-tests/bases";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/base_archive.rs needs root (device nodes, trusted.* xattrs, chown to uid 1234, \
         debootstrap); run it as root: cargo test --test base_archive"
    );
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let (path, name) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: both strings are NUL-terminated and outlive the call; value is a valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name:?} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let (path, name) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated; buf is writable for buf.len() bytes.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// `security.capability` v2 with cap_net_bind_service (bit 10) permitted + effective.
fn cap_net_bind_service() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // VFS_CAP_REVISION_2 | effective
    v.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted, high word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, high word
    v
}

/// A tree with the awkward members of real root filesystems and overlay upper dirs.
fn make_tree(root: &Path) {
    use nix::sys::stat::{mknod, Mode, SFlag};
    std::fs::create_dir(root.join("d")).unwrap();
    set_xattr(&root.join("d"), "trusted.overlay.opaque", b"y");
    // An overlay whiteout: a character device 0:0 with mode 0.
    mknod(&root.join("d/whiteout"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    std::fs::write(root.join("a"), "hard linked").unwrap();
    std::fs::hard_link(root.join("a"), root.join("b")).unwrap();
    std::fs::write(root.join("suid"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(root.join("suid"), Some(1234), Some(1234)).unwrap();
    std::fs::set_permissions(root.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(root.join("cap"), "binary").unwrap();
    set_xattr(
        &root.join("cap"),
        "security.capability",
        &cap_net_bind_service(),
    );
    std::os::unix::fs::symlink("/usr/lib", root.join("abs")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/doc/x")).unwrap();
    std::os::unix::fs::symlink("../../../../etc", root.join("usr/share/doc/x/etc")).unwrap();
}

fn gnu_tar(src: &Path, archive: &Path, compression: Option<&str>) {
    let mut cmd = Command::new("/bin/tar");
    cmd.args([
        "--create",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
    ]);
    if let Some(c) = compression {
        cmd.arg(c);
    }
    cmd.arg("-C").arg(src).arg("-f").arg(archive).arg(".");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_tree(root: &Path) {
    let md =
        |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(
        get_xattr(&root.join("d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    let w = md("d/whiteout");
    assert!(
        w.file_type().is_char_device(),
        "d/whiteout is not a char device"
    );
    assert_eq!(w.rdev(), 0);
    assert!(md("fifo").file_type().is_fifo(), "fifo is not a FIFO");
    assert_eq!(md("fifo").mode() & 0o7777, 0o640);
    let (a, b) = (md("a"), md("b"));
    assert_eq!(a.ino(), b.ino(), "a and b are no longer hard linked");
    assert_eq!(a.nlink(), 2);
    let s = md("suid");
    assert_eq!((s.uid(), s.gid()), (1234, 1234));
    assert_eq!(s.mode() & 0o7777, 0o4755);
    assert_eq!(
        get_xattr(&root.join("cap"), "security.capability"),
        Some(cap_net_bind_service())
    );
    assert_eq!(
        std::fs::read_link(root.join("abs")).unwrap(),
        Path::new("/usr/lib")
    );
    assert_eq!(
        std::fs::read_link(root.join("usr/share/doc/x/etc")).unwrap(),
        Path::new("../../../../etc")
    );
}

#[test]
fn archives_keep_devices_links_xattrs_owners_and_modes() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_tree(&src);
    check_tree(&src); // the fixture itself is what we think it is

    for (compression, name) in [
        (None, "t.tar"),
        (Some("--gzip"), "t.tar.gz"),
        (Some("--zstd"), "t.tar.zst"),
    ] {
        let archive = tmp.path().join(name);
        gnu_tar(&src, &archive, compression);
        let mut file = File::open(&archive).unwrap();
        validate_archive(&mut file).unwrap_or_else(|e| panic!("{name}: {e}"));
        let dest = tmp.path().join(format!("dest-{name}"));
        std::fs::create_dir(&dest).unwrap();
        let mut fractions = Vec::new();
        // The file offset is wherever validation left it; extraction must rewind.
        extract_archive(&mut file, &dest, &mut |f| fractions.push(f))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        check_tree(&dest);
        assert!(
            fractions.windows(2).all(|w| w[0] <= w[1]),
            "{name}: progress went back: {fractions:?}"
        );
        assert_eq!(fractions.last().copied(), Some(1.0), "{name}");
    }
}

#[test]
fn extraction_failure_reports_tar_stderr() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let archive = tmp.path().join("t.tar");
    gnu_tar(&src, &archive, None);
    let err = extract_archive(
        &mut File::open(&archive).unwrap(),
        &tmp.path().join("missing"),
        &mut |_| {},
    )
    .unwrap_err();
    eprintln!("{err}");
    match &err {
        BaseError::Command { output, .. } => assert!(output.contains("missing"), "{err}"),
        other => panic!("expected a tar Command error, got {other:?}"),
    }
}

#[test]
fn build_uses_the_cache_archive_when_present() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    // A recipe nobody builds for real: its cache entry is a hand-made tree.
    let recipe =
        Recipe::parse("suite = \"bookworm\"\ninclude = [\"osm-host-cache-test\"]").unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_tree(&src);
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    gnu_tar(
        &src,
        &cache.join(format!("{}.tar.zst", recipe.cache_key())),
        Some("--zstd"),
    );

    let dest = tmp.path().join("rootfs");
    let mut last = (0.0, String::new());
    let started = Instant::now();
    build_rootfs(&recipe, &dest, &cache, &mut |f, m| {
        assert!(f >= last.0, "progress went back from {} to {f}", last.0);
        last = (f, m.to_string());
    })
    .unwrap();
    assert!(
        started.elapsed().as_secs() < 30,
        "a cache hit must not run debootstrap"
    );
    check_tree(&dest);
    assert_eq!(last.0, 1.0);

    // A non-empty destination is refused before anything is written.
    let err = build_rootfs(&recipe, &dest, &cache, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[test]
fn failed_debootstrap_leaves_no_cache_file() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    // Nothing listens on the discard port of loopback: debootstrap fails at once.
    let recipe =
        Recipe::parse("suite = \"bookworm\"\nmirror = \"http://127.0.0.1:9/debian\"").unwrap();
    let cache = tmp.path().join("cache");
    let dest = tmp.path().join("rootfs");
    let err = build_rootfs(&recipe, &dest, &cache, &mut |_, _| {}).unwrap_err();
    eprintln!("{err}");
    match &err {
        BaseError::Debootstrap { log, output, .. } => {
            assert!(log.contains("debootstrap/debootstrap.log"), "{err}");
            assert!(!output.is_empty(), "{err}");
        }
        other => panic!("expected a Debootstrap error, got {other:?}"),
    }
    let leftovers: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "cache files left behind: {leftovers:?}"
    );
}

/// The shipped bookworm recipe builds (or comes from the shared test cache) into a tree
/// that has systemd, networkd enabled and no build-host leftovers.
#[test]
fn bookworm_recipe_builds_a_systemd_tree() {
    require_root();
    let text =
        std::fs::read_to_string(rig::project_path("base-images/debian-bookworm.toml")).unwrap();
    let recipe = Recipe::parse(&text).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for round in ["first", "second (cache)"] {
        let dest = tmp.path().join(format!("rootfs-{}", round.len()));
        let started = Instant::now();
        let mut last = 0.0;
        build_rootfs(&recipe, &dest, Path::new(TEST_CACHE), &mut |f, m| {
            assert!(f >= last, "progress went back from {last} to {f} at {m:?}");
            last = f;
        })
        .unwrap_or_else(|e| panic!("{round} build: {e}"));
        eprintln!("{round} build: {:.1} s", started.elapsed().as_secs_f64());
        assert_eq!(last, 1.0);
        assert!(dest.join("usr/lib/systemd/systemd").is_file());
        let wants =
            dest.join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service");
        assert!(std::fs::symlink_metadata(&wants)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(
            std::fs::symlink_metadata(dest.join("etc/hostname")).is_err(),
            "etc/hostname is present"
        );
        assert!(std::fs::symlink_metadata(dest.join("var/lib/dbus/machine-id")).is_err());
        assert_eq!(std::fs::read(dest.join("etc/machine-id")).unwrap(), b"");
        let network =
            std::fs::read_to_string(dest.join("etc/systemd/network/eth0.network")).unwrap();
        assert!(network.contains("Name=eth0") && network.contains("DHCP=ipv4"));
        assert_eq!(
            std::fs::read_dir(dest.join("var/lib/apt/lists"))
                .unwrap()
                .count(),
            0
        );
        let root = std::fs::metadata(&dest).unwrap();
        assert_eq!((root.uid(), root.mode() & 0o7777), (0, 0o755));
    }
    let cached = Path::new(TEST_CACHE).join(format!("{}.tar.zst", recipe.cache_key()));
    eprintln!(
        "cache: {} ({} bytes)",
        cached.display(),
        std::fs::metadata(&cached).unwrap().len()
    );
    // A real Debian tree (absolute symlinks such as /dev/fd -> /proc/self/fd) passes the
    // import checks, so a tarball exported from a base can be imported again.
    validate_archive(&mut File::open(&cached).unwrap()).unwrap();
}

/// Unmounts (lazily) on drop, so a failing test leaves no mount behind.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The store is mounted `nosuid,nodev`; debootstrap refuses such a target ("mounted with
/// noexec or nodev") unless the build gets a view of it without those flags. A real
/// debootstrap (minbase, no cache) into a `nodev` tmpfs must succeed, and the mount the
/// host sees must keep its flags.
#[test]
fn a_base_builds_on_a_nodev_nosuid_filesystem_like_the_store() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("store");
    std::fs::create_dir(&mnt).unwrap();
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "nosuid,nodev,size=2g",
            "osm-test-store",
        ])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    let _unmount = Unmount(mnt.clone());
    let recipe = Recipe::parse("suite = \"bookworm\"\nvariant = \"minbase\"\n").unwrap();
    // A cache of its own, so debootstrap really runs.
    let cache = tmp.path().join("cache");
    let dest = mnt.join("os-bases/.building-minimal");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    build_rootfs(&recipe, &dest, &cache, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("build on a nodev filesystem: {e}"));
    assert!(dest.join("usr/bin/apt-get").is_file());
    assert!(
        std::fs::metadata(dest.join("dev/null"))
            .unwrap()
            .file_type()
            .is_char_device(),
        "debootstrap made its device nodes"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some(mnt.to_str().unwrap()))
        .expect("the test mount in mountinfo");
    let options = line.split_whitespace().nth(5).unwrap();
    assert!(
        options.contains("nosuid") && options.contains("nodev"),
        "the host's view keeps its flags: {line}"
    );
    assert_eq!(
        mountinfo.matches(dest.to_str().unwrap()).count(),
        0,
        "no mount of the build is left in the host's namespace"
    );
}
