//! The D-Bus calls the commands make, through the typed proxies in [`osm_host_bus::proxies`].

use osm_host_bus::wire::option;
use std::collections::HashMap;
use std::time::Duration;

use zbus::fdo::{ManagedObjects, ObjectManagerProxy, PropertiesProxy};
use zbus::names::InterfaceName;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{ObjectPath, Value};
use zbus::Connection;

use super::args::{CreateArgs, SetArgs};
use super::exit::{CliError, ExitCode};
use super::model::{ContainerDetail, ContainerInfo, Properties};
use osm_host_bus::proxies::{ContainerProxy, ManagerProxy};
use osm_host_bus::Autostart;
use osm_host_bus::{BUS_NAME, CONTAINER_IFACE, MANAGER_PATH};

/// A connection to the system bus and a proxy for osm-hostd's manager object.
pub struct Daemon {
    pub conn: Connection,
    pub manager: ManagerProxy<'static>,
    /// The ssh child carrying the connection when `-H` names a remote host.
    _tunnel: Option<super::remote::Tunnel>,
}

impl Daemon {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` if set). A call that gets
    /// no answer within `call_timeout` fails rather than hanging.
    pub async fn connect(call_timeout: Duration) -> Result<Self, CliError> {
        let unreachable = |e: zbus::Error| {
            CliError::new(
                ExitCode::Unreachable,
                format!("cannot connect to the system bus: {e}"),
            )
        };
        let conn = zbus::connection::Builder::system()
            .map_err(unreachable)?
            .method_timeout(call_timeout)
            .build()
            .await
            .map_err(unreachable)?;
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        Ok(Daemon {
            conn,
            manager,
            _tunnel: None,
        })
    }

    /// Like [`Daemon::connect`], or through ssh to the system bus of `host` (`-H`).
    pub async fn connect_to(call_timeout: Duration, host: Option<&str>) -> Result<Self, CliError> {
        let Some(host) = host else {
            return Daemon::connect(call_timeout).await;
        };
        let (conn, tunnel) = super::remote::connect(host, call_timeout).await?;
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        Ok(Daemon {
            conn,
            manager,
            _tunnel: Some(tunnel),
        })
    }

    /// Every object osm-hostd exports, with all properties, in one call.
    pub async fn managed_objects(&self) -> Result<ManagedObjects, CliError> {
        let om = ObjectManagerProxy::builder(&self.conn)
            .destination(BUS_NAME)?
            .path(MANAGER_PATH)?
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        Ok(om.get_managed_objects().await?)
    }

    /// All properties of one interface of one object, in one call.
    pub async fn properties(
        &self,
        path: &ObjectPath<'_>,
        interface: &'static str,
    ) -> Result<Properties, CliError> {
        Ok(self.properties_raw(path, interface).await?)
    }

    /// [`Daemon::properties`] with the D-Bus error left as it is, for callers that
    /// tell errors apart.
    pub async fn properties_raw(
        &self,
        path: &ObjectPath<'_>,
        interface: &'static str,
    ) -> zbus::fdo::Result<Properties> {
        let props = PropertiesProxy::builder(&self.conn)
            .destination(BUS_NAME)?
            .path(path.to_owned())?
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let iface = InterfaceName::from_static_str(interface).map_err(zbus::Error::from)?;
        props.get_all(iface).await
    }

    /// `info`: the container's properties and its disk usage. A failure to measure the
    /// disk is reported as a warning, not as the command's failure.
    pub async fn container_detail(&self, name: &str) -> Result<ContainerDetail, CliError> {
        let path = self.manager.get_container(name).await?;
        let info = ContainerInfo::from_properties(&self.properties(&path, CONTAINER_IFACE).await?)?;
        let container = ContainerProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let disk_usage = match container.get_disk_usage().await {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                eprintln!(
                    "osm-hostctl: warning: disk usage of {name} unknown: {}",
                    CliError::from(e)
                );
                None
            }
        };
        Ok(ContainerDetail { info, disk_usage })
    }
}

/// `CreateContainer`'s options: only those given on the command line, so the daemon's
/// defaults apply to the rest.
pub fn create_options(args: &CreateArgs) -> HashMap<&'static str, Value<'static>> {
    let mut options = HashMap::new();
    if let Some(a) = args.autostart {
        options.insert(option::AUTOSTART, autostart_value(a));
    }
    if let Some(p) = args.boot_priority {
        options.insert(option::BOOT_PRIORITY, Value::from(p));
    }
    if let Some(d) = args.boot_delay {
        options.insert(option::BOOT_DELAY, Value::from(d));
    }
    if let Some(bytes) = args.memory {
        options.insert(option::MEMORY, Value::from(bytes));
    }
    if let Some(n) = args.cpus {
        options.insert(option::CPUS, Value::from(n));
    }
    if !args.layers.is_empty() {
        options.insert(option::LAYERS, Value::from(args.layers.clone()));
    }
    if let Some(ip) = args.ip {
        options.insert(option::IP, Value::from(ip.to_string()));
    }
    if args.privileged {
        options.insert("privileged", Value::from(true));
    }
    options
}

/// The policy as a boolean where one does (what older daemons understand).
fn autostart_value(a: Autostart) -> Value<'static> {
    match a {
        Autostart::Always => Value::from(true),
        Autostart::Never => Value::from(false),
        Autostart::LastState => Value::from("last-state"),
    }
}

/// `SetContainer`'s settings: only those given on the command line.
pub fn set_settings(args: &SetArgs) -> HashMap<&'static str, Value<'static>> {
    let mut s = HashMap::new();
    if let Some(a) = args.autostart {
        s.insert(option::AUTOSTART, autostart_value(a));
    }
    if let Some(p) = args.boot_priority {
        s.insert(option::BOOT_PRIORITY, Value::from(p));
    }
    if let Some(d) = args.boot_delay {
        s.insert(option::BOOT_DELAY, Value::from(d));
    }
    if let Some(m) = args.memory {
        s.insert(option::MEMORY, Value::from(m));
    }
    if let Some(c) = args.cpus {
        s.insert(option::CPUS, Value::from(c));
    }
    if args.unprivileged {
        s.insert("unprivileged", Value::from(true));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn create(argv: &[&str]) -> HashMap<&'static str, Value<'static>> {
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Create(args) = cli.command else {
            panic!("not a create command")
        };
        create_options(&args)
    }

    fn set(argv: &[&str]) -> Result<HashMap<&'static str, Value<'static>>, clap::Error> {
        let cli = Cli::try_parse_from(argv)?;
        let Command::Set(args) = cli.command else {
            panic!("not a set command")
        };
        Ok(set_settings(&args))
    }

    #[test]
    fn set_sends_only_given_settings_with_the_api_types() {
        let o = set(&[
            "osm-hostctl",
            "set",
            "web1",
            "--autostart",
            "last-state",
            "--boot-priority",
            "-3",
            "--memory",
            "none",
        ])
        .unwrap();
        assert_eq!(o.len(), 3, "{o:?}");
        assert_eq!(o["autostart"], Value::from("last-state"));
        assert_eq!(o["boot_priority"], Value::from(-3i32));
        assert_eq!(o["memory"], Value::from(0u64));
        let o = set(&["osm-hostctl", "set", "web1", "--autostart", "false"]).unwrap();
        assert_eq!(o["autostart"], Value::from(false));
        // Nothing to set, or a policy that does not exist, is a usage error.
        assert!(set(&["osm-hostctl", "set", "web1"]).is_err());
        assert!(set(&["osm-hostctl", "set", "web1", "--autostart", "maybe"]).is_err());
    }

    #[test]
    fn create_takes_an_autostart_policy_and_boot_order() {
        let o = create(&[
            "osm-hostctl",
            "create",
            "web1",
            "--base",
            "b",
            "--autostart",
            "last-state",
            "--boot-priority",
            "5",
            "--boot-delay",
            "2",
        ]);
        assert_eq!(o["autostart"], Value::from("last-state"));
        assert_eq!(o["boot_priority"], Value::from(5i32));
        assert_eq!(o["boot_delay"], Value::from(2u32));
        let o = create(&[
            "osm-hostctl",
            "create",
            "web1",
            "--autostart",
            "--base",
            "b",
        ]);
        assert_eq!(o["autostart"], Value::from(true));
    }

    #[test]
    fn privileged_and_unprivileged_are_explicit_flags() {
        let o = create(&["osm-hostctl", "create", "w", "--base", "b", "--privileged"]);
        assert_eq!(o["privileged"], Value::from(true));
        let o = set(&["osm-hostctl", "set", "w", "--unprivileged"]).unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(o["unprivileged"], Value::from(true));
    }

    #[test]
    fn create_passes_only_given_options() {
        let o = create(&["osm-hostctl", "create", "web1", "--base", "debian12"]);
        assert!(o.is_empty(), "{o:?}");
    }

    #[test]
    fn create_options_have_the_api_types() {
        let o = create(&[
            "osm-hostctl",
            "create",
            "web1",
            "--base",
            "debian12",
            "--autostart",
            "--memory",
            "512M",
            "--cpus",
            "2",
            "--layer",
            "osm-stack",
            "--layer",
            "site",
            "--ip",
            "10.0.3.9",
        ]);
        assert_eq!(o["ip"], Value::from("10.0.3.9"));
        let sig = |k: &str| o[k].value_signature().to_string();
        assert_eq!(
            (sig("autostart"), sig("memory"), sig("cpus"), sig("layers")),
            ("b".into(), "t".into(), "u".into(), "as".into())
        );
        assert_eq!(o["autostart"], Value::from(true));
        assert_eq!(o["memory"], Value::from(512u64 << 20));
        assert_eq!(o["cpus"], Value::from(2u32));
        assert_eq!(
            o["layers"],
            Value::from(vec!["osm-stack".to_string(), "site".to_string()])
        );
    }

    #[test]
    fn create_rejects_bad_sizes_and_zero_cpus_as_usage_errors() {
        for argv in [
            &[
                "osm-hostctl",
                "create",
                "w",
                "--base",
                "b",
                "--memory",
                "lots",
            ][..],
            &["osm-hostctl", "create", "w", "--base", "b", "--cpus", "0"][..],
            &["osm-hostctl", "create", "w"][..],
        ] {
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }
}
