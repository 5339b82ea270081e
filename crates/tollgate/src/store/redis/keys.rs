//! Redis key names: `<prefix>:{<partition>}:<rule>:<limit>`.
//!
//! The partition (the values of the rule's `*` attributes) is the hash tag, so all buckets of
//! one rule partition share a slot. Values are percent-escaped so that no value can forge
//! another key (`:`, `{`, `}`, `,`, `%`, `#`, glob characters and anything outside printable
//! ASCII), and values over 256 bytes are replaced by `#` and a SHA-256 prefix. A tag still
//! longer than 256 bytes (several values, or escapes tripling a value's length) is replaced by
//! `##` and a SHA-256 prefix of it, so that no key carries more than 256 bytes of partition.
//!
//! Why no value can forge another partition's tag: an escaped value holds no `#`, `,`, `{` or
//! `}` of its own, so a tag kept as it is never starts with `##` (a hashed value is `#` and hex
//! digits), and the tags are told apart by their text; the hashed forms of two different tags
//! differ unless SHA-256 collides on 128 bits. A partition of
//! one empty value is `%` (an empty tag, `{}`, is no hash tag to Redis).

use sha2::{Digest, Sha256};
use std::fmt::Write;

/// Values longer than this are hashed.
pub const MAX_VALUE_BYTES: usize = 256;
/// Hash tags (escaped partitions) longer than this are hashed.
pub(super) const MAX_TAG_BYTES: usize = 256;

/// Appends `value`, escaped, to `out`.
pub(super) fn push_escaped(out: &mut String, value: &str) {
    if value.len() > MAX_VALUE_BYTES {
        let digest = Sha256::digest(value.as_bytes());
        out.push('#');
        out.push_str(&hex::encode(&digest[..16]));
        return;
    }
    for b in value.bytes() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'/' | b'=' | b'@' | b'+');
        if plain {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The hash tag of a partition: its escaped values joined by `,` (`_` when the rule does not
/// partition), or `##` and a SHA-256 prefix of that when it is longer than
/// [`MAX_TAG_BYTES`].
pub(super) fn partition_tag(values: &[&str]) -> String {
    if values.is_empty() {
        return "_".to_owned();
    }
    let mut tag = String::with_capacity(values.iter().map(|v| v.len() + 1).sum());
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            tag.push(',');
        }
        push_escaped(&mut tag, v);
    }
    if tag.is_empty() {
        // One empty value. Braces with nothing between them are no hash tag: Redis would
        // hash the whole key, so the limits of the partition would land in different slots
        // from the one the store routes to. A lone `%` never comes out of escaping (which
        // writes `%XX`), so it names the empty value without meeting any other.
        tag.push('%');
        return tag;
    }
    if tag.len() > MAX_TAG_BYTES {
        let digest = Sha256::digest(tag.as_bytes());
        return format!("##{}", hex::encode(&digest[..16]));
    }
    tag
}

/// The full key of one bucket.
pub(super) fn bucket_key(prefix: &str, tag: &str, rule: &str, limit: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + tag.len() + rule.len() + limit.len() + 6);
    k.push_str(prefix);
    k.push_str(":{");
    k.push_str(tag);
    k.push_str("}:");
    push_escaped(&mut k, rule);
    k.push(':');
    push_escaped(&mut k, limit);
    k
}

/// The key of a request's idempotency record, in the slot of `tag`.
pub(super) fn request_key(prefix: &str, tag: &str, request_id: &str) -> String {
    let mut k = format!("{prefix}:{{{tag}}}:req:");
    push_escaped(&mut k, request_id);
    k
}

/// The cluster slot of a hash tag (CRC16/XMODEM modulo 16384, as Redis computes it).
pub(super) fn slot_of(tag: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % 16_384
}

/// The cluster slot of a whole key: of its hash tag (the text between the first `{` and the
/// next `}`, if that is not empty), or else of the whole key, as Redis computes it.
pub(super) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % 16_384
}

/// A SCAN pattern matching every bucket of `rule` (glob characters escaped).
pub(super) fn rule_pattern(prefix: &str, rule: &str) -> String {
    let mut escaped = String::new();
    push_escaped(&mut escaped, rule);
    let mut p = String::new();
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    format!("{p}:{{*}}:{escaped}:*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_forge_keys() {
        let a = bucket_key("tg", &partition_tag(&["a}:x", "b"]), "r", "l");
        let b = bucket_key("tg", &partition_tag(&["a", "}:x,b"]), "r", "l");
        assert_ne!(a, b);
        assert_eq!(a, "tg:{a%7D%3Ax,b}:r:l");
        assert!(!partition_tag(&["{x}"]).contains(['{', '}']));
        let long = "x".repeat(300);
        let t = partition_tag(&[&long]);
        assert!(t.starts_with('#') && t.len() == 33);
        // A short value cannot spell the hash of a long one: '#' is escaped.
        assert_ne!(partition_tag(&[&t]), t);
    }

    /// Found by the `redis_key` fuzz target: a partition of one empty value (`tenant = ""`)
    /// made the tag `{}`, which Redis does not treat as a hash tag.
    #[test]
    fn an_empty_value_still_makes_a_hash_tag() {
        let tag = partition_tag(&[""]);
        assert_eq!(tag, "%");
        let key = bucket_key("tg", &tag, "r", "l");
        assert_eq!(key_slot(key.as_bytes()), slot_of(&tag));
        let other = bucket_key("tg", &tag, "r", "other");
        assert_eq!(key_slot(other.as_bytes()), key_slot(key.as_bytes()));
        // Distinct from every other partition of one value, and from none at all.
        assert_ne!(tag, partition_tag(&["%"]));
        assert_ne!(tag, partition_tag(&["_"]));
        assert_ne!(tag, partition_tag(&[]));
        assert_eq!(partition_tag(&["", ""]), ",");
    }

    #[test]
    fn long_partitions_are_hashed_and_still_cannot_forge_keys() {
        // Three values of 250 bytes each, all escapes: over 2 KB of tag if kept.
        let v = "é".repeat(125);
        let long = partition_tag(&[&v, &v, &v]);
        assert!(long.starts_with("##") && long.len() == 34, "{long}");
        let key = bucket_key("tollgate", &long, "per-user", "requests");
        assert_eq!(key_slot(key.as_bytes()), slot_of(&long));
        // At the limit a tag is kept; one byte over, it is hashed.
        let at = "a".repeat(MAX_TAG_BYTES);
        assert_eq!(partition_tag(&[&at]), at);
        let over = "a".repeat(MAX_TAG_BYTES - 1);
        let t = partition_tag(&[&over, "b"]);
        assert!(t.starts_with("##"), "{t}");
        // One short value too long once escaped is hashed as a tag too.
        assert!(partition_tag(&["{".repeat(100).as_str()]).starts_with("##"));
        // Distinct partitions keep distinct tags: the values, their split, their order.
        let a = "x".repeat(200);
        let b = "y".repeat(200);
        let tags = [
            partition_tag(&[&a, &b]),
            partition_tag(&[&b, &a]),
            partition_tag(&[&format!("{a},{b}")]),
            partition_tag(&[&a[..199], &format!("x{b}")]),
        ];
        for (i, x) in tags.iter().enumerate() {
            for y in &tags[i + 1..] {
                assert_ne!(x, y);
            }
        }
        // A value cannot spell a hashed tag: its `#` are escaped.
        assert_ne!(partition_tag(&[&long]), long);
        assert!(!partition_tag(&[&long]).starts_with('#'));
        // A single value over 256 bytes keeps its own hash (the layout it always had).
        let huge = "z".repeat(300);
        let h = partition_tag(&[&huge]);
        assert!(h.starts_with('#') && !h.starts_with("##") && h.len() == 33);
    }

    #[test]
    fn slots_follow_redis() {
        // Known values from the Redis cluster specification's CRC16 test vector.
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31C3
        );
        assert_eq!(slot_of("_"), slot_of("_"));
        assert!(slot_of("tenant-1") < 16_384);
    }

    #[test]
    fn a_key_hashes_by_its_tag() {
        let key = bucket_key("tg", &partition_tag(&["t"]), "r", "l");
        assert_eq!(key_slot(key.as_bytes()), slot_of("t"));
        // `CLUSTER KEYSLOT foo` is 12182; an empty tag (also before a later one) hashes the whole key.
        assert_eq!(key_slot(b"foo"), 12_182);
        assert_eq!(key_slot(b"{}foo"), slot_of("{}foo"));
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), slot_of("foo{}{bar}"));
    }
}
