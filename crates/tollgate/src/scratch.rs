//! Per-operation working space for one decision: see [`Scratch`].

/// How many operations a decision handles without allocating: a rule of requests, tokens and
/// concurrency, plus one more.
const INLINE: usize = 4;

/// Space for one value per operation of a decision, on the stack for up to four operations
/// and on the heap beyond. A decision's loops write into its slice by index, without the
/// length and capacity checks of pushing into a growable vector on every step.
pub(crate) struct Scratch<T> {
    inline: [T; INLINE],
    spilled: Vec<T>,
}

impl<T: Copy + Default> Scratch<T> {
    /// Empty space: nothing is allocated until [`slice`](Self::slice) needs more than four.
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Scratch {
            inline: [T::default(); INLINE],
            spilled: Vec::new(),
        }
    }

    /// `n` values, each `T::default()` (the space is taken once per decision: a second call
    /// gives back what the first one's caller wrote).
    #[inline(always)]
    pub(crate) fn slice(&mut self, n: usize) -> &mut [T] {
        if n <= INLINE {
            return &mut self.inline[..n];
        }
        self.spilled = vec![T::default(); n];
        &mut self.spilled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_n_default_values_inline_or_spilled() {
        let mut s: Scratch<u64> = Scratch::new();
        assert_eq!(s.slice(3), &[0, 0, 0]);
        let mut t: Scratch<u64> = Scratch::new();
        let big = t.slice(9);
        assert_eq!(big.len(), 9);
        assert!(big.iter().all(|v| *v == 0));
    }
}
