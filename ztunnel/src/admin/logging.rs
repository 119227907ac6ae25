//! `/logging`: show or change the log filter, as Istio's ztunnel admin does.
//!
//! - `GET` or `POST` without parameters: `current log level is <filter>`.
//! - `POST ?level=<spec>`: adds the directives of `<spec>` to the current filter (`debug`,
//!   `hbone=debug,info`, or Istio's `target:level`); a directive for a target already listed
//!   replaces it.
//! - `POST ?reset` (optionally with `level`): back to the startup filter, plus `<spec>`.
//!
//! A bad spec answers 400 with the parse error and changes nothing. Who may change the filter
//! is decided by the admin server before [`handle`] is called.

use http::{Method, StatusCode};

use super::server::{self, HttpResponse, query_param};
use crate::telemetry::LogHandle;

const USAGE: &str = "usage: GET or POST /logging                 show the current filter
usage: POST /logging?level=<filter>          add directives, e.g. level=debug or level=hbone=debug,info
usage: POST /logging?reset[&level=<filter>]  restore the startup filter (plus directives)
hint: level: error|warn|info|debug|trace|off; target: a module path such as ztunnel::proxy
";

/// Whether this request would change the filter (`POST` with `level` or `reset`).
pub(crate) fn changes(method: &Method, query: Option<&str>) -> bool {
    *method == Method::POST && (query_param(query, "level").is_some() || query_param(query, "reset").is_some())
}

pub(crate) fn handle(log: &LogHandle, method: &Method, query: Option<&str>) -> HttpResponse {
    let level = query_param(query, "level");
    let reset = query_param(query, "reset").is_some();
    let changes = level.is_some() || reset;
    match *method {
        Method::GET if !changes => current(log),
        Method::GET => {
            server::text(StatusCode::METHOD_NOT_ALLOWED, format!("changing the log filter needs POST\n{USAGE}"))
        }
        Method::POST if !changes => current(log),
        Method::POST => {
            let spec = level.unwrap_or_default();
            let result = if reset { log.reset(&spec) } else { log.add_directives(&spec) };
            match result {
                Ok(()) => current(log),
                Err(error) => server::text(StatusCode::BAD_REQUEST, format!("{error}\n{USAGE}")),
            }
        }
        _ => server::text(StatusCode::METHOD_NOT_ALLOWED, format!("method {method} not allowed\n{USAGE}")),
    }
}

fn current(log: &LogHandle) -> HttpResponse {
    server::text(StatusCode::OK, format!("current log level is {}\n", log.current()))
}
