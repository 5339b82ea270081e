//! The memory store's concurrent paths under the loom model checker: every interleaving (up to
//! a bound on preemptions) of spends, settlements, permit drops and the waiters' wake-up.
//!
//! Run with `RUSTFLAGS="--cfg tollgate_loom" cargo test --release -p tollgate --test loom_memory`
//! (the store's locks are loom's in that build: see `src/sync.rs`). `LOOM_MAX_PREEMPTIONS`
//! overrides the default bound of 3.
//!
//! What is shown:
//! - no lost update: concurrent spends from one bucket admit exactly its capacity; a decision
//!   over buckets in two shards spends from both or neither, in either lock order, without
//!   deadlock; a refund or a slot release racing with spends is never overwritten;
//! - no lost wake-up: a waiter that finds no room is woken by a permit that is dropped or
//!   committed below its estimate, whatever the interleaving, and then finds room.
//!
//! The wake-up runs through the real limiter, permits and store, but not through
//! `Limiter::acquire` itself: its wait is a tokio `Notify` raced against a tokio timer, which
//! loom cannot drive. [`Released`] models the protocol it implements exactly: a waiter takes
//! its ticket (`Notify::notified`, enabled, which records the count of `notify_waiters` calls)
//! *before* it tries, and a settlement notifies *after* it has changed the buckets; the wait
//! ends once a `notify_waiters` later than the ticket happened. The model has no timer, so a
//! lost wake-up is not hidden by a retry at `retry_after`: it is a deadlock, which loom
//! reports. [`a_waiter_that_tries_before_taking_its_ticket_can_sleep_forever`] shows that
//! loom finds exactly that when the order is reversed.

#![cfg(tollgate_loom)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loom::future::block_on;
use loom::sync::{Condvar, Mutex};
use loom::thread;
use tollgate::key::BucketName;
use tollgate::store::{FailureMode, Mode, Op, Settlement, Store};
use tollgate::{
    Cost, LimitKind, LimitSpec, Limiter, ManualClock, MemoryStore, Policy, Rule, Subject,
    Timestamp, Window,
};
use tollgate_core::Limit;

/// Runs `f` under loom, with at most `LOOM_MAX_PREEMPTIONS` (default 3) preemptions per
/// execution.
/// Prints how many executions (interleavings) it explored.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    builder.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let runs = runs.load(Ordering::Relaxed);
    eprintln!("{runs} executions");
    assert!(
        runs > 1,
        "a model that explores one interleaving shows nothing"
    );
}

fn now() -> Timestamp {
    Timestamp::from_secs(1_000)
}

/// A store of two shards (fewer loom objects) whose clock stands still, so that nothing
/// refills during a model: every admission is accounted for by the buckets.
fn store() -> MemoryStore {
    MemoryStore::builder()
        .clock(ManualClock::new(now()))
        .shards(2)
        .build()
}

fn limit(spec: LimitSpec) -> Limit {
    spec.build().expect("a valid limit")
}

/// The key of a bucket whose partition hash is `partition`: its low bits pick the shard.
fn key(store: &MemoryStore, partition: u128) -> tollgate::store::memory::MemoryKey {
    store.bucket_key(&BucketName {
        rule: "r",
        rule_id: 1,
        limit: "l",
        partition: &[],
        partition_hash: partition,
        limit_salt: 0,
    })
}

fn op(
    key: tollgate::store::memory::MemoryKey,
    limit: Limit,
    cost: u64,
) -> Op<tollgate::store::memory::MemoryKey> {
    Op {
        key,
        limit,
        cost,
        failure: FailureMode::Closed,
    }
}

fn used(store: &MemoryStore, ops: &[Op<tollgate::store::memory::MemoryKey>]) -> Vec<u64> {
    store.usage_now(ops).1.iter().map(|u| u.used).collect()
}

/// Three callers spending 1 from a bucket of 2: exactly two are admitted, and the bucket
/// holds both spends (a lost update would admit the third, or count one spend).
#[test]
fn concurrent_spends_admit_exactly_the_capacity() {
    model(|| {
        let store = Arc::new(store());
        let tokens = limit(LimitSpec::new(LimitKind::Requests, 2, Window::HOUR));
        let ops = [op(key(&store, 0), tokens, 1)];
        let spenders: Vec<_> = (0..2)
            .map(|_| {
                let (store, ops) = (Arc::clone(&store), ops.clone());
                thread::spawn(move || store.decide_now(&ops, Mode::Spend, 0).spent)
            })
            .collect();
        let mine = store.decide_now(&ops, Mode::Spend, 0).spent;
        let admitted = spenders
            .into_iter()
            .map(|t| t.join().expect("a spender"))
            .chain([mine])
            .filter(|&a| a)
            .count();
        assert_eq!(admitted, 2);
        assert_eq!(used(&store, &ops), [2]);
    });
}

/// Two callers spending from the same two buckets, in two shards, naming them in opposite
/// orders; one bucket has room for one call. One is admitted, and it spent from both buckets;
/// the other spent from neither; neither waits forever on the other's lock.
#[test]
fn a_decision_over_two_shards_spends_from_both_or_neither() {
    model(|| {
        let store = Arc::new(store());
        let one = limit(LimitSpec::new(LimitKind::Requests, 1, Window::HOUR));
        let ten = limit(LimitSpec::new(LimitKind::Requests, 10, Window::HOUR));
        let (a, b) = (key(&store, 0), key(&store, 1));
        let forward = [op(a, one, 1), op(b, ten, 1)];
        let backward = [op(b, ten, 1), op(a, one, 1)];
        let other = {
            let store = Arc::clone(&store);
            thread::spawn(move || store.decide_now(&backward, Mode::Spend, 0).spent)
        };
        let mine = store.decide_now(&forward, Mode::Spend, 0).spent;
        let theirs = other.join().expect("the other caller");
        assert!(
            mine ^ theirs,
            "exactly one admitted (mine {mine}, theirs {theirs})"
        );
        assert_eq!(used(&store, &forward), [1, 1]);
    });
}

/// A reservation of the whole bucket is refunded while two callers spend: the refund is
/// never overwritten by a spend, nor a spend by the refund. Whatever was admitted is exactly
/// what the bucket holds.
#[test]
fn a_refund_racing_with_spends_loses_nothing() {
    model(|| {
        let store = Arc::new(store());
        let tokens = limit(LimitSpec::new(LimitKind::Tokens, 10, Window::HOUR));
        let k = key(&store, 0);
        let ops = [op(k, tokens, 4)];
        assert!(store.decide_now(&[op(k, tokens, 10)], Mode::Spend, 0).spent);
        let spenders: Vec<_> = (0..2)
            .map(|_| {
                let (store, ops) = (Arc::clone(&store), ops.clone());
                thread::spawn(move || store.decide_now(&ops, Mode::Spend, 0).spent)
            })
            .collect();
        store.settle_sync(&[Settlement::Refund {
            key: k,
            limit: tokens,
            spent_at: now(),
            cost: 10,
        }]);
        let admitted = spenders
            .into_iter()
            .map(|t| t.join().expect("a spender"))
            .filter(|&a| a)
            .count() as u64;
        assert_eq!(used(&store, &ops), [4 * admitted]);
    });
}

/// A held slot is released while another caller asks for one: the release is never lost.
/// Either the caller got the slot (and holds the only one), or it found it taken and the slot
/// is free afterwards.
#[test]
fn a_slot_release_racing_with_a_spend_is_never_lost() {
    model(|| {
        let store = Arc::new(store());
        let slots = limit(LimitSpec::concurrency(1).lease(Duration::from_secs(60)));
        let k = key(&store, 0);
        let take = [op(k, slots, 1)];
        assert!(store.decide_now(&take, Mode::Spend, 1).spent);
        let caller = {
            let (store, take) = (Arc::clone(&store), take.clone());
            thread::spawn(move || store.decide_now(&take, Mode::Spend, 2).spent)
        };
        let found = store.settle_sync(&[Settlement::Release {
            key: k,
            limit: slots,
            lease: 1,
        }]);
        assert_eq!(found, 1, "lease 1 was held");
        let admitted = caller.join().expect("the caller");
        assert_eq!(used(&store, &take), [u64::from(admitted)]);
    });
}

/// Two calls with the same request id at once (a client's hedged retry): the id makes them
/// one call, so one spend. (Without the id's turn held from lookup to remember, both calls
/// can miss the lookup and both spend: loom finds that interleaving.)
#[test]
fn one_request_id_sent_twice_at_once_spends_once() {
    model(|| {
        let store = Arc::new(store());
        let requests = limit(LimitSpec::new(LimitKind::Requests, 10, Window::HOUR));
        let ops = [op(key(&store, 0), requests, 1)];
        let retry = {
            let (store, ops) = (Arc::clone(&store), ops.clone());
            thread::spawn(move || store.decide_sync(&ops, Mode::Spend, 0, Some("req-1")))
        };
        store.decide_sync(&ops, Mode::Spend, 0, Some("req-1"));
        retry.join().expect("the retry");
        assert_eq!(used(&store, &ops), [1], "one request id, one spend");
    });
}

/// tokio's `Notify::notify_waiters` as the waiters' wake-up uses it (see the module docs): a
/// ticket is the count of notifications so far; a wait on a ticket ends at the first later
/// notification, and only then.
#[derive(Default)]
struct Released {
    calls: Mutex<u64>,
    woken: Condvar,
}

impl Released {
    /// `Notify::notified()`, enabled.
    fn ticket(&self) -> u64 {
        *self.calls.lock().expect("not poisoned")
    }

    /// `Notify::notify_waiters()`.
    fn notify_waiters(&self) {
        *self.calls.lock().expect("not poisoned") += 1;
        self.woken.notify_all();
    }

    /// Awaiting the `Notified` future of `ticket`.
    fn wait(&self, ticket: u64) {
        let mut calls = self.calls.lock().expect("not poisoned");
        while *calls == ticket {
            calls = self.woken.wait(calls).expect("not poisoned");
        }
    }
}

fn limiter(spec: LimitSpec) -> Limiter<MemoryStore> {
    let policy = Policy::builder()
        .rule(Rule::builder("r").per("tenant").limit(spec))
        .build()
        .expect("a valid policy");
    Limiter::with_store(policy, store())
}

fn who() -> Subject<'static> {
    Subject::new().tenant("t")
}

/// The waiter's loop (`wait_in_queue`): take a ticket, try, and if denied wait for a
/// notification. Returns how many tries it took. With `ticket_first` false, the order of the
/// first two steps is reversed (the bug the real order prevents).
fn wait_for_room(
    limiter: &Limiter<MemoryStore>,
    released: &Released,
    cost: Cost,
    ticket_first: bool,
) -> u32 {
    let mut tries = 0;
    loop {
        tries += 1;
        let early = ticket_first.then(|| released.ticket());
        let tried = block_on(limiter.reserve(&who(), cost)).expect("the memory store decides");
        if let Some(permit) = tried.granted() {
            // Dropping a permit releases its slot, then notifies (`settle_detached`).
            drop(permit);
            released.notify_waiters();
            return tries;
        }
        let ticket = early.unwrap_or_else(|| released.ticket());
        released.wait(ticket);
    }
}

/// A waiter for the only concurrency slot, while the holder drops its permit (which
/// releases the slot, then notifies): the waiter is always woken, and then gets the slot at
/// once (one notification, so at most two tries).
#[test]
fn a_dropped_permit_wakes_the_waiter_for_its_slot() {
    model(|| {
        let limiter = limiter(LimitSpec::concurrency(1).lease(Duration::from_secs(60)));
        let released = Arc::new(Released::default());
        let permit = block_on(limiter.reserve(&who(), Cost::requests(1)))
            .expect("the memory store decides")
            .granted()
            .expect("the slot is free");
        let waiter = {
            let (limiter, released) = (limiter.clone(), Arc::clone(&released));
            thread::spawn(move || wait_for_room(&limiter, &released, Cost::requests(1), true))
        };
        drop(permit);
        released.notify_waiters();
        let tries = waiter.join().expect("the waiter");
        assert!(tries <= 2, "{tries} tries");
    });
}

/// Two waiters for the only slot while its holder drops its permit; each waiter drops its
/// own permit once admitted. Both are always woken and both get the slot in turn, however
/// the three interleave.
#[test]
fn two_waiters_for_one_slot_both_get_it_in_turn() {
    model(|| {
        let limiter = limiter(LimitSpec::concurrency(1).lease(Duration::from_secs(60)));
        let released = Arc::new(Released::default());
        let permit = block_on(limiter.reserve(&who(), Cost::requests(1)))
            .expect("the memory store decides")
            .granted()
            .expect("the slot is free");
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (limiter, released) = (limiter.clone(), Arc::clone(&released));
                thread::spawn(move || wait_for_room(&limiter, &released, Cost::requests(1), true))
            })
            .collect();
        drop(permit);
        released.notify_waiters();
        for w in waiters {
            w.join().expect("a waiter");
        }
        let usage = block_on(limiter.usage(&who())).expect("usage");
        assert_eq!(usage[0].used, 0, "every slot given back");
    });
}

/// A waiter for tokens, while the holder of the whole bucket commits less than it reserved
/// (a refund, then a notification): the waiter is always woken, and then fits.
#[test]
fn a_commit_below_the_estimate_wakes_the_waiter_for_tokens() {
    model(|| {
        let limiter = limiter(LimitSpec::new(LimitKind::Tokens, 10, Window::HOUR));
        let released = Arc::new(Released::default());
        let mut permit = block_on(limiter.reserve(&who(), Cost::tokens(10)))
            .expect("the memory store decides")
            .granted()
            .expect("the bucket is full");
        let waiter = {
            let (limiter, released) = (limiter.clone(), Arc::clone(&released));
            thread::spawn(move || wait_for_room(&limiter, &released, Cost::tokens(5), true))
        };
        block_on(permit.commit(Cost::tokens(2))).expect("the memory store settles");
        released.notify_waiters();
        let tries = waiter.join().expect("the waiter");
        assert!(tries <= 2, "{tries} tries");
        let usage = block_on(limiter.usage(&who())).expect("usage");
        assert_eq!(usage[0].used, 7, "2 committed, 5 admitted");
    });
}

/// The control: a waiter that tries first and takes its ticket afterwards misses a release
/// that lands between the two, and sleeps forever. Loom finds that interleaving (and reports
/// the deadlock), which shows that the tests above explore it.
#[test]
#[should_panic(expected = "deadlock")]
fn a_waiter_that_tries_before_taking_its_ticket_can_sleep_forever() {
    model(|| {
        let limiter = limiter(LimitSpec::concurrency(1).lease(Duration::from_secs(60)));
        let released = Arc::new(Released::default());
        let permit = block_on(limiter.reserve(&who(), Cost::requests(1)))
            .expect("the memory store decides")
            .granted()
            .expect("the slot is free");
        let waiter = {
            let (limiter, released) = (limiter.clone(), Arc::clone(&released));
            thread::spawn(move || wait_for_room(&limiter, &released, Cost::requests(1), false))
        };
        drop(permit);
        released.notify_waiters();
        waiter.join().expect("the waiter");
    });
}
