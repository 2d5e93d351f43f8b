//! Creating a container: a subvolume holding `container.toml`, the generated LXC config,
//! `rootfs-layer/`, `work/` and an empty `.snapshots` subvolume, built under a staging
//! name and published with one rename, so a failed create leaves nothing behind.

use super::container::Container;
use super::{blocking, Engine, Event, CREATING_PREFIX};
use crate::error::{EngineError, EngineResult};
use crate::names::{validate_container_name, validate_image_name};
use crate::spec::{random_mac, ContainerSpec};
use std::fs;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

/// Smallest memory limit accepted: below this a Debian userland does not boot.
const MIN_MEMORY: u64 = 32 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateRequest {
    pub name: String,
    pub base: String,
    pub layers: Vec<String>,
    pub autostart: crate::spec::Autostart,
    pub boot_priority: i32,
    pub boot_delay: u32,
    pub memory: Option<u64>,
    pub cpus: Option<u32>,
    /// A fixed IPv4 address asked for (`create --ip`); otherwise the lowest free one.
    pub ip: Option<String>,
    /// No user namespace (`create --privileged`): root inside is root on the host.
    pub privileged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// A container with this name and the same spec already existed; nothing changed.
    AlreadyExisted,
}

impl CreateRequest {
    fn matches(&self, spec: &ContainerSpec) -> bool {
        spec.base == self.base
            && spec.layers == self.layers
            && spec.autostart == self.autostart
            && spec.boot_priority == self.boot_priority
            && spec.boot_delay == self.boot_delay
            && spec.memory == self.memory
            && spec.cpus == self.cpus
            && spec.unprivileged_map().is_none() == self.privileged
            && (self.ip.is_none() || self.ip.as_deref().map(str::trim) == spec.ipv4.as_deref())
    }
}

impl Engine {
    /// Creates a stopped container. Idempotent: the same request again returns
    /// `AlreadyExisted`; a different spec under an existing name is `AlreadyExists`.
    pub async fn create_container(
        self: &Arc<Self>,
        mut req: CreateRequest,
    ) -> EngineResult<CreateOutcome> {
        validate_container_name(&req.name)?;
        validate_image_name("base", &req.base)?;
        for layer in &req.layers {
            validate_image_name("layer", layer)?;
        }
        // Pin the exact versions: `bookworm` means the newest `bookworm@…` if no plain one.
        req.base = self.resolve_base(&req.base);
        req.layers = req.layers.iter().map(|l| self.resolve_layer(l)).collect();
        self.validate_limits(&req)?;
        if let Ok(existing) = self.container(&req.name) {
            let spec = existing.info().spec;
            if req.matches(&spec) {
                return Ok(CreateOutcome::AlreadyExisted);
            }
            return Err(EngineError::already_exists(format!(
                "container {} already exists (base {}) with different settings; delete it first or choose another name",
                req.name, spec.base
            )));
        }
        self.check_host_name_collision(&req.name)?;
        let _base_in_use = self.base_use.read().await;
        self.require_base(&req.base)?;
        for layer in &req.layers {
            if !self.host.is_subvolume(&self.store.layers_dir().join(layer)) {
                return Err(EngineError::not_found(format!(
                    "layer {layer:?} not found under {}",
                    self.store.layers_dir().display()
                )));
            }
        }
        self.check_layer_stack(&req.base, &req.layers)?;
        let _reservation = self.reserve(&req.name, "container")?;
        let (ip, _ip_reservation) = self.allocate_ipv4(req.ip.as_deref())?;
        let idmap = if req.privileged {
            None
        } else {
            Some(self.allocate_idmap()?)
        };
        let spec = ContainerSpec {
            name: req.name.clone(),
            base: req.base.clone(),
            layers: req.layers.clone(),
            mac: self.unused_mac(),
            ipv4: Some(ip.to_string()),
            autostart: req.autostart,
            boot_priority: req.boot_priority,
            boot_delay: req.boot_delay,
            memory: req.memory,
            cpus: req.cpus,
            created: crate::fsutil::now_secs(),
            uuid: Some(
                crate::backup::identity::new_uuid()
                    .map_err(|e| EngineError::io("choosing the container's uuid", &e))?,
            ),
            snapshots: Default::default(),
            publish: Default::default(),
            privileged: req.privileged,
            idmap: idmap.as_ref().map(|p| p.map),
        };
        let engine = self.clone();
        let spec2 = spec.clone();
        blocking(move || engine.write_new_container(&spec2)).await?;
        let c = Arc::new(Container::new(spec.clone()));
        self.containers
            .write()
            .expect("containers lock")
            .insert(spec.name.clone(), c.clone());
        drop(idmap);
        self.write_snapper_config(&c);
        tracing::info!(container = %spec.name, base = %spec.base, ipv4 = %ip, privileged = req.privileged, "container created");
        self.emit(Event::ContainerAdded(spec.name));
        Ok(CreateOutcome::Created)
    }

    /// Refuses a new container's name that something on the host the daemon does not
    /// own already uses (see [`crate::host_names`]).
    pub(super) fn check_host_name_collision(&self, name: &str) -> EngineResult<()> {
        let src = crate::host_names::HostNameSources {
            hosts_file: &self.cfg.hosts_file,
            snapper_configs_dir: &self.cfg.snapper.configs_dir,
            hostname: self.host.hostname(),
        };
        crate::host_names::check(name, &src).map_err(|c| match c {
            crate::host_names::Collision::Reserved(m) => EngineError::invalid_argument(m),
            crate::host_names::Collision::Taken(m) => EngineError::already_exists(m),
        })
    }

    pub(super) fn validate_limits(&self, req: &CreateRequest) -> EngineResult<()> {
        if let Some(m) = req.memory {
            if m < MIN_MEMORY {
                return Err(EngineError::invalid_argument(format!(
                    "memory limit {} is too small; give at least {}",
                    crate::config::format_size(m),
                    crate::config::format_size(MIN_MEMORY)
                )));
            }
        }
        if let Some(c) = req.cpus {
            let host_cpus = std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1);
            if c == 0 || c > host_cpus {
                return Err(EngineError::invalid_argument(format!(
                    "cpus {c} is out of range; this host has {host_cpus} CPUs, give 1 to {host_cpus}"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn require_base(&self, base: &str) -> EngineResult<()> {
        if self.bases.read().expect("bases lock").contains_key(base) {
            return Ok(());
        }
        Err(EngineError::not_found(format!(
            "base {base:?} not found; `osm-hostctl base list` shows the bases, `osm-hostctl base build` or `base import` adds one"
        )))
    }

    fn unused_mac(&self) -> String {
        let used: Vec<String> = self
            .all_containers()
            .iter()
            .map(|c| c.info().spec.mac)
            .collect();
        loop {
            let mac = random_mac();
            if !used.contains(&mac) {
                return mac;
            }
        }
    }

    fn write_new_container(&self, spec: &ContainerSpec) -> EngineResult<()> {
        let staging = self
            .store
            .containers_dir()
            .join(format!("{CREATING_PREFIX}{}", spec.name));
        if staging.exists() {
            self.host.delete_subvolume(&staging)?;
        }
        self.host.create_subvolume(&staging)?;
        let result = self.fill_container_dir(&staging, spec).and_then(|()| {
            let target = self.store.container_dir(&spec.name);
            fs::rename(&staging, &target)
                .map_err(|e| EngineError::io(format!("publishing {}", target.display()), &e))?;
            let parent = self.store.containers_dir();
            crate::fsutil::sync_dir(&parent)
                .map_err(|e| EngineError::io(format!("syncing {}", parent.display()), &e))
        });
        if let Err(e) = result {
            if let Err(cleanup) = self.host.delete_subvolume(&staging) {
                tracing::error!(path = %staging.display(), error = %cleanup, "cannot remove a failed create");
            }
            return Err(e);
        }
        Ok(())
    }

    fn fill_container_dir(&self, dir: &Path, spec: &ContainerSpec) -> EngineResult<()> {
        let io = |what: &str, e: std::io::Error| {
            EngineError::io(format!("{what} in {}", dir.display()), &e)
        };
        // Others may not read or traverse a container's files (issue 9).
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io("setting mode", e))?;
        let mut builder = fs::DirBuilder::new();
        builder
            .mode(0o755)
            .create(dir.join("rootfs-layer"))
            .map_err(|e| io("creating rootfs-layer", e))?;
        builder
            .mode(0o700)
            .create(dir.join("work"))
            .map_err(|e| io("creating work", e))?;

        let snapshots = dir.join(".snapshots");
        self.host.create_subvolume(&snapshots)?;
        // Snapper refuses a .snapshots that others may write to.
        fs::set_permissions(&snapshots, fs::Permissions::from_mode(0o750))
            .map_err(|e| io("setting mode of .snapshots", e))?;
        spec.save_new(dir)
            .map_err(|e| EngineError::failed(e.to_string()))?;
        // Not synced: the LXC config is regenerated from container.toml at every start.
        let conf = self.render_lxc_config(spec);
        crate::fsutil::write_new(
            &dir.join(crate::lxcconf::CONTAINER_CONF),
            conf.as_bytes(),
            0o644,
            false,
        )
        .map_err(|e| io("writing lxc.container.conf", e))?;
        symlink(crate::lxcconf::CONTAINER_CONF, dir.join("config"))
            .map_err(|e| io("linking config", e))
    }
}
