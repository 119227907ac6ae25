//! Policies in the local config: the `mtls` shorthand becomes istiod's STRICT policy, and a
//! snapshot authorizes connections with the policies that apply to the destination.

use std::net::SocketAddr;

use super::*;
use crate::identity::Identity;
use crate::policy::{Connection, PolicyKey, Reason, static_strict_key};

const YAML: &str = r#"
namespaces:
- {name: shop, mtls: STRICT}
- {name: lab}
workloads:
- {uid: cart, name: cart, namespace: shop, workloadIps: ["10.0.0.1"]}
- {uid: legacy, name: legacy, namespace: shop, mtls: PERMISSIVE, workloadIps: ["10.0.0.2"]}
- {uid: probe, name: probe, namespace: lab, mtls: STRICT, workloadIps: ["10.0.0.3"]}
- {uid: open, name: open, namespace: lab, workloadIps: ["10.0.0.4"]}
policies:
- name: deny-lab
  namespace: shop
  scope: Namespace
  action: Deny
  rules: [[[{namespaces: [!Exact lab]}]]]
"#;

fn state(yaml: &str) -> SharedState {
    let state = SharedState::new("");
    apply(&state, parse_local_config(yaml.as_bytes(), "t.yaml", "cluster.local").unwrap_or_else(|e| panic!("{e}")));
    state
}

#[test]
fn mtls_strict_lists_the_static_strict_policy() {
    let st = state(YAML).read();
    let strict = static_strict_key();
    let listed = |uid: &str| {
        st.workload_by_uid(&uid.into()).unwrap().authorization_policies.iter().any(|k| **k == *strict.as_str())
    };
    assert!(listed("cart"), "namespace STRICT applies to its workloads");
    assert!(!listed("legacy"), "a workload's PERMISSIVE overrides its namespace's STRICT");
    assert!(listed("probe"), "a workload's STRICT applies in a PERMISSIVE namespace");
    assert!(!listed("open"), "PERMISSIVE is the default");
    assert_eq!(st.policies().len(), 2, "the STRICT policy is added once");
    assert!(st.policies().get(strict.as_str()).is_some());
}

#[test]
fn file_may_define_the_strict_policy_itself() {
    let yaml = format!(
        "{YAML}- name: istio_converted_static_strict\n  namespace: istio-system\n  scope: WorkloadSelector\n  action: Deny\n  rules: [[[{{notPrincipals: [!Presence []], notDestinationPorts: [9000]}}]]]\n"
    );
    let st = state(&yaml).read();
    assert_eq!(st.policies().len(), 2, "the file's own definition is used, not a second one");
    let strict = st.policies().get(static_strict_key().as_str()).unwrap();
    assert_eq!(strict.rules[0].clauses[0].matches[0].not_destination_ports, vec![9000]);
}

#[test]
fn snapshot_authorizes_with_the_destination_policies() {
    let st = state(YAML).read();
    let lab = Identity::new("cluster.local", "lab", "default");
    let shop = Identity::new("cluster.local", "shop", "default");
    let decide = |uid: &str, id: Option<&Identity>| {
        let w = st.workload_by_uid(&uid.into()).unwrap();
        let conn = Connection {
            source_identity: id,
            source_ip: "10.0.0.9".parse().unwrap(),
            destination: SocketAddr::new(w.workload_ips[0], 8080),
        };
        st.authorize(&w, &conn).reason
    };
    assert_eq!(decide("cart", Some(&lab)), Reason::Denied(PolicyKey::new("shop", "deny-lab")));
    assert_eq!(decide("cart", Some(&shop)), Reason::NoAllowPolicy);
    assert_eq!(decide("cart", None), Reason::Denied(static_strict_key()), "STRICT refuses plaintext");
    assert_eq!(decide("legacy", None), Reason::NoAllowPolicy, "PERMISSIVE accepts plaintext");
    assert_eq!(decide("open", Some(&lab)), Reason::NoAllowPolicy, "shop's policy does not apply in lab");
}

#[test]
fn config_dump_lists_policies_in_istio_spelling() {
    let dump = state(YAML).config_dump();
    let policies = dump["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2);
    assert_eq!(policies[0]["name"], "deny-lab");
    assert_eq!(policies[0]["rules"][0][0][0]["namespaces"][0]["Exact"], "lab");
    assert_eq!(policies[1]["name"], "istio_converted_static_strict");
    assert_eq!(policies[1]["scope"], "WorkloadSelector");
    assert_eq!(dump["workloads"][0]["authorizationPolicies"][0], "istio-system/istio_converted_static_strict");
}

#[test]
fn readme_authorization_example_parses() {
    let readme = include_str!("../../../README.md");
    let section = readme.split("### Authorization").nth(1).expect("README has an Authorization section");
    let yaml = section.split("```yaml\n").nth(1).and_then(|s| s.split("```").next()).expect("a yaml block");
    let cfg = parse_local_config(yaml.as_bytes(), "README.md", "cluster.local").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.policies()[0].key().as_str(), "shop/allow-sleep");
}
