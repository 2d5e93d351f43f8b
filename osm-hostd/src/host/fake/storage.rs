//! The fake's subvolumes, containers and images: directories and a table of running
//! containers.

use super::*;

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
            return Err(EngineError::failed(format!(
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
