//! [`SshPeer`]: sshd in a rig's sandbox (the daemon's network namespace), reached from a
//! second sandbox over a veth pair, for `osm-hostctl -H` tests. Its `ForceCommand` checks
//! that the client asked for `systemd-stdio-bridge` and runs that bridge on the rig's
//! private bus (the stand-in for the remote host's system bus).

use super::{wait_until, Rig, Sandbox, SandboxChild};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The rig's side of the veth pair, where sshd listens.
pub const SSH_PEER_SERVER_ADDR: &str = "198.51.100.1";
/// The client sandbox's side.
pub const SSH_PEER_CLIENT_ADDR: &str = "198.51.100.2";

pub struct SshPeer {
    // Field order is drop order: sshd first, then the client's namespace.
    _sshd: SandboxChild,
    /// Where clients run: a network namespace with no bus of its own.
    pub client: Sandbox,
    /// An ssh wrapper (for `OSM_HOSTCTL_SSH`) with the test's key and known hosts.
    pub ssh_wrapper: PathBuf,
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl SshPeer {
    /// Starts sshd for root (key only) in the rig's network namespace; `dir` holds the
    /// keys and configs.
    pub fn start(rig: &Rig, dir: &Path) -> SshPeer {
        let client = Sandbox::new();
        let out = Command::new("nsenter")
            .arg(format!("--target={}", rig.sandbox().holder_pid()))
            .args([
                "--net", "--", "ip", "link", "add", "osm-h0", "type", "veth", "peer", "name",
                "osm-h1", "netns",
            ])
            .arg(client.holder_pid().to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "veth: {out:?}");
        let server = rig.sandbox();
        server.run_ok(
            "ip",
            &[
                "addr",
                "add",
                &format!("{SSH_PEER_SERVER_ADDR}/24"),
                "dev",
                "osm-h0",
            ],
        );
        server.run_ok("ip", &["link", "set", "osm-h0", "up"]);
        client.run_ok(
            "ip",
            &[
                "addr",
                "add",
                &format!("{SSH_PEER_CLIENT_ADDR}/24"),
                "dev",
                "osm-h1",
            ],
        );
        client.run_ok("ip", &["link", "set", "osm-h1", "up"]);
        client.run_ok("ip", &["link", "set", "lo", "up"]);

        let keygen = |path: &Path| {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path)
                .status()
                .unwrap();
            assert!(st.success());
        };
        keygen(&dir.join("host_key"));
        keygen(&dir.join("id"));
        std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).unwrap();
        let bridge = dir.join("bridge.sh");
        write_script(
            &bridge,
            &format!(
                "#!/bin/sh\n\
                 if [ \"$SSH_ORIGINAL_COMMAND\" != systemd-stdio-bridge ]; then\n\
                 \x20   echo \"unexpected remote command: $SSH_ORIGINAL_COMMAND\" >&2; exit 97\n\
                 fi\n\
                 exec /usr/bin/systemd-stdio-bridge '-p{}'\n",
                rig.bus().address()
            ),
        );
        let ssh_wrapper = dir.join("ssh.sh");
        write_script(
            &ssh_wrapper,
            &format!(
                "#!/bin/sh\nexec ssh -i '{}' -o BatchMode=yes -o ConnectTimeout=5 \
                 -o StrictHostKeyChecking=accept-new -o 'UserKnownHostsFile={}' \"$@\"\n",
                dir.join("id").display(),
                dir.join("known_hosts").display()
            ),
        );
        let conf = dir.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "ListenAddress {SSH_PEER_SERVER_ADDR}:22\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n\
                 ForceCommand {}\n",
                dir.join("host_key").display(),
                dir.join("authorized_keys").display(),
                bridge.display()
            ),
        )
        .unwrap();
        server.run_ok("mkdir", &["-p", "/run/sshd"]);
        let mut cmd = server.command("/usr/sbin/sshd");
        cmd.args(["-D", "-e", "-f"]).arg(&conf);
        let sshd = server.spawn(&mut cmd).unwrap();
        let up = wait_until(Duration::from_secs(10), || {
            client
                .command("/bin/busybox")
                .args(["nc", "-w", "1", SSH_PEER_SERVER_ADDR, "22"])
                .stdin(std::process::Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).starts_with("SSH-"))
                .unwrap_or(false)
        });
        assert!(up, "sshd answers on {SSH_PEER_SERVER_ADDR}:22");
        SshPeer {
            _sshd: sshd,
            client,
            ssh_wrapper,
        }
    }

    /// `osm-hostctl -H root@<server> args...` run in the client namespace, whose
    /// system bus address leads nowhere: only the ssh tunnel reaches the daemon.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.client.command(super::ctl_bin());
        cmd.env("OSM_HOSTCTL_SSH", &self.ssh_wrapper)
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                "unix:path=/nonexistent/osm-test-bus",
            )
            .arg("-H")
            .arg(format!("root@{SSH_PEER_SERVER_ADDR}"))
            .args(args);
        cmd
    }
}
