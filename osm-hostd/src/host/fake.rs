//! The recording fake of the host seam, for unit tests of the engine's and the network
//! service's sequencing. Every effect is recorded as a typed [`Call`]; any call can be
//! made to fail ([`FakeHost::fail_nth`]). State is kept where a test can look at it:
//! subvolumes are plain directories (a snapshot copies the tree, leaving nested
//! subvolumes empty as Btrfs does), containers are a table of running names, a local
//! rsync copies the tree, and the network is a record of what was applied.

use super::containers::ExitWatch;
use super::{
    Containers, HostResult, Images, NetFuture, Networking, StoreMount, Subvolumes, SystemFiles,
    Transfer,
};
use crate::base::Recipe;
use crate::config::{HostConfig, SnapperConfig};
use crate::error::EngineError;
use crate::idmap::RootfsMount;
use crate::lxc::LxcState;
use crate::net::bridge::BridgeReport;
use crate::net::dnsmasq::{DhcpHost, DnsmasqPaths};
use crate::net::ipam::Subnet;
use crate::net::supervisor::Supervisor;
use crate::store::{Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// One effect the engine asked of the host, with what it was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    CreateSubvolume {
        path: PathBuf,
    },
    Snapshot {
        src: PathBuf,
        dst: PathBuf,
        ro: bool,
    },
    DeleteSubvolume {
        path: PathBuf,
    },
    SetReadonly {
        path: PathBuf,
        ro: bool,
    },
    Exchange {
        a: PathBuf,
        b: PathBuf,
    },
    LxcStart {
        name: String,
    },
    LxcStop {
        name: String,
        force: bool,
    },
    MountRootfs {
        merged: PathBuf,
    },
    UnmountRootfs {
        merged: PathBuf,
    },
    BuildRootfs {
        dest: PathBuf,
    },
    ImportRootfs {
        dest: PathBuf,
    },
    /// `dry_run`: a verification pass (`--dry-run --itemize-changes`).
    Rsync {
        src: String,
        dest: String,
        dry_run: bool,
        args: Vec<String>,
    },
    /// The remote command is the last argument; `input` what was written to stdin.
    Ssh {
        host: String,
        command: String,
        input: Option<Vec<u8>>,
    },
    EnsureBridge {
        bridge: String,
        gateway: Ipv4Addr,
        prefix: u8,
    },
    EnableForwarding,
    NftApply {
        ruleset: String,
    },
    IsolatePorts {
        bridge: String,
    },
    DnsmasqStart {
        args: Vec<String>,
    },
    WriteSnapperConfig {
        name: String,
    },
    RemoveSnapperConfig {
        name: String,
    },
    SyncHostsFile {
        path: PathBuf,
        entries: Vec<(String, Ipv4Addr)>,
    },
    OpenStore {
        root: PathBuf,
    },
    CheckOwners {
        root: PathBuf,
        from: u32,
    },
    /// Owners moved from the range starting at uid `from` to the one at `to`.
    ShiftOwners {
        root: PathBuf,
        from: u32,
        to: u32,
    },
    EnsureSubidPool,
}

/// The kind of a [`Call`], for failure injection and filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    CreateSubvolume,
    Snapshot,
    DeleteSubvolume,
    SetReadonly,
    Exchange,
    LxcStart,
    LxcStop,
    MountRootfs,
    UnmountRootfs,
    BuildRootfs,
    ImportRootfs,
    Rsync,
    Ssh,
    EnsureBridge,
    EnableForwarding,
    NftApply,
    IsolatePorts,
    DnsmasqStart,
    WriteSnapperConfig,
    RemoveSnapperConfig,
    SyncHostsFile,
    OpenStore,
    CheckOwners,
    ShiftOwners,
    EnsureSubidPool,
}

impl Call {
    pub fn kind(&self) -> Kind {
        match self {
            Call::CreateSubvolume { .. } => Kind::CreateSubvolume,
            Call::Snapshot { .. } => Kind::Snapshot,
            Call::DeleteSubvolume { .. } => Kind::DeleteSubvolume,
            Call::SetReadonly { .. } => Kind::SetReadonly,
            Call::Exchange { .. } => Kind::Exchange,
            Call::LxcStart { .. } => Kind::LxcStart,
            Call::LxcStop { .. } => Kind::LxcStop,
            Call::MountRootfs { .. } => Kind::MountRootfs,
            Call::UnmountRootfs { .. } => Kind::UnmountRootfs,
            Call::BuildRootfs { .. } => Kind::BuildRootfs,
            Call::ImportRootfs { .. } => Kind::ImportRootfs,
            Call::Rsync { .. } => Kind::Rsync,
            Call::Ssh { .. } => Kind::Ssh,
            Call::EnsureBridge { .. } => Kind::EnsureBridge,
            Call::EnableForwarding => Kind::EnableForwarding,
            Call::NftApply { .. } => Kind::NftApply,
            Call::IsolatePorts { .. } => Kind::IsolatePorts,
            Call::DnsmasqStart { .. } => Kind::DnsmasqStart,
            Call::WriteSnapperConfig { .. } => Kind::WriteSnapperConfig,
            Call::RemoveSnapperConfig { .. } => Kind::RemoveSnapperConfig,
            Call::SyncHostsFile { .. } => Kind::SyncHostsFile,
            Call::OpenStore { .. } => Kind::OpenStore,
            Call::CheckOwners { .. } => Kind::CheckOwners,
            Call::ShiftOwners { .. } => Kind::ShiftOwners,
            Call::EnsureSubidPool => Kind::EnsureSubidPool,
        }
    }

    /// The short form [`FakeHost::calls`] lists: Btrfs and LXC effects only, paths by
    /// their last component (rootfs mounts in full).
    fn short(&self) -> Option<String> {
        let base = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Some(match self {
            Call::CreateSubvolume { path } => format!("subvol-create {}", base(path)),
            Call::Snapshot { src, dst, ro } => {
                format!("snapshot {} -> {} ro={ro}", base(src), base(dst))
            }
            Call::DeleteSubvolume { path } => format!("subvol-delete {}", base(path)),
            Call::SetReadonly { path, ro } => format!("readonly {} {ro}", base(path)),
            Call::Exchange { a, b } => format!("exchange {} {}", base(a), base(b)),
            Call::LxcStart { name } => format!("lxc-start {name}"),
            Call::LxcStop { name, force } => format!("lxc-stop {name} force={force}"),
            Call::MountRootfs { merged } => format!("mount_rootfs {}", merged.display()),
            Call::UnmountRootfs { merged } => format!("unmount_rootfs {}", merged.display()),
            _ => return None,
        })
    }
}

/// The host double. Fields other than the log are the fake's state and the older
/// failure switches; prefer [`FakeHost::fail_nth`] in new tests.
#[derive(Default)]
pub struct FakeHost {
    log: Mutex<Vec<Call>>,
    counts: Mutex<HashMap<Kind, usize>>,
    /// (kind, n): the n-th call of that kind (1 = the first since the fake was made)
    /// fails.
    failures: Mutex<Vec<(Kind, usize)>>,
    pub running: Mutex<HashMap<String, u32>>,
    pub subvols: Mutex<HashSet<PathBuf>>,
    pub fail_start: Mutex<bool>,
    /// A subvolume name whose creation fails with ENOSPC.
    pub fail_subvolume: Mutex<Option<String>>,
    /// Containers whose every start fails.
    pub fail_names: Mutex<HashSet<String>>,
}

/// The host name the fake reports.
pub const FAKE_HOSTNAME: &str = "fakehost";

/// The exit code an injected rsync failure reports: 23, a partial transfer.
pub const RSYNC_FAILURE: i32 = 23;
/// The exit code an injected ssh failure reports: 255, ssh's own failure.
pub const SSH_FAILURE: i32 = 255;

fn injected(what: &str) -> EngineError {
    EngineError::Failed(format!("injected failure: {what}"))
}

fn output(code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        status: ExitStatus::from_raw(code << 8),
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

fn io_err(what: &str, e: io::Error) -> EngineError {
    EngineError::io(what.to_string(), &e)
}

impl FakeHost {
    /// Records `call`; true when the test asked for this one to fail.
    fn record(&self, call: Call) -> bool {
        let kind = call.kind();
        self.log.lock().unwrap().push(call);
        let mut counts = self.counts.lock().unwrap();
        let n = counts.entry(kind).or_default();
        *n += 1;
        self.failures.lock().unwrap().contains(&(kind, *n))
    }

    /// Makes the `n`-th call of `kind` (counting from 1 since the fake was made) fail:
    /// an error for subvolume, LXC and image calls, exit 23 for rsync (after copying
    /// half of the files) and 255 for ssh.
    pub fn fail_nth(&self, kind: Kind, n: usize) {
        self.failures.lock().unwrap().push((kind, n));
    }

    /// How many calls of `kind` were made so far.
    pub fn count(&self, kind: Kind) -> usize {
        self.counts.lock().unwrap().get(&kind).copied().unwrap_or(0)
    }

    /// Every call, in order.
    pub fn recorded(&self) -> Vec<Call> {
        self.log.lock().unwrap().clone()
    }

    /// The calls of one kind, in order.
    pub fn recorded_of(&self, kind: Kind) -> Vec<Call> {
        self.recorded()
            .into_iter()
            .filter(|c| c.kind() == kind)
            .collect()
    }

    /// The Btrfs and LXC calls in short form (`snapshot web1 -> .backup-web1 ro=true`).
    pub fn calls(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(Call::short)
            .collect()
    }
}

/// Copies the tree at `src` to `dst` as a snapshot or rsync would: files (with their
/// mode and mtime), directories, symlinks. Directories in `skip` stay empty; with `half`,
/// only every other file is copied (a transfer interrupted half-way).
fn copy_tree(src: &Path, dst: &Path, skip: &HashSet<PathBuf>, half: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !dst.exists() {
        std::fs::create_dir_all(dst)?;
    }
    let mode = std::fs::metadata(src)?.permissions().mode();
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))?;
    let mut entries: Vec<_> = std::fs::read_dir(src)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let mut files = 0usize;
    for e in entries {
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let ft = e.file_type()?;
        if ft.is_dir() {
            if skip.contains(&from) {
                std::fs::create_dir_all(&to)?;
            } else {
                copy_tree(&from, &to, skip, half)?;
            }
        } else if ft.is_symlink() {
            let _ = std::fs::remove_file(&to);
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_file() {
            files += 1;
            if half && files % 2 == 0 {
                continue;
            }
            std::fs::copy(&from, &to)?;
            let mtime = std::fs::metadata(&from)?.modified()?;
            File::options().write(true).open(&to)?.set_modified(mtime)?;
        }
    }
    Ok(())
}

impl Subvolumes for FakeHost {
    fn create_subvolume(&self, path: &Path) -> HostResult<()> {
        let fail = self.record(Call::CreateSubvolume {
            path: path.to_path_buf(),
        });
        if fail
            || self.fail_subvolume.lock().unwrap().as_deref()
                == path.file_name().and_then(|n| n.to_str())
        {
            let e = io::Error::from_raw_os_error(libc::ENOSPC);
            return Err(EngineError::io(format!("creating {}", path.display()), &e));
        }
        std::fs::create_dir(path).map_err(|e| io_err("mkdir", e))?;
        self.subvols.lock().unwrap().insert(path.to_path_buf());
        Ok(())
    }
    /// Makes `dst` a copy of `src`, nested subvolumes left as empty directories.
    fn snapshot(&self, src: &Path, dst: &Path, ro: bool) -> HostResult<()> {
        if self.record(Call::Snapshot {
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
            ro,
        }) {
            return Err(injected(&format!("snapshot of {}", src.display())));
        }
        if dst.exists() {
            let e = io::Error::from_raw_os_error(libc::EEXIST);
            return Err(EngineError::io(
                format!("snapshot to {}", dst.display()),
                &e,
            ));
        }
        let nested: HashSet<PathBuf> = self
            .subvols
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with(src) && p.as_path() != src)
            .cloned()
            .chain(
                // A snapshot into the source's own tree lands in a nested subvolume
                // (`.snapshots`), which the snapshot shows empty.
                dst.ancestors()
                    .filter(|p| p.starts_with(src) && *p != src)
                    .map(Path::to_path_buf),
            )
            .collect();
        std::fs::create_dir(dst).map_err(|e| io_err("mkdir", e))?;
        copy_tree(src, dst, &nested, false).map_err(|e| io_err("copying the snapshot", e))?;
        self.subvols.lock().unwrap().insert(dst.to_path_buf());
        Ok(())
    }
    fn delete_subvolume(&self, path: &Path) -> HostResult<()> {
        if self.record(Call::DeleteSubvolume {
            path: path.to_path_buf(),
        }) {
            return Err(injected(&format!("deleting {}", path.display())));
        }
        self.subvols
            .lock()
            .unwrap()
            .retain(|p| !p.starts_with(path));
        std::fs::remove_dir_all(path).map_err(|e| io_err("rm", e))
    }
    fn set_readonly(&self, path: &Path, ro: bool) -> HostResult<()> {
        if self.record(Call::SetReadonly {
            path: path.to_path_buf(),
            ro,
        }) {
            return Err(injected(&format!("read-only flag of {}", path.display())));
        }
        Ok(())
    }
    fn is_subvolume(&self, path: &Path) -> bool {
        self.subvols.lock().unwrap().contains(path) || path.is_dir()
    }
    fn exchange(&self, a: &Path, b: &Path) -> HostResult<()> {
        if self.record(Call::Exchange {
            a: a.to_path_buf(),
            b: b.to_path_buf(),
        }) {
            return Err(injected(&format!("exchanging with {}", b.display())));
        }
        nix::fcntl::renameat2(None, a, None, b, nix::fcntl::RenameFlags::RENAME_EXCHANGE)
            .map_err(|e| io_err("exchange", e.into()))
    }
}

impl Containers for FakeHost {
    fn lxc_start(&self, name: &str) -> HostResult<LxcState> {
        let fail = self.record(Call::LxcStart { name: name.into() });
        if fail
            || *self.fail_start.lock().unwrap()
            || self.fail_names.lock().unwrap().contains(name)
        {
            return Err(EngineError::Failed(format!(
                "lxc-start failed for container {name}"
            )));
        }
        self.running.lock().unwrap().insert(name.into(), 4242);
        Ok(LxcState {
            running: true,
            init_pid: Some(4242),
        })
    }
    fn lxc_stop(&self, name: &str, _t: Duration, force: bool) -> HostResult<()> {
        if self.record(Call::LxcStop {
            name: name.into(),
            force,
        }) {
            return Err(injected(&format!("stopping {name}")));
        }
        self.running.lock().unwrap().remove(name);
        Ok(())
    }
    fn lxc_state(&self, name: &str) -> HostResult<LxcState> {
        let pid = self.running.lock().unwrap().get(name).copied();
        Ok(LxcState {
            running: pid.is_some(),
            init_pid: pid,
        })
    }
    fn lxc_addresses(&self, _init_pid: u32) -> Vec<String> {
        vec![]
    }
    fn mount_rootfs(&self, m: &RootfsMount) -> HostResult<()> {
        if self.record(Call::MountRootfs {
            merged: m.merged.clone(),
        }) {
            return Err(injected(&format!("mounting {}", m.merged.display())));
        }
        std::fs::create_dir_all(&m.merged).map_err(|e| io_err("mkdir", e))
    }
    fn unmount_rootfs(&self, m: &RootfsMount) -> HostResult<()> {
        if self.record(Call::UnmountRootfs {
            merged: m.merged.clone(),
        }) {
            return Err(injected(&format!("unmounting {}", m.merged.display())));
        }
        let _ = std::fs::remove_dir(&m.merged);
        Ok(())
    }
    /// Init processes never exit on their own here.
    fn watch_exit(&self, _pid: u32) -> io::Result<ExitWatch> {
        Ok(Box::pin(std::future::pending()))
    }
    fn process_started_at(&self, _pid: u32) -> Option<u64> {
        None
    }
    /// Every owner is taken to be in range (a normal user cannot make them so).
    fn check_owners(&self, root: &Path, from: &crate::shift::Range) -> Result<u64, String> {
        if self.record(Call::CheckOwners {
            root: root.into(),
            from: from.uid,
        }) {
            return Err(format!(
                "injected failure: {} is owned by ids outside the range",
                root.display()
            ));
        }
        Ok(0)
    }
    /// Records the shift; owners are left as they are (a normal user cannot chown).
    fn shift_owners(
        &self,
        root: &Path,
        from: &crate::shift::Range,
        to: &crate::shift::Range,
    ) -> Result<(), String> {
        if self.record(Call::ShiftOwners {
            root: root.into(),
            from: from.uid,
            to: to.uid,
        }) {
            return Err(format!("injected failure: shifting {}", root.display()));
        }
        Ok(())
    }
}

impl Images for FakeHost {
    fn build_rootfs(
        &self,
        _r: &Recipe,
        dest: &Path,
        _c: &Path,
        progress: &mut dyn FnMut(f64, &str),
    ) -> HostResult<()> {
        if self.record(Call::BuildRootfs {
            dest: dest.to_path_buf(),
        }) {
            return Err(injected("building the root filesystem"));
        }
        progress(0.5, "half");
        std::fs::create_dir(dest.join("etc")).map_err(|e| io_err("mkdir", e))
    }
    fn import_rootfs(&self, _a: &mut File, dest: &Path, _p: &mut dyn FnMut(f64)) -> HostResult<()> {
        if self.record(Call::ImportRootfs {
            dest: dest.to_path_buf(),
        }) {
            return Err(injected("importing the root filesystem"));
        }
        std::fs::create_dir(dest.join("bin")).map_err(|e| io_err("mkdir", e))
    }
}

/// `host:path` names a remote side; a local path has no colon before its first slash.
fn is_remote(arg: &str) -> bool {
    arg.split_once(':')
        .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'))
}

impl Transfer for FakeHost {
    /// Local to local: copies the tree (`--delete` first empties the destination) and
    /// reports the bytes sent as rsync's `--stats` do; a dry run reports no difference.
    /// With a remote side nothing is copied.
    fn rsync(&self, args: &[OsString]) -> io::Result<Output> {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let operands: Vec<&String> = match args.iter().position(|a| a == "--") {
            Some(i) => args[i + 1..].iter().collect(),
            None => Vec::new(),
        };
        let (src, dest) = match operands.as_slice() {
            [s, d] => ((*s).clone(), (*d).clone()),
            _ => return Ok(output(1, "", "rsync: the fake wants `-- SRC DEST`")),
        };
        let dry_run = args.iter().any(|a| a == "--dry-run");
        let fail = self.record(Call::Rsync {
            src: src.clone(),
            dest: dest.clone(),
            dry_run,
            args: args.clone(),
        });
        if dry_run || is_remote(&src) || is_remote(&dest) {
            return Ok(if fail {
                output(RSYNC_FAILURE, "", "rsync error: injected failure")
            } else {
                output(0, "", "")
            });
        }
        let (from, to) = (Path::new(&src), Path::new(&dest));
        if args.iter().any(|a| a == "--delete") && to.is_dir() {
            std::fs::remove_dir_all(to)?;
        }
        if from.is_dir() {
            copy_tree(from, to, &HashSet::new(), fail)?;
        } else {
            std::fs::copy(from, to)?;
        }
        if fail {
            return Ok(output(
                RSYNC_FAILURE,
                "",
                "rsync error: some files/attrs were not transferred (injected)",
            ));
        }
        Ok(output(0, "Total bytes sent: 1,234\n", ""))
    }

    /// Records the command; answers as a reachable host with nothing on it would
    /// (exit 0, no output).
    fn ssh(&self, args: &[OsString], input: Option<&[u8]>) -> io::Result<Output> {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let after = args.iter().position(|a| a == "--").map_or(0, |i| i + 1);
        let fail = self.record(Call::Ssh {
            host: args.get(after).cloned().unwrap_or_default(),
            command: args.last().cloned().unwrap_or_default(),
            input: input.map(<[u8]>::to_vec),
        });
        Ok(if fail {
            output(SSH_FAILURE, "", "ssh: connect to host: injected failure")
        } else {
            output(0, "", "")
        })
    }
}

fn injected_io(what: &str) -> io::Error {
    io::Error::other(format!("injected failure: {what}"))
}

/// Records; applies nothing (there is no network to change).
impl Networking for FakeHost {
    fn bridge_exists(&self, _bridge: &str) -> bool {
        true
    }
    fn ensure_bridge<'a>(
        &'a self,
        bridge: &'a str,
        subnet: &'a Subnet,
    ) -> NetFuture<'a, BridgeReport> {
        let fail = self.record(Call::EnsureBridge {
            bridge: bridge.into(),
            gateway: subnet.gateway,
            prefix: subnet.prefix,
        });
        Box::pin(async move {
            if fail {
                return Err(format!("injected failure: creating bridge {bridge}"));
            }
            Ok(BridgeReport::default())
        })
    }
    fn enable_forwarding(&self) -> Result<(), String> {
        if self.record(Call::EnableForwarding) {
            return Err("injected failure: enabling forwarding".into());
        }
        Ok(())
    }
    fn apply_nft(&self, ruleset: &str) -> Result<(), String> {
        if self.record(Call::NftApply {
            ruleset: ruleset.into(),
        }) {
            return Err("nft refused the containers' firewall ruleset (injected failure)".into());
        }
        Ok(())
    }
    fn isolate_bridge_ports<'a>(&'a self, bridge: &'a str) -> NetFuture<'a, Vec<String>> {
        let fail = self.record(Call::IsolatePorts {
            bridge: bridge.into(),
        });
        Box::pin(async move {
            if fail {
                return Err(format!("injected failure: isolating the ports of {bridge}"));
            }
            Ok(Vec::new())
        })
    }
    fn start_dnsmasq(
        &self,
        args: Vec<String>,
        paths: DnsmasqPaths,
        rs: Vec<DhcpHost>,
    ) -> Arc<Supervisor> {
        self.record(Call::DnsmasqStart { args: args.clone() });
        Supervisor::detached(args, paths, rs)
    }
}

/// Records, then writes the files for real: the fake engine's config points them into
/// its temp dir.
impl SystemFiles for FakeHost {
    fn write_snapper_config(
        &self,
        snapper: &SnapperConfig,
        name: &str,
        text: &str,
    ) -> io::Result<()> {
        if self.record(Call::WriteSnapperConfig { name: name.into() }) {
            return Err(injected_io("writing the snapper config"));
        }
        super::system_files::write_snapper_config(snapper, name, text)
    }
    fn remove_snapper_config(&self, snapper: &SnapperConfig, name: &str) -> io::Result<bool> {
        if self.record(Call::RemoveSnapperConfig { name: name.into() }) {
            return Err(injected_io("removing the snapper config"));
        }
        super::system_files::remove_snapper_config(snapper, name)
    }
    fn sync_hosts_file(&self, path: &Path, entries: &[(String, Ipv4Addr)]) -> io::Result<bool> {
        if self.record(Call::SyncHostsFile {
            path: path.into(),
            entries: entries.to_vec(),
        }) {
            return Err(injected_io("writing the hosts file"));
        }
        crate::net::hosts_file::sync(path, entries)
    }
    /// Records, then runs the real file work on the fake engine's own files.
    fn ensure_subid_pool(&self, subids: &crate::idmap::SubIds) -> Result<(), String> {
        if self.record(Call::EnsureSubidPool) {
            return Err("injected failure: adding root's subordinate ids".into());
        }
        subids.ensure_pool()
    }
    fn hostname(&self) -> Option<String> {
        Some(FAKE_HOSTNAME.into())
    }
    /// 8 GiB, half of it available.
    fn memory(&self) -> (u64, u64) {
        (8 << 30, 4 << 30)
    }
}

/// The store is the directory the config names, as it is.
impl StoreMount for FakeHost {
    fn open_store(&self, cfg: &HostConfig) -> Result<Store, StoreError> {
        if self.record(Call::OpenStore {
            root: cfg.store_root.clone(),
        }) {
            return Err(StoreError::Io {
                action: "mount",
                path: cfg.store_root.clone(),
                source: injected_io("mounting the store"),
            });
        }
        Ok(Store::at(&cfg.store_root))
    }
}
