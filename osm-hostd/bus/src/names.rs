//! The D-Bus API's fixed names (bus name, object paths, interfaces, error names), shared
//! by the daemon and the CLI; they are part of the published API and never change.

use crate::escape::escape_path_element;

pub const BUS_NAME: &str = "uk.co.devtank.OsmHost1";
pub const MANAGER_PATH: &str = "/uk/co/devtank/OsmHost1";
pub const MANAGER_IFACE: &str = "uk.co.devtank.OsmHost1.Manager";
pub const CONTAINER_IFACE: &str = "uk.co.devtank.OsmHost1.Container";
pub const BASE_IFACE: &str = "uk.co.devtank.OsmHost1.Base";
pub const JOB_IFACE: &str = "uk.co.devtank.OsmHost1.Job";
pub const ERROR_PREFIX: &str = "uk.co.devtank.OsmHost1.Error";
pub const CONTAINER_PATH_PREFIX: &str = "/uk/co/devtank/OsmHost1/container";
pub const BASE_PATH_PREFIX: &str = "/uk/co/devtank/OsmHost1/base";
pub const JOB_PATH_PREFIX: &str = "/uk/co/devtank/OsmHost1/job";

/// The daemon's error kinds; a reply's error name is `{ERROR_PREFIX}.{kind}`.
pub mod error_kind {
    pub const NOT_FOUND: &str = "NotFound";
    pub const ALREADY_EXISTS: &str = "AlreadyExists";
    pub const INVALID_ARGUMENT: &str = "InvalidArgument";
    pub const INVALID_STATE: &str = "InvalidState";
    pub const BUSY: &str = "Busy";
    pub const ACCESS_DENIED: &str = "AccessDenied";
    pub const NO_SPACE: &str = "NoSpace";
    pub const FAILED: &str = "Failed";

    pub const ALL: &[&str] = &[
        NOT_FOUND,
        ALREADY_EXISTS,
        INVALID_ARGUMENT,
        INVALID_STATE,
        BUSY,
        ACCESS_DENIED,
        NO_SPACE,
        FAILED,
    ];
}

/// Container states as the `State` property spells them.
pub const STATE_STOPPED: &str = "stopped";
pub const STATE_STARTING: &str = "starting";
pub const STATE_RUNNING: &str = "running";
pub const STATE_STOPPING: &str = "stopping";

/// Job states as the Job `State` property spells them.
pub const JOB_RUNNING: &str = "running";
pub const JOB_COMPLETED: &str = "completed";
pub const JOB_FAILED: &str = "failed";

pub fn container_path(name: &str) -> String {
    format!("{CONTAINER_PATH_PREFIX}/{}", escape_path_element(name))
}

pub fn base_path(name: &str) -> String {
    format!("{BASE_PATH_PREFIX}/{}", escape_path_element(name))
}

pub fn job_path(id: u64) -> String {
    format!("{JOB_PATH_PREFIX}/{id}")
}
