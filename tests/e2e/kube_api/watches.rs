//! kube-rs `watcher`, `reflector` and raw watches: event order, selections, compaction and
//! `410 Gone`, an outage and restart, bookmarks, streaming lists, timeouts.

use super::*;

#[tokio::test]
async fn watcher_sees_added_modified_deleted_in_order() {
    let (_dir, server) = server().await;
    server.create_pod(pod("apps", "early", "node-a", "10.1.0.1")).unwrap();
    let pods: Api<Pod> = Api::all(server.client().await);
    let seen = Seen::default();
    let _task =
        seen.follow(watch_stream(pods, watcher::Config::default().fields("spec.nodeName=node-a")).default_backoff());
    eventually("the watcher finished its initial list", WAIT, || async { seen.contains("init-done") }).await;

    server.create_pod(pod("apps", "web", "node-a", "10.1.0.2")).unwrap();
    server.create_pod(pod("apps", "elsewhere", "node-b", "10.1.0.3")).unwrap();
    server.set_pod_labels("apps", "web", &[("app", Some("web"))]).unwrap();
    server.delete_pod("apps", "web").unwrap();
    eventually("the watcher saw the delete", WAIT, || async { seen.contains("delete web") }).await;

    let lines = seen.lines();
    let after_init: Vec<&str> = lines.iter().skip_while(|l| *l != "init-done").skip(1).map(String::as_str).collect();
    assert_eq!(after_init, ["apply web {}", "apply web {\"app\": \"web\"}", "delete web"], "all lines: {lines:?}");
    assert!(lines.contains(&"init-apply early".to_string()), "the initial list had the early pod: {lines:?}");
}

#[tokio::test]
async fn a_label_selected_watch_sees_a_pod_leave_as_a_delete() {
    let (_dir, server) = server().await;
    server.create_pod(pod("apps", "web", "node-a", "10.1.0.1")).unwrap();
    server.set_pod_labels("apps", "web", &[("istio.io/dataplane-mode", Some("ambient"))]).unwrap();
    let pods: Api<Pod> = Api::all(server.client().await);
    let seen = Seen::default();
    let config = watcher::Config::default().labels("istio.io/dataplane-mode=ambient");
    let _task = seen.follow(watch_stream(pods, config).default_backoff());
    eventually("the watcher listed the labelled pod", WAIT, || async { seen.contains("init-apply web") }).await;
    server.set_pod_labels("apps", "web", &[("istio.io/dataplane-mode", Some("none"))]).unwrap();
    eventually("the relabelled pod left the selection", WAIT, || async { seen.contains("delete web") }).await;
    server.set_pod_labels("apps", "web", &[("istio.io/dataplane-mode", Some("ambient"))]).unwrap();
    let back = "apply web {\"istio.io/dataplane-mode\": \"ambient\"}";
    eventually("the pod came back into the selection", WAIT, || async { seen.contains(back) }).await;
}

#[tokio::test]
async fn watcher_relists_after_compaction_and_loses_nothing() {
    let (_dir, server) = server().await;
    for i in 0..3 {
        server.create_pod(pod("apps", &format!("p{i}"), "node-a", &format!("10.1.0.{i}"))).unwrap();
    }
    let pods: Api<Pod> = Api::all(server.client().await);
    let (reader, writer) = reflector::store();
    let seen = Seen::default();
    let _task =
        seen.follow(reflector::reflector(writer, watch_stream(pods, watcher::Config::default())).default_backoff());
    eventually("the reflector synced", WAIT, || async { names(&reader) == ["p0", "p1", "p2"] }).await;

    server.stop().await;
    server.delete_pod("apps", "p0").unwrap();
    server.set_pod_labels("apps", "p1", &[("changed", Some("yes"))]).unwrap();
    server.create_pod(pod("apps", "p3", "node-a", "10.1.0.3")).unwrap();
    server.compact();
    server.restart().await;

    eventually("the reflector converged after the relist", WAIT, || async {
        names(&reader) == ["p1", "p2", "p3"]
            && reader.state().iter().any(|p| p.metadata.labels.as_ref().is_some_and(|l| l.contains_key("changed")))
    })
    .await;
    assert!(seen.contains("error 410"), "the watcher was told 410 Gone: {:?}", seen.lines());
    let requests = server.requests();
    assert!(
        requests.iter().any(|r| r.query.contains("watch=true") && r.code == 410),
        "the server refused the stale watch: {requests:?}"
    );
    let inits = seen.lines().iter().filter(|l| *l == "init").count();
    assert_eq!(inits, 2, "one initial list and one relist: {:?}", seen.lines());
}

#[tokio::test]
async fn reflector_store_converges_with_the_server() {
    let (_dir, server) = server().await;
    let pods: Api<Pod> = Api::all(server.client().await);
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watch_stream(pods, watcher::Config::default().page_size(7)));
    let _task = Seen::default().follow(stream.default_backoff());
    tokio::time::timeout(WAIT, reader.wait_until_ready())
        .await
        .expect("reflector ready in time")
        .expect("writer alive");

    for i in 0..40 {
        server.create_pod(pod("apps", &format!("p{i:02}"), "node-a", &format!("10.1.1.{i}"))).unwrap();
        if i % 3 == 0 {
            server.set_pod_labels("apps", &format!("p{i:02}"), &[("round", Some(&i.to_string()))]).unwrap();
        }
        if i % 4 == 1 {
            server.delete_pod("apps", &format!("p{:02}", i - 1)).unwrap();
        }
    }
    let versions = |store: &Store<Pod>| -> BTreeMap<String, String> {
        store
            .state()
            .iter()
            .map(|p| (p.metadata.name.clone().unwrap(), p.metadata.resource_version.clone().unwrap()))
            .collect()
    };
    let want: BTreeMap<String, String> = (0..40)
        .filter_map(|i| server.pod("apps", &format!("p{i:02}")))
        .map(|p| (p.metadata.name.clone().unwrap(), p.metadata.resource_version.clone().unwrap()))
        .collect();
    assert_eq!(want.len(), 30, "ten of forty pods were deleted");
    eventually("the reflector holds every pod at its latest version", WAIT, || async { versions(&reader) == want })
        .await;
}

#[tokio::test]
async fn watch_resumes_after_an_outage_and_sees_changes_made_meanwhile() {
    let (_dir, server) = server().await;
    server.create_pod(pod("apps", "stays", "node-a", "10.1.0.1")).unwrap();
    server.create_pod(pod("apps", "goes", "node-a", "10.1.0.2")).unwrap();
    let pods: Api<Pod> = Api::all(server.client().await);
    let seen = Seen::default();
    let _task = seen.follow(watch_stream(pods, watcher::Config::default()).default_backoff());
    eventually("the watcher synced", WAIT, || async { seen.contains("init-done") }).await;

    server.stop().await;
    let refused = tokio::net::TcpStream::connect(server.addr()).await;
    assert!(refused.is_err(), "a stopped server refuses connections");
    server.delete_pod("apps", "goes").unwrap();
    server.create_pod(pod("apps", "new", "node-a", "10.1.0.3")).unwrap();
    server.restart().await;

    eventually("the resumed watch delivered both changes", WAIT, || async {
        seen.contains("delete goes") && seen.contains("apply new {}")
    })
    .await;
    let lines = seen.lines();
    assert_eq!(lines.iter().filter(|l| *l == "init").count(), 1, "resumed from its version, no relist: {lines:?}");
}

#[tokio::test]
async fn bookmarks_let_a_selective_watch_resume_after_compaction() {
    let (_dir, server) = server().await;
    server.create_pod(pod("apps", "mine", "node-a", "10.1.0.1")).unwrap();
    let pods: Api<Pod> = Api::all(server.client().await);
    let start = server.resource_version().to_string();
    let params = WatchParams::default().fields("spec.nodeName=node-a");
    let mut stream = pods.watch(&params, &start).await.expect("watch node-a").boxed();

    // Changes on another node advance the store but send this watch nothing until a bookmark.
    for i in 0..5 {
        server.create_pod(pod("apps", &format!("theirs{i}"), "node-b", "10.1.0.9")).unwrap();
    }
    server.bookmark_now();
    let event = tokio::time::timeout(WAIT, stream.try_next()).await.expect("an event in time").expect("watch ok");
    let bookmark = match event {
        Some(WatchEvent::Bookmark(b)) => b.metadata.resource_version,
        other => panic!("expected a bookmark, got {other:?}"),
    };
    assert_eq!(bookmark, server.resource_version().to_string(), "the bookmark carries the newest version");
    server.compact();
    server.close_watches();

    let mut from_bookmark = pods.watch(&params, &bookmark).await.expect("watch from the bookmark").boxed();
    let mut stale = pods.watch(&params, &start).await.expect("watch from before compaction").boxed();
    let gone = tokio::time::timeout(WAIT, stale.try_next()).await.expect("an event in time").expect("stream ok");
    match gone {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"), "{status:?}")
        }
        other => panic!("expected 410 Gone from a compacted version, got {other:?}"),
    }
    server.set_pod_labels("apps", "mine", &[("x", Some("y"))]).unwrap();
    let next =
        tokio::time::timeout(WAIT, from_bookmark.try_next()).await.expect("an event in time").expect("stream ok");
    assert!(
        matches!(next, Some(WatchEvent::Modified(ref p)) if p.metadata.name.as_deref() == Some("mine")),
        "{next:?}"
    );
}

#[tokio::test]
async fn streaming_lists_end_with_the_initial_events_bookmark() {
    let (_dir, server) = server().await;
    server.create_pod(pod("apps", "web", "node-a", "10.1.0.1")).unwrap();
    let pods: Api<Pod> = Api::all(server.client().await);
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watch_stream(pods, watcher::Config::default().streaming_lists()));
    let seen = Seen::default();
    let _task = seen.follow(stream.default_backoff());
    tokio::time::timeout(WAIT, reader.wait_until_ready()).await.expect("ready in time").expect("writer alive");
    assert_eq!(names(&reader), ["web"]);
    server.create_pod(pod("apps", "later", "node-a", "10.1.0.2")).unwrap();
    eventually("the streaming watch went on after its initial events", WAIT, || async {
        names(&reader) == ["later", "web"]
    })
    .await;
    let requests = server.requests();
    assert!(
        requests.iter().all(|r| r.query.contains("watch=true"))
            && requests.iter().any(|r| r.query.contains("sendInitialEvents=true")),
        "a streaming list needs no list request: {requests:?}"
    );
}

#[tokio::test]
async fn a_watch_ends_at_its_timeout_with_a_bookmark() {
    let (_dir, server) = server().await;
    let pods: Api<Pod> = Api::all(server.client().await);
    let params = WatchParams::default().timeout(1);
    let rv = server.resource_version().to_string();
    let events: Vec<_> = tokio::time::timeout(WAIT, pods.watch(&params, &rv).await.expect("watch").collect())
        .await
        .expect("the server ended the watch at its timeout");
    assert!(
        matches!(events.as_slice(), [Ok(WatchEvent::Bookmark(b))] if b.metadata.resource_version == rv),
        "one closing bookmark at the current version: {events:?}"
    );
}

#[tokio::test]
async fn a_namespace_watcher_sees_labels_change() {
    let (_dir, server) = server().await;
    let namespaces: Api<Namespace> = Api::all(server.client().await);
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watch_stream(namespaces, watcher::Config::default()));
    let drive = tokio::spawn(stream.default_backoff().for_each(|_| async {}));
    let mode = |name: &str| {
        let ns = reader.state().into_iter().find(|n| n.metadata.name.as_deref() == Some(name));
        ns.and_then(|n| n.metadata.labels.as_ref().and_then(|l| l.get("istio.io/dataplane-mode").cloned()))
    };
    eventually("the reflector listed apps as ambient", WAIT, || async { mode("apps").as_deref() == Some("ambient") })
        .await;
    server.set_namespace_labels("apps", &[("istio.io/dataplane-mode", None)]).unwrap();
    server.create_namespace(namespace("late", &[("istio.io/dataplane-mode", "ambient")])).unwrap();
    eventually("the label removal and the new namespace arrived", WAIT, || async {
        mode("apps").is_none() && mode("late").as_deref() == Some("ambient")
    })
    .await;
    server.delete_namespace("late").unwrap();
    eventually("the deleted namespace left the store", WAIT, || async { reader.state().len() == 1 }).await;
    drive.abort();
}
