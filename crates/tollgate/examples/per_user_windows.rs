//! Per-provider defaults for each user, over a minute, an hour and a day, with bursts; custom
//! limits for one user; status, reset, waiting; and service tiers.
//!
//! The scenario (seed 001): a router calls several model providers (GLM, DeepSeek, Claude,
//! OpenAI, DeepInfra) for many users. Each provider has default limits for each user: so many
//! requests per minute (with a smaller burst), per hour and per day. Some users get custom
//! limits. Callers either check (and are refused when over a limit) or wait until the call
//! may go ahead, up to a deadline. Operators read a user's status and reset it. Tenants are on
//! a free, pro or enterprise tier.
//!
//! In tollgate the defaults are a policy file, `examples/policies/providers.toml` at the
//! repository root: one rule per provider partitioned by user, and a `tiers` rule partitioned
//! by tenant; the same numbers ship as one preset file per provider in `examples/presets/`,
//! keyed per caller, so calls without a user are limited too. A user's custom limits are set
//! while running with [`Policy::with_subject_limits`] (the service's `PUT
//! /v1/admin/subject-limits`). [`Limiter::acquire`] is the wait: it sleeps exactly until the denial's
//! `retry_after` (no polling, no backoff guesswork) and serves waiters in arrival order. The
//! example runs on a tokio runtime with paused time, so sleeps complete at once while the clock
//! advances exactly as if they had been real.
//!
//! Run it with `cargo run -p tollgate --example per_user_windows`.

use std::time::Duration;

use tokio::time::Instant;
use tollgate::{
    Cost, DenyReason, Error, LimitKind, LimitSpec, Limiter, Policy, Reservation, Subject,
    Timestamp, TokioClock, Window,
};

/// The policy file, at the repository root.
const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/policies/providers.toml"
);

/// 2023-11-15 09:00:00 UTC: on an hour boundary, so the windows below line up with it.
const START: Timestamp = Timestamp::from_secs(1_700_038_800);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let policy = check_policy_file()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    // The clock is created inside the runtime so that it follows the runtime's paused time.
    rt.block_on(async {
        let limiter = Limiter::with_clock(policy, TokioClock::starting_at(START));
        check_and_status(&limiter).await?;
        wait_if_needed(&limiter).await?;
        hourly_window(&limiter).await?;
        custom_user_limits(&limiter).await?;
        tiers(&limiter).await?;
        reset(&limiter).await?;
        presets_and_user_less_calls().await?;
        println!("ok");
        Ok(())
    })
}

/// Loads the policy file and checks that it holds what its comments say.
fn check_policy_file() -> Result<Policy, Error> {
    let policy = Policy::load(POLICY)?;
    let names: Vec<&str> = policy.rules().iter().map(|r| r.name()).collect();
    println!(
        "loaded {} rules from providers.toml: {names:?}",
        names.len()
    );
    assert_eq!(
        names,
        ["glm", "deepseek", "claude", "openai", "deepinfra", "tiers"]
    );
    for (provider, per_minute, burst, per_hour, per_day) in [
        ("glm", 60, 20, 3_000, 50_000),
        ("deepseek", 50, 15, 2_000, 40_000),
        ("claude", 50, 10, 2_000, 30_000),
        ("openai", 60, 20, 3_500, 100_000),
        ("deepinfra", 30, 10, 1_000, 20_000),
    ] {
        let rule = policy.rule(provider).expect("one rule per provider");
        assert_eq!(rule.partition(), [tollgate::Attr::User]);
        let who = Subject::new().provider(provider).user("anyone");
        assert!(rule.matches(&who));
        assert!(!rule.matches(&Subject::new().provider("other").user("anyone")));
        let limits: Vec<_> = rule
            .limits_for(&who)
            .limits()
            .iter()
            .map(|l| *l.limit())
            .collect();
        let found: Vec<_> = limits
            .iter()
            .map(|l| (l.amount(), l.window(), l.burst()))
            .collect();
        assert_eq!(
            found,
            [
                (per_minute, Window::MINUTE, burst),
                (per_hour, Window::HOUR, per_hour),
                (per_day, Window::DAY, per_day),
            ],
            "{provider}"
        );
    }
    let tiers = policy.rule("tiers").expect("the tiers rule");
    let sets: Vec<&str> = tiers.limit_sets().map(|s| s.name()).collect();
    assert_eq!(sets.len(), 4, "defaults and three tiers: {sets:?}");
    Ok(policy)
}

fn user_on<'a>(provider: &'a str, user: &'a str) -> Subject<'a> {
    Subject::new().provider(provider).user(user)
}

/// Prints what a status endpoint would return: usage per window, and whether a call now would
/// be refused.
async fn status(limiter: &Limiter, who: &Subject<'_>) -> Result<bool, Error> {
    let is_limited = !limiter.peek(who, Cost::ONE).await?.is_allowed();
    println!("    status of {who}: is_limited = {is_limited}");
    for u in limiter.usage(who).await? {
        let limit = format!("{} {}/{}", u.rule, u.amount, u.window);
        println!(
            "      {limit:<22} capacity {:<6} used {:<5} remaining {:<6} full again in {:?}",
            u.capacity, u.used, u.available, u.reset_after
        );
    }
    Ok(is_limited)
}

async fn check_and_status(limiter: &Limiter) -> Result<(), Error> {
    println!("1. check: user_123 on GLM may burst 20 requests, then one per second");
    let who = user_on("glm", "user_123");
    for i in 1..=20 {
        let d = limiter.check(&who, Cost::ONE).await?;
        assert!(d.is_allowed(), "call {i}");
        if i == 20 {
            let remaining: Vec<u64> = d.statuses().iter().map(|s| s.remaining).collect();
            println!(
                "    call 20 allowed, remaining per window (minute, hour, day): {remaining:?}"
            );
            assert_eq!(remaining, [0, 2_980, 49_980]);
        }
    }
    let d = limiter.check(&who, Cost::ONE).await?;
    println!("    call 21: {d}");
    assert!(!d.is_allowed());
    assert_eq!(d.reason(), Some(DenyReason::Requests));
    assert_eq!(d.denied_by().map(|s| s.window), Some(Window::MINUTE));
    assert_eq!(d.retry_after(), Some(Duration::from_secs(1)));
    assert!(status(limiter, &who).await?);
    // Another user, or the same user on another provider, is not affected.
    assert!(!status(limiter, &user_on("glm", "user_456")).await?);
    assert!(limiter
        .check(&user_on("claude", "user_123"), Cost::ONE)
        .await?
        .is_allowed());
    Ok(())
}

async fn wait_if_needed(limiter: &Limiter) -> Result<(), Error> {
    println!("2. wait: acquire sleeps exactly until retry_after");
    let who = user_on("glm", "user_123");
    let retry_after = limiter
        .peek(&who, Cost::ONE)
        .await?
        .retry_after()
        .expect("user_123 is limited on GLM");
    let started = Instant::now();
    let r = limiter
        .acquire(&who, Cost::ONE, Duration::from_secs(30))
        .await?;
    let waited = started.elapsed();
    println!("    admitted after {waited:?} (retry_after was {retry_after:?})");
    assert!(matches!(r, Reservation::Granted(_)));
    assert_eq!(waited, retry_after);

    // Three callers wait at once: each is admitted as its slot frees, in arrival order.
    let started = Instant::now();
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let who = user_on("glm", "user_123");
                let r = limiter
                    .acquire(&who, Cost::ONE, Duration::from_secs(30))
                    .await;
                (i, r.map(|r| r.decision().is_allowed()), Instant::now())
            })
        })
        .collect();
    for (n, w) in waiters.into_iter().enumerate() {
        let (i, allowed, at) = w.await.expect("the waiter ran");
        let waited = at - started;
        println!("    waiter {i} admitted after {waited:?}");
        assert!(allowed?);
        assert_eq!(waited, Duration::from_secs(n as u64 + 1));
    }

    // A deadline shorter than the wait: the caller gets the denial back at the deadline.
    let started = Instant::now();
    let r = limiter
        .acquire(&who, Cost::ONE, Duration::from_millis(500))
        .await?;
    let waited = started.elapsed();
    println!(
        "    with max_wait = 500ms: still refused when the deadline came, after {waited:?}: {}",
        r.decision()
    );
    assert!(!r.decision().is_allowed());
    assert_eq!(waited, Duration::from_millis(500));
    assert_eq!(r.decision().retry_after(), Some(Duration::from_millis(500)));
    Ok(())
}

async fn hourly_window(limiter: &Limiter) -> Result<(), Error> {
    println!("3. the hourly window: a steady 30/minute on DeepInfra runs into 1,000/hour");
    let who = user_on("deepinfra", "batch_job");
    let started = Instant::now();
    let mut admitted = 0u32;
    let denial = loop {
        let d = limiter.check(&who, Cost::ONE).await?;
        if !d.is_allowed() {
            break d;
        }
        admitted += 1;
        tokio::time::advance(Duration::from_secs(2)).await;
    };
    let s = denial.denied_by().expect("a limit denied");
    println!(
        "    {admitted} calls over {:?}, then denied by the per-{} limit; retry after {:?}",
        started.elapsed(),
        s.window,
        denial.retry_after().unwrap_or_default()
    );
    assert_eq!(admitted, 1_000);
    assert_eq!(s.window, Window::HOUR);
    assert!(denial.retry_after() > Some(Duration::from_secs(20 * 60)));
    status(limiter, &who).await?;
    Ok(())
}

async fn custom_user_limits(limiter: &Limiter) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "4. custom limits for premium_user on GLM: 100/min (bursts of 30), 5,000/h, 50,000/day"
    );
    // The seed's `set_user_rate_limit`: the limits replace the rule's own for this user (an
    // override). `subject_rules` finds the rules partitioned by user; here only GLM's.
    let policy = limiter.policy();
    let when = [("user".to_owned(), "premium_user".to_owned())];
    let every = policy.subject_rules(None, &when)?;
    assert_eq!(every, ["glm", "deepseek", "claude", "openai", "deepinfra"]);
    let custom = [
        LimitSpec::new(LimitKind::Requests, 100, Window::MINUTE).burst(30),
        LimitSpec::new(LimitKind::Requests, 5_000, Window::HOUR)
            .algorithm(tollgate::Algorithm::SlidingWindow),
        LimitSpec::new(LimitKind::Requests, 50_000, Window::DAY)
            .algorithm(tollgate::Algorithm::FixedWindow),
    ];
    let with_premium = policy.with_subject_limits(&["glm"], &when, &custom)?;
    // Buckets of unchanged limits keep their state across the swap.
    let before = limiter.usage(&user_on("glm", "user_123")).await?;
    limiter.set_policy(with_premium);
    assert_eq!(limiter.usage(&user_on("glm", "user_123")).await?, before);

    let premium = user_on("glm", "premium_user");
    let mut admitted = 0;
    let denial = loop {
        let d = limiter.check(&premium, Cost::ONE).await?;
        if !d.is_allowed() {
            break d;
        }
        admitted += 1;
    };
    println!("    {admitted} calls at once, then: {denial}");
    assert_eq!(admitted, 30);
    // 100 per minute: one more every 600 ms.
    assert_eq!(denial.retry_after(), Some(Duration::from_millis(600)));
    status(limiter, &premium).await?;
    Ok(())
}

async fn tiers(limiter: &Limiter) -> Result<(), Error> {
    println!(
        "5. tiers: each tenant's tier picks its limits (bursts: free 5, pro 50, enterprise 500)"
    );
    for (tenant, tier, burst) in [
        ("acme", Some("free"), 5),
        ("globex", Some("pro"), 50),
        ("initech", Some("enterprise"), 500),
        ("hooli", None, 5),
    ] {
        let mut who = Subject::new().tenant(tenant);
        if let Some(tier) = tier {
            who = who.tier(tier);
        }
        let mut admitted = 0;
        while limiter.check(&who, Cost::ONE).await?.is_allowed() {
            admitted += 1;
        }
        println!(
            "    {tenant} ({}): {admitted} calls at once",
            tier.unwrap_or("no tier: the rule's defaults")
        );
        assert_eq!(admitted, burst);
    }

    // A call that names a tenant, a user and a provider is under both rules: here the free
    // tier is tighter than GLM's per-user burst.
    let who = Subject::new()
        .tenant("umbrella")
        .tier("free")
        .provider("glm")
        .user("user_789");
    let mut admitted = 0;
    let denial = loop {
        let d = limiter.check(&who, Cost::ONE).await?;
        if !d.is_allowed() {
            break d;
        }
        assert_eq!(
            d.statuses().len(),
            6,
            "three GLM windows and three tier windows"
        );
        admitted += 1;
    };
    println!("    a free tenant's user on GLM: {admitted} calls, then {denial}");
    assert_eq!(admitted, 5);
    assert_eq!(denial.denied_by().map(|s| s.rule), Some("tiers"));
    Ok(())
}

async fn reset(limiter: &Limiter) -> Result<(), Error> {
    println!("6. reset user_123 on GLM");
    let who = user_on("glm", "user_123");
    while limiter.check(&who, Cost::ONE).await?.is_allowed() {}
    assert!(status(limiter, &who).await?);
    // A reset names how many buckets it reset; without the provider no rule applies, so it
    // resets nothing and says so (the CLI exits 3, the HTTP body says "nothing matched").
    assert_eq!(limiter.reset(&Subject::new().user("user_123")).await?, 0);
    assert!(status(limiter, &who).await?);
    let n = limiter.reset(&who).await?;
    println!("    {n} buckets reset (minute, hour, day)");
    assert_eq!(n, 3);
    assert!(!status(limiter, &who).await?);
    for u in limiter.usage(&who).await? {
        assert_eq!((u.used, u.available), (0, u.capacity));
    }
    Ok(())
}

/// The seed's per-provider defaults as shipped presets, one file per provider, keyed per caller:
/// a call without a user (the seed's `user_id=None`) is limited too, in a bucket it shares with
/// the other user-less calls.
async fn presets_and_user_less_calls() -> Result<(), Box<dyn std::error::Error>> {
    println!("7. the shipped presets, one file per provider, and calls without a user");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/presets");
    for (file, per_minute, burst) in [
        ("glm.toml", 60, 20),
        ("deepseek.toml", 50, 15),
        ("claude.toml", 50, 10),
        ("openai-windows.toml", 60, 20),
        ("deepinfra.toml", 30, 10),
    ] {
        let preset = Policy::load(format!("{dir}/{file}"))?;
        let minute = preset.rules()[0]
            .limit_sets()
            .next()
            .map(|s| *s.limits()[0].limit());
        let minute = minute.ok_or("a minute limit")?;
        assert_eq!(
            (minute.amount(), minute.burst()),
            (per_minute, burst),
            "{file}"
        );
    }
    let glm = Limiter::with_clock(
        Policy::load(format!("{dir}/glm.toml"))?,
        TokioClock::starting_at(START),
    );
    let nobody = Subject::new().provider("glm");
    let mut admitted = 0;
    while glm.check(&nobody, Cost::ONE).await?.is_allowed() {
        admitted += 1;
    }
    println!("    user-less calls to GLM: {admitted} at once (the preset's burst), then refused");
    assert_eq!(admitted, 20);
    // A user's own bucket is separate.
    assert!(glm
        .check(&user_on("glm", "user_123"), Cost::ONE)
        .await?
        .is_allowed());
    Ok(())
}
