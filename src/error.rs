//! Error presentation shared by the command line, the run reports and the job kinds (a leaf:
//! every layer may use it).
//!
//! Library errors keep their causes in `source()` instead of repeating them in their own
//! message (so each layer says only what it knows); a user needs the whole chain.

use std::error::Error;

/// `outer: cause: root cause`, skipping a cause whose text the outer message already holds.
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `text` as a message repeats a client's input: whole up to `chars` characters, else its first
/// `chars` and `…`, so a megabyte of input makes a short message.
pub fn first_chars(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// polars errors carry a multi-line backtrace hint; the first line is the message.
pub fn short_polars_error(err: &polars::prelude::PolarsError) -> String {
    let text = err.to_string();
    text.lines().next().unwrap_or_default().trim().to_owned()
}

/// The message a caught panic carries (`panic!` with a literal or a formatted string).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("store at /tmp/x is corrupt")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_causes_once() {
        let err = Outer(std::io::Error::other("bad segment header"));
        assert_eq!(
            error_chain(&err),
            "store at /tmp/x is corrupt: bad segment header"
        );
    }
}
