//! The rows as one JSON document: a list of objects with the keys of DESIGN
//! section 7 (`model`, `scenario`, `makespan_s`, `throughput_rps`, `p50_us`,
//! `p99_us`, `cpu_s`, `peak_rss_kb`, `rss_per_conn_bytes`, where each
//! applies) and a few more.

use crate::lab::Row;

pub fn render(rows: &[Row]) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(rows)?;
    text.push('\n');
    Ok(text)
}

/// Reads rows back (for tools, and for the round-trip test).
pub fn parse(text: &str) -> anyhow::Result<Vec<Row>> {
    Ok(serde_json::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_leaves_out_what_does_not_apply() {
        let rows = vec![Row {
            model: "thread".into(),
            scenario: "delay".into(),
            makespan_s: Some(1.003),
            theory_s: Some(1.0),
            ..Row::default()
        }];
        let text = render(&rows).unwrap();
        assert!(!text.contains("throughput_rps"));
        assert_eq!(parse(&text).unwrap(), rows);
    }
}
