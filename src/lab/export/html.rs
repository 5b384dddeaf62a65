//! The rows as one self-contained HTML page: inline CSS and SVG charts, no
//! scripts and nothing fetched from anywhere, and a paragraph per model
//! saying what its numbers show.

use std::fmt::Write as _;

use super::{bytes, micros, seconds};
use crate::lab::Row;

/// One bar: a label, a value, an optional marker (theory), and the text
/// written next to it.
struct Bar {
    label: String,
    value: f64,
    marker: Option<f64>,
    text: String,
    /// Second series (p99 next to p50), drawn thinner below the first.
    second: Option<(f64, String)>,
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
        }
    }
}

pub fn render(rows: &[Row]) -> String {
    let mut page = String::new();
    page += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>socklab lab report</title>\n";
    page += "<style>\nbody{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}\n\
             h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}\n\
             table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\n\
             td:first-child,th:first-child{text-align:left}svg text{font:12px system-ui,sans-serif}\n\
             .note{color:#555}.model{margin:.6em 0}\n</style></head><body>\n";
    page += "<h1>socklab: the concurrency models side by side</h1>\n";
    let _ = writeln!(
        page,
        "<p class=\"note\">Every model served the same protocols on loopback, started as its own process and \
         measured from outside. {} measurements.</p>",
        rows.len()
    );

    let by = |scenario: &str| -> Vec<&Row> { rows.iter().filter(|r| r.scenario == scenario).collect() };
    let ok = |r: &&&Row| r.error.is_none();

    let delay: Vec<&Row> = by("delay");
    if !delay.is_empty() {
        page += "<h2>The seeds' experiment: clients at once, each reply delayed</h2>\n";
        page +=
            "<p>The time until the last client got its reply (bar) and what theory says (black mark): one \
                 delay per round of connections the model can serve at once.</p>\n";
        let bars = delay
            .iter()
            .filter(ok)
            .map(|r| Bar {
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
            })
            .collect::<Vec<_>>();
        page += &chart(&bars, false);
    }

    let throughput: Vec<&Row> = by("throughput");
    if !throughput.is_empty() {
        page += "<h2>Throughput: echo, many connections at once</h2>\n<p>Requests per second. Timed-out \
                 requests are clients the model never got to while it served the others.</p>\n";
        let bars: Vec<Bar> = throughput
            .iter()
            .filter(ok)
            .map(|r| {
                let rps = r.throughput_rps.unwrap_or(0.0);
                let text = match r.errors.filter(|e| *e > 0) {
                    Some(e) => format!("{rps:.0}/s, {e} requests timed out"),
                    None => format!("{rps:.0}/s"),
                };
                Bar::new(&r.model, rps, text)
            })
            .collect();
        page += &chart(&bars, false);
        page += "<p>Latency of those requests: p50 (thick) and p99 (thin), log scale.</p>\n";
        let bars: Vec<Bar> = throughput
            .iter()
            .filter(ok)
            .filter(|r| r.p50_us.is_some())
            .map(|r| Bar {
                second: r.p99_us.map(|p| (p as f64, format!("p99 {}", micros(p)))),
                ..Bar::new(
                    &r.model,
                    r.p50_us.unwrap_or(0) as f64,
                    format!("p50 {}", r.p50_us.map_or("-".into(), micros)),
                )
            })
            .collect();
        page += &chart(&bars, true);
        page += "<p>Server CPU time per request (user + system, its children included).</p>\n";
        let bars: Vec<Bar> = throughput
            .iter()
            .filter(ok)
            .filter_map(|r| {
                let c = r.cpu_per_request_us?;
                Some(Bar::new(&r.model, c, format!("{c:.1} µs")))
            })
            .collect();
        page += &chart(&bars, false);
    }

    let idle: Vec<&Row> = by("idle");
    if !idle.is_empty() {
        page += "<h2>Idle connections: what holding them costs</h2>\n";
        page += "<p>Server memory per idle connection (log scale).</p>\n";
        let bars: Vec<Bar> = idle
            .iter()
            .filter(ok)
            .filter_map(|r| {
                let b = r.rss_per_conn_bytes?;
                Some(Bar::new(&r.model, b.max(1) as f64, bytes(b)))
            })
            .collect();
        page += &chart(&bars, true);
    }

    page += "<h2>What the numbers show, model by model</h2>\n";
    let mut models: Vec<&str> = Vec::new();
    for r in rows {
        if !models.contains(&r.model.as_str()) {
            models.push(&r.model);
        }
    }
    for model in models {
        let _ = writeln!(
            page,
            "<p class=\"model\"><b>{}</b>: {}</p>",
            escape(model),
            escape(&story(model, rows))
        );
    }

    page += "<h2>All the numbers</h2>\n";
    page += &markdown_tables_as_html(rows);
    page += "</body></html>\n";
    page
}

/// A horizontal bar chart as inline SVG; `log` for values spanning decades.
fn chart(bars: &[Bar], log: bool) -> String {
    if bars.is_empty() {
        return "<p class=\"note\">No model has numbers for this.</p>\n".into();
    }
    let (label_w, plot_w, text_w, row_h) = (90.0, 560.0, 250.0, 26.0);
    let max = bars
        .iter()
        .flat_map(|b| [Some(b.value), b.marker, b.second.as_ref().map(|s| s.0)])
        .flatten()
        .fold(f64::MIN_POSITIVE, f64::max);
    let min_positive = bars
        .iter()
        .flat_map(|b| [Some(b.value), b.second.as_ref().map(|s| s.0)])
        .flatten()
        .filter(|v| *v > 0.0)
        .fold(max, f64::min);
    // Log scale: one decade below the smallest value is the axis' start.
    let floor = (min_positive.log10().floor() - 1.0).max(-1.0);
    let scale = |v: f64| -> f64 {
        if v <= 0.0 {
            return 0.0;
        }
        let x = if log {
            (v.log10() - floor) / (max.log10() - floor).max(1e-9)
        } else {
            v / max
        };
        x.clamp(0.0, 1.0) * plot_w
    };
    let height = row_h * bars.len() as f64 + 10.0;
    let width = label_w + plot_w + text_w;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">\n"
    );
    for (i, b) in bars.iter().enumerate() {
        let y = 5.0 + row_h * i as f64;
        let w = scale(b.value);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            y + 15.0,
            escape(&b.label)
        );
        let thick = if b.second.is_some() { 12.0 } else { 18.0 };
        let _ = writeln!(
            svg,
            "<rect x=\"{label_w}\" y=\"{}\" width=\"{w:.1}\" height=\"{thick}\" fill=\"#4a7fb5\"/>",
            y + 2.0
        );
        let mut text_x = label_w + w;
        if let Some((v, _)) = &b.second {
            let w2 = scale(*v);
            let _ = writeln!(
                svg,
                "<rect x=\"{label_w}\" y=\"{}\" width=\"{w2:.1}\" height=\"5\" fill=\"#d08c2f\"/>",
                y + 15.0
            );
            text_x = text_x.max(label_w + w2);
        }
        if let Some(m) = b.marker {
            let x = label_w + scale(m);
            let _ = writeln!(
                svg,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#000\" stroke-width=\"3\"/>",
                y,
                y + 22.0
            );
            text_x = text_x.max(x);
        }
        let text = match &b.second {
            Some((_, second)) => format!("{}, {second}", b.text),
            None => b.text.clone(),
        };
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\">{}</text>",
            text_x + 6.0,
            y + 15.0,
            escape(&text)
        );
    }
    svg += "</svg>\n";
    svg
}

/// A paragraph about one model, from its numbers only.
fn story(model: &str, rows: &[Row]) -> String {
    let find = |s: &str| rows.iter().find(|r| r.model == model && r.scenario == s);
    let mut parts = Vec::new();
    for r in rows.iter().filter(|r| r.model == model) {
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
        let mut s = format!(
            "under echo load it answered {:.0} requests/s",
            r.throughput_rps.unwrap_or(0.0)
        );
        if let Some(c) = r.cpu_per_request_us {
            s += &format!(" at {c:.1} µs of server CPU each");
        }
        if let Some(p) = r.p99_us {
            s += &format!(", p99 {}", micros(p));
        }
        if let Some(e) = r.errors.filter(|e| *e > 0) {
            s += &format!(", and {e} requests timed out: clients it never got to");
        }
        parts.push(s);
    }
    if let Some(r) = find("idle").filter(|r| r.error.is_none()) {
        let mut s = format!(
            "holding {} idle connections cost it {} each",
            r.idle_connections.unwrap_or(0),
            r.rss_per_conn_bytes.map_or("-".into(), bytes)
        );
        s += &match r.p50_us {
            Some(p) => format!(
                ", and one active client meanwhile was answered in {} (p50)",
                micros(p)
            ),
            None => ", and one active client meanwhile got no reply at all: the idle connections held every \
                   place the model has"
                .to_string(),
        };
        if let Some(c) = r.peak_children.filter(|c| *c > 0) {
            s += &format!(" ({c} child processes at the peak)");
        } else if let Some(t) = r.peak_threads.filter(|t| *t > 20) {
            s += &format!(" ({t} threads at the peak)");
        }
        parts.push(s);
    }
    if parts.is_empty() {
        return "no measurements.".into();
    }
    let mut text = parts.join("; ");
    text.push('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
        None => text,
    }
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
        } else if in_table {
            out += "</table>\n";
            in_table = false;
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

    fn rows() -> Vec<Row> {
        vec![
            Row {
                model: "iterative".into(),
                scenario: "delay".into(),
                makespan_s: Some(5.01),
                theory_s: Some(5.0),
                ..Row::default()
            },
            Row {
                model: "uring".into(),
                scenario: "delay".into(),
                error: Some("io_uring is not available: <EPERM>".into()),
                ..Row::default()
            },
            Row {
                model: "epoll".into(),
                scenario: "idle".into(),
                rss_per_conn_bytes: Some(244),
                idle_connections: Some(1000),
                p50_us: Some(40),
                ..Row::default()
            },
        ]
    }

    #[test]
    fn self_contained_with_charts_and_stories() {
        let page = render(&rows());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http") && !page.contains("<script"));
        assert!(page.contains("<svg"));
        assert!(page.contains("5.01 s (theory 5.00 s)"));
        assert!(page.contains("&lt;EPERM&gt;"), "errors are escaped");
        assert!(
            page.contains("Its delayed clients had their last reply after 5.01 s (as theory says: 5.00 s).")
        );
        assert!(page.contains("Holding 1000 idle connections cost it 244 B each"));
    }
}
