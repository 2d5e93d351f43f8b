//! Versioned images: a base or layer may be stored as `NAME@VERSION`. A reference without
//! `@` means the image of exactly that name if there is one, else the newest
//! `NAME@VERSION` (by creation time, then by name); containers and layers record the
//! exact name they were made with, so building a new version changes nothing that exists.

use super::{Engine, LayerInfo};
use crate::error::{EngineError, EngineResult};
use crate::names::validate_image_name;
use std::collections::BTreeSet;

/// The newest of `candidates` `(name, created)` whose name is `plain@…`.
fn newest<'a>(plain: &str, candidates: impl Iterator<Item = (&'a str, u64)>) -> Option<String> {
    let prefix = format!("{plain}@");
    candidates
        .filter(|(n, _)| n.starts_with(&prefix))
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)))
        .map(|(n, _)| n.to_string())
}

/// The newest of `candidates` named like `current` (`NAME@VERSION`) when that is not
/// `current`: what `NewerBase` and `NewerLayers` report. "Newest" is the order a
/// reference without a version resolves by (creation time, then name), so what is
/// reported newer is what `create` would take.
fn newer_than<'a>(
    current: &str,
    candidates: impl Iterator<Item = (&'a str, u64)>,
) -> Option<String> {
    let plain = current.split_once('@')?.0;
    newest(plain, candidates).filter(|n| n != current)
}

/// [`Engine::newer_layers`] over a listing of the layer store: a newer version of a
/// layer is one of the same name built over the same base and lower layers.
fn newer_layers_in(pinned: &[String], all: &[LayerInfo]) -> Vec<String> {
    pinned
        .iter()
        .map(|name| {
            let Some(own) = all.iter().find(|l| l.name == *name) else {
                return String::new();
            };
            let same_stack = all
                .iter()
                .filter(|l| l.base == own.base && l.layers == own.layers)
                .map(|l| (l.name.as_str(), l.created));
            newer_than(name, same_stack).unwrap_or_default()
        })
        .collect()
}

/// The layers `layer prune` removes: `NAME@VERSION` layers (of `only`'s name when
/// given) that are not the newest version of their name, that no container in `used`
/// stacks on and that no other layer was built over.
fn prunable_layers(all: &[LayerInfo], only: Option<&str>, used: &BTreeSet<String>) -> Vec<String> {
    all.iter()
        .filter(|l| {
            let Some((plain, _)) = l.name.split_once('@') else {
                return false;
            };
            only.map_or(true, |o| o == plain)
                && newest(plain, all.iter().map(|x| (x.name.as_str(), x.created)))
                    .is_some_and(|n| n != l.name)
                && !used.contains(&l.name)
                && !all.iter().any(|x| x.layers.contains(&l.name))
        })
        .map(|l| l.name.clone())
        .collect()
}

impl Engine {
    /// The exact base a reference means (see the module doc); unknown names come back
    /// unchanged for the caller's not-found error.
    pub(super) fn resolve_base(&self, name: &str) -> String {
        let bases = self.bases.read().expect("bases lock");
        if name.contains('@') || bases.contains_key(name) {
            return name.to_string();
        }
        newest(name, bases.values().map(|b| (b.name.as_str(), b.created)))
            .unwrap_or_else(|| name.to_string())
    }

    /// The newest `NAME@…` base when it is newer than `base` (a `NAME@VERSION`), for
    /// `info` to say an update exists.
    pub fn newer_base(&self, base: &str) -> Option<String> {
        let bases = self.bases.read().expect("bases lock");
        newer_than(base, bases.values().map(|b| (b.name.as_str(), b.created)))
    }

    /// For each of `pinned` (a container's layers), the newest version of it built over
    /// the same base and lower layers when that is newer, else "": one read of the
    /// layer store, none when there are no layers.
    pub fn newer_layers(&self, pinned: &[String]) -> Vec<String> {
        if pinned.is_empty() {
            return Vec::new();
        }
        newer_layers_in(pinned, &self.layer_list())
    }

    /// The exact layer a reference means, like [`Engine::resolve_base`].
    pub(super) fn resolve_layer(&self, name: &str) -> String {
        let layers = self.layer_list();
        if name.contains('@') || layers.iter().any(|l| l.name == name) {
            return name.to_string();
        }
        newest(name, layers.iter().map(|l| (l.name.as_str(), l.created)))
            .unwrap_or_else(|| name.to_string())
    }
}

/// The version `@auto` stands for: the build date (UTC) and the first 12 hex digits of
/// the recipe's cache key, e.g. `bookworm@20261129-3f2a9c01b7de`.
pub(super) fn auto_version(name: &str, key: &str, now_secs: u64) -> String {
    match name.strip_suffix("@auto") {
        Some(plain) => {
            let (y, m, d) = crate::snapper::time::civil_from_days((now_secs / 86_400) as i64);
            format!("{plain}@{y:04}{m:02}{d:02}-{}", &key[..key.len().min(12)])
        }
        None => name.to_string(),
    }
}

impl Engine {
    /// Deletes every `NAME@VERSION` base but the newest that no container and no layer
    /// uses; returns the deleted names. Bases in use are kept, never an error.
    pub async fn prune_bases(self: &std::sync::Arc<Self>, name: &str) -> EngineResult<Vec<String>> {
        validate_image_name("base", name)?;
        if name.contains('@') {
            return Err(EngineError::invalid_argument(format!(
                "give the name without a version (e.g. {}): prune keeps its newest version and \
                 removes the unused older ones",
                crate::names::image_base_name(name)
            )));
        }
        let Some(newest) = ({
            let bases = self.bases.read().expect("bases lock");
            newest(name, bases.values().map(|b| (b.name.as_str(), b.created)))
        }) else {
            return Err(EngineError::not_found(format!(
                "no versions of base {name} (names {name}@…); `osm-hostctl base list` shows the bases"
            )));
        };
        let prefix = format!("{name}@");
        let old: Vec<String> = self
            .base_names()
            .into_iter()
            .filter(|b| b.starts_with(&prefix) && *b != newest)
            .collect();
        let mut deleted = Vec::new();
        for b in old {
            if !self.base_users(&b).is_empty() || !self.layers_on_base(&b).is_empty() {
                continue;
            }
            match self.delete_base(&b).await {
                Ok(()) => deleted.push(b),
                // Taken into use meanwhile: keep it.
                Err(e) if e.kind() == crate::error::ErrorKind::InvalidState => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

impl Engine {
    /// Deletes the `NAME@VERSION` layers (of `name`'s versions, or of every name when
    /// `name` is "") that are not the newest of their name and that no container and no
    /// other layer uses, repeating while removing one frees another; returns the deleted
    /// names. Layers in use are kept, never an error.
    pub async fn prune_layers(
        self: &std::sync::Arc<Self>,
        name: &str,
    ) -> EngineResult<Vec<String>> {
        let only = (!name.is_empty()).then_some(name);
        if let Some(name) = only {
            validate_image_name("layer", name)?;
            if name.contains('@') {
                return Err(EngineError::invalid_argument(format!(
                    "give the name without a version (e.g. {}): prune keeps its newest version \
                     and removes the unused older ones",
                    crate::names::image_base_name(name)
                )));
            }
            let prefix = format!("{name}@");
            if !self
                .layer_list()
                .iter()
                .any(|l| l.name.starts_with(&prefix))
            {
                return Err(EngineError::not_found(format!(
                    "no versions of layer {name} (names {name}@…); `osm-hostctl layer list` \
                     shows the layers"
                )));
            }
        }
        let mut tried = BTreeSet::new();
        let mut deleted = Vec::new();
        loop {
            let used: BTreeSet<String> = self
                .all_containers()
                .iter()
                .flat_map(|c| c.info().spec.layers.clone())
                .collect();
            let next: Vec<String> = prunable_layers(&self.layer_list(), only, &used)
                .into_iter()
                .filter(|l| tried.insert(l.clone()))
                .collect();
            if next.is_empty() {
                return Ok(deleted);
            }
            for l in next {
                match self.delete_layer(&l).await {
                    Ok(()) => deleted.push(l),
                    // Taken into use meanwhile: keep it.
                    Err(e) if e.kind() == crate::error::ErrorKind::InvalidState => {}
                    Err(e) if deleted.is_empty() => return Err(e),
                    Err(e) => {
                        return Err(EngineError::new(
                            e.kind(),
                            format!(
                                "{} (layer prune had removed {} before this)",
                                e.message(),
                                deleted.join(", ")
                            ),
                        ))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::newest;
    use crate::engine::{BaseInfo, BaseSource, CreateRequest, LayerInfo};
    use crate::spec::ContainerSpec;
    use std::collections::BTreeSet;

    fn add_base(engine: &crate::engine::Engine, name: &str, created: u64) {
        let dir = engine.store().bases_dir();
        std::fs::create_dir_all(dir.join(name)).unwrap();
        let info = BaseInfo {
            name: name.into(),
            created,
            source: BaseSource::Import,
        };
        std::fs::write(
            dir.join(format!("{name}.toml")),
            toml::to_string(&info).unwrap(),
        )
        .unwrap();
        engine.scan_bases().unwrap();
    }

    fn add_layer(engine: &crate::engine::Engine, name: &str, base: &str, created: u64) {
        let dir = engine.store().layers_dir();
        std::fs::create_dir_all(dir.join(name)).unwrap();
        let info = LayerInfo {
            name: name.into(),
            created,
            base: base.into(),
            layers: vec![],
            key: format!("import:{name}"),
        };
        std::fs::write(
            dir.join(format!("{name}.toml")),
            toml::to_string(&info).unwrap(),
        )
        .unwrap();
    }

    fn create(name: &str, base: &str, layers: &[&str]) -> CreateRequest {
        CreateRequest {
            name: name.into(),
            base: base.into(),
            layers: layers.iter().map(|l| l.to_string()).collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn containers_pin_the_newest_version_and_keep_it_when_a_newer_one_comes() {
        let (_dir, _host, engine) = crate::testing::fake_engine();
        add_base(&engine, "deb@1", 100);
        add_base(&engine, "deb@2", 200);
        add_layer(&engine, "mqtt@a", "deb@2", 300);
        add_layer(&engine, "mqtt@b", "deb@1", 400);
        let spec_of = |n: &str| ContainerSpec::load(&engine.store().container_dir(n)).unwrap();

        engine
            .create_container(create("c1", "deb", &[]))
            .await
            .unwrap();
        assert_eq!(spec_of("c1").base, "deb@2");
        // The same request again is the same container, not a conflict.
        assert_eq!(
            engine
                .create_container(create("c1", "deb", &[]))
                .await
                .unwrap(),
            crate::engine::CreateOutcome::AlreadyExisted
        );
        // The newest mqtt was built over deb@1, not the newest deb: refused, with the reason.
        let e = engine
            .create_container(create("c2", "deb", &["mqtt"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("mqtt@b was built over base \"deb@1\""), "{e}");
        engine
            .create_container(create("c2", "deb@2", &["mqtt@a"]))
            .await
            .unwrap();
        assert_eq!(spec_of("c2").layers, vec!["mqtt@a"]);

        assert_eq!(engine.newer_base("deb@2"), None);
        // A newer version changes nothing that exists; new containers get it.
        add_base(&engine, "deb@3", 300);
        assert_eq!(spec_of("c1").base, "deb@2");
        assert_eq!(engine.newer_base("deb@2").as_deref(), Some("deb@3"));
        assert_eq!(engine.newer_base("deb@3"), None);
        assert_eq!(engine.newer_base("bb"), None);
        engine
            .create_container(create("c3", "deb", &[]))
            .await
            .unwrap();
        assert_eq!(spec_of("c3").base, "deb@3");
        // Prune keeps the newest and every version in use.
        add_base(&engine, "deb@0", 50);
        let deleted = engine.prune_bases("deb").await.unwrap();
        assert_eq!(deleted, vec!["deb@0"]);
        let mut left = engine.base_names();
        left.sort();
        assert_eq!(
            left,
            vec!["bb", "deb@1", "deb@2", "deb@3"],
            "deb@1 has a layer, deb@2 containers"
        );
        let e = engine.prune_bases("deb@2").await.unwrap_err().to_string();
        assert!(e.contains("without a version"), "{e}");
        assert_eq!(
            engine.prune_bases("nope").await.unwrap_err().kind(),
            "NotFound"
        );
        // A plain name that exists is itself, versions or not.
        add_base(&engine, "deb", 50);
        engine
            .create_container(create("c4", "deb", &[]))
            .await
            .unwrap();
        assert_eq!(spec_of("c4").base, "deb");
    }

    fn layer(name: &str, base: &str, lowers: &[&str], created: u64) -> LayerInfo {
        LayerInfo {
            name: name.into(),
            created,
            base: base.into(),
            layers: lowers.iter().map(|l| l.to_string()).collect(),
            key: format!("k-{name}"),
        }
    }

    #[test]
    fn a_newer_layer_is_the_same_name_over_the_same_stack() {
        let all = [
            layer("mqtt@1", "deb@1", &[], 10),
            layer("mqtt@2", "deb@1", &[], 20),
            // Newer, but over another base or other lowers: not a newer version of mqtt@1.
            layer("mqtt@3", "deb@2", &[], 30),
            layer("mqtt@4", "deb@1", &["tools@1"], 40),
            layer("tools@1", "deb@1", &[], 5),
            layer("web@1", "deb@1", &["tools@1"], 10),
            layer("web@2", "deb@1", &["tools@1"], 10),
            layer("hand", "", &[], 99),
        ];
        let pinned = |names: &[&str]| -> Vec<String> {
            super::newer_layers_in(
                &names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                &all,
            )
        };
        assert_eq!(pinned(&["mqtt@1"]), vec!["mqtt@2"]);
        assert_eq!(pinned(&["mqtt@2"]), vec![""]);
        assert_eq!(pinned(&["mqtt@3"]), vec![""]);
        // One entry per pinned layer, in order.
        assert_eq!(pinned(&["tools@1", "mqtt@4"]), vec!["", ""]);
        // Made in the same second: the greater name, as `create --layer web` would take.
        assert_eq!(pinned(&["tools@1", "web@1"]), vec!["", "web@2"]);
        assert_eq!(pinned(&["tools@1", "web@2"]), vec!["", ""]);
        // Unversioned, hand-made or gone: nothing to say.
        assert_eq!(pinned(&["hand", "gone@1"]), vec!["", ""]);
        assert!(pinned(&[]).is_empty());
    }

    #[test]
    fn prune_picks_unused_old_versions_only() {
        let all = [
            layer("mqtt@1", "deb@1", &[], 10),
            layer("mqtt@2", "deb@1", &[], 20),
            layer("mqtt@3", "deb@2", &[], 30),
            layer("mqtt@0", "deb@1", &[], 5),
            layer("tools@1", "deb@1", &[], 10),
            layer("tools@2", "deb@1", &[], 20),
            layer("web@1", "deb@1", &["tools@1"], 30),
            layer("hand", "", &[], 1),
        ];
        let used: BTreeSet<String> = ["mqtt@2".to_string()].into();
        let mut all_names = super::prunable_layers(&all, None, &used);
        all_names.sort();
        // mqtt@3 is the newest, mqtt@2 used, tools@1 under web@1, tools@2 and web@1 the
        // newest of their names, `hand` has no version.
        assert_eq!(all_names, vec!["mqtt@0", "mqtt@1"]);
        assert_eq!(
            super::prunable_layers(&all, Some("tools"), &used),
            Vec::<String>::new()
        );
        assert_eq!(
            super::prunable_layers(&all[..2], Some("mqtt"), &BTreeSet::new()),
            vec!["mqtt@1"]
        );
        assert!(super::prunable_layers(&all, Some("web"), &used).is_empty());
    }

    #[tokio::test]
    async fn layer_prune_keeps_what_is_used_and_frees_lowers_of_pruned_layers() {
        let (_dir, _host, engine) = crate::testing::fake_engine();
        add_base(&engine, "deb@1", 100);
        add_layer(&engine, "mqtt@a", "deb@1", 200);
        add_layer(&engine, "mqtt@b", "deb@1", 300);
        add_layer(&engine, "mqtt@c", "deb@1", 400);
        engine
            .create_container(create("c1", "deb@1", &["mqtt@b"]))
            .await
            .unwrap();
        assert_eq!(engine.newer_layers(&["mqtt@b".into()]), vec!["mqtt@c"]);
        assert_eq!(engine.newer_layers(&["mqtt@c".into()]), vec![""]);
        let view = engine.container_view("c1").unwrap();
        assert_eq!(view.newer_layers, vec!["mqtt@c"]);
        assert_eq!(view.newer_base, "");

        let e = engine.prune_layers("mqtt@a").await.unwrap_err().to_string();
        assert!(e.contains("without a version"), "{e}");
        assert_eq!(
            engine.prune_layers("nope").await.unwrap_err().kind(),
            "NotFound"
        );
        assert_eq!(engine.prune_layers("mqtt").await.unwrap(), vec!["mqtt@a"]);
        assert!(engine.prune_layers("mqtt").await.unwrap().is_empty());
        let names = |e: &crate::engine::Engine| {
            e.layer_list()
                .into_iter()
                .map(|l| l.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&engine), vec!["mqtt@b", "mqtt@c"]);

        // An old lower held only by an old upper goes with it, in one prune of all.
        let dir = engine.store().layers_dir();
        let write = |info: LayerInfo| {
            std::fs::create_dir_all(dir.join(&info.name)).unwrap();
            std::fs::write(
                dir.join(format!("{}.toml", info.name)),
                toml::to_string(&info).unwrap(),
            )
            .unwrap();
        };
        write(layer("tools@1", "deb@1", &[], 100));
        write(layer("tools@2", "deb@1", &[], 200));
        write(layer("web@1", "deb@1", &["tools@1"], 100));
        write(layer("web@2", "deb@1", &["tools@2"], 200));
        let mut gone = engine.prune_layers("").await.unwrap();
        gone.sort();
        assert_eq!(gone, vec!["tools@1", "web@1"]);
        assert_eq!(names(&engine), vec!["mqtt@b", "mqtt@c", "tools@2", "web@2"]);
    }

    #[test]
    fn auto_versions_are_the_date_and_the_recipe_key() {
        let key = "3f2a9c01b7de55aa";
        // 2026-11-29 00:00:00 UTC plus a bit.
        let now = 1_795_910_400 + 3_600;
        assert_eq!(
            super::auto_version("bookworm@auto", key, now),
            "bookworm@20261129-3f2a9c01b7de"
        );
        assert_eq!(super::auto_version("bookworm@7", key, now), "bookworm@7");
        assert_eq!(super::auto_version("bookworm", key, now), "bookworm");
    }

    #[test]
    fn the_newest_version_wins_and_other_names_do_not_count() {
        let c = [
            ("bookworm@1", 10),
            ("bookworm@2", 20),
            ("bookworm-old@9", 99),
            ("bookworm", 50),
            ("bookworm@0", 5),
        ];
        assert_eq!(newest("bookworm", c.iter().copied()).unwrap(), "bookworm@2");
        assert_eq!(newest("trixie", c.iter().copied()), None);
        // Same creation time: the greater name.
        let tie = [("b@a", 1), ("b@b", 1)];
        assert_eq!(newest("b", tie.iter().copied()).unwrap(), "b@b");
    }
}
