//! `rebase --all --from B@V1 --to B@V2`: every container on one base version moved to
//! another, one at a time (each through [`Engine::run_rebase`], with its own lock, safety
//! snapshot and journal), stopping at the first failure.

use super::rebase::RebaseReport;
use super::{jobs::Job, Engine};
use crate::error::{EngineError, EngineResult};
use crate::names::{image_base_name, validate_image_name};
use crate::spec::ContainerSpec;
use serde::Serialize;
use std::sync::Arc;

/// `rebase --all`'s `Output`: who moved, who failed, who was not tried.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebaseAllReport {
    pub from: String,
    pub to: String,
    pub moved: Vec<RebaseReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<RebaseFailure>,
    pub not_moved: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RebaseFailure {
    pub container: String,
    pub error: String,
}

impl Engine {
    /// Starts a job that moves every container on base `from` to base `to`, one at a
    /// time, stopping at the first failure. Layers move to the newest version of the
    /// same layer built over `to` (on the same lower layers); a container whose layers
    /// have none refuses the whole run before anything moves.
    pub fn rebase_all(self: &Arc<Self>, from: &str, to: &str) -> EngineResult<Arc<Job>> {
        validate_image_name("base", from)?;
        validate_image_name("base", to)?;
        let to = self.resolve_base(to);
        self.require_base(&to)?;
        if from == to {
            return Err(EngineError::invalid_argument(format!(
                "--from and --to are both {to}; name the version to move to"
            )));
        }
        let mut plan = Vec::new();
        for c in self.all_containers() {
            let spec = c.info().spec;
            if spec.base != from {
                continue;
            }
            let lowest_first = self.layers_over(&spec, &to)?;
            let (base, layers) = self.check_rebase(&spec, &to, &lowest_first)?;
            plan.push((c, base, layers));
        }
        if plan.is_empty() {
            return Err(EngineError::not_found(format!(
                "no container is on base {from}; `osm-hostctl list` shows the pinned bases"
            )));
        }
        plan.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let engine = self.clone();
        let (from, to) = (from.to_string(), to.to_string());
        let label = format!("{from}->{to}");
        let job = self.jobs.start("rebase-all", &label, |job2| async move {
            let mut report = RebaseAllReport {
                from: from.clone(),
                to: to.clone(),
                ..Default::default()
            };
            let total = plan.len();
            for (i, (c, base, layers)) in plan.into_iter().enumerate() {
                if report.failed.is_some() {
                    report.not_moved.push(c.name.clone());
                    continue;
                }
                job2.set_progress(i as f64 / total as f64, &format!("rebasing {}", c.name));
                let inner = engine.jobs.create("rebase", &c.name);
                let result = match c.begin_owned("rebase") {
                    Ok(guard) => {
                        let r = engine.run_rebase(&c, &base, &layers, false, &inner).await;
                        drop(guard);
                        r
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(r) => {
                        inner.finish(Ok(r.summary()));
                        report.moved.push(r);
                    }
                    Err(e) => {
                        inner.finish(Err(e.to_string()));
                        report.failed = Some(RebaseFailure {
                            container: c.name.clone(),
                            error: e.to_string(),
                        });
                    }
                }
            }
            let moved: Vec<&str> = report.moved.iter().map(|r| r.container.as_str()).collect();
            let moved = if moved.is_empty() {
                "none".to_string()
            } else {
                moved.join(", ")
            };
            job2.set_output(serde_json::to_string(&report).expect("report serializes"));
            match &report.failed {
                None => Ok(format!("moved from {from} to {to}: {moved}")),
                Some(f) => Err(format!(
                    "{} did not move: {}; moved before it: {moved}; not tried: {}",
                    f.container,
                    f.error,
                    if report.not_moved.is_empty() {
                        "none".to_string()
                    } else {
                        report.not_moved.join(", ")
                    }
                )),
            }
        });
        Ok(job)
    }

    /// For `rebase --all`: the container's layers as versions built over `to`, lowest
    /// first (each the newest of its name over `to` and the layers already chosen).
    fn layers_over(&self, spec: &ContainerSpec, to: &str) -> EngineResult<Vec<String>> {
        let all = self.layer_list();
        let mut chosen: Vec<String> = Vec::new();
        for old in &spec.layers {
            let plain = image_base_name(old);
            let found = all
                .iter()
                .filter(|l| image_base_name(&l.name) == plain && l.base == to && l.layers == chosen)
                .max_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
            match found {
                Some(l) => chosen.push(l.name.clone()),
                None => {
                    return Err(EngineError::not_found(format!(
                        "{} uses layer {old}, and no version of layer {plain} is built over {to}; \
                         build it first (`osm-hostctl layer build {plain}@auto --recipe ...`)",
                        spec.name
                    )))
                }
            }
        }
        Ok(chosen)
    }
}
