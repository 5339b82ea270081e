//! The CLI's clients of a running service: `check`, `peek`, `usage`, `reset`.
//!
//! Exit codes: 0 allowed (or done), 1 denied, 2 the request failed, 3 a reset that matched
//! no bucket.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::args::{ClientOpts, DecisionArgs, ResetArgs, UsageArgs};

/// Exit code of a denial.
pub const DENIED: u8 = 1;
/// Exit code of a failed request.
pub const FAILED: u8 = 2;
/// Exit code of a reset that matched no bucket.
pub const NOTHING_MATCHED: u8 = 3;

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

fn endpoint(opts: &ClientOpts, path: &str) -> String {
    format!("{}{path}", opts.url.trim_end_matches('/'))
}

fn with_token(rb: reqwest::RequestBuilder, opts: &ClientOpts) -> reqwest::RequestBuilder {
    match &opts.token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    }
}

/// Sends the request; returns the status and the JSON body.
async fn send(rb: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
    let resp = rb
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tollgate: {msg}");
    ExitCode::from(FAILED)
}

fn api_error(status: u16, body: &Value) -> String {
    let msg = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map_or_else(|| body.to_string(), str::to_owned);
    format!("the service answered {status}: {msg}")
}

fn ms(v: &Value, key: &str) -> String {
    let n = v.get(key).and_then(Value::as_u64).unwrap_or(0);
    tollgate::headers::go_duration(Duration::from_millis(n))
}

/// `per minute`, or `in flight` for a concurrency limit (which has no window).
fn per(limit: &Value) -> String {
    match limit.get("window").and_then(Value::as_str) {
        Some(w) => format!("per {w}"),
        None => "in flight".to_owned(),
    }
}

/// A one-screen summary of a decision's JSON.
pub fn summarize(body: &Value) -> String {
    let mut out = String::new();
    let allowed = body
        .get("allowed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if allowed {
        out.push_str("allowed");
        if let Some(shadow) = body.get("shadow") {
            let rules: Vec<&str> = shadow
                .get("rules")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|r| r.get("rule")?.as_str()).collect())
                .unwrap_or_default();
            out.push_str(&format!(
                " (shadow mode: rules {} would have denied)",
                rules.join(", ")
            ));
        }
    } else {
        let code = body.get("error_code").and_then(Value::as_str).unwrap_or("");
        let by = body.get("denied_by");
        let concurrency =
            by.and_then(|b| b.get("kind")).and_then(Value::as_str) == Some("concurrency");
        match (body.get("retry_after_ms"), by) {
            (Some(_), Some(by)) if concurrency => out.push_str(&format!(
                "denied by rule {} (concurrency limit {}) [{code}]: no slot is free; one frees \
                 when a call ends, at the latest in {} (wait with acquire)",
                by.get("rule").unwrap_or(&Value::Null),
                by.get("limit").and_then(Value::as_str).unwrap_or(""),
                ms(body, "retry_after_ms")
            )),
            (Some(_), Some(by)) => out.push_str(&format!(
                "denied by rule {} ({} limit {}) [{code}]: retry after {}",
                by.get("rule").unwrap_or(&Value::Null),
                by.get("kind").and_then(Value::as_str).unwrap_or(""),
                by.get("limit").and_then(Value::as_str).unwrap_or(""),
                ms(body, "retry_after_ms")
            )),
            _ => {
                let message = body
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("denied");
                out.push_str(&format!("{message} [{code}]"));
            }
        }
    }
    out.push('\n');
    if let Some(p) = body.get("permit") {
        out.push_str(&format!(
            "  permit {} (expires in {})\n",
            p.get("id").and_then(Value::as_str).unwrap_or("?"),
            ms(p, "expires_in_ms")
        ));
    }
    for l in body
        .get("limits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "  {:<20} {:<14} {:>10}/{:<10} remaining, {:<12} resets in {}{}\n",
            l.get("rule").and_then(Value::as_str).unwrap_or(""),
            l.get("kind").and_then(Value::as_str).unwrap_or(""),
            l.get("remaining").and_then(Value::as_u64).unwrap_or(0),
            l.get("capacity").and_then(Value::as_u64).unwrap_or(0),
            per(l),
            ms(l, "reset_after_ms"),
            if l.get("admitted").and_then(Value::as_bool) == Some(false) {
                "  <- denies"
            } else {
                ""
            }
        ));
    }
    out
}

/// `tollgate check` (spend) and `tollgate peek`.
pub async fn decision(a: DecisionArgs, spend: bool) -> ExitCode {
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut cost = serde_json::Map::new();
    for (k, v) in [
        ("requests", a.requests),
        ("tokens", a.tokens),
        ("input_tokens", a.input_tokens),
        ("output_tokens", a.output_tokens),
    ] {
        if let Some(v) = v {
            cost.insert(k.to_owned(), json!(v));
        }
    }
    let mut body = json!({ "subject": a.subject.to_map(), "cost": cost });
    if let Some(id) = &a.request_id {
        body["request_id"] = json!(id);
    }
    if !a.limits.is_empty() {
        body["limits"] = json!(a.limits);
    }
    let path = if spend { "/v1/check" } else { "/v1/peek" };
    let rb = with_token(client.post(endpoint(&a.client, path)), &a.client).json(&body);
    let (status, answer) = match send(rb).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if status != 200 && status != 429 {
        return fail(api_error(status, &answer));
    }
    if a.client.json {
        println!("{answer}");
    } else {
        print!("{}", summarize(&answer));
    }
    if answer.get("allowed").and_then(Value::as_bool) == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DENIED)
    }
}

/// `tollgate usage`.
pub async fn usage(a: UsageArgs) -> ExitCode {
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let rb = with_token(client.get(endpoint(&a.client, "/v1/usage")), &a.client)
        .query(&a.subject.to_map());
    let (status, answer) = match send(rb).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if status != 200 {
        return fail(api_error(status, &answer));
    }
    if a.client.json {
        println!("{answer}");
        return ExitCode::SUCCESS;
    }
    let limits = answer.get("limits").and_then(Value::as_array);
    match limits {
        Some(ls) if !ls.is_empty() => {
            for l in ls {
                println!(
                    "{:<20} {:<14} {:>10} used of {:<10} ({} available) {:<12} resets in {}",
                    l.get("rule").and_then(Value::as_str).unwrap_or(""),
                    l.get("kind").and_then(Value::as_str).unwrap_or(""),
                    l.get("used").and_then(Value::as_u64).unwrap_or(0),
                    l.get("capacity").and_then(Value::as_u64).unwrap_or(0),
                    l.get("available").and_then(Value::as_u64).unwrap_or(0),
                    per(l),
                    ms(l, "reset_after_ms"),
                );
            }
        }
        _ => println!("no limit applies to this subject"),
    }
    ExitCode::SUCCESS
}

/// `tollgate reset`.
pub async fn reset(a: ResetArgs) -> ExitCode {
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let subject = a.subject.to_map();
    let mut body = json!({});
    if !subject.is_empty() {
        body["subject"] = json!(subject);
    }
    if let Some(r) = &a.rule {
        body["rule"] = json!(r);
    }
    let rb = with_token(client.post(endpoint(&a.client, "/v1/reset")), &a.client).json(&body);
    let (status, answer) = match send(rb).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if status != 200 {
        return fail(api_error(status, &answer));
    }
    let reset = answer.get("reset").and_then(Value::as_bool) == Some(true);
    if a.client.json {
        println!("{answer}");
    } else if reset {
        let n = answer.get("buckets").and_then(Value::as_u64).unwrap_or(0);
        println!("reset: {n} buckets (each is full again)");
    } else {
        let why = answer
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("nothing matched: no bucket was reset");
        eprintln!("tollgate: {why}");
    }
    if reset {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOTHING_MATCHED)
    }
}

/// `tollgate limits set | clear | list`.
pub async fn limits(c: crate::args::LimitsCommand) -> ExitCode {
    use crate::args::LimitsCommand;
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (opts, rb) = match &c {
        LimitsCommand::Set(a) => {
            let body = json!({
                "subject": a.subject.to_map(),
                "rule": a.rule,
                "limits": a.limits,
            });
            let url = endpoint(&a.client, "/v1/admin/subject-limits");
            (&a.client, client.put(url).json(&body))
        }
        LimitsCommand::Clear(a) => {
            let body = json!({ "subject": a.subject.to_map(), "rule": a.rule });
            let url = endpoint(&a.client, "/v1/admin/subject-limits");
            (&a.client, client.delete(url).json(&body))
        }
        LimitsCommand::List { client: o } => {
            (o, client.get(endpoint(o, "/v1/admin/subject-limits")))
        }
    };
    let (status, answer) = match send(with_token(rb, opts)).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if status != 200 {
        return fail(api_error(status, &answer));
    }
    if opts.json {
        println!("{answer}");
        return ExitCode::SUCCESS;
    }
    let kept = answer.get("kept_in").and_then(Value::as_str).unwrap_or("?");
    match &c {
        LimitsCommand::Set(_) => println!(
            "set in rules {} (kept in {kept}{})",
            answer.get("rules").unwrap_or(&Value::Null),
            if kept == "memory" {
                ": lost when the service stops"
            } else {
                ", for every instance"
            }
        ),
        LimitsCommand::Clear(_) => println!("removed"),
        LimitsCommand::List { .. } => {
            let all = answer.get("settings").and_then(Value::as_array);
            match all {
                Some(all) if !all.is_empty() => {
                    for s in all {
                        println!(
                            "{} in {}: {} (set by {})",
                            s.get("subject").unwrap_or(&Value::Null),
                            s.get("rule")
                                .and_then(Value::as_str)
                                .unwrap_or("every rule that partitions by it"),
                            s.get("limits").unwrap_or(&Value::Null),
                            s.get("set_by").and_then(Value::as_str).unwrap_or("?"),
                        );
                    }
                }
                _ => println!("no subject limits are set (kept in {kept})"),
            }
        }
    }
    ExitCode::SUCCESS
}

/// The most pages `tollgate subjects --all` follows.
const MAX_PAGES: usize = 100;

/// `tollgate subjects`.
pub async fn subjects(a: crate::args::SubjectsArgs) -> ExitCode {
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut cursor = a.cursor.clone();
    let mut printed = 0usize;
    for _ in 0..MAX_PAGES {
        let mut query = vec![
            ("rule".to_owned(), a.rule.clone()),
            ("limit".to_owned(), a.limit.to_string()),
        ];
        if let Some(c) = &cursor {
            query.push(("cursor".to_owned(), c.clone()));
        }
        let rb = with_token(
            client.get(endpoint(&a.client, "/v1/admin/subjects")),
            &a.client,
        )
        .query(&query);
        let (status, answer) = match send(rb).await {
            Ok(x) => x,
            Err(e) => return fail(e),
        };
        if status != 200 {
            return fail(api_error(status, &answer));
        }
        if a.client.json {
            println!("{answer}");
        } else {
            for s in answer
                .get("subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let who: Vec<String> = s
                    .get("subject")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                let limits: Vec<String> = s
                    .get("limits")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|l| {
                        format!(
                            "{} {}/{} {}",
                            l.get("kind").and_then(Value::as_str).unwrap_or(""),
                            l.get("used").and_then(Value::as_u64).unwrap_or(0),
                            l.get("capacity").and_then(Value::as_u64).unwrap_or(0),
                            per(l)
                        )
                    })
                    .collect();
                println!("{}  {}", who.join(","), limits.join(", "));
                printed += 1;
            }
        }
        cursor = answer
            .get("next")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match (&cursor, a.all) {
            (Some(c), false) => {
                if !a.client.json {
                    println!("more: --cursor '{c}'");
                }
                break;
            }
            (Some(_), true) => continue,
            (None, _) => break,
        }
    }
    if printed == 0 && !a.client.json {
        println!("no subject of rule {:?} has a bucket in use", a.rule);
    }
    ExitCode::SUCCESS
}
