//! The proxy of one captured pod: its three listeners inside the pod's network namespace.
//!
//! - 15001 receives the pod's outbound connections, redirected by eBPF; the original
//!   destination is read from the capture map (keyed by the client's address) and the source
//!   workload is the pod itself, known from the listener.
//! - 15006 receives inbound plaintext connections assigned by `sk_lookup`; the accepted
//!   socket's local address is the original destination. They are authorized with no peer
//!   identity (so STRICT mTLS refuses them) before the app is dialled; a refused one is reset.
//! - 15008 terminates inbound HBONE as the pod's identity.
//!
//! Outbound dials are made from inside the pod's namespace. The app is reached inside the pod
//! from the client's own address (a transparent socket; `sk_lookup` never redirects what
//! arrives on the loopback device, and the pod's reply routing brings the answers back), or,
//! where the pod's namespace does not allow that, from 127.0.0.6 (`::1` for IPv6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::debug;

use super::accept::accept_until_drained;
use super::authorize::InboundFacts;
use super::connection::{ConnectionRecord, Opening, Peer};
use super::copy::{TcpChunkReader, TcpChunkWriter, tcp_halves};
use super::outbound::{Outbound, proxy_to};
use super::socket::{Dialer, SocketFactory};
use super::to_app::{InboundClient, Refused, deliver_to_app};
use super::{Error, ProxyInputs, inbound};
use crate::telemetry::Direction;
use crate::types::{ClientAddr, OrigDst, WorkloadUid};

/// Source address of ztunnel's connections to apps inside their pod when the client's own
/// address cannot be used.
pub(crate) const INBOUND_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
/// Bound on dialling an app inside its own pod.
const APP_DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// The same for IPv6 destinations (the capture programs leave `::1` alone too).
pub(crate) const INBOUND_SOURCE_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Where a captured connection was originally headed, recorded by the capture programs.
pub(crate) trait OrigDstLookup: Send + Sync {
    /// Takes (reads and forgets) the original destination of the client at `client`.
    fn take(&self, client: ClientAddr) -> Option<OrigDst>;
}

/// The listeners of one pod, already bound inside its namespace.
pub(crate) struct PodListeners {
    pub outbound: TcpListener,
    pub inbound_plain: TcpListener,
    pub inbound_hbone: TcpListener,
}

/// What the pod proxy needs besides the shared inputs.
#[derive(Clone)]
pub(crate) struct PodContext {
    /// The workload this pod is.
    pub workload_uid: WorkloadUid,
    /// Creates sockets inside the pod's namespace.
    pub sockets: Arc<dyn SocketFactory>,
    pub orig_dst: Arc<dyn OrigDstLookup>,
}

/// Serves one pod until dropped (its tasks stop accepting; live connections finish).
pub(crate) struct PodProxy {
    tasks: JoinSet<()>,
}

impl PodProxy {
    /// Serves the pod's listeners (one set per address family it has).
    pub(crate) fn start(inputs: ProxyInputs, families: Vec<PodListeners>, ctx: PodContext) -> PodProxy {
        let settings = &inputs.settings;
        let in_pod = Dialer {
            factory: Some(ctx.sockets.clone()),
            source: None,
            source6: None,
            mark: settings.socket_mark,
            timeout: settings.connect_timeout,
        };
        // Local delivery answers at once; but a reset from the pod's address to ::1 is dropped by
        // the kernel, so a closed IPv6 port shows only as a timeout: keep that wait short.
        let to_app = Dialer {
            source: Some(INBOUND_SOURCE),
            source6: Some(INBOUND_SOURCE_V6),
            timeout: settings.connect_timeout.min(APP_DIAL_TIMEOUT),
            ..in_pod.clone()
        };
        let mut tasks = JoinSet::new();
        for listeners in families {
            tasks.spawn(serve_outbound(listeners.outbound, inputs.clone(), ctx.clone(), in_pod.clone()));
            tasks.spawn(serve_inbound_plain(
                listeners.inbound_plain,
                inputs.clone(),
                to_app.clone(),
                ctx.workload_uid.clone(),
            ));
            tasks.spawn(inbound::serve(listeners.inbound_hbone, inputs.clone(), to_app.clone()));
        }
        PodProxy { tasks }
    }

    /// True once one of the pod's accept loops has ended: they end only on drain, so outside a
    /// drain a listener has been lost and the pod must get new ones.
    pub(crate) fn has_stopped(&mut self) -> bool {
        self.tasks.try_join_next().is_some()
    }
}

async fn serve_outbound(listener: TcpListener, inputs: ProxyInputs, ctx: PodContext, dialer: Dialer) {
    let outbound = Outbound::new(inputs.clone());
    let drain = inputs.drain.clone();
    accept_until_drained(listener, "pod outbound", &drain, |stream, peer| {
        let (inputs, ctx, dialer, outbound) = (inputs.clone(), ctx.clone(), dialer.clone(), outbound.clone());
        async move {
            if let Err(e) = handle_outbound(stream, peer, &inputs, &ctx, &dialer, &outbound).await {
                debug!(%peer, error = %e, "captured outbound connection refused");
            }
        }
    })
    .await
}

pub(super) async fn handle_outbound(
    stream: TcpStream,
    peer: SocketAddr,
    inputs: &ProxyInputs,
    ctx: &PodContext,
    dialer: &Dialer,
    outbound: &Outbound,
) -> Result<(), Error> {
    let _ = stream.set_nodelay(true);
    let client = ClientAddr(peer);
    let dst = ctx
        .orig_dst
        .take(client)
        .ok_or_else(|| Error::Internal(format!("no original destination recorded for client {peer}")))?;
    let source = inputs
        .state
        .read()
        .workload_by_uid(&ctx.workload_uid)
        .ok_or_else(|| Error::Internal(format!("captured pod's workload {} is not in state", ctx.workload_uid)))?;
    let (record, upstream) = outbound.establish(client, source, dst, dialer).await;
    let result = match upstream {
        Ok(upstream) => inputs.force_close.or_close(proxy_to(stream, upstream, record.transferred.clone())).await,
        Err(e) => Err(e),
    };
    record.close(&result);
    Ok(())
}

async fn serve_inbound_plain(listener: TcpListener, inputs: ProxyInputs, to_app: Dialer, pod_uid: WorkloadUid) {
    let drain = inputs.drain.clone();
    accept_until_drained(listener, "pod inbound plaintext", &drain, |stream, peer| {
        let (inputs, to_app, pod_uid) = (inputs.clone(), to_app.clone(), pod_uid.clone());
        async move { handle_inbound_plain(stream, peer, &inputs, &to_app, &pod_uid).await }
    })
    .await
}

pub(super) async fn handle_inbound_plain(
    stream: TcpStream,
    peer: SocketAddr,
    inputs: &ProxyInputs,
    to_app: &Dialer,
    pod_uid: &WorkloadUid,
) {
    let _ = stream.set_nodelay(true);
    let Ok(target) = stream.local_addr().map(OrigDst) else { return };
    let client = ClientAddr(peer);
    let (workload, source) = {
        let state = inputs.state.read();
        // The listener lives in the pod's namespace, so the destination is the pod itself.
        let workload = state.workload_by_uid(pod_uid).or_else(|| state.workload_by_ip(target.ip()));
        (workload, state.workload_by_ip(peer.ip()))
    };
    let record = ConnectionRecord::open(
        &inputs.connection_metrics,
        Opening {
            direction: Direction::Inbound,
            src_addr: client,
            dst_addr: target,
            // Without mTLS the peer's identity is unknown; its workload is only a hint.
            source: Peer { workload: source, identity: None },
            destination: Peer { identity: workload.as_ref().map(|w| w.identity()), workload: workload.clone() },
            service: None,
            mtls: false,
        },
    );
    // Without its workload no policy can be checked: fail closed.
    let Some(workload) = workload else {
        record.close(&Err(Error::UnknownDestination { authority: target.addr() }));
        reset(stream);
        return;
    };
    let facts = InboundFacts { source_identity: None, source_addr: client, destination: target, workload };
    deliver_to_app(inputs, PlaintextClient(stream), facts, record, to_app, None).await;
}

/// A plaintext client on 15006: refused with a reset, answered by the copy itself.
struct PlaintextClient(TcpStream);

impl InboundClient for PlaintextClient {
    type Reader = TcpChunkReader;
    type Writer = TcpChunkWriter;

    fn refuse(self, why: Refused) {
        match why {
            Refused::Denied => reset(self.0),
            // Closed as the app's own refusal would be seen: the client's connection just ends.
            Refused::AppUnreachable => drop(self.0),
        }
    }

    fn accept(self) -> Result<(TcpChunkReader, TcpChunkWriter), Error> {
        Ok(tcp_halves(self.0))
    }
}

/// Closes a refused plaintext connection with a reset, so the client fails at once instead
/// of seeing an orderly end of stream.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
    drop(stream);
}
