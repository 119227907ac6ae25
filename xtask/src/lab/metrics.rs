//! Reading ztunnel's Prometheus text: the `istio_tcp_*` samples, parsed into label maps.

use std::collections::BTreeMap;

/// Prefix of the metrics the demo shows.
const PREFIX: &str = "istio_tcp_";

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    /// Name without the `istio_tcp_` prefix, e.g. `connections_opened_total`.
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

impl Sample {
    pub(crate) fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("")
    }
}

/// The `istio_tcp_*` samples of a scrape (comments and other metrics skipped).
pub(crate) fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(|line| line.strip_prefix(PREFIX)).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, BTreeMap::new()),
    };
    Some(Sample { name: name.to_string(), labels, value })
}

/// Parses `k="v",k2="v2"` (values may contain escaped quotes and commas).
fn parse_labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_tcp_samples_only() {
        let text = "# HELP istio_tcp_sent_bytes_total x\n\
            istio_tcp_sent_bytes_total{reporter=\"source\",source_workload=\"sleep\",odd=\"a\\\"b,c\"} 42\n\
            process_cpu_seconds_total 1\n\
            istio_tcp_connections_opened_total 3\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 2, "expected two istio_tcp samples in {samples:?}");
        assert_eq!(samples[0].name, "sent_bytes_total");
        assert_eq!(samples[0].label("odd"), "a\"b,c");
        assert_eq!(samples[0].value, 42.0);
        assert_eq!(samples[1].name, "connections_opened_total");
    }
}
