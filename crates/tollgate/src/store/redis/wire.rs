//! What the Redis store sees on its connections: time on the wire, silence, connection errors
//! and the local backlog (reported as [`WireHealth`]).
//!
//! Each connection is a [`Line`]. A request handed to a line is timed ([`Line::begin`]) until
//! its reply is read ([`OnWire::done`]): that is the wire time, which feeds a smoothed
//! average and mean deviation as TCP's round-trip estimator keeps them (RFC 6298's gains, 1/8
//! and 1/4), so that "usual" follows what Redis normally shows on this host, busy or not.
//!
//! A line with requests in flight and no reply is silent. Its silence is counted on a clock
//! that runs only while this process runs its tasks: a ticker task wakes every millisecond
//! while any line is busy and adds the time since its last tick, but at most [`CAP`]. A
//! process that the host did not run for 200 ms (or whose runtime was too congested to run
//! the ticker) adds 10 ms, not 200: the replies that arrived meanwhile have not been read yet,
//! and the silence is not Redis's. (A tick a few milliseconds late, as on a busy host, counts
//! in full, so that a silent Redis is still found at the threshold there.) A paused or unreachable Redis leaves a line silent while
//! this process runs, and its silence grows as the wall clock does. Without a runtime to tick
//! on, silence is counted on the wall clock.
//!
//! Costs per call: two clock reads and a few relaxed atomics; the ticker sleeps while every
//! line is idle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use redis::RedisError;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::store::health::WireHealth;

/// How often the ticker counts silence while a line is busy.
const TICK: Duration = Duration::from_millis(1);
/// The most one tick adds to a silence, however late it ran: well under the least threshold
/// (the fallback's 25 ms deadline by default), so that it takes several stalls in a row, with
/// no reply read between them, to make a silence.
const CAP: Duration = Duration::from_millis(10);
/// How long the ticker sleeps while every line is idle, unless a request wakes it.
const IDLE: Duration = Duration::from_secs(1);
/// The period over which the ticker keeps the worst lateness of its own timer: the host's
/// delay is the worst of this period and the one before.
const DELAY_PERIOD_US: u64 = 1_000_000;

/// The store-wide view: every line, the wire-time estimator, errors and backlog.
pub(super) struct Wire {
    /// The zero of every stored instant (stored as microseconds after it, plus one, so that 0
    /// means none).
    epoch: Instant,
    lines: Mutex<Vec<Weak<Line>>>,
    /// Smoothed wire time and mean deviation, in microseconds (f64 bits).
    srtt: AtomicU64,
    rttvar: AtomicU64,
    /// The last connection error, as a stored instant.
    last_error: AtomicU64,
    /// Calls queued on this host, not yet handed to a connection.
    backlog: AtomicU64,
    /// Whether the ticker runs (silence is then counted in the process's running time).
    ticking: AtomicBool,
    /// When the ticker last ran, as a stored instant.
    last_tick: AtomicU64,
    /// Wakes the ticker when an idle line gets a request.
    busy: Notify,
    /// The host's scheduling delay as the ticker sees it: how much later than asked its
    /// sleeps end, the worst in the current period (`delay_period`, in [`DELAY_PERIOD_US`]
    /// since the epoch) and in the one before, in µs. Written by the ticker alone.
    delay_period: AtomicU64,
    delay_worst: AtomicU64,
    delay_before: AtomicU64,
}

/// One connection to one server.
pub(super) struct Line {
    wire: Arc<Wire>,
    in_flight: AtomicU64,
    /// The stored instant of the last reply read, or of the first request written while the
    /// line was idle.
    progress: AtomicU64,
    /// The `progress` the ticker last saw, and the silence it has counted since, in µs.
    seen: AtomicU64,
    silent_us: AtomicU64,
}

impl Wire {
    /// A wire with its ticker started on the current runtime, if there is one.
    pub(super) fn new() -> Arc<Wire> {
        let wire = Arc::new(Wire {
            epoch: Instant::now(),
            lines: Mutex::new(Vec::new()),
            srtt: AtomicU64::new(0),
            rttvar: AtomicU64::new(0),
            last_error: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            ticking: AtomicBool::new(false),
            last_tick: AtomicU64::new(0),
            busy: Notify::new(),
            delay_period: AtomicU64::new(0),
            delay_worst: AtomicU64::new(0),
            delay_before: AtomicU64::new(0),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            wire.ticking.store(true, Ordering::Release);
            runtime.spawn(tick(Arc::downgrade(&wire), Ticking(Arc::downgrade(&wire))));
        }
        wire
    }

    /// A new line (connection) of this store.
    pub(super) fn line(self: &Arc<Wire>) -> Arc<Line> {
        let line = Arc::new(Line {
            wire: Arc::clone(self),
            in_flight: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            silent_us: AtomicU64::new(0),
        });
        let mut lines = self.lines.lock();
        lines.retain(|l| l.strong_count() > 0);
        lines.push(Arc::downgrade(&line));
        line
    }

    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn instant(&self, stamp: u64) -> Option<Instant> {
        (stamp > 0).then(|| self.epoch + Duration::from_micros(stamp - 1))
    }

    /// Records a connection that could not be made or broke.
    pub(super) fn error(&self) {
        self.last_error
            .store(self.stamp(Instant::now()), Ordering::Relaxed);
    }

    /// Records a call queued on this host.
    pub(super) fn queued(&self) {
        self.backlog.fetch_add(1, Ordering::Relaxed);
    }

    /// Records `n` calls taken from the queue to be sent.
    pub(super) fn dequeued(&self, n: u64) {
        let _ = self
            .backlog
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
    }

    /// Calls queued on this host now.
    pub(super) fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Feeds one wire time into the estimator.
    fn sample(&self, took: Duration) {
        let r = took.as_secs_f64() * 1e6;
        let srtt = f64::from_bits(self.srtt.load(Ordering::Relaxed));
        let (srtt, rttvar) = if srtt == 0.0 {
            (r, r / 2.0)
        } else {
            let rttvar = f64::from_bits(self.rttvar.load(Ordering::Relaxed));
            let rttvar = 0.75 * rttvar + 0.25 * (srtt - r).abs();
            (0.875 * srtt + 0.125 * r, rttvar)
        };
        // Concurrent samples may overwrite each other: the estimate stays one of theirs.
        self.srtt.store(srtt.max(1.0).to_bits(), Ordering::Relaxed);
        self.rttvar.store(rttvar.to_bits(), Ordering::Relaxed);
    }

    fn live_lines(&self) -> Vec<Arc<Line>> {
        self.lines.lock().iter().filter_map(Weak::upgrade).collect()
    }

    /// One tick, `step` (at most [`CAP`]) after the last: every line silent since the last
    /// tick adds `step` to its silence; a line that read a reply (or went idle) starts again.
    /// Answers whether any line is busy.
    fn advance(&self, step: Duration, now: Instant) -> bool {
        self.last_tick.store(self.stamp(now), Ordering::Release);
        let step_us = u64::try_from(step.as_micros()).unwrap_or(u64::MAX);
        let mut busy = false;
        for line in self.live_lines() {
            let progress = line.progress.load(Ordering::Acquire);
            if line.in_flight.load(Ordering::Acquire) == 0 {
                line.silent_us.store(0, Ordering::Release);
                line.seen.store(progress, Ordering::Release);
                continue;
            }
            busy = true;
            if line.seen.swap(progress, Ordering::AcqRel) == progress {
                line.silent_us.fetch_add(step_us, Ordering::AcqRel);
            } else {
                // New progress since the last tick: silent since then, at most one step.
                let since = self
                    .instant(progress)
                    .map_or(Duration::ZERO, |p| now.saturating_duration_since(p));
                let us = u64::try_from(since.min(step).as_micros()).unwrap_or(0);
                line.silent_us.store(us, Ordering::Release);
            }
        }
        busy
    }

    /// Records that a sleep of the ticker ended `late` after it was due, `now`.
    fn record_delay(&self, late: Duration, now: Instant) {
        let period = self.stamp(now) / DELAY_PERIOD_US;
        let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        let current = self.delay_period.load(Ordering::Relaxed);
        if period == current {
            self.delay_worst.fetch_max(late_us, Ordering::Relaxed);
            return;
        }
        let before = if period == current + 1 {
            self.delay_worst.load(Ordering::Relaxed)
        } else {
            0
        };
        self.delay_before.store(before, Ordering::Relaxed);
        self.delay_worst.store(late_us, Ordering::Relaxed);
        self.delay_period.store(period, Ordering::Relaxed);
    }

    /// The worst lateness of the ticker's sleeps over the last one to two periods: how long
    /// this host recently kept a ready task of this process waiting for a CPU. Zero when the
    /// ticker has not run for two periods (every line idle).
    fn host_delay(&self, now: Instant) -> Duration {
        let period = self.stamp(now) / DELAY_PERIOD_US;
        let current = self.delay_period.load(Ordering::Relaxed);
        let us = if period == current {
            self.delay_worst
                .load(Ordering::Relaxed)
                .max(self.delay_before.load(Ordering::Relaxed))
        } else if period == current + 1 {
            self.delay_worst.load(Ordering::Relaxed)
        } else {
            0
        };
        Duration::from_micros(us)
    }

    /// What the lines show now.
    pub(super) fn health(&self) -> WireHealth {
        let now = Instant::now();
        let ticking = self.ticking.load(Ordering::Acquire);
        // The running time since the last tick counts, up to one step.
        let partial = self
            .instant(self.last_tick.load(Ordering::Acquire))
            .map_or(Duration::ZERO, |t| {
                now.saturating_duration_since(t).min(CAP)
            });
        let mut silence = Duration::ZERO;
        let mut in_flight = 0u64;
        for line in self.live_lines() {
            let n = line.in_flight.load(Ordering::Acquire);
            if n == 0 {
                continue;
            }
            in_flight = in_flight.saturating_add(n);
            let progress = line.progress.load(Ordering::Acquire);
            let Some(since) = self.instant(progress) else {
                continue;
            };
            let silent = if !ticking {
                now.saturating_duration_since(since)
            } else if line.seen.load(Ordering::Acquire) == progress {
                Duration::from_micros(line.silent_us.load(Ordering::Acquire)) + partial
            } else {
                // Progress the ticker has not seen yet: at most one step ago.
                now.saturating_duration_since(since).min(CAP)
            };
            silence = silence.max(silent);
        }
        let srtt = f64::from_bits(self.srtt.load(Ordering::Relaxed));
        let rttvar = f64::from_bits(self.rttvar.load(Ordering::Relaxed));
        let usual = Duration::from_secs_f64(((srtt + 4.0 * rttvar) / 1e6).clamp(0.0, 3600.0));
        WireHealth {
            silence,
            usual,
            last_error: self.instant(self.last_error.load(Ordering::Relaxed)),
            in_flight,
            backlog: self.backlog(),
            host_delay: self.host_delay(now),
        }
    }
}

/// Clears [`Wire::ticking`] when the ticker ends, however it ends (its runtime shut down).
struct Ticking(Weak<Wire>);

impl Drop for Ticking {
    fn drop(&mut self) {
        if let Some(wire) = self.0.upgrade() {
            wire.ticking.store(false, Ordering::Release);
        }
    }
}

/// The ticker: counts silence in this process's running time (see the module docs). Ends
/// when the store is dropped.
async fn tick(wire: Weak<Wire>, _ticking: Ticking) {
    let mut last = Instant::now();
    loop {
        let busy = {
            let Some(wire) = wire.upgrade() else { return };
            let now = Instant::now();
            let step = now.saturating_duration_since(last).min(CAP);
            last = now;
            wire.advance(step, now)
        };
        if busy {
            let asked = Instant::now();
            tokio::time::sleep(TICK).await;
            let woke = Instant::now();
            if let Some(wire) = wire.upgrade() {
                wire.record_delay(woke.saturating_duration_since(asked + TICK), woke);
            }
        } else {
            // Holds the wire while idle: a dropped store's ticker ends within `IDLE`.
            let Some(w) = wire.upgrade() else { return };
            let _ = tokio::time::timeout(IDLE, w.busy.notified()).await;
            drop(w);
            // An idle stretch is no silence.
            last = Instant::now();
        }
    }
}

impl Line {
    /// A request (or a pipeline of them) handed to this line now.
    pub(super) fn begin(&self) -> OnWire<'_> {
        let now = Instant::now();
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            // An idle line starts its silence with this request.
            self.progress.store(self.wire.stamp(now), Ordering::Release);
            self.wire.busy.notify_one();
        }
        OnWire {
            line: self,
            sent: now,
            open: true,
        }
    }
}

/// A request on a line, until its reply is read. Dropped unanswered (its caller gave up), it
/// leaves the line without a reply: the request may still be in flight, but nobody waits for
/// it any more.
pub(super) struct OnWire<'a> {
    line: &'a Line,
    sent: Instant,
    open: bool,
}

impl OnWire<'_> {
    /// The call came back with `result`: a reply (an error reply too, since the server
    /// answered), a timeout (no reply: the line stays silent), or a broken connection.
    pub(super) fn done<T>(mut self, result: &Result<T, RedisError>) {
        self.open = false;
        let wire = &self.line.wire;
        match result {
            Err(e) if e.is_timeout() => {}
            Err(e)
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() =>
            {
                wire.error();
            }
            _ => {
                let now = Instant::now();
                wire.sample(now.saturating_duration_since(self.sent));
                self.line.progress.store(wire.stamp(now), Ordering::Release);
            }
        }
        self.line.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for OnWire<'_> {
    fn drop(&mut self) {
        if self.open {
            self.line.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> RedisError {
        RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ))
    }

    fn timeout() -> RedisError {
        RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "t"))
    }

    /// Lets the ticker run at tokio's paused clock's pace, `ms` ticks of 1 ms.
    async fn run_for(ms: u64) {
        for _ in 0..ms {
            tokio::time::sleep(TICK).await;
        }
        tokio::task::yield_now().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_line_is_silent_until_its_reply() {
        let wire = Wire::new();
        let line = wire.line();
        assert_eq!(wire.health().silence, Duration::ZERO);
        let first = line.begin();
        run_for(3).await;
        let second = line.begin();
        let h = wire.health();
        assert!(
            h.silence >= Duration::from_millis(3) && h.silence <= Duration::from_millis(4),
            "silent since the first request: {h:?}"
        );
        assert_eq!(h.in_flight, 2);
        run_for(2).await;
        first.done(&Ok::<(), RedisError>(()));
        let h = wire.health();
        assert!(
            h.silence <= CAP,
            "a reply restarts the silence of a line that is still busy: {h:?}"
        );
        assert!(h.usual >= Duration::from_millis(10), "{h:?}");
        drop(second);
        assert_eq!(wire.health().silence, Duration::ZERO);
        assert_eq!(wire.health().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_process_counts_no_silence_but_a_running_one_does() {
        let wire = Wire::new();
        let line = wire.line();
        let _call = line.begin();
        run_for(1).await;
        // The process is not run for 200 ms: no tick happens meanwhile.
        tokio::time::advance(Duration::from_millis(200)).await;
        let h = wire.health();
        assert!(
            h.silence <= Duration::from_millis(1) + 2 * CAP,
            "a stall adds at most one step: {h:?}"
        );
        // Running normally, with Redis silent, the silence grows with the wall clock.
        run_for(50).await;
        let h = wire.health();
        assert!(
            h.silence >= Duration::from_millis(50)
                && h.silence <= Duration::from_millis(51) + 2 * CAP,
            "{h:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_is_no_reply_and_a_broken_connection_is_an_error() {
        let wire = Wire::new();
        let line = wire.line();
        let call = line.begin();
        run_for(10).await;
        let other = line.begin();
        call.done(&Err::<(), _>(timeout()));
        assert!(
            wire.health().silence >= Duration::from_millis(10),
            "still silent"
        );
        assert_eq!(wire.health().usual, Duration::ZERO, "no sample");
        assert_eq!(wire.health().last_error, None);
        other.done(&Err::<(), _>(io_error()));
        assert_eq!(wire.health().last_error, Some(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_silence_is_the_longest_of_the_busy_lines() {
        let wire = Wire::new();
        let (a, b) = (wire.line(), wire.line());
        let on_a = a.begin();
        run_for(4).await;
        let on_b = b.begin();
        run_for(4).await;
        let h = wire.health();
        assert!(h.silence >= Duration::from_millis(8), "{h:?}");
        on_a.done(&Ok::<(), RedisError>(()));
        let h = wire.health();
        assert!(
            h.silence >= Duration::from_millis(4) && h.silence < Duration::from_millis(8),
            "{h:?}"
        );
        drop(on_b);
        assert_eq!(wire.health().silence, Duration::ZERO);
    }

    #[test]
    fn without_a_runtime_silence_is_wall_time() {
        let wire = Wire::new();
        let line = wire.line();
        let _call = line.begin();
        std::thread::sleep(Duration::from_millis(20));
        assert!(wire.health().silence >= Duration::from_millis(20));
    }

    #[test]
    fn the_estimate_follows_rfc_6298() {
        let wire = Wire::new();
        wire.sample(Duration::from_millis(8));
        // srtt 8, rttvar 4: 8 + 16.
        assert_eq!(wire.health().usual, Duration::from_millis(24));
        wire.sample(Duration::from_millis(8));
        // rttvar 3: 8 + 12.
        assert_eq!(wire.health().usual, Duration::from_millis(20));
    }

    #[test]
    fn the_host_delay_is_the_worst_timer_lateness_of_the_last_second_or_two() {
        let wire = Wire::new();
        let t0 = wire.epoch + Duration::from_secs(10);
        assert_eq!(wire.host_delay(t0), Duration::ZERO, "nothing measured yet");
        wire.record_delay(Duration::from_millis(12), t0);
        wire.record_delay(Duration::from_millis(3), t0 + Duration::from_millis(100));
        assert_eq!(wire.host_delay(t0), Duration::from_millis(12));
        // The next period still remembers the worst of the one before.
        let t1 = t0 + Duration::from_secs(1);
        wire.record_delay(Duration::from_millis(2), t1);
        assert_eq!(wire.host_delay(t1), Duration::from_millis(12));
        // Two periods on, only the later one counts.
        let t2 = t1 + Duration::from_secs(1);
        wire.record_delay(Duration::from_millis(1), t2);
        assert_eq!(wire.host_delay(t2), Duration::from_millis(2));
        // A ticker idle for two periods knows nothing of the host now.
        assert_eq!(wire.host_delay(t2 + Duration::from_secs(2)), Duration::ZERO);
    }

    #[test]
    fn the_backlog_never_goes_below_zero() {
        let wire = Wire::new();
        wire.queued();
        wire.queued();
        wire.dequeued(1);
        assert_eq!(wire.health().backlog, 1);
        wire.dequeued(5);
        assert_eq!(wire.health().backlog, 0);
    }
}
