//! [`DaemonConfig`]: the `hostd.toml` a rig gives `osm-hostd`, editable by tests.

use std::path::Path;

/// Shared across runs on purpose: built Debian bases are cached by recipe hash.
pub const TEST_CACHE_DIR: &str = "/var/cache/osm-host-tests";

/// An ordered TOML document of `key = value` lines grouped by table (`""` is the top
/// level), plus free text appended at the end. Values are raw TOML.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    tables: Vec<(String, Vec<(String, String)>)>,
    extra: String,
}

impl DaemonConfig {
    /// The rig's defaults: everything under `dir` except the shared base cache.
    pub fn for_test_dir(dir: &Path) -> DaemonConfig {
        let p = |rel: &str| dir.join(rel).to_string_lossy().into_owned();
        let mut c = DaemonConfig {
            tables: Vec::new(),
            extra: String::new(),
        };
        c.set_str("store_root", &p("store"))
            .set_str("loop_image", &p("store.img"))
            .set_str("loop_size", "6G")
            .set_str("runtime_dir", &p("run"))
            .set_str("cache_dir", TEST_CACHE_DIR)
            .set_str("hosts_file", &p("hosts"))
            .set_str("snapper.configs_dir", &p("snapper/configs"))
            .set_str("snapper.defaults_file", &p("snapper/default"))
            .set_str("network.bridge", "lxcbr0")
            // Never the host's /etc: the daemon adds a pool for root to these.
            .set_str("isolation.subuid_file", &p("subuid"))
            .set_str("isolation.subgid_file", &p("subgid"));
        c
    }

    /// Sets `key` (`"loop_size"`, `"network.address"`) to a raw TOML value
    /// (`"\"4G\""`, `"true"`), replacing an earlier value.
    pub fn set(&mut self, key: &str, toml_value: &str) -> &mut Self {
        let (table, name) = split_key(key);
        let entries = match self.tables.iter_mut().position(|(t, _)| t == table) {
            Some(i) => &mut self.tables[i].1,
            None => {
                self.tables.push((table.to_string(), Vec::new()));
                &mut self.tables.last_mut().unwrap().1
            }
        };
        match entries.iter_mut().find(|(k, _)| k == name) {
            Some(entry) => entry.1 = toml_value.to_string(),
            None => entries.push((name.to_string(), toml_value.to_string())),
        }
        self
    }

    /// Sets `key` to a TOML string.
    pub fn set_str(&mut self, key: &str, value: &str) -> &mut Self {
        // A JSON string literal is also a valid TOML basic string.
        let quoted = serde_json::to_string(value).expect("quote string");
        self.set(key, &quoted)
    }

    /// Drops `key`, so the daemon uses its built-in default.
    pub fn remove(&mut self, key: &str) -> &mut Self {
        let (table, name) = split_key(key);
        for (t, entries) in &mut self.tables {
            if t == table {
                entries.retain(|(k, _)| k != name);
            }
        }
        self
    }

    /// Appends raw TOML (e.g. a whole `[backup]` table, or a deliberately bad key).
    pub fn append(&mut self, toml_text: &str) -> &mut Self {
        self.extra.push_str(toml_text);
        self.extra.push('\n');
        self
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Top-level keys must come before any table header.
        let mut ordered: Vec<_> = self.tables.iter().collect();
        ordered.sort_by_key(|(t, _)| !t.is_empty());
        for (table, entries) in ordered {
            if entries.is_empty() {
                continue;
            }
            if !table.is_empty() {
                out.push_str(&format!("\n[{table}]\n"));
            }
            for (k, v) in entries {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        if !self.extra.is_empty() {
            out.push('\n');
            out.push_str(&self.extra);
        }
        out
    }
}

fn split_key(key: &str) -> (&str, &str) {
    key.rsplit_once('.').unwrap_or(("", key))
}
