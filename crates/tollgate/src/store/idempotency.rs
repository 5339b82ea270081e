//! Remembering decisions by request id, so that a retried call is answered, not re-spent.

use std::collections::HashMap;
use std::time::Duration;

use crate::sync::Mutex;
use tollgate_core::Timestamp;

use super::StoreOutcome;

/// Decisions by request id, each kept for a window. Expired entries are dropped whenever the
/// map has doubled since the last sweep, so memory stays proportional to the live window.
pub(crate) struct Seen {
    window_us: u64,
    inner: Mutex<SeenInner>,
}

struct SeenInner {
    map: HashMap<String, (StoreOutcome, u64)>,
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
        }
    }

    /// The decision first made for `id`, if it is still remembered at `now`.
    pub(crate) fn get(&self, id: &str, now: Timestamp) -> Option<StoreOutcome> {
        let inner = self.inner.lock();
        match inner.map.get(id) {
            Some((o, until)) if *until > now.as_micros() => {
                let mut replay = o.clone();
                // A replay spends nothing.
                replay.spent = false;
                Some(replay)
            }
            _ => None,
        }
    }

    pub(crate) fn remember(&self, id: &str, outcome: &StoreOutcome) {
        let now = outcome.now.as_micros();
        let mut inner = self.inner.lock();
        if inner.map.len() >= inner.sweep_at {
            inner.map.retain(|_, (_, until)| *until > now);
            inner.sweep_at = inner.map.len().saturating_mul(2).max(1024);
        }
        inner.map.insert(
            id.to_owned(),
            (outcome.clone(), now.saturating_add(self.window_us)),
        );
    }
}
