//! Typed D-Bus proxies for the daemon's API; `osm-hostctl` and the tests use them.
//!
//! Interface summary (the daemon's `dbus` module implements it):
//!
//! Manager (`/uk/co/devtank/OsmHost1`):
//! - `CreateContainer(name s, base s, options a{sv}) -> o`; options: `autostart` b (or s:
//!   "true", "false", "last-state"), `boot_priority` i, `boot_delay` u (seconds),
//!   `memory` t (bytes), `cpus` u, `layers` as (lowest first), `ip` s (a fixed IPv4 address from the
//!   range; default: the lowest free one), `privileged` b (no user namespace; default
//!   false: the container gets its own id range).
//! - `StartContainer(name s)`, `StopContainer(name s, force b, timeout u)` (timeout in
//!   seconds, 0 = default), `RestartContainer(name s, timeout u)`,
//!   `DeleteContainer(name s, force b)`, `GetContainer(name s) -> o`.
//! - `BuildBase(name s, recipe s) -> o` (recipe = TOML text; returns a job),
//!   `ImportBase(name s, archive h) -> o` (an open tar/tar.gz/tar.zst; returns a job),
//!   `DeleteBase(name s)`, `GetBase(name s) -> o`, `PruneBases(name s) -> as` (deletes
//!   the unused `name@VERSION` bases but the newest; returns their names).
//! - `BuildLayer(name s, recipe s, key_files a{ss}) -> o` (recipe = TOML text of an
//!   `overlays/` recipe; `key_files` = the text of each `key_file` it names, by that path;
//!   returns a job), `ListLayers() -> a(stsass)` (name, created s, base, lower layers
//!   lowest first, cache key), `DeleteLayer(name s)` (refused while a container or a layer
//!   uses it), `ImportLayer(name s, base s, layers as, archive h) -> o` (an upper layer
//!   over `base` and `layers` (lowest first) as tar/tar.gz/tar.zst; returns a job),
//!   `ExportLayer(name s, archive h) -> o` (writes the layer as tar.zst, whiteouts and
//!   overlay xattrs included, to a regular file open for writing; returns a job).
//!   `PruneLayers(name s) -> as` (deletes the `name@VERSION` layers, or with "" those of
//!   every name, that are not the newest of their name and that no container and no
//!   layer uses; returns their names).
//! - `Rebase(name s, base s, layers as, dry_run b) -> o` (a job: moves the container's
//!   upper layer onto `base` and `layers` (lowest first) after a safety snapshot, with
//!   the three-way conflict rules; `dry_run` only reports; the job's `Output` is the
//!   report as JSON: `container`, `from`/`to` {`base`, `layers`}, `dry_run`,
//!   `safety_snapshot`, `conflicts` [{`path`, `change` changed|deleted, `rule`
//!   new-lower|merged-status|keep-with-osm-new|keep}]),
//!   `RebaseAll(from s, to s) -> o` (a job: every container on base `from`, one at a
//!   time, stopping at the first failure; `Output`: `moved` [reports], `failed`
//!   {`container`, `error`}, `not_moved` as).
//! - `GetNetworkInfo() -> a{sv}`: `Bridge` s, `Address` s (CIDR), `Subnet` s, `RangeFirst`
//!   s, `RangeLast` s, `Used` u, `Free` u, `Nat` b, `Managed` b, `DnsmasqState` s
//!   (running|starting|restarting|failed|unmanaged), `DnsmasqPid` u, `DnsmasqRestarts` u.
//! - `CreateSnapshot(name s, description s, cleanup s, userdata a{ss}) -> u`,
//!   `ListSnapshots(name s) -> a(usutussa{ss})`, `DeleteSnapshot(name s, num u)`,
//!   `CleanupSnapshots(name s) -> au` (runs number and timeline cleanup now),
//!   `RestoreSnapshot(name s, num u) -> o` (a job).
//! - `SetContainer(name s, settings a{sv})`: `autostart`, `boot_priority`, `boot_delay`,
//!   `memory` t, `cpus` u (0 removes a limit), `unprivileged` b (true only: converts a
//!   stopped privileged container to its own id range); unknown keys are refused.
//! - `Shutdown() -> as`: host shutdown; stops every running container in reverse boot
//!   order, records their last state, returns them in the order they stopped.
//! - `RunBackup(names as, all b) -> o` (a job; `Busy` while another run is in progress),
//!   `GetBackupStatus() -> a(stttsttt)` (name; last attempt time µs, duration ms, bytes
//!   sent, result (`ok` or why not); last success time µs, duration ms, bytes sent),
//!   `ListBackups(name s) -> as` (`mirror`, or the dated trees in history mode),
//!   `RestoreBackup(name s, from s, as_name s) -> o` (a job; `from` "" = newest, else a
//!   tree name or its prefix; `as_name` "" = over `name` after a safety snapshot
//!   `containers/.pre-restore-<name>-<time>`, else a new container).
//! - `Publish(name s, http a(sq), tls_streams a(qq)) -> b`: HTTPS vhosts (host name,
//!   container port) on 443 with a redirect on 80, and TLS streams (public port,
//!   container port) terminated by the host's NGINX; an entry for a host or public port
//!   the container has replaces it; returns whether anything changed. `AlreadyExists`
//!   when another container or program holds a host name or port, `InvalidState` when
//!   `[publish]` is not configured, `InvalidArgument` when NGINX refuses the result.
//! - `Unpublish(name s, hosts as, tls_streams aq, all b) -> b`.
//! - `AddCustomer(name s, mqtt_port q, options a{sv}) -> o`: the OSM preset: creates the
//!   container (CreateContainer's options plus `base` s; default the newest base, the
//!   `osm-stack` layer when it exists, autostart on), publishes `<name>.<domain>` -> 3000,
//!   `<name>-influx.<domain>` -> 8086, `<name>-chirpstack.<domain>` -> 8080 and TLS
//!   `mqtt_port` -> 1883, and starts it; undone on failure. `DeleteCustomer(name s)`
//!   (stops, unpublishes, deletes; `Busy` while a backup runs), `ListCustomers() ->
//!   a(sasaqs)` (name, host names, MQTT ports, state).
//! - `GetCapacity() -> a{sv}`: `Cpus` u, `CpusCommitted` u (sum of CPU limits),
//!   `MemoryTotal` t, `MemoryUsed` t (total - available), `MemoryCommitted` t (sum of
//!   memory limits), `ContainersWithoutMemoryLimit` u, `StoreTotal` t, `StoreUsed` t,
//!   `StoreFree` t (bytes), `Containers` a{su} (count by state), `AddressesUsed` u,
//!   `AddressesFree` u, `PublishedPorts` as (`proto/port`).
//! - `CheckHealth(max_backup_age t) -> as`: problems (seconds for the backup age), one
//!   sentence each; empty when every container that should run runs, none has a boot
//!   warning, dnsmasq runs (when managed) and backups are fresh.
//! - `RestoreBackupFromHost(name s, from s, as_name s, host s) -> o`: as RestoreBackup,
//!   from the trees host `host` (its id; "" = this host) made; `VerifyBackups(names as,
//!   all b) -> o` (a job re-reading trees against their manifests). GetNetworkInfo also
//!   has `HostId` s. `RestoreAllBackups(host s) -> o`: every container host `host` ("" =
//!   this host) backed up, bases imported from the target's `bases/` as needed, each
//!   with its settings and (when free) its address, started; existing names left out.
//!   `ListBackupsFromHost(name s, host s) -> as`: as ListBackups, for another host.
//! - properties `Version` s, `StoreRoot` s, `HostId` s (a uuid kept in the store; the
//!   host's directory on the backup target).
//!
//! Container (`.../container/<escaped>`): `Start()`, `Stop(force b, timeout u)`,
//! `Restart(timeout u)`, `Delete(force b)`, `GetDiskUsage() -> t`; properties `Name`,
//! `State` (stopped|starting|running|stopping), `InitPid` u, `Base`, `Layers` as,
//! `NewerBase` s (a newer `NAME@VERSION` of the pinned base; "" when none),
//! `NewerLayers` as (for each pinned layer, a newer version built over the same base and
//! lower layers; "" when none),
//! `Addresses` as (seen inside while running), `IPv4Address` s (fixed), `MacAddress`, `Autostart` b (true unless the policy is false),
//! `AutostartPolicy` s (true|false|last-state), `BootPriority` i, `BootDelay` u,
//! `Warning` s ("" when none), `MemoryLimit` t, `CpuLimit` u (0 = none),
//! `CreatedAt` t, `StartedAt` t (µs since the epoch, 0 when not running),
//! `SnapshotCount` u, `NewestSnapshot` t (date of the newest, µs; 0 = none),
//! `LastBackupAttempt` t, `LastBackupSuccess` t (µs since the epoch, 0 = never),
//! `LastBackupResult` s, `PublishedHttp` a(sq), `PublishedStreams` a(qq), `Preset` s
//! (`customer` for containers made by `customer add`, else ""), `Privileged` b (no user
//! namespace), `IdMapBase` u (the host uid of its root; 0 when privileged).
//! Snapshot methods as on the Manager without the name; signals `SnapshotCreated(u)`,
//! `SnapshotDeleted(u)`, `Restored(u)`.
//!
//! Base (`.../base/<escaped>`): `Delete()`; properties `Name`, `CreatedAt` t, `Source` s,
//! `UsedBy` as.
//!
//! Job (`.../job/<id>`): properties `Id` t, `Kind` s, `Target` s, `Progress` d (0..1),
//! `State` (running|completed|failed), `Message` s; signal `Finished(success b, message s)`.

use std::collections::HashMap;
use zbus::zvariant::{Fd, OwnedObjectPath, Value};

use crate::wire::{BackupStatus, NetworkInfo, Snapshot};

/// A snapshot on the bus (the older name of [`Snapshot`]).
pub type SnapshotWire = Snapshot;

/// A layer on the bus: `(name, created (s since the epoch), base, lower layers lowest
/// first, cache key)`.
pub type LayerWire = (String, u64, String, Vec<String>, String);

#[zbus::proxy(
    interface = "uk.co.devtank.OsmHost1.Manager",
    default_service = "uk.co.devtank.OsmHost1",
    default_path = "/uk/co/devtank/OsmHost1"
)]
pub trait Manager {
    fn create_container(
        &self,
        name: &str,
        base: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn start_container(&self, name: &str) -> zbus::Result<()>;
    fn stop_container(&self, name: &str, force: bool, timeout: u32) -> zbus::Result<()>;
    fn restart_container(&self, name: &str, timeout: u32) -> zbus::Result<()>;
    fn delete_container(&self, name: &str, force: bool) -> zbus::Result<()>;
    fn get_container(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn build_base(&self, name: &str, recipe: &str) -> zbus::Result<OwnedObjectPath>;
    fn import_base(&self, name: &str, archive: Fd<'_>) -> zbus::Result<OwnedObjectPath>;
    fn delete_base(&self, name: &str) -> zbus::Result<()>;
    fn get_base(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn get_network_info(&self) -> zbus::Result<NetworkInfo>;
    fn get_capacity(&self) -> zbus::Result<HashMap<String, zbus::zvariant::OwnedValue>>;
    fn check_health(&self, max_backup_age: u64) -> zbus::Result<Vec<String>>;
    fn build_layer(
        &self,
        name: &str,
        recipe: &str,
        key_files: HashMap<&str, &str>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn list_layers(&self) -> zbus::Result<Vec<LayerWire>>;
    fn delete_layer(&self, name: &str) -> zbus::Result<()>;
    fn prune_bases(&self, name: &str) -> zbus::Result<Vec<String>>;
    fn prune_layers(&self, name: &str) -> zbus::Result<Vec<String>>;
    fn rebase(
        &self,
        name: &str,
        base: &str,
        layers: &[&str],
        dry_run: bool,
    ) -> zbus::Result<OwnedObjectPath>;
    fn rebase_all(&self, from: &str, to: &str) -> zbus::Result<OwnedObjectPath>;
    fn export_layer(&self, name: &str, archive: Fd<'_>) -> zbus::Result<OwnedObjectPath>;
    fn import_layer(
        &self,
        name: &str,
        base: &str,
        layers: &[&str],
        archive: Fd<'_>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn create_snapshot(
        &self,
        name: &str,
        description: &str,
        cleanup: &str,
        userdata: HashMap<&str, &str>,
    ) -> zbus::Result<u32>;
    fn list_snapshots(&self, name: &str) -> zbus::Result<Vec<SnapshotWire>>;
    fn delete_snapshot(&self, name: &str, num: u32) -> zbus::Result<()>;
    fn cleanup_snapshots(&self, name: &str) -> zbus::Result<Vec<u32>>;
    fn restore_snapshot(&self, name: &str, num: u32) -> zbus::Result<OwnedObjectPath>;
    fn set_container(&self, name: &str, settings: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
    fn shutdown(&self) -> zbus::Result<Vec<String>>;
    fn run_backup(&self, names: &[&str], all: bool) -> zbus::Result<OwnedObjectPath>;
    fn get_backup_status(&self) -> zbus::Result<Vec<BackupStatus>>;
    fn list_backups(&self, name: &str) -> zbus::Result<Vec<String>>;
    fn restore_backup(
        &self,
        name: &str,
        from: &str,
        as_name: &str,
    ) -> zbus::Result<OwnedObjectPath>;
    fn publish(
        &self,
        name: &str,
        http: &[(&str, u16)],
        tls_streams: &[(u16, u16)],
    ) -> zbus::Result<bool>;
    fn unpublish(
        &self,
        name: &str,
        hosts: &[&str],
        tls_streams: &[u16],
        all: bool,
    ) -> zbus::Result<bool>;
    fn add_customer(
        &self,
        name: &str,
        mqtt_port: u16,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn delete_customer(&self, name: &str) -> zbus::Result<()>;
    #[allow(clippy::type_complexity)]
    fn list_customers(&self) -> zbus::Result<Vec<(String, Vec<String>, Vec<u16>, String)>>;
    fn restore_backup_from_host(
        &self,
        name: &str,
        from: &str,
        as_name: &str,
        host: &str,
    ) -> zbus::Result<OwnedObjectPath>;
    fn verify_backups(&self, names: &[&str], all: bool) -> zbus::Result<OwnedObjectPath>;
    fn restore_all_backups(&self, host: &str) -> zbus::Result<OwnedObjectPath>;
    fn list_backups_from_host(&self, name: &str, host: &str) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn store_root(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn host_id(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "uk.co.devtank.OsmHost1.Container",
    default_service = "uk.co.devtank.OsmHost1"
)]
pub trait Container {
    fn start(&self) -> zbus::Result<()>;
    fn stop(&self, force: bool, timeout: u32) -> zbus::Result<()>;
    fn restart(&self, timeout: u32) -> zbus::Result<()>;
    fn delete(&self, force: bool) -> zbus::Result<()>;
    fn get_disk_usage(&self) -> zbus::Result<u64>;
    fn create_snapshot(
        &self,
        description: &str,
        cleanup: &str,
        userdata: HashMap<&str, &str>,
    ) -> zbus::Result<u32>;
    fn list_snapshots(&self) -> zbus::Result<Vec<SnapshotWire>>;
    fn delete_snapshot(&self, num: u32) -> zbus::Result<()>;
    fn cleanup_snapshots(&self) -> zbus::Result<Vec<u32>>;
    fn restore_snapshot(&self, num: u32) -> zbus::Result<OwnedObjectPath>;
    #[zbus(property)]
    fn snapshot_count(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn newest_snapshot(&self) -> zbus::Result<u64>;
    #[zbus(signal)]
    fn snapshot_created(&self, num: u32) -> zbus::Result<()>;
    #[zbus(signal)]
    fn snapshot_deleted(&self, num: u32) -> zbus::Result<()>;
    #[zbus(signal)]
    fn restored(&self, num: u32) -> zbus::Result<()>;
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn init_pid(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn base(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn layers(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn addresses(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property, name = "IPv4Address")]
    fn ipv4_address(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn mac_address(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn autostart(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn autostart_policy(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn boot_priority(&self) -> zbus::Result<i32>;
    #[zbus(property)]
    fn boot_delay(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn warning(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn memory_limit(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn cpu_limit(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn privileged(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn id_map_base(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn created_at(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn started_at(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn last_backup_attempt(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn last_backup_success(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn last_backup_result(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn published_http(&self) -> zbus::Result<Vec<(String, u16)>>;
    #[zbus(property)]
    fn published_streams(&self) -> zbus::Result<Vec<(u16, u16)>>;
    #[zbus(property)]
    fn preset(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "uk.co.devtank.OsmHost1.Base",
    default_service = "uk.co.devtank.OsmHost1"
)]
pub trait Base {
    fn delete(&self) -> zbus::Result<()>;
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn created_at(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn source(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn used_by(&self) -> zbus::Result<Vec<String>>;
}

#[zbus::proxy(
    interface = "uk.co.devtank.OsmHost1.Job",
    default_service = "uk.co.devtank.OsmHost1"
)]
pub trait Job {
    #[zbus(property)]
    fn id(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn kind(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn target(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn message(&self) -> zbus::Result<String>;
    /// A machine-readable result (JSON) for jobs that have one (a rebase); "" otherwise.
    #[zbus(property)]
    fn output(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn finished(&self, success: bool, message: String) -> zbus::Result<()>;
}
