//! Process configuration: the `ztunnel proxy` command line, with Istio's environment
//! variable names where Istio's ztunnel has the same option. Parsed in one place into plain
//! data ([`ProxyConfig`]); each component receives only its own part.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod istiod;
mod kubernetes;

pub use istiod::{IstiodArgs, IstiodCaSettings, IstiodIdentity, XdsSettings};
pub use kubernetes::{KubernetesArgs, KubernetesConfig};

/// ztunnel: per-node L4 proxy for ambient meshes (HBONE tunnels, SPIFFE identities).
#[derive(Debug, Parser)]
#[command(name = "ztunnel", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy: from a local config file and a local CA, or from istiod.
    Proxy(Box<ProxyArgs>),
    /// Print the version and exit.
    Version,
    /// Enroll a pod in the running daemon's eBPF capture.
    Enroll(EnrollArgs),
    /// Remove a pod from the running daemon's capture.
    Unenroll(UnenrollArgs),
    /// List the pods the running daemon captures.
    Pods(ControlArgs),
}

/// Where the daemon's control socket is.
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct EnrollArgs {
    /// The workload's uid, as in the config (e.g. `cluster1//v1/Pod/default/web`).
    #[arg(long)]
    pub uid: String,
    /// The pod's network namespace (`/var/run/netns/NAME` or `/proc/PID/ns/net`).
    #[arg(long)]
    pub netns: PathBuf,
    /// The pod's addresses, used until the config source has its workload (repeat or
    /// comma-separate).
    #[arg(long, value_delimiter = ',')]
    pub ip: Vec<std::net::IpAddr>,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, Clone, Args)]
pub struct UnenrollArgs {
    #[arg(long)]
    pub uid: String,
    #[command(flatten)]
    pub control: ControlArgs,
}

/// Default path of the daemon's control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/var/run/ztunnel/control.sock";

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// The proxy's role, as Istio's chart passes it (`ztunnel proxy ztunnel`); only `ztunnel`.
    #[arg(value_parser = ["ztunnel"], hide = true)]
    pub role: Option<String>,

    /// Local config (YAML: workloads, services, policies), in the format of Istio ztunnel's
    /// local config file. Watched: valid changes apply live, invalid ones are rejected.
    /// Required unless XDS_ADDRESS is set; the two cannot be combined.
    #[arg(long = "config", env = "LOCAL_XDS_PATH", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub istiod: IstiodArgs,

    #[command(flatten)]
    pub kubernetes: KubernetesArgs,

    /// Name of this node; workloads whose `node` matches are served by this ztunnel.
    #[arg(long, env = "NODE_NAME")]
    pub node: String,

    /// SPIFFE trust domain of the mesh.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// Cluster name reported in baggage and metrics.
    #[arg(long, env = "CLUSTER_ID", default_value = "Kubernetes")]
    pub cluster_id: String,

    /// Network of this node (workload addresses are looked up in it).
    #[arg(long, env = "NETWORK", default_value = "")]
    pub network: String,

    /// Root certificate (PEM) of the local CA. Needs --ca-key. Without both, a root is
    /// generated into --state-dir on first run and reused afterwards.
    #[arg(long, value_name = "PEM", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,

    /// Private key (PEM; EC P-256 or RSA) of the local CA root.
    #[arg(long, value_name = "PEM", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,

    /// Directory for state kept across restarts (the generated CA).
    #[arg(long, default_value = "/var/lib/ztunnel")]
    pub state_dir: PathBuf,

    /// Validity of workload certificates (renewed at half-life), e.g. `24h`, `30m`.
    #[arg(long, env = "SECRET_TTL", default_value = "24h", value_parser = parse_duration)]
    pub cert_ttl: Duration,

    /// SOCKS5 listener for local clients, a development entry: off unless an address is given
    /// (Istio's port is `127.0.0.1:15080`). The client's source address decides its identity.
    #[arg(long, default_value = "off", value_parser = parse_optional_addr)]
    pub socks5_addr: OptionalAddr,

    /// Admin server (/config_dump, /logging, /quitquitquit).
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,

    /// Prometheus metrics (/metrics, /stats/prometheus).
    #[arg(long, default_value = "[::]:15020")]
    pub metrics_addr: SocketAddr,

    /// Readiness (/healthz/ready).
    #[arg(long, default_value = "[::]:15021")]
    pub readiness_addr: SocketAddr,

    /// Streams carried by one pooled HBONE connection before another is opened.
    #[arg(long, env = "POOL_MAX_STREAMS_PER_CONNECTION", default_value_t = 100)]
    pub pool_max_streams: usize,

    /// Pooled HBONE connections with no stream for this long are closed.
    #[arg(long, env = "POOL_UNUSED_RELEASE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub pool_idle_timeout: Duration,

    /// Timeout for dialling upstreams and tunnels.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// On SIGTERM, how long live connections may keep running before they are closed.
    #[arg(long, env = "CONNECTION_TERMINATION_DEADLINE", default_value = "5s", value_parser = parse_duration)]
    pub drain_deadline: Duration,

    /// How often the config file is checked for changes.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub config_poll_interval: Duration,

    /// `SO_MARK` put on every socket ztunnel opens (0 disables; capture needs one, since it
    /// tells ztunnel's sockets inside a pod's network namespace from the pod's).
    #[arg(long, default_value = "0x539", value_parser = parse_u32)]
    pub socket_mark: u32,

    /// Capture enrolled pods' traffic with eBPF (needs root: CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN).
    /// Without it, traffic enters only through SOCKS5 (`--socks5-addr`).
    #[arg(long, env = "ZTUNNEL_CAPTURE")]
    pub capture: bool,

    /// bpffs directory for capture's pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/ztunnel")]
    pub bpf_pin_dir: PathBuf,

    /// With --capture: the cgroup (v2) the capture programs attach at, a parent of every pod's
    /// cgroup; pods are selected by network namespace, so any process in an enrolled pod's
    /// namespace is captured whatever its cgroup. A path under the cgroup2 mount, or relative
    /// to it. Default: the cgroup2 root.
    #[arg(long, env = "ZTUNNEL_CAPTURE_CGROUP")]
    pub capture_cgroup: Option<PathBuf>,

    /// With --capture: the cgroup (v2) of the node's kubelet, whose connections from the host
    /// network namespace reach enrolled pods' applications without ztunnel, so health probes
    /// work under STRICT mTLS (Istio's probe exemption). A path under the cgroup2 mount, or
    /// relative to it; `/` covers every process of the host namespace, as Istio does. Unset:
    /// no exemption.
    #[arg(long, env = "ZTUNNEL_KUBELET_CGROUP")]
    pub kubelet_cgroup: Option<PathBuf>,

    /// Unix socket for `ztunnel enroll` / `unenroll` (with --capture).
    #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,

    /// Log filter (tracing-subscriber syntax), e.g. `info` or `info,hbone=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormatArg,
}

/// An address that may be switched off with `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(OptionalAddr(None));
    }
    s.parse().map(|a| OptionalAddr(Some(a))).map_err(|_| format!("{s:?} is not an ip:port address or `off`"))
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a number (decimal or 0x hex)"))
}

/// Parses durations such as `500ms`, `30s`, `5m`, `24h`, `1h30m`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (examples: 500ms, 30s, 5m, 24h)");
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            _ => return Err(bad()),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    if total.is_zero() && s != "0s" { Err(bad()) } else { Ok(total) }
}

/// Why the command line cannot make a [`ProxyConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "both a local config ({file}, from --config/LOCAL_XDS_PATH) and istiod ({address}, from \
         --xds-address/XDS_ADDRESS) are configured; use one of them: workloads, services and \
         policies come either from the file or from istiod"
    )]
    BothSources { file: String, address: String },
    #[error("no config source: set --config/LOCAL_XDS_PATH (local file) or --xds-address/XDS_ADDRESS (istiod)")]
    NoSource,
    #[error("--ca-cert/--ca-key configure the local CA, but CA_ADDRESS/XDS_ADDRESS select istiod's CA; use one")]
    BothCas,
    #[error(
        "--capture needs --socket-mark: ztunnel's sockets inside a pod's network namespace are told apart from \
         the pod's by their mark (the default is 0x539)"
    )]
    CaptureWithoutSocketMark,
    #[error(
        "--socket-mark {socket_mark:#x} clashes with the reply mark {reply_mark:#x} (mask {mask:#x}) of \
         transparent dials to pod applications; choose a socket mark whose low 12 bits differ"
    )]
    SocketMarkClash { socket_mark: u32, reply_mark: u32, mask: u32 },
    #[error("--kubernetes (ZTUNNEL_KUBERNETES) enrolls pods in capture, so it needs --capture (ZTUNNEL_CAPTURE)")]
    KubernetesWithoutCapture,
}

/// Everything `app` needs, as plain data.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Local config file; `None` when config comes from istiod (`xds`).
    pub config_file: Option<PathBuf>,
    /// istiod's xDS endpoint; `None` in local mode.
    pub xds: Option<XdsSettings>,
    /// How this ztunnel presents itself to istiod (token, node id parts).
    pub istiod: IstiodIdentity,
    pub node: String,
    pub trust_domain: String,
    pub cluster_id: String,
    pub network: String,
    pub ca: CaSource,
    pub cert_ttl: Duration,
    pub socks5_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub readiness_addr: SocketAddr,
    pub pool_max_streams: usize,
    pub pool_idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub drain_deadline: Duration,
    pub config_poll_interval: Duration,
    pub socket_mark: Option<u32>,
    /// Bound on an inbound HBONE peer's HTTP/2 handshake once mTLS is done.
    pub hbone_handshake_timeout: Duration,
    /// eBPF capture, when enabled.
    pub capture: Option<CaptureConfig>,
    /// The Kubernetes node agent, when enabled (always with capture).
    pub kubernetes: Option<KubernetesConfig>,
}

/// Where capture keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    pub pin_dir: PathBuf,
    pub records_dir: PathBuf,
    pub control_socket: PathBuf,
    /// The cgroup the capture programs attach at; `None`: the cgroup2 root.
    pub capture_cgroup: Option<PathBuf>,
    /// The kubelet's cgroup, whose host connections bypass inbound capture (probes).
    pub kubelet_cgroup: Option<PathBuf>,
}

/// Where workload certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// Local CA with its root from files.
    Files { cert: PathBuf, key: PathBuf },
    /// Local CA with its root in (or generated into) a state directory.
    StateDir(PathBuf),
    /// istiod's certificate service.
    Istiod(IstiodCaSettings),
}

impl TryFrom<ProxyArgs> for ProxyConfig {
    type Error = ConfigError;

    fn try_from(a: ProxyArgs) -> Result<ProxyConfig, ConfigError> {
        let capture = a.capture.then(|| CaptureConfig {
            pin_dir: a.bpf_pin_dir.clone(),
            records_dir: a.state_dir.join("capture"),
            control_socket: a.control_socket.clone(),
            capture_cgroup: a.capture_cgroup.clone(),
            kubelet_cgroup: a.kubelet_cgroup.clone(),
        });
        if a.socket_mark != 0 && crate::in_pod::clashes_with_reply_mark(a.socket_mark) {
            return Err(ConfigError::SocketMarkClash {
                socket_mark: a.socket_mark,
                reply_mark: crate::in_pod::REPLY_MARK,
                mask: crate::in_pod::REPLY_MASK,
            });
        }
        if a.capture && a.socket_mark == 0 {
            return Err(ConfigError::CaptureWithoutSocketMark);
        }
        let kubernetes = a.kubernetes.config(&a.cluster_id);
        if kubernetes.is_some() && capture.is_none() {
            return Err(ConfigError::KubernetesWithoutCapture);
        }
        let mut drain_deadline = a.drain_deadline;
        if let Some(grace) = a.kubernetes.termination_grace_period_seconds.filter(|g| *g > 1) {
            drain_deadline = drain_deadline.min(Duration::from_secs(grace - 1));
        }
        let xds = a.istiod.xds();
        match (&a.config, &xds) {
            (Some(file), Some(x)) => {
                return Err(ConfigError::BothSources { file: file.display().to_string(), address: x.address.clone() });
            }
            (None, None) => return Err(ConfigError::NoSource),
            _ => {}
        }
        let ca = match (a.ca_cert, a.ca_key, a.istiod.ca()) {
            (Some(_), Some(_), Some(_)) => return Err(ConfigError::BothCas),
            (Some(cert), Some(key), None) => CaSource::Files { cert, key },
            (_, _, Some(istiod)) => CaSource::Istiod(istiod),
            _ => CaSource::StateDir(a.state_dir),
        };
        Ok(ProxyConfig {
            config_file: a.config,
            xds,
            istiod: a.istiod.identity(),
            node: a.node,
            trust_domain: a.trust_domain,
            cluster_id: a.cluster_id,
            network: a.network,
            ca,
            cert_ttl: a.cert_ttl,
            socks5_addr: a.socks5_addr.0,
            admin_addr: a.admin_addr,
            metrics_addr: a.metrics_addr,
            readiness_addr: a.readiness_addr,
            pool_max_streams: a.pool_max_streams,
            pool_idle_timeout: a.pool_idle_timeout,
            connect_timeout: a.connect_timeout,
            drain_deadline,
            config_poll_interval: a.config_poll_interval,
            socket_mark: (a.socket_mark != 0).then_some(a.socket_mark),
            hbone_handshake_timeout: Duration::from_secs(10),
            capture,
            kubernetes,
        })
    }
}

impl ProxyConfig {
    /// Defaults for a ztunnel serving `node` from `config_file`, with the admin, metrics and
    /// readiness servers on ephemeral loopback ports and SOCKS5 off, as on the command line
    /// (tests and embedding).
    pub fn local(config_file: PathBuf, node: &str, state_dir: PathBuf) -> ProxyConfig {
        let mut args = ProxyArgs::parse_from_defaults(config_file, node);
        args.state_dir = state_dir;
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        args.admin_addr = any;
        args.metrics_addr = any;
        args.readiness_addr = any;
        args.istiod.xds_address = None;
        args.istiod.ca_address = None;
        ProxyConfig::try_from(args).unwrap_or_else(|e| unreachable!("a local config file is always given: {e}"))
    }
}

impl ProxyConfig {
    /// Like [`ProxyConfig::local`], but with workloads from istiod's xDS and certificates from
    /// its CA (tests and embedding).
    pub fn istiod(node: &str, xds: XdsSettings, ca: IstiodCaSettings, istiod: IstiodIdentity) -> ProxyConfig {
        let mut config = ProxyConfig::local(PathBuf::from("unused.yaml"), node, PathBuf::from("unused"));
        config.config_file = None;
        config.xds = Some(xds);
        config.ca = CaSource::Istiod(ca);
        config.istiod = istiod;
        config
    }
}

impl ProxyArgs {
    fn parse_from_defaults(config: PathBuf, node: &str) -> ProxyArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: ProxyArgs,
        }
        let config = config.to_string_lossy().into_owned();
        // Only fixed, valid literals go in, so parsing cannot fail.
        let mut args = Only::try_parse_from(["ztunnel", "--config", &config, "--node", node])
            .map(|o| o.args)
            .unwrap_or_else(|e| unreachable!("default arguments must parse: {e}"));
        args.config = Some(config.into());
        args
    }
}

#[cfg(test)]
mod tests;
