//! The Redis store's key builder (`<prefix>:{<partition>}:<rule>:<limit>`), on arbitrary
//! partition values and awkward rule and limit names.
//!
//! Input: four bytes choosing the rule and limit names of two buckets A and B, then A's
//! partition values and B's, separated by 0xFE, each value separated by 0xFF (UTF-8 only:
//! attribute values are strings; the single byte 0xFD is no value). Checked: a key is printable ASCII; its cluster slot, as
//! Redis computes it from the key text (the hash-tag rule), is the slot the store routes to;
//! buckets of one partition share the slot; and two different buckets never share a key (one
//! rule always has the same number of partition values).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tollgate::key::{partition_hash, BucketName};
use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::store::Store;

/// Rule and limit names, including ones made of the key's own separators.
const NAMES: [&str; 12] = [
    "r",
    "per-tenant",
    "a:b",
    "{x}",
    "}",
    "%41",
    "r,s",
    "_",
    "",
    "ünï",
    "#0123",
    "*?[a]",
];

fn store() -> &'static (tokio::runtime::Runtime, RedisStore) {
    static STORE: OnceLock<(tokio::runtime::Runtime, RedisStore)> = OnceLock::new();
    STORE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        // No node: the store never connects; only its key builder is used.
        let store = {
            let _in = rt.enter();
            RedisStore::connect_lazy(&[], false, RedisConfig::default())
        };
        (rt, store)
    })
}

/// The slot of a key as Redis computes it: CRC16 of the text between the first `{` and the
/// next `}` when that is not empty, else of the whole key; modulo 16384.
fn redis_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % 16_384
}

/// The values of one part: split at 0xFF (so an empty part is one empty value); the single
/// byte 0xFD is no value at all (a rule that does not partition).
fn values(part: &[u8]) -> Option<Vec<&str>> {
    if part == [0xFD] {
        return Some(Vec::new());
    }
    part.split(|&b| b == 0xFF)
        .map(|v| std::str::from_utf8(v).ok())
        .collect()
}

fn name<'a>(rule: &'static str, limit: &'static str, values: &'a [&'a str]) -> BucketName<'a> {
    BucketName {
        rule,
        rule_id: 1,
        limit,
        partition: values,
        partition_hash: partition_hash(1, values),
        limit_salt: 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let [ra, la, rb, lb, rest @ ..] = data else {
        return;
    };
    let pick = |b: u8| NAMES[usize::from(b) % NAMES.len()];
    let (a_part, b_part) = match rest.iter().position(|&b| b == 0xFE) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let (Some(a_values), Some(b_values)) = (values(a_part), values(b_part)) else {
        return;
    };
    let store = &store().1;
    let a = (pick(*ra), pick(*la), a_values);
    let b = (pick(*rb), pick(*lb), b_values);
    let key_a = store.bucket_key(&name(a.0, a.1, &a.2));
    let key_b = store.bucket_key(&name(b.0, b.1, &b.2));
    for k in [&key_a, &key_b] {
        let text = k.as_str();
        assert!(
            text.bytes().all(|b| b.is_ascii_graphic()),
            "not printable ASCII: {text:?}"
        );
        assert_eq!(
            redis_slot(text.as_bytes()),
            k.slot(),
            "Redis puts {text:?} in another slot than the store routes to"
        );
    }
    // Every limit of a partition lives in one slot.
    let other_limit = store.bucket_key(&name(a.0, "another-limit", &a.2));
    assert_eq!(key_a.slot(), other_limit.slot());
    // One rule has one number of partition values; otherwise, different buckets, different keys.
    let comparable = (a.0, a.1) != (b.0, b.1) || a.2.len() == b.2.len();
    if comparable && a != b {
        assert_ne!(
            key_a.as_str(),
            key_b.as_str(),
            "{a:?} and {b:?} share a key"
        );
    }
});
