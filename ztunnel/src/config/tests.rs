//! Command line parsing: durations, addresses, Istio environment names and source rules.

use super::*;

#[test]
fn durations() {
    for (text, want) in [
        ("500ms", Duration::from_millis(500)),
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("24h", Duration::from_secs(86400)),
        ("1h30m", Duration::from_secs(5400)),
        ("7", Duration::from_secs(7)),
    ] {
        assert_eq!(parse_duration(text), Ok(want), "{text}");
    }
    for bad in ["", "h", "5x", "1.5h", "-3s", "s5"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} must be rejected");
    }
}

#[test]
fn marks_and_addresses() {
    assert_eq!(parse_u32("0x539"), Ok(0x539));
    assert_eq!(parse_u32("1337"), Ok(1337));
    assert!(parse_u32("zz").is_err());
    assert_eq!(parse_optional_addr("off"), Ok(OptionalAddr(None)));
    assert!(parse_optional_addr("localhost:1").is_err());
}

#[test]
fn cli_uses_istio_environment_names_and_defaults() {
    let cli = Cli::try_parse_from(["ztunnel", "proxy", "--config", "/c.yaml", "--node", "n1"]).unwrap();
    let Command::Proxy(args) = cli.command else { panic!("expected proxy command") };
    let config = ProxyConfig::try_from(*args).unwrap();
    assert_eq!(config.trust_domain, "cluster.local");
    assert_eq!(config.cert_ttl, Duration::from_secs(86400));
    assert_eq!(config.pool_max_streams, 100);
    assert_eq!(config.socks5_addr, None, "SOCKS5 is a development entry, off unless asked for");
    assert_eq!(config.socket_mark, Some(0x539));
    assert_eq!(config.ca, CaSource::StateDir("/var/lib/ztunnel".into()));
    let err =
        Cli::try_parse_from(["ztunnel", "proxy", "--config", "/c", "--node", "n", "--ca-cert", "/x"]).unwrap_err();
    assert!(err.to_string().contains("--ca-key"), "ca-cert without ca-key must be refused: {err}");
}

#[test]
fn socks5_listens_only_where_asked() {
    let parse = |extra: &[&str]| {
        let base = ["ztunnel", "proxy", "--config", "/c.yaml", "--node", "n1"];
        let cli = Cli::try_parse_from(base.iter().chain(extra)).unwrap();
        let Command::Proxy(args) = cli.command else { panic!("expected proxy command") };
        ProxyConfig::try_from(*args).unwrap().socks5_addr
    };
    assert_eq!(parse(&[]), None);
    assert_eq!(parse(&["--socks5-addr", "off"]), None);
    assert_eq!(parse(&["--socks5-addr", "127.0.0.1:15080"]), Some("127.0.0.1:15080".parse().unwrap()));
}

#[test]
fn istiod_sources_follow_istio_rules() {
    let parse = |extra: &[&str]| {
        let base = ["ztunnel", "proxy", "--node", "n1"];
        let cli = Cli::try_parse_from(base.iter().chain(extra)).unwrap();
        let Command::Proxy(args) = cli.command else { panic!("expected proxy command") };
        ProxyConfig::try_from(*args)
    };
    let xds = parse(&["--xds-address", "https://istiod.istio-system.svc:15012"]).unwrap();
    assert_eq!(xds.config_file, None);
    assert_eq!(xds.xds.as_ref().map(|x| x.address.as_str()), Some("https://istiod.istio-system.svc:15012"));
    let CaSource::Istiod(ca) = &xds.ca else { panic!("XDS_ADDRESS alone must select istiod's CA: {:?}", xds.ca) };
    assert_eq!(ca.address, "https://istiod.istio-system.svc:15012", "CA_ADDRESS defaults to XDS_ADDRESS");
    assert_eq!(xds.istiod.token_file, PathBuf::from("/var/run/secrets/tokens/istio-token"));

    let local_with_istiod_ca = parse(&["--config", "/c.yaml", "--ca-address", "https://ca:15012"]).unwrap();
    assert!(matches!(local_with_istiod_ca.ca, CaSource::Istiod(_)), "a local file may use istiod's CA");

    let both = parse(&["--config", "/c.yaml", "--xds-address", "https://istiod:15012"]).unwrap_err();
    assert!(matches!(both, ConfigError::BothSources { .. }), "{both}");
    let msg = both.to_string();
    assert!(msg.contains("LOCAL_XDS_PATH") && msg.contains("XDS_ADDRESS") && msg.contains("/c.yaml"), "{msg}");
    assert_eq!(parse(&[]).unwrap_err(), ConfigError::NoSource);
}

#[test]
fn local_defaults_bind_ephemeral_loopback_ports() {
    let config = ProxyConfig::local("/c.yaml".into(), "n1", "/tmp/s".into());
    assert_eq!(config.node, "n1");
    assert_eq!(config.admin_addr.port(), 0);
    assert_eq!(config.socks5_addr, None, "no SOCKS5 listener unless asked for");
    assert_eq!(config.ca, CaSource::StateDir("/tmp/s".into()));
}

/// `ztunnel proxy` with `extra` arguments, as the daemon would build its config.
fn proxy_config(extra: &[&str]) -> Result<ProxyConfig, ConfigError> {
    let base = ["ztunnel", "proxy", "--config", "/c.yaml", "--node", "n1"];
    let cli = Cli::try_parse_from(base.iter().chain(extra)).unwrap();
    let Command::Proxy(args) = cli.command else { panic!("expected proxy command") };
    ProxyConfig::try_from(*args)
}

#[test]
fn a_socket_mark_that_clashes_with_the_reply_mark_is_refused_naming_both() {
    for mark in ["0x111", "0x7111"] {
        let err = proxy_config(&["--socket-mark", mark]).expect_err("a clashing mark must be refused").to_string();
        for part in ["--socket-mark", "reply mark 0x111", "mask 0xfff"] {
            assert!(err.contains(part), "the error for {mark} must name {part:?}: {err}");
        }
    }
    assert_eq!(proxy_config(&["--socket-mark", "0x112"]).unwrap().socket_mark, Some(0x112));
}

#[test]
fn capture_needs_a_socket_mark_and_takes_a_capture_cgroup() {
    let err = proxy_config(&["--capture", "--socket-mark", "0"]).expect_err("capture without a mark").to_string();
    assert!(err.contains("--capture needs --socket-mark"), "{err}");
    assert_eq!(proxy_config(&["--socket-mark", "0"]).unwrap().socket_mark, None, "without capture 0 is allowed");
    let capture = proxy_config(&["--capture"]).unwrap().capture.expect("capture on");
    assert_eq!(capture.capture_cgroup, None, "default: the cgroup2 root");
    let capture = proxy_config(&["--capture", "--capture-cgroup", "/kubepods"]).unwrap().capture.unwrap();
    assert_eq!(capture.capture_cgroup, Some("/kubepods".into()));
}

#[test]
fn kubernetes_agent_takes_istio_chart_arguments_and_needs_capture() {
    let parse = |extra: &[&str]| {
        let base = ["ztunnel", "proxy", "ztunnel", "--config", "/c.yaml", "--node", "n1"];
        let cli = Cli::try_parse_from(base.iter().chain(extra)).unwrap();
        let Command::Proxy(args) = cli.command else { panic!("expected proxy command") };
        ProxyConfig::try_from(*args)
    };
    assert_eq!(parse(&[]).unwrap().kubernetes, None, "off unless asked for");
    assert_eq!(parse(&["--kubernetes"]).unwrap_err(), ConfigError::KubernetesWithoutCapture);
    let k = parse(&["--kubernetes", "--capture", "--kubeconfig", "/k"]).unwrap().kubernetes.unwrap();
    assert_eq!(k.kubeconfig, Some(PathBuf::from("/k")));
    assert_eq!(k.proc_root, PathBuf::from("/proc"));
    assert_eq!(k.plugin_event_socket, PathBuf::from("/var/run/ztunnel/pluginevent.sock"));
    assert_eq!(k.scope.excluded_namespaces, vec!["kube-system".to_string(), "istio-system".to_string()]);
    assert_eq!(k.cluster_id, "Kubernetes");
    let k = parse(&[
        "--kubernetes",
        "--capture",
        "--system-namespace",
        "mesh",
        "--excluded-namespaces",
        "a,b",
        "--cluster-id",
        "c1",
        "--proc-root",
        "/host/proc",
    ])
    .unwrap()
    .kubernetes
    .unwrap();
    assert_eq!(k.scope.system_namespace, "mesh");
    assert_eq!(k.scope.excluded_namespaces, vec!["a".to_string(), "b".to_string()]);
    assert_eq!((k.cluster_id.as_str(), k.proc_root.to_str()), ("c1", Some("/host/proc")));
    let wrong_role = Cli::try_parse_from(["ztunnel", "proxy", "router", "--config", "/c", "--node", "n"]);
    assert!(wrong_role.is_err(), "only the ztunnel role is accepted");
}
