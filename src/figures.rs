//! How socklab writes a figure for a person: counts with thousands
//! separators, the same in bench's summary and the lab's report, so that
//! `70,586` reads the same wherever it is printed. (JSON and CSV keep plain
//! numbers: they are for programs.)

/// An integer with thousands separators: `70,586`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A non-negative number to `places` decimals, its integer part with
/// thousands separators: `70,586.3`. (Not a number stays `NaN`, rather
/// than pass for a zero.)
pub fn decimal(x: f64, places: usize) -> String {
    let x = if x < 0.0 { 0.0 } else { x };
    let text = format!("{x:.places$}");
    match text.split_once('.') {
        Some((whole, fraction)) => match whole.parse::<u64>() {
            Ok(n) => format!("{}.{fraction}", thousands(n)),
            Err(_) => text,
        },
        None => text.parse::<u64>().map_or(text, thousands),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(70_586), "70,586");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn decimals() {
        assert_eq!(decimal(999.84, 1), "999.8");
        assert_eq!(decimal(70_586.25, 1), "70,586.2");
        assert_eq!(decimal(999_999.96, 1), "1,000,000.0");
        assert_eq!(decimal(1234.4, 0), "1,234");
        assert_eq!(decimal(f64::NAN, 1), "NaN");
    }
}
