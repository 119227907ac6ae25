//! Process readiness as guard objects.
//!
//! Each startup task (fetching certificates, loading config, binding listeners, ...)
//! registers with [`Ready::register`] and holds the returned [`ReadyGuard`] until it is done;
//! the process is ready once every guard has been dropped. A guard can never be re-armed, so
//! readiness, once reached through the last drop, stays until someone registers a new task.
//!
//! This module only tracks names; it must not know what the tasks are or serve HTTP (the
//! readiness endpoint lives in `admin`).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

/// Registry of startup tasks still pending. Cheap to clone; clones share the registry.
#[derive(Clone, Debug)]
pub struct Ready {
    pending: Arc<watch::Sender<Pending>>,
}

#[derive(Debug, Default)]
struct Pending {
    next_id: u64,
    tasks: BTreeMap<u64, Arc<str>>,
}

/// Marks one task as pending until dropped.
#[derive(Debug)]
#[must_use = "readiness is reached when the guard is dropped; dropping it at once registers nothing"]
pub struct ReadyGuard {
    id: u64,
    name: Arc<str>,
    pending: Arc<watch::Sender<Pending>>,
}

impl Default for Ready {
    fn default() -> Self {
        Ready::new()
    }
}

impl Ready {
    /// An empty registry: ready until a task registers.
    pub fn new() -> Ready {
        Ready { pending: Arc::new(watch::Sender::new(Pending::default())) }
    }

    /// Registers a pending task named `name`; the process is not ready until the guard drops.
    /// Names need not be unique: two tasks with one name are tracked separately.
    pub fn register(&self, name: &str) -> ReadyGuard {
        let name: Arc<str> = Arc::from(name);
        let mut id = 0;
        self.pending.send_modify(|p| {
            id = p.next_id;
            p.next_id += 1;
            p.tasks.insert(id, name.clone());
        });
        ReadyGuard { id, name, pending: self.pending.clone() }
    }

    /// True when no registered task is pending.
    pub fn is_ready(&self) -> bool {
        self.pending.borrow().tasks.is_empty()
    }

    /// Names of the pending tasks, sorted (a name appears once per pending guard).
    pub fn pending(&self) -> Vec<String> {
        let mut names: Vec<String> = self.pending.borrow().tasks.values().map(|n| n.to_string()).collect();
        names.sort();
        names
    }

    /// Resolves once no task is pending.
    pub async fn wait_ready(&self) {
        let mut rx = self.pending.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|p| p.tasks.is_empty()).await;
    }
}

impl ReadyGuard {
    /// The name this task registered with.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ReadyGuard {
    fn drop(&mut self) {
        let id = self.id;
        self.pending.send_modify(|p| {
            p.tasks.remove(&id);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ready_only_after_last_guard_drops() {
        let ready = Ready::new();
        assert!(ready.is_ready(), "a registry with no tasks is ready");
        let certs = ready.register("certificates");
        let config = ready.register("config");
        let config_again = ready.register("config");
        assert_eq!(certs.name(), "certificates");
        assert_eq!(ready.pending(), vec!["certificates", "config", "config"]);

        drop(config);
        assert_eq!(ready.pending(), vec!["certificates", "config"]);
        assert!(!ready.is_ready());
        drop(certs);
        assert!(!ready.is_ready(), "one task named config is still pending");
        drop(config_again);
        assert!(ready.is_ready(), "all guards dropped: {:?}", ready.pending());
        assert!(ready.pending().is_empty());
    }

    #[test]
    fn clones_share_the_registry() {
        let ready = Ready::new();
        let other = ready.clone();
        let guard = other.register("listeners");
        assert_eq!(ready.pending(), vec!["listeners"]);
        drop(guard);
        assert!(ready.is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_ready_resolves_when_last_guard_drops() {
        let ready = Ready::new();
        let guard = ready.register("xds");
        let waiter = {
            let ready = ready.clone();
            tokio::spawn(async move { ready.wait_ready().await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "ready while a guard is still held");
        drop(guard);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("wait_ready should resolve after the guard dropped")
            .unwrap();
    }
}
