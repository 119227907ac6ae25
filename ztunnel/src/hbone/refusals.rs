//! Warnings about connections refused on the inbound HBONE port, rate-limited.
//!
//! A failed TLS handshake, plaintext sent to 15008 and a request that is not a well-formed
//! `CONNECT` are each logged at `WARN` with the peer's address and the reason, in the shape of
//! Istio's ztunnel's early-deny line (target `access`, `src.addr`, `dst.addr`,
//! `direction="inbound"`, `error`, message "connection failed"), plus `refusal` naming the kind.
//!
//! A peer can open connections as fast as it likes, so each kind is limited to
//! [`LINES_PER_WINDOW`] lines per [`WINDOW`]; the refusals beyond that are counted, and the
//! first line of a later window reports how many were left out (`suppressed`).

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines logged per kind of refusal within one [`WINDOW`].
pub(crate) const LINES_PER_WINDOW: u32 = 10;
/// Length of a rate-limit window.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// What kind of refusal a line reports (logged as `refusal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The TLS handshake failed or timed out (bad or missing client certificate, ...).
    TlsHandshake,
    /// The peer spoke something other than TLS.
    Plaintext,
    /// The HTTP/2 request was not a `CONNECT` to an `ip:port` authority.
    BadRequest,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::Plaintext => "plaintext",
            Refusal::BadRequest => "bad_request",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One kind's window: when it started, lines logged in it, refusals left out so far.
struct Window {
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// Rate limit of every kind of refusal.
struct Limiter {
    windows: [Mutex<Window>; 3],
}

impl Limiter {
    const fn new() -> Limiter {
        const FRESH: Window = Window { started: None, logged: 0, suppressed: 0 };
        Limiter { windows: [Mutex::new(FRESH), Mutex::new(FRESH), Mutex::new(FRESH)] }
    }

    /// Decides whether a line of `kind` may be logged now; if so, returns how many refusals of
    /// that kind were left out since the last line.
    fn admit(&self, kind: Refusal, now: Instant) -> Option<u64> {
        let mut w = self.windows[kind.index()].lock().unwrap_or_else(PoisonError::into_inner);
        if w.started.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            w.started = Some(now);
            w.logged = 0;
        }
        if w.logged >= LINES_PER_WINDOW {
            w.suppressed += 1;
            return None;
        }
        w.logged += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

static LIMITER: Limiter = Limiter::new();

/// Logs one refused connection (or counts it, when the kind's lines are used up).
pub(crate) fn log_refusal(kind: Refusal, peer: SocketAddr, local: Option<SocketAddr>, reason: &dyn Display) {
    let Some(suppressed) = LIMITER.admit(kind, Instant::now()) else { return };
    tracing::event!(
        target: "access",
        tracing::Level::WARN,
        src.addr = %peer,
        dst.addr = local.map(tracing::field::display),
        direction = "inbound",
        refusal = kind.as_str(),
        error = %reason,
        suppressed = (suppressed > 0).then_some(suppressed),
        "connection failed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_logs_a_bounded_number_of_lines_per_window_and_counts_the_rest() {
        let limiter = Limiter::new();
        let start = Instant::now();
        let admitted = (0..1000).filter(|_| limiter.admit(Refusal::BadRequest, start).is_some()).count();
        assert_eq!(admitted, LINES_PER_WINDOW as usize, "lines logged from 1000 refusals in one window");
        let next = limiter.admit(Refusal::BadRequest, start + WINDOW);
        assert_eq!(next, Some(1000 - u64::from(LINES_PER_WINDOW)), "the next window reports what was left out");
        assert_eq!(limiter.admit(Refusal::BadRequest, start + WINDOW), Some(0), "and then starts counting afresh");
        assert_eq!(limiter.admit(Refusal::Plaintext, start), Some(0), "each kind has its own window");
    }
}
