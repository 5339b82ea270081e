//! Remembering admissions by request id, so that a retried call is answered, not re-spent.
//!
//! - An id is scoped to what the call asked: its buckets, its costs and its mode (and, through
//!   the limiter, its subject). The same id with another subject or cost is another request,
//!   decided on its own: never someone else's answer, never a free pass on someone else's
//!   spend.
//! - Only an admission that spent is remembered. A denial is decided again when retried (the
//!   capacity may have come back since), and so is a peek.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::sync::{Mutex, MutexGuard};
use siphasher::sip::SipHasher13;
use tollgate_core::Timestamp;

use super::{Mode, Op, StoreOutcome};

/// Fixed keys, so that every process of a fleet computes the same fingerprint.
const KEYS: (u64, u64) = (0x746f_6c6c_6761_7465, 0x7265_7175_6573_7473);

/// A fingerprint of what a request asks: each operation's bucket (as `key` writes it) and
/// cost, and the mode. Stable across processes and versions for the same bytes.
pub(crate) fn fingerprint<K>(
    ops: &[Op<K>],
    mode: Mode,
    mut key: impl FnMut(&K, &mut SipHasher13),
) -> u64 {
    let mut h = SipHasher13::new_with_keys(KEYS.0, KEYS.1);
    h.write_u8(match mode {
        Mode::Spend => b's',
        Mode::Peek => b'p',
    });
    h.write_u64(ops.len() as u64);
    for op in ops {
        key(&op.key, &mut h);
        h.write_u64(op.cost);
    }
    h.finish()
}

/// `id` scoped to `subject`: the id, then a fingerprint of the subject's attributes (sorted by
/// name), so that another subject sending the same id makes another request even where both
/// spend from the same buckets (a rule that does not partition by what tells them apart).
pub(crate) fn subject_scoped(id: &str, subject: &crate::Subject<'_>) -> String {
    let mut attrs: smallvec::SmallVec<[(&str, &str); 8]> = subject.iter().collect();
    attrs.sort_unstable();
    let mut h = SipHasher13::new_with_keys(KEYS.0, KEYS.1);
    for (name, value) in attrs {
        h.write(name.as_bytes());
        h.write_u8(0xff);
        h.write(value.as_bytes());
        h.write_u8(0xff);
    }
    format!("{id}/{:016x}", h.finish())
}

/// [`fingerprint`] of keys hashed with [`Hash`]: for a store whose records never leave the
/// process (the memory store).
pub(crate) fn local_fingerprint<K: Hash>(ops: &[Op<K>], mode: Mode) -> u64 {
    fingerprint(ops, mode, |k, h| k.hash(h))
}

/// Admissions by request id and fingerprint, each kept for a window. Expired entries are
/// dropped whenever the map has doubled since the last sweep, so memory stays proportional to
/// the live window.
///
/// A call with an id takes its id's turn ([`Seen::turn`]) before the lookup and keeps it until
/// its answer is remembered, so that two calls with one id at once (a client's hedged retry)
/// are one lookup-decide-remember after the other: the second finds the first's admission.
pub(crate) struct Seen {
    window_us: u64,
    inner: Mutex<SeenInner>,
    /// Turns by a hash of the id and fingerprint: calls with different ids rarely wait for
    /// each other, calls with the same id always do.
    turns: Box<[Mutex<()>]>,
}

/// How many turn locks [`Seen`] stripes request ids over.
const TURNS: usize = 32;

struct SeenInner {
    map: HashMap<(String, u64), (StoreOutcome, u64)>,
    sweep_at: usize,
}

impl Seen {
    pub(crate) fn new(window: Duration) -> Self {
        Seen {
            window_us: tollgate_core::duration_to_micros_ceil(window),
            inner: Mutex::new(SeenInner {
                map: HashMap::new(),
                sweep_at: 1024,
            }),
            turns: (0..TURNS).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The turn of `id` with `fingerprint`: held from before [`get`](Self::get) until after
    /// [`remember`](Self::remember), it makes the three one step for calls with the same id.
    /// Taken before any bucket lock, and no bucket lock holder takes one, so it cannot
    /// deadlock with the store's shards.
    pub(crate) fn turn(&self, id: &str, fingerprint: u64) -> MutexGuard<'_, ()> {
        let mut h = SipHasher13::new_with_keys(KEYS.0, KEYS.1);
        h.write(id.as_bytes());
        h.write_u64(fingerprint);
        self.turns[(h.finish() % TURNS as u64) as usize].lock()
    }

    /// The admission first made for `id` with this `fingerprint`, if it is still remembered
    /// at `now`.
    pub(crate) fn get(&self, id: &str, fingerprint: u64, now: Timestamp) -> Option<StoreOutcome> {
        let inner = self.inner.lock();
        match inner.map.get(&(id.to_owned(), fingerprint)) {
            Some((o, until)) if *until > now.as_micros() => {
                let mut replay = o.clone();
                // A replay spends nothing.
                replay.spent = false;
                Some(replay)
            }
            _ => None,
        }
    }

    /// Remembers `outcome` for `id` and `fingerprint` if it is an admission that spent;
    /// anything else will be decided again.
    pub(crate) fn remember(&self, id: &str, fingerprint: u64, outcome: &StoreOutcome) {
        if !outcome.spent || outcome.verdicts.iter().any(|v| !v.admitted) {
            return;
        }
        let now = outcome.now.as_micros();
        let mut inner = self.inner.lock();
        if inner.map.len() >= inner.sweep_at {
            inner.map.retain(|_, (_, until)| *until > now);
            inner.sweep_at = inner.map.len().saturating_mul(2).max(1024);
        }
        inner.map.insert(
            (id.to_owned(), fingerprint),
            (outcome.clone(), now.saturating_add(self.window_us)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FailureMode, Route};
    use smallvec::smallvec;
    use tollgate_core::{LimitKind, LimitSpec, Verdict, Window};

    fn op(key: u32, cost: u64) -> Op<u32> {
        Op {
            key,
            limit: LimitSpec::new(LimitKind::Requests, 10, Window::MINUTE)
                .build()
                .unwrap(),
            cost,
            failure: FailureMode::Local,
        }
    }

    fn outcome(admitted: bool, spent: bool) -> StoreOutcome {
        StoreOutcome {
            now: Timestamp::from_secs(100),
            verdicts: smallvec![Verdict {
                admitted,
                ..Verdict::default()
            }],
            spent,
            store_full: false,
            route: Route::PRIMARY,
            degraded: None,
        }
    }

    #[test]
    fn the_fingerprint_tells_buckets_costs_and_modes_apart() {
        let f = |ops: &[Op<u32>], mode| local_fingerprint(ops, mode);
        let base = f(&[op(1, 1)], Mode::Spend);
        assert_eq!(base, f(&[op(1, 1)], Mode::Spend));
        assert_ne!(base, f(&[op(2, 1)], Mode::Spend), "another bucket");
        assert_ne!(base, f(&[op(1, 2)], Mode::Spend), "another cost");
        assert_ne!(base, f(&[op(1, 1)], Mode::Peek), "another mode");
        assert_ne!(base, f(&[op(1, 1), op(2, 0)], Mode::Spend), "more buckets");
    }

    #[test]
    fn only_admissions_that_spent_are_remembered_and_only_for_their_fingerprint() {
        let seen = Seen::new(Duration::from_secs(60));
        let now = Timestamp::from_secs(101);
        seen.remember("denied", 1, &outcome(false, false));
        assert!(
            seen.get("denied", 1, now).is_none(),
            "a denial is decided again"
        );
        seen.remember("peeked", 1, &outcome(true, false));
        assert!(seen.get("peeked", 1, now).is_none(), "nothing spent");
        seen.remember("admitted", 1, &outcome(true, true));
        let replay = seen.get("admitted", 1, now).expect("remembered");
        assert!(!replay.spent, "a replay spends nothing");
        assert!(seen.get("admitted", 2, now).is_none(), "another request");
        assert!(
            seen.get("admitted", 1, Timestamp::from_secs(160)).is_none(),
            "the window is over"
        );
    }
}
