//! Moving data to and from a backup target: the `rsync` and `ssh` processes.
//! The engine builds every argument vector (`crate::backup::rsync`); this seam only runs
//! them, so the fake sees exactly what would have been run.

use super::RealHost;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::process::{Child, Command, Output, Stdio};

pub trait Transfer {
    /// Runs `rsync` with `args`, stdin closed; returns its exit status and output.
    fn rsync(&self, args: &[OsString]) -> io::Result<Output>;
    /// Runs `ssh` with `args` (options, `--`, host, remote command), `input` on its
    /// stdin (closed when `None`); returns its exit status and output.
    fn ssh(&self, args: &[OsString], input: Option<&[u8]>) -> io::Result<Output>;
    /// Runs `sender | receiver` (each an argument vector, the program first: `btrfs
    /// send` into `btrfs receive`, either side possibly through ssh), copying the stream
    /// through this process to count it; the error names the side that failed.
    fn pipe(&self, sender: &[OsString], receiver: &[OsString]) -> Result<u64, String>;
    /// Runs a program on this host (the argument vector, the program first), stdin
    /// closed: a question about a local target, such as its file system.
    fn run_local(&self, argv: &[OsString]) -> io::Result<Output>;
}

fn command(argv: &[OsString]) -> Command {
    let mut c = Command::new(argv.first().map(OsString::as_os_str).unwrap_or_default());
    c.args(argv.iter().skip(1));
    c
}

impl Transfer for RealHost {
    fn rsync(&self, args: &[OsString]) -> io::Result<Output> {
        Command::new("rsync")
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    fn ssh(&self, args: &[OsString], input: Option<&[u8]>) -> io::Result<Output> {
        let Some(data) = input else {
            return Command::new("ssh").args(args).stdin(Stdio::null()).output();
        };
        let mut child = Command::new("ssh")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let wrote = child.stdin.take().expect("piped stdin").write_all(data);
        let out = child.wait_with_output()?;
        wrote.map(|()| out)
    }

    fn pipe(&self, sender: &[OsString], receiver: &[OsString]) -> Result<u64, String> {
        pipe(command(sender), command(receiver))
    }

    fn run_local(&self, argv: &[OsString]) -> io::Result<Output> {
        command(argv).stdin(Stdio::null()).output()
    }
}

/// Runs `sender | receiver`, copying the stream through this process to count it, with
/// both stderrs collected; an error names the side that failed and its last message.
pub(crate) fn pipe(mut sender: Command, mut receiver: Command) -> Result<u64, String> {
    let name = |c: &Command| {
        let p = c.get_program().to_string_lossy().into_owned();
        if p == "ssh" {
            "ssh (the target's btrfs)".to_string()
        } else {
            p
        }
    };
    let (sn, rn) = (name(&sender), name(&receiver));
    let mut s = sender
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {sn}: {e}"))?;
    let mut r = match receiver
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = s.kill();
            let _ = s.wait();
            return Err(format!("cannot run {rn}: {e}"));
        }
    };
    let mut out = s.stdout.take().expect("piped stdout");
    let mut input = r.stdin.take().expect("piped stdin");
    let (copied, s_err, r_err) = std::thread::scope(|scope| {
        let se = scope.spawn(|| read_all(&mut s));
        let re = scope.spawn(|| read_all(&mut r));
        let copied = std::io::copy(&mut out, &mut input);
        // Closing both ends lets a side still running see the end or a broken pipe.
        drop(out);
        drop(input);
        (
            copied,
            se.join().unwrap_or_default(),
            re.join().unwrap_or_default(),
        )
    });
    let s_status = s.wait().map_err(|e| format!("waiting for {sn}: {e}"))?;
    let r_status = r.wait().map_err(|e| format!("waiting for {rn}: {e}"))?;
    let last = |t: &str| {
        t.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    if !r_status.success() {
        let why = if r_status.code() == Some(255) && rn.starts_with("ssh") {
            "ssh failed: the target is unreachable or refused the key"
        } else {
            "receive failed"
        };
        return Err(format!(
            "{why} ({rn} exit {:?}: {}; sender: {})",
            r_status.code(),
            last(&r_err),
            last(&s_err)
        ));
    }
    if !s_status.success() {
        return Err(format!(
            "send failed ({sn} exit {:?}: {})",
            s_status.code(),
            last(&s_err)
        ));
    }
    copied.map_err(|e| format!("copying the send stream: {e}"))
}

fn read_all(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::pipe;
    use std::process::Command;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn the_stream_is_counted_and_each_side_is_named_when_it_fails() {
        assert_eq!(
            pipe(sh("head -c 100000 /dev/zero"), sh("cat >/dev/null")).unwrap(),
            100_000
        );
        let e = pipe(
            sh("head -c 100000 /dev/zero"),
            sh("echo 'ERROR: cannot find parent subvolume' >&2; exit 1"),
        )
        .unwrap_err();
        assert!(
            e.starts_with("receive failed") && e.contains("cannot find parent subvolume"),
            "{e}"
        );
        let e = pipe(
            sh("echo 'ERROR: not read-only' >&2; exit 1"),
            sh("cat >/dev/null"),
        )
        .unwrap_err();
        assert!(
            e.starts_with("send failed") && e.contains("not read-only"),
            "{e}"
        );
        let e = pipe(sh("true"), Command::new("/nonexistent/btrfs")).unwrap_err();
        assert!(e.contains("cannot run /nonexistent/btrfs"), "{e}");
    }
}
