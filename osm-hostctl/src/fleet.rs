//! `host capacity` and `host health`: what a fleet orchestrator and a simple monitor ask
//! of a host.

use std::collections::BTreeMap;

use serde::Serialize;

use super::exit::CliError;
use super::model::{prop, Properties};
use super::run::{print_json, say};
use osm_host_bus::proxies::ManagerProxy;
use osm_host_bus::size::format_size;

/// `host capacity --json` (Manager `GetCapacity`): sizes in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Capacity {
    pub cpus: u32,
    pub cpus_committed: u32,
    pub memory_total: u64,
    pub memory_used: u64,
    pub memory_committed: u64,
    pub containers_without_memory_limit: u32,
    pub store_total: u64,
    pub store_used: u64,
    pub store_free: u64,
    /// Count by state (stopped, starting, running, stopping).
    pub containers: BTreeMap<String, u32>,
    pub addresses_used: u32,
    pub addresses_free: u32,
    pub published_ports: Vec<String>,
}

impl Capacity {
    pub fn from_properties(p: &Properties) -> Result<Self, CliError> {
        let containers: std::collections::HashMap<String, u32> = prop(p, "Containers")?;
        Ok(Capacity {
            cpus: prop(p, "Cpus")?,
            cpus_committed: prop(p, "CpusCommitted")?,
            memory_total: prop(p, "MemoryTotal")?,
            memory_used: prop(p, "MemoryUsed")?,
            memory_committed: prop(p, "MemoryCommitted")?,
            containers_without_memory_limit: prop(p, "ContainersWithoutMemoryLimit")?,
            store_total: prop(p, "StoreTotal")?,
            store_used: prop(p, "StoreUsed")?,
            store_free: prop(p, "StoreFree")?,
            containers: containers.into_iter().collect(),
            addresses_used: prop(p, "AddressesUsed")?,
            addresses_free: prop(p, "AddressesFree")?,
            published_ports: prop(p, "PublishedPorts")?,
        })
    }
}

pub fn capacity_text(c: &Capacity) -> String {
    let states = c
        .containers
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    let ports = if c.published_ports.is_empty() {
        "none".to_string()
    } else {
        c.published_ports.join(" ")
    };
    format!(
        "CPUs:            {} ({} committed by limits)\n\
         Memory:          {} total, {} in use, {} committed by limits ({} container(s) without a limit)\n\
         Store:           {} total, {} used, {} free\n\
         Containers:      {states}\n\
         Addresses:       {} free, {} used\n\
         Published ports: {ports}",
        c.cpus,
        c.cpus_committed,
        format_size(c.memory_total),
        format_size(c.memory_used),
        format_size(c.memory_committed),
        c.containers_without_memory_limit,
        format_size(c.store_total),
        format_size(c.store_used),
        format_size(c.store_free),
        c.addresses_free,
        c.addresses_used,
    )
}

pub async fn capacity(m: &ManagerProxy<'_>, json: bool) -> Result<(), CliError> {
    let c = Capacity::from_properties(&m.get_capacity().await?)?;
    if json {
        print_json(&c)
    } else {
        say(&capacity_text(&c));
        Ok(())
    }
}

/// Prints each problem on stdout (for cron mail) and fails when there is any.
pub async fn health(m: &ManagerProxy<'_>, max_backup_age_hours: f64) -> Result<(), CliError> {
    if !(max_backup_age_hours.is_finite() && max_backup_age_hours > 0.0) {
        return Err(CliError::new(
            super::exit::ExitCode::InvalidArgument,
            format!("--max-backup-age {max_backup_age_hours} must be a positive number of hours"),
        ));
    }
    let problems = m
        .check_health((max_backup_age_hours * 3600.0) as u64)
        .await?;
    if problems.is_empty() {
        say("healthy");
        return Ok(());
    }
    for p in &problems {
        say(p);
    }
    Err(CliError::failed(format!(
        "unhealthy: {} problem(s)",
        problems.len()
    )))
}
