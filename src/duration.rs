//! Go-style durations (`2m`, `30s`, `1h30m`, `500ms`), as upstream's flags
//! and parameters use them.

use std::time::Duration;

/// Parses a Go duration with units `ms`, `s`, `m`, `h` (fractions allowed:
/// `1.5h`). Zero and negative durations are refused.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: write e.g. 30s, 2m or 1h30m");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let (seconds, tail) = if let Some(t) = tail.strip_prefix("ms") {
            (value / 1000.0, t)
        } else if let Some(t) = tail.strip_prefix('s') {
            (value, t)
        } else if let Some(t) = tail.strip_prefix('m') {
            (value * 60.0, t)
        } else if let Some(t) = tail.strip_prefix('h') {
            (value * 3600.0, t)
        } else {
            return Err(bad());
        };
        total += seconds;
        rest = tail;
    }
    if total <= 0.0 || total.is_nan() {
        return Err(format!("{text:?} must be longer than zero"));
    }
    // `from_secs_f64` panics past u64::MAX seconds.
    Duration::try_from_secs_f64(total)
        .map_err(|_| format!("{text:?} is too long: write e.g. 30s, 2m or 1h30m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "2", "m", "2d", "-1m", "0s", "1m2"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("2x").unwrap_err().contains("30s"));
        // Past u64::MAX seconds: an error, not a panic.
        for huge in [
            "100000000000000000000h".to_owned(),
            format!("{}s", "9".repeat(400)),
        ] {
            assert!(parse(&huge).unwrap_err().contains("too long"), "{huge}");
        }
    }
}
