//! The accept loop shared by the proxy's listeners (SOCKS5, inbound HBONE, in-pod 15001 and
//! 15006): accept until the drain starts and run each connection in its own task.
//!
//! Running out of descriptors degrades instead of wedging (see [`crate::descriptors`]): a
//! client accepted into the descriptors reserved for health and control is reset at once,
//! and when accept fails for want of a descriptor the waiting client is shed through the
//! spare descriptor; other accept errors pause the loop briefly, so it never spins.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use crate::descriptors;
use crate::drain::DrainWatch;

/// Accepts on `listener` until `drain` fires, spawning `handle(stream, peer)` per connection.
pub async fn accept_until_drained<H, Fut>(listener: TcpListener, what: &'static str, drain: &DrainWatch, mut handle: H)
where
    H: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    descriptors::reserve_spare();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = drain.signaled() => return,
        };
        match accepted {
            Ok((stream, peer)) => match descriptors::check_reserve(&stream) {
                Ok(()) => {
                    tokio::spawn(handle(stream, peer));
                }
                Err(e) => descriptors::refuse(stream, what, &e),
            },
            Err(e) => descriptors::after_accept_error(what, &e, || listener.accept()).await,
        }
    }
}
