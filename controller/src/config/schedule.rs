//! `MIN_IDLE_SCHEDULE`: when warm pools are kept, as a five-field cron expression in UTC
//! (`minute hour day-of-month month day-of-week`, e.g. `* 8-17 * * 1-5` for working hours).
//!
//! A schedule here is a *window*, not a trigger: the pool is kept during every minute the
//! expression matches. That needs only "does this minute match", which is why this is a small
//! matcher over the standard syntax (`*`, `a`, `a-b`, `*/n`, `a-b/n`, lists with `,`, month and
//! weekday names, `7` for Sunday) rather than a scheduling crate (those compute next fire times
//! and bring a calendar library with them). As in Vixie cron, when both day fields are
//! restricted a day matches if either does.

use std::fmt;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// As written, for `/status` and `check-config`.
    source: String,
    minutes: u64,
    hours: u32,
    /// Bits 1–31.
    days: u32,
    /// Bits 1–12.
    months: u16,
    /// Bits 0–6, Sunday = 0.
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Parses five whitespace-separated fields; the error says which field is wrong and why.
    pub fn parse(source: &str) -> Result<Self, String> {
        let fields: Vec<&str> = source.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{source:?} has {} field(s); a schedule has 5: minute hour day-of-month month \
                 day-of-week (UTC), e.g. \"* 8-17 * * 1-5\"",
                fields.len()
            ));
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let days = field(fields[2], "day-of-month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTHS)?;
        // 7 is Sunday too.
        let mut weekdays = field(fields[4], "day-of-week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        Ok(Self {
            source: fields.join(" "),
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            days_restricted: !fields[2].starts_with('*'),
            weekdays_restricted: !fields[4].starts_with('*'),
        })
    }

    /// Whether the minute containing `unix_ms` (UTC) matches.
    pub fn matches(&self, unix_ms: i64) -> bool {
        let secs = unix_ms.div_euclid(1000);
        let days_since_epoch = secs.div_euclid(86_400);
        let in_day = secs.rem_euclid(86_400);
        let (minute, hour) = ((in_day / 60) % 60, in_day / 3600);
        let (_, month, day) = civil_from_days(days_since_epoch);
        // 1970-01-01 was a Thursday.
        let weekday = (days_since_epoch + 4).rem_euclid(7);
        let day_ok = self.days & (1 << day) != 0;
        let weekday_ok = self.weekdays & (1 << weekday) != 0;
        let date_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day_ok || weekday_ok,
            _ => day_ok && weekday_ok,
        };
        self.minutes & (1 << minute) != 0
            && self.hours & (1 << hour) != 0
            && self.months & (1 << month) != 0
            && date_ok
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// One field as a bit set over `min..=max`.
fn field(text: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            // Months are named from 1, weekdays from 0.
            return Ok(i as u32 + min);
        }
        match v.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "{name} {v:?} is not a number from {min} to {max}{}",
                if names.is_empty() { "" } else { " or a name" }
            )),
        }
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => match s.parse::<u32>() {
                Ok(n) if n > 0 => (r, n),
                _ => {
                    return Err(format!(
                        "{name} step {s:?} is not a whole number of at least 1"
                    ));
                }
            },
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `5/15` means from 5 to the end, every 15.
            (v, if step > 1 { max } else { v })
        };
        if lo > hi {
            return Err(format!("{name} range {range:?} runs backwards"));
        }
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

/// Days since 1970-01-01 to (year, month 1–12, day 1–31), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC date and time.
    fn at(y: i32, mo: u8, d: u8, h: u8, mi: u8) -> i64 {
        let date =
            time::Date::from_calendar_date(y, time::Month::try_from(mo).unwrap(), d).unwrap();
        let t = time::PrimitiveDateTime::new(date, time::Time::from_hms(h, mi, 0).unwrap());
        t.assume_utc().unix_timestamp() * 1000
    }

    #[test]
    fn working_hours_match_weekdays_from_8_to_17_utc() {
        let s = Schedule::parse("* 8-17 * * 1-5").unwrap();
        // 2026-12-02 is a Wednesday.
        let table = [
            (at(2026, 12, 2, 8, 0), true),
            (at(2026, 12, 2, 17, 59), true),
            (at(2026, 12, 2, 18, 0), false),
            (at(2026, 12, 2, 7, 59), false),
            (at(2026, 12, 5, 10, 0), false), // Saturday
            (at(2026, 12, 6, 10, 0), false), // Sunday
            (at(2026, 12, 7, 10, 0), true),  // Monday
        ];
        for (ms, want) in table {
            assert_eq!(s.matches(ms), want, "{ms}");
        }
    }

    #[test]
    fn steps_lists_names_and_sunday_as_7() {
        let s = Schedule::parse("*/15 0,12 * jan-mar sun").unwrap();
        assert!(s.matches(at(2027, 1, 3, 12, 30))); // a Sunday in January
        assert!(!s.matches(at(2027, 1, 3, 12, 31)));
        assert!(!s.matches(at(2027, 4, 4, 12, 30))); // April
        let seven = Schedule::parse("0 0 * * 7").unwrap();
        assert!(seven.matches(at(2027, 1, 3, 0, 0)));
        assert!(!seven.matches(at(2027, 1, 4, 0, 0)));
        let from = Schedule::parse("5/20 * * * *").unwrap();
        assert!(from.matches(at(2027, 1, 4, 3, 25)));
        assert!(!from.matches(at(2027, 1, 4, 3, 0)));
    }

    #[test]
    fn both_day_fields_restricted_match_either_as_cron_does() {
        // The 1st of the month or any Monday.
        let s = Schedule::parse("0 9 1 * mon").unwrap();
        assert!(s.matches(at(2027, 2, 1, 9, 0))); // a Monday and the 1st
        assert!(s.matches(at(2027, 3, 1, 9, 0))); // the 1st, a Monday
        assert!(s.matches(at(2027, 3, 8, 9, 0))); // a Monday
        assert!(!s.matches(at(2027, 3, 9, 9, 0))); // neither
        // Leap day, end of year.
        assert!(
            Schedule::parse("* * 29 2 *")
                .unwrap()
                .matches(at(2028, 2, 29, 1, 1))
        );
        assert!(
            Schedule::parse("59 23 31 12 *")
                .unwrap()
                .matches(at(2026, 12, 31, 23, 59))
        );
    }

    #[test]
    fn bad_schedules_say_which_field_is_wrong() {
        for (bad, says) in [
            ("* * * *", "4 field(s)"),
            ("60 * * * *", "minute \"60\""),
            ("* 24 * * *", "hour \"24\""),
            ("* * 0 * *", "day-of-month \"0\""),
            ("* * * 13 *", "month \"13\""),
            ("* * * * 8", "day-of-week \"8\""),
            ("*/0 * * * *", "step \"0\""),
            ("* 18-8 * * *", "runs backwards"),
            ("* * * * funday", "day-of-week \"funday\""),
        ] {
            let err = Schedule::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
