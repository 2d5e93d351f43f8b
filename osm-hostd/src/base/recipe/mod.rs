//! Base image recipes: a small TOML file saying which Debian suite to bootstrap, which
//! packages to add, and which files, units and removals to apply on top.
//!
//! Everything in a recipe ends up in argument vectors or paths inside the image, so each
//! field is checked here, before anything runs, with a message naming the field.
//!
//! This file holds [`Recipe`]; `fields.rs` holds the field checks and the canonical
//! encoding for cache keys that base and layer recipes share.

mod fields;

pub(crate) use fields::{
    is_same_or_under, no_duplicates, parse_mode, sorted, validate_component, validate_image_path,
    validate_mirror, validate_package, validate_suite, validate_unit, Canon,
};

use super::BaseError;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Default Debian mirror, used when the recipe has no `mirror`.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Default debootstrap variant, used when the recipe has no `variant`.
pub const DEFAULT_VARIANT: &str = "minbase";
/// Default mode of a recipe file.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// Bumped whenever the way a recipe is turned into a root filesystem changes, so cached
/// archives built the old way are not reused.
const BUILD_FORMAT: &str = "osm-host-base-v1";

const MAX_PACKAGES: usize = 500;
const MAX_FILE_BYTES: usize = 1 << 20;

/// A parsed and validated recipe. Build one with [`Recipe::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// Debian suite or code name given to debootstrap, e.g. `bookworm`.
    pub suite: String,
    /// http(s) URL of the Debian mirror, without a trailing `/`.
    pub mirror: String,
    /// debootstrap `--variant`: `minbase`, `buildd`, or `default` (no `--variant`).
    pub variant: String,
    /// Archive components, e.g. `["main"]`.
    pub components: Vec<String>,
    /// Packages added with `--include`.
    pub include: Vec<String>,
    /// Files written into the image after debootstrap (root-owned, exact mode).
    pub files: Vec<RecipeFile>,
    /// systemd units enabled inside the image.
    pub enable: Vec<String>,
    /// Absolute paths deleted from the image last (missing paths are fine).
    pub remove: Vec<String>,
}

/// One `[[files]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeFile {
    /// Absolute path inside the image.
    pub path: String,
    pub content: String,
    /// Permission bits, at most 0o7777.
    pub mode: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    suite: String,
    mirror: Option<String>,
    variant: Option<String>,
    components: Option<Vec<String>>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    files: Vec<RawFile>,
    #[serde(default)]
    enable: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    content: String,
    mode: Option<String>,
}

fn invalid(msg: impl Into<String>) -> BaseError {
    BaseError::InvalidRecipe(msg.into())
}

impl Recipe {
    /// Parses and validates a recipe; the error names the offending field and value.
    pub fn parse(text: &str) -> Result<Recipe, BaseError> {
        let raw: RawRecipe = toml::from_str(text)
            .map_err(|e| invalid(format!("recipe is not valid: {}", e.to_string().trim_end())))?;
        let recipe = Recipe {
            suite: raw.suite,
            mirror: raw
                .mirror
                .map(|m| m.trim_end_matches('/').to_string())
                .unwrap_or_else(|| DEFAULT_MIRROR.to_string()),
            variant: raw.variant.unwrap_or_else(|| DEFAULT_VARIANT.to_string()),
            components: raw.components.unwrap_or_else(|| vec!["main".to_string()]),
            include: raw.include,
            files: raw
                .files
                .into_iter()
                .map(|f| {
                    let mode = match f.mode {
                        None => DEFAULT_FILE_MODE,
                        Some(m) => parse_mode(&f.path, &m)?,
                    };
                    Ok(RecipeFile {
                        path: f.path,
                        content: f.content,
                        mode,
                    })
                })
                .collect::<Result<_, BaseError>>()?,
            enable: raw.enable,
            remove: raw.remove,
        };
        recipe.validate()?;
        Ok(recipe)
    }

    fn validate(&self) -> Result<(), BaseError> {
        validate_suite(&self.suite)?;
        validate_mirror(&self.mirror)?;
        if !matches!(self.variant.as_str(), "minbase" | "buildd" | "default") {
            return Err(invalid(format!(
                "variant {:?} is not supported; use \"minbase\", \"buildd\" or \"default\"",
                self.variant
            )));
        }
        if self.components.is_empty() {
            return Err(invalid("components is empty; list at least \"main\""));
        }
        for c in &self.components {
            validate_component(c)?;
        }
        no_duplicates("components", &self.components)?;
        if self.include.len() > MAX_PACKAGES {
            return Err(invalid(format!(
                "include lists {} packages; the limit is {MAX_PACKAGES}",
                self.include.len()
            )));
        }
        for p in &self.include {
            validate_package("include", p)?;
        }
        no_duplicates("include", &self.include)?;
        for f in &self.files {
            validate_image_path("files.path", &f.path)?;
            if f.content.len() > MAX_FILE_BYTES {
                return Err(invalid(format!(
                    "files entry {:?} has {} bytes of content; the limit is {MAX_FILE_BYTES} \
                     (put large content in an overlay instead)",
                    f.path,
                    f.content.len()
                )));
            }
        }
        let paths: Vec<String> = self.files.iter().map(|f| f.path.clone()).collect();
        no_duplicates("files.path", &paths)?;
        for u in &self.enable {
            validate_unit(u)?;
        }
        no_duplicates("enable", &self.enable)?;
        for r in &self.remove {
            validate_image_path("remove", r)?;
        }
        no_duplicates("remove", &self.remove)?;
        // Removals run last, so a removal covering a written file would silently undo it.
        for f in &self.files {
            if let Some(r) = self.remove.iter().find(|r| is_same_or_under(&f.path, r)) {
                return Err(invalid(format!(
                    "files entry {:?} would be deleted again by remove entry {r:?} \
                     (removals run after files are written); drop one of them",
                    f.path
                )));
            }
        }
        Ok(())
    }

    /// Hex SHA-256 of everything in the recipe that affects the result.
    ///
    /// The canonical form is length-prefixed (no field can run into the next), lists whose
    /// order does not matter are sorted, and it includes the host architecture and a
    /// build-format version, so a cache never hands out an archive built differently.
    pub fn cache_key(&self) -> String {
        let mut c = Canon::default();
        c.field("format", BUILD_FORMAT);
        c.field("arch", std::env::consts::ARCH);
        c.field("suite", &self.suite);
        c.field("mirror", &self.mirror);
        c.field("variant", &self.variant);
        // Component order is kept: it is the order written to sources.list.
        c.list("components", self.components.iter().map(String::as_str));
        c.list("include", sorted(&self.include));
        let mut files: Vec<&RecipeFile> = self.files.iter().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        c.field("files", &files.len().to_string());
        for f in files {
            c.field("path", &f.path);
            c.field("content", &f.content);
            c.field("mode", &format!("{:o}", f.mode));
        }
        c.list("enable", sorted(&self.enable));
        c.list("remove", sorted(&self.remove));
        let digest = Sha256::digest(&c.0);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const MINIMAL: &str = r#"suite = "bookworm""#;

    const FULL: &str = r##"
suite = "bookworm"
mirror = "https://deb.debian.org/debian/"
variant = "minbase"
components = ["main", "contrib"]
include = ["systemd-sysv", "iproute2", "libstdc++6"]
enable = ["systemd-networkd.service", "getty@tty1.service"]
remove = ["/etc/hostname"]

[[files]]
path = "/etc/systemd/network/eth0.network"
content = "[Match]\nName=eth0\n"

[[files]]
path = "/usr/local/bin/hello"
content = "#!/bin/sh\necho hi\n"
mode = "0755"
"##;

    fn err(text: &str) -> String {
        match Recipe::parse(text) {
            Ok(r) => panic!("recipe was accepted: {r:?}"),
            Err(e) => {
                assert!(matches!(e, BaseError::InvalidRecipe(_)), "{e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn minimal_recipe_gets_defaults() {
        let r = Recipe::parse(MINIMAL).unwrap();
        assert_eq!(r.mirror, DEFAULT_MIRROR);
        assert_eq!(r.variant, "minbase");
        assert_eq!(r.components, vec!["main"]);
        assert!(r.include.is_empty() && r.files.is_empty() && r.enable.is_empty());
    }

    #[test]
    fn full_recipe_parses() {
        let r = Recipe::parse(FULL).unwrap();
        assert_eq!(r.mirror, "https://deb.debian.org/debian");
        assert_eq!(r.files[0].mode, 0o644);
        assert_eq!(r.files[1].mode, 0o755);
        assert_eq!(r.enable.len(), 2);
    }

    #[test]
    fn shipped_bookworm_recipe_is_valid() {
        let text = include_str!("../../../../base-images/debian-bookworm.toml");
        let r = Recipe::parse(text).unwrap();
        assert_eq!(r.suite, "bookworm");
        assert!(r.include.iter().any(|p| p == "systemd-sysv"));
        assert!(r.enable.iter().any(|u| u == "systemd-networkd.service"));
        assert!(r.remove.iter().any(|p| p == "/etc/hostname"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(err("suite = \"bookworm\"\nsweet = 1").contains("sweet"));
        assert!(
            err("suite = \"bookworm\"\n[[files]]\npath = \"/a\"\ncontent = \"\"\nowner = 0")
                .contains("owner")
        );
        assert!(err("mirror = \"http://x\"").contains("suite"));
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        let cases: &[(&str, &str)] = &[
            ("suite = \"Bookworm\"", "suite"),
            ("suite = \"bookworm; rm -rf /\"", "suite"),
            ("suite = \"\"", "suite"),
            ("suite = \"bookworm\"\nmirror = \"ftp://deb.debian.org/debian\"", "http(s)"),
            ("suite = \"bookworm\"\nmirror = \"http:///debian\"", "host"),
            ("suite = \"bookworm\"\nmirror = \"http://u:p@host/debian\"", "credentials"),
            ("suite = \"bookworm\"\nmirror = \"http://host/deb ian\"", "not allowed"),
            ("suite = \"bookworm\"\nvariant = \"fat\"", "variant"),
            ("suite = \"bookworm\"\ncomponents = []", "components"),
            ("suite = \"bookworm\"\ninclude = [\"Systemd\"]", "package name"),
            ("suite = \"bookworm\"\ninclude = [\"-x\"]", "package name"),
            ("suite = \"bookworm\"\ninclude = [\"a\"]", "package name"),
            ("suite = \"bookworm\"\ninclude = [\"a,b\"]", "package name"),
            ("suite = \"bookworm\"\ninclude = [\"less\", \"less\"]", "twice"),
            ("suite = \"bookworm\"\nenable = [\"networkd\"]", "unit name"),
            ("suite = \"bookworm\"\nenable = [\"--now.service\"]", "unit name"),
            ("suite = \"bookworm\"\nenable = [\"a b.service\"]", "unit name"),
            ("suite = \"bookworm\"\nremove = [\"etc/hostname\"]", "not absolute"),
            ("suite = \"bookworm\"\nremove = [\"/etc/../../x\"]", "'..'"),
            ("suite = \"bookworm\"\nremove = [\"/\"]", "root"),
            ("suite = \"bookworm\"\nremove = [\"/etc//x\"]", "empty component"),
            ("suite = \"bookworm\"\nremove = [\"/etc/\"]", "empty component"),
            ("suite = \"bookworm\"\n[[files]]\npath = \"x\"\ncontent = \"\"", "not absolute"),
            ("suite = \"bookworm\"\n[[files]]\npath = \"/x\"\ncontent = \"\"\nmode = \"644x\"", "octal"),
            ("suite = \"bookworm\"\n[[files]]\npath = \"/x\"\ncontent = \"\"\nmode = \"17777\"", "octal"),
            ("suite = \"bookworm\"\n[[files]]\npath = \"/x\"\ncontent = \"\"\nmode = \"0999\"", "octal"),
            (
                "suite = \"bookworm\"\nremove = [\"/etc\"]\n[[files]]\npath = \"/etc/x\"\ncontent = \"\"",
                "deleted again",
            ),
        ];
        for (text, needle) in cases {
            let msg = err(text);
            assert!(
                msg.contains(needle),
                "{text:?}: message {msg:?} lacks {needle:?}"
            );
        }
    }

    #[test]
    fn cache_key_is_stable_and_hex() {
        let a = Recipe::parse(FULL).unwrap().cache_key();
        let b = Recipe::parse(FULL).unwrap().cache_key();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // Defaults spelled out give the same key as defaults left out.
        let explicit = "suite = \"bookworm\"\nmirror = \"http://deb.debian.org/debian\"\n\
                        variant = \"minbase\"\ncomponents = [\"main\"]";
        assert_eq!(
            Recipe::parse(MINIMAL).unwrap().cache_key(),
            Recipe::parse(explicit).unwrap().cache_key()
        );
    }

    #[test]
    fn cache_key_has_no_field_boundary_collisions() {
        let a = Recipe::parse("suite = \"bookworm\"\ninclude = [\"ab\", \"cd\"]").unwrap();
        let b = Recipe::parse("suite = \"bookworm\"\ninclude = [\"abc\", \"dd\"]").unwrap();
        let c = Recipe::parse(
            "suite = \"bookworm\"\ninclude = [\"ab\", \"cd\"]\nenable = [\"x.service\"]",
        )
        .unwrap();
        let d = Recipe::parse("suite = \"bookworm\"\ninclude = [\"ab\", \"cd\", \"x.service\"]");
        assert_ne!(a.cache_key(), b.cache_key());
        assert_ne!(a.cache_key(), c.cache_key());
        assert!(d.is_ok());
        assert_ne!(c.cache_key(), d.unwrap().cache_key());
    }

    #[test]
    fn cache_key_ignores_order_of_unordered_lists() {
        let a = Recipe::parse("suite = \"bookworm\"\ninclude = [\"less\", \"procps\"]").unwrap();
        let b = Recipe::parse("suite = \"bookworm\"\ninclude = [\"procps\", \"less\"]").unwrap();
        assert_eq!(a.cache_key(), b.cache_key());
    }

    #[test]
    fn cache_key_changes_with_every_field() {
        let base = Recipe::parse(FULL).unwrap();
        let key = base.cache_key();
        let mut variants: Vec<Recipe> = Vec::new();
        let mut push = |f: &dyn Fn(&mut Recipe)| {
            let mut r = base.clone();
            f(&mut r);
            variants.push(r);
        };
        push(&|r| r.suite = "trixie".into());
        push(&|r| r.mirror = "http://ftp.uk.debian.org/debian".into());
        push(&|r| r.variant = "buildd".into());
        push(&|r| r.components.push("non-free".into()));
        push(&|r| r.components.reverse());
        push(&|r| r.include.push("curl".into()));
        push(&|r| r.include.pop().map(drop).unwrap_or(()));
        push(&|r| r.files[0].content.push('x'));
        push(&|r| r.files[0].path.push('x'));
        push(&|r| r.files[1].mode = 0o750);
        push(&|r| r.files.pop().map(drop).unwrap_or(()));
        push(&|r| r.enable.push("ssh.service".into()));
        push(&|r| r.remove.push("/etc/motd".into()));
        let mut seen = BTreeSet::from([key]);
        for (i, r) in variants.iter().enumerate() {
            assert!(
                seen.insert(r.cache_key()),
                "variant {i} did not change the key: {r:?}"
            );
        }
    }
}
