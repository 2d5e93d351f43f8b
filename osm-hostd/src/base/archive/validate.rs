//! The safety check of an archive's entries before GNU tar unpacks it: no absolute or
//! climbing paths, no links out of the root, nothing beneath a symlink, harmless devices only.

use super::{decoder, detect, not_tar};
use crate::base::BaseError;
use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path};

fn unsafe_entry(entry: &[u8], reason: impl Into<String>) -> BaseError {
    BaseError::UnsafeArchive {
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason: reason.into(),
    }
}

/// Depth below the root after walking `path` from a directory at `depth`, or `None` as soon
/// as it climbs above the root. `.` components are ignored; absolute paths are the
/// caller's business.
fn walk(mut depth: usize, path: &Path) -> Option<usize> {
    for c in path.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth = depth.checked_sub(1)?,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(depth)
}

/// The entry path with `.` components dropped, as a normalized key for the symlink set.
fn normalized(path: &Path) -> std::path::PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// True if a proper prefix of `path` is a symlink seen earlier in the archive: GNU tar would
/// then write through the link, possibly outside the destination.
fn under_symlink(symlinks: &HashSet<std::path::PathBuf>, path: &Path) -> bool {
    let mut p = path.to_path_buf();
    while p.pop() {
        if symlinks.contains(&p) {
            return true;
        }
    }
    false
}

/// Device nodes a root filesystem may carry: overlay whiteouts (0:0) and the nodes
/// debootstrap creates in /dev (null, zero, full, random, urandom, tty, console, ptmx).
/// Any other node (a disk, /dev/mem, ...) stored in a base would let whoever can reach
/// the store's directories on the host open that device; LXC populates /dev itself.
const HARMLESS_CHAR_DEVICES: &[(u32, u32)] = &[
    (0, 0),
    (1, 3),
    (1, 5),
    (1, 7),
    (1, 8),
    (1, 9),
    (5, 0),
    (5, 1),
    (5, 2),
];
const DEVICE_POLICY: &str = "root filesystem archives may only hold overlay whiteouts (0:0) \
     and the null, zero, full, random, urandom, tty, console and ptmx nodes";

/// Checks every entry of a tar, tar.gz or tar.zst archive (compression detected from
/// its magic bytes) and refuses absolute paths, `..` components and links that
/// escape the root. Reads from the start of `file` whatever its current offset.
///
/// Absolute symlink targets are accepted: inside a root filesystem they resolve against
/// the container's root. Relative symlink targets are resolved from the link's directory
/// and must stay inside the root; hard link targets must be relative and stay inside.
/// No entry may lie beneath a symlink of the archive, and device nodes are limited to
/// overlay whiteouts and the harmless nodes debootstrap creates.
///
/// The caller must keep `file` out of other writers' reach until [`extract_archive`] has
/// read it: the check and the extraction are two passes over the same bytes.
pub fn validate_archive(file: &mut File) -> Result<(), BaseError> {
    let kind = detect(file)?;
    let reader = decoder(kind, &mut *file)?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(not_tar)?;
    let mut count = 0usize;
    let mut symlinks = HashSet::new();
    for entry in entries {
        let mut entry = entry.map_err(not_tar)?;
        let etype = entry.header().entry_type();
        if etype == tar::EntryType::XGlobalHeader {
            refuse_global_renames(&mut entry)?;
            continue;
        }
        count += 1;
        let name = entry.path_bytes().into_owned();
        let path = entry.path().map_err(not_tar)?.into_owned();
        if path.has_root() {
            return Err(unsafe_entry(&name, "has an absolute path"));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(unsafe_entry(&name, "has a '..' component"));
        }
        let path = normalized(&path);
        if under_symlink(&symlinks, &path) {
            return Err(unsafe_entry(
                &name,
                "lies beneath a symlink of the same archive",
            ));
        }
        check_link_or_device(&entry, etype, &name, path, &mut symlinks)?;
    }
    if count == 0 {
        return Err(BaseError::InvalidArchive(
            "the archive has no entries; give a tar of a root filesystem".into(),
        ));
    }
    Ok(())
}

/// A global pax header may not carry `path` or `linkpath`: GNU tar would apply it to later
/// entries, which this checker does not model; no real rootfs archive needs one.
fn refuse_global_renames<R: Read>(entry: &mut tar::Entry<R>) -> Result<(), BaseError> {
    if let Some(exts) = entry.pax_extensions().map_err(not_tar)? {
        for ext in exts {
            let ext = ext.map_err(not_tar)?;
            if matches!(ext.key_bytes(), b"path" | b"linkpath") {
                return Err(unsafe_entry(
                    &entry.path_bytes(),
                    "is a global pax header that renames entries",
                ));
            }
        }
    }
    Ok(())
}

/// The checks that depend on the entry's type: link targets stay inside the root (and a
/// symlink is remembered for [`under_symlink`]), device nodes are harmless ones.
/// `path` is the entry's normalized path.
fn check_link_or_device<R: Read>(
    entry: &tar::Entry<R>,
    etype: tar::EntryType,
    name: &[u8],
    path: std::path::PathBuf,
    symlinks: &mut HashSet<std::path::PathBuf>,
) -> Result<(), BaseError> {
    match etype {
        tar::EntryType::Symlink => {
            let target = link_target(entry, name)?;
            // Depth of the link's directory = components of its path minus itself.
            let dir_depth = path.components().count().saturating_sub(1);
            if !target.has_root() && walk(dir_depth, &target).is_none() {
                return Err(unsafe_entry(
                    name,
                    format!("is a symlink to {target:?}, which climbs above the root"),
                ));
            }
            symlinks.insert(path);
        }
        tar::EntryType::Link => {
            let target = link_target(entry, name)?;
            if target.has_root() {
                return Err(unsafe_entry(
                    name,
                    format!("is a hard link to the absolute path {target:?}"),
                ));
            }
            if walk(0, &target).is_none() {
                return Err(unsafe_entry(
                    name,
                    format!("is a hard link to {target:?}, which climbs above the root"),
                ));
            }
            if under_symlink(symlinks, &normalized(&target)) {
                return Err(unsafe_entry(
                    name,
                    format!("is a hard link to {target:?}, which lies beneath a symlink"),
                ));
            }
        }
        tar::EntryType::Block => {
            return Err(unsafe_entry(
                name,
                format!("is a block device; {DEVICE_POLICY}"),
            ));
        }
        tar::EntryType::Char => {
            let h = entry.header();
            let major = h.device_major().map_err(not_tar)?.unwrap_or(0);
            let minor = h.device_minor().map_err(not_tar)?.unwrap_or(0);
            if !HARMLESS_CHAR_DEVICES.contains(&(major, minor)) {
                return Err(unsafe_entry(
                    name,
                    format!("is the character device {major}:{minor}; {DEVICE_POLICY}"),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn link_target<R: Read>(
    entry: &tar::Entry<R>,
    name: &[u8],
) -> Result<std::path::PathBuf, BaseError> {
    match entry.link_name().map_err(not_tar)? {
        Some(t) if !t.as_os_str().is_empty() => Ok(t.into_owned()),
        _ => Err(unsafe_entry(name, "is a link without a target")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{private_copy, Compression};
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use tar::{EntryType, Header};

    /// An entry with exactly these name/link bytes, bypassing the tar crate's own checks.
    fn raw(
        b: &mut tar::Builder<Vec<u8>>,
        name: &str,
        kind: EntryType,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut h = Header::new_gnu();
        let slot = &mut h.as_old_mut().name;
        slot.fill(0);
        slot[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.set_link_name_literal(l).unwrap();
        }
        h.set_entry_type(kind);
        h.set_device_major(0).unwrap();
        h.set_device_minor(0).unwrap();
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    fn rootfs_tar() -> Vec<u8> {
        tar_of(|b| {
            raw(b, "./", EntryType::Directory, None, b"");
            raw(b, "./usr/", EntryType::Directory, None, b"");
            raw(b, "./usr/lib/", EntryType::Directory, None, b"");
            raw(b, "./usr/lib/libx.so.1", EntryType::Regular, None, b"elf");
            raw(
                b,
                "./usr/lib/libx.so",
                EntryType::Symlink,
                Some("libx.so.1"),
                b"",
            );
            raw(b, "./usr/bin/", EntryType::Directory, None, b"");
            raw(b, "./usr/bin/perl", EntryType::Regular, None, b"#!");
            raw(
                b,
                "./usr/bin/perl5.36",
                EntryType::Link,
                Some("./usr/bin/perl"),
                b"",
            );
            raw(b, "./lib", EntryType::Symlink, Some("usr/lib"), b"");
            raw(b, "./bin", EntryType::Symlink, Some("/usr/bin"), b"");
            raw(b, "./etc/", EntryType::Directory, None, b"");
            raw(
                b,
                "./etc/alternatives/pager",
                EntryType::Symlink,
                Some("/bin/less"),
                b"",
            );
            // Climbs exactly to the root, not above it.
            raw(
                b,
                "./usr/share/doc/x/etc",
                EntryType::Symlink,
                Some("../../../../etc"),
                b"",
            );
            raw(
                b,
                "./etc/resolv.conf",
                EntryType::Symlink,
                Some("../run/systemd/resolve/stub-resolv.conf"),
                b"",
            );
            raw(b, "./dev/whiteout", EntryType::Char, None, b"");
            raw(b, "./run/fifo", EntryType::Fifo, None, b"");
            let long = format!("./usr/share/{}/file", "d".repeat(150));
            let mut h = Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, long, &b"x"[..]).unwrap();
        })
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        // Deliberately not rewound: validate_archive must seek to the start itself.
        f
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn zstd(bytes: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(bytes, 3).unwrap()
    }

    fn refused(bytes: &[u8]) -> BaseError {
        validate_archive(&mut file_with(bytes)).expect_err("archive was accepted")
    }

    fn unsafe_name(e: &BaseError) -> &str {
        match e {
            BaseError::UnsafeArchive { entry, .. } => entry,
            other => panic!("expected UnsafeArchive, got {other:?}"),
        }
    }

    #[test]
    fn a_normal_rootfs_with_absolute_symlinks_is_accepted() {
        let t = rootfs_tar();
        validate_archive(&mut file_with(&t)).unwrap();
        validate_archive(&mut file_with(&gzip(&t))).unwrap();
        validate_archive(&mut file_with(&zstd(&t))).unwrap();
    }

    #[test]
    fn compression_is_detected_by_magic() {
        let t = rootfs_tar();
        assert_eq!(detect(&mut file_with(&t)).unwrap(), Compression::None);
        assert_eq!(
            detect(&mut file_with(&gzip(&t))).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            detect(&mut file_with(&zstd(&t))).unwrap(),
            Compression::Zstd
        );
        let e = detect(&mut file_with(b"\xfd7zXZ\0rest")).unwrap_err();
        assert!(e.to_string().contains("xz"), "{e}");
    }

    #[test]
    fn absolute_member_is_refused() {
        let t = tar_of(|b| {
            raw(
                b,
                "/etc/passwd",
                EntryType::Regular,
                None,
                b"root::0:0::/:/bin/sh\n",
            )
        });
        assert_eq!(unsafe_name(&refused(&t)), "/etc/passwd");
        // The same behind each compression.
        assert_eq!(unsafe_name(&refused(&gzip(&t))), "/etc/passwd");
        assert_eq!(unsafe_name(&refused(&zstd(&t))), "/etc/passwd");
    }

    #[test]
    fn dotdot_member_is_refused() {
        let t = tar_of(|b| {
            raw(b, "a/", EntryType::Directory, None, b"");
            raw(b, "a/../../x", EntryType::Regular, None, b"x");
        });
        let e = refused(&t);
        assert_eq!(unsafe_name(&e), "a/../../x");
        assert!(e.to_string().contains("'..'"), "{e}");
    }

    #[test]
    fn escaping_relative_symlink_is_refused() {
        let t = tar_of(|b| {
            raw(b, "a/", EntryType::Directory, None, b"");
            raw(b, "a/l", EntryType::Symlink, Some("../../.."), b"");
        });
        let e = refused(&t);
        assert_eq!(unsafe_name(&e), "a/l");
        assert!(e.to_string().contains("climbs above the root"), "{e}");
        let t = tar_of(|b| raw(b, "./l", EntryType::Symlink, Some("x/../../etc"), b""));
        assert_eq!(unsafe_name(&refused(&zstd(&t))), "./l");
    }

    #[test]
    fn escaping_or_absolute_hard_links_are_refused() {
        let t = tar_of(|b| raw(b, "h", EntryType::Link, Some("../x"), b""));
        assert_eq!(unsafe_name(&refused(&t)), "h");
        let t = tar_of(|b| raw(b, "h", EntryType::Link, Some("/etc/shadow"), b""));
        let e = refused(&gzip(&t));
        assert!(e.to_string().contains("absolute"), "{e}");
    }

    #[test]
    fn entries_beneath_a_symlink_are_refused() {
        let t = tar_of(|b| {
            raw(b, "./lib", EntryType::Symlink, Some("/etc"), b"");
            raw(b, "./lib/cron.d/evil", EntryType::Regular, None, b"x");
        });
        assert_eq!(unsafe_name(&refused(&t)), "./lib/cron.d/evil");
        let t = tar_of(|b| {
            raw(b, "lib", EntryType::Symlink, Some("/etc"), b"");
            raw(b, "h", EntryType::Link, Some("lib/shadow"), b"");
        });
        assert_eq!(unsafe_name(&refused(&t)), "h");
    }

    #[test]
    fn only_harmless_device_nodes_are_accepted() {
        fn dev(kind: EntryType, major: u32, minor: u32) -> Vec<u8> {
            tar_of(|b| {
                let mut h = Header::new_gnu();
                h.set_path("dev/node").unwrap();
                h.set_entry_type(kind);
                h.set_device_major(major).unwrap();
                h.set_device_minor(minor).unwrap();
                h.set_size(0);
                h.set_cksum();
                b.append(&h, &b""[..]).unwrap();
            })
        }
        for (major, minor) in [(0, 0), (1, 3), (1, 9), (5, 2)] {
            validate_archive(&mut file_with(&dev(EntryType::Char, major, minor))).unwrap();
        }
        let e = refused(&dev(EntryType::Char, 1, 1)); // /dev/mem
        assert!(e.to_string().contains("1:1"), "{e}");
        let e = refused(&dev(EntryType::Block, 8, 0)); // /dev/sda
        assert!(e.to_string().contains("block device"), "{e}");
    }

    #[test]
    fn pax_path_overrides_are_checked() {
        let t = tar_of(|b| {
            let rec = "22 path=../../../evil\n";
            assert_eq!(rec.len(), 22);
            let mut h = Header::new_ustar();
            h.set_path("PaxHeaders/x").unwrap();
            h.set_entry_type(EntryType::XHeader);
            h.set_size(rec.len() as u64);
            h.set_cksum();
            b.append(&h, rec.as_bytes()).unwrap();
            raw(b, "harmless", EntryType::Regular, None, b"x");
        });
        assert_eq!(unsafe_name(&refused(&t)), "../../../evil");
    }

    #[test]
    fn empty_and_non_tar_files_are_refused() {
        for bytes in [
            Vec::new(),
            vec![0u8; 1024],
            tar_of(|_| {}),
            b"this is just some text, not a tar archive at all\n".repeat(20),
            gzip(b"hello"),
            zstd(b"hello"),
        ] {
            match refused(&bytes) {
                BaseError::InvalidArchive(msg) => assert!(!msg.is_empty()),
                other => panic!("expected InvalidArchive, got {other:?}"),
            }
        }
        let e = refused(&gzip(&tar_of(|_| {})));
        assert!(e.to_string().contains("no entries"), "{e}");
    }

    #[test]
    fn private_copy_is_independent_of_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let mut original = file_with(&rootfs_tar());
        let mut copy = private_copy(&mut original, dir.path()).unwrap();
        // The caller rewrites its file after handing it over: the copy keeps the old bytes.
        original.set_len(0).unwrap();
        original.seek(SeekFrom::Start(0)).unwrap();
        original
            .write_all(&tar_of(|b| {
                raw(b, "/etc/passwd", EntryType::Regular, None, b"")
            }))
            .unwrap();
        validate_archive(&mut copy).unwrap();
        assert!(validate_archive(&mut original).is_err());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the copy has a name"
        );
    }

    #[test]
    fn walk_tracks_depth() {
        assert_eq!(walk(0, Path::new("a/b/../c")), Some(2));
        assert_eq!(walk(1, Path::new("../x")), Some(1));
        assert_eq!(walk(1, Path::new("../../x")), None);
        assert_eq!(walk(0, Path::new("./.")), Some(0));
    }
}
