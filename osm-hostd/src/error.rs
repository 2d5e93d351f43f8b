//! The engine's error: one kind per D-Bus error name (`Error.NotFound` … `Error.Failed`,
//! eight in all), each with a message
//! a person can act on. Subsystem errors convert into it in exactly one place each.

use crate::names::NameError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    NoSpace(String),
    #[error("{0}")]
    Failed(String),
}

pub type EngineResult<T> = Result<T, EngineError>;

impl EngineError {
    /// The D-Bus error suffix (`uk.co.devtank.OsmHost1.Error.<kind>`).
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::NotFound(_) => "NotFound",
            EngineError::AlreadyExists(_) => "AlreadyExists",
            EngineError::InvalidArgument(_) => "InvalidArgument",
            EngineError::InvalidState(_) => "InvalidState",
            EngineError::Busy(_) => "Busy",
            EngineError::AccessDenied(_) => "AccessDenied",
            EngineError::NoSpace(_) => "NoSpace",
            EngineError::Failed(_) => "Failed",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            EngineError::NotFound(m)
            | EngineError::AlreadyExists(m)
            | EngineError::InvalidArgument(m)
            | EngineError::InvalidState(m)
            | EngineError::Busy(m)
            | EngineError::AccessDenied(m)
            | EngineError::NoSpace(m)
            | EngineError::Failed(m) => m,
        }
    }

    /// Wraps an I/O failure with what was being done, mapping ENOSPC to `NoSpace`.
    pub fn io(what: impl std::fmt::Display, err: &std::io::Error) -> Self {
        let msg = format!("{what}: {err}");
        match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => EngineError::NoSpace(format!(
                "{msg}; free space in the store (delete unused containers, bases or snapshots)"
            )),
            _ => EngineError::Failed(msg),
        }
    }
}

impl From<NameError> for EngineError {
    fn from(e: NameError) -> Self {
        EngineError::InvalidArgument(e.to_string())
    }
}
