//! Shifting the ownership of an upper layer from one id range to another: a privileged
//! container's 0-based upper converted to its new range, or a backup restored into a
//! container with another range. Every entry keeps what overlayfs and the container rely
//! on: whiteouts (0/0 character devices) and opaque dirs (a `trusted.overlay.opaque`
//! xattr) stay as they are, set-id bits and file capabilities are put back after the
//! chown (which clears them), POSIX ACL entries and a capability's root id are shifted.

use crate::idmap::IdMap;
use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Ids `[base, base + count)` on disk; a privileged container's range is 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub uid: u32,
    pub gid: u32,
    pub count: u32,
}

impl Range {
    /// The on-disk range of a container's upper: its idmap, or 0-65535 when privileged.
    pub fn of(map: Option<IdMap>) -> Range {
        match map {
            Some(m) => Range {
                uid: m.uid,
                gid: m.gid,
                count: m.count,
            },
            None => Range {
                uid: 0,
                gid: 0,
                count: crate::idmap::RANGE,
            },
        }
    }
}

fn map_id(id: u32, from: u32, to: u32, count: u32) -> Option<u32> {
    (id >= from && id - from < count).then(|| to + (id - from))
}

const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;

/// Shifts the user and group entries of a POSIX ACL xattr value (version 2 layout).
fn shift_acl(value: &[u8], from: &Range, to: &Range) -> Result<Vec<u8>, String> {
    if value.len() < 4 || (value.len() - 4) % 8 != 0 {
        return Err("malformed POSIX ACL".into());
    }
    let mut out = value.to_vec();
    for entry in out[4..].chunks_mut(8) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let id = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        let new = match tag {
            ACL_USER => map_id(id, from.uid, to.uid, from.count),
            ACL_GROUP => map_id(id, from.gid, to.gid, from.count),
            _ => continue,
        }
        .ok_or_else(|| format!("ACL entry for id {id} is outside the container's range"))?;
        entry[4..8].copy_from_slice(&new.to_le_bytes());
    }
    Ok(out)
}

const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;

/// A `security.capability` value for the new range: version 3 with the root id of the
/// new range (version 2 means "root of the initial namespace", i.e. id 0 of the old one).
fn shift_caps(value: &[u8], from: &Range, to: &Range) -> Result<Vec<u8>, String> {
    if value.len() < 20 {
        return Err("malformed file capability".into());
    }
    let magic = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
    let rev = magic & 0xff00_0000;
    let rootid = match rev {
        VFS_CAP_REVISION_2 => 0,
        VFS_CAP_REVISION_3 if value.len() >= 24 => {
            u32::from_le_bytes([value[20], value[21], value[22], value[23]])
        }
        _ => return Err("unknown file capability revision".into()),
    };
    let new_root = map_id(rootid, from.uid, to.uid, from.count)
        .ok_or_else(|| format!("file capability root id {rootid} is outside the range"))?;
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&((magic & 0x00ff_ffff) | VFS_CAP_REVISION_3).to_le_bytes());
    out.extend_from_slice(&value[4..20]);
    out.extend_from_slice(&new_root.to_le_bytes());
    Ok(out)
}

pub(crate) fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL byte")
}

pub(crate) fn get_xattr(p: &CString, name: &str) -> Option<Vec<u8>> {
    let n = CString::new(name).expect("static name");
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings; `buf` is writable for its length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

fn set_xattr(p: &CString, name: &str, value: &[u8]) -> Result<(), String> {
    let n = CString::new(name).expect("static name");
    // SAFETY: valid C strings; `value` is readable for its length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(format!(
            "setting {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// First pass: every owner, ACL and capability in `root` must be inside `from`.
/// Nothing is changed when this fails.
pub fn check(root: &Path, from: &Range) -> Result<u64, String> {
    let mut n = 0;
    walk(root, &mut |p, md| {
        n += 1;
        if is_whiteout(md) {
            return Ok(());
        }
        if map_id(md.uid(), from.uid, 0, from.count).is_none()
            || map_id(md.gid(), from.gid, 0, from.count).is_none()
        {
            return Err(format!(
                "{} is owned by {}:{}, outside the container's ids {}-{}; fix or remove it inside the container first",
                p.display(),
                md.uid(),
                md.gid(),
                from.uid,
                u64::from(from.uid) + u64::from(from.count) - 1
            ));
        }
        let c = cpath(p);
        let probe = Range {
            uid: 0,
            gid: 0,
            count: u32::MAX,
        };
        for name in ["system.posix_acl_access", "system.posix_acl_default"] {
            if let Some(v) = get_xattr(&c, name) {
                shift_acl(&v, from, &probe).map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
        if let Some(v) = get_xattr(&c, "security.capability") {
            shift_caps(&v, from, &probe).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        Ok(())
    })?;
    Ok(n)
}

/// Shifts every entry of `root` (the upper dir itself included) from `from` to `to`.
/// Call [`check`] first; hard links are shifted once.
pub fn shift(root: &Path, from: &Range, to: &Range) -> Result<(), String> {
    let mut seen = HashSet::new();
    walk(root, &mut |p, md| {
        if is_whiteout(md) || (md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())))
        {
            return Ok(());
        }
        let fail = |what: &str, e: String| format!("{what} {}: {e}", p.display());
        let c = cpath(p);
        let acls: Vec<(&str, Vec<u8>)> = ["system.posix_acl_access", "system.posix_acl_default"]
            .into_iter()
            .filter_map(|n| get_xattr(&c, n).map(|v| (n, v)))
            .collect();
        let caps = get_xattr(&c, "security.capability");
        let uid = map_id(md.uid(), from.uid, to.uid, from.count)
            .ok_or_else(|| fail("owner outside the range of", md.uid().to_string()))?;
        let gid = map_id(md.gid(), from.gid, to.gid, from.count)
            .ok_or_else(|| fail("group outside the range of", md.gid().to_string()))?;
        // SAFETY: lchown takes a valid C string and ids.
        if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
            return Err(fail(
                "chowning",
                std::io::Error::last_os_error().to_string(),
            ));
        }
        if !md.file_type().is_symlink() {
            // chown cleared set-id bits; put the mode back as it was.
            let mode = md.mode() & 0o7777;
            if mode & 0o6000 != 0 {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| fail("restoring the mode of", e.to_string()))?;
            }
        }
        for (name, v) in acls {
            let v = shift_acl(&v, from, to).map_err(|e| fail("shifting the ACL of", e))?;
            set_xattr(&c, name, &v).map_err(|e| fail("on", e))?;
        }
        if let Some(v) = caps {
            let v =
                shift_caps(&v, from, to).map_err(|e| fail("shifting the capabilities of", e))?;
            set_xattr(&c, "security.capability", &v).map_err(|e| fail("on", e))?;
        }
        Ok(())
    })
}

/// Overlayfs' whiteouts (0/0 character devices) are made with the mounter's ids; their
/// owner means nothing and stays.
fn is_whiteout(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Visits `root` and everything under it on the same filesystem, never following links.
fn walk(
    root: &Path,
    f: &mut dyn FnMut(&Path, &std::fs::Metadata) -> Result<(), String>,
) -> Result<(), String> {
    let md = std::fs::symlink_metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let dev = md.dev();
    let mut stack = vec![(root.to_path_buf(), md)];
    while let Some((p, md)) = stack.pop() {
        f(&p, &md)?;
        if md.is_dir() {
            let entries =
                std::fs::read_dir(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
            for e in entries {
                let e = e.map_err(|e| format!("reading {}: {e}", p.display()))?;
                let child = e.path();
                let cmd = std::fs::symlink_metadata(&child)
                    .map_err(|e| format!("{}: {e}", child.display()))?;
                if cmd.dev() != dev {
                    continue;
                }
                stack.push((child, cmd));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: Range = Range {
        uid: 0,
        gid: 0,
        count: 65536,
    };
    const TO: Range = Range {
        uid: 1_048_576,
        gid: 1_048_576,
        count: 65536,
    };

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn acl_user_and_group_entries_move_the_rest_stays() {
        let undefined = u32::MAX;
        let before = acl(&[
            (0x01, 6, undefined),
            (ACL_USER, 4, 1000),
            (ACL_GROUP, 4, 33),
            (0x10, 6, undefined),
        ]);
        let after = shift_acl(&before, &FROM, &TO).unwrap();
        assert_eq!(
            after,
            acl(&[
                (0x01, 6, undefined),
                (ACL_USER, 4, 1_049_576),
                (ACL_GROUP, 4, 1_048_609),
                (0x10, 6, undefined),
            ])
        );
        let err = shift_acl(&acl(&[(ACL_USER, 4, 70000)]), &FROM, &TO).unwrap_err();
        assert!(err.contains("70000"), "{err}");
        assert!(shift_acl(&[1, 2, 3], &FROM, &TO).is_err());
    }

    #[test]
    fn capabilities_become_version_3_owned_by_the_new_root() {
        let mut v2 = (VFS_CAP_REVISION_2 | 1).to_le_bytes().to_vec();
        v2.extend_from_slice(&[0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let v3 = shift_caps(&v2, &FROM, &TO).unwrap();
        assert_eq!(v3.len(), 24);
        assert_eq!(&v3[..4], &(VFS_CAP_REVISION_3 | 1).to_le_bytes());
        assert_eq!(&v3[4..20], &v2[4..20]);
        assert_eq!(&v3[20..], &1_048_576u32.to_le_bytes());
        // And back again, from that range to another.
        let other = Range {
            uid: 2_097_152,
            gid: 2_097_152,
            count: 65536,
        };
        let again = shift_caps(&v3, &TO, &other).unwrap();
        assert_eq!(&again[20..], &2_097_152u32.to_le_bytes());
    }
}
