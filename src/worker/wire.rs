//! The frames a supervisor and its worker exchange over the worker's stdin and stdout.
//!
//! A frame is a kind byte, a call id, a JSON header and binary blobs (Arrow IPC, mostly):
//!
//! ```text
//! u8 kind | u64 id | u32 header length | header | u32 blob count | (u64 length | bytes)*
//! ```
//!
//! all integers little-endian. Reading is bounded: a header over [`MAX_HEADER_BYTES`], more
//! than [`MAX_BLOBS`] blobs, or more bytes in all than the reader allows is an error, found
//! before the bytes are allocated.

use std::io::{self, Read, Write};

/// The largest JSON header a frame may carry (SQL texts and configs are smaller).
pub const MAX_HEADER_BYTES: usize = 64 << 20;

/// The most blobs a frame may carry (an input of results over many partitions is a blob per
/// partial state, up to `limits.max_result_partitions`).
pub const MAX_BLOBS: usize = 1 << 20;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Supervisor → worker: a call; the worker answers with a `Reply` of the same id.
    Call = 1,
    /// Worker → supervisor: the answer to the call of the same id.
    Reply = 2,
    /// Supervisor → worker: stop the work of call `id` at its next safe point.
    Cancel = 3,
    /// Supervisor → worker: the health check, answered by `Pong` at once.
    Ping = 4,
    Pong = 5,
    /// Worker → supervisor, once, when it is ready for calls (the id is its pid).
    Ready = 6,
    /// Worker → supervisor: call `id` failed without a reply of its handler's (it panicked,
    /// or the worker could not take it); the header is the message, as text.
    Failed = 7,
}

impl FrameKind {
    fn from_u8(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            1 => FrameKind::Call,
            2 => FrameKind::Reply,
            3 => FrameKind::Cancel,
            4 => FrameKind::Ping,
            5 => FrameKind::Pong,
            6 => FrameKind::Ready,
            7 => FrameKind::Failed,
            _ => return None,
        })
    }
}

/// One message between a supervisor and its worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub id: u64,
    /// JSON.
    pub header: Vec<u8>,
    pub blobs: Vec<Vec<u8>>,
}

impl Frame {
    /// A frame without blobs.
    pub fn control(kind: FrameKind, id: u64) -> Frame {
        Frame {
            kind,
            id,
            header: b"{}".to_vec(),
            blobs: Vec::new(),
        }
    }

    /// Whether the wire can carry the frame: its header and blob count within bounds.
    pub fn check_writable(&self) -> Result<(), String> {
        if self.header.len() > MAX_HEADER_BYTES {
            return Err(format!(
                "the call's description takes {} bytes, over the {MAX_HEADER_BYTES} a worker \
                 process takes",
                self.header.len()
            ));
        }
        if self.blobs.len() > MAX_BLOBS {
            return Err(format!(
                "the call carries {} frames, over the {MAX_BLOBS} a worker process takes",
                self.blobs.len()
            ));
        }
        Ok(())
    }

    /// The bytes the frame takes on the wire.
    pub fn wire_bytes(&self) -> u64 {
        let blobs: u64 = self.blobs.iter().map(|b| 8 + b.len() as u64).sum();
        1 + 8 + 4 + self.header.len() as u64 + 4 + blobs
    }
}

/// Writes `frame` (not flushed).
pub fn write_frame(out: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let header_len = u32::try_from(frame.header.len())
        .ok()
        .filter(|&n| n as usize <= MAX_HEADER_BYTES)
        .ok_or_else(|| invalid(format!("a header of {} bytes", frame.header.len())))?;
    if frame.blobs.len() > MAX_BLOBS {
        return Err(invalid(format!("{} blobs", frame.blobs.len())));
    }
    out.write_all(&[frame.kind as u8])?;
    out.write_all(&frame.id.to_le_bytes())?;
    out.write_all(&header_len.to_le_bytes())?;
    out.write_all(&frame.header)?;
    out.write_all(&(frame.blobs.len() as u32).to_le_bytes())?;
    for blob in &frame.blobs {
        out.write_all(&(blob.len() as u64).to_le_bytes())?;
        out.write_all(blob)?;
    }
    Ok(())
}

/// Reads one frame of at most `max_bytes` in all; `Ok(None)` at a clean end of the stream
/// (before the first byte of a frame).
pub fn read_frame(input: &mut impl Read, max_bytes: u64) -> io::Result<Option<Frame>> {
    let mut kind = [0u8; 1];
    if input.read(&mut kind)? == 0 {
        return Ok(None);
    }
    let kind =
        FrameKind::from_u8(kind[0]).ok_or_else(|| invalid(format!("frame kind {}", kind[0])))?;
    let id = u64::from_le_bytes(read_array(input)?);
    let header_len = u32::from_le_bytes(read_array(input)?) as usize;
    if header_len > MAX_HEADER_BYTES {
        return Err(invalid(format!("a header of {header_len} bytes")));
    }
    let mut total = 1 + 8 + 4 + header_len as u64 + 4;
    check_total(total, max_bytes)?;
    let header = read_exact_vec(input, header_len)?;
    let count = u32::from_le_bytes(read_array(input)?) as usize;
    if count > MAX_BLOBS {
        return Err(invalid(format!("{count} blobs")));
    }
    let mut blobs = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = u64::from_le_bytes(read_array(input)?);
        total = total.saturating_add(8).saturating_add(len);
        check_total(total, max_bytes)?;
        let len = usize::try_from(len).map_err(|_| invalid(format!("a blob of {len} bytes")))?;
        blobs.push(read_exact_vec(input, len)?);
    }
    Ok(Some(Frame {
        kind,
        id,
        header,
        blobs,
    }))
}

fn check_total(total: u64, max_bytes: u64) -> io::Result<()> {
    if total > max_bytes {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of more than {max_bytes} bytes"),
        ))
    } else {
        Ok(())
    }
}

fn read_array<const N: usize>(input: &mut impl Read) -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Reads `len` bytes, growing the buffer as they arrive (a length that lies is not allocated
/// up front).
fn read_exact_vec(input: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(len.min(1 << 20));
    let read = input.take(len as u64).read_to_end(&mut bytes)?;
    if read < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the stream ended {read} bytes into a {len}-byte field"),
        ));
    }
    Ok(bytes)
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad frame: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Frame {
        Frame {
            kind: FrameKind::Reply,
            id: 42,
            header: br#"{"ok":true}"#.to_vec(),
            blobs: vec![vec![1, 2, 3], Vec::new(), vec![9; 1000]],
        }
    }

    #[test]
    fn frames_round_trip_and_a_clean_end_is_none() {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &sample()).unwrap();
        write_frame(&mut bytes, &Frame::control(FrameKind::Ping, 7)).unwrap();
        assert_eq!(
            bytes.len() as u64,
            sample().wire_bytes() + 1 + 8 + 4 + 2 + 4
        );
        let mut reader = bytes.as_slice();
        assert_eq!(read_frame(&mut reader, u64::MAX).unwrap(), Some(sample()));
        assert_eq!(
            read_frame(&mut reader, u64::MAX).unwrap(),
            Some(Frame::control(FrameKind::Ping, 7))
        );
        assert_eq!(read_frame(&mut reader, u64::MAX).unwrap(), None);
    }

    #[test]
    fn oversized_truncated_and_unknown_frames_are_errors_not_allocations() {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &sample()).unwrap();
        // Over the reader's bound: refused before the big blob is read.
        let error = read_frame(&mut bytes.as_slice(), 100).unwrap_err();
        assert!(error.to_string().contains("more than 100 bytes"), "{error}");
        // Cut short: an error, not a frame.
        let cut = &bytes[..bytes.len() - 10];
        assert_eq!(
            read_frame(&mut &cut[..], u64::MAX).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        // A blob length of 2^63 bytes is refused by the bound, not allocated.
        let mut lying = Vec::new();
        lying.push(FrameKind::Reply as u8);
        lying.extend(1u64.to_le_bytes());
        lying.extend(2u32.to_le_bytes());
        lying.extend(b"{}");
        lying.extend(1u32.to_le_bytes());
        lying.extend((1u64 << 63).to_le_bytes());
        assert!(read_frame(&mut lying.as_slice(), 1 << 30).is_err());
        let mut unknown = bytes.clone();
        unknown[0] = 99;
        assert!(
            read_frame(&mut unknown.as_slice(), u64::MAX)
                .unwrap_err()
                .to_string()
                .contains("frame kind 99")
        );
    }
}
