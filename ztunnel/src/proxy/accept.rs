//! How the proxy's listeners (SOCKS5, inbound HBONE, in-pod 15001 and 15006) take connections:
//! through the shared accept loop ([`crate::accept_loop`]: stops at the drain, sheds clients
//! when out of descriptors), each connection in its own task.
//!
//! Proxy traffic never holds a descriptor of the reserve kept for health and control (see
//! [`crate::descriptors`]): a client accepted into it is reset at once.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use crate::accept_loop;
use crate::descriptors;
use crate::drain::DrainWatch;

/// Accepts on `listener` until `drain` fires, spawning `handle(stream, peer)` per connection.
pub(crate) async fn accept_until_drained<H, Fut>(
    listener: TcpListener,
    what: &'static str,
    drain: &DrainWatch,
    mut handle: H,
) where
    H: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    accept_loop::accept_until_drained(&listener, what, drain, |(stream, peer)| {
        match descriptors::check_reserve(&stream) {
            Ok(()) => {
                tokio::spawn(handle(stream, peer));
            }
            Err(e) => descriptors::refuse(stream, what, &e),
        }
    })
    .await;
}
