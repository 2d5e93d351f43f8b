//! Conversions between the engine's snapshots and their D-Bus form.
//!
//! A snapshot on the bus is `(num u, type s, pre_num u, date t, uid u, description s,
//! cleanup s, userdata a{ss})`, date in µs since the epoch, pre_num 0 when none.

use crate::engine::SnapshotRequest;
use crate::snapper::SnapshotInfo;
use std::collections::HashMap;

pub type SnapshotWire = osm_host_bus::wire::Snapshot;

pub fn to_wire(s: &SnapshotInfo) -> SnapshotWire {
    SnapshotWire {
        num: s.num,
        kind: s.kind.as_str().to_string(),
        pre_num: s.pre_num.unwrap_or(0),
        date: (s.date.max(0) as u64) * 1_000_000,
        uid: s.uid,
        description: s.description.clone(),
        cleanup: s.cleanup.clone(),
        userdata: s.userdata.clone().into_iter().collect(),
    }
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
