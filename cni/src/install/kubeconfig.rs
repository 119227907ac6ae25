//! The kubeconfig the plugin uses on the node: the API server's in-cluster address
//! (`KUBERNETES_SERVICE_HOST`/`_PORT`), the installer pod's service-account token and the
//! cluster CA (embedded, since the plugin runs on the host where the pod's files are not).
//!
//! Written mode 0600: it holds a token. The token of a projected service account rotates, so
//! `install --watch` rewrites the file whenever the rendered text changes.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::json;

/// Where a pod finds its service account's token and the cluster CA.
pub(crate) const DEFAULT_SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What a kubeconfig is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiServer {
    pub(crate) protocol: String,
    pub(crate) host: String,
    pub(crate) port: String,
}

impl ApiServer {
    /// `https://10.96.0.1:443`, `https://[fd00::1]:443`.
    pub(crate) fn url(&self) -> String {
        if self.host.contains(':') {
            format!("{}://[{}]:{}", self.protocol, self.host, self.port)
        } else {
            format!("{}://{}:{}", self.protocol, self.host, self.port)
        }
    }
}

/// A service-account file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceAccountError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: empty")]
    Empty { path: PathBuf },
}

/// The token and the CA bundle (PEM) from a service-account directory.
pub(crate) fn read_service_account(dir: &Path) -> Result<(String, Vec<u8>), ServiceAccountError> {
    let read = |name: &str| {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Err(ServiceAccountError::Empty { path }),
            Ok(bytes) => Ok(bytes),
            Err(source) => Err(ServiceAccountError::Read { path, source }),
        }
    };
    let token = String::from_utf8_lossy(&read("token")?).trim().to_string();
    Ok((token, read("ca.crt")?))
}

/// The kubeconfig text.
pub(crate) fn render(server: &ApiServer, token: &str, ca_pem: &[u8]) -> String {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server.url(),
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem),
        }}],
        "users": [{"name": "ztunnel-cni", "user": {"token": token}}],
        "contexts": [{"name": "ztunnel-cni", "context": {"cluster": "local", "user": "ztunnel-cni"}}],
        "current-context": "ztunnel-cni",
    });
    let yaml = serde_yaml::to_string(&config).expect("a JSON value always renders as YAML");
    format!("# Written by `ztunnel-cni install` for the ztunnel-cni plugin; rewritten when the token rotates.\n{yaml}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_kubeconfig_kube_rs_accepts() {
        let server = ApiServer { protocol: "https".into(), host: "10.96.0.1".into(), port: "443".into() };
        let text = render(&server, "tok\"en", b"-----BEGIN CERTIFICATE-----\n");
        let parsed = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("ztunnel-cni"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.96.0.1:443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="));
        assert!(parsed.auth_infos[0].auth_info.as_ref().is_some_and(|u| u.token.is_some()));
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(yaml["users"][0]["user"]["token"].as_str(), Some("tok\"en"), "the token survives quoting");
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let server = ApiServer { protocol: "https".into(), host: "fd00::1".into(), port: "6443".into() };
        assert_eq!(server.url(), "https://[fd00::1]:6443");
    }

    #[test]
    fn service_account_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_service_account(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("reading {}/token", dir.path().display())), "{err}");
        std::fs::write(dir.path().join("token"), "abc\n").unwrap();
        std::fs::write(dir.path().join("ca.crt"), "\n").unwrap();
        assert_eq!(
            read_service_account(dir.path()).unwrap_err().to_string(),
            format!("{}/ca.crt: empty", dir.path().display())
        );
        std::fs::write(dir.path().join("ca.crt"), "PEM").unwrap();
        assert_eq!(read_service_account(dir.path()).unwrap(), ("abc".to_string(), b"PEM".to_vec()));
    }
}
