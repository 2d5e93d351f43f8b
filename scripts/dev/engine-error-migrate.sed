# Migrates code written against the old `enum EngineError { NotFound(String), ... }` to
# the struct with a kind (osm-hostd/src/error.rs). Run with GNU sed on every Rust file:
#   find osm-hostd/src tests -name '*.rs' -exec sed -E -i -f scripts/dev/engine-error-migrate.sed {} +
# It is idempotent. What it cannot rewrite (a `match` on the variants binding the
# message, say) fails to compile: match on `e.kind()` (an `ErrorKind`) and use
# `e.message()` instead.

# Patterns first. matches!(x, EngineError::Kind(_))
s/matches!\(&?([A-Za-z_][A-Za-z0-9_.]*), EngineError::([A-Z][A-Za-z]*)\(_\)\)/(\1.kind() == crate::error::ErrorKind::\2)/g
# matches!(x, EngineError::Kind(m) if m.contains(..))
s/matches!\(&?([A-Za-z_][A-Za-z0-9_.]*), EngineError::([A-Z][A-Za-z]*)\(([a-z_]+)\) if \3\./(\1.kind() == crate::error::ErrorKind::\2 \&\& \1.message()./g
# A match arm `Err(EngineError::Kind(_)) =>`
s/Err\(EngineError::([A-Z][A-Za-z]*)\(_\)\)( if [^=]*)? =>/Err(e) if e.kind() == crate::error::ErrorKind::\1 =>/g

# Constructors, called or passed as functions (`.map_err(EngineError::Failed)`).
s/EngineError::NotFound\b/EngineError::not_found/g
s/EngineError::AlreadyExists\b/EngineError::already_exists/g
s/EngineError::InvalidArgument\b/EngineError::invalid_argument/g
s/EngineError::InvalidState\b/EngineError::invalid_state/g
s/EngineError::Busy\b/EngineError::busy/g
s/EngineError::AccessDenied\b/EngineError::access_denied/g
s/EngineError::NoSpace\b/EngineError::no_space/g
s/EngineError::Failed\b/EngineError::failed/g

# The host's converters keep the subsystem error as the typed source (the From impls
# in error.rs hold the mapping they used to spell out).
/^fn (btrfs_err|lxc_err|base_err)\(/,/^\}/{
  /^(fn |\})/!d
}
/^fn (btrfs_err|lxc_err|base_err)\(/a\    EngineError::from(e)
