//! Exact rolling windows per user and model, several tiers of limits with the reason of each
//! denial, decision statistics, and HTTP 429 headers.
//!
//! The scenario (seed 002): an inference service allows each user 100 requests per hour on
//! each model, counted over an exact rolling hour (a sliding window log: every admitted call
//! is remembered until it is an hour old). Further limits apply at the same time: per user
//! across all models, per model across all users (to protect a GPU pool), and per service
//! tier. A denial says which limit refused and when to come back, and becomes a `429 Too Many
//! Requests` response with `Retry-After` and rate-limit headers. Operators watch how many
//! calls were allowed and denied and how many buckets are active.
//!
//! In tollgate each level is a rule; a call is admitted only if all of them admit it, and
//! [`Decision::denied_by`] names the rule and limit that refused. The code is synchronous
//! (through [`BlockingLimiter`]) and reads a manual clock, moved by hand to show the window
//! sliding.
//!
//! Run it with `cargo run -p tollgate --example sliding_log_tiers`.

use std::time::Duration;

use tollgate::headers::{headers, HeaderStyle};
use tollgate::{
    Algorithm, BlockingLimiter, Cost, Decision, DenyReason, LimitKind, LimitSpec, Limiter,
    ManualClock, Policy, PolicyError, Rule, Subject, Timestamp, Window,
};

/// `n` requests per rolling hour, counted exactly.
fn per_hour(n: u64) -> LimitSpec {
    LimitSpec::new(LimitKind::Requests, n, Window::HOUR).algorithm(Algorithm::SlidingLog)
}

fn policy() -> Result<Policy, PolicyError> {
    Policy::builder()
        // The base limit: 100 requests per hour for each (user, model) pair.
        .rule(
            Rule::builder("user-model")
                .per("user")
                .per("model")
                .limit(per_hour(100)),
        )
        // Each user, all models together.
        .rule(Rule::builder("user").per("user").limit(per_hour(150)))
        // Each model, all users together: gpt-4 is scarce.
        .rule(
            Rule::builder("model")
                .per("model")
                .limit(per_hour(1_000))
                .override_when([("model", "gpt-4")], [per_hour(250)]),
        )
        // The user's tier: the defaults serve the free tier (and users without a tier).
        .rule(
            Rule::builder("tier")
                .per("user")
                .limit(per_hour(20))
                .tier("pro", [per_hour(1_000)]),
        )
        .build()
}

fn call<'a>(user: &'a str, tier: &'a str, model: &'a str) -> Subject<'a> {
    Subject::new().user(user).tier(tier).model(model)
}

/// Calls until one is denied; returns how many were admitted and the denial.
fn until_denied(
    limiter: &BlockingLimiter,
    who: &Subject<'_>,
) -> Result<(u64, Decision), tollgate::Error> {
    let mut admitted = 0;
    loop {
        let d = limiter.check(who, Cost::ONE)?;
        if !d.is_allowed() {
            return Ok((admitted, d));
        }
        admitted += 1;
    }
}

/// The `(rule, kind)` that refused, as a gateway would log it.
fn reason(d: &Decision) -> (&'static str, LimitKind) {
    let s = d
        .denied_by()
        .expect("a denial names the limit that refused");
    (s.rule, s.kind)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
    let limiter = BlockingLimiter::new(Limiter::with_clock(policy()?, clock.clone()))?;
    let minutes = |m: u64| Duration::from_secs(m * 60);

    println!("1. alice (pro) on gpt-4: 60 calls now, 40 more half an hour later");
    let alice = call("alice", "pro", "gpt-4");
    for _ in 0..60 {
        assert!(limiter.check(&alice, Cost::ONE)?.is_allowed());
    }
    clock.advance(minutes(30));
    for _ in 0..40 {
        assert!(limiter.check(&alice, Cost::ONE)?.is_allowed());
    }
    let denied = limiter.check(&alice, Cost::ONE)?;
    println!("    call 101: {denied}");
    assert_eq!(reason(&denied), ("user-model", LimitKind::Requests));
    assert_eq!(denied.reason(), Some(DenyReason::Requests));
    // The first 60 calls leave the rolling hour in exactly 30 minutes.
    assert_eq!(denied.retry_after(), Some(minutes(30)));

    println!("2. the 429 response for that denial");
    let h = headers(&denied, HeaderStyle::Both);
    for (name, value) in &h {
        println!("    {name}: {value}");
    }
    let get = |name: &str| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    assert_eq!(get("retry-after"), Some("1800"));
    // And in milliseconds, which the OpenAI and Anthropic SDKs read before Retry-After.
    assert_eq!(get("retry-after-ms"), Some("1800000"));
    assert_eq!(get("x-ratelimit-limit-requests"), Some("100"));
    assert_eq!(get("x-ratelimit-remaining-requests"), Some("0"));
    assert!(get("ratelimit-policy").is_some_and(|p| p.contains("\"user-model.requests\";q=100")));
    assert!(get("ratelimit").is_some());

    println!("3. half an hour later the first 60 calls have left the window");
    clock.advance(minutes(30));
    let (admitted, denied) = until_denied(&limiter, &alice)?;
    println!("    {admitted} more calls, then: {denied}");
    assert_eq!(admitted, 60);
    assert_eq!(reason(&denied), ("user-model", LimitKind::Requests));
    let allowed = limiter.peek(&call("alice", "pro", "claude-3"), Cost::ONE)?;
    println!(
        "    an allowed call's headers: {:?}",
        headers(&allowed, HeaderStyle::OpenAi)
    );
    assert!(headers(&allowed, HeaderStyle::Both)
        .iter()
        .all(|(n, _)| *n != "retry-after"));

    println!("4. alice on claude-3 runs into her own limit across models (150/hour)");
    let (admitted, denied) = until_denied(&limiter, &call("alice", "pro", "claude-3"))?;
    println!("    {admitted} calls, then: {denied}");
    assert_eq!(admitted, 50);
    assert_eq!(reason(&denied), ("user", LimitKind::Requests));

    println!("5. bob (free tier) runs into the tier's limit (20/hour)");
    let (admitted, denied) = until_denied(&limiter, &call("bob", "free", "gpt-4"))?;
    println!("    {admitted} calls, then: {denied}");
    assert_eq!(admitted, 20);
    assert_eq!(reason(&denied), ("tier", LimitKind::Requests));

    println!("6. gpt-4 as a whole: 250/hour across users");
    // alice has 100 gpt-4 calls in the window and bob 20; carol adds 100.
    let (admitted, _) = until_denied(&limiter, &call("carol", "pro", "gpt-4"))?;
    assert_eq!(admitted, 100);
    let dave = call("dave", "pro", "gpt-4");
    let (admitted, denied) = until_denied(&limiter, &dave)?;
    println!("    dave: {admitted} calls, then: {denied}");
    assert_eq!(admitted, 30);
    assert_eq!(reason(&denied), ("model", LimitKind::Requests));
    // dave's own limits were far from spent: the decision reports each limit's status.
    for s in denied.statuses() {
        println!(
            "      {:<10} admitted={:<5} remaining={:<4} retry_after={:?}",
            s.rule, s.admitted, s.remaining, s.retry_after
        );
    }
    assert_eq!(denied.statuses().iter().filter(|s| !s.admitted).count(), 1);

    println!("7. statistics");
    let stats = limiter.stats();
    println!(
        "    allowed {}, denied {}, deny rate {:.2}%",
        stats.allowed,
        stats.denied,
        stats.deny_rate * 100.0
    );
    let buckets = stats
        .active_buckets
        .expect("the memory store counts buckets");
    println!("    active buckets per rule: {buckets:?}");
    // Every `until_denied` above ended with one denial, and step 1 had one more.
    assert_eq!((stats.allowed, stats.denied), (360, 6));
    assert!((stats.deny_rate - 6.0 / 366.0).abs() < 1e-12);
    let active = |rule: &str| buckets.iter().find(|(r, _)| *r == rule).map(|(_, n)| *n);
    // (user, model): alice x2, bob, carol, dave. Users: 4. Models: 2. Tiers: one per user.
    assert_eq!(active("user-model"), Some(5));
    assert_eq!(active("user"), Some(4));
    assert_eq!(active("model"), Some(2));
    assert_eq!(active("tier"), Some(4));

    println!("8. a user's request count, and a reset");
    let count = |who: &Subject<'_>| -> Result<u64, tollgate::Error> {
        let usage = limiter.usage(who)?;
        Ok(usage
            .iter()
            .find(|u| u.rule == "user-model")
            .map_or(0, |u| u.used))
    };
    println!("    alice's gpt-4 count: {}", count(&alice)?);
    assert_eq!(count(&alice)?, 100);
    // A reset forgets every bucket that applies to the subject: alice's, and also the
    // gpt-4-wide one, which the subject names too.
    limiter.reset(&Subject::new().user("alice").model("gpt-4"))?;
    println!(
        "    alice's gpt-4 count after the reset: {}",
        count(&alice)?
    );
    assert_eq!(count(&alice)?, 0);
    assert!(limiter.check(&alice, Cost::ONE)?.is_allowed());
    assert!(limiter.check(&dave, Cost::ONE)?.is_allowed());

    println!("9. a call no tier covers: admitted by default, refused with unmatched = deny");
    // A call without user, model or tier matches no rule here. By default it is admitted
    // unlimited (counted in tollgate_unmatched_total and logged); a service that must cover
    // every call says `unmatched = "deny"` at the top of its policy file.
    let stranger = Subject::new().tenant("acme");
    assert!(limiter.check(&stranger, Cost::ONE)?.is_allowed());
    let strict = BlockingLimiter::new(Limiter::with_clock(
        policy()?.with_unmatched(tollgate::Unmatched::Deny),
        clock.clone(),
    ))?;
    let d = strict.check(&stranger, Cost::ONE)?;
    println!("    {d} [{}]", d.reason().map_or("", |r| r.error_code()));
    assert_eq!(d.outcome(), tollgate::Outcome::Unmatched);
    assert_eq!(d.retry_after(), None, "waiting will not help");
    println!("ok");
    Ok(())
}
