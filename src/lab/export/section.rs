//! A scenario's part of the report, as data: its lesson, its charts, the
//! why, its tables and notes. Each scenario builds its own section from its
//! rows (`Scenario::section`); the HTML and Markdown renderers draw any
//! section and name no scenario.

use crate::client::bench::Lane;

/// One scenario's section.
pub struct Section {
    /// The scenario's name: the Markdown heading and the HTML anchor.
    pub name: &'static str,
    /// The HTML heading.
    pub title: &'static str,
    /// What the section teaches, in a sentence.
    pub lesson: String,
    /// In order: chart, the why, table, notes (the report's rule).
    pub blocks: Vec<Block>,
}

pub enum Block {
    /// A paragraph of prose: what a chart shows, or why.
    Text(String),
    /// A heading inside the section (one of the ladder's message sizes).
    Heading(String),
    Chart(Chart),
    Table(Table),
    /// Points made from the rows: verdicts, notes on the method.
    Notes(Vec<String>),
}

/// A table: a header and rows of cells, already formatted.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A line per row: its name (by `name`), then its `cells`; for a row
    /// that failed, its name, why, and dashes.
    pub fn push_rows(
        &mut self,
        rows: &[&crate::lab::Row],
        name: impl Fn(&crate::lab::Row) -> String,
        cells: impl Fn(&crate::lab::Row) -> Vec<String>,
    ) {
        for r in rows {
            match &r.error {
                Some(e) => self.push_failed(&name(r), e),
                None => {
                    let mut line = vec![name(r)];
                    line.extend(cells(r));
                    self.push(line);
                }
            }
        }
    }

    /// A row for a server that failed: its name, why, and dashes.
    pub fn push_failed(&mut self, name: &str, why: &str) {
        let mut cells = vec![name.to_string(), format!("failed: {why}")];
        cells.resize(self.header.len().max(2), "-".into());
        self.rows.push(cells);
    }
}

pub enum Chart {
    Bars(Bars),
    Lanes(Lanes),
    Lines(Lines),
}

/// What an axis measures, and how its ticks read.
pub struct Axis {
    pub title: &'static str,
    pub log: bool,
    pub tick: fn(f64) -> String,
}

impl Axis {
    pub fn linear(title: &'static str, tick: fn(f64) -> String) -> Axis {
        Axis {
            title,
            log: false,
            tick,
        }
    }

    pub fn log(title: &'static str, tick: fn(f64) -> String) -> Axis {
        Axis {
            title,
            log: true,
            tick,
        }
    }
}

/// Horizontal bars, one per server. The legend is made from the marks the
/// bars use, under the names given here, so it always matches them.
pub struct Bars {
    pub axis: Axis,
    /// The legend's name of the bar (`requests/s`, `p50`, `measured`).
    pub bar: &'static str,
    /// The legend's name of the thin bar under it, where bars have one.
    pub second: Option<&'static str>,
    /// The legend's name of the black mark, where bars have one.
    pub marker: Option<&'static str>,
    pub bars: Vec<Bar>,
    /// What the chart does not show, written under it.
    pub caveat: Option<String>,
}

impl Bars {
    pub fn new(axis: Axis, bar: &'static str, bars: Vec<Bar>) -> Bars {
        Bars {
            axis,
            bar,
            second: None,
            marker: None,
            bars,
            caveat: None,
        }
    }

    pub fn caveat(mut self, text: impl Into<String>) -> Bars {
        self.caveat = Some(text.into());
        self
    }
}

/// One bar: a label, a value, and the text written next to it.
pub struct Bar {
    pub label: String,
    pub value: f64,
    /// A second series (p99 next to p50), drawn thinner below the first.
    pub second: Option<f64>,
    /// A mark across the bar (theory).
    pub marker: Option<f64>,
    pub text: String,
    /// Not every client was served: drawn hatched grey.
    pub starved: bool,
    /// An outside server (`lab --server`): drawn in its own colour.
    pub outside: bool,
    /// The lab found the figure odd: drawn with a warning sign.
    pub odd: bool,
}

impl Bar {
    pub fn new(label: impl Into<String>, value: f64, text: impl Into<String>) -> Bar {
        Bar {
            label: label.into(),
            value,
            second: None,
            marker: None,
            text: text.into(),
            starved: false,
            outside: false,
            odd: false,
        }
    }

    /// Hatched, labelled `served 1 of 50`, marked as outside or odd, as
    /// the row says.
    pub fn of(mut self, row: &crate::lab::Row) -> Bar {
        if let Some(label) = super::format::served_label(row) {
            self.starved = true;
            self.text = format!("{}, {label}", self.text);
        }
        self.outside = row.outside;
        if row.outside {
            self.label = format!("{} (outside)", self.label);
        }
        self.odd = row.anomaly.is_some();
        self
    }
}

/// A lane per client from its connection to its whole reply, grouped by
/// server, on one time axis (the delay experiment).
pub struct Lanes {
    pub axis: Axis,
    pub groups: Vec<(String, Vec<Lane>)>,
    pub caveat: Option<String>,
}

/// Lines of points, a line per server (the C10K curve, cost per rate).
pub struct Lines {
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    pub caveat: Option<String>,
}

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub outside: bool,
}
