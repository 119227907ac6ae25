//! Patches of pods and `pods/status` through kube-rs, as the node agent sends them.

use super::*;

#[tokio::test]
async fn status_merge_patch_sets_an_annotation_seen_by_get_and_watchers() {
    let (_dir, server) = server().await;
    server.create_pod(pod("apps", "web", "node-a", "10.1.0.1")).unwrap();
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    let seen = Seen::default();
    let _task = seen.follow(watch_stream(Api::<Pod>::all(client), watcher::Config::default()).default_backoff());
    eventually("the watcher synced", WAIT, || async { seen.contains("init-done") }).await;

    let patch = json!({
        "metadata": {"annotations": {REDIRECTION: "enabled"}},
        "spec": {"nodeName": "node-z"},
    });
    let params = PatchParams { field_manager: Some("ztunnel".into()), ..Default::default() };
    let patched = pods.patch_status("web", &params, &Patch::Merge(&patch)).await.expect("patch pods/status");
    let annotation = |p: &Pod| p.metadata.annotations.as_ref().and_then(|a| a.get(REDIRECTION).cloned());
    assert_eq!(annotation(&patched).as_deref(), Some("enabled"), "the patch response carries the annotation");
    let fetched = pods.get("web").await.expect("get the pod");
    assert_eq!(annotation(&fetched).as_deref(), Some("enabled"), "a later get sees the annotation");
    assert_eq!(
        fetched.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("node-a"),
        "a status patch cannot change the spec"
    );
    eventually("the watcher saw the annotated pod", WAIT, || async {
        seen.contains("apply web {} redirection=enabled")
    })
    .await;

    let remove = json!({"metadata": {"annotations": {REDIRECTION: null}}});
    let strategic =
        pods.patch_status("web", &PatchParams::default(), &Patch::Strategic(&remove)).await.expect("strategic patch");
    assert_eq!(annotation(&strategic), None, "a strategic merge patch with null removes the annotation");

    let recorded = server.patches();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert_eq!(recorded[0].subresource.as_deref(), Some("status"));
    assert_eq!((recorded[0].format, recorded[1].format), (PatchFormat::Merge, PatchFormat::Strategic));
    assert_eq!(recorded[0].body, patch);
    assert_eq!(recorded[0].field_manager.as_deref(), Some("ztunnel"));
}

#[tokio::test]
async fn a_patch_naming_a_stale_resource_version_is_a_conflict() {
    let (_dir, server) = server().await;
    let created = server.create_pod(pod("apps", "web", "node-a", "10.1.0.1")).unwrap();
    let stale = created.metadata.resource_version.clone().unwrap();
    server.set_pod_labels("apps", "web", &[("app", Some("web"))]).unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client().await, "apps");
    let patch = json!({"metadata": {"resourceVersion": stale, "annotations": {REDIRECTION: "enabled"}}});
    match pods.patch_status("web", &PatchParams::default(), &Patch::Merge(&patch)).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"), "{status:?}")
        }
        other => panic!("expected 409 Conflict for a stale resourceVersion, got {other:?}"),
    }
    let pod = server.pod("apps", "web").unwrap();
    assert_eq!(pod.metadata.annotations, None, "a refused patch changes nothing");
    assert!(server.patches().is_empty(), "only accepted patches are recorded: {:?}", server.patches());
}

#[tokio::test]
async fn a_patch_of_the_pod_cannot_change_its_status() {
    let (_dir, server) = server().await;
    server.create_pod(pod("apps", "web", "node-a", "10.1.0.1")).unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client().await, "apps");
    let patch = json!({"metadata": {"labels": {"app": "web"}}, "status": {"podIP": "10.9.9.9"}});
    let patched = pods.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("patch the pod");
    assert_eq!(patched.metadata.labels.unwrap().get("app").map(String::as_str), Some("web"), "the labels changed");
    assert_eq!(
        patched.status.and_then(|s| s.pod_ip).as_deref(),
        Some("10.1.0.1"),
        "status changes only through pods/status"
    );
    assert_eq!(server.patches()[0].subresource, None, "recorded as a patch of the pod itself");
}
