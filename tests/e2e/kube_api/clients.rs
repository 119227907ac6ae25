//! How clients reach the server: the kubeconfig from `KUBECONFIG`, and the token it checks.

use super::*;

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
        .args(["--exact", "clients::kubeconfig_env_child", "--ignored", "--nocapture"])
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
