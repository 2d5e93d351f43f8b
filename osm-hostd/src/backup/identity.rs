//! Who a backup tree belongs to, and what it held (issue 12).
//!
//! - The host id: a UUID generated once and kept in the store (`<store>/lxc/host-id`).
//! - A container's uuid: in its `container.toml`, chosen at create.
//! - Every tree carries `.osm-backup.toml` (the [`Manifest`]) and `.osm-backup.files`
//!   (one line per entry with its content checksum, see [`Listing`]) at its top. Backups
//!   exclude `/.osm-backup*` from rsync, so a mirror run's `--delete` never removes them,
//!   and a restore copies only `rootfs-layer/`, so they never reach a container.
//! - Layout on the target: `<target>/<host-id>/<container>/` (the mirror tree, or the
//!   directory of dated history trees, which then also holds the newest manifest).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

pub const HOST_ID_FILE: &str = "host-id";
pub const MANIFEST_FILE: &str = ".osm-backup.toml";
pub const LISTING_FILE: &str = ".osm-backup.files";
/// rsync filter keeping the two files above out of transfers (and `--delete`).
pub const EXCLUDE: &str = "--exclude=/.osm-backup*";

/// A fresh random (version 4) UUID from the kernel.
pub fn new_uuid() -> io::Result<String> {
    let text = fs::read_to_string("/proc/sys/kernel/random/uuid")?;
    let id = text.trim().to_string();
    if !is_uuid(&id) {
        return Err(io::Error::other(format!(
            "the kernel gave {id:?} as a uuid"
        )));
    }
    Ok(id)
}

/// `8-4-4-4-12` lower-case hex digits.
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| {
            p.len() == n
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// The host id kept in `lxc_dir`, generated (and written atomically) the first time.
pub fn load_or_create_host_id(lxc_dir: &Path) -> io::Result<String> {
    let path = lxc_dir.join(HOST_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(t) if is_uuid(t.trim()) => return Ok(t.trim().to_string()),
        Ok(t) => {
            return Err(io::Error::other(format!(
                "{} holds {:?}, not a host id (a uuid); restore it from a backup of the store or remove it to get a new identity (the target's trees of the old id are then another host's)",
                path.display(),
                t.trim()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = new_uuid()?;
    crate::fsutil::write_atomic(&path, format!("{id}\n").as_bytes(), 0o644)?;
    Ok(id)
}

/// One image a container's overlay stack uses, with what identifies its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub name: String,
    /// `recipe:<sha256 of the recipe>`, `import:<time>` or `unknown:<time>`.
    pub version: String,
    /// The base's archive on the target, addressed by content:
    /// `bases/<sha256>.tar.zst` (relative to the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub host_id: String,
    #[serde(default)]
    pub hostname: String,
    pub container: String,
    pub container_uuid: String,
    pub base: ImageRef,
    #[serde(default)]
    pub layers: Vec<ImageRef>,
    pub osm_host_version: String,
    /// Seconds since the epoch when the backup started.
    pub time: u64,
    /// `mirror` or the history tree's name.
    pub tree: String,
    /// sha256 of the tree's `.osm-backup.files`.
    pub listing_sha256: String,
}

impl Manifest {
    pub fn to_toml(&self) -> String {
        format!(
            "# Written by osm-hostd after a verified backup; `osm-hostctl backup verify` checks the tree against it.\n{}",
            toml::to_string(self).expect("a manifest serializes")
        )
    }

    pub fn parse(text: &str) -> Result<Manifest, String> {
        toml::from_str(text).map_err(|e| format!("not a backup manifest: {e}"))
    }

    /// Whether a run of (`host_id`, `uuid`) may write into the tree this manifest
    /// describes; the error says what to do instead.
    pub fn check_owner(
        &self,
        host_id: &str,
        name: &str,
        uuid: &str,
        dir: &str,
    ) -> Result<(), String> {
        if self.host_id != host_id {
            return Err(format!(
                "{dir} belongs to host {} ({}), not this host ({host_id}); refusing to overwrite it. Check backup.target, or move the directory away if that host is gone for good",
                self.host_id, self.hostname
            ));
        }
        if self.container_uuid != uuid {
            return Err(format!(
                "{dir} holds another container named {name} (uuid {}, this one is {uuid}): it was deleted and re-created since. Move or delete that tree on the target to back this one up (restore from it first with `osm-hostctl backup restore {name} --as NEWNAME` if it is still needed)",
                self.container_uuid
            ));
        }
        Ok(())
    }
}

/// sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    hash_file(path)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// One entry of a listing: `kind` is the content: a regular file's sha256, `l:<sha256 of
/// the link target>`, `c:<rdev>`/`b:<rdev>`, `d` or `p`/`s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub content: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
}

impl Listed {
    fn same_meta(&self, o: &Listed) -> bool {
        (self.mode, self.uid, self.gid, self.size, self.mtime)
            == (o.mode, o.uid, o.gid, o.size, o.mtime)
    }
}

/// Every entry of a tree (relative path → entry), as backups copy it: the top-level
/// `.snapshots`, `work/`'s contents and `/.osm-backup*` left out, not crossing into
/// another file system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing(pub BTreeMap<String, Listed>);

fn escape(p: &str) -> String {
    p.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut it = p.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

impl Listing {
    /// Walks `root`. A regular file whose path and metadata equal `reuse`'s entry takes
    /// its checksum from there (a backup's quick check, as rsync's); `None` reads all.
    pub fn of_tree(root: &Path, reuse: Option<&Listing>) -> io::Result<Listing> {
        let root_dev = fs::symlink_metadata(root)?.dev();
        let mut out = BTreeMap::new();
        let mut stack = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, rel_dir)) = stack.pop() {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let fname = entry.file_name();
                let at_top = rel_dir.is_empty();
                let b = fname.as_bytes();
                if at_top && (b == b".snapshots" || b.starts_with(b".osm-backup")) {
                    continue;
                }
                let name = String::from_utf8_lossy(b).into_owned();
                let rel = if at_top {
                    name
                } else {
                    format!("{rel_dir}/{name}")
                };
                let path = entry.path();
                let md = fs::symlink_metadata(&path)?;
                let ft = md.file_type();
                let mut l = Listed {
                    content: String::new(),
                    mode: md.mode(),
                    uid: md.uid(),
                    gid: md.gid(),
                    size: 0,
                    mtime: md.mtime(),
                };
                if ft.is_dir() {
                    l.content = "d".into();
                    l.mtime = 0;
                    if md.dev() == root_dev && !(at_top && b == b"work") {
                        stack.push((path, rel.clone()));
                    }
                } else if ft.is_file() {
                    l.size = md.len();
                    l.content = match reuse.and_then(|r| r.0.get(&rel)) {
                        Some(old) if old.same_meta(&l) && !old.content.contains(':') => {
                            old.content.clone()
                        }
                        _ => hash_file(&path)?,
                    };
                } else if ft.is_symlink() {
                    let t = fs::read_link(&path)?;
                    l.content = format!("l:{}", sha256_hex(t.as_os_str().as_bytes()));
                    // A symlink's own mtime is not kept by every receiver.
                    l.mtime = 0;
                } else if ft.is_char_device() {
                    l.content = format!("c:{}", md.rdev());
                } else if ft.is_block_device() {
                    l.content = format!("b:{}", md.rdev());
                } else if ft.is_fifo() {
                    l.content = "p".into();
                } else {
                    l.content = "s".into();
                }
                out.insert(rel, l);
            }
        }
        Ok(Listing(out))
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (p, l) in &self.0 {
            s.push_str(&format!(
                "{} {:o} {} {} {} {} {}\n",
                l.content,
                l.mode,
                l.uid,
                l.gid,
                l.size,
                l.mtime,
                escape(p)
            ));
        }
        s
    }

    pub fn parse(text: &str) -> Result<Listing, String> {
        let mut out = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let f: Vec<&str> = line.splitn(7, ' ').collect();
            let bad = || format!("line {} of the listing is malformed", i + 1);
            if f.len() != 7 {
                return Err(bad());
            }
            let l = Listed {
                content: f[0].to_string(),
                mode: u32::from_str_radix(f[1], 8).map_err(|_| bad())?,
                uid: f[2].parse().map_err(|_| bad())?,
                gid: f[3].parse().map_err(|_| bad())?,
                size: f[4].parse().map_err(|_| bad())?,
                mtime: f[5].parse().map_err(|_| bad())?,
            };
            out.insert(unescape(f[6]), l);
        }
        Ok(Listing(out))
    }

    /// What differs between the recorded listing (`self`) and the tree now (`now`), at
    /// most `limit` descriptions.
    pub fn differences(&self, now: &Listing, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        for (p, want) in &self.0 {
            let msg = match now.0.get(p) {
                None => Some(format!("{p}: missing")),
                Some(got) if got.content != want.content => Some(format!("{p}: content changed")),
                Some(got) if !got.same_meta(want) => Some(format!("{p}: metadata changed")),
                _ => None,
            };
            if let Some(m) = msg {
                out.push(m);
            }
        }
        for p in now.0.keys() {
            if !self.0.contains_key(p) {
                out.push(format!("{p}: not in the backup's listing"));
            }
        }
        out.truncate(limit);
        out
    }

    /// The regular files' checksums only (what an ssh target's `sha256sum` reports).
    pub fn file_sums(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter(|(_, l)| !l.content.contains(':') && l.content.len() == 64)
            .map(|(p, l)| (p.clone(), l.content.clone()))
            .collect()
    }
}

/// Parses `sha256sum` output (`<hex>  ./path`, a leading `\` when the name was escaped).
pub fn parse_sha256sum(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(l) => (true, l),
            None => (false, line),
        };
        let Some((sum, path)) = line.split_once("  ") else {
            continue;
        };
        let path = path.strip_prefix("./").unwrap_or(path);
        let path = if escaped {
            unescape(path)
        } else {
            path.to_string()
        };
        out.insert(path, sum.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_and_host_id() {
        let id = new_uuid().unwrap();
        assert!(is_uuid(&id), "{id}");
        assert!(!is_uuid("not-a-uuid"));
        assert!(!is_uuid("ABCDEFAB-1234-1234-1234-123456789012"));
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create_host_id(d.path()).unwrap();
        assert_eq!(load_or_create_host_id(d.path()).unwrap(), a, "stable");
        std::fs::write(d.path().join(HOST_ID_FILE), "junk\n").unwrap();
        assert!(load_or_create_host_id(d.path()).is_err());
    }

    #[test]
    fn listing_round_trips_and_sees_changes() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("rootfs-layer/etc")).unwrap();
        fs::create_dir_all(r.join("work/work")).unwrap();
        fs::write(r.join("rootfs-layer/etc/a b\nc"), "one").unwrap();
        fs::write(r.join(MANIFEST_FILE), "x").unwrap();
        std::os::unix::fs::symlink("etc", r.join("rootfs-layer/link")).unwrap();
        let l = Listing::of_tree(r, None).unwrap();
        assert!(l.0.contains_key("rootfs-layer/etc/a b\nc"));
        assert!(l.0.contains_key("work") && !l.0.contains_key("work/work"));
        assert!(!l.0.contains_key(MANIFEST_FILE));
        let back = Listing::parse(&l.to_text()).unwrap();
        assert_eq!(back, l);
        assert!(l
            .differences(&Listing::of_tree(r, Some(&l)).unwrap(), 5)
            .is_empty());
        // Same size, same mtime, other content: a full read sees it.
        let f = r.join("rootfs-layer/etc/a b\nc");
        let mtime = fs::metadata(&f).unwrap().modified().unwrap();
        fs::write(&f, "two").unwrap();
        fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let now = Listing::of_tree(r, None).unwrap();
        assert_eq!(
            l.differences(&now, 5),
            vec!["rootfs-layer/etc/a b\nc: content changed".to_string()]
        );
        assert_eq!(l.file_sums().len(), 1);
    }

    #[test]
    fn manifests_refuse_other_owners() {
        let m = Manifest {
            format: 1,
            host_id: "h1".into(),
            hostname: "a".into(),
            container: "web1".into(),
            container_uuid: "u1".into(),
            base: ImageRef {
                name: "bb".into(),
                version: "import:1".into(),
                archive: Some("bases/ab.tar.zst".into()),
            },
            layers: vec![],
            osm_host_version: "0".into(),
            time: 1,
            tree: "mirror".into(),
            listing_sha256: "x".into(),
        };
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
        assert!(m.check_owner("h1", "web1", "u1", "/t").is_ok());
        assert!(m
            .check_owner("h2", "web1", "u1", "/t")
            .unwrap_err()
            .contains("belongs to host h1"));
        assert!(m
            .check_owner("h1", "web1", "u2", "/t")
            .unwrap_err()
            .contains("re-created"));
        assert_eq!(
            parse_sha256sum("abc  ./x/y\n\\def  ./a\\nb\n"),
            BTreeMap::from([
                ("x/y".to_string(), "abc".to_string()),
                ("a\nb".to_string(), "def".to_string())
            ])
        );
    }
}
