//! What the ztunnels' own metrics say about one flow: the change in the `istio_tcp_*`
//! counters between a scrape before the flow and one after it, on the source's node
//! (`reporter="source"`) and on the destination's node (`reporter="destination"`). Flows run
//! one at a time, so whatever changed belongs to the flow. Pure: takes parsed samples.
//!
//! From that change the demo reads, rather than assumes: whether the connection was captured
//! (the source's ztunnel counted it: there is no other way in, the demo uses no SOCKS5),
//! whether it went through HBONE (`connection_security_policy="mutual_tls"` at both ends),
//! which SPIFFE identities it carried, and how many bytes crossed.

use std::collections::BTreeMap;

use super::metrics::Sample;

/// The counters of one label set, or their change.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Counters {
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) opened: u64,
    pub(crate) closed: u64,
    /// Bytes from the client towards the server (`received_bytes_total`).
    pub(crate) upstream: u64,
    /// Bytes from the server back to the client (`sent_bytes_total`).
    pub(crate) downstream: u64,
}

impl Counters {
    pub(crate) fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("")
    }

    pub(crate) fn mutual_tls(&self) -> bool {
        self.label("connection_security_policy") == "mutual_tls"
    }

    fn add(&mut self, name: &str, value: u64) {
        match name {
            "connections_opened_total" => self.opened += value,
            "connections_closed_total" => self.closed += value,
            "received_bytes_total" => self.upstream += value,
            "sent_bytes_total" => self.downstream += value,
            _ => {}
        }
    }
}

/// Groups samples by label set into [`Counters`].
fn group(samples: &[Sample]) -> Vec<Counters> {
    let mut groups: Vec<Counters> = Vec::new();
    for s in samples {
        let value = s.value.max(0.0) as u64;
        match groups.iter_mut().find(|g| g.labels == s.labels) {
            Some(g) => g.add(&s.name, value),
            None => {
                let mut g = Counters { labels: s.labels.clone(), ..Counters::default() };
                g.add(&s.name, value);
                groups.push(g);
            }
        }
    }
    groups
}

/// Label sets whose counters grew between `before` and `after`, with the growth.
pub(crate) fn changes(before: &[Sample], after: &[Sample]) -> Vec<Counters> {
    let before = group(before);
    group(after)
        .into_iter()
        .filter_map(|mut a| {
            if let Some(b) = before.iter().find(|b| b.labels == a.labels) {
                a.opened = a.opened.saturating_sub(b.opened);
                a.closed = a.closed.saturating_sub(b.closed);
                a.upstream = a.upstream.saturating_sub(b.upstream);
                a.downstream = a.downstream.saturating_sub(b.downstream);
            }
            (a.opened + a.closed + a.upstream + a.downstream > 0).then_some(a)
        })
        .collect()
}

/// The change on one side of a flow: the label set that opened the most connections from
/// `source_workload` as seen by `reporter`, with the counters of every such set summed
/// (normally there is exactly one).
pub(crate) fn side(changes: &[Counters], reporter: &str, source_workload: &str) -> Option<Counters> {
    let matching: Vec<&Counters> = changes
        .iter()
        .filter(|c| c.label("reporter") == reporter && c.label("source_workload") == source_workload)
        .collect();
    let main = matching.iter().max_by_key(|c| c.opened)?;
    let mut total = Counters { labels: main.labels.clone(), ..Counters::default() };
    for c in &matching {
        total.opened += c.opened;
        total.closed += c.closed;
        total.upstream += c.upstream;
        total.downstream += c.downstream;
    }
    Some(total)
}

/// Both sides of one flow.
#[derive(Clone, Debug, Default)]
pub(crate) struct Evidence {
    /// Counted by the source pod's ztunnel (`reporter="source"`).
    pub(crate) source: Option<Counters>,
    /// Counted by the destination pod's ztunnel (`reporter="destination"`).
    pub(crate) destination: Option<Counters>,
}

impl Evidence {
    /// The source's ztunnel saw the connection, so capture handed it over.
    pub(crate) fn captured(&self) -> bool {
        self.source.as_ref().is_some_and(|s| s.opened > 0)
    }

    /// Both ends report mutual TLS: the connection crossed in an HBONE tunnel.
    pub(crate) fn hbone(&self) -> bool {
        self.source.as_ref().is_some_and(Counters::mutual_tls)
            && self.destination.as_ref().is_some_and(Counters::mutual_tls)
    }

    /// `(source_principal, destination_principal)` as the source reported them.
    pub(crate) fn identities(&self) -> Option<(String, String)> {
        let s = self.source.as_ref()?;
        Some((s.label("source_principal").to_string(), s.label("destination_principal").to_string()))
    }

    /// Whether the counters are complete: the source side closed the connection, and for a
    /// tunnelled connection the destination side too.
    pub(crate) fn settled(&self) -> bool {
        let closed = |c: &Option<Counters>| c.as_ref().is_some_and(|c| c.closed > 0);
        closed(&self.source) && (!self.source.as_ref().is_some_and(Counters::mutual_tls) || closed(&self.destination))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::metrics::parse;

    const BEFORE: &str = "\
istio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"sleep\",destination_workload=\"web\",connection_security_policy=\"mutual_tls\",source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\",destination_principal=\"spiffe://cluster.local/ns/default/sa/web\"} 2
istio_tcp_received_bytes_total{reporter=\"source\",source_workload=\"sleep\",destination_workload=\"web\",connection_security_policy=\"mutual_tls\",source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\",destination_principal=\"spiffe://cluster.local/ns/default/sa/web\"} 100
";

    const AFTER: &str = "\
istio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"sleep\",destination_workload=\"web\",connection_security_policy=\"mutual_tls\",source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\",destination_principal=\"spiffe://cluster.local/ns/default/sa/web\"} 3
istio_tcp_connections_closed_total{reporter=\"source\",source_workload=\"sleep\",destination_workload=\"web\",connection_security_policy=\"mutual_tls\",source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\",destination_principal=\"spiffe://cluster.local/ns/default/sa/web\"} 1
istio_tcp_received_bytes_total{reporter=\"source\",source_workload=\"sleep\",destination_workload=\"web\",connection_security_policy=\"mutual_tls\",source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\",destination_principal=\"spiffe://cluster.local/ns/default/sa/web\"} 178
istio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"sleep\",destination_workload=\"unknown\",connection_security_policy=\"unknown\"} 0
";

    #[test]
    fn only_what_grew_is_attributed_to_the_flow() {
        let changed = changes(&parse(BEFORE), &parse(AFTER));
        assert_eq!(changed.len(), 1, "only the sleep -> web set grew: {changed:?}");
        let source = side(&changed, "source", "sleep").expect("source side");
        assert_eq!((source.opened, source.closed, source.upstream), (1, 1, 78));
        assert!(side(&changed, "destination", "sleep").is_none());
        let evidence = Evidence { source: Some(source.clone()), destination: None };
        assert!(evidence.captured());
        assert!(!evidence.hbone(), "HBONE needs the destination's word too");
        assert!(!evidence.settled(), "a tunnelled flow waits for the destination side");
        let both = Evidence { source: Some(source.clone()), destination: Some(source) };
        assert!(both.hbone() && both.settled());
        assert_eq!(
            both.identities(),
            Some((
                "spiffe://cluster.local/ns/default/sa/sleep".to_string(),
                "spiffe://cluster.local/ns/default/sa/web".to_string()
            ))
        );
    }

    #[test]
    fn nothing_counted_means_not_captured() {
        let evidence = Evidence::default();
        assert!(!evidence.captured() && !evidence.hbone() && !evidence.settled());
        assert_eq!(evidence.identities(), None);
    }
}
