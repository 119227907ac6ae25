//! Pool of client HBONE connections.
//!
//! Streams are multiplexed over connections keyed by the caller's key (for the proxy:
//! source identity, destination identity, destination address). A connection carries at most
//! `max_streams_per_connection` streams; when all are full, one more is dialled. Dialling is
//! single-flight per key, so a burst of new streams opens the fewest connections. One idle
//! connection per key is kept warm for `idle_timeout`; further idle connections of the same key
//! (left over from a burst) are released after `surplus_idle_timeout`, so the memory of a burst
//! of thousands of streams is given back soon after it ends. Dead connections (peer gone, PING
//! timeout) are skipped and pruned. A stream refused unprocessed, or whose connection was found
//! dead before it was answered (see [`super::client`]), is retried once on another connection,
//! dialled fresh if need be.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{HeaderMap, Request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::debug;

use super::client::ClientConnection;
use super::stream::Tunnel;
use super::{Error, H2Settings};

/// Pool limits and HTTP/2 settings for dialled connections.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Streams carried by one connection before another is dialled (Istio uses 100).
    pub max_streams_per_connection: usize,
    /// A connection with no stream for this long is closed.
    pub idle_timeout: Duration,
    /// An idle connection of a key that already keeps another idle one warm is closed after
    /// this long (at most `idle_timeout`).
    pub surplus_idle_timeout: Duration,
    pub h2: H2Settings,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_streams_per_connection: 100,
            idle_timeout: Duration::from_secs(300),
            surplus_idle_timeout: Duration::from_secs(15),
            h2: H2Settings::default(),
        }
    }
}

/// Counters describing the pool (for metrics, `/config_dump` and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Connections dialled since the pool was created.
    pub connections_opened: u64,
    /// Connections currently pooled (live or not yet pruned).
    pub connections_open: usize,
    /// Streams currently open across the pool.
    pub streams_active: usize,
}

/// Why a pooled `CONNECT` failed: dialling (the caller's error) or HTTP/2.
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E> {
    #[error("{0}")]
    Dial(E),
    #[error(transparent)]
    Hbone(#[from] Error),
}

/// Pool of HBONE client connections, cheap to clone.
pub struct HbonePool<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for HbonePool<K> {
    fn clone(&self) -> Self {
        HbonePool { inner: self.inner.clone() }
    }
}

struct Inner<K> {
    config: PoolConfig,
    entries: Mutex<HashMap<K, Arc<KeyEntry>>>,
    opened: AtomicU64,
}

#[derive(Default)]
struct KeyEntry {
    conns: Mutex<Vec<Arc<Pooled>>>,
    dialing: tokio::sync::Mutex<()>,
}

struct Pooled {
    conn: ClientConnection,
    /// Open streams and the instant the count last dropped to zero; guarded by the entry lock.
    usage: Mutex<Usage>,
}

struct Usage {
    streams: usize,
    idle_since: Instant,
}

/// Held by both halves of a tunnel; frees the stream's slot when they are gone.
struct StreamSlot(Arc<Pooled>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut usage = self.0.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.streams -= 1;
        if usage.streams == 0 {
            usage.idle_since = Instant::now();
        }
    }
}

impl<K> HbonePool<K>
where
    K: Hash + Eq + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    /// Creates the pool and its idle reaper task (needs a tokio runtime).
    pub fn new(config: PoolConfig) -> HbonePool<K> {
        let inner = Arc::new(Inner { config, entries: Mutex::default(), opened: AtomicU64::new(0) });
        tokio::spawn(reap_idle(Arc::downgrade(&inner)));
        HbonePool { inner }
    }

    /// Opens a `CONNECT` stream for `key`, reusing a pooled connection with a free slot or
    /// dialling a new one with `dial` (which returns an established, authenticated stream).
    /// A stream the peer refused unprocessed (its connection is draining) is retried once,
    /// on another connection. `request` builds the `CONNECT` request: once per attempt, so the
    /// common single attempt neither copies the request nor keeps a spare one.
    pub async fn connect<D, F, IO, E, R>(
        &self,
        key: &K,
        dial: D,
        mut request: R,
    ) -> Result<(Tunnel, HeaderMap), PoolError<E>>
    where
        D: Fn() -> F,
        F: Future<Output = Result<IO, E>>,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        R: FnMut() -> Result<Request<()>, Error>,
    {
        match self.connect_once(key, &dial, request()?).await {
            Err(PoolError::Hbone(e)) if e.is_retryable() => {
                debug!(key = ?key, error = %e, "stream refused by a draining connection; retrying on another");
                self.connect_once(key, &dial, request()?).await
            }
            other => other,
        }
    }

    async fn connect_once<D, F, IO, E>(
        &self,
        key: &K,
        dial: &D,
        request: Request<()>,
    ) -> Result<(Tunnel, HeaderMap), PoolError<E>>
    where
        D: Fn() -> F,
        F: Future<Output = Result<IO, E>>,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let entry = self.entry(key);
        if let Some(slot) = self.claim(&entry) {
            return Ok(slot.0.conn.clone().connect(request, Some(Arc::new(slot))).await?);
        }
        let dialing = entry.dialing.lock().await;
        if let Some(slot) = self.claim(&entry) {
            drop(dialing);
            return Ok(slot.0.conn.clone().connect(request, Some(Arc::new(slot))).await?);
        }
        let io = dial().await.map_err(PoolError::Dial)?;
        let conn = ClientConnection::handshake(io, &format!("{key:?}"), &self.inner.config.h2).await?;
        self.inner.opened.fetch_add(1, Ordering::Relaxed);
        debug!(key = ?key, "hbone connection established");
        let pooled = Arc::new(Pooled { conn, usage: Mutex::new(Usage { streams: 1, idle_since: Instant::now() }) });
        entry.conns.lock().unwrap_or_else(|e| e.into_inner()).push(pooled.clone());
        drop(dialing);
        let slot = StreamSlot(pooled);
        Ok(slot.0.conn.clone().connect(request, Some(Arc::new(slot))).await?)
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        let entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut stats =
            PoolStats { connections_opened: self.inner.opened.load(Ordering::Relaxed), ..Default::default() };
        for entry in entries.values() {
            let conns = entry.conns.lock().unwrap_or_else(|e| e.into_inner());
            stats.connections_open += conns.len();
            for c in conns.iter() {
                stats.streams_active += c.usage.lock().unwrap_or_else(|e| e.into_inner()).streams;
            }
        }
        stats
    }

    fn entry(&self, key: &K) -> Arc<KeyEntry> {
        let mut entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.entry(key.clone()).or_default().clone()
    }

    /// Takes a stream slot on a live connection of this key that is not full.
    fn claim(&self, entry: &KeyEntry) -> Option<StreamSlot> {
        let max = self.inner.config.max_streams_per_connection.max(1);
        let mut conns = entry.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !c.conn.is_closed());
        conns.iter().filter(|c| c.conn.is_usable()).find_map(|c| {
            let mut usage = c.usage.lock().unwrap_or_else(|e| e.into_inner());
            (usage.streams < max).then(|| {
                usage.streams += 1;
                StreamSlot(c.clone())
            })
        })
    }
}

/// Periodically drops connections that are closed or idle past the timeout.
async fn reap_idle<K>(inner: Weak<Inner<K>>) {
    let period = {
        let Some(inner) = inner.upgrade() else { return };
        let shortest = inner.config.idle_timeout.min(inner.config.surplus_idle_timeout);
        (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        let idle_timeout = inner.config.idle_timeout;
        let surplus_timeout = inner.config.surplus_idle_timeout.min(idle_timeout);
        let mut entries = inner.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, entry| {
            let mut conns = entry.conns.lock().unwrap_or_else(|e| e.into_inner());
            let mut warm_kept = false;
            conns.retain(|c| {
                let usage = c.usage.lock().unwrap_or_else(|e| e.into_inner());
                if c.conn.is_closed() {
                    return false;
                }
                if usage.streams > 0 {
                    return true;
                }
                let idle = usage.idle_since.elapsed();
                if !warm_kept && idle < idle_timeout {
                    warm_kept = true;
                    return true;
                }
                idle < surplus_timeout
            });
            // Keep the entry while a dial may be in progress for it.
            !conns.is_empty() || Arc::strong_count(entry) > 1
        });
    }
}
