//! Reading limits from text: the `FromStr` implementations of every name a configuration file
//! uses (`kind`, `algorithm`, `per`, `utc_offset`) and the duration syntax.
//!
//! They live here, above the types they read and [`LimitError`], so that the error can name a
//! kind or an algorithm without the kind module needing the error in turn.

use std::str::FromStr;
use std::time::Duration;

use crate::calendar::UtcOffset;
use crate::error::LimitError;
use crate::kind::{Algorithm, LimitKind};
use crate::window::Window;

impl FromStr for LimitKind {
    type Err = LimitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LimitKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| LimitError::UnknownKind(s.to_owned()))
    }
}

impl FromStr for Algorithm {
    type Err = LimitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| LimitError::UnknownAlgorithm(s.to_owned()))
    }
}

impl FromStr for Window {
    type Err = LimitError;
    /// `second`, `minute`, `hour`, `day`, `week` (7 days), `month` (the calendar month),
    /// `year` (365 days, as Envoy's rate limit service counts one), or a duration such as
    /// `30s`, `90m`, `1h30m`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "second" | "sec" | "s" => Ok(Window::SECOND),
            "minute" | "min" | "m" => Ok(Window::MINUTE),
            "hour" | "h" => Ok(Window::HOUR),
            "day" | "d" => Ok(Window::DAY),
            "week" => Ok(Window::Length(Duration::from_secs(7 * 86_400))),
            "month" => Ok(Window::Month),
            "year" => Ok(Window::Length(Duration::from_secs(365 * 86_400))),
            other => parse_duration(other)
                .map(Window::Length)
                .ok_or_else(|| LimitError::BadWindow(other.to_owned())),
        }
    }
}

impl FromStr for UtcOffset {
    type Err = LimitError;
    /// `Z`, `UTC`, `+05:30`, `-08:00` or `+0100`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LimitError::BadUtcOffset(s.to_owned());
        if s == "Z" || s.eq_ignore_ascii_case("utc") {
            return Ok(UtcOffset::UTC);
        }
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+') => (1, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            _ => return Err(bad()),
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let hours: i32 = digits[..2].parse().map_err(|_| bad())?;
        let minutes: i32 = digits[2..].parse().map_err(|_| bad())?;
        if minutes >= 60 {
            return Err(bad());
        }
        // hours and minutes are at most two digits each: no overflow.
        #[allow(clippy::arithmetic_side_effects)]
        let seconds = sign * (hours * 3600 + minutes * 60);
        UtcOffset::from_seconds(seconds).map_err(|_| bad())
    }
}

/// Parses durations such as `250ms`, `30s`, `1h30m`, `7d` (humantime's syntax).
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_durations_parse() {
        assert_eq!("minute".parse::<Window>().unwrap(), Window::MINUTE);
        assert_eq!(
            "1h30m".parse::<Window>().unwrap(),
            Window::Length(Duration::from_secs(5400))
        );
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
        assert!("fortnight".parse::<Window>().is_err());
        assert_eq!(
            "week".parse::<Window>().unwrap(),
            Window::Length(Duration::from_secs(604_800))
        );
        assert_eq!(
            "year".parse::<Window>().unwrap(),
            Window::Length(Duration::from_secs(31_536_000))
        );
        assert_eq!("tokens".parse::<LimitKind>().unwrap(), LimitKind::Tokens);
        assert!("bytes".parse::<LimitKind>().is_err());
        assert_eq!(
            "sliding_log".parse::<Algorithm>().unwrap(),
            Algorithm::SlidingLog
        );
    }
}
