//! The service's answer to a call: the decision to act on and any shadow-mode denial.

use tollgate::Decision;

/// A decision as the service answers it.
#[derive(Clone, Debug)]
pub struct Judged {
    /// The decision to act on.
    pub decision: Decision,
    /// Set when a rule in shadow mode denied and the call was admitted anyway: the shadow
    /// decision (a denial).
    pub shadow: Option<Decision>,
}

impl Judged {
    /// Whether the call may go ahead.
    pub fn is_allowed(&self) -> bool {
        self.decision.is_allowed()
    }
}
