//! What an algorithm answers: a verdict for a cost, or the usage of a bucket.

/// The answer of one limit to one cost at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the cost fits now.
    pub admitted: bool,
    /// The cost exceeds what the bucket can ever hold: waiting will not help.
    pub never_fits: bool,
    /// The most the bucket can hold (burst for GCRA, amount otherwise).
    pub capacity: u64,
    /// Units left: after this cost if admitted, before it if denied.
    pub remaining: u64,
    /// Microseconds until the bucket is fully available again (after this cost if admitted).
    pub reset_after_us: u64,
    /// Microseconds until this same cost would be admitted if nothing else happened; 0 if
    /// admitted or if it never fits.
    pub retry_after_us: u64,
}

impl Verdict {
    pub(crate) fn never_fits(capacity: u64, remaining: u64, reset_after_us: u64) -> Self {
        Verdict {
            admitted: false,
            never_fits: true,
            capacity,
            remaining,
            reset_after_us,
            retry_after_us: 0,
        }
    }
}

/// How much of a bucket is in use, whatever the algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Usage {
    /// Units spent and not yet refilled (may exceed `capacity` while in debt).
    pub used: u64,
    /// The most the bucket can hold.
    pub capacity: u64,
    /// Units that could be spent now.
    pub available: u64,
    /// Microseconds until the bucket is fully available again.
    pub reset_after_us: u64,
}

/// `ceil(a / b)` saturated into a u64; `b` must not be zero.
pub(crate) fn div_ceil_u64(a: u128, b: u128) -> u64 {
    // Most buckets' scaled times fit in 64 bits: a 64-bit division is several times cheaper.
    if let (Ok(a), Ok(b)) = (u64::try_from(a), u64::try_from(b)) {
        // A scale of one (whole units per microsecond) is the usual divisor.
        if b == 1 {
            return a;
        }
        return a.checked_div(b).map_or(u64::MAX, |q| {
            if q.wrapping_mul(b) < a {
                q.saturating_add(1)
            } else {
                q
            }
        });
    }
    u64::try_from(a.checked_div(b).map_or(u128::MAX, |q| {
        if q.saturating_mul(b) < a {
            q.saturating_add(1)
        } else {
            q
        }
    }))
    .unwrap_or(u64::MAX)
}

/// `floor(a / b)` saturated into a u64; `b` must not be zero.
pub(crate) fn div_floor_u64(a: u128, b: u128) -> u64 {
    if let (Ok(a), Ok(b)) = (u64::try_from(a), u64::try_from(b)) {
        if b == 1 {
            return a;
        }
        return a.checked_div(b).unwrap_or(u64::MAX);
    }
    u64::try_from(a.checked_div(b).unwrap_or(u128::MAX)).unwrap_or(u64::MAX)
}
