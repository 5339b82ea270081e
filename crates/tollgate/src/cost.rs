//! What one call spends.

/// The cost of one call: requests (1 unless set) and tokens, optionally split into input and
/// output tokens. Token counts before a call are estimates; [`Permit::commit`] settles them.
///
/// [`Permit::commit`]: crate::Permit::commit
///
/// The amounts are held by [`LimitKind`](crate::LimitKind), in its order (requests, tokens,
/// input tokens, output tokens), so that what a limit spends is read by its kind's index: a
/// decision asks it of every limit.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cost {
    units: [u64; 4],
}

// Each amount's index is its kind's place in `LimitKind`, which `of` reads directly.
const REQUESTS: usize = crate::LimitKind::Requests as usize;
const TOKENS: usize = crate::LimitKind::Tokens as usize;
const INPUT: usize = crate::LimitKind::InputTokens as usize;
const OUTPUT: usize = crate::LimitKind::OutputTokens as usize;

impl std::fmt::Debug for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cost")
            .field("requests", &self.units[REQUESTS])
            .field("tokens", &self.units[TOKENS])
            .field("input_tokens", &self.units[INPUT])
            .field("output_tokens", &self.units[OUTPUT])
            .finish()
    }
}

impl Default for Cost {
    fn default() -> Self {
        Cost::requests(1)
    }
}

impl Cost {
    /// One request and no tokens.
    pub const ONE: Cost = Cost::requests(1);

    /// The cost of these amounts, each put at its kind's index.
    const fn of_amounts(requests: u64, tokens: u64, input: u64, output: u64) -> Self {
        let mut units = [0; 4];
        units[REQUESTS] = requests;
        units[TOKENS] = tokens;
        units[INPUT] = input;
        units[OUTPUT] = output;
        Cost { units }
    }

    /// `n` requests and no tokens.
    pub const fn requests(n: u64) -> Self {
        Cost::of_amounts(n, 0, 0, 0)
    }

    /// One request of `n` tokens.
    pub const fn tokens(n: u64) -> Self {
        Cost::of_amounts(1, n, 0, 0)
    }

    /// One request of `input` prompt tokens and `output` completion tokens; the total counts
    /// against `tokens` limits (saturating at `u64::MAX`).
    pub const fn split(input: u64, output: u64) -> Self {
        Cost::of_amounts(1, input.saturating_add(output), input, output)
    }

    /// The same cost with `n` requests.
    pub const fn with_requests(mut self, n: u64) -> Self {
        self.units[REQUESTS] = n;
        self
    }

    /// The same cost with `n` total tokens.
    pub const fn with_tokens(mut self, n: u64) -> Self {
        self.units[TOKENS] = n;
        self
    }

    /// What this cost spends from a limit of `kind` (concurrency: one slot).
    #[inline]
    pub fn of(&self, kind: crate::LimitKind) -> u64 {
        match kind {
            crate::LimitKind::Concurrency => 1,
            // The other kinds index their amount (see the struct's docs).
            k => self.units.get(k as usize).copied().unwrap_or(0),
        }
    }

    /// Requests.
    pub fn request_count(&self) -> u64 {
        self.units[REQUESTS]
    }
    /// Total tokens.
    pub fn token_count(&self) -> u64 {
        self.units[TOKENS]
    }
    /// Input tokens.
    pub fn input_token_count(&self) -> u64 {
        self.units[INPUT]
    }
    /// Output tokens.
    pub fn output_token_count(&self) -> u64 {
        self.units[OUTPUT]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LimitKind;

    /// Each kind reads its own amount (the amounts are indexed by the kind's order).
    #[test]
    fn each_kind_spends_its_own_amount() {
        let c = Cost::split(3, 4).with_requests(2);
        assert_eq!(c.of(LimitKind::Requests), 2);
        assert_eq!(c.of(LimitKind::Tokens), 7);
        assert_eq!(c.of(LimitKind::InputTokens), 3);
        assert_eq!(c.of(LimitKind::OutputTokens), 4);
        assert_eq!(c.of(LimitKind::Concurrency), 1);
        assert_eq!(
            (
                c.request_count(),
                c.token_count(),
                c.input_token_count(),
                c.output_token_count()
            ),
            (2, 7, 3, 4)
        );
        assert_eq!(
            format!("{:?}", Cost::tokens(5)),
            "Cost { requests: 1, tokens: 5, input_tokens: 0, output_tokens: 0 }"
        );
    }
}
