//! Lists and gets through kube-rs `Api`: field and label selectors, paging, errors.

use super::*;

#[tokio::test]
async fn lists_pods_of_one_node_by_field_selector() {
    let (_dir, server) = server().await;
    server.create_namespace(namespace("other", &[])).unwrap();
    server.create_pod(pod("apps", "web-a", "node-a", "10.1.0.1")).unwrap();
    server.create_pod(pod("apps", "web-b", "node-b", "10.1.0.2")).unwrap();
    server.create_pod(pod("other", "db-a", "node-a", "10.1.0.3")).unwrap();
    let client = server.client().await;

    let pods: Api<Pod> = Api::all(client.clone());
    let on_a = pods.list(&ListParams::default().fields("spec.nodeName=node-a")).await.expect("list node-a pods");
    let mut listed: Vec<_> = on_a.items.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
    listed.sort();
    assert_eq!(listed, ["db-a", "web-a"], "the field selector keeps node-a's pods of every namespace");
    assert_eq!(on_a.metadata.resource_version, Some(server.resource_version().to_string()));

    let in_apps: Api<Pod> = Api::namespaced(client.clone(), "apps");
    let one = in_apps.list(&ListParams::default().fields("metadata.name=web-b")).await.expect("list by name");
    assert_eq!(one.items.len(), 1, "metadata.name selects one pod");
    let paged = pods.list(&ListParams::default().limit(2)).await.expect("first page");
    assert_eq!((paged.items.len(), paged.metadata.continue_.is_some()), (2, true), "a limit of 2 pages three pods");

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ambient = namespaces
        .list(&ListParams::default().labels("istio.io/dataplane-mode=ambient"))
        .await
        .expect("list namespaces by label");
    assert_eq!(ambient.items.iter().map(|n| n.metadata.name.clone().unwrap()).collect::<Vec<_>>(), ["apps"]);

    let missing = in_apps.get("nope").await.expect_err("a missing pod is an error");
    match missing {
        kube::Error::Api(status) => assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"), "{status:?}"),
        other => panic!("expected a 404 Status, got {other:?}"),
    }
    let bad = pods.list(&ListParams::default().fields("spec.dnsPolicy=None")).await.expect_err("unsupported field");
    assert!(bad.to_string().contains("field label not supported: spec.dnsPolicy"), "{bad}");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path == "/api/v1/pods" && r.query.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "the server recorded the field-selected list: {:?}",
        server.requests()
    );
}
