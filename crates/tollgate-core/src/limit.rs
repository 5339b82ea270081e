//! What a limit is: a kind, an amount, a window, an algorithm and a burst.
//!
//! A [`Limit`] can only be built through [`LimitSpec::build`], which refuses what no algorithm
//! can serve, so every algorithm can assume a sane limit.

use std::fmt;
use std::num::NonZeroU64;
use std::time::Duration;

use crate::calendar::UtcOffset;
use crate::clock::duration_to_micros_ceil;
use crate::error::LimitError;
use crate::kind::{Algorithm, LimitKind};
use crate::window::{Window, MAX_WINDOW};

/// The default lease of a concurrency slot: a holder that dies loses its slot after this long.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);

/// An unvalidated description of a limit; [`LimitSpec::build`] turns it into a [`Limit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSpec {
    /// What the limit counts.
    pub kind: LimitKind,
    /// How much may be spent per window (for concurrency: how many calls may be in flight).
    pub amount: u64,
    /// The window the amount refers to (ignored for concurrency).
    pub window: Window,
    /// The algorithm; `None` picks GCRA, or concurrency for the concurrency kind.
    pub algorithm: Option<Algorithm>,
    /// The most that may be spent at once (GCRA only); `None` means `amount`.
    pub burst: Option<u64>,
    /// The offset from UTC at which fixed windows start (default UTC).
    pub utc_offset: UtcOffset,
    /// How long a concurrency slot is held if its holder never releases it.
    pub lease: Option<Duration>,
}

impl LimitSpec {
    /// A spec with the defaults: GCRA, burst equal to the amount, UTC.
    pub fn new(kind: LimitKind, amount: u64, window: Window) -> Self {
        LimitSpec {
            kind,
            amount,
            window,
            algorithm: None,
            burst: None,
            utc_offset: UtcOffset::UTC,
            lease: None,
        }
    }

    /// A concurrency limit of `max_in_flight` calls.
    pub fn concurrency(max_in_flight: u64) -> Self {
        LimitSpec::new(LimitKind::Concurrency, max_in_flight, Window::MINUTE)
    }

    /// Sets the algorithm.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = Some(algorithm);
        self
    }

    /// Sets the burst.
    pub fn burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Sets the offset from UTC of fixed windows.
    pub fn utc_offset(mut self, offset: UtcOffset) -> Self {
        self.utc_offset = offset;
        self
    }

    /// Sets the lease of concurrency slots.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Validates the spec.
    ///
    /// # Errors
    /// A [`LimitError`] naming the field at fault: a zero amount, window, burst or lease; a burst
    /// on an algorithm without one; a calendar month on a rolling algorithm; a kind the algorithm
    /// cannot serve; a window longer than [`MAX_WINDOW`].
    pub fn build(&self) -> Result<Limit, LimitError> {
        let amount = NonZeroU64::new(self.amount).ok_or(LimitError::ZeroAmount)?;
        let algorithm = self
            .algorithm
            .unwrap_or(if self.kind == LimitKind::Concurrency {
                Algorithm::Concurrency
            } else {
                Algorithm::Gcra
            });
        match (self.kind, algorithm) {
            (LimitKind::Concurrency, Algorithm::Concurrency) => {}
            (LimitKind::Concurrency, a) | (_, a @ Algorithm::Concurrency) => {
                return Err(LimitError::KindAlgorithmMismatch {
                    kind: self.kind,
                    algorithm: a,
                })
            }
            _ => {}
        }
        let burst = match self.burst {
            Some(0) => return Err(LimitError::ZeroBurst),
            Some(b) if algorithm == Algorithm::Gcra || b == self.amount => b,
            Some(_) => return Err(LimitError::BurstUnsupported(algorithm)),
            None => self.amount,
        };
        let burst = NonZeroU64::new(burst).ok_or(LimitError::ZeroBurst)?;
        let window_us = match self.window {
            Window::Month => {
                if algorithm == Algorithm::Gcra
                    || algorithm == Algorithm::SlidingWindow
                    || algorithm == Algorithm::SlidingLog
                {
                    return Err(LimitError::MonthNeedsFixedWindow(algorithm));
                }
                0
            }
            Window::Length(d) => {
                if d > MAX_WINDOW {
                    return Err(LimitError::WindowTooLong(d));
                }
                let us = duration_to_micros_ceil(d);
                if us == 0 && algorithm != Algorithm::Concurrency {
                    return Err(LimitError::ZeroWindow);
                }
                us
            }
        };
        let lease = self.lease.unwrap_or(DEFAULT_LEASE);
        if lease > MAX_WINDOW {
            return Err(LimitError::WindowTooLong(lease));
        }
        let lease_us = duration_to_micros_ceil(lease);
        if lease_us == 0 {
            return Err(LimitError::ZeroLease);
        }
        let gcra = if algorithm == Algorithm::Gcra {
            GcraParams::new(amount.get(), window_us, burst.get())
        } else {
            GcraParams::default()
        };
        Ok(Limit {
            kind: self.kind,
            algorithm,
            amount,
            burst,
            window: self.window,
            window_us,
            utc_offset: self.utc_offset,
            lease_us,
            gcra,
        })
    }
}

/// The derived constants of a GCRA limit, in scaled time.
///
/// Scaled time counts in units of `1 / scale` microseconds, where `scale = amount / g` and
/// `g = gcd(amount, window)`. One unit of cost then takes exactly `step = window / g` scaled
/// units: no rounding, whatever the rate, so `retry_after` is exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GcraParams {
    /// Scaled units per microsecond.
    pub scale: u64,
    /// Scaled units per unit of cost.
    pub step: u64,
    /// Scaled units of tolerance: `burst * step`.
    pub tolerance: u128,
}

impl GcraParams {
    fn new(amount: u64, window_us: u64, burst: u64) -> Self {
        let g = gcd(amount, window_us).max(1);
        let scale = amount.checked_div(g).unwrap_or(amount);
        let step = window_us.checked_div(g).unwrap_or(window_us);
        let tolerance = u128::from(burst).saturating_mul(u128::from(step));
        GcraParams {
            scale,
            step,
            tolerance,
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let t = a.checked_rem(b).unwrap_or(0);
        a = b;
        b = t;
    }
    a
}

/// A validated limit. Cheap to copy: stores and decisions carry it by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    kind: LimitKind,
    algorithm: Algorithm,
    amount: NonZeroU64,
    burst: NonZeroU64,
    window: Window,
    window_us: u64,
    utc_offset: UtcOffset,
    lease_us: u64,
    gcra: GcraParams,
}

impl Limit {
    /// What the limit counts.
    pub fn kind(&self) -> LimitKind {
        self.kind
    }
    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// The amount per window (for concurrency, the slots).
    pub fn amount(&self) -> u64 {
        self.amount.get()
    }
    /// The most that can be spent at once: the burst for GCRA, the amount otherwise.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => self.burst.get(),
            _ => self.amount.get(),
        }
    }
    /// The burst (equal to the amount except for GCRA limits that set one).
    pub fn burst(&self) -> u64 {
        self.burst.get()
    }
    /// The window.
    pub fn window(&self) -> Window {
        self.window
    }
    /// The window in microseconds (0 for calendar months).
    pub fn window_micros(&self) -> u64 {
        self.window_us
    }
    /// The offset from UTC of fixed windows.
    pub fn utc_offset(&self) -> UtcOffset {
        self.utc_offset
    }
    /// The lease of a concurrency slot, in microseconds.
    pub fn lease_micros(&self) -> u64 {
        self.lease_us
    }
    /// The GCRA constants (zero for other algorithms).
    pub fn gcra(&self) -> GcraParams {
        self.gcra
    }
    /// Whether the limit is a budget over a day or more: its denials are quota denials.
    pub fn is_quota(&self) -> bool {
        match self.window {
            Window::Month => true,
            Window::Length(d) => d >= Duration::from_secs(86_400),
        }
    }

    /// Turns the limit back into a spec (for display and round trips).
    pub fn spec(&self) -> LimitSpec {
        LimitSpec {
            kind: self.kind,
            amount: self.amount.get(),
            window: self.window,
            algorithm: Some(self.algorithm),
            burst: Some(self.burst.get()),
            utc_offset: self.utc_offset,
            lease: Some(Duration::from_micros(self.lease_us)),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == LimitKind::Concurrency {
            return write!(f, "{} in flight", self.amount);
        }
        write!(
            f,
            "{} {} per {} ({}",
            self.amount, self.kind, self.window, self.algorithm
        )?;
        if self.algorithm == Algorithm::Gcra && self.burst != self.amount {
            write!(f, ", burst {}", self.burst)?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pick_gcra_and_burst_equal_to_amount() {
        let l = LimitSpec::new(LimitKind::Requests, 60, Window::MINUTE)
            .build()
            .unwrap();
        assert_eq!(l.algorithm(), Algorithm::Gcra);
        assert_eq!(l.capacity(), 60);
        assert_eq!(l.gcra().scale, 1);
        assert_eq!(l.gcra().step, 1_000_000);
        let c = LimitSpec::concurrency(4).build().unwrap();
        assert_eq!(c.algorithm(), Algorithm::Concurrency);
    }

    #[test]
    fn invalid_specs_are_refused_with_the_field() {
        let base = LimitSpec::new(LimitKind::Tokens, 10, Window::MINUTE);
        assert_eq!(
            LimitSpec {
                amount: 0,
                ..base.clone()
            }
            .build(),
            Err(LimitError::ZeroAmount)
        );
        assert_eq!(
            LimitSpec {
                window: Window::Length(Duration::ZERO),
                ..base.clone()
            }
            .build(),
            Err(LimitError::ZeroWindow)
        );
        assert_eq!(base.clone().burst(0).build(), Err(LimitError::ZeroBurst));
        assert_eq!(
            base.clone()
                .algorithm(Algorithm::SlidingLog)
                .burst(3)
                .build(),
            Err(LimitError::BurstUnsupported(Algorithm::SlidingLog))
        );
        assert_eq!(
            base.clone().algorithm(Algorithm::Concurrency).build(),
            Err(LimitError::KindAlgorithmMismatch {
                kind: LimitKind::Tokens,
                algorithm: Algorithm::Concurrency
            })
        );
        assert_eq!(
            LimitSpec::concurrency(2).algorithm(Algorithm::Gcra).build(),
            Err(LimitError::KindAlgorithmMismatch {
                kind: LimitKind::Concurrency,
                algorithm: Algorithm::Gcra
            })
        );
        assert_eq!(
            LimitSpec::new(LimitKind::Tokens, 10, Window::Month).build(),
            Err(LimitError::MonthNeedsFixedWindow(Algorithm::Gcra))
        );
        assert!(matches!(
            LimitSpec::new(
                LimitKind::Tokens,
                10,
                Window::Length(MAX_WINDOW + Duration::from_secs(1))
            )
            .build(),
            Err(LimitError::WindowTooLong(_))
        ));
    }

    #[test]
    fn fractional_rates_scale_exactly() {
        // 7 per second: one unit is 142857.142857... us.
        let l = LimitSpec::new(LimitKind::Requests, 7, Window::SECOND)
            .build()
            .unwrap();
        assert_eq!(l.gcra().scale, 7);
        assert_eq!(l.gcra().step, 1_000_000);
    }
}
