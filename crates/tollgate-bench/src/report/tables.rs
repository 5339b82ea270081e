//! The report's Markdown tables, written from the figures so that the page and the data agree.

use std::fmt::Write as _;

use super::data::{bounds, median, Machine, Results, Span};

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A figure with two decimals and its range, if recorded: `0.84 (0.82–0.89)`.
fn span(s: &Span) -> String {
    match (s.low, s.high) {
        (Some(lo), Some(hi)) => format!("{:.2} ({lo:.2}–{hi:.2})", s.median),
        _ => format!("{:.2}", s.median),
    }
}

/// A percentage and its range, if recorded: `88 % (77–90)`.
fn percent(s: &Span) -> String {
    match (s.low, s.high) {
        (Some(lo), Some(hi)) => format!("{:.0} % ({lo:.0}–{hi:.0})", s.median),
        _ => format!("{:.0} %", s.median),
    }
}

/// Milliseconds, each run: `1.18, 1.23, 1.21 ms`.
fn runs_ms(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
    format!("{} ms", parts.join(", "))
}

/// `10k` as `10,000`, `1M` as `1,000,000`.
fn keys(k: &str) -> &str {
    match k {
        "10k" => "10,000",
        "1M" => "1,000,000",
        other => other,
    }
}

fn machine_line(m: Option<&Machine>, date: &str, code: &str) -> String {
    match m {
        Some(m) => format!(
            "Machine: {}, {}. Measured {date}, code at commit `{code}`.\n\n",
            m.name, m.description
        ),
        None => format!("Measured {date}, code at commit `{code}`.\n\n"),
    }
}

/// One table row from cells.
fn row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

/// Every generated block, by the name that marks it in the documents.
pub(crate) fn blocks(r: &Results) -> Vec<(&'static str, String)> {
    vec![
        ("headline", headline(r)),
        ("governor", governor(r)),
        ("scaling", scaling(r)),
        ("full", full(r)),
        ("instructions", instructions(r)),
        ("memory", memory(r)),
        ("redis", redis(r)),
        ("redis-open-loop", redis_open_loop(r)),
        ("redis-cluster", redis_cluster(r)),
        ("redis-rlf", redis_rlf(r)),
        ("redis-goals", redis_goals(r)),
        ("service-bare", service_bare(r)),
        ("service-current", service_current(r)),
        ("service-latency", service_latency(r)),
        ("service-goals", service_goals(r)),
    ]
}

fn case<'a>(
    r: &'a Results,
    limits: u32,
    k: &str,
    mode: &str,
) -> Option<&'a super::data::GovernorCase> {
    r.governor
        .cases
        .iter()
        .find(|c| c.limits == limits && c.keys == k && c.mode == mode)
}

fn pair(r: &Results, limits: u32, k: &str) -> (f64, f64) {
    let m = |mode| case(r, limits, k, mode).map_or(f64::NAN, |c| c.paired.median);
    (m("admitted"), m("denied"))
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "not met"
    }
}

fn headline(r: &Results) -> String {
    let mut out = String::from("| comparison | measured | goal | |\n| --- | --- | --- | --- |\n");
    let (a, d) = pair(r, 1, "10k");
    row(
        &mut out,
        &[
            "one limit, 10,000 keys: tollgate's time ÷ governor's (admitted / denied)".into(),
            format!("{a:.2} / {d:.2}"),
            "at most 1.0".into(),
            met(a <= 1.0 && d <= 1.0).into(),
        ],
    );
    let (a, d) = pair(r, 3, "10k");
    row(
        &mut out,
        &[
            "three limits, 10,000 keys: time ÷ governor's one limit".into(),
            format!("{a:.2} / {d:.2}"),
            "at most 2.0".into(),
            met(a <= 2.0 && d <= 2.0).into(),
        ],
    );
    let s = &r.governor.scaling;
    let (ta, td, ga, gd) = match s.modes.as_slice() {
        [x, y] => (
            x.tollgate_paired.median,
            y.tollgate_paired.median,
            x.governor_paired.median,
            y.governor_paired.median,
        ),
        _ => (f64::NAN, f64::NAN, f64::NAN, f64::NAN),
    };
    row(
        &mut out,
        &[
            "two threads ÷ one thread, 1,000,000 keys, throughput".into(),
            format!("{ta:.2} / {td:.2} (governor {ga:.2} / {gd:.2})"),
            format!("at least {:.1}", s.goal),
            met(ta >= s.goal && td >= s.goal).into(),
        ],
    );
    if let Some(c) = r.redis.cases.iter().find(|c| c.id == "limits1-t1") {
        let p16 = c.of_p16.map_or(f64::NAN, |s| s.median);
        let p1 = c.of_p1.map_or(f64::NAN, |s| s.median);
        let verdict = match (p16 >= 90.0, p1 >= 90.0) {
            (true, _) => "met",
            (false, true) => "met against `-P 1` only",
            _ => "not met",
        };
        row(
            &mut out,
            &[
                "Redis, one limit: decisions/s ÷ the `EVALSHA` ceiling (`-P 16` / `-P 1`)".into(),
                format!("{p16:.0} % / {p1:.0} %"),
                "at least 90 %".into(),
                verdict.into(),
            ],
        );
    }
    let bare = r
        .service
        .bare
        .first()
        .map_or(f64::NAN, |b| median(&to_f64(&b.rates)));
    if let Some(check) = r.service.bare.get(1) {
        let b = bounds(&to_f64(&check.rates));
        row(
            &mut out,
            &[
                "the service: `POST /v1/check` ÷ a route with no limiter, requests/s".into(),
                format!(
                    "{:.2}–{:.2} ({}–{} decisions/s)",
                    b.low / bare,
                    b.high / bare,
                    thousands(b.low as u64),
                    thousands(b.high as u64)
                ),
                format!("at least {} decisions/s", thousands(r.service.goals.rate)),
                met(b.low >= r.service.goals.rate as f64).into(),
            ],
        );
    }
    row(
        &mut out,
        &[
            "memory per bucket".into(),
            format!("{:.1} bytes", r.memory.bytes_per_bucket),
            format!("at most {:.0} bytes", r.memory.goal),
            met(r.memory.bytes_per_bucket <= r.memory.goal).into(),
        ],
    );
    out
}

fn to_f64(v: &[u64]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn governor(r: &Results) -> String {
    let g = &r.governor;
    let mut out = machine_line(r.machines.get(&g.machine), &g.date, &g.code);
    let _ = writeln!(
        out,
        "tollgate's `admit_prepared_now` time ÷ governor's `check_key` time (lower is better): \
         median over {} processes of the paired benchmark and over {} criterion runs, with \
         their range; the times are criterion's medians per check.\n",
        g.paired_processes, g.criterion_runs
    );
    out.push_str(
        "| limits | keys | mode | paired | criterion | tollgate ns | governor ns | goal |\n\
         | --: | --: | --- | --: | --: | --: | --: | --: |\n",
    );
    for c in &g.cases {
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("—".to_string(), f);
        row(
            &mut out,
            &[
                c.limits.to_string(),
                keys(&c.keys).to_string(),
                c.mode.clone(),
                span(&c.paired),
                c.criterion.as_ref().map_or("—".into(), span),
                opt(c.tollgate_ns, &|x| format!("{x:.1}")),
                opt(c.governor_ns, &|x| format!("{x:.1}")),
                opt(c.goal, &|x| format!("≤ {x:.1}")),
            ],
        );
    }
    out
}

fn scaling(r: &Results) -> String {
    let s = &r.governor.scaling;
    let mut out = format!(
        "Two threads' throughput ÷ one thread's, one limit at 1,000,000 keys (higher is better; \
         goal: at least {:.1}); paired over {} processes.\n\n",
        s.goal, s.paired_processes
    );
    out.push_str(
        "| mode | tollgate, paired | governor, paired | tollgate, criterion | governor, criterion |\n\
         | --- | --: | --: | --: | --: |\n",
    );
    for m in &s.modes {
        row(
            &mut out,
            &[
                m.mode.clone(),
                span(&m.tollgate_paired),
                span(&m.governor_paired),
                span(&m.tollgate_criterion),
                span(&m.governor_criterion),
            ],
        );
    }
    out
}

fn full(r: &Results) -> String {
    let mut out = String::from(
        "| keys | `admit_prepared_now` | `check_prepared_now` | `check_now` (by subject) |\n\
         | --: | --: | --: | --: |\n",
    );
    for f in &r.governor.full {
        let admit = |mode| {
            case(r, 1, &f.keys, mode)
                .and_then(|c| c.criterion)
                .map_or(f64::NAN, |s| s.median)
        };
        row(
            &mut out,
            &[
                keys(&f.keys).to_string(),
                format!("{:.2} / {:.2}", admit("admitted"), admit("denied")),
                format!(
                    "{:.2} / {:.2}",
                    f.check_prepared_now[0], f.check_prepared_now[1]
                ),
                format!("{:.2} / {:.2}", f.check_now[0], f.check_now[1]),
            ],
        );
    }
    out
}

fn instructions(r: &Results) -> String {
    let i = &r.governor.instructions;
    let mut out = format!(
        "Instructions per decision of `admit_prepared_now` (callgrind, the buckets' fill taken \
         out; code at commit `{}`):\n\n| limits | admitted | denied |\n| --- | --: | --: |\n",
        i.code
    );
    row(
        &mut out,
        &[
            "one".into(),
            i.one_limit[0].to_string(),
            i.one_limit[1].to_string(),
        ],
    );
    row(
        &mut out,
        &[
            "three, one key".into(),
            i.three_limits_one_key[0].to_string(),
            i.three_limits_one_key[1].to_string(),
        ],
    );
    out
}

fn memory(r: &Results) -> String {
    let m = &r.memory;
    let mut out = match r.machines.get(&m.machine) {
        Some(mm) => format!("Machine: {}, {}. ", mm.name, mm.description),
        None => String::new(),
    };
    let _ = write!(
        out,
        "Code at commit `{}`.\n\n| | measured | goal |\n| --- | --: | --: |\n",
        m.code
    );
    row(
        &mut out,
        &[
            "resident bytes per GCRA bucket, over 1,000,000 buckets".into(),
            format!("{:.1}", m.bytes_per_bucket),
            format!("at most {:.0}", m.goal),
        ],
    );
    row(
        &mut out,
        &[
            "a prepared subject of one limit".into(),
            format!("{} bytes", m.prepared_subject_bytes),
            "—".into(),
        ],
    );
    out
}

fn redis(r: &Results) -> String {
    let x = &r.redis;
    let mut out = machine_line(r.machines.get(&x.machine), &x.date, &x.code);
    let _ = writeln!(out, "Software: {}.\n", x.software);
    let _ = writeln!(
        out,
        "{} concurrent callers, closed loop; medians over {} interleaved repetitions, each ratio \
         taken against the ceiling of the same repetition, with their range.\n",
        x.callers, x.repetitions
    );
    out.push_str(
        "| case | decisions/s | ÷ ceiling `-P 1` | ÷ ceiling `-P 16` | p50 / p99 / p99.9 | Redis CPU per decision | per limit |\n\
         | --- | --: | --: | --: | --: | --: | --: |\n",
    );
    for c in &x.cases {
        row(
            &mut out,
            &[
                c.label.clone(),
                thousands(c.rate),
                c.of_p1.as_ref().map_or("—".into(), percent),
                c.of_p16.as_ref().map_or("—".into(), percent),
                c.latency_ms.map_or("—".into(), |l| {
                    format!("{:.2} / {:.2} / {:.2} ms", l[0], l[1], l[2])
                }),
                format!("{:.2} µs", c.cpu_us),
                format!("{:.2} µs", c.cpu_per_limit_us),
            ],
        );
    }
    out
}

fn redis_open_loop(r: &Results) -> String {
    let mut out = String::from(
        "| offered rate | load tool | p50 | p99, each run | p99.9 |\n| --: | --- | --: | --- | --: |\n",
    );
    for o in &r.redis.open_loop {
        row(
            &mut out,
            &[
                format!("{}/s", thousands(o.rate)),
                o.label.clone(),
                format!("{:.2} ms", o.p50_ms),
                runs_ms(&o.p99_ms),
                format!("{:.2} ms", o.p999_ms),
            ],
        );
    }
    out
}

fn redis_cluster(r: &Results) -> String {
    let c = &r.redis.cluster;
    let mut out = machine_line(r.machines.get(&c.machine), &c.date, &c.code);
    let rates = to_f64(&c.rates);
    let b = bounds(&rates);
    out.push_str(
        "| six-node cluster, 1 limit, 50 callers | decisions/s | p99 | Redis CPU per decision (all nodes) | `EVALSHA` per call |\n\
         | --- | --: | --: | --: | --: |\n",
    );
    row(
        &mut out,
        &[
            "tollgate".into(),
            format!(
                "{} ({}–{})",
                thousands(median(&rates) as u64),
                thousands(b.low as u64),
                thousands(b.high as u64)
            ),
            format!("{:.2}–{:.2} ms", c.p99_ms.low, c.p99_ms.high),
            format!("{:.1}–{:.1} µs", c.cpu_us.low, c.cpu_us.high),
            format!("{:.1}–{:.1} µs", c.evalsha_us.low, c.evalsha_us.high),
        ],
    );
    out
}

fn redis_goals(r: &Results) -> String {
    let x = &r.redis;
    let get = |id: &str| x.cases.iter().find(|c| c.id == id);
    let p = |id: &str, p16: bool| {
        get(id)
            .and_then(|c| if p16 { c.of_p16 } else { c.of_p1 })
            .map_or(f64::NAN, |s| s.median)
    };
    let cpu = |id: &str| get(id).map_or(f64::NAN, |c| c.cpu_per_limit_us);
    let against = |p16_ok: bool, p1_ok: bool| match (p16_ok, p1_ok) {
        (true, true) => "met",
        (false, true) => "met against `-P 1`, not against `-P 16`",
        (true, false) => "met against `-P 16`, not against `-P 1`",
        (false, false) => "not met",
    };
    let mut out = String::from("| goal | measured | |\n| --- | --- | --- |\n");
    let (a16, a1) = (p("limits1-t1", true), p("limits1-t1", false));
    row(
        &mut out,
        &[
            "one limit: at least 90 % of the ceiling".into(),
            format!("{a16:.0} % of `-P 16`, {a1:.0} % of `-P 1`"),
            against(a16 >= 90.0, a1 >= 90.0).into(),
        ],
    );
    let (t16, t1, lb) = (
        p("limits3-t1", true),
        p("limits3-t1", false),
        p("min3-p16", true),
    );
    row(
        &mut out,
        &[
            "three limits: at least 60 % of the ceiling".into(),
            format!(
                "{t16:.0} % of `-P 16`, {t1:.0} % of `-P 1`; the smallest script that keeps the \
                 rules reaches {lb:.0} % of `-P 16`"
            ),
            against(t16 >= 60.0, t1 >= 60.0).into(),
        ],
    );
    let plain: Vec<f64> = x
        .open_loop
        .iter()
        .filter(|o| o.label == "1 worker")
        .flat_map(|o| o.p99_ms.iter().copied())
        .collect();
    let rt: Vec<f64> = x
        .open_loop
        .iter()
        .filter(|o| o.label.contains("real-time"))
        .flat_map(|o| o.p99_ms.iter().copied())
        .collect();
    let under = |v: &[f64]| v.iter().filter(|&&p| p < 1.0).count();
    row(
        &mut out,
        &[
            "p99 under 1 ms at half of the maximum rate".into(),
            format!(
                "{} of {} runs with one worker, {} of {} with real-time priority (table above)",
                under(&plain),
                plain.len(),
                under(&rt),
                rt.len()
            ),
            if under(&plain) == plain.len() {
                "met"
            } else if !rt.is_empty() && under(&rt) == rt.len() {
                "met with real-time priority only"
            } else {
                "not met"
            }
            .into(),
        ],
    );
    let (c1, c3, m1, m16) = (
        cpu("limits1-t1"),
        cpu("limits3-t1"),
        cpu("ceiling-p1"),
        cpu("ceiling-p16"),
    );
    row(
        &mut out,
        &[
            "less Redis CPU per limit than the minimal script".into(),
            format!(
                "{c1:.2} µs (1 limit), {c3:.2} µs (3 limits) against {m1:.2} µs (`-P 1`) and \
                 {m16:.2} µs (`-P 16`)"
            ),
            against(c1.max(c3) < m16, c1.max(c3) < m1).into(),
        ],
    );
    let rlf = &x.rlf.cases;
    row(
        &mut out,
        &[
            "at least rate-limiter-flexible's decisions/s on the same Redis".into(),
            rlf.iter()
                .map(|c| {
                    format!(
                        "{:.2}× with {} (median of {} rounds, lowest {:.2}×)",
                        c.ratio.median,
                        callers(c.callers),
                        x.rlf.rounds,
                        c.ratio.low.unwrap_or(c.ratio.median)
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            if rlf.is_empty() || rlf.iter().any(|c| c.ratio.median < 1.0) {
                "not met"
            } else if rlf
                .iter()
                .all(|c| c.ratio.low.unwrap_or(c.ratio.median) >= 1.0)
            {
                "met"
            } else {
                "met by the median, not in every round"
            }
            .into(),
        ],
    );
    out
}

/// `1 caller`, `50 callers`.
fn callers(n: u32) -> String {
    if n == 1 {
        "1 caller".into()
    } else {
        format!("{n} callers")
    }
}

/// A rate and its range: `61,234/s (58,001–63,410)`.
fn rate_span(s: &Span) -> String {
    match (s.low, s.high) {
        (Some(lo), Some(hi)) => format!(
            "{}/s ({}–{})",
            thousands(s.median as u64),
            thousands(lo as u64),
            thousands(hi as u64)
        ),
        _ => format!("{}/s", thousands(s.median as u64)),
    }
}

fn redis_rlf(r: &Results) -> String {
    let x = &r.redis.rlf;
    let mut out = machine_line(r.machines.get(&x.machine), &x.date, &x.code);
    let _ = writeln!(out, "Software: {}.\n", x.software);
    let _ = writeln!(
        out,
        "Closed loop, {} s per run, {} interleaved rounds; tollgate-bench with {} tokio worker{}; \
         one-minute load average {:.1}–{:.1} before the runs (the machine was running other \
         jobs). Medians over the rounds with their range; the ratio is taken within each round; \
         where a cell holds two figures, tollgate's comes first.\n",
        x.duration_s,
        x.rounds,
        x.tollgate_threads,
        if x.tollgate_threads == 1 { "" } else { "s" },
        x.load_average.low,
        x.load_average.high
    );
    out.push_str(
        "| callers | tollgate | rate-limiter-flexible | tollgate ÷ rate-limiter-flexible | Redis CPU per decision | client CPU per decision | `EVALSHA` per call | Redis reads per decision | p99 |\n\
         | --: | --: | --: | --: | --: | --: | --: | --: | --: |\n",
    );
    for c in &x.cases {
        row(
            &mut out,
            &[
                c.callers.to_string(),
                rate_span(&c.tollgate_rate),
                rate_span(&c.rlf_rate),
                match (c.ratio.low, c.ratio.high) {
                    (Some(lo), Some(hi)) => format!("{:.2}× ({lo:.2}–{hi:.2})", c.ratio.median),
                    _ => format!("{:.2}×", c.ratio.median),
                },
                format!(
                    "{:.2} / {:.2} µs",
                    c.tollgate_cpu_us.median, c.rlf_cpu_us.median
                ),
                format!(
                    "{:.2} / {:.2} µs",
                    c.tollgate_client_cpu_us.median, c.rlf_client_cpu_us.median
                ),
                format!(
                    "{:.2} / {:.2} µs",
                    c.tollgate_evalsha_us.median, c.rlf_evalsha_us.median
                ),
                format!("{:.2} / {:.2}", c.tollgate_reads.median, c.rlf_reads.median),
                format!(
                    "{:.2} / {:.2} ms",
                    c.tollgate_p99_ms.median, c.rlf_p99_ms.median
                ),
            ],
        );
    }
    out
}

fn service_bare(r: &Results) -> String {
    let s = &r.service;
    let mut out = machine_line(r.machines.get(&s.machine), &s.date, &s.code);
    out.push_str(
        "| request | requests/s, each run | ÷ the bare route | p99, each run | server CPU per request |\n\
         | --- | --: | --: | --: | --: |\n",
    );
    let bare = s
        .bare
        .first()
        .map_or(f64::NAN, |b| median(&to_f64(&b.rates)));
    for b in &s.bare {
        let rates = to_f64(&b.rates);
        let bd = bounds(&rates);
        let ratio = if b.rates.len() > 1 {
            format!("{:.2}–{:.2}", bd.low / bare, bd.high / bare)
        } else {
            format!("{:.2}", bd.low / bare)
        };
        let cpu = if b.server_cpu_us.is_empty() {
            "—".to_string()
        } else {
            let parts: Vec<String> = b.server_cpu_us.iter().map(|x| format!("{x:.1}")).collect();
            format!("{} µs", parts.join(", "))
        };
        row(
            &mut out,
            &[
                b.label.clone(),
                b.rates
                    .iter()
                    .map(|&x| thousands(x))
                    .collect::<Vec<_>>()
                    .join(", "),
                ratio,
                runs_ms(&b.p99_ms),
                cpu,
            ],
        );
    }
    out
}

fn service_current(r: &Results) -> String {
    let c = &r.service.current;
    let x = &r.service.redis;
    let mut out = format!(
        "Code at commit `{}`, the same machine and day.\n\n| load | decisions/s | p99 |\n| --- | --: | --: |\n",
        c.code
    );
    let rates = to_f64(&c.wrk_rates);
    let b = bounds(&rates);
    let p = bounds(&c.wrk_p99_ms);
    row(
        &mut out,
        &[
            "memory store, HTTP, wrk `check.lua`, 32 connections".into(),
            format!(
                "{} ({}–{})",
                thousands(median(&rates) as u64),
                thousands(b.low as u64),
                thousands(b.high as u64)
            ),
            format!("{:.2}–{:.2} ms", p.low, p.high),
        ],
    );
    row(
        &mut out,
        &[
            "memory store, gRPC, `tollgate bench`, 32 connections".into(),
            thousands(c.grpc_rate),
            format!("{:.2} ms", c.grpc_p99_ms),
        ],
    );
    row(
        &mut out,
        &[
            "Redis store (admit-all policy), HTTP, wrk `check.lua`".into(),
            thousands(x.wrk_rate),
            format!("{:.2} ms", x.wrk_p99_ms),
        ],
    );
    row(
        &mut out,
        &[
            "Redis store (admit-all policy), HTTP, `tollgate bench`".into(),
            thousands(x.closed_rate),
            format!("{:.2} ms", x.closed_p99_ms),
        ],
    );
    let cpu = bounds(&c.server_cpu_us);
    let _ = write!(
        out,
        "\nServer CPU per decision in the wrk runs: {:.1}–{:.1} µs; user-space instructions per \
         decision: {} (commit `{}`); Redis CPU per decision (two limits) in Redis mode: {:.2} µs.\n",
        cpu.low,
        cpu.high,
        thousands(c.instructions),
        c.instructions_code,
        x.cpu_us
    );
    out
}

fn service_latency(r: &Results) -> String {
    let mut out = String::from(
        "| store | offered rate | p50 | p90 | p99, each run | p99.9 |\n| --- | --: | --: | --: | --- | --: |\n",
    );
    for l in &r.service.latency {
        let range = |v: &[f64]| {
            let b = bounds(v);
            if v.len() > 1 && b.low != b.high {
                format!("{:.2}–{:.2} ms", b.low, b.high)
            } else {
                format!("{:.2} ms", b.low)
            }
        };
        row(
            &mut out,
            &[
                l.store.clone(),
                format!("{}/s", thousands(l.rate)),
                range(&l.p50_ms),
                range(&l.p90_ms),
                runs_ms(&l.p99_ms),
                range(&l.p999_ms),
            ],
        );
    }
    out
}

fn service_goals(r: &Results) -> String {
    let s = &r.service;
    let g = &s.goals;
    let mut out = String::from("| goal | measured | |\n| --- | --- | --- |\n");
    let b = bounds(&to_f64(&s.current.wrk_rates));
    row(
        &mut out,
        &[
            format!(
                "at least {} HTTP decisions/s, wrk on the same machine",
                thousands(g.rate)
            ),
            format!("{}–{}/s", thousands(b.low as u64), thousands(b.high as u64)),
            met(b.low >= g.rate as f64).into(),
        ],
    );
    let at_half: Vec<f64> = s
        .latency
        .iter()
        .filter(|l| l.store == "memory" && l.rate == g.half_rate)
        .flat_map(|l| l.p99_ms.iter().copied())
        .collect();
    let p = bounds(&at_half);
    row(
        &mut out,
        &[
            format!(
                "p99 under {:.0} ms at {}/s",
                g.p99_ms,
                thousands(g.half_rate)
            ),
            format!("{:.2}–{:.2} ms", p.low, p.high),
            met(!at_half.is_empty() && p.high < g.p99_ms).into(),
        ],
    );
    out
}
