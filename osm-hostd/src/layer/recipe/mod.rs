//! Layer recipes (`overlays/*.toml`): what to install over a base (and lower layers) to make
//! a read-only layer that containers stack between their base and their own upper layer.
//!
//! Like base recipes, every field ends up in argument vectors or paths inside the image, so
//! each is checked before anything runs, with a message naming the field. Signing keys of
//! extra apt sources are either inline (`key`, ASCII-armored) or a file next to the recipe
//! (`key_file`); the client reads key files and sends their text with the recipe, and
//! [`LayerRecipe::resolve_keys`] puts it in place before a build.
//!
//! This file holds the recipe's shape, parsing, keys and cache key; `checks.rs` holds the
//! field-by-field checks a parsed recipe must pass.

mod checks;

use checks::check_armored;

use crate::base::recipe::{parse_mode, sorted, Canon};
use crate::base::{BaseError, DEFAULT_FILE_MODE};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Bumped whenever the way a layer recipe is turned into a layer changes.
const BUILD_FORMAT: &str = "osm-host-layer-v1";

/// Where the build keeps its own files inside a layer; recipes may not write there.
pub const RESERVED_DIR: &str = "/usr/lib/osm-host";
/// Unrendered templates, at `TEMPLATE_DIR` + their path.
pub const TEMPLATE_DIR: &str = "/usr/lib/osm-host/templates";
/// The placeholders a template may use, and what they become at first boot.
pub const PLACEHOLDERS: &[&str] = &["name"];

/// A parsed and validated layer recipe. Build one with [`LayerRecipe::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecipe {
    /// The layer's name; a build must use the same name.
    pub name: String,
    /// The base the layer is built over.
    pub base: String,
    /// Layers between the base and this one, lowest first.
    pub layers: Vec<String>,
    /// Debian packages installed with apt-get (from the base's sources and `sources`).
    pub packages: Vec<String>,
    /// Extra apt repositories, each with its signing key.
    pub sources: Vec<AptSource>,
    /// Files written into the layer (root-owned, exact mode).
    pub files: Vec<LayerFile>,
    /// Files rendered per container at its first boot (`{{name}}` = container name).
    pub templates: Vec<LayerFile>,
    /// Commands run in the image after packages and files, as argument vectors.
    pub run: Vec<Vec<String>>,
    /// systemd units enabled in the layer.
    pub enable: Vec<String>,
}

/// One `[[files]]` or `[[templates]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFile {
    pub path: String,
    pub content: String,
    pub mode: u32,
}

/// One `[[sources]]` entry: a deb822 source written to `/etc/apt/sources.list.d/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// File name stem: `/etc/apt/sources.list.d/osm-<name>.sources` and
    /// `/etc/apt/keyrings/osm-<name>.asc`.
    pub name: String,
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub key: SigningKey,
    /// Where the key is published (documentation only; never fetched).
    pub key_url: Option<String>,
}

/// A source's signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKey {
    /// ASCII-armored key text.
    Armored(String),
    /// A file relative to the recipe's directory, not read yet.
    File(String),
}

impl AptSource {
    /// Path of the key inside the image.
    pub fn keyring_path(&self) -> String {
        format!("/etc/apt/keyrings/osm-{}.asc", self.name)
    }
    /// Path of the deb822 source inside the image.
    pub fn list_path(&self) -> String {
        format!("/etc/apt/sources.list.d/osm-{}.sources", self.name)
    }
    /// The deb822 text of the source, signed by its key.
    pub fn deb822(&self) -> String {
        format!(
            "Types: deb\nURIs: {}\nSuites: {}\nComponents: {}\nSigned-By: {}\n",
            self.uri,
            self.suites.join(" "),
            self.components.join(" "),
            self.keyring_path()
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    name: String,
    base: String,
    #[serde(default)]
    layers: Vec<String>,
    #[serde(default)]
    packages: Vec<String>,
    #[serde(default)]
    sources: Vec<RawSource>,
    #[serde(default)]
    files: Vec<RawFile>,
    #[serde(default)]
    templates: Vec<RawFile>,
    #[serde(default)]
    run: Vec<Vec<String>>,
    #[serde(default)]
    enable: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    uri: String,
    suites: Vec<String>,
    components: Vec<String>,
    key: Option<String>,
    key_file: Option<String>,
    key_url: Option<String>,
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

fn files(raw: Vec<RawFile>) -> Result<Vec<LayerFile>, BaseError> {
    raw.into_iter()
        .map(|f| {
            let mode = match f.mode {
                None => DEFAULT_FILE_MODE,
                Some(m) => parse_mode(&f.path, &m)?,
            };
            Ok(LayerFile {
                path: f.path,
                content: f.content,
                mode,
            })
        })
        .collect()
}

impl LayerRecipe {
    /// Parses and validates a layer recipe; the error names the offending field and value.
    /// Key files are checked for shape only (a relative path); see [`Self::resolve_keys`].
    pub fn parse(text: &str) -> Result<LayerRecipe, BaseError> {
        let raw: RawRecipe = toml::from_str(text).map_err(|e| {
            invalid(format!(
                "layer recipe is not valid: {}",
                e.to_string().trim_end()
            ))
        })?;
        let mut sources = Vec::new();
        for s in raw.sources {
            let key = match (s.key, s.key_file) {
                (Some(k), None) => SigningKey::Armored(k),
                (None, Some(f)) => SigningKey::File(f),
                (Some(_), Some(_)) => {
                    return Err(invalid(format!(
                        "sources entry {:?} has both key and key_file; give one of them",
                        s.name
                    )))
                }
                (None, None) => {
                    return Err(invalid(format!(
                        "sources entry {:?} has no signing key; give key (ASCII-armored text) or \
                         key_file (a file next to the recipe): unsigned repositories are refused",
                        s.name
                    )))
                }
            };
            sources.push(AptSource {
                name: s.name,
                uri: s.uri.trim_end_matches('/').to_string(),
                suites: s.suites,
                components: s.components,
                key,
                key_url: s.key_url,
            });
        }
        let recipe = LayerRecipe {
            name: raw.name,
            base: raw.base,
            layers: raw.layers,
            packages: raw.packages,
            sources,
            files: files(raw.files)?,
            templates: files(raw.templates)?,
            run: raw.run,
            enable: raw.enable,
        };
        recipe.validate()?;
        Ok(recipe)
    }

    /// The key files the recipe names (relative to its directory).
    pub fn key_files(&self) -> Vec<String> {
        self.sources
            .iter()
            .filter_map(|s| match &s.key {
                SigningKey::File(f) => Some(f.clone()),
                SigningKey::Armored(_) => None,
            })
            .collect()
    }

    /// Replaces every `key_file` with the text given for it in `texts` (path → content),
    /// checking it is an ASCII-armored public key.
    pub fn resolve_keys(&mut self, texts: &BTreeMap<String, String>) -> Result<(), BaseError> {
        for s in &mut self.sources {
            if let SigningKey::File(f) = &s.key {
                let text = texts.get(f).ok_or_else(|| {
                    invalid(format!(
                        "sources entry {:?}: key_file {f:?} was not sent with the recipe; place \
                         the key there, next to the recipe (its publisher's URL is {})",
                        s.name,
                        s.key_url.as_deref().unwrap_or("not given")
                    ))
                })?;
                check_armored(
                    &format!("key_file {f:?} of sources entry {:?}", s.name),
                    text,
                )?;
                s.key = SigningKey::Armored(text.clone());
            }
        }
        Ok(())
    }

    /// Hex SHA-256 of everything that affects the built layer: the recipe (with key texts,
    /// without the names of base and lower layers), the identity of what it is built over (`lower_keys`: the base's recipe key, then each
    /// lower layer's key, lowest first), the host architecture and a build-format version.
    pub fn cache_key(&self, lower_keys: &[String]) -> String {
        let mut c = Canon::default();
        c.field("format", BUILD_FORMAT);
        c.field("arch", std::env::consts::ARCH);
        // What the layer is built over counts by identity, not by name: the same base under
        // another name or version reuses the cache.
        c.list("lower-keys", lower_keys.iter().map(String::as_str));
        c.list("packages", sorted(&self.packages));
        c.field("sources", &self.sources.len().to_string());
        for s in &self.sources {
            c.field("name", &s.name);
            c.field("uri", &s.uri);
            c.list("suites", s.suites.iter().map(String::as_str));
            c.list("components", s.components.iter().map(String::as_str));
            match &s.key {
                SigningKey::Armored(k) => c.field("key", k),
                SigningKey::File(f) => c.field("key-file", f),
            }
        }
        for (tag, list) in [("files", &self.files), ("templates", &self.templates)] {
            let mut list: Vec<&LayerFile> = list.iter().collect();
            list.sort_by(|a, b| a.path.cmp(&b.path));
            c.field(tag, &list.len().to_string());
            for f in list {
                c.field("path", &f.path);
                c.field("content", &f.content);
                c.field("mode", &format!("{:o}", f.mode));
            }
        }
        // Commands run in order: the order is kept.
        c.field("run", &self.run.len().to_string());
        for argv in &self.run {
            c.list("argv", argv.iter().map(String::as_str));
        }
        c.list("enable", sorted(&self.enable));
        let digest = Sha256::digest(&c.0);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF\n-----END PGP PUBLIC KEY BLOCK-----\n";

    fn err(text: &str) -> String {
        match LayerRecipe::parse(text) {
            Ok(r) => panic!("recipe was accepted: {r:?}"),
            Err(e) => {
                assert!(matches!(e, BaseError::InvalidRecipe(_)), "{e:?}");
                e.to_string()
            }
        }
    }

    #[test]
    fn shipped_mqtt_recipe_is_valid() {
        let r = LayerRecipe::parse(include_str!("../../../../overlays/mqtt.toml")).unwrap();
        assert_eq!(r.name, "mqtt");
        assert_eq!(r.base, "bookworm");
        assert!(r.packages.iter().any(|p| p == "mosquitto"));
        assert!(r.packages.iter().any(|p| p == "mosquitto-clients"));
        assert!(r.sources.is_empty(), "Debian packages only");
        assert!(r.files.iter().any(|f| f.content.contains("listener 1883")));
        assert!(r.enable.iter().any(|u| u == "mosquitto.service"));
    }

    #[test]
    fn shipped_osm_stack_recipe_is_valid() {
        let r = LayerRecipe::parse(include_str!("../../../../overlays/osm-stack.toml")).unwrap();
        assert_eq!(r.name, "osm-stack");
        for p in ["mosquitto", "chirpstack", "influxdb2", "grafana"] {
            assert!(r.packages.iter().any(|x| x == p), "{p} missing");
        }
        let names: Vec<&str> = r.sources.iter().map(|s| s.name.as_str()).collect();
        for s in ["chirpstack", "influxdata", "grafana"] {
            assert!(names.contains(&s), "source {s} missing: {names:?}");
        }
        // Every key is a file next to the recipe, with its publisher's URL noted.
        for s in &r.sources {
            assert!(matches!(&s.key, SigningKey::File(f) if f.starts_with("keys/")));
            assert!(s.key_url.as_deref().unwrap_or("").starts_with("https://"));
        }
        // The MQTT user is named after the container, rendered at first boot.
        assert!(r.templates.iter().any(|t| t.content.contains("{{name}}")));
    }

    #[test]
    fn keys_resolve_from_sent_files_and_change_the_cache_key() {
        let text = r#"
name = "x"
base = "bookworm"
[[sources]]
name = "grafana"
uri = "https://apt.grafana.com/"
suites = ["stable"]
components = ["main"]
key_file = "keys/grafana.asc"
"#;
        let mut r = LayerRecipe::parse(text).unwrap();
        assert_eq!(r.key_files(), vec!["keys/grafana.asc"]);
        let e = r.clone().resolve_keys(&BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("keys/grafana.asc"), "{e}");
        let bad = BTreeMap::from([("keys/grafana.asc".to_string(), "hello".to_string())]);
        let e = r.clone().resolve_keys(&bad).unwrap_err();
        assert!(e.to_string().contains("ASCII-armored"), "{e}");
        let good = BTreeMap::from([("keys/grafana.asc".to_string(), KEY.to_string())]);
        r.resolve_keys(&good).unwrap();
        assert_eq!(r.sources[0].key, SigningKey::Armored(KEY.into()));
        assert_eq!(r.sources[0].uri, "https://apt.grafana.com");
        let deb822 = r.sources[0].deb822();
        assert!(
            deb822.contains("Signed-By: /etc/apt/keyrings/osm-grafana.asc\n"),
            "{deb822}"
        );
        let other = BTreeMap::from([(
            "keys/grafana.asc".to_string(),
            KEY.replace("mQINBF", "mQINBG"),
        )]);
        let mut r2 = LayerRecipe::parse(text).unwrap();
        r2.resolve_keys(&other).unwrap();
        assert_ne!(r.cache_key(&[]), r2.cache_key(&[]));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(err("name = \"x\"\nbase = \"b\"\npackage = []").contains("package"));
        assert!(err("name = \"x\"").contains("base"));
        assert!(err(
            "name = \"x\"\nbase = \"b\"\n[[files]]\npath = \"/a\"\ncontent = \"\"\nowner = 0"
        )
        .contains("owner"));
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        let h = "name = \"x\"\nbase = \"bookworm\"\n";
        let src = |extra: &str| {
            format!(
                "{h}[[sources]]\nname = \"g\"\nuri = \"https://apt.grafana.com\"\n\
                 suites = [\"stable\"]\ncomponents = [\"main\"]\n{extra}"
            )
        };
        let cases: Vec<(String, &str)> = vec![
            ("name = \"a b\"\nbase = \"b\"".into(), "name"),
            ("name = \"x\"\nbase = \"../b\"".into(), "base"),
            (format!("{h}layers = [\"x\"]"), "itself"),
            (format!("{h}layers = [\"l\", \"l\"]"), "twice"),
            (format!("{h}packages = [\"Mosquitto\"]"), "packages lists"),
            (format!("{h}packages = [\"a;b\"]"), "packages lists"),
            (format!("{h}enable = [\"mosquitto\"]"), "unit name"),
            (format!("{h}run = [[]]"), "run command 1 is empty"),
            (
                format!("{h}run = [[\"apt-get install x\"]]"),
                "argument vectors",
            ),
            (
                format!("{h}[[files]]\npath = \"etc/x\"\ncontent = \"\""),
                "files.path",
            ),
            (
                format!("{h}[[files]]\npath = \"/usr/lib/osm-host/x\"\ncontent = \"\""),
                "keeps for itself",
            ),
            (
                format!("{h}[[templates]]\npath = \"/etc/x\"\ncontent = \"{{{{host}}}}\""),
                "placeholder {{host}}",
            ),
            (
                format!("{h}[[templates]]\npath = \"/etc/x\"\ncontent = \"{{{{name\""),
                "unclosed",
            ),
            (
                format!(
                    "{h}[[files]]\npath = \"/etc/x\"\ncontent = \"\"\n\
                     [[templates]]\npath = \"/etc/x\"\ncontent = \"\""
                ),
                "twice",
            ),
            (src(""), "no signing key"),
            (
                src(&format!("key = {KEY:?}\nkey_file = \"k.asc\"")),
                "both key and key_file",
            ),
            (src("key = \"not a key\""), "ASCII-armored"),
            (src("key_file = \"../k.asc\""), "key_file"),
            (src("key_file = \"/etc/k.asc\""), "key_file"),
            (
                src("key_file = \"k.asc\"\nkey_url = \"http://x/k\""),
                "key_url",
            ),
            (
                src("key_file = \"k.asc\"").replace("https://apt.grafana.com", "ftp://x"),
                "uri",
            ),
            (
                src("key_file = \"k.asc\"").replace("[\"stable\"]", "[]"),
                "no suites",
            ),
            (
                src("key_file = \"k.asc\"").replace("[\"main\"]", "[\"Main\"]"),
                "component",
            ),
            (
                src("key_file = \"k.asc\"").replace("name = \"g\"", "name = \"G/x\""),
                "sources.name",
            ),
        ];
        for (text, needle) in &cases {
            let msg = err(text);
            assert!(
                msg.contains(needle),
                "{text:?}: message {msg:?} lacks {needle:?}"
            );
        }
    }

    #[test]
    fn cache_key_changes_with_what_the_layer_is_built_over_and_its_content() {
        let text = include_str!("../../../../overlays/mqtt.toml");
        let r = LayerRecipe::parse(text).unwrap();
        let k = r.cache_key(&["base-a".into()]);
        assert_eq!(
            k,
            LayerRecipe::parse(text)
                .unwrap()
                .cache_key(&["base-a".into()])
        );
        assert_eq!(k.len(), 64);
        assert_ne!(k, r.cache_key(&["base-b".into()]));
        assert_ne!(k, r.cache_key(&["base-a".into(), "layer-x".into()]));
        let mut renamed = r.clone();
        renamed.base = "bookworm@2".into();
        assert_eq!(
            k,
            renamed.cache_key(&["base-a".into()]),
            "names do not count"
        );
        let mut variants = Vec::new();
        let mut push = |f: &dyn Fn(&mut LayerRecipe)| {
            let mut v = r.clone();
            f(&mut v);
            variants.push(v.cache_key(&["base-a".into()]));
        };
        push(&|v| v.packages.push("curl".into()));
        push(&|v| v.files[0].content.push('x'));
        push(&|v| v.run.push(vec!["true".into()]));
        push(&|v| v.enable.push("x.service".into()));
        push(&|v| {
            v.templates.push(LayerFile {
                path: "/etc/t".into(),
                content: "{{name}}".into(),
                mode: 0o644,
            })
        });
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(*v, k, "variant {i} did not change the key");
        }
    }
}
