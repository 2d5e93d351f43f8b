//! Test doubles shared by the engine's and the D-Bus layer's unit tests.

use crate::base::Recipe;
use crate::config::HostConfig;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::host::{Containers, HostResult, Images, Networking, Subvolumes};
use crate::lxc::LxcState;
use crate::lxcconf::HostFacts;
use crate::store::Store;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Subvolumes are plain directories; LXC is a table of running names.
#[derive(Default)]
pub struct FakeHost {
    pub calls: Mutex<Vec<String>>,
    pub running: Mutex<HashMap<String, u32>>,
    pub subvols: Mutex<HashSet<PathBuf>>,
    pub fail_start: Mutex<bool>,
    /// A subvolume name whose creation fails with ENOSPC.
    pub fail_subvolume: Mutex<Option<String>>,
    /// Containers whose every start fails.
    pub fail_names: Mutex<HashSet<String>>,
}

impl FakeHost {
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Subvolumes for FakeHost {
    fn create_subvolume(&self, path: &Path) -> HostResult<()> {
        self.log(format!(
            "subvol-create {}",
            path.file_name().unwrap().to_string_lossy()
        ));
        if self.fail_subvolume.lock().unwrap().as_deref()
            == path.file_name().and_then(|n| n.to_str())
        {
            let e = std::io::Error::from_raw_os_error(libc::ENOSPC);
            return Err(EngineError::io(format!("creating {}", path.display()), &e));
        }
        std::fs::create_dir(path).map_err(|e| EngineError::io("mkdir", &e))?;
        self.subvols.lock().unwrap().insert(path.to_path_buf());
        Ok(())
    }
    /// Records the call and makes `dst` an empty directory (contents are not copied).
    fn snapshot(&self, src: &Path, dst: &Path, ro: bool) -> HostResult<()> {
        self.log(format!(
            "snapshot {} -> {} ro={ro}",
            src.file_name().unwrap().to_string_lossy(),
            dst.file_name().unwrap().to_string_lossy()
        ));
        std::fs::create_dir(dst).map_err(|e| EngineError::io("mkdir", &e))?;
        self.subvols.lock().unwrap().insert(dst.to_path_buf());
        Ok(())
    }
    fn delete_subvolume(&self, path: &Path) -> HostResult<()> {
        self.log(format!(
            "subvol-delete {}",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::remove_dir_all(path).map_err(|e| EngineError::io("rm", &e))
    }
    fn set_readonly(&self, path: &Path, ro: bool) -> HostResult<()> {
        self.log(format!(
            "readonly {} {ro}",
            path.file_name().unwrap().to_string_lossy()
        ));
        Ok(())
    }
    fn is_subvolume(&self, path: &Path) -> bool {
        self.subvols.lock().unwrap().contains(path) || path.is_dir()
    }
}

impl Containers for FakeHost {
    fn lxc_start(&self, name: &str) -> HostResult<LxcState> {
        self.log(format!("lxc-start {name}"));
        if *self.fail_start.lock().unwrap() || self.fail_names.lock().unwrap().contains(name) {
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
        self.log(format!("lxc-stop {name} force={force}"));
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
    fn mount_rootfs(&self, m: &crate::idmap::RootfsMount) -> HostResult<()> {
        self.log(format!("mount_rootfs {}", m.merged.display()));
        std::fs::create_dir_all(&m.merged).map_err(|e| EngineError::io("mkdir", &e))
    }

    fn unmount_rootfs(&self, m: &crate::idmap::RootfsMount) -> HostResult<()> {
        self.log(format!("unmount_rootfs {}", m.merged.display()));
        let _ = std::fs::remove_dir(&m.merged);
        Ok(())
    }
}

impl Networking for FakeHost {
    fn bridge_exists(&self, _bridge: &str) -> bool {
        true
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
        progress(0.5, "half");
        std::fs::create_dir(dest.join("etc")).map_err(|e| EngineError::io("mkdir", &e))
    }
    fn import_rootfs(&self, _a: &mut File, dest: &Path, _p: &mut dyn FnMut(f64)) -> HostResult<()> {
        std::fs::create_dir(dest.join("bin")).map_err(|e| EngineError::io("mkdir", &e))
    }
}

/// An engine on a temp dir with one base, `bb`, and a fake host.
pub fn fake_engine() -> (tempfile::TempDir, Arc<FakeHost>, Arc<Engine>) {
    fake_engine_with(|_| {})
}

/// [`fake_engine`] with a config changed by `edit`.
pub fn fake_engine_with(
    edit: impl FnOnce(&mut HostConfig),
) -> (tempfile::TempDir, Arc<FakeHost>, Arc<Engine>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    for d in ["os-bases/bb", "layers", "include", "containers"] {
        std::fs::create_dir_all(root.join("lxc").join(d)).unwrap();
    }
    let cfg = HostConfig {
        store_root: root.clone(),
        runtime_dir: dir.path().join("run"),
        cache_dir: dir.path().join("cache"),
        // Never the host's /etc: unit tests must not touch snapper's real files.
        snapper: crate::config::SnapperConfig {
            configs_dir: dir.path().join("snapper/configs"),
            defaults_file: dir.path().join("snapper/default"),
        },
        isolation: crate::config::IsolationConfig {
            subuid_file: dir.path().join("subuid"),
            subgid_file: dir.path().join("subgid"),
            pids_max: 4096,
        },
        ..HostConfig::default()
    };
    let mut cfg = cfg;
    edit(&mut cfg);
    let facts = HostFacts {
        apparmor: false,
        v2_controllers: vec![],
        v1_controllers: vec![],
        cgroup2_only: false,
    };
    let host = Arc::new(FakeHost::default());
    let engine = Engine::open(cfg, Store::at(&root), facts, host.clone()).unwrap();
    (dir, host, engine)
}
