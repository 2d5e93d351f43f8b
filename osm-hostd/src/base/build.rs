//! Building a root filesystem from a recipe: debootstrap, then the recipe's files, units
//! and removals, then a cache archive so the next build of the same recipe is an unpack.

use super::archive::{extract_archive, write_tar_zst};
use super::rootfs::Rootfs;
use super::{BaseError, Recipe, Tail};
use nix::fcntl::OFlag;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

const DEBOOTSTRAP: &str = "/usr/sbin/debootstrap";
const DEBOOTSTRAP_SCRIPTS: &str = "/usr/share/debootstrap/scripts";
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

/// Turns debootstrap's `I:` lines into a monotonic fraction. debootstrap does not say how
/// many packages it will fetch, so the download phase is measured against an estimate;
/// later phases are measured against the number actually downloaded.
pub(crate) struct DebootstrapProgress {
    expected: usize,
    downloaded: usize,
    extracted: usize,
    installed: usize,
    fraction: f64,
}

impl DebootstrapProgress {
    pub(crate) fn new(recipe: &Recipe) -> Self {
        // bookworm minbase is ~90 packages; each included package brings a few more.
        let expected = 90 + 4 * recipe.include.len();
        DebootstrapProgress {
            expected,
            downloaded: 0,
            extracted: 0,
            installed: 0,
            fraction: 0.0,
        }
    }

    /// The new fraction and a message for one output line, or `None` for lines that are
    /// not progress (warnings, wget chatter).
    pub(crate) fn line(&mut self, line: &str) -> Option<(f64, String)> {
        let rest = line.trim_end().strip_prefix("I: ")?;
        let msg = rest.trim_end_matches("...").trim_end().to_string();
        let (verb, object) = rest.split_once(' ').unwrap_or((rest, ""));
        let object = object.trim_end_matches("...").trim();
        let target = match verb {
            "Retrieving" | "Validating" if !object.contains(' ') => Some(0.03), // Release, Packages
            "Validating" => {
                self.downloaded += 1;
                Some(0.05 + 0.35 * ratio(self.downloaded, self.expected))
            }
            "Retrieving" => None,
            "Checking" | "Valid" | "Resolving" | "Found" => Some(0.05),
            "Chosen" => Some(0.40),
            "Extracting" => {
                self.extracted += 1;
                // Roughly 70% of the packages are "required" and get extracted.
                let required = (self.downloaded.max(1) * 7).div_ceil(10);
                Some(0.40 + 0.10 * ratio(self.extracted, required))
            }
            "Installing" => Some(0.50),
            "Unpacking" | "Configuring"
                if !matches!(object, "required packages" | "the base system") =>
            {
                self.installed += 1;
                Some(0.50 + 0.49 * ratio(self.installed, 2 * self.downloaded.max(1)))
            }
            "Base" if rest.starts_with("Base system installed successfully") => Some(1.0),
            _ => None,
        };
        if let Some(t) = target {
            self.fraction = self.fraction.max(t);
        }
        Some((self.fraction, msg))
    }
}

fn ratio(n: usize, of: usize) -> f64 {
    (n as f64 / of.max(1) as f64).min(1.0)
}

/// The debootstrap command line for `recipe` into `dest`, after checking debootstrap is
/// installed and knows the suite.
fn debootstrap_command(recipe: &Recipe, dest: &Path) -> Result<Command, BaseError> {
    if !Path::new(DEBOOTSTRAP).exists() {
        return Err(BaseError::MissingTool {
            tool: DEBOOTSTRAP.into(),
            package: "debootstrap".into(),
        });
    }
    let script = Path::new(DEBOOTSTRAP_SCRIPTS).join(&recipe.suite);
    if !script.exists() {
        return Err(BaseError::InvalidRecipe(format!(
            "debootstrap on this host does not know suite {:?} (no {}); use a suite it knows \
             or upgrade debootstrap",
            recipe.suite,
            script.display()
        )));
    }
    let mut cmd = Command::new(DEBOOTSTRAP);
    if recipe.variant != "default" {
        cmd.arg(format!("--variant={}", recipe.variant));
    }
    cmd.arg(format!("--components={}", recipe.components.join(",")));
    if !recipe.include.is_empty() {
        cmd.arg(format!("--include={}", recipe.include.join(",")));
    }
    cmd.arg(&recipe.suite).arg(dest).arg(&recipe.mirror);
    allow_devices_in(&mut cmd, dest)?;
    child_env(&mut cmd);
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    for var in ["http_proxy", "https_proxy", "no_proxy"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    Ok(cmd)
}

fn run_debootstrap(
    recipe: &Recipe,
    dest: &Path,
    progress: &mut dyn FnMut(f64, &str),
) -> Result<(), BaseError> {
    let mut cmd = debootstrap_command(recipe, dest)?;
    // One pipe for stdout and stderr keeps the two in order for the error's tail. CLOEXEC
    // so children spawned by other threads do not hold the write end open.
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| BaseError::io("creating a pipe for debootstrap", std::io::Error::from(e)))?;
    let write_clone = write_end
        .try_clone()
        .map_err(|e| BaseError::io("creating a pipe for debootstrap", e))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::from(write_clone));
    let mut child = cmd
        .spawn()
        .map_err(|e| BaseError::tool_missing_or_io(DEBOOTSTRAP, "debootstrap", e))?;
    drop(cmd); // closes our copies of the write end, so the read loop sees EOF

    let mut parser = DebootstrapProgress::new(recipe);
    let mut tail = Tail::new(30);
    progress(0.0, "starting debootstrap");
    let mut reader = BufReader::new(File::from(read_end));
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        tail.push(&buf);
        let line = String::from_utf8_lossy(&buf);
        if let Some((f, msg)) = parser.line(&line) {
            progress(f, &msg);
        }
    }
    let status = child
        .wait()
        .map_err(|e| BaseError::io("waiting for debootstrap", e))?;
    if !status.success() {
        let log = dest.join("debootstrap/debootstrap.log");
        let log = if log.exists() {
            log.display().to_string()
        } else {
            format!("{} (not written)", log.display())
        };
        return Err(BaseError::Debootstrap {
            suite: recipe.suite.clone(),
            status: status.to_string(),
            log,
            output: tail.text(),
        });
    }
    progress(1.0, "debootstrap finished");
    Ok(())
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

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Removes the temporary file unless the rename into place happened.
struct TmpGuard(Option<PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub(crate) fn write_cache(
    dest: &Path,
    cache_dir: &Path,
    key: &str,
    progress: &mut dyn FnMut(f64),
) -> Result<(), BaseError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cache_dir)
        .map_err(|e| {
            BaseError::io(
                format!("creating the cache directory {}", cache_dir.display()),
                e,
            )
        })?;
    // Cached images hold whole systems (and set-id binaries): only root may read them.
    std::fs::set_permissions(cache_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| BaseError::io(format!("setting the mode of {}", cache_dir.display()), e))?;
    remove_stale_tmp_files(cache_dir);

    let final_path = cache_dir.join(format!("{key}.tar.zst"));
    let tmp_path = cache_dir.join(format!(
        "{key}.tar.zst.tmp-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp_path)
        .map_err(|e| BaseError::io(format!("creating {}", tmp_path.display()), e))?;
    let mut guard = TmpGuard(Some(tmp_path.clone()));
    write_tar_zst(dest, &mut file, tree_size(dest), progress)?;
    drop(file);
    std::fs::rename(&tmp_path, &final_path).map_err(|e| {
        BaseError::io(
            format!("moving the cache archive to {}", final_path.display()),
            e,
        )
    })?;
    guard.0 = None;
    File::open(cache_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BaseError::io(format!("flushing {}", cache_dir.display()), e))?;
    Ok(())
}

/// `<key>.tar.zst.tmp-<pid>-<n>` files left by a build that died (its pid is gone).
fn remove_stale_tmp_files(cache_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((_, suffix)) = name.split_once(".tar.zst.tmp-") else {
            continue;
        };
        let Some(pid) = suffix.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Approximate size of the uncompressed tar of `root` (file data plus a header per entry),
/// for progress only; never follows symlinks.
fn tree_size(root: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(md) = entry.metadata() else { continue };
            total += 512;
            if md.is_dir() {
                stack.push(entry.path());
            } else if md.is_file() && md.nlink() == 1 {
                total += md.len().div_ceil(512) * 512;
            } else if md.is_file() {
                // Hard links are stored once; count an equal share per name.
                total += md.len().div_ceil(512) * 512 / md.nlink();
            }
        }
    }
    total.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
I: Target architecture can be executed
I: Retrieving InRelease 
I: Checking Release signature
I: Valid Release signature (key id 4D64FEC119C2029067D6E791F8D2585B8783D481)
I: Retrieving Packages 
I: Validating Packages 
I: Resolving dependencies of required packages...
I: Resolving dependencies of base packages...
I: Checking component main on http://deb.debian.org/debian...
I: Retrieving adduser 3.134
I: Validating adduser 3.134
I: Retrieving apt 2.6.1
I: Validating apt 2.6.1
I: Retrieving zlib1g 1:1.2.13.dfsg-1
I: Validating zlib1g 1:1.2.13.dfsg-1
I: Chosen extractor for .deb packages: dpkg-deb
I: Extracting adduser...
I: Extracting zlib1g...
I: Installing core packages...
I: Unpacking required packages...
I: Unpacking adduser...
I: Configuring required packages...
I: Configuring adduser...
W: some warning
I: Unpacking the base system...
I: Unpacking apt...
I: Unpacking zlib1g...
I: Configuring the base system...
I: Configuring apt...
I: Configuring zlib1g...
I: Base system installed successfully.
";

    #[test]
    fn debootstrap_progress_is_monotonic_and_ends_at_one() {
        let recipe = Recipe::parse("suite = \"bookworm\"").unwrap();
        let mut p = DebootstrapProgress::new(&recipe);
        let mut last = 0.0;
        let mut seen = Vec::new();
        for line in SAMPLE.lines() {
            if let Some((f, msg)) = p.line(line) {
                assert!(f >= last, "{line:?} went back from {last} to {f}");
                assert!((0.0..=1.0).contains(&f));
                last = f;
                seen.push((f, msg));
            } else {
                assert!(!line.starts_with("I: "), "{line:?} ignored");
            }
        }
        assert_eq!(last, 1.0);
        assert!(seen.iter().any(|(_, m)| m == "Extracting adduser"));
        assert!(seen.iter().any(|(_, m)| m == "Retrieving apt 2.6.1"));
        // The download of 3 of an expected 90 packages is early, not half way.
        let after_download = seen
            .iter()
            .find(|(_, m)| m.starts_with("Chosen"))
            .unwrap()
            .0;
        assert!((0.39..=0.41).contains(&after_download), "{after_download}");
        let before_done = seen[seen.len() - 2].0;
        assert!(before_done > 0.9 && before_done < 1.0, "{before_done}");
    }

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

    #[test]
    fn stale_tmp_files_of_dead_builds_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let dead = t.path().join("k.tar.zst.tmp-4000000000-0");
        let live = t
            .path()
            .join(format!("k.tar.zst.tmp-{}-0", std::process::id()));
        let other = t.path().join("k.tar.zst");
        for p in [&dead, &live, &other] {
            std::fs::write(p, "").unwrap();
        }
        remove_stale_tmp_files(t.path());
        assert!(!dead.exists() && live.exists() && other.exists());
    }
}
