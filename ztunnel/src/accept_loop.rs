//! The one accept loop of every listener ztunnel serves: the proxy's (SOCKS5, inbound HBONE,
//! a captured pod's 15001, 15006 and 15008), the HTTP servers' (admin, metrics, readiness)
//! and the control socket's. It accepts until the drain starts and hands each accepted
//! connection to its caller, which decides what to do with it (spawn its handling, or refuse
//! it over the caller's own limits); it knows nothing of what the connections carry.
//!
//! Running out of descriptors degrades instead of wedging: when accept fails for want of one,
//! the waiting client is shed through the spare descriptor, and other accept errors pause the
//! loop briefly so it never spins (see [`crate::descriptors`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::descriptors;
use crate::drain::{DrainMode, DrainWatch};

/// A listening socket the loop accepts on.
pub(crate) trait Listener: Send + Sync {
    /// One accepted connection, with whatever the listener says of its peer.
    type Accepted: Send;

    fn accept(&self) -> impl Future<Output = io::Result<Self::Accepted>> + Send;
}

impl Listener for TcpListener {
    type Accepted = (TcpStream, SocketAddr);

    fn accept(&self) -> impl Future<Output = io::Result<Self::Accepted>> + Send {
        TcpListener::accept(self)
    }
}

impl Listener for UnixListener {
    type Accepted = (UnixStream, tokio::net::unix::SocketAddr);

    fn accept(&self) -> impl Future<Output = io::Result<Self::Accepted>> + Send {
        UnixListener::accept(self)
    }
}

/// Accepts on `listener` (named `what` in logs) until `drain` fires, giving each accepted
/// connection to `admit`; returns the drain's mode.
pub(crate) async fn accept_until_drained<L: Listener>(
    listener: &L,
    what: &'static str,
    drain: &DrainWatch,
    mut admit: impl FnMut(L::Accepted),
) -> DrainMode {
    descriptors::reserve_spare();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            mode = drain.signaled() => return mode,
        };
        match accepted {
            Ok(connection) => admit(connection),
            Err(e) => descriptors::after_accept_error(what, &e, || listener.accept()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::drain;

    #[tokio::test]
    async fn admits_each_connection_until_the_drain_starts() {
        let dir = std::env::temp_dir().join(format!("accept-loop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (trigger, watch) = drain::new();
        let (seen, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let serving = tokio::spawn(async move {
            accept_until_drained(&listener, "test", &watch, |(stream, _)| {
                let _ = seen.send(stream);
            })
            .await
        });
        for _ in 0..2 {
            let mut client = UnixStream::connect(&path).await.unwrap();
            client.write_all(b"x").await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
                .await
                .expect("every connection is handed to admit within 5 s")
                .expect("the loop still runs");
        }
        let mode = tokio::time::timeout(Duration::from_secs(5), async {
            let draining = trigger.drain_with(DrainMode::Graceful, Duration::from_secs(5));
            let (mode, _) = tokio::join!(serving, draining);
            mode
        })
        .await
        .expect("the loop stops within 5 s of the drain");
        assert_eq!(mode.unwrap(), DrainMode::Graceful, "the loop returns the drain's mode");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
