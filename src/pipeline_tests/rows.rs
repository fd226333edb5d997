//! Typed rows from a test file: inline YAML rows, whose column types are inferred from the
//! values or declared in `schema:`, and CSV or Parquet fixtures, confined to the test file's
//! folder and bounded in size and rows.
//!
//! Inference: integers make an `int64` column, any float among them a `float64` one, strings a
//! `string` one, booleans a `bool` one; a column with nothing but nulls has polars' null type.
//! A source's `time_column` is a `datetime` unless the schema says otherwise. Datetime values
//! are strings: with an offset (`2024-01-03T10:00:00Z`, `…+01:00`) they make a UTC-aware column,
//! without one (`2024-01-03T10:00`, `2024-01-03 10:00:00`) a naive column, which a source reads
//! as wall-clock time in its own timezone, as it reads naive timestamps in files.

use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use polars::prelude::*;
use serde_yaml::Value;

/// The most rows one `rows:` list or fixture may hold.
pub const MAX_ROWS: usize = 100_000;

/// The most columns a row may have.
pub const MAX_COLUMNS: usize = 1_000;

/// The largest fixture file read.
pub const MAX_FIXTURE_BYTES: u64 = 64 * 1024 * 1024;

/// A column type a test file can declare in `schema:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Int64,
    Int32,
    UInt64,
    UInt32,
    Float64,
    Float32,
    String,
    Bool,
    Date,
    /// Microseconds; UTC-aware when the values carry an offset, naive when none does.
    Datetime,
}

impl ColumnType {
    /// Every name `schema:` accepts, for messages.
    pub const NAMES: &'static str = "int64 (or int), int32, uint64, uint32, float64 (or float), \
                                     float32, string, bool, date, datetime";

    pub fn parse(name: &str) -> Option<ColumnType> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "int64" | "int" | "integer" => ColumnType::Int64,
            "int32" => ColumnType::Int32,
            "uint64" => ColumnType::UInt64,
            "uint32" => ColumnType::UInt32,
            "float64" | "float" | "double" => ColumnType::Float64,
            "float32" => ColumnType::Float32,
            "string" | "str" => ColumnType::String,
            "bool" | "boolean" => ColumnType::Bool,
            "date" => ColumnType::Date,
            "datetime" | "timestamp" => ColumnType::Datetime,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Int64 => "int64",
            ColumnType::Int32 => "int32",
            ColumnType::UInt64 => "uint64",
            ColumnType::UInt32 => "uint32",
            ColumnType::Float64 => "float64",
            ColumnType::Float32 => "float32",
            ColumnType::String => "string",
            ColumnType::Bool => "bool",
            ColumnType::Date => "date",
            ColumnType::Datetime => "datetime",
        }
    }

    /// Whether a produced column of `dtype` is of this type (a datetime of any unit and zone).
    pub fn matches(self, dtype: &DataType) -> bool {
        match self {
            ColumnType::Datetime => matches!(dtype, DataType::Datetime(..)),
            other => other.dtype(false) == *dtype,
        }
    }

    fn dtype(self, aware: bool) -> DataType {
        match self {
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::UInt64 => DataType::UInt64,
            ColumnType::UInt32 => DataType::UInt32,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Float32 => DataType::Float32,
            ColumnType::String => DataType::String,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Date => DataType::Date,
            ColumnType::Datetime => {
                DataType::Datetime(TimeUnit::Microseconds, aware.then_some(TimeZone::UTC))
            }
        }
    }
}

/// Why rows could not be read: where (a row, 0-based, and a column) when known, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsError {
    pub row: Option<usize>,
    pub column: Option<String>,
    pub message: String,
}

impl RowsError {
    fn new(message: impl Into<String>) -> RowsError {
        RowsError {
            row: None,
            column: None,
            message: message.into(),
        }
    }

    fn at(row: usize, column: &str, message: impl Into<String>) -> RowsError {
        RowsError {
            row: Some(row),
            column: Some(column.to_owned()),
            message: message.into(),
        }
    }
}

/// How one test file's rows are typed: declared column types, and the column read as a
/// datetime unless declared otherwise (a source's time column).
#[derive(Debug, Clone, Copy)]
pub struct Typing<'a> {
    pub schema: &'a [(String, ColumnType)],
    pub time_column: Option<&'a str>,
}

impl Typing<'_> {
    fn declared(&self, column: &str) -> Option<ColumnType> {
        self.schema
            .iter()
            .find(|(name, _)| name == column)
            .map(|(_, ty)| *ty)
            .or_else(|| (self.time_column == Some(column)).then_some(ColumnType::Datetime))
    }
}

/// The columns `rows` name, in order of first appearance; each row must be a mapping of
/// column names to scalars.
pub fn row_columns(rows: &[Value]) -> Result<Vec<String>, RowsError> {
    if rows.len() > MAX_ROWS {
        return Err(RowsError::new(format!(
            "{} rows; a test gives at most {MAX_ROWS} per list (use a Parquet fixture and fewer \
             rows: unit tests need few)",
            rows.len()
        )));
    }
    let mut columns: Vec<String> = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let Value::Mapping(map) = row else {
            return Err(RowsError {
                row: Some(index),
                column: None,
                message: "a row is a mapping of column names to values, e.g. `{city: Paris, \
                          sales: 12.5}`"
                    .to_owned(),
            });
        };
        for (key, value) in map {
            let Value::String(name) = key else {
                return Err(RowsError {
                    row: Some(index),
                    column: None,
                    message: format!("column names are strings, not {}", describe(key)),
                });
            };
            if matches!(value, Value::Sequence(_) | Value::Mapping(_)) {
                return Err(RowsError::at(
                    index,
                    name,
                    "values are scalars (a number, a string, a boolean or null), not nested \
                     lists or mappings",
                ));
            }
            if !columns.contains(name) {
                if columns.len() == MAX_COLUMNS {
                    return Err(RowsError::at(
                        index,
                        name,
                        format!("more than {MAX_COLUMNS} columns"),
                    ));
                }
                columns.push(name.clone());
            }
        }
    }
    Ok(columns)
}

/// `value` of row `row`, column `column`; a column a row leaves out is null.
pub fn cell<'v>(row: &'v Value, column: &str) -> &'v Value {
    const NULL: &Value = &Value::Null;
    match row {
        Value::Mapping(map) => map.get(column).unwrap_or(NULL),
        _ => NULL,
    }
}

/// A frame of inline `rows`, typed by `typing`; a column a row leaves out is null there, and a
/// declared column no row names is all nulls.
pub fn frame_from_rows(rows: &[Value], typing: Typing<'_>) -> Result<DataFrame, RowsError> {
    let mut columns = row_columns(rows)?;
    for (name, _) in typing.schema {
        if !columns.contains(name) {
            columns.push(name.clone());
        }
    }
    let built = columns
        .iter()
        .map(|name| {
            let values: Vec<&Value> = rows.iter().map(|row| cell(row, name)).collect();
            build_column(name, &values, typing.declared(name))
        })
        .collect::<Result<Vec<Column>, RowsError>>()?;
    DataFrame::new(rows.len(), built).map_err(|err| RowsError::new(err.to_string()))
}

/// What a YAML scalar is, for messages and inference.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The type values of these kinds make without a declaration.
fn infer(name: &str, values: &[&Value]) -> Result<Option<ColumnType>, RowsError> {
    let mut first: Option<(usize, &'static str)> = None;
    let mut inferred: Option<ColumnType> = None;
    for (row, value) in values.iter().enumerate() {
        let ty = match value {
            Value::Null => continue,
            Value::Bool(_) => ColumnType::Bool,
            Value::Number(n) if n.is_f64() => ColumnType::Float64,
            Value::Number(n) if n.as_i64().is_some() => ColumnType::Int64,
            Value::Number(_) => ColumnType::UInt64,
            Value::String(_) => ColumnType::String,
            other => {
                return Err(RowsError::at(
                    row,
                    name,
                    format!("{} is not a scalar value", describe(other)),
                ));
            }
        };
        let numeric = |ty: ColumnType| {
            matches!(
                ty,
                ColumnType::Int64 | ColumnType::UInt64 | ColumnType::Float64
            )
        };
        inferred = match (inferred, first) {
            (None, _) => {
                first = Some((row, describe(value)));
                Some(ty)
            }
            (Some(seen), _) if seen == ty => Some(seen),
            (Some(seen), _) if numeric(seen) && numeric(ty) => {
                if seen == ColumnType::Float64 || ty == ColumnType::Float64 {
                    Some(ColumnType::Float64)
                } else {
                    Some(ColumnType::UInt64)
                }
            }
            (Some(_), first) => {
                let (first_row, first_kind) = first.unwrap_or((0, "a value"));
                return Err(RowsError::at(
                    row,
                    name,
                    format!(
                        "{} in a column holding {first_kind} in row {}: quote the values or \
                         declare the column's type in `schema:` ({})",
                        describe(value),
                        first_row + 1,
                        ColumnType::NAMES
                    ),
                ));
            }
        };
    }
    // Integers that do not all fit an int64 are uint64 only when none is negative.
    if inferred == Some(ColumnType::UInt64)
        && values
            .iter()
            .any(|value| matches!(value, Value::Number(n) if n.as_u64().is_none()))
    {
        return Ok(Some(ColumnType::Float64));
    }
    Ok(inferred)
}

/// One column of `values`, of type `declared` or inferred from them.
pub fn build_column(
    name: &str,
    values: &[&Value],
    declared: Option<ColumnType>,
) -> Result<Column, RowsError> {
    let ty = match declared {
        Some(ty) => ty,
        None => match infer(name, values)? {
            Some(ty) => ty,
            None => {
                return Ok(Column::full_null(
                    name.into(),
                    values.len(),
                    &DataType::Null,
                ));
            }
        },
    };
    let fail = |row: usize, value: &Value| {
        RowsError::at(
            row,
            name,
            format!(
                "{} `{}` is not a {} value",
                describe(value),
                scalar_text(value),
                ty.name()
            ),
        )
    };
    let column_name: PlSmallStr = name.into();
    let column = match ty {
        ColumnType::Int64 | ColumnType::Int32 | ColumnType::UInt32 => {
            let mut out = Vec::with_capacity(values.len());
            for (row, value) in values.iter().enumerate() {
                out.push(match value {
                    Value::Null => None,
                    Value::Number(n) => Some(n.as_i64().ok_or_else(|| fail(row, value))?),
                    other => return Err(fail(row, other)),
                });
            }
            Column::new(column_name, out)
        }
        ColumnType::UInt64 => {
            let mut out = Vec::with_capacity(values.len());
            for (row, value) in values.iter().enumerate() {
                out.push(match value {
                    Value::Null => None,
                    Value::Number(n) => Some(n.as_u64().ok_or_else(|| fail(row, value))?),
                    other => return Err(fail(row, other)),
                });
            }
            Column::new(column_name, out)
        }
        ColumnType::Float64 | ColumnType::Float32 => {
            let mut out = Vec::with_capacity(values.len());
            for (row, value) in values.iter().enumerate() {
                out.push(match value {
                    Value::Null => None,
                    Value::Number(n) => Some(n.as_f64().ok_or_else(|| fail(row, value))?),
                    other => return Err(fail(row, other)),
                });
            }
            Column::new(column_name, out)
        }
        ColumnType::String => {
            let mut out: Vec<Option<String>> = Vec::with_capacity(values.len());
            for (row, value) in values.iter().enumerate() {
                out.push(match value {
                    Value::Null => None,
                    Value::String(text) => Some(text.clone()),
                    // Declared strings may be written as numbers or booleans.
                    Value::Number(_) | Value::Bool(_) => Some(scalar_text(value)),
                    other => return Err(fail(row, other)),
                });
            }
            Column::new(column_name, out)
        }
        ColumnType::Bool => {
            let mut out = Vec::with_capacity(values.len());
            for (row, value) in values.iter().enumerate() {
                out.push(match value {
                    Value::Null => None,
                    Value::Bool(flag) => Some(*flag),
                    other => return Err(fail(row, other)),
                });
            }
            Column::new(column_name, out)
        }
        ColumnType::Date => {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
            let mut out = Vec::with_capacity(values.len());
            for (row, value) in values.iter().enumerate() {
                out.push(match value {
                    Value::Null => None,
                    Value::String(text) => {
                        let date = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                            .map_err(|_| fail(row, value))?;
                        Some((date - epoch).num_days() as i32)
                    }
                    other => return Err(fail(row, other)),
                });
            }
            Column::new(column_name, out)
        }
        ColumnType::Datetime => return datetime_column(name, values),
    };
    column
        .strict_cast(&ty.dtype(false))
        .map_err(|err| RowsError::new(format!("column `{name}`: {err}")))
}

/// A datetime column of strings: UTC-aware when they carry offsets, naive when none does.
fn datetime_column(name: &str, values: &[&Value]) -> Result<Column, RowsError> {
    let mut micros = Vec::with_capacity(values.len());
    let mut aware: Option<(bool, usize)> = None;
    for (row, value) in values.iter().enumerate() {
        let parsed = match value {
            Value::Null => {
                micros.push(None);
                continue;
            }
            Value::String(text) => parse_datetime(text),
            _ => None,
        };
        let Some((instant, has_offset)) = parsed else {
            return Err(RowsError::at(
                row,
                name,
                format!(
                    "{} `{}` is not a date-time: write RFC 3339 (`2024-01-03T10:00:00Z`) or a \
                     local date-time (`2024-01-03T10:00`)",
                    describe(value),
                    scalar_text(value)
                ),
            ));
        };
        match aware {
            None => aware = Some((has_offset, row)),
            Some((seen, first)) if seen != has_offset => {
                return Err(RowsError::at(
                    row,
                    name,
                    format!(
                        "mixes date-times with and without an offset (row {} {} one): a column \
                         is either instants or wall-clock times",
                        first + 1,
                        if seen { "has" } else { "has no" }
                    ),
                ));
            }
            Some(_) => {}
        }
        micros.push(Some(instant));
    }
    let aware = aware.is_some_and(|(aware, _)| aware);
    Column::new(name.into(), micros)
        .cast(&ColumnType::Datetime.dtype(aware))
        .map_err(|err| RowsError::new(format!("column `{name}`: {err}")))
}

/// A date-time string as microseconds since the epoch (UTC for one with an offset, wall-clock
/// for one without) and whether it had an offset.
pub fn parse_datetime(text: &str) -> Option<(i64, bool)> {
    let text = text.trim();
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some((instant.timestamp_micros(), true));
    }
    parse_naive_datetime(text).map(|naive| (naive.and_utc().timestamp_micros(), false))
}

/// A local date-time (`2024-01-03T10:00[:00[.f]]`, with `T` or a space) or a date (midnight).
pub fn parse_naive_datetime(text: &str) -> Option<NaiveDateTime> {
    const FORMATS: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    let text = text.trim();
    FORMATS
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .map(|date| date.and_time(NaiveTime::MIN))
        })
}

/// A scalar as the user wrote it, for messages.
pub fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// The format of a fixture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixtureFormat {
    Csv,
    Parquet,
}

impl FixtureFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            FixtureFormat::Csv => "csv",
            FixtureFormat::Parquet => "parquet",
        }
    }
}

/// `relative` inside `folder`: no absolute path, no `..`, and the file it names (symlinks
/// followed) a regular file inside the folder, at most [`MAX_FIXTURE_BYTES`] long.
pub fn confine_fixture(folder: &Path, relative: &str) -> Result<PathBuf, String> {
    let path = Path::new(relative);
    if relative.trim().is_empty() {
        return Err("the fixture path is empty".to_owned());
    }
    if path.is_absolute()
        || path
            .components()
            .any(|part| !matches!(part, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "`{relative}` must be a path relative to the test file's folder, without `..`"
        ));
    }
    let base = folder
        .canonicalize()
        .map_err(|err| format!("cannot resolve the test file's folder: {err}"))?;
    let resolved = base
        .join(path)
        .canonicalize()
        .map_err(|err| format!("cannot read `{relative}`: {err}"))?;
    if !resolved.starts_with(&base) {
        return Err(format!(
            "`{relative}` resolves outside the test file's folder (a symlink?)"
        ));
    }
    let metadata =
        std::fs::metadata(&resolved).map_err(|err| format!("cannot read `{relative}`: {err}"))?;
    if !metadata.is_file() {
        return Err(format!("`{relative}` is not a regular file"));
    }
    if metadata.len() > MAX_FIXTURE_BYTES {
        return Err(format!(
            "`{relative}` is {} bytes; a fixture is at most {MAX_FIXTURE_BYTES}",
            metadata.len()
        ));
    }
    Ok(resolved)
}

/// The rows of a fixture file, typed by `typing`: declared columns are converted as inline
/// values are (strings parsed as dates and date-times by the same rules), others keep the
/// reader's types (a CSV's dates parsed when they look like dates).
pub fn read_fixture(
    folder: &Path,
    relative: &str,
    format: FixtureFormat,
    typing: Typing<'_>,
) -> Result<DataFrame, RowsError> {
    let path = confine_fixture(folder, relative).map_err(RowsError::new)?;
    let failed = |err: PolarsError| {
        RowsError::new(format!(
            "cannot read `{relative}` as {}: {}",
            format.as_str(),
            crate::error::short_polars_error(&err)
        ))
    };
    let source = PlRefPath::new(path.to_string_lossy().into_owned());
    let scan = match format {
        FixtureFormat::Csv => LazyCsvReader::new(source)
            .with_glob(false)
            .with_try_parse_dates(true)
            .finish(),
        FixtureFormat::Parquet => LazyFrame::scan_parquet(
            source,
            ScanArgsParquet {
                glob: false,
                ..ScanArgsParquet::default()
            },
        ),
    }
    .map_err(failed)?;
    let frame = scan
        .limit((MAX_ROWS + 1) as IdxSize)
        .collect()
        .map_err(failed)?;
    if frame.height() > MAX_ROWS {
        return Err(RowsError::new(format!(
            "`{relative}` holds more than {MAX_ROWS} rows; a test gives at most {MAX_ROWS}"
        )));
    }
    if frame.width() > MAX_COLUMNS {
        return Err(RowsError::new(format!(
            "`{relative}` has {} columns; at most {MAX_COLUMNS}",
            frame.width()
        )));
    }
    retype(frame, typing)
}

/// `frame` with its declared columns converted: string columns value by value as inline rows
/// are, other columns by a strict cast. A declared column the frame lacks is an error.
fn retype(mut frame: DataFrame, typing: Typing<'_>) -> Result<DataFrame, RowsError> {
    let names: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|name| name.to_string())
        .collect();
    for (name, _) in typing.schema {
        if !names.contains(name) {
            return Err(RowsError::new(format!(
                "`schema` names column `{name}`, which the fixture does not have (columns: {})",
                names.join(", ")
            )));
        }
    }
    for name in &names {
        let Some(ty) = typing.declared(name) else {
            continue;
        };
        let column = frame
            .column(name)
            .map_err(|err| RowsError::new(err.to_string()))?;
        if ty.matches(column.dtype()) {
            continue;
        }
        let converted = if column.dtype() == &DataType::String {
            let values: Vec<Value> = (0..column.len())
                .map(|row| match column.get(row) {
                    Ok(AnyValue::String(text)) => Value::String(text.to_owned()),
                    Ok(AnyValue::StringOwned(text)) => Value::String(text.to_string()),
                    _ => Value::Null,
                })
                .collect();
            let refs: Vec<&Value> = values.iter().collect();
            build_column(name, &refs, Some(ty))?
        } else {
            column.strict_cast(&ty.dtype(false)).map_err(|err| {
                RowsError::new(format!(
                    "column `{name}` ({}) cannot be read as {}: {}",
                    column.dtype(),
                    ty.name(),
                    crate::error::short_polars_error(&err)
                ))
            })?
        };
        frame
            .with_column(converted)
            .map_err(|err| RowsError::new(err.to_string()))?;
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<Value> {
        serde_yaml::from_str(text).unwrap()
    }

    const UNTYPED: Typing<'static> = Typing {
        schema: &[],
        time_column: None,
    };

    #[test]
    fn infers_types_from_values() {
        let frame = frame_from_rows(
            &rows("- {a: 1, b: 1.5, c: x, d: true, e: null}\n- {a: 2, b: 2, c: y, d: false}\n"),
            UNTYPED,
        )
        .unwrap();
        let dtypes: Vec<String> = frame.dtypes().iter().map(|d| d.to_string()).collect();
        assert_eq!(dtypes, ["i64", "f64", "str", "bool", "null"]);
        assert_eq!(frame.height(), 2);
    }

    #[test]
    fn time_columns_and_declared_types() {
        let schema = [
            ("user_id".to_owned(), ColumnType::UInt32),
            ("day".to_owned(), ColumnType::Date),
        ];
        let typing = Typing {
            schema: &schema,
            time_column: Some("ts"),
        };
        let frame = frame_from_rows(
            &rows("- {ts: '2024-01-03T10:00:00Z', user_id: 7, day: '2024-01-03'}\n"),
            typing,
        )
        .unwrap();
        assert_eq!(
            frame.column("ts").unwrap().dtype(),
            &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        );
        assert_eq!(frame.column("user_id").unwrap().dtype(), &DataType::UInt32);
        assert_eq!(frame.column("day").unwrap().dtype(), &DataType::Date);
        let naive = frame_from_rows(&rows("- {ts: '2024-01-03 10:00'}\n"), typing).unwrap();
        assert_eq!(
            naive.column("ts").unwrap().dtype(),
            &DataType::Datetime(TimeUnit::Microseconds, None)
        );
    }

    #[test]
    fn refuses_mixed_and_malformed_values_naming_row_and_column() {
        let err = frame_from_rows(&rows("- {a: 1}\n- {a: x}\n"), UNTYPED).unwrap_err();
        assert_eq!((err.row, err.column.as_deref()), (Some(1), Some("a")));
        assert!(err.message.contains("quote the values"), "{}", err.message);
        let typing = Typing {
            schema: &[],
            time_column: Some("ts"),
        };
        let err = frame_from_rows(
            &rows("- {ts: '2024-01-03T10:00:00Z'}\n- {ts: '2024-01-03 11:00'}\n"),
            typing,
        )
        .unwrap_err();
        assert!(
            err.message.contains("with and without an offset"),
            "{}",
            err.message
        );
        let err = frame_from_rows(&rows("- {ts: yesterday}\n"), typing).unwrap_err();
        assert!(
            err.message.contains("is not a date-time"),
            "{}",
            err.message
        );
        let err = frame_from_rows(&rows("- [1, 2]\n"), UNTYPED).unwrap_err();
        assert_eq!(err.row, Some(0));
        let err = frame_from_rows(&rows("- {a: [1]}\n"), UNTYPED).unwrap_err();
        assert!(err.message.contains("scalars"), "{}", err.message);
    }

    #[test]
    fn fixtures_stay_inside_the_test_folder() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("tests");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(inside.join("ok.csv"), "a,b\n1,x\n").unwrap();
        std::fs::write(dir.path().join("secret.csv"), "a\n1\n").unwrap();
        assert!(confine_fixture(&inside, "ok.csv").is_ok());
        assert!(
            confine_fixture(&inside, "../secret.csv")
                .unwrap_err()
                .contains("without `..`")
        );
        assert!(
            confine_fixture(&inside, dir.path().join("secret.csv").to_str().unwrap())
                .unwrap_err()
                .contains("relative")
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.csv"), inside.join("link.csv"))
                .unwrap();
            assert!(
                confine_fixture(&inside, "link.csv")
                    .unwrap_err()
                    .contains("outside")
            );
        }
        let frame = read_fixture(&inside, "ok.csv", FixtureFormat::Csv, UNTYPED).unwrap();
        assert_eq!(frame.shape(), (1, 2));
    }
}
