//! The kernel side's plain sockets and maps, wrapped into the pod proxy's types: listeners
//! for the async runtime, the socket factory its dials use, and the original-destination
//! reader.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use socket2::Socket;

use crate::capture::loader::Loaded;
use crate::capture::sockets::{PodListenerSet, PodSockets};
use crate::proxy::pod::{OrigDstLookup, PodListeners};
use crate::proxy::socket::{SocketFactory, TransparentSocketFuture};
use crate::types::{ClientAddr, OrigDst};

/// Hands a pod's listeners to the async runtime.
pub(super) fn into_tokio(set: PodListenerSet) -> std::io::Result<PodListeners> {
    Ok(PodListeners {
        outbound: tokio::net::TcpListener::from_std(set.outbound)?,
        inbound_plain: tokio::net::TcpListener::from_std(set.inbound_plain)?,
        inbound_hbone: tokio::net::TcpListener::from_std(set.inbound_hbone)?,
    })
}

/// The pod proxy's socket factory over the sockets made in the pod's namespace.
pub(super) struct PodSocketFactory(pub(super) PodSockets);

impl SocketFactory for PodSocketFactory {
    fn tcp_socket(&self, ipv6: bool) -> Pin<Box<dyn Future<Output = std::io::Result<Socket>> + Send + '_>> {
        Box::pin(self.0.tcp_socket(ipv6))
    }

    fn transparent_socket(&self, source: IpAddr, target: SocketAddr) -> TransparentSocketFuture<'_> {
        Box::pin(async move {
            let made = self.0.transparent_socket(source, target).await?;
            Ok(made.map(|(socket, registration)| (socket, Box::new(registration) as Box<dyn Send>)))
        })
    }
}

/// Reads original destinations from the `orig_dst` map.
pub(super) struct MapOrigDst(pub(super) Arc<Loaded>);

impl OrigDstLookup for MapOrigDst {
    fn take(&self, client: ClientAddr) -> Option<OrigDst> {
        self.0.take_orig_dst(client.addr()).map(OrigDst)
    }
}
