//! The worker's side of the protocol: read frames from stdin, run each call on a call thread
//! (kept for the next call once it is done) through a [`Handler`], write the replies to
//! stdout.
//!
//! The worker lives as long as its stdin: when the supervisor closes it, exits or is killed,
//! [`serve`] returns and the process ends with it, whatever its calls are computing — so a
//! server killed with `kill -9` leaves no worker behind burning CPU.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::lock;
use super::wire::{Frame, FrameKind, read_frame, write_frame};
use crate::frames::cancel::Cancel;

/// What a worker does with calls.
pub trait Handler: Send + Sync + 'static {
    /// Answers a call: the reply's header and blobs, or why it failed. `cancel` is cancelled
    /// when the supervisor asks the call to stop (the call still replies).
    fn call(
        &self,
        header: &[u8],
        blobs: Vec<Vec<u8>>,
        cancel: &Cancel,
    ) -> Result<(Vec<u8>, Vec<Vec<u8>>), String>;
}

/// The frames a worker accepts from its supervisor: calls carry inputs as Arrow, as large as
/// a context's named objects may be.
const MAX_CALL_BYTES: u64 = 1 << 40;

/// Serves calls from stdin until it closes. At most `max_calls` run at once; a call beyond
/// them fails at once (the server sends at most its context's threads plus its `/query`
/// places).
pub fn serve(handler: Arc<dyn Handler>, max_calls: usize) -> io::Result<()> {
    let out = Arc::new(Mutex::new(BufWriter::new(io::stdout())));
    send(
        &out,
        &Frame::control(FrameKind::Ready, u64::from(std::process::id())),
    )?;
    let mut input = BufReader::new(io::stdin());
    // Each running call's stop handle, registered before its thread starts, so a cancel that
    // comes at once is not lost.
    let running: Arc<Mutex<HashMap<u64, Cancel>>> = Arc::default();
    // Calls for the call threads, and how many of those wait for one.
    let work = crossbeam_channel::unbounded::<(Frame, Cancel)>();
    let idle = Arc::new(AtomicUsize::new(0));
    while let Some(frame) = read_frame(&mut input, MAX_CALL_BYTES)? {
        match frame.kind {
            FrameKind::Ping => send(&out, &Frame::control(FrameKind::Pong, frame.id))?,
            FrameKind::Cancel => {
                if let Some(cancel) = lock(&running).get(&frame.id) {
                    cancel.cancel("stopped by the server");
                }
            }
            FrameKind::Call => {
                let id = frame.id;
                let cancel = Cancel::new();
                {
                    let mut calls = lock(&running);
                    if calls.len() >= max_calls {
                        drop(calls);
                        send(
                            &out,
                            &failed(id, &format!("more than {max_calls} calls at once")),
                        )?;
                        continue;
                    }
                    calls.insert(id, cancel.clone());
                }
                // A thread that finished its last call takes this one; a new thread only when
                // every one is busy (at most `max_calls`, as admitted above).
                if idle.load(Ordering::Acquire) == 0 {
                    let (work, handler, reply_to, calls, idle) = (
                        work.1.clone(),
                        handler.clone(),
                        out.clone(),
                        running.clone(),
                        idle.clone(),
                    );
                    let spawned = std::thread::Builder::new()
                        .name("floe-call".to_owned())
                        .spawn(move || call_thread(&work, &*handler, &reply_to, &calls, &idle));
                    if let Err(e) = spawned {
                        if lock(&running).remove(&id).is_some() {
                            send(
                                &out,
                                &failed(id, &format!("cannot start a thread for the call: {e}")),
                            )?;
                        }
                        continue;
                    }
                } else {
                    idle.fetch_sub(1, Ordering::AcqRel);
                }
                let _ = work.0.send((frame, cancel));
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

/// A call thread: runs calls until the worker ends, waiting between them.
fn call_thread(
    work: &crossbeam_channel::Receiver<(Frame, Cancel)>,
    handler: &dyn Handler,
    out: &Mutex<BufWriter<io::Stdout>>,
    running: &Mutex<HashMap<u64, Cancel>>,
    idle: &AtomicUsize,
) {
    while let Ok((frame, cancel)) = work.recv() {
        let Frame {
            id, header, blobs, ..
        } = frame;
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler.call(&header, blobs, &cancel)
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
        // Free before the reply: the server may send the next call as soon as it reads it
        // (idle first, so that call finds this thread rather than starting another).
        idle.fetch_add(1, Ordering::AcqRel);
        lock(running).remove(&id);
        // A reply the wire cannot carry is refused before a byte is written: the call still
        // gets an answer. A supervisor that went away reads nothing more: the main loop ends
        // on its closed stdin.
        if let Err(e) = send(out, &reply)
            && e.kind() == io::ErrorKind::InvalidData
        {
            let _ = send(
                out,
                &failed(id, &format!("the reply could not be sent: {e}")),
            );
        }
    }
}

/// The longest failure message sent (a panic's can be anything).
const MAX_MESSAGE_BYTES: usize = 64 << 10;

/// A call that failed without a reply of its handler's: its message as the header.
fn failed(id: u64, message: &str) -> Frame {
    let mut end = message.len().min(MAX_MESSAGE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Frame {
        kind: FrameKind::Failed,
        id,
        header: message.as_bytes()[..end].to_vec(),
        blobs: Vec::new(),
    }
}

fn send(out: &Mutex<BufWriter<io::Stdout>>, frame: &Frame) -> io::Result<()> {
    let mut out = lock(out);
    write_frame(&mut *out, frame)?;
    out.flush()
}
