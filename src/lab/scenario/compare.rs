//! Comparing two rows' figures honestly: a difference is told only where
//! it is larger than the spread of the runs behind it.

use crate::lab::Row;

/// One figure of a row: its median over the runs, their min and max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    pub value: f64,
    pub min: f64,
    pub max: f64,
    pub runs: u64,
}

impl Figure {
    /// The figure called `key` in the exports (`cpu_per_request_us`), a
    /// field of the row or of its scenario's figures.
    pub fn of(row: &Row, key: &str) -> Option<Figure> {
        if row.error.is_some() {
            return None;
        }
        let value = serde_json::to_value(row).ok()?.get(key)?.as_f64()?;
        let (min, max) = row.range.get(key).map_or((value, value), |s| (s.min, s.max));
        Some(Figure {
            value,
            min,
            max,
            runs: row.runs.unwrap_or(1),
        })
    }

    /// Whether the two differ by more than their runs spread: both measured
    /// at least twice, and their ranges do not overlap.
    pub fn apart(&self, other: &Figure) -> bool {
        self.runs >= 2 && other.runs >= 2 && (self.max < other.min || other.max < self.min)
    }

    /// How this figure stands against `other` where their runs tell them
    /// apart ([`Figure::apart`]); `None` where this run cannot tell.
    pub fn against(&self, other: &Figure) -> Option<std::cmp::Ordering> {
        self.apart(other).then(|| self.value.total_cmp(&other.value))
    }

    /// Max minus min over the median: how far the runs disagreed.
    pub fn relative_spread(&self) -> f64 {
        if self.value == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.value.abs()
        }
    }

    /// `3.1 µs (3.0-3.3)` with `unit` " µs" and one decimal.
    pub fn show(&self, unit: &str) -> String {
        if self.max > self.min {
            format!("{:.1}{unit} ({:.1}-{:.1})", self.value, self.min, self.max)
        } else {
            format!("{:.1}{unit}", self.value)
        }
    }
}

/// The rows with a figure called `key`, lowest first.
pub fn ranked<'a>(rows: &[&'a Row], key: &str) -> Vec<(&'a Row, Figure)> {
    let mut out: Vec<(&Row, Figure)> = rows
        .iter()
        .filter_map(|r| Some((*r, Figure::of(r, key)?)))
        .collect();
    out.sort_by(|a, b| a.1.value.total_cmp(&b.1.value));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::Spread;

    fn row(cpu: f64, min: f64, max: f64, runs: u64) -> Row {
        let mut r = Row::new("epoll", "throughput");
        r.cpu_per_request_us = Some(cpu);
        r.runs = Some(runs);
        r.range.insert("cpu_per_request_us".into(), Spread { min, max });
        r
    }

    #[test]
    fn apart_only_beyond_the_spread_of_several_runs() {
        let a = Figure::of(&row(3.0, 2.9, 3.1, 3), "cpu_per_request_us").unwrap();
        let b = Figure::of(&row(3.3, 3.2, 3.4, 3), "cpu_per_request_us").unwrap();
        let c = Figure::of(&row(3.2, 3.05, 3.3, 3), "cpu_per_request_us").unwrap();
        let once = Figure::of(&row(9.0, 9.0, 9.0, 1), "cpu_per_request_us").unwrap();
        assert!(a.apart(&b));
        assert!(!a.apart(&c), "overlapping ranges");
        assert!(!a.apart(&once), "one run has no spread to judge by");
        assert_eq!(a.against(&b), Some(std::cmp::Ordering::Less));
        assert_eq!(b.against(&a), Some(std::cmp::Ordering::Greater));
        assert_eq!(a.against(&c), None, "this run cannot tell");
        assert_eq!(a.show(" µs"), "3.0 µs (2.9-3.1)");
    }
}
