//! PM2's small value grammars: durations (`1000`, `"30s"`, `"5m"`), sizes
//! (`"200M"`, `"1G"`) and cron patterns. Pure string → number functions whose
//! errors are sentences a user can act on; they must not know which key or
//! app they are parsing for — the caller adds that.

use croner::parser::{CronParser, Seconds, Year};

/// Parse a duration into milliseconds.
///
/// A bare number is milliseconds, as in PM2. Otherwise one or more
/// `<number><unit>` parts, optionally separated by spaces, with units `ms`,
/// `s`, `m`, `h` or `d` (and their long spellings): `"30s"`, `"1.5s"`,
/// `"1m 30s"`.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("{text:?} is not a duration; write milliseconds (1500) or e.g. 500ms, 30s, 5m, 1h")
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(ms) = t.parse::<u64>() {
        return Ok(ms);
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = rest[num_end..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let scale = match rest[..unit_end].to_ascii_lowercase().as_str() {
            "ms" | "msec" | "msecs" | "millis" | "milliseconds" => 1.0,
            "s" | "sec" | "secs" | "second" | "seconds" => 1e3,
            "m" | "min" | "mins" | "minute" | "minutes" => 60e3,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600e3,
            "d" | "day" | "days" => 86_400e3,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = rest[unit_end..].trim_start();
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(total.round() as u64)
}

/// Parse a size into bytes: a number of bytes, or a number followed by `K`,
/// `M` or `G` (powers of 1024, as in PM2), optionally with a trailing `B`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size; write bytes (1048576) or e.g. 512K, 200M, 1G");
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    if num.is_empty() {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.to_ascii_uppercase();
    let mult: u64 = match unit.strip_suffix('B').unwrap_or(&unit) {
        "" => 1,
        "K" | "KI" => 1 << 10,
        "M" | "MI" => 1 << 20,
        "G" | "GI" => 1 << 30,
        "T" | "TI" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n * mult as f64;
    // TOML integers are i64; a larger limit is meaningless anyway.
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// Validate a cron pattern the way PM2's `croner` reads it and return the
/// pattern slotctl should store: 5 fields, or 6 with seconds first.
/// `@daily`-style nicknames are expanded so that every consumer understands
/// the stored value.
pub fn normalise_cron(pattern: &str) -> Result<String, String> {
    let p = pattern.trim();
    let expanded = match p.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
        "@monthly" => "0 0 1 * *".to_string(),
        "@weekly" => "0 0 * * 0".to_string(),
        "@daily" | "@midnight" => "0 0 * * *".to_string(),
        "@hourly" => "0 * * * *".to_string(),
        _ if p.starts_with('@') => return Err(unknown_nickname(pattern)),
        _ => p.split_whitespace().collect::<Vec<_>>().join(" "),
    };
    let fields = expanded.split(' ').count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "{pattern:?} has {fields} fields; a cron pattern has 5 (minute hour day month weekday) or 6 (seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(&expanded)
        .map_err(|e| format!("{pattern:?} is not a valid cron pattern: {e}"))?;
    Ok(expanded)
}

fn unknown_nickname(pattern: &str) -> String {
    format!("{pattern:?} is not a cron nickname; use @yearly, @monthly, @weekly, @daily or @hourly")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1000", Some(1000)),
            ("0", Some(0)),
            ("250ms", Some(250)),
            ("30s", Some(30_000)),
            ("1.5s", Some(1500)),
            ("5m", Some(300_000)),
            ("2h", Some(7_200_000)),
            ("1m 30s", Some(90_000)),
            ("1h30m", Some(5_400_000)),
            (" 10 s ", Some(10_000)),
            ("1d", Some(86_400_000)),
            ("", None),
            ("soon", None),
            ("5x", None),
            ("-5s", None),
            ("s", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1024", Some(1024)),
            ("200M", Some(200 << 20)),
            ("200m", Some(200 << 20)),
            ("1G", Some(1 << 30)),
            ("1GB", Some(1 << 30)),
            ("512K", Some(512 << 10)),
            ("512kb", Some(512 << 10)),
            ("1.5G", Some(3 << 29)),
            ("2 M", Some(2 << 20)),
            ("M", None),
            ("12X", None),
            ("", None),
            ("-1M", None),
            ("16000000000G", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn cron_patterns() {
        let ok: &[(&str, &str)] = &[
            ("0 4 * * *", "0 4 * * *"),
            ("*/15  * * * *", "*/15 * * * *"),
            ("0 0 4 * * *", "0 0 4 * * *"),
            ("0 3 * * MON-FRI", "0 3 * * MON-FRI"),
            ("@daily", "0 0 * * *"),
            ("@Hourly", "0 * * * *"),
        ];
        for (p, want) in ok {
            assert_eq!(normalise_cron(p).as_deref(), Ok(*want), "{p:?}");
        }
        for p in [
            "",
            "* * * *",
            "0 0 0 1 1 * 2030",
            "61 * * * *",
            "0 25 * * *",
            "every day",
            "@sometimes",
        ] {
            assert!(normalise_cron(p).is_err(), "{p:?} should be refused");
        }
    }
}
