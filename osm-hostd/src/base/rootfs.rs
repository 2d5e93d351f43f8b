//! Changes inside a root filesystem being built, with the image as the root of every path
//! lookup (`openat2(RESOLVE_IN_ROOT)`).
//!
//! Images are full of absolute symlinks (`/var/run -> /run`, `/etc/resolv.conf ->
//! ../run/...`); joining paths onto the host directory would follow them onto the host.
//! Resolving in root makes `/var/run/x` mean the image's `/run/x`, as it will in the
//! container. The last component is never followed: files replace it by rename, removals
//! unlink the link itself.

use super::BaseError;
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, renameat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{fchown, fchownat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

pub(crate) struct Rootfs {
    root: OwnedFd,
    host_path: PathBuf,
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open call and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// `/a/b/c` (validated by the recipe: absolute, no `.`/`..`/empty parts) → (`a/b`, `c`).
fn split(path: &str) -> (&str, &str) {
    let rel = path.trim_start_matches('/');
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

impl Rootfs {
    pub(crate) fn open(host_path: &Path) -> Result<Rootfs, BaseError> {
        let fd = openat(
            None,
            host_path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            BaseError::io(
                format!("opening the image at {}", host_path.display()),
                io(e),
            )
        })?;
        Ok(Rootfs {
            root: owned(fd),
            host_path: host_path.to_path_buf(),
        })
    }

    fn what(&self, verb: &str, path: &str) -> String {
        format!("{verb} {path} in the image at {}", self.host_path.display())
    }

    fn open_in_root(&self, rel: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(self.root.as_raw_fd(), rel, how).map(owned)
    }

    /// The directory `rel` (relative to the image root), created root-owned 0755 with its
    /// parents when `create`; `None` when it is missing and not `create`.
    fn dir(&self, rel: &str, create: bool, for_path: &str) -> Result<Option<OwnedFd>, BaseError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let mut cur = self
            .open_in_root(Path::new(""), flags)
            .map_err(|e| BaseError::io(self.what("opening the root for", for_path), io(e)))?;
        let mut prefix = PathBuf::new();
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            prefix.push(comp);
            let next = match self.open_in_root(&prefix, flags) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    match mkdirat(Some(cur.as_raw_fd()), comp, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(BaseError::io(
                                self.what("creating a parent of", for_path),
                                io(e),
                            ))
                        }
                    }
                    fchownat(
                        Some(cur.as_raw_fd()),
                        comp,
                        Some(Uid::from_raw(0)),
                        Some(Gid::from_raw(0)),
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| {
                        BaseError::io(self.what("chowning a parent of", for_path), io(e))
                    })?;
                    self.open_in_root(&prefix, flags).map_err(|e| {
                        BaseError::io(self.what("opening a parent of", for_path), io(e))
                    })?
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ENOTDIR) => {
                    return Err(BaseError::Failed(format!(
                        "cannot place {for_path} in the image at {}: /{} is not a directory there; \
                         fix the recipe path",
                        self.host_path.display(),
                        prefix.display()
                    )))
                }
                Err(e) => {
                    return Err(BaseError::io(
                        self.what("opening a parent of", for_path),
                        io(e),
                    ))
                }
            };
            cur = next;
        }
        Ok(Some(cur))
    }

    /// Writes `content` to `path` (absolute inside the image), root-owned with exactly
    /// `mode`, replacing whatever file or symlink was there. Parents are created.
    pub(crate) fn write_file(
        &self,
        path: &str,
        content: &[u8],
        mode: u32,
    ) -> Result<(), BaseError> {
        let (parent_rel, name) = split(path);
        let parent = self.dir(parent_rel, true, path)?.expect("created");
        let tmp = format!(".osm-host-tmp-{}", std::process::id());
        let pfd = Some(parent.as_raw_fd());
        match unlinkat(pfd, tmp.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(BaseError::io(
                    self.what("clearing a temporary file for", path),
                    io(e),
                ))
            }
        }
        let fd = openat(
            pfd,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| BaseError::io(self.what("creating", path), io(e)))?;
        let mut file = File::from(owned(fd));
        let written = (|| {
            file.write_all(content)?;
            // chown before chmod: chown clears set-id bits.
            fchown(
                file.as_raw_fd(),
                Some(Uid::from_raw(0)),
                Some(Gid::from_raw(0)),
            )
            .map_err(io)?;
            fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode)).map_err(io)?;
            Ok::<(), std::io::Error>(())
        })();
        drop(file);
        let renamed = written.and_then(|()| renameat(pfd, tmp.as_str(), pfd, name).map_err(io));
        if let Err(e) = renamed {
            let _ = unlinkat(pfd, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(BaseError::io(self.what("writing", path), e));
        }
        Ok(())
    }

    /// Deletes `path` (absolute inside the image): a file or link is unlinked (never
    /// followed), a directory removed with its contents. Returns false if it was absent.
    pub(crate) fn remove(&self, path: &str) -> Result<bool, BaseError> {
        let (parent_rel, name) = split(path);
        let Some(parent) = self.dir(parent_rel, false, path)? else {
            return Ok(false);
        };
        self.remove_at(&parent, name, path)
    }

    fn remove_at(&self, parent: &OwnedFd, name: &str, path: &str) -> Result<bool, BaseError> {
        let st = match fstatat(
            Some(parent.as_raw_fd()),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(BaseError::io(self.what("inspecting", path), io(e))),
        };
        if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() {
            // std's remove_dir_all never follows symlinks below the directory; the
            // /proc/self/fd path pins the already-resolved parent.
            let p = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name);
            std::fs::remove_dir_all(&p)
                .map_err(|e| BaseError::io(self.what("removing", path), e))?;
        } else {
            unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| BaseError::io(self.what("removing", path), io(e)))?;
        }
        Ok(true)
    }

    /// Deletes the entries of directory `dir` (absolute inside the image) whose names
    /// satisfy `select`; a missing directory is fine. Returns how many were removed.
    pub(crate) fn remove_children(
        &self,
        dir: &str,
        select: impl Fn(&str) -> bool,
    ) -> Result<usize, BaseError> {
        let Some(fd) = self.dir(dir.trim_start_matches('/'), false, dir)? else {
            return Ok(0);
        };
        let listing = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let entries =
            std::fs::read_dir(&listing).map_err(|e| BaseError::io(self.what("listing", dir), e))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| BaseError::io(self.what("listing", dir), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if select(name) {
                let path = format!("{}/{name}", dir.trim_end_matches('/'));
                if self.remove_at(&fd, name, &path)? {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// True if `path` (absolute inside the image) exists, following links inside the image.
    pub(crate) fn exists(&self, path: &str) -> bool {
        self.open_in_root(Path::new(path.trim_start_matches('/')), OFlag::O_PATH)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn split_paths() {
        assert_eq!(split("/etc/hostname"), ("etc", "hostname"));
        assert_eq!(split("/a/b/c"), ("a/b", "c"));
        assert_eq!(split("/x"), ("", "x"));
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_image() {
        // fchown to root needs root; the rest of the logic is covered by the root
        // integration test, so this unit test only runs its writes when it can.
        let outside = tempfile::tempdir().unwrap();
        let img = tempfile::tempdir().unwrap();
        std::fs::create_dir(img.path().join("run")).unwrap();
        std::fs::create_dir(img.path().join("var")).unwrap();
        // Would point at the host's directory if followed naively.
        symlink(outside.path(), img.path().join("var/run")).unwrap();
        symlink(outside.path().join("victim"), img.path().join("etc-link")).unwrap();
        std::fs::write(outside.path().join("victim"), "keep").unwrap();
        let fs = Rootfs::open(img.path()).unwrap();

        // Removing a symlink removes the link, not its target.
        assert!(fs.remove("/etc-link").unwrap());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("victim")).unwrap(),
            "keep"
        );
        assert!(!fs.remove("/etc-link").unwrap());
        assert!(!fs.remove("/no/such/dir/file").unwrap());

        if is_root() {
            // `var/run` -> <outside> is absolute, so in the image it means `<img>/<outside>`.
            let inside_dir = img.path().join(outside.path().strip_prefix("/").unwrap());
            std::fs::create_dir_all(&inside_dir).unwrap();
            fs.write_file("/var/run/x/y.conf", b"hello", 0o4750)
                .unwrap();
            assert!(std::fs::read_dir(outside.path())
                .unwrap()
                .all(|e| e.unwrap().file_name() == "victim"));
            let inside = inside_dir.join("x/y.conf");
            let md = std::fs::metadata(&inside).unwrap();
            assert_eq!(md.permissions().mode() & 0o7777, 0o4750);
            assert_eq!((md.uid(), md.gid()), (0, 0));
            assert_eq!(std::fs::read(&inside).unwrap(), b"hello");
        }
    }

    #[test]
    fn remove_children_selects_by_name() {
        let img = tempfile::tempdir().unwrap();
        let d = img.path().join("var/cache/apt/archives");
        std::fs::create_dir_all(d.join("partial")).unwrap();
        std::fs::write(d.join("a.deb"), "").unwrap();
        std::fs::write(d.join("lock"), "").unwrap();
        std::fs::write(d.join("partial/b.deb"), "").unwrap();
        let fs = Rootfs::open(img.path()).unwrap();
        assert_eq!(
            fs.remove_children("/var/cache/apt/archives", |n| n.ends_with(".deb"))
                .unwrap(),
            1
        );
        assert!(
            d.join("lock").exists()
                && d.join("partial/b.deb").exists()
                && !d.join("a.deb").exists()
        );
        assert_eq!(
            fs.remove_children("/var/cache/apt/archives", |_| true)
                .unwrap(),
            2
        );
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        assert_eq!(fs.remove_children("/no/such", |_| true).unwrap(), 0);
        assert!(fs.exists("/var/cache") && !fs.exists("/var/nothing"));
    }
}
