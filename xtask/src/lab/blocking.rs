//! Running the harness's blocking calls (process spawns, bounded waits) off the async
//! threads, so a Ctrl-C is noticed at once, and turning a harness panic into an error that
//! fails the step instead of the whole program.
//!
//! On Ctrl-C the demo drops the mesh while such a call may still run: the mesh's drop kills
//! the processes the call waits on, so it returns soon after, and the runtime's drop waits
//! for it.

use anyhow::anyhow;

/// Runs `f` on the blocking pool; a panic in `f` becomes an error carrying its message.
pub(crate) async fn blocking<T, F>(f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(anyhow!("{}", panic_message(e.into_panic().as_ref()))),
        Err(e) => Err(anyhow!("blocking task did not finish: {e}")),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panicked (no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_pass_through_and_panics_become_errors() {
        assert_eq!(blocking(|| Ok(7)).await.unwrap(), 7);
        let err = blocking::<(), _>(|| panic!("harness said no")).await.unwrap_err();
        assert!(err.to_string().contains("harness said no"), "got {err:#}");
    }
}
