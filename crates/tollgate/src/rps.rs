//! A plain "N per second" limiter shared by many callers, with blocking and async `acquire`,
//! and wrappers that rate-limit functions and futures.
//!
//! It keeps one GCRA cell and reserves ahead: each caller takes the next free slot at once and
//! then sleeps until it, so callers are served in arrival order with no polling at all.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tollgate_core::algorithms::gcra::Gcra;
use tollgate_core::{Clock, Limit, LimitError, LimitKind, LimitSpec, SystemClock, Window};

/// A limiter of `n` calls per window (per second by default), bursts up to `burst`.
///
/// ```
/// use std::time::Duration;
/// use tollgate::RateLimiter;
/// use tollgate::{Clock, ManualClock, Timestamp};
///
/// let clock = ManualClock::new(Timestamp::from_secs(1_000));
/// let limiter = RateLimiter::per_second(10)?.with_clock(clock.clone());
/// for _ in 0..15 {
///     limiter.acquire_blocking(); // the manual clock advances instead of sleeping
/// }
/// // Ten went through at once (the burst); five more took a tenth of a second each.
/// assert_eq!(clock.now(), Timestamp::from_micros(1_000_500_000));
/// # Ok::<(), tollgate_core::LimitError>(())
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    limit: Limit,
    cell: Mutex<Gcra>,
    clock: Arc<dyn Clock>,
}

impl RateLimiter {
    /// `n` calls per second, bursts up to `n`.
    ///
    /// # Errors
    /// If `n` is zero.
    pub fn per_second(n: u64) -> Result<Self, LimitError> {
        Self::new(LimitSpec::new(LimitKind::Requests, n, Window::SECOND))
    }

    /// Any GCRA limit (e.g. 100 per minute with a burst of 10).
    ///
    /// # Errors
    /// If the spec is invalid or not a GCRA limit.
    pub fn new(spec: LimitSpec) -> Result<Self, LimitError> {
        let limit = spec.algorithm(tollgate_core::Algorithm::Gcra).build()?;
        Ok(RateLimiter {
            limit,
            cell: Mutex::new(Gcra::default()),
            clock: Arc::new(SystemClock::new()),
        })
    }

    /// The same limiter reading `clock`.
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The limit.
    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    /// Takes a call now if one is free.
    ///
    /// # Errors
    /// The wait until one will be.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let now = self.clock.now();
        let mut cell = self.cell.lock();
        let v = cell.evaluate(&self.limit, now, 1);
        if v.admitted {
            cell.spend(&self.limit, now, 1);
            Ok(())
        } else {
            Err(Duration::from_micros(v.retry_after_us))
        }
    }

    /// Takes the next free slot, now or in the future, and returns how long until it.
    fn reserve(&self) -> Duration {
        let now = self.clock.now();
        let mut cell = self.cell.lock();
        let v = cell.evaluate(&self.limit, now, 1);
        cell.spend(&self.limit, now, 1);
        Duration::from_micros(v.retry_after_us)
    }

    /// Blocks until a call may go ahead.
    pub fn acquire_blocking(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            self.clock.sleep_blocking(wait);
        }
    }

    /// Waits until a call may go ahead. If the future is dropped while waiting, its slot is
    /// given back.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if wait.is_zero() {
            return;
        }
        let mut guard = Unreserve {
            limiter: self,
            armed: true,
        };
        tokio::time::sleep(wait).await;
        guard.armed = false;
    }

    /// Runs `f` once a call may go ahead (blocking).
    pub fn call<T>(&self, f: impl FnOnce() -> T) -> T {
        self.acquire_blocking();
        f()
    }

    /// Runs `fut` once a call may go ahead.
    pub async fn run<F: Future>(&self, fut: F) -> F::Output {
        self.acquire().await;
        fut.await
    }
}

struct Unreserve<'a> {
    limiter: &'a RateLimiter,
    armed: bool,
}

impl Drop for Unreserve<'_> {
    fn drop(&mut self) {
        if self.armed {
            let now = self.limiter.clock.now();
            self.limiter.cell.lock().refund(&self.limiter.limit, now, 1);
        }
    }
}

/// A function rate-limited by a shared [`RateLimiter`]: the Rust form of a rate-limiting
/// decorator. Many wrappers may share one limiter.
///
/// ```
/// use std::sync::Arc;
/// use tollgate::{Limited, RateLimiter};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tollgate_core::LimitError> {
/// let shared = Arc::new(RateLimiter::per_second(5)?);
/// let fetch_user = Limited::new(shared.clone(), |id: u32| async move { format!("user {id}") });
/// let send_mail = Limited::new(shared, |to: &'static str| to.len());
/// assert_eq!(fetch_user.call(7).await, "user 7");
/// assert_eq!(send_mail.call_blocking("a@b.c"), 5);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Limited<F> {
    limiter: Arc<RateLimiter>,
    f: F,
}

impl<F> Limited<F> {
    /// Wraps `f` with `limiter`.
    pub fn new(limiter: Arc<RateLimiter>, f: F) -> Self {
        Limited { limiter, f }
    }

    /// Calls the wrapped async function once the limiter allows.
    pub async fn call<A, Fut>(&self, arg: A) -> Fut::Output
    where
        F: Fn(A) -> Fut,
        Fut: Future,
    {
        self.limiter.acquire().await;
        (self.f)(arg).await
    }

    /// Calls the wrapped function once the limiter allows, blocking.
    pub fn call_blocking<A, T>(&self, arg: A) -> T
    where
        F: Fn(A) -> T,
    {
        self.limiter.acquire_blocking();
        (self.f)(arg)
    }
}
