//! The report as one self-contained HTML page: inline CSS and SVG charts, no
//! scripts and nothing fetched from anywhere. It opens with where the
//! figures came from (machine, build, method, parameters); every chart has
//! axes with ticks and units and a legend; a model that left clients
//! without a reply is drawn hatched grey and says so; and a paragraph per
//! model says what it is, where its code lives, and what its numbers show.

use std::fmt::Write as _;

use super::{
    bytes, memory_per_connection, meta_lines, micros, rps_with_range, seconds, served_label, spread_summary,
    spread_text, thousands, throughput_notes, unp_rows, unp_verdicts, UNP_DESIGNS,
};
use crate::lab::{Report, Row};
use crate::model::ModelKind;

/// The width every chart is drawn at; the page scales it down to fit.
const WIDTH: f64 = 820.0;
const LABEL_W: f64 = 80.0;
const PLOT_W: f64 = 420.0;

/// Colours of the series: the first is the bars' own.
const PALETTE: [&str; 6] = ["#4a7fb5", "#d08c2f", "#4f9d5d", "#b5494a", "#7e5fb0", "#6b6b6b"];

/// One bar: a label, a value, an optional marker (theory), and the text
/// written next to it.
struct Bar {
    label: String,
    value: f64,
    marker: Option<f64>,
    text: String,
    /// Second series (p99 next to p50), drawn thinner below the first.
    second: Option<f64>,
    /// Not every client was served: the bar is hatched grey.
    starved: bool,
}

impl Bar {
    /// A plain bar: no theory mark, no second series.
    fn new(label: &str, value: f64, text: String) -> Bar {
        Bar {
            label: label.to_string(),
            value,
            marker: None,
            text,
            second: None,
            starved: false,
        }
    }

    /// Hatched, and labelled `served 1 of 50`, when the row left clients out.
    fn served(mut self, row: &Row) -> Bar {
        if let Some(label) = served_label(row) {
            self.starved = true;
            self.text = format!("{}, {label}", self.text);
        }
        self
    }
}

/// What a chart's axis measures and how its ticks read.
struct Axis {
    title: &'static str,
    log: bool,
    tick: fn(f64) -> String,
}

impl Axis {
    fn new(title: &'static str, log: bool, tick: fn(f64) -> String) -> Self {
        Axis { title, log, tick }
    }
}

fn tick_count(v: f64) -> String {
    thousands(v.round() as u64)
}

fn tick_micros(v: f64) -> String {
    let trim = |x: f64| {
        let s = format!("{x:.1}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    match v {
        v if v >= 1e6 => format!("{} s", trim(v / 1e6)),
        v if v >= 1e3 => format!("{} ms", trim(v / 1e3)),
        v => format!("{} µs", trim(v)),
    }
}

fn tick_seconds(v: f64) -> String {
    if v == v.round() {
        format!("{v:.0} s")
    } else {
        format!("{v:.1} s")
    }
}

fn tick_bytes(v: f64) -> String {
    format!("{} B", thousands(v.round() as u64))
}

fn tick_plain(v: f64) -> String {
    if v >= 10.0 {
        thousands(v.round() as u64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A per-request figure: two decimals below 1, where they matter.
fn per_request(x: f64) -> String {
    if x < 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.1}")
    }
}

pub fn render(report: &Report) -> String {
    let rows = &report.rows;
    let mut page = String::new();
    page += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>socklab lab report</title>\n";
    page += "<style>\nbody{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}\n\
             h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}\n\
             table{border-collapse:collapse;font-size:13px;margin:1em 0;display:block;overflow-x:auto}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td{white-space:nowrap}\n\
             td:first-child,th:first-child{text-align:left}svg{width:100%;height:auto;max-width:820px;display:block}svg text{font:12px system-ui,sans-serif}\n\
             .note{color:#555}.model{margin:.8em 0}.meta{font-size:13px;color:#333;background:#f6f6f6;padding:.6em 1em}\n\
             .meta dt{font-weight:600;float:left;clear:left;width:10em}.meta dd{margin-left:10.5em}\n</style></head><body>\n";
    page += "<h1>socklab: the concurrency models side by side</h1>\n";
    page += "<dl class=\"meta\" id=\"meta\">\n";
    for (label, value) in meta_lines(&report.meta) {
        let _ = writeln!(page, "<dt>{}</dt><dd>{}</dd>", escape(label), escape(&value));
    }
    page += "</dl>\n";
    let _ = writeln!(
        page,
        "<p class=\"note\">Every model served the same protocols on loopback, started as its own process and \
         measured from outside. {} measurements. Where a scenario ran several times, figures are the median \
         and ranges the min-max.</p>",
        rows.len()
    );

    let by = |scenario: &str| -> Vec<&Row> { rows.iter().filter(|r| r.scenario == scenario).collect() };
    let ok = |r: &&&Row| r.error.is_none();
    let mut charts = 0usize;

    let delay: Vec<&Row> = by("delay");
    if !delay.is_empty() {
        page += "<h2>The seeds' experiment: clients at once, each reply delayed</h2>\n";
        page +=
            "<p>The time until the last client got its reply (bar) and what theory says (black mark): one \
                 delay per round of connections the model can serve at once.</p>\n";
        let bars = delay
            .iter()
            .filter(ok)
            .map(|r| {
                Bar {
                    marker: r.theory_s,
                    ..Bar::new(
                        &r.model,
                        r.makespan_s.unwrap_or(0.0),
                        format!(
                            "{} (theory {})",
                            r.makespan_s.map_or("-".into(), seconds),
                            r.theory_s.map_or("-".into(), seconds)
                        ),
                    )
                }
                .served(r)
            })
            .collect::<Vec<_>>();
        let axis = Axis::new("seconds until the last reply", false, tick_seconds);
        page += &chart(
            &mut charts,
            &bars,
            &axis,
            &[("measured", PALETTE[0], false), ("theory", "#000", true)],
        );
        page += "<p>Each client's lane: from its connection (left end) to its whole reply (right end). \
                 The kernel accepts every connection at once; what differs is when the model gets to it: \
                 one after another (a staircase), in rounds of the workers, or all together.</p>\n";
        page += &timeline(&mut charts, &delay);
    }

    let throughput: Vec<&Row> = by("throughput");
    if !throughput.is_empty() {
        page += "<h2>Throughput: echo, many connections at once</h2>\n<p>Requests per second, median of the runs \
                 (the range: min-max). A hatched grey bar is a model that left clients without a single reply: \
                 its figures are those of the few it served, not a speed.</p>\n";
        let bars: Vec<Bar> = throughput
            .iter()
            .filter(ok)
            .map(|r| Bar::new(&r.model, r.throughput_rps.unwrap_or(0.0), rps_with_range(r)).served(r))
            .collect();
        page += &bar_chart(
            &mut charts,
            &bars,
            Axis::new("requests per second", false, tick_count),
        );
        let notes = throughput_notes(&throughput);
        if !notes.is_empty() {
            page += "<ul class=\"note\">";
            for n in notes {
                let _ = write!(page, "<li>{}</li>", escape(&n));
            }
            page += "</ul>\n";
        }
        page += "<p>Latency of the served requests: p50 (thick) and p99 (thin), log scale.</p>\n";
        let bars: Vec<Bar> = throughput
            .iter()
            .filter(ok)
            .filter(|r| r.p50_us.is_some())
            .map(|r| {
                Bar {
                    second: r.p99_us.map(|p| p as f64),
                    ..Bar::new(
                        &r.model,
                        r.p50_us.unwrap_or(0) as f64,
                        format!(
                            "p50 {}, p99 {}",
                            r.p50_us.map_or("-".into(), micros),
                            r.p99_us.map_or("-".into(), micros)
                        ),
                    )
                }
                .served(r)
            })
            .collect();
        let axis = Axis::new("latency (log scale)", true, tick_micros);
        let mut legend = vec![("p50", PALETTE[0], false), ("p99", PALETTE[1], false)];
        if bars.iter().any(|b| b.starved) {
            legend.push(("not every client served", "hatch", false));
        }
        page += &chart(&mut charts, &bars, &axis, &legend);
        page += "<p>Server CPU time per served request (user + system, its children included).</p>\n";
        let per = |pick: fn(&Row) -> Option<f64>, unit: &'static str| -> Vec<Bar> {
            throughput
                .iter()
                .filter(ok)
                .filter_map(|r| {
                    let c = pick(r)?;
                    Some(Bar::new(&r.model, c, format!("{}{unit}", per_request(c))).served(r))
                })
                .collect()
        };
        let bars = per(|r| r.cpu_per_request_us, " µs");
        page += &bar_chart(
            &mut charts,
            &bars,
            Axis::new("µs of server CPU per request", false, tick_plain),
        );
        page += "<p>Why: what the kernel did for each request, counted from outside the server. Context \
                 switches: each time one of the server's threads stopped running (waiting, or pushed off the \
                 core). System calls: see the method above.</p>\n";
        let bars = per(|r| r.context_switches_per_request, "");
        page += &bar_chart(
            &mut charts,
            &bars,
            Axis::new("context switches per request", false, tick_plain),
        );
        let bars = per(|r| r.syscalls_per_request, "");
        page += &bar_chart(
            &mut charts,
            &bars,
            Axis::new("system calls per request", false, tick_plain),
        );
    }

    let idle: Vec<&Row> = by("idle");
    if !idle.is_empty() {
        page += "<h2>Idle connections: what holding them costs</h2>\n";
        page += "<p>Server memory (PSS: shared pages divided among the processes sharing them) per idle \
                 connection, log scale, for the models that accepted every one. A model that did not has no \
                 bar: its connections wait in the kernel's backlog and cost it nothing.</p>\n";
        let bars: Vec<Bar> = idle
            .iter()
            .filter(ok)
            .filter_map(|r| {
                let b = r.pss_per_conn_bytes?;
                Some(Bar::new(&r.model, b.max(1) as f64, bytes(b)))
            })
            .collect();
        page += &bar_chart(
            &mut charts,
            &bars,
            Axis::new("bytes per idle connection (log scale)", true, tick_bytes),
        );
        let waiting: Vec<String> = idle
            .iter()
            .filter(ok)
            .filter(|r| r.pss_per_conn_bytes.is_none())
            .map(|r| format!("{}: {}", r.model, memory_per_connection(r)))
            .collect();
        if !waiting.is_empty() {
            let _ = writeln!(page, "<p class=\"note\">{}.</p>", escape(&waiting.join("; ")));
        }
    }

    let c10k: Vec<&Row> = by("c10k");
    if !c10k.is_empty() {
        page += "<h2>C10K: one active client among many idle ones</h2>\n";
        page += "<p>One client's p50 latency while the server holds this many idle connections. select and poll \
                 hand the kernel every descriptor on every wait, and busy tries each socket in turn: their cost \
                 grows with the idle crowd. epoll, async (epoll underneath) and uring are told only about the \
                 sockets that are ready.</p>\n";
        page += &c10k_chart(&mut charts, &c10k);
        let skipped: Vec<String> = c10k
            .iter()
            .filter_map(|r| {
                Some(format!(
                    "{} at {}: {}",
                    r.model,
                    thousands(r.idle_connections?),
                    r.error.as_deref()?
                ))
            })
            .collect();
        if !skipped.is_empty() {
            let _ = writeln!(
                page,
                "<p class=\"note\">Not measured: {}.</p>",
                escape(&skipped.join("; "))
            );
        }
    }

    let unp: Vec<&Row> = unp_rows(rows);
    if !unp.is_empty() {
        page += "<h2>Stevens' table, re-run: the server designs of UNP chapter 30</h2>\n";
        page += "<p>Stevens' client: clients at once, each connecting, asking for 4000 bytes \
                 (<code>bytes</code>: a line holding N, N bytes back), reading them and closing, again and \
                 again. The bar is the server's CPU time per connection (user + system, its children \
                 included, read when it exits as the book's servers read getrusage), in the book's order; \
                 the text adds the same over the iterative server's (the book's column) and connections \
                 per second.</p>\n";
        let bars: Vec<Bar> = unp
            .iter()
            .filter(ok)
            .filter_map(|r| {
                let c = r.cpu_per_conn_us?;
                let over = r
                    .cpu_per_conn_over_iterative_us
                    .map_or(String::new(), |o| format!(", {o:+.1} µs over iterative"));
                let text = format!(
                    "{c:.1} µs{over}, {}/s",
                    thousands(r.connections_per_s.unwrap_or(0.0).round() as u64)
                );
                Some(Bar::new(&r.model, c, text))
            })
            .collect();
        page += &bar_chart(
            &mut charts,
            &bars,
            Axis::new("µs of server CPU per connection", false, tick_plain),
        );
        let designs: Vec<String> = UNP_DESIGNS
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let model = unp
                    .iter()
                    .find(|r| r.unp_row == Some(i as u64))
                    .map_or("not in this run".to_string(), |r| r.model.clone());
                format!("{i} {d} ({model})")
            })
            .collect();
        let _ = writeln!(
            page,
            "<p class=\"note\">The book's rows: {}. socklab's pool is row 7 without the mutex: its \
             workers wait in poll(2) and accept without blocking.</p>",
            escape(&designs.join("; "))
        );
        let verdicts = unp_verdicts(rows);
        if !verdicts.is_empty() {
            page += "<p><b>The book's conclusions on this kernel.</b></p>\n<ul>\n";
            for verdict in verdicts {
                let _ = writeln!(page, "<li>{}</li>", escape(&verdict));
            }
            page += "</ul>\n";
        }
        if let Some(spread) = spread_summary(rows) {
            let _ = writeln!(
                page,
                "<p><b>The thundering herd.</b> {} Rows 3 and 4 put a lock around accept because, when the \
                 book was written, every process blocked in accept(2) woke for each connection. Linux \
                 wakes one waiter of a blocking accept(2) per connection; a worker that waits in poll(2) or \
                 select(2) first, as socklab's do, is still woken with all the others, and the losers \
                 find nothing to accept. The counts show who won.</p>",
                escape(&spread)
            );
        }
    }

    let work: Vec<&Row> = by("work");
    if !work.is_empty() {
        page += "<h2>Work: every request costs CPU</h2>\n<p>Echo with CPU spent on every request (<code>--work</code>), \
                 many connections, the server free to use every core. Requests per second; the label adds the p99 \
                 latency and how many cores the server kept busy (its CPU time over the run's wall time).</p>\n";
        let bars: Vec<Bar> = work
            .iter()
            .filter(ok)
            .map(|r| {
                let label = super::work_label(r);
                let text = format!(
                    "{}, p99 {}, {} cores",
                    rps_with_range(r),
                    r.p99_us.map_or("-".into(), micros),
                    r.cores_used.map_or("-".into(), |c| format!("{c:.2}"))
                );
                Bar::new(&label, r.throughput_rps.unwrap_or(0.0), text).served(r)
            })
            .collect();
        page += &bar_chart(
            &mut charts,
            &bars,
            Axis::new("requests per second", false, tick_count),
        );
        for finding in super::work_findings(&work) {
            let _ = writeln!(page, "<p>{}</p>", escape(&finding));
        }
    }

    let ladder: Vec<&Row> = by("uring-ladder");
    if !ladder.is_empty() {
        page += "<h2>The io_uring ladder: one technique at a time</h2>\n";
        page += "<p>Echo under uring, each step adding one io_uring technique to the step above it, next to \
                 epoll at the same message size. Bars: requests/s (median of the runs); the text gives server \
                 CPU per request. A step that loses is kept: what it costs on this kernel is the finding.</p>\n";
        for size in super::ladder_sizes(&ladder) {
            let bars: Vec<Bar> = ladder
                .iter()
                .filter(|r| r.message_bytes == Some(size))
                .filter(ok)
                .filter_map(|r| {
                    let t = r.throughput_rps?;
                    let cpu = r
                        .cpu_per_request_us
                        .map_or(String::new(), |c| format!(", {} µs CPU", per_request(c)));
                    Some(
                        Bar::new(
                            &super::ladder_label(r),
                            t,
                            format!("{}/s{cpu}", thousands(t as u64)),
                        )
                        .served(r),
                    )
                })
                .collect();
            let _ = writeln!(page, "<h3>{} messages</h3>", escape(&super::bytes(size)));
            page += &bar_chart(&mut charts, &bars, Axis::new("requests/s", false, tick_count));
        }
        page += "<ul class=\"note\">\n";
        for v in super::ladder_verdicts(&ladder) {
            let _ = writeln!(page, "<li>{}</li>", escape(&v));
        }
        page += "</ul>\n";
    }

    page += "<h2>What the numbers show, model by model</h2>\n";
    let mut models: Vec<&str> = Vec::new();
    for r in rows {
        if !models.contains(&r.model.as_str()) {
            models.push(&r.model);
        }
    }
    for model in models {
        let kind = <ModelKind as clap::ValueEnum>::from_str(model, true).ok();
        let idea = kind.map_or(String::new(), |k| {
            format!(
                " {}. Code: <a href=\"{file}\"><code>{file}</code></a>.<br>",
                escape(&capitalize(k.summary())),
                file = k.source_file()
            )
        });
        let _ = writeln!(
            page,
            "<p class=\"model\"><b>{}</b>:{idea} {}</p>",
            escape(model),
            escape(&story(model, rows))
        );
    }

    page += "<h2>All the numbers</h2>\n";
    page += &markdown_tables_as_html(rows);
    page += "</body></html>\n";
    page
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    }
}

/// The legend of a one-series chart: the bar, and the hatch if any.
fn legend_bars(bars: &[Bar]) -> Vec<(&'static str, &'static str, bool)> {
    let mut legend = vec![("all clients served", PALETTE[0], false)];
    if bars.iter().any(|b| b.starved) {
        legend.push(("not every client served", "hatch", false));
    }
    legend
}

/// Ticks for an axis from 0 (or `lo`, log) to `max`: positions in value.
fn ticks(axis: &Axis, lo: f64, max: f64) -> Vec<f64> {
    if axis.log {
        let (a, b) = (lo.log10().floor() as i32, max.log10().ceil() as i32);
        return (a..=b).map(|e| 10f64.powi(e)).collect();
    }
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    let mut out = Vec::new();
    let mut v = 0.0;
    while v <= max * 1.0001 + step * 0.5 && out.len() < 12 {
        out.push(v);
        v += step;
    }
    out
}

/// The legend as one line of swatches at the top of a chart.
fn legend(svg: &mut String, id: usize, entries: &[(&str, &str, bool)], y: f64) {
    let mut x = LABEL_W;
    for (name, colour, is_mark) in entries {
        if *is_mark {
            let _ = write!(
                svg,
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"3\"/>",
                x + 6.0,
                x + 6.0,
                y - 11.0,
                y + 3.0
            );
        } else if *colour == "hatch" {
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"url(#hatch{id})\" stroke=\"#888\"/>",
                y - 10.0
            );
        } else {
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{colour}\"/>",
                y - 10.0
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{y}\">{}</text>",
            x + 17.0,
            escape(name)
        );
        x += 30.0 + 7.0 * name.chars().count() as f64;
    }
}

fn svg_open(id: usize, height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\">\n\
         <defs><pattern id=\"hatch{id}\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">\
         <rect width=\"6\" height=\"6\" fill=\"#ddd\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#888\" stroke-width=\"2\"/></pattern></defs>\n"
    )
}

/// The x axis under a chart: a line, ticks with labels, and its title.
fn x_axis(svg: &mut String, axis: &Axis, ticks: &[f64], scale: &dyn Fn(f64) -> f64, top: f64, y: f64) {
    let _ = writeln!(
        svg,
        "<line class=\"axis\" x1=\"{LABEL_W}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#444\"/>",
        LABEL_W + PLOT_W
    );
    for &t in ticks {
        let x = LABEL_W + scale(t);
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{y}\" stroke=\"#eee\"/>\
             <line class=\"tick\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y}\" y2=\"{}\" stroke=\"#444\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            y + 5.0,
            y + 18.0,
            escape(&(axis.tick)(t))
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
        LABEL_W + PLOT_W / 2.0,
        y + 34.0,
        escape(axis.title)
    );
}

/// A horizontal bar chart as inline SVG, with its axis and legend.
/// A chart of `bars` with the legend their own marks call for.
fn bar_chart(charts: &mut usize, bars: &[Bar], axis: Axis) -> String {
    chart(charts, bars, &axis, &legend_bars(bars))
}

fn chart(charts: &mut usize, bars: &[Bar], axis: &Axis, entries: &[(&str, &str, bool)]) -> String {
    if bars.is_empty() {
        return "<p class=\"note\">No model has numbers for this.</p>\n".into();
    }
    *charts += 1;
    let id = *charts;
    let row_h = 26.0;
    let top = 24.0;
    let max = bars
        .iter()
        .flat_map(|b| [Some(b.value), b.marker, b.second])
        .flatten()
        .fold(f64::MIN_POSITIVE, f64::max);
    let min_positive = bars
        .iter()
        .flat_map(|b| [Some(b.value), b.second])
        .flatten()
        .filter(|v| *v > 0.0)
        .fold(max, f64::min);
    let ticks = ticks(axis, min_positive, max);
    let (lo, hi) = if axis.log {
        (ticks[0], ticks[ticks.len() - 1].max(ticks[0] * 10.0))
    } else {
        (0.0, ticks.last().copied().unwrap_or(max).max(max))
    };
    let scale = |v: f64| -> f64 {
        if v <= 0.0 {
            return 0.0;
        }
        let x = if axis.log {
            (v.log10() - lo.log10()) / (hi.log10() - lo.log10()).max(1e-9)
        } else {
            v / hi
        };
        x.clamp(0.0, 1.0) * PLOT_W
    };
    let bottom = top + row_h * bars.len() as f64 + 4.0;
    let height = bottom + 42.0;
    let mut svg = svg_open(id, height);
    legend(&mut svg, id, entries, 14.0);
    x_axis(&mut svg, axis, &ticks, &scale, top, bottom);
    for (i, b) in bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        let w = scale(b.value);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            LABEL_W - 8.0,
            y + 15.0,
            escape(&b.label)
        );
        let thick = if b.second.is_some() { 12.0 } else { 18.0 };
        let fill = if b.starved {
            format!("url(#hatch{id})")
        } else {
            PALETTE[0].to_string()
        };
        let _ = writeln!(
            svg,
            "<rect x=\"{LABEL_W}\" y=\"{}\" width=\"{w:.1}\" height=\"{thick}\" fill=\"{fill}\"{}/>",
            y + 2.0,
            if b.starved { " stroke=\"#888\"" } else { "" }
        );
        let mut text_x = LABEL_W + w;
        if let Some(v) = b.second {
            let w2 = scale(v);
            let _ = writeln!(
                svg,
                "<rect x=\"{LABEL_W}\" y=\"{}\" width=\"{w2:.1}\" height=\"5\" fill=\"{}\"/>",
                y + 15.0,
                if b.starved { "#888" } else { PALETTE[1] }
            );
            text_x = text_x.max(LABEL_W + w2);
        }
        if let Some(m) = b.marker {
            let x = LABEL_W + scale(m);
            let _ = writeln!(
                svg,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#000\" stroke-width=\"3\"/>",
                y,
                y + 22.0
            );
            text_x = text_x.max(x);
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\">{}</text>",
            text_x + 6.0,
            y + 15.0,
            escape(&b.text)
        );
    }
    svg += "</svg>\n";
    svg
}

/// The delay experiment as lanes: a lane per client from connect to its
/// whole reply, grouped by model, on one time axis.
fn timeline(charts: &mut usize, rows: &[&Row]) -> String {
    let rows: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|r| r.error.is_none() && r.lanes.as_ref().is_some_and(|l| !l.is_empty()))
        .collect();
    if rows.is_empty() {
        return "<p class=\"note\">No lanes were recorded.</p>\n".into();
    }
    *charts += 1;
    let id = *charts;
    let (lane_h, gap, top) = (7.0, 8.0, 24.0);
    let end = rows
        .iter()
        .flat_map(|r| r.lanes.iter().flatten())
        .filter_map(|l| l.last_byte_s.or(l.connected_s))
        .fold(0.1, f64::max);
    let axis = Axis::new("seconds since the clients started", false, tick_seconds);
    let ticks = ticks(&axis, 0.0, end);
    let hi = ticks.last().copied().unwrap_or(end).max(end);
    let scale = |v: f64| (v / hi).clamp(0.0, 1.0) * PLOT_W;
    let lanes: f64 = rows
        .iter()
        .map(|r| r.lanes.as_ref().map_or(0, Vec::len) as f64)
        .sum();
    let bottom = top + lanes * lane_h + gap * rows.len() as f64;
    let mut svg = svg_open(id, bottom + 42.0);
    legend(
        &mut svg,
        id,
        &[
            ("waiting for the reply", "#c9d7e8", false),
            ("reply in", PALETTE[1], true),
            ("no reply", "#b5494a", false),
        ],
        14.0,
    );
    x_axis(&mut svg, &axis, &ticks, &scale, top, bottom);
    let mut y = top;
    for r in rows {
        let lanes = r.lanes.as_deref().unwrap_or_default();
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LABEL_W - 8.0,
            y + lanes.len() as f64 * lane_h / 2.0 + 4.0,
            escape(&r.model)
        );
        for lane in lanes {
            let from = scale(lane.connected_s.unwrap_or(0.0));
            let (to, colour) = match lane.last_byte_s {
                Some(t) => (scale(t), "#c9d7e8"),
                None => (scale(end), "#b5494a"),
            };
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{}\" fill=\"{colour}\"/>",
                LABEL_W + from,
                (to - from).max(1.0),
                lane_h - 2.0
            );
            if let Some(t) = lane.first_byte_s.or(lane.last_byte_s) {
                let x = LABEL_W + scale(t);
                let _ = writeln!(
                    svg,
                    "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y:.1}\" y2=\"{:.1}\" stroke=\"{}\" stroke-width=\"3\"/>",
                    y + lane_h - 2.0,
                    PALETTE[1]
                );
            }
            y += lane_h;
        }
        y += gap;
    }
    svg += "</svg>\n";
    svg
}

/// The C10K curve: a line per model, idle connections across, latency up
/// (log scale).
fn c10k_chart(charts: &mut usize, rows: &[&Row]) -> String {
    let points: Vec<(&str, f64, f64)> = rows
        .iter()
        .filter(|r| r.error.is_none())
        .filter_map(|r| Some((r.model.as_str(), r.idle_connections? as f64, r.p50_us? as f64)))
        .collect();
    if points.is_empty() {
        return "<p class=\"note\">No model has numbers for this.</p>\n".into();
    }
    *charts += 1;
    let id = *charts;
    let mut models: Vec<&str> = Vec::new();
    for (m, _, _) in &points {
        if !models.contains(m) {
            models.push(m);
        }
    }
    let (top, plot_h) = (30.0, 260.0);
    let x_axis_def = Axis::new("idle connections held", false, tick_count);
    let y_axis_def = Axis::new("active client p50 (log scale)", true, tick_micros);
    let x_max = points.iter().map(|p| p.1).fold(1.0, f64::max);
    let y_min = points.iter().map(|p| p.2).fold(f64::MAX, f64::min).max(1.0);
    let y_max = points.iter().map(|p| p.2).fold(1.0, f64::max);
    let xt = ticks(&x_axis_def, 0.0, x_max);
    let x_hi = xt.last().copied().unwrap_or(x_max).max(x_max);
    let yt = ticks(&y_axis_def, y_min, y_max);
    let (y_lo, y_hi) = (yt[0], yt[yt.len() - 1].max(yt[0] * 10.0));
    let sx = |v: f64| (v / x_hi).clamp(0.0, 1.0) * PLOT_W;
    let sy = |v: f64| {
        top + plot_h
            - ((v.max(y_lo).log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10()).max(1e-9)) * plot_h
    };
    let bottom = top + plot_h;
    let mut svg = svg_open(id, bottom + 42.0);
    let entries: Vec<(&str, &str, bool)> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, PALETTE[i % PALETTE.len()], false))
        .collect();
    legend(&mut svg, id, &entries, 14.0);
    // The y axis: a line, decade ticks, its title turned up.
    let _ = writeln!(
        svg,
        "<line class=\"axis\" x1=\"{LABEL_W}\" x2=\"{LABEL_W}\" y1=\"{top}\" y2=\"{bottom}\" stroke=\"#444\"/>"
    );
    for &t in &yt {
        let y = sy(t);
        let _ = writeln!(
            svg,
            "<line x1=\"{LABEL_W}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <line class=\"tick\" x1=\"{}\" x2=\"{LABEL_W}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#444\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LABEL_W + PLOT_W,
            LABEL_W - 5.0,
            LABEL_W - 8.0,
            y + 4.0,
            escape(&tick_micros(t))
        );
    }
    let _ = writeln!(
        svg,
        "<text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
        top + plot_h / 2.0,
        escape(y_axis_def.title)
    );
    x_axis(&mut svg, &x_axis_def, &xt, &sx, top, bottom);
    // Each line's name at its end, nudged apart where lines end together.
    let mut labels: Vec<(f64, f64, &str, &str)> = Vec::new();
    for (i, m) in models.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let mine: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.0 == *m)
            .map(|p| (LABEL_W + sx(p.1), sy(p.2)))
            .collect();
        let path: Vec<String> = mine.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{}/>",
            path.join(" "),
            // Every other line dashed: lines that run together stay apart.
            if i % 2 == 1 {
                " stroke-dasharray=\"7 4\""
            } else {
                ""
            }
        );
        for (x, y) in &mine {
            let _ = writeln!(
                svg,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{colour}\"/>"
            );
        }
        if let Some((x, y)) = mine.last() {
            labels.push((*x, *y, m, colour));
        }
    }
    labels.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut last_y = f64::MIN;
    for (x, y, m, colour) in labels {
        let y = (y + 4.0).max(last_y + 13.0);
        last_y = y;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{y:.1}\" fill=\"{colour}\">{}</text>",
            x + 8.0,
            escape(m)
        );
    }
    svg += "</svg>\n";
    svg
}

/// A paragraph about one model, from its numbers only.
fn story(model: &str, rows: &[Row]) -> String {
    let find = |s: &str| rows.iter().find(|r| r.model == model && r.scenario == s);
    let mut parts = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.model == model && r.scenario != "c10k" && r.scenario != "uring-ladder")
    {
        if let Some(e) = &r.error {
            parts.push(format!("the {} scenario could not run ({e})", r.scenario));
        }
    }
    if let Some(r) = find("delay").filter(|r| r.error.is_none()) {
        if let (Some(m), Some(t)) = (r.makespan_s, r.theory_s) {
            let verdict = if (m - t).abs() <= 0.1 * t {
                "as theory says"
            } else if m > t {
                "slower than theory"
            } else {
                "faster than theory"
            };
            parts.push(format!(
                "its delayed clients had their last reply after {} ({verdict}: {})",
                seconds(m),
                seconds(t)
            ));
        }
    }
    if let Some(r) = find("throughput").filter(|r| r.error.is_none()) {
        let mut s = match served_label(r) {
            Some(label) => format!(
                "under echo load it {label} clients, so its {} is the speed of a few clients alone",
                rps_with_range(r)
            ),
            None => format!("under echo load it answered {}", rps_with_range(r)),
        };
        if let Some(c) = r.cpu_per_request_us {
            s += &format!(" at {c:.1} µs of server CPU each");
        }
        if let (Some(cs), Some(sc)) = (r.context_switches_per_request, r.syscalls_per_request) {
            s += &format!(
                " ({} context switches and {} system calls per request)",
                per_request(cs),
                per_request(sc)
            );
        }
        if let Some(p) = r.p99_us {
            s += &format!(", p99 {}", micros(p));
        }
        parts.push(s);
    }
    if let Some(r) = find("idle").filter(|r| r.error.is_none()) {
        let n = thousands(r.idle_connections.unwrap_or(0));
        let mut s = match r.pss_per_conn_bytes {
            Some(b) => format!("holding {n} idle connections cost it {} each (PSS)", bytes(b)),
            None => format!(
                "of {n} idle connections it accepted {} ({})",
                thousands(r.accepted.unwrap_or(0)),
                memory_per_connection(r)
            ),
        };
        s += &match r.p50_us {
            Some(p) => format!(
                ", and one active client meanwhile was answered in {} (p50)",
                micros(p)
            ),
            None => ", and one active client meanwhile got no reply at all: the idle connections held every \
                   place the model has"
                .to_string(),
        };
        parts.push(s);
    }
    let c10k: Vec<String> = rows
        .iter()
        .filter(|r| r.model == model && r.scenario == "c10k" && r.error.is_none())
        .filter_map(|r| {
            Some(format!(
                "{} at {}",
                micros(r.p50_us?),
                thousands(r.idle_connections?)
            ))
        })
        .collect();
    if !c10k.is_empty() {
        parts.push(format!(
            "its active client's p50 among idle connections: {}",
            c10k.join(", ")
        ));
    }
    if let Some(r) = find("unp").filter(|r| r.error.is_none()) {
        if let Some(c) = r.cpu_per_conn_us {
            let mut s = format!(
                "in Stevens' experiment (UNP row {}) it used {c:.1} µs of CPU per connection",
                r.unp_row.map_or("-".into(), |n| n.to_string())
            );
            if let Some(o) = r.cpu_per_conn_over_iterative_us {
                s += &format!(" ({o:+.1} µs over iterative)");
            }
            if let Some(cps) = r.connections_per_s {
                s += &format!(" and served {}/s", thousands(cps.round() as u64));
            }
            if let Some(a) = &r.accepts_per_worker {
                s += &format!(", its workers accepting {}", spread_text(a));
            }
            parts.push(s);
        }
    }
    if parts.is_empty() {
        return "No measurements.".into();
    }
    let mut text = parts.join("; ");
    text.push('.');
    capitalize(&text)
}

/// The Markdown tables, turned into HTML tables.
fn markdown_tables_as_html(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut in_table = false;
    for line in super::markdown::table(rows).lines() {
        if let Some(title) = line.strip_prefix("## ") {
            let _ = writeln!(out, "<h3>{}</h3>", escape(title));
        } else if line.starts_with("|---") {
            continue;
        } else if let Some(inner) = line.strip_prefix('|') {
            let cells: Vec<&str> = inner.trim_end_matches('|').split('|').map(str::trim).collect();
            let tag = if in_table { "td" } else { "th" };
            if !in_table {
                out += "<table>\n";
                in_table = true;
            }
            out += "<tr>";
            for c in cells {
                let _ = write!(out, "<{tag}>{}</{tag}>", escape(c));
            }
            out += "</tr>\n";
        } else {
            if in_table {
                out += "</table>\n";
                in_table = false;
            }
            let text = line.trim_start_matches("- ").trim();
            if !text.is_empty() {
                let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(text));
            }
        }
    }
    if in_table {
        out += "</table>\n";
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::Lane;

    fn report() -> Report {
        let rows = vec![
            Row {
                model: "iterative".into(),
                scenario: "delay".into(),
                makespan_s: Some(5.01),
                theory_s: Some(5.0),
                lanes: Some(vec![
                    Lane {
                        connected_s: Some(0.0),
                        first_byte_s: Some(1.0),
                        last_byte_s: Some(1.0),
                    },
                    Lane {
                        connected_s: Some(0.0),
                        first_byte_s: None,
                        last_byte_s: None,
                    },
                ]),
                ..Row::default()
            },
            Row {
                model: "uring".into(),
                scenario: "delay".into(),
                error: Some("io_uring is not available: <EPERM>".into()),
                ..Row::default()
            },
            Row {
                model: "iterative".into(),
                scenario: "throughput".into(),
                throughput_rps: Some(70_586.0),
                served: Some(1),
                clients: Some(50),
                p50_us: Some(13),
                p99_us: Some(40),
                ..Row::default()
            },
            Row {
                model: "epoll".into(),
                scenario: "idle".into(),
                pss_per_conn_bytes: Some(244),
                idle_connections: Some(1000),
                accepted: Some(1000),
                p50_us: Some(40),
                ..Row::default()
            },
            Row {
                model: "prefork".into(),
                scenario: "unp".into(),
                unp_row: Some(2),
                cpu_per_conn_us: Some(41.5),
                cpu_per_conn_over_iterative_us: Some(8.0),
                connections_per_s: Some(9_000.0),
                accepts_per_worker: Some(vec![10, 12, 11]),
                ..Row::default()
            },
            Row {
                model: "poll".into(),
                scenario: "c10k".into(),
                idle_connections: Some(1000),
                p50_us: Some(200),
                ..Row::default()
            },
        ];
        Report {
            rows,
            ..Report::default()
        }
    }

    #[test]
    fn self_contained_with_charts_and_stories() {
        let page = render(&report());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http") && !page.contains("<script"));
        assert!(page.contains("<svg"));
        assert!(page.contains("5.01 s (theory 5.00 s)"));
        assert!(page.contains("&lt;EPERM&gt;"), "errors are escaped");
        assert!(
            page.contains("Its delayed clients had their last reply after 5.01 s (as theory says: 5.00 s)")
        );
        assert!(page.contains("Holding 1,000 idle connections cost it 244 B each"));
        assert!(page.contains("70,586/s, served 1 of 50"), "starved bars say so");
        assert!(page.contains("url(#hatch"), "and are hatched");
        assert!(page.contains("href=\"src/model/epoll.rs\""));
        assert!(page.contains("class=\"tick\""));
        assert!(page.contains("<polyline"), "the c10k curve");
        assert!(
            page.contains("41.5 µs, +8.0 µs over iterative, 9,000/s"),
            "the unp chart"
        );
        assert!(
            page.contains("Accepts per worker: prefork 10 12 11"),
            "the spread"
        );
        assert!(page.contains("2 prefork, each child calling accept (prefork)"));
    }

    #[test]
    fn linear_ticks_are_round_and_cover_the_maximum() {
        let axis = Axis::new("", false, tick_count);
        assert_eq!(
            ticks(&axis, 0.0, 92_000.0),
            [0.0, 20_000.0, 40_000.0, 60_000.0, 80_000.0, 100_000.0]
        );
        let log = Axis { log: true, ..axis };
        assert_eq!(ticks(&log, 13.0, 4_690.0), [10.0, 100.0, 1000.0, 10_000.0]);
    }
}
