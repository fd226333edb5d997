//! Compares the rows a job produced with the rows a test expects, and says how they differ.
//!
//! Each value becomes a [`Cell`]: produced values from their polars type, expected YAML values
//! read in the light of the produced column's type (a string is an instant in a datetime
//! column, a date in a date column). Rows match as a multiset (in any order) unless the test
//! says `ordered: true`. Integers compare exactly; a float compares equal to a number within
//! the relative tolerance: `|a − b| ≤ tolerance × max(1, |a|, |b|)`, [`DEFAULT_TOLERANCE`]
//! unless the test sets `tolerance:` (so below 1 it is an absolute tolerance); NaN equals NaN.
//!
//! The diff lists, per job: columns expected but not produced, produced but not expected
//! (unless `partial: true`), and of another type than the expected values or the `schema:`;
//! then rows: `-` expected but not produced, `+` produced but not expected, `~` a row whose
//! cells differ, shown `expected → produced`. A missing row and an unexpected one are shown as
//! one `~` row when at least half their cells agree (or when each side has one row left).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone as _};
use chrono_tz::Tz;
use polars::prelude::*;
use serde_yaml::Value;

use super::rows::{ColumnType, cell, parse_naive_datetime};
use crate::partition::resolve_local;

/// The relative tolerance of float comparisons when a test sets none.
pub const DEFAULT_TOLERANCE: f64 = 1e-9;

/// The most row lines a diff shows per job; the rest are counted.
const MAX_DIFF_ROWS: usize = 40;

/// Leftover rows beyond which a diff pairs no rows as `~` and matches no floats within the
/// tolerance (both cost the product of the two sides).
const MAX_PAIRING: usize = 2_000;

/// One value, comparable across a produced frame and a YAML expectation.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    /// A UTC-aware datetime: nanoseconds since the epoch.
    Instant(i128),
    /// A naive datetime: wall-clock nanoseconds since the epoch.
    Naive(i128),
    /// Days since the epoch.
    Date(i32),
    /// Any other value, by its text.
    Other(String),
}

impl Cell {
    /// A produced value.
    pub fn produced(value: &AnyValue<'_>) -> Cell {
        let nanos = |value: i64, unit: &TimeUnit| {
            i128::from(value)
                * match unit {
                    TimeUnit::Nanoseconds => 1,
                    TimeUnit::Microseconds => 1_000,
                    TimeUnit::Milliseconds => 1_000_000,
                }
        };
        match value {
            AnyValue::Null => Cell::Null,
            AnyValue::Boolean(flag) => Cell::Bool(*flag),
            AnyValue::String(text) => Cell::Str((*text).to_owned()),
            AnyValue::StringOwned(text) => Cell::Str(text.to_string()),
            AnyValue::UInt8(v) => Cell::Int((*v).into()),
            AnyValue::UInt16(v) => Cell::Int((*v).into()),
            AnyValue::UInt32(v) => Cell::Int((*v).into()),
            AnyValue::UInt64(v) => Cell::Int((*v).into()),
            AnyValue::Int8(v) => Cell::Int((*v).into()),
            AnyValue::Int16(v) => Cell::Int((*v).into()),
            AnyValue::Int32(v) => Cell::Int((*v).into()),
            AnyValue::Int64(v) => Cell::Int((*v).into()),
            AnyValue::Int128(v) => Cell::Int(*v),
            AnyValue::Float32(v) => Cell::Float((*v).into()),
            AnyValue::Float64(v) => Cell::Float(*v),
            AnyValue::Date(days) => Cell::Date(*days),
            AnyValue::Datetime(value, unit, zone) => match zone {
                Some(_) => Cell::Instant(nanos(*value, unit)),
                None => Cell::Naive(nanos(*value, unit)),
            },
            AnyValue::DatetimeOwned(value, unit, zone) => match zone {
                Some(_) => Cell::Instant(nanos(*value, unit)),
                None => Cell::Naive(nanos(*value, unit)),
            },
            other => Cell::Other(other.to_string()),
        }
    }

    /// An expected YAML value, read for a produced column of `dtype`; naive date-times
    /// expected in a UTC-aware column are wall-clock times in `timezone` (the pipeline's).
    pub fn expected(value: &Value, dtype: &DataType, timezone: Tz) -> Cell {
        match value {
            Value::Null => Cell::Null,
            Value::Bool(flag) => Cell::Bool(*flag),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(v), _, _) => Cell::Int(v.into()),
                (None, Some(v), _) => Cell::Int(v.into()),
                (None, None, Some(v)) => Cell::Float(v),
                _ => Cell::Other(n.to_string()),
            },
            Value::String(text) => match dtype {
                DataType::Datetime(_, zone) => expected_datetime(text, zone.is_some(), timezone)
                    .unwrap_or(Cell::Str(text.clone())),
                DataType::Date => NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                    .ok()
                    .and_then(|date| {
                        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
                        Some(Cell::Date((date - epoch).num_days() as i32))
                    })
                    .unwrap_or(Cell::Str(text.clone())),
                _ => Cell::Str(text.clone()),
            },
            other => Cell::Other(super::rows::scalar_text(other)),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Cell::Null => 0,
            Cell::Bool(_) => 1,
            Cell::Int(_) | Cell::Float(_) => 2,
            Cell::Str(_) => 3,
            Cell::Instant(_) => 4,
            Cell::Naive(_) => 5,
            Cell::Date(_) => 6,
            Cell::Other(_) => 7,
        }
    }

    /// A total order (for sorting and exact matching): by kind, then value; numbers by value,
    /// an integer before a float of the same value.
    fn total_cmp(&self, other: &Cell) -> Ordering {
        match (self, other) {
            (Cell::Bool(a), Cell::Bool(b)) => a.cmp(b),
            (Cell::Int(a), Cell::Int(b)) => a.cmp(b),
            (Cell::Float(a), Cell::Float(b)) => a.total_cmp(b),
            (Cell::Int(a), Cell::Float(b)) => (*a as f64).total_cmp(b).then(Ordering::Less),
            (Cell::Float(a), Cell::Int(b)) => a.total_cmp(&(*b as f64)).then(Ordering::Greater),
            (Cell::Str(a), Cell::Str(b)) | (Cell::Other(a), Cell::Other(b)) => a.cmp(b),
            (Cell::Instant(a), Cell::Instant(b)) | (Cell::Naive(a), Cell::Naive(b)) => a.cmp(b),
            (Cell::Date(a), Cell::Date(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    /// Equal, floats within `tolerance` (relative, absolute below 1).
    pub fn matches(&self, other: &Cell, tolerance: f64) -> bool {
        let close = |a: f64, b: f64| {
            a == b
                || (a.is_nan() && b.is_nan())
                || (a - b).abs() <= tolerance * 1f64.max(a.abs()).max(b.abs())
        };
        match (self, other) {
            (Cell::Float(a), Cell::Float(b)) => close(*a, *b),
            (Cell::Int(a), Cell::Float(b)) | (Cell::Float(b), Cell::Int(a)) => close(*a as f64, *b),
            _ => self.total_cmp(other) == Ordering::Equal,
        }
    }

    /// The value as YAML text, as `--update` writes it (and diffs show it): strings quoted
    /// unless plain words, date-times and dates as quoted ISO strings in UTC.
    pub fn yaml(&self) -> String {
        match self {
            Cell::Null => "null".to_owned(),
            Cell::Bool(flag) => flag.to_string(),
            Cell::Int(v) => v.to_string(),
            Cell::Float(v) if v.is_nan() => ".nan".to_owned(),
            Cell::Float(v) if v.is_infinite() => if *v > 0.0 { ".inf" } else { "-.inf" }.to_owned(),
            Cell::Float(v) => format!("{v:?}"),
            Cell::Str(text) => yaml_string(text),
            Cell::Instant(nanos) => quoted(&instant_text(*nanos, true)),
            Cell::Naive(nanos) => quoted(&instant_text(*nanos, false)),
            Cell::Date(days) => quoted(
                &NaiveDate::from_ymd_opt(1970, 1, 1)
                    .and_then(|epoch| {
                        epoch.checked_add_signed(chrono::TimeDelta::days((*days).into()))
                    })
                    .map_or_else(|| days.to_string(), |date| date.to_string()),
            ),
            Cell::Other(text) => quoted(text),
        }
    }

    /// What kind of value this is, for type mismatches.
    fn kind(&self) -> &'static str {
        match self {
            Cell::Null => "null",
            Cell::Bool(_) => "a boolean",
            Cell::Int(_) => "an integer",
            Cell::Float(_) => "a float",
            Cell::Str(_) => "a string",
            Cell::Instant(_) | Cell::Naive(_) => "a date-time",
            Cell::Date(_) => "a date",
            Cell::Other(_) => "a value",
        }
    }
}

/// A naive or offset date-time string as an expected cell of a datetime column.
fn expected_datetime(text: &str, aware_column: bool, timezone: Tz) -> Option<Cell> {
    let text = text.trim();
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        let nanos = i128::from(instant.timestamp_micros()) * 1_000
            + i128::from(instant.timestamp_subsec_nanos() % 1_000);
        return Some(if aware_column {
            Cell::Instant(nanos)
        } else {
            // A naive column holds wall-clock times: an instant names its UTC wall clock.
            Cell::Naive(nanos)
        });
    }
    let naive = parse_naive_datetime(text)?;
    let nanos = |instant: DateTime<chrono::Utc>| {
        i128::from(instant.timestamp_micros()) * 1_000
            + i128::from(instant.timestamp_subsec_nanos() % 1_000)
    };
    Some(if aware_column {
        Cell::Instant(nanos(resolve_local(timezone, naive)))
    } else {
        Cell::Naive(nanos(naive.and_utc()))
    })
}

/// Nanoseconds since the epoch as ISO 8601: RFC 3339 in UTC (`…Z`) for an instant, without an
/// offset for a wall-clock time.
fn instant_text(nanos: i128, instant: bool) -> String {
    let seconds = nanos.div_euclid(1_000_000_000);
    let subsec = nanos.rem_euclid(1_000_000_000) as u32;
    match i64::try_from(seconds)
        .ok()
        .and_then(|seconds| chrono::Utc.timestamp_opt(seconds, subsec).single())
    {
        Some(at) if instant => at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        Some(at) => at.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
        None => nanos.to_string(),
    }
}

fn quoted(text: &str) -> String {
    // JSON's string escapes are a subset of YAML's double-quoted ones.
    serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
}

/// A string (a value or a column name) as YAML in a flow mapping: plain when it is a simple
/// word that YAML reads back as this string, double-quoted otherwise.
pub fn yaml_string(text: &str) -> String {
    let mut chars = text.chars();
    let simple = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '/'))
        && !text.ends_with(' ');
    let reserved = matches!(
        text.to_ascii_lowercase().as_str(),
        "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
    );
    if simple && !reserved {
        text.to_owned()
    } else {
        quoted(text)
    }
}

/// A row as a YAML flow mapping, `{a: 1, b: x}`.
pub fn row_yaml(columns: &[String], cells: &[Cell]) -> String {
    let fields: Vec<String> = columns
        .iter()
        .zip(cells)
        .map(|(name, cell)| format!("{}: {}", yaml_string(name), cell.yaml()))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// The cells of `frame`'s `columns`, row by row.
pub fn frame_cells(frame: &DataFrame, columns: &[String]) -> Vec<Vec<Cell>> {
    let columns: Vec<Option<&Column>> =
        columns.iter().map(|name| frame.column(name).ok()).collect();
    (0..frame.height())
        .map(|row| {
            columns
                .iter()
                .map(|column| {
                    column
                        .and_then(|column| column.get(row).ok())
                        .map_or(Cell::Null, |value| Cell::produced(&value))
                })
                .collect()
        })
        .collect()
}

/// What a test expects of one job, as the comparison needs it.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub rows: &'a [Value],
    /// The columns the rows name, in order of first appearance.
    pub columns: &'a [String],
    pub ordered: bool,
    pub partial: bool,
    pub schema: &'a [(String, ColumnType)],
    pub tolerance: f64,
    pub timezone: Tz,
}

/// How a job's produced rows compare with the expected ones.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub passed: bool,
    pub expected_rows: usize,
    pub produced_rows: usize,
    /// Column problems, one line each.
    pub columns: Vec<String>,
    /// Row lines: `- {…}`, `+ {…}`, `~ {…}`.
    pub rows: Vec<String>,
    /// Row lines left out of `rows`.
    pub more_rows: usize,
}

impl Comparison {
    /// The diff, indented by `indent`, one line each.
    pub fn diff_lines(&self, indent: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .columns
            .iter()
            .map(|line| format!("{indent}{line}"))
            .collect();
        lines.extend(self.rows.iter().map(|line| format!("{indent}{line}")));
        if self.more_rows > 0 {
            lines.push(format!("{indent}… and {} more rows differ", self.more_rows));
        }
        lines
    }
}

/// Compares `produced` with `expected`.
pub fn compare(expected: &Expected<'_>, produced: &DataFrame) -> Comparison {
    let produced_columns: Vec<String> = produced
        .get_column_names()
        .iter()
        .map(|name| name.to_string())
        .collect();
    let mut column_lines = Vec::new();
    let mut passed = true;
    // Without rows the expected columns are unknown: only the row count is compared.
    let known_columns = !expected.columns.is_empty();
    let missing: Vec<&String> = expected
        .columns
        .iter()
        .filter(|name| !produced_columns.contains(name))
        .collect();
    if !missing.is_empty() {
        passed = false;
        column_lines.push(format!(
            "columns expected but not produced: {} (produced: {})",
            names(missing.iter().copied()),
            names(produced_columns.iter())
        ));
    }
    if known_columns && !expected.partial {
        let unexpected: Vec<&String> = produced_columns
            .iter()
            .filter(|name| !expected.columns.contains(name))
            .collect();
        if !unexpected.is_empty() {
            passed = false;
            column_lines.push(format!(
                "columns produced but not expected: {} (add them to the rows, or `partial: true` \
                 to compare only the columns named)",
                names(unexpected.iter().copied())
            ));
        }
    }
    let compared: Vec<String> = expected
        .columns
        .iter()
        .filter(|name| produced_columns.contains(name))
        .cloned()
        .collect();
    let dtypes: Vec<DataType> = compared
        .iter()
        .map(|name| {
            produced
                .column(name)
                .map_or(DataType::Null, |column| column.dtype().clone())
        })
        .collect();
    for (name, ty) in expected.schema {
        if let Ok(column) = produced.column(name)
            && !ty.matches(column.dtype())
        {
            passed = false;
            column_lines.push(format!(
                "column `{name}`: produced {}, `schema` says {}",
                column.dtype(),
                ty.name()
            ));
        }
    }
    let expected_cells: Vec<Vec<Cell>> = expected
        .rows
        .iter()
        .map(|row| {
            compared
                .iter()
                .zip(&dtypes)
                .map(|(name, dtype)| Cell::expected(cell(row, name), dtype, expected.timezone))
                .collect()
        })
        .collect();
    for (index, (name, dtype)) in compared.iter().zip(&dtypes).enumerate() {
        if let Some(value) = expected_cells
            .iter()
            .map(|row| &row[index])
            .find(|cell| !fits(cell, dtype))
        {
            passed = false;
            column_lines.push(format!(
                "column `{name}`: produced {dtype}, expected values are {} (e.g. {})",
                plural(value.kind()),
                value.yaml()
            ));
        }
    }
    let produced_cells = if known_columns {
        frame_cells(produced, &compared)
    } else {
        frame_cells(produced, &produced_columns)
    };
    let shown_columns = if known_columns {
        &compared
    } else {
        &produced_columns
    };
    let matching = if expected.ordered {
        match_in_order(&expected_cells, &produced_cells, expected.tolerance)
    } else {
        match_as_multiset(&expected_cells, &produced_cells, expected.tolerance)
    };
    let mut row_lines = Vec::new();
    // In order, each line says which row it is.
    let position = |index: usize| {
        if expected.ordered {
            format!("row {}: ", index + 1)
        } else {
            String::new()
        }
    };
    for line in &matching {
        passed = false;
        row_lines.push(match line {
            RowDiff::Missing(e) => format!(
                "- {}{}",
                position(*e),
                row_yaml(shown_columns, &expected_cells[*e])
            ),
            RowDiff::Unexpected(p) => format!(
                "+ {}{}",
                position(*p),
                row_yaml(shown_columns, &produced_cells[*p])
            ),
            RowDiff::Changed(e, p) => format!(
                "~ {}{}",
                position(*e),
                changed_row(
                    shown_columns,
                    &expected_cells[*e],
                    &produced_cells[*p],
                    expected.tolerance
                )
            ),
        });
    }
    let more_rows = row_lines.len().saturating_sub(MAX_DIFF_ROWS);
    row_lines.truncate(MAX_DIFF_ROWS);
    Comparison {
        passed,
        expected_rows: expected.rows.len(),
        produced_rows: produced.height(),
        columns: column_lines,
        rows: row_lines,
        more_rows,
    }
}

fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<String> = names.map(|name| format!("`{name}`")).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn plural(kind: &str) -> String {
    let bare = kind
        .strip_prefix("an ")
        .or_else(|| kind.strip_prefix("a "))
        .unwrap_or(kind);
    format!("{bare}s")
}

/// Whether an expected cell can be a value of a produced column of `dtype`.
fn fits(cell: &Cell, dtype: &DataType) -> bool {
    match cell {
        Cell::Null | Cell::Other(_) => true,
        Cell::Int(_) | Cell::Float(_) => dtype.is_primitive_numeric() || dtype == &DataType::Null,
        Cell::Bool(_) => matches!(dtype, DataType::Boolean | DataType::Null),
        Cell::Str(_) => {
            !(dtype.is_primitive_numeric()
                || matches!(
                    dtype,
                    DataType::Boolean | DataType::Datetime(..) | DataType::Date
                ))
        }
        Cell::Instant(_) | Cell::Naive(_) => matches!(dtype, DataType::Datetime(..)),
        Cell::Date(_) => dtype == &DataType::Date,
    }
}

/// `{a: 1, b: 2 → 3}`: every cell, the differing ones as `expected → produced`.
fn changed_row(columns: &[String], expected: &[Cell], produced: &[Cell], tolerance: f64) -> String {
    let fields: Vec<String> = columns
        .iter()
        .zip(expected.iter().zip(produced))
        .map(|(name, (e, p))| {
            if e.matches(p, tolerance) {
                format!("{}: {}", yaml_string(name), p.yaml())
            } else {
                format!("{}: {} → {}", yaml_string(name), e.yaml(), p.yaml())
            }
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// One line of a row diff: indexes into the expected and produced rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowDiff {
    Missing(usize),
    Unexpected(usize),
    Changed(usize, usize),
}

fn rows_match(a: &[Cell], b: &[Cell], tolerance: f64) -> bool {
    a.iter().zip(b).all(|(a, b)| a.matches(b, tolerance))
}

fn match_in_order(expected: &[Vec<Cell>], produced: &[Vec<Cell>], tolerance: f64) -> Vec<RowDiff> {
    let mut diffs = Vec::new();
    for index in 0..expected.len().max(produced.len()) {
        match (expected.get(index), produced.get(index)) {
            (Some(e), Some(p)) if rows_match(e, p, tolerance) => {}
            (Some(_), Some(_)) => diffs.push(RowDiff::Changed(index, index)),
            (Some(_), None) => diffs.push(RowDiff::Missing(index)),
            (None, Some(_)) => diffs.push(RowDiff::Unexpected(index)),
            (None, None) => {}
        }
    }
    diffs
}

/// A row as a key of the exact-match pass.
struct RowKey<'a>(&'a [Cell]);

impl PartialEq for RowKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for RowKey<'_> {}
impl PartialOrd for RowKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for RowKey<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .iter()
            .zip(other.0)
            .map(|(a, b)| a.total_cmp(b))
            .find(|order| order.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

/// Matches rows in any order: equal rows first, then rows equal within the float tolerance;
/// what is left is paired into changed rows where they look alike, the rest missing or
/// unexpected.
fn match_as_multiset(
    expected: &[Vec<Cell>],
    produced: &[Vec<Cell>],
    tolerance: f64,
) -> Vec<RowDiff> {
    let mut unmatched: BTreeMap<RowKey<'_>, Vec<usize>> = BTreeMap::new();
    for (index, row) in produced.iter().enumerate().rev() {
        unmatched.entry(RowKey(row)).or_default().push(index);
    }
    let mut missing = Vec::new();
    for (index, row) in expected.iter().enumerate() {
        match unmatched.get_mut(&RowKey(row)).and_then(Vec::pop) {
            Some(_) => {}
            None => missing.push(index),
        }
    }
    let mut unexpected: Vec<usize> = unmatched.into_values().flatten().collect();
    unexpected.sort_unstable();
    let small = missing.len() <= MAX_PAIRING && unexpected.len() <= MAX_PAIRING;
    if small {
        missing.retain(|&e| {
            match unexpected
                .iter()
                .position(|&p| rows_match(&expected[e], &produced[p], tolerance))
            {
                Some(at) => {
                    unexpected.remove(at);
                    false
                }
                None => true,
            }
        });
    }
    let mut diffs = Vec::new();
    let width = expected.first().map_or(0, Vec::len);
    let lone_pair = missing.len() == 1 && unexpected.len() == 1;
    for &e in &missing {
        let best = if small {
            unexpected
                .iter()
                .enumerate()
                .map(|(at, &p)| {
                    let agree = expected[e]
                        .iter()
                        .zip(&produced[p])
                        .filter(|(a, b)| a.matches(b, tolerance))
                        .count();
                    (agree, at)
                })
                .max_by_key(|(agree, at)| (*agree, std::cmp::Reverse(*at)))
        } else {
            None
        };
        match best {
            Some((agree, at)) if lone_pair || (agree > 0 && 2 * agree >= width) => {
                let p = unexpected.remove(at);
                diffs.push(RowDiff::Changed(e, p));
            }
            _ => diffs.push(RowDiff::Missing(e)),
        }
    }
    diffs.extend(unexpected.into_iter().map(RowDiff::Unexpected));
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<Value> {
        serde_yaml::from_str(text).unwrap()
    }

    fn frame() -> DataFrame {
        df!(
            "city" => ["Paris", "Lyon", "Nice"],
            "sales" => [10.5, 3.0, 7.25],
            "orders" => [2u32, 1, 1],
        )
        .unwrap()
    }

    fn expect<'a>(rows: &'a [Value], columns: &'a [String]) -> Expected<'a> {
        Expected {
            rows,
            columns,
            ordered: false,
            partial: false,
            schema: &[],
            tolerance: DEFAULT_TOLERANCE,
            timezone: Tz::UTC,
        }
    }

    fn columns(rows: &[Value]) -> Vec<String> {
        super::super::rows::row_columns(rows).unwrap()
    }

    #[test]
    fn rows_match_in_any_order_with_a_float_tolerance() {
        let rows = rows(
            "- {city: Nice, sales: 7.2500000001, orders: 1}\n- {city: Paris, sales: 10.5, orders: 2}\n- {city: Lyon, sales: 3, orders: 1}\n",
        );
        let columns = columns(&rows);
        let comparison = compare(&expect(&rows, &columns), &frame());
        assert!(comparison.passed, "{comparison:?}");
        let mut ordered = expect(&rows, &columns);
        ordered.ordered = true;
        let comparison = compare(&ordered, &frame());
        assert!(!comparison.passed);
        assert_eq!(comparison.rows.len(), 3, "{comparison:?}");
    }

    #[test]
    fn the_diff_names_missing_unexpected_and_changed_rows() {
        let rows = rows(
            "- {city: Paris, sales: 11.0, orders: 2}\n- {city: Lyon, sales: 3.0, orders: 1}\n- {city: Metz, sales: 1.0, orders: 9}\n",
        );
        let columns = columns(&rows);
        let mut frame = frame();
        frame = frame
            .vstack(&df!("city" => ["Brest"], "sales" => [2.0], "orders" => [5u32]).unwrap())
            .unwrap();
        let comparison = compare(&expect(&rows, &columns), &frame);
        assert!(!comparison.passed);
        assert_eq!(
            comparison.rows,
            [
                "~ {city: Paris, sales: 11.0 → 10.5, orders: 2}",
                "- {city: Metz, sales: 1.0, orders: 9}",
                "+ {city: Nice, sales: 7.25, orders: 1}",
                "+ {city: Brest, sales: 2.0, orders: 5}",
            ]
        );
    }

    #[test]
    fn columns_and_types_that_differ_are_reported() {
        let rows = rows("- {city: Paris, sales: '10.5', region: north}\n");
        let columns = columns(&rows);
        let comparison = compare(&expect(&rows, &columns), &frame());
        assert!(!comparison.passed);
        assert_eq!(
            comparison.columns,
            [
                "columns expected but not produced: `region` (produced: `city`, `sales`, `orders`)",
                "columns produced but not expected: `orders` (add them to the rows, or `partial: true` to compare only the columns named)",
                "column `sales`: produced f64, expected values are strings (e.g. \"10.5\")",
            ]
        );
        let rows = super::super::rows::frame_from_rows(
            &[],
            super::super::rows::Typing {
                schema: &[],
                time_column: None,
            },
        )
        .unwrap();
        assert_eq!(rows.height(), 0);
    }

    #[test]
    fn partial_expectations_and_schemas() {
        let rows = rows("- {city: Paris}\n- {city: Lyon}\n- {city: Nice}\n");
        let columns = columns(&rows);
        let mut partial = expect(&rows, &columns);
        partial.partial = true;
        assert!(compare(&partial, &frame()).passed);
        let schema = [("orders".to_owned(), ColumnType::Int64)];
        partial.schema = &schema;
        let comparison = compare(&partial, &frame());
        assert_eq!(
            comparison.columns,
            ["column `orders`: produced u32, `schema` says int64"]
        );
    }

    #[test]
    fn datetimes_compare_as_instants() {
        let frame = df!("ts" => [1_704_276_000_000_000i64]).unwrap();
        let frame = frame
            .lazy()
            .with_column(col("ts").cast(DataType::Datetime(
                TimeUnit::Microseconds,
                Some(polars::prelude::TimeZone::UTC),
            )))
            .collect()
            .unwrap();
        for text in [
            "- {ts: '2024-01-03T10:00:00Z'}\n",
            "- {ts: '2024-01-03T11:00:00+01:00'}\n",
            "- {ts: '2024-01-03 10:00'}\n",
        ] {
            let rows = rows(text);
            let columns = columns(&rows);
            assert!(compare(&expect(&rows, &columns), &frame).passed, "{text}");
        }
        assert_eq!(
            Cell::produced(&frame.column("ts").unwrap().get(0).unwrap()).yaml(),
            "\"2024-01-03T10:00:00Z\""
        );
    }

    #[test]
    fn values_are_written_as_yaml_that_reads_back() {
        for (cell, text) in [
            (Cell::Str("New York".into()), "New York"),
            (Cell::Str("true".into()), "\"true\""),
            (Cell::Str("a: b".into()), "\"a: b\""),
            (Cell::Str("12".into()), "\"12\""),
            (Cell::Float(1.0), "1.0"),
            (Cell::Float(f64::NAN), ".nan"),
            (Cell::Int(-3), "-3"),
            (Cell::Null, "null"),
        ] {
            assert_eq!(cell.yaml(), text);
            let back: Value = serde_yaml::from_str(&format!("{{v: {text}}}")).unwrap();
            let back = Cell::expected(&back["v"], &DataType::Null, Tz::UTC);
            assert!(back.matches(&cell, 0.0), "{text}: {back:?}");
        }
    }
}
