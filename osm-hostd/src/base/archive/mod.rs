//! Root filesystem archives: checking an archive before it is unpacked, unpacking it with
//! GNU tar, and writing the build cache's `.tar.zst`.
//!
//! Decompression happens here (the magic bytes decide, not the file name) and GNU tar does
//! the filesystem work, because it restores everything a rootfs needs: numeric owners,
//! modes including set-id bits, xattrs (`trusted.*`, `security.capability`), ACLs, hard
//! links and device nodes (overlay whiteouts are `c 0 0`).
//!
//! - this file: compression detection, the decompressing reader, [`private_copy`];
//! - `validate.rs`: [`validate_archive`], the entry-by-entry safety check;
//! - `gnu_tar.rs`: [`extract_archive`] and [`write_tar_zst`], which run GNU tar.

mod gnu_tar;
mod validate;

pub use gnu_tar::extract_archive;
pub(crate) use gnu_tar::write_tar_zst;
pub use validate::validate_archive;

use super::BaseError;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// GNU tar; `/bin` is a symlink to `/usr/bin` on merged-/usr Debian, so this works on both.
pub(crate) const TAR: &str = "/bin/tar";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn detect(file: &mut File) -> Result<Compression, BaseError> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| BaseError::io("seeking to the start of the archive", e))?;
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        match file.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BaseError::io("reading the archive", e)),
        }
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| BaseError::io("seeking to the start of the archive", e))?;
    let m = &magic[..n];
    if m.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) || m.starts_with(b"BZh") {
        Err(BaseError::InvalidArchive(
            "the archive is xz or bzip2 compressed, which is not supported; \
             recompress it with zstd or gzip (or give a plain tar)"
                .into(),
        ))
    } else if n == 0 {
        Err(BaseError::InvalidArchive(
            "the archive file is empty".into(),
        ))
    } else {
        Ok(Compression::None)
    }
}

/// A reader over the decompressed archive. `R` is the raw (compressed) byte source.
fn decoder<'a, R: Read + 'a>(kind: Compression, raw: R) -> Result<Box<dyn Read + 'a>, BaseError> {
    Ok(match kind {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(raw))),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(raw)
                .map_err(|e| BaseError::io("starting the zstd decoder", e))?,
        ),
    })
}

/// Copies a caller's archive into an unnamed file (`O_TMPFILE`) in `tmp_dir`, readable
/// and writable only through the returned handle.
///
/// [`validate_archive`] and [`extract_archive`] read the archive twice; when the file came
/// from someone else (an fd passed over D-Bus), that someone could change it between the
/// two passes. Validating and extracting this private copy closes the gap. `tmp_dir`
/// should be on the store's filesystem (the copy is as large as the archive) and the copy
/// disappears when the handle is dropped.
pub fn private_copy(src: &mut File, tmp_dir: &Path) -> Result<File, BaseError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut copy = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(tmp_dir)
        .map_err(|e| {
            BaseError::io(
                format!(
                    "creating a private copy of the archive in {}",
                    tmp_dir.display()
                ),
                e,
            )
        })?;
    src.seek(SeekFrom::Start(0))
        .map_err(|e| BaseError::io("seeking to the start of the archive", e))?;
    io::copy(src, &mut copy).map_err(|e| BaseError::io("copying the archive", e))?;
    copy.seek(SeekFrom::Start(0))
        .map_err(|e| BaseError::io("rewinding the copy of the archive", e))?;
    Ok(copy)
}

fn not_tar(e: io::Error) -> BaseError {
    BaseError::InvalidArchive(format!(
        "the file is not a readable tar archive ({e}); give a tar, tar.gz or tar.zst of a root filesystem"
    ))
}
