//! Field checks shared by base and layer recipes (suite, component, mirror, package,
//! unit, image path, file mode, duplicates) and [`Canon`], the canonical encoding their
//! cache keys are hashed from. Each check's message names the field.

use super::{invalid, BaseError, DEFAULT_MIRROR};
use std::collections::BTreeSet;

/// Length-prefixed canonical serialization: `tag len:value` per field.
#[derive(Default)]
pub(crate) struct Canon(pub(crate) Vec<u8>);

impl Canon {
    pub(crate) fn field(&mut self, tag: &str, value: &str) {
        self.0.extend_from_slice(tag.as_bytes());
        self.0
            .extend_from_slice(format!(" {}:", value.len()).as_bytes());
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(b'\n');
    }
    pub(crate) fn list<'a>(&mut self, tag: &str, items: impl Iterator<Item = &'a str>) {
        let items: Vec<&str> = items.collect();
        self.field(tag, &items.len().to_string());
        for i in items {
            self.field("item", i);
        }
    }
}

pub(crate) fn sorted(v: &[String]) -> impl Iterator<Item = &str> {
    let set: BTreeSet<&str> = v.iter().map(String::as_str).collect();
    set.into_iter()
}

pub(crate) fn no_duplicates(field: &str, values: &[String]) -> Result<(), BaseError> {
    let mut seen = BTreeSet::new();
    for v in values {
        if !seen.insert(v) {
            return Err(invalid(format!("{field} lists {v:?} twice; list it once")));
        }
    }
    Ok(())
}

pub(crate) fn parse_mode(path: &str, mode: &str) -> Result<u32, BaseError> {
    let ok = (3..=4).contains(&mode.len()) && mode.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if !ok {
        return Err(invalid(format!(
            "files entry {path:?} has mode {mode:?}; write it as an octal string such as \"0644\" or \"0755\""
        )));
    }
    // 3-4 octal digits cannot exceed 0o7777.
    Ok(u32::from_str_radix(mode, 8).expect("checked octal digits"))
}

pub(crate) fn validate_suite(s: &str) -> Result<(), BaseError> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "suite {s:?} is not a Debian suite name; use a code name such as \"bookworm\" \
             (lowercase letters, digits, '-' and '.', starting with a letter)"
        )))
    }
}

pub(crate) fn validate_component(c: &str) -> Result<(), BaseError> {
    let ok = !c.is_empty()
        && c.len() <= 32
        && c.as_bytes()[0].is_ascii_lowercase()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "component {c:?} is not an archive component; use names such as \"main\", \"contrib\" or \"non-free-firmware\""
        )))
    }
}

pub(crate) fn validate_mirror(m: &str) -> Result<(), BaseError> {
    let rest = m
        .strip_prefix("http://")
        .or_else(|| m.strip_prefix("https://"))
        .ok_or_else(|| {
            invalid(format!(
                "mirror {m:?} is not an http(s) URL; use e.g. \"{DEFAULT_MIRROR}\""
            ))
        })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(invalid(format!(
            "mirror {m:?} has no host name; use e.g. \"{DEFAULT_MIRROR}\""
        )));
    }
    if host.contains('@') {
        return Err(invalid(format!(
            "mirror {m:?} contains credentials; they would be written into the image's sources.list, \
             so configure them with apt auth.conf instead"
        )));
    }
    if m.len() > 512 {
        return Err(invalid(format!(
            "mirror {m:?} is longer than 512 characters"
        )));
    }
    let bad = |b: u8| !b.is_ascii_graphic() || b"\"'\\<>{}|^`#?".contains(&b);
    if let Some(b) = m.bytes().find(|&b| bad(b)) {
        return Err(invalid(format!(
            "mirror {m:?} contains {:?}, which is not allowed in a mirror URL",
            b as char
        )));
    }
    Ok(())
}

/// Debian policy 5.6.1: lowercase letters, digits, `+`, `-`, `.`; at least two
/// characters; starts with a letter or digit.
pub(crate) fn validate_package(field: &str, p: &str) -> Result<(), BaseError> {
    let ok = p.len() >= 2
        && p.len() <= 100
        && (p.as_bytes()[0].is_ascii_lowercase() || p.as_bytes()[0].is_ascii_digit())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} lists {p:?}, which is not a Debian package name \
             (lowercase letters, digits, '+', '-' and '.', starting with a letter or digit)"
        )))
    }
}

const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".target",
    ".timer",
    ".path",
    ".mount",
    ".automount",
    ".swap",
    ".slice",
];

pub(crate) fn validate_unit(u: &str) -> Result<(), BaseError> {
    let suffix_ok = UNIT_SUFFIXES
        .iter()
        .any(|s| u.len() > s.len() && u.ends_with(s));
    let chars_ok = u
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":_.\\-@".contains(&b));
    let ok = suffix_ok
        && chars_ok
        && u.len() <= 255
        && !u.starts_with('-')
        && !u.starts_with('.')
        && u.matches('@').count() <= 1
        && !u.starts_with('@');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "enable lists {u:?}, which is not a systemd unit name; use a full name such as \
             \"systemd-networkd.service\" (letters, digits, ':', '_', '.', '\\', '-', one '@', \
             ending in {})",
            UNIT_SUFFIXES.join(", ")
        )))
    }
}

/// An absolute path inside the image, without `.`/`..`/empty components, not `/` itself.
pub(crate) fn validate_image_path(field: &str, p: &str) -> Result<(), BaseError> {
    let reason = if !p.starts_with('/') {
        Some("it is not absolute; start it with '/'")
    } else if p == "/" {
        Some("it is the image root itself")
    } else if p.len() > 4096 {
        Some("it is longer than 4096 bytes")
    } else if p.bytes().any(|b| b == 0 || b.is_ascii_control()) {
        Some("it contains a control character")
    } else if p[1..].split('/').any(|c| c == "..") {
        Some("it contains a '..' component")
    } else if p[1..].split('/').any(|c| c == ".") {
        Some("it contains a '.' component")
    } else if p[1..].split('/').any(|c| c.is_empty()) {
        Some("it has an empty component ('//' or a trailing '/')")
    } else if p[1..].split('/').any(|c| c.len() > 255) {
        Some("a component is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(r) => Err(invalid(format!(
            "{field} entry {p:?} is not a usable path inside the image: {r}"
        ))),
    }
}

pub(crate) fn is_same_or_under(path: &str, ancestor: &str) -> bool {
    path == ancestor
        || (path.starts_with(ancestor) && path.as_bytes().get(ancestor.len()) == Some(&b'/'))
}
