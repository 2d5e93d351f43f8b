//! `osm-hostctl rebase`: move a container (or every container on a base) to another base
//! and layer versions, with the daemon's three-way conflict report.

use clap::Args;
use serde_json::Value;
use zbus::zvariant::ObjectPath;

use super::calls::Daemon;
use super::exit::{CliError, ExitCode};
use super::job::JobWatch;
use super::run::{print_json, say};
use osm_host_bus::JOB_IFACE;

#[derive(Debug, Args)]
pub struct RebaseArgs {
    /// Container to move (omit with --all)
    #[arg(required_unless_present = "all", conflicts_with_all = ["all", "from", "to"])]
    pub name: Option<String>,
    /// The base to move to, NAME@VERSION (a plain NAME means its newest version)
    #[arg(long, value_name = "B@V", required_unless_present = "all")]
    pub base: Option<String>,
    /// A layer for the new base, lowest first; repeat for several (every layer of the
    /// stack: the old ones were built over the old base)
    #[arg(long = "layer", value_name = "L@V")]
    pub layers: Vec<String>,
    /// Only list the conflicts and the rule each would get; change nothing
    #[arg(long, conflicts_with = "all")]
    pub dry_run: bool,
    /// Move every container on --from to --to, one at a time, stopping at the first failure
    #[arg(long, requires_all = ["from", "to"], conflicts_with_all = ["base", "layers"])]
    pub all: bool,
    /// With --all: the base version the containers are on
    #[arg(long, value_name = "B@V1", requires = "all")]
    pub from: Option<String>,
    /// With --all: the base version to move them to
    #[arg(long, value_name = "B@V2", requires = "all")]
    pub to: Option<String>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

async fn output(daemon: &Daemon, path: &ObjectPath<'_>) -> Option<Value> {
    let props = daemon.properties_raw(path, JOB_IFACE).await.ok()?;
    let text = String::try_from(props.get("Output")?.clone()).ok()?;
    serde_json::from_str(&text).ok()
}

pub async fn run(daemon: &Daemon, args: RebaseArgs) -> Result<(), CliError> {
    let m = &daemon.manager;
    let watch = JobWatch::subscribe(daemon).await?;
    let job = match (&args.name, &args.base, &args.from, &args.to) {
        (Some(name), Some(base), _, _) => {
            let layers: Vec<&str> = args.layers.iter().map(String::as_str).collect();
            m.rebase(name, base, &layers, args.dry_run).await?
        }
        (_, _, Some(from), Some(to)) => m.rebase_all(from, to).await?,
        _ => {
            return Err(CliError::new(
                ExitCode::InvalidArgument,
                "give NAME --base B@V, or --all --from B@V1 --to B@V2",
            ))
        }
    };
    let result = watch.follow(daemon, &job).await;
    let report = output(daemon, &job).await;
    match (&report, args.json) {
        (Some(r), true) => print_json(r)?,
        (Some(r), false) if args.all => say(all_text(r).trim_end()),
        (Some(r), false) => say(report_text(r).trim_end()),
        (None, _) => {}
    }
    result
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn stack(v: &Value) -> String {
    let mut parts = vec![v["base"].as_str().unwrap_or("?").to_string()];
    parts.extend(strs(&v["layers"]));
    parts.join(" + ")
}

fn rule_text(rule: &str) -> &'static str {
    match rule {
        "new-lower" => "takes the new version (package-managed)",
        "merged-status" => "new package state, plus the container's own packages",
        "keep-with-osm-new" => "container's version kept; new one written as .osm-new",
        "keep" => "container's version kept",
        _ => "?",
    }
}

/// One container's report, for people.
pub fn report_text(r: &Value) -> String {
    let mut s = String::new();
    let (from, to) = (stack(&r["from"]), stack(&r["to"]));
    let name = r["container"].as_str().unwrap_or("?");
    if r["dry_run"].as_bool() == Some(true) {
        s.push_str(&format!(
            "{name}: would move from {from} to {to} (dry run: nothing changed)\n"
        ));
    } else {
        s.push_str(&format!("rebased {name} from {from} to {to}\n"));
        if let Some(n) = r["safety_snapshot"].as_u64() {
            s.push_str(&format!("the state before is snapshot {n}\n"));
        }
    }
    let conflicts = r["conflicts"].as_array().cloned().unwrap_or_default();
    if conflicts.is_empty() {
        s.push_str("no conflicts\n");
        return s;
    }
    let rows: Vec<Vec<String>> = conflicts
        .iter()
        .map(|c| {
            vec![
                c["path"].as_str().unwrap_or("?").to_string(),
                c["change"].as_str().unwrap_or("?").to_string(),
                rule_text(c["rule"].as_str().unwrap_or("")).to_string(),
            ]
        })
        .collect();
    s.push_str(&super::format::table(
        &["CONFLICT", "CONTAINER", "RULE"],
        &rows,
    ));
    s
}

fn all_text(r: &Value) -> String {
    let mut s = String::new();
    let moved = r["moved"].as_array().cloned().unwrap_or_default();
    for m in &moved {
        s.push_str(&report_text(m));
    }
    let names: Vec<&str> = moved
        .iter()
        .filter_map(|m| m["container"].as_str())
        .collect();
    s.push_str(&format!(
        "moved: {}\n",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ));
    if let Some(f) = r["failed"].as_object() {
        s.push_str(&format!(
            "failed: {}: {}\n",
            f.get("container").and_then(Value::as_str).unwrap_or("?"),
            f.get("error").and_then(Value::as_str).unwrap_or("?")
        ));
        s.push_str(&format!(
            "not tried: {}\n",
            strs(&r["not_moved"]).join(", ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_each_conflict_and_its_rule() {
        let r = serde_json::json!({
            "container": "web1",
            "from": {"base": "bookworm@1", "layers": []},
            "to": {"base": "bookworm@2", "layers": ["mqtt@2"]},
            "dry_run": false,
            "safety_snapshot": 4,
            "conflicts": [
                {"path": "/etc/motd", "change": "changed", "rule": "keep-with-osm-new"},
                {"path": "/var/lib/dpkg/status", "change": "changed", "rule": "merged-status"}
            ]
        });
        let t = report_text(&r);
        assert!(
            t.contains("rebased web1 from bookworm@1 to bookworm@2 + mqtt@2"),
            "{t}"
        );
        assert!(t.contains("snapshot 4"), "{t}");
        assert!(t.contains("/etc/motd") && t.contains(".osm-new"), "{t}");
        assert!(t.contains("/var/lib/dpkg/status"), "{t}");
    }
}
