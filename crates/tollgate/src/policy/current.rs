//! The policy a limiter decides with now, read on every decision and replaced rarely.
//!
//! Reading it through `arc_swap` alone costs about a hundred instructions per decision (a
//! thread-local debt slot taken and paid back), a large share of a memory-store decision. So
//! every policy gets a process-unique version, and each thread keeps the last few policies it
//! read by version: a read is one atomic load of the version and a short thread-local search,
//! touching no shared cache line for writing. The `arc_swap` cell stays the source of truth
//! that a thread reads when its cache misses.
//!
//! A thread keeps up to [`CACHED`] policies alive after they were replaced, until it reads
//! other policies or exits.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::set::Policy;

/// How many policies a thread remembers: a process usually runs one or two limiters.
const CACHED: usize = 4;

/// Versions are unique in the process, so that a cached policy can never be mistaken for
/// another limiter's.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

struct Versioned {
    version: u64,
    policy: Arc<Policy>,
}

impl Versioned {
    fn new(policy: Arc<Policy>) -> Self {
        Versioned {
            version: NEXT_VERSION.fetch_add(1, Ordering::Relaxed),
            policy,
        }
    }
}

/// One thread's recently read policies, by version.
#[derive(Default)]
struct ThreadCache {
    entries: [Option<(u64, Arc<Policy>)>; CACHED],
    /// The entry the next miss replaces.
    next: usize,
}

thread_local! {
    static CACHE: RefCell<ThreadCache> = RefCell::default();
}

/// A limiter's current policy.
pub(crate) struct CurrentPolicy {
    cell: ArcSwap<Versioned>,
    /// The version in `cell`, stored after `cell` is (so a reader that sees a version finds
    /// that policy or a newer one in `cell`).
    version: AtomicU64,
    /// Serialises replacements, so that `version` always ends equal to `cell`'s.
    writer: Mutex<()>,
}

impl CurrentPolicy {
    pub(crate) fn new(policy: Policy) -> Self {
        let v = Versioned::new(Arc::new(policy));
        CurrentPolicy {
            version: AtomicU64::new(v.version),
            cell: ArcSwap::from_pointee(v),
            writer: Mutex::new(()),
        }
    }

    /// The current policy, shared.
    pub(crate) fn load_full(&self) -> Arc<Policy> {
        Arc::clone(&self.cell.load().policy)
    }

    /// Replaces the policy: every read that starts after this returns sees the new one.
    pub(crate) fn store(&self, policy: Policy) {
        let _writing = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let v = Versioned::new(Arc::new(policy));
        let version = v.version;
        self.cell.store(Arc::new(v));
        self.version.store(version, Ordering::Release);
    }

    /// Runs `f` on the current policy, from this thread's cache when it holds that version.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Policy) -> R) -> R {
        self.with_version(|_, policy| f(policy))
    }

    /// The version of the current policy: process-unique, so that a plan made under one
    /// version is known stale under any other (of this limiter or another).
    #[inline]
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// [`with`](Self::with), also handing `f` the version of the policy it reads.
    #[inline(always)]
    pub(crate) fn with_version<R>(&self, f: impl FnOnce(u64, &Policy) -> R) -> R {
        let version = self.version.load(Ordering::Acquire);
        let mut f = Some(f);
        let cached = CACHE.try_with(|cache| {
            let Ok(cache) = cache.try_borrow() else {
                return None;
            };
            let (_, policy) = cache
                .entries
                .iter()
                .flatten()
                .find(|(v, _)| *v == version)?;
            f.take().map(|f| f(version, policy))
        });
        if let Ok(Some(r)) = cached {
            return r;
        }
        let current = self.cell.load_full();
        // Remember it for the next read (not possible while this thread's cache is borrowed
        // by an enclosing read, or while the thread is exiting: then just answer).
        let _ = CACHE.try_with(|cache| {
            if let Ok(mut cache) = cache.try_borrow_mut() {
                let slot = cache.next % CACHED;
                cache.entries[slot] = Some((current.version, Arc::clone(&current.policy)));
                cache.next = slot.wrapping_add(1);
            }
        });
        match f.take() {
            Some(f) => f(current.version, &current.policy),
            // `f` only runs in the cached branch when that branch returns.
            None => unreachable!("the policy closure ran without answering"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Rule;
    use tollgate_core::{LimitKind, LimitSpec, Window};

    fn policy(rule: &str) -> Policy {
        Policy::builder()
            .rule(Rule::builder(rule).per("tenant").limit(LimitSpec::new(
                LimitKind::Requests,
                1,
                Window::MINUTE,
            )))
            .build()
            .expect("valid")
    }

    fn first_rule(p: &CurrentPolicy) -> String {
        p.with(|p| p.rules()[0].name().to_owned())
    }

    #[test]
    fn a_replaced_policy_is_seen_at_once_by_a_thread_that_cached_the_old_one() {
        let current = CurrentPolicy::new(policy("a"));
        assert_eq!(first_rule(&current), "a");
        assert_eq!(first_rule(&current), "a");
        current.store(policy("b"));
        assert_eq!(first_rule(&current), "b");
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(first_rule(&current), "b"));
        });
    }

    #[test]
    fn two_limiters_never_read_each_others_cached_policy() {
        let many: Vec<CurrentPolicy> = (0..CACHED * 2)
            .map(|i| CurrentPolicy::new(policy(&format!("r{i}"))))
            .collect();
        for _ in 0..3 {
            for (i, p) in many.iter().enumerate() {
                assert_eq!(first_rule(p), format!("r{i}"));
            }
        }
    }

    #[test]
    fn a_nested_read_is_answered() {
        let outer = CurrentPolicy::new(policy("outer"));
        let inner = CurrentPolicy::new(policy("inner"));
        let both = outer.with(|o| (o.rules()[0].name().to_owned(), first_rule(&inner)));
        assert_eq!(both, ("outer".to_owned(), "inner".to_owned()));
    }
}
