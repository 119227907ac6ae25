use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// Collects everything a subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("log output is utf-8")
    }
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Capture {
    type Writer = Capture;
    fn make_writer(&'w self) -> Capture {
        self.clone()
    }
}

fn capturing(format: LogFormat, filter: &str) -> (Dispatch, LogHandle, Capture) {
    let capture = Capture::default();
    let (dispatch, reload) = build(format, parse_filter(filter).unwrap(), capture.clone(), false);
    let handle = LogHandle::new(reload, filter, None);
    (dispatch, handle, capture)
}

fn sample_log() -> ConnectionLog<'static> {
    ConnectionLog {
        src_addr: "10.0.0.1:40000".parse::<SocketAddr>().unwrap(),
        src_workload: Some(&"sleep"),
        src_identity: Some(&"spiffe://cluster.local/ns/default/sa/sleep"),
        dst_addr: "10.0.0.2:8080".parse::<SocketAddr>().unwrap(),
        dst_service: None,
        dst_workload: Some(&"echo-v1"),
        dst_identity: Some(&"spiffe://cluster.local/ns/default/sa/echo"),
        direction: Direction::Outbound,
        bytes_sent: 120,
        bytes_recv: 4096,
        duration: Duration::from_millis(1500),
        policy: None,
        dry_run: None,
        error: None,
    }
}

/// The directives of a filter, ignoring the order the filter prints them in.
fn directives(filter: &str) -> std::collections::BTreeSet<String> {
    filter.split(',').map(str::to_string).collect()
}

#[test]
fn filter_specs_parse_strictly() {
    assert_eq!(parse_filter("info").unwrap().to_string(), "info");
    assert_eq!(
        parse_filter("ztunnel::hbone:debug,info").unwrap().to_string(),
        "ztunnel::hbone=debug,info",
        "Istio's target:level form is accepted"
    );
    let err = parse_filter("hbone=loud").unwrap_err();
    assert!(
        matches!(err, TelemetryError::InvalidFilter { ref spec, .. } if spec == "hbone=loud"),
        "bad level rejected naming the spec: {err}"
    );
    assert!(matches!(parse_filter(" , ").unwrap_err(), TelemetryError::EmptyFilter { .. }));
}

#[test]
fn log_format_parses_istio_names() {
    assert_eq!("plain".parse::<LogFormat>().unwrap(), LogFormat::Text);
    assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
    let err = "yaml".parse::<LogFormat>().unwrap_err();
    assert!(err.to_string().contains("\"yaml\""), "{err}");
}

#[test]
fn handle_replaces_merges_and_resets() {
    let handle = LogHandle::detached("info").unwrap();
    assert_eq!(handle.current(), "info");
    handle.set_filter("hbone=debug,warn").unwrap();
    assert_eq!(handle.current(), "hbone=debug,warn");
    handle.add_directives("debug").unwrap();
    assert_eq!(handle.current(), "hbone=debug,debug", "global level replaced");
    handle.add_directives("proxy:trace").unwrap();
    assert_eq!(directives(&handle.current()), directives("hbone=debug,proxy=trace,debug"));

    let err = handle.add_directives("proxy=chatty").unwrap_err();
    assert!(
        matches!(err, TelemetryError::InvalidFilter { ref spec, .. } if spec == "proxy=chatty"),
        "error names the caller's spec: {err}"
    );
    assert_eq!(directives(&handle.current()), directives("hbone=debug,proxy=trace,debug"), "bad spec changes nothing");

    handle.reset("").unwrap();
    assert_eq!(handle.current(), "info");
    handle.reset("access=off").unwrap();
    assert_eq!(handle.current(), "access=off,info");
    assert_eq!(handle.initial(), "info");
}

#[test]
fn reload_changes_what_is_logged() {
    let (dispatch, handle, capture) = capturing(LogFormat::Text, "info");
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::debug!(marker = "before", "hidden at info");
        handle.set_filter("debug").unwrap();
        tracing::debug!(marker = "after", "visible at debug");
    });
    let out = capture.text();
    assert!(!out.contains("marker=\"before\""), "debug logged at info:\n{out}");
    assert!(out.contains("marker=\"after\""), "debug missing after reload:\n{out}");
}

#[test]
fn access_log_text_success() {
    let (dispatch, _handle, capture) = capturing(LogFormat::Text, "info");
    tracing::dispatcher::with_default(&dispatch, || log_connection(&sample_log()));
    let out = capture.text();
    assert_eq!(out.lines().count(), 1, "one line per connection:\n{out}");
    for field in [
        " INFO access: connection complete",
        "src.addr=10.0.0.1:40000",
        "src.workload=\"sleep\"",
        "src.identity=\"spiffe://cluster.local/ns/default/sa/sleep\"",
        "dst.addr=10.0.0.2:8080",
        "dst.workload=\"echo-v1\"",
        "dst.identity=\"spiffe://cluster.local/ns/default/sa/echo\"",
        "direction=\"outbound\"",
        "bytes_sent=120",
        "bytes_recv=4096",
        "duration_ms=1500",
    ] {
        assert!(out.contains(field), "missing {field:?} in:\n{out}");
    }
    for absent in ["dst.service", "error", "policy"] {
        assert!(!out.contains(absent), "{absent:?} should be left out:\n{out}");
    }
}

#[test]
fn access_log_json_failure() {
    let (dispatch, _handle, capture) = capturing(LogFormat::Json, "info");
    let mut log = sample_log();
    log.direction = Direction::Inbound;
    log.dst_service = Some(&"echo.default.svc.cluster.local");
    log.src_workload = None;
    log.error = Some(ConnectionFailure { source: FailureSource::Policy, message: &"denied by policy \"deny-all\"" });
    log.policy = Some(&"default/deny-all");
    log.dry_run = Some(&"explicitly denied by: default/audit");
    tracing::dispatcher::with_default(&dispatch, || log_connection(&log));
    let out = capture.text();
    let line: serde_json::Value = serde_json::from_str(out.trim()).expect("one json object");
    assert_eq!(line["target"], "access");
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["message"], "connection complete");
    assert_eq!(line["src.addr"], "10.0.0.1:40000");
    assert_eq!(line["dst.service"], "echo.default.svc.cluster.local");
    assert_eq!(line["direction"], "inbound");
    assert_eq!(line["bytes_recv"], 4096);
    assert_eq!(line["duration_ms"], 1500);
    assert_eq!(line["error"], "denied by policy \"deny-all\"");
    assert_eq!(line["error.kind"], "policy");
    assert_eq!(line["policy"], "default/deny-all");
    assert_eq!(line["policy.dry_run"], "explicitly denied by: default/audit");
    assert!(line.get("src.workload").is_none(), "unknown field left out: {line}");
}

#[test]
fn access_log_can_be_filtered_by_target() {
    let (dispatch, _handle, capture) = capturing(LogFormat::Text, "access=off,info");
    tracing::dispatcher::with_default(&dispatch, || {
        log_connection(&sample_log());
        tracing::info!("other events still logged");
    });
    let out = capture.text();
    assert!(!out.contains("connection complete"), "{out}");
    assert!(out.contains("other events still logged"), "{out}");
}

#[test]
fn init_twice_returns_the_installed_handle() {
    let first = init(LogFormat::Text, "warn").expect("first init installs the subscriber");
    let second = init(LogFormat::Json, "trace").expect("second init does not fail");
    assert_eq!(second.current(), first.current(), "second call keeps the first filter");
    assert!(Arc::ptr_eq(&first.inner, &second.inner), "same handle");
}
