//! Numbers for people: byte sizes in binary units (`4K`, `2M`, `1.5G`) and durations.

use std::time::Duration;

const UNITS: [(u64, &str); 6] = [
    (1 << 60, "E"),
    (1 << 50, "P"),
    (1 << 40, "T"),
    (1 << 30, "G"),
    (1 << 20, "M"),
    (1 << 10, "K"),
];

/// A byte count in the largest binary unit that is at most the value: `4096` → `4K`,
/// `1610612736` → `1.5G`, `4198400` → `4M` (truncated to two decimals), `512` → `512B`.
pub fn bytes(n: u64) -> String {
    for (unit, suffix) in UNITS {
        if n >= unit {
            if n.is_multiple_of(unit) {
                return format!("{}{suffix}", n / unit);
            }
            // Truncated, not rounded: 3.9996G is `3.99G`, never `4G`.
            let hundredths = u128::from(n) * 100 / u128::from(unit);
            let s = format!("{}.{:02}", hundredths / 100, hundredths % 100);
            let s = s.trim_end_matches('0').trim_end_matches('.');
            return format!("{s}{suffix}");
        }
    }
    format!("{n}B")
}

/// A byte count as the trace language writes it exactly (the language's own printer).
pub use type1_trace::expect::bytes_exact;

/// A duration with a sensible unit: `850ns`, `12.3µs`, `4.56ms`, `1.23s`.
pub fn duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

/// A count of 4K pages, labelled, with its size in bytes: `1024 pages (4M)`, `1 page (4K)`,
/// `0 pages`.
pub fn pages(n: u64) -> String {
    match n {
        0 => "0 pages".into(),
        1 => "1 page (4K)".into(),
        _ => format!("{n} pages ({})", bytes(n.saturating_mul(4096))),
    }
}

/// Two byte counts compared with each other (a value and its limit): both in [`bytes`] when
/// that tells them apart, else both exact (`4G+4K` and `4G`, never `4G` and `4G`).
pub fn bytes_pair(a: u64, b: u64) -> (String, String) {
    let (x, y) = (bytes(a), bytes(b));
    if a != b && x == y {
        (bytes_exact(a), bytes_exact(b))
    } else {
        (x, y)
    }
}

/// `part` as a percentage of `whole`, one decimal, truncated so that anything short of the
/// whole never reads `100.0%` (`-` when `whole` is 0).
pub fn percent_of(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    let tenths = u128::from(part) * 1000 / u128::from(whole);
    format!("{}.{}%", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_picks_the_largest_unit() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(4096), "4K");
        assert_eq!(bytes(2 << 20), "2M");
        assert_eq!(bytes(3 << 29), "1.5G");
        assert_eq!(bytes(16 << 30), "16G");
        assert_eq!(bytes((4 << 20) + 4096), "4M");
        assert_eq!(bytes((4 << 30) - (1 << 20)), "3.99G");
    }

    #[test]
    fn bytes_exact_round_trips_the_trace_notation() {
        assert_eq!(bytes_exact(0), "0");
        assert_eq!(bytes_exact(4096), "4K");
        assert_eq!(bytes_exact((4 << 20) + 4096), "4M+4K");
        assert_eq!(bytes_exact(0x1234), "0x1234");
        assert_eq!(
            crate::trace::parse_number(&bytes_exact((1 << 30) + (2 << 20))).unwrap(),
            (1 << 30) + (2 << 20)
        );
    }

    #[test]
    fn pages_are_labelled_and_pairs_stay_apart() {
        assert_eq!(pages(0), "0 pages");
        assert_eq!(pages(1), "1 page (4K)");
        assert_eq!(pages(1024), "1024 pages (4M)");
        assert_eq!(
            bytes_pair((4 << 30) + 4096, 4 << 30),
            ("4G+4K".to_string(), "4G".to_string())
        );
        assert_eq!(bytes_pair(2 << 20, 4 << 30), ("2M".into(), "4G".into()));
        assert_eq!(percent_of(999, 1000), "99.9%");
        assert_eq!(percent_of(9999, 10000), "99.9%");
        assert_eq!(percent_of(1, 0), "-");
    }

    #[test]
    fn duration_units() {
        assert_eq!(duration(Duration::from_nanos(850)), "850ns");
        assert_eq!(duration(Duration::from_millis(1230)), "1.23s");
    }
}
