//! The node agent's metrics, in the process registry (which carries the `istio_` prefix):
//!
//! - `istio_pod_enrollments_total{result}`: enrollment work done, `result` one of `enrolled`,
//!   `released`, `failed` (a failed enroll or release; it is retried);
//! - `istio_node_agent_pods{state}`: pods of this node the agent knows, by state (`enrolled`,
//!   `failed`, `waiting`, `skipped`).

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set with one fixed-vocabulary label.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct OneLabel {
    name: &'static str,
    value: &'static str,
}

impl EncodeLabelSet for OneLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        (self.name, self.value).encode(encoder.encode_label())
    }
}

/// The states a pod is counted in.
pub const POD_STATES: [&str; 4] = ["enrolled", "failed", "waiting", "skipped"];

/// The agent's counters and gauges.
#[derive(Clone, Debug, Default)]
pub struct AgentMetrics {
    enrollments: Family<OneLabel, Counter>,
    pods: Family<OneLabel, Gauge>,
}

impl AgentMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> AgentMetrics {
        let m = AgentMetrics::default();
        registry.register("pod_enrollments", "Pod enrollment work by the node agent, by result", m.enrollments.clone());
        registry.register("node_agent_pods", "Pods of this node known to the node agent, by state", m.pods.clone());
        for state in POD_STATES {
            m.pods.get_or_create(&OneLabel { name: "state", value: state }).set(0);
        }
        m
    }

    /// Counts one piece of work with `result` (`enrolled`, `released`, `failed`).
    pub fn counted(&self, result: &'static str) {
        self.enrollments.get_or_create(&OneLabel { name: "result", value: result }).inc();
    }

    /// Sets the number of pods in `state` (one of [`POD_STATES`]).
    pub fn set_pods(&self, state: &'static str, count: usize) {
        self.pods.get_or_create(&OneLabel { name: "state", value: state }).set(count as i64);
    }
}
