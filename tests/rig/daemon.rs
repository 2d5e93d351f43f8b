//! [`Daemon`]: the real `osm-hostd` binary running inside a sandbox, talking to a
//! private bus, logging to `<dir>/osm-hostd.log`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::bus::{name_has_owner, BUS_NAME};
pub use super::daemon_config::DaemonConfig;
use super::sandbox_exec::{SandboxChild, SandboxHandle};
use super::{file_tail, keep_requested, wait_until};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Daemon {
    inside: SandboxHandle,
    bus_address: String,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<SandboxChild>,
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes `<dir>/hostd.toml` from `config`; does not start the daemon.
    pub fn new(
        inside: SandboxHandle,
        bus_address: &str,
        dir: &Path,
        config: &DaemonConfig,
    ) -> Daemon {
        let daemon = Daemon {
            inside,
            bus_address: bus_address.to_string(),
            config_path: dir.join("hostd.toml"),
            log_path: dir.join("osm-hostd.log"),
            child: None,
            env: Vec::new(),
        };
        daemon.write_config(config);
        daemon
    }

    /// Rewrites the config file; takes effect at the next start.
    pub fn write_config(&self, config: &DaemonConfig) {
        fs::write(&self.config_path, config.render()).expect("write hostd.toml");
    }

    /// Sets (or with `None` removes) an environment variable for the next starts.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the daemon wrote to stdout and stderr, over all its starts.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        file_tail(&self.log_path, lines)
    }

    /// The daemon's pid in the host's PID namespace, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(SandboxChild::pid)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().is_none(),
            None => false,
        }
    }

    /// Starts the daemon and waits until it owns its bus name; panics with the log
    /// tail if it exits or does not get there within 20 s.
    pub fn start(&mut self) {
        if let Err(why) = self.try_start() {
            panic!("{why}");
        }
    }

    /// Like [`Self::start`], but returns the failure (e.g. to test a bad config).
    pub fn try_start(&mut self) -> Result<(), String> {
        assert!(!self.is_running(), "osm-hostd is already running");
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open daemon log");
        writeln!(
            log,
            "=== rig: starting osm-hostd --config {} ===",
            self.config_path.display()
        )
        .expect("write daemon log");
        // osm-hostd reads its tracing filter from OSM_HOSTD_LOG.
        let filter = std::env::var("OSM_HOSTD_LOG")
            .unwrap_or_else(|_| "info,osm_host=debug,osm_hostd=debug".to_string());
        let mut cmd = self.inside.command(super::daemon_bin());
        cmd.arg("--config")
            .arg(&self.config_path)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .env("OSM_HOSTD_LOG", filter)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup daemon log"))
            .stderr(log);
        let child = self
            .inside
            .spawn(&mut cmd)
            .expect("spawn osm-hostd in sandbox");
        self.child = Some(child);

        let mut exited = None;
        let owned = wait_until(START_TIMEOUT, || {
            if name_has_owner(&self.bus_address, BUS_NAME) {
                return true;
            }
            exited = self.child.as_mut().and_then(SandboxChild::try_wait);
            exited.is_some()
        });
        if owned && exited.is_none() {
            return Ok(());
        }
        let what = match exited {
            Some(status) => format!("exited ({status})"),
            None => format!("did not own {BUS_NAME} within {START_TIMEOUT:?}"),
        };
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
        Err(format!(
            "osm-hostd {what}; log {}:\n{}",
            self.log_path.display(),
            self.log_tail(60)
        ))
    }

    /// SIGTERM, then waits for it to exit; panics (after a SIGKILL) if it ignores
    /// SIGTERM for 20 s. Returns None if it was not running.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        match self.terminate() {
            Ok(status) => status,
            Err(why) => panic!("{why}"),
        }
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        self.child.take().map(|mut c| c.kill())
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    fn terminate(&mut self) -> Result<Option<ExitStatus>, String> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let _ = child.signal(Signal::SIGTERM);
        if let Some(status) = child.wait_timeout(STOP_TIMEOUT) {
            return Ok(Some(status));
        }
        child.kill();
        Err(format!(
            "osm-hostd ignored SIGTERM for {STOP_TIMEOUT:?}; log:\n{}",
            self.log_tail(60)
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if keep_requested() {
            if let Some(child) = self.child.take() {
                eprintln!(
                    "OSM_TEST_KEEP: osm-hostd kept running (pid {:?}), config {}, log {}",
                    child.pid(),
                    self.config_path.display(),
                    self.log_path.display()
                );
                child.leak();
            }
            return;
        }
        if let Err(why) = self.terminate() {
            eprintln!("{why}");
        }
    }
}
