//! Running GNU tar: unpacking a validated archive ([`extract_archive`]) and writing the
//! build cache's `.tar.zst` ([`write_tar_zst`]), with throttled progress.

use super::{decoder, detect, TAR};
use crate::base::{run_output_tail, BaseError};
use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::rc::Rc;

/// decompressor owns the reader.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Calls `progress` when the fraction moved by at least 1%, and always at the end.
pub(crate) struct Throttle<'a> {
    progress: &'a mut dyn FnMut(f64),
    last: f64,
}

impl<'a> Throttle<'a> {
    pub(crate) fn new(progress: &'a mut dyn FnMut(f64)) -> Self {
        Throttle {
            progress,
            last: -1.0,
        }
    }
    pub(crate) fn report(&mut self, fraction: f64) {
        let f = fraction.clamp(0.0, 1.0);
        if f >= self.last + 0.01 || (f >= 1.0 && self.last < 1.0) {
            self.last = f;
            (self.progress)(f);
        }
    }
}

/// Extracts a validated archive into `dest`, preserving owners (numeric), modes,
/// xattrs, ACLs, hard links and device nodes.
///
/// `dest` must be an existing, empty directory; needs root (owners, device nodes,
/// `trusted.*` xattrs). `progress` gets compressed bytes read / file size.
pub fn extract_archive(
    file: &mut File,
    dest: &Path,
    progress: &mut dyn FnMut(f64),
) -> Result<(), BaseError> {
    let kind = detect(file)?;
    let size = file
        .metadata()
        .map_err(|e| BaseError::io("reading the archive's size", e))?
        .len()
        .max(1);
    let mut cmd = Command::new(TAR);
    cmd.args([
        "--extract",
        "--numeric-owner",
        "--same-owner",
        "--preserve-permissions",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "-C",
    ])
    .arg(dest)
    .args(["-f", "-"])
    .env_clear()
    .env("LC_ALL", "C")
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| BaseError::tool_missing_or_io(TAR, "tar", e))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let stderr_reader = std::thread::spawn(move || run_output_tail(stderr, 40));
    let mut stdin = child.stdin.take().expect("piped stdin");

    let mut throttle = Throttle::new(progress);
    throttle.report(0.0);
    let copied: Result<(), BaseError> = (|| {
        let counter = Rc::new(Cell::new(0u64));
        let counting = Counting {
            inner: &mut *file,
            count: counter.clone(),
        };
        let mut reader = decoder(kind, counting)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(BaseError::InvalidArchive(format!(
                        "the archive could not be decompressed: {e}"
                    )))
                }
            };
            if let Err(e) = stdin.write_all(&buf[..n]) {
                // tar exited early; its stderr says why, reported below.
                return Err(BaseError::io("feeding the archive to tar", e));
            }
            throttle.report(counter.get() as f64 / size as f64);
        }
        Ok(())
    })();
    drop(stdin);
    let status = child
        .wait()
        .map_err(|e| BaseError::io("waiting for tar", e))?;
    let tail = stderr_reader.join().unwrap_or_default();
    // A corrupt compressed stream also makes tar fail (truncated input); say the real cause.
    if let Err(e @ BaseError::InvalidArchive(_)) = copied {
        return Err(e);
    }
    if !status.success() {
        return Err(BaseError::Command {
            what: format!("tar could not extract the archive into {}", dest.display()),
            status: status.to_string(),
            output: tail,
        });
    }
    copied?;
    throttle.report(1.0);
    Ok(())
}

/// Writes `src` as a zstd-compressed GNU tar to `out` (already created), then fsyncs it.
/// `progress` gets uncompressed bytes written / `expected_bytes`.
pub(crate) fn write_tar_zst(
    src: &Path,
    out: &mut File,
    expected_bytes: u64,
    progress: &mut dyn FnMut(f64),
) -> Result<(), BaseError> {
    let mut cmd = Command::new(TAR);
    cmd.args([
        "--create",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
        "--sort=name",
        "-C",
    ])
    .arg(src)
    .args(["-f", "-", "."])
    .env_clear()
    .env("LC_ALL", "C")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| BaseError::tool_missing_or_io(TAR, "tar", e))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let stderr_reader = std::thread::spawn(move || run_output_tail(stderr, 40));
    let mut stdout = child.stdout.take().expect("piped stdout");

    let mut throttle = Throttle::new(progress);
    let written: Result<(), BaseError> = (|| {
        let mut enc = zstd::stream::write::Encoder::new(&mut *out, 3)
            .map_err(|e| BaseError::io("starting the zstd encoder", e))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BaseError::io("reading tar's output", e)),
            };
            enc.write_all(&buf[..n])
                .map_err(|e| BaseError::io("writing the cache archive", e))?;
            total += n as u64;
            throttle.report(total as f64 / expected_bytes.max(1) as f64);
        }
        enc.finish()
            .map_err(|e| BaseError::io("finishing the cache archive", e))?;
        Ok(())
    })();
    drop(stdout);
    let status = child
        .wait()
        .map_err(|e| BaseError::io("waiting for tar", e))?;
    let tail = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(BaseError::Command {
            what: format!("tar could not archive {}", src.display()),
            status: status.to_string(),
            output: tail,
        });
    }
    written?;
    out.sync_all()
        .map_err(|e| BaseError::io("flushing the cache archive to disk", e))?;
    throttle.report(1.0);
    Ok(())
}
