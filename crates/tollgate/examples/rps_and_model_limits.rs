//! A requests-per-second limiter (blocking and async, shared by several functions), and
//! per-model limits on requests, tokens and parallel calls for LLM APIs.
//!
//! The scenario (seed 004): a client library offers two things. First, a plain "N requests
//! per second" limiter: `acquire` blocks (or awaits) until the next call may go; a burst of N
//! goes through at once and the rest follow at the steady rate; one limiter can guard several
//! functions together (a decorator with a shared limiter). Second, a limiter for LLM APIs with,
//! for each model, requests per minute (RPM), tokens per minute (TPM) and a maximum number of
//! parallel requests, plus defaults for unlisted models. A context manager waits for
//! capacity, holds a parallel slot for the duration of the call, records the estimated tokens
//! up front and the actual tokens at the end, and releases the slot even on error. Statistics
//! show each model's requests, tokens and active calls against its limits.
//!
//! In tollgate the first is [`RateLimiter`] with [`Limited`] as the decorator. The second is a
//! [`Limiter`] whose rule is partitioned by model with an override per model; the context
//! manager is a [`Permit`](tollgate::Permit) from [`Limiter::acquire`]: it holds the slot until
//! it is committed or dropped (a drop on an error path releases it too). The blocking parts
//! read a manual clock; the async parts run on a tokio runtime with paused time, so every wait
//! below is exact and takes no real time.
//!
//! Run it with `cargo run -p tollgate --example rps_and_model_limits`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tollgate::{
    Clock, Cost, Error, LimitKind, LimitSpec, Limited, Limiter, ManualClock, Policy, PolicyError,
    RateLimiter, Rule, Subject, Timestamp, TokioClock, Window,
};

const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    blocking_rps()?;
    shared_limiter()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    rt.block_on(async {
        async_rps().await?;
        model_limits().await?;
        println!("ok");
        Ok(())
    })
}

/// Milliseconds since `T0` on `clock`.
fn ms_since_start(clock: &ManualClock) -> u64 {
    clock.now().saturating_duration_since(T0).as_millis() as u64
}

fn blocking_rps() -> Result<(), Box<dyn std::error::Error>> {
    println!("1. 10 requests per second, blocking: 15 calls");
    let clock = ManualClock::new(T0);
    let limiter = RateLimiter::per_second(10)?.with_clock(clock.clone());
    let mut at = Vec::new();
    for _ in 0..15 {
        limiter.acquire_blocking(); // the manual clock advances instead of sleeping
        at.push(ms_since_start(&clock));
    }
    println!("    calls went at (ms): {at:?}");
    // The first ten are the burst; the rest follow a tenth of a second apart.
    assert_eq!(at, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 200, 300, 400, 500]);
    assert_eq!(limiter.try_acquire(), Err(Duration::from_millis(100)));
    Ok(())
}

fn shared_limiter() -> Result<(), Box<dyn std::error::Error>> {
    println!("2. two functions sharing one limiter of 5 per second");
    let clock = ManualClock::new(T0);
    let shared = Arc::new(RateLimiter::per_second(5)?.with_clock(clock.clone()));
    let function_a = Limited::new(Arc::clone(&shared), |i: u32| format!("A{i}"));
    let function_b = Limited::new(shared, |i: u32| format!("B{i}"));
    let mut log = Vec::new();
    for i in 0..6 {
        log.push((function_a.call_blocking(i), ms_since_start(&clock)));
        log.push((function_b.call_blocking(i), ms_since_start(&clock)));
    }
    println!("    {log:?}");
    // Twelve calls in total, not twelve per function: 5 at once, then one every 200 ms.
    assert_eq!(log.last().map(|(_, ms)| *ms), Some(1_400));
    assert_eq!(log.iter().filter(|(_, ms)| *ms == 0).count(), 5);
    Ok(())
}

async fn async_rps() -> Result<(), Box<dyn std::error::Error>> {
    println!("3. the same limiter from async code: 20 tasks at once, 10 per second");
    let limiter = Arc::new(RateLimiter::per_second(10)?.with_clock(TokioClock::starting_at(T0)));
    let start = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                limiter.acquire().await;
                start.elapsed().as_millis() as u64
            })
        })
        .collect();
    let mut at = Vec::new();
    for t in tasks {
        at.push(t.await?);
    }
    println!("    tasks went at (ms): {at:?}");
    let expected: Vec<u64> = (0..20).map(|i: u64| i.saturating_sub(9) * 100).collect();
    assert_eq!(
        at, expected,
        "in arrival order: a burst of 10, then one per 100 ms"
    );

    // The async decorator: an async function rate-limited by the same shared limiter.
    let fetch_user = Limited::new(Arc::clone(&limiter), |id: u32| async move {
        format!("user {id}")
    });
    let before = Instant::now();
    assert_eq!(fetch_user.call(7).await, "user 7");
    println!(
        "    fetch_user(7) waited {:?} for its turn",
        before.elapsed()
    );
    assert_eq!(before.elapsed(), Duration::from_millis(100));
    Ok(())
}

/// Holds `n` parallel slots of `who` (each a reservation of 1,000 tokens).
async fn hold_slots(
    limiter: &Limiter,
    who: &Subject<'_>,
    n: usize,
) -> Result<Vec<tollgate::Permit>, Box<dyn std::error::Error>> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(
            limiter
                .reserve(who, Cost::tokens(1_000))
                .await?
                .into_result()
                .map_err(|d| d.to_string())?,
        );
    }
    Ok(held)
}

/// Per-model RPM, TPM and parallel requests, with defaults for other models.
fn model_policy() -> Result<Policy, PolicyError> {
    let limits = |rpm: u64, tpm: u64, parallel: u64| {
        [
            LimitSpec::new(LimitKind::Requests, rpm, Window::MINUTE),
            LimitSpec::new(LimitKind::Tokens, tpm, Window::MINUTE),
            LimitSpec::concurrency(parallel),
        ]
    };
    let mut rule = Rule::builder("model").per("model");
    for spec in limits(10, 200_000, 5) {
        rule = rule.limit(spec);
    }
    rule = rule
        .override_when([("model", "gpt-4")], limits(500, 40_000, 10))
        .override_when([("model", "gpt-3.5-turbo")], limits(3_500, 90_000, 20))
        .override_when([("model", "claude-3")], limits(1_000, 80_000, 5));
    Policy::builder().rule(rule).build()
}

/// `used/amount` for requests and tokens, and `active/max` calls: the statistics of a model.
async fn model_stats(limiter: &Limiter, model: &str) -> Result<[(u64, u64); 3], Error> {
    let usage = limiter.usage(&Subject::new().model(model)).await?;
    let of = |kind: LimitKind| {
        usage
            .iter()
            .find(|u| u.kind == kind)
            .map_or((0, 0), |u| (u.used, u.amount))
    };
    let s = [
        of(LimitKind::Requests),
        of(LimitKind::Tokens),
        of(LimitKind::Concurrency),
    ];
    println!(
        "    {model:<14} requests {}/{}, tokens {}/{}, active {}/{}",
        s[0].0, s[0].1, s[1].0, s[1].1, s[2].0, s[2].1
    );
    Ok(s)
}

async fn model_limits() -> Result<(), Box<dyn std::error::Error>> {
    let limiter = Limiter::with_clock(model_policy()?, TokioClock::starting_at(T0));
    // Index the models decided for, so that every one can be listed (step 10).
    limiter.track_subjects(1_000);
    let patience = Duration::from_secs(60);

    println!("4. one call: wait for capacity, hold a slot, settle the actual tokens");
    let gpt4 = Subject::new().model("gpt-4");
    let mut permit = limiter
        .acquire(&gpt4, Cost::tokens(8_000), patience)
        .await?
        .into_result()
        .map_err(|d| d.to_string())?;
    let s = model_stats(&limiter, "gpt-4").await?;
    assert_eq!(s, [(1, 500), (8_000, 40_000), (1, 10)]);
    // ... call the model; the response reports 7,500 tokens ...
    permit.commit(Cost::tokens(7_500)).await?;
    let s = model_stats(&limiter, "gpt-4").await?;
    assert_eq!(s, [(1, 500), (7_500, 40_000), (0, 10)]);

    println!("5. the TPM limit makes a caller wait exactly as long as needed");
    // 32,500 tokens are left this minute: three 10,000-token calls fit, the fourth waits.
    for _ in 0..3 {
        let p = limiter
            .acquire(&gpt4, Cost::tokens(10_000), patience)
            .await?;
        assert!(p.decision().is_allowed());
        // Dropping a permit releases its slot and keeps the estimate spent.
    }
    let before = Instant::now();
    let p = limiter
        .acquire(&gpt4, Cost::tokens(10_000), patience)
        .await?;
    println!(
        "    the fourth 10,000-token call waited {:?}",
        before.elapsed()
    );
    assert!(p.decision().is_allowed());
    // It lacked 7,500 tokens; 40,000 per minute refill that in 11.25 s.
    assert_eq!(before.elapsed(), Duration::from_millis(11_250));
    drop(p);

    println!("6. claude-3 allows 5 parallel calls: 8 tasks of 3 s each");
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let limiter = limiter.clone();
            let (in_flight, peak) = (Arc::clone(&in_flight), Arc::clone(&peak));
            tokio::spawn(async move {
                let claude = Subject::new().model("claude-3");
                let mut permit = limiter
                    .acquire(&claude, Cost::tokens(1_000), patience)
                    .await
                    .map_err(|e| e.to_string())?
                    .into_result()
                    .map_err(|denied| denied.to_string())?;
                let began = start.elapsed();
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3)).await; // the model call
                in_flight.fetch_sub(1, Ordering::SeqCst);
                permit
                    .commit(Cost::tokens(800))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<Duration, String>(began)
            })
        })
        .collect();
    let mut began = Vec::new();
    for t in tasks {
        began.push(t.await??.as_secs());
    }
    println!(
        "    calls began at (s): {began:?}; at most {} in flight",
        peak.load(Ordering::SeqCst)
    );
    assert_eq!(began, [0, 0, 0, 0, 0, 3, 3, 3]);
    assert_eq!(peak.load(Ordering::SeqCst), 5);
    // Without waiting, a sixth call is refused: a parallel limit has no window, and its
    // retry_after is only the latest moment a slot frees (the soonest lease expiry); a slot
    // usually frees sooner, when a call ends, which `acquire` waits for.
    let claude = Subject::new().model("claude-3");
    let held: Vec<_> = hold_slots(&limiter, &claude, 5).await?;
    let sixth = limiter.reserve(&claude, Cost::tokens(1_000)).await?;
    println!("    a sixth call now: {}", sixth.decision());
    assert!(!sixth.decision().to_string().contains(" per "));
    drop(held);

    println!("7. run a future under a permit (the slot is held until it completes)");
    let turbo = Subject::new().model("gpt-3.5-turbo");
    let out = limiter
        .run(&turbo, Cost::tokens(300), patience, async {
            "a haiku about Python"
        })
        .await?
        .map_err(|d| d.to_string())?;
    println!("    got {out:?}");

    println!("8. an unlisted model gets the defaults: 10 requests per minute");
    let llama = Subject::new().model("llama-3");
    let mut admitted = 0;
    while limiter.check(&llama, Cost::tokens(100)).await?.is_allowed() {
        admitted += 1;
    }
    assert_eq!(admitted, 10);

    println!("9. statistics per model, with three gpt-4 calls in flight");
    let held = [
        limiter.acquire(&gpt4, Cost::tokens(500), patience).await?,
        limiter.acquire(&gpt4, Cost::tokens(500), patience).await?,
        limiter.acquire(&gpt4, Cost::tokens(500), patience).await?,
    ];
    let gpt4_stats = model_stats(&limiter, "gpt-4").await?;
    model_stats(&limiter, "gpt-3.5-turbo").await?;
    let claude_stats = model_stats(&limiter, "claude-3").await?;
    model_stats(&limiter, "llama-3").await?;
    assert_eq!(gpt4_stats[2], (3, 10));
    assert_eq!(claude_stats[2], (0, 5), "every claude-3 slot was released");
    drop(held);
    assert_eq!(model_stats(&limiter, "gpt-4").await?[2], (0, 10));

    println!("10. get_stats() for every model, without naming them: the models with limits in use");
    let page = limiter.subjects("model", None, 100).await?;
    for s in &page.subjects {
        let line: Vec<String> = s
            .usage
            .iter()
            .map(|u| format!("{} {}/{}", u.kind, u.used, u.capacity))
            .collect();
        println!("    {:<14} {}", s.values[0].1, line.join(", "));
    }
    let listed: Vec<&str> = page
        .subjects
        .iter()
        .map(|s| s.values[0].1.as_str())
        .collect();
    assert!(
        listed.contains(&"gpt-4") && listed.contains(&"llama-3"),
        "{listed:?}"
    );
    Ok(())
}
