//! Time: the one place that reads the wall clock.
//!
//! Every algorithm takes `now` as an argument; stores obtain it from a [`Clock`]. Tests use
//! [`ManualClock`] and advance it explicitly, so no test ever sleeps waiting for a window.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: microseconds since the Unix epoch (UTC).
///
/// Microseconds are the unit of every algorithm: they are what Redis `TIME` reports, they keep
/// timestamps below 2^53 until the year 2255 (so Lua's doubles hold them exactly), and they are
/// fine enough that `retry_after` is exact to well under a millisecond.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    /// A timestamp `secs` seconds after the Unix epoch (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000))
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// This instant plus `d`, saturating at the end of representable time.
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_to_micros_ceil(d)))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000;
        let micros = self.0 % 1_000_000;
        write!(f, "{secs}.{micros:06}")
    }
}

/// Converts a duration to whole microseconds, rounding up so that a wait is never shortened.
pub fn duration_to_micros_ceil(d: Duration) -> u64 {
    let micros = d.as_nanos().div_ceil(1_000);
    u64::try_from(micros).unwrap_or(u64::MAX)
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Blocks the calling thread for `d` of this clock's time.
    ///
    /// The system clock sleeps; the manual clock advances itself instead, so that blocking code
    /// can be tested deterministically.
    fn sleep_blocking(&self, d: Duration) {
        std::thread::sleep(d);
    }

    /// This clock as the [`SystemClock`], if it is one (behind any number of `Arc`s): a store
    /// that reads the clock on every decision keeps a copy and reads it directly, instead of
    /// calling through `dyn Clock` each time.
    fn as_system(&self) -> Option<&SystemClock> {
        None
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
    fn sleep_blocking(&self, d: Duration) {
        (**self).sleep_blocking(d)
    }
    fn as_system(&self) -> Option<&SystemClock> {
        (**self).as_system()
    }
}

/// The wall clock, made monotonic.
///
/// It reads the system time once, then advances with the machine's monotonic clock, so that an
/// NTP step backwards cannot hand out capacity twice. Its drift from the wall clock is the drift
/// of the monotonic clock since the clock was made.
///
/// The monotonic clock is read through `quanta`, which uses the CPU's invariant TSC where there
/// is one (calibrated against the OS's monotonic clock) and the OS clock otherwise: a reading
/// costs a few nanoseconds instead of a `clock_gettime` call, and every decision reads it.
/// Readings are turned into microseconds with one multiplication by a factor taken from
/// `quanta`'s calibration when the clock is made.
#[derive(Clone, Debug)]
pub struct SystemClock {
    anchor_wall: Timestamp,
    anchor_raw: u64,
    /// Microseconds per 2^[`TICKS_SHIFT`] raw ticks.
    micros_per_ticks: u64,
    mono: quanta::Clock,
}

/// The span of raw ticks the conversion factor is taken over: 2^50 ticks (about four days of a
/// 3 GHz TSC, or 2^50 ns of the OS clock) give the factor twelve significant digits: the
/// conversion falls behind `quanta`'s by at most a microsecond per 2^50 ticks (about 2 µs a
/// week, 90 µs a year of a 3 GHz TSC).
const TICKS_SHIFT: u32 = 50;

impl SystemClock {
    /// A clock anchored at the current wall-clock time.
    pub fn new() -> Self {
        let mono = quanta::Clock::new();
        let anchor_raw = mono.raw();
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        SystemClock {
            anchor_wall: Timestamp(duration_to_micros_floor(since_epoch)),
            anchor_raw,
            micros_per_ticks: mono.delta_as_nanos(0, 1 << TICKS_SHIFT) / 1_000,
            mono,
        }
    }

    /// Whole microseconds from the anchor to the raw reading `raw`: `quanta`'s conversion as a
    /// single 64×64-bit multiplication and a shift (a reading before the anchor, as another
    /// core's TSC may give, is the anchor).
    #[inline(always)]
    fn micros_after(&self, raw: u64) -> u64 {
        let ticks = u128::from(raw.saturating_sub(self.anchor_raw));
        // Two 64-bit factors: the product fits in 128 bits.
        let micros = ticks.saturating_mul(u128::from(self.micros_per_ticks)) >> TICKS_SHIFT;
        u64::try_from(micros).unwrap_or(u64::MAX)
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

fn duration_to_micros_floor(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Timestamp {
        Timestamp(
            self.anchor_wall
                .0
                .saturating_add(self.micros_after(self.mono.raw())),
        )
    }

    fn as_system(&self) -> Option<&SystemClock> {
        Some(self)
    }
}

/// A clock that moves only when told to. Cloning shares the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    micros: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            micros: Arc::new(AtomicU64::new(start.0)),
        }
    }

    /// Moves the clock forward by `d` (saturating).
    pub fn advance(&self, d: Duration) {
        let add = duration_to_micros_ceil(d);
        // fetch_update cannot fail with a closure that always returns Some.
        let _ = self
            .micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(add))
            });
    }

    /// Sets the clock to `t`, which may be earlier than now (to test time going backwards).
    pub fn set(&self, t: Timestamp) {
        self.micros.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.micros.load(Ordering::SeqCst))
    }

    fn sleep_blocking(&self, d: Duration) {
        self.advance(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_advances_and_goes_back() {
        let c = ManualClock::new(Timestamp::from_secs(10));
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now(), Timestamp::from_micros(11_500_000));
        c.set(Timestamp::from_secs(1));
        assert_eq!(c.now(), Timestamp::from_secs(1));
        c.sleep_blocking(Duration::from_secs(2));
        assert_eq!(c.now(), Timestamp::from_secs(3));
    }

    #[test]
    fn durations_round_up_to_micros() {
        assert_eq!(duration_to_micros_ceil(Duration::from_nanos(1)), 1);
        assert_eq!(duration_to_micros_ceil(Duration::from_nanos(1000)), 1);
        assert_eq!(duration_to_micros_ceil(Duration::from_nanos(1001)), 2);
        assert_eq!(duration_to_micros_ceil(Duration::MAX), u64::MAX);
    }

    #[test]
    fn system_clock_converts_readings_as_quanta_does() {
        let c = SystemClock::new();
        // Up to a week of ticks of a 3 GHz TSC (or of nanoseconds), in uneven steps.
        let mut ticks = 1u64;
        while ticks < 3_000_000_000 * 86_400 * 7 {
            let raw = c.anchor_raw.wrapping_add(ticks);
            let ours = c.micros_after(raw);
            let theirs = c.mono.delta_as_nanos(c.anchor_raw, raw) / 1_000;
            assert!(
                ours.abs_diff(theirs) <= 1,
                "{ticks} ticks: {ours} µs, quanta {theirs} µs"
            );
            ticks = ticks.saturating_mul(3).saturating_add(7);
        }
        assert_eq!(
            c.micros_after(c.anchor_raw.wrapping_sub(5)),
            0,
            "before the anchor"
        );
    }

    #[test]
    fn system_clock_is_monotonic_and_near_wall_time() {
        let c = SystemClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        // After 2020-01-01.
        assert!(a > Timestamp::from_secs(1_577_836_800));
    }
}
