//! Human-friendly duration parsing for command-line flags.
//!
//! Flags such as `--latency 50ms` or `--stall-after 2s` must say what unit they
//! mean: a bare `50` is ambiguous (milliseconds? seconds?) and is a classic
//! source of benchmarks that quietly measure the wrong thing, so it is rejected
//! with a message that suggests the fix. The grammar is deliberately small and
//! has no dependencies: one or more `<integer><unit>` parts, summed.

use std::time::Duration;

use anyhow::{Context as _, bail};

/// The units [`parse_duration`] accepts, for error messages.
const UNITS: &str = "h, m, s, ms, us, ns";

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h` or `1m30s`.
///
/// The input is one or more parts, each an unsigned integer immediately
/// followed by a unit: `h` (hours), `m` (minutes), `s` (seconds), `ms`
/// (milliseconds), `us` or `µs` (microseconds), `ns` (nanoseconds). Parts are
/// added together, so `1m30s` is 90 seconds. Leading and trailing whitespace
/// is ignored; whitespace inside is not allowed.
///
/// # Errors
///
/// Returns an error, never panics, for an empty string, a plain number without
/// a unit (`"50"`), a part without a unit (`"1m30"`), an unknown unit
/// (`"5d"`), fractions or signs (`"1.5s"`, `"-1s"`), or a total that overflows
/// [`Duration`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use fusi_testnet::parse_duration;
///
/// assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert!(parse_duration("500").is_err());
/// ```
pub fn parse_duration(input: &str) -> anyhow::Result<Duration> {
    let s = input.trim();
    if s.is_empty() {
        bail!("empty duration: expected e.g. 500ms, 30s, 5m, 1h or 1m30s");
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        bail!("duration `{s}` has no unit: write e.g. `{s}ms` or `{s}s` (units: {UNITS})");
    }

    let mut rest = s;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            bail!(
                "invalid duration `{s}`: expected a whole number at `{rest}` \
                 (e.g. 500ms, 30s, 1m30s)"
            );
        }
        let number: u64 = rest[..digits_end]
            .parse()
            .with_context(|| format!("invalid duration `{s}`: number too large"))?;
        rest = &rest[digits_end..];

        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        let part = match unit {
            "" => bail!("invalid duration `{s}`: `{number}` has no unit (units: {UNITS})"),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "s" => Some(Duration::from_secs(number)),
            "ms" => Some(Duration::from_millis(number)),
            "us" | "µs" => Some(Duration::from_micros(number)),
            "ns" => Some(Duration::from_nanos(number)),
            other => bail!("invalid duration `{s}`: unknown unit `{other}` (units: {UNITS})"),
        };
        total = part
            .and_then(|part| total.checked_add(part))
            .with_context(|| format!("invalid duration `{s}`: too large"))?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        match parse_duration(s) {
            Ok(d) => d,
            Err(e) => panic!("`{s}` should parse: {e:#}"),
        }
    }

    fn err(s: &str) -> String {
        match parse_duration(s) {
            Ok(d) => panic!("`{s}` should be rejected, got {d:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn single_units() {
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("250µs"), Duration::from_micros(250));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("0s"), Duration::ZERO);
    }

    #[test]
    fn compound_and_whitespace() {
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1h2m3s4ms"), Duration::from_millis(3_723_004));
        assert_eq!(ok("  2s\n"), Duration::from_secs(2));
    }

    #[test]
    fn plain_numbers_are_rejected_with_a_hint() {
        let msg = err("500");
        assert!(msg.contains("no unit"), "{msg}");
        assert!(msg.contains("500ms"), "{msg}");
        assert!(err("0").contains("no unit"));
    }

    #[test]
    fn malformed_inputs_are_rejected() {
        assert!(err("").contains("empty"));
        assert!(err("   ").contains("empty"));
        assert!(err("1m30").contains("no unit"));
        assert!(err("5d").contains("unknown unit"));
        assert!(err("ms").contains("whole number"));
        assert!(err("-1s").contains("whole number"));
        assert!(err("1.5s").contains("unknown unit"));
        assert!(err("1 s").contains("unknown unit"));
        assert!(err("1S").contains("unknown unit"));
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        assert!(err("99999999999999999999999s").contains("too large"));
        assert!(err("18446744073709551615h").contains("too large"));
        assert!(err("18446744073709551615s1s").contains("too large"));
    }
}
