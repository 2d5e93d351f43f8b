//! The command line, as clap derive types. Nothing here talks to the bus.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use osm_host_bus::size::parse_size;
use osm_host_bus::Autostart;

const ABOUT: &str = "Control osm-hostd, the OSM host's container daemon, over D-Bus";

const LONG_ABOUT: &str = "\
Control osm-hostd, the OSM host's container daemon, over D-Bus.

Every command is one call to osm-hostd on the system bus (uk.co.devtank.OsmHost1); base
builds and imports then wait for the daemon's job and show its progress. Commands that
change state need root or membership of the osm-admin group; reading is open to everyone.
The bus address can be overridden with DBUS_SYSTEM_BUS_ADDRESS.";

/// Kept in step with `ExitCode` in `exit.rs` (a unit test checks every code is listed).
/// Every repository path it names exists (a unit test checks that too).
const EXIT_CODES: &str = "\
Examples:
  osm-hostctl base build bookworm --recipe base-images/debian-bookworm.toml
  osm-hostctl create web1 --base bookworm --layer osm-stack --memory 2G --cpus 2 --autostart
  osm-hostctl start web1
  osm-hostctl list
  osm-hostctl info web1 --json
  osm-hostctl set web1 --autostart last-state --boot-priority 10 --boot-delay 5
  osm-hostctl host info
  osm-hostctl snapshot create web1 --cleanup number --description 'before upgrade'
  osm-hostctl snapshot list web1
  osm-hostctl snapshot restore web1 3
  osm-hostctl publish web1 --http web1.example.com:3000 --tls-stream 8883:1883
  osm-hostctl customer add acme --mqtt-port 8883

Exit status:
  0    success
  1    the operation failed (Error.Failed, a failed job, or anything unexpected)
  2    usage error (bad command line)
  3    not found (Error.NotFound)
  4    already exists (Error.AlreadyExists)
  5    invalid argument (Error.InvalidArgument, or a local file that cannot be read)
  6    wrong state or busy (Error.InvalidState, Error.Busy)
  7    access denied (Error.AccessDenied, or the bus policy refused the call)
  8    no space left in the store (Error.NoSpace)
  9    osm-hostd is not reachable (no system bus, no owner for uk.co.devtank.OsmHost1,
       or the daemon left the bus while a job was running)
  130  interrupted by Ctrl-C while waiting for a job (the job keeps running)

Error names are short for uk.co.devtank.OsmHost1.Error.*. Errors are printed to stderr
as \"osm-hostctl: <message>\"; results go to stdout. Read commands take --json.";

#[derive(Debug, Parser)]
#[command(
    name = "osm-hostctl",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = EXIT_CODES,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Run the command on another host: the bus connection goes through
    /// `ssh -xT [USER@]HOST systemd-stdio-bridge` (OSM_HOSTCTL_SSH names another ssh)
    #[arg(short = 'H', long = "host", value_name = "[USER@]HOST", global = true)]
    pub host: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container from a base image
    Create(CreateArgs),
    /// Start a container
    Start {
        /// Container name
        name: String,
    },
    /// Stop a container (a clean shutdown unless --force)
    Stop {
        /// Container name
        name: String,
        /// Kill the container at once instead of shutting it down cleanly
        #[arg(long)]
        force: bool,
        /// Seconds to wait for a clean shutdown before killing it [default: the daemon's]
        #[arg(long, value_name = "S")]
        timeout: Option<u32>,
    },
    /// Stop a container cleanly, then start it again
    Restart {
        /// Container name
        name: String,
        /// Seconds to wait for a clean shutdown before killing it [default: the daemon's]
        #[arg(long, value_name = "S")]
        timeout: Option<u32>,
    },
    /// Delete a container and all its data, snapshots included
    Delete {
        /// Container name
        name: String,
        /// Stop the container first if it is running
        #[arg(long)]
        force: bool,
    },
    /// List containers
    List(JsonArg),
    /// Show one container in detail, disk usage included
    Info {
        /// Container name
        name: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Manage base images (the read-only root filesystems containers start from)
    #[command(subcommand)]
    Base(BaseCommand),
    /// Change a container's autostart policy, boot order or limits
    Set(SetArgs),
    /// Back containers up to the configured target, and show the results
    #[command(subcommand)]
    Backup(BackupCommand),
    /// The host: its container network (bridge, addresses, dnsmasq) and shutdown
    #[command(subcommand, alias = "network")]
    Host(HostCommand),
    /// Manage a container's snapshots (snapper-compatible) and restore from them
    #[command(subcommand)]
    Snapshot(super::snapshots::SnapshotCommand),
    /// Publish a container's HTTPS vhosts and TLS streams through the host's NGINX
    Publish(super::publish::PublishArgs),
    /// Stop publishing some (or all) of a container's vhosts and TLS streams
    Unpublish(super::publish::UnpublishArgs),
    /// Customers: a container with its Grafana, InfluxDB and ChirpStack vhosts and its
    /// MQTT port, added and deleted in one command
    #[command(subcommand)]
    Customer(super::customer::CustomerCommand),
    /// Print the daemon's events as they happen, one line each (time, kind, object,
    /// detail): containers added and removed, state changes, warnings, snapshots,
    /// restores, backups, jobs; until interrupted
    Monitor(JsonArg),
    /// Manage layers (read-only stacks over a base, built from overlays/ recipes)
    #[command(subcommand)]
    Layer(super::layers::LayerCommand),
    /// Move a container to another base (and layer) version after a safety snapshot,
    /// keeping what the customer changed; waits for the job and lists the conflicts
    Rebase(super::rebase::RebaseArgs),
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up containers now (snapshot, rsync, verify); waits for the job
    Run {
        /// Containers to back up
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        names: Vec<String>,
        /// Back up every container
        #[arg(long)]
        all: bool,
    },
    /// Show each container's last backup attempt and last success
    Status(JsonArg),
    /// Restore a container from its backup (into a new container with --as, or over
    /// itself after a safety snapshot); waits for the job
    Restore {
        /// The backed-up container's name
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Every container the host backed up (with --from-host: a host brought back
        /// on this one; bases come from the target; addresses kept when free)
        #[arg(long, conflicts_with_all = ["from", "as_name"])]
        all: bool,
        /// History mode: the tree (or a prefix such as a date) [default: the newest]
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// Restore into a new container of this name instead of over NAME
        #[arg(long = "as", value_name = "NEWNAME")]
        as_name: Option<String>,
        /// Restore a container another host backed up (its id: `host info` there, or
        /// the directories at the top of the backup target)
        #[arg(long, value_name = "HOST_ID")]
        from_host: Option<String>,
    },
    /// Re-read backup trees and check them against their manifests (every file's
    /// checksum, entries missing or added, the owner); waits for the job
    Verify {
        /// Containers whose backups to verify
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        names: Vec<String>,
        /// Every container this host backed up
        #[arg(long)]
        all: bool,
    },
    /// List the backup trees of one container on the target
    List {
        /// Container name
        name: String,
        /// The trees another host made (its id)
        #[arg(long, value_name = "HOST_ID")]
        from_host: Option<String>,
        #[command(flatten)]
        json: JsonArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Show the bridge, its subnet, used and free addresses, and dnsmasq's state
    Info(JsonArg),
    /// Show CPUs, memory, store space, containers by state and free addresses: what
    /// placing a new container needs
    Capacity(JsonArg),
    /// Exit 0 when every container that should run runs, none failed to boot, dnsmasq
    /// runs and backups are fresh; otherwise print each problem and exit 1
    Health {
        /// Hours after which the last good backup of a container is stale
        #[arg(long, value_name = "HOURS", default_value_t = 26.0)]
        max_backup_age: f64,
    },
    /// Stop every container for a host shutdown, lowest boot priority first, recording
    /// which ran (for autostart = last-state); run by osm-hostd.service when the host
    /// goes down
    Shutdown,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("settings").required(true).multiple(true)))]
pub struct SetArgs {
    /// Container name
    pub name: String,
    /// Start at host boot: true, false or last-state
    #[arg(long, value_name = "POLICY", group = "settings")]
    pub autostart: Option<Autostart>,
    /// Boot order: higher starts first, equal priorities in parallel
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        group = "settings"
    )]
    pub boot_priority: Option<i32>,
    /// Seconds to wait after starting it at boot before the next group
    #[arg(long, value_name = "S", group = "settings")]
    pub boot_delay: Option<u32>,
    /// Memory limit, e.g. 512M or 2G, or "none"; applies at the next start
    #[arg(long, value_name = "SIZE", value_parser = parse_limit_size, group = "settings")]
    pub memory: Option<u64>,
    /// CPU limit in CPUs, or 0 for none; applies at the next start
    #[arg(long, value_name = "N", group = "settings")]
    pub cpus: Option<u32>,
    /// Convert a privileged container to an unprivileged one with its own id range
    /// (stopped; a safety snapshot is taken first)
    #[arg(long, group = "settings")]
    pub unprivileged: bool,
}

/// A size, or `none`/`0` for no limit (sent as 0).
fn parse_limit_size(text: &str) -> Result<u64, String> {
    match text {
        "none" | "0" => Ok(0),
        t => parse_size(t),
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Container name: a DNS label (a-z, 0-9 and '-', at most 63 characters)
    pub name: String,
    /// Base image to create it from (see `osm-hostctl base list`)
    #[arg(long)]
    pub base: String,
    /// Start the container when the host boots: true (the default when the flag has no
    /// value), false, or last-state (only if it ran when the host shut down)
    #[arg(long, value_name = "POLICY", num_args = 0..=1, require_equals = false,
          default_missing_value = "true")]
    pub autostart: Option<Autostart>,
    /// Boot order: higher starts first, equal priorities in parallel [default: 0]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub boot_priority: Option<i32>,
    /// Seconds to wait after starting it at boot before the next group [default: 0]
    #[arg(long, value_name = "S")]
    pub boot_delay: Option<u32>,
    /// Memory limit, e.g. 512M or 2G [default: no limit]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// CPU limit in CPUs [default: no limit]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cpus: Option<u32>,
    /// Layer to stack on the base, lowest first; repeat for several
    #[arg(long = "layer", value_name = "L")]
    pub layers: Vec<String>,
    /// Fixed IPv4 address on the bridge [default: the lowest free one in the range]
    #[arg(long, value_name = "A")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// Run it without a user namespace: root inside is root on the host. Only for a
    /// stack that cannot run otherwise [default: unprivileged, its own id range]
    #[arg(long)]
    pub privileged: bool,
}

#[derive(Debug, Subcommand)]
pub enum BaseCommand {
    /// Build a base image from a recipe (TOML); waits for the build job
    Build {
        /// Name of the new base image, optionally with `@VERSION` (`@auto`: the build date
        /// and the recipe's hash)
        name: String,
        /// Recipe file; it is read here and its text sent to the daemon
        #[arg(long, value_name = "FILE")]
        recipe: PathBuf,
    },
    /// Import a base image from a root filesystem archive; waits for the import job
    Import {
        /// Name of the new base image
        name: String,
        /// Root filesystem archive (.tar, .tar.gz or .tar.zst), opened here and passed to
        /// the daemon as an open file
        file: PathBuf,
    },
    /// List base images and the containers using them
    List(JsonArg),
    /// Delete a base image no container uses
    Delete {
        /// Base image name
        name: String,
    },
    /// Delete the older NAME@VERSION bases no container or layer uses (keeps the newest)
    Prune {
        /// Base name without a version
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}
