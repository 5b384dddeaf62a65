//! The lab's results as files. The report is built once as a [`Document`]
//! (where the figures came from, the findings, a [`Section`] per scenario
//! made by the scenario itself, a paragraph per server); each format is a
//! small module that draws any document: JSON (the rows), Markdown, HTML.

pub mod format;
pub mod html;
pub mod json;
pub mod markdown;
pub mod section;

use anyhow::Context;

use self::format::capitalize;
use self::section::Section;
use super::scenario;
use super::{LabOptions, Meta, Report, Row};
use crate::model::ModelKind;

/// Writes every export asked for, from the report so far.
pub fn write_all(report: &Report, options: &LabOptions) -> anyhow::Result<()> {
    let write = |path: &std::path::Path, text: String| {
        std::fs::write(path, text).with_context(|| format!("cannot write the report to {}", path.display()))
    };
    if let Some(path) = &options.json {
        write(path, json::render(report)?)?;
    }
    if options.markdown.is_none() && options.html.is_none() {
        return Ok(());
    }
    let document = Document::of(report);
    if let Some(path) = &options.markdown {
        write(path, markdown::render(&document))?;
    }
    if let Some(path) = &options.html {
        write(path, html::render(&document))?;
    }
    Ok(())
}

/// The report, ready to be drawn in any format.
pub struct Document {
    /// Where the figures came from: (label, value) pairs.
    pub meta: Vec<(String, String)>,
    /// How many rows the report holds.
    pub measurements: usize,
    /// The run's findings: the report opens with them.
    pub findings: Vec<String>,
    /// Figures the lab found odd, even after a rerun.
    pub warnings: Vec<String>,
    pub sections: Vec<Section>,
    pub servers: Vec<Paragraph>,
}

/// What one server showed, scenario by scenario.
pub struct Paragraph {
    pub name: String,
    /// Its lesson in a line.
    pub takeaway: String,
    /// Its source file, as a link that works wherever the report is read
    /// on this machine (absolute to the checkout it was built from).
    pub source: Option<(String, String)>,
    pub outside: bool,
    /// A sentence per scenario it ran.
    pub story: Vec<String>,
}

impl Document {
    pub fn of(report: &Report) -> Document {
        let rows = &report.rows;
        let mut findings = Vec::new();
        let mut sections = Vec::new();
        for s in scenario::ALL {
            let mine: Vec<&Row> = rows.iter().filter(|r| r.scenario == s.name()).collect();
            if mine.is_empty() {
                continue;
            }
            findings.extend(s.findings(&mine));
            sections.push(s.section(&mine));
        }
        let warnings = rows
            .iter()
            .filter_map(|r| {
                Some(format!(
                    "{} in {}: {}.",
                    r.model,
                    r.scenario,
                    r.anomaly.as_deref()?
                ))
            })
            .collect();
        Document {
            meta: meta_lines(&report.meta),
            measurements: rows.len(),
            findings,
            warnings,
            sections,
            servers: servers_in(rows)
                .into_iter()
                .map(|name| paragraph(name, rows))
                .collect(),
        }
    }
}

/// The servers in the rows, in order of first appearance.
pub fn servers_in(rows: &[Row]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.model.as_str()) {
            names.push(&r.model);
        }
    }
    names
}

fn paragraph(name: &str, rows: &[Row]) -> Paragraph {
    let kind = <ModelKind as clap::ValueEnum>::from_str(name, true).ok();
    let outside = rows.iter().any(|r| r.model == name && r.outside);
    let mut story = Vec::new();
    for s in scenario::ALL {
        let mine: Vec<&Row> = rows
            .iter()
            .filter(|r| r.model == name && r.scenario == s.name())
            .collect();
        if mine.is_empty() {
            continue;
        }
        let failed: Vec<&str> = mine.iter().filter_map(|r| r.error.as_deref()).collect();
        if failed.len() == mine.len() {
            story.push(format!("{}: could not run ({}).", s.name(), failed[0]));
        } else if let Some(text) = s.story(&mine) {
            story.push(format!("{}: {}.", s.name(), text));
        }
    }
    Paragraph {
        name: name.to_string(),
        takeaway: match (kind, outside) {
            (Some(k), false) => capitalize(k.takeaway()) + ".",
            _ => "An outside server, measured exactly as the models are.".into(),
        },
        source: kind.filter(|_| !outside).map(|k| {
            let file = k.source_file();
            (file.clone(), source_link(&file))
        }),
        outside,
        story,
    }
}

/// A link to a file of the checkout the report was built from: absolute,
/// so it works wherever `--html` writes the page.
fn source_link(file: &str) -> String {
    format!("file://{}/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// The meta block as (label, value) pairs, values as a person would type
/// them: every scenario's parameters in one line.
pub fn meta_lines(meta: &Meta) -> Vec<(String, String)> {
    let mut lines: Vec<(String, String)> = [
        ("date", meta.date.clone()),
        (
            "socklab",
            format!("{} (commit {})", meta.socklab_version, meta.commit),
        ),
        ("command", meta.command.clone()),
        ("kernel", meta.kernel.clone()),
        ("CPU", format!("{} ({} cores)", meta.cpu, meta.cores)),
        ("bench engine", meta.engine.clone()),
        ("pinning", meta.pinning.clone()),
        ("memory", meta.memory.clone()),
        ("context switches", meta.context_switches.clone()),
        ("system calls", meta.syscalls.clone()),
        ("models", meta.models.join(", ")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for o in &meta.outside {
        lines.push(("outside server".into(), o.clone()));
    }
    if let Some(scenarios) = meta.parameters.as_object() {
        for (name, p) in scenarios {
            let text = p
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| format!("{k} {}", plain(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            lines.push((name.clone(), text));
        }
    }
    lines
}

/// A JSON value as a person would write it: strings bare, lists as
/// `a b c` (the parameters themselves are separated by commas).
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

/// One line for the progress log: the row's headline.
pub fn summary_line(row: &Row) -> String {
    let head = format!("{:<13} {:<10}", row.model, row.scenario);
    if let Some(e) = &row.error {
        return format!("{head} failed: {e}");
    }
    let line = scenario::by_name(&row.scenario).map_or(String::new(), |s| s.headline(row));
    let served = format::served_label(row)
        .filter(|s| !line.contains(s.as_str()))
        .map_or(String::new(), |s| format!(", {s}"));
    format!("{head} {line}{served}")
}

/// The sections' tables and notes, for the terminal at the end of a run.
pub fn tables(rows: &[Row]) -> String {
    markdown::tables(&Document::of(&Report {
        rows: rows.to_vec(),
        ..Report::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_values_read_as_typed() {
        let meta = Meta {
            parameters: serde_json::json!({
                "unp": {"request": "4000\\n", "models": ["epoll", "uring"]}
            }),
            ..Meta::default()
        };
        let lines = meta_lines(&meta);
        let unp = &lines.iter().find(|(k, _)| k == "unp").unwrap().1;
        assert!(unp.contains("request 4000\\n"), "{unp}");
        assert!(!unp.contains("\\\\"), "{unp}");
        assert!(unp.contains("models epoll uring"), "{unp}");
    }
}
