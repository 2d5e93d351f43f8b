//! Waiting for a daemon job (base build, import, ...) and showing its progress.
//!
//! The order matters: [`JobWatch::subscribe`] adds the match rules *before* the method
//! that starts the job is called, so no signal can slip by between the reply and the
//! subscription; then [`JobWatch::follow`] reads the job's state once (it may already be
//! over) and follows only the returned path. A slow poll of the job's properties backs
//! the signals up, and the daemon leaving the bus ends the wait, so it never hangs.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures_util::stream::{select_all, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use zbus::message::Type;
use zbus::zvariant::{ObjectPath, OwnedValue};
use zbus::{MatchRule, Message, MessageStream};

use super::calls::Daemon;
use super::exit::{CliError, ExitCode};
use super::model::{JobStatus, Properties};
use osm_host_bus::{BUS_NAME, JOB_COMPLETED, JOB_FAILED, JOB_IFACE, JOB_PATH_PREFIX};

const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Signals queued while the starting call is in flight; the poll covers an overflow.
const MAX_QUEUED: usize = 1024;

/// Subscriptions for job signals, made before the job is started.
pub struct JobWatch {
    stream: futures_util::stream::SelectAll<MessageStream>,
}

impl JobWatch {
    pub async fn subscribe(daemon: &Daemon) -> Result<Self, CliError> {
        let finished = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(BUS_NAME)?
            .interface(JOB_IFACE)?
            .member("Finished")?
            .path_namespace(JOB_PATH_PREFIX)?
            .build();
        let changed = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(BUS_NAME)?
            .interface(PROPERTIES_IFACE)?
            .member("PropertiesChanged")?
            .path_namespace(JOB_PATH_PREFIX)?
            .arg(0, JOB_IFACE)?
            .build();
        let owner = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender("org.freedesktop.DBus")?
            .interface("org.freedesktop.DBus")?
            .member("NameOwnerChanged")?
            .arg(0, BUS_NAME)?
            .build();
        let mut streams = Vec::new();
        for rule in [finished, changed, owner] {
            streams
                .push(MessageStream::for_match_rule(rule, &daemon.conn, Some(MAX_QUEUED)).await?);
        }
        Ok(JobWatch {
            stream: select_all(streams),
        })
    }

    /// Waits for the job at `path` to end. `Ok` when it succeeded; a failed job is
    /// `Failed` with the daemon's message.
    pub async fn follow(mut self, daemon: &Daemon, path: &ObjectPath<'_>) -> Result<(), CliError> {
        let mut status = read_status(daemon, path).await?;
        let mut progress = Reporter::new(std::io::stderr().is_terminal());
        let mut poll =
            tokio::time::interval_at(tokio::time::Instant::now() + POLL_INTERVAL, POLL_INTERVAL);
        let interrupt = tokio::signal::ctrl_c();
        tokio::pin!(interrupt);
        let result = loop {
            if let Some(outcome) = outcome_of(&status) {
                break outcome;
            }
            progress.show(&status);
            tokio::select! {
                msg = self.stream.next() => {
                    let msg = match msg {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => break Err(e.into()),
                        None => break Err(CliError::new(ExitCode::Unreachable, "lost the connection to the system bus")),
                    };
                    match classify(&msg, path) {
                        Event::Finished(success, message) => break finished(&status, success, message),
                        Event::Changed(props) => status.update(&props)?,
                        Event::DaemonGone => break Err(daemon_gone(path)),
                        Event::Other => {}
                    }
                }
                _ = poll.tick() => match read_status(daemon, path).await {
                    Ok(s) => status = s,
                    Err(e) => break Err(e),
                },
                _ = &mut interrupt => break Err(CliError::new(
                    ExitCode::Interrupted,
                    format!("interrupted; job {path} keeps running in osm-hostd"),
                )),
            }
        };
        progress.finish();
        result
    }
}

/// The job's target: the name a build or import works on (for `@auto`, the version the
/// daemon chose). `None` if it cannot be read.
pub async fn target(daemon: &Daemon, path: &ObjectPath<'_>) -> Option<String> {
    let props = daemon.properties_raw(path, JOB_IFACE).await.ok()?;
    String::try_from(props.get("Target")?.clone()).ok()
}

/// The job's last message (for a finished job, its result). `None` if it cannot be read.
pub async fn message(daemon: &Daemon, path: &ObjectPath<'_>) -> Option<String> {
    let props = daemon.properties_raw(path, JOB_IFACE).await.ok()?;
    String::try_from(props.get("Message")?.clone()).ok()
}

async fn read_status(daemon: &Daemon, path: &ObjectPath<'_>) -> Result<JobStatus, CliError> {
    match daemon.properties_raw(path, JOB_IFACE).await {
        Ok(props) => JobStatus::from_properties(&props),
        // The daemon dropped the job object without us seeing `Finished`.
        Err(zbus::fdo::Error::UnknownObject(_) | zbus::fdo::Error::UnknownInterface(_)) => {
            Err(CliError::failed(format!(
                "job {path} disappeared before reporting its result"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

fn daemon_gone(path: &ObjectPath<'_>) -> CliError {
    CliError::new(
        ExitCode::Unreachable,
        format!("osm-hostd left the bus before job {path} finished; its outcome is unknown"),
    )
}

enum Event {
    Finished(bool, String),
    Changed(Properties),
    DaemonGone,
    Other,
}

/// Sorts one subscribed signal; anything about another job is `Other`.
fn classify(msg: &Message, job: &ObjectPath<'_>) -> Event {
    let header = msg.header();
    let (Some(interface), Some(member)) = (header.interface(), header.member()) else {
        return Event::Other;
    };
    let for_job = header.path().is_some_and(|p| p.as_str() == job.as_str());
    match (interface.as_str(), member.as_str()) {
        (JOB_IFACE, "Finished") if for_job => match msg.body().deserialize::<(bool, String)>() {
            Ok((success, message)) => Event::Finished(success, message),
            Err(_) => Event::Other,
        },
        (PROPERTIES_IFACE, "PropertiesChanged") if for_job => {
            match msg.body().deserialize::<(
                String,
                std::collections::HashMap<String, OwnedValue>,
                Vec<String>,
            )>() {
                Ok((iface, changed, _)) if iface == JOB_IFACE => Event::Changed(changed),
                _ => Event::Other,
            }
        }
        ("org.freedesktop.DBus", "NameOwnerChanged") => {
            match msg.body().deserialize::<(String, String, String)>() {
                // An empty old owner is the daemon being activated, not leaving.
                Ok((name, old, _new)) if name == BUS_NAME && !old.is_empty() => Event::DaemonGone,
                _ => Event::Other,
            }
        }
        _ => Event::Other,
    }
}

/// The job's result if its `State` says it is over.
fn outcome_of(status: &JobStatus) -> Option<Result<(), CliError>> {
    match status.state.as_str() {
        JOB_COMPLETED => Some(Ok(())),
        JOB_FAILED => Some(finished(status, false, status.message.clone())),
        _ => None,
    }
}

fn finished(status: &JobStatus, success: bool, message: String) -> Result<(), CliError> {
    if success {
        return Ok(());
    }
    let message = if message.trim().is_empty() {
        format!("{} failed", describe(status))
    } else {
        message
    };
    Err(CliError::failed(message))
}

/// "build-base debian12", or whatever part of it the daemon has told us.
fn describe(status: &JobStatus) -> String {
    let text = format!("{} {}", status.kind, status.target);
    match text.trim() {
        "" => "job".to_string(),
        t => t.to_string(),
    }
}

/// One line of progress: `build-base debian12:  40% unpacking`.
pub fn progress_line(status: &JobStatus) -> String {
    format!(
        "{}: {:>3}% {}",
        describe(status),
        percent(status.progress),
        status.message
    )
    .trim_end()
    .to_string()
}

fn percent(progress: f64) -> u32 {
    if progress.is_nan() {
        return 0;
    }
    (progress.clamp(0.0, 1.0) * 100.0).floor() as u32
}

/// Whether a plain (non-terminal) report is due: the message changed, or the progress
/// crossed a tenth. Keeps logs short for long jobs.
pub fn plain_report_due(last: Option<&JobStatus>, now: &JobStatus) -> bool {
    match last {
        None => true,
        Some(last) => {
            last.message != now.message || percent(now.progress) / 10 > percent(last.progress) / 10
        }
    }
}

/// A progress bar on a terminal, occasional lines otherwise; both on stderr.
enum Reporter {
    Bar(ProgressBar),
    Plain(Option<JobStatus>),
}

impl Reporter {
    fn new(terminal: bool) -> Self {
        if !terminal {
            return Reporter::Plain(None);
        }
        let bar = ProgressBar::new(1000);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}% {wide_msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Reporter::Bar(bar)
    }

    fn show(&mut self, status: &JobStatus) {
        match self {
            Reporter::Bar(bar) => {
                let p = if status.progress.is_nan() {
                    0.0
                } else {
                    status.progress.clamp(0.0, 1.0)
                };
                bar.set_position((p * 1000.0).round() as u64);
                let msg = match status.message.as_str() {
                    "" => describe(status),
                    m => format!("{}: {m}", describe(status)),
                };
                bar.set_message(msg);
            }
            Reporter::Plain(last) => {
                if plain_report_due(last.as_ref(), status) {
                    let _ = writeln!(std::io::stderr(), "{}", progress_line(status));
                    *last = Some(status.clone());
                }
            }
        }
    }

    fn finish(self) {
        if let Reporter::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(progress: f64, message: &str) -> JobStatus {
        JobStatus {
            kind: "build-base".into(),
            target: "debian12".into(),
            progress,
            state: "running".into(),
            message: message.into(),
        }
    }

    #[test]
    fn progress_line_reads_well() {
        assert_eq!(
            progress_line(&job(0.4, "unpacking")),
            "build-base debian12:  40% unpacking"
        );
        assert_eq!(progress_line(&job(1.5, "")), "build-base debian12: 100%");
        assert_eq!(
            progress_line(&job(f64::NAN, "")),
            "build-base debian12:   0%"
        );
        assert_eq!(progress_line(&JobStatus::default()), "job:   0%");
    }

    #[test]
    fn plain_reports_on_new_message_or_each_tenth() {
        let first = job(0.10, "debootstrap");
        assert!(plain_report_due(None, &first));
        assert!(!plain_report_due(Some(&first), &job(0.19, "debootstrap")));
        assert!(plain_report_due(Some(&first), &job(0.20, "debootstrap")));
        assert!(plain_report_due(Some(&first), &job(0.11, "configuring")));
    }

    #[test]
    fn final_state_ends_the_wait() {
        let mut s = job(1.0, "done");
        assert!(outcome_of(&s).is_none());
        s.state = JOB_COMPLETED.into();
        assert_eq!(outcome_of(&s), Some(Ok(())));
        s.state = JOB_FAILED.into();
        s.message = "debootstrap failed: no network".into();
        let err = outcome_of(&s).unwrap().unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (ExitCode::Failed, "debootstrap failed: no network")
        );
        s.message.clear();
        assert_eq!(
            outcome_of(&s).unwrap().unwrap_err().message,
            "build-base debian12 failed"
        );
    }
}
