//! Bucket names and the hashing that turns them into compact keys.
//!
//! A bucket is one limit of one rule for one partition (the values of the attributes the rule
//! selects with `*`). Stores name buckets as they like through [`Store::bucket_key`]; this
//! module provides the inputs and a keyed 128-bit hash, so that an attacker choosing attribute
//! values cannot make two partitions collide without knowing the process's random key.
//!
//! [`Store::bucket_key`]: crate::store::Store::bucket_key

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use foldhash::quality::SeedableRandomState;
use foldhash::SharedSeed;
use siphasher::sip128::{Hasher128, SipHasher13};

/// Everything a store may use to name one bucket.
#[derive(Clone, Copy, Debug)]
pub struct BucketName<'a> {
    /// The rule's name.
    pub rule: &'static str,
    /// A process-stable id of the rule's name.
    pub rule_id: u32,
    /// The limit's stable label within the rule (changes exactly when the limit changes).
    pub limit: &'static str,
    /// The values of the rule's partition attributes, in the rule's order.
    pub partition: &'a [&'a str],
    /// A keyed 128-bit hash of the rule and the partition values.
    pub partition_hash: u128,
    /// A keyed 128-bit hash of the rule and the limit label.
    pub limit_salt: u128,
}

fn keys() -> (u64, u64) {
    static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
    *KEYS.get_or_init(|| {
        // std's RandomState is seeded from the OS once per process: two random keys.
        let s = std::collections::hash_map::RandomState::new();
        let mut a = s.build_hasher();
        a.write_u8(1);
        let mut b = s.build_hasher();
        b.write_u8(2);
        (a.finish(), b.finish())
    })
}

fn hasher() -> SipHasher13 {
    let (k0, k1) = keys();
    SipHasher13::new_with_keys(k0, k1)
}

/// The two seeded hashers of partition values: foldhash (hashbrown's default hasher), once
/// per process-random seed.
fn partition_hashers() -> &'static (SeedableRandomState, SeedableRandomState) {
    static STATES: OnceLock<(SeedableRandomState, SeedableRandomState)> = OnceLock::new();
    STATES.get_or_init(|| {
        let (k0, k1) = keys();
        let shared = SharedSeed::global_random();
        (
            SeedableRandomState::with_seed(k0, shared),
            SeedableRandomState::with_seed(k1, shared),
        )
    })
}

/// Hashes the values of one partition. The rule id goes into the hasher's starting state
/// instead of being written, and a single value (the usual partition) is written alone:
/// foldhash mixes a write's length into the state, so distinct strings stay distinct inputs.
/// Several values are each preceded by their length, so that `("ab","c")` and `("a","bc")`
/// differ. (Always inlined: a call for each half cost more than the hashing of a short value.)
#[inline(always)]
fn hash_values(state: &SeedableRandomState, rule_id: u32, values: &[&str]) -> u64 {
    let mut h = state.build_hasher();
    h.write_u32(rule_id);
    if let [v] = values {
        h.write(v.as_bytes());
    } else {
        for v in values {
            h.write_usize(v.len());
            h.write(v.as_bytes());
        }
    }
    h.finish()
}

/// The keyed hash of a rule's partition values: 128 bits from two independently seeded
/// 64-bit hashes.
///
/// Every decision computes it, so it uses a fast seeded hash (foldhash) rather than SipHash.
/// Values cannot be chosen to collide without the process's random seeds, which never leave
/// the process; with 128 bits, accidental collisions between partitions are negligible.
#[inline]
pub fn partition_hash(rule_id: u32, values: &[&str]) -> u128 {
    let (a, b) = partition_hashers();
    let hi = hash_values(a, rule_id, values);
    let lo = hash_values(b, rule_id, values);
    (u128::from(hi) << 64) | u128::from(lo)
}

/// The keyed hash of a rule's limit label.
pub(crate) fn salt_of(rule: &str, label: &str) -> u128 {
    let mut h = hasher();
    h.write_usize(rule.len());
    h.write(rule.as_bytes());
    h.write(label.as_bytes());
    h.finish128().as_u128()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_be_shifted_between_attributes() {
        assert_ne!(
            partition_hash(1, &["ab", "c"]),
            partition_hash(1, &["a", "bc"])
        );
        assert_ne!(partition_hash(1, &["a"]), partition_hash(2, &["a"]));
        assert_eq!(
            partition_hash(1, &["a", "b"]),
            partition_hash(1, &["a", "b"])
        );
        assert_ne!(partition_hash(1, &["ab"]), partition_hash(1, &["a", "b"]));
        assert_ne!(partition_hash(1, &["a"]), partition_hash(1, &["a", ""]));
        assert_ne!(partition_hash(1, &[""]), partition_hash(1, &[]));
    }
}
