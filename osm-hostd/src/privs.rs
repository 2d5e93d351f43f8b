//! Capabilities: the daemon drops what neither it nor its containers need, before any
//! thread starts.
//!
//! LXC containers inherit the daemon's bounding set, so only capabilities LXC would drop
//! from every container anyway (`lxc.cap.drop` in common.conf) plus hardware-only ones
//! are removed; anything more would take them from customers' systemd and services.

use caps::{CapSet, Capability};

pub const DROPPED: [Capability; 7] = [
    Capability::CAP_SYS_MODULE,
    Capability::CAP_SYS_RAWIO,
    Capability::CAP_SYS_TIME,
    Capability::CAP_MAC_ADMIN,
    Capability::CAP_MAC_OVERRIDE,
    Capability::CAP_WAKE_ALARM,
    Capability::CAP_BLOCK_SUSPEND,
];

/// Drops [`DROPPED`] from the bounding, inheritable, effective and permitted sets.
pub fn drop_unneeded() -> Result<(), caps::errors::CapsError> {
    for cap in DROPPED {
        if caps::has_cap(None, CapSet::Bounding, cap)? {
            caps::drop(None, CapSet::Bounding, cap)?;
        }
        for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
            if caps::has_cap(None, set, cap)? {
                caps::drop(None, set, cap)?;
            }
        }
    }
    Ok(())
}
