//! A model gateway's limiter: requests and tokens per minute for each agent on each provider.
//!
//! The scenario (seed 000): before every inference a gateway checks, and spends, one request
//! and the estimated tokens of the call against two limits kept for each (agent, provider)
//! pair: 60 requests per minute (RPM) and 100,000 tokens per minute (TPM). A premium agent gets
//! 200 RPM and 500,000 TPM. The gateway reads an agent's usage (used / capacity / available
//! for each limit), resets an agent's limits, and turns denials into its stable error codes:
//! `E4404` when the RPM limit refused the call, `E4405` when the TPM limit did.
//!
//! In tollgate this is one rule partitioned by `agent` and `provider`, with an override for
//! the premium agent. Limits live in the policy, so every caller of the same agent sees the
//! same limits; a call may still tighten its own (the seed's `rpm_limit` / `tpm_limit`), and
//! loosen them only when allowed. The gateway also watches every agent's usage (the seed's
//! `monitor_usage`), and starts from shipped presets (Anthropic, OpenAI, conservative) or from
//! the built-in policy, which keys agent calls on the agent and provider. A manual clock stands
//! in for time, so the example is exact and instant.
//!
//! Run it with `cargo run -p tollgate --example gateway_rpm_tpm`.

use std::time::Duration;

use tollgate::{
    CallLimits, Cost, Decision, DenyReason, Error, LimitKind, LimitSpec, LimitUsage, Limiter,
    ManualClock, Outcome, Policy, PolicyError, Rule, Subject, Timestamp, Window,
};

const PREMIUM: &str = "did:agent:premium";

/// The gateway's policy: 60 RPM and 100k TPM per agent and provider, more for the premium
/// agent.
fn gateway_policy() -> Result<Policy, PolicyError> {
    Policy::builder()
        .rule(
            Rule::builder("gateway")
                .per("agent")
                .per("provider")
                .limit(LimitSpec::new(LimitKind::Requests, 60, Window::MINUTE))
                .limit(LimitSpec::new(LimitKind::Tokens, 100_000, Window::MINUTE))
                .override_when(
                    [("agent", PREMIUM)],
                    [
                        LimitSpec::new(LimitKind::Requests, 200, Window::MINUTE),
                        LimitSpec::new(LimitKind::Tokens, 500_000, Window::MINUTE),
                    ],
                ),
        )
        .build()
}

/// What the gateway raises when a call may not go ahead.
#[derive(Debug)]
struct RateLimitError {
    /// `E4404` (RPM), `E4405` (TPM), `E4413` (the call can never fit), ...
    code: &'static str,
    /// The limit that refused, per minute.
    limit: u64,
    /// When the same call would be admitted; `None` if waiting will not help.
    retry_after: Option<Duration>,
    message: String,
}

/// The gateway's check: spends one request and `tokens` from the agent's buckets, or refuses
/// and spends nothing.
async fn check_rate_limit(
    limiter: &Limiter,
    agent: &str,
    provider: &str,
    tokens: u64,
) -> Result<(), RateLimitError> {
    let who = Subject::new().agent(agent).provider(provider);
    let decision = match limiter.check(&who, Cost::tokens(tokens)).await {
        Ok(d) => d,
        // Only a failing store is an error (a denial is an ordinary decision). A gateway that
        // prefers availability admits the call: fail open.
        Err(e) => {
            eprintln!("rate limiter unavailable, admitting the call: {e}");
            return Ok(());
        }
    };
    if decision.is_allowed() {
        return Ok(());
    }
    Err(to_error(&decision))
}

fn to_error(decision: &Decision) -> RateLimitError {
    let reason = decision.reason().unwrap_or(DenyReason::StoreFull);
    RateLimitError {
        code: reason.error_code(),
        limit: decision.denied_by().map_or(0, |s| s.amount),
        retry_after: decision.retry_after(),
        message: decision.to_string(),
    }
}

/// The usage of the agent's limit of `kind`.
async fn usage_of(
    limiter: &Limiter,
    agent: &str,
    provider: &str,
    kind: LimitKind,
) -> Result<LimitUsage, Error> {
    let who = Subject::new().agent(agent).provider(provider);
    let usage = limiter.usage(&who).await?;
    Ok(*usage
        .iter()
        .find(|u| u.kind == kind)
        .expect("the gateway rule has a limit of each kind"))
}

async fn print_usage(limiter: &Limiter, agent: &str, provider: &str) -> Result<(), Error> {
    for (name, kind) in [("RPM", LimitKind::Requests), ("TPM", LimitKind::Tokens)] {
        let u = usage_of(limiter, agent, provider, kind).await?;
        println!(
            "    {name}: {}/{} used, {} available, full again in {:?}",
            u.used, u.capacity, u.available, u.reset_after
        );
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
    let limiter = Limiter::with_clock(gateway_policy()?, clock.clone());
    // Keep an index of the agents decided for, to list them with their usage (step 9).
    limiter.track_subjects(10_000);

    let agent = "did:agent:test";
    let provider = "anthropic";

    println!("1. check and consume: one request of 500 estimated tokens");
    check_rate_limit(&limiter, agent, provider, 500)
        .await
        .map_err(|e| e.message)?;
    print_usage(&limiter, agent, provider).await?;
    let rpm = usage_of(&limiter, agent, provider, LimitKind::Requests).await?;
    let tpm = usage_of(&limiter, agent, provider, LimitKind::Tokens).await?;
    assert_eq!((rpm.used, rpm.capacity, rpm.available), (1, 60, 59));
    assert_eq!(
        (tpm.used, tpm.capacity, tpm.available),
        (500, 100_000, 99_500)
    );

    println!("2. a burst of 100-token calls until the RPM limit refuses one");
    let mut admitted = 1;
    let denial = loop {
        match check_rate_limit(&limiter, agent, provider, 100).await {
            Ok(()) => admitted += 1,
            Err(e) => break e,
        }
    };
    println!(
        "    {admitted} calls admitted, then {}: {}",
        denial.code, denial.message
    );
    assert_eq!(admitted, 60, "the whole minute's 60 requests may burst");
    assert_eq!(denial.code, "E4404");
    assert_eq!(denial.limit, 60);
    // The bucket refills one request per second: exactly one second to wait.
    assert_eq!(denial.retry_after, Some(Duration::from_secs(1)));
    print_usage(&limiter, agent, provider).await?;

    println!("3. one second later, one more call fits");
    clock.advance(Duration::from_secs(1));
    assert!(check_rate_limit(&limiter, agent, provider, 100)
        .await
        .is_ok());
    assert!(check_rate_limit(&limiter, agent, provider, 100)
        .await
        .is_err());

    println!("4. the TPM limit: a 99,000-token call, then one that does not fit");
    let other = "did:agent:abc123";
    assert!(check_rate_limit(&limiter, other, provider, 99_000)
        .await
        .is_ok());
    let denial = check_rate_limit(&limiter, other, provider, 2_000)
        .await
        .expect_err("only 1,000 tokens are left");
    println!("    {}: {}", denial.code, denial.message);
    assert_eq!(denial.code, "E4405");
    assert_eq!(denial.limit, 100_000);
    // 1,000 missing tokens refill in 1,000 / 100,000 of a minute: 600 ms.
    assert_eq!(denial.retry_after, Some(Duration::from_millis(600)));
    // All or nothing: the refused call spent no request either.
    let rpm = usage_of(&limiter, other, provider, LimitKind::Requests).await?;
    assert_eq!(rpm.used, 1);
    // The agent's buckets on another provider are separate.
    assert!(check_rate_limit(&limiter, other, "openai", 2_000)
        .await
        .is_ok());

    println!("5. a call that can never fit is its own outcome, not a wait");
    let who = Subject::new().agent(other).provider("openai");
    let huge = limiter.check(&who, Cost::tokens(150_000)).await?;
    println!("    {}: {huge}", to_error(&huge).code);
    assert_eq!(huge.outcome(), Outcome::TooLarge);
    assert_eq!(huge.reason(), Some(DenyReason::TooLarge));
    assert_eq!(to_error(&huge).code, "E4413");
    assert_eq!(huge.retry_after(), None);

    println!("6. the premium agent's override: 200 RPM and 500k TPM");
    let mut admitted = 0;
    let denial = loop {
        match check_rate_limit(&limiter, PREMIUM, "openai", 1_000).await {
            Ok(()) => admitted += 1,
            Err(e) => break e,
        }
    };
    println!("    {admitted} calls admitted, then {}", denial.code);
    assert_eq!(admitted, 200);
    assert_eq!(denial.code, "E4404");
    assert_eq!(denial.limit, 200);
    print_usage(&limiter, PREMIUM, "openai").await?;
    let tpm = usage_of(&limiter, PREMIUM, "openai", LimitKind::Tokens).await?;
    assert_eq!((tpm.used, tpm.capacity), (200_000, 500_000));

    println!("7. reset the first agent's limits on {provider}");
    // A reset says how many buckets it reset: none when no rule applies to the subject (the
    // rule is per agent *and* provider, so an agent alone matches nothing).
    let none = limiter.reset(&Subject::new().agent(agent)).await?;
    println!("    reset of {agent} without a provider: {none} buckets (nothing matched)");
    assert_eq!(none, 0);
    let n = limiter
        .reset(&Subject::new().agent(agent).provider(provider))
        .await?;
    println!("    reset of {agent} on {provider}: {n} buckets");
    assert_eq!(n, 2, "RPM and TPM");
    print_usage(&limiter, agent, provider).await?;
    let rpm = usage_of(&limiter, agent, provider, LimitKind::Requests).await?;
    let tpm = usage_of(&limiter, agent, provider, LimitKind::Tokens).await?;
    assert_eq!((rpm.used, rpm.available), (0, 60));
    assert_eq!((tpm.used, tpm.available), (0, 100_000));

    println!("8. one call's own limits: rpm_limit = 2, tpm_limit = 1,000 for a batch agent");
    let batch = Subject::new().agent("did:agent:batch").provider("openai");
    let tight = CallLimits::new()
        .requests_per_minute(2)
        .tokens_per_minute(1_000);
    for _ in 0..2 {
        assert!(limiter
            .check_with(&batch, Cost::tokens(400), &tight)
            .await?
            .is_allowed());
    }
    let refused = limiter.check_with(&batch, Cost::tokens(10), &tight).await?;
    println!("    the third: {refused}");
    assert_eq!(refused.denied_by().map(|s| s.amount), Some(2));
    // Never more than the policy: its own 60 RPM bucket was spent too.
    assert_eq!(
        usage_of(&limiter, "did:agent:batch", "openai", LimitKind::Requests)
            .await?
            .used,
        2
    );
    // Loosening (200 RPM for this call) is refused unless the caller is allowed to loosen.
    let loose = CallLimits::new().requests_per_minute(200);
    let e = limiter
        .check_with(&batch, Cost::ONE, &loose)
        .await
        .unwrap_err();
    println!("    asking for 200 RPM: {e}");
    assert!(limiter
        .check_with(&batch, Cost::ONE, &loose.allow_loosening(true))
        .await?
        .is_allowed());

    println!("9. monitor_usage: every agent with buckets in use, a page at a time");
    let mut cursor = None;
    let mut agents = 0;
    loop {
        let page = limiter.subjects("gateway", cursor.as_deref(), 2).await?;
        for s in &page.subjects {
            let who: Vec<String> = s.values.iter().map(|(a, v)| format!("{a}={v}")).collect();
            let line: Vec<String> = s
                .usage
                .iter()
                .map(|u| format!("{} {}/{}", u.kind, u.used, u.capacity))
                .collect();
            println!("    {}: {}", who.join(" "), line.join(", "));
            agents += 1;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    // The reset agent is full again, so it is not listed; the other agent (on two
    // providers), the premium agent and the batch agent are.
    assert_eq!(agents, 4);

    println!(
        "10. presets: the seed's Anthropic, OpenAI and conservative RPM/TPM, as shipped files"
    );
    for (file, rpm, tpm) in [
        ("anthropic.toml", 60, 100_000),
        ("openai.toml", 500, 90_000),
        ("conservative.toml", 30, 50_000),
    ] {
        let path = format!(
            "{}/../../examples/presets/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let preset = Policy::load(&path)?;
        let limits: Vec<u64> = preset.rules()[0]
            .limit_sets()
            .next()
            .map(|set| set.limits().iter().map(|l| l.limit().amount()).collect())
            .unwrap_or_default();
        println!(
            "    {file}: {limits:?} per minute (check against the provider's published limits)"
        );
        assert_eq!(limits, [rpm, tpm]);
    }

    println!("11. no policy at all: the built-in one keys agent calls on agent and provider");
    let builtin = Limiter::with_clock(tollgate::default_policy(), clock.clone());
    let d = builtin
        .check(
            &Subject::new().agent(agent).provider(provider),
            Cost::tokens(500),
        )
        .await?;
    println!(
        "    limited by rule {:?}: {} limits",
        d.statuses()[0].rule,
        d.statuses().len()
    );
    assert_eq!(d.statuses()[0].rule, "default-agent");

    println!("ok");
    Ok(())
}
