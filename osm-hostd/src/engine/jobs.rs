//! Long-running work (base and layer builds and imports, backups, restores) as jobs
//! with progress, started through [`Jobs::start`] or [`Jobs::start_blocking`].

use super::Event;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How long a finished job stays known (and on the bus) for late readers.
pub const JOB_LINGER: Duration = Duration::from_secs(60);

type Registry = Mutex<Vec<Arc<Job>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Completed,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => osm_host_bus::JOB_RUNNING,
            JobState::Completed => osm_host_bus::JOB_COMPLETED,
            JobState::Failed => osm_host_bus::JOB_FAILED,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobStatus {
    pub progress: f64,
    pub state: JobState,
    pub message: String,
}

#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub kind: &'static str,
    pub target: String,
    status: Mutex<JobStatus>,
    last_signal: Mutex<Option<(Instant, f64)>>,
    /// A machine-readable result (JSON) for jobs that have one (a rebase's conflicts);
    /// set before the job finishes.
    output: Mutex<String>,
    events: broadcast::Sender<Event>,
    registry: Weak<Registry>,
    linger: Duration,
}

impl Job {
    pub fn status(&self) -> JobStatus {
        self.status.lock().expect("job lock").clone()
    }

    /// Records progress; signals at most every 100 ms or 1 % so a fast job does not
    /// flood the bus.
    pub fn set_progress(&self, fraction: f64, message: &str) {
        let fraction = fraction.clamp(0.0, 1.0);
        {
            let mut s = self.status.lock().expect("job lock");
            if s.state != JobState::Running {
                return;
            }
            s.progress = s.progress.max(fraction);
            if !message.is_empty() {
                s.message = message.to_string();
            }
        }
        let mut last = self.last_signal.lock().expect("job lock");
        let due = match *last {
            None => true,
            Some((t, p)) => t.elapsed().as_millis() >= 100 || fraction - p >= 0.01,
        };
        if due {
            *last = Some((Instant::now(), fraction));
            let _ = self.events.send(Event::JobChanged(self.id));
        }
    }

    /// The job's machine-readable result; "" when it has none.
    pub fn output(&self) -> String {
        self.output.lock().expect("job lock").clone()
    }

    pub fn set_output(&self, json: String) {
        *self.output.lock().expect("job lock") = json;
    }

    pub fn finish(&self, result: Result<String, String>) {
        {
            let mut s = self.status.lock().expect("job lock");
            match result {
                Ok(msg) => {
                    s.state = JobState::Completed;
                    s.progress = 1.0;
                    s.message = msg;
                }
                Err(msg) => {
                    s.state = JobState::Failed;
                    s.message = msg;
                }
            }
        }
        let _ = self.events.send(Event::JobFinished(self.id));
        self.forget_later();
    }

    /// After [`JOB_LINGER`], drops the finished job and sends `JobRemoved`.
    fn forget_later(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime (a synchronous unit test): the job stays known
        };
        let (id, registry, events) = (self.id, self.registry.clone(), self.events.clone());
        let linger = self.linger;
        runtime.spawn(async move {
            tokio::time::sleep(linger).await;
            if let Some(live) = registry.upgrade() {
                live.lock().expect("jobs lock").retain(|j| j.id != id);
            }
            let _ = events.send(Event::JobRemoved(id));
        });
    }
}

#[derive(Debug)]
pub struct Jobs {
    next: AtomicU64,
    live: Arc<Registry>,
    events: broadcast::Sender<Event>,
    linger: Duration,
}

impl Jobs {
    pub fn new(events: broadcast::Sender<Event>) -> Jobs {
        Jobs {
            next: AtomicU64::new(1),
            live: Arc::default(),
            events,
            linger: JOB_LINGER,
        }
    }

    pub fn create(&self, kind: &'static str, target: &str) -> Arc<Job> {
        let job = Arc::new(Job {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            kind,
            target: target.to_string(),
            status: Mutex::new(JobStatus {
                progress: 0.0,
                state: JobState::Running,
                message: String::new(),
            }),
            last_signal: Mutex::new(None),
            output: Mutex::new(String::new()),
            events: self.events.clone(),
            registry: Arc::downgrade(&self.live),
            linger: self.linger,
        });
        self.live.lock().expect("jobs lock").push(job.clone());
        let _ = self.events.send(Event::JobAdded(job.id));
        job
    }

    /// Starts `work` as a job of `kind` on `target`: creates the job, runs the future
    /// on the runtime, logs how it ended and finishes the job with its message. The
    /// one way the engine runs a job; `work` reports progress on the job it is given.
    pub fn start<F, Fut, E>(&self, kind: &'static str, target: &str, work: F) -> Arc<Job>
    where
        F: FnOnce(Arc<Job>) -> Fut,
        Fut: std::future::Future<Output = Result<String, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let job = self.create(kind, target);
        let running = work(job.clone());
        let finished = job.clone();
        tokio::spawn(async move {
            let result = running.await.map_err(|e| e.to_string());
            match &result {
                Ok(message) => tracing::info!(
                    job = finished.id, kind, target = %finished.target, "{message}"
                ),
                Err(error) => tracing::warn!(
                    job = finished.id, kind, target = %finished.target, %error, "job failed"
                ),
            }
            finished.finish(result);
        });
        job
    }

    /// [`Jobs::start`] for work that blocks (file systems, rsync, archives): `work` runs
    /// on the blocking pool. A panic in it fails the job instead of leaving it running.
    pub fn start_blocking<F, E>(&self, kind: &'static str, target: &str, work: F) -> Arc<Job>
    where
        F: FnOnce(&Arc<Job>) -> Result<String, E> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.start(kind, target, move |job| async move {
            match tokio::task::spawn_blocking(move || work(&job).map_err(|e| e.to_string())).await {
                Ok(result) => result,
                Err(e) => Err(format!("the job stopped unexpectedly: {e}")),
            }
        })
    }

    /// The kinds of the jobs still running, one entry per job.
    pub fn running_kinds(&self) -> Vec<&'static str> {
        self.live
            .lock()
            .expect("jobs lock")
            .iter()
            .filter(|j| j.status().state == JobState::Running)
            .map(|j| j.kind)
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.live
            .lock()
            .expect("jobs lock")
            .iter()
            .find(|j| j.id == id)
            .cloned()
    }

    /// The jobs known now: running, or finished less than [`JOB_LINGER`] ago.
    pub fn ids(&self) -> Vec<u64> {
        self.live
            .lock()
            .expect("jobs lock")
            .iter()
            .map(|j| j.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn started_work_finishes_its_job_with_the_message_or_the_error() {
        let (tx, _rx) = broadcast::channel(16);
        let jobs = Jobs::new(tx);
        let ok = jobs.start_blocking("backup", "web1", |job| {
            job.set_progress(0.5, "half way");
            Ok::<_, String>("backed up 1 container(s)".into())
        });
        let bad = jobs.start("restore", "web2", |_job| async {
            Err::<String, _>("no snapshot 7")
        });
        let panics =
            jobs.start_blocking("backup-verify", "web3", |_job| -> Result<String, String> {
                panic!("a bug in the work")
            });
        for job in [&ok, &bad, &panics] {
            let deadline = Instant::now() + Duration::from_secs(5);
            while job.status().state == JobState::Running {
                assert!(Instant::now() < deadline, "job {} still running", job.kind);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let s = ok.status();
        assert_eq!((s.state, s.progress), (JobState::Completed, 1.0));
        assert_eq!(s.message, "backed up 1 container(s)");
        let s = bad.status();
        assert_eq!(
            (s.state, s.message.as_str()),
            (JobState::Failed, "no snapshot 7")
        );
        let s = panics.status();
        assert_eq!(s.state, JobState::Failed);
        assert!(s.message.contains("stopped unexpectedly"), "{}", s.message);
        assert_eq!((ok.kind, ok.target.as_str()), ("backup", "web1"));
    }

    #[tokio::test]
    async fn a_finished_job_is_forgotten_after_it_lingers() {
        let (tx, mut rx) = broadcast::channel(16);
        let mut jobs = Jobs::new(tx);
        jobs.linger = Duration::from_millis(50);
        let job = jobs.create("build-base", "bb");
        let other = jobs.create("import-base", "b2");
        job.finish(Ok("done".into()));
        assert_eq!(jobs.ids(), [job.id, other.id], "readers may still look");
        let mut seen = Vec::new();
        while !matches!(seen.last(), Some(Event::JobRemoved(_))) {
            let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("JobRemoved within the linger time")
                .unwrap();
            seen.push(e);
        }
        assert_eq!(
            seen,
            [
                Event::JobAdded(job.id),
                Event::JobAdded(other.id),
                Event::JobFinished(job.id),
                Event::JobRemoved(job.id)
            ]
        );
        assert!(jobs.get(job.id).is_none());
        assert_eq!(jobs.ids(), [other.id], "a running job stays");
    }
}
