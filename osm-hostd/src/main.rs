//! osm-hostd: the root daemon. Owns the Btrfs store, base images and containers, and
//! serves `uk.co.devtank.OsmHost1` on the system bus.

use anyhow::Context;
use clap::Parser;
use osm_host_bus as api;
use osm_hostd::config::{HostConfig, DEFAULT_CONFIG_PATH};
use osm_hostd::engine::Engine;
use osm_hostd::host::{RealHost, StoreMount};
use osm_hostd::lxc::Lxc;
use osm_hostd::lxcconf::HostFacts;
use osm_hostd::store::Store;
use osm_hostd::{dbus, privs};
use std::path::PathBuf;
use std::sync::Arc;
use zbus::fdo::{RequestNameFlags, RequestNameReply};

#[derive(Parser)]
#[command(
    name = "osm-hostd",
    version,
    about = "The osm-host daemon: LXC containers on a Btrfs store, over D-Bus"
)]
struct Args {
    /// Configuration file (every key optional; unknown keys are an error).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Validate the configuration file and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OSM_HOSTD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .init();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("osm-hostd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let cfg = HostConfig::load(&args.config)?;
    if args.check_config {
        println!("{}: ok", args.config.display());
        return Ok(());
    }
    // Before the runtime exists, so no thread keeps the capabilities.
    privs::drop_unneeded().context("dropping capabilities")?;
    // Before touching the store: a second daemon would roll back the first one's
    // operations in progress, taking them for leftovers of a crash.
    let _instance = single_instance(&cfg.runtime_dir)?;
    let lxc = Lxc::new(
        &Store::at(&cfg.store_root).containers_dir(),
        &cfg.runtime_dir.join("lxc"),
    );
    let host = RealHost::new(lxc);
    let store = host.open_store(&cfg)?;
    tracing::info!(store = %cfg.store_root.display(), "store ready");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(cfg, store, host))
}

async fn serve(cfg: HostConfig, store: Store, host: RealHost) -> anyhow::Result<()> {
    // Once, before anything starts: every new container is unprivileged over idmapped
    // mounts of the shared bases.
    osm_hostd::idmap::probe(&store.bases_dir())
        .map_err(anyhow::Error::msg)
        .with_context(|| {
            format!(
                "this host cannot run unprivileged containers: the kernel or the store's \
                 filesystem ({}) cannot do idmapped mounts (Linux 5.19 or later with Btrfs is needed)",
                store.bases_dir().display()
            )
        })?;
    let engine = Engine::open(cfg, store, HostFacts::detect(), Arc::new(host))?;
    tracing::info!(
        containers = engine.container_names().len(),
        bases = engine.base_names().len(),
        "engine ready"
    );
    // The bridge must exist before any container starts; a restarted daemon adopts the
    // bridge, NAT table and dnsmasq it finds.
    if let Some(dnsmasq) = osm_hostd::net::start(&engine)
        .await
        .map_err(anyhow::Error::msg)
        .context("setting up the container network")?
    {
        engine.set_dnsmasq(dnsmasq);
    }
    engine.sync_published();
    // Only the first start after a host boot starts containers (see engine::boot). They
    // need the store, the bridge and the firewall, all ready here, not the bus: the bus
    // connection and the objects' export run while the first containers start. Should
    // the bus part fail, the claim is undone, so the next start still boots.
    let boot = engine.claim_boot().with_context(|| {
        format!(
            "creating the boot marker in {}",
            engine.config().runtime_dir.display()
        )
    })?;
    let autostart = engine.spawn_autostart(boot);
    let on_bus = serve_bus(&engine).await;
    if on_bus.is_err() && boot {
        autostart.abort();
        engine.unclaim_boot();
    }
    let _conn = on_bus?;
    engine.spawn_reconciler();
    let _metrics = osm_hostd::metrics::start(&engine).await;
    engine.spawn_snapshot_scheduler();
    // Ready once autostart is dispatched, not finished, so systemd is not held up by
    // slow containers.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(bus_name = api::BUS_NAME, "osm-hostd ready");
    wait_for_shutdown().await;
    // Containers are not our children: they keep running, and the next start adopts them.
    // So do the bridge, the NAT table and dnsmasq, which the next start adopts too.
    tracing::info!("shutting down; containers, bridge, NAT and dnsmasq keep running");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    Ok(())
}

/// Connects to the system bus, exports the objects and takes the bus name.
async fn serve_bus(engine: &Arc<Engine>) -> anyhow::Result<zbus::Connection> {
    let conn = zbus::connection::Builder::system()
        .context("finding the system bus (is dbus-daemon running?)")?
        .build()
        .await
        .context("connecting to the system bus (is dbus-daemon running?)")?;
    dbus::serve(&conn, engine.clone(), dbus::Auth::system())
        .await
        .context("exporting objects")?;
    let reply = conn
        .request_name_with_flags(api::BUS_NAME, RequestNameFlags::DoNotQueue.into())
        .await
        .with_context(|| {
            format!(
                "requesting the bus name {} (is osm-hostd already running on this bus?)",
                api::BUS_NAME
            )
        })?;
    if reply != RequestNameReply::PrimaryOwner {
        anyhow::bail!(
            "another process owns {} on the system bus; is osm-hostd already running?",
            api::BUS_NAME
        );
    }
    Ok(conn)
}

/// Holds an exclusive lock on `<runtime_dir>/osm-hostd.lock` for the daemon's life.
fn single_instance(
    runtime_dir: &std::path::Path,
) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(runtime_dir)
        .with_context(|| format!("creating the runtime directory {}", runtime_dir.display()))?;
    let path = runtime_dir.join("osm-hostd.lock");
    let file =
        std::fs::File::create(&path).with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| {
            anyhow::anyhow!(
                "another osm-hostd is already running (it holds {}: {errno}); stop it first",
                path.display()
            )
        },
    )
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
