//! The engine's error: a kind (one per D-Bus error name, `Error.NotFound` …
//! `Error.Failed`, eight in all), a message a person can act on, and the subsystem error
//! it came from, kept typed (`source()`) for logs and callers that look closer.
//! Subsystem errors convert into it in exactly one place each (the `From` impls below).

use crate::names::NameError;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// What kind of failure, as the D-Bus error name says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    InvalidState,
    Busy,
    AccessDenied,
    NoSpace,
    Failed,
}

impl ErrorKind {
    /// The D-Bus error suffix (`uk.co.devtank.OsmHost1.Error.<kind>`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::InvalidState => "InvalidState",
            ErrorKind::Busy => "Busy",
            ErrorKind::AccessDenied => "AccessDenied",
            ErrorKind::NoSpace => "NoSpace",
            ErrorKind::Failed => "Failed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `err.kind() == "Busy"` reads like the D-Bus name.
impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

type Source = Arc<dyn StdError + Send + Sync + 'static>;

#[derive(Clone)]
pub struct EngineError {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
}

pub type EngineResult<T> = Result<T, EngineError>;

macro_rules! constructors {
    ($($name:ident => $kind:ident),* $(,)?) => {
        $(
            #[doc = concat!("An error of kind [`ErrorKind::", stringify!($kind), "`].")]
            pub fn $name(message: String) -> EngineError {
                EngineError::new(ErrorKind::$kind, message)
            }
        )*
    };
}

impl EngineError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> EngineError {
        EngineError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    // Each takes a `String`, as the variants of the old enum did, so `"text".into()` and
    // `.map_err(EngineError::failed)` keep working.
    constructors! {
        not_found => NotFound,
        already_exists => AlreadyExists,
        invalid_argument => InvalidArgument,
        invalid_state => InvalidState,
        busy => Busy,
        access_denied => AccessDenied,
        no_space => NoSpace,
        failed => Failed,
    }

    /// Keeps `source`, the subsystem error this one stands for (`std::error::Error::source`).
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> EngineError {
        self.source = Some(Arc::new(source));
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Wraps an I/O failure with what was being done, mapping ENOSPC to `NoSpace`. The
    /// source is an `io::Error` of the same kind and OS error number.
    pub fn io(what: impl fmt::Display, err: &std::io::Error) -> Self {
        let copy = match err.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(err.kind(), err.to_string()),
        };
        Self::from_io(format!("{what}: {err}"), err.raw_os_error(), copy)
    }

    fn from_io(
        message: String,
        errno: Option<i32>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        match errno {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => EngineError::no_space(format!(
                "{message}; free space in the store (delete unused containers, bases or snapshots)"
            )),
            _ => EngineError::failed(message),
        }
        .with_source(source)
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("EngineError");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl StdError for EngineError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Two errors are the same when they say the same thing (kind and message).
impl PartialEq for EngineError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for EngineError {}

impl From<NameError> for EngineError {
    fn from(e: NameError) -> Self {
        EngineError::invalid_argument(e.to_string()).with_source(e)
    }
}

impl From<std::io::Error> for EngineError {
    fn from(e: std::io::Error) -> Self {
        let errno = e.raw_os_error();
        EngineError::from_io(e.to_string(), errno, e)
    }
}

impl From<crate::btrfs::BtrfsError> for EngineError {
    fn from(e: crate::btrfs::BtrfsError) -> Self {
        let errno = StdError::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(|io| io.raw_os_error());
        EngineError::from_io(e.to_string(), errno, e)
    }
}

impl From<crate::lxc::LxcError> for EngineError {
    fn from(e: crate::lxc::LxcError) -> Self {
        EngineError::failed(e.to_string()).with_source(e)
    }
}

impl From<crate::base::BaseError> for EngineError {
    fn from(e: crate::base::BaseError) -> Self {
        if e.is_invalid_input() {
            EngineError::invalid_argument(e.to_string())
        } else if e.is_no_space() {
            EngineError::no_space(format!("{e}; free space in the store first"))
        } else {
            EngineError::failed(e.to_string())
        }
        .with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_messages_and_typed_sources() {
        let e = EngineError::busy("web1 is busy".into());
        assert_eq!((e.kind(), e.message()), (ErrorKind::Busy, "web1 is busy"));
        assert_eq!(e.kind(), "Busy");
        assert!(StdError::source(&e).is_none());

        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = EngineError::io("writing x", &full);
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        assert!(e.message().starts_with("writing x: "), "{e}");
        let io = StdError::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("the io::Error is kept");
        assert_eq!(io.raw_os_error(), Some(libc::ENOSPC));

        let e = EngineError::from(crate::btrfs::BtrfsError {
            op: "snapshot",
            path: "/s/x".into(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        });
        assert_eq!(e.kind(), ErrorKind::Failed);
        assert!(e.message().starts_with("snapshot /s/x: "), "{e}");
        assert!(StdError::source(&e)
            .and_then(|s| s.downcast_ref::<crate::btrfs::BtrfsError>())
            .is_some());

        let e = EngineError::from(crate::base::BaseError::InvalidRecipe("bad suite".into()));
        assert_eq!(
            (e.kind(), e.message()),
            (ErrorKind::InvalidArgument, "bad suite")
        );
        assert!(StdError::source(&e)
            .and_then(|s| s.downcast_ref::<crate::base::BaseError>())
            .is_some());
    }
}
