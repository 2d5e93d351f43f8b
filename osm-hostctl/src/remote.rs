//! `-H [user@]host`: the D-Bus connection tunnelled through ssh to the remote host's
//! system bus, as `machinectl -H` does: `ssh -xT [user@]host systemd-stdio-bridge`
//! (Debian's systemd package), with ssh's stdin and stdout on one end of a socketpair
//! and zbus on the other. Everything after the connection is the same as locally, so
//! the output and exit codes are too.
//!
//! `OSM_HOSTCTL_SSH` names another ssh program (like `GIT_SSH`): a wrapper that adds
//! options such as `-i KEY` or `-p PORT` (or use `~/.ssh/config`).

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use zbus::Connection;

use super::exit::{CliError, ExitCode};

/// The program run on the remote host; it joins stdin/stdout to its system bus.
pub const REMOTE_BRIDGE: &str = "systemd-stdio-bridge";
pub const SSH_ENV: &str = "OSM_HOSTCTL_SSH";

/// The ssh child must outlive the connection; it is killed when this drops.
pub struct Tunnel {
    _ssh: tokio::process::Child,
}

/// Checks `[user@]host` before it reaches ssh's command line: no option lookalikes,
/// no spaces or control characters.
pub fn check_destination(dest: &str) -> Result<(), CliError> {
    let bad = |why: &str| {
        CliError::new(
            ExitCode::InvalidArgument,
            format!("-H {dest:?}: {why}; give [user@]host, e.g. -H root@host1.example.org"),
        )
    };
    if dest.is_empty() {
        return Err(bad("empty host"));
    }
    if dest.starts_with('-') {
        return Err(bad("a host cannot start with '-'"));
    }
    if dest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("a host has no spaces or control characters"));
    }
    let host = dest.rsplit_once('@').map_or(dest, |(_, h)| h);
    if host.is_empty() || dest.matches('@').count() > 1 {
        return Err(bad("expected at most one user@ before the host"));
    }
    Ok(())
}

/// The ssh argument vector (after the program).
pub fn ssh_args(dest: &str) -> Vec<String> {
    ["-xT", "--", dest, REMOTE_BRIDGE]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Connects to the system bus of `dest` through ssh.
pub async fn connect(dest: &str, call_timeout: Duration) -> Result<(Connection, Tunnel), CliError> {
    check_destination(dest)?;
    let program = std::env::var_os(SSH_ENV).unwrap_or_else(|| "ssh".into());
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| CliError::failed(format!("cannot make a socketpair for ssh: {e}")))?;
    let theirs: OwnedFd = theirs.into();
    let theirs_out = theirs
        .try_clone()
        .map_err(|e| CliError::failed(format!("cannot duplicate the socket for ssh: {e}")))?;
    let ssh = tokio::process::Command::new(&program)
        .args(ssh_args(dest))
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::from(theirs_out))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            CliError::new(
                ExitCode::Unreachable,
                format!("cannot run {}: {e}", program.to_string_lossy()),
            )
        })?;
    ours.set_nonblocking(true)
        .map_err(|e| CliError::failed(format!("socket: {e}")))?;
    let stream = tokio::net::UnixStream::from_std(ours)
        .map_err(|e| CliError::failed(format!("socket: {e}")))?;
    // The bridge reads stdin from sshd, where no peer credentials exist, so EXTERNAL
    // cannot be checked; the remote bus sees the ssh user through the bridge anyway.
    let conn = zbus::connection::Builder::unix_stream(stream)
        .auth_mechanism(zbus::AuthMechanism::Anonymous)
        .method_timeout(call_timeout)
        .build()
        .await
        .map_err(|e| {
            CliError::new(
                ExitCode::Unreachable,
                format!(
                    "cannot reach the system bus of {dest} over ssh ({e}); ssh's own \
                     message, if any, is above; the host needs sshd and {REMOTE_BRIDGE} \
                     (Debian package systemd)"
                ),
            )
        })?;
    Ok((conn, Tunnel { _ssh: ssh }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert!(check_destination("host1").is_ok());
        assert!(check_destination("root@10.0.0.5").is_ok());
        for bad in ["", "-oProxyCommand=x", "a b", "a@b@c", "root@", "x\ny"] {
            let e = check_destination(bad).unwrap_err();
            assert_eq!(e.code, ExitCode::InvalidArgument, "{bad:?}");
        }
        assert_eq!(
            ssh_args("root@h"),
            ["-xT", "--", "root@h", "systemd-stdio-bridge"]
        );
    }
}
