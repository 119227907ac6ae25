//! Whose fault each failure is: every [`Error`] a connection can end with, and every HBONE
//! response status a peer can answer, mapped to the bounded [`FailureSource`] that metrics and
//! the access log carry. A change here changes what operators see, so each row is pinned.

use std::io;
use std::time::Duration;

use http::StatusCode;

use super::copy::{CopyError, Side};
use super::route::RouteError;
use super::{Denial, Error, FailureSource};
use crate::hbone;
use crate::identity::Identity;
use crate::policy::Reason;

fn addr() -> std::net::SocketAddr {
    "10.0.0.1:15008".parse().unwrap()
}

fn status(code: u16) -> Error {
    Error::Hbone {
        gateway: addr(),
        source: hbone::Error::Status { authority: "10.0.0.1:8080".into(), status: StatusCode::from_u16(code).unwrap() },
    }
}

#[test]
fn every_failure_names_whose_fault_it_was() {
    let cases: Vec<(&str, Error, FailureSource)> = vec![
        ("unknown source", Error::UnknownSource { ip: addr().ip(), node: "n1".into() }, FailureSource::Client),
        ("bad socks5 handshake", Error::Socks5("version 4".into()), FailureSource::Client),
        ("connect for another node", Error::UnknownDestination { authority: addr() }, FailureSource::Client),
        (
            "service port not declared",
            Error::Route(RouteError::UnknownServicePort { service: "shop/web".into(), port: 81 }),
            FailureSource::Client,
        ),
        (
            "no healthy endpoint",
            Error::Route(RouteError::NoHealthyEndpoint { service: "shop/web".into(), port: 80 }),
            FailureSource::Upstream,
        ),
        (
            "workload without address",
            Error::Route(RouteError::NoAddress { workload: "w".into() }),
            FailureSource::Upstream,
        ),
        (
            "certificate unavailable",
            Error::Certificate { identity: Identity::new("cluster.local", "shop", "web"), reason: "ca down".into() },
            FailureSource::Identity,
        ),
        ("peer identity mismatch", Error::TlsIdentity { peer: addr(), reason: "san".into() }, FailureSource::Identity),
        ("denied", Error::Denied(Denial { reason: Reason::NotAllowed, late: false }), FailureSource::Policy),
        (
            "connection refused",
            Error::Connect { addr: addr(), source: io::ErrorKind::ConnectionRefused.into() },
            FailureSource::Upstream,
        ),
        (
            "connect timeout",
            Error::ConnectTimeout { addr: addr(), timeout: Duration::from_secs(10) },
            FailureSource::Upstream,
        ),
        (
            "client went away",
            Error::Copy(CopyError { side: Side::Client, source: io::ErrorKind::ConnectionReset.into() }),
            FailureSource::Client,
        ),
        (
            "upstream went away",
            Error::Copy(CopyError { side: Side::Upstream, source: io::ErrorKind::ConnectionReset.into() }),
            FailureSource::Upstream,
        ),
        ("drain deadline", Error::DrainDeadline, FailureSource::Internal),
        ("internal", Error::Internal("bug".into()), FailureSource::Internal),
    ];
    for (what, error, want) in cases {
        assert_eq!(error.kind(), want, "{what} ({error}) must be classified as {want:?}");
    }
}

#[test]
fn hbone_response_statuses_are_classified_as_the_destination_means_them() {
    // 401 is Istio's policy denial, 403 another proxy's; 400 means this proxy built a request
    // the peer could not read; 503 (the destination could not reach its app) and anything
    // else unexpected is the upstream's.
    let cases = [
        (401, FailureSource::Policy),
        (403, FailureSource::Policy),
        (400, FailureSource::Internal),
        (503, FailureSource::Upstream),
        (502, FailureSource::Upstream),
        (431, FailureSource::Upstream),
    ];
    for (code, want) in cases {
        let error = status(code);
        assert_eq!(error.kind(), want, "a CONNECT answered {code} must be classified as {want:?}");
    }
}

#[test]
fn transport_failures_of_a_tunnel_are_the_upstreams() {
    let closed =
        Error::Hbone { gateway: addr(), source: hbone::Error::ConnectionClosed { peer: "10.0.0.1:15008".into() } };
    assert_eq!(closed.kind(), FailureSource::Upstream);
    let timeout = Error::Hbone {
        gateway: addr(),
        source: hbone::Error::HandshakeTimeout { peer: "10.0.0.1:15008".into(), timeout: Duration::from_secs(10) },
    };
    assert_eq!(timeout.kind(), FailureSource::Upstream);
}
