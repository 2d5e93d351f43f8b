//! [`PrivateBus`]: a private `dbus-daemon` configured like Debian's system bus, with
//! the project's real policy file included, on a unix path socket (reachable from any
//! network namespace, and by uid 65534 since the test dir is mode 0755).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::sandbox_exec::{SandboxChild, SandboxHandle};
use super::{file_tail, keep_requested, project_path, wait_until};

/// The daemon's well-known name.
pub const BUS_NAME: &str = "uk.co.devtank.OsmHost1";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BusPolicy {
    /// Debian's system-bus defaults plus `packaging/dbus/uk.co.devtank.OsmHost1.conf`.
    #[default]
    Real,
    /// Any user may call any method: lets a test check that the *daemon* refuses
    /// unprivileged callers, not just the bus policy.
    Permissive,
}

enum BusProcess {
    Host(Child),
    Sandbox(SandboxChild),
}

pub struct PrivateBus {
    process: Option<BusProcess>,
    address: String,
    dir: PathBuf,
}

impl PrivateBus {
    /// Starts a bus in the host's namespaces; its files go to `<dir>/bus/`.
    pub fn start(dir: &Path, policy: BusPolicy) -> PrivateBus {
        Self::launch(dir, policy, None)
    }

    /// Starts a bus inside `sandbox`, so that it dies with the sandbox at the latest
    /// and sees the same PIDs as the daemon.
    pub fn start_in(sandbox: &SandboxHandle, dir: &Path, policy: BusPolicy) -> PrivateBus {
        Self::launch(dir, policy, Some(sandbox))
    }

    fn launch(dir: &Path, policy: BusPolicy, sandbox: Option<&SandboxHandle>) -> PrivateBus {
        let bus_dir = dir.join("bus");
        fs::create_dir_all(&bus_dir).expect("create bus dir");
        let socket = bus_dir.join("system_bus_socket");
        let config = bus_dir.join("system.conf");
        fs::write(&config, config_xml(&socket, policy)).expect("write bus config");
        let address_file = bus_dir.join("address");
        let log_path = bus_dir.join("dbus-daemon.log");

        let mut cmd = match sandbox {
            Some(s) => s.command("dbus-daemon"),
            None => Command::new("dbus-daemon"),
        };
        cmd.arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--nosyslog", "--print-address"])
            .stdin(Stdio::null())
            .stdout(fs::File::create(&address_file).expect("create bus address file"))
            .stderr(fs::File::create(&log_path).expect("create bus log"));
        let mut process = match sandbox {
            Some(s) => BusProcess::Sandbox(s.spawn(&mut cmd).expect("spawn dbus-daemon")),
            None => BusProcess::Host(cmd.spawn().expect("spawn dbus-daemon")),
        };

        let mut address = String::new();
        let up = wait_until(Duration::from_secs(10), || {
            let text = fs::read_to_string(&address_file).unwrap_or_default();
            if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
                address = line.trim().to_string();
                return true;
            }
            process.exited()
        });
        if !up || address.is_empty() {
            process.kill();
            panic!(
                "private dbus-daemon did not start:\n{}",
                file_tail(&log_path, 40)
            );
        }
        PrivateBus {
            process: Some(process),
            address,
            dir: bus_dir,
        }
    }

    /// The value for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("system_bus_socket")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dbus-daemon.log")).unwrap_or_default()
    }

    /// Runs `dbus-send --bus=<this bus> args...` on the host.
    pub fn dbus_send(&self, args: &[&str]) -> Output {
        dbus_send(&self.address, args)
    }

    /// Whether `name` currently has an owner on this bus.
    pub fn name_has_owner(&self, name: &str) -> bool {
        name_has_owner(&self.address, name)
    }
}

/// Runs `dbus-send --bus=<address> args...` on the host.
pub fn dbus_send(address: &str, args: &[&str]) -> Output {
    Command::new("dbus-send")
        .arg(format!("--bus={address}"))
        .args(args)
        .output()
        .expect("run dbus-send")
}

/// Whether `name` has an owner on the bus at `address` (false if the bus is unreachable).
pub fn name_has_owner(address: &str, name: &str) -> bool {
    let out = dbus_send(
        address,
        &[
            "--print-reply=literal",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NameHasOwner",
            &format!("string:{name}"),
        ],
    );
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("true")
}

impl BusProcess {
    fn exited(&mut self) -> bool {
        match self {
            BusProcess::Host(c) => !matches!(c.try_wait(), Ok(None)),
            BusProcess::Sandbox(c) => c.try_wait().is_some(),
        }
    }

    fn kill(&mut self) {
        match self {
            BusProcess::Host(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            BusProcess::Sandbox(c) => {
                c.kill();
            }
        }
    }

    fn signal(&self, sig: Signal) {
        match self {
            // Not reaped yet, so the pid cannot have been reused.
            BusProcess::Host(c) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
            }
            BusProcess::Sandbox(c) => {
                let _ = c.signal(sig);
            }
        }
    }

    fn terminate(&mut self) {
        self.signal(Signal::SIGTERM);
        if !wait_until(Duration::from_secs(5), || self.exited()) {
            eprintln!("private bus: dbus-daemon ignored SIGTERM; killing it");
        }
        self.kill();
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        if keep_requested() {
            eprintln!(
                "OSM_TEST_KEEP: private bus kept at {} (files in {})",
                self.address,
                self.dir.display()
            );
            match process {
                BusProcess::Host(c) => std::mem::forget(c),
                BusProcess::Sandbox(c) => c.leak(),
            }
            return;
        }
        process.terminate();
    }
}

/// A system-bus-like configuration: Debian's default policy (deny owning names and
/// method calls, allow signals, replies and the bus driver) plus the service's policy.
fn config_xml(socket: &Path, policy: BusPolicy) -> String {
    let service_policy = match policy {
        BusPolicy::Real => format!(
            "  <include>{}</include>\n",
            project_path("packaging/dbus/uk.co.devtank.OsmHost1.conf").display()
        ),
        BusPolicy::Permissive => format!(
            "  <policy user=\"root\">\n    <allow own=\"{BUS_NAME}\"/>\n  </policy>\n  \
             <policy context=\"default\">\n    <allow send_type=\"method_call\"/>\n  \
             </policy>\n"
        ),
    };
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
{service_policy}</busconfig>
"#,
        socket = socket.display()
    )
}
