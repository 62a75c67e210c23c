//! SVG charts of a run: per-step curves (reward, accuracy, format, response length, reflection
//! rate, KL, entropy) and the held-out evaluation before and after RL, written beside
//! `report.json` so a person sees at a glance what training did.
//!
//! The SVG is written by hand: a chart here is axes, a few polylines and bars, and text that any
//! viewer lays out with its own fonts, so no font files, system libraries or plotting crate are
//! needed. Each series is one `<path class="series" data-series="NAME">` whose `d` has one
//! command (`M` or `L`) per finite point; bars are `<rect class="bar" data-series="NAME">`, one per
//! category. Output is deterministic: the same records give the same bytes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Chart size and the plot area's margins, in SVG user units.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 48.0;
/// Colours of successive series (colour-blind-safe Okabe–Ito palette).
const COLOURS: [&str; 6] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
];

/// What one learning step measured, as the charts plot it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepPoint {
    /// The step (1-based), the x axis.
    pub step: usize,
    /// Mean total reward of the step's rollouts.
    pub reward: f64,
    /// Mean accuracy reward.
    pub accuracy: f64,
    /// Mean format reward.
    pub format: f64,
    /// Mean completion length in tokens.
    pub response_length: f64,
    /// Share of completions with a reflection phrase.
    pub reflection_rate: f64,
    /// Mean KL to the reference policy.
    pub kl: f64,
    /// Mean per-token entropy of the policy.
    pub entropy: f64,
}

/// One evaluation's scores for the before/after chart (shares in [0, 1]).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalBars {
    /// What was evaluated (`before RL`, `after RL`).
    pub label: String,
    /// pass@1.
    pub accuracy: f64,
    /// Majority vote over the samples.
    pub cons_at_k: f64,
    /// Share of well-formatted completions.
    pub format_rate: f64,
}

/// One line of a line chart: its legend name and its (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend name, also the path's `data-series`.
    pub name: String,
    /// Points in x order; non-finite y values break the line.
    pub points: Vec<(f64, f64)>,
}

/// A chart file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ChartError {
    /// The file.
    pub path: PathBuf,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

/// Writes the run's charts into `dir` and returns their paths: `reward.svg` (reward, accuracy,
/// format), `response_length.svg`, `reflection_rate.svg`, `kl.svg`, `entropy.svg` by step, and
/// `eval.svg` (before/after bars) when `evals` has any.
pub fn write_run_charts(
    dir: &Path,
    steps: &[StepPoint],
    evals: &[EvalBars],
) -> Result<Vec<PathBuf>, ChartError> {
    let series = |name: &str, value: fn(&StepPoint) -> f64| Series {
        name: name.to_string(),
        points: steps.iter().map(|p| (p.step as f64, value(p))).collect(),
    };
    let mut charts = vec![
        (
            "reward.svg",
            line_chart(
                "Rewards by step",
                "mean reward",
                &[
                    series("reward", |p| p.reward),
                    series("accuracy", |p| p.accuracy),
                    series("format", |p| p.format),
                ],
            ),
        ),
        (
            "response_length.svg",
            line_chart(
                "Response length by step",
                "tokens",
                &[series("response length", |p| p.response_length)],
            ),
        ),
        (
            "reflection_rate.svg",
            line_chart(
                "Reflection rate by step",
                "share of completions",
                &[series("reflection rate", |p| p.reflection_rate)],
            ),
        ),
        (
            "kl.svg",
            line_chart(
                "KL to the reference by step",
                "KL (k3)",
                &[series("KL", |p| p.kl)],
            ),
        ),
        (
            "entropy.svg",
            line_chart(
                "Policy entropy by step",
                "nats per token",
                &[series("entropy", |p| p.entropy)],
            ),
        ),
    ];
    if !evals.is_empty() {
        charts.push(("eval.svg", eval_chart(evals)));
    }
    let mut written = Vec::with_capacity(charts.len());
    for (name, svg) in charts {
        let path = dir.join(name);
        std::fs::write(&path, svg).map_err(|source| ChartError {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// A line chart of `series` against the step, with axes, ticks and a legend.
pub fn line_chart(title: &str, y_label: &str, series: &[Series]) -> String {
    let finite = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    // Steps run edge to edge; values get a margin.
    let (x0, x1) = match finite()
        .map(|p| p.0)
        .fold(None, |r: Option<(f64, f64)>, x| {
            Some(r.map_or((x, x), |(lo, hi)| (lo.min(x), hi.max(x))))
        }) {
        Some((lo, hi)) if hi > lo => (lo, hi),
        _ => padded_range(finite().map(|p| p.0), false),
    };
    let (y0, y1) = padded_range(finite().map(|p| p.1), true);
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;

    let mut svg = open_svg(title);
    axes(&mut svg, y_label, "step");
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let py = sy(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            py + 4.0,
            tick(y)
        );
    }
    for x in x_ticks(x0, x1) {
        let px = sx(x);
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
            TOP + ph + 16.0,
            tick(x)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        let mut pen_down = false;
        for &(x, y) in &s.points {
            if !(x.is_finite() && y.is_finite()) {
                pen_down = false;
                continue;
            }
            let _ = write!(
                d,
                "{}{:.2},{:.2} ",
                if pen_down { 'L' } else { 'M' },
                sx(x),
                sy(y)
            );
            pen_down = true;
        }
        let _ = writeln!(
            svg,
            r#"<path class="series" data-series="{}" d="{}" fill="none" stroke="{colour}" stroke-width="1.8"/>"#,
            escape(&s.name),
            d.trim_end()
        );
        legend(&mut svg, i, &s.name, colour);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Grouped bars of accuracy, cons@k and format rate, one group per metric, one bar per eval.
pub fn eval_chart(evals: &[EvalBars]) -> String {
    type Metric = (&'static str, fn(&EvalBars) -> f64);
    let metrics: [Metric; 3] = [
        ("accuracy (pass@1)", |e| e.accuracy),
        ("cons@k", |e| e.cons_at_k),
        ("format rate", |e| e.format_rate),
    ];
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let sy = |y: f64| TOP + ph - y.clamp(0.0, 1.0) * ph;
    let mut svg = open_svg("Held-out evaluation before and after RL");
    axes(&mut svg, "share", "");
    for i in 0..=4 {
        let y = i as f64 / 4.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            sy(y),
            LEFT + pw,
            sy(y),
            LEFT - 6.0,
            sy(y) + 4.0,
            tick(y)
        );
    }
    let group = pw / metrics.len() as f64;
    let bar = group * 0.8 / evals.len().max(1) as f64;
    for (m, (name, _)) in metrics.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"#,
            LEFT + group * (m as f64 + 0.5),
            TOP + ph + 16.0,
            name
        );
    }
    for (e, eval) in evals.iter().enumerate() {
        let colour = COLOURS[e % COLOURS.len()];
        for (m, (_, value)) in metrics.iter().enumerate() {
            let v = value(eval);
            let v = if v.is_finite() { v } else { 0.0 };
            let x = LEFT + group * m as f64 + group * 0.1 + bar * e as f64;
            let _ = writeln!(
                svg,
                r#"<rect class="bar" data-series="{}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{:.1}%</title></rect>"#,
                escape(&eval.label),
                sy(v),
                bar * 0.95,
                TOP + ph - sy(v),
                100.0 * v
            );
        }
        legend(&mut svg, e, &eval.label, colour);
    }
    svg.push_str("</svg>\n");
    svg
}

fn open_svg(title: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">
<title>{t}</title>
<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>
<text x="{:.1}" y="24" text-anchor="middle" font-size="15">{t}</text>
"#,
        WIDTH / 2.0,
        t = escape(title)
    )
}

/// The plot area's frame and the axis labels.
fn axes(svg: &mut String, y_label: &str, x_label: &str) {
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>
<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle" font-size="12">{}</text>
<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"##,
        TOP + ph / 2.0,
        escape(y_label),
        LEFT + pw / 2.0,
        HEIGHT - 10.0,
        escape(x_label)
    );
}

fn legend(svg: &mut String, i: usize, name: &str, colour: &str) {
    let (x, y) = (WIDTH - RIGHT + 12.0, TOP + 10.0 + 18.0 * i as f64);
    let _ = writeln!(
        svg,
        r#"<rect x="{x:.1}" y="{:.1}" width="14" height="4" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
        y - 4.0,
        x + 20.0,
        y + 1.0,
        escape(name)
    );
}

/// The range of `values`, padded by 5% (and to a unit width when flat or empty); `from_zero`
/// includes 0 when all values are non-negative and close to it, as shares and rewards are.
fn padded_range(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero && lo >= 0.0 && lo <= hi * 0.5 {
        lo = 0.0;
    }
    if hi - lo < 1e-12 {
        lo -= 0.5;
        hi += 0.5;
    }
    let pad = (hi - lo) * 0.05;
    (if lo == 0.0 { 0.0 } else { lo - pad }, hi + pad)
}

/// About six whole-number x ticks across [x0, x1].
fn x_ticks(x0: f64, x1: f64) -> Vec<f64> {
    let span = (x1 - x0).max(1.0);
    let raw = span / 6.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw)
        .max(1.0);
    let first = (x0 / step).ceil() * step;
    (0..)
        .map(|i| first + step * i as f64)
        .take_while(|x| *x <= x1)
        .collect()
}

/// A tick label: few digits, no trailing zeros.
fn tick(v: f64) -> String {
    let s = if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Text safe inside SVG elements and attributes.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(n: usize) -> Vec<StepPoint> {
        (1..=n)
            .map(|s| {
                let t = s as f64 / n as f64;
                StepPoint {
                    step: s,
                    reward: 0.5 + t,
                    accuracy: 0.3 + 0.6 * t,
                    format: 0.8 + 0.2 * t,
                    response_length: 20.0 - 3.0 * t,
                    reflection_rate: 0.1 * t,
                    kl: 0.001 * t,
                    entropy: 1.5 - t,
                }
            })
            .collect()
    }

    /// The `data-series` names of the paths and their point counts, read by an XML parser.
    fn paths(svg: &str) -> Vec<(String, usize)> {
        let doc = roxmltree::Document::parse(svg).expect("the chart is well-formed XML");
        doc.descendants()
            .filter(|n| n.has_tag_name("path") && n.attribute("class") == Some("series"))
            .map(|n| {
                let d = n.attribute("d").unwrap();
                let points = d.matches(['M', 'L']).count();
                (n.attribute("data-series").unwrap().to_string(), points)
            })
            .collect()
    }

    #[test]
    fn every_chart_is_written_and_has_one_path_per_series_with_every_point() {
        let dir = tempfile::tempdir().unwrap();
        let evals = [
            EvalBars {
                label: "before RL".into(),
                accuracy: 0.5,
                cons_at_k: 0.6,
                format_rate: 0.8,
            },
            EvalBars {
                label: "after RL".into(),
                accuracy: 1.0,
                cons_at_k: 1.0,
                format_rate: 1.0,
            },
        ];
        let written = write_run_charts(dir.path(), &steps(37), &evals).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "reward.svg",
                "response_length.svg",
                "reflection_rate.svg",
                "kl.svg",
                "entropy.svg",
                "eval.svg"
            ]
        );
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(
            paths(&read("reward.svg")),
            [
                ("reward".to_string(), 37),
                ("accuracy".to_string(), 37),
                ("format".to_string(), 37)
            ]
        );
        for (file, series) in [
            ("response_length.svg", "response length"),
            ("reflection_rate.svg", "reflection rate"),
            ("kl.svg", "KL"),
            ("entropy.svg", "entropy"),
        ] {
            assert_eq!(paths(&read(file)), [(series.to_string(), 37)], "{file}");
        }
        let eval = read("eval.svg");
        let doc = roxmltree::Document::parse(&eval).unwrap();
        let bars: Vec<&str> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("bar"))
            .map(|n| n.attribute("data-series").unwrap())
            .collect();
        assert_eq!(
            bars,
            [
                "before RL",
                "before RL",
                "before RL",
                "after RL",
                "after RL",
                "after RL"
            ]
        );
        // Same records, same bytes.
        assert_eq!(line_chart("t", "y", &[]), line_chart("t", "y", &[]));
        assert_eq!(read("kl.svg"), {
            write_run_charts(dir.path(), &steps(37), &[]).unwrap();
            read("kl.svg")
        });
    }

    #[test]
    fn points_lie_inside_the_plot_and_odd_values_do_not_break_the_xml() {
        let svg = line_chart(
            "a <title> & \"quotes\"",
            "y",
            &[
                Series {
                    name: "flat".into(),
                    points: vec![(1.0, 2.0), (2.0, 2.0)],
                },
                Series {
                    name: "gap".into(),
                    points: vec![(1.0, 1.0), (2.0, f64::NAN), (3.0, 3.0)],
                },
                Series {
                    name: "empty".into(),
                    points: vec![],
                },
            ],
        );
        assert_eq!(
            paths(&svg),
            [
                ("flat".to_string(), 2),
                ("gap".to_string(), 2),
                ("empty".to_string(), 0)
            ]
        );
        let doc = roxmltree::Document::parse(&svg).unwrap();
        for n in doc.descendants().filter(|n| n.has_tag_name("path")) {
            for pair in n.attribute("d").unwrap().split_whitespace() {
                let (x, y) = pair[1..].split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((LEFT..=WIDTH - RIGHT).contains(&x), "x {x}");
                assert!((TOP..=HEIGHT - BOTTOM).contains(&y), "y {y}");
            }
        }
        // The gap restarts the line with a move.
        assert!(svg.contains("data-series=\"gap\" d=\"M"));
        assert_eq!(svg.matches("data-series=\"gap\"").count(), 1);
    }
}
