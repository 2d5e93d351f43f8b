//! The checks a parsed layer recipe must pass before anything runs: names, limits,
//! sources and their keys, paths outside the reserved directory, template placeholders,
//! command vectors. Each message names the field.

use super::{invalid, AptSource, LayerRecipe, SigningKey, PLACEHOLDERS, RESERVED_DIR};
use crate::base::recipe::{
    is_same_or_under, no_duplicates, validate_component, validate_image_path, validate_mirror,
    validate_package, validate_unit,
};
use crate::base::BaseError;

const MAX_PACKAGES: usize = 500;
const MAX_FILE_BYTES: usize = 1 << 20;
const MAX_RUN: usize = 100;
const MAX_ARGS: usize = 256;
const ARMOR_BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const ARMOR_END: &str = "-----END PGP PUBLIC KEY BLOCK-----";

impl LayerRecipe {
    pub(super) fn validate(&self) -> Result<(), BaseError> {
        check_name("name", &self.name)?;
        check_name("base", &self.base)?;
        for l in &self.layers {
            check_name("layers", l)?;
            if *l == self.name {
                return Err(invalid(format!(
                    "layers lists {l:?}, the layer itself; a layer cannot build on itself"
                )));
            }
        }
        no_duplicates("layers", &self.layers)?;
        if self.packages.len() > MAX_PACKAGES {
            return Err(invalid(format!(
                "packages lists {} packages; the limit is {MAX_PACKAGES}",
                self.packages.len()
            )));
        }
        for p in &self.packages {
            validate_package("packages", p)?;
        }
        no_duplicates("packages", &self.packages)?;
        for s in &self.sources {
            self.validate_source(s)?;
        }
        let names: Vec<String> = self.sources.iter().map(|s| s.name.clone()).collect();
        no_duplicates("sources.name", &names)?;
        for (field, list) in [("files", &self.files), ("templates", &self.templates)] {
            for f in list {
                validate_image_path(&format!("{field}.path"), &f.path)?;
                if is_same_or_under(&f.path, RESERVED_DIR) {
                    return Err(invalid(format!(
                        "{field} entry {:?} is under {RESERVED_DIR}, which osm-host keeps for \
                         itself; choose another path",
                        f.path
                    )));
                }
                if f.content.len() > MAX_FILE_BYTES {
                    return Err(invalid(format!(
                        "{field} entry {:?} has {} bytes of content; the limit is {MAX_FILE_BYTES}",
                        f.path,
                        f.content.len()
                    )));
                }
            }
        }
        for t in &self.templates {
            check_placeholders(&t.path, &t.content)?;
        }
        let paths: Vec<String> = self
            .files
            .iter()
            .chain(&self.templates)
            .map(|f| f.path.clone())
            .collect();
        no_duplicates("files.path and templates.path", &paths)?;
        if self.run.len() > MAX_RUN {
            return Err(invalid(format!(
                "run lists {} commands; the limit is {MAX_RUN}",
                self.run.len()
            )));
        }
        for (i, argv) in self.run.iter().enumerate() {
            check_argv(i, argv)?;
        }
        for u in &self.enable {
            validate_unit(u)?;
        }
        no_duplicates("enable", &self.enable)?;
        Ok(())
    }

    fn validate_source(&self, s: &AptSource) -> Result<(), BaseError> {
        let ok = !s.name.is_empty()
            && s.name.len() <= 64
            && s.name.as_bytes()[0].is_ascii_lowercase()
            && s.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(invalid(format!(
                "sources.name {:?} is not usable as a file name; use lowercase letters, digits \
                 and '-', starting with a letter (e.g. \"grafana\")",
                s.name
            )));
        }
        let ctx = |e: BaseError| invalid(format!("sources entry {:?}: uri: {e}", s.name));
        validate_mirror(&s.uri).map_err(ctx)?;
        if s.suites.is_empty() {
            return Err(invalid(format!(
                "sources entry {:?} has no suites; list at least one (e.g. [\"stable\"])",
                s.name
            )));
        }
        for suite in &s.suites {
            let ok = !suite.is_empty()
                && suite.len() <= 64
                && suite
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(invalid(format!(
                    "sources entry {:?} has suite {suite:?}; use letters, digits, '-', '_' and '.'",
                    s.name
                )));
            }
        }
        if s.components.is_empty() {
            return Err(invalid(format!(
                "sources entry {:?} has no components; list at least one (e.g. [\"main\"])",
                s.name
            )));
        }
        for c in &s.components {
            validate_component(c)
                .map_err(|e| invalid(format!("sources entry {:?}: {e}", s.name)))?;
        }
        match &s.key {
            SigningKey::Armored(k) => {
                check_armored(&format!("key of sources entry {:?}", s.name), k)?
            }
            SigningKey::File(f) => {
                let bad = f.is_empty()
                    || f.starts_with('/')
                    || f.split('/').any(|c| c.is_empty() || c == "." || c == "..")
                    || f.bytes().any(|b| b.is_ascii_control());
                if bad {
                    return Err(invalid(format!(
                        "sources entry {:?} has key_file {f:?}; give a path relative to the \
                         recipe's directory, without '..' (e.g. \"keys/grafana.asc\")",
                        s.name
                    )));
                }
            }
        }
        if let Some(u) = &s.key_url {
            if !u.starts_with("https://") || u.bytes().any(|b| !b.is_ascii_graphic()) {
                return Err(invalid(format!(
                    "sources entry {:?} has key_url {u:?}; give the https URL the key is \
                     published at",
                    s.name
                )));
            }
        }
        Ok(())
    }
}

fn check_name(field: &str, name: &str) -> Result<(), BaseError> {
    crate::names::validate_image_name("layer", name).map_err(|e| invalid(format!("{field}: {e}")))
}

pub(super) fn check_armored(what: &str, text: &str) -> Result<(), BaseError> {
    let t = text.trim();
    if t.starts_with(ARMOR_BEGIN) && t.ends_with(ARMOR_END) && t.len() <= MAX_FILE_BYTES {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} is not an ASCII-armored OpenPGP public key (text from {ARMOR_BEGIN} to \
             {ARMOR_END}); export it with `gpg --armor --export` or download the publisher's .asc"
        )))
    }
}

/// Every `{{...}}` in a template must be a known placeholder.
fn check_placeholders(path: &str, content: &str) -> Result<(), BaseError> {
    let mut rest = content;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| {
            invalid(format!(
                "templates entry {path:?} has an unclosed '{{{{'; placeholders are written \
                 {{{{name}}}}"
            ))
        })?;
        let key = &after[..end];
        if !PLACEHOLDERS.contains(&key) {
            return Err(invalid(format!(
                "templates entry {path:?} uses placeholder {{{{{key}}}}}; the known placeholders \
                 are {}",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{{{p}}}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

fn check_argv(i: usize, argv: &[String]) -> Result<(), BaseError> {
    let Some(first) = argv.first() else {
        return Err(invalid(format!(
            "run command {} is empty; give an argument vector such as [\"update-ca-certificates\"]",
            i + 1
        )));
    };
    if first.is_empty() || first.contains(char::is_whitespace) {
        return Err(invalid(format!(
            "run command {} starts with {first:?}, which is not a program name; commands are \
             argument vectors, not shell strings (use [\"sh\", \"-c\", \"...\"] for a shell)",
            i + 1
        )));
    }
    if argv.len() > MAX_ARGS {
        return Err(invalid(format!(
            "run command {} has {} arguments; the limit is {MAX_ARGS}",
            i + 1,
            argv.len()
        )));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(invalid(format!(
            "run command {} contains a NUL byte",
            i + 1
        )));
    }
    Ok(())
}
