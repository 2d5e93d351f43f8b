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

mod services;
mod storage;

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
    /// `sender | receiver`, each an argument vector with the program first.
    Pipe {
        sender: Vec<String>,
        receiver: Vec<String>,
    },
    RunLocal {
        argv: Vec<String>,
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
    Pipe,
    RunLocal,
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
            Call::Pipe { .. } => Kind::Pipe,
            Call::RunLocal { .. } => Kind::RunLocal,
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
    EngineError::failed(format!("injected failure: {what}"))
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
