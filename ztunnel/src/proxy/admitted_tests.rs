//! The admitted-connection registry: re-evaluation closes exactly the connections a new
//! decision denies, and closing ends the guarded copy.

use std::net::SocketAddr;
use std::time::Duration;

use super::admitted::AdmittedConnections;
use super::authorize::{InboundFacts, decide};
use super::{Error, ForceClose};
use crate::identity::Identity;
use crate::policy::{Decision, Reason};
use crate::state::{SharedState, apply, parse_local_config};
use crate::types::{ClientAddr, OrigDst};

const CONFIG: &str = "workloads:\n- {uid: w, name: w, namespace: app, workloadIps: [\"10.0.0.2\"]}\n";
const DENY_LAB: &str = "policies:\n- {name: no-lab, namespace: app, scope: Namespace, action: Deny, rules: [[[{namespaces: [!Exact lab]}]]]}\n";

fn state(yaml: &str) -> SharedState {
    let state = SharedState::new("");
    apply(&state, parse_local_config(yaml.as_bytes(), "t.yaml", "cluster.local").unwrap_or_else(|e| panic!("{e}")));
    state
}

fn facts(state: &SharedState, peer_ns: &str, port: u16) -> InboundFacts {
    InboundFacts {
        source_identity: Some(Identity::new("cluster.local", peer_ns, "default")),
        source_addr: ClientAddr(SocketAddr::from(([10, 0, 0, 1], port))),
        destination: OrigDst(SocketAddr::from(([10, 0, 0, 2], 8080))),
        workload: state.read().workload_by_uid(&"w".into()).unwrap(),
    }
}

#[tokio::test]
async fn reevaluation_closes_only_newly_denied_connections() {
    let shared = state(CONFIG);
    let admitted = AdmittedConnections::new();
    let lab = admitted.register(facts(&shared, "lab", 1000));
    let shop = admitted.register(facts(&shared, "shop", 1001));
    assert_eq!(admitted.len(), 2);

    // Nothing denies yet.
    assert!(admitted.reevaluate(|f| decide(&shared.read(), f)).is_empty());

    apply(&shared, parse_local_config(format!("{CONFIG}{DENY_LAB}").as_bytes(), "t.yaml", "cluster.local").unwrap());
    let snapshot = shared.read();
    let closed = admitted.reevaluate(|f| decide(&snapshot, f));
    assert_eq!(closed.len(), 1, "only the lab connection is denied");
    assert_eq!(closed[0].0.source_addr.port(), 1000);
    assert!(closed[0].1.late);
    assert_eq!(closed[0].1.to_string(), "connection closed after a policy change: explicitly denied by: app/no-lab");
    assert_eq!(admitted.len(), 1, "the closed connection is no longer tracked");

    // The denied connection's copy ends with the late denial; the other keeps running.
    let (_trigger, force_close) = ForceClose::new();
    let pending = std::future::pending::<Result<(), Error>>();
    let result = tokio::time::timeout(Duration::from_secs(5), lab.enforce(&force_close, pending)).await;
    match result {
        Ok(Err(Error::Denied(d))) => assert!(d.late && matches!(d.reason, Reason::Denied(_)), "{d:?}"),
        other => panic!("expected a late denial, got {other:?}"),
    }
    let still_open = tokio::time::timeout(
        Duration::from_millis(50),
        shop.enforce(&force_close, std::future::pending::<Result<(), Error>>()),
    )
    .await;
    assert!(still_open.is_err(), "the allowed connection must keep running");
    assert!(admitted.is_empty(), "dropping an admission stops tracking it");
}

#[tokio::test]
async fn finished_copies_and_drain_deadline_win_as_usual() {
    let shared = state(CONFIG);
    let admitted = AdmittedConnections::new();
    let (trigger, force_close) = ForceClose::new();
    let done = admitted.register(facts(&shared, "shop", 1)).enforce(&force_close, async { Ok::<_, Error>(7) }).await;
    assert_eq!(done.unwrap(), 7);
    let open = admitted.register(facts(&shared, "shop", 2));
    trigger.fire();
    let result = open.enforce(&force_close, std::future::pending::<Result<(), Error>>()).await;
    assert!(matches!(result, Err(Error::DrainDeadline)), "{result:?}");
    // A denial for a connection that already ended is not reported.
    let gone = admitted.register(facts(&shared, "lab", 3));
    drop(gone);
    let deny_all = |_: &InboundFacts| Decision { reason: Reason::NotAllowed, dry_run: None };
    assert!(admitted.reevaluate(deny_all).is_empty());
}
