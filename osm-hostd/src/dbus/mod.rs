//! The D-Bus layer: owns object paths, checks callers, maps errors, and turns engine
//! events into objects and signals. The engine never sees a zbus type.
//!
//! Objects follow the engine's events: [`forward_events`] is the one place that exports
//! and removes them. A method that returns a new object's path waits in [`Exports`]
//! until the forwarder has exported it. The verbs themselves live in `methods`, once
//! for both the Manager and the Container objects.

pub mod auth;
pub mod error;
mod fleet;
mod manager;
mod methods;
mod objects;
mod publish;
pub mod snapshots;

pub use auth::{Admins, Auth, Policy};
pub use manager::Manager;
pub use objects::{BaseObject, ContainerObject, JobObject};

use crate::engine::jobs::JobState;
use crate::engine::{Engine, Event};
use osm_host_bus as api;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use zbus::object_server::{Interface, ObjectServer};
use zbus::zvariant::OwnedObjectPath;
use zbus::Connection;

/// How long a method waits for the object it created to be exported.
const EXPORT_WAIT: Duration = Duration::from_secs(5);

pub(crate) fn timeout_arg(seconds: u32) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)))
}

/// Lets a method wait until the event forwarder has exported an object.
#[derive(Clone, Default)]
pub struct Exports {
    changed: Arc<Notify>,
}

impl Exports {
    async fn wait<I: Interface>(&self, server: &ObjectServer, path: String) -> OwnedObjectPath {
        let _ = tokio::time::timeout(EXPORT_WAIT, async {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if server.interface::<_, I>(path.as_str()).await.is_ok() {
                    return;
                }
                notified.await;
            }
        })
        .await;
        methods::path(path)
    }

    pub(crate) async fn container(&self, server: &ObjectServer, name: &str) -> OwnedObjectPath {
        self.wait::<ContainerObject>(server, api::container_path(name))
            .await
    }

    pub(crate) async fn base(&self, server: &ObjectServer, name: &str) -> OwnedObjectPath {
        self.wait::<BaseObject>(server, api::base_path(name)).await
    }

    pub(crate) async fn job(&self, server: &ObjectServer, id: u64) -> OwnedObjectPath {
        self.wait::<JobObject>(server, api::job_path(id)).await
    }

    fn exported(&self) {
        self.changed.notify_waiters();
    }
}

/// What every exported object shares.
#[derive(Clone)]
struct Shared {
    engine: Arc<Engine>,
    auth: Auth,
    exports: Exports,
}

impl Shared {
    async fn export_container(&self, server: &ObjectServer, name: &str) {
        let obj = ContainerObject::new(
            self.engine.clone(),
            self.auth.clone(),
            self.exports.clone(),
            name,
        );
        if let Err(e) = server.at(api::container_path(name), obj).await {
            tracing::error!(container = %name, error = %e, "cannot export container object");
        }
    }

    async fn export_base(&self, server: &ObjectServer, name: &str) {
        let obj = BaseObject {
            engine: self.engine.clone(),
            auth: self.auth.clone(),
            name: name.to_string(),
        };
        if let Err(e) = server.at(api::base_path(name), obj).await {
            tracing::error!(base = %name, error = %e, "cannot export base object");
        }
    }

    async fn export_job(&self, server: &ObjectServer, id: u64) {
        let obj = JobObject {
            engine: self.engine.clone(),
            id,
        };
        if let Err(e) = server.at(api::job_path(id), obj).await {
            tracing::error!(job = id, error = %e, "cannot export job object");
        }
    }

    /// Exports what the engine has and the bus lacks (at start, and after lost events).
    async fn export_all(&self, server: &ObjectServer) {
        for name in self.engine.container_names() {
            self.export_container(server, &name).await;
        }
        for name in self.engine.base_names() {
            self.export_base(server, &name).await;
        }
        for id in self.engine.jobs.ids() {
            self.export_job(server, id).await;
        }
        self.exports.exported();
    }
}

/// Exports the manager, the object manager and every container and base, then keeps
/// the bus in step with the engine until the connection closes. `auth` decides who may
/// change state (the daemon passes [`Auth::system`]).
pub async fn serve(conn: &Connection, engine: Arc<Engine>, auth: Auth) -> zbus::Result<()> {
    let shared = Shared {
        engine,
        auth,
        exports: Exports::default(),
    };
    let server = conn.object_server();
    server
        .at(api::MANAGER_PATH, zbus::fdo::ObjectManager)
        .await?;
    let manager = Manager {
        engine: shared.engine.clone(),
        auth: shared.auth.clone(),
        exports: shared.exports.clone(),
    };
    server.at(api::MANAGER_PATH, manager).await?;
    // Subscribed before the first export, so nothing added in between is missed.
    let events = shared.engine.subscribe();
    shared.export_all(server).await;
    let conn = conn.clone();
    tokio::spawn(async move { forward_events(conn, shared, events).await });
    Ok(())
}

async fn forward_events(
    conn: Connection,
    shared: Shared,
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
                shared.export_all(server).await;
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if let Err(e) = apply(server, &shared, event).await {
            tracing::warn!(error = %e, "cannot signal a change on the bus");
        }
        shared.exports.exported();
    }
}

async fn apply(server: &ObjectServer, shared: &Shared, event: Event) -> zbus::Result<()> {
    match event {
        Event::ContainerAdded(name) => shared.export_container(server, &name).await,
        Event::ContainerRemoved(name) => {
            server
                .remove::<ContainerObject, _>(api::container_path(&name))
                .await?;
        }
        Event::ContainerChanged(name) => {
            let iface = server
                .interface::<_, ContainerObject>(api::container_path(&name))
                .await?;
            iface
                .get()
                .await
                .signal_changed(iface.signal_emitter())
                .await?;
        }
        Event::ContainerSpecChanged(name) => {
            let iface = server
                .interface::<_, ContainerObject>(api::container_path(&name))
                .await?;
            let emitter = iface.signal_emitter();
            iface.get().await.signal_spec_changed(emitter).await?;
        }
        Event::SnapshotCreated(ref name, num)
        | Event::SnapshotDeleted(ref name, num)
        | Event::Restored(ref name, num) => {
            let iface = server
                .interface::<_, ContainerObject>(api::container_path(name))
                .await?;
            let emitter = iface.signal_emitter();
            match event {
                Event::SnapshotCreated(..) => {
                    ContainerObject::snapshot_created(emitter, num).await?
                }
                Event::SnapshotDeleted(..) => {
                    ContainerObject::snapshot_deleted(emitter, num).await?
                }
                _ => ContainerObject::restored(emitter, num).await?,
            }
            iface.get().await.signal_snapshots_changed(emitter).await?;
        }
        Event::BaseAdded(name) => shared.export_base(server, &name).await,
        Event::BaseRemoved(name) => {
            server
                .remove::<BaseObject, _>(api::base_path(&name))
                .await?;
        }
        Event::JobAdded(id) => shared.export_job(server, id).await,
        Event::JobChanged(id) => {
            let iface = server.interface::<_, JobObject>(api::job_path(id)).await?;
            let obj = iface.get().await;
            obj.progress_changed(iface.signal_emitter()).await?;
            obj.message_changed(iface.signal_emitter()).await?;
        }
        Event::JobFinished(id) => {
            let iface = server.interface::<_, JobObject>(api::job_path(id)).await?;
            let emitter = iface.signal_emitter();
            {
                let obj = iface.get().await;
                obj.progress_changed(emitter).await?;
                obj.message_changed(emitter).await?;
                obj.output_changed(emitter).await?;
                obj.state_changed(emitter).await?;
            }
            if let Some(job) = shared.engine.jobs.get(id) {
                let status = job.status();
                JobObject::finished(
                    emitter,
                    status.state == JobState::Completed,
                    &status.message,
                )
                .await?;
            }
        }
        Event::JobRemoved(id) => {
            server.remove::<JobObject, _>(api::job_path(id)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
