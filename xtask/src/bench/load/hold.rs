//! `load hold`: many idle tunnelled connections at once, for memory per connection. Opens
//! them from a few threads, echoes one byte on each (so the tunnel is up end to end, not just
//! the local accept), reports, then holds them until the release file appears (bounded), and
//! closes them all.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use super::clients::{connect, exchange};
use super::say;

/// Threads opening connections (each waits for its echo before the next connect).
const OPENERS: usize = 8;
const POLL: Duration = Duration::from_millis(50);

pub(super) fn hold(addr: SocketAddr, connections: usize, release: &Path, max: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let per_thread = connections.div_ceil(OPENERS);
    let opened: Vec<std::io::Result<Vec<TcpStream>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..OPENERS)
            .map(|t| {
                let n = per_thread.min(connections.saturating_sub(t * per_thread));
                s.spawn(move || {
                    let mut mine = Vec::with_capacity(n);
                    let mut back = [0u8; 1];
                    for _ in 0..n {
                        let mut stream = connect(addr)?;
                        exchange(&mut stream, b"h", &mut back)?;
                        mine.push(stream);
                    }
                    Ok(mine)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("opener panicked"))))
            .collect()
    });
    let mut streams = Vec::with_capacity(connections);
    for result in opened {
        streams.extend(result?);
    }
    say(&json!({ "mode": "hold", "open": streams.len(), "seconds": started.elapsed().as_secs_f64() }).to_string());
    let waiting = Instant::now();
    while !release.exists() {
        if waiting.elapsed() > max {
            bail!("{} did not appear within {max:?}", release.display());
        }
        std::thread::sleep(POLL);
    }
    let closed = streams.len();
    drop(streams);
    say(&json!({ "mode": "released", "closed": closed }).to_string());
    Ok(())
}
