//! Options for istiod as config and certificate source, with the environment variable names
//! Istio's ztunnel chart sets, and the plain data they parse into.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;

/// Where Istio mounts the istiod root certificate in ztunnel's pod.
pub(super) const DEFAULT_ROOT_CA: &str = "/var/run/secrets/istio/root-cert.pem";
/// Where Istio mounts ztunnel's projected service-account token (audience istio-ca).
pub(super) const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/tokens/istio-token";
/// Concurrent certificate requests to the CA.
pub(super) const DEFAULT_CA_CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Args)]
pub struct IstiodArgs {
    /// istiod's xDS endpoint, e.g. `https://istiod.istio-system.svc:15012`. When set, workloads,
    /// services and policies come from istiod (Delta ADS) instead of a local config file.
    #[arg(long, env = "XDS_ADDRESS", value_name = "URL")]
    pub xds_address: Option<String>,

    /// Root certificate (PEM) that istiod's xDS serving certificate chains to.
    #[arg(long, env = "XDS_ROOT_CA", value_name = "PEM", default_value = DEFAULT_ROOT_CA)]
    pub xds_root_ca: PathBuf,

    /// istiod's certificate service. Defaults to XDS_ADDRESS when that is set; when neither
    /// is set, the local CA issues certificates.
    #[arg(long, env = "CA_ADDRESS", value_name = "URL")]
    pub ca_address: Option<String>,

    /// Root certificate (PEM) that the CA's serving certificate chains to.
    #[arg(long, env = "CA_ROOT_CA", value_name = "PEM", default_value = DEFAULT_ROOT_CA)]
    pub ca_root_ca: PathBuf,

    /// Service-account token sent as `authorization: Bearer` to istiod; re-read on every
    /// connection and certificate request, so rotation needs no restart.
    #[arg(long, env = "AUTH_TOKEN", value_name = "FILE", default_value = DEFAULT_TOKEN_FILE)]
    pub token_file: PathBuf,

    /// This ztunnel's pod name (xDS node id and metadata).
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,

    /// This ztunnel's pod namespace (xDS node id and metadata).
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    pub pod_namespace: String,

    /// This ztunnel's pod IP (xDS node id and metadata).
    #[arg(long, env = "INSTANCE_IP", default_value = "1.1.1.1")]
    pub instance_ip: IpAddr,

    /// This ztunnel's service account (xDS metadata).
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "ztunnel")]
    pub service_account: String,

    /// Certificate requests in flight to the CA at once; more wait their turn.
    #[arg(long, default_value_t = DEFAULT_CA_CONCURRENCY)]
    pub ca_concurrency: usize,
}

/// How this ztunnel presents itself to istiod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstiodIdentity {
    pub token_file: PathBuf,
    pub pod_name: String,
    pub pod_namespace: String,
    pub instance_ip: IpAddr,
    pub service_account: String,
}

/// istiod's xDS endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsSettings {
    pub address: String,
    pub root_ca: PathBuf,
}

/// istiod's certificate service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstiodCaSettings {
    pub address: String,
    pub root_ca: PathBuf,
    pub concurrency: usize,
}

impl IstiodArgs {
    pub(super) fn identity(&self) -> IstiodIdentity {
        IstiodIdentity {
            token_file: self.token_file.clone(),
            pod_name: self.pod_name.clone(),
            pod_namespace: self.pod_namespace.clone(),
            instance_ip: self.instance_ip,
            service_account: self.service_account.clone(),
        }
    }

    pub(super) fn xds(&self) -> Option<XdsSettings> {
        let address = self.xds_address.clone().filter(|a| !a.is_empty())?;
        Some(XdsSettings { address, root_ca: self.xds_root_ca.clone() })
    }

    /// CA_ADDRESS, else XDS_ADDRESS (istiod serves both on one port).
    pub(super) fn ca(&self) -> Option<IstiodCaSettings> {
        let address = self
            .ca_address
            .clone()
            .filter(|a| !a.is_empty())
            .or_else(|| self.xds_address.clone().filter(|a| !a.is_empty()))?;
        Some(IstiodCaSettings { address, root_ca: self.ca_root_ca.clone(), concurrency: self.ca_concurrency.max(1) })
    }
}
