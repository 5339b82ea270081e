//! What one call spends.

/// The cost of one call: requests (1 unless set) and tokens, optionally split into input and
/// output tokens. Token counts before a call are estimates; [`Permit::commit`] settles them.
///
/// [`Permit::commit`]: crate::Permit::commit
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cost {
    requests: u64,
    tokens: u64,
    input_tokens: u64,
    output_tokens: u64,
}

impl Default for Cost {
    fn default() -> Self {
        Cost::requests(1)
    }
}

impl Cost {
    /// One request and no tokens.
    pub const ONE: Cost = Cost {
        requests: 1,
        tokens: 0,
        input_tokens: 0,
        output_tokens: 0,
    };

    /// `n` requests and no tokens.
    pub const fn requests(n: u64) -> Self {
        Cost {
            requests: n,
            tokens: 0,
            input_tokens: 0,
            output_tokens: 0,
        }
    }

    /// One request of `n` tokens.
    pub const fn tokens(n: u64) -> Self {
        Cost {
            requests: 1,
            tokens: n,
            input_tokens: 0,
            output_tokens: 0,
        }
    }

    /// One request of `input` prompt tokens and `output` completion tokens; the total counts
    /// against `tokens` limits (saturating at `u64::MAX`).
    pub const fn split(input: u64, output: u64) -> Self {
        Cost {
            requests: 1,
            tokens: input.saturating_add(output),
            input_tokens: input,
            output_tokens: output,
        }
    }

    /// The same cost with `n` requests.
    pub const fn with_requests(mut self, n: u64) -> Self {
        self.requests = n;
        self
    }

    /// The same cost with `n` total tokens.
    pub const fn with_tokens(mut self, n: u64) -> Self {
        self.tokens = n;
        self
    }

    /// What this cost spends from a limit of `kind` (concurrency: one slot).
    pub fn of(&self, kind: crate::LimitKind) -> u64 {
        use crate::LimitKind as K;
        match kind {
            K::Requests => self.requests,
            K::Tokens => self.tokens,
            K::InputTokens => self.input_tokens,
            K::OutputTokens => self.output_tokens,
            K::Concurrency => 1,
        }
    }

    /// Requests.
    pub fn request_count(&self) -> u64 {
        self.requests
    }
    /// Total tokens.
    pub fn token_count(&self) -> u64 {
        self.tokens
    }
    /// Input tokens.
    pub fn input_token_count(&self) -> u64 {
        self.input_tokens
    }
    /// Output tokens.
    pub fn output_token_count(&self) -> u64 {
        self.output_tokens
    }
}
