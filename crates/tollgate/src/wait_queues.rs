//! The wait queues of [`Limiter::acquire`](crate::Limiter::acquire): one fair (FIFO) async
//! mutex per bucket that has waiters, in sharded maps. The limiter's shared state holds them;
//! the waiting itself is in `wait.rs`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use parking_lot::Mutex;

/// The turn of one bucket's waiters.
pub(crate) type Queue = Arc<tokio::sync::Mutex<()>>;

const SHARDS: usize = 16;

/// The wait queues of one limiter, keyed by bucket.
pub(crate) struct WaitQueues<K> {
    shards: Box<[Mutex<HashMap<K, Queue>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl<K: Hash + Eq + Clone> WaitQueues<K> {
    pub(crate) fn new() -> Self {
        WaitQueues {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn shard(&self, key: &K) -> &Mutex<HashMap<K, Queue>> {
        let i = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        &self.shards[i % SHARDS]
    }

    /// The first of `keys` that has waiters.
    pub(crate) fn waiting<'k>(&self, keys: impl Iterator<Item = &'k K>) -> Option<(K, Queue)>
    where
        K: 'k,
    {
        keys.into_iter().find_map(|k| {
            self.shard(k)
                .lock()
                .get(k)
                .map(|q| (k.clone(), Arc::clone(q)))
        })
    }

    pub(crate) fn join(&self, key: &K) -> Queue {
        Arc::clone(
            self.shard(key)
                .lock()
                .entry(key.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(()))),
        )
    }

    /// Forgets the queue of `key` if nobody else holds it.
    pub(crate) fn leave(&self, key: &K, queue: Queue) {
        let mut shard = self.shard(key).lock();
        drop(queue);
        if shard.get(key).is_some_and(|q| Arc::strong_count(q) == 1) {
            shard.remove(key);
        }
    }
}
