//! Answers that must not mislead: resets count what they reset, concurrency denials claim no
//! window.

use std::time::Duration;

use tollgate::{Cost, DenyReason, LimitKind, LimitSpec, Limiter, ManualClock, Policy, Rule};
use tollgate::{Subject, Timestamp, Window};

fn limiter() -> Limiter {
    let policy = Policy::builder()
        .rule(
            Rule::builder("per-user-model")
                .per("user")
                .per("model")
                .limit(LimitSpec::new(LimitKind::Requests, 2, Window::HOUR))
                .limit(LimitSpec::new(LimitKind::Tokens, 100, Window::HOUR)),
        )
        .rule(
            Rule::builder("slots")
                .per("tenant")
                .limit(LimitSpec::concurrency(1).lease(Duration::from_secs(60))),
        )
        .build()
        .unwrap();
    Limiter::with_clock(
        policy,
        ManualClock::new(Timestamp::from_secs(1_700_000_000)),
    )
}

#[tokio::test]
async fn resets_count_the_buckets_they_reset() {
    let l = limiter();
    let alice = Subject::new().user("alice").model("gpt-4o");
    l.check(&alice, Cost::ONE).await.unwrap();
    // No rule applies to a user without a model: nothing is reset, and the count says so.
    assert_eq!(l.reset(&Subject::new().user("alice")).await.unwrap(), 0);
    assert_eq!(l.usage(&alice).await.unwrap()[0].used, 1);
    assert_eq!(l.reset_in("slots", &alice).await.unwrap(), 0);
    assert_eq!(l.usage(&alice).await.unwrap()[0].used, 1);
    // The whole subject: the rule's two limits.
    assert_eq!(l.reset(&alice).await.unwrap(), 2);
    assert_eq!(l.usage(&alice).await.unwrap()[0].used, 0);
    assert_eq!(l.reset_in("per-user-model", &alice).await.unwrap(), 2);
    assert!(l.reset_in("nope", &alice).await.is_err());
}

#[tokio::test]
async fn concurrency_denials_name_no_window() {
    let l = limiter();
    let acme = Subject::new().tenant("acme");
    let _held = l.reserve(&acme, Cost::ONE).await.unwrap();
    let denied = l.reserve(&acme, Cost::ONE).await.unwrap();
    let d = denied.decision();
    assert_eq!(d.reason(), Some(DenyReason::Concurrency));
    // What is known: the soonest lease expiry.
    assert_eq!(d.retry_after(), Some(Duration::from_secs(60)));
    let text = d.to_string();
    assert!(!text.contains(" per "), "{text}");
    assert!(text.contains("(at most 1 in flight)"), "{text}");
    assert!(text.contains("acquire"), "{text}");
}

const TURNS: &str = r#"
unmatched = "deny"

[[rules]]
name = "per-tenant"
match = { tenant = "*", provider = "*?" }
limits = [{ kind = "requests", amount = 2, per = "minute" }]

[[rules]]
name = "per-agent"
match = { agent = "*" }
absent = ["tenant"]
limits = [{ kind = "requests", amount = 1, per = "minute" }]
"#;

fn counted(snapshotter: &metrics_util::debugging::Snapshotter, action: &str) -> u64 {
    use metrics_util::debugging::DebugValue;
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, _, _, _)| {
            k.key().name() == "tollgate_unmatched_total"
                && k.key()
                    .labels()
                    .any(|l| l.key() == "action" && l.value() == action)
        })
        .map(|(_, _, _, v)| match v {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

#[test]
fn rules_take_turns_and_unmatched_calls_are_denied_and_counted() {
    let policy = Policy::from_toml(TURNS, "turns.toml").unwrap();
    assert_eq!(policy.unmatched(), tollgate::Unmatched::Deny);
    let l = Limiter::with_clock(
        policy,
        ManualClock::new(Timestamp::from_secs(1_700_000_000)),
    );
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let check = |s: &Subject<'_>| l.check_now(s, Cost::ONE).unwrap().unwrap();
        // A tenant with or without a provider: per-tenant (absent provider is its own bucket).
        let d = check(&Subject::new().tenant("t").agent("a"));
        assert_eq!(d.statuses()[0].rule, "per-tenant");
        assert_eq!(d.statuses().len(), 1, "per-agent needs the tenant absent");
        // An agent without a tenant: per-agent.
        let d = check(&Subject::new().agent("a"));
        assert_eq!(d.statuses()[0].rule, "per-agent");
        // Nothing covers a user alone: denied as unmatched, which waiting does not change.
        let d = check(&Subject::new().user("u"));
        assert_eq!(d.outcome(), tollgate::Outcome::Unmatched);
        assert_eq!(d.reason(), Some(DenyReason::Unmatched));
        assert_eq!(d.reason().unwrap().error_code(), "E4403");
        assert_eq!(d.retry_after(), None);
        assert!(!d.is_allowed());
    });
    assert_eq!(counted(&snapshotter, "deny"), 1);
    assert_eq!(counted(&snapshotter, "allow"), 0);

    // The default lets unmatched calls through, counted all the same.
    let allow = Policy::from_toml(&TURNS.replace("\"deny\"", "\"allow\""), "t.toml").unwrap();
    let l = Limiter::with_policy(allow);
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let d = l
            .check_now(&Subject::new().user("u"), Cost::ONE)
            .unwrap()
            .unwrap();
        assert!(d.is_allowed());
    });
    assert_eq!(counted(&snapshotter, "allow"), 1);
}

#[test]
fn policy_files_name_bad_absent_and_unmatched_fields() {
    let e = Policy::from_toml(&TURNS.replace("\"deny\"", "\"maybe\""), "bad.toml").unwrap_err();
    assert_eq!(e.field, "unmatched");
    assert_eq!(e.location.unwrap().line, 2, "{}", e.message);
    let e = Policy::from_toml(
        &TURNS.replace("absent = [\"tenant\"]", "absent = [\"agent\"]"),
        "bad.toml",
    )
    .unwrap_err();
    assert_eq!(e.field, "absent[0]");
    assert!(e.message.contains("also in match"), "{}", e.message);
    assert_eq!(e.location.unwrap().line, 12);
}

mod call_limits {
    use tollgate::{CallLimits, CallLimitsError, Cost, Error, LimitKind, Limiter, Outcome};
    use tollgate::{ManualClock, Subject, Timestamp, Window};

    fn limiter() -> (Limiter, ManualClock) {
        let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
        // The built-in policy: 60 requests and 100,000 tokens per minute per caller.
        (
            Limiter::with_clock(tollgate::default_policy(), clock.clone()),
            clock,
        )
    }

    #[tokio::test]
    async fn a_call_may_tighten_its_limits_and_never_gets_more_than_the_policy() {
        let (l, _clock) = limiter();
        let who = Subject::new().agent("did:agent:a").provider("openai");
        let tight = CallLimits::new()
            .requests_per_minute(5)
            .tokens_per_minute(1_000);
        for _ in 0..5 {
            assert!(l
                .check_with(&who, Cost::tokens(10), &tight)
                .await
                .unwrap()
                .is_allowed());
        }
        let d = l.check_with(&who, Cost::tokens(10), &tight).await.unwrap();
        assert_eq!(d.outcome(), Outcome::Denied);
        assert_eq!(d.denied_by().unwrap().amount, 5);
        // Both the policy's and the call's buckets spent: the policy's shows 5 requests used.
        let rpm = l.usage(&who).await.unwrap()[0];
        assert_eq!((rpm.amount, rpm.used), (60, 5));
        // A tighter limit never admits what the policy's bucket refuses: spend the policy's
        // minute, then a call that asks for 30 per minute is refused too.
        for _ in 0..55 {
            assert!(l.check(&who, Cost::ONE).await.unwrap().is_allowed());
        }
        let thirty = CallLimits::new().requests_per_minute(30);
        let d = l.check_with(&who, Cost::ONE, &thirty).await.unwrap();
        assert!(!d.is_allowed(), "{d}");
        assert!(
            d.statuses().iter().any(|s| s.amount == 60 && !s.admitted),
            "the policy's bucket refuses: {d:?}"
        );
        // Peek spends nothing.
        let before = l.usage(&who).await.unwrap()[0].used;
        l.peek_with(&who, Cost::ONE, &thirty).await.unwrap();
        assert_eq!(l.usage(&who).await.unwrap()[0].used, before);
    }

    #[tokio::test]
    async fn loosening_needs_permission() {
        let (l, _clock) = limiter();
        let premium = Subject::new().agent("did:agent:premium").provider("openai");
        let loose = CallLimits::new().requests_per_minute(200);
        match l.check_with(&premium, Cost::ONE, &loose).await {
            Err(Error::CallLimits(CallLimitsError::Loosens { policy, asked, .. })) => {
                assert_eq!((policy, asked), (60, 200));
            }
            other => panic!("{other:?}"),
        }
        let allowed = loose.allow_loosening(true);
        let mut admitted = 0;
        while l
            .check_with(&premium, Cost::ONE, &allowed)
            .await
            .unwrap()
            .is_allowed()
        {
            admitted += 1;
        }
        assert_eq!(admitted, 200);
        // The policy's own bucket was not spent by the loosened calls.
        assert_eq!(l.usage(&premium).await.unwrap()[0].used, 0);
    }

    #[tokio::test]
    async fn limits_that_change_nothing_are_refused() {
        let (l, _clock) = limiter();
        let who = Subject::new().tenant("t").provider("p");
        let hourly = CallLimits::new().limit(LimitKind::Requests, 10, Window::HOUR);
        let e = l.check_with(&who, Cost::ONE, &hourly).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::CallLimits(CallLimitsError::NothingToChange { .. })
            ),
            "{e}"
        );
        assert!(e.to_string().contains("requests per hour"), "{e}");
        let zero = CallLimits::new().requests_per_minute(0);
        assert!(l.check_with(&who, Cost::ONE, &zero).await.is_err());
        // Nothing was spent by the refused calls.
        assert_eq!(l.usage(&who).await.unwrap()[0].used, 0);
    }

    #[tokio::test]
    async fn a_reservation_with_call_limits_settles_both_buckets() {
        let (l, _clock) = limiter();
        let who = Subject::new().user("u").provider("p");
        let tight = CallLimits::new().tokens_per_minute(1_000);
        let mut permit = l
            .reserve_with(&who, Cost::tokens(800), &tight)
            .await
            .unwrap()
            .into_result()
            .unwrap();
        let d = l.check_with(&who, Cost::tokens(300), &tight).await.unwrap();
        assert!(!d.is_allowed(), "800 of the call's 1,000 are reserved");
        permit.cancel().await.unwrap();
        assert!(l
            .check_with(&who, Cost::tokens(300), &tight)
            .await
            .unwrap()
            .is_allowed());
    }
}

mod seeing_everyone {
    use std::time::Duration;

    use tollgate::{Cost, Limiter, ManualClock, Subject, Timestamp};

    #[tokio::test]
    async fn subjects_with_live_buckets_are_listed_page_by_page() {
        let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
        let l = Limiter::with_clock(tollgate::default_policy(), clock.clone());
        // Without the index there is nothing to list.
        assert!(l
            .subjects("default-agent", None, 10)
            .await
            .unwrap()
            .subjects
            .is_empty());
        l.track_subjects(5);
        for i in 0..7 {
            let who = Subject::new()
                .agent(format!("agent-{i}"))
                .provider("openai");
            l.check(&who, Cost::tokens(100 * (i + 1))).await.unwrap();
        }
        // Bounded: five partitions are tracked, the rest are not listed.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = l
                .subjects("default-agent", cursor.as_deref(), 2)
                .await
                .unwrap();
            assert!(page.subjects.len() <= 2);
            assert_eq!(page.tracked, 5);
            for s in &page.subjects {
                let tokens = s
                    .usage
                    .iter()
                    .find(|u| u.kind == tollgate::LimitKind::Tokens);
                seen.push((s.values[0].1.clone(), tokens.unwrap().used));
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(
            seen,
            [
                ("agent-0".to_owned(), 100),
                ("agent-1".to_owned(), 200),
                ("agent-2".to_owned(), 300),
                ("agent-3".to_owned(), 400),
                ("agent-4".to_owned(), 500)
            ]
        );
        assert!(l.subjects("nope", None, 10).await.is_err());

        // A minute later every bucket is full again: nobody is listed, and the index is
        // emptied, so new partitions are tracked again.
        clock.advance(Duration::from_secs(61));
        let page = l.subjects("default-agent", None, 100).await.unwrap();
        assert!(page.subjects.is_empty(), "{page:?}");
        assert_eq!(page.tracked, 0);
        let late = Subject::new().agent("agent-9").provider("openai");
        l.check(&late, Cost::ONE).await.unwrap();
        let page = l.subjects("default-agent", None, 100).await.unwrap();
        assert_eq!(page.subjects.len(), 1);
        assert_eq!(page.subjects[0].values[0].1, "agent-9");
        assert_eq!(
            page.subjects[0].values[1],
            ("provider".to_owned(), "openai".to_owned())
        );
    }
}
