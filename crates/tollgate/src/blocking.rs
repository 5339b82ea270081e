//! A blocking facade over the same limiter, for code without an async runtime.

use std::time::Duration;

use tokio::runtime::{Builder, Runtime};

use crate::cost::Cost;
use crate::decision::Decision;
use crate::error::Error;
use crate::limiter::handle::Limiter;
use crate::limiter::usage::LimitUsage;
use crate::permit::{Permit, Reservation};
use crate::stats::StatsSnapshot;
use crate::store::memory::MemoryStore;
use crate::store::Store;
use crate::subject::Subject;

/// The [`Limiter`] API, blocking the calling thread. It shares state with the limiter it
/// wraps, so async and blocking callers see the same buckets.
///
/// Must not be called from inside an async runtime (tokio forbids blocking there).
///
/// ```
/// use tollgate::{BlockingLimiter, Cost, Limiter, Subject};
/// let limiter = BlockingLimiter::new(Limiter::new())?;
/// let who = Subject::new().tenant("acme").provider("openai");
/// assert!(limiter.check(&who, Cost::ONE)?.is_allowed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BlockingLimiter<S: Store = MemoryStore> {
    limiter: Limiter<S>,
    rt: Runtime,
}

impl<S: Store> std::fmt::Debug for BlockingLimiter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingLimiter").finish_non_exhaustive()
    }
}

impl<S: Store> BlockingLimiter<S> {
    /// Wraps `limiter` with a private single-threaded runtime.
    ///
    /// # Errors
    /// If the runtime cannot be created.
    pub fn new(limiter: Limiter<S>) -> std::io::Result<Self> {
        let rt = Builder::new_current_thread().enable_all().build()?;
        Ok(BlockingLimiter { limiter, rt })
    }

    /// Wraps `limiter` with the given runtime (e.g. one with paused time, for tests).
    pub fn with_runtime(limiter: Limiter<S>, rt: Runtime) -> Self {
        BlockingLimiter { limiter, rt }
    }

    /// The async limiter underneath.
    pub fn limiter(&self) -> &Limiter<S> {
        &self.limiter
    }

    /// See [`Limiter::check`].
    ///
    /// # Errors
    /// If the store fails.
    pub fn check(&self, subject: &Subject<'_>, cost: Cost) -> Result<Decision, Error> {
        self.rt.block_on(self.limiter.check(subject, cost))
    }

    /// See [`Limiter::peek`].
    ///
    /// # Errors
    /// If the store fails.
    pub fn peek(&self, subject: &Subject<'_>, cost: Cost) -> Result<Decision, Error> {
        self.rt.block_on(self.limiter.peek(subject, cost))
    }

    /// See [`Limiter::reserve`].
    ///
    /// # Errors
    /// If the store fails.
    pub fn reserve(
        &self,
        subject: &Subject<'_>,
        estimate: Cost,
    ) -> Result<Result<BlockingPermit<'_, S>, Decision>, Error> {
        let r = self.rt.block_on(self.limiter.reserve(subject, estimate))?;
        Ok(self.wrap(r))
    }

    /// See [`Limiter::acquire`]: blocks until admitted or `max_wait` has passed.
    ///
    /// # Errors
    /// If the store fails.
    pub fn acquire(
        &self,
        subject: &Subject<'_>,
        cost: Cost,
        max_wait: Duration,
    ) -> Result<Result<BlockingPermit<'_, S>, Decision>, Error> {
        let r = self
            .rt
            .block_on(self.limiter.acquire(subject, cost, max_wait))?;
        Ok(self.wrap(r))
    }

    fn wrap(&self, r: Reservation<S>) -> Result<BlockingPermit<'_, S>, Decision> {
        r.into_result().map(|permit| BlockingPermit {
            permit,
            rt: &self.rt,
        })
    }

    /// See [`Limiter::usage`].
    ///
    /// # Errors
    /// If the store fails.
    pub fn usage(&self, subject: &Subject<'_>) -> Result<Vec<LimitUsage>, Error> {
        self.rt.block_on(self.limiter.usage(subject))
    }

    /// See [`Limiter::reset`].
    ///
    /// # Errors
    /// If the store fails.
    pub fn reset(&self, subject: &Subject<'_>) -> Result<u64, Error> {
        self.rt.block_on(self.limiter.reset(subject))
    }

    /// See [`Limiter::reset_rule`].
    ///
    /// # Errors
    /// If the rule is unknown or the store fails.
    pub fn reset_rule(&self, rule: &str) -> Result<u64, Error> {
        self.rt.block_on(self.limiter.reset_rule(rule))
    }

    /// See [`Limiter::stats`].
    pub fn stats(&self) -> StatsSnapshot {
        self.limiter.stats()
    }
}

/// A [`Permit`] settled by blocking calls.
#[derive(Debug)]
pub struct BlockingPermit<'a, S: Store = MemoryStore> {
    permit: Permit<S>,
    rt: &'a Runtime,
}

impl<S: Store> Drop for BlockingPermit<'_, S> {
    /// Releases the concurrency slots on the facade's runtime and waits for the store. (The
    /// permit's own drop would hand the release to a detached task, or block on the store
    /// outside any runtime, which a store whose connection runs on this facade's runtime could
    /// not answer, since that runtime runs only inside a blocking call.) Inside an async
    /// context, where blocking would panic, the permit's own drop does it.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        if self.rt.block_on(self.permit.release()).is_err() {
            metrics::counter!("tollgate_store_errors_total").increment(1);
        }
    }
}

impl<S: Store> BlockingPermit<'_, S> {
    /// The decision that granted the permit.
    pub fn decision(&self) -> &Decision {
        self.permit.decision()
    }

    /// See [`Permit::commit`].
    ///
    /// # Errors
    /// If the store fails.
    pub fn commit(mut self, actual: Cost) -> Result<(), Error> {
        self.rt.block_on(self.permit.commit(actual))
    }

    /// See [`Permit::cancel`].
    ///
    /// # Errors
    /// If the store fails.
    pub fn cancel(mut self) -> Result<(), Error> {
        self.rt.block_on(self.permit.cancel())
    }

    /// See [`Permit::renew`].
    ///
    /// # Errors
    /// If the store fails.
    pub fn renew(&self) -> Result<bool, Error> {
        self.rt.block_on(self.permit.renew())
    }
}
