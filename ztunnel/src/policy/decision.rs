//! [`Decision`]: the outcome of authorizing one connection, with the reason and the policy
//! behind it, and what dry-run policies would have decided.

use std::fmt;

use super::model::PolicyKey;

/// Why a connection is allowed or denied. The wording of the denials is Istio ztunnel's, so
/// log queries written for it keep working.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No DENY policy matched and no ALLOW policy applies: allowed.
    NoAllowPolicy,
    /// This ALLOW policy matched (and no DENY policy did).
    Allowed(PolicyKey),
    /// This DENY policy matched.
    Denied(PolicyKey),
    /// ALLOW policies apply but none matched: denied.
    NotAllowed,
}

impl Reason {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Reason::NoAllowPolicy | Reason::Allowed(_))
    }

    /// The policy that decided, if one did.
    pub fn policy(&self) -> Option<&PolicyKey> {
        match self {
            Reason::Allowed(key) | Reason::Denied(key) => Some(key),
            Reason::NoAllowPolicy | Reason::NotAllowed => None,
        }
    }

    /// A short fixed name, for metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::NoAllowPolicy => "no_allow_policy",
            Reason::Allowed(_) => "allowed",
            Reason::Denied(_) => "explicitly_denied",
            Reason::NotAllowed => "not_allowed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoAllowPolicy => f.write_str("no allow policy applies"),
            Reason::Allowed(key) => write!(f, "allowed by: {key}"),
            Reason::Denied(key) => write!(f, "explicitly denied by: {key}"),
            Reason::NotAllowed => f.write_str("allow policies exist, but none allowed"),
        }
    }
}

/// The outcome of authorizing one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What is enforced.
    pub reason: Reason,
    /// What would be decided if the dry-run policies were enforced too; `None` when no
    /// dry-run policy applies to the destination.
    pub dry_run: Option<Reason>,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.reason.is_allowed()
    }

    /// The dry-run outcome when it would deny a connection that is let through: what
    /// operators watch before turning dry-run off.
    pub fn dry_run_denial(&self) -> Option<&Reason> {
        match &self.dry_run {
            Some(dry) if self.is_allowed() && !dry.is_allowed() => Some(dry),
            _ => None,
        }
    }
}
