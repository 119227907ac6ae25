//! The CA client against the fake istiod: what it sends, and which answers it refuses.

use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509CertificationRequest};

use super::*;
use crate::xds::testing::{CaBehavior, FAKE_TOKEN, FakeIstiod};

async fn client(istiod: &FakeIstiod) -> IstioCa {
    IstioCa::new(&istiod.ca_settings(), &istiod.identity("ztunnel-a"), "cluster-7", Duration::from_secs(3600))
        .expect("CA client")
}

#[tokio::test]
async fn issues_with_csr_token_and_impersonation() {
    let dir = tempfile::tempdir().unwrap();
    let istiod = FakeIstiod::start(dir.path()).await;
    let ca = client(&istiod).await;
    let id = Identity::new("cluster.local", "shop", "cart");
    let cert = ca.issue(&id).await.expect("the fake CA issues");
    assert_eq!(cert.identity, id);

    let requests = istiod.ca_requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.impersonated.as_deref(), Some("spiffe://cluster.local/ns/shop/sa/cart"));
    assert_eq!(r.authorization.as_deref(), Some(format!("Bearer {FAKE_TOKEN}").as_str()));
    assert_eq!(r.cluster_id.as_deref(), Some("cluster-7"));
    assert_eq!(r.validity_seconds, 3600);
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(r.csr_pem.as_bytes()).expect("PEM CSR");
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref()).expect("DER CSR");
    assert_eq!(csr.certification_request_info.subject.iter().count(), 0, "no subject (no CN)");
    let sans: Vec<String> = csr
        .requested_extensions()
        .into_iter()
        .flatten()
        .filter_map(|e| match e {
            ParsedExtension::SubjectAlternativeName(san) => Some(san.general_names.clone()),
            _ => None,
        })
        .flatten()
        .map(|n| match n {
            GeneralName::URI(u) => format!("URI:{u}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(sans, vec!["URI:spiffe://cluster.local/ns/shop/sa/cart"], "exactly one URI SAN");
}

#[tokio::test]
async fn refuses_wrong_san_and_foreign_chain_and_reports_outage() {
    let dir = tempfile::tempdir().unwrap();
    let istiod = FakeIstiod::start(dir.path()).await;
    let ca = client(&istiod).await;
    let id = Identity::new("cluster.local", "shop", "cart");

    istiod.set_ca(CaBehavior::WrongSan);
    match ca.issue(&id).await {
        Err(CaError::WrongIdentity { requested, got }) => {
            assert_eq!(requested, id);
            assert_eq!(got.service_account(), "impostor");
        }
        other => panic!("a leaf for another identity must be refused, got {other:?}"),
    }

    istiod.set_ca(CaBehavior::ForeignChain);
    let err = ca.issue(&id).await.expect_err("a chain that does not lead to the roots must be refused");
    assert!(matches!(err, CaError::BadAnswer { .. }), "{err:?}");
    assert!(err.to_string().contains("does not lead to the given roots"), "{err}");

    istiod.set_ca(CaBehavior::Unavailable);
    let err = ca.issue(&id).await.expect_err("a CA that is down");
    assert!(matches!(err, CaError::Unavailable { .. }) && err.to_string().contains("fake CA is down"), "{err}");

    istiod.set_ca(CaBehavior::Normal);
    ca.issue(&id).await.expect("issues again once the CA is back");
}

#[test]
fn answers_without_roots_are_refused() {
    let id = Identity::new("cluster.local", "shop", "cart");
    let key = tls::certificate_request(&id).unwrap().key;
    let response = IstioCertificateResponse { cert_chain: vec!["x".into()], root_cert: None };
    let err = accept(&id, response, key).expect_err("one entry and no roots");
    assert!(err.to_string().contains("no roots"), "{err}");
}
