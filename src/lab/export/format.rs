//! Figures as people write them: `70,586/s (69,100-71,020)`, `1.50 ms`,
//! `244 B`, for every section, table and chart.

use crate::lab::Row;

/// A duration in seconds, as the tables show it.
pub fn seconds(s: f64) -> String {
    format!("{s:.2} s")
}

/// A latency in microseconds, in the unit that reads best.
pub fn micros(us: u64) -> String {
    crate::client::bench::micros(us)
}

/// Microseconds of CPU, one decimal: `3.1 µs`.
pub fn us(x: f64) -> String {
    format!("{x:.1} µs")
}

/// A byte count, in the unit that reads best.
pub fn bytes(b: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    match b {
        0..KIB => format!("{b} B"),
        KIB..MIB => format!("{:.1} KiB", b as f64 / KIB as f64),
        _ => format!("{:.1} MiB", b as f64 / MIB as f64),
    }
}

pub use crate::figures::thousands;

/// A count, or `-`.
pub fn count(n: Option<u64>) -> String {
    n.map_or("-".into(), thousands)
}

/// A per-request figure: two decimals below 1, where they matter.
pub fn per_request(x: f64) -> String {
    if x < 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.1}")
    }
}

/// `-` for a figure that was not measured.
pub fn or_dash<T>(x: Option<T>, f: impl Fn(T) -> String) -> String {
    x.map_or_else(|| "-".into(), f)
}

/// The server's name as tables show it: an outside server says so.
pub fn server(row: &Row) -> String {
    if row.outside {
        format!("{} (outside)", row.model)
    } else {
        row.model.clone()
    }
}

/// `served 1 of 50` when a server left clients without a reply.
pub fn served_label(row: &Row) -> Option<String> {
    match (row.served, row.clients) {
        (Some(s), Some(c)) if s < c => Some(format!("served {s} of {c}")),
        _ => None,
    }
}

/// `5 of 5`: the served column.
pub fn served(row: &Row) -> String {
    match (row.served, row.clients) {
        (Some(s), Some(c)) => format!("{s} of {c}"),
        _ => "-".into(),
    }
}

/// Requests per second with its min-max over the runs: `70,586/s (69,100-71,020)`.
pub fn rps_with_range(row: &Row) -> String {
    let Some(rps) = row.throughput_rps else {
        return "-".into();
    };
    let mut s = format!("{}/s", thousands(rps.round() as u64));
    if let Some(r) = row.range.get("throughput_rps") {
        s += &format!(
            " ({}-{})",
            thousands(r.min.round() as u64),
            thousands(r.max.round() as u64)
        );
    }
    s
}

/// `412 398 390`.
pub fn spread_text(counts: &[u64]) -> String {
    counts.iter().map(|c| thousands(*c)).collect::<Vec<_>>().join(" ")
}

/// The first letter up.
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    }
}

pub fn tick_count(v: f64) -> String {
    thousands(v.round() as u64)
}

pub fn tick_micros(v: f64) -> String {
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

pub fn tick_seconds(v: f64) -> String {
    let s = format!("{v:.2}");
    format!("{} s", s.trim_end_matches('0').trim_end_matches('.'))
}

pub fn tick_bytes(v: f64) -> String {
    format!("{} B", thousands(v.round() as u64))
}

pub fn tick_plain(v: f64) -> String {
    if v >= 10.0 {
        thousands(v.round() as u64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_keep_their_digits() {
        assert_eq!(tick_seconds(0.25), "0.25 s");
        assert_eq!(tick_seconds(0.5), "0.5 s");
        assert_eq!(tick_seconds(2.0), "2 s");
    }
}
