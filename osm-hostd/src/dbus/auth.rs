//! Who may change state. The D-Bus layer is built with a [`Policy`]; every mutating call
//! asks it about the caller, whose credentials the bus (or, peer to peer, the socket)
//! reports. The daemon serves [`Admins::system`]: uid 0 and members of `osm-admin`. The
//! bus policy file mirrors it as a first fence; the daemon does not rely on it. Tests
//! inject another policy, so the D-Bus layer is tested without root.

use super::error::{Error, Result};
use std::sync::Arc;
use zbus::fdo::{ConnectionCredentials, DBusProxy};
use zbus::message::Header;
use zbus::Connection;

pub use osm_host_bus::ADMIN_GROUP;

/// A caller as the bus reports it; its groups are looked up only when asked.
pub struct Caller {
    pub uid: u32,
    creds: Arc<ConnectionCredentials>,
}

impl Caller {
    pub fn new(uid: u32, creds: ConnectionCredentials) -> Self {
        Caller {
            uid,
            creds: Arc::new(creds),
        }
    }

    /// The caller's groups: from the bus when it reports them, else from /proc, else
    /// from the group database.
    pub fn groups(&self) -> Vec<u32> {
        caller_groups(&self.creds, self.uid)
    }
}

/// Decides whether a caller may change state.
pub trait Policy: Send + Sync {
    /// `Ok` when `caller` may change state, else why not, in words a person can act on.
    fn may_change(&self, caller: &Caller) -> std::result::Result<(), String>;
}

/// Administrators: a set of uids and the members of one group.
#[derive(Debug, Clone, Default)]
pub struct Admins {
    pub uids: Vec<u32>,
    pub group: Option<String>,
}

impl Admins {
    /// The daemon's policy: root and members of `osm-admin`.
    pub fn system() -> Self {
        Admins {
            uids: vec![0],
            group: Some(ADMIN_GROUP.to_string()),
        }
    }

    /// Exactly these uids (tests use their own uid, or none to be refused).
    pub fn uids(uids: impl IntoIterator<Item = u32>) -> Self {
        Admins {
            uids: uids.into_iter().collect(),
            group: None,
        }
    }
}

impl Policy for Admins {
    fn may_change(&self, caller: &Caller) -> std::result::Result<(), String> {
        if self.uids.contains(&caller.uid) {
            return Ok(());
        }
        let gid = self
            .group
            .as_deref()
            .and_then(|g| nix::unistd::Group::from_name(g).ok().flatten())
            .map(|g| g.gid.as_raw());
        if let Some(gid) = gid {
            if caller.groups().contains(&gid) {
                return Ok(());
            }
        }
        Err(osm_host_bus::access::permission_needed_by(
            "changing osm-host",
            &format!("the caller is uid {}", caller.uid),
        ))
    }
}

/// The policy the D-Bus objects share.
#[derive(Clone)]
pub struct Auth(Arc<dyn Policy>);

impl Auth {
    pub fn new(policy: impl Policy + 'static) -> Self {
        Auth(Arc::new(policy))
    }

    /// The daemon's: root and `osm-admin`.
    pub fn system() -> Self {
        Auth::new(Admins::system())
    }

    /// Fails with `AccessDenied` unless the policy lets the caller of `hdr` change state.
    pub async fn require_admin(&self, conn: &Connection, hdr: &Header<'_>) -> Result<()> {
        let creds = caller_credentials(conn, hdr).await?;
        let uid = creds
            .unix_user_id()
            .ok_or_else(|| Error::AccessDenied("the bus did not report the caller's uid".into()))?;
        self.0
            .may_change(&Caller { uid, creds })
            .map_err(Error::AccessDenied)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, groups: &[u32]) -> Caller {
        let creds = groups.iter().fold(
            ConnectionCredentials::default().set_unix_user_id(uid),
            |c, g| c.add_unix_group_id(*g),
        );
        Caller::new(uid, creds)
    }

    #[test]
    fn admins_are_the_listed_uids_and_the_members_of_the_group() {
        // Group `root` (gid 0) stands in for osm-admin: every system has it.
        let policy = Admins {
            uids: vec![0],
            group: Some("root".into()),
        };
        assert!(policy.may_change(&caller(0, &[])).is_ok());
        assert!(policy.may_change(&caller(1000, &[100, 0])).is_ok());
        let refusal = policy.may_change(&caller(1000, &[100])).unwrap_err();
        assert!(refusal.contains("usermod -aG osm-admin"), "{refusal}");
        assert!(refusal.contains("uid 1000"), "{refusal}");
        assert!(Admins::uids([]).may_change(&caller(0, &[0])).is_err());
        let missing_group = Admins {
            uids: vec![],
            group: Some("no-such-group-here".into()),
        };
        assert!(missing_group.may_change(&caller(1000, &[0])).is_err());
    }
}
