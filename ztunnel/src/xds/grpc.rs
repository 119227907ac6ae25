//! The connection to istiod shared by the ADS client and the CA client: an `https://` address,
//! TLS verified against a root certificate file, and per-request credentials (the
//! service-account token as `authorization: Bearer`, and `clusterid`), read from disk each
//! time so a rotated token is picked up without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

use super::XdsError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One istiod endpoint (xDS or CA) and the credentials to present to it.
#[derive(Clone, Debug)]
pub(crate) struct Istiod {
    address: String,
    uri: Uri,
    root_ca: PathBuf,
    token_file: PathBuf,
    cluster_id: String,
}

impl Istiod {
    /// `address` is `https://host:port` (a bare `host:port` means the same).
    pub(crate) fn new(address: &str, root_ca: &Path, token_file: &Path, cluster_id: &str) -> Result<Istiod, XdsError> {
        let bad = |reason: &str| XdsError::Address { address: address.to_string(), reason: reason.to_string() };
        let full = if address.contains("://") { address.to_string() } else { format!("https://{address}") };
        let uri: Uri = full.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("istiod is only reached over TLS; use https://"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        Ok(Istiod {
            address: address.to_string(),
            uri,
            root_ca: root_ca.to_path_buf(),
            token_file: token_file.to_path_buf(),
            cluster_id: cluster_id.to_string(),
        })
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// A channel that connects on first use (and reconnects by itself), trusting the root
    /// certificate file as it is now.
    pub(crate) fn lazy_channel(&self) -> Result<Channel, XdsError> {
        Ok(self.endpoint()?.connect_lazy())
    }

    /// Connects now, reading the root certificate afresh.
    pub(crate) async fn connect(&self) -> Result<Channel, XdsError> {
        self.endpoint()?
            .connect()
            .await
            .map_err(|e| XdsError::Connect { address: self.address.clone(), reason: error_chain(&e) })
    }

    fn endpoint(&self) -> Result<Endpoint, XdsError> {
        let root_error = |reason: String| XdsError::RootCert { path: self.root_ca.clone(), reason };
        let pem = std::fs::read(&self.root_ca).map_err(|e| root_error(e.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>();
        match certs {
            Ok(certs) if !certs.is_empty() => {}
            Ok(_) => return Err(root_error("no CERTIFICATE block found".into())),
            Err(e) => return Err(root_error(format!("invalid PEM: {e}"))),
        }
        let host = self.uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)).domain_name(host);
        let config_error =
            |e: tonic::transport::Error| XdsError::Address { address: self.address.clone(), reason: error_chain(&e) };
        Ok(Endpoint::from(self.uri.clone())
            .tls_config(tls)
            .map_err(config_error)?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true))
    }

    /// Adds `authorization: Bearer <token>` (token file read now) and `clusterid`.
    pub(crate) fn authorize<T>(&self, request: &mut tonic::Request<T>) -> Result<(), XdsError> {
        let token_error = |reason: String| XdsError::Token { path: self.token_file.clone(), reason };
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| token_error(e.to_string()))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(token_error("the file is empty".into()));
        }
        let bearer: MetadataValue<_> =
            format!("Bearer {token}").parse().map_err(|_| token_error("the token is not printable ASCII".into()))?;
        let cluster: MetadataValue<_> = self.cluster_id.parse().map_err(|_| XdsError::Address {
            address: self.address.clone(),
            reason: format!("cluster id {:?} is not printable ASCII", self.cluster_id),
        })?;
        request.metadata_mut().insert("authorization", bearer);
        request.metadata_mut().insert("clusterid", cluster);
        Ok(())
    }
}

/// An error and its sources on one line (tonic's transport errors hide the cause otherwise).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
