//! Test doubles shared by the engine's and the D-Bus layer's unit tests.

use crate::config::HostConfig;
use crate::engine::Engine;
pub use crate::host::fake::{Call, FakeHost, Kind};
use crate::lxcconf::HostFacts;
use crate::store::Store;
use std::sync::Arc;

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
        // Never the host's /etc/hosts either.
        hosts_file: dir.path().join("hosts"),
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
