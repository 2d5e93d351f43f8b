//! Building a layer: the recipe runs in a chroot of a throwaway overlay (the base and lower
//! layers read-only below, a fresh upper that becomes the layer), then the upper is
//! cleaned of apt caches and logs and cached as `<cache_dir>/<key>.tar.zst`.
//!
//! Every step is one child process that makes its own private mount namespace
//! (`unshare --mount`), mounts the overlay, `proc`, `sys` (read-only), the host's `/dev`
//! and tmpfs on `/run` and `/tmp` there, and `chroot`s into it. Nothing is mounted in the
//! daemon's namespace, so a killed build leaves no mount behind. The build shares the
//! daemon's network namespace (apt needs the mirror) and the host's resolv.conf, copied
//! into the tmpfs `/run` where Debian's systemd-resolved symlink points. A policy-rc.d
//! keeps maintainer scripts from starting services during the build.

use crate::base::archive::extract_archive;
use crate::base::build::write_cache;
use crate::base::rootfs::Rootfs;
use crate::base::{BaseError, Tail};
use crate::layer::recipe::{LayerRecipe, SigningKey, TEMPLATE_DIR};
use nix::fcntl::OFlag;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const UNSHARE: &str = "/usr/bin/unshare";
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Mounts the build overlay in the caller's new mount namespace and chroots into it.
/// Arguments: merged lowerdir upperdir workdir, then the command to run in the image.
const ENTER_SCRIPT: &str = r#"set -eu
merged=$1; lower=$2; upper=$3; work=$4; shift 4
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work,index=off,metacopy=off,redirect_dir=off,xino=off" "$merged"
mount -t proc proc "$merged/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$merged/sys"
mount --rbind /dev "$merged/dev"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$merged/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$merged/tmp"
mkdir -p "$merged/run/systemd/resolve"
cat /etc/resolv.conf > "$merged/run/systemd/resolve/stub-resolv.conf"
cp "$merged/run/systemd/resolve/stub-resolv.conf" "$merged/run/systemd/resolve/resolv.conf"
exec chroot "$merged" "$@"
"#;

/// Writes stdin to `$1` with mode `$2` inside the image, creating parents (through the
/// image's own symlinks, e.g. `/lib` -> `usr/lib`).
const WRITE_SCRIPT: &str = r#"set -eu
mkdir -p "$(dirname "$1")"
cat > "$1.osm-new"
chmod "$2" "$1.osm-new"
mv -f "$1.osm-new" "$1"
"#;

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const POLICY_RC_D_TEXT: &str = "#!/bin/sh\n# osm-host layer build: no service starts.\nexit 101\n";

/// Renders the layer's templates at a container's first boot.
pub const RENDER_SCRIPT_PATH: &str = "/usr/lib/osm-host/render-templates";
const RENDER_SCRIPT: &str = r#"#!/bin/sh
# osm-host: renders this container's files from the templates of its layers, once.
set -eu
name=$(cat /proc/sys/kernel/hostname)
case "$name" in
    ""|*[!a-z0-9-]*) echo "container name $name is not usable in templates" >&2; exit 1 ;;
esac
cd /usr/lib/osm-host/templates
find . -type f | while IFS= read -r f; do
    dst="/${f#./}"
    mkdir -p "$(dirname "$dst")"
    sed "s/{{name}}/$name/g" "$f" > "$dst.osm-new"
    chmod --reference="$f" "$dst.osm-new"
    mv -f "$dst.osm-new" "$dst"
done
mkdir -p /var/lib/osm-host
touch /var/lib/osm-host/templates-rendered
"#;
pub const RENDER_UNIT_NAME: &str = "osm-host-templates.service";
const RENDER_UNIT: &str = "[Unit]
Description=Render this container's files from its layers' templates (osm-host)
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target
ConditionPathExists=!/var/lib/osm-host/templates-rendered

[Service]
Type=oneshot
ExecStart=/usr/lib/osm-host/render-templates
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target
";

/// Keeps the reported fraction monotonic.
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

/// Where a build runs: the lower directories (top-most first), the empty staging
/// subvolume that becomes the layer, and an empty directory to mount the overlay on.
///
/// overlayfs needs its upper and work directories on one filesystem, and Btrfs refuses
/// renames between subvolumes, so both live inside the staging subvolume
/// (`.osm-upper`, `.osm-work`); at the end the upper's entries move up to the
/// subvolume's root and the work directory goes.
pub struct BuildDirs<'a> {
    pub lowers: &'a [PathBuf],
    pub staging: &'a Path,
    pub mountpoint: &'a Path,
}

const UPPER: &str = ".osm-upper";
const WORK: &str = ".osm-work";

/// Fills the empty staging subvolume `dirs.staging` with the layer built from `recipe`
/// (keys resolved), reusing `cache_dir/<key>.tar.zst` when present and writing it when
/// not. Needs root. On failure the caller deletes the staging subvolume and mount point.
pub fn build_layer(
    recipe: &LayerRecipe,
    key: &str,
    dirs: &BuildDirs<'_>,
    cache_dir: &Path,
    progress: &mut dyn FnMut(f64, &str),
) -> Result<(), BaseError> {
    let upper = dirs.staging.join(UPPER);
    let work = dirs.staging.join(WORK);
    for d in [&upper, &work] {
        std::fs::create_dir(d)
            .map_err(|e| BaseError::io(format!("creating {}", d.display()), e))?;
    }
    std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| BaseError::io(format!("setting the mode of {}", upper.display()), e))?;
    fill_upper(recipe, key, dirs, &upper, &work, cache_dir, progress)?;
    std::fs::remove_dir_all(&work)
        .map_err(|e| BaseError::io(format!("removing {}", work.display()), e))?;
    hoist(&upper, dirs.staging)
}

/// Moves every entry of `upper` into `root` (its parent), then removes `upper`.
fn hoist(upper: &Path, root: &Path) -> Result<(), BaseError> {
    let entries = std::fs::read_dir(upper)
        .map_err(|e| BaseError::io(format!("listing {}", upper.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BaseError::io(format!("listing {}", upper.display()), e))?;
        let name = entry.file_name();
        let target = root.join(&name);
        if name == UPPER || name == WORK || target.symlink_metadata().is_ok() {
            return Err(BaseError::Failed(format!(
                "the layer has a top-level entry {:?}, which the build uses itself; do not \
                 create /{UPPER} or /{WORK} in a recipe",
                name
            )));
        }
        std::fs::rename(entry.path(), &target).map_err(|e| {
            BaseError::io(format!("moving {} into place", entry.path().display()), e)
        })?;
    }
    std::fs::remove_dir(upper)
        .map_err(|e| BaseError::io(format!("removing {}", upper.display()), e))
}

fn fill_upper(
    recipe: &LayerRecipe,
    key: &str,
    dirs: &BuildDirs<'_>,
    upper: &Path,
    work: &Path,
    cache_dir: &Path,
    progress: &mut dyn FnMut(f64, &str),
) -> Result<(), BaseError> {
    let mut rep = Reporter {
        inner: progress,
        last: 0.0,
    };
    let cached = cache_dir.join(format!("{key}.tar.zst"));
    if cached.is_file() {
        return unpack_cached(&cached, upper, &mut rep);
    }
    let b = Builder::new(dirs.lowers, upper, work, dirs.mountpoint)?;
    rep.at(0.01, "preparing the build");
    b.write(POLICY_RC_D, POLICY_RC_D_TEXT.as_bytes(), 0o755)?;
    write_sources(&b, recipe)?;
    if !recipe.packages.is_empty() {
        install_packages(&b, recipe, &mut rep)?;
    }
    rep.at(0.80, "writing the recipe's files");
    let enable = write_files(&b, recipe)?;
    run_commands(&b, recipe, &mut rep)?;
    if !enable.is_empty() {
        rep.at(0.85, "enabling units");
        let mut argv = vec!["systemctl", "enable", "--"];
        argv.extend(enable.iter().map(String::as_str));
        b.run(
            &argv,
            "systemctl enable (check the unit names exist in the image: a package in \
             packages or a file in files must ship them)",
            &mut |_| {},
        )?;
    }
    rep.at(0.87, "cleaning apt caches and logs");
    if !recipe.packages.is_empty() {
        b.run(&["apt-get", "clean"], "apt-get clean", &mut |_| {})?;
    }
    b.run(
        &["rm", "-f", "--", POLICY_RC_D],
        "removing policy-rc.d",
        &mut |_| {},
    )?;
    clean_upper(upper)?;
    write_cache(upper, cache_dir, key, &mut |f| {
        rep.at(0.90 + 0.10 * f, "writing the cache archive")
    })?;
    rep.at(1.0, "layer built");
    Ok(())
}

/// A layer built before from the same recipe over the same lowers: its cached archive
/// unpacked into `upper` instead of a build.
fn unpack_cached(cached: &Path, upper: &Path, rep: &mut Reporter<'_>) -> Result<(), BaseError> {
    const MSG: &str = "unpacking the cached layer";
    rep.at(0.0, MSG);
    let mut file = File::open(cached)
        .map_err(|e| BaseError::io(format!("opening the cached layer {}", cached.display()), e))?;
    match extract_archive(&mut file, upper, &mut |f| rep.at(f, MSG)) {
        Ok(()) => {
            rep.at(1.0, "layer unpacked from the cache");
            Ok(())
        }
        Err(e) if e.is_no_space() => Err(e),
        Err(e) => Err(BaseError::Failed(format!(
            "unpacking the cached layer {} failed: {e}; if the cache file is damaged, \
             delete it and build again",
            cached.display()
        ))),
    }
}

/// The recipe's extra apt sources: each one's keyring and deb822 list.
fn write_sources(b: &Builder, recipe: &LayerRecipe) -> Result<(), BaseError> {
    for s in &recipe.sources {
        let SigningKey::Armored(k) = &s.key else {
            return Err(BaseError::Failed(format!(
                "the key of source {} was not resolved before the build",
                s.name
            )));
        };
        b.write(&s.keyring_path(), k.as_bytes(), 0o644)?;
        b.write(&s.list_path(), s.deb822().as_bytes(), 0o644)?;
    }
    Ok(())
}

/// `apt-get update`, then `apt-get install` of the recipe's packages, with apt's own
/// progress mapped onto 10-80% of the build.
fn install_packages(
    b: &Builder,
    recipe: &LayerRecipe,
    rep: &mut Reporter<'_>,
) -> Result<(), BaseError> {
    rep.at(0.03, "apt-get update");
    b.run(&["apt-get", "update"], "apt-get update", &mut |_| {})?;
    rep.at(0.10, "installing packages");
    let mut argv: Vec<&str> = vec![
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        "--",
    ];
    argv.extend(recipe.packages.iter().map(String::as_str));
    let mut apt = AptProgress::default();
    b.run(&argv, "apt-get install", &mut |line| {
        if let Some((f, msg)) = apt.line(line) {
            rep.at(0.10 + 0.70 * f, &msg);
        }
    })
}

/// The recipe's files, and its templates with the unit that renders them at boot;
/// returns the units to enable (the recipe's, plus that unit when there are templates).
fn write_files(b: &Builder, recipe: &LayerRecipe) -> Result<Vec<String>, BaseError> {
    for f in &recipe.files {
        b.write(&f.path, f.content.as_bytes(), f.mode)?;
    }
    let mut enable: Vec<String> = recipe.enable.clone();
    if !recipe.templates.is_empty() {
        for t in &recipe.templates {
            b.write(
                &format!("{TEMPLATE_DIR}{}", t.path),
                t.content.as_bytes(),
                t.mode,
            )?;
        }
        b.write(RENDER_SCRIPT_PATH, RENDER_SCRIPT.as_bytes(), 0o755)?;
        b.write(
            &format!("/etc/systemd/system/{RENDER_UNIT_NAME}"),
            RENDER_UNIT.as_bytes(),
            0o644,
        )?;
        enable.push(RENDER_UNIT_NAME.to_string());
    }
    Ok(enable)
}

/// The recipe's `run` commands, in order, inside the image.
fn run_commands(
    b: &Builder,
    recipe: &LayerRecipe,
    rep: &mut Reporter<'_>,
) -> Result<(), BaseError> {
    for (i, argv) in recipe.run.iter().enumerate() {
        rep.at(0.82, &format!("running command {}", i + 1));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        b.run(
            &argv,
            &format!("run command {} ({})", i + 1, argv.join(" ")),
            &mut |_| {},
        )?;
    }
    Ok(())
}

/// Removes from the upper what the build left that is no part of the layer: apt's
/// downloaded lists and packages, its binary caches, logs of the build, and debconf's
/// backups. Deleting them from the upper lets the lower's version (if any) show again.
fn clean_upper(upper: &Path) -> Result<(), BaseError> {
    let fs = Rootfs::open(upper)?;
    fs.remove_children("/var/lib/apt/lists", |_| true)?;
    fs.remove_children("/var/cache/apt/archives", |n| n.ends_with(".deb"))?;
    fs.remove_children("/var/cache/apt/archives/partial", |_| true)?;
    fs.remove_children("/var/cache/apt", |n| n.ends_with(".bin"))?;
    fs.remove_children("/var/log/apt", |_| true)?;
    for log in [
        "/var/log/dpkg.log",
        "/var/log/alternatives.log",
        "/var/cache/debconf/config.dat-old",
        "/var/cache/debconf/templates.dat-old",
        "/var/lib/dpkg/status-old",
    ] {
        fs.remove(log)?;
    }
    Ok(())
}

struct Builder {
    lower: String,
    upper: String,
    work: String,
    merged: PathBuf,
}

fn overlay_path(what: &str, p: &Path) -> Result<String, BaseError> {
    let s = p
        .to_str()
        .ok_or_else(|| BaseError::Failed(format!("{what} {} is not UTF-8", p.display())))?;
    if s.contains([',', ':', '\\', '\n']) {
        return Err(BaseError::Failed(format!(
            "{what} {s} contains ',', ':' or '\\', which overlayfs options cannot carry; \
             use a store path without them"
        )));
    }
    Ok(s.to_string())
}

impl Builder {
    fn new(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        merged: &Path,
    ) -> Result<Builder, BaseError> {
        if lowers.is_empty() {
            return Err(BaseError::Failed("a layer needs a base below it".into()));
        }
        let lower = lowers
            .iter()
            .map(|l| overlay_path("lower directory", l))
            .collect::<Result<Vec<_>, _>>()?
            .join(":");
        std::fs::create_dir_all(merged)
            .map_err(|e| BaseError::io(format!("creating {}", merged.display()), e))?;
        Ok(Builder {
            lower,
            upper: overlay_path("upper directory", upper)?,
            work: overlay_path("work directory", work)?,
            merged: merged.to_path_buf(),
        })
    }

    fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new(UNSHARE);
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(ENTER_SCRIPT)
            .arg("osm-layer-build")
            .arg(&self.merged)
            .arg(&self.lower)
            .arg(&self.upper)
            .arg(&self.work)
            .args(argv);
        cmd.env_clear()
            .env("PATH", PATH)
            .env("LC_ALL", "C")
            .env("HOME", "/root")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("SYSTEMD_OFFLINE", "1");
        for var in ["http_proxy", "https_proxy", "no_proxy"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        // A build step dies with the daemon's thread that waits for it, so a daemon killed
        // mid-build leaves no apt writing into a staging subvolume the next start removes.
        // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
        // async-signal-safe; it allocates nothing and touches no lock.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        cmd
    }

    /// Writes a file into the image through the overlay.
    fn write(&self, path: &str, content: &[u8], mode: u32) -> Result<(), BaseError> {
        let mode = format!("{mode:o}");
        let mut cmd = self.command(&["/bin/sh", "-c", WRITE_SCRIPT, "osm-write", path, &mode]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| BaseError::tool_missing_or_io(UNSHARE, "util-linux", e))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let written = stdin.write_all(content);
        drop(stdin);
        let out = child
            .wait_with_output()
            .map_err(|e| BaseError::io(format!("writing {path} into the layer"), e))?;
        if !out.status.success() || written.is_err() {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            return Err(BaseError::Command {
                what: format!("writing {path} into the layer failed"),
                status: out.status.to_string(),
                output: text.trim_end().to_string(),
            });
        }
        Ok(())
    }

    /// Runs `argv` in the image; `line` sees each line of its (merged) output.
    fn run(&self, argv: &[&str], what: &str, line: &mut dyn FnMut(&str)) -> Result<(), BaseError> {
        let mut cmd = self.command(argv);
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| BaseError::io("creating a pipe", std::io::Error::from(e)))?;
        let write_clone = write_end
            .try_clone()
            .map_err(|e| BaseError::io("creating a pipe", e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::from(write_clone));
        let mut child = cmd
            .spawn()
            .map_err(|e| BaseError::tool_missing_or_io(UNSHARE, "util-linux", e))?;
        drop(cmd);
        let mut tail = Tail::new(30);
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
            line(String::from_utf8_lossy(&buf).trim_end());
        }
        let status = child
            .wait()
            .map_err(|e| BaseError::io(format!("waiting for {what}"), e))?;
        if !status.success() {
            return Err(BaseError::Command {
                what: format!("{what} failed in the layer build"),
                status: status.to_string(),
                output: tail.text(),
            });
        }
        Ok(())
    }
}

/// Turns apt-get install's output into a fraction: "N newly installed" sets the total,
/// then each "Unpacking" and "Setting up" line is one of 2N steps.
#[derive(Default)]
struct AptProgress {
    total: usize,
    done: usize,
}

impl AptProgress {
    fn line(&mut self, line: &str) -> Option<(f64, String)> {
        if let Some(n) = line
            .split_once(" newly installed")
            .and_then(|(head, _)| head.rsplit(", ").next())
            .and_then(|n| n.trim().parse::<usize>().ok())
        {
            self.total = n;
            return Some((0.05, format!("installing {n} packages")));
        }
        let step = line.starts_with("Unpacking ") || line.starts_with("Setting up ");
        if !step || self.total == 0 {
            return None;
        }
        self.done += 1;
        let f = 0.05 + 0.95 * (self.done as f64 / (2 * self.total) as f64).min(1.0);
        Some((f, line.trim_end_matches(" ...").to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_progress_counts_unpack_and_setup_against_the_announced_total() {
        let mut p = AptProgress::default();
        assert!(p.line("Reading package lists...").is_none());
        assert!(p.line("Unpacking x (1) ...").is_none(), "no total yet");
        let (f, msg) = p
            .line("0 upgraded, 2 newly installed, 0 to remove and 0 not upgraded.")
            .unwrap();
        assert_eq!(msg, "installing 2 packages");
        let mut last = f;
        for l in [
            "Unpacking libmosquitto1:amd64 (2.0.11-1.2) ...",
            "Unpacking mosquitto (2.0.11-1.2) ...",
            "Setting up libmosquitto1:amd64 (2.0.11-1.2) ...",
            "Setting up mosquitto (2.0.11-1.2) ...",
        ] {
            let (f, _) = p.line(l).unwrap();
            assert!(f > last);
            last = f;
        }
        assert!((last - 1.0).abs() < 1e-9);
    }

    #[test]
    fn overlay_paths_with_option_separators_are_refused() {
        assert!(overlay_path("x", Path::new("/a,b")).is_err());
        assert!(overlay_path("x", Path::new("/a:b")).is_err());
        assert_eq!(overlay_path("x", Path::new("/a/b")).unwrap(), "/a/b");
    }
}
