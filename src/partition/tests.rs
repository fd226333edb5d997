use super::*;
use chrono_tz::{America, Asia, Australia, Europe, Pacific};
use proptest::prelude::*;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn local(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").unwrap()
}

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

fn window(start: &str, end: &str) -> Window {
    Window {
        start: utc(start),
        end: utc(end),
    }
}

/// The daily window of a local date, via the public API.
fn day_of(tz: Tz, day: &str) -> Window {
    window_containing(Grain::Daily, tz, local_midnight(tz, date(day)))
}

fn hours_of(tz: Tz, day: &str) -> Vec<Window> {
    subwindows(Grain::Hourly, tz, &day_of(tz, day))
}

fn labels(grain: Grain, tz: Tz, windows: &[Window]) -> Vec<String> {
    windows
        .iter()
        .map(|window| partition_label(grain, tz, window))
        .collect()
}

fn assert_tiles(outer: &Window, parts: &[Window]) {
    assert!(!parts.is_empty(), "no parts tile {outer:?}");
    assert_eq!(parts[0].start, outer.start);
    assert_eq!(parts[parts.len() - 1].end, outer.end);
    for pair in parts.windows(2) {
        assert_eq!(pair[0].end, pair[1].start);
    }
    for part in parts {
        assert!(part.start < part.end, "empty part {part:?}");
    }
}

#[test]
fn grain_names_round_trip() {
    for grain in Grain::ALL {
        assert_eq!(grain.to_string(), grain.as_str());
        assert_eq!(grain.as_str().parse::<Grain>(), Ok(grain));
        let json = serde_json::to_string(&grain).unwrap();
        assert_eq!(json, format!("\"{}\"", grain.as_str()));
        assert_eq!(serde_json::from_str::<Grain>(&json).unwrap(), grain);
    }
    assert_eq!(
        "fortnightly".parse::<Grain>(),
        Err(PartitionError::UnknownGrain("fortnightly".to_owned()))
    );
    assert!("Daily".parse::<Grain>().is_err());
    assert!(Grain::Hourly < Grain::Daily && Grain::Weekly < Grain::Monthly);
}

#[test]
fn nesting_table() {
    use Grain::{Daily, Hourly, Monthly, Weekly};
    let nesting = [
        (Hourly, Daily),
        (Hourly, Weekly),
        (Hourly, Monthly),
        (Daily, Weekly),
        (Daily, Monthly),
    ];
    for fine in Grain::ALL {
        for coarse in Grain::ALL {
            let expected = fine == coarse || nesting.contains(&(fine, coarse));
            assert_eq!(fine.nests_in(coarse), expected, "{fine} in {coarse}");
        }
    }
    assert!(!Weekly.nests_in(Monthly));
}

#[test]
fn window_methods() {
    let day = window("2024-03-10T00:00:00Z", "2024-03-11T00:00:00Z");
    assert!(day.contains(day.start));
    assert!(!day.contains(day.end));
    assert_eq!(day.duration(), TimeDelta::days(1));
    let hour = window("2024-03-10T05:00:00Z", "2024-03-10T06:00:00Z");
    assert!(day.contains_window(&hour));
    assert!(day.contains_window(&day));
    assert!(!hour.contains_window(&day));
    let json = serde_json::to_string(&hour).unwrap();
    assert_eq!(serde_json::from_str::<Window>(&json).unwrap(), hour);
}

#[test]
fn timezones_parse() {
    assert_eq!(parse_timezone("UTC"), Ok(Tz::UTC));
    assert_eq!(parse_timezone("Europe/London"), Ok(Europe::London));
    assert_eq!(parse_timezone(" Asia/Kolkata "), Ok(Asia::Kolkata));
    let error = parse_timezone("Mars/Olympus").unwrap_err();
    assert_eq!(
        error,
        PartitionError::UnknownTimezone("Mars/Olympus".to_owned())
    );
    assert!(error.to_string().contains("Mars/Olympus"));
}

#[test]
fn resolve_local_applies_the_dst_policy() {
    let ny = America::New_York;
    // Gap: 02:30 never happens; the clocks jump from 02:00 EST to 03:00 EDT.
    assert_eq!(
        resolve_local(ny, local("2024-03-10T02:30")),
        utc("2024-03-10T07:00:00Z")
    );
    assert_eq!(
        resolve_local(ny, local("2024-03-10T02:00")),
        utc("2024-03-10T07:00:00Z")
    );
    // Overlap: 01:30 happens in EDT then in EST; the earlier one wins.
    assert_eq!(
        resolve_local(ny, local("2024-11-03T01:30")),
        utc("2024-11-03T05:30:00Z")
    );
    assert_eq!(
        resolve_local(ny, local("2024-07-01T12:00")),
        utc("2024-07-01T16:00:00Z")
    );
    // Apia skipped 2011-12-30: any time that day resolves to the start of 2011-12-31.
    assert_eq!(
        resolve_local(Pacific::Apia, local("2011-12-30T12:00")),
        utc("2011-12-30T10:00:00Z")
    );
    // Lord Howe jumps 02:00 → 02:30.
    assert_eq!(
        resolve_local(Australia::Lord_Howe, local("2024-10-06T02:15")),
        utc("2024-10-05T15:30:00Z")
    );
}

#[test]
fn resolve_local_saturates_beyond_chronos_range() {
    assert_eq!(
        resolve_local(Pacific::Apia, NaiveDateTime::MIN),
        DateTime::<Utc>::MIN_UTC
    );
    assert_eq!(
        resolve_local(America::New_York, NaiveDateTime::MAX),
        DateTime::<Utc>::MAX_UTC
    );
}

#[test]
fn new_york_spring_forward_has_23_hours() {
    let ny = America::New_York;
    let day = day_of(ny, "2024-03-10");
    assert_eq!(day, window("2024-03-10T05:00:00Z", "2024-03-11T04:00:00Z"));
    let hours = hours_of(ny, "2024-03-10");
    assert_eq!(hours.len(), 23);
    assert_tiles(&day, &hours);
    assert!(
        hours
            .iter()
            .all(|hour| hour.duration() == TimeDelta::hours(1))
    );
    let labels = labels(Grain::Hourly, ny, &hours);
    assert_eq!(labels[1], "2024-03-10T01:00-05:00");
    assert_eq!(labels[2], "2024-03-10T03:00-04:00");
}

#[test]
fn new_york_fall_back_has_25_hours() {
    let ny = America::New_York;
    let day = day_of(ny, "2024-11-03");
    assert_eq!(day, window("2024-11-03T04:00:00Z", "2024-11-04T05:00:00Z"));
    let hours = hours_of(ny, "2024-11-03");
    assert_eq!(hours.len(), 25);
    assert_tiles(&day, &hours);
    assert!(
        hours
            .iter()
            .all(|hour| hour.duration() == TimeDelta::hours(1))
    );
    let labels = labels(Grain::Hourly, ny, &hours);
    assert_eq!(
        labels[1..4],
        [
            "2024-11-03T01:00-04:00",
            "2024-11-03T01:00-05:00",
            "2024-11-03T02:00-05:00"
        ]
    );
}

#[test]
fn london_transition_days() {
    let london = Europe::London;
    let spring = day_of(london, "2024-03-31");
    assert_eq!(
        spring,
        window("2024-03-31T00:00:00Z", "2024-03-31T23:00:00Z")
    );
    let spring_hours = hours_of(london, "2024-03-31");
    assert_eq!(spring_hours.len(), 23);
    assert_eq!(spring_hours[1].start, utc("2024-03-31T01:00:00Z"));
    assert_eq!(
        partition_label(Grain::Hourly, london, &spring_hours[1]),
        "2024-03-31T02:00+01:00"
    );

    let autumn = day_of(london, "2024-10-27");
    assert_eq!(
        autumn,
        window("2024-10-26T23:00:00Z", "2024-10-28T00:00:00Z")
    );
    let autumn_hours = hours_of(london, "2024-10-27");
    assert_eq!(autumn_hours.len(), 25);
    assert_tiles(&autumn, &autumn_hours);
    assert!(
        autumn_hours
            .iter()
            .all(|hour| hour.duration() == TimeDelta::hours(1))
    );
}

#[test]
fn lord_howe_half_hour_shifts() {
    let lord_howe = Australia::Lord_Howe;
    // 2024-04-07: 02:00 (+11) falls back to 01:30 (+10:30); the 01:00 window lasts 90 min.
    let autumn = day_of(lord_howe, "2024-04-07");
    assert_eq!(autumn.duration(), TimeDelta::minutes(24 * 60 + 30));
    let hours = hours_of(lord_howe, "2024-04-07");
    assert_eq!(hours.len(), 24);
    assert_tiles(&autumn, &hours);
    let odd: Vec<_> = hours
        .iter()
        .filter(|hour| hour.duration() != TimeDelta::hours(1))
        .collect();
    assert_eq!(odd.len(), 1);
    assert_eq!(
        *odd[0],
        window("2024-04-06T14:00:00Z", "2024-04-06T15:30:00Z")
    );
    assert_eq!(
        partition_label(Grain::Hourly, lord_howe, odd[0]),
        "2024-04-07T01:00+11:00"
    );

    // 2024-10-06: 02:00 (+10:30) jumps to 02:30 (+11); the 02:30 window lasts 30 min.
    let spring = day_of(lord_howe, "2024-10-06");
    assert_eq!(spring.duration(), TimeDelta::minutes(23 * 60 + 30));
    let hours = hours_of(lord_howe, "2024-10-06");
    assert_eq!(hours.len(), 24);
    assert_tiles(&spring, &hours);
    let odd: Vec<_> = hours
        .iter()
        .filter(|hour| hour.duration() != TimeDelta::hours(1))
        .collect();
    assert_eq!(odd.len(), 1);
    assert_eq!(
        *odd[0],
        window("2024-10-05T15:30:00Z", "2024-10-05T16:00:00Z")
    );
    assert_eq!(
        partition_label(Grain::Hourly, lord_howe, odd[0]),
        "2024-10-06T02:30+11:00"
    );
}

#[test]
fn fractional_offsets_shift_hour_boundaries() {
    let kolkata = Asia::Kolkata;
    let hour = window_containing(Grain::Hourly, kolkata, utc("2024-03-10T05:00:00Z"));
    assert_eq!(hour, window("2024-03-10T04:30:00Z", "2024-03-10T05:30:00Z"));
    assert_eq!(
        partition_label(Grain::Hourly, kolkata, &hour),
        "2024-03-10T10:00+05:30"
    );
    assert_eq!(
        window_containing(Grain::Daily, kolkata, utc("2024-03-10T05:00:00Z")),
        window("2024-03-09T18:30:00Z", "2024-03-10T18:30:00Z")
    );
    let kathmandu = Asia::Kathmandu;
    let hour = window_containing(Grain::Hourly, kathmandu, utc("2024-03-10T05:00:00Z"));
    assert_eq!(hour, window("2024-03-10T04:15:00Z", "2024-03-10T05:15:00Z"));
    assert_eq!(
        partition_label(Grain::Hourly, kathmandu, &hour),
        "2024-03-10T10:00+05:45"
    );
}

#[test]
fn sao_paulo_day_without_midnight_starts_at_one() {
    let sao_paulo = America::Sao_Paulo;
    let day = day_of(sao_paulo, "2018-11-04");
    assert_eq!(day, window("2018-11-04T03:00:00Z", "2018-11-05T02:00:00Z"));
    assert_eq!(parse_instant("2018-11-04", sao_paulo), Ok(day.start));
    let hours = hours_of(sao_paulo, "2018-11-04");
    assert_eq!(hours.len(), 23);
    assert_eq!(
        partition_label(Grain::Hourly, sao_paulo, &hours[0]),
        "2018-11-04T01:00-02:00"
    );
    assert_eq!(partition_label(Grain::Daily, sao_paulo, &day), "2018-11-04");
    // The day before ends when the clocks jump.
    assert_eq!(
        next_window(Grain::Daily, sao_paulo, &day_of(sao_paulo, "2018-11-03")),
        day
    );
}

#[test]
fn sao_paulo_fall_back_at_midnight_repeats_the_last_hour() {
    // 2019-02-17 00:00 (-02) went back to 2019-02-16 23:00 (-03).
    let sao_paulo = America::Sao_Paulo;
    let day = day_of(sao_paulo, "2019-02-16");
    assert_eq!(day.duration(), TimeDelta::hours(25));
    let late = utc("2019-02-17T02:30:00Z"); // the second 23:30 of 2019-02-16
    assert_eq!(window_containing(Grain::Daily, sao_paulo, late), day);
    let hours = hours_of(sao_paulo, "2019-02-16");
    assert_eq!(hours.len(), 25);
    assert_tiles(&day, &hours);
}

#[test]
fn havana_midnight_happens_twice() {
    // 2024-11-03 01:00 (-04) went back to 00:00 (-05): midnight itself is ambiguous.
    let havana = America::Havana;
    let day = day_of(havana, "2024-11-03");
    assert_eq!(day, window("2024-11-03T04:00:00Z", "2024-11-04T05:00:00Z"));
    let hours = hours_of(havana, "2024-11-03");
    assert_eq!(hours.len(), 25);
    assert_tiles(&day, &hours);
    assert_eq!(
        labels(Grain::Hourly, havana, &hours[..3]),
        [
            "2024-11-03T00:00-04:00",
            "2024-11-03T00:00-05:00",
            "2024-11-03T01:00-05:00"
        ]
    );
}

#[test]
fn apia_skipped_day_has_no_window() {
    let apia = Pacific::Apia;
    let before = window_containing(Grain::Daily, apia, utc("2011-12-29T22:00:00Z"));
    assert_eq!(
        before,
        window("2011-12-29T10:00:00Z", "2011-12-30T10:00:00Z")
    );
    assert_eq!(partition_label(Grain::Daily, apia, &before), "2011-12-29");
    let after = next_window(Grain::Daily, apia, &before);
    assert_eq!(
        after,
        window("2011-12-30T10:00:00Z", "2011-12-31T10:00:00Z")
    );
    assert_eq!(partition_label(Grain::Daily, apia, &after), "2011-12-31");
    assert_eq!(window_containing(Grain::Daily, apia, before.end), after);

    let days = windows_within(
        Grain::Daily,
        apia,
        utc("2011-12-27T00:00:00Z"),
        utc("2012-01-03T00:00:00Z"),
    );
    let labels = labels(Grain::Daily, apia, &days);
    assert!(labels.contains(&"2011-12-29".to_owned()));
    assert!(!labels.contains(&"2011-12-30".to_owned()));
    assert!(labels.contains(&"2011-12-31".to_owned()));
    for pair in days.windows(2) {
        assert_eq!(pair[0].end, pair[1].start);
    }

    let hours = windows_within(Grain::Hourly, apia, before.start, after.end);
    assert_eq!(hours.len(), 48);
    assert_tiles(
        &Window {
            start: before.start,
            end: after.end,
        },
        &hours,
    );

    // The week holding the skipped Friday is a day short.
    let week = window_containing(Grain::Weekly, apia, before.start);
    assert_eq!(week.duration(), TimeDelta::days(6));
    assert_eq!(partition_label(Grain::Weekly, apia, &week), "2011-W52");
    assert_eq!(subwindows(Grain::Daily, apia, &week).len(), 6);
}

#[test]
fn leap_day_and_month_lengths() {
    let tz = Tz::UTC;
    let leap_day = window_containing(Grain::Daily, tz, utc("2024-02-29T12:00:00Z"));
    assert_eq!(
        leap_day,
        window("2024-02-29T00:00:00Z", "2024-03-01T00:00:00Z")
    );
    assert_eq!(partition_label(Grain::Daily, tz, &leap_day), "2024-02-29");

    let february_2024 = window_containing(Grain::Monthly, tz, utc("2024-02-29T12:00:00Z"));
    assert_eq!(february_2024.duration(), TimeDelta::days(29));
    assert_eq!(subwindows(Grain::Daily, tz, &february_2024).len(), 29);
    let february_2023 = window_containing(Grain::Monthly, tz, utc("2023-02-15T00:00:00Z"));
    assert_eq!(
        february_2023,
        window("2023-02-01T00:00:00Z", "2023-03-01T00:00:00Z")
    );
    assert_eq!(subwindows(Grain::Daily, tz, &february_2023).len(), 28);
    assert_eq!(
        partition_label(Grain::Monthly, tz, &february_2023),
        "2023-02"
    );

    let december = window_containing(Grain::Monthly, tz, utc("2023-12-31T23:59:59Z"));
    assert_eq!(
        december,
        window("2023-12-01T00:00:00Z", "2024-01-01T00:00:00Z")
    );
    let january = next_window(Grain::Monthly, tz, &december);
    assert_eq!(
        january,
        window("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
    );
    assert_eq!(partition_label(Grain::Monthly, tz, &january), "2024-01");

    // A New York month: local midnights, 744 hours minus the spring-forward hour.
    let march = window_containing(
        Grain::Monthly,
        America::New_York,
        utc("2024-03-15T00:00:00Z"),
    );
    assert_eq!(
        march,
        window("2024-03-01T05:00:00Z", "2024-04-01T04:00:00Z")
    );
    assert_eq!(
        subwindows(Grain::Hourly, America::New_York, &march).len(),
        743
    );
}

#[test]
fn iso_weeks_across_year_end() {
    let tz = Tz::UTC;
    let week = window_containing(Grain::Weekly, tz, utc("2021-01-01T12:00:00Z"));
    assert_eq!(week, window("2020-12-28T00:00:00Z", "2021-01-04T00:00:00Z"));
    assert_eq!(partition_label(Grain::Weekly, tz, &week), "2020-W53");
    let following = next_window(Grain::Weekly, tz, &week);
    assert_eq!(partition_label(Grain::Weekly, tz, &following), "2021-W01");
    let week = window_containing(Grain::Weekly, tz, utc("2024-12-31T00:00:00Z"));
    assert_eq!(partition_label(Grain::Weekly, tz, &week), "2025-W01");
    // A local Monday midnight, not a UTC one.
    let week = window_containing(
        Grain::Weekly,
        America::New_York,
        utc("2024-03-10T12:00:00Z"),
    );
    assert_eq!(week, window("2024-03-04T05:00:00Z", "2024-03-11T04:00:00Z"));
    assert_eq!(
        partition_label(Grain::Weekly, America::New_York, &week),
        "2024-W10"
    );
}

#[test]
fn labels_per_grain() {
    let ny = America::New_York;
    let instant = utc("2024-03-10T06:30:00Z"); // 01:30 EST
    let label = |grain| partition_label(grain, ny, &window_containing(grain, ny, instant));
    assert_eq!(label(Grain::Hourly), "2024-03-10T01:00-05:00");
    assert_eq!(label(Grain::Daily), "2024-03-10");
    assert_eq!(label(Grain::Weekly), "2024-W10");
    assert_eq!(label(Grain::Monthly), "2024-03");
    let hour = window_containing(Grain::Hourly, Tz::UTC, instant);
    assert_eq!(
        partition_label(Grain::Hourly, Tz::UTC, &hour),
        "2024-03-10T06:00+00:00"
    );
}

#[test]
fn next_window_of_an_unaligned_window() {
    let tz = Tz::UTC;
    let unaligned = window("2024-03-10T05:30:00Z", "2024-03-10T07:30:00Z");
    assert_eq!(
        next_window(Grain::Hourly, tz, &unaligned),
        window("2024-03-10T08:00:00Z", "2024-03-10T09:00:00Z")
    );
}

#[test]
fn windows_within_keeps_only_whole_windows() {
    let tz = Tz::UTC;
    let from = utc("2024-03-10T05:30:00Z");
    let to = utc("2024-03-10T09:00:00Z");
    let hours = windows_within(Grain::Hourly, tz, from, to);
    assert_eq!(hours.len(), 3);
    assert_eq!(hours[0].start, utc("2024-03-10T06:00:00Z"));
    assert!(windows_within(Grain::Daily, tz, from, to).is_empty());
    assert!(windows_within(Grain::Hourly, tz, to, from).is_empty());
    assert!(windows_within(Grain::Hourly, tz, from, from).is_empty());
    let year = windows_within(
        Grain::Hourly,
        America::New_York,
        parse_instant("2024-01-01", America::New_York).unwrap(),
        parse_instant("2025-01-01", America::New_York).unwrap(),
    );
    assert_eq!(year.len(), 366 * 24);
}

#[test]
fn parse_instant_accepts_documented_forms() {
    let ny = America::New_York;
    let expected = utc("2024-03-10T05:00:00Z");
    assert_eq!(parse_instant("2024-03-10T05:00:00Z", ny), Ok(expected));
    assert_eq!(parse_instant("2024-03-10T06:00:00+01:00", ny), Ok(expected));
    assert_eq!(
        parse_instant(" 2024-03-10T05:00:00.000Z ", ny),
        Ok(expected)
    );
    assert_eq!(parse_instant("2024-03-10", ny), Ok(expected));
    assert_eq!(
        parse_instant("2024-03-10", Tz::UTC),
        Ok(utc("2024-03-10T00:00:00Z"))
    );
    assert_eq!(
        parse_instant("2024-03-10T01:00", ny),
        Ok(utc("2024-03-10T06:00:00Z"))
    );
    assert_eq!(
        parse_instant("2024-03-10 01:00:00", ny),
        Ok(utc("2024-03-10T06:00:00Z"))
    );
    assert_eq!(
        parse_instant("2024-03-10 01:00", ny),
        Ok(utc("2024-03-10T06:00:00Z"))
    );
    assert_eq!(
        parse_instant("2024-03-10T01:00:30.5", ny),
        Ok(utc("2024-03-10T06:00:30.5Z"))
    );
    // Gap and overlap follow the DST policy.
    assert_eq!(
        parse_instant("2024-03-10T02:30", ny),
        Ok(utc("2024-03-10T07:00:00Z"))
    );
    assert_eq!(
        parse_instant("2024-11-03T01:30", ny),
        Ok(utc("2024-11-03T05:30:00Z"))
    );
}

#[test]
fn parse_instant_rejects_bad_input_naming_it() {
    let ny = America::New_York;
    for input in [
        "",
        "   ",
        "yesterday",
        "2024-02-30",
        "2024-13-01",
        "2024-03-10T25:00",
        "2024-03-10T05:00:00Zjunk",
        "10/03/2024",
        "2024-03-10T",
    ] {
        let error = parse_instant(input, ny).unwrap_err();
        let PartitionError::BadInstant {
            input: named,
            reason,
        } = &error
        else {
            panic!("unexpected error {error:?}");
        };
        assert_eq!(named, input);
        assert!(!reason.is_empty());
        let message = error.to_string();
        assert!(message.contains(&format!("`{input}`")), "{message}");
        assert!(message.starts_with("bad instant"), "{message}");
        assert!(!message.ends_with('.'), "{message}");
    }
    let error = parse_instant("2024-02-30", ny).unwrap_err();
    assert!(
        error.to_string().contains("no such date or time"),
        "{error}"
    );
    let error = parse_instant("yesterday", ny).unwrap_err();
    assert!(error.to_string().contains("expected RFC 3339"), "{error}");
}

#[test]
fn error_messages_are_lowercase_without_period() {
    let errors = [
        PartitionError::UnknownGrain("x".to_owned()),
        PartitionError::UnknownTimezone("x".to_owned()),
        PartitionError::BadInstant {
            input: "x".to_owned(),
            reason: "empty input".to_owned(),
        },
    ];
    for error in errors {
        let message = error.to_string();
        assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
        assert!(!message.ends_with('.'), "{message}");
    }
}

/// The documented exception to "hourly windows last 30 min to 2 h": a shift that is not a
/// whole or half hour. New York left local mean time (-4:56:02) at 12:03:58 on 1883-11-18,
/// going back to 12:00 EST, so 12:00 happened twice, 3 min 58 s apart.
#[test]
fn odd_historical_shift_makes_a_short_hour() {
    let ny = America::New_York;
    let hours = hours_of(ny, "1883-11-18");
    assert_eq!(hours.len(), 25);
    let shortest = hours.iter().map(Window::duration).min().unwrap();
    assert_eq!(shortest, TimeDelta::seconds(3 * 60 + 58));
}

/// The other documented exception: Anchorage's clocks went back a day at 14:31 on
/// 1867-10-19, so the replayed afternoon of 10-18 folds into the 14:00 window of 10-19.
#[test]
fn date_line_move_makes_a_long_hour() {
    let anchorage = America::Anchorage;
    let hours = hours_of(anchorage, "1867-10-19");
    assert_tiles(&day_of(anchorage, "1867-10-19"), &hours);
    let longest = hours.iter().max_by_key(|hour| hour.duration()).unwrap();
    assert_eq!(longest.duration(), TimeDelta::hours(10));
    assert_eq!(
        partition_label(Grain::Hourly, anchorage, longest),
        "1867-10-19T14:00+14:00"
    );
}

const ZONES: [Tz; 8] = [
    Tz::UTC,
    America::New_York,
    Europe::London,
    Australia::Lord_Howe,
    Asia::Kolkata,
    America::Sao_Paulo,
    Pacific::Apia,
    Asia::Kathmandu,
];

/// Exhaustive over 1990..2040 for the test zones, but cheap: only days whose length or
/// offset differs from a plain day can have irregular hours.
#[test]
fn hourly_windows_last_30_minutes_to_2_hours_in_test_zones() {
    let from = utc("1990-01-01T00:00:00Z");
    let to = utc("2040-01-01T00:00:00Z");
    for tz in ZONES {
        let mut transition_days = 0;
        for day in windows_within(Grain::Daily, tz, from, to) {
            let offset_at = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
            if day.duration() == TimeDelta::days(1) && offset_at(day.start) == offset_at(day.end) {
                continue;
            }
            transition_days += 1;
            let hours = subwindows(Grain::Hourly, tz, &day);
            assert_tiles(&day, &hours);
            for hour in hours {
                assert!(
                    TimeDelta::minutes(30) <= hour.duration()
                        && hour.duration() <= TimeDelta::hours(2),
                    "{tz} {hour:?}"
                );
            }
        }
        let fixed_offset = [Tz::UTC, Asia::Kolkata, Asia::Kathmandu].contains(&tz);
        assert_eq!(transition_days == 0, fixed_offset, "{tz}");
    }
}

fn zone() -> impl Strategy<Value = Tz> {
    prop::sample::select(ZONES.to_vec())
}

fn instant_1990_to_2040() -> impl Strategy<Value = DateTime<Utc>> {
    let from = utc("1990-01-01T00:00:00Z").timestamp();
    let to = utc("2040-01-01T00:00:00Z").timestamp();
    (from..to).prop_map(|secs| DateTime::from_timestamp(secs, 0).unwrap())
}

fn grain() -> impl Strategy<Value = Grain> {
    prop::sample::select(Grain::ALL.to_vec())
}

proptest! {
    #[test]
    fn windows_contain_chain_and_realign(tz in zone(), instant in instant_1990_to_2040()) {
        for grain in Grain::ALL {
            let window = window_containing(grain, tz, instant);
            prop_assert!(window.contains(instant), "{grain} {tz} {window:?}");
            prop_assert!(window.start < window.end);
            let next = next_window(grain, tz, &window);
            prop_assert_eq!(next.start, window.end);
            prop_assert!(next.start < next.end);
            prop_assert_eq!(window_containing(grain, tz, window.start), window);
            prop_assert_eq!(window_containing(grain, tz, next.start), next);
            let last_instant = window.end - TimeDelta::nanoseconds(1);
            prop_assert_eq!(window_containing(grain, tz, last_instant), window);
        }
    }

    #[test]
    fn subwindows_tile_every_nesting_pair(tz in zone(), instant in instant_1990_to_2040()) {
        for coarse_grain in Grain::ALL {
            let coarse = window_containing(coarse_grain, tz, instant);
            for fine in Grain::ALL.into_iter().filter(|fine| fine.nests_in(coarse_grain)) {
                let parts = subwindows(fine, tz, &coarse);
                prop_assert!(!parts.is_empty());
                prop_assert_eq!(parts[0].start, coarse.start);
                prop_assert_eq!(parts[parts.len() - 1].end, coarse.end);
                for pair in parts.windows(2) {
                    prop_assert_eq!(pair[0].end, pair[1].start);
                }
                for part in &parts {
                    prop_assert!(part.start < part.end);
                    prop_assert!(coarse.contains_window(part));
                }
                // They are the grain's own windows (checking the ends keeps debug runs fast).
                for part in [parts[0], parts[parts.len() - 1]] {
                    prop_assert_eq!(window_containing(fine, tz, part.start), part);
                }
            }
        }
    }

    /// Every hour of the day lasts 30 min to 2 h in these zones over 1990..2040; see
    /// `odd_historical_shift_makes_a_short_hour` for why that is not universal.
    #[test]
    fn hourly_windows_of_a_day_are_30_minutes_to_2_hours(
        tz in zone(),
        instant in instant_1990_to_2040(),
    ) {
        let day = window_containing(Grain::Daily, tz, instant);
        for hour in subwindows(Grain::Hourly, tz, &day) {
            prop_assert!(hour.duration() >= TimeDelta::minutes(30), "{tz} {hour:?}");
            prop_assert!(hour.duration() <= TimeDelta::hours(2), "{tz} {hour:?}");
        }
    }

    #[test]
    fn windows_within_are_inside_consecutive_and_maximal(
        tz in zone(),
        grain in grain(),
        from in instant_1990_to_2040(),
        span_secs in 0..800 * 86_400i64,
    ) {
        // Spans of a few dozen windows: enough to cross transitions, cheap in debug builds.
        let max_span_days = match grain {
            Grain::Hourly => 10,
            Grain::Daily => 60,
            Grain::Weekly => 200,
            Grain::Monthly => 800,
        };
        let to = from + TimeDelta::seconds(span_secs % (max_span_days * 86_400));
        let windows = windows_within(grain, tz, from, to);
        for window in &windows {
            prop_assert!(from <= window.start && window.end <= to);
            prop_assert!(window.start < window.end);
        }
        for pair in windows.windows(2) {
            prop_assert_eq!(pair[0].end, pair[1].start);
        }
        // Maximal: the first window starting at or after `from` is the first result (or
        // does not fit), and the window after the last result does not fit.
        let containing_from = window_containing(grain, tz, from);
        let first_candidate = if containing_from.start == from {
            containing_from
        } else {
            next_window(grain, tz, &containing_from)
        };
        match windows.first() {
            Some(first) => prop_assert_eq!(*first, first_candidate),
            None => prop_assert!(first_candidate.end > to),
        }
        if let Some(last) = windows.last() {
            prop_assert!(next_window(grain, tz, last).end > to);
        }
    }

    /// Far outside realistic dates nothing panics or hangs; windows are sane except within
    /// a few days of chrono's range ends, where they are clamped.
    #[test]
    fn any_representable_instant_is_handled(
        tz in zone(),
        secs in DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
    ) {
        let instant = DateTime::from_timestamp(secs, 0).unwrap();
        let far_from_range_ends = DateTime::<Utc>::MIN_UTC + TimeDelta::days(70) < instant
            && instant < DateTime::<Utc>::MAX_UTC - TimeDelta::days(70);
        for grain in Grain::ALL {
            let window = window_containing(grain, tz, instant);
            prop_assert!(window.start <= window.end);
            let next = next_window(grain, tz, &window);
            prop_assert!(next.start <= next.end);
            let _ = partition_label(grain, tz, &window);
            let until = instant
                .checked_add_signed(TimeDelta::hours(3))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            for inside in windows_within(grain, tz, instant, until) {
                prop_assert!(instant <= inside.start && inside.end <= until);
            }
            if far_from_range_ends {
                prop_assert!(window.contains(instant));
                prop_assert_eq!(next.start, window.end);
            }
        }
    }
}

#[test]
fn range_ends_do_not_panic_or_hang() {
    for tz in ZONES {
        for instant in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            for grain in Grain::ALL {
                let window = window_containing(grain, tz, instant);
                assert!(window.start <= window.end);
                let next = next_window(grain, tz, &window);
                assert!(next.start <= next.end);
                assert!(!partition_label(grain, tz, &window).is_empty());
                let _ = windows_within(
                    grain,
                    tz,
                    DateTime::<Utc>::MIN_UTC,
                    DateTime::<Utc>::MIN_UTC + TimeDelta::days(40),
                );
                let _ = windows_within(
                    grain,
                    tz,
                    DateTime::<Utc>::MAX_UTC - TimeDelta::days(40),
                    DateTime::<Utc>::MAX_UTC,
                );
            }
        }
    }
    let error = parse_instant("+262142-12-31T23:00", America::New_York).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("outside the representable range"),
        "{error}"
    );
}
