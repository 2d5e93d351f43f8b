//! Who may change state: uid 0 and members of `osm-admin`, checked on every mutating
//! call from the caller's credentials as the bus (or, peer to peer, the socket) reports
//! them. The D-Bus policy file mirrors this; the daemon does not rely on it.

use super::error::{Error, Result};
use std::sync::Arc;
use zbus::fdo::{ConnectionCredentials, DBusProxy};
use zbus::message::Header;
use zbus::Connection;

pub const ADMIN_GROUP: &str = "osm-admin";

/// Fails with `AccessDenied` unless the caller is root or in group `osm-admin`.
pub async fn require_admin(conn: &Connection, hdr: &Header<'_>) -> Result<()> {
    let creds = caller_credentials(conn, hdr).await?;
    let uid = creds
        .unix_user_id()
        .ok_or_else(|| Error::AccessDenied("the bus did not report the caller's uid".into()))?;
    if uid == 0 {
        return Ok(());
    }
    let admin_gid = nix::unistd::Group::from_name(ADMIN_GROUP)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw());
    if let Some(gid) = admin_gid {
        if caller_groups(&creds, uid).contains(&gid) {
            return Ok(());
        }
    }
    Err(Error::AccessDenied(format!(
        "changing osm-host needs root or membership of group {ADMIN_GROUP} (the caller is uid {uid})"
    )))
}

async fn caller_credentials(
    conn: &Connection,
    hdr: &Header<'_>,
) -> Result<Arc<ConnectionCredentials>> {
    match hdr.sender() {
        Some(sender) => {
            let proxy = DBusProxy::new(conn).await?;
            Ok(Arc::new(
                proxy
                    .get_connection_credentials(sender.clone().into())
                    .await?,
            ))
        }
        // Peer-to-peer: the socket's own peer credentials.
        None => {
            conn.peer_creds().await.cloned().map_err(|e| {
                Error::AccessDenied(format!("cannot read the caller's credentials: {e}"))
            })
        }
    }
}

/// The caller's groups: from the bus when it reports them, else from /proc, else from
/// the group database.
fn caller_groups(creds: &ConnectionCredentials, uid: u32) -> Vec<u32> {
    if let Some(groups) = creds.unix_group_ids() {
        return groups.clone();
    }
    if let Some(pid) = creds.process_id() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(line) = status.lines().find_map(|l| l.strip_prefix("Groups:")) {
                return line
                    .split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect();
            }
        }
    }
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default()
}
