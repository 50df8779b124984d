//! Timestamps as JSON, fast: `#[serde(with = "domain::time::rfc3339")]` writes and reads a
//! `DateTime<Utc>` exactly as chrono's own serde does (RFC 3339, `Z`, the fraction cut to 0,
//! 3, 6 or 9 digits), without going through `fmt`.
//!
//! Why: a replay serializes every order view once per page it changes in, each with up to six
//! timestamps, and chrono's `Serialize` formats through `Display`, `collect_str` and a
//! `Formatter` per field; that was a tenth of a replay's time in the serializer. The
//! fast path covers years 0000 to 9999 without leap seconds; anything else, and any string
//! that is not in the canonical shape, goes to chrono, so the output and what is accepted are
//! chrono's in every case (the tests compare both on random instants).

/// Use as `#[serde(with = "domain::time::rfc3339")]` on a `DateTime<Utc>` field.
pub mod rfc3339 {
    use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Longest canonical form: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
    const MAX: usize = 30;

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; MAX];
        match format(at, &mut buf) {
            Some(text) => serializer.serialize_str(text),
            None => at.serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        match parse(&text) {
            Some(at) => Ok(at),
            None => text
                .parse::<DateTime<chrono::FixedOffset>>()
                .map(|at| at.with_timezone(&Utc))
                .map_err(serde::de::Error::custom),
        }
    }

    /// `at` as chrono's serde writes it, or `None` outside the fast path.
    pub fn format<'b>(at: &DateTime<Utc>, buf: &'b mut [u8; MAX]) -> Option<&'b str> {
        let year = at.year();
        let nanos = at.nanosecond();
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            return None;
        }
        *buf = *b"0000-00-00T00:00:00.000000000Z";
        put(buf, 0, year as u32, 4);
        put(buf, 5, at.month(), 2);
        put(buf, 8, at.day(), 2);
        put(buf, 11, at.hour(), 2);
        put(buf, 14, at.minute(), 2);
        put(buf, 17, at.second(), 2);
        let n = if nanos == 0 {
            19
        } else if nanos.is_multiple_of(1_000_000) {
            put(buf, 20, nanos / 1_000_000, 3);
            23
        } else if nanos.is_multiple_of(1_000) {
            put(buf, 20, nanos / 1_000, 6);
            26
        } else {
            put(buf, 20, nanos, 9);
            29
        };
        buf[n] = b'Z';
        std::str::from_utf8(&buf[..n + 1]).ok()
    }

    /// `value`'s last `width` decimal digits at `buf[at..at + width]`.
    fn put(buf: &mut [u8; MAX], at: usize, mut value: u32, width: usize) {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, or `None` for anything else (chrono then decides).
    pub fn parse(text: &str) -> Option<DateTime<Utc>> {
        let b = text.as_bytes();
        if b.len() < 20 || b[b.len() - 1] != b'Z' {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<u32> {
            b[from..to].iter().try_fold(0u32, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
        };
        if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let nanos = match b.len() {
            20 => 0,
            len if b[19] == b'.' && (22..=30).contains(&len) => {
                let digits = len - 21;
                num(20, len - 1)? * 10u32.pow(9 - digits as u32)
            }
            _ => return None,
        };
        let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?;
        let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
        if second > 59 {
            return None;
        }
        Some(
            date.and_hms_nano_opt(hour, minute, second, nanos)?
                .and_utc(),
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use chrono::TimeZone;

        /// Instants spread over the fast path's range, with each fraction length.
        fn instants() -> impl Iterator<Item = DateTime<Utc>> {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            (0..20_000).map(move |i| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let secs = (seed % 253_402_300_799) as i64 - 62_167_219_200;
                let nanos = match i % 4 {
                    0 => 0,
                    1 => (seed >> 40) as u32 % 1000 * 1_000_000,
                    2 => (seed >> 30) as u32 % 1_000_000 * 1000,
                    _ => (seed >> 20) as u32 % 1_000_000_000,
                };
                Utc.timestamp_opt(secs, nanos).unwrap()
            })
        }

        #[test]
        fn writes_what_chrono_writes_and_reads_it_back() {
            for at in instants() {
                let ours = serde_json::to_string(&Wrap(at)).unwrap();
                assert_eq!(ours, serde_json::to_string(&at).unwrap(), "{at:?}");
                let back: Wrap = serde_json::from_str(&ours).unwrap();
                assert_eq!(back.0, at);
                let theirs: DateTime<Utc> = serde_json::from_str(&ours).unwrap();
                assert_eq!(theirs, at);
            }
        }

        #[test]
        fn other_shapes_and_years_go_to_chrono() {
            for text in [
                "2026-12-01T10:00:00+01:00",
                "2026-12-01T10:00:00.5Z",
                "2026-12-01 10:00:00Z",
                "+12026-12-01T10:00:00Z",
            ] {
                let ours = serde_json::from_str::<Wrap>(&format!("\"{text}\"")).map(|w| w.0);
                let theirs = serde_json::from_str::<DateTime<Utc>>(&format!("\"{text}\""));
                assert_eq!(ours.ok(), theirs.ok(), "{text}");
            }
            let far = Utc.with_ymd_and_hms(12026, 1, 1, 0, 0, 0).unwrap();
            assert_eq!(
                serde_json::to_string(&Wrap(far)).unwrap(),
                serde_json::to_string(&far).unwrap()
            );
        }

        #[test]
        fn refuses_what_chrono_refuses() {
            for text in [
                "2026-02-30T10:00:00Z",
                "2026-12-01T24:00:00Z",
                "2026-12-01T10:00:00.Z",
                "x",
            ] {
                assert!(
                    serde_json::from_str::<Wrap>(&format!("\"{text}\"")).is_err(),
                    "{text}"
                );
            }
        }

        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        struct Wrap(#[serde(with = "super")] DateTime<Utc>);
    }
}
