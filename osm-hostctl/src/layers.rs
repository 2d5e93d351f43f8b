//! `osm-hostctl layer …`: build layers from `overlays/` recipes, list and delete them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::Serialize;
use zbus::zvariant::Fd;

use super::args::JsonArg;
use super::calls::Daemon;
use super::exit::{CliError, ExitCode};
use super::format::{format_timestamp, table};
use super::job::JobWatch;
use super::run::{print_json, say};

#[derive(Debug, Subcommand)]
pub enum LayerCommand {
    /// Build a layer from a recipe (TOML, see overlays/); waits for the build job
    Build {
        /// Name of the new layer: the recipe's `name`, optionally with `@VERSION`
        /// (`@auto`: the build date and the recipe's hash)
        name: String,
        /// Recipe file; it is read here and its text sent to the daemon, with the text of
        /// every `key_file` it names (relative to the recipe's directory)
        #[arg(long, value_name = "FILE")]
        recipe: PathBuf,
    },
    /// Import a layer (an overlay upper directory, whiteouts included) from a .tar,
    /// .tar.gz or .tar.zst archive; waits for the import job
    Import {
        /// Name of the new layer
        name: String,
        /// The archive, opened here and passed to the daemon as an open file
        file: PathBuf,
        /// The base the layer was made over
        #[arg(long, value_name = "B")]
        base: String,
        /// A layer it was made over, lowest first; repeat for several
        #[arg(long = "over", value_name = "L")]
        over: Vec<String>,
    },
    /// Export a layer as a .tar.zst archive (whiteouts included) that `layer import`
    /// reads back; waits for the export job
    Export {
        /// Layer name, NAME@VERSION
        name: String,
        /// The archive to write (must not exist); created here and passed to the daemon
        /// as an open file
        file: PathBuf,
    },
    /// List layers, what they were built over and the containers using them
    List(JsonArg),
    /// Delete a layer no container and no other layer uses
    Delete {
        /// Layer name
        name: String,
    },
    /// Delete the older NAME@VERSION layers no container or layer uses (keeps the newest
    /// of each name)
    Prune {
        /// Layer name without a version [default: every layer]
        name: Option<String>,
    },
}

/// One layer, as `layer list --json` prints it.
#[derive(Debug, Serialize)]
pub struct LayerRow {
    pub name: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub base: String,
    /// Lower layers, lowest first.
    pub layers: Vec<String>,
    pub key: String,
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::new(
        ExitCode::InvalidArgument,
        format!("cannot read {}: {e}", path.display()),
    )
}

/// The `key_file` entries of a recipe's `[[sources]]`, read relative to the recipe's
/// directory. Paths the daemon would refuse (absolute, `..`) are left for it to name.
fn key_files(recipe: &Path, text: &str) -> Result<HashMap<String, String>, CliError> {
    let mut out = HashMap::new();
    let Ok(value) = text.parse::<toml::Table>() else {
        return Ok(out); // the daemon reports the syntax error with its position
    };
    let dir = recipe.parent().unwrap_or(Path::new("."));
    let sources = value.get("sources").and_then(|s| s.as_array());
    for source in sources.into_iter().flatten() {
        let Some(f) = source.get("key_file").and_then(|k| k.as_str()) else {
            continue;
        };
        if f.starts_with('/') || f.split('/').any(|c| c == "..") {
            continue;
        }
        let path = dir.join(f);
        let key = std::fs::read_to_string(&path).map_err(|e| {
            read_error(
                &path,
                format!("{e}; the recipe names it as a signing key (key_file {f:?})"),
            )
        })?;
        out.insert(f.to_string(), key);
    }
    Ok(out)
}

pub async fn run(daemon: &Daemon, cmd: LayerCommand) -> Result<(), CliError> {
    let m = &daemon.manager;
    match cmd {
        LayerCommand::Build { name, recipe } => {
            let text = std::fs::read_to_string(&recipe).map_err(|e| read_error(&recipe, e))?;
            let keys = key_files(&recipe, &text)?;
            let keys: HashMap<&str, &str> =
                keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let watch = JobWatch::subscribe(daemon).await?;
            let job = m.build_layer(&name, &text, keys).await?;
            let name = super::job::target(daemon, &job).await.unwrap_or(name);
            watch.follow(daemon, &job).await?;
            say(&format!("built layer {name}"));
        }
        LayerCommand::Import {
            name,
            file,
            base,
            over,
        } => {
            let archive = std::fs::File::open(&file).map_err(|e| read_error(&file, e))?;
            if archive.metadata().is_ok_and(|md| md.is_dir()) {
                return Err(CliError::new(
                    ExitCode::InvalidArgument,
                    format!(
                        "{} is a directory; give a .tar, .tar.gz or .tar.zst archive",
                        file.display()
                    ),
                ));
            }
            let over: Vec<&str> = over.iter().map(String::as_str).collect();
            let watch = JobWatch::subscribe(daemon).await?;
            let job = m
                .import_layer(&name, &base, &over, Fd::from(&archive))
                .await?;
            drop(archive);
            watch.follow(daemon, &job).await?;
            say(&format!("imported layer {name}"));
        }
        LayerCommand::Export { name, file } => {
            use std::os::unix::fs::OpenOptionsExt;
            let out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&file)
                .map_err(|e| {
                    CliError::new(
                        ExitCode::InvalidArgument,
                        format!("cannot create {}: {e}", file.display()),
                    )
                })?;
            let watch = JobWatch::subscribe(daemon).await?;
            let job = match m.export_layer(&name, Fd::from(&out)).await {
                Ok(job) => job,
                Err(e) => {
                    drop(out);
                    let _ = std::fs::remove_file(&file);
                    return Err(e.into());
                }
            };
            drop(out);
            if let Err(e) = watch.follow(daemon, &job).await {
                let _ = std::fs::remove_file(&file);
                return Err(e);
            }
            let msg = super::job::message(daemon, &job).await;
            say(&msg
                .unwrap_or_else(|| format!("exported layer {name}"))
                .replace("FILE", &file.display().to_string()));
        }
        LayerCommand::List(out) => {
            let list: Vec<LayerRow> = m
                .list_layers()
                .await?
                .into_iter()
                .map(|(name, created, base, layers, key)| LayerRow {
                    name,
                    created,
                    base,
                    layers,
                    key,
                })
                .collect();
            if out.json {
                print_json(&list)?;
            } else {
                say(layers_table(&list).trim_end());
            }
        }
        LayerCommand::Delete { name } => {
            m.delete_layer(&name).await?;
            say(&format!("deleted layer {name}"));
        }
        LayerCommand::Prune { name } => {
            let name = name.unwrap_or_default();
            let deleted = m.prune_layers(&name).await?;
            if deleted.is_empty() {
                say(&if name.is_empty() {
                    "no unused older layer versions".to_string()
                } else {
                    format!("no unused older versions of layer {name}")
                });
            }
            for l in deleted {
                say(&format!("deleted layer {l}"));
            }
        }
    }
    Ok(())
}

fn layers_table(list: &[LayerRow]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|l| {
            let mut over = vec![l.base.clone()];
            over.extend(l.layers.iter().cloned());
            vec![
                l.name.clone(),
                format_timestamp(l.created.saturating_mul(1_000_000)),
                over.join(" + "),
                l.key.chars().take(12).collect(),
            ]
        })
        .collect();
    table(&["NAME", "CREATED", "BUILT-OVER", "RECIPE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_read_relative_to_the_recipe() {
        let t = std::env::temp_dir().join(format!("osm-layer-cli-{}", std::process::id()));
        std::fs::create_dir_all(t.join("keys")).unwrap();
        std::fs::write(t.join("keys/g.asc"), "KEY").unwrap();
        let recipe = t.join("r.toml");
        let text = "name = \"x\"\nbase = \"b\"\n[[sources]]\nkey_file = \"keys/g.asc\"\n\
                    [[sources]]\nkey_file = \"../escape.asc\"\n";
        let keys = key_files(&recipe, text).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys["keys/g.asc"], "KEY");
        let missing = "[[sources]]\nkey_file = \"keys/none.asc\"\n";
        let e = key_files(&recipe, missing).unwrap_err();
        assert!(e.to_string().contains("keys/none.asc"), "{e}");
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn layers_table_shows_what_a_layer_is_built_over() {
        let rows = [LayerRow {
            name: "osm-stack".into(),
            created: 1_714_566_896,
            base: "bookworm".into(),
            layers: vec!["mqtt".into()],
            key: "0123456789abcdef".into(),
        }];
        let t = layers_table(&rows);
        assert!(t.contains("bookworm + mqtt"), "{t}");
        assert!(
            t.contains("0123456789ab ") || t.ends_with("0123456789ab\n"),
            "{t}"
        );
    }
}
