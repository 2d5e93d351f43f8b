//! Btrfs subvolume operations through the kernel's ioctls (no `btrfs` process per call).
//!
//! Every function takes a path and reports failures as [`BtrfsError`] carrying the
//! operation and the path. Nested subvolumes are found the way libbtrfsutil finds them:
//! `BTRFS_IOC_GET_SUBVOL_ROOTREF` lists the child subvolumes of the subvolume an fd
//! belongs to, and `BTRFS_IOC_INO_LOOKUP_USER` turns each into a path. That costs a few
//! ioctls per subvolume, independent of how many files a container root holds.

use nix::sys::ioctl::ioctl_num_type;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct BtrfsError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub type Result<T> = std::result::Result<T, BtrfsError>;

/// The inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
pub const SUBVOLUME_ROOT_INO: u64 = 256;

/// True if `path` is on a Btrfs filesystem.
pub fn is_btrfs(path: &Path) -> Result<bool> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| err("statfs", path, e.into()))?;
    Ok(st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

/// True if `path` is the root directory of a Btrfs subvolume.
pub fn is_subvolume(path: &Path) -> Result<bool> {
    let meta = std::fs::metadata(path).map_err(|e| err("stat", path, e))?;
    Ok(meta.is_dir() && meta.ino() == SUBVOLUME_ROOT_INO && is_btrfs(path)?)
}

/// Creates a new, empty subvolume at `path` (its parent must exist; `path` must not).
pub fn create_subvolume(path: &Path) -> Result<()> {
    const OP: &str = "create subvolume";
    let (parent, name) = split_parent(OP, path)?;
    let parent_dir = open_dir(OP, parent)?;
    let mut args = sys::VolArgs::new();
    copy_name(&mut args.name, name).map_err(|e| err(OP, path, e))?;
    sys::SUBVOL_CREATE
        .call(&parent_dir, &mut args)
        .map_err(|e| err(OP, path, e))
}

/// Snapshots subvolume `src` to the new path `dst`, read-only if asked.
///
/// A read-only snapshot of unsynced data makes the kernel flush it first.
pub fn snapshot(src: &Path, dst: &Path, readonly: bool) -> Result<()> {
    const OP: &str = "snapshot";
    if !is_subvolume(src)? {
        return Err(not_a_subvolume(OP, src));
    }
    let (parent, name) = split_parent(OP, dst)?;
    let source = open_dir(OP, src)?;
    let parent_dir = open_dir(OP, parent)?;
    let mut args = sys::VolArgsV2::new();
    args.fd = i64::from(source.as_raw_fd());
    if readonly {
        args.flags = sys::SUBVOL_RDONLY;
    }
    copy_name(&mut args.name, name).map_err(|e| err(OP, dst, e))?;
    sys::SNAP_CREATE_V2
        .call(&parent_dir, &mut args)
        .map_err(|e| err(OP, dst, e))
}

/// Makes the subvolume at `path` read-only or writable. Idempotent.
pub fn set_readonly(path: &Path, readonly: bool) -> Result<()> {
    const OP: &str = "set read-only flag of";
    if !is_subvolume(path)? {
        return Err(not_a_subvolume(OP, path));
    }
    let dir = open_dir(OP, path)?;
    set_readonly_fd(&dir, readonly).map_err(|e| err(OP, path, e))
}

/// True if the subvolume containing `path` is read-only.
pub fn is_readonly(path: &Path) -> Result<bool> {
    const OP: &str = "get flags of";
    let dir = open_dir(OP, path)?;
    let flags = get_flags(&dir).map_err(|e| err(OP, path, e))?;
    Ok(flags & sys::SUBVOL_RDONLY != 0)
}

/// Deletes the subvolume at `path` and every subvolume nested below it, bottom-up.
///
/// Read-only subvolumes are deleted too (this needs CAP_SYS_ADMIN); a read-only
/// subvolume that holds nested ones is made writable first so they can be unlinked.
/// A path that is not a subvolume is refused, so a plain directory is never removed.
pub fn delete_subvolume_recursive(path: &Path) -> Result<()> {
    const OP: &str = "delete subvolume";
    if !is_subvolume(path)? {
        return Err(not_a_subvolume(OP, path));
    }
    let (parent, name) = split_parent(OP, path)?;
    let parent_dir = open_dir(OP, parent)?;
    // Everything below is resolved from this fd, so a symlink or a mount placed in the
    // tree cannot redirect the deletion elsewhere.
    let dir = open_beneath(&parent_dir, Path::new(name)).map_err(|e| err(OP, path, e))?;
    delete_nested(&dir, path)?;
    destroy(&parent_dir, name, path)
}

/// The subvolumes directly below the subvolume at `path`, as paths under `path`.
///
/// Only direct children are listed; call again on each to walk deeper.
pub fn nested_subvolumes(path: &Path) -> Result<Vec<PathBuf>> {
    const OP: &str = "list subvolumes below";
    if !is_subvolume(path)? {
        return Err(not_a_subvolume(OP, path));
    }
    let dir = open_dir(OP, path)?;
    let children = child_subvolumes(&dir).map_err(|e| err(OP, path, e))?;
    Ok(children.into_iter().map(|rel| path.join(rel)).collect())
}

/// Deletes every subvolume below the subvolume open as `dir` (shown as `path`), deepest
/// first.
fn delete_nested(dir: &File, path: &Path) -> Result<()> {
    const OP: &str = "delete subvolume";
    let children = child_subvolumes(dir).map_err(|e| err(OP, path, e))?;
    if children.is_empty() {
        return Ok(());
    }
    // Unlinking a child modifies this subvolume, which a read-only one refuses.
    set_readonly_fd(dir, false).map_err(|e| err(OP, path, e))?;
    for rel in &children {
        let child_path = path.join(rel);
        let (parent, name) = split_parent(OP, rel)?;
        let parent_dir = open_beneath(dir, parent).map_err(|e| err(OP, &child_path, e))?;
        let child =
            open_beneath(&parent_dir, Path::new(name)).map_err(|e| err(OP, &child_path, e))?;
        delete_nested(&child, &child_path)?;
        destroy(&parent_dir, name, &child_path)?;
    }
    Ok(())
}

fn destroy(parent_dir: &File, name: &OsStr, path: &Path) -> Result<()> {
    const OP: &str = "delete subvolume";
    let mut args = sys::VolArgs::new();
    copy_name(&mut args.name, name).map_err(|e| err(OP, path, e))?;
    sys::SNAP_DESTROY
        .call(parent_dir, &mut args)
        .map_err(|e| err(OP, path, e))
}

/// The subvolumes directly below the subvolume whose root directory is open as `dir`,
/// as paths relative to it.
fn child_subvolumes(dir: &File) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut refs = sys::RootrefArgs::new();
    loop {
        let more = match sys::GET_SUBVOL_ROOTREF.call(dir, &mut refs) {
            Ok(()) => false,
            // At most 255 refs per call; the kernel advanced min_treeid to resume from.
            Err(e) if e.raw_os_error() == Some(libc::EOVERFLOW) => true,
            Err(e) => return Err(e),
        };
        let count = usize::from(refs.num_items).min(refs.rootref.len());
        for r in &refs.rootref[..count] {
            found.push(child_path(dir, r.treeid, r.dirid)?);
        }
        if !more || count == 0 {
            return Ok(found);
        }
    }
}

/// The path of child subvolume `treeid` (whose entry is in directory `dirid`) relative
/// to `dir`, the root directory of its parent subvolume.
fn child_path(dir: &File, treeid: u64, dirid: u64) -> io::Result<PathBuf> {
    let mut args = sys::InoLookupUserArgs::new();
    args.treeid = treeid;
    args.dirid = dirid;
    sys::INO_LOOKUP_USER.call(dir, &mut args)?;
    // `path` is the directory, empty or ending in '/'; `name` is the entry in it.
    let mut rel = c_bytes(&args.path).to_vec();
    rel.extend_from_slice(c_bytes(&args.name));
    Ok(PathBuf::from(OsStr::from_bytes(&rel)))
}

/// Opens directory `rel` below `dir` without following symlinks, leaving `dir`, or
/// crossing a mount point (subvolume boundaries are not mount points).
fn open_beneath(dir: &File, rel: &Path) -> io::Result<File> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let fd = nix::fcntl::openat2(dir.as_raw_fd(), rel, how)?;
    // SAFETY: openat2 just returned `fd` as a new open descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn get_flags(dir: &File) -> io::Result<u64> {
    let mut flags = 0u64;
    sys::SUBVOL_GETFLAGS.call(dir, &mut flags)?;
    Ok(flags)
}

fn set_readonly_fd(dir: &File, readonly: bool) -> io::Result<()> {
    let flags = get_flags(dir)?;
    let mut wanted = if readonly {
        flags | sys::SUBVOL_RDONLY
    } else {
        flags & !sys::SUBVOL_RDONLY
    };
    if wanted == flags {
        return Ok(());
    }
    sys::SUBVOL_SETFLAGS.call(dir, &mut wanted)
}

fn open_dir(op: &'static str, path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| err(op, path, e))
}

/// Splits `path` into the directory to run the ioctl on and the entry name in it.
fn split_parent<'a>(op: &'static str, path: &'a Path) -> Result<(&'a Path, &'a OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if parent.as_os_str().is_empty() => Ok((Path::new("."), name)),
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(err(
            op,
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path must end in a file name"),
        )),
    }
}

/// Copies `name` into a NUL-terminated ioctl name buffer.
fn copy_name(buf: &mut [u8], name: &OsStr) -> io::Result<()> {
    let bytes = name.as_bytes();
    // Btrfs names are at most 255 bytes, well below every buffer here.
    if bytes.len() > 255 || bytes.len() >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    if bytes.is_empty() || bytes.contains(&0) || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid subvolume name",
        ));
    }
    buf.fill(0);
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

/// The bytes of a NUL-terminated buffer, up to (not including) the first NUL.
fn c_bytes(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

fn err(op: &'static str, path: &Path, source: io::Error) -> BtrfsError {
    BtrfsError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn not_a_subvolume(op: &'static str, path: &Path) -> BtrfsError {
    err(
        op,
        path,
        io::Error::new(io::ErrorKind::InvalidInput, "not a Btrfs subvolume"),
    )
}

/// The kernel ABI from `linux/btrfs.h`.
mod sys {
    use super::*;

    const BTRFS_IOCTL_MAGIC: u8 = 0x94;
    pub const SUBVOL_RDONLY: u64 = 1 << 1;

    /// `struct btrfs_ioctl_vol_args`
    #[repr(C)]
    pub struct VolArgs {
        pub fd: i64,
        pub name: [u8; 4088],
    }

    /// `struct btrfs_ioctl_vol_args_v2`. The C struct's unions are flattened to the
    /// members used here: `unused` covers {size, qgroup_inherit}, `name` covers
    /// {devid, subvolid}.
    #[repr(C)]
    pub struct VolArgsV2 {
        pub fd: i64,
        pub transid: u64,
        pub flags: u64,
        pub unused: [u64; 4],
        pub name: [u8; 4040],
    }

    /// One entry of `btrfs_ioctl_get_subvol_rootref_args.rootref`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RootRef {
        pub treeid: u64,
        pub dirid: u64,
    }

    /// `struct btrfs_ioctl_get_subvol_rootref_args`
    #[repr(C)]
    pub struct RootrefArgs {
        pub min_treeid: u64,
        pub rootref: [RootRef; 255],
        pub num_items: u8,
        pub align: [u8; 7],
    }

    /// `struct btrfs_ioctl_ino_lookup_user_args`
    #[repr(C)]
    pub struct InoLookupUserArgs {
        pub dirid: u64,
        pub treeid: u64,
        pub name: [u8; 256],
        pub path: [u8; 3824],
    }

    impl VolArgs {
        pub fn new() -> Self {
            VolArgs {
                fd: 0,
                name: [0; 4088],
            }
        }
    }

    impl VolArgsV2 {
        pub fn new() -> Self {
            VolArgsV2 {
                fd: 0,
                transid: 0,
                flags: 0,
                unused: [0; 4],
                name: [0; 4040],
            }
        }
    }

    impl RootrefArgs {
        pub fn new() -> Self {
            RootrefArgs {
                min_treeid: 0,
                rootref: [RootRef {
                    treeid: 0,
                    dirid: 0,
                }; 255],
                num_items: 0,
                align: [0; 7],
            }
        }
    }

    impl InoLookupUserArgs {
        pub fn new() -> Self {
            InoLookupUserArgs {
                dirid: 0,
                treeid: 0,
                name: [0; 256],
                path: [0; 3824],
            }
        }
    }

    /// An ioctl request bound to the one argument type it takes, so that [`Request::call`]
    /// can be safe: the request code encodes `size_of::<T>()` and each constant below is
    /// declared with the type its C definition names.
    pub struct Request<T> {
        pub code: ioctl_num_type,
        arg: PhantomData<fn(&mut T)>,
    }

    impl<T> Request<T> {
        const fn write(nr: u8) -> Self {
            Request {
                code: nix::request_code_write!(BTRFS_IOCTL_MAGIC, nr, std::mem::size_of::<T>()),
                arg: PhantomData,
            }
        }
        const fn read(nr: u8) -> Self {
            Request {
                code: nix::request_code_read!(BTRFS_IOCTL_MAGIC, nr, std::mem::size_of::<T>()),
                arg: PhantomData,
            }
        }
        const fn readwrite(nr: u8) -> Self {
            Request {
                code: nix::request_code_readwrite!(BTRFS_IOCTL_MAGIC, nr, std::mem::size_of::<T>()),
                arg: PhantomData,
            }
        }

        pub fn call(&self, fd: &File, arg: &mut T) -> io::Result<()> {
            // SAFETY: `fd` is an open descriptor borrowed for the whole call, and `arg` is
            // an exclusive reference to a live `#[repr(C)]` value of exactly the type (and
            // so the size) the kernel reads and writes for `self.code`.
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), self.code, arg as *mut T) };
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    }

    pub const SUBVOL_CREATE: Request<VolArgs> = Request::write(14);
    pub const SNAP_DESTROY: Request<VolArgs> = Request::write(15);
    pub const SNAP_CREATE_V2: Request<VolArgsV2> = Request::write(23);
    pub const SUBVOL_GETFLAGS: Request<u64> = Request::read(25);
    pub const SUBVOL_SETFLAGS: Request<u64> = Request::write(26);
    pub const GET_SUBVOL_ROOTREF: Request<RootrefArgs> = Request::readwrite(61);
    pub const INO_LOOKUP_USER: Request<InoLookupUserArgs> = Request::readwrite(62);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn ioctl_structs_match_linux_btrfs_h() {
        assert_eq!(size_of::<sys::VolArgs>(), 4096);
        assert_eq!(size_of::<sys::VolArgsV2>(), 4096);
        assert_eq!(offset_of!(sys::VolArgsV2, flags), 16);
        assert_eq!(offset_of!(sys::VolArgsV2, name), 56);
        assert_eq!(align_of::<sys::VolArgsV2>(), 8);
        assert_eq!(size_of::<sys::RootrefArgs>(), 4096);
        assert_eq!(offset_of!(sys::RootrefArgs, num_items), 4088);
        assert_eq!(size_of::<sys::InoLookupUserArgs>(), 4096);
        assert_eq!(offset_of!(sys::InoLookupUserArgs, path), 272);
    }

    #[test]
    fn ioctl_numbers_match_linux_btrfs_h() {
        // Values printed by a C program including <linux/btrfs.h> on x86_64.
        assert_eq!(sys::SUBVOL_CREATE.code, 0x5000_940e);
        assert_eq!(sys::SNAP_DESTROY.code, 0x5000_940f);
        assert_eq!(sys::SNAP_CREATE_V2.code, 0x5000_9417);
        assert_eq!(sys::SUBVOL_GETFLAGS.code, 0x8008_9419);
        assert_eq!(sys::SUBVOL_SETFLAGS.code, 0x4008_941a);
        assert_eq!(sys::GET_SUBVOL_ROOTREF.code, 0xd000_943d);
        assert_eq!(sys::INO_LOOKUP_USER.code, 0xd000_943e);
    }

    #[test]
    fn paths_split_into_parent_and_name() {
        let (p, n) = split_parent("t", Path::new("/srv/osm-lxc/lxc/containers/c1")).unwrap();
        assert_eq!(
            (p, n),
            (Path::new("/srv/osm-lxc/lxc/containers"), OsStr::new("c1"))
        );
        let (p, n) = split_parent("t", Path::new("c1")).unwrap();
        assert_eq!((p, n), (Path::new("."), OsStr::new("c1")));
        let (p, n) = split_parent("t", Path::new("/a/b/")).unwrap();
        assert_eq!((p, n), (Path::new("/a"), OsStr::new("b")));
        for bad in ["/", "/a/..", ".."] {
            assert!(split_parent("t", Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_copied_nul_terminated_and_checked() {
        let mut buf = [0xffu8; 4088];
        copy_name(&mut buf, OsStr::new("snapshot")).unwrap();
        assert_eq!(c_bytes(&buf), b"snapshot");
        assert_eq!(buf[8], 0);
        assert!(copy_name(&mut buf, OsStr::new(&"x".repeat(256))).is_err());
        assert!(copy_name(&mut buf, OsStr::new("")).is_err());
        assert!(copy_name(&mut buf, OsStr::from_bytes(b"a\0b")).is_err());
        copy_name(&mut buf, OsStr::new(&"x".repeat(255))).unwrap();
    }

    #[test]
    fn c_bytes_stops_at_nul_or_end() {
        assert_eq!(c_bytes(b"ab\0cd"), b"ab");
        assert_eq!(c_bytes(b"abc"), b"abc");
        assert_eq!(c_bytes(b"\0"), b"");
    }

    #[test]
    fn errors_name_operation_and_path() {
        let e = not_a_subvolume("delete subvolume", Path::new("/srv/x"));
        assert_eq!(
            e.to_string(),
            "delete subvolume /srv/x: not a Btrfs subvolume"
        );
    }
}
