//! Short, fixed-style renderings of durations and sizes for the terminal UI.

use std::time::Duration;

const SEC: u64 = 1_000_000_000;

/// A span of nanoseconds as people read it: `850ms`, `15.9s`, `2m05s`, `1h02m`, `3d04h`.
pub fn span(ns: u64) -> String {
    let s = ns / SEC;
    if ns < SEC {
        format!("{}ms", ns / 1_000_000)
    } else if s < 60 {
        format!("{:.1}s", ns as f64 / 1e9)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// Seconds (as the snapshot has them) as a span.
pub fn secs(s: f64) -> String {
    span((s.max(0.0) * 1e9) as u64)
}

/// A grace setting, as it would be typed: `5s`, `1m30s`, `500ms`.
pub fn grace(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// A byte count: `0 B`, `325 B`, `127.0 KiB`, `1.2 MiB`.
pub fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if n < 1024 {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.1} KiB", f / KIB)
    } else if f < KIB * KIB * KIB {
        format!("{:.1} MiB", f / KIB / KIB)
    } else {
        format!("{:.1} GiB", f / KIB / KIB / KIB)
    }
}

/// A rate per second with a sensible number of digits.
pub fn rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

/// `s` cut to `width` characters, with `…` when cut.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut t: String = s.chars().take(width - 1).collect();
    t.push('…');
    t
}

/// `part` of `whole` in percent, for a site's leaks over its requests: `25%`, `2.5%`, `<0.1%`,
/// `0%`; `–` when there is no whole to speak of.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "–".into();
    }
    let pct = part as f64 * 100.0 / whole as f64;
    if part == 0 {
        "0%".into()
    } else if pct >= 9.95 {
        format!("{pct:.0}%")
    } else if pct >= 0.1 {
        format!("{pct:.1}%")
    } else {
        "<0.1%".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_graces_bytes_and_rates_read_well() {
        assert_eq!(span(850_000_000), "850ms");
        assert_eq!(span(15_949_000_000), "15.9s");
        assert_eq!(span(125 * SEC), "2m05s");
        assert_eq!(span(3720 * SEC), "1h02m");
        assert_eq!(span(3 * 86_400 * SEC + 4 * 3600 * SEC), "3d04h");
        assert_eq!(secs(-1.0), "0ms");
        assert_eq!(grace(Duration::from_secs(5)), "5s");
        assert_eq!(grace(Duration::from_secs(90)), "1m30s");
        assert_eq!(grace(Duration::from_secs(120)), "2m");
        assert_eq!(grace(Duration::from_millis(1500)), "1500ms");
        assert_eq!(grace(Duration::from_secs(3600)), "1h");
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(130_048), "127.0 KiB");
        assert_eq!(bytes(1_300_000), "1.2 MiB");
        assert_eq!(rate(0.2), "0.20");
        assert_eq!(rate(12.34), "12.3");
        assert_eq!(rate(1234.0), "1234");
        assert_eq!(fit("127.0.0.12", 20), "127.0.0.12");
        assert_eq!(fit("api.example-provider.com", 10), "api.examp…");
        assert_eq!(fit("abc", 0), "");
        assert_eq!(percent(3, 12), "25%");
        assert_eq!(percent(12, 12), "100%");
        assert_eq!(percent(1, 40), "2.5%");
        assert_eq!(percent(1, 3000), "<0.1%");
        assert_eq!(percent(0, 3000), "0%");
        assert_eq!(percent(1, 0), "–");
    }
}
