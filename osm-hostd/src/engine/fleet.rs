//! What a fleet needs to know about the host: which containers ought to run, and what
//! the host has to spare (metrics, `host capacity`, `host health`).

use super::{ContainerInfo, Engine};
use crate::spec::Autostart;

impl Engine {
    /// Whether the container ought to be running: autostart, or `last-state` whose
    /// recorded state is running (what a boot would start).
    pub fn should_run(&self, info: &ContainerInfo) -> bool {
        match info.spec.autostart {
            Autostart::Never => false,
            Autostart::Always => true,
            Autostart::LastState => self.last_state(&info.spec.name) == Some(true),
        }
    }

    /// Layers in the store (`layers/<name>`, staging entries left out).
    pub fn layer_count(&self) -> usize {
        std::fs::read_dir(self.store.layers_dir())
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .filter(|e| e.path().is_dir())
                    .count()
            })
            .unwrap_or(0)
    }
}

/// What the host has and what is taken: for placing new containers (`host capacity`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capacity {
    pub cpus: u32,
    /// Sum of the containers' CPU limits (containers without one are not counted).
    pub cpus_committed: u32,
    pub memory_total: u64,
    /// MemTotal - MemAvailable.
    pub memory_used: u64,
    /// Sum of the containers' memory limits.
    pub memory_committed: u64,
    pub containers_without_memory_limit: u32,
    pub store_total: u64,
    pub store_used: u64,
    pub store_free: u64,
    /// Containers by state name (every state present, 0 when none).
    pub containers: Vec<(&'static str, u32)>,
    pub addresses_used: u32,
    pub addresses_free: u32,
    /// Host ports published to containers through NGINX (`tcp/<port>`).
    pub published_ports: Vec<String>,
}

impl Engine {
    /// The host's capacity and what the containers commit and use. Never blocks on a
    /// container's operation.
    pub fn capacity(&self) -> Capacity {
        use super::RunState;
        let infos: Vec<ContainerInfo> = self.all_containers().iter().map(|c| c.info()).collect();
        let (memory_total, memory_available) = self.host.memory();
        let (store_total, store_free) = self.store.space().unwrap_or((0, 0));
        let net = self.network_info();
        let states = [
            RunState::Stopped,
            RunState::Starting,
            RunState::Running,
            RunState::Stopping,
        ];
        Capacity {
            cpus: online_cpus(),
            cpus_committed: infos.iter().filter_map(|i| i.spec.cpus).sum(),
            memory_total,
            memory_used: memory_total.saturating_sub(memory_available),
            memory_committed: infos.iter().filter_map(|i| i.spec.memory).sum(),
            containers_without_memory_limit: infos
                .iter()
                .filter(|i| i.spec.memory.is_none())
                .count() as u32,
            store_total,
            store_used: store_total.saturating_sub(store_free),
            store_free,
            containers: states
                .iter()
                .map(|s| {
                    (
                        s.as_str(),
                        infos.iter().filter(|i| i.state == *s).count() as u32,
                    )
                })
                .collect(),
            addresses_used: net.used,
            addresses_free: net.free,
            published_ports: crate::net::publish_fw::published_ports(
                infos.iter().map(|i| &i.spec.publish),
            )
            .iter()
            .map(|p| format!("tcp/{p}"))
            .collect(),
        }
    }
}

impl Engine {
    /// What is wrong with the host, one sentence each; empty when everything that
    /// should run runs and backups are fresh. A backup is stale when its last success
    /// started more than `max_backup_age` seconds ago; a container never backed up is
    /// stale only once backups are in use on this host (the status file names any
    /// container) and it is older than `max_backup_age`.
    pub fn health(&self, max_backup_age: u64) -> Vec<String> {
        use super::RunState;
        let mut problems = Vec::new();
        let now = crate::fsutil::now_secs();
        let backups = self.backup_status();
        let backups_in_use = !backups.containers.is_empty();
        for c in self.all_containers() {
            let info = c.info();
            let name = &info.spec.name;
            if self.should_run(&info) && info.state != RunState::Running {
                problems.push(format!(
                    "container {name} should run (autostart = {}) but is {}",
                    info.spec.autostart.as_str(),
                    info.state.as_str()
                ));
            }
            if !info.warning.is_empty() {
                problems.push(format!("container {name}: {}", info.warning));
            }
            let last_ok = backups
                .containers
                .get(name)
                .and_then(|b| b.last_success.as_ref())
                .map(|o| o.time);
            match last_ok {
                Some(t) if now.saturating_sub(t) > max_backup_age => problems.push(format!(
                    "container {name}: the last good backup is {} old (more than {})",
                    hours(now.saturating_sub(t)),
                    hours(max_backup_age)
                )),
                None if backups_in_use
                    && now.saturating_sub(info.spec.created) > max_backup_age =>
                {
                    problems.push(format!("container {name} has never been backed up"))
                }
                _ => {}
            }
        }
        if let Some(d) = self.network_info().dnsmasq {
            if d.state != "running" {
                problems.push(format!(
                    "dnsmasq is {} (restarted {} times); `osm-hostctl host info` and the daemon's log say why",
                    d.state, d.restarts
                ));
            }
        }
        problems
    }
}

fn hours(secs: u64) -> String {
    format!("{:.1} h", secs as f64 / 3600.0)
}

fn online_cpus() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).unwrap_or(1).max(1)
}

/// (MemTotal, MemAvailable) in bytes from /proc/meminfo's text.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

#[cfg(test)]
mod tests {
    use crate::backup::status::{Attempt, StatusFile};
    use crate::engine::CreateRequest;
    use crate::spec::Autostart;

    fn req(name: &str, autostart: Autostart, memory: Option<u64>) -> CreateRequest {
        CreateRequest {
            name: name.into(),
            base: "bb".into(),
            autostart,
            memory,
            cpus: Some(1),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn capacity_sums_limits_and_counts_states() {
        let (_dir, _host, engine) = crate::testing::fake_engine();
        engine
            .create_container(req("a", Autostart::Never, Some(1 << 30)))
            .await
            .unwrap();
        engine
            .create_container(req("b", Autostart::Never, None))
            .await
            .unwrap();
        let c = engine.capacity();
        assert_eq!(c.memory_committed, 1 << 30);
        assert_eq!(c.containers_without_memory_limit, 1);
        assert_eq!(c.cpus_committed, 2);
        assert!(c.containers.contains(&("stopped", 2)), "{:?}", c.containers);
        assert_eq!(c.addresses_used, 2);
        assert!(c.published_ports.is_empty());
        assert!(c.cpus >= 1 && c.memory_total > 0);
    }

    #[tokio::test]
    async fn health_names_stopped_autostart_containers_and_stale_backups() {
        let (_dir, _host, engine) = crate::testing::fake_engine();
        assert!(engine.health(3600).is_empty());
        engine
            .create_container(req("auto", Autostart::Always, None))
            .await
            .unwrap();
        engine
            .create_container(req("manual", Autostart::Never, None))
            .await
            .unwrap();
        let problems = engine.health(3600);
        assert_eq!(
            problems,
            ["container auto should run (autostart = true) but is stopped"]
        );
        // Backups in use: a stale success is a problem; a young container never backed
        // up is not (yet).
        let lxc = engine.store().lxc_dir();
        let mut status = StatusFile::default();
        let old = crate::fsutil::now_secs() - 7200;
        status.record(
            "manual",
            Attempt {
                time: old,
                result: "ok".into(),
                ..Default::default()
            },
        );
        status.save(&lxc).unwrap();
        let problems = engine.health(3600);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[1].starts_with("container manual: the last good backup is 2.0 h old"),
            "{problems:?}"
        );
        assert!(engine.health(3 * 3600).len() == 1);
    }

    #[test]
    fn parses_meminfo() {
        let t =
            "MemTotal:        4028180 kB\nMemFree:          123 kB\nMemAvailable:    2000000 kB\n";
        assert_eq!(super::parse_meminfo(t), (4028180 * 1024, 2000000 * 1024));
    }
}
