//! Conversions between the engine's snapshots and their D-Bus form.
//!
//! A snapshot on the bus is `(num u, type s, pre_num u, date t, uid u, description s,
//! cleanup s, userdata a{ss})`, date in µs since the epoch, pre_num 0 when none.

use crate::engine::SnapshotRequest;
use crate::snapper::SnapshotInfo;
use std::collections::HashMap;

pub type SnapshotWire = (
    u32,
    String,
    u32,
    u64,
    u32,
    String,
    String,
    HashMap<String, String>,
);

pub fn to_wire(s: &SnapshotInfo) -> SnapshotWire {
    (
        s.num,
        s.kind.as_str().to_string(),
        s.pre_num.unwrap_or(0),
        (s.date.max(0) as u64) * 1_000_000,
        s.uid,
        s.description.clone(),
        s.cleanup.clone(),
        s.userdata.clone().into_iter().collect(),
    )
}

pub fn request(
    description: String,
    cleanup: String,
    userdata: HashMap<String, String>,
) -> SnapshotRequest {
    SnapshotRequest {
        description,
        cleanup,
        userdata: userdata.into_iter().collect(),
    }
}
