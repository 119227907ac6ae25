//! The accept loop shared by ztunnel's listeners: accept until the drain starts, run each
//! connection in its own task, and ride out transient accept errors (such as running out of
//! file descriptors) with a short pause instead of spinning.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::drain::DrainWatch;

/// Accepts on `listener` until `drain` fires, spawning `handle(stream, peer)` per connection.
pub async fn accept_until_drained<H, Fut>(listener: TcpListener, what: &'static str, drain: &DrainWatch, mut handle: H)
where
    H: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = drain.signaled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(handle(stream, peer));
            }
            Err(e) => {
                warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
