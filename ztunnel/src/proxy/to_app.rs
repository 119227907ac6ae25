//! The inbound tail shared by both inbound paths once a connection's facts are known:
//! authorize it, dial the app, answer the client, copy until both directions end, record the
//! outcome.
//!
//! Callers: inbound HBONE ([`super::inbound`], one call per `CONNECT` stream; refusals are
//! answered 401 or 503) and a captured pod's plaintext 15006 listener ([`super::pod`]; a
//! denied connection is reset). What differs between them, how a client is refused or
//! answered, is the [`InboundClient`] each passes in. The record is always closed before the
//! client hears of a refusal, so the outcome is in metrics by the time the client sees it.

use tokio::sync::Semaphore;

use super::authorize::{InboundFacts, authorize};
use super::connection::ConnectionRecord;
use super::copy::{ChunkRead, ChunkWrite, copy_bidirectional, tcp_halves};
use super::socket::Dialer;
use super::{Error, ProxyInputs};

/// Why an inbound connection is refused before any byte reaches the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Policy denied it.
    Denied,
    /// The app could not be reached (or no dial slot was left).
    AppUnreachable,
}

/// The client's side of one inbound connection, as the shared tail drives it.
pub(super) trait InboundClient {
    type Reader: ChunkRead + 'static;
    type Writer: ChunkWrite + 'static;

    /// Refuses the connection; its record is already closed.
    fn refuse(self, why: Refused);

    /// Tells the client the app is connected and returns its halves for the copy.
    fn accept(self) -> Result<(Self::Reader, Self::Writer), Error>;
}

/// Authorizes `facts`, dials the app at the original destination from the client's address
/// (after taking one of `dial_slots`, when given), copies under the admission (closed early
/// by a later denial or the drain deadline) and closes `record` with the outcome.
pub(super) async fn deliver_to_app<C: InboundClient>(
    inputs: &ProxyInputs,
    client: C,
    facts: InboundFacts,
    mut record: ConnectionRecord,
    app_dialer: &Dialer,
    dial_slots: Option<&Semaphore>,
) {
    let (target, client_ip) = (facts.destination, facts.source_addr.ip());
    let admission = match authorize(inputs, facts, &mut record) {
        Ok(admission) => admission,
        Err(e) => return refuse(client, record, Refused::Denied, e),
    };
    // A peer may open many streams at once to an app that never answers; each waits for one
    // of the connection's dial slots, so the dials (sockets, timers) one peer holds are bounded.
    let _dial_slot = match dial_slots.map(Semaphore::acquire) {
        None => None,
        Some(acquire) => match acquire.await {
            Ok(slot) => Some(slot),
            Err(_) => {
                let e = Error::Internal("inbound dial slots closed".into());
                return refuse(client, record, Refused::AppUnreachable, e);
            }
        },
    };
    // Boxed so the dial's state is freed once connected instead of sizing the connection's task.
    let app = match Box::pin(app_dialer.connect_as(target.addr(), client_ip)).await {
        Ok(app) => app,
        Err(e) => return refuse(client, record, Refused::AppUnreachable, e),
    };
    let result = match client.accept() {
        Ok(halves) => {
            let transferred = record.transferred.clone();
            // Built in the call: a copy future held in a local would be stored twice in this task.
            admission
                .enforce(&inputs.force_close, async move {
                    copy_bidirectional(halves, tcp_halves(app), transferred).await.map_err(Error::from)
                })
                .await
        }
        Err(e) => Err(e),
    };
    record.close(&result);
}

/// Records the refusal first, so it is in metrics by the time the client hears of it.
fn refuse<C: InboundClient>(client: C, record: ConnectionRecord, why: Refused, e: Error) {
    record.close(&Err(e));
    client.refuse(why);
}
