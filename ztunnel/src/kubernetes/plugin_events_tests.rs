use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;

use super::*;
use crate::drain;

/// Records the events and answers as told; "enrolls" by recording before answering.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<PodAdded>>,
    refuse: bool,
}

impl PodAddedHandler for Recorder {
    async fn pod_added(&self, added: PodAdded) -> Answer {
        let pod = format!("{}/{}", added.pod_namespace, added.pod_name);
        self.seen.lock().unwrap().push(added);
        if self.refuse { Answer::failed(format!("pod {pod}: no workload")) } else { Answer::captured() }
    }
}

fn added() -> PodAdded {
    PodAdded {
        pod_uid: "u-1".into(),
        pod_name: "web-0".into(),
        pod_namespace: "shop".into(),
        netns: "/var/run/netns/cni-1".into(),
        container_id: "c1".into(),
        ips: vec!["10.244.1.5".parse().unwrap()],
    }
}

#[tokio::test]
async fn answers_once_the_handler_has_enrolled_over_a_private_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/pluginevent.sock");
    let listener = bind(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    let (trigger, watch) = drain::new();
    let handler = Arc::new(Recorder::default());
    let server = tokio::spawn(serve(listener, handler.clone(), watch));
    let answer = send_event(&path, &added()).await.unwrap();
    assert_eq!(answer, Answer::captured());
    assert_eq!(*handler.seen.lock().unwrap(), vec![added()], "the handler ran before the answer");

    let refusing = Arc::new(Recorder { refuse: true, ..Recorder::default() });
    let (a, b) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(async move { handle(b, &*refusing).await });
    let (mut read, mut write) = tokio::io::split(a);
    write.write_all(&[serde_json::to_vec(&added()).unwrap(), b"\n".to_vec()].concat()).await.unwrap();
    let mut text = String::new();
    read.read_to_string(&mut text).await.unwrap();
    assert_eq!(text, "{\"ok\":false,\"error\":\"pod shop/web-0: no workload\"}\n");
    served.await.unwrap().unwrap();
    drop(trigger);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

async fn exchange(request: Vec<u8>) -> (String, Result<(), PluginEventError>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let handler = Recorder::default();
    let served = tokio::spawn(async move { handle(b, &handler).await });
    let (mut read, mut write) = tokio::io::split(a);
    write.write_all(&request).await.unwrap();
    let mut text = String::new();
    read.read_to_string(&mut text).await.unwrap();
    (text, served.await.unwrap())
}

#[tokio::test]
async fn bad_requests_get_an_error_naming_the_problem() {
    let (text, result) = exchange(b"{\"podUid\":1}\n".to_vec()).await;
    assert!(text.starts_with("{\"ok\":false,\"error\":\"bad plugin event:"), "{text}");
    assert!(result.is_ok());
    let (text, result) = exchange(vec![b'x'; MAX_REQUEST_LINE + 10]).await;
    assert!(text.contains("longer than"), "{text}");
    assert!(matches!(result, Err(PluginEventError::LineTooLong)), "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn a_trickling_plugin_is_cut_off() {
    let (a, b) = tokio::io::duplex(1024);
    let handler = Recorder::default();
    let served = tokio::spawn(async move { handle(b, &handler).await });
    let (mut read, mut write) = tokio::io::split(a);
    write.write_all(b"{\"podUid\":").await.unwrap();
    let mut text = String::new();
    read.read_to_string(&mut text).await.unwrap();
    assert!(text.contains("not complete within"), "{text}");
    assert!(matches!(served.await.unwrap(), Err(PluginEventError::LineTimeout)));
}
