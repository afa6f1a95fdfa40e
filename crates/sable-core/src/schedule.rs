//! Cron task schedules: parsing every accepted form and computing the next fire time,
//! with Sable's daylight-saving rule.
//!
//! Accepted: 5-field cron (minute hour day-of-month month day-of-week; ranges, lists,
//! steps, month and weekday names), 6 fields with seconds first, `@yearly` (`@annually`)
//! `@monthly` `@weekly` `@daily` (`@midnight`) `@hourly`, `@every <duration>` (humantime:
//! `90s`, `5m`, `1h30m`; at least one second) and the one-shot `@at <RFC 3339 time>`.
//! The cron fields are matched by `croner` against the *wall clock* of the task's time
//! zone; turning a wall-clock match into an instant is done here:
//!
//! - a wall-clock time skipped by a daylight-saving change (spring forward) fires once,
//!   at the first instant after the gap (every match inside one gap collapses into it);
//! - a wall-clock time repeated by a change (fall back) fires once, at its first
//!   occurrence (the earlier offset); the repeated hour's second pass fires nothing.
//!
//! `@every` and `@at` are absolute: time zones do not change them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::CronTaskId;
use crate::input::InputError;

/// How often a skipped or repeated wall-clock time may be stepped over in one search
/// (an every-second task crossing a repeated hour steps 3600 times).
const MAX_WALL_CLOCK_STEPS: usize = 100_000;

/// The names of the fields of a 5-field expression; a 6-field one has `second` first.
const FIELD_NAMES: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

/// What happens to occurrences that came due while no leader ran (found later than the
/// service's misfire grace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Drop them; the next on-time occurrence fires as usual.
    #[default]
    Skip,
    /// Fire the latest missed occurrence once, late; drop the others.
    RunOnce,
}

impl MisfirePolicy {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::RunOnce => "run_once",
        }
    }

    pub fn parse(value: &str) -> Result<Self, InputError> {
        match value {
            "skip" => Ok(Self::Skip),
            "run_once" => Ok(Self::RunOnce),
            other => Err(InputError::new(
                "misfire",
                format!("'{other}' is not one of skip, run_once"),
            )),
        }
    }
}

/// A parsed schedule in its time zone.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    timezone: Tz,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Cron(Box<Cron>),
    Every(TimeDelta),
    At(DateTime<Utc>),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("expression", &self.expression)
            .field("timezone", &self.timezone.name())
            .finish()
    }
}

impl Schedule {
    /// Parses `expression` in the IANA zone `timezone`. Errors name the faulty part
    /// (`schedule` or `timezone`, and for cron the field).
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, InputError> {
        let timezone = Tz::from_str(timezone).map_err(|_| {
            InputError::new(
                "timezone",
                format!("'{timezone}' is not an IANA time zone (e.g. UTC, Europe/Berlin)"),
            )
        })?;
        let expression = expression.trim().to_owned();
        let kind = parse_kind(&expression)?;
        Ok(Self {
            expression,
            timezone,
            kind,
        })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> &str {
        self.timezone.name()
    }

    /// True for `@at`: the task fires once and never again.
    pub fn is_one_shot(&self) -> bool {
        matches!(self.kind, Kind::At(_))
    }

    /// The first fire time strictly after `after`; `None` when there is none (an `@at`
    /// in the past, a pattern that matches no date). `anchor` is where `@every` counts
    /// from (the task's creation); cron and `@at` ignore it.
    pub fn next_after(&self, after: DateTime<Utc>, anchor: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron(cron) => next_cron(cron, self.timezone, after),
            Kind::Every(interval) => next_every(*interval, after, anchor),
            Kind::At(at) => (*at > after).then_some(*at),
        }
    }

    /// Up to `count` fire times after `after`, in order.
    pub fn upcoming(
        &self,
        after: DateTime<Utc>,
        anchor: DateTime<Utc>,
        count: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut fires = Vec::with_capacity(count);
        let mut cursor = after;
        while fires.len() < count {
            let Some(next) = self.next_after(cursor, anchor) else {
                break;
            };
            fires.push(next);
            cursor = next;
        }
        fires
    }

    /// The first fire time after `now`, or why a new task with this schedule would
    /// never fire (an `@at` in the past, a pattern matching no date).
    pub fn first_fire_after(
        &self,
        now: DateTime<Utc>,
        anchor: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, InputError> {
        self.next_after(now, anchor).ok_or_else(|| {
            let reason = match &self.kind {
                Kind::At(at) => format!("@at {} is in the past", rfc3339(*at)),
                _ => format!("'{}' never fires", self.expression),
            };
            InputError::new("schedule", reason)
        })
    }

    /// A fire time in the task's time zone, RFC 3339 with its offset.
    pub fn local_rfc3339(&self, time: DateTime<Utc>) -> String {
        time.with_timezone(&self.timezone).to_rfc3339()
    }
}

/// The idempotency key of one occurrence: `cron:<task id>:<scheduled time, RFC 3339 UTC>`.
/// Every replica computes the same key for the same occurrence, so it makes one turn.
pub fn cron_idempotency_key(task_id: CronTaskId, scheduled: DateTime<Utc>) -> String {
    format!("cron:{task_id}:{}", rfc3339(scheduled))
}

/// Whole-second RFC 3339 in UTC (`2026-03-08T07:00:00Z`).
fn rfc3339(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn parse_kind(expression: &str) -> Result<Kind, InputError> {
    if expression.is_empty() {
        return Err(InputError::new("schedule", "must not be empty"));
    }
    if let Some(rest) = expression.strip_prefix("@every") {
        return parse_every(rest.trim()).map(Kind::Every);
    }
    if let Some(rest) = expression.strip_prefix("@at") {
        return parse_at(rest.trim()).map(Kind::At);
    }
    let pattern = match expression.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *".to_owned(),
        "@monthly" => "0 0 1 * *".to_owned(),
        "@weekly" => "0 0 * * 0".to_owned(),
        "@daily" | "@midnight" => "0 0 * * *".to_owned(),
        "@hourly" => "0 * * * *".to_owned(),
        macro_name if macro_name.starts_with('@') => {
            return Err(InputError::new(
                "schedule",
                format!(
                    "unknown macro '{expression}'; use @yearly, @monthly, @weekly, @daily, @hourly, @every <duration> or @at <RFC 3339 time>"
                ),
            ));
        }
        _ => expression.to_owned(),
    };
    parse_cron(&pattern).map(|cron| Kind::Cron(Box::new(cron)))
}

fn parse_every(text: &str) -> Result<TimeDelta, InputError> {
    let refuse = |reason: String| InputError::new("schedule", reason);
    let interval = humantime::parse_duration(text).map_err(|error| {
        refuse(format!(
            "@every '{text}': {error} (write a duration such as 90s, 5m or 1h30m)"
        ))
    })?;
    if interval < Duration::from_secs(1) || interval.subsec_nanos() != 0 {
        return Err(refuse(format!(
            "@every '{text}': must be a whole number of seconds, at least 1s"
        )));
    }
    TimeDelta::from_std(interval).map_err(|_| refuse(format!("@every '{text}': too long")))
}

fn parse_at(text: &str) -> Result<DateTime<Utc>, InputError> {
    let at = DateTime::parse_from_rfc3339(text).map_err(|error| {
        InputError::new(
            "schedule",
            format!(
                "@at '{text}': {error} (write an RFC 3339 time such as 2030-01-31T09:00:00+01:00)"
            ),
        )
    })?;
    let at = at.with_timezone(&Utc);
    Ok(at.with_nanosecond(0).unwrap_or(at))
}

fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Parses a 5- or 6-field pattern; on failure, finds the first field that is wrong on
/// its own so the message can point at it.
fn parse_cron(pattern: &str) -> Result<Cron, InputError> {
    let fields: Vec<&str> = pattern.split_whitespace().collect();
    let names: Vec<&str> = match fields.len() {
        5 => FIELD_NAMES.to_vec(),
        6 => std::iter::once("second").chain(FIELD_NAMES).collect(),
        count => {
            return Err(InputError::new(
                "schedule",
                format!(
                    "'{pattern}' has {count} fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (second first), or a macro such as @daily"
                ),
            ));
        }
    };
    cron_parser().parse(pattern).map_err(|error| {
        let faulty = (0..fields.len()).find_map(|index| {
            let alone: Vec<&str> = (0..fields.len())
                .map(|other| if other == index { fields[index] } else { "*" })
                .collect();
            cron_parser()
                .parse(&alone.join(" "))
                .err()
                .map(|error| (index, error))
        });
        let reason = match faulty {
            Some((index, error)) => format!(
                "field {} ({}) '{}' is invalid: {error}",
                index + 1,
                names[index],
                fields[index]
            ),
            None => format!("'{pattern}' is invalid: {error}"),
        };
        InputError::new("schedule", reason)
    })
}

/// The next instant after `after` whose wall-clock time in `timezone` the pattern
/// matches, under the daylight-saving rule of this module.
fn next_cron(cron: &Cron, timezone: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let local = after.with_timezone(&timezone).naive_local();
    // croner searches whole seconds; it matches the wall clock as if it were UTC, which
    // has no daylight-saving changes, and the mapping back to instants happens here.
    let mut wall = local.with_nanosecond(0).unwrap_or(local);
    for _ in 0..MAX_WALL_CLOCK_STEPS {
        let matched = cron
            .find_next_occurrence(&Utc.from_utc_datetime(&wall), false)
            .ok()?
            .naive_utc();
        let instant = instant_of_wall_clock(timezone, matched)?;
        // In a repeated hour's second pass the earlier occurrences have already passed.
        if instant > after {
            return Some(instant);
        }
        wall = matched;
    }
    None
}

/// A wall-clock time as an instant: the earlier one when it is repeated, the first
/// instant after the gap when it is skipped.
fn instant_of_wall_clock(timezone: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match timezone.from_local_datetime(&wall) {
        LocalResult::Single(time) => Some(time.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        LocalResult::None => {
            let mut probe = wall;
            for _ in 0..MAX_WALL_CLOCK_STEPS {
                probe += TimeDelta::seconds(1);
                if let Some(time) = timezone.from_local_datetime(&probe).earliest() {
                    return Some(time.with_timezone(&Utc));
                }
            }
            None
        }
    }
}

/// `anchor + k * interval` for the smallest `k >= 1` that lies after `after`.
fn next_every(
    interval: TimeDelta,
    after: DateTime<Utc>,
    anchor: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let anchor = anchor.with_nanosecond(0).unwrap_or(anchor);
    let step = interval.num_milliseconds();
    let elapsed = (after - anchor).num_milliseconds();
    let steps = if elapsed < 0 { 1 } else { elapsed / step + 1 };
    anchor.checked_add_signed(TimeDelta::milliseconds(steps.checked_mul(step)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_bad_field_is_named_in_the_error() {
        let error = Schedule::parse("0 25 * * *", "UTC").unwrap_err();
        assert_eq!(error.field, "schedule");
        assert!(error.reason.contains("field 2 (hour) '25'"), "{error}");
        let error = Schedule::parse("*/5 * * * * MON-XYZ", "UTC").unwrap_err();
        assert!(error.reason.contains("field 6 (day-of-week)"), "{error}");
        let error = Schedule::parse("* * *", "UTC").unwrap_err();
        assert!(error.reason.contains("has 3 fields"), "{error}");
    }

    #[test]
    fn unknown_zones_macros_and_durations_are_refused() {
        assert_eq!(
            Schedule::parse("@daily", "Mars/Olympus").unwrap_err().field,
            "timezone"
        );
        assert!(
            Schedule::parse("@fortnightly", "UTC")
                .unwrap_err()
                .reason
                .contains("unknown macro")
        );
        assert!(
            Schedule::parse("@every soon", "UTC")
                .unwrap_err()
                .reason
                .contains("@every 'soon'")
        );
        assert!(Schedule::parse("@every 500ms", "UTC").is_err());
        assert!(
            Schedule::parse("@at tomorrow", "UTC")
                .unwrap_err()
                .reason
                .contains("@at 'tomorrow'")
        );
    }

    #[test]
    fn a_past_at_or_an_impossible_date_never_fires() {
        let now = utc("2026-06-01T00:00:00Z");
        let past = Schedule::parse("@at 2026-05-01T00:00:00Z", "UTC").unwrap();
        assert!(
            past.first_fire_after(now, now)
                .unwrap_err()
                .reason
                .contains("in the past")
        );
        let february_30 = Schedule::parse("0 0 30 2 *", "UTC").unwrap();
        assert!(february_30.first_fire_after(now, now).is_err());
    }

    #[test]
    fn every_counts_from_its_anchor() {
        let anchor = utc("2026-01-01T00:00:00.750Z");
        let every = Schedule::parse("@every 90s", "Europe/Berlin").unwrap();
        assert_eq!(
            every.upcoming(anchor, anchor, 2),
            [utc("2026-01-01T00:01:30Z"), utc("2026-01-01T00:03:00Z")]
        );
        assert_eq!(
            every.next_after(utc("2026-01-01T00:03:00Z"), anchor),
            Some(utc("2026-01-01T00:04:30Z"))
        );
    }

    #[test]
    fn the_idempotency_key_is_a_valid_key() {
        let key = cron_idempotency_key(CronTaskId::new(), utc("2026-03-08T07:00:00.000Z"));
        assert!(key.ends_with(":2026-03-08T07:00:00Z"));
        assert!(crate::IdempotencyKey::parse(key).is_ok());
    }
}
