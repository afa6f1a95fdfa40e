//! Next-fire times for a table of schedules and time zones, against values worked out
//! by hand from the zones' rules (not by the crate under test). 2026's transitions:
//!
//! - America/New_York springs forward on Sun 8 March at 07:00 UTC (02:00 EST becomes
//!   03:00 EDT: wall clock 02:00–02:59 does not exist) and falls back on Sun 1 November
//!   at 06:00 UTC (02:00 EDT becomes 01:00 EST: 01:00–01:59 happens twice, first at
//!   UTC-4 from 05:00 UTC, then at UTC-5 from 06:00 UTC).
//! - Europe/Berlin springs forward on Sun 29 March at 01:00 UTC (02:00 CET becomes
//!   03:00 CEST) and falls back on Sun 25 October at 01:00 UTC (03:00 CEST becomes
//!   02:00 CET: 02:00–02:59 happens twice, first at UTC+2 from 00:00 UTC, then at UTC+1
//!   from 01:00 UTC).
//!
//! The rule under test: a skipped wall-clock time fires once at the first instant after
//! the gap; a repeated one fires once, at its first occurrence.

use chrono::{DateTime, Utc};
use sable_core::Schedule;

struct Case {
    schedule: &'static str,
    timezone: &'static str,
    after: &'static str,
    expected: &'static [&'static str],
    why: &'static str,
}

const CASES: &[Case] = &[
    // New York, spring forward.
    Case {
        schedule: "30 2 * * *",
        timezone: "America/New_York",
        after: "2026-03-07T12:00:00Z",
        expected: &["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
        why: "02:30 does not exist on 8 March: fires at 03:00 EDT; the next day at 02:30 EDT",
    },
    Case {
        schedule: "*/30 * * * *",
        timezone: "America/New_York",
        after: "2026-03-08T06:00:00Z",
        expected: &[
            "2026-03-08T06:30:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-08T07:30:00Z",
            "2026-03-08T08:00:00Z",
        ],
        why: "01:30 EST, then 02:00 and 02:30 (skipped) collapse with 03:00 EDT into one fire",
    },
    // New York, fall back.
    Case {
        schedule: "30 1 * * *",
        timezone: "America/New_York",
        after: "2026-10-31T12:00:00Z",
        expected: &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
        why: "01:30 happens twice on 1 November: only the first (EDT) fires",
    },
    Case {
        schedule: "0 * * * *",
        timezone: "America/New_York",
        after: "2026-11-01T03:30:00Z",
        expected: &[
            "2026-11-01T04:00:00Z",
            "2026-11-01T05:00:00Z",
            "2026-11-01T07:00:00Z",
            "2026-11-01T08:00:00Z",
        ],
        why: "00:00 EDT, 01:00 EDT, (01:00 EST is a repeat), 02:00 EST, 03:00 EST",
    },
    Case {
        schedule: "@weekly",
        timezone: "America/New_York",
        after: "2026-03-04T00:00:00Z",
        expected: &["2026-03-08T05:00:00Z", "2026-03-15T04:00:00Z"],
        why: "Sunday midnight, before (EST) and after (EDT) the change",
    },
    // Berlin, spring forward.
    Case {
        schedule: "30 2 * * *",
        timezone: "Europe/Berlin",
        after: "2026-03-28T12:00:00Z",
        expected: &["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
        why: "02:30 does not exist on 29 March: fires at 03:00 CEST; the next day at 02:30 CEST",
    },
    // Berlin, fall back.
    Case {
        schedule: "30 2 * * *",
        timezone: "Europe/Berlin",
        after: "2026-10-24T12:00:00Z",
        expected: &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
        why: "02:30 happens twice on 25 October: only the first (CEST) fires",
    },
    Case {
        schedule: "*/20 2 * * *",
        timezone: "Europe/Berlin",
        after: "2026-10-25T00:00:00Z",
        expected: &[
            "2026-10-25T00:20:00Z",
            "2026-10-25T00:40:00Z",
            "2026-10-26T01:00:00Z",
        ],
        why: "02:20 and 02:40 CEST fire; the repeated hour's second pass (CET) fires nothing",
    },
    Case {
        schedule: "@monthly",
        timezone: "Europe/Berlin",
        after: "2026-02-15T00:00:00Z",
        expected: &["2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z"],
        why: "midnight of the 1st, at UTC+1 in March and UTC+2 in April",
    },
    // The dialect.
    Case {
        schedule: "15 0 9 * * MON-FRI",
        timezone: "Europe/Berlin",
        after: "2026-01-02T00:00:00Z",
        expected: &["2026-01-02T08:00:15Z", "2026-01-05T08:00:15Z"],
        why: "six fields, seconds first; Friday 2 January, then Monday 5 January",
    },
    Case {
        schedule: "0 9,17 * JAN,JUL SUN",
        timezone: "UTC",
        after: "2026-06-30T00:00:00Z",
        expected: &[
            "2026-07-05T09:00:00Z",
            "2026-07-05T17:00:00Z",
            "2026-07-12T09:00:00Z",
        ],
        why: "lists and names: Sundays of July 2026 are the 5th, 12th, …",
    },
    Case {
        schedule: "*/15 9-17/4 * * *",
        timezone: "UTC",
        after: "2026-01-01T17:40:00Z",
        expected: &[
            "2026-01-01T17:45:00Z",
            "2026-01-02T09:00:00Z",
            "2026-01-02T09:15:00Z",
        ],
        why: "a stepped range of hours is 9, 13 and 17",
    },
    Case {
        schedule: "0 0 1-7 * 1",
        timezone: "UTC",
        after: "2026-02-08T00:00:00Z",
        expected: &[
            "2026-02-09T00:00:00Z",
            "2026-02-16T00:00:00Z",
            "2026-02-23T00:00:00Z",
            "2026-03-01T00:00:00Z",
            "2026-03-02T00:00:00Z",
        ],
        why: "day-of-month and day-of-week both restricted: either matches (Vixie cron)",
    },
    Case {
        schedule: "@yearly",
        timezone: "UTC",
        after: "2026-05-05T00:00:00Z",
        expected: &["2027-01-01T00:00:00Z"],
        why: "1 January at midnight",
    },
    Case {
        schedule: "@daily",
        timezone: "Asia/Kolkata",
        after: "2026-01-01T00:00:00Z",
        expected: &["2026-01-01T18:30:00Z"],
        why: "midnight at UTC+5:30",
    },
    Case {
        schedule: "@hourly",
        timezone: "UTC",
        after: "2026-01-01T00:59:59Z",
        expected: &["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"],
        why: "the top of each hour",
    },
    Case {
        schedule: "@at 2026-03-08T02:30:00-05:00",
        timezone: "America/New_York",
        after: "2026-03-01T00:00:00Z",
        expected: &["2026-03-08T07:30:00Z"],
        why: "a one-shot fires once, at its absolute instant",
    },
];

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("{text}: {error}"))
        .with_timezone(&Utc)
}

#[test]
fn next_fires_match_the_hand_computed_table() {
    let mut failures = Vec::new();
    for case in CASES {
        let schedule = Schedule::parse(case.schedule, case.timezone)
            .unwrap_or_else(|error| panic!("{}: {error}", case.schedule));
        let after = utc(case.after);
        let fires = schedule.upcoming(after, after, case.expected.len());
        let expected: Vec<DateTime<Utc>> = case.expected.iter().map(|text| utc(text)).collect();
        if fires != expected {
            failures.push(format!(
                "{} in {} after {}: got {fires:?}, expected {expected:?} ({})",
                case.schedule, case.timezone, case.after, case.why
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(CASES.len(), 17, "every row of the table ran");
}

#[test]
fn a_one_shot_fires_once() {
    let schedule = Schedule::parse("@at 2026-03-08T02:30:00-05:00", "UTC").unwrap();
    let after = utc("2026-03-01T00:00:00Z");
    assert_eq!(
        schedule.upcoming(after, after, 5),
        [utc("2026-03-08T07:30:00Z")]
    );
}

#[test]
fn fire_times_are_shown_with_the_zones_offset() {
    let schedule = Schedule::parse("30 1 * * *", "America/New_York").unwrap();
    assert_eq!(
        schedule.local_rfc3339(utc("2026-11-01T05:30:00Z")),
        "2026-11-01T01:30:00-04:00"
    );
}
