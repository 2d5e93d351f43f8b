//! Building a root filesystem from a recipe: debootstrap, then the recipe's files, units
//! and removals, then a cache archive so the next build of the same recipe is an unpack.
//!
//! This file holds the build's sequence and the changes inside the image;
//! `debootstrap.rs` runs debootstrap and reads its progress; `cache.rs` writes the
//! cache archive (shared with layer builds).

mod cache;
mod debootstrap;

pub(crate) use cache::write_cache;
use debootstrap::run_debootstrap;

use super::archive::extract_archive;
use super::rootfs::Rootfs;
use super::{BaseError, Recipe};
use std::fs::{DirBuilder, File};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

const CHROOT: &str = "/usr/sbin/chroot";
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

// Shares of the whole build in the progress fraction (measured: debootstrap dominates).
const DEBOOTSTRAP_END: f64 = 0.80;
const CUSTOMIZE_END: f64 = 0.83;

/// Keeps the reported fraction monotonic across phases.
struct Reporter<'a> {
    inner: &'a mut dyn FnMut(f64, &str),
    last: f64,
}

impl Reporter<'_> {
    fn at(&mut self, fraction: f64, msg: &str) {
        self.last = fraction.clamp(0.0, 1.0).max(self.last);
        (self.inner)(self.last, msg);
    }
}

/// Fills the empty directory `dest` with the recipe's root filesystem, reusing
/// `cache_dir/<cache_key>.tar.zst` when present and writing it when not.
/// `progress(fraction 0..1, what is happening)` is called as work proceeds.
///
/// Needs root. `dest` is created if missing and must otherwise be empty. On failure `dest`
/// is left as it is (the caller deletes it; a failed debootstrap's log is inside it) and no
/// cache file is written.
pub fn build_rootfs(
    recipe: &Recipe,
    dest: &Path,
    cache_dir: &Path,
    progress: &mut dyn FnMut(f64, &str),
) -> Result<(), BaseError> {
    let mut rep = Reporter {
        inner: progress,
        last: 0.0,
    };
    prepare_dest(dest)?;
    let key = recipe.cache_key();
    let cached = cache_dir.join(format!("{key}.tar.zst"));
    if cached.is_file() {
        const MSG: &str = "unpacking the cached base image";
        rep.at(0.0, MSG);
        let mut file = File::open(&cached).map_err(|e| {
            BaseError::io(
                format!("opening the cached base image {}", cached.display()),
                e,
            )
        })?;
        return match extract_archive(&mut file, dest, &mut |f| rep.at(f, MSG)) {
            Ok(()) => {
                rep.at(1.0, "base image unpacked from the cache");
                Ok(())
            }
            Err(e) if e.is_no_space() => Err(e),
            Err(e) => Err(BaseError::Failed(format!(
                "unpacking the cached base image {} failed: {e}; if the cache file is damaged, \
                 delete it and build again",
                cached.display()
            ))),
        };
    }

    run_debootstrap(recipe, dest, &mut |f, m| rep.at(f * DEBOOTSTRAP_END, m))?;
    customize(recipe, dest, &mut rep)?;
    write_cache(dest, cache_dir, &key, &mut |f| {
        rep.at(
            CUSTOMIZE_END + f * (1.0 - CUSTOMIZE_END),
            "writing the cache archive",
        )
    })?;
    rep.at(1.0, "base image built");
    Ok(())
}

fn prepare_dest(dest: &Path) -> Result<(), BaseError> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirBuilder::new()
            .mode(0o755)
            .create(dest)
            .map_err(|e| BaseError::io(format!("creating {}", dest.display()), e)),
        Err(e) => Err(BaseError::io(format!("inspecting {}", dest.display()), e)),
        Ok(md) if !md.is_dir() => Err(BaseError::Failed(format!(
            "{} is not a directory; give an empty directory for the root filesystem",
            dest.display()
        ))),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dest)
                .map_err(|e| BaseError::io(format!("listing {}", dest.display()), e))?;
            if entries.next().is_some() {
                return Err(BaseError::Failed(format!(
                    "{} is not empty; a base image is built into an empty directory",
                    dest.display()
                )));
            }
            Ok(())
        }
    }
}

fn child_env(cmd: &mut Command) {
    cmd.env_clear()
        .env("PATH", PATH)
        .env("LC_ALL", "C")
        .env("HOME", "/root");
}

fn customize(recipe: &Recipe, dest: &Path, rep: &mut Reporter<'_>) -> Result<(), BaseError> {
    let start = DEBOOTSTRAP_END;
    let step = (CUSTOMIZE_END - start) / 4.0;
    // The image root is `/` of every container: root-owned 0755 whatever `dest` was.
    nix::unistd::chown(
        dest,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(0)),
    )
    .map_err(|e| BaseError::io(format!("chowning {}", dest.display()), e.into()))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| BaseError::io(format!("setting the mode of {}", dest.display()), e))?;
    let fs = Rootfs::open(dest)?;

    rep.at(start, "writing the recipe's files");
    for f in &recipe.files {
        fs.write_file(&f.path, f.content.as_bytes(), f.mode)?;
    }

    rep.at(start + step, "enabling the recipe's units");
    if !recipe.enable.is_empty() {
        enable_units(&fs, dest, &recipe.enable)?;
    }

    rep.at(start + 2.0 * step, "removing the recipe's paths");
    for p in &recipe.remove {
        fs.remove(p)?;
    }

    rep.at(start + 3.0 * step, "cleaning apt caches");
    fs.remove_children("/var/cache/apt/archives", |n| n.ends_with(".deb"))?;
    fs.remove_children("/var/cache/apt/archives/partial", |_| true)?;
    fs.remove_children("/var/cache/apt", |n| n.ends_with(".bin"))?;
    fs.remove_children("/var/lib/apt/lists", |_| true)?;
    rep.at(CUSTOMIZE_END, "image customized");
    Ok(())
}

/// Runs `cmd` in a mount namespace of its own where `dir` is a bind mount of itself
/// without `nodev` and `nosuid`. The store is mounted `nosuid,nodev` (a customer's files
/// must not act on the host), but debootstrap refuses a target where it cannot open the
/// device nodes it makes. Only the build's own process tree sees the difference, and it
/// ends with it: nothing is mounted in the daemon's namespace.
fn allow_devices_in(cmd: &mut Command, dir: &Path) -> Result<(), BaseError> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        BaseError::io(
            "a build path with a NUL byte",
            std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    let root = c"/";
    // SAFETY: the closure runs between fork and exec and makes only the unshare(2) and
    // mount(2) system calls on C strings prepared before the fork; it allocates nothing
    // and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                path.as_ptr(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            // A remount of the bind with no flags clears nodev/nosuid on it alone.
            check(libc::mount(
                std::ptr::null(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_BIND,
                std::ptr::null(),
            ))
        });
    }
    Ok(())
}

/// `systemctl enable` inside the image: it sees it is in a chroot and only creates the
/// `[Install]` symlinks, which is all a build needs (no running systemd required).
fn enable_units(fs: &Rootfs, dest: &Path, units: &[String]) -> Result<(), BaseError> {
    if !fs.exists("/usr/bin/systemctl") && !fs.exists("/bin/systemctl") {
        return Err(BaseError::InvalidRecipe(
            "the recipe enables units but the image has no systemctl; add systemd (or \
             systemd-sysv) to include, or drop enable"
                .into(),
        ));
    }
    let mut cmd = Command::new(CHROOT);
    cmd.arg(dest)
        .args(["systemctl", "enable", "--"])
        .args(units);
    allow_devices_in(&mut cmd, dest)?;
    child_env(&mut cmd);
    cmd.env("SYSTEMD_OFFLINE", "1").stdin(Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| BaseError::tool_missing_or_io(CHROOT, "coreutils", e))?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(BaseError::Command {
            what: format!(
                "systemctl enable {} failed in the image at {}; check the unit names exist in \
                 the image (a package in include must ship them)",
                units.join(" "),
                dest.display()
            ),
            status: out.status.to_string(),
            output: text.trim_end().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn prepare_dest_refuses_non_empty_and_creates_missing() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("new");
        prepare_dest(&missing).unwrap();
        assert!(missing.is_dir());
        prepare_dest(&missing).unwrap();
        std::fs::write(missing.join("x"), "").unwrap();
        let e = prepare_dest(&missing).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        let e = prepare_dest(&missing.join("x")).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
    }
}
