//! The idmapped, overlaid root filesystem of an unprivileged container: a user namespace
//! for the container's range, idmapped clones of the read-only lowers, overlayfs over them
//! with the shifted upper, and the ACL that lets the container's root reach it.

use super::{IdMap, POOL_START, RANGE};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn errno(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("store paths have no NUL byte")
}

/// A user namespace whose uid and gid maps are `map`, as an fd (for MOUNT_ATTR_IDMAP).
fn userns_fd(map: &IdMap) -> Result<OwnedFd, String> {
    let mut pipe = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(errno("creating a pipe"));
    }
    // SAFETY: the child only calls async-signal-safe functions (unshare, write, pause,
    // _exit) before it is killed.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno("forking a user namespace holder"));
    }
    if pid == 0 {
        // SAFETY: see above; the child never returns into Rust code.
        unsafe {
            let ok: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                1
            } else {
                0
            };
            libc::write(pipe[1], (&ok as *const u8).cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: closing our copy of the write end, which we own.
    unsafe { libc::close(pipe[1]) };
    let mut ok = 0u8;
    // SAFETY: reading one byte into a local buffer from the read end we own.
    let n = unsafe { libc::read(pipe[0], (&mut ok as *mut u8).cast(), 1) };
    // SAFETY: closing the read end we own.
    unsafe { libc::close(pipe[0]) };
    let result = (|| {
        if n != 1 || ok != 1 {
            return Err(
                "cannot create a user namespace (unshare CLONE_NEWUSER failed; \
                        is user.max_user_namespaces 0?)"
                    .to_string(),
            );
        }
        for (file, start) in [("uid_map", map.uid), ("gid_map", map.gid)] {
            let p = format!("/proc/{pid}/{file}");
            std::fs::write(&p, format!("0 {start} {}\n", map.count))
                .map_err(|e| format!("writing {p}: {e}"))?;
        }
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map_err(|e| format!("opening the user namespace: {e}"))?;
        Ok(OwnedFd::from(ns))
    })();
    // SAFETY: the child is ours; kill and reap it.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    result
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

/// A detached, read-only clone of `dir` whose ids are mapped through `userns`.
fn idmapped_clone(dir: &Path, userns: &OwnedFd) -> Result<OwnedFd, String> {
    let c = cpath(dir);
    // SAFETY: open_tree takes a path and flags and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32,
        )
    };
    if fd < 0 {
        return Err(errno(&format!(
            "cloning a mount of {} (open_tree; Linux 5.2 or later)",
            dir.display()
        )));
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr reads `attr` (of the size given) and the empty path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(errno(&format!(
            "idmapping a mount of {} (mount_setattr MOUNT_ATTR_IDMAP; needs Linux 5.12 and, on Btrfs, 5.15)",
            dir.display()
        )));
    }
    Ok(fd)
}

/// Checks once at daemon start that the kernel and the store's filesystem can do what
/// unprivileged containers need: an idmapped mount of `dir` (the bases directory).
pub fn probe(dir: &Path) -> Result<(), String> {
    let map = IdMap {
        uid: POOL_START,
        gid: POOL_START,
        count: RANGE,
    };
    let ns = userns_fd(&map)?;
    idmapped_clone(dir, &ns).map(drop)
}

/// What a container's root filesystem is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// Read-only lowers, top-most first (layers, then the base).
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Where the merged tree is mounted (what LXC gets as `dir:`).
    pub merged: PathBuf,
    /// Where the idmapped lowers are attached while overlayfs is mounted.
    pub staging: PathBuf,
    pub map: IdMap,
    /// LXC's lxcpath: LXC insists that the container's root can search it.
    pub lxc_path: PathBuf,
}

fn mkdir_mode(p: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(mode).create(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating {}: {e}", p.display())),
    }
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("setting the mode of {}: {e}", p.display()))
}

fn umount_detach(p: &Path) -> Result<(), String> {
    let c = cpath(p);
    // SAFETY: umount2 takes a path and flags.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::ENOENT) {
            return Err(format!("unmounting {}: {e}", p.display()));
        }
    }
    Ok(())
}

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// Entries of an access ACL that adds search (x) for `uid` to `current` (or, without
/// one, to the ACL `mode` implies); `None` when `uid` may search already.
fn acl_with_search(current: Option<&[u8]>, mode: u32, uid: u32) -> Option<Vec<u8>> {
    let mut entries: Vec<(u16, u16, u32)> = match current {
        Some(v) if v.len() >= 4 && (v.len() - 4) % 8 == 0 => v[4..]
            .chunks(8)
            .map(|e| {
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    u16::from_le_bytes([e[2], e[3]]),
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                )
            })
            .collect(),
        _ => vec![
            (ACL_USER_OBJ, ((mode >> 6) & 7) as u16, ACL_UNDEFINED_ID),
            (ACL_GROUP_OBJ, ((mode >> 3) & 7) as u16, ACL_UNDEFINED_ID),
            (ACL_OTHER, (mode & 7) as u16, ACL_UNDEFINED_ID),
        ],
    };
    let has = entries
        .iter()
        .any(|&(t, p, id)| t == ACL_USER && id == uid && p & 1 == 1);
    let masked = entries.iter().any(|&(t, p, _)| t == ACL_MASK && p & 1 == 0);
    if has && !masked {
        return None;
    }
    match entries.iter_mut().find(|e| e.0 == ACL_USER && e.2 == uid) {
        Some(e) => e.1 |= 1,
        None => entries.push((ACL_USER, 1, uid)),
    }
    let group_class = entries
        .iter()
        .filter(|e| e.0 == ACL_USER || e.0 == ACL_GROUP_OBJ || e.0 == 0x08)
        .fold(0, |m, e| m | e.1);
    match entries.iter_mut().find(|e| e.0 == ACL_MASK) {
        Some(e) => e.1 |= 1,
        None => entries.push((ACL_MASK, group_class, ACL_UNDEFINED_ID)),
    }
    entries.sort_by_key(|&(t, _, id)| (t, id));
    let mut out = 2u32.to_le_bytes().to_vec();
    for (t, p, id) in entries {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

/// Lets `uid` search `dir` when others may not (an ACL entry; nothing else changes).
fn grant_search(dir: &Path, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    // A read-modify-write of the ACL: containers starting in parallel (a boot group)
    // would otherwise drop each other's entries.
    static ACL_UPDATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ACL_UPDATE.lock().unwrap_or_else(|e| e.into_inner());
    let md = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if md.mode() & 0o001 != 0 {
        return Ok(());
    }
    let c = cpath(dir);
    let name = c"system.posix_acl_access";
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings; `buf` is writable for its length.
    let len = unsafe {
        libc::getxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let current = (len >= 0).then(|| &buf[..len as usize]);
    let Some(acl) = acl_with_search(current, md.mode(), uid) else {
        return Ok(());
    };
    // SAFETY: valid C strings; `acl` is readable for its length.
    let r = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), acl.as_ptr().cast(), acl.len(), 0) };
    if r != 0 {
        return Err(errno(&format!(
            "letting the container's root (uid {uid}) search {} (POSIX ACLs needed)",
            dir.display()
        )));
    }
    Ok(())
}

/// Whether something is mounted exactly at `p`.
pub fn is_mount_point(p: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = p.as_os_str().as_bytes();
    text.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp).as_slice() == want)
    })
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

impl RootfsMount {
    /// Mounts the merged tree at `merged` (replacing a stale one). On failure nothing
    /// stays mounted.
    pub fn mount(&self) -> Result<(), String> {
        self.unmount()?;
        let result = self.mount_inner();
        if result.is_err() {
            let _ = self.unmount();
        }
        result
    }

    fn mount_inner(&self) -> Result<(), String> {
        self.prepare_dirs()?;
        let lowers = self.attach_idmapped_lowers()?;
        self.mount_overlay(&lowers)?;
        // Overlayfs holds private clones of its layers: the attached lowers can go.
        self.drop_staging()
    }

    /// Lets the container's root reach the lxcpath and `merged`, makes the mount points
    /// and hands the upper and work dirs to the container's root.
    fn prepare_dirs(&self) -> Result<(), String> {
        // LXC checks that the container's root may search the lxcpath; where others may
        // not (a 0700 store), an ACL entry lets exactly this uid search, not list.
        for dir in self.lxc_path.ancestors() {
            grant_search(dir, self.map.uid)?;
        }
        // And the merged tree's parents, should the runtime dir be closed to others.
        if let Some(runtime) = self.merged.parent().and_then(Path::parent) {
            for dir in runtime.ancestors() {
                grant_search(dir, self.map.uid)?;
            }
        }
        // The container's root (a mapped uid) must reach `merged`: its parents are 0711.
        if let Some(parent) = self.merged.parent() {
            mkdir_mode(parent, 0o711)?;
        }
        mkdir_mode(&self.merged, 0o755)?;
        if let Some(parent) = self.staging.parent() {
            mkdir_mode(parent, 0o700)?;
        }
        mkdir_mode(&self.staging, 0o700)?;
        for dir in [&self.upper, &self.work] {
            let c = cpath(dir);
            // SAFETY: lchown takes a path and ids.
            if unsafe { libc::lchown(c.as_ptr(), self.map.uid, self.map.gid) } != 0 {
                return Err(errno(&format!("chowning {}", dir.display())));
            }
        }
        Ok(())
    }

    /// Attaches an idmapped clone of each lower under `staging`; returns where, in order.
    fn attach_idmapped_lowers(&self) -> Result<Vec<PathBuf>, String> {
        let ns = userns_fd(&self.map)?;
        let mut lowers = Vec::new();
        for (i, lower) in self.lowers.iter().enumerate() {
            let fd = idmapped_clone(lower, &ns)?;
            let at = self.staging.join(i.to_string());
            mkdir_mode(&at, 0o700)?;
            let target = cpath(&at);
            // SAFETY: move_mount attaches the detached mount `fd` at `target`.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    fd.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                )
            };
            if r != 0 {
                return Err(errno(&format!(
                    "attaching the idmapped {}",
                    lower.display()
                )));
            }
            lowers.push(at);
        }
        Ok(lowers)
    }

    /// Mounts overlayfs at `merged` over the attached `lowers` and the upper.
    fn mount_overlay(&self, lowers: &[PathBuf]) -> Result<(), String> {
        let join = |ps: &[PathBuf]| {
            ps.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},{}",
            join(lowers),
            self.upper.display(),
            self.work.display(),
            crate::lxcconf::OVERLAY_OPTIONS
        );
        let (src, fstype, target, data) = (
            c"overlay",
            c"overlay",
            cpath(&self.merged),
            CString::new(opts).map_err(|_| "a path holds a NUL byte".to_string())?,
        );
        // SAFETY: mount takes NUL-terminated strings that live across the call.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(errno(&format!(
                "mounting overlayfs at {} over idmapped lowers (needs Linux 5.19)",
                self.merged.display()
            )));
        }
        Ok(())
    }

    fn drop_staging(&self) -> Result<(), String> {
        if let Ok(entries) = std::fs::read_dir(&self.staging) {
            for e in entries.flatten() {
                umount_detach(&e.path())?;
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.staging);
        Ok(())
    }

    /// Unmounts the merged tree (and any idmapped lowers left attached); idempotent.
    pub fn unmount(&self) -> Result<(), String> {
        self.drop_staging()?;
        while is_mount_point(&self.merged) {
            let c = cpath(&self.merged);
            // SAFETY: umount2 takes a path and flags.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                return Err(errno(&format!("unmounting {}", self.merged.display())));
            }
        }
        match std::fs::remove_dir(&self.merged) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", self.merged.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_is_granted_to_one_uid_through_an_acl() {
        let acl = acl_with_search(None, 0o40700, 1_048_576).unwrap();
        let entries: Vec<(u16, u16, u32)> = acl[4..]
            .chunks(8)
            .map(|e| {
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    u16::from_le_bytes([e[2], e[3]]),
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                )
            })
            .collect();
        let u = ACL_UNDEFINED_ID;
        assert_eq!(
            entries,
            [
                (ACL_USER_OBJ, 7, u),
                (ACL_USER, 1, 1_048_576),
                (ACL_GROUP_OBJ, 0, u),
                (ACL_MASK, 1, u),
                (ACL_OTHER, 0, u)
            ]
        );
        assert_eq!(acl_with_search(Some(&acl), 0o40710, 1_048_576), None);
        let two = acl_with_search(Some(&acl), 0o40710, 1_114_112).unwrap();
        assert_eq!(
            two.len(),
            4 + 6 * 8,
            "a second container adds its own entry"
        );
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/a\\040b"), b"/a b");
        assert_eq!(unescape_mountinfo("/plain"), b"/plain");
    }
}
