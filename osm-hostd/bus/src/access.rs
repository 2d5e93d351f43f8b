//! Who may call what: anyone may read, root and group `osm-admin` may change state. The
//! bus policy file (`packaging/dbus/uk.co.devtank.OsmHost1.conf`) lets everyone send the
//! methods listed here; the daemon refuses every other method to non-admins.

/// Members of this group may change state without being root.
pub const ADMIN_GROUP: &str = "osm-admin";

/// The methods anyone may call, as `(interface, member)`: they only read. Properties,
/// introspection and the object manager are readable by anyone too.
pub const READ_ONLY_METHODS: &[(&str, &str)] = &[
    (crate::MANAGER_IFACE, "GetContainer"),
    (crate::MANAGER_IFACE, "GetBase"),
    (crate::MANAGER_IFACE, "ListLayers"),
    (crate::MANAGER_IFACE, "GetNetworkInfo"),
    (crate::MANAGER_IFACE, "ListSnapshots"),
    (crate::MANAGER_IFACE, "GetBackupStatus"),
    (crate::MANAGER_IFACE, "ListBackups"),
    (crate::MANAGER_IFACE, "ListBackupsFromHost"),
    (crate::MANAGER_IFACE, "ListCustomers"),
    (crate::MANAGER_IFACE, "GetCapacity"),
    (crate::MANAGER_IFACE, "CheckHealth"),
    (crate::CONTAINER_IFACE, "GetDiskUsage"),
    (crate::CONTAINER_IFACE, "ListSnapshots"),
];

/// Whether anyone may call `member` of `interface`.
pub fn is_read_only(interface: &str, member: &str) -> bool {
    READ_ONLY_METHODS.contains(&(interface, member))
}

/// What a refused caller needs, in one line.
pub fn permission_needed(action: &str) -> String {
    permission_needed_by(action, "")
}

/// [`permission_needed`], saying who was refused (e.g. "the caller is uid 1000").
pub fn permission_needed_by(action: &str, who: &str) -> String {
    let who = if who.is_empty() {
        String::new()
    } else {
        format!("; {who}")
    };
    format!(
        "{action} needs root or membership of group {ADMIN_GROUP}{who} \
         (add a user with `sudo usermod -aG {ADMIN_GROUP} USER`, then log in again)"
    )
}
