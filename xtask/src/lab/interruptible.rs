//! Running the demo's and the bench's async body on a fresh runtime until it ends or a
//! Ctrl-C / SIGTERM arrives. On a signal the body's future is dropped, and with it the mesh
//! (processes killed; namespaces, cgroups and pins removed); the runtime is then dropped,
//! which waits for blocking calls still running (they end once their processes die).

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// The run was stopped by a signal.
#[derive(Debug)]
pub(crate) struct Interrupted(&'static str);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; stopped and removed everything", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Runs `body` to its end, or until SIGINT or SIGTERM (then the error is [`Interrupted`]).
pub(crate) fn run_until_signal<T>(body: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        // Registered before the body is first polled, so a Ctrl-C is ours to handle from then on.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = body => result,
            _ = interrupt.recv() => Err(Interrupted("interrupted (Ctrl-C)").into()),
            _ = terminate.recv() => Err(Interrupted("terminated (SIGTERM)").into()),
        }
    });
    drop(runtime);
    result
}
