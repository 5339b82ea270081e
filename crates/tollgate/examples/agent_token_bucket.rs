//! A token bucket per agent: check and consume, from synchronous code.
//!
//! The scenario (seed 003): every agent of a fleet has a quota of abstract tokens: a bucket of
//! 1,000 tokens that refills at 10 tokens per second. Before an expensive operation the agent
//! checks and consumes what it will spend (an inference costs 10 tokens, an upload 100 tokens
//! per megabyte) and backs off when refused. A full bucket refills in size / rate = 100
//! seconds.
//!
//! In tollgate the bucket is one limit, "10 tokens per second with a burst of 1,000", in a rule
//! partitioned by agent. The fleet configures it through the environment, as before:
//! `TOKEN_BUCKET_SIZE=1000` and `TOKEN_REFILL_RATE=10.0`, read by [`EnvConfig`] (which also
//! reads `REDIS_URL`, the shared store; `tollgate serve` reads the same variables). The code
//! here is synchronous and uses [`BlockingLimiter`], the blocking face of the same limiter. A
//! manual clock shows the refill without waiting for it.
//!
//! Run it with `cargo run -p tollgate --example agent_token_bucket`.

use std::time::Duration;

use tollgate::env::EnvConfig;
use tollgate::{
    BlockingLimiter, Cost, DenyReason, Error, LimitUsage, Limiter, ManualClock, Outcome, Subject,
    Timestamp,
};

/// Tokens the bucket holds.
const BUCKET_SIZE: u64 = 1_000;
/// Tokens added per second.
const REFILL_PER_SECOND: u64 = 10;

/// Tokens an upload of `megabytes` costs.
const fn upload_cost(megabytes: u64) -> u64 {
    megabytes * 100
}

/// Spends `tokens` from the agent's bucket if they are there; spends nothing otherwise.
fn check_and_consume(limiter: &BlockingLimiter, agent: &str, tokens: u64) -> Result<bool, Error> {
    let d = limiter.check(&Subject::new().agent(agent), Cost::tokens(tokens))?;
    Ok(d.is_allowed())
}

fn bucket(limiter: &BlockingLimiter, agent: &str) -> Result<LimitUsage, Error> {
    let usage = limiter.usage(&Subject::new().agent(agent))?;
    Ok(usage[0])
}

fn print_bucket(limiter: &BlockingLimiter, agent: &str) -> Result<LimitUsage, Error> {
    let b = bucket(limiter, agent)?;
    println!(
        "    {agent}: {} of {} tokens available, full again in {:?}",
        b.available, b.capacity, b.reset_after
    );
    Ok(b)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("0. the bucket comes from the environment the fleet already sets");
    // `EnvConfig::read()` reads the process environment; `from_vars` reads given variables.
    let env = EnvConfig::from_vars([
        ("TOKEN_BUCKET_SIZE".to_owned(), BUCKET_SIZE.to_string()),
        (
            "TOKEN_REFILL_RATE".to_owned(),
            format!("{REFILL_PER_SECOND}.0"),
        ),
    ])?;
    println!("    {env:?}");
    // Without REDIS_URL the buckets stay in this process (with it: a RedisStore).
    assert!(env.redis_url.is_none());
    let policy = env
        .policy
        .ok_or("TOKEN_BUCKET_SIZE and TOKEN_REFILL_RATE are set")?;
    assert_eq!(policy.rules()[0].name(), tollgate::env::TOKEN_BUCKET_RULE);
    // A bad value is an error naming the variable, never a silent default.
    let bad = EnvConfig::from_vars([
        ("TOKEN_BUCKET_SIZE".to_owned(), "1k".to_owned()),
        ("TOKEN_REFILL_RATE".to_owned(), "10".to_owned()),
    ])
    .unwrap_err();
    println!("    TOKEN_BUCKET_SIZE=1k: {bad}");
    assert_eq!(bad.var(), "TOKEN_BUCKET_SIZE");
    let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
    let limiter = BlockingLimiter::new(Limiter::with_clock(policy, clock.clone()))?;

    println!("1. agent-a runs inferences of 10 tokens until its bucket is empty");
    let mut runs = 0;
    while check_and_consume(&limiter, "agent-a", 10)? {
        runs += 1;
    }
    println!("    {runs} inferences ran");
    assert_eq!(runs, 100);
    let b = print_bucket(&limiter, "agent-a")?;
    assert_eq!((b.used, b.available), (1_000, 0));
    assert_eq!(b.reset_after, Duration::from_secs(100), "size / rate");
    let d = limiter.check(&Subject::new().agent("agent-a"), Cost::tokens(10))?;
    println!("    the next one: {d}");
    assert_eq!(d.reason(), Some(DenyReason::Tokens));
    assert_eq!(d.retry_after(), Some(Duration::from_secs(1)));

    println!("2. agents have separate buckets");
    assert!(check_and_consume(&limiter, "agent-b", 10)?);
    print_bucket(&limiter, "agent-b")?;

    println!("3. the bucket refills at 10 tokens per second");
    clock.advance(Duration::from_millis(500));
    print_bucket(&limiter, "agent-a")?;
    assert!(!check_and_consume(&limiter, "agent-a", 10)?);
    assert!(check_and_consume(&limiter, "agent-a", 5)?);
    clock.advance(Duration::from_secs(100));
    let b = print_bucket(&limiter, "agent-a")?;
    assert_eq!((b.used, b.available), (0, 1_000));

    println!("4. uploads cost 100 tokens per megabyte");
    assert!(check_and_consume(&limiter, "agent-a", upload_cost(5))?);
    let d = limiter.check(
        &Subject::new().agent("agent-a"),
        Cost::tokens(upload_cost(6)),
    )?;
    println!("    a 6 MB upload after a 5 MB one: {d}");
    // 100 tokens short, at 10 per second.
    assert_eq!(d.retry_after(), Some(Duration::from_secs(10)));
    clock.advance(Duration::from_secs(10));
    assert!(check_and_consume(&limiter, "agent-a", upload_cost(6))?);

    println!("5. a cost larger than the bucket can never be admitted");
    clock.advance(Duration::from_secs(100));
    let d = limiter.check(
        &Subject::new().agent("agent-a"),
        Cost::tokens(upload_cost(15)),
    )?;
    println!("    a 15 MB upload: {d}");
    assert_eq!(d.outcome(), Outcome::TooLarge);
    assert_eq!(d.retry_after(), None, "waiting would not help");
    // Over HTTP (the service, the tower layer) this is a 413 whose headers tell SDKs not to
    // retry: `x-should-retry: false`, and no Retry-After.
    let h = tollgate::headers::headers(&d, tollgate::HeaderStyle::OpenAi);
    assert!(h.contains(&("x-should-retry", "false".to_owned())));
    println!("    its headers say: x-should-retry: false");

    println!("6. reserve an estimate, then settle what was actually spent");
    let permit = limiter
        .reserve(&Subject::new().agent("agent-c"), Cost::tokens(300))?
        .map_err(|d| d.to_string())?;
    assert_eq!(bucket(&limiter, "agent-c")?.used, 300);
    // ... the operation runs and turns out to cost 120 tokens ...
    permit.commit(Cost::tokens(120))?;
    let b = print_bucket(&limiter, "agent-c")?;
    assert_eq!(b.used, 120, "the unspent 180 tokens were refunded");
    println!("ok");
    Ok(())
}
