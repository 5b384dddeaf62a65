//! The report as one JSON document, `{"meta": {...}, "rows": [...]}`: the
//! run's context, and a list of objects with the keys of DESIGN section 7
//! (`model`, `scenario`, `makespan_s`, `throughput_rps`, `p50_us`, `p99_us`,
//! `cpu_s`, `peak_rss_kb`, `rss_per_conn_bytes`, where each applies) and a
//! few more. With several runs a figure is the median and `range` holds its
//! min and max.

use crate::lab::Report;

pub fn render(report: &Report) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    Ok(text)
}

/// Reads a report back (for tools, and for the round-trip test).
pub fn parse(text: &str) -> anyhow::Result<Report> {
    Ok(serde_json::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::Row;

    #[test]
    fn round_trips_and_leaves_out_what_does_not_apply() {
        let mut row = Row::new("thread", "delay");
        row.set_figures(&crate::lab::scenario::DelayFigures {
            makespan_s: Some(1.003),
            theory_s: Some(1.0),
            lanes: None,
        });
        let report = Report {
            rows: vec![row],
            ..Report::default()
        };
        let text = render(&report).unwrap();
        assert!(!text.contains("throughput_rps"));
        assert!(
            text.contains("\"makespan_s\": 1.003"),
            "a scenario's figures are keys of the row: {text}"
        );
        assert!(text.contains("\"meta\""));
        assert_eq!(parse(&text).unwrap(), report);
    }
}
