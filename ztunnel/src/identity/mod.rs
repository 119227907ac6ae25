//! Workload identities: the SPIFFE id `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`
//! that Istio puts in the single URI SAN of every workload certificate.
//!
//! This module owns the [`Identity`] newtype and its strict parser. Its submodules own where
//! certificates for an identity come from ([`ca`]: the local CA) and how they are cached and
//! renewed ([`manager`]). Nothing here knows about connections, workloads or policy.

pub mod ca;
mod dump;
pub mod manager;
mod signing_key;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use ca::{CaError, LocalCa};
pub use dump::{CertDump, CertificateDump};
pub use manager::{CertError, CertManager, CertificateSource};

/// Trust domain used when none is configured (Istio's default).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const SCHEME: &str = "spiffe://";

/// A Kubernetes workload identity in SPIFFE form.
///
/// Serializes as its URI string (`spiffe://td/ns/NS/sa/SA`), which is also how it appears in
/// config dumps and access logs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    trust_domain: Arc<str>,
    namespace: Arc<str>,
    service_account: Arc<str>,
}

impl Identity {
    /// Builds an identity from its parts. The parts are taken as given; use [`str::parse`] to
    /// validate an identity that came from outside (a certificate, a config file).
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Identity {
        Identity {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

/// Why a string is not a valid workload SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid SPIFFE identity {input:?}: must start with \"spiffe://\"")]
    Scheme { input: String },
    #[error("invalid SPIFFE identity {input:?}: trust domain is empty")]
    EmptyTrustDomain { input: String },
    #[error(
        "invalid SPIFFE identity {input:?}: trust domain {trust_domain:?} contains {found:?} \
         (allowed: lowercase letters, digits, '.', '-', '_')"
    )]
    TrustDomainChar { input: String, trust_domain: String, found: char },
    #[error("invalid SPIFFE identity {input:?}: missing \"{segment}\" path segment")]
    MissingSegment { input: String, segment: &'static str },
    #[error("invalid SPIFFE identity {input:?}: expected \"{expected}\" as path segment {position}, found {found:?}")]
    UnexpectedSegment { input: String, position: usize, expected: &'static str, found: String },
    #[error("invalid SPIFFE identity {input:?}: {field} is empty")]
    EmptyField { input: String, field: &'static str },
    #[error(
        "invalid SPIFFE identity {input:?}: {field} {value:?} contains {found:?} \
         (allowed: letters, digits, '.', '-', '_')"
    )]
    FieldChar { input: String, field: &'static str, value: String, found: char },
    #[error("invalid SPIFFE identity {input:?}: {field} must not be \".\" or \"..\"")]
    DotSegment { input: String, field: &'static str },
    #[error("invalid SPIFFE identity {input:?}: unexpected path after the service account: {extra:?}")]
    ExtraPath { input: String, extra: String },
}

impl FromStr for Identity {
    type Err = IdentityError;

    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>` and nothing else: no query, fragment, port,
    /// user info, empty or dot segments, or extra path.
    fn from_str(input: &str) -> Result<Identity, IdentityError> {
        let owned = || input.to_string();
        let rest = input.strip_prefix(SCHEME).ok_or_else(|| IdentityError::Scheme { input: owned() })?;
        let (trust_domain, path) = match rest.split_once('/') {
            Some((trust_domain, path)) => (trust_domain, Some(path)),
            None => (rest, None),
        };
        if trust_domain.is_empty() {
            return Err(IdentityError::EmptyTrustDomain { input: owned() });
        }
        if let Some(found) = trust_domain.chars().find(|c| !is_trust_domain_char(*c)) {
            return Err(IdentityError::TrustDomainChar {
                input: owned(),
                trust_domain: trust_domain.to_string(),
                found,
            });
        }

        let mut segments = path.map_or_else(Vec::new, |p| p.splitn(5, '/').collect::<Vec<_>>());
        if segments.len() == 5 {
            let extra = segments.pop().unwrap_or_default().to_string();
            return Err(IdentityError::ExtraPath { input: owned(), extra });
        }
        let keyword = |position: usize, expected: &'static str| match segments.get(position) {
            None => Err(IdentityError::MissingSegment { input: owned(), segment: expected }),
            Some(found) if *found != expected => Err(IdentityError::UnexpectedSegment {
                input: owned(),
                position: position + 1,
                expected,
                found: found.to_string(),
            }),
            Some(_) => Ok(()),
        };
        let value = |position: usize, field: &'static str| -> Result<&str, IdentityError> {
            let value = segments
                .get(position)
                .copied()
                .ok_or_else(|| IdentityError::MissingSegment { input: owned(), segment: field })?;
            validate_field(input, field, value)?;
            Ok(value)
        };
        keyword(0, "ns")?;
        let namespace = value(1, "namespace")?;
        keyword(2, "sa")?;
        let service_account = value(3, "service account")?;
        Ok(Identity::new(trust_domain, namespace, service_account))
    }
}

/// SPIFFE trust domain characters (SPIFFE-ID spec, section 2.1).
fn is_trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

/// SPIFFE path segment rules (SPIFFE-ID spec, section 2.2): non-empty, not `.` or `..`,
/// letters, digits, `.`, `-`, `_`.
fn validate_field(input: &str, field: &'static str, value: &str) -> Result<(), IdentityError> {
    if value.is_empty() {
        return Err(IdentityError::EmptyField { input: input.to_string(), field });
    }
    let bad = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    if let Some(found) = bad {
        return Err(IdentityError::FieldChar { input: input.to_string(), field, value: value.to_string(), found });
    }
    if value == "." || value == ".." {
        return Err(IdentityError::DotSegment { input: input.to_string(), field });
    }
    Ok(())
}

impl serde::Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Identity, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_round_trip() {
        let text = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
        let id: Identity = text.parse().expect("valid identity should parse");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-productpage");
        assert_eq!(id.to_string(), text);
        assert_eq!(id, Identity::new("cluster.local", "default", "bookinfo-productpage"));
    }

    #[test]
    fn rejects_malformed_ids_naming_the_problem() {
        // (input, fragment the error message must contain)
        let cases = [
            ("", "must start with \"spiffe://\""),
            ("http://td/ns/a/sa/b", "must start with \"spiffe://\""),
            ("SPIFFE://td/ns/a/sa/b", "must start with \"spiffe://\""),
            ("spiffe:///ns/a/sa/b", "trust domain is empty"),
            ("spiffe://", "trust domain is empty"),
            ("spiffe://td", "missing \"ns\" path segment"),
            ("spiffe://td/", "expected \"ns\" as path segment 1, found \"\""),
            ("spiffe://td/ns", "missing \"namespace\" path segment"),
            ("spiffe://td/ns/a", "missing \"sa\" path segment"),
            ("spiffe://td/ns/a/sa", "missing \"service account\" path segment"),
            ("spiffe://td/ns//sa/b", "namespace is empty"),
            ("spiffe://td/ns/a/sa/", "service account is empty"),
            ("spiffe://td/namespace/a/sa/b", "expected \"ns\" as path segment 1"),
            ("spiffe://td/ns/a/serviceaccount/b", "expected \"sa\" as path segment 3"),
            ("spiffe://td/ns/a/sa/b/extra", "unexpected path after the service account: \"extra\""),
            ("spiffe://td/ns/a/sa/b/", "unexpected path after the service account: \"\""),
            ("spiffe://td:8080/ns/a/sa/b", "contains ':'"),
            ("spiffe://user@td/ns/a/sa/b", "contains '@'"),
            ("spiffe://Cluster.Local/ns/a/sa/b", "contains 'C'"),
            ("spiffe://td/ns/a/sa/b?x=1", "service account \"b?x=1\" contains '?'"),
            ("spiffe://td/ns/a/sa/b#frag", "contains '#'"),
            ("spiffe://td/ns/a%20b/sa/b", "namespace \"a%20b\" contains '%'"),
            ("spiffe://td/ns/../sa/b", "namespace must not be \".\" or \"..\""),
            ("spiffe://td/ns/a/sa/b c", "contains ' '"),
        ];
        for (input, want) in cases {
            match input.parse::<Identity>() {
                Ok(id) => panic!("{input:?} should be rejected, parsed as {id}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(want) && msg.contains(&format!("{input:?}")),
                        "error for {input:?} should name the input and contain {want:?}, got {msg:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn serde_uses_the_uri_form() {
        let id = Identity::new("td", "ns1", "sa1");
        let json = serde_json::to_string(&id).expect("identity serializes");
        assert_eq!(json, "\"spiffe://td/ns/ns1/sa/sa1\"");
        let back: Identity = serde_json::from_str(&json).expect("identity deserializes");
        assert_eq!(back, id);
        let err = serde_json::from_str::<Identity>("\"spiffe://td/ns/x\"")
            .expect_err("incomplete identity must not deserialize");
        assert!(err.to_string().contains("missing \"sa\""), "got {err}");
    }
}
