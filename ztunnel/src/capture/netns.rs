//! A worker thread that lives inside one pod's network namespace and runs small jobs there
//! (creating sockets). Sockets keep the namespace they were created in, so a listener or a
//! dialling socket made here works from any thread afterwards.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::sys;

type Job = Box<dyn FnOnce() + Send>;

/// Handle to a thread inside a network namespace; the thread ends when the handle drops.
#[derive(Debug)]
pub struct NetnsWorker {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
}

/// Failures entering a namespace or running a job there.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {path}: {source}")]
    Enter {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the worker for network namespace {0} has stopped")]
    Stopped(String),
}

impl NetnsWorker {
    /// Starts a thread that enters the namespace at `path` and waits for jobs.
    pub fn start(path: &Path) -> Result<NetnsWorker, NetnsError> {
        let shown = path.display().to_string();
        let ns = File::open(path).map_err(|source| NetnsError::Open { path: shown.clone(), source })?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (entered_tx, entered_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("netns:{}", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()))
            .spawn(move || {
                let entered = sys::enter_netns(ns.as_fd());
                let ok = entered.is_ok();
                let _ = entered_tx.send(entered);
                if ok {
                    while let Ok(job) = queue.recv() {
                        job();
                    }
                }
            })
            .map_err(|source| NetnsError::Enter { path: shown.clone(), source })?;
        match entered_rx.recv() {
            Ok(Ok(())) => Ok(NetnsWorker { path: path.to_path_buf(), jobs }),
            Ok(Err(source)) => Err(NetnsError::Enter { path: shown, source }),
            Err(_) => Err(NetnsError::Stopped(shown)),
        }
    }

    /// Runs `f` inside the namespace and returns its result.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetnsError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Blocking form of [`NetnsWorker::run`] for callers outside the async runtime.
    pub fn run_blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetnsError> {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| self.stopped())?;
        rx.recv().map_err(|_| self.stopped())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn stopped(&self) -> NetnsError {
        NetnsError::Stopped(self.path.display().to_string())
    }
}
