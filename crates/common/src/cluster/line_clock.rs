//! [`LineClock`]: the timestamp at the head of an access line, as `tracing-subscriber`'s
//! `SystemTime` timer writes it (`2026-12-02T07:00:21.200778Z`), for a fraction of the cost.
//!
//! The library turns the clock into a calendar date and writes its seven parts through
//! `core::fmt` on every line: 2,500 of the 9,000 instructions an access line cost under
//! callgrind. The date and time to the second change once a second, so each thread keeps them
//! written out for the second it last saw, and a line copies them and adds its microseconds.

use std::cell::Cell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// `YYYY-MM-DDTHH:MM:SS.`: the part of a timestamp that one second shares.
const HEAD: usize = 20;

thread_local! {
    /// The second last written on this thread, and its head.
    static LAST: Cell<(u64, [u8; HEAD])> = const { Cell::new((u64::MAX, [0; HEAD])) };
}

/// The library's `SystemTime` timer, with each second's date written once per thread.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LineClock;

impl FormatTime for LineClock {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok();
        match now.filter(|d| d.as_secs() < LAST_FOUR_DIGIT_SECOND) {
            Some(d) => write_at(w, d.as_secs(), d.subsec_micros()),
            // Before 1970 or after 9999 the library's sign and width rules apply: its own timer.
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// 10000-01-01T00:00:00Z: from here on the library writes a `+` and a fifth digit.
const LAST_FOUR_DIGIT_SECOND: u64 = 253_402_300_800;

fn write_at(w: &mut impl Write, secs: u64, micros: u32) -> fmt::Result {
    let head = LAST.with(|last| {
        let (seen, head) = last.get();
        if seen == secs {
            return head;
        }
        let head = head_of(secs);
        last.set((secs, head));
        head
    });
    let mut line = [0u8; HEAD + 7];
    line[..HEAD].copy_from_slice(&head);
    let mut n = micros;
    for at in (HEAD..HEAD + 6).rev() {
        line[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    line[HEAD + 6] = b'Z';
    // Only ASCII digits and punctuation were written.
    w.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch, in years 1970 to 9999.
fn head_of(secs: u64) -> [u8; HEAD] {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = date_of_day(days);
    let mut out = *b"0000-00-00T00:00:00.";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rest / 3600);
    put(14, 2, rest % 3600 / 60);
    put(17, 2, rest % 60);
    out
}

/// The calendar date of a day since 1970-01-01, in years 1970 to 9999, by the `time` crate.
fn date_of_day(days: u64) -> (u64, u64, u64) {
    let date = i64::try_from(days * 86_400)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok());
    date.map_or((0, 0, 0), |d| {
        (
            u64::try_from(d.year()).unwrap_or(0),
            u64::from(u8::from(d.month())),
            u64::from(d.day()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u32) -> String {
        let mut s = String::new();
        write_at(&mut s, secs, micros).unwrap();
        s
    }

    #[test]
    fn a_second_is_written_as_its_calendar_date_and_time() {
        // Dates around the leap-year rules, checked against an independent calendar.
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (86_399, 999_999, "1970-01-01T23:59:59.999999Z"),
            (68_169_600, 1, "1972-02-29T00:00:00.000001Z"),
            (951_782_400, 42, "2000-02-29T00:00:00.000042Z"),
            (951_868_799, 0, "2000-02-29T23:59:59.000000Z"),
            (978_307_199, 500_000, "2000-12-31T23:59:59.500000Z"),
            (1_709_164_800, 0, "2024-02-29T00:00:00.000000Z"),
            (1_796_194_821, 200_778, "2026-12-02T07:00:21.200778Z"),
            (4_107_456_000, 0, "2100-02-28T00:00:00.000000Z"),
            (4_107_542_400, 0, "2100-03-01T00:00:00.000000Z"),
            (
                LAST_FOUR_DIGIT_SECOND - 1,
                999_999,
                "9999-12-31T23:59:59.999999Z",
            ),
        ];
        for (secs, micros, want) in cases {
            assert_eq!(at(secs, micros), want, "{secs}");
            // Again, from this thread's cache of the second.
            assert_eq!(at(secs, micros), want, "{secs}, cached");
        }
    }

    #[test]
    fn every_day_to_the_year_9999_follows_the_one_before() {
        let leap = |y: u64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let length = |y: u64, m: u64| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut want = (1970, 1, 1);
        for days in 0..(LAST_FOUR_DIGIT_SECOND / 86_400) {
            assert_eq!(date_of_day(days), want, "day {days}");
            let (y, m, d) = want;
            want = if d < length(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
        assert_eq!(want, (10_000, 1, 1));
    }

    #[test]
    fn the_clock_writes_what_the_librarys_timer_writes() {
        let mut tries = 0;
        loop {
            let (mut ours, mut theirs) = (String::new(), String::new());
            LineClock.format_time(&mut Writer::new(&mut ours)).unwrap();
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut theirs))
                .unwrap();
            assert_eq!(ours.len(), theirs.len(), "{ours} against {theirs}");
            // The two read the clock a moment apart: equal to the second, unless one just
            // ticked over (then read both again).
            if ours[..HEAD - 1] == theirs[..HEAD - 1] {
                assert!(ours <= theirs, "{ours} after {theirs}");
                break;
            }
            tries += 1;
            assert!(tries < 3, "{ours} against {theirs}");
        }
    }
}
