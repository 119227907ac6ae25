//! A fake istiod for tests: Delta ADS and the certificate service over TLS on loopback, each
//! on its own port, scriptable from tests: push and remove resources, watch ACKs and NACKs,
//! make the CA fail or answer wrongly, stop and restart the xDS server on the same port.
//! For benchmarks, a [`SyntheticMesh`] of any size and a [`ResponseReplay`] that feeds
//! responses to the ADS client's store without a stream.
//!
//! Built only with the `testing` feature (never in the release binary). Files it needs (its
//! roots, the token) go into a directory the caller owns.

mod ads;
mod ca;
mod mesh;
mod policies;
mod replay;
mod resources;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity as TlsIdentity, Server, ServerTlsConfig};

pub use ads::RecordedRequest;
pub use ca::{CaBehavior, CaRequest};
pub use mesh::{PODS_PER_SERVICE, SyntheticMesh};
pub use policies::{ExtraAt, ExtraField, FakePolicy};
pub use replay::{DecodedResponse, Replayed, ResponseReplay, encode_response};
pub use resources::{FakeDenyPorts, FakeResource, FakeService, FakeWorkload};

use crate::config::{IstiodCaSettings, IstiodIdentity, XdsSettings};
use crate::identity::LocalCa;
use crate::xds::proto::ca::istio_certificate_service_server::IstioCertificateServiceServer;
use crate::xds::proto::discovery::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;

/// How long `wait_*` helpers wait before failing the test.
const WAIT: Duration = Duration::from_secs(20);
/// The token the fake expects in `authorization: Bearer`.
pub const FAKE_TOKEN: &str = "fake-service-account-token";
pub const TRUST_DOMAIN: &str = "cluster.local";

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

pub struct FakeIstiod {
    ads: Arc<ads::FakeAds>,
    ca: Arc<ca::FakeCa>,
    tls: ServerTlsConfig,
    xds_addr: SocketAddr,
    ca_addr: SocketAddr,
    xds: Mutex<Option<Running>>,
    _ca_server: Running,
    root_ca: PathBuf,
    token_file: PathBuf,
}

impl FakeIstiod {
    /// Starts both servers on ephemeral loopback ports. `dir` receives the control-plane
    /// root (`istiod-root.pem`), the token file and the mesh CA.
    pub async fn start(dir: &Path) -> FakeIstiod {
        let (xds_listener, _) = bind("127.0.0.1:0".parse().expect("literal")).await;
        let (ca_listener, _) = bind("127.0.0.1:0".parse().expect("literal")).await;
        FakeIstiod::start_on(dir, xds_listener, ca_listener).await
    }

    /// Like [`FakeIstiod::start`], serving on listeners the caller bound (for example on
    /// 127.0.0.1 inside a test node's network namespace). They must be on 127.0.0.1: the
    /// serving certificate names that address.
    pub async fn start_on(
        dir: &Path,
        xds_listener: tokio::net::TcpListener,
        ca_listener: tokio::net::TcpListener,
    ) -> FakeIstiod {
        crate::tls::install_crypto_provider();
        let (root_pem, tls) = control_plane_tls();
        let root_ca = dir.join("istiod-root.pem");
        std::fs::write(&root_ca, root_pem).expect("write fake istiod root");
        let token_file = dir.join("istio-token");
        std::fs::write(&token_file, format!("{FAKE_TOKEN}\n")).expect("write token");
        let mesh = LocalCa::load_or_generate(&dir.join("mesh-ca"), TRUST_DOMAIN).expect("mesh CA");
        let foreign = LocalCa::load_or_generate(&dir.join("foreign-ca"), TRUST_DOMAIN).expect("foreign CA");
        let ca = Arc::new(ca::FakeCa {
            mesh: Arc::new(mesh),
            foreign: Arc::new(foreign),
            token: FAKE_TOKEN.into(),
            behavior: Mutex::new(CaBehavior::Normal),
            requests: watch::Sender::new(Vec::new()),
        });
        let ads = Arc::new(ads::FakeAds::new());
        let xds_addr = xds_listener.local_addr().expect("bound listener has an address");
        let ca_addr = ca_listener.local_addr().expect("bound listener has an address");
        let xds = serve(tls.clone(), xds_listener, AggregatedDiscoveryServiceServer::new(ads.clone()));
        let ca_server = serve(tls.clone(), ca_listener, IstioCertificateServiceServer::new(ca.clone()));
        FakeIstiod {
            ads,
            ca,
            tls,
            xds_addr,
            ca_addr,
            xds: Mutex::new(Some(xds)),
            _ca_server: ca_server,
            root_ca,
            token_file,
        }
    }

    pub fn xds_settings(&self) -> XdsSettings {
        XdsSettings { address: format!("https://{}", self.xds_addr), root_ca: self.root_ca.clone() }
    }

    pub fn ca_settings(&self) -> IstiodCaSettings {
        IstiodCaSettings { address: format!("https://{}", self.ca_addr), root_ca: self.root_ca.clone(), concurrency: 4 }
    }

    /// How a ztunnel called `pod_name` presents itself.
    pub fn identity(&self, pod_name: &str) -> IstiodIdentity {
        IstiodIdentity {
            token_file: self.token_file.clone(),
            pod_name: pod_name.into(),
            pod_namespace: "istio-system".into(),
            instance_ip: "10.244.0.5".parse().expect("literal"),
            service_account: "ztunnel".into(),
        }
    }

    /// The mesh root that workload certificates chain to.
    pub fn mesh_root_pem(&self) -> String {
        self.ca.mesh.root_pem()
    }

    /// Adds or updates resources (each gets a new version) and pushes one response per type
    /// to every open stream; returns the nonces used.
    pub fn push(&self, resources: Vec<FakeResource>) -> Vec<String> {
        self.ads.change(resources, &[])
    }

    /// Removes resources of `type_url` by name and pushes the removal; returns the nonce.
    pub fn remove(&self, type_url: &'static str, names: &[&str]) -> Vec<String> {
        let removed: Vec<(&str, &str)> = names.iter().map(|n| (type_url, *n)).collect();
        self.ads.change(Vec::new(), &removed)
    }

    /// While `hold` is true, each new stream's first requests are recorded but not answered,
    /// as a slow istiod: a client stays unsynced until `hold_responses(false)`.
    pub fn hold_responses(&self, hold: bool) {
        self.ads.hold.send_replace(hold);
    }

    /// Every xDS request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.ads.requests.borrow().clone()
    }

    /// Waits (bounded) for a request matching `matches`; panics naming `what` otherwise.
    pub async fn wait_request(&self, what: &str, matches: impl Fn(&RecordedRequest) -> bool) -> RecordedRequest {
        let mut rx = self.ads.requests.subscribe();
        let found = tokio::time::timeout(WAIT, rx.wait_for(|all| all.iter().any(&matches))).await;
        match found {
            Ok(Ok(all)) => all.iter().find(|r| matches(r)).cloned().expect("matched above"),
            _ => panic!("timed out waiting for {what}; xds requests seen: {:#?}", self.requests()),
        }
    }

    /// Stops the xDS server: open streams end with `UNAVAILABLE`, the port stops answering.
    pub async fn stop_xds(&self) {
        self.ads.end_streams("istiod is restarting");
        let running = self.xds.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(r) = running {
            let _ = r.stop.send(());
            let _ = tokio::time::timeout(WAIT, r.task).await;
        }
    }

    /// Starts the xDS server again on the same port, with the resources it had.
    pub async fn start_xds(&self) {
        let (listener, _) = bind(self.xds_addr).await;
        let server = serve(self.tls.clone(), listener, AggregatedDiscoveryServiceServer::new(self.ads.clone()));
        *self.xds.lock().unwrap_or_else(PoisonError::into_inner) = Some(server);
    }

    /// Makes the CA answer as `behavior` from now on.
    pub fn set_ca(&self, behavior: CaBehavior) {
        *self.ca.behavior.lock().unwrap_or_else(PoisonError::into_inner) = behavior;
    }

    /// Every certificate request received so far.
    pub fn ca_requests(&self) -> Vec<CaRequest> {
        self.ca.requests.borrow().clone()
    }
}

impl Drop for FakeIstiod {
    fn drop(&mut self) {
        if let Some(r) = self.xds.lock().unwrap_or_else(PoisonError::into_inner).take() {
            r.task.abort();
        }
        self._ca_server.task.abort();
    }
}

/// Binds `addr`, retrying briefly: a port just released may still be in use for a moment.
async fn bind(addr: SocketAddr) -> (tokio::net::TcpListener, SocketAddr) {
    for _ in 0..50 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            let local = l.local_addr().expect("bound listener has an address");
            return (l, local);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind fake istiod to {addr}");
}

fn serve<S>(tls: ServerTlsConfig, listener: tokio::net::TcpListener, service: S) -> Running
where
    S: tonic::codegen::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener);
    let task = tokio::spawn(async move {
        let server = Server::builder().tls_config(tls).expect("fake istiod TLS config");
        let _ = server
            .serve_with_incoming_shutdown(service, incoming, async move {
                let _ = stopped.await;
            })
            .await;
    });
    Running { stop, task }
}

/// A self-signed control-plane root and a serving certificate for istiod's DNS name and
/// 127.0.0.1; returns the root PEM and the server TLS config.
fn control_plane_tls() -> (String, ServerTlsConfig) {
    let root_key = KeyPair::generate().expect("root key");
    let mut root = CertificateParams::default();
    root.distinguished_name.push(DnType::CommonName, "fake istiod root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key).expect("root cert");
    let issuer = Issuer::new(root, root_key);
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![
        SanType::DnsName("istiod.istio-system.svc".try_into().expect("literal")),
        SanType::IpAddress("127.0.0.1".parse().expect("literal")),
    ];
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let identity = TlsIdentity::from_pem(cert.pem(), key.serialize_pem());
    (root_cert.pem(), ServerTlsConfig::new().identity(identity))
}
