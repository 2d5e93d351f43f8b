//! The three-way check of a rebase: a container's upper dir against the lower stack it
//! was made over (old) and the one it moves to (new). Only what the customer copied up or
//! deleted (a whiteout) can conflict, and only where the old and the new lower differ at
//! that path; everything else in the upper is the customer's and stays as it is. So the
//! work grows with the number of entries in the upper, never with the size of a base.
//!
//! Rules, first match wins (see `docs/architecture.md`, issue 10):
//! - `/var/lib/dpkg/**` and `/etc/ld.so.cache` (generated from the libraries, which the
//!   new lower may change): the new lower's (the customer's copy leaves the upper; the
//!   safety snapshot keeps it). `/var/lib/dpkg/status` is merged: the new lower's, plus
//!   the stanzas of packages the customer installed (in neither lower).
//! - `/etc/**`: the customer's version stays; the new lower's is written beside it as
//!   `<path>.osm-new` (dpkg's conffile way).
//! - a file a package of the new lower ships (listed in its `/var/lib/dpkg/info/*.list`):
//!   the new lower's.
//! - anything else: the customer's.
//!
//! Ownership: uppers of unprivileged containers are stored shifted into the container's
//! id range; the comparison is between the two lowers (both unshifted), and what the
//! rebase writes into the upper is shifted like the rest of it.
//!
//! This file holds the stacks, the rules and [`plan`]; `apply.rs` carries a plan out on
//! the upper and merges dpkg's status.

mod apply;

pub use apply::{apply, merge_status, strip_origins};

use serde::Serialize;
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A lower stack, top-most first (overlayfs' lowerdir order).
#[derive(Debug, Clone)]
pub struct Stack {
    pub lowers: Vec<PathBuf>,
}

fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    let c = crate::shift::cpath(path);
    crate::shift::get_xattr(&c, "trusted.overlay.opaque").is_some_and(|v| v == b"y")
}

impl Stack {
    /// Where `rel` comes from in the stack, as overlayfs resolves it: the first lower
    /// that has it, unless a whiteout, a non-directory or an opaque directory on the way
    /// hides what is below.
    pub fn lookup(&self, rel: &Path) -> Option<PathBuf> {
        for lower in &self.lowers {
            let full = lower.join(rel);
            if let Ok(md) = fs::symlink_metadata(&full) {
                return (!is_whiteout(&md)).then_some(full);
            }
            // Not here: does something in this lower hide the lowers below?
            let mut at = lower.clone();
            for part in rel.parent().into_iter().flat_map(Path::components) {
                at.push(part);
                match fs::symlink_metadata(&at) {
                    Ok(md) if !md.is_dir() => return None,
                    Ok(_) if is_opaque(&at) => return None,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        None
    }

    /// The names in directory `rel` across the stack (whiteouts removed).
    fn list(&self, rel: &Path) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut hidden = HashSet::new();
        for lower in &self.lowers {
            let dir = lower.join(rel);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if hidden.contains(&n) || names.contains(&n) {
                    continue;
                }
                match e.metadata() {
                    Ok(md) if is_whiteout(&md) => {
                        hidden.insert(n);
                    }
                    Ok(_) => {
                        names.insert(n);
                    }
                    Err(_) => {}
                }
            }
            if is_opaque(&dir) {
                break;
            }
        }
        names
    }

    /// Every path (absolute, as the container sees it) a package of this stack ships.
    pub fn shipped_files(&self) -> HashSet<String> {
        let info = Path::new("var/lib/dpkg/info");
        let mut out = HashSet::new();
        for name in self.list(info) {
            if !name.ends_with(".list") {
                continue;
            }
            if let Some(text) = self
                .lookup(&info.join(&name))
                .and_then(|p| fs::read_to_string(p).ok())
            {
                out.extend(text.lines().map(str::to_string));
            }
        }
        out
    }
}

/// What the customer did at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Copied up (changed, or made anew where a lower has the path).
    Changed,
    /// Deleted (a whiteout).
    Deleted,
}

/// The rule applied to a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Package-managed state: the new lower's; the customer's copy leaves the upper.
    NewLower,
    /// dpkg's status: the new lower's plus the packages the customer installed.
    MergedStatus,
    /// `/etc`: the customer's kept, the new lower's beside it as `<path>.osm-new`.
    KeepWithOsmNew,
    /// The customer's kept (data, or `/etc` where the new lower has no such file).
    Keep,
}

impl Rule {
    pub fn describe(self) -> &'static str {
        match self {
            Rule::NewLower => "package-managed: takes the new base's version",
            Rule::MergedStatus => {
                "dpkg status: the new base's, plus the packages the container installed"
            }
            Rule::KeepWithOsmNew => {
                "/etc: the container's version kept, the new one written as .osm-new"
            }
            Rule::Keep => "the container's version kept",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// As the container sees it, e.g. `/etc/motd`.
    pub path: String,
    pub change: Change,
    pub rule: Rule,
}

fn under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Whether two lower entries differ in what a container would see: type, mode, owner,
/// content or link target (times do not count: every build writes new ones). Two
/// directories are the same entry (what is inside is compared path by path).
fn differs(a: Option<&Path>, b: Option<&Path>) -> io::Result<bool> {
    let (a, b) = match (a, b) {
        (None, None) => return Ok(false),
        (Some(a), Some(b)) => (a, b),
        _ => return Ok(true),
    };
    let (ma, mb) = (fs::symlink_metadata(a)?, fs::symlink_metadata(b)?);
    if ma.file_type() != mb.file_type() {
        return Ok(true);
    }
    if ma.is_dir() {
        return Ok(false);
    }
    if ma.mode() != mb.mode() || ma.uid() != mb.uid() || ma.gid() != mb.gid() {
        return Ok(true);
    }
    let ft = ma.file_type();
    if ft.is_symlink() {
        return Ok(fs::read_link(a)? != fs::read_link(b)?);
    }
    if ft.is_char_device() || ft.is_block_device() {
        return Ok(ma.rdev() != mb.rdev());
    }
    if ft.is_file() {
        return Ok(ma.len() != mb.len() || !same_content(a, b)?);
    }
    Ok(false)
}

/// Overlay metadata that ties an upper to the lowers it was made over; the rebase
/// refuses an upper that has it (containers mount with index, metacopy and redirects
/// off, so only an upper made by other means can).
const TIED_XATTRS: [&str; 2] = ["trusted.overlay.redirect", "trusted.overlay.metacopy"];

/// The conflicts between `upper` (over `old`) and `new`, by path.
pub fn plan(upper: &Path, old: &Stack, new: &Stack) -> io::Result<Vec<Conflict>> {
    let mut found: Vec<(String, Change)> = Vec::new();
    walk(upper, Path::new(""), old, new, &mut found)?;
    let mut shipped: Option<HashSet<String>> = None;
    let mut out = Vec::new();
    for (path, change) in found {
        let rule = if path == "/var/lib/dpkg/status" && change == Change::Changed {
            Rule::MergedStatus
        } else if under(&path, "/var/lib/dpkg") || path == "/etc/ld.so.cache" {
            Rule::NewLower
        } else if under(&path, "/etc") {
            let rel = path.trim_start_matches('/');
            if new.lookup(Path::new(rel)).is_some() {
                Rule::KeepWithOsmNew
            } else {
                Rule::Keep
            }
        } else if shipped
            .get_or_insert_with(|| new.shipped_files())
            .contains(&path)
        {
            Rule::NewLower
        } else {
            Rule::Keep
        };
        out.push(Conflict { path, change, rule });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(
    upper: &Path,
    rel: &Path,
    old: &Stack,
    new: &Stack,
    found: &mut Vec<(String, Change)>,
) -> io::Result<()> {
    let dir = upper.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        let full = upper.join(&r);
        let md = fs::symlink_metadata(&full)?;
        let c = crate::shift::cpath(&full);
        if let Some(x) = TIED_XATTRS
            .iter()
            .find(|x| crate::shift::get_xattr(&c, x).is_some())
        {
            return Err(io::Error::other(format!(
                "/{} carries {x}: the upper layer is tied to the lower it was made over and \
                 cannot move to another one",
                r.display()
            )));
        }
        let (o, n) = (old.lookup(&r), new.lookup(&r));
        let change = if is_whiteout(&md) {
            Change::Deleted
        } else {
            Change::Changed
        };
        if md.is_dir() {
            // A directory in the upper is a container of copied-up entries; it conflicts
            // only when a lower has something other than a directory there.
            let non_dir = |p: &Option<PathBuf>| {
                p.as_ref()
                    .and_then(|p| fs::symlink_metadata(p).ok())
                    .is_some_and(|m| !m.is_dir())
            };
            if (non_dir(&o) || non_dir(&n)) && differs(o.as_deref(), n.as_deref())? {
                found.push((format!("/{}", r.display()), change));
            }
            // An opaque directory (the customer removed one and made it again) hides
            // every lower below it: what is inside is wholly the customer's.
            if !is_opaque(&full) {
                walk(upper, &r, old, new, found)?;
            }
            continue;
        }
        if differs(o.as_deref(), n.as_deref())? {
            found.push((format!("/{}", r.display()), change));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn only_paths_the_lowers_disagree_on_conflict_and_each_gets_its_rule() {
        let t = tempfile::tempdir().unwrap();
        let (old, new, up) = (
            t.path().join("old"),
            t.path().join("new"),
            t.path().join("up"),
        );
        for (rel, o, n) in [
            ("etc/motd", "old motd", "new motd"),
            ("etc/same", "x", "x"),
            ("etc/gone", "x", ""),
            ("usr/bin/tool", "v1", "v2"),
            ("usr/share/doc/x", "a", "b"),
            ("var/lib/dpkg/available", "a", "b"),
            ("etc/ld.so.cache", "a", "b"),
        ] {
            put(&old, rel, o);
            if !n.is_empty() {
                put(&new, rel, n);
            }
        }
        put(
            &new,
            "var/lib/dpkg/info/tool.list",
            "/usr\n/usr/bin\n/usr/bin/tool\n",
        );
        for rel in [
            "etc/motd",
            "etc/same",
            "etc/gone",
            "usr/bin/tool",
            "usr/share/doc/x",
            "var/lib/dpkg/available",
            "var/lib/foo/data",
            "etc/ld.so.cache",
        ] {
            put(&up, rel, "customer");
        }
        let old_s = Stack { lowers: vec![old] };
        let new_s = Stack {
            lowers: vec![new.clone()],
        };
        let got = plan(&up, &old_s, &new_s).unwrap();
        let rules: Vec<(&str, Rule)> = got.iter().map(|c| (c.path.as_str(), c.rule)).collect();
        assert_eq!(
            rules,
            vec![
                ("/etc/gone", Rule::Keep),
                ("/etc/ld.so.cache", Rule::NewLower),
                ("/etc/motd", Rule::KeepWithOsmNew),
                ("/usr/bin/tool", Rule::NewLower),
                ("/usr/share/doc/x", Rule::Keep),
                ("/var/lib/dpkg/available", Rule::NewLower),
            ]
        );
        assert!(got.iter().all(|c| c.change == Change::Changed));
        apply(&up, &old_s, &new_s, &got, (0, 0)).unwrap();
        assert_eq!(fs::read_to_string(up.join("etc/motd")).unwrap(), "customer");
        assert_eq!(
            fs::read_to_string(up.join("etc/motd.osm-new")).unwrap(),
            "new motd"
        );
        assert!(!up.join("usr/bin/tool").exists());
        assert!(!up.join("var/lib/dpkg/available").exists());
        assert_eq!(
            fs::read_to_string(up.join("var/lib/foo/data")).unwrap(),
            "customer"
        );
        assert_eq!(
            fs::read_to_string(up.join("usr/share/doc/x")).unwrap(),
            "customer"
        );
    }

    #[test]
    fn the_upper_lower_in_a_stack_wins_and_opaque_dirs_hide_what_is_below() {
        let t = tempfile::tempdir().unwrap();
        let (layer, base) = (t.path().join("layer"), t.path().join("base"));
        put(&base, "a/x", "base");
        put(&base, "b/y", "base");
        put(&layer, "a/x", "layer");
        fs::create_dir_all(layer.join("b")).unwrap();
        let s = Stack {
            lowers: vec![layer.clone(), base.clone()],
        };
        assert_eq!(s.lookup(Path::new("a/x")), Some(layer.join("a/x")));
        assert_eq!(s.lookup(Path::new("b/y")), Some(base.join("b/y")));
        assert_eq!(s.lookup(Path::new("c")), None);
    }
}
