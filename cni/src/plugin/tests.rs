//! The plugin's command flow without an API server or an agent: what returns at once, what
//! fails and with which code. The paths through a real API server and agent are covered by the
//! `cni_chain` integration suite.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn env(command: &'static str, cni_args: &'static str) -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/var/run/netns/test-pod"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", cni_args),
    ])
}

fn prev() -> Value {
    json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/test-pod"}],
           "ips":[{"address":"10.22.0.5/24","gateway":"10.22.0.1","interface":0}],"dns":{}})
}

/// A config whose kubeconfig does not exist: any call that reaches for the API server fails
/// with code 1001, so a success proves the API server was not consulted.
fn config(extra: Value) -> Vec<u8> {
    let mut conf = json!({"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ztunnel-cni",
        "kubernetes":{"kubeconfig":"/nonexistent/ztunnel-cni-kubeconfig"},
        "plugin_event_socket":"/nonexistent/pluginevent.sock","prevResult":prev()});
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    serde_json::to_vec(&conf).unwrap()
}

#[test]
fn version_lists_the_supported_versions() {
    let out = run(&BTreeMap::from([("CNI_COMMAND", "VERSION")]), br#"{"cniVersion":"1.0.0"}"#).unwrap().unwrap();
    assert_eq!(out, json!({"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}));
}

#[test]
fn del_and_check_succeed_without_output() {
    for command in ["DEL", "CHECK"] {
        assert_eq!(run(&env(command, "K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=shop"), &config(json!({}))).unwrap(), None);
    }
    let err = run(&env("CHECK", ""), &config(json!({"cniVersion":"0.3.1"}))).unwrap_err();
    assert_eq!((err.code(), err.to_string().contains("CHECK is not defined for cniVersion 0.3.1")), (1, true), "{err}");
}

#[test]
fn add_passes_through_what_is_not_a_kubernetes_pod_or_is_excluded() {
    let cases = [
        ("", json!({})),
        ("K8S_POD_NAMESPACE=shop", json!({})),
        ("K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=kube-system", json!({})),
        ("K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=batch", json!({"kubernetes":{"exclude_namespaces":["batch"]}})),
        ("K8S_POD_NAME=ztunnel-x7k2p;K8S_POD_NAMESPACE=mesh", json!({"system_namespace":"mesh"})),
    ];
    for (args, extra) in cases {
        let out = run(&env("ADD", args), &config(extra)).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(out, Some(prev()), "{args:?}: prevResult unchanged");
    }
}

#[test]
fn add_without_a_usable_kubeconfig_fails_naming_it() {
    let err = run(&env("ADD", "K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=shop"), &config(json!({}))).unwrap_err();
    assert_eq!(err.code(), error::CODE_KUBE_CONFIG, "{err}");
    assert!(err.to_string().contains("kubeconfig /nonexistent/ztunnel-cni-kubeconfig"), "{err}");
}

#[test]
fn add_fails_closed_when_the_api_server_is_unreachable() {
    // A loopback port that was just free: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n"
        ),
    )
    .unwrap();
    let extra = json!({"kubernetes":{"kubeconfig":kubeconfig,"api_deadline_seconds":2}});
    let started = Instant::now();
    let err = run(&env("ADD", "K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=shop"), &config(extra)).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), error::CODE_API_UNREACHABLE, "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("pod shop/web-0: the API server http://127.0.0.1:"), "{msg}");
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10), "retried within the deadline: {took:?}");
}

#[test]
fn bad_environment_and_config_are_cni_errors() {
    let mut missing = env("ADD", "");
    missing.remove("CNI_NETNS");
    let err = run(&missing, &config(json!({}))).unwrap_err();
    assert_eq!((err.code(), err.to_string()), (4, "CNI_NETNS missing".to_string()));
    let err = run(&env("ADD", ""), b"not json").unwrap_err();
    assert_eq!(err.code(), 6);
    let err = run(&env("ADD", ""), &config(json!({"cniVersion":"2.0.0"}))).unwrap_err();
    assert_eq!(err.code(), 1);
}
