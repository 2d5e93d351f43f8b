//! Base images: recipes built with debootstrap, and imports of root filesystem archives.
//!
//! - [`Recipe`] (`recipe.rs`): the TOML recipe, validated field by field, with a cache key.
//! - [`build_rootfs`] (`build.rs`): debootstrap + the recipe's files, units and removals,
//!   cached as `<cache_dir>/<cache_key>.tar.zst` so a rebuild of the same recipe takes
//!   seconds instead of minutes.
//! - [`validate_archive`] / [`extract_archive`] (`archive.rs`): imports of tar, tar.gz and
//!   tar.zst root filesystems, checked before GNU tar unpacks them.
//!
//! Decisions worth knowing:
//! - The cache key covers every recipe field (unordered lists sorted, defaults filled in),
//!   the host architecture and a build-format version; a cached archive is trusted as the
//!   daemon's own output and is not re-validated.
//! - Imports accept absolute symlinks (they resolve inside the container), refuse entries
//!   beneath a symlink of the same archive, and allow only harmless device nodes
//!   (whiteouts, null/zero/full/random/urandom/tty/console/ptmx).
//! - An archive from a caller is validated and extracted in two passes; copy it first
//!   with [`private_copy`] so the caller cannot change it in between.
//!
//! Everything here is synchronous and blocking (child processes, large copies): the engine
//! runs it on a blocking thread inside a job. Changes inside the image go through
//! `rootfs.rs`, which resolves paths with the image as root so a symlink in the image can
//! never redirect a write or a removal onto the host.

pub(crate) mod archive;
pub(crate) mod build;
pub(crate) mod recipe;
pub(crate) mod rootfs;

pub(crate) use archive::write_tar_zst;
pub use archive::{extract_archive, private_copy, validate_archive};
pub use build::build_rootfs;
pub use recipe::{Recipe, RecipeFile, DEFAULT_FILE_MODE, DEFAULT_MIRROR, DEFAULT_VARIANT};

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};

/// Why a base image could not be described, checked, built or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// The recipe text is not valid; the message names the field.
    #[error("{0}")]
    InvalidRecipe(String),
    /// The archive is not a (non-empty) tar, tar.gz or tar.zst.
    #[error("{0}")]
    InvalidArchive(String),
    /// An archive entry would land outside the destination or write through a link.
    #[error("archive entry {entry:?} {reason}; refusing the archive (repack it with paths relative to the root filesystem)")]
    UnsafeArchive { entry: String, reason: String },
    /// A host tool the build needs is not installed.
    #[error(
        "{tool} is not installed; install the Debian package {package} (apt install {package})"
    )]
    MissingTool { tool: String, package: String },
    /// debootstrap exited unsuccessfully.
    #[error("debootstrap of suite {suite} failed ({status}); the full log is {log}; last output:\n{output}")]
    Debootstrap {
        suite: String,
        status: String,
        log: String,
        output: String,
    },
    /// Another child process (tar, chroot systemctl) failed.
    #[error("{what} ({status}); its output:\n{output}")]
    Command {
        what: String,
        status: String,
        output: String,
    },
    /// A filesystem operation failed; `what` says which and on what path.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// Anything else, with a message saying what to do.
    #[error("{0}")]
    Failed(String),
}

impl BaseError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        BaseError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn tool_missing_or_io(tool: &str, package: &str, e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound {
            BaseError::MissingTool {
                tool: tool.into(),
                package: package.into(),
            }
        } else {
            BaseError::io(format!("starting {tool}"), e)
        }
    }

    /// True when the caller's input was at fault (recipe or archive), not the host: the
    /// engine maps these to `InvalidArgument` and the rest to `Failed` (or `NoSpace`).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            BaseError::InvalidRecipe(_)
                | BaseError::InvalidArchive(_)
                | BaseError::UnsafeArchive { .. }
        )
    }

    /// True when the failure was the disk or quota filling up.
    pub fn is_no_space(&self) -> bool {
        match self {
            BaseError::Io { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
            }
            BaseError::Command { output, .. } | BaseError::Debootstrap { output, .. } => {
                output.contains("No space left on device") || output.contains("Disk quota exceeded")
            }
            _ => false,
        }
    }
}

/// Reads a child's output to the end and returns its last `max_lines` lines (lossy UTF-8).
pub(crate) fn run_output_tail(reader: impl Read, max_lines: usize) -> String {
    let mut tail = Tail::new(max_lines);
    let mut r = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => tail.push(&line),
        }
    }
    tail.text()
}

/// The last lines of a child's output, for error messages.
pub(crate) struct Tail {
    lines: VecDeque<String>,
    max: usize,
}

impl Tail {
    pub(crate) fn new(max: usize) -> Self {
        Tail {
            lines: VecDeque::new(),
            max,
        }
    }
    pub(crate) fn push(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).trim_end().to_string();
        if self.lines.len() == self.max {
            self.lines.pop_front();
        }
        self.lines.push_back(text);
    }
    pub(crate) fn text(&self) -> String {
        let v: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        v.join("\n")
    }
}
