//! Wall-clock time as stored (unix milliseconds) and as shown (RFC 3339 UTC, milliseconds).

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

const RFC3339_MS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Milliseconds since the Unix epoch, UTC: the one time format in the database.
pub fn now_ms() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

/// `2026-11-24T10:15:30.123Z` for a unix-millisecond time; out-of-range input gives the epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(RFC3339_MS)
        .unwrap_or_default()
}

/// Parses exactly the form [`rfc3339_ms`] writes; anything else is `None`.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = time::PrimitiveDateTime::parse(s, RFC3339_MS)
        .ok()?
        .assume_utc();
    let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()?;
    (rfc3339_ms(ms) == s).then_some(ms)
}

/// A point in time as people and scripts write it: any RFC 3339 date-time (with or without
/// fractional seconds, `Z` or an offset), or a bare date (`2026-11-24`, midnight UTC).
pub fn parse_instant(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .or_else(|| {
            time::Date::parse(s, format_description!("[year]-[month]-[day]"))
                .ok()
                .map(|d| d.midnight().assume_utc())
        })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// What [`parse_instant`] accepts, for error messages.
pub const INSTANT_FORMS: &str = "an RFC 3339 time (2026-11-24T10:00:00Z, \
     2026-11-24T10:00:00.000+01:00) or a date (2026-11-24)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_exactly_three_fraction_digits() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339_ms(1_795_000_000_100), "2026-11-18T11:06:40.100Z");
    }

    #[test]
    fn parses_only_its_own_format() {
        assert_eq!(
            parse_rfc3339_ms("2026-11-18T11:06:40.123Z"),
            Some(1_795_000_000_123)
        );
        assert_eq!(parse_rfc3339_ms("2026-11-18T11:06:40Z"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-18T11:06:40.123+01:00"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-18T11:06:40.1234Z"), None);
    }

    #[test]
    fn instants_in_every_rfc_3339_form_and_dates() {
        let t = 1_795_000_000_000;
        for s in [
            "2026-11-18T11:06:40Z",
            "2026-11-18T11:06:40.000Z",
            "2026-11-18T12:06:40+01:00",
            "2026-11-18t11:06:40z",
        ] {
            assert_eq!(parse_instant(s), Some(t), "{s}");
        }
        assert_eq!(parse_instant("2026-11-18"), Some(1_794_960_000_000));
        for bad in ["2026-11-18T11:06:40", "yesterday", "2026-13-01", ""] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }

    #[test]
    fn now_is_after_2025() {
        assert!(now_ms() > 1_735_689_600_000);
    }
}
