//! Times given on the command line: milliseconds since the epoch, or an ISO 8601 date-time.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str, what: &str, range: std::ops::RangeInclusive<i64>) -> Result<i64, String> {
    let v: i64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number ({what})"))?;
    if !range.contains(&v) {
        return Err(format!("{what} {v} is out of range"));
    }
    Ok(v)
}

/// Milliseconds since the epoch of `s`: a plain integer is taken as milliseconds; otherwise
/// `YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|+HH:MM|-HH:MM]`, UTC when no zone is given.
pub fn parse_millis(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || {
        format!("'{s}' is not milliseconds since the epoch or YYYY-MM-DDTHH:MM:SS[.mmm][Z|+HH:MM]")
    };
    let (date, rest) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    let mut d = date.split('-');
    let (Some(y), Some(mo), Some(da), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let y = num(y, "year", 1970..=9999)?;
    let mo = num(mo, "month", 1..=12)?;
    let da = num(da, "day", 1..=31)?;
    // Zone: a trailing Z, or +HH:MM / -HH:MM after the time.
    let (time, offset_min) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, z) = rest.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let z = &z[1..];
        let (zh, zm) = z.split_once(':').unwrap_or((z, "0"));
        (
            t,
            sign * (num(zh, "zone hours", 0..=23)? * 60 + num(zm, "zone minutes", 0..=59)?),
        )
    } else {
        (rest, 0)
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut parts = hms.split(':');
    let h = parts.next().filter(|p| !p.is_empty()).unwrap_or("0");
    let mi = parts.next().unwrap_or("0");
    let se = parts.next().unwrap_or("0");
    if parts.next().is_some() {
        return Err(bad());
    }
    let h = num(h, "hour", 0..=23)?;
    let mi = num(mi, "minute", 0..=59)?;
    let se = num(se, "second", 0..=60)?;
    let ms = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        num(&digits, "fraction", 0..=999)?
    };
    let days = days_from_civil(y, mo, da);
    Ok((((days * 24 + h) * 60 + mi) * 60 + se) * 1000 + ms - offset_min * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times() {
        assert_eq!(parse_millis("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_millis("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_millis("2023-11-14T22:13:20.123Z"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(
            parse_millis("2023-11-14T22:13:20.123"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(
            parse_millis("2023-11-15T00:13:20.123+02:00"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(
            parse_millis("2023-11-14T21:13:20.123-01:00"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(parse_millis("2023-11-14"), Ok(1_699_920_000_000));
        assert!(parse_millis("yesterday").is_err());
        assert!(parse_millis("2023-13-01").is_err());
    }
}
