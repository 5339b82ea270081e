//! What the Redis store sees on its connections: time on the wire, silence, connection errors
//! and the local backlog (reported as [`WireHealth`]).
//!
//! Each connection is a [`Line`]. A request handed to a line is timed ([`Line::begin`]) until
//! its reply is read ([`OnWire::replied`]): that is the wire time, which feeds a smoothed
//! average and mean deviation as TCP's round-trip estimator keeps them (gains 1/8 and 1/4), so
//! that "usual" follows what Redis normally shows on this host, busy or not. A line with
//! requests in flight and no reply since some instant has been silent since then; a reply, or
//! the first request on an idle line, restarts that clock. A paused or unreachable server
//! leaves its lines silent; a busy host delays replies but does not stop them.
//!
//! Costs per call: two clock reads and a few relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use redis::RedisError;
use tokio::time::Instant;

use crate::store::health::WireHealth;

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
}

/// One connection to one server.
pub(super) struct Line {
    wire: Arc<Wire>,
    in_flight: AtomicU64,
    /// The stored instant since which the line has had no reply while busy.
    progress: AtomicU64,
}

impl Wire {
    pub(super) fn new() -> Arc<Wire> {
        Arc::new(Wire {
            epoch: Instant::now(),
            lines: Mutex::new(Vec::new()),
            srtt: AtomicU64::new(0),
            rttvar: AtomicU64::new(0),
            last_error: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
        })
    }

    /// A new line (connection) of this store.
    pub(super) fn line(self: &Arc<Wire>) -> Arc<Line> {
        let line = Arc::new(Line {
            wire: Arc::clone(self),
            in_flight: AtomicU64::new(0),
            progress: AtomicU64::new(0),
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

    /// Records a call queued on this host (`+1`) or taken from the queue (`-n`).
    pub(super) fn queued(&self) {
        self.backlog.fetch_add(1, Ordering::Relaxed);
    }

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

    /// Feeds one wire time into the estimator (RFC 6298's gains).
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

    /// What the lines show now.
    pub(super) fn health(&self) -> WireHealth {
        let mut silent: Option<u64> = None;
        let mut in_flight = 0u64;
        for line in self.lines.lock().iter().filter_map(Weak::upgrade) {
            let n = line.in_flight.load(Ordering::Acquire);
            if n == 0 {
                continue;
            }
            in_flight = in_flight.saturating_add(n);
            let since = line.progress.load(Ordering::Acquire);
            if since > 0 {
                silent = Some(silent.map_or(since, |s| s.min(since)));
            }
        }
        let srtt = f64::from_bits(self.srtt.load(Ordering::Relaxed));
        let rttvar = f64::from_bits(self.rttvar.load(Ordering::Relaxed));
        let usual = Duration::from_secs_f64(((srtt + 4.0 * rttvar) / 1e6).clamp(0.0, 3600.0));
        WireHealth {
            silent_since: silent.and_then(|s| self.instant(s)),
            usual,
            last_error: self.instant(self.last_error.load(Ordering::Relaxed)),
            in_flight,
            backlog: self.backlog(),
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

    #[tokio::test(start_paused = true)]
    async fn a_busy_line_is_silent_until_its_reply() {
        let wire = Wire::new();
        let line = wire.line();
        assert_eq!(
            wire.health().silent_since,
            None,
            "an idle line is not silent"
        );
        let t0 = Instant::now();
        let first = line.begin();
        tokio::time::advance(Duration::from_millis(3)).await;
        let second = line.begin();
        let h = wire.health();
        assert_eq!(h.silent_since, Some(t0), "silent since the first request");
        assert_eq!(h.in_flight, 2);
        tokio::time::advance(Duration::from_millis(2)).await;
        first.done(&Ok::<(), RedisError>(()));
        let h = wire.health();
        assert_eq!(
            h.silent_since,
            Some(t0 + Duration::from_millis(5)),
            "a reply restarts the silence of a line that is still busy"
        );
        assert_eq!(h.usual, Duration::from_millis(15), "5 ms + 4 x 2.5 ms");
        drop(second);
        assert_eq!(wire.health().silent_since, None);
        assert_eq!(wire.health().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_is_no_reply_and_a_broken_connection_is_an_error() {
        let wire = Wire::new();
        let line = wire.line();
        let t0 = Instant::now();
        let call = line.begin();
        tokio::time::advance(Duration::from_millis(10)).await;
        let other = line.begin();
        let timeout = RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "t"));
        call.done(&Err::<(), _>(timeout));
        assert_eq!(wire.health().silent_since, Some(t0), "still silent");
        assert_eq!(wire.health().usual, Duration::ZERO, "no sample");
        assert_eq!(wire.health().last_error, None);
        other.done(&Err::<(), _>(io_error()));
        assert_eq!(wire.health().last_error, Some(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_silence_is_the_oldest_of_the_busy_lines() {
        let wire = Wire::new();
        let (a, b) = (wire.line(), wire.line());
        let t0 = Instant::now();
        let on_a = a.begin();
        tokio::time::advance(Duration::from_millis(4)).await;
        let on_b = b.begin();
        assert_eq!(wire.health().silent_since, Some(t0));
        on_a.done(&Ok::<(), RedisError>(()));
        assert_eq!(
            wire.health().silent_since,
            Some(t0 + Duration::from_millis(4))
        );
        drop(on_b);
        drop(b);
        assert_eq!(wire.health().silent_since, None);
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
