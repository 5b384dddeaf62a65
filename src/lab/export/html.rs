//! The report as one self-contained HTML page: inline CSS and SVG charts, no
//! scripts and nothing fetched from anywhere. It opens with where the
//! figures came from and what the run found; then a section per scenario
//! (its lesson, charts, the why, its table) and a paragraph per server.
//!
//! Drawn with maud, which escapes every value it is given: names of outside
//! servers are user input. The charts are drawn here rather than by a
//! plotting crate: the page must stay one file with no script, and each
//! chart is a few dozen SVG elements sized from its own labels, so no label
//! is ever cut.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::section::{Axis, Bar, Bars, Block, Chart, Lanes, Lines, Section, Table};
use super::Document;

/// The plot area's width; label margin and text room are added to it.
const PLOT_W: f64 = 420.0;

/// The width of one character of the charts' 12 px font, rounded up (a
/// digit or a lower-case letter of system-ui is 6.5-7 px): labels are
/// measured with it, so the margin always holds the longest.
pub const CHAR_W: f64 = 7.2;

/// Colours of the series.
const PALETTE: [&str; 6] = ["#4a7fb5", "#d08c2f", "#4f9d5d", "#b5494a", "#7e5fb0", "#6b6b6b"];
const OUTSIDE: &str = "#3a9d8f";
const ODD: &str = "#c0392b";

const CSS: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}\n\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1.05em}\n\
table{border-collapse:collapse;font-size:13px;margin:1em 0;display:block;overflow-x:auto}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td{white-space:nowrap}\n\
td:first-child,th:first-child{text-align:left}svg{width:100%;height:auto;display:block}svg text{font:12px system-ui,sans-serif}\n\
.note{color:#555;font-size:14px}.lesson{font-size:1.05em;font-weight:500}.model{margin:.8em 0}\n\
table.meta{font-size:13px;background:#f6f6f6;display:table}table.meta th{text-align:left;vertical-align:top;white-space:nowrap;font-weight:600}table.meta td{text-align:left;white-space:normal}\n\
.findings li{margin:.3em 0}.warning{color:#8a1f11;background:#fdecea;padding:.4em .8em}\n";

pub fn render(doc: &Document) -> String {
    let mut charts = 0usize;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "socklab lab report" }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "socklab: the concurrency models side by side" }
                @if !doc.findings.is_empty() || !doc.warnings.is_empty() {
                    h2 id="findings" { "What this run found" }
                    ul.findings {
                        @for f in &doc.findings { li { (f) } }
                    }
                    @for w in &doc.warnings { p.warning { "Odd figure, kept after a rerun: " (w) } }
                }
                h2 id="method" { "Where the figures came from" }
                p.note {
                    "Every server was started as its own process on loopback and measured from outside. "
                    (doc.measurements) " measurements. Where a scenario ran several times, figures are the \
                    median and ranges the min-max."
                }
                table.meta id="meta" {
                    @for (label, value) in &doc.meta { tr { th { (label) } td { (value) } } }
                }
                @for section in &doc.sections { (draw(section, &mut charts)) }
                @if !doc.servers.is_empty() {
                    h2 id="servers" { "Server by server" }
                    @for p in &doc.servers {
                        p.model {
                            b { (p.name) } @if p.outside { " (outside server)" } ": " (p.takeaway)
                            @if let Some((file, link)) = &p.source {
                                " Code: " a href=(link) { code { (file) } } "."
                            }
                            br;
                            (p.story.join(" "))
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}

/// One section: its lesson, then its blocks in order.
fn draw(section: &Section, charts: &mut usize) -> Markup {
    html! {
        h2 id=(section.name) { (section.title) }
        p.lesson { (section.lesson) }
        @for block in &section.blocks {
            @match block {
                Block::Text(text) => p { (text) },
                Block::Heading(h) => h3 { (h) },
                Block::Chart(chart) => (draw_chart(chart, charts)),
                Block::Table(t) => (table(t)),
                Block::Notes(notes) => ul.note { @for n in notes { li { (n) } } },
            }
        }
    }
}

fn table(t: &Table) -> Markup {
    html! {
        table {
            tr { @for h in &t.header { th { (h) } } }
            @for row in &t.rows { tr { @for c in row { td { (c) } } } }
        }
    }
}

fn draw_chart(chart: &Chart, charts: &mut usize) -> Markup {
    *charts += 1;
    let id = *charts;
    let (svg, caveat) = match chart {
        Chart::Bars(b) => (bars(b, id), &b.caveat),
        Chart::Lanes(l) => (lanes(l, id), &l.caveat),
        Chart::Lines(l) => (lines(l, id), &l.caveat),
    };
    html! {
        (svg)
        @if let Some(c) = caveat { p.note { (c) } }
    }
}

/// A number for an SVG attribute.
fn n(x: f64) -> String {
    format!("{x:.1}")
}

/// The width a text takes in the charts' font.
pub fn text_width(text: &str) -> f64 {
    CHAR_W * text.chars().count() as f64
}

/// The label margin that holds the longest of `labels`.
fn label_margin<'a>(labels: impl Iterator<Item = &'a str>) -> f64 {
    labels.map(text_width).fold(48.0, f64::max) + 14.0
}

/// One entry of a legend: what it shows, drawn as the mark it names.
enum Swatch {
    Bar(&'static str),
    Hatch,
    Thin(&'static str),
    Mark,
    Lane(&'static str),
    /// A line as drawn: colour, dashed, marker shape.
    Line(&'static str, bool, usize),
    /// The ⚠ written after an odd figure's text, in its colour.
    Warning,
}

/// The legend: entries left to right, wrapping at `width`. Its height.
fn legend(id: usize, entries: &[(String, Swatch)], x0: f64, width: f64) -> (Markup, f64) {
    let mut placed = Vec::new();
    let (mut x, mut y) = (x0, 14.0);
    for (name, swatch) in entries {
        let w = 26.0 + text_width(name) + 14.0;
        if x + w > width && x > x0 {
            x = x0;
            y += 18.0;
        }
        placed.push((x, y, name, swatch));
        x += w;
    }
    let markup = html! {
        @for (x, y, name, swatch) in placed {
            @match swatch {
                Swatch::Bar(colour) => rect x=(n(x)) y=(n(y - 10.0)) width="12" height="12" fill=(colour) {},
                Swatch::Hatch => rect x=(n(x)) y=(n(y - 10.0)) width="12" height="12" fill=(format!("url(#hatch{id})")) stroke="#888" {},
                Swatch::Thin(colour) => rect x=(n(x)) y=(n(y - 4.0)) width="16" height="5" fill=(colour) {},
                Swatch::Mark => line x1=(n(x + 6.0)) x2=(n(x + 6.0)) y1=(n(y - 11.0)) y2=(n(y + 3.0)) stroke="#000" stroke-width="3" {},
                Swatch::Lane(colour) => rect x=(n(x)) y=(n(y - 7.0)) width="16" height="5" fill=(colour) {},
                Swatch::Warning => text x=(n(x)) y=(n(y)) fill=(ODD) { "⚠" },
                Swatch::Line(colour, dashed, shape) => {
                    line x1=(n(x)) x2=(n(x + 20.0)) y1=(n(y - 4.0)) y2=(n(y - 4.0)) stroke=(colour) stroke-width="2"
                        stroke-dasharray=[dashed.then_some("5 3")] {}
                    (marker(*shape, x + 10.0, y - 4.0, colour))
                }
            }
            text x=(n(x + 24.0)) y=(n(y)) { (name) }
        }
    };
    (markup, y + 10.0)
}

fn svg_open(id: usize, width: f64, height: f64, body: Markup) -> Markup {
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {} {}", n(width), n(height)))
            style=(format!("max-width:{}px", width.round())) role="img" {
            defs {
                pattern id=(format!("hatch{id}")) width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)" {
                    rect width="6" height="6" fill="#ddd" {}
                    line x1="0" y1="0" x2="0" y2="6" stroke="#888" stroke-width="2" {}
                }
            }
            (body)
        }
    }
}

/// Ticks for an axis from 0 (or `lo`, log) to `max`: positions in value.
pub fn ticks(axis: &Axis, lo: f64, max: f64) -> Vec<f64> {
    if axis.log {
        let (a, b) = (
            lo.max(1e-9).log10().floor() as i32,
            max.max(1e-9).log10().ceil() as i32,
        );
        return (a..=b.max(a + 1)).map(|e| 10f64.powi(e)).collect();
    }
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    // From 0 to the first tick at or above the maximum.
    let mut out = vec![0.0];
    while out[out.len() - 1] < max * 0.9999 && out.len() < 12 {
        out.push(out.len() as f64 * step);
    }
    out
}

/// An axis's scale: value to position in `0..=len`.
struct Scale {
    log: bool,
    lo: f64,
    hi: f64,
    len: f64,
}

impl Scale {
    fn new(axis: &Axis, ticks: &[f64], max: f64, len: f64) -> Scale {
        let first = ticks.first().copied().unwrap_or(1.0);
        let last = ticks.last().copied().unwrap_or(max).max(max);
        if axis.log {
            Scale {
                log: true,
                lo: first,
                hi: last.max(first * 10.0),
                len,
            }
        } else {
            Scale {
                log: false,
                lo: 0.0,
                hi: last.max(f64::MIN_POSITIVE),
                len,
            }
        }
    }

    fn at(&self, v: f64) -> f64 {
        if v <= 0.0 {
            return 0.0;
        }
        let x = if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()).max(1e-9)
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        x.clamp(0.0, 1.0) * self.len
    }
}

/// The x axis under a chart: a line, ticks with labels, and its title.
fn x_axis(axis: &Axis, ticks: &[f64], scale: &Scale, left: f64, top: f64, y: f64) -> Markup {
    html! {
        line.axis x1=(n(left)) x2=(n(left + scale.len)) y1=(n(y)) y2=(n(y)) stroke="#444" {}
        @for &t in ticks {
            @let x = left + scale.at(t);
            line x1=(n(x)) x2=(n(x)) y1=(n(top)) y2=(n(y)) stroke="#eee" {}
            line.tick x1=(n(x)) x2=(n(x)) y1=(n(y)) y2=(n(y + 5.0)) stroke="#444" {}
            text x=(n(x)) y=(n(y + 18.0)) text-anchor="middle" { ((axis.tick)(t)) }
        }
        text x=(n(left + scale.len / 2.0)) y=(n(y + 34.0)) text-anchor="middle" fill="#444" { (axis.title) }
    }
}

/// The legend a bar chart's own marks call for, under the chart's names.
fn bar_legend(chart: &Bars) -> Vec<(String, Swatch)> {
    let any = |f: fn(&Bar) -> bool| chart.bars.iter().any(f);
    let mut entries = Vec::new();
    if any(|b| !b.starved && !b.outside) {
        entries.push((chart.bar.to_string(), Swatch::Bar(PALETTE[0])));
    }
    if any(|b| b.outside && !b.starved) {
        entries.push((format!("{} (outside server)", chart.bar), Swatch::Bar(OUTSIDE)));
    }
    if let Some(name) = chart.second.filter(|_| any(|b| b.second.is_some())) {
        entries.push((name.to_string(), Swatch::Thin(PALETTE[1])));
    }
    if let Some(name) = chart.marker.filter(|_| any(|b| b.marker.is_some())) {
        entries.push((name.to_string(), Swatch::Mark));
    }
    if any(|b| b.starved) {
        entries.push(("not every client served".into(), Swatch::Hatch));
    }
    if any(|b| b.odd) {
        entries.push((
            "odd figure, kept after a rerun (see the warnings)".into(),
            Swatch::Warning,
        ));
    }
    entries
}

/// Horizontal bars, the margin sized to the longest label and the room on
/// the right to the longest text.
fn bars(chart: &Bars, id: usize) -> Markup {
    if chart.bars.is_empty() {
        return html! { p.note { "No server has numbers for this." } };
    }
    let label_w = label_margin(chart.bars.iter().map(|b| b.label.as_str()));
    let text_w = chart
        .bars
        .iter()
        .map(|b| text_width(&b.text) + if b.odd { 2.0 * CHAR_W } else { 0.0 })
        .fold(120.0, f64::max)
        + 12.0;
    let width = label_w + PLOT_W + text_w;
    let (legend_markup, legend_h) = legend(id, &bar_legend(chart), label_w, width);
    let row_h = 26.0;
    let top = legend_h + 4.0;
    let max = chart
        .bars
        .iter()
        .flat_map(|b| [Some(b.value), b.marker, b.second])
        .flatten()
        .fold(f64::MIN_POSITIVE, f64::max);
    let min_positive = chart
        .bars
        .iter()
        .flat_map(|b| [Some(b.value), b.second])
        .flatten()
        .filter(|v| *v > 0.0)
        .fold(max, f64::min);
    let ticks = ticks(&chart.axis, min_positive, max);
    let scale = Scale::new(&chart.axis, &ticks, max, PLOT_W);
    let bottom = top + row_h * chart.bars.len() as f64 + 4.0;
    let body = html! {
        (legend_markup)
        (x_axis(&chart.axis, &ticks, &scale, label_w, top, bottom))
        @for (i, b) in chart.bars.iter().enumerate() {
            @let y = top + row_h * i as f64;
            @let w = scale.at(b.value);
            @let thick = if b.second.is_some() { 12.0 } else { 18.0 };
            @let fill = if b.starved { format!("url(#hatch{id})") } else if b.outside { OUTSIDE.into() } else { PALETTE[0].into() };
            text x=(n(label_w - 8.0)) y=(n(y + 15.0)) text-anchor="end" { (b.label) }
            rect x=(n(label_w)) y=(n(y + 2.0)) width=(n(w)) height=(n(thick)) fill=(fill)
                stroke=[b.starved.then_some("#888")] {}
            @if let Some(v) = b.second {
                rect x=(n(label_w)) y=(n(y + 15.0)) width=(n(scale.at(v))) height="5"
                    fill=(PALETTE[1]) {}
            }
            @if let Some(m) = b.marker {
                @let x = label_w + scale.at(m);
                line x1=(n(x)) x2=(n(x)) y1=(n(y)) y2=(n(y + 22.0)) stroke="#000" stroke-width="3" {}
            }
            @let right = [Some(b.value), b.second, b.marker].into_iter().flatten().map(|v| scale.at(v)).fold(w, f64::max);
            text x=(n(label_w + right + 6.0)) y=(n(y + 15.0)) fill=[b.odd.then_some(ODD)] {
                (b.text) @if b.odd { " ⚠" }
            }
        }
    };
    svg_open(id, width, bottom + 42.0, body)
}

/// The delay experiment as lanes: a lane per client from connect to its
/// whole reply, grouped by server, on one time axis.
fn lanes(chart: &Lanes, id: usize) -> Markup {
    if chart.groups.is_empty() {
        return html! { p.note { "No lanes were recorded." } };
    }
    let label_w = label_margin(chart.groups.iter().map(|g| g.0.as_str()));
    let width = label_w + PLOT_W + 40.0;
    let any_lost = chart
        .groups
        .iter()
        .any(|g| g.1.iter().any(|l| l.last_byte_s.is_none()));
    let mut entries = vec![
        ("waiting for the reply".to_string(), Swatch::Lane("#c9d7e8")),
        ("first byte of the reply".to_string(), Swatch::Mark),
    ];
    if any_lost {
        entries.push(("no reply".into(), Swatch::Lane("#b5494a")));
    }
    let (legend_markup, legend_h) = legend(id, &entries, label_w, width);
    let (lane_h, gap, top) = (7.0, 8.0, legend_h + 4.0);
    let end = chart
        .groups
        .iter()
        .flat_map(|g| g.1.iter())
        .filter_map(|l| l.last_byte_s.or(l.connected_s))
        .fold(0.1, f64::max);
    let ticks = ticks(&chart.axis, 0.0, end);
    let scale = Scale::new(&chart.axis, &ticks, end, PLOT_W);
    let count: usize = chart.groups.iter().map(|g| g.1.len()).sum();
    let bottom = top + count as f64 * lane_h + gap * chart.groups.len() as f64;
    let mut y = top;
    let mut placed = Vec::new();
    for (name, group) in &chart.groups {
        placed.push((y, name, group));
        y += group.len() as f64 * lane_h + gap;
    }
    let body = html! {
        (legend_markup)
        (x_axis(&chart.axis, &ticks, &scale, label_w, top, bottom))
        @for (y0, name, group) in placed {
            text x=(n(label_w - 8.0)) y=(n(y0 + group.len() as f64 * lane_h / 2.0 + 4.0)) text-anchor="end" { (name) }
            @for (i, lane) in group.iter().enumerate() {
                @let y = y0 + i as f64 * lane_h;
                @let from = scale.at(lane.connected_s.unwrap_or(0.0));
                @let (to, colour) = match lane.last_byte_s { Some(t) => (scale.at(t), "#c9d7e8"), None => (scale.at(end), "#b5494a") };
                rect x=(n(label_w + from)) y=(n(y)) width=(n((to - from).max(1.0))) height=(n(lane_h - 2.0)) fill=(colour) {}
                @if let Some(t) = lane.first_byte_s.or(lane.last_byte_s) {
                    @let x = label_w + scale.at(t);
                    line x1=(n(x)) x2=(n(x)) y1=(n(y)) y2=(n(y + lane_h - 2.0)) stroke="#000" stroke-width="3" {}
                }
            }
        }
    };
    svg_open(id, width, bottom + 42.0, body)
}

/// A hollow marker of the `shape`-th kind: lines that share points stay
/// visible because no two series share a shape, and hollow marks do not
/// cover each other.
fn marker(shape: usize, x: f64, y: f64, colour: &str) -> Markup {
    let r = 4.5;
    html! {
        @match shape % 5 {
            0 => circle cx=(n(x)) cy=(n(y)) r=(n(r)) fill="#fff" stroke=(colour) stroke-width="2" {},
            1 => rect x=(n(x - r)) y=(n(y - r)) width=(n(2.0 * r)) height=(n(2.0 * r)) fill="#fff" stroke=(colour) stroke-width="2" {},
            2 => polygon points=(format!("{},{} {},{} {},{}", n(x), n(y - r - 1.0), n(x + r + 1.0), n(y + r), n(x - r - 1.0), n(y + r))) fill="#fff" stroke=(colour) stroke-width="2" {},
            3 => polygon points=(format!("{},{} {},{} {},{} {},{}", n(x), n(y - r - 1.5), n(x + r + 1.5), n(y), n(x), n(y + r + 1.5), n(x - r - 1.5), n(y))) fill="#fff" stroke=(colour) stroke-width="2" {},
            _ => path d=(format!("M{} {}L{} {}M{} {}L{} {}", n(x - r), n(y - r), n(x + r), n(y + r), n(x - r), n(y + r), n(x + r), n(y - r))) stroke=(colour) stroke-width="2" {},
        }
    }
}

/// Lines of points, a line per series, each with its own colour, dash and
/// marker shape, named at its end and in the legend.
fn lines(chart: &Lines, id: usize) -> Markup {
    let points: Vec<(f64, f64)> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    if points.is_empty() {
        return html! { p.note { "No server has numbers for this." } };
    }
    let label_w = 64.0;
    let names_w = chart
        .series
        .iter()
        .map(|s| text_width(&s.name))
        .fold(40.0, f64::max)
        + 16.0;
    let width = label_w + PLOT_W + names_w;
    // Colour, dash and marker by the series' place: two outside servers
    // stay apart as any two models do (the legend names them outside).
    let style = |i: usize, _outside: bool| -> (&'static str, bool, usize) {
        (PALETTE[i % PALETTE.len()], i % 2 == 1, i)
    };
    let entries: Vec<(String, Swatch)> = chart
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (c, dashed, shape) = style(i, s.outside);
            let name = if s.outside {
                format!("{} (outside server)", s.name)
            } else {
                s.name.clone()
            };
            (name, Swatch::Line(c, dashed, shape))
        })
        .collect();
    let (legend_markup, legend_h) = legend(id, &entries, label_w, width);
    let (top, plot_h) = (legend_h + 12.0, 260.0);
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let y_min = points.iter().map(|p| p.1).fold(f64::MAX, f64::min).max(1e-9);
    let y_max = points.iter().map(|p| p.1).fold(f64::MIN_POSITIVE, f64::max);
    let xt = ticks(&chart.x, 0.0, x_max);
    let yt = ticks(&chart.y, y_min, y_max);
    let sx = Scale::new(&chart.x, &xt, x_max, PLOT_W);
    let sy = Scale::new(&chart.y, &yt, y_max, plot_h);
    let bottom = top + plot_h;
    let y_at = |v: f64| bottom - sy.at(v);
    // Each line's name at its end, nudged apart where lines end together.
    let mut ends: Vec<(f64, f64, &str, &str)> = chart
        .series
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let &(x, y) = s.points.last()?;
            Some((
                label_w + sx.at(x),
                y_at(y),
                s.name.as_str(),
                style(i, s.outside).0,
            ))
        })
        .collect();
    // 13 px apart, top to bottom; then, if the last ran past the axis, the
    // whole column moved up by the overrun (no higher than the plot's top).
    ends.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut last_y = f64::MIN;
    for end in &mut ends {
        end.1 = (end.1 + 4.0).max(last_y + 13.0);
        last_y = end.1;
    }
    let overrun = (last_y - (bottom + 4.0)).max(0.0);
    let room = ends.first().map_or(0.0, |e| (e.1 - top).max(0.0));
    for end in &mut ends {
        end.1 -= overrun.min(room);
    }
    let body = html! {
        (legend_markup)
        line.axis x1=(n(label_w)) x2=(n(label_w)) y1=(n(top)) y2=(n(bottom)) stroke="#444" {}
        @for &t in &yt {
            @let y = y_at(t);
            line x1=(n(label_w)) x2=(n(label_w + PLOT_W)) y1=(n(y)) y2=(n(y)) stroke="#eee" {}
            line.tick x1=(n(label_w - 5.0)) x2=(n(label_w)) y1=(n(y)) y2=(n(y)) stroke="#444" {}
            text x=(n(label_w - 8.0)) y=(n(y + 4.0)) text-anchor="end" { ((chart.y.tick)(t)) }
        }
        text transform=(format!("translate(14 {}) rotate(-90)", n(top + plot_h / 2.0))) text-anchor="middle" fill="#444" { (chart.y.title) }
        (x_axis(&chart.x, &xt, &sx, label_w, top, bottom))
        @for (i, s) in chart.series.iter().enumerate() {
            @let (colour, dashed, shape) = style(i, s.outside);
            @let path: Vec<String> = s.points.iter().map(|&(x, y)| format!("{},{}", n(label_w + sx.at(x)), n(y_at(y)))).collect();
            polyline points=(path.join(" ")) fill="none" stroke=(colour) stroke-width="2"
                stroke-dasharray=[dashed.then_some("7 4")] {}
            @for &(x, y) in &s.points { (marker(shape, label_w + sx.at(x), y_at(y), colour)) }
        }
        @for (x, y, name, colour) in ends {
            text x=(n(x + 10.0)) y=(n(y)) fill=(colour) { (name) }
        }
    };
    svg_open(id, width, bottom + 42.0, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::export::format::{tick_count, tick_micros};
    use crate::lab::export::section::{Axis, Series};
    use crate::lab::export::Document;
    use crate::lab::scenario::{DelayFigures, WorkFigures};
    use crate::lab::{Lane, Report, Row, Spread};

    /// A report with the longest labels the lab makes, an outside server
    /// named with markup, a starved model and an odd figure.
    fn report() -> Report {
        let mut rows = Vec::new();
        for model in ["iterative", "prefork-mutex", "<b>mine</b>"] {
            let mut r = Row {
                served: Some(if model == "iterative" { 1 } else { 5 }),
                clients: Some(5),
                outside: model.starts_with('<'),
                ..Row::new(model, "delay")
            };
            r.set_figures(&DelayFigures {
                makespan_s: Some(5.01),
                theory_s: Some(5.0),
                lanes: Some(vec![
                    Lane {
                        connected_s: Some(0.0),
                        first_byte_s: Some(1.0),
                        last_byte_s: Some(1.0),
                    },
                    Lane::default(),
                ]),
            });
            rows.push(r);
        }
        for (model, workers, cores) in [
            ("half-async", 2, 1.8),
            ("epoll", 1, 0.34),
            ("poll", 1, 1.0),
            ("select", 1, 1.0),
        ] {
            let mut r = Row {
                workers: Some(workers),
                throughput_rps: Some(4500.0),
                runs: Some(3),
                ..Row::new(model, "work")
            };
            r.range.insert(
                "throughput_rps".into(),
                Spread {
                    min: 4400.0,
                    max: 4600.0,
                },
            );
            r.set_figures(&WorkFigures {
                cores_used: Some(cores),
            });
            rows.push(r);
        }
        rows.push(Row {
            error: Some("io_uring is not available: <EPERM>".into()),
            ..Row::new("uring", "delay")
        });
        for (level, p50) in [(0, 40), (1000, 200)] {
            for model in ["select", "poll"] {
                rows.push(Row {
                    idle_connections: Some(level),
                    p50_us: Some(p50),
                    ..Row::new(model, "c10k")
                });
            }
        }
        rows[4].anomaly = Some("it kept 0.34 cores busy".into());
        Report {
            rows,
            ..Report::default()
        }
    }

    /// The `<text text-anchor="end">` labels of the page's charts, each with
    /// its x: a label is drawn leftwards from x.
    fn end_anchored(page: &str) -> Vec<(f64, String)> {
        page.split("<text ")
            .skip(1)
            .filter(|t| t.contains("text-anchor=\"end\""))
            .filter_map(|t| {
                let x: f64 = t.split("x=\"").nth(1)?.split('"').next()?.parse().ok()?;
                let text = t.split('>').nth(1)?.split('<').next()?.to_string();
                Some((x, text))
            })
            .collect()
    }

    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
    }

    #[test]
    fn no_label_is_cut_however_long() {
        let page = render(&Document::of(&report()));
        let labels = end_anchored(&page);
        assert!(
            labels.iter().any(|(_, t)| t == "half-async (1 loop, 2 workers)"),
            "{labels:?}"
        );
        for (x, text) in labels {
            let needed = text_width(&unescape(&text));
            assert!(needed <= x, "'{text}' needs {needed} px left of x={x}");
        }
    }

    #[test]
    fn legends_carry_every_mark_used_and_no_other() {
        let page = render(&Document::of(&report()));
        // delay: bars, theory marks, a starved model's hatch, an outside server.
        assert!(page.contains(">theory</text>"));
        assert!(page.contains(">not every client served</text>"));
        assert!(page.contains(">measured (outside server)</text>"));
        // the lanes: a client with no reply.
        assert!(page.contains(">no reply</text>"));
        // work: the odd figure is marked and in the legend.
        assert!(page.contains(">odd figure, kept after a rerun (see the warnings)</text>"));
        assert!(page.contains("Odd figure, kept after a rerun: epoll in work"));
        // No legend entry for a mark no bar uses: work has no second series.
        let work = &page[page.find("id=\"work\"").unwrap()..];
        assert!(!work.contains(">p99</text>"));
        // c10k: a line per model, each legend entry drawn as its line and marker.
        let c10k = &page[page.find("id=\"c10k\"").unwrap()..page.find("id=\"work\"").unwrap()];
        assert!(
            c10k.contains("stroke-dasharray=\"5 3\""),
            "the dashed line's legend is dashed"
        );
        assert!(
            c10k.contains("<circle") && c10k.contains("<rect x="),
            "two marker shapes"
        );
    }

    #[test]
    fn escaped_self_contained_and_linked_absolutely() {
        let mut report = report();
        report.rows.push(Row {
            throughput_rps: Some(1000.0),
            ..Row::new("epoll", "throughput")
        });
        let page = render(&Document::of(&report));
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("src=\"http") && !page.contains("<script"));
        assert!(page.contains("&lt;EPERM&gt;"), "errors are escaped");
        assert!(
            page.contains("&lt;b&gt;mine&lt;/b&gt;") && !page.contains("<b>mine</b>"),
            "names are escaped"
        );
        assert!(page.contains(&format!(
            "href=\"file://{}/src/model/epoll.rs\"",
            env!("CARGO_MANIFEST_DIR")
        )));
        assert!(!page.contains("href=\"src/"), "no relative links");
        assert!(page.contains("<table class=\"meta\""), "the metadata is a table");
        let findings = page.find("What this run found").unwrap();
        assert!(findings < page.find("id=\"delay\"").unwrap(), "findings first");
    }

    #[test]
    fn linear_ticks_are_round_and_cover_the_maximum() {
        let axis = Axis::linear("", tick_count);
        assert_eq!(
            ticks(&axis, 0.0, 92_000.0),
            [0.0, 20_000.0, 40_000.0, 60_000.0, 80_000.0, 100_000.0]
        );
        let log = Axis::log("", tick_micros);
        assert_eq!(ticks(&log, 13.0, 4_690.0), [10.0, 100.0, 1000.0, 10_000.0]);
    }

    #[test]
    fn series_that_coincide_stay_visible() {
        let same = vec![(0.0, 40.0), (1000.0, 200.0)];
        let chart = Lines {
            x: Axis::linear("x", tick_count),
            y: Axis::log("y", tick_micros),
            series: ["select", "poll"]
                .iter()
                .map(|name| Series {
                    name: name.to_string(),
                    points: same.clone(),
                    outside: false,
                })
                .collect(),
            caveat: None,
        };
        let svg = lines(&chart, 1).into_string();
        // Two shapes, both hollow: the one drawn second does not cover the first.
        assert!(svg.contains("<circle") && svg.contains("<rect x="));
        assert!(!svg.contains("fill=\"#4a7fb5\" stroke"), "markers are hollow");
        assert_eq!(
            svg.matches(">select</text>").count(),
            2,
            "in the legend and at the line's end"
        );
    }
}
