//! Validation of names that come from callers, and their D-Bus object path form.
//!
//! Container names become the LXC name, the hostname, the DHCP name and an object
//! path element, so they are DNS labels. Base and layer names name directories in the
//! store and are slightly more permissive (dots and underscores, for versions).

use std::fmt;

/// Why a name was refused; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {name:?}: {reason}")]
pub struct NameError {
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
}

fn refuse(kind: &'static str, name: &str, reason: impl fmt::Display) -> NameError {
    NameError {
        kind,
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

/// A container name: a DNS label, `[a-z0-9-]`, 1–63 characters, no leading or trailing `-`.
pub fn validate_container_name(name: &str) -> Result<(), NameError> {
    const KIND: &str = "container";
    if name.is_empty() {
        return Err(refuse(
            KIND,
            name,
            "it is empty; use 1-63 characters of a-z, 0-9 and '-'",
        ));
    }
    if name.len() > 63 {
        return Err(refuse(
            KIND,
            name,
            format!("it has {} characters; the limit is 63", name.len()),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(refuse(
            KIND,
            name,
            format!("character {c:?} is not allowed; use lowercase a-z, 0-9 and '-'"),
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(refuse(KIND, name, "it must not start or end with '-'"));
    }
    Ok(())
}

/// A base image or layer name: `[A-Za-z0-9._-]`, 1–64 characters, starting with a letter
/// or digit; optionally versioned as `NAME@VERSION` (the version by the same rules).
pub fn validate_image_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    let Some((plain, version)) = name.split_once('@') else {
        return validate_plain_image_name(kind, name);
    };
    validate_plain_image_name(kind, plain)?;
    let ok = !version.is_empty()
        && version.len() <= 64
        && version.as_bytes()[0].is_ascii_alphanumeric()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(refuse(
            kind,
            name,
            "the version after '@' must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-', \
             starting with a letter or a digit (e.g. bookworm@20261129)",
        ));
    }
    Ok(())
}

/// The name without its `@VERSION`, if any.
pub fn image_base_name(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

fn validate_plain_image_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > 64 {
        return Err(refuse(
            kind,
            name,
            "use 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(refuse(
            kind,
            name,
            format!("character {c:?} is not allowed; use A-Z, a-z, 0-9, '.', '_' and '-'"),
        ));
    }
    if !name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Err(refuse(kind, name, "it must start with a letter or a digit"));
    }
    if name.ends_with(".toml") {
        return Err(refuse(kind, name, "it must not end in '.toml'"));
    }
    Ok(())
}

pub use osm_host_bus::escape::{escape_path_element, unescape_path_element};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_may_carry_one_version() {
        for ok in [
            "bookworm@20261129",
            "bookworm@12.5",
            "osm-stack@2026-11-29.a1b2",
        ] {
            assert!(validate_image_name("base", ok).is_ok(), "{ok}");
        }
        for bad in ["bookworm@", "@1", "a@b@c", "a@-1", "a@b c", "a@b/c"] {
            let e = validate_image_name("base", bad).unwrap_err().to_string();
            assert!(e.contains("base"), "{bad}: {e}");
        }
        assert_eq!(image_base_name("bookworm@2"), "bookworm");
        assert_eq!(image_base_name("bookworm"), "bookworm");
    }

    #[test]
    fn container_names_follow_dns_label_rules() {
        for ok in ["a", "web1", "customer-42", &"a".repeat(63)] {
            assert!(
                validate_container_name(ok).is_ok(),
                "{ok} should be accepted"
            );
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Web",
            "a_b",
            "a.b",
            "a b",
            "ü",
            &"a".repeat(64),
            "../x",
        ] {
            let err = validate_container_name(bad).unwrap_err();
            assert_eq!(err.name, bad);
        }
    }

    #[test]
    fn refusal_says_what_is_allowed() {
        let err = validate_container_name("Web").unwrap_err().to_string();
        assert!(err.contains("'W'") && err.contains("lowercase"), "{err}");
    }

    #[test]
    fn image_names_allow_versions_but_not_paths() {
        for ok in ["bookworm", "debian-12.8", "base_2026.11"] {
            assert!(validate_image_name("base", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "..", "x.toml", "a:b"] {
            assert!(validate_image_name("base", bad).is_err(), "{bad}");
        }
    }
}
