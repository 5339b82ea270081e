//! Waiting for admission: [`Limiter::acquire`] sleeps until `retry_after` (no polling), is
//! woken early when capacity is given back, and serves waiters on one bucket in arrival order.
//!
//! Each bucket with waiters has a fair (FIFO) async mutex. A caller that finds waiters on any
//! of its buckets queues behind them instead of trying first; the head of the queue sleeps
//! until its `retry_after`, tries, and passes the turn on when admitted.

use std::time::Duration;

use tokio::time::Instant;

use crate::cost::Cost;
use crate::decision::Outcome;
use crate::error::Error;
use crate::limiter::handle::Limiter;
use crate::permit::Reservation;
use crate::plan::Plan;
use crate::store::Store;
use crate::subject::Subject;
use crate::wait_queues::Queue;

impl<S: Store> Limiter<S> {
    /// Waits until the call is admitted or `max_wait` has passed, then answers like
    /// [`reserve`](Self::reserve): a permit, or the denial with its `retry_after`.
    ///
    /// The wait sleeps until the denial's `retry_after` (no busy polling) and wakes early
    /// when a concurrency slot is released or tokens are refunded in this process. Waiters on
    /// one bucket are admitted in arrival order. A cost that can never fit returns at once.
    ///
    /// # Errors
    /// Only if the store fails.
    pub async fn acquire(
        &self,
        subject: &Subject<'_>,
        cost: Cost,
        max_wait: Duration,
    ) -> Result<Reservation<S>, Error> {
        let start = Instant::now();
        let deadline = start
            .checked_add(max_wait)
            .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400));
        let plan = self.plan(subject, &cost, true);

        let (key, queue) = match self
            .inner
            .waiters
            .waiting(plan.ops.iter().map(|op| &op.key))
        {
            Some(q) => q,
            None => {
                let first = self.reserve_planned(plan.clone()).await?;
                let d = match &first {
                    Reservation::Granted(_) => return Ok(first),
                    Reservation::Denied(d) if d.outcome() != Outcome::Denied => return Ok(first),
                    Reservation::Denied(d) => d,
                };
                if Instant::now() >= deadline {
                    return Ok(first);
                }
                let Some(i) = d.denied_by else {
                    return Ok(first);
                };
                let Some(op) = plan.ops.get(i) else {
                    return Ok(first);
                };
                let key = op.key.clone();
                let q = self.inner.waiters.join(&key);
                (key, q)
            }
        };

        let result = self.wait_in_queue(&queue, &plan, deadline).await;
        self.inner.waiters.leave(&key, queue);
        result
    }

    /// Runs `fut` once the call is admitted (waiting up to `max_wait`), holding the permit
    /// (and its concurrency slot) until `fut` completes: the Rust form of a rate-limiting
    /// decorator or context manager. The estimate stays spent; use [`acquire`](Self::acquire)
    /// and [`Permit::commit`](crate::Permit::commit) to settle actual usage.
    ///
    /// # Errors
    /// `Ok(Err(decision))` if not admitted in time; `Err` only if the store fails.
    pub async fn run<F: std::future::Future>(
        &self,
        subject: &Subject<'_>,
        cost: Cost,
        max_wait: Duration,
        fut: F,
    ) -> Result<Result<F::Output, crate::Decision>, Error> {
        match self.acquire(subject, cost, max_wait).await? {
            Reservation::Granted(permit) => {
                let out = fut.await;
                drop(permit);
                Ok(Ok(out))
            }
            Reservation::Denied(d) => Ok(Err(d)),
        }
    }

    async fn wait_in_queue(
        &self,
        queue: &Queue,
        plan: &Plan<S::Key>,
        deadline: Instant,
    ) -> Result<Reservation<S>, Error> {
        let Ok(_turn) = tokio::time::timeout_at(deadline, queue.lock()).await else {
            // Our time ran out behind other waiters: one last try, with a fresh retry_after.
            return self.reserve_planned(plan.clone()).await;
        };
        loop {
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let r = self.reserve_planned(plan.clone()).await?;
            let wait = match &r {
                Reservation::Denied(d) if d.outcome() == Outcome::Denied => {
                    d.retry_after().unwrap_or_default()
                }
                _ => return Ok(r),
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(r);
            }
            let wake = now.checked_add(wait).unwrap_or(deadline).min(deadline);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = &mut released => {}
            }
        }
    }
}
