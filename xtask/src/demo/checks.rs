//! What the two ztunnels' metrics must show after the flows: each successful flow counted by
//! the right reporter, between the right principals, over mutual TLS where it was tunnelled.
//! Pure: takes parsed samples, returns the list of what is missing.

use super::metrics::{Sample, sum};
use super::topology::Topology;

/// Outcomes of the flows the checks are derived from.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Expected {
    /// Successful HTTP requests to `web` through the mesh.
    pub(crate) http_ok: u64,
    /// Bytes uploaded to `data` through the mesh, if that flow succeeded.
    pub(crate) bulk_bytes: Option<u64>,
    /// Whether the passthrough flow succeeded.
    pub(crate) passthrough_ok: bool,
}

/// Failed checks, each saying what was expected and what was found; empty when all hold.
pub(crate) fn verify(topo: &Topology, node_a: &[Sample], node_b: &[Sample], expected: Expected) -> Vec<String> {
    let sleep_id = topo.sleep.spiffe();
    let web_id = topo.web.spiffe();
    let data_id = topo.data.spiffe();
    let mut failures = Vec::new();
    let mut at_least = |what: String, found: u64, want: u64| {
        if found < want {
            failures.push(format!("{what}: expected at least {want}, found {found}"));
        }
    };

    let mtls = ("connection_security_policy", "mutual_tls");
    let web_out = [("reporter", "source"), ("source_principal", &sleep_id), ("destination_principal", &web_id), mtls];
    let web_in =
        [("reporter", "destination"), ("source_principal", &sleep_id), ("destination_principal", &web_id), mtls];
    let opened = "connections_opened_total";
    at_least(
        format!("{} connections sleep -> web reported by source (mutual_tls)", topo.node_a.name),
        sum(node_a, opened, &web_out),
        expected.http_ok,
    );
    at_least(
        format!("{} connections sleep -> web reported by destination (mutual_tls)", topo.node_b.name),
        sum(node_b, opened, &web_in),
        expected.http_ok,
    );

    if let Some(bytes) = expected.bulk_bytes {
        let data_out =
            [("reporter", "source"), ("source_principal", &sleep_id), ("destination_principal", &data_id), mtls];
        let data_in =
            [("reporter", "destination"), ("source_principal", &sleep_id), ("destination_principal", &data_id), mtls];
        let received = "received_bytes_total";
        at_least(
            format!("{} bytes sleep -> data reported by source", topo.node_a.name),
            sum(node_a, received, &data_out),
            bytes,
        );
        at_least(
            format!("{} bytes sleep -> data reported by destination", topo.node_b.name),
            sum(node_b, received, &data_in),
            bytes,
        );
    }

    if expected.passthrough_ok {
        let passthrough =
            [("reporter", "source"), ("source_workload", topo.sleep.name), ("destination_workload", "unknown")];
        at_least(
            format!("{} passthrough connections from sleep (destination_workload=unknown)", topo.node_a.name),
            sum(node_a, opened, &passthrough),
            1,
        );
    }
    failures
}
