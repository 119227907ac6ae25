//! The test Kubernetes API server driven by real kube-rs clients: lists with selectors,
//! `watcher` and `reflector` through changes, compaction (`410 Gone` and a relist), an
//! outage and restart, bookmarks, and `pods/status` patches. Loopback only; each test has
//! its own server, port and directory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use serde_json::json;
use ztunnel_tests::kube_api::{KubeApiServer, PatchFormat, namespace, pod};
use ztunnel_tests::wait::eventually;

const WAIT: Duration = Duration::from_secs(20);
const REDIRECTION: &str = "ambient.istio.io/redirection";

async fn server() -> (tempfile::TempDir, KubeApiServer) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = KubeApiServer::start(dir.path()).await;
    server
        .create_namespace(namespace("apps", &[("istio.io/dataplane-mode", "ambient")]))
        .expect("create namespace apps");
    (dir, server)
}

/// What a kube-rs watcher reported, one line per event, in order.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn contains(&self, line: &str) -> bool {
        self.lines().iter().any(|l| l == line)
    }

    /// Runs `stream` in the background, describing each item.
    fn follow(
        &self,
        stream: impl futures_util::Stream<Item = Result<Event<Pod>, watcher::Error>> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let seen = self.0.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                seen.lock().unwrap().push(describe(item));
            }
        })
    }
}

fn describe(item: Result<Event<Pod>, watcher::Error>) -> String {
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let labels = |p: &Pod| format!("{:?}", p.metadata.labels.clone().unwrap_or_default());
    match item {
        Ok(Event::Init) => "init".into(),
        Ok(Event::InitApply(p)) => format!("init-apply {}", name(&p)),
        Ok(Event::InitDone) => "init-done".into(),
        Ok(Event::Apply(p)) => {
            let redirection = p.metadata.annotations.as_ref().and_then(|a| a.get(REDIRECTION));
            let note = redirection.map(|v| format!(" redirection={v}")).unwrap_or_default();
            format!("apply {} {}{note}", name(&p), labels(&p))
        }
        Ok(Event::Delete(p)) => format!("delete {}", name(&p)),
        Err(watcher::Error::WatchError(status)) => format!("error {}", status.code),
        Err(_) => "error".into(),
    }
}

fn names(store: &Store<Pod>) -> Vec<String> {
    let mut names: Vec<String> = store.state().iter().filter_map(|p| p.metadata.name.clone()).collect();
    names.sort();
    names
}

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
async fn a_wrong_token_is_refused() {
    let (_dir, server) = server().await;
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig_path()).expect("read kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("config");
    config.auth_info.token = Some("not-the-token".to_string().into());
    let pods: Api<Pod> = Api::all(kube::Client::try_from(config).expect("client"));
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 401, "{status:?}"),
        other => panic!("expected 401 Unauthorized, got {other:?}"),
    }
}

/// Run by [`kubeconfig_env_points_kube_rs_at_the_server`] in a child process whose
/// environment names the kubeconfig; not on its own.
#[tokio::test]
#[ignore = "run as a child process with KUBECONFIG set"]
async fn kubeconfig_env_child() {
    let expected = std::env::var("KUBE_API_EXPECT_POD").expect("KUBE_API_EXPECT_POD names the pod to find");
    let client = kube::Client::try_default().await.expect("a client from the environment's kubeconfig");
    let pods: Api<Pod> = Api::all(client);
    let listed = pods.list(&ListParams::default()).await.expect("list pods");
    assert!(listed.items.iter().any(|p| p.metadata.name.as_deref() == Some(expected.as_str())), "{:?}", listed.items);
}

#[tokio::test]
async fn kubeconfig_env_points_kube_rs_at_the_server() {
    let (dir, server) = server().await;
    server.create_pod(pod("apps", "found-by-env", "node-a", "10.1.0.1")).unwrap();
    let copy = dir.path().join("copied-kubeconfig");
    server.kubeconfig(&copy);
    let output = tokio::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "kubeconfig_env_child", "--ignored", "--nocapture"])
        .env("KUBECONFIG", &copy)
        .env("KUBE_API_EXPECT_POD", "found-by-env")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, output).await.expect("the child finished in time").expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child listed pods through KUBECONFIG: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
