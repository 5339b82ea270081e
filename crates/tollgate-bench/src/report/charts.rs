//! The report's charts, drawn with plotters' SVG backend from the figures alone: the same
//! figures always give the same bytes, so a test can tell a stale chart.
//!
//! Two kinds: bars of a ratio (or a rate) per case, each with its range as a whisker, the
//! anchor and the goal as lines; and latency distributions on a logarithmic axis, one row per
//! case with a marker per percentile.

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::{bounds, median, Results};

type Error = String;

fn err(e: impl std::fmt::Display) -> Error {
    e.to_string()
}

const WIDTH: u32 = 860;
const ROW: u32 = 34;
/// Empty rows above a bar chart's data, where its legend sits.
const BAR_TOP: f64 = 1.5;
/// Empty rows above a latency chart's data, where its (longer) legend sits.
const DIST_TOP: f64 = 3.0;
const LABEL_AREA: u32 = 330;
const FONT: &str = "sans-serif";
const TOLLGATE: RGBColor = RGBColor(31, 119, 180);
const ANCHOR: RGBColor = RGBColor(110, 110, 110);
const GOAL: RGBColor = RGBColor(200, 40, 40);
const OTHER: RGBColor = RGBColor(150, 150, 150);

/// One bar: a case's median with its range, an optional second figure (a marker) and the
/// goal that applies to it.
struct Bar {
    label: String,
    median: f64,
    low: Option<f64>,
    high: Option<f64>,
    marker: Option<f64>,
    goal: Option<f64>,
    color: RGBColor,
}

/// A bar chart's frame: title, axis, the reference lines every row shares, the legend of the
/// marker.
struct Bars<'a> {
    title: &'a str,
    x_desc: &'a str,
    x_max: f64,
    references: &'a [(f64, &'a str)],
    marker_name: Option<&'a str>,
    goal_name: &'a str,
    bars: Vec<Bar>,
}

fn bar_chart(spec: &Bars<'_>) -> Result<String, Error> {
    let n = spec.bars.len();
    let height = 110 + ROW * (u32::try_from(n).map_err(err)? + 2);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(spec.title, (FONT, 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(LABEL_AREA)
            .build_cartesian_2d(0f64..spec.x_max, -0.5f64..(n as f64 - 0.5 + BAR_TOP))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .max_light_lines(1)
            .x_labels(8)
            .x_label_formatter(&|x| axis_value(*x))
            .x_desc(spec.x_desc)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()
            .map_err(err)?;
        let y = |i: usize| (n - 1 - i) as f64;
        let label_style =
            TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, b) in spec.bars.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(0.0, y(i)));
            root.draw(&Text::new(
                b.label.clone(),
                (px - 8, py),
                label_style.clone(),
            ))
            .map_err(err)?;
        }
        chart
            .draw_series(spec.bars.iter().enumerate().map(|(i, b)| {
                Rectangle::new(
                    [(0.0, y(i) - 0.3), (b.median.min(spec.x_max), y(i) + 0.3)],
                    b.color.mix(0.75).filled(),
                )
            }))
            .map_err(err)?;
        for (i, b) in spec.bars.iter().enumerate() {
            if let (Some(lo), Some(hi)) = (b.low, b.high) {
                let (lo, hi) = (lo.min(spec.x_max), hi.min(spec.x_max));
                let style = BLACK.stroke_width(1);
                chart
                    .draw_series([
                        PathElement::new(vec![(lo, y(i)), (hi, y(i))], style),
                        PathElement::new(vec![(lo, y(i) - 0.12), (lo, y(i) + 0.12)], style),
                        PathElement::new(vec![(hi, y(i) - 0.12), (hi, y(i) + 0.12)], style),
                    ])
                    .map_err(err)?;
            }
            // The figure inside its bar, at the start, clear of the whisker.
            let (px, py) = chart.backend_coord(&(0.0, y(i)));
            let value = (FONT, 12)
                .into_font()
                .color(&WHITE)
                .pos(Pos::new(HPos::Left, VPos::Center));
            root.draw(&Text::new(format_value(b.median), (px + 6, py), value))
                .map_err(err)?;
        }
        for (x, name) in spec.references {
            chart
                .draw_series([PathElement::new(
                    vec![(*x, -0.5), (*x, n as f64 - 0.5)],
                    ANCHOR.stroke_width(2),
                )])
                .map_err(err)?;
            let (px, py) = chart.backend_coord(&(*x, n as f64 - 0.5));
            let style = (FONT, 12)
                .into_font()
                .color(&ANCHOR)
                .pos(Pos::new(HPos::Left, VPos::Top));
            root.draw(&Text::new((*name).to_string(), (px + 4, py + 2), style))
                .map_err(err)?;
        }
        let markers: Vec<(f64, f64)> = spec
            .bars
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.marker.map(|m| (m.min(spec.x_max), y(i))))
            .collect();
        if let (Some(name), false) = (spec.marker_name, markers.is_empty()) {
            chart
                .draw_series(
                    markers
                        .into_iter()
                        .map(|p| EmptyElement::at(p) + Circle::new((0, 0), 4, BLACK.filled())),
                )
                .map_err(err)?
                .label(name)
                .legend(|(x, y)| Circle::new((x + 10, y), 4, BLACK.filled()));
        }
        let goals: Vec<(f64, f64)> = spec
            .bars
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.goal.map(|g| (g, y(i))))
            .collect();
        if !goals.is_empty() {
            chart
                .draw_series(goals.into_iter().map(|(g, yy)| {
                    PathElement::new(vec![(g, yy - 0.45), (g, yy + 0.45)], GOAL.stroke_width(3))
                }))
                .map_err(err)?
                .label(spec.goal_name)
                .legend(|(x, y)| {
                    PathElement::new(vec![(x + 10, y - 7), (x + 10, y + 7)], GOAL.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 12))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One row of a latency chart: a value per percentile, and single runs as small dots.
struct Dist {
    label: String,
    /// (series index, value in ms)
    points: Vec<(usize, f64)>,
    runs: Vec<f64>,
}

/// The percentiles a latency chart shows, with their markers.
const SERIES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

fn dist_chart(
    title: &str,
    rows: &[Dist],
    goal: (f64, &str),
    runs_name: &str,
) -> Result<String, Error> {
    let n = rows.len();
    let height = 110 + ROW * (u32::try_from(n).map_err(err)? + 3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(LABEL_AREA)
            .build_cartesian_2d(
                (0.1f64..40.0).log_scale(),
                -0.5f64..(n as f64 - 0.5 + DIST_TOP),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_labels(12)
            .x_label_formatter(&|x| axis_value(*x))
            .x_desc("latency, ms (logarithmic)")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()
            .map_err(err)?;
        let y = |i: usize| (n - 1 - i) as f64;
        let label_style =
            TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, r) in rows.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(0.1, y(i)));
            root.draw(&Text::new(
                r.label.clone(),
                (px - 8, py),
                label_style.clone(),
            ))
            .map_err(err)?;
            let xs: Vec<f64> = r.points.iter().map(|p| p.1).collect();
            let b = bounds(&xs);
            chart
                .draw_series([PathElement::new(
                    vec![(b.low, y(i)), (b.high, y(i))],
                    OTHER.stroke_width(1),
                )])
                .map_err(err)?;
        }
        let colors = [
            RGBColor(44, 160, 44),
            RGBColor(31, 119, 180),
            RGBColor(255, 127, 14),
            RGBColor(148, 103, 189),
        ];
        for (s, name) in SERIES.iter().enumerate() {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .enumerate()
                .flat_map(|(i, r)| {
                    r.points
                        .iter()
                        .filter(move |p| p.0 == s)
                        .map(move |p| (p.1, y(i)))
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            let c = colors[s];
            chart
                .draw_series(
                    pts.into_iter()
                        .map(move |p| EmptyElement::at(p) + Circle::new((0, 0), 5, c.filled())),
                )
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
        }
        let runs: Vec<(f64, f64)> = rows
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.runs.iter().map(move |v| (*v, y(i) - 0.28)))
            .collect();
        if !runs.is_empty() {
            chart
                .draw_series(runs.into_iter().map(|p| {
                    EmptyElement::at(p)
                        + Circle::new((0, 0), 3, RGBColor(255, 127, 14).stroke_width(1))
                }))
                .map_err(err)?
                .label(runs_name)
                .legend(|(x, y)| {
                    Circle::new((x + 10, y), 3, RGBColor(255, 127, 14).stroke_width(1))
                });
        }
        chart
            .draw_series([PathElement::new(
                vec![(goal.0, -0.5), (goal.0, n as f64 - 0.5)],
                GOAL.stroke_width(2),
            )])
            .map_err(err)?
            .label(goal.1)
            .legend(|(x, y)| {
                PathElement::new(vec![(x + 10, y - 7), (x + 10, y + 7)], GOAL.stroke_width(2))
            });
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 12))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// An axis label: `0.5`, `2`, `40k`.
fn axis_value(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else {
        format!("{v}")
    }
}

fn format_value(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn keys(k: &str) -> &str {
    match k {
        "1" => "1 key",
        "10k" => "10,000 keys",
        "1M" => "1,000,000 keys",
        other => other,
    }
}

/// Every chart, by its file name under `docs/bench/`.
pub(crate) fn charts(r: &Results) -> Result<Vec<(&'static str, String)>, Error> {
    Ok(vec![
        ("governor.svg", governor(r)?),
        ("scaling.svg", scaling(r)?),
        ("redis.svg", redis(r)?),
        ("redis-latency.svg", redis_latency(r)?),
        ("service.svg", service(r)?),
        ("service-latency.svg", service_latency(r)?),
    ])
}

fn governor(r: &Results) -> Result<String, Error> {
    let bars = r
        .governor
        .cases
        .iter()
        .map(|c| Bar {
            label: format!(
                "{}, {}, {}",
                match c.limits {
                    1 => "one limit".to_string(),
                    3 => "three limits".to_string(),
                    n => format!("{n} limits"),
                },
                keys(&c.keys),
                c.mode
            ),
            median: c.paired.median,
            low: c.paired.low,
            high: c.paired.high,
            marker: c.criterion.map(|s| s.median),
            goal: c.goal,
            color: TOLLGATE,
        })
        .collect();
    bar_chart(&Bars {
        title: "tollgate's time per decision ÷ governor's (lower is better)",
        x_desc: "time ÷ governor's keyed check (paired benchmark: median and range)",
        x_max: 2.2,
        references: &[(1.0, "governor")],
        marker_name: Some("criterion median"),
        goal_name: "goal (at most)",
        bars,
    })
}

fn scaling(r: &Results) -> Result<String, Error> {
    let s = &r.governor.scaling;
    let mut bars = Vec::new();
    for m in &s.modes {
        for (who, paired, crit, color) in [
            (
                "tollgate",
                &m.tollgate_paired,
                &m.tollgate_criterion,
                TOLLGATE,
            ),
            ("governor", &m.governor_paired, &m.governor_criterion, OTHER),
        ] {
            bars.push(Bar {
                label: format!("{who}, {}", m.mode),
                median: paired.median,
                low: paired.low,
                high: paired.high,
                marker: Some(crit.median),
                goal: (who == "tollgate").then_some(s.goal),
                color,
            });
        }
    }
    bar_chart(&Bars {
        title: "Two threads' throughput ÷ one thread's, 1,000,000 keys (higher is better)",
        x_desc: "throughput ratio (paired benchmark: median and range)",
        x_max: 2.4,
        references: &[(1.0, "no gain"), (2.0, "two cores")],
        marker_name: Some("criterion median"),
        goal_name: "goal (at least)",
        bars,
    })
}

fn redis(r: &Results) -> Result<String, Error> {
    let mut bars = Vec::new();
    for (id, name, p16, goal, color) in [
        (
            "limits1-t1",
            "tollgate, 1 limit",
            true,
            Some(90.0),
            TOLLGATE,
        ),
        (
            "limits1-t1",
            "tollgate, 1 limit",
            false,
            Some(90.0),
            TOLLGATE,
        ),
        (
            "limits3-t1",
            "tollgate, 3 limits",
            true,
            Some(60.0),
            TOLLGATE,
        ),
        (
            "limits3-t1",
            "tollgate, 3 limits",
            false,
            Some(60.0),
            TOLLGATE,
        ),
        ("min3-p16", "smallest 3-limit script", true, None, OTHER),
        ("min3-p1", "smallest 3-limit script", false, None, OTHER),
    ] {
        let Some(c) = r.redis.cases.iter().find(|c| c.id == id) else {
            continue;
        };
        let Some(s) = (if p16 { c.of_p16 } else { c.of_p1 }) else {
            continue;
        };
        bars.push(Bar {
            label: format!("{name} ÷ ceiling {}", if p16 { "-P 16" } else { "-P 1" }),
            median: s.median,
            low: s.low,
            high: s.high,
            marker: None,
            goal,
            color,
        });
    }
    bar_chart(&Bars {
        title: "Redis: decisions/s as a percentage of the EVALSHA ceiling (higher is better)",
        x_desc: "% of the minimal one-key script's rate, same run (median and range)",
        x_max: 220.0,
        references: &[(100.0, "ceiling")],
        marker_name: None,
        goal_name: "goal (at least)",
        bars,
    })
}

fn redis_latency(r: &Results) -> Result<String, Error> {
    let rows: Vec<Dist> = r
        .redis
        .open_loop
        .iter()
        .map(|o| Dist {
            label: format!("{}/s, {}", super::tables::thousands(o.rate), o.label),
            points: vec![(0, o.p50_ms), (2, median(&o.p99_ms)), (3, o.p999_ms)],
            runs: o.p99_ms.clone(),
        })
        .collect();
    dist_chart(
        "Redis, open loop, 1 limit, 50 callers: latency",
        &rows,
        (1.0, "goal: p99 under 1 ms"),
        "p99 of each run",
    )
}

fn service(r: &Results) -> Result<String, Error> {
    let s = &r.service;
    let bars: Vec<Bar> = s
        .bare
        .iter()
        .map(|b| {
            let v: Vec<f64> = b.rates.iter().map(|&x| x as f64).collect();
            let bd = bounds(&v);
            Bar {
                label: b.label.replace('`', ""),
                median: median(&v),
                low: (v.len() > 1).then_some(bd.low),
                high: (v.len() > 1).then_some(bd.high),
                marker: None,
                goal: (!b.label.starts_with("bare")).then_some(s.goals.rate as f64),
                color: if b.label.starts_with("bare") {
                    OTHER
                } else {
                    TOLLGATE
                },
            }
        })
        .collect();
    bar_chart(&Bars {
        title: "The service against a route that decides nothing: requests/s (higher is better)",
        x_desc: "requests per second (median and range of the runs)",
        x_max: 140_000.0,
        references: &[],
        marker_name: None,
        goal_name: "goal (at least)",
        bars,
    })
}

fn service_latency(r: &Results) -> Result<String, Error> {
    let rows: Vec<Dist> = r
        .service
        .latency
        .iter()
        .map(|l| Dist {
            label: format!("{} store, {}/s", l.store, super::tables::thousands(l.rate)),
            points: vec![
                (0, median(&l.p50_ms)),
                (1, median(&l.p90_ms)),
                (2, median(&l.p99_ms)),
                (3, median(&l.p999_ms)),
            ],
            runs: if l.p99_ms.len() > 1 {
                l.p99_ms.clone()
            } else {
                Vec::new()
            },
        })
        .collect();
    dist_chart(
        "The service, open loop, 32 connections: latency",
        &rows,
        (r.service.goals.p99_ms, "goal: p99 under 2 ms at 25,000/s"),
        "p99 of each run",
    )
}
