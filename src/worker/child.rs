//! The worker's side of the protocol: read frames from stdin, run each call on a thread of
//! its own through a [`Handler`], write the replies to stdout.
//!
//! The worker lives as long as its stdin: when the supervisor closes it, exits or is killed,
//! [`serve`] returns and the process ends with it, whatever its calls are computing — so a
//! server killed with `kill -9` leaves no worker behind burning CPU.

use std::io::{self, BufReader, BufWriter, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::wire::{Frame, FrameKind, read_frame, write_frame};

/// What a worker does with calls.
pub trait Handler: Send + Sync + 'static {
    /// Answers call `id`: the reply's header and blobs, or why it failed.
    fn call(
        &self,
        id: u64,
        header: &[u8],
        blobs: Vec<Vec<u8>>,
    ) -> Result<(Vec<u8>, Vec<Vec<u8>>), String>;

    /// Stops the work of call `id` at its next safe point; the call still replies.
    fn cancel(&self, id: u64);
}

/// The frames a worker accepts from its supervisor: calls carry inputs as Arrow, as large as
/// a context's named objects may be.
const MAX_CALL_BYTES: u64 = 1 << 40;

/// Serves calls from stdin until it closes. At most `max_calls` run at once; a call beyond
/// them fails at once (the supervisor's admission never sends that many).
pub fn serve(handler: Arc<dyn Handler>, max_calls: usize) -> io::Result<()> {
    let out = Arc::new(Mutex::new(BufWriter::new(io::stdout())));
    send(
        &out,
        &Frame::control(FrameKind::Ready, u64::from(std::process::id())),
    )?;
    let mut input = BufReader::new(io::stdin());
    let running = Arc::new(AtomicUsize::new(0));
    while let Some(frame) = read_frame(&mut input, MAX_CALL_BYTES)? {
        match frame.kind {
            FrameKind::Ping => send(&out, &Frame::control(FrameKind::Pong, frame.id))?,
            FrameKind::Cancel => handler.cancel(frame.id),
            FrameKind::Call => {
                if running.fetch_add(1, Ordering::AcqRel) >= max_calls {
                    running.fetch_sub(1, Ordering::AcqRel);
                    send(
                        &out,
                        &failed(frame.id, &format!("more than {max_calls} calls at once")),
                    )?;
                    continue;
                }
                let (handler, out, in_flight) = (handler.clone(), out.clone(), running.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("floe-call-{}", frame.id))
                    .spawn(move || {
                        let Frame {
                            id, header, blobs, ..
                        } = frame;
                        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            handler.call(id, &header, blobs)
                        }));
                        let reply = match answer {
                            Ok(Ok((header, blobs))) => Frame {
                                kind: FrameKind::Reply,
                                id,
                                header,
                                blobs,
                            },
                            Ok(Err(message)) => failed(id, &message),
                            Err(panic) => failed(
                                id,
                                &format!("panicked: {}", crate::error::panic_message(&*panic)),
                            ),
                        };
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                        // A supervisor that went away reads nothing more: the main loop ends
                        // on its closed stdin.
                        let _ = send(&out, &reply);
                    });
                if let Err(e) = spawned {
                    running.fetch_sub(1, Ordering::AcqRel);
                    tracing::error!(error = %e, "cannot start a thread for a call");
                }
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a worker does not take {other:?} frames"),
                ));
            }
        }
    }
    Ok(())
}

/// A call that failed without a reply of its handler's: its message as the header.
fn failed(id: u64, message: &str) -> Frame {
    Frame {
        kind: FrameKind::Failed,
        id,
        header: message.as_bytes().to_vec(),
        blobs: Vec::new(),
    }
}

fn send(out: &Mutex<BufWriter<io::Stdout>>, frame: &Frame) -> io::Result<()> {
    let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
    write_frame(&mut *out, frame)?;
    out.flush()
}
