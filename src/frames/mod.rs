//! Polars frames and the helpers every layer shares: DataFrame ⇄ Arrow IPC bytes, the form
//! results take in the store; the Arrow memory a frame holds, the measure every memory budget
//! in Floe charges; stopping computations (cancellation, the memory limit); which polars engine
//! a plan runs on (in memory or streaming); the bound on join sizes; windows over in-memory
//! frames; and the selections (filtered rows) kept beside named objects. A leaf (polars, the
//! partition calendar and `error`'s panic text only): the store, the job kinds and the engine
//! all use it, and it uses none of them.
//!
//! IPC (the Arrow file format) keeps every dtype, including timezone-aware datetimes, and
//! decodes without parsing, so a downstream job reads an upstream partition at memory speed.

pub mod cancel;
pub mod join_bound;
pub mod memory;
pub mod selection;
pub mod streaming;
pub mod time_slice;

use std::io::Cursor;

use polars::prelude::*;

pub fn encode_ipc(frame: &DataFrame) -> PolarsResult<Vec<u8>> {
    let mut bytes = Vec::with_capacity(frame.estimated_size() + 1024);
    let mut frame = frame.clone();
    IpcWriter::new(&mut bytes).finish(&mut frame)?;
    Ok(bytes)
}

pub fn decode_ipc(bytes: &[u8]) -> PolarsResult<DataFrame> {
    IpcReader::new(Cursor::new(bytes)).finish()
}

/// Bytes of Arrow memory `frame`'s columns hold.
///
/// polars' `estimated_size` counts only the string bytes of a string or binary column. Those
/// columns are Arrow view arrays: every row also has a 16-byte view (short strings live inside
/// it), so a column of short city names takes about 16 bytes a row where `estimated_size`
/// says 6. A budget charged with `estimated_size` let a context hold 1.5× more than it
/// allowed at 10M sample rows.
pub fn arrow_size(frame: &DataFrame) -> usize {
    frame.columns().iter().map(column_arrow_size).sum()
}

/// One view per row, as Arrow's string-view layout stores it.
const VIEW_BYTES: usize = 16;

fn column_arrow_size(column: &Column) -> usize {
    // A scalar column holds one value until something materialises it.
    let series = match column {
        Column::Series(series) => series,
        Column::Scalar(scalar) => match scalar.lazy_as_materialized_series() {
            Some(series) => series,
            None => return 0,
        },
    };
    let validity = if series.null_count() > 0 {
        series.len().div_ceil(8)
    } else {
        0
    };
    // A string column is a binary-view column underneath; `as_binary` shares its buffers.
    let binary = match series.dtype() {
        DataType::String => series.str().map(StringChunked::as_binary),
        DataType::Binary => series.binary().cloned(),
        _ => return series.estimated_size(),
    };
    let views: usize = binary.map_or(0, |binary| {
        binary
            .downcast_iter()
            .map(|array| array.len() * VIEW_BYTES + array.total_buffer_len())
            .sum()
    });
    views + validity
}

/// The columns of `frame` JSON answers cannot carry, as `` `name` (dtype) ``: polars' JSON
/// writer has no form for binary data or decimals (it panics on them), alone or inside a list,
/// an array or a struct. Every JSON writer checks this first.
pub fn json_unwritable_columns(frame: &DataFrame) -> Vec<String> {
    fn writable(dtype: &DataType) -> bool {
        match dtype {
            DataType::Binary | DataType::BinaryOffset | DataType::Decimal(..) => false,
            DataType::List(inner) | DataType::Array(inner, _) => writable(inner),
            DataType::Struct(fields) => fields.iter().all(|field| writable(field.dtype())),
            _ => true,
        }
    }
    frame
        .columns()
        .iter()
        .filter(|column| !writable(column.dtype()))
        .map(|column| format!("`{}` ({})", column.name(), column.dtype()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_unwritable_columns_are_those_polars_json_writer_cannot_write() {
        // Strings that cast to every dtype tested.
        let strings = || Series::new("v".into(), ["1", "2"]);
        let column = |dtype: &DataType| -> PolarsResult<Series> {
            match dtype {
                DataType::List(inner) => {
                    strings().cast(inner)?.implode()?.into_series().cast(dtype)
                }
                DataType::Array(inner, _) => {
                    strings().cast(inner)?.implode()?.into_series().cast(dtype)
                }
                DataType::Struct(fields) => Ok(StructChunked::from_series(
                    "v".into(),
                    2,
                    [strings()
                        .cast(fields[0].dtype())?
                        .with_name(fields[0].name().clone())]
                    .iter(),
                )?
                .into_series()),
                DataType::Boolean
                | DataType::Datetime(..)
                | DataType::Duration(_)
                | DataType::Time => strings().cast(&DataType::Int64)?.cast(dtype),
                _ => strings().cast(dtype),
            }
        };
        let dtypes = [
            DataType::Boolean,
            DataType::Int8,
            DataType::UInt64,
            DataType::Int128,
            DataType::Float32,
            DataType::String,
            DataType::Binary,
            DataType::Decimal(10, 2),
            DataType::Date,
            DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)),
            DataType::Duration(TimeUnit::Microseconds),
            DataType::Time,
            DataType::Null,
            DataType::List(Box::new(DataType::Binary)),
            DataType::List(Box::new(DataType::Int64)),
            DataType::Array(Box::new(DataType::Binary), 2),
            DataType::Array(Box::new(DataType::Int64), 2),
            DataType::Struct(vec![Field::new("b".into(), DataType::Binary)]),
            DataType::Struct(vec![Field::new("i".into(), DataType::Int64)]),
        ];
        for dtype in dtypes {
            let series = column(&dtype).unwrap_or_else(|e| panic!("{dtype}: {e}"));
            assert_eq!(series.dtype(), &dtype);
            let mut frame = DataFrame::new_infer_height(vec![series.into_column()]).unwrap();
            let refused = !json_unwritable_columns(&frame).is_empty();
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut out = Vec::new();
                JsonWriter::new(&mut out)
                    .with_json_format(JsonFormat::Json)
                    .finish(&mut frame)
                    .map(|()| out)
            }));
            match written {
                Ok(Ok(json)) => {
                    assert!(!refused, "{dtype} refused, yet written");
                    serde_json::from_slice::<serde_json::Value>(&json)
                        .unwrap_or_else(|e| panic!("{dtype}: not JSON: {e}"));
                }
                _ => assert!(refused, "{dtype} not refused, yet not written"),
            }
        }
    }

    #[test]
    fn arrow_size_counts_the_views_of_string_columns() {
        let rows = 10_000;
        let cities: Vec<&str> = (0..rows).map(|i| ["Paris", "Oslo"][i % 2]).collect();
        let long: Vec<String> = (0..rows)
            .map(|i| format!("a string longer than twelve {i}"))
            .collect();
        let amounts: Vec<f64> = (0..rows).map(|i| i as f64).collect();
        let frame = df!("city" => cities, "long" => long.clone(), "amount" => amounts).unwrap();
        let long_bytes: usize = long.iter().map(String::len).sum();
        let size = arrow_size(&frame);
        // Views for both string columns, the long strings' bytes, 8 bytes per f64.
        let expected = rows * VIEW_BYTES * 2 + long_bytes + rows * 8;
        assert!(
            size >= expected && size < expected + expected / 10,
            "arrow_size {size}, expected about {expected}"
        );
        assert!(size > frame.estimated_size() + rows * VIEW_BYTES);
    }

    #[test]
    fn round_trips_a_frame_with_timezone_aware_times() {
        let frame = df!("city" => ["Paris", "Oslo"], "sales" => [1.5, 2.0]).unwrap();
        let ts = Column::new("ts".into(), [0i64, 3_600_000])
            .cast(&DataType::Datetime(
                TimeUnit::Milliseconds,
                Some(TimeZone::UTC),
            ))
            .unwrap();
        let mut frame = frame;
        frame.with_column(ts).unwrap();
        let decoded = decode_ipc(&encode_ipc(&frame).unwrap()).unwrap();
        assert!(decoded.equals_missing(&frame));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_ipc(b"not arrow").is_err());
    }
}
