//! The map of GCRA buckets in one shard: each bucket's key and state in one 32-byte slot that
//! never straddles two cache lines.
//!
//! A `std` map of 32-byte (key, state) entries is aligned to 8 bytes: its entries start 16
//! bytes into a 32-byte stretch as often as not (the allocator's header), and then half of
//! them span two cache lines, so a lookup that misses the cache misses twice. Here a slot is
//! aligned to 32 bytes, which the table's allocation honours, so a bucket is one line.

use hashbrown::hash_table::{Entry, HashTable, OccupiedEntry};
use tollgate_core::algorithms::gcra::Gcra;
use tollgate_core::{Limit, Timestamp};

use super::MemoryKey;

/// GCRA state as `tat = micros * scale + rem`: whole microseconds tell when it is full.
#[derive(Clone, Copy, Debug)]
pub(super) struct GcraCell {
    micros: u64,
    rem: u64,
}

impl GcraCell {
    #[inline]
    pub(super) fn to_state(self, limit: &Limit) -> Gcra {
        let scale64 = limit.gcra().scale;
        if scale64 == 1 {
            return Gcra {
                tat: u128::from(self.micros),
            };
        }
        let scale = u128::from(scale64);
        Gcra {
            tat: u128::from(self.micros)
                .saturating_mul(scale)
                .saturating_add(u128::from(self.rem)),
        }
    }

    #[inline]
    pub(super) fn from_state(g: Gcra, limit: &Limit) -> Self {
        let scale64 = limit.gcra().scale.max(1);
        if let Ok(tat) = u64::try_from(g.tat) {
            // The usual cases: no division at all, or a 64-bit one instead of a 128-bit one.
            if scale64 == 1 {
                return GcraCell {
                    micros: tat,
                    rem: 0,
                };
            }
            return GcraCell {
                micros: tat / scale64,
                rem: tat % scale64,
            };
        }
        let scale = u128::from(scale64);
        let micros = g.tat.checked_div(scale).unwrap_or(0);
        match u64::try_from(micros) {
            Ok(m) => GcraCell {
                micros: m,
                rem: u64::try_from(g.tat.checked_rem(scale).unwrap_or(0)).unwrap_or(0),
            },
            Err(_) => GcraCell {
                micros: u64::MAX,
                rem: 0,
            },
        }
    }

    /// Full (equal to no bucket) at `now`: `tat <= now * scale`, with `0 <= rem < scale`.
    pub(super) fn is_full(self, now: Timestamp) -> bool {
        let now = now.as_micros();
        self.micros < now || (self.micros == now && self.rem == 0)
    }
}

/// One bucket: its key and its state, aligned so that it fills half a cache line exactly.
#[repr(C, align(32))]
struct Slot {
    key: MemoryKey,
    cell: GcraCell,
}

/// The GCRA buckets of one shard, by key.
#[derive(Default)]
pub(super) struct GcraMap {
    table: HashTable<Slot>,
}

/// A key's place in a [`GcraMap`], found by one probe: its bucket, or none (the key is
/// full).
pub(super) struct GcraEntry<'a>(Option<OccupiedEntry<'a, Slot>>);

/// The slot's hash: the key's own bits (see [`MemoryKey::map_hash`]).
#[inline(always)]
fn hash_of(slot: &Slot) -> u64 {
    slot.key.map_hash()
}

impl GcraMap {
    /// How many buckets are held.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The state of `key`'s bucket, if held.
    #[inline(always)]
    pub(super) fn get(&self, key: &MemoryKey) -> Option<&GcraCell> {
        self.table
            .find(key.map_hash(), |s| s.key == *key)
            .map(|s| &s.cell)
    }

    /// The state of `key`'s bucket, to change in place, if held.
    #[inline(always)]
    pub(super) fn get_mut(&mut self, key: &MemoryKey) -> Option<&mut GcraCell> {
        self.table
            .find_mut(key.map_hash(), |s| s.key == *key)
            .map(|s| &mut s.cell)
    }

    /// Whether `key`'s bucket is held.
    pub(super) fn contains_key(&self, key: &MemoryKey) -> bool {
        self.get(key).is_some()
    }

    /// `key`'s place, found once, to read and then change or remove.
    #[inline(always)]
    pub(super) fn entry(&mut self, key: MemoryKey) -> GcraEntry<'_> {
        GcraEntry(self.table.find_entry(key.map_hash(), |s| s.key == key).ok())
    }

    /// Holds `cell` as `key`'s bucket, replacing the one held.
    #[inline(always)]
    pub(super) fn insert(&mut self, key: MemoryKey, cell: GcraCell) {
        match self.table.entry(key.map_hash(), |s| s.key == key, hash_of) {
            Entry::Occupied(mut e) => e.get_mut().cell = cell,
            Entry::Vacant(e) => {
                e.insert(Slot { key, cell });
            }
        }
    }

    /// Forgets `key`'s bucket, if held.
    #[inline(always)]
    pub(super) fn remove(&mut self, key: &MemoryKey) {
        if let Ok(e) = self.table.find_entry(key.map_hash(), |s| s.key == *key) {
            e.remove();
        }
    }

    /// Keeps the buckets for which `keep` holds.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&MemoryKey, &GcraCell) -> bool) {
        self.table.retain(|s| keep(&s.key, &s.cell));
    }

    /// Every bucket held, in no order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&MemoryKey, &GcraCell)> {
        self.table.iter().map(|s| (&s.key, &s.cell))
    }
}

impl GcraEntry<'_> {
    /// The bucket's state, if held.
    #[inline(always)]
    pub(super) fn cell(&self) -> Option<GcraCell> {
        self.0.as_ref().map(|e| e.get().cell)
    }

    /// Replaces the held bucket's state (nothing if absent).
    #[inline(always)]
    pub(super) fn set(&mut self, cell: GcraCell) {
        if let Some(e) = &mut self.0 {
            e.get_mut().cell = cell;
        }
    }

    /// Forgets the held bucket (nothing if absent).
    #[inline(always)]
    pub(super) fn remove(self) {
        if let Some(e) = self.0 {
            e.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> MemoryKey {
        MemoryKey {
            hi: n,
            lo: n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        }
    }

    fn cell(micros: u64) -> GcraCell {
        GcraCell { micros, rem: 0 }
    }

    /// The point of the slot: a bucket never spans two cache lines, wherever the allocator
    /// puts the table.
    #[test]
    fn no_bucket_straddles_a_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        for n in [1_u64, 10, 100, 1_000, 10_000] {
            let mut map = GcraMap::default();
            for i in 0..n {
                map.insert(key(i), cell(i));
            }
            for (_, c) in map.iter() {
                let at = std::ptr::from_ref(c) as usize;
                // The cell is the slot's second half: the slot starts 16 bytes before it.
                assert_eq!((at - 16) % 32, 0, "a slot of {n} starts mid-way");
            }
        }
    }

    #[test]
    fn holds_replaces_and_forgets_buckets() {
        let mut map = GcraMap::default();
        for i in 0..1_000 {
            map.insert(key(i), cell(i));
        }
        assert_eq!(map.len(), 1_000);
        map.insert(key(7), cell(70));
        assert_eq!(map.len(), 1_000, "a second insert replaces");
        assert_eq!(map.get(&key(7)).map(|c| c.micros), Some(70));
        if let Some(c) = map.get_mut(&key(8)) {
            *c = cell(80);
        }
        assert_eq!(map.get(&key(8)).map(|c| c.micros), Some(80));
        let mut e = map.entry(key(9));
        assert_eq!(e.cell().map(|c| c.micros), Some(9));
        e.set(cell(90));
        assert_eq!(map.get(&key(9)).map(|c| c.micros), Some(90));
        map.entry(key(9)).remove();
        assert!(!map.contains_key(&key(9)));
        assert!(map.entry(key(9)).cell().is_none());
        map.remove(&key(10));
        map.remove(&key(10_000));
        assert_eq!(map.len(), 998);
        map.retain(|_, c| c.micros % 2 == 0);
        assert!(map
            .iter()
            .all(|(k, c)| c.micros % 2 == 0 && map.get(k).is_some()));
        assert_eq!(
            map.len(),
            500,
            "the even of 0..1000 less 10, and 7 (now 70)"
        );
    }
}
