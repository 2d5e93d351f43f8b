//! The one mapping from engine errors to D-Bus errors.

use crate::error::{EngineError, ErrorKind};

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "uk.co.devtank.OsmHost1.Error")]
pub enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    NotFound(String),
    AlreadyExists(String),
    InvalidArgument(String),
    InvalidState(String),
    Busy(String),
    AccessDenied(String),
    NoSpace(String),
    Failed(String),
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        let m = e.message().to_string();
        match e.kind() {
            ErrorKind::NotFound => Error::NotFound(m),
            ErrorKind::AlreadyExists => Error::AlreadyExists(m),
            ErrorKind::InvalidArgument => Error::InvalidArgument(m),
            ErrorKind::InvalidState => Error::InvalidState(m),
            ErrorKind::Busy => Error::Busy(m),
            ErrorKind::AccessDenied => Error::AccessDenied(m),
            ErrorKind::NoSpace => Error::NoSpace(m),
            ErrorKind::Failed => Error::Failed(m),
        }
    }
}

impl From<zbus::fdo::Error> for Error {
    fn from(e: zbus::fdo::Error) -> Self {
        Error::ZBus(e.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Logs a refused or failed operation (successes are logged by the engine) and maps
/// its error: one log line per operation, with the target and the outcome.
pub fn logged<T>(op: &str, target: &str, result: crate::error::EngineResult<T>) -> Result<T> {
    if let Err(e) = &result {
        tracing::info!(op, target, outcome = e.kind().as_str(), error = %e, "operation refused or failed");
    }
    result.map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use osm_host_bus::{error_kind, ERROR_PREFIX};
    use zbus::DBusError;

    #[test]
    fn every_error_is_a_kind_of_the_contract() {
        let m = String::new;
        let names: Vec<String> = [
            Error::NotFound(m()),
            Error::AlreadyExists(m()),
            Error::InvalidArgument(m()),
            Error::InvalidState(m()),
            Error::Busy(m()),
            Error::AccessDenied(m()),
            Error::NoSpace(m()),
            Error::Failed(m()),
        ]
        .iter()
        .map(|e| e.name().to_string())
        .collect();
        let want: Vec<String> = error_kind::ALL
            .iter()
            .map(|k| format!("{ERROR_PREFIX}.{k}"))
            .collect();
        assert_eq!(names, want);
    }
}
