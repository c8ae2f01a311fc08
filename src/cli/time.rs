//! Times given on the command line: milliseconds since the epoch, or an ISO 8601 date-time.
//!
//! Date-times are parsed by `jiff` (RFC 3339 / ISO 8601 as Temporal reads them), which checks
//! the calendar: `2024-02-31` is an error, not 2 March. Kafka's
//! `kafka-consumer-groups --to-datetime` takes `YYYY-MM-DDTHH:mm:SS.sss` with an optional zone
//! offset; every such string is accepted here too. Without a zone the time is UTC, not the
//! local time Kafka would use: a tool run on a server should not mean different instants
//! depending on the machine's `TZ`.

use jiff::Timestamp;
use jiff::fmt::temporal::Pieces;
use jiff::tz::Offset;

/// Milliseconds since the epoch of `s`: a plain integer is taken as milliseconds; otherwise
/// `YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|+HH:MM|-HH:MM]`, UTC when no zone is given.
///
/// Times before 1970 are refused: a negative timestamp means "latest" (-1) or "earliest" (-2)
/// to ListOffsets, so passing one on would silently mean something else.
pub fn parse_millis(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let ms = match s.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => parse_datetime(s)?,
    };
    if ms < 0 {
        return Err(format!("'{s}' is before 1970-01-01T00:00:00Z"));
    }
    Ok(ms)
}

fn parse_datetime(s: &str) -> Result<i64, String> {
    let bad = |why: &dyn std::fmt::Display| {
        format!(
            "'{s}' is not milliseconds since the epoch or a date-time \
             YYYY-MM-DDTHH:MM:SS[.mmm][Z|+HH:MM]: {why}"
        )
    };
    let pieces = Pieces::parse(s).map_err(|e| bad(&e))?;
    // A bracketed zone name (`[Europe/Paris]`) would need the tz database to mean anything,
    // and Kafka does not take one either; refuse it rather than ignore it.
    if pieces.time_zone_annotation().is_some() {
        return Err(bad(
            &"a time zone name in brackets is not supported, give an offset",
        ));
    }
    let offset = pieces
        .offset()
        .map_or(Offset::UTC, |o| o.to_numeric_offset());
    let civil = pieces.date().to_datetime(pieces.time().unwrap_or_default());
    let ts: Timestamp = offset.to_timestamp(civil).map_err(|e| bad(&e))?;
    Ok(ts.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ok(ms) for accepted input; Err(part of the message) for rejected input.
    fn check(input: &str, expected: Result<i64, &str>) {
        let got = parse_millis(input);
        match (&got, expected) {
            (Ok(g), Ok(e)) => assert_eq!(*g, e, "{input}"),
            (Err(g), Err(e)) => assert!(g.contains(e), "{input}: '{g}' lacks '{e}'"),
            _ => panic!("{input}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn epoch_millis() {
        check("1700000000123", Ok(1_700_000_000_123));
        check(" 0 ", Ok(0));
        check("-1", Err("before 1970"));
    }

    #[test]
    fn kafka_datetime_forms() {
        // Kafka's own format, with and without zone.
        check("2023-11-14T22:13:20.123", Ok(1_700_000_000_123));
        check("2023-11-14T22:13:20.123Z", Ok(1_700_000_000_123));
        check("2023-11-14T22:13:20.123+00:00", Ok(1_700_000_000_123));
        check("2023-11-15T00:13:20.123+02:00", Ok(1_700_000_000_123));
        check("2023-11-14T21:13:20.123-01:00", Ok(1_700_000_000_123));
        check("2023-11-15T03:43:20.123+05:30", Ok(1_700_000_000_123));
        check("2023-11-14T22:13:20Z", Ok(1_700_000_000_000));
        check("2023-11-14T22:13Z", Ok(1_699_999_980_000));
        check("2023-11-14 22:13:20.123", Ok(1_700_000_000_123));
        check("1970-01-01T00:00:00Z", Ok(0));
        check("2023-11-14", Ok(1_699_920_000_000));
    }

    #[test]
    fn calendar_is_checked() {
        check("2024-02-29T00:00:00Z", Ok(1_709_164_800_000));
        check("2024-02-31", Err("2024-02-31"));
        check("2024-02-31T00:00:00Z", Err("2024-02-31"));
        check("2023-02-29T12:00:00", Err("2023-02-29"));
        check("2023-04-31", Err("2023-04-31"));
        check("2023-13-01", Err("2023-13-01"));
        check("2023-11-14T24:00:00", Err("2023-11-14T24"));
        check("2023-11-14T22:61:00", Err("22:61"));
    }

    #[test]
    fn garbage_is_refused() {
        check("yesterday", Err("not milliseconds since the epoch"));
        check("", Err("not milliseconds since the epoch"));
        check("2023-11-14T22:13:20[Europe/Paris]", Err("time zone name"));
        check("1969-12-31T23:59:59.999Z", Err("before 1970"));
    }
}
