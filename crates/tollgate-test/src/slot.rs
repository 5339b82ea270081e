//! Redis Cluster key hashing.

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the
/// bytes between the first `{` and the next `}`, if not empty), modulo 16384.
///
/// Matches `CLUSTER KEYSLOT`; useful to pick keys that land in (or away from) given slots.
///
/// ```
/// use tollgate_test::key_slot;
/// assert_eq!(key_slot(b"123456789"), 0x31C3 % 16_384);
/// assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
/// assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}")); // an empty tag hashes the whole key
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % 16_384
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}
