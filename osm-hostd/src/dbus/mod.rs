//! The D-Bus layer: owns object paths, checks callers, maps errors, and turns engine
//! events into objects and signals. The engine never sees a zbus type.

mod auth;
pub mod error;
mod manager;
mod objects;
pub mod snapshots;

pub use manager::Manager;
pub use objects::{BaseObject, ContainerObject, JobObject};

use crate::engine::jobs::JobState;
use crate::engine::{Engine, Event};
use osm_host_bus as api;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use zbus::object_server::ObjectServer;
use zbus::Connection;

/// How long a finished job's object stays on the bus for late readers.
const JOB_LINGER: Duration = Duration::from_secs(60);

pub(crate) fn timeout_arg(seconds: u32) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)))
}

async fn register_container(server: &ObjectServer, engine: &Arc<Engine>, name: &str) {
    let obj = ContainerObject {
        engine: engine.clone(),
        name: name.to_string(),
    };
    if let Err(e) = server.at(api::container_path(name), obj).await {
        tracing::error!(container = %name, error = %e, "cannot export container object");
    }
}

async fn register_base(server: &ObjectServer, engine: &Arc<Engine>, name: &str) {
    let obj = BaseObject {
        engine: engine.clone(),
        name: name.to_string(),
    };
    if let Err(e) = server.at(api::base_path(name), obj).await {
        tracing::error!(base = %name, error = %e, "cannot export base object");
    }
}

async fn register_job(server: &ObjectServer, engine: &Arc<Engine>, id: u64) {
    let obj = JobObject {
        engine: engine.clone(),
        id,
    };
    if let Err(e) = server.at(api::job_path(id), obj).await {
        tracing::error!(job = id, error = %e, "cannot export job object");
    }
}

/// Exports the manager, the object manager and every container and base, then keeps
/// the bus in step with the engine until the connection closes.
pub async fn serve(conn: &Connection, engine: Arc<Engine>) -> zbus::Result<()> {
    let server = conn.object_server();
    server
        .at(api::MANAGER_PATH, zbus::fdo::ObjectManager)
        .await?;
    server
        .at(
            api::MANAGER_PATH,
            Manager {
                engine: engine.clone(),
            },
        )
        .await?;
    let events = engine.subscribe();
    for name in engine.container_names() {
        register_container(server, &engine, &name).await;
    }
    for name in engine.base_names() {
        register_base(server, &engine, &name).await;
    }
    let conn = conn.clone();
    tokio::spawn(async move { forward_events(conn, engine, events).await });
    Ok(())
}

async fn forward_events(
    conn: Connection,
    engine: Arc<Engine>,
    mut events: tokio::sync::broadcast::Receiver<Event>,
) {
    let server = conn.object_server();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "event queue overflowed; resynchronising objects"
                );
                resync(server, &engine).await;
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if let Err(e) = apply(&conn, server, &engine, event).await {
            tracing::warn!(error = %e, "cannot signal a change on the bus");
        }
    }
}

async fn apply(
    conn: &Connection,
    server: &ObjectServer,
    engine: &Arc<Engine>,
    event: Event,
) -> zbus::Result<()> {
    let event_kind = match &event {
        Event::SnapshotCreated(..) => 0,
        Event::SnapshotDeleted(..) => 1,
        _ => 2,
    };
    match event {
        Event::ContainerAdded(name) => register_container(server, engine, &name).await,
        Event::ContainerRemoved(name) => {
            server
                .remove::<ContainerObject, _>(api::container_path(&name))
                .await?;
        }
        Event::ContainerChanged(name) => {
            let iface = server
                .interface::<_, ContainerObject>(api::container_path(&name))
                .await?;
            let emitter = iface.signal_emitter();
            let obj = iface.get().await;
            obj.state_changed(emitter).await?;
            obj.init_pid_changed(emitter).await?;
            obj.started_at_changed(emitter).await?;
            obj.warning_changed(emitter).await?;
            obj.last_backup_attempt_changed(emitter).await?;
            obj.last_backup_success_changed(emitter).await?;
            obj.last_backup_result_changed(emitter).await?;
        }
        Event::ContainerSpecChanged(name) => {
            let iface = server
                .interface::<_, ContainerObject>(api::container_path(&name))
                .await?;
            let emitter = iface.signal_emitter();
            let obj = iface.get().await;
            obj.autostart_changed(emitter).await?;
            obj.autostart_policy_changed(emitter).await?;
            obj.boot_priority_changed(emitter).await?;
            obj.boot_delay_changed(emitter).await?;
            obj.memory_limit_changed(emitter).await?;
            obj.cpu_limit_changed(emitter).await?;
            obj.privileged_changed(emitter).await?;
            obj.id_map_base_changed(emitter).await?;
        }
        Event::SnapshotCreated(name, num)
        | Event::SnapshotDeleted(name, num)
        | Event::Restored(name, num) => {
            let iface = server
                .interface::<_, ContainerObject>(api::container_path(&name))
                .await?;
            let emitter = iface.signal_emitter();
            match event_kind {
                0 => ContainerObject::snapshot_created(emitter, num).await?,
                1 => ContainerObject::snapshot_deleted(emitter, num).await?,
                _ => ContainerObject::restored(emitter, num).await?,
            }
            let obj = iface.get().await;
            obj.snapshot_count_changed(emitter).await?;
            obj.newest_snapshot_changed(emitter).await?;
        }
        Event::BaseAdded(name) => register_base(server, engine, &name).await,
        Event::BaseRemoved(name) => {
            server
                .remove::<BaseObject, _>(api::base_path(&name))
                .await?;
        }
        Event::JobAdded(id) => register_job(server, engine, id).await,
        Event::JobChanged(id) => {
            let iface = server.interface::<_, JobObject>(api::job_path(id)).await?;
            let obj = iface.get().await;
            obj.progress_changed(iface.signal_emitter()).await?;
            obj.message_changed(iface.signal_emitter()).await?;
        }
        Event::JobFinished(id) => {
            register_job(server, engine, id).await;
            let iface = server.interface::<_, JobObject>(api::job_path(id)).await?;
            let emitter = iface.signal_emitter();
            {
                let obj = iface.get().await;
                obj.progress_changed(emitter).await?;
                obj.message_changed(emitter).await?;
                obj.state_changed(emitter).await?;
            }
            if let Some(job) = engine.jobs.get(id) {
                let status = job.status();
                JobObject::finished(
                    emitter,
                    status.state == JobState::Completed,
                    &status.message,
                )
                .await?;
            }
            let conn = conn.clone();
            let engine = engine.clone();
            tokio::spawn(async move {
                tokio::time::sleep(JOB_LINGER).await;
                let _ = conn
                    .object_server()
                    .remove::<JobObject, _>(api::job_path(id))
                    .await;
                engine.jobs.forget(id);
            });
        }
    }
    Ok(())
}

/// Brings the exported containers and bases in line with the engine after lost events.
async fn resync(server: &ObjectServer, engine: &Arc<Engine>) {
    for name in engine.container_names() {
        register_container(server, engine, &name).await;
    }
    for name in engine.base_names() {
        register_base(server, engine, &name).await;
    }
}

#[cfg(test)]
mod tests;
