//! Versioned images: a base or layer may be stored as `NAME@VERSION`. A reference without
//! `@` means the image of exactly that name if there is one, else the newest
//! `NAME@VERSION` (by creation time, then by name); containers and layers record the
//! exact name they were made with, so building a new version changes nothing that exists.

use super::Engine;
use crate::error::{EngineError, EngineResult};
use crate::names::validate_image_name;

/// The newest of `candidates` `(name, created)` whose name is `plain@…`.
fn newest<'a>(plain: &str, candidates: impl Iterator<Item = (&'a str, u64)>) -> Option<String> {
    let prefix = format!("{plain}@");
    candidates
        .filter(|(n, _)| n.starts_with(&prefix))
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)))
        .map(|(n, _)| n.to_string())
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
        let plain = base.split_once('@')?.0;
        let bases = self.bases.read().expect("bases lock");
        let own = bases.get(base).map_or(0, |b| b.created);
        let newest = newest(plain, bases.values().map(|b| (b.name.as_str(), b.created)))?;
        let newest_created = bases.get(&newest).map_or(0, |b| b.created);
        (newest != base && newest_created > own).then_some(newest)
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

#[cfg(test)]
mod tests {
    use super::newest;
    use crate::engine::{BaseInfo, BaseSource, CreateRequest, LayerInfo};
    use crate::spec::ContainerSpec;

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
