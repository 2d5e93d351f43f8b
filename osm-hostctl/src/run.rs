//! One function per command: make the call, print the result.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use zbus::zvariant::Fd;

use super::args::{BackupCommand, BaseCommand, Cli, Command, HostCommand};
use super::calls::{create_options, set_settings, Daemon};
use super::exit::{CliError, ExitCode};
use super::format;
use super::job::JobWatch;
use super::model::{bases_from, containers_from, NetworkInfo};

/// How long a call may take before we give up on it. Calls return at once except stop
/// and restart, which wait for the container to shut down.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

fn call_timeout(command: &Command) -> Duration {
    match command {
        Command::Stop { timeout, .. } | Command::Restart { timeout, .. } => {
            CALL_TIMEOUT + Duration::from_secs(timeout.unwrap_or(0).into())
        }
        // Every container gets its stop timeout, a priority group at a time.
        Command::Host(HostCommand::Shutdown) => Duration::from_secs(3600),
        _ => CALL_TIMEOUT,
    }
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let daemon = Daemon::connect_to(call_timeout(&cli.command), cli.host.as_deref()).await?;
    let m = &daemon.manager;
    match cli.command {
        Command::Create(args) => {
            m.create_container(&args.name, &args.base, create_options(&args))
                .await?;
            say(&format!("created {}", args.name));
        }
        Command::Start { name } => {
            m.start_container(&name).await?;
            say(&format!("started {name}"));
        }
        Command::Stop {
            name,
            force,
            timeout,
        } => {
            m.stop_container(&name, force, timeout.unwrap_or(0)).await?;
            say(&format!("stopped {name}"));
        }
        Command::Restart { name, timeout } => {
            m.restart_container(&name, timeout.unwrap_or(0)).await?;
            say(&format!("restarted {name}"));
        }
        Command::Delete { name, force } => {
            m.delete_container(&name, force).await?;
            say(&format!("deleted {name}"));
        }
        Command::List(out) => {
            let list = containers_from(&daemon.managed_objects().await?)?;
            if out.json {
                print_json(&list)?;
            } else {
                say(format::containers_table(&list).trim_end());
            }
        }
        Command::Info { name, json } => {
            let detail = daemon.container_detail(&name).await?;
            if json.json {
                print_json(&detail)?;
            } else {
                say(format::container_detail(&detail, now_us()).trim_end());
            }
        }
        Command::Set(args) => {
            m.set_container(&args.name, set_settings(&args)).await?;
            say(&format!("updated {}", args.name));
        }
        Command::Host(HostCommand::Shutdown) => {
            let stopped = m.shutdown().await?;
            say(&format!(
                "stopped {} container(s){}{}",
                stopped.len(),
                if stopped.is_empty() { "" } else { ": " },
                stopped.join(" ")
            ));
        }
        Command::Base(cmd) => base(&daemon, cmd).await?,
        Command::Backup(cmd) => backup(&daemon, cmd).await?,
        Command::Host(HostCommand::Info(out)) => {
            let info = NetworkInfo::from(m.get_network_info().await?);
            if out.json {
                print_json(&info)?;
            } else {
                say(format::network_info(&info).trim_end());
            }
        }
        Command::Host(HostCommand::Capacity(out)) => super::fleet::capacity(m, out.json).await?,
        Command::Host(HostCommand::Health { max_backup_age }) => {
            super::fleet::health(m, max_backup_age).await?
        }
        Command::Snapshot(cmd) => super::snapshots::run(&daemon, cmd).await?,
        Command::Publish(args) => super::publish::publish(&daemon, args).await?,
        Command::Unpublish(args) => super::publish::unpublish(&daemon, args).await?,
        Command::Customer(cmd) => super::customer::run(&daemon, cmd).await?,
        Command::Monitor(out) => super::monitor::run(&daemon, out.json).await?,
        Command::Layer(cmd) => super::layers::run(&daemon, cmd).await?,
        Command::Rebase(args) => super::rebase::run(&daemon, args).await?,
    }
    Ok(())
}

async fn base(daemon: &Daemon, cmd: BaseCommand) -> Result<(), CliError> {
    let m = &daemon.manager;
    match cmd {
        BaseCommand::Build { name, recipe } => {
            let text =
                std::fs::read_to_string(&recipe).map_err(|e| local_file_error(&recipe, e))?;
            let watch = JobWatch::subscribe(daemon).await?;
            let job = m.build_base(&name, &text).await?;
            let name = super::job::target(daemon, &job).await.unwrap_or(name);
            watch.follow(daemon, &job).await?;
            say(&format!("built base {name}"));
        }
        BaseCommand::Import { name, file } => {
            let archive = std::fs::File::open(&file).map_err(|e| local_file_error(&file, e))?;
            if archive.metadata().is_ok_and(|md| md.is_dir()) {
                return Err(CliError::new(
                    ExitCode::InvalidArgument,
                    format!(
                        "{} is a directory; give a .tar, .tar.gz or .tar.zst archive",
                        file.display()
                    ),
                ));
            }
            let watch = JobWatch::subscribe(daemon).await?;
            let job = m.import_base(&name, Fd::from(&archive)).await?;
            drop(archive);
            watch.follow(daemon, &job).await?;
            say(&format!("imported base {name}"));
        }
        BaseCommand::List(out) => {
            let list = bases_from(&daemon.managed_objects().await?)?;
            if out.json {
                print_json(&list)?;
            } else {
                say(format::bases_table(&list).trim_end());
            }
        }
        BaseCommand::Delete { name } => {
            m.delete_base(&name).await?;
            say(&format!("deleted base {name}"));
        }
        BaseCommand::Prune { name } => {
            let deleted = m.prune_bases(&name).await?;
            if deleted.is_empty() {
                say(&format!("no unused older versions of base {name}"));
            }
            for b in deleted {
                say(&format!("deleted base {b}"));
            }
        }
    }
    Ok(())
}

async fn backup(daemon: &Daemon, cmd: BackupCommand) -> Result<(), CliError> {
    let m = &daemon.manager;
    match cmd {
        BackupCommand::Run { names, all } => {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let watch = JobWatch::subscribe(daemon).await?;
            let job = m.run_backup(&refs, all).await?;
            watch.follow(daemon, &job).await?;
            say("backup verified");
        }
        BackupCommand::Status(out) => {
            let rows = m.get_backup_status().await?;
            if out.json {
                print_json(&rows)?;
            } else {
                let table: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            format::format_timestamp(r.last_attempt),
                            format!("{:.1}", r.last_attempt_duration_ms as f64 / 1000.0),
                            r.last_attempt_bytes_sent.to_string(),
                            format::format_timestamp(r.last_success),
                            if r.last_result.is_empty() {
                                "never".to_string()
                            } else {
                                r.last_result.clone()
                            },
                        ]
                    })
                    .collect();
                let header = [
                    "NAME",
                    "LAST ATTEMPT",
                    "SECONDS",
                    "BYTES SENT",
                    "LAST SUCCESS",
                    "RESULT",
                ];
                say(format::table(&header, &table).trim_end());
            }
        }
        BackupCommand::Restore {
            all: true,
            from_host,
            ..
        } => {
            let watch = JobWatch::subscribe(daemon).await?;
            let job = m
                .restore_all_backups(from_host.as_deref().unwrap_or(""))
                .await?;
            watch.follow(daemon, &job).await?;
            say("restored every container of the host");
        }
        BackupCommand::Restore {
            name,
            from,
            as_name,
            from_host,
            ..
        } => {
            let name = name.unwrap_or_default();
            let watch = JobWatch::subscribe(daemon).await?;
            let (from, as_str) = (
                from.as_deref().unwrap_or(""),
                as_name.as_deref().unwrap_or(""),
            );
            let job = match &from_host {
                Some(h) => m.restore_backup_from_host(&name, from, as_str, h).await?,
                None => m.restore_backup(&name, from, as_str).await?,
            };
            watch.follow(daemon, &job).await?;
            say(&format!("restored {}", as_name.as_deref().unwrap_or(&name)));
        }
        BackupCommand::Verify { names, all } => {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let watch = JobWatch::subscribe(daemon).await?;
            let job = m.verify_backups(&refs, all).await?;
            watch.follow(daemon, &job).await?;
            say("backups verified");
        }
        BackupCommand::List {
            name,
            json,
            from_host,
        } => {
            let trees = match &from_host {
                Some(h) => m.list_backups_from_host(&name, h).await?,
                None => m.list_backups(&name).await?,
            };
            if json.json {
                print_json(&trees)?;
            } else if trees.is_empty() {
                say(&format!("no backups of {name}"));
            } else {
                say(&trees.join("\n"));
            }
        }
    }
    Ok(())
}

fn local_file_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::new(
        ExitCode::InvalidArgument,
        format!("cannot read {}: {e}", path.display()),
    )
}

/// Writes a result line to stdout. A closed pipe (`| head`) is not an error: the call
/// has been made and the reader wanted no more.
pub(super) fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

pub(super) fn print_json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::failed(format!("cannot encode JSON: {e}")))?;
    say(&text);
    Ok(())
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
