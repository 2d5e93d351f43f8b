//! The one mapping from D-Bus errors to exit codes and messages.

use std::fmt;

use zbus::DBusError;

use osm_host_bus::{access, error_kind, ADMIN_GROUP, BUS_NAME, ERROR_PREFIX};

/// Exit codes scripts can rely on; the values are part of the CLI's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    NotFound = 3,
    AlreadyExists = 4,
    InvalidArgument = 5,
    InvalidState = 6,
    AccessDenied = 7,
    NoSpace = 8,
    Unreachable = 9,
    Interrupted = 130,
}

impl ExitCode {
    pub const ALL: [ExitCode; 11] = [
        ExitCode::Ok,
        ExitCode::Failed,
        ExitCode::Usage,
        ExitCode::NotFound,
        ExitCode::AlreadyExists,
        ExitCode::InvalidArgument,
        ExitCode::InvalidState,
        ExitCode::AccessDenied,
        ExitCode::NoSpace,
        ExitCode::Unreachable,
        ExitCode::Interrupted,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

/// What the CLI prints (after `osm-hostctl: `) and the status it exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub code: ExitCode,
    pub message: String,
}

impl CliError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        CliError::new(ExitCode::Failed, message)
    }

    pub fn not_running() -> Self {
        CliError::new(
            ExitCode::Unreachable,
            format!("osm-hostd is not running (no owner for {BUS_NAME} on the system bus)"),
        )
    }

    /// A D-Bus error reply, by its error name and message text.
    pub fn from_dbus(name: &str, description: Option<&str>) -> Self {
        let code = exit_code_for_error_name(name);
        if code == ExitCode::Unreachable {
            return CliError::not_running();
        }
        if name == BUS_ACCESS_DENIED {
            return CliError::new(code, bus_refusal(description.unwrap_or_default()));
        }
        let text = match description {
            Some(d) if !d.trim().is_empty() => d.trim().to_string(),
            _ => name.to_string(),
        };
        CliError::new(code, text)
    }
}

const BUS_ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";

/// One line for a call the bus policy refused. Its text ("Rejected send message, 2
/// matched rules; type=...") names match rules, not people: say which permission is
/// needed, for the method it names.
fn bus_refusal(text: &str) -> String {
    let field = |key: &str| {
        let start = text.find(&format!("{key}=\""))? + key.len() + 2;
        let len = text[start..].find('"')?;
        Some(&text[start..start + len])
    };
    let interface = field("interface").unwrap_or_default();
    match field("member") {
        Some(member) if access::is_read_only(interface, member) => format!(
            "the system bus refused {member}, which anyone may call: the installed bus \
             policy (uk.co.devtank.OsmHost1.conf) is older than osm-hostctl; meanwhile it \
             needs root or membership of group {ADMIN_GROUP}"
        ),
        Some(member) => access::permission_needed(member),
        None => access::permission_needed("this"),
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Maps a D-Bus error name to the exit code documented in `--help`.
pub fn exit_code_for_error_name(name: &str) -> ExitCode {
    if let Some(kind) = name
        .strip_prefix(ERROR_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
    {
        return match kind {
            error_kind::NOT_FOUND => ExitCode::NotFound,
            error_kind::ALREADY_EXISTS => ExitCode::AlreadyExists,
            error_kind::INVALID_ARGUMENT => ExitCode::InvalidArgument,
            error_kind::INVALID_STATE | error_kind::BUSY => ExitCode::InvalidState,
            error_kind::ACCESS_DENIED => ExitCode::AccessDenied,
            error_kind::NO_SPACE => ExitCode::NoSpace,
            _ => ExitCode::Failed,
        };
    }
    match name {
        "org.freedesktop.DBus.Error.AccessDenied" => ExitCode::AccessDenied,
        "org.freedesktop.DBus.Error.ServiceUnknown"
        | "org.freedesktop.DBus.Error.NameHasNoOwner" => ExitCode::Unreachable,
        // Bus activation of osm-hostd failed: it is not running either.
        n if n.starts_with("org.freedesktop.DBus.Error.Spawn.") => ExitCode::Unreachable,
        _ => ExitCode::Failed,
    }
}

impl From<zbus::Error> for CliError {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, description, _) => {
                CliError::from_dbus(name.as_str(), description.as_deref())
            }
            zbus::Error::FDO(e) => CliError::from(*e),
            zbus::Error::Connection(err, address) => CliError::new(
                ExitCode::Unreachable,
                format!("cannot connect to the system bus at {address}: {err}"),
            ),
            zbus::Error::Address(text) => CliError::new(
                ExitCode::Unreachable,
                format!("cannot find the system bus: {text}"),
            ),
            zbus::Error::InputOutput(err) if err.kind() == std::io::ErrorKind::TimedOut => {
                CliError::failed(
                    "osm-hostd did not answer in time; the operation may still complete \
                     (check with `osm-hostctl list`)",
                )
            }
            zbus::Error::InputOutput(err) => CliError::new(
                ExitCode::Unreachable,
                format!("lost the connection to the system bus: {err}"),
            ),
            other => CliError::failed(format!("D-Bus: {other}")),
        }
    }
}

impl From<zbus::fdo::Error> for CliError {
    fn from(e: zbus::fdo::Error) -> Self {
        match e {
            zbus::fdo::Error::ZBus(inner) => CliError::from(inner),
            other => CliError::from_dbus(other.name().as_str(), other.description()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_error_names_map_to_documented_codes() {
        let cases = [
            ("NotFound", 3),
            ("AlreadyExists", 4),
            ("InvalidArgument", 5),
            ("InvalidState", 6),
            ("Busy", 6),
            ("AccessDenied", 7),
            ("NoSpace", 8),
            ("Failed", 1),
            ("SomethingNew", 1),
        ];
        for (kind, code) in cases {
            let name = format!("{ERROR_PREFIX}.{kind}");
            assert_eq!(exit_code_for_error_name(&name).code(), code, "{name}");
        }
    }

    #[test]
    fn bus_error_names_map_to_documented_codes() {
        let cases = [
            ("org.freedesktop.DBus.Error.AccessDenied", 7),
            ("org.freedesktop.DBus.Error.ServiceUnknown", 9),
            ("org.freedesktop.DBus.Error.NameHasNoOwner", 9),
            ("org.freedesktop.DBus.Error.Spawn.ChildExited", 9),
            ("org.freedesktop.DBus.Error.UnknownMethod", 1),
            ("org.freedesktop.DBus.Error.NoReply", 1),
            // A prefix match must stop at the dot.
            ("uk.co.devtank.OsmHost1.ErrorNotFound", 1),
        ];
        for (name, code) in cases {
            assert_eq!(exit_code_for_error_name(name).code(), code, "{name}");
        }
    }

    #[test]
    fn message_is_the_daemons_text() {
        let e = CliError::from_dbus(
            "uk.co.devtank.OsmHost1.Error.NotFound",
            Some("no container named \"web9\""),
        );
        assert_eq!(e.code, ExitCode::NotFound);
        assert_eq!(e.to_string(), "no container named \"web9\"");
        let bare = CliError::from_dbus("uk.co.devtank.OsmHost1.Error.Busy", None);
        assert_eq!(bare.to_string(), "uk.co.devtank.OsmHost1.Error.Busy");
    }

    #[test]
    fn no_owner_says_the_daemon_is_not_running() {
        let e = CliError::from_dbus(
            "org.freedesktop.DBus.Error.ServiceUnknown",
            Some("The name is not activatable"),
        );
        assert_eq!(e.code, ExitCode::Unreachable);
        assert_eq!(
            e.message,
            "osm-hostd is not running (no owner for uk.co.devtank.OsmHost1 on the system bus)"
        );
    }

    #[test]
    fn transport_errors() {
        let timeout = std::io::Error::from(std::io::ErrorKind::TimedOut);
        let e = CliError::from(zbus::Error::InputOutput(timeout.into()));
        assert_eq!(e.code, ExitCode::Failed);
        assert!(e.message.contains("did not answer"), "{}", e.message);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let e = CliError::from(zbus::Error::InputOutput(reset.into()));
        assert_eq!(e.code, ExitCode::Unreachable);
    }

    #[test]
    fn bus_policy_refusal_is_one_line_saying_who_may() {
        let rejected = "Rejected send message, 2 matched rules; type=\"method_call\", \
            sender=\":1.7\" (uid=1000 pid=42 comm=\"osm-hostctl stop web1\") \
            interface=\"uk.co.devtank.OsmHost1.Manager\" member=\"StopContainer\" \
            error name=\"(unset)\" requested_reply=\"0\" \
            destination=\"uk.co.devtank.OsmHost1\" (uid=0 pid=7 comm=\"osm-hostd\")";
        let e = CliError::from(zbus::fdo::Error::AccessDenied(rejected.into()));
        assert_eq!(e.code, ExitCode::AccessDenied);
        assert_eq!(
            e.message,
            "StopContainer needs root or membership of group osm-admin \
             (add a user with `sudo usermod -aG osm-admin USER`, then log in again)"
        );
        // A read refused by an outdated policy file is not blamed on the caller.
        let read = rejected.replace("StopContainer", "GetNetworkInfo");
        let e = CliError::from(zbus::fdo::Error::AccessDenied(read));
        assert!(e.message.contains("anyone may call"), "{}", e.message);
        assert!(!e.message.contains("Rejected"), "{}", e.message);
        let bare = CliError::from(zbus::fdo::Error::AccessDenied("Rejected".into()));
        assert!(
            bare.message.starts_with("this needs root"),
            "{}",
            bare.message
        );
        for e in [&e, &bare] {
            assert!(!e.message.contains('\n'));
        }
    }

    #[test]
    fn help_lists_every_exit_code() {
        let help = crate::command().render_long_help().to_string();
        for code in ExitCode::ALL {
            assert!(
                help.contains(&format!("\n  {:<3}  ", code.code())),
                "exit code {} missing from --help",
                code.code()
            );
        }
    }
}
