//! Root integration tests of `osm_hostd::btrfs` and `osm_hostd::store` on real,
//! loop-mounted Btrfs images.
//!
//! Each test unshares a private mount namespace on its own thread (mount namespaces are
//! per thread; `mount`/`mkfs` children inherit it) and makes `/` rprivate, so nothing it
//! mounts is visible outside, and everything vanishes with the thread even on panic. The
//! [`Rig`] also unmounts in `Drop`; loop devices detach on unmount (autoclear).
//! Set `OSM_TEST_KEEP=1` to keep the temporary directory (images) for debugging.
//! Without root these tests fail; they never pass by skipping.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use osm_hostd::btrfs;
use osm_hostd::config::HostConfig;
use osm_hostd::store::{read_mountinfo, Store, StoreError};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE_SIZE: u64 = 4 << 30;

struct Rig {
    dir: Option<tempfile::TempDir>,
    mounts: Vec<PathBuf>,
}

impl Rig {
    fn new() -> Rig {
        assert!(
            nix::unistd::geteuid().is_root(),
            "tests/btrfs_store.rs must run as root: it mounts loop-backed Btrfs images in a \
             private mount namespace (run `cargo test --test btrfs_store` as root)"
        );
        unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / rprivate");
        let dir = tempfile::Builder::new()
            .prefix("osm-btrfs-test.")
            .tempdir_in("/tmp")
            .expect("create a tempdir under /tmp");
        Rig {
            dir: Some(dir),
            mounts: Vec::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.as_ref().unwrap().path().join(rel)
    }

    /// Unmounted in reverse order on drop; registering before mounting covers a panic
    /// half-way through.
    fn track_mount(&mut self, path: &Path) {
        self.mounts.push(path.to_path_buf());
    }

    /// A fresh 4 GiB sparse Btrfs image at `<tmp>/<name>.img`.
    fn make_image(&self, name: &str) -> PathBuf {
        let image = self.path(&format!("{name}.img"));
        std::fs::File::create(&image)
            .unwrap()
            .set_len(IMAGE_SIZE)
            .unwrap();
        run(Command::new("mkfs.btrfs").arg("-q").arg(&image));
        image
    }

    /// A fresh 4 GiB sparse Btrfs image loop-mounted at `<tmp>/<name>`.
    fn mount_btrfs(&mut self, name: &str) -> PathBuf {
        let image = self.make_image(name);
        let mnt = self.path(name);
        std::fs::create_dir(&mnt).unwrap();
        self.track_mount(&mnt);
        run(Command::new("mount")
            .args(["-t", "btrfs", "-o", "loop"])
            .arg(&image)
            .arg(&mnt));
        mnt
    }

    /// A tmpfs at `<tmp>/<name>`: a filesystem that is certainly not Btrfs.
    fn mount_tmpfs(&mut self, name: &str) -> PathBuf {
        let mnt = self.path(name);
        std::fs::create_dir(&mnt).unwrap();
        self.track_mount(&mnt);
        mount(
            Some("tmpfs"),
            &mnt,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=16m"),
        )
        .unwrap();
        mnt
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            // Not mounted (EINVAL) or already gone (ENOENT) is fine; busy falls back to lazy.
            if let Err(nix::errno::Errno::EBUSY) = umount2(m, MntFlags::empty()) {
                let _ = umount2(m, MntFlags::MNT_DETACH);
            }
        }
        if let Some(dir) = self.dir.take() {
            if std::env::var_os("OSM_TEST_KEEP").is_some() {
                eprintln!("OSM_TEST_KEEP: keeping {}", dir.keep().display());
            }
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Subvolumes Btrfs itself knows of, as `btrfs subvolume list` prints them.
fn btrfs_list(mnt: &Path) -> Vec<String> {
    run(Command::new("btrfs").args(["subvolume", "list"]).arg(mnt))
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn subvolumes_snapshots_and_readonly_flags() {
    let mut rig = Rig::new();
    let mnt = rig.mount_btrfs("fs");
    assert!(btrfs::is_btrfs(&mnt).unwrap());
    assert!(
        btrfs::is_subvolume(&mnt).unwrap(),
        "the top level is a subvolume"
    );

    let a = mnt.join("a");
    btrfs::create_subvolume(&a).unwrap();
    assert!(btrfs::is_subvolume(&a).unwrap());
    assert!(!btrfs::is_readonly(&a).unwrap());
    write(&a.join("f"), "hello");
    std::fs::create_dir(mnt.join("plain")).unwrap();
    assert!(!btrfs::is_subvolume(&mnt.join("plain")).unwrap());
    assert!(!btrfs::is_subvolume(&a.join("f")).unwrap());

    let e = btrfs::create_subvolume(&a).unwrap_err();
    assert_eq!(e.source.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
    assert!(e.to_string().contains(&*a.to_string_lossy()), "{e}");

    let ro = mnt.join("a-ro");
    btrfs::snapshot(&a, &ro, true).unwrap();
    assert!(btrfs::is_subvolume(&ro).unwrap());
    assert!(btrfs::is_readonly(&ro).unwrap());
    assert_eq!(std::fs::read_to_string(ro.join("f")).unwrap(), "hello");
    let e = std::fs::write(ro.join("g"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));

    let rw = mnt.join("a-rw");
    btrfs::snapshot(&a, &rw, false).unwrap();
    assert!(!btrfs::is_readonly(&rw).unwrap());
    write(&rw.join("g"), "x");
    assert!(
        !a.join("g").exists(),
        "a snapshot is independent of its source"
    );

    btrfs::set_readonly(&rw, true).unwrap();
    btrfs::set_readonly(&rw, true).unwrap();
    assert!(btrfs::is_readonly(&rw).unwrap());
    btrfs::set_readonly(&rw, false).unwrap();
    assert!(!btrfs::is_readonly(&rw).unwrap());
    write(&rw.join("h"), "y");

    let e = btrfs::snapshot(&mnt.join("plain"), &mnt.join("p2"), false).unwrap_err();
    assert!(e.to_string().contains("not a Btrfs subvolume"), "{e}");
    assert!(btrfs::set_readonly(&mnt.join("plain"), true).is_err());

    let tmpfs = rig.mount_tmpfs("tmpfs");
    assert!(!btrfs::is_btrfs(&tmpfs).unwrap());
    assert!(!btrfs::is_subvolume(&tmpfs).unwrap());
    assert!(btrfs::create_subvolume(&tmpfs.join("x")).is_err());
}

#[test]
fn recursive_delete_removes_nested_readonly_snapshots() {
    let mut rig = Rig::new();
    let mnt = rig.mount_btrfs("fs");
    let containers = mnt.join("containers");
    std::fs::create_dir(&containers).unwrap();

    // A container in the on-disk layout: snapper-style `.snapshots` with two read-only
    // snapshots of the container itself.
    let c = containers.join("c1");
    btrfs::create_subvolume(&c).unwrap();
    std::fs::create_dir_all(c.join("rootfs-layer/etc")).unwrap();
    write(&c.join("rootfs-layer/etc/hostname"), "c1\n");
    write(&c.join("container.toml"), "name = \"c1\"\n");
    let snaps = c.join(".snapshots");
    btrfs::create_subvolume(&snaps).unwrap();
    for n in ["1", "2"] {
        std::fs::create_dir(snaps.join(n)).unwrap();
        write(&snaps.join(n).join("info.xml"), "<snapshot/>");
        btrfs::snapshot(&c, &snaps.join(n).join("snapshot"), true).unwrap();
        assert!(btrfs::is_readonly(&snaps.join(n).join("snapshot")).unwrap());
    }
    // A snapshot shows a nested subvolume as an empty directory, not a subvolume.
    assert!(!btrfs::is_subvolume(&snaps.join("2/snapshot/.snapshots")).unwrap());

    assert_eq!(btrfs::nested_subvolumes(&c).unwrap(), vec![snaps.clone()]);
    let mut below = btrfs::nested_subvolumes(&snaps).unwrap();
    below.sort();
    assert_eq!(
        below,
        vec![snaps.join("1/snapshot"), snaps.join("2/snapshot")]
    );
    assert_eq!(btrfs_list(&mnt).len(), 4);

    btrfs::delete_subvolume_recursive(&c).unwrap();
    assert!(!c.exists(), "{} is still there", c.display());
    assert!(containers.is_dir(), "the parent directory stays");
    assert_eq!(btrfs_list(&mnt), Vec::<String>::new());
    assert_eq!(
        btrfs::nested_subvolumes(&mnt).unwrap(),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn recursive_delete_clears_readonly_parents_and_pages_through_many_children() {
    let mut rig = Rig::new();
    let mnt = rig.mount_btrfs("fs");

    // A read-only base that (unusually) holds nested subvolumes two levels deep.
    let base = mnt.join("base");
    btrfs::create_subvolume(&base).unwrap();
    btrfs::create_subvolume(&base.join("inner")).unwrap();
    btrfs::create_subvolume(&base.join("inner/deeper")).unwrap();
    btrfs::set_readonly(&base.join("inner"), true).unwrap();
    btrfs::set_readonly(&base, true).unwrap();
    btrfs::delete_subvolume_recursive(&base).unwrap();
    assert!(!base.exists());

    // A plain read-only subvolume without children is deleted as it is.
    let ro = mnt.join("ro");
    btrfs::create_subvolume(&ro).unwrap();
    btrfs::set_readonly(&ro, true).unwrap();
    btrfs::delete_subvolume_recursive(&ro).unwrap();
    assert!(!ro.exists());

    // More children than one GET_SUBVOL_ROOTREF call returns (255).
    let many = mnt.join("many");
    btrfs::create_subvolume(&many).unwrap();
    std::fs::create_dir(many.join("d")).unwrap();
    for i in 0..300 {
        btrfs::create_subvolume(&many.join(format!("d/s{i}"))).unwrap();
    }
    assert_eq!(btrfs::nested_subvolumes(&many).unwrap().len(), 300);
    btrfs::delete_subvolume_recursive(&many).unwrap();
    assert!(!many.exists());
    assert_eq!(btrfs_list(&mnt), Vec::<String>::new());
}

#[test]
fn recursive_delete_refuses_plain_directories_symlinks_and_covered_trees() {
    let mut rig = Rig::new();
    let mnt = rig.mount_btrfs("fs");
    let plain = mnt.join("plain");
    std::fs::create_dir(&plain).unwrap();
    write(&plain.join("keep"), "me");
    let e = btrfs::delete_subvolume_recursive(&plain).unwrap_err();
    assert!(e.to_string().contains("not a Btrfs subvolume"), "{e}");
    assert_eq!(std::fs::read_to_string(plain.join("keep")).unwrap(), "me");

    let tmpfs = rig.mount_tmpfs("tmpfs");
    std::fs::create_dir(tmpfs.join("d")).unwrap();
    assert!(btrfs::delete_subvolume_recursive(&tmpfs.join("d")).is_err());
    assert!(tmpfs.join("d").is_dir());
    assert!(btrfs::delete_subvolume_recursive(&mnt.join("missing")).is_err());

    // A symlink to a subvolume is not followed.
    let sub = mnt.join("sub");
    btrfs::create_subvolume(&sub).unwrap();
    std::os::unix::fs::symlink(&sub, mnt.join("link")).unwrap();
    assert!(btrfs::delete_subvolume_recursive(&mnt.join("link")).is_err());
    assert!(btrfs::is_subvolume(&sub).unwrap());

    // Nor is a mount covering part of the tree crossed: nothing is deleted.
    let c = mnt.join("c");
    btrfs::create_subvolume(&c).unwrap();
    std::fs::create_dir(c.join("d")).unwrap();
    btrfs::create_subvolume(&c.join("d/nested")).unwrap();
    let cover = c.join("d");
    rig.track_mount(&cover);
    mount(
        Some("tmpfs"),
        &cover,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let e = btrfs::delete_subvolume_recursive(&c).unwrap_err();
    assert_eq!(e.source.raw_os_error(), Some(libc::EXDEV), "{e}");
    umount2(&cover, MntFlags::empty()).unwrap();
    assert!(btrfs::is_subvolume(&c.join("d/nested")).unwrap());
    btrfs::delete_subvolume_recursive(&c).unwrap();
    assert!(!c.exists());
}

fn mounts_at(path: &Path) -> Vec<osm_hostd::store::MountEntry> {
    read_mountinfo()
        .unwrap()
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect()
}

/// `/sys/block/loopN` directories whose backing file is `image`.
fn loop_devices_of(image: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(b) = std::fs::read_to_string(backing) {
            if Path::new(b.trim_end()) == image {
                found.push(entry.path());
            }
        }
    }
    found
}

/// The layout, closed to other users where customers' files are (issue 9), on a mount
/// that is nosuid,nodev.
fn assert_layout(store: &Store) {
    for (d, mode) in [
        (store.root().to_path_buf(), 0o700),
        (store.lxc_dir(), 0o700),
        (store.bases_dir(), 0o755),
        (store.layers_dir(), 0o755),
        (store.include_dir(), 0o755),
        (store.containers_dir(), 0o700),
    ] {
        let meta = std::fs::metadata(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        assert!(meta.is_dir(), "{}", d.display());
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{}", d.display());
        if d == store.root() {
            continue;
        }
        assert!(
            !btrfs::is_subvolume(&d).unwrap(),
            "{} is a plain directory",
            d.display()
        );
    }
    // The mount holding the store (its own, or one around it) is nosuid,nodev.
    let mounts = read_mountinfo().unwrap();
    let holder = mounts
        .iter()
        .filter(|m| store.root().starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
        .unwrap();
    let opts = &holder.options;
    assert!(
        opts.split(',').any(|o| o == "nosuid") && opts.split(',').any(|o| o == "nodev"),
        "{opts}"
    );
}

#[test]
fn store_creates_mounts_and_reopens_a_loop_image() {
    let mut rig = Rig::new();
    let root = rig.path("srv/osm-lxc");
    let image = rig.path("var/lib/osm-host/store.img");
    rig.track_mount(&root);
    let cfg = HostConfig {
        store_root: root.clone(),
        loop_image: Some(image.clone()),
        loop_size: 4 << 30,
        ..HostConfig::default()
    };

    let store = Store::open_or_create(&cfg).unwrap();
    assert_eq!(store.root(), root);
    let meta = std::fs::metadata(&image).unwrap();
    assert_eq!(meta.len(), IMAGE_SIZE);
    assert!(meta.blocks() * 512 < IMAGE_SIZE / 4, "the image is sparse");
    assert!(!rig.path("var/lib/osm-host/store.img.partial").exists());
    let mounts = mounts_at(&root);
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].fstype, "btrfs");
    assert!(mounts[0].source.starts_with("/dev/loop"), "{mounts:?}");
    let devices = loop_devices_of(&image);
    assert_eq!(devices.len(), 1, "{devices:?}");
    let autoclear = std::fs::read_to_string(devices[0].join("loop/autoclear")).unwrap();
    assert_eq!(autoclear.trim(), "1", "the loop device detaches on unmount");
    assert_layout(&store);
    let (total, available) = store.space().unwrap();
    assert!(total > 3 << 30 && total <= IMAGE_SIZE, "total {total}");
    assert!(available > 0 && available <= total, "available {available}");

    // Again: nothing new is mounted or attached.
    write(&store.include_dir().join("common.conf"), "# marker\n");
    let again = Store::open_or_create(&cfg).unwrap();
    assert_layout(&again);
    assert_eq!(mounts_at(&root).len(), 1);
    assert_eq!(loop_devices_of(&image).len(), 1);

    // After an unmount (a reboot) the existing image is mounted again, not reformatted.
    umount2(&root, MntFlags::empty()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !loop_devices_of(&image).is_empty() {
        assert!(
            Instant::now() < deadline,
            "loop device not detached after unmount"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let reopened = Store::open_or_create(&cfg).unwrap();
    assert_eq!(
        std::fs::read_to_string(reopened.include_dir().join("common.conf")).unwrap(),
        "# marker\n"
    );
    assert_eq!(mounts_at(&root).len(), 1);
}

#[test]
fn store_uses_an_existing_btrfs_root_and_creates_a_missing_one_as_subvolume() {
    let mut rig = Rig::new();
    let mnt = rig.mount_btrfs("fs");
    let cfg = HostConfig {
        store_root: mnt.clone(),
        ..HostConfig::default()
    };
    let store = Store::open_or_create(&cfg).unwrap();
    assert_layout(&store);
    Store::open_or_create(&cfg).unwrap();
    assert_eq!(mounts_at(&mnt).len(), 1);

    // A store inside a larger mount (here a second filesystem, the first one is
    // nosuid,nodev now) is bind-mounted onto itself, nosuid,nodev; the mount around it
    // is left as it was.
    let mnt2 = rig.mount_btrfs("fs2");
    let nested = HostConfig {
        store_root: mnt2.join("srv/osm-lxc"),
        ..HostConfig::default()
    };
    rig.track_mount(&nested.store_root);
    let store = Store::open_or_create(&nested).unwrap();
    assert!(btrfs::is_subvolume(store.root()).unwrap());
    assert_layout(&store);
    Store::open_or_create(&nested).unwrap();
    assert_eq!(
        mounts_at(&nested.store_root).len(),
        1,
        "no second bind mount"
    );

    // An existing image holds the store: it is mounted even where store_root is an empty
    // directory on Btrfs (a mount point on a Btrfs root filesystem after a reboot).
    let image = rig.make_image("prepared");
    let root = mnt.join("mountpoint");
    std::fs::create_dir(&root).unwrap();
    rig.track_mount(&root);
    let with_image = HostConfig {
        store_root: root.clone(),
        loop_image: Some(image.clone()),
        ..HostConfig::default()
    };
    let store = Store::open_or_create(&with_image).unwrap();
    let mounts = mounts_at(&root);
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert!(mounts[0].source.starts_with("/dev/loop"), "{mounts:?}");
    assert_layout(&store);
    Store::open_or_create(&with_image).unwrap();
    assert_eq!(mounts_at(&root).len(), 1);
    assert_eq!(loop_devices_of(&image).len(), 1);
}

#[test]
fn store_refuses_a_non_btrfs_directory() {
    let mut rig = Rig::new();
    let tmpfs = rig.mount_tmpfs("ext");
    let root = tmpfs.join("osm-lxc");
    std::fs::create_dir(&root).unwrap();
    write(&root.join("precious"), "data");

    let cfg = HostConfig {
        store_root: root.clone(),
        ..HostConfig::default()
    };
    let e = Store::open_or_create(&cfg).unwrap_err();
    assert!(matches!(e, StoreError::NotBtrfs { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("is not on Btrfs (it is tmpfs)"), "{msg}");
    assert!(msg.contains("set loop_image (and loop_size)"), "{msg}");

    // Missing store_root below a non-Btrfs directory: the same advice.
    let missing = HostConfig {
        store_root: tmpfs.join("missing"),
        ..HostConfig::default()
    };
    let e = Store::open_or_create(&missing).unwrap_err();
    assert!(matches!(e, StoreError::NotBtrfs { .. }), "{e:?}");
    assert!(!tmpfs.join("missing").exists());

    // With a loop image configured, a non-empty directory is still not mounted over.
    let image = rig.path("img/store.img");
    let with_image = HostConfig {
        loop_image: Some(image.clone()),
        loop_size: 4 << 30,
        ..cfg
    };
    rig.track_mount(&root);
    let e = Store::open_or_create(&with_image).unwrap_err();
    assert!(matches!(e, StoreError::WouldHide { .. }), "{e:?}");
    assert!(e.to_string().contains("non-empty"), "{e}");
    assert!(!image.exists(), "nothing is created before the checks pass");
    assert!(mounts_at(&root).is_empty());
    assert_eq!(
        std::fs::read_to_string(root.join("precious")).unwrap(),
        "data"
    );

    // An image already mounted somewhere else is not attached a second time.
    let elsewhere = rig.mount_btrfs("elsewhere");
    let store2 = rig.path("store2");
    let in_use = HostConfig {
        store_root: store2.clone(),
        loop_image: Some(rig.path("elsewhere.img")),
        ..HostConfig::default()
    };
    rig.track_mount(&store2);
    let e = Store::open_or_create(&in_use).unwrap_err();
    assert!(matches!(e, StoreError::ImageInUse { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("mounted at {}", elsewhere.display())),
        "{msg}"
    );
    assert!(mounts_at(&store2).is_empty());
}
