//! The output of the traffic tool (`testapp`, `tests/src/bin/testapp/`), which the tests, the
//! demo and the benchmark all run inside pods: one JSON object per line, its `"event"` naming
//! what happened. Writers call [`print`]; readers pick lines with [`events`], [`first`] and
//! [`last`] and read fields with serde_json (or the typed [`Latency`]).
//!
//! | event | fields | printed by |
//! |---|---|---|
//! | `listening` | `local` | every server, once bound |
//! | `accepted` / `closed` | `peer`, `local` / `peer`, `bytes` | `serve`, `http` (not with `--quiet`) |
//! | `received` / `failed` | `peer`, `bytes` / `peer`, `reason` | `sink`, per upload |
//! | `connected`, `echo` | `local`, `peer`; `bytes`, `sha256`, `sent_sha256`, `elapsed_us` | `connect` |
//! | `rtt` | `latency`, `samples_us` | `rtt` |
//! | `upload` | `bytes`, `micros`, `mib_per_s`, `sha256` | `upload` |
//! | `rate` | `requests`, `seconds`, `latency`, `errors` | `rate` |
//! | `cps` | `connections`, `seconds`, `per_second`, `latency`, `errors` | `cps` |
//! | `cold` | `began_us`, `ended_us`, `samples_us`, `errors` | `cold` |
//! | `held` / `released` | `open`, `seconds` / `closed` | `hold` |
//! | `bound` | `local` | `bind` |
//! | `error` | `message` | any mode that fails (then it exits 1) |
//!
//! `latency` is a [`Latency`]; `errors` is `{"count": n, "first": "..." | null}`.

use std::io::Write;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One line: a JSON object of `fields` plus `"event": <event>` (keys in serde_json's order).
/// `fields` must be an object (or null).
pub fn line(event: &str, fields: Value) -> String {
    let mut object = Map::new();
    object.insert("event".into(), Value::from(event));
    if let Value::Object(rest) = fields {
        object.extend(rest);
    }
    Value::Object(object).to_string()
}

/// Prints [`line`] and flushes, so a reader of the output sees it at once.
pub fn print(event: &str, fields: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line(event, fields));
    let _ = out.flush();
}

/// Every line of `output` that is a JSON object with this `event`, in order. Other lines
/// (anything another program printed) are skipped.
pub fn events(output: &str, event: &str) -> Vec<Value> {
    output
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

pub fn first(output: &str, event: &str) -> Option<Value> {
    events(output, event).into_iter().next()
}

pub fn last(output: &str, event: &str) -> Option<Value> {
    events(output, event).into_iter().next_back()
}

/// The message of the first `error` line.
pub fn error(output: &str) -> Option<String> {
    first(output, "error").map(|v| v["message"].as_str().unwrap_or_default().to_string())
}

/// A socket address field (`peer`, `local`).
pub fn addr(v: &Value, field: &str) -> Option<SocketAddr> {
    v[field].as_str()?.parse().ok()
}

/// A number field, whatever its JSON number type.
pub fn number(v: &Value, field: &str) -> Option<u64> {
    v[field].as_u64()
}

/// Latency percentiles of a sample, in microseconds (nearest rank).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Latency {
    /// Sorts `samples` (microseconds); all zero for an empty sample.
    pub fn from_samples(samples: &mut [u64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |p: usize| samples[(p * samples.len()).div_ceil(100).clamp(1, samples.len()) - 1];
        Latency {
            count: samples.len() as u64,
            min_us: samples[0],
            p50_us: at(50),
            p90_us: at(90),
            p99_us: at(99),
            max_us: samples[samples.len() - 1],
        }
    }

    pub fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_name_their_event_first_and_are_found_among_other_output() {
        let text = line("accepted", json!({"peer": "10.0.0.1:4000", "local": "10.0.0.2:80"}));
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, json!({"event": "accepted", "peer": "10.0.0.1:4000", "local": "10.0.0.2:80"}));
        assert!(!text.contains('\n'), "one line: {text}");
        let output = format!("noise\n{text}\n{}\n{{not json\n", line("closed", json!({"peer": "x", "bytes": 5})));
        assert_eq!(events(&output, "accepted").len(), 1);
        assert_eq!(addr(&first(&output, "accepted").unwrap(), "peer"), Some("10.0.0.1:4000".parse().unwrap()));
        assert_eq!(number(&last(&output, "closed").unwrap(), "bytes"), Some(5));
        assert!(first(&output, "echo").is_none());
        assert_eq!(error(&line("error", json!({"message": "connect: refused"}))).as_deref(), Some("connect: refused"));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        let l = Latency::from_samples(&mut samples);
        assert_eq!((l.count, l.min_us, l.p50_us, l.p90_us, l.p99_us, l.max_us), (100, 1, 50, 90, 99, 100));
        assert_eq!(Latency::from_samples(&mut [7]).p99_us, 7);
        assert_eq!(Latency::from_samples(&mut []), Latency::default());
        assert_eq!(Latency::from_samples(&mut [3, 1, 2]).json()["p50_us"], 2);
    }
}
