//! DataFrame ⇄ Arrow IPC bytes, the form results take in the store.
//!
//! IPC (the Arrow file format) keeps every dtype, including timezone-aware datetimes, and
//! decodes without parsing, so a downstream job reads an upstream partition at memory speed.

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

#[cfg(test)]
mod tests {
    use super::*;

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
