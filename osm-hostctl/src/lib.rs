//! `osm-hostctl`, the thin D-Bus client of `osm-hostd`.
//!
//! Every command is one method call on the system bus (plus, for base builds and
//! imports, waiting on the job the call returns). The CLI has no privileged logic and
//! reads no daemon files; the daemon checks the caller and validates every argument.
//!
//! Layers, each in its own file:
//! - [`args`]: the command line (clap derive); [`command()`] exposes it for man pages
//!   and shell completions.
//! - `calls`: the D-Bus calls, through the proxies in [`osm_host_bus::proxies`].
//! - `job`: subscribe, call, follow one job with a progress bar or plain lines.
//! - `model` and `format`: plain structs decoded from property maps, and pure
//!   functions that turn them into tables, the `info` page and `--json`.
//! - `exit`: the one mapping from D-Bus errors to messages and exit codes.
//!
//! # Exit codes
//!
//! Scripts may rely on these (they are also in `osm-hostctl --help`):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failed: `uk.co.devtank.OsmHost1.Error.Failed`, a failed job, or anything unexpected |
//! | 2 | usage error (clap) |
//! | 3 | `Error.NotFound` |
//! | 4 | `Error.AlreadyExists` |
//! | 5 | `Error.InvalidArgument`, or a local recipe/archive file that cannot be read |
//! | 6 | `Error.InvalidState` or `Error.Busy` |
//! | 7 | `Error.AccessDenied`, or `org.freedesktop.DBus.Error.AccessDenied` from the bus policy |
//! | 8 | `Error.NoSpace` |
//! | 9 | osm-hostd not reachable: no system bus, no owner for `uk.co.devtank.OsmHost1`, or the daemon left the bus while a job ran |
//! | 130 | interrupted (Ctrl-C) while waiting for a job; the job keeps running |
//!
//! Errors go to stderr as `osm-hostctl: <message>`, where the message is the text of the
//! daemon's D-Bus error.
//!
//! # JSON
//!
//! `list --json` is an array of container objects; `info --json` is one such object plus
//! `disk_usage`; `base list --json` is an array of base objects; `snapshot list --json`
//! is an array of snapshots (`num`, `type`, `pre_num`, `date` in µs, `uid`,
//! `description`, `cleanup`, `userdata`). See [`model`] for the
//! fields: the D-Bus properties in snake_case, raw values (bytes, µs since the epoch).

pub mod args;
mod calls;
mod customer;
mod exit;
mod fleet;
mod format;
mod job;
pub mod layers;
pub mod model;
mod monitor;
mod publish;
pub mod rebase;
mod remote;
mod run;
pub mod snapshots;

pub use args::Cli;
pub use exit::{exit_code_for_error_name, CliError, ExitCode};

/// The clap command, for generating the man page and shell completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// `osm-hostctl`'s `main`: parse, run, print the error and pick the exit code.
pub fn main() -> std::process::ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("osm-hostctl: cannot start the async runtime: {e}");
            return ExitCode::Failed.into();
        }
    };
    match runtime.block_on(run::run(cli)) {
        Ok(()) => ExitCode::Ok.into(),
        Err(e) => {
            eprintln!("osm-hostctl: {e}");
            e.code.into()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_is_well_formed() {
        super::command().debug_assert();
    }

    /// Paths into the repository (`base-images/…`, `overlays/…`) in a text.
    fn repo_paths(text: &str) -> Vec<String> {
        let dirs = [
            "base-images/",
            "overlays/",
            "packaging/",
            "scripts/",
            "docs/",
        ];
        text.split(|c: char| c.is_whitespace() || "`'\"(),;".contains(c))
            .filter(|w| dirs.iter().any(|d| w.starts_with(d)))
            .map(|w| w.trim_end_matches(['.', ':']).to_string())
            .collect()
    }

    #[test]
    fn help_and_readme_name_only_files_that_exist() {
        fn help(cmd: &mut clap::Command, out: &mut String) {
            out.push_str(&cmd.render_long_help().to_string());
            for sub in cmd.get_subcommands_mut() {
                help(sub, out);
            }
        }
        let mut text = String::new();
        help(&mut super::command(), &mut text);
        let help_paths = repo_paths(&text);
        assert!(
            help_paths.iter().any(|p| p.starts_with("base-images/")),
            "the help's examples name a recipe: {help_paths:?}"
        );
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let readme = include_str!("../../README.md");
        for p in help_paths.iter().chain(&repo_paths(readme)) {
            assert!(
                repo.join(p).exists(),
                "{p} is named in the help or README but is not in the repository"
            );
        }
    }
}
