//! Rate-limit response headers rendered from a decision: OpenAI's `x-ratelimit-*`, the IETF
//! `RateLimit-Policy` and `RateLimit` fields, and `Retry-After`.

use std::ops::Range;
use std::time::Duration;

use smallvec::SmallVec;
use tollgate_core::LimitKind;

use crate::decision::{Decision, LimitStatus};

/// Which headers to render.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeaderStyle {
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
    OpenAi,
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    Ietf,
    /// Both.
    #[default]
    Both,
}

/// The headers for `decision`, as `(name, value)` pairs. `Retry-After` is added to every
/// denial that waiting can cure.
///
/// [`render`] writes the same headers without allocating a `String` per value.
pub fn headers(decision: &Decision, style: HeaderStyle) -> Vec<(&'static str, String)> {
    let mut buf = Vec::with_capacity(256);
    let mut spans = Vec::with_capacity(9);
    render(decision, style, &mut buf, |name, range| {
        spans.push((name, range))
    });
    spans
        .into_iter()
        .map(|(name, range)| (name, String::from_utf8_lossy(&buf[range]).into_owned()))
        .collect()
}

/// Renders the headers of [`headers`] into `buf`: each value is appended to `buf` (which is
/// not cleared first), and `emit` is called with the header's name and the byte range of
/// its value in `buf`, in the order of [`headers`]. The values are ASCII.
///
/// This is for servers that answer many decisions: one buffer holds every value, and
/// numbers and durations are written without `format!`.
///
/// ```
/// use tollgate::headers::{render, HeaderStyle};
/// use tollgate::{Cost, LimitKind, LimitSpec, Limiter, Policy, Rule, Subject, Window};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let policy = Policy::builder()
///     .rule(
///         Rule::builder("api")
///             .per("tenant")
///             .limit(LimitSpec::new(LimitKind::Requests, 60, Window::MINUTE)),
///     )
///     .build()?;
/// let limiter = Limiter::with_policy(policy);
/// let decision = limiter.check(&Subject::new().tenant("acme"), Cost::ONE).await?;
/// let mut buf = Vec::new();
/// let mut out = Vec::new();
/// render(&decision, HeaderStyle::OpenAi, &mut buf, |name, value| out.push((name, value)));
/// let (name, value) = out[1].clone();
/// assert_eq!((name, &buf[value]), ("x-ratelimit-remaining-requests", &b"59"[..]));
/// # Ok(()) }
/// ```
pub fn render(
    decision: &Decision,
    style: HeaderStyle,
    buf: &mut Vec<u8>,
    emit: impl FnMut(&'static str, Range<usize>),
) {
    render_with(decision, style, PolicyNames::Rules, buf, emit);
}

/// How the limits are named in `RateLimit-Policy` and `RateLimit`.
///
/// Each name is unique within a decision: `rule.kind` (`per-tenant.tokens`), with the window
/// added when the rule has more than one limit of that kind (`per-tenant.tokens.minute`,
/// `per-tenant.tokens.day`), and an ordinal when even that is shared (`.2`). Names depend on
/// the limits that apply, not on their state, so a client sees the same names call after call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PolicyNames {
    /// `rule.kind[.window][.n]` (the default).
    #[default]
    Rules,
    /// `kind[.window][.n]`: clients do not learn the rules' names.
    Hidden,
}

/// [`render`], naming the limits as `names` says.
pub fn render_with(
    decision: &Decision,
    style: HeaderStyle,
    names: PolicyNames,
    buf: &mut Vec<u8>,
    mut emit: impl FnMut(&'static str, Range<usize>),
) {
    if matches!(style, HeaderStyle::OpenAi | HeaderStyle::Both) {
        openai(decision, buf, &mut emit);
    }
    if matches!(style, HeaderStyle::Ietf | HeaderStyle::Both) {
        ietf(decision, names, buf, &mut emit);
    }
    render_retry_after(decision, buf, emit);
}

/// [`headers`], naming the limits as `names` says.
pub fn headers_with(
    decision: &Decision,
    style: HeaderStyle,
    names: PolicyNames,
) -> Vec<(&'static str, String)> {
    let mut buf = Vec::with_capacity(256);
    let mut spans = Vec::with_capacity(9);
    render_with(decision, style, names, &mut buf, |name, range| {
        spans.push((name, range))
    });
    spans
        .into_iter()
        .map(|(name, range)| (name, String::from_utf8_lossy(&buf[range]).into_owned()))
        .collect()
}

/// Renders the headers that tell a client whether and when to retry, as [`render`] does
/// whatever the style:
///
/// - a denial that waiting cures: `Retry-After` (whole seconds, rounded up, at least 1) and
///   `retry-after-ms` (milliseconds, rounded up), which the OpenAI and Anthropic SDKs read;
/// - a cost that can never fit ([`Outcome::TooLarge`](crate::Outcome::TooLarge)):
///   `x-should-retry: false`, which those SDKs obey, so they do not retry what can never
///   be admitted.
pub fn render_retry_after(
    decision: &Decision,
    buf: &mut Vec<u8>,
    mut emit: impl FnMut(&'static str, Range<usize>),
) {
    if let Some(d) = decision.retry_after() {
        let start = buf.len();
        write_u64(buf, ceil_secs(d).max(1));
        emit("retry-after", start..buf.len());
        let start = buf.len();
        let ms = u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        write_u64(buf, ms);
        emit("retry-after-ms", start..buf.len());
    } else if decision.outcome() == crate::Outcome::TooLarge {
        let start = buf.len();
        buf.extend_from_slice(b"false");
        emit("x-should-retry", start..buf.len());
    }
}

/// The headers of [`render_retry_after`] alone, as `(name, value)` pairs: what a denial
/// carries when no rate-limit header style is wanted.
pub fn retry_headers(decision: &Decision) -> Vec<(&'static str, String)> {
    let mut buf = Vec::with_capacity(32);
    let mut spans = Vec::with_capacity(2);
    render_retry_after(decision, &mut buf, |name, range| spans.push((name, range)));
    spans
        .into_iter()
        .map(|(name, range)| (name, String::from_utf8_lossy(&buf[range]).into_owned()))
        .collect()
}

/// `Retry-After` in whole seconds, rounded up so that a client never retries too early.
pub fn retry_after_header(decision: &Decision) -> Option<String> {
    decision
        .retry_after()
        .map(|d| ceil_secs(d).max(1).to_string())
}

/// Two decimal digits of each number below 100.
const DIGIT_PAIRS: &[u8; 200] = b"\
    000102030405060708091011121314151617181920212223242526272829\
    303132333435363738394041424344454647484950515253545556575859\
    606162636465666768697071727374757677787980818283848586878889\
    90919293949596979899";

/// Appends the decimal digits of `n`.
fn write_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n >= 100 {
        // Below 100: the cast cannot truncate.
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    buf.extend_from_slice(&digits[i..]);
}

/// OpenAI's header names per kind: limit, remaining, reset.
const OPENAI_HEADERS: [(LimitKind, [&str; 3]); 2] = [
    (
        LimitKind::Requests,
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ],
    ),
    (
        LimitKind::Tokens,
        [
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ],
    ),
];

fn openai(
    decision: &Decision,
    buf: &mut Vec<u8>,
    emit: &mut impl FnMut(&'static str, Range<usize>),
) {
    for (kind, [limit, remaining, reset]) in OPENAI_HEADERS {
        if let Some(s) = decision.tightest(kind) {
            // The most that can be spent at once, so that `limit - remaining` is what has
            // been used (with a burst, the bucket holds `burst`, not `amount`).
            let start = buf.len();
            write_u64(buf, s.capacity);
            emit(limit, start..buf.len());
            let start = buf.len();
            write_u64(buf, s.remaining);
            emit(remaining, start..buf.len());
            let start = buf.len();
            write_go_duration(buf, s.reset_after);
            emit(reset, start..buf.len());
        }
    }
}

/// The name of each of `decision`'s limits, in the order of its statuses, as
/// `RateLimit-Policy` gives them (see [`PolicyNames`]).
pub fn policy_names(decision: &Decision, names: PolicyNames) -> Vec<String> {
    let statuses = decision.statuses();
    let suffixes = name_suffixes(statuses, names);
    statuses
        .iter()
        .zip(suffixes)
        .map(|(s, suffix)| {
            let mut buf = Vec::with_capacity(32);
            write_policy_name(&mut buf, s, names, suffix);
            String::from_utf8_lossy(&buf).into_owned()
        })
        .collect()
}

/// What a limit's policy name needs besides `rule.kind` to be unique in its decision: the
/// window (another limit shares rule and kind), and an ordinal (another shares the window too).
#[derive(Clone, Copy, Default)]
struct NameSuffix {
    window: bool,
    ordinal: Option<u32>,
}

fn name_suffixes(statuses: &[LimitStatus], names: PolicyNames) -> SmallVec<[NameSuffix; 8]> {
    let same_kind = |a: &LimitStatus, b: &LimitStatus| {
        a.kind == b.kind && (names == PolicyNames::Hidden || a.rule == b.rule)
    };
    let same_window = |a: &LimitStatus, b: &LimitStatus| {
        same_kind(a, b) && (a.kind == LimitKind::Concurrency || a.window == b.window)
    };
    statuses
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let others = || statuses.iter().enumerate().filter(move |(j, _)| *j != i);
            let window = s.kind != LimitKind::Concurrency && others().any(|(_, o)| same_kind(s, o));
            let ordinal = others().any(|(_, o)| same_window(s, o)).then(|| {
                let before = statuses[..i].iter().filter(|o| same_window(s, o)).count();
                u32::try_from(before).unwrap_or(u32::MAX).saturating_add(1)
            });
            NameSuffix { window, ordinal }
        })
        .collect()
}

/// Appends the policy name of `s` as an sf-string's content: the rule's printable ASCII
/// (without `"` and `\`, each other character becoming one `_`) and `.` (unless the names are
/// hidden), the kind, then what [`NameSuffix`] says.
fn write_policy_name(buf: &mut Vec<u8>, s: &LimitStatus, names: PolicyNames, suffix: NameSuffix) {
    if names == PolicyNames::Rules {
        let plain = |b: &u8| b.is_ascii_graphic() && *b != b'"' && *b != b'\\' || *b == b' ';
        if s.rule.as_bytes().iter().all(plain) {
            buf.extend_from_slice(s.rule.as_bytes());
        } else {
            write_escaped_rule(buf, s.rule);
        }
        buf.push(b'.');
    }
    buf.extend_from_slice(s.kind.as_str().as_bytes());
    if suffix.window {
        buf.push(b'.');
        write_window(buf, s.window);
    }
    if let Some(n) = suffix.ordinal {
        buf.push(b'.');
        write_u64(buf, u64::from(n));
    }
}

/// A window in a name: `second`, `minute`, `hour`, `day`, `month`, or whole seconds (`90s`).
fn write_window(buf: &mut Vec<u8>, w: crate::Window) {
    let secs = ceil_secs(w.nominal());
    let word: Option<&[u8]> = match w {
        crate::Window::Month => Some(b"month"),
        crate::Window::Length(d) if d.subsec_nanos() == 0 => match secs {
            1 => Some(b"second"),
            60 => Some(b"minute"),
            3600 => Some(b"hour"),
            86_400 => Some(b"day"),
            _ => None,
        },
        crate::Window::Length(_) => None,
    };
    match word {
        Some(w) => buf.extend_from_slice(w),
        None => {
            write_u64(buf, secs);
            buf.push(b's');
        }
    }
}

fn write_escaped_rule(buf: &mut Vec<u8>, rule: &str) {
    for c in rule.chars() {
        let ok = c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ';
        // An ASCII char fits a byte.
        buf.push(if ok { c as u8 } else { b'_' });
    }
}

fn ietf(
    decision: &Decision,
    names: PolicyNames,
    buf: &mut Vec<u8>,
    emit: &mut impl FnMut(&'static str, Range<usize>),
) {
    let statuses = decision.statuses();
    if statuses.is_empty() {
        return;
    }
    let suffixes = name_suffixes(statuses, names);
    let start = buf.len();
    for (i, s) in statuses.iter().enumerate() {
        if i > 0 {
            buf.extend_from_slice(b", ");
        }
        buf.push(b'"');
        write_policy_name(buf, s, names, suffixes[i]);
        buf.extend_from_slice(b"\";q=");
        write_u64(buf, s.amount);
        match s.kind {
            LimitKind::Requests => buf.extend_from_slice(b";qu=\"requests\""),
            LimitKind::Concurrency => buf.extend_from_slice(b";qu=\"concurrent-requests\""),
            _ => {}
        }
        if s.kind != LimitKind::Concurrency {
            buf.extend_from_slice(b";w=");
            write_u64(buf, ceil_secs(s.window.nominal()));
        }
    }
    emit("ratelimit-policy", start..buf.len());
    let start = buf.len();
    for (i, s) in statuses.iter().enumerate() {
        if i > 0 {
            buf.extend_from_slice(b", ");
        }
        buf.push(b'"');
        write_policy_name(buf, s, names, suffixes[i]);
        buf.extend_from_slice(b"\";r=");
        write_u64(buf, s.remaining);
        buf.extend_from_slice(b";t=");
        write_u64(buf, ceil_secs(s.reset_after));
    }
    emit("ratelimit", start..buf.len());
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// A duration as OpenAI writes resets: `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`, rounded up
/// to the millisecond.
pub fn go_duration(d: Duration) -> String {
    let mut buf = Vec::with_capacity(16);
    write_go_duration(&mut buf, d);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Appends [`go_duration`]'s rendering of `d`.
fn write_go_duration(buf: &mut Vec<u8>, d: Duration) {
    let ms = d.as_nanos().div_ceil(1_000_000);
    // Durations of more than u64::MAX milliseconds (585 million years) are clamped.
    let ms = u64::try_from(ms).unwrap_or(u64::MAX);
    if ms < 1000 {
        write_u64(buf, ms);
        buf.extend_from_slice(b"ms");
        return;
    }
    let total_secs = ms / 1000;
    let frac_ms = ms % 1000;
    let (h, m, s) = (total_secs / 3600, (total_secs % 3600) / 60, total_secs % 60);
    if h > 0 {
        write_u64(buf, h);
        buf.push(b'h');
    }
    if h > 0 || m > 0 {
        write_u64(buf, m);
        buf.push(b'm');
    }
    write_u64(buf, s);
    if frac_ms != 0 {
        // Three digits, trailing zeros trimmed: 500 -> ".5", 20 -> ".02".
        let digits = [
            b'0' + (frac_ms / 100) as u8,
            b'0' + (frac_ms / 10 % 10) as u8,
            b'0' + (frac_ms % 10) as u8,
        ];
        let len = if frac_ms % 10 != 0 {
            3
        } else if frac_ms % 100 != 0 {
            2
        } else {
            1
        };
        buf.push(b'.');
        buf.extend_from_slice(&digits[..len]);
    }
    buf.push(b's');
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_micros(19_001)), "20ms");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(go_duration(Duration::ZERO), "0ms");
    }

    /// The `format!` rendering that `go_duration` replaced: the reference it must match.
    fn go_duration_by_format(d: Duration) -> String {
        let ms = d.as_nanos().div_ceil(1_000_000);
        if ms < 1000 {
            return format!("{ms}ms");
        }
        let total_secs = ms / 1000;
        let frac_ms = ms % 1000;
        let (h, m, s) = (total_secs / 3600, (total_secs % 3600) / 60, total_secs % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        if frac_ms == 0 {
            out.push_str(&format!("{s}s"));
        } else {
            let frac = format!("{frac_ms:03}");
            out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
        }
        out
    }

    // The `format!` rendering that `render` replaced, kept as the reference it must match.
    fn headers_by_format(decision: &Decision, style: HeaderStyle) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if matches!(style, HeaderStyle::OpenAi | HeaderStyle::Both) {
            openai_by_format(decision, &mut out);
        }
        if matches!(style, HeaderStyle::Ietf | HeaderStyle::Both) {
            ietf_by_format(decision, &mut out);
        }
        if let Some(retry) = retry_after_by_format(decision) {
            out.push(("retry-after", retry));
            let ms = decision
                .retry_after()
                .unwrap_or_default()
                .as_nanos()
                .div_ceil(1_000_000);
            out.push(("retry-after-ms", ms.to_string()));
        } else if decision.outcome() == crate::Outcome::TooLarge {
            out.push(("x-should-retry", "false".to_owned()));
        }
        out
    }

    fn retry_after_by_format(decision: &Decision) -> Option<String> {
        decision
            .retry_after()
            .map(|d| ceil_secs(d).max(1).to_string())
    }

    fn openai_by_format(decision: &Decision, out: &mut Vec<(&'static str, String)>) {
        for (kind, [limit, remaining, reset]) in OPENAI_HEADERS {
            if let Some(s) = decision.tightest(kind) {
                out.push((limit, s.capacity.to_string()));
                out.push((remaining, s.remaining.to_string()));
                out.push((reset, go_duration_by_format(s.reset_after)));
            }
        }
    }

    /// The names of a decision's limits: `rule.kind`, then `.window` for those whose
    /// `rule.kind` repeats, then `.n` for those whose name still repeats.
    fn policy_names_by_format(statuses: &[LimitStatus], names: PolicyNames) -> Vec<String> {
        let base: Vec<String> = statuses
            .iter()
            .map(|s| {
                let mut name = String::new();
                if names == PolicyNames::Rules {
                    for c in s.rule.chars() {
                        // sf-string: printable ASCII without '"' and '\'.
                        name.push(
                            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                                c
                            } else {
                                '_'
                            },
                        );
                    }
                    name.push('.');
                }
                name.push_str(s.kind.as_str());
                name
            })
            .collect();
        let windowed: Vec<String> = statuses
            .iter()
            .zip(&base)
            .map(|(s, b)| {
                if s.kind != LimitKind::Concurrency && base.iter().filter(|o| *o == b).count() > 1 {
                    let w = match s.window.to_string().as_str() {
                        w @ ("second" | "minute" | "hour" | "day" | "month") => w.to_owned(),
                        _ => format!("{}s", ceil_secs(s.window.nominal())),
                    };
                    format!("{b}.{w}")
                } else {
                    b.clone()
                }
            })
            .collect();
        windowed
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if windowed.iter().filter(|o| *o == n).count() > 1 {
                    let nth = windowed[..i].iter().filter(|o| *o == n).count() + 1;
                    format!("{n}.{nth}")
                } else {
                    n.clone()
                }
            })
            .collect()
    }

    fn ietf_by_format(decision: &Decision, out: &mut Vec<(&'static str, String)>) {
        if decision.statuses().is_empty() {
            return;
        }
        let mut policy = String::new();
        let mut current = String::new();
        let names = policy_names_by_format(decision.statuses(), PolicyNames::Rules);
        for (i, s) in decision.statuses().iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let name = &names[i];
            let _ = write!(policy, "{sep}\"{name}\";q={}", s.amount);
            match s.kind {
                LimitKind::Requests => policy.push_str(";qu=\"requests\""),
                LimitKind::Concurrency => policy.push_str(";qu=\"concurrent-requests\""),
                _ => {}
            }
            if s.kind != LimitKind::Concurrency {
                let _ = write!(policy, ";w={}", ceil_secs(s.window.nominal()));
            }
            let _ = write!(
                current,
                "{sep}\"{name}\";r={};t={}",
                s.remaining,
                ceil_secs(s.reset_after)
            );
        }
        out.push(("ratelimit-policy", policy));
        out.push(("ratelimit", current));
    }

    #[test]
    fn go_durations_match_the_format_rendering() {
        let mut micros: Vec<u64> = (0..5_000).collect();
        micros.extend((0..200_000).map(|i| i * 997));
        micros.extend([
            999_999,
            1_000_000,
            1_000_001,
            1_010_000,
            1_100_000,
            59_999_999,
            60_000_000,
            3_599_999_999,
            3_600_000_000,
            86_400_000_000,
            u64::MAX / 1000,
        ]);
        for us in micros {
            let d = Duration::from_micros(us);
            assert_eq!(go_duration(d), go_duration_by_format(d), "{d:?}");
        }
        let d = Duration::new(u64::MAX / 4000, 999_999_999);
        assert_eq!(go_duration(d), go_duration_by_format(d));
    }

    #[tokio::test]
    async fn headers_match_the_format_rendering() {
        use crate::{Cost, LimitSpec, Limiter, Policy, Rule, Subject, Window};
        let policy = Policy::builder()
            .rule(
                Rule::builder("odd \"name\\ é")
                    .per("tenant")
                    .limit(LimitSpec::new(LimitKind::Requests, 2, Window::MINUTE))
                    .limit(LimitSpec::new(LimitKind::Tokens, 1000, Window::HOUR))
                    .limit(LimitSpec::concurrency(3)),
            )
            .rule(Rule::builder("daily").per("tenant").limit(LimitSpec::new(
                LimitKind::Tokens,
                50,
                Window::DAY,
            )))
            .build()
            .unwrap();
        let clock = crate::ManualClock::new(crate::Timestamp::from_secs(1_700_000_000));
        let store = crate::MemoryStore::builder().clock(clock.clone()).build();
        let l = Limiter::with_store(policy, store);
        let who = Subject::new().tenant("a");
        let mut decisions = Vec::new();
        for tokens in [10, 10, 10, 45, 0] {
            decisions.push(l.check(&who, Cost::tokens(tokens)).await.unwrap());
            clock.advance(Duration::from_millis(1_234));
        }
        decisions.push(
            l.check(&Subject::new().user("nobody"), Cost::ONE)
                .await
                .unwrap(),
        );
        let too_large = l.check(&who, Cost::tokens(5_000)).await.unwrap();
        assert_eq!(too_large.outcome(), crate::Outcome::TooLarge);
        let h = headers(&too_large, HeaderStyle::OpenAi);
        assert!(h.contains(&("x-should-retry", "false".to_owned())), "{h:?}");
        assert!(
            !h.iter().any(|(n, _)| n.starts_with("retry-after")),
            "{h:?}"
        );
        decisions.push(too_large);
        let denied = decisions
            .iter()
            .find(|d| d.retry_after().is_some())
            .unwrap();
        let h = headers(denied, HeaderStyle::Ietf);
        let ms = denied
            .retry_after()
            .unwrap()
            .as_nanos()
            .div_ceil(1_000_000)
            .to_string();
        assert!(h.contains(&("retry-after-ms", ms)), "{h:?}");
        assert!(decisions.iter().any(|d| !d.is_allowed()));
        assert!(decisions.iter().any(|d| d.is_allowed()));
        for d in &decisions {
            for style in [HeaderStyle::OpenAi, HeaderStyle::Ietf, HeaderStyle::Both] {
                assert_eq!(headers(d, style), headers_by_format(d, style), "{d:?}");
            }
            assert_eq!(retry_after_header(d), retry_after_by_format(d));
        }
        let policy = &headers(&decisions[2], HeaderStyle::Ietf)[0];
        assert!(
            policy
                .1
                .starts_with("\"odd _name_ _.requests\";q=2;qu=\"requests\";w=60, "),
            "{policy:?}"
        );
        // `render` appends to the buffer it is given and names each value's bytes.
        let mut buf = b"keep".to_vec();
        let mut spans = Vec::new();
        render(&decisions[2], HeaderStyle::Both, &mut buf, |n, r| {
            spans.push((n, r));
        });
        assert!(buf.starts_with(b"keep"));
        let rendered: Vec<(&str, String)> = spans
            .into_iter()
            .map(|(n, r)| (n, String::from_utf8(buf[r].to_vec()).unwrap()))
            .collect();
        assert_eq!(rendered, headers(&decisions[2], HeaderStyle::Both));
    }

    #[tokio::test]
    async fn policy_names_are_unique_and_the_limit_agrees_with_remaining() {
        use crate::{Cost, LimitSpec, Limiter, Policy, Rule, Subject, Window};
        let policy = Policy::builder()
            .rule(
                Rule::builder("tiers")
                    .per("tenant")
                    .limit(LimitSpec::new(LimitKind::Requests, 60, Window::MINUTE).burst(10))
                    .limit(LimitSpec::new(LimitKind::Tokens, 1000, Window::MINUTE))
                    .limit(LimitSpec::new(LimitKind::Tokens, 10_000, Window::HOUR))
                    .limit(LimitSpec::new(LimitKind::Tokens, 50_000, Window::DAY))
                    .limit(LimitSpec::concurrency(3)),
            )
            .rule(
                Rule::builder("models")
                    .per("tenant")
                    .limit(LimitSpec::new(LimitKind::Requests, 100, Window::MINUTE))
                    .limit(LimitSpec::concurrency(5)),
            )
            .build()
            .unwrap();
        let l = Limiter::with_policy(policy);
        let d = l
            .check(&Subject::new().tenant("a"), Cost::tokens(10))
            .await
            .unwrap();
        let h: std::collections::HashMap<&str, String> =
            headers(&d, HeaderStyle::Both).into_iter().collect();
        // The burst is what the bucket holds: used = limit - remaining = 1.
        assert_eq!(h["x-ratelimit-limit-requests"], "10");
        assert_eq!(h["x-ratelimit-remaining-requests"], "9");
        let policy = &h["ratelimit-policy"];
        for name in [
            "\"tiers.requests\";q=60",
            "\"tiers.tokens.minute\";q=1000",
            "\"tiers.tokens.hour\";q=10000",
            "\"tiers.tokens.day\";q=50000",
            "\"tiers.concurrency\";q=3",
            "\"models.requests\";q=100",
            "\"models.concurrency\";q=5",
        ] {
            assert!(policy.contains(name), "{name} in {policy}");
        }
        for names in [PolicyNames::Rules, PolicyNames::Hidden] {
            let want = policy_names_by_format(d.statuses(), names);
            let unique: std::collections::HashSet<&String> = want.iter().collect();
            assert_eq!(unique.len(), want.len(), "{want:?}");
            let h: std::collections::HashMap<&str, String> =
                headers_with(&d, HeaderStyle::Ietf, names)
                    .into_iter()
                    .collect();
            for n in &want {
                assert!(h["ratelimit-policy"].contains(&format!("\"{n}\";")), "{n}");
                assert!(h["ratelimit"].contains(&format!("\"{n}\";")), "{n}");
            }
            if names == PolicyNames::Hidden {
                assert!(!h["ratelimit-policy"].contains("tiers"), "{h:?}");
                assert!(!h["ratelimit"].contains("models"), "{h:?}");
                assert!(h["ratelimit-policy"].contains("\"requests.minute.1\";q=60"));
                assert!(h["ratelimit-policy"].contains("\"concurrency.2\";q=5"));
            }
        }
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut all: Vec<u64> = (0..100_000).collect();
        all.extend((0..64).map(|b| 1u64 << b));
        all.extend((1..20).map(|e| 10u64.pow(e) - 1));
        all.extend((1..20).map(|e| 10u64.pow(e)));
        all.push(u64::MAX);
        for n in all {
            let mut buf = b"x".to_vec();
            write_u64(&mut buf, n);
            assert_eq!(buf, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
    }
}
