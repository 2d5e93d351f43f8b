//! The container verbs, written once: the Manager's `StartContainer(name)` and a
//! Container object's `Start()` are both a one-line shim over the same function here.
//! A verb that changes state is a method of [`Admitted`], which only the caller's
//! authorization check hands out.

use super::auth::Auth;
use super::error::{logged, Error, Result};
use super::snapshots::{request, to_wire, SnapshotWire};
use super::{timeout_arg, Exports};
use crate::engine::Engine;
use std::collections::HashMap;
use std::sync::Arc;
use zbus::message::Header;
use zbus::object_server::ObjectServer;
use zbus::zvariant::OwnedObjectPath;
use zbus::Connection;

pub(crate) fn path(p: String) -> OwnedObjectPath {
    OwnedObjectPath::try_from(p).expect("paths built from validated names are valid")
}

/// An engine the caller of this message may change.
pub(crate) struct Admitted<'a> {
    pub engine: &'a Arc<Engine>,
}

/// Asks `auth` about the caller of `hdr`; `AccessDenied` unless it is admitted.
pub(crate) async fn admit<'a>(
    engine: &'a Arc<Engine>,
    auth: &Auth,
    conn: &Connection,
    hdr: &Header<'_>,
) -> Result<Admitted<'a>> {
    auth.require_admin(conn, hdr).await?;
    Ok(Admitted { engine })
}

impl Admitted<'_> {
    pub async fn start(&self, name: &str) -> Result<()> {
        logged("start", name, self.engine.start_container(name).await)?;
        Ok(())
    }

    pub async fn stop(&self, name: &str, force: bool, timeout: u32) -> Result<()> {
        let stopped = self
            .engine
            .stop_container(name, timeout_arg(timeout), force)
            .await;
        logged("stop", name, stopped)?;
        Ok(())
    }

    pub async fn restart(&self, name: &str, timeout: u32) -> Result<()> {
        let restarted = self
            .engine
            .restart_container(name, timeout_arg(timeout))
            .await;
        logged("restart", name, restarted)
    }

    pub async fn delete(&self, name: &str, force: bool) -> Result<()> {
        let deleted = self.engine.delete_container(name, force).await;
        logged("delete", name, deleted)
    }

    pub async fn create_snapshot(
        &self,
        name: &str,
        description: String,
        cleanup: String,
        userdata: HashMap<String, String>,
    ) -> Result<u32> {
        let req = request(description, cleanup, userdata);
        let num = self.engine.create_snapshot(name, req).await;
        logged("create snapshot", name, num)
    }

    pub async fn delete_snapshot(&self, name: &str, num: u32) -> Result<()> {
        let deleted = self.engine.delete_snapshot(name, num).await;
        logged("delete snapshot", name, deleted)
    }

    pub async fn cleanup_snapshots(&self, name: &str) -> Result<Vec<u32>> {
        let deleted = self.engine.cleanup_snapshots(name).await;
        logged("cleanup snapshots", name, deleted)
    }

    pub async fn delete_base(&self, name: &str) -> Result<()> {
        logged("delete base", name, self.engine.delete_base(name).await)
    }

    /// Starts the restore job; returns its path once the job is on the bus.
    pub async fn restore_snapshot(
        &self,
        server: &ObjectServer,
        exports: &Exports,
        name: &str,
        num: u32,
    ) -> Result<OwnedObjectPath> {
        let job = logged(
            "restore snapshot",
            name,
            self.engine.restore_snapshot(name, num),
        )?;
        Ok(exports.job(server, job.id).await)
    }
}

pub(crate) fn list_snapshots(engine: &Engine, name: &str) -> Result<Vec<SnapshotWire>> {
    Ok(engine.list_snapshots(name)?.iter().map(to_wire).collect())
}

/// Bytes used by the container's own data (upper dir and files), not its base.
pub(crate) async fn disk_usage(engine: &Arc<Engine>, name: &str) -> Result<u64> {
    let engine = engine.clone();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || engine.container_disk_usage(&name))
        .await
        .map_err(|e| Error::Failed(e.to_string()))?
        .map_err(Into::into)
}
