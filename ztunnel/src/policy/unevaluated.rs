//! [`Unevaluated`]: a note on a policy that carries content this proxy cannot evaluate (sent
//! by istiod: fields our proto does not declare, Istio's `extensions`), naming the element
//! that held it and the fail-closed outcome that element was given instead.
//!
//! The outcome itself is written into the policy's rules when it is converted (the `xds`
//! layer); the note only makes it visible, in config dumps and in the log.

use std::fmt;

use serde::Serialize;

use super::model::Action;

/// One element of a policy whose content could not be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unevaluated {
    /// The element in the resource as sent: `policy`, `rules[0]`, `rules[0].clauses[1]`,
    /// `rules[0].clauses[1].matches[2]`.
    pub at: String,
    /// What it held: `unknown field 14`, `extensions (field 13)`.
    pub content: String,
    pub treated_as: TreatedAs,
}

/// The outcome given to an element with content that cannot be evaluated: always the
/// stricter one for the policy's action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TreatedAs {
    /// In a DENY policy: the element holds for every connection.
    MatchingEveryConnection,
    /// In an ALLOW policy: the element holds for none.
    MatchingNoConnection,
}

impl TreatedAs {
    /// The fail-closed outcome in a policy with `action`.
    pub fn for_action(action: Action) -> TreatedAs {
        match action {
            Action::Deny => TreatedAs::MatchingEveryConnection,
            Action::Allow => TreatedAs::MatchingNoConnection,
        }
    }
}

impl fmt::Display for Unevaluated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = match self.treated_as {
            TreatedAs::MatchingEveryConnection => "every connection",
            TreatedAs::MatchingNoConnection => "no connection",
        };
        write!(f, "{}: {} cannot be evaluated, so it is treated as matching {outcome}", self.at, self.content)
    }
}
