//! Local CA: loading roots in every key encoding, generating and reusing a state directory,
//! and the exact shape of issued leaves.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use rustls::RootCertStore;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::pki_types::UnixTime;
use rustls::server::ParsedCertificate;
use x509_parser::prelude::{GeneralName, ParsedExtension};

use super::*;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/identity/testdata");

fn testdata(name: &str) -> PathBuf {
    Path::new(TESTDATA).join(name)
}

fn workload_id() -> Identity {
    Identity::new("cluster.local", "default", "productpage")
}

/// The leaf chains to the CA's root for both server and client use, as webpki checks it.
fn assert_verifies(ca: &LocalCa, cert: &WorkloadCertificate) {
    let mut store = RootCertStore::empty();
    for root in ca.roots() {
        store.add(root).expect("root is a usable trust anchor");
    }
    let leaf = ParsedCertificate::try_from(&cert.chain[0]).expect("leaf parses");
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    verify_server_cert_signed_by_trust_anchor(&leaf, &store, &cert.chain[1..], UnixTime::now(), algorithms.all)
        .unwrap_or_else(|e| panic!("leaf for {} should verify against the root: {e}", cert.identity));
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("client verifier");
    client_verifier
        .verify_client_cert(&cert.chain[0], &cert.chain[1..], UnixTime::now())
        .unwrap_or_else(|e| panic!("leaf should be a valid client certificate: {e}"));
}

#[test]
fn issued_leaf_has_istio_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = LocalCa::load_or_generate(dir.path(), "cluster.local").expect("generate CA");
    let validity = Duration::from_secs(3600);
    let before = SystemTime::now();
    let cert = ca.issue(&workload_id(), validity).expect("issue");
    assert_verifies(&ca, &cert);
    assert_eq!(cert.identity, workload_id());
    assert_eq!(cert.chain.len(), 1, "local CA chains are leaf only");
    assert_eq!(cert.roots, ca.roots());

    let (_, x509) = X509Certificate::from_der(&cert.chain[0]).expect("leaf parses");
    assert_eq!(x509.subject().iter().count(), 0, "subject must be empty (no CN)");
    let sans = x509.subject_alternative_name().expect("SAN ext").expect("SAN present");
    assert!(sans.critical, "SAN must be critical when the subject is empty");
    assert_eq!(
        sans.value.general_names,
        vec![GeneralName::URI("spiffe://cluster.local/ns/default/sa/productpage")],
        "exactly one URI SAN with the SPIFFE id"
    );
    assert!(!x509.is_ca());
    let eku = x509.extended_key_usage().expect("EKU ext").expect("EKU present").value;
    assert!(eku.server_auth && eku.client_auth, "leaf must serve both ends of mTLS");
    // id-ecPublicKey on prime256v1.
    let spki = &x509.public_key().algorithm;
    assert_eq!(spki.algorithm.to_id_string(), "1.2.840.10045.2.1");
    let curve = spki.parameters.as_ref().expect("curve").as_oid().expect("curve oid");
    assert_eq!(curve.to_id_string(), "1.2.840.10045.3.1.7");
    assert_eq!(x509.signature_algorithm.algorithm.to_id_string(), "1.2.840.10045.4.3.2");

    // Backdated by the skew allowance, valid for the requested period after issuance.
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs();
    let skew = CLOCK_SKEW_ALLOWANCE.as_secs();
    let nb = secs(cert.not_before);
    assert!(nb + skew + 2 >= secs(before) && nb + skew <= secs(SystemTime::now()), "not_before");
    let lifetime = secs(cert.not_after) - nb;
    assert!(lifetime.abs_diff(validity.as_secs() + skew) <= 1, "lifetime {lifetime}s");
    let has_aki =
        x509.iter_extensions().any(|e| matches!(e.parsed_extension(), ParsedExtension::AuthorityKeyIdentifier(_)));
    assert!(has_aki, "leaf must name its issuer key");
}

#[test]
fn load_or_generate_writes_once_and_reuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("ca-state");
    let first = LocalCa::load_or_generate(&state, "example.org").expect("generate");
    let key_mode = fs::metadata(state.join(ROOT_KEY_FILE)).expect("key file").permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600, "root key must be private, mode {key_mode:o}");
    let cert_text = fs::read_to_string(state.join(ROOT_CERT_FILE)).expect("cert file");
    assert_eq!(cert_text, first.root_pem());

    let second = LocalCa::load_or_generate(&state, "example.org").expect("reload");
    assert_eq!(second.root_pem(), first.root_pem(), "second run must reuse the same root");
    // The reloaded key still matches: leaves from the second instance verify.
    let cert = second.issue(&workload_id(), Duration::from_secs(60)).expect("issue");
    assert_verifies(&first, &cert);

    let roots = first.roots();
    let (_, root) = X509Certificate::from_der(&roots[0]).expect("root parses");
    assert!(root.is_ca());
    let org: Vec<_> = root.subject().iter_organization().filter_map(|o| o.as_str().ok()).collect();
    assert_eq!(org, ["example.org"]);
    assert!(
        !fs::read_dir(&state).expect("list state dir").any(|e| e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .contains("tmp")),
        "no temp files left behind"
    );
}

#[test]
fn load_or_generate_refuses_half_a_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join(ROOT_KEY_FILE), "x").expect("write key");
    let err = LocalCa::load_or_generate(dir.path(), "cluster.local").expect_err("partial state");
    let msg = err.to_string();
    assert!(
        msg.contains("has root-key.pem but not root-cert.pem") && msg.contains(&dir.path().display().to_string()),
        "got {msg}"
    );
    assert_eq!(fs::read_to_string(dir.path().join(ROOT_KEY_FILE)).expect("key"), "x", "never overwritten");
}

#[test]
fn rsa_root_signs_verifiable_leaves_from_pkcs1_and_pkcs8_keys() {
    for key_file in ["rsa-root-key.pem", "rsa-root-key.pkcs8.pem"] {
        let ca = LocalCa::from_pem_files(&testdata("rsa-root-cert.pem"), &testdata(key_file))
            .unwrap_or_else(|e| panic!("RSA root with {key_file} should load: {e}"));
        let cert = ca.issue(&workload_id(), Duration::from_secs(600)).expect("issue");
        assert_verifies(&ca, &cert);
        let (_, x509) = X509Certificate::from_der(&cert.chain[0]).expect("leaf parses");
        // sha256WithRSAEncryption by the root; the leaf key itself stays P-256.
        assert_eq!(x509.signature_algorithm.algorithm.to_id_string(), "1.2.840.113549.1.1.11");
        assert_eq!(x509.public_key().algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
    }
}

#[test]
fn sec1_ec_root_loads_and_issues() {
    let ca = LocalCa::from_pem_files(&testdata("ec-root-cert.pem"), &testdata("ec-root-key.pem"))
        .expect("SEC1 EC root should load");
    let cert = ca.issue(&workload_id(), Duration::from_secs(600)).expect("issue");
    assert_verifies(&ca, &cert);
}

#[test]
fn leaf_never_outlives_its_root() {
    let ca = LocalCa::from_pem_files(&testdata("ec-root-cert.pem"), &testdata("ec-root-key.pem")).expect("load");
    let cert = ca.issue(&workload_id(), Duration::from_secs(200 * 365 * 86400)).expect("issue");
    // The test root expires 2100-01-01T00:00:00Z.
    assert_eq!(cert.not_after, UNIX_EPOCH + Duration::from_secs(4_102_444_800));
}

#[test]
fn bad_root_files_are_reported_with_their_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf_ca = LocalCa::load_or_generate(dir.path(), "cluster.local").expect("generate");
    let leaf = leaf_ca.issue(&workload_id(), Duration::from_secs(60)).expect("issue");
    let leaf_cert = dir.path().join("leaf-cert.pem");
    let leaf_key = dir.path().join("leaf-key.pem");
    fs::write(&leaf_cert, leaf.chain_pem()).expect("write");
    fs::write(&leaf_key, leaf.key_pem()).expect("write");
    let missing = dir.path().join("missing.pem");
    let rsa_cert = testdata("rsa-root-cert.pem");
    let ec_key = testdata("ec-root-key.pem");

    let cases: [(&Path, &Path, String); 5] = [
        (&leaf_cert, &leaf_key, format!("{}: root certificate is not a CA", leaf_cert.display())),
        (
            &rsa_cert,
            &ec_key,
            format!("root key {} does not belong to root certificate {}", ec_key.display(), rsa_cert.display()),
        ),
        (&missing, &ec_key, format!("reading {}", missing.display())),
        (&rsa_cert, &rsa_cert, format!("{}: no private key found", rsa_cert.display())),
        (&ec_key, &ec_key, format!("{}: no CERTIFICATE block found", ec_key.display())),
    ];
    for (cert, key, want) in cases {
        let err = LocalCa::from_pem_files(cert, key).expect_err(&want).to_string();
        assert!(err.contains(&want), "expected {want:?}, got {err:?}");
    }
}
