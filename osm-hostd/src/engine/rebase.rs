//! `rebase NAME --base B@V [--layer L@V]...`: moving a container's upper layer onto a new
//! lower stack, as a job. The three-way check and its rules are in [`crate::threeway`];
//! the swap rides on the snapshot restore's crash-safe machinery (`restore.rs`): the
//! same journal, staging subvolume, marker and recovery, so a daemon killed at any step
//! leaves the old stack or the new one, and its next start finishes or rolls back:
//!
//! 1. journal `containers/.restore-<name>.toml` (whether it ran);
//! 2. stop the container;
//! 3. safety snapshot (kept; it holds every copy the rebase removes from the upper);
//! 4. a writable snapshot of the container as the staging subvolume, `work/` emptied;
//!    the three-way check on its upper, the rules applied there, its `container.toml`
//!    pinned to the new base and layers, the marker written;
//! 5. `.snapshots` moved into it, the two exchanged (`RENAME_EXCHANGE`), the old data
//!    deleted; the container starts again if it ran.

use super::container::{Container, RunState};
use super::jobs::Job;
use super::lifecycle::DEFAULT_STOP_TIMEOUT;
use super::snapshot_restore::{crash_point, Journal};
use super::snapshots::SnapshotRequest;
use super::{blocking, Engine, Event};
use crate::error::{EngineError, EngineResult};
use crate::names::validate_image_name;
use crate::spec::ContainerSpec;
use crate::threeway::{self, Conflict, Stack};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// A base and its layers, lowest first (the user-facing order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StackRef {
    pub base: String,
    pub layers: Vec<String>,
}

impl StackRef {
    fn of(spec: &ContainerSpec) -> StackRef {
        StackRef {
            base: spec.base.clone(),
            layers: spec.layers.clone(),
        }
    }

    fn describe(&self) -> String {
        if self.layers.is_empty() {
            self.base.clone()
        } else {
            format!("{} + {}", self.base, self.layers.join(" + "))
        }
    }
}

/// What a rebase did (or, for a dry run, would do): the job's `Output`, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct RebaseReport {
    pub container: String,
    pub from: StackRef,
    pub to: StackRef,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_snapshot: Option<u32>,
    pub conflicts: Vec<Conflict>,
}

impl RebaseReport {
    pub(super) fn summary(&self) -> String {
        let what = if self.dry_run {
            format!(
                "{} would move from {} to {}",
                self.container,
                self.from.describe(),
                self.to.describe()
            )
        } else {
            format!(
                "rebased {} from {} to {}{}",
                self.container,
                self.from.describe(),
                self.to.describe(),
                self.safety_snapshot
                    .map(|n| format!("; the state before is snapshot {n}"))
                    .unwrap_or_default()
            )
        };
        let mut s = format!("{what}; {} conflict(s)", self.conflicts.len());
        for c in &self.conflicts {
            let change = match c.change {
                threeway::Change::Changed => "changed",
                threeway::Change::Deleted => "deleted",
            };
            s.push_str(&format!(
                "\n  {} ({change} in the container): {}",
                c.path,
                c.rule.describe()
            ));
        }
        s
    }
}

impl Engine {
    /// The lower stack of `base` and `layers` (lowest first), top-most first.
    fn stack_of(&self, base: &str, layers: &[String]) -> Stack {
        let mut lowers: Vec<_> = layers
            .iter()
            .rev()
            .map(|l| self.store.layers_dir().join(l))
            .collect();
        lowers.push(self.store.bases_dir().join(base));
        Stack { lowers }
    }

    /// Checks a rebase request against the container's spec; returns the exact new base
    /// and layers (lowest first).
    pub(super) fn check_rebase(
        &self,
        spec: &ContainerSpec,
        base: &str,
        layers_lowest_first: &[String],
    ) -> EngineResult<(String, Vec<String>)> {
        validate_image_name("base", base)?;
        for l in layers_lowest_first {
            validate_image_name("layer", l)?;
        }
        let base = self.resolve_base(base);
        self.require_base(&base).map_err(|_| {
            EngineError::not_found(format!(
                "base {base:?} not found; `osm-hostctl base list` shows the bases and their versions"
            ))
        })?;
        if layers_lowest_first.is_empty() && !spec.layers.is_empty() {
            return Err(EngineError::invalid_argument(format!(
                "{} has layers {} (lowest first), which were built over {}; give the layers for \
                 the new base with --layer, lowest first (`osm-hostctl layer list` shows them)",
                spec.name,
                spec.layers.join(", "),
                spec.base
            )));
        }
        let mut layers: Vec<String> = Vec::new();
        for l in layers_lowest_first {
            let l = self.resolve_layer(l);
            self.layer_info(&l).map_err(|_| {
                EngineError::not_found(format!(
                    "layer {l:?} not found; `osm-hostctl layer list` shows the layers and their versions"
                ))
            })?;
            layers.push(l);
        }
        self.check_layer_stack(&base, &layers)?;
        if base == spec.base && layers == spec.layers {
            return Err(EngineError::invalid_argument(format!(
                "{} is already on {}; name another version (`osm-hostctl base list`)",
                spec.name,
                StackRef::of(spec).describe()
            )));
        }
        Ok((base, layers))
    }

    /// Starts a job that moves container `name` to `base` and `layers` (lowest first),
    /// or with `dry_run` only reports the conflicts. Refused at once (nothing changed)
    /// for an unknown container, base or layer, the stack it already has, a stack that
    /// does not fit together, or a container another operation holds (`Busy`).
    pub fn rebase(
        self: &Arc<Self>,
        name: &str,
        base: &str,
        layers: &[String],
        dry_run: bool,
    ) -> EngineResult<Arc<Job>> {
        let c = self.container(name)?;
        let (base, layers) = self.check_rebase(&c.info().spec, base, layers)?;
        let guard = c.begin_owned("rebase")?;
        let engine = self.clone();
        let job = self.jobs.start("rebase", name, |job2| async move {
            let result = engine.run_rebase(&c, &base, &layers, dry_run, &job2).await;
            drop(guard);
            let report = result?;
            job2.set_output(serde_json::to_string(&report).expect("report serializes"));
            Ok::<_, EngineError>(report.summary())
        });
        Ok(job)
    }

    pub(super) async fn run_rebase(
        self: &Arc<Self>,
        c: &Arc<Container>,
        base: &str,
        layers: &[String],
        dry_run: bool,
        job: &Job,
    ) -> EngineResult<RebaseReport> {
        // The new base and layers cannot be deleted while the container moves onto them.
        let _base_in_use = self.base_use.read().await;
        self.require_base(base)?;
        for l in layers {
            self.layer_info(l)?;
        }
        let spec = c.info().spec;
        let mut report = RebaseReport {
            container: c.name.clone(),
            from: StackRef::of(&spec),
            to: StackRef {
                base: base.to_string(),
                layers: layers.to_vec(),
            },
            dry_run,
            safety_snapshot: None,
            conflicts: vec![],
        };
        let old = self.stack_of(&spec.base, &spec.layers);
        let new = self.stack_of(base, layers);
        if dry_run {
            job.set_progress(0.2, "comparing the upper layer with the old and new lowers");
            report.conflicts = self.plan_rebase(&c.name, old, new).await?;
            return Ok(report);
        }
        self.refresh_state(c);
        let was_running = c.info().state != RunState::Stopped;
        let journal = Journal {
            snapshot: 0,
            was_running,
            safety: None,
        };
        self.write_journal(&c.name, &journal)?;
        crash_point("journal");
        if was_running {
            job.set_progress(0.1, "stopping the container");
            if let Err(e) = self.stop_locked(c, DEFAULT_STOP_TIMEOUT, false).await {
                let _ = std::fs::remove_file(self.journal_path(&c.name));
                return Err(e);
            }
        }
        crash_point("stopped");
        job.set_progress(0.3, "taking a safety snapshot and checking the upper layer");
        let prepared = self
            .take_safety_and_stage(c, journal, old, new, base, layers)
            .await;
        let (safety, conflicts) = match prepared {
            Ok(p) => p,
            Err(e) => {
                // Nothing of the container changed: drop the staging copy, restart.
                self.abandon_staged_restore(c, was_running).await;
                return Err(e);
            }
        };
        report.safety_snapshot = Some(safety);
        report.conflicts = conflicts;
        job.set_progress(0.7, "swapping in the rebased upper layer");
        self.swap_rebased(c, was_running, safety).await?;
        crash_point("cleaned");
        self.emit(Event::ContainerSpecChanged(c.name.clone()));
        let started = if was_running {
            job.set_progress(0.9, "starting the container");
            self.start_locked(c).await.map(|_| ())
        } else {
            Ok(())
        };
        let _ = std::fs::remove_file(self.journal_path(&c.name));
        started.map_err(|e| {
            EngineError::failed(format!(
                "{} was rebased onto {} (the state before is snapshot {safety}), but did not \
                 start again: {}",
                c.name,
                report.to.describe(),
                e.message()
            ))
        })?;
        tracing::info!(container = %c.name, base, conflicts = report.conflicts.len(), "container rebased");
        Ok(report)
    }

    /// The dry run: the conflicts the three-way check finds in the container's upper.
    async fn plan_rebase(&self, name: &str, old: Stack, new: Stack) -> EngineResult<Vec<Conflict>> {
        let upper = self.store.container_dir(name).join("rootfs-layer");
        blocking(move || {
            threeway::plan(&upper, &old, &new)
                .map_err(|e| EngineError::failed(format!("comparing {}: {e}", upper.display())))
        })
        .await
    }

    /// Steps 3 and 4: the safety snapshot (recorded in the journal), then the staged
    /// rebased copy; returns the snapshot's number and the conflicts.
    async fn take_safety_and_stage(
        self: &Arc<Self>,
        c: &Arc<Container>,
        mut journal: Journal,
        old: Stack,
        new: Stack,
        base: &str,
        layers: &[String],
    ) -> EngineResult<(u32, Vec<Conflict>)> {
        let (engine, c2) = (self.clone(), c.clone());
        let (to_base, to_layers) = (base.to_string(), layers.to_vec());
        blocking(move || {
            let mut userdata = BTreeMap::new();
            userdata.insert("safety".to_string(), "yes".to_string());
            userdata.insert("rebase_to".to_string(), to_base.clone());
            let safety = engine.snapshot_locked(
                &c2,
                &SnapshotRequest {
                    description: format!("before the rebase to {to_base}"),
                    cleanup: String::new(),
                    userdata,
                },
            )?;
            engine.emit(Event::SnapshotCreated(c2.name.clone(), safety));
            journal.safety = Some(safety);
            engine.write_journal(&c2.name, &journal)?;
            crash_point("safety");
            let conflicts = engine.stage_rebase(&c2.name, &old, &new, &to_base, &to_layers)?;
            crash_point("staged");
            Ok((safety, conflicts))
        })
        .await
    }

    /// Step 5: swaps the staged copy in (recovering on failure) and reloads the spec; on
    /// failure the journal goes and the error is returned.
    async fn swap_rebased(
        self: &Arc<Self>,
        c: &Arc<Container>,
        was_running: bool,
        safety: u32,
    ) -> EngineResult<()> {
        self.swap_staged_restore(c, &journal_after(was_running, safety))
            .await?;
        // The container now runs on the new stack: its spec came with the swap.
        self.reload_spec(c);
        Ok(())
    }

    /// Step 4: the rebased copy in the staging subvolume; returns the conflicts.
    fn stage_rebase(
        &self,
        name: &str,
        old: &Stack,
        new: &Stack,
        base: &str,
        layers: &[String],
    ) -> EngineResult<Vec<Conflict>> {
        let staging = self.stage_from(name, &self.store.container_dir(name))?;
        let mut spec =
            ContainerSpec::load(&staging).map_err(|e| EngineError::failed(e.to_string()))?;
        let upper = staging.join("rootfs-layer");
        let conflicts = threeway::plan(&upper, old, new)
            .map_err(|e| EngineError::invalid_state(format!("cannot rebase {name}: {e}")))?;
        threeway::strip_origins(&upper)
            .map_err(|e| EngineError::failed(format!("rebasing the upper layer of {name}: {e}")))?;
        let shift = spec.unprivileged_map().map_or((0, 0), |m| (m.uid, m.gid));
        threeway::apply(&upper, old, new, &conflicts, shift)
            .map_err(|e| EngineError::failed(format!("rebasing the upper layer of {name}: {e}")))?;
        spec.base = base.to_string();
        spec.layers = layers.to_vec();
        spec.save(&staging)
            .map_err(|e| EngineError::failed(e.to_string()))?;
        sync_tree(&staging);
        self.write_restore_marker(name, 0)?;
        Ok(conflicts)
    }
}

fn journal_after(was_running: bool, safety: u32) -> Journal {
    Journal {
        snapshot: 0,
        was_running,
        safety: Some(safety),
    }
}

/// Flushes the staging subvolume before it is exchanged in: a crash right after the
/// exchange must not find a half-written upper.
fn sync_tree(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        // SAFETY: syncfs on an open descriptor has no memory-safety preconditions.
        unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::{BaseInfo, BaseSource, CreateRequest, Engine, LayerInfo};
    use crate::spec::ContainerSpec;

    fn add_base(engine: &Engine, name: &str) {
        let dir = engine.store().bases_dir();
        std::fs::create_dir_all(dir.join(name)).unwrap();
        let info = BaseInfo {
            name: name.into(),
            created: 1,
            source: BaseSource::Import,
        };
        std::fs::write(
            dir.join(format!("{name}.toml")),
            toml::to_string(&info).unwrap(),
        )
        .unwrap();
        engine.scan_bases().unwrap();
    }

    fn add_layer(engine: &Engine, name: &str, base: &str, below: &[&str]) {
        let dir = engine.store().layers_dir();
        std::fs::create_dir_all(dir.join(name)).unwrap();
        let info = LayerInfo {
            name: name.into(),
            created: 1,
            base: base.into(),
            layers: below.iter().map(|s| s.to_string()).collect(),
            key: format!("import:{name}"),
        };
        std::fs::write(
            dir.join(format!("{name}.toml")),
            toml::to_string(&info).unwrap(),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn layers_are_lowest_first_for_users_and_top_most_first_for_overlayfs() {
        let (_dir, _host, engine) = crate::testing::fake_engine();
        add_base(&engine, "deb@1");
        add_layer(&engine, "mqtt@1", "deb@1", &[]);
        add_layer(&engine, "stack@1", "deb@1", &["mqtt@1"]);
        let req = |layers: &[&str]| CreateRequest {
            name: "c1".into(),
            base: "deb@1".into(),
            layers: layers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let e = engine
            .create_container(req(&["stack@1", "mqtt@1"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("lowest first"), "{e}");
        engine
            .create_container(req(&["mqtt@1", "stack@1"]))
            .await
            .unwrap();
        let spec = ContainerSpec::load(&engine.store().container_dir("c1")).unwrap();
        assert_eq!(spec.layers, ["mqtt@1", "stack@1"]);
        let conf = engine.render_lxc_config(&ContainerSpec {
            privileged: true,
            ..spec
        });
        let layers = engine.store().layers_dir();
        let want = format!(
            "overlay:{}:{}:",
            layers.join("stack@1").display(),
            layers.join("mqtt@1").display()
        );
        assert!(conf.contains(&want), "{conf}");
    }

    #[tokio::test]
    async fn a_refused_rebase_says_why() {
        let (_dir, _host, engine) = crate::testing::fake_engine();
        add_base(&engine, "deb@1");
        add_base(&engine, "deb@2");
        add_layer(&engine, "mqtt@1", "deb@1", &[]);
        add_layer(&engine, "mqtt@2", "deb@2", &[]);
        engine
            .create_container(CreateRequest {
                name: "c1".into(),
                base: "deb@1".into(),
                layers: vec!["mqtt@1".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let refused = |base: &str, layers: &[&str]| {
            let layers: Vec<String> = layers.iter().map(|s| s.to_string()).collect();
            engine
                .rebase("c1", base, &layers, false)
                .unwrap_err()
                .to_string()
        };
        assert!(refused("deb@1", &["mqtt@1"]).contains("already on deb@1 + mqtt@1"));
        assert!(refused("deb@3", &["mqtt@2"]).contains("\"deb@3\" not found"));
        assert!(refused("deb@2", &[]).contains("give the layers for the new base"));
        assert!(refused("deb@2", &["mqtt@1"]).contains("built over base \"deb@1\""));
        assert!(refused("deb@2", &["mqtt@9"]).contains("\"mqtt@9\" not found"));
        // Another operation holds the container: Busy, nothing started.
        let c = engine.container("c1").unwrap();
        let guard = c.begin_owned("restore").unwrap();
        let busy = engine.rebase("c1", "deb@2", &["mqtt@2".into()], true);
        assert!(
            busy.as_ref()
                .is_err_and(|e| e.kind() == crate::error::ErrorKind::Busy),
            "{busy:?}"
        );
        drop(guard);
        let e = engine.rebase_all("deb@1", "deb@1").unwrap_err().to_string();
        assert!(e.contains("both deb@1"), "{e}");
        let e = engine.rebase_all("deb@7", "deb@2").unwrap_err().to_string();
        assert!(e.contains("no container is on base deb@7"), "{e}");
    }
}
