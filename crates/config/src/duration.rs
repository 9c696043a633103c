//! Go's `time.ParseDuration` syntax, because the NSM deployment manifests users already have are
//! written in it (`50ms`, `1h30m`).

use std::time::Duration;

/// Why a duration did not parse; the caller adds the variable name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationProblem {
    /// Nothing to parse.
    Empty,
    /// A number without a unit (Go accepts a bare `0` only).
    MissingUnit,
    /// A unit other than `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`.
    UnknownUnit(String),
    /// Not of the form `<number><unit>...`.
    Malformed,
    /// A leading `-`: every duration we read is a timeout or an interval.
    Negative,
    /// More than Go's limit of about 292 years.
    Overflow,
}

impl std::fmt::Display for DurationProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::MissingUnit => f.write_str("a unit is missing"),
            Self::UnknownUnit(u) => write!(f, "unknown unit {u:?}"),
            Self::Malformed => f.write_str("it is not <number><unit>..."),
            Self::Negative => f.write_str("it is negative"),
            Self::Overflow => f.write_str("it is too large"),
        }
    }
}

const NANOS_PER: &[(&str, u64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // MICRO SIGN, what Go prints
    ("\u{3bc}s", 1_000), // GREEK SMALL LETTER MU, which Go also accepts
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a duration in Go syntax: one or more `<decimal><unit>` terms (`1h30m`, `1.5h`, `300µs`),
/// or a bare `0`. An optional leading `+` is accepted; a `-` is refused.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationProblem> {
    let mut s = text;
    if s.is_empty() {
        return Err(DurationProblem::Empty);
    }
    if let Some(rest) = s.strip_prefix('-') {
        return if rest == "0" {
            Ok(Duration::ZERO)
        } else {
            Err(DurationProblem::Negative)
        };
    }
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(DurationProblem::Malformed);
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = s.split_at(int_len);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                r.split_at(n)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationProblem::Malformed);
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let (unit, rest) = rest.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationProblem::MissingUnit);
        }
        let per = NANOS_PER
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, n)| u128::from(*n))
            .ok_or_else(|| DurationProblem::UnknownUnit(unit.to_string()))?;
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| DurationProblem::Overflow)?
        };
        let mut nanos = int.checked_mul(per).ok_or(DurationProblem::Overflow)?;
        // Like Go, digits past nanosecond precision are dropped rather than rounded.
        let mut scale: u128 = 1;
        let mut frac: u128 = 0;
        for d in frac_part.bytes().take(30) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        nanos += frac * per / scale;
        total = total.checked_add(nanos).ok_or(DurationProblem::Overflow)?;
        if total > i64::MAX as u128 {
            return Err(DurationProblem::Overflow);
        }
        s = rest;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationProblem::Overflow)?;
    let sub = u32::try_from(total % 1_000_000_000).map_err(|_| DurationProblem::Overflow)?;
    Ok(Duration::new(secs, sub))
}

/// Formats a duration the way Go prints it (`1h30m0s`, `50ms`), for `--help` and logs.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (div, unit) = if nanos < 1_000 {
            (1, "ns")
        } else if nanos < 1_000_000 {
            (1_000, "\u{b5}s")
        } else {
            (1_000_000, "ms")
        };
        return format!("{}{unit}", trim_fraction(nanos, div));
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let sec_part = trim_fraction(
        u128::from(s) * 1_000_000_000 + u128::from(d.subsec_nanos()),
        1_000_000_000,
    );
    if h > 0 {
        format!("{h}h{m}m{sec_part}s")
    } else if m > 0 {
        format!("{m}m{sec_part}s")
    } else {
        format!("{sec_part}s")
    }
}

fn trim_fraction(value: u128, div: u128) -> String {
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn go_examples_parse() {
        assert_eq!(parse_go_duration("50ms"), Ok(ms(50)));
        assert_eq!(parse_go_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_go_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_go_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_go_duration("1.s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("300us"), Ok(Duration::from_micros(300)));
        assert_eq!(
            parse_go_duration("300\u{b5}s"),
            Ok(Duration::from_micros(300))
        );
        assert_eq!(
            parse_go_duration("300\u{3bc}s"),
            Ok(Duration::from_micros(300))
        );
        assert_eq!(parse_go_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(
            parse_go_duration("1h2m3s4ms5us6ns"),
            Ok(Duration::new(3_723, 4_005_006))
        );
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("+5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("-0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_go_duration("0.000000001s"),
            Ok(Duration::from_nanos(1))
        );
        assert_eq!(
            parse_go_duration("0.0000000019s"),
            Ok(Duration::from_nanos(1))
        );
    }

    #[test]
    fn malformed_durations_say_why() {
        assert_eq!(parse_go_duration(""), Err(DurationProblem::Empty));
        assert_eq!(parse_go_duration("30"), Err(DurationProblem::MissingUnit));
        assert_eq!(parse_go_duration("1h30"), Err(DurationProblem::MissingUnit));
        assert_eq!(
            parse_go_duration("5d"),
            Err(DurationProblem::UnknownUnit("d".into()))
        );
        assert_eq!(
            parse_go_duration("5 s"),
            Err(DurationProblem::UnknownUnit(" s".into()))
        );
        assert_eq!(parse_go_duration("s"), Err(DurationProblem::Malformed));
        assert_eq!(parse_go_duration("."), Err(DurationProblem::Malformed));
        assert_eq!(parse_go_duration("+"), Err(DurationProblem::Malformed));
        assert_eq!(parse_go_duration("-5s"), Err(DurationProblem::Negative));
        assert_eq!(
            parse_go_duration("3000000h"),
            Err(DurationProblem::Overflow)
        );
        assert_eq!(
            parse_go_duration("99999999999999999999999999999999999999999h"),
            Err(DurationProblem::Overflow)
        );
    }

    #[test]
    fn formatting_matches_go() {
        assert_eq!(format_go_duration(ms(50)), "50ms");
        assert_eq!(format_go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_go_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(format_go_duration(Duration::from_secs(86_400)), "24h0m0s");
        assert_eq!(format_go_duration(ms(1_500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_micros(300)), "300\u{b5}s");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        for text in ["1h30m0s", "1.5s", "50ms", "7ns", "2m3.004s"] {
            let d = parse_go_duration(text).unwrap();
            assert_eq!(format_go_duration(d), text);
        }
    }
}
