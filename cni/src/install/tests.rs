//! Install and uninstall against temporary host directories, through the command line.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::*;

struct Host {
    _root: tempfile::TempDir,
    net: PathBuf,
    bin: PathBuf,
    sa: PathBuf,
    binary: PathBuf,
}

fn host() -> Host {
    let root = tempfile::tempdir().unwrap();
    let (net, bin, sa) = (root.path().join("net.d"), root.path().join("bin"), root.path().join("sa"));
    for dir in [&net, &bin, &sa] {
        std::fs::create_dir(dir).unwrap();
    }
    std::fs::write(sa.join("token"), "service-account-token\n").unwrap();
    std::fs::write(sa.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let binary = root.path().join("ztunnel-cni-build");
    std::fs::write(&binary, "#!/bin/sh\n").unwrap();
    Host { _root: root, net, bin, sa, binary }
}

fn install_args(host: &Host, extra: &[&str]) -> InstallArgs {
    let mut argv: Vec<String> = ["ztunnel-cni", "install"].map(String::from).to_vec();
    for (flag, value) in [
        ("--mounted-cni-net-dir", &host.net),
        ("--mounted-cni-bin-dir", &host.bin),
        ("--service-account-dir", &host.sa),
        ("--plugin-binary", &host.binary),
    ] {
        argv.push(flag.into());
        argv.push(value.display().to_string());
    }
    argv.extend(["--kubernetes-service-host", "10.96.0.1", "--kubernetes-service-port", "443"].map(String::from));
    argv.extend(extra.iter().map(|s| s.to_string()));
    match Cli::try_parse_from(argv).unwrap().command {
        CliCommand::Install(args) => *args,
        other => panic!("parsed {other:?}"),
    }
}

fn bridge_conflist() -> Value {
    json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]})
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn install_twice_then_uninstall() {
    let host = host();
    let conflist = host.net.join("10-podnet.conflist");
    std::fs::write(&conflist, serde_json::to_vec_pretty(&bridge_conflist()).unwrap()).unwrap();
    let args = install_args(&host, &["--plugin-log-level", "debug"]);

    let changes = reconcile(&args).unwrap();
    assert_eq!(changes.len(), 3, "binary, kubeconfig, chain: {changes:?}");
    let installed = read_json(&conflist);
    let plugins = installed["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 3);
    assert_eq!(&plugins[..2], &bridge_conflist()["plugins"].as_array().unwrap()[..], "other plugins untouched");
    assert_eq!(plugins[2]["type"], PLUGIN_TYPE);
    assert_eq!(plugins[2]["log_level"], "debug");
    assert_eq!(plugins[2]["kubernetes"]["kubeconfig"], "/etc/cni/net.d/ZZZ-ztunnel-cni-kubeconfig");
    assert_eq!(plugins[2]["kubernetes"]["exclude_namespaces"], json!(["kube-system", "istio-system"]));
    let kubeconfig = host.net.join("ZZZ-ztunnel-cni-kubeconfig");
    assert_eq!(std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&kubeconfig).unwrap().contains("server: https://10.96.0.1:443"));
    assert_eq!(std::fs::read(host.bin.join(PLUGIN_TYPE)).unwrap(), b"#!/bin/sh\n");

    let bytes = std::fs::read(&conflist).unwrap();
    assert_eq!(reconcile(&args).unwrap(), Vec::<String>::new(), "a second install changes nothing");
    assert_eq!(std::fs::read(&conflist).unwrap(), bytes);

    let changes = uninstall(&args.dirs).unwrap();
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert_eq!(read_json(&conflist), bridge_conflist(), "the original config, semantically");
    let left: Vec<_> = std::fs::read_dir(&host.net).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["10-podnet.conflist"]);
    assert!(!host.bin.join(PLUGIN_TYPE).exists());
    assert_eq!(uninstall(&args.dirs).unwrap(), Vec::<String>::new(), "uninstall is idempotent");
}

#[test]
fn a_rewritten_conflist_is_chained_again() {
    let host = host();
    let conflist = host.net.join("10-podnet.conflist");
    std::fs::write(&conflist, serde_json::to_vec(&bridge_conflist()).unwrap()).unwrap();
    let args = install_args(&host, &[]);
    reconcile(&args).unwrap();
    // The primary CNI rewrites its config (e.g. on its own restart), dropping our entry.
    std::fs::write(&conflist, serde_json::to_vec(&bridge_conflist()).unwrap()).unwrap();
    let changes = reconcile(&args).unwrap();
    assert_eq!(changes, [format!("chained {PLUGIN_TYPE} last into {}", conflist.display())]);
    assert_eq!(read_json(&conflist)["plugins"].as_array().unwrap().len(), 3);
}

#[test]
fn a_single_conf_is_converted() {
    let host = host();
    let single = json!({"cniVersion": "0.3.1", "name": "net", "type": "bridge", "bridge": "cni0"});
    std::fs::write(host.net.join("10-net.conf"), serde_json::to_vec(&single).unwrap()).unwrap();
    reconcile(&install_args(&host, &[])).unwrap();
    assert!(!host.net.join("10-net.conf").exists());
    let list = read_json(&host.net.join("10-net.conflist"));
    assert_eq!((&list["cniVersion"], &list["name"]), (&json!("0.3.1"), &json!("net")));
    assert_eq!(list["plugins"][0], single);
    assert_eq!(list["plugins"][1]["type"], PLUGIN_TYPE);
}

#[test]
fn errors_name_what_is_missing() {
    let host = host();
    let err = reconcile(&install_args(&host, &[])).unwrap_err().to_string();
    assert!(err.starts_with(&format!("no usable CNI network config in {}", host.net.display())), "{err}");

    std::fs::write(host.net.join("10-podnet.conflist"), serde_json::to_vec(&bridge_conflist()).unwrap()).unwrap();
    let mut args = install_args(&host, &[]);
    args.kubernetes_service_host = None;
    let err = reconcile(&args).unwrap_err().to_string();
    assert_eq!(err, "KUBERNETES_SERVICE_HOST not set (is this running in a pod? or pass --kubernetes-service-host)");

    std::fs::remove_file(host.sa.join("token")).unwrap();
    let err = reconcile(&install_args(&host, &[])).unwrap_err().to_string();
    assert!(err.starts_with(&format!("service account: reading {}/token", host.sa.display())), "{err}");
}
